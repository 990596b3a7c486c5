//! Sessions rebuilt from the records: lists, timelines and terminal replay.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::record::Body;
use super::store::{self, Store, StoredRecord};
use super::{export::Period, kind};

/// One session, as `tollgate sessions list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub id: String,
    pub subject: Option<String>,
    pub groups: Vec<String>,
    pub target: Option<String>,
    pub database: Option<String>,
    pub upstream_role: Option<String>,
    pub client_addr: Option<String>,
    pub application_name: Option<String>,
    pub start: String,
    pub end: Option<String>,
    pub duration_ms: Option<u64>,
    pub statements: u64,
    pub blocked: u64,
    pub held: u64,
}

fn ms_between(a: &str, b: &str) -> Option<u64> {
    let a = humantime::parse_rfc3339(a).ok()?;
    let b = humantime::parse_rfc3339(b).ok()?;
    Some(b.duration_since(a).ok()?.as_millis() as u64)
}

/// Sessions that started in the period, oldest first.
pub async fn list(store: &mut Store, period: &Period) -> Result<Vec<Summary>, store::Error> {
    let (since, until) = period.bounds();
    let starts = store.of_types(&[kind::SESSION_START], since, until).await?;
    let mut out = Vec::with_capacity(starts.len());
    for r in starts {
        let Ok(b) = serde_json::from_str::<Body>(&r.body) else {
            continue;
        };
        let Some(id) = b.session.clone() else {
            continue;
        };
        let counts = store.session_counts(&id).await?;
        let count = |t: &str, o: Option<&str>| {
            counts
                .iter()
                .filter(|(kt, ko, _)| kt == t && o.is_none_or(|o| ko == o))
                .map(|(_, _, n)| n)
                .sum::<u64>()
        };
        let end = store.session_end(&id).await?;
        out.push(Summary {
            duration_ms: end.as_deref().and_then(|e| ms_between(&b.ts, e)),
            end,
            id,
            subject: b.subject,
            groups: b.groups,
            target: b.target,
            database: b.database,
            upstream_role: b.upstream_role,
            client_addr: b.client_addr,
            application_name: b.application_name,
            start: b.ts,
            statements: count(kind::STATEMENT, None),
            blocked: count(kind::STATEMENT, Some("refused")),
            held: count(kind::APPROVAL, Some("held")),
        });
    }
    Ok(out)
}

/// The table `tollgate sessions list` prints.
pub fn table(sessions: &[Summary]) -> String {
    let mut t = comfy_table::Table::new();
    t.set_header([
        "session",
        "identity",
        "target",
        "start (UTC)",
        "duration",
        "statements",
        "blocked",
        "held",
    ]);
    for s in sessions {
        t.add_row([
            s.id.clone(),
            format!(
                "{} [{}]",
                s.subject.as_deref().unwrap_or("?"),
                s.groups.join(",")
            ),
            s.target.clone().unwrap_or_default(),
            s.start
                .chars()
                .take(19)
                .collect::<String>()
                .replace('T', " "),
            match s.duration_ms {
                Some(ms) => humantime::format_duration(Duration::from_millis(ms)).to_string(),
                None => "open".into(),
            },
            s.statements.to_string(),
            s.blocked.to_string(),
            s.held.to_string(),
        ]);
    }
    t.to_string()
}

/// One step of a session's timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub ts: String,
    /// Milliseconds since the session started.
    pub at_ms: u64,
    #[serde(rename = "type")]
    pub kind: String,
    pub outcome: String,
    pub chain: String,
    pub seq: u64,
    pub tables: Vec<String>,
    pub detail: serde_json::Value,
}

/// A session's records as a timeline.
pub async fn timeline(store: &mut Store, id: &str) -> Result<Vec<Step>, store::Error> {
    let records: Vec<StoredRecord> = store.session(id).await?;
    let start = records.first().map(|r| r.ts.clone()).unwrap_or_default();
    Ok(records
        .into_iter()
        .filter_map(|r| {
            let b: Body = serde_json::from_str(&r.body).ok()?;
            Some(Step {
                at_ms: ms_between(&start, &b.ts).unwrap_or(0),
                ts: b.ts,
                kind: b.kind,
                outcome: b.outcome,
                chain: b.chain,
                seq: b.seq,
                tables: b.tables,
                detail: b.detail,
            })
        })
        .collect())
}

fn s(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "NULL".into(),
        other => other.to_string(),
    }
}

/// A step as terminal text: the statement and its decision, result rows, errors.
pub fn render(step: &Step) -> String {
    let d = &step.detail;
    let mut out = String::new();
    let at = format!("+{:>8.3}s", step.at_ms as f64 / 1000.0);
    match step.kind.as_str() {
        kind::SESSION_START => {
            let _ = writeln!(out, "{at}  ── session start ({})", d);
        }
        kind::SESSION_END => {
            let _ = writeln!(out, "{at}  ── session end ({})", s(&d["reason"]));
        }
        kind::STATEMENT => {
            let decision = &d["decision"];
            let _ = writeln!(
                out,
                "{at}  {} {}",
                if step.outcome == "refused" {
                    "✗"
                } else {
                    "▶"
                },
                s(&d["sql"])
            );
            let _ = writeln!(
                out,
                "           decision: {} by {} ({})",
                s(&decision["action"]),
                decision["rule"].as_str().unwrap_or("the default"),
                s(&decision["reason"])
            );
        }
        kind::SERVER_FRAMES => {
            if let Some(frames) = d["frames"].as_array() {
                for f in frames {
                    match f["t"].as_str() {
                        Some("T") => {
                            let cols: Vec<String> = f["columns"]
                                .as_array()
                                .map(|c| c.iter().map(s).collect())
                                .unwrap_or_default();
                            let _ = writeln!(out, "           │ {}", cols.join(" │ "));
                        }
                        Some("D") if f.get("values").is_some() => {
                            let vals: Vec<String> = f["values"]
                                .as_array()
                                .map(|c| c.iter().map(s).collect())
                                .unwrap_or_default();
                            let _ = writeln!(out, "           │ {}", vals.join(" │ "));
                        }
                        Some("D") => {
                            let _ = writeln!(
                                out,
                                "           │ ({} rows, {} bytes)",
                                s(&f["rows"]),
                                s(&f["bytes"])
                            );
                        }
                        Some("C") => {
                            let _ = writeln!(out, "           ✓ {}", s(&f["tag"]));
                        }
                        Some("E") => {
                            let _ = writeln!(
                                out,
                                "           ERROR {}: {}",
                                s(&f["sqlstate"]),
                                s(&f["message"])
                            );
                        }
                        Some("N") => {
                            let _ = writeln!(out, "           NOTICE: {}", s(&f["message"]));
                        }
                        // MySQL frames (protocol::mysql::relay).
                        Some("columns") => {
                            let cols: Vec<String> = f["names"]
                                .as_array()
                                .map(|c| c.iter().map(s).collect())
                                .unwrap_or_default();
                            let _ = writeln!(out, "           │ {}", cols.join(" │ "));
                        }
                        Some("row") => {
                            let vals: Vec<String> = f["v"]
                                .as_array()
                                .map(|c| c.iter().map(s).collect())
                                .unwrap_or_default();
                            let _ = writeln!(out, "           │ {}", vals.join(" │ "));
                        }
                        Some("end") => {
                            let _ = writeln!(out, "           ✓ {} rows", s(&f["rows"]));
                        }
                        Some("ok") => {
                            let _ =
                                writeln!(out, "           ✓ OK, {} affected", s(&f["affected"]));
                        }
                        Some("err") => {
                            let _ = writeln!(
                                out,
                                "           ERROR {}: {}",
                                s(&f["code"]),
                                s(&f["message"])
                            );
                        }
                        Some("text") => {
                            let _ = writeln!(out, "           {}", s(&f["text"]));
                        }
                        _ => {}
                    }
                }
            }
        }
        kind::CLIENT_FRAMES => {}
        other => {
            let _ = writeln!(out, "{at}  {other} {} {}", step.outcome, d);
        }
    }
    out
}

/// Prints a session's timeline; with `speed`, at its own pace (2.0 = twice as fast).
pub async fn replay(
    steps: &[Step],
    speed: Option<f64>,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    let mut last = 0u64;
    for step in steps {
        if let Some(speed) = speed.filter(|s| *s > 0.0) {
            let wait = step.at_ms.saturating_sub(last) as f64 / speed;
            tokio::time::sleep(Duration::from_millis(wait.min(60_000.0) as u64)).await;
        }
        last = step.at_ms;
        out.write_all(render(step).as_bytes())?;
        out.flush()?;
    }
    Ok(())
}
