//! The walk of a MySQL statement's sqlparser tree: kinds, tables, functions (special forms
//! included, under their MariaDB names and synonyms), columns computed over, settings.

use std::ops::ControlFlow;

use sqlparser::ast::{
    ContextModifier, CopySource, CopyTarget, Expr, LimitClause, ObjectName, ObjectNamePart,
    ObjectType, Query, Select, Set, SetExpr, Statement, TableFactor, Value, Visit, Visitor,
};

use crate::policy::classify::{Classified, Error, Kind};

/// Classifies one parsed MySQL statement.
pub(super) fn classify_one(statement: &Statement) -> Result<Classified, Error> {
    let mut c = Collector {
        out: Classified::default(),
        limits: Vec::new(),
        unsupported: None,
        depth: 0,
        bare: std::collections::HashSet::new(),
        top_query: matches!(statement, Statement::Query(_)),
        exists: std::collections::HashSet::new(),
        in_exists: Vec::new(),
        aliases: Vec::new(),
    };
    let _ = statement.visit(&mut c);
    if let Some(what) = c.unsupported {
        return Err(Error::Unsupported(what));
    }
    // The top-level LIMIT of a read.
    if let Statement::Query(q) = statement {
        c.out.limit = literal_limit(q);
    }
    for (alias, column) in std::mem::take(&mut c.aliases) {
        if c.out.computed_columns.contains(&alias) {
            c.out.computed_columns.insert(column);
        }
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
    /// Whether the statement is a query: only then does its outermost select list return
    /// columns as they are (`SET @x = (SELECT pan …)`, `INSERT … SELECT pan` compute over them).
    top_query: bool,
    /// Addresses of the subqueries of EXISTS, and for each enclosing query whether it is one.
    exists: std::collections::HashSet<usize>,
    in_exists: Vec<bool>,
    /// Select-list aliases of columns (`pan AS x`): computing over `x` computes over `pan`.
    aliases: Vec<(String, String)>,
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

/// A literal column position (`ORDER BY 2`, `GROUP BY 1`).
fn position(e: &Expr) -> Option<usize> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => n.parse().ok(),
            _ => None,
        },
        _ => None,
    }
}

/// The selects of a query body: one, or every branch of a UNION, INTERSECT or EXCEPT.
fn selects(body: &SetExpr) -> Vec<&Select> {
    match body {
        SetExpr::Select(s) => vec![s.as_ref()],
        SetExpr::SetOperation { left, right, .. } => {
            let mut v = selects(left);
            v.extend(selects(right));
            v
        }
        SetExpr::Query(q) => selects(&q.body),
        _ => Vec::new(),
    }
}

/// An identifier as MariaDB compares it here: unquoted names fold to lower case.
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

    /// Sorting or grouping by the `n`th item of a select list computes over its column (all
    /// of them for `*`).
    fn by_position(&mut self, select: &Select, n: usize) {
        match n.checked_sub(1).and_then(|i| select.projection.get(i)) {
            Some(
                sqlparser::ast::SelectItem::UnnamedExpr(e)
                | sqlparser::ast::SelectItem::ExprWithAlias { expr: e, .. },
            ) => {
                if let Some(c) = column_name(e) {
                    self.out.computed_columns.insert(c);
                }
            }
            Some(_) => {
                self.out.computed_columns.insert("*".to_owned());
            }
            None if select.projection.iter().any(|i| {
                matches!(
                    i,
                    sqlparser::ast::SelectItem::Wildcard(_)
                        | sqlparser::ast::SelectItem::QualifiedWildcard(..)
                )
            }) =>
            {
                self.out.computed_columns.insert("*".to_owned());
            }
            None => {}
        }
    }

    /// `SET`: user variables (`@x`) are the session's own; system variables are settings,
    /// judged against the policy's MySQL settings allowlist by the engine; a global one
    /// (`GLOBAL`, `@@global.`) changes the server for everyone and is admin. (`PERSIST` and
    /// scopes sqlparser drops, as in `SET GLOBAL TRANSACTION`, are found by
    /// [`super::server_wide`] on the tokens.)
    fn set(&mut self, set: &Set) {
        match set {
            Set::SetRole { .. } | Set::SetSessionAuthorization(_) => self.kind(Kind::Dcl),
            Set::SingleAssignment {
                scope, variable, ..
            } => self.assign(scope.as_ref(), variable),
            Set::MultipleAssignments { assignments } => {
                for a in assignments {
                    self.assign(a.scope.as_ref(), &a.name);
                }
            }
            Set::SetNames { charset_name, .. } => {
                self.kind(Kind::Session);
                // The charset tollgate pins, or another one (refused by the relay too).
                let pinned = matches!(
                    charset_name.value.to_ascii_lowercase().as_str(),
                    "utf8mb4" | "utf8" | "utf8mb3"
                );
                self.out.settings.insert(
                    if pinned {
                        "names"
                    } else {
                        "character_set_client"
                    }
                    .to_owned(),
                );
            }
            Set::SetNamesDefault {} => {
                self.kind(Kind::Session);
                self.out.settings.insert("character_set_client".to_owned());
            }
            Set::SetTimeZone { .. } => {
                self.kind(Kind::Session);
                self.out.settings.insert("time_zone".to_owned());
            }
            Set::SetTransaction { modes, .. } => {
                self.kind(Kind::Session);
                for mode in modes {
                    self.out.settings.insert(
                        match mode {
                            sqlparser::ast::TransactionMode::IsolationLevel(_) => {
                                "transaction_isolation"
                            }
                            sqlparser::ast::TransactionMode::AccessMode(_) => {
                                "transaction_read_only"
                            }
                        }
                        .to_owned(),
                    );
                }
            }
            _ => {
                self.kind(Kind::Session);
                self.out.settings.insert("?".to_owned());
            }
        }
    }

    /// `SHOW …` forms sqlparser reads only as words (`SHOW INDEX FROM t`, `SHOW ENGINE …`):
    /// an allowlist of what describes the session's own database; anything else (engine status
    /// with other sessions' statements, replication, open tables) is admin. A name after FROM
    /// or IN is recorded as a table, so another database's is refused like a qualified name.
    fn show_words(&mut self, words: &[sqlparser::ast::Ident]) {
        let lower: Vec<String> = words.iter().map(|w| w.value.to_lowercase()).collect();
        let known = matches!(
            lower.first().map(String::as_str),
            Some(
                "warnings"
                    | "errors"
                    | "count"
                    | "index"
                    | "indexes"
                    | "keys"
                    | "table"
                    | "grants"
                    | "privileges"
                    | "character"
                    | "charset"
                    | "collation"
                    | "triggers"
                    | "events"
                    | "engines"
                    | "plugins"
            )
        );
        self.kind(if known { Kind::Session } else { Kind::Admin });
        // `SHOW INDEX FROM t`: a table of the session's database. (sqlparser drops the dot of
        // `FROM db.t`, so any longer form counts its names as databases.)
        if let [first, from, _] = lower.as_slice()
            && matches!(first.as_str(), "index" | "indexes" | "keys")
            && matches!(from.as_str(), "from" | "in")
        {
            let name = &words[2];
            self.out.tables.insert(if name.quote_style.is_some() {
                name.value.clone()
            } else {
                name.value.to_lowercase()
            });
            return;
        }
        let mut names = lower
            .iter()
            .zip(words)
            .skip_while(|(w, _)| !matches!(w.as_str(), "from" | "in"));
        while let Some((w, _)) = names.next() {
            if matches!(w.as_str(), "from" | "in")
                && let Some((_, name)) = names.next()
            {
                let n = if name.quote_style.is_some() {
                    name.value.clone()
                } else {
                    name.value.to_lowercase()
                };
                self.out.tables.insert(format!("{n}.*"));
            }
        }
    }

    fn assign(&mut self, scope: Option<&ContextModifier>, variable: &ObjectName) {
        let parts: Vec<String> = variable
            .0
            .iter()
            .map(|p| match p {
                ObjectNamePart::Identifier(id) => id.value.to_lowercase(),
                ObjectNamePart::Function(f) => f.name.value.to_lowercase(),
            })
            .collect();
        let first = parts.first().map(String::as_str).unwrap_or("");
        if first.starts_with('@') && !first.starts_with("@@") {
            // A user variable.
            self.kind(Kind::Session);
            return;
        }
        let global = matches!(scope, Some(ContextModifier::Global)) || first == "@@global";
        let name = match (first, parts.as_slice()) {
            ("@@global" | "@@session" | "@@local", [_, name]) => name.clone(),
            (_, [one]) => one.trim_start_matches("@@").to_owned(),
            // `@@x.y`, `a.b`: a structured or unknown variable.
            _ => "?".to_owned(),
        };
        if global {
            self.kind(Kind::Admin);
        } else if matches!(name.as_str(), "role" | "password" | "session_authorization") {
            self.kind(Kind::Dcl);
        } else {
            self.kind(Kind::Session);
        }
        self.out.settings.insert(name);
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
            S::Set(set) => self.set(set),
            // MySQL's RESET is replication and cache administration (RESET MASTER deletes the
            // binary logs), never a session setting.
            S::Reset(_) => self.kind(Kind::Admin),
            S::ShowVariable { variable } => self.show_words(variable),
            S::ShowCreate { obj_name, .. } => {
                self.kind(Kind::Session);
                self.table(obj_name);
            }
            S::ShowTables { show_options, .. } | S::ShowViews { show_options, .. } => {
                self.kind(Kind::Session);
                // `SHOW TABLES IN db`: the database is what is read.
                if let Some(db) = show_options
                    .show_in
                    .as_ref()
                    .and_then(|i| i.parent_name.as_ref())
                {
                    self.out.tables.insert(format!("{}.*", normalize(db)));
                }
            }
            S::ShowFunctions { .. }
            | S::ShowStatus { .. }
            | S::ShowVariables { .. }
            | S::ShowColumns { .. }
            | S::ShowCatalogs { .. }
            | S::ShowDatabases { .. }
            | S::ShowSchemas { .. }
            | S::ShowCollation { .. }
            | S::ShowCharset(_)
            | S::ShowObjects(_)
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
            S::Lock(_) | S::LockTables { .. } | S::UnlockTables => self.kind(Kind::Lock),
            S::Vacuum(_) | S::Analyze(_) | S::Kill { .. } | S::LoadData { .. } | S::Load { .. } => {
                self.kind(Kind::Admin)
            }
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
        // `ORDER BY 2` sorts by the second column of every branch's select list.
        if let Some(sqlparser::ast::OrderBy {
            kind: sqlparser::ast::OrderByKind::Expressions(exprs),
            ..
        }) = &query.order_by
        {
            for e in exprs {
                if let Some(n) = position(&e.expr) {
                    for select in selects(&query.body) {
                        self.by_position(select, n);
                    }
                }
            }
        }
        self.limits.push(has_limit(query));
        self.in_exists
            .push(self.exists.contains(&(query as *const Query as usize)));
        if !query.locks.is_empty() {
            self.kind(Kind::Lock);
        }
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
        self.in_exists.pop();
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<()> {
        // Only the outermost query's select list reads columns bare: a column in a subquery,
        // a derived table or a CTE can be computed over outside it (`(select pan …) || 'x'`,
        // or an alias that hides its name), so it counts as computed.
        // `SELECT pan INTO @p`: the value goes to a variable, where it can be computed over.
        let into_variables = select.into.as_ref().is_some_and(|into| {
            into.targets
                .iter()
                .all(|t| matches!(t, Expr::Identifier(id) if id.value.starts_with('@') && !id.value.starts_with("@@")))
        });
        let outermost =
            self.limits.len() == 1 && self.depth == 1 && self.top_query && !into_variables;
        // `*` anywhere else hands every column on under names the rules cannot see
        // (`WITH t(a, b) AS (SELECT * FROM cards)`, a UNION branch, a row comparison): every
        // column counts as computed. An EXISTS subquery's select list returns nothing.
        let wildcard = select.projection.iter().any(|item| {
            matches!(
                item,
                sqlparser::ast::SelectItem::Wildcard(_)
                    | sqlparser::ast::SelectItem::QualifiedWildcard(..)
            )
        });
        if wildcard && !outermost && !self.in_exists.last().copied().unwrap_or(false) {
            self.out.computed_columns.insert("*".to_owned());
        }
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
        // A select-list alias names its column in ORDER BY, GROUP BY and HAVING.
        for item in &select.projection {
            if let sqlparser::ast::SelectItem::ExprWithAlias { expr, alias } = item
                && let Some(column) = column_name(expr)
            {
                self.aliases.push((alias.value.to_lowercase(), column));
            }
        }
        // `GROUP BY 2` sorts and groups by the second column of the select list.
        if let sqlparser::ast::GroupByExpr::Expressions(exprs, _) = &select.group_by {
            for e in exprs {
                if let Some(n) = position(e) {
                    self.by_position(select, n);
                }
            }
        }
        // Joins compare columns the statement does not name: `NATURAL JOIN` every column two
        // tables share, `USING (pan)` the columns listed.
        for join in select.from.iter().flat_map(|f| &f.joins) {
            use sqlparser::ast::{JoinConstraint as C, JoinOperator as J};
            let constraint = match &join.join_operator {
                J::Join(c)
                | J::Inner(c)
                | J::Left(c)
                | J::LeftOuter(c)
                | J::Right(c)
                | J::RightOuter(c)
                | J::FullOuter(c)
                | J::CrossJoin(c)
                | J::Semi(c)
                | J::LeftSemi(c)
                | J::RightSemi(c)
                | J::Anti(c)
                | J::LeftAnti(c)
                | J::RightAnti(c)
                | J::StraightJoin(c) => Some(c),
                _ => None,
            };
            match constraint {
                Some(C::Natural) => {
                    self.out.computed_columns.insert("*".to_owned());
                }
                Some(C::Using(names) | C::UsingAlias(names, _)) => {
                    for n in names {
                        self.out.computed_columns.insert(normalize(n));
                    }
                }
                _ => {}
            }
        }
        // MySQL's SELECT … INTO names variables (computing over what is selected, above);
        // into anything else it is an export.
        if select.into.is_some() && !into_variables {
            self.out.select_into = true;
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
        match expr {
            Expr::Exists { subquery, .. } => {
                self.exists
                    .insert(subquery.as_ref() as *const Query as usize);
            }
            // `MATCH (pan) AGAINST (…)` tests the column's contents.
            Expr::MatchAgainst { columns, .. } => {
                for c in columns {
                    self.out.computed_columns.insert(normalize(c));
                }
            }
            // `LAST_INSERT_ID(expr)` sets the session's value: not a plain read.
            Expr::Function(f)
                if normalize(&f.name) == "last_insert_id"
                    && matches!(&f.args, sqlparser::ast::FunctionArguments::List(l) if !l.args.is_empty()) =>
            {
                self.out.functions.insert("last_insert_id(expr)".to_owned());
            }
            _ => {}
        }
        if let Expr::Function(f) = expr {
            let name = normalize(&f.name);
            if let Some(group) = super::functions::synonyms(&name) {
                self.out
                    .functions
                    .extend(group.iter().map(|s| (*s).to_owned()));
            }
            self.out.functions.insert(name);
        }
        for name in super::functions::special_form(expr) {
            self.out.functions.insert((*name).to_owned());
        }
        if let Some(name) = column_name(expr)
            && !self.bare.contains(&(expr as *const Expr as usize))
        {
            self.out.computed_columns.insert(name);
        }
        ControlFlow::Continue(())
    }
}
