//! `tollgate policy test CASES.yaml…`: fixture cases run through the policy engine the daemon
//! uses (`Policy::decide`, offline: no database is reached), each mismatch printed with the
//! case's file:line.
//!
//! ```yaml
//! policies: [agents.yaml]            # relative to this file; --policy overrides
//! defaults: { sub: agent-7, groups: [ai-agents], database: shop, dialect: postgres }
//! # also per case or in defaults: client_id, issuer, actor (the person the agent acts for),
//! # reason (the session's tollgate.reason; a statement's own comment still counts)
//! cases:
//!   - sql: select * from orders where id = 1
//!     expect: allow                  # allow | deny | require_approval
//!     rule: agents-read              # the deciding rule; `default` for the default policy
//!     result_cap: { rows: 10000 }    # optional: the cap the decision carries
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::Spanned;
use tollgate::auth::Identity;
use tollgate::policy::cap::ResultCap;
use tollgate::policy::classify::SqlDialect;
use tollgate::policy::{Action, Policy, RuleSet};

/// One cases file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CasesFile {
    /// Policy files, relative to the cases file.
    #[serde(default)]
    policies: Vec<PathBuf>,
    #[serde(default)]
    defaults: Who,
    cases: Vec<Spanned<Case>>,
}

/// Who sends a statement, and where (each field falls back on `defaults`).
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct Who {
    sub: Option<String>,
    groups: Option<Vec<String>>,
    client_id: Option<String>,
    issuer: Option<String>,
    /// The person the agent acts for (the token's actor claim).
    actor: Option<String>,
    /// The session's stated reason (`tollgate.reason`).
    reason: Option<String>,
    /// The database name the client asks for (it chooses the target).
    database: Option<String>,
    dialect: Option<Dialect>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum Dialect {
    Postgres,
    Mysql,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    #[serde(default)]
    name: Option<String>,
    sql: String,
    expect: Action,
    /// The deciding rule's id, or `default`; absent: not checked.
    #[serde(default)]
    rule: Option<String>,
    #[serde(default)]
    result_cap: Option<ResultCap>,
    sub: Option<String>,
    groups: Option<Vec<String>>,
    client_id: Option<String>,
    issuer: Option<String>,
    actor: Option<String>,
    reason: Option<String>,
    database: Option<String>,
    dialect: Option<Dialect>,
}

/// Runs every case of `files` (under `policies`, or each file's own `policies:`); prints the
/// mismatches and a summary. Returns whether all passed and every file was readable.
pub fn run(files: &[PathBuf], policies: &[PathBuf]) -> bool {
    let mut ok = true;
    let (mut total, mut failed) = (0usize, 0usize);
    for file in files {
        match run_file(file, policies) {
            Ok((n, mismatches)) => {
                total += n;
                failed += mismatches.len();
                for m in mismatches {
                    println!("{m}");
                }
            }
            Err(errors) => {
                ok = false;
                for e in errors {
                    eprintln!("{e}");
                }
            }
        }
    }
    println!(
        "{total} case(s), {} passed, {failed} failed",
        total - failed
    );
    ok && failed == 0
}

/// The number of cases and the mismatches (`file:line: …`) of one file; `Err`: the file or
/// its policies could not be read.
fn run_file(file: &Path, policies: &[PathBuf]) -> Result<(usize, Vec<String>), Vec<String>> {
    let name = file.display().to_string();
    let text =
        std::fs::read_to_string(file).map_err(|e| vec![format!("{name}: cannot read: {e}")])?;
    let parsed: CasesFile = serde_saphyr::from_str(&text).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        let mut message = e.without_snippet().to_string();
        if let Some(cut) = message.rfind(" at line ") {
            message.truncate(cut);
        }
        vec![format!("{name}:{line}:{column}: {message}")]
    })?;
    let files: Vec<PathBuf> = if policies.is_empty() {
        let base = file.parent().unwrap_or(Path::new("."));
        parsed.policies.iter().map(|p| base.join(p)).collect()
    } else {
        policies.to_vec()
    };
    if files.is_empty() {
        return Err(vec![format!(
            "{name}: no policy files (give --policy FILE or `policies:` in the file)"
        )]);
    }
    let rules =
        RuleSet::load(&files).map_err(|e| e.iter().map(|e| e.to_string()).collect::<Vec<_>>())?;
    let policy = Policy::new(rules);
    let mut mismatches = Vec::new();
    for case in &parsed.cases {
        let line = case.referenced.line();
        if let Some(problem) = check(&policy, &parsed.defaults, &case.value) {
            let label = case
                .value
                .name
                .clone()
                .unwrap_or_else(|| tollgate::mask::for_log(&case.value.sql));
            mismatches.push(format!("{name}:{line}: case {label:?}: {problem}"));
        }
    }
    Ok((parsed.cases.len(), mismatches))
}

/// What differs between a case's expectation and the decision; `None` when it holds.
fn check(policy: &Policy, defaults: &Who, case: &Case) -> Option<String> {
    let pick = |own: &Option<String>, default: &Option<String>| {
        own.clone().or_else(|| default.clone()).unwrap_or_default()
    };
    let identity = Identity {
        subject: pick(&case.sub, &defaults.sub),
        groups: case
            .groups
            .clone()
            .or_else(|| defaults.groups.clone())
            .unwrap_or_default(),
        client_id: case
            .client_id
            .clone()
            .or_else(|| defaults.client_id.clone()),
        issuer: pick(&case.issuer, &defaults.issuer),
        expires_at: None,
        actor: case.actor.clone().or_else(|| defaults.actor.clone()),
    };
    let reason = case.reason.as_deref().or(defaults.reason.as_deref());
    let database = pick(&case.database, &defaults.database);
    let dialect = match case.dialect.or(defaults.dialect) {
        Some(Dialect::Mysql) => SqlDialect::MySql,
        _ => SqlDialect::Postgres,
    };
    let decision = policy
        .decide_stated(&identity, &database, &case.sql, dialect, reason)
        .decision;
    let got_rule = decision.rule.clone().unwrap_or_else(|| "default".into());
    let got = format!("{} by {got_rule}", decision.action.name());
    let mut wrong = decision.action != case.expect;
    if let Some(rule) = &case.rule {
        wrong |= *rule != got_rule;
    }
    if let Some(want) = &case.result_cap {
        let cap = decision.result_cap.as_ref();
        let rows = cap.and_then(|c| c.rows.as_ref()).map(|l| l.max);
        let bytes = cap.and_then(|c| c.bytes.as_ref()).map(|l| l.max);
        if want.rows.is_some_and(|r| rows != Some(r))
            || want.bytes.is_some_and(|b| bytes != Some(b))
        {
            return Some(format!(
                "expected a result cap of {:?} rows / {:?} bytes, got {rows:?} rows / {bytes:?} bytes ({got})",
                want.rows, want.bytes
            ));
        }
    }
    wrong.then(|| {
        format!(
            "expected {} by {}, got {got}: {}",
            case.expect.name(),
            case.rule.as_deref().unwrap_or("any rule"),
            tollgate::mask::for_log(&decision.reason)
        )
    })
}
