//! Issue #17, item 7 on the MySQL listener: a column in which the masker finds a card number
//! (its table and column named by the column definition) is promoted for its target, so that
//! computing over it is refused like computing over `pan`; reading it whole stays allowed,
//! masked. Text results (COM_QUERY) and binary ones (COM_STMT_EXECUTE) promote alike.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Proxy;
use mysql_async::prelude::*;
use tollgate::audit::store::Location;
use tollgate::audit::writer::Recorder;
use tollgate::pipeline::Stages;

/// tollgate with a policy that allows everything (promotions are enforced under a policy), an
/// audit store, and MySQL target `shop17p` in front of MariaDB's `test` database.
async fn proxy() -> (Proxy, Recorder, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let (signer, key) = common::signing_key(dir.path());
    let recorder = Recorder::start(
        common::recorder_settings(Location::Sqlite(db.clone()), "promo"),
        signer,
    )
    .unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "default: allow\nrules:\n  - id: reads\n    match: { kinds: [read] }\n    action: allow\n",
    )
    .unwrap();
    let inspector = tollgate::conn::policy_files::PolicyInspector::load(
        vec![policy],
        tollgate::policy::classify::SqlDialect::Postgres,
    )
    .unwrap();
    let stages = Stages {
        record: Some(recorder.clone()),
        inspect: Arc::new(tollgate::policy::inspect::PolicyStage(Arc::new(inspector))),
        ..Stages::default()
    };
    let pw = dir.path().join("agent-password");
    let yaml = format!(
        "
audit:
  sqlite: {db}
  signing_key: {{ file: {key} }}
{targets}
  - name: shop17p
    protocol: mysql
    address: 127.0.0.1:3306
    database: test
    user: root
    client_auth: {{ method: password, user: agent, password: {{ file: {pw} }} }}
",
        targets = common::targets(dir.path()),
        pw = pw.display(),
        db = db.display(),
        key = key.display()
    );
    (Proxy::start_mysql(dir, &yaml, stages).await, recorder, db)
}

async fn agent(proxy: &Proxy) -> mysql_async::Conn {
    mysql_async::Conn::new(
        mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(proxy.mysql.unwrap().port())
            .user(Some("agent"))
            .pass(Some(common::AGENT_PASSWORD))
            .db_name(Some("shop17p"))
            .prefer_socket(false)
            .enable_cleartext_plugin(true),
    )
    .await
    .expect("agent through tollgate")
}

fn refused(e: mysql_async::Error, sql: &str) {
    match e {
        mysql_async::Error::Server(s) => {
            assert_eq!(s.code, 1227, "{sql}: {}", s.message);
            assert!(s.message.contains("card numbers"), "{sql}: {}", s.message);
        }
        other => panic!("{sql}: {other}"),
    }
}

#[tokio::test]
async fn a_mysql_column_found_to_hold_card_numbers_is_refused_to_computation() {
    let mut direct = common::mysql::direct().await;
    direct
        .query_drop(
            "drop table if exists memo17p;
             create table memo17p (id int, note varchar(80), memo varchar(80), other varchar(80));
             insert into memo17p values
               (1, 'paid with 4111 1111 1111 1111 today', 'card 5555555555554444', 'nothing here')",
        )
        .await
        .unwrap();
    let (proxy, recorder, db) = proxy().await;
    let mut c = agent(&proxy).await;
    // Before any card number was seen in them, computing over the columns is allowed.
    let before: Vec<String> = c
        .query("SELECT SUBSTR(note,1,8) FROM memo17p")
        .await
        .unwrap();
    assert_eq!(before, ["paid wit"]);
    c.query_drop("SELECT SUBSTR(other,1,3) FROM memo17p")
        .await
        .unwrap();
    // A masked read of `note` (text protocol) promotes it.
    let note: Vec<String> = c.query("SELECT note FROM memo17p").await.unwrap();
    assert_eq!(note, ["paid with 4111 11** **** 1111 today"]);
    for sql in [
        "SELECT SUBSTR(note,1,8) FROM memo17p",
        "SELECT SUBSTR(note, 11, 8) FROM memo17p UNION ALL SELECT SUBSTR(note, 19, 8) FROM memo17p",
        "SELECT id FROM memo17p WHERE note LIKE '%4111 1111%'",
    ] {
        refused(c.query_drop(sql).await.unwrap_err(), sql);
    }
    // Binary results (a prepared statement) promote `memo` the same way.
    let memo: Vec<String> = c
        .exec("SELECT memo FROM memo17p WHERE id = ?", (1,))
        .await
        .unwrap();
    assert_eq!(memo, ["card 555555******4444"]);
    refused(
        c.exec_drop("SELECT REVERSE(memo) FROM memo17p WHERE id = ?", (1,))
            .await
            .unwrap_err(),
        "REVERSE(memo)",
    );
    // Other columns stay computable; another connection of the target is refused too.
    c.query_drop("SELECT UPPER(other) FROM memo17p")
        .await
        .unwrap();
    let mut other = agent(&proxy).await;
    refused(
        other
            .query_drop("SELECT LEFT(note, 12) FROM memo17p")
            .await
            .unwrap_err(),
        "LEFT(note, 12)",
    );
    drop((c, other));
    tokio::time::sleep(Duration::from_millis(200)).await;
    recorder.flush().await.unwrap();
    let store = common::audit_store_bytes(&db).await;
    let text = String::from_utf8_lossy(&store);
    for column in ["test.memo17p.note", "test.memo17p.memo"] {
        assert!(
            text.contains("column_promoted") && text.contains(column),
            "the promotion of {column} is recorded"
        );
    }
    // The results' records count their rows and the rows with a masked value, as on
    // PostgreSQL (what the PCI DSS report's 3.4.1 section adds up).
    assert!(
        text.contains("\"masked\":1,") && text.contains("\"rows\":1}"),
        "server_frames records carry rows and masked"
    );
    direct.query_drop("drop table memo17p").await.unwrap();
}
