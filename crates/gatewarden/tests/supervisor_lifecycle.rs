//! The supervisor end to end against the real `gatewarden-sim` as a child process: each test is
//! named after the rule it proves.

mod supervisor_support;

use std::time::Duration;

use gatewarden::process::{owned_record_path, write_owned_record, OwnedRecord};
use gatewarden::supervisor::{GetDiagnostics, GetRpcClient, Reload, Restart, Rpc, Start, Stop};
use gatewarden_core::error::{CommandFailure, StartFailure};
use gatewarden_core::machine::{CommandOutcome, LifecycleState};
use gatewarden_core::rpc::RpcError;
use serde_json::json;
use supervisor_support::{alive, free_port, options, start, wait_gone, Fixture};

#[actix_rt::test]
async fn l5_start_reaches_running_with_protocol_4_and_a_pid() {
    let mut fixture = Fixture::new(&[]);
    let outcome = fixture.supervisor.send(Start).await.unwrap();
    assert_eq!(outcome, CommandOutcome::Completed);
    let status = fixture.wait_state(LifecycleState::Running).await;
    assert_eq!(status.protocol, Some(4));
    assert!(status.pid.is_some());
    assert!(status.version.is_some());
    assert!(status.connected_at_ms.is_some());
    assert!(!status.external);
    fixture.supervisor.send(Stop).await.unwrap();
}

#[actix_rt::test]
async fn m1_rpc_round_trips_and_fails_fast_when_not_connected() {
    let mut fixture = Fixture::new(&[]);
    let early = fixture
        .supervisor
        .send(Rpc {
            method: "echo".into(),
            params: Some(json!({"x": 1})),
            timeout_ms: None,
        })
        .await
        .unwrap();
    assert_eq!(early, Err(RpcError::NotConnected));
    fixture.supervisor.send(Start).await.unwrap();
    fixture.wait_state(LifecycleState::Running).await;
    let reply = fixture
        .supervisor
        .send(Rpc {
            method: "echo".into(),
            params: Some(json!({"hello": "world"})),
            timeout_ms: Some(5_000),
        })
        .await
        .unwrap();
    assert_eq!(reply, Ok(json!({"hello": "world"})));
    let unknown = fixture
        .supervisor
        .send(Rpc {
            method: "no.such.method".into(),
            params: None,
            timeout_ms: Some(5_000),
        })
        .await
        .unwrap();
    match unknown {
        Err(RpcError::Gateway { message, .. }) => {
            assert!(message.contains("unknown method"), "{message}")
        }
        other => panic!("unexpected {other:?}"),
    }
    fixture.supervisor.send(Stop).await.unwrap();
}

/// M1/S4/M6 through an `RpcClient`: refused at once before `running` (H6: not counted as an RPC
/// failure), every call of a burst answered exactly once while running, refused again after a
/// stop.
#[actix_rt::test]
async fn m1_rpc_client_round_trips_and_fails_fast_when_not_connected() {
    let mut fixture = Fixture::new(&[]);
    let client = fixture.supervisor.send(GetRpcClient).await.unwrap();
    let echo = |n: u64| Rpc {
        method: "echo".into(),
        params: Some(json!({ "n": n })),
        timeout_ms: None,
    };
    assert_eq!(client.call(echo(0)).await, Err(RpcError::NotConnected));
    let diagnostics = fixture.supervisor.send(GetDiagnostics).await.unwrap();
    assert_eq!(diagnostics.diagnostics.last_rpc_failure_method, None);
    assert_eq!(diagnostics.diagnostics.consecutive_rpc_failures, 0);
    fixture.supervisor.send(Start).await.unwrap();
    fixture.wait_state(LifecycleState::Running).await;
    let calls: Vec<_> = (1..=500).map(|n| client.clone().call(echo(n))).collect();
    for (n, call) in (1..=500).zip(calls) {
        assert_eq!(call.await, Ok(json!({ "n": n })));
    }
    let timed_out = client
        .call(Rpc {
            method: "sleep".into(),
            params: Some(json!({"ms": 2_000})),
            timeout_ms: Some(100),
        })
        .await;
    assert_eq!(
        timed_out,
        Err(RpcError::Timeout {
            method: "sleep".into()
        })
    );
    fixture.supervisor.send(Stop).await.unwrap();
    fixture.wait_state(LifecycleState::Stopped).await;
    assert_eq!(client.call(echo(501)).await, Err(RpcError::NotConnected));
}

#[actix_rt::test]
async fn t4_stop_leaves_no_process_behind() {
    let mut fixture = Fixture::new(&["--spawn-grandchild"]);
    fixture.supervisor.send(Start).await.unwrap();
    let status = fixture.wait_state(LifecycleState::Running).await;
    let pid = status.pid.expect("owned pid");
    assert_eq!(
        fixture.supervisor.send(Stop).await.unwrap(),
        CommandOutcome::Completed
    );
    wait_gone(pid).await;
    let deadline = tokio::time::Instant::now() + supervisor_support::WAIT;
    while !gatewarden::orphan::process_group_members(pid).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "process group {pid} still has members"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = fixture.status().await;
    assert_eq!(status.state, LifecycleState::Stopped);
    assert_eq!(status.pid, None);
}

#[actix_rt::test]
async fn n1_killed_gateway_is_replaced_by_a_new_one() {
    let mut fixture = Fixture::new(&[]);
    fixture.supervisor.send(Start).await.unwrap();
    let first = fixture
        .wait_state(LifecycleState::Running)
        .await
        .pid
        .expect("pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let status = fixture
        .wait_status(|status| {
            status.state == LifecycleState::Running && status.pid.is_some_and(|pid| pid != first)
        })
        .await;
    assert_ne!(status.pid, Some(first));
    fixture.supervisor.send(Stop).await.unwrap();
}

#[actix_rt::test]
async fn p4_sigusr2_reload_reconnects_to_the_same_process() {
    let state_dir = tempfile::tempdir().unwrap();
    let mut options = options(&state_dir, &[]);
    options.core.reload.recent_connect_skip_ms = 0;
    let mut fixture = start(options, state_dir);
    fixture.supervisor.send(Start).await.unwrap();
    let before = fixture.wait_state(LifecycleState::Running).await;
    let outcome = fixture.supervisor.send(Reload).await.unwrap();
    assert_eq!(outcome, CommandOutcome::Completed);
    let after = fixture.wait_state(LifecycleState::Running).await;
    assert_eq!(after.pid, before.pid, "no second process");
    assert_ne!(
        after.boot_id, before.boot_id,
        "the gateway restarted in place"
    );
    let diagnostics = fixture.supervisor.send(GetDiagnostics).await.unwrap();
    assert_eq!(diagnostics.process_starts, 1);
    fixture.supervisor.send(Stop).await.unwrap();
}

#[actix_rt::test]
async fn r1_restart_during_start_is_deferred_and_runs_once() {
    let mut fixture = Fixture::new(&["--slow-start-ms", "200"]);
    let start = fixture.supervisor.send(Start);
    let restart = fixture.supervisor.send(Restart).await.unwrap();
    assert_eq!(restart, CommandOutcome::Deferred);
    assert_eq!(start.await.unwrap(), CommandOutcome::Completed);
    let first = fixture.status().await.pid;
    // The deferred restart runs once the start ends: a second process, then running again.
    let status = fixture
        .wait_status(|status| {
            status.state == LifecycleState::Running && status.pid.is_some() && status.pid != first
        })
        .await;
    assert!(status.pid.is_some());
    let diagnostics = fixture.supervisor.send(GetDiagnostics).await.unwrap();
    assert_eq!(
        diagnostics.process_starts, 2,
        "exactly one deferred restart"
    );
    assert_eq!(diagnostics.restarts_executed, 1);
    fixture.supervisor.send(Stop).await.unwrap();
}

#[actix_rt::test]
async fn w1_exit_before_ready_fails_with_the_exit_code() {
    let state_dir = tempfile::tempdir().unwrap();
    let mut options = options(&state_dir, &["--exit-before-ready", "3"]);
    options.core.start.retry_delay_ms = 50;
    let fixture = start(options, state_dir);
    let outcome = fixture.supervisor.send(Start).await.unwrap();
    assert_eq!(
        outcome,
        CommandOutcome::Failed {
            // F4: the gateway's last meaningful stderr line is the reason.
            failure: CommandFailure::Start {
                failure: StartFailure::ExitedBeforeReady { code: Some(3) },
                reason: Some("[gateway] fault: exiting with code 3 before listening".into()),
            }
        }
    );
    assert_eq!(fixture.status().await.state, LifecycleState::Error);
}

#[actix_rt::test]
async fn l6_invalid_config_is_repaired_by_the_doctor() {
    let state_dir = tempfile::tempdir().unwrap();
    let gateway_dir = state_dir.path().join("gateway");
    std::fs::create_dir_all(&gateway_dir).unwrap();
    std::fs::write(
        gateway_dir.join("openclaw.json"),
        "{ gateway: { port: 1 }, surprise: true }",
    )
    .unwrap();
    let options = options(&state_dir, &[]);
    let mut fixture = start(options, state_dir);
    let outcome = fixture.supervisor.send(Start).await.unwrap();
    assert_eq!(outcome, CommandOutcome::Completed);
    fixture.wait_state(LifecycleState::Running).await;
    fixture.supervisor.send(Stop).await.unwrap();
}

#[actix_rt::test]
async fn o1_unrelated_listener_is_reported_and_left_alone() {
    let port = free_port();
    let mut server = std::process::Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3");
    let server_pid = server.id();
    // Wait until it listens.
    let deadline = tokio::time::Instant::now() + supervisor_support::WAIT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "http.server never listened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let state_dir = tempfile::tempdir().unwrap();
    let mut options = options(&state_dir, &[]);
    options.core.port = port;
    let fixture = start(options, state_dir);
    let outcome = fixture.supervisor.send(Start).await.unwrap();
    match outcome {
        CommandOutcome::Failed {
            failure:
                CommandFailure::Start {
                    failure:
                        StartFailure::PortHeldByOther {
                            pid,
                            program: Some(program),
                            ..
                        },
                    ..
                },
        } => {
            assert_eq!(pid, Some(server_pid));
            assert!(program.contains("python"), "{program}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(alive(server_pid), "the unrelated program was signalled");
    let _ = server.kill();
    let _ = server.wait();
}

#[actix_rt::test]
async fn o1_our_orphan_is_replaced() {
    // A sim left behind by an earlier run of this supervisor, recorded in its state directory.
    let state_dir = tempfile::tempdir().unwrap();
    let options = options(&state_dir, &[]);
    let port = options.core.port;
    let sim = gatewarden::profile::find_sim_binary().expect("sim binary");
    let mut orphan = std::process::Command::new(sim)
        .args(["--port", &port.to_string()])
        .env("HOME", state_dir.path())
        .env("OPENCLAW_STATE_DIR", state_dir.path().join("orphan"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let orphan_pid = orphan.id();
    let deadline = tokio::time::Instant::now() + supervisor_support::WAIT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "orphan never listened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    write_owned_record(
        &owned_record_path(state_dir.path()),
        &OwnedRecord {
            pid: orphan_pid,
            start_ticks: gatewarden::orphan::process_start_ticks(orphan_pid).unwrap(),
            port: Some(port),
            program: "gatewarden-sim".into(),
            pgid: None,
            supervisor_pid: None,
            supervisor_start_ticks: None,
        },
    )
    .unwrap();
    let mut fixture = start(options, state_dir);
    assert_eq!(
        fixture.supervisor.send(Start).await.unwrap(),
        CommandOutcome::Completed
    );
    let status = fixture.wait_state(LifecycleState::Running).await;
    assert_ne!(status.pid, Some(orphan_pid));
    let _ = orphan.wait();
    assert!(!alive(orphan_pid));
    fixture.supervisor.send(Stop).await.unwrap();
}

#[actix_rt::test]
async fn h2_hung_gateway_is_restarted() {
    let state_dir = tempfile::tempdir().unwrap();
    let mut options = options(&state_dir, &[]);
    options.core.heartbeat.interval_ms = 100;
    options.core.heartbeat.timeout_ms = 50;
    options.core.heartbeat.max_misses = 3;
    options.core.restart.cooldown_ms = 0;
    options.core.stop.kill_grace_ms = 200;
    let mut fixture = start(options, state_dir);
    fixture.supervisor.send(Start).await.unwrap();
    let first = fixture
        .wait_state(LifecycleState::Running)
        .await
        .pid
        .expect("pid");
    let reply = fixture
        .supervisor
        .send(Rpc {
            method: "sim.fault".into(),
            params: Some(json!({"kind": "hang", "mode": "sigstop"})),
            timeout_ms: Some(2_000),
        })
        .await
        .unwrap();
    let _ = reply;
    let status = fixture
        .wait_status(|status| {
            status.state == LifecycleState::Running && status.pid.is_some_and(|pid| pid != first)
        })
        .await;
    assert_ne!(status.pid, Some(first));
    let diagnostics = fixture.supervisor.send(GetDiagnostics).await.unwrap();
    assert!(diagnostics.restarts_executed >= 1);
    fixture.supervisor.send(Stop).await.unwrap();
    wait_gone(first).await;
}
