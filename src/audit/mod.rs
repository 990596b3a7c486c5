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
        SessionId(format!("s{}", random_letters(16)))
    }
}

/// `n` random lowercase letters (5 bits each). Ids have no digits, so no id can ever read as
/// a card number to a scanner (16 hex digits can).
pub fn random_letters(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut bytes)
        .expect("system random number generator failed");
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyzABCDEF";
    bytes
        .iter()
        .map(|b| ALPHABET[usize::from(b & 31)] as char)
        .collect()
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether a chain name is usable (it appears in file names and SQL values).
pub fn valid_chain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 60
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
    /// Leave it `Default`: the fields above encoded once per session.
    pub cache: WhoCache,
}

/// The canonical JSON of a [`Who`], made at its first record.
#[derive(Debug, Default)]
pub struct WhoCache(std::sync::OnceLock<String>);

impl Clone for WhoCache {
    /// A clone may be changed before use, so it starts empty.
    fn clone(&self) -> WhoCache {
        WhoCache::default()
    }
}

impl Who {
    /// `"session":…,…,"database":…` as in a record body, every string masked.
    fn encoded(&self) -> &str {
        self.cache.0.get_or_init(|| {
            let masked = Who::masked(self);
            let j = |v: &dyn erased::Json| v.json();
            let s = &masked;
            format!(
                "\"session\":{},\"subject\":{},\"groups\":{},\"client_id\":{},\"issuer\":{},\"upstream_role\":{},\"client_addr\":{},\"application_name\":{},\"target\":{},\"database\":{}",
                j(&s.session.as_ref().map(|s| s.0.as_str())),
                j(&s.subject.as_deref()),
                j(&s.groups),
                j(&s.client_id.as_deref()),
                j(&s.issuer.as_deref()),
                j(&s.upstream_role.as_deref()),
                j(&s.client_addr.as_deref()),
                j(&s.application_name.as_deref()),
                j(&s.target.as_deref()),
                j(&s.database.as_deref()),
            )
        })
    }

    /// A copy with every field passed through the sink masker: the one masking point toward
    /// the disk is where a record is encoded.
    fn masked(&self) -> Who {
        let m = |s: &Option<String>| s.as_deref().map(crate::mask::for_log);
        Who {
            session: self
                .session
                .as_ref()
                .map(|s| SessionId(crate::mask::for_log(&s.0))),
            subject: m(&self.subject),
            groups: self
                .groups
                .iter()
                .map(|g| crate::mask::for_log(g))
                .collect(),
            client_id: m(&self.client_id),
            issuer: m(&self.issuer),
            upstream_role: m(&self.upstream_role),
            client_addr: m(&self.client_addr),
            application_name: m(&self.application_name),
            target: m(&self.target),
            database: m(&self.database),
            cache: WhoCache::default(),
        }
    }

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
    /// A reviewer's record that a day's security events were read (PCI DSS 10.4.1).
    pub const AUDIT_REVIEW: &str = "audit_review";
    pub const STORE_FAILURE: &str = "store_failure";
    pub const AUTH: &str = "authentication";
    pub const SESSION_START: &str = "session_start";
    pub const SESSION_END: &str = "session_end";
    pub const STATEMENT: &str = "statement";
    pub const CLIENT_FRAMES: &str = "client_frames";
    pub const SERVER_FRAMES: &str = "server_frames";
    pub const APPROVAL: &str = "approval";
    /// A column found at run time to hold card numbers, refused to computation from then on.
    pub const COLUMN_PROMOTED: &str = "column_promoted";
    /// A statement's result reached its rule's `result_cap`: the rest was withheld and the
    /// statement cancelled on the server.
    pub const RESULT_CAPPED: &str = "result_capped";
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

    /// About how many bytes this event holds from the moment it is queued until its record is
    /// written (the event itself, then its encoded body): what the writer queue's byte bound
    /// counts. Over-estimates rather than under.
    pub fn weight(&self) -> usize {
        256 + self.tables.iter().map(|t| 2 * t.len() + 32).sum::<usize>()
            + json_weight(&self.detail)
    }

    /// The canonical encoding of the body this event becomes at a chain position, without
    /// building the body: byte for byte what `into_body(…).encode()` gives (tested).
    ///
    /// **The one masking point toward the disk:** every string of the record the data path
    /// gave (who, tables, every string, key and number of the detail) passes the masker here,
    /// whatever the call site did.
    pub fn encode(&self, chain: &str, seq: u64, prev: &str, ts: &str) -> String {
        use erased::Json;
        let detail = masked_detail(&self.detail).json();
        let tables = masked_tables(&self.tables);
        let mut out = String::with_capacity(256 + detail.len());
        out.push_str("{\"v\":");
        out.push_str(&record::VERSION.to_string());
        out.push_str(",\"chain\":");
        out.push_str(&chain.json());
        out.push_str(",\"seq\":");
        out.push_str(&seq.to_string());
        out.push_str(",\"prev\":");
        out.push_str(&prev.json());
        out.push_str(",\"ts\":");
        out.push_str(&ts.json());
        out.push_str(",\"type\":");
        out.push_str(&self.kind.json());
        out.push_str(",\"outcome\":");
        out.push_str(&self.outcome.as_str().json());
        out.push(',');
        out.push_str(self.who.encoded());
        out.push_str(",\"tables\":");
        out.push_str(&tables.json());
        out.push_str(",\"detail\":");
        out.push_str(&detail);
        out.push('}');
        out
    }

    /// The record body this event becomes at a chain position.
    pub fn into_body(self, chain: &str, seq: u64, prev: &str, ts: String) -> record::Body {
        let w = &self.who.masked();
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
            tables: masked_tables(&self.tables).into_owned(),
            detail: masked_detail(&self.detail).into_owned(),
        }
    }
}

/// A JSON value's heap (nodes, keys, strings) plus its encoding's length, about: a value is
/// 32 bytes inline; an object is a B-tree whose nodes (about 640 bytes) hold up to 11 entries;
/// a string's heap is rounded up by the allocator and written again, quoted, in the body.
fn json_weight(v: &serde_json::Value) -> usize {
    use serde_json::Value;
    32 + match v {
        Value::Null | Value::Bool(_) => 5,
        Value::Number(_) => 20,
        Value::String(s) => 2 * s.len() + 18,
        Value::Array(a) => {
            32 * (a.capacity() - a.len()) + 16 + a.iter().map(json_weight).sum::<usize>()
        }
        Value::Object(m) => {
            640 * m.len().div_ceil(11).max(1)
                + m.iter()
                    .map(|(k, v)| 2 * k.len() + 20 + json_weight(v))
                    .sum::<usize>()
        }
    }
}

fn masked_detail(detail: &serde_json::Value) -> std::borrow::Cow<'_, serde_json::Value> {
    let masker = crate::mask::sink_masker();
    if !masker.json_holds_pan(detail) {
        return std::borrow::Cow::Borrowed(detail);
    }
    let mut owned = detail.clone();
    masker.mask_json(&mut owned);
    std::borrow::Cow::Owned(owned)
}

fn masked_tables(tables: &[String]) -> std::borrow::Cow<'_, [String]> {
    if tables
        .iter()
        .all(|t| !crate::mask::pan::may_hold(t.as_bytes()))
    {
        return std::borrow::Cow::Borrowed(tables);
    }
    std::borrow::Cow::Owned(tables.iter().map(|t| crate::mask::for_log(t)).collect())
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

/// Compact JSON of one value, as serde_json writes it inside a record body.
mod erased {
    pub trait Json {
        fn json(&self) -> String;
    }

    impl<T: serde::Serialize + ?Sized> Json for T {
        fn json(&self) -> String {
            serde_json::to_string(self).expect("plain values always serialise")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_direct_encoding_is_the_bodys() {
        let who = Arc::new(Who {
            session: Some(SessionId("s1".into())),
            subject: Some("a \"quoted\" \u{7f} name\n".into()),
            groups: vec!["g1".into(), "ü".into()],
            client_addr: Some("[::1]:5".into()),
            ..Who::default()
        });
        for detail in [
            serde_json::json!({}),
            serde_json::json!({"z": 1, "a": [1.5, null, "x\u{0}y"], "m": {"k": true}}),
        ] {
            let mut e = Event::new(kind::STATEMENT, Outcome::Refused, who.clone(), detail);
            e.tables = vec!["public.cards".into()];
            let direct = e.encode("c-1", 7, record::GENESIS, "2026-11-26T10:00:00.000001Z");
            let body = e
                .into_body(
                    "c-1",
                    7,
                    record::GENESIS,
                    "2026-11-26T10:00:00.000001Z".into(),
                )
                .encode();
            assert_eq!(direct, body);
        }
        let daemon = Event::new(
            kind::DAEMON_START,
            Outcome::Info,
            Who::daemon(),
            serde_json::json!({"pid": 1}),
        );
        assert_eq!(
            daemon.encode("x", 1, "p", "t"),
            daemon.clone().into_body("x", 1, "p", "t".into()).encode()
        );
    }
}

#[cfg(test)]
mod weight_tests {
    use super::*;

    /// Issue #18: the queue's byte bound counts at least what a record becomes on its way to
    /// the store (its encoded body), for small events and for large result batches.
    #[test]
    fn an_events_weight_covers_its_encoded_body() {
        let row = |i: u32| serde_json::json!({"t": "D", "values": [i.to_string(), "x".repeat(90)]});
        let events = [
            serde_json::json!({}),
            serde_json::json!({"sql": "select 1", "decision": {"action": "allow", "rule": null}}),
            serde_json::json!({"frames": (0..600).map(row).collect::<Vec<_>>()}),
        ];
        for detail in events {
            let e = Event::new(kind::SERVER_FRAMES, Outcome::Info, Who::daemon(), detail);
            let encoded = e.encode("c", 1, record::GENESIS, "2026-11-30T10:00:00.000000Z");
            assert!(
                e.weight() >= encoded.len(),
                "{} < {}",
                e.weight(),
                encoded.len()
            );
        }
    }
}

#[cfg(test)]
mod masking_tests {
    use super::*;

    /// Issue #17: the record encoder masks every field, whatever the call site did.
    #[test]
    fn every_string_of_a_record_is_masked_where_it_is_encoded() {
        let who = Arc::new(Who {
            subject: Some("agent 4111 1111 1111 1111".into()),
            database: Some("db_4111111111111111".into()),
            groups: vec!["5555555555554444".into()],
            ..Who::default()
        });
        let mut e = Event::new(
            kind::STATEMENT,
            Outcome::Refused,
            who,
            serde_json::json!({"tables": ["４１１１１１１１１１１１１１１１"], "4111.1111.1111.1111": 4111111111111111u64, "n": 7}),
        );
        e.tables = vec!["public.\"4111111111111111\"".into()];
        let encoded = e.encode("c", 1, record::GENESIS, "t");
        for pan in ["4111111111111111", "5555555555554444"] {
            assert!(
                !crate::mask::pan::folded_digits(encoded.as_bytes()).contains(pan),
                "{encoded}"
            );
        }
        assert!(encoded.contains("\"n\":7"), "{encoded}");
        let body = e.into_body("c", 1, record::GENESIS, "t".into()).encode();
        assert_eq!(encoded, body);
    }
}
