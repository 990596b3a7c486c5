//! A statement's lifecycle on the MySQL wire: inspect, hold for approval, settle (count,
//! record, refuse if unrecordable), then forward or answer the refusal; and the relay's own
//! guards that run before the policy (KILL, USE, session settings, LOAD DATA LOCAL).

use super::*;

use crate::approval::preview::Preview;

impl Relay<'_> {
    /// Runs a statement through the inspect stage (holding it for approval when the rules
    /// say so) and records it; `true` when it may be forwarded. A refusal is answered here.
    pub(super) async fn decide(&mut self, sql: &str, origin: Origin<'_>) -> Result<bool, End> {
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
                    "tollgate: this connection stays in its target's database; {} is outside it",
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
        self.last_cap = ruling.result_cap.clone().map(Arc::new);
        let verdict = crate::conn::statement::settle(
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
    pub(super) async fn hold(
        &mut self,
        approvals: &Arc<crate::approval::Approvals>,
        statement: &Statement<'_>,
        ruling: &Ruling,
        hold: &crate::pipeline::Hold,
    ) -> Result<(Verdict, String), End> {
        use crate::conn::statement::{
            approval_fingerprint, approved_by_window, decided, submit_for_approval,
        };
        let fingerprint = approval_fingerprint(
            &self.info,
            statement,
            ruling,
            hold,
            crate::policy::classify::SqlDialect::MySql,
        );
        if let Some(decided) = approved_by_window(approvals, &self.info, &fingerprint).await {
            return Ok(decided);
        }
        let mut ticket = match submit_for_approval(
            approvals,
            &self.info,
            statement,
            ruling,
            hold,
            &self.masker,
            fingerprint,
            Some(preview(self.ctx, &self.target, &self.info, statement, ruling).await),
        )
        .await
        {
            Ok(ticket) => ticket,
            Err(refused) => return Ok(refused),
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
    pub(super) fn kill_target(&self, kill: Kill) -> Option<u32> {
        let id = match kill {
            Kill::Query(id) | Kill::Connection(id) => id,
        };
        let (thread, interrupt) = self.ctx.conns.killable(
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
    pub(super) fn same_target_database(&self, name: &str) -> Option<String> {
        let chosen = self.ctx.mysql_target(name)?;
        if !Arc::ptr_eq(&chosen, &self.target) {
            return None;
        }
        Some(self.target.config.upstream_database(name).to_owned())
    }

    pub(super) async fn init_db(&mut self, name: &str) -> Result<(), End> {
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
    pub(super) async fn query(&mut self, sql: &str) -> Result<(), End> {
        if !self.decide(sql, Origin::Simple).await? {
            return Ok(());
        }
        let mut text = std::borrow::Cow::Borrowed(sql);
        match crate::protocol::mysql::parse_kill(sql) {
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
        self.counting = self.last_cap.take().map(cap::Counting::new);
        let ok = self.results(false, None).await?;
        self.counting = None;
        // What a PREPARE or DEALLOCATE PREPARE defined counts once the server said so.
        self.inspect.answered(ok);
        Ok(())
    }
}

/// `USE db` as a statement: `Some(Ok(name))` when the whole text is one USE, `Some(Err)` when
/// a USE hides among several statements, `None` when there is none.
pub(super) fn uses_database(sql: &str) -> Option<Result<String, ()>> {
    if !crate::protocol::mysql::contains_ci(sql, "use") {
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
pub(super) fn session_guard(sql: &str) -> Option<&'static str> {
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
    if !crate::protocol::mysql::contains_ci(sql, "set")
        || !risky
            .iter()
            .any(|k| crate::protocol::mysql::contains_ci(sql, k))
    {
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
pub(super) fn is_load_local(sql: &str) -> bool {
    let words: Vec<String> = sql
        .split_ascii_whitespace()
        .take(4)
        .map(|w| w.to_ascii_lowercase())
        .collect();
    matches!(words.as_slice(), [a, b, c, ..] if a == "load" && (b == "data" || b == "xml") && c == "local")
}

/// The server's plan for a held UPDATE, DELETE or INSERT … SELECT calling no function
/// (`policy::preview::check`), on a side connection through the session's upstream login
/// (`upstream::explain`), within 3 s; whatever goes wrong becomes the preview's line.
async fn preview(
    ctx: &MyContext,
    target: &TargetRuntime,
    info: &ConnInfo,
    statement: &Statement<'_>,
    ruling: &Ruling,
) -> Preview {
    let dialect = crate::policy::classify::SqlDialect::MySql;
    if let Err(why) = crate::policy::preview::check(statement.sql, dialect, &ruling.kinds) {
        return Preview::unavailable(why);
    }
    let ask = crate::protocol::mysql::upstream::explain(
        ctx,
        target,
        &info.identity,
        &info.database,
        statement.sql,
    );
    match tokio::time::timeout(std::time::Duration::from_secs(3), ask).await {
        Err(_) => Preview::unavailable("preview timed out"),
        Ok(Ok(plan)) => Preview::from_mysql_plan(&plan),
        Ok(Err(e)) => {
            // The server's words, not the statement text the error repeats.
            let e = e.to_string();
            let why = e.rsplit_once("refused: ").map_or(e.as_str(), |(_, w)| w);
            let why: String = crate::mask::for_log(why).chars().take(200).collect();
            Preview::unavailable(format!("preview failed: {why}"))
        }
    }
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
