//! MariaDB's lexical rules, as the gate before the parser.
//!
//! sqlparser's MySQL dialect is a generic tokenizer, not MariaDB's lexer: it opens a `--`
//! comment on any Unicode space where MariaDB needs an ASCII space or control character, it
//! treats non-ASCII spaces as whitespace where MariaDB reads them as part of an identifier, and
//! it escapes differently in places. Where the two could disagree about where a string, a
//! quoted identifier, a comment or a statement ends, the statement is read one way by the
//! policy and another by the server. So this module lexes the text the way MariaDB does
//! (with the sql_mode tollgate pins at login: no `ANSI_QUOTES`, no `NO_BACKSLASH_ESCAPES`,
//! see `protocol::mysql::upstream::pin_session`) and hands the parser a canonical text in
//! which nothing is left to interpret differently:
//!
//! - statements are split at `;` outside strings, quoted identifiers and comments;
//! - comments (`#`, `-- `, `/* */`) become a space;
//! - string literals (`'…'` and `"…"`, with `''`/`""` doubling and backslash escapes) become
//!   single-quoted literals holding the same value, escaped only with `''` and `\\`;
//! - quoted identifiers (`` `…` ``) and hex and bit literals (`X'…'`, `B'…'`) stay as written.
//!
//! What the gate refuses, outside strings and quoted identifiers (MariaDB Knowledge Base,
//! "Comment Syntax", "String Literals", "Identifier Names"; sql/sql_lex.cc):
//!
//! - NUL bytes anywhere;
//! - non-ASCII characters (MariaDB reads U+00A0 and other Unicode spaces and format
//!   characters as identifier characters, sqlparser as whitespace): quote such identifiers;
//! - ASCII control characters other than tab, line feed and carriage return;
//! - `--` not followed by an ASCII space or control character (MariaDB reads `1--1` as
//!   arithmetic, a generic tokenizer may open a comment);
//! - executable comments (`/*! … */`, `/*!50700 … */`, `/*M! … */`), whose contents MariaDB
//!   runs depending on its version;
//! - a backslash (MariaDB's `\N` is NULL), unterminated strings, identifiers and comments.

use super::super::classify::Error;

/// One statement of a message, as MariaDB lexes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lexed {
    /// The canonical text: comments blanked, strings re-quoted (see the module doc).
    pub text: String,
    /// The values of the statement's string literals, in order (decoded as MariaDB decodes
    /// them), for the forms that carry SQL in a string (`PREPARE … FROM '…'`).
    pub strings: Vec<String>,
    /// Where each string literal, quoted identifier and hex or bit literal starts in `text`,
    /// in characters: the parser's tokens must start at exactly these places
    /// (`policy::mysql::tokens` checks), or the two read the text differently.
    pub quoted: Vec<usize>,
}

fn refuse(why: &str) -> Error {
    Error::Parse(format!(
        "{why}; tollgate reads SQL as MariaDB's lexer does and refuses text the two could read differently"
    ))
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$'
}

/// Lexes `sql` (one or more statements) as MariaDB does and returns each statement's
/// canonical text. Empty statements (whitespace and comments only) are dropped; an error
/// says what could be read differently.
pub fn lex(sql: &str) -> Result<Vec<Lexed>, Error> {
    let b = sql.as_bytes();
    let n = b.len();
    let mut out: Vec<Lexed> = Vec::new();
    let mut text: Vec<u8> = Vec::with_capacity(n);
    let mut strings: Vec<String> = Vec::new();
    // Byte offsets in `text` of quoted tokens (converted to characters in `finish`).
    let mut quoted: Vec<usize> = Vec::new();
    let mut i = 0;
    while i < n {
        let c = b[i];
        match c {
            0 => return Err(refuse("a NUL byte in the statement")),
            b'\'' | b'"' | b'`' if i > 0 && b[i - 1] == b'@' => {
                return Err(refuse(
                    "a quoted variable name (@`x`, @'x', @@`x`); write the name unquoted",
                ));
            }
            b'\'' | b'"' => {
                // A hex or bit literal (`X'…'`, `B'…'`) holds no escapes.
                let prefix = text.last().copied();
                let before = text.len().checked_sub(2).map(|k| text[k]);
                if c == b'\''
                    && matches!(prefix, Some(b'x' | b'X' | b'b' | b'B'))
                    && !before.is_some_and(|p| is_ident_byte(p) || p == b'@' || p == b'.')
                {
                    let end = b[i + 1..]
                        .iter()
                        .position(|&x| x == b'\'')
                        .ok_or_else(|| refuse("an unterminated hex or bit literal"))?;
                    let body = &b[i + 1..i + 1 + end];
                    let hex = matches!(prefix, Some(b'x' | b'X'));
                    if !body.iter().all(|&x| {
                        if hex {
                            x.is_ascii_hexdigit()
                        } else {
                            x == b'0' || x == b'1'
                        }
                    }) {
                        return Err(refuse("a hex or bit literal with other characters"));
                    }
                    quoted.push(text.len() - 1);
                    text.extend_from_slice(&b[i..i + end + 2]);
                    i += end + 2;
                    continue;
                }
                let (value, next) = string(b, i)?;
                // A national string (`N'…'`) is one token from its prefix.
                let national = matches!(prefix, Some(b'n' | b'N'))
                    && !before.is_some_and(|p| is_ident_byte(p) || p == b'@' || p == b'.');
                quoted.push(if national { text.len() - 1 } else { text.len() });
                text.push(b'\'');
                for &x in &value {
                    match x {
                        b'\'' => text.extend_from_slice(b"''"),
                        b'\\' => text.extend_from_slice(b"\\\\"),
                        0 => text.extend_from_slice(b"\\0"),
                        b'\n' => text.extend_from_slice(b"\\n"),
                        b'\r' => text.extend_from_slice(b"\\r"),
                        b'\t' => text.extend_from_slice(b"\\t"),
                        other => text.push(other),
                    }
                }
                text.push(b'\'');
                strings.push(String::from_utf8_lossy(&value).into_owned());
                i = next;
            }
            b'`' => {
                let mut j = i + 1;
                loop {
                    match b.get(j) {
                        None => return Err(refuse("an unterminated quoted identifier")),
                        Some(0 | b'\n' | b'\r') => {
                            return Err(refuse(
                                "a NUL byte or a line break in a quoted identifier",
                            ));
                        }
                        Some(b'`') if b.get(j + 1) == Some(&b'`') => j += 2,
                        Some(b'`') => break,
                        Some(_) => j += 1,
                    }
                }
                quoted.push(text.len());
                text.extend_from_slice(&b[i..=j]);
                i = j + 1;
            }
            b'#' => {
                i = line_comment_end(b, i)?;
                text.push(b' ');
            }
            b'-' if b.get(i + 1) == Some(&b'-') => match b.get(i + 2) {
                Some(&x) if x <= b' ' || x == 0x7f => {
                    i = line_comment_end(b, i)?;
                    text.push(b' ');
                }
                None => {
                    i = n;
                    text.push(b' ');
                }
                Some(_) => {
                    return Err(refuse(
                        "`--` not followed by an ASCII space (MariaDB reads it as two minus signs, other tokenizers as a comment); write `- -` or `-- ` with a space",
                    ));
                }
            },
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let rest = &b[i + 2..];
                if rest.first() == Some(&b'!')
                    || (matches!(rest.first(), Some(b'M' | b'm')) && rest.get(1) == Some(&b'!'))
                {
                    return Err(refuse(
                        "an executable comment (/*! … */ or /*M! … */), whose text MariaDB runs depending on its version",
                    ));
                }
                let end = rest
                    .windows(2)
                    .position(|w| w == b"*/")
                    .ok_or_else(|| refuse("an unterminated comment"))?;
                let body = &rest[..end];
                if body.contains(&0) {
                    return Err(refuse("a NUL byte in the statement"));
                }
                if contains(body, b"/*!") || contains(body, b"/*M!") || contains(body, b"/*m!") {
                    return Err(refuse("an executable comment inside a comment"));
                }
                text.push(b' ');
                i += 2 + end + 2;
            }
            b';' => {
                finish(&mut out, &mut text, &mut strings, &mut quoted);
                i += 1;
            }
            b'\\' => {
                return Err(refuse(
                    "a backslash outside a quoted string (MariaDB reads \\N as NULL)",
                ));
            }
            // The canonical text is one line: the parser's token positions are columns.
            b'\t' | b'\n' | b'\r' => {
                text.push(b' ');
                i += 1;
            }
            x if x < b' ' || x == 0x7f => {
                return Err(refuse(
                    "an ASCII control character outside quoted strings and identifiers",
                ));
            }
            x if x >= 0x80 => {
                return Err(refuse(
                    "a non-ASCII character outside quoted strings and identifiers (MariaDB reads Unicode spaces and format characters as part of a name); quote such names with backticks",
                ));
            }
            _ => {
                text.push(c);
                i += 1;
            }
        }
    }
    finish(&mut out, &mut text, &mut strings, &mut quoted);
    Ok(out)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Ends a statement: kept when it holds more than whitespace.
fn finish(
    out: &mut Vec<Lexed>,
    text: &mut Vec<u8>,
    strings: &mut Vec<String>,
    quoted: &mut Vec<usize>,
) {
    // Leading blanks are dropped: positions shift by their number.
    let lead = text.iter().take_while(|&&x| x == b' ').count();
    let chars_before = |at: usize| {
        text[lead..at]
            .iter()
            .filter(|&&x| (x & 0xC0) != 0x80)
            .count()
    };
    let starts: Vec<usize> = quoted.iter().map(|&at| chars_before(at)).collect();
    let s = String::from_utf8_lossy(&text[lead..]).trim_end().to_owned();
    if !s.is_empty() {
        out.push(Lexed {
            text: s,
            strings: std::mem::take(strings),
            quoted: starts,
        });
    }
    text.clear();
    strings.clear();
    quoted.clear();
}

/// Where a `#` or `-- ` comment starting at `i` ends: at the line feed (which is kept) or at
/// the end of the text. MariaDB ends these comments at a line feed only.
fn line_comment_end(b: &[u8], i: usize) -> Result<usize, Error> {
    let end = b[i..]
        .iter()
        .position(|&x| x == b'\n')
        .map_or(b.len(), |k| i + k);
    if b[i..end].contains(&0) {
        return Err(refuse("a NUL byte in the statement"));
    }
    Ok(end)
}

/// A string literal opened by the quote at `i`: its value as MariaDB decodes it (doubled
/// quotes, backslash escapes; `\%` and `\_` keep their backslash) and the index after it.
fn string(b: &[u8], i: usize) -> Result<(Vec<u8>, usize), Error> {
    let q = b[i];
    let mut value = Vec::new();
    let mut j = i + 1;
    loop {
        match b.get(j) {
            None => return Err(refuse("an unterminated string literal")),
            Some(0) => return Err(refuse("a NUL byte in the statement")),
            Some(b'\\') => {
                let Some(&e) = b.get(j + 1) else {
                    return Err(refuse("an unterminated string literal"));
                };
                match e {
                    b'0' => value.push(0),
                    b'b' => value.push(8),
                    b'n' => value.push(b'\n'),
                    b'r' => value.push(b'\r'),
                    b't' => value.push(b'\t'),
                    b'Z' => value.push(26),
                    b'%' | b'_' => value.extend_from_slice(&[b'\\', e]),
                    0 => return Err(refuse("a NUL byte in the statement")),
                    other => value.push(other),
                }
                j += 2;
            }
            Some(&x) if x == q => {
                if b.get(j + 1) == Some(&q) {
                    value.push(q);
                    j += 2;
                } else {
                    return Ok((value, j + 1));
                }
            }
            Some(&x) => {
                value.push(x);
                j += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(sql: &str) -> Vec<String> {
        lex(sql)
            .unwrap_or_else(|e| panic!("{sql:?}: {e}"))
            .into_iter()
            .map(|l| l.text)
            .collect()
    }

    #[test]
    fn splits_and_canonicalises() {
        assert_eq!(texts("select 1; select 2;"), ["select 1", "select 2"]);
        assert_eq!(texts("select ';' -- x; y\n, 2"), ["select ';'   , 2"]);
        assert_eq!(
            texts("select \"a\"\"b\", 'c\\'d'"),
            ["select 'a\"b', 'c''d'"]
        );
        assert_eq!(
            texts("select 'a\\\\'; drop table t"),
            ["select 'a\\\\'", "drop table t"]
        );
        assert_eq!(texts("select `a;``b` # c; d\n"), ["select `a;``b`"]);
        assert_eq!(texts("select 'a\nb'"), ["select 'a\\nb'"]);
        let l = lex(" select 'x', `y`, N'z', x'41', 'é', `é`").unwrap();
        assert_eq!(l[0].quoted, [7, 12, 17, 23, 30, 35]);
        assert_eq!(
            texts("select X'4142', b'01', _utf8mb4'x'"),
            ["select X'4142', b'01', _utf8mb4'x'"]
        );
        assert_eq!(texts("select 1 /* ; */ + 2"), ["select 1   + 2"]);
        assert_eq!(texts("select 1 --"), ["select 1"]);
        assert_eq!(texts(" ; -- only a comment\n;"), Vec::<String>::new());
        let l = lex("prepare s from 'select ''x'''").unwrap();
        assert_eq!(l[0].strings, ["select 'x'"]);
    }

    #[test]
    fn refuses_what_the_lexers_could_read_differently() {
        for sql in [
            "select 1 --\u{a0}x\n",
            "select 1 --x",
            "select 1 /*! , 2 */",
            "select 1 /*!50700 , 2 */",
            "select 1 /*M!100100 , 2 */",
            "select 1 /* /*! */ */",
            "select\u{a0}1",
            "select 1\u{200b}",
            "select 'a\0'",
            "select \\N",
            "select 1\u{b}",
            "select 'unterminated",
            "select `x",
            "select 1 /* open",
            "select x'4g'",
            "select x'41\\'",
            "select @@`version` `#`, pan from t",
            "select @`x`",
            "select @'x'",
        ] {
            assert!(lex(sql).is_err(), "{sql:?} should be refused");
        }
        // Inside strings and quoted identifiers any character is data.
        assert!(lex("select '\u{a0}--x', `caf\u{e9}\u{a0}`").is_ok());
    }
}
