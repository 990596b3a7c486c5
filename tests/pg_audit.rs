//! The record stage through tollgate to the machine's PostgreSQL: a PAN-heavy session lands in
//! the SQLite store masked and verifiable; refusals carry their rule; a store that cannot
//! write makes tollgate refuse statements, and recording resumes when it is back.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Proxy;
use tollgate::audit::record::PublicKey;
use tollgate::audit::store::Location;
use tollgate::audit::writer::Recorder;
use tollgate::audit::{Store, kind, verify};
use tollgate::conn::policy_files::PolicyInspector;
use tollgate::pipeline::Stages;
use tollgate::policy::classify::SqlDialect;
use tollgate::policy::inspect::PolicyStage;

/// Luhn-valid numbers used below, one per brand.
const PANS: &[&str] = &[
    "4111111111111111",
    "5555555555554444",
    "378282246310005",
    "6011111111111117",
    "3530111333300000",
    "2223000048400011",
];

struct Audited {
    proxy: Proxy,
    recorder: Recorder,
    key: PublicKey,
    db: std::path::PathBuf,
}

async fn audited(policy: Option<&str>, results: &str) -> Audited {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let (signer, key_file) = common::signing_key(dir.path());
    let key = PublicKey::from_bytes(signer.public_key());
    let recorder = Recorder::start(
        common::recorder_settings(Location::Sqlite(db.clone()), "test"),
        signer,
    )
    .unwrap();
    let mut stages = Stages {
        record: Some(recorder.clone()),
        ..Stages::default()
    };
    if let Some(policy) = policy {
        let inspector =
            Arc::new(PolicyInspector::load(vec![policy.into()], SqlDialect::Postgres).unwrap());
        stages.inspect = Arc::new(PolicyStage(inspector));
    }
    let pw = dir.path().join("agent-password");
    std::fs::write(&pw, common::AGENT_PASSWORD).unwrap();
    let yaml = format!(
        "
audit:
  sqlite: {db}
  signing_key: {{ file: {key} }}
  results: {results}
targets:
  - name: test
    address: 127.0.0.1:5432
    user: postgres
    client_auth: {{ method: scram-sha-256, user: agent, groups: [ai-agents], password: {{ file: {pw} }} }}
",
        db = db.display(),
        key = key_file.display(),
        pw = pw.display()
    );
    Audited {
        proxy: Proxy::start_yaml(dir, &yaml, stages).await,
        recorder,
        key,
        db,
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Any clear PAN in the bytes: the corpus in every spelling, and any Luhn-valid brand run.
fn assert_no_pan(bytes: &[u8], what: &str) {
    for pan in PANS {
        let spaced: String = pan
            .as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(" ");
        for form in [pan.to_string(), spaced.clone(), spaced.replace(' ', "-")] {
            assert!(!contains(bytes, form.as_bytes()), "{what} holds {form}");
        }
    }
    let found = tollgate::mask::pan::find_all(bytes);
    let context: Vec<String> = found
        .iter()
        .map(|f| {
            String::from_utf8_lossy(
                &bytes[f.range.start.saturating_sub(80)..(f.range.end + 40).min(bytes.len())],
            )
            .into_owned()
        })
        .collect();
    assert!(
        found.is_empty(),
        "{what} holds PAN-like runs: {found:?} {context:?}"
    );
}

#[tokio::test]
async fn a_pan_heavy_session_is_recorded_masked_and_verifies() {
    let a = audited(None, "full").await;
    let (client, mut messages) = a.proxy.connect_with_messages().await;
    client
        .batch_execute(
            "create temp table cards (id int primary key, pan text, n numeric, b bigint, j jsonb)",
        )
        .await
        .unwrap();
    for (i, pan) in PANS.iter().enumerate() {
        // Literal in the query text, and the same as bind parameters.
        client
            .batch_execute(&format!(
                "insert into cards values ({i}, '{pan}', {pan}, {b}, '{{\"card\": \"{pan}\"}}')",
                b = if pan.len() <= 18 { *pan } else { "0" }
            ))
            .await
            .unwrap();
        let spaced: String = pan
            .as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(" ");
        client
            .execute(
                "insert into cards (id, pan) values ($1, $2)",
                &[&(100 + i as i32), &spaced],
            )
            .await
            .unwrap();
    }
    // A PAN as a binary bigint parameter: its bytes cannot be scanned, so they are not kept.
    client
        .execute(
            "insert into cards (id, b) values ($1, $2)",
            &[&300i32, &4111111111111111i64],
        )
        .await
        .unwrap();
    // Text and binary results, COPY out, a unique violation, a notice, a notification.
    let rows = client.simple_query("select * from cards").await.unwrap();
    assert!(rows.len() > PANS.len());
    let typed = client
        .query("select pan, b from cards where id = 0", &[])
        .await
        .unwrap();
    assert_eq!(typed[0].get::<_, String>(0), "411111******1111");
    client
        .simple_query("copy (select pan from cards) to stdout with (format csv)")
        .await
        .ok();
    let err = client
        .batch_execute("insert into cards values (0, '4111111111111111')")
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "23505");
    client
        .batch_execute("do $$ begin raise notice 'card %', '5555555555554444'; end $$")
        .await
        .unwrap();
    client
        .batch_execute("listen cards; notify cards, 'card 378282246310005'")
        .await
        .unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(2), messages.recv()).await;
    drop(client);
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.recorder.flush().await.unwrap();

    // Nothing clear on disk, nor the agent's password.
    let bytes = common::audit_store_bytes(&a.db).await;
    assert!(bytes.len() > 10_000, "the session was recorded");
    assert_no_pan(&bytes, "the audit store");
    assert!(!contains(&bytes, common::AGENT_PASSWORD.as_bytes()));

    // The chain verifies; the session is whole: start, statements, frames, end.
    let mut store = Store::open(&Location::Sqlite(a.db.clone()), false)
        .await
        .unwrap();
    let reports = verify::store(&mut store, &a.key).await.unwrap();
    assert!(reports[0].ok(), "{:?}", reports[0].problems);
    let period = tollgate::audit::export::Period {
        since: None,
        until: None,
    };
    let sessions = tollgate::audit::sessions::list(&mut store, &period)
        .await
        .unwrap();
    assert_eq!(sessions.len(), 1);
    let s = &sessions[0];
    assert_eq!(s.subject.as_deref(), Some("agent"));
    assert_eq!(s.groups, ["ai-agents"]);
    assert_eq!(s.upstream_role.as_deref(), Some("postgres"));
    assert!(s.end.is_some(), "the session ended");
    assert!(s.statements >= 2 * PANS.len() as u64 + 6, "{s:?}");
    let steps = tollgate::audit::sessions::timeline(&mut store, &s.id)
        .await
        .unwrap();
    let types: Vec<&str> = steps.iter().map(|s| s.kind.as_str()).collect();
    for t in [
        kind::SESSION_START,
        kind::STATEMENT,
        kind::CLIENT_FRAMES,
        kind::SERVER_FRAMES,
        kind::SESSION_END,
    ] {
        assert!(types.contains(&t), "{t} missing from {types:?}");
    }
    // The replay shows the masked rows, the bind parameters masked, the masked error.
    let replay: String = steps
        .iter()
        .map(tollgate::audit::sessions::render)
        .collect();
    assert!(replay.contains("411111******1111"), "{replay}");
    assert!(replay.contains("ERROR 23505"), "{replay}");
    let binds = steps
        .iter()
        .filter(|s| s.kind == kind::CLIENT_FRAMES)
        .flat_map(|s| s.detail["frames"].as_array().cloned().unwrap_or_default())
        .filter(|f| f["t"] == "B")
        .count();
    assert!(binds >= PANS.len());
    let binary_params: Vec<serde_json::Value> = steps
        .iter()
        .filter(|s| s.kind == kind::CLIENT_FRAMES)
        .flat_map(|s| s.detail["frames"].as_array().cloned().unwrap_or_default())
        .filter(|f| f["t"] == "B")
        .flat_map(|f| f["params"].as_array().cloned().unwrap_or_default())
        .filter(|p| p.is_object())
        .collect();
    assert!(
        binary_params.contains(&serde_json::json!({"binary": 8})),
        "{binary_params:?}"
    );
    // Authentication is recorded with the 10.2.2 fields.
    let auth = store.of_types(&[kind::AUTH], "", "9999").await.unwrap();
    assert_eq!(auth.len(), 1);
    assert!(auth[0].body.contains("\"client_addr\":\"127.0.0.1:"));
}

#[tokio::test]
async fn refusals_are_recorded_with_their_rule_and_summary_mode_counts_rows() {
    let a = audited(Some("config/policies/agents.yaml"), "summary").await;
    let client = a.proxy.connect().await;
    let err = client
        .batch_execute("drop table if exists x")
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42501");
    let rows = client
        .simple_query("select g from generate_series(1, 50) g")
        .await
        .unwrap();
    assert_eq!(rows.len(), 52, "RowDescription, 50 rows, CommandComplete");
    drop(client);
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.recorder.flush().await.unwrap();
    let mut store = Store::open(&Location::Sqlite(a.db.clone()), false)
        .await
        .unwrap();
    let statements = store
        .of_types(&[kind::STATEMENT], "", "9999")
        .await
        .unwrap();
    let refused: Vec<_> = statements
        .iter()
        .filter(|r| r.outcome == "refused")
        .collect();
    assert_eq!(refused.len(), 1);
    let body: serde_json::Value = serde_json::from_str(&refused[0].body).unwrap();
    assert_eq!(body["detail"]["decision"]["action"], "deny");
    assert!(body["detail"]["decision"]["rule"].is_string(), "{body}");
    assert_eq!(body["detail"]["sqlstate"], "42501");
    assert_eq!(body["tables"], serde_json::json!(["x"]));
    // Summary mode: rows counted, not kept.
    let frames = store
        .of_types(&[kind::SERVER_FRAMES], "", "9999")
        .await
        .unwrap();
    let all: String = frames.iter().map(|r| r.body.as_str()).collect();
    assert!(all.contains("\"rows\":50"), "{all:.2000}");
    assert!(!all.contains("\"values\""));
}

#[tokio::test]
async fn statements_are_refused_while_the_store_cannot_write() {
    let a = audited(None, "full").await;
    let client = a.proxy.connect().await;
    client.simple_query("select 1").await.unwrap();
    let mut locker = std::process::Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sqlite3,sys\nc=sqlite3.connect({:?},isolation_level=None)\nc.execute('BEGIN EXCLUSIVE')\nprint('locked',flush=True)\nsys.stdin.readline()\nc.execute('COMMIT')",
            a.db.display().to_string()
        ))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(locker.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
    }
    // Once the writer has met the lock, statements are refused with 58030, never forwarded.
    let mut refused = None;
    for i in 0..100 {
        match client.simple_query(&format!("select {i}")).await {
            Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let e = refused.expect("statements refused while the store is locked");
    assert_eq!(e.code().unwrap().code(), "58030", "{e}");
    let message = e.as_db_error().unwrap().message().to_owned();
    assert!(message.contains("audit trail"), "{message}");
    // The connection stays usable; freed, the store catches up and statements run again.
    use std::io::Write;
    writeln!(locker.stdin.as_mut().unwrap()).unwrap();
    locker.wait().unwrap();
    let mut ok = false;
    for _ in 0..100 {
        if client.simple_query("select 'back'").await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "statements run again once the store recovers");
    a.recorder.flush().await.unwrap();
    let mut store = Store::open(&Location::Sqlite(a.db.clone()), false)
        .await
        .unwrap();
    let reports = verify::store(&mut store, &a.key).await.unwrap();
    assert!(reports[0].ok(), "{:?}", reports[0].problems);
    assert_eq!(
        store
            .of_types(&[kind::STORE_FAILURE], "", "9999")
            .await
            .unwrap()
            .len(),
        1
    );
}
