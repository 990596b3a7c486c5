//! Differential test of the MySQL classifier against MariaDB (issue #16).
//!
//! A corpus of statements (comments of every style, quoting, multi-statements, variables,
//! prepared forms, every built-in function the classifier calls a read) goes through
//! tollgate's classifier and, when the classifier calls it harmless (reads, session and
//! transaction statements, settings on the example policy's allowlist), straight to the server
//! inside a transaction that is rolled back. The server's state is compared before and after:
//! the tables' contents, the schema's objects, a sequence, every global variable and every
//! session variable off the allowlist. A statement classified harmless that changed any of it
//! is a fault of the classifier. Statements classified otherwise are not run (DDL commits on
//! MariaDB); they only have to be classified or refused.

mod common;

use std::collections::BTreeMap;

use mysql_async::prelude::*;
use mysql_async::{Conn, OptsBuilder};
use tollgate::policy::classify::{Kind, SqlDialect, classify};
use tollgate::policy::rules::DEFAULT_MYSQL_SETTINGS;

async fn connect(db: &str) -> Conn {
    Conn::new(
        OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(3306)
            .user(Some("root"))
            .db_name(Some(db)),
    )
    .await
    .expect("MariaDB on 127.0.0.1:3306")
}

/// Variables that change by themselves or with any statement.
const VOLATILE: &[&str] = &[
    "timestamp",
    "last_insert_id",
    "insert_id",
    "rand_seed1",
    "rand_seed2",
    "warning_count",
    "error_count",
    "identity",
    "in_transaction",
    "last_gtid",
    "gtid_binlog_pos",
    "gtid_current_pos",
    "gtid_binlog_state",
    "gtid_slave_pos",
    "gtid_seq_no",
    "sql_log_bin",
];

async fn variables(c: &mut Conn, scope: &str) -> BTreeMap<String, String> {
    let rows: Vec<(String, Option<String>)> = c
        .query(format!(
            "SELECT LOWER(VARIABLE_NAME), VARIABLE_VALUE FROM information_schema.{scope}_VARIABLES"
        ))
        .await
        .unwrap();
    rows.into_iter()
        .filter(|(k, _)| !VOLATILE.contains(&k.as_str()))
        .filter(|(k, _)| scope == "GLOBAL" || !DEFAULT_MYSQL_SETTINGS.contains(&k.as_str()))
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect()
}

/// What a statement could change, read on the server.
#[derive(Debug, PartialEq)]
struct State {
    tables: Vec<(String, Option<i64>)>,
    objects: Vec<(String, String)>,
    sequence: Option<i64>,
    global: BTreeMap<String, String>,
    session: BTreeMap<String, String>,
}

async fn state(c: &mut Conn, observer: &mut Conn, db: &str) -> State {
    let tables: Vec<(String, Option<i64>)> = observer
        .query(format!("CHECKSUM TABLE {db}.t, {db}.u EXTENDED"))
        .await
        .unwrap();
    let objects: Vec<(String, String)> = observer
        .query(format!(
            "SELECT 'table', table_name FROM information_schema.tables WHERE table_schema = '{db}'
             UNION ALL SELECT 'routine', routine_name FROM information_schema.routines WHERE routine_schema = '{db}'
             UNION ALL SELECT 'trigger', trigger_name FROM information_schema.triggers WHERE trigger_schema = '{db}'
             UNION ALL SELECT 'event', event_name FROM information_schema.events WHERE event_schema = '{db}'
             ORDER BY 1, 2"
        ))
        .await
        .unwrap();
    let sequence: Option<i64> = observer
        .query_first(format!("SELECT next_not_cached_value FROM {db}.s"))
        .await
        .unwrap();
    State {
        tables,
        objects,
        sequence,
        global: variables(observer, "GLOBAL").await,
        session: variables(c, "SESSION").await,
    }
}

/// The statements of the corpus.
fn corpus() -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let reads = [
        "SELECT 1",
        "SELECT id, a FROM t WHERE id = 1",
        "SELECT * FROM t",
        "SELECT COUNT(*) FROM t JOIN u ON u.id = t.id",
        "SELECT a FROM t ORDER BY a LIMIT 2",
        "SELECT a FROM t LIMIT 1, 1",
        "SELECT (SELECT MAX(id) FROM u) AS m",
        "SELECT * FROM (SELECT id FROM t) d",
        "WITH x AS (SELECT id FROM t) SELECT * FROM x",
        "SELECT id FROM t UNION SELECT id FROM u",
        "SELECT \"double\", 'single', `a` FROM t",
        "SELECT 'it''s', 'back\\\\slash', \"dq\"\"dq\"",
        "SELECT _utf8mb4'x', X'41', B'1', N'n', 0x41",
        "SELECT 1 FROM dual",
        "SELECT @@version, @@session.autocommit, @@global.max_connections",
        "SHOW TABLES",
        "SHOW VARIABLES LIKE 'auto%'",
        "SHOW COLUMNS FROM t",
        "EXPLAIN SELECT * FROM t",
        "SELECT @v",
        "SELECT a, note FROM t WHERE note LIKE '%x%'",
        "SELECT id, a + 1, -a, a--1 FROM t",
        "SELECT JSON_OBJECT('a', a) FROM t",
        "SELECT GROUP_CONCAT(note) FROM t",
        "SELECT * FROM t WHERE id IN (SELECT id FROM u)",
        "SELECT CAST(a AS CHAR), CONVERT(a, CHAR), CONVERT(note USING utf8mb4) FROM t",
        "WITH x(p, q, r) AS (SELECT * FROM t) SELECT q FROM x",
        "SELECT * FROM t WHERE EXISTS (SELECT * FROM u WHERE u.id = t.id)",
        "SELECT LAST_INSERT_ID()",
    ];
    let sessions = [
        "SET @v = 1",
        "SET @a = 1, @b = 'x'",
        "SET autocommit = 1",
        "SET time_zone = '+01:00'",
        "SET NAMES utf8mb4",
        "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
        "SET wait_timeout = 600",
        "SET @@session.lock_wait_timeout = 30",
        "SET sql_select_limit = 1000",
        "PREPARE ps FROM 'SELECT a FROM t WHERE id = ?'",
        "EXECUTE IMMEDIATE 'SELECT 1'",
        "EXECUTE IMMEDIATE 'SELECT ?' USING 5",
        "PREPARE ps2 FROM \"SELECT 'x'\"",
        "DEALLOCATE PREPARE ps",
        "USE mdiff",
        "SAVEPOINT sp",
        "SELECT a INTO @into FROM t WHERE id = 1",
        "SELECT @c := COUNT(*) FROM t",
    ];
    // Comments of every style around and inside each read.
    for r in reads.iter().chain(sessions.iter()) {
        out.push((*r).to_owned());
        out.push(format!("/* lead */ {r}"));
        out.push(format!("{r} -- trailing"));
        out.push(format!("{r} # hash"));
        out.push(format!("{r}; -- after"));
        out.push(format!("# first line\n{r}"));
        out.push(r.replacen(' ', " /**/ ", 1));
        out.push(r.replacen(' ', "\t\n", 1));
    }
    // Multi-statements.
    out.push("SELECT 1; SELECT 2".into());
    out.push("SET @x = 1; SELECT @x; SET @y = 2".into());
    out.push("SELECT ';'; SELECT '--'; SELECT '#'".into());
    // What must not pass as harmless (classified otherwise or refused).
    for s in [
        "UPDATE t SET a = a + 1 WHERE id = 1",
        "DELETE FROM t WHERE id = 1",
        "INSERT INTO t VALUES (9, 9, 'n')",
        "REPLACE INTO t VALUES (1, 1, 'r')",
        "INSERT INTO u SELECT * FROM t",
        "DROP TABLE u",
        "CREATE TABLE z (a int)",
        "ALTER TABLE t ADD COLUMN z int",
        "TRUNCATE t",
        "CREATE VIEW vz AS SELECT 1",
        "CREATE PROCEDURE pz() SELECT 1",
        "SET GLOBAL wait_timeout = 3",
        "SET @@global.wait_timeout = 3",
        "SET sql_log_off = 1",
        "SET foreign_key_checks = 0",
        "SET @v = (SELECT MAX(a) FROM t)",
        "SET GLOBAL TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        "SELECT NEXTVAL(s)",
        "SELECT SETVAL(s, 100)",
        "SELECT LOAD_FILE('/etc/passwd')",
        "SELECT SLEEP(0)",
        "SELECT BENCHMARK(1, 1)",
        "SELECT GET_LOCK('l', 0)",
        "SELECT RELEASE_ALL_LOCKS()",
        "SELECT * FROM t FOR UPDATE",
        "LOCK TABLES t READ",
        "DO 1",
        "HANDLER t OPEN",
        "SELECT * FROM t INTO OUTFILE '/tmp/tg_mdiff'",
        "EXECUTE IMMEDIATE 'DELETE FROM t WHERE id = 1'",
        "PREPARE pd FROM 'DELETE FROM t WHERE id = 1'",
        "SET STATEMENT foreign_key_checks = 0 FOR DELETE FROM t WHERE id = 1",
        "SELECT 1 --\u{a0}x\n",
        "SELECT 1 /*! , 2 */",
        "SELECT 1 /*M! , 2 */",
        "SELECT\u{2003}1",
        "SELECT \\N",
        // Found by the adversarial review.
        "SELECT @@`version` `#`, GET_LOCK('l', 0)\n",
        "SET @x = (SELECT @@`version` `#`), @@global.wait_timeout = 3, @y = (SELECT 1\n)",
        "SELECT LAST_INSERT_ID(5)",
        "SELECT UUID_SHORT()",
        "SELECT a FROM t WHERE MATCH (note) AGAINST ('x')",
        // Found by the second review.
        "SELECT t.id FROM t NATURAL JOIN u",
        "SELECT t.id FROM t JOIN u USING (id)",
        "SELECT id, note FROM t ORDER BY 2",
        "RESET MASTER",
        "SHOW ENGINE INNODB STATUS",
        "SHOW TABLES IN mysql",
    ] {
        out.push(s.to_owned());
    }
    // Every built-in the classifier calls a read, with a few argument shapes: the server
    // rejects the wrong arities, the rest run.
    for f in tollgate::policy::mysql::functions::reads() {
        for args in ["", "1", "'a', 1", "'a', 1, 2"] {
            out.push(format!("SELECT {f}({args})"));
        }
        out.push(format!("SELECT {f}(a) FROM t"));
    }
    out
}

fn harmless(
    kinds: &std::collections::BTreeSet<Kind>,
    settings: &std::collections::BTreeSet<String>,
) -> bool {
    kinds
        .iter()
        .all(|k| matches!(k, Kind::Read | Kind::Session | Kind::Transaction))
        && settings
            .iter()
            .all(|s| DEFAULT_MYSQL_SETTINGS.contains(&s.as_str()))
}

/// Rows this session wrote, updated or deleted so far (MariaDB counts internal temporary
/// tables apart, as `Handler_tmp_*`).
async fn handler_writes(c: &mut Conn) -> u64 {
    let n: Option<f64> = c
        .query_first(
            "SELECT SUM(VARIABLE_VALUE) FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME IN ('HANDLER_WRITE', 'HANDLER_UPDATE', 'HANDLER_DELETE')",
        )
        .await
        .unwrap();
    n.unwrap_or(0.0) as u64
}

/// Whether another session finds the tables' rows locked.
async fn rows_locked(observer: &mut Conn) -> bool {
    let mut locked = false;
    for table in ["t", "u"] {
        observer.query_drop("BEGIN").await.unwrap();
        locked |= observer
            .query_drop(format!("SELECT * FROM {table} FOR UPDATE NOWAIT"))
            .await
            .is_err();
        observer.query_drop("ROLLBACK").await.unwrap();
    }
    locked
}

/// Runs `sql` in a transaction that is rolled back and says what it changed or locked (empty:
/// nothing), and whether the server rejected the statement. `known`: the state before, when
/// the caller has it (the state after the previous statement that changed nothing).
async fn effect(
    c: &mut Conn,
    observer: &mut Conn,
    db: &str,
    sql: &str,
    known: &mut Option<State>,
) -> (Vec<String>, bool) {
    c.reset().await.unwrap();
    let before = match known.take() {
        Some(state) => state,
        None => state(c, observer, db).await,
    };
    let writes = handler_writes(c).await;
    c.query_drop("BEGIN").await.unwrap();
    let rejected = c.query_drop(sql).await.is_err();
    // What the transaction wrote or locked, before it is rolled back.
    let written = handler_writes(c).await - writes;
    let locked = rows_locked(observer).await;
    let _ = c.query_drop("ROLLBACK").await;
    let after = state(c, observer, db).await;
    let mut changed = Vec::new();
    if written > 0 {
        changed.push(format!("{written} rows written"));
    }
    if locked {
        changed.push("rows locked".into());
    }
    let diff = |a: &BTreeMap<String, String>, b: &BTreeMap<String, String>| {
        b.iter()
            .filter(|(k, v)| a.get(*k) != Some(*v))
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
    };
    if before.tables != after.tables {
        changed.push("table contents".into());
    }
    if before.objects != after.objects {
        changed.push(format!("schema objects {:?}", after.objects));
    }
    if before.sequence != after.sequence {
        changed.push("the sequence".into());
    }
    let global = diff(&before.global, &after.global);
    if !global.is_empty() {
        changed.push(format!("global variables {global:?}"));
    }
    let session = diff(&before.session, &after.session);
    if !session.is_empty() {
        changed.push(format!("session variables {session:?}"));
    }
    if changed.is_empty() {
        *known = Some(after);
    }
    (changed, rejected)
}

#[tokio::test]
async fn statements_classified_harmless_change_nothing_on_mariadb() {
    let db = "mdiff";
    let mut admin = connect("test").await;
    admin
        .query_drop(format!(
            "DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db};
             CREATE TABLE {db}.t (id int primary key, a int, note varchar(40)) ENGINE=InnoDB;
             CREATE TABLE {db}.u (id int primary key, b int) ENGINE=InnoDB;
             INSERT INTO {db}.t VALUES (1, 10, 'one x'), (2, 20, 'two');
             INSERT INTO {db}.u VALUES (1, 5);
             CREATE SEQUENCE {db}.s;"
        ))
        .await
        .unwrap();
    let mut observer = connect(db).await;
    let mut c = connect(db).await;
    // The harness sees each kind of change it looks for.
    for control in [
        "UPDATE t SET a = a + 1 WHERE id = 1",
        "SELECT * FROM t WHERE id = 1 FOR UPDATE",
        "SELECT NEXTVAL(s)",
        "SET foreign_key_checks = 0",
    ] {
        let (changed, _) = effect(&mut c, &mut observer, db, control, &mut None).await;
        assert!(
            !changed.is_empty(),
            "the harness missed what {control:?} did"
        );
    }
    let corpus = corpus();
    let (mut ran, mut refused, mut other, mut server_errors) = (0, 0, 0, 0);
    let mut faults = Vec::new();
    let mut known = None;
    for sql in &corpus {
        let list = match classify(sql, SqlDialect::MySql) {
            Ok(list) => list,
            Err(_) => {
                refused += 1;
                continue;
            }
        };
        if !list.iter().all(|c| harmless(&c.kinds, &c.settings)) {
            other += 1;
            continue;
        }
        let (changed, rejected) = effect(&mut c, &mut observer, db, sql, &mut known).await;
        ran += 1;
        server_errors += usize::from(rejected);
        if !changed.is_empty() {
            faults.push(format!(
                "{sql:?} classified {:?} changed {changed:?}",
                list.iter().map(|c| &c.kinds).collect::<Vec<_>>(),
            ));
        }
    }
    println!(
        "{} statements: {ran} classified harmless and run ({server_errors} rejected by the server), {other} classified otherwise, {refused} refused",
        corpus.len()
    );
    assert!(
        corpus.len() >= 300,
        "the corpus is a few hundred statements"
    );
    assert!(ran >= 200, "most of the corpus runs");
    assert!(
        other >= 20 && refused >= 10,
        "the corpus holds what must not pass"
    );
    assert!(faults.is_empty(), "{}", faults.join("\n"));
    admin
        .query_drop(format!("DROP DATABASE IF EXISTS {db}"))
        .await
        .unwrap();
}
