//! What a period's records add up to: one pass over every record of every chain, plus the
//! few store-wide facts (retention, reviews, bundle exports) that do not depend on the period.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::audit::export::Period;
use crate::audit::kind;
use crate::audit::record::Body;
use crate::audit::store::{self, Store};

/// Where in the store something was found: the record and, for a PAN, the field.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Location {
    pub chain: String,
    pub seq: u64,
    pub ts: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// A JSON path into the record body (`detail.sql`, `tables[0]`), or the missing fields.
    pub field: String,
}

/// One identity's activity in the period (PCI DSS 7.2.4 access review).
#[derive(Debug, Default, Clone, Serialize)]
pub struct IdentityActivity {
    pub subject: String,
    pub groups: BTreeSet<String>,
    pub issuers: BTreeSet<String>,
    pub client_ids: BTreeSet<String>,
    /// The human on whose behalf the agent acted (`detail.actor` of its sessions), where
    /// recorded.
    pub actors: BTreeSet<String>,
    pub first: String,
    pub last: String,
    pub sessions: u64,
    /// `oidc` or `static` (a shared client password), from the login records.
    pub auth_methods: BTreeSet<String>,
    pub allowed: u64,
    pub refused_by_rule: BTreeMap<String, u64>,
    pub held_by_rule: BTreeMap<String, u64>,
    pub upstream_roles: BTreeSet<String>,
    pub targets: BTreeSet<String>,
    pub databases: BTreeSet<String>,
    pub tables: BTreeSet<String>,
}

/// How the period's statements were decided: every statement in exactly one bucket.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Decisions {
    /// Allowed by a rule (or logged only in audit mode) and run.
    pub allowed: u64,
    /// Refused by a rule (or by the default), not held.
    pub refused: u64,
    /// Refused because the audit store could not record them (58030).
    pub refused_unrecorded: u64,
    /// Held for approval, then run (approved).
    pub held_ran: u64,
    /// Held for approval, then refused (denied, timed out, cancelled).
    pub held_refused: u64,
}

impl Decisions {
    pub fn total(&self) -> u64 {
        self.allowed + self.refused + self.refused_unrecorded + self.held_ran + self.held_refused
    }
}

/// A failed login (PCI DSS 10.2.1.4).
#[derive(Debug, Default, Clone, Serialize)]
pub struct FailedLogin {
    pub ts: String,
    /// The user name the client gave (masked).
    pub user: String,
    pub client_addr: String,
    pub target: String,
    pub method: String,
    pub reason: String,
}

/// One held statement and what became of it (PCI DSS 6.5.1, 8.2.2).
#[derive(Debug, Default, Clone, Serialize)]
pub struct ApprovalRow {
    pub id: String,
    pub requester: String,
    pub target: String,
    pub rule: String,
    /// The statement, as recorded (masked).
    pub sql: String,
    /// Why the rule holds it.
    pub rule_reason: String,
    pub approver_group: String,
    pub requested: String,
    /// `approved`, `denied`, `timed_out`, `cancelled`, or `pending` when no decision is
    /// recorded.
    pub decision: String,
    pub approver: String,
    /// The approver's or the timeout's reason.
    pub decision_reason: String,
    pub decided: String,
    /// Seconds the approval covers later runs of the same statement.
    pub window_s: Option<u64>,
    /// Decisions refused (an approver outside the group, approving their own request).
    pub refused_decisions: u64,
}

/// A read, export or review of the trail, and who did it (PCI DSS 10.2.1.3).
#[derive(Debug, Default, Clone, Serialize)]
pub struct Reader {
    pub subject: String,
    pub issuer: String,
    pub groups: BTreeSet<String>,
    /// `token` (an OIDC token validated by the CLI), `os_user` (the operating-system account
    /// running the CLI), or `unverified` (a name given on the command line, or none).
    pub source: String,
    pub reads: u64,
    pub first: String,
    pub last: String,
}

/// The clock samples of one target (PCI DSS 10.6).
#[derive(Debug, Default, Clone, Serialize)]
pub struct ClockTarget {
    pub samples: u64,
    pub failed: u64,
    /// The largest |skew| in milliseconds, signed (server minus tollgate).
    pub worst_skew_ms: f64,
    pub worst_at: String,
}

/// The PCI DSS 10.2.2 fields, counted over every record of the period.
pub const FIELDS: [&str; 6] = [
    "user",
    "event_type",
    "time",
    "outcome",
    "origin",
    "resource",
];

/// What the period's records add up to.
#[derive(Debug, Default, Serialize)]
pub struct Evidence {
    pub records: u64,
    pub first: Option<String>,
    pub last: Option<String>,
    pub logins_ok: u64,
    pub logins_failed: u64,
    pub failure_reasons: BTreeMap<String, u64>,
    /// Successful logins by method (`oidc`, `static`).
    pub logins_by_method: BTreeMap<String, u64>,
    /// The first failed logins, listed.
    pub failed_logins: Vec<FailedLogin>,
    pub decisions: Decisions,
    pub config_loads: u64,
    pub sessions: u64,
    pub sessions_without_subject: u64,
    pub identities: BTreeMap<String, IdentityActivity>,
    pub upstream_roles: BTreeMap<String, u64>,
    pub statements: u64,
    pub refused: u64,
    pub refused_by_rule: BTreeMap<String, u64>,
    pub dry_run: u64,
    pub held: u64,
    pub schema_changes: u64,
    pub privilege_changes: u64,
    pub tables: BTreeSet<String>,
    pub masked_values: u64,
    pub result_rows: u64,
    /// Fields of the period's records in which the detector finds a clear card number.
    pub clear_pan_count: u64,
    /// The first of them, located.
    pub clear_pans: Vec<Location>,
    pub readers: BTreeMap<String, Reader>,
    pub audit_reads: u64,
    pub daemon_starts: u64,
    pub unclean_starts: u64,
    pub daemon_stops: u64,
    pub policy_reloads: u64,
    pub store_failures: Vec<Location>,
    pub pruned: u64,
    pub approvals: BTreeMap<String, ApprovalRow>,
    /// Records carrying each 10.2.2 field (keys from [`FIELDS`]).
    pub complete: BTreeMap<&'static str, u64>,
    /// Records missing a field (the first ones).
    pub gaps: Vec<Location>,
    pub gap_count: u64,
    pub clocks: BTreeMap<String, ClockTarget>,
    /// Days (YYYY-MM-DD) of the period that hold refusals, failed logins, approvals or
    /// outages: what a daily review looks at.
    pub event_days: BTreeSet<String>,
}

/// A completed export as a signed bundle.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Bundle {
    /// When it was completed.
    pub ts: String,
    pub by: String,
    pub since: Option<String>,
    pub until: Option<String>,
    pub records: u64,
    pub out: Option<String>,
}

/// A recorded daily review.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Review {
    pub day: String,
    pub reviewer: String,
    /// `token`, `os_user` or `unverified`.
    pub source: String,
    pub groups: BTreeSet<String>,
    /// When it was recorded.
    pub ts: String,
    pub note: String,
    pub claimed_as: String,
}

/// Facts about the whole store, whatever the period.
#[derive(Debug, Default, Serialize)]
pub struct StoreFacts {
    pub oldest: Option<String>,
    /// Retention prunings: (when, removed records older than).
    pub prunings: Vec<(String, String)>,
    /// Every completed export as a signed bundle, in time order.
    pub bundles: Vec<Bundle>,
    /// Every recorded review, by day reviewed.
    pub reviews: BTreeMap<String, Vec<Review>>,
    /// Records in each of the last three 30-day windows, oldest first: (from, to, records).
    pub recent: Vec<(String, String, u64)>,
}

/// The most gaps or PAN findings listed by location (all are counted).
const LISTED: usize = 50;

/// Streams the period's records of every chain.
pub async fn gather(store: &mut Store, period: &Period) -> Result<Evidence, store::Error> {
    let (since, until) = period.bounds();
    let mut e = Evidence::default();
    for chain in store.chains().await? {
        let Some((lo, hi)) = store.span(&chain, since, until).await? else {
            continue;
        };
        let mut after = lo - 1;
        while after < hi {
            let page = store.page(&chain, after, 2000).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for r in page.iter().filter(|r| r.seq <= hi) {
                if r.ts.as_str() < since || r.ts.as_str() >= until {
                    continue;
                }
                match serde_json::from_str::<serde_json::Value>(&r.body) {
                    Ok(raw) => {
                        scan_pans(&mut e, &raw, &r.chain, r.seq, &r.ts, &r.kind);
                        match serde_json::from_value::<Body>(raw) {
                            Ok(b) => add(&mut e, &b),
                            Err(_) => gap(&mut e, &r.chain, r.seq, &r.ts, &r.kind, "body"),
                        }
                    }
                    Err(_) => gap(&mut e, &r.chain, r.seq, &r.ts, &r.kind, "body"),
                }
            }
        }
    }
    Ok(e)
}

/// The store-wide facts: oldest record, prunings, completed bundle exports, daily reviews,
/// and the records of the last three 30-day windows before `now`.
pub async fn store_facts(store: &mut Store, now: &str) -> Result<StoreFacts, store::Error> {
    let mut f = StoreFacts {
        oldest: store.oldest_ts().await?,
        ..StoreFacts::default()
    };
    if let Ok(now) = humantime::parse_rfc3339_weak(now) {
        let day = std::time::Duration::from_secs(86_400);
        for back in [90u32, 60, 30] {
            let from = humantime::format_rfc3339_micros(now - day * back).to_string();
            let to = humantime::format_rfc3339_micros(now - day * (back - 30)).to_string();
            let n = store.count(&from, &to).await?;
            f.recent.push((from, to, n));
        }
    }
    let kinds = [kind::AUDIT_PRUNED, kind::AUDIT_EXPORT, kind::AUDIT_REVIEW];
    for r in store.of_types(&kinds, "", "9999").await? {
        let Ok(b) = serde_json::from_str::<Body>(&r.body) else {
            continue;
        };
        let d = &b.detail;
        let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
        match b.kind.as_str() {
            kind::AUDIT_PRUNED => f.prunings.push((b.ts.clone(), text(&d["older_than"]))),
            // Only an export that was written to its end counts as a backup.
            kind::AUDIT_EXPORT if d["format"] == "bundle" && d["completed"] == true => {
                f.bundles.push(Bundle {
                    ts: b.ts.clone(),
                    by: b.subject.clone().unwrap_or_default(),
                    since: d["since"].as_str().map(str::to_owned),
                    until: d["until"].as_str().map(str::to_owned),
                    records: d["records"].as_u64().unwrap_or(0),
                    out: d["out"].as_str().map(str::to_owned),
                })
            }
            kind::AUDIT_REVIEW if b.outcome == "success" => {
                if let Some(day) = d["date"].as_str() {
                    f.reviews.entry(day.to_owned()).or_default().push(Review {
                        day: day.to_owned(),
                        reviewer: b.subject.clone().unwrap_or_default(),
                        source: reader_source(d).to_owned(),
                        groups: b.groups.iter().cloned().collect(),
                        ts: b.ts.clone(),
                        note: text(&d["note"]),
                        claimed_as: text(&d["claimed_as"]),
                    });
                }
            }
            _ => {}
        }
    }
    Ok(f)
}

/// How a read's reader was named: `token`, `os_user`, else `unverified`.
fn reader_source(d: &serde_json::Value) -> &str {
    d["reader_source"]
        .as_str()
        .filter(|s| matches!(*s, "token" | "os_user"))
        .unwrap_or("unverified")
}

fn gap(e: &mut Evidence, chain: &str, seq: u64, ts: &str, kind: &str, missing: &str) {
    e.gap_count += 1;
    if e.gaps.len() < LISTED {
        e.gaps.push(Location {
            chain: chain.to_owned(),
            seq,
            ts: ts.to_owned(),
            kind: kind.to_owned(),
            field: missing.to_owned(),
        });
    }
}

/// Every string, key and number of a record body but its chain position and time passes the
/// card-number detector (every spelling the masker folds); each finding is located.
fn scan_pans(
    e: &mut Evidence,
    body: &serde_json::Value,
    chain: &str,
    seq: u64,
    ts: &str,
    kind: &str,
) {
    let mut found = Vec::new();
    if let Some(o) = body.as_object() {
        for (k, v) in o {
            if matches!(k.as_str(), "v" | "chain" | "seq" | "prev" | "ts") {
                continue;
            }
            walk(v, k.clone(), &mut found);
        }
    }
    for field in found {
        e.clear_pan_count += 1;
        if e.clear_pans.len() < LISTED {
            e.clear_pans.push(Location {
                chain: chain.to_owned(),
                seq,
                ts: ts.to_owned(),
                kind: kind.to_owned(),
                field,
            });
        }
    }
}

fn holds_pan(text: &str) -> bool {
    matches!(
        crate::mask::sink_masker().mask(text.as_bytes()),
        Cow::Owned(_)
    )
}

fn walk(v: &serde_json::Value, path: String, found: &mut Vec<String>) {
    use serde_json::Value;
    match v {
        Value::String(s) if holds_pan(s) => found.push(path),
        Value::Number(n) if holds_pan(&n.to_string()) => found.push(path),
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                walk(v, format!("{path}[{i}]"), found);
            }
        }
        Value::Object(o) => {
            for (k, v) in o {
                if holds_pan(k) {
                    found.push(format!("{path} (a key)"));
                }
                walk(v, format!("{path}.{k}"), found);
            }
        }
        _ => {}
    }
}

/// The kinds that happen inside a client session: their resource is the target.
fn in_session(kind: &str) -> bool {
    matches!(
        kind,
        kind::AUTH
            | kind::SESSION_START
            | kind::SESSION_END
            | kind::STATEMENT
            | kind::CLIENT_FRAMES
            | kind::SERVER_FRAMES
            | kind::APPROVAL
            | kind::COLUMN_PROMOTED
            | kind::RESULT_CAPPED
    )
}

fn nonempty(s: &Option<String>) -> bool {
    s.as_deref().is_some_and(|s| !s.is_empty())
}

/// A concrete database or target (the `*` pattern of a target names none).
fn concrete(s: &Option<String>) -> bool {
    s.as_deref().is_some_and(|s| !s.is_empty() && s != "*")
}

/// The PCI DSS 10.2.2 fields a record carries. The daemon's own events (subject `tollgate`)
/// originate in the daemon and act on it; reads of the trail act on the trail.
fn fields_present(b: &Body) -> [bool; 6] {
    let user = nonempty(&b.subject)
        || (b.kind == kind::AUTH && b.detail["user"].as_str().is_some_and(|u| !u.is_empty()));
    let daemon = b.subject.as_deref() == Some("tollgate");
    let origin = nonempty(&b.client_addr) || daemon;
    let d = &b.detail;
    let resource = if in_session(&b.kind) {
        concrete(&b.database) || !b.tables.is_empty()
    } else if daemon {
        // The daemon's own events act on the daemon, its configuration or the trail.
        true
    } else {
        // Reads, exports, reviews and admin actions name what they acted on.
        ["command", "format", "date", "api", "approval", "action"]
            .iter()
            .any(|k| !d[*k].is_null())
    };
    [
        user,
        !b.kind.is_empty(),
        humantime::parse_rfc3339_weak(&b.ts).is_ok(),
        !b.outcome.is_empty(),
        origin,
        resource,
    ]
}

fn add(e: &mut Evidence, b: &Body) {
    e.records += 1;
    if e.first.as_deref().is_none_or(|f| b.ts.as_str() < f) {
        e.first = Some(b.ts.clone());
    }
    if e.last.as_deref().is_none_or(|l| b.ts.as_str() > l) {
        e.last = Some(b.ts.clone());
    }
    let present = fields_present(b);
    let mut missing = Vec::new();
    for (name, ok) in FIELDS.iter().zip(present) {
        if ok {
            *e.complete.entry(name).or_default() += 1;
        } else {
            missing.push(*name);
        }
    }
    if !missing.is_empty() {
        gap(e, &b.chain, b.seq, &b.ts, &b.kind, &missing.join(", "));
    }
    let day = b.ts.get(..10).unwrap_or_default().to_owned();
    let subject = b.subject.clone().unwrap_or_default();
    let d = &b.detail;
    match b.kind.as_str() {
        kind::AUTH => {
            if b.outcome == "success" {
                *e.logins_by_method
                    .entry(d["method"].as_str().unwrap_or("unknown").to_owned())
                    .or_default() += 1;
                e.logins_ok += 1;
                let who = identity(e, b);
                if let Some(m) = d["method"].as_str() {
                    who.auth_methods.insert(m.to_owned());
                }
            } else {
                e.logins_failed += 1;
                e.event_days.insert(day);
                let reason = d["reason_kind"].as_str().unwrap_or("unknown").to_owned();
                *e.failure_reasons.entry(reason.clone()).or_default() += 1;
                if e.failed_logins.len() < LISTED {
                    let text = |v: &Option<String>| v.clone().unwrap_or_default();
                    e.failed_logins.push(FailedLogin {
                        ts: b.ts.clone(),
                        user: d["user"].as_str().unwrap_or_default().to_owned(),
                        client_addr: text(&b.client_addr),
                        target: text(&b.target),
                        method: d["method"].as_str().unwrap_or_default().to_owned(),
                        reason,
                    });
                }
            }
        }
        kind::SESSION_START => {
            e.sessions += 1;
            if subject.is_empty() {
                e.sessions_without_subject += 1;
            }
            *e.upstream_roles
                .entry(b.upstream_role.clone().unwrap_or_default())
                .or_default() += 1;
            let who = identity(e, b);
            who.sessions += 1;
            if let Some(a) = d["actor"].as_str() {
                who.actors.insert(a.to_owned());
            }
            clock(e, b);
        }
        kind::STATEMENT => statement(e, b, day),
        kind::APPROVAL => {
            e.event_days.insert(day);
            if b.outcome == "held" {
                e.held += 1;
            }
            approval(e, b);
        }
        kind::SERVER_FRAMES => {
            e.masked_values += d["masked"].as_u64().unwrap_or(0);
            e.result_rows += d["rows"].as_u64().unwrap_or(0);
        }
        kind::AUDIT_READ | kind::AUDIT_EXPORT | kind::AUDIT_REVIEW => {
            e.audit_reads += 1;
            let source = reader_source(d);
            let r = e.readers.entry(subject.clone()).or_insert_with(|| Reader {
                subject,
                source: source.to_owned(),
                issuer: b.issuer.clone().unwrap_or_default(),
                first: b.ts.clone(),
                ..Reader::default()
            });
            r.groups.extend(b.groups.iter().cloned());
            r.reads += 1;
            r.last = b.ts.clone();
        }
        kind::DAEMON_START => {
            e.daemon_starts += 1;
            if d["previous_stop"] == "unclean" {
                e.unclean_starts += 1;
                e.event_days.insert(day);
            }
        }
        kind::DAEMON_STOP => e.daemon_stops += 1,
        kind::POLICY_RELOAD => e.policy_reloads += 1,
        kind::CONFIG_LOAD => e.config_loads += 1,
        kind::STORE_FAILURE => {
            e.event_days.insert(day);
            e.store_failures.push(Location {
                chain: b.chain.clone(),
                seq: b.seq,
                ts: b.ts.clone(),
                kind: b.kind.clone(),
                field: d["error"].as_str().unwrap_or_default().to_owned(),
            });
        }
        kind::AUDIT_PRUNED => e.pruned += 1,
        _ => {}
    }
}

/// The activity row of the record's identity, created at its first record.
fn identity<'e>(e: &'e mut Evidence, b: &Body) -> &'e mut IdentityActivity {
    let subject = b.subject.clone().unwrap_or_default();
    let who = e
        .identities
        .entry(subject.clone())
        .or_insert_with(|| IdentityActivity {
            subject,
            first: b.ts.clone(),
            ..IdentityActivity::default()
        });
    who.last = b.ts.clone();
    who.groups.extend(b.groups.iter().cloned());
    who.issuers.extend(b.issuer.iter().cloned());
    who.client_ids.extend(b.client_id.iter().cloned());
    who.upstream_roles.extend(b.upstream_role.iter().cloned());
    who.targets.extend(b.target.iter().cloned());
    who.databases
        .extend(b.database.iter().filter(|d| *d != "*").cloned());
    who.tables.extend(b.tables.iter().cloned());
    who
}

fn statement(e: &mut Evidence, b: &Body, day: String) {
    let d = &b.detail;
    e.statements += 1;
    let rule = d["decision"]["rule"]
        .as_str()
        .unwrap_or("(default)")
        .to_owned();
    let held = d["decision"]["action"] == "require_approval";
    let refused = b.outcome == "refused";
    if refused {
        e.event_days.insert(day);
    }
    match (held, refused) {
        (true, false) => e.decisions.held_ran += 1,
        (true, true) => e.decisions.held_refused += 1,
        (false, false) => e.decisions.allowed += 1,
        (false, true) if d["sqlstate"] == "58030" => e.decisions.refused_unrecorded += 1,
        (false, true) => {
            e.decisions.refused += 1;
            e.refused += 1;
            *e.refused_by_rule.entry(rule.clone()).or_default() += 1;
        }
    }
    if d["decision"]["dry_run"].as_bool() == Some(true) {
        e.dry_run += 1;
    }
    let kinds: Vec<&str> = d["kinds"]
        .as_array()
        .map(|k| k.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    if kinds.contains(&"ddl") {
        e.schema_changes += 1;
    }
    if kinds.contains(&"dcl") {
        e.privilege_changes += 1;
    }
    e.tables.extend(b.tables.iter().cloned());
    let who = identity(e, b);
    match (held, refused) {
        (true, _) => *who.held_by_rule.entry(rule).or_default() += 1,
        (false, true) => *who.refused_by_rule.entry(rule).or_default() += 1,
        (false, false) => who.allowed += 1,
    }
}

fn approval(e: &mut Evidence, b: &Body) {
    let d = &b.detail;
    let Some(id) = d["approval"].as_str() else {
        return;
    };
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    let row = e
        .approvals
        .entry(id.to_owned())
        .or_insert_with(|| ApprovalRow {
            id: id.to_owned(),
            requester: s(&d["requester"]),
            target: b.target.clone().unwrap_or_default(),
            rule: s(&d["rule"]),
            sql: s(&d["sql"]),
            approver_group: s(&d["approver_group"]),
            requested: s(&d["created"]),
            decision: "pending".into(),
            ..ApprovalRow::default()
        });
    match (b.outcome.as_str(), d["decision"].as_str()) {
        ("held", _) => row.rule_reason = s(&d["reason"]),
        (_, Some("refused_decision")) => row.refused_decisions += 1,
        (_, Some(decision)) => {
            row.decision = decision.to_owned();
            row.approver = s(&d["approver"]);
            row.decision_reason = match decision {
                "denied" => s(&d["reason"]),
                "cancelled" => s(&d["why"]),
                _ => String::new(),
            };
            row.decided = b.ts.clone();
            row.window_s = d["window_s"].as_u64();
        }
        _ => {}
    }
}

fn clock(e: &mut Evidence, b: &Body) {
    let c = &b.detail["clock"];
    if c.is_null() {
        return;
    }
    let t = e
        .clocks
        .entry(b.target.clone().unwrap_or_default())
        .or_default();
    match c["skew_ms"].as_f64() {
        Some(skew) => {
            t.samples += 1;
            if skew.abs() >= t.worst_skew_ms.abs() {
                t.worst_skew_ms = skew;
                t.worst_at = b.ts.clone();
            }
        }
        None => t.failed += 1,
    }
}

/// A day's security events, counted (what `tollgate audit review` records it looked at).
pub fn day_events(e: &Evidence) -> serde_json::Value {
    serde_json::json!({
        "refused": e.refused,
        "logins_failed": e.logins_failed,
        "approvals": e.approvals.len(),
        "store_failures": e.store_failures.len(),
        "unclean_starts": e.unclean_starts,
        "clear_pans": e.clear_pan_count,
    })
}

/// A day's security events, one line each, for the reviewer to read.
pub fn day_lines(e: &Evidence) -> Vec<String> {
    let list = |m: &BTreeMap<String, u64>| {
        m.iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut lines = vec![
        format!(
            "{} records, {} sessions, {} statements",
            e.records, e.sessions, e.statements
        ),
        format!(
            "{} statements refused ({})",
            e.refused,
            list(&e.refused_by_rule)
        ),
        format!(
            "{} failed logins ({})",
            e.logins_failed,
            list(&e.failure_reasons)
        ),
        format!("{} held statements", e.approvals.len()),
        format!(
            "{} audit store outages, {} starts after an unclean stop",
            e.store_failures.len(),
            e.unclean_starts
        ),
        format!(
            "{} clear card numbers found in the records",
            e.clear_pan_count
        ),
    ];
    for a in e.approvals.values() {
        lines.push(format!(
            "approval {}: {} asked ({}), {} by {}",
            a.id,
            a.requester,
            a.rule,
            a.decision,
            if a.approver.is_empty() {
                "nobody"
            } else {
                &a.approver
            }
        ));
    }
    for f in &e.store_failures {
        lines.push(format!("outage at {}: {}", f.ts, f.field));
    }
    lines
}
