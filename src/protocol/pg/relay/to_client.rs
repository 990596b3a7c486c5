//! Server to client: the stages every server message passes, in order. Only this loop writes
//! to the client, so tollgate's own messages never land inside a partly written frame.
//!
//! ```text
//! read ─▶ frame ─▶ observe (session state, result shapes) ─▶ transform (mask, swap refusals)
//!      ─▶ record frame ─▶ … ─▶ record the batch ─▶ write the batch ─▶ drain? ─▶ read | control
//! ```
//!
//! [`ToClient::run`] is the loop; [`ToClient::message`] runs one message through the
//! stages.

use std::sync::atomic::Ordering;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::{Batch, End, Problem, Record, Room, Shared, shrink, write_all};
use crate::audit::{self, Event, Outcome};
use crate::conn::{Control, Lifecycle, Phase};
use crate::mask::Masker;
use crate::net::{ReadHalf, WriteHalf};
use crate::pipeline::ConnInfo;
use crate::protocol::pg::PgContext;
use crate::protocol::pg::catalog::ConnCatalog;
use crate::protocol::pg::frame::{self, Message};
use crate::protocol::pg::messages::{self, Backend, Severity, TxStatus, put_error};
use crate::protocol::pg::recording::ServerBatch;
use crate::protocol::pg::results;
use crate::protocol::pg::startup::PINNED_PARAMETERS;
use crate::protocol::pg::transform;
use tracing::warn;

static NO_TYPES: std::sync::LazyLock<crate::protocol::pg::binary::Types> =
    std::sync::LazyLock::new(Default::default);

/// The server-to-client loop of one connection and the state it keeps between messages.
pub(super) struct ToClient<'a> {
    pub ctx: &'a PgContext,
    pub info: &'a ConnInfo,
    pub catalog: Option<ConnCatalog<'a>>,
    pub masker: &'a Masker,
    pub record: Option<&'a Record<'a>>,
    pub shared: &'a Shared,
    pub rd: ReadHalf,
    pub wr: WriteHalf,
    pub control: mpsc::Receiver<Control>,
    pub lifecycle: &'a Lifecycle,
    /// ReadyForQuery messages seen.
    pub units_done: u64,
    /// The transaction status of the last ReadyForQuery.
    pub status: TxStatus,
    pub rows: results::ServerSide,
    pub room: Room,
    /// The server answered a COPY FROM STDIN and waits for the client's data.
    pub copy_in: bool,
    /// The target's promoted columns, and the result columns this connection promoted.
    pub promoted: std::sync::Arc<crate::conn::promotion::Promoted>,
    pub promoted_here: std::collections::HashSet<(u32, i16)>,
    /// Columns of the last DataRow in which the masker found a card number.
    pub found: Vec<usize>,
    /// A binary COPY TO STDOUT is under way (its fields are read every way they could be).
    pub binary_copy: bool,
    /// The FunctionCall answered next asked for a binary result: its function's declared
    /// return type (0: not known, so withheld).
    pub call_result: Option<u32>,
    /// Rows counted against result caps.
    pub capping: super::cap::Capping,
}

/// The largest message of a batch that may pass as tollgate's own refusals alone.
const OWN_BATCH_MAX: usize = 16 * 1024;

/// One batch: the messages framed from one read, and what the stages made of them.
struct Step {
    batch: Batch,
    recorded: Option<ServerBatch>,
    masked: u64,
    pos: usize,
    /// Every message so far is tollgate's own refusal (in place of its marker's error) or
    /// ReadyForQuery: nothing of the server's data.
    own_only: bool,
}

impl ToClient<'_> {
    /// Runs until the server leaves, the client loop reports a FATAL error, or the daemon
    /// shuts down.
    pub async fn run(mut self, mut buf: BytesMut) -> End {
        loop {
            let mut step = Step {
                batch: Batch::new(),
                recorded: self.record.map(|r| ServerBatch::new(r.full)),
                masked: 0,
                pos: 0,
                own_only: true,
            };
            let problem = self.frame_all(&buf, &mut step).await.err();
            if step.masked > 0 {
                metrics::counter!(crate::metrics::MASKED).increment(step.masked);
            }
            if let Err(end) = self.record_batch(step.recorded.take(), step.own_only).await {
                return end;
            }
            if let Err(end) = self.write(&mut buf, &mut step).await {
                return end;
            }
            if let Some(problem) = problem {
                let mut out = Vec::new();
                put_error(
                    &mut out,
                    Severity::Fatal,
                    problem.sqlstate,
                    &problem.message,
                );
                let _ = write_all(&mut self.wr, &out).await;
                return End::ServerProtocol(problem.message);
            }
            shrink(&mut buf);
            if let Some(end) = self.drained(&buf).await {
                return end;
            }
            if let Err(end) = self.wait(&mut buf).await {
                return end;
            }
        }
    }

    /// Frames every complete message in `buf` and runs each through the stages.
    async fn frame_all(&mut self, buf: &BytesMut, step: &mut Step) -> Result<(), Problem> {
        let max = self.ctx.config.limits.max_server_frame;
        loop {
            let n = match frame::message_len(&buf[step.pos..], max) {
                Ok(Some(n)) => n,
                Ok(None) => return Ok(()),
                Err(e) => return Err(Problem::server(e)),
            };
            self.message(buf, step, n).await?;
            step.pos += n;
        }
    }

    /// One message through the stages: observe, transform, record.
    async fn message(&mut self, buf: &BytesMut, step: &mut Step, n: usize) -> Result<(), Problem> {
        let m = Message::from_frame(&buf[step.pos..step.pos + n]);
        let capped = self.capping.step(m.tag, m.body, &self.shared.tracker);
        if self.observe(m).await? {
            // The answer to tollgate's own Describe: not the client's to see.
            step.batch.replace(buf, step.pos, step.pos + n, &[]);
            return Ok(());
        }
        match capped {
            super::cap::Step::Pass => {}
            super::cap::Step::Withhold => {
                step.batch.replace(buf, step.pos, step.pos + n, &[]);
                return Ok(());
            }
            super::cap::Step::Reached(reached) => {
                step.own_only = false;
                step.batch.replace(buf, step.pos, step.pos + n, &[]);
                self.cap_reached(reached).await;
                return Ok(());
            }
            super::cap::Step::Replace(out) => {
                // The end of a result the server sent: recorded like the server's data.
                step.own_only = false;
                step.batch.replace(buf, step.pos, step.pos + n, &out);
                if let Some(recorded) = &mut step.recorded {
                    // The error (first message of the replacement).
                    let len = u32::from_be_bytes([out[1], out[2], out[3], out[4]]) as usize;
                    recorded.frame(b'E', &out[5..1 + len], None, self.masker, false);
                }
                return Ok(());
            }
        }
        // tollgate's own refusal in place of its marker's error, taken here so that what is
        // tollgate's and what is the server's is known exactly.
        let own = if m.tag == b'E' {
            take_refusal(self.shared, m)
        } else {
            None
        };
        let refusal = own.is_some();
        let (changed, row_columns) = match own {
            Some(out) => (Some(out), None),
            None => self.transform(m),
        };
        step.own_only &= (refusal || m.tag == b'Z') && n <= OWN_BATCH_MAX;
        if !self.found.is_empty() {
            self.promote(row_columns.as_deref()).await;
        }
        if let Some(out) = &changed {
            step.batch.replace(buf, step.pos, step.pos + n, out);
            if m.tag != b'E' || self.shared.pending_count.load(Ordering::Relaxed) == 0 {
                step.masked += 1;
            }
        }
        if let Some(recorded) = &mut step.recorded {
            let body = changed.as_deref().map_or(m.body, |out| &out[5..]);
            recorded.frame(
                m.tag,
                body,
                row_columns.as_deref(),
                self.masker,
                changed.is_some() && m.tag != b'E',
            );
        }
        Ok(())
    }

    /// What the server's answers say about the session and the results to come: pinned
    /// settings, ReadyForQuery (units done, refusals that can no longer come), result shapes.
    /// Returns true for the answer to tollgate's own Describe, which the client never sees.
    async fn observe(&mut self, m: Message<'_>) -> Result<bool, Problem> {
        let shared = self.shared;
        // During COPY FROM STDIN the server waits for the client: its silence is no stall.
        match m.tag {
            b'G' => self.copy_in = true,
            b'C' | b'E' | b'Z' => self.copy_in = false,
            _ => {}
        }
        match m.tag {
            b'S' => {
                if let Backend::ParameterStatus { name, value } =
                    messages::decode_backend(m.tag, m.body).map_err(Problem::server)?
                    && let Some((_, pinned)) = PINNED_PARAMETERS
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    && !value.eq_ignore_ascii_case(pinned)
                {
                    // The server would now read SQL text differently from the policy's
                    // parser: end the connection rather than forward anything else.
                    return Err(Problem {
                        sqlstate: "42501",
                        message: format!(
                            "tollgate: {name} must stay {pinned}; the connection is closed"
                        ),
                    });
                }
            }
            b'Z' => {
                if let Backend::ReadyForQuery(s) =
                    messages::decode_backend(m.tag, m.body).map_err(Problem::server)?
                {
                    self.status = s;
                    self.binary_copy = false;
                    self.rows.ready(&shared.tracker);
                    self.units_done += 1;
                    let _ =
                        shared
                            .in_flight
                            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                                v.checked_sub(1)
                            });
                    if shared.pending_count.load(Ordering::Acquire) > 0 {
                        let mut pending = shared.pending.lock().unwrap_or_else(|p| p.into_inner());
                        pending.retain(|p| p.unit > self.units_done);
                        shared.pending_count.store(pending.len(), Ordering::Release);
                    }
                }
            }
            // Result shapes, so rows are decoded by their column types and formats.
            b'T' => {
                let mut columns = results::decode_row_description(m.body);
                // Binary values of user-defined types are decoded through their catalog
                // entries (read here, before the rows), or withheld.
                if let (Some(catalog), Some(columns)) = (&mut self.catalog, &columns) {
                    let binary = columns.iter().filter(|c| c.format == 1).map(|c| c.type_oid);
                    if !crate::protocol::pg::binary::unresolved(binary.clone(), &catalog.types)
                        .is_empty()
                    {
                        catalog.resolve_types(binary.collect::<Vec<_>>()).await;
                    }
                }
                if let (Some(catalog), Some(columns), false) = (
                    &mut self.catalog,
                    &mut columns,
                    self.ctx.column_rules.is_empty(),
                ) {
                    catalog.mark(m.body, columns).await;
                }
                return Ok(self.rows.row_description(&shared.tracker, columns));
            }
            b'n' => return Ok(self.rows.no_data(&shared.tracker)),
            // A binary FunctionCall result is decoded by the function's declared return type.
            b'V' => {
                self.call_result = None;
                if let Some((function, true)) = shared.tracker.call() {
                    let mut ret = 0;
                    if let Some(catalog) = &mut self.catalog
                        && let Some(t) = catalog.return_type(function).await
                    {
                        catalog.resolve_types([t]).await;
                        ret = t;
                    }
                    self.call_result = Some(ret);
                }
            }
            // CopyOutResponse: its overall format. CopyDone, errors and ReadyForQuery end it.
            b'H' => self.binary_copy = m.body.first() == Some(&1),
            b'c' => self.binary_copy = false,
            b'1' | b'2' | b'3' => self.rows.completed(&shared.tracker),
            b'C' | b's' | b'I' => self.rows.execute_done(&shared.tracker),
            b'E' => self.rows.error(&shared.tracker),
            _ => {}
        }
        Ok(false)
    }

    /// The transform stage: PANs masked in everything flowing back, refusals in place of the
    /// errors their marker statements caused. Returns the replacement frame, if any, and the
    /// columns of a data row.
    fn transform(
        &mut self,
        m: Message<'_>,
    ) -> (Option<Vec<u8>>, Option<std::sync::Arc<[results::Column]>>) {
        let masker = self.masker;
        match m.tag {
            b'D' => {
                let columns = self.rows.row_columns(&self.shared.tracker);
                let types = self.catalog.as_ref().map(|c| &c.types);
                (
                    transform::data_row_noting(
                        m.body,
                        masker,
                        columns.as_deref(),
                        types.unwrap_or(&NO_TYPES),
                        &mut self.found,
                    ),
                    columns,
                )
            }
            b'd' if self.binary_copy => (transform::binary_copy_data(m.body, masker), None),
            b'd' => (transform::copy_data(m.body, masker), None),
            b'T' => (transform::row_description(m.body, masker), None),
            b'N' => (transform::fields(m.tag, m.body, masker), None),
            b'V' => {
                let types = self.catalog.as_ref().map_or(&*NO_TYPES, |c| &c.types);
                let binary = self.call_result.take().map(|oid| (oid, types));
                (transform::function_result(m.body, masker, binary), None)
            }
            b'A' => (transform::notification(m.body, masker), None),
            b'E' => (
                take_refusal(self.shared, m).or_else(|| transform::fields(m.tag, m.body, masker)),
                None,
            ),
            _ => (None, None),
        }
    }

    /// A result reached its cap: the statement is cancelled on the server (the relay goes on
    /// withholding what it still sends), and the event is counted, logged and recorded.
    async fn cap_reached(&mut self, reached: super::cap::Reached) {
        metrics::counter!(
            crate::metrics::RESULT_CAPPED,
            "protocol" => "postgres",
            "limit" => reached.what,
            "rule" => reached.limit.rule.clone()
        )
        .increment(1);
        tracing::info!(conn = %self.info.id, rule = %reached.limit.rule, limit = reached.what, max = reached.limit.max, "result cap reached; cancelling the statement");
        if let Some(key) = &self.shared.upstream_key {
            crate::protocol::pg::startup::send_cancel(self.ctx, key).await;
        }
        if let Some(record) = self.record {
            let event = Event::new(
                audit::kind::RESULT_CAPPED,
                Outcome::Refused,
                self.info.who.clone(),
                cap_detail(&reached),
            );
            let _ = record.recorder.record_wait(event).await;
        }
    }

    /// A card number was found in result columns no rule protects: the table columns they
    /// come from are promoted for the target (`conn::promotion`), logged and recorded.
    async fn promote(&mut self, columns: Option<&[results::Column]>) {
        let found = std::mem::take(&mut self.found);
        let (Some(columns), Some(catalog)) = (columns, &mut self.catalog) else {
            return;
        };
        for i in found {
            let Some((table, attnum)) = columns.get(i).map(|c| c.source) else {
                continue;
            };
            if table == 0 || !self.promoted_here.insert((table, attnum)) {
                continue;
            }
            let Some(name) = catalog.source_name(table, attnum).await else {
                continue;
            };
            if !self.promoted.promote(&name) {
                continue;
            }
            tracing::warn!(target = %self.info.target, column = %name, "a card number was found in a column no rule protects: computing over it is refused from now on");
            if let Some(record) = self.record {
                let event = Event::new(
                    audit::kind::COLUMN_PROMOTED,
                    Outcome::Info,
                    self.info.who.clone(),
                    serde_json::json!({"column": name, "target": self.info.target}),
                );
                let _ = record.recorder.record_wait(event).await;
            }
        }
    }

    /// The record stage: the batch before the client gets it, so a result is never seen
    /// unrecorded. A writer behind makes this wait (backpressure: the server is read no
    /// further meanwhile), up to the audit queue's wait; then the connection ends with 58030.
    /// A batch of tollgate's own refusals alone (no server data: the 58030 of a statement the
    /// failing store could not record, say) still reaches the client: the statement record or
    /// the outage's `store_failure` record accounts for it.
    async fn record_batch(
        &mut self,
        recorded: Option<ServerBatch>,
        own_only: bool,
    ) -> Result<(), End> {
        if let (Some(record), Some(detail)) = (self.record, recorded.and_then(ServerBatch::finish))
        {
            let event = Event::new(
                audit::kind::SERVER_FRAMES,
                Outcome::Info,
                self.info.who.clone(),
                detail,
            );
            if let Err(e) = record.recorder.record_result(event).await {
                if own_only {
                    warn!(error = %e, "a refusal was sent unrecorded: the audit store cannot take it");
                    return Ok(());
                }
                // Fail closed: the batch is not shown; the client is told why, and the
                // connection ends (its result cannot go on unrecorded).
                let message = format!(
                    "tollgate: the audit trail cannot record the result ({e}); the connection is closed"
                );
                let mut out = Vec::new();
                put_error(&mut out, Severity::Fatal, "58030", &message);
                let _ = write_all(&mut self.wr, &out).await;
                return Err(End::Audit(message));
            }
        }
        Ok(())
    }

    /// Writes the batch (original bytes, changed frames substituted) to the client.
    async fn write(&mut self, buf: &mut BytesMut, step: &mut Step) -> Result<(), End> {
        if step.pos > 0 {
            let bytes = step.batch.finish(buf, step.pos);
            write_all(&mut self.wr, bytes).await.map_err(End::Io)?;
            buf.advance(step.pos);
        }
        Ok(())
    }

    /// A draining daemon closes a connection once nothing is running on it.
    async fn drained(&mut self, buf: &BytesMut) -> Option<End> {
        let phase = self.lifecycle.phase();
        let idle = self.status == TxStatus::Idle
            && self.shared.in_flight.load(Ordering::Acquire) == 0
            && buf.is_empty();
        if phase == Phase::Closing || (phase == Phase::Draining && idle) {
            return Some(shutdown(&mut self.wr).await);
        }
        None
    }

    /// Waits for more from the server or a message on the control line; watches for a server
    /// that stalls while a statement runs.
    async fn wait(&mut self, buf: &mut BytesMut) -> Result<(), End> {
        self.room.make(buf);
        let mut silence = Silence::new(self.ctx.config.limits.upstream_timeout);
        silence.stalled(self.shared, self.copy_in);
        loop {
            tokio::select! {
                biased;
                read = self.rd.read_buf(buf) => return match read {
                    Ok(0) => Err(self.server_lost("closed the connection").await),
                    Ok(n) => {
                        self.room.read(n);
                        Ok(())
                    }
                    Err(e) => Err(self.server_lost(&format!("broke ({e})")).await),
                },
                Some(control) = self.control.recv() => return match control {
                    Control::Fatal(out) => {
                        let _ = write_all(&mut self.wr, &out).await;
                        Err(End::ClientProtocol("reported by the client loop".into()))
                    }
                    Control::Notice(out) => write_all(&mut self.wr, &out).await.map_err(End::Io),
                    Control::Phase(Phase::Closing) => Err(shutdown(&mut self.wr).await),
                    // Draining is checked after each batch.
                    Control::Phase(_) => Ok(()),
                },
                _ = silence.tick() => if silence.stalled(self.shared, self.copy_in) {
                    let limit = self.ctx.config.limits.upstream_timeout;
                    warn!(conn = %self.info.id, ?limit, "the server stalled during a statement");
                    let message = format!(
                        "tollgate: the database server sent nothing for {} while a statement ran (limits.upstream_timeout); the connection is closed and the statement may or may not have run",
                        humantime::format_duration(limit)
                    );
                    self.fatal_to_client("08006", &message).await;
                    return Err(End::ServerStalled);
                },
            }
        }
    }

    /// The server went away: the client is told (FATAL 08006), as libpq would tell it.
    async fn server_lost(&mut self, how: &str) -> End {
        warn!(conn = %self.info.id, how, "the server connection ended");
        self.fatal_to_client(
            "08006",
            &format!(
                "tollgate: the database server {how} unexpectedly; the statement in progress may or may not have run"
            ),
        )
        .await;
        End::ServerClosed
    }

    async fn fatal_to_client(&mut self, sqlstate: &str, message: &str) {
        let mut out = Vec::new();
        put_error(&mut out, Severity::Fatal, sqlstate, message);
        let _ = write_all(&mut self.wr, &out).await;
    }
}

/// How long the server has been silent while a statement of the client's runs on it, the
/// client sending nothing more either.
struct Silence {
    limit: std::time::Duration,
    /// Since when, and the client's forwarded batches then.
    since: Option<(std::time::Instant, u64)>,
}

impl Silence {
    fn new(limit: std::time::Duration) -> Silence {
        Silence { limit, since: None }
    }

    /// Completes every quarter of the limit (never when it is off).
    async fn tick(&self) {
        if self.limit.is_zero() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(self.limit / 4).await;
    }

    /// Whether the server has been silent for the limit while it owed an answer (not while
    /// it waits for the client's COPY data, nor during an approval hold).
    fn stalled(&mut self, shared: &Shared, copy_in: bool) -> bool {
        if self.limit.is_zero()
            || copy_in
            || shared.in_flight.load(Ordering::Acquire) == 0
            || shared.holding.load(Ordering::Acquire)
        {
            self.since = None;
            return false;
        }
        let forwarded = shared.forwarded.load(Ordering::Acquire);
        match self.since {
            Some((t, f)) if f == forwarded => t.elapsed() >= self.limit,
            _ => {
                self.since = Some((std::time::Instant::now(), forwarded));
                false
            }
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

/// The `result_capped` record's detail: the limit, its rule, what was counted.
pub(super) fn cap_detail(reached: &super::cap::Reached) -> serde_json::Value {
    serde_json::json!({
        "rule": reached.limit.rule,
        "limit": reached.what,
        "max": reached.limit.max,
        "rows": reached.rows,
        "bytes": reached.bytes,
    })
}

/// Tells the client the daemon is shutting down (FATAL 57P01).
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
