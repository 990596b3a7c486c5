//! `tollgate audit report`: a PCI DSS evidence summary of a period, per requirement, with the
//! chain status, in Markdown or HTML. Built by streaming the period's records once.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::export::Period;
use super::kind;
use super::record::Body;
use super::store::{self, Store};
use super::verify::ChainReport;

/// What the period's records add up to.
#[derive(Debug, Default)]
pub struct Evidence {
    pub records: u64,
    pub logins_ok: u64,
    pub logins_failed: u64,
    pub failure_reasons: BTreeMap<String, u64>,
    pub sessions: u64,
    pub subjects: BTreeSet<String>,
    pub sessions_without_subject: u64,
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
    pub audit_reads: u64,
    pub audit_readers: BTreeSet<String>,
    pub daemon_starts: u64,
    pub unclean_starts: u64,
    pub daemon_stops: u64,
    pub policy_reloads: u64,
    pub store_failures: u64,
    pub pruned: u64,
}

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
                if let Ok(b) = serde_json::from_str::<Body>(&r.body) {
                    add(&mut e, &b);
                }
            }
        }
    }
    Ok(e)
}

fn add(e: &mut Evidence, b: &Body) {
    e.records += 1;
    let d = &b.detail;
    match b.kind.as_str() {
        kind::AUTH => {
            if b.outcome == "success" {
                e.logins_ok += 1;
            } else {
                e.logins_failed += 1;
                let reason = d["reason_kind"].as_str().unwrap_or("unknown").to_owned();
                *e.failure_reasons.entry(reason).or_default() += 1;
            }
        }
        kind::SESSION_START => {
            e.sessions += 1;
            match &b.subject {
                Some(s) if !s.is_empty() => {
                    e.subjects.insert(s.clone());
                }
                _ => e.sessions_without_subject += 1,
            }
            *e.upstream_roles
                .entry(b.upstream_role.clone().unwrap_or_default())
                .or_default() += 1;
        }
        kind::STATEMENT => {
            e.statements += 1;
            if b.outcome == "refused" {
                e.refused += 1;
                let rule = d["decision"]["rule"]
                    .as_str()
                    .unwrap_or("(default)")
                    .to_owned();
                *e.refused_by_rule.entry(rule).or_default() += 1;
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
        }
        kind::APPROVAL if b.outcome == "held" => e.held += 1,
        kind::SERVER_FRAMES => {
            e.masked_values += d["masked"].as_u64().unwrap_or(0);
            e.result_rows += d["rows"].as_u64().unwrap_or(0);
        }
        kind::AUDIT_READ | kind::AUDIT_EXPORT => {
            e.audit_reads += 1;
            e.audit_readers
                .insert(b.subject.clone().unwrap_or_default());
        }
        kind::DAEMON_START => {
            e.daemon_starts += 1;
            if d["previous_stop"] == "unclean" {
                e.unclean_starts += 1;
            }
        }
        kind::DAEMON_STOP => e.daemon_stops += 1,
        kind::POLICY_RELOAD => e.policy_reloads += 1,
        kind::STORE_FAILURE => e.store_failures += 1,
        kind::AUDIT_PRUNED => e.pruned += 1,
        _ => {}
    }
}

/// One requirement's section.
struct Section {
    req: &'static str,
    title: &'static str,
    lines: Vec<String>,
}

fn sections(e: &Evidence, chains: &[ChainReport]) -> Vec<Section> {
    let list = |m: &BTreeMap<String, u64>| {
        if m.is_empty() {
            "none".to_owned()
        } else {
            m.iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let chains_ok = chains.iter().all(ChainReport::ok);
    let mut chain_lines = vec![format!(
        "Chain verification: **{}** ({} chain(s)).",
        if chains_ok { "PASSED" } else { "FAILED" },
        chains.len()
    )];
    for c in chains {
        chain_lines.push(format!(
            "Chain `{}`: records {}–{}, {} checkpoint(s), last signed at {}, {} unsigned record(s) at the tail; {}",
            c.chain,
            c.first_seq.unwrap_or(0),
            c.last_seq.unwrap_or(0),
            c.checkpoints,
            c.last_checkpoint.map_or("never".into(), |s| s.to_string()),
            c.unsigned_tail,
            match c.problems.first() {
                None => "intact".to_owned(),
                Some(p) => format!("first problem: {p}"),
            }
        ));
    }
    vec![
        Section {
            req: "3.4.1",
            title: "PAN masked when displayed",
            lines: vec![
                format!("{} card numbers were masked in results, errors and notices sent to agents ({} result rows).", e.masked_values, e.result_rows),
                "Every value, COPY line, error and notice is scanned before it leaves tollgate; recorded content is the masked content.".into(),
            ],
        },
        Section {
            req: "7.2",
            title: "Access limited by least privilege",
            lines: vec![
                format!("{} statements decided by policy: {} allowed, {} refused, {} held for approval, {} only logged (audit mode).", e.statements, e.statements - e.refused, e.refused, e.held, e.dry_run),
                format!("Refusals by rule: {}.", list(&e.refused_by_rule)),
                format!("Upstream roles used (sessions): {}.", list(&e.upstream_roles)),
            ],
        },
        Section {
            req: "8.2.1",
            title: "Unique identity for every actor",
            lines: vec![
                format!("{} sessions by {} distinct identities: {}.", e.sessions, e.subjects.len(), e.subjects.iter().cloned().collect::<Vec<_>>().join(", ")),
                format!("Sessions without an identity: {}.", e.sessions_without_subject),
            ],
        },
        Section {
            req: "10.2.1.1",
            title: "Access to cardholder data",
            lines: vec![format!("{} statements over tables: {}.", e.statements, if e.tables.is_empty() { "none".into() } else { e.tables.iter().cloned().collect::<Vec<_>>().join(", ") })],
        },
        Section {
            req: "10.2.1.2",
            title: "Actions with administrative access",
            lines: vec![format!("{} schema changes and {} privilege changes were attempted (each recorded with its identity and decision).", e.schema_changes, e.privilege_changes)],
        },
        Section {
            req: "10.2.1.3",
            title: "Access to audit logs",
            lines: vec![format!("{} reads or exports of the audit trail, by: {}.", e.audit_reads, if e.audit_readers.is_empty() { "nobody".into() } else { e.audit_readers.iter().cloned().collect::<Vec<_>>().join(", ") })],
        },
        Section {
            req: "10.2.1.4",
            title: "Invalid logical access attempts",
            lines: vec![
                format!("{} failed logins ({}); {} successful.", e.logins_failed, list(&e.failure_reasons), e.logins_ok),
                format!("{} statements refused by policy.", e.refused),
            ],
        },
        Section {
            req: "10.2.1.5",
            title: "Changes to identification and authentication",
            lines: vec![format!("{} policy reloads recorded; {} privilege (GRANT/REVOKE/role) statements attempted.", e.policy_reloads, e.privilege_changes)],
        },
        Section {
            req: "10.2.1.6",
            title: "Audit log start, stop and pause",
            lines: vec![format!("{} starts ({} after an unclean stop), {} clean stops, {} store outages, {} retention prunings.", e.daemon_starts, e.unclean_starts, e.daemon_stops, e.store_failures, e.pruned)],
        },
        Section {
            req: "10.2.1.7",
            title: "Creation and deletion of system-level objects",
            lines: vec![format!("{} schema-changing statements (CREATE, ALTER, DROP…) attempted.", e.schema_changes)],
        },
        Section {
            req: "10.3",
            title: "Audit logs protected from destruction and modification",
            lines: chain_lines,
        },
        Section {
            req: "10.7",
            title: "Failures of critical security controls",
            lines: vec![format!("{} audit store outages; while the store failed, statements were refused rather than run unrecorded.", e.store_failures)],
        },
    ]
}

/// The report as Markdown.
pub fn markdown(e: &Evidence, chains: &[ChainReport], period: &Period) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# tollgate PCI DSS evidence report\n");
    let _ = writeln!(
        out,
        "Period: {} to {} (UTC). Generated {}. Records in the period: {}.\n",
        period.since.as_deref().unwrap_or("the beginning"),
        period.until.as_deref().unwrap_or("now"),
        super::now_ts(),
        e.records
    );
    for s in sections(e, chains) {
        let _ = writeln!(out, "## {} {}\n", s.req, s.title);
        for l in s.lines {
            let _ = writeln!(out, "- {l}");
        }
        out.push('\n');
    }
    out
}

pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The report as a standalone HTML page.
pub fn html(e: &Evidence, chains: &[ChainReport], period: &Period) -> String {
    let mut out = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>tollgate PCI DSS evidence report</title><style>body{font-family:sans-serif;max-width:60em;margin:2em auto}h2{border-bottom:1px solid #ccc}</style></head><body><h1>tollgate PCI DSS evidence report</h1>",
    );
    let _ = write!(
        out,
        "<p>Period: {} to {} (UTC). Generated {}. Records in the period: {}.</p>",
        escape(period.since.as_deref().unwrap_or("the beginning")),
        escape(period.until.as_deref().unwrap_or("now")),
        super::now_ts(),
        e.records
    );
    for s in sections(e, chains) {
        let _ = write!(out, "<h2>{} {}</h2><ul>", s.req, escape(s.title));
        for l in s.lines {
            let l = escape(&l);
            // The Markdown emphasis of the chain status.
            let l = l
                .replacen("**", "<strong>", 1)
                .replacen("**", "</strong>", 1);
            let _ = write!(out, "<li>{l}</li>");
        }
        out.push_str("</ul>");
    }
    out.push_str("</body></html>\n");
    out
}
