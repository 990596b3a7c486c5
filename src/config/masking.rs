//! `masking`: how card numbers are shown to clients, per group, and the column rules.

use serde::Deserialize;

use super::Secret;

/// PAN masking toward clients.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Masking {
    /// The format for everyone not in `groups` (default: first 6 and last 4 digits).
    #[serde(default)]
    pub format: crate::mask::Format,
    /// The key of the `hmac` format.
    #[serde(default)]
    pub hmac_key: Option<Secret>,
    /// Other formats for members of some groups (first match wins).
    #[serde(default)]
    pub groups: Vec<GroupMasking>,
    /// Columns that hold card numbers, masked whatever their content: a column-name pattern
    /// (`pan`, `*card_number*`), `table.column` or `schema.table.column`. Name patterns match
    /// the source column (`SELECT pan AS x` is caught) and the output name.
    #[serde(default)]
    pub columns: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupMasking {
    pub groups: Vec<String>,
    pub format: crate::mask::Format,
}

impl Masking {
    pub(super) fn validate(&self) -> Result<(), String> {
        let uses_hmac = self.format == crate::mask::Format::Hmac
            || self
                .groups
                .iter()
                .any(|g| g.format == crate::mask::Format::Hmac);
        if uses_hmac && self.hmac_key.is_none() {
            return Err("masking.hmac_key: required by the hmac format".into());
        }
        if let Some(bad) = self
            .columns
            .iter()
            .find(|c| !crate::mask::columns::ColumnRules::valid_entry(c))
        {
            return Err(format!(
                "masking.columns: {bad:?} is not a column name, table.column or schema.table.column"
            ));
        }
        Ok(())
    }
}
