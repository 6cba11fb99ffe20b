//! Workspace-wide checks and cross-crate integration tests live in `tests/tests/`; this library
//! holds what they share.
//!
//! Besides [`repo_root`], it has the std-only part of the simulator-vs-real-gateway
//! cross-check (`tests/tests/sim_crosscheck.rs`): finding an OpenClaw install made by
//! `scripts/install-openclaw.sh` (the same lookup `build.rs` uses to set
//! `cfg(openclaw_installed)`), finding (and refreshing) the simulator binary, a free port and
//! a raw HTTP probe. The parts that need crates (process groups, WebSocket, Ed25519) live in the
//! test itself, since this library has no dependencies.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod openclaw;
pub use openclaw::{
    find_openclaw, openclaw_home, openclaw_watch_paths, OpenclawInstall, LOOKUP_ENV, REQUIRE_ENV,
};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Epoch milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

// ---------------------------------------------------------------------------------------------
// Finding a real gateway and the simulator
// ---------------------------------------------------------------------------------------------

/// The simulator binary next to this test binary (`<target>/<profile>/gatewarden-sim`), rebuilt
/// first with `cargo build -p gatewarden-sim` so it is never stale; `GATEWARDEN_SIM_BIN` overrides.
pub fn sim_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("GATEWARDEN_SIM_BIN").filter(|v| !v.is_empty()) {
        return PathBuf::from(bin);
    }
    built_binary("gatewarden-sim", "gatewarden-sim")
}

/// The `gatewarden` CLI binary next to this test binary (`<target>/<profile>/gatewarden`),
/// rebuilt first with `cargo build -p gatewarden-cli` so it is never stale (cargo cannot make a
/// test depend on another package's binary).
pub fn gatewarden_binary() -> PathBuf {
    built_binary("gatewarden-cli", "gatewarden")
}

/// `<target>/<profile>/<binary>` after `cargo build -p <package>` into the same target dir and
/// profile as this test binary; an existing binary is used when cargo cannot run.
fn built_binary(package: &str, binary: &str) -> PathBuf {
    // <target>/<profile>/deps/<test binary>
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in <target>/<profile>/deps");
    let bin = profile_dir.join(binary);
    let profile = profile_dir.file_name().and_then(|n| n.to_str());
    let target_dir = profile_dir.parent().expect("target dir");
    let mut build = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    build
        .current_dir(repo_root())
        .args(["build", "--quiet", "-p", package, "--target-dir"])
        .arg(target_dir);
    match profile {
        Some("debug") => {}
        Some("release") => {
            build.arg("--release");
        }
        Some(other) => {
            build.args(["--profile", other]);
        }
        None => {}
    }
    match build.status() {
        Ok(status) if status.success() => {}
        Ok(status) if bin.is_file() => {
            eprintln!(
                "note: `cargo build -p {package}` failed ({status}); using the existing binary"
            )
        }
        Ok(status) => panic!("`cargo build -p {package}` failed ({status})"),
        Err(error) if bin.is_file() => {
            eprintln!(
                "note: cannot run cargo ({error}); using the existing {}",
                bin.display()
            )
        }
        Err(error) => panic!("no {} and cannot run cargo: {error}", bin.display()),
    }
    bin
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// One raw HTTP/1.1 request; returns the status code and body.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let chunked = head
        .lines()
        .any(|line| line.to_ascii_lowercase().replace(' ', "") == "transfer-encoding:chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size =
            usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `build.rs` and the tests use one lookup: the cfg that decides "run or report as ignored"
    /// must say what the lookup says now. It fails when the detection drifts from the lookup
    /// (e.g. someone edits one of them), so the real-gateway tests can never be ignored while an
    /// install is there, nor run and fail while none is.
    #[test]
    fn openclaw_build_time_detection_matches_the_lookup() {
        let found = find_openclaw();
        assert_eq!(
            cfg!(openclaw_installed),
            found.is_ok(),
            "build.rs decided openclaw_installed={}, the lookup now says {found:?}",
            cfg!(openclaw_installed)
        );
    }
}
