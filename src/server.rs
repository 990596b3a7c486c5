//! Listeners, the accept loop, connection limits and graceful shutdown.
//!
//! [`run`] takes an already bound listener (tests bind port 0) and a shutdown future. When the
//! future completes the listener closes, connections are told to drain (each ends as soon as
//! nothing runs on it), and after the grace period the rest are cut with FATAL 57P01.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tracing::{Instrument, info, info_span, warn};

use crate::pipeline::{ConnId, ConnInfo};
use crate::protocol::pg::messages::{Severity, put_error};
use crate::protocol::pg::{Context, relay, startup};

/// Where the daemon is in its life; connections watch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Running,
    /// No new connections; each ends once idle.
    Draining,
    /// Grace period over: every connection ends now.
    Closing,
}

/// Open connections per client address.
#[derive(Default)]
struct PerClient {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

struct ClientSlot {
    owner: Arc<PerClient>,
    ip: IpAddr,
}

impl PerClient {
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<ClientSlot> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            owner: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut counts = self.owner.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// Serves PostgreSQL clients on `listener` until `shutdown` completes, then drains.
pub async fn run(
    listener: TcpListener,
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let limits = ctx.config.limits.clone();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_client = Arc::new(PerClient::default());
    let (phase_tx, phase_rx) = watch::channel(Phase::Running);
    info!(address = %listener.local_addr()?, "PostgreSQL listener ready");
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let permit = Arc::clone(&slots).try_acquire_owned().ok();
        let slot = per_client.take(peer.ip(), limits.max_connections_per_client);
        let (Some(permit), Some(slot)) = (permit, slot) else {
            warn!(%peer, "connection limit reached");
            tokio::spawn(refuse_too_many(tcp));
            continue;
        };
        let id = ConnId(relay::NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed));
        let ctx = Arc::clone(&ctx);
        let phase = phase_rx.clone();
        tokio::spawn(
            async move {
                serve_conn(&ctx, tcp, peer, id, phase).await;
                drop((permit, slot));
            }
            .instrument(info_span!("conn", id = %id, %peer)),
        );
    }
    drop(listener);
    let open = limits.max_connections - slots.available_permits();
    info!(open, grace = ?ctx.config.shutdown_grace, "shutting down: draining connections");
    let _ = phase_tx.send(Phase::Draining);
    let all = limits.max_connections as u32;
    if tokio::time::timeout(ctx.config.shutdown_grace, slots.acquire_many(all))
        .await
        .is_err()
    {
        warn!("grace period over: closing the remaining connections");
        let _ = phase_tx.send(Phase::Closing);
        let _ = tokio::time::timeout(Duration::from_secs(5), slots.acquire_many(all)).await;
    }
    info!("shutdown complete");
    Ok(())
}

async fn serve_conn(
    ctx: &Context,
    tcp: TcpStream,
    peer: SocketAddr,
    id: ConnId,
    phase: watch::Receiver<Phase>,
) {
    let est = match tokio::time::timeout(
        ctx.config.limits.startup_timeout,
        startup::run(ctx, tcp, peer),
    )
    .await
    {
        Err(_) => {
            info!("startup timed out");
            return;
        }
        Ok(Err(e)) => {
            info!(error = %e, "connection refused during startup");
            return;
        }
        Ok(Ok(None)) => return,
        Ok(Ok(Some(est))) => est,
    };
    let info = ConnInfo {
        id,
        client_addr: peer,
        user: est.user.clone(),
        target: est.target.config.name.clone(),
        application_name: est.application_name.clone(),
    };
    info!(user = info.user, target = info.target, application_name = info.application_name, "connected");
    let end = relay::run(ctx, est, info, phase).await;
    info!(end = ?end, "disconnected");
}

/// Tells a client over the limits why it is turned away, as PostgreSQL does.
async fn refuse_too_many(mut tcp: TcpStream) {
    let mut first = [0u8; 512];
    // Read what the client sent first (startup or SSLRequest) so the error is its answer.
    let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut first)).await;
    let mut out = Vec::new();
    put_error(&mut out, Severity::Fatal, "53300", "sorry, too many clients already");
    let _ = tcp.write_all(&out).await;
}
