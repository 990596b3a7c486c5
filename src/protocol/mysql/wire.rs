//! MySQL payloads tollgate reads and writes itself: length-encoded values, OK / ERR / EOF,
//! column definitions, and result rows in the text and binary protocols, with PANs masked.
//!
//! Everything here is pure and bounds-checked: a payload that does not decode is an error,
//! never a panic (fuzzed with the framing).

use std::borrow::Cow;

use crate::mask::Masker;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {0}")]
pub struct Malformed(pub &'static str);

/// Reads a payload front to back.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], what: &'static str) -> Reader<'a> {
        Reader { buf, pos: 0, what }
    }

    fn bad(&self) -> Malformed {
        Malformed(self.what)
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub fn rest(&mut self) -> &'a [u8] {
        let r = &self.buf[self.pos.min(self.buf.len())..];
        self.pos = self.buf.len();
        r
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        let end = self.pos.checked_add(n).ok_or(self.bad())?;
        let b = self.buf.get(self.pos..end).ok_or(self.bad())?;
        self.pos = end;
        Ok(b)
    }

    pub fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.bytes(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, Malformed> {
        let b = self.bytes(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self) -> Result<u32, Malformed> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A length-encoded integer; `None` for the NULL marker 0xFB.
    pub fn lenenc(&mut self) -> Result<Option<u64>, Malformed> {
        let first = self.u8()?;
        Ok(Some(match first {
            0..=0xFA => u64::from(first),
            0xFB => return Ok(None),
            0xFC => u64::from(self.u16()?),
            0xFD => {
                let b = self.bytes(3)?;
                u64::from(b[0]) | u64::from(b[1]) << 8 | u64::from(b[2]) << 16
            }
            0xFE => {
                let b = self.bytes(8)?;
                u64::from_le_bytes(b.try_into().map_err(|_| self.bad())?)
            }
            0xFF => return Err(self.bad()),
        }))
    }

    /// A length-encoded string; `None` for NULL.
    pub fn lenenc_bytes(&mut self) -> Result<Option<&'a [u8]>, Malformed> {
        match self.lenenc()? {
            None => Ok(None),
            Some(n) => {
                let n = usize::try_from(n).map_err(|_| self.bad())?;
                self.bytes(n).map(Some)
            }
        }
    }

    /// A length-encoded string that must not be NULL.
    pub fn lenenc_str(&mut self) -> Result<&'a [u8], Malformed> {
        self.lenenc_bytes()?.ok_or(self.bad())
    }

    /// A NUL-terminated string (the NUL is consumed).
    pub fn nul_str(&mut self) -> Result<&'a [u8], Malformed> {
        let rest = &self.buf[self.pos.min(self.buf.len())..];
        let end = rest.iter().position(|&b| b == 0).ok_or(self.bad())?;
        self.pos += end + 1;
        Ok(&rest[..end])
    }
}

pub fn put_lenenc(out: &mut Vec<u8>, n: u64) {
    match n {
        0..=0xFA => out.push(n as u8),
        0xFB..=0xFFFF => {
            out.push(0xFC);
            out.extend_from_slice(&(n as u16).to_le_bytes());
        }
        0x1_0000..=0xFF_FFFF => {
            out.push(0xFD);
            out.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
        }
        _ => {
            out.push(0xFE);
            out.extend_from_slice(&n.to_le_bytes());
        }
    }
}

pub fn put_lenenc_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_lenenc(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Status flags tollgate looks at.
pub const SERVER_STATUS_IN_TRANS: u16 = 0x0001;
pub const SERVER_STATUS_AUTOCOMMIT: u16 = 0x0002;
pub const SERVER_MORE_RESULTS_EXISTS: u16 = 0x0008;

/// An ERR packet payload (protocol 4.1: with SQLSTATE).
pub fn err(code: u16, sqlstate: &str, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 9);
    out.push(0xFF);
    out.extend_from_slice(&code.to_le_bytes());
    out.push(b'#');
    let mut state = [b'H', b'Y', b'0', b'0', b'0'];
    for (i, b) in sqlstate.bytes().take(5).enumerate() {
        state[i] = b;
    }
    out.extend_from_slice(&state);
    out.extend_from_slice(message.as_bytes());
    out
}

/// An OK packet payload.
pub fn ok(affected: u64, last_insert_id: u64, status: u16, warnings: u16) -> Vec<u8> {
    let mut out = vec![0x00];
    put_lenenc(&mut out, affected);
    put_lenenc(&mut out, last_insert_id);
    out.extend_from_slice(&status.to_le_bytes());
    out.extend_from_slice(&warnings.to_le_bytes());
    out
}

/// A decoded ERR packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrPacket<'a> {
    pub code: u16,
    pub sqlstate: Option<&'a [u8]>,
    pub message: &'a [u8],
}

pub fn parse_err(payload: &[u8]) -> Result<ErrPacket<'_>, Malformed> {
    let mut r = Reader::new(payload, "ERR packet");
    if r.u8()? != 0xFF {
        return Err(Malformed("ERR packet"));
    }
    let code = r.u16()?;
    let rest = r.rest();
    Ok(match rest {
        [b'#', state @ ..] if state.len() >= 5 => ErrPacket {
            code,
            sqlstate: Some(&state[..5]),
            message: &state[5..],
        },
        _ => ErrPacket {
            code,
            sqlstate: None,
            message: rest,
        },
    })
}

/// The ERR packet with its message masked; `None` when nothing changed.
pub fn mask_err(payload: &[u8], masker: &Masker) -> Result<Option<Vec<u8>>, Malformed> {
    let e = parse_err(payload)?;
    Ok(match masker.mask(e.message) {
        Cow::Borrowed(_) => None,
        Cow::Owned(m) => {
            let mut out = payload[..payload.len() - e.message.len()].to_vec();
            out.extend_from_slice(&m);
            Some(out)
        }
    })
}

/// What ends a result set or answers a command: OK, or EOF (the old 0xFE packet, or an OK
/// with header 0xFE under CLIENT_DEPRECATE_EOF).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub status: u16,
    pub warnings: u16,
}

/// Whether a packet inside a row stream is its terminator rather than a row: 0xFE with a
/// short payload (a text row starting with 0xFE is an 8-byte length and so is long).
pub fn is_eof(payload: &[u8], deprecate_eof: bool) -> bool {
    payload.first() == Some(&0xFE)
        && if deprecate_eof {
            payload.len() < super::packet::MAX_CHUNK
        } else {
            payload.len() < 9
        }
}

/// The status of an OK or EOF packet.
pub fn status(payload: &[u8]) -> Result<Status, Malformed> {
    let mut r = Reader::new(payload, "OK packet");
    let header = r.u8()?;
    if header == 0xFE && payload.len() < 9 {
        // The old EOF packet: warnings, then status.
        if payload.len() < 5 {
            return Ok(Status {
                status: 0,
                warnings: 0,
            });
        }
        let warnings = r.u16()?;
        let status = r.u16()?;
        return Ok(Status { status, warnings });
    }
    r.lenenc()?;
    r.lenenc()?;
    let status = r.u16()?;
    let warnings = if r.is_empty() { 0 } else { r.u16()? };
    Ok(Status { status, warnings })
}

/// An OK packet with its info text masked (session tracking is never negotiated, so the
/// info runs to the end); `None` when nothing changed.
pub fn mask_ok_info(payload: &[u8], masker: &Masker) -> Option<Vec<u8>> {
    let mut r = Reader::new(payload, "OK packet");
    r.u8().ok()?;
    r.lenenc().ok()?;
    r.lenenc().ok()?;
    r.u16().ok()?;
    r.u16().ok()?;
    let start = r.pos();
    match masker.mask(r.rest()) {
        Cow::Borrowed(_) => None,
        Cow::Owned(m) => {
            let mut out = payload[..start].to_vec();
            out.extend_from_slice(&m);
            Some(out)
        }
    }
}

/// An OK packet's counts, for the audit trail.
pub fn ok_counts(payload: &[u8]) -> Option<(u64, u64)> {
    let mut r = Reader::new(payload, "OK packet");
    r.u8().ok()?;
    Some((r.lenenc().ok()??, r.lenenc().ok()??))
}

/// Column types whose binary values have a fixed size, or a one-byte length.
pub mod types {
    pub const DECIMAL: u8 = 0x00;
    pub const TINY: u8 = 0x01;
    pub const SHORT: u8 = 0x02;
    pub const LONG: u8 = 0x03;
    pub const FLOAT: u8 = 0x04;
    pub const DOUBLE: u8 = 0x05;
    pub const NULL: u8 = 0x06;
    pub const TIMESTAMP: u8 = 0x07;
    pub const LONGLONG: u8 = 0x08;
    pub const INT24: u8 = 0x09;
    pub const DATE: u8 = 0x0A;
    pub const TIME: u8 = 0x0B;
    pub const DATETIME: u8 = 0x0C;
    pub const YEAR: u8 = 0x0D;
    pub const NEWDATE: u8 = 0x0E;
    pub const TIMESTAMP2: u8 = 0x11;
    pub const DATETIME2: u8 = 0x12;
    pub const TIME2: u8 = 0x13;
    pub const BIT: u8 = 0x10;
    pub const JSON: u8 = 0xF5;
    pub const NEWDECIMAL: u8 = 0xF6;
    pub const GEOMETRY: u8 = 0xFF;
}

pub const UNSIGNED_FLAG: u16 = 0x20;
pub const BINARY_CHARSET: u16 = 63;

/// A result column as a column definition packet describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ColumnDef {
    pub schema: String,
    pub table: String,
    pub org_table: String,
    pub name: String,
    pub org_name: String,
    pub charset: u16,
    pub ty: u8,
    pub flags: u16,
}

impl ColumnDef {
    /// Whether its text or binary values are numbers (masked digits become zeros, so a client
    /// still parses them).
    pub fn numeric(&self) -> bool {
        use types::*;
        matches!(
            self.ty,
            DECIMAL | NEWDECIMAL | TINY | SHORT | LONG | INT24 | LONGLONG | FLOAT | DOUBLE | YEAR
        )
    }
}

/// Decodes a column definition (protocol 4.1).
pub fn parse_column(payload: &[u8]) -> Result<ColumnDef, Malformed> {
    let mut r = Reader::new(payload, "column definition");
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let _catalog = r.lenenc_str()?;
    let schema = s(r.lenenc_str()?);
    let table = s(r.lenenc_str()?);
    let org_table = s(r.lenenc_str()?);
    let name = s(r.lenenc_str()?);
    let org_name = s(r.lenenc_str()?);
    let fixed = r.lenenc()?.ok_or(Malformed("column definition"))?;
    if fixed < 0x0C {
        return Err(Malformed("column definition"));
    }
    let charset = r.u16()?;
    let _length = r.u32()?;
    let ty = r.u8()?;
    let flags = r.u16()?;
    Ok(ColumnDef {
        schema,
        table,
        org_table,
        name,
        org_name,
        charset,
        ty,
        flags,
    })
}

/// The column definition with PANs masked in its names and default value; `None` when
/// nothing changed.
pub fn mask_column_def(payload: &[u8], masker: &Masker) -> Result<Option<Vec<u8>>, Malformed> {
    let mut r = Reader::new(payload, "column definition");
    let mut parts: [&[u8]; 6] = [&[]; 6];
    for p in parts.iter_mut() {
        *p = r.lenenc_str()?;
    }
    let fixed_start = r.pos();
    let fixed = r.lenenc()?.ok_or(Malformed("column definition"))?;
    r.bytes(usize::try_from(fixed).map_err(|_| Malformed("column definition"))?)?;
    let fixed_end = r.pos();
    // COM_FIELD_LIST adds the default value.
    let default = if r.is_empty() {
        None
    } else {
        r.lenenc_bytes()?
    };
    let masked: Vec<Cow<'_, [u8]>> = parts.iter().map(|p| masker.mask(p)).collect();
    let masked_default = default.map(|d| masker.mask(d));
    let changed = masked.iter().any(|m| matches!(m, Cow::Owned(_)))
        || matches!(masked_default, Some(Cow::Owned(_)));
    if !changed {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(payload.len() + 16);
    for m in &masked {
        put_lenenc_bytes(&mut out, m);
    }
    out.extend_from_slice(&payload[fixed_start..fixed_end]);
    if let Some(d) = masked_default {
        put_lenenc_bytes(&mut out, &d);
    } else if !r.is_empty() || payload.len() > fixed_end {
        out.extend_from_slice(&payload[fixed_end..]);
    }
    Ok(Some(out))
}

/// How one result column's values are masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnMask {
    pub ty: u8,
    pub unsigned: bool,
    pub numeric: bool,
    /// A column rule names it: every value is masked whatever its content.
    pub forced: bool,
}

impl ColumnMask {
    pub fn of(c: &ColumnDef, forced: bool) -> ColumnMask {
        ColumnMask {
            ty: c.ty,
            unsigned: c.flags & UNSIGNED_FLAG != 0,
            numeric: c.numeric(),
            forced,
        }
    }
}

/// A value in text form, masked: numbers keep their shape (masked digits become zeros).
/// `BIT` and geometry values are bytes in both protocols: decoded (issue #17).
fn mask_text_value<'a>(v: &'a [u8], col: &ColumnMask, masker: &Masker) -> Cow<'a, [u8]> {
    match col.ty {
        types::BIT => return mask_bit(v, col, masker).map_or(Cow::Borrowed(v), Cow::Owned),
        types::GEOMETRY => {
            return mask_geometry(v, col, masker).map_or(Cow::Borrowed(v), Cow::Owned);
        }
        _ => {}
    }
    if matches!(col.ty, types::FLOAT | types::DOUBLE)
        && let Some(f) = std::str::from_utf8(v)
            .ok()
            .and_then(|t| t.parse::<f64>().ok())
        && let Some(m) = crate::mask::number::mask_float(f, masker, col.forced)
    {
        return Cow::Owned(format!("{m:.0}").into_bytes());
    }
    if col.numeric {
        return match crate::mask::number::mask_number_text(v, masker, col.forced) {
            Some(m) => Cow::Owned(m),
            None => Cow::Borrowed(v),
        };
    }
    if col.forced {
        let m = masker.mask_column(v);
        return if m == v {
            Cow::Borrowed(v)
        } else {
            Cow::Owned(m)
        };
    }
    masker.mask(v)
}

/// A `BIT(n)` value: up to 8 bytes, a big-endian unsigned number; masked as a number of the
/// same width (zeros when the masked number no longer fits, or the value is malformed).
fn mask_bit(v: &[u8], col: &ColumnMask, masker: &Masker) -> Option<Vec<u8>> {
    if v.len() > 8 {
        return Some(vec![0; v.len()]);
    }
    let n = v.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    if n < 100_000_000_000 && !col.forced {
        return None;
    }
    let masked: u64 = crate::mask::number::masked_digits(&n.to_string(), masker, col.forced)?
        .parse()
        .ok()?;
    let bytes = masked.to_be_bytes();
    let width = v.len();
    Some(if bytes[..8 - width].iter().all(|&b| b == 0) {
        bytes[8 - width..].to_vec()
    } else {
        vec![0; width]
    })
}

/// A geometry value (4-byte SRID, then WKB): every coordinate a double, masked like one; a
/// value that does not parse as WKB is zeroed (fail closed).
fn mask_geometry(v: &[u8], col: &ColumnMask, masker: &Masker) -> Option<Vec<u8>> {
    let mut doubles = Vec::new();
    let mut at = 4;
    if v.len() < 4 || wkb(v, &mut at, &mut doubles, 0).is_none() || at != v.len() {
        return (!v.iter().all(|&b| b == 0)).then(|| vec![0; v.len()]);
    }
    let mut out: Option<Vec<u8>> = None;
    for (p, little) in doubles {
        let b: [u8; 8] = v[p..p + 8].try_into().ok()?;
        let f = if little {
            f64::from_le_bytes(b)
        } else {
            f64::from_be_bytes(b)
        };
        if let Some(m) = crate::mask::number::mask_float(f, masker, col.forced) {
            let o = out.get_or_insert_with(|| v.to_vec());
            let bytes = if little {
                m.to_le_bytes()
            } else {
                m.to_be_bytes()
            };
            o[p..p + 8].copy_from_slice(&bytes);
        }
    }
    out
}

/// Walks one WKB geometry from `at`, noting where each coordinate is and its byte order.
fn wkb(v: &[u8], at: &mut usize, doubles: &mut Vec<(usize, bool)>, depth: u8) -> Option<()> {
    if depth > 8 {
        return None;
    }
    let little = *v.get(*at)? == 1;
    let u32_at = |p: usize| -> Option<u32> {
        let b: [u8; 4] = v.get(p..p + 4)?.try_into().ok()?;
        Some(if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    let ty = u32_at(*at + 1)?;
    *at += 5;
    let points = |at: &mut usize, n: u32, doubles: &mut Vec<(usize, bool)>| -> Option<()> {
        for _ in 0..n {
            v.get(*at..*at + 16)?;
            doubles.push((*at, little));
            doubles.push((*at + 8, little));
            *at += 16;
        }
        Some(())
    };
    match ty {
        1 => points(at, 1, doubles),
        2 => {
            let n = u32_at(*at)?;
            *at += 4;
            points(at, n, doubles)
        }
        3 => {
            let rings = u32_at(*at)?;
            *at += 4;
            for _ in 0..rings {
                let n = u32_at(*at)?;
                *at += 4;
                points(at, n, doubles)?;
            }
            Some(())
        }
        4..=7 => {
            let n = u32_at(*at)?;
            *at += 4;
            for _ in 0..n {
                wkb(v, at, doubles, depth + 1)?;
            }
            Some(())
        }
        _ => None,
    }
}

/// A text-protocol row with its values masked; `None` when nothing changed. A row that does
/// not decode against its columns is an error (the caller fails closed).
pub fn mask_text_row(
    payload: &[u8],
    cols: &[ColumnMask],
    masker: &Masker,
) -> Result<Option<Vec<u8>>, Malformed> {
    let mut r = Reader::new(payload, "text row");
    let mut out: Option<Vec<u8>> = None;
    for col in cols {
        let start = r.pos();
        let v = r.lenenc_bytes()?;
        let Some(v) = v else {
            if let Some(o) = out.as_mut() {
                o.push(0xFB);
            }
            continue;
        };
        match mask_text_value(v, col, masker) {
            Cow::Borrowed(_) => {
                if let Some(o) = out.as_mut() {
                    o.extend_from_slice(&payload[start..r.pos()]);
                }
            }
            Cow::Owned(m) => {
                let o = out.get_or_insert_with(|| {
                    let mut o = Vec::with_capacity(payload.len() + 16);
                    o.extend_from_slice(&payload[..start]);
                    o
                });
                put_lenenc_bytes(o, &m);
            }
        }
    }
    if !r.is_empty() {
        return Err(Malformed("text row"));
    }
    Ok(out)
}

/// The size of one binary-protocol value of type `ty` at the start of `rest`, with its
/// length prefix; `None` when `rest` is too short.
fn binary_len(ty: u8, rest: &[u8]) -> Result<(usize, usize), Malformed> {
    use types::*;
    let fixed = |n: usize| {
        if rest.len() >= n {
            Ok((0, n))
        } else {
            Err(Malformed("binary row"))
        }
    };
    match ty {
        TINY => fixed(1),
        SHORT | YEAR => fixed(2),
        LONG | INT24 | FLOAT => fixed(4),
        LONGLONG | DOUBLE => fixed(8),
        NULL => Ok((0, 0)),
        TIMESTAMP | DATE | TIME | DATETIME | NEWDATE | TIMESTAMP2 | DATETIME2 | TIME2 => {
            let n = usize::from(*rest.first().ok_or(Malformed("binary row"))?);
            if rest.len() > n {
                Ok((1, n))
            } else {
                Err(Malformed("binary row"))
            }
        }
        _ => {
            let mut r = Reader::new(rest, "binary row");
            let n = r.lenenc()?.ok_or(Malformed("binary row"))?;
            let n = usize::try_from(n).map_err(|_| Malformed("binary row"))?;
            let head = r.pos();
            if rest.len() - head >= n {
                Ok((head, n))
            } else {
                Err(Malformed("binary row"))
            }
        }
    }
}

/// A binary integer, masked; `None` when nothing changes.
fn mask_binary_int(v: &[u8], col: &ColumnMask, masker: &Masker) -> Option<Vec<u8>> {
    let b: [u8; 8] = v.try_into().ok()?;
    let (negative, magnitude) = if col.unsigned {
        (false, u64::from_le_bytes(b))
    } else {
        let n = i64::from_le_bytes(b);
        (n < 0, n.unsigned_abs())
    };
    if magnitude < 100_000_000_000 && !col.forced {
        return None;
    }
    let masked = crate::mask::number::masked_digits(&magnitude.to_string(), masker, col.forced)?;
    let m: u64 = masked.parse().ok()?;
    Some(if col.unsigned {
        m.to_le_bytes().to_vec()
    } else {
        let m = m as i64;
        (if negative { -m } else { m }).to_le_bytes().to_vec()
    })
}

/// The values of a binary-protocol row: `(column, Some(value bytes))` or `None` for NULL.
pub fn binary_values(
    payload: &[u8],
    types: impl ExactSizeIterator<Item = u8>,
) -> Result<Vec<Option<&[u8]>>, Malformed> {
    let n = types.len();
    let bitmap_len = (n + 7 + 2) / 8;
    if payload.first() != Some(&0x00) || payload.len() < 1 + bitmap_len {
        return Err(Malformed("binary row"));
    }
    let bitmap = &payload[1..1 + bitmap_len];
    let mut at = 1 + bitmap_len;
    let mut out = Vec::with_capacity(n);
    for (i, ty) in types.enumerate() {
        let bit = i + 2;
        if bitmap[bit / 8] & (1 << (bit % 8)) != 0 {
            out.push(None);
            continue;
        }
        let (head, len) = binary_len(ty, &payload[at..])?;
        out.push(Some(&payload[at + head..at + head + len]));
        at += head + len;
    }
    if at != payload.len() {
        return Err(Malformed("binary row"));
    }
    Ok(out)
}

/// A binary-protocol row with its values masked: strings, decimals and JSON as text,
/// BIGINTs as numbers; `None` when nothing changed.
pub fn mask_binary_row(
    payload: &[u8],
    cols: &[ColumnMask],
    masker: &Masker,
) -> Result<Option<Vec<u8>>, Malformed> {
    use types::*;
    let n = cols.len();
    let bitmap_len = (n + 7 + 2) / 8;
    if payload.first() != Some(&0x00) || payload.len() < 1 + bitmap_len {
        return Err(Malformed("binary row"));
    }
    let mut at = 1 + bitmap_len;
    let mut out: Option<Vec<u8>> = None;
    for (i, col) in cols.iter().enumerate() {
        let bit = i + 2;
        if payload[1 + bit / 8] & (1 << (bit % 8)) != 0 {
            continue;
        }
        let (head, len) = binary_len(col.ty, &payload[at..])?;
        let v = &payload[at + head..at + head + len];
        let masked: Option<Vec<u8>> = match col.ty {
            LONGLONG => mask_binary_int(v, col, masker),
            TINY | SHORT | YEAR | LONG | INT24 => None,
            // A DOUBLE holds 16 digits exactly; a FLOAT (24-bit mantissa) cannot, so only a
            // column rule zeroes it.
            DOUBLE => <[u8; 8]>::try_from(v)
                .ok()
                .and_then(|b| {
                    crate::mask::number::mask_float(f64::from_le_bytes(b), masker, col.forced)
                })
                .map(|m| m.to_le_bytes().to_vec()),
            FLOAT if col.forced => Some(vec![0; len]),
            FLOAT | NULL => None,
            TIMESTAMP | DATE | TIME | DATETIME | NEWDATE | TIMESTAMP2 | DATETIME2 | TIME2 => None,
            _ => match mask_text_value(v, col, masker) {
                Cow::Borrowed(_) => None,
                Cow::Owned(m) => {
                    let mut e = Vec::with_capacity(m.len() + 9);
                    put_lenenc_bytes(&mut e, &m);
                    // The whole encoded value replaces the old one (its length may change).
                    Some(e)
                }
            },
        };
        let end = at + head + len;
        match masked {
            None => {
                if let Some(o) = out.as_mut() {
                    o.extend_from_slice(&payload[at..end]);
                }
            }
            Some(m) => {
                let o = out.get_or_insert_with(|| {
                    let mut o = Vec::with_capacity(payload.len() + 16);
                    o.extend_from_slice(&payload[..at]);
                    o
                });
                o.extend_from_slice(&m);
            }
        }
        at = end;
    }
    if at != payload.len() {
        return Err(Malformed("binary row"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
