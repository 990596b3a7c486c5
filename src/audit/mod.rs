//! The tamper-evident session store (PCI DSS 10): every session, statement, decision and frame,
//! hash-chained, with signed checkpoints.
//!
//! - [`record`]: a record's canonical encoding, its hash, checkpoint signatures.
//! - [`store`]: SQLite (one instance) or PostgreSQL (several, each with its own chain).
//! - [`writer`]: the [`Recorder`] the data path hands events to: a bounded queue drained in
//!   batches by a thread of its own; a full queue or a failing store makes it refuse.
//! - [`verify`]: checks chains and checkpoints, in a store or in an export bundle.
//! - [`export`]: JSONL, OCSF and CSV exports and bundles.
//! - [`sessions`]: session lists, timelines and replay built from the records.
//! - [`report`]: the PCI DSS evidence summary.
//!
//! The audit stage sees only masked values and never a secret: producers mask text with
//! `mask::Masker` before building an [`Event`], and password messages are never recorded.

pub mod export;
pub mod record;
pub mod report;
pub mod sessions;
pub mod store;
pub mod verify;
pub mod writer;

use std::fmt;
use std::sync::Arc;

pub use store::Store;
pub use writer::{Recorder, Unavailable};

/// A recorded client session's id (unique across instances: 64 random bits).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionId(pub String);

impl SessionId {
    pub fn random() -> SessionId {
        let mut bytes = [0u8; 8];
        aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut bytes)
            .expect("system random number generator failed");
        SessionId(format!("s{}", record::hex(&bytes)))
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether a chain name is usable (it appears in file names and SQL values).
pub fn valid_chain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Who acted, from where, on what: the PCI DSS 10.2.2 fields every record carries.
#[derive(Debug, Clone, Default)]
pub struct Who {
    pub session: Option<SessionId>,
    pub subject: Option<String>,
    pub groups: Vec<String>,
    pub client_id: Option<String>,
    pub issuer: Option<String>,
    pub upstream_role: Option<String>,
    pub client_addr: Option<String>,
    pub application_name: Option<String>,
    pub target: Option<String>,
    pub database: Option<String>,
}

impl Who {
    /// The daemon itself (start, stop, reloads, audit reads).
    pub fn daemon() -> Arc<Who> {
        Arc::new(Who {
            subject: Some("tollgate".into()),
            ..Who::default()
        })
    }

    /// A person or program using the CLI or the admin API.
    pub fn operator(name: &str) -> Arc<Who> {
        Arc::new(Who {
            subject: Some(name.to_owned()),
            ..Who::default()
        })
    }
}

/// An event's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    Refused,
    Held,
    Info,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Refused => "refused",
            Outcome::Held => "held",
            Outcome::Info => "info",
        }
    }
}

/// Event types.
pub mod kind {
    pub const DAEMON_START: &str = "daemon_start";
    pub const DAEMON_STOP: &str = "daemon_stop";
    pub const CONFIG_LOAD: &str = "config_load";
    pub const POLICY_RELOAD: &str = "policy_reload";
    pub const ADMIN_ACTION: &str = "admin_action";
    pub const AUDIT_READ: &str = "audit_read";
    pub const AUDIT_EXPORT: &str = "audit_export";
    pub const AUDIT_PRUNED: &str = "audit_pruned";
    pub const STORE_FAILURE: &str = "store_failure";
    pub const AUTH: &str = "authentication";
    pub const SESSION_START: &str = "session_start";
    pub const SESSION_END: &str = "session_end";
    pub const STATEMENT: &str = "statement";
    pub const CLIENT_FRAMES: &str = "client_frames";
    pub const SERVER_FRAMES: &str = "server_frames";
    pub const APPROVAL: &str = "approval";
}

/// Something to record, as the data path hands it over (masked already).
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: &'static str,
    pub outcome: Outcome,
    pub who: Arc<Who>,
    pub tables: Vec<String>,
    pub detail: serde_json::Value,
}

impl Event {
    pub fn new(
        kind: &'static str,
        outcome: Outcome,
        who: Arc<Who>,
        detail: serde_json::Value,
    ) -> Event {
        Event {
            kind,
            outcome,
            who,
            tables: Vec::new(),
            detail,
        }
    }

    /// The record body this event becomes at a chain position.
    pub fn into_body(self, chain: &str, seq: u64, prev: &str, ts: String) -> record::Body {
        let w = &*self.who;
        record::Body {
            v: record::VERSION,
            chain: chain.to_owned(),
            seq,
            prev: prev.to_owned(),
            ts,
            kind: self.kind.to_owned(),
            outcome: self.outcome.as_str().to_owned(),
            session: w.session.as_ref().map(|s| s.0.clone()),
            subject: w.subject.clone(),
            groups: w.groups.clone(),
            client_id: w.client_id.clone(),
            issuer: w.issuer.clone(),
            upstream_role: w.upstream_role.clone(),
            client_addr: w.client_addr.clone(),
            application_name: w.application_name.clone(),
            target: w.target.clone(),
            database: w.database.clone(),
            tables: self.tables,
            detail: self.detail,
        }
    }
}

/// Now, as a record timestamp: UTC, RFC 3339, microseconds.
pub fn now_ts() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}

/// Parses `--since`/`--until` values: RFC 3339 (or a date), or a duration back from now
/// (`24h`, `30d`), into a record timestamp for comparison.
pub fn parse_time(text: &str) -> Result<String, String> {
    if let Ok(d) = humantime::parse_duration(text) {
        let t = std::time::SystemTime::now()
            .checked_sub(d)
            .ok_or_else(|| format!("{text:?} reaches before 1970"))?;
        return Ok(humantime::format_rfc3339_micros(t).to_string());
    }
    let full = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_owned()
    };
    humantime::parse_rfc3339_weak(&full)
        .map(|t| humantime::format_rfc3339_micros(t).to_string())
        .map_err(|_| format!("{text:?} is neither an RFC 3339 time, a date nor a duration"))
}
