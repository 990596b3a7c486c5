//! `identity`: how agent tokens are validated (trusted issuers, claims, delays).

use std::time::Duration;

use serde::Deserialize;

use super::duration;
use std::collections::BTreeMap;

use super::url_allowed;

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
    /// Claim naming the person the agent acts for (a dotted path); RFC 8693's `act.sub` by
    /// default, `""` for none.
    #[serde(default = "default_actor_claim")]
    pub actor_claim: String,
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

pub(super) fn default_groups_claim() -> String {
    "groups".into()
}

fn default_actor_claim() -> String {
    "act.sub".into()
}

fn default_client_id_claims() -> Vec<String> {
    vec!["azp".into(), "appid".into(), "client_id".into()]
}

fn default_key_refresh() -> Duration {
    Duration::from_secs(3600)
}

impl IdentityConfig {
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.issuers.is_empty() {
            return Err("identity.issuers: at least one issuer is needed".into());
        }
        for issuer in &self.issuers {
            let name = &issuer.issuer;
            if !url_allowed(name) {
                return Err(format!(
                    "identity.issuers[].issuer: {name:?} must be an https URL (http only for loopback)"
                ));
            }
            if let Some(uri) = &issuer.jwks_uri
                && !url_allowed(uri)
            {
                return Err(format!(
                    "identity.issuers[].jwks_uri: {uri:?} must be an https URL (http only for loopback)"
                ));
            }
            if issuer.audiences.is_empty() {
                return Err(format!(
                    "identity.issuers[{name}].audiences: at least one audience is needed"
                ));
            }
            if issuer.algorithms.is_empty() {
                return Err(format!(
                    "identity.issuers[{name}].algorithms: at least one algorithm is needed"
                ));
            }
        }
        Ok(())
    }
}
