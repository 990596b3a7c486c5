//! Issue #17: card numbers of every brand, in every spelling a person can read, inside text,
//! JSON, arrays and numbers: no clear PAN (after folding) comes out of the masker, in any
//! format, and masking twice changes nothing.

use proptest::prelude::*;
use tollgate::mask::{Format, Masker, pan};

/// A Luhn-valid PAN of a real brand prefix and length.
fn arb_pan() -> impl Strategy<Value = String> {
    let brands: Vec<(&str, usize)> = vec![
        ("4", 13),
        ("4", 16),
        ("4", 19),
        ("51", 16),
        ("55", 16),
        ("2221", 16),
        ("2720", 16),
        ("34", 15),
        ("37", 15),
        ("6011", 16),
        ("6011", 19),
        ("622126", 16),
        ("644", 16),
        ("65", 19),
        ("3528", 16),
        ("3589", 19),
        ("300", 14),
        ("36", 14),
        ("38", 16),
        ("62", 17),
        ("5018", 12),
        ("6759", 18),
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

/// Digit spellings: ASCII, fullwidth, Arabic-Indic, Devanagari, mathematical bold, URL and
/// JSON escapes.
fn spell_digit(d: u8, script: usize) -> String {
    let zero = match script {
        0 => return char::from(b'0' + d).to_string(),
        1 => 0xFF10,
        2 => 0x0660,
        3 => 0x0966,
        4 => 0x1D7CE,
        5 => return format!("%3{d}"),
        _ => return format!("\\u003{d}"),
    };
    char::from_u32(zero + u32::from(d)).unwrap().to_string()
}

const SEPARATORS: &[&str] = &[
    " ", "-", ".", "/", "_", ":", ",", " - ", "\t", "\n", "\u{a0}", "\u{2013}", "  ", ". ",
    "\u{202f}", "%20",
];

#[derive(Debug, Clone)]
struct Spelling {
    script: usize,
    /// Group length and separator indices (one per gap), or none.
    groups: Option<(usize, Vec<usize>)>,
    zero_width: bool,
    leading_zeros: usize,
    expiry: bool,
}

fn arb_spelling() -> impl Strategy<Value = Spelling> {
    (
        0usize..7,
        proptest::option::of((
            proptest::sample::select(vec![1usize, 2, 3, 4, 5, 6]),
            proptest::collection::vec(0..SEPARATORS.len(), 19),
        )),
        any::<bool>(),
        proptest::sample::select(vec![0usize, 0, 2, 4]),
        any::<bool>(),
    )
        .prop_map(
            |(script, groups, zero_width, leading_zeros, expiry)| Spelling {
                script,
                groups,
                zero_width,
                leading_zeros,
                expiry,
            },
        )
}

/// The PAN written in a spelling. Grouped spellings use one group length throughout (the
/// last group shorter), as people write numbers.
fn write(pan: &str, s: &Spelling) -> String {
    let digits: Vec<u8> = pan.bytes().map(|b| b - b'0').collect();
    let mut out = String::new();
    let zw = if s.zero_width { "\u{200b}" } else { "" };
    match &s.groups {
        None => {
            for _ in 0..s.leading_zeros {
                out.push_str(&spell_digit(0, s.script));
            }
            for (i, d) in digits.iter().enumerate() {
                if i > 0 {
                    out.push_str(zw);
                }
                out.push_str(&spell_digit(*d, s.script));
            }
            if s.expiry {
                for d in [1, 2, 2, 7] {
                    out.push_str(&spell_digit(d, s.script));
                }
            }
        }
        Some((len, seps)) => {
            let groups = digits.len().div_ceil(*len);
            for (g, chunk) in digits.chunks(*len).enumerate() {
                if g > 0 {
                    let sep = SEPARATORS[seps[g - 1]];
                    // A lone `.` before the last group is a decimal point: `501800.000009` is
                    // the number it shows, not a card number.
                    out.push_str(if sep == "." && g == groups - 1 {
                        "/"
                    } else {
                        sep
                    });
                }
                for (i, d) in chunk.iter().enumerate() {
                    if i > 0 {
                        out.push_str(zw);
                    }
                    out.push_str(&spell_digit(*d, s.script));
                }
            }
        }
    }
    out
}

fn arb_filler() -> impl Strategy<Value = String> {
    "[a-zA-Z ;{}\"()=!?]{0,20}"
}

fn contexts(written: &str, pan: &str, before: &str, after: &str) -> Vec<String> {
    vec![
        format!("{before} {written} {after}"),
        format!("{before}{written}{after}"),
        format!("{{\"note\": \"{before} {written}\", \"n\": {pan}}}"),
        format!("{{\"cards\": [\"{written}\", 7]}}"),
        format!("{{{written},{pan}}}"),
        format!("({written},\"{after}\")"),
        format!("{pan}.00"),
        format!("${}", thousands(pan)),
        format!("{}e+{}", scientific(pan), pan.len() - 1),
    ]
}

fn thousands(pan: &str) -> String {
    let first = pan.len() % 3;
    let mut parts = vec![];
    if first > 0 {
        parts.push(&pan[..first]);
    }
    parts.extend(
        pan.as_bytes()[first..]
            .chunks(3)
            .map(|c| std::str::from_utf8(c).unwrap()),
    );
    parts.join(",")
}

fn scientific(pan: &str) -> String {
    format!("{}.{}", &pan[..1], &pan[1..])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn no_spelling_of_a_card_number_survives(
        pan in arb_pan(), spelling in arb_spelling(), before in arb_filler(), after in arb_filler(),
    ) {
        let written = write(&pan, &spelling);
        for text in contexts(&written, &pan, &before, &after) {
            for format in [Format::BinLast4, Format::Last4, Format::Redact, Format::Hmac] {
                let m = Masker::new(format, Some(b"k"));
                let once = m.mask(text.as_bytes()).into_owned();
                let digits = pan::folded_digits(&once);
                prop_assert!(
                    !digits.contains(&pan),
                    "{format:?}: {text:?} -> {:?}", String::from_utf8_lossy(&once)
                );
                prop_assert!(
                    pan::find_all(&once).is_empty(),
                    "{format:?}: a PAN remains in {:?}", String::from_utf8_lossy(&once)
                );
                prop_assert_eq!(m.mask(&once).into_owned(), once.clone(), "idempotent");
            }
        }
    }
}
