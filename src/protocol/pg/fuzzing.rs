//! Entry points for the fuzz targets in `fuzz/`, kept in the library so that stable tests run
//! the same code on random input (cargo-fuzz itself needs a nightly toolchain).

use super::frame::{self, Message};
use super::messages;

/// Frames `data` as a client stream: one startup packet, then regular messages, decoding
/// each. Must never panic, whatever `data` holds.
pub fn client_stream(data: &[u8]) {
    let mut rest = data;
    if let Ok(Some(n)) = frame::startup_len(rest) {
        let _ = messages::decode_startup(&rest[..n]);
        rest = &rest[n..];
    }
    while let Ok(Some(n)) = frame::message_len(rest, 1 << 20) {
        let m = Message::from_frame(&rest[..n]);
        if let Ok(messages::Frontend::Bind {
            params,
            param_formats,
            ..
        }) = messages::decode_frontend(m.tag, m.body)
        {
            for (i, _) in params.iter().enumerate() {
                let _ = param_formats.of(i);
            }
        }
        let _ = messages::decode_sasl_initial(m.body);
        let _ = messages::decode_password(m.body);
        rest = &rest[n..];
    }
}

/// Frames `data` as a server stream, decoding what the proxy decodes. Must never panic.
pub fn server_stream(data: &[u8]) {
    let mut rest = data;
    while let Ok(Some(n)) = frame::message_len(rest, 1 << 20) {
        let m = Message::from_frame(&rest[..n]);
        let _ = messages::decode_backend(m.tag, m.body);
        rest = &rest[n..];
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn random_streams_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            super::client_stream(&data);
            super::server_stream(&data);
        }

        /// Valid headers with random bodies reach the decoders, not just the framer.
        #[test]
        fn random_bodies_never_panic(tag in proptest::sample::select(b"QPBDECSHXdcfFpRKZSENv".to_vec()), body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut data = vec![tag];
            data.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
            data.extend_from_slice(&body);
            let mut with_startup = 8i32.to_be_bytes().to_vec();
            with_startup.extend_from_slice(&80_877_103i32.to_be_bytes());
            with_startup.extend_from_slice(&data);
            super::client_stream(&with_startup);
            super::server_stream(&data);
        }
    }
}
