//! The upstream MySQL login: tollgate as the client of the target's server. It reads the
//! server's handshake, upgrades to TLS per the target's mode, answers whatever password exchange
//! the server asks for among those `upstream_auth` allows (mysql_common's plugins compute the
//! responses), samples the server's clock for the session's records, and pins the session
//! (utf8mb4, no SQL modes that change how SQL text reads).

use mysql_common::auth::plugins::{AuthProc, ChallengeResponsePlugin, Response};
use mysql_common::packets::AuthPlugin;
use tokio::net::TcpStream;

use super::handshake::{Error, NATIVE_PASSWORD, caps};
use super::packet::{self, PacketIo};
use super::wire::{self, Reader};
use crate::auth::Identity;
use crate::config::UpstreamAuth;
use crate::conn::session::ClockSample;
use crate::conn::{Context, TargetRuntime};
use crate::net::Stream;

/// What the upstream login settled.
pub struct Upstream {
    pub thread: u32,
    pub caps: u32,
    pub status: u16,
    /// The server's clock against tollgate's, sampled right after the login.
    pub clock: ClockSample,
}

/// The server's initial handshake, as far as tollgate needs it.
#[derive(Debug)]
pub(super) struct ServerHello {
    pub(super) thread: u32,
    pub(super) caps: u32,
    pub(super) scramble: Vec<u8>,
    pub(super) plugin: Vec<u8>,
}

pub(super) fn parse_server_hello(payload: &[u8]) -> Result<ServerHello, wire::Malformed> {
    let mut r = Reader::new(payload, "server handshake");
    if r.u8()? != 10 {
        return Err(wire::Malformed("server handshake (protocol version)"));
    }
    r.nul_str()?;
    let thread = r.u32()?;
    let mut scramble = r.bytes(8)?.to_vec();
    r.u8()?;
    let low = u32::from(r.u16()?);
    let mut caps = low;
    let mut status = 0;
    let mut plugin = NATIVE_PASSWORD.to_vec();
    if !r.is_empty() {
        r.u8()?;
        status = r.u16()?;
        caps |= u32::from(r.u16()?) << 16;
        let auth_len = usize::from(r.u8()?);
        r.bytes(10)?;
        if caps & caps::SECURE_CONNECTION != 0 {
            let n = auth_len.saturating_sub(8).max(13);
            let part = r.bytes(n.min(r_remaining(payload, &r)))?;
            scramble.extend_from_slice(part.strip_suffix(&[0]).unwrap_or(part));
        }
        if caps & caps::PLUGIN_AUTH != 0 && !r.is_empty() {
            let rest = r.rest();
            plugin = rest.strip_suffix(&[0]).unwrap_or(rest).to_vec();
        }
    }
    let _ = status;
    Ok(ServerHello {
        thread,
        caps,
        scramble,
        plugin,
    })
}

fn r_remaining(payload: &[u8], r: &Reader<'_>) -> usize {
    payload.len().saturating_sub(r.pos())
}

struct PluginCtx<'a> {
    pass: &'a [u8],
    tls: bool,
    scramble: &'a [u8],
}

impl mysql_common::auth::plugins::Context for PluginCtx<'_> {
    fn pass(&self) -> &[u8] {
        self.pass
    }
    fn is_ipc_transport(&self) -> bool {
        false
    }
    fn is_tls_transport(&self) -> bool {
        self.tls
    }
    fn scramble(&self) -> &[u8] {
        self.scramble
    }
    fn server_key_pem(&self) -> Option<&[u8]> {
        None
    }
}

/// The `upstream_auth` name of a plugin, if tollgate speaks it.
fn plugin_method(name: &[u8]) -> Option<UpstreamAuth> {
    match AuthPlugin::from_bytes(name) {
        AuthPlugin::MysqlNativePassword => Some(UpstreamAuth::MysqlNativePassword),
        AuthPlugin::CachingSha2Password => Some(UpstreamAuth::CachingSha2Password),
        AuthPlugin::Ed25519 => Some(UpstreamAuth::ClientEd25519),
        AuthPlugin::MysqlClearPassword => Some(UpstreamAuth::MysqlClearPassword),
        _ => None,
    }
}

/// Starts the plugin the server asked for, if the target allows it.
fn start_plugin(target: &TargetRuntime, name: &[u8], tls: bool) -> Result<AuthProc, Error> {
    let shown = String::from_utf8_lossy(name).into_owned();
    if AuthPlugin::from_bytes(name) == AuthPlugin::MysqlClearPassword && !tls {
        return Err(Error::Upstream(
            "the server asks for the password in clear over a connection without TLS; refused"
                .into(),
        ));
    }
    let method = plugin_method(name).ok_or_else(|| {
        Error::Upstream(format!(
            "the server asks for {shown}, which tollgate does not speak"
        ))
    })?;
    if !target.config.upstream_auth().contains(&method) {
        return Err(Error::Upstream(format!(
            "the server asks for {shown}, which the target's upstream_auth does not allow"
        )));
    }
    AuthProc::init(&AuthPlugin::from_bytes(name)).map_err(|e| Error::Upstream(e.to_string()))
}

/// Connects and logs in to the target's server with its credentials.
pub async fn connect_upstream(
    ctx: &Context,
    target: &TargetRuntime,
    identity: &Identity,
    requested: &str,
    client_caps: u32,
    collation: u8,
) -> Result<(PacketIo, Upstream), Error> {
    let cfg = &target.config;
    let timeout = ctx.config.limits.upstream_connect_timeout;
    let started = std::time::Instant::now();
    let tcp = tokio::time::timeout(
        timeout,
        TcpStream::connect((target.host.as_str(), target.port)),
    )
    .await
    .map_err(|_| Error::Upstream(format!("connect to {} timed out", cfg.address)))?
    .map_err(|e| Error::Upstream(format!("connect to {}: {e}", cfg.address)))?;
    tcp.set_nodelay(true)
        .map_err(|e| Error::Upstream(e.to_string()))?;
    let mut server = PacketIo::new(Stream::Tcp(tcp));
    let max = ctx.config.limits.max_server_frame;
    let login = async {
        let p = server.read(max).await?;
        if p.payload.first() == Some(&0xFF) {
            let e = wire::parse_err(&p.payload)?;
            return Err(Error::Upstream(format!(
                "the server refused the connection: {} {}",
                e.code,
                String::from_utf8_lossy(e.message)
            )));
        }
        let hello = parse_server_hello(&p.payload)?;
        let mut seq = p.next_seq;
        let (user, secret) = cfg.credentials_for(&identity.issuer, &identity.groups);
        let password = match secret {
            Some(s) => s
                .read()
                .map_err(|e| Error::Upstream(format!("upstream password: {e}")))?,
            None => String::new(),
        };
        let db = cfg.upstream_database(requested).to_owned();
        let mut caps = (client_caps & hello.caps & caps::OFFERED)
            | caps::PROTOCOL_41
            | caps::SECURE_CONNECTION
            | caps::PLUGIN_AUTH
            | caps::LONG_PASSWORD;
        caps &= !(caps::CONNECT_ATTRS | caps::COMPRESS | caps::SSL);
        if !db.is_empty() {
            caps |= caps::CONNECT_WITH_DB;
        } else {
            caps &= !caps::CONNECT_WITH_DB;
        }
        let mut tls = false;
        if let Some(t) = &target.tls {
            if hello.caps & caps::SSL == 0 {
                return Err(Error::Upstream(format!(
                    "{} does not offer TLS, and the target's TLS mode needs it",
                    cfg.address
                )));
            }
            caps |= caps::SSL;
            let mut req = Vec::with_capacity(32);
            req.extend_from_slice(&caps.to_le_bytes());
            req.extend_from_slice(&(packet::MAX_CHUNK as u32).to_le_bytes());
            req.push(collation);
            req.extend_from_slice(&[0; 23]);
            seq = server.send(seq, &req).await?;
            let io = std::mem::replace(&mut server, PacketIo::new(Stream::placeholder()))
                .into_stream()?;
            let stream = t
                .connector
                .connect(t.server_name.clone(), io)
                .await
                .map_err(|e| Error::Upstream(format!("TLS with {}: {e}", cfg.address)))?;
            server = PacketIo::new(Stream::wrap(stream));
            tls = true;
        }
        // The first answer, with the plugin the server proposed (or native if it is not one
        // the target allows: the server then switches us to the one the account uses).
        let pass = password.as_bytes();
        let plugin_name =
            if plugin_method(&hello.plugin).is_some_and(|m| cfg.upstream_auth().contains(&m)) {
                hello.plugin.clone()
            } else {
                NATIVE_PASSWORD.to_vec()
            };
        let mut nonce = hello.scramble.clone();
        let mut proc = start_plugin(target, &plugin_name, tls)?;
        let first = proc
            .run(
                PluginCtx {
                    pass,
                    tls,
                    scramble: &nonce,
                },
                &nonce,
            )
            .map_err(|e| Error::Upstream(format!("password exchange: {e:?}")))?;
        let mut resp = Vec::with_capacity(128);
        resp.extend_from_slice(&caps.to_le_bytes());
        resp.extend_from_slice(&(packet::MAX_CHUNK as u32).to_le_bytes());
        resp.push(collation);
        resp.extend_from_slice(&[0; 23]);
        resp.extend_from_slice(user.as_bytes());
        resp.push(0);
        let data = first.data().unwrap_or_default();
        if caps & caps::PLUGIN_AUTH_LENENC != 0 {
            wire::put_lenenc_bytes(&mut resp, data);
        } else {
            resp.push(data.len() as u8);
            resp.extend_from_slice(data);
        }
        if caps & caps::CONNECT_WITH_DB != 0 {
            resp.extend_from_slice(db.as_bytes());
            resp.push(0);
        }
        resp.extend_from_slice(&plugin_name);
        resp.push(0);
        server.send(seq, &resp).await?;
        loop {
            let p = server.read(max).await?;
            seq = p.next_seq;
            let body = &p.payload[..];
            match body.first() {
                Some(0x00) => {
                    let st = wire::status(body)?;
                    return Ok((hello.thread, caps, st.status));
                }
                Some(0xFF) => {
                    let e = wire::parse_err(body)?;
                    return Err(Error::Upstream(format!(
                        "login as {user} refused: {} {}",
                        e.code,
                        crate::mask::for_log(&String::from_utf8_lossy(e.message))
                    )));
                }
                Some(0xFE) => {
                    // AuthSwitchRequest: plugin name, then its data.
                    let mut r = Reader::new(&body[1..], "auth switch");
                    let name = r.nul_str()?.to_vec();
                    let data = r.rest();
                    nonce = data.strip_suffix(&[0]).unwrap_or(data).to_vec();
                    proc = start_plugin(target, &name, tls)?;
                    let answer = proc
                        .run(
                            PluginCtx {
                                pass,
                                tls,
                                scramble: &nonce,
                            },
                            &nonce,
                        )
                        .map_err(|e| Error::Upstream(format!("password exchange: {e:?}")))?;
                    server.send(seq, answer.data().unwrap_or_default()).await?;
                }
                Some(0x01) => {
                    // More data for the current plugin (caching_sha2_password's verdict).
                    let answer = proc
                        .run(
                            PluginCtx {
                                pass,
                                tls,
                                scramble: &nonce,
                            },
                            &body[1..],
                        )
                        .map_err(|e| Error::Upstream(format!("password exchange: {e:?}")))?;
                    match answer {
                        Response::Next { packet: Some(d) } if d == [0x02] => {
                            return Err(Error::Upstream(
                                "caching_sha2_password full authentication needs TLS to the target (tls.mode: require or verify-full), or the password cached by an earlier login".into(),
                            ));
                        }
                        Response::Next { packet: Some(d) } | Response::Last { packet: Some(d) } => {
                            server.send(seq, &d).await?;
                        }
                        _ => {}
                    }
                }
                _ => {
                    return Err(Error::Upstream("unexpected packet during the login".into()));
                }
            }
        }
    };
    let remaining = timeout
        .saturating_sub(started.elapsed())
        .max(std::time::Duration::from_secs(1));
    let (thread, caps, status) = tokio::time::timeout(remaining, login)
        .await
        .map_err(|_| Error::Upstream(format!("login to {} timed out", cfg.address)))??;
    // Before the pinning, so that the session's last statements stay the pinning's (what
    // ROW_COUNT() and FOUND_ROWS() report is as it was without the sample).
    // A server that cannot answer a one-value query in time cannot serve the session either,
    // and an answer arriving later would be out of step.
    let clock = tokio::time::timeout(CLOCK_SAMPLE_TIMEOUT, sample_clock(&mut server, caps, max))
        .await
        .map_err(|_| {
            Error::Upstream(format!(
                "the server did not answer within {} s after the login",
                CLOCK_SAMPLE_TIMEOUT.as_secs()
            ))
        })??;
    pin_session(&mut server, caps, max).await?;
    metrics::histogram!(crate::metrics::UPSTREAM_CONNECT).record(started.elapsed().as_secs_f64());
    Ok((
        server,
        Upstream {
            thread,
            caps,
            status,
            clock,
        },
    ))
}

/// How long the clock sample may take before the login is given up.
const CLOCK_SAMPLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Samples the server's clock on a session that just logged in, timing the round trip with
/// tollgate's wall clock. A SELECT of no table in autocommit opens no transaction and prepares
/// nothing. A server's refusal makes a failed sample (the session goes on); only a broken or
/// garbled connection is an error.
async fn sample_clock(server: &mut PacketIo, caps: u32, max: usize) -> Result<ClockSample, Error> {
    let sent = std::time::SystemTime::now();
    match simple_query(server, caps, max, "SELECT UNIX_TIMESTAMP(NOW(6))").await {
        Ok(value) => {
            let answered = std::time::SystemTime::now();
            Ok(ClockSample::from_exchange(
                sent,
                answered,
                &String::from_utf8_lossy(&value),
            ))
        }
        // simple_query has read the whole answer when the server refused or sent no row.
        Err(Error::Upstream(why)) => Ok(ClockSample::failed(&why)),
        Err(e) => Err(e),
    }
}

/// sql_mode flags that change how the server reads SQL text from how the classifier reads it
/// (`"x"` as an identifier, `\'` not an escape).
const UNSAFE_SQL_MODES: &[&str] = &["ANSI", "ANSI_QUOTES", "NO_BACKSLASH_ESCAPES"];

/// Pins the upstream session so that the server reads SQL as the classifier did and sends
/// text the masker can read: utf8mb4 everywhere, and no sql_mode flag that changes quoting or
/// escapes. Run after the login and after COM_RESET_CONNECTION; the relay refuses statements
/// that would change these settings.
pub async fn pin_session(server: &mut PacketIo, caps: u32, max: usize) -> Result<(), Error> {
    let mode = simple_query(server, caps, max, "SELECT @@SESSION.sql_mode").await?;
    let mode = String::from_utf8_lossy(&mode).into_owned();
    let kept: Vec<&str> = mode
        .split(',')
        .filter(|m| !m.is_empty() && !UNSAFE_SQL_MODES.iter().any(|u| u.eq_ignore_ascii_case(m)))
        .collect();
    let set = format!(
        "SET NAMES utf8mb4, SESSION sql_mode = '{}'",
        kept.join(",").replace('\'', "")
    );
    let mut p = vec![0x03];
    p.extend_from_slice(set.as_bytes());
    server.send(0, &p).await?;
    let answer = server.read(max).await?;
    if answer.payload.first() != Some(&0x00) {
        return Err(Error::Upstream(
            "the server refused to pin the session's character set and sql_mode".into(),
        ));
    }
    Ok(())
}

/// The server's plan for one statement (`EXPLAIN FORMAT=JSON`, which plans and never runs
/// it), asked on a side connection with the session's own upstream login and pinning, without
/// multi-statements (the server refuses a second statement) or local files: the JSON text.
pub async fn explain(
    ctx: &Context,
    target: &TargetRuntime,
    identity: &Identity,
    database: &str,
    sql: &str,
) -> Result<String, Error> {
    let side_caps = caps::OFFERED
        & !(caps::MULTI_STATEMENTS
            | caps::MULTI_RESULTS
            | caps::PS_MULTI_RESULTS
            | caps::LOCAL_FILES);
    let (mut server, upstream) =
        connect_upstream(ctx, target, identity, database, side_caps, 45).await?;
    let max = ctx.config.limits.max_server_frame;
    pin_session(&mut server, upstream.caps, max).await?;
    let plan = simple_query(
        &mut server,
        upstream.caps,
        max,
        &format!("EXPLAIN FORMAT=JSON {sql}"),
    )
    .await;
    let _ = server.send(0, &[0x01]).await; // COM_QUIT
    Ok(String::from_utf8_lossy(&plan?).into_owned())
}

/// Runs a one-value query on a session tollgate owns; returns the first value.
async fn simple_query(
    server: &mut PacketIo,
    caps: u32,
    max: usize,
    sql: &str,
) -> Result<Vec<u8>, Error> {
    let mut p = vec![0x03];
    p.extend_from_slice(sql.as_bytes());
    server.send(0, &p).await?;
    let first = server.read(max).await?;
    if first.payload.first() == Some(&0xFF) {
        let e = wire::parse_err(&first.payload)?;
        return Err(Error::Upstream(format!(
            "{sql}: refused: {} {}",
            e.code,
            crate::mask::for_log(&String::from_utf8_lossy(e.message))
        )));
    }
    if first.payload.first() == Some(&0x00) {
        return Err(Error::Upstream(format!("{sql}: no result")));
    }
    let columns = Reader::new(&first.payload, "column count")
        .lenenc()?
        .unwrap_or(0);
    for _ in 0..columns {
        server.read(max).await?;
    }
    let deprecate_eof = caps & caps::DEPRECATE_EOF != 0;
    if !deprecate_eof {
        server.read(max).await?;
    }
    let mut value = None;
    loop {
        let p = server.read(max).await?;
        if p.payload.first() == Some(&0xFF) {
            return Err(Error::Upstream(format!("{sql}: error")));
        }
        if wire::is_eof(&p.payload, deprecate_eof) {
            break;
        }
        if value.is_none() {
            value = Some(
                Reader::new(&p.payload, "row")
                    .lenenc_bytes()?
                    .unwrap_or_default()
                    .to_vec(),
            );
        }
    }
    value.ok_or_else(|| Error::Upstream(format!("{sql}: no row")))
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    /// Runs the sample against a server whose whole answer is `payloads` (caps without
    /// CLIENT_DEPRECATE_EOF); returns the sample and the bytes left unread.
    async fn sample_against(payloads: &[Vec<u8>]) -> (ClockSample, usize) {
        let (ours, mut theirs) = tokio::io::duplex(64 * 1024);
        let mut answer = Vec::new();
        for (seq, p) in payloads.iter().enumerate() {
            packet::put(&mut answer, seq as u8 + 1, p);
        }
        theirs.write_all(&answer).await.unwrap();
        let mut server = PacketIo::new(Stream::wrap(ours));
        let sample = sample_clock(&mut server, 0, 1 << 20).await.unwrap();
        (sample, server.buffered())
    }

    const EOF: [u8; 5] = [0xFE, 0, 0, 0x02, 0];

    #[tokio::test]
    async fn the_servers_time_makes_a_sample() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .unwrap();
        let time = format!("{}.{:06}", now.as_secs(), now.subsec_micros());
        let mut row = vec![time.len() as u8];
        row.extend_from_slice(time.as_bytes());
        let (sample, left) = sample_against(&[
            vec![1],
            b"a column".to_vec(),
            EOF.to_vec(),
            row,
            EOF.to_vec(),
        ])
        .await;
        let ClockSample::Measured { skew_ms, rtt_ms } = sample else {
            panic!("{sample:?}")
        };
        assert!(skew_ms.abs() < 1000.0 && rtt_ms >= 0.0, "{sample:?}");
        assert_eq!(left, 0);
    }

    #[tokio::test]
    async fn a_refusal_is_a_failed_sample_and_the_session_goes_on() {
        let (sample, left) =
            sample_against(&[wire::err(1142, "42000", "SELECT denied 4111111111111111")]).await;
        let ClockSample::Failed(why) = &sample else {
            panic!("{sample:?}")
        };
        assert!(why.contains("1142"), "{why}");
        assert!(!why.contains("4111111111111111"), "{why}");
        assert_eq!(left, 0);
    }
}
