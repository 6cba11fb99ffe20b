//! Crash recovery and process output, end to end against the real `gatewarden-sim`. Each test is
//! named after the BEHAVIOUR.md rule it proves.

mod supervisor_rules_common;
mod supervisor_support;

use std::time::{Duration, Instant};

use gatewarden::supervisor::{GetDiagnostics, Start, Stop};
use gatewarden_core::machine::{CommandOutcome, LifecycleState};
use supervisor_rules_common::{eventually, init_tracing, LogCapture};
use supervisor_support::{alive, options, start, wait_gone, Fixture};

fn sigkill(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("SIGKILL the gateway");
}

/// The supervisor's own decisions (not gateway output), one per line, for failure messages.
fn log_text(capture: &LogCapture) -> String {
    capture
        .events()
        .iter()
        .filter(|event| event.target != "gateway" && event.level <= tracing::Level::INFO)
        .map(|event| format!("{} {}", event.level, event.text))
        .collect::<Vec<_>>()
        .join("\n")
}

/// SIGKILL the running gateway and measure how long until a new one runs.
async fn kill_and_time_replacement(fixture: &mut Fixture, pid: u32) -> (Duration, u32) {
    let killed = Instant::now();
    sigkill(pid);
    let status = fixture
        .wait_status(|status| {
            status.state == LifecycleState::Running && status.pid.is_some_and(|new| new != pid)
        })
        .await;
    (killed.elapsed(), status.pid.expect("new pid"))
}

#[actix_rt::test]
async fn n5_isolated_crash_after_stable_run_restarts_at_once() {
    init_tracing();
    const BASE_DELAY_MS: u64 = 1_500;
    let capture = LogCapture::default();
    let _guard = capture.install();
    let state_dir = tempfile::tempdir().unwrap();
    let mut options = options(&state_dir, &[]);
    options.core.reconnect.stable_uptime_ms = 300;
    options.core.reconnect.base_delay_ms = BASE_DELAY_MS;
    options.core.reconnect.jitter = 0.0;
    let mut fixture = start(options, state_dir);
    assert_eq!(
        fixture.supervisor.send(Start).await.unwrap(),
        CommandOutcome::Completed
    );
    let mut pid = fixture
        .wait_state(LifecycleState::Running)
        .await
        .pid
        .expect("pid");
    // Several isolated crashes (the first restart racing the dying process's socket must not
    // turn into a failed attempt either).
    for round in 1..=4 {
        // A stable run.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let (isolated, next) = kill_and_time_replacement(&mut fixture, pid).await;
        assert!(
            isolated < Duration::from_millis(BASE_DELAY_MS),
            "round {round}: an isolated crash waited {isolated:?} (backoff base is \
             {BASE_DELAY_MS} ms)\n{}",
            log_text(&capture)
        );
        let diagnostics = fixture.supervisor.send(GetDiagnostics).await.unwrap();
        assert_eq!(
            diagnostics.reconnect_attempts_total,
            diagnostics.reconnect_successes_total,
            "round {round}: a reconnect attempt failed\n{}",
            log_text(&capture)
        );
        pid = next;
    }
    let second = pid;
    // N2-style contrast: a crash right after a start (no stable run) backs off.
    let (early, third) = kill_and_time_replacement(&mut fixture, second).await;
    assert!(
        early >= Duration::from_millis(BASE_DELAY_MS),
        "a crash right after start was restarted after {early:?}, without backoff\n{}",
        log_text(&capture)
    );
    let status = fixture.status().await;
    assert_eq!(status.pid, Some(third));
    fixture.supervisor.send(Stop).await.unwrap();
    wait_gone(third).await;
}

#[actix_rt::test]
async fn n2_crash_loop_backs_off_and_gives_up() {
    init_tracing();
    let state_dir = tempfile::tempdir().unwrap();
    // Every gateway crashes shortly after it listens (after the handshake).
    let mut options = options(&state_dir, &["--crash-after-ms", "300"]);
    options.core.reconnect.max_attempts = 2;
    options.core.reconnect.base_delay_ms = 50;
    options.core.reconnect.jitter = 0.0;
    options.core.start.retry_delay_ms = 50;
    let mut fixture = start(options, state_dir);
    let began = Instant::now();
    let _ = fixture.supervisor.send(Start).await.unwrap();
    let failed = fixture.wait_state(LifecycleState::Error).await;
    let error = failed.error.clone().expect("error text");
    assert!(
        error.contains("Failed to reconnect after maximum attempts")
            || error.to_ascii_lowercase().contains("giving up")
            || error.to_ascii_lowercase().contains("intensity"),
        "{error}"
    );
    // Backed off: at least the two delays (50 + 100 ms) passed, plus the first run (300 ms).
    assert!(began.elapsed() >= Duration::from_millis(150 + 300));
    assert_eq!(failed.reconnect_attempts, 2, "{failed:?}");
    let diagnostics = fixture.supervisor.send(GetDiagnostics).await.unwrap();
    assert!(
        // The manual start plus up to one spawn per attempt (an attempt can fail before its
        // spawn), never a storm.
        (2..=9).contains(&diagnostics.process_starts),
        "{diagnostics:?}"
    );
    assert_eq!(diagnostics.reconnect_attempts_total, 2, "{diagnostics:?}");
    // Given up for good: nothing is spawned any more and nothing is left running.
    let starts = diagnostics.process_starts;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let later = fixture.supervisor.send(GetDiagnostics).await.unwrap();
    assert_eq!(later.process_starts, starts, "{later:?}");
    let status = fixture.status().await;
    assert_eq!(status.state, LifecycleState::Error);
    assert_eq!(status.pid, None);
}

#[actix_rt::test]
async fn x3_stderr_noise_is_deduplicated() {
    init_tracing();
    const LINE: &str = "some warning from the x3 test";
    let capture = LogCapture::default();
    let _guard = capture.install();
    let mut fixture = Fixture::new(&["--stderr-line", LINE, "--stderr-repeat", "200"]);
    assert_eq!(
        fixture.supervisor.send(Start).await.unwrap(),
        CommandOutcome::Completed
    );
    let running = fixture.wait_state(LifecycleState::Running).await;
    let pid = running.pid.expect("pid");
    // The supervisor logs gateway stderr as "[Gateway stderr] <line>" and each summary as
    // "[Gateway stderr] (suppressed N repeats) <line>".
    let stderr = |text: &str| text.starts_with("[Gateway stderr]") && text.contains(LINE);
    let is_line = |text: &str| stderr(text) && !text.contains("suppressed");
    let is_summary = |text: &str| stderr(text) && text.contains("suppressed");
    // All 200 lines are read (the last summary is at the 200th).
    eventually("the summary of the 200th repeat", || {
        capture
            .events()
            .iter()
            .any(|event| is_summary(&event.text) && event.text.contains("200"))
    })
    .await;
    let events = capture.events();
    let lines: Vec<_> = events.iter().filter(|event| is_line(&event.text)).collect();
    let summaries: Vec<_> = events
        .iter()
        .filter(|event| is_summary(&event.text))
        .collect();
    assert_eq!(lines.len(), 1, "logged more than once: {lines:#?}");
    // Q2: the line does not say it is a warning (no `Warning:` or level tag), so INFO.
    assert_eq!(lines[0].level, tracing::Level::INFO, "{lines:#?}");
    assert_eq!(summaries.len(), 4, "a summary every 50th: {summaries:#?}");
    // The supervisor survives the noise and keeps the gateway.
    let status = fixture.status().await;
    assert_eq!(status.state, LifecycleState::Running);
    assert_eq!(status.pid, Some(pid));
    assert!(alive(pid));
    fixture.supervisor.send(Stop).await.unwrap();
    wait_gone(pid).await;
}
