//! The transform stage on PostgreSQL server messages: PANs masked in every value that flows
//! back to the client — DataRow values, COPY data, error and notice fields, notification
//! payloads.
//!
//! Each function returns the re-encoded message (lengths fixed) when something changed, and
//! `None` when the original bytes can be forwarded as they are, which is the common case and
//! costs one scan for digits.

use std::borrow::Cow;

use super::binary;
use super::frame::put_message;
use super::results::Column;
use crate::mask::number::{mask_float, mask_number_text};
use crate::mask::{Format, Masker, pan};

/// Whether a body can hold a PAN at all (12 ASCII digits, or other scripts' digits).
fn may_hold_pan(body: &[u8]) -> bool {
    pan::may_hold(body)
}

/// A DataRow (`D`): every non-NULL value masked, whatever its column's type or format.
///
/// - Binary values are decoded by their type ([`binary::value`]): numbers masked as numbers
///   of their type, arrays, ranges, multiranges and records element by element; a value
///   whose type tollgate does not know for certain, or whose column's type and format are
///   unknown, is withheld (NULL): fail closed.
/// - Text values of number columns keep parsing as numbers (masked digits become zeros);
///   other text values are masked in their own spelling.
///
/// A malformed row is returned empty rather than forwarded (fail closed).
pub fn data_row(body: &[u8], masker: &Masker, columns: Option<&[Column]>) -> Option<Vec<u8>> {
    data_row_noting(
        body,
        masker,
        columns,
        &binary::Types::new(),
        &mut Vec::new(),
    )
}

/// [`data_row`], noting in `found` the columns (not under a column rule) in which the masker
/// found a card number: candidates for promotion (`conn::promotion`). `types`: the
/// user-defined types the connection has read from the target's catalog.
pub fn data_row_noting(
    body: &[u8],
    masker: &Masker,
    columns: Option<&[Column]>,
    types: &binary::Types,
    found: &mut Vec<usize>,
) -> Option<Vec<u8>> {
    let decode = columns.is_some_and(|c| {
        c.iter()
            .any(|c| c.masked || (c.format == 1 && !binary::needs_no_decoding(c.type_oid)))
    });
    if !decode && !may_hold_pan(body) {
        return None;
    }
    let Some(values) = split_row(body) else {
        // Cannot be parsed, so cannot be masked: send nothing readable.
        let mut out = Vec::new();
        put_message(&mut out, b'D', &0i16.to_be_bytes());
        return Some(out);
    };
    let mut nulled = false;
    let masked: Vec<Option<Cow<'_, [u8]>>> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let v = (*v)?;
            let column = columns.and_then(|c| c.get(i));
            let out = match column {
                Some(c) if c.format == 1 => {
                    binary::value_with(c.type_oid, v, masker, c.masked, types)
                }
                // A double prints 16 digits as `4.111111111111111e+15`: shown as the whole
                // number it is, masked.
                Some(c) if matches!(c.type_oid, binary::FLOAT8 | binary::FLOAT4) => Some(
                    std::str::from_utf8(v)
                        .ok()
                        .and_then(|t| t.parse::<f64>().ok())
                        .and_then(|f| mask_float(f, masker, c.masked))
                        .map_or_else(
                            || masker.mask(v),
                            |m| Cow::Owned(format!("{m:.0}").into_bytes()),
                        ),
                ),
                Some(c) if is_number(c.type_oid) => {
                    Some(mask_number_text(v, masker, c.masked).map_or(Cow::Borrowed(v), Cow::Owned))
                }
                Some(c) if c.masked => Some(Cow::Owned(masker.mask_column(v))),
                // Text, or no column description at all: the values are text (a binary
                // result always has its columns known, from tollgate's own Describe).
                _ => Some(masker.mask(v)),
            };
            if out.is_none() {
                nulled = true;
            }
            if matches!(out, Some(Cow::Owned(_))) && column.is_some_and(|c| !c.masked) {
                found.push(i);
            }
            out
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

/// Number types whose text form must still parse once masked (issue #17: psycopg2 reads an
/// int8 column with `int()`).
fn is_number(oid: u32) -> bool {
    matches!(
        oid,
        binary::INT8
            | binary::INT4
            | binary::INT2
            | binary::NUMERIC
            | binary::FLOAT4
            | binary::FLOAT8
            | binary::OID
    )
}

/// RowDescription (`T`): column names masked (`SELECT 1 AS "4111111111111111"`), the rest of
/// each field kept.
pub fn row_description(body: &[u8], masker: &Masker) -> Option<Vec<u8>> {
    if !may_hold_pan(body) {
        return None;
    }
    let count = usize::try_from(i16::from_be_bytes(body.get(..2)?.try_into().ok()?)).ok()?;
    let mut new_body = body[..2].to_vec();
    let mut rest = &body[2..];
    let mut changed = false;
    for _ in 0..count {
        let end = rest.iter().position(|&b| b == 0)?;
        let fixed = rest.get(end + 1..end + 1 + 18)?;
        let name = masker.mask(&rest[..end]);
        changed |= matches!(name, Cow::Owned(_));
        new_body.extend_from_slice(&name);
        new_body.push(0);
        new_body.extend_from_slice(fixed);
        rest = &rest[end + 1 + 18..];
    }
    if !changed || !rest.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(new_body.len() + 5);
    put_message(&mut out, b'T', &new_body);
    Some(out)
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

/// FunctionCallResponse (`V`): one value, masked like a DataRow's. `binary`: the call asked
/// for a binary result, of this type (the function's declared return type; 0 when it could
/// not be read) with these user-defined types: decoded by it, or withheld (NULL).
pub fn function_result(
    body: &[u8],
    masker: &Masker,
    binary: Option<(u32, &binary::Types)>,
) -> Option<Vec<u8>> {
    if binary.is_none() && !may_hold_pan(body) {
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
    let masked = match binary {
        Some((oid, types)) => binary::value_with(oid, value, masker, false, types),
        None => Some(masker.mask(value)),
    };
    let new_body = match masked {
        Some(Cow::Borrowed(_)) => return None,
        Some(Cow::Owned(masked)) => {
            let mut new_body = (masked.len() as i32).to_be_bytes().to_vec();
            new_body.extend_from_slice(&masked);
            new_body
        }
        None => (-1i32).to_be_bytes().to_vec(),
    };
    let mut out = Vec::new();
    put_message(&mut out, b'V', &new_body);
    Some(out)
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

/// The signature that opens binary COPY data.
const BINARY_COPY_SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// CopyData (`d`) of a binary COPY toward the client. Its column types are not announced, so
/// each field is read every way that could show a card number: its bytes as text (masked in
/// place), and, when its length fits, as a `bigint`, a `double precision` or a `numeric`
/// (masked as that type when its digits hold a PAN). A field is thus masked whenever any
/// reading shows a card number (fail closed; a field that only looks like one loses digits).
/// A message that does not parse as whole tuples is emptied.
pub fn binary_copy_data(body: &[u8], masker: &Masker) -> Option<Vec<u8>> {
    let same_length = Masker::new(
        if masker.format() == Format::Hmac {
            Format::Redact
        } else {
            masker.format()
        },
        None,
    );
    let mut out = Vec::with_capacity(body.len());
    let mut at = 0;
    if body.starts_with(BINARY_COPY_SIGNATURE) {
        let ext = body
            .get(15..19)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
        match ext
            .and_then(|e| 19usize.checked_add(e))
            .filter(|&h| h <= body.len())
        {
            Some(h) => {
                out.extend_from_slice(&body[..h]);
                at = h;
            }
            None => at = body.len() + 1,
        }
    }
    'tuples: while at < body.len() {
        let Some(count) = body
            .get(at..at + 2)
            .map(|b| i16::from_be_bytes([b[0], b[1]]))
        else {
            at = body.len() + 1;
            break;
        };
        out.extend_from_slice(&count.to_be_bytes());
        at += 2;
        for _ in 0..count.max(0) {
            let Some(len) = body
                .get(at..at + 4)
                .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            else {
                at = body.len() + 1;
                break 'tuples;
            };
            at += 4;
            let Ok(n) = usize::try_from(len) else {
                out.extend_from_slice(&len.to_be_bytes());
                continue;
            };
            let Some(v) = body.get(at..at + n) else {
                at = body.len() + 1;
                break 'tuples;
            };
            at += n;
            let mut field: Cow<'_, [u8]> = same_length.mask(v);
            for oid in [binary::INT8, binary::FLOAT8, binary::NUMERIC] {
                if let Some(Cow::Owned(m)) = binary::value(oid, &field, masker, false) {
                    field = Cow::Owned(m);
                }
            }
            out.extend_from_slice(&(field.len() as i32).to_be_bytes());
            out.extend_from_slice(&field);
        }
    }
    if at != body.len() {
        out.clear();
    }
    if out == body {
        return None;
    }
    let mut frame = Vec::with_capacity(out.len() + 5);
    put_message(&mut frame, b'd', &out);
    Some(frame)
}

/// The longest field of an ErrorResponse or NoticeResponse forwarded, in bytes; the rest is
/// cut. PostgreSQL's own messages are far shorter: a longer one echoes data (a value cast in
/// an error, a notice raised with a table's contents), which would carry a result past its
/// cap and fill the audit queue with one record.
pub const MAX_MESSAGE_FIELD: usize = 8 * 1024;

/// ErrorResponse (`E`) or NoticeResponse (`N`): every field masked (a unique violation's DETAIL
/// echoes the key; a RAISE NOTICE echoes whatever it was given).
pub fn fields(tag: u8, body: &[u8], masker: &Masker) -> Option<Vec<u8>> {
    let oversized = body.len() > MAX_MESSAGE_FIELD;
    if !oversized && !may_hold_pan(body) {
        return None;
    }
    let mut new_body = Vec::with_capacity(body.len().min(16 * MAX_MESSAGE_FIELD) + 16);
    let mut rest = body;
    let mut changed = false;
    while let Some((&code, tail)) = rest.split_first() {
        if code == 0 {
            break;
        }
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        let value = &tail[..end];
        let kept = if value.len() > MAX_MESSAGE_FIELD {
            changed = true;
            // Cut on a character boundary.
            let mut cut = MAX_MESSAGE_FIELD;
            while cut > 0 && value[cut] & 0xC0 == 0x80 {
                cut -= 1;
            }
            &value[..cut]
        } else {
            value
        };
        let masked = masker.mask(kept);
        changed |= matches!(masked, std::borrow::Cow::Owned(_));
        new_body.push(code);
        new_body.extend_from_slice(&masked);
        if kept.len() < value.len() {
            new_body.extend_from_slice(
                format!(" … [{} bytes cut by tollgate]", value.len() - kept.len()).as_bytes(),
            );
        }
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
    use crate::protocol::pg::binary::{INT8, NUMERIC};
    use crate::protocol::pg::frame::Message;

    fn masker() -> Masker {
        Masker::new(Format::BinLast4, None)
    }

    #[test]
    fn an_error_or_notice_field_past_8_kib_is_cut_on_a_character_boundary() {
        let long = "é".repeat(3 * MAX_MESSAGE_FIELD);
        for tag in [b'E', b'N'] {
            let body = format!("SERROR\0C22P02\0M{long}\0\0");
            let out = fields(tag, body.as_bytes(), &masker()).expect("cut");
            let text = std::str::from_utf8(&out[5..]).expect("still UTF-8");
            assert!(out.len() < MAX_MESSAGE_FIELD + 200, "{}", out.len());
            assert!(text.starts_with("SERROR\0C22P02\0Mé"), "{text:.40}");
            assert!(text.contains("bytes cut by tollgate]\0\0"));
        }
        // Short messages without digits pass untouched.
        assert!(fields(b'E', b"SERROR\0C42601\0Msyntax error\0\0", &masker()).is_none());
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
                source: (0, 0),
            },
            Column {
                type_oid: NUMERIC,
                format: 1,
                masked: false,
                source: (0, 0),
            },
            Column {
                type_oid: INT8,
                format: 1,
                masked: false,
                source: (0, 0),
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
        let out = function_result(&v, &masker(), None).unwrap();
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
        let out = binary::value(binary::NUMERIC_ARRAY, &a, &masker(), false).unwrap();
        let masked = numeric(&[5555, 5500, 0, 4444], 3);
        assert!(
            out.windows(masked.len()).any(|w| w == masked.as_slice()),
            "{out:?}"
        );
        assert!(out.ends_with(&numeric(&[7], 0)));
        // Truncated: refused rather than passed on.
        assert!(
            binary::value(binary::NUMERIC_ARRAY, &a[..a.len() - 1], &masker(), false).is_none()
        );
    }
}
