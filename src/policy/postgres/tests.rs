//! Unit tests of `postgres`: what each statement is classified as.

use super::*;

fn one(sql: &str) -> Classified {
    let mut all = classify(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    assert_eq!(all.len(), 1, "{sql}");
    all.remove(0)
}

#[test]
fn attribute_notation_is_a_call() {
    let c = one("SELECT ('postgresql.conf'::text).pg_read_file");
    assert!(c.functions.contains("pg_read_file"), "{c:?}");
    assert!(c.kinds.contains(&Kind::Call));
    let c = one("SELECT t.pg_ls_dir FROM (SELECT '.'::text) t");
    assert!(c.functions.contains("pg_ls_dir"), "{c:?}");
    // An ordinary column is no call.
    let c = one("SELECT t.note FROM t");
    assert!(c.functions.is_empty(), "{c:?}");
}

#[test]
fn settings_fold_and_read_their_literal_names() {
    let c = one("SET \"Role\" = 'x'");
    assert!(
        c.settings.contains("role") && c.kinds.contains(&Kind::Dcl),
        "{c:?}"
    );
    let c = one("select set_config('JIT', 'off', false) limit 3");
    assert!(c.settings.contains("jit") && c.reads_literals, "{c:?}");
    assert!(!c.kinds.contains(&Kind::Call), "{c:?}");
    assert_eq!(c.limit, Some(3));
    assert!(
        one("select set_config(x, 'off', false) from t")
            .settings
            .contains("?")
    );
    assert!(
        one("BEGIN READ WRITE")
            .settings
            .contains("transaction_read_only")
    );
    assert!(one("BEGIN READ ONLY").settings.is_empty());
    assert!(one("RESET ALL").settings.contains("all"));
}

#[test]
fn constant_conditions_are_unbounded() {
    for sql in [
        "update t set a = 1 where true",
        "delete from t where 1 = 1",
        "delete from t",
        "merge into t using s on true when matched then delete",
    ] {
        assert!(one(sql).unbounded_write, "{sql}");
    }
    for sql in [
        "update t set a = 1 where id = 3",
        "merge into t using s on t.id = s.id when matched then delete",
    ] {
        assert!(!one(sql).unbounded_write, "{sql}");
    }
}

#[test]
fn whole_rows_and_renamed_columns_carry_every_column() {
    for sql in [
        "select substr(c::text, 1, 8) from cards c",
        "select row_to_json(c) from cards c",
        "select substr(x, 1, 8) from cards as t(i, x)",
        "select (c.*)::text from cards c",
    ] {
        assert!(one(sql).computed_columns.contains("*"), "{sql}");
    }
    for sql in [
        "select * from cards",
        "select c.* from cards c",
        "with x as (select * from cards) select * from x",
        "insert into t select * from s where ok returning *",
    ] {
        assert!(!one(sql).computed_columns.contains("*"), "{sql}");
    }
}

#[test]
fn too_complex_statements_are_refused() {
    let deep = format!("select {}1{}", "abs(".repeat(10_000), ")".repeat(10_000));
    assert!(matches!(classify(&deep), Err(Error::TooComplex(_))));
    let long = format!("select 1{}", "+1".repeat(50_000));
    assert!(matches!(classify(&long), Err(Error::TooComplex(_))));
    let huge = format!("select '{}'", "x".repeat(MAX_STATEMENT_BYTES));
    assert!(matches!(classify(&huge), Err(Error::TooComplex(_))));
    // A moderately nested expression is classified.
    let ok = format!("select {}1{}", "abs(".repeat(20), ")".repeat(20));
    assert!(classify(&ok).is_ok());
}

#[test]
fn fingerprints_keep_what_classification_reads() {
    assert_eq!(fingerprint("select 1"), fingerprint("SELECT 2 -- x"));
    assert_ne!(
        fingerprint("select 1 limit 1"),
        fingerprint("select 1 limit 2")
    );
    assert_ne!(fingerprint("select \"A\"()"), fingerprint("select a()"));
    assert_eq!(fingerprint(" \u{b} "), Some(String::new()));
}
