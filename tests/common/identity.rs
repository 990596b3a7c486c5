//! Helpers for the identity tests: a test OIDC issuer (keys of every algorithm, JWKS), tokens and proxies validating them.
#![allow(unused_imports)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{Proxy, sqlstate};
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio_postgres::NoTls;
use tollgate::pipeline::Stages;

pub const AUDIENCE: &str = "tollgate-test";
pub const UPSTREAM_PASSWORD: &str = "scram-upstream-pw";

/// Everything tollgate logs in this test binary, to check reasons and the absence of secrets.
pub fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = Arc::clone(&buf);
        tracing_subscriber::fmt()
            .with_env_filter("tollgate=debug")
            .with_ansi(false)
            .with_writer(move || LogWriter(Arc::clone(&writer)))
            .init();
        buf
    })
}

pub struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn log_text() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap()).into_owned()
}

/// A signing key with its public JWK.
pub struct SigningKey {
    pub kid: String,
    pub alg: Algorithm,
    pub encoding: EncodingKey,
    pub jwk: Value,
    /// The public key as PEM, for the algorithm-confusion attack.
    pub public_pem: String,
}

/// The INTEGER contents of a DER SEQUENCE of INTEGERs (an RSAPublicKey: n, e).
pub fn der_integers(der: &[u8]) -> Vec<Vec<u8>> {
    pub fn len(b: &[u8], i: &mut usize) -> usize {
        let first = b[*i] as usize;
        *i += 1;
        if first < 0x80 {
            return first;
        }
        let n = first & 0x7f;
        let mut l = 0;
        for _ in 0..n {
            l = (l << 8) | b[*i] as usize;
            *i += 1;
        }
        l
    }
    let mut i = 1;
    let _ = len(der, &mut i);
    let mut out = Vec::new();
    while i < der.len() {
        assert_eq!(der[i], 0x02);
        i += 1;
        let l = len(der, &mut i);
        let mut v = der[i..i + l].to_vec();
        while v.len() > 1 && v[0] == 0 {
            v.remove(0);
        }
        out.push(v);
        i += l;
    }
    out
}

pub fn key(kind: &str, kid: &str) -> SigningKey {
    let (alg, rc_alg) = match kind {
        "rsa" => (Algorithm::RS256, &rcgen::PKCS_RSA_SHA256),
        "ec" => (Algorithm::ES256, &rcgen::PKCS_ECDSA_P256_SHA256),
        _ => (Algorithm::EdDSA, &rcgen::PKCS_ED25519),
    };
    let pair = rcgen::KeyPair::generate_for(rc_alg).unwrap();
    let pem = pair.serialize_pem();
    let raw = pair.public_key_raw();
    let (encoding, jwk) = match kind {
        "rsa" => {
            let ne = der_integers(raw);
            (
                EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
                json!({"kty": "RSA", "kid": kid, "use": "sig", "n": B64URL.encode(&ne[0]), "e": B64URL.encode(&ne[1])}),
            )
        }
        "ec" => (
            EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
            json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "x": B64URL.encode(&raw[1..33]), "y": B64URL.encode(&raw[33..65])}),
        ),
        _ => (
            EncodingKey::from_ed_pem(pem.as_bytes()).unwrap(),
            json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": "EdDSA", "x": B64URL.encode(raw)}),
        ),
    };
    SigningKey {
        kid: kid.into(),
        alg,
        encoding,
        jwk,
        public_pem: pair.public_key_pem(),
    }
}

#[derive(Default)]
pub struct IssuerState {
    pub issuer: Mutex<String>,
    pub keys: Mutex<Vec<Value>>,
    pub jwks_fetches: AtomicUsize,
}

/// An OIDC issuer on a local port: discovery and a key set that tests can change.
pub struct TestIssuer {
    pub url: String,
    pub state: Arc<IssuerState>,
}

impl TestIssuer {
    pub async fn start(keys: &[&SigningKey]) -> TestIssuer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let url = format!("http://{addr}/realms/agents");
        let state = Arc::new(IssuerState::default());
        *state.issuer.lock().unwrap() = url.clone();
        *state.keys.lock().unwrap() = keys.iter().map(|k| k.jwk.clone()).collect();
        let app = Router::new()
            .route(
                "/realms/agents/.well-known/openid-configuration",
                get(|State(s): State<Arc<IssuerState>>| async move {
                    let iss = s.issuer.lock().unwrap().clone();
                    axum::Json(json!({"issuer": iss, "jwks_uri": format!("{iss}/certs")}))
                }),
            )
            .route(
                "/realms/agents/certs",
                get(|State(s): State<Arc<IssuerState>>| async move {
                    s.jwks_fetches.fetch_add(1, Ordering::SeqCst);
                    axum::Json(json!({"keys": s.keys.lock().unwrap().clone()}))
                }),
            )
            .with_state(Arc::clone(&state));
        tokio::spawn(async move { axum::serve(listener, app).await });
        TestIssuer { url, state }
    }

    pub fn publish(&self, keys: &[&SigningKey]) {
        *self.state.keys.lock().unwrap() = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    pub fn fetches(&self) -> usize {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Standard claims for `sub`, valid for an hour; `edit` changes them.
    pub fn claims(&self, sub: &str, edit: impl FnOnce(&mut Value)) -> Value {
        let now = now();
        let mut c = json!({
            "iss": self.url, "sub": sub, "aud": AUDIENCE, "azp": "ci-agent-client",
            "iat": now, "nbf": now, "exp": now + 3600,
            "realm_access": {"roles": ["ai-agents"]},
        });
        edit(&mut c);
        c
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The token with its header replaced (the signature no longer matches, on purpose).
pub fn relabel(token: &str, header: &str) -> String {
    let (_, rest) = token.split_once('.').unwrap();
    format!("{}.{rest}", B64URL.encode(header))
}

pub fn sign(key: &SigningKey, claims: &Value) -> String {
    sign_as(key, key.alg, claims)
}

pub fn sign_as(key: &SigningKey, alg: Algorithm, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
}

/// Correctly signed, with a `crit` header naming extensions.
pub fn sign_crit(key: &SigningKey, crit: &[&str], claims: &Value) -> String {
    let mut header = Header::new(key.alg);
    header.kid = Some(key.kid.clone());
    header.crit = Some(crit.iter().map(|c| c.to_string()).collect());
    jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
}

/// tollgate in front of the local `test` database, trusting `issuer`.
pub async fn proxy(issuer: &TestIssuer, identity_extra: &str) -> Proxy {
    proxy_with(issuer, identity_extra, "").await
}

/// `identity_extra` lines go into `identity` (they replace the defaults set here),
/// `issuer_extra` lines into the issuer.
pub async fn proxy_with(issuer: &TestIssuer, identity_extra: &str, issuer_extra: &str) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    proxy_in(
        dir,
        issuer,
        identity_extra,
        issuer_extra,
        "",
        Stages::default(),
    )
    .await
}

/// [`proxy_with`] in `dir`, with `top` lines at the top of the config and `stages`.
pub async fn proxy_in(
    dir: tempfile::TempDir,
    issuer: &TestIssuer,
    identity_extra: &str,
    issuer_extra: &str,
    top: &str,
    stages: Stages,
) -> Proxy {
    logs();
    let pw = dir.path().join("upstream-pw");
    std::fs::write(&pw, UPSTREAM_PASSWORD).unwrap();
    let mut identity = String::new();
    for (key, default) in [
        ("failure_delay", "0s"),
        ("min_key_refresh", "0s"),
        ("leeway", "0s"),
    ] {
        if !identity_extra.contains(key) {
            identity.push_str(&format!("  {key}: {default}\n"));
        }
    }
    identity.push_str(identity_extra);
    let yaml = format!(
        "
{top}
identity:
  allow_plaintext_loopback: true
{identity}
  issuers:
    - issuer: {url}
      audiences: [{AUDIENCE}, other-audience]
      groups_claim: realm_access.roles
{issuer_extra}
targets:
  - name: test
    address: 127.0.0.1:5432
    user: postgres
    credentials:
      - groups: [break-glass]
        user: tollgate_scram
        password: {{ file: {pw} }}
",
        url = issuer.url,
        pw = pw.display()
    );
    Proxy::start_yaml(dir, &yaml, stages).await
}

pub fn url(proxy: &Proxy, token: &str) -> String {
    format!(
        "host=127.0.0.1 port={} user=agent dbname=test sslmode=disable password='{token}'",
        proxy.addr.port()
    )
}

pub async fn connect(
    proxy: &Proxy,
    token: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(&url(proxy, token), NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}
