//! The policy files: loaded at start, watched for changes and reloaded without dropping
//! connections (a broken file keeps the previous policy in force), each reload recorded in the
//! audit trail. The inspect stage reads the policy in force through
//! [`crate::policy::inspect::PolicySource`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tracing::{error, info};

use crate::policy::classify::SqlDialect;
use crate::policy::inspect::PolicySource;
use crate::policy::rules::PolicyError;
use crate::policy::{Policy, RuleSet};

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

    /// The policy in force now.
    pub fn policy(&self) -> Arc<Policy> {
        self.current.load_full()
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

impl PolicySource for PolicyInspector {
    fn policy(&self) -> Arc<Policy> {
        PolicyInspector::policy(self)
    }

    fn dialect(&self) -> SqlDialect {
        self.dialect
    }
}
