//! Binary result values, decoded by their type so that a card number held as a number (or in
//! an array, a range, a multirange or a record of them) is masked as a value of the same type,
//! and a value whose type tollgate does not know for certain is withheld: fail closed, never
//! "scanned as if it were text".
//!
//! [`value`] returns the value to send (borrowed when unchanged) or `None`: withhold it (the
//! DataRow carries NULL in its place). Work per value is bounded: a `numeric` whose integer part
//! has more digits than any PAN-bearing run is not expanded (issue #17: `1e131071::numeric`).

use std::borrow::Cow;
use std::collections::HashMap;

use crate::mask::Masker;
use crate::mask::number::{mask_float, masked_digits};

pub const BOOL: u32 = 16;
pub const BYTEA: u32 = 17;
pub const CHAR: u32 = 18;
pub const NAME: u32 = 19;
pub const INT8: u32 = 20;
pub const INT2: u32 = 21;
pub const INT4: u32 = 23;
pub const TEXT: u32 = 25;
pub const OID: u32 = 26;
pub const JSON: u32 = 114;
pub const XML: u32 = 142;
pub const FLOAT4: u32 = 700;
pub const FLOAT8: u32 = 701;
pub const UNKNOWN: u32 = 705;
pub const MONEY: u32 = 790;
pub const BPCHAR: u32 = 1042;
pub const VARCHAR: u32 = 1043;
pub const DATE: u32 = 1082;
pub const TIME: u32 = 1083;
pub const TIMESTAMP: u32 = 1114;
pub const TIMESTAMPTZ: u32 = 1184;
pub const INTERVAL: u32 = 1186;
pub const TIMETZ: u32 = 1266;
pub const NUMERIC: u32 = 1700;
pub const RECORD: u32 = 2249;
pub const UUID: u32 = 2950;
pub const JSONB: u32 = 3802;
pub const INT8_ARRAY: u32 = 1016;
pub const NUMERIC_ARRAY: u32 = 1231;
pub const VOID: u32 = 2278;

/// The binary shape of a type defined in the target's database (read from its catalog by
/// `catalog::ConnCatalog::resolve_types`): decoded through the types it is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// An enum: its binary form is its label's text.
    Enum,
    /// A composite: a record of fields of these types (read from the catalog so that they
    /// are resolved too; each value's fields name their own types on the wire).
    Composite(Vec<u32>),
    /// A domain: its base type's form.
    Domain(u32),
    /// An array of this element type.
    Array(u32),
    /// A range of this subtype.
    Range(u32),
    /// A multirange of this range type.
    Multirange(u32),
}

/// User-defined types known on a connection, by OID.
pub type Types = HashMap<u32, Shape>;

impl Shape {
    /// The types a value of this shape is made of.
    pub fn parts(&self) -> &[u32] {
        match self {
            Shape::Enum => &[],
            Shape::Composite(fields) => fields,
            Shape::Domain(t) | Shape::Array(t) | Shape::Range(t) | Shape::Multirange(t) => {
                std::slice::from_ref(t)
            }
        }
    }
}

/// The types reachable from `roots` that neither tollgate nor `types` knows: what the
/// catalog must be asked about before their values can be decoded.
pub fn unresolved(roots: impl IntoIterator<Item = u32>, types: &Types) -> Vec<u32> {
    let mut stack: Vec<u32> = roots.into_iter().collect();
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    while let Some(oid) = stack.pop() {
        if !seen.insert(oid) || seen.len() > 10_000 {
            continue;
        }
        if known(oid) {
            continue;
        }
        match types.get(&oid) {
            Some(shape) => stack.extend_from_slice(shape.parts()),
            None => out.push(oid),
        }
    }
    out
}

/// Types whose binary form cannot hold a readable card number: booleans, small integers
/// (at most 10 digits), dates and times (a count of microseconds nobody reads as digits),
/// UUIDs, addresses.
const PLAIN: &[u32] = &[
    BOOL,
    INT2,
    INT4,
    OID,
    24,
    27,
    28,
    29,
    DATE,
    TIME,
    TIMESTAMP,
    TIMESTAMPTZ,
    INTERVAL,
    TIMETZ,
    UUID,
    650,
    869,
    829,
    774,
    1560,
    1562,
    2205,
    2206,
];

/// Types whose binary form is text (or text after a version byte): scanned as text.
const TEXTUAL: &[u32] = &[TEXT, VARCHAR, BPCHAR, NAME, CHAR, UNKNOWN, JSON, XML, JSONB];

/// Array types (of the types above) and their element types.
const ARRAYS: &[(u32, u32)] = &[
    (1000, BOOL),
    (1001, BYTEA),
    (1002, CHAR),
    (1003, NAME),
    (1005, INT2),
    (1007, INT4),
    (1009, TEXT),
    (1014, BPCHAR),
    (1015, VARCHAR),
    (INT8_ARRAY, INT8),
    (1021, FLOAT4),
    (1022, FLOAT8),
    (1028, OID),
    (1115, TIMESTAMP),
    (1182, DATE),
    (1183, TIME),
    (1185, TIMESTAMPTZ),
    (1187, INTERVAL),
    (NUMERIC_ARRAY, NUMERIC),
    (1270, TIMETZ),
    (143, XML),
    (199, JSON),
    (791, MONEY),
    (2287, RECORD),
    (2951, UUID),
    (3807, JSONB),
    (3905, 3904),
    (3907, 3906),
    (3909, 3908),
    (3911, 3910),
    (3913, 3912),
    (3927, 3926),
];

/// Range types and their subtypes.
const RANGES: &[(u32, u32)] = &[
    (3904, INT4),
    (3906, NUMERIC),
    (3908, TIMESTAMP),
    (3910, TIMESTAMPTZ),
    (3912, DATE),
    (3926, INT8),
];

/// Multirange types and their range types.
const MULTIRANGES: &[(u32, u32)] = &[
    (4451, 3904),
    (4532, 3906),
    (4533, 3908),
    (4534, 3910),
    (4535, 3912),
    (4536, 3926),
];

/// Whether a binary value of this type is returned as it is when the masker finds nothing in
/// its bytes (so a row of such values needs no decoding).
pub fn needs_no_decoding(oid: u32) -> bool {
    PLAIN.contains(&oid) || TEXTUAL.contains(&oid) || oid == BYTEA || oid == VOID
}

/// Whether tollgate knows this type's binary form (so its values are not withheld).
pub fn known(oid: u32) -> bool {
    needs_no_decoding(oid)
        || matches!(oid, INT8 | NUMERIC | FLOAT4 | FLOAT8 | MONEY | RECORD)
        || ARRAYS.iter().any(|(a, _)| *a == oid)
        || RANGES.iter().any(|(r, _)| *r == oid)
        || MULTIRANGES.iter().any(|(m, _)| *m == oid)
}

/// Nesting deeper than this (records of arrays of records…) is withheld.
pub const MAX_DEPTH: u8 = 8;

/// A binary value of type `oid` masked (`forced`: a column rule names its column), or `None`:
/// withhold it.
pub fn value<'a>(oid: u32, v: &'a [u8], masker: &Masker, forced: bool) -> Option<Cow<'a, [u8]>> {
    value_with(oid, v, masker, forced, &Types::new())
}

/// [`value`], with the user-defined types the connection knows (enums, composites, domains,
/// arrays, ranges of them); a type in neither is withheld.
pub fn value_with<'a>(
    oid: u32,
    v: &'a [u8],
    masker: &Masker,
    forced: bool,
    types: &Types,
) -> Option<Cow<'a, [u8]>> {
    Decoder { masker, types }.typed(oid, v, forced, 0)
}

/// What decoding a value needs besides the value.
struct Decoder<'m> {
    masker: &'m Masker,
    types: &'m Types,
}

impl Decoder<'_> {
    fn typed<'a>(&self, oid: u32, v: &'a [u8], forced: bool, depth: u8) -> Option<Cow<'a, [u8]>> {
        let masker = self.masker;
        if depth > MAX_DEPTH {
            return None;
        }
        match oid {
            INT8 | MONEY => mask_int8(v, masker, forced),
            NUMERIC => mask_numeric(v, masker, forced),
            FLOAT8 => {
                let f = f64::from_be_bytes(v.try_into().ok()?);
                Some(
                    mask_float(f, masker, forced)
                        .map_or(Cow::Borrowed(v), |m| Cow::Owned(m.to_be_bytes().to_vec())),
                )
            }
            FLOAT4 => {
                let f = f32::from_be_bytes(v.try_into().ok()?);
                Some(
                    mask_float(f64::from(f), masker, forced).map_or(Cow::Borrowed(v), |m| {
                        Cow::Owned((m as f32).to_be_bytes().to_vec())
                    }),
                )
            }
            _ if TEXTUAL.contains(&oid) => Some(if forced {
                Cow::Owned(masker.mask_column(v))
            } else {
                masker.mask(v)
            }),
            // Bytes may spell digits in ASCII; under a column rule they cannot be shown masked.
            BYTEA => (!forced).then(|| masker.mask(v)),
            // A column rule on a type that cannot hold the digits: nothing to show.
            _ if PLAIN.contains(&oid) || oid == VOID => (!forced).then_some(Cow::Borrowed(v)),
            RECORD => self.record(v, forced, depth),
            _ => {
                if let Some(&(_, elem)) = ARRAYS.iter().find(|(a, _)| *a == oid) {
                    self.array(elem, v, forced, depth)
                } else if let Some(&(_, sub)) = RANGES.iter().find(|(r, _)| *r == oid) {
                    self.range(sub, v, forced, depth)
                } else if let Some(&(_, r)) = MULTIRANGES.iter().find(|(m, _)| *m == oid) {
                    self.multirange(r, v, forced, depth)
                } else {
                    match self.types.get(&oid)? {
                        Shape::Enum => self.typed(TEXT, v, forced, depth + 1),
                        Shape::Composite(_) => self.record(v, forced, depth),
                        Shape::Domain(base) => self.typed(*base, v, forced, depth + 1),
                        Shape::Array(elem) => self.array(*elem, v, forced, depth),
                        Shape::Range(sub) => self.range(*sub, v, forced, depth),
                        Shape::Multirange(r) => self.multirange(*r, v, forced, depth),
                    }
                }
            }
        }
    }
}

/// A big-endian i32 at `at`.
fn int(v: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_be_bytes(v.get(at..at + 4)?.try_into().ok()?))
}

/// Length-prefixed items (`len: i32`, then `len` bytes, or -1 for NULL) from `at` to the end of
/// `v`, each passed through `each` (`None`: withhold the item: NULL where `nullable`, else the
/// whole value). Re-encoded when any item changed.
fn items<'a>(
    v: &'a [u8],
    mut at: usize,
    count: usize,
    nullable: bool,
    mut prefix_of: impl FnMut(usize) -> Option<u32>,
    mut each: impl FnMut(Option<u32>, &'a [u8]) -> Option<Cow<'a, [u8]>>,
) -> Option<(Cow<'a, [u8]>, bool)> {
    let mut out: Option<Vec<u8>> = None;
    let mut nulled = false;
    for _ in 0..count {
        let item_start = at;
        let oid = prefix_of(at);
        if oid.is_some() {
            at += 4;
        }
        let len_at = at;
        let len = int(v, at)?;
        at += 4;
        if len < 0 {
            if let Some(o) = &mut out {
                o.extend_from_slice(&v[item_start..at]);
            }
            continue;
        }
        let end = at.checked_add(usize::try_from(len).ok()?)?;
        let item = v.get(at..end)?;
        let masked = match each(oid, item) {
            Some(m) => Some(m),
            None if nullable => None,
            None => return None,
        };
        let changed = !matches!(masked, Some(Cow::Borrowed(_)));
        if changed && out.is_none() {
            out = Some(v[..item_start].to_vec());
        }
        if let Some(o) = &mut out {
            o.extend_from_slice(&v[item_start..len_at]);
            match &masked {
                Some(m) => {
                    o.extend_from_slice(&(m.len() as i32).to_be_bytes());
                    o.extend_from_slice(m);
                }
                None => {
                    nulled = true;
                    o.extend_from_slice(&(-1i32).to_be_bytes());
                }
            }
        }
        at = end;
    }
    if at != v.len() {
        return None;
    }
    Some((out.map_or(Cow::Borrowed(v), Cow::Owned), nulled))
}

impl Decoder<'_> {
    /// A binary array (any dimensions) of `elem`: each element masked; one withheld becomes NULL.
    fn array<'a>(&self, elem: u32, v: &'a [u8], forced: bool, depth: u8) -> Option<Cow<'a, [u8]>> {
        let ndim = usize::try_from(int(v, 0)?).ok()?;
        let header_elem = int(v, 8)? as u32;
        if ndim > 6 || header_elem != elem {
            return None;
        }
        let mut count = usize::from(ndim > 0);
        for d in 0..ndim {
            count = count.checked_mul(usize::try_from(int(v, 12 + 8 * d)?).ok()?)?;
        }
        let (out, nulled) = items(
            v,
            12 + 8 * ndim,
            count,
            true,
            |_| None,
            |_, e| self.typed(elem, e, forced, depth + 1),
        )?;
        Some(match (out, nulled) {
            (Cow::Owned(mut o), true) => {
                o[4..8].copy_from_slice(&1i32.to_be_bytes());
                Cow::Owned(o)
            }
            (out, _) => out,
        })
    }

    /// A binary record (or composite): each field, with the type the server names for it,
    /// masked; one withheld becomes NULL.
    fn record<'a>(&self, v: &'a [u8], forced: bool, depth: u8) -> Option<Cow<'a, [u8]>> {
        let count = usize::try_from(int(v, 0)?).ok()?;
        let oid_at = |at: usize| int(v, at).map(|o| o as u32);
        items(v, 4, count, true, oid_at, |oid, f| {
            self.typed(oid?, f, forced, depth + 1)
        })
        .map(|(out, _)| out)
    }

    /// A binary range of `sub`: flags, then the bounds present; a bound withheld withholds it.
    fn range<'a>(&self, sub: u32, v: &'a [u8], forced: bool, depth: u8) -> Option<Cow<'a, [u8]>> {
        const EMPTY: u8 = 0x01;
        const LOWER_INFINITE: u8 = 0x08;
        const UPPER_INFINITE: u8 = 0x10;
        let flags = *v.first()?;
        let bounds = if flags & EMPTY != 0 {
            0
        } else {
            usize::from(flags & LOWER_INFINITE == 0) + usize::from(flags & UPPER_INFINITE == 0)
        };
        items(
            v,
            1,
            bounds,
            false,
            |_| None,
            |_, b| self.typed(sub, b, forced, depth + 1),
        )
        .map(|(out, _)| out)
    }

    /// A binary multirange: a count, then ranges.
    fn multirange<'a>(
        &self,
        range_oid: u32,
        v: &'a [u8],
        forced: bool,
        depth: u8,
    ) -> Option<Cow<'a, [u8]>> {
        let count = usize::try_from(int(v, 0)?).ok()?;
        items(
            v,
            4,
            count,
            false,
            |_| None,
            |_, r| self.typed(range_oid, r, forced, depth + 1),
        )
        .map(|(out, _)| out)
    }
}

/// A binary `bigint` (or `money`, a count of cents).
fn mask_int8<'a>(v: &'a [u8], masker: &Masker, forced: bool) -> Option<Cow<'a, [u8]>> {
    let n = i64::from_be_bytes(v.try_into().ok()?);
    // Fewer than 12 digits cannot be a PAN: most numbers end here without any formatting.
    if n.unsigned_abs() < 100_000_000_000 && !forced {
        return Some(Cow::Borrowed(v));
    }
    let digits = n.unsigned_abs().to_string();
    Some(
        match masked_digits(&digits, masker, forced).and_then(|m| m.parse::<i64>().ok()) {
            Some(m) => Cow::Owned((if n < 0 { -m } else { m }).to_be_bytes().to_vec()),
            None => Cow::Borrowed(v),
        },
    )
}

/// Integer digits past which a `numeric` cannot hold a PAN (zeros, PAN, expiry, CVV).
const MAX_INTEGER_GROUPS: usize = crate::mask::pan::MAX_GROUP.div_ceil(4) + 1;

/// A binary `numeric`: base-10000 digit groups with a weight; the integer part is checked.
fn mask_numeric<'a>(v: &'a [u8], masker: &Masker, forced: bool) -> Option<Cow<'a, [u8]>> {
    let header = |i: usize| v.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let (ndigits, weight, sign, dscale) = (header(0)?, header(2)?, header(4)?, header(6)?);
    let (ndigits, weight) = (usize::from(ndigits), weight as i16);
    if v.len() != 8 + 2 * ndigits {
        return None;
    }
    if weight < 0 || sign >= 0xC000 {
        return Some(Cow::Borrowed(v));
    }
    let int_groups = weight as usize + 1;
    if int_groups > MAX_INTEGER_GROUPS {
        // Far longer than any card number (`1e131071`): nothing to decode. Under a column rule
        // the value becomes 0.
        return Some(if forced {
            Cow::Owned(vec![0, 0, 0, 0, 0, 0, 0, 0])
        } else {
            Cow::Borrowed(v)
        });
    }
    let groups: Vec<u16> = (0..ndigits).filter_map(|i| header(8 + 2 * i)).collect();
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
        return Some(Cow::Borrowed(v));
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
    Some(Cow::Owned(out))
}
