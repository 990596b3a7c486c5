//! The transform stage on PostgreSQL server messages: PANs masked in every value that flows
//! back to the client — DataRow values, COPY data, error and notice fields, notification
//! payloads.
//!
//! Each function returns the re-encoded message (lengths fixed) when something changed, and
//! `None` when the original bytes can be forwarded as they are, which is the common case and
//! costs one scan for digits.

use std::borrow::Cow;

use super::frame::put_message;
use super::results::Column;
use crate::mask::number::{mask_float, masked_digits};
use crate::mask::{Format, Masker, pan};

/// Whether a body can hold a PAN at all (12 ASCII digits, or other scripts' digits).
fn may_hold_pan(body: &[u8]) -> bool {
    pan::may_hold(body)
}

/// A DataRow (`D`): every non-NULL value masked, whatever its column's type or format. With the
/// columns known, binary `bigint` and `numeric` values are decoded and a PAN stored as a number
/// is masked in place (masked digits become zeros); other binary values are masked without
/// changing their length, so nested lengths (arrays, records) stay right. A malformed row is
/// returned empty rather than forwarded (fail closed).
pub fn data_row(body: &[u8], masker: &Masker, columns: Option<&[Column]>) -> Option<Vec<u8>> {
    let binary_numbers = columns.is_some_and(|c| {
        c.iter().any(|c| {
            c.masked
                || (c.format == 1
                    && matches!(c.type_oid, INT8 | NUMERIC | INT8_ARRAY | NUMERIC_ARRAY))
                || c.type_oid == FLOAT8
        })
    });
    if !binary_numbers && !may_hold_pan(body) {
        return None;
    }
    let Some(values) = split_row(body) else {
        // Cannot be parsed, so cannot be masked: send nothing readable.
        let mut out = Vec::new();
        put_message(&mut out, b'D', &0i16.to_be_bytes());
        return Some(out);
    };
    let same_length = Masker::new(
        if masker.format() == Format::Hmac {
            Format::Redact
        } else {
            masker.format()
        },
        None,
    );
    // A value in a column a rule masks is masked whatever it holds; one the masker cannot
    // decode there (an unknown binary type) becomes NULL: fail closed.
    let mut nulled = false;
    let masked: Vec<Option<Cow<'_, [u8]>>> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let v = (*v)?;
            Some(match columns.and_then(|c| c.get(i)) {
                Some(c) if c.masked && c.format == 1 => match c.type_oid {
                    INT8 => mask_int8(v, masker, true),
                    NUMERIC => mask_numeric(v, masker, true),
                    INT8_ARRAY | NUMERIC_ARRAY => match mask_number_array(v, masker, true) {
                        Some(m) => m,
                        None => {
                            nulled = true;
                            return None;
                        }
                    },
                    TEXT | VARCHAR | BPCHAR | NAME | UNKNOWN => Cow::Owned(masker.mask_column(v)),
                    _ => {
                        nulled = true;
                        return None;
                    }
                },
                Some(c) if c.masked => Cow::Owned(masker.mask_column(v)),
                Some(c) if c.format == 1 => match c.type_oid {
                    INT8 => mask_int8(v, masker, false),
                    NUMERIC => mask_numeric(v, masker, false),
                    // An array that does not parse cannot be checked: nothing readable.
                    INT8_ARRAY | NUMERIC_ARRAY => mask_number_array(v, masker, false)
                        .unwrap_or_else(|| Cow::Owned(vec![0; v.len()])),
                    TEXT | VARCHAR | BPCHAR | NAME | JSON | XML | UNKNOWN => masker.mask(v),
                    FLOAT8 => <[u8; 8]>::try_from(v)
                        .ok()
                        .and_then(|b| mask_float(f64::from_be_bytes(b), masker, false))
                        .map_or(Cow::Borrowed(v), |m| Cow::Owned(m.to_be_bytes().to_vec())),
                    _ => same_length.mask(v),
                },
                // A float8 holds 16 digits exactly, and prints them as 4.111111111111111e+15.
                Some(c) if c.type_oid == FLOAT8 => std::str::from_utf8(v)
                    .ok()
                    .and_then(|t| t.parse::<f64>().ok())
                    .and_then(|f| mask_float(f, masker, false))
                    .map_or_else(
                        || masker.mask(v),
                        |m| Cow::Owned(format!("{m:.0}").into_bytes()),
                    ),
                _ => masker.mask(v),
            })
        })
        .collect();
    if !nulled
        && masked
            .iter()
            .all(|v| v.as_ref().is_none_or(|c| matches!(c, Cow::Borrowed(_))))
    {
        return None;
    }
    let mut new_body = Vec::with_capacity(body.len() + 32);
    new_body.extend_from_slice(&(masked.len() as i16).to_be_bytes());
    for v in &masked {
        match v {
            None => new_body.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(v) => {
                new_body.extend_from_slice(&(v.len() as i32).to_be_bytes());
                new_body.extend_from_slice(v);
            }
        }
    }
    let mut out = Vec::with_capacity(new_body.len() + 5);
    put_message(&mut out, b'D', &new_body);
    Some(out)
}

const INT8: u32 = 20;
const NAME: u32 = 19;
const TEXT: u32 = 25;
const JSON: u32 = 114;
const XML: u32 = 142;
const UNKNOWN: u32 = 705;
const BPCHAR: u32 = 1042;
const VARCHAR: u32 = 1043;
const NUMERIC: u32 = 1700;
const INT8_ARRAY: u32 = 1016;
const NUMERIC_ARRAY: u32 = 1231;
const FLOAT8: u32 = 701;

/// A binary array of `bigint` or `numeric` (any dimensions): each element masked like a
/// single value, the array re-encoded when an element changed length. `None` if it does not
/// parse.
fn mask_number_array<'a>(v: &'a [u8], masker: &Masker, forced: bool) -> Option<Cow<'a, [u8]>> {
    let int = |at: usize| {
        v.get(at..at + 4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let ndim = usize::try_from(int(0)?).ok()?;
    let elem = int(8)? as u32;
    if ndim > 6 || !matches!(elem, INT8 | NUMERIC) {
        return None;
    }
    let header = 12 + 8 * ndim;
    let mut count = 1usize;
    for d in 0..ndim {
        count = count.checked_mul(usize::try_from(int(12 + 8 * d)?).ok()?)?;
    }
    if ndim == 0 {
        count = 0;
    }
    let mut out: Option<Vec<u8>> = None;
    let mut at = header;
    for _ in 0..count {
        let len = int(at)?;
        let start = at + 4;
        if len < 0 {
            if let Some(o) = &mut out {
                o.extend_from_slice(&(-1i32).to_be_bytes());
            }
            at = start;
            continue;
        }
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        let e = v.get(start..end)?;
        let masked = if elem == INT8 {
            mask_int8(e, masker, forced)
        } else {
            mask_numeric(e, masker, forced)
        };
        match (&masked, &mut out) {
            (Cow::Borrowed(_), None) => {}
            (_, None) => {
                let mut o = Vec::with_capacity(v.len() + 16);
                o.extend_from_slice(&v[..at]);
                o.extend_from_slice(&(masked.len() as i32).to_be_bytes());
                o.extend_from_slice(&masked);
                out = Some(o);
            }
            (_, Some(o)) => {
                o.extend_from_slice(&(masked.len() as i32).to_be_bytes());
                o.extend_from_slice(&masked);
            }
        }
        at = end;
    }
    if at != v.len() {
        return None;
    }
    Some(out.map_or(Cow::Borrowed(v), Cow::Owned))
}

/// A binary `bigint`.
fn mask_int8<'a>(v: &'a [u8], masker: &Masker, forced: bool) -> Cow<'a, [u8]> {
    let Ok(bytes) = <[u8; 8]>::try_from(v) else {
        // Not a bigint after all: fail closed, nothing readable.
        return Cow::Owned(vec![0; v.len()]);
    };
    let n = i64::from_be_bytes(bytes);
    // Fewer than 12 digits cannot be a PAN: most numbers end here without any formatting.
    if n.unsigned_abs() < 100_000_000_000 && !forced {
        return Cow::Borrowed(v);
    }
    let digits = n.unsigned_abs().to_string();
    match masked_digits(&digits, masker, forced).and_then(|m| m.parse::<i64>().ok()) {
        Some(m) => Cow::Owned((if n < 0 { -m } else { m }).to_be_bytes().to_vec()),
        None => Cow::Borrowed(v),
    }
}

/// A binary `numeric`: base-10000 digit groups with a weight; the integer part is checked.
fn mask_numeric<'a>(v: &'a [u8], masker: &Masker, forced: bool) -> Cow<'a, [u8]> {
    let header = |i: usize| v.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let (Some(ndigits), Some(weight), Some(sign), Some(dscale)) =
        (header(0), header(2), header(4), header(6))
    else {
        return Cow::Owned(Vec::new());
    };
    let (ndigits, weight) = (usize::from(ndigits), weight as i16);
    if v.len() != 8 + 2 * ndigits {
        return Cow::Owned(vec![0; v.len()]);
    }
    if weight < 0 || sign >= 0xC000 {
        return Cow::Borrowed(v);
    }
    let groups: Vec<u16> = (0..ndigits).filter_map(|i| header(8 + 2 * i)).collect();
    let int_groups = weight as usize + 1;
    let mut digits = String::new();
    for i in 0..int_groups {
        let g = groups.get(i).copied().unwrap_or(0);
        if i == 0 {
            digits.push_str(&g.to_string());
        } else {
            digits.push_str(&format!("{g:04}"));
        }
    }
    let Some(masked) = masked_digits(&digits, masker, forced) else {
        return Cow::Borrowed(v);
    };
    // Back to groups of four from the right, then the original fraction groups.
    let padded = format!("{}{masked}", "0".repeat((4 - masked.len() % 4) % 4));
    let mut new_groups: Vec<u16> = padded
        .as_bytes()
        .chunks(4)
        .map(|c| {
            std::str::from_utf8(c)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        })
        .collect();
    new_groups.extend(groups.iter().skip(int_groups));
    let new_weight = (padded.len() / 4) as i16 - 1;
    let mut out = Vec::with_capacity(8 + 2 * new_groups.len());
    out.extend_from_slice(&(new_groups.len() as u16).to_be_bytes());
    out.extend_from_slice(&new_weight.to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&dscale.to_be_bytes());
    for g in new_groups {
        out.extend_from_slice(&g.to_be_bytes());
    }
    Cow::Owned(out)
}

/// A DataRow's values, or `None` if it does not parse exactly.
pub(crate) fn split_row(body: &[u8]) -> Option<Vec<Option<&[u8]>>> {
    let count = i16::from_be_bytes(body.get(..2)?.try_into().ok()?);
    let count = usize::try_from(count).ok()?;
    let mut rest = &body[2..];
    let mut values = Vec::with_capacity(count);
    for _ in 0..count {
        let len = i32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
        rest = &rest[4..];
        if len == -1 {
            values.push(None);
        } else {
            let len = usize::try_from(len).ok()?;
            values.push(Some(rest.get(..len)?));
            rest = &rest[len..];
        }
    }
    rest.is_empty().then_some(values)
}

/// FunctionCallResponse (`V`): one value, masked like a DataRow's.
pub fn function_result(body: &[u8], masker: &Masker) -> Option<Vec<u8>> {
    if !may_hold_pan(body) {
        return None;
    }
    let len = i32::from_be_bytes(body.get(..4)?.try_into().ok()?);
    let value = match usize::try_from(len) {
        Ok(n) if body.len() == 4 + n => &body[4..],
        // NULL carries no value; anything else is malformed and sent as NULL (fail closed).
        _ => {
            let mut out = Vec::new();
            put_message(&mut out, b'V', &(-1i32).to_be_bytes());
            return (len != -1).then_some(out);
        }
    };
    match masker.mask(value) {
        std::borrow::Cow::Borrowed(_) => None,
        std::borrow::Cow::Owned(masked) => {
            let mut new_body = (masked.len() as i32).to_be_bytes().to_vec();
            new_body.extend_from_slice(&masked);
            let mut out = Vec::new();
            put_message(&mut out, b'V', &new_body);
            Some(out)
        }
    }
}

/// CopyData (`d`) toward the client. Masked in place with a format that keeps the length, so
/// the field lengths of binary COPY stay right; an HMAC format is shown redacted here.
pub fn copy_data(body: &[u8], masker: &Masker) -> Option<Vec<u8>> {
    if !may_hold_pan(body) {
        return None;
    }
    let same_length;
    let masker = if masker.format() == Format::Hmac {
        same_length = Masker::new(Format::Redact, None);
        &same_length
    } else {
        masker
    };
    match masker.mask(body) {
        std::borrow::Cow::Borrowed(_) => None,
        std::borrow::Cow::Owned(masked) => {
            let mut out = Vec::with_capacity(masked.len() + 5);
            put_message(&mut out, b'd', &masked);
            Some(out)
        }
    }
}

/// ErrorResponse (`E`) or NoticeResponse (`N`): every field masked (a unique violation's DETAIL
/// echoes the key; a RAISE NOTICE echoes whatever it was given).
pub fn fields(tag: u8, body: &[u8], masker: &Masker) -> Option<Vec<u8>> {
    if !may_hold_pan(body) {
        return None;
    }
    let mut new_body = Vec::with_capacity(body.len() + 16);
    let mut rest = body;
    let mut changed = false;
    while let Some((&code, tail)) = rest.split_first() {
        if code == 0 {
            break;
        }
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        let masked = masker.mask(&tail[..end]);
        changed |= matches!(masked, std::borrow::Cow::Owned(_));
        new_body.push(code);
        new_body.extend_from_slice(&masked);
        new_body.push(0);
        rest = tail.get(end + 1..).unwrap_or_default();
    }
    new_body.push(0);
    if !changed {
        return None;
    }
    let mut out = Vec::with_capacity(new_body.len() + 5);
    put_message(&mut out, tag, &new_body);
    Some(out)
}

/// NotificationResponse (`A`): process id, channel, payload; channel and payload masked.
pub fn notification(body: &[u8], masker: &Masker) -> Option<Vec<u8>> {
    if !may_hold_pan(body) || body.len() < 4 {
        return None;
    }
    let (pid, rest) = body.split_at(4);
    let mut parts = rest.splitn(3, |&b| b == 0);
    let channel = parts.next().unwrap_or_default();
    let payload = parts.next().unwrap_or_default();
    let mut new_body = pid.to_vec();
    new_body.extend_from_slice(&masker.mask(channel));
    new_body.push(0);
    new_body.extend_from_slice(&masker.mask(payload));
    new_body.push(0);
    let mut out = Vec::with_capacity(new_body.len() + 5);
    put_message(&mut out, b'A', &new_body);
    (out[5..] != *body).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::pg::frame::Message;

    fn masker() -> Masker {
        Masker::new(Format::BinLast4, None)
    }

    fn row(values: &[Option<&[u8]>]) -> Vec<u8> {
        let mut b = (values.len() as i16).to_be_bytes().to_vec();
        for v in values {
            match v {
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(v) => {
                    b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    b.extend_from_slice(v);
                }
            }
        }
        b
    }

    #[test]
    fn data_rows_are_masked_and_re_encoded() {
        let body = row(&[
            Some(b"42"),
            None,
            Some(b"4111111111111111"),
            Some(b"{\"pan\": \"5555 5555 5555 4444\"}"),
        ]);
        let out = data_row(&body, &masker(), None).unwrap();
        let m = Message::from_frame(&out);
        assert_eq!(m.tag, b'D');
        let values = split_row(m.body).unwrap();
        assert_eq!(values[0], Some(&b"42"[..]));
        assert_eq!(values[1], None);
        assert_eq!(values[2], Some(&b"411111******1111"[..]));
        assert_eq!(values[3], Some(&b"{\"pan\": \"5555 55** **** 4444\"}"[..]));
        // No PAN: forwarded as it was.
        assert!(data_row(&row(&[Some(b"1700000000000"), Some(b"x")]), &masker(), None).is_none());
        // Malformed with digits enough: redacted entirely.
        let mut bad = row(&[Some(b"4111111111111111")]);
        bad.push(0);
        let out = data_row(&bad, &masker(), None).unwrap();
        assert_eq!(Message::from_frame(&out).body, &0i16.to_be_bytes());
    }

    #[test]
    fn binary_bigint_and_numeric_pans_are_masked_in_place() {
        let cols = [
            Column {
                type_oid: INT8,
                format: 1,
                masked: false,
            },
            Column {
                type_oid: NUMERIC,
                format: 1,
                masked: false,
            },
            Column {
                type_oid: INT8,
                format: 1,
                masked: false,
            },
        ];
        // 4111111111111111 as numeric: weight 3, groups 4111 1111 1111 1111.
        let mut numeric = 4u16.to_be_bytes().to_vec();
        numeric.extend_from_slice(&3i16.to_be_bytes());
        numeric.extend_from_slice(&0u16.to_be_bytes());
        numeric.extend_from_slice(&0u16.to_be_bytes());
        for g in [4111u16, 1111, 1111, 1111] {
            numeric.extend_from_slice(&g.to_be_bytes());
        }
        let pan = 4111111111111111i64.to_be_bytes();
        let plain = 42i64.to_be_bytes();
        let body = row(&[Some(&pan), Some(&numeric), Some(&plain)]);
        let out = data_row(&body, &masker(), Some(&cols)).unwrap();
        let values = split_row(Message::from_frame(&out).body).unwrap();
        let int8 = i64::from_be_bytes(values[0].unwrap().try_into().unwrap());
        assert_eq!(int8, 4111110000001111);
        let n = values[1].unwrap();
        let groups: Vec<u16> = n[8..]
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(groups, vec![4111, 1100, 0, 1111]);
        assert_eq!(values[2], Some(&plain[..]));
        // The same bytes as text columns are not numbers: left alone.
        assert!(data_row(&row(&[Some(&pan)]), &masker(), None).is_none());
    }

    #[test]
    fn error_fields_notifications_and_copy() {
        let mut body = Vec::new();
        for (c, v) in [
            (b'S', "ERROR"),
            (b'C', "23505"),
            (b'D', "Key (pan)=(4111111111111111) already exists."),
        ] {
            body.push(c);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let out = fields(b'E', &body, &masker()).unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.contains("Key (pan)=(411111******1111) already exists."),
            "{text}"
        );
        assert!(text.contains("23505"));

        let mut a = 7i32.to_be_bytes().to_vec();
        a.extend_from_slice(b"cards\0new card 4111111111111111\0");
        let out = notification(&a, &masker()).unwrap();
        assert!(String::from_utf8_lossy(&out).contains("new card 411111******1111"));

        let out = copy_data(
            b"1\t4111111111111111\n",
            &Masker::new(Format::Hmac, Some(b"k")),
        )
        .unwrap();
        assert_eq!(&out[5..], b"1\t****************\n", "same length for COPY");
        assert!(copy_data(b"1\tno card\n", &masker()).is_none());

        let mut v = 16i32.to_be_bytes().to_vec();
        v.extend_from_slice(b"4111111111111111");
        let out = function_result(&v, &masker()).unwrap();
        assert_eq!(&out[9..], b"411111******1111");
    }

    #[test]
    fn binary_number_arrays_of_any_shape_are_masked() {
        fn numeric(groups: &[u16], weight: i16) -> Vec<u8> {
            let mut n = (groups.len() as u16).to_be_bytes().to_vec();
            n.extend_from_slice(&weight.to_be_bytes());
            n.extend_from_slice(&[0, 0, 0, 0]);
            for g in groups {
                n.extend_from_slice(&g.to_be_bytes());
            }
            n
        }
        // A 2x1 numeric array: {{5555555555554444},{7}}.
        let mut a = 2i32.to_be_bytes().to_vec();
        a.extend_from_slice(&0i32.to_be_bytes());
        a.extend_from_slice(&NUMERIC.to_be_bytes());
        for (size, lower) in [(2i32, 1i32), (1, 1)] {
            a.extend_from_slice(&size.to_be_bytes());
            a.extend_from_slice(&lower.to_be_bytes());
        }
        for e in [numeric(&[5555, 5555, 5555, 4444], 3), numeric(&[7], 0)] {
            a.extend_from_slice(&(e.len() as i32).to_be_bytes());
            a.extend_from_slice(&e);
        }
        let out = mask_number_array(&a, &masker(), false).unwrap();
        let masked = numeric(&[5555, 5500, 0, 4444], 3);
        assert!(
            out.windows(masked.len()).any(|w| w == masked.as_slice()),
            "{out:?}"
        );
        assert!(out.ends_with(&numeric(&[7], 0)));
        // Truncated: refused rather than passed on.
        assert!(mask_number_array(&a[..a.len() - 1], &masker(), false).is_none());
    }
}
