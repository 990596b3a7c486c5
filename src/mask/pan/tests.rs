use super::*;

fn pans(text: &str) -> Vec<&str> {
    find_all(text.as_bytes())
        .into_iter()
        .map(|f| &text[f.range])
        .collect()
}

#[test]
fn every_brand_and_length() {
    // Test numbers published by the brands and card processors.
    for pan in [
        "4111111111111111",    // Visa 16
        "4222222222222",       // Visa 13
        "4111111111111111110", // Visa 19
        "5555555555554444",    // Mastercard 5x
        "2223000048400011",    // Mastercard 2-series
        "2720992720992729",    // Mastercard 2720
        "378282246310005",     // Amex 37
        "341111111111111",     // Amex 34
        "6011111111111117",    // Discover 6011
        "6221260000000000",    // Discover 622126
        "6445644564456445",    // Discover 644
        "6500000000000002",    // Discover 65, also UnionPay range
        "3530111333300000",    // JCB
        "30569309025904",      // Diners 14
        "36227206271667",      // Diners 36
        "38520000023237",      // Diners 38
        "6200000000000005",    // UnionPay
        "6759649826438453",    // Maestro 6759
        "501800000009",        // Maestro 12 digits
    ] {
        assert!(
            is_pan(pan.as_bytes()),
            "{pan}: brand {:?} luhn {}",
            brand(pan.as_bytes()),
            luhn(pan.as_bytes())
        );
        assert_eq!(pans(pan), vec![pan], "{pan}");
    }
}

#[test]
fn separators_edges_and_neighbours() {
    let cases: &[(&str, &[&str])] = &[
        ("4111 1111 1111 1111", &["4111 1111 1111 1111"]),
        ("4111-1111-1111-1111", &["4111-1111-1111-1111"]),
        ("3782 822463 10005", &["3782 822463 10005"]),
        ("card 4111111111111111 expires", &["4111111111111111"]),
        ("card4111111111111111x", &["4111111111111111"]),
        ("pan_4111111111111111_", &["4111111111111111"]),
        ("{\"pan\":\"4111111111111111\"}", &["4111111111111111"]),
        ("{\"pan\":4111111111111111}", &["4111111111111111"]),
        (
            "4111111111111111,5555555555554444",
            &["4111111111111111", "5555555555554444"],
        ),
        ("ref 1234 4111111111111111", &["4111111111111111"]),
        (
            "{4111111111111111,378282246310005}",
            &["4111111111111111", "378282246310005"],
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(pans(text), expected.to_vec(), "{text}");
    }
}

/// Issue #17: every human spelling of a card number is found (and only the number).
#[test]
fn spellings_a_person_can_read() {
    let cases: &[(&str, &str)] = &[
        ("4111.1111.1111.1111", "4111.1111.1111.1111"),
        // Dotted groups inside, digits joined on both sides: one number, not an address.
        (" 400/000.000.000.000 2 ", "400/000.000.000.000 2"),
        ("4111/1111/1111/1111", "4111/1111/1111/1111"),
        ("4111 1111-1111 1111", "4111 1111-1111 1111"),
        ("4111  1111  1111  1111", "4111  1111  1111  1111"),
        ("4111 - 1111 - 1111 - 1111", "4111 - 1111 - 1111 - 1111"),
        ("4111_1111:1111,1111", "4111_1111:1111,1111"),
        ("4111\t1111\n1111\r\n1111", "4111\t1111\n1111\r\n1111"),
        (
            "4111\u{a0}1111\u{2013}1111\u{2009}1111",
            "4111\u{a0}1111\u{2013}1111\u{2009}1111",
        ),
        (
            "４１１１１１１１１１１１１１１１",
            "４１１１１１１１１１１１１１１１",
        ),
        (
            "４１１１ １１１１ １１１１ １１１１",
            "４１１１ １１１１ １１１１ １１１１",
        ),
        ("𝟒𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏", "𝟒𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏"),
        ("٤١١١١١١١١١١١١١١١", "٤١١١١١١١١١١١١١١١"),
        ("४१११११११११११११११", "४१११११११११११११११"),
        (
            "4111\u{200b}1111\u{200b}1111\u{200b}1111",
            "4111\u{200b}1111\u{200b}1111\u{200b}1111",
        ),
        (
            "4111\u{ad}1111\u{ad}1111\u{ad}1111",
            "4111\u{ad}1111\u{ad}1111\u{ad}1111",
        ),
        ("pan 41111111111111111225 ok", "41111111111111111225"),
        ("41111111111111111225123", "41111111111111111225123"),
        ("0004111111111111111", "4111111111111111"),
        ("0000 4111 1111 1111 1111", "4111 1111 1111 1111"),
        ("$4,111,111,111,111,111.00", "4,111,111,111,111,111"),
        ("4.111111111111111e+15", "4.111111111111111"),
        ("6.011000000002e15 and", "6.011000000002"),
        (
            "%34%31%31%31%31%31%31%31%31%31%31%31%31%31%31%31",
            "%34%31%31%31%31%31%31%31%31%31%31%31%31%31%31%31",
        ),
        ("4111%201111%201111%201111", "4111%201111%201111%201111"),
        (
            "\\u0034\\u0031\\u0031\\u0031111111111111",
            "\\u0034\\u0031\\u0031\\u0031111111111111",
        ),
        ("[4111,1111,1111,1111]", "4111,1111,1111,1111"),
        ("\"4111\\n1111\\n1111\\n1111\"", "4111\\n1111\\n1111\\n1111"),
        ("41 11 11 11 11 11 11 11", "41 11 11 11 11 11 11 11"),
        (
            "4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
            "4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
        ),
        ("XX4111 1111 1111 1111", "4111 1111 1111 1111"),
    ];
    for (text, expected) in cases {
        assert_eq!(pans(text), vec![*expected], "{text}");
    }
}

#[test]
fn sixteen_digit_scientific_without_every_digit() {
    // 6011000000000004 = 6.011000000000004e15 (float8 text output drops nothing here).
    assert_eq!(pans("x 6.011000000000004e+15 y"), vec!["6.011000000000004"]);
    assert!(pans("1.5e15").is_empty());
}

#[test]
fn long_runs_cost_bounded_work() {
    let mut big = String::from("1");
    big.push_str(&"0".repeat(131_071));
    assert!(pans(&big).is_empty());
    let many = "1 ".repeat(1000) + "4111 1111 1111 1111";
    assert_eq!(pans(&many), vec!["4111 1111 1111 1111"]);
    let padded = "0".repeat(100) + "4111111111111111";
    assert_eq!(pans(&padded), vec!["4111111111111111"]);
    let runs = "12 ".repeat(200) + "x";
    assert!(pans(&runs).is_empty());
}

#[test]
fn next_digit_like_finds_every_digit_and_high_byte() {
    let text = b"abcdefghijklmnopqrstuvwxyz 0 ABCDEFGH\xff\x80\x39/:9";
    let expected: Vec<usize> = (0..text.len())
        .filter(|&i| text[i].is_ascii_digit() || text[i] >= 0x80)
        .collect();
    let mut got = Vec::new();
    let mut i = 0;
    while let Some(j) = next_digit_like(text, i) {
        got.push(j);
        i = j + 1;
    }
    assert_eq!(got, expected);
    for b in 0..=255u8 {
        let t = [b'x', b'x', b'x', b'x', b'x', b'x', b'x', b];
        assert_eq!(
            next_digit_like(&t, 0),
            (b.is_ascii_digit() || b >= 0x80).then_some(7),
            "{b}"
        );
    }
}

#[test]
fn near_misses_stay_untouched() {
    for text in [
        "1700000000000",                        // millisecond timestamp
        "1731234567890123",                     // 16 digits, no brand starts with 17
        "4111111111111112",                     // Luhn fails
        "123e4567-e89b-12d3-a456-426614174000", // UUID
        "411111******1111",                     // already masked
        "3.14159265358979",                     // decimal
        "7205759403792793",                     // snowflake-like id, no brand
        "2024-01-15 12:30:45.123456+00",        // timestamp
        "+44 20 7946 0958",                     // phone
        "1e131071",
        "",
        "no digits at all",
        "café ½ ① 二",
        "DE89 3704 0044 0532 0130 00", // IBAN
        "iban ES91 2100 0418 4502 0005 1332.",
        "45.33.32.156:8080", // address and port
    ] {
        assert!(pans(text).is_empty(), "{text}: {:?}", pans(text));
    }
}

#[test]
fn folded_digits_read_every_spelling() {
    assert_eq!(folded_digits("４-٤ %34 \\u0034 x𝟒".as_bytes()), "44444");
}
