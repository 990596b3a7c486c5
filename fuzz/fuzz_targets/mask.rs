//! Any bytes through the masker (issue #17): it never panics, a masked value holds no PAN the
//! detector can find, masking twice changes nothing; and through the PostgreSQL binary value
//! decoder under every type it knows.
#![no_main]
use tollgate::mask::{Format, Masker, pan};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let m = Masker::new(Format::BinLast4, None);
    let once = m.mask(data).into_owned();
    assert!(pan::find_all(&once).is_empty());
    assert_eq!(m.mask(&once).into_owned(), once);
    for oid in [20u32, 700, 701, 790, 1700, 1016, 1231, 2249, 3904, 3926, 4536, 3802] {
        let _ = tollgate::protocol::pg::binary::value(oid, data, &m, false);
    }
});
