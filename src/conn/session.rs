//! A logged-in connection's identity and the session records both wires write: the login and
//! the session's start (which must be recorded before the session starts, PCI DSS 10.7), its
//! end, and failed logins; the upstream server's clock against tollgate's ([`ClockSample`]),
//! recorded with the session's start.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

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
    /// The upstream server's clock, sampled on this session's upstream connection.
    pub clock: &'a ClockSample,
    /// The reason the client gave for the session (`tollgate.reason`), as it sent it.
    pub reason: Option<&'a str>,
}

/// The upstream server's clock against tollgate's, sampled once on each session's upstream
/// connection right after its login, and recorded as `clock` in `session_start`'s detail
/// (PCI DSS 10.6: evidence that the clocks behind the records agree). Each wire asks its server
/// for the time as seconds since the Unix epoch (PostgreSQL
/// `extract(epoch FROM clock_timestamp())`, MySQL `UNIX_TIMESTAMP(NOW(6))`) and times the
/// round trip with tollgate's wall clock ([`SystemTime`]).
#[derive(Debug, Clone, PartialEq)]
pub enum ClockSample {
    /// Both in milliseconds, rounded to the microsecond. `skew_ms` is the server's time minus
    /// tollgate's at the midpoint of the round trip (positive: the server is ahead); `rtt_ms`
    /// is the round trip, which bounds the sample's error to ±`rtt_ms`/2.
    Measured { skew_ms: f64, rtt_ms: f64 },
    /// No sample: why, short and masked. The session goes on (the sample is evidence, not a
    /// control).
    Failed(String),
}

/// Past this skew (either way) the session's connection logs a warning: one of the two clocks
/// is off.
pub const CLOCK_SKEW_WARN_MS: f64 = 1000.0;

impl ClockSample {
    /// The sample from tollgate's wall clock just before the query went out (`sent`) and just
    /// after its answer came (`answered`), and the server's answer: seconds since the Unix
    /// epoch as text, with or without a fraction (`1765170000.123456`).
    pub fn from_exchange(sent: SystemTime, answered: SystemTime, server: &str) -> ClockSample {
        let Ok(rtt) = answered.duration_since(sent) else {
            return ClockSample::failed("tollgate's clock went back during the sample");
        };
        let server_s = match server.trim().parse::<f64>() {
            Ok(s) if s.is_finite() => s,
            _ => return ClockSample::failed("the server's time is not a number of seconds"),
        };
        let midpoint = sent + rtt / 2;
        // Signed milliseconds since the epoch; f64 keeps them to a fraction of a microsecond.
        let midpoint_ms = match midpoint.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => d.as_secs_f64() * 1000.0,
            Err(e) => -(e.duration().as_secs_f64() * 1000.0),
        };
        ClockSample::Measured {
            skew_ms: round_to_microsecond(server_s * 1000.0 - midpoint_ms),
            rtt_ms: round_to_microsecond(rtt.as_secs_f64() * 1000.0),
        }
    }

    /// A failed sample; `reason` is masked (it may quote the server) and cut short.
    pub fn failed(reason: &str) -> ClockSample {
        const MAX_CHARS: usize = 120;
        let masked = crate::mask::for_log(reason);
        ClockSample::Failed(masked.chars().take(MAX_CHARS).collect())
    }

    /// The `clock` value of `session_start`'s detail: `{"skew_ms": …, "rtt_ms": …}` or
    /// `{"error": "…"}`.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            ClockSample::Measured { skew_ms, rtt_ms } => {
                serde_json::json!({ "skew_ms": skew_ms, "rtt_ms": rtt_ms })
            }
            ClockSample::Failed(error) => serde_json::json!({ "error": error }),
        }
    }
}

/// Milliseconds to three decimals; never `-0.0`.
fn round_to_microsecond(ms: f64) -> f64 {
    let rounded = (ms * 1000.0).round() / 1000.0;
    if rounded == 0.0 { 0.0 } else { rounded }
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
        session_reason: s.reason.and_then(crate::policy::reason::clean),
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
    match s.clock {
        ClockSample::Measured { skew_ms, rtt_ms } if skew_ms.abs() > CLOCK_SKEW_WARN_MS => warn!(
            target = info.target,
            skew_ms,
            rtt_ms,
            "the upstream server's clock and tollgate's differ by more than a second; check their time synchronisation"
        ),
        ClockSample::Measured { .. } => {}
        ClockSample::Failed(error) => warn!(
            target = info.target,
            error, "the upstream server's clock could not be sampled"
        ),
    }
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
            "clock": s.clock.to_json(),
        }),
    );
    let mut start = start;
    // The person the agent acts for, and the session's reason: only when there is one.
    if let Some(actor) = &s.identity.actor {
        start.detail["actor"] = crate::mask::for_log(actor).into();
    }
    if let Some(reason) = &info.session_reason {
        start.detail["reason"] = crate::mask::for_log(reason).into();
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn clock_samples() {
        let sent = 1_765_170_000_000;
        // (server's answer, round trip in ms, expected sample)
        let cases: &[(&str, u64, ClockSample)] = &[
            (
                "1765170000.004",
                8,
                ClockSample::Measured {
                    skew_ms: 0.0,
                    rtt_ms: 8.0,
                },
            ),
            (
                "1765170001.5",
                2,
                ClockSample::Measured {
                    skew_ms: 1499.0,
                    rtt_ms: 2.0,
                },
            ),
            (
                "1765169999.123456",
                0,
                ClockSample::Measured {
                    skew_ms: -876.544,
                    rtt_ms: 0.0,
                },
            ),
            (
                " 1765170000 ",
                4,
                ClockSample::Measured {
                    skew_ms: -2.0,
                    rtt_ms: 4.0,
                },
            ),
            (
                "yesterday",
                4,
                ClockSample::Failed("the server's time is not a number of seconds".into()),
            ),
            (
                "NaN",
                4,
                ClockSample::Failed("the server's time is not a number of seconds".into()),
            ),
        ];
        for (server, rtt, expected) in cases {
            let got = ClockSample::from_exchange(at(sent), at(sent + rtt), server);
            assert_eq!(&got, expected, "{server} after {rtt} ms");
        }
        assert_eq!(
            ClockSample::from_exchange(at(sent), at(sent - 1), "1765170000"),
            ClockSample::Failed("tollgate's clock went back during the sample".into())
        );
    }

    #[test]
    fn a_clock_sample_records_as_session_start_reads_it() {
        let measured = ClockSample::Measured {
            skew_ms: -1.25,
            rtt_ms: 0.375,
        };
        assert_eq!(
            measured.to_json(),
            serde_json::json!({ "skew_ms": -1.25, "rtt_ms": 0.375 })
        );
        let failed =
            ClockSample::failed(&format!("server said 4111111111111111 {}", "x".repeat(300)));
        let ClockSample::Failed(text) = &failed else {
            panic!("{failed:?}")
        };
        assert!(!text.contains("4111111111111111"), "{text}");
        assert_eq!(text.chars().count(), 120);
        assert_eq!(failed.to_json()["error"], serde_json::json!(text));
    }
}
