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
//!
//! - this module: the connection's state, the command loop and dispatch, IO and recording;
//! - [`statement`]: a statement's lifecycle (inspect, hold, settle, refuse) and the relay's own
//!   guards (KILL, USE, session settings, LOAD DATA LOCAL);
//! - [`results`]: the server's answers streamed back through the masker.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

mod cap;
mod results;
mod statement;

use results::{execute_params, row_values};

use super::MyContext;
use super::handshake::{Established, caps};
use super::packet::{self, FLUSH_AT, PacketIo};
use super::wire::{self, ColumnMask};
use super::{Entry, Kill};
use crate::audit::{self, Event, Outcome};
use crate::conn::{Control, Lifecycle, Phase, TargetRuntime};
use crate::mask::Masker;
use crate::pipeline::{ConnInfo, ConnInspect, Origin, Ruling, Statement, Verdict};

/// Why a MySQL relay ended.
#[derive(Debug)]
pub enum End {
    ClientClosed,
    /// The server closed the connection or it broke; the client got ERR 2013.
    ServerClosed,
    /// The server sent nothing for `upstream_timeout` while a command waited; the client got
    /// ERR 2013.
    ServerStalled,
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

/// Server frames kept for one audit record, at most.
const FRAMES_PER_RECORD: usize = 256;
/// Prepared statements tracked per connection, at most.
const MAX_STATEMENTS: usize = 10_000;

const SERVER_STATUS_CURSOR_EXISTS: u16 = 0x0040;

/// The information_schema tables agents may read: the catalog of schemas, tables, columns,
/// keys, constraints and routines (MariaDB Knowledge Base, "Information Schema Tables").
const INFORMATION_SCHEMA_CATALOG: &[&str] = &[
    "character_sets",
    "check_constraints",
    "collation_character_set_applicability",
    "collations",
    "columns",
    "engines",
    "key_column_usage",
    "parameters",
    "partitions",
    "referential_constraints",
    "routines",
    "schemata",
    "statistics",
    "table_constraints",
    "tables",
    "triggers",
    "views",
];

/// A prepared statement as tollgate tracks it.
struct Prepared {
    /// The column masks of its last result set, for COM_STMT_FETCH.
    columns: Vec<ColumnMask>,
    /// The table columns that result set's columns come from.
    sources: Vec<Option<Arc<str>>>,
    params: u16,
    /// The parameter types last bound (COM_STMT_EXECUTE sends them only when they change).
    param_types: Vec<ColumnMask>,
    /// Its result cap (from the ruling on its text), and the rows and bytes its cursor has
    /// returned since its last COM_STMT_EXECUTE.
    cap: Option<Arc<crate::pipeline::ResultCap>>,
    counted: (u64, u64),
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
    ctx: &'a MyContext,
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
    target: Arc<TargetRuntime>,
    /// Server frames waiting to be recorded.
    frames: Vec<Value>,
    /// Rows sent, and rows with a value masked, since the last `server_frames` record (its
    /// `rows` and `masked`, as on PostgreSQL).
    frame_rows: u64,
    frame_masked: u64,
    /// Sequence id of the next packet to the client.
    cseq: u8,
    /// Whether the statement in flight is a LOAD DATA LOCAL the policy let through.
    local_infile: bool,
    /// A KILL of this connection from another one: cancels a held statement.
    interrupt: Arc<tokio::sync::Notify>,
    /// The table columns (`schema.table.column`) the current result set's columns come from,
    /// for promotions (`conn::promotion`), and the ones this connection promoted.
    sources: Vec<Option<Arc<str>>>,
    promoted_here: std::collections::HashSet<Arc<str>>,
    /// The server's id of the upstream session (`KILL QUERY` at a result cap).
    upstream_thread: u32,
    /// The result cap of the statement last ruled on, and the rows counted against the cap
    /// of the statement whose answer is streaming.
    last_cap: Option<Arc<crate::pipeline::ResultCap>>,
    counting: Option<cap::Counting>,
}

/// Runs an established connection until either side ends it.
pub async fn run(
    ctx: &MyContext,
    est: Established,
    info: ConnInfo,
    lifecycle: &Lifecycle,
    mut control: mpsc::Receiver<Control>,
) -> End {
    let masker = ctx.masker_for(&info.identity);
    let interrupt = Arc::new(tokio::sync::Notify::new());
    let _registered = ctx.conns.register(
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
        inspect: match ctx.mysql_targets.get(&info.target) {
            Some(t) => crate::conn::promotion::guard(
                ctx.stages.inspect.connect(&info),
                std::sync::Arc::clone(&t.promoted),
                crate::policy::classify::SqlDialect::MySql,
            ),
            None => ctx.stages.inspect.connect(&info),
        },
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
        frame_rows: 0,
        frame_masked: 0,
        cseq: 1,
        local_infile: false,
        interrupt,
        sources: Vec::new(),
        promoted_here: Default::default(),
        upstream_thread: est.upstream_thread,
        last_cap: None,
        counting: None,
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
            Err(End::Audit(why)) => {
                // Fail closed: what could not be recorded is dropped, and the client is told
                // (the store-failure errno, as for a refused statement) before the end.
                relay.discard_unrecorded();
                let (code, state) = errno("58030");
                let message = format!(
                    "tollgate: the audit trail cannot record the result ({why}); the connection is closed"
                );
                let _ = relay
                    .client
                    .send(relay.cseq, &wire::err(code, state, &message))
                    .await;
                return End::Audit(why);
            }
            Err(end) => return end,
        }
    }
}

impl Relay<'_> {
    /// Sends a final ERR and ends.
    pub(super) async fn close(&mut self, code: u16, state: &str, message: &str, end: End) -> End {
        self.last_err(&wire::err(code, state, message)).await;
        end
    }

    /// Sends a final ERR. What is queued for the client goes with it only if it can be
    /// recorded first; otherwise it is dropped.
    pub(super) async fn last_err(&mut self, err: &[u8]) {
        if self.record_frames().await.is_err() {
            self.discard_unrecorded();
        }
        let _ = self.client.send(self.cseq, err).await;
    }

    /// Drops what is queued for the client because it could not be recorded: the next packet
    /// takes the first dropped one's sequence id.
    pub(super) fn discard_unrecorded(&mut self) {
        if let Some(seq) = self.client.discard() {
            self.cseq = seq;
        }
    }

    /// Whether a statement names a table in another database than the session's.
    pub(super) fn outside_database(&self, ruling: &Ruling) -> Option<String> {
        let current = self
            .target
            .config
            .upstream_database(&self.info.database)
            .to_ascii_lowercase();
        ruling.tables.iter().find_map(|t| {
            let (schema, table) = t.rsplit_once('.')?;
            let schema = schema.trim_matches('`').to_ascii_lowercase();
            // information_schema: only its catalog of the database's own structure, not the
            // views of other sessions (PROCESSLIST, INNODB_TRX with their statements) or of
            // the server's internals.
            if schema == "information_schema" {
                return (!INFORMATION_SCHEMA_CATALOG
                    .contains(&table.to_ascii_lowercase().as_str()))
                .then(|| format!("information_schema.{table}"));
            }
            (schema != current).then(|| schema.clone())
        })
    }

    /// A command that does not decode: the client is told, and the connection ends.
    pub(super) async fn malformed(&mut self, e: wire::Malformed) -> End {
        let why = e.to_string();
        self.close(1047, "08S01", &why, End::ClientProtocol(why.clone()))
            .await
    }

    /// A statement's text; `None` (after an ERR to the client) when it is not UTF-8, which
    /// the classifier cannot read.
    pub(super) async fn sql_text<'b>(&mut self, body: &'b [u8]) -> Result<Option<&'b str>, End> {
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
    pub(super) async fn reply_err(
        &mut self,
        code: u16,
        state: &str,
        message: &str,
    ) -> Result<(), End> {
        self.frames.push(json!({"t": "err", "code": code, "message": crate::mask::for_log(message), "from": "tollgate"}));
        // tollgate's own refusal is sent even when it cannot be recorded (the refusal may be
        // because the store is failing); nothing from the server is queued with it.
        if self.record_frames().await.is_err() {
            self.discard_unrecorded();
        }
        self.cseq = self
            .client
            .queue(self.cseq, &wire::err(code, state, message));
        self.client.flush().await.map_err(io)
    }

    /// Records the client's command frame before it is forwarded.
    pub(super) async fn record_client(&mut self, frame: Value) -> Result<(), End> {
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
            .record_within(event)
            .await
            .map_err(|e| End::Audit(e.to_string()))
    }

    /// Records a command that expects an answer before it is forwarded; when the audit trail
    /// cannot take it (within `queue_wait`), the command is refused (ERR 1105, as a statement
    /// refused for the same reason) and the connection carries on: `Ok(false)`.
    pub(super) async fn record_request(&mut self, frame: Value) -> Result<bool, End> {
        match self.record_client(frame).await {
            Ok(()) => Ok(true),
            Err(End::Audit(why)) => {
                let (code, state) = errno("58030");
                self.reply_err(
                    code,
                    state,
                    &format!(
                        "tollgate: statement refused because the audit trail cannot record it ({why}); retry shortly"
                    ),
                )
                .await?;
                Ok(false)
            }
            Err(end) => Err(end),
        }
    }

    /// Records the server frames gathered so far (before the bytes they describe are written).
    pub(super) async fn record_frames(&mut self) -> Result<(), End> {
        if self.frames.is_empty() {
            return Ok(());
        }
        let frames = std::mem::take(&mut self.frames);
        let rows = std::mem::take(&mut self.frame_rows);
        let masked = std::mem::take(&mut self.frame_masked);
        let Some(recorder) = self.recorder else {
            return Ok(());
        };
        let event = Event::new(
            audit::kind::SERVER_FRAMES,
            Outcome::Info,
            self.info.who.clone(),
            json!({ "frames": frames, "rows": rows, "masked": masked }),
        );
        recorder
            .record_result(event)
            .await
            .map_err(|e| End::Audit(e.to_string()))
    }

    /// Queues a packet for the client, recording and writing out when the queue is full.
    pub(super) async fn send_client(&mut self, payload: &[u8]) -> Result<(), End> {
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
    pub(super) async fn finish(&mut self) -> Result<(), End> {
        self.record_frames().await?;
        self.client.flush().await.map_err(io)
    }

    pub(super) async fn send_server(&mut self, payload: &[u8]) -> Result<(), End> {
        if let Err(e) = self.server.send(0, payload).await {
            warn!(conn = %self.info.id, error = %e, "the server connection broke");
            self.last_err(&wire::err(
                2013,
                "HY000",
                "Lost connection to the server (tollgate's upstream connection broke)",
            ))
            .await;
            return Err(End::ServerClosed);
        }
        Ok(())
    }

    /// The server's next packet. A server that sends nothing for `upstream_timeout` while a
    /// command waits for its answer is taken for stalled: the client gets ERR 2013 and the
    /// connection ends.
    pub(super) async fn next_server(&mut self) -> Result<packet::Packet, End> {
        let limits = &self.ctx.config.limits;
        let read = self.server.read(limits.max_server_frame);
        let read = if limits.upstream_timeout.is_zero() {
            read.await
        } else {
            match tokio::time::timeout(limits.upstream_timeout, read).await {
                Ok(read) => read,
                Err(_) => {
                    let limit = limits.upstream_timeout;
                    warn!(conn = %self.info.id, ?limit, "the server stalled during a command");
                    let message = format!(
                        "Lost connection to the server: it sent nothing for {} (tollgate limits.upstream_timeout); the statement may or may not have run",
                        humantime::format_duration(limit)
                    );
                    self.last_err(&wire::err(2013, "HY000", &message)).await;
                    return Err(End::ServerStalled);
                }
            }
        };
        match read {
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
    pub(super) async fn server_broke(&mut self, why: String) -> End {
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
    pub(super) async fn command(&mut self, payload: bytes::Bytes) -> Result<Option<End>, End> {
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
                if !self.record_request(json!({"t": "COM_QUERY"})).await? {
                    return Ok(None);
                }
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
                        super::upstream::pin_session(&mut self.server, self.caps, max).await
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
                if !self
                    .record_request(json!({"t": "COM_STMT_PREPARE"}))
                    .await?
                {
                    return Ok(None);
                }
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
                if !self.record_request(frame).await? {
                    return Ok(None);
                }
                self.send_server(&payload).await?;
                // A cursor's rows count from its COM_STMT_EXECUTE through every fetch.
                self.counting = self.statements.get_mut(&id).and_then(|st| {
                    if cmd == 0x17 {
                        st.counted = (0, 0);
                    }
                    let mut c = cap::Counting::new(Arc::clone(st.cap.as_ref()?));
                    (c.rows, c.bytes) = st.counted;
                    Some(c)
                });
                if cmd == 0x17 {
                    self.results(true, Some(id)).await?;
                } else {
                    let (columns, sources) = self
                        .statements
                        .get(&id)
                        .map(|s| (s.columns.clone(), s.sources.clone()))
                        .unwrap_or_default();
                    self.sources = sources;
                    self.rows(&columns, true).await?;
                }
                if let Some(c) = self.counting.take()
                    && let Some(st) = self.statements.get_mut(&id)
                {
                    st.counted = (c.rows, c.bytes);
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
}

fn io(e: packet::Error) -> End {
    End::Io(e.to_string())
}
