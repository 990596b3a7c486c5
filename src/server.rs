//! Listeners, the accept loop, connection limits and graceful shutdown.
//!
//! [`run`] takes an already bound listener (tests bind port 0) and a shutdown future. When the
//! future completes the listener closes, connections are told to drain (each ends as soon as
//! nothing runs on it), and after the grace period the rest are cut with FATAL 57P01.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tracing::{Instrument, info, info_span, warn};

use crate::config::Protocol;
use crate::pipeline::{ConnId, ConnInfo};
use crate::protocol::pg::messages::{Severity, put_error};
use crate::protocol::pg::{Context, relay, startup};

/// Where the daemon is in its life; connections watch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Running = 0,
    /// No new connections; each ends once idle.
    Draining = 1,
    /// Grace period over: every connection ends now.
    Closing = 2,
}

/// A message to one connection's writer.
pub enum Control {
    /// A FATAL error to send the client before closing (from the client-reading loop).
    Fatal(Vec<u8>),
    /// A message for the client (a NoticeResponse) from the client-reading loop.
    Notice(Vec<u8>),
    /// The daemon entered a new phase.
    Phase(Phase),
}

/// The daemon's phase and a line to every live connection, to wake it when the phase changes.
/// (A channel per connection rather than a shared watch: its receiver is polled on every read
/// and costs no lock.)
#[derive(Default)]
pub struct Lifecycle {
    phase: AtomicU8,
    conns: Mutex<HashMap<ConnId, mpsc::Sender<Control>>>,
}

impl Lifecycle {
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Running,
            1 => Phase::Draining,
            _ => Phase::Closing,
        }
    }

    fn set(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
        let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        for tx in conns.values() {
            // A full channel already holds a wake-up; the phase itself is read from the atomic.
            let _ = tx.try_send(Control::Phase(phase));
        }
    }

    fn register(&self, id: ConnId) -> (mpsc::Sender<Control>, mpsc::Receiver<Control>) {
        let (tx, rx) = mpsc::channel(4);
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx.clone());
        (tx, rx)
    }

    fn unregister(&self, id: ConnId) {
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }
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

/// What every listener of one daemon shares: limits and the connections' lifecycle.
pub struct Server {
    ctx: Arc<Context>,
    slots: Arc<Semaphore>,
    per_client: Arc<PerClient>,
    lifecycle: Arc<Lifecycle>,
    /// Refusals being answered at once ("too many clients").
    refusals: Arc<Semaphore>,
}

impl Server {
    pub fn new(ctx: Arc<Context>) -> Arc<Server> {
        Arc::new(Server {
            slots: Arc::new(Semaphore::new(ctx.config.limits.max_connections)),
            per_client: Arc::new(PerClient::default()),
            lifecycle: Arc::new(Lifecycle::default()),
            refusals: Arc::new(Semaphore::new(64)),
            ctx,
        })
    }

    /// Accepts on `listener` until `stop` completes. Connections are spawned on the runtime
    /// this runs on, so that runtime must keep running until [`Server::drain`] returns.
    pub async fn accept_loop(
        self: &Arc<Self>,
        listener: TcpListener,
        stop: impl Future<Output = ()>,
        protocol: Protocol,
    ) {
        let limits = &self.ctx.config.limits;
        tokio::pin!(stop);
        loop {
            let (tcp, peer) = tokio::select! {
                _ = &mut stop => return,
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
            let permit = Arc::clone(&self.slots).try_acquire_owned().ok();
            let slot = self
                .per_client
                .take(peer.ip(), limits.max_connections_per_client);
            let (Some(permit), Some(slot)) = (permit, slot) else {
                warn!(%peer, "connection limit reached");
                metrics::counter!(crate::metrics::CONNECTIONS, "outcome" => "refused").increment(1);
                // Telling refused clients why is itself bounded; past that they are just closed.
                if let Ok(refusal) = Arc::clone(&self.refusals).try_acquire_owned() {
                    tokio::spawn(async move {
                        match protocol {
                            Protocol::Postgres => refuse_too_many(tcp).await,
                            Protocol::Mysql => refuse_too_many_mysql(tcp).await,
                        }
                        drop(refusal);
                    });
                }
                continue;
            };
            let id = ConnId(relay::NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed));
            let ctx = Arc::clone(&self.ctx);
            let lifecycle = Arc::clone(&self.lifecycle);
            tokio::spawn(
                async move {
                    metrics::gauge!(crate::metrics::CONNECTIONS_OPEN).increment(1.0);
                    match protocol {
                        Protocol::Postgres => serve_conn(&ctx, tcp, peer, id, &lifecycle).await,
                        Protocol::Mysql => {
                            serve_mysql(&ctx, tcp, peer, id, &lifecycle).await;
                        }
                    }
                    metrics::gauge!(crate::metrics::CONNECTIONS_OPEN).decrement(1.0);
                    lifecycle.unregister(id);
                    drop((permit, slot));
                }
                .instrument(info_span!("conn", id = %id, %peer, session = tracing::field::Empty)),
            );
        }
    }

    /// After every accept loop has stopped: lets connections finish within the grace period,
    /// then cuts the rest.
    pub async fn drain(&self) {
        let max = self.ctx.config.limits.max_connections;
        let open = max - self.slots.available_permits();
        let grace = self.ctx.config.shutdown_grace;
        info!(open, ?grace, "shutting down: draining connections");
        self.lifecycle.set(Phase::Draining);
        let all = max as u32;
        if tokio::time::timeout(grace, self.slots.acquire_many(all))
            .await
            .is_err()
        {
            warn!("grace period over: closing the remaining connections");
            self.lifecycle.set(Phase::Closing);
            let _ =
                tokio::time::timeout(Duration::from_secs(5), self.slots.acquire_many(all)).await;
        }
        info!("shutdown complete");
    }
}

/// Serves PostgreSQL clients on `listener` until `shutdown` completes, then drains.
pub async fn run(
    listener: TcpListener,
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    run_both(listener, None, ctx, shutdown).await
}

/// Serves PostgreSQL clients on `pg` and MySQL clients on `mysql` until `shutdown`
/// completes, then drains both.
pub async fn run_both(
    pg: TcpListener,
    mysql: Option<TcpListener>,
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    info!(address = %pg.local_addr()?, "PostgreSQL listener ready");
    let server = Server::new(ctx);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mysql_loop = async {
        if let Some(l) = mysql {
            if let Ok(a) = l.local_addr() {
                info!(address = %a, "MySQL listener ready");
            }
            let mut stop = stop_rx.clone();
            server
                .accept_loop(
                    l,
                    async move {
                        let _ = stop.wait_for(|s| *s).await;
                    },
                    Protocol::Mysql,
                )
                .await;
        }
    };
    let pg_loop = async {
        server.accept_loop(pg, shutdown, Protocol::Postgres).await;
        let _ = stop_tx.send(true);
    };
    tokio::join!(pg_loop, mysql_loop);
    server.drain().await;
    Ok(())
}

/// Binds `workers` listening sockets to one address with SO_REUSEPORT, so the kernel spreads
/// connections over them; each is served by its own single-threaded runtime.
pub fn bind_reuseport(
    address: SocketAddr,
    workers: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Socket, Type};
    (0..workers.max(1))
        .map(|_| {
            let socket = Socket::new(Domain::for_address(address), Type::STREAM, None)?;
            socket.set_reuse_address(true)?;
            socket.set_reuse_port(true)?;
            socket.set_nonblocking(true)?;
            socket.bind(&address.into())?;
            socket.listen(1024)?;
            Ok(socket.into())
        })
        .collect()
}

/// Runs the daemon thread-per-core: one single-threaded runtime per listener, no work
/// stealing and no wake-ups across threads on the data path. Returns after `shutdown`
/// completes and the connections have drained.
pub fn run_threads(
    listeners: Vec<std::net::TcpListener>,
    mysql_listeners: Vec<std::net::TcpListener>,
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let server = Server::new(ctx);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let mut listeners = listeners.into_iter();
    let first = listeners
        .next()
        .ok_or_else(|| std::io::Error::other("no listener"))?;
    let mut mysql_listeners = mysql_listeners.into_iter();
    let first_mysql = mysql_listeners.next();
    let mut threads = Vec::new();
    for (n, listener) in listeners.enumerate() {
        let server = Arc::clone(&server);
        let rt = runtime()?;
        let mut stop = stop_rx.clone();
        let mut done = done_rx.clone();
        let mysql = mysql_listeners.next();
        let mut mysql_stop = stop_rx.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("tollgate-{}", n + 1))
                .spawn(move || {
                    rt.block_on(async move {
                        let mysql_loop = async {
                            if let Some(Ok(l)) = mysql.map(TcpListener::from_std) {
                                server
                                    .accept_loop(
                                        l,
                                        async {
                                            let _ = mysql_stop.wait_for(|s| *s).await;
                                        },
                                        Protocol::Mysql,
                                    )
                                    .await
                            }
                        };
                        let pg_loop = async {
                            match TcpListener::from_std(listener) {
                                Ok(listener) => {
                                    server
                                        .accept_loop(
                                            listener,
                                            async {
                                                let _ = stop.wait_for(|s| *s).await;
                                            },
                                            Protocol::Postgres,
                                        )
                                        .await
                                }
                                Err(e) => warn!(error = %e, "listener not usable"),
                            }
                        };
                        tokio::join!(pg_loop, mysql_loop);
                        // Keep serving this runtime's connections until the drain is over.
                        let _ = done.wait_for(|d| *d).await;
                    })
                })?,
        );
    }
    let workers = threads.len() + 1;
    runtime()?.block_on(async move {
        let listener = TcpListener::from_std(first)?;
        info!(address = %listener.local_addr()?, workers, "PostgreSQL listener ready");
        let mysql = first_mysql.map(TcpListener::from_std).transpose()?;
        if let Some(l) = &mysql {
            info!(address = %l.local_addr()?, workers, "MySQL listener ready");
        }
        let mut mysql_stop = stop_rx.clone();
        let mysql_loop = async {
            if let Some(l) = mysql {
                server
                    .accept_loop(
                        l,
                        async {
                            let _ = mysql_stop.wait_for(|s| *s).await;
                        },
                        Protocol::Mysql,
                    )
                    .await
            }
        };
        let pg_loop = async {
            server
                .accept_loop(listener, shutdown, Protocol::Postgres)
                .await;
            let _ = stop_tx.send(true);
        };
        tokio::join!(pg_loop, mysql_loop);
        server.drain().await;
        let _ = done_tx.send(true);
        Ok::<(), std::io::Error>(())
    })?;
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// What either protocol's login settled, for the session records.
struct Session<'a> {
    identity: &'a crate::auth::Identity,
    target: &'a crate::config::Target,
    user: &'a str,
    database: &'a str,
    application_name: Option<&'a str>,
    tls: bool,
    protocol: Protocol,
}

/// The connection's identity for the stages, its audit `Who` (client-chosen names masked like
/// any other text), and the "connected" log line; later log lines name the session.
fn connected(id: ConnId, peer: SocketAddr, s: &Session<'_>) -> ConnInfo {
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

/// Records the login and the session's start; `Err` when the store cannot take them (the
/// session must not start: PCI DSS 10.7).
fn record_start(ctx: &Context, info: &ConnInfo, s: &Session<'_>) -> Result<(), String> {
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
    recorder
        .record(auth)
        .and_then(|()| recorder.record(start))
        .map_err(|e| {
            warn!(error = %e, "session refused: the audit store cannot record it");
            e.to_string()
        })
}

/// Records the session's end with the relay's reason.
async fn record_end(ctx: &Context, who: Arc<crate::audit::Who>, end: String) {
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

/// How long past `startup_timeout` a login may take to tell its client it ran out of time.
const STARTUP_BACKSTOP: Duration = Duration::from_secs(2);

async fn serve_conn(
    ctx: &Context,
    tcp: TcpStream,
    peer: SocketAddr,
    id: ConnId,
    lifecycle: &Lifecycle,
) {
    let (control_tx, control) = lifecycle.register(id);
    // startup::run keeps `startup_timeout` itself, so it can tell the client; this is a backstop.
    let est = match tokio::time::timeout(
        ctx.config.limits.startup_timeout + STARTUP_BACKSTOP,
        startup::run(ctx, tcp, peer),
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
    metrics::counter!(crate::metrics::CONNECTIONS, "outcome" => "accepted").increment(1);
    let session = Session {
        identity: &est.identity,
        target: &est.target.config,
        user: &est.user,
        database: &est.database,
        application_name: est.application_name.as_deref(),
        tls: est.client_tls,
        protocol: Protocol::Postgres,
    };
    let info = connected(id, peer, &session);
    if record_start(ctx, &info, &session).is_err() {
        let mut client = est.client;
        let mut out = Vec::new();
        put_error(
            &mut out,
            Severity::Fatal,
            "58030",
            "tollgate: the session cannot be recorded by the audit store; retry shortly",
        );
        let _ = client.io.write_all(&out).await;
        return;
    }
    let who = info.who.clone();
    let end = relay::run(ctx, est, info, lifecycle, control_tx, control).await;
    record_end(ctx, who, format!("{end:?}")).await;
}

/// A MySQL connection's life: login, session records, relay.
async fn serve_mysql(
    ctx: &Context,
    tcp: TcpStream,
    peer: SocketAddr,
    id: ConnId,
    lifecycle: &Lifecycle,
) {
    use crate::protocol::mysql::{handshake, relay as my_relay, wire};
    let (_control_tx, control) = lifecycle.register(id);
    // handshake::run keeps `startup_timeout` itself, so it can tell the client; this is a backstop.
    let est = match tokio::time::timeout(
        ctx.config.limits.startup_timeout + STARTUP_BACKSTOP,
        handshake::run(ctx, tcp, peer, id.0 as u32),
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
    let session = Session {
        identity: &est.identity,
        target: &est.target.config,
        user: &est.user,
        database: &est.database,
        application_name: est.application_name.as_deref(),
        tls: est.client_tls,
        protocol: Protocol::Mysql,
    };
    let info = connected(id, peer, &session);
    let recorded = record_start(ctx, &info, &session);
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
    let end = my_relay::run(ctx, est, info, lifecycle, control).await;
    record_end(ctx, who, format!("{end:?}")).await;
}

/// Tells a MySQL client over the limits why it is turned away (ERR 1040 in place of the
/// greeting, as MySQL does).
async fn refuse_too_many_mysql(mut tcp: TcpStream) {
    let mut out = Vec::new();
    crate::protocol::mysql::packet::put(
        &mut out,
        0,
        &crate::protocol::mysql::wire::err(1040, "08004", "Too many connections"),
    );
    let _ = tcp.write_all(&out).await;
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
