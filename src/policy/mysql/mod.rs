//! MySQL and MariaDB statements, read as MariaDB will execute them.
//!
//! 1. [`lexer`]: MariaDB's lexical rules as a gate. Text the server's lexer and the parser
//!    could read differently (Unicode spaces, `--x`, executable comments, NUL) is refused;
//!    what passes is split into statements and handed on as a canonical text.
//! 2. SQL carried in strings, which sqlparser does not read: `PREPARE name FROM '…'` and
//!    `EXECUTE IMMEDIATE '…'` are judged as the statement they carry, parsed the same way;
//!    from anything but a string literal (`FROM @var`, `CONCAT(…)`) they are refused, since
//!    what would run cannot be known. PostgreSQL's forms (`PREPARE p AS …`, `EXECUTE p(…)`,
//!    `DEALLOCATE p`) are not MariaDB's and are refused.
//! 3. Everything else: sqlparser's MySQL dialect and the walk in [`collect`].
//! 4. What MariaDB adds: function calls by effect ([`functions`]), server-wide settings
//!    (`GLOBAL`, `PERSIST`, `@@global.`) as admin.

mod collect;
pub mod functions;
pub mod lexer;

use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

use super::classify::{Classified, Error, Kind};
use super::functions::Effect;

/// Operators a MySQL statement may hold: sqlparser builds chains of them as nested trees,
/// which are walked and dropped recursively.
const MAX_OPERATORS: usize = 1_000;

/// How deep string-carried SQL may nest (`EXECUTE IMMEDIATE 'PREPARE s FROM ''…'''`).
const MAX_CARRIED_DEPTH: usize = 3;

/// Parses `sql` (one or more statements) and classifies each as MariaDB will run it.
pub fn classify(sql: &str) -> Result<Vec<Classified>, Error> {
    classify_at(sql, 0)
}

fn classify_at(sql: &str, depth: usize) -> Result<Vec<Classified>, Error> {
    if sql.len() > super::postgres::MAX_STATEMENT_BYTES {
        return Err(Error::TooComplex(format!(
            "the statement is {} bytes; at most {} are analysed",
            sql.len(),
            super::postgres::MAX_STATEMENT_BYTES
        )));
    }
    let statements = lexer::lex(sql)?;
    if statements.is_empty() {
        return Err(Error::Parse("an empty statement".into()));
    }
    statements
        .iter()
        .map(|s| classify_statement(s, depth))
        .collect()
}

/// The parser's tokens of a canonical statement, without whitespace, once they are known to
/// agree with MariaDB's lexer: no comment (the canonical text has none), and every string,
/// quoted identifier and hex literal starting exactly where the lexer found one. Any other
/// reading (a quote glued into a word, a `#` read as a comment) is refused.
fn tokens(lexed: &lexer::Lexed) -> Result<Vec<Token>, Error> {
    let spans = Tokenizer::new(&MySqlDialect {}, &lexed.text)
        .tokenize_with_location()
        .map_err(|e| Error::Parse(e.to_string()))?;
    let disagree = || {
        Error::Parse(
            "MariaDB's lexer and the parser read this text differently; tollgate refuses it".into(),
        )
    };
    let chars: Vec<char> = lexed.text.chars().collect();
    let mut quoted = Vec::with_capacity(lexed.quoted.len());
    let mut out = Vec::with_capacity(spans.len());
    for t in spans {
        if let Token::Whitespace(w) = &t.token {
            if !matches!(w, sqlparser::tokenizer::Whitespace::Space) {
                return Err(disagree());
            }
            continue;
        }
        if t.span.start.line != 1 {
            return Err(disagree());
        }
        // A token that starts with a quote, or with a one-letter prefix and a quote.
        let at = t.span.start.column as usize - 1;
        let quote = |c: Option<&char>| matches!(c, Some('\'' | '"' | '`'));
        if quote(chars.get(at))
            || (chars.get(at).is_some_and(char::is_ascii_alphabetic) && quote(chars.get(at + 1)))
        {
            quoted.push(at);
        }
        out.push(t.token);
    }
    if quoted != lexed.quoted {
        return Err(disagree());
    }
    Ok(out)
}

fn word(t: Option<&Token>) -> Option<String> {
    match t {
        Some(Token::Word(w)) if w.quote_style.is_none() => Some(w.value.to_ascii_lowercase()),
        _ => None,
    }
}

/// A prepared statement's name as MariaDB compares them (case-insensitive; backticks allowed).
fn statement_name(t: Option<&Token>) -> Option<String> {
    match t {
        Some(Token::Word(w)) if w.quote_style.is_none() || w.quote_style == Some('`') => {
            Some(w.value.to_lowercase())
        }
        _ => None,
    }
}

fn classify_statement(lexed: &lexer::Lexed, depth: usize) -> Result<Classified, Error> {
    let toks = tokens(lexed)?;
    let operators = toks
        .iter()
        .filter(|t| {
            !matches!(
                t,
                Token::Word(_)
                    | Token::Number(..)
                    | Token::Comma
                    | Token::RParen
                    | Token::SingleQuotedString(_)
                    | Token::HexStringLiteral(_)
                    | Token::NationalStringLiteral(_)
            )
        })
        .count();
    if operators > MAX_OPERATORS {
        return Err(Error::TooComplex(format!(
            "{operators} operators; at most {MAX_OPERATORS} are analysed"
        )));
    }
    let first = word(toks.first());
    let second = word(toks.get(1));
    let mut c = match (first.as_deref(), second.as_deref()) {
        (Some("prepare"), _) => prepare(&toks, depth)?,
        (Some("execute"), Some("immediate")) => {
            let carried = carried_sql(&toks[2..], "EXECUTE IMMEDIATE")?;
            let mut c = one_carried(&carried, depth, "EXECUTE IMMEDIATE")?;
            c.kinds.insert(Kind::Session);
            c.reads_literals = true;
            c
        }
        (Some("execute"), _) => {
            let name = statement_name(toks.get(1))
                .ok_or_else(|| Error::Unsupported("EXECUTE without a statement name".into()))?;
            arguments(&toks[2..], "EXECUTE")?;
            Classified {
                kinds: [Kind::Session].into(),
                executes: Some(name),
                ..Classified::default()
            }
        }
        (Some("deallocate" | "drop"), Some("prepare")) => {
            let name = statement_name(toks.get(2)).ok_or_else(|| {
                Error::Unsupported("DEALLOCATE PREPARE without a statement name".into())
            })?;
            if toks.len() != 3 {
                return Err(Error::Parse(
                    "DEALLOCATE PREPARE takes one statement name".into(),
                ));
            }
            Classified {
                kinds: [Kind::Session].into(),
                deallocates: Some(name),
                ..Classified::default()
            }
        }
        (Some("deallocate"), _) => {
            return Err(Error::Unsupported(
                "PostgreSQL's DEALLOCATE form; MariaDB's is DEALLOCATE PREPARE name".into(),
            ));
        }
        _ => {
            let statements = Parser::parse_sql(&MySqlDialect {}, &lexed.text)
                .map_err(|e| Error::Parse(e.to_string()))?;
            let [statement] = statements.as_slice() else {
                return Err(Error::Parse(format!(
                    "{} statements where MariaDB's lexer sees one",
                    statements.len()
                )));
            };
            let mut c = collect::classify_one(statement)?;
            if first.as_deref() == Some("set") {
                if server_wide(&toks) {
                    c.kinds.insert(Kind::Admin);
                }
                // MariaDB reads the tables of `SET @v = (SELECT … FROM t)` with shared row
                // locks, as it does for INSERT … SELECT (found by the differential test).
                if !c.tables.is_empty() {
                    c.kinds.insert(Kind::Lock);
                }
            }
            c
        }
    };
    c.computed_columns = c
        .computed_columns
        .into_iter()
        .map(|x| x.to_lowercase())
        .collect();
    effects(&mut c);
    c.mysql = true;
    Ok(c)
}

/// Whether a SET statement's tokens name a server-wide scope anywhere: `GLOBAL`, `PERSIST`,
/// `PERSIST_ONLY` or `@@global.` (sqlparser drops some, as in `SET GLOBAL TRANSACTION …`).
fn server_wide(toks: &[Token]) -> bool {
    toks.iter().any(|t| match t {
        Token::Word(w) if w.quote_style.is_none() => {
            let v = w.value.to_ascii_lowercase();
            matches!(v.as_str(), "global" | "persist" | "persist_only") || v.starts_with("@@global")
        }
        _ => false,
    })
}

/// Function calls by what they do: anything not known to be a plain read is a call or a lock.
fn effects(c: &mut Classified) {
    for f in &c.functions {
        match functions::effect(f) {
            Effect::Read => {}
            Effect::Lock => {
                c.kinds.insert(Kind::Lock);
            }
            Effect::Call => {
                c.kinds.insert(Kind::Call);
            }
        }
    }
}

/// `PREPARE name FROM '…'`: the statement it carries, remembered under `name`.
fn prepare(toks: &[Token], depth: usize) -> Result<Classified, Error> {
    let name = statement_name(toks.get(1))
        .ok_or_else(|| Error::Unsupported("PREPARE without a statement name".into()))?;
    match word(toks.get(2)).as_deref() {
        Some("from") => {}
        Some("as") => {
            return Err(Error::Unsupported(
                "PostgreSQL's PREPARE … AS form; MariaDB prepares with PREPARE name FROM '…'"
                    .into(),
            ));
        }
        _ => return Err(Error::Parse("PREPARE name FROM '…' expected".into())),
    }
    let carried = carried_sql(&toks[3..], "PREPARE")?;
    let mut c = one_carried(&carried, depth, "PREPARE")?;
    c.kinds.insert(Kind::Session);
    c.prepares = Some(name);
    c.reads_literals = true;
    Ok(c)
}

/// The SQL a string-carrying form runs: one or more adjacent string literals (MariaDB joins
/// them), optionally followed by `USING` arguments. Anything else cannot be known.
fn carried_sql(toks: &[Token], form: &str) -> Result<String, Error> {
    let mut sql = String::new();
    let mut i = 0;
    while let Some(Token::SingleQuotedString(s)) = toks.get(i) {
        sql.push_str(s);
        i += 1;
    }
    if i == 0 {
        return Err(Error::Unsupported(format!(
            "{form} of SQL held in a variable or built by an expression: what it would run cannot be known; give the statement as a string literal"
        )));
    }
    arguments(&toks[i..], form)?;
    Ok(sql)
}

/// `USING` arguments: user variables, literals and `?` only (an expression there could read
/// or compute over anything).
fn arguments(toks: &[Token], form: &str) -> Result<(), Error> {
    if toks.is_empty() {
        return Ok(());
    }
    if word(toks.first()).as_deref() != Some("using") {
        return Err(Error::Unsupported(format!(
            "{form} followed by something other than USING arguments"
        )));
    }
    let simple = toks[1..].iter().enumerate().all(|(k, t)| {
        if k % 2 == 1 {
            return matches!(t, Token::Comma);
        }
        match t {
            Token::Word(w) => {
                w.quote_style.is_none()
                    && (w.value.starts_with('@') && !w.value.starts_with("@@")
                        || w.value.eq_ignore_ascii_case("null"))
            }
            Token::Number(..) | Token::SingleQuotedString(_) | Token::Placeholder(_) => true,
            _ => false,
        }
    });
    if toks.len() < 2 || !simple {
        return Err(Error::Unsupported(format!(
            "{form} … USING takes user variables and literals only"
        )));
    }
    Ok(())
}

/// The one statement carried by a string (MariaDB prepares and runs exactly one).
fn one_carried(sql: &str, depth: usize, form: &str) -> Result<Classified, Error> {
    if depth >= MAX_CARRIED_DEPTH {
        return Err(Error::TooComplex(format!(
            "SQL carried in strings nested more than {MAX_CARRIED_DEPTH} deep"
        )));
    }
    let mut list = classify_at(sql, depth + 1)
        .map_err(|e| Error::Parse(format!("the SQL carried by {form}: {e}")))?;
    if list.len() != 1 {
        return Err(Error::Parse(format!(
            "{form} carries {} statements; MariaDB runs exactly one",
            list.len()
        )));
    }
    Ok(list.remove(0))
}

/// A key under which statements that differ only in literal values share one classification:
/// the tokens of MariaDB's canonical text (so two texts the server reads differently never
/// share a key), whitespace dropped, string and number literals replaced by their kind except
/// the numbers of LIMIT and OFFSET (`rows_over` reads them). `None` when the text does not
/// pass the lexical gate or tokenize (then it is classified, and refused, on its own).
/// Texts that carry SQL in a string (`PREPARE … FROM`, `EXECUTE IMMEDIATE`) have none.
pub fn fingerprint(sql: &str) -> Option<String> {
    let statements = lexer::lex(sql).ok()?;
    let mut out = String::with_capacity(sql.len());
    for s in &statements {
        let toks = tokens(s).ok()?;
        // SQL carried in a string is the statement: never shared with other strings (an
        // error included).
        let first = word(toks.first());
        if first.as_deref() == Some("prepare")
            || (first.as_deref() == Some("execute")
                && word(toks.get(1)).as_deref() == Some("immediate"))
        {
            return None;
        }
        // Inside `LIMIT 10, 20`, `OFFSET 5`, `FETCH FIRST 3`: numbers are kept.
        let mut in_limit = false;
        for token in &toks {
            let text = match token {
                Token::SingleQuotedString(_)
                | Token::NationalStringLiteral(_)
                | Token::HexStringLiteral(_) => "\u{2}s".to_owned(),
                Token::Number(..) if !in_limit => "\u{2}n".to_owned(),
                Token::Word(w) if w.quote_style.is_none() => w.value.to_lowercase(),
                other => other.to_string(),
            };
            in_limit = match token {
                Token::Word(w) if w.quote_style.is_none() => {
                    ["limit", "offset", "fetch", "first", "next"]
                        .iter()
                        .any(|k| w.value.eq_ignore_ascii_case(k))
                }
                Token::Number(..) | Token::Comma => in_limit,
                _ => false,
            };
            out.push_str(&text);
            out.push('\u{1}');
        }
        out.push_str(";\u{1}");
    }
    Some(out)
}

#[cfg(test)]
mod tests;
