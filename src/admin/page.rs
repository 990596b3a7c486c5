//! The approvals page: pending requests with approve and deny buttons, server-rendered, with
//! an OIDC sign-in for approvers (authorization code with PKCE and nonce).
//!
//! - `GET /approvals/ui`: the page; without a signed-in session, a redirect to the sign-in.
//! - `GET /approvals/login`: starts the code flow; state, nonce and PKCE verifier travel in a
//!   sealed cookie (ten minutes).
//! - `GET /approvals/callback`: redeems the code at the provider's token endpoint, validates
//!   the ID token (signature, issuer, audience = client id, expiry, nonce) and opens a session.
//! - `POST /approvals/ui/decide`: a decision from the page; the form carries the session's
//!   CSRF token, compared in constant time.
//!
//! Sessions are **sealed cookies** (HttpOnly, SameSite=Lax, Secure over https): the identity,
//! expiry and CSRF token, signed with HMAC-SHA256 under a key every instance derives from the
//! audit signing key, so any replica behind a Service accepts a sign-in made on another (and a
//! callback landing on another replica than the login). Without an audit key the key is random
//! per process (one instance).
//!
//! Decisions go through [`crate::approval::Approvals::decide`], with the same checks as the
//! API (approver group, never one's own request).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use serde::Deserialize;
use tracing::{info, warn};

use super::AdminState;
use crate::approval::Decision;
use crate::audit::report::escape;
use crate::auth::Identity;
use crate::auth::oidc::Validator;
use crate::config::LoginConfig;

const COOKIE: &str = "tollgate_approver";
const LOGIN_COOKIE: &str = "tollgate_login";

/// The page's sign-in and sessions.
pub struct Login {
    config: LoginConfig,
    validator: Validator,
    http: reqwest::Client,
    endpoints: tokio::sync::OnceCell<(String, String)>,
    /// Seals the cookies.
    key: aws_lc_rs::hmac::Key,
    secure_cookie: bool,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn random(n: usize) -> String {
    let mut b = vec![0u8; n];
    aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut b)
        .expect("system random number generator failed");
    B64URL.encode(b)
}

impl Login {
    /// `secret`: bytes every instance shares (the audit signing key) to derive the cookie key
    /// from; `None` makes a random one for this process.
    pub fn new(config: LoginConfig, secret: Option<&[u8]>) -> Result<Login, String> {
        use aws_lc_rs::hmac;
        let key = match secret {
            Some(secret) => {
                let derived = hmac::sign(
                    &hmac::Key::new(hmac::HMAC_SHA256, secret),
                    b"tollgate approvals page cookies v1",
                );
                hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref())
            }
            None => hmac::Key::generate(hmac::HMAC_SHA256, &aws_lc_rs::rand::SystemRandom::new())
                .map_err(|_| "no random key".to_owned())?,
        };
        let identity: crate::config::IdentityConfig = serde_json::from_value(serde_json::json!({
            "issuers": [{
                "issuer": config.issuer,
                "audiences": [config.client_id],
                "groups_claim": config.groups_claim,
            }],
        }))
        .map_err(|e| e.to_string())?;
        let validator = Validator::new(&identity).map_err(|e| e.to_string())?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        let secure_cookie = config.redirect_url.starts_with("https://");
        Ok(Login {
            config,
            validator,
            http,
            endpoints: tokio::sync::OnceCell::new(),
            key,
            secure_cookie,
        })
    }

    /// `base64(json).base64(hmac)`.
    fn seal(&self, value: &serde_json::Value) -> String {
        let body = B64URL.encode(value.to_string());
        let tag = aws_lc_rs::hmac::sign(&self.key, body.as_bytes());
        format!("{body}.{}", B64URL.encode(tag.as_ref()))
    }

    /// The sealed value, if its tag is ours and it has not expired (`exp`, unix seconds).
    fn open(&self, sealed: &str) -> Option<serde_json::Value> {
        let (body, tag) = sealed.split_once('.')?;
        let tag = B64URL.decode(tag).ok()?;
        aws_lc_rs::hmac::verify(&self.key, body.as_bytes(), &tag).ok()?;
        let value: serde_json::Value = serde_json::from_slice(&B64URL.decode(body).ok()?).ok()?;
        (value["exp"].as_u64()? > unix_now()).then_some(value)
    }

    fn cookie_header(&self, name: &str, value: &str, max_age: u64) -> Option<HeaderValue> {
        HeaderValue::from_str(&format!(
            "{name}={value}; Path=/approvals; HttpOnly; SameSite=Lax; Max-Age={max_age}{}",
            if self.secure_cookie { "; Secure" } else { "" }
        ))
        .ok()
    }

    /// The provider's authorization and token endpoints, from its discovery document.
    async fn endpoints(&self) -> Result<&(String, String), String> {
        self.endpoints
            .get_or_try_init(|| async {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    self.config.issuer.trim_end_matches('/')
                );
                let doc: serde_json::Value = self
                    .http
                    .get(&url)
                    .send()
                    .await
                    .map_err(|e| format!("discovery: {e}"))?
                    .json()
                    .await
                    .map_err(|e| format!("discovery: {e}"))?;
                let get = |k: &str| {
                    doc[k]
                        .as_str()
                        .filter(|u| crate::config::url_allowed(u))
                        .map(str::to_owned)
                        .ok_or_else(|| format!("discovery: no usable {k}"))
                };
                Ok((get("authorization_endpoint")?, get("token_endpoint")?))
            })
            .await
    }

    fn session(&self, headers: &HeaderMap) -> Option<(Identity, String)> {
        let v = self.open(&cookie(headers, COOKIE)?)?;
        let groups = v["groups"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let identity = Identity {
            subject: v["sub"].as_str()?.to_owned(),
            groups,
            client_id: None,
            issuer: v["iss"].as_str()?.to_owned(),
            expires_at: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(v["exp"].as_u64()?)),
            actor: None,
        };
        Some((identity, v["csrf"].as_str()?.to_owned()))
    }
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(&format!("{name}="))
                .map(str::to_owned)
        })
}

/// Headers every page response carries: no framing, no caching, nothing loaded from elsewhere.
fn hardened(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

fn login(state: &AdminState) -> Result<&Login, Response> {
    state.login.as_ref().ok_or_else(|| {
        (
            StatusCode::NOT_FOUND,
            "the approvals page is not enabled (approvals.login)\n",
        )
            .into_response()
    })
}

/// `GET /approvals/login`
pub async fn start(State(state): State<Arc<AdminState>>) -> Response {
    let l = match login(&state) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let (authorize, _) = match l.endpoints().await {
        Ok(e) => e,
        Err(e) => {
            warn!(error = %e, "approvals page: the identity provider is unavailable");
            return hardened(
                (
                    StatusCode::BAD_GATEWAY,
                    "the identity provider is unavailable\n",
                )
                    .into_response(),
            );
        }
    };
    let (state_id, nonce, verifier) = (random(24), random(24), random(32));
    let challenge = B64URL.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        verifier.as_bytes(),
    ));
    let started = l.seal(&serde_json::json!({
        "state": state_id,
        "verifier": verifier,
        "nonce": nonce,
        "exp": unix_now() + 600,
    }));
    let mut url = match reqwest::Url::parse(authorize) {
        Ok(u) => u,
        Err(_) => return (StatusCode::BAD_GATEWAY, "bad authorization endpoint\n").into_response(),
    };
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &l.config.client_id)
        .append_pair("redirect_uri", &l.config.redirect_url)
        .append_pair("scope", "openid profile")
        .append_pair("state", &state_id)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let mut r = Redirect::to(url.as_str()).into_response();
    if let Some(c) = l.cookie_header(LOGIN_COOKIE, &started, 600) {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    hardened(r)
}

#[derive(Debug, Deserialize)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// `GET /approvals/callback`
pub async fn callback(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Query(q): Query<Callback>,
) -> Response {
    let l = match login(&state) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let denied = |why: &str| {
        warn!(why, "approvals page: sign-in refused");
        hardened((StatusCode::FORBIDDEN, format!("sign-in refused: {why}\n")).into_response())
    };
    if let Some(e) = q.error {
        return denied(&format!("the provider answered {}", escape(&e)));
    }
    let (Some(code), Some(state_id)) = (q.code, q.state) else {
        return denied("no code");
    };
    // The sign-in this browser started: same state, not expired, sealed by us.
    let Some(started) = cookie(&headers, LOGIN_COOKIE)
        .and_then(|c| l.open(&c))
        .filter(|s| s["state"].as_str() == Some(state_id.as_str()))
    else {
        return denied("unknown or expired sign-in (state)");
    };
    let (Some(verifier), Some(nonce)) = (started["verifier"].as_str(), started["nonce"].as_str())
    else {
        return denied("unknown or expired sign-in (state)");
    };
    let (_, token_endpoint) = match l.endpoints().await {
        Ok(e) => e,
        Err(_) => return denied("the identity provider is unavailable"),
    };
    let mut form = vec![
        ("grant_type", "authorization_code".to_owned()),
        ("code", code),
        ("redirect_uri", l.config.redirect_url.clone()),
        ("client_id", l.config.client_id.clone()),
        ("code_verifier", verifier.to_owned()),
    ];
    if let Some(secret) = &l.config.client_secret {
        match secret.read() {
            Ok(s) => form.push(("client_secret", s)),
            Err(_) => return denied("the client secret is unavailable"),
        }
    }
    let answer = l.http.post(token_endpoint).form(&form).send().await;
    let body: serde_json::Value = match answer {
        Ok(r) if r.status().is_success() => r.json().await.unwrap_or_default(),
        _ => return denied("the code was not accepted"),
    };
    let Some(id_token) = body["id_token"].as_str() else {
        return denied("no ID token");
    };
    let (identity, claims) = match l.validator.validate_with_claims(id_token).await {
        Ok(v) => v,
        Err(reason) => return denied(&format!("ID token: {reason}")),
    };
    if claims["nonce"].as_str() != Some(nonce) {
        return denied("ID token: wrong nonce");
    }
    let until = identity
        .expires_at
        .and_then(|t| t.duration_since(SystemTime::now()).ok())
        .unwrap_or_default()
        .min(l.config.session_ttl);
    info!(approver = %crate::mask::for_log(&identity.subject), "approvals page: signed in");
    let session = l.seal(&serde_json::json!({
        "sub": identity.subject,
        "iss": identity.issuer,
        "groups": identity.groups,
        "csrf": random(24),
        "exp": unix_now() + until.as_secs(),
    }));
    let mut r = Redirect::to("/approvals/ui").into_response();
    if let Some(c) = l.cookie_header(COOKIE, &session, until.as_secs()) {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    if let Some(c) = l.cookie_header(LOGIN_COOKIE, "", 0) {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    hardened(r)
}

#[derive(Debug, Deserialize)]
pub struct Notice {
    done: Option<String>,
}

/// `GET /approvals/ui`
pub async fn page(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Query(notice): Query<Notice>,
) -> Response {
    let l = match login(&state) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let Some((who, csrf)) = l.session(&headers) else {
        return hardened(Redirect::to("/approvals/login").into_response());
    };
    let Some(approvals) = &state.approvals else {
        return (StatusCode::NOT_FOUND, "approvals are not enabled\n").into_response();
    };
    let list = match approvals.list().await {
        Ok(l) => l,
        Err(_) => {
            return hardened(
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "pending approvals unavailable\n",
                )
                    .into_response(),
            );
        }
    };
    let now = SystemTime::now();
    let mut rows = String::new();
    for r in list.iter().filter(|r| who.in_group(&r.approver_group)) {
        let left = humantime::parse_rfc3339(&r.expires)
            .ok()
            .and_then(|t| t.duration_since(now).ok())
            .map_or("expired".to_owned(), |d| {
                humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
            });
        let own = r.subject == who.subject && r.issuer == who.issuer;
        rows.push_str(&format!(
            "<tr id=\"{id}\"><td><code>{id}</code></td><td>{requester}<br><small>{groups}</small>{actor}</td><td>{target}</td><td><pre>{sql}</pre>{stated}{impact}</td><td>{rule}<br><small>{reason}</small></td><td>{left}</td><td>{actions}</td></tr>",
            id = escape(&r.id.0),
            requester = escape(&r.subject),
            actor = r.details.actor.as_deref().map_or(String::new(), |a| format!(
                "<br><small class=\"actor\">acting for {}</small>",
                escape(a)
            )),
            stated = r
                .details
                .agent_reason
                .as_deref()
                .map_or(String::new(), |a| format!(
                    "<p class=\"stated\">Reason: {}</p>",
                    escape(a)
                )),
            impact = r.details.preview.as_ref().map_or(String::new(), |p| format!(
                "<p class=\"impact\">Impact: {}</p>",
                escape(&p.summary())
            )),
            groups = escape(&r.groups.join(", ")),
            target = escape(&format!("{} / {}", r.target, r.database)),
            sql = escape(&r.sql),
            rule = escape(r.rule.as_deref().unwrap_or("default")),
            reason = escape(&r.reason),
            actions = if own {
                "your own request".to_owned()
            } else {
                format!(
                    "<form method=\"post\" action=\"/approvals/ui/decide\"><input type=\"hidden\" name=\"id\" value=\"{id}\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><select name=\"window\"><option value=\"\">once</option><option value=\"10m\">10 minutes</option><option value=\"1h\">1 hour</option></select> <button name=\"decision\" value=\"approve\" class=\"approve\">Approve</button><br><input name=\"reason\" placeholder=\"reason to deny\"> <button name=\"decision\" value=\"deny\" class=\"deny\">Deny</button></form>",
                    id = escape(&r.id.0),
                    csrf = escape(&csrf)
                )
            },
        ));
    }
    if rows.is_empty() {
        rows.push_str("<tr><td colspan=\"7\">Nothing is waiting for you.</td></tr>");
    }
    let done = notice
        .done
        .map(|d| format!("<p class=\"done\">{}</p>", escape(&d)))
        .unwrap_or_default();
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>tollgate approvals</title><style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.4em;vertical-align:top}}pre{{white-space:pre-wrap;margin:0}}.done{{background:#efe;padding:.5em}}</style></head><body><h1>Statements waiting for approval</h1><p>Signed in as <b>{who}</b> ({groups}).</p>{done}<table><tr><th>id</th><th>requester</th><th>target</th><th>statement</th><th>rule</th><th>time left</th><th></th></tr>{rows}</table></body></html>",
        who = escape(&who.subject),
        groups = escape(&who.groups.join(", ")),
    );
    hardened(Html(html).into_response())
}

#[derive(Debug, Deserialize)]
pub struct DecideForm {
    id: String,
    csrf: String,
    decision: String,
    #[serde(default)]
    window: String,
    #[serde(default)]
    reason: String,
}

/// `POST /approvals/ui/decide`
pub async fn decide(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Form(f): Form<DecideForm>,
) -> Response {
    let l = match login(&state) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let Some((who, csrf)) = l.session(&headers) else {
        return hardened(Redirect::to("/approvals/login").into_response());
    };
    if !constant_eq(f.csrf.as_bytes(), csrf.as_bytes()) {
        return hardened((StatusCode::FORBIDDEN, "stale or forged form (CSRF)\n").into_response());
    }
    let Some(approvals) = &state.approvals else {
        return (StatusCode::NOT_FOUND, "approvals are not enabled\n").into_response();
    };
    let decision = match f.decision.as_str() {
        "approve" => {
            let window = if f.window.is_empty() {
                None
            } else {
                match humantime::parse_duration(&f.window) {
                    Ok(w) if w <= Duration::from_secs(24 * 3600) => Some(w),
                    _ => return (StatusCode::BAD_REQUEST, "bad window\n").into_response(),
                }
            };
            Decision::Approve { window }
        }
        "deny" if !f.reason.trim().is_empty() => Decision::Deny {
            reason: f.reason.clone(),
        },
        "deny" => {
            return hardened(
                (StatusCode::BAD_REQUEST, "a reason is needed to deny\n").into_response(),
            );
        }
        _ => return (StatusCode::BAD_REQUEST, "unknown decision\n").into_response(),
    };
    let verb = if matches!(decision, Decision::Approve { .. }) {
        "approved"
    } else {
        "denied"
    };
    match approvals.decide(&f.id, &who, decision).await {
        Ok(_) => {
            let mut url = reqwest::Url::parse("http://x/approvals/ui").expect("static URL");
            url.query_pairs_mut()
                .append_pair("done", &format!("{} {verb}", f.id));
            let target = format!("/approvals/ui?{}", url.query().unwrap_or_default());
            hardened(Redirect::to(&target).into_response())
        }
        Err(e) => hardened((StatusCode::FORBIDDEN, format!("{e}\n")).into_response()),
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(secret: Option<&[u8]>) -> Login {
        let config = LoginConfig {
            issuer: "https://idp.example".into(),
            client_id: "c".into(),
            client_secret: None,
            redirect_url: "https://tollgate.example/approvals/callback".into(),
            groups_claim: "groups".into(),
            session_ttl: Duration::from_secs(3600),
        };
        Login::new(config, secret).unwrap()
    }

    #[test]
    fn sealed_cookies_open_on_every_instance_sharing_the_key_and_nowhere_else() {
        let a = login(Some(b"shared audit key"));
        let b = login(Some(b"shared audit key"));
        let other = login(Some(b"another key"));
        let sealed = a.seal(&serde_json::json!({"sub": "bob", "exp": unix_now() + 60}));
        assert_eq!(
            b.open(&sealed).unwrap()["sub"],
            "bob",
            "another replica accepts it"
        );
        assert!(other.open(&sealed).is_none());
        // Any change to the body or the tag is refused.
        let (body, tag) = sealed.split_once('.').unwrap();
        let forged_body = B64URL
            .encode(serde_json::json!({"sub": "mallory", "exp": unix_now() + 60}).to_string());
        assert!(a.open(&format!("{forged_body}.{tag}")).is_none());
        assert!(a.open(&format!("{body}.{}", &tag[1..])).is_none());
        // Expired.
        let old = a.seal(&serde_json::json!({"sub": "bob", "exp": unix_now() - 1}));
        assert!(a.open(&old).is_none());
        // A random key per process when there is no shared one.
        assert!(login(None).open(&sealed).is_none());
        assert!(
            a.cookie_header(COOKIE, "v", 10)
                .unwrap()
                .to_str()
                .unwrap()
                .contains("HttpOnly; SameSite=Lax; Max-Age=10; Secure")
        );
    }
}
