//! The upstream server's clock sampled at every session start (PCI DSS 10.6): through tollgate
//! to the machine's PostgreSQL and MariaDB, `session_start`'s detail carries `clock` with the
//! skew and the round trip, and the sample leaves the upstream session as the login left it.

mod common;

use std::path::Path;

use common::Proxy;
use mysql_async::prelude::*;
use tokio_postgres::SimpleQueryMessage;
use tollgate::audit::store::Location;
use tollgate::audit::writer::Recorder;
use tollgate::audit::{Store, kind};
use tollgate::pipeline::Stages;

/// The `clock` of every `session_start` record in the SQLite store `db`.
async fn recorded_clocks(recorder: &Recorder, db: &Path) -> Vec<serde_json::Value> {
    recorder.flush().await.unwrap();
    let mut store = Store::open(&Location::Sqlite(db.to_owned()), false)
        .await
        .unwrap();
    store
        .of_types(&[kind::SESSION_START], "", "9999")
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            body["detail"]["clock"].clone()
        })
        .collect()
}

/// A measured sample: both fields, in milliseconds to three decimals, within bounds.
fn assert_plausible(clock: &serde_json::Value) {
    let fields = clock.as_object().expect("clock is an object");
    let mut keys: Vec<&str> = fields.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["rtt_ms", "skew_ms"], "{clock}");
    let skew = clock["skew_ms"].as_f64().expect("skew_ms is a number");
    let rtt = clock["rtt_ms"].as_f64().expect("rtt_ms is a number");
    assert!(skew.abs() < 1000.0, "skew {skew} ms: {clock}");
    assert!((0.0..5000.0).contains(&rtt), "round trip {rtt} ms: {clock}");
    for v in [skew, rtt] {
        assert!(
            (v * 1000.0 - (v * 1000.0).round()).abs() < 1e-6,
            "{v} has more than 3 decimals"
        );
    }
}

#[tokio::test]
async fn a_postgres_session_start_records_the_servers_clock() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let (signer, key_file) = common::signing_key(dir.path());
    let recorder = Recorder::start(
        common::recorder_settings(Location::Sqlite(db.clone()), "clock"),
        signer,
    )
    .unwrap();
    let stages = Stages {
        record: Some(recorder.clone()),
        ..Stages::default()
    };
    let audit = format!(
        "audit:\n  sqlite: {}\n  signing_key: {{ file: {} }}\n",
        db.display(),
        key_file.display()
    );
    let proxy = Proxy::start_with(&audit, "", stages).await;
    let client = proxy.connect().await;

    // The client's first statement finds the session as a fresh login leaves it: no
    // transaction open (now() is this statement's own), no transaction id, nothing prepared.
    let rows = client
        .simple_query(
            "SELECT txid_current_if_assigned() IS NULL, now() = statement_timestamp(), \
             (SELECT count(*) FROM pg_prepared_statements)",
        )
        .await
        .unwrap();
    let row = rows
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .expect("a row");
    assert_eq!(
        (row.get(0), row.get(1), row.get(2)),
        (Some("t"), Some("t"), Some("0"))
    );
    drop(client);

    let clocks = recorded_clocks(&recorder, &db).await;
    assert_eq!(clocks.len(), 1, "{clocks:?}");
    assert_plausible(&clocks[0]);
}

#[tokio::test]
async fn a_mysql_session_start_records_the_servers_clock() {
    let s = common::mysql::setup("clock").await;
    let mut c = s.agent("agent-1", &["ai-agents"]).await;

    // No transaction open on the session the client gets.
    let open: Option<(i64,)> = c.query_first("SELECT @@in_transaction").await.unwrap();
    assert_eq!(open, Some((0,)));
    c.disconnect().await.unwrap();

    let clocks = recorded_clocks(&s.recorder, &s.db).await;
    assert_eq!(clocks.len(), 1, "{clocks:?}");
    assert_plausible(&clocks[0]);
}
