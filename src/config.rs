//! The daemon's configuration: a YAML file read once at start.
//!
//! Unknown fields are refused, every value is validated right after parsing, and every error
//! names the file, the line and the field. Secrets (upstream and client passwords) are never
//! inline: the config names an environment variable or a file, read when a connection needs it,
//! so a rotated Kubernetes secret takes effect without a restart.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

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

/// How held statements reach approvers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsConfig {
    /// The approvals page approvers open (named in the client's notice and the webhook).
    #[serde(default)]
    pub page_url: Option<String>,
    /// A webhook told about every held statement (JSON POST, Slack-compatible `text`).
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
    /// Statements waiting at once, at most; more are refused.
    #[serde(default = "default_max_pending")]
    pub max_pending: usize,
    /// Statements of one identity waiting at once, at most.
    #[serde(default = "default_max_pending_per_identity")]
    pub max_pending_per_identity: usize,
    /// The approvals page's sign-in (OIDC authorization code with PKCE). Without it the page
    /// is off and approvers use the CLI or the API.
    #[serde(default)]
    pub login: Option<LoginConfig>,
}

/// How approvers sign in to the approvals page.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginConfig {
    /// The OIDC issuer (https; http only for loopback); its discovery document is read.
    pub issuer: String,
    /// The client registered for the page; ID tokens must name it as their audience.
    pub client_id: String,
    /// Its secret, for providers that require one with PKCE.
    #[serde(default)]
    pub client_secret: Option<Secret>,
    /// Where the provider sends approvers back: `<admin base URL>/approvals/callback`.
    pub redirect_url: String,
    /// The ID token claim holding groups (dotted path).
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// How long a sign-in lasts, at most (never beyond the ID token's expiry).
    #[serde(default = "default_session_ttl", with = "duration")]
    pub session_ttl: Duration,
}

fn default_session_ttl() -> Duration {
    Duration::from_secs(8 * 3600)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// Each attempt's limit.
    #[serde(default = "default_webhook_timeout", with = "duration")]
    pub timeout: Duration,
    /// Attempts after the first, with growing pauses.
    #[serde(default = "default_webhook_retries")]
    pub retries: u32,
}

fn default_max_pending() -> usize {
    1000
}
fn default_max_pending_per_identity() -> usize {
    20
}
fn default_webhook_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_webhook_retries() -> u32 {
    3
}

/// Where and how sessions are recorded (PCI DSS 10).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// An embedded SQLite database file (one instance); relative to the config file's folder.
    #[serde(default)]
    pub sqlite: Option<PathBuf>,
    /// A PostgreSQL connection URL (several instances share it), held as a secret because
    /// it may carry a password.
    #[serde(default)]
    pub postgres: Option<Secret>,
    /// This instance's chain name; each instance writing to a shared store needs its own.
    /// Defaults to the host name.
    #[serde(default)]
    pub chain: Option<String>,
    /// The Ed25519 key (PKCS#8, PEM or DER) that signs checkpoints. `tollgate audit keygen`
    /// writes one and prints its public half, which is all an auditor needs.
    pub signing_key: Secret,
    /// How often the chain's head is signed (also at every clean stop).
    #[serde(default = "default_checkpoint_interval", with = "duration")]
    pub checkpoint_interval: Duration,
    /// Records written per store transaction, at most.
    #[serde(default = "default_audit_batch")]
    pub batch_size: usize,
    /// How long the writer waits for more records before committing a batch (group commit:
    /// fewer, larger transactions). A record is durable at most this long after it is made.
    #[serde(default = "default_linger", with = "duration")]
    pub linger: Duration,
    /// Records waiting for the store, at most; when full, new statements are refused.
    #[serde(default = "default_audit_queue")]
    pub queue_size: usize,
    /// Days a record is kept; older checkpointed segments are pruned. 0 keeps everything.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// What is kept of results: every row (`full`) or counts and bytes (`summary`).
    /// A target's `record_results` overrides it.
    #[serde(default)]
    pub results: RecordResults,
}

/// How much of the result rows the session store keeps.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RecordResults {
    #[default]
    Full,
    Summary,
}

fn default_checkpoint_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_linger() -> Duration {
    Duration::from_millis(5)
}
fn default_audit_batch() -> usize {
    512
}
fn default_audit_queue() -> usize {
    65_536
}
fn default_retention_days() -> u32 {
    365
}

fn default_policy_reload() -> Duration {
    Duration::from_secs(2)
}

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
    /// Time from accept to the end of authentication (upstream included).
    #[serde(default = "default_startup_timeout", with = "duration")]
    pub startup_timeout: Duration,
    /// A connection whose client sends nothing for this long, with nothing running, is closed
    /// (FATAL 57P05), so an idle session must log in again (PCI DSS 8.2.8). `0s` turns it off.
    #[serde(default = "default_idle_timeout", with = "duration")]
    pub idle_timeout: Duration,
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
            startup_timeout: default_startup_timeout(),
            idle_timeout: default_idle_timeout(),
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

/// PAN masking toward clients.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Masking {
    /// The format for everyone not in `groups` (default: first 6 and last 4 digits).
    #[serde(default)]
    pub format: crate::mask::Format,
    /// The key of the `hmac` format.
    #[serde(default)]
    pub hmac_key: Option<Secret>,
    /// Other formats for members of some groups (first match wins).
    #[serde(default)]
    pub groups: Vec<GroupMasking>,
    /// Columns that hold card numbers, masked whatever their content: a column-name pattern
    /// (`pan`, `*card_number*`), `table.column` or `schema.table.column`. Name patterns match
    /// the source column (`SELECT pan AS x` is caught) and the output name.
    #[serde(default)]
    pub columns: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupMasking {
    pub groups: Vec<String>,
    pub format: crate::mask::Format,
}

/// How agent tokens are validated.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    pub issuers: Vec<IssuerConfig>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    #[serde(default = "default_leeway", with = "duration")]
    pub leeway: Duration,
    /// Accept tokens over plaintext from loopback clients (development only). Otherwise a
    /// token is only asked for over TLS.
    #[serde(default)]
    pub allow_plaintext_loopback: bool,
    /// Shortest time between two key-set fetches caused by tokens naming an unknown key, so
    /// junk tokens cannot make tollgate hammer the identity provider.
    #[serde(default = "default_min_key_refresh", with = "duration")]
    pub min_key_refresh: Duration,
    /// Delay before answering a failed login, doubling per consecutive failure from an address.
    #[serde(default = "default_failure_delay", with = "duration")]
    pub failure_delay: Duration,
    #[serde(default = "default_max_failure_delay", with = "duration")]
    pub max_failure_delay: Duration,
}

/// One trusted token issuer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The exact `iss` value; discovery is `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    /// Accepted `aud` values (a token needs one of them).
    pub audiences: Vec<String>,
    /// The key set's URL, skipping discovery.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// Accepted signature algorithms: a subset of RS256, PS256, ES256, EdDSA.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<JwtAlgorithm>,
    /// Claim holding the agent's unique id.
    #[serde(default = "default_subject_claim")]
    pub subject_claim: String,
    /// Claim holding groups or roles; a dotted path reaches into objects
    /// (`realm_access.roles` for Keycloak, `roles` for Azure AD, `groups` for Okta).
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Claims naming the OAuth client, first present wins.
    #[serde(default = "default_client_id_claims")]
    pub client_id_claims: Vec<String>,
    /// Claims that must be present with this value (or contain it, for a list).
    #[serde(default)]
    pub required_claims: BTreeMap<String, String>,
    /// How often the key set is fetched again, so rotated keys need no restart.
    #[serde(default = "default_key_refresh", with = "duration")]
    pub key_refresh: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum JwtAlgorithm {
    RS256,
    PS256,
    ES256,
    EdDSA,
}

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

/// Where a secret lives. Never the secret itself.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Secret {
    /// An environment variable of the tollgate process.
    Env(String),
    /// A file whose whole content (trailing newline removed) is the secret; re-read each use.
    File(PathBuf),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Env(name) => write!(f, "Secret::Env({name})"),
            Secret::File(path) => write!(f, "Secret::File({})", path.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
    #[error("cannot read secret file {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl Secret {
    /// Reads a binary secret (a key file's exact bytes, or the variable's text).
    pub fn read_bytes(&self) -> Result<Vec<u8>, SecretError> {
        match self {
            Secret::Env(_) => self.read().map(String::into_bytes),
            Secret::File(path) => std::fs::read(path).map_err(|source| SecretError::File {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// Reads the secret now. The value is never logged by tollgate.
    pub fn read(&self) -> Result<String, SecretError> {
        match self {
            Secret::Env(name) => {
                std::env::var(name).map_err(|_| SecretError::EnvMissing(name.clone()))
            }
            Secret::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| SecretError::File {
                    path: path.display().to_string(),
                    source,
                })?;
                Ok(text.trim_end_matches(['\r', '\n']).to_owned())
            }
        }
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

fn default_leeway() -> Duration {
    Duration::from_secs(30)
}
fn default_min_key_refresh() -> Duration {
    Duration::from_secs(10)
}
fn default_failure_delay() -> Duration {
    Duration::from_millis(100)
}
fn default_max_failure_delay() -> Duration {
    Duration::from_secs(3)
}
fn default_algorithms() -> Vec<JwtAlgorithm> {
    vec![
        JwtAlgorithm::RS256,
        JwtAlgorithm::PS256,
        JwtAlgorithm::ES256,
        JwtAlgorithm::EdDSA,
    ]
}
fn default_subject_claim() -> String {
    "sub".into()
}
fn default_groups_claim() -> String {
    "groups".into()
}
fn default_client_id_claims() -> Vec<String> {
    vec!["azp".into(), "appid".into(), "client_id".into()]
}
fn default_key_refresh() -> Duration {
    Duration::from_secs(3600)
}

fn default_pg_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 15432))
}
fn default_mysql_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 13306))
}
fn default_grace() -> Duration {
    Duration::from_secs(30)
}
fn default_max_connections() -> usize {
    1000
}
fn default_max_per_client() -> usize {
    100
}
fn default_startup_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(15 * 60)
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
        let invalid = |span: &Spanned<Target>, message: String| Error::Invalid {
            file: file.to_owned(),
            line: span.referenced.line(),
            column: span.referenced.column(),
            message,
        };
        let top = |message: &str| Error::Invalid {
            file: file.to_owned(),
            line: 1,
            column: 1,
            message: message.to_owned(),
        };
        if self.targets.is_empty() {
            return Err(top("targets: at least one target is needed"));
        }
        let uses_hmac = self.masking.format == crate::mask::Format::Hmac
            || self
                .masking
                .groups
                .iter()
                .any(|g| g.format == crate::mask::Format::Hmac);
        if uses_hmac && self.masking.hmac_key.is_none() {
            return Err(top("masking.hmac_key: required by the hmac format"));
        }
        if let Some(audit) = &self.audit {
            if audit.sqlite.is_some() == audit.postgres.is_some() {
                return Err(top("audit: exactly one of sqlite and postgres is needed"));
            }
            if audit.batch_size == 0 || audit.queue_size < audit.batch_size {
                return Err(top(
                    "audit: batch_size must be at least 1 and queue_size at least batch_size",
                ));
            }
            if audit.checkpoint_interval.is_zero() {
                return Err(top("audit.checkpoint_interval: must be more than 0"));
            }
            if let Some(chain) = &audit.chain
                && !crate::audit::valid_chain_name(chain)
            {
                return Err(top(
                    "audit.chain: 1 to 60 characters of letters, digits, '.', '_' and '-'",
                ));
            }
        }
        if let Some(a) = &self.approvals {
            if self.admin.is_none() {
                return Err(top(
                    "approvals: approvers decide through the admin API, so an `admin` section is needed",
                ));
            }
            if let Some(l) = &a.login {
                for (field, url) in [("issuer", &l.issuer), ("redirect_url", &l.redirect_url)] {
                    if !url_allowed(url) {
                        return Err(top(&format!(
                            "approvals.login.{field}: {url:?} must be an https URL (http only for loopback)"
                        )));
                    }
                }
            }
            if let Some(w) = &a.webhook
                && !url_allowed(&w.url)
            {
                return Err(top(&format!(
                    "approvals.webhook.url: {:?} must be an https URL (http only for loopback)",
                    w.url
                )));
            }
        }
        if let Some(bad) = self
            .masking
            .columns
            .iter()
            .find(|c| !crate::mask::columns::ColumnRules::valid_entry(c))
        {
            return Err(top(&format!(
                "masking.columns: {bad:?} is not a column name, table.column or schema.table.column"
            )));
        }
        if self.workers == Some(0) {
            return Err(top("workers: must be at least 1"));
        }
        if self.limits.max_connections == 0 || self.limits.max_connections_per_client == 0 {
            return Err(top("limits: connection limits must be at least 1"));
        }
        if self.limits.max_client_frame < 1024 || self.limits.max_server_frame < 1024 {
            return Err(top("limits: frame size limits must be at least 1024 bytes"));
        }
        if let Some(identity) = &self.identity {
            if identity.issuers.is_empty() {
                return Err(top("identity.issuers: at least one issuer is needed"));
            }
            for issuer in &identity.issuers {
                let name = &issuer.issuer;
                if !url_allowed(name) {
                    return Err(top(&format!(
                        "identity.issuers[].issuer: {name:?} must be an https URL (http only for loopback)"
                    )));
                }
                if let Some(uri) = &issuer.jwks_uri
                    && !url_allowed(uri)
                {
                    return Err(top(&format!(
                        "identity.issuers[].jwks_uri: {uri:?} must be an https URL (http only for loopback)"
                    )));
                }
                if issuer.audiences.is_empty() {
                    return Err(top(&format!(
                        "identity.issuers[{name}].audiences: at least one audience is needed"
                    )));
                }
                if issuer.algorithms.is_empty() {
                    return Err(top(&format!(
                        "identity.issuers[{name}].algorithms: at least one algorithm is needed"
                    )));
                }
            }
        }
        let mut names = HashSet::new();
        for span in &self.targets {
            let t = &span.value;
            if t.name.is_empty() {
                return Err(invalid(span, "targets[].name: must not be empty".into()));
            }
            if !names.insert((t.protocol, t.name.as_str())) {
                return Err(invalid(
                    span,
                    format!("targets[].name: duplicate target {:?}", t.name),
                ));
            }
            if let Some(bad) = t
                .upstream_auth
                .iter()
                .flatten()
                .find(|a| a.protocol() != t.protocol)
            {
                return Err(invalid(
                    span,
                    format!(
                        "targets[{}].upstream_auth: {bad:?} is not a {} password exchange",
                        t.name,
                        t.protocol.name()
                    ),
                ));
            }
            if t.protocol == Protocol::Mysql
                && t.client_auth.method == ClientAuthMethod::ScramSha256
            {
                return Err(invalid(
                    span,
                    format!(
                        "targets[{}].client_auth.method: MySQL clients log in with oidc or password (mysql_clear_password), not scram-sha-256",
                        t.name
                    ),
                ));
            }
            if split_host_port(&t.address).is_none() {
                return Err(invalid(
                    span,
                    format!(
                        "targets[{}].address: expected host:port, got {:?}",
                        t.name, t.address
                    ),
                ));
            }
            let auth = &t.client_auth;
            match auth.method {
                ClientAuthMethod::Oidc if self.identity.is_none() => {
                    return Err(invalid(
                        span,
                        format!(
                            "targets[{}].client_auth: OIDC logins need an `identity` section (or set method: scram-sha-256 with a password)",
                            t.name
                        ),
                    ));
                }
                ClientAuthMethod::Oidc
                    if auth.password.is_some()
                        || auth.user.is_some()
                        || !auth.groups.is_empty() =>
                {
                    return Err(invalid(
                        span,
                        format!(
                            "targets[{}].client_auth: user, password and groups belong to the static methods, not oidc",
                            t.name
                        ),
                    ));
                }
                ClientAuthMethod::ScramSha256 | ClientAuthMethod::Password
                    if auth.password.is_none() =>
                {
                    return Err(invalid(
                        span,
                        format!(
                            "targets[{}].client_auth.password: required by this method",
                            t.name
                        ),
                    ));
                }
                _ => {}
            }
            if t.tls.mode == TlsMode::VerifyFull && t.tls.ca_file.is_none() {
                return Err(invalid(
                    span,
                    format!(
                        "targets[{}].tls.ca_file: required by mode verify-full",
                        t.name
                    ),
                ));
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
mod tests {
    use super::*;

    const MINIMAL: &str = "
targets:
  - name: app
    address: 127.0.0.1:5432
    user: postgres
    client_auth:
      method: scram-sha-256
      password: { env: AGENT_PW }
";

    const OIDC: &str = "
identity:
  issuers:
    - issuer: https://idp.example/tenant
      audiences: [api://tollgate]
      algorithms: [RS256]
";

    #[test]
    fn identity_config_and_group_credentials() {
        let text = format!(
            "{OIDC}
targets:
  - name: \"*\"
    address: 127.0.0.1:5432
    user: agent_ro
    credentials:
      - groups: [break-glass]
        user: agent_rw
        password: {{ file: /run/secrets/rw }}
"
        );
        let c = Config::parse(&text, "t.yaml").unwrap();
        let issuer = &c.identity.as_ref().unwrap().issuers[0];
        assert_eq!(issuer.groups_claim, "groups");
        assert_eq!(issuer.algorithms, vec![JwtAlgorithm::RS256]);
        let t = c.target("*").unwrap();
        assert_eq!(t.client_auth.method, ClientAuthMethod::Oidc);
        assert_eq!(t.upstream_database("sales"), "sales");
        assert_eq!(t.credentials_for("i", &["ai-agents".into()]).0, "agent_ro");
        assert_eq!(
            t.credentials_for("i", &["x".into(), "break-glass".into()])
                .0,
            "agent_rw"
        );
        assert!(url_allowed("http://127.0.0.1:9090/dev"));
        assert!(url_allowed("http://localhost/x"));
        assert!(!url_allowed("http://127.0.0.1.evil.example/x"));
        assert!(!url_allowed("ftp://idp"));
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(MINIMAL, "t.yaml").unwrap();
        assert_eq!(c.listen.postgres, "127.0.0.1:15432".parse().unwrap());
        assert_eq!(c.limits.startup_timeout, Duration::from_secs(10));
        let t = c.target("app").unwrap();
        assert_eq!(t.upstream_database("app"), "app");
        assert_eq!(t.tls.mode, TlsMode::Disable);
        assert_eq!(t.client_auth.password, Some(Secret::Env("AGENT_PW".into())));
    }

    #[test]
    fn unknown_field_names_file_line_and_field() {
        let text = MINIMAL.replace("    user: postgres", "    user: postgres\n    pasword: x");
        let err = Config::parse(&text, "t.yaml").unwrap_err().to_string();
        assert!(err.starts_with("t.yaml:6:"), "{err}");
        assert!(err.contains("pasword"), "{err}");
    }

    #[test]
    fn bad_values_are_refused_with_their_place() {
        let cases = [
            (MINIMAL.replace("127.0.0.1:5432", "nowhere"), "address"),
            (MINIMAL.replace("scram-sha-256", "md5"), "md5"),
            (format!("{MINIMAL}{}", &MINIMAL[9..]), "duplicate"),
            (
                format!("{MINIMAL}shutdown_grace: soon\n"),
                "invalid duration",
            ),
            (
                MINIMAL.replace(
                    "    user: postgres",
                    "    user: postgres\n    tls: { mode: verify-full }",
                ),
                "ca_file",
            ),
            ("targets: []\n".to_string(), "at least one target"),
            (
                MINIMAL.replace("method: scram-sha-256", "method: oidc"),
                "identity",
            ),
            (
                MINIMAL.replace("      password: { env: AGENT_PW }\n", ""),
                "password: required",
            ),
            (
                format!("{MINIMAL}{OIDC}").replace("https://idp", "http://idp"),
                "https",
            ),
            (
                format!("{MINIMAL}{OIDC}").replace("RS256", "HS256"),
                "HS256",
            ),
            (
                format!("{MINIMAL}{OIDC}").replace("[api://tollgate]", "[]"),
                "audience",
            ),
        ];
        for (text, needle) in cases {
            let err = Config::parse(&text, "t.yaml").unwrap_err().to_string();
            assert!(err.starts_with("t.yaml:"), "{err}");
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let c = Config::parse(MINIMAL, "t.yaml").unwrap();
        let text = format!("{c:?}");
        assert!(text.contains("Secret::Env(AGENT_PW)"));
    }

    #[test]
    fn file_secret_drops_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").unwrap();
        assert_eq!(Secret::File(path).read().unwrap(), "s3cret");
        assert!(Secret::Env("TOLLGATE_SURELY_UNSET".into()).read().is_err());
    }

    #[test]
    fn host_port_splitting() {
        assert_eq!(split_host_port("db:5432"), Some(("db", 5432)));
        assert_eq!(split_host_port("[::1]:5432"), Some(("::1", 5432)));
        assert_eq!(split_host_port(":5432"), None);
        assert_eq!(split_host_port("db"), None);
    }
}
