//! Numbers that may hold a card number, masked so that the result is still a number of the
//! same type (masked digits become zeros): what both wires do to integer, decimal and
//! floating-point values in binary results.

use std::borrow::Cow;

use super::{Format, Masker};

/// The digits of a masked number: masked positions become zeros. `forced`: the column holds
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
        Cow::Owned(m) if m != digits.as_bytes() => Some(
            m.iter()
                .map(|&b| if b == b'*' { '0' } else { b as char })
                .collect(),
        ),
        _ => None,
    }
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
