//! Signal, restart, process-fault and config tests against the real simulator binary.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

#[tokio::test]
async fn sigterm_drains_with_shutdown_event_and_1012_then_exits_0() {
    let (mut sim, listening) = sim().args(&["--drain-ms", "600"]).start();
    let mut client = Client::hello(listening.port, None).await;
    sim.signal(libc::SIGTERM);
    let shutdown = client
        .event("shutdown", SOON)
        .await
        .expect("shutdown event");
    assert_eq!(shutdown["payload"], json!({"reason": "gateway stopping"}));
    assert_eq!(
        client.closed(SOON).await,
        Closed::Code(1012, "service restart".into())
    );
    // Still draining: probes say so, and a repeated SIGTERM is ignored.
    let (status, body) = probe(listening.port, "/startupz").await;
    assert_eq!(
        (status, &body["status"]),
        (503, &json!("draining")),
        "{body}"
    );
    assert_eq!(probe(listening.port, "/readyz").await.0, 503);
    sim.signal(libc::SIGTERM);
    assert_eq!(sim.exit_code(SOON), 0);
}

#[tokio::test]
async fn sigint_stops_like_sigterm() {
    let (mut sim, _listening) = sim().start();
    sim.signal(libc::SIGINT);
    assert_eq!(sim.exit_code(SOON), 0);
}

#[tokio::test]
async fn sigusr2_restarts_in_place_with_same_pid_new_boot_id_and_a_new_listening_line() {
    let (mut sim, listening) = sim().args(&["--restart-down-ms", "300"]).start();
    let mut client = Client::hello(listening.port, None).await;
    sim.signal(libc::SIGUSR2);
    let shutdown = client
        .event("shutdown", SOON)
        .await
        .expect("shutdown event");
    assert_eq!(shutdown["payload"]["reason"], "gateway restarting");
    assert!(shutdown["payload"]["restartExpectedMs"].as_u64().unwrap() >= 300);
    assert_eq!(
        client.closed(SOON).await,
        Closed::Code(1012, "service restart".into())
    );
    // The listener is down for a while.
    let started = Instant::now();
    let mut saw_refused = false;
    while started.elapsed() < Duration::from_millis(250) {
        if http(listening.port, "GET", "/healthz").await.is_err() {
            saw_refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(saw_refused, "listener should be down during the restart");
    let again = sim.next_listening(SOON).expect("second listening line");
    assert_eq!((again.pid, again.port), (listening.pid, listening.port));
    assert_ne!(again.boot_id, listening.boot_id);
    assert!(sim.wait_exit(Duration::from_millis(10)).is_none());
    let mut admin = Client::admin(again.port, None).await;
    let status = admin.request("status", json!({})).await["payload"].clone();
    assert_eq!(status["bootId"], again.boot_id.as_str());
    assert_eq!(status["restarts"], 1);
}

#[tokio::test]
async fn no_respawn_wins_over_external_mode_and_restarts_in_place() {
    let (mut sim, listening) = sim()
        .env("OPENCLAW_SUPERVISOR_MODE", "external")
        .env("OPENCLAW_NO_RESPAWN", "1")
        .start();
    sim.signal(libc::SIGUSR2);
    let again = sim.next_listening(SOON).expect("in-process restart");
    assert_eq!(again.pid, listening.pid);
}

#[tokio::test]
async fn gateway_restart_request_needs_admin_and_restarts_in_place() {
    let (mut sim, listening) = sim().args(&["--token", TOKEN]).start();
    let mut unscoped = Client::hello(listening.port, Some(TOKEN)).await;
    let reply = unscoped.request("gateway.restart.request", json!({})).await;
    assert_eq!(
        reply["error"]["details"]["missingScope"], "operator.admin",
        "{reply}"
    );

    let mut admin = Client::admin(listening.port, Some(TOKEN)).await;
    let reply = admin
        .request("gateway.restart.request", json!({"reason": "test"}))
        .await;
    assert_eq!(reply["payload"]["status"], "scheduled", "{reply}");
    assert_eq!(reply["payload"]["ok"], true);
    let shutdown = admin.event("shutdown", SOON).await.expect("shutdown event");
    assert_eq!(shutdown["payload"]["reason"], "gateway restarting");
    assert_eq!(
        admin.closed(SOON).await,
        Closed::Code(1012, "service restart".into())
    );
    let again = sim.next_listening(SOON).expect("listening again");
    assert_eq!(again.pid, listening.pid);
    assert_ne!(again.boot_id, listening.boot_id);
}

#[tokio::test]
async fn sigusr2_in_external_supervisor_mode_sends_shutdown_then_exits_0() {
    let (mut sim, listening) = sim().env("OPENCLAW_SUPERVISOR_MODE", "external").start();
    let mut client = Client::hello(listening.port, None).await;
    sim.signal(libc::SIGUSR2);
    let shutdown = client
        .event("shutdown", SOON)
        .await
        .expect("shutdown event");
    assert_eq!(shutdown["payload"]["reason"], "gateway restarting");
    assert_eq!(
        client.closed(SOON).await,
        Closed::Code(1012, "service restart".into())
    );
    assert_eq!(sim.exit_code(SOON), 0);
}

#[tokio::test]
async fn sigusr1_logs_debugger_listening_and_does_not_restart() {
    let (mut sim, listening) = sim().start();
    let mut client = Client::admin(listening.port, None).await;
    sim.signal(libc::SIGUSR1);
    assert!(sim.wait_stderr("Debugger listening on ws://127.0.0.1:9229/", SOON));
    let status = client.request("status", json!({})).await["payload"].clone();
    assert_eq!(status["sigusr1Count"], 1);
    assert_eq!(status["bootId"], listening.boot_id.as_str());
    assert!(
        sim.next_listening(Duration::from_millis(200)).is_none(),
        "no restart"
    );
}

#[tokio::test]
async fn sighup_kills_without_drain_like_exit_129() {
    let (mut sim, listening) = sim().args(&["--drain-ms", "5000"]).start();
    let _client = Client::hello(listening.port, None).await;
    sim.signal(libc::SIGHUP);
    let status = sim.wait_exit(SOON).expect("exit");
    // Killed by signal 1, which a shell reports as 129, exactly like Node's default SIGHUP action.
    assert_eq!(status.signal(), Some(libc::SIGHUP), "{status:?}");
}

#[tokio::test]
async fn fault_crash_exits_with_the_requested_code() {
    let (mut sim, listening) = sim().start();
    let mut client = Client::hello(listening.port, None).await;
    let reply = client
        .request("sim.fault", json!({"kind": "crash", "code": 3}))
        .await;
    assert_eq!(reply["ok"], true);
    assert_eq!(sim.exit_code(SOON), 3);
}

#[tokio::test]
async fn fault_crash_after_delay_exits_later_by_rpc_and_by_flag() {
    let (mut sim, listening) = sim().start();
    let mut client = Client::hello(listening.port, None).await;
    client
        .request(
            "sim.fault",
            json!({"kind": "crash", "code": 7, "afterMs": 300}),
        )
        .await;
    assert!(sim.wait_exit(Duration::from_millis(100)).is_none());
    assert_eq!(sim.exit_code(SOON), 7);

    let (mut sim, _listening) = common::sim()
        .args(&["--crash-after-ms", "200", "--crash-code", "42"])
        .start();
    assert_eq!(sim.exit_code(SOON), 42);
}

#[tokio::test]
async fn fault_hang_silent_stops_answering_frames_probes_and_sigterm() {
    let (mut sim, listening) = sim().start();
    let mut client = Client::hello(listening.port, None).await;
    client
        .request("sim.fault", json!({"kind": "hang", "mode": "silent"}))
        .await;
    client
        .send_text(json!({"type": "req", "id": "h", "method": "health"}).to_string())
        .await;
    assert!(client
        .reply_to("h", Duration::from_millis(500))
        .await
        .is_none());
    let probe = tokio::time::timeout(
        Duration::from_millis(500),
        http(listening.port, "GET", "/healthz"),
    )
    .await;
    assert!(probe.is_err(), "probe must not be answered: {probe:?}");
    sim.signal(libc::SIGTERM);
    assert!(
        sim.wait_exit(Duration::from_millis(500)).is_none(),
        "a hung gateway ignores SIGTERM"
    );
    sim.signal(libc::SIGKILL);
    assert_eq!(sim.wait_exit(SOON).unwrap().signal(), Some(libc::SIGKILL));
}

#[tokio::test]
async fn fault_sigstop_stops_the_process_until_sigcont() {
    let (sim, listening) = sim().start();
    let mut client = Client::hello(listening.port, None).await;
    client
        .request("sim.fault", json!({"kind": "hang", "mode": "sigstop"}))
        .await;
    let deadline = Instant::now() + SOON;
    while sim.proc_state() != 'T' {
        assert!(Instant::now() < deadline, "process never stopped");
        std::thread::sleep(Duration::from_millis(10));
    }
    sim.signal(libc::SIGCONT);
    assert_eq!(client.request("health", json!({})).await["ok"], true);
}

#[tokio::test]
async fn hang_after_flag_hangs_the_whole_process() {
    let (_sim, listening) = sim().args(&["--hang-after-ms", "100"]).start();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let probe = tokio::time::timeout(
        Duration::from_millis(500),
        http(listening.port, "GET", "/healthz"),
    )
    .await;
    assert!(probe.is_err(), "probe must not be answered");
}

#[tokio::test]
async fn slow_start_delays_the_listening_line() {
    let started = Instant::now();
    let (_sim, _listening) = sim().args(&["--slow-start-ms", "400"]).start();
    assert!(started.elapsed() >= Duration::from_millis(400));
}

#[tokio::test]
async fn exit_before_ready_exits_with_the_code_without_listening() {
    let mut sim = sim().args(&["--exit-before-ready", "9"]).spawn();
    assert_eq!(sim.exit_code(SOON), 9);
    assert!(sim.next_listening(Duration::from_millis(100)).is_none());
}

#[tokio::test]
async fn invalid_config_exits_78_and_doctor_fix_repairs_it() {
    let state = tempfile::tempdir().unwrap();
    let config = state.path().join("openclaw.json");
    std::fs::write(
        &config,
        "// json5 comment\n{gateway: {mode: 'local'}, foo: true, logging: {level: 'info'},}\n",
    )
    .unwrap();

    let mut sim = sim().state_dir(state).spawn();
    assert_eq!(sim.exit_code(SOON), 78);
    assert!(sim.wait_stderr(
        &format!(
            "Gateway failed to start: Invalid config at {}:",
            config.display()
        ),
        SOON
    ));
    let stderr = sim.stderr().join("\n");
    assert!(
        stderr.contains("<root>: Unrecognized key: \"foo\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("Run \"openclaw doctor --fix\" to repair, then retry."),
        "{stderr}"
    );

    let doctor = std::process::Command::new(env!("CARGO_BIN_EXE_gatewarden-sim"))
        .args(["doctor", "--fix", "--yes", "--non-interactive"])
        .env_remove("OPENCLAW_CONFIG_PATH")
        .env("HOME", sim.state_dir.path())
        .env("OPENCLAW_STATE_DIR", sim.state_dir.path())
        .output()
        .unwrap();
    assert_eq!(doctor.status.code(), Some(0), "{doctor:?}");
    assert!(String::from_utf8_lossy(&doctor.stdout).contains("removed unrecognized key \"foo\""));
    let backup = std::fs::read_to_string(config.with_extension("json.bak")).unwrap();
    assert!(
        backup.contains("foo: true"),
        "the backup keeps the original: {backup}"
    );
    let repaired: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    assert_eq!(
        repaired,
        json!({"gateway": {"mode": "local"}, "logging": {"level": "info"}})
    );

    let state = std::mem::replace(&mut sim.state_dir, tempfile::tempdir().unwrap());
    let (_sim, _listening) = common::sim().state_dir(state).start();
}

#[tokio::test]
async fn config_path_flag_and_env_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("custom.json5");
    std::fs::write(&config, "{bogus: 1}").unwrap();
    let mut by_flag = sim().args(&["--config", config.to_str().unwrap()]).spawn();
    assert_eq!(by_flag.exit_code(SOON), 78);
    let mut by_env = sim()
        .env("OPENCLAW_CONFIG_PATH", config.to_str().unwrap())
        .spawn();
    assert_eq!(by_env.exit_code(SOON), 78);
}

#[tokio::test]
async fn a_second_gateway_on_the_same_state_dir_exits_78_with_the_lock_conflict_lines() {
    let (mut first, _listening) = sim().start();
    let shared = first.state_dir.path().to_str().unwrap().to_string();
    let mut second = sim().env("OPENCLAW_STATE_DIR", &shared).spawn();
    assert_eq!(second.exit_code(SOON), 78);
    assert!(second.wait_stderr("another OpenClaw process owns gateway-lifecycle", SOON));
    assert!(
        !second
            .stderr()
            .iter()
            .any(|line| line.to_ascii_lowercase().contains("invalid config")),
        "a lock conflict is not a config error: {:?}",
        second.stderr()
    );
    // The lock dies with its holder.
    first.signal(libc::SIGTERM);
    assert_eq!(first.exit_code(SOON), 0);
    let (_third, _listening) = sim().env("OPENCLAW_STATE_DIR", &shared).start();
}

#[tokio::test]
async fn fault_invalid_config_flag_exits_78_with_the_invalid_config_lines() {
    let mut sim = sim().arg("--fault-invalid-config").spawn();
    assert_eq!(sim.exit_code(SOON), 78);
    assert!(sim.wait_stderr("Run \"openclaw doctor --fix\" to repair", SOON));
    assert!(sim
        .stderr()
        .iter()
        .any(|line| line.contains("Unrecognized key")));
}

#[tokio::test]
async fn invalid_config_during_in_process_restart_keeps_the_process_alive_without_listener() {
    let (mut sim, listening) = sim().start();
    let mut client = Client::hello(listening.port, None).await;
    client
        .request("sim.fault", json!({"kind": "invalid-config"}))
        .await;
    sim.signal(libc::SIGUSR2);
    assert!(sim.wait_stderr("Process will stay alive", SOON));
    assert!(http(listening.port, "GET", "/healthz").await.is_err());
    // A second restart boots again (the armed fault applied once).
    sim.signal(libc::SIGUSR2);
    assert!(sim.next_listening(SOON).is_some());
}

#[tokio::test]
async fn ignore_sigterm_needs_sigkill_by_flag_and_by_fault() {
    let (mut sim, _listening) = sim().arg("--ignore-sigterm").start();
    sim.signal(libc::SIGTERM);
    assert!(sim.wait_stderr("SIGTERM ignored", SOON));
    assert!(sim.wait_exit(Duration::from_millis(300)).is_none());
    sim.signal(libc::SIGKILL);
    assert_eq!(sim.wait_exit(SOON).unwrap().signal(), Some(libc::SIGKILL));

    let (mut sim, listening) = common::sim().start();
    let mut client = Client::hello(listening.port, None).await;
    client
        .request("sim.fault", json!({"kind": "ignore-sigterm"}))
        .await;
    sim.signal(libc::SIGTERM);
    assert!(sim.wait_stderr("SIGTERM ignored", SOON));
    assert!(sim.wait_exit(Duration::from_millis(300)).is_none());
}

fn process_group_of(pid: u32) -> i32 {
    // SAFETY: getpgid only reads kernel state for the given pid.
    unsafe { libc::getpgid(pid as i32) }
}

#[tokio::test]
async fn spawn_grandchild_runs_in_the_simulator_process_group_and_dies_with_a_group_kill() {
    let (mut sim, listening) = sim().arg("--spawn-grandchild").start();
    let mut admin = Client::admin(listening.port, None).await;
    let status = admin.request("status", json!({})).await["payload"].clone();
    let from_flag = status["grandchildPids"][0]
        .as_u64()
        .expect("grandchild pid") as u32;
    let reply = admin
        .request("sim.fault", json!({"kind": "spawn-grandchild"}))
        .await;
    let from_rpc = reply["payload"]["pid"].as_u64().expect("pid in reply") as u32;
    for pid in [from_flag, from_rpc] {
        assert_eq!(
            process_group_of(pid),
            process_group_of(sim.pid()),
            "grandchild {pid} shares the group"
        );
    }
    // SAFETY: the simulator leads its own group (the test spawned it with process_group(0)).
    unsafe {
        libc::kill(-(sim.pid() as i32), libc::SIGKILL);
    }
    sim.wait_exit(SOON).expect("simulator killed");
    let deadline = Instant::now() + SOON;
    while std::path::Path::new(&format!("/proc/{from_rpc}")).exists()
        && !std::fs::read_to_string(format!("/proc/{from_rpc}/stat"))
            .unwrap_or_default()
            .contains(") Z")
    {
        assert!(
            Instant::now() < deadline,
            "grandchild survived the group kill"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test]
async fn startup_window_fault_reopens_the_window_at_run_time() {
    let (_sim, listening) = sim().start();
    let mut client = Client::hello(listening.port, None).await;
    client
        .request("sim.fault", json!({"kind": "startup-window", "ms": 5000}))
        .await;
    assert_eq!(probe(listening.port, "/startupz").await.0, 503);
    let (_c, reply) =
        Client::connect(listening.port, connect_params("test", "test", None), None).await;
    assert_eq!(reply["error"]["code"], "UNAVAILABLE");
}
