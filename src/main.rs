//! The `tollgate` command line. Everything it does lives in the library.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use tollgate::admin::AdminState;
use tollgate::audit;
use tollgate::auth::Identity;
use tollgate::auth::dev::{self, DevIssuer};
use tollgate::config::Config;
use tollgate::pipeline::Stages;
use tollgate::policy::classify::SqlDialect;
use tollgate::policy::inspect::{PolicyInspector, PolicyStage};
use tollgate::policy::{Policy, RuleSet};
use tollgate::protocol::pg::Context;

/// mimalloc: the proxy allocates on worker threads and frees on the audit writer's; glibc's
/// allocator serialises such cross-thread frees on arena locks (seen in profiles).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Recorded sessions: list, show, replay.
    Sessions {
        #[command(subcommand)]
        command: SessionsCommand,
    },
    /// The audit trail: verify, export, report; signing keys.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Exit 0 when a tollgate's admin interface answers `/healthz` (container health checks).
    Health {
        #[arg(long, default_value = "http://127.0.0.1:9090/healthz")]
        url: String,
    },
    /// Statements held for approval: list, approve, deny (through the admin API).
    Approvals {
        /// The admin API of a tollgate (default: the admin listener of the dev configuration in
        /// the current folder if there is one, else http://127.0.0.1:9090).
        #[arg(long, env = "TOLLGATE_ADMIN_URL", global = true)]
        url: Option<String>,
        /// The approver's access token (from the identity provider).
        #[arg(long, env = "TOLLGATE_TOKEN", hide_env_values = true, global = true)]
        token: Option<String>,
        #[command(subcommand)]
        command: ApprovalsCommand,
    },
}

#[derive(Subcommand)]
enum ApprovalsCommand {
    /// The pending requests you may decide.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Approve a request, optionally for a window (same identity, statement and target).
    Approve {
        id: String,
        /// Like 10m or 1h.
        #[arg(long)]
        window: Option<String>,
    },
    /// Deny a request.
    Deny {
        id: String,
        #[arg(long)]
        reason: String,
    },
}

/// Where the audit store is and who reads it.
#[derive(clap::Args)]
struct StoreArgs {
    /// The tollgate config whose `audit` section names the store and signing key (default:
    /// the dev configuration in the current folder, `.tollgate-dev/tollgate.yaml`).
    #[arg(long, env = "TOLLGATE_CONFIG")]
    config: Option<PathBuf>,
    /// Who is reading (recorded in the trail); defaults to the login name.
    #[arg(long = "as", env = "USER", default_value = "unknown")]
    operator: String,
}

/// A period: RFC 3339 times, dates, or durations back from now (`24h`, `30d`).
#[derive(clap::Args)]
struct PeriodArgs {
    #[arg(long, value_parser = tollgate::audit::parse_time)]
    since: Option<String>,
    #[arg(long, value_parser = tollgate::audit::parse_time)]
    until: Option<String>,
}

#[derive(Subcommand)]
enum SessionsCommand {
    /// Sessions that started in a period: identity, target, start, duration, statements.
    List {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        period: PeriodArgs,
        #[arg(long)]
        json: bool,
    },
    /// Every record of one session.
    Show {
        id: String,
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        json: bool,
    },
    /// A session as a timeline: statements, decisions, masked rows, errors.
    Replay {
        id: String,
        #[command(flatten)]
        store: StoreArgs,
        /// Play at the session's own pace times this factor (1 = real time).
        #[arg(long)]
        speed: Option<f64>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ReportFormat {
    Markdown,
    Html,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify every chain of the store (with --config) or an export bundle (with --bundle);
    /// exits 1 naming the first bad record.
    Verify {
        #[arg(long, env = "TOLLGATE_CONFIG", conflicts_with = "bundle")]
        config: Option<PathBuf>,
        #[arg(long = "as", env = "USER", default_value = "unknown")]
        operator: String,
        /// An export bundle (`audit export --format bundle`).
        #[arg(long)]
        bundle: Option<PathBuf>,
        /// The checkpoint public key (base64 or hex, or a file holding it); with --config it
        /// defaults to the configured signing key's.
        #[arg(long)]
        public_key: Option<String>,
    },
    /// Export records of a period as JSONL, OCSF, CSV, or a verifiable bundle.
    Export {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long, value_enum)]
        format: tollgate::audit::export::Format,
        #[command(flatten)]
        period: PeriodArgs,
        /// The output file (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// A PCI DSS evidence summary of a period.
    Report {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        period: PeriodArgs,
        #[arg(long, value_enum, default_value_t = ReportFormat::Markdown)]
        format: ReportFormat,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Write a new checkpoint signing key (PKCS#8 PEM, mode 0600) and print its public key.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the public key of the configured signing key.
    PublicKey {
        #[arg(long, env = "TOLLGATE_CONFIG")]
        config: Option<PathBuf>,
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
        /// The SQL dialect: the protocol of the target the statement would reach.
        #[arg(long, value_enum, default_value = "postgres")]
        dialect: DialectArg,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DialectArg {
    Postgres,
    Mysql,
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
    /// Where MySQL agents connect.
    #[arg(long, default_value = "127.0.0.1:13306")]
    mysql_listen: SocketAddr,
    /// The MySQL / MariaDB server behind tollgate ("none" for no MySQL listener).
    #[arg(long, default_value = "127.0.0.1:3306")]
    mysql: String,
    /// The MySQL user tollgate logs in as there.
    #[arg(long, default_value = "root")]
    mysql_user: String,
    /// An environment variable holding that user's password, if the server asks for one.
    #[arg(long)]
    mysql_password_env: Option<String>,
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
        Command::Serve { config: path } => {
            let config = Arc::new(Config::load(&path)?);
            let digest = config_digest(&path);
            serve(
                config,
                AdminState::default(),
                None,
                &path.display().to_string(),
                digest,
            )
        }
        Command::Sessions { command } => runtime()?.block_on(sessions_command(command)),
        Command::Audit { command } => runtime()?.block_on(audit_command(command)),
        Command::Approvals {
            url,
            token,
            command,
        } => runtime()?.block_on(approvals_command(&admin_url(url)?, token, command)),
        Command::Health { url } => runtime()?.block_on(async {
            let r = reqwest::Client::builder()
                .timeout(Duration::from_secs(3))
                .build()?
                .get(&url)
                .send()
                .await
                .with_context(|| format!("reaching {url}"))?;
            anyhow::ensure!(r.status().is_success(), "{url}: {}", r.status());
            Ok(())
        }),
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
            dialect,
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
            let dialect = match dialect {
                DialectArg::Postgres => SqlDialect::Postgres,
                DialectArg::Mysql => SqlDialect::MySql,
            };
            let report = policy.decide(&identity, &database, &sql, dialect);
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", tollgate::policy::engine::explain_text(&report));
            }
            Ok(())
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// SHA-256 of the config file, recorded at start (PCI DSS 10.2.1.5: configuration in force).
fn config_digest(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| {
            tollgate::audit::record::hex(
                aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &b).as_ref(),
            )
        })
        .unwrap_or_default()
}

/// `tollgate dev`'s default data folder, and the configuration it writes there.
const DEV_DATA_DIR: &str = ".tollgate-dev";
const DEV_CONFIG: &str = ".tollgate-dev/tollgate.yaml";

/// The banner's MySQL client line, for the client installed: MariaDB's `mariadb` lets the
/// cleartext plugin carry the token by itself (it calls `--enable-cleartext-plugin` obsolete
/// and says so on every run); Oracle MySQL's `mysql` needs that option.
fn mysql_client_command(listen: SocketAddr, agent: &str, token: &str) -> String {
    let runs = |program: &str| {
        std::process::Command::new(program)
            .arg("--version")
            .stdin(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let (host, port) = (listen.ip(), listen.port());
    let oracle_mysql =
        runs("mariadb").is_none() && runs("mysql").is_some_and(|v| !v.contains("MariaDB"));
    if oracle_mysql {
        format!(
            "mysql -h {host} -P {port} -u {agent} --password='{token}' --enable-cleartext-plugin mysql"
        )
    } else {
        format!("mariadb -h {host} -P {port} -u {agent} --password='{token}' mysql")
    }
}

/// The configuration a command reads: the one given (`--config`, `TOLLGATE_CONFIG`), else the
/// dev configuration in the current folder, named on stderr so nobody wonders which was used.
fn config_path(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        return Ok(path.to_owned());
    }
    let dev = Path::new(DEV_CONFIG);
    anyhow::ensure!(
        dev.is_file(),
        "no configuration: give --config FILE or set TOLLGATE_CONFIG (or run this in the folder where `tollgate dev` runs)"
    );
    eprintln!("tollgate: using the dev configuration {DEV_CONFIG} (found in the current folder)");
    Ok(dev.to_owned())
}

fn load_config(given: Option<&Path>) -> anyhow::Result<Config> {
    Ok(Config::load(&config_path(given)?)?)
}

/// The admin API the approvals commands talk to: the one given, else the dev configuration's
/// admin listener (named on stderr), else the default listener. Only a loopback listener is
/// taken from the folder: the approver's token goes there, and a configuration planted in a
/// folder must not send it elsewhere.
fn admin_url(given: Option<String>) -> anyhow::Result<String> {
    if let Some(url) = given {
        return Ok(url);
    }
    if Path::new(DEV_CONFIG).is_file() {
        let config = Config::load(Path::new(DEV_CONFIG))?;
        if let Some(admin) = config
            .admin
            .as_ref()
            .filter(|a| a.listen.ip().is_loopback())
        {
            let url = format!("http://{}", admin.listen);
            eprintln!(
                "tollgate: using the admin API of the dev configuration {DEV_CONFIG} ({url})"
            );
            return Ok(url);
        }
    }
    Ok(format!(
        "http://{}",
        tollgate::config::default_admin_listen()
    ))
}

/// The audit section of a config, its store and its signer.
struct AuditSetup {
    settings: audit::writer::Settings,
    signer: audit::record::Signer,
}

fn audit_setup(config: &Config) -> anyhow::Result<AuditSetup> {
    let a = config
        .audit
        .as_ref()
        .context("the config has no audit section")?;
    let key = a.signing_key.read_bytes().context("audit.signing_key")?;
    let signer = audit::record::Signer::from_pkcs8(&key).context("audit.signing_key")?;
    let settings = audit::writer::Settings::from_config(a).context("audit.postgres")?;
    Ok(AuditSetup { settings, signer })
}

/// Records that an operator read or exported the trail (PCI DSS 10.2.1.3), on the CLI's own
/// chain beside the daemon's. Refuses the read if it cannot be recorded.
async fn record_read(
    setup: &AuditSetup,
    operator: &str,
    kind: &'static str,
    detail: serde_json::Value,
) -> anyhow::Result<()> {
    let chain = format!("{}-cli", setup.settings.chain);
    let chain: String = chain.chars().take(64).collect();
    let event = audit::Event::new(
        kind,
        audit::Outcome::Success,
        audit::Who::operator(&format!("cli:{}", tollgate::mask::for_log(operator))),
        detail,
    );
    audit::writer::append_once(&setup.settings.location, &chain, &setup.signer, event)
        .await
        .context("recording this read of the audit trail (refused: it cannot be recorded)")
}

async fn open_store(setup: &AuditSetup) -> anyhow::Result<audit::Store> {
    Ok(audit::Store::open(&setup.settings.location, false).await?)
}

async fn sessions_command(command: SessionsCommand) -> anyhow::Result<()> {
    match command {
        SessionsCommand::List {
            store,
            period,
            json,
        } => {
            let setup = audit_setup(&load_config(store.config.as_deref())?)?;
            let period = audit::export::Period {
                since: period.since,
                until: period.until,
            };
            record_read(
                &setup,
                &store.operator,
                audit::kind::AUDIT_READ,
                serde_json::json!({"command": "sessions list", "since": period.since, "until": period.until}),
            )
            .await?;
            let mut st = open_store(&setup).await?;
            let list = audit::sessions::list(&mut st, &period).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("{}", audit::sessions::table(&list));
            }
            Ok(())
        }
        SessionsCommand::Show { id, store, json } => {
            let setup = audit_setup(&load_config(store.config.as_deref())?)?;
            record_read(
                &setup,
                &store.operator,
                audit::kind::AUDIT_READ,
                serde_json::json!({"command": "sessions show", "session": id}),
            )
            .await?;
            let mut st = open_store(&setup).await?;
            let steps = audit::sessions::timeline(&mut st, &id).await?;
            anyhow::ensure!(!steps.is_empty(), "no session {id:?} in the store");
            if json {
                println!("{}", serde_json::to_string_pretty(&steps)?);
            } else {
                for s in &steps {
                    println!(
                        "{}  {:<15} {:<8} {}:{}  {}",
                        s.ts, s.kind, s.outcome, s.chain, s.seq, s.detail
                    );
                }
            }
            Ok(())
        }
        SessionsCommand::Replay { id, store, speed } => {
            let setup = audit_setup(&load_config(store.config.as_deref())?)?;
            record_read(
                &setup,
                &store.operator,
                audit::kind::AUDIT_READ,
                serde_json::json!({"command": "sessions replay", "session": id}),
            )
            .await?;
            let mut st = open_store(&setup).await?;
            let steps = audit::sessions::timeline(&mut st, &id).await?;
            anyhow::ensure!(!steps.is_empty(), "no session {id:?} in the store");
            audit::sessions::replay(&steps, speed, &mut std::io::stdout()).await?;
            Ok(())
        }
    }
}

async fn approvals_command(
    url: &str,
    token: Option<String>,
    command: ApprovalsCommand,
) -> anyhow::Result<()> {
    let token = token.context("an approver token is needed: --token or TOLLGATE_TOKEN")?;
    let http = reqwest::Client::new();
    let base = url.trim_end_matches('/');
    let response = match &command {
        ApprovalsCommand::List { .. } => http.get(format!("{base}/approvals")),
        ApprovalsCommand::Approve { id, window } => http
            .post(format!("{base}/approvals/{id}/approve"))
            .json(&serde_json::json!({ "window": window })),
        ApprovalsCommand::Deny { id, reason } => http
            .post(format!("{base}/approvals/{id}/deny"))
            .json(&serde_json::json!({ "reason": reason })),
    }
    .bearer_auth(token)
    .send()
    .await
    .with_context(|| format!("reaching {base}"))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    if !status.is_success() {
        anyhow::bail!(
            "{status}: {}",
            body["error"].as_str().unwrap_or("request failed")
        );
    }
    match command {
        ApprovalsCommand::List { json: true } => {
            println!("{}", serde_json::to_string_pretty(&body)?)
        }
        ApprovalsCommand::List { json: false } => {
            let mut t = comfy_table::Table::new();
            t.set_header(["id", "requester", "target", "statement", "rule", "expires"]);
            for r in body.as_array().into_iter().flatten() {
                t.add_row([
                    r["id"].as_str().unwrap_or_default().to_owned(),
                    r["subject"].as_str().unwrap_or_default().to_owned(),
                    r["target"].as_str().unwrap_or_default().to_owned(),
                    r["sql"].as_str().unwrap_or_default().to_owned(),
                    r["rule"].as_str().unwrap_or("default").to_owned(),
                    r["expires"].as_str().unwrap_or_default().to_owned(),
                ]);
            }
            println!("{t}");
        }
        _ => println!(
            "{} {}",
            body["id"].as_str().unwrap_or_default(),
            body["decision"].as_str().unwrap_or_default()
        ),
    }
    Ok(())
}

/// Prints verification reports; true when every chain is intact.
fn print_reports(reports: &[audit::verify::ChainReport]) -> bool {
    let mut ok = true;
    for r in reports {
        if r.ok() {
            println!(
                "chain {}: ok, records {}..{}, {} checkpoint(s), {} unsigned at the tail",
                r.chain,
                r.first_seq.unwrap_or(0),
                r.last_seq.unwrap_or(0),
                r.checkpoints,
                r.unsigned_tail
            );
        } else {
            ok = false;
            println!("chain {}: FAILED", r.chain);
            for p in &r.problems {
                println!("  {p}");
            }
        }
    }
    if reports.is_empty() {
        println!("no chains to verify");
    }
    ok
}

fn public_key_arg(text: &str) -> anyhow::Result<audit::record::PublicKey> {
    let text = match std::fs::read_to_string(text) {
        Ok(file) => file,
        Err(_) => text.to_owned(),
    };
    Ok(audit::record::PublicKey::parse(&text)?)
}

async fn audit_command(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Keygen { out } => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let pem = audit::record::Signer::generate_pem();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&out)
                .with_context(|| format!("creating {}", out.display()))?;
            f.write_all(pem.as_bytes())?;
            let signer = audit::record::Signer::from_pkcs8(pem.as_bytes())?;
            println!(
                "{}",
                audit::record::PublicKey::from_bytes(signer.public_key()).base64()
            );
            Ok(())
        }
        AuditCommand::PublicKey { config } => {
            let setup = audit_setup(&load_config(config.as_deref())?)?;
            println!(
                "{}",
                audit::record::PublicKey::from_bytes(setup.signer.public_key()).base64()
            );
            Ok(())
        }
        AuditCommand::Verify {
            config,
            operator,
            bundle,
            public_key,
        } => {
            let config = match (&bundle, config) {
                (None, config) => Some(config_path(config.as_deref())?),
                (Some(_), config) => config,
            };
            let reports = match (bundle, config) {
                (Some(bundle), _) => {
                    let key = public_key_arg(
                        public_key
                            .as_deref()
                            .context("--bundle needs --public-key")?,
                    )?;
                    let file = std::fs::File::open(&bundle)
                        .with_context(|| format!("opening {}", bundle.display()))?;
                    audit::verify::bundle(std::io::BufReader::new(file), &key)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", bundle.display()))?
                }
                (None, Some(config)) => {
                    let setup = audit_setup(&Config::load(&config)?)?;
                    let key = match public_key {
                        Some(k) => public_key_arg(&k)?,
                        None => audit::record::PublicKey::from_bytes(setup.signer.public_key()),
                    };
                    let mut st = open_store(&setup).await?;
                    let reports = audit::verify::store(&mut st, &key).await?;
                    st.close().await;
                    record_read(
                        &setup,
                        &operator,
                        audit::kind::AUDIT_READ,
                        serde_json::json!({
                            "command": "audit verify",
                            "chains": reports.len(),
                            "intact": reports.iter().all(|r| r.ok()),
                        }),
                    )
                    .await?;
                    reports
                }
                (None, None) => anyhow::bail!("give --config FILE or --bundle FILE"),
            };
            if !print_reports(&reports) {
                std::process::exit(1);
            }
            Ok(())
        }
        AuditCommand::Export {
            store,
            format,
            period,
            out,
        } => {
            let setup = audit_setup(&load_config(store.config.as_deref())?)?;
            let period = audit::export::Period {
                since: period.since,
                until: period.until,
            };
            record_read(
                &setup,
                &store.operator,
                audit::kind::AUDIT_EXPORT,
                serde_json::json!({
                    "format": format!("{format:?}").to_lowercase(),
                    "since": period.since,
                    "until": period.until,
                    "out": out.as_ref().map(|p| p.display().to_string()),
                }),
            )
            .await?;
            let mut st = open_store(&setup).await?;
            let (since, until) = period.bounds();
            let total = st.count(since, until).await?;
            let bar = indicatif::ProgressBar::new(total);
            if out.is_none() {
                bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            }
            let key_id = Some(setup.signer.key_id().to_owned());
            let n = match &out {
                Some(path) => {
                    let file = tokio::fs::File::create(path)
                        .await
                        .with_context(|| format!("creating {}", path.display()))?;
                    let mut w = tokio::io::BufWriter::new(file);
                    audit::export::write(&mut st, format, &period, key_id, &mut w, &|n| {
                        bar.set_position(n)
                    })
                    .await?
                }
                None => {
                    let mut w = tokio::io::BufWriter::new(tokio::io::stdout());
                    audit::export::write(&mut st, format, &period, key_id, &mut w, &|_| {}).await?
                }
            };
            bar.finish_and_clear();
            eprintln!("{n} record(s) exported");
            Ok(())
        }
        AuditCommand::Report {
            store,
            period,
            format,
            out,
        } => {
            let setup = audit_setup(&load_config(store.config.as_deref())?)?;
            let period = audit::export::Period {
                since: period.since,
                until: period.until,
            };
            record_read(
                &setup,
                &store.operator,
                audit::kind::AUDIT_READ,
                serde_json::json!({"command": "audit report", "since": period.since, "until": period.until}),
            )
            .await?;
            let mut st = open_store(&setup).await?;
            let key = audit::record::PublicKey::from_bytes(setup.signer.public_key());
            let chains = audit::verify::store(&mut st, &key).await?;
            let evidence = audit::report::gather(&mut st, &period).await?;
            let text = match format {
                ReportFormat::Markdown => audit::report::markdown(&evidence, &chains, &period),
                ReportFormat::Html => audit::report::html(&evidence, &chains, &period),
            };
            match out {
                Some(path) => std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => print!("{text}"),
            }
            Ok(())
        }
    }
}

/// Runs the proxy (and the admin interface when configured) until SIGTERM or SIGINT.
fn serve(
    config: Arc<Config>,
    mut admin: AdminState,
    banner: Option<String>,
    source: &str,
    digest: String,
) -> anyhow::Result<()> {
    let mut stages = Stages::default();
    if config.admin.is_some() {
        match tollgate::metrics::install() {
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
    let recorder = match &config.audit {
        Some(_) => {
            let setup = audit_setup(&config)?;
            let location = setup.settings.location.clone();
            let key_id = setup.signer.key_id().to_owned();
            let recorder = audit::Recorder::start(setup.settings, setup.signer)
                .context("opening the audit store")?;
            admin.audit = Some(tollgate::admin::audit::AuditAccess {
                location,
                recorder: recorder.clone(),
                key_id,
            });
            let _ = recorder.record(audit::Event::new(
                audit::kind::CONFIG_LOAD,
                audit::Outcome::Success,
                audit::Who::daemon(),
                serde_json::json!({
                    "file": source,
                    "sha256": digest,
                    "targets": config.targets.iter().map(|t| t.value.name.clone()).collect::<Vec<_>>(),
                    "policies": config.policies,
                }),
            ));
            Some(recorder)
        }
        None => {
            tracing::warn!("no audit store configured: sessions are not recorded");
            None
        }
    };
    stages.record = recorder.clone();
    admin.readiness.recorder = recorder.clone();
    if let Some(a) = &config.approvals {
        let webhook = a
            .webhook
            .as_ref()
            .map(|w| tollgate::approval::webhook::Webhook::new(w.url.clone(), w.timeout, w.retries))
            .transpose()
            .context("approvals.webhook")?;
        let approvals = tollgate::approval::Approvals::new(
            tollgate::approval::Settings {
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
            let settings =
                audit::writer::Settings::from_config(audit_cfg).context("audit.postgres")?;
            if let audit::store::Location::Postgres(url) = settings.location {
                approvals
                    .share(url, settings.chain)
                    .map_err(|e| anyhow::anyhow!("approvals: {e}"))?;
            }
        }
        if let Some(login) = &a.login {
            admin.login = Some(
                tollgate::admin::page::Login::new(
                    login.clone(),
                    // Every instance derives the page's cookie key from the shared audit key.
                    config
                        .audit
                        .as_ref()
                        .and_then(|a| a.signing_key.read_bytes().ok())
                        .as_deref(),
                )
                .map_err(|e| anyhow::anyhow!("approvals.login: {e}"))?,
            );
        }
        stages.approvals = Some(Arc::clone(&approvals));
        admin.approvals = Some(approvals);
    }
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
        inspector = Some(loaded);
    }
    let ctx = Arc::new(Context::new(Arc::clone(&config), stages)?);
    admin.validator = ctx.validator.clone();
    if let Some(a) = &config.admin {
        admin.auditor_groups = a.auditor_groups.clone();
    }
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
    let mysql_listeners = if config
        .targets
        .iter()
        .any(|t| t.value.protocol == tollgate::config::Protocol::Mysql)
    {
        tollgate::server::bind_reuseport(config.listen.mysql, workers)
            .with_context(|| format!("binding {}", config.listen.mysql))?
    } else {
        Vec::new()
    };
    let served =
        tollgate::server::run_threads(listeners, mysql_listeners, ctx, shutdown_signal(inspector));
    if let Some(r) = recorder {
        r.stop(serde_json::json!({"reason": if served.is_ok() { "signal" } else { "error" }}));
    }
    served?;
    Ok(())
}

/// The example agent policy, written into the dev folder on first use so it can be edited.
const EXAMPLE_POLICY: &str = include_str!("../config/policies/agents.yaml");

fn dev(args: DevArgs) -> anyhow::Result<()> {
    let issuer_url = format!("http://{}/dev", args.admin);
    let approvals_client = "tollgate-approvals";
    let approvals_callback = format!("http://{}/approvals/callback", args.admin);
    let issuer = DevIssuer::open(&args.data_dir, &issuer_url)?
        .with_login_client(approvals_client, &approvals_callback);
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
    // The session store: SQLite in the data folder, signed with a key made on first use.
    let data_dir_abs = std::fs::canonicalize(&args.data_dir)
        .with_context(|| format!("resolving {}", args.data_dir.display()))?;
    let signing_key = data_dir_abs.join("audit-signing.pem");
    if !signing_key.exists() {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&signing_key)
            .and_then(|mut f| f.write_all(audit::record::Signer::generate_pem().as_bytes()))
            .with_context(|| format!("writing {}", signing_key.display()))?;
    }
    let audit_db = data_dir_abs.join("audit.db");
    let password = match &args.postgres_password_env {
        Some(var) => format!("\n    password: {{ env: {var} }}"),
        None => String::new(),
    };
    let mysql_target = if args.mysql == "none" {
        String::new()
    } else {
        let password = match &args.mysql_password_env {
            Some(var) => format!("\n    password: {{ env: {var} }}"),
            None => String::new(),
        };
        format!(
            "  - name: \"*\"\n    protocol: mysql\n    address: \"{}\"\n    user: \"{}\"{password}\n",
            args.mysql, args.mysql_user
        )
    };
    let yaml = format!(
        r#"# tollgate dev: generated, not for production
listen: {{ postgres: "{listen}", mysql: "{mysql_listen}" }}
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
audit:
  sqlite: "{audit_db}"
  signing_key: {{ file: "{signing_key}" }}
  checkpoint_interval: 5s
approvals:
  page_url: "http://{admin}/approvals/ui"
  login:
    issuer: "{issuer_url}"
    client_id: {approvals_client}
    redirect_url: "{approvals_callback}"
targets:
  - name: "*"
    address: "{postgres}"
    user: "{user}"{password}
{mysql_target}"#,
        mysql_listen = args.mysql_listen,
        policy = std::fs::canonicalize(&policy_file)
            .with_context(|| format!("resolving {}", policy_file.display()))?
            .display(),
        listen = args.listen,
        admin = args.admin,
        audience = dev::AUDIENCE,
        postgres = args.postgres,
        user = args.postgres_user,
        audit_db = audit_db.display(),
        signing_key = signing_key.display(),
    );
    let config_file = data_dir_abs.join("tollgate.yaml");
    std::fs::write(&config_file, &yaml)
        .with_context(|| format!("writing {}", config_file.display()))?;
    let config = Arc::new(Config::load(&config_file)?);
    let digest = config_digest(&config_file);
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
{mariadb}
Mint other tokens:  tollgate token mint --sub NAME [--groups a,b] [--ttl 1h] --data-dir {data_dir}
Approvals:          agents' data changes wait for group dba (the example policy). Decide on
                    http://{admin}/approvals/ui (the dev issuer signs you in with the
                    sign-in code {signin_code}), or from the CLI:
                    export TOLLGATE_TOKEN=$(tollgate token mint --sub you --groups dba --data-dir {data_dir})
                    tollgate approvals list
                    tollgate approvals approve ID [--window 10m]   |   deny ID --reason \"...\"
Sessions:           tollgate sessions list{config_arg}
                    tollgate sessions replay ID{config_arg}
Audit trail:        tollgate audit verify{config_arg}  ({audit_db}){found_here}
Stop with Ctrl-C.",
        // The sessions, audit and approvals commands find the default dev folder's
        // configuration (and admin port) by themselves, from the folder `tollgate dev` runs in.
        config_arg = if args.data_dir == Path::new(DEV_DATA_DIR) {
            String::new()
        } else {
            format!(" --config {}", config_file.display())
        },
        found_here = if args.data_dir == Path::new(DEV_DATA_DIR) {
            format!(
                "\n                    (these find {DEV_CONFIG} from this folder; elsewhere add\n                    --config {})",
                config_file.display()
            )
        } else {
            String::new()
        },
        signin_code = issuer.signin_code(),
        audit_db = audit_db.display(),
        listen = args.listen,
        postgres = args.postgres,
        group = dev::DEFAULT_GROUP,
        policy = policy_file.display(),
        host = args.listen.ip(),
        port = args.listen.port(),
        admin = args.admin,
        mariadb = if args.mysql == "none" {
            String::new()
        } else {
            format!(
                "\n  MySQL/MariaDB ({mysql_listen} -> {mysql}, the cleartext plugin carries the token):\n\n  {client}\n",
                mysql_listen = args.mysql_listen,
                mysql = args.mysql,
                client = mysql_client_command(args.mysql_listen, agent, &token),
            )
        },
    );
    let admin = AdminState {
        dev_issuer: Some(Arc::new(issuer)),
        ..AdminState::default()
    };
    serve(
        config,
        admin,
        Some(banner),
        &config_file.display().to_string(),
        digest,
    )
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
