//! The `tollgate` command line: the clap definitions of the top level and the dispatch to
//! the verbs in `cli/`. Everything they do lives in the library.

mod cli;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use cli::approvals::ApprovalsCommand;
use cli::audit::AuditCommand;
use cli::dev::{DevArgs, TokenCommand};
use cli::policy::PolicyCommand;
use cli::sessions::SessionsCommand;
use tollgate::admin::AdminState;
use tollgate::config::Config;
use tollgate::daemon::Daemon;

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
    /// Find the columns of a target that hold card numbers (sampled, read-only) and write the
    /// column rules that would protect them.
    Discover(cli::discover::DiscoverArgs),
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

fn init_logging(format: LogFormat) {
    tollgate::logging::init(matches!(format, LogFormat::Json));
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
            Daemon::from_config(config, &path, AdminState::default())?.run(None)?;
            Ok(())
        }
        Command::Sessions { command } => {
            cli::runtime()?.block_on(cli::sessions::sessions_command(command))
        }
        Command::Discover(args) => cli::runtime()?.block_on(cli::discover::discover_command(args)),
        Command::Audit { command } => cli::runtime()?.block_on(cli::audit::audit_command(command)),
        Command::Approvals {
            url,
            token,
            command,
        } => cli::runtime()?.block_on(cli::approvals::approvals_command(
            &cli::admin_url(url)?,
            token,
            command,
        )),
        Command::Health { url } => cli::runtime()?.block_on(async {
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
        Command::Policy { command } => cli::policy::policy_command(command),
        Command::Dev(args) => cli::dev::dev(args),
        Command::Token { command } => cli::dev::token_command(command),
    }
}
