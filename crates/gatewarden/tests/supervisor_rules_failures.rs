//! Failures that retrying cannot fix (BEHAVIOUR.md Revision 2, F1–F9), end to end against the
//! real `gatewarden-sim`: an in-place restart on an invalid config, a gateway that never sends the
//! challenge, an old runtime, the restart window, a reload whose gateway is killed.

mod supervisor_rules_common;
mod supervisor_support;

use std::path::Path;
use std::time::{Duration, Instant};

use gatewarden::events::GatewayEvent;
use gatewarden::profile::LaunchProfile;
use gatewarden::supervisor::{GetDiagnostics, Reload, Restart, Start, Stop};
use gatewarden_core::error::{CommandFailure, StartFailure};
use gatewarden_core::machine::{CommandOutcome, LifecycleState, Status};
use supervisor_rules_common::{init_tracing, LogCapture};
use supervisor_support::{options, start, Fixture, WAIT};

fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid fits")),
        signal,
    )
    .expect("signal the gateway");
}

fn gateway_config(state_dir: &Path) -> std::path::PathBuf {
    LaunchProfile::gateway_state_dir(state_dir).join("openclaw.json")
}

/// Every status published until `predicate` holds (bounded by `WAIT`).
async fn statuses_until(fixture: &mut Fixture, predicate: impl Fn(&Status) -> bool) -> Vec<Status> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        let event = tokio::time::timeout_at(deadline, fixture.events.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out; statuses so far: {seen:#?}"))
            .expect("event channel");
        if let GatewayEvent::Status(status) = event {
            let done = predicate(&status);
            seen.push(status);
            if done {
                return seen;
            }
        }
    }
}

#[actix_rt::test]
async fn f5_in_place_restart_on_an_invalid_config_is_an_error_then_one_repaired_replacement() {
    init_tracing();
    let state_dir = tempfile::tempdir().unwrap();
    let config_path = gateway_config(state_dir.path());
    let mut options = options(&state_dir, &[]);
    options.core.reload.signal_restarts_in_place = true;
    options.core.reload.recent_connect_skip_ms = 0;
    let mut fixture = start(options, state_dir);
    assert_eq!(
        fixture.supervisor.send(Start).await.unwrap(),
        CommandOutcome::Completed
    );
    let first = fixture.status().await.pid.expect("pid");
    std::fs::create_dir_all(config_path.parent().unwrap()).unwrap();
    std::fs::write(&config_path, r#"{"gateway": {"mode": "local"}, "foo": 1}"#).unwrap();
    let asked = Instant::now();
    let reload = fixture.supervisor.send(Reload);
    let seen = statuses_until(&mut fixture, |status| status.state == LifecycleState::Error).await;
    let error = seen.last().unwrap().error.clone().unwrap_or_default();
    let to_error = asked.elapsed();
    assert!(error.contains("Invalid config"), "{error}");
    assert!(
        to_error < Duration::from_secs(30),
        "error within the in-place bound: {to_error:?}"
    );
    assert!(matches!(
        reload.await.unwrap(),
        CommandOutcome::Failed { .. }
    ));
    // The replacement: the doctor first (it removes the unknown key), then one cold start.
    let running = fixture
        .wait_status(|status| status.state == LifecycleState::Running)
        .await;
    assert_ne!(running.pid, Some(first));
    let fixed = std::fs::read_to_string(&config_path).unwrap();
    assert!(!fixed.contains("foo"), "the doctor repaired it: {fixed}");
    // No stale restart of the replacement afterwards.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let diagnostics = fixture.supervisor.send(GetDiagnostics).await.unwrap();
    assert_eq!(diagnostics.process_starts, 2, "{diagnostics:?}");
    assert_eq!(diagnostics.restarts_executed, 0, "{diagnostics:?}");
    assert_eq!(fixture.status().await.pid, running.pid);
    eprintln!("f5: error after {to_error:?}");
    fixture.supervisor.send(Stop).await.unwrap();
}

#[actix_rt::test]
async fn f6_a_gateway_that_never_sends_the_challenge_fails_after_the_challenge_timeout() {
    init_tracing();
    let state_dir = tempfile::tempdir().unwrap();
    let mut options = options(&state_dir, &["--no-challenge"]);
    options.core.connect.challenge_timeout_ms = 1_000;
    options.core.connect.ready_timeout_ms = 120_000;
    options.core.start.max_attempts = 2;
    options.core.start.retry_delay_ms = 100;
    let fixture = start(options, state_dir);
    let began = Instant::now();
    let outcome = fixture.supervisor.send(Start).await.unwrap();
    let took = began.elapsed();
    match outcome {
        CommandOutcome::Failed {
            failure:
                CommandFailure::Start {
                    failure: StartFailure::NoChallenge { waited_ms, .. },
                    ..
                },
        } => assert!(waited_ms >= 1_000, "{waited_ms}"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        took < Duration::from_secs(30),
        "bounded by the challenge timeout, not the ready timeout: {took:?}"
    );
    let diagnostics = fixture.supervisor.send(GetDiagnostics).await.unwrap();
    assert_eq!(diagnostics.process_starts, 2, "{diagnostics:?}");
    eprintln!("f6: failed after {took:?}");
}

#[actix_rt::test]
async fn f3_an_old_runtime_fails_at_once_with_its_line_and_no_retry() {
    init_tracing();
    let state_dir = tempfile::tempdir().unwrap();
    let options = options(&state_dir, &["--fake-node-version", "20.20.2"]);
    let mut fixture = start(options, state_dir);
    let outcome = fixture.supervisor.send(Start).await.unwrap();
    match outcome {
        CommandOutcome::Failed {
            failure:
                CommandFailure::Start {
                    failure: StartFailure::RuntimeIncompatible { message },
                    ..
                },
        } => assert!(message.contains("node:sqlite is unavailable"), "{message}"),
        other => panic!("unexpected {other:?}"),
    }
    let mut gave_up = false;
    while let Ok(event) = fixture.events.try_recv() {
        gave_up |= matches!(event, GatewayEvent::GaveUp { .. });
    }
    assert!(gave_up, "F8: the give-up is published");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let diagnostics = fixture.supervisor.send(GetDiagnostics).await.unwrap();
    assert_eq!(diagnostics.process_starts, 1, "no retry: {diagnostics:?}");
    assert_eq!(fixture.status().await.state, LifecycleState::Error);
}

#[actix_rt::test]
async fn f7_a_second_sigusr2_in_the_restart_window_is_no_error() {
    init_tracing();
    let capture = LogCapture::default();
    let _guard = capture.install();
    let state_dir = tempfile::tempdir().unwrap();
    // A long drain, so the reconnect lands in the restart window (the gateway-restarting refusal).
    let mut options = options(&state_dir, &["--drain-ms", "2500"]);
    options.core.reconnect.base_delay_ms = 200;
    let mut fixture = start(options, state_dir);
    fixture.supervisor.send(Start).await.unwrap();
    let pid = fixture.status().await.pid.expect("pid");
    signal(pid, nix::sys::signal::Signal::SIGUSR2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(pid, nix::sys::signal::Signal::SIGUSR2);
    let seen = statuses_until(&mut fixture, |status| {
        status.state == LifecycleState::Running
    })
    .await;
    assert!(
        seen.iter()
            .all(|status| status.state != LifecycleState::Error && status.error.is_none()),
        "{seen:#?}"
    );
    let status = fixture.status().await;
    assert_eq!(status.pid, Some(pid), "same process, restarted in place");
    let diagnostics = fixture.supervisor.send(GetDiagnostics).await.unwrap();
    assert_eq!(diagnostics.process_starts, 1, "{diagnostics:?}");
    // The reconnect met the refusal (the drain is the sim's restart window) and waited it out.
    assert!(
        capture.count("gateway is restarting in place; connecting again") >= 1,
        "the restart window was not hit: {:#?}",
        capture.events()
    );
    assert_eq!(capture.count("start attempt"), 0, "no failed attempt");
    fixture.supervisor.send(Stop).await.unwrap();
}

#[actix_rt::test]
async fn f9_a_reload_whose_gateway_is_killed_leaves_no_stale_restart() {
    init_tracing();
    let state_dir = tempfile::tempdir().unwrap();
    let mut options = options(&state_dir, &[]);
    options.core.reload.recent_connect_skip_ms = 0;
    options.core.reload.post_signal_check_ms = 1_500;
    let mut fixture = start(options, state_dir);
    fixture.supervisor.send(Start).await.unwrap();
    let pid = fixture.status().await.pid.expect("pid");
    let reload = fixture.supervisor.send(Reload);
    // Killed mid-restart: after the signal (sent within a few ms), before the 1.5 s check.
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(pid, nix::sys::signal::Signal::SIGKILL);
    let replacement = fixture
        .wait_status(|status| {
            status.state == LifecycleState::Running
                && status.pid.is_some()
                && status.pid != Some(pid)
        })
        .await;
    assert_eq!(reload.await.unwrap(), CommandOutcome::Completed);
    // Past the reload's check: nothing restarts the replacement.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(fixture.status().await.pid, replacement.pid);
    let diagnostics = fixture.supervisor.send(GetDiagnostics).await.unwrap();
    assert_eq!(diagnostics.process_starts, 2, "{diagnostics:?}");
    assert_eq!(diagnostics.restarts_executed, 0, "{diagnostics:?}");
    // `restart` while running is executed, not deferred.
    assert_eq!(
        fixture.supervisor.send(Restart).await.unwrap(),
        CommandOutcome::Completed
    );
    fixture.supervisor.send(Stop).await.unwrap();
}
