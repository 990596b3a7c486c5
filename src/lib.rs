//! tollgate: a PostgreSQL and MySQL/MariaDB wire proxy that stands between AI agents and
//! production databases: it authenticates each agent, judges each statement against a policy,
//! masks card numbers in everything flowing back, and records every frame in a tamper-evident
//! store.
//!
//! Module map, from the socket inward:
//! - [`daemon`]: the daemon assembled from a config (stages, context, wires, admin), as
//!   `serve`, `dev` and the tests start it.
//! - [`server`]: listeners, accept loop, connection limits, graceful shutdown; it serves each
//!   wire through [`conn::Listener`] and imports no wire.
//! - [`protocol`]: the wires. `protocol::pg` (PostgreSQL) and `protocol::mysql` (MySQL /
//!   MariaDB) turn bytes into neutral values and back; neither imports the other.
//! - [`conn`]: the protocol-neutral connection layer both wires call: shared context, targets,
//!   lifecycle, session records, a statement's lifecycle (settle, approvals), policy files.
//! - [`pipeline`]: the neutral values and stage interfaces (statements, rulings, stages).
//! - [`policy`]: rules that allow, block or hold each statement, from its syntax tree (pure).
//! - [`mask`]: PAN detection and masking (pure).
//! - [`logging`]: the log sink: every line masked, dependencies capped at `warn`.
//! - [`approval`]: statements held on live connections until a human approves them.
//! - [`audit`]: the tamper-evident session store.
//! - [`auth`]: agent identity: OIDC token validation, login throttling, the dev issuer.
//! - [`admin`]: the admin HTTP interface (health, metrics, audit reads, approvals).
//! - [`config`]: the YAML configuration, validated, errors with file:line.
//! - [`metrics`]: Prometheus metrics (names, the recorder).
//! - [`net`]: a plain or TLS socket and its halves.
//! - [`tls`]: rustls acceptor for clients, connectors for upstream targets.
#![forbid(unsafe_code)]

pub mod admin;
pub mod approval;
pub mod audit;
pub mod auth;
pub mod config;
pub mod conn;
pub mod daemon;
pub mod logging;
pub mod mask;
pub mod metrics;
pub mod net;
pub mod pipeline;
pub mod policy;
pub mod protocol;
pub mod server;
pub mod tls;
