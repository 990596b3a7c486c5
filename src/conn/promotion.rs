//! Card-number columns found at run time (issue #17). A column the computed-columns rules do
//! not name can still hold card numbers in free text (`note`); reading it whole is masked, but
//! `substr(note, 11, 8)` or `translate(note, '0123456789', 'abcdefghij')` would hand the digits
//! over in pieces or letters. So once the masker finds a card number in a result column that
//! comes from a table column (a PostgreSQL RowDescription's table OID and attribute number,
//! named through the catalog; a MySQL column definition's schema, table and column), that
//! column is **promoted**: for its target, from then on (every
//! connection; the promotion is recorded), a statement that computes over a column of that name
//! is refused like computing over `pan`. Without a policy (tollgate then forwards everything,
//! and says so) promotions are recorded but not enforced.
//!
//! The inspect stage is wrapped ([`guard`]): its own ruling stands unless it forwards a
//! statement whose computed columns (the classifier's, the same list the `computed_columns`
//! rules match) include a promoted column's name. Names are matched without their table (an
//! alias can hide it), so a promotion may refuse more than it must, never less.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use crate::pipeline::{ConnInfo, ConnInspect, Ruling, Statement, Verdict};
use crate::policy::classify::{SqlDialect, classify};

/// Promoted columns of one target (`schema.table.column` as the catalog names them).
#[derive(Debug, Default)]
pub struct Promoted {
    columns: RwLock<BTreeSet<String>>,
}

/// At most this many promoted columns per target (the set lives as long as the daemon).
const MAX_PROMOTED: usize = 10_000;

impl Promoted {
    /// Promotes a column; true when it was not promoted yet.
    pub fn promote(&self, column: &str) -> bool {
        let mut set = self.columns.write().unwrap_or_else(|p| p.into_inner());
        set.len() < MAX_PROMOTED && set.insert(column.to_ascii_lowercase())
    }

    pub fn is_empty(&self) -> bool {
        self.columns
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    pub fn list(&self) -> Vec<String> {
        self.columns
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// The promoted column a computed column (`note`, `n.note`) names, if any.
    fn matching(&self, computed: &str) -> Option<String> {
        let name = computed.rsplit('.').next().unwrap_or(computed);
        self.columns
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|p| p.rsplit('.').next() == Some(name))
            .cloned()
    }
}

/// The inspect stage of one connection, with the target's promoted columns enforced.
pub fn guard(
    inner: Box<dyn ConnInspect>,
    promoted: Arc<Promoted>,
    dialect: SqlDialect,
) -> Box<dyn ConnInspect> {
    Box::new(Guard {
        inner,
        promoted,
        dialect,
        computed: Default::default(),
    })
}

struct Guard {
    inner: Box<dyn ConnInspect>,
    promoted: Arc<Promoted>,
    dialect: SqlDialect,
    /// Computed columns by statement fingerprint (they depend on no literal's value), so a
    /// promoted target does not cost a parse per statement.
    computed: std::collections::HashMap<String, Arc<Vec<String>>>,
}

/// Fingerprints whose computed columns one connection remembers, at most.
const MAX_REMEMBERED: usize = 1_000;

impl Guard {
    /// The columns `sql` computes over; `None` when it cannot be classified.
    fn computed(&mut self, sql: &str) -> Option<Arc<Vec<String>>> {
        let key = crate::policy::classify::fingerprint(sql, self.dialect);
        if let Some(hit) = key.as_ref().and_then(|k| self.computed.get(k)) {
            return Some(Arc::clone(hit));
        }
        let list = classify(sql, self.dialect).ok()?;
        let columns: Arc<Vec<String>> = Arc::new(
            list.iter()
                .flat_map(|c| c.computed_columns.iter().cloned())
                .collect(),
        );
        if let Some(key) = key {
            if self.computed.len() >= MAX_REMEMBERED {
                self.computed.clear();
            }
            self.computed.insert(key, Arc::clone(&columns));
        }
        Some(columns)
    }
}

impl ConnInspect for Guard {
    fn answered(&mut self, ok: bool) {
        self.inner.answered(ok);
    }

    fn inspect(&mut self, conn: &ConnInfo, statement: &Statement<'_>) -> Ruling {
        let mut ruling = self.inner.inspect(conn, statement);
        // Without a policy tollgate forwards everything, computing over `pan` included (and
        // says so in its log): promotions are enforced under a policy.
        if ruling.verdict != Verdict::Forward
            || self.promoted.is_empty()
            || ruling == Ruling::forward_all()
        {
            return ruling;
        }
        // Classified again only while some column is promoted (remembered by fingerprint);
        // what cannot be classified was already the policy's to refuse.
        let Some(computed) = self.computed(statement.sql) else {
            return ruling;
        };
        let hit = computed
            .iter()
            .find_map(|c| self.promoted.matching(c).map(|p| (c.clone(), p)));
        if let Some((computed, promoted)) = hit {
            let message = format!(
                "tollgate: {computed} is computed over, and {promoted} was found to hold card numbers; only reading it whole (masked) is allowed"
            );
            ruling.verdict = Verdict::Refuse {
                sqlstate: "42501".into(),
                message: message.clone(),
            };
            ruling.action = "deny";
            ruling.decided = "deny";
            ruling.rule = Some("promoted-columns".into());
            ruling.reason = message;
            ruling.hold = None;
        }
        ruling
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_without_their_table() {
        let p = Promoted::default();
        assert!(p.promote("public.Notes.note"));
        assert!(!p.promote("public.notes.note"));
        assert_eq!(p.matching("n.note").as_deref(), Some("public.notes.note"));
        assert_eq!(p.matching("note").as_deref(), Some("public.notes.note"));
        assert_eq!(p.matching("notes_count"), None);
    }
}
