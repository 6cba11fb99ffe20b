//! The machine's shared data and the bookkeeping every state uses: epochs (E1), timers with
//! generations, status fields, waiters, and the policies (reconnect, governor, heartbeat).
//!
//! statig passes this to every handler as its context. Keeping it outside statig's own storage
//! lets the wrapper read and filter (stale epochs, stale timers, foreign pids) without `unsafe`.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::SupervisorConfig;
use crate::governor::RestartGovernor;
use crate::health::Diagnostics;
use crate::liveness::{ProbeInFlight, RecoveryPhase};
use crate::machine::types::{
    CommandOutcome, Effect, LifecycleState, LogLevel, Notice, ReplyId, TimerKind,
};
use crate::reconnect::ReconnectSchedule;
use crate::reload_policy::ReloadPolicy;
use crate::stderr::StartupStderrBuffer;

/// P3/P4: a reload that has signalled the gateway and waits to see what it does.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ReloadInFlight {
    /// The process that was signalled.
    pub pid: u32,
    /// Callers waiting for the outcome.
    pub waiters: Vec<ReplyId>,
    /// P4: the gateway announced an in-place restart; we wait for the reconnect to it.
    pub awaiting_reconnect: bool,
}

/// F5: a gateway that failed to restart in place is being terminated; once its exit arrives, a
/// fresh spawn replaces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Replacement {
    /// F1/F2: its reason was an invalid config: the doctor runs first, so there is only one
    /// cold start.
    pub doctor_first: bool,
    /// The replacement finishes a restart in progress (R4 bookkeeping).
    pub restart: bool,
}

/// Callers waiting for the end of a flow.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Waiters {
    pub start: Vec<ReplyId>,
    pub stop: Vec<ReplyId>,
    pub restart: Vec<ReplyId>,
}

/// The shared, mutable part of the machine.
#[derive(Debug, Clone)]
pub struct Core {
    pub(crate) config: SupervisorConfig,
    /// The clock of the event being handled.
    pub(crate) now_ms: u64,
    /// Effects produced while handling the current event.
    pub(crate) effects: Vec<Effect>,
    /// Transitions taken while handling the current event (for diagrams and tests).
    pub(crate) transitions: Vec<(&'static str, &'static str)>,
    /// The public state before the current event (set by the wrapper).
    pub(crate) shown_state: LifecycleState,
    /// E1: bumped by every start and every stop.
    pub(crate) epoch: u64,
    /// L2/T1: auto-reconnect enabled.
    pub(crate) auto_reconnect: bool,
    pub(crate) reconnect_attempts: u32,
    pub(crate) reconnect: ReconnectSchedule,
    pub(crate) reconnect_attempts_total: u64,
    pub(crate) reconnect_successes_total: u64,
    pub(crate) governor: RestartGovernor,
    /// R1: a deferred restart is pending since this time.
    pub(crate) deferred_restart_since: Option<u64>,
    /// R5: when the last restart completed.
    pub(crate) last_restart_completed_at: Option<u64>,
    /// R2: a restart (stop then start) is running.
    pub(crate) restart_in_flight: bool,
    /// Set when a start or restart flow ended, so the wrapper runs the R6 flush.
    pub(crate) flow_ended: bool,
    /// The process we spawned and still own.
    pub(crate) owned_pid: Option<u32>,
    pub(crate) last_exit_code: Option<i32>,
    pub(crate) process_starts: u64,
    pub(crate) process_exits: u64,
    pub(crate) error: Option<String>,
    pub(crate) connected_at: Option<u64>,
    pub(crate) version: Option<String>,
    pub(crate) protocol: Option<u32>,
    pub(crate) boot_id: Option<String>,
    pub(crate) gateway_ready: bool,
    pub(crate) external: bool,
    /// N5: the run that just ended had lasted `stable_uptime_ms`.
    pub(crate) stable_run: bool,
    /// T2: whether the external gateway understands `shutdown`.
    pub(crate) external_shutdown_supported: Option<bool>,
    pub(crate) stderr_tail: StartupStderrBuffer,
    pub(crate) reload: Option<ReloadInFlight>,
    /// P5: the policy to apply when the reload debounce fires.
    pub(crate) debounced_reload_policy: Option<ReloadPolicy>,
    pub(crate) waiters: Waiters,
    pub(crate) diagnostics: Diagnostics,
    /// D4/G2: the id of the last core probe sent.
    pub(crate) next_probe_id: u64,
    /// G2: the ready probe in flight.
    pub(crate) ready_probe: Option<ProbeInFlight>,
    /// G2: the index in `ready.probe_schedule_ms` of the ready probe last armed.
    pub(crate) ready_probe_step: usize,
    /// D3/D4/D7: a liveness restart is pending or running (H6 `unresponsive`).
    pub(crate) liveness_restart: Option<RecoveryPhase>,
    /// D5: the attached external gateway failed its core probe.
    pub(crate) external_unavailable: bool,
    /// D5: reconnect the transport only: never spawn while the user's gateway may come back.
    pub(crate) transport_only: bool,
    /// F2: digests of the config contents the doctor already ran on (and what it left behind).
    pub(crate) doctor_seen: BTreeSet<String>,
    /// F2: a digest was asked for after the owned gateway exited 78 while running.
    pub(crate) exit_config_check: bool,
    /// F4/F5: the last meaningful stderr line of the owned process (any state).
    pub(crate) last_stderr_line: Option<String>,
    /// F5: the owned process's last `startup failed: REASON` line.
    pub(crate) startup_failed_line: Option<String>,
    /// F5: the owned gateway is restarting in place since this time (the bound is armed).
    pub(crate) in_place_since: Option<u64>,
    /// F5: a replacement spawn follows the exit of the owned gateway.
    pub(crate) replacement: Option<Replacement>,
    timers: BTreeMap<TimerKind, u64>,
    timer_generation: u64,
}

impl Core {
    pub(crate) fn new(config: SupervisorConfig) -> Self {
        Core {
            reconnect: ReconnectSchedule::new(&config.reconnect),
            governor: RestartGovernor::new(&config.restart),
            stderr_tail: StartupStderrBuffer::with_capacity(config.start.stderr_lines_kept),
            config,
            now_ms: 0,
            effects: Vec::new(),
            transitions: Vec::new(),
            shown_state: LifecycleState::Stopped,
            epoch: 0,
            auto_reconnect: false,
            reconnect_attempts: 0,
            reconnect_attempts_total: 0,
            reconnect_successes_total: 0,
            deferred_restart_since: None,
            last_restart_completed_at: None,
            restart_in_flight: false,
            flow_ended: false,
            owned_pid: None,
            last_exit_code: None,
            process_starts: 0,
            process_exits: 0,
            error: None,
            connected_at: None,
            version: None,
            protocol: None,
            boot_id: None,
            gateway_ready: false,
            external: false,
            stable_run: false,
            external_shutdown_supported: None,
            reload: None,
            debounced_reload_policy: None,
            waiters: Waiters::default(),
            diagnostics: Diagnostics::default(),
            next_probe_id: 0,
            ready_probe: None,
            ready_probe_step: 0,
            liveness_restart: None,
            external_unavailable: false,
            transport_only: false,
            doctor_seen: BTreeSet::new(),
            exit_config_check: false,
            last_stderr_line: None,
            startup_failed_line: None,
            in_place_since: None,
            replacement: None,
            timers: BTreeMap::new(),
            timer_generation: 0,
        }
    }

    pub(crate) fn push(&mut self, effect: Effect) {
        self.effects.push(effect);
    }

    pub(crate) fn log(&mut self, level: LogLevel, message: impl Into<String>) {
        self.effects.push(Effect::Log {
            level,
            message: message.into(),
        });
    }

    pub(crate) fn publish(&mut self, notice: Notice) {
        self.effects.push(Effect::Publish(notice));
    }

    pub(crate) fn reply(&mut self, reply: Option<ReplyId>, outcome: CommandOutcome) {
        if let Some(reply) = reply {
            self.effects.push(Effect::Reply { reply, outcome });
        }
    }

    pub(crate) fn reply_all(&mut self, waiters: Vec<ReplyId>, outcome: CommandOutcome) {
        for reply in waiters {
            self.effects.push(Effect::Reply {
                reply,
                outcome: outcome.clone(),
            });
        }
    }

    /// E1: a new lifecycle epoch; every older flow is superseded.
    pub(crate) fn bump_epoch(&mut self) -> u64 {
        self.epoch += 1;
        self.epoch
    }

    /// Arm (or re-arm) a timer `delay_ms` from now.
    pub(crate) fn arm(&mut self, timer: TimerKind, delay_ms: u64) {
        self.timer_generation += 1;
        self.timers.insert(timer, self.timer_generation);
        self.effects.push(Effect::ArmTimer {
            timer,
            generation: self.timer_generation,
            at_ms: self.now_ms.saturating_add(delay_ms),
        });
    }

    pub(crate) fn cancel(&mut self, timer: TimerKind) {
        if self.timers.remove(&timer).is_some() {
            self.effects.push(Effect::CancelTimer { timer });
        }
    }

    /// T1: clear every timer.
    pub(crate) fn cancel_all_timers(&mut self) {
        for timer in TimerKind::ALL {
            self.cancel(timer);
        }
    }

    /// The timers armed now with their generations.
    pub(crate) fn armed_generations(&self) -> Vec<(TimerKind, u64)> {
        self.timers
            .iter()
            .map(|(timer, generation)| (*timer, *generation))
            .collect()
    }

    pub(crate) fn is_armed(&self, timer: TimerKind) -> bool {
        self.timers.contains_key(&timer)
    }

    /// A firing is current when its generation is the armed one; it disarms the timer.
    pub(crate) fn take_firing(&mut self, timer: TimerKind, generation: u64) -> bool {
        if self.timers.get(&timer) == Some(&generation) {
            self.timers.remove(&timer);
            true
        } else {
            false
        }
    }

    /// The timers armed now (for invariants: none after stop).
    pub fn armed_timers(&self) -> Vec<TimerKind> {
        self.timers.keys().copied().collect()
    }

    /// Reset the per-connection status fields when a connection ends.
    pub(crate) fn clear_connection(&mut self) {
        self.connected_at = None;
        self.gateway_ready = false;
        self.external = false;
    }

    /// Is the lifecycle "mid-flight" for R1, given the current public state?
    pub(crate) fn is_mid_flight(&self, state: LifecycleState) -> bool {
        matches!(
            state,
            LifecycleState::Starting | LifecycleState::Reconnecting
        ) || self.reload.is_some()
    }
}
