//! Fuzz target: `gatewarden_core::fuzzing::reload_policy` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gatewarden_core::fuzzing::reload_policy(data));
