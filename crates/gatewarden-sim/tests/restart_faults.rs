//! The failures that retrying cannot fix and the restart window (BEHAVIOUR.md Revision 2, F3, F5,
//! F7), as the real 2026.9.6 gateway shows them: an in-place restart that meets an invalid config
//! stays alive without a listener; a `connect` during the restart drain is refused as
//! `gateway-restarting` with close 1013; an old Node runtime exits 1 at once. Real simulator
//! processes and sockets.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// The real gateway's refusal of a `connect` while its restart drain holds admission closed
/// (seen live, and `rejectConnectForClosedAdmission` in dist/message-handler-*.mjs).
fn restarting_refusal() -> serde_json::Value {
    json!({
        "code": "UNAVAILABLE",
        "message": "connect unavailable during gateway restart",
        "retryable": true,
        "retryAfterMs": 1000,
        "details": {"method": "connect", "reason": "gateway-restarting", "phase": "accepting"},
    })
}

/// Opens a socket during the drain and sends a valid connect with the right credentials.
async fn connect_during_drain(port: u16) -> (Client, serde_json::Value) {
    Client::connect(
        port,
        connect_params("gateway-client", "backend", None),
        None,
    )
    .await
}

#[tokio::test]
async fn f7_connect_during_the_restart_drain_is_refused_gateway_restarting_then_1013() {
    let (mut sim, listening) = sim()
        .args(&["--drain-ms", "2000", "--restart-down-ms", "200"])
        .start();
    let mut before = Client::admin(listening.port, None).await;
    let signalled = Instant::now();
    sim.signal(libc::SIGUSR2);
    // The connected client learns about the restart as before.
    let shutdown = before
        .event("shutdown", SOON)
        .await
        .expect("shutdown event");
    assert_eq!(shutdown["payload"]["reason"], "gateway restarting");
    assert_eq!(
        before.closed(SOON).await,
        Closed::Code(1012, "service restart".into())
    );

    // A new socket during the drain is admitted (challenge), its connect refused.
    let (mut refused, reply) = connect_during_drain(listening.port).await;
    assert!(
        signalled.elapsed() < Duration::from_millis(2000),
        "the refusal must be checked inside the drain; took {:?}",
        signalled.elapsed()
    );
    assert_eq!(reply["type"], "res");
    assert_eq!(reply["ok"], false);
    assert_eq!(reply["error"], restarting_refusal(), "{reply}");
    assert_eq!(
        refused.closed(SOON).await,
        Closed::Code(1013, "gateway restart in progress".into())
    );

    // A socket admitted during the drain that never sends connect goes with the listener.
    let mut idle = Client::open(listening.port).await;
    assert_eq!(
        idle.closed(SOON).await,
        Closed::Code(1012, "service restart".into())
    );

    // Then the new boot serves connects again, same pid.
    let again = sim.next_listening(SOON).expect("listening again");
    assert_eq!(again.pid, listening.pid);
    let (_client, reply) = connect_during_drain(again.port).await;
    assert_eq!(reply["ok"], true, "{reply}");
}

#[tokio::test]
async fn f7_restart_by_sim_fault_and_by_rpc_opens_the_same_refusal_window() {
    let (mut sim, listening) = sim()
        .args(&["--drain-ms", "1500", "--restart-down-ms", "100"])
        .start();
    let mut admin = Client::admin(listening.port, None).await;
    let reply = admin.request("sim.fault", json!({"kind": "restart"})).await;
    assert_eq!(reply["payload"]["applied"], "restart", "{reply}");
    // Sockets open when the drain starts are closed by it; the refusal is for those that come after.
    admin.event("shutdown", SOON).await.expect("shutdown event");
    let (_refused, reply) = connect_during_drain(listening.port).await;
    assert_eq!(reply["error"], restarting_refusal(), "{reply}");
    let again = sim.next_listening(SOON).expect("restarted by sim.fault");
    assert_ne!(again.boot_id, listening.boot_id);

    let mut admin = Client::admin(again.port, None).await;
    let reply = admin
        .request("gateway.restart.request", json!({"reason": "test"}))
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    admin.event("shutdown", SOON).await.expect("shutdown event");
    let (_refused, reply) = connect_during_drain(again.port).await;
    assert_eq!(reply["error"], restarting_refusal(), "{reply}");
    assert!(sim.next_listening(SOON).is_some());
}

#[tokio::test]
async fn a_connect_during_a_stop_drain_is_still_closed_1012_without_a_challenge_wait() {
    // The refusal belongs to restarts only: a stopping gateway closes new sockets at once.
    let (mut sim, listening) = sim().args(&["--drain-ms", "1500"]).start();
    sim.signal(libc::SIGTERM);
    assert!(sim.wait_stderr("SIGTERM: gateway stopping", SOON));
    let mut late = Client::open_raw(listening.port).await;
    assert_eq!(
        late.closed(SOON).await,
        Closed::Code(1012, "service restart".into())
    );
    assert_eq!(sim.exit_code(SOON), 0);
}

/// The lines the real gateway writes when an in-place restart meets `bogusKey` in `path`.
fn restart_failure_lines(path: &std::path::Path) -> Vec<String> {
    let path = path.display();
    vec![
        format!("[gateway] startup failed: Invalid config at {path}:"),
        "<root>: Unrecognized key: \"bogusKey\"".to_string(),
        "Run \"openclaw doctor --fix\" to repair, then retry.".to_string(),
        "If startup is still blocked, inspect the adjacent .bak backup before restoring it manually.. Process will stay alive; fix the issue and restart.".to_string(),
        format!("InvalidConfigError: Invalid config at {path}:"),
        "<root>: Unrecognized key: \"bogusKey\"".to_string(),
        "Run \"openclaw doctor --fix\" to repair, then retry.".to_string(),
        "If startup is still blocked, inspect the adjacent .bak backup before restoring it manually.".to_string(),
    ]
}

/// Whether something answers HTTP on `port`.
async fn listening_on(port: u16) -> bool {
    tokio::time::timeout(SOON, http(port, "GET", "/healthz"))
        .await
        .expect("a refused connection is quick")
        .is_ok()
}

#[tokio::test]
async fn f5_invalid_config_on_an_in_place_restart_prints_the_real_line_and_stays_alive_without_listener(
) {
    let (mut sim, listening) = sim().start();
    let config = sim.state_dir.path().join("openclaw.json");
    std::fs::write(&config, "{\"bogusKey\": 1}\n").unwrap();
    sim.signal(libc::SIGUSR2);
    assert!(
        sim.wait_stderr("Process will stay alive; fix the issue and restart.", SOON),
        "{:?}",
        sim.stderr()
    );
    let expected = restart_failure_lines(&config);
    let stderr = sim.stderr();
    let start = stderr
        .iter()
        .position(|line| line == &expected[0])
        .unwrap_or_else(|| panic!("no startup-failed line in {stderr:?}"));
    assert_eq!(&stderr[start..start + expected.len()], &expected[..]);

    // Alive, sleeping, no listener: probes are refused.
    assert!(
        !listening_on(listening.port).await,
        "no listener after the failed restart"
    );
    assert!(
        sim.wait_exit(Duration::from_millis(300)).is_none(),
        "the process stays alive"
    );
    assert_eq!(sim.proc_state(), 'S');

    // SIGUSR2 with the config still invalid: the same failure again, still alive.
    sim.signal(libc::SIGUSR2);
    assert_eq!(sim.wait_stderr_lines(&expected[0], 2, SOON), 2);
    assert!(!listening_on(listening.port).await);
    assert!(sim.wait_exit(Duration::from_millis(100)).is_none());

    // Fixed config and SIGUSR2: serving again on the same port, same pid, new boot.
    std::fs::write(&config, "{}\n").unwrap();
    sim.signal(libc::SIGUSR2);
    let again = sim
        .next_listening(SOON)
        .expect("serving again after the fix");
    assert_eq!((again.pid, again.port), (listening.pid, listening.port));
    assert_ne!(again.boot_id, listening.boot_id);
    let mut admin = Client::admin(again.port, None).await;
    assert_eq!(admin.request("health", json!({})).await["ok"], true);
}

#[tokio::test]
async fn f5_sigterm_ends_a_gateway_left_without_listener_by_a_failed_restart() {
    let (mut sim, listening) = sim().start();
    let config = sim.state_dir.path().join("openclaw.json");
    std::fs::write(&config, "{\"bogusKey\": 1}\n").unwrap();
    let mut admin = Client::admin(listening.port, None).await;
    // By the RPC this time: the same restart path.
    let reply = admin.request("gateway.restart.request", json!({})).await;
    assert_eq!(reply["ok"], true, "{reply}");
    assert!(sim.wait_stderr("Process will stay alive; fix the issue and restart.", SOON));
    sim.signal(libc::SIGTERM);
    assert_eq!(sim.exit_code(SOON), 0);
}

/// The real launcher's lines on Node 20 (seen with /usr/bin/node v20.20.2 running 2026.9.6).
fn node_20_lines(version: &str) -> Vec<String> {
    vec![
        format!("openclaw: Node {version}: node:sqlite is unavailable; use 24.16+/26.1+ or a build with the fix."),
        "If you use nvm, run:".to_string(),
        "  nvm install 26".to_string(),
        "  nvm use 26".to_string(),
        "  nvm alias default 26".to_string(),
    ]
}

/// Waits until stderr has at least `count` lines (the reader thread may lag the exit).
fn stderr_after_exit(sim: &Sim, count: usize) -> Vec<String> {
    let deadline = Instant::now() + SOON;
    while sim.stderr().len() < count && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    sim.stderr()
}

#[tokio::test]
async fn f3_an_old_node_runtime_prints_the_real_launcher_lines_and_exits_1_before_listening() {
    let mut by_flag = sim().args(&["--fake-node-version", "20.11.0"]).spawn();
    assert_eq!(by_flag.exit_code(SOON), 1);
    assert_eq!(stderr_after_exit(&by_flag, 5), node_20_lines("20.11.0"));
    assert!(by_flag.next_listening(Duration::from_millis(100)).is_none());

    let mut by_env = sim().env("GATEWARDEN_SIM_NODE_VERSION", "v20.20.2").spawn();
    assert_eq!(by_env.exit_code(SOON), 1);
    assert_eq!(stderr_after_exit(&by_env, 5), node_20_lines("20.20.2"));

    // A Node 22 with node:sqlite is refused by version; a supported one runs.
    let mut node_22 = sim().args(&["--fake-node-version", "22.14.0"]).spawn();
    assert_eq!(node_22.exit_code(SOON), 1);
    assert_eq!(
        stderr_after_exit(&node_22, 5)[0],
        "openclaw: Node 22.14.0: openclaw requires Node >=24.16.0 <25, or >=26.1.0."
    );
    let (_supported, listening) = sim().args(&["--fake-node-version", "24.16.0"]).start();
    assert!(listening.port > 0);
}
