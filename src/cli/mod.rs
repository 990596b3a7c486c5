//! The CLI's verbs, one module each; `main.rs` holds the clap definitions of the top level
//! and dispatches here. Everything a verb does beyond printing lives in the library.

pub mod approvals;
pub mod audit;
pub mod backtest;
pub mod dev;
pub mod discover;
pub mod policy;
pub mod policy_test;
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
    #[command(flatten)]
    pub reader: ReaderArgs,
}

/// Who reads the trail (PCI DSS 10.2.1.3): a validated token's subject, else the
/// operating-system account running the command.
#[derive(clap::Args, Clone, Default)]
pub struct ReaderArgs {
    /// An OIDC token of the reader, validated against the config's `identity` issuers; its
    /// subject is recorded as the reader. Without it, the operating-system account is.
    #[arg(long, env = "TOLLGATE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A note recorded beside the verified reader (a name, a ticket); not itself verified.
    #[arg(long = "as")]
    pub claimed: Option<String>,
}

/// A reader of the trail as recorded.
#[derive(Debug, Clone)]
pub struct Reader {
    pub subject: String,
    /// `token` or `os_user`.
    pub source: &'static str,
    pub claimed: Option<String>,
    /// A token reader's issuer and groups.
    pub issuer: Option<String>,
    pub groups: Vec<String>,
}

/// Names the reader: the token's subject when a token is given (a token that does not
/// validate refuses the read), else `os:<account>`.
pub async fn reader(config: &Config, args: &ReaderArgs) -> anyhow::Result<Reader> {
    let claimed = args.claimed.as_deref().map(tollgate::mask::for_log);
    if let Some(token) = args.token.as_deref().filter(|t| !t.is_empty()) {
        let identity = config
            .identity
            .as_ref()
            .context("a reader's token needs the config's identity section to validate it")?;
        let validator = tollgate::auth::oidc::Validator::new(identity)?;
        let id = validator.validate(token).await.map_err(|r| {
            anyhow::anyhow!("the reader's token (TOLLGATE_TOKEN) is not valid: {r}")
        })?;
        return Ok(Reader {
            subject: tollgate::mask::for_log(&id.subject),
            source: "token",
            claimed,
            issuer: Some(id.issuer.clone()),
            groups: id.groups.clone(),
        });
    }
    Ok(Reader {
        subject: format!("os:{}", os_user()),
        source: "os_user",
        claimed,
        issuer: None,
        groups: Vec::new(),
    })
}

/// The operating-system account running this process: the owner of `/proc/self`, named by
/// `/etc/passwd` (`uid<N>` when it has no entry). Not `$USER`, which the caller sets.
pub fn os_user() -> String {
    use std::os::unix::fs::MetadataExt;
    let Ok(uid) = std::fs::metadata("/proc/self").map(|m| m.uid()) else {
        return "unknown".into();
    };
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let id: u32 = f.nth(1)?.parse().ok()?;
            (id == uid).then(|| name.to_owned())
        })
        .next()
        .unwrap_or_else(|| format!("uid{uid}"))
}

/// Where the CLI runs, as the origin of what it records: `cli@<host name>`.
fn cli_origin() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("cli@{}", host.trim())
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

/// The config, audit setup and reader of a command over the trail.
pub struct Trail {
    pub config: Config,
    pub setup: AuditSetup,
    pub reader: Reader,
}

/// Loads the config named by `args` and names the reader.
pub async fn open_trail(args: &StoreArgs) -> anyhow::Result<Trail> {
    let config = load_config(args.config.as_deref())?;
    let setup = audit_setup(&config)?;
    let reader = reader(&config, &args.reader).await?;
    Ok(Trail {
        config,
        setup,
        reader,
    })
}

/// Records that a reader read, exported or reviewed the trail (PCI DSS 10.2.1.3), on the
/// CLI's own chain beside the daemon's, with how the reader was named. Refuses the read if
/// it cannot be recorded.
pub async fn record_read(
    setup: &AuditSetup,
    reader: &Reader,
    kind: &'static str,
    mut detail: serde_json::Value,
) -> anyhow::Result<()> {
    let chain = format!("{}-cli", setup.settings.chain);
    let chain: String = chain.chars().take(64).collect();
    detail["reader_source"] = reader.source.into();
    if let Some(c) = &reader.claimed {
        detail["claimed_as"] = c.as_str().into();
    }
    let who = trail::Who {
        subject: Some(reader.subject.clone()),
        issuer: reader.issuer.clone(),
        groups: reader.groups.clone(),
        client_addr: Some(cli_origin()),
        ..trail::Who::default()
    };
    let event = trail::Event::new(
        kind,
        trail::Outcome::Success,
        std::sync::Arc::new(who),
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
