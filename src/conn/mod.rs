//! The protocol-neutral connection layer: what a live connection's life needs whatever wire it
//! came in on. The wire modules (`protocol::pg`, `protocol::mysql`) turn bytes into the neutral
//! values of [`crate::pipeline`] and back, and call this layer for everything else:
//!
//! - [`Context`] and [`TargetRuntime`]: what every connection of one daemon shares (config,
//!   client TLS, targets, stages, token validation, login throttling, masking setup).
//! - [`admission`]: the connection budgets: unauthenticated connections draw from their own,
//!   smaller one and move to a session slot ([`Ticket::admit`]) once their client has
//!   authenticated.
//! - [`budget`]: the ledger of volume budgets: rows and bytes read per identity and rule in
//!   one-minute buckets over a rolling hour or day, bounded in memory.
//! - [`lifecycle`]: the daemon's [`Phase`], the [`Control`] line to each connection and the
//!   connection ids; [`Listener`] is what the accept loop (`server`) calls to serve a wire.
//! - [`session`]: a logged-in connection's identity ([`session::connected`]), the session's
//!   start and end records, failed logins.
//! - [`statement`]: a statement's lifecycle after the inspect stage ruled on it: settle (count,
//!   record, refuse if unrecordable), approval fingerprints, what an approval's outcome does.
//! - [`policy_files`]: the policy files loaded, watched and reloaded (reloads recorded).
//! - [`promotion`]: columns found at run time to hold card numbers, refused to computation.
//!
//! Nothing here reads or writes wire bytes; nothing here imports a wire module.

pub mod admission;
pub mod budget;
pub mod lifecycle;
pub mod policy_files;
pub mod promotion;
pub mod session;
pub mod statement;

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use crate::auth::oidc::Validator;
use crate::auth::throttle::Throttle;
use crate::config::{ANY_DATABASE, Config, Target};
use crate::pipeline::{ConnId, Stages};

pub use admission::{Admission, Refused, Ticket};
pub use lifecycle::{Control, Lifecycle, Phase};

/// What every connection of one daemon shares, whatever its wire protocol.
pub struct Context {
    pub config: Arc<Config>,
    pub client_tls: Option<TlsAcceptor>,
    /// PostgreSQL targets by name.
    pub targets: HashMap<String, Arc<TargetRuntime>>,
    /// MySQL targets by name.
    pub mysql_targets: HashMap<String, Arc<TargetRuntime>>,
    pub stages: Stages,
    /// Validates agent tokens; present when `identity` is configured.
    pub validator: Option<Arc<Validator>>,
    pub throttle: Throttle,
    /// The HMAC key of the masking format, read once at start.
    masking_key: Option<Vec<u8>>,
    /// Columns masked whatever their content (`masking.columns`).
    pub column_rules: crate::mask::columns::ColumnRules,
}

/// A verifier with the digest of the password it was derived from.
type CachedVerifier = ([u8; 32], Arc<dyn Any + Send + Sync>);

/// A configured target with what was prepared for it at start.
pub struct TargetRuntime {
    pub config: Target,
    pub host: String,
    pub port: u16,
    pub tls: Option<crate::tls::Upstream>,
    /// A wire's verifier of the client password (PostgreSQL: the SCRAM verifier), with a
    /// digest of the password it was derived from, so a rotated secret file yields a new one.
    client_verifier: Mutex<Option<CachedVerifier>>,
    /// Columns of this target found at run time to hold card numbers.
    pub promoted: Arc<promotion::Promoted>,
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
            client_verifier: Mutex::new(None),
            promoted: Arc::default(),
        })
    }

    /// The verifier `make` derives from the current client password, derived again only when
    /// the password changed (deriving one can be deliberately slow, as SCRAM's is).
    pub fn client_verifier<T: Any + Send + Sync>(
        &self,
        password: &str,
        make: impl FnOnce(&str) -> T,
    ) -> Arc<T> {
        let digest: [u8; 32] =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, password.as_bytes())
                .as_ref()
                .try_into()
                .unwrap_or([0; 32]);
        let mut cached = self
            .client_verifier
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some((d, v)) = cached.as_ref()
            && *d == digest
            && let Ok(v) = Arc::clone(v).downcast::<T>()
        {
            return v;
        }
        let v = Arc::new(make(password));
        *cached = Some((digest, Arc::clone(&v) as Arc<dyn Any + Send + Sync>));
        v
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
            stages,
            validator,
            throttle,
            masking_key,
            column_rules,
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
        // The server's own schemas (accounts and password hashes, other sessions' statements)
        // are reached only through a target that names them, never through `*`.
        let system = matches!(
            database.to_ascii_lowercase().as_str(),
            "mysql" | "performance_schema" | "sys" | "information_schema"
        );
        self.mysql_targets
            .get(database)
            .or_else(|| {
                (!system)
                    .then(|| self.mysql_targets.get(ANY_DATABASE))
                    .flatten()
            })
            .cloned()
    }
}

/// A boxed future, as [`Listener`]'s methods return them.
pub type BoxFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// One wire protocol as the accept loop (`server`) serves it: each wire module implements it
/// over its own context, so `server` depends on this trait and never on a wire.
pub trait Listener: Send + Sync + 'static {
    /// The protocol's name for log lines (`postgres`, `mysql`).
    fn protocol(&self) -> crate::config::Protocol;

    /// Serves one accepted connection to its end: login, session records, relay. The wire
    /// calls [`Ticket::admit`] as soon as the client has authenticated, and closes the
    /// connection if that is refused; the accept loop drops the future if the ticket is
    /// evicted before.
    fn serve<'a>(
        &'a self,
        tcp: TcpStream,
        peer: SocketAddr,
        id: ConnId,
        lifecycle: &'a Lifecycle,
        ticket: Ticket,
    ) -> BoxFuture<'a>;

    /// Tells a client over the connection limits why it is turned away, in the protocol's
    /// own words (PostgreSQL: FATAL 53300; MySQL: ERR 1040 in place of the greeting).
    fn refuse_too_many(&self, tcp: TcpStream) -> BoxFuture<'static>;

    /// The daemon's shared context.
    fn context(&self) -> &Context;
}
