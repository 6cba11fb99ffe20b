//! What several test binaries in `tests/tests/` share (each includes it with `mod support;`).

pub mod gateway_process;
