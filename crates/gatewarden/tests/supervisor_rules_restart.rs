//! Restart, reload, stop and emergency quit, end to end against the real `gatewarden-sim`. Each
//! test is named after the BEHAVIOUR.md rule it proves.

mod supervisor_rules_common;
mod supervisor_support;

use std::time::{Duration, Instant};

use gatewarden::supervisor::{
    DebouncedReload, DebouncedRestart, ForceTerminateForQuit, GetDiagnostics, GetStatus, Reload,
    Restart, Start, Stop,
};
use gatewarden_core::error::IgnoredReason;
use gatewarden_core::machine::{CommandOutcome, LifecycleState};
use serde_json::Value;
use supervisor_rules_common::{init_tracing, rpc, wait_diagnostics, ExternalSim};
use supervisor_support::{alive, free_port, options, start, wait_gone, Fixture};

/// The sim's own view: (pid, bootId, in-place restarts).
async fn sim_status(fixture: &Fixture) -> (u64, String, u64) {
    let status = rpc(&fixture.supervisor, "status", None, 5_000)
        .await
        .expect("status RPC");
    let field = |name: &str| -> &Value { status.get(name).unwrap_or(&Value::Null) };
    (
        field("pid").as_u64().expect("pid"),
        field("bootId").as_str().expect("bootId").to_string(),
        field("restarts").as_u64().expect("restarts"),
    )
}

#[actix_rt::test]
async fn r2_concurrent_restarts_join_one_cycle() {
    init_tracing();
    let state_dir = tempfile::tempdir().unwrap();
    let mut options = options(&state_dir, &[]);
    options.core.restart.cooldown_ms = 300;
    let mut fixture = start(options, state_dir);
    fixture.supervisor.send(Start).await.unwrap();
    let first = fixture
        .wait_state(LifecycleState::Running)
        .await
        .pid
        .expect("pid");
    // Past the cooldown, so the governor is not what keeps it to one cycle.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before = fixture.supervisor.send(GetDiagnostics).await.unwrap();
    assert_eq!(before.process_starts, 1);
    // Both are in the mailbox before the first is handled.
    let one = fixture.supervisor.send(Restart);
    let two = fixture.supervisor.send(Restart);
    assert_eq!(one.await.unwrap(), CommandOutcome::Completed);
    assert_eq!(two.await.unwrap(), CommandOutcome::Completed);
    let status = fixture.status().await;
    assert_eq!(status.state, LifecycleState::Running);
    assert_ne!(status.pid, Some(first));
    // Nothing follows (no second cycle from a deferred flush either).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = fixture.supervisor.send(GetDiagnostics).await.unwrap();
    assert_eq!(after.process_starts, 2, "one cycle only: {after:?}");
    assert_eq!(after.restarts_executed, 1, "{after:?}");
    assert_eq!(after.restarts_suppressed, 0, "{after:?}");
    assert_eq!(fixture.status().await.pid, status.pid);
    fixture.supervisor.send(Stop).await.unwrap();
    wait_gone(first).await;
}

#[actix_rt::test]
async fn r3_restart_within_cooldown_is_suppressed() {
    init_tracing();
    let state_dir = tempfile::tempdir().unwrap();
    let mut options = options(&state_dir, &[]);
    // Long enough that a slow machine cannot let the second request slip past it.
    options.core.restart.cooldown_ms = 20_000;
    let mut fixture = start(options, state_dir);
    fixture.supervisor.send(Start).await.unwrap();
    fixture.wait_state(LifecycleState::Running).await;
    assert_eq!(
        fixture.supervisor.send(Restart).await.unwrap(),
        CommandOutcome::Completed
    );
    let restarted = fixture.wait_state(LifecycleState::Running).await;
    match fixture.supervisor.send(Restart).await.unwrap() {
        CommandOutcome::Suppressed { retry_after_ms } => {
            assert!(
                retry_after_ms > 0 && retry_after_ms <= 20_000,
                "retry after {retry_after_ms} ms"
            )
        }
        other => panic!("expected Suppressed, got {other:?}"),
    }
    let diagnostics = fixture.supervisor.send(GetDiagnostics).await.unwrap();
    assert_eq!(diagnostics.restarts_executed, 1, "{diagnostics:?}");
    assert_eq!(diagnostics.restarts_suppressed, 1, "{diagnostics:?}");
    assert_eq!(diagnostics.process_starts, 2, "{diagnostics:?}");
    let status = fixture.status().await;
    assert_eq!(status.state, LifecycleState::Running);
    assert_eq!(status.pid, restarted.pid, "the suppressed restart ran");
    fixture.supervisor.send(Stop).await.unwrap();
}

#[actix_rt::test]
async fn r7_debounced_restarts_coalesce() {
    init_tracing();
    let state_dir = tempfile::tempdir().unwrap();
    let mut options = options(&state_dir, &[]);
    // No governor: extra restarts would really run rather than be suppressed.
    options.core.restart.cooldown_ms = 0;
    let mut fixture = start(options, state_dir);
    fixture.supervisor.send(Start).await.unwrap();
    let first = fixture
        .wait_state(LifecycleState::Running)
        .await
        .pid
        .expect("pid");
    let mut last_sent = Instant::now();
    for _ in 0..5 {
        assert_eq!(
            fixture
                .supervisor
                .send(DebouncedRestart {
                    delay_ms: Some(200)
                })
                .await
                .unwrap(),
            CommandOutcome::Scheduled
        );
        last_sent = Instant::now();
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let restarted = fixture
        .wait_status(|status| {
            status.state == LifecycleState::Running && status.pid.is_some_and(|pid| pid != first)
        })
        .await;
    // Trailing debounce: nothing before the window after the last request.
    assert!(
        last_sent.elapsed() >= Duration::from_millis(190),
        "restarted {:?} after the last request",
        last_sent.elapsed()
    );
    // Longer than the window again: no second restart follows.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let diagnostics = fixture.supervisor.send(GetDiagnostics).await.unwrap();
    assert_eq!(diagnostics.process_starts, 2, "{diagnostics:?}");
    assert_eq!(diagnostics.restarts_executed, 1, "{diagnostics:?}");
    assert_eq!(fixture.status().await.pid, restarted.pid);
    fixture.supervisor.send(Stop).await.unwrap();
}

#[actix_rt::test]
async fn p5_debounced_reloads_coalesce_into_one_signal() {
    init_tracing();
    let state_dir = tempfile::tempdir().unwrap();
    let mut options = options(&state_dir, &[]);
    options.core.reload.recent_connect_skip_ms = 0;
    let mut fixture = start(options, state_dir);
    fixture.supervisor.send(Start).await.unwrap();
    let before = fixture.wait_state(LifecycleState::Running).await;
    let (pid, boot, restarts) = sim_status(&fixture).await;
    assert_eq!(Some(pid as u32), before.pid);
    assert_eq!(restarts, 0);
    for _ in 0..5 {
        assert_eq!(
            fixture
                .supervisor
                .send(DebouncedReload {
                    delay_ms: Some(200)
                })
                .await
                .unwrap(),
            CommandOutcome::Scheduled
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let after = fixture
        .wait_status(|status| {
            status.state == LifecycleState::Running
                && status.boot_id.is_some()
                && status.boot_id.as_deref() != Some(boot.as_str())
        })
        .await;
    assert_eq!(after.pid, before.pid, "restarted in place, same pid");
    // Past another window plus the sim's restart down time: no second signal.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let status = fixture.wait_state(LifecycleState::Running).await;
    let (pid_now, boot_now, restarts_now) = sim_status(&fixture).await;
    assert_eq!(Some(pid_now as u32), before.pid);
    assert_eq!(restarts_now, 1, "in-place restarts of the gateway");
    assert_eq!(Some(boot_now.as_str()), after.boot_id.as_deref());
    assert_eq!(status.boot_id, after.boot_id);
    let diagnostics = fixture.supervisor.send(GetDiagnostics).await.unwrap();
    assert_eq!(diagnostics.process_starts, 1, "{diagnostics:?}");
    fixture.supervisor.send(Stop).await.unwrap();
}

#[actix_rt::test]
async fn p1_reload_policy_restart_mode_restarts() {
    init_tracing();
    let state_dir = tempfile::tempdir().unwrap();
    let gateway_dir = state_dir.path().join("gateway");
    std::fs::create_dir_all(&gateway_dir).unwrap();
    // JSON5: unquoted keys, single quotes, trailing commas.
    std::fs::write(
        gateway_dir.join("openclaw.json"),
        "{ gateway: { reload: { mode: 'restart', }, }, }",
    )
    .unwrap();
    let options = options(&state_dir, &[]);
    let mut fixture = start(options, state_dir);
    fixture.supervisor.send(Start).await.unwrap();
    let before = fixture.wait_state(LifecycleState::Running).await;
    let first = before.pid.expect("pid");
    // Right after connect: in hybrid mode this would be skipped (P3); restart mode restarts.
    assert_eq!(
        fixture.supervisor.send(Reload).await.unwrap(),
        CommandOutcome::Completed
    );
    let after = fixture.wait_state(LifecycleState::Running).await;
    assert!(after.pid.is_some());
    assert_ne!(after.pid, Some(first), "not restarted");
    let diagnostics = fixture.supervisor.send(GetDiagnostics).await.unwrap();
    assert_eq!(diagnostics.process_starts, 2, "{diagnostics:?}");
    assert_eq!(diagnostics.restarts_executed, 1, "{diagnostics:?}");
    fixture.supervisor.send(Stop).await.unwrap();
    wait_gone(first).await;
}

#[actix_rt::test]
async fn p3_reload_right_after_connect_is_skipped() {
    init_tracing();
    let mut fixture = Fixture::new(&[]);
    fixture.supervisor.send(Start).await.unwrap();
    let before = fixture.wait_state(LifecycleState::Running).await;
    let (_, boot, _) = sim_status(&fixture).await;
    match fixture.supervisor.send(Reload).await.unwrap() {
        CommandOutcome::Ignored { reason } => assert!(
            matches!(reason, IgnoredReason::ConnectedRecently { .. }),
            "{reason:?}"
        ),
        other => panic!("expected Ignored, got {other:?}"),
    }
    // Not signalled, not restarted.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, boot_now, restarts) = sim_status(&fixture).await;
    assert_eq!(boot_now, boot);
    assert_eq!(restarts, 0);
    let status = fixture.status().await;
    assert_eq!(status.state, LifecycleState::Running);
    assert_eq!(status.pid, before.pid);
    let diagnostics = fixture.supervisor.send(GetDiagnostics).await.unwrap();
    assert_eq!(diagnostics.process_starts, 1);
    fixture.supervisor.send(Stop).await.unwrap();
}

#[actix_rt::test]
async fn t6_force_terminate_kills_only_the_owned_process() {
    init_tracing();
    /// An unrelated process of ours, killed even when the test fails.
    struct Bystander(std::process::Child);
    impl Drop for Bystander {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut bystander = Bystander(
        std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("sleep"),
    );
    let mut fixture = Fixture::new(&[]);
    fixture.supervisor.send(Start).await.unwrap();
    let pid = fixture
        .wait_state(LifecycleState::Running)
        .await
        .pid
        .expect("pid");
    assert_eq!(
        fixture
            .supervisor
            .send(ForceTerminateForQuit)
            .await
            .unwrap(),
        CommandOutcome::Completed
    );
    wait_gone(pid).await;
    assert!(
        matches!(bystander.0.try_wait(), Ok(None)),
        "an unrelated process died"
    );
    // The app is quitting: the exit is not answered with a new gateway.
    let status = fixture
        .wait_status(|status| status.state != LifecycleState::Running)
        .await;
    assert_eq!(status.pid, None, "{status:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let diagnostics = fixture.supervisor.send(GetDiagnostics).await.unwrap();
    assert_eq!(diagnostics.process_starts, 1, "respawned: {diagnostics:?}");
    let status = fixture.supervisor.send(GetStatus).await.unwrap();
    assert_ne!(status.state, LifecycleState::Running);
    assert_ne!(status.state, LifecycleState::Reconnecting);
    // Nothing owned any more: a second quit has nothing to do.
    assert!(matches!(
        fixture
            .supervisor
            .send(ForceTerminateForQuit)
            .await
            .unwrap(),
        CommandOutcome::Ignored { .. }
    ));
}

#[actix_rt::test]
async fn t6_force_terminate_never_signals_an_external_gateway() {
    init_tracing();
    let port = free_port();
    let mut external = ExternalSim::start(port, &[]).await;
    let state_dir = tempfile::tempdir().unwrap();
    let mut options = options(&state_dir, &[]);
    options.core.port = port;
    let mut fixture = start(options, state_dir);
    fixture.supervisor.send(Start).await.unwrap();
    let status = fixture.wait_state(LifecycleState::Running).await;
    assert!(status.external);
    assert!(matches!(
        fixture
            .supervisor
            .send(ForceTerminateForQuit)
            .await
            .unwrap(),
        CommandOutcome::Ignored { .. }
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!external.exited(), "the external gateway was terminated");
    assert!(alive(external.pid));
    fixture.supervisor.send(Stop).await.unwrap();
}

#[actix_rt::test]
async fn t1_stop_during_start_supersedes_it() {
    init_tracing();
    let state_dir = tempfile::tempdir().unwrap();
    let options = options(&state_dir, &["--slow-start-ms", "500"]);
    let port = options.core.port;
    let fixture = start(options, state_dir);
    let start_reply = fixture.supervisor.send(Start);
    // Stop once the process is spawned and not yet listening.
    wait_diagnostics(&fixture.supervisor, "the spawn", |diagnostics| {
        diagnostics.process_starts == 1
    })
    .await;
    let pid = fixture
        .status()
        .await
        .pid
        .expect("owned pid while starting");
    assert_eq!(fixture.status().await.state, LifecycleState::Starting);
    assert_eq!(
        fixture.supervisor.send(Stop).await.unwrap(),
        CommandOutcome::Completed
    );
    assert_eq!(start_reply.await.unwrap(), CommandOutcome::Superseded);
    let status = fixture.status().await;
    assert_eq!(status.state, LifecycleState::Stopped);
    assert_eq!(status.pid, None);
    assert_eq!(status.error, None, "a superseded start never sets error");
    wait_gone(pid).await;
    // Past the slow start: nothing comes up on the port, nothing was respawned.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    let diagnostics = fixture.supervisor.send(GetDiagnostics).await.unwrap();
    assert_eq!(diagnostics.process_starts, 1, "{diagnostics:?}");
    assert_eq!(fixture.status().await.state, LifecycleState::Stopped);
}
