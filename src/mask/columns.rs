//! Column rules: columns that hold card numbers, masked whatever their content.
//!
//! An entry without a dot is a column-name pattern (glob, case-insensitive) matched against
//! both the source column (resolved from RowDescription's table OID and attribute number, so
//! `SELECT pan AS x` is still caught) and the output name. An entry with dots names a column
//! exactly: `table.column` or `schema.table.column`.

use crate::policy::rules::glob;

/// A column as the catalog names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceColumn {
    pub schema: String,
    pub table: String,
    pub column: String,
}

#[derive(Debug, Clone, Default)]
pub struct ColumnRules {
    names: Vec<String>,
    qualified: Vec<(Option<String>, String, String)>,
}

impl ColumnRules {
    pub fn new(entries: &[String]) -> ColumnRules {
        let mut rules = ColumnRules::default();
        for e in entries {
            let e = e.trim().to_ascii_lowercase();
            let parts: Vec<&str> = e.split('.').collect();
            match parts.as_slice() {
                [name] => rules.names.push((*name).to_owned()),
                [table, column] => rules
                    .qualified
                    .push((None, (*table).into(), (*column).into())),
                [schema, table, column] => rules.qualified.push((
                    Some((*schema).into()),
                    (*table).into(),
                    (*column).into(),
                )),
                _ => {}
            }
        }
        rules
    }

    /// Whether an entry is well formed (for config validation).
    pub fn valid_entry(entry: &str) -> bool {
        let parts: Vec<&str> = entry.trim().split('.').collect();
        !entry.trim().is_empty() && parts.len() <= 3 && parts.iter().all(|p| !p.is_empty())
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.qualified.is_empty()
    }

    /// Whether any rule needs the source column (true whenever there are rules: name
    /// patterns also match source names).
    pub fn needs_catalog(&self) -> bool {
        !self.is_empty()
    }

    /// A result column by its output name.
    pub fn output_name(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        self.names.iter().any(|p| glob(p, &name))
    }

    /// A result column by its source.
    pub fn source(&self, c: &SourceColumn) -> bool {
        let column = c.column.to_ascii_lowercase();
        let table = c.table.to_ascii_lowercase();
        let schema = c.schema.to_ascii_lowercase();
        self.names.iter().any(|p| glob(p, &column))
            || self.qualified.iter().any(|(s, t, col)| {
                glob(col, &column) && glob(t, &table) && s.as_ref().is_none_or(|s| glob(s, &schema))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_qualified_columns() {
        let r = ColumnRules::new(&[
            "pan".into(),
            "*card_number*".into(),
            "billing.accounts.acct".into(),
            "legacy.cc".into(),
        ]);
        let src = |s: &str, t: &str, c: &str| SourceColumn {
            schema: s.into(),
            table: t.into(),
            column: c.into(),
        };
        assert!(r.output_name("PAN"));
        assert!(r.output_name("old_card_number_2"));
        assert!(!r.output_name("x"));
        assert!(r.source(&src("public", "cards", "pan")));
        assert!(r.source(&src("billing", "accounts", "acct")));
        assert!(!r.source(&src("public", "accounts", "acct")));
        assert!(r.source(&src("any", "legacy", "cc")));
        assert!(!r.source(&src("public", "cards", "id")));
        assert!(ColumnRules::valid_entry("a.b.c"));
        assert!(!ColumnRules::valid_entry("a..c"));
        assert!(!ColumnRules::valid_entry("a.b.c.d"));
    }
}
