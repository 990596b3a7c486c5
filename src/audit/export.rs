//! Exports: `jsonl` (one record body per line, with its chain position and hash), `ocsf`
//! (OCSF 1.8 events with the security_control profile: Datastore Activity 6005 for statements and results, Authentication 3002
//! for logins and session ends, Application Lifecycle 6002 for the daemon), `csv` (one row per
//! record, spreadsheet-safe), and `bundle` (the chains with their signed checkpoints, which
//! `tollgate audit verify --bundle` checks on another machine with only the public key).
//!
//! Everything streams: records are read a page at a time and written as they come.

use std::fmt::Write as _;

use tokio::io::{AsyncWrite, AsyncWriteExt};

use serde::{Deserialize, Serialize};

use super::record::{Body, Checkpoint};
use super::store::{self, Store, StoredRecord};

/// The bundle's format name, in its header line.
pub const BUNDLE_FORMAT: &str = "tollgate-audit-bundle-v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Jsonl,
    Ocsf,
    Csv,
    Bundle,
}

/// One line of a bundle.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "line", rename_all = "snake_case")]
pub enum BundleLine {
    Header {
        format: String,
        exported_at: String,
        since: Option<String>,
        until: Option<String>,
        /// The key id of the checkpoints' signer (the key itself comes from the auditor).
        key_id: Option<String>,
    },
    Record(BundleRecord),
    Checkpoint(Checkpoint),
}

/// A stored record, exactly: `body` is the hashed text.
#[derive(Debug, Serialize, Deserialize)]
pub struct BundleRecord {
    pub chain: String,
    pub seq: u64,
    pub ts: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub outcome: String,
    pub session: Option<String>,
    pub hash: String,
    pub body: String,
}

impl BundleRecord {
    pub fn into_stored(self) -> StoredRecord {
        StoredRecord {
            chain: self.chain,
            seq: self.seq,
            ts: self.ts,
            kind: self.kind,
            outcome: self.outcome,
            session: self.session,
            body: self.body,
            hash: self.hash,
        }
    }

    fn from_stored(r: &StoredRecord) -> BundleRecord {
        BundleRecord {
            chain: r.chain.clone(),
            seq: r.seq,
            ts: r.ts.clone(),
            kind: r.kind.clone(),
            outcome: r.outcome.clone(),
            session: r.session.clone(),
            hash: r.hash.clone(),
            body: r.body.clone(),
        }
    }
}

/// The period exported: `since <= ts < until`.
#[derive(Debug, Clone)]
pub struct Period {
    pub since: Option<String>,
    pub until: Option<String>,
}

impl Period {
    pub fn bounds(&self) -> (&str, &str) {
        (
            self.since.as_deref().unwrap_or(""),
            self.until.as_deref().unwrap_or("9999"),
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("writing the export: {0}")]
    Io(#[from] std::io::Error),
}

/// Writes the export; returns the number of records written. `progress` is told each record.
pub async fn write(
    store: &mut Store,
    format: Format,
    period: &Period,
    key_id: Option<String>,
    out: &mut (dyn AsyncWrite + Unpin + Send),
    progress: &(dyn Fn(u64) + Sync),
) -> Result<u64, Error> {
    let (since, until) = period.bounds();
    let mut written = 0u64;
    // Each page of records is formatted here, then written at once.
    let mut buf = String::new();
    if format == Format::Csv {
        buf.push_str(&CSV_COLUMNS.join(","));
        buf.push('\n');
    }
    if format == Format::Bundle {
        let header = BundleLine::Header {
            format: BUNDLE_FORMAT.into(),
            exported_at: super::now_ts(),
            since: period.since.clone(),
            until: period.until.clone(),
            key_id,
        };
        line(&mut buf, &header);
    }
    for chain in store.chains().await? {
        let Some((lo, hi)) = store.span(&chain, since, until).await? else {
            continue;
        };
        // A bundle reaches back to the checkpoint before the period and on to the one after
        // it, so every record in it is covered by a signature.
        let (start, end, anchor) = if format == Format::Bundle {
            let anchor = if lo > 1 {
                store.checkpoint_before(&chain, lo).await?
            } else {
                None
            };
            let start = anchor.as_ref().map_or(1, |c| c.seq + 1);
            let end = store
                .checkpoint_at_or_after(&chain, hi)
                .await?
                .map_or(u64::MAX, |c| c.seq);
            (start, end, anchor)
        } else {
            (lo, hi, None)
        };
        if let Some(c) = anchor {
            line(&mut buf, &BundleLine::Checkpoint(c));
        }
        let mut after = start - 1;
        let mut cp_after = Some(after);
        let mut checkpoints: std::collections::VecDeque<Checkpoint> = Default::default();
        'pages: loop {
            let page = store.page(&chain, after, 1000).await?;
            if page.is_empty() {
                break;
            }
            if format == Format::Bundle {
                let last = page.last().map_or(after, |r| r.seq);
                let more = store
                    .checkpoint_page(&chain, cp_after, 100_000)
                    .await?
                    .into_iter()
                    .filter(|c| c.seq <= last.min(end));
                checkpoints.extend(more);
                cp_after = Some(last);
            }
            out.write_all(buf.as_bytes()).await?;
            buf.clear();
            for r in &page {
                if r.seq > end {
                    break 'pages;
                }
                after = r.seq;
                let in_period = r.ts.as_str() >= since && r.ts.as_str() < until;
                match format {
                    Format::Bundle => {
                        line(&mut buf, &BundleLine::Record(BundleRecord::from_stored(r)));
                        while checkpoints.front().is_some_and(|c| c.seq <= r.seq) {
                            let c = checkpoints.pop_front().expect("front exists");
                            line(&mut buf, &BundleLine::Checkpoint(c));
                        }
                    }
                    _ if !in_period => continue,
                    Format::Jsonl => jsonl(&mut buf, r),
                    Format::Ocsf => ocsf(&mut buf, r),
                    Format::Csv => csv(&mut buf, r),
                }
                written += 1;
                progress(written);
            }
        }
    }
    out.write_all(buf.as_bytes()).await?;
    out.flush().await?;
    Ok(written)
}

fn line(buf: &mut String, l: &BundleLine) {
    buf.push_str(&serde_json::to_string(l).expect("serialisable"));
    buf.push('\n');
}

fn jsonl(buf: &mut String, r: &StoredRecord) {
    // The body verbatim, with the hash beside it: `{"hash":…,"record":{…}}`.
    let _ = writeln!(buf, "{{\"hash\":\"{}\",\"record\":{}}}", r.hash, r.body);
}

const CSV_COLUMNS: &[&str] = &[
    "chain",
    "seq",
    "ts",
    "type",
    "outcome",
    "session",
    "subject",
    "groups",
    "client_id",
    "issuer",
    "upstream_role",
    "client_addr",
    "application_name",
    "target",
    "database",
    "tables",
    "detail",
    "hash",
];

/// A CSV field: quoted when needed, and a leading `= + - @` defused so a spreadsheet never
/// runs it as a formula.
fn csv_field(text: &str) -> String {
    let defused = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if defused.contains([',', '"', '\n', '\r']) || defused != text {
        format!("\"{}\"", defused.replace('"', "\"\""))
    } else {
        defused
    }
}

fn csv(buf: &mut String, r: &StoredRecord) {
    let Ok(b) = serde_json::from_str::<Body>(&r.body) else {
        return;
    };
    let o = |v: &Option<String>| v.clone().unwrap_or_default();
    let fields = [
        b.chain.clone(),
        b.seq.to_string(),
        b.ts.clone(),
        b.kind.clone(),
        b.outcome.clone(),
        o(&b.session),
        o(&b.subject),
        b.groups.join(";"),
        o(&b.client_id),
        o(&b.issuer),
        o(&b.upstream_role),
        o(&b.client_addr),
        o(&b.application_name),
        o(&b.target),
        o(&b.database),
        b.tables.join(";"),
        b.detail.to_string(),
        r.hash.clone(),
    ];
    let row: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
    let _ = writeln!(buf, "{}", row.join(","));
}

/// Milliseconds since the epoch of a record timestamp.
fn epoch_ms(ts: &str) -> u64 {
    humantime::parse_rfc3339(ts)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

/// One record as an OCSF 1.8 event.
pub fn ocsf_event(b: &Body, hash: &str) -> serde_json::Value {
    use serde_json::json;
    let success = matches!(b.outcome.as_str(), "success" | "info");
    let (class_uid, category_uid, activity_id, activity) = match b.kind.as_str() {
        "authentication" | "session_start" => (3002, 3, 1, "Logon"),
        "session_end" => (3002, 3, 2, "Logoff"),
        "statement" => (6005, 6, 4, "Query"),
        "server_frames" => (6005, 6, 1, "Read"),
        "client_frames" => (6005, 6, 99, "Other"),
        "daemon_start" => (6002, 6, 3, "Start"),
        "daemon_stop" => (6002, 6, 4, "Stop"),
        _ => (6002, 6, 99, "Other"),
    };
    let (ip, port) = b
        .client_addr
        .as_deref()
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        .map_or((None, None), |a| (Some(a.ip().to_string()), Some(a.port())));
    let groups: Vec<serde_json::Value> = b.groups.iter().map(|g| json!({"name": g})).collect();
    let mut event = json!({
        "class_uid": class_uid,
        "category_uid": category_uid,
        "activity_id": activity_id,
        "activity_name": activity,
        "type_uid": class_uid * 100 + activity_id,
        "time": epoch_ms(&b.ts),
        "severity_id": if success { 1 } else { 3 },
        "status_id": if success { 1 } else { 2 },
        "status": b.outcome,
        "message": b.kind,
        "metadata": {
            "version": "1.8.0",
            "uid": format!("{}:{}", b.chain, b.seq),
            "sequence": b.seq,
            "profiles": ["security_control"],
            "product": {"name": "tollgate", "vendor_name": "tollgate", "version": env!("CARGO_PKG_VERSION")},
            "log_name": b.chain,
            "correlation_uid": b.session,
        },
        "actor": {
            "user": {"name": b.subject, "uid": b.subject, "groups": groups},
            "session": {"uid": b.session},
            "app_name": b.application_name,
            "idp": {"name": b.issuer},
        },
        "src_endpoint": {"ip": ip, "port": port},
        "unmapped": {"hash": hash, "prev": b.prev, "upstream_role": b.upstream_role, "client_id": b.client_id, "detail": b.detail},
    });
    if class_uid == 3002 {
        event["user"] = json!({"name": b.subject, "uid": b.subject, "groups": b.groups.iter().map(|g| json!({"name": g})).collect::<Vec<_>>()});
        event["auth_protocol"] = json!("OIDC");
        event["service"] = json!({"name": b.target});
    }
    // The security_control profile: what tollgate did about it.
    let (action_id, action, disposition_id, disposition) =
        match (b.kind.as_str(), b.outcome.as_str()) {
            ("approval", "success") => (1, "Allowed", 8, "Approved"),
            ("approval", "held") => (4, "Other", 99, "Held for approval"),
            (_, "refused") => (2, "Denied", 2, "Blocked"),
            (_, "failure") => (2, "Denied", 2, "Blocked"),
            _ => (1, "Allowed", 1, "Allowed"),
        };
    event["action_id"] = json!(action_id);
    event["action"] = json!(action);
    event["disposition_id"] = json!(disposition_id);
    event["disposition"] = json!(disposition);
    if class_uid == 6005 {
        event["database"] = json!({"name": b.database, "type": "PostgreSQL", "uid": b.target});
        event["table"] = json!(b.tables.first());
        if let Some(sql) = b.detail.get("sql") {
            event["query_info"] = json!({"query_string": sql});
        }
    }
    event
}

fn ocsf(buf: &mut String, r: &StoredRecord) {
    if let Ok(b) = serde_json::from_str::<Body>(&r.body) {
        let _ = writeln!(buf, "{}", ocsf_event(&b, &r.hash));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"x\""), "\"say \"\"x\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(1)"), "\"'=HYPERLINK(1)\"");
        assert_eq!(csv_field("-1"), "\"'-1\"");
    }
}
