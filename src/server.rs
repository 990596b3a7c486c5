//! Listeners, the accept loop, connection limits and graceful shutdown.
//!
//! [`run_both`] takes already bound listeners (tests bind port 0) and a shutdown future. Each
//! accepted connection gets a [`crate::conn::Ticket`] from the daemon's [`Admission`]: a place
//! among the unauthenticated, which the wire turns into a session slot once its client has
//! authenticated, and which the accept loop cuts if it is dropped to make room first. When the
//! shutdown future completes the listeners close, unauthenticated connections are dropped,
//! sessions are told to drain (each ends as soon as nothing runs on it), and after the grace
//! period the rest are cut with FATAL 57P01.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::conn::lifecycle::next_conn_id;
use crate::conn::{Admission, Context, Lifecycle, Listener, Phase};

/// What every listener of one daemon shares: limits and the connections' lifecycle.
pub struct Server {
    config: Arc<crate::config::Config>,
    admission: Arc<Admission>,
    lifecycle: Arc<Lifecycle>,
    /// Refusals being answered at once ("too many clients").
    refusals: Arc<Semaphore>,
}

impl Server {
    pub fn new(ctx: &Context) -> Arc<Server> {
        Arc::new(Server {
            admission: Admission::new(&ctx.config.limits),
            lifecycle: Arc::new(Lifecycle::default()),
            refusals: Arc::new(Semaphore::new(64)),
            config: Arc::clone(&ctx.config),
        })
    }

    /// Accepts on `listener` until `stop` completes. Connections are spawned on the runtime
    /// this runs on, so that runtime must keep running until [`Server::drain`] returns.
    pub async fn accept_loop(
        self: &Arc<Self>,
        listener: TcpListener,
        stop: impl Future<Output = ()>,
        wire: Arc<dyn Listener>,
    ) {
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
            let ticket = match self.admission.enter(peer.ip()) {
                Ok(ticket) => ticket,
                Err(refused) => {
                    warn!(%peer, %refused, "connection limit reached");
                    metrics::counter!(crate::metrics::CONNECTIONS, "outcome" => "refused")
                        .increment(1);
                    // Telling refused clients why is itself bounded; past that they are just
                    // closed.
                    if let Ok(refusal) = Arc::clone(&self.refusals).try_acquire_owned() {
                        let refuse = wire.refuse_too_many(tcp);
                        tokio::spawn(async move {
                            refuse.await;
                            drop(refusal);
                        });
                    }
                    continue;
                }
            };
            let id = next_conn_id();
            let wire = Arc::clone(&wire);
            let lifecycle = Arc::clone(&self.lifecycle);
            let evicted = ticket.evicted();
            tokio::spawn(
                async move {
                    metrics::gauge!(crate::metrics::CONNECTIONS_OPEN).increment(1.0);
                    tokio::select! {
                        _ = wire.serve(tcp, peer, id, &lifecycle, ticket) => {}
                        _ = evicted => {
                            // Debug only: a flood must not flood the log too (the metric
                            // counts them).
                            debug!("unauthenticated connection dropped to make room for newer ones");
                        }
                    }
                    metrics::gauge!(crate::metrics::CONNECTIONS_OPEN).decrement(1.0);
                    lifecycle.unregister(id);
                }
                .instrument(info_span!("conn", id = %id, %peer, session = tracing::field::Empty)),
            );
        }
    }

    /// After every accept loop has stopped: drops the connections still unauthenticated, lets
    /// the sessions finish within the grace period, then cuts the rest.
    pub async fn drain(&self) {
        let open = self.admission.sessions_open();
        let grace = self.config.shutdown_grace;
        info!(open, ?grace, "shutting down: draining connections");
        self.lifecycle.set(Phase::Draining);
        self.admission.close();
        if !self.admission.all_sessions_closed(grace).await {
            warn!("grace period over: closing the remaining connections");
            self.lifecycle.set(Phase::Closing);
            self.admission
                .all_sessions_closed(Duration::from_secs(5))
                .await;
        }
        info!("shutdown complete");
    }
}
/// The wires a daemon serves, each with the listening sockets it accepts on.
pub struct Wires {
    pub postgres: Arc<dyn Listener>,
    pub mysql: Arc<dyn Listener>,
}

/// Serves PostgreSQL clients on `pg` and MySQL clients on `mysql` until `shutdown`
/// completes, then drains both.
pub async fn run_both(
    pg: TcpListener,
    mysql: Option<TcpListener>,
    wires: Wires,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    info!(address = %pg.local_addr()?, "PostgreSQL listener ready");
    let server = Server::new(wires.postgres.context());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mysql_loop = async {
        if let Some(l) = mysql {
            if let Ok(a) = l.local_addr() {
                info!(address = %a, "MySQL listener ready");
            }
            server
                .accept_loop(l, stopped(stop_rx.clone()), Arc::clone(&wires.mysql))
                .await;
        }
    };
    let pg_loop = async {
        server
            .accept_loop(pg, shutdown, Arc::clone(&wires.postgres))
            .await;
        let _ = stop_tx.send(true);
    };
    tokio::join!(pg_loop, mysql_loop);
    server.drain().await;
    Ok(())
}

/// Completes once `stop` turns true.
async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
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

/// The stack of each worker thread (bytes).
const WORKER_STACK: usize = 16 << 20;

/// Runs the daemon thread-per-core: one single-threaded runtime per listener, no work
/// stealing and no wake-ups across threads on the data path. Returns after `shutdown`
/// completes and the connections have drained.
pub fn run_threads(
    listeners: Vec<std::net::TcpListener>,
    mysql_listeners: Vec<std::net::TcpListener>,
    wires: Wires,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let server = Server::new(wires.postgres.context());
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
        let stop = stop_rx.clone();
        let done = done_rx.clone();
        let mysql = mysql_listeners.next();
        let (pg_wire, my_wire) = (Arc::clone(&wires.postgres), Arc::clone(&wires.mysql));
        threads.push(
            std::thread::Builder::new()
                .name(format!("tollgate-{}", n + 1))
                // The parser bounds its own recursion by the stack it finds; a large stack is
                // the second line (the main thread, which serves the first listener, has 8 MiB).
                .stack_size(WORKER_STACK)
                .spawn(move || {
                    rt.block_on(async move {
                        let mysql_loop = async {
                            if let Some(Ok(l)) = mysql.map(TcpListener::from_std) {
                                server.accept_loop(l, stopped(stop.clone()), my_wire).await
                            }
                        };
                        let pg_loop = async {
                            match TcpListener::from_std(listener) {
                                Ok(listener) => {
                                    server
                                        .accept_loop(listener, stopped(stop.clone()), pg_wire)
                                        .await
                                }
                                Err(e) => warn!(error = %e, "listener not usable"),
                            }
                        };
                        tokio::join!(pg_loop, mysql_loop);
                        // Keep serving this runtime's connections until the drain is over.
                        stopped(done).await;
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
        let mysql_loop = async {
            if let Some(l) = mysql {
                server
                    .accept_loop(l, stopped(stop_rx.clone()), Arc::clone(&wires.mysql))
                    .await
            }
        };
        let pg_loop = async {
            server
                .accept_loop(listener, shutdown, Arc::clone(&wires.postgres))
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
