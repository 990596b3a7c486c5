//! The approvals page: pending requests with approve and deny buttons, server-rendered, with
//! an OIDC sign-in for approvers (authorization code with PKCE and nonce).
//!
//! - `GET /approvals/ui`: the page; without a signed-in session, a redirect to the sign-in.
//! - `GET /approvals/login`: starts the code flow (state, nonce and PKCE verifier kept here,
//!   ten minutes at most).
//! - `GET /approvals/callback`: redeems the code at the provider's token endpoint, validates
//!   the ID token (signature, issuer, audience = client id, expiry, nonce) and opens a session
//!   (an HttpOnly, SameSite=Strict cookie naming a random id kept server-side).
//! - `POST /approvals/ui/decide`: a decision from the page; the form carries the session's
//!   CSRF token, compared in constant time.
//!
//! Decisions go through [`crate::approval::Approvals::decide`], with the same checks as the
//! API (approver group, never one's own request).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

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
const MAX_PENDING_LOGINS: usize = 10_000;
const MAX_SESSIONS: usize = 10_000;

struct Started {
    verifier: String,
    nonce: String,
    at: Instant,
}

struct WebSession {
    identity: Identity,
    csrf: String,
    until: Instant,
}

/// The page's sign-in and sessions.
pub struct Login {
    config: LoginConfig,
    validator: Validator,
    http: reqwest::Client,
    endpoints: tokio::sync::OnceCell<(String, String)>,
    started: Mutex<HashMap<String, Started>>,
    sessions: Mutex<HashMap<String, WebSession>>,
    secure_cookie: bool,
}

fn random(n: usize) -> String {
    let mut b = vec![0u8; n];
    aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut b)
        .expect("system random number generator failed");
    B64URL.encode(b)
}

impl Login {
    pub fn new(config: LoginConfig) -> Result<Login, String> {
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
            started: Mutex::default(),
            sessions: Mutex::default(),
            secure_cookie,
        })
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
        let id = cookie(headers)?;
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        sessions.retain(|_, s| s.until > now);
        sessions
            .get(&id)
            .map(|s| (s.identity.clone(), s.csrf.clone()))
    }
}

fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(&format!("{COOKIE}="))
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
    {
        let mut started = l.started.lock().unwrap_or_else(|p| p.into_inner());
        started.retain(|_, s| s.at.elapsed() < Duration::from_secs(600));
        if started.len() >= MAX_PENDING_LOGINS {
            return hardened(
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many sign-ins in progress\n",
                )
                    .into_response(),
            );
        }
        started.insert(
            state_id.clone(),
            Started {
                verifier,
                nonce: nonce.clone(),
                at: Instant::now(),
            },
        );
    }
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
    hardened(Redirect::to(url.as_str()).into_response())
}

#[derive(Debug, Deserialize)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// `GET /approvals/callback`
pub async fn callback(State(state): State<Arc<AdminState>>, Query(q): Query<Callback>) -> Response {
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
    let Some(started) = l
        .started
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&state_id)
        .filter(|s| s.at.elapsed() < Duration::from_secs(600))
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
        ("code_verifier", started.verifier),
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
    if claims["nonce"].as_str() != Some(started.nonce.as_str()) {
        return denied("ID token: wrong nonce");
    }
    let until = identity
        .expires_at
        .and_then(|t| t.duration_since(SystemTime::now()).ok())
        .unwrap_or_default()
        .min(l.config.session_ttl);
    let session_id = random(32);
    {
        let mut sessions = l.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        sessions.retain(|_, s| s.until > now);
        if sessions.len() >= MAX_SESSIONS {
            return denied("too many signed-in approvers");
        }
        info!(approver = %crate::mask::for_log(&identity.subject), "approvals page: signed in");
        sessions.insert(
            session_id.clone(),
            WebSession {
                identity,
                csrf: random(24),
                until: now + until,
            },
        );
    }
    let cookie = format!(
        "{COOKIE}={session_id}; Path=/approvals; HttpOnly; SameSite=Strict; Max-Age={}{}",
        until.as_secs(),
        if l.secure_cookie { "; Secure" } else { "" }
    );
    let mut r = Redirect::to("/approvals/ui").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
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
            "<tr id=\"{id}\"><td><code>{id}</code></td><td>{requester}<br><small>{groups}</small></td><td>{target}</td><td><pre>{sql}</pre></td><td>{rule}<br><small>{reason}</small></td><td>{left}</td><td>{actions}</td></tr>",
            id = escape(&r.id.0),
            requester = escape(&r.subject),
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
