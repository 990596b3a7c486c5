//! What a statement does, read from its syntax tree: PostgreSQL statements with PostgreSQL's own
//! grammar ([`super::postgres`]), MySQL statements with MariaDB's lexical rules and sqlparser
//! ([`super::mysql`]). This module holds what both share: the kinds, the classification, the
//! errors, and the dispatch.
//!
//! Every statement of a message is parsed; each tree is walked whole (CTEs, subqueries, nested
//! data-modifying statements, expressions anywhere) for the statement kinds, the tables
//! touched, the functions called and the conditions that make bulk export or mass change
//! visible. What does not parse, or parses into a statement tollgate does not know, is an
//! error: the engine refuses it unless a rule explicitly allows unparsed SQL.

use std::collections::BTreeSet;

use serde::Serialize;

/// What kind of thing a statement does. A statement can be several (`WITH d AS (DELETE …)
/// SELECT` reads and writes).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// SELECT, TABLE, VALUES, SHOW-like reads of data, cursors.
    Read,
    /// INSERT, UPDATE, DELETE, MERGE, TRUNCATE.
    Write,
    /// Schema changes: CREATE/ALTER/DROP of tables, views, indexes, schemas, … and SELECT INTO.
    Ddl,
    /// Privileges and identity: GRANT, REVOKE, roles, users, SET ROLE, SET SESSION AUTHORIZATION.
    Dcl,
    /// COPY … FROM (data into the database).
    CopyIn,
    /// COPY … TO (data out of the database).
    CopyOut,
    /// DO blocks, CALL, CREATE FUNCTION / PROCEDURE.
    Procedural,
    /// SET, SHOW, RESET, DISCARD, PREPARE, DEALLOCATE, LISTEN, NOTIFY, USE.
    Session,
    /// BEGIN, COMMIT, ROLLBACK, SAVEPOINT.
    Transaction,
    /// VACUUM, ANALYZE, ALTER SYSTEM, KILL, CHECKPOINT, LOAD.
    Admin,
    /// A call of a function not known to be free of effects: user-defined functions,
    /// volatile built-ins (`setval`, `pg_create_restore_point`), anything unknown.
    Call,
    /// Row or table locks and advisory locks: `FOR UPDATE/SHARE`, `LOCK`, `pg_advisory_lock`.
    Lock,
    /// A change to a setting the policy's `settings` allowlist does not list (decided by the
    /// engine from [`Classified::settings`]).
    Setting,
}

impl Kind {
    pub const ALL: [Kind; 13] = [
        Kind::Read,
        Kind::Write,
        Kind::Ddl,
        Kind::Dcl,
        Kind::CopyIn,
        Kind::CopyOut,
        Kind::Procedural,
        Kind::Session,
        Kind::Transaction,
        Kind::Admin,
        Kind::Call,
        Kind::Lock,
        Kind::Setting,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Read => "read",
            Kind::Write => "write",
            Kind::Ddl => "ddl",
            Kind::Dcl => "dcl",
            Kind::CopyIn => "copy_in",
            Kind::CopyOut => "copy_out",
            Kind::Procedural => "procedural",
            Kind::Session => "session",
            Kind::Transaction => "transaction",
            Kind::Admin => "admin",
            Kind::Call => "call",
            Kind::Lock => "lock",
            Kind::Setting => "setting",
        }
    }
}

/// Which SQL dialect to parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SqlDialect {
    Postgres,
    MySql,
}

/// The classification of one statement.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Classified {
    pub kinds: BTreeSet<Kind>,
    /// Tables touched, lower-cased unless quoted, schema-qualified when written so.
    pub tables: BTreeSet<String>,
    /// Functions called anywhere (also table functions in FROM).
    pub functions: BTreeSet<String>,
    /// UPDATE or DELETE without WHERE, or TRUNCATE.
    pub unbounded_write: bool,
    /// Tables read by a SELECT with neither WHERE nor LIMIT.
    pub unfiltered_reads: BTreeSet<String>,
    /// Columns used in anything but a bare select-list item: in a function, a cast, an
    /// operator, a WHERE, JOIN, GROUP BY or ORDER BY (`substring(pan, 1, 12)`,
    /// `WHERE pan LIKE '4111%'`). Reading a masked column bare is safe; computing over it can
    /// reveal its digits.
    pub computed_columns: BTreeSet<String>,
    /// The top-level LIMIT of a read, when it is a literal.
    pub limit: Option<u64>,
    pub select_into: bool,
    /// COPY … TO/FROM PROGRAM, or a server-side file.
    pub copy_program: bool,
    pub copy_file: bool,
    /// SQL-level PREPARE: the name it defines.
    pub prepares: Option<String>,
    /// SQL-level EXECUTE: the prepared statement it runs.
    pub executes: Option<String>,
    /// DEALLOCATE: the name it drops (`None` with `deallocates_all`).
    pub deallocates: Option<String>,
    pub deallocates_all: bool,
    /// Settings the statement changes (`SET`, `RESET`, `set_config`, `BEGIN … READ WRITE`),
    /// folded to lower case as PostgreSQL folds setting names; `all` for `RESET ALL`, `?` for
    /// one named by an expression.
    pub settings: BTreeSet<String>,
    /// Names after a dot (`t.f`, `(x).f`): a column or composite field, or a function applied
    /// to what precedes it (PostgreSQL); judged against the target's functions.
    pub field_names: BTreeSet<String>,
    /// Types named anywhere (casts, `'x'::t`, arrays): a cast to a user type may run user code.
    pub types: BTreeSet<String>,
    /// Whether the classification read a literal's value (a `set_config` setting name): it is
    /// then never shared with texts that differ in literals.
    #[serde(skip)]
    pub reads_literals: bool,
    /// Read as MySQL/MariaDB: its settings are judged against the policy's MySQL settings
    /// allowlist.
    #[serde(skip)]
    pub mysql: bool,
}

/// Why a statement could not be classified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("SQL that does not parse: {0}")]
    Parse(String),
    #[error("a statement tollgate does not classify: {0}")]
    Unsupported(String),
    /// Too long or too deeply nested to analyse safely (SQLSTATE 54001).
    #[error("statement too complex: {0}")]
    TooComplex(String),
}

impl Error {
    /// What the statement probably is, from its first words, for messages and for rules that
    /// allow unparsed SQL by kind. Never used to allow anything by itself.
    pub fn guess(sql: &str) -> Option<Kind> {
        let words: Vec<String> = strip_leading_comments(sql)
            .split_whitespace()
            .take(2)
            .map(|w| w.to_ascii_lowercase())
            .collect();
        match words.first().map(String::as_str) {
            Some("do") => Some(Kind::Procedural),
            Some("alter") if words.get(1).map(String::as_str) == Some("system") => {
                Some(Kind::Admin)
            }
            Some("checkpoint" | "load" | "cluster" | "reindex") => Some(Kind::Admin),
            _ => None,
        }
    }
}

fn strip_leading_comments(sql: &str) -> &str {
    let mut s = sql.trim_start();
    loop {
        if let Some(rest) = s.strip_prefix("--") {
            s = rest.split_once('\n').map_or("", |(_, r)| r).trim_start();
        } else if let Some(rest) = s.strip_prefix("/*") {
            s = rest.split_once("*/").map_or("", |(_, r)| r).trim_start();
        } else {
            return s;
        }
    }
}

/// A key under which statements that differ only in literal values share one classification
/// (see [`super::postgres::fingerprint`] and [`super::mysql::fingerprint`]). `None` when the
/// text does not tokenize (then it is classified, and refused, on its own).
pub fn fingerprint(sql: &str, dialect: SqlDialect) -> Option<String> {
    match dialect {
        SqlDialect::Postgres => super::postgres::fingerprint(sql),
        SqlDialect::MySql => super::mysql::fingerprint(sql),
    }
}

/// Parses `sql` (one or more statements) and classifies each: PostgreSQL with PostgreSQL's own
/// grammar ([`super::postgres`]), MySQL with MariaDB's lexical rules and sqlparser's MySQL
/// dialect ([`super::mysql`]).
pub fn classify(sql: &str, dialect: SqlDialect) -> Result<Vec<Classified>, Error> {
    let list = match dialect {
        SqlDialect::Postgres => super::postgres::classify(sql)?,
        SqlDialect::MySql => super::mysql::classify(sql)?,
    };
    Ok(lowercase_functions(list))
}

/// Function names compare case-insensitively in rules.
fn lowercase_functions(mut list: Vec<Classified>) -> Vec<Classified> {
    for c in &mut list {
        if c.functions
            .iter()
            .any(|f| f.chars().any(char::is_uppercase))
        {
            c.functions = c.functions.iter().map(|f| f.to_lowercase()).collect();
        }
    }
    list
}

#[cfg(test)]
mod tests;
