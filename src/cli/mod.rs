//! The CLI's verbs, one module each; `main.rs` holds the clap definitions of the top level
//! and dispatches here. Everything a verb does beyond printing lives in the library.

pub mod approvals;
pub mod audit;
pub mod dev;
pub mod discover;
pub mod policy;
pub mod sessions;

use std::path::PathBuf;

use anyhow::Context as _;
use tollgate::audit as trail;
use tollgate::config::Config;

/// Where the audit store is and who reads it.
#[derive(clap::Args)]
pub struct StoreArgs {
    /// The tollgate config whose `audit` section names the store and signing key.
    #[arg(long, env = "TOLLGATE_CONFIG")]
    pub config: PathBuf,
    /// Who is reading (recorded in the trail); defaults to the login name.
    #[arg(long = "as", env = "USER", default_value = "unknown")]
    pub operator: String,
}

/// A period: RFC 3339 times, dates, or durations back from now (`24h`, `30d`).
#[derive(clap::Args)]
pub struct PeriodArgs {
    #[arg(long, value_parser = tollgate::audit::parse_time)]
    pub since: Option<String>,
    #[arg(long, value_parser = tollgate::audit::parse_time)]
    pub until: Option<String>,
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// The audit section of a config, its store and its signer.
pub struct AuditSetup {
    pub settings: trail::writer::Settings,
    pub signer: trail::record::Signer,
}

pub fn audit_setup(config: &Config) -> anyhow::Result<AuditSetup> {
    let a = config
        .audit
        .as_ref()
        .context("the config has no audit section")?;
    let key = a.signing_key.read_bytes().context("audit.signing_key")?;
    let signer = trail::record::Signer::from_pkcs8(&key).context("audit.signing_key")?;
    let settings = trail::writer::Settings::from_config(a).context("audit.postgres")?;
    Ok(AuditSetup { settings, signer })
}

/// Records that an operator read or exported the trail (PCI DSS 10.2.1.3), on the CLI's own
/// chain beside the daemon's. Refuses the read if it cannot be recorded.
pub async fn record_read(
    setup: &AuditSetup,
    operator: &str,
    kind: &'static str,
    detail: serde_json::Value,
) -> anyhow::Result<()> {
    let chain = format!("{}-cli", setup.settings.chain);
    let chain: String = chain.chars().take(64).collect();
    let event = trail::Event::new(
        kind,
        trail::Outcome::Success,
        trail::Who::operator(&format!("cli:{}", tollgate::mask::for_log(operator))),
        detail,
    );
    trail::writer::append_once(&setup.settings.location, &chain, &setup.signer, event)
        .await
        .context("recording this read of the audit trail (refused: it cannot be recorded)")
}

pub async fn open_store(setup: &AuditSetup) -> anyhow::Result<trail::Store> {
    Ok(trail::Store::open(&setup.settings.location, false).await?)
}
