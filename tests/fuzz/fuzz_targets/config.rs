//! Fuzz target: `gatewarden_cli::fuzzing::config` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gatewarden_cli::fuzzing::config(data));
