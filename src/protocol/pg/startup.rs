//! A connection's first phase: encryption negotiation, the client's login, the upstream login.
//!
//! Order matters: the client proves who it is before tollgate opens anything upstream, and the
//! upstream credentials never travel toward the client. When this phase succeeds the client's
//! greeting (AuthenticationOk, the server's ParameterStatus messages, tollgate's own
//! BackendKeyData and ReadyForQuery) is ready; the caller sends it once the session is
//! recorded, and both streams are handed to the relay.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, warn};

use super::PgContext;
use super::cancel::{Registration, UpstreamKey};
use super::frame::{self, FrameError, Message};
use super::messages::{self, Frontend, MessageError, Severity, StartupRequest, put_error};
use super::scram;
use super::upstream::{connect_upstream, open_upstream};
use crate::auth::{Identity, Reason};
use crate::config::ClientAuthMethod;
use crate::conn::session::ClockSample;
use crate::conn::{Refused, TargetRuntime, Ticket};
use crate::net::Stream;

/// Bytes read from a socket at a time.
pub const READ_CHUNK: usize = 64 * 1024;

/// Why a connection ended during startup. The client has already been told, where possible.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("{0}")]
    Message(#[from] MessageError),
    #[error("client refused: {0}")]
    Refused(String),
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("upstream: {0}")]
    Upstream(String),
    #[error("TLS handshake: {0}")]
    Tls(std::io::Error),
    #[error("the login did not finish within startup_timeout ({})", humantime::format_duration(*.0))]
    TimedOut(std::time::Duration),
}

/// A socket with its read buffer.
pub struct Conn {
    pub io: Stream,
    pub buf: BytesMut,
}

impl Conn {
    pub fn new(io: Stream) -> Conn {
        Conn {
            io,
            buf: BytesMut::with_capacity(8 * 1024),
        }
    }

    async fn fill(&mut self) -> Result<(), Error> {
        self.buf.reserve(8 * 1024);
        if self.io.read_buf(&mut self.buf).await? == 0 {
            return Err(Error::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        Ok(())
    }

    /// The next startup-phase packet, length included.
    async fn read_startup(&mut self) -> Result<BytesMut, Error> {
        loop {
            if let Some(n) = frame::startup_len(&self.buf)? {
                return Ok(self.buf.split_to(n));
            }
            self.fill().await?;
        }
    }

    /// The next regular message, as a complete frame.
    pub async fn read_message(&mut self, max: usize) -> Result<BytesMut, Error> {
        loop {
            if let Some(n) = frame::message_len(&self.buf, max)? {
                return Ok(self.buf.split_to(n));
            }
            self.fill().await?;
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.io.write_all(bytes).await?;
        self.io.flush().await?;
        Ok(())
    }

    /// Sends a FATAL error; the caller then closes the connection.
    pub async fn fatal(&mut self, sqlstate: &str, message: &str) {
        let mut out = Vec::new();
        put_error(&mut out, Severity::Fatal, sqlstate, message);
        // The connection is ending either way; a client that is gone cannot be told.
        let _ = self.send(&out).await;
    }
}

/// An authenticated client joined to its logged-in upstream.
pub struct Established {
    /// AuthenticationOk, the server's parameters, tollgate's cancel key and ReadyForQuery:
    /// not yet sent, so that a session that cannot be recorded never starts.
    pub greeting: Vec<u8>,
    pub client: Conn,
    pub server: Conn,
    pub user: String,
    pub identity: Identity,
    /// The database name the client asked for.
    pub database: String,
    pub target: Arc<TargetRuntime>,
    pub application_name: Option<String>,
    /// Keeps this connection's cancel key registered while it lives.
    pub cancel: Registration,
    /// Whether the client connection is TLS.
    pub client_tls: bool,
    /// The target's functions outside pg_catalog (`ConnInfo::user_functions`).
    pub user_functions: Arc<std::collections::BTreeSet<String>>,
    /// The server's clock against tollgate's, for `session_start`.
    pub clock: ClockSample,
    /// The reason the client gave for the session (`tollgate.reason`).
    pub reason: Option<String>,
}

/// The startup phase, within `startup_timeout`. `Ok(None)` when the connection was a
/// CancelRequest (handled here).
///
/// `ticket` is admitted to a session slot as soon as the client has authenticated, before
/// anything is opened upstream.
pub async fn run(
    ctx: &PgContext,
    tcp: TcpStream,
    peer: SocketAddr,
    ticket: &mut Ticket,
) -> Result<Option<Established>, Error> {
    let mut client = Conn::new(Stream::Tcp(tcp));
    let limit = ctx.config.limits.startup_timeout;
    let Ok(outcome) = tokio::time::timeout(limit, login(ctx, &mut client, peer, ticket)).await
    else {
        // As PostgreSQL does when authentication_timeout runs out: say why, then close. (Cut
        // during a TLS handshake, the client stream is a placeholder and hears nothing.)
        let e = Error::TimedOut(limit);
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            client.fatal("08P01", &format!("tollgate: {e}")),
        )
        .await;
        return Err(e);
    };
    match outcome {
        Ok(Some(l)) => Ok(Some(Established {
            greeting: l.greeting,
            client,
            server: l.server,
            user: l.user,
            identity: l.identity,
            database: l.database,
            target: l.target,
            application_name: l.application_name,
            cancel: l.cancel,
            client_tls: l.tls,
            user_functions: l.user_functions,
            clock: l.clock,
            reason: l.reason,
        })),
        Ok(None) => Ok(None),
        Err(e @ (Error::Frame(_) | Error::Message(_))) => {
            client
                .fatal("08P01", &format!("invalid frontend message: {e}"))
                .await;
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// [`Established`] but for the client connection, which the caller keeps.
struct LoggedIn {
    greeting: Vec<u8>,
    server: Conn,
    user: String,
    identity: Identity,
    database: String,
    target: Arc<TargetRuntime>,
    application_name: Option<String>,
    cancel: Registration,
    tls: bool,
    user_functions: Arc<std::collections::BTreeSet<String>>,
    clock: ClockSample,
    reason: Option<String>,
}

async fn login(
    ctx: &PgContext,
    client: &mut Conn,
    peer: SocketAddr,
    ticket: &mut Ticket,
) -> Result<Option<LoggedIn>, Error> {
    let mut tls = false;
    // PostgreSQL 17's direct TLS (`sslnegotiation=direct`): a TLS handshake record as the first
    // bytes, no SSLRequest. Taken only with ALPN "postgresql", as PostgreSQL requires, so a TLS
    // client of some other protocol is never read as a PostgreSQL one.
    if let Some(acceptor) = &ctx.client_tls
        && starts_with_tls(client).await?
    {
        let plain = std::mem::replace(&mut client.io, Stream::placeholder());
        let stream = acceptor.accept(plain).await.map_err(Error::Tls)?;
        let alpn = stream.get_ref().1.alpn_protocol() == Some(b"postgresql".as_slice());
        *client = Conn::new(Stream::wrap(stream));
        if !alpn {
            client
                .fatal(
                    "08P01",
                    "received direct SSL connection request without ALPN protocol negotiation extension",
                )
                .await;
            return Err(Error::Refused("direct TLS without ALPN postgresql".into()));
        }
        tls = true;
    }
    // A client may ask for GSS encryption, then SSL, then start; no more rounds than that.
    let (minor, params) = 'negotiate: {
        for _ in 0..3 {
            let packet = client.read_startup().await?;
            let request = messages::decode_startup(&packet)?;
            match request {
                StartupRequest::Ssl if tls => {
                    client.fatal("08P01", "SSLRequest received twice").await;
                    return Err(Error::Refused("second SSLRequest".into()));
                }
                StartupRequest::Ssl => match &ctx.client_tls {
                    Some(acceptor) => {
                        // Bytes sent before the handshake would be plaintext injected into the
                        // encrypted session (CVE-2021-23214): refuse them.
                        if !client.buf.is_empty() {
                            return Err(Error::Refused(
                                "data sent before the TLS handshake".into(),
                            ));
                        }
                        client.send(b"S").await?;
                        let plain = std::mem::replace(&mut client.io, Stream::placeholder());
                        *client = Conn::new(upgrade_client(plain, acceptor).await?);
                        tls = true;
                    }
                    None => client.send(b"N").await?,
                },
                StartupRequest::GssEnc => client.send(b"N").await?,
                StartupRequest::Cancel {
                    process_id,
                    secret_key,
                } => {
                    forward_cancel(ctx, process_id, secret_key).await;
                    return Ok(None);
                }
                StartupRequest::Startup { minor, params } => {
                    let params: Vec<(String, String)> = params
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect();
                    break 'negotiate (minor, params);
                }
            }
        }
        client
            .fatal("08P01", "too many encryption negotiation requests")
            .await;
        return Err(Error::Refused("negotiation loop".into()));
    };

    if ctx.config.tls.as_ref().is_some_and(|t| t.require) && !tls {
        client
            .fatal(
                "28000",
                "tollgate requires an encrypted connection (use sslmode=require)",
            )
            .await;
        return Err(Error::Refused(
            "plaintext client while TLS is required".into(),
        ));
    }

    // The session's reason is tollgate's, never the server's.
    let mut params = params;
    let reason = super::options::take_reason(&mut params);

    // tollgate speaks protocol 3.0 and no protocol extensions; say so, then go on.
    let unrecognized: Vec<&str> = params
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| k.starts_with("_pq_."))
        .collect();
    if minor > 0 || !unrecognized.is_empty() {
        let mut out = Vec::new();
        messages::put_negotiate(&mut out, &unrecognized);
        client.send(&out).await?;
    }

    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let Some(user) = get("user").filter(|u| !u.is_empty()).map(str::to_owned) else {
        client
            .fatal(
                "28000",
                "no PostgreSQL user name specified in startup packet",
            )
            .await;
        return Err(Error::Refused("no user".into()));
    };
    let database = get("database")
        .filter(|d| !d.is_empty())
        .unwrap_or(&user)
        .to_owned();
    if get("replication").is_some_and(|v| !matches!(v, "false" | "off" | "no" | "0")) {
        client
            .fatal("08P01", "tollgate does not relay replication connections")
            .await;
        return Err(Error::Refused("replication requested".into()));
    }
    let mut forwarded: Vec<(&str, &str)> = Vec::new();
    for (k, v) in &params {
        if matches!(k.as_str(), "user" | "database" | "replication") || k.starts_with("_pq_.") {
            continue;
        }
        if !FORWARDED_PARAMETERS.contains(&k.to_ascii_lowercase().as_str()) {
            client
                .fatal(
                    "42501",
                    &format!("startup parameter \"{k}\" is not allowed through tollgate"),
                )
                .await;
            return Err(Error::Refused(format!("startup parameter {k}")));
        }
        // The client's encoding is not taken: see PINNED_PARAMETERS. The others are settings
        // like any other: the policy's allowlist holds for them as for SET.
        let setting = k.to_ascii_lowercase();
        if setting != "client_encoding" {
            if !ctx.stages.inspect.setting_allowed(&setting) {
                client
                    .fatal(
                        "42501",
                        &format!(
                            "startup parameter \"{k}\" is not on the policy's settings allowlist"
                        ),
                    )
                    .await;
                return Err(Error::Refused(format!("startup parameter {k}")));
            }
            forwarded.push((k, v));
        }
    }
    forwarded.extend_from_slice(PINNED_PARAMETERS);
    let application_name = get("application_name").map(str::to_owned);

    let Some(target) = ctx.target(&database) else {
        client
            .fatal("3D000", &format!("database \"{database}\" does not exist"))
            .await;
        return Err(Error::Refused(format!("unknown database {database:?}")));
    };

    let identity = authenticate_client(ctx, client, &target, &user, peer, tls).await?;
    debug!(
        %peer,
        user,
        subject = identity.subject,
        issuer = identity.issuer,
        target = target.config.name,
        "client authenticated"
    );
    if let Err(refused) = ticket.admit() {
        match refused {
            Refused::ShuttingDown => {
                client
                    .fatal(
                        "57P01",
                        "terminating connection because tollgate is shutting down",
                    )
                    .await
            }
            _ => {
                client
                    .fatal("53300", "sorry, too many clients already")
                    .await
            }
        }
        return Err(Error::Refused(refused.to_string()));
    }

    // An identity that may only read gets a read-only session in the database itself, which
    // it cannot lift (default_transaction_read_only and READ WRITE are protected settings).
    if ctx.stages.inspect.read_only(&identity, &database) {
        forwarded.push(("default_transaction_read_only", "on"));
    }
    let started = std::time::Instant::now();
    let (server, key) = match connect_upstream(ctx, &target, &identity, &database, &forwarded).await
    {
        Ok(ok) => {
            metrics::histogram!(crate::metrics::UPSTREAM_CONNECT, "target" => target.config.name.clone())
                .record(started.elapsed().as_secs_f64());
            ok
        }
        Err((e, sqlstate)) => {
            warn!(
                target = target.config.name,
                error = %crate::mask::for_log(&e.to_string()),
                "upstream login failed"
            );
            client
                .fatal(
                    sqlstate,
                    "tollgate could not open the upstream connection (see the tollgate log)",
                )
                .await;
            return Err(e);
        }
    };

    // The target's own functions, so the policy can tell their calls (on the agent's session).
    let mut server = server;
    let user_functions = if ctx.stages.inspect.needs_user_functions() {
        match super::upstream::user_functions(&mut server, ctx.config.limits.max_server_frame).await
        {
            Ok(names) => Arc::new(names),
            Err(e) => {
                warn!(target = target.config.name, error = %e, "function catalog not read");
                client
                    .fatal(
                        "08006",
                        "tollgate could not read the target's function catalog (see the tollgate log)",
                    )
                    .await;
                return Err(e);
            }
        }
    } else {
        Default::default()
    };

    // AuthenticationOk, the server's parameters, tollgate's cancel key, ReadyForQuery.
    let (cancel, secret) = ctx.cancels.register(UpstreamKey {
        target: target.config.name.as_str().into(),
        process_id: key.process_id,
        secret_key: key.secret_key,
    });
    // Sent by the caller once the session is recorded: a session the audit store cannot
    // record never starts.
    let mut greeting = Vec::new();
    messages::put_auth(&mut greeting, 0, &[]);
    greeting.extend_from_slice(&key.greeting);
    messages::put_backend_key(&mut greeting, cancel.process_id(), secret);
    messages::put_ready(&mut greeting, key.status);
    // Anything the server sent after its ReadyForQuery stays in `server.buf` for the relay.

    Ok(Some(LoggedIn {
        greeting,
        server,
        user,
        identity,
        database,
        target,
        application_name,
        cancel,
        tls,
        user_functions,
        clock: key.clock,
        reason,
    }))
}

/// Startup parameters passed on to the server. Anything else is refused: a parameter such as
/// `options` would set server settings (a role, say) without any statement being inspected, and
/// settings like `default_transaction_read_only` or `statement_timeout` would override what the
/// DBA set on the upstream role.
const FORWARDED_PARAMETERS: &[&str] = &[
    "application_name",
    "client_encoding",
    "datestyle",
    "timezone",
    "intervalstyle",
    "extra_float_digits",
    "search_path",
    "bytea_output",
];

/// Settings tollgate always opens upstream sessions with, so the server reads SQL text the way
/// the policy's parser does: UTF-8, and backslashes in '…' strings taken literally. A client
/// encoding such as GBK or SJIS, or `standard_conforming_strings=off`, would let one text mean
/// one thing to the parser and another to the server. The relay ends a connection whose server
/// reports either setting changed.
pub const PINNED_PARAMETERS: &[(&str, &str)] = &[
    ("client_encoding", "UTF8"),
    ("standard_conforming_strings", "on"),
];

/// Whether the client's first byte opens a TLS handshake record (direct TLS). A startup
/// packet starts with its length, whose first byte is 0 for any length tollgate accepts.
async fn starts_with_tls(client: &mut Conn) -> Result<bool, Error> {
    const TLS_HANDSHAKE_RECORD: u8 = 0x16;
    let Stream::Tcp(tcp) = &mut client.io else {
        return Ok(false);
    };
    let mut first = [0u8; 1];
    let n = tcp.peek(&mut first).await?;
    Ok(n == 1 && first[0] == TLS_HANDSHAKE_RECORD)
}

async fn upgrade_client(io: Stream, acceptor: &tokio_rustls::TlsAcceptor) -> Result<Stream, Error> {
    let stream = acceptor.accept(io).await.map_err(Error::Tls)?;
    Ok(Stream::wrap(stream))
}

/// The client's login: an OIDC token as the password, or a target's static password. On
/// success, who the client is.
async fn authenticate_client(
    ctx: &PgContext,
    client: &mut Conn,
    target: &TargetRuntime,
    user: &str,
    peer: SocketAddr,
    tls: bool,
) -> Result<Identity, Error> {
    let auth = &target.config.client_auth;
    let max = ctx.config.limits.max_client_frame.min(64 * 1024);
    let outcome = match auth.method {
        ClientAuthMethod::Oidc => oidc_login(ctx, client, peer, tls, max).await?,
        ClientAuthMethod::Password if !tls && !peer.ip().is_loopback() => {
            client
                .fatal(
                    "28000",
                    "tollgate accepts cleartext passwords only over TLS (connect with sslmode=require)",
                )
                .await;
            return Err(Error::Refused("cleartext password over plaintext".into()));
        }
        ClientAuthMethod::Password | ClientAuthMethod::ScramSha256 => {
            static_login(client, target, user, max).await?
        }
    };
    match outcome {
        Ok(identity) => {
            ctx.throttle.succeeded(peer.ip());
            Ok(identity)
        }
        Err(reason) => {
            crate::conn::session::login_failed(ctx, target, user, peer, tls, auth.method, &reason)
                .await;
            client.fatal("28P01", &failed(user)).await;
            Err(Error::Auth(reason.to_string()))
        }
    }
}

/// Reads a PasswordMessage after AuthenticationCleartextPassword.
async fn read_cleartext(client: &mut Conn, max: usize) -> Result<String, Error> {
    let mut out = Vec::new();
    messages::put_auth(&mut out, 3, &[]);
    client.send(&out).await?;
    let frame = client.read_message(max).await?;
    let body = expect_password(Message::from_frame(&frame))?;
    Ok(messages::decode_password(body)?.to_owned())
}

/// An agent token as the password, validated against the configured issuers.
async fn oidc_login(
    ctx: &PgContext,
    client: &mut Conn,
    peer: SocketAddr,
    tls: bool,
    max: usize,
) -> Result<Result<Identity, Reason>, Error> {
    let Some(validator) = &ctx.validator else {
        // Config validation prevents this; refuse rather than let anyone in.
        return Ok(Err(Reason::KeysUnavailable(
            "no identity configured".into(),
        )));
    };
    let plaintext_ok = ctx
        .config
        .identity
        .as_ref()
        .is_some_and(|i| i.allow_plaintext_loopback)
        && peer.ip().is_loopback();
    if !tls && !plaintext_ok {
        client
            .fatal(
                "28000",
                "tollgate accepts agent tokens only over TLS (connect with sslmode=require)",
            )
            .await;
        return Err(Error::Refused("token offered over plaintext".into()));
    }
    let token = read_cleartext(client, max).await?;
    Ok(validator.validate(&token).await)
}

/// A target's static password, by SCRAM-SHA-256 or in clear.
async fn static_login(
    client: &mut Conn,
    target: &TargetRuntime,
    user: &str,
    max: usize,
) -> Result<Result<Identity, Reason>, Error> {
    let auth = &target.config.client_auth;
    let expected = match auth.password.as_ref().map(|s| s.read()) {
        Some(Ok(p)) => p,
        // Fail closed: a secret that cannot be read lets nobody in.
        Some(Err(e)) => {
            return Ok(Err(Reason::KeysUnavailable(format!(
                "client password: {e}"
            ))));
        }
        None => {
            return Ok(Err(Reason::KeysUnavailable(
                "no client password configured".into(),
            )));
        }
    };
    let checked = match auth.method {
        ClientAuthMethod::ScramSha256 => scram_exchange(client, target, &expected, max).await?,
        _ => {
            let given = read_cleartext(client, max).await?;
            if scram::password_matches(&given, &expected) {
                Ok(())
            } else {
                Err("wrong password".to_owned())
            }
        }
    };
    let user_ok = auth
        .user
        .as_deref()
        .is_none_or(|u| scram::password_matches(u, user));
    Ok(match checked {
        Err(why) => Err(Reason::Malformed(why)),
        Ok(()) if !user_ok => Err(Reason::ClaimMismatch("user".into())),
        Ok(()) => Ok(Identity::static_login(user, &auth.groups)),
    })
}

fn failed(user: &str) -> String {
    format!("password authentication failed for user \"{user}\"")
}

fn expect_password(m: Message<'_>) -> Result<&[u8], Error> {
    match messages::decode_frontend(m.tag, m.body)? {
        Frontend::Password(body) => Ok(body),
        _ => Err(Error::Auth("expected a password message".into())),
    }
}

/// Runs SCRAM-SHA-256; the outer error is an I/O failure, the inner one a failed login.
async fn scram_exchange(
    client: &mut Conn,
    target: &TargetRuntime,
    password: &str,
    max: usize,
) -> Result<Result<(), String>, Error> {
    let verifier = target.client_verifier(password, scram::Verifier::new);
    let mut out = Vec::new();
    messages::put_auth(&mut out, 10, format!("{}\0\0", scram::MECHANISM).as_bytes());
    client.send(&out).await?;

    let frame = client.read_message(max).await?;
    let body = expect_password(Message::from_frame(&frame))?;
    let (mechanism, first) = messages::decode_sasl_initial(body)?;
    if mechanism != scram::MECHANISM {
        return Ok(Err(format!("unsupported SASL mechanism {mechanism:?}")));
    }
    let (exchange, server_first) = match scram::server_first(&verifier, first) {
        Ok(ok) => ok,
        Err(e) => return Ok(Err(e.to_string())),
    };
    out.clear();
    messages::put_auth(&mut out, 11, &server_first);
    client.send(&out).await?;

    let frame = client.read_message(max).await?;
    let body = expect_password(Message::from_frame(&frame))?;
    match exchange.server_final(body) {
        Ok(server_final) => {
            out.clear();
            messages::put_auth(&mut out, 12, &server_final);
            client.send(&out).await?;
            Ok(Ok(()))
        }
        Err(e) => Ok(Err(e.to_string())),
    }
}

/// Sends a cancel to the upstream backend behind tollgate's key. Unknown keys are ignored, as
/// PostgreSQL does, so a client learns nothing from a guess.
async fn forward_cancel(ctx: &PgContext, process_id: i32, secret_key: i32) {
    let Some(key) = ctx.cancels.cancel(process_id, secret_key) else {
        debug!("cancel request with an unknown key, or for a held statement (now ended)");
        return;
    };
    send_cancel(ctx, &key).await;
}

/// Sends a CancelRequest for `key`'s backend on a new connection to its target's server
/// (PostgreSQL docs, "Canceling Requests in Progress") and waits, up to 2 seconds, until the
/// server has read it and closed the connection. Failures are logged: a cancel is best effort
/// in PostgreSQL too.
pub(super) async fn send_cancel(ctx: &PgContext, key: &super::cancel::UpstreamKey) {
    let Some(target) = ctx.targets.get(&*key.target) else {
        return;
    };
    let request =
        messages::encode_request(messages::CANCEL_REQUEST, &[key.process_id, key.secret_key]);
    match open_upstream(ctx, target).await {
        Ok(mut server) => {
            if let Err(e) = server.send(&request).await {
                warn!(target = &*key.target, error = %e, "cancel not delivered");
            }
            // The server closes the connection when done; wait briefly so it reads the request.
            let mut sink = [0u8; 1];
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(2), server.io.read(&mut sink))
                    .await;
        }
        Err(e) => warn!(target = &*key.target, error = %e, "cancel not delivered"),
    }
}
