//! Client to server: the stages every client message passes, in order.
//!
//! ```text
//! read ─▶ frame ─▶ decode ─▶ expiry ─▶ track ─▶ record frame ─▶ inspect ─▶ [hold] ─▶ settle
//!                                                                            │
//!                      forward the batch ◀─ record the batch ◀─ refuse (marker) ◀┘
//! ```
//!
//! [`ToServer::run`] is the loop; [`ToServer::message`] runs one message through the stages.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::hold::{Held, hold_statement};
use super::{
    Batch, End, MAX_PENDING_REFUSALS, Pending, Problem, Record, Room, Shared, shrink, write_all,
};
use crate::audit::{self, Event, Outcome};
use crate::conn::Control;
use crate::conn::statement::settle;
use crate::mask::Masker;
use crate::net::{ReadHalf, WriteHalf};
use crate::pipeline::{ConnInfo, ConnInspect, Origin, Statement, Verdict};
use crate::protocol::pg::PgContext;
use crate::protocol::pg::frame::{self, Message, put_message};
use crate::protocol::pg::messages::{self, Frontend, Severity, put_error};
use crate::protocol::pg::recording;
use crate::protocol::pg::results::{self, Expect};

/// The client-to-server loop of one connection and the state it keeps between messages.
pub(super) struct ToServer<'a> {
    pub ctx: &'a PgContext,
    pub info: &'a ConnInfo,
    pub shared: &'a Shared,
    pub masker: &'a Masker,
    pub record: Option<&'a Record<'a>>,
    pub rd: ReadHalf,
    pub wr: WriteHalf,
    /// How the loop hands FATAL errors and notices to the client writer.
    pub control: mpsc::Sender<Control>,
    pub inspect: Box<dyn ConnInspect>,
    /// Client bytes read while a statement was held, to be framed after the current batch.
    pub early: Vec<u8>,
    /// ReadyForQuery messages the server will have sent once it has answered what was
    /// forwarded.
    pub units: u64,
    /// Refusals made on this connection (numbers their markers).
    pub refusals: u64,
    /// Whether the client is sending COPY data, and the Syncs it sent since its last Execute.
    pub copying: bool,
    pub syncs_since_execute: u64,
    pub portals: results::ClientSide,
    pub room: Room,
}

/// One batch: the messages framed from one read, and what the stages made of them.
struct Step {
    batch: Batch,
    /// The batch's client frames as the record stage keeps them.
    frames: Vec<serde_json::Value>,
    /// How far the buffer was consumed.
    pos: usize,
    terminate: bool,
}

/// Why a message ends the batch early.
enum Stop {
    /// The connection must end with this FATAL error.
    Problem(Problem),
    /// The connection ended (the client left while its statement was held, or IO failed).
    End(End),
}

impl From<Problem> for Stop {
    fn from(p: Problem) -> Stop {
        Stop::Problem(p)
    }
}

impl ToServer<'_> {
    /// Runs until the client leaves or the connection must end.
    pub async fn run(mut self, mut buf: BytesMut) -> End {
        loop {
            let mut step = Step {
                batch: Batch::new(),
                frames: Vec::new(),
                pos: 0,
                terminate: false,
            };
            let problem = match self.frame_all(&buf, &mut step).await {
                Ok(()) => None,
                Err(Stop::Problem(p)) => Some(p),
                Err(Stop::End(end)) => return end,
            };
            if let Err(end) = self.record_batch(&mut step.frames).await {
                return end;
            }
            if let Err(end) = self.forward(&mut buf, &mut step).await {
                return end;
            }
            if step.terminate {
                return End::ClientClosed;
            }
            if !self.early.is_empty() {
                buf.extend_from_slice(&self.early);
                self.early.clear();
                if problem.is_none() {
                    // Frame what arrived during the hold before reading more.
                    continue;
                }
            }
            shrink(&mut buf);
            if let Some(problem) = problem {
                return self.fatal(problem).await;
            }
            if let Err(end) = self.read_more(&mut buf).await {
                return end;
            }
        }
    }

    /// Frames every complete message in `buf` and runs each through the stages.
    async fn frame_all(&mut self, buf: &BytesMut, step: &mut Step) -> Result<(), Stop> {
        let max = self.ctx.config.limits.max_client_frame;
        loop {
            let n = match frame::message_len(&buf[step.pos..], max) {
                Ok(Some(n)) => n,
                Ok(None) => return Ok(()),
                Err(e) => return Err(Problem::protocol(e).into()),
            };
            self.message(buf, step, n).await?;
            step.pos += n;
            if step.terminate {
                return Ok(());
            }
        }
    }

    /// One message through the stages: decode, expiry, track, record, inspect (hold, settle),
    /// refuse.
    async fn message(&mut self, buf: &BytesMut, step: &mut Step, n: usize) -> Result<(), Stop> {
        let m = Message::from_frame(&buf[step.pos..step.pos + n]);
        let msg = messages::decode_frontend(m.tag, m.body).map_err(Problem::protocol)?;
        if matches!(msg, Frontend::Password(_)) {
            return Err(Problem::protocol("unexpected password message").into());
        }
        step.terminate = matches!(msg, Frontend::Terminate);
        if !step.terminate {
            self.check_expiry()?;
        }
        if self.track(&msg) {
            // tollgate's own Describe of the portal just bound, right behind the Bind.
            let mut with_describe = buf[step.pos..step.pos + n].to_vec();
            let name = match &msg {
                Frontend::Bind { portal, .. } => *portal,
                _ => "",
            };
            let mut body = vec![b'P'];
            body.extend_from_slice(name.as_bytes());
            body.push(0);
            put_message(&mut with_describe, b'D', &body);
            step.batch
                .replace(buf, step.pos, step.pos + n, &with_describe);
        }
        if let Some(record) = self.record
            && let Some(frame) = recording::client_frame(&msg, self.masker, record.full)
        {
            step.frames.push(frame);
        }
        let Some(statement) = statement_of(&msg) else {
            return Ok(());
        };
        if let Verdict::Refuse { sqlstate, message } = self.inspect(&statement, buf, step).await? {
            let substitute = self.refuse(&statement, &sqlstate, &message)?;
            step.batch.replace(buf, step.pos, step.pos + n, &substitute);
        }
        Ok(())
    }

    /// The token's expiry holds for the whole connection: checked at every message, so a
    /// statement prepared before expiry cannot be executed after it.
    fn check_expiry(&self) -> Result<(), Problem> {
        if self.info.identity.expired(SystemTime::now()) {
            return Err(Problem {
                sqlstate: "28000",
                message: "tollgate: the agent token has expired; reconnect with a fresh token"
                    .into(),
            });
        }
        Ok(())
    }

    /// Counts what will produce a ReadyForQuery and tells the server-to-client loop what the
    /// server will answer (result shapes). The server ignores a Sync that arrives during COPY
    /// FROM STDIN (a client may send Execute, Sync, then the data), so once copy data shows
    /// up, the Syncs sent since the Execute are taken back.
    ///
    /// Returns true after a Bind that asks for a binary result column: tollgate then asks the
    /// server itself for the portal's columns (its own Describe follows the Bind).
    fn track(&mut self, msg: &Frontend<'_>) -> bool {
        let shared = self.shared;
        match msg {
            Frontend::Query { .. } | Frontend::FunctionCall { .. } => {
                self.units += 1;
                self.syncs_since_execute = 0;
                shared.in_flight.fetch_add(1, Ordering::AcqRel);
                shared.tracker.push(match msg {
                    Frontend::FunctionCall {
                        function_oid,
                        result_format,
                        ..
                    } => Expect::Call {
                        function: *function_oid,
                        binary: *result_format == 1,
                    },
                    _ => Expect::Query { cap: None },
                });
            }
            Frontend::Parse { statement, .. } => shared.tracker.push(Expect::Forget {
                statement: Some((*statement).into()),
                portal: None,
            }),
            Frontend::Bind {
                portal,
                statement,
                result_formats,
                ..
            } => {
                self.portals.bind(portal, statement, result_formats.iter());
                shared.tracker.push(Expect::Forget {
                    statement: None,
                    portal: Some((*portal).into()),
                });
                if result_formats.iter().any(|f| f != 0) {
                    shared.tracker.push(Expect::OwnDescribe((*portal).into()));
                    return true;
                }
            }
            Frontend::Describe { target, name } => shared.tracker.push(match target {
                messages::Target::Statement => Expect::DescribeStatement((*name).into()),
                messages::Target::Portal => Expect::DescribePortal((*name).into()),
            }),
            Frontend::Close { target, name } => {
                if *target == messages::Target::Portal {
                    self.portals.close_portal(name);
                }
                let name: Arc<str> = (*name).into();
                shared.tracker.push(match target {
                    messages::Target::Statement => Expect::Forget {
                        statement: Some(name),
                        portal: None,
                    },
                    messages::Target::Portal => Expect::Forget {
                        statement: None,
                        portal: Some(name),
                    },
                });
            }
            Frontend::Execute { portal, .. } => {
                self.syncs_since_execute = 0;
                shared.tracker.push(self.portals.execute(portal));
            }
            Frontend::Sync if !self.copying => {
                self.units += 1;
                self.syncs_since_execute += 1;
                shared.in_flight.fetch_add(1, Ordering::AcqRel);
                shared.tracker.push(Expect::Sync);
            }
            Frontend::CopyData(_) | Frontend::CopyDone | Frontend::CopyFail { .. } => {
                if !self.copying {
                    self.copying = true;
                    let taken = self.syncs_since_execute;
                    self.units -= taken.min(self.units);
                    shared.tracker.retract_syncs(taken);
                    let _ =
                        shared
                            .in_flight
                            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                                Some(v.saturating_sub(taken))
                            });
                    self.syncs_since_execute = 0;
                }
                if !matches!(msg, Frontend::CopyData(_)) {
                    self.copying = false;
                }
            }
            _ => {}
        }
        false
    }

    /// The inspect stage's ruling, held for approval when the rules say so, then settled
    /// (counted and recorded; refused if it cannot be recorded).
    async fn inspect(
        &mut self,
        statement: &Statement<'_>,
        buf: &BytesMut,
        step: &mut Step,
    ) -> Result<Verdict, Stop> {
        let info = self.info;
        let mut ruling = self.inspect.inspect(info, statement);
        if let (Some(hold), Some(approvals)) =
            (ruling.hold.clone(), self.ctx.stages.approvals.as_ref())
        {
            let mut held = Held {
                ctx: self.ctx,
                frames: &mut step.frames,
                recorder: self.record.map(|r| r.recorder),
                batch: &mut step.batch,
                buf,
                pos: step.pos,
                wr: &mut self.wr,
                rd: &mut self.rd,
                early: &mut self.early,
                control: &self.control,
                interrupt: &self.shared.interrupt,
            };
            // The server is silent while an approver decides: no stall (upstream_timeout).
            self.shared.holding.store(true, Ordering::Release);
            let held = hold_statement(
                info,
                approvals,
                statement,
                &ruling,
                &hold,
                self.masker,
                &mut held,
            )
            .await;
            self.shared.holding.store(false, Ordering::Release);
            self.shared.forwarded.fetch_add(1, Ordering::Release);
            let (verdict, note) = held.map_err(Stop::End)?;
            ruling.verdict = verdict;
            ruling.reason = note;
        }
        // The result cap travels with what the server will answer: a Query's own, or through
        // the statement's name to the portals bound to it; SQL cursors run by name count
        // against the tightest cap seen.
        self.portals.ruled(ruling.result_cap.as_ref());
        match statement.origin {
            Origin::Simple => {
                if let Some(cap) = &ruling.result_cap {
                    self.shared.tracker.cap_last_query(Arc::new(cap.clone()));
                }
            }
            Origin::Prepare { name } => self.portals.parsed(name, ruling.result_cap.clone()),
            Origin::FunctionCall { .. } => {}
        }
        Ok(settle(
            self.record.map(|r| r.recorder),
            info,
            statement,
            ruling,
            self.masker,
        )
        .await)
    }

    /// A refused statement is never forwarded: in its place the server gets a marker statement
    /// that fails to parse (a Parse of the same name for a Parse), and the server-to-client
    /// loop swaps its error for the refusal. Returns the substitute message.
    fn refuse(
        &mut self,
        statement: &Statement<'_>,
        sqlstate: &str,
        message: &str,
    ) -> Result<Vec<u8>, Problem> {
        self.refusals += 1;
        let marker = format!("{}{}", self.shared.marker, self.refusals);
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
        put_error(&mut error, Severity::Error, sqlstate, message);
        // A Parse's marker fails before the Sync that ends its unit; a Query's is its own.
        let unit = if matches!(statement.origin, Origin::Prepare { .. }) {
            self.units + 1
        } else {
            self.units
        };
        let shared = self.shared;
        let mut pending = shared.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.len() >= MAX_PENDING_REFUSALS {
            // Refused statements piling up without a Sync: a client misusing the protocol; end
            // it rather than grow.
            return Err(Problem::protocol(
                "too many refused statements without Sync",
            ));
        }
        pending.push(Pending {
            seq: self.refusals,
            unit,
            error,
        });
        shared.pending_count.store(pending.len(), Ordering::Release);
        drop(pending);
        debug!(conn = %self.info.id, sqlstate, "statement refused");
        Ok(substitute)
    }

    /// The record stage: the batch's client frames, before any of it is forwarded (simple
    /// Queries alone are already recorded as their statement events).
    async fn record_batch(&mut self, frames: &mut Vec<serde_json::Value>) -> Result<(), End> {
        if let Some(record) = self.record
            && frames.iter().any(|f| f["t"] != "Q")
        {
            let event = Event::new(
                audit::kind::CLIENT_FRAMES,
                Outcome::Info,
                self.info.who.clone(),
                serde_json::json!({ "frames": std::mem::take(frames) }),
            );
            if let Err(e) = record.recorder.record_result(event).await {
                // Fail closed: nothing of the batch is forwarded.
                return Err(self
                    .fatal(Problem {
                        sqlstate: "58030",
                        message: format!(
                            "tollgate: the audit trail cannot record the request ({e}); the connection is closed"
                        ),
                    })
                    .await);
            }
        }
        Ok(())
    }

    /// Writes the batch (original bytes, refusals substituted) to the server.
    async fn forward(&mut self, buf: &mut BytesMut, step: &mut Step) -> Result<(), End> {
        if step.pos > 0 {
            let bytes = step.batch.finish(buf, step.pos);
            if !bytes.is_empty() {
                write_all(&mut self.wr, bytes)
                    .await
                    .map_err(End::ServerWrite)?;
                self.shared.forwarded.fetch_add(1, Ordering::Release);
            }
            buf.advance(step.pos);
        }
        Ok(())
    }

    /// Hands the client writer a FATAL error and ends the connection.
    async fn fatal(&mut self, problem: Problem) -> End {
        let mut out = Vec::new();
        put_error(
            &mut out,
            Severity::Fatal,
            problem.sqlstate,
            &problem.message,
        );
        let _ = self.control.send(Control::Fatal(out)).await;
        info!(conn = %self.info.id, sqlstate = problem.sqlstate, message = problem.message, "closing the connection");
        End::ClientProtocol(problem.message)
    }

    /// Reads more from the client. PCI DSS 8.2.8: a session idle for `idle_timeout` must
    /// authenticate again; idle means the client sends nothing while nothing of its runs on
    /// the server.
    async fn read_more(&mut self, buf: &mut BytesMut) -> Result<(), End> {
        self.room.make(buf);
        let idle = self.ctx.config.limits.idle_timeout;
        let read = loop {
            if idle.is_zero() {
                break self.rd.read_buf(buf).await;
            }
            match tokio::time::timeout(idle, self.rd.read_buf(buf)).await {
                Ok(read) => break read,
                Err(_) if self.shared.in_flight.load(Ordering::Acquire) > 0 => continue,
                Err(_) => {
                    let mut out = Vec::new();
                    put_error(
                        &mut out,
                        Severity::Fatal,
                        "57P05",
                        "terminating connection due to idle-session timeout (tollgate idle_timeout); reconnect",
                    );
                    let _ = self.control.send(Control::Fatal(out)).await;
                    info!(conn = %self.info.id, "closing an idle connection");
                    return Err(End::ClientProtocol("idle timeout".into()));
                }
            }
        };
        match read {
            Ok(0) => Err(End::ClientClosed),
            Ok(n) => {
                self.room.read(n);
                Ok(())
            }
            Err(e) => Err(End::Io(e)),
        }
    }
}

/// The statement a message carries for the inspect stage, if any.
fn statement_of<'m>(msg: &Frontend<'m>) -> Option<Statement<'m>> {
    match *msg {
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
        _ => None,
    }
}
