//! T4 (beyond): a gateway must not outlive a supervisor that is killed with SIGKILL, when no
//! cleanup code can run. Only the kernel's parent-death signal can do that, so the test needs a
//! real supervisor process to kill: it re-executes this test binary as that supervisor.

mod process_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use gatewarden::launch::LaunchSpec;
use gatewarden::process::ProcessActorConfig;
use process_support::*;

/// When set, this test binary is the supervisor: it writes the gateway's pid to this file.
const HELPER_ENV: &str = "GATEWARDEN_TEST_PDEATH_PID_FILE";
const TEST_NAME: &str = "t4_supervisor_death_kills_gateway";

#[actix_rt::test]
async fn t4_supervisor_death_kills_gateway() {
    match std::env::var_os(HELPER_ENV) {
        Some(pid_file) => act_as_supervisor(PathBuf::from(pid_file)).await,
        None => kill_supervisor_and_watch_gateway().await,
    }
}

/// The re-executed side: own a gateway (`sleep`), report its pid, then wait to be killed.
async fn act_as_supervisor(pid_file: PathBuf) {
    let (actor, _events) = start_actor(ProcessActorConfig::default());
    let spawned = spawn(&actor, LaunchSpec::new("sleep").arg("1000")).await;
    // Written atomically so the watcher never reads half a pid.
    let partial = pid_file.with_extension("partial");
    std::fs::write(&partial, spawned.pid.to_string()).expect("pid written");
    std::fs::rename(&partial, &pid_file).expect("pid published");
    // Killed long before this ends; the bound only keeps a lost helper from living forever.
    tokio::time::sleep(Duration::from_secs(120)).await;
}

async fn kill_supervisor_and_watch_gateway() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pid_file = dir.path().join("gateway.pid");
    let mut supervisor = ChildGuard(
        Command::new(std::env::current_exe().expect("test binary"))
            .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(HELPER_ENV, &pid_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("supervisor runs"),
    );
    let mut gateway = None;
    eventually(SOON, "the supervisor spawned its gateway", || {
        gateway = read_pid(&pid_file);
        gateway.is_some()
    })
    .await;
    let gateway = gateway.unwrap_or_default();
    assert!(alive(gateway), "gateway runs while its supervisor lives");
    assert_eq!(parent_of(gateway), Some(supervisor.pid()));

    // SIGKILL: no destructor, no `stopping`, nothing of ours runs in the supervisor.
    supervisor.0.kill().expect("supervisor killed");
    supervisor.0.wait().expect("supervisor reaped");
    eventually(SOON, "the gateway died with its supervisor", || {
        !alive(gateway)
    })
    .await;
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Field 4 of `/proc/<pid>/stat`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
