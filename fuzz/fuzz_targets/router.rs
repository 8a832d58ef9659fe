//! A request's method, target and headers through the host's routing (roomhost::fuzzing::router).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| roomhost::fuzzing::router(data));
