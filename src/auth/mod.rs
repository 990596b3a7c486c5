//! Who an agent is: OIDC access tokens validated against their issuer's published keys.
//!
//! - [`oidc`]: discovery, the JWKS cache, and token validation into an [`Identity`].
//! - [`throttle`]: slows repeated failures from one address.
//! - [`dev`]: the embedded issuer of `tollgate dev` (a local signing key, minted tokens).
//!
//! A client sends its token as the password. Whatever goes wrong, the client is told only that
//! authentication failed; the precise [`Reason`] goes to the log (and the audit trail).

pub mod dev;
pub mod oidc;
pub mod throttle;

use std::fmt;
use std::time::SystemTime;

/// The issuer of identities from a target's static password.
pub const STATIC_ISSUER: &str = "tollgate:password";

/// The principal behind a connection, as the token (or the static login) established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The subject claim: a unique id of the agent (PCI DSS 8.2.1).
    pub subject: String,
    /// Groups or roles from the configured claim.
    pub groups: Vec<String>,
    /// The OAuth client the token was issued to (`azp`, `appid` or `client_id`).
    pub client_id: Option<String>,
    /// The token's issuer, or `tollgate:password` for a static per-target login.
    pub issuer: String,
    /// When tollgate stops accepting the token: its `exp` plus the configured clock-skew
    /// `leeway`, so login and every later message apply one rule. `None` for static logins.
    pub expires_at: Option<SystemTime>,
    /// The person the agent acts for, from the issuer's `actor_claim` (RFC 8693 `act.sub` by
    /// default); `None` when the token names nobody.
    pub actor: Option<String>,
}

impl Identity {
    /// The identity of a client that logged in with a target's static password.
    pub fn static_login(user: &str, groups: &[String]) -> Identity {
        Identity {
            subject: user.to_owned(),
            groups: groups.to_vec(),
            client_id: None,
            issuer: STATIC_ISSUER.to_owned(),
            expires_at: None,
            actor: None,
        }
    }

    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// Whether the token has expired at `now` (leeway included): the one expiry test, at login
    /// and at every message after it.
    pub fn expired(&self, now: SystemTime) -> bool {
        self.expires_at.is_some_and(|exp| now >= exp)
    }
}

/// Why a token was refused. Logged and recorded; never shown to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    Empty,
    TooLarge(usize),
    Malformed(String),
    AlgorithmNotAllowed(String),
    UnknownIssuer(String),
    UnknownKey(Option<String>),
    /// The key found cannot verify this algorithm (for example an RSA key and HS256).
    KeyAlgorithmMismatch,
    BadSignature,
    /// The header's `crit` names extensions (RFC 7515 §4.1.11); tollgate implements none.
    UnsupportedCritical(String),
    Expired,
    NotYetValid,
    IssuedInFuture,
    WrongIssuer,
    WrongAudience,
    MissingClaim(String),
    ClaimMismatch(String),
    /// The issuer's keys could not be fetched and none are cached.
    KeysUnavailable(String),
}

impl Reason {
    /// A stable name for reports and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Reason::Empty => "empty",
            Reason::TooLarge(_) => "too_large",
            Reason::Malformed(_) => "malformed",
            Reason::AlgorithmNotAllowed(_) => "algorithm_not_allowed",
            Reason::UnknownIssuer(_) => "unknown_issuer",
            Reason::UnknownKey(_) => "unknown_key",
            Reason::KeyAlgorithmMismatch => "key_algorithm_mismatch",
            Reason::BadSignature => "bad_signature",
            Reason::UnsupportedCritical(_) => "unsupported_critical",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::IssuedInFuture => "issued_in_future",
            Reason::WrongIssuer => "wrong_issuer",
            Reason::WrongAudience => "wrong_audience",
            Reason::MissingClaim(_) => "missing_claim",
            Reason::ClaimMismatch(_) => "claim_mismatch",
            Reason::KeysUnavailable(_) => "keys_unavailable",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Empty => write!(f, "empty token"),
            Reason::TooLarge(n) => write!(f, "token of {n} bytes is too large"),
            Reason::Malformed(why) => write!(f, "malformed token: {why}"),
            Reason::AlgorithmNotAllowed(alg) => write!(f, "algorithm {alg:?} is not allowed"),
            Reason::UnknownIssuer(iss) => write!(f, "unknown issuer {iss:?}"),
            Reason::UnknownKey(Some(kid)) => write!(f, "unknown signing key {kid:?}"),
            Reason::UnknownKey(None) => write!(f, "token names no key and the issuer has several"),
            Reason::KeyAlgorithmMismatch => write!(f, "the signing key does not fit the algorithm"),
            Reason::BadSignature => write!(f, "bad signature"),
            Reason::UnsupportedCritical(crit) => {
                write!(f, "critical header extensions not understood: {crit}")
            }
            Reason::Expired => write!(f, "token expired"),
            Reason::NotYetValid => write!(f, "token not yet valid"),
            Reason::IssuedInFuture => write!(f, "token issued in the future"),
            Reason::WrongIssuer => write!(f, "wrong issuer"),
            Reason::WrongAudience => write!(f, "wrong audience"),
            Reason::MissingClaim(c) => write!(f, "missing claim {c:?}"),
            Reason::ClaimMismatch(c) => write!(f, "claim {c:?} does not have the required value"),
            Reason::KeysUnavailable(why) => write!(f, "issuer keys unavailable: {why}"),
        }
    }
}
