//! The PostgreSQL wire protocol, from the first byte a client sends to its last.
//!
//! - [`frame`]: where a message ends (pure, fuzzed).
//! - [`messages`]: decoding of the messages the proxy looks into, encoding of those it writes.
//! - [`scram`]: the server side of SCRAM-SHA-256 for client logins.
//! - [`startup`]: TLS negotiation, client authentication, the upstream login.
//! - [`relay`]: the two directions of an established connection and the stage hooks.
//! - [`cancel`]: tollgate's own cancel keys mapped to upstream backends.

pub mod cancel;
pub mod catalog;
pub mod frame;
#[doc(hidden)]
pub mod fuzzing;
pub mod messages;
pub mod recording;
pub mod relay;
pub mod results;
pub mod scram;
pub mod startup;
pub mod transform;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio_rustls::TlsAcceptor;

use crate::auth::oidc::Validator;
use crate::auth::throttle::Throttle;
use crate::config::{ANY_DATABASE, Config, Target};
use crate::pipeline::Stages;

/// What every connection of one daemon shares (the MySQL listener uses it too).
pub struct Context {
    pub config: Arc<Config>,
    pub client_tls: Option<TlsAcceptor>,
    /// PostgreSQL targets by name.
    pub targets: HashMap<String, Arc<TargetRuntime>>,
    /// MySQL targets by name.
    pub mysql_targets: HashMap<String, Arc<TargetRuntime>>,
    /// Live MySQL connections, for `KILL` (tollgate's connection ids to upstream thread ids).
    pub mysql_conns: Arc<crate::protocol::mysql::Registry>,
    pub cancels: Arc<cancel::Registry>,
    pub stages: Stages,
    /// Validates agent tokens; present when `identity` is configured.
    pub validator: Option<Arc<Validator>>,
    pub throttle: Throttle,
    /// The HMAC key of the masking format, read once at start.
    masking_key: Option<Vec<u8>>,
    /// Columns masked whatever their content (`masking.columns`).
    pub column_rules: crate::mask::columns::ColumnRules,
    /// Source columns of result columns, for the column rules.
    pub catalog: catalog::Cache,
}

/// A configured target with what was prepared for it at start.
pub struct TargetRuntime {
    pub config: Target,
    pub host: String,
    pub port: u16,
    pub tls: Option<crate::tls::Upstream>,
    /// The SCRAM verifier of the client password, with a digest of the password it was
    /// derived from, so a rotated secret file yields a new verifier.
    scram: Mutex<Option<([u8; 32], Arc<scram::Verifier>)>>,
}

impl TargetRuntime {
    pub fn new(config: &Target) -> Result<TargetRuntime, crate::tls::Error> {
        let (host, port) = crate::config::split_host_port(&config.address)
            .ok_or_else(|| crate::tls::Error::ServerName(config.address.clone()))?;
        Ok(TargetRuntime {
            config: config.clone(),
            host: host.to_owned(),
            port,
            tls: crate::tls::upstream(&config.tls, host)?,
            scram: Mutex::new(None),
        })
    }

    /// The SCRAM verifier for the current client password.
    fn scram_verifier(&self, password: &str) -> Arc<scram::Verifier> {
        let digest: [u8; 32] =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, password.as_bytes())
                .as_ref()
                .try_into()
                .unwrap_or([0; 32]);
        let mut cached = self.scram.lock().unwrap_or_else(|p| p.into_inner());
        match cached.as_ref() {
            Some((d, v)) if *d == digest => Arc::clone(v),
            _ => {
                let v = Arc::new(scram::Verifier::new(password));
                *cached = Some((digest, Arc::clone(&v)));
                v
            }
        }
    }
}

/// Why a daemon could not be set up from its config.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{0}")]
    Tls(#[from] crate::tls::Error),
    #[error("HTTP client for token validation: {0}")]
    Http(#[from] reqwest::Error),
    #[error("masking.hmac_key: {0}")]
    MaskingKey(#[from] crate::config::SecretError),
}

impl Context {
    /// Prepares TLS, targets and token validation from a validated config.
    pub fn new(config: Arc<Config>, stages: Stages) -> Result<Context, SetupError> {
        let client_tls = config.tls.as_ref().map(crate::tls::acceptor).transpose()?;
        let mut targets = HashMap::new();
        let mut mysql_targets = HashMap::new();
        for t in &config.targets {
            let map = match t.value.protocol {
                crate::config::Protocol::Postgres => &mut targets,
                crate::config::Protocol::Mysql => &mut mysql_targets,
            };
            map.insert(
                t.value.name.clone(),
                Arc::new(TargetRuntime::new(&t.value)?),
            );
        }
        let validator = config
            .identity
            .as_ref()
            .map(Validator::new)
            .transpose()?
            .map(Arc::new);
        let throttle = match &config.identity {
            Some(i) => Throttle::new(i.failure_delay, i.max_failure_delay),
            None => Throttle::new(
                std::time::Duration::from_millis(100),
                std::time::Duration::from_secs(3),
            ),
        };
        let masking_key = match &config.masking.hmac_key {
            Some(secret) => Some(secret.read()?.into_bytes()),
            None => None,
        };
        let column_rules = crate::mask::columns::ColumnRules::new(&config.masking.columns);
        Ok(Context {
            config,
            client_tls,
            targets,
            mysql_targets,
            mysql_conns: Default::default(),
            cancels: Arc::new(cancel::Registry::default()),
            stages,
            validator,
            throttle,
            masking_key,
            column_rules,
            catalog: catalog::Cache::default(),
        })
    }

    /// The masker for a connection's identity: its group's format, else the default.
    pub fn masker_for(&self, identity: &crate::auth::Identity) -> crate::mask::Masker {
        let m = &self.config.masking;
        let format = m
            .groups
            .iter()
            .find(|g| g.groups.iter().any(|x| identity.in_group(x)))
            .map_or(m.format, |g| g.format);
        crate::mask::Masker::new(format, self.masking_key.as_deref())
    }

    /// What the session store keeps of results on a target.
    pub fn record_results(&self, target: &str) -> crate::config::RecordResults {
        self.targets
            .get(target)
            .or_else(|| self.mysql_targets.get(target))
            .and_then(|t| t.config.record_results)
            .or_else(|| self.config.audit.as_ref().map(|a| a.results))
            .unwrap_or_default()
    }

    /// The target a client's database name chooses: its own, else the `*` target.
    pub fn target(&self, database: &str) -> Option<Arc<TargetRuntime>> {
        self.targets
            .get(database)
            .or_else(|| self.targets.get(ANY_DATABASE))
            .cloned()
    }

    /// The MySQL target a client's database name chooses: its own, else the `*` target.
    pub fn mysql_target(&self, database: &str) -> Option<Arc<TargetRuntime>> {
        self.mysql_targets
            .get(database)
            .or_else(|| self.mysql_targets.get(ANY_DATABASE))
            .cloned()
    }
}
