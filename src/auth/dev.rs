//! The embedded OIDC issuer of `tollgate dev`: an Ed25519 signing key kept in the dev data
//! folder, its discovery document and key set (served on the admin port), and minted tokens.
//! For development only: anyone who can read the folder can mint tokens.
//!
//! Agent tokens come only from [`DevIssuer::mint`] (`tollgate token mint`, which reads the key
//! file). The code flow on the admin port serves one client, the approvals page's sign-in
//! ([`DevIssuer::with_login_client`]): its ID tokens name that client as audience, never
//! [`AUDIENCE`], so an HTTP caller cannot get a token that logs in to a database. Its sign-in
//! form asks for a code printed in `tollgate dev`'s banner, so an agent that reaches the admin
//! port cannot sign in to the approvals page and approve its own statements either.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use serde_json::{Value, json};

/// The audience of dev tokens, and what the dev config accepts.
pub const AUDIENCE: &str = "tollgate";
/// The group of an agent minted without `--groups`.
pub const DEFAULT_GROUP: &str = "ai-agents";
const KEY_FILE: &str = "issuer-ed25519.pk8";
const ISSUER_FILE: &str = "issuer-url";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: not a valid Ed25519 key")]
    BadKey(PathBuf),
    #[error("signing failed: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

pub struct DevIssuer {
    pkcs8: Vec<u8>,
    public: Vec<u8>,
    kid: String,
    issuer: String,
    /// Authorization codes handed out and not yet redeemed (the approvers' browser login).
    codes: std::sync::Mutex<std::collections::HashMap<String, Grant>>,
    /// The one client (id, redirect URI) the code flow serves: the approvals page.
    login_client: Option<(String, String)>,
    /// What the sign-in form asks for: made per run, shown in the banner.
    signin_code: String,
}

/// What an authorization code stands for.
#[derive(Debug, Clone)]
pub struct Grant {
    pub subject: String,
    pub groups: Vec<String>,
    pub client_id: String,
    pub redirect_uri: String,
    pub nonce: Option<String>,
    /// The PKCE S256 challenge.
    pub challenge: String,
    pub issued: SystemTime,
}

/// Why a code cannot be redeemed.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error("unknown or used code")]
    UnknownCode,
    #[error("the code was issued to another client or redirect URI")]
    WrongClient,
    #[error("the dev issuer signs in only the approvals page's client")]
    UnknownClient,
    #[error("the code verifier does not match the challenge")]
    BadVerifier,
    #[error("the code expired")]
    Expired,
    #[error(transparent)]
    Sign(#[from] Error),
}

impl DevIssuer {
    /// Loads the folder's signing key, making one (mode 0600) on first use, and records
    /// `issuer` as the URL the tokens name.
    pub fn open(dir: &Path, issuer: &str) -> Result<DevIssuer, Error> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let key_path = dir.join(KEY_FILE);
        let pkcs8 = match std::fs::read(&key_path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let doc = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
                    .map_err(|_| Error::BadKey(key_path.clone()))?;
                write_private(&key_path, doc.as_ref())?;
                doc.as_ref().to_vec()
            }
            Err(e) => return Err(io(&key_path)(e)),
        };
        let pair =
            Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|_| Error::BadKey(key_path.clone()))?;
        let public = pair.public_key().as_ref().to_vec();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &public);
        let kid = digest.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let issuer_path = dir.join(ISSUER_FILE);
        std::fs::write(&issuer_path, issuer).map_err(io(&issuer_path))?;
        Ok(DevIssuer {
            pkcs8,
            public,
            kid,
            issuer: issuer.to_owned(),
            codes: Default::default(),
            login_client: None,
            signin_code: crate::audit::random_letters(16),
        })
    }

    /// The code the dev sign-in form asks for (printed by `tollgate dev`).
    pub fn signin_code(&self) -> &str {
        &self.signin_code
    }

    /// Whether `given` is the sign-in code (compared in constant time).
    pub fn signin_code_matches(&self, given: &str) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(
            given.as_bytes(),
            self.signin_code.as_bytes(),
        )
        .is_ok()
    }

    /// Lets the approvals page sign approvers in through the code flow, as `client_id` with
    /// `redirect_uri`; no other client is served. A client id equal to [`AUDIENCE`] is never
    /// served (its ID tokens would log in to databases).
    pub fn with_login_client(mut self, client_id: &str, redirect_uri: &str) -> DevIssuer {
        self.login_client = Some((client_id.to_owned(), redirect_uri.to_owned()));
        self
    }

    /// Whether the code flow serves this client id and redirect URI.
    pub fn serves(&self, client_id: &str, redirect_uri: &str) -> bool {
        client_id != AUDIENCE
            && self
                .login_client
                .as_ref()
                .is_some_and(|(c, r)| c == client_id && r == redirect_uri)
    }

    /// Opens the folder with the issuer URL `tollgate dev` last recorded there.
    pub fn open_existing(dir: &Path) -> Result<DevIssuer, Error> {
        let issuer_path = dir.join(ISSUER_FILE);
        let issuer = std::fs::read_to_string(&issuer_path).map_err(io(&issuer_path))?;
        DevIssuer::open(dir, issuer.trim())
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn discovery(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{}/jwks.json", self.issuer),
            "id_token_signing_alg_values_supported": ["EdDSA"],
            "subject_types_supported": ["public"],
            "response_types_supported": ["code"],
            "authorization_endpoint": format!("{}/authorize", self.issuer),
            "token_endpoint": format!("{}/token", self.issuer),
            "code_challenge_methods_supported": ["S256"],
        })
    }

    /// Remembers a login granted at the dev authorization page; returns its one-time code.
    pub fn grant(&self, grant: Grant) -> String {
        let code = crate::audit::random_letters(32);
        let mut codes = self.codes.lock().unwrap_or_else(|p| p.into_inner());
        codes.retain(|_, g| {
            g.issued
                .elapsed()
                .map_or(true, |e| e < Duration::from_secs(300))
        });
        codes.insert(code.clone(), grant);
        code
    }

    /// Redeems a code for an ID token (the code flow's token endpoint), checking the client,
    /// the redirect URI and the PKCE verifier.
    pub fn redeem(
        &self,
        code: &str,
        client_id: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> Result<String, GrantError> {
        let grant = self
            .codes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(code)
            .ok_or(GrantError::UnknownCode)?;
        if !self.serves(client_id, redirect_uri) {
            return Err(GrantError::UnknownClient);
        }
        if grant.client_id != client_id || grant.redirect_uri != redirect_uri {
            return Err(GrantError::WrongClient);
        }
        if grant
            .issued
            .elapsed()
            .map_or(true, |e| e > Duration::from_secs(300))
        {
            return Err(GrantError::Expired);
        }
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
        if B64URL.encode(digest.as_ref()) != grant.challenge {
            return Err(GrantError::BadVerifier);
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut claims = json!({
            "iss": self.issuer,
            "sub": grant.subject,
            "aud": client_id,
            "groups": grant.groups,
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
        });
        if let Some(n) = grant.nonce {
            claims["nonce"] = Value::String(n);
        }
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        let key = jsonwebtoken::EncodingKey::from_ed_der(&self.pkcs8);
        jsonwebtoken::encode(&header, &claims, &key).map_err(|e| GrantError::Sign(e.into()))
    }

    pub fn jwks(&self) -> Value {
        json!({ "keys": [{
            "kty": "OKP",
            "crv": "Ed25519",
            "x": B64URL.encode(&self.public),
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig",
        }]})
    }

    /// A signed access token for `subject`.
    pub fn mint(&self, subject: &str, groups: &[String], ttl: Duration) -> Result<String, Error> {
        self.mint_for(subject, groups, ttl, None)
    }

    /// A token for an agent acting for a person: RFC 8693's `act` claim names them
    /// (`{"act": {"sub": actor}}`).
    pub fn mint_for(
        &self,
        subject: &str,
        groups: &[String],
        ttl: Duration,
        actor: Option<&str>,
    ) -> Result<String, Error> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let claims = json!({
            "iss": self.issuer,
            "sub": subject,
            "aud": AUDIENCE,
            "azp": "tollgate-dev",
            "groups": groups,
            "iat": now,
            "nbf": now,
            "exp": now.saturating_add(ttl.as_secs()),
        });
        let mut claims = claims;
        if let Some(actor) = actor {
            claims["act"] = json!({ "sub": actor });
        }
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        let key = jsonwebtoken::EncodingKey::from_ed_der(&self.pkcs8);
        Ok(jsonwebtoken::encode(&header, &claims, &key)?)
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    file.write_all(bytes).map_err(io(path))
}
