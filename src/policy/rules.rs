//! The policy files operators write: the YAML model, its validation, and rule matching.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use super::cap::ResultCap;
use super::classify::{Classified, Kind};
use crate::auth::Identity;

/// What a rule does to the statements it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    // Ordered by strictness: least privilege takes the greatest.
    Allow,
    RequireApproval,
    Deny,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::RequireApproval => "require_approval",
            Action::Deny => "deny",
        }
    }
}

/// Enforce decisions, or only record what they would have been (a dry run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Enforce,
    Audit,
}

/// Conditions that make bulk export and mass change visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// UPDATE or DELETE without WHERE, TRUNCATE.
    UnboundedWrite,
    /// A SELECT reading a table (of `tables`, when given) with neither WHERE nor LIMIT.
    UnfilteredRead,
    /// COPY … TO (any destination).
    CopyTo,
    /// SELECT … INTO a new table.
    SelectInto,
    /// COPY … TO/FROM PROGRAM.
    CopyProgram,
    /// COPY … TO/FROM a file on the database server.
    CopyFile,
}

/// Who approves a held statement, and how long the statement may wait.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    pub group: String,
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(900)
}

mod duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {text:?}: {e}")))
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

/// What a rule matches. Every field given must match (and); within a list, any item (or).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subjects: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ids: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuers: Option<Vec<String>>,
    /// Database names as clients ask for them (globs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub databases: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kinds: Option<Vec<Kind>>,
    /// Tables touched (globs, `schema.table`; an unqualified name in SQL matches any schema).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<Vec<String>>,
    /// Functions called anywhere in the statement (globs; `name` also matches `schema.name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub functions: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
    /// Columns computed over or filtered on (not read bare): `[pan, card_number]`; a pattern
    /// without a table also matches `table.column`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub computed_columns: Option<Vec<String>>,
    /// Reads whose LIMIT is absent or larger than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_over: Option<u64>,
    /// `true`: this rule is about SQL that cannot be parsed or classified (and only that).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unparsed: bool,
    /// Whether the token names a person the agent acts for (`Identity::actor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Presence>,
    /// The person the agent acts for matches a glob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actors: Option<Vec<String>>,
}

/// Whether something is there: `actor: present` or `actor: absent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    Present,
    Absent,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, rename = "match")]
    pub matches: Match,
    pub action: Action,
    /// Shown to the client when the rule blocks or holds a statement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// The most one statement this rule lets through may return; see [`ResultCap`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_cap: Option<ResultCap>,
    /// `true`: statements this rule matches are refused unless they state a reason (a leading
    /// `/* reason: … */` comment, or the session's `tollgate.reason`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_reason: bool,
}

/// One policy file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// What happens to a statement no rule matches (deny unless set otherwise).
    #[serde(default)]
    pub default: Option<Spanned<Action>>,
    #[serde(default)]
    pub mode: Option<Spanned<Mode>>,
    #[serde(default)]
    pub rules: Vec<Spanned<Rule>>,
    /// The settings statements may change (`SET`, `RESET`, `set_config`, …), by name, case
    /// insensitive; a change to any other is a `setting` statement. Without the field in any
    /// file, [`DEFAULT_SETTINGS`].
    #[serde(default)]
    pub settings: Option<Vec<String>>,
    /// What applies to MySQL and MariaDB targets only.
    #[serde(default)]
    pub mysql: Option<MysqlSection>,
}

/// The `mysql:` section of a policy file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlSection {
    /// The session variables statements may change on MySQL and MariaDB targets (`SET x`,
    /// `SET SESSION x`, `SET @@x`), by name, case insensitive; a change to any other is a
    /// `setting` statement. Without the field in any file, [`DEFAULT_MYSQL_SETTINGS`].
    /// (`GLOBAL` and `PERSIST` changes are `admin` whatever this says.)
    #[serde(default)]
    pub settings: Option<Vec<String>>,
}

/// The MySQL session variables a policy allows when no file lists its own: what client
/// libraries set (`autocommit`, `SET NAMES` of the character set tollgate pins, the isolation
/// level, time zone, timeouts), and nothing that touches logging (`sql_log_off`,
/// `general_log`), replication (`sql_log_bin`, `gtid_*`), checks (`foreign_key_checks`,
/// `unique_checks`), the lexer (`sql_mode`, character sets), generated values (`insert_id`,
/// `timestamp`) or privileges.
pub const DEFAULT_MYSQL_SETTINGS: &[&str] = &[
    "autocommit",
    "names",
    "time_zone",
    "transaction_isolation",
    "tx_isolation",
    "wait_timeout",
    "interactive_timeout",
    "net_read_timeout",
    "net_write_timeout",
    "lock_wait_timeout",
    "innodb_lock_wait_timeout",
    "max_statement_time",
    "max_execution_time",
    "group_concat_max_len",
    "div_precision_increment",
    "lc_time_names",
    "sql_select_limit",
];

/// The settings a policy allows when no file lists its own: what ordinary client libraries set
/// and nothing the lexer, the policy, privileges or logging depend on.
pub const DEFAULT_SETTINGS: &[&str] = &[
    "application_name",
    "datestyle",
    "intervalstyle",
    "timezone",
    "extra_float_digits",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "idle_session_timeout",
    "client_min_messages",
    "bytea_output",
    "jit",
    "transaction_isolation",
    "transaction_deferrable",
    "default_transaction_isolation",
    "default_transaction_deferrable",
    "geqo",
    "enable_seqscan",
    "work_mem",
];

/// A problem in a policy file, with its place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct PolicyError {
    pub file: String,
    pub line: u64,
    pub column: u64,
    pub message: String,
}

/// Rules from all policy files, validated, in order.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub default: Option<Action>,
    pub mode: Mode,
    pub rules: Vec<Rule>,
    /// Settings statements may change (lower case); `None`: [`DEFAULT_SETTINGS`].
    pub settings: Option<std::collections::BTreeSet<String>>,
    /// MySQL session variables statements may change (lower case); `None`:
    /// [`DEFAULT_MYSQL_SETTINGS`].
    pub mysql_settings: Option<std::collections::BTreeSet<String>>,
}

impl RuleSet {
    /// Whether a PostgreSQL statement may change `setting` (a name as classified, lower case).
    pub fn setting_allowed(&self, setting: &str) -> bool {
        match &self.settings {
            Some(list) => list.contains(setting),
            None => DEFAULT_SETTINGS.contains(&setting),
        }
    }

    /// Whether a MySQL statement may change the session variable `setting` (lower case).
    pub fn mysql_setting_allowed(&self, setting: &str) -> bool {
        match &self.mysql_settings {
            Some(list) => list.contains(setting),
            None => DEFAULT_MYSQL_SETTINGS.contains(&setting),
        }
    }
}

impl RuleSet {
    /// Reads and validates policy files; every problem is reported, not just the first.
    pub fn load(files: &[impl AsRef<Path>]) -> Result<RuleSet, Vec<PolicyError>> {
        let mut sources = Vec::new();
        let mut errors = Vec::new();
        for f in files {
            let name = f.as_ref().display().to_string();
            match std::fs::read_to_string(f.as_ref()) {
                Ok(text) => sources.push((name, text)),
                Err(e) => errors.push(PolicyError {
                    file: name,
                    line: 0,
                    column: 0,
                    message: format!("cannot read: {e}"),
                }),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        RuleSet::parse(&sources)
    }

    /// Parses and validates `(file name, text)` pairs.
    pub fn parse(sources: &[(String, String)]) -> Result<RuleSet, Vec<PolicyError>> {
        let mut set = RuleSet::default();
        let mut errors = Vec::new();
        let mut ids: std::collections::HashMap<String, (String, u64)> = Default::default();
        for (file, text) in sources {
            let at = |line: u64, column: u64, message: String| PolicyError {
                file: file.clone(),
                line,
                column,
                message,
            };
            let parsed: PolicyFile = match serde_saphyr::from_str(text) {
                Ok(p) => p,
                Err(e) => {
                    let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
                    let mut message = e.without_snippet().to_string();
                    if let Some(cut) = message.rfind(" at line ") {
                        message.truncate(cut);
                    }
                    errors.push(at(line, column, message));
                    continue;
                }
            };
            if let Some(d) = &parsed.default {
                if set.default.is_some_and(|prev| prev != d.value) {
                    errors.push(at(
                        d.referenced.line(),
                        d.referenced.column(),
                        "default: conflicts with another policy file".into(),
                    ));
                }
                set.default = Some(d.value);
            }
            if let Some(m) = &parsed.mode
                && m.value == Mode::Audit
            {
                set.mode = Mode::Audit;
            }
            if let Some(list) = &parsed.settings {
                set.settings
                    .get_or_insert_with(Default::default)
                    .extend(list.iter().map(|s| s.to_lowercase()));
            }
            if let Some(list) = parsed.mysql.as_ref().and_then(|m| m.settings.as_ref()) {
                set.mysql_settings
                    .get_or_insert_with(Default::default)
                    .extend(list.iter().map(|s| s.to_lowercase()));
            }
            for span in parsed.rules {
                let (line, column) = (span.referenced.line(), span.referenced.column());
                let mut rule = span.value;
                // Function and column names compare case-insensitively (MySQL's are; a quoted
                // mixed-case PostgreSQL name of a card column is still one).
                for list in [
                    &mut rule.matches.functions,
                    &mut rule.matches.computed_columns,
                ]
                .into_iter()
                .flatten()
                {
                    for f in list.iter_mut() {
                        *f = f.to_lowercase();
                    }
                }
                if let Some((other_file, other_line)) = ids.get(&rule.id) {
                    errors.push(at(
                        line,
                        column,
                        format!(
                            "rule {:?}: duplicate id (first at {other_file}:{other_line})",
                            rule.id
                        ),
                    ));
                } else {
                    ids.insert(rule.id.clone(), (file.clone(), line));
                }
                for problem in rule.problems() {
                    errors.push(at(line, column, format!("rule {:?}: {problem}", rule.id)));
                }
                set.rules.push(rule);
            }
        }
        if errors.is_empty() {
            Ok(set)
        } else {
            Err(errors)
        }
    }
}

impl Rule {
    /// What makes the rule wrong or unable to ever match.
    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let m = &self.matches;
        if self.id.trim().is_empty() {
            p.push("id must not be empty".to_owned());
        }
        let lists: [(&str, bool); 10] = [
            ("actors", m.actors.as_ref().is_some_and(Vec::is_empty)),
            ("subjects", m.subjects.as_ref().is_some_and(Vec::is_empty)),
            ("groups", m.groups.as_ref().is_some_and(Vec::is_empty)),
            (
                "client_ids",
                m.client_ids.as_ref().is_some_and(Vec::is_empty),
            ),
            ("issuers", m.issuers.as_ref().is_some_and(Vec::is_empty)),
            ("databases", m.databases.as_ref().is_some_and(Vec::is_empty)),
            ("kinds", m.kinds.as_ref().is_some_and(Vec::is_empty)),
            ("tables", m.tables.as_ref().is_some_and(Vec::is_empty)),
            ("functions", m.functions.as_ref().is_some_and(Vec::is_empty)),
            (
                "computed_columns",
                m.computed_columns.as_ref().is_some_and(Vec::is_empty),
            ),
        ];
        for (name, empty) in lists {
            if empty {
                p.push(format!(
                    "match.{name} is an empty list, so the rule can never match"
                ));
            }
        }
        if let (Some(kinds), Some(conditions)) = (&m.kinds, &m.conditions) {
            for c in conditions {
                let needs: &[Kind] = match c {
                    Condition::UnboundedWrite => &[Kind::Write],
                    Condition::UnfilteredRead => &[Kind::Read],
                    Condition::CopyTo => &[Kind::CopyOut],
                    Condition::SelectInto => &[Kind::Ddl, Kind::Read],
                    Condition::CopyProgram | Condition::CopyFile => {
                        &[Kind::CopyIn, Kind::CopyOut, Kind::Admin]
                    }
                };
                if !kinds.iter().any(|k| needs.contains(k)) {
                    p.push(format!(
                        "condition {c:?} never holds for kinds {:?}, so the rule can never match",
                        kinds.iter().map(|k| k.name()).collect::<Vec<_>>()
                    ));
                }
            }
        }
        if let (Some(kinds), Some(_)) = (&m.kinds, &m.rows_over)
            && !kinds.contains(&Kind::Read)
        {
            p.push("rows_over only applies to reads, and kinds has no read".to_owned());
        }
        if let (Some(kinds), Some(_)) = (&m.kinds, &m.tables)
            && kinds
                .iter()
                .all(|k| matches!(k, Kind::Transaction | Kind::Session))
        {
            p.push("tables never appear in session or transaction statements".to_owned());
        }
        if m.unparsed
            && (m.tables.is_some()
                || m.computed_columns.is_some()
                || m.functions.is_some()
                || m.conditions.is_some()
                || m.rows_over.is_some())
        {
            p.push(
                "an unparsed statement has no tables, functions or conditions to match".to_owned(),
            );
        }
        if m.actor == Some(Presence::Absent) && m.actors.is_some() {
            p.push("actor: absent and actors together can never match".to_owned());
        }
        if self.require_reason && self.action == Action::Deny {
            p.push("require_reason only applies to action allow or require_approval".to_owned());
        }
        if let Some(cap) = &self.result_cap {
            if cap.rows.is_none() && cap.bytes.is_none() {
                p.push("result_cap needs rows or bytes".to_owned());
            }
            if cap.rows == Some(0) || cap.bytes == Some(0) {
                p.push("result_cap limits must be above 0".to_owned());
            }
            if self.action == Action::Deny {
                p.push("result_cap only applies to allow and require_approval".to_owned());
            }
        }
        match (self.action, &self.approval) {
            (Action::RequireApproval, None) => {
                p.push("require_approval needs approval.group".to_owned())
            }
            (Action::RequireApproval, Some(a)) if a.group.is_empty() => {
                p.push("approval.group must not be empty".to_owned())
            }
            (Action::Allow | Action::Deny, Some(_)) => {
                p.push("approval only applies to action require_approval".to_owned())
            }
            _ => {}
        }
        p
    }

    /// Whether the rule's identity and database conditions hold.
    pub fn matches_who(&self, identity: &Identity, database: &str) -> bool {
        let m = &self.matches;
        any(&m.subjects, |p| glob(p, &identity.subject))
            && any(&m.groups, |p| identity.groups.iter().any(|g| glob(p, g)))
            && any(&m.client_ids, |p| {
                identity.client_id.as_deref().is_some_and(|c| glob(p, c))
            })
            && any(&m.issuers, |p| glob(p, &identity.issuer))
            && any(&m.databases, |p| glob(p, database))
            && m.actor
                .is_none_or(|want| (want == Presence::Present) == identity.actor.is_some())
            && any(&m.actors, |p| {
                identity.actor.as_deref().is_some_and(|a| glob(p, a))
            })
    }

    /// Whether the rule's statement conditions hold for a classified statement.
    pub fn matches_statement(&self, s: &Classified) -> bool {
        let m = &self.matches;
        if m.unparsed {
            return false;
        }
        // Least privilege: an allow rule must cover every kind of the statement (a read rule
        // does not let a writing CTE or a set_config through); a rule that denies or holds
        // matches any statement with one of its kinds.
        let kinds = match (&m.kinds, self.action) {
            (None, _) => true,
            (Some(kinds), Action::Allow) => s.kinds.iter().all(|k| kinds.contains(k)),
            (Some(kinds), _) => kinds.iter().any(|k| s.kinds.contains(k)),
        };
        kinds
            && any(&m.tables, |p| s.tables.iter().any(|t| table_matches(p, t)))
            && any(&m.functions, |p| {
                s.functions.iter().any(|f| name_matches(p, f))
            })
            // `*`: a whole-row or renamed reference, which may carry any column.
            && any(&m.computed_columns, |p| {
                s.computed_columns.iter().any(|c| c == "*" || name_matches(p, c))
            })
            && m.rows_over
                .is_none_or(|n| s.kinds.contains(&Kind::Read) && s.limit.is_none_or(|l| l > n))
            && m.conditions.as_ref().is_none_or(|cs| {
                cs.iter().any(|c| match c {
                    Condition::UnboundedWrite => s.unbounded_write,
                    Condition::UnfilteredRead => match &m.tables {
                        Some(patterns) => s
                            .unfiltered_reads
                            .iter()
                            .any(|t| patterns.iter().any(|p| table_matches(p, t))),
                        None => !s.unfiltered_reads.is_empty(),
                    },
                    Condition::CopyTo => s.kinds.contains(&Kind::CopyOut),
                    Condition::SelectInto => s.select_into,
                    Condition::CopyProgram => s.copy_program,
                    Condition::CopyFile => s.copy_file,
                })
            })
    }

    /// Whether the rule is about unparsed SQL and holds for one whose kind was guessed.
    pub fn matches_unparsed(&self, guessed: Option<Kind>) -> bool {
        let m = &self.matches;
        m.unparsed && any(&m.kinds, |k| guessed == Some(*k))
    }
}

fn any<T>(list: &Option<Vec<T>>, f: impl Fn(&T) -> bool) -> bool {
    list.as_ref().is_none_or(|items| items.iter().any(f))
}

/// `*` matches any run of characters, `?` any one; everything else literally. Allocation-free:
/// it runs for every rule pattern against every name of every statement.
pub fn glob(pattern: &str, text: &str) -> bool {
    if !pattern.contains(['*', '?']) {
        return pattern == text;
    }
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'?' {
            // One whole character, however many bytes it takes.
            pi += 1;
            ti += utf8_len(t[ti]);
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += utf8_len(t[mark]);
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xf0..=0xff => 4,
        0xe0..=0xef => 3,
        0xc0..=0xdf => 2,
        _ => 1,
    }
}

/// A table pattern against a table name from SQL. Unqualified names in SQL could be in any
/// schema on the search path, so they match on the table part alone.
fn table_matches(pattern: &str, table: &str) -> bool {
    fn last(s: &str) -> &str {
        s.rsplit('.').next().unwrap_or(s)
    }
    if glob(pattern, table) {
        return true;
    }
    let p_qualified = pattern.contains('.');
    let t_qualified = table.contains('.');
    match (p_qualified, t_qualified) {
        (true, false) => glob(last(pattern), table),
        (false, true) => glob(pattern, last(table)),
        _ => false,
    }
}

/// A function pattern against a called name: `name` also matches `schema.name`.
fn name_matches(pattern: &str, called: &str) -> bool {
    glob(pattern, called)
        || (!pattern.contains('.') && glob(pattern, called.rsplit('.').next().unwrap_or(called)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        for (p, t, ok) in [
            ("*", "anything", true),
            ("lo_*", "lo_export", true),
            ("lo_*", "flo_export", false),
            ("pg_read_?ile", "pg_read_file", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("exact", "exact", true),
            ("exact", "Exact", false),
            ("caf?", "café", true),
            ("*é", "café", true),
            ("c*", "", false),
            ("*", "", true),
        ] {
            assert_eq!(glob(p, t), ok, "{p} {t}");
        }
        assert!(table_matches("public.cards", "cards"));
        assert!(table_matches("cards", "billing.cards"));
        assert!(table_matches("billing.*", "billing.cards"));
        assert!(!table_matches("billing.*", "public.cards"));
        assert!(name_matches("pg_read_file", "pg_catalog.pg_read_file"));
        assert!(!name_matches(
            "pg_catalog.pg_read_file",
            "evil.pg_read_file"
        ));
    }

    fn errors(yaml: &str) -> Vec<String> {
        match RuleSet::parse(&[("p.yaml".into(), yaml.into())]) {
            Ok(_) => vec![],
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn policy_check_names_file_line_and_problem() {
        let cases = [
            (
                "rules:\n  - id: a\n    action: allow\n    match: { kinds: [reed] }\n",
                "p.yaml:4:",
                "reed",
            ),
            (
                "rules:\n  - id: a\n    action: allow\n    bogus: 1\n",
                "p.yaml:4:",
                "bogus",
            ),
            (
                "rules:\n  - id: a\n    action: allow\n  - id: a\n    action: deny\n",
                "p.yaml:4:",
                "duplicate id",
            ),
            (
                "rules:\n  - id: a\n    action: allow\n    match: { kinds: [] }\n",
                "p.yaml:2:",
                "never match",
            ),
            (
                "rules:\n  - id: a\n    action: deny\n    match: { kinds: [ddl], conditions: [unbounded_write] }\n",
                "p.yaml:2:",
                "never",
            ),
            (
                "rules:\n  - id: a\n    action: require_approval\n",
                "p.yaml:2:",
                "approval.group",
            ),
            (
                "rules:\n  - id: a\n    action: allow\n    approval: { group: x }\n",
                "p.yaml:2:",
                "only applies",
            ),
            (
                "rules:\n  - id: a\n    action: maybe\n",
                "p.yaml:3:",
                "maybe",
            ),
        ];
        for (yaml, place, needle) in cases {
            let errs = errors(yaml);
            assert!(
                errs.iter()
                    .any(|e| e.starts_with(place) && e.contains(needle)),
                "{yaml}\n{errs:?}"
            );
        }
        assert!(errors("rules:\n  - id: ok\n    action: allow\n    match: { groups: [ai-agents], kinds: [read] }\n").is_empty());
    }
}
