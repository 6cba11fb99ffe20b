//! The lifecycle state machine, written with statig.
//!
//! ```text
//! supervised
//! ├── idle ─────────── stopped, failed (S1 "error")
//! ├── active
//! │   ├── starting ─── probing_port, killing_orphans, waiting_port_free, spawning,
//! │   │                awaiting_ready, connecting, repairing, retry_waiting
//! │   ├── running
//! │   └── reconnecting
//! └── stopping
//! ```
//!
//! Per-state data lives in state-local storage: the start flow (`flow`: epoch, attempt, whether
//! the doctor already ran, timestamps for the startup metric), the running connection (`run`:
//! its epoch and liveness tracker), the pending reconnect (`pending`) and the stop in progress
//! (`stop`). Everything shared lives in [`Core`], statig's context.
//!
//! Handlers only decide; they push effects into the context. Stale results (an old epoch, an old
//! timer generation, another pid) never reach these handlers: the wrapper in `mod.rs` drops them.

use statig::prelude::*;

use crate::error::{CommandFailure, IgnoredReason, SignalFailure, StartFailure};
use crate::liveness::{
    LivenessAction, LivenessTracker, ProbeInFlight, ProbeOutcome, ProbePurpose, RecoveryPhase,
};
use crate::machine::core::{Core, ReloadInFlight, Replacement};
use crate::machine::types::{
    Command, CommandOutcome, Effect, Event, ExternalShutdownOutcome, Handshake, LifecycleState,
    LogLevel, Notice, PortProbe, ReplyId, StartObservation, TimerKind,
};
use crate::reconnect::{GiveUpReason, ReconnectDecision};
use crate::recovery::{
    choose_recovery, is_invalid_config_signal, is_startup_failed_line, is_stay_alive_signal,
    last_meaningful_line, FailureClass, Recovery, RecoveryInput,
};
use crate::reload_policy::{ReloadMode, ReloadPolicy};
use crate::rpc::RpcError;
use crate::stderr::{parse_startup_trace, StartupPhase};

use crate::config::ForeignGatewayPolicy;
use crate::governor::GovernorDecision;

/// Why a start flow runs: it decides L3 (attempts), N3 (metrics) and R4/R5 (restart bookkeeping).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartKind {
    /// A user's `Start`.
    Manual,
    /// The reconnect timer (N3).
    AutoReconnect,
    /// The start half of a restart (R4).
    Restart,
}

/// State-local data of the start sequence (L5).
#[derive(Debug, Clone, PartialEq)]
pub struct StartFlow {
    /// E1: the epoch this flow began in.
    pub epoch: u64,
    /// L5: 1-based attempt.
    pub attempt: u32,
    /// L6: the doctor repair ran in this flow.
    pub repair_tried: bool,
    /// Why the flow runs.
    pub kind: StartKind,
    /// L5 step 2 (or a retry): we connect to a process we already own.
    pub own_process: bool,
    /// L5 step 1: attached to a gateway we do not own.
    pub external: bool,
    /// L5 step 4 metric: when the flow began.
    pub requested_at: u64,
    /// L5 step 4 metric: when the spawn completed.
    pub spawned_at: Option<u64>,
    /// L5 step 4 metric: when readiness was confirmed.
    pub ready_at: Option<u64>,
    /// N4: the delay that preceded this auto-reconnect attempt.
    pub reconnect_delay_ms: u64,
    /// W1: the last startup-window answer's retry delay (`retryAfterMs`, else the config's).
    pub startup_retry_ms: u64,
    /// F2: where the doctor repair stands.
    pub repair_phase: RepairPhase,
    /// F1/F4: the stderr line that sent the flow to the doctor.
    pub repair_reason: Option<String>,
    /// F6: what this attempt has seen, for the progress lines and the challenge bound.
    pub seen: StartSeen,
    /// F6: the owned gateway was terminated because it sent no challenge; its exit is expected
    /// and is not another failed attempt.
    pub replacing_hung: bool,
    /// L5 step 4: the gateway's startup trace, per phase (bounded).
    pub trace: Vec<StartupPhase>,
    /// F5: the doctor runs before the replacement spawn only when it has not seen this config:
    /// seen content is spawned as it is (its own exit then decides, without the doctor).
    pub repair_optional: bool,
}

/// F2: the doctor repair's steps: the config's digest before, the doctor, the digest after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RepairPhase {
    /// Not repairing.
    #[default]
    Idle,
    /// Waiting for the digest of the config the doctor would run on.
    DigestBefore,
    /// The doctor runs.
    Doctor,
    /// Waiting for the digest of what the doctor left.
    DigestAfter,
}

/// F6: what a start attempt has seen so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StartSeen {
    /// The last readiness observation (port open, `/startupz`).
    pub observation: Option<StartObservation>,
    /// When the port was first seen open in this attempt.
    pub port_open_at: Option<u64>,
    /// The startup window (W1) or the restart window (F7) answered `connect`.
    pub window_answers: u32,
}

/// State-local data of `running`.
#[derive(Debug, Clone)]
pub struct RunState {
    /// Epoch of the connection.
    pub epoch: u64,
    /// H1–H3 evidence and D1–D7 decisions.
    pub liveness: LivenessTracker,
}

/// State-local data of `reconnecting`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingReconnect {
    /// N3: the epoch when it was scheduled.
    pub epoch: u64,
    /// The delay chosen (N2/N5).
    pub delay_ms: u64,
}

/// What follows a stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterStop {
    /// Stay stopped.
    Nothing,
    /// A start asked for while stopping.
    Start,
    /// The second half of a restart.
    Restart,
}

/// State-local data of `stopping`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopFlow {
    /// The state shown while stopping (the original keeps the previous state until stopped).
    pub shown: LifecycleState,
    /// What follows.
    pub then: AfterStop,
    /// T2: waiting for the external gateway's answer to `shutdown`.
    pub awaiting_external: bool,
    /// T4: waiting for this owned process to exit.
    pub awaiting_pid: Option<u32>,
}

/// statig's storage: empty on purpose; shared data lives in [`Core`], the context.
#[derive(Debug, Default, Clone)]
pub struct Lifecycle;

#[state_machine(
    initial = "State::stopped()",
    state(derive(Debug, Clone)),
    superstate(derive(Debug)),
    after_transition = "Self::after_transition"
)]
impl Lifecycle {
    // ----------------------------------------------------------------------------------------
    // Top: handling shared by every state.
    // ----------------------------------------------------------------------------------------

    /// Debounced requests (R7, P5) and emergency termination (T6) work in every state; anything
    /// unhandled below ends here and is dropped with a debug log.
    #[superstate]
    fn supervised(context: &mut Core, event: &Event) -> Outcome<State> {
        match event {
            Event::Command { command, reply } => match command {
                Command::DebouncedRestart { delay_ms } => {
                    let delay = delay_ms.unwrap_or(context.config.restart.debounce_ms);
                    context.arm(TimerKind::RestartDebounce, delay);
                    context.reply(*reply, CommandOutcome::Scheduled);
                    Handled
                }
                Command::DebouncedReload { delay_ms, policy } => {
                    debounce_reload(context, *delay_ms, policy.clone(), *reply);
                    Handled
                }
                Command::ForceTerminate => {
                    force_terminate(context, *reply);
                    Handled
                }
                other => {
                    context.log(
                        LogLevel::Debug,
                        format!("{} ignored in this state", other.name()),
                    );
                    context.reply(
                        *reply,
                        CommandOutcome::Ignored {
                            reason: IgnoredReason::NotApplicable,
                        },
                    );
                    Handled
                }
            },
            Event::ProcessExited { pid, code } => {
                // An owned process exited while nothing waited for it (idle states).
                record_exit(context, *pid, *code);
                ask_reconnect(context);
                Handled
            }
            Event::SignalSent { outcome, .. } => {
                // P3: the reload signal's outcome matters in whatever state it arrives.
                match reload_signal_sent(context, outcome.clone()) {
                    Some(state) => Transition(state),
                    None => Handled,
                }
            }
            Event::StderrLine { line, .. } => match note_stderr(context, line) {
                Some(state) => Transition(state),
                None => Handled,
            },
            // A trace outside a start flow (an in-place restart) has no metric to go to.
            Event::ProofOfLife { .. } | Event::StartupTrace { .. } => Handled,
            other => {
                context.log(
                    LogLevel::Debug,
                    format!("late or unexpected event dropped: {}", other.name()),
                );
                Handled
            }
        }
    }

    // ----------------------------------------------------------------------------------------
    // Idle: stopped and failed.
    // ----------------------------------------------------------------------------------------

    /// Shared by `stopped` and `failed`: start, stop, restart and reload from rest.
    #[superstate(superstate = "supervised")]
    fn idle(context: &mut Core, event: &Event) -> Outcome<State> {
        match event {
            Event::Command { command, reply } => match command {
                Command::Start => {
                    context.waiters.start.extend(*reply);
                    Transition(begin_start(context, StartKind::Manual, 0))
                }
                Command::Stop => Transition(begin_stop(
                    context,
                    LifecycleState::Stopped,
                    AfterStop::Nothing,
                    *reply,
                )),
                Command::Restart => match request_restart(context, LifecycleState::Stopped, *reply)
                {
                    Some(state) => Transition(state),
                    None => Handled,
                },
                Command::Reload { policy } => {
                    // P3: not running → restart.
                    match request_reload(context, LifecycleState::Stopped, policy, *reply) {
                        Some(state) => Transition(state),
                        None => Handled,
                    }
                }
                _ => Super,
            },
            Event::TimerFired { timer, .. } => {
                match handle_common_timer(context, *timer, LifecycleState::Stopped) {
                    Some(state) => Transition(state),
                    None => Handled,
                }
            }
            Event::ProcessExited { pid, code } => {
                let replacement = if context.owned_pid == Some(*pid) {
                    context.replacement.take()
                } else {
                    None
                };
                record_exit(context, *pid, *code);
                if let Some(replacement) = replacement {
                    // F5: the gateway that failed to restart in place is gone: replace it.
                    return Transition(begin_replacement(context, replacement));
                }
                // N1: an exit always asks; the guards decide (a failed manual start left
                // auto-reconnect on, as in the original).
                match ask_reconnect(context) {
                    Some(state) => Transition(state),
                    None => Handled,
                }
            }
            _ => Super,
        }
    }

    /// S1 `stopped`. Transitions: Start → starting; Restart → starting (via an instant stop);
    /// Reload → restart; a debounce timer → restart or reload.
    #[state(superstate = "idle")]
    fn stopped(event: &Event) -> Outcome<State> {
        let _ = event;
        Super
    }

    /// S1 `error`: a start failed (L8) or reconnecting gave up (N2). Same exits as `stopped`.
    #[state(superstate = "idle")]
    fn failed(event: &Event) -> Outcome<State> {
        let _ = event;
        Super
    }

    // ----------------------------------------------------------------------------------------
    // Active: starting, running, reconnecting.
    // ----------------------------------------------------------------------------------------

    /// Shared by every active state: stop (T1–T5) and the debounce timers.
    #[superstate(superstate = "supervised")]
    fn active(context: &mut Core, event: &Event) -> Outcome<State> {
        match event {
            Event::Command {
                command: Command::Stop,
                reply,
            } => {
                let shown = context.shown_state;
                Transition(begin_stop(context, shown, AfterStop::Nothing, *reply))
            }
            Event::TimerFired { timer, .. } => {
                let shown = context.shown_state;
                match handle_common_timer(context, *timer, shown) {
                    Some(state) => Transition(state),
                    None => Handled,
                }
            }
            _ => Super,
        }
    }

    /// The start flow (L1–L8). Shared by its steps: failures go through L7, restarts and
    /// reloads are deferred (R1), a second start is ignored (L1), the owned process's exit ends
    /// the attempt, stderr lines are kept for L7, progress is logged (F6).
    #[superstate(superstate = "active", exit_action = "exit_starting")]
    fn starting(context: &mut Core, flow: &mut StartFlow, event: &Event) -> Outcome<State> {
        match event {
            Event::Command { command, reply } => match command {
                Command::Start => {
                    context.log(
                        LogLevel::Debug,
                        "start ignored: a start flow is already in progress",
                    );
                    context.reply(
                        *reply,
                        CommandOutcome::Ignored {
                            reason: IgnoredReason::StartInProgress,
                        },
                    );
                    Handled
                }
                Command::Restart => {
                    defer_restart(context, *reply);
                    Handled
                }
                Command::Reload { policy } => {
                    match request_reload(context, LifecycleState::Starting, policy, *reply) {
                        Some(state) => Transition(state),
                        None => Handled,
                    }
                }
                _ => Super,
            },
            Event::StepFailed { failure, .. } => {
                Transition(step_failed(context, flow, failure.clone()))
            }
            Event::StderrLine { line, .. } => {
                if let Some(phase) = parse_startup_trace(line) {
                    note_trace_phase(flow, phase);
                    return Handled;
                }
                context.stderr_tail.push(line);
                match note_stderr(context, line) {
                    Some(state) => Transition(state),
                    None => Handled,
                }
            }
            Event::StartupTrace { phase, .. } => {
                note_trace_phase(flow, phase.clone());
                Handled
            }
            Event::ProcessExited { pid, code } if flow.replacing_hung => {
                // F6: the gateway we terminated for sending no challenge; the attempt already
                // counted as failed.
                flow.replacing_hung = false;
                record_exit(context, *pid, *code);
                Handled
            }
            Event::ProcessExited { pid, code } => {
                record_exit(context, *pid, *code);
                Transition(step_failed(
                    context,
                    flow,
                    StartFailure::ExitedBeforeReady { code: *code },
                ))
            }
            Event::TimerFired {
                timer: TimerKind::StartProgress,
                ..
            } => {
                log_start_progress(context, flow);
                Handled
            }
            _ => Super,
        }
    }

    #[action]
    fn exit_starting(context: &mut Core) {
        context.cancel(TimerKind::StartProgress);
        context.cancel(TimerKind::ChallengeWait);
    }

    /// L5 step 1 / O1: look at the port. → connecting (a gateway answers: ours or attach),
    /// awaiting_ready (our own process, not listening yet), killing_orphans, waiting_port_free
    /// (Windows), spawning, or a failed step (an unrelated program holds the port).
    #[state(superstate = "starting", entry_action = "enter_probing_port")]
    fn probing_port(context: &mut Core, flow: &mut StartFlow, event: &Event) -> Outcome<State> {
        match event {
            Event::PortProbed { probe, .. } => Transition(after_probe(context, flow, probe)),
            _ => Super,
        }
    }

    #[action]
    fn enter_probing_port(context: &mut Core, flow: &mut StartFlow) {
        // X3: every attempt begins here, whether it spawns or reuses a live process: the stderr
        // tail and what the attempt has seen are its own.
        context.stderr_tail.clear();
        flow.seen = StartSeen::default();
        let port = context.config.port;
        context.push(Effect::ProbePort {
            epoch: flow.epoch,
            port,
        });
    }

    /// O1: our own orphans are being terminated. → spawning (or waiting_port_free), or a failed
    /// step when some survive.
    #[state(superstate = "starting")]
    fn killing_orphans(context: &mut Core, flow: &mut StartFlow, event: &Event) -> Outcome<State> {
        match event {
            Event::OrphansKilled { survivors, .. } => {
                if survivors.is_empty() {
                    Transition(before_spawn(context, flow))
                } else {
                    let port = context.config.port;
                    Transition(step_failed(
                        context,
                        flow,
                        StartFailure::PortStillOccupied { port },
                    ))
                }
            }
            _ => Super,
        }
    }

    /// L5 step 3 (Windows): wait for the port to be free. → spawning.
    #[state(superstate = "starting", entry_action = "enter_waiting_port_free")]
    fn waiting_port_free(flow: &mut StartFlow, event: &Event) -> Outcome<State> {
        match event {
            Event::PortFreed { .. } => Transition(State::spawning(flow.clone())),
            _ => Super,
        }
    }

    #[action]
    fn enter_waiting_port_free(context: &mut Core, flow: &mut StartFlow) {
        let port = context.config.port;
        context.push(Effect::WaitPortFree {
            epoch: flow.epoch,
            port,
        });
    }

    /// X1: spawn the gateway. → awaiting_ready.
    #[state(superstate = "starting", entry_action = "enter_spawning")]
    fn spawning(context: &mut Core, flow: &mut StartFlow, event: &Event) -> Outcome<State> {
        match event {
            Event::ProcessSpawned { pid, .. } => {
                context.owned_pid = Some(*pid);
                context.process_starts = context.process_starts.wrapping_add(1);
                flow.spawned_at = Some(context.now_ms);
                flow.own_process = false;
                context.last_stderr_line = None;
                context.startup_failed_line = None;
                context.log(LogLevel::Info, format!("gateway spawned (pid={pid})"));
                Transition(State::awaiting_ready(flow.clone()))
            }
            Event::StepFailed {
                failure: StartFailure::SpawnFailed { .. },
                ..
            } if context.owned_pid.is_some() => {
                // Our spawn was refused because a superseded start's spawn got there first and
                // the machine adopted that process meanwhile: wait for it instead.
                context.log(
                    LogLevel::Info,
                    "a gateway spawned by a superseded start is owned; waiting for it",
                );
                flow.own_process = true;
                Transition(State::awaiting_ready(flow.clone()))
            }
            _ => Super,
        }
    }

    #[action]
    fn enter_spawning(context: &mut Core, flow: &mut StartFlow) {
        context.stderr_tail.clear();
        let port = context.config.port;
        context.push(Effect::SpawnProcess {
            epoch: flow.epoch,
            port,
        });
    }

    /// W1: wait until the gateway sends `connect.challenge`. → connecting. The owned process's
    /// exit fails the attempt, except when we were waiting for a process that restarted in place
    /// (L5 step 2): then it is gone for good and the flow probes again and spawns at once. If
    /// that process does not become ready in time, it is terminated and waited for (→
    /// awaiting_ready) instead of being waited for again by a retry.
    #[state(
        superstate = "starting",
        entry_action = "enter_awaiting_ready",
        exit_action = "exit_awaiting_ready"
    )]
    fn awaiting_ready(context: &mut Core, flow: &mut StartFlow, event: &Event) -> Outcome<State> {
        match event {
            Event::StartObserved { observation, .. } => {
                start_observed(context, flow, *observation);
                Handled
            }
            Event::TimerFired {
                timer: TimerKind::ChallengeWait,
                ..
            } => Transition(no_challenge(context, flow)),
            Event::ReadinessConfirmed { .. } => {
                flow.ready_at = Some(context.now_ms);
                if flow.own_process {
                    // F5: our process listens again after its in-place restart; from here the
                    // handshake and the startup window (W1) decide.
                    end_in_place_bound(context);
                }
                Transition(State::connecting(flow.clone()))
            }
            Event::StepFailed { failure, .. }
                if owned_process_does_not_serve(context, flow, failure) =>
            {
                Transition(replace_owned_process(context, flow, failure))
            }
            Event::ProcessExited { pid, code } if flow.own_process => {
                record_exit(context, *pid, *code);
                flow.own_process = false;
                context.log(
                    LogLevel::Info,
                    "the owned gateway exited while we waited for it; spawning a new one",
                );
                Transition(State::probing_port(flow.clone()))
            }
            _ => Super,
        }
    }

    #[action]
    fn enter_awaiting_ready(context: &mut Core, flow: &mut StartFlow) {
        let port = context.config.port;
        context.push(Effect::AwaitReadiness {
            epoch: flow.epoch,
            port,
        });
    }

    #[action]
    fn exit_awaiting_ready(context: &mut Core) {
        context.cancel(TimerKind::ChallengeWait);
    }

    /// C1: handshake. → running; the startup-window answer retries after `retryAfterMs`
    /// without using an attempt (W1 beyond).
    #[state(
        superstate = "starting",
        entry_action = "enter_connecting",
        exit_action = "exit_connecting"
    )]
    fn connecting(context: &mut Core, flow: &mut StartFlow, event: &Event) -> Outcome<State> {
        match event {
            Event::HandshakeCompleted { handshake, .. } => {
                Transition(handshake_completed(context, flow, handshake))
            }
            Event::StartupWindow { retry_after_ms, .. } => {
                flow.seen.window_answers = flow.seen.window_answers.saturating_add(1);
                let delay =
                    retry_after_ms.unwrap_or(context.config.connect.startup_window_retry_ms);
                flow.startup_retry_ms = delay;
                let interval_ms = context.config.connect.startup_probe_interval_ms;
                if interval_ms > 0 {
                    context.log(
                        LogLevel::Debug,
                        "gateway still starting; connecting once its /startupz answers 200"
                            .to_string(),
                    );
                    context.push(Effect::WatchStartup {
                        epoch: flow.epoch,
                        port: context.config.port,
                        interval_ms,
                    });
                } else {
                    context.log(
                        LogLevel::Debug,
                        format!("gateway still starting; retrying connect in {delay} ms"),
                    );
                    context.arm(TimerKind::ConnectRetry, delay);
                }
                Handled
            }
            Event::RestartWindow { retry_after_ms, .. } => {
                // F7: the gateway restarts in place; like W1's startup window: no error, no
                // attempt used, connect again after its `retryAfterMs`.
                let delay =
                    retry_after_ms.unwrap_or(context.config.connect.startup_window_retry_ms);
                flow.seen.window_answers = flow.seen.window_answers.saturating_add(1);
                context.log(
                    LogLevel::Info,
                    format!("gateway is restarting in place; connecting again in {delay} ms"),
                );
                context.arm(TimerKind::ConnectRetry, delay);
                Handled
            }
            Event::StartupWatched { settled: true, .. } => {
                context.log(
                    LogLevel::Debug,
                    "gateway /startupz answered 200; connecting now".to_string(),
                );
                let port = context.config.port;
                context.push(Effect::OpenConnection {
                    epoch: flow.epoch,
                    port,
                });
                Handled
            }
            Event::StartupWatched { settled: false, .. } => {
                let delay = flow.startup_retry_ms;
                context.log(
                    LogLevel::Debug,
                    format!("gateway has no /startupz to watch; retrying connect in {delay} ms"),
                );
                context.arm(TimerKind::ConnectRetry, delay);
                Handled
            }
            Event::TimerFired {
                timer: TimerKind::ConnectRetry,
                ..
            } => {
                let port = context.config.port;
                context.push(Effect::OpenConnection {
                    epoch: flow.epoch,
                    port,
                });
                Handled
            }
            _ => Super,
        }
    }

    #[action]
    fn enter_connecting(context: &mut Core, flow: &mut StartFlow) {
        let port = context.config.port;
        context.push(Effect::OpenConnection {
            epoch: flow.epoch,
            port,
        });
    }

    #[action]
    fn exit_connecting(context: &mut Core) {
        context.cancel(TimerKind::ConnectRetry);
    }

    /// L6, F2: the doctor repair, at most once per config content: read the config's digest;
    /// content the doctor already saw fails the start (no retry); else run the doctor, remember
    /// the digest of what it left, and → probing_port with error cleared and attempts reset.
    #[state(superstate = "starting", entry_action = "enter_repairing")]
    fn repairing(context: &mut Core, flow: &mut StartFlow, event: &Event) -> Outcome<State> {
        match event {
            Event::ConfigDigestRead { digest, .. } => {
                let key = digest_key(digest.as_deref());
                match flow.repair_phase {
                    RepairPhase::DigestBefore => {
                        if flow.repair_optional && context.doctor_seen.contains(&key) {
                            // F2/F5: no second run on this content; spawn and let the gateway
                            // say whether the config is still the problem.
                            context.log(
                                LogLevel::Info,
                                "the doctor already ran on this config; replacing the gateway without it",
                            );
                            flow.repair_phase = RepairPhase::Idle;
                            flow.repair_optional = false;
                            return Transition(State::probing_port(flow.clone()));
                        }
                        if context.doctor_seen.contains(&key) {
                            context.log(
                                LogLevel::Error,
                                "the doctor already ran on this config content; not running it again (F2)",
                            );
                            let line = flow.repair_reason.clone();
                            return Transition(finish_start_failed(
                                context,
                                flow,
                                StartFailure::ConfigStillInvalid { line },
                                None,
                            ));
                        }
                        context.doctor_seen.insert(key);
                        flow.repair_phase = RepairPhase::Doctor;
                        let timeout_ms = context.config.start.repair_timeout_ms;
                        context.log(
                            LogLevel::Warn,
                            format!(
                                "gateway config looks invalid{}; running doctor repair",
                                reason_suffix(flow.repair_reason.as_deref())
                            ),
                        );
                        context.push(Effect::RunDoctorRepair {
                            epoch: flow.epoch,
                            timeout_ms,
                        });
                        Handled
                    }
                    RepairPhase::DigestAfter => {
                        // F2: what the doctor left counts as seen: if it is still invalid, the
                        // doctor does not run on it again.
                        context.doctor_seen.insert(key);
                        flow.repair_phase = RepairPhase::Idle;
                        context.log(LogLevel::Info, "doctor repair succeeded; starting again");
                        context.error = None;
                        context.reconnect_attempts = 0;
                        flow.attempt = 1;
                        Transition(State::probing_port(flow.clone()))
                    }
                    RepairPhase::Idle | RepairPhase::Doctor => Handled,
                }
            }
            Event::RepairFinished { outcome, .. } => match outcome {
                Ok(()) => {
                    flow.repair_phase = RepairPhase::DigestAfter;
                    context.push(Effect::ReadConfigDigest { epoch: flow.epoch });
                    Handled
                }
                Err(failure) => Transition(finish_start_failed(
                    context,
                    flow,
                    StartFailure::RepairFailed {
                        failure: failure.clone(),
                    },
                    flow.repair_reason.clone(),
                )),
            },
            _ => Super,
        }
    }

    #[action]
    fn enter_repairing(context: &mut Core, flow: &mut StartFlow) {
        flow.repair_tried = true;
        flow.repair_phase = RepairPhase::DigestBefore;
        context.push(Effect::ReadConfigDigest { epoch: flow.epoch });
    }

    /// L6: wait before the next attempt. → probing_port.
    #[state(superstate = "starting", entry_action = "enter_retry_waiting")]
    fn retry_waiting(flow: &mut StartFlow, event: &Event) -> Outcome<State> {
        match event {
            Event::TimerFired {
                timer: TimerKind::StartRetry,
                ..
            } => {
                flow.attempt += 1;
                Transition(State::probing_port(flow.clone()))
            }
            _ => Super,
        }
    }

    #[action]
    fn enter_retry_waiting(context: &mut Core) {
        let delay = context.config.start.retry_delay_ms;
        context.arm(TimerKind::StartRetry, delay);
    }

    // ----------------------------------------------------------------------------------------
    // Running.
    // ----------------------------------------------------------------------------------------

    /// S1 `running`. Heartbeat (H1–H3), health checks (H4), ready signals (G1, G2), stable-run
    /// reset (N5), restart (R1–R5) and reload (P3, P4). Leaves on socket close or process exit
    /// (X2, N1) → reconnecting, stopped or (Windows, not 1012) stopped awaiting the exit.
    #[state(
        superstate = "active",
        entry_action = "enter_running",
        exit_action = "exit_running"
    )]
    fn running(context: &mut Core, run: &mut RunState, event: &Event) -> Outcome<State> {
        match event {
            Event::Command { command, reply } => match command {
                Command::Start => {
                    context.log(LogLevel::Debug, "gateway already running; start skipped");
                    context.reply(
                        *reply,
                        CommandOutcome::Ignored {
                            reason: IgnoredReason::AlreadyRunning,
                        },
                    );
                    Handled
                }
                Command::Restart => match request_restart(context, LifecycleState::Running, *reply)
                {
                    Some(state) => Transition(state),
                    None => Handled,
                },
                Command::Reload { policy } => {
                    match request_reload(context, LifecycleState::Running, policy, *reply) {
                        Some(state) => Transition(state),
                        None => Handled,
                    }
                }
                _ => Super,
            },
            Event::ProofOfLife { .. } => {
                proof_of_life(context, run);
                Handled
            }
            Event::ProcessSampled { sample, .. } => {
                let now = context.now_ms;
                run.liveness.on_sample(*sample, now);
                match evaluate_liveness(context, run) {
                    Some(state) => Transition(state),
                    None => Handled,
                }
            }
            Event::ProbeFinished { probe, outcome, .. } => {
                match probe_finished(context, run, *probe, outcome) {
                    Some(state) => Transition(state),
                    None => Handled,
                }
            }
            Event::TimerFired { timer, .. } => match timer {
                TimerKind::Heartbeat => match heartbeat_tick(context, run) {
                    Some(state) => Transition(state),
                    None => Handled,
                },
                TimerKind::HealthCheck => {
                    context.push(Effect::CheckSocket { epoch: run.epoch });
                    let interval = context.config.heartbeat.health_check_interval_ms;
                    context.arm(TimerKind::HealthCheck, interval);
                    Handled
                }
                TimerKind::ReadyProbe => {
                    ready_probe_due(context, run);
                    Handled
                }
                TimerKind::LivenessDeadline => {
                    let deadline = run.liveness.deadline_at();
                    let now = context.now_ms;
                    if now < deadline {
                        context.arm(TimerKind::LivenessDeadline, deadline - now);
                        return Handled;
                    }
                    let deadline_ms = context.config.liveness.deadline_ms;
                    context.arm(TimerKind::LivenessDeadline, deadline_ms);
                    match evaluate_liveness(context, run) {
                        Some(state) => Transition(state),
                        None => Handled,
                    }
                }
                TimerKind::LivenessRestart => {
                    // D7: the cooldown is over; the restart runs unless evidence of life came.
                    if !run.liveness.restart_decided() {
                        return Handled;
                    }
                    context.log(
                        LogLevel::Warn,
                        "liveness restart: the governor's cooldown is over; restarting now",
                    );
                    match liveness_restart(context) {
                        Some(state) => Transition(state),
                        None => Handled,
                    }
                }
                TimerKind::StableRun => {
                    // N5: the gateway stayed up long enough; backoff starts over.
                    context.reconnect_attempts = 0;
                    Handled
                }
                _ => Super,
            },
            Event::SocketChecked { open, .. } => {
                if !*open {
                    context.publish(Notice::Error {
                        message: "Gateway health check failed: WebSocket not connected".into(),
                        failure: None,
                    });
                }
                Handled
            }
            Event::GatewayReadySignal { source, .. } => {
                if !context.gateway_ready {
                    context.log(
                        LogLevel::Info,
                        format!("gateway subsystems ready ({source:?})"),
                    );
                    mark_ready(context);
                }
                Handled
            }
            Event::ShutdownAnnounced {
                restart_expected_ms,
                ..
            } => {
                shutdown_announced(context, *restart_expected_ms);
                Handled
            }
            Event::SocketClosed { code, .. } => Transition(socket_closed(context, *code)),
            Event::ProcessExited { pid, code } => {
                record_exit(context, *pid, *code);
                if *code == Some(EX_CONFIG) && context.auto_reconnect {
                    // F2: exit 78 while running: if the doctor already saw this config, the
                    // reconnect below would only loop; the digest decides (in `reconnecting`).
                    context.exit_config_check = true;
                    let epoch = context.epoch;
                    context.push(Effect::ReadConfigDigest { epoch });
                }
                context.push(Effect::CloseConnection);
                context.push(Effect::FailPendingRpcs {
                    error: RpcError::NotConnected,
                });
                context.stable_run = ran_stable(context);
                context.clear_connection();
                Transition(ask_reconnect(context).unwrap_or_else(State::stopped))
            }
            _ => Super,
        }
    }

    #[action]
    fn enter_running(context: &mut Core) {
        let heartbeat = context.config.heartbeat.interval_ms;
        let health = context.config.heartbeat.health_check_interval_ms;
        context.arm(TimerKind::Heartbeat, heartbeat);
        context.arm(TimerKind::HealthCheck, health);
        let deadline = context.config.liveness.deadline_ms;
        context.arm(TimerKind::LivenessDeadline, deadline);
        context.ready_probe_step = 0;
        if !context.gateway_ready {
            // G2: ready by a ready event or a core probe, never by a timer alone.
            let first = context
                .config
                .ready
                .probe_schedule_ms
                .first()
                .copied()
                .unwrap_or(0);
            context.arm(TimerKind::ReadyProbe, first);
        }
        let stable = context.config.reconnect.stable_uptime_ms;
        if stable > 0 {
            context.arm(TimerKind::StableRun, stable);
        } else {
            // N3 as in the original: success resets attempts at once.
            context.reconnect_attempts = 0;
        }
    }

    #[action]
    fn exit_running(context: &mut Core) {
        // X2: stop heartbeat and health checks; the ready, liveness and stable-run timers die too.
        context.cancel(TimerKind::Heartbeat);
        context.cancel(TimerKind::HealthCheck);
        context.cancel(TimerKind::ReadyProbe);
        context.cancel(TimerKind::LivenessDeadline);
        context.cancel(TimerKind::LivenessRestart);
        context.cancel(TimerKind::StableRun);
        context.ready_probe = None;
        context.diagnostics.consecutive_heartbeat_misses = 0;
    }

    // ----------------------------------------------------------------------------------------
    // Reconnecting.
    // ----------------------------------------------------------------------------------------

    /// S1 `reconnecting`: waits for the reconnect timer (N2/N3). → starting (auto-reconnect);
    /// a manual start cancels the timer and resets attempts (L3).
    #[state(
        superstate = "active",
        entry_action = "enter_reconnecting",
        exit_action = "exit_reconnecting"
    )]
    fn reconnecting(
        context: &mut Core,
        pending: &mut PendingReconnect,
        event: &Event,
    ) -> Outcome<State> {
        match event {
            Event::Command { command, reply } => match command {
                Command::Start => {
                    context.log(
                        LogLevel::Debug,
                        "manual start cancels the pending reconnect",
                    );
                    context.waiters.start.extend(*reply);
                    Transition(begin_start(context, StartKind::Manual, 0))
                }
                Command::Restart => {
                    defer_restart(context, *reply);
                    Handled
                }
                Command::Reload { policy } => {
                    match request_reload(context, LifecycleState::Reconnecting, policy, *reply) {
                        Some(state) => Transition(state),
                        None => Handled,
                    }
                }
                _ => Super,
            },
            Event::TimerFired {
                timer: TimerKind::Reconnect,
                ..
            } => {
                // N3: skip when the epoch moved or auto-reconnect is off.
                if pending.epoch != context.epoch || !context.auto_reconnect {
                    context.log(LogLevel::Debug, "skipping reconnect attempt: superseded");
                    return Transition(State::stopped());
                }
                context.reconnect_attempts_total = context.reconnect_attempts_total.wrapping_add(1);
                let delay = pending.delay_ms;
                Transition(begin_start(context, StartKind::AutoReconnect, delay))
            }
            Event::ProcessExited { pid, code } => {
                record_exit(context, *pid, *code);
                Handled
            }
            Event::ConfigDigestRead { digest, .. } if context.exit_config_check => {
                context.exit_config_check = false;
                if !context.doctor_seen.contains(&digest_key(digest.as_deref())) {
                    return Handled;
                }
                // F2: the gateway exited 78 with the config the doctor already saw: no loop.
                let line = context.last_stderr_line.clone();
                Transition(give_up_fatal(
                    context,
                    StartFailure::ConfigStillInvalid { line },
                ))
            }
            _ => Super,
        }
    }

    #[action]
    fn enter_reconnecting(context: &mut Core, pending: &mut PendingReconnect) {
        context.arm(TimerKind::Reconnect, pending.delay_ms);
    }

    #[action]
    fn exit_reconnecting(context: &mut Core) {
        context.cancel(TimerKind::Reconnect);
    }

    // ----------------------------------------------------------------------------------------
    // Stopping.
    // ----------------------------------------------------------------------------------------

    /// T2–T5 in progress: waiting for the external gateway's `shutdown` answer and/or the owned
    /// process's exit. → stopped, or starting when a start or restart follows.
    #[state(superstate = "supervised")]
    fn stopping(context: &mut Core, stop: &mut StopFlow, event: &Event) -> Outcome<State> {
        match event {
            Event::Command { command, reply } => match command {
                Command::Stop => {
                    if stop.then != AfterStop::Nothing {
                        // A stop cancels the start or restart that was to follow.
                        let restarts = std::mem::take(&mut context.waiters.restart);
                        context.reply_all(restarts, CommandOutcome::Superseded);
                        let starts = std::mem::take(&mut context.waiters.start);
                        context.reply_all(starts, CommandOutcome::Superseded);
                        context.restart_in_flight = false;
                        stop.then = AfterStop::Nothing;
                    }
                    context.waiters.stop.extend(*reply);
                    Handled
                }
                Command::Start => {
                    context.waiters.start.extend(*reply);
                    if stop.then == AfterStop::Nothing {
                        stop.then = AfterStop::Start;
                    }
                    Handled
                }
                Command::Restart | Command::Reload { .. } => {
                    stop_then_restart(context, stop, *reply);
                    Handled
                }
                Command::ForceTerminate => {
                    // T6 during T4: kill now, but keep waiting for the exit so the stop ends.
                    match stop.awaiting_pid {
                        Some(pid) => {
                            context.push(Effect::ForceKillProcess { pid });
                            context.reply(*reply, CommandOutcome::Completed);
                        }
                        None => context.reply(
                            *reply,
                            CommandOutcome::Ignored {
                                reason: IgnoredReason::NoOwnedProcess,
                            },
                        ),
                    }
                    Handled
                }
                _ => Super,
            },
            Event::ExternalShutdownFinished { outcome, .. } => {
                match outcome {
                    ExternalShutdownOutcome::Accepted => {
                        context.external_shutdown_supported = Some(true);
                    }
                    ExternalShutdownOutcome::Unsupported => {
                        context.external_shutdown_supported = Some(false);
                        context.log(
                            LogLevel::Info,
                            "external gateway does not support \"shutdown\"; not asking again",
                        );
                    }
                    ExternalShutdownOutcome::Failed(reason) => {
                        context.log(
                            LogLevel::Warn,
                            format!("shutdown request to the external gateway failed: {reason}"),
                        );
                    }
                }
                stop.awaiting_external = false;
                // T3 after T2.
                context.push(Effect::CloseConnection);
                Transition(continue_stop(context, stop))
            }
            Event::ProcessExited { pid, code } => {
                record_exit(context, *pid, *code);
                if stop.awaiting_pid == Some(*pid) {
                    stop.awaiting_pid = None;
                }
                Transition(continue_stop(context, stop))
            }
            Event::TimerFired {
                timer: TimerKind::RestartDebounce | TimerKind::ReloadDebounce,
                ..
            } => {
                // R7/P5: a debounce that fires while stopping restarts after the stop.
                stop_then_restart(context, stop, None);
                Handled
            }
            Event::TimerFired { .. } => Handled,
            // A process being stopped may say anything on its way out (F5 does not apply).
            Event::StderrLine { .. } => Handled,
            _ => Super,
        }
    }
}

/// A restart (or reload) asked for while stopping: join the restart that follows, or make the
/// stop's continuation a restart when the governor allows it.
fn stop_then_restart(core: &mut Core, stop: &mut StopFlow, reply: Option<ReplyId>) {
    if stop.then == AfterStop::Restart {
        // R2: join the restart in progress.
        core.waiters.restart.extend(reply);
        return;
    }
    match core.governor.decide(core.now_ms) {
        GovernorDecision::Allow => {
            core.restart_in_flight = true;
            core.waiters.restart.extend(reply);
            stop.then = AfterStop::Restart;
        }
        GovernorDecision::Suppress { retry_after_ms } => {
            suppressed(core, retry_after_ms, reply);
        }
    }
}

impl Lifecycle {
    fn after_transition(&mut self, source: &State, target: &State, context: &mut Core) {
        context
            .transitions
            .push((state_name(source), state_name(target)));
    }
}

// --------------------------------------------------------------------------------------------
// Names and hierarchy (used by the wrapper and the diagram generator).
// --------------------------------------------------------------------------------------------

/// The leaf state's name.
pub fn state_name(state: &State) -> &'static str {
    match state {
        State::Stopped {} => "stopped",
        State::Failed {} => "failed",
        State::ProbingPort { .. } => "probing_port",
        State::KillingOrphans { .. } => "killing_orphans",
        State::WaitingPortFree { .. } => "waiting_port_free",
        State::Spawning { .. } => "spawning",
        State::AwaitingReady { .. } => "awaiting_ready",
        State::Connecting { .. } => "connecting",
        State::Repairing { .. } => "repairing",
        State::RetryWaiting { .. } => "retry_waiting",
        State::Running { .. } => "running",
        State::Reconnecting { .. } => "reconnecting",
        State::Stopping { .. } => "stopping",
    }
}

/// The superstates of a leaf, innermost first.
pub fn superstates_of(leaf: &str) -> &'static [&'static str] {
    match leaf {
        "stopped" | "failed" => &["idle", "supervised"],
        "probing_port" | "killing_orphans" | "waiting_port_free" | "spawning"
        | "awaiting_ready" | "connecting" | "repairing" | "retry_waiting" => {
            &["starting", "active", "supervised"]
        }
        "running" | "reconnecting" => &["active", "supervised"],
        _ => &["supervised"],
    }
}

/// Every leaf state, in diagram order.
pub const LEAF_STATES: [&str; 13] = [
    "stopped",
    "probing_port",
    "killing_orphans",
    "waiting_port_free",
    "spawning",
    "awaiting_ready",
    "connecting",
    "repairing",
    "retry_waiting",
    "running",
    "reconnecting",
    "stopping",
    "failed",
];

/// S1: the public state of a leaf.
pub fn public_state(state: &State) -> LifecycleState {
    match state {
        State::Stopped {} => LifecycleState::Stopped,
        State::Failed {} => LifecycleState::Error,
        State::Running { .. } => LifecycleState::Running,
        State::Reconnecting { .. } => LifecycleState::Reconnecting,
        State::Stopping { stop } => stop.shown,
        _ => LifecycleState::Starting,
    }
}

// --------------------------------------------------------------------------------------------
// Start (L1–L8).
// --------------------------------------------------------------------------------------------

/// L2–L4: begin a start flow. Returns its first state.
fn begin_start(core: &mut Core, kind: StartKind, reconnect_delay_ms: u64) -> State {
    let epoch = core.bump_epoch();
    core.auto_reconnect = true;
    core.push(Effect::RefreshReloadPolicy { force: true });
    if kind != StartKind::AutoReconnect {
        // L3: a manual start (or a restart) cancels a pending reconnect and resets the count.
        core.cancel(TimerKind::Reconnect);
        core.reconnect_attempts = 0;
        // D5: a user's start or restart may spawn again.
        core.transport_only = false;
        core.external_unavailable = false;
    }
    core.gateway_ready = false;
    core.stderr_tail.clear();
    let progress = core.config.start.progress_interval_ms;
    if progress > 0 {
        core.arm(TimerKind::StartProgress, progress);
    }
    let port = core.config.port;
    core.log(
        LogLevel::Info,
        format!("gateway start requested (port={port}, kind={kind:?})"),
    );
    State::probing_port(new_flow(core, epoch, kind, reconnect_delay_ms))
}

/// The flow [`begin_start`] would begin with, for callers that enter it elsewhere (F5).
fn begin_start_flow(core: &mut Core, kind: StartKind) -> StartFlow {
    match begin_start(core, kind, 0) {
        State::ProbingPort { flow } => flow,
        _ => new_flow(core, core.epoch, kind, 0),
    }
}

fn new_flow(core: &Core, epoch: u64, kind: StartKind, reconnect_delay_ms: u64) -> StartFlow {
    StartFlow {
        epoch,
        attempt: 1,
        repair_tried: false,
        kind,
        own_process: false,
        external: false,
        requested_at: core.now_ms,
        spawned_at: None,
        ready_at: None,
        reconnect_delay_ms,
        startup_retry_ms: core.config.connect.startup_window_retry_ms,
        repair_phase: RepairPhase::Idle,
        repair_reason: None,
        seen: StartSeen::default(),
        replacing_hung: false,
        trace: Vec::new(),
        repair_optional: false,
    }
}

/// L5 steps 1–4 after the port probe (O1).
fn after_probe(core: &mut Core, flow: &mut StartFlow, probe: &PortProbe) -> State {
    let port = core.config.port;
    let owned = core.owned_pid;
    if core.transport_only && owned.is_none() {
        // D5: reconnect to the user's gateway only; never spawn our own in its place.
        if probe.answers_as_gateway {
            core.log(
                LogLevel::Info,
                format!("the external gateway on port {port} answers again; reattaching"),
            );
            flow.external = true;
            return State::connecting(flow.clone());
        }
        return step_failed(core, flow, StartFailure::ExternalUnavailable { port });
    }
    if probe.listeners.is_empty() {
        if owned.is_some() {
            // L5 step 2: our process lives but does not listen: it restarted in place.
            flow.own_process = true;
            return State::awaiting_ready(flow.clone());
        }
        return before_spawn(core, flow);
    }
    // A listening socket with no visible owner while our process has not been reaped yet is our
    // dying process's (a crash reported by the socket before the exit): wait for it, its exit
    // sends the flow straight back to probe and spawn (N5: no failed attempt, no backoff).
    let ownerless = probe
        .listeners
        .iter()
        .all(|listener| listener.pid.is_none());
    if owned.is_some()
        && (ownerless || probe.listeners.iter().any(|listener| listener.pid == owned))
    {
        flow.own_process = true;
        if probe.answers_as_gateway {
            return State::connecting(flow.clone());
        }
        return State::awaiting_ready(flow.clone());
    }
    let pids: Vec<u32> = probe
        .listeners
        .iter()
        .filter_map(|listener| listener.pid)
        .collect();
    if probe
        .listeners
        .iter()
        .all(|listener| listener.ours_by_record)
    {
        core.log(
            LogLevel::Warn,
            format!("terminating gateway left behind by an earlier run (pids {pids:?})"),
        );
        core.push(Effect::KillOrphans {
            epoch: flow.epoch,
            pids,
        });
        return State::killing_orphans(flow.clone());
    }
    let first_pid = probe.listeners.first().and_then(|listener| listener.pid);
    if probe.answers_as_gateway {
        match core.config.orphans.foreign_gateway {
            ForeignGatewayPolicy::Attach => {
                core.log(
                    LogLevel::Info,
                    format!("a gateway already listens on port {port}; attaching as external"),
                );
                flow.external = true;
                return State::connecting(flow.clone());
            }
            ForeignGatewayPolicy::Replace => {
                core.log(
                    LogLevel::Warn,
                    format!("replacing the foreign gateway on port {port} (pids {pids:?})"),
                );
                core.push(Effect::KillOrphans {
                    epoch: flow.epoch,
                    pids,
                });
                return State::killing_orphans(flow.clone());
            }
            ForeignGatewayPolicy::Fail => {
                return step_failed(
                    core,
                    flow,
                    StartFailure::ForeignGateway {
                        port,
                        pid: first_pid,
                    },
                );
            }
        }
    }
    if ownerless {
        // Nobody visibly holds the socket (a process in its last moments, or one we may not
        // inspect): not proof of an unrelated program, so a transient failure worth a retry.
        return step_failed(core, flow, StartFailure::PortStillOccupied { port });
    }
    let program = probe
        .listeners
        .first()
        .and_then(|listener| listener.program.clone());
    step_failed(
        core,
        flow,
        StartFailure::PortHeldByOther {
            port,
            pid: first_pid,
            program,
        },
    )
}

/// L5 step 3 on Windows, else step 4.
fn before_spawn(core: &mut Core, flow: &mut StartFlow) -> State {
    if core.owned_pid.is_some() {
        // Never two owned processes: wait for the one we have instead.
        core.log(
            LogLevel::Warn,
            "an owned gateway still lives; waiting for it instead of spawning",
        );
        flow.own_process = true;
        return State::awaiting_ready(flow.clone());
    }
    if core.config.is_windows() {
        State::waiting_port_free(flow.clone())
    } else {
        State::spawning(flow.clone())
    }
}

/// L5 step 2: our process, which restarted in place, is alive but never became ready. (A
/// handshake that times out on it keeps the retry and backoff path: that process does listen.)
fn owned_process_does_not_serve(core: &Core, flow: &StartFlow, failure: &StartFailure) -> bool {
    flow.own_process
        && core.owned_pid.is_some()
        && matches!(failure, StartFailure::ReadyTimeout { .. })
}

/// L5 step 2: replace our process that restarted in place but does not serve (a gateway that
/// finds its config invalid on an in-place restart stays alive without a listener until it is
/// signalled again). Waiting for it again cannot help, and a retry would find it again. Its
/// exit (after the kill grace at worst) sends the flow on to probe and spawn.
fn replace_owned_process(core: &mut Core, flow: &mut StartFlow, failure: &StartFailure) -> State {
    if let Some(pid) = core.owned_pid {
        // Only say "in place" when an in-place restart is what we waited for (a hung fresh
        // gateway found again by a retry is not one).
        let after = if core.in_place_since.is_some() {
            " after restarting in place"
        } else {
            ""
        };
        let seen = seen_summary(flow);
        core.log(
            LogLevel::Warn,
            format!(
                "the owned gateway (pid={pid}) did not become ready{after} ({failure}; seen: \
                 {seen}); replacing it"
            ),
        );
        let grace_ms = core.config.stop.kill_grace_ms;
        core.push(Effect::TerminateProcess { pid, grace_ms });
    }
    State::awaiting_ready(flow.clone())
}

/// L6/L7, F1–F4 after a failed step.
fn step_failed(core: &mut Core, flow: &mut StartFlow, failure: StartFailure) -> State {
    let tail: Vec<String> = core.stderr_tail.lines().map(str::to_string).collect();
    let choice = choose_recovery(RecoveryInput {
        failure: &failure,
        stderr_tail: &tail,
        repair_tried: flow.repair_tried,
        attempt: flow.attempt,
        max_attempts: core.config.start.max_attempts,
    });
    let mut reason = choice.failure.reason.clone();
    if reason.is_none()
        && matches!(
            failure,
            StartFailure::ReadyTimeout { .. } | StartFailure::NoChallenge { .. }
        )
    {
        // A start that fails without a word from the gateway names what was seen instead.
        reason = Some(format!("seen: {}", seen_summary(flow)));
    }
    // When this attempt ends the start, "gateway start failed" says so next, with the reason:
    // the attempt line is then a detail (each failure printed once: README, docs/cli.md).
    let level = if choice.recovery == Recovery::Fail {
        LogLevel::Debug
    } else {
        LogLevel::Warn
    };
    core.log(
        level,
        format!(
            "gateway start attempt {}/{} failed: {failure}{}; recovery: {:?}",
            flow.attempt,
            core.config.start.max_attempts,
            reason_suffix(reason.as_deref()),
            choice.recovery
        ),
    );
    match choice.recovery {
        Recovery::Repair => {
            flow.repair_reason = reason;
            State::repairing(flow.clone())
        }
        Recovery::Retry => State::retry_waiting(flow.clone()),
        Recovery::Fail => {
            let line = reason.clone().unwrap_or_else(|| failure.to_string());
            let failure = match choice.failure.class {
                FailureClass::LockHeld => StartFailure::LockHeld { line },
                FailureClass::RuntimeIncompatible => match failure {
                    StartFailure::RuntimeIncompatible { .. } => failure,
                    _ => StartFailure::RuntimeIncompatible { message: line },
                },
                // F1: still invalid after the doctor ran in this flow.
                FailureClass::ConfigInvalid => StartFailure::ConfigStillInvalid { line: reason },
                FailureClass::Permanent | FailureClass::Transient => {
                    return finish_start_failed(core, flow, failure, reason)
                }
            };
            finish_start_failed(core, flow, failure, None)
        }
    }
}

fn reason_suffix(reason: Option<&str>) -> String {
    reason
        .map(|reason| format!(" ({reason})"))
        .unwrap_or_default()
}

/// F1–F3 (and auth rejections): failures a restart cannot fix.
fn stops_reconnecting(failure: &StartFailure) -> bool {
    failure.is_auth_rejection()
        || matches!(
            failure,
            StartFailure::LockHeld { .. }
                | StartFailure::RuntimeIncompatible { .. }
                | StartFailure::ConfigStillInvalid { .. }
        )
}

/// L8, R4, N3: a start flow failed for good.
fn finish_start_failed(
    core: &mut Core,
    flow: &mut StartFlow,
    failure: StartFailure,
    reason: Option<String>,
) -> State {
    // A liveness restart whose start failed is over; what follows is the reconnect's business.
    core.liveness_restart = None;
    let command_failure = CommandFailure::Start {
        failure: failure.clone(),
        reason,
    };
    let message = command_failure.to_string();
    core.error = Some(message.clone());
    core.flow_ended = true;
    core.publish(Notice::Error {
        message: message.clone(),
        failure: Some(command_failure.clone()),
    });
    core.log(
        LogLevel::Error,
        format!(
            "gateway start failed (port={}, reconnectAttempts={}): {message}",
            core.config.port, core.reconnect_attempts
        ),
    );
    let starts = std::mem::take(&mut core.waiters.start);
    core.reply_all(
        starts,
        CommandOutcome::Failed {
            failure: command_failure.clone(),
        },
    );
    if stops_reconnecting(&failure) {
        // A wrong token, a held lock, an old runtime or a config the doctor could not fix will
        // not heal by itself: no restart storm, auto-reconnect off until the next start.
        core.log(
            LogLevel::Error,
            if failure.is_auth_rejection() {
                "the gateway rejected our credentials; not reconnecting until the next start"
            } else {
                "retrying cannot fix this; not reconnecting until the next start"
            },
        );
        core.auto_reconnect = false;
        if flow.kind == StartKind::Restart {
            core.restart_in_flight = false;
            let restarts = std::mem::take(&mut core.waiters.restart);
            core.reply_all(
                restarts,
                CommandOutcome::Failed {
                    failure: command_failure.clone(),
                },
            );
        }
        core.publish(Notice::GaveUp {
            reason: message,
            failure: Some(command_failure),
        });
        return State::failed();
    }
    let next = match flow.kind {
        StartKind::Manual => State::failed(),
        StartKind::Restart => {
            // R4: re-enable auto-reconnect and let it heal.
            core.restart_in_flight = false;
            let restarts = std::mem::take(&mut core.waiters.restart);
            core.reply_all(
                restarts,
                CommandOutcome::Failed {
                    failure: command_failure.clone(),
                },
            );
            core.auto_reconnect = true;
            core.stable_run = false;
            ask_reconnect(core).unwrap_or_else(State::failed)
        }
        StartKind::AutoReconnect => {
            reconnect_metric(core, flow, false, Some(message.clone()));
            core.stable_run = false;
            ask_reconnect(core).unwrap_or_else(State::failed)
        }
    };
    if matches!(next, State::Failed {}) && !core.is_armed(TimerKind::Reconnect) {
        // F8: nothing will try again (ask_reconnect published its own give-up).
        if core.error.as_deref() == Some(message.as_str()) {
            core.publish(Notice::GaveUp {
                reason: message,
                failure: Some(command_failure),
            });
        }
    }
    next
}

/// F2 (exit 78 while running with a config the doctor already saw): `error`, no reconnect.
fn give_up_fatal(core: &mut Core, failure: StartFailure) -> State {
    let command_failure = CommandFailure::Start {
        failure,
        reason: None,
    };
    let message = command_failure.to_string();
    core.log(
        LogLevel::Error,
        format!("{message}; not reconnecting until the next start"),
    );
    core.error = Some(message.clone());
    core.auto_reconnect = false;
    core.cancel(TimerKind::Reconnect);
    core.flow_ended = true;
    core.publish(Notice::Error {
        message: message.clone(),
        failure: Some(command_failure.clone()),
    });
    core.publish(Notice::GaveUp {
        reason: message,
        failure: Some(command_failure),
    });
    State::failed()
}

/// The most startup-trace phases kept per start (a gateway printing more is not believed).
const MAX_TRACE_PHASES: usize = 128;

/// L5 step 4: add one startup-trace phase (repeats of a name add up).
fn note_trace_phase(flow: &mut StartFlow, phase: StartupPhase) {
    if let Some(known) = flow.trace.iter_mut().find(|known| known.name == phase.name) {
        known.duration_ms = known.duration_ms.saturating_add(phase.duration_ms);
    } else if flow.trace.len() < MAX_TRACE_PHASES {
        flow.trace.push(phase);
    }
}

/// F2: the key a digest is remembered under (a missing file is content too).
fn digest_key(digest: Option<&str>) -> String {
    digest.unwrap_or("<no config file>").to_string()
}

/// The exit code of an invalid or missing config (`EX_CONFIG`, OPENCLAW.md §8).
const EX_CONFIG: i32 = 78;

/// F4/F5: remember the owned process's last meaningful stderr line; its "startup failed …
/// Process will stay alive" line means an in-place restart failed: act on it at once.
fn note_stderr(core: &mut Core, line: &str) -> Option<State> {
    if let Some(meaningful) = last_meaningful_line([line]) {
        core.last_stderr_line = Some(meaningful);
    }
    if is_startup_failed_line(line) {
        core.startup_failed_line = Some(line.trim().to_string());
    }
    if is_stay_alive_signal(line) && core.replacement.is_none() && core.owned_pid.is_some() {
        // The reason is the block's "startup failed: …" line when it came first.
        let reason = core
            .startup_failed_line
            .take()
            .unwrap_or_else(|| line.trim().to_string());
        return Some(in_place_failed(core, reason));
    }
    None
}

/// F5: arm the in-place restart bound (once per restart; a later signal does not extend it).
fn begin_in_place_bound(core: &mut Core) {
    let bound = core.config.connect.in_place_ready_timeout_ms;
    if bound == 0 || core.owned_pid.is_none() || core.in_place_since.is_some() {
        return;
    }
    core.in_place_since = Some(core.now_ms);
    core.arm(TimerKind::InPlaceRestart, bound);
}

/// F5: the in-place restart is over (served again, or the process is gone).
fn end_in_place_bound(core: &mut Core) {
    core.in_place_since = None;
    core.cancel(TimerKind::InPlaceRestart);
}

/// F5: the owned gateway restarted in place but does not serve (it said so, or the bound
/// passed): `error` with its reason now, terminate it, and replace it by a fresh spawn once it
/// has exited (doctor first when the reason is an invalid config, F1/F2).
fn in_place_failed(core: &mut Core, reason: String) -> State {
    let pid = core.owned_pid;
    let doctor_first = is_invalid_config_signal(&reason);
    let command_failure = CommandFailure::InPlaceRestartFailed { pid, reason };
    let message = command_failure.to_string();
    core.log(LogLevel::Error, format!("{message}; replacing it"));
    core.error = Some(message.clone());
    core.publish(Notice::Error {
        message: message.clone(),
        failure: Some(command_failure.clone()),
    });
    // E1: whatever flow waited for this process is superseded.
    core.bump_epoch();
    end_in_place_bound(core);
    for timer in [
        TimerKind::Reconnect,
        TimerKind::StartRetry,
        TimerKind::ConnectRetry,
        TimerKind::ChallengeWait,
        TimerKind::StartProgress,
        TimerKind::ReloadCheck,
        TimerKind::ReloadDeadline,
    ] {
        core.cancel(timer);
    }
    // F9: the reload that asked for this restart is settled by it.
    if let Some(reload) = core.reload.take() {
        core.reply_all(
            reload.waiters,
            CommandOutcome::Failed {
                failure: command_failure.clone(),
            },
        );
    }
    // The replacement is a fresh gateway: a restart asked for meanwhile is satisfied by it.
    core.deferred_restart_since = None;
    core.exit_config_check = false;
    core.push(Effect::CloseConnection);
    core.push(Effect::FailPendingRpcs {
        error: RpcError::NotConnected,
    });
    core.clear_connection();
    core.flow_ended = true;
    if let Some(pid) = pid {
        core.replacement = Some(Replacement {
            doctor_first,
            restart: core.restart_in_flight,
        });
        let grace_ms = core.config.stop.kill_grace_ms;
        core.push(Effect::TerminateProcess { pid, grace_ms });
    }
    State::failed()
}

/// F5: the fresh spawn that replaces a gateway that failed to restart in place. With an invalid
/// config as the reason the doctor runs first (F2 keeps it to once per content).
fn begin_replacement(core: &mut Core, replacement: Replacement) -> State {
    let kind = if replacement.restart {
        StartKind::Restart
    } else {
        StartKind::AutoReconnect
    };
    let reason = core.error.clone();
    let mut flow = begin_start_flow(core, kind);
    if replacement.doctor_first {
        flow.repair_reason = reason;
        flow.repair_optional = true;
        return State::repairing(flow);
    }
    State::probing_port(flow)
}

/// F6: the readiness wait saw the port: once it is open, the challenge must follow within
/// C1's challenge timeout, unless the gateway's `/startupz` says it is still starting (then
/// `ready_timeout_ms` bounds the wait).
fn start_observed(core: &mut Core, flow: &mut StartFlow, observation: StartObservation) {
    flow.seen.observation = Some(observation);
    if !observation.port_open {
        return;
    }
    if flow.own_process {
        // F5: the listener is back; F6's challenge bound takes over.
        end_in_place_bound(core);
    }
    if flow.seen.port_open_at.is_none() {
        flow.seen.port_open_at = Some(core.now_ms);
    }
    if observation.startupz == Some(503) {
        if core.is_armed(TimerKind::ChallengeWait) {
            core.log(
                LogLevel::Debug,
                "gateway /startupz says it is still starting; waiting up to the ready timeout",
            );
        }
        core.cancel(TimerKind::ChallengeWait);
        return;
    }
    if !core.is_armed(TimerKind::ChallengeWait) {
        let bound = core.config.connect.challenge_timeout_ms;
        core.arm(TimerKind::ChallengeWait, bound);
    }
}

/// F6: the port is open but no challenge came in time: the attempt fails. Our own process is
/// terminated, so the next attempt spawns a fresh one instead of waiting for it again.
fn no_challenge(core: &mut Core, flow: &mut StartFlow) -> State {
    let port = core.config.port;
    let waited_ms = flow
        .seen
        .port_open_at
        .map_or(0, |at| core.now_ms.saturating_sub(at));
    if let Some(pid) = core.owned_pid {
        core.log(
            LogLevel::Warn,
            format!("the gateway (pid {pid}) sends no connect.challenge; terminating it"),
        );
        let grace_ms = core.config.stop.kill_grace_ms;
        core.push(Effect::TerminateProcess { pid, grace_ms });
        flow.replacing_hung = true;
    }
    step_failed(core, flow, StartFailure::NoChallenge { port, waited_ms })
}

/// F6: what a start attempt has seen, in words (progress lines, failures without a reason).
fn seen_summary(flow: &StartFlow) -> String {
    let port = match flow.seen.observation {
        Some(observation) if observation.port_open => "port open",
        Some(_) => "port not open",
        None if flow.ready_at.is_some() => "port open",
        None => "port never probed open",
    };
    let startupz = match flow.seen.observation.and_then(|seen| seen.startupz) {
        Some(code) => format!("/startupz {code}"),
        None => "/startupz no answer".to_string(),
    };
    let challenge = if flow.ready_at.is_some() {
        "challenge received"
    } else {
        "no challenge"
    };
    format!(
        "{port}, {startupz}, {challenge}, {} startup/restart window answers",
        flow.seen.window_answers
    )
}

/// F6: one progress line of a start that takes long: what it has seen so far.
fn log_start_progress(core: &mut Core, flow: &StartFlow) {
    let interval = core.config.start.progress_interval_ms;
    if interval > 0 {
        core.arm(TimerKind::StartProgress, interval);
    }
    let elapsed_s = core.now_ms.saturating_sub(flow.requested_at) / 1_000;
    let port = match flow.seen.observation {
        Some(observation) if observation.port_open => "open",
        Some(_) => "not open",
        None => "not probed yet",
    };
    let startupz = match flow.seen.observation.and_then(|seen| seen.startupz) {
        Some(code) => code.to_string(),
        None => "no answer".to_string(),
    };
    let challenge = if flow.ready_at.is_some() {
        "received"
    } else {
        "not yet"
    };
    let pid = core
        .owned_pid
        .map_or("none".to_string(), |pid| pid.to_string());
    let last = core
        .last_stderr_line
        .as_deref()
        .map(|line| format!("; last gateway line: {line}"))
        .unwrap_or_default();
    core.log(
        LogLevel::Info,
        format!(
            "gateway start in progress for {elapsed_s} s (attempt {}/{}, pid {pid}): port {port}, \
             /startupz {startupz}, challenge {challenge}, startup/restart window answers {}{last}",
            flow.attempt, core.config.start.max_attempts, flow.seen.window_answers
        ),
    );
}

/// C1 success: state `running`.
fn handshake_completed(core: &mut Core, flow: &mut StartFlow, handshake: &Handshake) -> State {
    let now = core.now_ms;
    core.connected_at = Some(now);
    core.version = handshake.server_version.clone();
    core.protocol = Some(handshake.protocol);
    core.boot_id = handshake.boot_id.clone();
    core.external = flow.external;
    core.error = None;
    core.flow_ended = true;
    core.diagnostics.record_alive(now);
    if flow.external {
        // An attached gateway is not ours: never show or signal its pid.
        core.log(LogLevel::Info, "connected to an external gateway");
    }
    if let (Some(spawned_at), Some(ready_at)) = (flow.spawned_at, flow.ready_at) {
        let total_ms = now.saturating_sub(flow.requested_at);
        let slowest = flow
            .trace
            .iter()
            .max_by_key(|phase| phase.duration_ms)
            .cloned();
        if total_ms >= core.config.start.slow_start_ms {
            let stage = slowest.as_ref().map_or_else(
                || "no startup trace from the gateway".to_string(),
                |phase| format!("slowest stage {} ({} ms)", phase.name, phase.duration_ms),
            );
            core.log(
                LogLevel::Warn,
                format!("slow gateway start: {total_ms} ms to running; {stage}"),
            );
        }
        core.publish(Notice::StartupMetric {
            config_prep_ms: spawned_at.saturating_sub(flow.requested_at),
            spawn_to_ready_ms: ready_at.saturating_sub(spawned_at),
            ready_to_connect_ms: now.saturating_sub(ready_at),
            total_ms,
            phases: std::mem::take(&mut flow.trace),
            slowest,
        });
    }
    if flow.own_process {
        // F5: our process serves again after its in-place restart.
        end_in_place_bound(core);
    }
    if flow.own_process && flow.kind != StartKind::Restart {
        // L5 step 2 / R5: reconnecting to our process after its in-place restart completes a
        // restart, so a restart deferred before it is dropped (R6).
        core.last_restart_completed_at = Some(now);
    }
    match flow.kind {
        StartKind::Restart => {
            core.governor.record_executed(now);
            core.last_restart_completed_at = Some(now);
            core.restart_in_flight = false;
            let restarts = std::mem::take(&mut core.waiters.restart);
            core.reply_all(restarts, CommandOutcome::Completed);
            core.log(
                LogLevel::Info,
                format!(
                    "[gateway-refresh] mode=restart result=applied pidAfter={}",
                    core.owned_pid
                        .map_or("n/a".to_string(), |pid| pid.to_string())
                ),
            );
        }
        StartKind::AutoReconnect => {
            core.reconnect_successes_total = core.reconnect_successes_total.wrapping_add(1);
            reconnect_metric(core, flow, true, None);
        }
        StartKind::Manual => {}
    }
    let starts = std::mem::take(&mut core.waiters.start);
    core.reply_all(starts, CommandOutcome::Completed);
    if core.config.ready.snapshot_counts_as_ready && handshake.has_snapshot {
        // G2 (beyond): current gateways send no ready event; the snapshot is the signal.
        mark_ready(core);
    }
    if let Some(reload) = core.reload.take() {
        if reload.awaiting_reconnect && flow.own_process {
            // P4: the in-place restart the reload asked for is done.
            core.cancel(TimerKind::ReloadDeadline);
            core.log(
                LogLevel::Info,
                "[gateway-refresh] mode=reload result=applied_in_place",
            );
            core.reply_all(reload.waiters, CommandOutcome::Completed);
        } else {
            core.reload = Some(reload);
        }
    }
    // H6: evidence resets on each new connection; D5 is over once we are connected again.
    core.diagnostics.reset_for_connection();
    core.external_unavailable = false;
    core.transport_only = false;
    core.liveness_restart = None;
    let liveness = {
        let mut tracker = LivenessTracker::new(&core.config.heartbeat, &core.config.liveness, now);
        tracker.set_tick_interval(handshake.tick_interval_ms);
        tracker
    };
    State::running(RunState {
        epoch: flow.epoch,
        liveness,
    })
}

fn reconnect_metric(core: &mut Core, flow: &StartFlow, success: bool, error: Option<String>) {
    let attempt = core.reconnect_attempts;
    let max_attempts = core.config.reconnect.max_attempts;
    let attempts_total = core.reconnect_attempts_total;
    let successes_total = core.reconnect_successes_total;
    core.publish(Notice::ReconnectMetric {
        success,
        attempt,
        max_attempts,
        delay_ms: flow.reconnect_delay_ms,
        error,
        attempts_total,
        successes_total,
    });
}

fn mark_ready(core: &mut Core) {
    core.gateway_ready = true;
    core.cancel(TimerKind::ReadyProbe);
    core.publish(Notice::GatewayReady);
}

// --------------------------------------------------------------------------------------------
// Running: heartbeat, socket close, exit.
// --------------------------------------------------------------------------------------------

/// H1 + D1/D2/D6: a heartbeat tick. Missed pongs are evidence, never a restart by themselves.
fn heartbeat_tick(core: &mut Core, run: &mut RunState) -> Option<State> {
    let now = core.now_ms;
    let tick = run.liveness.on_tick(now);
    let interval = core.config.heartbeat.interval_ms;
    core.arm(TimerKind::Heartbeat, interval);
    if tick.missed {
        core.diagnostics
            .record_heartbeat_timeout(now, tick.consecutive_misses);
        core.log(
            LogLevel::Debug,
            format!(
                "gateway heartbeat: pong missed ({} consecutive; evidence only)",
                tick.consecutive_misses
            ),
        );
    }
    core.push(Effect::SendPing);
    if let Some(gap_ms) = tick.stalled {
        // D6: the supervisor itself was paused (SIGSTOP, cgroup freeze, VM pause, swap). Nothing is
        // restarted on this tick; a probe decides. The silence window is discarded, so are the
        // misses health reports from it.
        core.diagnostics.clear_heartbeat_misses();
        core.log(
            LogLevel::Warn,
            format!(
                "supervisor stall: this heartbeat tick came {gap_ms} ms after the previous one; \
                 discarding the silence window and probing the gateway before judging it"
            ),
        );
        send_liveness_probe(core, run, ProbePurpose::Stall);
        return None;
    }
    if let Some(pid) = sampled_pid(core) {
        core.push(Effect::SampleProcess {
            epoch: run.epoch,
            pid,
        });
    }
    evaluate_liveness(core, run)
}

/// D2: the owned gateway whose process evidence is read, if any.
fn sampled_pid(core: &Core) -> Option<u32> {
    let evidence = core.config.liveness.process_evidence && !core.config.is_windows();
    core.owned_pid.filter(|_| evidence && !core.external)
}

/// D1/H3: a frame, a pong or a reply arrived.
fn proof_of_life(core: &mut Core, run: &mut RunState) {
    let now = core.now_ms;
    let was_decided = run.liveness.restart_decided();
    run.liveness.record_alive(now);
    core.diagnostics.record_alive(now);
    if was_decided {
        call_off_liveness_restart(core);
    }
}

/// D7: evidence of life arrived before a suppressed liveness restart could run.
fn call_off_liveness_restart(core: &mut Core) {
    if core.liveness_restart == Some(RecoveryPhase::RestartPending) {
        core.cancel(TimerKind::LivenessRestart);
        core.liveness_restart = None;
        core.log(
            LogLevel::Info,
            "liveness restart called off: the gateway answered again",
        );
    }
}

/// D3/D4: act on what the evidence allows now.
fn evaluate_liveness(core: &mut Core, run: &mut RunState) -> Option<State> {
    let now = core.now_ms;
    let owned = core.owned_pid.is_some() && !core.external;
    match run.liveness.decide(now, owned) {
        LivenessAction::Wait | LivenessAction::ProbeFailed | LivenessAction::SampleNow => None,
        LivenessAction::Probe(purpose) => {
            let silent_for = now.saturating_sub(run.liveness.last_evidence_at());
            core.log(
                LogLevel::Warn,
                format!(
                    "gateway silent for {silent_for} ms ({:?}); sending the core probe {}",
                    run.liveness.class(),
                    core.config.liveness.probe_method
                ),
            );
            send_liveness_probe(core, run, purpose);
            None
        }
        LivenessAction::RestartFrozen { misses } => {
            let pid = core
                .owned_pid
                .map_or("unknown".to_string(), |pid| pid.to_string());
            core.log(
                LogLevel::Warn,
                format!(
                    "gateway frozen: {misses} consecutive pong misses and no event-loop progress \
                     (pid={pid}); restarting it"
                ),
            );
            liveness_restart(core)
        }
    }
}

/// D4/D6: send the core probe, one at a time.
fn send_liveness_probe(core: &mut Core, run: &mut RunState, purpose: ProbePurpose) {
    if run.liveness.probe_in_flight().is_some() {
        return;
    }
    let probe = send_probe(core, run.epoch, purpose);
    run.liveness.probe_sent(probe);
}

fn send_probe(core: &mut Core, epoch: u64, purpose: ProbePurpose) -> ProbeInFlight {
    core.next_probe_id = core.next_probe_id.wrapping_add(1);
    let probe = ProbeInFlight {
        id: core.next_probe_id,
        purpose,
        sent_at_ms: core.now_ms,
    };
    core.push(Effect::SendProbe {
        epoch,
        probe: probe.id,
        method: core.config.liveness.probe_method.clone(),
        timeout_ms: core.config.liveness.probe_timeout_ms,
    });
    probe
}

/// G2: the next ready probe is due.
fn ready_probe_due(core: &mut Core, run: &mut RunState) {
    if core.gateway_ready || core.ready_probe.is_some() {
        return;
    }
    core.ready_probe = Some(send_probe(core, run.epoch, ProbePurpose::Ready));
}

/// G2: arm the ready probe after the one that just ended.
fn schedule_next_ready_probe(core: &mut Core) {
    core.ready_probe_step += 1;
    let connected_at = core.connected_at.unwrap_or(core.now_ms);
    let delay = match core
        .config
        .ready
        .probe_schedule_ms
        .get(core.ready_probe_step)
    {
        Some(offset) => connected_at
            .saturating_add(*offset)
            .saturating_sub(core.now_ms),
        None => core.config.ready.probe_repeat_ms.max(1),
    };
    core.arm(TimerKind::ReadyProbe, delay);
}

/// D4/D5/D6/G2: a core probe ended.
fn probe_finished(
    core: &mut Core,
    run: &mut RunState,
    id: u64,
    outcome: &ProbeOutcome,
) -> Option<State> {
    let now = core.now_ms;
    if let Some(probe) = core.ready_probe.filter(|probe| probe.id == id) {
        core.ready_probe = None;
        run.liveness.record_probe(probe, outcome.clone(), now);
        if outcome.answered() {
            proof_of_life(core, run);
        }
        if *outcome == ProbeOutcome::Succeeded {
            if !core.gateway_ready {
                core.log(
                    LogLevel::Info,
                    format!(
                        "gateway ready: the core probe {} answered",
                        core.config.liveness.probe_method
                    ),
                );
                mark_ready(core);
            }
        } else if !core.gateway_ready {
            schedule_next_ready_probe(core);
        }
        return None;
    }
    let purpose = run
        .liveness
        .probe_in_flight()
        .filter(|probe| probe.id == id)
        .map(|probe| probe.purpose);
    let was_decided = run.liveness.restart_decided();
    let action = run.liveness.probe_finished(id, outcome, now);
    match (outcome, purpose) {
        (_, None) => return None,
        (ProbeOutcome::Failed { .. }, _) => {}
        (_, Some(purpose)) => {
            core.diagnostics.record_alive(now);
            if was_decided {
                call_off_liveness_restart(core);
            }
            core.log(
                LogLevel::Info,
                format!("core probe ({purpose:?}) answered: the gateway is alive; no restart"),
            );
        }
    }
    if action == LivenessAction::SampleNow {
        // D6: the stall probe failed; what the process did across the pause decides.
        core.log(
            LogLevel::Warn,
            "the core probe after the supervisor stall failed; reading the gateway process to \
             tell busy from frozen",
        );
        if let Some(pid) = sampled_pid(core) {
            core.push(Effect::SampleProcess {
                epoch: run.epoch,
                pid,
            });
        }
        return None;
    }
    if action != LivenessAction::ProbeFailed {
        return None;
    }
    let reason = match outcome {
        ProbeOutcome::Failed { reason } => reason.clone(),
        _ => String::new(),
    };
    if core.external {
        return Some(external_unavailable(core, &reason));
    }
    core.log(
        LogLevel::Warn,
        format!(
            "core probe {} failed ({reason}) with no sign of life since; restarting the gateway",
            core.config.liveness.probe_method
        ),
    );
    liveness_restart(core)
}

/// D5: an attached gateway is not ours: never stopped, signalled or restarted. Drop our socket,
/// fail what waits with a typed error, and reconnect the transport only.
fn external_unavailable(core: &mut Core, reason: &str) -> State {
    core.log(
        LogLevel::Warn,
        format!(
            "external gateway failed its core probe ({reason}); closing our socket and \
             reconnecting to it (it is not ours to restart)"
        ),
    );
    core.external_unavailable = true;
    core.transport_only = true;
    core.push(Effect::FailPendingRpcs {
        error: RpcError::ExternalUnavailable,
    });
    core.push(Effect::CloseConnection);
    core.publish(Notice::ExternalUnavailable);
    core.publish(Notice::Error {
        message: "External gateway unavailable: it stopped answering; reconnecting".into(),
        failure: None,
    });
    core.clear_connection();
    ask_reconnect(core).unwrap_or_else(State::stopped)
}

/// D3/D4/D7: restart a gateway the evidence says is dead, through R1 and the governor (R3).
fn liveness_restart(core: &mut Core) -> Option<State> {
    if !core.auto_reconnect {
        core.log(
            LogLevel::Warn,
            "gateway liveness recovery skipped (auto-reconnect is off)",
        );
        return None;
    }
    core.liveness_restart = Some(RecoveryPhase::RestartPending);
    match try_restart(core, LifecycleState::Running, None) {
        RestartAttempt::Began(state) => {
            core.liveness_restart = Some(RecoveryPhase::RestartExecuting);
            Some(*state)
        }
        RestartAttempt::Suppressed { retry_after_ms } => {
            // D7: stays pending and runs once when the cooldown ends.
            core.arm(TimerKind::LivenessRestart, retry_after_ms.max(1));
            None
        }
        RestartAttempt::Deferred | RestartAttempt::Joined => None,
    }
}

fn shutdown_announced(core: &mut Core, restart_expected_ms: Option<u64>) {
    let Some(expected) = restart_expected_ms else {
        core.log(LogLevel::Info, "gateway announced shutdown");
        return;
    };
    core.log(
        LogLevel::Info,
        format!("gateway announced an in-place restart (expected {expected} ms)"),
    );
    begin_in_place_bound(core);
    if let Some(reload) = core.reload.as_mut() {
        // P4: wait for the reconnect to the same process, bounded by what it announced.
        reload.awaiting_reconnect = true;
        core.cancel(TimerKind::ReloadCheck);
        let margin = core.config.reload.restart_expected_margin_ms;
        // F5: never judged before the in-place bound: a loaded gateway's restart can take longer
        // than it announces, and F5 is the rule that decides it failed.
        let deadline = expected
            .saturating_add(margin)
            .max(core.config.connect.in_place_ready_timeout_ms);
        core.arm(TimerKind::ReloadDeadline, deadline);
    }
}

/// N1: a socket close after the handshake while running.
fn socket_closed(core: &mut Core, code: Option<u16>) -> State {
    let now = core.now_ms;
    core.diagnostics.record_socket_close(now, code);
    core.push(Effect::FailPendingRpcs {
        error: RpcError::NotConnected,
    });
    core.stable_run = ran_stable(core);
    core.clear_connection();
    // Q2: a close the gateway announced (1012, or after its `shutdown` event with a restart
    // expected) is normal operation; only an unannounced one is a warning.
    let announced = code == Some(1012) || core.in_place_since.is_some();
    let level = if announced {
        LogLevel::Info
    } else {
        LogLevel::Warn
    };
    core.log(
        level,
        format!(
            "gateway socket closed (code={}{})",
            code.map_or("none".into(), |code| code.to_string()),
            if announced { ", announced restart" } else { "" }
        ),
    );
    if code == Some(1012) {
        // F5: the gateway restarts in place; it must serve again within the bound.
        begin_in_place_bound(core);
    }
    if core.config.is_windows() && code != Some(1012) {
        // Windows: the exit handler reconnects; reconnecting here too would race it.
        return State::stopped();
    }
    ask_reconnect_logged(core, level).unwrap_or_else(State::stopped)
}

/// N5: did the run that just ended last long enough to count as stable?
fn ran_stable(core: &Core) -> bool {
    let stable = core.config.reconnect.stable_uptime_ms;
    stable > 0
        && core
            .connected_at
            .is_some_and(|connected_at| core.now_ms.saturating_sub(connected_at) >= stable)
}

/// X2 bookkeeping for the owned process's exit.
fn record_exit(core: &mut Core, pid: u32, code: Option<i32>) {
    if core.owned_pid != Some(pid) {
        return;
    }
    core.owned_pid = None;
    core.last_exit_code = code;
    core.process_exits = core.process_exits.wrapping_add(1);
    // F5/F9: an in-place restart of this process is over: its death settles it.
    end_in_place_bound(core);
    if let Some(reload) = core.reload.take_if(|reload| reload.pid == pid) {
        // P4/F9: the reload's process died (its in-place restart ended it, or it was killed
        // mid-restart). The gateway started next reads the new config: that start answers the
        // reload, and no restart of the replacement is stacked on top.
        core.cancel(TimerKind::ReloadCheck);
        core.cancel(TimerKind::ReloadDeadline);
        core.log(
            LogLevel::Warn,
            format!("[gateway-refresh] mode=reload result=process_exited pid={pid}; the next start answers the reload"),
        );
        if core.auto_reconnect {
            core.waiters.start.extend(reload.waiters);
        } else {
            core.reply_all(reload.waiters, CommandOutcome::Superseded);
        }
    }
    if core.auto_reconnect && core.deferred_restart_since.take().is_some() {
        // F9: a restart deferred while this process lived is settled by its death: the next
        // start spawns a fresh gateway, which is what the restart asked for.
        core.log(
            LogLevel::Info,
            "deferred restart dropped: the gateway exited; its replacement is a fresh start",
        );
    }
    let expected = !core.auto_reconnect;
    core.publish(Notice::ProcessExit {
        pid,
        code,
        expected,
    });
    let code_text = code.map_or("null".to_string(), |code| code.to_string());
    if expected {
        core.log(
            LogLevel::Info,
            format!("gateway exited (pid={pid}, code={code_text}, expected)"),
        );
    } else {
        core.log(
            LogLevel::Warn,
            format!("gateway exited unexpectedly (pid={pid}, code={code_text})"),
        );
    }
}

/// N2/N5: ask for a reconnect. `None` when nothing changes (auto-reconnect off, or a timer is
/// already set); otherwise the next state (`reconnecting`, or `failed` when giving up).
fn ask_reconnect(core: &mut Core) -> Option<State> {
    ask_reconnect_logged(core, LogLevel::Warn)
}

/// N2 with the level of the "scheduling" line (Q2: INFO after an announced close).
fn ask_reconnect_logged(core: &mut Core, level: LogLevel) -> Option<State> {
    let timer_set = core.is_armed(TimerKind::Reconnect);
    let decision = core.reconnect.decide(
        core.auto_reconnect,
        timer_set,
        core.reconnect_attempts,
        core.stable_run,
        core.now_ms,
    );
    core.stable_run = false;
    match decision {
        ReconnectDecision::Skip => {
            core.log(
                LogLevel::Debug,
                "gateway reconnect skipped (auto-reconnect disabled)",
            );
            None
        }
        ReconnectDecision::AlreadyScheduled => None,
        ReconnectDecision::GiveUp { attempts, reason } => {
            let message = match reason {
                GiveUpReason::MaxAttempts => {
                    "Failed to reconnect after maximum attempts".to_string()
                }
                GiveUpReason::IntensityLimit {
                    restarts,
                    window_ms,
                } => format!("Gateway restarted {restarts} times within {window_ms} ms; giving up"),
            };
            core.reconnect_attempts = attempts;
            core.log(
                LogLevel::Error,
                format!("gateway reconnect failed: {message}"),
            );
            core.error = Some(message.clone());
            // F8: nothing will try again.
            core.publish(Notice::GaveUp {
                reason: message,
                failure: None,
            });
            Some(State::failed())
        }
        ReconnectDecision::Schedule { delay_ms, attempt } => {
            core.reconnect_attempts = attempt;
            core.log(
                level,
                format!(
                    "scheduling gateway reconnect attempt {attempt}/{} in {delay_ms}ms",
                    core.config.reconnect.max_attempts
                ),
            );
            Some(State::reconnecting(PendingReconnect {
                epoch: core.epoch,
                delay_ms,
            }))
        }
    }
}

// --------------------------------------------------------------------------------------------
// Stop (T1–T6).
// --------------------------------------------------------------------------------------------

/// T1–T4. Returns the next state: `stopping` while something is awaited, else what follows T5.
fn begin_stop(
    core: &mut Core,
    shown: LifecycleState,
    then: AfterStop,
    reply: Option<ReplyId>,
) -> State {
    core.log(LogLevel::Info, "gateway stop requested");
    if then != AfterStop::Restart {
        core.liveness_restart = None;
        core.transport_only = false;
        core.external_unavailable = false;
    }
    core.bump_epoch();
    core.auto_reconnect = false;
    core.cancel_all_timers();
    core.waiters.stop.extend(reply);
    // E1: the start flow in progress is superseded; it never sets `error`.
    if then != AfterStop::Start {
        let starts = std::mem::take(&mut core.waiters.start);
        core.reply_all(starts, CommandOutcome::Superseded);
    }
    if then != AfterStop::Restart && core.restart_in_flight {
        // A plain stop ends a restart in progress (e.g. during its start half).
        core.restart_in_flight = false;
        let restarts = std::mem::take(&mut core.waiters.restart);
        core.reply_all(restarts, CommandOutcome::Superseded);
    }
    if let Some(reload) = core.reload.take() {
        core.reply_all(reload.waiters, CommandOutcome::Superseded);
    }
    // F5: a stop ends the in-place restart watch and any replacement that was to follow.
    core.in_place_since = None;
    core.replacement = None;
    core.exit_config_check = false;
    let connected = shown == LifecycleState::Running;
    let mut stop = StopFlow {
        shown,
        then,
        awaiting_external: false,
        awaiting_pid: None,
    };
    if core.external && connected && core.external_shutdown_supported != Some(false) {
        // T2: ask an attached gateway to shut down before closing the socket.
        stop.awaiting_external = true;
        let timeout_ms = core.config.stop.external_shutdown_timeout_ms;
        let epoch = core.epoch;
        core.push(Effect::RequestExternalShutdown { epoch, timeout_ms });
    } else {
        // T3: close at once.
        core.push(Effect::CloseConnection);
    }
    if let Some(pid) = core.owned_pid {
        // T4.
        stop.awaiting_pid = Some(pid);
        let grace_ms = core.config.stop.kill_grace_ms;
        core.push(Effect::TerminateProcess { pid, grace_ms });
    }
    continue_stop(core, &mut stop)
}

/// T5 once nothing is awaited; else stay in `stopping`.
fn continue_stop(core: &mut Core, stop: &mut StopFlow) -> State {
    if stop.awaiting_external || stop.awaiting_pid.is_some() {
        return State::stopping(stop.clone());
    }
    // T5.
    core.push(Effect::FailPendingRpcs {
        error: RpcError::Stopped,
    });
    core.deferred_restart_since = None;
    core.error = None;
    core.clear_connection();
    core.diagnostics.consecutive_heartbeat_misses = 0;
    let stops = std::mem::take(&mut core.waiters.stop);
    core.reply_all(stops, CommandOutcome::Completed);
    match stop.then {
        AfterStop::Nothing => State::stopped(),
        AfterStop::Start => begin_start(core, StartKind::Manual, 0),
        // A start asked for during the restart's stop joins its start half (its waiters stay).
        AfterStop::Restart => begin_start(core, StartKind::Restart, 0),
    }
}

/// T6: terminate the owned process only. The app is quitting: auto-reconnect goes off so the
/// exit does not respawn it.
fn force_terminate(core: &mut Core, reply: Option<ReplyId>) {
    match core.owned_pid {
        Some(pid) => {
            core.log(
                LogLevel::Warn,
                format!("force-terminating owned gateway (pid={pid})"),
            );
            core.push(Effect::ForceKillProcess { pid });
            // The process is no longer ours to show or wait for; its exit will be dropped.
            core.owned_pid = None;
            core.auto_reconnect = false;
            core.cancel(TimerKind::Reconnect);
            core.reply(reply, CommandOutcome::Completed);
        }
        None => core.reply(
            reply,
            CommandOutcome::Ignored {
                reason: IgnoredReason::NoOwnedProcess,
            },
        ),
    }
}

// --------------------------------------------------------------------------------------------
// Restart (R1–R7).
// --------------------------------------------------------------------------------------------

/// R1: remember a deferred restart and when it was first asked for.
fn defer_restart(core: &mut Core, reply: Option<ReplyId>) {
    if core.deferred_restart_since.is_none() {
        core.deferred_restart_since = Some(core.now_ms);
    }
    core.log(
        LogLevel::Info,
        "gateway restart deferred until the lifecycle settles",
    );
    core.reply(reply, CommandOutcome::Deferred);
}

fn suppressed(core: &mut Core, retry_after_ms: u64, reply: Option<ReplyId>) {
    let counters = core.governor.counters();
    core.log(
        LogLevel::Warn,
        format!(
            "[gateway-restart-governor] restart suppressed retryAfterMs={retry_after_ms} suppressed={} executed={}",
            counters.suppressed, counters.executed
        ),
    );
    core.publish(Notice::RestartSuppressed {
        retry_after_ms,
        executed_total: counters.executed,
        suppressed_total: counters.suppressed,
    });
    core.reply(reply, CommandOutcome::Suppressed { retry_after_ms });
}

/// What asking for a restart did.
enum RestartAttempt {
    /// R4: the restart began (its stop half); the machine goes here (boxed: a `State` is large).
    Began(Box<State>),
    /// R1: deferred until the lifecycle settles.
    Deferred,
    /// R2: joined the restart in progress.
    Joined,
    /// R3: suppressed by the governor.
    Suppressed {
        /// When it would be allowed.
        retry_after_ms: u64,
    },
}

/// R1–R4 from a settled state (`running`, `stopped`, `error`).
fn try_restart(core: &mut Core, shown: LifecycleState, reply: Option<ReplyId>) -> RestartAttempt {
    let mut reload_waiters = Vec::new();
    if shown == LifecycleState::Running && !core.restart_in_flight {
        if let Some(reload) = core.reload.take() {
            // F9: while running, a restart is never "deferred" behind a reload in flight: it
            // supersedes the reload, whose callers get the restart's outcome.
            core.cancel(TimerKind::ReloadCheck);
            core.cancel(TimerKind::ReloadDeadline);
            core.log(
                LogLevel::Info,
                "[gateway-refresh] mode=reload result=superseded_by_restart",
            );
            reload_waiters = reload.waiters;
        }
    }
    let attempt = try_restart_settled(core, shown, reply);
    if core.restart_in_flight {
        core.waiters.restart.extend(reload_waiters);
    } else if let RestartAttempt::Suppressed { retry_after_ms } = attempt {
        // R3: the reload's callers hear the same.
        core.reply_all(
            reload_waiters,
            CommandOutcome::Suppressed { retry_after_ms },
        );
    } else {
        core.reply_all(reload_waiters, CommandOutcome::Deferred);
    }
    attempt
}

/// R1–R3 once no reload stands in the way.
fn try_restart_settled(
    core: &mut Core,
    shown: LifecycleState,
    reply: Option<ReplyId>,
) -> RestartAttempt {
    if core.is_mid_flight(shown) {
        defer_restart(core, reply);
        return RestartAttempt::Deferred;
    }
    if core.restart_in_flight {
        core.waiters.restart.extend(reply);
        return RestartAttempt::Joined;
    }
    match core.governor.decide(core.now_ms) {
        GovernorDecision::Suppress { retry_after_ms } => {
            suppressed(core, retry_after_ms, reply);
            RestartAttempt::Suppressed { retry_after_ms }
        }
        GovernorDecision::Allow => {
            let pid = core
                .owned_pid
                .map_or("n/a".to_string(), |pid| pid.to_string());
            core.log(
                LogLevel::Info,
                format!("[gateway-refresh] mode=restart requested pidBefore={pid}"),
            );
            core.restart_in_flight = true;
            core.waiters.restart.extend(reply);
            RestartAttempt::Began(Box::new(begin_stop(core, shown, AfterStop::Restart, None)))
        }
    }
}

/// R1–R4 from a settled state (`running`, `stopped`, `error`).
fn request_restart(
    core: &mut Core,
    shown: LifecycleState,
    reply: Option<ReplyId>,
) -> Option<State> {
    match try_restart(core, shown, reply) {
        RestartAttempt::Began(state) => Some(*state),
        _ => None,
    }
}

/// P3: reload.
fn request_reload(
    core: &mut Core,
    shown: LifecycleState,
    policy: &ReloadPolicy,
    reply: Option<ReplyId>,
) -> Option<State> {
    if matches!(policy.mode, ReloadMode::Off | ReloadMode::Restart) {
        core.log(
            LogLevel::Info,
            format!(
                "[gateway-refresh] mode=reload result=policy_forced_restart policy={:?}",
                policy.mode
            ),
        );
        return request_restart(core, shown, reply);
    }
    if let Some(reload) = core.reload.as_mut() {
        // A reload in progress: join it rather than stacking a second one.
        reload.waiters.extend(reply);
        return None;
    }
    if core.is_mid_flight(shown) {
        defer_restart(core, reply);
        return None;
    }
    let Some(pid) = core.owned_pid.filter(|_| shown == LifecycleState::Running) else {
        core.log(
            LogLevel::Warn,
            "[gateway-refresh] mode=reload result=fallback_restart cause=not_running",
        );
        return request_restart(core, shown, reply);
    };
    let connected_for = core.connected_at.map_or(u64::MAX, |connected_at| {
        core.now_ms.saturating_sub(connected_at)
    });
    if connected_for < core.config.reload.recent_connect_skip_ms {
        core.log(
            LogLevel::Info,
            format!("[gateway-refresh] mode=reload result=skipped_recent_connect connectedForMs={connected_for} pid={pid}"),
        );
        core.reply(
            reply,
            CommandOutcome::Ignored {
                reason: IgnoredReason::ConnectedRecently {
                    connected_for_ms: connected_for,
                },
            },
        );
        return None;
    }
    if core.config.is_windows() {
        core.log(
            LogLevel::Warn,
            "[gateway-refresh] mode=reload result=fallback_restart cause=windows",
        );
        return request_restart(core, shown, reply);
    }
    let signal = core.config.reload.signal;
    let epoch = core.epoch;
    core.reload = Some(ReloadInFlight {
        pid,
        waiters: reply.into_iter().collect(),
        awaiting_reconnect: false,
    });
    core.log(
        LogLevel::Info,
        format!("sending {signal:?} to gateway for config reload (pid={pid})"),
    );
    core.push(Effect::SignalProcess { epoch, pid, signal });
    None
}

/// P3: the reload signal was sent (or not).
fn reload_signal_sent(core: &mut Core, outcome: Result<(), SignalFailure>) -> Option<State> {
    match outcome {
        Ok(()) => {
            if core
                .reload
                .as_ref()
                .is_some_and(|reload| !reload.awaiting_reconnect)
            {
                if core.config.reload.signal_restarts_in_place {
                    // P4: the gateway will announce its in-place restart; wait for that (and then
                    // for the reconnect) instead of judging it after the fixed P3 delay.
                    let timeout = core.config.reload.restart_announce_timeout_ms;
                    core.arm(TimerKind::ReloadDeadline, timeout);
                } else {
                    let delay = core.config.reload.post_signal_check_ms;
                    core.arm(TimerKind::ReloadCheck, delay);
                }
            }
            None
        }
        Err(reason) => {
            core.log(
                LogLevel::Warn,
                format!("[gateway-refresh] mode=reload result=fallback_restart cause=signal_error: {reason}"),
            );
            reload_fallback(core)
        }
    }
}

/// P3/P4: the reload did not work in place; restart instead, answering its waiters with the
/// restart's outcome.
fn reload_fallback(core: &mut Core) -> Option<State> {
    let waiters = core
        .reload
        .take()
        .map(|reload| reload.waiters)
        .unwrap_or_default();
    core.cancel(TimerKind::ReloadCheck);
    core.cancel(TimerKind::ReloadDeadline);
    let shown = core.shown_state;
    let attempt = try_restart(core, shown, None);
    // The restart's outcome is what the reload's callers get: a suppressed restart is not a
    // deferred one (nothing would ever run it).
    if core.restart_in_flight {
        core.waiters.restart.extend(waiters);
    } else if let RestartAttempt::Suppressed { retry_after_ms } = attempt {
        core.reply_all(waiters, CommandOutcome::Suppressed { retry_after_ms });
    } else {
        core.reply_all(waiters, CommandOutcome::Deferred);
    }
    match attempt {
        RestartAttempt::Began(state) => Some(*state),
        _ => None,
    }
}

/// P3: after the signal, a gateway still running with the signalled pid applied the reload in
/// place; anything else falls back to a restart.
fn reload_check(core: &mut Core, shown: LifecycleState) -> Option<State> {
    let healthy = shown == LifecycleState::Running
        && core
            .reload
            .as_ref()
            .is_some_and(|reload| core.owned_pid == Some(reload.pid));
    if healthy {
        if let Some(reload) = core.reload.take() {
            core.log(
                LogLevel::Info,
                "[gateway-refresh] mode=reload result=applied_in_place",
            );
            core.reply_all(reload.waiters, CommandOutcome::Completed);
            core.flow_ended = true;
        }
        None
    } else {
        core.log(
            LogLevel::Warn,
            "[gateway-refresh] mode=reload result=fallback_restart cause=post_signal_unhealthy",
        );
        reload_fallback(core)
    }
}

/// P5: debounced reload.
fn debounce_reload(
    core: &mut Core,
    delay_ms: Option<u64>,
    policy: ReloadPolicy,
    reply: Option<ReplyId>,
) {
    let delay = delay_ms.unwrap_or(policy.debounce_ms);
    if matches!(policy.mode, ReloadMode::Off | ReloadMode::Restart) {
        core.log(
            LogLevel::Debug,
            format!(
                "reload policy {:?}: routing debounced reload to debounced restart ({delay} ms)",
                policy.mode
            ),
        );
        core.arm(TimerKind::RestartDebounce, delay);
    } else {
        core.debounced_reload_policy = Some(policy);
        core.arm(TimerKind::ReloadDebounce, delay);
    }
    core.reply(reply, CommandOutcome::Scheduled);
}

/// Timers that fire the same way in every idle or active state: debounces (R7, P5) and the
/// reload checks (P3, P4).
fn handle_common_timer(core: &mut Core, timer: TimerKind, shown: LifecycleState) -> Option<State> {
    match timer {
        TimerKind::RestartDebounce => request_restart(core, shown, None),
        TimerKind::ReloadDebounce => {
            let policy = core
                .debounced_reload_policy
                .take()
                .unwrap_or_else(|| crate::reload_policy::default_policy(&core.config.reload));
            request_reload(core, shown, &policy, None)
        }
        TimerKind::ReloadCheck => reload_check(core, shown),
        TimerKind::ReloadDeadline => {
            let announced = core
                .reload
                .as_ref()
                .is_some_and(|reload| reload.awaiting_reconnect);
            if !announced {
                // P4: no in-place restart was announced in time; judge the process as P3 does.
                return reload_check(core, shown);
            }
            if core.owned_pid.is_some() && core.owned_pid == core.reload.as_ref().map(|r| r.pid) {
                // F5: the gateway went down for its in-place restart and has not come back:
                // replace it now (a restart deferred behind the flow would restart the
                // replacement later, F9).
                let waited = core
                    .now_ms
                    .saturating_sub(core.in_place_since.unwrap_or(core.now_ms));
                let reason = match core
                    .last_stderr_line
                    .clone()
                    .filter(|line| is_invalid_config_signal(line))
                {
                    Some(line) => format!("no reconnect within {waited} ms of its restart; {line}"),
                    None => format!("no reconnect within {waited} ms of its restart"),
                };
                return Some(in_place_failed(core, reason));
            }
            core.log(
                LogLevel::Warn,
                "[gateway-refresh] mode=reload result=fallback_restart cause=no_reconnect_in_time",
            );
            reload_fallback(core)
        }
        TimerKind::InPlaceRestart => {
            let bound = core.config.connect.in_place_ready_timeout_ms;
            // The last gateway line, when it points at the config, is the likely reason (and
            // sends the replacement to the doctor first, F1/F2).
            let reason = match core
                .last_stderr_line
                .clone()
                .filter(|line| is_invalid_config_signal(line))
            {
                Some(line) => format!("it did not serve again within {bound} ms; {line}"),
                None => format!("it did not serve again within {bound} ms"),
            };
            core.in_place_since = None;
            core.owned_pid?;
            Some(in_place_failed(core, reason))
        }
        other => {
            core.log(
                LogLevel::Debug,
                format!("timer {other:?} fired with nothing to do"),
            );
            None
        }
    }
}
