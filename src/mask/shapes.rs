//! Shapes whose digits read like card numbers but are something else, recognised whole so the
//! detector leaves them alone: IBANs (country, length, mod-97 check) and UUIDs.

/// IBAN countries and their IBAN lengths (SWIFT IBAN registry).
const IBAN_LENGTHS: &[([u8; 2], usize)] = &[
    (*b"AD", 24),
    (*b"AE", 23),
    (*b"AL", 28),
    (*b"AT", 20),
    (*b"AZ", 28),
    (*b"BA", 20),
    (*b"BE", 16),
    (*b"BG", 22),
    (*b"BH", 22),
    (*b"BI", 27),
    (*b"BR", 29),
    (*b"BY", 28),
    (*b"CH", 21),
    (*b"CR", 22),
    (*b"CY", 28),
    (*b"CZ", 24),
    (*b"DE", 22),
    (*b"DJ", 27),
    (*b"DK", 18),
    (*b"DO", 28),
    (*b"EE", 20),
    (*b"EG", 29),
    (*b"ES", 24),
    (*b"FI", 18),
    (*b"FK", 18),
    (*b"FO", 18),
    (*b"FR", 27),
    (*b"GB", 22),
    (*b"GE", 22),
    (*b"GI", 23),
    (*b"GL", 18),
    (*b"GR", 27),
    (*b"GT", 28),
    (*b"HR", 21),
    (*b"HU", 28),
    (*b"IE", 22),
    (*b"IL", 23),
    (*b"IQ", 23),
    (*b"IS", 26),
    (*b"IT", 27),
    (*b"JO", 30),
    (*b"KW", 30),
    (*b"KZ", 20),
    (*b"LB", 28),
    (*b"LC", 32),
    (*b"LI", 21),
    (*b"LT", 20),
    (*b"LU", 20),
    (*b"LV", 21),
    (*b"LY", 25),
    (*b"MC", 27),
    (*b"MD", 24),
    (*b"ME", 22),
    (*b"MK", 19),
    (*b"MN", 20),
    (*b"MR", 27),
    (*b"MT", 31),
    (*b"MU", 30),
    (*b"NI", 28),
    (*b"NL", 18),
    (*b"NO", 15),
    (*b"OM", 23),
    (*b"PK", 24),
    (*b"PL", 28),
    (*b"PS", 29),
    (*b"PT", 25),
    (*b"QA", 29),
    (*b"RO", 24),
    (*b"RS", 22),
    (*b"RU", 33),
    (*b"SA", 24),
    (*b"SC", 31),
    (*b"SD", 18),
    (*b"SE", 24),
    (*b"SI", 19),
    (*b"SK", 24),
    (*b"SM", 27),
    (*b"SO", 23),
    (*b"ST", 25),
    (*b"SV", 28),
    (*b"TL", 23),
    (*b"TN", 24),
    (*b"TR", 26),
    (*b"UA", 29),
    (*b"VA", 22),
    (*b"VG", 24),
    (*b"XK", 20),
    (*b"YE", 30),
];

/// If the digit at `j` is the first check digit of an IBAN (`DE89 3704 0044 …`: two capital
/// letters at a word start naming an IBAN country, then letters and digits, in groups of four
/// or not, as many as that country's IBANs have, whose ISO 7064 mod-97 check holds), where it
/// ends. Bank account numbers written in groups of four would
/// otherwise read like card numbers; a random string passes the check once in 97.
pub(super) fn iban_at(text: &[u8], j: usize) -> Option<usize> {
    let s = j.checked_sub(2)?;
    if !text[s].is_ascii_uppercase()
        || !text[s + 1].is_ascii_uppercase()
        || s.checked_sub(1)
            .is_some_and(|p| text[p].is_ascii_alphanumeric())
    {
        return None;
    }
    let mut chars = [0u8; 34];
    let mut n = 0;
    let mut i = s;
    let mut end = s;
    while i < text.len() && n < chars.len() {
        let c = text[i];
        if c.is_ascii_digit() || c.is_ascii_uppercase() {
            chars[n] = c;
            n += 1;
            end = i + 1;
        } else if !(c == b' ' && text.get(i + 1).is_some_and(u8::is_ascii_alphanumeric)) {
            break;
        }
        i += 1;
    }
    let country = [chars[0], chars[1]];
    if !IBAN_LENGTHS.contains(&(country, n)) || !chars[2].is_ascii_digit() {
        return None;
    }
    let remainder = chars[4..n].iter().chain(&chars[..4]).fold(0u32, |r, &c| {
        if c.is_ascii_digit() {
            (r * 10 + u32::from(c - b'0')) % 97
        } else {
            (r * 100 + u32::from(c - b'A') + 10) % 97
        }
    });
    (remainder == 1).then_some(end)
}

/// Whether byte `at` lies inside a UUID (`8-4-4-4-12` hexadecimal digits).
pub(super) fn in_uuid(text: &[u8], at: usize) -> bool {
    let hexish = |c: &u8| c.is_ascii_hexdigit() || *c == b'-';
    let start = at
        - text[at.saturating_sub(36)..at]
            .iter()
            .rev()
            .take_while(|c| hexish(c))
            .count();
    let end = at + text[at..].iter().take(36).take_while(|c| hexish(c)).count();
    let span = &text[start..end];
    span.windows(36).any(|w| {
        w.iter().enumerate().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                *c == b'-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
    })
}
