//! Why an agent runs a statement: a reason it states in a leading comment
//! (`/* reason: INC-1234 fix duplicate orders */ DELETE …`) or for its whole session (the
//! `tollgate.reason` startup parameter or connection attribute, read by each wire).
//!
//! A reason is metadata only: the statement is classified from its whole text as before, and
//! the comment is read from that same text, so nothing a reason says changes what runs. A rule
//! with `require_reason: true` refuses statements that state none.

use super::classify::SqlDialect;

/// The startup parameter (PostgreSQL) and connection attribute (MySQL) carrying a session's
/// reason.
pub const SESSION_SETTING: &str = "tollgate.reason";

/// A reason longer than this (in characters) is cut, with `…` added.
pub const MAX_CHARS: usize = 500;

/// The reason for one statement: its own leading comment, else the session's.
pub fn stated(session: Option<&str>, sql: &str, dialect: SqlDialect) -> Option<String> {
    leading(sql, dialect).or_else(|| session.and_then(clean))
}

/// The reason in the comments before a statement's first token: the first comment whose text
/// starts with `reason:` (any case), block (`/* … */`, nested on PostgreSQL as the server
/// nests them) or line (`-- …`; on MySQL also `# …`). MySQL's executable comments (`/*! … */`,
/// `/*M! … */`) are SQL, not comments: the scan stops there.
pub fn leading(sql: &str, dialect: SqlDialect) -> Option<String> {
    let mut rest = sql;
    loop {
        rest = rest.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
        let (text, after) = if let Some(body) = rest.strip_prefix("/*") {
            if dialect == SqlDialect::MySql && (body.starts_with('!') || body.starts_with("M!")) {
                return None;
            }
            let end = block_end(body, dialect)?;
            (&body[..end], &body[end + 2..])
        } else if let Some(body) = line_comment(rest, dialect) {
            let end = body.find('\n').unwrap_or(body.len());
            (&body[..end], &body[end..])
        } else {
            return None;
        };
        let text = text.trim();
        if let Some(head) = text.get(..7)
            && head.eq_ignore_ascii_case("reason:")
        {
            return clean(&text[7..]);
        }
        rest = after;
    }
}

/// A line comment's text after its opening, if `s` starts with one.
fn line_comment(s: &str, dialect: SqlDialect) -> Option<&str> {
    match dialect {
        SqlDialect::Postgres => s.strip_prefix("--"),
        // MariaDB: `--` opens a comment only before an ASCII space or control character.
        SqlDialect::MySql => s.strip_prefix('#').or_else(|| {
            s.strip_prefix("--").filter(|b| {
                b.as_bytes()
                    .first()
                    .is_some_and(|c| c.is_ascii_control() || *c == b' ')
            })
        }),
    }
}

/// Where a block comment's body (after `/*`) ends: the offset of its closing `*/`.
fn block_end(body: &str, dialect: SqlDialect) -> Option<usize> {
    if dialect == SqlDialect::MySql {
        return body.find("*/");
    }
    let bytes = body.as_bytes();
    let mut depth = 1;
    let mut i = 0;
    while i + 1 < bytes.len() {
        match (bytes[i], bytes[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
                i += 2;
            }
            _ => i += 1,
        }
    }
    None
}

/// A reason as kept: control characters turned into spaces, runs of spaces folded, trimmed,
/// at most [`MAX_CHARS`] characters; `None` when nothing is left. (Card numbers are masked
/// where it is recorded or shown, like every other text.)
pub fn clean(text: &str) -> Option<String> {
    let mut out = String::new();
    let mut count = 0;
    for word in text
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
    {
        if count > 0 {
            out.push(' ');
            count += 1;
        }
        for c in word.chars() {
            if count >= MAX_CHARS {
                out.push('…');
                return Some(out);
            }
            out.push(c);
            count += 1;
        }
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use SqlDialect::{MySql, Postgres};

    #[test]
    fn leading_comments() {
        let cases: &[(&str, SqlDialect, Option<&str>)] = &[
            (
                "/* reason: INC-1234 fix duplicate orders */ delete from t",
                Postgres,
                Some("INC-1234 fix duplicate orders"),
            ),
            ("/*Reason:x*/select 1", MySql, Some("x")),
            ("  -- reason: a\n delete from t", Postgres, Some("a")),
            ("# reason: b\ndelete from t", MySql, Some("b")),
            ("# reason: b\ndelete from t", Postgres, None),
            ("--reason: c\nselect 1", MySql, None),
            (
                "/* note */ /* reason: two */ select 1",
                Postgres,
                Some("two"),
            ),
            // Nested on PostgreSQL: the reason is the whole outer comment's text.
            (
                "/* reason: a /* inner */ b */ select 1",
                Postgres,
                Some("a /* inner */ b"),
            ),
            (
                "/* reason: a /* inner */ select 1",
                MySql,
                Some("a /* inner"),
            ),
            ("/*! reason: x */ select 1", MySql, None),
            ("/*M! reason: x */ select 1", MySql, None),
            ("select 1 /* reason: late */", Postgres, None),
            ("/* reason: unterminated select 1", Postgres, None),
            ("/* reason:   */ select 1", Postgres, None),
            ("/* reason: a\tb\n\nc */ select 1", Postgres, Some("a b c")),
        ];
        for (sql, dialect, want) in cases {
            assert_eq!(leading(sql, *dialect).as_deref(), *want, "{sql}");
        }
    }

    #[test]
    fn the_statement_wins_over_the_session_and_length_is_capped() {
        assert_eq!(
            stated(Some("session"), "/* reason: own */ select 1", Postgres).as_deref(),
            Some("own")
        );
        assert_eq!(
            stated(Some(" session "), "select 1", Postgres).as_deref(),
            Some("session")
        );
        assert_eq!(stated(None, "select 1", Postgres), None);
        let long = "x".repeat(MAX_CHARS + 10);
        let cut = clean(&long).unwrap();
        assert_eq!(cut.chars().count(), MAX_CHARS + 1);
        assert!(cut.ends_with('…'));
    }
}
