//! The daemon's configuration: a YAML file read once at start.
//!
//! Unknown fields are refused, every value is validated right after parsing, and every error
//! names the file, the line and the field. Secrets (upstream and client passwords) are never
//! inline: the config names an environment variable or a file, read when a connection needs it,
//! so a rotated Kubernetes secret takes effect without a restart.
//!
//! One module per section, each with its validation beside it: [`listen`] (listen, admin,
//! limits, tls), [`identity`], [`targets`], [`audit`], [`approvals`], [`masking`], [`secret`].

mod approvals;
mod audit;
mod identity;
mod listen;
mod masking;
mod secret;
mod targets;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

pub use approvals::*;
pub use audit::*;
pub use identity::*;
pub use listen::*;
pub use masking::*;
pub use secret::*;
pub use targets::*;

/// A configuration problem, always with the file and, where known, the line and column.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: {message}")]
    Invalid {
        file: String,
        line: u64,
        column: u64,
        message: String,
    },
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub listen: Listen,
    #[serde(default)]
    pub limits: Limits,
    /// Threads serving connections, each with its own listening socket (SO_REUSEPORT) and
    /// single-threaded runtime. Defaults to the number of CPUs.
    #[serde(default)]
    pub workers: Option<usize>,
    /// How long running statements may go on after SIGTERM before connections are cut.
    #[serde(default = "default_grace", with = "duration")]
    pub shutdown_grace: Duration,
    /// TLS toward clients. Without it, SSLRequest is answered 'N'.
    #[serde(default)]
    pub tls: Option<ClientTls>,
    /// The admin HTTP interface (health); off unless configured.
    #[serde(default)]
    pub admin: Option<Admin>,
    /// How card numbers are shown to clients (always masked; this chooses the format).
    #[serde(default)]
    pub masking: Masking,
    /// OIDC issuers whose access tokens agents present as their password.
    #[serde(default)]
    pub identity: Option<IdentityConfig>,
    pub targets: Vec<Spanned<Target>>,
    /// Policy files (YAML rules); relative paths are from the config file's folder. Without
    /// any, every statement is forwarded (and a warning logged at start).
    #[serde(default)]
    pub policies: Vec<PathBuf>,
    /// How often policy files are checked for changes (they also reload on SIGHUP).
    #[serde(default = "default_policy_reload", with = "duration")]
    pub policy_reload_interval: Duration,
    /// The tamper-evident session store. Without it nothing is recorded (and a warning is
    /// logged at start); `tollgate dev` always configures one.
    #[serde(default)]
    pub audit: Option<AuditConfig>,
    /// Just-in-time approval of statements a rule holds (`require_approval`). Without it such
    /// statements are refused. Approvers decide through the admin API, so `admin` is needed.
    #[serde(default)]
    pub approvals: Option<ApprovalsConfig>,
}

fn default_policy_reload() -> Duration {
    Duration::from_secs(2)
}

fn default_grace() -> Duration {
    Duration::from_secs(30)
}

/// Durations written the human way: `500ms`, `10s`, `5m`.
mod duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {text:?}: {e}")))
    }
}

impl Config {
    /// Reads, parses and validates the file.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            file: file.clone(),
            source,
        })?;
        let mut config = Config::parse(&text, &file)?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in &mut config.policies {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if let Some(audit) = &mut config.audit {
            if let Some(p) = &mut audit.sqlite
                && p.is_relative()
            {
                *p = base.join(&*p);
            }
            if let Secret::File(p) = &mut audit.signing_key
                && p.is_relative()
            {
                *p = base.join(&*p);
            }
        }
        Ok(config)
    }

    /// Parses and validates YAML text; `file` only names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, Error> {
        let config: Config = serde_saphyr::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0));
            let mut message = e.without_snippet().to_string();
            // The location is already in front of the message.
            if let Some(at) = message.rfind(" at line ") {
                message.truncate(at);
            }
            Error::Invalid {
                file: file.to_owned(),
                line,
                column,
                message,
            }
        })?;
        config.validate(file)?;
        Ok(config)
    }

    fn validate(&self, file: &str) -> Result<(), Error> {
        let top = |message: String| Error::Invalid {
            file: file.to_owned(),
            line: 1,
            column: 1,
            message,
        };
        if self.targets.is_empty() {
            return Err(top("targets: at least one target is needed".into()));
        }
        self.masking.validate().map_err(top)?;
        if let Some(audit) = &self.audit {
            audit.validate().map_err(top)?;
        }
        if let Some(a) = &self.approvals {
            a.validate(self.admin.is_some()).map_err(top)?;
        }
        if self.workers == Some(0) {
            return Err(top("workers: must be at least 1".into()));
        }
        self.limits.validate().map_err(top)?;
        if let Some(identity) = &self.identity {
            identity.validate().map_err(top)?;
        }
        let mut names = HashSet::new();
        for span in &self.targets {
            let t = &span.value;
            let invalid = |message: String| Error::Invalid {
                file: file.to_owned(),
                line: span.referenced.line(),
                column: span.referenced.column(),
                message,
            };
            t.validate(self.identity.is_some()).map_err(invalid)?;
            if !names.insert((t.protocol, t.name.as_str())) {
                return Err(invalid(format!(
                    "targets[].name: duplicate target {:?}",
                    t.name
                )));
            }
        }
        Ok(())
    }

    pub fn target(&self, name: &str) -> Option<&Target> {
        self.targets
            .iter()
            .map(|s| &s.value)
            .find(|t| t.name == name)
    }
}

/// An https URL, or http to a loopback host (a local test or development issuer).
pub fn url_allowed(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    };
    matches!(host, "127.0.0.1" | "localhost" | "[::1]")
}

/// Splits `host:port` (IPv6 hosts in brackets) into its parts.
pub fn split_host_port(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then_some((host, port))
}

#[cfg(test)]
mod tests;
