//! The `tollgate` command line. Everything it does lives in the library.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use tollgate::admin::AdminState;
use tollgate::auth::Identity;
use tollgate::auth::dev::{self, DevIssuer};
use tollgate::config::Config;
use tollgate::pipeline::Stages;
use tollgate::policy::classify::SqlDialect;
use tollgate::policy::inspect::{PolicyInspector, PolicyStage};
use tollgate::policy::{Policy, RuleSet};
use tollgate::protocol::pg::Context;

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "A data-path guard between AI agents and databases"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        /// The configuration file.
        #[arg(long, env = "TOLLGATE_CONFIG")]
        config: PathBuf,
    },
    /// Validate a configuration file and exit.
    CheckConfig {
        #[arg(long, env = "TOLLGATE_CONFIG")]
        config: PathBuf,
    },
    /// A first run with nothing to set up: an embedded dev token issuer in front of the local
    /// PostgreSQL, every database reached by its own name. Not for production.
    Dev(DevArgs),
    /// Agent tokens from the dev issuer.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Check policy files, or explain a decision.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate policy files: every problem with file:line:column; exits 1 if any.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// How a statement is classified, which rules match, and the decision.
    Explain {
        /// Policy files (default: those of --config / TOLLGATE_CONFIG).
        #[arg(long = "policy")]
        policies: Vec<PathBuf>,
        #[arg(long, env = "TOLLGATE_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long)]
        sub: String,
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        #[arg(long)]
        client_id: Option<String>,
        #[arg(long, default_value = "")]
        issuer: String,
        #[arg(long)]
        database: String,
        #[arg(long)]
        sql: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct DevArgs {
    /// Where the dev issuer keeps its signing key.
    #[arg(long, default_value = ".tollgate-dev")]
    data_dir: PathBuf,
    /// Where agents connect.
    #[arg(long, default_value = "127.0.0.1:15432")]
    listen: SocketAddr,
    /// The admin HTTP port (serves the dev issuer's keys).
    #[arg(long, default_value = "127.0.0.1:9090")]
    admin: SocketAddr,
    /// The PostgreSQL server behind tollgate.
    #[arg(long, default_value = "127.0.0.1:5432")]
    postgres: String,
    /// The role tollgate logs in as there.
    #[arg(long, default_value = "postgres")]
    postgres_user: String,
    /// An environment variable holding that role's password, if the server asks for one.
    #[arg(long)]
    postgres_password_env: Option<String>,
    /// The policy file (default: the example agent policy, copied to the data folder).
    #[arg(long)]
    policy: Option<PathBuf>,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Mint an agent token with the dev issuer's key; prints the token alone on stdout.
    Mint {
        /// The agent's subject (its unique name).
        #[arg(long)]
        sub: String,
        /// Comma-separated groups; agents without any are in `ai-agents`.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// Lifetime, like 15m or 1h.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        #[arg(long, default_value = ".tollgate-dev")]
        data_dir: PathBuf,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOLLGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::CheckConfig { config } => {
            Config::load(&config)?;
            println!("{}: ok", config.display());
            Ok(())
        }
        Command::Serve { config } => serve(
            Arc::new(Config::load(&config)?),
            AdminState::default(),
            None,
        ),
        Command::Policy { command } => policy_command(command),
        Command::Dev(args) => dev(args),
        Command::Token {
            command:
                TokenCommand::Mint {
                    sub,
                    groups,
                    ttl,
                    data_dir,
                },
        } => {
            let issuer = open_dev_issuer(&data_dir)?;
            let groups = if groups.is_empty() {
                vec![dev::DEFAULT_GROUP.to_owned()]
            } else {
                groups
            };
            println!("{}", issuer.mint(&sub, &groups, ttl)?);
            Ok(())
        }
    }
}

/// The dev folder's issuer, made with the default admin address if `tollgate dev` never ran.
fn open_dev_issuer(dir: &Path) -> anyhow::Result<DevIssuer> {
    match DevIssuer::open_existing(dir) {
        Ok(issuer) => Ok(issuer),
        Err(dev::Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            let url = format!("http://{}/dev", tollgate::config::default_admin_listen());
            Ok(DevIssuer::open(dir, &url)?)
        }
        Err(e) => Err(e.into()),
    }
}

fn policy_command(command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Check { files } => match RuleSet::load(&files) {
            Ok(set) => {
                println!("{} file(s), {} rule(s): ok", files.len(), set.rules.len());
                Ok(())
            }
            Err(errors) => {
                for e in &errors {
                    eprintln!("{e}");
                }
                std::process::exit(1);
            }
        },
        PolicyCommand::Explain {
            policies,
            config,
            sub,
            groups,
            client_id,
            issuer,
            database,
            sql,
            json,
        } => {
            let files = if policies.is_empty() {
                let config = config.context("give --policy FILE or --config FILE")?;
                Config::load(&config)?.policies
            } else {
                policies
            };
            let rules = match RuleSet::load(&files) {
                Ok(r) => r,
                Err(errors) => {
                    for e in &errors {
                        eprintln!("{e}");
                    }
                    std::process::exit(1);
                }
            };
            let identity = Identity {
                subject: sub,
                groups,
                client_id,
                issuer,
                expires_at: None,
            };
            let policy = Policy::new(rules);
            let report = policy.decide(&identity, &database, &sql, SqlDialect::Postgres);
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", tollgate::policy::engine::explain_text(&report));
            }
            Ok(())
        }
    }
}

/// Runs the proxy (and the admin interface when configured) until SIGTERM or SIGINT.
fn serve(config: Arc<Config>, mut admin: AdminState, banner: Option<String>) -> anyhow::Result<()> {
    let mut stages = Stages::default();
    let mut inspector = None;
    if config.policies.is_empty() {
        tracing::warn!("no policy configured: every statement is forwarded");
    } else {
        let loaded = match PolicyInspector::load(config.policies.clone(), SqlDialect::Postgres) {
            Ok(i) => Arc::new(i),
            Err(errors) => {
                for e in &errors {
                    eprintln!("{e}");
                }
                anyhow::bail!("invalid policy");
            }
        };
        stages.inspect = Arc::new(PolicyStage(Arc::clone(&loaded)));
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
        inspector = Some(loaded);
    }
    let ctx = Arc::new(Context::new(Arc::clone(&config), stages)?);
    let workers = config
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let listeners = tollgate::server::bind_reuseport(config.listen.postgres, workers)
        .with_context(|| format!("binding {}", config.listen.postgres))?;
    if let Some(admin_cfg) = &config.admin {
        let listener = std::net::TcpListener::bind(admin_cfg.listen)
            .with_context(|| format!("binding the admin interface {}", admin_cfg.listen))?;
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
                        match tokio::net::TcpListener::from_std(listener) {
                            Ok(l) => {
                                if let Err(e) =
                                    tollgate::admin::serve(l, state, std::future::pending()).await
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
    }
    if let Some(banner) = banner {
        println!("{banner}");
    }
    tollgate::server::run_threads(listeners, ctx, shutdown_signal(inspector))?;
    Ok(())
}

/// The example agent policy, written into the dev folder on first use so it can be edited.
const EXAMPLE_POLICY: &str = include_str!("../config/policies/agents.yaml");

fn dev(args: DevArgs) -> anyhow::Result<()> {
    let issuer_url = format!("http://{}/dev", args.admin);
    let issuer = DevIssuer::open(&args.data_dir, &issuer_url)?;
    let policy_file = match &args.policy {
        Some(p) => p.clone(),
        None => {
            let p = args.data_dir.join("policy.yaml");
            if !p.exists() {
                std::fs::write(&p, EXAMPLE_POLICY)
                    .with_context(|| format!("writing {}", p.display()))?;
            }
            p
        }
    };
    let password = match &args.postgres_password_env {
        Some(var) => format!("\n    password: {{ env: {var} }}"),
        None => String::new(),
    };
    let yaml = format!(
        r#"# tollgate dev: generated, not for production
listen: {{ postgres: "{listen}" }}
admin: {{ listen: "{admin}" }}
shutdown_grace: 2s
identity:
  allow_plaintext_loopback: true
  failure_delay: 0s
  issuers:
    - issuer: "{issuer_url}"
      audiences: ["{audience}"]
      algorithms: [EdDSA]
policies: ["{policy}"]
targets:
  - name: "*"
    address: "{postgres}"
    user: "{user}"{password}
"#,
        policy = policy_file.display(),
        listen = args.listen,
        admin = args.admin,
        audience = dev::AUDIENCE,
        postgres = args.postgres,
        user = args.postgres_user,
    );
    let config = Arc::new(Config::parse(&yaml, "tollgate dev (generated)")?);
    let agent = "dev-agent";
    let token = issuer.mint(
        agent,
        &[dev::DEFAULT_GROUP.to_owned()],
        Duration::from_secs(3600),
    )?;
    let data_dir = args.data_dir.display();
    let banner = format!(
        "tollgate dev is running. Not for production.

  PostgreSQL  {listen} -> {postgres}, every database by its own name
  Issuer      {issuer_url} (signing key in {data_dir}/)
  Policy      {policy} (reloads when edited)

Connect as agent {agent:?} (group {group}, token valid 1 hour):

  PGPASSWORD='{token}' psql \"host={host} port={port} user={agent} dbname=postgres sslmode=disable\"

Mint other tokens:  tollgate token mint --sub NAME [--groups a,b] [--ttl 1h] --data-dir {data_dir}
Stop with Ctrl-C.",
        listen = args.listen,
        postgres = args.postgres,
        group = dev::DEFAULT_GROUP,
        policy = policy_file.display(),
        host = args.listen.ip(),
        port = args.listen.port(),
    );
    let admin = AdminState {
        dev_issuer: Some(Arc::new(issuer)),
        policy: None,
    };
    serve(config, admin, Some(banner))
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
