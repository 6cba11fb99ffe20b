//! The lifecycle rules of BEHAVIOUR.md, one scripted test (or more) per rule id, driven on a
//! virtual clock through the real statig machine.

mod support;

use gatewarden_core::config::{ForeignGatewayPolicy, SupervisorConfig};
use gatewarden_core::error::{CommandFailure, SignalFailure, StartFailure};
use gatewarden_core::machine::{
    Command, CommandOutcome, Effect, Event, ExternalShutdownOutcome, Handshake, LifecycleState,
    Listener, LogLevel, Notice, PortProbe, ReadySource, StartObservation, TimerKind,
};
use gatewarden_core::reload_policy::{ReloadMode, ReloadPolicy};
use gatewarden_core::rpc::RpcError;
use support::{Harness, ProbeMode};

fn hybrid() -> ReloadPolicy {
    ReloadPolicy {
        mode: ReloadMode::Hybrid,
        debounce_ms: 1_200,
    }
}

fn is_spawn(effect: &Effect) -> bool {
    matches!(effect, Effect::SpawnProcess { .. })
}

// ---------------------------------------------------------------------------------------------
// S: status model
// ---------------------------------------------------------------------------------------------

#[test]
fn s1_initial_state_is_stopped() {
    let harness = Harness::quiet();
    assert_eq!(harness.state(), LifecycleState::Stopped);
    assert_eq!(harness.leaf(), "stopped");
}

#[test]
fn s2_status_snapshot_has_pid_version_and_uptime_when_running() {
    let mut harness = Harness::quiet();
    let pid = harness.start_to_running();
    harness.advance(5_000);
    let status = harness.machine.status(harness.now);
    assert_eq!(status.pid, Some(pid));
    assert_eq!(status.port, 18789);
    assert_eq!(status.version.as_deref(), Some("2026.9.6"));
    assert_eq!(status.protocol, Some(4));
    assert_eq!(status.uptime_ms, Some(5_000));
    assert!(status.connected_at_ms.is_some());
}

#[test]
fn s3_every_status_change_is_published_once() {
    let mut harness = Harness::quiet();
    harness.start_to_running();
    let states = harness.published_status_states();
    assert_eq!(states.first(), Some(&LifecycleState::Starting));
    assert_eq!(states.last(), Some(&LifecycleState::Running));
    // Feeding an event that changes nothing publishes nothing.
    let epoch = harness.epoch();
    harness.send(Event::ProofOfLife { epoch });
    assert!(!harness.last_has(|effect| matches!(effect, Effect::Publish(Notice::Status(_)))));
}

#[test]
fn s3_state_change_runs_the_deferred_restart_flush() {
    let mut harness = Harness::quiet();
    harness.command(Command::Start);
    let deferred = harness.command(Command::Restart);
    assert_eq!(harness.reply_of(deferred), Some(&CommandOutcome::Deferred));
    harness.run_start_flow();
    // running reached → flush → restart executes (stop first: terminate the process).
    assert!(harness.terminate_pid().is_some(), "{:?}", harness.last);
}

#[test]
fn s4_connected_only_in_running() {
    let mut harness = Harness::quiet();
    assert!(!harness.machine.is_connected());
    harness.command(Command::Start);
    assert!(!harness.machine.is_connected());
    harness.run_start_flow();
    assert!(harness.machine.is_connected());
    harness.socket_closed(1006);
    assert!(!harness.machine.is_connected());
}

// ---------------------------------------------------------------------------------------------
// E1: epochs
// ---------------------------------------------------------------------------------------------

#[test]
fn e1_results_of_a_superseded_flow_are_dropped() {
    let mut harness = Harness::quiet();
    harness.command(Command::Start);
    let old_epoch = harness.epoch();
    harness.command(Command::Stop);
    assert_eq!(harness.state(), LifecycleState::Stopped);
    harness.send(Event::PortProbed {
        epoch: old_epoch,
        probe: PortProbe::free(),
    });
    assert_eq!(harness.state(), LifecycleState::Stopped);
    assert!(!harness.last_has(is_spawn));
}

#[test]
fn e1_superseded_flow_never_sets_error() {
    let mut harness = Harness::quiet();
    harness.command(Command::Start);
    let old_epoch = harness.epoch();
    harness.command(Command::Stop);
    harness.send(Event::StepFailed {
        epoch: old_epoch,
        failure: StartFailure::HandshakeTimeout,
    });
    assert_eq!(harness.machine.status(harness.now).error, None);
    assert_eq!(harness.state(), LifecycleState::Stopped);
}

#[test]
fn e1_start_and_stop_bump_the_epoch() {
    let mut harness = Harness::quiet();
    let before = harness.epoch();
    harness.command(Command::Start);
    assert_eq!(harness.epoch(), before + 1);
    harness.command(Command::Stop);
    assert_eq!(harness.epoch(), before + 2);
}

// ---------------------------------------------------------------------------------------------
// L: start
// ---------------------------------------------------------------------------------------------

#[test]
fn l1_start_while_starting_is_ignored() {
    let mut harness = Harness::quiet();
    harness.command(Command::Start);
    let epoch = harness.epoch();
    let second = harness.command(Command::Start);
    assert!(matches!(
        harness.reply_of(second),
        Some(CommandOutcome::Ignored { .. })
    ));
    assert_eq!(harness.epoch(), epoch);
}

#[test]
fn l1_start_in_running_is_a_no_op() {
    let mut harness = Harness::quiet();
    harness.start_to_running();
    let reply = harness.command(Command::Start);
    assert!(matches!(
        harness.reply_of(reply),
        Some(CommandOutcome::Ignored { .. })
    ));
    assert_eq!(harness.state(), LifecycleState::Running);
}

#[test]
fn l2_start_enables_auto_reconnect_and_forces_a_policy_refresh() {
    let mut harness = Harness::quiet();
    harness.command(Command::Start);
    assert!(harness.machine.auto_reconnect());
    assert!(
        harness.last_has(|effect| matches!(effect, Effect::RefreshReloadPolicy { force: true }))
    );
}

#[test]
fn l3_manual_start_cancels_reconnect_and_resets_attempts() {
    let mut harness = Harness::quiet();
    let pid = harness.start_to_running();
    harness.exit(pid, 1);
    assert_eq!(harness.state(), LifecycleState::Reconnecting);
    assert_eq!(harness.machine.status(harness.now).reconnect_attempts, 1);
    harness.command(Command::Start);
    assert_eq!(harness.machine.status(harness.now).reconnect_attempts, 0);
    assert!(!harness
        .machine
        .armed_timers()
        .contains(&TimerKind::Reconnect));
}

#[test]
fn l3_auto_reconnect_start_keeps_the_attempt_count() {
    let mut harness = Harness::quiet();
    let pid = harness.start_to_running();
    harness.exit(pid, 1);
    harness.advance(1_000);
    assert_eq!(harness.state(), LifecycleState::Starting);
    assert_eq!(harness.machine.status(harness.now).reconnect_attempts, 1);
}

#[test]
fn l4_start_shows_starting_with_gateway_not_ready() {
    let mut harness = Harness::quiet();
    harness.command(Command::Start);
    let status = harness.machine.status(harness.now);
    assert_eq!(status.state, LifecycleState::Starting);
    assert!(!status.gateway_ready);
}

#[test]
fn l5_step1_existing_gateway_is_attached_as_external() {
    let mut harness = Harness::quiet();
    harness.command(Command::Start);
    let epoch = harness.epoch();
    harness.send(Event::PortProbed {
        epoch,
        probe: PortProbe {
            listeners: vec![Listener {
                pid: Some(77),
                program: Some("openclaw-gateway".into()),
                ours_by_record: false,
            }],
            answers_as_gateway: true,
        },
    });
    assert_eq!(harness.leaf(), "connecting");
    harness.handshake();
    let status = harness.machine.status(harness.now);
    assert_eq!(status.state, LifecycleState::Running);
    assert!(status.external);
    assert_eq!(status.pid, None, "an external gateway's pid is never shown");
    assert_eq!(harness.spawns(), 0);
}

#[test]
fn l5_step2_owned_process_restarted_in_place_is_reconnected_without_spawning() {
    let mut harness = Harness::quiet();
    let pid = harness.start_to_running();
    harness.socket_closed(1012);
    assert_eq!(harness.state(), LifecycleState::Reconnecting);
    harness.advance(1_000);
    harness.probe_free();
    assert_eq!(harness.leaf(), "awaiting_ready");
    harness.ready();
    harness.handshake();
    assert_eq!(harness.state(), LifecycleState::Running);
    assert_eq!(harness.machine.status(harness.now).pid, Some(pid));
    assert_eq!(harness.spawns(), 1, "no second spawn");
}

#[test]
fn l5_step3_windows_waits_for_the_port_before_spawning() {
    let mut harness = Harness::new(SupervisorConfig::windows());
    harness.command(Command::Start);
    harness.probe_free();
    assert_eq!(harness.leaf(), "waiting_port_free");
    assert!(harness.last_has(|effect| matches!(effect, Effect::WaitPortFree { .. })));
    let epoch = harness.epoch();
    harness.send(Event::PortFreed { epoch });
    assert_eq!(harness.leaf(), "spawning");
}

#[test]
fn l5_step4_spawn_logs_one_startup_metric() {
    let mut harness = Harness::quiet();
    harness.command(Command::Start);
    harness.now += 3;
    harness.probe_free();
    harness.spawned();
    harness.now += 10;
    harness.ready();
    harness.now += 2;
    harness.handshake();
    let metrics: Vec<_> = harness
        .all
        .iter()
        .filter_map(|effect| match effect {
            Effect::Publish(Notice::StartupMetric {
                config_prep_ms,
                spawn_to_ready_ms,
                ready_to_connect_ms,
                total_ms,
                ..
            }) => Some((
                *config_prep_ms,
                *spawn_to_ready_ms,
                *ready_to_connect_ms,
                *total_ms,
            )),
            _ => None,
        })
        .collect();
    assert_eq!(metrics, vec![(3, 10, 2, 15)]);
}

#[test]
fn l5_attempts_the_sequence_up_to_three_times() {
    let mut harness = Harness::quiet();
    harness.command(Command::Start);
    for attempt in 1..=3 {
        assert_eq!(harness.leaf(), "probing_port", "attempt {attempt}");
        let epoch = harness.epoch();
        harness.send(Event::StepFailed {
            epoch,
            failure: StartFailure::ConnectionRefused { port: 18789 },
        });
        if attempt < 3 {
            assert_eq!(harness.leaf(), "retry_waiting");
            harness.advance(1_000);
        }
    }
    assert_eq!(harness.state(), LifecycleState::Error);
}

#[test]
fn l6_repair_runs_once_and_retries_with_error_cleared() {
    let mut harness = Harness::quiet();
    harness.command(Command::Start);
    harness.probe_free();
    let pid = harness.spawned();
    harness.send(Event::StderrLine {
        pid,
        line: "Config invalid: /home/u/.openclaw/openclaw.json".into(),
    });
    harness.exit(pid, 78);
    assert_eq!(harness.leaf(), "repairing");
    // F2: the config's digest first, then the doctor, then the digest of what it left.
    let epoch = harness.epoch();
    harness.send(Event::ConfigDigestRead {
        epoch,
        digest: Some("sha256:before".into()),
    });
    assert!(harness.last_has(|effect| matches!(
        effect,
        Effect::RunDoctorRepair {
            timeout_ms: 120_000,
            ..
        }
    )));
    harness.send(Event::RepairFinished {
        epoch,
        outcome: Ok(()),
    });
    harness.send(Event::ConfigDigestRead {
        epoch,
        digest: Some("sha256:after".into()),
    });
    assert_eq!(harness.leaf(), "probing_port");
    assert_eq!(harness.machine.status(harness.now).error, None);
    // A second invalid-config exit is not repaired again in the same flow.
    harness.probe_free();
    let pid = harness.spawned();
    harness.send(Event::StderrLine {
        pid,
        line: "Config invalid".into(),
    });
    harness.exit(pid, 78);
    assert_ne!(harness.leaf(), "repairing");
}

#[test]
fn l6_retry_waits_one_second() {
    let mut harness = Harness::quiet();
    harness.command(Command::Start);
    let epoch = harness.epoch();
    harness.send(Event::StepFailed {
        epoch,
        failure: StartFailure::HandshakeTimeout,
    });
    assert_eq!(harness.leaf(), "retry_waiting");
    harness.advance(999);
    assert_eq!(harness.leaf(), "retry_waiting");
    harness.advance(1);
    assert_eq!(harness.leaf(), "probing_port");
}

#[test]
fn l7_non_transient_failure_fails_at_once() {
    let mut harness = Harness::quiet();
    harness.command(Command::Start);
    let epoch = harness.epoch();
    harness.send(Event::StepFailed {
        epoch,
        failure: StartFailure::SpawnFailed {
            message: "gatewarden-sim not found".into(),
        },
    });
    assert_eq!(harness.state(), LifecycleState::Error);
}

#[test]
fn l8_failed_start_sets_error_and_reports_the_caller() {
    let mut harness = Harness::quiet();
    let reply = harness.command(Command::Start);
    let epoch = harness.epoch();
    harness.send(Event::StepFailed {
        epoch,
        failure: StartFailure::SpawnFailed {
            message: "no such file".into(),
        },
    });
    let status = harness.machine.status(harness.now);
    assert_eq!(status.state, LifecycleState::Error);
    assert!(status
        .error
        .as_deref()
        .unwrap_or_default()
        .contains("no such file"));
    assert!(matches!(
        harness.reply_of(reply),
        Some(CommandOutcome::Failed { .. })
    ));
}

#[test]
fn l8_failed_start_still_flushes_the_deferred_restart() {
    let mut harness = Harness::quiet();
    harness.command(Command::Start);
    harness.command(Command::Restart);
    let epoch = harness.epoch();
    harness.send(Event::StepFailed {
        epoch,
        failure: StartFailure::SpawnFailed {
            message: "boom".into(),
        },
    });
    // The flush ran: auto-reconnect is on (L2), so the deferred restart executes: a new start.
    assert_eq!(harness.machine.deferred_restart_since(), None);
    assert_eq!(harness.leaf(), "probing_port");
}

// ---------------------------------------------------------------------------------------------
// W1 / C1 / G: readiness, handshake, ready signal
// ---------------------------------------------------------------------------------------------

/// Each of the start's three attempts spawns a gateway that exits with code 3 before it is ready.
fn every_attempt_exits_before_ready(harness: &mut Harness) {
    for _ in 0..3 {
        harness.probe_free();
        let pid = harness.spawned();
        harness.exit(pid, 3);
        harness.advance(1_000);
    }
}

#[test]
fn w1_exit_before_ready_fails_fast_with_the_exit_code() {
    let mut harness = Harness::quiet();
    let reply = harness.command(Command::Start);
    every_attempt_exits_before_ready(&mut harness);
    assert_eq!(harness.state(), LifecycleState::Error);
    match harness.reply_of(reply) {
        Some(CommandOutcome::Failed {
            failure:
                CommandFailure::Start {
                    failure: StartFailure::ExitedBeforeReady { code: Some(3) },
                    ..
                },
        }) => {}
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn w1_startup_window_is_not_yet_ready_and_does_not_use_an_attempt() {
    let mut config = gatewarden_core::config::SupervisorConfig::default();
    config.reconnect.jitter = 0.0;
    // The retryAfterMs timer path (the /startupz watch has tests of its own below).
    config.connect.startup_probe_interval_ms = 0;
    let mut harness = Harness::new(config);
    harness.command(Command::Start);
    harness.probe_free();
    harness.spawned();
    harness.ready();
    let epoch = harness.epoch();
    harness.send(Event::StartupWindow {
        epoch,
        retry_after_ms: Some(500),
    });
    assert_eq!(harness.leaf(), "connecting");
    harness.advance(500);
    assert!(harness.last_has(|effect| matches!(effect, Effect::OpenConnection { .. })));
    harness.handshake();
    assert_eq!(harness.state(), LifecycleState::Running);
}

#[test]
fn w1_startup_window_watches_startupz_and_connects_on_its_first_200() {
    let mut harness = Harness::quiet();
    harness.command(Command::Start);
    harness.probe_free();
    harness.spawned();
    harness.ready();
    let epoch = harness.epoch();
    let opens = |harness: &Harness| {
        harness.all_count(|effect| matches!(effect, Effect::OpenConnection { .. }))
    };
    let opened = opens(&harness);
    harness.send(Event::StartupWindow {
        epoch,
        retry_after_ms: Some(500),
    });
    assert!(harness.last_has(|effect| matches!(
        effect,
        Effect::WatchStartup { epoch: e, interval_ms: 25, .. } if *e == epoch
    )));
    // The watch decides: no timer connects in the meantime, however long it takes.
    harness.advance(5_000);
    assert_eq!(opens(&harness), opened, "not before /startupz says 200");
    harness.send(Event::StartupWatched {
        epoch,
        settled: true,
    });
    assert!(harness.last_has(|effect| matches!(effect, Effect::OpenConnection { .. })));
    assert_eq!(opens(&harness), opened + 1);
    harness.handshake();
    assert_eq!(harness.state(), LifecycleState::Running);
}

#[test]
fn w1_a_gateway_without_startupz_is_retried_after_retry_after() {
    let mut harness = Harness::quiet();
    harness.command(Command::Start);
    harness.probe_free();
    harness.spawned();
    harness.ready();
    let epoch = harness.epoch();
    let opens = |harness: &Harness| {
        harness.all_count(|effect| matches!(effect, Effect::OpenConnection { .. }))
    };
    let opened = opens(&harness);
    harness.send(Event::StartupWindow {
        epoch,
        retry_after_ms: Some(700),
    });
    // E1: the end of an earlier epoch's watch changes nothing.
    harness.send(Event::StartupWatched {
        epoch: epoch - 1,
        settled: true,
    });
    assert_eq!(opens(&harness), opened);
    // The watch found no probe: fall back to the gateway's own retryAfterMs.
    harness.send(Event::StartupWatched {
        epoch,
        settled: false,
    });
    harness.advance(699);
    assert_eq!(opens(&harness), opened);
    harness.advance(1);
    assert_eq!(opens(&harness), opened + 1);
}

#[test]
fn w1_startup_probe_off_waits_for_retry_after() {
    let mut config = gatewarden_core::config::SupervisorConfig::default();
    config.connect.startup_probe_interval_ms = 0;
    let mut harness = Harness::new(config);
    harness.command(Command::Start);
    harness.probe_free();
    harness.spawned();
    harness.ready();
    let epoch = harness.epoch();
    let opened = harness.all_count(|effect| matches!(effect, Effect::OpenConnection { .. }));
    harness.send(Event::StartupWindow {
        epoch,
        retry_after_ms: Some(500),
    });
    assert!(!harness.last_has(|effect| matches!(effect, Effect::WatchStartup { .. })));
    harness.advance(499);
    assert_eq!(
        harness.all_count(|effect| matches!(effect, Effect::OpenConnection { .. })),
        opened
    );
    harness.advance(1);
    assert!(harness.last_has(|effect| matches!(effect, Effect::OpenConnection { .. })));
}

#[test]
fn c1_handshake_success_sets_running_and_arms_heartbeat_and_ready_probe() {
    let mut harness = Harness::quiet();
    harness.start_to_running();
    let timers = harness.machine.armed_timers();
    assert!(timers.contains(&TimerKind::Heartbeat));
    assert!(timers.contains(&TimerKind::ReadyProbe));
    assert!(timers.contains(&TimerKind::LivenessDeadline));
    assert!(harness
        .machine
        .status(harness.now)
        .connected_at_ms
        .is_some());
}

#[test]
fn g1_ready_event_sets_gateway_ready_and_cancels_the_ready_probe() {
    let mut harness = Harness::quiet();
    harness.start_to_running();
    let epoch = harness.epoch();
    harness.send(Event::GatewayReadySignal {
        epoch,
        source: ReadySource::ReadyEvent,
    });
    assert!(harness.machine.status(harness.now).gateway_ready);
    assert!(!harness
        .machine
        .armed_timers()
        .contains(&TimerKind::ReadyProbe));
}

#[test]
fn g2_handshake_snapshot_counts_as_ready_only_when_configured() {
    let mut harness = Harness::quiet();
    harness.command(Command::Start);
    harness.probe_free();
    harness.spawned();
    harness.ready();
    let epoch = harness.epoch();
    harness.send(Event::HandshakeCompleted {
        epoch,
        handshake: Handshake {
            protocol: 4,
            has_snapshot: true,
            ..Handshake::default()
        },
    });
    assert!(
        !harness.machine.status(harness.now).gateway_ready,
        "off by default: every hello-ok of a current gateway carries a snapshot"
    );
    let mut config = SupervisorConfig::default();
    config.ready.snapshot_counts_as_ready = true;
    let mut harness = Harness::new(config);
    harness.command(Command::Start);
    harness.probe_free();
    harness.spawned();
    harness.ready();
    let epoch = harness.epoch();
    harness.send(Event::HandshakeCompleted {
        epoch,
        handshake: Handshake {
            protocol: 4,
            has_snapshot: true,
            ..Handshake::default()
        },
    });
    assert!(harness.machine.status(harness.now).gateway_ready);
}

// ---------------------------------------------------------------------------------------------
// H: heartbeat
// ---------------------------------------------------------------------------------------------

#[test]
fn h1_pings_every_interval() {
    let mut harness = Harness::quiet();
    harness.start_to_running();
    harness.advance(30_000);
    assert_eq!(
        harness.all_count(|effect| matches!(effect, Effect::SendPing)),
        1
    );
    harness.advance(30_000);
    assert_eq!(
        harness.all_count(|effect| matches!(effect, Effect::SendPing)),
        2
    );
}

#[test]
fn h2_three_misses_alone_restart_nothing() {
    // Revision 2 (D1): misses are counted and published, never a restart by themselves. With no
    // process evidence and a probe that answers, ten minutes of silence restart nothing.
    let mut harness = Harness::quiet();
    harness.probes = ProbeMode::Answer(20);
    harness.start_to_running();
    harness.advance(30_000 * 4);
    assert!(harness.machine.diagnostics().consecutive_heartbeat_misses >= 3);
    harness.advance(600_000);
    assert_eq!(
        harness.all_count(|effect| matches!(effect, Effect::TerminateProcess { .. })),
        0
    );
    assert_eq!(harness.state(), LifecycleState::Running);
}

#[test]
fn h2_windows_without_process_evidence_takes_the_probe_path() {
    let mut harness = Harness::new(SupervisorConfig::windows());
    harness.probes = ProbeMode::Answer(20);
    harness.start_to_running();
    harness.advance(60_000 * 7);
    assert_eq!(
        harness.all_count(|effect| matches!(effect, Effect::SampleProcess { .. })),
        0,
        "no /proc on Windows"
    );
    assert_eq!(
        harness.all_count(|effect| matches!(effect, Effect::TerminateProcess { .. })),
        0
    );
    assert_eq!(harness.state(), LifecycleState::Running);
}

#[test]
fn h3_proof_of_life_resets_misses() {
    let mut harness = Harness::quiet();
    harness.start_to_running();
    for _ in 0..10 {
        harness.advance(30_000);
        let epoch = harness.epoch();
        harness.send(Event::ProofOfLife { epoch });
    }
    assert_eq!(
        harness.all_count(|effect| matches!(effect, Effect::TerminateProcess { .. })),
        0
    );
    assert_eq!(
        harness.machine.diagnostics().consecutive_heartbeat_misses,
        0
    );
}

#[test]
fn h4_health_check_reports_a_closed_socket() {
    let mut harness = Harness::quiet();
    harness.start_to_running();
    harness.advance(30_000);
    assert!(harness
        .all
        .iter()
        .any(|effect| matches!(effect, Effect::CheckSocket { .. })));
    let epoch = harness.epoch();
    harness.send(Event::SocketChecked { epoch, open: false });
    assert!(harness.last_has(|effect| matches!(effect, Effect::Publish(Notice::Error { .. }))));
}

// ---------------------------------------------------------------------------------------------
// T: stop
// ---------------------------------------------------------------------------------------------

#[test]
fn t1_stop_clears_every_timer_and_disables_reconnect() {
    let mut harness = Harness::quiet();
    harness.start_to_running();
    harness.command(Command::DebouncedRestart { delay_ms: None });
    harness.command(Command::DebouncedReload {
        delay_ms: None,
        policy: hybrid(),
    });
    harness.command(Command::Stop);
    assert!(!harness.machine.auto_reconnect());
    let pid = harness.terminate_pid().expect("terminate");
    harness.exit(pid, 0);
    assert!(
        harness.machine.armed_timers().is_empty(),
        "{:?}",
        harness.machine.armed_timers()
    );
}

#[test]
fn t2_external_gateway_is_asked_to_shut_down_until_unsupported() {
    let mut config = SupervisorConfig::default();
    config.reconnect.jitter = 0.0;
    let mut harness = Harness::new(config);
    let attach = |harness: &mut Harness| {
        harness.command(Command::Start);
        let epoch = harness.epoch();
        harness.send(Event::PortProbed {
            epoch,
            probe: PortProbe {
                listeners: vec![Listener {
                    pid: Some(55),
                    program: Some("node".into()),
                    ours_by_record: false,
                }],
                answers_as_gateway: true,
            },
        });
        harness.handshake();
    };
    attach(&mut harness);
    harness.command(Command::Stop);
    assert!(harness.last_has(|effect| matches!(
        effect,
        Effect::RequestExternalShutdown {
            timeout_ms: 5_000,
            ..
        }
    )));
    let epoch = harness.epoch();
    harness.send(Event::ExternalShutdownFinished {
        epoch,
        outcome: ExternalShutdownOutcome::Unsupported,
    });
    assert_eq!(harness.state(), LifecycleState::Stopped);
    attach(&mut harness);
    harness.command(Command::Stop);
    assert!(!harness.last_has(|effect| matches!(effect, Effect::RequestExternalShutdown { .. })));
    assert_eq!(harness.state(), LifecycleState::Stopped);
}

#[test]
fn t3_stop_closes_the_socket_at_once() {
    let mut harness = Harness::quiet();
    harness.start_to_running();
    harness.command(Command::Stop);
    assert!(harness.last_has(|effect| matches!(effect, Effect::CloseConnection)));
}

#[test]
fn t4_stop_terminates_the_owned_process_with_grace() {
    let mut harness = Harness::quiet();
    let pid = harness.start_to_running();
    harness.command(Command::Stop);
    assert!(harness.last_has(
        |effect| matches!(effect, Effect::TerminateProcess { pid: p, grace_ms: 5_000 } if *p == pid)
    ));
    assert_eq!(harness.leaf(), "stopping");
    harness.exit(pid, 0);
    assert_eq!(harness.state(), LifecycleState::Stopped);
}

#[test]
fn t5_stop_rejects_pending_rpcs_and_clears_status() {
    let mut harness = Harness::quiet();
    let pid = harness.start_to_running();
    let reply = harness.command(Command::Stop);
    harness.exit(pid, 0);
    assert!(harness.last_has(|effect| matches!(
        effect,
        Effect::FailPendingRpcs {
            error: RpcError::Stopped
        }
    )));
    let status = harness.machine.status(harness.now);
    assert_eq!(status.state, LifecycleState::Stopped);
    assert_eq!(status.pid, None);
    assert_eq!(status.connected_at_ms, None);
    assert_eq!(status.uptime_ms, None);
    assert_eq!(status.error, None);
    assert!(!status.gateway_ready);
    assert_eq!(harness.reply_of(reply), Some(&CommandOutcome::Completed));
}

#[test]
fn t5_stop_drops_a_deferred_restart() {
    let mut harness = Harness::quiet();
    harness.command(Command::Start);
    harness.command(Command::Restart);
    assert!(harness.machine.deferred_restart_since().is_some());
    harness.command(Command::Stop);
    assert_eq!(harness.machine.deferred_restart_since(), None);
}

#[test]
fn t6_force_terminate_kills_only_an_owned_process() {
    let mut harness = Harness::quiet();
    let reply = harness.command(Command::ForceTerminate);
    assert!(matches!(
        harness.reply_of(reply),
        Some(CommandOutcome::Ignored { .. })
    ));
    let pid = harness.start_to_running();
    let reply = harness.command(Command::ForceTerminate);
    assert_eq!(harness.reply_of(reply), Some(&CommandOutcome::Completed));
    assert!(harness
        .last_has(|effect| matches!(effect, Effect::ForceKillProcess { pid: p } if *p == pid)));
    assert_eq!(harness.machine.status(harness.now).pid, None);
}

// ---------------------------------------------------------------------------------------------
// R: restart
// ---------------------------------------------------------------------------------------------

#[test]
fn r1_restart_mid_flight_is_deferred_with_its_request_time() {
    let mut harness = Harness::quiet();
    harness.command(Command::Start);
    harness.now += 7;
    let reply = harness.command(Command::Restart);
    assert_eq!(harness.reply_of(reply), Some(&CommandOutcome::Deferred));
    assert_eq!(harness.machine.deferred_restart_since(), Some(harness.now));
}

#[test]
fn r2_restart_during_a_restart_joins_it() {
    let mut harness = Harness::quiet();
    let pid = harness.start_to_running();
    harness.advance(10_000);
    let first = harness.command(Command::Restart);
    assert_eq!(harness.leaf(), "stopping");
    let second = harness.command(Command::Restart);
    harness.exit(pid, 0);
    harness.run_start_flow();
    assert_eq!(harness.reply_of(first), Some(&CommandOutcome::Completed));
    assert_eq!(harness.reply_of(second), Some(&CommandOutcome::Completed));
    assert_eq!(harness.spawns(), 2, "one restart cycle, not two");
}

#[test]
fn r3_restarts_within_the_cooldown_are_suppressed_and_counted() {
    let mut harness = Harness::quiet();
    let pid = harness.start_to_running();
    harness.command(Command::Restart);
    harness.exit(pid, 0);
    harness.run_start_flow();
    harness.now += 1_000;
    let reply = harness.command(Command::Restart);
    assert_eq!(
        harness.reply_of(reply),
        Some(&CommandOutcome::Suppressed {
            retry_after_ms: 1_500
        })
    );
    let counters = harness.machine.restart_counters();
    assert_eq!((counters.executed, counters.suppressed), (1, 1));
}

#[test]
fn r4_failed_restart_reenables_auto_reconnect_and_schedules_it() {
    let mut harness = Harness::quiet();
    let pid = harness.start_to_running();
    let reply = harness.command(Command::Restart);
    harness.exit(pid, 0);
    let epoch = harness.epoch();
    harness.send(Event::StepFailed {
        epoch,
        failure: StartFailure::SpawnFailed {
            message: "gone".into(),
        },
    });
    assert!(matches!(
        harness.reply_of(reply),
        Some(CommandOutcome::Failed { .. })
    ));
    assert!(harness.machine.auto_reconnect());
    assert_eq!(harness.state(), LifecycleState::Reconnecting);
}

#[test]
fn r5_successful_restart_records_completion_and_counts() {
    let mut harness = Harness::quiet();
    let pid = harness.start_to_running();
    harness.command(Command::Restart);
    harness.exit(pid, 0);
    harness.run_start_flow();
    assert_eq!(harness.machine.restart_counters().executed, 1);
}

#[test]
fn r6_deferred_restart_dropped_when_a_restart_completed_after_the_request() {
    let mut harness = Harness::quiet();
    let pid = harness.start_to_running();
    harness.advance(10_000);
    // In-place restart: 1012, then the deferred restart asked during the reconnect.
    harness.socket_closed(1012);
    harness.command(Command::Restart);
    assert!(harness.machine.deferred_restart_since().is_some());
    // The reconnect (1 s) comes well within the in-place restart bound (F5, 30 s).
    harness.advance(1_000);
    harness.probe_free();
    harness.ready();
    harness.handshake();
    // Reconnecting to our own process counts as a completed restart (R5): dropped.
    assert_eq!(harness.machine.deferred_restart_since(), None);
    assert_eq!(harness.state(), LifecycleState::Running);
    assert_eq!(harness.machine.status(harness.now).pid, Some(pid));
    assert_eq!(
        harness.all_count(|effect| matches!(effect, Effect::TerminateProcess { .. })),
        0
    );
}

#[test]
fn r6_deferred_restart_dropped_when_auto_reconnect_is_off() {
    let mut harness = Harness::quiet();
    harness.command(Command::Start);
    harness.command(Command::Restart);
    harness.command(Command::Stop);
    harness.command(Command::Start);
    harness.run_start_flow();
    assert_eq!(
        harness.all_count(|effect| matches!(effect, Effect::TerminateProcess { .. })),
        0
    );
}

#[test]
fn r6_deferred_restart_executes_exactly_once() {
    let mut harness = Harness::quiet();
    harness.command(Command::Start);
    harness.command(Command::Restart);
    harness.command(Command::Restart);
    let pid = harness.run_start_flow();
    assert_eq!(harness.terminate_pid(), Some(pid));
    harness.exit(pid, 0);
    harness.run_start_flow();
    assert_eq!(
        harness.all_count(|effect| matches!(effect, Effect::TerminateProcess { .. })),
        1
    );
}

#[test]
fn r7_debounced_restarts_coalesce_into_one() {
    let mut harness = Harness::quiet();
    harness.start_to_running();
    harness.advance(10_000);
    for _ in 0..5 {
        harness.command(Command::DebouncedRestart { delay_ms: None });
        harness.advance(1_000);
    }
    assert_eq!(
        harness.all_count(|effect| matches!(effect, Effect::TerminateProcess { .. })),
        0
    );
    harness.advance(1_000);
    assert_eq!(
        harness.all_count(|effect| matches!(effect, Effect::TerminateProcess { .. })),
        1
    );
}

// ---------------------------------------------------------------------------------------------
// P: reload
// ---------------------------------------------------------------------------------------------

#[test]
fn p3_reload_signals_the_process_and_applies_in_place() {
    let mut harness = Harness::quiet();
    let pid = harness.start_to_running();
    harness.advance(10_000);
    let reply = harness.command(Command::Reload { policy: hybrid() });
    assert!(harness
        .last_has(|effect| matches!(effect, Effect::SignalProcess { pid: p, .. } if *p == pid)));
    let epoch = harness.epoch();
    harness.send(Event::SignalSent {
        epoch,
        outcome: Ok(()),
    });
    harness.advance(1_500);
    assert_eq!(harness.reply_of(reply), Some(&CommandOutcome::Completed));
    assert_eq!(
        harness.all_count(|effect| matches!(effect, Effect::TerminateProcess { .. })),
        0
    );
}

#[test]
fn p3_reload_skipped_right_after_connect() {
    let mut harness = Harness::quiet();
    harness.start_to_running();
    harness.advance(7_999);
    let reply = harness.command(Command::Reload { policy: hybrid() });
    assert!(matches!(
        harness.reply_of(reply),
        Some(CommandOutcome::Ignored { .. })
    ));
}

#[test]
fn p3_reload_mode_restart_or_off_restarts() {
    for mode in [ReloadMode::Restart, ReloadMode::Off] {
        let mut harness = Harness::quiet();
        harness.start_to_running();
        harness.advance(10_000);
        harness.command(Command::Reload {
            policy: ReloadPolicy {
                mode,
                debounce_ms: 0,
            },
        });
        assert!(harness.terminate_pid().is_some(), "{mode:?}");
    }
}

#[test]
fn p3_reload_when_not_running_restarts() {
    let mut harness = Harness::quiet();
    harness.command(Command::Reload { policy: hybrid() });
    assert_eq!(harness.leaf(), "probing_port");
}

#[test]
fn p3_reload_mid_flight_is_deferred() {
    let mut harness = Harness::quiet();
    harness.command(Command::Start);
    let reply = harness.command(Command::Reload { policy: hybrid() });
    assert_eq!(harness.reply_of(reply), Some(&CommandOutcome::Deferred));
}

#[test]
fn p3_windows_reload_restarts() {
    let mut harness = Harness::new(SupervisorConfig::windows());
    harness.start_to_running();
    harness.advance(10_000);
    harness.command(Command::Reload { policy: hybrid() });
    assert!(harness.terminate_pid().is_some());
}

#[test]
fn p3_signal_error_falls_back_to_restart() {
    let mut harness = Harness::quiet();
    harness.start_to_running();
    harness.advance(10_000);
    harness.command(Command::Reload { policy: hybrid() });
    let epoch = harness.epoch();
    harness.send(Event::SignalSent {
        epoch,
        outcome: Err(SignalFailure::NoProcess),
    });
    assert!(harness.terminate_pid().is_some());
}

/// Found by the model test: a reload whose fallback restart the governor suppresses tells its
/// caller so (R3), not "deferred": nothing would ever run a deferred restart here.
#[test]
fn p3_a_fallback_restart_suppressed_by_the_governor_answers_suppressed() {
    let mut config = SupervisorConfig::default();
    config.reconnect.jitter = 0.0;
    config.restart.cooldown_ms = 60_000;
    let mut harness = Harness::new(config);
    let pid = harness.start_to_running();
    harness.command(Command::Restart);
    harness.exit(pid, 143);
    harness.probe_free();
    harness.spawned();
    harness.ready();
    harness.handshake();
    harness.advance(10_000);
    let reply = harness.command(Command::Reload { policy: hybrid() });
    let epoch = harness.epoch();
    harness.send(Event::SignalSent {
        epoch,
        outcome: Err(SignalFailure::NotDelivered {
            message: "EPERM".into(),
        }),
    });
    assert_eq!(
        harness.reply_of(reply),
        Some(&CommandOutcome::Suppressed {
            retry_after_ms: 50_000
        })
    );
    assert_eq!(harness.machine.deferred_restart_since(), None);
}

#[test]
fn p4_in_place_restart_waits_for_the_reconnect_instead_of_restarting() {
    let mut harness = Harness::quiet();
    let pid = harness.start_to_running();
    harness.advance(10_000);
    let reply = harness.command(Command::Reload { policy: hybrid() });
    let epoch = harness.epoch();
    harness.send(Event::SignalSent {
        epoch,
        outcome: Ok(()),
    });
    harness.send(Event::ShutdownAnnounced {
        epoch,
        restart_expected_ms: Some(1_500),
    });
    harness.socket_closed(1012);
    // A restart asked for meanwhile must not stack on the reload.
    harness.command(Command::Restart);
    harness.advance(2_000);
    harness.probe_free();
    harness.ready();
    harness.handshake();
    assert_eq!(harness.reply_of(reply), Some(&CommandOutcome::Completed));
    assert_eq!(harness.machine.status(harness.now).pid, Some(pid));
    assert_eq!(harness.spawns(), 1);
    assert_eq!(
        harness.all_count(|effect| matches!(effect, Effect::TerminateProcess { .. })),
        0
    );
}

#[test]
fn p4_reload_falls_back_to_restart_when_the_reconnect_never_comes() {
    let mut harness = Harness::quiet();
    harness.start_to_running();
    harness.advance(10_000);
    harness.command(Command::Reload { policy: hybrid() });
    let epoch = harness.epoch();
    harness.send(Event::SignalSent {
        epoch,
        outcome: Ok(()),
    });
    harness.send(Event::ShutdownAnnounced {
        epoch,
        restart_expected_ms: Some(1_500),
    });
    // The gateway announced a restart but the socket stays up and nothing happens: judged at
    // the later of its announced time + margin and the in-place bound (F5, 30 s).
    harness.advance(1_500 + 10_000);
    assert_eq!(terminates(&harness), 0);
    harness.advance(30_000 - 11_500);
    assert!(harness.all_count(|effect| matches!(effect, Effect::TerminateProcess { .. })) == 1);
}

/// P4 with `reload.signal_restarts_in_place` (the OpenClaw profile's setting).
fn in_place_harness() -> Harness {
    let mut config = SupervisorConfig::default();
    config.reconnect.jitter = 0.0;
    config.reload.signal_restarts_in_place = true;
    Harness::new(config)
}

#[test]
fn p4_a_reload_that_restarts_in_place_answers_after_the_reconnect_not_after_the_fixed_check() {
    let mut harness = in_place_harness();
    let pid = harness.start_to_running();
    harness.advance(10_000);
    let reply = harness.command(Command::Reload { policy: hybrid() });
    let epoch = harness.epoch();
    harness.send(Event::SignalSent {
        epoch,
        outcome: Ok(()),
    });
    // A loaded gateway takes longer than the P3 check to announce its restart: the reload must
    // not answer `Completed` meanwhile (the real gateway's interop run 1 and 3 saw exactly that).
    let check = harness.machine.config().reload.post_signal_check_ms;
    harness.advance(check + 1_000);
    assert_eq!(harness.reply_of(reply), None, "answered before the restart");
    harness.send(Event::ShutdownAnnounced {
        epoch,
        restart_expected_ms: Some(1_500),
    });
    harness.socket_closed(1012);
    harness.advance(2_000);
    harness.probe_free();
    harness.ready();
    harness.handshake();
    assert_eq!(harness.reply_of(reply), Some(&CommandOutcome::Completed));
    assert_eq!(harness.machine.status(harness.now).pid, Some(pid));
    assert_eq!(harness.spawns(), 1);
    assert_eq!(
        harness.all_count(|effect| matches!(effect, Effect::TerminateProcess { .. })),
        0
    );
}

#[test]
fn p4_without_an_announced_restart_the_reload_is_judged_after_the_announce_timeout() {
    let mut harness = in_place_harness();
    let pid = harness.start_to_running();
    harness.advance(10_000);
    let reply = harness.command(Command::Reload { policy: hybrid() });
    let epoch = harness.epoch();
    harness.send(Event::SignalSent {
        epoch,
        outcome: Ok(()),
    });
    let timeout = harness.machine.config().reload.restart_announce_timeout_ms;
    harness.advance(timeout - 1);
    assert_eq!(harness.reply_of(reply), None);
    // Still running with the signalled pid: applied in place (P3), no restart.
    harness.advance(1);
    assert_eq!(harness.reply_of(reply), Some(&CommandOutcome::Completed));
    assert_eq!(harness.machine.status(harness.now).pid, Some(pid));
    assert_eq!(
        harness.all_count(|effect| matches!(effect, Effect::TerminateProcess { .. })),
        0
    );
}

#[test]
fn p4_when_the_in_place_restart_kills_the_gateway_the_new_gateway_answers_the_reload() {
    let mut harness = in_place_harness();
    let pid = harness.start_to_running();
    harness.advance(20_000);
    let reply = harness.command(Command::Reload { policy: hybrid() });
    let epoch = harness.epoch();
    harness.send(Event::SignalSent {
        epoch,
        outcome: Ok(()),
    });
    harness.send(Event::ShutdownAnnounced {
        epoch,
        restart_expected_ms: Some(1_500),
    });
    harness.socket_closed(1012);
    harness.advance(1_000);
    // The reconnect finds our process not listening and waits for it (L5 step 2) …
    harness.probe_free();
    assert_eq!(harness.leaf(), "awaiting_ready");
    // … but its restart fails and it exits; a new gateway is spawned.
    harness.exit(pid, 1);
    assert_eq!(
        harness.reply_of(reply),
        None,
        "answered before the new gateway runs"
    );
    harness.probe_free();
    let new_pid = harness.spawned();
    harness.ready();
    harness.handshake();
    assert_eq!(harness.reply_of(reply), Some(&CommandOutcome::Completed));
    assert_eq!(harness.machine.status(harness.now).pid, Some(new_pid));
    // No restart stacked on top: the reload's deadline (1.5 s + 10 s margin) is gone with it.
    // (Less than a heartbeat interval, which would count misses: nothing answers pings here.)
    harness.advance(20_000);
    assert_eq!(harness.spawns(), 2);
    assert_eq!(
        harness.all_count(|effect| matches!(effect, Effect::TerminateProcess { .. })),
        0
    );
    assert_eq!(harness.state(), LifecycleState::Running);
}

#[test]
fn p5_debounced_reloads_coalesce_and_restart_mode_routes_to_restart() {
    let mut harness = Harness::quiet();
    let pid = harness.start_to_running();
    harness.advance(10_000);
    for _ in 0..3 {
        harness.command(Command::DebouncedReload {
            delay_ms: None,
            policy: hybrid(),
        });
        harness.advance(500);
    }
    harness.advance(1_200);
    let signals = harness
        .all_count(|effect| matches!(effect, Effect::SignalProcess { pid: p, .. } if *p == pid));
    assert_eq!(signals, 1);

    let mut harness = Harness::quiet();
    harness.start_to_running();
    harness.advance(10_000);
    harness.command(Command::DebouncedReload {
        delay_ms: Some(300),
        policy: ReloadPolicy {
            mode: ReloadMode::Restart,
            debounce_ms: 1_200,
        },
    });
    harness.advance(300);
    assert!(harness.terminate_pid().is_some());
}

// ---------------------------------------------------------------------------------------------
// N: auto-reconnect
// ---------------------------------------------------------------------------------------------

#[test]
fn n1_exit_and_socket_close_ask_for_reconnect() {
    let mut harness = Harness::quiet();
    let pid = harness.start_to_running();
    harness.exit(pid, 1);
    assert_eq!(harness.state(), LifecycleState::Reconnecting);

    let mut harness = Harness::quiet();
    harness.start_to_running();
    harness.socket_closed(1006);
    assert_eq!(harness.state(), LifecycleState::Reconnecting);
}

#[test]
fn n1_windows_reconnects_on_socket_close_only_for_1012() {
    let mut harness = Harness::new(SupervisorConfig::windows());
    harness.start_to_running();
    harness.socket_closed(1006);
    assert_eq!(harness.state(), LifecycleState::Stopped);

    let mut harness = Harness::new(SupervisorConfig::windows());
    harness.start_to_running();
    harness.socket_closed(1012);
    assert_eq!(harness.state(), LifecycleState::Reconnecting);
}

#[test]
fn n2_delays_double_up_to_the_cap_and_give_up_at_the_maximum() {
    let mut config = SupervisorConfig::default();
    config.reconnect.jitter = 0.0;
    config.reconnect.intensity_max_restarts = 0;
    let mut harness = Harness::new(config);
    let reply = harness.command(Command::Start);
    let _ = reply;
    let pid = harness.run_start_flow();
    harness.exit(pid, 1);
    let mut delays = Vec::new();
    for _ in 0..10 {
        assert_eq!(harness.state(), LifecycleState::Reconnecting);
        let (_, at) = harness.timers[&TimerKind::Reconnect];
        delays.push(at - harness.now);
        harness.advance(at - harness.now);
        // Every attempt fails.
        for _ in 0..3 {
            let epoch = harness.epoch();
            harness.send(Event::StepFailed {
                epoch,
                failure: StartFailure::ConnectionRefused { port: 18789 },
            });
            if harness.leaf() == "retry_waiting" {
                harness.advance(1_000);
            }
        }
    }
    assert_eq!(
        delays,
        vec![1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000, 30_000, 30_000]
    );
    assert_eq!(harness.state(), LifecycleState::Error);
    assert_eq!(
        harness.machine.status(harness.now).error.as_deref(),
        Some("Failed to reconnect after maximum attempts")
    );
}

#[test]
fn n3_reconnect_success_resets_attempts_with_seed_semantics() {
    let mut config = SupervisorConfig::default();
    config.reconnect.jitter = 0.0;
    config.reconnect.stable_uptime_ms = 0;
    let mut harness = Harness::new(config);
    let pid = harness.start_to_running();
    harness.exit(pid, 1);
    harness.advance(1_000);
    harness.run_start_flow();
    assert_eq!(harness.machine.status(harness.now).reconnect_attempts, 0);
    assert_eq!(harness.machine.reconnect_totals(), (1, 1));
}

#[test]
fn n3_timer_after_stop_does_not_start() {
    let mut harness = Harness::quiet();
    let pid = harness.start_to_running();
    harness.exit(pid, 1);
    let (timer_generation, _) = harness.timers[&TimerKind::Reconnect];
    harness.command(Command::Stop);
    harness.send(Event::TimerFired {
        timer: TimerKind::Reconnect,
        generation: timer_generation,
    });
    assert_eq!(harness.state(), LifecycleState::Stopped);
}

#[test]
fn n4_reconnect_attempts_publish_metrics() {
    let mut harness = Harness::quiet();
    let pid = harness.start_to_running();
    harness.exit(pid, 1);
    harness.advance(1_000);
    harness.run_start_flow();
    let metric = harness.all.iter().find_map(|effect| match effect {
        Effect::Publish(Notice::ReconnectMetric {
            success,
            attempt,
            max_attempts,
            delay_ms,
            attempts_total,
            successes_total,
            ..
        }) => Some((
            *success,
            *attempt,
            *max_attempts,
            *delay_ms,
            *attempts_total,
            *successes_total,
        )),
        _ => None,
    });
    assert_eq!(metric, Some((true, 1, 10, 1_000, 1, 1)));
}

#[test]
fn n5_isolated_crash_after_a_stable_run_restarts_at_once() {
    let mut harness = Harness::quiet();
    let pid = harness.start_to_running();
    harness.advance(10_000);
    harness.exit(pid, 137);
    let (_, at) = harness.timers[&TimerKind::Reconnect];
    assert_eq!(at, harness.now, "no backoff delay");
}

#[test]
fn n5_crash_right_after_start_backs_off_and_count_resets_only_after_stable_run() {
    let mut harness = Harness::quiet();
    let pid = harness.start_to_running();
    harness.exit(pid, 1);
    harness.advance(1_000);
    let pid = harness.run_start_flow();
    assert_eq!(harness.machine.status(harness.now).reconnect_attempts, 1);
    harness.now += 100;
    harness.exit(pid, 1);
    let (_, at) = harness.timers[&TimerKind::Reconnect];
    assert_eq!(at - harness.now, 2_000, "second crash backs off");
    harness.advance(2_000);
    harness.run_start_flow();
    harness.advance(10_000);
    assert_eq!(harness.machine.status(harness.now).reconnect_attempts, 0);
}

#[test]
fn n5_jitter_is_seeded_and_reproducible() {
    let run = || {
        let mut harness = Harness::new(SupervisorConfig::default());
        let pid = harness.start_to_running();
        harness.exit(pid, 1);
        let (_, at) = harness.timers[&TimerKind::Reconnect];
        at - harness.now
    };
    let first = run();
    assert_eq!(first, run());
    assert!((800..=1_200).contains(&first), "{first}");
}

#[test]
fn n5_restart_intensity_limit_ends_in_error() {
    let mut config = SupervisorConfig::default();
    config.reconnect.jitter = 0.0;
    config.reconnect.intensity_max_restarts = 2;
    config.reconnect.intensity_window_ms = 1_000_000;
    config.reconnect.max_attempts = 100;
    let mut harness = Harness::new(config);
    let mut pid = harness.start_to_running();
    for _ in 0..3 {
        harness.advance(20_000);
        harness.exit(pid, 1);
        if harness.state() != LifecycleState::Reconnecting {
            break;
        }
        let (_, at) = harness.timers[&TimerKind::Reconnect];
        harness.advance(at - harness.now);
        pid = harness.run_start_flow();
    }
    assert_eq!(harness.state(), LifecycleState::Error);
    assert!(harness
        .machine
        .status(harness.now)
        .error
        .unwrap_or_default()
        .contains("giving up"));
}

// ---------------------------------------------------------------------------------------------
// X / O
// ---------------------------------------------------------------------------------------------

#[test]
fn x2_exit_publishes_the_code_and_leaves_running() {
    let mut harness = Harness::quiet();
    let pid = harness.start_to_running();
    harness.exit(pid, 9);
    assert!(harness.last_has(|effect| matches!(
        effect,
        Effect::Publish(Notice::ProcessExit {
            code: Some(9),
            expected: false,
            ..
        })
    )));
    assert_eq!(harness.machine.owned_pid(), None);
    assert!(!harness
        .machine
        .armed_timers()
        .contains(&TimerKind::Heartbeat));
}

#[test]
fn x2_exit_of_a_process_we_do_not_own_is_dropped() {
    let mut harness = Harness::quiet();
    harness.start_to_running();
    harness.exit(99_999, 1);
    assert_eq!(harness.state(), LifecycleState::Running);
}

#[test]
fn o1_our_orphan_is_killed_before_spawning() {
    let mut harness = Harness::quiet();
    harness.command(Command::Start);
    let epoch = harness.epoch();
    harness.send(Event::PortProbed {
        epoch,
        probe: PortProbe {
            listeners: vec![Listener {
                pid: Some(321),
                program: Some("gatewarden-sim".into()),
                ours_by_record: true,
            }],
            answers_as_gateway: true,
        },
    });
    assert!(harness.last_has(
        |effect| matches!(effect, Effect::KillOrphans { pids, .. } if pids == &vec![321])
    ));
    harness.send(Event::OrphansKilled {
        epoch,
        survivors: vec![],
    });
    assert_eq!(harness.leaf(), "spawning");
}

#[test]
fn o1_unrelated_listener_is_reported_and_never_signalled() {
    let mut harness = Harness::quiet();
    let reply = harness.command(Command::Start);
    let epoch = harness.epoch();
    harness.send(Event::PortProbed {
        epoch,
        probe: PortProbe {
            listeners: vec![Listener {
                pid: Some(4242),
                program: Some("python3".into()),
                ours_by_record: false,
            }],
            answers_as_gateway: false,
        },
    });
    assert_eq!(harness.state(), LifecycleState::Error);
    assert!(!harness
        .all
        .iter()
        .any(|effect| matches!(effect, Effect::KillOrphans { .. })));
    match harness.reply_of(reply) {
        Some(CommandOutcome::Failed {
            failure:
                CommandFailure::Start {
                    failure:
                        StartFailure::PortHeldByOther {
                            pid: Some(4242),
                            program: Some(program),
                            ..
                        },
                    ..
                },
        }) => assert_eq!(program, "python3"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn o1_foreign_gateway_policy_fail_refuses_to_start() {
    let mut config = SupervisorConfig::default();
    config.orphans.foreign_gateway = ForeignGatewayPolicy::Fail;
    let mut harness = Harness::new(config);
    harness.command(Command::Start);
    let epoch = harness.epoch();
    harness.send(Event::PortProbed {
        epoch,
        probe: PortProbe {
            listeners: vec![Listener {
                pid: Some(5),
                program: Some("node".into()),
                ours_by_record: false,
            }],
            answers_as_gateway: true,
        },
    });
    assert_eq!(harness.state(), LifecycleState::Error);
}

#[test]
fn e1_stale_timer_generations_are_dropped() {
    let mut harness = Harness::quiet();
    harness.start_to_running();
    harness.send(Event::TimerFired {
        timer: TimerKind::Heartbeat,
        generation: 0,
    });
    assert!(!harness.last_has(|effect| matches!(effect, Effect::SendPing)));
}

#[test]
fn l7_auth_rejection_does_not_reconnect_forever() {
    let mut harness = Harness::quiet();
    let pid = harness.start_to_running();
    harness.exit(pid, 1);
    harness.advance(1_000);
    harness.probe_free();
    harness.spawned();
    harness.ready();
    let epoch = harness.epoch();
    harness.send(Event::StepFailed {
        epoch,
        failure: StartFailure::HandshakeRejected {
            code: "INVALID_REQUEST".into(),
            details_code: Some("AUTH_TOKEN_MISMATCH".into()),
            message: "unauthorized: gateway token mismatch".into(),
        },
    });
    assert_eq!(harness.state(), LifecycleState::Error);
    assert!(!harness.machine.auto_reconnect());
    assert!(harness
        .machine
        .status(harness.now)
        .error
        .unwrap_or_default()
        .contains("AUTH_TOKEN_MISMATCH"));
}

#[test]
fn n5_crash_seen_on_the_socket_before_the_exit_does_not_cost_an_attempt() {
    // The socket closes before the exit is reported; the reconnect probe still sees the dying
    // process's listening socket, with no visible owner.
    let mut harness = Harness::quiet();
    let pid = harness.start_to_running();
    harness.advance(10_000);
    harness.socket_closed(1006);
    harness.advance(0);
    assert_eq!(harness.leaf(), "probing_port");
    let epoch = harness.epoch();
    harness.send(Event::PortProbed {
        epoch,
        probe: PortProbe {
            listeners: vec![Listener {
                pid: None,
                program: None,
                ours_by_record: false,
            }],
            answers_as_gateway: false,
        },
    });
    assert_eq!(harness.leaf(), "awaiting_ready");
    harness.exit(pid, 137);
    assert_eq!(harness.leaf(), "probing_port", "probe again at once");
    harness.probe_free();
    assert_eq!(harness.leaf(), "spawning");
    assert_eq!(harness.machine.status(harness.now).error, None);
}

#[test]
fn o1_ownerless_listener_is_retried_not_reported_as_a_foreign_program() {
    let mut harness = Harness::quiet();
    harness.command(Command::Start);
    let epoch = harness.epoch();
    harness.send(Event::PortProbed {
        epoch,
        probe: PortProbe {
            listeners: vec![Listener {
                pid: None,
                program: None,
                ours_by_record: false,
            }],
            answers_as_gateway: false,
        },
    });
    assert_eq!(harness.leaf(), "retry_waiting");
}

#[test]
fn e1_a_spawn_superseded_by_a_stop_is_terminated_not_left_running() {
    let mut harness = Harness::quiet();
    harness.command(Command::Start);
    harness.probe_free();
    assert_eq!(harness.leaf(), "spawning");
    let spawn_epoch = harness.epoch();
    harness.command(Command::Stop);
    assert_eq!(harness.state(), LifecycleState::Stopped);
    // The spawn was already under way: its process exists although the flow is gone.
    harness.send(Event::ProcessSpawned {
        epoch: spawn_epoch,
        pid: 4_321,
    });
    assert_eq!(harness.terminate_pid(), Some(4_321), "{:?}", harness.last);
    assert_eq!(harness.state(), LifecycleState::Stopped);
    harness.exit(4_321, 0);
    assert_eq!(harness.state(), LifecycleState::Stopped);
    assert_eq!(harness.machine.status(harness.now).pid, None);
    // Nothing is owned any more: the next start spawns.
    harness.command(Command::Start);
    harness.probe_free();
    assert_eq!(harness.leaf(), "spawning");
}

#[test]
fn e1_a_spawn_superseded_by_a_newer_start_is_used_by_that_start() {
    let mut harness = Harness::quiet();
    harness.command(Command::Start);
    harness.probe_free();
    let spawn_epoch = harness.epoch();
    harness.command(Command::Stop);
    harness.command(Command::Start);
    harness.probe_free();
    assert_eq!(harness.leaf(), "spawning");
    harness.send(Event::ProcessSpawned {
        epoch: spawn_epoch,
        pid: 4_321,
    });
    assert_eq!(harness.terminate_pid(), None, "a newer start uses it");
    // The newer flow's own spawn is refused by the process actor: it waits for the adopted one.
    let epoch = harness.epoch();
    harness.send(Event::StepFailed {
        epoch,
        failure: StartFailure::SpawnFailed {
            message: "a gateway process is already owned (pid 4321)".into(),
        },
    });
    assert_eq!(harness.leaf(), "awaiting_ready");
    harness.ready();
    harness.handshake();
    assert_eq!(harness.state(), LifecycleState::Running);
    assert_eq!(harness.machine.status(harness.now).pid, Some(4_321));
}

#[test]
fn l5_step2_owned_process_that_never_becomes_ready_is_replaced() {
    let mut harness = Harness::quiet();
    let pid = harness.start_to_running();
    // An in-place restart that leaves the process alive without a listener (invalid config).
    harness.socket_closed(1012);
    harness.advance(1_000);
    harness.probe_free();
    assert_eq!(harness.leaf(), "awaiting_ready");
    let epoch = harness.epoch();
    harness.send(Event::StepFailed {
        epoch,
        failure: StartFailure::ReadyTimeout { waited_ms: 480_000 },
    });
    assert_eq!(harness.terminate_pid(), Some(pid), "{:?}", harness.last);
    harness.exit(pid, 0);
    assert_eq!(harness.leaf(), "probing_port");
    harness.probe_free();
    let replacement = harness.spawned();
    harness.ready();
    harness.handshake();
    assert_eq!(harness.state(), LifecycleState::Running);
    assert_eq!(harness.machine.status(harness.now).pid, Some(replacement));
    assert_eq!(harness.spawns(), 2);
}

// ---------------------------------------------------------------------------------------------
// Revision 2 — failures that retrying cannot fix (F1–F9, X3 revised)
// ---------------------------------------------------------------------------------------------

const INVALID_CONFIG_LINE: &str = "Gateway failed to start: Invalid config at /s/openclaw.json:";
const LOCK_LINE: &str =
    "Doctor could not enter maintenance. StateDatabaseCoordinatorContentionError: \
                         another OpenClaw process owns gateway-lifecycle (pid 5150)";
const NODE20_LINE: &str = "Error: Node 20.x: node:sqlite is unavailable; use 24.16+";

fn stderr(harness: &mut Harness, pid: u32, line: &str) {
    harness.send(Event::StderrLine {
        pid,
        line: line.into(),
    });
}

fn doctor_runs(harness: &Harness) -> usize {
    harness.all_count(|effect| matches!(effect, Effect::RunDoctorRepair { .. }))
}

fn digest_reads(harness: &Harness) -> usize {
    harness.all_count(|effect| matches!(effect, Effect::ReadConfigDigest { .. }))
}

fn digest(harness: &mut Harness, digest: &str) {
    let epoch = harness.epoch();
    harness.send(Event::ConfigDigestRead {
        epoch,
        digest: Some(digest.into()),
    });
}

fn gave_up(harness: &Harness) -> bool {
    harness
        .all
        .iter()
        .any(|effect| matches!(effect, Effect::Publish(Notice::GaveUp { .. })))
}

fn error_text(harness: &Harness) -> String {
    harness
        .machine
        .status(harness.now)
        .error
        .unwrap_or_default()
}

/// Start → a spawn that exits 78 with the invalid-config line → the doctor reads digest
/// `before`, runs, leaves digest `after` → probing again.
fn doctor_once(harness: &mut Harness, before: &str, after: &str) {
    harness.probe_free();
    let pid = harness.spawned();
    stderr(harness, pid, INVALID_CONFIG_LINE);
    harness.exit(pid, 78);
    assert_eq!(harness.leaf(), "repairing");
    assert!(harness.last_has(|effect| matches!(effect, Effect::ReadConfigDigest { .. })));
    digest(harness, before);
    assert!(harness.last_has(|effect| matches!(effect, Effect::RunDoctorRepair { .. })));
    let epoch = harness.epoch();
    harness.send(Event::RepairFinished {
        epoch,
        outcome: Ok(()),
    });
    assert!(harness.last_has(|effect| matches!(effect, Effect::ReadConfigDigest { .. })));
    digest(harness, after);
    assert_eq!(harness.leaf(), "probing_port");
}

#[test]
fn x3_stderr_tail_is_cleared_when_a_retry_reuses_the_live_process() {
    let mut harness = Harness::quiet();
    harness.command(Command::Start);
    harness.probe_free();
    let pid = harness.spawned();
    harness.ready();
    let epoch = harness.epoch();
    harness.send(Event::StepFailed {
        epoch,
        failure: StartFailure::HandshakeTimeout,
    });
    assert_eq!(harness.leaf(), "retry_waiting");
    // A late line of the first attempt arrives while waiting to retry.
    stderr(&mut harness, pid, INVALID_CONFIG_LINE);
    harness.advance(1_000);
    assert_eq!(harness.leaf(), "probing_port");
    // The retry finds the same live process listening: no spawn, a new attempt all the same.
    harness.send(Event::PortProbed {
        epoch,
        probe: PortProbe {
            listeners: vec![Listener {
                pid: Some(pid),
                program: Some("node".into()),
                ours_by_record: false,
            }],
            answers_as_gateway: true,
        },
    });
    assert_eq!(harness.leaf(), "connecting");
    harness.send(Event::StepFailed {
        epoch,
        failure: StartFailure::HandshakeTimeout,
    });
    // The earlier attempt's line must not send this one to the doctor.
    assert_eq!(harness.leaf(), "retry_waiting");
    assert_eq!(digest_reads(&harness), 0);
    assert_eq!(harness.spawns(), 1);
}

#[test]
fn f1_lock_held_exit_78_fails_at_once_naming_the_holder_without_doctor_or_retry() {
    let mut harness = Harness::quiet();
    let reply = harness.command(Command::Start);
    harness.probe_free();
    let pid = harness.spawned();
    stderr(&mut harness, pid, INVALID_CONFIG_LINE);
    stderr(&mut harness, pid, LOCK_LINE);
    harness.exit(pid, 78);
    assert_eq!(harness.state(), LifecycleState::Error);
    let error = error_text(&harness);
    assert!(
        error.contains("owns gateway-lifecycle (pid 5150)"),
        "{error}"
    );
    assert!(error.contains("lock"), "{error}");
    assert_eq!(doctor_runs(&harness), 0);
    assert_eq!(digest_reads(&harness), 0);
    assert!(!harness.machine.auto_reconnect());
    assert!(harness.machine.gave_up());
    assert!(gave_up(&harness));
    harness.advance(60_000);
    assert_eq!(harness.spawns(), 1, "no retry");
    assert!(matches!(
        harness.reply_of(reply),
        Some(CommandOutcome::Failed { .. })
    ));
}

#[test]
fn f1_config_still_invalid_after_the_doctor_is_an_error_without_retry() {
    let mut harness = Harness::quiet();
    harness.command(Command::Start);
    doctor_once(&mut harness, "sha256:a", "sha256:b");
    harness.probe_free();
    let pid = harness.spawned();
    stderr(&mut harness, pid, INVALID_CONFIG_LINE);
    harness.exit(pid, 78);
    assert_eq!(harness.state(), LifecycleState::Error);
    let error = error_text(&harness);
    assert!(error.contains("still invalid"), "{error}");
    assert!(
        error.contains("Invalid config at /s/openclaw.json"),
        "{error}"
    );
    assert!(!harness.machine.auto_reconnect());
    assert!(harness.machine.gave_up());
    harness.advance(120_000);
    assert_eq!(doctor_runs(&harness), 1);
    assert_eq!(harness.spawns(), 2, "no retry after the doctor");
}

#[test]
fn f2_doctor_never_runs_twice_on_the_same_config_across_start_flows() {
    let mut harness = Harness::quiet();
    harness.command(Command::Start);
    doctor_once(&mut harness, "sha256:a", "sha256:b");
    harness.probe_free();
    harness.spawned();
    harness.ready();
    harness.handshake();
    assert_eq!(harness.state(), LifecycleState::Running);
    harness.command(Command::Stop);
    let pid = harness.machine.owned_pid().expect("owned");
    harness.exit(pid, 0);
    assert_eq!(harness.state(), LifecycleState::Stopped);
    // A new start flow meets the config the doctor left behind, still invalid: no second run.
    harness.command(Command::Start);
    harness.probe_free();
    let pid = harness.spawned();
    stderr(&mut harness, pid, INVALID_CONFIG_LINE);
    harness.exit(pid, 78);
    assert_eq!(harness.leaf(), "repairing");
    digest(&mut harness, "sha256:b");
    assert_eq!(harness.state(), LifecycleState::Error);
    assert_eq!(doctor_runs(&harness), 1);
    assert!(!harness.machine.auto_reconnect());
    // New content (the user edited the file) may be repaired.
    harness.command(Command::Start);
    harness.probe_free();
    let pid = harness.spawned();
    stderr(&mut harness, pid, INVALID_CONFIG_LINE);
    harness.exit(pid, 78);
    digest(&mut harness, "sha256:c");
    assert_eq!(doctor_runs(&harness), 2);
}

#[test]
fn f2_exit_78_while_running_with_a_config_the_doctor_saw_goes_to_error() {
    let mut harness = Harness::quiet();
    harness.command(Command::Start);
    doctor_once(&mut harness, "sha256:a", "sha256:b");
    harness.probe_free();
    let pid = harness.spawned();
    harness.ready();
    harness.handshake();
    stderr(&mut harness, pid, INVALID_CONFIG_LINE);
    harness.exit(pid, 78);
    assert!(harness.last_has(|effect| matches!(effect, Effect::ReadConfigDigest { .. })));
    assert_eq!(harness.state(), LifecycleState::Reconnecting);
    digest(&mut harness, "sha256:b");
    assert_eq!(harness.state(), LifecycleState::Error);
    assert!(error_text(&harness).contains("Invalid config"));
    assert!(!harness.machine.auto_reconnect());
    assert!(!harness
        .machine
        .armed_timers()
        .contains(&TimerKind::Reconnect));
    harness.advance(120_000);
    assert_eq!(harness.spawns(), 2, "no reconnect loop");
    assert_eq!(doctor_runs(&harness), 1);
}

#[test]
fn f2_exit_78_while_running_with_new_content_reconnects_as_usual() {
    let mut harness = Harness::quiet();
    let pid = harness.start_to_running();
    harness.exit(pid, 78);
    digest(&mut harness, "sha256:new");
    assert_eq!(harness.state(), LifecycleState::Reconnecting);
    assert!(harness.machine.auto_reconnect());
}

#[test]
fn f3_runtime_incompatibility_fails_at_once_with_the_gateways_line() {
    let mut harness = Harness::quiet();
    let reply = harness.command(Command::Start);
    harness.probe_free();
    let pid = harness.spawned();
    stderr(&mut harness, pid, NODE20_LINE);
    stderr(&mut harness, pid, "    at file:///x/openclaw.mjs:3:9");
    stderr(&mut harness, pid, "Node.js v20.11.1");
    harness.exit(pid, 1);
    assert_eq!(harness.state(), LifecycleState::Error);
    let error = error_text(&harness);
    assert!(
        error.contains("node:sqlite is unavailable; use 24.16+"),
        "{error}"
    );
    assert_eq!(doctor_runs(&harness), 0);
    assert!(!harness.machine.auto_reconnect());
    harness.advance(60_000);
    assert_eq!(harness.spawns(), 1, "no retry");
    match harness.reply_of(reply) {
        Some(CommandOutcome::Failed {
            failure:
                CommandFailure::Start {
                    failure: StartFailure::RuntimeIncompatible { message },
                    ..
                },
        }) => assert!(message.contains("24.16+")),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn f3_runtime_refused_before_spawn_is_not_retried() {
    let mut harness = Harness::quiet();
    harness.command(Command::Start);
    let epoch = harness.epoch();
    harness.send(Event::StepFailed {
        epoch,
        failure: StartFailure::RuntimeIncompatible {
            message: "Node v20.11.1 (/usr/bin/node) does not satisfy openclaw's engines.node \
                      >=24.16.0 <25 || >=26.1.0"
                .into(),
        },
    });
    assert_eq!(harness.state(), LifecycleState::Error);
    let error = error_text(&harness);
    assert!(error.contains("engines.node"));
    assert_eq!(
        error.matches("cannot run on this runtime").count(),
        1,
        "the refusal keeps its own words, not wrapped again: {error}"
    );
    assert!(!harness.machine.auto_reconnect());
    assert!(harness.machine.gave_up());
}

#[test]
fn f4_every_failed_start_reports_the_last_meaningful_stderr_line() {
    let mut harness = Harness::quiet();
    let reply = harness.command(Command::Start);
    for _ in 0..3 {
        harness.probe_free();
        let pid = harness.spawned();
        stderr(
            &mut harness,
            pid,
            "listen EADDRINUSE: address already in use 127.0.0.1:18789",
        );
        stderr(
            &mut harness,
            pid,
            "    at Server.setupListenHandle (node:net:1817:16)",
        );
        stderr(
            &mut harness,
            pid,
            "(node:7) ExperimentalWarning: SQLite is experimental",
        );
        harness.exit(pid, 1);
        harness.advance(1_000);
    }
    assert_eq!(harness.state(), LifecycleState::Error);
    let expected = "process exited before becoming ready (code=1): \
                    listen EADDRINUSE: address already in use 127.0.0.1:18789";
    assert_eq!(error_text(&harness), expected);
    match harness.reply_of(reply) {
        Some(CommandOutcome::Failed {
            failure:
                failure @ CommandFailure::Start {
                    failure: StartFailure::ExitedBeforeReady { code: Some(1) },
                    reason: Some(_),
                },
        }) => assert_eq!(failure.to_string(), expected),
        other => panic!("unexpected {other:?}"),
    }
    // Each failed attempt's log line carries it too.
    let logged = harness.all_count(|effect| match effect {
        Effect::Log { message, .. } => {
            message.contains("attempt") && message.contains("EADDRINUSE")
        }
        _ => false,
    });
    assert_eq!(logged, 3);
}

const STAY_ALIVE_LINE: &str = "[gateway] startup failed: Invalid config at /s/openclaw.json: \
                               gateway.bind: Invalid input. Process will stay alive; fix the issue \
                               and restart.";

fn terminates(harness: &Harness) -> usize {
    harness.all_count(|effect| matches!(effect, Effect::TerminateProcess { .. }))
}

/// Running → reload (signalled, in-place restart announced, 1012) → reconnect flow waiting for
/// the same, live process that no longer listens. Returns (pid, reload reply).
fn reload_into_in_place_restart(harness: &mut Harness) -> (u32, u64) {
    let pid = harness.start_to_running();
    harness.advance(10_000);
    let reply = harness.command(Command::Reload { policy: hybrid() });
    let epoch = harness.epoch();
    harness.send(Event::SignalSent {
        epoch,
        outcome: Ok(()),
    });
    harness.send(Event::ShutdownAnnounced {
        epoch,
        restart_expected_ms: Some(1_500),
    });
    harness.socket_closed(1012);
    harness.advance(1_000);
    harness.probe_free();
    assert_eq!(harness.leaf(), "awaiting_ready");
    (pid, reply)
}

#[test]
fn f5_in_place_restart_that_stays_alive_is_an_error_at_once_then_one_replacement() {
    let mut harness = in_place_harness();
    let (pid, reply) = reload_into_in_place_restart(&mut harness);
    let since = harness.now;
    // A restart asked for meanwhile must not restart the replacement later (F9).
    harness.command(Command::Restart);
    // The real gateway's block, line by line (OPENCLAW.md §12).
    stderr(
        &mut harness,
        pid,
        "[gateway] startup failed: Invalid config at /s/openclaw.json:",
    );
    stderr(&mut harness, pid, "<root>: Unrecognized key: \"foo\"");
    assert_eq!(harness.state(), LifecycleState::Starting);
    stderr(
        &mut harness,
        pid,
        "If startup is still blocked, inspect the adjacent .bak backup before restoring it \
         manually.. Process will stay alive; fix the issue and restart.",
    );
    let status = harness.machine.status(harness.now);
    assert_eq!(status.state, LifecycleState::Error);
    assert!(status
        .error
        .unwrap_or_default()
        .contains("Invalid config at"));
    assert_eq!(harness.terminate_pid(), Some(pid));
    assert!(matches!(
        harness.reply_of(reply),
        Some(CommandOutcome::Failed { .. })
    ));
    assert!(!harness.machine.gave_up(), "a replacement follows");
    assert_eq!(
        harness.now, since,
        "no wait for the bound: the line ends it"
    );
    // Its exit starts the replacement, doctor first (the reason is an invalid config).
    harness.exit(pid, 143);
    assert_eq!(harness.leaf(), "repairing");
    doctor_after_digest(&mut harness);
    harness.probe_free();
    harness.spawned();
    harness.ready();
    harness.handshake();
    assert_eq!(harness.state(), LifecycleState::Running);
    assert_eq!(error_text(&harness), "");
    // (Within two heartbeat intervals: the harness answers no pings.)
    harness.advance(60_000);
    assert_eq!(harness.state(), LifecycleState::Running);
    assert_eq!(harness.spawns(), 2, "one cold start");
    assert_eq!(
        terminates(&harness),
        1,
        "no stale restart of the replacement"
    );
    assert_eq!(doctor_runs(&harness), 1);
}

/// In `repairing` from the start: digest, doctor, digest → probing_port.
fn doctor_after_digest(harness: &mut Harness) {
    digest(harness, "sha256:broken");
    let epoch = harness.epoch();
    harness.send(Event::RepairFinished {
        epoch,
        outcome: Ok(()),
    });
    digest(harness, "sha256:fixed");
    assert_eq!(harness.leaf(), "probing_port");
}

#[test]
fn f5_in_place_restart_bound_puts_error_within_thirty_seconds_without_any_line() {
    let mut harness = Harness::quiet();
    let pid = harness.start_to_running();
    harness.advance(20_000);
    harness.socket_closed(1012);
    let closed_at = harness.now;
    harness.advance(1_000);
    harness.probe_free();
    assert_eq!(harness.leaf(), "awaiting_ready");
    harness.advance(28_999);
    assert_eq!(harness.state(), LifecycleState::Starting);
    harness.advance(1);
    assert_eq!(harness.now - closed_at, 30_000);
    assert_eq!(harness.state(), LifecycleState::Error);
    assert!(error_text(&harness).contains("did not serve again within 30000 ms"));
    assert_eq!(harness.terminate_pid(), Some(pid));
    harness.exit(pid, 143);
    // No invalid-config reason: a plain fresh spawn.
    assert_eq!(harness.leaf(), "probing_port");
    assert_eq!(doctor_runs(&harness), 0);
}

#[test]
fn f5_a_reconnect_to_the_same_process_within_the_bound_ends_it() {
    let mut harness = Harness::quiet();
    let pid = harness.start_to_running();
    harness.advance(20_000);
    harness.socket_closed(1012);
    assert!(harness
        .machine
        .armed_timers()
        .contains(&TimerKind::InPlaceRestart));
    harness.advance(1_000);
    harness.probe_free();
    harness.ready();
    // Listening again: from here the handshake (and W1's startup window) decide.
    assert!(!harness
        .machine
        .armed_timers()
        .contains(&TimerKind::InPlaceRestart));
    harness.handshake();
    harness.advance(60_000);
    assert_eq!(harness.state(), LifecycleState::Running);
    assert_eq!(harness.machine.status(harness.now).pid, Some(pid));
}

#[test]
fn f6_port_open_without_challenge_fails_the_attempt_after_the_challenge_timeout() {
    let mut harness = Harness::quiet();
    harness.command(Command::Start);
    harness.probe_free();
    let pid = harness.spawned();
    assert_eq!(harness.leaf(), "awaiting_ready");
    let epoch = harness.epoch();
    harness.advance(2_000);
    harness.send(Event::StartObserved {
        epoch,
        observation: StartObservation {
            port_open: true,
            startupz: None,
        },
    });
    harness.advance(9_999);
    assert_eq!(harness.leaf(), "awaiting_ready");
    harness.advance(1);
    assert_eq!(harness.leaf(), "retry_waiting");
    assert_eq!(harness.terminate_pid(), Some(pid));
    assert!(harness.last_has(|effect| matches!(
        effect,
        Effect::Log { message, .. } if message.contains("no connect.challenge within 10000 ms")
            && message.contains("seen: port open, /startupz no answer, no challenge")
    )));
    // The terminated gateway's exit is expected: not a second failure.
    harness.exit(pid, 143);
    assert_eq!(harness.leaf(), "retry_waiting");
    harness.advance(1_000);
    harness.probe_free();
    harness.spawned();
    assert_eq!(harness.leaf(), "awaiting_ready");
    assert_eq!(harness.spawns(), 2);
}

#[test]
fn f6_ready_timeout_applies_only_while_startupz_says_starting() {
    let mut harness = Harness::quiet();
    harness.command(Command::Start);
    harness.probe_free();
    harness.spawned();
    let epoch = harness.epoch();
    harness.send(Event::StartObserved {
        epoch,
        observation: StartObservation {
            port_open: true,
            startupz: Some(503),
        },
    });
    assert!(!harness
        .machine
        .armed_timers()
        .contains(&TimerKind::ChallengeWait));
    harness.advance(60_000);
    assert_eq!(harness.leaf(), "awaiting_ready");
    // /startupz stops answering 503 while the challenge still does not come: bounded again.
    harness.send(Event::StartObserved {
        epoch,
        observation: StartObservation {
            port_open: true,
            startupz: None,
        },
    });
    harness.advance(10_000);
    assert_eq!(harness.leaf(), "retry_waiting");
}

#[test]
fn f6_progress_line_every_ten_seconds_says_what_is_seen() {
    let mut harness = Harness::quiet();
    harness.command(Command::Start);
    harness.probe_free();
    harness.spawned();
    let epoch = harness.epoch();
    harness.send(Event::StartObserved {
        epoch,
        observation: StartObservation {
            port_open: true,
            startupz: Some(503),
        },
    });
    harness.advance(25_000);
    let lines: Vec<String> = harness
        .all
        .iter()
        .filter_map(|effect| match effect {
            Effect::Log { message, .. } if message.contains("start in progress") => {
                Some(message.clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[1].contains("for 20 s"), "{}", lines[1]);
    assert!(lines[1].contains("port open"), "{}", lines[1]);
    assert!(lines[1].contains("/startupz 503"), "{}", lines[1]);
    assert!(lines[1].contains("challenge not yet"), "{}", lines[1]);
    // Running: no more progress lines.
    harness.ready();
    harness.handshake();
    assert!(!harness
        .machine
        .armed_timers()
        .contains(&TimerKind::StartProgress));
}

#[test]
fn f7_restart_window_retries_after_retry_after_without_error_or_attempt() {
    let mut harness = Harness::quiet();
    harness.command(Command::Start);
    harness.probe_free();
    harness.spawned();
    harness.ready();
    assert_eq!(harness.leaf(), "connecting");
    let epoch = harness.epoch();
    for _ in 0..5 {
        harness.send(Event::RestartWindow {
            epoch,
            retry_after_ms: Some(1_000),
        });
        assert_eq!(harness.state(), LifecycleState::Starting);
        assert_eq!(error_text(&harness), "");
        harness.advance(999);
        assert!(!harness.last_has(|effect| matches!(effect, Effect::OpenConnection { .. })));
        harness.advance(1);
        assert!(harness.last_has(|effect| matches!(effect, Effect::OpenConnection { .. })));
    }
    harness.handshake();
    assert_eq!(harness.state(), LifecycleState::Running);
    assert!(!harness.all.iter().any(|effect| matches!(
        effect,
        Effect::Log { message, .. } if message.contains("attempt") && message.contains("failed")
    )));
    assert_eq!(harness.spawns(), 1);
}

#[test]
fn f8_give_up_is_published_and_an_in_place_failure_is_not_one() {
    let mut harness = Harness::quiet();
    harness.machine = gatewarden_core::machine::LifecycleMachine::new({
        let mut config = SupervisorConfig::default();
        config.reconnect.jitter = 0.0;
        config.reconnect.max_attempts = 1;
        config
    });
    let pid = harness.start_to_running();
    harness.advance(20_000);
    harness.socket_closed(1012);
    harness.advance(1_000);
    harness.probe_free();
    stderr(&mut harness, pid, STAY_ALIVE_LINE);
    assert_eq!(harness.state(), LifecycleState::Error);
    assert!(!harness.machine.gave_up());
    assert!(!gave_up(&harness));
    // N2: reconnect attempts exhausted → give-up.
    let mut harness = Harness::new({
        let mut config = SupervisorConfig::default();
        config.reconnect.jitter = 0.0;
        config.reconnect.max_attempts = 1;
        config
    });
    let pid = harness.start_to_running();
    harness.exit(pid, 1);
    harness.advance(1_000);
    harness.probe_free();
    let pid = harness.spawned();
    harness.ready();
    harness.handshake();
    harness.exit(pid, 1);
    assert_eq!(harness.state(), LifecycleState::Error);
    assert!(harness.machine.gave_up());
    assert!(gave_up(&harness));
}

#[test]
fn f9_reload_whose_process_dies_leaves_no_stale_restart() {
    let mut harness = Harness::quiet();
    let pid = harness.start_to_running();
    harness.advance(10_000);
    let reply = harness.command(Command::Reload { policy: hybrid() });
    let epoch = harness.epoch();
    harness.send(Event::SignalSent {
        epoch,
        outcome: Ok(()),
    });
    // Killed mid-restart.
    harness.exit(pid, 137);
    assert_eq!(harness.state(), LifecycleState::Reconnecting);
    harness.advance(1_000);
    harness.probe_free();
    harness.spawned();
    harness.ready();
    harness.handshake();
    assert_eq!(harness.state(), LifecycleState::Running);
    // The replacement's start answered the reload.
    assert_eq!(harness.reply_of(reply), Some(&CommandOutcome::Completed));
    harness.advance(60_000);
    assert_eq!(
        terminates(&harness),
        0,
        "no stale restart of the replacement"
    );
    // And a restart now is executed, not deferred.
    let restart = harness.command(Command::Restart);
    assert_eq!(harness.replies.get(&restart), None);
    assert_eq!(terminates(&harness), 1);
}

#[test]
fn f9_restart_while_running_is_not_deferred_behind_a_reload_in_flight() {
    let mut harness = Harness::quiet();
    let pid = harness.start_to_running();
    harness.advance(10_000);
    let reload = harness.command(Command::Reload { policy: hybrid() });
    let epoch = harness.epoch();
    harness.send(Event::SignalSent {
        epoch,
        outcome: Ok(()),
    });
    let restart = harness.command(Command::Restart);
    assert_ne!(
        harness.replies.get(&restart).and_then(|r| r.first()),
        Some(&CommandOutcome::Deferred)
    );
    assert_eq!(harness.terminate_pid(), Some(pid));
    harness.exit(pid, 0);
    harness.run_start_flow();
    assert_eq!(harness.reply_of(restart), Some(&CommandOutcome::Completed));
    assert_eq!(harness.reply_of(reload), Some(&CommandOutcome::Completed));
    harness.advance(60_000);
    assert_eq!(terminates(&harness), 1);
}

#[test]
fn f9_deferred_restart_is_settled_by_the_gateways_death() {
    let mut harness = Harness::quiet();
    harness.command(Command::Start);
    harness.probe_free();
    let pid = harness.spawned();
    let restart = harness.command(Command::Restart);
    assert_eq!(harness.reply_of(restart), Some(&CommandOutcome::Deferred));
    harness.exit(pid, 1);
    assert_eq!(harness.machine.deferred_restart_since(), None);
    harness.advance(1_000);
    harness.run_start_flow();
    harness.advance(60_000);
    assert_eq!(terminates(&harness), 0);
}

#[test]
fn l5_startup_trace_is_read_into_the_metric_and_a_slow_start_names_its_slowest_stage() {
    let mut harness = Harness::quiet();
    harness.command(Command::Start);
    harness.probe_free();
    let pid = harness.spawned();
    for line in [
        "[gateway] startup trace: entry.imports 800.0ms total=800.0ms start=0.0ms",
        "[gateway] startup trace: config.load 120.4ms total=920.4ms start=800.0ms",
    ] {
        stderr(&mut harness, pid, line);
    }
    // The server's phases come from stdout, reported by the shell as parsed phases.
    for (name, duration_ms) in [("sidecars.start", 31_000), ("config.load", 10)] {
        harness.send(Event::StartupTrace {
            pid,
            phase: gatewarden_core::stderr::StartupPhase {
                name: name.into(),
                duration_ms,
            },
        });
    }
    harness.advance(32_000);
    harness.ready();
    harness.handshake();
    let metric = harness.all.iter().find_map(|effect| match effect {
        Effect::Publish(Notice::StartupMetric {
            phases, slowest, ..
        }) => Some((phases.clone(), slowest.clone())),
        _ => None,
    });
    let (phases, slowest) = metric.expect("a startup metric");
    let names: Vec<&str> = phases.iter().map(|phase| phase.name.as_str()).collect();
    assert_eq!(names, ["entry.imports", "config.load", "sidecars.start"]);
    assert_eq!(phases[1].duration_ms, 130, "repeats add up");
    assert_eq!(
        slowest.map(|phase| phase.name),
        Some("sidecars.start".into())
    );
    assert!(harness.all.iter().any(|effect| matches!(
        effect,
        Effect::Log { message, .. }
            if message.contains("slow gateway start") && message.contains("sidecars.start (31000 ms)")
    )));
    // Trace lines are not failure reasons (F4).
    assert_eq!(
        harness.all_count(|effect| matches!(
            effect,
            Effect::Log { message, .. } if message.contains("attempt") && message.contains("trace")
        )),
        0
    );
}

#[test]
fn f5_replacement_skips_the_doctor_on_a_config_it_already_saw() {
    let mut harness = in_place_harness();
    let (pid, _) = reload_into_in_place_restart(&mut harness);
    stderr(&mut harness, pid, STAY_ALIVE_LINE);
    harness.exit(pid, 143);
    doctor_after_digest(&mut harness);
    harness.probe_free();
    let pid = harness.spawned();
    harness.ready();
    harness.handshake();
    // The same again, and the config file is what the doctor left: no second doctor run, a
    // plain replacement spawn.
    harness.advance(20_000);
    harness.socket_closed(1012);
    harness.advance(1_000);
    harness.probe_free();
    stderr(&mut harness, pid, STAY_ALIVE_LINE);
    harness.exit(pid, 143);
    assert_eq!(harness.leaf(), "repairing");
    digest(&mut harness, "sha256:fixed");
    assert_eq!(harness.leaf(), "probing_port");
    assert_eq!(doctor_runs(&harness), 1);
    harness.probe_free();
    harness.spawned();
    harness.ready();
    harness.handshake();
    assert_eq!(harness.state(), LifecycleState::Running);
}

// ---------------------------------------------------------------------------------------------
// Q2: log levels of normal operation
// ---------------------------------------------------------------------------------------------

/// The level of the first log line containing `needle` among all effects so far.
fn level_of(harness: &Harness, needle: &str) -> Option<LogLevel> {
    harness.all.iter().find_map(|effect| match effect {
        Effect::Log { level, message } if message.contains(needle) => Some(*level),
        _ => None,
    })
}

/// The levels of the "socket closed" and "scheduling reconnect" lines after a running gateway's
/// socket closes with `code`, announced first by a `shutdown` event or not.
fn close_levels(announced: bool, code: u16) -> (Option<LogLevel>, Option<LogLevel>) {
    let mut harness = Harness::quiet();
    harness.start_to_running();
    if announced {
        let epoch = harness.epoch();
        harness.send(Event::ShutdownAnnounced {
            epoch,
            restart_expected_ms: Some(1_500),
        });
    }
    harness.socket_closed(code);
    (
        level_of(&harness, "gateway socket closed"),
        level_of(&harness, "scheduling gateway reconnect"),
    )
}

#[test]
fn q2_an_announced_close_and_its_reconnect_are_info() {
    assert_eq!(
        close_levels(true, 1012),
        (Some(LogLevel::Info), Some(LogLevel::Info))
    );
}

#[test]
fn q2_a_1012_close_is_announced_by_its_code_alone() {
    assert_eq!(close_levels(false, 1012).0, Some(LogLevel::Info));
}

#[test]
fn q2_an_unannounced_close_is_a_warning() {
    assert_eq!(
        close_levels(false, 1006),
        (Some(LogLevel::Warn), Some(LogLevel::Warn))
    );
}

#[test]
fn q2_a_retried_start_attempt_warns_and_the_one_that_ends_the_start_is_a_detail() {
    let mut harness = Harness::quiet();
    harness.command(Command::Start);
    every_attempt_exits_before_ready(&mut harness);
    assert_eq!(harness.state(), LifecycleState::Error);
    let attempts: Vec<(LogLevel, &str)> = harness
        .all
        .iter()
        .filter_map(|effect| match effect {
            Effect::Log { level, message } if message.starts_with("gateway start attempt") => {
                Some((*level, message.as_str()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    for (level, message) in &attempts[..2] {
        assert_eq!(*level, LogLevel::Warn, "{message}");
    }
    assert_eq!(attempts[2].0, LogLevel::Debug, "{}", attempts[2].1);
    assert_eq!(
        level_of(&harness, "gateway start failed"),
        Some(LogLevel::Error)
    );
}
