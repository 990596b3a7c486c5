//! A statement held for approval on its live connection: what came before it is forwarded,
//! the client is told (a NoticeResponse through the client writer), and the loop waits for the
//! decision while it keeps reading the client (so a disconnect withdraws the request).

use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tracing::info;

use super::{Batch, End, write_all};
use crate::approval::preview::Preview;
use crate::audit::{self, Event, Outcome, Recorder};
use crate::conn::Control;
use crate::conn::statement::{
    approval_fingerprint, approved_by_window, decided, submit_for_approval,
};
use crate::mask::Masker;
use crate::net::{ReadHalf, WriteHalf};
use crate::pipeline::{ConnInfo, Ruling, Statement, Verdict};
use crate::protocol::pg::catalog::ConnCatalog;
use crate::protocol::pg::messages;

/// What holding a statement needs of the client-to-server loop.
pub(super) struct Held<'a, 'b> {
    pub ctx: &'a crate::protocol::pg::PgContext,
    /// The batch's client frames so far, recorded before its first part is forwarded.
    pub frames: &'a mut Vec<serde_json::Value>,
    pub recorder: Option<&'a Recorder>,
    pub batch: &'a mut Batch,
    pub buf: &'a [u8],
    /// Where the held message starts in `buf`.
    pub pos: usize,
    pub wr: &'a mut WriteHalf,
    pub rd: &'a mut ReadHalf,
    pub early: &'a mut Vec<u8>,
    pub control: &'b mpsc::Sender<Control>,
    /// How the client's CancelRequest reaches the held statement.
    pub interrupt: &'a crate::protocol::pg::cancel::Interrupt,
}

/// Client bytes buffered at most while a statement is held; beyond it the client is no
/// longer read (so its disconnect is noticed only at the decision).
const MAX_EARLY: usize = 1 << 20;

/// Holds a statement until an approver decides: what came before it is forwarded, the client
/// is told (NoticeResponse) and the connection waits, its transaction open. Returns the
/// verdict for the statement and a note for the record; ends the connection if the client
/// leaves meanwhile (the request is then cancelled). The client's CancelRequest (psql's
/// Ctrl-C) withdraws the request and ends the statement with 57014, as a cancelled query ends.
pub(super) async fn hold_statement(
    info: &ConnInfo,
    approvals: &std::sync::Arc<crate::approval::Approvals>,
    statement: &Statement<'_>,
    ruling: &Ruling,
    hold: &crate::pipeline::Hold,
    masker: &Masker,
    held: &mut Held<'_, '_>,
) -> Result<(Verdict, String), End> {
    let fingerprint = approval_fingerprint(
        info,
        statement,
        ruling,
        hold,
        crate::policy::classify::SqlDialect::Postgres,
    );
    if let Some(decided) = approved_by_window(approvals, info, &fingerprint).await {
        return Ok(decided);
    }
    // From here a CancelRequest ends this statement rather than going to the server.
    let (_holding, cancelled) = held.interrupt.hold();
    tokio::pin!(cancelled);
    let preview = preview(held.ctx, info, statement, ruling).await;
    let mut ticket = match submit_for_approval(
        approvals,
        info,
        statement,
        ruling,
        hold,
        masker,
        fingerprint,
        Some(preview),
    )
    .await
    {
        Ok(ticket) => ticket,
        Err(refused) => return Ok(refused),
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

/// How long the impact preview may take, side connection's login included; past it the
/// request goes to the approvers saying so.
const PREVIEW_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// The server's plan for a held UPDATE, DELETE, INSERT … SELECT or MERGE, asked on a side
/// connection in the agent's role and database inside a READ ONLY transaction: EXPLAIN without
/// ANALYZE plans and never executes; statements calling functions are not planned
/// (`policy::preview::check`). Whatever goes wrong becomes the preview's line, never a refusal.
async fn preview(
    ctx: &crate::protocol::pg::PgContext,
    info: &ConnInfo,
    statement: &Statement<'_>,
    ruling: &Ruling,
) -> Preview {
    let dialect = crate::policy::classify::SqlDialect::Postgres;
    if let Err(why) = crate::policy::preview::check(statement.sql, dialect, &ruling.kinds) {
        return Preview::unavailable(why);
    }
    let Some(target) = ctx.target(&info.database) else {
        return Preview::unavailable("preview failed: no target");
    };
    let mut side = ConnCatalog::new(ctx, target, &info.identity, &info.database);
    let ask = async {
        side.query("BEGIN READ ONLY".into()).await?;
        side.query(format!(
            "SET LOCAL statement_timeout = {}",
            PREVIEW_TIMEOUT.as_millis()
        ))
        .await?;
        let rows = side
            .query(format!("EXPLAIN (VERBOSE, FORMAT JSON) {}", statement.sql))
            .await?;
        let _ = side.query("ROLLBACK".into()).await;
        Ok::<_, String>(rows)
    };
    match tokio::time::timeout(PREVIEW_TIMEOUT, ask).await {
        Err(_) => Preview::unavailable("preview timed out"),
        Ok(Err(e)) => {
            let e: String = crate::mask::for_log(&e).chars().take(200).collect();
            Preview::unavailable(format!("preview failed: {e}"))
        }
        Ok(Ok(rows)) => match rows
            .first()
            .and_then(|r| r.first())
            .and_then(|v| v.as_deref())
        {
            Some(plan) => Preview::from_pg_plan(plan),
            None => Preview::unavailable("preview failed: no plan"),
        },
    }
}
