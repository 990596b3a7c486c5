//! Server bytes: framed and decoded backend messages.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate::protocol::pg::fuzzing::server_stream(data));
