//! The policy engine: YAML rules over what each statement does.
//!
//! - [`classify`]: SQL text -> what each statement does (kinds, tables, functions, conditions).
//! - [`rules`]: the policy files (YAML model, validation with file:line:column, matching).
//! - [`engine`]: decisions with least privilege, audit mode, the classification cache.
//! - [`inspect`]: the engine as the pipeline's inspect stage, with hot reload.
//!
//! **Architecture Invariant:** classification and decisions do no IO and read no clock.

pub mod classify;
pub mod engine;
pub mod inspect;
pub mod rules;

pub use engine::{Decision, Policy, Report};
pub use rules::{Action, RuleSet};
