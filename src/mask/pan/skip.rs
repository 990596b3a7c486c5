//! The fast skip over plain ASCII text (no byte outside ASCII, no `%` or `\` escapes) that
//! cannot hold a candidate: 64 bytes at a time, each classified with word-wide bit tricks (eight
//! bytes per operation, no table, no branch per byte) into bit masks of digits and of the
//! bytes that end a sequence ("other": neither a digit nor a separator).
//!
//! A **region** is a run of bytes between two "other" bytes. Every sequence the detector reads
//! in plain ASCII lies within one region, so a region holding fewer than [`MIN_DIGITS`] digits
//! holds no candidate, and the detector has nothing to do there. The skip stops at the start of
//! the first region that needs the detector: twelve digits or more, a digit followed by `e`
//! (scientific notation reads past the region), or a digit right after an uppercase letter (an
//! IBAN, which the detector skips whole, may start there). Classifying a byte that separates as
//! "other" would cut a region short and is never done; the reverse (a few control bytes taken
//! as separators) only makes regions longer, so the skip stays conservative.

use super::MIN_DIGITS;

const L: u64 = 0x0101_0101_0101_0101;
const H: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `x` (all below 0x80) set where that byte is below `n`.
fn lt(x: u64, n: u8) -> u64 {
    !((x | H) - L * u64::from(n)) & H
}

/// The high bits of a word's eight bytes as eight bits (bit k: byte k). The products of the
/// multiplication land on distinct bits, so nothing carries.
fn bits(m: u64) -> u64 {
    ((m >> 7).wrapping_mul(0x0102_0408_1020_4080)) >> 56
}

/// Bit masks of 64 bytes: digits, "other" bytes, uppercase letters, `e`/`E`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Block {
    digit: u64,
    other: u64,
    upper: u64,
    e: u64,
}

fn classify(chunk: &[u8; 64]) -> Block {
    let mut out = Block::default();
    for k in 0..8 {
        let w = u64::from_le_bytes(chunk[8 * k..8 * k + 8].try_into().unwrap_or([0; 8]));
        let digit = lt(w ^ (L * 0x30), 10);
        // Separators: `,` `-` `.` `/` (0x2C–0x2F), tab to carriage return (taken as 0x08–0x0F),
        // space, `:` and `_`.
        let sep = lt(w ^ (L * 0x2C), 4)
            | lt(w ^ (L * 0x08), 8)
            | lt(w ^ (L * 0x20), 1)
            | lt(w ^ (L * 0x3A), 1)
            | lt(w ^ (L * 0x5F), 1);
        let upper = lt((w | H) - L * u64::from(b'A') & !H, 26) & !lt(w, b'A');
        let e = lt((w | L * 0x20) ^ (L * u64::from(b'e')), 1);
        let shift = 8 * k;
        out.digit |= bits(digit) << shift;
        out.other |= bits(!(digit | sep) & H) << shift;
        out.upper |= bits(upper) << shift;
        out.e |= bits(e) << shift;
    }
    out
}

/// Whether `text` is plain ASCII: no byte outside ASCII, no `%` or `\` (escapes), so that
/// every unit is one byte of the ASCII classes.
pub(super) fn plain(text: &[u8]) -> bool {
    let mut chunks = text.chunks_exact(8);
    let mut acc = 0u64;
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
        let low = w & !H;
        acc |= (w & H) | lt(low ^ (L * 0x25), 1) | lt(low ^ (L * 0x5C), 1);
    }
    acc == 0
        && chunks
            .remainder()
            .iter()
            .all(|&b| b < 0x80 && b != b'%' && b != b'\\')
}

/// Whether the region `start..end` (ended by an "other" byte, without flags) is one sequence
/// the detector's plain-ASCII reading settles without a candidate (dates and times, ids), so
/// that the skip goes on without handing it over.
fn cleared(text: &[u8], start: usize, end: usize) -> bool {
    let Some(first) = text[start..end].iter().position(u8::is_ascii_digit) else {
        return true;
    };
    super::short_ascii_sequence(text, start + first) == Some(end)
}

/// Bits below `p`.
fn below(p: u32) -> u64 {
    if p >= 64 { u64::MAX } else { (1u64 << p) - 1 }
}

/// From `from` (where the detector's scan stands), the first position it must look at in
/// plain ASCII `text`: the start of a region that may hold a candidate, or `text.len()`.
pub(super) fn skip(text: &[u8], from: usize) -> usize {
    // The region being read: where it starts and its digits so far; the last byte of the
    // previous block was a digit / uppercase / other.
    let mut start = from;
    let mut count = 0u32;
    let (mut last_digit, mut last_upper, mut last_other) = (0u64, 0u64, 1u64);
    if let Some(&prev) = from.checked_sub(1).and_then(|p| text.get(p)) {
        last_digit = u64::from(prev.is_ascii_digit());
        last_upper = u64::from(prev.is_ascii_uppercase());
    }
    let mut base = from;
    while base < text.len() {
        let n = (text.len() - base).min(64);
        let block = if n == 64 {
            classify(text[base..base + 64].try_into().unwrap_or(&[0; 64]))
        } else {
            // The tail, padded with NULs ("other": they end the last region).
            let mut padded = [0u8; 64];
            padded[..n].copy_from_slice(&text[base..]);
            classify(&padded)
        };
        let Block {
            digit,
            other,
            upper,
            e,
        } = block;
        // Where the detector must look whatever the digit count: `e` after a digit, a digit
        // after an uppercase letter.
        let flags = (e & ((digit << 1) | last_digit)) | (digit & ((upper << 1) | last_upper));
        // Bytes ending a region: "other" bytes after a byte that is not.
        let ends = other & !((other << 1) | last_other);
        if flags == 0 && count + digit.count_ones() < MIN_DIGITS as u32 {
            // No region of this block (or running into it) reaches twelve digits.
        } else {
            let stop = if flags == 0 {
                64
            } else {
                flags.trailing_zeros()
            };
            let mut seen = 0u64; // bits of this block already counted
            let mut ends = ends & below(stop);
            loop {
                let (p, last) = if ends != 0 {
                    (ends.trailing_zeros(), false)
                } else {
                    (stop, true)
                };
                let part = digit & below(p) & !seen;
                let region = count + part.count_ones();
                if last {
                    // A flag: the detector reads its region. Else the region runs on into the
                    // next block, where its end is checked.
                    if stop < 64 {
                        return start.min(text.len());
                    }
                    break;
                }
                if region >= MIN_DIGITS as u32 && !cleared(text, start, base + p as usize) {
                    return start.min(text.len());
                }
                ends &= ends - 1;
                seen |= below(p);
                count = 0;
                // The next region starts after the run of "other" bytes from `p`.
                let after = other | below(p);
                let q = (!after).trailing_zeros();
                start = base + q as usize;
            }
        }
        // Carry the region running out of this block.
        if other != 0 {
            let last = 63 - other.leading_zeros();
            let tail = if last == 63 { 0 } else { digit >> (last + 1) };
            // Digits after the last other byte of the block; if that byte ended a region just
            // counted, `start` was set past it above.
            count = tail.count_ones();
            start = base + last as usize + 1;
        } else {
            count += digit.count_ones();
        }
        last_digit = digit >> 63;
        last_upper = upper >> 63;
        last_other = other >> 63;
        base += 64;
    }
    // A region running to the end of a text whose length is a multiple of 64.
    if count >= MIN_DIGITS as u32 && !cleared(text, start, text.len()) {
        return start.min(text.len());
    }
    text.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_matches_the_detector_s_classes() {
        let bytes: Vec<u8> = (0u8..128).collect();
        for chunk in bytes.chunks(64) {
            let b = classify(chunk.try_into().unwrap());
            for (k, &c) in chunk.iter().enumerate() {
                let class = crate::mask::fold::ascii_class(c);
                assert_eq!(b.digit >> k & 1 == 1, class == 1, "digit {c:#x}");
                let other = b.other >> k & 1 == 1;
                // Separators are never "other"; a few control bytes may be taken as separators.
                if class == 2 {
                    assert!(!other, "separator {c:#x}");
                } else if class == 0 && !(0x08..=0x0F).contains(&c) {
                    assert!(other, "other {c:#x}");
                }
                assert_eq!(
                    b.upper >> k & 1 == 1,
                    c.is_ascii_uppercase(),
                    "upper {c:#x}"
                );
                assert_eq!(b.e >> k & 1 == 1, c == b'e' || c == b'E', "e {c:#x}");
            }
        }
    }
}
