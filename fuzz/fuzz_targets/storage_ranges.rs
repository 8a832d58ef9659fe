//! list options and writes through storage key ranges (roomhost::fuzzing::storage_ranges).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| roomhost::fuzzing::storage_ranges(data));
