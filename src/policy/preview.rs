//! Which held statements may be shown to approvers with the server's plan (EXPLAIN without
//! ANALYZE, which plans and never executes): exactly one UPDATE, DELETE, INSERT … SELECT or
//! MERGE, classified as reading and writing only. A statement calling any function outside the
//! reviewed read-only list (a `call`), taking locks or changing settings is not planned:
//! planning folds constant expressions, and a function call there is code the agent chose.

use super::classify::SqlDialect;

/// `Ok` when the statement may be planned for a preview; otherwise the line approvers see.
pub fn check(sql: &str, dialect: SqlDialect, kinds: &[&str]) -> Result<(), &'static str> {
    if kinds.contains(&"call") {
        return Err("no preview: the statement calls functions");
    }
    if !kinds.contains(&"write") || kinds.iter().any(|k| !matches!(*k, "read" | "write")) {
        return Err("no preview: only UPDATE, DELETE, INSERT … SELECT and MERGE are previewed");
    }
    match dialect {
        SqlDialect::Postgres => pg_statement(sql),
        SqlDialect::MySql => mysql_statement(sql),
    }
}

const ONLY: &str = "no preview: only UPDATE, DELETE, INSERT … SELECT and MERGE are previewed";

/// MySQL: the text as MariaDB's lexer reads it (`policy::mysql::lexer`), one statement, parsed
/// by sqlparser.
fn mysql_statement(sql: &str) -> Result<(), &'static str> {
    use sqlparser::ast::{SetExpr, Statement};
    let lexed =
        super::mysql::lexer::lex(sql).map_err(|_| "no preview: the statement does not parse")?;
    let [one] = lexed.as_slice() else {
        return Err("no preview: only a statement on its own is previewed");
    };
    let parsed =
        sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::MySqlDialect {}, &one.text)
            .map_err(|_| "no preview: the statement does not parse")?;
    match parsed.as_slice() {
        [Statement::Update { .. } | Statement::Delete(_)] => Ok(()),
        [Statement::Insert(insert)] => match insert.source.as_deref().map(|q| q.body.as_ref()) {
            Some(SetExpr::Values(_)) | None => Err(ONLY),
            Some(_) => Ok(()),
        },
        _ => Err(ONLY),
    }
}

fn pg_statement(sql: &str) -> Result<(), &'static str> {
    let parsed = pg_query::parse(sql, 0).map_err(|_| "no preview: the statement does not parse")?;
    let [raw] = parsed.protobuf.stmts.as_slice() else {
        return Err("no preview: only a statement on its own is previewed");
    };
    let tree = serde_json::to_value(&raw.stmt).map_err(|_| ONLY)?;
    let node = |v: &serde_json::Value| -> Option<(String, serde_json::Value)> {
        let (name, body) = v.get("node")?.as_object()?.iter().next()?;
        Some((name.clone(), body.clone()))
    };
    match node(&tree) {
        Some((name, _)) if matches!(name.as_str(), "UpdateStmt" | "DeleteStmt" | "MergeStmt") => {
            Ok(())
        }
        Some((name, body)) if name == "InsertStmt" => {
            match body.get("select_stmt").and_then(node) {
                Some((select, s))
                    if select == "SelectStmt"
                        && s.get("values_lists")
                            .and_then(|v| v.as_array())
                            .is_none_or(Vec::is_empty) =>
                {
                    Ok(())
                }
                _ => Err(ONLY),
            }
        }
        _ => Err(ONLY),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_four_statements_without_calls_are_planned() {
        let w = &["write"][..];
        let rw = &["read", "write"][..];
        let cases: &[(&str, &[&str], bool)] = &[
            ("delete from t where id = 1", w, true),
            ("/* reason: x */ update t set v = 2 where id < 10", w, true),
            ("insert into t select * from u", rw, true),
            (
                "merge into t using u on t.id = u.id when matched then delete",
                rw,
                true,
            ),
            ("insert into t values (1)", w, false),
            ("delete from t; delete from u", w, false),
            ("delete from t where f(id)", &["write", "call"], false),
            ("truncate t", w, false),
            ("select 1", &["read"], false),
            (
                "delete from t where id = 1 returning *",
                &["write", "lock"],
                false,
            ),
        ];
        for (sql, kinds, ok) in cases {
            assert_eq!(
                check(sql, SqlDialect::Postgres, kinds).is_ok(),
                *ok,
                "{sql}"
            );
        }
        assert_eq!(
            check(
                "delete from t where f(1)",
                SqlDialect::Postgres,
                &["write", "call"]
            ),
            Err("no preview: the statement calls functions")
        );
    }
}
