//! The audit trail over HTTP, for auditors: the session list, a session's timeline, exports.
//!
//! Every request carries `Authorization: Bearer <access token>` from a configured issuer, and
//! the token's identity must be in one of `admin.auditor_groups`. Every read is itself
//! recorded (PCI DSS 10.2.1.3) before anything is served; a read that cannot be recorded is
//! refused with 503.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use serde::Deserialize;
use tracing::warn;

use super::AdminState;
use crate::audit::export::{self, Format, Period};
use crate::audit::store::Location;
use crate::audit::{self, Event, Outcome, Recorder, Store, Who, kind};
use crate::auth::Identity;

/// The store as the admin API reads it.
pub struct AuditAccess {
    pub location: Location,
    /// Records the reads themselves.
    pub recorder: Recorder,
    /// The checkpoint key's id, named in bundles.
    pub key_id: String,
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// The caller, if it is an auditor.
async fn auditor(state: &AdminState, headers: &HeaderMap) -> Result<Identity, Response> {
    let identity = super::caller(state, headers).await?;
    if !state.auditor_groups.iter().any(|g| identity.in_group(g)) {
        return Err(error(
            StatusCode::FORBIDDEN,
            "not in any of admin.auditor_groups",
        ));
    }
    Ok(identity)
}

/// Authorises the caller and records the read; the store's access on success.
/// The caller's address, where the listener serves with connect info (`admin::serve`).
type Peer = axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>;

async fn authorised_read<'s>(
    state: &'s AdminState,
    headers: &HeaderMap,
    peer: Option<Peer>,
    kind: &'static str,
    detail: serde_json::Value,
) -> Result<&'s AuditAccess, Response> {
    let identity = auditor(state, headers).await?;
    let Some(access) = &state.audit else {
        return Err(error(StatusCode::NOT_FOUND, "no audit store is configured"));
    };
    let who = Arc::new(Who {
        subject: Some(format!("api:{}", crate::mask::for_log(&identity.subject))),
        groups: identity.groups.clone(),
        client_id: identity.client_id.clone(),
        issuer: Some(identity.issuer.clone()),
        client_addr: peer.map(|p| p.0.0.to_string()),
        ..Who::default()
    });
    let mut detail = detail;
    detail["reader_source"] = "token".into();
    access
        .recorder
        .record(Event::new(kind, Outcome::Success, who, detail))
        .map_err(|e| {
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("this read cannot be recorded ({e}), so it is refused"),
            )
        })?;
    Ok(access)
}

#[derive(Debug, Deserialize)]
pub struct PeriodQuery {
    since: Option<String>,
    until: Option<String>,
}

impl PeriodQuery {
    fn period(&self) -> Result<Period, Response> {
        let parse = |v: &Option<String>| {
            v.as_deref()
                .map(audit::parse_time)
                .transpose()
                .map_err(|e| error(StatusCode::BAD_REQUEST, &e))
        };
        Ok(Period {
            since: parse(&self.since)?,
            until: parse(&self.until)?,
        })
    }
}

async fn open(access: &AuditAccess) -> Result<Store, Response> {
    Store::open(&access.location, false).await.map_err(|e| {
        warn!(error = %e, "admin API: audit store unavailable");
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the audit store is unavailable",
        )
    })
}

fn store_error(e: impl std::fmt::Display) -> Response {
    warn!(error = %e, "admin API: audit store read failed");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the audit store read failed",
    )
}

/// `GET /audit/sessions?since=…&until=…`
pub async fn sessions(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    peer: Option<Peer>,
    Query(q): Query<PeriodQuery>,
) -> Response {
    let period = match q.period() {
        Ok(p) => p,
        Err(r) => return r,
    };
    let detail =
        serde_json::json!({"api": "sessions", "since": period.since, "until": period.until});
    let access = match authorised_read(&state, &headers, peer, kind::AUDIT_READ, detail).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let mut store = match open(access).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let result = audit::sessions::list(&mut store, &period).await;
    store.close().await;
    match result {
        Ok(list) => Json(list).into_response(),
        Err(e) => store_error(e),
    }
}

/// `GET /audit/sessions/{id}`: the session's timeline.
pub async fn session(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    peer: Option<Peer>,
    Path(id): Path<String>,
) -> Response {
    let detail = serde_json::json!({"api": "session", "session": crate::mask::for_log(&id)});
    let access = match authorised_read(&state, &headers, peer, kind::AUDIT_READ, detail).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let mut store = match open(access).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let result = audit::sessions::timeline(&mut store, &id).await;
    store.close().await;
    match result {
        Ok(steps) if steps.is_empty() => error(StatusCode::NOT_FOUND, "no such session"),
        Ok(steps) => Json(steps).into_response(),
        Err(e) => store_error(e),
    }
}

#[derive(Debug, Deserialize)]
pub struct ExportQuery {
    format: String,
    since: Option<String>,
    until: Option<String>,
}

/// `GET /audit/export?format=jsonl|ocsf|csv|bundle&since=…&until=…`, streamed.
pub async fn export(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    peer: Option<Peer>,
    Query(q): Query<ExportQuery>,
) -> Response {
    let format = match q.format.as_str() {
        "jsonl" => Format::Jsonl,
        "ocsf" => Format::Ocsf,
        "csv" => Format::Csv,
        "bundle" => Format::Bundle,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "format must be jsonl, ocsf, csv or bundle",
            );
        }
    };
    let period = match (PeriodQuery {
        since: q.since,
        until: q.until,
    })
    .period()
    {
        Ok(p) => p,
        Err(r) => return r,
    };
    let detail = serde_json::json!({"api": "export", "format": q.format, "since": period.since, "until": period.until});
    let access = match authorised_read(&state, &headers, peer, kind::AUDIT_EXPORT, detail).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let mut store = match open(access).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let key_id = Some(access.key_id.clone());
    // The export streams through a pipe: memory stays at the pipe's size whatever the period.
    let (mut writer, reader) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        if let Err(e) =
            export::write(&mut store, format, &period, key_id, &mut writer, &|_| {}).await
        {
            warn!(error = %e, "admin API: export ended early");
        }
        store.close().await;
    });
    let content_type = if format == Format::Csv {
        "text/csv; charset=utf-8"
    } else {
        "application/x-ndjson"
    };
    (
        [(header::CONTENT_TYPE, content_type)],
        Body::from_stream(tokio_util::io::ReaderStream::new(reader)),
    )
        .into_response()
}
