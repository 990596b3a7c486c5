//! `listen`, `admin`, `limits` and `tls`: where the daemon listens and what one connection
//! may cost.

use std::net::SocketAddr;
use std::path::PathBuf;

use std::time::Duration;

use serde::Deserialize;

use super::duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// PostgreSQL listener address.
    #[serde(default = "default_pg_listen")]
    pub postgres: SocketAddr,
    /// MySQL/MariaDB listener address; it listens when a target has `protocol: mysql`.
    #[serde(default = "default_mysql_listen")]
    pub mysql: SocketAddr,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            postgres: default_pg_listen(),
            mysql: default_mysql_listen(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// Groups whose members may read the audit trail through the admin API (sessions,
    /// timelines, exports), presenting an access token from a configured issuer as
    /// `Authorization: Bearer`. Empty: the audit endpoints answer 403.
    #[serde(default)]
    pub auditor_groups: Vec<String>,
}

pub fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Client connections open at once, over all listeners.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Client connections open at once from one IP address.
    #[serde(default = "default_max_per_client")]
    pub max_connections_per_client: usize,
    /// Connections not yet authenticated, at once, over all listeners; they do not count
    /// toward `max_connections`. Past it, the oldest of the address holding the most is
    /// dropped. Default: a tenth of `max_connections`, at least 16.
    #[serde(default)]
    pub max_unauthenticated: Option<usize>,
    /// Connections not yet authenticated from one IP address; past it, that address's oldest
    /// is dropped.
    #[serde(default = "default_max_unauthenticated_per_client")]
    pub max_unauthenticated_per_client: usize,
    /// Time from accept to the end of authentication (upstream included).
    #[serde(default = "default_startup_timeout", with = "duration")]
    pub startup_timeout: Duration,
    /// A connection whose client sends nothing for this long, with nothing running, is closed
    /// (FATAL 57P05), so an idle session must log in again (PCI DSS 8.2.8). `0s` turns it off.
    #[serde(default = "default_idle_timeout", with = "duration")]
    pub idle_timeout: Duration,
    /// A statement running upstream whose server sends nothing for this long (while the
    /// client sends nothing either, and not while the server waits for COPY data or the
    /// statement is held for approval) ends the connection with an error: the server is
    /// taken for stalled. It must exceed the longest statement allowed to run silently; `0s`
    /// turns it off.
    #[serde(default = "default_upstream_timeout", with = "duration")]
    pub upstream_timeout: Duration,
    /// Time allowed to open the upstream TCP connection.
    #[serde(default = "default_connect_timeout", with = "duration")]
    pub upstream_connect_timeout: Duration,
    /// Largest protocol message accepted from a client (bytes, header included).
    #[serde(default = "default_max_client_frame")]
    pub max_client_frame: usize,
    /// Largest protocol message accepted from an upstream server (a single row can be large).
    #[serde(default = "default_max_server_frame")]
    pub max_server_frame: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: default_max_connections(),
            max_connections_per_client: default_max_per_client(),
            max_unauthenticated: None,
            max_unauthenticated_per_client: default_max_unauthenticated_per_client(),
            startup_timeout: default_startup_timeout(),
            idle_timeout: default_idle_timeout(),
            upstream_timeout: default_upstream_timeout(),
            upstream_connect_timeout: default_connect_timeout(),
            max_client_frame: default_max_client_frame(),
            max_server_frame: default_max_server_frame(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTls {
    /// PEM certificate chain presented to clients.
    pub cert: PathBuf,
    /// PEM private key of that certificate.
    pub key: PathBuf,
    /// Refuse clients that do not switch to TLS.
    #[serde(default)]
    pub require: bool,
}

fn default_pg_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 15432))
}

fn default_mysql_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 13306))
}

fn default_max_connections() -> usize {
    1000
}

fn default_max_per_client() -> usize {
    100
}

fn default_max_unauthenticated_per_client() -> usize {
    20
}

fn default_startup_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(15 * 60)
}

fn default_upstream_timeout() -> Duration {
    Duration::from_secs(10 * 60)
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_max_client_frame() -> usize {
    16 << 20
}

fn default_max_server_frame() -> usize {
    256 << 20
}

impl Limits {
    /// Connections not yet authenticated allowed at once (`max_unauthenticated` or its
    /// default).
    pub fn unauthenticated_budget(&self) -> usize {
        self.max_unauthenticated
            .unwrap_or((self.max_connections / 10).max(16))
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        if self.max_connections == 0
            || self.max_connections_per_client == 0
            || self.unauthenticated_budget() == 0
            || self.max_unauthenticated_per_client == 0
        {
            return Err("limits: connection limits must be at least 1".into());
        }
        if self.max_client_frame < 1024 || self.max_server_frame < 1024 {
            return Err("limits: frame size limits must be at least 1024 bytes".into());
        }
        Ok(())
    }
}
