//! The upstream login: tollgate as the client of the target's PostgreSQL server. TCP (and TLS
//! per the target's mode), the StartupMessage with the role the identity's groups choose and
//! the allowlisted client parameters, then whatever password exchange the server asks for
//! among those `upstream_auth` allows (SCRAM-SHA-256 with the server's signature checked, MD5,
//! cleartext). Once logged in, it samples the server's clock for the session's records.

use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::PgContext;
use super::frame::Message;
use super::messages::{self, Backend, TxStatus};
use super::scram;
use super::startup::{Conn, Error};
use crate::auth::Identity;
use crate::config::UpstreamAuth;
use crate::conn::TargetRuntime;
use crate::conn::session::ClockSample;
use crate::net::Stream;

/// What the upstream told us once logged in.
pub(crate) struct UpstreamSession {
    pub(super) process_id: i32,
    pub(super) secret_key: i32,
    pub(super) status: TxStatus,
    /// ParameterStatus and NoticeResponse frames, passed on to the client as they were.
    pub(super) greeting: Vec<u8>,
    /// The server's clock against tollgate's, sampled right after the login.
    pub(super) clock: ClockSample,
}

/// Opens the TCP (and TLS) connection to a target's server.
pub async fn open_upstream(ctx: &PgContext, target: &TargetRuntime) -> Result<Conn, Error> {
    let timeout = ctx.config.limits.upstream_connect_timeout;
    let tcp = tokio::time::timeout(
        timeout,
        TcpStream::connect((target.host.as_str(), target.port)),
    )
    .await
    .map_err(|_| Error::Upstream(format!("connect to {} timed out", target.config.address)))?
    .map_err(|e| Error::Upstream(format!("connect to {}: {e}", target.config.address)))?;
    tcp.set_nodelay(true)?;
    let Some(tls) = &target.tls else {
        return Ok(Conn::new(Stream::Tcp(tcp)));
    };
    let mut conn = Conn::new(Stream::Tcp(tcp));
    conn.send(&messages::encode_request(messages::SSL_REQUEST, &[]))
        .await?;
    let mut answer = [0u8; 1];
    conn.io.read_exact(&mut answer).await?;
    if answer[0] != b'S' {
        return Err(Error::Upstream(format!(
            "{} does not accept TLS, and the target's TLS mode needs it",
            target.config.address
        )));
    }
    let stream = tls
        .connector
        .connect(tls.server_name.clone(), conn.io)
        .await
        .map_err(|e| Error::Upstream(format!("TLS with {}: {e}", target.config.address)))?;
    Ok(Conn::new(Stream::wrap(stream)))
}

/// Connects and logs in upstream with the target's credentials. On failure, also returns the
/// SQLSTATE to show the client.
pub(crate) async fn connect_upstream(
    ctx: &PgContext,
    target: &TargetRuntime,
    identity: &Identity,
    requested: &str,
    forwarded: &[(&str, &str)],
) -> Result<(Conn, UpstreamSession), (Error, &'static str)> {
    let mut server = open_upstream(ctx, target).await.map_err(|e| (e, "08006"))?;
    let cfg = &target.config;
    let (upstream_user, secret) = cfg.credentials_for(&identity.issuer, &identity.groups);
    let password = match secret {
        Some(secret) => Some(
            secret
                .read()
                .map_err(|e| (Error::Upstream(format!("upstream password: {e}")), "08006"))?,
        ),
        None => None,
    };
    let mut params = vec![
        ("user", upstream_user),
        ("database", cfg.upstream_database(requested)),
    ];
    params.extend_from_slice(forwarded);
    let io = |e: Error| (e, "08006");
    server
        .send(&messages::encode_startup(&params))
        .await
        .map_err(io)?;

    let max = ctx.config.limits.max_server_frame;
    let mut scram: Option<ScramSha256> = None;
    let mut greeting = Vec::new();
    let mut key = None;
    loop {
        let frame = server.read_message(max).await.map_err(io)?;
        let m = Message::from_frame(&frame);
        let decoded = messages::decode_backend(m.tag, m.body).map_err(|e| io(e.into()))?;
        let need_password = || {
            password.as_deref().ok_or_else(|| {
                (
                    Error::Upstream(
                        "the server asks for a password and the target has none".into(),
                    ),
                    "08006",
                )
            })
        };
        let mut out = Vec::new();
        match decoded {
            Backend::Authentication { code: 0, .. } => {}
            Backend::Authentication { code: 3, .. } => {
                allowed(cfg, UpstreamAuth::Password, "cleartext password")?;
                let pw = need_password()?;
                let mut body = pw.as_bytes().to_vec();
                body.push(0);
                messages::put_password(&mut out, &body);
            }
            Backend::Authentication { code: 5, data } => {
                allowed(cfg, UpstreamAuth::Md5, "MD5 password")?;
                let pw = need_password()?;
                let salt: [u8; 4] = data
                    .try_into()
                    .map_err(|_| io(Error::Upstream("malformed MD5 request".into())))?;
                let hash = postgres_protocol::authentication::md5_hash(
                    upstream_user.as_bytes(),
                    pw.as_bytes(),
                    salt,
                );
                let mut body = hash.into_bytes();
                body.push(0);
                messages::put_password(&mut out, &body);
            }
            Backend::Authentication { code: 10, data } => {
                let pw = need_password()?;
                let offered = data
                    .split(|&b| b == 0)
                    .any(|m| m == scram::MECHANISM.as_bytes());
                if !offered {
                    return Err(io(Error::Upstream(
                        "the server offers no SASL mechanism tollgate supports".into(),
                    )));
                }
                // No channel binding: "n" tells a server that offers -PLUS that we do not
                // support it, which it accepts (unlike "y").
                let client = ScramSha256::new(pw.as_bytes(), ChannelBinding::unsupported());
                messages::put_sasl_initial(&mut out, scram::MECHANISM, client.message());
                scram = Some(client);
            }
            Backend::Authentication { code: 11, data } => {
                let client = scram
                    .as_mut()
                    .ok_or_else(|| io(Error::Upstream("SASL continue out of order".into())))?;
                client
                    .update(data)
                    .map_err(|e| io(Error::Upstream(format!("SCRAM: {e}"))))?;
                messages::put_password(&mut out, client.message());
            }
            Backend::Authentication { code: 12, data } => {
                let client = scram
                    .as_mut()
                    .ok_or_else(|| io(Error::Upstream("SASL final out of order".into())))?;
                // Checks the server's signature: a server that does not know the password
                // cannot pretend to.
                client
                    .finish(data)
                    .map_err(|e| io(Error::Upstream(format!("SCRAM server signature: {e}"))))?;
            }
            Backend::Authentication { code, .. } => {
                return Err(io(Error::Upstream(format!(
                    "unsupported upstream authentication request {code}"
                ))));
            }
            Backend::ErrorResponse(fields) => {
                let sqlstate = match fields.get(b'C') {
                    Some("53300") => "53300",
                    Some("57P03") => "57P03",
                    _ => "08006",
                };
                return Err((
                    Error::Upstream(format!(
                        "server refused: {} {}",
                        fields.get(b'C').unwrap_or_default(),
                        fields.get(b'M').unwrap_or_default()
                    )),
                    sqlstate,
                ));
            }
            Backend::BackendKeyData {
                process_id,
                secret_key,
            } => key = Some((process_id, secret_key)),
            Backend::ParameterStatus { .. } | Backend::NoticeResponse(_) => {
                greeting.extend_from_slice(&frame);
            }
            Backend::NegotiateProtocolVersion { .. } => {}
            Backend::ReadyForQuery(_) => {
                let (process_id, secret_key) = key.unwrap_or((0, 0));
                // A server that cannot answer a one-value query in time cannot serve the
                // session either, and an answer arriving later would be out of step.
                let (clock, status) = tokio::time::timeout(
                    CLOCK_SAMPLE_TIMEOUT,
                    sample_clock(&mut server, max, &mut greeting),
                )
                .await
                .map_err(|_| {
                    io(Error::Upstream(format!(
                        "the server did not answer within {} s after the login",
                        CLOCK_SAMPLE_TIMEOUT.as_secs()
                    )))
                })?
                .map_err(io)?;
                return Ok((
                    server,
                    UpstreamSession {
                        process_id,
                        secret_key,
                        status,
                        greeting,
                        clock,
                    },
                ));
            }
            Backend::Other => {
                return Err(io(Error::Upstream(format!(
                    "unexpected message {:?} during login",
                    m.tag as char
                ))));
            }
        }
        if !out.is_empty() {
            server.send(&out).await.map_err(io)?;
        }
    }
}

/// How long the clock sample may take before the login is given up.
const CLOCK_SAMPLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Samples the server's clock on a session that just logged in (at ReadyForQuery), timing the
/// round trip with tollgate's wall clock; also returns the transaction status of the
/// query's ReadyForQuery. A simple Query outside a transaction runs in one of its own that ends
/// with it, and prepares nothing: the session is left as the login left it. An ErrorResponse
/// makes a failed sample; only a broken connection is an error. ParameterStatus frames join
/// the client's greeting; notices about this query are dropped.
async fn sample_clock(
    server: &mut Conn,
    max: usize,
    greeting: &mut Vec<u8>,
) -> Result<(ClockSample, TxStatus), Error> {
    const SQL: &[u8] = b"SELECT extract(epoch FROM clock_timestamp())\0";
    let mut out = Vec::new();
    super::frame::put_message(&mut out, b'Q', SQL);
    let sent = std::time::SystemTime::now();
    server.send(&out).await?;
    let mut sample = None;
    loop {
        let frame = server.read_message(max).await?;
        let m = Message::from_frame(&frame);
        match m.tag {
            b'D' if sample.is_none() => {
                let answered = std::time::SystemTime::now();
                let value = super::transform::split_row(m.body)
                    .and_then(|fields| fields.first().copied().flatten())
                    .map(String::from_utf8_lossy);
                sample = Some(match value {
                    Some(text) => ClockSample::from_exchange(sent, answered, &text),
                    None => ClockSample::failed("the server's time came as no value"),
                });
            }
            b'E' | b'S' | b'Z' => match messages::decode_backend(m.tag, m.body)? {
                Backend::ErrorResponse(fields) => {
                    sample = Some(ClockSample::failed(&format!(
                        "the server refused the time query: {} {}",
                        fields.get(b'C').unwrap_or_default(),
                        fields.get(b'M').unwrap_or_default()
                    )));
                }
                Backend::ParameterStatus { .. } => greeting.extend_from_slice(&frame),
                Backend::ReadyForQuery(status) => {
                    let sample =
                        sample.unwrap_or_else(|| ClockSample::failed("the server sent no time"));
                    return Ok((sample, status));
                }
                _ => {}
            },
            _ => {}
        }
    }
}

/// Refuses a password exchange the target does not list in `upstream_auth`.
fn allowed(
    cfg: &crate::config::Target,
    method: UpstreamAuth,
    what: &str,
) -> Result<(), (Error, &'static str)> {
    if cfg.upstream_auth().contains(&method) {
        Ok(())
    } else {
        Err((
            Error::Upstream(format!(
                "the server asks for a {what}, which the target's upstream_auth does not allow"
            )),
            "08006",
        ))
    }
}

/// What of the target's catalog can run user code, by name: the functions outside
/// `pg_catalog` and `information_schema` the upstream session can see (user-defined and
/// extension functions, which can do anything and may overload a built-in name, as `f:name`),
/// the types a cast to which runs such a function or a domain check (`t:name`), and the views
/// whose reading runs one (`v:name`). Read on the agent's own upstream session right after its login, so the
/// names are those its role resolves. A failure fails the login (the policy could not judge
/// calls without it).
pub(crate) async fn user_functions(
    server: &mut Conn,
    max: usize,
) -> Result<std::collections::BTreeSet<String>, Error> {
    // `f:` functions outside pg_catalog; `t:` domains (their CHECK runs any function) and the
    // targets of casts through such functions; `v:` views whose rules call such a function or
    // a volatile one (reading them runs it).
    const SQL: &str = "\
        select 'f:' || p.proname from pg_catalog.pg_proc p \
          where p.pronamespace not in ('pg_catalog'::regnamespace, 'information_schema'::regnamespace) \
        union select 't:' || t.typname from pg_catalog.pg_type t \
          where t.typtype = 'd' and t.typnamespace not in ('pg_catalog'::regnamespace, 'information_schema'::regnamespace) \
        union select 't:' || t.typname from pg_catalog.pg_cast c \
          join pg_catalog.pg_type t on t.oid = c.casttarget join pg_catalog.pg_proc p on p.oid = c.castfunc \
          where p.pronamespace <> 'pg_catalog'::regnamespace \
        union select 'v:' || c.relname from pg_catalog.pg_depend d \
          join pg_catalog.pg_rewrite r on r.oid = d.objid join pg_catalog.pg_class c on c.oid = r.ev_class \
          join pg_catalog.pg_proc p on p.oid = d.refobjid \
          where d.classid = 'pg_catalog.pg_rewrite'::regclass and d.refclassid = 'pg_catalog.pg_proc'::regclass \
            and (p.pronamespace not in ('pg_catalog'::regnamespace, 'information_schema'::regnamespace) or p.provolatile = 'v')";
    let mut out = Vec::new();
    let mut body = SQL.as_bytes().to_vec();
    body.push(0);
    super::frame::put_message(&mut out, b'Q', &body);
    server.send(&out).await?;
    let mut names = std::collections::BTreeSet::new();
    let mut failed = None;
    loop {
        let frame = server.read_message(max).await?;
        let m = Message::from_frame(&frame);
        match m.tag {
            b'D' => {
                let fields = super::transform::split_row(m.body).ok_or_else(|| {
                    Error::Upstream("malformed row in the function catalog".into())
                })?;
                if let Some(Some(name)) = fields.first() {
                    names.insert(String::from_utf8_lossy(name).into_owned());
                }
            }
            b'E' => {
                failed = Some(Error::Upstream(
                    "the function catalog could not be read".into(),
                ))
            }
            b'Z' => break,
            _ => {}
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(names),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::super::frame::put_message;
    use super::*;

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        put_message(&mut out, tag, body);
        out
    }

    fn data_row(value: &str) -> Vec<u8> {
        let mut body = 1i16.to_be_bytes().to_vec();
        body.extend_from_slice(&(value.len() as i32).to_be_bytes());
        body.extend_from_slice(value.as_bytes());
        message(b'D', &body)
    }

    fn now_as_epoch_text() -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .unwrap();
        format!("{}.{:06}", now.as_secs(), now.subsec_micros())
    }

    /// Runs the sample against a server whose whole answer is `answer`; returns the sample,
    /// the status, the greeting's additions, and the bytes left for the relay.
    async fn sample_against(answer: &[u8]) -> (ClockSample, TxStatus, Vec<u8>, Vec<u8>) {
        let (ours, mut theirs) = tokio::io::duplex(64 * 1024);
        theirs.write_all(answer).await.unwrap();
        let mut server = Conn::new(Stream::wrap(ours));
        let mut greeting = Vec::new();
        let (sample, status) = sample_clock(&mut server, 1 << 20, &mut greeting)
            .await
            .unwrap();
        let mut sent = vec![0u8; 256];
        let n = tokio::io::AsyncReadExt::read(&mut theirs, &mut sent)
            .await
            .unwrap();
        let query = &sent[..n];
        assert_eq!(query[0], b'Q', "a simple Query: {query:?}");
        assert!(
            String::from_utf8_lossy(query).contains("clock_timestamp()"),
            "{query:?}"
        );
        (sample, status, greeting, server.buf.to_vec())
    }

    #[tokio::test]
    async fn the_servers_time_makes_a_sample() {
        let mut answer = message(b'T', b"whatever the columns");
        answer.extend(data_row(&now_as_epoch_text()));
        answer.extend(message(b'C', b"SELECT 1\0"));
        answer.extend(message(b'Z', b"I"));
        let after = message(b'A', b"a notification for the relay");
        answer.extend_from_slice(&after);
        let (sample, status, greeting, left) = sample_against(&answer).await;
        let ClockSample::Measured { skew_ms, rtt_ms } = sample else {
            panic!("{sample:?}")
        };
        assert!(skew_ms.abs() < 1000.0 && rtt_ms >= 0.0, "{sample:?}");
        assert_eq!(status, TxStatus::Idle);
        assert!(greeting.is_empty());
        assert_eq!(
            left, after,
            "what follows ReadyForQuery stays for the relay"
        );
    }

    #[tokio::test]
    async fn an_error_response_is_a_failed_sample_and_the_session_goes_on() {
        let mut answer = message(
            b'E',
            b"SERROR\0C42883\0Mfunction clock_timestamp() does not exist 4111111111111111\0\0",
        );
        answer.extend(message(b'Z', b"I"));
        let (sample, status, _, left) = sample_against(&answer).await;
        let ClockSample::Failed(why) = &sample else {
            panic!("{sample:?}")
        };
        assert!(why.contains("42883"), "{why}");
        assert!(!why.contains("4111111111111111"), "{why}");
        assert_eq!(status, TxStatus::Idle);
        assert!(left.is_empty());
    }

    #[tokio::test]
    async fn parameter_changes_join_the_greeting_and_notices_are_dropped() {
        let status_change = message(b'S', b"TimeZone\0UTC\0");
        let mut answer = status_change.clone();
        answer.extend(message(b'N', b"SNOTICE\0C01000\0Mabout the sample\0\0"));
        answer.extend(message(b'T', b""));
        answer.extend(data_row("not a time"));
        answer.extend(message(b'C', b"SELECT 1\0"));
        answer.extend(message(b'Z', b"I"));
        let (sample, _, greeting, _) = sample_against(&answer).await;
        assert_eq!(greeting, status_change);
        assert_eq!(
            sample,
            ClockSample::Failed("the server's time is not a number of seconds".into())
        );
    }

    #[tokio::test]
    async fn no_row_is_a_failed_sample() {
        let mut answer = message(b'I', b"");
        answer.extend(message(b'Z', b"I"));
        let (sample, ..) = sample_against(&answer).await;
        assert_eq!(sample, ClockSample::failed("the server sent no time"));
    }
}
