//! tollgate: a PostgreSQL wire proxy that stands between AI agents and production databases.
//!
//! Module map:
//! - [`admin`]: the admin HTTP interface (health, audit reads, approvals; the dev issuer).
//! - [`approval`]: statements held on live connections until a human approves them.
//! - [`audit`]: the tamper-evident session store.
//! - [`auth`]: agent identity: OIDC token validation, login throttling, the dev issuer.
//! - [`config`]: the YAML configuration, validated, errors with file:line.
//! - [`server`]: listeners, accept loop, connection limits, graceful shutdown.
//! - [`policy`]: YAML rules that allow, block or hold each statement, from its syntax tree.
//! - [`protocol`]: the wire protocols (PostgreSQL today): framing, startup, relay.
//! - [`pipeline`]: the protocol-neutral stages (inspect, transform, record) and their types.
//! - [`mask`]: PAN detection and masking.
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
pub mod mask;
pub mod metrics;
pub mod net;
pub mod pipeline;
pub mod policy;
pub mod protocol;
pub mod server;
pub mod tls;
