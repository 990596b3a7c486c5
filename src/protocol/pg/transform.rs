//! The transform stage on PostgreSQL server messages: PANs masked in every value that flows
//! back to the client — DataRow values, COPY data, error and notice fields, notification
//! payloads.
//!
//! Each function returns the re-encoded message (lengths fixed) when something changed, and
//! `None` when the original bytes can be forwarded as they are, which is the common case and
//! costs one scan for digits.

use super::frame::put_message;
use crate::mask::{Format, Masker, pan};

/// Whether a body can hold a PAN at all (at least 12 digits somewhere).
fn may_hold_pan(body: &[u8]) -> bool {
    body.iter()
        .filter(|b| b.is_ascii_digit())
        .take(pan::MIN_DIGITS)
        .count()
        >= pan::MIN_DIGITS
}

/// A DataRow (`D`): every non-NULL value masked, whatever its column's type or format.
/// A malformed row is returned fully redacted rather than forwarded (fail closed).
pub fn data_row(body: &[u8], masker: &Masker) -> Option<Vec<u8>> {
    if !may_hold_pan(body) {
        return None;
    }
    let Some(values) = split_row(body) else {
        // Cannot be parsed, so cannot be masked: send nothing readable.
        let mut out = Vec::new();
        put_message(&mut out, b'D', &0i16.to_be_bytes());
        return Some(out);
    };
    let masked: Vec<Option<std::borrow::Cow<'_, [u8]>>> =
        values.iter().map(|v| v.map(|v| masker.mask(v))).collect();
    if masked.iter().all(|v| {
        v.as_ref()
            .is_none_or(|c| matches!(c, std::borrow::Cow::Borrowed(_)))
    }) {
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

fn split_row(body: &[u8]) -> Option<Vec<Option<&[u8]>>> {
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
        let out = data_row(&body, &masker()).unwrap();
        let m = Message::from_frame(&out);
        assert_eq!(m.tag, b'D');
        let values = split_row(m.body).unwrap();
        assert_eq!(values[0], Some(&b"42"[..]));
        assert_eq!(values[1], None);
        assert_eq!(values[2], Some(&b"411111******1111"[..]));
        assert_eq!(values[3], Some(&b"{\"pan\": \"5555 55** **** 4444\"}"[..]));
        // No PAN: forwarded as it was.
        assert!(data_row(&row(&[Some(b"1700000000000"), Some(b"x")]), &masker()).is_none());
        // Malformed with digits enough: redacted entirely.
        let mut bad = row(&[Some(b"4111111111111111")]);
        bad.push(0);
        let out = data_row(&bad, &masker()).unwrap();
        assert_eq!(Message::from_frame(&out).body, &0i16.to_be_bytes());
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
}
