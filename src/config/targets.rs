//! `targets`: the upstream databases clients reach by naming them as their database, with
//! their TLS modes, upstream credentials and client logins.

use std::path::PathBuf;

use serde::Deserialize;

use super::{RecordResults, Secret, split_host_port};

/// Upstream credentials for the members of some groups.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupCredentials {
    /// An identity in any of these groups uses these credentials.
    pub groups: Vec<String>,
    /// Only identities from these issuers (when several issuers are trusted, a group name from
    /// a weaker one must not open a stronger role).
    #[serde(default)]
    pub issuers: Option<Vec<String>>,
    pub user: String,
    #[serde(default)]
    pub password: Option<Secret>,
}

/// One upstream database that clients reach by naming it as their `database`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// The database name clients put in their connection string.
    pub name: String,
    /// The wire protocol of the upstream server (and of the listener that serves the target).
    #[serde(default)]
    pub protocol: Protocol,
    /// Upstream `host:port`.
    pub address: String,
    /// Database name upstream; defaults to `name`.
    #[serde(default)]
    pub database: Option<String>,
    /// Role tollgate logs in as upstream.
    pub user: String,
    /// Its password; absent when the server trusts the connection.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Other upstream roles for members of some groups (first match wins), for example a
    /// read-write role for a break-glass group while agents get the read-only `user`.
    #[serde(default)]
    pub credentials: Vec<GroupCredentials>,
    #[serde(default)]
    pub tls: UpstreamTls,
    /// Password exchanges tollgate accepts from the upstream server. PostgreSQL: MD5 and
    /// cleartext hand the password (or a replayable hash) to whoever answers at the address,
    /// so they must be listed explicitly; SCRAM-SHA-256 (the default) also proves the server
    /// knows the password. MySQL: caching_sha2_password, client_ed25519 and
    /// mysql_native_password by default; mysql_clear_password only when listed.
    #[serde(default)]
    pub upstream_auth: Option<Vec<UpstreamAuth>>,
    /// How clients prove who they are before tollgate connects upstream (OIDC by default).
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Overrides `audit.results` for this target.
    #[serde(default)]
    pub record_results: Option<RecordResults>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamAuth {
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    Md5,
    Password,
    #[serde(rename = "mysql_native_password")]
    MysqlNativePassword,
    #[serde(rename = "caching_sha2_password")]
    CachingSha2Password,
    #[serde(rename = "client_ed25519")]
    ClientEd25519,
    #[serde(rename = "mysql_clear_password")]
    MysqlClearPassword,
}

impl UpstreamAuth {
    fn protocol(self) -> Protocol {
        match self {
            UpstreamAuth::ScramSha256 | UpstreamAuth::Md5 | UpstreamAuth::Password => {
                Protocol::Postgres
            }
            _ => Protocol::Mysql,
        }
    }
}

/// The wire protocol a target speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Postgres,
    Mysql,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Postgres => "postgres",
            Protocol::Mysql => "mysql",
        }
    }
}

/// The name of the target that takes any database no other target names.
pub const ANY_DATABASE: &str = "*";

impl Target {
    /// The password exchanges allowed with the upstream server (`upstream_auth` or the
    /// protocol's default).
    pub fn upstream_auth(&self) -> Vec<UpstreamAuth> {
        match (&self.upstream_auth, self.protocol) {
            (Some(list), _) => list.clone(),
            (None, Protocol::Postgres) => vec![UpstreamAuth::ScramSha256],
            (None, Protocol::Mysql) => vec![
                UpstreamAuth::CachingSha2Password,
                UpstreamAuth::ClientEd25519,
                UpstreamAuth::MysqlNativePassword,
            ],
        }
    }

    /// The database to open upstream for a client that asked for `requested`.
    pub fn upstream_database<'a>(&'a self, requested: &'a str) -> &'a str {
        match &self.database {
            Some(db) => db,
            None if self.name == ANY_DATABASE => requested,
            None => &self.name,
        }
    }

    /// The upstream role and password for an identity's issuer and groups.
    pub fn credentials_for(&self, issuer: &str, groups: &[String]) -> (&str, Option<&Secret>) {
        self.credentials
            .iter()
            .find(|c| {
                c.groups.iter().any(|g| groups.contains(g))
                    && c.issuers
                        .as_ref()
                        .is_none_or(|i| i.iter().any(|x| x == issuer))
            })
            .map(|c| (c.user.as_str(), c.password.as_ref()))
            .unwrap_or((self.user.as_str(), self.password.as_ref()))
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Plain TCP to the server.
    #[default]
    Disable,
    /// TLS, without checking the server's certificate (like libpq's `require`).
    Require,
    /// TLS, certificate checked against `ca_file` and the host name.
    VerifyFull,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    #[serde(default)]
    pub mode: TlsMode,
    /// PEM CA bundle for `verify-full`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Name checked in the certificate; defaults to the host part of `address`.
    #[serde(default)]
    pub server_name: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAuthMethod {
    /// An OIDC access token as the password, validated against `identity.issuers`.
    #[default]
    Oidc,
    /// SCRAM-SHA-256 against a static password: the password never crosses the wire.
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    /// The password in clear (only sensible over TLS).
    Password,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ClientAuth {
    #[serde(default)]
    pub method: ClientAuthMethod,
    /// With a static password: the user name clients must give; any name when absent.
    #[serde(default)]
    pub user: Option<String>,
    /// The static password (`scram-sha-256` and `password` methods only).
    #[serde(default)]
    pub password: Option<Secret>,
    /// Groups of clients that log in with the static password (policy rules match on them).
    #[serde(default)]
    pub groups: Vec<String>,
}

impl Target {
    /// Checks one target; `has_identity` tells whether tokens can be validated at all.
    pub(super) fn validate(&self, has_identity: bool) -> Result<(), String> {
        let t = self;
        if t.name.is_empty() {
            return Err("targets[].name: must not be empty".into());
        }
        if let Some(bad) = t
            .upstream_auth
            .iter()
            .flatten()
            .find(|a| a.protocol() != t.protocol)
        {
            return Err(format!(
                "targets[{}].upstream_auth: {bad:?} is not a {} password exchange",
                t.name,
                t.protocol.name()
            ));
        }
        if t.protocol == Protocol::Mysql && t.client_auth.method == ClientAuthMethod::ScramSha256 {
            return Err(format!(
                "targets[{}].client_auth.method: MySQL clients log in with oidc or password (mysql_clear_password), not scram-sha-256",
                t.name
            ));
        }
        if split_host_port(&t.address).is_none() {
            return Err(format!(
                "targets[{}].address: expected host:port, got {:?}",
                t.name, t.address
            ));
        }
        let auth = &t.client_auth;
        match auth.method {
            ClientAuthMethod::Oidc if !has_identity => {
                return Err(format!(
                    "targets[{}].client_auth: OIDC logins need an `identity` section (or set method: scram-sha-256 with a password)",
                    t.name
                ));
            }
            ClientAuthMethod::Oidc
                if auth.password.is_some() || auth.user.is_some() || !auth.groups.is_empty() =>
            {
                return Err(format!(
                    "targets[{}].client_auth: user, password and groups belong to the static methods, not oidc",
                    t.name
                ));
            }
            ClientAuthMethod::ScramSha256 | ClientAuthMethod::Password
                if auth.password.is_none() =>
            {
                return Err(format!(
                    "targets[{}].client_auth.password: required by this method",
                    t.name
                ));
            }
            _ => {}
        }
        if t.tls.mode == TlsMode::VerifyFull && t.tls.ca_file.is_none() {
            return Err(format!(
                "targets[{}].tls.ca_file: required by mode verify-full",
                t.name
            ));
        }
        Ok(())
    }
}
