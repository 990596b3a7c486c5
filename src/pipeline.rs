//! The protocol-neutral stages every statement and result passes through.
//!
//! The wire modules (`protocol::pg`, `protocol::mysql`) decode frames into the values here and
//! hand them to the stages; the stages never see wire bytes, so one implementation serves every
//! protocol.
//!
//! - **inspect**: each statement a client sends gets a [`Verdict`] before anything is forwarded
//!   (`policy::inspect::PolicyStage` over the policy files `conn::policy_files` keeps loaded;
//!   [`ForwardAll`] when no policy is configured).
//! - **transform**: values flowing back are masked by `mask::Masker`, which sees value bytes,
//!   never frames (each wire does the framing around it).
//! - **record**: `audit::Recorder` receives every session, statement (with its [`Ruling`]) and
//!   frame, masked; a statement it cannot record is refused.
//!
//! Frames no stage changes travel as their original bytes.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::auth::Identity;

/// A live client connection's number, unique within this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// Who is on a connection and where it leads; travels with it to every stage.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub id: ConnId,
    pub client_addr: SocketAddr,
    /// The user name the client logged in with (informational: `identity` is who it is).
    pub user: String,
    /// Who the client is, from its token or static login.
    pub identity: Arc<Identity>,
    /// The configured target serving the connection (`*` for the catch-all target).
    pub target: String,
    /// The database name the client asked for.
    pub database: String,
    pub application_name: Option<String>,
    /// The session's audit identity (id and the 10.2.2 fields every record carries).
    pub who: Arc<crate::audit::Who>,
    /// The wire protocol, which chooses the SQL dialect statements are read in.
    pub protocol: crate::config::Protocol,
    /// Names of the functions outside `pg_catalog` the upstream session can see (user-defined
    /// and extension functions), read from the server's catalog at login: a call or attribute
    /// reference naming one is a `call`. Empty for MySQL.
    pub user_functions: Arc<std::collections::BTreeSet<String>>,
    /// The reason the agent gave for the whole session (`tollgate.reason`), cleaned by
    /// `policy::reason::clean`; a statement's own leading comment takes precedence.
    pub session_reason: Option<String>,
}

/// How a statement reached the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin<'a> {
    /// A simple-protocol query string (may hold several statements).
    Simple,
    /// An extended-protocol Parse, with the prepared statement's name ("" = unnamed).
    Prepare { name: &'a str },
    /// A protocol-level function call by OID; there is no SQL text.
    FunctionCall { oid: u32 },
}

/// One statement on its way to the server.
#[derive(Debug, Clone, Copy)]
pub struct Statement<'a> {
    pub sql: &'a str,
    pub origin: Origin<'a>,
}

/// What happens to a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Forward,
    /// Not forwarded: the client gets an ERROR with this SQLSTATE and message, and the
    /// connection carries on as after any failed statement.
    Refuse {
        sqlstate: String,
        message: String,
    },
}

/// A verdict with what the audit trail keeps of how it was reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruling {
    pub verdict: Verdict,
    /// `allow`, `deny` or `require_approval`: what was done.
    pub action: &'static str,
    /// What the rules decided, when only logged (audit mode) it differs from `action`.
    pub decided: &'static str,
    /// The deciding rule; `None` for the default or when no policy is configured.
    pub rule: Option<String>,
    pub reason: String,
    /// Statement kinds (`read`, `ddl`…) and tables touched, as classified.
    pub kinds: Vec<&'static str>,
    pub tables: Vec<String>,
    /// Set when the rules hold the statement for approval: who decides and how long it may
    /// wait. The verdict is then the refusal used where approvals are not enabled.
    pub hold: Option<Hold>,
    /// The most the statement's result may hold, when a rule caps it.
    pub result_cap: Option<ResultCap>,
}

/// The most one statement's result may hold (a policy rule's `result_cap`, docs/policy.md).
/// Rows: PostgreSQL DataRow and CopyData messages, MySQL row packets. Bytes: those rows'
/// payloads as the server sent them. At a limit the wire stops forwarding rows, cancels the
/// statement on the server, drains what it still sends and ends the result with an error
/// naming the rule (PostgreSQL SQLSTATE 57014, MySQL errno 1317).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ResultCap {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<CapLimit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<CapLimit>,
}

/// One limit of a [`ResultCap`] and the rule that set it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CapLimit {
    /// Rows (for `ResultCap::rows`) or bytes (for `ResultCap::bytes`) allowed; one more ends
    /// the result.
    pub max: u64,
    /// The id of the policy rule whose `result_cap` set it.
    pub rule: String,
}

impl ResultCap {
    /// The limit `rows` rows or `bytes` bytes has passed, if any: `("rows" | "bytes", limit)`.
    /// A counter compare per row.
    pub fn exceeded(&self, rows: u64, bytes: u64) -> Option<(&'static str, &CapLimit)> {
        if let Some(l) = &self.rows
            && rows > l.max
        {
            return Some(("rows", l));
        }
        if let Some(l) = &self.bytes
            && bytes > l.max
        {
            return Some(("bytes", l));
        }
        None
    }

    /// The client-facing message at a cap: which limit, its size and rule.
    pub fn message(what: &str, limit: &CapLimit) -> String {
        format!(
            "tollgate: result cap of {} {what} reached (rule {}); the statement was cancelled and the rest of its result withheld",
            limit.max, limit.rule
        )
    }
}

/// A statement held for approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub group: String,
    pub timeout: std::time::Duration,
}

impl Ruling {
    /// Forwarded without a policy.
    pub fn forward_all() -> Ruling {
        Ruling {
            verdict: Verdict::Forward,
            action: "allow",
            decided: "allow",
            rule: None,
            reason: "no policy configured".into(),
            kinds: Vec::new(),
            tables: Vec::new(),
            hold: None,
            result_cap: None,
        }
    }
}

/// The inspect stage, shared by all connections.
pub trait Inspect: Send + Sync {
    /// The stage's state for one new connection.
    fn connect(&self, conn: &ConnInfo) -> Box<dyn ConnInspect>;

    /// Whether `identity` can only read on `database`: no rule for it allows or holds
    /// anything but reads, sessions and transactions. Its upstream session then runs
    /// read-only in the database itself, a second line behind the classifier.
    fn read_only(&self, _identity: &Identity, _database: &str) -> bool {
        false
    }

    /// Whether a setting (lower case) may be changed, by statement or startup parameter.
    fn setting_allowed(&self, _name: &str) -> bool {
        true
    }

    /// Whether the stage judges function calls, so the wire reads the target's user-defined
    /// functions at login (`ConnInfo::user_functions`).
    fn needs_user_functions(&self) -> bool {
        false
    }
}

/// The inspect stage of one connection: sees its statements in order.
pub trait ConnInspect: Send {
    fn inspect(&mut self, conn: &ConnInfo, statement: &Statement<'_>) -> Ruling;

    /// The server's answer to the last statement forwarded (`true`: no error): what it
    /// defined or dropped (a MySQL `PREPARE`, `DEALLOCATE PREPARE`) counts only on success.
    /// Called by relays that can tell; the default ignores it.
    fn answered(&mut self, _ok: bool) {}
}

/// Lets every statement through: the inspect stage when no policy is configured.
pub struct ForwardAll;

impl Inspect for ForwardAll {
    fn connect(&self, _conn: &ConnInfo) -> Box<dyn ConnInspect> {
        Box::new(ForwardAll)
    }
}

impl ConnInspect for ForwardAll {
    fn inspect(&mut self, _conn: &ConnInfo, _statement: &Statement<'_>) -> Ruling {
        Ruling::forward_all()
    }
}

/// The stages a daemon runs, shared by all its connections.
#[derive(Clone)]
pub struct Stages {
    pub inspect: Arc<dyn Inspect>,
    /// The record stage; `None` when no audit store is configured.
    pub record: Option<crate::audit::Recorder>,
    /// Held statements wait here; `None` refuses them.
    pub approvals: Option<std::sync::Arc<crate::approval::Approvals>>,
}

impl Default for Stages {
    fn default() -> Self {
        Stages {
            inspect: Arc::new(ForwardAll),
            record: None,
            approvals: None,
        }
    }
}
