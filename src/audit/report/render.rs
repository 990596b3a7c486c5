//! The report as Markdown, as a printable HTML page (one page per requirement group), and as
//! JSON.

use std::fmt::Write as _;

use super::{GROUPS, Report, Table, Verdict};

const TITLE: &str = "tollgate PCI DSS evidence report";

fn period_line(r: &Report) -> String {
    format!(
        "Period: {} to {} (UTC). Generated {}. Records in the period: {}.",
        r.since.as_deref().unwrap_or("the beginning"),
        r.until.as_deref().unwrap_or("now"),
        r.generated,
        r.records
    )
}

fn summary(r: &Report) -> String {
    let count = |v: Verdict| r.sections.iter().filter(|s| s.verdict == v).count();
    format!(
        "{} sections: {} met, {} attention, {} not evidenced.",
        r.sections.len(),
        count(Verdict::Met),
        count(Verdict::Attention),
        count(Verdict::NotEvidenced)
    )
}

fn md_cell(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(['\n', '\r'], " ")
}

fn md_table(out: &mut String, t: &Table) {
    let _ = writeln!(out, "{}:\n", t.caption);
    if t.rows.is_empty() {
        let _ = writeln!(out, "(none)\n");
        return;
    }
    let _ = writeln!(out, "| {} |", t.columns.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(t.columns.len()));
    for row in &t.rows {
        let cells: Vec<String> = row.iter().map(|c| md_cell(c)).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out.push('\n');
}

/// The one masking point of the report's sink: whatever a record held, no clear card number
/// leaves in a report.
fn masked(text: String) -> String {
    match crate::mask::sink_masker().mask(text.as_bytes()) {
        std::borrow::Cow::Borrowed(_) => text,
        std::borrow::Cow::Owned(m) => String::from_utf8_lossy(&m).into_owned(),
    }
}

/// The report as Markdown.
pub fn markdown(r: &Report) -> String {
    masked(markdown_clear(r))
}

fn markdown_clear(r: &Report) -> String {
    let mut out = format!("# {TITLE}\n\n{}\n\n{}\n\n", period_line(r), summary(r));
    for (group, heading) in GROUPS {
        let _ = writeln!(out, "## {heading}\n");
        for s in r.sections.iter().filter(|s| s.group == group) {
            let _ = writeln!(out, "### {} {}\n", s.requirements, s.title);
            let _ = writeln!(
                out,
                "**Verdict: {}.** {}\n",
                s.verdict.label(),
                md_cell(&s.reason)
            );
            for f in &s.facts {
                let _ = writeln!(out, "- {}", md_cell(f));
            }
            if !s.facts.is_empty() {
                out.push('\n');
            }
            for t in &s.tables {
                md_table(&mut out, t);
            }
        }
    }
    out
}

/// Text escaped for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

const STYLE: &str = "body{font-family:sans-serif;max-width:64em;margin:2em auto;color:#222}\
h2{border-bottom:2px solid #444;margin-top:0}h3{margin-bottom:.3em}\
table{border-collapse:collapse;margin:.5em 0 1em;font-size:.85em}\
th,td{border:1px solid #bbb;padding:.2em .4em;text-align:left;vertical-align:top}\
caption{text-align:left;font-weight:bold;padding:.2em 0}\
.verdict{display:inline-block;padding:.1em .5em;border-radius:.3em;font-weight:bold}\
.met{background:#d7f0d7}.attention{background:#fde3b0}.not_evidenced{background:#ddd}\
section.group{break-after:page;page-break-after:always;padding-top:1em}\
section.group:last-of-type{break-after:auto;page-break-after:auto}\
article{break-inside:avoid-page}\
@media print{body{margin:0;max-width:none}}";

/// The report as a standalone HTML page: one `<section class="group">` per requirement
/// group, each starting a printed page; each requirement an `<article>` with its verdict.
pub fn html(r: &Report) -> String {
    masked(html_clear(r))
}

fn html_clear(r: &Report) -> String {
    let mut out = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{TITLE}</title><style>{STYLE}</style></head><body><header><h1>{TITLE}</h1><p>{}</p><p>{}</p></header>",
        escape(&period_line(r)),
        escape(&summary(r))
    );
    for (group, heading) in GROUPS {
        let _ = write!(
            out,
            "<section class=\"group\" id=\"req-{group}\"><h2>{}</h2>",
            escape(heading)
        );
        for s in r.sections.iter().filter(|s| s.group == group) {
            let v = match s.verdict {
                Verdict::Met => "met",
                Verdict::Attention => "attention",
                Verdict::NotEvidenced => "not_evidenced",
            };
            let _ = write!(
                out,
                "<article data-requirements=\"{}\" data-verdict=\"{v}\"><h3>{} {}</h3><p><span class=\"verdict {v}\">{}</span> {}</p>",
                escape(s.requirements),
                escape(s.requirements),
                escape(s.title),
                escape(s.verdict.label()),
                escape(&s.reason)
            );
            if !s.facts.is_empty() {
                out.push_str("<ul>");
                for f in &s.facts {
                    let _ = write!(out, "<li>{}</li>", escape(f));
                }
                out.push_str("</ul>");
            }
            for t in &s.tables {
                let _ = write!(out, "<table><caption>{}</caption>", escape(&t.caption));
                out.push_str("<tr>");
                for c in &t.columns {
                    let _ = write!(out, "<th>{}</th>", escape(c));
                }
                out.push_str("</tr>");
                if t.rows.is_empty() {
                    let _ = write!(
                        out,
                        "<tr><td colspan=\"{}\">(none)</td></tr>",
                        t.columns.len()
                    );
                }
                for row in &t.rows {
                    out.push_str("<tr>");
                    for c in row {
                        let _ = write!(out, "<td>{}</td>", escape(c));
                    }
                    out.push_str("</tr>");
                }
                out.push_str("</table>");
            }
            out.push_str("</article>");
        }
        out.push_str("</section>");
    }
    out.push_str("</body></html>\n");
    out
}

/// The report as pretty JSON (`sections[].verdict` is `met`, `attention` or
/// `not_evidenced`; `sections[].figures` holds each section's numbers).
pub fn json(r: &Report) -> String {
    let mut value = serde_json::to_value(r).expect("a report always serialises");
    crate::mask::sink_masker().mask_json(&mut value);
    let mut text = serde_json::to_string_pretty(&value).expect("a value always serialises");
    text.push('\n');
    text
}
