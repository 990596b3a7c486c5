//! A statement's lifecycle once the inspect stage has ruled on it, the same on both wires:
//! inspect -> (hold for approval -> decided) -> settle (count, record, refuse if unrecordable)
//! -> forward or refuse. The wires call these in that order; holding itself (waiting on the
//! live connection) is the wire's, since it must keep reading the client.

use std::time::SystemTime;

use crate::audit::{self, Event, Outcome};
use crate::mask::Masker;
use crate::pipeline::{ConnInfo, Origin, Ruling, Statement, Verdict};

/// Counts a ruling and records the statement with it; what cannot be recorded is not run
/// (PCI DSS 10.7): the verdict becomes a 58030 refusal. Shared by both protocols' relays.
pub async fn settle(
    recorder: Option<&audit::Recorder>,
    info: &ConnInfo,
    statement: &Statement<'_>,
    ruling: Ruling,
    masker: &Masker,
) -> Verdict {
    metrics::counter!(
        crate::metrics::STATEMENTS,
        "decision" => if ruling.verdict == Verdict::Forward { ruling.action } else if ruling.hold.is_some() { "require_approval" } else { "deny" },
        "rule" => ruling.rule.clone().unwrap_or_default()
    )
    .increment(1);
    let Some(recorder) = recorder else {
        return ruling.verdict;
    };
    match recorder
        .record_within(statement_event(info, statement, &ruling, masker))
        .await
    {
        Ok(()) => ruling.verdict,
        Err(e) => {
            metrics::counter!(crate::metrics::STATEMENTS, "decision" => "refused_audit", "rule" => "").increment(1);
            Verdict::Refuse {
                sqlstate: "58030".into(),
                message: format!(
                    "tollgate: statement refused because the audit trail cannot record it ({e}); retry shortly"
                ),
            }
        }
    }
}

/// The `statement` event: the masked text, how it came, and the ruling.
pub fn statement_event(
    info: &ConnInfo,
    statement: &Statement<'_>,
    ruling: &Ruling,
    masker: &Masker,
) -> Event {
    let (origin, name, oid) = match statement.origin {
        Origin::Simple => ("simple", None, None),
        Origin::Prepare { name } => ("prepare", Some(name), None),
        Origin::FunctionCall { oid } => ("function_call", None, Some(oid)),
    };
    let sql = crate::mask::redact_secrets(&String::from_utf8_lossy(
        &masker.mask(statement.sql.as_bytes()),
    ));
    let mut detail = serde_json::json!({
        "sql": sql,
        "origin": origin,
        "decision": {
            "action": ruling.action,
            "decided": ruling.decided,
            "rule": ruling.rule,
            "reason": crate::mask::for_log(&ruling.reason),
            "dry_run": ruling.action != ruling.decided,
        },
        "kinds": ruling.kinds,
    });
    if let Some(cap) = &ruling.result_cap {
        detail["decision"]["result_cap"] = serde_json::to_value(cap).unwrap_or_default();
    }
    if let Some(name) = name {
        detail["name"] = serde_json::Value::String(crate::mask::for_log(name));
    }
    if let Some(reason) = stated_reason(info, statement) {
        detail["reason"] = String::from_utf8_lossy(&masker.mask(reason.as_bytes()))
            .into_owned()
            .into();
    }
    if let Some(actor) = &info.identity.actor {
        detail["actor"] = crate::mask::for_log(actor).into();
    }
    if let Some(oid) = oid {
        detail["oid"] = oid.into();
    }
    let outcome = match &ruling.verdict {
        Verdict::Forward => Outcome::Success,
        Verdict::Refuse { sqlstate, message } => {
            detail["sqlstate"] = sqlstate.as_str().into();
            detail["message"] = crate::mask::for_log(message).into();
            Outcome::Refused
        }
    };
    let mut event = Event::new(audit::kind::STATEMENT, outcome, info.who.clone(), detail);
    event.tables = ruling.tables.clone();
    event
}

/// The reason the agent states for a statement: its leading `/* reason: … */` comment, else
/// the session's `tollgate.reason` (`policy::reason`); cleaned and length-capped, not masked.
pub fn stated_reason(info: &ConnInfo, statement: &Statement<'_>) -> Option<String> {
    let dialect = match info.protocol {
        crate::config::Protocol::Postgres => crate::policy::classify::SqlDialect::Postgres,
        crate::config::Protocol::Mysql => crate::policy::classify::SqlDialect::MySql,
    };
    crate::policy::reason::stated(info.session_reason.as_deref(), statement.sql, dialect)
}

/// The key of an approval window: the same statement, literals included (a window covers
/// what the approver read, not every statement of its shape: `LIKE '3'` approved does not
/// let `LIKE '%'` through), on the same database, under the same rule and approver group.
/// The text is kept only as its SHA-256, so no literal (a card number) is stored as a key.
pub fn approval_fingerprint(
    info: &ConnInfo,
    statement: &Statement<'_>,
    ruling: &Ruling,
    hold: &crate::pipeline::Hold,
    dialect: crate::policy::classify::SqlDialect,
) -> String {
    let text = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, statement.sql.as_bytes());
    format!(
        "{}\u{1f}{}\u{1f}{}\u{1f}{:?}:{}",
        info.database,
        ruling.rule.as_deref().unwrap_or(""),
        hold.group,
        dialect,
        crate::audit::record::hex(text.as_ref())
    )
}

/// What an approval's outcome does to the held statement, and the note the trail keeps.
pub fn decided(
    info: &ConnInfo,
    id: &crate::approval::ApprovalId,
    outcome: crate::approval::Outcome,
    hold: &crate::pipeline::Hold,
) -> (Verdict, String) {
    use crate::approval::Outcome as Decided;
    let refuse = |message: String| Verdict::Refuse {
        sqlstate: "42501".into(),
        message,
    };
    match outcome {
        Decided::Approved { by, .. } if info.identity.expired(SystemTime::now()) => (
            refuse(format!(
                "tollgate: approval {id} was granted by {by} but the agent token expired meanwhile; reconnect and retry"
            )),
            format!("approval {id} granted by {by}; token expired"),
        ),
        Decided::Approved { by, window } => (
            Verdict::Forward,
            match window {
                Some(w) => format!(
                    "approval {id} granted by {by} for {}",
                    humantime::format_duration(w)
                ),
                None => format!("approval {id} granted by {by}"),
            },
        ),
        Decided::Denied { by, reason } => (
            refuse(format!(
                "tollgate: approval {id} denied by {by}: {}",
                crate::mask::for_log(&reason)
            )),
            format!("approval {id} denied by {by}"),
        ),
        Decided::TimedOut => (
            refuse(format!(
                "tollgate: approval {id} timed out after {}; the statement was not run",
                humantime::format_duration(hold.timeout)
            )),
            format!("approval {id} timed out"),
        ),
        Decided::Cancelled => (
            refuse(format!("tollgate: approval {id} was cancelled")),
            format!("approval {id} cancelled"),
        ),
    }
}

/// A window an approver opened for this identity, statement, rule and group lets the
/// statement through at once: the verdict and the note the trail keeps.
pub async fn approved_by_window(
    approvals: &std::sync::Arc<crate::approval::Approvals>,
    info: &ConnInfo,
    fingerprint: &str,
) -> Option<(Verdict, String)> {
    let (id, by) = approvals
        .window(&info.identity, &info.target, fingerprint)
        .await?;
    Some((
        Verdict::Forward,
        format!("approved by {by} within the window of approval {id}"),
    ))
}

/// Submits a held statement to the approvers (its SQL masked, secrets redacted); the wire then
/// waits on the ticket while it watches its client, and passes the outcome to [`decided`].
/// `Err` is the refusal when the request cannot be submitted.
#[allow(clippy::too_many_arguments)]
pub async fn submit_for_approval(
    approvals: &std::sync::Arc<crate::approval::Approvals>,
    info: &ConnInfo,
    statement: &Statement<'_>,
    ruling: &Ruling,
    hold: &crate::pipeline::Hold,
    masker: &Masker,
    fingerprint: String,
    preview: Option<crate::approval::preview::Preview>,
) -> Result<crate::approval::Ticket, (Verdict, String)> {
    let sql = crate::mask::redact_secrets(&String::from_utf8_lossy(
        &masker.mask(statement.sql.as_bytes()),
    ));
    let masked = |text: &str| String::from_utf8_lossy(&masker.mask(text.as_bytes())).into_owned();
    let details = crate::approval::Details {
        agent_reason: stated_reason(info, statement).map(|r| masked(&r)),
        actor: info.identity.actor.as_deref().map(masked),
        preview,
    };
    approvals
        .submit(
            &info.identity,
            info.who.clone(),
            &info.target,
            &info.database,
            sql,
            fingerprint,
            ruling.rule.clone(),
            ruling.reason.clone(),
            hold.group.clone(),
            hold.timeout,
            details,
        )
        .await
        .map_err(|e| {
            (
                Verdict::Refuse {
                    sqlstate: "42501".into(),
                    message: format!("tollgate: statement not held for approval: {e}"),
                },
                e.to_string(),
            )
        })
}
