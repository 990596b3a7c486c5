//! An established connection: client frames to the server ([`to_server`]), server frames to
//! the client ([`to_client`]), a statement held for approval ([`hold`]).
//!
//! Each direction reads into one bounded buffer, frames every complete message in it, lets the
//! stages see the ones they care about, and writes the batch before reading again. Nothing is
//! read faster than the other side takes it, so a slow client slows the server (TCP
//! backpressure) and memory stays at the buffer size whatever the result size. A batch that no
//! stage changed is written as the bytes that were read.
//!
//! Only the server-to-client loop writes to the client: the client-to-server loop hands it
//! protocol errors through a channel, so tollgate's own messages never land in the middle of a
//! frame.
//!
//! ## Refusing a statement
//! A refused statement is never forwarded. In its place the server receives a statement that
//! fails to parse and names a marker unique to this connection and refusal
//! (`tollgate_refused_<nonce>_<n>`). The server then does exactly what it does after any failed
//! statement (aborts the transaction block, discards the rest of an extended-protocol batch up
//! to Sync, sends ReadyForQuery with the right status), and the server-to-client loop swaps its
//! syntax error for tollgate's refusal. Responses therefore stay in order however deeply the
//! client pipelines.

mod cap;
mod hold;
mod to_client;
mod to_server;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::PgContext;
use super::catalog::ConnCatalog;
use super::messages::TxStatus;
use super::results;
use super::startup::{Established, READ_CHUNK};
use crate::audit::Recorder;
use crate::config::RecordResults;
use crate::conn::{Control, Lifecycle};
use crate::net::WriteHalf;
use crate::pipeline::ConnInfo;
use to_client::ToClient;
use to_server::ToServer;

/// Why a relay ended.
#[derive(Debug)]
pub enum End {
    /// The client sent Terminate or closed its socket.
    ClientClosed,
    /// The server closed the connection (or it broke); the client was sent FATAL 08006.
    ServerClosed,
    /// Writing to the server failed; the server-to-client loop tells the client.
    ServerWrite(std::io::Error),
    /// A statement ran and the server sent nothing for `upstream_timeout`; the client was
    /// sent FATAL 08006.
    ServerStalled,
    /// A malformed or oversize client frame; the client was sent FATAL 08P01.
    ClientProtocol(String),
    /// A malformed server frame; the client was sent FATAL 08P01.
    ServerProtocol(String),
    /// The daemon is shutting down; the client was sent FATAL 57P01.
    Shutdown,
    /// The audit trail could not record what was to be relayed; the client was sent FATAL
    /// 58030.
    Audit(String),
    Io(std::io::Error),
}

/// Refusals awaiting their server error on one connection, at most.
pub(super) const MAX_PENDING_REFUSALS: usize = 10_000;

/// A refusal waiting for the server's error on its marker statement.
pub(super) struct Pending {
    pub seq: u64,
    /// The ReadyForQuery count after which the marker can no longer produce an error.
    pub unit: u64,
    pub error: Vec<u8>,
}

/// State the two directions share.
pub(super) struct Shared {
    /// Statements sent (Query, Sync, FunctionCall) minus ReadyForQuery seen.
    pub in_flight: AtomicU64,
    /// Batches forwarded to the server: a client still sending (COPY FROM STDIN) is not a
    /// stalled server.
    pub forwarded: AtomicU64,
    /// A statement is held for approval: the server has nothing to answer meanwhile.
    pub holding: AtomicBool,
    pub pending: Mutex<Vec<Pending>>,
    /// `pending.len()`, readable without the lock on the per-message path.
    pub pending_count: AtomicUsize,
    pub marker: String,
    /// What the server will answer, so rows get their column types and formats.
    pub tracker: results::Tracker,
    /// How the client's CancelRequest reaches a statement held for approval.
    pub interrupt: std::sync::Arc<super::cancel::Interrupt>,
    /// The upstream backend's cancel key, for a statement whose result reached its cap.
    pub upstream_key: Option<super::cancel::UpstreamKey>,
}

/// Runs an established connection until either side ends it.
///
/// `control` delivers the daemon's phase changes (and is how the client-to-server loop hands
/// its FATAL errors to the writer); `control_tx` is its sending side.
pub async fn run(
    ctx: &PgContext,
    est: Established,
    info: ConnInfo,
    lifecycle: &Lifecycle,
    control_tx: mpsc::Sender<Control>,
    control: mpsc::Receiver<Control>,
) -> End {
    let Established {
        client,
        server,
        target,
        ..
    } = est;
    let (client_rd, client_wr) = client.io.split();
    let (server_rd, server_wr) = server.io.split();
    let mut nonce = [0u8; 8];
    aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut nonce)
        .expect("system random number generator failed");
    let shared = Shared {
        in_flight: AtomicU64::new(0),
        forwarded: AtomicU64::new(0),
        holding: AtomicBool::new(false),
        pending: Mutex::new(Vec::new()),
        pending_count: AtomicUsize::new(0),
        tracker: results::Tracker::default(),
        interrupt: est.cancel.interrupt(),
        upstream_key: est.cancel.upstream(),
        marker: format!(
            "tollgate_refused_{}_",
            nonce.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ),
    };
    let masker = ctx.masker_for(&info.identity);
    let record = ctx.stages.record.as_ref().map(|r| Record {
        recorder: r,
        full: ctx.record_results(&info.target) == RecordResults::Full,
    });
    let to_server = ToServer {
        ctx,
        info: &info,
        shared: &shared,
        masker: &masker,
        record: record.as_ref(),
        rd: client_rd,
        wr: server_wr,
        control: control_tx,
        inspect: crate::conn::promotion::guard(
            ctx.stages.inspect.connect(&info),
            Arc::clone(&target.promoted),
            crate::policy::classify::SqlDialect::Postgres,
        ),
        early: Vec::new(),
        units: 0,
        refusals: 0,
        copying: false,
        syncs_since_execute: 0,
        portals: results::ClientSide::default(),
        room: Room::default(),
    }
    .run(client.buf);
    // Column rules need it for every result; promotions (a card number found in a column)
    // only when that happens. Its side connection opens at the first lookup.
    let promoted = Arc::clone(&target.promoted);
    let catalog = Some(ConnCatalog::new(
        ctx,
        target,
        &info.identity,
        &info.database,
    ));
    let to_client = ToClient {
        ctx,
        info: &info,
        catalog,
        masker: &masker,
        record: record.as_ref(),
        shared: &shared,
        rd: server_rd,
        wr: client_wr,
        control,
        lifecycle,
        units_done: 0,
        status: TxStatus::Idle,
        rows: results::ServerSide::default(),
        room: Room::default(),
        copy_in: false,
        promoted,
        promoted_here: Default::default(),
        found: Vec::new(),
        binary_copy: false,
        call_result: None,
        capping: cap::Capping::default(),
    }
    .run(server.buf);
    tokio::pin!(to_server, to_client);
    tokio::select! {
        biased;
        end = &mut to_server => match end {
            // The server-to-client loop is sending the client its FATAL error (for a server
            // that went away, once it sees the end of the server's stream).
            End::ClientProtocol(_) | End::ServerWrite(_) => {
                let _ = tokio::time::timeout(Duration::from_secs(5), &mut to_client).await;
                end
            }
            end => end,
        },
        end = &mut to_client => end,
    }
}

/// The record stage of one connection.
pub(super) struct Record<'a> {
    pub recorder: &'a Recorder,
    /// Whether result rows are kept (else counted).
    pub full: bool,
}

/// Why the client-to-server loop ends a connection: the FATAL error the client gets.
pub(super) struct Problem {
    pub sqlstate: &'static str,
    pub message: String,
}

impl Problem {
    fn protocol(e: impl std::fmt::Display) -> Problem {
        Problem {
            sqlstate: "08P01",
            message: format!("invalid frontend message: {e}"),
        }
    }

    fn server(e: impl std::fmt::Display) -> Problem {
        Problem {
            sqlstate: "08P01",
            message: format!("tollgate received an invalid message from the server: {e}"),
        }
    }
}

/// Room a read gets while little arrives: what an idle session keeps per direction.
pub(super) const IDLE_CHUNK: usize = 4 * 1024;

/// How much room the next read of one direction gets. While reads are small and nothing is
/// left over, the buffer is [`IDLE_CHUNK`] (an idle session costs little: docs/performance.md,
/// "Idle sessions"); once a read fills it, reads get [`READ_CHUNK`] (results stream in large
/// reads) until the stream is quiet again.
pub(super) struct Room {
    /// The buffer may hold more than IDLE_CHUNK (the login's buffer, or a stream's).
    big: bool,
    last_read: usize,
}

impl Default for Room {
    fn default() -> Room {
        Room {
            big: true,
            last_read: 0,
        }
    }
}

impl Room {
    pub fn make(&mut self, buf: &mut BytesMut) {
        if self.last_read < IDLE_CHUNK && buf.is_empty() {
            if self.big {
                // Drops the large allocation (a reserve would reclaim it).
                *buf = BytesMut::with_capacity(IDLE_CHUNK);
                self.big = false;
            } else {
                buf.reserve(IDLE_CHUNK);
            }
        } else {
            buf.reserve(READ_CHUNK);
            self.big = true;
        }
    }

    pub fn read(&mut self, n: usize) {
        self.last_read = n;
    }
}

/// After a message larger than a few read chunks, gives the memory back: one large row must
/// not keep a connection's buffer large for the rest of its life.
pub(super) fn shrink(buf: &mut BytesMut) {
    if buf.capacity() > 16 * READ_CHUNK && buf.len() < READ_CHUNK {
        let mut fresh = BytesMut::with_capacity(READ_CHUNK);
        fresh.extend_from_slice(buf);
        *buf = fresh;
    }
}

/// Collects a batch's output: runs of unchanged frames stay in the read buffer until a stage
/// changes a frame, and only then is anything copied.
pub(super) struct Batch {
    out: Option<Vec<u8>>,
    kept_from: usize,
    /// Where the batch starts in the buffer (after a part written early).
    start: usize,
}

impl Batch {
    pub fn new() -> Batch {
        Batch::starting_at(0)
    }

    pub fn starting_at(start: usize) -> Batch {
        Batch {
            out: None,
            kept_from: start,
            start,
        }
    }

    /// Puts `replacement` in place of `buf[start..end]`.
    pub fn replace(&mut self, buf: &[u8], start: usize, end: usize, replacement: &[u8]) {
        let out = self.out.get_or_insert_with(Vec::new);
        out.extend_from_slice(&buf[self.kept_from..start]);
        out.extend_from_slice(replacement);
        self.kept_from = end;
    }

    /// The bytes to write for `buf[..consumed]`.
    pub fn finish<'a>(&'a mut self, buf: &'a [u8], consumed: usize) -> &'a [u8] {
        match &mut self.out {
            None => &buf[self.start..consumed],
            Some(out) => {
                out.extend_from_slice(&buf[self.kept_from..consumed]);
                out
            }
        }
    }
}

pub(super) async fn write_all(wr: &mut WriteHalf, bytes: &[u8]) -> std::io::Result<()> {
    wr.write_all(bytes).await?;
    wr.flush().await
}
