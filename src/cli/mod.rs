//! The CLI's verbs, one module each; `main.rs` holds the clap definitions of the top level
//! and dispatches here. Everything a verb does beyond printing lives in the library.

pub mod approvals;
pub mod audit;
pub mod dev;
pub mod discover;
pub mod policy;
pub mod sessions;

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tollgate::audit as trail;
use tollgate::config::Config;

/// Where the audit store is and who reads it.
#[derive(clap::Args)]
pub struct StoreArgs {
    /// The tollgate config whose `audit` section names the store and signing key (default:
    /// the dev configuration in the current folder, `.tollgate-dev/tollgate.yaml`).
    #[arg(long, env = "TOLLGATE_CONFIG")]
    pub config: Option<PathBuf>,
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

/// `tollgate dev`'s default data folder, and the configuration it writes there.
pub const DEV_DATA_DIR: &str = ".tollgate-dev";
pub const DEV_CONFIG: &str = ".tollgate-dev/tollgate.yaml";

/// The configuration a command reads: the one given (`--config`, `TOLLGATE_CONFIG`), else the
/// dev configuration in the current folder, named on stderr so nobody wonders which was used.
pub fn config_path(given: Option<&Path>) -> anyhow::Result<PathBuf> {
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

pub fn load_config(given: Option<&Path>) -> anyhow::Result<Config> {
    Ok(Config::load(&config_path(given)?)?)
}

/// The admin API the approvals commands talk to: the one given, else the dev configuration's
/// admin listener (named on stderr), else the default listener. Only a loopback listener is
/// taken from the folder: the approver's token goes there, and a configuration planted in a
/// folder must not send it elsewhere.
pub fn admin_url(given: Option<String>) -> anyhow::Result<String> {
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
