//! Entry points for the MySQL fuzz targets in `fuzz/`, kept in the library so that stable
//! tests run the same code on random input (cargo-fuzz itself needs a nightly toolchain).

use super::{handshake, packet, wire};
use crate::mask::{Format, Masker};

/// Frames `data` as packets and decodes each the ways tollgate does: as a handshake
/// response, a command, an OK / ERR / EOF, a column definition, and a text and a binary row
/// against columns of every kind. Must never panic, whatever `data` holds.
pub fn packets(data: &[u8]) {
    let masker = Masker::new(Format::BinLast4, None);
    let columns: Vec<wire::ColumnMask> = [
        0x08u8, 0x03, 0xFD, 0xF6, 0x0C, 0x05, 0xF5, 0x01, 0x0B, 0x06, 0xFC,
    ]
    .iter()
    .enumerate()
    .map(|(i, &ty)| wire::ColumnMask {
        ty,
        unsigned: i % 2 == 0,
        numeric: matches!(ty, 0x08 | 0x03 | 0xF6 | 0x05 | 0x01),
        forced: i % 3 == 0,
    })
    .collect();
    let mut rest = data;
    while let Ok(Some(f)) = packet::split(rest, 1 << 20) {
        let mut payload = Vec::with_capacity(f.payload_len);
        let mut wire_bytes = &rest[..f.wire_len];
        while wire_bytes.len() >= 4 {
            let n = usize::from(wire_bytes[0])
                | usize::from(wire_bytes[1]) << 8
                | usize::from(wire_bytes[2]) << 16;
            payload.extend_from_slice(&wire_bytes[4..4 + n]);
            wire_bytes = &wire_bytes[4 + n..];
        }
        let p = &payload[..];
        let _ = handshake::parse_response(p);
        let _ = super::parse_kill(&String::from_utf8_lossy(p));
        let _ = wire::parse_err(p);
        let _ = wire::mask_err(p, &masker);
        let _ = wire::status(p);
        let _ = wire::ok_counts(p);
        let _ = wire::mask_ok_info(p, &masker);
        let _ = wire::is_eof(p, true);
        let _ = wire::parse_column(p);
        let _ = wire::mask_column_def(p, &masker);
        for n in 0..=columns.len() {
            let _ = wire::mask_text_row(p, &columns[..n], &masker);
            let _ = wire::mask_binary_row(p, &columns[..n], &masker);
            let _ = wire::binary_values(p, columns[..n].iter().map(|c| c.ty));
        }
        rest = &rest[f.wire_len..];
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn random_streams_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            super::packets(&data);
        }

        /// Valid headers with random payloads reach the decoders, not just the framer.
        #[test]
        fn random_payloads_never_panic(seq in any::<u8>(), payload in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut data = Vec::new();
            super::packet::put(&mut data, seq, &payload);
            super::packets(&data);
        }
    }
}
