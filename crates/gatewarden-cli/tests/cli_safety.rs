//! End-to-end tests of "one supervisor, its own processes only" (K1–K5) and of the control plane
//! under attack (Q1), against the real `gatewarden run` binary and its bundled simulator.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;

use support::{command, run_bounded, start_ticks, Instance, Options, DEADLINE};

fn pid_of(status: &Value) -> u32 {
    status["pid"]
        .as_u64()
        .and_then(|pid| u32::try_from(pid).ok())
        .expect("status has a pid")
}

/// K1: a second `gatewarden run` on the same state directory, with another control socket (what
/// happens when one shell has `XDG_RUNTIME_DIR` and cron has not), refuses at once, names the
/// first supervisor, and never touches its gateway.
///
/// The first gateway is checked (same pid, same start time, still running) before the second
/// starts, right after it exits, and then every 100 ms for [`WATCH_AFTER`]: the lock is taken
/// before the second does anything else, and once the second has exited nothing of it is left
/// to act, so a few seconds after its exit cover any delayed effect (the bug this guards against
/// killed the first gateway within 5 s, six times in 30 s).
#[test]
fn k1_second_supervisor_on_the_same_state_dir_refuses_and_leaves_the_first_alone() {
    const WATCH_AFTER: Duration = Duration::from_secs(5);
    let first = Instance::start(Options::default());
    let gateway = pid_of(&first.wait_running());
    let gateway_ticks = start_ticks(gateway).expect("gateway start time");

    let other_home = tempfile::tempdir().expect("temp dir");
    let mut second = command(other_home.path());
    second
        .arg("run")
        .arg("--port")
        .arg(first.port.to_string())
        .arg("--state-dir")
        .arg(first.dir.path().join("state"))
        .arg("--control")
        .arg(other_home.path().join("other.sock"));
    let started = Instant::now();
    let (code, message) = run_bounded(second, DEADLINE);
    assert_eq!(code, Some(1), "the second supervisor refuses: {message}");
    assert!(
        message.contains(&format!("pid {}", first.pid())),
        "the refusal names the holder's pid: {message}"
    );
    assert!(
        message.contains(&first.control.display().to_string()),
        "the refusal names the holder's control socket: {message}"
    );
    assert!(
        message.contains("state directory"),
        "the refusal says why: {message}"
    );
    eprintln!("second supervisor refused after {:?}", started.elapsed());

    let watch = Instant::now();
    while watch.elapsed() < WATCH_AFTER {
        let status = first.status().expect("the first supervisor answers");
        assert_eq!(status["state"], "running", "{status}\n{}", first.logs());
        assert_eq!(pid_of(&status), gateway, "the first gateway was replaced");
        assert_eq!(
            start_ticks(gateway),
            Some(gateway_ticks),
            "the first gateway's pid now names another process"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !first.logs().contains("orphan"),
        "the first supervisor saw no orphan: {}",
        first.logs()
    );
}
