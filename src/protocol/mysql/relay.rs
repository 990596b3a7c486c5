//! An established MySQL connection: one command at a time, as the protocol has it.
//!
//! Each command the client sends is decoded (and so validated); statements go through the
//! inspect stage and are recorded with their ruling before anything is forwarded. A refused
//! statement never reaches the server: the client gets an ERR (1227 / 42000 naming the rule)
//! and the connection carries on. The server's answer is streamed back packet by packet:
//! column definitions, rows (text or binary) and errors pass through the masker, and what is
//! queued for the client is recorded before it is written. Memory stays at one packet plus the
//! 64 KiB output queue whatever the result size.
//!
//! Sequence ids toward the client are tollgate's own count (a masked value can change a
//! packet's size), so a response always reads as one consistent sequence.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::handshake::{Established, caps};
use super::packet::{self, FLUSH_AT, PacketIo};
use super::wire::{self, ColumnMask};
use super::{Entry, Kill};
use crate::audit::{self, Event, Outcome};
use crate::mask::Masker;
use crate::pipeline::{ConnInfo, ConnInspect, Origin, Ruling, Statement, Verdict};
use crate::protocol::pg::Context;
use crate::server::{Control, Lifecycle, Phase};

/// Why a MySQL relay ended.
#[derive(Debug)]
pub enum End {
    ClientClosed,
    ServerClosed,
    /// A malformed, oversize or out-of-order client packet; the client got an ERR.
    ClientProtocol(String),
    /// A malformed server packet, or a result that could not be masked; the client got an ERR.
    ServerProtocol(String),
    /// The agent's token expired.
    Expired,
    IdleTimeout,
    Shutdown,
    /// The audit trail could not record what was about to be shown.
    Audit(String),
    Io(String),
}

/// How long a statement waits for room in a full audit queue before it is refused.
const RECORD_WAIT: Duration = Duration::from_secs(2);
/// Server frames kept for one audit record, at most.
const FRAMES_PER_RECORD: usize = 256;
/// Prepared statements tracked per connection, at most.
const MAX_STATEMENTS: usize = 10_000;

const SERVER_STATUS_CURSOR_EXISTS: u16 = 0x0040;

/// A prepared statement as tollgate tracks it.
struct Prepared {
    /// The column masks of its last result set, for COM_STMT_FETCH.
    columns: Vec<ColumnMask>,
    params: u16,
    /// The parameter types last bound (COM_STMT_EXECUTE sends them only when they change).
    param_types: Vec<ColumnMask>,
}

/// The MySQL errno and SQLSTATE for a refusal's PostgreSQL-style SQLSTATE.
fn errno(sqlstate: &str) -> (u16, &'static str) {
    match sqlstate {
        "42501" => (1227, "42000"),
        "28000" => (1045, "28000"),
        "58030" => (1105, "HY000"),
        "57014" => (1317, "70100"),
        _ => (1105, "HY000"),
    }
}

struct Relay<'a> {
    ctx: &'a Context,
    info: ConnInfo,
    client: PacketIo,
    server: PacketIo,
    caps: u32,
    masker: Masker,
    inspect: Box<dyn ConnInspect>,
    recorder: Option<&'a audit::Recorder>,
    full: bool,
    /// The last status flags the server sent (in a transaction or not).
    status: u16,
    statements: HashMap<u32, Prepared>,
    target: Arc<crate::protocol::pg::TargetRuntime>,
    /// Server frames waiting to be recorded.
    frames: Vec<Value>,
    /// Sequence id of the next packet to the client.
    cseq: u8,
    /// Whether the statement in flight is a LOAD DATA LOCAL the policy let through.
    local_infile: bool,
    /// A KILL of this connection from another one: cancels a held statement.
    interrupt: Arc<tokio::sync::Notify>,
}

/// Runs an established connection until either side ends it.
pub async fn run(
    ctx: &Context,
    est: Established,
    info: ConnInfo,
    lifecycle: &Lifecycle,
    mut control: mpsc::Receiver<Control>,
) -> End {
    let masker = ctx.masker_for(&info.identity);
    let interrupt = Arc::new(tokio::sync::Notify::new());
    let _registered = ctx.mysql_conns.register(
        info.id.0 as u32,
        Entry {
            target: info.target.clone(),
            issuer: info.identity.issuer.clone(),
            subject: info.identity.subject.clone(),
            upstream_thread: est.upstream_thread,
            interrupt: Arc::clone(&interrupt),
        },
    );
    let full = ctx.record_results(&info.target) == crate::config::RecordResults::Full;
    let mut relay = Relay {
        ctx,
        inspect: ctx.stages.inspect.connect(&info),
        info,
        client: est.client,
        server: est.server,
        caps: est.caps,
        masker,
        recorder: ctx.stages.record.as_ref(),
        full,
        status: est.status,
        statements: HashMap::new(),
        target: est.target,
        frames: Vec::new(),
        cseq: 1,
        local_infile: false,
        interrupt,
    };
    let idle = ctx.config.limits.idle_timeout;
    let max = ctx.config.limits.max_client_frame;
    loop {
        let in_trans = relay.status & wire::SERVER_STATUS_IN_TRANS != 0;
        match lifecycle.phase() {
            Phase::Closing => {
                return relay
                    .close(1053, "08S01", "Server shutdown in progress", End::Shutdown)
                    .await;
            }
            Phase::Draining if !in_trans => {
                return relay
                    .close(1053, "08S01", "Server shutdown in progress", End::Shutdown)
                    .await;
            }
            _ => {}
        }
        let idle_wait = async {
            if idle.is_zero() {
                std::future::pending::<()>().await
            } else {
                tokio::time::sleep(idle).await
            }
        };
        let read = tokio::select! {
            r = relay.client.read(max) => r,
            _ = control.recv() => continue,
            _ = idle_wait => {
                info!(conn = %relay.info.id, "idle timeout");
                return relay
                    .close(4031, "HY000", "The client was disconnected by the server because of inactivity (tollgate idle_timeout)", End::IdleTimeout)
                    .await;
            }
        };
        let p = match read {
            Ok(p) => p,
            Err(packet::Error::Closed) => return End::ClientClosed,
            Err(e) => {
                let msg = format!("tollgate: malformed packet: {e}");
                return relay
                    .close(1156, "08S01", &msg, End::ClientProtocol(e.to_string()))
                    .await;
            }
        };
        if p.seq != 0 {
            let e = packet::Error::Sequence {
                got: p.seq,
                want: 0,
            };
            return relay
                .close(
                    1156,
                    "08S01",
                    &format!("Got packets out of order: {e}"),
                    End::ClientProtocol(e.to_string()),
                )
                .await;
        }
        if relay.info.identity.expired(SystemTime::now()) {
            return relay
                .close(
                    1045,
                    "28000",
                    "tollgate: the agent token expired; reconnect with a fresh token",
                    End::Expired,
                )
                .await;
        }
        relay.cseq = 1;
        relay.local_infile = false;
        match relay.command(p.payload).await {
            Ok(None) => {}
            Ok(Some(end)) => return end,
            Err(end) => return end,
        }
    }
}

impl Relay<'_> {
    /// Sends a final ERR and ends.
    async fn close(&mut self, code: u16, state: &str, message: &str, end: End) -> End {
        self.last_err(&wire::err(code, state, message)).await;
        end
    }

    /// Sends a final ERR. What is queued for the client goes with it only if it can be
    /// recorded first; otherwise it is dropped.
    async fn last_err(&mut self, err: &[u8]) {
        if self.record_frames().await.is_err() {
            self.client.discard();
        }
        let _ = self.client.send(self.cseq, err).await;
    }

    /// Whether a statement names a table in another database than the session's.
    fn outside_database(&self, ruling: &Ruling) -> Option<String> {
        let current = self
            .target
            .config
            .upstream_database(&self.info.database)
            .to_ascii_lowercase();
        ruling.tables.iter().find_map(|t| {
            let (schema, _) = t.rsplit_once('.')?;
            let schema = schema.trim_matches('`').to_ascii_lowercase();
            (schema != current && schema != "information_schema").then(|| schema.clone())
        })
    }

    /// A command that does not decode: the client is told, and the connection ends.
    async fn malformed(&mut self, e: wire::Malformed) -> End {
        let why = e.to_string();
        self.close(1047, "08S01", &why, End::ClientProtocol(why.clone()))
            .await
    }

    /// A statement's text; `None` (after an ERR to the client) when it is not UTF-8, which
    /// the classifier cannot read.
    async fn sql_text<'b>(&mut self, body: &'b [u8]) -> Result<Option<&'b str>, End> {
        match std::str::from_utf8(body) {
            Ok(sql) => Ok(Some(sql)),
            Err(_) => {
                self.reply_err(
                    1105,
                    "HY000",
                    "tollgate: the statement is not valid UTF-8 and cannot be checked",
                )
                .await?;
                Ok(None)
            }
        }
    }

    /// Answers the current command with an ERR from tollgate; the connection carries on.
    async fn reply_err(&mut self, code: u16, state: &str, message: &str) -> Result<(), End> {
        self.frames.push(json!({"t": "err", "code": code, "message": crate::mask::for_log(message), "from": "tollgate"}));
        // tollgate's own refusal is sent even when it cannot be recorded (the refusal may be
        // because the store is failing); nothing from the server is queued with it.
        if self.record_frames().await.is_err() {
            self.client.discard();
        }
        self.cseq = self
            .client
            .queue(self.cseq, &wire::err(code, state, message));
        self.client.flush().await.map_err(io)
    }

    /// Records the client's command frame before it is forwarded.
    async fn record_client(&mut self, frame: Value) -> Result<(), End> {
        let Some(recorder) = self.recorder else {
            return Ok(());
        };
        let event = Event::new(
            audit::kind::CLIENT_FRAMES,
            Outcome::Info,
            self.info.who.clone(),
            json!({ "frames": [frame] }),
        );
        recorder
            .record_within(event, RECORD_WAIT)
            .await
            .map_err(|e| End::Audit(e.to_string()))
    }

    /// Records the server frames gathered so far (before the bytes they describe are written).
    async fn record_frames(&mut self) -> Result<(), End> {
        if self.frames.is_empty() {
            return Ok(());
        }
        let frames = std::mem::take(&mut self.frames);
        let Some(recorder) = self.recorder else {
            return Ok(());
        };
        let event = Event::new(
            audit::kind::SERVER_FRAMES,
            Outcome::Info,
            self.info.who.clone(),
            json!({ "frames": frames }),
        );
        recorder
            .record_within(event, RECORD_WAIT)
            .await
            .map_err(|e| End::Audit(e.to_string()))
    }

    /// Queues a packet for the client, recording and writing out when the queue is full.
    async fn send_client(&mut self, payload: &[u8]) -> Result<(), End> {
        if self.client.queued() + payload.len() >= FLUSH_AT
            || self.frames.len() >= FRAMES_PER_RECORD
        {
            self.record_frames().await?;
            if self.client.queued() + payload.len() >= FLUSH_AT {
                self.client.flush().await.map_err(io)?;
            }
        }
        self.cseq = self.client.queue(self.cseq, payload);
        Ok(())
    }

    /// Ends a response: records what is queued, then writes it.
    async fn finish(&mut self) -> Result<(), End> {
        self.record_frames().await?;
        self.client.flush().await.map_err(io)
    }

    async fn send_server(&mut self, payload: &[u8]) -> Result<(), End> {
        self.server.send(0, payload).await.map_err(io)?;
        Ok(())
    }

    async fn next_server(&mut self) -> Result<packet::Packet, End> {
        match self
            .server
            .read(self.ctx.config.limits.max_server_frame)
            .await
        {
            Ok(p) => Ok(p),
            Err(packet::Error::Closed | packet::Error::Truncated) => {
                self.last_err(&wire::err(
                    2013,
                    "HY000",
                    "Lost connection to the server (tollgate's upstream closed)",
                ))
                .await;
                Err(End::ServerClosed)
            }
            Err(e) => Err(self.server_broke(e.to_string()).await),
        }
    }

    /// A server packet tollgate cannot read or mask: the client gets an ERR and the
    /// connection ends (nothing unmasked is ever passed on).
    async fn server_broke(&mut self, why: String) -> End {
        warn!(conn = %self.info.id, error = why, "invalid packet from the server");
        self.last_err(&wire::err(
            1105,
            "HY000",
            "tollgate received a packet from the server it cannot read or mask; the connection is closed",
        ))
        .await;
        End::ServerProtocol(why)
    }

    /// One command. `Ok(Some(end))` ends the connection.
    async fn command(&mut self, payload: bytes::Bytes) -> Result<Option<End>, End> {
        let Some(&cmd) = payload.first() else {
            return Err(self
                .close(
                    1047,
                    "08S01",
                    "Unknown command",
                    End::ClientProtocol("empty command".into()),
                )
                .await);
        };
        let body = &payload[1..];
        match cmd {
            0x01 => {
                let _ = self.record_client(json!({"t": "COM_QUIT"})).await;
                let _ = self.send_server(&payload).await;
                return Ok(Some(End::ClientClosed));
            }
            0x02 => {
                let name = String::from_utf8_lossy(body).into_owned();
                self.record_client(
                    json!({"t": "COM_INIT_DB", "database": crate::mask::for_log(&name)}),
                )
                .await?;
                self.init_db(&name).await?;
            }
            0x03 => {
                self.record_client(json!({"t": "COM_QUERY"})).await?;
                let Some(sql) = self.sql_text(body).await? else {
                    return Ok(None);
                };
                self.query(sql).await?;
            }
            0x04 => {
                let mut r = wire::Reader::new(body, "COM_FIELD_LIST");
                let table = match r.nul_str() {
                    Ok(t) => String::from_utf8_lossy(t).into_owned(),
                    Err(e) => return Err(self.malformed(e).await),
                };
                self.record_client(
                    json!({"t": "COM_FIELD_LIST", "table": crate::mask::for_log(&table)}),
                )
                .await?;
                let sql = format!("SHOW COLUMNS FROM `{}`", table.replace('`', "``"));
                if self.decide(&sql, Origin::Simple).await? {
                    self.send_server(&payload).await?;
                    self.field_list().await?;
                }
            }
            0x09 | 0x0E | 0x1A | 0x1B | 0x1F => {
                let name = match cmd {
                    0x09 => "COM_STATISTICS",
                    0x0E => "COM_PING",
                    0x1A => "COM_STMT_RESET",
                    0x1B => "COM_SET_OPTION",
                    _ => "COM_RESET_CONNECTION",
                };
                self.record_client(json!({"t": name})).await?;
                if cmd == 0x1F {
                    self.statements.clear();
                }
                self.send_server(&payload).await?;
                let ok = self.single_reply(cmd == 0x09).await?;
                if cmd == 0x1F && ok {
                    // The reset restored the session's settings: pin them again.
                    let max = self.ctx.config.limits.max_server_frame;
                    if let Err(e) =
                        super::handshake::pin_session(&mut self.server, self.caps, max).await
                    {
                        return Err(self.server_broke(e.to_string()).await);
                    }
                }
            }
            0x0C => {
                let id = match wire::Reader::new(body, "COM_PROCESS_KILL").u32() {
                    Ok(id) => id,
                    Err(e) => return Err(self.malformed(e).await),
                };
                self.record_client(json!({"t": "COM_PROCESS_KILL", "id": id}))
                    .await?;
                let sql = format!("KILL CONNECTION {id}");
                if self.decide(&sql, Origin::Simple).await? {
                    match self.kill_target(Kill::Connection(id)) {
                        Some(upstream) => {
                            let mut p = vec![0x0C];
                            p.extend_from_slice(&upstream.to_le_bytes());
                            self.send_server(&p).await?;
                            self.single_reply(false).await?;
                        }
                        None => {
                            self.reply_err(1094, "HY000", &format!("Unknown thread id: {id}"))
                                .await?
                        }
                    }
                }
            }
            0x16 => {
                self.record_client(json!({"t": "COM_STMT_PREPARE"})).await?;
                let Some(sql) = self.sql_text(body).await? else {
                    return Ok(None);
                };
                if self.decide(sql, Origin::Prepare { name: "" }).await? {
                    self.send_server(&payload).await?;
                    self.prepare_reply().await?;
                }
            }
            0x17 | 0x1C => {
                let mut r = wire::Reader::new(body, "statement command");
                let id = match r.u32() {
                    Ok(id) => id,
                    Err(e) => return Err(self.malformed(e).await),
                };
                let name = if cmd == 0x17 {
                    "COM_STMT_EXECUTE"
                } else {
                    "COM_STMT_FETCH"
                };
                let Some(st) = self.statements.get(&id) else {
                    self.record_client(json!({"t": name, "statement": id}))
                        .await?;
                    self.reply_err(
                        1243,
                        "HY000",
                        &format!("Unknown prepared statement handler ({id}) given to {name}"),
                    )
                    .await?;
                    return Ok(None);
                };
                let mut frame = json!({"t": name, "statement": id, "params": st.params});
                if cmd == 0x17 && st.params > 0 {
                    let params = usize::from(st.params);
                    let known = st.param_types.clone();
                    match execute_params(body, params, known) {
                        Some((types, values)) => {
                            if let Some(st) = self.statements.get_mut(&id) {
                                st.param_types = types.clone();
                            }
                            if self.full {
                                frame["values"] =
                                    Value::Array(row_values(&values, &types, true, &self.masker));
                            }
                        }
                        None => frame["values"] = json!({"unreadable": body.len()}),
                    }
                }
                self.record_client(frame).await?;
                self.send_server(&payload).await?;
                if cmd == 0x17 {
                    self.results(true, Some(id)).await?;
                } else {
                    let columns = self
                        .statements
                        .get(&id)
                        .map(|s| s.columns.clone())
                        .unwrap_or_default();
                    self.rows(&columns, true).await?;
                }
            }
            0x18 | 0x19 => {
                let id = wire::Reader::new(body, "statement command")
                    .u32()
                    .unwrap_or(0);
                let name = if cmd == 0x18 {
                    "COM_STMT_SEND_LONG_DATA"
                } else {
                    "COM_STMT_CLOSE"
                };
                let mut frame = json!({"t": name, "statement": id});
                if cmd == 0x18 {
                    // The data may be anything (a card number too): its size only.
                    frame["bytes"] = body.len().saturating_sub(6).into();
                }
                self.record_client(frame).await?;
                if cmd == 0x19 {
                    self.statements.remove(&id);
                }
                // Neither has a response.
                self.send_server(&payload).await?;
            }
            0x11 => {
                self.record_client(json!({"t": "COM_CHANGE_USER"})).await?;
                self.reply_err(1227, "42000", "tollgate: COM_CHANGE_USER is not supported; open a new connection with the other identity").await?;
            }
            0x12 | 0x13 | 0x14 | 0x15 | 0x1E => {
                self.record_client(json!({"t": "replication", "command": cmd}))
                    .await?;
                self.reply_err(
                    1227,
                    "42000",
                    "tollgate: replication commands are not relayed",
                )
                .await?;
            }
            0x05 | 0x06 | 0x07 | 0x08 | 0x0A | 0x0D | 0x1D => {
                self.record_client(json!({"t": "refused_command", "command": cmd}))
                    .await?;
                self.reply_err(1227, "42000", &format!("tollgate: command 0x{cmd:02x} is not relayed (use SQL statements, which the policy checks)")).await?;
            }
            _ => {
                self.record_client(json!({"t": "unknown_command", "command": cmd}))
                    .await?;
                self.reply_err(1047, "08S01", "Unknown command").await?;
            }
        }
        Ok(None)
    }

    /// Runs a statement through the inspect stage (holding it for approval when the rules
    /// say so) and records it; `true` when it may be forwarded. A refusal is answered here.
    async fn decide(&mut self, sql: &str, origin: Origin<'_>) -> Result<bool, End> {
        let statement = Statement { sql, origin };
        let mut ruling = self.inspect.inspect(&self.info, &statement);
        // What the protocol adds to the policy: text the classifier cannot see through, and
        // settings that would make the server read SQL or send text differently.
        if ruling.verdict == Verdict::Forward
            && let Some(why) = session_guard(sql)
        {
            ruling.verdict = Verdict::Refuse {
                sqlstate: "42501".into(),
                message: format!("tollgate: {why}"),
            };
            ruling.action = "deny";
            ruling.reason = why.to_owned();
        }
        if ruling.verdict == Verdict::Forward
            && let Some(schema) = self.outside_database(&ruling)
        {
            ruling.verdict = Verdict::Refuse {
                sqlstate: "42501".into(),
                message: format!(
                    "tollgate: this connection stays in its target's database; {} is another one",
                    crate::mask::for_log(&schema)
                ),
            };
            ruling.action = "deny";
            ruling.reason = "another database than the target's".into();
        }
        if let (Some(hold), Some(approvals)) =
            (ruling.hold.clone(), self.ctx.stages.approvals.clone())
        {
            let (verdict, note) = self.hold(&approvals, &statement, &ruling, &hold).await?;
            ruling.verdict = verdict;
            ruling.reason = note;
        }
        let verdict = crate::protocol::pg::relay::settle(
            self.recorder,
            &self.info,
            &statement,
            ruling,
            &self.masker,
        )
        .await;
        match verdict {
            Verdict::Forward => Ok(true),
            Verdict::Refuse { sqlstate, message } => {
                let (code, state) = errno(&sqlstate);
                debug!(conn = %self.info.id, code, "statement refused");
                self.reply_err(code, state, &message).await?;
                Ok(false)
            }
        }
    }

    /// Holds a statement until an approver decides. MySQL has no notices: the client just
    /// waits, and the eventual result or error says what happened.
    async fn hold(
        &mut self,
        approvals: &Arc<crate::approval::Approvals>,
        statement: &Statement<'_>,
        ruling: &Ruling,
        hold: &crate::pipeline::Hold,
    ) -> Result<(Verdict, String), End> {
        use crate::protocol::pg::relay::{approval_fingerprint, decided};
        let fingerprint = approval_fingerprint(
            &self.info,
            statement,
            ruling,
            hold,
            crate::policy::classify::SqlDialect::MySql,
        );
        if let Some((id, by)) = approvals
            .window(&self.info.identity, &self.info.target, &fingerprint)
            .await
        {
            return Ok((
                Verdict::Forward,
                format!("approved by {by} within the window of approval {id}"),
            ));
        }
        let sql = crate::mask::redact_secrets(&String::from_utf8_lossy(
            &self.masker.mask(statement.sql.as_bytes()),
        ));
        let mut ticket = match approvals
            .submit(
                &self.info.identity,
                self.info.who.clone(),
                &self.info.target,
                &self.info.database,
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
                    Verdict::Refuse {
                        sqlstate: "42501".into(),
                        message: format!("tollgate: statement not held for approval: {e}"),
                    },
                    e.to_string(),
                ));
            }
        };
        info!(conn = %self.info.id, approval = %ticket.request.id, group = hold.group, "statement held for approval");
        // The client sends nothing while it waits for its answer; bytes or EOF mean it left
        // (or broke the protocol): the request is cancelled either way.
        let interrupt = Arc::clone(&self.interrupt);
        let outcome = tokio::select! {
            outcome = ticket.outcome() => outcome,
            _ = interrupt.notified() => {
                info!(conn = %self.info.id, approval = %ticket.request.id, "held statement killed");
                let id = ticket.request.id.clone();
                ticket.withdraw("the client cancelled the statement (KILL)");
                return Ok((
                    Verdict::Refuse {
                        sqlstate: "57014".into(),
                        message: format!("Query execution was interrupted (tollgate: KILL while approval {id} was pending; the request is cancelled)"),
                    },
                    format!("approval {id} cancelled by KILL"),
                ));
            }
            _ = self.client.read(64) => {
                info!(conn = %self.info.id, approval = %ticket.request.id, "client left while its statement was held");
                drop(ticket);
                return Err(End::ClientClosed);
            }
        };
        Ok(decided(&self.info, &ticket.request.id, outcome, hold))
    }

    /// The upstream thread a KILL may reach, if the connection is the asker's own; a
    /// statement the connection holds for approval is cancelled on the way.
    fn kill_target(&self, kill: Kill) -> Option<u32> {
        let id = match kill {
            Kill::Query(id) | Kill::Connection(id) => id,
        };
        let (thread, interrupt) = self.ctx.mysql_conns.killable(
            id,
            &self.info.target,
            &self.info.identity.issuer,
            &self.info.identity.subject,
        )?;
        interrupt.notify_waiters();
        Some(thread)
    }

    /// The database a client may switch to: only the one its target serves (any for the
    /// `*` target, as long as no other target is named so). Returns the upstream name.
    fn same_target_database(&self, name: &str) -> Option<String> {
        let chosen = self.ctx.mysql_target(name)?;
        if !Arc::ptr_eq(&chosen, &self.target) {
            return None;
        }
        Some(self.target.config.upstream_database(name).to_owned())
    }

    async fn init_db(&mut self, name: &str) -> Result<(), End> {
        let sql = format!("USE `{}`", name.replace('`', "``"));
        if !self.decide(&sql, Origin::Simple).await? {
            return Ok(());
        }
        let Some(upstream) = self.same_target_database(name) else {
            let msg = format!(
                "Access denied to database '{}': this tollgate connection stays on target {}; connect again naming the other database",
                crate::mask::for_log(name),
                self.info.target
            );
            return self.reply_err(1044, "42000", &msg).await;
        };
        let mut p = vec![0x02];
        p.extend_from_slice(upstream.as_bytes());
        self.send_server(&p).await?;
        let ok = self.single_reply(false).await?;
        if ok {
            self.info.database = name.to_owned();
        }
        Ok(())
    }

    /// A COM_QUERY: checked, possibly rewritten (KILL ids, USE), forwarded, answered.
    async fn query(&mut self, sql: &str) -> Result<(), End> {
        if !self.decide(sql, Origin::Simple).await? {
            return Ok(());
        }
        let mut text = std::borrow::Cow::Borrowed(sql);
        match super::parse_kill(sql) {
            Some(Ok(kill)) => match self.kill_target(kill) {
                Some(upstream) => {
                    text = std::borrow::Cow::Owned(match kill {
                        Kill::Query(_) => format!("KILL QUERY {upstream}"),
                        Kill::Connection(_) => format!("KILL CONNECTION {upstream}"),
                    });
                }
                None => {
                    let id = match kill {
                        Kill::Query(id) | Kill::Connection(id) => id,
                    };
                    return self
                        .reply_err(1094, "HY000", &format!("Unknown thread id: {id}"))
                        .await;
                }
            },
            Some(Err(())) => {
                return self
                    .reply_err(1227, "42000", "tollgate: only KILL [QUERY | CONNECTION] <id>, alone and with an id tollgate gave out, is relayed")
                    .await;
            }
            None => {}
        }
        let mut switched_to = None;
        if let Some(uses) = uses_database(sql) {
            match uses {
                Err(()) => {
                    return self
                        .reply_err(1044, "42000", "tollgate: USE must be a statement of its own (the connection stays on its target)")
                        .await;
                }
                Ok(name) => match self.same_target_database(&name) {
                    Some(upstream) => {
                        text = std::borrow::Cow::Owned(format!(
                            "USE `{}`",
                            upstream.replace('`', "``")
                        ));
                        switched_to = Some(name);
                    }
                    None => {
                        let msg = format!(
                            "Access denied to database '{}': this tollgate connection stays on target {}",
                            crate::mask::for_log(&name),
                            self.info.target
                        );
                        return self.reply_err(1044, "42000", &msg).await;
                    }
                },
            }
        }
        if let Some(name) = switched_to {
            let mut p = Vec::with_capacity(text.len() + 1);
            p.push(0x03);
            p.extend_from_slice(text.as_bytes());
            self.send_server(&p).await?;
            // The session's database changes only once the server says so.
            if self.single_reply(false).await? {
                self.info.database = name;
            }
            return Ok(());
        }
        self.local_infile = is_load_local(sql);
        let mut p = Vec::with_capacity(text.len() + 1);
        p.push(0x03);
        p.extend_from_slice(text.as_bytes());
        self.send_server(&p).await?;
        self.results(false, None).await
    }

    /// A one-packet answer (OK, ERR, EOF, or COM_STATISTICS's text). Returns whether it was
    /// not an error.
    async fn single_reply(&mut self, text: bool) -> Result<bool, End> {
        let p = self.next_server().await?;
        let ok = p.payload.first() != Some(&0xFF);
        self.server_packet(&p.payload, text).await?;
        self.finish().await?;
        Ok(ok)
    }

    /// Passes on an OK, EOF, ERR or text packet outside a result set.
    async fn server_packet(&mut self, payload: &[u8], text: bool) -> Result<(), End> {
        match payload.first() {
            Some(0xFF) => {
                let masked = match wire::mask_err(payload, &self.masker) {
                    Ok(m) => m,
                    Err(e) => return Err(self.server_broke(e.to_string()).await),
                };
                let out = masked.as_deref().unwrap_or(payload);
                if let Ok(e) = wire::parse_err(out) {
                    self.frames.push(json!({"t": "err", "code": e.code, "message": String::from_utf8_lossy(e.message)}));
                }
                self.send_client(out).await
            }
            Some(0x00 | 0xFE) if !text => {
                if let Ok(st) = wire::status(payload) {
                    self.status = st.status;
                }
                let (affected, last_id) = wire::ok_counts(payload).unwrap_or((0, 0));
                self.frames
                    .push(json!({"t": "ok", "affected": affected, "last_insert_id": last_id}));
                match wire::mask_ok_info(payload, &self.masker) {
                    Some(masked) => self.send_client(&masked).await,
                    None => self.send_client(payload).await,
                }
            }
            _ => {
                let masked = self.masker.mask(payload);
                self.frames
                    .push(json!({"t": "text", "text": String::from_utf8_lossy(&masked)}));
                let masked = masked.into_owned();
                self.send_client(&masked).await
            }
        }
    }

    /// The answer to COM_QUERY or COM_STMT_EXECUTE: OK, ERR, or result sets, as many as the
    /// server says follow.
    async fn results(&mut self, binary: bool, statement: Option<u32>) -> Result<(), End> {
        loop {
            let p = self.next_server().await?;
            let payload = &p.payload[..];
            match payload.first() {
                Some(0x00) | Some(0xFF) => {
                    let err = payload[0] == 0xFF;
                    self.server_packet(payload, false).await?;
                    if err || self.status & wire::SERVER_MORE_RESULTS_EXISTS == 0 {
                        return self.finish().await;
                    }
                }
                Some(0xFB) if !binary => {
                    self.local_infile(payload).await?;
                }
                _ => {
                    let count = match wire::Reader::new(payload, "column count").lenenc() {
                        Ok(Some(n)) if n > 0 && n < 65536 => n as usize,
                        _ => return Err(self.server_broke("bad column count".into()).await),
                    };
                    self.send_client(payload).await?;
                    let columns = self.column_defs(count).await?;
                    let mut cursor = false;
                    if self.caps & caps::DEPRECATE_EOF == 0 {
                        let eof = self.next_server().await?;
                        if !wire::is_eof(&eof.payload, false) {
                            return Err(self
                                .server_broke("no EOF after the column definitions".into())
                                .await);
                        }
                        if let Ok(st) = wire::status(&eof.payload) {
                            cursor = st.status & SERVER_STATUS_CURSOR_EXISTS != 0;
                        }
                        self.send_client(&eof.payload).await?;
                    }
                    if let Some(id) = statement
                        && let Some(st) = self.statements.get_mut(&id)
                    {
                        st.columns = columns.clone();
                    }
                    if cursor {
                        // Rows come later, through COM_STMT_FETCH.
                        return self.finish().await;
                    }
                    let more = self.rows(&columns, binary).await?;
                    if !more {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Column definitions: masked, passed on, and their masks returned.
    async fn column_defs(&mut self, count: usize) -> Result<Vec<ColumnMask>, End> {
        let rules = &self.ctx.column_rules;
        let mut masks = Vec::with_capacity(count);
        let mut names = Vec::with_capacity(count);
        for _ in 0..count {
            let p = self.next_server().await?;
            let def = match wire::parse_column(&p.payload) {
                Ok(d) => d,
                Err(e) => return Err(self.server_broke(e.to_string()).await),
            };
            if matches!(def.charset, 35 | 54..=56 | 60 | 61 | 90 | 101..=124 | 128..=151 | 159..=183)
            {
                // UCS-2, UTF-16 and UTF-32 text: digits the masker cannot see. (The session is
                // pinned to utf8mb4, so only a CONVERT … USING could produce this.)
                return Err(self
                    .server_broke(format!(
                        "a column in a wide character set ({})",
                        def.charset
                    ))
                    .await);
            }
            let forced = !rules.is_empty()
                && (rules.output_name(&def.name)
                    || rules.source(&crate::mask::columns::SourceColumn {
                        schema: def.schema.clone(),
                        table: def.org_table.clone(),
                        column: def.org_name.clone(),
                    }));
            masks.push(ColumnMask::of(&def, forced));
            let masked = match wire::mask_column_def(&p.payload, &self.masker) {
                Ok(m) => m,
                Err(e) => return Err(self.server_broke(e.to_string()).await),
            };
            names.push(Value::String(
                String::from_utf8_lossy(&self.masker.mask(def.name.as_bytes())).into_owned(),
            ));
            self.send_client(masked.as_deref().unwrap_or(&p.payload))
                .await?;
        }
        self.frames.push(json!({"t": "columns", "names": names}));
        Ok(masks)
    }

    /// Rows up to their terminator; returns whether another result set follows.
    async fn rows(&mut self, columns: &[ColumnMask], binary: bool) -> Result<bool, End> {
        let deprecate_eof = self.caps & caps::DEPRECATE_EOF != 0;
        let mut count: u64 = 0;
        loop {
            let p = self.next_server().await?;
            let payload = &p.payload[..];
            if payload.first() == Some(&0xFF) {
                if count > 0 {
                    self.frames.push(json!({"t": "rows", "n": count}));
                }
                self.server_packet(payload, false).await?;
                self.finish().await?;
                return Ok(false);
            }
            if wire::is_eof(payload, deprecate_eof) {
                if let Ok(st) = wire::status(payload) {
                    self.status = st.status;
                }
                self.frames.push(json!({"t": "end", "rows": count}));
                self.send_client(payload).await?;
                let more = self.status & wire::SERVER_MORE_RESULTS_EXISTS != 0;
                if !more {
                    self.finish().await?;
                }
                return Ok(more);
            }
            let masked = if binary {
                wire::mask_binary_row(payload, columns, &self.masker)
            } else {
                wire::mask_text_row(payload, columns, &self.masker)
            };
            let masked = match masked {
                Ok(m) => m,
                // A row tollgate cannot decode cannot be masked: fail closed.
                Err(e) => return Err(self.server_broke(e.to_string()).await),
            };
            if masked.is_some() {
                metrics::counter!(crate::metrics::MASKED).increment(1);
            }
            let out = masked.as_deref().unwrap_or(payload);
            count += 1;
            if self.full && self.recorder.is_some() {
                let values = row_values(out, columns, binary, &self.masker);
                self.frames.push(json!({"t": "row", "v": values}));
            }
            self.send_client(out).await?;
        }
    }

    /// COM_STMT_PREPARE's answer: OK with the statement id, then parameter and column
    /// definitions; or ERR.
    async fn prepare_reply(&mut self) -> Result<(), End> {
        let p = self.next_server().await?;
        let payload = &p.payload[..];
        if payload.first() != Some(&0x00) {
            self.server_packet(payload, false).await?;
            return self.finish().await;
        }
        let mut r = wire::Reader::new(payload, "COM_STMT_PREPARE_OK");
        let parsed = (|| {
            r.u8()?;
            Ok::<_, wire::Malformed>((r.u32()?, r.u16()?, r.u16()?))
        })();
        let Ok((id, columns, params)) = parsed else {
            return Err(self.server_broke("bad COM_STMT_PREPARE_OK".into()).await);
        };
        self.frames
            .push(json!({"t": "prepared", "statement": id, "columns": columns, "params": params}));
        self.send_client(payload).await?;
        let deprecate_eof = self.caps & caps::DEPRECATE_EOF != 0;
        for n in [params, columns] {
            if n == 0 {
                continue;
            }
            self.column_defs(usize::from(n)).await?;
            if !deprecate_eof {
                let eof = self.next_server().await?;
                self.send_client(&eof.payload).await?;
            }
        }
        if self.statements.len() >= MAX_STATEMENTS {
            self.statements.clear();
        }
        self.statements.insert(
            id,
            Prepared {
                columns: Vec::new(),
                params,
                param_types: Vec::new(),
            },
        );
        self.finish().await
    }

    /// COM_FIELD_LIST's answer: column definitions up to EOF, or ERR.
    async fn field_list(&mut self) -> Result<(), End> {
        loop {
            let p = self.next_server().await?;
            let payload = &p.payload[..];
            if payload.first() == Some(&0xFF) || wire::is_eof(payload, true) {
                self.server_packet(payload, false).await?;
                return self.finish().await;
            }
            let masked = match wire::mask_column_def(payload, &self.masker) {
                Ok(m) => m,
                Err(e) => return Err(self.server_broke(e.to_string()).await),
            };
            self.send_client(masked.as_deref().unwrap_or(payload))
                .await?;
        }
    }

    /// The server asks for a local file (LOAD DATA LOCAL INFILE). Passed to the client only
    /// when the statement in flight is a LOAD DATA LOCAL the policy let through; the file's
    /// packets then stream to the server (recorded by size, not content). Otherwise the server
    /// gets an empty file and answers with its error.
    async fn local_infile(&mut self, request: &[u8]) -> Result<(), End> {
        if !self.local_infile || self.caps & caps::LOCAL_FILES == 0 {
            warn!(conn = %self.info.id, "the server asked for a local file outside an allowed LOAD DATA LOCAL; refused");
            self.frames
                .push(json!({"t": "local_infile", "refused": true}));
            // An empty packet: "no file".
            self.server.send(2, &[]).await.map_err(io)?;
            return Ok(());
        }
        self.frames.push(json!({"t": "local_infile", "file": String::from_utf8_lossy(&self.masker.mask(&request[1..]))}));
        self.send_client(request).await?;
        self.finish().await?;
        let mut sseq: u8 = 2;
        let mut bytes: u64 = 0;
        let max = self.ctx.config.limits.max_client_frame;
        loop {
            let p = match self.client.read(max).await {
                Ok(p) => p,
                Err(e) => return Err(End::ClientProtocol(e.to_string())),
            };
            if p.seq != self.cseq {
                let e = packet::Error::Sequence {
                    got: p.seq,
                    want: self.cseq,
                };
                return Err(self
                    .close(
                        1156,
                        "08S01",
                        &format!("Got packets out of order: {e}"),
                        End::ClientProtocol(e.to_string()),
                    )
                    .await);
            }
            self.cseq = p.next_seq;
            bytes += p.payload.len() as u64;
            sseq = self.server.send(sseq, &p.payload).await.map_err(io)?;
            if p.payload.is_empty() {
                break;
            }
        }
        self.frames
            .push(json!({"t": "local_infile_data", "bytes": bytes}));
        Ok(())
    }
}

fn io(e: packet::Error) -> End {
    End::Io(e.to_string())
}

/// `USE db` as a statement: `Some(Ok(name))` when the whole text is one USE, `Some(Err)` when
/// a USE hides among several statements, `None` when there is none.
fn uses_database(sql: &str) -> Option<Result<String, ()>> {
    if !super::contains_ci(sql, "use") {
        return None;
    }
    use sqlparser::ast::{Statement as S, Use};
    let statements =
        sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::MySqlDialect {}, sql).ok()?;
    let mut found = None;
    for s in &statements {
        if let S::Use(u) = s {
            let name = match u {
                Use::Object(n) | Use::Database(n) | Use::Schema(n) => n.to_string(),
                _ => return Some(Err(())),
            };
            found = Some(name.trim_matches('`').replace("``", "`"));
        }
    }
    match found {
        Some(_) if statements.len() > 1 => Some(Err(())),
        Some(name) => Some(Ok(name)),
        None => None,
    }
}

/// Statements the MySQL relay refuses whatever the policy says: MariaDB's `/*M! … */`
/// executable comments (the classifier reads them as comments), and changes to the settings
/// tollgate pinned (character sets, sql_mode) except `SET NAMES utf8mb4` / `utf8`.
fn session_guard(sql: &str) -> Option<&'static str> {
    if sql.contains("/*M!") || sql.contains("/*m!") {
        return Some("MariaDB executable comments (/*M! ... */) are not accepted");
    }

    let risky = [
        "sql_mode",
        "character_set",
        "charset",
        "names",
        "character set",
        "collation",
    ];
    if !super::contains_ci(sql, "set") || !risky.iter().any(|k| super::contains_ci(sql, k)) {
        return None;
    }
    let Ok(statements) =
        sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::MySqlDialect {}, sql)
    else {
        // Unreadable SQL that got this far was allowed unparsed; it must not touch these.
        return Some("statements that may change the character set or sql_mode are refused");
    };
    for s in &statements {
        let text = s.to_string().to_ascii_lowercase();
        if !text.starts_with("set") || !risky.iter().any(|k| text.contains(k)) {
            continue;
        }
        let words: Vec<&str> = text.split_ascii_whitespace().collect();
        let utf8 = |c: &str| {
            matches!(
                c.trim_matches(['\'', '"', '`']),
                "utf8mb4" | "utf8" | "utf8mb3"
            )
        };
        match words.as_slice() {
            ["set", "names", c] if utf8(c) => {}
            ["set", "names", c, "collate", _] if utf8(c) => {}
            _ => {
                return Some(
                    "the session's character sets and sql_mode are pinned by tollgate (SET NAMES utf8mb4 is accepted)",
                );
            }
        }
    }
    None
}

/// Whether a statement is LOAD DATA LOCAL (the only one the server may answer by asking the
/// client for a file).
fn is_load_local(sql: &str) -> bool {
    let words: Vec<String> = sql
        .split_ascii_whitespace()
        .take(4)
        .map(|w| w.to_ascii_lowercase())
        .collect();
    matches!(words.as_slice(), [a, b, c, ..] if a == "load" && (b == "data" || b == "xml") && c == "local")
}

/// The parameters of a COM_STMT_EXECUTE (after the statement id) as a binary row, with their
/// types (sent now, or `known` from the last execute), for the record stage.
fn execute_params(
    body: &[u8],
    params: usize,
    known: Vec<ColumnMask>,
) -> Option<(Vec<ColumnMask>, Vec<u8>)> {
    let mut r = wire::Reader::new(body, "COM_STMT_EXECUTE");
    r.bytes(4 + 1 + 4).ok()?;
    let bitmap = r.bytes(params.div_ceil(8)).ok()?.to_vec();
    let bound = r.u8().ok()?;
    let types = if bound == 1 {
        let mut t = Vec::with_capacity(params);
        for _ in 0..params {
            let ty = r.u8().ok()?;
            let flags = r.u8().ok()?;
            t.push(ColumnMask {
                ty,
                unsigned: flags & 0x80 != 0,
                numeric: false,
                forced: false,
            });
        }
        t
    } else {
        known
    };
    if types.len() != params {
        return None;
    }
    // Re-frame as a binary row (header, NULL bitmap at offset 2) so the row walker reads it.
    let mut row = vec![0x00];
    let mut shifted = vec![0u8; (params + 7 + 2) / 8];
    for i in 0..params {
        if bitmap[i / 8] & (1 << (i % 8)) != 0 {
            shifted[(i + 2) / 8] |= 1 << ((i + 2) % 8);
        }
    }
    row.extend_from_slice(&shifted);
    row.extend_from_slice(r.rest());
    wire::binary_values(&row, types.iter().map(|c| c.ty)).ok()?;
    Some((types, row))
}

/// A row's values as recorded: text as text, binary integers decoded, other binary values
/// by length.
fn row_values(payload: &[u8], columns: &[ColumnMask], binary: bool, masker: &Masker) -> Vec<Value> {
    let text = |v: &[u8]| -> Value {
        let m = masker.mask(v);
        match std::str::from_utf8(&m) {
            Ok(s)
                if !s
                    .chars()
                    .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r') =>
            {
                Value::String(s.to_owned())
            }
            _ => json!({"binary": v.len()}),
        }
    };
    if !binary {
        let mut r = wire::Reader::new(payload, "text row");
        return columns
            .iter()
            .map(|_| match r.lenenc_bytes() {
                Ok(Some(v)) => text(v),
                _ => Value::Null,
            })
            .collect();
    }
    let Ok(values) = wire::binary_values(payload, columns.iter().map(|c| c.ty)) else {
        return Vec::new();
    };
    use wire::types::*;
    values
        .iter()
        .zip(columns)
        .map(|(v, c)| match v {
            None => Value::Null,
            Some(v) => match (c.ty, v.len()) {
                (LONGLONG, 8) => {
                    let b: [u8; 8] = (*v).try_into().unwrap_or([0; 8]);
                    let n = if c.unsigned {
                        u64::from_le_bytes(b).to_string()
                    } else {
                        i64::from_le_bytes(b).to_string()
                    };
                    text(n.as_bytes())
                }
                (LONG | INT24, 4) => {
                    Value::from(i32::from_le_bytes((*v).try_into().unwrap_or([0; 4])))
                }
                (SHORT | YEAR, 2) => {
                    Value::from(i16::from_le_bytes((*v).try_into().unwrap_or([0; 2])))
                }
                (TINY, 1) => Value::from(v[0]),
                (FLOAT | DOUBLE | DATE | DATETIME | TIMESTAMP | TIME | NULL, _) => {
                    json!({"binary": v.len()})
                }
                _ => text(v),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn use_statements() {
        assert_eq!(uses_database("USE shop"), Some(Ok("shop".into())));
        assert_eq!(uses_database("use `sh``op`;"), Some(Ok("sh`op".into())));
        assert_eq!(uses_database("select 1; use other"), Some(Err(())));
        assert_eq!(uses_database("select user()"), None);
        assert_eq!(uses_database("select 1"), None);
    }

    #[test]
    fn load_local() {
        assert!(is_load_local(
            "LOAD DATA LOCAL INFILE '/tmp/x' INTO TABLE t"
        ));
        assert!(!is_load_local("LOAD DATA INFILE '/tmp/x' INTO TABLE t"));
        assert!(!is_load_local("select 'load data local'"));
    }
}
