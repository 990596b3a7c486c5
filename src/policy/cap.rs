//! Result caps: the most one statement's result may hold, as a rule states it
//! (`result_cap: { rows: 10000, bytes: 50MB }`) and as it applies to one statement (the
//! smallest limit of every enforcing rule that matched, `pipeline::ResultCap`).

use serde::{Deserialize, Serialize};

use super::rules::{Mode, Rule};
use crate::pipeline::{CapLimit, ResultCap as Applied};

/// A rule's limit on one statement's result: `result_cap: { rows: 10000, bytes: 50MB }`.
///
/// Rows are what the server sends as rows (PostgreSQL DataRow and COPY TO STDOUT CopyData
/// messages, MySQL text and binary row packets); bytes are those rows' payload bytes as the
/// server sent them (PostgreSQL message bodies, MySQL packet payloads). At either limit the
/// relay stops forwarding rows, cancels the statement on the server and ends the result with
/// SQLSTATE 57014 (PostgreSQL) or errno 1317 (MySQL). When several matching rules cap a
/// statement, each limit is the smallest of theirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ResultCap {
    /// Rows, at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Bytes, at most: a number, or a number with a unit (`B`, `kB`/`KB`, `MB`, `GB`: powers
    /// of 1000; `KiB`, `MiB`, `GiB`: powers of 1024).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "byte_size")]
    pub bytes: Option<u64>,
}

mod byte_size {
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        Number(u64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        match Option::<Given>::deserialize(d)? {
            None => Ok(None),
            Some(Given::Number(n)) => Ok(Some(n)),
            Some(Given::Text(t)) => super::parse_byte_size(&t).map(Some).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "invalid byte size {t:?} (a number, or one with B, kB, MB, GB, KiB, MiB or GiB)"
                ))
            }),
        }
    }

    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(n) => s.serialize_u64(*n),
            None => s.serialize_none(),
        }
    }
}

/// `50MB` (10^6), `64KiB` (2^10), `1000` or `1000B`: a byte count; `None` if not one.
pub fn parse_byte_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// The cap of a statement the `matched` rules decided: for rows and for bytes, the smallest
/// limit among the enforcing rules (audit-mode rules never limit), with the rule that set it.
pub fn applied(matched: &[&Rule]) -> Option<Applied> {
    let mut out = Applied::default();
    for r in matched.iter().filter(|r| r.mode != Some(Mode::Audit)) {
        let Some(cap) = &r.result_cap else { continue };
        tighten(&mut out.rows, cap.rows, &r.id);
        tighten(&mut out.bytes, cap.bytes, &r.id);
    }
    (out.rows.is_some() || out.bytes.is_some()).then_some(out)
}

/// The tighter of two caps (several statements of one message share one result).
pub fn tightest(a: Option<Applied>, b: Option<&Applied>) -> Option<Applied> {
    let Some(b) = b else { return a };
    let mut out = a.unwrap_or_default();
    if let Some(l) = &b.rows {
        tighten(&mut out.rows, Some(l.max), &l.rule);
    }
    if let Some(l) = &b.bytes {
        tighten(&mut out.bytes, Some(l.max), &l.rule);
    }
    Some(out)
}

fn tighten(slot: &mut Option<CapLimit>, max: Option<u64>, rule: &str) {
    if let Some(max) = max
        && slot.as_ref().is_none_or(|l| max < l.max)
    {
        *slot = Some(CapLimit {
            max,
            rule: rule.to_owned(),
        });
    }
}

#[cfg(test)]
mod tests {
    fn errors(yaml: &str) -> Vec<String> {
        match crate::policy::RuleSet::parse(&[("p.yaml".into(), yaml.into())]) {
            Ok(_) => vec![],
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn result_caps_parse_with_units_and_are_validated() {
        let set = crate::policy::RuleSet::parse(&[(
            "p.yaml".into(),
            "rules:\n  - id: a\n    action: allow\n    result_cap: { rows: 10000, bytes: 50MB }\n  - id: b\n    action: allow\n    result_cap: { bytes: 4096 }\n  - id: c\n    action: allow\n    result_cap: { bytes: 2KiB }\n".into(),
        )])
        .unwrap();
        let caps: Vec<_> = set.rules.iter().map(|r| r.result_cap.unwrap()).collect();
        assert_eq!(
            (caps[0].rows, caps[0].bytes),
            (Some(10_000), Some(50_000_000))
        );
        assert_eq!((caps[1].rows, caps[1].bytes), (None, Some(4096)));
        assert_eq!(caps[2].bytes, Some(2048));
        for (yaml, place, needle) in [
            (
                "rules:\n  - id: a\n    action: allow\n    result_cap: { rows: 0 }\n",
                "p.yaml:2:",
                "above 0",
            ),
            (
                "rules:\n  - id: a\n    action: allow\n    result_cap: {}\n",
                "p.yaml:2:",
                "rows or bytes",
            ),
            (
                "rules:\n  - id: a\n    action: deny\n    result_cap: { rows: 5 }\n",
                "p.yaml:2:",
                "only applies",
            ),
            (
                "rules:\n  - id: a\n    action: allow\n    result_cap: { bytes: 5 parsecs }\n",
                "p.yaml:4:",
                "byte size",
            ),
            (
                "rules:\n  - id: a\n    action: allow\n    result_cap: { row: 5 }\n",
                "p.yaml:4:",
                "row",
            ),
        ] {
            let errs = errors(yaml);
            assert!(
                errs.iter()
                    .any(|e| e.starts_with(place) && e.contains(needle)),
                "{yaml}\n{errs:?}"
            );
        }
    }
}
