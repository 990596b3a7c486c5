//! The verdicts: each section's requirement, evidence and judgement. Thresholds are named
//! where they are set (a day for the bundle export, a second for clock skew, twelve months
//! and three months for retention).

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde_json::json;

use super::gather::{Evidence, FIELDS, Location, StoreFacts};
use super::{Inputs, Section, Table, TargetFacts, Verdict, trail};
use crate::audit::export::Period;
use crate::audit::verify::ChainReport;

/// Subjects that name a role or a shared account rather than a person or one program.
const GENERIC: &[&str] = &[
    "admin",
    "administrator",
    "agent",
    "anonymous",
    "bot",
    "ci",
    "default",
    "dev",
    "guest",
    "mysql",
    "postgres",
    "root",
    "sa",
    "service",
    "shared",
    "svc",
    "system",
    "test",
    "unknown",
    "user",
];

/// Words that, anywhere in a subject, mark an account many share (`shared-bot`, `team.etl`).
const SHARED_WORDS: &[&str] = &[
    "anonymous",
    "common",
    "default",
    "generic",
    "guest",
    "shared",
    "team",
    "temp",
    "test",
    "tmp",
    "unknown",
];

/// Upstream roles that are database superusers by name (PostgreSQL's bootstrap role, MySQL's
/// root, SQL Server's sa, the managed services' admin roles).
const SUPERUSER_ROLES: &[&str] = &[
    "postgres",
    "root",
    "sa",
    "admin",
    "rdsadmin",
    "azure_superuser",
];

/// Whether a subject names a shared or generic account: the whole name is a role or a system
/// account (`root`, `os:root`, `cli:unknown`, `admin`), or one of its words says it is shared
/// (`shared-bot`, `test_runner`).
pub fn generic_subject(subject: &str) -> bool {
    let bare = subject
        .rsplit(':')
        .next()
        .unwrap_or(subject)
        .to_ascii_lowercase();
    bare.is_empty()
        || GENERIC.contains(&bare.as_str())
        || bare
            .split(['-', '_', '.', '@', '+'])
            .any(|w| SHARED_WORDS.contains(&w))
}

pub(super) fn list(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        "none".to_owned()
    } else {
        m.iter()
            .map(|(k, v)| format!("{}: {v}", if k.is_empty() { "(none)" } else { k }))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub(super) fn join<'a>(items: impl IntoIterator<Item = &'a String>) -> String {
    let v: Vec<&str> = items.into_iter().map(String::as_str).collect();
    if v.is_empty() {
        "—".to_owned()
    } else {
        v.join(", ")
    }
}

pub(super) fn time(ts: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(ts).ok()
}

pub(super) fn locations(caption: &str, l: &[Location], last: &'static str) -> Table {
    Table {
        caption: caption.to_owned(),
        columns: vec!["chain", "seq", "time", "type", last],
        rows: l
            .iter()
            .map(|l| {
                vec![
                    l.chain.clone(),
                    l.seq.to_string(),
                    l.ts.clone(),
                    l.kind.clone(),
                    l.field.clone(),
                ]
            })
            .collect(),
    }
}

pub(super) fn section(
    group: &'static str,
    requirements: &'static str,
    title: &'static str,
) -> Section {
    Section {
        group,
        requirements,
        title,
        verdict: Verdict::NotEvidenced,
        reason: String::new(),
        facts: Vec::new(),
        tables: Vec::new(),
        figures: json!({}),
    }
}

pub(super) fn judge(s: &mut Section, verdict: Verdict, reason: impl Into<String>) {
    s.verdict = verdict;
    s.reason = reason.into();
}

/// Every section, in the printed order.
pub fn all(
    e: &Evidence,
    f: &StoreFacts,
    chains: &[ChainReport],
    period: &Period,
    inputs: &Inputs,
) -> Vec<Section> {
    vec![
        pan(e),
        approvals(e),
        access_review(e),
        identities(e, inputs),
        events(e),
        readers(e),
        completeness(e),
        trail::access(inputs),
        trail::integrity(chains, f, inputs),
        trail::reviews(e, f, period, inputs),
        trail::retention(f, inputs),
        trail::clocks(e),
        trail::failures(e),
    ]
}

fn pan(e: &Evidence) -> Section {
    let mut s = section(
        "3",
        "3.4.1 / 3.5.1",
        "PAN masked when displayed, unreadable where stored",
    );
    s.facts = vec![
        format!(
            "{} result rows sent to agents carried a masked card number ({} result rows in all, both protocols); errors, notices and column names are masked too.",
            e.masked_values, e.result_rows
        ),
        format!(
            "Every field of the period's {} records was scanned with the card-number detector (every spelling it folds: separators, Unicode digits, format characters): {} clear card number(s) found.",
            e.records, e.clear_pan_count
        ),
    ];
    s.tables.push(locations(
        "Clear card numbers found in the store",
        &e.clear_pans,
        "field",
    ));
    s.figures = json!({
        "masked_values": e.masked_values,
        "result_rows": e.result_rows,
        "records_scanned": e.records,
        "clear_pans": e.clear_pan_count,
    });
    match (e.records, e.clear_pan_count) {
        (0, _) => judge(&mut s, Verdict::NotEvidenced, "no records in the period"),
        (_, 0) => judge(
            &mut s,
            Verdict::Met,
            "no clear card number in any record of the period",
        ),
        (_, n) => judge(
            &mut s,
            Verdict::Attention,
            format!("{n} clear card number(s) in the store: see the records listed"),
        ),
    }
    s
}

fn approvals(e: &Evidence) -> Section {
    let mut s = section(
        "6",
        "6.5.1 / 8.2.2",
        "Held statements approved by a named person",
    );
    let mut by = BTreeMap::<String, u64>::new();
    let mut self_approved = 0;
    let mut shared_approvers = std::collections::BTreeSet::new();
    for a in e.approvals.values() {
        *by.entry(a.decision.clone()).or_default() += 1;
        if a.decision == "approved" && !a.approver.is_empty() && a.approver == a.requester {
            self_approved += 1;
        }
        if !a.approver.is_empty() && generic_subject(&a.approver) {
            shared_approvers.insert(a.approver.clone());
        }
    }
    s.facts = vec![
        format!(
            "{} statements held for approval; outcomes: {}.",
            e.approvals.len(),
            list(&by)
        ),
        format!(
            "{} decisions refused (an approver outside the approver group or deciding their own request).",
            e.approvals
                .values()
                .map(|a| a.refused_decisions)
                .sum::<u64>()
        ),
    ];
    s.tables.push(Table {
        caption: "Held statements".into(),
        columns: vec![
            "approval",
            "requester",
            "target",
            "rule",
            "statement (masked)",
            "why held",
            "requested",
            "decision",
            "approver",
            "reason",
            "decided",
            "window (s)",
        ],
        rows: e
            .approvals
            .values()
            .map(|a| {
                vec![
                    a.id.clone(),
                    a.requester.clone(),
                    a.target.clone(),
                    a.rule.clone(),
                    a.sql.clone(),
                    a.rule_reason.clone(),
                    a.requested.clone(),
                    a.decision.clone(),
                    a.approver.clone(),
                    a.decision_reason.clone(),
                    a.decided.clone(),
                    a.window_s.map(|w| w.to_string()).unwrap_or_default(),
                ]
            })
            .collect(),
    });
    let pending = by.get("pending").copied().unwrap_or(0);
    s.figures = json!({"held": e.approvals.len(), "outcomes": by, "self_approved": self_approved, "pending": pending, "shared_approvers": shared_approvers});
    if e.approvals.is_empty() {
        judge(
            &mut s,
            Verdict::NotEvidenced,
            "no statement was held for approval in the period",
        );
    } else if self_approved > 0 {
        judge(
            &mut s,
            Verdict::Attention,
            format!("{self_approved} statement(s) approved by their requester"),
        );
    } else if !shared_approvers.is_empty() {
        judge(
            &mut s,
            Verdict::Attention,
            format!(
                "decisions by shared or generic approver accounts: {}",
                join(&shared_approvers)
            ),
        );
    } else if pending > 0 {
        judge(
            &mut s,
            Verdict::Attention,
            format!(
                "{pending} held statement(s) without a recorded decision (the period may end while they wait)"
            ),
        );
    } else {
        judge(
            &mut s,
            Verdict::Met,
            "every held statement has a recorded decision by a named approver, or timed out",
        );
    }
    s
}

fn capped(items: &std::collections::BTreeSet<String>, most: usize) -> String {
    let mut text = join(items.iter().take(most));
    if items.len() > most {
        text.push_str(&format!(" … (+{})", items.len() - most));
    }
    text
}

fn access_review(e: &Evidence) -> Section {
    let mut s = section(
        "7",
        "7.2.1–7.2.5.1",
        "Access review: every identity and what it did",
    );
    let d = &e.decisions;
    s.facts = vec![
        format!(
            "{} statements: {} allowed and run, {} refused by policy, {} held for approval ({} then run, {} then refused), {} refused because the trail could not record them; {} of them only logged (audit mode).",
            d.total(), d.allowed, d.refused, d.held_ran + d.held_refused, d.held_ran, d.held_refused, d.refused_unrecorded, e.dry_run
        ),
        format!("Refusals by rule: {}.", list(&e.refused_by_rule)),
        format!("Upstream roles used (sessions): {}.", list(&e.upstream_roles)),
        "A reviewer signs off this table every six months (7.2.4): each identity's groups, what it reached, and the roles it used upstream. Approvers are listed under 6.5.1, readers of the trail under 10.2.1.3.".into(),
    ];
    s.tables.push(Table {
        caption: "Identities seen in the period".into(),
        columns: vec![
            "identity",
            "groups",
            "issuer",
            "client id",
            "login",
            "acting for",
            "first",
            "last",
            "sessions",
            "allowed",
            "refused (by rule)",
            "held (by rule)",
            "upstream roles",
            "databases",
            "tables",
        ],
        rows: e
            .identities
            .values()
            .map(|i| {
                vec![
                    if i.subject.is_empty() {
                        "(none)".into()
                    } else {
                        i.subject.clone()
                    },
                    join(&i.groups),
                    join(&i.issuers),
                    join(&i.client_ids),
                    join(&i.auth_methods),
                    if i.actors.is_empty() {
                        "not recorded".into()
                    } else {
                        join(&i.actors)
                    },
                    i.first.clone(),
                    i.last.clone(),
                    i.sessions.to_string(),
                    i.allowed.to_string(),
                    list(&i.refused_by_rule),
                    list(&i.held_by_rule),
                    join(&i.upstream_roles),
                    capped(&i.databases, 10),
                    capped(&i.tables, 20),
                ]
            })
            .collect(),
    });
    s.figures = json!({
        "identities": e.identities.len(),
        "statements": d.total(),
        "decisions": d,
        "dry_run": e.dry_run,
        "refused_by_rule": e.refused_by_rule,
        "upstream_roles": e.upstream_roles,
    });
    if e.sessions == 0 {
        judge(
            &mut s,
            Verdict::NotEvidenced,
            "no client session in the period",
        );
    } else if e.sessions_without_subject > 0 {
        judge(
            &mut s,
            Verdict::Attention,
            format!(
                "{} session(s) without an identity",
                e.sessions_without_subject
            ),
        );
    } else {
        judge(
            &mut s,
            Verdict::Met,
            "every session and statement is tied to an identity and its policy decision; the table is the review's input",
        );
    }
    s
}

fn identities(e: &Evidence, inputs: &Inputs) -> Section {
    let mut s = section(
        "8",
        "8.2.1 / 8.2.2 / 8.6.2",
        "Unique identities; shared accounts; credentials agents never hold",
    );
    let generic: Vec<&String> = e.identities.keys().filter(|k| generic_subject(k)).collect();
    let superuser: Vec<&String> = e
        .upstream_roles
        .keys()
        .filter(|r| SUPERUSER_ROLES.contains(&r.to_ascii_lowercase().as_str()))
        .collect();
    let static_logins = e.logins_by_method.get("static").copied().unwrap_or(0);
    let static_targets: Vec<&TargetFacts> = inputs
        .targets
        .iter()
        .filter(|t| t.client_login != "oidc")
        .collect();
    s.facts = vec![
        format!(
            "{} sessions by {} distinct identities; {} session(s) without one.",
            e.sessions,
            e.identities.len(),
            e.sessions_without_subject
        ),
        format!("Generic or shared identities: {}.", join(generic.iter().copied())),
        format!(
            "Successful logins by method: {}; {} failed (listed under 10.2.1.1–10.2.1.7).",
            list(&e.logins_by_method),
            e.logins_failed
        ),
        format!("Upstream roles that are database superusers by name: {}.", join(superuser.iter().copied())),
        "Agents log in to tollgate with their own token (or a target's client login); the database credential of each target below is read by tollgate from its configured source and never sent to the agent (8.6.2).".into(),
    ];
    s.tables.push(Table {
        caption: "Targets: how clients log in and where the upstream credential comes from".into(),
        columns: vec![
            "target",
            "client login",
            "upstream role",
            "credential source",
        ],
        rows: inputs
            .targets
            .iter()
            .map(|t| {
                vec![
                    t.name.clone(),
                    t.client_login.clone(),
                    t.upstream_role.clone(),
                    t.credential.clone(),
                ]
            })
            .collect(),
    });
    s.figures = json!({
        "sessions": e.sessions,
        "identities": e.identities.len(),
        "generic": generic,
        "superuser_roles": superuser,
        "logins_by_method": e.logins_by_method,
        "logins_failed": e.logins_failed,
        "static_targets": static_targets.iter().map(|t| &t.name).collect::<Vec<_>>(),
        "sessions_without_subject": e.sessions_without_subject,
    });
    let mut problems = Vec::new();
    if !generic.is_empty() {
        problems.push(format!(
            "generic or shared identities used: {}",
            join(generic.iter().copied())
        ));
    }
    if static_logins > 0 {
        problems.push(format!(
            "{static_logins} login(s) with a static client password"
        ));
    }
    if !static_targets.is_empty() {
        problems.push(format!(
            "targets with static client passwords: {}",
            static_targets
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !superuser.is_empty() {
        problems.push(format!(
            "sessions ran as superuser upstream roles: {}",
            join(superuser.iter().copied())
        ));
    }
    if e.sessions_without_subject > 0 {
        problems.push(format!(
            "{} session(s) without an identity",
            e.sessions_without_subject
        ));
    }
    if e.sessions == 0 {
        judge(
            &mut s,
            Verdict::NotEvidenced,
            "no client session in the period",
        );
    } else if problems.is_empty() {
        judge(
            &mut s,
            Verdict::Met,
            "every session has a unique, individual identity, logs in with a token, and runs as a non-superuser upstream role whose credential it never holds",
        );
    } else {
        judge(&mut s, Verdict::Attention, problems.join("; "));
    }
    s
}

fn events(e: &Evidence) -> Section {
    let mut s = section("10", "10.2.1.1–10.2.1.7", "Events logged");
    let tables = if e.tables.is_empty() {
        "none".into()
    } else {
        e.tables.iter().cloned().collect::<Vec<_>>().join(", ")
    };
    s.facts = vec![
        format!(
            "10.2.1.1 access to cardholder data: {} statements over tables: {tables}.",
            e.statements
        ),
        format!(
            "10.2.1.2 administrative actions: {} schema changes and {} privilege changes attempted, each recorded with its identity and decision.",
            e.schema_changes, e.privilege_changes
        ),
        format!(
            "10.2.1.4 invalid access attempts: {} failed logins ({}), {} successful; {} statements refused by policy.",
            e.logins_failed,
            list(&e.failure_reasons),
            e.logins_ok,
            e.refused
        ),
        format!(
            "10.2.1.5 changes to identification and authentication: {} policy reloads; {} privilege (GRANT/REVOKE/role) statements.",
            e.policy_reloads, e.privilege_changes
        ),
        format!(
            "10.2.1.6 audit log start, stop and pause: {} starts ({} after an unclean stop), {} clean stops, {} store outages, {} retention prunings.",
            e.daemon_starts,
            e.unclean_starts,
            e.daemon_stops,
            e.store_failures.len(),
            e.pruned
        ),
        format!(
            "10.2.1.7 system-level objects: {} schema-changing statements (CREATE, ALTER, DROP…).",
            e.schema_changes
        ),
    ];
    s.tables.push(Table {
        caption: "Failed logins".into(),
        columns: vec!["time", "user given", "from", "target", "method", "reason"],
        rows: e
            .failed_logins
            .iter()
            .map(|f| {
                vec![
                    f.ts.clone(),
                    f.user.clone(),
                    f.client_addr.clone(),
                    f.target.clone(),
                    f.method.clone(),
                    f.reason.clone(),
                ]
            })
            .collect(),
    });
    s.figures = json!({
        "config_loads": e.config_loads,
        "statements": e.statements, "schema_changes": e.schema_changes, "privilege_changes": e.privilege_changes,
        "logins_failed": e.logins_failed, "logins_ok": e.logins_ok, "failure_reasons": e.failure_reasons,
        "policy_reloads": e.policy_reloads, "daemon_starts": e.daemon_starts, "unclean_starts": e.unclean_starts,
        "daemon_stops": e.daemon_stops, "store_failures": e.store_failures.len(), "pruned": e.pruned,
    });
    if e.records == 0 {
        judge(&mut s, Verdict::NotEvidenced, "no records in the period");
    } else {
        judge(
            &mut s,
            Verdict::Met,
            "every login, statement, decision, administrative action and start or stop of the trail is recorded",
        );
    }
    s
}

/// Whether a subject also acted as a database client in the period (an agent reading or
/// reviewing its own trail).
fn was_client(e: &Evidence, subject: &str) -> bool {
    let bare = subject.strip_prefix("api:").unwrap_or(subject);
    e.identities.get(bare).is_some_and(|i| i.sessions > 0)
}

fn readers(e: &Evidence) -> Section {
    let mut s = section("10", "10.2.1.3", "Access to audit logs, by a named reader");
    let unnamed: Vec<&String> = e
        .readers
        .values()
        .filter(|r| r.source == "unverified" || generic_subject(&r.subject))
        .map(|r| &r.subject)
        .collect();
    let agents: Vec<&String> = e
        .readers
        .values()
        .filter(|r| was_client(e, &r.subject))
        .map(|r| &r.subject)
        .collect();
    s.facts = vec![
        format!(
            "{} reads, exports or reviews of the trail by {} reader(s). The CLI names its reader by a validated token's subject (TOLLGATE_TOKEN), else by the operating-system account running it; the admin API by the caller's token.",
            e.audit_reads,
            e.readers.len()
        ),
        "Reads of the store's files or database directly (outside tollgate) are not seen here: 10.3.1 below shows who can make them.".into(),
    ];
    s.tables.push(Table {
        caption: "Readers of the trail".into(),
        columns: vec![
            "reader", "named by", "issuer", "groups", "reads", "first", "last",
        ],
        rows: e
            .readers
            .values()
            .map(|r| {
                vec![
                    if r.subject.is_empty() {
                        "(none)".into()
                    } else {
                        r.subject.clone()
                    },
                    r.source.clone(),
                    r.issuer.clone(),
                    join(&r.groups),
                    r.reads.to_string(),
                    r.first.clone(),
                    r.last.clone(),
                ]
            })
            .collect(),
    });
    s.figures = json!({"reads": e.audit_reads, "readers": e.readers.len(), "unnamed": unnamed, "also_clients": agents});
    let mut problems = Vec::new();
    if !unnamed.is_empty() {
        problems.push(format!(
            "reads by unnamed, unverified or shared readers: {}",
            join(unnamed.iter().copied())
        ));
    }
    if !agents.is_empty() {
        problems.push(format!(
            "readers that also acted as database clients: {}",
            join(agents.iter().copied())
        ));
    }
    if problems.is_empty() {
        let why = if e.audit_reads == 0 {
            "no read of the trail in the period"
        } else {
            "every read of the trail names a verified, individual reader"
        };
        judge(&mut s, Verdict::Met, why);
    } else {
        judge(&mut s, Verdict::Attention, problems.join("; "));
    }
    s
}

fn completeness(e: &Evidence) -> Section {
    let mut s = section(
        "10",
        "10.2.2",
        "Every record carries user, event type, time, outcome, origin and resource",
    );
    let share = |n: u64| {
        if e.records == 0 {
            0.0
        } else {
            (n as f64) * 100.0 / (e.records as f64)
        }
    };
    s.tables.push(Table {
        caption: "Records carrying each field".into(),
        columns: vec!["field", "records", "share"],
        rows: FIELDS
            .iter()
            .map(|f| {
                let n = e.complete.get(f).copied().unwrap_or(0);
                vec![(*f).to_owned(), n.to_string(), format!("{:.2} %", share(n))]
            })
            .collect(),
    });
    s.tables
        .push(locations("Records missing a field", &e.gaps, "missing"));
    s.facts = vec![format!(
        "{} records checked; {} missing at least one field. The daemon's own events originate in the daemon; reads of the trail act on the trail.",
        e.records, e.gap_count
    )];
    let shares: BTreeMap<&str, f64> = FIELDS
        .iter()
        .map(|f| (*f, share(e.complete.get(f).copied().unwrap_or(0))))
        .collect();
    s.figures = json!({"records": e.records, "incomplete": e.gap_count, "share": shares});
    match (e.records, e.gap_count) {
        (0, _) => judge(&mut s, Verdict::NotEvidenced, "no records in the period"),
        (_, 0) => judge(&mut s, Verdict::Met, "100 % of records carry every field"),
        (_, n) => judge(
            &mut s,
            Verdict::Attention,
            format!("{n} record(s) miss a field: see the list"),
        ),
    }
    s
}
