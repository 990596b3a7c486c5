//! The PostgreSQL wire protocol, from the first byte a client sends to its last.
//!
//! - [`frame`]: where a message ends (pure, fuzzed).
//! - [`messages`]: decoding of the messages the proxy looks into, encoding of those it writes.
//! - [`scram`]: the server side of SCRAM-SHA-256 for client logins.
//! - [`startup`]: TLS negotiation, client authentication, cancel requests; [`upstream`]: the
//!   upstream login.
//! - [`relay`]: the two directions of an established connection, each a loop of named stages
//!   (`relay::to_server`, `relay::to_client`, `relay::hold` for a statement held for approval).
//! - [`results`]: result shapes; [`transform`]: masking of server messages; [`recording`]: what
//!   the record stage keeps of frames; [`catalog`]: result columns' source columns.
//! - [`cancel`]: tollgate's own cancel keys mapped to upstream backends.
//!
//! [`PgContext`] is the daemon's [`Context`] plus what only this wire keeps; it is the
//! [`Listener`] the accept loop serves PostgreSQL clients with.

pub mod binary;
pub mod cancel;
pub mod catalog;
pub mod discover;
pub mod frame;
#[doc(hidden)]
pub mod fuzzing;
pub mod messages;
pub mod options;
pub mod recording;
pub mod relay;
pub mod results;
pub mod scram;
pub mod startup;
pub mod transform;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::info;

use crate::config::Protocol;
use crate::conn::session::{self, Login};
use crate::conn::{BoxFuture, Context, Lifecycle, Listener, Ticket};
use crate::pipeline::ConnId;
use messages::{Severity, put_error};

/// The daemon's shared [`Context`] and what only the PostgreSQL wire keeps: cancel keys and
/// the catalog cache. Dereferences to the [`Context`].
pub struct PgContext {
    ctx: Arc<Context>,
    pub cancels: Arc<cancel::Registry>,
    /// Source columns of result columns, for the column rules.
    pub catalog: catalog::Cache,
}

impl PgContext {
    pub fn new(ctx: Arc<Context>) -> PgContext {
        PgContext {
            ctx,
            cancels: Arc::new(cancel::Registry::default()),
            catalog: catalog::Cache::default(),
        }
    }
}

impl std::ops::Deref for PgContext {
    type Target = Context;
    fn deref(&self) -> &Context {
        &self.ctx
    }
}

impl Listener for PgContext {
    fn protocol(&self) -> Protocol {
        Protocol::Postgres
    }

    fn serve<'a>(
        &'a self,
        tcp: TcpStream,
        peer: SocketAddr,
        id: ConnId,
        lifecycle: &'a Lifecycle,
        ticket: Ticket,
    ) -> BoxFuture<'a> {
        Box::pin(serve_conn(self, tcp, peer, id, lifecycle, ticket))
    }

    fn refuse_too_many(&self, tcp: TcpStream) -> BoxFuture<'static> {
        Box::pin(refuse_too_many(tcp))
    }

    fn context(&self) -> &Context {
        &self.ctx
    }
}

/// A PostgreSQL connection's life: startup and login, session records, relay. `ticket` holds
/// the connection's place (unauthenticated, then a session slot) until it ends.
async fn serve_conn(
    ctx: &PgContext,
    tcp: TcpStream,
    peer: SocketAddr,
    id: ConnId,
    lifecycle: &Lifecycle,
    mut ticket: Ticket,
) {
    let (control_tx, control) = lifecycle.register(id);
    // One deadline for the whole login, however the client spaces its bytes.
    let est = match tokio::time::timeout(
        ctx.config.limits.startup_timeout + session::STARTUP_BACKSTOP,
        startup::run(ctx, tcp, peer, &mut ticket),
    )
    .await
    {
        Err(_) => {
            info!("startup timed out");
            return;
        }
        Ok(Err(e)) => {
            info!(
                error = %crate::mask::for_log(&e.to_string()),
                "connection refused during startup"
            );
            return;
        }
        Ok(Ok(None)) => return,
        Ok(Ok(Some(est))) => est,
    };
    let mut est = est;
    let greeting = std::mem::take(&mut est.greeting);
    metrics::counter!(crate::metrics::CONNECTIONS, "outcome" => "accepted").increment(1);
    let session = Login {
        identity: &est.identity,
        target: &est.target.config,
        user: &est.user,
        database: &est.database,
        application_name: est.application_name.as_deref(),
        tls: est.client_tls,
        protocol: Protocol::Postgres,
        clock: &est.clock,
        reason: est.reason.as_deref(),
    };
    let mut info = session::connected(id, peer, &session);
    info.user_functions = std::sync::Arc::clone(&est.user_functions);
    // The greeting goes out only once the session is recorded; if it cannot be, FATAL 58030
    // in its place.
    let out = if session::record_start(ctx, &info, &session).await.is_err() {
        let mut out = Vec::new();
        put_error(
            &mut out,
            Severity::Fatal,
            "58030",
            "tollgate: the session cannot be recorded by the audit store; retry shortly",
        );
        Err(out)
    } else {
        Ok(greeting)
    };
    match out {
        Ok(greeting) => {
            if est.client.send(&greeting).await.is_err() {
                return;
            }
        }
        Err(fatal) => {
            let _ = est.client.io.write_all(&fatal).await;
            return;
        }
    }
    let who = info.who.clone();
    let end = relay::run(ctx, est, info, lifecycle, control_tx, control).await;
    session::record_end(ctx, who, format!("{end:?}")).await;
}

/// Tells a client over the limits why it is turned away, as PostgreSQL does.
async fn refuse_too_many(mut tcp: TcpStream) {
    let mut first = [0u8; 512];
    // Read what the client sent first (startup or SSLRequest) so the error is its answer.
    let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut first)).await;
    let mut out = Vec::new();
    put_error(
        &mut out,
        Severity::Fatal,
        "53300",
        "sorry, too many clients already",
    );
    let _ = tcp.write_all(&out).await;
}
