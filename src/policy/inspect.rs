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
/// Different statements one prepared-statement name may stand for, at most.
const MAX_MEANINGS: usize = 64;

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
    fn read_only(&self, identity: &crate::auth::Identity, database: &str) -> bool {
        !self.0.policy().can_change(identity, database)
    }

    fn setting_allowed(&self, name: &str) -> bool {
        self.0.policy().rules().setting_allowed(name)
    }

    fn needs_user_functions(&self) -> bool {
        true
    }

    fn connect(&self, _conn: &ConnInfo) -> Box<dyn ConnInspect> {
        Box::new(ConnPolicy {
            inspector: Arc::clone(&self.0),
            prepared: HashMap::new(),
            pending: None,
        })
    }
}

/// One connection's view: its prepared statements' classifications.
pub struct ConnPolicy {
    inspector: Arc<dyn PolicySource>,
    prepared: HashMap<String, Arc<Vec<Classified>>>,
    /// MySQL: what the last forwarded statement defines (`Some(list)`) or drops (`None`)
    /// under a name, applied when the server answers it.
    pending: Option<(String, Option<Arc<Vec<Classified>>>)>,
}

impl ConnInspect for ConnPolicy {
    fn answered(&mut self, ok: bool) {
        match self.pending.take() {
            // MariaDB drops a name's old statement before preparing the new one: after a
            // failed PREPARE the name stands for nothing (and EXECUTE of it is refused here).
            Some((name, Some(list))) if ok => {
                self.prepared.insert(name, list);
            }
            Some((name, Some(_))) => {
                self.prepared.remove(&name);
            }
            Some((name, None)) if ok => {
                self.prepared.remove(&name);
            }
            _ => {}
        }
    }

    fn inspect(&mut self, conn: &ConnInfo, statement: &Statement<'_>) -> Ruling {
        self.pending = None;
        let policy = self.inspector.policy();
        let (decision, kinds, tables) = match statement.origin {
            // A protocol-level call by OID has no SQL to analyse: fail closed.
            Origin::FunctionCall { oid } => (
                refused(format!("function calls by OID ({oid}) are not analysed")),
                Vec::new(),
                Vec::new(),
            ),
            _ => match self.too_complex(&policy, conn, statement) {
                Some(ruling) => return ruling,
                None => self.decide_sql(&policy, conn, statement),
            },
        };
        Ruling {
            verdict: verdict(conn, statement, &decision, &kinds),
            action: action_name(decision.action),
            decided: action_name(decision.decided),
            rule: decision.rule,
            reason: decision.reason,
            result_cap: decision.result_cap,
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
        result_cap: None,
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
    fn dialect(&self, conn: &ConnInfo) -> SqlDialect {
        match conn.protocol {
            crate::config::Protocol::Postgres => self.inspector.dialect(),
            crate::config::Protocol::Mysql => SqlDialect::MySql,
        }
    }

    /// A statement too long or too deeply nested to analyse is refused with SQLSTATE 54001
    /// (PostgreSQL's "statement too complex"), whatever the rules say.
    fn too_complex(
        &self,
        policy: &Policy,
        conn: &ConnInfo,
        statement: &Statement<'_>,
    ) -> Option<Ruling> {
        let classified = policy.classify(statement.sql, self.dialect(conn));
        let Err(e @ super::classify::Error::TooComplex(_)) = classified.as_ref() else {
            return None;
        };
        let message = format!("tollgate: {e}; the statement was not run");
        info!(conn = %conn.id, "statement too complex to analyse");
        Some(Ruling {
            verdict: Verdict::Refuse {
                sqlstate: "54001".into(),
                message: message.clone(),
            },
            action: "deny",
            decided: "deny",
            rule: None,
            reason: message,
            kinds: Vec::new(),
            tables: Vec::new(),
            hold: None,
            result_cap: None,
        })
    }

    fn decide_sql(
        &mut self,
        policy: &Policy,
        conn: &ConnInfo,
        statement: &Statement<'_>,
    ) -> (Decision, Vec<Kind>, Vec<String>) {
        let dialect = self.dialect(conn);
        let classified = policy.classify(statement.sql, dialect);
        let Ok(list) = classified.as_ref() else {
            // Unparsed: only an `unparsed` rule can allow it, and its `require_reason` holds.
            let report = policy.decide_stated(
                &conn.identity,
                &conn.database,
                statement.sql,
                dialect,
                conn.session_reason.as_deref(),
            );
            return (report.decision, Vec::new(), Vec::new());
        };
        // Calls of the target's own functions (its catalog, read at login) are calls.
        let adjusted: Vec<Classified>;
        let changes = !conn.user_functions.is_empty()
            && list.iter().any(|c| {
                matches!(
                    Policy::with_user_functions(c, &conn.user_functions),
                    std::borrow::Cow::Owned(_)
                )
            });
        let list: &[Classified] = if changes {
            adjusted = list
                .iter()
                .map(|c| Policy::with_user_functions(c, &conn.user_functions).into_owned())
                .collect();
            &adjusted
        } else {
            list
        };
        let mut judged: Option<Vec<Classified>> = None;
        let decision = if list.iter().any(|c| c.executes.is_some()) {
            // SQL-level EXECUTE runs what was prepared: judge that instead.
            let mut effective: Vec<Classified> = Vec::with_capacity(list.len());
            for c in list {
                match &c.executes {
                    Some(name) => match self.prepared.get(name) {
                        // What it may run, and its own arguments (expressions too).
                        Some(prepared) => {
                            effective.extend(prepared.iter().cloned());
                            effective.push(c.clone());
                        }
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
            let decision = policy.decision(&conn.identity, &conn.database, &effective);
            judged = Some(effective);
            decision
        } else {
            policy.decision(&conn.identity, &conn.database, list)
        };
        // A rule may ask for a reason: without one, refused whatever it would have done.
        let stated = || {
            super::reason::stated(conn.session_reason.as_deref(), statement.sql, dialect).is_some()
        };
        let decision = policy.with_reason_required(
            &conn.identity,
            &conn.database,
            judged.as_deref().unwrap_or(list),
            stated,
            decision,
        );
        // A held statement may run once approved: what it prepares is remembered too, so a
        // later EXECUTE is judged by what really runs. (A refused one never runs; EXECUTE of
        // its name then fails on the server.) Too many names: refused rather than forgotten.
        let runs = matches!(decision.action, Action::Allow | Action::RequireApproval);
        if dialect == SqlDialect::MySql {
            if let Err(reason) = self.follow(list, runs) {
                return (refused(reason), kinds(list), tables(list));
            }
        } else if runs && let Err(reason) = self.remember(statement, list) {
            return (refused(reason), kinds(list), tables(list));
        }
        (decision, kinds(list), tables(list))
    }

    /// Keeps what a forwarded PREPARE or Parse may define.
    ///
    /// tollgate does not learn whether the server accepted a PREPARE, a Parse, a DEALLOCATE or
    /// a Close (the server refuses a PREPARE of a name it holds, skips everything after an error
    /// in a transaction block or an extended-protocol batch), so a name keeps every statement
    /// it may stand for, and an EXECUTE is judged as the strictest of them: a shadow
    /// `PREPARE p AS SELECT 1` that the server refuses cannot turn an approved
    /// `PREPARE p AS DELETE …` into a read. Nothing is forgotten on DEALLOCATE or DISCARD for
    /// the same reason. The unnamed statement ("") is replaced by every Parse, as the server
    /// replaces it, unless that Parse was refused (then the server holds no unnamed statement
    /// either, having failed the marker in its place).
    fn remember(&mut self, statement: &Statement<'_>, list: &[Classified]) -> Result<(), String> {
        if let Origin::Prepare { name } = statement.origin {
            if name.is_empty() {
                self.prepared.insert(String::new(), Arc::new(list.to_vec()));
            } else {
                // A protocol-level statement is judged at its Parse, not at each Bind: a Parse
                // reusing a name for something else is refused (the server would refuse it too
                // while the name exists, and Binds of the name would run the old statement).
                if let Some(known) = self.prepared.get(name)
                    && !list.iter().all(|c| known.contains(c))
                {
                    return Err(format!(
                        "prepared statement \"{name}\" already stood for another statement on this connection; use a new name"
                    ));
                }
                self.add(name.to_owned(), list)?;
            }
        }
        for c in list {
            if let Some(name) = &c.prepares {
                self.add(name.clone(), std::slice::from_ref(c))?;
            }
        }
        Ok(())
    }

    /// MySQL: a `PREPARE` or `DEALLOCATE PREPARE` is applied when the server answers it
    /// ([`ConnInspect::answered`]), so tollgate's names are the server's. It must be a
    /// message of its own, so that the answer is its own.
    fn follow(&mut self, list: &[Classified], runs: bool) -> Result<(), String> {
        let Some(c) = list
            .iter()
            .find(|c| c.prepares.is_some() || c.deallocates.is_some())
        else {
            return Ok(());
        };
        if list.len() > 1 {
            return Err(
                "PREPARE and DEALLOCATE PREPARE are sent as statements of their own, so that tollgate follows the server's answer".into(),
            );
        }
        if !runs {
            return Ok(());
        }
        if let Some(name) = &c.prepares {
            if self.prepared.len() >= MAX_PREPARED && !self.prepared.contains_key(name) {
                return Err(format!(
                    "more than {MAX_PREPARED} prepared statement names on one connection; deallocate some or reconnect"
                ));
            }
            self.pending = Some((name.clone(), Some(Arc::new(vec![c.clone()]))));
        } else if let Some(name) = &c.deallocates {
            self.pending = Some((name.clone(), None));
        }
        Ok(())
    }

    fn add(&mut self, name: String, classified: &[Classified]) -> Result<(), String> {
        if self.prepared.len() >= MAX_PREPARED && !self.prepared.contains_key(&name) {
            warn!(name, "too many prepared statement names on one connection");
            return Err(format!(
                "more than {MAX_PREPARED} prepared statement names on one connection; reconnect"
            ));
        }
        let entry = self.prepared.entry(name).or_default();
        let mut all = entry.as_ref().clone();
        for c in classified {
            if !all.contains(c) {
                all.push(c.clone());
            }
        }
        if all.len() > MAX_MEANINGS {
            return Err(format!(
                "a prepared statement name reused for more than {MAX_MEANINGS} different statements; use new names or reconnect"
            ));
        }
        *entry = Arc::new(all);
        Ok(())
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
