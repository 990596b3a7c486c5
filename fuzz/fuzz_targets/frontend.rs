//! Client bytes: the startup packet, then framed and decoded frontend messages.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate::protocol::pg::fuzzing::client_stream(data));
