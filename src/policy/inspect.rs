//! The policy engine as the inspect stage: one decision per statement message, and
//! per-connection memory of prepared statements (so SQL-level EXECUTE is judged by what it
//! runs). The policy in force comes from a [`PolicySource`], so a reload applies to live
//! connections at their next statement.

use std::collections::HashMap;
use std::sync::Arc;

use tracing::{info, warn};

use super::classify::{Classified, Kind, SqlDialect};
use super::engine::{Decision, Policy};
use super::rules::Action;
use crate::pipeline::{ConnInfo, ConnInspect, Inspect, Origin, Ruling, Statement, Verdict};

/// Prepared statements remembered per connection, at most.
const MAX_PREPARED: usize = 10_000;

/// Where the inspect stage finds the policy in force and the dialect PostgreSQL targets'
/// statements are read in; `conn::policy_files::PolicyInspector` implements it over the policy
/// files (loaded, watched and reloaded there, so this module does no IO).
pub trait PolicySource: Send + Sync {
    /// The policy in force now (a reload swaps it for the next statement).
    fn policy(&self) -> Arc<Policy>;
    /// The dialect of PostgreSQL targets' statements.
    fn dialect(&self) -> SqlDialect;
}

/// The inspect stage backed by a shared [`PolicyInspector`]: each connection consults the
/// policy in force at each statement, so a reload applies to live connections.
pub struct PolicyStage(pub Arc<dyn PolicySource>);

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
    inspector: Arc<dyn PolicySource>,
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
            crate::config::Protocol::Postgres => self.inspector.dialect(),
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
