//! Unit tests of `wire`.

use super::*;
use crate::mask::Format;

fn masker() -> Masker {
    Masker::new(Format::BinLast4, None)
}

fn text_col() -> ColumnMask {
    ColumnMask {
        ty: 0xFD,
        unsigned: false,
        numeric: false,
        forced: false,
    }
}

#[test]
fn lenenc_round_trip() {
    for n in [
        0u64,
        250,
        251,
        0xFFFF,
        0x1_0000,
        0xFF_FFFF,
        0x100_0000,
        u64::MAX,
    ] {
        let mut out = Vec::new();
        put_lenenc(&mut out, n);
        assert_eq!(Reader::new(&out, "t").lenenc().unwrap(), Some(n));
    }
    assert_eq!(Reader::new(&[0xFB], "t").lenenc().unwrap(), None);
    assert!(Reader::new(&[0xFF], "t").lenenc().is_err());
    assert!(Reader::new(&[0xFE, 1], "t").lenenc().is_err());
}

#[test]
fn text_rows_are_masked_and_untouched_rows_are_not_copied() {
    let mut row = Vec::new();
    put_lenenc_bytes(&mut row, b"4111111111111111");
    row.push(0xFB);
    put_lenenc_bytes(&mut row, b"hello");
    let cols = [text_col(); 3];
    let masked = mask_text_row(&row, &cols, &masker()).unwrap().unwrap();
    let mut want = Vec::new();
    put_lenenc_bytes(&mut want, b"411111******1111");
    want.push(0xFB);
    put_lenenc_bytes(&mut want, b"hello");
    assert_eq!(masked, want);
    let mut plain = Vec::new();
    put_lenenc_bytes(&mut plain, b"1");
    assert_eq!(mask_text_row(&plain, &cols[..1], &masker()).unwrap(), None);
    // Too many or too few values: malformed.
    assert!(mask_text_row(&plain, &cols[..2], &masker()).is_err());
    assert!(mask_text_row(&row, &cols[..2], &masker()).is_err());
}

#[test]
fn numbers_keep_their_shape() {
    let num = ColumnMask {
        ty: types::NEWDECIMAL,
        unsigned: false,
        numeric: true,
        forced: false,
    };
    let mut row = Vec::new();
    put_lenenc_bytes(&mut row, b"-4111111111111111.25");
    let m = mask_text_row(&row, &[num], &masker()).unwrap().unwrap();
    assert_eq!(&m[1..], b"-4111110000001111.25");
    // A number is read as the number it shows (issue #17): a fraction is not a card number
    // (random doubles would otherwise read as one in forty), a scientific rendering of one is.
    let mut frac = Vec::new();
    put_lenenc_bytes(&mut frac, b"0.4111111111111111");
    assert!(mask_text_row(&frac, &[num], &masker()).unwrap().is_none());
    let mut sci = Vec::new();
    put_lenenc_bytes(&mut sci, b"4.111111111111111e15");
    let m = mask_text_row(&sci, &[num], &masker()).unwrap().unwrap();
    assert_eq!(&m[1..], b"4.111110000001111e15");
    // The hmac format's tokens are not numbers: numbers are redacted instead.
    let h = Masker::new(Format::Hmac, Some(b"k"));
    let m = mask_text_row(&row, &[num], &h).unwrap().unwrap();
    assert_eq!(&m[1..], b"-0000000000000000.25");
}

#[test]
fn binary_rows() {
    use types::*;
    let cols = [
        ColumnMask {
            ty: LONGLONG,
            unsigned: false,
            numeric: true,
            forced: false,
        },
        ColumnMask {
            ty: LONG,
            unsigned: false,
            numeric: true,
            forced: false,
        },
        text_col(),
        ColumnMask {
            ty: DATETIME,
            unsigned: false,
            numeric: false,
            forced: false,
        },
        text_col(),
    ];
    // Column 4 (index 4) is NULL: bit 6 of the bitmap.
    let mut row = vec![0x00, 1 << 6];
    row.extend_from_slice(&4111111111111111i64.to_le_bytes());
    row.extend_from_slice(&7i32.to_le_bytes());
    put_lenenc_bytes(&mut row, b"card 5555555555554444 ok");
    row.extend_from_slice(&[4, 0xEA, 0x07, 1, 2]);
    let m = mask_binary_row(&row, &cols, &masker()).unwrap().unwrap();
    let values = binary_values(&m, cols.iter().map(|c| c.ty)).unwrap();
    assert_eq!(
        i64::from_le_bytes(values[0].unwrap().try_into().unwrap()),
        4111110000001111
    );
    assert_eq!(values[1].unwrap(), 7i32.to_le_bytes());
    assert_eq!(values[2].unwrap(), b"card 555555******4444 ok");
    assert_eq!(values[3].unwrap(), [0xEA, 0x07, 1, 2]);
    assert_eq!(values[4], None);
    // A DOUBLE holding a card number, in both protocols.
    let dbl = ColumnMask {
        ty: DOUBLE,
        unsigned: false,
        numeric: true,
        forced: false,
    };
    let mut drow = vec![0x00, 0];
    drow.extend_from_slice(&4111111111111111f64.to_le_bytes());
    let m = mask_binary_row(&drow, &[dbl], &masker()).unwrap().unwrap();
    assert_eq!(
        f64::from_le_bytes(m[2..10].try_into().unwrap()),
        4111110000001111.0
    );
    let mut trow = Vec::new();
    put_lenenc_bytes(&mut trow, b"4.111111111111111e15");
    let m = mask_text_row(&trow, &[dbl], &masker()).unwrap().unwrap();
    assert_eq!(&m[1..], b"4111110000001111");
    // Truncated anywhere: an error, never a panic.
    for cut in 0..row.len() {
        assert!(mask_binary_row(&row[..cut], &cols, &masker()).is_err());
    }
}

#[test]
fn errors_and_column_definitions() {
    let e = err(
        1062,
        "23000",
        "Duplicate entry '4111111111111111' for key 'PRIMARY'",
    );
    let m = mask_err(&e, &masker()).unwrap().unwrap();
    let p = parse_err(&m).unwrap();
    assert_eq!(p.code, 1062);
    assert_eq!(p.sqlstate, Some(&b"23000"[..]));
    assert_eq!(
        p.message,
        b"Duplicate entry '411111******1111' for key 'PRIMARY'"
    );
    let mut def = Vec::new();
    for s in ["def", "shop", "cards", "cards", "4111111111111111", "pan"] {
        put_lenenc_bytes(&mut def, s.as_bytes());
    }
    def.push(0x0C);
    def.extend_from_slice(&33u16.to_le_bytes());
    def.extend_from_slice(&64u32.to_le_bytes());
    def.push(0xFD);
    def.extend_from_slice(&0u16.to_le_bytes());
    def.extend_from_slice(&[0, 0, 0]);
    let c = parse_column(&def).unwrap();
    assert_eq!(
        (c.schema.as_str(), c.org_name.as_str(), c.ty),
        ("shop", "pan", 0xFD)
    );
    let m = mask_column_def(&def, &masker()).unwrap().unwrap();
    assert_eq!(parse_column(&m).unwrap().name, "411111******1111");
    assert_eq!(m.len(), def.len());
    for cut in 0..def.len() {
        let _ = parse_column(&def[..cut]);
        let _ = mask_column_def(&def[..cut], &masker());
    }
}

#[test]
fn terminators() {
    assert!(is_eof(&[0xFE, 0, 0, 2, 0], false));
    assert!(!is_eof(&[0xFE, 0, 0, 0, 0, 0, 0, 0, 0, 1], false));
    assert_eq!(status(&[0xFE, 1, 0, 0x0A, 0]).unwrap().status, 0x0A);
    assert_eq!(
        status(&ok(1, 0, 0x0008, 2)).unwrap(),
        Status {
            status: 8,
            warnings: 2
        }
    );
    let mut ok_fe = ok(0, 0, 0x0002, 0);
    ok_fe[0] = 0xFE;
    assert!(is_eof(&ok_fe, true));
}
