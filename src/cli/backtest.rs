//! `tollgate policy backtest --policy NEW.yaml [--since 7d]`: the statements the audit store
//! recorded, decided again under another policy, offline (no database is reached): counts per
//! old -> new decision and rule, with a few samples of each change.
//!
//! Each `statement` record holds the text as recorded (card numbers masked, secrets redacted),
//! the decision then (`detail.decision.action` and `.rule`) and who sent it where (subject,
//! groups, client id, issuer, target, database). The records are streamed a page at a time per
//! chain (`Store::page`), so memory stays bounded whatever the period. A text that no longer
//! parses (a statement that parsed when it ran, recorded with a card number masked inside a
//! literal, say) is counted under its new decision with `(no longer parses)`, never dropped. Limits: an
//! `EXECUTE` of a prepared name is judged without the session's prepared statements (the live
//! inspect stage remembers them), the target's own functions are not known (the live stage
//! reads them at login), and the relay's own refusals (MySQL pinned settings, other databases)
//! are not policy and so may show as changes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use tollgate::audit::kind;
use tollgate::auth::Identity;
use tollgate::config::{Config, Protocol};
use tollgate::policy::classify::SqlDialect;
use tollgate::policy::{Policy, RuleSet};

/// Samples kept per change.
const SAMPLES: usize = 3;
/// Records read from the store at once.
const PAGE: usize = 2000;

/// One old -> new pair's count and samples.
#[derive(Default)]
struct Change {
    count: u64,
    samples: Vec<String>,
}

/// Replays the period's statements of the trail `t` against `files`; prints the table.
pub async fn run(
    t: &super::Trail,
    files: &[PathBuf],
    since: &str,
    until: &str,
) -> anyhow::Result<()> {
    let rules = match RuleSet::load(files) {
        Ok(r) => r,
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            std::process::exit(1);
        }
    };
    let policy = Policy::new(rules);
    super::record_read(
        &t.setup,
        &t.reader,
        kind::AUDIT_READ,
        serde_json::json!({
            "command": "policy backtest",
            "since": since,
            "until": until,
            "policies": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
        }),
    )
    .await?;
    let mut store = super::open_store(&t.setup).await?;
    let mut changes: BTreeMap<(String, String), Change> = BTreeMap::new();
    let (mut total, mut changed, mut unparsed, mut skipped) = (0u64, 0u64, 0u64, 0u64);
    for chain in store.chains().await? {
        let Some((lo, hi)) = store.span(&chain, since, until).await? else {
            continue;
        };
        let mut after = lo - 1;
        while after < hi {
            let page = store.page(&chain, after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for r in page
                .iter()
                .filter(|r| r.seq <= hi && r.kind == kind::STATEMENT)
            {
                if r.ts.as_str() < since || r.ts.as_str() >= until {
                    continue;
                }
                let Ok(body) = serde_json::from_str::<serde_json::Value>(&r.body) else {
                    skipped += 1;
                    continue;
                };
                let Some(sql) = body["detail"]["sql"].as_str() else {
                    // A function call by OID: no text to decide again.
                    skipped += 1;
                    continue;
                };
                total += 1;
                let old = describe(
                    body["detail"]["decision"]["action"].as_str().unwrap_or("?"),
                    body["detail"]["decision"]["rule"].as_str(),
                );
                let identity = identity_of(&body);
                let database = body["database"].as_str().unwrap_or_default();
                let dialect = dialect_of(&t.config, body["target"].as_str());
                // The reason the statement stated, as recorded (its comment or its session's).
                let reason = body["detail"]["reason"].as_str();
                let report = policy.decide_stated(&identity, database, sql, dialect, reason);
                let d = &report.decision;
                let mut new = describe(d.action.name(), d.rule.as_deref());
                // Refused as unreadable then (its reason says so) and now is no change; read
                // then and unreadable now (a masked literal, a parser change) is one.
                let was_unparsed = body["detail"]["decision"]["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("could not be analysed"));
                if report.statements.iter().any(|s| s.unparsed.is_some()) && !was_unparsed {
                    unparsed += 1;
                    new.push_str(" (no longer parses)");
                }
                if new == old {
                    continue;
                }
                changed += 1;
                let change = changes.entry((old, new)).or_default();
                change.count += 1;
                if change.samples.len() < SAMPLES {
                    change.samples.push(format!(
                        "{} {} on {}: {}",
                        r.ts,
                        tollgate::mask::for_log(body["subject"].as_str().unwrap_or("?")),
                        tollgate::mask::for_log(database),
                        tollgate::mask::for_log(sql)
                    ));
                }
            }
        }
    }
    store.close().await;
    println!(
        "{total} statement(s) recorded from {} to {until} decided again under {}",
        if since.is_empty() { "the start" } else { since },
        files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "{} unchanged, {changed} changed, {unparsed} no longer parse, {skipped} without text (not decided again)",
        total - changed
    );
    for ((old, new), change) in &changes {
        println!("\n{old} -> {new}: {}", change.count);
        for s in &change.samples {
            println!("  {s}");
        }
    }
    Ok(())
}

/// `allow by agents-read`, `deny by default`.
fn describe(action: &str, rule: Option<&str>) -> String {
    format!("{action} by {}", rule.unwrap_or("default"))
}

/// The recorded sender of a statement.
fn identity_of(body: &serde_json::Value) -> Identity {
    let text = |k: &str| body[k].as_str().map(str::to_owned);
    Identity {
        subject: text("subject").unwrap_or_default(),
        groups: body["groups"]
            .as_array()
            .map(|g| {
                g.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        client_id: text("client_id"),
        issuer: text("issuer").unwrap_or_default(),
        expires_at: None,
        // The person the agent acted for, as the statement's record keeps it (masked).
        actor: body["detail"]["actor"].as_str().map(str::to_owned),
    }
}

/// The dialect of the recorded target's protocol (PostgreSQL when the target is not in the
/// config any more).
fn dialect_of(config: &Config, target: Option<&str>) -> SqlDialect {
    let protocol = config
        .targets
        .iter()
        .find(|t| Some(t.value.name.as_str()) == target)
        .map(|t| t.value.protocol);
    match protocol {
        Some(Protocol::Mysql) => SqlDialect::MySql,
        _ => SqlDialect::Postgres,
    }
}

/// The period's bounds as the store compares them (`since` empty: from the start).
pub fn bounds(since: Option<String>, until: Option<String>) -> (String, String) {
    (
        since.unwrap_or_default(),
        until.unwrap_or_else(|| "9999".to_owned()),
    )
}
