//! A logged-in connection's identity and the session records both wires write: the login and
//! the session's start (which must be recorded before the session starts, PCI DSS 10.7), its
//! end, and failed logins.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::{Context, TargetRuntime};
use crate::auth::Reason;
use crate::config::{ClientAuthMethod, Protocol};
use crate::pipeline::{ConnId, ConnInfo};

/// How long past `startup_timeout` a login may take to tell its client it ran out of time
/// (each wire's login keeps `startup_timeout` itself; the wire's serve function adds this
/// backstop around it).
pub const STARTUP_BACKSTOP: Duration = Duration::from_secs(2);

/// What either protocol's login settled, for the session records.
pub struct Login<'a> {
    pub identity: &'a crate::auth::Identity,
    pub target: &'a crate::config::Target,
    pub user: &'a str,
    pub database: &'a str,
    pub application_name: Option<&'a str>,
    pub tls: bool,
    pub protocol: Protocol,
}

/// The connection's identity for the stages, its audit `Who` (client-chosen names masked like
/// any other text), and the "connected" log line; later log lines name the session.
pub fn connected(id: ConnId, peer: SocketAddr, s: &Login<'_>) -> ConnInfo {
    use crate::mask::for_log;
    let identity = s.identity;
    let upstream_role = s
        .target
        .credentials_for(&identity.issuer, &identity.groups)
        .0
        .to_owned();
    let who = Arc::new(crate::audit::Who {
        session: Some(crate::audit::SessionId::random()),
        subject: Some(for_log(&identity.subject)),
        groups: identity.groups.iter().map(|g| for_log(g)).collect(),
        client_id: identity.client_id.as_deref().map(for_log),
        issuer: Some(identity.issuer.clone()),
        upstream_role: Some(upstream_role),
        client_addr: Some(peer.to_string()),
        application_name: s.application_name.map(for_log),
        target: Some(s.target.name.clone()),
        database: Some(for_log(s.database)),
        cache: Default::default(),
    });
    if let Some(session) = &who.session {
        tracing::Span::current().record("session", tracing::field::display(session));
    }
    let info = ConnInfo {
        id,
        client_addr: peer,
        user: s.user.to_owned(),
        identity: Arc::new(identity.clone()),
        target: s.target.name.clone(),
        database: s.database.to_owned(),
        application_name: s.application_name.map(str::to_owned),
        who,
        protocol: s.protocol,
        user_functions: Default::default(),
    };
    info!(
        session = info.who.session.as_ref().map(|s| s.0.as_str()),
        subject = for_log(&info.identity.subject),
        groups = for_log(&info.identity.groups.join(",")),
        client_id = info.identity.client_id.as_deref().map(for_log),
        issuer = info.identity.issuer,
        database = for_log(&info.database),
        user = for_log(&info.user),
        target = info.target,
        application_name = info.application_name.as_deref().map(for_log),
        protocol = s.protocol.name(),
        "connected"
    );
    info
}

/// Records the login and the session's start, waiting up to the audit queue's wait for room;
/// `Err` when the store cannot take them (the session must not start: PCI DSS 10.7).
pub async fn record_start(ctx: &Context, info: &ConnInfo, s: &Login<'_>) -> Result<(), String> {
    let Some(recorder) = &ctx.stages.record else {
        return Ok(());
    };
    use crate::audit::{Event, Outcome, kind};
    let auth = Event::new(
        kind::AUTH,
        Outcome::Success,
        info.who.clone(),
        serde_json::json!({
            "user": crate::mask::for_log(&info.user),
            "method": if s.identity.issuer == crate::auth::STATIC_ISSUER { "static" } else { "oidc" },
            "protocol": s.protocol.name(),
            "tls": s.tls,
        }),
    );
    let start = Event::new(
        kind::SESSION_START,
        Outcome::Success,
        info.who.clone(),
        serde_json::json!({
            "conn": info.id.to_string(),
            "protocol": s.protocol.name(),
            "tls": s.tls,
            "expires_at": s.identity.expires_at.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
        }),
    );
    let recorded = match recorder.record_within(auth).await {
        Ok(()) => recorder.record_within(start).await,
        Err(e) => Err(e),
    };
    recorded.map_err(|e| {
        warn!(error = %e, "session refused: the audit store cannot record it");
        e.to_string()
    })
}

/// Records the session's end with the relay's reason.
pub async fn record_end(ctx: &Context, who: Arc<crate::audit::Who>, end: String) {
    info!(end, "disconnected");
    if let Some(recorder) = &ctx.stages.record {
        use crate::audit::{Event, Outcome, kind};
        let reason = crate::mask::for_log(&end);
        let _ = recorder
            .record_wait(Event::new(
                kind::SESSION_END,
                Outcome::Success,
                who,
                serde_json::json!({ "reason": reason }),
            ))
            .await;
    }
}

/// Logs, counts and records a failed client login, then waits the address's growing delay.
pub async fn login_failed(
    ctx: &Context,
    target: &TargetRuntime,
    user: &str,
    peer: SocketAddr,
    tls: bool,
    method: ClientAuthMethod,
    reason: &Reason,
) {
    warn!(
        target = target.config.name,
        user = crate::mask::for_log(user),
        reason = %crate::mask::for_log(&reason.to_string()),
        "client authentication failed"
    );
    metrics::counter!(crate::metrics::AUTH_FAILURES, "reason" => reason.kind()).increment(1);
    if let Some(recorder) = &ctx.stages.record {
        use crate::audit::{Event, Outcome, Who, kind};
        let who = std::sync::Arc::new(Who {
            subject: Some(crate::mask::for_log(user)),
            client_addr: Some(peer.to_string()),
            target: Some(target.config.name.clone()),
            ..Who::default()
        });
        // Best effort: a failed login is refused whatever the store's state.
        let _ = recorder.record(Event::new(
            kind::AUTH,
            Outcome::Failure,
            who,
            serde_json::json!({
                "method": auth_method_name(method),
                "protocol": target.config.protocol.name(),
                "tls": tls,
                "reason_kind": reason.kind(),
                "reason": crate::mask::for_log(&reason.to_string()),
            }),
        ));
    }
    // Repeated failures from one address wait longer and longer for their answer.
    tokio::time::sleep(ctx.throttle.failed(peer.ip())).await;
}

fn auth_method_name(m: ClientAuthMethod) -> &'static str {
    match m {
        ClientAuthMethod::Oidc => "oidc",
        ClientAuthMethod::Password => "password",
        ClientAuthMethod::ScramSha256 => "scram-sha-256",
    }
}
