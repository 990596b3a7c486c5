//! `tollgate dev` (a first run with nothing to set up) and `tollgate token mint`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use std::net::SocketAddr;
use tollgate::admin::AdminState;
use tollgate::audit;
use tollgate::auth::dev::{self, DevIssuer};
use tollgate::config::Config;
use tollgate::daemon::Daemon;

#[derive(clap::Args)]
pub struct DevArgs {
    /// Where the dev issuer keeps its signing key.
    #[arg(long, default_value = ".tollgate-dev")]
    pub data_dir: PathBuf,
    /// Where agents connect.
    #[arg(long, default_value = "127.0.0.1:15432")]
    pub listen: SocketAddr,
    /// The admin HTTP port (serves the dev issuer's keys).
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub admin: SocketAddr,
    /// The PostgreSQL server behind tollgate.
    #[arg(long, default_value = "127.0.0.1:5432")]
    pub postgres: String,
    /// The role tollgate logs in as there.
    #[arg(long, default_value = "postgres")]
    pub postgres_user: String,
    /// An environment variable holding that role's password, if the server asks for one.
    #[arg(long)]
    pub postgres_password_env: Option<String>,
    /// The policy file (default: the example agent policy, copied to the data folder).
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Where MySQL agents connect.
    #[arg(long, default_value = "127.0.0.1:13306")]
    pub mysql_listen: SocketAddr,
    /// The MySQL / MariaDB server behind tollgate ("none" for no MySQL listener).
    #[arg(long, default_value = "127.0.0.1:3306")]
    pub mysql: String,
    /// The MySQL user tollgate logs in as there.
    #[arg(long, default_value = "root")]
    pub mysql_user: String,
    /// An environment variable holding that user's password, if the server asks for one.
    #[arg(long)]
    pub mysql_password_env: Option<String>,
}

#[derive(Subcommand)]
pub enum TokenCommand {
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
        /// The person the agent acts for (RFC 8693 `act.sub`), recorded and shown to approvers.
        #[arg(long)]
        act_sub: Option<String>,
        #[arg(long, default_value = ".tollgate-dev")]
        data_dir: PathBuf,
    },
}

/// The dev folder's issuer, made with the default admin address if `tollgate dev` never ran.
/// `tollgate token mint`: prints a token signed with the dev folder's key.
pub fn token_command(command: TokenCommand) -> anyhow::Result<()> {
    let TokenCommand::Mint {
        sub,
        groups,
        ttl,
        act_sub,
        data_dir,
    } = command;
    let issuer = open_dev_issuer(&data_dir)?;
    let groups = if groups.is_empty() {
        vec![dev::DEFAULT_GROUP.to_owned()]
    } else {
        groups
    };
    println!(
        "{}",
        issuer.mint_for(&sub, &groups, ttl, act_sub.as_deref())?
    );
    Ok(())
}

pub fn open_dev_issuer(dir: &Path) -> anyhow::Result<DevIssuer> {
    match DevIssuer::open_existing(dir) {
        Ok(issuer) => Ok(issuer),
        Err(dev::Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            let url = format!("http://{}/dev", tollgate::config::default_admin_listen());
            Ok(DevIssuer::open(dir, &url)?)
        }
        Err(e) => Err(e.into()),
    }
}

/// The example agent policy, written into the dev folder on first use so it can be edited.
const EXAMPLE_POLICY: &str = include_str!("../../config/policies/agents.yaml");

pub fn dev(args: DevArgs) -> anyhow::Result<()> {
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
        config_arg = if args.data_dir == Path::new(super::DEV_DATA_DIR) {
            String::new()
        } else {
            format!(" --config {}", config_file.display())
        },
        found_here = if args.data_dir == Path::new(super::DEV_DATA_DIR) {
            format!(
                "\n                    (these find {} from this folder; elsewhere add\n                    --config {})",
                super::DEV_CONFIG,
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
    Daemon::from_config(config, &config_file, admin)?.run(Some(banner))?;
    Ok(())
}

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
            "mysql -h {host} -P {port} -u {agent} --password='{token}' --enable-cleartext-plugin"
        )
    } else {
        format!("mariadb -h {host} -P {port} -u {agent} --password='{token}'")
    }
}
