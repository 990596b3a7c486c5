//! PAN masking: no clear card number reaches the agent (or, through the audit stage, the disk).
//!
//! - [`pan`]: the detector (brand tables, Luhn, groups and separators, numbers' renderings);
//!   [`fold`]: digits of every script and escape, separators and ignored characters.
//! - [`Masker`]: rewrites the PANs found in a value in the configured format.
//! - [`number`]: numbers masked as numbers of the same type (both wires' binary values).
//! - [`columns`]: the column rules (columns masked whatever their content).
//!
//! **Architecture Invariant:** pure: no IO, no clock; a value without a PAN is returned as it
//! was, without a copy.

pub mod columns;
pub mod fold;
pub mod number;
pub mod pan;
mod shapes;
mod unicode;

use std::borrow::Cow;

use aws_lc_rs::hmac;
use serde::Deserialize;

/// How a found PAN is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// First 6 and last 4 digits, the rest `*`; separators and length kept (PCI DSS 3.4.1).
    #[default]
    BinLast4,
    /// Only the last 4 digits.
    Last4,
    /// Every digit `*`.
    Redact,
    /// `pan_` and a keyed HMAC of the digits (16 letters): the same PAN always gives the same
    /// token, so records stay correlatable without revealing the number (PCI DSS 3.5.1.1).
    Hmac,
}

/// Rewrites PANs in values.
#[derive(Clone)]
pub struct Masker {
    format: Format,
    key: Option<hmac::Key>,
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Masker({:?})", self.format)
    }
}

impl Masker {
    /// A masker in `format`; `Hmac` needs the key (else it falls back to full redaction).
    pub fn new(format: Format, hmac_key: Option<&[u8]>) -> Masker {
        Masker {
            format,
            key: hmac_key.map(|k| hmac::Key::new(hmac::HMAC_SHA256, k)),
        }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// `text` with every PAN masked, in its own spelling (only the digits that must not show
    /// change; each keeps its byte length); borrowed, untouched, when there is none.
    pub fn mask<'a>(&self, text: &'a [u8]) -> Cow<'a, [u8]> {
        if !pan::may_hold(text) {
            return Cow::Borrowed(text);
        }
        let mut out: Option<Vec<u8>> = None;
        let mut copied = 0;
        pan::scan(text, |found| {
            if found.range.start < copied {
                return;
            }
            let buf = out.get_or_insert_with(|| Vec::with_capacity(text.len() + 16));
            buf.extend_from_slice(&text[copied..found.range.start]);
            self.write_masked(&text[found.range.clone()], found.pan_len, buf);
            copied = found.range.end;
        });
        match out {
            None => Cow::Borrowed(text),
            Some(mut buf) => {
                buf.extend_from_slice(&text[copied..]);
                Cow::Owned(buf)
            }
        }
    }

    /// A value from a column that holds card numbers: all its digits (in any spelling) are
    /// taken as one PAN, whether or not the detector would find one (a column rule fails
    /// closed). Fewer than 13 digits keep only the last 4.
    pub fn mask_column(&self, value: &[u8]) -> Vec<u8> {
        let digits = pan::folded_digits(value).len();
        if digits == 0 {
            return value.to_vec();
        }
        let short;
        let masker = if self.format == Format::BinLast4 && digits < 13 {
            short = Masker::new(Format::Last4, None);
            &short
        } else {
            self
        };
        let mut out = Vec::with_capacity(value.len());
        masker.write_masked(value, digits, &mut out);
        out
    }

    /// Writes `found` masked: of its first `pan_len` digits those the format keeps stay as
    /// they were spelt, every other digit (the rest of the PAN and what was appended to it)
    /// becomes `*` of the same byte length (`＊` for a three-byte digit).
    fn write_masked(&self, found: &[u8], pan_len: usize, out: &mut Vec<u8>) {
        let keep = |i: usize| {
            i < pan_len
                && match self.format {
                    Format::BinLast4 => i < 6 || i >= pan_len.saturating_sub(4),
                    Format::Last4 => i >= pan_len.saturating_sub(4),
                    Format::Redact | Format::Hmac => false,
                }
        };
        if self.format == Format::Hmac
            && let Some(key) = &self.key
        {
            let clean = pan::folded_digits(found);
            let clean = &clean.as_bytes()[..pan_len.min(clean.len())];
            let tag = hmac::sign(key, clean);
            out.extend_from_slice(b"pan_");
            // 80 bits as 16 letters from a 32-letter alphabet: no digits at all, so a token
            // can never read as a PAN (hex could: `4406818334133ace`).
            const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyzABCDEF";
            let bits = tag.as_ref()[..10]
                .iter()
                .fold(0u128, |acc, &b| (acc << 8) | u128::from(b));
            for i in (0..16).rev() {
                out.push(ALPHABET[((bits >> (i * 5)) & 31) as usize]);
            }
            return;
        }
        let mut i = 0;
        let mut at = 0;
        while at < found.len() {
            let (unit, len) = pan::unit_at(found, at);
            let bytes = &found[at..at + len];
            match unit {
                pan::Unit::Digit(_) if !keep(i) => {
                    if len == 3 && bytes[0] >= 0x80 {
                        out.extend_from_slice("＊".as_bytes());
                    } else {
                        out.extend(std::iter::repeat_n(b'*', len));
                    }
                    i += 1;
                }
                pan::Unit::Digit(_) => {
                    out.extend_from_slice(bytes);
                    i += 1;
                }
                _ => out.extend_from_slice(bytes),
            }
            at += len;
        }
    }
}

impl Masker {
    /// Whether any string, key or number of a JSON value holds a PAN.
    pub fn json_holds_pan(&self, v: &serde_json::Value) -> bool {
        use serde_json::Value;
        match v {
            Value::String(s) => matches!(self.mask(s.as_bytes()), Cow::Owned(_)),
            Value::Number(n) => matches!(self.mask(n.to_string().as_bytes()), Cow::Owned(_)),
            Value::Array(a) => a.iter().any(|v| self.json_holds_pan(v)),
            Value::Object(o) => o.iter().any(|(k, v)| {
                matches!(self.mask(k.as_bytes()), Cow::Owned(_)) || self.json_holds_pan(v)
            }),
            Value::Null | Value::Bool(_) => false,
        }
    }

    /// Every string and key of a JSON value masked; a number holding a PAN becomes its masked
    /// text.
    pub fn mask_json(&self, v: &mut serde_json::Value) {
        use serde_json::Value;
        match v {
            Value::String(s) => {
                if let Cow::Owned(m) = self.mask(s.as_bytes()) {
                    *s = String::from_utf8_lossy(&m).into_owned();
                }
            }
            Value::Number(n) => {
                if let Cow::Owned(m) = self.mask(n.to_string().as_bytes()) {
                    *v = Value::String(String::from_utf8_lossy(&m).into_owned());
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|v| self.mask_json(v)),
            Value::Object(o) => {
                if o.keys()
                    .any(|k| matches!(self.mask(k.as_bytes()), Cow::Owned(_)))
                {
                    let entries = std::mem::take(o);
                    for (k, v) in entries {
                        o.insert(
                            String::from_utf8_lossy(&self.mask(k.as_bytes())).into_owned(),
                            v,
                        );
                    }
                }
                o.values_mut().for_each(|v| self.mask_json(v));
            }
            Value::Null | Value::Bool(_) => {}
        }
    }
}

/// The masker of the sinks (the audit record encoder, the log layer): the default format.
/// Idempotent over what the data path masked already, in whatever format.
pub fn sink_masker() -> &'static Masker {
    static MASKER: std::sync::OnceLock<Masker> = std::sync::OnceLock::new();
    MASKER.get_or_init(|| Masker::new(Format::BinLast4, None))
}

/// SQL text with the literal after every `PASSWORD` keyword replaced by `'***'`
/// (`CREATE ROLE … PASSWORD '…'`, `ALTER USER … ENCRYPTED PASSWORD '…'`, user mappings'
/// `password '…'` options): statement text goes to the audit store and to approvers.
pub fn redact_secrets(sql: &str) -> String {
    let lower = sql.to_ascii_lowercase();
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut copied = 0;
    let mut from = 0;
    // After each keyword: the literal that follows (MySQL's `IDENTIFIED BY 'x'` and
    // `PASSWORD('x')` too).
    let next = |from: usize| -> Option<(usize, usize)> {
        let p = lower[from..]
            .find("password")
            .map(|a| (from + a, "password".len()));
        let i = lower[from..]
            .find("identified")
            .map(|a| (from + a, "identified".len()));
        match (p, i) {
            (Some(p), Some(i)) => Some(if p.0 < i.0 { p } else { i }),
            (p, i) => p.or(i),
        }
    };
    while let Some((at, len)) = next(from) {
        let mut i = at + len;
        from = i;
        let skip = |i: &mut usize| {
            while *i < bytes.len()
                && (bytes[*i].is_ascii_whitespace() || bytes[*i] == b'=' || bytes[*i] == b'(')
            {
                *i += 1;
            }
        };
        skip(&mut i);
        if len == "identified".len() {
            // IDENTIFIED BY '…'; IDENTIFIED VIA / WITH … are followed by their own keywords.
            if !lower[i..].starts_with("by") {
                continue;
            }
            i += 2;
            skip(&mut i);
            if lower[i..].starts_with("password") {
                // IDENTIFIED BY PASSWORD '*hash'
                i += "password".len();
                skip(&mut i);
            }
        }
        // E'…' strings also escape with a backslash.
        if i < bytes.len()
            && (bytes[i] == b'E' || bytes[i] == b'e')
            && bytes.get(i + 1) == Some(&b'\'')
        {
            i += 1;
        }
        let Some(&quote) = bytes.get(i).filter(|&&b| b == b'\'' || b == b'"') else {
            continue;
        };
        // The literal ends at a quote not doubled. A backslash escapes the next byte (MySQL,
        // and PostgreSQL's E strings; elsewhere this can only redact more than needed).
        let mut j = i + 1;
        loop {
            match bytes.get(j) {
                None => break,
                Some(b'\\') => j += 2,
                Some(&b) if b == quote && bytes.get(j + 1) == Some(&quote) => j += 2,
                Some(&b) if b == quote => {
                    j += 1;
                    break;
                }
                Some(_) => j += 1,
            }
        }
        let mut j = j.min(bytes.len());
        while !sql.is_char_boundary(j) {
            j += 1;
        }
        out.push_str(&sql[copied..i]);
        out.push_str("'***'");
        copied = j;
        from = j;
    }
    out.push_str(&sql[copied..]);
    out
}

/// Text that carries client- or server-provided values (a database name, an upstream error,
/// a token's issuer) masked before it is logged: logs are storage too (PCI DSS 3.5.1).
pub fn for_log(text: &str) -> String {
    String::from_utf8_lossy(&sink_masker().mask(text.as_bytes())).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(format: Format, text: &str) -> String {
        let m = Masker::new(format, Some(b"test key"));
        String::from_utf8(m.mask(text.as_bytes()).into_owned()).unwrap()
    }

    #[test]
    fn passwords_in_sql_are_redacted() {
        assert_eq!(
            redact_secrets("ALTER ROLE app PASSWORD 'hun''ter2' VALID UNTIL 'x'"),
            "ALTER ROLE app PASSWORD '***' VALID UNTIL 'x'"
        );
        assert_eq!(
            redact_secrets("create user u with encrypted password E'a\\'b'"),
            "create user u with encrypted password E'***'"
        );
        assert_eq!(
            redact_secrets("CREATE USER MAPPING FOR u SERVER s OPTIONS (user 'x', password 'y')"),
            "CREATE USER MAPPING FOR u SERVER s OPTIONS (user 'x', password '***')"
        );
        assert_eq!(
            redact_secrets("select password from t"),
            "select password from t"
        );
        assert_eq!(redact_secrets("password '"), "password '***'");
        assert_eq!(redact_secrets("password E'ü\\"), "password E'***'");
        // MySQL: IDENTIFIED BY, PASSWORD(...), double quotes, backslash escapes.
        assert_eq!(
            redact_secrets("CREATE USER 'a'@'%' IDENTIFIED BY 'p\\'w' ACCOUNT LOCK"),
            "CREATE USER 'a'@'%' IDENTIFIED BY '***' ACCOUNT LOCK"
        );
        assert_eq!(
            redact_secrets("alter user b identified via ed25519 using password('x')"),
            "alter user b identified via ed25519 using password('***')"
        );
        assert_eq!(
            redact_secrets("SET PASSWORD = PASSWORD(\"pw\")"),
            "SET PASSWORD = PASSWORD('***')"
        );
        assert_eq!(
            redact_secrets("grant x to y identified by password '*AB12'"),
            "grant x to y identified by password '***'"
        );
        assert_eq!(redact_secrets("password '\\ü"), "password '***'");
    }

    #[test]
    fn formats() {
        let t = "pan 4111-1111-1111-1111 and 378282246310005.";
        assert_eq!(
            mask(Format::BinLast4, t),
            "pan 4111-11**-****-1111 and 378282*****0005."
        );
        assert_eq!(
            mask(Format::Last4, t),
            "pan ****-****-****-1111 and ***********0005."
        );
        assert_eq!(
            mask(Format::Redact, t),
            "pan ****-****-****-**** and ***************."
        );
        let h = mask(Format::Hmac, "4111111111111111");
        assert!(h.starts_with("pan_") && h.len() == 20, "{h}");
        assert_eq!(
            h,
            mask(Format::Hmac, "4111 1111 1111 1111"),
            "same PAN, same token"
        );
        assert_ne!(h, mask(Format::Hmac, "5555555555554444"));
    }

    #[test]
    fn untouched_values_are_not_copied() {
        let m = Masker::new(Format::BinLast4, None);
        assert!(matches!(
            m.mask(b"order 1700000000000 of 12"),
            Cow::Borrowed(_)
        ));
        assert!(matches!(m.mask(b"short"), Cow::Borrowed(_)));
    }

    #[test]
    fn masking_is_idempotent() {
        for f in [
            Format::BinLast4,
            Format::Last4,
            Format::Redact,
            Format::Hmac,
        ] {
            let once = mask(f, "a 4111111111111111 b 5555-5555-5555-4444");
            assert_eq!(mask(f, &once), once, "{f:?}");
        }
    }

    use proptest::prelude::*;

    /// A Luhn-valid PAN of a real brand prefix and length.
    fn arb_pan() -> impl Strategy<Value = String> {
        let brands: Vec<(&str, usize)> = vec![
            ("4", 16),
            ("4", 13),
            ("4", 19),
            ("51", 16),
            ("55", 16),
            ("2221", 16),
            ("2720", 16),
            ("34", 15),
            ("37", 15),
            ("6011", 16),
            ("65", 19),
            ("3528", 16),
            ("36", 14),
            ("62", 17),
            ("6759", 12),
        ];
        (
            proptest::sample::select(brands),
            proptest::collection::vec(0u8..10, 19),
        )
            .prop_map(|((prefix, len), body)| {
                let mut digits: Vec<u8> = prefix.bytes().collect();
                for d in body {
                    if digits.len() == len - 1 {
                        break;
                    }
                    digits.push(b'0' + d);
                }
                for check in b'0'..=b'9' {
                    let mut candidate = digits.clone();
                    candidate.push(check);
                    if pan::luhn(&candidate) {
                        return String::from_utf8(candidate).unwrap();
                    }
                }
                unreachable!("one check digit always completes a Luhn number")
            })
    }

    fn arb_filler() -> impl Strategy<Value = String> {
        "[a-zA-Z _,.:;{}\"\\-]{0,30}"
    }

    proptest! {
        #[test]
        fn any_embedded_pan_is_masked_and_masking_is_idempotent(
            pan in arb_pan(), before in arb_filler(), after in arb_filler(), json in any::<bool>(), sep in 0usize..3,
        ) {
            prop_assert!(pan::is_pan(pan.as_bytes()), "{pan}");
            let written = match sep {
                0 => pan.clone(),
                n => pan.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join(if n == 1 { " " } else { "-" }),
            };
            let text = if json { format!("{before}{{\"pan\": \"{written}\"}}{after}") } else { format!("{before}{written}{after}") };
            for format in [Format::BinLast4, Format::Last4, Format::Redact, Format::Hmac] {
                let m = Masker::new(format, Some(b"k"));
                let once = m.mask(text.as_bytes()).into_owned();
                let digits_out: Vec<u8> = once.iter().copied().filter(u8::is_ascii_digit).collect();
                let digits_out = String::from_utf8(digits_out).unwrap();
                prop_assert!(!digits_out.contains(&pan), "{format:?}: {text} -> {}", String::from_utf8_lossy(&once));
                prop_assert!(pan::find_all(&once).is_empty(), "{format:?}: a PAN remains in {}", String::from_utf8_lossy(&once));
                prop_assert_eq!(m.mask(&once).into_owned(), once.clone(), "idempotent");
            }
        }
    }
}
