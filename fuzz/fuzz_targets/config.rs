//! TOML text through the config parser (roomhost::fuzzing::config).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| roomhost::fuzzing::config(data));
