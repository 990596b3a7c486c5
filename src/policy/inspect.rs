//! The policy engine as the inspect stage: one decision per statement message, per-connection
//! memory of prepared statements (so SQL-level EXECUTE is judged by what it runs), and the
//! policy files reloaded without dropping connections.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tracing::{error, info, warn};

use super::classify::{Classified, Kind, SqlDialect};
use super::engine::{Decision, Policy};
use super::rules::{Action, PolicyError, RuleSet};
use crate::pipeline::{ConnInfo, ConnInspect, Inspect, Origin, Ruling, Statement, Verdict};

/// Prepared statements remembered per connection, at most.
const MAX_PREPARED: usize = 10_000;

/// The live policy and where it came from.
pub struct PolicyInspector {
    files: Vec<PathBuf>,
    current: ArcSwap<Policy>,
    /// Modification times of the files when last loaded.
    stamps: std::sync::Mutex<Vec<Option<SystemTime>>>,
    dialect: SqlDialect,
    /// Where reloads are recorded, once the audit store is open.
    recorder: std::sync::OnceLock<crate::audit::Recorder>,
}

impl PolicyInspector {
    /// Loads the policy files; fails if any is invalid.
    pub fn load(
        files: Vec<PathBuf>,
        dialect: SqlDialect,
    ) -> Result<PolicyInspector, Vec<PolicyError>> {
        let stamps = stamps(&files);
        let rules = RuleSet::load(&files)?;
        info!(files = ?files, rules = rules.rules.len(), "policy loaded");
        Ok(PolicyInspector {
            files,
            current: ArcSwap::from_pointee(Policy::new(rules)),
            stamps: std::sync::Mutex::new(stamps),
            dialect,
            recorder: std::sync::OnceLock::new(),
        })
    }

    /// Records every later reload, successful or not, in the audit trail.
    pub fn record_to(&self, recorder: crate::audit::Recorder) {
        let _ = self.recorder.set(recorder);
    }

    fn record(&self, outcome: crate::audit::Outcome, detail: serde_json::Value) {
        if let Some(r) = self.recorder.get() {
            use crate::audit::{Event, Who, kind};
            if let Err(e) = r.record(Event::new(
                kind::POLICY_RELOAD,
                outcome,
                Who::daemon(),
                detail,
            )) {
                error!(error = %e, "policy reload not recorded");
            }
        }
    }

    pub fn policy(&self) -> Arc<Policy> {
        self.current.load_full()
    }

    /// Reads the files again. A broken policy keeps the old one in force and reports why.
    pub fn reload(&self) -> Result<usize, Vec<PolicyError>> {
        let new_stamps = stamps(&self.files);
        match RuleSet::load(&self.files) {
            Ok(rules) => {
                let n = rules.rules.len();
                self.current.store(Arc::new(Policy::new(rules)));
                *self.stamps.lock().unwrap_or_else(|p| p.into_inner()) = new_stamps;
                info!(rules = n, "policy reloaded");
                metrics::counter!(crate::metrics::POLICY_RELOADS, "outcome" => "success")
                    .increment(1);
                self.record(
                    crate::audit::Outcome::Success,
                    serde_json::json!({"files": self.files, "rules": n}),
                );
                Ok(n)
            }
            Err(errors) => {
                *self.stamps.lock().unwrap_or_else(|p| p.into_inner()) = new_stamps;
                for e in &errors {
                    error!(error = %e, "policy reload failed; the previous policy stays in force");
                }
                metrics::counter!(crate::metrics::POLICY_RELOADS, "outcome" => "failure")
                    .increment(1);
                self.record(
                    crate::audit::Outcome::Failure,
                    serde_json::json!({
                        "files": self.files,
                        "errors": errors.iter().map(|e| crate::mask::for_log(&e.to_string())).collect::<Vec<_>>(),
                    }),
                );
                Err(errors)
            }
        }
    }

    /// Reloads if a file changed since the last load (checked by the reload task).
    pub fn reload_if_changed(&self) {
        let now = stamps(&self.files);
        let changed = *self.stamps.lock().unwrap_or_else(|p| p.into_inner()) != now;
        if changed {
            let _ = self.reload();
        }
    }
}

fn stamps(files: &[PathBuf]) -> Vec<Option<SystemTime>> {
    files
        .iter()
        .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .collect()
}

/// The inspect stage backed by a shared [`PolicyInspector`]: each connection consults the
/// policy in force at each statement, so a reload applies to live connections.
pub struct PolicyStage(pub Arc<PolicyInspector>);

impl Inspect for PolicyStage {
    fn connect(&self, _conn: &ConnInfo) -> Box<dyn ConnInspect> {
        Box::new(ConnPolicy {
            inspector: Arc::clone(&self.0),
            prepared: HashMap::new(),
        })
    }
}

/// One connection's view: its prepared statements' classifications.
pub struct ConnPolicy {
    inspector: Arc<PolicyInspector>,
    prepared: HashMap<String, Arc<Vec<Classified>>>,
}

impl ConnInspect for ConnPolicy {
    fn inspect(&mut self, conn: &ConnInfo, statement: &Statement<'_>) -> Ruling {
        let policy = self.inspector.policy();
        let (decision, kinds, tables) = match statement.origin {
            // A protocol-level call by OID has no SQL to analyse: fail closed.
            Origin::FunctionCall { oid } => (
                refused(format!("function calls by OID ({oid}) are not analysed")),
                Vec::new(),
                Vec::new(),
            ),
            _ => self.decide_sql(&policy, conn, statement),
        };
        Ruling {
            verdict: verdict(conn, statement, &decision, &kinds),
            action: action_name(decision.action),
            decided: action_name(decision.decided),
            rule: decision.rule,
            reason: decision.reason,
            kinds: kinds.iter().map(|k| k.name()).collect(),
            tables,
            hold: match (decision.action, decision.approval) {
                (Action::RequireApproval, Some(a)) => Some(crate::pipeline::Hold {
                    group: a.group,
                    timeout: a.timeout,
                }),
                _ => None,
            },
        }
    }
}

/// A decision refusing a message whatever the rules say.
fn refused(reason: String) -> Decision {
    Decision {
        action: Action::Deny,
        decided: Action::Deny,
        rule: None,
        reason,
        approval: None,
        dry_run: false,
    }
}

fn action_name(a: Action) -> &'static str {
    match a {
        Action::Allow => "allow",
        Action::Deny => "deny",
        Action::RequireApproval => "require_approval",
    }
}

fn tables(list: &[Classified]) -> Vec<String> {
    let mut t: Vec<String> = list.iter().flat_map(|c| c.tables.iter().cloned()).collect();
    t.sort();
    t.dedup();
    t
}

fn kinds(list: &[Classified]) -> Vec<Kind> {
    let mut kinds: Vec<Kind> = list.iter().flat_map(|c| c.kinds.iter().copied()).collect();
    kinds.sort();
    kinds.dedup();
    kinds
}

impl ConnPolicy {
    fn decide_sql(
        &mut self,
        policy: &Policy,
        conn: &ConnInfo,
        statement: &Statement<'_>,
    ) -> (Decision, Vec<Kind>, Vec<String>) {
        let dialect = match conn.protocol {
            crate::config::Protocol::Postgres => self.inspector.dialect,
            crate::config::Protocol::Mysql => SqlDialect::MySql,
        };
        let classified = policy.classify(statement.sql, dialect);
        let Ok(list) = classified.as_ref() else {
            let report = policy.decide(&conn.identity, &conn.database, statement.sql, dialect);
            return (report.decision, Vec::new(), Vec::new());
        };
        let decision = if list.iter().any(|c| c.executes.is_some()) {
            // SQL-level EXECUTE runs what was prepared: judge that instead.
            let mut effective: Vec<Classified> = Vec::with_capacity(list.len());
            for c in list {
                match &c.executes {
                    Some(name) => match self.prepared.get(name) {
                        Some(prepared) => effective.extend(prepared.iter().cloned()),
                        None => {
                            return (
                                refused(format!(
                                    "EXECUTE of prepared statement {name:?}, which tollgate did not see prepared"
                                )),
                                kinds(list),
                                tables(list),
                            );
                        }
                    },
                    None => effective.push(c.clone()),
                }
            }
            policy.decision(&conn.identity, &conn.database, &effective)
        } else {
            policy.decision(&conn.identity, &conn.database, list)
        };
        // A held statement may run once approved: what it prepares or deallocates is
        // remembered too, so a later EXECUTE is judged by what really runs. (A refused one
        // never runs; EXECUTE of its name then fails on the server.)
        if matches!(decision.action, Action::Allow | Action::RequireApproval) {
            self.remember(statement, list);
        }
        (decision, kinds(list), tables(list))
    }

    /// Keeps what a forwarded PREPARE or Parse defined, and forgets what DEALLOCATE drops.
    fn remember(&mut self, statement: &Statement<'_>, list: &[Classified]) {
        if let Origin::Prepare { name } = statement.origin
            && !name.is_empty()
        {
            self.insert(name.to_owned(), Arc::new(list.to_vec()));
        }
        for c in list {
            if let Some(name) = &c.prepares {
                self.insert(name.clone(), Arc::new(vec![c.clone()]));
            }
            if let Some(name) = &c.deallocates {
                self.prepared.remove(name);
            }
            if c.deallocates_all {
                self.prepared.clear();
            }
        }
    }

    fn insert(&mut self, name: String, classified: Arc<Vec<Classified>>) {
        if self.prepared.len() >= MAX_PREPARED && !self.prepared.contains_key(&name) {
            warn!(
                name,
                "too many prepared statements remembered; forgetting them all"
            );
            self.prepared.clear();
        }
        self.prepared.insert(name, classified);
    }
}

fn verdict(conn: &ConnInfo, statement: &Statement<'_>, d: &Decision, kinds: &[Kind]) -> Verdict {
    if d.dry_run {
        warn!(conn = %conn.id, subject = conn.identity.subject, rule = d.rule, decided = ?d.decided, ?kinds, "audit mode: the statement would have been refused");
    }
    match d.action {
        Action::Allow => Verdict::Forward,
        Action::Deny | Action::RequireApproval => {
            info!(
                conn = %conn.id,
                subject = conn.identity.subject,
                rule = d.rule,
                action = ?d.action,
                ?kinds,
                origin = ?statement.origin,
                "statement refused by policy"
            );
            Verdict::Refuse {
                sqlstate: "42501".to_owned(),
                message: d.message(),
            }
        }
    }
}
