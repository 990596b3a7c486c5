//! Numbers that may hold a card number, masked so that the result is still a number of the
//! same type (masked digits become zeros): what both wires do to integer, decimal and
//! floating-point values in binary results, and number columns in text results (a masked value
//! must still parse as its column's type: `4111110000001111`, not `411111******1111`).

use std::borrow::Cow;

use super::{Format, Masker};

/// The digits of a masked number: masked positions become zeros ([`zero_fill`]). `forced`: the column holds
/// card numbers, so the digits are masked whether or not they read as a PAN.
pub fn masked_digits(digits: &str, masker: &Masker, forced: bool) -> Option<String> {
    let number_masker = Masker::new(
        if masker.format() == Format::Hmac {
            Format::Redact
        } else {
            masker.format()
        },
        None,
    );
    let masked = if forced {
        Cow::Owned(number_masker.mask_column(digits.as_bytes()))
    } else {
        number_masker.mask(digits.as_bytes())
    };
    match masked {
        Cow::Owned(m) if m != digits.as_bytes() => {
            Some(String::from_utf8_lossy(&zero_fill(&m)).into_owned())
        }
        _ => None,
    }
}

/// Masked positions (`*`) become zeros. Where that spells a card number again (a PAN whose
/// hidden digits were zeros: `6200000000000005`), the last masked digit of it becomes 1,
/// which breaks its Luhn check. What is shown depends only on the digits the format shows.
pub fn zero_fill(masked: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = masked
        .iter()
        .map(|&b| if b == b'*' { b'0' } else { b })
        .collect();
    for _ in 0..4 {
        let found = super::pan::find_all(&out);
        if found.is_empty() {
            break;
        }
        for f in found {
            let last_masked = f.range.clone().rev().find(|&i| masked[i] == b'*');
            let at = last_masked.unwrap_or(f.range.end - 1);
            out[at] = if out[at] == b'1' { b'2' } else { b'1' };
        }
    }
    out
}

/// A floating-point value that is a whole number long enough to be a card number (a double
/// holds 16 digits exactly), masked as digits (zeros where masked); under a column rule
/// (`forced`) any other value becomes 0. `None` when nothing changes.
pub fn mask_float(f: f64, masker: &Masker, forced: bool) -> Option<f64> {
    let whole = f.is_finite() && f.fract() == 0.0 && f.abs() < 1e19;
    if !whole || (f.abs() < 1e11 && !forced) {
        return forced.then_some(0.0).filter(|z| *z != f);
    }
    let digits = format!("{:.0}", f.abs());
    let masked = masked_digits(&digits, masker, forced)?;
    let m: f64 = masked.parse::<u64>().ok()? as f64;
    Some(if f < 0.0 { -m } else { m })
}

/// A number as text (`-4111111111111111.00`): its integer digits masked (as one card number
/// when `forced`), then the whole value scanned (a fraction can hold one too); masked digits
/// become zeros so that it still reads as a number. `None` when nothing changes.
pub fn mask_number_text(v: &[u8], masker: &Masker, forced: bool) -> Option<Vec<u8>> {
    let sign = usize::from(v.first() == Some(&b'-') || v.first() == Some(&b'+'));
    let end = v[sign..]
        .iter()
        .position(|b| !b.is_ascii_digit())
        .map_or(v.len(), |p| p + sign);
    let mut out: Option<Vec<u8>> = None;
    if let Ok(digits) = std::str::from_utf8(&v[sign..end])
        && !digits.is_empty()
        && (forced || digits.len() >= super::pan::MIN_DIGITS)
        && let Some(masked) = masked_digits(digits, masker, forced)
    {
        let mut o = Vec::with_capacity(v.len());
        o.extend_from_slice(&v[..sign]);
        o.extend_from_slice(masked.as_bytes());
        o.extend_from_slice(&v[end..]);
        out = Some(o);
    }
    // Whatever the integer part was, no run of digits anywhere may read as a card number.
    let numbers = Masker::new(
        if masker.format() == Format::Hmac {
            Format::Redact
        } else {
            masker.format()
        },
        None,
    );
    let current = out.as_deref().unwrap_or(v);
    if let Cow::Owned(m) = numbers.mask(current) {
        out = Some(zero_fill(&m));
    }
    out.filter(|o| o != v)
}
