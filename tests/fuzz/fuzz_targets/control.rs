//! Fuzz target: `gatewarden_cli::fuzzing::control` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gatewarden_cli::fuzzing::control(data));
