//! `KILL` on the MySQL listener: tollgate's connection ids (the ones clients see) mapped to
//! the upstream threads, only for the same identity on the same target.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A live MySQL connection, as `KILL` needs it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub target: String,
    pub issuer: String,
    pub subject: String,
    /// The upstream server's thread id of the connection (never shown to clients).
    pub upstream_thread: u32,
    /// Wakes the connection's statement held for approval, if one is (a KILL cancels it).
    pub interrupt: Arc<tokio::sync::Notify>,
}

/// tollgate's MySQL connection ids (the ones clients see) to their upstream connections.
#[derive(Default)]
pub struct Registry {
    conns: Mutex<HashMap<u32, Entry>>,
}

/// Removes its connection from the registry when dropped.
pub struct Registered {
    registry: Arc<Registry>,
    id: u32,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

impl Registry {
    pub fn register(self: &Arc<Self>, id: u32, entry: Entry) -> Registered {
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, entry);
        Registered {
            registry: Arc::clone(self),
            id,
        }
    }

    /// The upstream thread of connection `id`, if it is one the asker may kill: the same
    /// identity (issuer and subject) on the same target. Anything else reads as unknown, so
    /// ids of other identities' connections cannot even be probed.
    pub fn killable(
        &self,
        id: u32,
        target: &str,
        issuer: &str,
        subject: &str,
    ) -> Option<(u32, Arc<tokio::sync::Notify>)> {
        let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns
            .get(&id)
            .filter(|e| e.target == target && e.issuer == issuer && e.subject == subject)
            .map(|e| (e.upstream_thread, Arc::clone(&e.interrupt)))
    }
}

/// What a `KILL` statement asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kill {
    Query(u32),
    Connection(u32),
}

/// Finds KILL in a statement text: `Some(Ok)` for one `KILL [QUERY | CONNECTION] <id>`
/// alone, `Some(Err)` for any other KILL (with a user, an expression, among other statements,
/// or text that does not parse but mentions KILL: refused, since tollgate maps only ids it gave
/// out), `None` when there is no KILL at all.
pub fn parse_kill(sql: &str) -> Option<Result<Kill, ()>> {
    if !super::contains_ci(sql, "kill") {
        return None;
    }
    use sqlparser::ast::{KillType, Statement};
    let Ok(statements) =
        sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::MySqlDialect {}, sql)
    else {
        return Some(Err(()));
    };
    let kills = statements
        .iter()
        .filter(|s| matches!(s, Statement::Kill { .. }))
        .count();
    if kills == 0 {
        return None;
    }
    if statements.len() != 1 {
        return Some(Err(()));
    }
    let Statement::Kill { modifier, id } = &statements[0] else {
        return Some(Err(()));
    };
    let id = u32::try_from(*id).map_err(|_| ());
    Some(match modifier {
        Some(KillType::Query) => id.map(Kill::Query),
        Some(KillType::Connection) | None => id.map(Kill::Connection),
        _ => Err(()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_forms() {
        assert_eq!(parse_kill("KILL QUERY 12;"), Some(Ok(Kill::Query(12))));
        assert_eq!(parse_kill("kill 7"), Some(Ok(Kill::Connection(7))));
        assert_eq!(
            parse_kill(" Kill  Connection 9 "),
            Some(Ok(Kill::Connection(9)))
        );
        assert_eq!(parse_kill("KILL USER bob"), Some(Err(())));
        assert_eq!(parse_kill("KILL QUERY ID 3"), Some(Err(())));
        assert_eq!(parse_kill("/**/KILL/**/12"), Some(Ok(Kill::Connection(12))));
        assert_eq!(parse_kill("select 1; kill 12"), Some(Err(())));
        assert_eq!(parse_kill("select 1"), None);
        assert_eq!(parse_kill("select 'kill me'"), None);
    }

    #[test]
    fn only_the_same_identity_may_kill() {
        let r = Arc::new(Registry::default());
        let _g = r.register(
            5,
            Entry {
                target: "shop".into(),
                issuer: "i".into(),
                subject: "a".into(),
                upstream_thread: 900,
                interrupt: Default::default(),
            },
        );
        assert_eq!(r.killable(5, "shop", "i", "a").map(|k| k.0), Some(900));
        assert!(r.killable(5, "shop", "i", "b").is_none());
        assert!(r.killable(5, "other", "i", "a").is_none());
        drop(_g);
        assert!(r.killable(5, "shop", "i", "a").is_none());
    }
}
