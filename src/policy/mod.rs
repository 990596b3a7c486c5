//! The policy engine: YAML rules over what each statement does.
//!
//! - [`classify`]: SQL text -> what each statement does (kinds, tables, functions, conditions);
//!   [`postgres`] reads PostgreSQL statements with the server's own grammar (`pg_query`),
//!   [`functions`] says what a PostgreSQL function call does; [`mysql`] reads MySQL and
//!   MariaDB statements with MariaDB's lexical rules before sqlparser.
//! - [`rules`]: the policy files (YAML model, validation with file:line:column, matching).
//! - [`cap`]: result caps (`result_cap`), as written and as applied to a statement.
//! - [`engine`]: decisions with least privilege, audit mode, the classification cache.
//! - [`inspect`]: the engine as the pipeline's inspect stage (the policy in force is handed in).
//! - [`reason`]: the reason an agent states for a statement or its session.
//! - [`preview`]: which held statements approvers may see the server's plan for.
//!
//! **Architecture Invariant:** classification and decisions do no IO and read no clock.

pub mod cap;
pub mod classify;
pub mod engine;
pub mod functions;
pub mod inspect;
pub mod mysql;
pub mod postgres;
pub mod preview;
pub mod reason;
pub mod rules;

pub use engine::{Decision, Policy, Report};
pub use rules::{Action, RuleSet};
