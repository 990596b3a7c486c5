//! Finding card numbers (PANs) in bytes, in any spelling a person can read.
//!
//! The text is read as **units** after folding: a decimal digit of any script or compatibility
//! form (`4`, fullwidth `４`, Arabic-Indic `٤`, mathematical `𝟒`, a URL escape `%34`, a JSON
//! escape `\u0034`), a separator (space, tab, newline, NBSP and the other Unicode spaces,
//! `.` `/` `_` `:` `,`, hyphens and dashes, `%20`), an ignored format character (zero-width
//! space and joiners, soft hyphen, bidi marks), or anything else, which ends a sequence.
//!
//! A **sequence** is digit groups joined by runs of at most three separators (mixed or
//! doubled). A candidate is
//! - consecutive whole groups holding 12 to 19 digits after leading zeros
//!   (`4111.1111.1111.1111`, `0000 4111 1111 1111 1111`, `4,111,111,111,111,111.00`);
//! - within one group, a PAN followed by an expiry (4 digits, a month among its first or last
//!   two) or an expiry and a CVV (7): `41111111111111111225`;
//! - a number in scientific notation whose integer part has 12 to 19 digits
//!   (`4.111111111111111e+15`).
//!
//! A candidate is a PAN when its prefix and length fit a card brand and it passes the Luhn
//! check. Letters next to the digits do not hide it (`card4111111111111111`).
//!
//! The work per byte is bounded: a group keeps at most [`MAX_GROUP`] digits (longer runs
//! cannot hold a PAN by these rules and are skipped), a sequence at most [`MAX_SEQUENCE`].
//! Pure and allocation-free; text without digit-like bytes is skipped eight bytes at a time.

use std::ops::Range;

pub use super::fold::{Unit, folded_digits, unit_at};
use super::shapes::{iban_at, in_uuid};

/// Card brands by prefix range and allowed lengths (PCI SSC and issuer tables).
const BRANDS: &[(&str, u64, u64, usize, &[usize])] = &[
    // (brand, prefix low, prefix high, prefix digits, lengths)
    ("visa", 4, 4, 1, &[13, 16, 19]),
    ("mastercard", 51, 55, 2, &[16]),
    ("mastercard", 2221, 2720, 4, &[16]),
    ("amex", 34, 34, 2, &[15]),
    ("amex", 37, 37, 2, &[15]),
    ("discover", 6011, 6011, 4, &[16, 17, 18, 19]),
    ("discover", 622_126, 622_925, 6, &[16, 17, 18, 19]),
    ("discover", 644, 649, 3, &[16, 17, 18, 19]),
    ("discover", 65, 65, 2, &[16, 17, 18, 19]),
    ("jcb", 3528, 3589, 4, &[16, 17, 18, 19]),
    ("diners", 300, 305, 3, &[14, 15, 16]),
    ("diners", 36, 36, 2, &[14, 15, 16]),
    ("diners", 38, 39, 2, &[14, 15, 16]),
    ("unionpay", 62, 62, 2, &[16, 17, 18, 19]),
    ("maestro", 5018, 5018, 4, &[12, 13, 14, 15, 16, 17, 18, 19]),
    ("maestro", 5020, 5020, 4, &[12, 13, 14, 15, 16, 17, 18, 19]),
    ("maestro", 5038, 5038, 4, &[12, 13, 14, 15, 16, 17, 18, 19]),
    ("maestro", 5893, 5893, 4, &[12, 13, 14, 15, 16, 17, 18, 19]),
    ("maestro", 6304, 6304, 4, &[12, 13, 14, 15, 16, 17, 18, 19]),
    ("maestro", 6759, 6759, 4, &[12, 13, 14, 15, 16, 17, 18, 19]),
    ("maestro", 6761, 6763, 4, &[12, 13, 14, 15, 16, 17, 18, 19]),
];

pub const MIN_DIGITS: usize = 12;
pub const MAX_DIGITS: usize = 19;
/// Separators allowed between two groups of one sequence.
const MAX_SEPARATOR_RUN: usize = 3;
/// Leading zeros of a group kept (more are skipped: they never change what follows).
const MAX_LEADING_ZEROS: usize = 8;
/// Digits appended to a PAN within one group: an expiry, an expiry and a CVV. (A CVV alone
/// would make one random 19-digit number in forty a PAN.)
const SUFFIXES: [usize; 2] = [4, 7];
/// Digits a group can hold and still be (zeros +) a PAN + a suffix.
pub const MAX_GROUP: usize = MAX_LEADING_ZEROS + MAX_DIGITS + 7;
/// Digits one sequence keeps; past this, the groups no candidate can still reach are dropped.
pub const MAX_SEQUENCE: usize = 96;
const MAX_GROUPS: usize = 48;

/// The brand whose prefix and length fit these ASCII digits, if any.
pub fn brand(digits: &[u8]) -> Option<&'static str> {
    // Every brand's numbers start with 2 to 6 (ids and millisecond timestamps mostly do not).
    if !matches!(digits.first(), Some(b'2'..=b'6')) {
        return None;
    }
    BRANDS.iter().find_map(|(name, lo, hi, n, lengths)| {
        if !lengths.contains(&digits.len()) || digits.len() < *n {
            return None;
        }
        let prefix = digits[..*n]
            .iter()
            .fold(0u64, |acc, d| acc * 10 + u64::from(d.wrapping_sub(b'0')));
        (*lo..=*hi).contains(&prefix).then_some(*name)
    })
}

/// The Luhn check over ASCII digits.
pub fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let v = u32::from(d.wrapping_sub(b'0'));
            if i % 2 == 1 {
                let doubled = v * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                v
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Whether these ASCII digits are a PAN.
pub fn is_pan(digits: &[u8]) -> bool {
    (MIN_DIGITS..=MAX_DIGITS).contains(&digits.len()) && brand(digits).is_some() && luhn(digits)
}

/// Whether `text` can hold a PAN at all: at least 12 ASCII digits, or bytes outside ASCII
/// (other scripts' digits). 64 bytes at a time without branches (which compilers vectorise),
/// stopping as soon as the answer is yes.
pub fn may_hold(text: &[u8]) -> bool {
    let mut digits = 0usize;
    for chunk in text.chunks(64) {
        let mut d = 0u8;
        let mut high = 0u8;
        for &b in chunk {
            d += u8::from(b.wrapping_sub(b'0') < 10);
            high |= b;
        }
        digits += usize::from(d);
        if digits >= MIN_DIGITS || high >= 0x80 {
            return true;
        }
    }
    false
}

/// A found PAN: the byte range of its spelling (from its first significant digit to its last
/// digit, or to the end of what was appended to it in the same group), and how many of the
/// digits in that range are the PAN's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub range: Range<usize>,
    pub pan_len: usize,
}

#[derive(Clone, Copy, Default)]
struct Digit {
    ascii: u8,
    start: usize,
    end: usize,
}

#[derive(Clone, Copy, Default)]
struct Group {
    /// Digit indices in the sequence.
    first: usize,
    end: usize,
    /// The separator run before it was exactly one `.` (decimals, addresses, scientific
    /// notation).
    after_dot: bool,
    /// The separator run before it, as a signature (0 for a sequence's first group).
    separator: u32,
}

/// The digits and groups of the sequence being read.
struct Sequence {
    digits: [Digit; MAX_SEQUENCE],
    len: usize,
    groups: [Group; MAX_GROUPS],
    ngroups: usize,
}

impl Sequence {
    fn clear(&mut self) {
        self.len = 0;
        self.ngroups = 0;
    }

    fn ascii(&self, range: Range<usize>) -> [u8; MAX_GROUP] {
        let mut out = [0u8; MAX_GROUP];
        for (o, d) in out.iter_mut().zip(&self.digits[range]) {
            *o = d.ascii;
        }
        out
    }

    /// Whether groups `a..=b` are grouped as people write one number: every group after the
    /// first holds at least three digits (`4111 1111 …`, `4,111,111,…`, `3782 822463 10005`),
    /// or the groups all have one length, the last no longer (`41 11 11 …`, `4 1 1 …`). This
    /// keeps out values made of short fields (IP addresses and ports, times, dates).
    fn grouped_like_a_number(&self, a: usize, b: usize) -> bool {
        let len = |g: &Group| g.end - g.first;
        let groups = &self.groups[a..=b];
        groups.iter().skip(1).all(|g| len(g) >= 3) || {
            let first = len(&groups[0]);
            groups[..groups.len() - 1].iter().all(|g| len(g) == first)
                && len(&groups[groups.len() - 1]) <= first
        }
    }

    /// Whether groups `a..=b`, digits that pass as a PAN, are the digits of something else
    /// whose shape is unmistakable: a decimal number (one `.` before the last group only, or
    /// the fraction alone), an
    /// IPv4 address (four dotted groups of up to three digits), a window inside a longer number
    /// grouped evenly (`9400 6206 0361 4082 9496 98`, a parcel's tracking number), a UUID.
    fn part_of_something_else(&self, text: &[u8], a: usize, b: usize) -> bool {
        let g = &self.groups;
        let len = |i: usize| g[i].end - g[i].first;
        // `1234.5678901234567`, `4,111,111.5`: an integer part (bare or grouped by thousands
        // with one separator) and a fraction.
        if b > a
            && g[b].after_dot
            && (b == a + 1
                || (g[a + 1..b].iter().all(|x| {
                    x.end - x.first == 3 && !x.after_dot && x.separator == g[a + 1].separator
                })))
        {
            return true;
        }
        // The fraction of a decimal number (`0.4111111111111111`) is not a card number.
        if b == a && a > 0 && g[a].after_dot && (a < 2 || !g[a - 1].after_dot) {
            return true;
        }
        // An address sits at an end of the candidate: digits joined to it on both sides
        // (`400/000.000.000.000 2`) are one number spelled with mixed separators.
        let dotted_quad = (a.saturating_sub(3)..=b).any(|q| {
            (q <= a || q + 3 >= b)
                && q + 3 < self.ngroups
                && (q..q + 4).all(|i| len(i) <= 3)
                && (q + 1..q + 4).all(|i| g[i].after_dot)
                && !(q + 4 < self.ngroups && g[q + 4].after_dot)
                && !(q > 0 && g[q].after_dot)
        });
        let even = len(a) <= 2 && (a..b).all(|i| len(i) == len(a));
        if dotted_quad && !even {
            return true;
        }
        if a > 0
            && b > a
            && len(a - 1) == len(a)
            && g[a].separator == g[a + 1].separator
            && self.digits[g[a - 1].first..g[a - 1].end]
                .iter()
                .any(|d| d.ascii != b'0')
        {
            return true;
        }
        in_uuid(text, self.digits[g[a].first].start)
    }

    /// Reports the PANs starting in groups `starts` (and extending over any later group), left
    /// to right, non-overlapping; returns the first group not covered by a reported PAN.
    fn evaluate(&self, text: &[u8], starts: Range<usize>, found: &mut impl FnMut(Found)) -> usize {
        let mut a = starts.start;
        let mut next = a;
        while a < starts.end {
            let g = self.groups[a];
            let Some(sig) = (g.first..g.end).find(|&i| self.digits[i].ascii != b'0') else {
                a += 1;
                continue;
            };
            let mut best: Option<(usize, usize, usize)> = None; // (last group, end digit, pan)
            // Leading zeros are dropped within one group only (`0004111…`); a candidate over
            // several groups starts at its first group's first digit.
            let last_group = if sig == g.first { self.ngroups } else { a + 1 };
            for b in a..last_group {
                let end = self.groups[b].end;
                let n = end - sig;
                if n > MAX_DIGITS {
                    break;
                }
                if n >= MIN_DIGITS
                    && self.grouped_like_a_number(a, b)
                    && is_pan(&self.ascii(sig..end)[..n])
                    && !self.part_of_something_else(text, a, b)
                {
                    best = Some((b, end, n));
                }
            }
            if best.is_none() {
                let n = g.end - sig;
                let run = self.ascii(sig..g.end);
                best = SUFFIXES
                    .iter()
                    .filter(|&&s| n > s && (MIN_DIGITS..=MAX_DIGITS).contains(&(n - s)))
                    .find(|&&s| {
                        suffix_ok(&run[n - s..n])
                            && is_pan(&run[..n - s])
                            && !self.part_of_something_else(text, a, a)
                    })
                    .map(|&s| (a, g.end, n - s));
            }
            match best {
                Some((b, end, pan_len)) => {
                    found(Found {
                        range: self.digits[sig].start..self.digits[end - 1].end,
                        pan_len,
                    });
                    a = b + 1;
                    next = a;
                }
                None => a += 1,
            }
        }
        next
    }
}

/// Whether digits appended to a PAN look like a CVV, an expiry (MMYY or YYMM) or both.
fn suffix_ok(s: &[u8]) -> bool {
    let month = |d: &[u8]| matches!((d[0], d[1]), (b'0', b'1'..=b'9') | (b'1', b'0'..=b'2'));
    match s.len() {
        4 => month(&s[..2]) || month(&s[2..]),
        7 => month(&s[..2]) || month(&s[3..5]),
        _ => false,
    }
}

/// Calls `found` for every PAN in `text`, in order, non-overlapping.
pub fn scan(text: &[u8], mut found: impl FnMut(Found)) {
    let mut seq = Sequence {
        digits: [Digit::default(); MAX_SEQUENCE],
        len: 0,
        groups: [Group::default(); MAX_GROUPS],
        ngroups: 0,
    };
    let mut i = 0;
    while i < text.len() {
        let Some(j) = next_digit_like(text, i) else {
            return;
        };
        if let Some(end) = iban_at(text, j) {
            i = end;
            continue;
        }
        let start = escape_start(text, j);
        if start == j
            && text[j].is_ascii_digit()
            && let Some(end) = short_ascii_sequence(text, j)
        {
            i = end;
            continue;
        }
        let (unit, len) = unit_at(text, start);
        if !matches!(unit, Unit::Digit(_)) {
            i = if start < j { j + 1 } else { j + len };
            continue;
        }
        i = sequence(text, start, &mut seq, &mut found);
    }
}

/// Where the sequence starting at `j` ends when it is plain ASCII and no candidate can be in
/// it: fewer than 12 digits, or groups that no window of 12 to 19 digits could read as one
/// number (dates and times: `2026-11-26 05:03:06`). Most sequences end here in one tight loop.
/// `None` when a candidate might be there, or the sequence holds anything only the full reading
/// handles (non-ASCII, escapes, an exponent).
fn short_ascii_sequence(text: &[u8], j: usize) -> Option<usize> {
    const MAX: usize = 24;
    let mut groups = [0u8; MAX];
    let mut n = 0;
    let mut digits = 0;
    let mut separators = 0;
    let mut in_group = false;
    let mut i = j;
    while i < text.len() {
        let b = text[i];
        if b >= 0x80 || b == b'%' || b == b'\\' {
            return None;
        }
        match super::fold::ascii_class(b) {
            1 => {
                if !in_group {
                    if n == MAX {
                        return None;
                    }
                    n += 1;
                    in_group = true;
                }
                groups[n - 1] = groups[n - 1].saturating_add(1);
                digits += 1;
                separators = 0;
            }
            2 => {
                in_group = false;
                separators += 1;
                if separators > MAX_SEPARATOR_RUN {
                    break;
                }
            }
            _ => {
                if in_group && (b == b'e' || b == b'E') {
                    return None;
                }
                break;
            }
        }
        i += 1;
    }
    if digits < MIN_DIGITS {
        return Some(i);
    }
    let groups = &groups[..n];
    if groups.iter().any(|&g| usize::from(g) >= MIN_DIGITS) {
        // One run of digits without zeros in front (an id, a timestamp): checked here.
        let len = usize::from(groups[0]);
        if n > 1 || text[j] == b'0' || len > MAX_GROUP {
            return None;
        }
        let run = &text[j..j + len];
        let candidate = (len <= MAX_DIGITS && is_pan(run))
            || SUFFIXES.iter().any(|&s| {
                len > s
                    && (MIN_DIGITS..=MAX_DIGITS).contains(&(len - s))
                    && suffix_ok(&run[len - s..])
                    && is_pan(&run[..len - s])
            });
        return (!candidate).then_some(i);
    }
    for a in 0..n {
        let mut total = 0;
        for b in a..n {
            total += usize::from(groups[b]);
            if total > MAX_DIGITS {
                break;
            }
            let window = &groups[a..=b];
            if total >= MIN_DIGITS
                && (window[1..].iter().all(|&g| g >= 3)
                    || (window[..window.len() - 1].iter().all(|&g| g == window[0])
                        && window[window.len() - 1] <= window[0]))
            {
                return None;
            }
        }
    }
    Some(i)
}

/// Where the escape containing the ASCII digit at `j` starts (`%34`, `\u0034`), or `j`.
fn escape_start(text: &[u8], j: usize) -> usize {
    for back in 1..=5 {
        let Some(s) = j.checked_sub(back) else { break };
        let escape = match text[s] {
            b'%' => back <= 2,
            b'\\' => back >= 2 && text.get(s + 1) == Some(&b'u'),
            _ => continue,
        };
        if escape && unit_at(text, s).1 > back {
            return s;
        }
    }
    j
}

/// Reads one sequence from `start` (a digit unit), reports its PANs, and returns where the
/// scan goes on.
fn sequence(text: &[u8], start: usize, seq: &mut Sequence, found: &mut impl FnMut(Found)) -> usize {
    seq.clear();
    let mut i = start;
    let mut in_group = false;
    let mut zeros_only = false;
    let mut zeros = 0usize;
    let mut separators = 0usize;
    let mut single_dot = false;
    let mut signature = 0u32;
    while i < text.len() {
        let b = text[i];
        let (unit, len) = if b.is_ascii_digit() {
            (Unit::Digit(b - b'0'), 1)
        } else {
            unit_at(text, i)
        };
        match unit {
            Unit::Digit(v) => {
                if seq.len == MAX_SEQUENCE || (!in_group && seq.ngroups == MAX_GROUPS) {
                    make_room(text, seq, found);
                    // The group being read may have been reported and dropped.
                    in_group &= seq.ngroups > 0;
                }
                if !in_group {
                    seq.groups[seq.ngroups] = Group {
                        first: seq.len,
                        end: seq.len,
                        after_dot: single_dot && separators == 1,
                        separator: signature,
                    };
                    seq.ngroups += 1;
                    in_group = true;
                    zeros_only = true;
                    zeros = 0;
                }
                if zeros_only && v == 0 {
                    zeros += 1;
                    // Only a sequence's first group can start a PAN after zeros.
                    if zeros > MAX_LEADING_ZEROS && seq.ngroups == 1 {
                        i += len;
                        continue;
                    }
                } else {
                    zeros_only = false;
                }
                let g = seq.groups[seq.ngroups - 1];
                if g.end - g.first >= MAX_GROUP {
                    // Too long to be a PAN: what came before is done, this run is skipped.
                    seq.ngroups -= 1;
                    seq.len = g.first;
                    seq.evaluate(text, 0..seq.ngroups, found);
                    return skip_run(text, i);
                }
                seq.digits[seq.len] = Digit {
                    ascii: b'0' + v,
                    start: i,
                    end: i + len,
                };
                seq.len += 1;
                seq.groups[seq.ngroups - 1].end = seq.len;
            }
            Unit::Separator => {
                if in_group {
                    in_group = false;
                    separators = 0;
                    signature = 1;
                    single_dot = b == b'.';
                }
                separators += 1;
                signature = text[i..i + len].iter().fold(signature, |h, &c| {
                    h.wrapping_mul(31).wrapping_add(u32::from(c))
                });
                if separators > MAX_SEPARATOR_RUN {
                    break;
                }
            }
            Unit::Ignored => {}
            Unit::Other => {
                if in_group
                    && (b == b'e' || b == b'E')
                    && let Some(end) = scientific(text, i, seq, found)
                {
                    return end;
                }
                break;
            }
        }
        i += len;
    }
    seq.evaluate(text, 0..seq.ngroups, found);
    i
}

/// The sequence is full: reports the PANs starting in groups no later digit can change
/// (more than [`MAX_GROUP`] digits from the end) and drops the groups done with.
fn make_room(text: &[u8], seq: &mut Sequence, found: &mut impl FnMut(Found)) {
    let mut done = 0;
    while done < seq.ngroups && seq.len - seq.groups[done].first > MAX_GROUP {
        done += 1;
    }
    let keep_from = seq
        .evaluate(text, 0..done, found)
        .max(done)
        .min(seq.ngroups);
    let shift = seq
        .groups
        .get(keep_from)
        .filter(|_| keep_from < seq.ngroups)
        .map_or(seq.len, |g| g.first);
    seq.digits.copy_within(shift..seq.len, 0);
    seq.len -= shift;
    seq.groups.copy_within(keep_from..seq.ngroups, 0);
    seq.ngroups -= keep_from;
    for g in &mut seq.groups[..seq.ngroups] {
        g.first -= shift;
        g.end -= shift;
    }
}

/// Past a digit run (digits and ignored units).
fn skip_run(text: &[u8], mut i: usize) -> usize {
    while i < text.len() {
        let (unit, len) = unit_at(text, i);
        if !matches!(unit, Unit::Digit(_) | Unit::Ignored) {
            break;
        }
        i += len;
    }
    i
}

/// `d.ddd…e[+]NN` at the end of the sequence, `e` at `at`: if its integer part is a PAN, the
/// groups before the mantissa are evaluated, the PAN reported, and the scan goes on after the
/// exponent.
fn scientific(
    text: &[u8],
    at: usize,
    seq: &mut Sequence,
    found: &mut impl FnMut(Found),
) -> Option<usize> {
    let n = seq.ngroups;
    if n < 2 {
        return None;
    }
    let (int, frac) = (seq.groups[n - 2], seq.groups[n - 1]);
    if !frac.after_dot || int.end - int.first != 1 || seq.digits[int.first].ascii == b'0' {
        return None;
    }
    let mut i = at + 1;
    if text.get(i) == Some(&b'+') {
        i += 1;
    }
    let digits = text[i..].iter().take_while(|b| b.is_ascii_digit()).count();
    if !(1..=2).contains(&digits) {
        return None;
    }
    let exponent: usize = std::str::from_utf8(&text[i..i + digits])
        .ok()?
        .parse()
        .ok()?;
    let pan_len = exponent + 1;
    if !(MIN_DIGITS..=MAX_DIGITS).contains(&pan_len) {
        return None;
    }
    let mut number = [b'0'; MAX_DIGITS];
    for (k, d) in seq.digits[int.first..frac.end]
        .iter()
        .take(pan_len)
        .enumerate()
    {
        number[k] = d.ascii;
    }
    if !is_pan(&number[..pan_len]) {
        return None;
    }
    seq.ngroups -= 2;
    seq.evaluate(text, 0..seq.ngroups, found);
    found(Found {
        range: seq.digits[int.first].start..seq.digits[frac.end - 1].end,
        pan_len,
    });
    Some(i + digits)
}

/// The position of the first ASCII digit or non-ASCII byte at or after `from`. Eight bytes at
/// a time: most of a typical value has neither, and this loop is the whole cost of scanning it.
fn next_digit_like(text: &[u8], mut from: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    while from + 8 <= text.len() {
        let word = u64::from_le_bytes(text[from..from + 8].try_into().ok()?);
        // A byte is a digit when (byte ^ '0') < 10; this tests all eight at once, exactly.
        let x = word ^ (ONES * 0x30);
        if (x.wrapping_sub(ONES * 10) & !x & HIGHS) | (word & HIGHS) != 0 {
            break;
        }
        from += 8;
    }
    text[from..]
        .iter()
        .position(|b| b.is_ascii_digit() || *b >= 0x80)
        .map(|p| from + p)
}

/// All PANs in `text`.
pub fn find_all(text: &[u8]) -> Vec<Found> {
    let mut out = Vec::new();
    scan(text, |f| out.push(f));
    out
}

#[cfg(test)]
mod tests;
