//! OIDC access-token validation.
//!
//! For each configured issuer: discovery (`<issuer>/.well-known/openid-configuration`, whose
//! `issuer` must match exactly) gives `jwks_uri`; the key set is fetched and cached by `kid`,
//! fetched again on a schedule (`key_refresh`) and when a token names a key not in the cache,
//! at most once per `min_key_refresh`, so junk tokens cannot make tollgate hammer the IdP.
//!
//! A token is accepted only if: its `alg` is in the issuer's allowlist (RS256, PS256, ES256,
//! EdDSA: never `none` or HMAC), its header names no `crit` extension (tollgate implements
//! none), the key it names exists and fits that algorithm, the signature verifies, and `iss`,
//! `aud`, `exp`, `nbf`, `iat` (with leeway) and the required claims hold.
//!
//! The time claims are checked here rather than by jsonwebtoken, with arithmetic that cannot
//! overflow, and the expiry through [`Identity::expired`]: the same test (leeway included)
//! that the relays apply at every later message.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde_json::Value;
use tracing::{info, warn};

use super::{Identity, Reason};
use crate::config::{IdentityConfig, IssuerConfig, JwtAlgorithm};

/// The largest token accepted (Azure AD tokens with many groups reach a few KiB).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The last second an expiry may fall on (9999-12-31T23:59:59Z): later dates cannot be written
/// as RFC 3339 times in the audit trail, so such tokens are refused.
const LATEST_EXPIRY: u64 = 253_402_300_799;

/// Validates tokens against every configured issuer.
pub struct Validator {
    issuers: Vec<Issuer>,
    leeway: Duration,
    min_key_refresh: Duration,
    http: reqwest::Client,
}

struct Issuer {
    config: IssuerConfig,
    keys: RwLock<Keys>,
    /// Serialises fetches so a burst of tokens causes one.
    fetch: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, Arc<Key>>,
    /// Keys published without a `kid`.
    unnamed: Vec<Arc<Key>>,
    fetched_at: Option<Instant>,
    /// Last fetch attempt, successful or not (for the rate limit).
    attempted_at: Option<Instant>,
}

struct Key {
    decoding: DecodingKey,
    /// The `alg` the key set pins the key to, if it does.
    alg: Option<Algorithm>,
}

fn algorithm(a: JwtAlgorithm) -> Algorithm {
    match a {
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::PS256 => Algorithm::PS256,
        JwtAlgorithm::ES256 => Algorithm::ES256,
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
    }
}

fn decode_part(part: &str) -> Result<Value, Reason> {
    let bytes = B64URL
        .decode(part.trim_end_matches('='))
        .map_err(|_| Reason::Malformed("not base64url".into()))?;
    serde_json::from_slice(&bytes).map_err(|_| Reason::Malformed("not JSON".into()))
}

/// A NumericDate claim (RFC 7519 §2) in whole seconds; `None` when absent. Fractions are
/// dropped and dates before 1970 count as 1970; anything but a number is malformed.
fn numeric_date(claims: &Value, name: &str) -> Result<Option<u64>, Reason> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(Some(match (n.as_u64(), n.as_f64()) {
            (Some(secs), _) => secs,
            // `as` saturates: huge values become u64::MAX, negative ones and NaN 0.
            (None, Some(f)) => f as u64,
            (None, None) => 0,
        })),
        Some(_) => Err(Reason::Malformed(format!("{name} is not a number"))),
    }
}

/// Follows a dotted path (`realm_access.roles`) into a JSON object.
fn claim<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(claims, |v, key| v.get(key))
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

impl Validator {
    pub fn new(config: &IdentityConfig) -> Result<Validator, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()?;
        Ok(Validator {
            issuers: config
                .issuers
                .iter()
                .map(|c| Issuer {
                    config: c.clone(),
                    keys: RwLock::new(Keys::default()),
                    fetch: tokio::sync::Mutex::new(()),
                })
                .collect(),
            leeway: config.leeway,
            min_key_refresh: config.min_key_refresh,
            http,
        })
    }

    /// Validates a token; on success, the identity it carries.
    pub async fn validate(&self, token: &str) -> Result<Identity, Reason> {
        self.validate_at(token, SystemTime::now())
            .await
            .map(|(identity, _)| identity)
    }

    /// Validates and also returns every claim (an ID token's `nonce`, say).
    pub async fn validate_with_claims(&self, token: &str) -> Result<(Identity, Value), Reason> {
        self.validate_at(token, SystemTime::now()).await
    }

    async fn validate_at(&self, token: &str, now: SystemTime) -> Result<(Identity, Value), Reason> {
        if token.is_empty() {
            return Err(Reason::Empty);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Reason::TooLarge(token.len()));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(_sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Reason::Malformed("not a JWS compact token".into()));
        };
        // Read alg and iss before any verification, only to choose the issuer and key; the
        // signature check below covers both.
        let header = decode_part(header)?;
        let alg_name = header
            .get("alg")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let kid = header.get("kid").and_then(Value::as_str).map(str::to_owned);
        // RFC 7515 §4.1.11: a recipient must refuse a token whose `crit` names an extension it
        // does not implement, and tollgate implements none.
        if let Some(crit) = header.get("crit") {
            return Err(Reason::UnsupportedCritical(
                crit.to_string().chars().take(200).collect(),
            ));
        }
        let unverified = decode_part(payload)?;
        let iss = unverified
            .get("iss")
            .and_then(Value::as_str)
            .ok_or_else(|| Reason::MissingClaim("iss".into()))?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.config.issuer == iss)
            .ok_or_else(|| Reason::UnknownIssuer(iss.chars().take(200).collect()))?;
        let alg = issuer
            .config
            .algorithms
            .iter()
            .map(|a| algorithm(*a))
            .find(|a| format!("{a:?}") == alg_name)
            .ok_or_else(|| Reason::AlgorithmNotAllowed(alg_name.chars().take(40).collect()))?;

        let key = self.key(issuer, kid.as_deref()).await?;
        if key.alg.is_some_and(|pinned| pinned != alg) || key.decoding.family() != alg.family() {
            return Err(Reason::KeyAlgorithmMismatch);
        }

        let mut validation = Validation::new(alg);
        validation.set_issuer(&[&issuer.config.issuer]);
        validation.set_audience(&issuer.config.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        // The time claims are checked below, with the rule the relays use.
        validation.validate_nbf = false;
        validation.validate_exp = false;
        let data = jsonwebtoken::decode::<Value>(token, &key.decoding, &validation).map_err(
            |e| match e.kind() {
                ErrorKind::InvalidSignature => Reason::BadSignature,
                ErrorKind::ExpiredSignature => Reason::Expired,
                ErrorKind::ImmatureSignature => Reason::NotYetValid,
                ErrorKind::InvalidIssuer => Reason::WrongIssuer,
                ErrorKind::InvalidAudience => Reason::WrongAudience,
                ErrorKind::InvalidAlgorithm => Reason::KeyAlgorithmMismatch,
                ErrorKind::MissingRequiredClaim(c) => Reason::MissingClaim(c.clone()),
                other => Reason::Malformed(format!("{other:?}")),
            },
        )?;
        let claims = data.claims;
        let now_secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let leeway = self.leeway.as_secs();
        let exp = numeric_date(&claims, "exp")?.ok_or(Reason::MissingClaim("exp".into()))?;
        // When tollgate stops accepting the token: `exp` plus the clock-skew leeway.
        let valid_until = exp
            .checked_add(leeway)
            .filter(|&t| t <= LATEST_EXPIRY)
            .ok_or_else(|| Reason::Malformed("exp out of range".into()))?;
        let expires_at = UNIX_EPOCH + Duration::from_secs(valid_until);
        if let Some(nbf) = numeric_date(&claims, "nbf")?
            && nbf > now_secs.saturating_add(leeway)
        {
            return Err(Reason::NotYetValid);
        }
        if let Some(iat) = numeric_date(&claims, "iat")?
            && iat > now_secs.saturating_add(leeway)
        {
            return Err(Reason::IssuedInFuture);
        }
        for (path, required) in &issuer.config.required_claims {
            let values = strings(claim(&claims, path));
            if values.is_empty() {
                return Err(Reason::MissingClaim(path.clone()));
            }
            if !values.iter().any(|v| v == required) {
                return Err(Reason::ClaimMismatch(path.clone()));
            }
        }
        let subject = claim(&claims, &issuer.config.subject_claim)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Reason::MissingClaim(issuer.config.subject_claim.clone()))?
            .to_owned();
        let identity = Identity {
            subject,
            groups: strings(claim(&claims, &issuer.config.groups_claim)),
            client_id: issuer
                .config
                .client_id_claims
                .iter()
                .find_map(|c| claim(&claims, c).and_then(Value::as_str).map(str::to_owned)),
            issuer: issuer.config.issuer.clone(),
            expires_at: Some(expires_at),
            actor: Some(issuer.config.actor_claim.as_str())
                .filter(|c| !c.is_empty())
                .and_then(|c| claim(&claims, c))
                .and_then(Value::as_str)
                .filter(|a| !a.is_empty())
                .map(str::to_owned),
        };
        if identity.expired(now) {
            return Err(Reason::Expired);
        }
        Ok((identity, claims))
    }

    /// The key a token names, fetching the key set when it is stale or lacks the key.
    async fn key(&self, issuer: &Issuer, kid: Option<&str>) -> Result<Arc<Key>, Reason> {
        {
            let keys = issuer.keys.read().unwrap_or_else(|p| p.into_inner());
            if let Some(key) = keys.find(kid)
                && keys
                    .fetched_at
                    .is_some_and(|t| t.elapsed() < issuer.config.key_refresh)
            {
                return Ok(key);
            }
        }
        // A stale set, or one missing the key: fetch, at most once per `min_key_refresh`. If
        // the fetch fails, a cached key still serves.
        let fetched = self.refresh(issuer).await;
        let keys = issuer.keys.read().unwrap_or_else(|p| p.into_inner());
        match (keys.find(kid), fetched) {
            (Some(key), _) => Ok(key),
            (None, Err(e)) if keys.fetched_at.is_none() => Err(Reason::KeysUnavailable(e)),
            (None, _) => Err(Reason::UnknownKey(kid.map(str::to_owned))),
        }
    }

    async fn refresh(&self, issuer: &Issuer) -> Result<(), String> {
        let _guard = issuer.fetch.lock().await;
        {
            let keys = issuer.keys.read().unwrap_or_else(|p| p.into_inner());
            if keys
                .attempted_at
                .is_some_and(|t| t.elapsed() < self.min_key_refresh)
            {
                return Ok(());
            }
        }
        let result = self.fetch(&issuer.config).await;
        let mut keys = issuer.keys.write().unwrap_or_else(|p| p.into_inner());
        keys.attempted_at = Some(Instant::now());
        match result {
            Ok(fresh) => {
                info!(
                    issuer = issuer.config.issuer,
                    keys = fresh.by_kid.len() + fresh.unnamed.len(),
                    "fetched issuer keys"
                );
                keys.by_kid = fresh.by_kid;
                keys.unnamed = fresh.unnamed;
                keys.fetched_at = Some(Instant::now());
                Ok(())
            }
            Err(e) => {
                warn!(issuer = issuer.config.issuer, error = %e, "could not fetch issuer keys");
                Err(e)
            }
        }
    }

    async fn fetch(&self, config: &IssuerConfig) -> Result<Keys, String> {
        let jwks_uri = match &config.jwks_uri {
            Some(uri) => uri.clone(),
            None => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    config.issuer.trim_end_matches('/')
                );
                let doc: Value = self.get_json(&url).await?;
                if doc.get("issuer").and_then(Value::as_str) != Some(config.issuer.as_str()) {
                    return Err(format!(
                        "{url}: its issuer does not match {:?}",
                        config.issuer
                    ));
                }
                let uri = doc
                    .get("jwks_uri")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("{url}: no jwks_uri"))?;
                if !crate::config::url_allowed(uri) {
                    return Err(format!("{url}: jwks_uri {uri:?} is not https"));
                }
                uri.to_owned()
            }
        };
        let set: JwkSet = serde_json::from_value(self.get_json(&jwks_uri).await?)
            .map_err(|e| format!("{jwks_uri}: not a JWK set: {e}"))?;
        let mut keys = Keys::default();
        for jwk in &set.keys {
            match key_from_jwk(jwk) {
                Some(key) => match &jwk.common.key_id {
                    Some(kid) => {
                        keys.by_kid.insert(kid.clone(), Arc::new(key));
                    }
                    None => keys.unnamed.push(Arc::new(key)),
                },
                None => warn!(jwks_uri, "skipping a key tollgate cannot use"),
            }
        }
        Ok(keys)
    }

    async fn get_json(&self, url: &str) -> Result<Value, String> {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("{url}: HTTP {}", response.status()));
        }
        // Key sets are small; a huge answer is refused rather than buffered.
        const MAX_DOCUMENT: usize = 1 << 20;
        let mut response = response;
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| format!("{url}: {e}"))? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_DOCUMENT {
                return Err(format!("{url}: answer larger than {MAX_DOCUMENT} bytes"));
            }
        }
        serde_json::from_slice(&body).map_err(|e| format!("{url}: {e}"))
    }
}

/// A signature key from a JWK; symmetric keys and keys for encryption are skipped.
fn key_from_jwk(jwk: &Jwk) -> Option<Key> {
    use jsonwebtoken::jwk::{AlgorithmParameters, KeyAlgorithm, PublicKeyUse};
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
        return None;
    }
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(KeyAlgorithm::RS256) => Some(Algorithm::RS256),
        Some(KeyAlgorithm::PS256) => Some(Algorithm::PS256),
        Some(KeyAlgorithm::ES256) => Some(Algorithm::ES256),
        Some(KeyAlgorithm::EdDSA) => Some(Algorithm::EdDSA),
        // Pinned to an algorithm tollgate never accepts.
        Some(_) => return None,
    };
    let decoding = DecodingKey::from_jwk(jwk).ok()?;
    Some(Key { decoding, alg })
}

impl Keys {
    fn find(&self, kid: Option<&str>) -> Option<Arc<Key>> {
        match kid {
            Some(kid) => self.by_kid.get(kid).cloned(),
            // A token without kid is accepted only when the issuer has a single key.
            None if self.by_kid.len() + self.unnamed.len() == 1 => self
                .unnamed
                .first()
                .or_else(|| self.by_kid.values().next())
                .cloned(),
            None => None,
        }
    }
}
