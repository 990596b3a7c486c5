//! MySQL bytes (either direction): framed packets, each decoded as handshake response,
//! command, OK / ERR / EOF, column definition, and text and binary rows, with masking.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate::protocol::mysql::fuzzing::packets(data));
