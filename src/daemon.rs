//! The daemon assembled from a validated config: the stages (audit store, approvals, policy),
//! the shared connection [`Context`], one [`Listener`](crate::conn::Listener) per wire, and the
//! admin interface. `tollgate serve`, `tollgate dev` and the integration tests all start it
//! through [`Daemon`], so they run the same assembly.
//!
//! ```text
//! Daemon::from_config(config, source) -> Daemon      // stages from the config
//! Daemon::with_stages(config, stages) -> Daemon      // stages made by the caller (tests)
//! daemon.serve(pg, mysql, shutdown).await            // on bound listeners, this runtime
//! daemon.run(banner, shutdown)                       // binds, thread per core, admin thread
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::admin::AdminState;
use crate::audit;
use crate::config::{Config, Protocol};
use crate::conn::policy_files::PolicyInspector;
use crate::conn::{Context, SetupError};
use crate::pipeline::Stages;
use crate::policy::classify::SqlDialect;
use crate::policy::inspect::PolicyStage;
use crate::policy::rules::PolicyError;
use crate::protocol::mysql::MyContext;
use crate::protocol::pg::PgContext;
use crate::server::Wires;

/// Why a daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Setup(#[from] SetupError),
    /// A part of the config that could not be put in service (`what` names the section).
    #[error("{what}: {message}")]
    Part { what: &'static str, message: String },
    /// The policy files are invalid (each error names file, line and field).
    #[error("invalid policy: {}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Policy(Vec<PolicyError>),
    #[error("binding {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn part(what: &'static str) -> impl FnOnce(String) -> Error {
    move |message| Error::Part { what, message }
}

/// A daemon ready to serve: its context, its wires and what the admin interface shows.
pub struct Daemon {
    pub config: Arc<Config>,
    pub ctx: Arc<Context>,
    /// The record stage's writer, stopped (and its chain closed) when [`Daemon::run`] ends.
    pub recorder: Option<audit::Recorder>,
    /// The live policy, reloaded on SIGHUP and when its files change.
    pub policy: Option<Arc<PolicyInspector>>,
    pub admin: AdminState,
}

impl Daemon {
    /// A daemon whose stages are made by the caller (tests inject their own).
    pub fn with_stages(config: Arc<Config>, stages: Stages) -> Result<Daemon, Error> {
        let ctx = Arc::new(Context::new(Arc::clone(&config), stages)?);
        let admin = AdminState {
            validator: ctx.validator.clone(),
            ..AdminState::default()
        };
        Ok(Daemon {
            config,
            recorder: ctx.stages.record.clone(),
            ctx,
            policy: None,
            admin,
        })
    }

    /// The daemon a config describes: the audit store opened (and the config's load recorded
    /// with `source`, its file, and the file's SHA-256, PCI DSS 10.2.1.5), approvals, the
    /// policy loaded and watched, metrics installed when there is an admin interface.
    /// `admin` carries what the caller adds (`tollgate dev`: its issuer).
    pub fn from_config(
        config: Arc<Config>,
        source: &Path,
        mut admin: AdminState,
    ) -> Result<Daemon, Error> {
        let mut stages = Stages::default();
        if config.admin.is_some() {
            match crate::metrics::install() {
                Ok(handle) => admin.metrics = Some(handle),
                Err(e) => tracing::warn!(error = %e, "metrics not available"),
            }
        }
        admin.readiness.targets = config
            .targets
            .iter()
            .map(|t| (t.value.name.clone(), t.value.address.clone()))
            .collect();
        admin.readiness.policy_files = config.policies.len();
        let recorder = open_recorder(&config, source, &mut admin)?;
        stages.record = recorder.clone();
        admin.readiness.recorder = recorder.clone();
        if let Some(a) = &config.approvals {
            let webhook = a
                .webhook
                .as_ref()
                .map(|w| {
                    crate::approval::webhook::Webhook::new(w.url.clone(), w.timeout, w.retries)
                })
                .transpose()
                .map_err(|e| part("approvals.webhook")(e.to_string()))?;
            let approvals = crate::approval::Approvals::new(
                crate::approval::Settings {
                    page_url: a.page_url.clone(),
                    webhook,
                    max_pending: a.max_pending,
                    max_pending_per_identity: a.max_pending_per_identity,
                },
                recorder.clone(),
            );
            // With a shared PostgreSQL store, any instance decides what another holds.
            if let Some(audit_cfg) = &config.audit
                && audit_cfg.postgres.is_some()
            {
                let settings = audit::writer::Settings::from_config(audit_cfg)
                    .map_err(|e| part("audit.postgres")(e.to_string()))?;
                if let audit::store::Location::Postgres(url) = settings.location {
                    approvals
                        .share(url, settings.chain)
                        .map_err(part("approvals"))?;
                }
            }
            if let Some(login) = &a.login {
                admin.login = Some(
                    crate::admin::page::Login::new(
                        login.clone(),
                        // Every instance derives the page's cookie key from the shared audit key.
                        config
                            .audit
                            .as_ref()
                            .and_then(|a| a.signing_key.read_bytes().ok())
                            .as_deref(),
                    )
                    .map_err(|e| part("approvals.login")(e.to_string()))?,
                );
            }
            stages.approvals = Some(Arc::clone(&approvals));
            admin.approvals = Some(approvals);
        }
        let policy = if config.policies.is_empty() {
            tracing::warn!("no policy configured: every statement is forwarded");
            None
        } else {
            let loaded = Arc::new(
                PolicyInspector::load(config.policies.clone(), SqlDialect::Postgres)
                    .map_err(Error::Policy)?,
            );
            stages.inspect = Arc::new(PolicyStage(Arc::clone(&loaded) as _));
            if let Some(r) = &recorder {
                loaded.record_to(r.clone());
            }
            admin.policy = Some(Arc::clone(&loaded));
            let watched = Arc::clone(&loaded);
            let interval = config.policy_reload_interval;
            std::thread::Builder::new()
                .name("tollgate-policy-watch".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(interval);
                        watched.reload_if_changed();
                    }
                })?;
            Some(loaded)
        };
        let ctx = Arc::new(Context::new(Arc::clone(&config), stages)?);
        admin.validator = ctx.validator.clone();
        if let Some(a) = &config.admin {
            admin.auditor_groups = a.auditor_groups.clone();
        }
        Ok(Daemon {
            config,
            ctx,
            recorder,
            policy,
            admin,
        })
    }

    /// One listener per wire over the shared context.
    pub fn wires(&self) -> Wires {
        Wires {
            postgres: Arc::new(PgContext::new(Arc::clone(&self.ctx))),
            mysql: Arc::new(MyContext::new(Arc::clone(&self.ctx))),
        }
    }

    /// Serves PostgreSQL clients on `pg` (and MySQL clients on `mysql`) on the current
    /// runtime until `shutdown` completes, then drains. The admin interface is not started.
    pub async fn serve(
        &self,
        pg: TcpListener,
        mysql: Option<TcpListener>,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        crate::server::run_both(pg, mysql, self.wires(), shutdown).await
    }

    /// Binds the configured addresses, starts the admin interface on its own thread, prints
    /// `banner` once listening, and serves thread-per-core until SIGTERM or SIGINT (SIGHUP
    /// reloads the policy). The audit chain is closed on the way out.
    pub fn run(self, banner: Option<String>) -> Result<(), Error> {
        let config = &self.config;
        let workers = config
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let bind = |address: SocketAddr| {
            crate::server::bind_reuseport(address, workers)
                .map_err(|source| Error::Bind { address, source })
        };
        let listeners = bind(config.listen.postgres)?;
        let wires = self.wires();
        if let Some(admin_cfg) = &config.admin {
            start_admin(admin_cfg.listen, self.admin)?;
        }
        if let Some(banner) = banner {
            println!("{banner}");
        }
        let mysql_listeners = if config
            .targets
            .iter()
            .any(|t| t.value.protocol == Protocol::Mysql)
        {
            bind(config.listen.mysql)?
        } else {
            Vec::new()
        };
        let served = crate::server::run_threads(
            listeners,
            mysql_listeners,
            wires,
            shutdown_signal(self.policy.clone()),
        );
        if let Some(r) = &self.recorder {
            r.stop(serde_json::json!({"reason": if served.is_ok() { "signal" } else { "error" }}));
        }
        Ok(served?)
    }
}

/// Opens the audit store's writer and records the config in force; `None` without a store.
fn open_recorder(
    config: &Config,
    source: &Path,
    admin: &mut AdminState,
) -> Result<Option<audit::Recorder>, Error> {
    let Some(a) = &config.audit else {
        tracing::warn!("no audit store configured: sessions are not recorded");
        return Ok(None);
    };
    let key = a
        .signing_key
        .read_bytes()
        .map_err(|e| part("audit.signing_key")(e.to_string()))?;
    let signer = audit::record::Signer::from_pkcs8(&key)
        .map_err(|e| part("audit.signing_key")(e.to_string()))?;
    let settings = audit::writer::Settings::from_config(a)
        .map_err(|e| part("audit.postgres")(e.to_string()))?;
    let location = settings.location.clone();
    let key_id = signer.key_id().to_owned();
    let recorder = audit::Recorder::start(settings, signer)
        .map_err(|e| part("opening the audit store")(e.to_string()))?;
    admin.audit = Some(crate::admin::audit::AuditAccess {
        location,
        recorder: recorder.clone(),
        key_id,
    });
    let _ = recorder.record(audit::Event::new(
        audit::kind::CONFIG_LOAD,
        audit::Outcome::Success,
        audit::Who::daemon(),
        serde_json::json!({
            "file": source.display().to_string(),
            "sha256": config_digest(source),
            "targets": config.targets.iter().map(|t| t.value.name.clone()).collect::<Vec<_>>(),
            "policies": config.policies,
        }),
    ));
    Ok(Some(recorder))
}

/// SHA-256 of the config file, recorded at start (PCI DSS 10.2.1.5: configuration in force).
pub fn config_digest(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| {
            audit::record::hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &b).as_ref())
        })
        .unwrap_or_default()
}

/// The admin interface on its own thread and single-threaded runtime.
fn start_admin(address: SocketAddr, admin: AdminState) -> Result<(), Error> {
    let listener =
        std::net::TcpListener::bind(address).map_err(|source| Error::Bind { address, source })?;
    listener.set_nonblocking(true)?;
    let state = Arc::new(admin);
    std::thread::Builder::new()
        .name("tollgate-admin".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match runtime {
                Ok(rt) => rt.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(l) => {
                            if let Err(e) =
                                crate::admin::serve(l, state, std::future::pending()).await
                            {
                                tracing::error!(error = %e, "admin interface stopped");
                            }
                        }
                        Err(e) => tracing::error!(error = %e, "admin interface not started"),
                    }
                }),
                Err(e) => tracing::error!(error = %e, "admin interface not started"),
            }
        })?;
    Ok(())
}

/// Completes on SIGTERM or SIGINT; reloads the policy on SIGHUP meanwhile.
async fn shutdown_signal(policy: Option<Arc<PolicyInspector>>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    let mut hup = signal(SignalKind::hangup()).expect("installing the SIGHUP handler");
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = tokio::signal::ctrl_c() => return,
            _ = hup.recv() => match &policy {
                Some(p) => {
                    let _ = p.reload();
                }
                None => tracing::info!("SIGHUP: no policy to reload"),
            },
        }
    }
}
