//! Finding card numbers (PANs) in bytes.
//!
//! A candidate is a run of 12 to 19 digits, bare or in groups separated consistently by single
//! spaces or single dashes (`4111 1111 1111 1111`, `4111-1111-1111-1111`). A group of more than
//! 19 digits is never part of a PAN (order numbers, snowflake ids). A candidate is a PAN when
//! its prefix and length fit a card brand and it passes the Luhn check. Letters, `_` or other
//! punctuation next to the digits do not hide a PAN (`card4111111111111111`, `pan_4111…`).
//!
//! Pure and allocation-free on text without candidates; the scan is one pass over the bytes.

use std::ops::Range;

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

/// The brand whose prefix and length fit these digits, if any.
pub fn brand(digits: &[u8]) -> Option<&'static str> {
    BRANDS.iter().find_map(|(name, lo, hi, n, lengths)| {
        if !lengths.contains(&digits.len()) || digits.len() < *n {
            return None;
        }
        let prefix = digits[..*n]
            .iter()
            .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
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
            let v = u32::from(d - b'0');
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

/// Whether these digits are a PAN.
pub fn is_pan(digits: &[u8]) -> bool {
    (MIN_DIGITS..=MAX_DIGITS).contains(&digits.len()) && brand(digits).is_some() && luhn(digits)
}

/// A found PAN: its byte range (separators included) in the scanned text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub range: Range<usize>,
}

/// Calls `found` for every PAN in `text`, in order, non-overlapping.
pub fn scan(text: &[u8], mut found: impl FnMut(Range<usize>)) {
    let mut i = 0;
    let n = text.len();
    // Groups of the current sequence: byte ranges of digit runs.
    let mut groups: Vec<Range<usize>> = Vec::new();
    while i < n {
        match next_digit(text, i) {
            Some(j) => i = j,
            None => return,
        }
        // A sequence of digit groups joined by one consistent single separator.
        groups.clear();
        let mut separator: Option<u8> = None;
        loop {
            let start = i;
            while i < n && text[i].is_ascii_digit() {
                i += 1;
            }
            groups.push(start..i);
            if i + 1 < n
                && (text[i] == b' ' || text[i] == b'-')
                && text[i + 1].is_ascii_digit()
                && separator.is_none_or(|s| s == text[i])
            {
                separator = Some(text[i]);
                i += 1;
                continue;
            }
            break;
        }
        candidates(text, &groups, &mut found);
    }
}

/// The PANs made of whole consecutive groups of one sequence.
fn candidates(text: &[u8], groups: &[Range<usize>], found: &mut impl FnMut(Range<usize>)) {
    let total: usize = groups.iter().map(|g| g.len()).sum();
    if total < MIN_DIGITS {
        return;
    }
    let mut digits = [0u8; MAX_DIGITS];
    let mut a = 0;
    while a < groups.len() {
        let mut count = 0;
        let mut best = None;
        for (b, g) in groups.iter().enumerate().skip(a) {
            if count + g.len() > MAX_DIGITS {
                break;
            }
            digits[count..count + g.len()].copy_from_slice(&text[g.clone()]);
            count += g.len();
            if count >= MIN_DIGITS && is_pan(&digits[..count]) {
                best = Some(b);
            }
        }
        match best {
            Some(b) => {
                found(groups[a].start..groups[b].end);
                a = b + 1;
            }
            None => a += 1,
        }
    }
}

/// The position of the first ASCII digit at or after `from`. Eight bytes at a time: most of a
/// typical value has no digit, and this loop is the whole cost of scanning such text.
fn next_digit(text: &[u8], mut from: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    while from + 8 <= text.len() {
        let word = u64::from_le_bytes(text[from..from + 8].try_into().ok()?);
        // A byte is a digit when (byte ^ '0') < 10; this tests all eight at once, exactly.
        let x = word ^ (ONES * 0x30);
        if x.wrapping_sub(ONES * 10) & !x & HIGHS != 0 {
            break;
        }
        from += 8;
    }
    text[from..]
        .iter()
        .position(u8::is_ascii_digit)
        .map(|p| from + p)
}

/// All PANs in `text`.
pub fn find_all(text: &[u8]) -> Vec<Found> {
    let mut out = Vec::new();
    scan(text, |range| out.push(Found { range }));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pans(text: &str) -> Vec<&str> {
        find_all(text.as_bytes())
            .into_iter()
            .map(|f| &text[f.range])
            .collect()
    }

    #[test]
    fn every_brand_and_length() {
        // Test numbers published by the brands and card processors.
        for pan in [
            "4111111111111111",    // Visa 16
            "4222222222222",       // Visa 13
            "4111111111111111110", // Visa 19
            "5555555555554444",    // Mastercard 5x
            "2223000048400011",    // Mastercard 2-series
            "2720992720992729",    // Mastercard 2720
            "378282246310005",     // Amex 37
            "341111111111111",     // Amex 34
            "6011111111111117",    // Discover 6011
            "6221260000000000",    // Discover 622126
            "6445644564456445",    // Discover 644
            "6500000000000002",    // Discover 65, also UnionPay range
            "3530111333300000",    // JCB
            "30569309025904",      // Diners 14
            "36227206271667",      // Diners 36
            "38520000023237",      // Diners 38
            "6200000000000005",    // UnionPay
            "6759649826438453",    // Maestro 6759
            "501800000009",        // Maestro 12 digits
        ] {
            assert!(
                is_pan(pan.as_bytes()),
                "{pan}: brand {:?} luhn {}",
                brand(pan.as_bytes()),
                luhn(pan.as_bytes())
            );
            assert_eq!(pans(pan), vec![pan], "{pan}");
        }
    }

    #[test]
    fn separators_edges_and_neighbours() {
        let cases: &[(&str, &[&str])] = &[
            ("4111 1111 1111 1111", &["4111 1111 1111 1111"]),
            ("4111-1111-1111-1111", &["4111-1111-1111-1111"]),
            ("3782 822463 10005", &["3782 822463 10005"]),
            ("card 4111111111111111 expires", &["4111111111111111"]),
            ("card4111111111111111x", &["4111111111111111"]),
            ("pan_4111111111111111_", &["4111111111111111"]),
            ("{\"pan\":\"4111111111111111\"}", &["4111111111111111"]),
            ("{\"pan\":4111111111111111}", &["4111111111111111"]),
            (
                "4111111111111111,5555555555554444",
                &["4111111111111111", "5555555555554444"],
            ),
            ("ref 1234 4111111111111111", &["4111111111111111"]),
            ("4111111111111111", &["4111111111111111"]),
            (
                "{4111111111111111,378282246310005}",
                &["4111111111111111", "378282246310005"],
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(pans(text), expected.to_vec(), "{text}");
        }
    }

    #[test]
    fn next_digit_finds_every_digit_position() {
        let text = b"abcdefghijklmnopqrstuvwxyz 0 ABCDEFGH\xff\x80\x39/:9";
        let expected: Vec<usize> = (0..text.len())
            .filter(|&i| text[i].is_ascii_digit())
            .collect();
        let mut got = Vec::new();
        let mut i = 0;
        while let Some(j) = next_digit(text, i) {
            got.push(j);
            i = j + 1;
        }
        assert_eq!(got, expected);
        for b in 0..=255u8 {
            let t = [b'x', b'x', b'x', b'x', b'x', b'x', b'x', b];
            assert_eq!(next_digit(&t, 0), b.is_ascii_digit().then_some(7), "{b}");
        }
    }

    #[test]
    fn near_misses_stay_untouched() {
        for text in [
            "1700000000000",                        // millisecond timestamp
            "1731234567890123",                     // 16 digits, no brand starts with 17
            "4111111111111112",                     // Luhn fails
            "41111111111111111111",                 // 20 digits
            "order 4111111111111111111111",         // part of a longer run
            "123e4567-e89b-12d3-a456-426614174000", // UUID
            "4111 1111-1111 1111",                  // inconsistent separators
            "4111  1111  1111  1111",               // double spaces
            "411111******1111",                     // already masked
            "3.14159265358979",                     // decimal
            "7205759403792793",                     // snowflake-like id, no brand
            "",
            "no digits at all",
        ] {
            assert!(pans(text).is_empty(), "{text}: {:?}", pans(text));
        }
    }
}
