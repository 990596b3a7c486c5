//! Issue #16: the policy judges what MariaDB will execute. Each attack of the issue (and
//! variants of its kind) runs through tollgate with the example agent policy against the
//! machine's MariaDB, and its effect is checked on the server directly: the table still there,
//! the global setting unchanged, the variable never assigned.

mod common;

use common::mysql::{PANS, Setup, code, direct, message, setup_policy};
use mysql_async::Conn;
use mysql_async::prelude::*;

const EXAMPLE: &str = "config/policies/agents.yaml";

async fn example(name: &str) -> Setup {
    setup_policy(name, "", Some(std::path::Path::new(EXAMPLE)), false).await
}

/// A fresh table `name` in the test database.
async fn victim(name: &str) {
    let mut d = direct().await;
    d.query_drop(format!(
        "drop table if exists {name}; create table {name} (id int primary key, note varchar(40)); insert into {name} values (1, 'x')"
    ))
    .await
    .unwrap();
}

async fn exists(name: &str) -> bool {
    let mut d = direct().await;
    let n: Option<u64> = d
        .query_first(format!(
            "select count(*) from information_schema.tables where table_schema = 'test' and table_name = '{name}'"
        ))
        .await
        .unwrap();
    n == Some(1)
}

/// Runs `sql` through tollgate and expects a refusal; the connection stays usable.
async fn refused(c: &mut Conn, sql: &str) -> String {
    let e = c
        .query_drop(sql)
        .await
        .expect_err(&format!("{sql:?} should be refused"));
    assert!(
        matches!(code(&e), 1227 | 1105 | 1044 | 1064),
        "{sql:?}: {e}"
    );
    let one: u32 = c.query_first("select 1").await.unwrap().unwrap();
    assert_eq!(one, 1, "usable after {sql:?}");
    message(&e)
}

fn tollgate_refused(m: &str, sql: &str) {
    assert!(
        m.starts_with("tollgate"),
        "{sql:?}: refused by the server, not tollgate: {m}"
    );
}

#[tokio::test]
async fn sql_carried_in_strings_is_judged_as_what_it_carries() {
    let s = example("carried").await;
    let victim_table = format!("v_carried_{}", std::process::id());
    victim(&victim_table).await;
    let mut c = s.agent("agent-carried", &["ai-agents"]).await;
    for sql in [
        // The pair: a PostgreSQL form the server rejects, then EXECUTE IMMEDIATE.
        "PREPARE immediate AS SELECT 1".to_string(),
        format!("EXECUTE IMMEDIATE 'DROP TABLE {victim_table}'"),
        format!("execute immediate \"drop table {victim_table}\""),
        format!("EXECUTE IMMEDIATE CONCAT('DROP TABLE ', '{victim_table}')"),
        format!("EXECUTE IMMEDIATE 'DROP ' 'TABLE {victim_table}'"),
        format!("SET @q = 'DROP TABLE {victim_table}'; PREPARE s FROM @q; EXECUTE s"),
        format!("PREPARE s FROM 'DROP TABLE {victim_table}'"),
        format!("PREPARE s FROM 'DROP TABLE {victim_table}'; EXECUTE s"),
        format!("EXECUTE IMMEDIATE 'SELECT 1; DROP TABLE {victim_table}'"),
        format!("EXECUTE IMMEDIATE 'SELECT 1 --\u{a0}x\n; DROP TABLE {victim_table}'"),
        format!("EXECUTE IMMEDIATE 'EXECUTE IMMEDIATE ''DROP TABLE {victim_table}'''"),
    ] {
        let m = refused(&mut c, &sql).await;
        tollgate_refused(&m, &sql);
        assert!(exists(&victim_table).await, "{sql:?} dropped the table");
    }
    // A string-carried read runs, and answers as the statement it carries.
    let one: u32 = c
        .query_first("EXECUTE IMMEDIATE 'SELECT 1'")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(one, 1);
}

#[tokio::test]
async fn prepared_names_follow_the_servers_answers() {
    let s = example("names").await;
    let mut c = s.agent("agent-names", &["ai-agents"]).await;
    c.query_drop("PREPARE s FROM 'SELECT 7'").await.unwrap();
    let seven: u32 = c.query_first("EXECUTE s").await.unwrap().unwrap();
    assert_eq!(seven, 7);
    // The server refuses this PREPARE, and drops the old statement on the way: the name
    // stands for nothing, on the server and in tollgate.
    let e = c
        .query_drop("PREPARE s FROM 'SELECT * FROM no_such_table_tg'")
        .await
        .unwrap_err();
    assert!(!message(&e).starts_with("tollgate"), "{e}");
    let m = refused(&mut c, "EXECUTE s").await;
    assert!(m.contains("did not see prepared"), "{m}");
    // Deallocated on the server: forgotten.
    c.query_drop("PREPARE t FROM 'SELECT 8'").await.unwrap();
    c.query_drop("DEALLOCATE PREPARE t").await.unwrap();
    let m = refused(&mut c, "EXECUTE t").await;
    assert!(m.contains("did not see prepared"), "{m}");
    // A failed DEALLOCATE forgets nothing.
    c.query_drop("PREPARE u FROM 'SELECT 9'").await.unwrap();
    c.query_drop("DEALLOCATE PREPARE nothing_here")
        .await
        .unwrap_err();
    let nine: u32 = c.query_first("EXECUTE u").await.unwrap().unwrap();
    assert_eq!(nine, 9);
    // A refused re-PREPARE never reaches the server: the old meaning stays, on both sides.
    refused(&mut c, "PREPARE u FROM 'DELETE FROM t WHERE id = 1'").await;
    let nine: u32 = c.query_first("EXECUTE u").await.unwrap().unwrap();
    assert_eq!(nine, 9);
    // Definitions travel alone, so that the answer is theirs.
    let m = refused(&mut c, "SELECT 1; PREPARE w FROM 'SELECT 2'").await;
    assert!(m.contains("of their own"), "{m}");
    // PostgreSQL's forms are not MariaDB's.
    for sql in ["PREPARE p AS SELECT 1", "EXECUTE u(1)", "DEALLOCATE u"] {
        refused(&mut c, sql).await;
    }
}

#[tokio::test]
async fn text_the_lexers_could_read_differently_is_refused() {
    let s = example("lexer").await;
    let victim_table = format!("v_lexer_{}", std::process::id());
    victim(&victim_table).await;
    let mut c = s.agent("agent-lexer", &["ai-agents"]).await;
    // Unicode spaces and format characters after `--`, in the middle of a statement, or
    // before a keyword; each would hide the DROP from a generic tokenizer, or a column.
    for space in [
        '\u{a0}', '\u{2000}', '\u{2003}', '\u{200a}', '\u{2028}', '\u{3000}', '\u{feff}',
        '\u{200b}', '\u{85}', '\u{1680}', '\u{180e}',
    ] {
        for sql in [
            format!("SELECT 1 --{space} FROM (SELECT 1 AS `x`) t; DROP TABLE {victim_table}; # "),
            format!("SELECT 1;{space}DROP TABLE {victim_table}"),
            format!("SELECT note{space}FROM {victim_table}"),
        ] {
            let m = refused(&mut c, &sql).await;
            tollgate_refused(&m, &sql);
            assert!(exists(&victim_table).await, "{sql:?} dropped the table");
        }
    }
    for sql in [
        format!("SELECT 1 --x\n; DROP TABLE {victim_table}"),
        format!("SELECT 1 /*! ; DROP TABLE {victim_table} */"),
        format!("SELECT 1 /*!50700 ; DROP TABLE {victim_table} */"),
        format!("SELECT 1 /*M!100100 ; DROP TABLE {victim_table} */"),
        format!("SELECT 1 /* /*! ; DROP TABLE {victim_table} */ */"),
        "SELECT \\N".to_string(),
        "SELECT 1\u{b}".to_string(),
    ] {
        let m = refused(&mut c, &sql).await;
        tollgate_refused(&m, &sql);
        assert!(exists(&victim_table).await, "{sql:?} dropped the table");
    }
    // Inside strings and quoted identifiers the same characters are data.
    let v: String = c
        .query_first("SELECT '--\u{a0}x; /*! */ \\\\N'")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v, "--\u{a0}x; /*! */ \\N");
    // A comment that both read the same way is fine.
    let one: u32 = c
        .query_first("SELECT 1 -- a comment\n# another\n/* a third */")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(one, 1);
}

/// The card number in two halves through a comment MariaDB does not see as one.
#[tokio::test]
async fn card_columns_cannot_hide_behind_the_lexer() {
    let s = example("halves").await;
    let mut c = s.agent("agent-halves", &["ai-agents"]).await;
    let t = &s.table;
    for sql in [
        format!(
            "SELECT 1 --\u{a0} FROM (SELECT 1 AS `x`) q;\nSELECT SUBSTR(pan, 1, 8), SUBSTR(pan, 9, 8) FROM {t} WHERE id = 1; # "
        ),
        format!("SELECT SUBSTR(pan\u{a0}, 1, 8) FROM {t} WHERE id = 1"),
    ] {
        let m = refused(&mut c, &sql).await;
        tollgate_refused(&m, &sql);
    }
}

#[tokio::test]
async fn server_wide_and_logging_settings_are_not_session_statements() {
    let s = example("settings").await;
    let mut c = s.agent("agent-settings", &["ai-agents"]).await;
    let mut d = direct().await;
    let global = |name: &'static str| format!("select @@global.{name}");
    let before_wait: u64 = d
        .query_first(global("wait_timeout"))
        .await
        .unwrap()
        .unwrap();
    let before_iso: String = d
        .query_first(global("tx_isolation"))
        .await
        .unwrap()
        .unwrap();
    for sql in [
        "SET GLOBAL wait_timeout = 28801",
        "set global wait_timeout = 28802",
        "SET @@global.wait_timeout = 28803",
        "SET @@GLOBAL.wait_timeout = 28804",
        "SET wait_timeout = 100, GLOBAL wait_timeout = 28805",
        "SET @x = 1, @@global.wait_timeout = 28806",
        "SET GLOBAL TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        "SET PERSIST wait_timeout = 28807",
        "SET PERSIST_ONLY wait_timeout = 28808",
    ] {
        let m = refused(&mut c, sql).await;
        tollgate_refused(&m, sql);
    }
    let after_wait: u64 = d
        .query_first(global("wait_timeout"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after_wait, before_wait, "the global wait_timeout changed");
    let after_iso: String = d
        .query_first(global("tx_isolation"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after_iso, before_iso);
    // Session settings outside the allowlist: logging, replication, checks, values.
    for sql in [
        "SET sql_log_off = 1",
        "SET SESSION sql_log_off = 1",
        "SET LOCAL sql_log_off = 1",
        "SET @@session.sql_log_off = 1",
        "SET @@sql_log_off = 1",
        "SET @@SQL_LOG_OFF = ON",
        "SET autocommit = 1, sql_log_off = 1",
        "SET sql_log_bin = 0",
        "SET foreign_key_checks = 0",
        "SET insert_id = 5",
        "SET timestamp = 1",
        "SET sql_mode = 'ANSI_QUOTES'",
    ] {
        let m = refused(&mut c, sql).await;
        tollgate_refused(&m, sql);
    }
    let off: u64 = c
        .query_first("SELECT @@session.sql_log_off")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(off, 0, "sql_log_off changed");
    let fk: u64 = c
        .query_first("SELECT @@foreign_key_checks")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fk, 1);
    // What client libraries set still works.
    for sql in [
        "SET autocommit = 0",
        "SET autocommit = 1",
        "SET NAMES utf8mb4",
        "SET time_zone = '+00:00'",
        "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
        "SET @x = 1, @y = 'two'",
    ] {
        c.query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

#[tokio::test]
async fn functions_are_classified_by_what_they_do() {
    let s = example("functions").await;
    let mut c = s.agent("agent-functions", &["ai-agents"]).await;
    let mut d = direct().await;
    let f = format!("tg_udf_{}", std::process::id());
    d.query_drop(format!(
        "drop function if exists {f}; create function {f}() returns int deterministic return 1"
    ))
    .await
    .unwrap();
    for sql in [
        "SELECT LOAD_FILE('/etc/hostname')",
        "select load_file('/etc/passwd')",
        "SELECT `load_file`('/etc/passwd')",
        "SELECT CONCAT(LOAD_FILE('/etc/passwd'))",
        "SELECT 1 FROM dual WHERE LOAD_FILE('/etc/passwd') IS NOT NULL",
    ] {
        let m = refused(&mut c, sql).await;
        assert!(
            m.contains("no-dangerous-functions") || m.contains("could not be analysed"),
            "{sql}: {m}"
        );
    }
    // Waits, load, locks, user-defined functions: not plain reads (held for a DBA).
    for sql in [
        "SELECT SLEEP(0)".to_string(),
        "SELECT BENCHMARK(10, MD5('x'))".to_string(),
        "SELECT GET_LOCK('tg', 0)".to_string(),
        format!("SELECT {f}()"),
        format!("SELECT test.{f}()"),
        "SELECT NEXTVAL(s)".to_string(),
    ] {
        let m = refused(&mut c, &sql).await;
        assert!(
            m.contains("agents-calls-and-locks-need-approval"),
            "{sql}: {m}"
        );
    }
    // Built-ins that only read still run.
    let v: String = c
        .query_first(
            "SELECT CONCAT(UPPER('a'), SUBSTR('xyz', 2), DATE_FORMAT(NOW(), '%Y') > '2000')",
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v, "Ayz1");
}

#[tokio::test]
async fn card_columns_through_variables_and_subqueries() {
    let s = example("vars").await;
    let mut c = s.agent("agent-vars", &["ai-agents"]).await;
    let t = &s.table;
    for sql in [
        format!("SET @x = (SELECT pan FROM {t} WHERE id = 1)"),
        format!("SELECT pan INTO @x FROM {t} WHERE id = 1"),
        format!("SELECT @x := pan FROM {t} WHERE id = 1"),
        format!("SELECT (SELECT pan FROM {t} WHERE id = 1) AS p"),
        format!("SELECT p FROM (SELECT pan AS p FROM {t}) q WHERE 1"),
        format!("WITH q AS (SELECT pan FROM {t}) SELECT * FROM q WHERE 1"),
        format!("SET @x = 1, @y = (SELECT PAN FROM {t} LIMIT 1)"),
    ] {
        let m = refused(&mut c, &sql).await;
        assert!(m.contains("no-computing-on-card-numbers"), "{sql}: {m}");
    }
    // The variable never held the number: its halves are NULL.
    let halves: (Option<String>, Option<String>) = c
        .query_first("SELECT SUBSTR(@x, 1, 8), SUBSTR(@x, 9, 8)")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(halves, (None, None));
    // Read bare, the column comes back masked.
    let pan: String = c
        .query_first(format!("SELECT pan FROM {t} WHERE id = 1"))
        .await
        .unwrap()
        .unwrap();
    assert!(!PANS.contains(&pan.as_str()), "{pan}");
}

#[tokio::test]
async fn function_rules_match_every_spelling() {
    let rules = tollgate::policy::RuleSet::parse(&[(
        "p.yaml".into(),
        "default: allow\nrules:\n  - id: no-substr\n    match: { functions: [substr] }\n    action: deny\n  - id: no-trim\n    match: { functions: [TRIM] }\n    action: deny\n"
            .into(),
    )])
    .unwrap();
    let policy = tollgate::policy::Policy::new(rules);
    let who = tollgate::auth::Identity {
        subject: "agent".into(),
        groups: vec!["ai-agents".into()],
        client_id: None,
        issuer: "test".into(),
        expires_at: None,
        actor: None,
    };
    use tollgate::policy::classify::SqlDialect::MySql;
    for sql in [
        "SELECT SUBSTR(note, 1, 8) FROM t",
        "select substr(note, 1, 8) from t",
        "SELECT SUBSTRING(note, 1, 8) FROM t",
        "SELECT SUBSTRING(note FROM 1 FOR 8) FROM t",
        "SELECT MID(note, 1, 8) FROM t",
        "SELECT Substr(note, 1, 8) FROM t",
    ] {
        let d = policy.decide(&who, "test", sql, MySql).decision;
        assert_eq!(d.rule.as_deref(), Some("no-substr"), "{sql}");
    }
    for sql in [
        "SELECT TRIM(note) FROM t",
        "SELECT trim(LEADING 'x' FROM note) FROM t",
    ] {
        let d = policy.decide(&who, "test", sql, MySql).decision;
        assert_eq!(d.rule.as_deref(), Some("no-trim"), "{sql}");
    }
}

/// Found by the adversarial review of this fix (a fresh session attacking the running
/// daemon): a quote the parser glued into a variable name (`@@` then a backtick) hid the rest of
/// the line behind a `#` only the parser read as a comment; `*` handed card columns on under
/// other names (a CTE's column list, a UNION branch, a row comparison); the `*` target reached
/// the server's own schemas by USE.
#[tokio::test]
async fn adversarial_review_findings() {
    let s = setup_policy(
        "review",
        "  - name: '*'\n    protocol: mysql\n    address: 127.0.0.1:3306\n    user: root\n",
        Some(std::path::Path::new(EXAMPLE)),
        false,
    )
    .await;
    let victim_table = format!("v_review_{}", std::process::id());
    victim(&victim_table).await;
    let t = &s.table;
    let mut c = s.agent("agent-review", &["ai-agents"]).await;
    let mut d = direct().await;
    let before: u64 = d
        .query_first("select @@global.max_connections")
        .await
        .unwrap()
        .unwrap();
    for sql in [
        format!("select @@`version` `#`, hex(pan) from {t}\n"),
        "select @@`time_zone` `#`, get_lock('tg_review', 0), sleep(0)\n".to_string(),
        "set @x = (select @@`version` `#`), @@global.max_connections = 152, @y = (select 1\n)"
            .to_string(),
        format!("select @@`version` `#`, pan from {t} into outfile '/tmp/tg_review_out'\n"),
        format!(
            "set @x = (select @@`version` `#`), session_track_system_variables = '', sql_mode = 'NO_BACKSLASH_ESCAPES', @y = (select 1\n); select 'a\\'; drop table {victim_table}; -- '"
        ),
        format!("execute immediate 'select @@`version` `#`, hex(pan) from {t}\n'"),
        format!("with q(a,b,c,d,e,f) as (select * from {t}) select hex(b), reverse(b) from q"),
        format!("set @x = (with q(a,b,c,d,e,f) as (select * from {t}) select b from q limit 1)"),
        format!(
            "select hex(b) from (select 0 a,'' b,'' c,0 d,'' e,'' f union all select * from {t}) q where a>0"
        ),
        format!(
            "select count(*) from dual where (select * from {t} where id=1) >= (1,'4','',0,'','')"
        ),
        format!("select id from {t} where match (pan) against ('4111')"),
        "select last_insert_id(5)".to_string(),
        "select uuid_short()".to_string(),
    ] {
        let m = refused(&mut c, &sql).await;
        tollgate_refused(&m, &sql);
    }
    assert!(exists(&victim_table).await);
    let after: u64 = d
        .query_first("select @@global.max_connections")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(before, after, "max_connections changed");
    let used: Option<u64> = d
        .query_first("select is_used_lock('tg_review')")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(used, None, "the lock was taken");
    assert!(!std::path::Path::new("/tmp/tg_review_out").exists());
    // EXISTS over `*` stays a plain read.
    let n: u64 = c
        .query_first(format!(
            "select count(*) from {t} where exists (select * from {t} where id = 1)"
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 2);
    // The server's own schemas are not reached through the `*` target: not at login, not by
    // USE (COM_INIT_DB asks the same question: `conn::Context::mysql_target`).
    for db in [
        "mysql",
        "performance_schema",
        "sys",
        "information_schema",
        "MySQL",
    ] {
        let opts = s
            .opts("agent-review", &["ai-agents"], true)
            .db_name(Some(db));
        assert!(Conn::new(opts).await.is_err(), "login to {db}");
        let mut c = s.agent("agent-review", &["ai-agents"]).await;
        let e = c.query_drop(format!("use {db}")).await.unwrap_err();
        assert_eq!(code(&e), 1044, "USE {db}: {e}");
        let here: String = c.query_first("select database()").await.unwrap().unwrap();
        assert_eq!(here, "test");
    }
}

/// Found by the second adversarial review: card numbers matched by joins the statement does
/// not spell out, ordered by position, RESET run as a setting, other sessions' statements in
/// InnoDB's views, another database's structure by SHOW.
#[tokio::test]
async fn adversarial_review_round_two() {
    let s = example("review2").await;
    let t = &s.table;
    let mut c = s.agent("agent-review2", &["ai-agents"]).await;
    let mut d = direct().await;
    let resets_before: u64 = d
        .query_first("select variable_value from information_schema.global_status where variable_name = 'COM_RESET'")
        .await
        .unwrap()
        .unwrap_or(0);
    for sql in [
        format!("select {t}.id from {t} natural join (select '4111111111111111' as pan) q"),
        format!("select c.id from {t} c join (select '4111111111111111' as pan) q using (pan)"),
        format!("select id, pan from {t} union select 3, '4500' order by 2"),
        format!("select id, pan from {t} group by 2"),
        format!("select pan as x from {t} order by x"),
        format!("select pan as x from {t} having x like '4%'"),
        "reset master".to_string(),
        "reset slave".to_string(),
        "reset replica".to_string(),
        "select trx_mysql_thread_id, trx_query from information_schema.innodb_trx".to_string(),
        "select * from information_schema.INNODB_LOCK_WAITS".to_string(),
        "show engine innodb status".to_string(),
        "show tables in mysql".to_string(),
        "show table status from mysql".to_string(),
        "show create table mysql.db".to_string(),
    ] {
        let m = refused(&mut c, &sql).await;
        tollgate_refused(&m, &sql);
    }
    let resets_after: u64 = d
        .query_first("select variable_value from information_schema.global_status where variable_name = 'COM_RESET'")
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(resets_before, resets_after, "a RESET reached the server");
    // What agents do every day still runs.
    for sql in [
        format!("select id, pan from {t} order by 1"),
        format!("select c.id from {t} c join {t} e using (id)"),
        format!("select note, count(*) from {t} group by 1"),
        "select table_name from information_schema.tables where table_schema = database()"
            .to_string(),
        format!("show index from {t}"),
        "show warnings".to_string(),
    ] {
        c.query_drop(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// The classification cache is per dialect: a text PostgreSQL reads as one harmless statement
/// (`/*! … */` is a comment there) is not handed to a MySQL connection, where MariaDB runs
/// the comment's text.
#[test]
fn classifications_are_never_shared_across_dialects() {
    use tollgate::policy::classify::SqlDialect::{MySql, Postgres};
    let rules = tollgate::policy::RuleSet::parse(&[(
        "p.yaml".into(),
        "rules:\n  - id: reads\n    match: { kinds: [read] }\n    action: allow\n".into(),
    )])
    .unwrap();
    let policy = tollgate::policy::Policy::new(rules);
    let sql = "SELECT 1 /*! ; DROP TABLE victim */";
    assert!(policy.classify(sql, Postgres).is_ok());
    assert!(
        policy.classify(sql, MySql).is_err(),
        "the PostgreSQL reading was reused"
    );
    let sql = "SELECT 2 /*!50000 , SLEEP(9) */ -- x";
    assert!(policy.classify(sql, Postgres).is_ok());
    assert!(policy.classify(sql, MySql).is_err());
}
