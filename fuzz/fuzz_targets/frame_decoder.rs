//! Client WebSocket bytes through the host's frame decoder (roomhost::fuzzing::frame_decoder).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| roomhost::fuzzing::frame_decoder(data));
