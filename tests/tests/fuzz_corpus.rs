//! Replays the committed fuzz corpus (`tests/fuzz/corpus/<target>/`) through the same entry
//! functions the `cargo fuzz` targets call, so a regression is caught on stable without a fuzzer.
//! Every input that once crashed a target is kept in its corpus (see
//! docs/RELIABILITY.md ("Fuzzing and security")).

use std::path::PathBuf;

/// Feed every file of one target's corpus to `entry`; a panic names the file.
fn replay(target: &str, entry: fn(&[u8])) {
    let dir = gatewarden_tests::repo_root()
        .join("tests/fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("cannot read corpus {}: {error}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    // An empty corpus would make this test pass without testing anything.
    assert!(
        files.len() >= 5,
        "corpus {} has {} files",
        dir.display(),
        files.len()
    );
    for file in &files {
        let data = std::fs::read(file).expect("corpus file");
        let outcome = std::panic::catch_unwind(|| entry(&data));
        assert!(
            outcome.is_ok(),
            "fuzz target {target} panicked on {}",
            file.display()
        );
    }
}

#[test]
fn m5_fuzz_corpus_frame_decoding_and_dispatch() {
    replay("frame", gatewarden_core::fuzzing::frame);
}

#[test]
fn p1_fuzz_corpus_reload_policy_parser() {
    replay("reload_policy", gatewarden_core::fuzzing::reload_policy);
}

#[test]
fn x3_fuzz_corpus_stderr_classification() {
    replay("stderr", gatewarden_core::fuzzing::stderr);
}

#[test]
fn fuzz_corpus_cli_config_parser() {
    replay("config", gatewarden_cli::fuzzing::config);
}

#[test]
fn fuzz_corpus_control_protocol() {
    replay("control", gatewarden_cli::fuzzing::control);
}
