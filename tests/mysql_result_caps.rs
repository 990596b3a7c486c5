//! Issue #20: a rule's `result_cap` through tollgate to the machine's MariaDB 10.11. A
//! 20,000-row SELECT stops at 10,000 rows with ERR 1317 (SQLSTATE 70100) naming the rule, in
//! the text and the binary protocol; the query is killed on the server (a statement that
//! would sleep for hours past the cap ends at once and is gone from the processlist); the
//! connection is used again, inside a transaction too; the cap is recorded.

mod common;

use std::time::Duration;

use common::mysql::{direct, setup_policy};
use mysql_async::prelude::*;
use tollgate::audit::store::Location;
use tollgate::audit::{Store, kind};

const POLICY: &str = "
default: deny
rules:
  - id: agents-read
    match: { groups: [ai-agents], kinds: [read, call, session, transaction] }
    action: allow
    result_cap: { rows: 10000 }
";

const ROWS: &str = "SELECT seq FROM seq_1_to_20000";
/// Fast up to row 15,000, then an hour per row: only a KILL ends it soon.
const SLOW_TAIL: &str = "SELECT seq, SLEEP(IF(seq > 15000, 3600, 0)) FROM seq_1_to_20000";

/// Streams a result: the rows that arrived and the error that ended it.
async fn stream(
    mut result: mysql_async::QueryResult<'_, '_, impl mysql_async::prelude::Protocol>,
) -> (usize, Option<mysql_async::Error>) {
    let mut rows = 0;
    loop {
        match result.next().await {
            Ok(Some(_)) => rows += 1,
            Ok(None) => return (rows, None),
            Err(e) => return (rows, Some(e)),
        }
    }
}

fn server_error(e: Option<mysql_async::Error>) -> (u16, String, String) {
    match e {
        Some(mysql_async::Error::Server(s)) => (s.code, s.state, s.message),
        other => panic!("expected a server error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_select_stops_at_the_cap_in_both_protocols_and_the_query_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let s = setup_policy("caps", "", Some(&policy), false).await;
    let mut conn = s.agent("agent-7", &["ai-agents"]).await;

    // Text protocol.
    let (rows, error) = stream(conn.query_iter(ROWS).await.unwrap()).await;
    assert_eq!(rows, 10_000);
    let (code, state, message) = server_error(error);
    assert_eq!((code, state.as_str()), (1317, "70100"));
    assert!(
        message.contains("result cap of 10000 rows reached (rule agents-read)"),
        "{message}"
    );
    let one: Option<u64> = conn.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));

    // A statement the server would run for hours past the cap ends now: it was killed.
    let (rows, error) = tokio::time::timeout(Duration::from_secs(30), async {
        stream(conn.query_iter(SLOW_TAIL).await.unwrap()).await
    })
    .await
    .expect("killed upstream, not left running");
    assert_eq!(rows, 10_000);
    assert_eq!(server_error(error).0, 1317);
    let mut d = direct().await;
    let running: Vec<u64> = d
        .query("SELECT id FROM information_schema.processlist WHERE info LIKE '%SLEEP(IF(seq%' AND id <> CONNECTION_ID()")
        .await
        .unwrap();
    assert!(running.is_empty(), "still running: {running:?}");

    // Binary protocol (a prepared statement), inside a transaction that stays open.
    conn.query_drop("BEGIN").await.unwrap();
    let (rows, error) = stream(
        conn.exec_iter("SELECT seq FROM seq_1_to_20000 WHERE seq > ?", (0,))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(rows, 10_000);
    assert_eq!(server_error(error).0, 1317);
    let n: Option<u64> = conn
        .exec_first(
            "SELECT count(*) FROM seq_1_to_20000 WHERE seq > ?",
            (19_990,),
        )
        .await
        .unwrap();
    assert_eq!(n, Some(10));
    conn.query_drop("COMMIT").await.unwrap();
    drop(conn);

    // Each cap is recorded with its rule and limit.
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.recorder.flush().await.unwrap();
    let mut store = Store::open(&Location::Sqlite(s.db.clone()), false)
        .await
        .unwrap();
    let capped = store
        .of_types(&[kind::RESULT_CAPPED], "", "9999")
        .await
        .unwrap();
    assert_eq!(capped.len(), 3, "text, slow tail, binary");
    for r in &capped {
        assert!(r.body.contains("\"rule\":\"agents-read\""), "{}", r.body);
        assert!(r.body.contains("\"max\":10000"), "{}", r.body);
    }
}

#[tokio::test]
async fn a_bytes_cap_counts_row_payloads() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "rules:\n  - id: small-reads\n    match: { groups: [ai-agents], kinds: [read, session, transaction] }\n    action: allow\n    result_cap: { bytes: 100KB }\n",
    )
    .unwrap();
    let s = setup_policy("capbytes", "", Some(&policy), false).await;
    let mut conn = s.agent("agent-8", &["ai-agents"]).await;
    // Text rows of 1,003 bytes (a 3-byte length and 1,000 bytes): the 100th passes 100 kB.
    let (rows, error) = stream(
        conn.query_iter("SELECT REPEAT('x', 1000) FROM seq_1_to_1000")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(rows, 99);
    let (code, _, message) = server_error(error);
    assert_eq!(code, 1317);
    assert!(
        message.contains("result cap of 100000 bytes reached (rule small-reads)"),
        "{message}"
    );
    let one: Option<u64> = conn.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
}
