//! Folding: what each unit of text is once every spelling of a digit or a separator is
//! reduced to one (the PAN detector's view of text; see [`super::pan`]). A unit is an ASCII
//! byte, a UTF-8 character, a URL escape (`%34`, `%20`) or a JSON escape (`\u0034`, `\n`).

use super::unicode;

/// What a unit of text is, once folded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A decimal digit (its value, 0 to 9).
    Digit(u8),
    /// Space or punctuation that may separate digit groups.
    Separator,
    /// A format character (zero-width, soft hyphen): as if absent.
    Ignored,
    /// Anything else: ends a sequence.
    Other,
}

/// ASCII classes: 0 other, 1 digit, 2 separator.
const ASCII: [u8; 128] = {
    let mut t = [0u8; 128];
    let mut d = b'0';
    while d <= b'9' {
        t[d as usize] = 1;
        d += 1;
    }
    let seps = b" \t\n\r\x0b\x0c.-/_:,";
    let mut i = 0;
    while i < seps.len() {
        t[seps[i] as usize] = 2;
        i += 1;
    }
    t
};

/// An ASCII byte's class: 0 other, 1 digit, 2 separator.
pub(super) fn ascii_class(b: u8) -> u8 {
    ASCII[usize::from(b & 0x7F)]
}

/// The unit of a code point.
fn classify(cp: u32) -> Unit {
    if cp < 0x80 {
        return match ASCII[cp as usize] {
            1 => Unit::Digit(cp as u8 - b'0'),
            2 => Unit::Separator,
            _ => Unit::Other,
        };
    }
    let within = |lo: u32, hi: u32| {
        if hi < cp {
            std::cmp::Ordering::Less
        } else if lo > cp {
            std::cmp::Ordering::Greater
        } else {
            std::cmp::Ordering::Equal
        }
    };
    if let Ok(i) = unicode::DIGITS.binary_search_by(|&(lo, hi, _)| within(lo, hi)) {
        let (lo, _, v) = unicode::DIGITS[i];
        return Unit::Digit(v + (cp - lo) as u8);
    }
    if unicode::SEPARATORS
        .binary_search_by(|&(lo, hi)| within(lo, hi))
        .is_ok()
    {
        return Unit::Separator;
    }
    if unicode::FORMAT
        .binary_search_by(|&(lo, hi)| within(lo, hi))
        .is_ok()
    {
        return Unit::Ignored;
    }
    Unit::Other
}

/// One UTF-8 character at the start of `t`: its code point and length.
fn decode_utf8(t: &[u8]) -> Option<(u32, usize)> {
    let b0 = *t.first()?;
    let (len, init) = match b0 {
        0xC2..=0xDF => (2, b0 & 0x1F),
        0xE0..=0xEF => (3, b0 & 0x0F),
        0xF0..=0xF4 => (4, b0 & 0x07),
        _ => return None,
    };
    let mut cp = u32::from(init);
    for k in 1..len {
        let b = *t.get(k)?;
        if b & 0xC0 != 0x80 {
            return None;
        }
        cp = (cp << 6) | u32::from(b & 0x3F);
    }
    Some((cp, len))
}

fn hex(b: u8) -> Option<u32> {
    (b as char).to_digit(16)
}

/// The unit starting at byte `i` of `text` (which must be in range) and its length in bytes.
pub fn unit_at(text: &[u8], i: usize) -> (Unit, usize) {
    let b = text[i];
    // Latin letters with accents, Greek, Cyrillic… (U+00C0–U+03FF) and CJK ideographs
    // (U+4000–U+9FFF) hold no digit, separator or format character: no table lookup.
    let continuation = |k: usize| text.get(i + k).is_some_and(|c| c & 0xC0 == 0x80);
    if (0xC3..=0xCF).contains(&b) && continuation(1) {
        return (Unit::Other, 2);
    }
    if (0xE4..=0xE9).contains(&b) && continuation(1) && continuation(2) {
        return (Unit::Other, 3);
    }
    if b < 0x80 {
        match b {
            // A URL escape: `%34`, `%20`.
            b'%' => {
                if let (Some(h), Some(l)) = (
                    text.get(i + 1).copied().and_then(hex),
                    text.get(i + 2).copied().and_then(hex),
                ) {
                    let u = classify(h * 16 + l);
                    if h < 8 && u != Unit::Other {
                        return (u, 3);
                    }
                }
                (Unit::Other, 1)
            }
            // JSON's escapes of separators (`\n`, `\t`, `\r`, `\/`): a record or a log line
            // in JSON spells a newline so.
            b'\\' if matches!(text.get(i + 1), Some(b'n' | b't' | b'r' | b'/')) => {
                (Unit::Separator, 2)
            }
            // A JSON (or JavaScript, Python) escape: `\u0034`, `\uFF14`.
            b'\\' if text.get(i + 1) == Some(&b'u') => {
                let cp = text
                    .get(i + 2..i + 6)
                    .and_then(|h| h.iter().try_fold(0u32, |acc, &c| Some(acc * 16 + hex(c)?)));
                match cp.map(classify) {
                    Some(u) if u != Unit::Other => (u, 6),
                    _ => (Unit::Other, 1),
                }
            }
            _ => (classify(u32::from(b)), 1),
        }
    } else {
        match decode_utf8(&text[i..]) {
            Some((cp, len)) => (classify(cp), len),
            None => (Unit::Other, 1),
        }
    }
}

/// The ASCII digits of `text` once folded (every digit unit, whatever its spelling), for
/// checks such as "this PAN is nowhere in the output".
pub fn folded_digits(text: &[u8]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < text.len() {
        let (u, len) = unit_at(text, i);
        if let Unit::Digit(v) = u {
            out.push(char::from(b'0' + v));
        }
        i += len;
    }
    out
}
