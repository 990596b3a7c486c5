//! Issue #15: the policy judges what PostgreSQL will execute. Each attack of the issue (and
//! variants of its kind) runs through tollgate with the example agent policy against the real
//! server, and its effect is checked on the server directly: the table still there, the file
//! not returned, the setting and the role unchanged.

mod common;

use std::sync::Arc;

use common::{AGENT_PASSWORD, Proxy, Raw, error_field, frame, sqlstate, startup_packet};
use tokio_postgres::NoTls;
use tollgate::conn::policy_files::PolicyInspector;
use tollgate::pipeline::Stages;
use tollgate::policy::classify::SqlDialect;
use tollgate::policy::inspect::PolicyStage;

const EXAMPLE: &str = "config/policies/agents.yaml";

/// tollgate with the policy files given, agents in group ai-agents logging in with a static
/// password: SCRAM on target `test`, cleartext on target `plain` (for raw clients).
async fn proxy(policies: &[&std::path::Path]) -> (Proxy, Arc<PolicyInspector>) {
    let inspector = Arc::new(
        PolicyInspector::load(
            policies.iter().map(|p| p.to_path_buf()).collect(),
            SqlDialect::Postgres,
        )
        .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("agent-password");
    std::fs::write(&pw, AGENT_PASSWORD).unwrap();
    let yaml = format!(
        "
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
        pw = pw.display()
    );
    let stages = Stages {
        inspect: Arc::new(PolicyStage(inspector.clone())),
        record: None,
        approvals: None,
    };
    (Proxy::start_yaml(dir, &yaml, stages).await, inspector)
}

async fn example() -> Proxy {
    proxy(&[std::path::Path::new(EXAMPLE)]).await.0
}

/// A direct connection to the test database, as the server's superuser.
async fn direct() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(
        "host=127.0.0.1 port=5432 user=postgres dbname=test sslmode=disable",
        NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    client
}

/// A fresh table of `rows` rows, named for the test.
async fn victim(name: &str, rows: i32) -> tokio_postgres::Client {
    let db = direct().await;
    db.batch_execute(&format!(
        "drop table if exists {name}; create table {name} (id int primary key, note text);
         insert into {name} select g, 'row ' || g from generate_series(1, {rows}) g;"
    ))
    .await
    .unwrap();
    db
}

async fn count(db: &tokio_postgres::Client, table: &str) -> i64 {
    db.query_one(&format!("select count(*) from {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

fn message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_else(|| e.to_string())
}

/// Asserts `sql` is refused (not run) through `client`, and returns the message.
async fn refused(client: &tokio_postgres::Client, sql: &str) -> String {
    match client.simple_query(sql).await {
        Ok(_) => panic!("ran through tollgate: {sql}"),
        Err(e) => {
            assert!(
                matches!(sqlstate(&e).as_str(), "42501" | "54001"),
                "{sql}: {} {}",
                sqlstate(&e),
                message(&e)
            );
            message(&e)
        }
    }
}

/// Item 1: a setting the lexer depends on, pipelined ahead of a statement that would read
/// differently under it, in one TCP write.
#[tokio::test]
async fn pipelined_lexer_settings_are_refused_before_anything_is_forwarded() {
    let db = victim("victim_pipelined", 3).await;
    let proxy = example().await;
    for setting in [
        "SET standard_conforming_strings = off",
        "SET LOCAL standard_conforming_strings TO off",
        "select set_config('standard_conforming_strings', 'off', false)",
        "SET backslash_quote = on",
        "SET client_encoding = 'SJIS'",
        "set \"Standard_Conforming_Strings\" = off",
    ] {
        let mut raw = Raw::connect(proxy.addr).await;
        raw.send(&startup_packet(&[("user", "agent"), ("database", "plain")]))
            .await;
        raw.read().await.expect("auth request");
        raw.send(&frame(b'p', format!("{AGENT_PASSWORD}\0").as_bytes()))
            .await;
        raw.until_ready().await;
        let mut bytes = frame(b'Q', format!("{setting}\0").as_bytes());
        bytes.extend(frame(
            b'Q',
            b"SELECT 'x\\' , ' ; DROP TABLE victim_pipelined; -- '\0",
        ));
        raw.send(&bytes).await;
        let first = raw.until_ready().await;
        let error = first
            .iter()
            .find(|(t, _)| *t == b'E')
            .unwrap_or_else(|| panic!("{setting}: not refused"));
        assert_eq!(
            error_field(&error.1, b'C').as_deref(),
            Some("42501"),
            "{setting}"
        );
        raw.until_ready().await;
        assert_eq!(count(&db, "victim_pipelined").await, 3, "{setting}");
    }
    let conforming: String = db
        .query_one("show standard_conforming_strings", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(conforming, "on");
}

/// Item 2: EXECUTE arguments are expressions, judged like any other.
#[tokio::test]
async fn execute_arguments_are_judged() {
    let proxy = example().await;
    let client = proxy.connect().await;
    client
        .batch_execute("PREPARE q(text, text) AS SELECT $1, $2")
        .await
        .unwrap();
    let m = refused(
        &client,
        "EXECUTE q(pg_read_file('postgresql.conf'), current_setting('data_directory'))",
    )
    .await;
    assert!(m.contains("no-dangerous-functions"), "{m}");
    refused(&client, "EXECUTE q((select pg_ls_dir('.') limit 1), 'x')").await;
    // The statement itself still runs with harmless arguments.
    let rows = client.simple_query("EXECUTE q('a', 'b')").await.unwrap();
    assert!(!rows.is_empty());
}

/// Item 3 and 12: a function denied in one spelling is denied in every other.
#[tokio::test]
async fn functions_are_found_in_every_spelling() {
    let proxy = example().await;
    let client = proxy.connect().await;
    for sql in [
        "SELECT ('postgresql.conf'::text).pg_read_file",
        "SELECT (t.f).pg_read_file FROM (SELECT 'postgresql.conf'::text AS f) t",
        "SELECT t.pg_ls_dir FROM (SELECT '.'::text) AS t",
        "SELECT pg_catalog.pg_read_file('postgresql.conf')",
        "SELECT \"pg_read_file\"('postgresql.conf')",
        "SELECT PG_READ_FILE('postgresql.conf')",
        "SELECT * FROM pg_ls_dir('.')",
        "SELECT 1 WHERE EXISTS (SELECT pg_read_file('postgresql.conf'))",
        "WITH x AS (SELECT pg_read_file('postgresql.conf') AS f) SELECT length(f) FROM x",
        "SELECT U&\"pg\\005fread_file\"('postgresql.conf')",
        "SELECT pg_read_file('postgresql.conf' /* comment */)",
        "SELECT $$x$$, pg_read_file($f$postgresql.conf$f$)",
    ] {
        let m = refused(&client, sql).await;
        assert!(m.contains("no-dangerous-functions"), "{sql}: {m}");
    }
    // A rule naming substr matches SUBSTRING's special form too, and the other way round.
    let policy = tollgate::policy::Policy::new(
        tollgate::policy::RuleSet::parse(&[(
            "t.yaml".into(),
            "default: allow\nrules:\n  - id: no-substr\n    match: { functions: [SUBSTR] }\n    action: deny\n"
                .into(),
        )])
        .unwrap(),
    );
    let identity = tollgate::auth::Identity::static_login("a", &[]);
    for sql in [
        "select substr(note, 1, 8) from t",
        "select SUBSTRING(note FROM 1 FOR 8) from t",
        "select substring(note, 1, 8) from t",
        "select pg_catalog.substr(note, 1, 8) from t",
    ] {
        let d = policy
            .decide(&identity, "db", sql, SqlDialect::Postgres)
            .decision;
        assert_eq!(d.rule.as_deref(), Some("no-substr"), "{sql}");
    }
}

/// Item 4: a name's prepared statement follows what the server may hold, not what tollgate last
/// saw: a shadow PREPARE the server refuses does not turn a DELETE into a read.
#[tokio::test]
async fn shadow_prepared_statements_do_not_launder_a_write() {
    let db = victim("victim_shadow", 5).await;
    let dir = tempfile::tempdir().unwrap();
    let permissive = dir.path().join("permissive.yaml");
    std::fs::write(
        &permissive,
        "default: deny\nrules:\n  - id: all\n    match: { groups: [ai-agents] }\n    action: allow\n",
    )
    .unwrap();
    let live = dir.path().join("live.yaml");
    std::fs::copy(&permissive, &live).unwrap();
    let (proxy, inspector) = proxy(&[&live]).await;
    let client = proxy.connect().await;
    // As if approved: the DELETE is prepared on the server.
    client
        .batch_execute("PREPARE p(int) AS DELETE FROM victim_shadow WHERE id = $1")
        .await
        .unwrap();
    // From now on the example policy is in force (writes need approval).
    std::fs::copy(EXAMPLE, &live).unwrap();
    inspector.reload().unwrap();
    // The server refuses the shadow (p exists); tollgate must not believe it.
    let err = client
        .batch_execute("PREPARE p AS SELECT 1")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42P05", "{}", message(&err));
    for id in 1..=3 {
        let m = refused(&client, &format!("EXECUTE p({id})")).await;
        assert!(m.contains("agents-write-needs-approval"), "{m}");
    }
    // Names fold as the server folds them: P is p.
    refused(&client, "EXECUTE P(4)").await;
    // A DEALLOCATE the server skips (aborted transaction) does not make tollgate forget.
    client.batch_execute("begin").await.unwrap();
    let _ = client.batch_execute("select 1/0").await;
    let _ = client.batch_execute("deallocate p").await;
    client.batch_execute("rollback").await.unwrap();
    let _ = client.batch_execute("PREPARE p AS SELECT 1").await;
    refused(&client, "EXECUTE p(5)").await;
    assert_eq!(count(&db, "victim_shadow").await, 5);
}

/// Items 5 and 7: settings by allowlist; names fold whatever the quoting.
#[tokio::test]
async fn settings_outside_the_allowlist_are_refused_in_every_form() {
    let db = direct().await;
    db.batch_execute(
        "do $$ begin if not exists (select from pg_roles where rolname = 'tollgate_someone') then create role tollgate_someone; end if; end $$",
    )
    .await
    .unwrap();
    let proxy = example().await;
    let client = proxy.connect().await;
    for sql in [
        "SET \"Role\" = 'tollgate_someone'",
        "SET role = 'tollgate_someone'",
        "SET ROLE tollgate_someone",
        "SET SESSION AUTHORIZATION tollgate_someone",
        "select set_config('role', 'tollgate_someone', false)",
        "select set_config('ROLE', 'tollgate_someone', false)",
        "select set_config(lower('ROLE'), 'tollgate_someone', false)",
        "SET log_statement = 'none'",
        "SET session_replication_role = replica",
        "SET LOCAL session_replication_role = replica",
        "RESET session_replication_role",
        "RESET ALL",
        "SET search_path = public, pg_catalog",
        "SET default_transaction_read_only = off",
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
        "BEGIN READ WRITE",
        "START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE",
        "ALTER ROLE current_user SET log_statement = 'none'",
        "ALTER SYSTEM SET log_statement = 'none'",
    ] {
        refused(&client, sql).await;
    }
    let who: String = client
        .query_one("select current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, "postgres");
    // Harmless client settings go through, in every form.
    client
        .batch_execute(
            "SET application_name = 'agent'; SET TIME ZONE 'UTC'; SET \"DateStyle\" = ISO; \
             SET LOCAL statement_timeout = 1000; RESET jit; BEGIN ISOLATION LEVEL SERIALIZABLE; COMMIT",
        )
        .await
        .unwrap();
    // Item 13: asyncpg's introspection runs.
    let rows = client
        .simple_query("SELECT current_setting('jit'), set_config('jit', 'off', false)")
        .await
        .unwrap();
    assert!(!rows.is_empty());
}

/// Item 6: side-effecting and locking work is its own kind, held for approval.
#[tokio::test]
async fn side_effects_and_locks_are_not_reads() {
    let db = victim("victim_effects", 3).await;
    db.batch_execute(
        "drop sequence if exists victim_effects_seq; create sequence victim_effects_seq",
    )
    .await
    .unwrap();
    let proxy = example().await;
    let client = proxy.connect().await;
    for sql in [
        "SELECT setval('victim_effects_seq', 100)",
        "SELECT nextval('victim_effects_seq')",
        "SELECT pg_advisory_lock(4242)",
        "SELECT pg_try_advisory_xact_lock(1)",
        "SELECT pg_create_restore_point('x')",
        "SELECT * FROM victim_effects WHERE id = 3 FOR UPDATE",
        "SELECT * FROM victim_effects WHERE id = 3 FOR SHARE",
        "LOCK TABLE victim_effects",
        "SELECT public.lower('x')",
        "SELECT txid_current(), pg_notify('c', 'x')",
    ] {
        let m = refused(&client, sql).await;
        assert!(
            m.contains("agents-calls-and-locks-need-approval"),
            "{sql}: {m}"
        );
    }
    let last: i64 = db
        .query_one("select last_value from victim_effects_seq", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(last, 1);
    let locks: i64 = db
        .query_one(
            "select count(*) from pg_locks where locktype = 'advisory'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(locks, 0);
    // Stable and immutable built-ins stay plain reads.
    client
        .simple_query(
            "SELECT lower(note), now(), length(note), random() FROM victim_effects WHERE id = 1",
        )
        .await
        .unwrap();
}

/// Item 8: a statement too long or too deep is refused with 54001; nothing crashes, and other
/// connections carry on.
#[tokio::test]
async fn huge_and_deep_statements_are_refused_and_the_daemon_survives() {
    let proxy = example().await;
    let other = proxy.connect().await;
    let client = proxy.connect().await;
    for terms in [50_000usize, 300_000] {
        let sql = format!("SELECT 1{}", "+1".repeat(terms));
        let err = client.simple_query(&sql).await.unwrap_err();
        assert_eq!(sqlstate(&err), "54001", "{}", message(&err));
    }
    // Parentheses alone build no tree (the parser drops them): nested calls do.
    let deep = format!("SELECT {}1{}", "abs(".repeat(10_000), ")".repeat(10_000));
    let err = client.simple_query(&deep).await.unwrap_err();
    assert_eq!(sqlstate(&err), "54001", "{}", message(&err));
    let big = format!("SELECT '{}'", "x".repeat(10 << 20));
    let err = client.simple_query(&big).await.unwrap_err();
    assert_eq!(sqlstate(&err), "54001", "{}", message(&err));
    let million = format!("SELECT 1{}", "+1".repeat(1_000_000));
    let err = client.simple_query(&million).await.unwrap_err();
    assert_eq!(sqlstate(&err), "54001");
    // The same connection and another one still work.
    for c in [&client, &other] {
        let n: i32 = c.query_one("select 41 + 1", &[]).await.unwrap().get(0);
        assert_eq!(n, 42);
    }
}

/// Item 9: card-number columns through renaming, whole rows and statistics.
#[tokio::test]
async fn protected_columns_follow_the_data() {
    let db = direct().await;
    db.batch_execute(
        "drop table if exists cards_follow; create table cards_follow (id int, pan text);
         insert into cards_follow values (1, '4111111111111111'); analyze cards_follow;",
    )
    .await
    .unwrap();
    let proxy = example().await;
    let client = proxy.connect().await;
    for sql in [
        "SELECT substr(pan, 4, 8) FROM cards_follow",
        "SELECT substr(c::text, 4, 8) FROM cards_follow c",
        "SELECT substr(x, 1, 8) FROM cards_follow AS t(i, x)",
        "SELECT substr(row_to_json(c)->>'pan', 1, 8) FROM cards_follow c",
        "SELECT substr(c.*::text, 1, 8) FROM cards_follow c",
        "SELECT substr(ROW(c.*)::text, 1, 8) FROM cards_follow c",
        "SELECT substr(x, 1, 8) FROM (SELECT pan AS x FROM cards_follow) s",
        "WITH s(x) AS (SELECT pan FROM cards_follow) SELECT substr(x, 1, 8) FROM s",
        "SELECT histogram_bounds FROM pg_stats WHERE attname = 'pan'",
        "SELECT most_common_vals::text FROM pg_catalog.pg_stats WHERE tablename = 'cards_follow'",
        "SELECT stavalues1 FROM pg_statistic",
    ] {
        refused(&client, sql).await;
    }
    // Reading the column as it is stays allowed (the masker shows it masked).
    let rows = client
        .query("SELECT id, pan FROM cards_follow WHERE id = 1", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
}

/// Item 10: constant-true conditions are unbounded writes, denied rather than held.
#[tokio::test]
async fn constant_true_conditions_are_unbounded_writes() {
    let db = victim("victim_unbounded", 4).await;
    let proxy = example().await;
    let client = proxy.connect().await;
    for sql in [
        "DELETE FROM victim_unbounded WHERE true",
        "DELETE FROM victim_unbounded WHERE 1 = 1",
        "DELETE FROM victim_unbounded WHERE 'a' = 'a' OR false",
        "UPDATE victim_unbounded SET note = 'x' WHERE NOT false",
        "DELETE FROM victim_unbounded WHERE EXISTS (SELECT 1)",
        "MERGE INTO victim_unbounded t USING (SELECT 1) s ON true WHEN MATCHED THEN DELETE",
        "DELETE FROM victim_unbounded",
        "TRUNCATE victim_unbounded",
    ] {
        let m = refused(&client, sql).await;
        assert!(m.contains("no-unbounded-write"), "{sql}: {m}");
    }
    // A condition on the rows is a bounded write (held for approval).
    let m = refused(&client, "DELETE FROM victim_unbounded WHERE id = 1").await;
    assert!(m.contains("agents-write-needs-approval"), "{m}");
    assert_eq!(count(&db, "victim_unbounded").await, 4);
}

/// The second line: an identity the policy lets only read gets a read-only session in
/// PostgreSQL itself, and cannot lift it.
#[tokio::test]
async fn read_only_identities_get_read_only_sessions() {
    let db = victim("victim_readonly", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let readers = dir.path().join("readers.yaml");
    std::fs::write(
        &readers,
        "default: deny\nrules:\n  - id: read\n    match: { groups: [ai-agents], kinds: [read, session, transaction] }\n    action: allow\n",
    )
    .unwrap();
    let (proxy, _) = proxy(&[&readers]).await;
    let client = proxy.connect().await;
    let ro: String = client
        .query_one("show default_transaction_read_only", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(ro, "on");
    refused(&client, "SET default_transaction_read_only = off").await;
    refused(&client, "BEGIN READ WRITE").await;
    assert_eq!(count(&db, "victim_readonly").await, 2);
    // The example policy holds writes for approval: its agents may write once approved.
    let proxy = example().await;
    let client = proxy.connect().await;
    let ro: String = client
        .query_one("show default_transaction_read_only", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(ro, "off");
}

/// Item 13: asyncpg reads a table with enum and composite columns through the example policy
/// (its type introspection runs `set_config('jit', 'off', false)` first).
#[tokio::test]
async fn asyncpg_reads_enum_and_composite_columns() {
    let db = direct().await;
    db.batch_execute(
        "drop table if exists asyncpg_t; drop type if exists asyncpg_mood; drop type if exists asyncpg_pair;
         create type asyncpg_mood as enum ('ok', 'sad');
         create type asyncpg_pair as (a int, b text);
         create table asyncpg_t (id int, mood asyncpg_mood, pair asyncpg_pair);
         insert into asyncpg_t values (1, 'ok', row(2, 'x'));",
    )
    .await
    .unwrap();
    let proxy = example().await;
    let script = r#"
import asyncio, os, sys
import asyncpg
async def main():
    c = await asyncpg.connect(host='127.0.0.1', port=int(os.environ['PORT']), user='agent',
                              password=os.environ['PW'], database='test', ssl=False)
    row = await c.fetchrow('select id, mood, pair from asyncpg_t where id = $1', 1)
    # Enum and composite values in binary format are decoded through the target's catalog
    # (issue #17: pg_type read on tollgate's side connection); their text forms read through.
    text = await c.fetchrow('select mood::text, pair::text from asyncpg_t where id = $1', 1)
    print(row['id'], row['mood'], row['pair'], text[0], text[1])
    await c.close()
asyncio.run(main())
"#;
    let out = tokio::process::Command::new("python3")
        .args(["-c", script])
        .env("PORT", proxy.addr.port().to_string())
        .env("PW", AGENT_PASSWORD)
        .output()
        .await
        .expect("python3");
    assert!(
        out.status.success(),
        "asyncpg failed (scripts/test.sh installs it with pip): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1 ok <Record a=2 b='x'> ok (2,x)"
    );
}

/// Item 4 at the protocol level: a Parse reusing a statement name for something else is
/// refused, so Binds of the name cannot run a statement other than the one judged.
#[tokio::test]
async fn a_parse_cannot_shadow_a_named_statement() {
    let db = victim("victim_parse_shadow", 3).await;
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.yaml");
    std::fs::write(
        &live,
        "default: deny\nrules:\n  - id: all\n    match: { groups: [ai-agents] }\n    action: allow\n",
    )
    .unwrap();
    let (proxy, _) = proxy(&[&live]).await;
    let mut raw = Raw::connect(proxy.addr).await;
    raw.send(&startup_packet(&[("user", "agent"), ("database", "plain")]))
        .await;
    raw.read().await.expect("auth request");
    raw.send(&frame(b'p', format!("{AGENT_PASSWORD}\0").as_bytes()))
        .await;
    raw.until_ready().await;
    let parse = |name: &str, sql: &str| {
        let mut body = format!("{name}\0{sql}\0").into_bytes();
        body.extend_from_slice(&0i16.to_be_bytes());
        frame(b'P', &body)
    };
    // The same name and text again is harmless; another text under the name is refused.
    let mut bytes = parse("s1", "select 1");
    bytes.extend(frame(b'S', b""));
    raw.send(&bytes).await;
    assert!(raw.until_ready().await.iter().all(|(t, _)| *t != b'E'));
    let mut bytes = parse("s1", "select 1");
    bytes.extend(frame(b'S', b""));
    raw.send(&bytes).await;
    let answer = raw.until_ready().await;
    // (The server itself refuses the duplicate name: 42P05.)
    assert!(
        answer
            .iter()
            .all(|(t, b)| *t != b'E' || error_field(b, b'C').as_deref() == Some("42P05")),
        "{answer:?}"
    );
    let mut bytes = parse("s1", "delete from victim_parse_shadow where id > 0");
    bytes.extend(frame(b'S', b""));
    raw.send(&bytes).await;
    let answer = raw.until_ready().await;
    let error = answer.iter().find(|(t, _)| *t == b'E').expect("refused");
    assert_eq!(error_field(&error.1, b'C').as_deref(), Some("42501"));
    assert!(
        error_field(&error.1, b'M')
            .unwrap()
            .contains("already stood for another statement"),
        "{:?}",
        error_field(&error.1, b'M')
    );
    // Binding the name runs what was judged: the read.
    let mut bytes = frame(b'B', b"\0s1\0\0\0\0\0\0\0");
    bytes.extend(frame(b'E', b"\0\0\0\0\0"));
    bytes.extend(frame(b'S', b""));
    raw.send(&bytes).await;
    let answer = raw.until_ready().await;
    assert!(answer.iter().any(|(t, _)| *t == b'D'), "{answer:?}");
    assert_eq!(count(&db, "victim_parse_shadow").await, 3);
}

/// What the adversarial review of this issue's fix got past, each now refused: classification
/// cache collisions (a UESCAPE literal, Unicode case folding), card-number columns renamed by a
/// set operation or a subquery's alias list, comparisons and orderings that probe them,
/// unqualified user-defined operators, NOTIFY, server configuration views, and a deeply nested
/// comment that stalled the worker thread.
#[tokio::test]
async fn what_the_adversarial_review_found() {
    let db = direct().await;
    db.batch_execute(
        "drop table if exists cards_adv; create table cards_adv (id int, pan text);
         insert into cards_adv values (1, '4111111111111111');
         create or replace function adv_op_fn(text, text) returns boolean language sql volatile
           as 'select true';
         drop operator if exists =~~= (text, text);
         create operator =~~= (leftarg = text, rightarg = text, function = adv_op_fn);",
    )
    .await
    .unwrap();
    let proxy = example().await;
    let client = proxy.connect().await;
    // Primed with a harmless look-alike, the real thing must still be judged on its own.
    let _ = client
        .simple_query("select ('/etc/hostname'::text).U&\"pg_read_fil!0065\" UESCAPE '#'")
        .await;
    let m = refused(
        &client,
        "select ('/etc/passwd'::text).U&\"pg_read_fil!0065\" UESCAPE '!'",
    )
    .await;
    assert!(m.contains("no-dangerous-functions"), "{m}");
    let _ = client
        .simple_query("select (4242::int8).pg_advisory_loc\u{212a}")
        .await;
    refused(&client, "select (4242::int8).pg_advisory_lock").await;
    let locks: i64 = db
        .query_one(
            "select count(*) from pg_locks where locktype = 'advisory' and objid = 4242",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(locks, 0);
    for sql in [
        "select i, substr(x, 1, 8) from (select 0 as i, '' as x where false union all select * from cards_adv) s",
        "select substr(column2, 1, 8) from (values (0, '') union all select * from cards_adv) s",
        "select substr(x, 1, 8) from (select * from cards_adv) s(i, x)",
        "with s(i, x) as (select * from cards_adv) select substr(x, 1, 8) from s",
        "select row(1, '41') < any (select * from cards_adv)",
        "select (1, '4111111111111111') in (select * from cards_adv)",
        "select id, pan from cards_adv union all select 0, '4111111111111110' order by 2",
        "select pan, count(*) from cards_adv group by 1",
        "select 'pwn' =~~= 'ed'",
        "notify jobs, 'run-migration'",
        "select * from pg_hba_file_rules",
        "select * from pg_catalog.pg_file_settings",
    ] {
        refused(&client, sql).await;
    }
    // A comment nested 100,000 deep is refused at once, and the connection goes on.
    let started = std::time::Instant::now();
    let nested = format!("select 1 {}{}", "/*".repeat(100_000), "*/".repeat(100_000));
    let err = client.simple_query(&nested).await.unwrap_err();
    assert_eq!(sqlstate(&err), "54001", "{}", message(&err));
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let n: i32 = client.query_one("select 7", &[]).await.unwrap().get(0);
    assert_eq!(n, 7);
}

/// Functions of the target itself (user-defined, extensions) are read from its catalog at
/// login: called through attribute notation, or overloading a built-in name, they are calls.
#[tokio::test]
async fn the_targets_own_functions_are_calls_in_every_spelling() {
    let db = victim("victim_udf", 3).await;
    db.batch_execute(
        "create or replace function udf_purge(int) returns int language sql volatile
           as 'delete from victim_udf where id = $1 returning id';
         create or replace function public.initcap(int) returns int language sql volatile
           as 'delete from victim_udf where id = $1 returning id';",
    )
    .await
    .unwrap();
    let proxy = example().await;
    let client = proxy.connect().await;
    for sql in [
        "select (2).udf_purge",
        "select udf_purge(2)",
        "select t.udf_purge from (select 2) t",
        "select initcap(3)",
    ] {
        let m = refused(&client, sql).await;
        assert!(
            m.contains("agents-calls-and-locks-need-approval"),
            "{sql}: {m}"
        );
    }
    assert_eq!(count(&db, "victim_udf").await, 3);
    db.batch_execute("drop function public.initcap(int); drop function udf_purge(int)")
        .await
        .unwrap();
}

/// The second adversarial round: card numbers confirmed by comparing them with guesses through
/// joins and set operations, quoted mixed-case card columns, other sessions' statement text,
/// and statements whose analysis alone would cost seconds and gigabytes.
#[tokio::test]
async fn what_the_second_adversarial_review_found() {
    let db = direct().await;
    db.batch_execute(
        "drop table if exists cards_adv2; create table cards_adv2 (id int, card_number text, \"PAN\" text);
         insert into cards_adv2 values (1, '5500005555555559', '4111111111111111');",
    )
    .await
    .unwrap();
    let proxy = example().await;
    let client = proxy.connect().await;
    for sql in [
        "select id from cards_adv2 natural join (values ('5500005555555559')) v(card_number)",
        "select id from cards_adv2 join (values ('5500005555555559')) v(card_number) using (card_number)",
        "select card_number from cards_adv2 intersect select '5500005555555559'",
        "select id, card_number from cards_adv2 except select 1, '5500005555555559'",
        "select id, card_number from cards_adv2 union select 1, '5500005555555559'",
        "select c.id from cards_adv2 c natural join string_to_table('5500005555555559', ',') v(card_number)",
        "select substr(\"PAN\", 7, 6) from cards_adv2",
        "select translate(query, '0123456789', 'abcdefghij') from pg_stat_activity",
        "select * from pg_stat_get_activity(null)",
    ] {
        refused(&client, sql).await;
    }
    // UNION ALL compares nothing: allowed (the rows come back masked).
    client
        .simple_query("select id, card_number from cards_adv2 union all select 2, 'x'")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let ors = format!("select 1 where 1 = 1{}", " or 1 = 1".repeat(125_000));
    let err = client.simple_query(&ors).await.unwrap_err();
    assert_eq!(sqlstate(&err), "54001", "{}", message(&err));
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

/// Casts to types whose cast function or domain check runs user code, and views that run such
/// code when read, are calls (the second adversarial round, with objects a DBA had created).
#[tokio::test]
async fn casts_domains_and_views_running_user_code_are_calls() {
    let db = victim("victim_hidden", 3).await;
    db.batch_execute(
        "create or replace function hidden_ev(int) returns boolean language sql volatile
           as 'delete from victim_hidden where id = $1 returning true';
         drop view if exists hidden_view; drop domain if exists hidden_dz;
         create domain hidden_dz as int check (hidden_ev(value));
         create view hidden_view as select hidden_ev(2) as x;",
    )
    .await
    .unwrap();
    let proxy = example().await;
    let client = proxy.connect().await;
    for sql in [
        "select 1::hidden_dz",
        "select cast(1 as hidden_dz)",
        "select '{1}'::hidden_dz[]",
        "select * from hidden_view",
        "table hidden_view",
    ] {
        let m = refused(&client, sql).await;
        assert!(
            m.contains("agents-calls-and-locks-need-approval"),
            "{sql}: {m}"
        );
    }
    assert_eq!(count(&db, "victim_hidden").await, 3);
    db.batch_execute("drop view hidden_view; drop domain hidden_dz; drop function hidden_ev(int)")
        .await
        .unwrap();
}
