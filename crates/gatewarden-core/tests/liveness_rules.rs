//! Revision 2 liveness rules (D1–D7), ready by probe (G2) and health (H6), on a virtual clock.
//!
//! The harness plays the actor layer: it answers process samples from a CPU model and core
//! probes as told, so each test reads as the gateway's behaviour and what the machine did.

mod support;

use gatewarden_core::config::SupervisorConfig;
use gatewarden_core::health::{HealthReason, HealthState, RpcFailureKind};
use gatewarden_core::liveness::{
    LivenessClass, ProbeOutcome, ProcessRunState, ProcessSample, RecoveryPhase,
};
use gatewarden_core::machine::{
    Command, CommandOutcome, Effect, Event, Handshake, LifecycleState, Listener, Notice, PortProbe,
    TimerKind,
};
use gatewarden_core::rpc::RpcError;
use support::{Harness, ProbeMode};

const INTERVAL: u64 = 30_000;

fn sample(state: ProcessRunState, cpu_ms: u64) -> Option<ProcessSample> {
    Some(ProcessSample { state, cpu_ms })
}

/// A gateway whose event loop burns CPU (busy).
fn busy() -> support::CpuModel {
    Box::new(|now| sample(ProcessRunState::Running, now))
}

/// A gateway whose event loop makes no progress (frozen-soft: sleeping in the loop).
fn frozen() -> support::CpuModel {
    Box::new(|_| sample(ProcessRunState::Sleeping, 1_234))
}

/// A gateway stopped by SIGSTOP.
fn stopped() -> support::CpuModel {
    Box::new(|_| sample(ProcessRunState::Stopped, 1_234))
}

fn terminates(harness: &Harness) -> usize {
    harness.all_count(|effect| matches!(effect, Effect::TerminateProcess { .. }))
}

/// Advance in 1 ms steps from now until `predicate` holds (at most `limit_ms`); returns the time
/// it first held.
fn advance_until(
    harness: &mut Harness,
    limit_ms: u64,
    predicate: impl Fn(&Harness) -> bool,
) -> Option<u64> {
    let mut step = 0;
    while step < limit_ms {
        if predicate(harness) {
            return Some(harness.now);
        }
        harness.advance(1_000);
        step += 1_000;
    }
    predicate(harness).then_some(harness.now)
}

// ---------------------------------------------------------------------------------------------
// D1: evidence of life; misses are diagnostics only
// ---------------------------------------------------------------------------------------------

#[test]
fn d1_missed_pongs_are_counted_and_published_but_restart_nothing() {
    let mut harness = Harness::quiet();
    harness.probes = ProbeMode::Answer(30);
    harness.cpu = Some(busy());
    harness.start_to_running();
    harness.advance(INTERVAL * 5);
    assert!(harness.machine.diagnostics().consecutive_heartbeat_misses >= 3);
    assert_eq!(terminates(&harness), 0);
    let health = harness.machine.health(harness.now);
    assert!(health.reasons.contains(&HealthReason::GatewayDegraded));
    assert_ne!(health.state, HealthState::Unresponsive);
}

#[test]
fn d1_any_frame_is_evidence_of_life_and_resets_the_deadline() {
    let mut harness = Harness::quiet();
    harness.cpu = Some(busy());
    harness.start_to_running();
    harness.advance(170_000);
    let epoch = harness.epoch();
    harness.send(Event::ProofOfLife { epoch });
    let probes_before = harness.all_count(|effect| matches!(effect, Effect::SendProbe { .. }));
    // 170 s more: the deadline counts from the frame, so no liveness probe yet.
    harness.advance(170_000);
    let probes_after = harness.all_count(|effect| matches!(effect, Effect::SendProbe { .. }));
    assert_eq!(probes_after, probes_before);
    assert_eq!(harness.machine.recovery().liveness, LivenessClass::Busy);
}

// ---------------------------------------------------------------------------------------------
// D2: process evidence
// ---------------------------------------------------------------------------------------------

#[test]
fn d2_the_owned_gateway_is_sampled_at_each_heartbeat_tick() {
    let mut harness = Harness::quiet();
    let pid = harness.start_to_running();
    harness.advance(INTERVAL * 3);
    let samples: Vec<u32> = harness
        .all
        .iter()
        .filter_map(|effect| match effect {
            Effect::SampleProcess { pid, .. } => Some(*pid),
            _ => None,
        })
        .collect();
    assert_eq!(samples, vec![pid, pid, pid]);
}

/// H2's tick silence is silence too (D1/D2): a gateway that advertised a tick every second and
/// sends nothing is silent at the first heartbeat, before any pong could be missed.
#[test]
fn d2_tick_silence_counts_as_silence_before_any_pong_is_missed() {
    let mut harness = Harness::quiet();
    harness.cpu = Some(busy());
    harness.command(Command::Start);
    harness.probe_free();
    harness.spawned();
    harness.ready();
    let epoch = harness.epoch();
    harness.send(Event::HandshakeCompleted {
        epoch,
        handshake: Handshake {
            protocol: 4,
            server_version: Some("2026.9.6".into()),
            boot_id: Some("boot".into()),
            has_snapshot: false,
            tick_interval_ms: Some(1_000),
        },
    });
    assert_eq!(harness.state(), LifecycleState::Running);
    harness.advance(INTERVAL);
    assert_eq!(
        harness.machine.diagnostics().consecutive_heartbeat_misses,
        0
    );
    assert_eq!(harness.machine.recovery().liveness, LivenessClass::Busy);
    // A frame: alive. Silent again by the next heartbeat (no tick for 30 s), and this first
    // silent sample since has nothing to compare with: busy, never frozen or alive.
    let epoch = harness.epoch();
    harness.send(Event::ProofOfLife { epoch });
    assert_eq!(harness.machine.recovery().liveness, LivenessClass::Alive);
    harness.advance(INTERVAL);
    assert_eq!(harness.machine.recovery().liveness, LivenessClass::Busy);
}

#[test]
fn d2_process_evidence_can_be_turned_off() {
    let mut config = SupervisorConfig::default();
    config.liveness.process_evidence = false;
    let mut harness = Harness::new(config);
    harness.start_to_running();
    harness.advance(INTERVAL * 3);
    assert_eq!(
        harness.all_count(|effect| matches!(effect, Effect::SampleProcess { .. })),
        0
    );
}

#[test]
fn d2_classification_is_published_in_diagnostics_and_to_subscribers() {
    let mut harness = Harness::quiet();
    harness.cpu = Some(busy());
    harness.start_to_running();
    harness.advance(INTERVAL * 2);
    let recovery = harness.machine.recovery();
    assert_eq!(recovery.liveness, LivenessClass::Busy);
    assert!(recovery.process_evidence);
    assert!(harness.all.iter().any(|effect| matches!(
        effect,
        Effect::Publish(Notice::Liveness {
            liveness: LivenessClass::Busy,
            phase: RecoveryPhase::Watching
        })
    )));
}

#[test]
fn d2_a_stale_sample_of_another_pid_is_dropped() {
    let mut harness = Harness::quiet();
    let pid = harness.start_to_running();
    let epoch = harness.epoch();
    harness.send(Event::ProcessSampled {
        epoch,
        pid: pid + 1,
        sample: None,
    });
    assert_eq!(harness.machine.recovery().liveness, LivenessClass::Alive);
}

// ---------------------------------------------------------------------------------------------
// D3: frozen → restart as fast as before
// ---------------------------------------------------------------------------------------------

#[test]
fn d3_a_frozen_gateway_is_restarted_within_misses_plus_one_intervals() {
    let mut harness = Harness::quiet();
    harness.cpu = Some(frozen());
    harness.start_to_running();
    let connected = harness.now;
    let decided = advance_until(&mut harness, 600_000, |harness| terminates(harness) > 0)
        .expect("a frozen gateway is restarted");
    // (misses + 1) × interval: ping at 30 s, three misses at 60, 90, 120 s.
    assert_eq!(decided - connected, 4 * INTERVAL);
    assert_eq!(terminates(&harness), 1, "exactly one restart");
    assert_eq!(
        harness.machine.health(harness.now).state,
        HealthState::Unresponsive
    );
    assert_eq!(
        harness.machine.recovery().phase,
        RecoveryPhase::RestartExecuting
    );
}

#[test]
fn d3_a_stopped_gateway_is_frozen_at_once_and_restarted_at_the_threshold() {
    let mut harness = Harness::quiet();
    harness.cpu = Some(stopped());
    let pid = harness.start_to_running();
    harness.advance(2 * INTERVAL);
    assert_eq!(harness.machine.recovery().liveness, LivenessClass::Frozen);
    assert_eq!(terminates(&harness), 0, "not before the miss threshold");
    harness.advance(2 * INTERVAL);
    assert!(harness.all.iter().any(
        |effect| matches!(effect, Effect::TerminateProcess { pid: terminated, .. } if *terminated == pid)
    ));
    harness.exit(pid, 137);
    assert_eq!(harness.leaf(), "probing_port");
    assert_eq!(
        harness.machine.health(harness.now).state,
        HealthState::Unresponsive
    );
    // The replacement connects: the liveness restart is over.
    harness.probe_free();
    harness.spawned();
    harness.ready();
    harness.handshake();
    assert_eq!(harness.state(), LifecycleState::Running);
    assert_eq!(harness.machine.recovery().phase, RecoveryPhase::Watching);
    assert_eq!(
        harness.machine.health(harness.now).state,
        HealthState::Healthy
    );
}

#[test]
fn d3_frozen_with_auto_reconnect_off_is_not_restarted() {
    let mut harness = Harness::quiet();
    harness.cpu = Some(frozen());
    harness.start_to_running();
    // A T6 emergency quit turns auto-reconnect off and disowns the process.
    harness.command(Command::ForceTerminate);
    harness.advance(10 * INTERVAL);
    assert_eq!(terminates(&harness), 0);
}

// ---------------------------------------------------------------------------------------------
// D4: busy → nothing before the deadline, then one probe decides
// ---------------------------------------------------------------------------------------------

#[test]
fn d4_a_busy_gateway_is_not_restarted_before_the_deadline() {
    let mut harness = Harness::quiet();
    harness.cpu = Some(busy());
    harness.probes = ProbeMode::Fail;
    harness.start_to_running();
    // Ready probe at 0 fails: nothing else. Busy for 170 s.
    harness.advance(170_000);
    assert_eq!(terminates(&harness), 0);
    let health = harness.machine.health(harness.now);
    assert_eq!(health.state, HealthState::Degraded);
    assert!(health.reasons.contains(&HealthReason::Busy));
    assert_eq!(harness.state(), LifecycleState::Running);
}

#[test]
fn d4_a_busy_gateway_whose_probe_fails_is_restarted_at_deadline_plus_probe_timeout() {
    let mut config = SupervisorConfig::default();
    config.reconnect.jitter = 0.0;
    // The ready probe answers; the deadline probe will not: model a gateway that is busy
    // after it became ready by failing every probe sent after the ready one.
    let mut harness = Harness::new(config.clone());
    harness.cpu = Some(busy());
    harness.probes = ProbeMode::Answer(10);
    harness.start_to_running();
    harness.advance(10);
    assert!(harness.machine.status(harness.now).gateway_ready);
    let evidence_at = harness.now;
    harness.probes = ProbeMode::Fail;
    let decided = advance_until(&mut harness, 600_000, |harness| terminates(harness) > 0)
        .expect("a busy gateway that fails its probe is restarted");
    let deadline = evidence_at + config.liveness.deadline_ms;
    let probe_timeout = config.liveness.probe_timeout_ms;
    // Decided at the deadline + the probe's time limit (the harness steps 1 s).
    assert!(
        decided >= deadline + probe_timeout && decided < deadline + probe_timeout + 1_000,
        "decided at {decided}, deadline {deadline}"
    );
    assert_eq!(terminates(&harness), 1, "exactly one restart");
    let liveness_probes = harness.all_count(|effect| matches!(effect, Effect::SendProbe { .. }));
    assert_eq!(liveness_probes, 2, "the ready probe and one liveness probe");
    assert!(
        harness.all.iter().any(|effect| matches!(
            effect,
            Effect::Log { message, .. }
                if message.contains("failed (RPC timeout: system-presence)")
        )),
        "the restart's log line names why the probe failed"
    );
}

#[test]
fn d4_a_busy_gateway_whose_probe_answers_is_never_restarted() {
    let mut harness = Harness::quiet();
    harness.cpu = Some(busy());
    harness.probes = ProbeMode::Answer(40);
    let connected_at = harness.now;
    harness.start_to_running();
    harness.advance(3_600_000);
    assert_eq!(terminates(&harness), 0);
    assert_eq!(harness.state(), LifecycleState::Running);
    // The first probe went out at the deadline, counted from the handshake, and said so.
    assert!(
        harness.all.iter().any(|effect| matches!(
            effect,
            Effect::Log { message, .. } if message.starts_with("gateway silent for 180000 ms (Busy)")
        )),
        "the probe's log line names the silence"
    );
    // The last probe is on record (H6 `recovery.lastProbe`).
    let last = harness
        .machine
        .recovery()
        .last_probe
        .expect("the last probe is recorded");
    assert_eq!(last.outcome, ProbeOutcome::Succeeded);
    assert_eq!(last.finished_at_ms - last.sent_at_ms, 40);
    assert!(last.sent_at_ms > connected_at);
}

#[test]
fn d4_one_probe_at_a_time_and_verifying_while_it_is_in_flight() {
    let mut harness = Harness::quiet();
    harness.cpu = Some(busy());
    harness.probes = ProbeMode::Answer(10);
    harness.start_to_running();
    harness.advance(10);
    harness.probes = ProbeMode::Ignore;
    harness.advance(181_000);
    assert_eq!(harness.machine.recovery().phase, RecoveryPhase::Verifying);
    assert_eq!(
        harness.machine.health(harness.now).state,
        HealthState::Verifying
    );
    let sent = harness.all_count(|effect| matches!(effect, Effect::SendProbe { .. }));
    harness.advance(600_000);
    assert_eq!(
        harness.all_count(|effect| matches!(effect, Effect::SendProbe { .. })),
        sent,
        "no second probe while one is in flight"
    );
    assert_eq!(terminates(&harness), 0);
}

#[test]
fn d4_a_probe_failing_after_newer_evidence_restarts_nothing() {
    let mut harness = Harness::quiet();
    harness.cpu = Some(busy());
    harness.probes = ProbeMode::Answer(10);
    harness.start_to_running();
    harness.advance(10);
    harness.probes = ProbeMode::Fail;
    harness.advance(181_000);
    // The probe is in flight (it fails at +5 s); a frame arrives first.
    let epoch = harness.epoch();
    harness.send(Event::ProofOfLife { epoch });
    harness.advance(10_000);
    assert_eq!(terminates(&harness), 0);
}

// ---------------------------------------------------------------------------------------------
// D5: an external gateway is never stopped or restarted by liveness
// ---------------------------------------------------------------------------------------------

/// The user's own gateway listening on the port (pid 9999, not ours).
fn users_gateway() -> PortProbe {
    PortProbe {
        listeners: vec![Listener {
            pid: Some(9_999),
            program: Some("node".into()),
            ours_by_record: false,
        }],
        answers_as_gateway: true,
    }
}

fn attach_external(harness: &mut Harness) {
    harness.command(Command::Start);
    let epoch = harness.epoch();
    harness.send(Event::PortProbed {
        epoch,
        probe: users_gateway(),
    });
    harness.handshake();
    assert_eq!(harness.state(), LifecycleState::Running);
    assert!(harness.machine.status(harness.now).external);
}

#[test]
fn d5_an_external_gateway_that_stops_answering_is_never_signalled_only_reconnected() {
    let mut harness = Harness::quiet();
    harness.probes = ProbeMode::Answer(10);
    attach_external(&mut harness);
    harness.advance(10);
    harness.probes = ProbeMode::Fail;
    // Deadline 180 s after the ready probe's answer, the probe fails 5 s later.
    harness.advance(185_001);
    assert_eq!(harness.state(), LifecycleState::Reconnecting);
    assert!(harness.all.iter().any(|effect| matches!(
        effect,
        Effect::FailPendingRpcs {
            error: RpcError::ExternalUnavailable
        }
    )));
    assert!(harness
        .all
        .iter()
        .any(|effect| matches!(effect, Effect::Publish(Notice::ExternalUnavailable))));
    assert_eq!(
        harness.machine.health(harness.now).state,
        HealthState::ExternalUnavailable
    );
    // The reconnect finds nothing answering on the port: it never spawns in its place.
    harness.advance(1_000);
    assert_eq!(harness.leaf(), "probing_port");
    harness.probe_free();
    assert_eq!(harness.spawns(), 0);
    // It answers again: reattached, running, healthy.
    harness.advance(1_000);
    let epoch = harness.epoch();
    harness.send(Event::PortProbed {
        epoch,
        probe: users_gateway(),
    });
    harness.handshake();
    assert_eq!(harness.state(), LifecycleState::Running);
    assert!(harness.machine.status(harness.now).external);
    assert_ne!(
        harness.machine.health(harness.now).state,
        HealthState::ExternalUnavailable
    );
    for effect in &harness.all {
        assert!(
            !matches!(
                effect,
                Effect::TerminateProcess { .. }
                    | Effect::ForceKillProcess { .. }
                    | Effect::SignalProcess { .. }
                    | Effect::RequestExternalShutdown { .. }
                    | Effect::SpawnProcess { .. }
            ),
            "{effect:?}"
        );
    }
}

#[test]
fn d5_an_external_gateway_is_not_sampled() {
    let mut harness = Harness::quiet();
    attach_external(&mut harness);
    harness.advance(INTERVAL * 3);
    assert_eq!(
        harness.all_count(|effect| matches!(effect, Effect::SampleProcess { .. })),
        0
    );
}

// ---------------------------------------------------------------------------------------------
// D6: the supervisor's own stall
// ---------------------------------------------------------------------------------------------

#[test]
fn d6_a_supervisor_stall_is_decided_by_a_probe_not_a_restart() {
    let mut harness = Harness::quiet();
    // Frozen samples would restart at the threshold if the stall counted as silence.
    harness.cpu = Some(frozen());
    harness.probes = ProbeMode::Answer(15);
    let pid = harness.start_to_running();
    harness.advance(INTERVAL + 10);
    let probes_before = harness.all_count(|effect| matches!(effect, Effect::SendProbe { .. }));
    // SIGSTOP for 90 s, then SIGCONT: the heartbeat tick fires ~90 s late.
    harness.pause(90_000);
    harness.advance(1);
    assert!(harness.all.iter().any(|effect| matches!(
        effect,
        Effect::Log { message, .. } if message.contains("supervisor stall")
    )));
    assert_eq!(
        harness.all_count(|effect| matches!(effect, Effect::SendProbe { .. })),
        probes_before + 1,
        "one probe decides"
    );
    harness.advance(INTERVAL * 2);
    assert_eq!(terminates(&harness), 0);
    assert_eq!(harness.machine.owned_pid(), Some(pid));
    assert_eq!(harness.state(), LifecycleState::Running);
}

/// A running gateway whose CPU follows `cpu`; the supervisor is then paused 90 s and the stall
/// probe that follows will fail (the late tick fires on the next `advance`).
fn paused_with_a_failing_stall_probe(cpu: support::CpuModel) -> Harness {
    let mut harness = Harness::quiet();
    harness.cpu = Some(cpu);
    harness.probes = ProbeMode::Answer(15);
    harness.start_to_running();
    harness.advance(INTERVAL + 10);
    harness.probes = ProbeMode::Fail;
    harness.pause(90_000);
    harness
}

#[test]
fn d6_a_stall_whose_probe_fails_restarts_a_gateway_that_did_not_run_across_it() {
    let mut harness = paused_with_a_failing_stall_probe(frozen());
    harness.advance(1);
    assert_eq!(
        terminates(&harness),
        0,
        "nothing is restarted on the stalled tick"
    );
    harness.advance(5_000);
    assert_eq!(terminates(&harness), 1);
}

#[test]
fn d6_a_stall_whose_probe_fails_spares_a_gateway_that_ran_across_it() {
    let mut harness = paused_with_a_failing_stall_probe(busy());
    harness.advance(5_001);
    assert_eq!(
        terminates(&harness),
        0,
        "busy: the D4 deadline decides, not the stall"
    );
    assert_eq!(harness.machine.recovery().liveness, LivenessClass::Busy);
    // Still silent and busy at the deadline (180 s after the stall): then a failed probe
    // restarts it (D4).
    harness.advance(180_000);
    assert_eq!(terminates(&harness), 1);
}

/// Found while teaching the model test D6: the stall verdict is one comparison, not a mode.
/// After a stall whose probe failed on a gateway that ran across it (busy), the gateway answering
/// again and then idling between answers must be judged as usual, not as "no progress since the
/// pause".
#[test]
fn d6_the_stall_verdict_is_one_sample_and_later_evidence_is_judged_as_usual() {
    let mut harness = paused_with_a_failing_stall_probe(busy());
    harness.advance(5_001);
    assert_eq!(terminates(&harness), 0, "busy across the pause");
    // It answers again and from now on idles (no CPU) between its answers: alive, not frozen.
    harness.cpu = Some(frozen());
    harness.probes = ProbeMode::Answer(15);
    for _ in 0..6 {
        let epoch = harness.epoch();
        harness.send(Event::ProofOfLife { epoch });
        harness.advance(INTERVAL);
    }
    assert_eq!(
        terminates(&harness),
        0,
        "an answering idle gateway was restarted"
    );
    assert_eq!(harness.state(), LifecycleState::Running);
}

// ---------------------------------------------------------------------------------------------
// D7: a suppressed liveness restart stays pending
// ---------------------------------------------------------------------------------------------

/// A frozen gateway, running.
fn frozen_running(harness: &mut Harness) -> u32 {
    harness.cpu = Some(frozen());
    harness.start_to_running()
}

/// A frozen gateway, running again after a user restart that started a `cooldown_ms` cooldown
/// (longer than a liveness decision takes, so the decision lands inside it).
fn frozen_after_a_user_restart(cooldown_ms: u64) -> Harness {
    let mut config = SupervisorConfig::default();
    config.reconnect.jitter = 0.0;
    config.restart.cooldown_ms = cooldown_ms;
    let mut harness = Harness::new(config);
    let first = frozen_running(&mut harness);
    harness.command(Command::Restart);
    harness.exit(first, 143);
    harness.probe_free();
    harness.spawned();
    harness.ready();
    harness.handshake();
    harness
}

#[test]
fn d7_a_liveness_restart_suppressed_by_the_cooldown_runs_when_it_ends() {
    let mut harness = frozen_after_a_user_restart(200_000);
    let restarted_at = harness.now;
    assert_eq!(terminates(&harness), 1);
    harness.advance(4 * INTERVAL);
    assert_eq!(terminates(&harness), 1, "suppressed by the governor");
    assert_eq!(
        harness.machine.recovery().phase,
        RecoveryPhase::RestartPending
    );
    assert_eq!(
        harness.machine.health(harness.now).state,
        HealthState::Unresponsive
    );
    assert!(harness
        .machine
        .armed_timers()
        .contains(&TimerKind::LivenessRestart));
    let ran = advance_until(&mut harness, 200_000, |harness| terminates(harness) > 1)
        .expect("the pending restart runs");
    assert!(
        ran >= restarted_at + 200_000,
        "not before the cooldown ends"
    );
    assert_eq!(terminates(&harness), 2, "once");
}

#[test]
fn d7_evidence_of_life_calls_off_a_pending_liveness_restart() {
    let mut harness = frozen_after_a_user_restart(200_000);
    harness.advance(4 * INTERVAL);
    assert_eq!(
        harness.machine.recovery().phase,
        RecoveryPhase::RestartPending
    );
    // It answers again, and keeps working from now on.
    harness.cpu = Some(busy());
    harness.probes = ProbeMode::Answer(10);
    let epoch = harness.epoch();
    harness.send(Event::ProofOfLife { epoch });
    assert_eq!(harness.machine.recovery().phase, RecoveryPhase::Watching);
    assert!(!harness
        .machine
        .armed_timers()
        .contains(&TimerKind::LivenessRestart));
    harness.advance(300_000);
    assert_eq!(terminates(&harness), 1, "called off");
}

/// Found while teaching the model test D7: a core probe answered while a liveness restart waits for the
/// cooldown is evidence of life too; the pending restart is called off and health recovers.
#[test]
fn d7_a_probe_answer_calls_off_a_pending_liveness_restart() {
    let mut harness = frozen_after_a_user_restart(400_000);
    // A stall probe goes out and stays unanswered; meanwhile the frozen gateway reaches the
    // miss threshold and its restart is suppressed by the cooldown.
    harness.probes = ProbeMode::Ignore;
    harness.advance(INTERVAL + 10);
    harness.pause(90_000);
    harness.advance(1);
    let (epoch, probe) = harness
        .all
        .iter()
        .rev()
        .find_map(|effect| match effect {
            Effect::SendProbe { epoch, probe, .. } => Some((*epoch, *probe)),
            _ => None,
        })
        .expect("the stall probe");
    harness.advance(4 * INTERVAL);
    assert_eq!(
        harness.machine.recovery().phase,
        RecoveryPhase::RestartPending
    );
    harness.send(Event::ProbeFinished {
        epoch,
        probe,
        outcome: ProbeOutcome::Succeeded,
    });
    assert_eq!(harness.machine.recovery().phase, RecoveryPhase::Watching);
    assert_ne!(
        harness.machine.health(harness.now).state,
        HealthState::Unresponsive
    );
    assert!(!harness
        .machine
        .armed_timers()
        .contains(&TimerKind::LivenessRestart));
    assert_eq!(terminates(&harness), 1, "only the user's restart");
}

// ---------------------------------------------------------------------------------------------
// G2: ready by probe, never by a timer alone
// ---------------------------------------------------------------------------------------------

#[test]
fn g2_ready_is_never_set_by_a_timer_alone() {
    let mut harness = Harness::quiet();
    harness.probes = ProbeMode::Refuse(20);
    harness.start_to_running();
    harness.advance(600_000);
    assert!(!harness.machine.status(harness.now).gateway_ready);
}

#[test]
fn g2_the_core_probe_follows_the_schedule_until_one_succeeds() {
    let mut harness = Harness::quiet();
    harness.probes = ProbeMode::Refuse(0);
    harness.start_to_running();
    let connected = harness.now;
    let mut sent_at = Vec::new();
    let mut seen = 0;
    while harness.now < connected + 100_000 {
        harness.advance(100);
        let count = harness.all_count(|effect| matches!(effect, Effect::SendProbe { .. }));
        if count > seen {
            seen = count;
            sent_at.push((harness.now - connected) / 100 * 100);
        }
    }
    // 0, 1.5, 3, 5, 8, 12, 30 s, then every 30 s (the harness steps 100 ms).
    assert_eq!(
        &sent_at[..9],
        &[100, 1_500, 3_000, 5_000, 8_000, 12_000, 30_000, 60_000, 90_000]
    );
    harness.probes = ProbeMode::Answer(5);
    harness.advance(30_000);
    assert!(harness.machine.status(harness.now).gateway_ready);
    let count = harness.all_count(|effect| matches!(effect, Effect::SendProbe { .. }));
    harness.advance(120_000);
    let readiness_probes_after =
        harness.all_count(|effect| matches!(effect, Effect::SendProbe { .. }));
    assert_eq!(readiness_probes_after, count, "no ready probe once ready");
    assert!(!harness
        .machine
        .armed_timers()
        .contains(&TimerKind::ReadyProbe));
}

#[test]
fn g2_a_successful_probe_publishes_gateway_ready_once() {
    let mut harness = Harness::quiet();
    harness.probes = ProbeMode::Answer(7);
    harness.start_to_running();
    harness.advance(100);
    assert!(harness.machine.status(harness.now).gateway_ready);
    assert_eq!(
        harness.all_count(|effect| matches!(effect, Effect::Publish(Notice::GatewayReady))),
        1
    );
}

// ---------------------------------------------------------------------------------------------
// H6: health
// ---------------------------------------------------------------------------------------------

#[test]
fn h6_a_capability_timeout_is_not_a_core_failure() {
    let mut harness = Harness::quiet();
    harness.start_to_running();
    let now = harness.now;
    harness
        .machine
        .record_rpc_outcome(now, "status", Err(RpcFailureKind::Timeout));
    let health = harness.machine.health(now);
    assert_eq!(health.reasons, vec![HealthReason::CapabilityTimeout]);
    assert_eq!(health.degraded_capabilities, vec!["status".to_string()]);
    harness
        .machine
        .record_rpc_outcome(now, "doctor.memory.scan", Err(RpcFailureKind::Timeout));
    assert_eq!(harness.machine.diagnostics().consecutive_rpc_failures, 0);
    harness
        .machine
        .record_rpc_outcome(now, "chat.send", Err(RpcFailureKind::Timeout));
    assert_eq!(harness.machine.diagnostics().consecutive_rpc_failures, 1);
}

#[test]
fn h6_a_call_refused_while_not_connected_leaves_health_alone_after_a_new_start() {
    let mut harness = Harness::quiet();
    let now = harness.now;
    harness
        .machine
        .record_rpc_outcome(now, "health", Err(RpcFailureKind::NotConnected));
    harness
        .machine
        .record_rpc_outcome(now, "chat.send", Err(RpcFailureKind::NotConnected));
    harness.start_to_running();
    assert_eq!(
        harness.machine.health(harness.now).state,
        HealthState::Healthy
    );
}

#[test]
fn h6_rpc_evidence_resets_on_each_new_connection() {
    let mut harness = Harness::quiet();
    let pid = harness.start_to_running();
    let now = harness.now;
    harness
        .machine
        .record_rpc_outcome(now, "chat.send", Err(RpcFailureKind::Timeout));
    assert_eq!(
        harness.machine.health(now).reasons,
        vec![HealthReason::RpcTimeout]
    );
    harness.exit(pid, 1);
    harness.advance(1_000);
    harness.probe_free();
    harness.spawned();
    harness.ready();
    harness.handshake();
    assert_eq!(
        harness.machine.health(harness.now).state,
        HealthState::Healthy
    );
}

#[test]
fn h6_a_restart_asked_while_running_is_answered_not_deferred() {
    // Guard for the liveness work: a user restart in `running` still runs at once.
    let mut harness = Harness::quiet();
    harness.start_to_running();
    let reply = harness.command(Command::Restart);
    assert_ne!(harness.reply_of(reply), Some(&CommandOutcome::Deferred));
}
