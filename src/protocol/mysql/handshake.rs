//! The MySQL login, both sides.
//!
//! Toward the agent tollgate is the server: it sends its own initial handshake (TLS offered
//! when configured, its own connection id), reads the client's response, and switches the
//! client to `mysql_clear_password` to receive the agent's token (only over TLS, or over
//! plaintext loopback when `identity.allow_plaintext_loopback` allows it). Toward the target it
//! is the client: it reads the server's handshake, upgrades to TLS per the target's mode, and
//! answers whatever password exchange the server asks for among those `upstream_auth` allows
//! (mysql_common's plugins compute the responses): that side is [`super::upstream`].

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tracing::{info, warn};

use super::packet::{self, PacketIo};
use super::upstream::connect_upstream;
#[cfg(test)]
use super::upstream::parse_server_hello;
use super::wire::{self, Reader};
use crate::auth::{Identity, Reason};
use crate::config::ClientAuthMethod;
use crate::conn::session::ClockSample;
use crate::conn::{Context, Refused, TargetRuntime, Ticket};
use crate::net::Stream;

pub mod caps {
    pub const LONG_PASSWORD: u32 = 0x1;
    pub const FOUND_ROWS: u32 = 0x2;
    pub const LONG_FLAG: u32 = 0x4;
    pub const CONNECT_WITH_DB: u32 = 0x8;
    pub const COMPRESS: u32 = 0x20;
    pub const LOCAL_FILES: u32 = 0x80;
    pub const IGNORE_SPACE: u32 = 0x100;
    pub const PROTOCOL_41: u32 = 0x200;
    pub const INTERACTIVE: u32 = 0x400;
    pub const SSL: u32 = 0x800;
    pub const TRANSACTIONS: u32 = 0x2000;
    pub const SECURE_CONNECTION: u32 = 0x8000;
    pub const MULTI_STATEMENTS: u32 = 0x1_0000;
    pub const MULTI_RESULTS: u32 = 0x2_0000;
    pub const PS_MULTI_RESULTS: u32 = 0x4_0000;
    pub const PLUGIN_AUTH: u32 = 0x8_0000;
    pub const CONNECT_ATTRS: u32 = 0x10_0000;
    pub const PLUGIN_AUTH_LENENC: u32 = 0x20_0000;
    pub const DEPRECATE_EOF: u32 = 0x100_0000;

    /// What tollgate offers clients (and passes on to servers, where they have it too).
    /// Not offered: compression (tollgate must read every byte), session tracking and query
    /// attributes (more to decode for no gain), MariaDB's extended capabilities.
    pub const OFFERED: u32 = LONG_PASSWORD
        | FOUND_ROWS
        | LONG_FLAG
        | CONNECT_WITH_DB
        | LOCAL_FILES
        | IGNORE_SPACE
        | PROTOCOL_41
        | INTERACTIVE
        | TRANSACTIONS
        | SECURE_CONNECTION
        | MULTI_STATEMENTS
        | MULTI_RESULTS
        | PS_MULTI_RESULTS
        | PLUGIN_AUTH
        | CONNECT_ATTRS
        | PLUGIN_AUTH_LENENC
        | DEPRECATE_EOF;
    /// What a client must have: tollgate speaks only protocol 4.1 with pluggable auth.
    pub const REQUIRED: u32 = PROTOCOL_41 | SECURE_CONNECTION | PLUGIN_AUTH;
}

/// The version string clients see.
pub const SERVER_VERSION: &str = "8.0.0-tollgate";
/// utf8mb4_general_ci.
const DEFAULT_COLLATION: u8 = 45;
const CLEAR_PASSWORD: &[u8] = b"mysql_clear_password";
pub(super) const NATIVE_PASSWORD: &[u8] = b"mysql_native_password";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Packet(#[from] packet::Error),
    #[error("{0}")]
    Malformed(#[from] wire::Malformed),
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    #[error("{0}")]
    Refused(String),
    #[error("upstream: {0}")]
    Upstream(String),
    #[error("the login did not finish within startup_timeout ({})", humantime::format_duration(*.0))]
    TimedOut(std::time::Duration),
}

/// An authenticated client and its logged-in upstream.
pub struct Established {
    pub client: PacketIo,
    pub server: PacketIo,
    pub client_tls: bool,
    pub user: String,
    pub identity: Identity,
    pub database: String,
    pub target: Arc<TargetRuntime>,
    pub application_name: Option<String>,
    /// The capabilities both sides use.
    pub caps: u32,
    /// The upstream connection's thread id (never shown to the client).
    pub upstream_thread: u32,
    pub status: u16,
    /// The sequence id of the login's final OK (or ERR), which the caller sends.
    pub ok_seq: u8,
    /// The server's clock against tollgate's, for `session_start`.
    pub clock: ClockSample,
    /// The `tollgate.reason` connection attribute.
    pub reason: Option<String>,
}

/// The client's handshake response.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Response41 {
    pub caps: u32,
    pub max_packet: u32,
    pub collation: u8,
    pub user: String,
    pub auth: Vec<u8>,
    pub database: Option<String>,
    pub plugin: Option<Vec<u8>>,
    pub program_name: Option<String>,
    /// The `tollgate.reason` connection attribute: the session's reason (never forwarded:
    /// the upstream login sends no attributes).
    pub reason: Option<String>,
}

/// Decodes a HandshakeResponse41 (also used by the fuzz target).
pub fn parse_response(payload: &[u8]) -> Result<Response41, wire::Malformed> {
    let bad = wire::Malformed("handshake response");
    let mut r = Reader::new(payload, "handshake response");
    let caps = r.u32()?;
    if caps & caps::PROTOCOL_41 == 0 {
        return Err(bad);
    }
    let max_packet = r.u32()?;
    let collation = r.u8()?;
    r.bytes(23)?;
    let user = String::from_utf8(r.nul_str()?.to_vec()).map_err(|_| bad.clone())?;
    let auth = if caps & caps::PLUGIN_AUTH_LENENC != 0 {
        r.lenenc_str()?.to_vec()
    } else if caps & caps::SECURE_CONNECTION != 0 {
        let n = r.u8()?;
        r.bytes(usize::from(n))?.to_vec()
    } else {
        r.nul_str()?.to_vec()
    };
    let mut out = Response41 {
        caps,
        max_packet,
        collation,
        user,
        auth,
        ..Response41::default()
    };
    if caps & caps::CONNECT_WITH_DB != 0 && !r.is_empty() {
        let db = r.nul_str()?;
        out.database = Some(String::from_utf8(db.to_vec()).map_err(|_| bad.clone())?);
    }
    if caps & caps::PLUGIN_AUTH != 0 && !r.is_empty() {
        out.plugin = Some(r.nul_str()?.to_vec());
    }
    if caps & caps::CONNECT_ATTRS != 0 && !r.is_empty() {
        let total = r.lenenc()?.ok_or(bad.clone())?;
        let attrs = r.bytes(usize::try_from(total).map_err(|_| bad.clone())?)?;
        let mut a = Reader::new(attrs, "connection attributes");
        while !a.is_empty() {
            let k = a.lenenc_str()?;
            let v = a.lenenc_str()?;
            if k == b"program_name" {
                out.program_name = Some(String::from_utf8_lossy(v).into_owned());
            } else if k == b"tollgate.reason" {
                out.reason = Some(String::from_utf8_lossy(v).into_owned());
            }
        }
    }
    Ok(out)
}

/// tollgate's initial handshake packet.
fn greeting(conn_id: u32, scramble: &[u8; 20], caps: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    out.push(10);
    out.extend_from_slice(SERVER_VERSION.as_bytes());
    out.push(0);
    out.extend_from_slice(&conn_id.to_le_bytes());
    out.extend_from_slice(&scramble[..8]);
    out.push(0);
    out.extend_from_slice(&(caps as u16).to_le_bytes());
    out.push(DEFAULT_COLLATION);
    out.extend_from_slice(&wire::SERVER_STATUS_AUTOCOMMIT.to_le_bytes());
    out.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
    out.push(21);
    out.extend_from_slice(&[0; 10]);
    out.extend_from_slice(&scramble[8..]);
    out.push(0);
    out.extend_from_slice(NATIVE_PASSWORD);
    out.push(0);
    out
}

/// A sequence id check for login packets.
fn expect_seq(p: &packet::Packet, want: u8) -> Result<(), Error> {
    if p.seq != want {
        return Err(packet::Error::Sequence { got: p.seq, want }.into());
    }
    Ok(())
}

/// Sends an ERR and gives the error back.
async fn refuse(client: &mut PacketIo, seq: u8, code: u16, state: &str, message: &str) {
    let _ = client.send(seq, &wire::err(code, state, message)).await;
}

/// The client side of the login, then the upstream login. `Ok(None)`: the client went away
/// or was refused (it was told why).
///
/// `ticket` is admitted to a session slot as soon as the client has authenticated, before
/// anything is opened upstream.
pub async fn run(
    ctx: &Context,
    tcp: TcpStream,
    peer: SocketAddr,
    conn_id: u32,
    ticket: &mut Ticket,
) -> Result<Option<Established>, Error> {
    let mut client = PacketIo::new(Stream::Tcp(tcp));
    let limit = ctx.config.limits.startup_timeout;
    let Ok(outcome) =
        tokio::time::timeout(limit, login(ctx, &mut client, peer, conn_id, ticket)).await
    else {
        // MySQL's words for a client too slow to send its packets, with tollgate's reason.
        let e = Error::TimedOut(limit);
        let message = format!("Got timeout reading communication packets (tollgate: {e})");
        let seq = client.next_seq();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            client.send(seq, &wire::err(1159, "08S01", &message)),
        )
        .await;
        return Err(e);
    };
    match outcome {
        Err(Error::Packet(e)) if !matches!(e, packet::Error::Closed | packet::Error::Io(_)) => {
            // A malformed, oversize or out-of-order packet: this client is told, and only it.
            let _ = client
                .send(0, &wire::err(1043, "08S01", &format!("Bad handshake: {e}")))
                .await;
            Err(Error::Packet(e))
        }
        Err(Error::Malformed(e)) => {
            let _ = client
                .send(0, &wire::err(1043, "08S01", &format!("Bad handshake: {e}")))
                .await;
            Err(Error::Malformed(e))
        }
        other => other,
    }
}

async fn login(
    ctx: &Context,
    client_io: &mut PacketIo,
    peer: SocketAddr,
    conn_id: u32,
    ticket: &mut Ticket,
) -> Result<Option<Established>, Error> {
    let client = client_io;
    let max = ctx.config.limits.max_client_frame.min(64 * 1024);
    let mut scramble = [0u8; 20];
    let rng = aws_lc_rs::rand::SystemRandom::new();
    aws_lc_rs::rand::SecureRandom::fill(&rng, &mut scramble)
        .map_err(|_| Error::Refused("no randomness".into()))?;
    // The scramble must be printable-ish and NUL-free for old clients.
    for b in scramble.iter_mut() {
        *b = (*b & 0x7F).max(1);
        if *b == b'$' || *b == 0 {
            *b = b'#';
        }
    }
    let mut offered = caps::OFFERED;
    if ctx.client_tls.is_some() {
        offered |= caps::SSL;
    }
    client
        .send(0, &greeting(conn_id, &scramble, offered))
        .await?;
    let mut p = match client.read(max).await {
        Err(packet::Error::Closed) => return Ok(None),
        other => other?,
    };
    expect_seq(&p, 1)?;
    let mut tls = false;
    if p.payload.len() == 32 {
        // An SSLRequest: the short form of the response, with CLIENT_SSL.
        let caps = u32::from_le_bytes([p.payload[0], p.payload[1], p.payload[2], p.payload[3]]);
        let Some(acceptor) = ctx.client_tls.as_ref().filter(|_| caps & caps::SSL != 0) else {
            refuse(client, 2, 1043, "08S01", "Bad handshake").await;
            return Ok(None);
        };
        // The client's TLS handshake may already be behind the request.
        let (io, early) =
            std::mem::replace(client, PacketIo::new(Stream::placeholder())).into_parts();
        let io = crate::net::Prefixed::new(early, io);
        let stream = acceptor.accept(io).await.map_err(Error::Tls)?;
        *client = PacketIo::new(Stream::wrap(stream));
        tls = true;
        p = client.read(max).await?;
        expect_seq(&p, 2)?;
    }
    let response = match parse_response(&p.payload) {
        Ok(r) => r,
        Err(e) => {
            refuse(client, p.next_seq, 1043, "08S01", "Bad handshake").await;
            return Err(e.into());
        }
    };
    let mut seq = p.next_seq;
    if response.caps & caps::REQUIRED != caps::REQUIRED {
        refuse(
            client,
            seq,
            1043,
            "08S01",
            "tollgate needs a client with protocol 4.1 and pluggable authentication",
        )
        .await;
        return Ok(None);
    }
    if !tls && ctx.config.tls.as_ref().is_some_and(|t| t.require) {
        refuse(
            client,
            seq,
            3159,
            "HY000",
            "Connections using insecure transport are prohibited: tollgate requires TLS (connect with --ssl)",
        )
        .await;
        return Ok(None);
    }
    let database = response.database.clone().unwrap_or_default();
    let Some(target) = ctx.mysql_target(&database) else {
        info!(
            database = crate::mask::for_log(&database),
            "no MySQL target for the database"
        );
        refuse(
            client,
            seq,
            1049,
            "42000",
            &format!(
                "Unknown database '{}': tollgate has no MySQL target of that name",
                crate::mask::for_log(&database)
            ),
        )
        .await;
        return Ok(None);
    };
    // The password: the agent's token, or the target's static password.
    let auth = &target.config.client_auth;
    let plaintext_ok = match auth.method {
        ClientAuthMethod::Oidc => {
            ctx.config
                .identity
                .as_ref()
                .is_some_and(|i| i.allow_plaintext_loopback)
                && peer.ip().is_loopback()
        }
        _ => peer.ip().is_loopback(),
    };
    if !tls && !plaintext_ok {
        refuse(
            client,
            seq,
            3159,
            "HY000",
            "tollgate accepts agent tokens only over TLS (connect with --ssl and the cleartext plugin enabled)",
        )
        .await;
        return Err(Error::Refused("password offered over plaintext".into()));
    }
    let password =
        if response.plugin.as_deref() == Some(CLEAR_PASSWORD) && !response.auth.is_empty() {
            response.auth.clone()
        } else {
            let mut switch = vec![0xFE];
            switch.extend_from_slice(CLEAR_PASSWORD);
            switch.push(0);
            seq = client.send(seq, &switch).await?;
            let p = client.read(max).await?;
            expect_seq(&p, seq)?;
            seq = p.next_seq;
            p.payload.to_vec()
        };
    let password = match password.split_last() {
        Some((0, rest)) => rest.to_vec(),
        _ => password,
    };
    let password = String::from_utf8(password).unwrap_or_default();
    let outcome = match auth.method {
        ClientAuthMethod::Oidc => match &ctx.validator {
            Some(v) => v.validate(&password).await,
            None => Err(Reason::KeysUnavailable("no identity configured".into())),
        },
        _ => static_login(&target, &response.user, &password),
    };
    let identity = match outcome {
        Ok(identity) => {
            ctx.throttle.succeeded(peer.ip());
            identity
        }
        Err(reason) => {
            crate::conn::session::login_failed(
                ctx,
                &target,
                &response.user,
                peer,
                tls,
                auth.method,
                &reason,
            )
            .await;
            refuse(
                client,
                seq,
                1045,
                "28000",
                &format!(
                    "Access denied for user '{}' (using password: YES)",
                    crate::mask::for_log(&response.user)
                ),
            )
            .await;
            return Err(Error::Refused(format!("authentication failed: {reason}")));
        }
    };
    if let Err(refused) = ticket.admit() {
        let (code, state, message) = match refused {
            Refused::ShuttingDown => (1053, "08S01", "Server shutdown in progress"),
            _ => (1040, "08004", "Too many connections"),
        };
        refuse(client, seq, code, state, message).await;
        return Err(Error::Refused(refused.to_string()));
    }
    let caps = response.caps & (caps::OFFERED | caps::SSL);
    let (server, upstream) = match connect_upstream(
        ctx,
        &target,
        &identity,
        &database,
        caps,
        response.collation,
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            warn!(target = target.config.name, error = %crate::mask::for_log(&e.to_string()), "upstream login failed");
            refuse(
                client,
                seq,
                1105,
                "08S01",
                &format!(
                    "tollgate: cannot open a session on target {}; see the tollgate log",
                    target.config.name
                ),
            )
            .await;
            return Ok(None);
        }
    };
    // Result sets end differently with and without CLIENT_DEPRECATE_EOF; tollgate passes them
    // through as the server sends them, so both sides must agree.
    if (response.caps ^ upstream.caps) & caps::DEPRECATE_EOF != 0 {
        warn!(
            target = target.config.name,
            "the server and the client disagree on CLIENT_DEPRECATE_EOF"
        );
        refuse(
            client,
            seq,
            1105,
            "08S01",
            "tollgate: this client and the target's server do not share CLIENT_DEPRECATE_EOF; use a MySQL 5.7+ / MariaDB 10.2+ server",
        )
        .await;
        return Ok(None);
    }
    // The client gets its OK from tollgate (`ok_seq`), once the session is recorded.
    Ok(Some(Established {
        ok_seq: seq,
        client: std::mem::replace(client, PacketIo::new(Stream::placeholder())),
        server,
        client_tls: tls,
        user: response.user,
        identity,
        database,
        target,
        application_name: response.program_name,
        reason: response.reason,
        caps: upstream.caps,
        upstream_thread: upstream.thread,
        status: upstream.status,
        clock: upstream.clock,
    }))
}

fn static_login(target: &TargetRuntime, user: &str, given: &str) -> Result<Identity, Reason> {
    let auth = &target.config.client_auth;
    let expected = match auth.password.as_ref().map(|s| s.read()) {
        Some(Ok(p)) => p,
        Some(Err(e)) => return Err(Reason::KeysUnavailable(format!("client password: {e}"))),
        None => {
            return Err(Reason::KeysUnavailable(
                "no client password configured".into(),
            ));
        }
    };
    let same = |a: &str, b: &str| {
        aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
    };
    if !same(given, &expected) {
        return Err(Reason::Malformed("wrong password".into()));
    }
    if auth.user.as_deref().is_some_and(|u| !same(u, user)) {
        return Err(Reason::ClaimMismatch("user".into()));
    }
    Ok(Identity::static_login(user, &auth.groups))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_parses_as_a_server_hello() {
        let scramble = *b"abcdefghijklmnopqrst";
        let g = greeting(42, &scramble, caps::OFFERED | caps::SSL);
        let h = parse_server_hello(&g).unwrap();
        assert_eq!(h.thread, 42);
        assert_eq!(h.scramble, scramble);
        assert_eq!(h.plugin, NATIVE_PASSWORD);
        assert_eq!(h.caps, caps::OFFERED | caps::SSL);
    }

    #[test]
    fn handshake_responses() {
        let mut p = Vec::new();
        let c = caps::OFFERED;
        p.extend_from_slice(&c.to_le_bytes());
        p.extend_from_slice(&(1u32 << 24).to_le_bytes());
        p.push(45);
        p.extend_from_slice(&[0; 23]);
        p.extend_from_slice(b"agent\0");
        wire::put_lenenc_bytes(&mut p, b"token");
        p.extend_from_slice(b"shop\0mysql_clear_password\0");
        let mut attrs = Vec::new();
        wire::put_lenenc_bytes(&mut attrs, b"program_name");
        wire::put_lenenc_bytes(&mut attrs, b"mariadb");
        wire::put_lenenc_bytes(&mut p, &attrs);
        let r = parse_response(&p).unwrap();
        assert_eq!(r.user, "agent");
        assert_eq!(r.auth, b"token");
        assert_eq!(r.database.as_deref(), Some("shop"));
        assert_eq!(r.plugin.as_deref(), Some(CLEAR_PASSWORD));
        assert_eq!(r.program_name.as_deref(), Some("mariadb"));
        for cut in 0..p.len() {
            let _ = parse_response(&p[..cut]);
        }
    }
}
