//! Issue #20: a rule's `result_cap` through tollgate to the machine's PostgreSQL 15. A 20,000-row
//! SELECT (simple and extended protocol, a portal fetched 1,000 rows at a time) and a COPY TO
//! STDOUT stop at 10,000 rows with SQLSTATE 57014 naming the rule; the statement is cancelled
//! on the server (pg_stat_activity shows the backend idle, and a statement that would sleep
//! for hours after the cap ends at once); the connection is used again; the cap is recorded.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Proxy, sqlstate};
use futures_util::{StreamExt, pin_mut};
use tollgate::audit::store::Location;
use tollgate::audit::writer::Recorder;
use tollgate::audit::{Store, kind};
use tollgate::conn::policy_files::PolicyInspector;
use tollgate::pipeline::Stages;
use tollgate::policy::classify::SqlDialect;
use tollgate::policy::inspect::PolicyStage;

/// The example's read rule, and COPY TO allowed under the same cap (the example denies it).
const COPY_POLICY: &str = "
default: deny
rules:
  - id: agents-read
    match: { groups: [ai-agents], kinds: [read, session, transaction] }
    action: allow
    result_cap: { rows: 10000 }
  - id: agents-export
    match: { groups: [ai-agents], kinds: [read, copy_out] }
    action: allow
    result_cap: { rows: 10000 }
";

struct Audited {
    proxy: Proxy,
    recorder: Recorder,
    db: std::path::PathBuf,
}

/// tollgate over PostgreSQL with `policy` and a SQLite audit store.
async fn audited(policy: &std::path::Path) -> Audited {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let (signer, key_file) = common::signing_key(dir.path());
    let recorder = Recorder::start(
        common::recorder_settings(Location::Sqlite(db.clone()), "test"),
        signer,
    )
    .unwrap();
    let inspector =
        Arc::new(PolicyInspector::load(vec![policy.to_owned()], SqlDialect::Postgres).unwrap());
    let stages = Stages {
        record: Some(recorder.clone()),
        inspect: Arc::new(PolicyStage(inspector)),
        approvals: None,
    };
    let pw = dir.path().join("agent-password");
    std::fs::write(&pw, common::AGENT_PASSWORD).unwrap();
    let yaml = format!(
        "
audit:
  sqlite: {db}
  signing_key: {{ file: {key} }}
  results: summary
targets:
  - name: test
    address: 127.0.0.1:5432
    user: postgres
    client_auth: {{ method: scram-sha-256, user: agent, groups: [ai-agents], password: {{ file: {pw} }} }}
  - name: plain
    address: 127.0.0.1:5432
    database: test
    user: postgres
    client_auth: {{ method: password, user: agent, groups: [ai-agents], password: {{ file: {pw} }} }}
",
        db = db.display(),
        key = key_file.display(),
        pw = pw.display(),
    );
    Audited {
        proxy: Proxy::start_yaml(dir, &yaml, stages).await,
        recorder,
        db,
    }
}

fn message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_else(|| e.to_string())
}

/// The upstream backend's state, read directly from PostgreSQL.
async fn backend_state(pid: i32) -> String {
    let (direct, conn) = tokio_postgres::connect(
        "host=127.0.0.1 port=5432 user=postgres dbname=test",
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let row = direct
        .query_one(
            "select coalesce(state, '') from pg_stat_activity where pid = $1",
            &[&pid],
        )
        .await
        .unwrap();
    row.get(0)
}

const ROWS: &str = "select g from generate_series(1, 20000) g";
/// Fast up to row 15,000, then an hour per row: only a cancel ends it soon. (A table, since
/// the example policy counts a function alias such as `generate_series(…) g` used in an
/// expression as a whole-row reference.)
const SLOW_TAIL: &str = "select g, pg_sleep(case when g > 15000 then 3600 else 0 end)::text \
                         from result_caps_rows";

/// The table SLOW_TAIL reads, made directly on PostgreSQL.
async fn rows_table() {
    let (direct, conn) = tokio_postgres::connect(
        "host=127.0.0.1 port=5432 user=postgres dbname=test",
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    direct
        .batch_execute(
            "create table if not exists result_caps_rows as select g from generate_series(1, 20000) g",
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_select_stops_at_the_cap_is_cancelled_upstream_and_the_connection_goes_on() {
    rows_table().await;
    let a = audited(std::path::Path::new("config/policies/agents.yaml")).await;
    let client = a.proxy.connect().await;
    let pid: i32 = client
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);

    // Simple protocol: the rows up to the cap arrive, then the error.
    let mut rows = 0;
    let mut error = None;
    {
        let stream = client.simple_query_raw(ROWS).await.unwrap();
        pin_mut!(stream);
        while let Some(m) = stream.next().await {
            match m {
                Ok(tokio_postgres::SimpleQueryMessage::Row(_)) => rows += 1,
                Ok(_) => {}
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
    }
    let error = error.expect("the capped result ends with an error");
    assert_eq!(rows, 10_000);
    assert_eq!(sqlstate(&error), "57014");
    assert!(
        message(&error).contains("result cap of 10000 rows reached (rule agents-read)"),
        "{}",
        message(&error)
    );
    assert_eq!(client.simple_query("select 1").await.unwrap().len(), 3);

    // A statement the server would run for hours past the cap ends now: it was cancelled.
    let err = tokio::time::timeout(Duration::from_secs(30), client.simple_query(SLOW_TAIL))
        .await
        .expect("cancelled upstream, not left running")
        .unwrap_err();
    assert_eq!(sqlstate(&err), "57014");
    assert_eq!(backend_state(pid).await, "idle");

    // Extended protocol: the same cap, the same error.
    let err = client.query(ROWS, &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err), "57014");
    let n: i32 = client.query_one("select 7", &[]).await.unwrap().get(0);
    assert_eq!(n, 7);

    // A portal fetched 1,000 rows at a time: the rows count across the Executes.
    let mut client = client;
    let tx = client.transaction().await.unwrap();
    let portal = tx.bind(ROWS, &[]).await.unwrap();
    let mut fetched = 0;
    let err = loop {
        match tx.query_portal(&portal, 1000).await {
            Ok(batch) => {
                assert!(!batch.is_empty(), "the cap ends the portal before its end");
                fetched += batch.len();
            }
            Err(e) => break e,
        }
    };
    assert_eq!(fetched, 10_000);
    assert_eq!(sqlstate(&err), "57014");
    tx.rollback().await.unwrap();
    assert_eq!(
        client.simple_query("select 1").await.unwrap().len(),
        3,
        "usable after the transaction"
    );
    assert_eq!(backend_state(pid).await, "idle");

    // Each cap is recorded, with its rule and limit, and the statement with its cap.
    drop(client);
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.recorder.flush().await.unwrap();
    let mut store = Store::open(&Location::Sqlite(a.db.clone()), false)
        .await
        .unwrap();
    let capped = store
        .of_types(&[kind::RESULT_CAPPED], "", "9999")
        .await
        .unwrap();
    assert_eq!(capped.len(), 4, "simple, slow tail, extended, portal");
    for r in &capped {
        assert!(r.body.contains("\"rule\":\"agents-read\""), "{}", r.body);
        assert!(r.body.contains("\"limit\":\"rows\""), "{}", r.body);
        assert!(r.body.contains("\"max\":10000"), "{}", r.body);
    }
    let statements = store
        .of_types(&[kind::STATEMENT], "", "9999")
        .await
        .unwrap();
    assert!(
        statements
            .iter()
            .any(|s| s.body.contains("\"result_cap\":{\"bytes\":{\"max\":50000000,\"rule\":\"agents-read\"},\"rows\":{\"max\":10000,\"rule\":\"agents-read\"}}")),
        "the statement record carries its cap"
    );
}

#[tokio::test]
async fn copy_to_stdout_stops_at_the_cap_and_the_connection_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, COPY_POLICY).unwrap();
    let a = audited(&policy).await;
    let client = a.proxy.connect().await;
    let stream = client
        .copy_out("copy (select g from generate_series(1, 20000) g) to stdout")
        .await
        .unwrap();
    pin_mut!(stream);
    let mut lines = 0;
    let mut error = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => lines += bytes.iter().filter(|&&b| b == b'\n').count(),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    assert_eq!(lines, 10_000, "one row a CopyData message");
    let error = error.expect("the copy ends with an error");
    assert_eq!(sqlstate(&error), "57014");
    assert!(message(&error).contains("rule agents-export"), "{error}");
    let n: i32 = client.query_one("select 3", &[]).await.unwrap().get(0);
    assert_eq!(n, 3);
}

#[tokio::test]
async fn a_bytes_cap_and_a_cancel_inside_a_transaction_block() {
    rows_table().await;
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "rules:\n  - id: small-reads\n    match: { kinds: [read, session, transaction] }\n    action: allow\n    result_cap: { bytes: 100KB }\n",
    )
    .unwrap();
    let a = audited(&policy).await;
    let client = a.proxy.connect().await;

    // 1,006-byte DataRows (a column count, a length, 1,000 bytes): the 100th passes 100 kB.
    let stream = client
        .simple_query_raw("select repeat('x', 1000) from generate_series(1, 1000)")
        .await
        .unwrap();
    pin_mut!(stream);
    let mut rows = 0;
    let mut error = None;
    while let Some(m) = stream.next().await {
        match m {
            Ok(tokio_postgres::SimpleQueryMessage::Row(_)) => rows += 1,
            Ok(_) => {}
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    assert_eq!(rows, 99);
    let error = error.unwrap();
    assert_eq!(sqlstate(&error), "57014");
    assert!(
        message(&error).contains("result cap of 100000 bytes reached (rule small-reads)"),
        "{}",
        message(&error)
    );

    // Inside a transaction block the server's cancel aborts it, as PostgreSQL does: the
    // client is told so by the server's own status, and ROLLBACK makes the session whole.
    client.batch_execute("begin").await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(30), client.simple_query(SLOW_TAIL))
        .await
        .expect("cancelled upstream")
        .unwrap_err();
    assert_eq!(sqlstate(&err), "57014");
    assert_eq!(
        sqlstate(&client.simple_query("select 1").await.unwrap_err()),
        "25P02"
    );
    client.batch_execute("rollback").await.unwrap();
    assert_eq!(client.simple_query("select 1").await.unwrap().len(), 3);
}

/// Sends extended-protocol messages and reads to ReadyForQuery: the DataRows, the bytes of
/// every message, and the SQLSTATEs of the errors.
async fn exchange(raw: &mut common::Raw, messages: &[Vec<u8>]) -> (usize, usize, Vec<String>) {
    raw.send(&messages.concat()).await;
    let (mut rows, mut bytes, mut errors) = (0, 0, Vec::new());
    for (tag, body) in raw.until_ready().await {
        bytes += body.len() + 5;
        match tag {
            b'D' => rows += 1,
            b'E' => {
                let code = body
                    .split(|b| *b == 0)
                    .find_map(|f| f.strip_prefix(b"C"))
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .unwrap_or_default();
                errors.push(code);
            }
            _ => {}
        }
    }
    (rows, bytes, errors)
}

/// An SQL cursor is also a protocol portal of the same name: an Execute of it (no Bind by
/// the client) counts against the session's caps like its FETCH does.
#[tokio::test]
async fn an_sql_cursor_run_by_a_protocol_execute_stops_at_the_cap() {
    let policy = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(policy.path(), COPY_POLICY).unwrap();
    let a = audited(policy.path()).await;
    let mut raw = common::Raw::login(a.proxy.addr).await;
    let declare = |sql: &str| common::frame(b'Q', format!("{sql}\0").as_bytes());
    let execute = |portal: &str| {
        let mut body = portal.as_bytes().to_vec();
        body.extend_from_slice(&[0, 0, 0, 0, 0]);
        common::frame(b'E', &body)
    };
    let sync = common::frame(b'S', b"");
    // Outside a transaction (WITH HOLD) and inside one.
    raw.send(&declare(
        "declare hh cursor with hold for select g from generate_series(1, 60000) g",
    ))
    .await;
    assert!(raw.until_ready().await.iter().all(|(t, _)| *t != b'E'));
    let (rows, _, errors) = exchange(&mut raw, &[execute("hh"), sync.clone()]).await;
    assert_eq!(
        (rows, errors.as_slice()),
        (10_000, &["57014".to_owned()][..])
    );
    exchange(&mut raw, &[declare("close hh")]).await;
    exchange(&mut raw, &[declare("begin")]).await;
    exchange(
        &mut raw,
        &[declare(
            "declare c2 cursor for select g from generate_series(1, 60000) g",
        )],
    )
    .await;
    let (rows, _, errors) = exchange(&mut raw, &[execute("c2"), sync.clone()]).await;
    assert_eq!(
        (rows, errors.as_slice()),
        (10_000, &["57014".to_owned()][..])
    );
    exchange(&mut raw, &[declare("rollback")]).await;
    // The connection goes on.
    let (rows, _, errors) = exchange(&mut raw, &[declare("select 1")]).await;
    assert_eq!((rows, errors.len()), (1, 0));
}

/// An error cannot carry a result past its cap: the server's text of a value cast in an
/// error is cut to 8 KiB (notices likewise, in the transform's unit tests), and the
/// connection beside it keeps working.
#[tokio::test]
async fn a_huge_error_message_is_cut_not_forwarded() {
    let policy = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(policy.path(), COPY_POLICY).unwrap();
    let a = audited(policy.path()).await;
    let mut raw = common::Raw::login(a.proxy.addr).await;
    let other = a.proxy.connect().await;
    let q = |sql: &str| common::frame(b'Q', format!("{sql}\0").as_bytes());
    let (rows, bytes, errors) =
        exchange(&mut raw, &[q("select (repeat('x', 30000000))::int")]).await;
    assert_eq!((rows, errors.as_slice()), (0, &["22P02".to_owned()][..]));
    assert!(
        bytes < 64 * 1024,
        "{bytes} bytes of error reached the client"
    );
    other.simple_query("select 1").await.unwrap();
    let (rows, _, _) = exchange(&mut raw, &[q("select 1")]).await;
    assert_eq!(rows, 1);
}
