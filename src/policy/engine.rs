//! Decisions: rules evaluated against each classified statement for an identity.
//!
//! Least privilege when rules conflict: deny beats require_approval beats allow; a statement no
//! rule matches gets the default (deny unless a policy says otherwise). A message with several
//! statements gets the strictest of their decisions. Rules in audit mode (or a policy in audit
//! mode) are evaluated and reported but do not enforce.
//!
//! The engine is pure: no IO, no clock. Classifications are cached by statement text.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::classify::{self, Classified, Kind, SqlDialect};
use super::rules::{Action, Approval, Mode, Rule, RuleSet};
use crate::auth::Identity;

const CACHE_ENTRIES: usize = 10_000;
/// Statements longer than this are classified every time rather than cached.
const CACHE_MAX_SQL: usize = 16 * 1024;

/// The decision for one statement or a whole message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// What is done (after audit mode is taken into account).
    pub action: Action,
    /// What the rules decided, enforced or not.
    pub decided: Action,
    /// The deciding rule, `None` for the default.
    pub rule: Option<String>,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
    /// True when the decision was only recorded (audit mode).
    pub dry_run: bool,
    /// The most the statement's result may hold, from the rules' `result_cap`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result_cap: Option<crate::pipeline::ResultCap>,
}

impl Decision {
    /// The client-facing message for a statement that is not forwarded.
    pub fn message(&self) -> String {
        let by = match &self.rule {
            Some(id) => format!("rule {id}"),
            None => "the default policy".to_owned(),
        };
        match self.action {
            Action::Allow => format!("tollgate: allowed by {by}"),
            Action::Deny => format!("tollgate: blocked by {by}: {}", self.reason),
            Action::RequireApproval => {
                let group = self.approval.as_ref().map_or("", |a| a.group.as_str());
                format!(
                    "tollgate: held by {by}: {} (needs approval by {group}; approvals are not enabled on this tollgate, so the statement is refused)",
                    self.reason
                )
            }
        }
    }
}

/// One statement's classification, the rules that matched, and its decision.
#[derive(Debug, Clone, Serialize)]
pub struct StatementReport {
    /// Absent when the statement could not be parsed or classified.
    pub classified: Option<Classified>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unparsed: Option<String>,
    pub matched: Vec<MatchedRule>,
    pub decision: Decision,
}

#[derive(Debug, Clone, Serialize)]
pub struct MatchedRule {
    pub id: String,
    pub action: Action,
    pub mode: Mode,
}

/// The decision for a message (all its statements).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub statements: Vec<StatementReport>,
    pub decision: Decision,
}

/// A statement text's classification, shared between the cache and its users.
pub type Classification = Arc<Result<Vec<Classified>, classify::Error>>;
type Cache = HashMap<Box<str>, Classification>;

/// Exact texts, then fingerprints (statements that differ only in literal values).
#[derive(Debug, Default)]
struct Caches {
    exact: Cache,
    fingerprints: Cache,
}

/// One set of caches per dialect: the same text reads differently on PostgreSQL and on
/// MariaDB (`/*! … */` is a comment to one and SQL to the other), so a classification is
/// never shared across dialects.
#[derive(Debug, Default)]
struct DialectCaches {
    postgres: Caches,
    mysql: Caches,
}

impl DialectCaches {
    fn of(&mut self, dialect: SqlDialect) -> &mut Caches {
        match dialect {
            SqlDialect::Postgres => &mut self.postgres,
            SqlDialect::MySql => &mut self.mysql,
        }
    }
}

/// A compiled policy.
#[derive(Debug, Default)]
pub struct Policy {
    rules: RuleSet,
    dialect_cache: Mutex<DialectCaches>,
}

impl Policy {
    pub fn new(rules: RuleSet) -> Policy {
        Policy {
            rules,
            dialect_cache: Mutex::new(DialectCaches::default()),
        }
    }

    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Classifies `sql`, from the cache when it (or a text differing only in literal values)
    /// was seen before.
    pub fn classify(&self, sql: &str, dialect: SqlDialect) -> Classification {
        if sql.len() > CACHE_MAX_SQL {
            return Arc::new(classify::classify(sql, dialect));
        }
        let exact = self.cache().of(dialect).exact.get(sql).cloned();
        if let Some(hit) = exact {
            return hit;
        }
        let fingerprint = classify::fingerprint(sql, dialect);
        // (The lookup's lock is released before `remember` takes it again.)
        let shared = fingerprint
            .as_deref()
            .and_then(|fp| self.cache().of(dialect).fingerprints.get(fp).cloned());
        if let Some(hit) = shared {
            self.remember(dialect, |c| &mut c.exact, sql, &hit);
            return hit;
        }
        let result = Arc::new(classify::classify(sql, dialect));
        self.remember(dialect, |c| &mut c.exact, sql, &result);
        // A classification that read a literal's value is this text's alone.
        let shareable = match result.as_ref() {
            Ok(list) => !list.iter().any(|c| c.reads_literals),
            Err(_) => true,
        };
        if let Some(fp) = fingerprint.filter(|_| shareable) {
            self.remember(dialect, |c| &mut c.fingerprints, &fp, &result);
        }
        result
    }

    fn remember(
        &self,
        dialect: SqlDialect,
        which: impl Fn(&mut Caches) -> &mut Cache,
        key: &str,
        value: &Classification,
    ) {
        let mut caches = self.cache();
        let cache = which(caches.of(dialect));
        if cache.len() >= CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(key.into(), Arc::clone(value));
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, DialectCaches> {
        self.dialect_cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Decides a message: every statement of `sql`.
    pub fn decide(
        &self,
        identity: &Identity,
        database: &str,
        sql: &str,
        dialect: SqlDialect,
    ) -> Report {
        let classified = self.classify(sql, dialect);
        match classified.as_ref() {
            Ok(statements) => self.decide_classified(identity, database, statements),
            Err(e) => {
                let report = self.decide_unparsed(identity, database, sql, e);
                Report {
                    decision: report.decision.clone(),
                    statements: vec![report],
                }
            }
        }
    }

    /// Decides statements already classified (for example a prepared statement's).
    pub fn decide_classified(
        &self,
        identity: &Identity,
        database: &str,
        statements: &[Classified],
    ) -> Report {
        let reports: Vec<StatementReport> = statements
            .iter()
            .map(|s| {
                let matched = self.matching(identity, database, s);
                StatementReport {
                    classified: Some(s.clone()),
                    unparsed: None,
                    matched: report_rules(&matched, self.rules.mode),
                    decision: self.combine(&matched, || fallback_reason(s)),
                }
            })
            .collect();
        let decision = strictest(reports.iter().map(|r| r.decision.clone()));
        Report {
            statements: reports,
            decision,
        }
    }

    /// The decision alone, as the statement path needs it: nothing is copied into a report.
    pub fn decision(
        &self,
        identity: &Identity,
        database: &str,
        statements: &[Classified],
    ) -> Decision {
        strictest(statements.iter().map(|s| {
            let matched = self.matching(identity, database, s);
            self.combine(&matched, || fallback_reason(s))
        }))
    }

    /// [`Policy::decide`] as the proxy enforces it: a statement a `require_reason` rule
    /// matches is refused unless it states a reason (its leading comment, else
    /// `session_reason`). What `policy explain`, `policy test` and `policy backtest` show.
    pub fn decide_stated(
        &self,
        identity: &Identity,
        database: &str,
        sql: &str,
        dialect: SqlDialect,
        session_reason: Option<&str>,
    ) -> Report {
        let mut report = self.decide(identity, database, sql, dialect);
        let statements: Vec<Classified> = report
            .statements
            .iter()
            .filter_map(|s| s.classified.clone())
            .collect();
        let stated = || super::reason::stated(session_reason, sql, dialect).is_some();
        report.decision =
            self.with_reason_required(identity, database, &statements, stated, report.decision);
        report
    }

    /// `decision`, or the refusal of a statement that states no reason where a matching rule
    /// requires one (`stated`: whether it states one, asked only when a rule requires one).
    pub fn with_reason_required(
        &self,
        identity: &Identity,
        database: &str,
        statements: &[Classified],
        stated: impl FnOnce() -> bool,
        decision: Decision,
    ) -> Decision {
        if decision.action == Action::Deny
            || self.rules.mode == Mode::Audit
            || !self.rules.rules.iter().any(|r| r.require_reason)
            || stated()
        {
            return decision;
        }
        // The deciding rule itself (the only one an unparsed statement, which has no
        // classification to match, can be decided by), then any enforced rule that matches.
        let deciding = decision.rule.as_deref().filter(|id| {
            self.rules
                .rules
                .iter()
                .any(|r| r.require_reason && r.mode != Some(Mode::Audit) && r.id == *id)
        });
        match deciding.or_else(|| self.reason_required_by(identity, database, statements)) {
            Some(rule) => Decision {
                action: Action::Deny,
                decided: Action::Deny,
                rule: Some(rule.to_owned()),
                reason: format!(
                    "a reason is required: start the statement with /* reason: … */ or set {} for the session (docs/policy.md, \"Reasons and actors\")",
                    super::reason::SESSION_SETTING
                ),
                approval: None,
                dry_run: false,
                result_cap: None,
            },
            None => decision,
        }
    }

    /// The first enforced rule with `require_reason: true` that matches one of `statements`
    /// for `identity`: such a statement is refused unless it states a reason.
    pub fn reason_required_by(
        &self,
        identity: &Identity,
        database: &str,
        statements: &[Classified],
    ) -> Option<&str> {
        if self.rules.mode == Mode::Audit {
            return None;
        }
        let mut requiring = self
            .rules
            .rules
            .iter()
            .filter(|r| r.require_reason && r.mode != Some(Mode::Audit))
            .peekable();
        requiring.peek()?;
        requiring
            .find(|r| {
                r.matches_who(identity, database)
                    && statements
                        .iter()
                        .any(|s| r.matches_statement(&self.effective(s)))
            })
            .map(|r| r.id.as_str())
    }

    fn matching(&self, identity: &Identity, database: &str, s: &Classified) -> Vec<&Rule> {
        let s = self.effective(s);
        self.rules
            .rules
            .iter()
            .filter(|r| r.matches_who(identity, database) && r.matches_statement(&s))
            .collect()
    }

    /// Whether any rule lets `identity` change anything on `database` (allows or holds a
    /// statement of a kind other than read, session and transaction, or of any kind), or the
    /// default or audit mode lets everything through.
    pub fn can_change(&self, identity: &Identity, database: &str) -> bool {
        if self.rules.mode == Mode::Audit || self.rules.default.is_some_and(|d| d != Action::Deny) {
            return true;
        }
        self.rules.rules.iter().any(|r| {
            r.action != Action::Deny
                && r.mode != Some(Mode::Audit)
                && r.matches_who(identity, database)
                && r.matches.kinds.as_ref().is_none_or(|kinds| {
                    kinds
                        .iter()
                        .any(|k| !matches!(k, Kind::Read | Kind::Session | Kind::Transaction))
                })
        })
    }

    /// A classification with what this policy adds to it: a change to a setting the policy's
    /// allowlist does not name is a `setting` statement.
    pub fn effective<'a>(&self, s: &'a Classified) -> std::borrow::Cow<'a, Classified> {
        let allowed = |x: &String| {
            if s.mysql {
                self.rules.mysql_setting_allowed(x)
            } else {
                self.rules.setting_allowed(x)
            }
        };
        if s.settings.iter().all(allowed) {
            return std::borrow::Cow::Borrowed(s);
        }
        let mut s = s.clone();
        s.kinds.insert(classify::Kind::Setting);
        std::borrow::Cow::Owned(s)
    }

    /// A classification with what the target's catalog adds to it (`ConnInfo::user_functions`:
    /// `f:` functions, `t:` types, `v:` views): a call of a function, or a name after a dot, that
    /// names one of the target's functions outside `pg_catalog` (which can do anything, and may
    /// overload a built-in name), a cast to a type whose cast or domain check runs one, and a
    /// read of a view that runs one, are `call`s.
    pub fn with_user_functions<'a>(
        s: &'a Classified,
        user_functions: &std::collections::BTreeSet<String>,
    ) -> std::borrow::Cow<'a, Classified> {
        let bare = |f: &String| f.rsplit('.').next().unwrap_or(f).to_owned();
        let has = |prefix: &str, name: &String| {
            user_functions.contains(&format!("{prefix}{}", bare(name)))
        };
        let calls = s
            .functions
            .iter()
            .chain(&s.field_names)
            .any(|f| has("f:", f))
            || s.types.iter().any(|t| has("t:", t))
            || s.tables.iter().any(|t| has("v:", t));
        if !calls || s.kinds.contains(&classify::Kind::Call) {
            return std::borrow::Cow::Borrowed(s);
        }
        let mut s = s.clone();
        s.kinds.insert(classify::Kind::Call);
        std::borrow::Cow::Owned(s)
    }

    fn decide_unparsed(
        &self,
        identity: &Identity,
        database: &str,
        sql: &str,
        error: &classify::Error,
    ) -> StatementReport {
        let guessed = classify::Error::guess(sql);
        let matched: Vec<&Rule> = self
            .rules
            .rules
            .iter()
            .filter(|r| r.matches_who(identity, database) && r.matches_unparsed(guessed))
            .collect();
        let what = guessed.map_or(String::new(), |k| format!(" ({} statement)", k.name()));
        let mut decision = self.combine(&matched, String::new);
        // A rule may let one unreadable statement through, never a batch: what follows a `;`
        // would be let through with it unseen. (A `;` inside a literal is refused too.)
        if !matched.is_empty() && sql.trim().trim_end_matches(';').contains(';') {
            decision = Decision {
                action: Action::Deny,
                decided: Action::Deny,
                rule: None,
                reason: format!(
                    "the statement could not be analysed{what} and holds several statements; send it alone: {error}"
                ),
                approval: None,
                dry_run: false,
                result_cap: None,
            };
        }
        if matched.is_empty() {
            // Fail closed: SQL tollgate cannot read is refused whatever the default says.
            decision = Decision {
                action: Action::Deny,
                decided: Action::Deny,
                rule: None,
                reason: format!("the statement could not be analysed{what}: {error}"),
                approval: None,
                dry_run: false,
                result_cap: None,
            };
        }
        StatementReport {
            classified: None,
            unparsed: Some(error.to_string()),
            matched: report_rules(&matched, self.rules.mode),
            decision,
        }
    }

    /// Least privilege over the enforcing rules; audit-mode rules never decide.
    fn combine(&self, matched: &[&Rule], fallback: impl FnOnce() -> String) -> Decision {
        let global_audit = self.rules.mode == Mode::Audit;
        // The strictest action; among equals, the rule that comes first.
        let enforcing = matched
            .iter()
            .filter(|r| r.mode != Some(Mode::Audit))
            .rev()
            .max_by_key(|r| r.action);
        let (decided, rule, reason, approval) = match enforcing {
            Some(r) => (
                r.action,
                Some(r.id.clone()),
                r.reason.clone().unwrap_or_else(|| match r.action {
                    Action::Allow => "allowed".to_owned(),
                    Action::Deny => "denied by policy".to_owned(),
                    Action::RequireApproval => "needs approval".to_owned(),
                }),
                r.approval.clone(),
            ),
            None => (
                self.rules.default.unwrap_or(Action::Deny),
                None,
                fallback(),
                None,
            ),
        };
        Decision {
            action: if global_audit { Action::Allow } else { decided },
            decided,
            rule,
            reason,
            approval,
            dry_run: global_audit && decided != Action::Allow,
            // A policy in audit mode forwards everything, results whole.
            result_cap: if global_audit || decided == Action::Deny {
                None
            } else {
                super::cap::applied(matched)
            },
        }
    }
}

fn fallback_reason(s: &Classified) -> String {
    let kinds: Vec<&str> = s.kinds.iter().map(|k| k.name()).collect();
    format!("no rule allows this {} statement", kinds.join("/"))
}

/// The strictest of some decisions (the first among equals); an empty message is allowed.
fn strictest(decisions: impl Iterator<Item = Decision>) -> Decision {
    let mut best: Option<Decision> = None;
    // The statements of one message share its result: every statement's cap counts.
    let mut cap = None;
    for d in decisions {
        cap = super::cap::tightest(cap, d.result_cap.as_ref());
        if best.as_ref().is_none_or(|b| d.action > b.action) {
            best = Some(d);
        }
    }
    let mut best = best.unwrap_or_else(|| Decision {
        action: Action::Allow,
        decided: Action::Allow,
        rule: None,
        reason: "empty query".to_owned(),
        approval: None,
        dry_run: false,
        result_cap: None,
    });
    if best.action != Action::Deny {
        best.result_cap = cap;
    }
    best
}

fn report_rules(matched: &[&Rule], global: Mode) -> Vec<MatchedRule> {
    matched
        .iter()
        .map(|r| MatchedRule {
            id: r.id.clone(),
            action: r.action,
            mode: if global == Mode::Audit {
                Mode::Audit
            } else {
                r.mode.unwrap_or_default()
            },
        })
        .collect()
}

/// The kinds a report's statements have, for logs.
pub fn kinds_of(report: &Report) -> Vec<Kind> {
    let mut kinds: Vec<Kind> = report
        .statements
        .iter()
        .filter_map(|s| s.classified.as_ref())
        .flat_map(|c| c.kinds.iter().copied())
        .collect();
    kinds.sort();
    kinds.dedup();
    kinds
}

/// `tollgate policy explain` as text: each statement's classification, matched rules and
/// decision, then the message's decision.
pub fn explain_text(report: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let list = |items: Vec<String>| {
        if items.is_empty() {
            "-".to_owned()
        } else {
            items.join(", ")
        }
    };
    for (i, s) in report.statements.iter().enumerate() {
        let _ = writeln!(out, "statement {}", i + 1);
        match (&s.classified, &s.unparsed) {
            (Some(c), _) => {
                let _ = writeln!(
                    out,
                    "  kinds       {}",
                    list(c.kinds.iter().map(|k| k.name().to_owned()).collect())
                );
                let _ = writeln!(
                    out,
                    "  tables      {}",
                    list(c.tables.iter().cloned().collect())
                );
                let _ = writeln!(
                    out,
                    "  functions   {}",
                    list(c.functions.iter().cloned().collect())
                );
                let mut conditions = Vec::new();
                if c.unbounded_write {
                    conditions.push("unbounded_write".to_owned());
                }
                if !c.unfiltered_reads.is_empty() {
                    conditions.push(format!(
                        "unfiltered_read ({})",
                        list(c.unfiltered_reads.iter().cloned().collect())
                    ));
                }
                if c.select_into {
                    conditions.push("select_into".to_owned());
                }
                if c.copy_program {
                    conditions.push("copy_program".to_owned());
                }
                if c.copy_file {
                    conditions.push("copy_file".to_owned());
                }
                if let Some(l) = c.limit {
                    conditions.push(format!("limit {l}"));
                }
                let _ = writeln!(out, "  conditions  {}", list(conditions));
            }
            (None, Some(why)) => {
                let _ = writeln!(out, "  unparsed    {why}");
            }
            (None, None) => {}
        }
        let rules: Vec<String> = s
            .matched
            .iter()
            .map(|m| {
                format!(
                    "{} ({}{})",
                    m.id,
                    m.action.name(),
                    if m.mode == Mode::Audit { ", audit" } else { "" }
                )
            })
            .collect();
        let _ = writeln!(out, "  rules       {}", list(rules));
        let _ = writeln!(out, "  decision    {}", decision_text(&s.decision));
    }
    let _ = writeln!(out, "decision      {}", decision_text(&report.decision));
    out
}

fn decision_text(d: &Decision) -> String {
    let by = d
        .rule
        .as_deref()
        .map_or("default".to_owned(), |r| format!("rule {r}"));
    let mut text = format!("{} by {by}: {}", d.action.name(), d.reason);
    if d.dry_run {
        text.push_str(&format!(" (audit mode: would be {})", d.decided.name()));
    }
    if let Some(a) = &d.approval {
        text.push_str(&format!(
            " (approver group {}, timeout {})",
            a.group,
            humantime::format_duration(a.timeout)
        ));
    }
    if let Some(cap) = &d.result_cap {
        for (what, l) in [("rows", &cap.rows), ("bytes", &cap.bytes)] {
            if let Some(l) = l {
                text.push_str(&format!(
                    " (result cap {} {what} by rule {})",
                    l.max, l.rule
                ));
            }
        }
    }
    text
}
