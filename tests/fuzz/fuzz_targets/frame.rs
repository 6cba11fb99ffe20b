//! Fuzz target: `gatewarden_core::fuzzing::frame` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gatewarden_core::fuzzing::frame(data));
