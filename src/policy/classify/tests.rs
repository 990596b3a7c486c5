//! Unit tests of `classify`.

use super::*;

fn one(sql: &str) -> Classified {
    let mut all = classify(sql, SqlDialect::Postgres).unwrap_or_else(|e| panic!("{sql}: {e}"));
    assert_eq!(all.len(), 1, "{sql}");
    all.remove(0)
}

fn kinds(sql: &str) -> Vec<Kind> {
    one(sql).kinds.into_iter().collect()
}

#[test]
fn kinds_of_statements() {
    use Kind::*;
    let cases: &[(&str, &[Kind])] = &[
        ("select 1", &[Read]),
        ("SELECT * FROM cards WHERE id = 1", &[Read]),
        ("insert into t values (1)", &[Write]),
        ("update t set a = 1 where id = 2", &[Write]),
        ("delete from t where id = 2", &[Write]),
        ("truncate t", &[Write]),
        (
            "with d as (delete from t returning *) select * from d",
            &[Read, Write],
        ),
        ("create table x (a int)", &[Ddl]),
        ("alter table x add column b int", &[Ddl]),
        ("drop table x", &[Ddl]),
        ("create index on x (a)", &[Ddl]),
        ("select * into newt from t", &[Ddl, Read]),
        ("grant select on t to bob", &[Dcl]),
        ("revoke all on t from bob", &[Dcl]),
        ("create role r", &[Dcl]),
        ("set role admin", &[Dcl]),
        ("set session authorization 'postgres'", &[Dcl]),
        ("set search_path = public", &[Session]),
        ("show search_path", &[Session]),
        ("reset all", &[Session]),
        ("begin", &[Transaction]),
        ("commit", &[Transaction]),
        ("rollback", &[Transaction]),
        ("savepoint a", &[Transaction]),
        ("copy t to stdout", &[CopyOut]),
        (
            "copy (select * from t) to stdout with (format csv)",
            &[CopyOut, Read],
        ),
        ("copy t from stdin", &[CopyIn]),
        ("copy t to program 'curl evil'", &[Admin, CopyOut]),
        (
            "create function f() returns int language sql as 'select 1'",
            &[Procedural],
        ),
        ("call p()", &[Procedural]),
        ("vacuum t", &[Admin]),
        ("analyze t", &[Admin]),
        ("lock table t", &[Lock]),
        ("listen ch", &[Session]),
        ("notify ch, 'x'", &[Call]),
        ("prepare p as delete from t", &[Session, Write]),
        ("execute p", &[Session]),
        ("deallocate all", &[Session]),
        ("explain analyze delete from t", &[Read, Write]),
    ];
    for (sql, expected) in cases {
        let mut expected = expected.to_vec();
        expected.sort();
        assert_eq!(kinds(sql), expected, "{sql}");
    }
}

#[test]
fn tables_functions_and_conditions() {
    let c =
        one("select pg_catalog.PG_READ_FILE('/etc/passwd'), \"Mixed\"() from s.t join u on true");
    assert!(c.functions.contains("pg_catalog.pg_read_file"), "{c:?}");
    // Function names compare case-insensitively in rules: kept in lower case.
    assert!(c.functions.contains("mixed"), "{c:?}");
    assert!(c.tables.contains("s.t") && c.tables.contains("u"), "{c:?}");
    assert!(c.unfiltered_reads.contains("s.t"));

    let c = one("select * from pg_ls_dir('/')");
    assert!(c.functions.contains("pg_ls_dir"), "{c:?}");

    let c = one("select * from cards where id in (select lo_export(1, '/tmp/x'))");
    assert!(c.functions.contains("lo_export"));
    assert!(c.unfiltered_reads.is_empty());

    assert!(one("update t set a = 1").unbounded_write);
    assert!(!one("update t set a = 1 where b").unbounded_write);
    assert!(one("delete from t").unbounded_write);
    assert!(one("with x as (delete from t) select 1").unbounded_write);
    assert_eq!(one("select * from t limit 10").limit, Some(10));
    assert!(one("select * from t limit 10").unfiltered_reads.is_empty());
    assert!(one("copy t to program 'x'").copy_program);
    assert!(one("select * into x from t").select_into);
    assert_eq!(one("prepare q as select 1").prepares.as_deref(), Some("q"));
    assert_eq!(one("execute q").executes.as_deref(), Some("q"));
}

#[test]
fn columns_computed_over_or_filtered_on() {
    let computed = |sql: &str| one(sql).computed_columns.into_iter().collect::<Vec<_>>();
    assert!(computed("select pan from cards").is_empty());
    assert!(computed("select cards.pan as x, * from cards").is_empty());
    assert_eq!(computed("select pan from cards where id = 1"), ["id"]);
    assert_eq!(computed("select substring(pan, 1, 12) from cards"), ["pan"]);
    assert_eq!(
        computed("select * from cards where pan like '4111%'"),
        ["pan"]
    );
    assert_eq!(computed("select pan::text || '' from cards"), ["pan"]);
    assert_eq!(
        computed("select ascii(substr(c.pan, 7, 1)) from cards c"),
        ["c.pan"]
    );
    assert_eq!(computed("select count(*) from cards group by pan"), ["pan"]);
    assert_eq!(computed("select pan, pan || 'x' from cards"), ["pan"]);
    assert_eq!(
        computed("select (select pan from cards limit 1) || 'x'"),
        ["pan"]
    );
    assert_eq!(
        computed("select substring(x, 1, 12) from (select pan as x from cards) t"),
        ["pan", "x"]
    );
    assert_eq!(
        computed("with c as (select pan from cards) select pan from c"),
        ["pan"]
    );
    assert!(computed("select pan from a union all select pan from b").is_empty());
}

#[test]
fn fingerprints_ignore_literal_values_but_not_limits_or_names() {
    let fp = |sql: &str| fingerprint(sql, SqlDialect::Postgres).unwrap();
    assert_eq!(
        fp("select * from t where id = 1"),
        fp("SELECT *  FROM t WHERE id = 42 -- c")
    );
    assert_eq!(fp("select 'a'"), fp("select $$b$$"));
    assert_ne!(
        fp("select * from t limit 10"),
        fp("select * from t limit 5000")
    );
    assert_ne!(fp("select * from t1"), fp("select * from t2"));
    assert_ne!(fp("select \"X\"()"), fp("select \"Y\"()"));
    assert_ne!(fp("select a.b"), fp("select ab"));
    assert_ne!(
        fp("select \"Pan\" from t"),
        fp("select pan from t"),
        "quoted names keep case"
    );
    assert!(fingerprint("select 'unterminated", SqlDialect::Postgres).is_none());
}

#[test]
fn several_statements_and_refusals() {
    let all = classify("select 1; drop table t", SqlDialect::Postgres).unwrap();
    assert_eq!(all.len(), 2);
    assert!(all[1].kinds.contains(&Kind::Ddl));
    // PostgreSQL's own grammar reads DO blocks (procedural) and SET ROLE.
    assert_eq!(
        classify("do $$ begin perform 1; end $$", SqlDialect::Postgres).unwrap()[0].kinds,
        [Kind::Procedural].into()
    );
    assert_eq!(
        Error::guess("  /* x */ DO $$ begin end $$"),
        Some(Kind::Procedural)
    );
    assert_eq!(Error::guess("alter system set x = 1"), Some(Kind::Admin));
    assert!(classify("selec 1", SqlDialect::Postgres).is_err());
    assert!(
        classify("SET ROLE TO admin", SqlDialect::Postgres).unwrap()[0]
            .kinds
            .contains(&Kind::Dcl)
    );
}

/// MariaDB runs the text of `/*! … */` comments depending on its version: refused on MySQL,
/// only a comment on PostgreSQL.
#[test]
fn executable_comments() {
    assert!(classify("select 1 /*! ; drop table t */", SqlDialect::MySql).is_err());
    assert!(classify("select 1 /*!50000 , sleep(1) */", SqlDialect::MySql).is_err());
    let r = classify("select left(`PAN`, 15) from t", SqlDialect::MySql).unwrap();
    assert!(
        r[0].computed_columns.contains("pan"),
        "{:?}",
        r[0].computed_columns
    );
    let r = classify("select 1 /*! ; drop table t */", SqlDialect::Postgres).unwrap();
    assert_eq!(r.len(), 1);
}
