//! What a PostgreSQL statement does, read with PostgreSQL's own grammar (libpg_query through
//! `pg_query`): the lexer and parser the server runs, so comments, quoting, dollar quotes,
//! `E''` and `U&` strings and identifiers are read exactly as the server reads them.
//!
//! The parse tree is walked completely: it is turned into a generic value (every node and field
//! `pg_query` defines, nothing skipped) and walked with an explicit stack, so a function call,
//! a table or a nested data-modifying statement is found wherever it sits (CTEs, subqueries,
//! `EXECUTE` arguments, defaults, casts, `RETURNING`). What the walk reports:
//!
//! - kinds from every statement node found (a `DELETE` inside a CTE or a `PREPARE` is a write);
//!   statement nodes this module does not know are refused;
//! - functions in every spelling: plain calls, the SQL-syntax forms the grammar turns into calls
//!   (`SUBSTRING(x FROM 1)`, `TRIM`, `POSITION`, `OVERLAY`, `EXTRACT`), and attribute notation
//!   (`(x).f` and `t.f` run as `f(x)` when `f` is a function), each classified by what it does
//!   ([`super::functions`]): calls and locks are their own kinds;
//! - settings changed (`SET`, `SET LOCAL`, `RESET`, `set_config`, `BEGIN … READ WRITE`), with
//!   names folded as PostgreSQL folds setting names (case-insensitively, quoted or not);
//! - protected-column use through aliases, column alias lists and whole-row references;
//! - unbounded writes: no `WHERE`, or a condition that reads no column (`WHERE true`, `1 = 1`,
//!   `MERGE … ON true`).
//!
//! Before parsing, the text's size is bounded; the parser checks its own stack depth and the
//! tree's nesting is bounded when it is decoded, so no statement can overflow a stack: a
//! statement past either bound is refused as too complex (SQLSTATE 54001).

use std::collections::HashSet;

use serde_json::Value;

use super::classify::{Classified, Error, Kind};
use super::functions::{self, Effect};

/// Statements longer than this are refused before parsing (bytes).
pub const MAX_STATEMENT_BYTES: usize = 1 << 20;
/// Tokens a statement may hold (a 20,000-item IN list is about 40,000).
pub const MAX_TOKENS: usize = 50_000;
/// `/*` openings a statement may hold (nested comments make the scanner's work grow faster
/// than the text).
pub const MAX_COMMENTS: usize = 1_000;

/// Parses `sql` (one or more statements) with PostgreSQL's grammar and classifies each.
pub fn classify(sql: &str) -> Result<Vec<Classified>, Error> {
    if sql.len() > MAX_STATEMENT_BYTES {
        return Err(Error::TooComplex(format!(
            "the statement is {} bytes; at most {MAX_STATEMENT_BYTES} are analysed",
            sql.len()
        )));
    }
    // Nested comments cost the scanner more than linear time: bounded before it runs.
    if too_many_comments(sql) {
        let comments = sql.as_bytes().windows(2).filter(|w| w == b"/*").count();
        return Err(Error::TooComplex(format!(
            "{comments} comment openings; at most {MAX_COMMENTS} are analysed"
        )));
    }
    // The tree's size follows the token count; a huge one costs the walk time and memory on a
    // worker thread that serves other connections: bounded before parsing.
    let tokens = pg_query::scan(sql)
        .map_err(|e| Error::Parse(e.to_string()))?
        .tokens
        .len();
    if tokens > MAX_TOKENS {
        return Err(Error::TooComplex(format!(
            "{tokens} tokens; at most {MAX_TOKENS} are analysed"
        )));
    }
    let parsed = pg_query::parse(sql, 0).map_err(|e| match e {
        pg_query::Error::Decode(_) => Error::TooComplex("the statement nests too deeply".into()),
        // The parser's own bounds: its stack depth check and bison's stack limit.
        pg_query::Error::Parse(m)
            if m.contains("stack depth") || m.contains("memory exhausted") =>
        {
            Error::TooComplex("the statement nests too deeply".into())
        }
        other => Error::Parse(other.to_string()),
    })?;
    let mut out = Vec::with_capacity(parsed.protobuf.stmts.len());
    for raw in &parsed.protobuf.stmts {
        let tree = serde_json::to_value(&raw.stmt)
            .map_err(|e| Error::Parse(format!("unreadable parse tree: {e}")))?;
        out.push(Walk::default().run(&tree)?);
    }
    Ok(out)
}

/// A key under which statements that differ only in literal values share one classification:
/// the server's own tokens, comments dropped, string and number constants replaced by their
/// kind except numbers after LIMIT, OFFSET and FETCH. Classifications that read a literal's
/// value (a `set_config` setting name) are never shared under it (see
/// [`Classified::reads_literals`]). `None` when the text does not scan.
pub fn fingerprint(sql: &str) -> Option<String> {
    if sql.len() > MAX_STATEMENT_BYTES {
        return None;
    }
    // (`scan`, not `scan_tokens`: the latter builds a slice from a null pointer when the text
    // holds no token at all.)
    // Nested comments make the scanner slow: such a text is refused by `classify` first.
    if too_many_comments(sql) {
        return None;
    }
    // A UESCAPE literal changes what a U& identifier names: such texts are never shared.
    if sql
        .as_bytes()
        .windows(7)
        .any(|w| w.eq_ignore_ascii_case(b"uescape"))
    {
        return None;
    }
    let tokens = pg_query::scan(sql).ok()?.tokens;
    let mut out = String::with_capacity(sql.len());
    let mut keeps_number = false;
    for t in &tokens {
        let text = sql.get(t.start as usize..t.end as usize)?;
        match t.token {
            // SQL_COMMENT, C_COMMENT
            275 | 276 => continue,
            // FCONST, SCONST, USCONST, BCONST, XCONST, ICONST
            260..=264 | 266 if !(keeps_number && matches!(t.token, 260 | 266)) => {
                out.push_str("\u{2}c")
            }
            // Unquoted words fold to lower case, as the server folds them.
            // (ASCII only, as the server folds: the Kelvin sign is no `k` to PostgreSQL.)
            _ if !text.starts_with('"') => out.push_str(&text.to_ascii_lowercase()),
            _ => out.push_str(text),
        }
        keeps_number = ["limit", "offset", "fetch", "first", "next"]
            .iter()
            .any(|k| text.eq_ignore_ascii_case(k));
        out.push('\u{1}');
    }
    Some(out)
}

/// Names of the statement nodes and the kind each is. A statement node found anywhere in the
/// tree adds its kind.
fn statement_kind(node: &str) -> Option<Kind> {
    use Kind::*;
    Some(match node {
        "DeclareCursorStmt" | "FetchStmt" | "ExplainStmt" => Read,
        "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt" | "TruncateStmt" => Write,
        "CreateStmt"
        | "AlterTableStmt"
        | "DropStmt"
        | "IndexStmt"
        | "ViewStmt"
        | "CreateSchemaStmt"
        | "CreateSeqStmt"
        | "AlterSeqStmt"
        | "CreateTableAsStmt"
        | "RenameStmt"
        | "CommentStmt"
        | "RefreshMatViewStmt"
        | "CreateDomainStmt"
        | "DefineStmt"
        | "CompositeTypeStmt"
        | "CreateEnumStmt"
        | "CreateRangeStmt"
        | "AlterEnumStmt"
        | "CreateExtensionStmt"
        | "AlterExtensionStmt"
        | "AlterExtensionContentsStmt"
        | "CreateFdwStmt"
        | "AlterFdwStmt"
        | "CreateForeignServerStmt"
        | "AlterForeignServerStmt"
        | "CreateForeignTableStmt"
        | "ImportForeignSchemaStmt"
        | "CreateStatsStmt"
        | "AlterStatsStmt"
        | "AlterObjectSchemaStmt"
        | "AlterOwnerStmt"
        | "AlterOperatorStmt"
        | "AlterTypeStmt"
        | "AlterCollationStmt"
        | "AlterDomainStmt"
        | "CreateConversionStmt"
        | "CreateCastStmt"
        | "CreateTransformStmt"
        | "CreateOpClassStmt"
        | "CreateOpFamilyStmt"
        | "AlterOpFamilyStmt"
        | "AlterTsdictionaryStmt"
        | "AlterTsconfigurationStmt"
        | "CreatePublicationStmt"
        | "AlterPublicationStmt"
        | "CreateSubscriptionStmt"
        | "AlterSubscriptionStmt"
        | "DropSubscriptionStmt"
        | "CreateTableSpaceStmt"
        | "DropTableSpaceStmt"
        | "AlterTableSpaceOptionsStmt"
        | "AlterTableMoveAllStmt"
        | "CreatedbStmt"
        | "AlterDatabaseStmt"
        | "AlterDatabaseRefreshCollStmt"
        | "DropdbStmt"
        | "RuleStmt"
        | "CreateAmStmt"
        | "AlterObjectDependsStmt"
        | "SecLabelStmt"
        | "ReplicaIdentityStmt" => Ddl,
        "GrantStmt"
        | "GrantRoleStmt"
        | "CreateRoleStmt"
        | "AlterRoleStmt"
        | "AlterRoleSetStmt"
        | "DropRoleStmt"
        | "AlterDefaultPrivilegesStmt"
        | "CreatePolicyStmt"
        | "AlterPolicyStmt"
        | "CreateUserMappingStmt"
        | "AlterUserMappingStmt"
        | "DropUserMappingStmt"
        | "DropOwnedStmt"
        | "ReassignOwnedStmt"
        | "AlterDatabaseSetStmt" => Dcl,
        "DoStmt"
        | "CallStmt"
        | "CreateFunctionStmt"
        | "AlterFunctionStmt"
        | "CreateTrigStmt"
        | "CreateEventTrigStmt"
        | "AlterEventTrigStmt"
        | "CreatePlangStmt" => Procedural,
        "VariableShowStmt" | "DiscardStmt" | "PrepareStmt" | "ExecuteStmt" | "DeallocateStmt"
        | "ListenStmt" | "UnlistenStmt" | "ClosePortalStmt" => Session,
        // A notification reaches every listening session, as pg_notify() does: a call.
        "NotifyStmt" => Call,
        "TransactionStmt" | "ConstraintsSetStmt" => Transaction,
        "VacuumStmt" | "ClusterStmt" | "ReindexStmt" | "CheckPointStmt" | "LoadStmt"
        | "AlterSystemStmt" => Admin,
        "LockStmt" => Lock,
        // Classified by their contents below.
        "SelectStmt" | "VariableSetStmt" | "CopyStmt" => return None,
        _ => return None,
    })
}

/// Nodes that end in `Stmt` but are not statements of their own.
const NOT_STATEMENTS: &[&str] = &["RawStmt", "SelectStmt", "VariableSetStmt", "CopyStmt"];

/// The SQL-syntax names of functions the grammar turns into calls of another name, both ways:
/// a rule naming either matches a call spelled either way.
const SPELLINGS: &[(&str, &str)] = &[
    ("substring", "substr"),
    ("btrim", "trim"),
    ("ltrim", "trim"),
    ("rtrim", "trim"),
    ("position", "strpos"),
    ("extract", "date_part"),
    ("overlay", "overlay"),
];

#[derive(Default)]
struct Walk {
    out: Classified,
    /// ColumnRef objects read bare in the outermost select list (by address).
    bare: HashSet<usize>,
    /// `*` and `t.*` items of any select list or RETURNING (by address): a projection passes
    /// columns on under their names, where any computing over them is seen by name.
    projected_stars: HashSet<usize>,
    /// Names a whole-row reference could use: tables and their aliases.
    relations: HashSet<String>,
    /// Whether any FROM item renames its columns (`AS t(a, b)`).
    renames_columns: bool,
}

fn node(v: &Value) -> Option<(&str, &Value)> {
    let inner = v.get("node")?.as_object()?;
    let (name, body) = inner.iter().next()?;
    Some((name.as_str(), body))
}

fn string(v: &Value) -> Option<&str> {
    let (name, body) = node(v)?;
    (name == "String").then(|| body.get("sval")?.as_str())?
}

fn list<'a>(v: &'a Value, field: &str) -> &'a [Value] {
    v.get(field)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn str_field<'a>(v: &'a Value, field: &str) -> &'a str {
    v.get(field).and_then(Value::as_str).unwrap_or("")
}

fn int_field(v: &Value, field: &str) -> i64 {
    v.get(field).and_then(Value::as_i64).unwrap_or(0)
}

fn too_many_comments(sql: &str) -> bool {
    sql.as_bytes().windows(2).filter(|w| w == b"/*").count() > MAX_COMMENTS
}

/// The select of a subquery or CTE when it is a plain one (no set operation).
fn plain_select(v: Option<&Value>) -> Option<&Value> {
    let (_, s) = v.and_then(node).filter(|(n, _)| *n == "SelectStmt")?;
    (int_field(s, "op") <= 1).then_some(s)
}

/// Whether a subtree holds a column reference (a condition without one is the same for every
/// row).
fn reads_a_column(v: &Value) -> bool {
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(map) => {
                if map.contains_key("ColumnRef") || map.contains_key("CurrentOfExpr") {
                    return true;
                }
                stack.extend(map.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    false
}

fn relation_name(range_var: &Value) -> String {
    let schema = str_field(range_var, "schemaname");
    let name = str_field(range_var, "relname");
    if schema.is_empty() {
        name.to_owned()
    } else {
        format!("{schema}.{name}")
    }
}

impl Walk {
    fn run(mut self, tree: &Value) -> Result<Classified, Error> {
        self.prepare(tree);
        let mut stack = vec![tree];
        while let Some(v) = stack.pop() {
            match v {
                Value::Object(map) => {
                    if map.contains_key("relname") && map.contains_key("inh") {
                        self.out.tables.insert(relation_name(v));
                    }
                    // A TypeName (a cast's, unwrapped in the tree): the type it names.
                    if map.contains_key("typemod")
                        && map.contains_key("array_bounds")
                        && let Some(name) = list(v, "names").iter().filter_map(string).next_back()
                    {
                        self.out.types.insert(name.to_lowercase());
                    }
                    if let Some((name, body)) = node(v) {
                        self.visit(name, body, v)?;
                    }
                    stack.extend(map.values());
                }
                Value::Array(items) => stack.extend(items),
                _ => {}
            }
        }
        self.finish();
        Ok(self.out)
    }

    /// Before the walk: what the outermost select list reads bare, which names are relations
    /// (for whole-row references), the top-level LIMIT and unfiltered reads.
    fn prepare(&mut self, tree: &Value) {
        // Relations and aliases, and column alias lists, anywhere.
        let mut stack = vec![tree];
        while let Some(v) = stack.pop() {
            match v {
                Value::Object(map) => {
                    if map.contains_key("relname") && map.contains_key("inh") {
                        self.relations.insert(str_field(v, "relname").to_owned());
                        // A table's columns renamed by position (`cards AS t(i, x)`) are read
                        // under names that say nothing of what they hold. (A subquery's or a
                        // CTE's renamed columns are seen by their names inside it.)
                        if v.get("alias")
                            .is_some_and(|a| !list(a, "colnames").is_empty())
                        {
                            self.renames_columns = true;
                        }
                    }
                    if map.contains_key("aliasname") {
                        self.relations.insert(str_field(v, "aliasname").to_owned());
                    }
                    if let Some(cte) = map.get("CommonTableExpr") {
                        self.relations.insert(str_field(cte, "ctename").to_owned());
                    }
                    stack.extend(map.values());
                }
                Value::Array(items) => stack.extend(items),
                _ => {}
            }
        }
        // Stars that pass columns on under their own names: in RETURNING, and in a FROM
        // subquery or CTE that is a plain select (a set operation's branches take the first
        // branch's names) renaming nothing. Any other star (a set operation's later branch, an
        // expression subquery compared with values) carries every column, which counts as
        // computing over all of them. (The outermost query's stars are bare: below.)
        let star_of = |target: &Value| -> Option<usize> {
            let (_, rt) = node(target).filter(|(n, _)| *n == "ResTarget")?;
            let (_, cr) = rt
                .get("val")
                .and_then(node)
                .filter(|(n, _)| *n == "ColumnRef")?;
            list(cr, "fields")
                .iter()
                .any(|f| node(f).is_some_and(|(n, _)| n == "AStar"))
                .then_some(cr as *const Value as usize)
        };
        let mut stack = vec![tree];
        while let Some(v) = stack.pop() {
            match v {
                Value::Object(map) => {
                    let passthrough = if let Some(rs) = map.get("RangeSubselect") {
                        let renamed = rs
                            .get("alias")
                            .is_some_and(|a| !list(a, "colnames").is_empty());
                        (!renamed)
                            .then(|| plain_select(rs.get("subquery")))
                            .flatten()
                    } else if let Some(cte) = map.get("CommonTableExpr") {
                        let renamed = !list(cte, "aliascolnames").is_empty();
                        (!renamed)
                            .then(|| plain_select(cte.get("ctequery")))
                            .flatten()
                    } else {
                        None
                    };
                    if let Some(select) = passthrough {
                        self.projected_stars
                            .extend(list(select, "target_list").iter().filter_map(star_of));
                    }
                    if let Some(returning) = map.get("returning_clause").filter(|r| r.is_object()) {
                        self.projected_stars
                            .extend(list(returning, "exprs").iter().filter_map(star_of));
                    }
                    stack.extend(map.values());
                }
                Value::Array(items) => stack.extend(items),
                _ => {}
            }
        }
        // The outermost query: the statement's own, or the query an EXPLAIN, a cursor, a
        // PREPARE, an INSERT or a COPY runs (its rows are what comes out).
        let select = match node(tree) {
            Some(("SelectStmt", select)) => select,
            Some(("ExplainStmt" | "DeclareCursorStmt" | "PrepareStmt" | "CopyStmt", body)) => {
                match body.get("query").and_then(node) {
                    Some(("SelectStmt", select)) => select,
                    _ => return,
                }
            }
            Some(("InsertStmt", body)) => match body.get("select_stmt").and_then(node) {
                Some(("SelectStmt", select)) => select,
                _ => return,
            },
            _ => return,
        };
        // The top-level LIMIT of a read.
        self.out.limit = select
            .get("limit_count")
            .and_then(node)
            .and_then(|(n, c)| (n == "AConst").then_some(c))
            .and_then(|c| c.pointer("/val/Ival/ival"))
            .and_then(Value::as_u64);
        // Bare columns of the outermost select list (every branch of a set operation).
        let mut selects = vec![select];
        while let Some(s) = selects.pop() {
            for target in list(s, "target_list") {
                if let Some(("ResTarget", rt)) = node(target)
                    && let Some(val) = rt.get("val")
                    && let Some(("ColumnRef", cr)) = node(val)
                {
                    self.bare.insert(cr as *const Value as usize);
                }
            }
            for branch in ["larg", "rarg"] {
                if let Some(b) = s.get(branch).filter(|b| b.is_object()) {
                    selects.push(b);
                }
            }
        }
    }

    fn visit(&mut self, name: &str, body: &Value, _whole: &Value) -> Result<(), Error> {
        if let Some(kind) = statement_kind(name) {
            self.out.kinds.insert(kind);
        } else if name.ends_with("Stmt") && !NOT_STATEMENTS.contains(&name) {
            return Err(Error::Unsupported(name.to_owned()));
        }
        match name {
            "FuncCall" => {
                let parts: Vec<&str> = list(body, "funcname").iter().filter_map(string).collect();
                self.function(&parts.join("."));
                if parts.last() == Some(&"set_config") {
                    let setting = list(body, "args")
                        .first()
                        .and_then(node)
                        .filter(|(n, _)| *n == "AConst")
                        .and_then(|(_, c)| c.pointer("/val/Sval/sval"))
                        .and_then(Value::as_str)
                        // A setting named by an expression could be any setting.
                        .unwrap_or("?");
                    self.out.settings.insert(setting.to_lowercase());
                    self.out.reads_literals = true;
                }
            }
            "ColumnRef" => self.column_ref(body),
            "AIndirection" => {
                // `(expr).f` runs `f(expr)` when f is a function.
                for part in list(body, "indirection") {
                    if let Some(f) = string(part) {
                        self.attribute(f);
                    }
                }
            }
            "AExpr" => {
                // A user-defined operator runs its function: an operator that is not one of
                // pg_catalog's, or is named with another schema (`OPERATOR(s.op)`), is a call.
                let parts: Vec<&str> = list(body, "name").iter().filter_map(string).collect();
                let foreign = match parts.as_slice() {
                    [] => false,
                    [op] | ["pg_catalog", op] => !functions::is_catalog_operator(op),
                    _ => true,
                };
                if foreign {
                    self.out
                        .functions
                        .insert(format!("operator({})", parts.join(".")));
                    self.out.kinds.insert(Kind::Call);
                }
            }
            "LockingClause" => {
                self.out.kinds.insert(Kind::Lock);
            }
            // NATURAL joins compare every column the two sides share, USING the named ones.
            "JoinExpr" => {
                if body.get("is_natural").and_then(Value::as_bool) == Some(true) {
                    self.out.computed_columns.insert("*".into());
                }
                for name in list(body, "using_clause").iter().filter_map(string) {
                    self.out.computed_columns.insert(name.to_lowercase());
                }
            }
            // ORDER BY 2: sorting by an output column by position compares its values.
            "SortBy"
                if body
                    .get("node")
                    .and_then(node)
                    .is_some_and(|(n, _)| n == "AConst") =>
            {
                self.out.computed_columns.insert("*".into());
            }
            "VariableSetStmt" => self.set(body),
            "TransactionStmt" => {
                // BEGIN / START TRANSACTION / SET TRANSACTION READ WRITE lifts read-only.
                for option in list(body, "options") {
                    if let Some(("DefElem", d)) = node(option) {
                        self.transaction_option(d);
                    }
                }
                // Two-phase commit commands manage server-wide prepared transactions.
                if matches!(int_field(body, "kind"), 8..=10) {
                    self.out.kinds.insert(Kind::Admin);
                }
            }
            "CopyStmt" => self.copy(body),
            "SelectStmt" => {
                // UNION (without ALL), INTERSECT and EXCEPT compare whole rows with each other
                // (a row against a guessed literal row answers whether they are equal).
                let op = int_field(body, "op");
                let all = body.get("all").and_then(Value::as_bool) == Some(true);
                if op > 2 || (op == 2 && !all) {
                    self.out.computed_columns.insert("*".into());
                }
                // A bare VALUES list (an INSERT's rows) reads nothing.
                let values_only =
                    !list(body, "values_lists").is_empty() && list(body, "from_clause").is_empty();
                if !values_only {
                    self.out.kinds.insert(Kind::Read);
                }
                if body.get("into_clause").is_some_and(Value::is_object) {
                    self.out.select_into = true;
                    self.out.kinds.insert(Kind::Ddl);
                }
                // GROUP BY 2 groups by an output column's values.
                if list(body, "group_clause")
                    .iter()
                    .any(|g| node(g).is_some_and(|(n, _)| n == "AConst"))
                {
                    self.out.computed_columns.insert("*".into());
                }
                let unlimited = !body.get("limit_count").is_some_and(Value::is_object);
                let unfiltered = !body.get("where_clause").is_some_and(Value::is_object);
                if unlimited && unfiltered {
                    // Tables of the FROM list and its joins (not of subqueries).
                    let mut from: Vec<&Value> = list(body, "from_clause").iter().collect();
                    while let Some(item) = from.pop() {
                        match node(item) {
                            Some(("RangeVar", rv)) => {
                                self.out.unfiltered_reads.insert(relation_name(rv));
                            }
                            Some(("JoinExpr", join)) => {
                                from.extend(["larg", "rarg"].iter().filter_map(|k| join.get(*k)));
                            }
                            _ => {}
                        }
                    }
                }
            }
            "CreateTableAsStmt" => self.out.select_into = true,
            "UpdateStmt" | "DeleteStmt" => {
                let bounded = body.get("where_clause").is_some_and(reads_a_column);
                if !bounded {
                    self.out.unbounded_write = true;
                }
            }
            "MergeStmt" => {
                let bounded = body.get("join_condition").is_some_and(reads_a_column);
                if !bounded {
                    self.out.unbounded_write = true;
                }
            }
            "TruncateStmt" => self.out.unbounded_write = true,
            // DROP names its objects as name lists, not relations.
            "DropStmt" => {
                for object in list(body, "objects") {
                    if let Some(("List", l)) = node(object) {
                        let parts: Vec<&str> = list(l, "items").iter().filter_map(string).collect();
                        if !parts.is_empty() {
                            self.out.tables.insert(parts.join("."));
                        }
                    }
                }
            }
            "PrepareStmt" => self.out.prepares = Some(str_field(body, "name").to_owned()),
            "ExecuteStmt" => self.out.executes = Some(str_field(body, "name").to_owned()),
            "DeallocateStmt" => {
                if body.get("isall").and_then(Value::as_bool) == Some(true) {
                    self.out.deallocates_all = true;
                } else {
                    self.out.deallocates = Some(str_field(body, "name").to_owned());
                }
            }
            // DISCARD ALL deallocates every prepared statement.
            "DiscardStmt" if int_field(body, "target") == 1 => self.out.deallocates_all = true,
            _ => {}
        }
        Ok(())
    }

    fn function(&mut self, name: &str) {
        let bare = name.strip_prefix("pg_catalog.").unwrap_or(name);
        self.out.functions.insert(name.to_owned());
        self.out.functions.insert(bare.to_owned());
        for (a, b) in SPELLINGS {
            if bare == *a {
                self.out.functions.insert((*b).to_owned());
            } else if bare == *b {
                self.out.functions.insert((*a).to_owned());
            }
        }
        // set_config is judged by the setting it changes (`settings`), not as a call.
        if bare == "set_config" {
            return;
        }
        match functions::effect(name) {
            Effect::Read => {}
            Effect::Lock => {
                self.out.kinds.insert(Kind::Lock);
            }
            Effect::Call => {
                self.out.kinds.insert(Kind::Call);
            }
        }
    }

    /// A name after a dot that may be a function applied to what precedes it.
    fn attribute(&mut self, name: &str) {
        self.out.field_names.insert(name.to_owned());
        if functions::is_catalog_function(name) {
            self.function(name);
        }
    }

    fn column_ref(&mut self, body: &Value) {
        let fields = list(body, "fields");
        let names: Vec<&str> = fields.iter().filter_map(string).collect();
        let star = fields
            .iter()
            .any(|f| node(f).is_some_and(|(n, _)| n == "AStar"));
        // `t.f`, `s.t.f`: f may be a function of the row t (`pg_read_file` of a text row).
        if names.len() >= 2
            && let Some(last) = names.last()
        {
            self.attribute(last);
        }
        let at = body as *const Value as usize;
        if self.bare.contains(&at) || self.projected_stars.contains(&at) {
            return;
        }
        // Whole-row references (`t`, `t.*` inside an expression) and renamed columns carry
        // every column of their row: they count as computing over all of them.
        let whole_row = star || (names.len() == 1 && self.relations.contains(names[0]));
        if whole_row || self.renames_columns {
            self.out.computed_columns.insert("*".into());
        }
        // Column patterns match case-insensitively: a quoted "PAN" is a pan.
        if !names.is_empty() && !star {
            self.out
                .computed_columns
                .insert(names.join(".").to_lowercase());
        }
    }

    fn set(&mut self, body: &Value) {
        let name = str_field(body, "name").to_lowercase();
        match int_field(body, "kind") {
            // SET TRANSACTION / SESSION CHARACTERISTICS AS TRANSACTION …
            4 => {
                for arg in list(body, "args") {
                    if let Some(("DefElem", d)) = node(arg) {
                        self.transaction_option(d);
                    }
                }
                self.out.kinds.insert(Kind::Transaction);
                return;
            }
            // RESET ALL
            6 => {
                self.out.settings.insert("all".into());
            }
            _ => {
                self.out.settings.insert(name.clone());
            }
        }
        if matches!(name.as_str(), "role" | "session_authorization") {
            self.out.kinds.insert(Kind::Dcl);
        } else {
            self.out.kinds.insert(Kind::Session);
        }
    }

    fn transaction_option(&mut self, d: &Value) {
        let name = str_field(d, "defname");
        match name {
            // READ ONLY only restricts; READ WRITE lifts a read-only session.
            "transaction_read_only" => {
                let read_only = d
                    .get("arg")
                    .and_then(node)
                    .and_then(|(_, c)| c.pointer("/val/Ival/ival"))
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                if read_only == 0 {
                    self.out.settings.insert("transaction_read_only".into());
                }
            }
            "transaction_isolation" | "transaction_deferrable" => {
                self.out.settings.insert(name.to_owned());
            }
            other => {
                self.out.settings.insert(other.to_lowercase());
            }
        }
    }

    fn copy(&mut self, body: &Value) {
        let from = body.get("is_from").and_then(Value::as_bool) == Some(true);
        self.out
            .kinds
            .insert(if from { Kind::CopyIn } else { Kind::CopyOut });
        if body.get("is_program").and_then(Value::as_bool) == Some(true) {
            self.out.copy_program = true;
            self.out.kinds.insert(Kind::Admin);
        } else if !str_field(body, "filename").is_empty() {
            self.out.copy_file = true;
            self.out.kinds.insert(Kind::Admin);
        }
    }

    fn finish(&mut self) {
        // Tables read through a whole-row or renamed reference: nothing to add; kinds of an
        // empty statement (a bare `;`) stay empty.
    }
}

#[cfg(test)]
mod tests;
