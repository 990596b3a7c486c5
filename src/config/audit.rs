//! `audit`: where and how sessions are recorded (PCI DSS 10).

use std::path::PathBuf;

use std::time::Duration;

use serde::Deserialize;

use super::Secret;
use super::duration;

/// Where and how sessions are recorded (PCI DSS 10).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// An embedded SQLite database file (one instance); relative to the config file's folder.
    #[serde(default)]
    pub sqlite: Option<PathBuf>,
    /// A PostgreSQL connection URL (several instances share it), held as a secret because
    /// it may carry a password.
    #[serde(default)]
    pub postgres: Option<Secret>,
    /// This instance's chain name; each instance writing to a shared store needs its own.
    /// Defaults to the host name.
    #[serde(default)]
    pub chain: Option<String>,
    /// The Ed25519 key (PKCS#8, PEM or DER) that signs checkpoints. `tollgate audit keygen`
    /// writes one and prints its public half, which is all an auditor needs.
    pub signing_key: Secret,
    /// How often the chain's head is signed (also at every clean stop).
    #[serde(default = "default_checkpoint_interval", with = "duration")]
    pub checkpoint_interval: Duration,
    /// Records written per store transaction, at most.
    #[serde(default = "default_audit_batch")]
    pub batch_size: usize,
    /// How long the writer waits for more records before committing a batch (group commit:
    /// fewer, larger transactions). A record is durable at most this long after it is made.
    #[serde(default = "default_linger", with = "duration")]
    pub linger: Duration,
    /// Records waiting for the store, at most; when full, new statements are refused.
    #[serde(default = "default_audit_queue")]
    pub queue_size: usize,
    /// Bytes of records waiting for the store, at most (about: what they hold in memory).
    /// When the writer falls behind, the relay waits for room rather than buffer more.
    #[serde(default = "default_audit_queue_bytes")]
    pub queue_bytes: usize,
    /// How long the relay waits for room in a full queue before it refuses (58030) what it
    /// wanted to record: a statement, or the rest of a result (the connection then ends).
    #[serde(default = "default_queue_wait", with = "duration")]
    pub queue_wait: Duration,
    /// Days a record is kept; older checkpointed segments are pruned. 0 keeps everything.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// What is kept of results: every row (`full`) or counts and bytes (`summary`).
    /// A target's `record_results` overrides it.
    #[serde(default)]
    pub results: RecordResults,
}

/// How much of the result rows the session store keeps.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RecordResults {
    #[default]
    Full,
    Summary,
}

fn default_checkpoint_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_linger() -> Duration {
    Duration::from_millis(5)
}

fn default_audit_batch() -> usize {
    512
}

fn default_audit_queue() -> usize {
    65_536
}

fn default_audit_queue_bytes() -> usize {
    2 * 1024 * 1024
}

fn default_queue_wait() -> Duration {
    Duration::from_secs(2)
}

fn default_retention_days() -> u32 {
    365
}

impl AuditConfig {
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.sqlite.is_some() == self.postgres.is_some() {
            return Err("audit: exactly one of sqlite and postgres is needed".into());
        }
        if self.batch_size == 0 || self.queue_size < self.batch_size {
            return Err(
                "audit: batch_size must be at least 1 and queue_size at least batch_size".into(),
            );
        }
        if !(64 * 1024..=1 << 31).contains(&self.queue_bytes) {
            return Err("audit.queue_bytes: from 65536 to 2147483648".into());
        }
        if self.checkpoint_interval.is_zero() {
            return Err("audit.checkpoint_interval: must be more than 0".into());
        }
        if let Some(chain) = &self.chain
            && !crate::audit::valid_chain_name(chain)
        {
            return Err(
                "audit.chain: 1 to 60 characters of letters, digits, '.', '_' and '-'".into(),
            );
        }
        Ok(())
    }
}
