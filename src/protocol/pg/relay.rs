//! An established connection: client frames to the server, server frames to the client.
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

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::Context;
use super::catalog::ConnCatalog;
use super::frame::{self, Message, put_message};
use super::messages::{self, Backend, Frontend, Severity, TxStatus, put_error};
use super::recording::{self, ServerBatch};
use super::results::{self, Expect};
use super::startup::{Established, PINNED_PARAMETERS, READ_CHUNK};
use super::transform;
use crate::audit::{self, Event, Outcome, Recorder};
use crate::config::RecordResults;
use crate::mask::Masker;
use crate::net::{ReadHalf, WriteHalf};
use crate::pipeline::{ConnInfo, Origin, Ruling, Statement, Verdict};
use crate::server::{Control, Lifecycle, Phase};

/// Why a relay ended.
#[derive(Debug)]
pub enum End {
    /// The client sent Terminate or closed its socket.
    ClientClosed,
    /// The server closed the connection.
    ServerClosed,
    /// A malformed or oversize client frame; the client was sent FATAL 08P01.
    ClientProtocol(String),
    /// A malformed server frame; the client was sent FATAL 08P01.
    ServerProtocol(String),
    /// The daemon is shutting down; the client was sent FATAL 57P01.
    Shutdown,
    Io(std::io::Error),
}

/// How long a statement waits for room in a full audit queue before it is refused.
const RECORD_WAIT: Duration = Duration::from_secs(2);

/// Refusals awaiting their server error on one connection, at most.
const MAX_PENDING_REFUSALS: usize = 10_000;

/// A refusal waiting for the server's error on its marker statement.
struct Pending {
    seq: u64,
    /// The ReadyForQuery count after which the marker can no longer produce an error.
    unit: u64,
    error: Vec<u8>,
}

/// State the two directions share.
struct Shared {
    /// Statements sent (Query, Sync, FunctionCall) minus ReadyForQuery seen.
    in_flight: AtomicU64,
    pending: Mutex<Vec<Pending>>,
    /// `pending.len()`, readable without the lock on the per-message path.
    pending_count: AtomicUsize,
    marker: String,
    /// What the server will answer, so rows get their column types and formats.
    tracker: results::Tracker,
    /// How the client's CancelRequest reaches a statement held for approval.
    interrupt: std::sync::Arc<super::cancel::Interrupt>,
}

/// Runs an established connection until either side ends it.
///
/// `control` delivers the daemon's phase changes (and is how the client-to-server loop hands
/// its FATAL errors to the writer); `control_tx` is its sending side.
pub async fn run(
    ctx: &Context,
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
        pending: Mutex::new(Vec::new()),
        pending_count: AtomicUsize::new(0),
        tracker: results::Tracker::default(),
        interrupt: est.cancel.interrupt(),
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
    let upstream = client_to_server(
        ctx,
        &info,
        &shared,
        &masker,
        record.as_ref(),
        client_rd,
        client.buf,
        server_wr,
        control_tx,
    );
    let catalog = (!ctx.column_rules.is_empty())
        .then(|| ConnCatalog::new(ctx, target, &info.identity, &info.database));
    let downstream = server_to_client(
        ctx,
        &info,
        catalog,
        &masker,
        record.as_ref(),
        &shared,
        server_rd,
        server.buf,
        client_wr,
        control,
        lifecycle,
    );
    tokio::pin!(upstream, downstream);
    tokio::select! {
        biased;
        end = &mut upstream => match end {
            // The server-to-client loop is sending the client its FATAL error.
            End::ClientProtocol(_) => {
                let _ = tokio::time::timeout(Duration::from_secs(5), &mut downstream).await;
                end
            }
            end => end,
        },
        end = &mut downstream => end,
    }
}

/// The record stage of one connection.
struct Record<'a> {
    recorder: &'a Recorder,
    /// Whether result rows are kept (else counted).
    full: bool,
}

/// The `statement` event: the masked text, how it came, and the ruling.
/// Counts a ruling and records the statement with it; what cannot be recorded is not run
/// (PCI DSS 10.7): the verdict becomes a 58030 refusal. Shared by both protocols' relays.
pub(crate) async fn settle(
    recorder: Option<&audit::Recorder>,
    info: &ConnInfo,
    statement: &Statement<'_>,
    ruling: Ruling,
    masker: &Masker,
) -> Verdict {
    metrics::counter!(
        crate::metrics::STATEMENTS,
        "decision" => if ruling.verdict == Verdict::Forward { ruling.action } else if ruling.hold.is_some() { "require_approval" } else { "deny" },
        "rule" => ruling.rule.clone().unwrap_or_default()
    )
    .increment(1);
    let Some(recorder) = recorder else {
        return ruling.verdict;
    };
    match recorder
        .record_within(
            statement_event(info, statement, &ruling, masker),
            RECORD_WAIT,
        )
        .await
    {
        Ok(()) => ruling.verdict,
        Err(e) => {
            metrics::counter!(crate::metrics::STATEMENTS, "decision" => "refused_audit", "rule" => "").increment(1);
            Verdict::Refuse {
                sqlstate: "58030".into(),
                message: format!(
                    "tollgate: statement refused because the audit trail cannot record it ({e}); retry shortly"
                ),
            }
        }
    }
}

pub(crate) fn statement_event(
    info: &ConnInfo,
    statement: &Statement<'_>,
    ruling: &Ruling,
    masker: &Masker,
) -> Event {
    let (origin, name, oid) = match statement.origin {
        Origin::Simple => ("simple", None, None),
        Origin::Prepare { name } => ("prepare", Some(name), None),
        Origin::FunctionCall { oid } => ("function_call", None, Some(oid)),
    };
    let sql = crate::mask::redact_secrets(&String::from_utf8_lossy(
        &masker.mask(statement.sql.as_bytes()),
    ));
    let mut detail = serde_json::json!({
        "sql": sql,
        "origin": origin,
        "decision": {
            "action": ruling.action,
            "decided": ruling.decided,
            "rule": ruling.rule,
            "reason": crate::mask::for_log(&ruling.reason),
            "dry_run": ruling.action != ruling.decided,
        },
        "kinds": ruling.kinds,
    });
    if let Some(name) = name {
        detail["name"] = serde_json::Value::String(crate::mask::for_log(name));
    }
    if let Some(oid) = oid {
        detail["oid"] = oid.into();
    }
    let outcome = match &ruling.verdict {
        Verdict::Forward => Outcome::Success,
        Verdict::Refuse { sqlstate, message } => {
            detail["sqlstate"] = sqlstate.as_str().into();
            detail["message"] = crate::mask::for_log(message).into();
            Outcome::Refused
        }
    };
    let mut event = Event::new(audit::kind::STATEMENT, outcome, info.who.clone(), detail);
    event.tables = ruling.tables.clone();
    event
}

/// What holding a statement needs of the client-to-server loop.
struct Held<'a, 'b> {
    /// The batch's client frames so far, recorded before its first part is forwarded.
    frames: &'a mut Vec<serde_json::Value>,
    recorder: Option<&'a Recorder>,
    batch: &'a mut Batch,
    buf: &'a [u8],
    /// Where the held message starts in `buf`.
    pos: usize,
    wr: &'a mut WriteHalf,
    rd: &'a mut ReadHalf,
    early: &'a mut Vec<u8>,
    control: &'b mpsc::Sender<Control>,
    interrupt: &'a super::cancel::Interrupt,
}

/// Client bytes buffered at most while a statement is held; beyond it the client is no
/// longer read (so its disconnect is noticed only at the decision).
const MAX_EARLY: usize = 1 << 20;

/// Holds a statement until an approver decides: what came before it is forwarded, the client
/// is told (NoticeResponse) and the connection waits, its transaction open. Returns the
/// verdict for the statement and a note for the record; ends the connection if the client
/// leaves meanwhile (the request is then cancelled). The client's CancelRequest (psql's
/// Ctrl-C) withdraws the request and ends the statement with 57014, as a cancelled query ends.
async fn hold_statement(
    info: &ConnInfo,
    approvals: &std::sync::Arc<crate::approval::Approvals>,
    statement: &Statement<'_>,
    ruling: &Ruling,
    hold: &crate::pipeline::Hold,
    masker: &Masker,
    held: &mut Held<'_, '_>,
) -> Result<(Verdict, String), End> {
    let refuse = |message: String| Verdict::Refuse {
        sqlstate: "42501".into(),
        message,
    };
    let fingerprint = approval_fingerprint(
        info,
        statement,
        ruling,
        hold,
        crate::policy::classify::SqlDialect::Postgres,
    );
    if let Some((id, by)) = approvals
        .window(&info.identity, &info.target, &fingerprint)
        .await
    {
        return Ok((
            Verdict::Forward,
            format!("approved by {by} within the window of approval {id}"),
        ));
    }
    // From here a CancelRequest ends this statement rather than going to the server.
    let (_holding, cancelled) = held.interrupt.hold();
    tokio::pin!(cancelled);
    let sql = crate::mask::redact_secrets(&String::from_utf8_lossy(
        &masker.mask(statement.sql.as_bytes()),
    ));
    let mut ticket = match approvals
        .submit(
            &info.identity,
            info.who.clone(),
            &info.target,
            &info.database,
            sql,
            fingerprint,
            ruling.rule.clone(),
            ruling.reason.clone(),
            hold.group.clone(),
            hold.timeout,
        )
        .await
    {
        Ok(t) => t,
        Err(e) => {
            return Ok((
                refuse(format!("tollgate: statement not held for approval: {e}")),
                e.to_string(),
            ));
        }
    };
    // Earlier statements of the pipeline run now (their frames recorded first); later ones
    // wait behind this one.
    if let Some(recorder) = held.recorder
        && held.frames.iter().any(|f| f["t"] != "Q")
    {
        let event = Event::new(
            audit::kind::CLIENT_FRAMES,
            Outcome::Info,
            info.who.clone(),
            serde_json::json!({ "frames": std::mem::take(held.frames) }),
        );
        if recorder.record_wait(event).await.is_err() {
            return Err(End::ClientProtocol("the audit writer stopped".into()));
        }
    }
    let before = held.batch.finish(held.buf, held.pos);
    if !before.is_empty()
        && let Err(e) = write_all(held.wr, before).await
    {
        return Err(End::Io(e));
    }
    *held.batch = Batch::starting_at(held.pos);
    let mut notice = Vec::new();
    messages::put_notice(&mut notice, "01000", &approvals.notice(&ticket.request));
    let _ = held.control.send(Control::Notice(notice)).await;
    info!(conn = %info.id, approval = %ticket.request.id, group = hold.group, "statement held for approval");
    let mut scratch = [0u8; 8192];
    let outcome = loop {
        let reading = held.early.len() < MAX_EARLY;
        tokio::select! {
            outcome = ticket.outcome() => break outcome,
            () = &mut cancelled => {
                let id = ticket.request.id.clone();
                info!(conn = %info.id, approval = %id, "client cancelled its held statement");
                let note = if ticket.withdraw("the client cancelled the statement (CancelRequest)") {
                    format!("approval {id} withdrawn: the client cancelled the statement")
                } else {
                    format!("approval {id} was decided as the client cancelled the statement; not run")
                };
                return Ok((
                    Verdict::Refuse {
                        sqlstate: "57014".into(),
                        message: format!(
                            "canceling statement due to user request (tollgate: approval {id} is withdrawn; the statement was not run)"
                        ),
                    },
                    note,
                ));
            }
            read = held.rd.read(&mut scratch), if reading => match read {
                Ok(0) | Err(_) => {
                    info!(conn = %info.id, approval = %ticket.request.id, "client left while its statement was held");
                    drop(ticket);
                    return Err(End::ClientClosed);
                }
                Ok(n) => held.early.extend_from_slice(&scratch[..n]),
            },
        }
    };
    Ok(decided(info, &ticket.request.id, outcome, hold))
}

/// The key of an approval window: the same statement shape, on the same database, under the
/// same rule and approver group. Text that cannot be tokenised gets no window (and its text,
/// which may hold anything, is never kept as a key).
pub(crate) fn approval_fingerprint(
    info: &ConnInfo,
    statement: &Statement<'_>,
    ruling: &Ruling,
    hold: &crate::pipeline::Hold,
    dialect: crate::policy::classify::SqlDialect,
) -> String {
    let shape = crate::policy::classify::fingerprint(statement.sql, dialect)
        .unwrap_or_else(|| format!("unmatchable:{}", crate::audit::random_letters(24)));
    format!(
        "{}\u{1f}{}\u{1f}{}\u{1f}{shape}",
        info.database,
        ruling.rule.as_deref().unwrap_or(""),
        hold.group
    )
}

/// What an approval's outcome does to the held statement, and the note the trail keeps.
pub(crate) fn decided(
    info: &ConnInfo,
    id: &crate::approval::ApprovalId,
    outcome: crate::approval::Outcome,
    hold: &crate::pipeline::Hold,
) -> (Verdict, String) {
    use crate::approval::Outcome as Decided;
    let refuse = |message: String| Verdict::Refuse {
        sqlstate: "42501".into(),
        message,
    };
    match outcome {
        Decided::Approved { by, .. } if info.identity.expired(SystemTime::now()) => (
            refuse(format!(
                "tollgate: approval {id} was granted by {by} but the agent token expired meanwhile; reconnect and retry"
            )),
            format!("approval {id} granted by {by}; token expired"),
        ),
        Decided::Approved { by, window } => (
            Verdict::Forward,
            match window {
                Some(w) => format!(
                    "approval {id} granted by {by} for {}",
                    humantime::format_duration(w)
                ),
                None => format!("approval {id} granted by {by}"),
            },
        ),
        Decided::Denied { by, reason } => (
            refuse(format!(
                "tollgate: approval {id} denied by {by}: {}",
                crate::mask::for_log(&reason)
            )),
            format!("approval {id} denied by {by}"),
        ),
        Decided::TimedOut => (
            refuse(format!(
                "tollgate: approval {id} timed out after {}; the statement was not run",
                humantime::format_duration(hold.timeout)
            )),
            format!("approval {id} timed out"),
        ),
        Decided::Cancelled => (
            refuse(format!("tollgate: approval {id} was cancelled")),
            format!("approval {id} cancelled"),
        ),
    }
}

/// Why the client-to-server loop ends a connection: the FATAL error the client gets.
struct Problem {
    sqlstate: &'static str,
    message: String,
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

/// After a message larger than a few read chunks, gives the memory back: one large row must
/// not keep a connection's buffer large for the rest of its life.
fn shrink(buf: &mut BytesMut) {
    if buf.capacity() > 16 * READ_CHUNK && buf.len() < READ_CHUNK {
        let mut fresh = BytesMut::with_capacity(READ_CHUNK);
        fresh.extend_from_slice(buf);
        *buf = fresh;
    }
}

/// Collects a batch's output: runs of unchanged frames stay in the read buffer until a stage
/// changes a frame, and only then is anything copied.
struct Batch {
    out: Option<Vec<u8>>,
    kept_from: usize,
    /// Where the batch starts in the buffer (after a part written early).
    start: usize,
}

impl Batch {
    fn new() -> Batch {
        Batch::starting_at(0)
    }

    fn starting_at(start: usize) -> Batch {
        Batch {
            out: None,
            kept_from: start,
            start,
        }
    }

    /// Puts `replacement` in place of `buf[start..end]`.
    fn replace(&mut self, buf: &[u8], start: usize, end: usize, replacement: &[u8]) {
        let out = self.out.get_or_insert_with(Vec::new);
        out.extend_from_slice(&buf[self.kept_from..start]);
        out.extend_from_slice(replacement);
        self.kept_from = end;
    }

    /// The bytes to write for `buf[..consumed]`.
    fn finish<'a>(&'a mut self, buf: &'a [u8], consumed: usize) -> &'a [u8] {
        match &mut self.out {
            None => &buf[self.start..consumed],
            Some(out) => {
                out.extend_from_slice(&buf[self.kept_from..consumed]);
                out
            }
        }
    }
}

#[allow(clippy::too_many_arguments)] // the loop's whole context, each piece used on its own
async fn client_to_server(
    ctx: &Context,
    info: &ConnInfo,
    shared: &Shared,
    masker: &Masker,
    record: Option<&Record<'_>>,
    mut rd: ReadHalf,
    mut buf: BytesMut,
    mut wr: WriteHalf,
    control: mpsc::Sender<Control>,
) -> End {
    let max = ctx.config.limits.max_client_frame;
    let mut inspect = ctx.stages.inspect.connect(info);
    // Client bytes read while a statement was held, to be framed after the current batch.
    let mut early: Vec<u8> = Vec::new();
    // ReadyForQuery messages the server will have sent once it has answered what we forwarded.
    let mut units: u64 = 0;
    let mut seq: u64 = 0;
    // Whether the client is sending COPY data, and the Syncs it sent since its last Execute.
    let mut copying = false;
    let mut syncs_since_execute: u64 = 0;
    let mut portals = results::ClientSide::default();
    loop {
        let mut batch = Batch::new();
        let mut frames: Vec<serde_json::Value> = Vec::new();
        let mut pos = 0;
        let mut terminate = false;
        let problem = loop {
            let n = match frame::message_len(&buf[pos..], max) {
                Ok(Some(n)) => n,
                Ok(None) => break None,
                Err(e) => break Some(Problem::protocol(e)),
            };
            let m = Message::from_frame(&buf[pos..pos + n]);
            let msg = match messages::decode_frontend(m.tag, m.body) {
                Ok(msg) => msg,
                Err(e) => break Some(Problem::protocol(e)),
            };
            let statement = match msg {
                Frontend::Query { sql } => Some(Statement {
                    sql,
                    origin: Origin::Simple,
                }),
                Frontend::Parse { statement, sql, .. } => Some(Statement {
                    sql,
                    origin: Origin::Prepare { name: statement },
                }),
                Frontend::FunctionCall { function_oid, .. } => Some(Statement {
                    sql: "",
                    origin: Origin::FunctionCall { oid: function_oid },
                }),
                Frontend::Password(_) => {
                    break Some(Problem::protocol("unexpected password message"));
                }
                Frontend::Terminate => {
                    terminate = true;
                    None
                }
                _ => None,
            };
            // The token's expiry holds for the whole connection: checked at every message, so
            // a statement prepared before expiry cannot be executed after it.
            if !terminate && info.identity.expired(SystemTime::now()) {
                break Some(Problem {
                    sqlstate: "28000",
                    message: "tollgate: the agent token has expired; reconnect with a fresh token"
                        .into(),
                });
            }
            // Count what will produce a ReadyForQuery. The server ignores a Sync that arrives
            // during COPY FROM STDIN (a client may send Execute, Sync, then the data), so once
            // copy data shows up, the Syncs sent since the Execute are taken back.
            match &msg {
                Frontend::Query { .. } | Frontend::FunctionCall { .. } => {
                    units += 1;
                    syncs_since_execute = 0;
                    shared.in_flight.fetch_add(1, Ordering::AcqRel);
                    shared.tracker.push(Expect::Query);
                }
                Frontend::Bind {
                    portal,
                    statement,
                    result_formats,
                    ..
                } => portals.bind(portal, statement, result_formats.iter()),
                Frontend::Describe { target, name } => shared.tracker.push(match target {
                    messages::Target::Statement => Expect::DescribeStatement((*name).into()),
                    messages::Target::Portal => Expect::DescribePortal((*name).into()),
                }),
                Frontend::Close {
                    target: messages::Target::Portal,
                    name,
                } => portals.close_portal(name),
                Frontend::Execute { portal, .. } => {
                    syncs_since_execute = 0;
                    shared.tracker.push(portals.execute(portal));
                }
                Frontend::Sync if !copying => {
                    units += 1;
                    syncs_since_execute += 1;
                    shared.in_flight.fetch_add(1, Ordering::AcqRel);
                    shared.tracker.push(Expect::Sync);
                }
                Frontend::CopyData(_) | Frontend::CopyDone | Frontend::CopyFail { .. } => {
                    if !copying {
                        copying = true;
                        units -= syncs_since_execute.min(units);
                        shared.tracker.retract_syncs(syncs_since_execute);
                        let _ = shared.in_flight.fetch_update(
                            Ordering::AcqRel,
                            Ordering::Acquire,
                            |v| Some(v.saturating_sub(syncs_since_execute)),
                        );
                        syncs_since_execute = 0;
                    }
                    if !matches!(&msg, Frontend::CopyData(_)) {
                        copying = false;
                    }
                }
                _ => {}
            }
            if let Some(record) = record
                && let Some(frame) = recording::client_frame(&msg, masker, record.full)
            {
                frames.push(frame);
            }
            let verdict = match &statement {
                None => None,
                Some(statement) => {
                    let mut ruling = inspect.inspect(info, statement);
                    if let (Some(hold), Some(approvals)) =
                        (ruling.hold.clone(), ctx.stages.approvals.as_ref())
                    {
                        let mut held = Held {
                            frames: &mut frames,
                            recorder: record.map(|r| r.recorder),
                            batch: &mut batch,
                            buf: &buf,
                            pos,
                            wr: &mut wr,
                            rd: &mut rd,
                            early: &mut early,
                            control: &control,
                            interrupt: &shared.interrupt,
                        };
                        match hold_statement(
                            info, approvals, statement, &ruling, &hold, masker, &mut held,
                        )
                        .await
                        {
                            Ok((verdict, note)) => {
                                ruling.verdict = verdict;
                                ruling.reason = note;
                            }
                            Err(end) => return end,
                        }
                    }
                    Some(settle(record.map(|r| r.recorder), info, statement, ruling, masker).await)
                }
            };
            if let Some(statement) = statement
                && let Some(Verdict::Refuse { sqlstate, message }) = verdict
            {
                seq += 1;
                let marker = format!("{}{seq}", shared.marker);
                let mut substitute = Vec::with_capacity(marker.len() + 16);
                match statement.origin {
                    Origin::Prepare { name } => {
                        let mut body = Vec::with_capacity(name.len() + marker.len() + 4);
                        body.extend_from_slice(name.as_bytes());
                        body.push(0);
                        body.extend_from_slice(marker.as_bytes());
                        body.extend_from_slice(&[0, 0, 0]);
                        put_message(&mut substitute, b'P', &body);
                    }
                    // A FunctionCall answers with ErrorResponse and ReadyForQuery like a Query.
                    Origin::Simple | Origin::FunctionCall { .. } => {
                        let mut body = marker.into_bytes();
                        body.push(0);
                        put_message(&mut substitute, b'Q', &body);
                    }
                }
                let mut error = Vec::new();
                put_error(&mut error, Severity::Error, &sqlstate, &message);
                // A Parse's marker fails before the Sync that ends its unit; a Query's is its own.
                let unit = if matches!(statement.origin, Origin::Prepare { .. }) {
                    units + 1
                } else {
                    units
                };
                let mut pending = shared.pending.lock().unwrap_or_else(|p| p.into_inner());
                if pending.len() >= MAX_PENDING_REFUSALS {
                    // Refused statements piling up without a Sync: a client misusing the
                    // protocol; end it rather than grow.
                    drop(pending);
                    break Some(Problem::protocol(
                        "too many refused statements without Sync",
                    ));
                }
                pending.push(Pending { seq, unit, error });
                shared.pending_count.store(pending.len(), Ordering::Release);
                drop(pending);
                debug!(conn = %info.id, sqlstate, "statement refused");
                batch.replace(&buf, pos, pos + n, &substitute);
            }
            pos += n;
            if terminate {
                break None;
            }
        };
        if let Some(record) = record
            && frames.iter().any(|f| f["t"] != "Q")
        {
            let event = Event::new(
                audit::kind::CLIENT_FRAMES,
                Outcome::Info,
                info.who.clone(),
                serde_json::json!({ "frames": frames }),
            );
            if record.recorder.record_wait(event).await.is_err() {
                return End::ClientProtocol("the audit writer stopped".into());
            }
        }
        if pos > 0 {
            let bytes = batch.finish(&buf, pos);
            if !bytes.is_empty()
                && let Err(e) = write_all(&mut wr, bytes).await
            {
                return End::Io(e);
            }
            buf.advance(pos);
        }
        if terminate {
            return End::ClientClosed;
        }
        if !early.is_empty() {
            buf.extend_from_slice(&early);
            early.clear();
            if problem.is_none() {
                // Frame what arrived during the hold before reading more.
                continue;
            }
        }
        shrink(&mut buf);
        if let Some(problem) = problem {
            let mut out = Vec::new();
            put_error(
                &mut out,
                Severity::Fatal,
                problem.sqlstate,
                &problem.message,
            );
            let _ = control.send(Control::Fatal(out)).await;
            info!(conn = %info.id, sqlstate = problem.sqlstate, message = problem.message, "closing the connection");
            return End::ClientProtocol(problem.message);
        }
        buf.reserve(READ_CHUNK);
        // PCI DSS 8.2.8: a session idle for `idle_timeout` must authenticate again. Idle means
        // the client sends nothing while nothing of its runs on the server.
        let idle = ctx.config.limits.idle_timeout;
        let read = loop {
            if idle.is_zero() {
                break rd.read_buf(&mut buf).await;
            }
            match tokio::time::timeout(idle, rd.read_buf(&mut buf)).await {
                Ok(read) => break read,
                Err(_) if shared.in_flight.load(Ordering::Acquire) > 0 => continue,
                Err(_) => {
                    let mut out = Vec::new();
                    put_error(
                        &mut out,
                        Severity::Fatal,
                        "57P05",
                        "terminating connection due to idle-session timeout (tollgate idle_timeout); reconnect",
                    );
                    let _ = control.send(Control::Fatal(out)).await;
                    info!(conn = %info.id, "closing an idle connection");
                    return End::ClientProtocol("idle timeout".into());
                }
            }
        };
        match read {
            Ok(0) => return End::ClientClosed,
            Ok(_) => {}
            Err(e) => return End::Io(e),
        }
    }
}

async fn write_all(wr: &mut WriteHalf, bytes: &[u8]) -> std::io::Result<()> {
    wr.write_all(bytes).await?;
    wr.flush().await
}

#[allow(clippy::too_many_arguments)] // the loop's whole context, each piece used on its own
async fn server_to_client(
    ctx: &Context,
    info: &ConnInfo,
    mut catalog: Option<ConnCatalog<'_>>,
    masker: &Masker,
    record: Option<&Record<'_>>,
    shared: &Shared,
    mut rd: ReadHalf,
    mut buf: BytesMut,
    mut wr: WriteHalf,
    mut control: mpsc::Receiver<Control>,
    lifecycle: &Lifecycle,
) -> End {
    let max = ctx.config.limits.max_server_frame;
    let mut units_done: u64 = 0;
    let mut status = TxStatus::Idle;
    let mut rows = results::ServerSide::default();
    loop {
        let mut batch = Batch::new();
        let mut recorded = record.map(|r| ServerBatch::new(r.full));
        let mut masked_in_batch = 0u64;
        let mut pos = 0;
        let problem = loop {
            let n = match frame::message_len(&buf[pos..], max) {
                Ok(Some(n)) => n,
                Ok(None) => break None,
                Err(e) => break Some(Problem::server(e)),
            };
            let m = Message::from_frame(&buf[pos..pos + n]);
            // What the transform stage puts in the frame's place.
            let mut changed: Option<Vec<u8>> = None;
            let mut row_columns = None;
            match m.tag {
                b'S' => match messages::decode_backend(m.tag, m.body) {
                    Ok(Backend::ParameterStatus { name, value }) => {
                        if let Some((_, pinned)) = PINNED_PARAMETERS
                            .iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case(name))
                            && !value.eq_ignore_ascii_case(pinned)
                        {
                            // The server would now read SQL text differently from the policy's
                            // parser: end the connection rather than forward anything else.
                            break Some(Problem {
                                sqlstate: "42501",
                                message: format!(
                                    "tollgate: {name} must stay {pinned}; the connection is closed"
                                ),
                            });
                        }
                    }
                    Ok(_) => {}
                    Err(e) => break Some(Problem::server(e)),
                },
                b'Z' => match messages::decode_backend(m.tag, m.body) {
                    Ok(Backend::ReadyForQuery(s)) => {
                        status = s;
                        rows.ready(&shared.tracker);
                        units_done += 1;
                        let _ = shared.in_flight.fetch_update(
                            Ordering::AcqRel,
                            Ordering::Acquire,
                            |v| v.checked_sub(1),
                        );
                        if shared.pending_count.load(Ordering::Acquire) > 0 {
                            let mut pending =
                                shared.pending.lock().unwrap_or_else(|p| p.into_inner());
                            pending.retain(|p| p.unit > units_done);
                            shared.pending_count.store(pending.len(), Ordering::Release);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => break Some(Problem::server(e)),
                },
                // Result shapes, so rows are decoded by their column types and formats.
                b'T' => {
                    let mut columns = results::decode_row_description(m.body);
                    if let (Some(catalog), Some(columns)) = (&mut catalog, &mut columns) {
                        catalog.mark(m.body, columns).await;
                    }
                    rows.row_description(&shared.tracker, columns);
                }
                b'n' => rows.no_data(&shared.tracker),
                b'C' | b's' | b'I' => rows.execute_done(&shared.tracker),
                // The transform stage: PANs masked in everything flowing back.
                b'D' => {
                    let columns = rows.row_columns(&shared.tracker);
                    changed = transform::data_row(m.body, masker, columns.as_deref());
                    row_columns = columns;
                }
                b'd' => changed = transform::copy_data(m.body, masker),
                b'N' => changed = transform::fields(m.tag, m.body, masker),
                b'V' => changed = transform::function_result(m.body, masker),
                b'A' => changed = transform::notification(m.body, masker),
                b'E' => {
                    rows.error(&shared.tracker);
                    changed = take_refusal(shared, m)
                        .or_else(|| transform::fields(m.tag, m.body, masker));
                }
                _ => {}
            }
            if let Some(out) = &changed {
                batch.replace(&buf, pos, pos + n, out);
                if m.tag != b'E' || shared.pending_count.load(Ordering::Relaxed) == 0 {
                    masked_in_batch += 1;
                }
            }
            if let Some(recorded) = &mut recorded {
                let body = changed.as_deref().map_or(m.body, |out| &out[5..]);
                recorded.frame(
                    m.tag,
                    body,
                    row_columns.as_deref(),
                    masker,
                    changed.is_some() && m.tag != b'E',
                );
            }
            pos += n;
        };
        if masked_in_batch > 0 {
            metrics::counter!(crate::metrics::MASKED).increment(masked_in_batch);
        }
        // Recorded before the client gets it: a result is never seen unrecorded.
        if let (Some(record), Some(detail)) = (record, recorded.and_then(ServerBatch::finish)) {
            let event = Event::new(
                audit::kind::SERVER_FRAMES,
                Outcome::Info,
                info.who.clone(),
                detail,
            );
            if record.recorder.record_wait(event).await.is_err() {
                return End::ServerProtocol("the audit writer stopped".into());
            }
        }
        if pos > 0 {
            let bytes = batch.finish(&buf, pos);
            if let Err(e) = write_all(&mut wr, bytes).await {
                return End::Io(e);
            }
            buf.advance(pos);
        }
        if let Some(problem) = problem {
            let mut out = Vec::new();
            put_error(
                &mut out,
                Severity::Fatal,
                problem.sqlstate,
                &problem.message,
            );
            let _ = write_all(&mut wr, &out).await;
            return End::ServerProtocol(problem.message);
        }
        shrink(&mut buf);
        // A draining daemon closes a connection once nothing is running on it.
        let phase = lifecycle.phase();
        if phase == Phase::Closing {
            return shutdown(&mut wr).await;
        }
        if phase == Phase::Draining
            && status == TxStatus::Idle
            && shared.in_flight.load(Ordering::Acquire) == 0
            && buf.is_empty()
        {
            return shutdown(&mut wr).await;
        }
        buf.reserve(READ_CHUNK);
        tokio::select! {
            biased;
            read = rd.read_buf(&mut buf) => match read {
                Ok(0) => return End::ServerClosed,
                Ok(_) => {}
                Err(e) => return End::Io(e),
            },
            Some(control) = control.recv() => match control {
                Control::Fatal(out) => {
                    let _ = write_all(&mut wr, &out).await;
                    return End::ClientProtocol("reported by the client loop".into());
                }
                Control::Notice(out) => {
                    if let Err(e) = write_all(&mut wr, &out).await {
                        return End::Io(e);
                    }
                }
                Control::Phase(Phase::Closing) => return shutdown(&mut wr).await,
                // Draining is checked at the top of the loop.
                Control::Phase(_) => {}
            },
        }
    }
}

/// If this ErrorResponse answers one of our marker statements, the refusal to send instead.
fn take_refusal(shared: &Shared, m: Message<'_>) -> Option<Vec<u8>> {
    if shared.pending_count.load(Ordering::Acquire) == 0 {
        return None;
    }
    let mut pending = shared.pending.lock().unwrap_or_else(|p| p.into_inner());
    let Ok(Backend::ErrorResponse(fields)) = messages::decode_backend(m.tag, m.body) else {
        return None;
    };
    let text = fields.get(b'M')?;
    let at = text.find(&shared.marker)? + shared.marker.len();
    let digits: &str = &text[at..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    let seq: u64 = digits[..end].parse().ok()?;
    let index = pending.iter().position(|p| p.seq == seq)?;
    let refusal = pending.swap_remove(index).error;
    shared.pending_count.store(pending.len(), Ordering::Release);
    Some(refusal)
}

async fn shutdown(wr: &mut WriteHalf) -> End {
    let mut out = Vec::new();
    put_error(
        &mut out,
        Severity::Fatal,
        "57P01",
        "terminating connection because tollgate is shutting down",
    );
    let _ = write_all(wr, &out).await;
    End::Shutdown
}

/// A process-wide connection counter for [`ConnId`](crate::pipeline::ConnId)s.
pub static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);
