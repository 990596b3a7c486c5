//! `tollgate audit report`: the PCI DSS evidence of a period. Each section names the
//! requirement, gives the evidence (counts, tables, samples) and a verdict (met, attention or
//! not evidenced, with the reason), in Markdown, HTML (printable, one page per requirement
//! group) or JSON (for GRC tools).
//!
//! - [`gather`]: one pass over the period's records (with a card-number scan of every
//!   field), and the store-wide facts (oldest record, prunings, bundle exports, reviews).
//! - [`sections`]: the verdicts of requirements 3, 6, 7, 8 and 10.2.
//! - [`trail`]: the verdicts of 10.3–10.7, on the trail itself.
//! - [`render`]: the three formats.

pub mod gather;
pub mod render;
pub mod sections;
pub mod trail;

use serde::Serialize;

pub use gather::{Evidence, StoreFacts, gather, store_facts};
pub use render::{escape, html, json, markdown};

use super::export::Period;
use super::verify::ChainReport;

/// What the report needs beyond the store: the time it is made and the configuration it
/// judges against.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// RFC 3339 UTC; "today" for the daily reviews, "now" for the bundle's age.
    pub now: String,
    /// `audit.retention_days` (0: never pruned).
    pub retention_days: u32,
    /// The configured targets: how clients log in and where the upstream credential is read.
    pub targets: Vec<TargetFacts>,
    /// The SQLite store's file, whose permissions the report checks (None: a PostgreSQL
    /// store, whose access its grants decide).
    pub store_file: Option<std::path::PathBuf>,
}

/// A configured target as the report shows it (PCI DSS 8.6.2).
#[derive(Debug, Clone, Default, Serialize)]
pub struct TargetFacts {
    pub name: String,
    /// `oidc`, `scram-sha-256` or `password`.
    pub client_login: String,
    pub upstream_role: String,
    /// Where the upstream password comes from: `env NAME`, `file PATH`, or `none`.
    pub credential: String,
}

/// A section's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The evidence shows the requirement met in the period.
    Met,
    /// Something for the assessor or the operator to look at (the reason says what).
    Attention,
    /// The store holds nothing that shows it either way.
    NotEvidenced,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::Attention => "attention",
            Verdict::NotEvidenced => "not evidenced",
        }
    }
}

/// A table of evidence.
#[derive(Debug, Clone, Serialize)]
pub struct Table {
    pub caption: String,
    pub columns: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
}

/// One requirement's section.
#[derive(Debug, Clone, Serialize)]
pub struct Section {
    /// The PCI DSS principal requirement it belongs to (`3`, `7`…): one printed page each.
    pub group: &'static str,
    pub requirements: &'static str,
    pub title: &'static str,
    pub verdict: Verdict,
    pub reason: String,
    pub facts: Vec<String>,
    pub tables: Vec<Table>,
    /// The section's figures, for GRC tools.
    pub figures: serde_json::Value,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub generated: String,
    pub since: Option<String>,
    pub until: Option<String>,
    pub records: u64,
    pub sections: Vec<Section>,
}

impl Report {
    /// The section of a requirement (its `requirements` text starts with `req`).
    pub fn section(&self, req: &str) -> Option<&Section> {
        self.sections
            .iter()
            .find(|s| s.requirements.starts_with(req))
    }
}

/// The report of a period from what was gathered.
pub fn build(
    e: &Evidence,
    facts: &StoreFacts,
    chains: &[ChainReport],
    period: &Period,
    inputs: &Inputs,
) -> Report {
    Report {
        generated: inputs.now.clone(),
        since: period.since.clone(),
        until: period.until.clone(),
        records: e.records,
        sections: sections::all(e, facts, chains, period, inputs),
    }
}

/// The requirement groups, in the order printed, with their headings.
pub const GROUPS: [(&str, &str); 5] = [
    ("3", "Requirement 3: protect stored account data"),
    ("6", "Requirement 6: changes reviewed and approved"),
    (
        "7",
        "Requirement 7: access restricted by business need to know",
    ),
    ("8", "Requirement 8: users identified and authenticated"),
    ("10", "Requirement 10: access logged and monitored"),
];
