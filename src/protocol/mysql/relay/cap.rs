//! Result caps on the MySQL wire (`pipeline::ResultCap`, a rule's `result_cap`).
//!
//! Row packets (text and binary protocol, COM_STMT_FETCH included) are counted against the
//! cap of the statement they answer: a COM_QUERY's rows together (all its result sets), a
//! prepared statement's rows from its COM_STMT_EXECUTE through every COM_STMT_FETCH of its
//! cursor. Each row costs a compare; nothing is buffered.
//!
//! At the cap the row is withheld, tollgate runs `KILL QUERY <thread id>` on a side connection
//! logged in as the session's upstream user (MariaDB Knowledge Base, "KILL"), reads and drops
//! what the server still sends until the command's answer ends (the server's ERR 1317, or the
//! rows' end when the statement finished first), and ends the result with ERR 1317
//! (ER_QUERY_INTERRUPTED, SQLSTATE 70100) naming the rule. The connection stays usable; an
//! open transaction stays open (MariaDB rolls back only the interrupted statement).

use super::*;
use crate::pipeline::ResultCap;

/// Rows and bytes counted against one statement's cap.
#[derive(Debug, Clone)]
pub(super) struct Counting {
    pub cap: Arc<ResultCap>,
    pub rows: u64,
    pub bytes: u64,
}

impl Counting {
    pub fn new(cap: Arc<ResultCap>) -> Counting {
        Counting {
            cap,
            rows: 0,
            bytes: 0,
        }
    }
}

impl Relay<'_> {
    /// Counts a row packet of `len` payload bytes; at the cap, cancels the statement, drains
    /// the server's answer and ends the result with ERR 1317. Returns `true` when it did (the
    /// row is not to be sent, and the command's answer is over).
    pub(super) async fn count_row(&mut self, len: usize) -> Result<bool, End> {
        let Some(c) = &mut self.counting else {
            return Ok(false);
        };
        c.rows += 1;
        c.bytes += len as u64;
        let Some((what, limit)) = c.cap.exceeded(c.rows, c.bytes) else {
            return Ok(false);
        };
        // (The counts stay past the cap: a cursor's next fetch stops at its first row.)
        let (what, limit, rows, bytes) = (what, limit.clone(), c.rows, c.bytes);
        metrics::counter!(
            crate::metrics::RESULT_CAPPED,
            "protocol" => "mysql",
            "limit" => what,
            "rule" => limit.rule.clone()
        )
        .increment(1);
        info!(conn = %self.info.id, rule = %limit.rule, limit = what, max = limit.max, "result cap reached; killing the query");
        self.kill_query().await;
        self.drain().await?;
        if let Some(recorder) = self.recorder {
            let event = Event::new(
                audit::kind::RESULT_CAPPED,
                Outcome::Refused,
                self.info.who.clone(),
                json!({"rule": limit.rule, "limit": what, "max": limit.max, "rows": rows, "bytes": bytes}),
            );
            let _ = recorder.record_wait(event).await;
        }
        self.reply_err(1317, "70100", &ResultCap::message(what, &limit))
            .await?;
        Ok(true)
    }

    /// `KILL QUERY <thread>` on a side connection as the session's upstream user; failures
    /// are logged (the drain then reads the statement to its end).
    async fn kill_query(&mut self) {
        let killed = async {
            let (mut side, _) = crate::protocol::mysql::upstream::connect_upstream(
                self.ctx,
                &self.target,
                &self.info.identity,
                &self.info.database,
                self.caps,
                45,
            )
            .await
            .map_err(|e| e.to_string())?;
            let mut query = vec![0x03];
            query.extend_from_slice(format!("KILL QUERY {}", self.upstream_thread).as_bytes());
            side.send(0, &query).await.map_err(|e| e.to_string())?;
            let answer = side
                .read(self.ctx.config.limits.max_server_frame)
                .await
                .map_err(|e| e.to_string())?;
            let _ = side.send(0, &[0x01]).await;
            match answer.payload.first() {
                Some(0xFF) => Err(format!(
                    "the server refused KILL QUERY: {}",
                    String::from_utf8_lossy(&answer.payload)
                )),
                _ => Ok(()),
            }
        };
        match tokio::time::timeout(std::time::Duration::from_secs(5), killed).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                warn!(conn = %self.info.id, error = %e, "KILL QUERY for a result cap failed")
            }
            Err(_) => warn!(conn = %self.info.id, "KILL QUERY for a result cap timed out"),
        }
    }

    /// Reads and drops the rest of the command's answer: rows to their end, and any result
    /// sets that follow, until an ERR or an end without SERVER_MORE_RESULTS_EXISTS.
    async fn drain(&mut self) -> Result<(), End> {
        let deprecate_eof = self.caps & caps::DEPRECATE_EOF != 0;
        // In rows (true), or waiting for the next result set's first packet (false).
        let mut in_rows = true;
        loop {
            let p = self.next_server().await?;
            let payload = &p.payload[..];
            if payload.first() == Some(&0xFF) {
                return Ok(());
            }
            if in_rows {
                if wire::is_eof(payload, deprecate_eof) {
                    if let Ok(st) = wire::status(payload) {
                        self.status = st.status;
                    }
                    if self.status & wire::SERVER_MORE_RESULTS_EXISTS == 0 {
                        return Ok(());
                    }
                    in_rows = false;
                }
                continue;
            }
            if payload.first() == Some(&0x00) {
                if let Ok(st) = wire::status(payload) {
                    self.status = st.status;
                }
                if self.status & wire::SERVER_MORE_RESULTS_EXISTS == 0 {
                    return Ok(());
                }
                continue;
            }
            // A result set: column count, definitions, (EOF), then rows.
            let count = match wire::Reader::new(payload, "column count").lenenc() {
                Ok(Some(n)) if n > 0 && n < 65536 => n,
                _ => return Err(self.server_broke("bad column count".into()).await),
            };
            for _ in 0..count {
                self.next_server().await?;
            }
            if !deprecate_eof {
                self.next_server().await?;
            }
            in_rows = true;
        }
    }
}
