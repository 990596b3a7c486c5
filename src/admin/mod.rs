//! The admin HTTP interface (axum): health, the audit trail for auditors ([`audit`]), and in
//! `tollgate dev` the embedded issuer's discovery document and key set.

// Handler helpers return axum's `Response` as their error: it is what the handler answers.
#![allow(clippy::result_large_err)]

pub mod approvals;
pub mod audit;
pub mod page;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;

use crate::auth::Identity;
use crate::auth::dev::DevIssuer;
use crate::conn::policy_files::PolicyInspector;
use tracing::warn;

/// What the admin routes serve from.
#[derive(Default)]
pub struct AdminState {
    /// The dev issuer, in `tollgate dev` only.
    pub dev_issuer: Option<Arc<DevIssuer>>,
    /// The live policy, when one is configured.
    pub policy: Option<Arc<PolicyInspector>>,
    /// Validates the bearer tokens of API callers (the agents' issuers).
    pub validator: Option<Arc<crate::auth::oidc::Validator>>,
    /// Who may read the audit trail.
    pub auditor_groups: Vec<String>,
    /// The session store, when one is configured.
    pub audit: Option<audit::AuditAccess>,
    /// Held statements, when approvals are enabled.
    pub approvals: Option<Arc<crate::approval::Approvals>>,
    /// Renders `/metrics`; absent when no recorder is installed.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// What `/readyz` checks.
    pub readiness: Readiness,
    /// The approvals page's sign-in, when configured.
    pub login: Option<page::Login>,
}

/// What makes the daemon ready to take traffic.
#[derive(Default)]
pub struct Readiness {
    /// Targets by name and `host:port`, each must accept a TCP connection.
    pub targets: Vec<(String, String)>,
    /// The audit store must be taking records.
    pub recorder: Option<crate::audit::Recorder>,
    /// Policy files configured (they were valid at start, or the daemon would not run).
    pub policy_files: usize,
}

/// The admin routes; tested with `oneshot`, no socket needed.
pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/dev/.well-known/openid-configuration", get(dev_discovery))
        .route("/dev/jwks.json", get(dev_jwks))
        .route("/policy/reload", axum::routing::post(policy_reload))
        .route("/audit/sessions", get(audit::sessions))
        .route("/audit/sessions/{id}", get(audit::session))
        .route("/audit/export", get(audit::export))
        .route("/approvals", get(approvals::list))
        .route(
            "/approvals/{id}/approve",
            axum::routing::post(approvals::approve),
        )
        .route("/approvals/{id}/deny", axum::routing::post(approvals::deny))
        .route("/approvals/ui", get(page::page))
        .route("/approvals/ui/decide", axum::routing::post(page::decide))
        .route("/approvals/login", get(page::start))
        .route("/approvals/callback", get(page::callback))
        .route(
            "/dev/authorize",
            get(dev_authorize_form).post(dev_authorize),
        )
        .route("/dev/token", axum::routing::post(dev_token))
        .with_state(state)
}

/// Prometheus text format.
async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    match &state.metrics {
        Some(h) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            h.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are not enabled\n").into_response(),
    }
}

/// 200 when the audit store takes records and every target accepts connections; else 503,
/// with each check's result.
async fn readyz(State(state): State<Arc<AdminState>>) -> Response {
    let r = &state.readiness;
    let checks = r.targets.iter().map(|(name, address)| async move {
        let ok = matches!(
            tokio::time::timeout(
                std::time::Duration::from_secs(2),
                tokio::net::TcpStream::connect(address.as_str()),
            )
            .await,
            Ok(Ok(_))
        );
        (name.clone(), ok)
    });
    let targets: Vec<(String, bool)> = futures_util::future::join_all(checks).await;
    let store = r.recorder.as_ref().map(|rec| rec.healthy());
    let ready = targets.iter().all(|(_, ok)| *ok) && store.unwrap_or(true);
    let body = serde_json::json!({
        "ready": ready,
        "policy_files": r.policy_files,
        "audit_store": match store { None => "not configured", Some(true) => "ok", Some(false) => "failing" },
        "targets": targets.iter().map(|(n, ok)| (n.clone(), serde_json::Value::from(if *ok { "ok" } else { "unreachable" }))).collect::<serde_json::Map<_, _>>(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

#[derive(Debug, serde::Deserialize)]
struct DevAuthorize {
    client_id: String,
    redirect_uri: String,
    state: String,
    #[serde(default)]
    nonce: Option<String>,
    code_challenge: String,
    #[serde(default)]
    code_challenge_method: Option<String>,
    /// Filled in on the form.
    #[serde(default)]
    subject: Option<String>,
    /// The code `tollgate dev` printed: whoever signs in has seen its banner.
    #[serde(default)]
    signin_code: Option<String>,
    #[serde(default)]
    groups: Option<String>,
}

/// The dev issuer's sign-in page: asks who you are (nothing is checked: development only).
async fn dev_authorize_form(
    State(state): State<Arc<AdminState>>,
    axum::extract::Query(q): axum::extract::Query<DevAuthorize>,
) -> Response {
    let Some(issuer) = &state.dev_issuer else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if !issuer.serves(&q.client_id, &q.redirect_uri) {
        return unknown_dev_client();
    }
    use crate::audit::report::escape as e;
    let hidden: String = [
        ("client_id", q.client_id.as_str()),
        ("redirect_uri", q.redirect_uri.as_str()),
        ("state", q.state.as_str()),
        ("nonce", q.nonce.as_deref().unwrap_or("")),
        ("code_challenge", q.code_challenge.as_str()),
        (
            "code_challenge_method",
            q.code_challenge_method.as_deref().unwrap_or(""),
        ),
    ]
    .iter()
    .map(|(k, v)| format!("<input type=\"hidden\" name=\"{k}\" value=\"{}\">", e(v)))
    .collect();
    axum::response::Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>tollgate dev sign-in</title></head><body><h1>tollgate dev issuer</h1><p>Development only: sign in as anyone.</p><form method=\"post\" action=\"/dev/authorize\">{hidden}<label>Subject <input name=\"subject\" value=\"dev-approver\"></label> <label>Groups <input name=\"groups\" value=\"dba\"></label> <label>Sign-in code (printed by tollgate dev) <input id=\"signin-code\" name=\"signin_code\" type=\"password\" autocomplete=\"off\"></label> <button id=\"sign-in\">Sign in</button></form></body></html>"
    ))
    .into_response()
}

async fn dev_authorize(
    State(state): State<Arc<AdminState>>,
    axum::Form(f): axum::Form<DevAuthorize>,
) -> Response {
    let Some(issuer) = &state.dev_issuer else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if !issuer.serves(&f.client_id, &f.redirect_uri) {
        return unknown_dev_client();
    }
    if !issuer.signin_code_matches(f.signin_code.as_deref().unwrap_or_default()) {
        return (
            StatusCode::FORBIDDEN,
            "wrong sign-in code: use the one `tollgate dev` printed\n",
        )
            .into_response();
    }
    if f.code_challenge_method.as_deref() != Some("S256") || f.code_challenge.is_empty() {
        return (StatusCode::BAD_REQUEST, "PKCE with S256 is required\n").into_response();
    }
    let subject = f.subject.unwrap_or_default();
    if subject.trim().is_empty() {
        return (StatusCode::BAD_REQUEST, "a subject is needed\n").into_response();
    }
    let code = issuer.grant(crate::auth::dev::Grant {
        subject: subject.trim().to_owned(),
        groups: f
            .groups
            .unwrap_or_default()
            .split(',')
            .map(|g| g.trim().to_owned())
            .filter(|g| !g.is_empty())
            .collect(),
        client_id: f.client_id,
        redirect_uri: f.redirect_uri.clone(),
        nonce: f.nonce.filter(|n| !n.is_empty()),
        challenge: f.code_challenge,
        issued: std::time::SystemTime::now(),
    });
    let Ok(mut url) = reqwest::Url::parse(&f.redirect_uri) else {
        return (StatusCode::BAD_REQUEST, "bad redirect_uri\n").into_response();
    };
    url.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &f.state);
    axum::response::Redirect::to(url.as_str()).into_response()
}

/// The dev sign-in serves the approvals page alone: anything else could ask it for tokens of
/// any audience and groups.
fn unknown_dev_client() -> Response {
    (
        StatusCode::BAD_REQUEST,
        "the dev issuer signs in only the approvals page (its client_id and redirect_uri); agent tokens come from `tollgate token mint`\n",
    )
        .into_response()
}

#[derive(Debug, serde::Deserialize)]
struct DevToken {
    grant_type: String,
    code: String,
    redirect_uri: String,
    client_id: String,
    code_verifier: String,
}

/// The dev issuer's token endpoint (authorization code with PKCE only).
async fn dev_token(
    State(state): State<Arc<AdminState>>,
    axum::Form(f): axum::Form<DevToken>,
) -> Response {
    let Some(issuer) = &state.dev_issuer else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if f.grant_type != "authorization_code" {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": "unsupported_grant_type"})),
        )
            .into_response();
    }
    match issuer.redeem(&f.code, &f.client_id, &f.redirect_uri, &f.code_verifier) {
        Ok(id_token) => Json(serde_json::json!({
            "id_token": id_token,
            "token_type": "Bearer",
            "expires_in": 3600,
        }))
        .into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": "invalid_grant", "error_description": e.to_string()})),
        )
            .into_response(),
    }
}

async fn dev_discovery(State(state): State<Arc<AdminState>>) -> Response {
    match &state.dev_issuer {
        Some(issuer) => Json(issuer.discovery()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn dev_jwks(State(state): State<Arc<AdminState>>) -> Response {
    match &state.dev_issuer {
        Some(issuer) => Json(issuer.jwks()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Reloads the policy files; a broken policy keeps the old one and answers 422 with the errors.
async fn policy_reload(State(state): State<Arc<AdminState>>) -> Response {
    let Some(policy) = &state.policy else {
        return (StatusCode::NOT_FOUND, "no policy configured\n").into_response();
    };
    match policy.reload() {
        Ok(rules) => Json(serde_json::json!({ "reloaded": true, "rules": rules })).into_response(),
        Err(errors) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(serde_json::json!({
                "reloaded": false,
                "errors": errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
            })),
        )
            .into_response(),
    }
}

/// The caller's identity from its bearer token.
pub async fn caller(state: &AdminState, headers: &HeaderMap) -> Result<Identity, Response> {
    let unauthorized = || {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(serde_json::json!({"error": "a bearer token from a configured issuer is needed"})),
        )
            .into_response()
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(unauthorized)?;
    let Some(validator) = &state.validator else {
        return Err(json_error(
            StatusCode::FORBIDDEN,
            "no identity issuers are configured, so no caller can be identified",
        ));
    };
    validator.validate(token.trim()).await.map_err(|reason| {
        warn!(reason = %crate::mask::for_log(&reason.to_string()), "admin API: token refused");
        unauthorized()
    })
}

fn json_error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// Serves the admin routes on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AdminState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Connect info: the audit API records each reader's address (PCI DSS 10.2.2 origin).
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get_json(app: Router, path: &str) -> (StatusCode, serde_json::Value) {
        let response = app
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    #[tokio::test]
    async fn policy_reload_over_http_keeps_the_old_policy_when_the_new_one_is_broken() {
        use crate::policy::classify::SqlDialect;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.yaml");
        std::fs::write(&file, "rules:\n  - id: a\n    action: allow\n").unwrap();
        let inspector =
            Arc::new(PolicyInspector::load(vec![file.clone()], SqlDialect::Postgres).unwrap());
        let state = Arc::new(AdminState {
            policy: Some(Arc::clone(&inspector)),
            ..AdminState::default()
        });
        let post = |app: Router| async move {
            let response = app
                .oneshot(Request::post("/policy/reload").body(Body::empty()).unwrap())
                .await
                .unwrap();
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            (
                status,
                serde_json::from_slice::<serde_json::Value>(&bytes).unwrap(),
            )
        };
        std::fs::write(
            &file,
            "rules:\n  - id: a\n    action: allow\n  - id: b\n    action: deny\n",
        )
        .unwrap();
        let (status, body) = post(router(Arc::clone(&state))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["rules"], 2);
        std::fs::write(&file, "rules: [oops\n").unwrap();
        let (status, body) = post(router(Arc::clone(&state))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            body["errors"][0].as_str().unwrap().contains("p.yaml:"),
            "{body}"
        );
        assert_eq!(
            inspector.policy().rules().rules.len(),
            2,
            "the old policy stays"
        );
    }

    #[tokio::test]
    async fn dev_issuer_documents_only_in_dev_mode() {
        let (status, _) = get_json(router(Arc::default()), "/dev/jwks.json").await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        let dir = tempfile::tempdir().unwrap();
        let issuer = DevIssuer::open(dir.path(), "http://127.0.0.1:9090/dev").unwrap();
        let state = Arc::new(AdminState {
            dev_issuer: Some(Arc::new(issuer)),
            ..AdminState::default()
        });
        let (status, doc) = get_json(
            router(Arc::clone(&state)),
            "/dev/.well-known/openid-configuration",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(doc["issuer"], "http://127.0.0.1:9090/dev");
        assert_eq!(doc["jwks_uri"], "http://127.0.0.1:9090/dev/jwks.json");
        let (_, jwks) = get_json(router(state), "/dev/jwks.json").await;
        assert_eq!(jwks["keys"][0]["kty"], "OKP");
        assert_eq!(jwks["keys"][0]["alg"], "EdDSA");
    }
}
