//! The `tollgate` command line. Everything it does lives in the library.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use tollgate::config::Config;
use tollgate::pipeline::Stages;
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
        Command::Serve { config } => serve(Arc::new(Config::load(&config)?)),
    }
}

fn serve(config: Arc<Config>) -> anyhow::Result<()> {
    let ctx = Arc::new(Context::new(Arc::clone(&config), Stages::default())?);
    let workers = config
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let listeners = tollgate::server::bind_reuseport(config.listen.postgres, workers)
        .with_context(|| format!("binding {}", config.listen.postgres))?;
    tollgate::server::run_threads(listeners, ctx, shutdown_signal())?;
    Ok(())
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
