//! Shared fixtures for the handle tests: a sim on a free port behind a [`GatewayHandle`], and
//! this process's memory as `/proc/self/status` reports it.
#![allow(dead_code)]

use std::time::Duration;

use gatewarden::handle::GatewayHandle;
use gatewarden::SupervisorOptions;

/// Generous bound for real-time waits on a busy 2-core machine.
pub const WAIT: Duration = Duration::from_secs(30);

/// Options for a sim on a free port (as the supervisor tests use), with `extra_args`.
pub fn options(state_dir: &tempfile::TempDir, extra_args: &[&str]) -> SupervisorOptions {
    let mut options = SupervisorOptions::new(
        gatewarden::profile::LaunchProfile::Sim {
            program: None,
            extra_args: extra_args.iter().map(|arg| arg.to_string()).collect(),
        },
        state_dir.path().to_path_buf(),
    );
    options.core.port = free_port();
    options.core.stop.kill_grace_ms = 2_000;
    options
}

/// A free TCP port on loopback (bound and released; the sim binds it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// A started gateway behind a handle, and the gateway's pid.
pub async fn running(options: SupervisorOptions) -> (GatewayHandle, u32) {
    let handle = GatewayHandle::spawn(options).expect("handle");
    let outcome = tokio::time::timeout(WAIT, handle.start())
        .await
        .expect("start within the bound");
    assert!(outcome.is_ok(), "start: {outcome:?}");
    let pid = handle
        .status()
        .await
        .expect("status")
        .pid
        .expect("a running gateway has a pid");
    (handle, pid)
}

/// Is a process alive (not a zombie)?
pub fn alive(pid: u32) -> bool {
    gatewarden::orphan::process_is_running(pid)
}

/// A `/proc/self/status` field in KiB.
pub fn proc_status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}
