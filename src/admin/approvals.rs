//! Approvers' API: pending requests, approve, deny.
//!
//! Every call carries `Authorization: Bearer <access token>` from a configured issuer. The
//! list shows the requests of the caller's groups; a decision needs membership of the
//! request's approver group and is refused on one's own request (403).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use serde::Deserialize;
use tracing::info;

use super::{AdminState, caller};
use crate::approval::{DecideError, Decision};
use crate::auth::Identity;

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

fn approvals(state: &AdminState) -> Result<&Arc<crate::approval::Approvals>, Response> {
    state
        .approvals
        .as_ref()
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "approvals are not enabled"))
}

/// `GET /approvals`: the pending requests the caller may decide.
pub async fn list(State(state): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    let who = match caller(&state, &headers).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let approvals = match approvals(&state) {
        Ok(a) => a,
        Err(r) => return r,
    };
    match approvals.list().await {
        Ok(list) => Json(
            list.into_iter()
                .filter(|r| who.in_group(&r.approver_group))
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "pending approvals unavailable");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "pending approvals unavailable",
            )
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproveBody {
    /// Also let the same identity run the same statement on the same target for this long
    /// (`10m`, `1h`) without asking again.
    #[serde(default)]
    window: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenyBody {
    reason: String,
}

async fn decided(state: &AdminState, id: &str, who: &Identity, decision: Decision) -> Response {
    let approvals = match approvals(state) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let label = match &decision {
        Decision::Approve { .. } => "approved",
        Decision::Deny { .. } => "denied",
    };
    match approvals.decide(id, who, decision).await {
        Ok(request) => {
            info!(approval = id, approver = %crate::mask::for_log(&who.subject), decision = label, "approval decided");
            Json(serde_json::json!({"id": request.id, "decision": label, "by": who.subject}))
                .into_response()
        }
        Err(e @ DecideError::NotFound(_)) => error(StatusCode::NOT_FOUND, &e.to_string()),
        Err(e) => error(StatusCode::FORBIDDEN, &e.to_string()),
    }
}

/// `POST /approvals/{id}/approve` with an optional `{"window": "10m"}`.
pub async fn approve(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Option<Json<ApproveBody>>,
) -> Response {
    let who = match caller(&state, &headers).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let window = match body
        .window
        .as_deref()
        .map(humantime::parse_duration)
        .transpose()
    {
        Ok(w) => w,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("window: {e}")),
    };
    if window.is_some_and(|w| w > Duration::from_secs(24 * 3600)) {
        return error(StatusCode::BAD_REQUEST, "window: at most 24h");
    }
    decided(&state, &id, &who, Decision::Approve { window }).await
}

/// `POST /approvals/{id}/deny` with `{"reason": "…"}`.
pub async fn deny(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<DenyBody>,
) -> Response {
    let who = match caller(&state, &headers).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    if body.reason.trim().is_empty() {
        return error(StatusCode::BAD_REQUEST, "a reason is needed");
    }
    decided(
        &state,
        &id,
        &who,
        Decision::Deny {
            reason: body.reason,
        },
    )
    .await
}
