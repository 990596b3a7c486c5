//! Differential test of the PostgreSQL classifier (issue #15): a corpus of statements is judged
//! by the example agent policy, and every statement the policy allows is run directly on the
//! server inside a transaction that is rolled back. What the server then says the statement
//! did must match a read: no transaction id assigned (no write of any kind), no setting outside
//! the allowlist changed, no role change, no advisory or row lock taken, no sequence advanced.
//! A statement that does any of that while allowed is a classifier bug.

mod common;

use tokio_postgres::{Client, NoTls, SimpleQueryMessage};
use tollgate::auth::Identity;
use tollgate::policy::classify::SqlDialect;
use tollgate::policy::{Action, Policy, RuleSet};

/// Statements of every kind the issue names: comments, quoting, dollar quotes, E'' and U&
/// strings, casts, attribute calls, CTEs, writing functions, several statements in one text.
const CORPUS: &[&str] = &[
    // Plain reads.
    "select 1",
    "select * from diff_t where id = 1",
    "select id, note from diff_t order by id limit 2",
    "select count(*) from diff_t",
    "table diff_t",
    "values (1), (2)",
    "select * from diff_v",
    "select lower(note), upper(note), length(note) from diff_t",
    "select now(), current_date, current_timestamp, localtime",
    "select random(), gen_random_uuid() is not null",
    "select current_setting('jit')",
    "select current_user, session_user, current_schema()",
    "select version()",
    "select pg_backend_pid() > 0",
    "select to_char(now(), 'YYYY')",
    "select json_build_object('a', 1)",
    "select jsonb_agg(id) from diff_t",
    "select string_agg(note, ',') from diff_t where id < 3",
    "select * from generate_series(1, 3)",
    "select * from unnest(array[1, 2])",
    "select * from diff_t t1 join diff_t t2 on t1.id = t2.id where t1.id = 1",
    "select * from diff_t where id in (select id from diff_t where id < 2)",
    "select exists (select 1 from diff_t)",
    "with c as (select id from diff_t) select * from c",
    "with recursive r(n) as (select 1 union all select n + 1 from r where n < 3) select * from r",
    "select id from diff_t union all select id from diff_t",
    "select id from diff_t intersect select id from diff_t",
    "select case when id > 1 then 'a' else 'b' end from diff_t",
    "select coalesce(note, 'x'), nullif(id, 1) from diff_t",
    "select id::text, note::varchar(3), cast(id as bigint) from diff_t",
    "select 'diff_t'::regclass",
    "select substring(note from 1 for 2), trim(both ' ' from note), position('o' in note) from diff_t",
    "select extract(year from now()), overlay(note placing 'x' from 1 for 1) from diff_t",
    "select (note).length from diff_t",
    "select t.note from diff_t t",
    "select row_number() over (order by id) from diff_t",
    "select id, sum(id) over (partition by note) from diff_t",
    "select id from diff_t group by id having count(*) > 0",
    "select distinct note from diff_t",
    "select * from diff_t tablesample system (100)",
    "select * from diff_t for update",
    "select * from diff_t where id = 1 for share",
    "select * from diff_t for no key update skip locked",
    "select * from diff_t where note like E'%\\\\%'",
    "select U&'d\\0061t\\0061'",
    "select U&\"note\" from diff_t",
    "select $$dollar$$, $tag$x$tag$",
    "select /* comment */ 1 -- trailing",
    "select /* nested /* comment */ still */ 1",
    "select 1; select 2",
    "select 'x'';drop table diff_t;--'",
    "explain select * from diff_t",
    "explain (costs off) select * from diff_t where id = 1",
    "explain analyze select 1",
    "show timezone",
    "show all",
    // Sessions and transactions.
    "set application_name = 'diff'",
    "set timezone = 'UTC'",
    "set time zone 'UTC'",
    "set datestyle = iso",
    "set \"DateStyle\" = 'ISO, MDY'",
    "set local statement_timeout = 1000",
    "set jit = off",
    "reset jit",
    "select set_config('jit', 'off', false)",
    "select set_config('application_name', 'x', true)",
    "set extra_float_digits = 3",
    "begin",
    "begin isolation level serializable",
    "begin read only",
    "start transaction isolation level repeatable read",
    "commit",
    "rollback",
    "savepoint a",
    "set transaction isolation level serializable",
    "listen diff_channel",
    "unlisten *",
    "discard plans",
    "prepare diff_p as select 1",
    "deallocate all",
    "declare diff_c cursor for select * from diff_t",
    // Settings outside the allowlist.
    "set search_path = public",
    "set role postgres",
    "set session authorization postgres",
    "set standard_conforming_strings = off",
    "set client_encoding = 'LATIN1'",
    "set default_transaction_read_only = off",
    "set session characteristics as transaction read write",
    "begin read write",
    "set log_statement = 'none'",
    "set session_replication_role = replica",
    "reset all",
    "reset role",
    "select set_config('search_path', 'public', false)",
    "select set_config('role', 'postgres', false)",
    "select set_config(lower('JIT'), 'off', false)",
    "set work_mem = '64MB'",
    "set enable_seqscan = off",
    "set lock_timeout = 100",
    // Writes.
    "insert into diff_t values (100, 'new', null)",
    "insert into diff_t select id + 100, note, pan from diff_t",
    "update diff_t set note = 'x' where id = 1",
    "update diff_t set note = 'x' where true",
    "delete from diff_t where id = 1",
    "delete from diff_t where 1 = 1",
    "delete from diff_t",
    "truncate diff_t",
    "with d as (delete from diff_t where id = 1 returning *) select * from d",
    "with u as (update diff_t set note = 'y' where id = 2 returning id) select count(*) from u",
    "merge into diff_t t using (select 1 as id) s on t.id = s.id when matched then delete",
    "merge into diff_t t using (select 1) s on true when matched then delete",
    "insert into diff_t values (101, 'x', null) on conflict do nothing",
    "copy diff_t from stdin",
    "copy diff_t to stdout",
    "copy (select 1) to stdout",
    "select * into diff_new from diff_t",
    "create table diff_new2 as select * from diff_t",
    // Functions that change something or reach outside.
    "select diff_fn()",
    "select public.diff_fn()",
    "select * from diff_fn()",
    "select nextval('diff_seq')",
    "select setval('diff_seq', 5)",
    "select currval('diff_seq')",
    "select pg_advisory_lock(1)",
    "select pg_try_advisory_lock(2)",
    "select pg_advisory_xact_lock(3)",
    "select pg_notify('c', 'x')",
    "select pg_read_file('PG_VERSION')",
    "select ('PG_VERSION'::text).pg_read_file",
    "select pg_ls_dir('.')",
    "select * from pg_ls_dir('.')",
    "select lo_import('/etc/hostname')",
    "select pg_stat_reset()",
    "select pg_create_restore_point('x')",
    "select txid_current()",
    "select pg_sleep(0)",
    "select query_to_xml('select 1', true, true, '')",
    "select table_to_xml('diff_t', true, true, '')",
    "select 1 from diff_t where diff_fn() is not null",
    "select id from diff_t order by diff_fn()",
    "values (diff_fn())",
    "select (select diff_fn())",
    "select coalesce(null, diff_fn())",
    "select array[diff_fn()]",
    "select diff_fn() over ()",
    "select count(*) filter (where diff_fn() is null) from diff_t",
    "select * from diff_t, lateral (select diff_fn()) f",
    "prepare diff_q(int) as select $1",
    "execute diff_q(1)",
    "lock table diff_t",
    "lock table diff_t in access share mode",
    // DDL, DCL, procedural, admin.
    "create table diff_x (a int)",
    "create temp table diff_tmp (a int)",
    "create view diff_v2 as select 1",
    "alter table diff_t add column z int",
    "drop table diff_t",
    "drop table if exists diff_nothing",
    "create index on diff_t (id)",
    "comment on table diff_t is 'x'",
    "grant select on diff_t to public",
    "revoke select on diff_t from public",
    "create role diff_role",
    "alter role postgres set log_statement = 'none'",
    "do $$ begin perform 1; end $$",
    "do $$ begin delete from diff_t; end $$",
    "create function diff_f2() returns int language sql as 'select 1'",
    "call diff_proc()",
    "vacuum diff_t",
    "analyze diff_t",
    "checkpoint",
    "alter system set log_statement = 'none'",
    "refresh materialized view diff_mv",
    "cluster diff_t",
    "reindex table diff_t",
    "security label on table diff_t is 'x'",
    "load 'plpgsql'",
];

/// Generated variants of the kinds found so far: each denied or side-effecting function in
/// several spellings, each protected setting in several forms.
fn generated() -> Vec<String> {
    let mut out = Vec::new();
    for f in [
        "pg_read_file('PG_VERSION')",
        "nextval('diff_seq')",
        "setval('diff_seq', 9)",
        "pg_advisory_lock(7)",
        "diff_fn()",
        "set_config('search_path', 'public', false)",
        "txid_current()",
        "pg_notify('c', 'x')",
    ] {
        let name = f.split('(').next().unwrap();
        let args = &f[name.len()..];
        for spelling in [
            format!("select {f}"),
            format!("select pg_catalog.{f}"),
            format!("select \"{name}\"{args}"),
            format!("select upper({f}::text)"),
            format!("select 1 where {f} is not null"),
            format!("select * from (select {f}) s"),
            format!("with w as (select {f} as v) select v from w"),
            format!("select /* c */ {f} -- d"),
            format!("select array[{f}]"),
            format!("select case when true then {f} end"),
        ] {
            out.push(spelling);
        }
    }
    for setting in [
        "search_path",
        "role",
        "standard_conforming_strings",
        "default_transaction_read_only",
        "session_replication_role",
        "log_min_duration_statement",
        "statement_timeout",
        "application_name",
    ] {
        out.push(format!("set {setting} to default"));
        out.push(format!("set local {setting} to default"));
        out.push(format!("set \"{}\" to default", setting.to_uppercase()));
        out.push(format!("reset {setting}"));
        out.push(format!(
            "select set_config('{setting}', current_setting('{setting}'), false)"
        ));
        out.push(format!(
            "select set_config('{setting}', current_setting('{setting}'), true)"
        ));
    }
    out
}

async fn direct() -> Client {
    let (client, conn) = tokio_postgres::connect(
        "host=127.0.0.1 port=5432 user=postgres dbname=test sslmode=disable",
        NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    client
}

async fn texts(c: &Client, sql: &str) -> Vec<String> {
    c.simple_query(sql)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_owned())
                    .collect::<Vec<_>>()
                    .join("="),
            ),
            _ => None,
        })
        .collect()
}

/// What the server says a session did, read on that session after the statement.
#[derive(Debug, PartialEq)]
struct Effects {
    xid_assigned: bool,
    settings: Vec<String>,
    user: String,
    locks: Vec<String>,
    sequence: String,
}

async fn effects(c: &Client) -> Effects {
    Effects {
        xid_assigned: texts(c, "select txid_current_if_assigned() is not null").await
            == ["t"],
        settings: texts(
            c,
            "select name || '=' || setting from pg_settings where source = 'session' or name in ('role', 'session_authorization', 'transaction_read_only', 'default_transaction_read_only') order by 1",
        )
        .await,
        user: texts(c, "select current_user::text").await.join(""),
        locks: texts(
            c,
            "select locktype || ':' || mode from pg_locks where pid = pg_backend_pid() and (locktype in ('advisory', 'tuple', 'transactionid') or (locktype = 'relation' and mode not in ('AccessShareLock'))) order by 1",
        )
        .await,
        sequence: texts(c, "select last_value || ':' || is_called from diff_seq")
            .await
            .join(""),
    }
}

#[tokio::test]
async fn allowed_statements_do_only_what_they_were_classified_as() {
    let setup = direct().await;
    setup
        .batch_execute(
            "drop view if exists diff_v; drop table if exists diff_t; drop sequence if exists diff_seq;
             create table diff_t (id int primary key, note text, pan text);
             insert into diff_t values (1, 'one', '4111111111111111'), (2, 'two', null), (3, 'three', null);
             create view diff_v as select id, note from diff_t;
             create sequence diff_seq;
             create or replace function diff_fn() returns int language sql volatile
               as 'insert into diff_t values (999, ''fn'', null) on conflict do nothing returning 1';",
        )
        .await
        .unwrap();
    let policy = Policy::new(RuleSet::load(&["config/policies/agents.yaml"]).unwrap());
    let agent = Identity::static_login("diff-agent", &["ai-agents".to_owned()]);
    let mut allowed = 0;
    let mut wrong = Vec::new();
    let generated = generated();
    let corpus: Vec<&str> = CORPUS
        .iter()
        .copied()
        .chain(generated.iter().map(String::as_str))
        .collect();
    assert!(corpus.len() >= 300, "{} statements", corpus.len());
    for sql in corpus {
        let decision = policy
            .decide(&agent, "test", sql, SqlDialect::Postgres)
            .decision;
        if decision.action != Action::Allow {
            continue;
        }
        allowed += 1;
        // A fresh session per statement; its effects are read inside the same transaction,
        // then rolled back (a statement that ends the transaction itself is run in one too:
        // COMMIT/ROLLBACK there end the test's block, which the checks then see).
        let c = direct().await;
        let before = effects(&c).await;
        c.batch_execute("begin").await.unwrap();
        let inside_before = effects(&c).await;
        let _ = c.simple_query(sql).await;
        // A failed statement aborts the block: its effects are nil, read after a rollback.
        let after = match c.simple_query("select 1").await {
            Ok(_) => effects(&c).await,
            Err(_) => {
                c.batch_execute("rollback").await.unwrap();
                let e = effects(&c).await;
                c.batch_execute("begin").await.unwrap();
                e
            }
        };
        let _ = c.batch_execute("rollback").await;
        let allowed_settings = |e: &Effects| -> Vec<String> {
            e.settings
                .iter()
                .filter(|s| {
                    let name = s.split('=').next().unwrap_or("").to_lowercase();
                    // These sessions start read-write: BEGIN READ ONLY only restricts them.
                    name != "transaction_read_only" && !policy.rules().setting_allowed(&name)
                })
                .cloned()
                .collect()
        };
        let mut problems = Vec::new();
        if after.xid_assigned {
            problems.push("assigned a transaction id (wrote)".to_owned());
        }
        if allowed_settings(&after) != allowed_settings(&inside_before)
            && allowed_settings(&after) != allowed_settings(&before)
        {
            problems.push(format!(
                "changed protected settings: {:?} -> {:?}",
                allowed_settings(&inside_before),
                allowed_settings(&after)
            ));
        }
        if after.user != before.user {
            problems.push(format!("changed role to {}", after.user));
        }
        if after.locks != inside_before.locks {
            problems.push(format!("took locks {:?}", after.locks));
        }
        if after.sequence != before.sequence {
            problems.push(format!("advanced a sequence: {}", after.sequence));
        }
        if !problems.is_empty() {
            wrong.push(format!("{sql}: {}", problems.join("; ")));
        }
    }
    let rows = texts(&setup, "select count(*) from diff_t").await;
    assert_eq!(rows, ["3"], "the corpus changed diff_t");
    assert!(
        allowed >= 60,
        "only {allowed} statements allowed: the test would prove little"
    );
    assert!(
        wrong.is_empty(),
        "{} allowed statements did more than read:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
