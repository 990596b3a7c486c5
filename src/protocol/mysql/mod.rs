//! The MySQL / MariaDB wire protocol, feeding the same stages as PostgreSQL.
//!
//! - [`packet`]: framing (3-byte length, sequence id, 16 MiB continuation); pure, fuzzed.
//! - [`wire`]: payloads tollgate reads and writes (OK / ERR / EOF, column definitions, text and
//!   binary rows) and the masking of rows, errors and column definitions.
//! - [`handshake`]: the agent's login (token through `mysql_clear_password`); [`upstream`]: the
//!   upstream login (mysql_native_password, caching_sha2_password, client_ed25519).
//! - [`relay`]: commands one at a time, statements through the inspect stage, results streamed
//!   back through the masker, everything recorded.
//! - [`kill`]: `KILL` mapped through the [`kill::Registry`] of live connections.
//!
//! [`MyContext`] is the daemon's [`Context`] plus the connection registry; it is the
//! [`Listener`] the accept loop serves MySQL clients with.

#[doc(hidden)]
pub mod fuzzing;
pub mod handshake;
pub mod kill;
pub mod packet;
pub mod relay;
pub mod upstream;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::info;

use crate::config::Protocol;
use crate::conn::session::{self, Login};
use crate::conn::{BoxFuture, Context, Lifecycle, Listener, Ticket};
use crate::pipeline::ConnId;
pub use kill::{Entry, Kill, Registry, parse_kill};

/// The daemon's shared [`Context`] and what only the MySQL wire keeps: the live connections,
/// for `KILL`. Dereferences to the [`Context`].
pub struct MyContext {
    ctx: Arc<Context>,
    /// Live MySQL connections, for `KILL` (tollgate's connection ids to upstream thread ids).
    pub conns: Arc<Registry>,
}

impl MyContext {
    pub fn new(ctx: Arc<Context>) -> MyContext {
        MyContext {
            ctx,
            conns: Default::default(),
        }
    }
}

impl std::ops::Deref for MyContext {
    type Target = Context;
    fn deref(&self) -> &Context {
        &self.ctx
    }
}

impl Listener for MyContext {
    fn protocol(&self) -> Protocol {
        Protocol::Mysql
    }

    fn serve<'a>(
        &'a self,
        tcp: TcpStream,
        peer: SocketAddr,
        id: ConnId,
        lifecycle: &'a Lifecycle,
        ticket: Ticket,
    ) -> BoxFuture<'a> {
        Box::pin(serve_mysql(self, tcp, peer, id, lifecycle, ticket))
    }

    fn refuse_too_many(&self, tcp: TcpStream) -> BoxFuture<'static> {
        Box::pin(refuse_too_many_mysql(tcp))
    }

    fn context(&self) -> &Context {
        &self.ctx
    }
}

/// Whether `hay` contains `needle` (ASCII, any case), without copying `hay`: the relay's
/// per-statement prefilters run on every query text.
pub(crate) fn contains_ci(hay: &str, needle: &str) -> bool {
    hay.as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// A MySQL connection's life: login, session records, relay. `ticket` holds the connection's
/// place (unauthenticated, then a session slot) until it ends.
async fn serve_mysql(
    ctx: &MyContext,
    tcp: TcpStream,
    peer: SocketAddr,
    id: ConnId,
    lifecycle: &Lifecycle,
    mut ticket: Ticket,
) {
    let (_control_tx, control) = lifecycle.register(id);
    // One deadline for the whole login, however the client spaces its bytes.
    let est = match tokio::time::timeout(
        ctx.config.limits.startup_timeout + session::STARTUP_BACKSTOP,
        handshake::run(ctx, tcp, peer, id.0 as u32, &mut ticket),
    )
    .await
    {
        Err(_) => {
            info!("startup timed out");
            return;
        }
        Ok(Err(e)) => {
            info!(error = %crate::mask::for_log(&e.to_string()), "connection refused during the MySQL login");
            return;
        }
        Ok(Ok(None)) => return,
        Ok(Ok(Some(est))) => est,
    };
    metrics::counter!(crate::metrics::CONNECTIONS, "outcome" => "accepted").increment(1);
    let session = Login {
        identity: &est.identity,
        target: &est.target.config,
        user: &est.user,
        database: &est.database,
        application_name: est.application_name.as_deref(),
        tls: est.client_tls,
        protocol: Protocol::Mysql,
        clock: &est.clock,
        reason: est.reason.as_deref(),
    };
    let info = session::connected(id, peer, &session);
    let recorded = session::record_start(ctx, &info, &session).await;
    let mut est = est;
    // The login's OK goes out only once the session is recorded; if it cannot be, an ERR in
    // its place.
    if recorded.is_err() {
        let message = "tollgate: the session cannot be recorded by the audit store; retry shortly";
        let _ = est
            .client
            .send(est.ok_seq, &wire::err(1105, "HY000", message))
            .await;
        return;
    }
    let ok = wire::ok(0, 0, est.status, 0);
    if est.client.send(est.ok_seq, &ok).await.is_err() {
        return;
    }
    let who = info.who.clone();
    let end = relay::run(ctx, est, info, lifecycle, control).await;
    session::record_end(ctx, who, format!("{end:?}")).await;
}

/// Tells a MySQL client over the limits why it is turned away (ERR 1040 in place of the
/// greeting, as MySQL does).
async fn refuse_too_many_mysql(mut tcp: TcpStream) {
    let mut out = Vec::new();
    packet::put(
        &mut out,
        0,
        &wire::err(1040, "08004", "Too many connections"),
    );
    let _ = tcp.write_all(&out).await;
}
