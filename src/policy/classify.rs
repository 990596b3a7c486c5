//! What a statement does, read from its syntax tree: PostgreSQL statements with PostgreSQL's own
//! grammar ([`super::postgres`]), MySQL statements with sqlparser (this module).
//!
//! Every statement of a message is parsed; a visitor walks each tree (CTEs, subqueries, nested
//! data-modifying statements, expressions anywhere) and collects the statement kinds, the
//! tables touched, the functions called and the conditions that make bulk export or mass
//! change visible. What does not parse, or parses into a statement this module does not know,
//! is an error: the engine refuses it unless a rule explicitly allows unparsed SQL.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use serde::Serialize;
use sqlparser::ast::{
    CopySource, CopyTarget, Expr, LimitClause, ObjectName, ObjectNamePart, ObjectType, Query,
    Select, Set, SetExpr, Statement, TableFactor, Value, Visit, Visitor,
};
use sqlparser::dialect::{Dialect, MySqlDialect, PostgreSqlDialect};
use sqlparser::parser::Parser;

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

/// Whether `sql` holds a PostgreSQL Unicode-escaped identifier (`U&"d\0061t"`). sqlparser reads
/// that as the operator `&` between `U` and a quoted identifier whose escapes it leaves
/// undecoded, while PostgreSQL decodes it (`U&"pg\005fread_file"` is `pg_read_file`): a
/// parser differential, so such SQL is refused rather than misread.
pub fn has_unicode_identifier(sql: &str) -> bool {
    let b = sql.as_bytes();
    b.windows(3).enumerate().any(|(i, w)| {
        (w[0] == b'u' || w[0] == b'U')
            && w[1] == b'&'
            && w[2] == b'"'
            && (i == 0
                || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_' || b[i - 1] == b'$'))
    })
}

/// A key under which statements that differ only in literal values share one classification:
/// sqlparser's own tokens, whitespace and comments dropped, string and number literals
/// replaced by their kind, except the numbers of LIMIT, OFFSET and FETCH (rows_over reads
/// them). No classification depends on a literal's value otherwise (kinds, tables,
/// functions, conditions come from keywords and identifiers), so the classification of one
/// text is the classification of all texts with its fingerprint. `None` when the text does
/// not tokenize (then it is classified, and refused, on its own).
pub fn fingerprint(sql: &str, dialect: SqlDialect) -> Option<String> {
    use sqlparser::tokenizer::{Token, Tokenizer};
    if dialect == SqlDialect::Postgres {
        return super::postgres::fingerprint(sql);
    }
    let d: &dyn Dialect = match dialect {
        SqlDialect::Postgres => &PostgreSqlDialect {},
        SqlDialect::MySql => &MySqlDialect {},
    };
    let tokens = Tokenizer::new(d, sql).tokenize().ok()?;
    let mut out = String::with_capacity(sql.len());
    let mut keeps_number = false;
    for token in &tokens {
        let text = match token {
            Token::Whitespace(_) => continue,
            Token::SingleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::EscapedStringLiteral(_)
            | Token::NationalStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_) => "\u{2}s".to_owned(),
            Token::Number(..) if !keeps_number => "\u{2}n".to_owned(),
            // Unquoted words are case-insensitive (keywords, and identifiers fold to lower case).
            Token::Word(w) if w.quote_style.is_none() => w.value.to_lowercase(),
            other => other.to_string(),
        };
        keeps_number = matches!(token, Token::Word(w) if w.quote_style.is_none()
            && ["limit", "offset", "fetch", "first", "next", "top"].iter().any(|k| w.value.eq_ignore_ascii_case(k)));
        out.push_str(&text);
        out.push('\u{1}');
    }
    Some(out)
}

/// Operators a MySQL statement may hold: sqlparser builds chains of them as nested trees,
/// which are walked and dropped recursively.
const MAX_MYSQL_OPERATORS: usize = 1_000;

/// Bounds the work a MySQL statement can cause before it is parsed: its size, and the number
/// of operator tokens (counted by the tokenizer, which does not recurse).
fn bounded_for_sqlparser(sql: &str, dialect: &dyn Dialect) -> Result<(), Error> {
    use sqlparser::tokenizer::{Token, Tokenizer};
    if sql.len() > super::postgres::MAX_STATEMENT_BYTES {
        return Err(Error::TooComplex(format!(
            "the statement is {} bytes; at most {} are analysed",
            sql.len(),
            super::postgres::MAX_STATEMENT_BYTES
        )));
    }
    let tokens = Tokenizer::new(dialect, sql)
        .tokenize()
        .map_err(|e| Error::Parse(e.to_string()))?;
    let operators = tokens
        .iter()
        .filter(|t| {
            !matches!(
                t,
                Token::Whitespace(_)
                    | Token::Word(_)
                    | Token::Number(..)
                    | Token::Comma
                    | Token::SemiColon
                    | Token::RParen
                    | Token::SingleQuotedString(_)
                    | Token::DoubleQuotedString(_)
                    | Token::HexStringLiteral(_)
                    | Token::NationalStringLiteral(_)
            )
        })
        .count();
    if operators > MAX_MYSQL_OPERATORS {
        return Err(Error::TooComplex(format!(
            "{operators} operators; at most {MAX_MYSQL_OPERATORS} are analysed"
        )));
    }
    Ok(())
}

/// Parses `sql` (one or more statements) and classifies each: PostgreSQL with PostgreSQL's own
/// grammar ([`super::postgres`]), MySQL with sqlparser's MySQL dialect.
pub fn classify(sql: &str, dialect: SqlDialect) -> Result<Vec<Classified>, Error> {
    if dialect == SqlDialect::Postgres {
        return super::postgres::classify(sql).map(lowercase_functions);
    }
    // MySQL column names are case-insensitive, quoted or not.
    let fold_columns = dialect == SqlDialect::MySql;
    let dialect: &dyn Dialect = match dialect {
        SqlDialect::Postgres => &PostgreSqlDialect {},
        SqlDialect::MySql => &MySqlDialect {},
    };
    bounded_for_sqlparser(sql, dialect)?;
    let statements = Parser::parse_sql(dialect, sql).map_err(|e| Error::Parse(e.to_string()))?;
    let classified: Result<Vec<Classified>, Error> = statements
        .iter()
        .map(|s| {
            classify_one(s).map(|mut c| {
                if fold_columns {
                    c.computed_columns = c
                        .computed_columns
                        .into_iter()
                        .map(|x| x.to_lowercase())
                        .collect();
                }
                c
            })
        })
        .collect();
    classified.map(lowercase_functions)
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

fn classify_one(statement: &Statement) -> Result<Classified, Error> {
    let mut c = Collector {
        out: Classified::default(),
        limits: Vec::new(),
        unsupported: None,
        depth: 0,
        bare: std::collections::HashSet::new(),
    };
    let _ = statement.visit(&mut c);
    if let Some(what) = c.unsupported {
        return Err(Error::Unsupported(what));
    }
    // The top-level LIMIT of a read.
    if let Statement::Query(q) = statement {
        c.out.limit = literal_limit(q);
    }
    Ok(c.out)
}

struct Collector {
    out: Classified,
    /// For each enclosing query: whether it has a LIMIT.
    limits: Vec<bool>,
    unsupported: Option<String>,
    depth: usize,
    /// Addresses of the expressions that are bare column references in a select list.
    bare: std::collections::HashSet<usize>,
}

/// A column reference's name, normalised like other identifiers.
fn column_name(expr: &Expr) -> Option<String> {
    let ident = |id: &sqlparser::ast::Ident| {
        if id.quote_style.is_some() {
            id.value.clone()
        } else {
            id.value.to_lowercase()
        }
    };
    match expr {
        Expr::Identifier(id) => Some(ident(id)),
        Expr::CompoundIdentifier(ids) => Some(ids.iter().map(ident).collect::<Vec<_>>().join(".")),
        _ => None,
    }
}

/// An identifier as PostgreSQL resolves it: unquoted names fold to lower case.
pub fn normalize(name: &ObjectName) -> String {
    name.0
        .iter()
        .map(|part| match part {
            ObjectNamePart::Identifier(id) if id.quote_style.is_some() => id.value.clone(),
            ObjectNamePart::Identifier(id) => id.value.to_lowercase(),
            ObjectNamePart::Function(f) => f.name.value.to_lowercase(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

fn literal_limit(q: &Query) -> Option<u64> {
    let limit = match &q.limit_clause {
        Some(LimitClause::LimitOffset { limit: Some(l), .. }) => l,
        Some(LimitClause::OffsetCommaLimit { limit, .. }) => limit,
        _ => return None,
    };
    match limit {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => n.parse().ok(),
            _ => None,
        },
        _ => None,
    }
}

fn has_limit(q: &Query) -> bool {
    matches!(
        &q.limit_clause,
        Some(LimitClause::LimitOffset { limit: Some(_), .. })
            | Some(LimitClause::OffsetCommaLimit { .. })
    ) || q.fetch.is_some()
}

fn variant_name(statement: &Statement) -> String {
    let debug = format!("{statement:?}");
    debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("unknown")
        .to_owned()
}

impl Collector {
    fn kind(&mut self, kind: Kind) {
        self.out.kinds.insert(kind);
    }

    fn table(&mut self, name: &ObjectName) {
        self.out.tables.insert(normalize(name));
    }

    fn statement(&mut self, statement: &Statement) {
        use Statement as S;
        match statement {
            S::Query(_) => self.kind(Kind::Read),
            S::Insert(_) => self.kind(Kind::Write),
            S::Update(u) => {
                self.kind(Kind::Write);
                if u.selection.is_none() {
                    self.out.unbounded_write = true;
                }
            }
            S::Delete(d) => {
                self.kind(Kind::Write);
                if d.selection.is_none() {
                    self.out.unbounded_write = true;
                }
            }
            S::Merge(_) => self.kind(Kind::Write),
            S::Truncate(t) => {
                self.kind(Kind::Write);
                self.out.unbounded_write = true;
                for target in &t.table_names {
                    self.table(&target.name);
                }
            }
            S::Copy {
                source, to, target, ..
            } => {
                self.kind(if *to { Kind::CopyOut } else { Kind::CopyIn });
                if let CopySource::Table { table_name, .. } = source {
                    self.table(table_name);
                }
                match target {
                    CopyTarget::Program { .. } => {
                        self.out.copy_program = true;
                        self.kind(Kind::Admin);
                    }
                    CopyTarget::File { .. } => {
                        self.out.copy_file = true;
                        self.kind(Kind::Admin);
                    }
                    CopyTarget::Stdin | CopyTarget::Stdout => {}
                }
            }
            S::Set(set) => match set {
                Set::SetRole { .. } | Set::SetSessionAuthorization(_) => self.kind(Kind::Dcl),
                Set::SingleAssignment { variable, .. } => {
                    let name = normalize(variable);
                    if matches!(name.as_str(), "role" | "session_authorization") {
                        self.kind(Kind::Dcl);
                    } else {
                        self.kind(Kind::Session);
                    }
                }
                Set::ParenthesizedAssignments { variables, .. } => {
                    self.kind(Kind::Session);
                    if variables
                        .iter()
                        .any(|v| matches!(normalize(v).as_str(), "role" | "session_authorization"))
                    {
                        self.kind(Kind::Dcl);
                    }
                }
                _ => self.kind(Kind::Session),
            },
            S::ShowFunctions { .. }
            | S::ShowVariable { .. }
            | S::ShowStatus { .. }
            | S::ShowVariables { .. }
            | S::ShowCreate { .. }
            | S::ShowColumns { .. }
            | S::ShowCatalogs { .. }
            | S::ShowDatabases { .. }
            | S::ShowSchemas { .. }
            | S::ShowTables { .. }
            | S::ShowViews { .. }
            | S::ShowCollation { .. }
            | S::ShowCharset(_)
            | S::ShowObjects(_)
            | S::Reset(_)
            | S::Discard { .. }
            | S::LISTEN { .. }
            | S::UNLISTEN { .. }
            | S::NOTIFY { .. }
            | S::Use(_) => self.kind(Kind::Session),
            S::Prepare { name, .. } => {
                self.kind(Kind::Session);
                self.out.prepares = Some(name.value.to_lowercase());
            }
            S::Execute { name, .. } => {
                self.kind(Kind::Session);
                self.out.executes = name.as_ref().map(normalize);
            }
            S::Deallocate { name, .. } => {
                self.kind(Kind::Session);
                if name.value.eq_ignore_ascii_case("all") && name.quote_style.is_none() {
                    self.out.deallocates_all = true;
                } else {
                    self.out.deallocates = Some(name.value.to_lowercase());
                }
            }
            S::StartTransaction { .. }
            | S::Commit { .. }
            | S::Rollback { .. }
            | S::Savepoint { .. }
            | S::ReleaseSavepoint { .. } => self.kind(Kind::Transaction),
            S::Grant(_)
            | S::Revoke(_)
            | S::GrantRole(_)
            | S::RevokeRole(_)
            | S::CreateRole(_)
            | S::AlterRole { .. }
            | S::CreateUser(_)
            | S::AlterUser(_)
            | S::AlterDefaultPrivileges(_)
            | S::CreateUserMapping(_)
            | S::CreatePolicy(_)
            | S::AlterPolicy(_)
            | S::DropPolicy(_) => self.kind(Kind::Dcl),
            S::CreateFunction(_)
            | S::CreateProcedure { .. }
            | S::Call(_)
            | S::CreateTrigger(_)
            | S::CreateAggregate(_)
            | S::CreateMacro { .. } => self.kind(Kind::Procedural),
            S::Drop {
                object_type, names, ..
            } => {
                if matches!(object_type, ObjectType::Role | ObjectType::User) {
                    self.kind(Kind::Dcl);
                } else {
                    self.kind(Kind::Ddl);
                    for n in names {
                        self.table(n);
                    }
                }
            }
            S::CreateTable(_)
            | S::CreateView(_)
            | S::CreateVirtualTable { .. }
            | S::CreateIndex(_)
            | S::CreateSchema { .. }
            | S::CreateDatabase { .. }
            | S::CreateSequence { .. }
            | S::CreateType { .. }
            | S::CreateDomain(_)
            | S::CreateExtension(_)
            | S::DropExtension(_)
            | S::CreateCollation(_)
            | S::CreateServer(_)
            | S::CreateForeignTable(_)
            | S::CreateForeignDataWrapper(_)
            | S::CreateRule(_)
            | S::CreateOperator(_)
            | S::CreateOperatorFamily(_)
            | S::CreateOperatorClass(_)
            | S::CreateTextSearch(_)
            | S::AlterTable(_)
            | S::AlterSchema(_)
            | S::AlterIndex { .. }
            | S::AlterView(_)
            | S::AlterFunction(_)
            | S::AlterType(_)
            | S::AlterCollation(_)
            | S::AlterOperator(_)
            | S::AlterOperatorFamily(_)
            | S::AlterOperatorClass(_)
            | S::AlterTextSearch(_)
            | S::AlterTrigger(_)
            | S::DropFunction(_)
            | S::DropDomain(_)
            | S::DropProcedure { .. }
            | S::DropRule(_)
            | S::DropTrigger(_)
            | S::DropOperator(_)
            | S::DropOperatorFamily(_)
            | S::DropOperatorClass(_)
            | S::Comment { .. }
            | S::RenameTable(_)
            | S::RefreshMaterializedView(_) => self.kind(Kind::Ddl),
            S::Vacuum(_)
            | S::Analyze(_)
            | S::Lock(_)
            | S::LockTables { .. }
            | S::UnlockTables
            | S::Kill { .. }
            | S::LoadData { .. }
            | S::Load { .. } => self.kind(Kind::Admin),
            // Reads through a cursor; the query itself is visited.
            S::Declare { .. } | S::Fetch { .. } | S::Close { .. } => self.kind(Kind::Read),
            // The inner statement is visited and classified; EXPLAIN ANALYZE runs it.
            S::Explain { .. } | S::ExplainTable { .. } => self.kind(Kind::Read),
            other => {
                if self.unsupported.is_none() {
                    self.unsupported = Some(variant_name(other));
                }
            }
        }
    }
}

impl Visitor for Collector {
    type Break = ();

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<()> {
        self.depth += 1;
        self.statement(statement);
        ControlFlow::Continue(())
    }

    fn post_visit_statement(&mut self, _statement: &Statement) -> ControlFlow<()> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        self.limits.push(has_limit(query));
        // Data-modifying statements inside a query (writing CTEs) are visited as statements.
        if let SetExpr::Select(_) | SetExpr::Query(_) | SetExpr::SetOperation { .. } =
            query.body.as_ref()
        {
            self.kind(Kind::Read);
        }
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<()> {
        self.limits.pop();
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<()> {
        // Only the outermost query's select list reads columns bare: a column in a subquery,
        // a derived table or a CTE can be computed over outside it (`(select pan …) || 'x'`,
        // or an alias that hides its name), so it counts as computed.
        let outermost = self.limits.len() == 1;
        for item in select.projection.iter().filter(|_| outermost) {
            let expr = match item {
                sqlparser::ast::SelectItem::UnnamedExpr(e) => e,
                sqlparser::ast::SelectItem::ExprWithAlias { expr, .. } => expr,
                _ => continue,
            };
            if column_name(expr).is_some() {
                self.bare.insert(expr as *const Expr as usize);
            }
        }
        if select.into.is_some() {
            self.out.select_into = true;
            self.kind(Kind::Ddl);
        }
        let limited = self.limits.last().copied().unwrap_or(false);
        if select.selection.is_none() && !limited {
            for from in &select.from {
                for factor in
                    std::iter::once(&from.relation).chain(from.joins.iter().map(|j| &j.relation))
                {
                    if let TableFactor::Table {
                        name, args: None, ..
                    } = factor
                    {
                        self.out.unfiltered_reads.insert(normalize(name));
                    }
                }
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        self.table(relation);
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        match factor {
            // `SELECT * FROM pg_ls_dir('/')`: a function in FROM.
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            } => {
                self.out.functions.insert(normalize(name));
            }
            TableFactor::Function { name, .. } => {
                self.out.functions.insert(normalize(name));
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = expr {
            self.out.functions.insert(normalize(&f.name));
        }
        if let Some(name) = column_name(expr)
            && !self.bare.contains(&(expr as *const Expr as usize))
        {
            self.out.computed_columns.insert(name);
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests;
