//! The lifecycle machine: `(now, event) -> effects`.
//!
//! [`LifecycleMachine`] wraps the statig machine of [`lifecycle`] and adds what belongs around
//! every event rather than inside a state:
//!
//! - **Stale input is dropped before dispatch** (E1): a result tagged with an old epoch, a timer
//!   firing with an old generation, an exit or stderr line of a pid we do not own. Each drop is
//!   logged at debug level; none can panic or move the machine.
//! - **S3**: a status change is published once per event.
//! - **R6**: after every state change and after a start, restart or reload ends, the deferred
//!   restart is flushed: dropped, kept, or executed (fed back in as a restart command).

pub mod core;
// statig generates the `State` and `Superstate` enums and their variants without docs; the
// states are documented on their handler functions.
#[allow(missing_docs)]
pub mod lifecycle;
pub mod types;

use statig::blocking::{InitializedStateMachine, IntoStateMachineExt};

use crate::config::SupervisorConfig;
use crate::governor::GovernorCounters;
use crate::health::{summarize_health, Diagnostics, HealthInput, HealthSummary, RpcFailureKind};
use crate::liveness::{LivenessClass, RecoveryPhase, RecoverySnapshot};
pub use crate::machine::core::Core;
use crate::machine::lifecycle::{public_state, state_name, Lifecycle, State};
pub use crate::machine::types::*;

/// How many R6 flushes may chain within one event before the machine stops and logs (a restart
/// that immediately asks for another would otherwise loop).
const MAX_FLUSH_ROUNDS: usize = 4;

/// The supervisor's lifecycle, as a pure value.
pub struct LifecycleMachine {
    machine: InitializedStateMachine<Lifecycle>,
    core: Core,
    /// The last status published (without uptime, which changes with every read).
    published: Status,
    /// Transitions taken by the last event: (from, what caused it, to).
    trace: Vec<(&'static str, String, &'static str)>,
    /// The last liveness notice published (D1–D7).
    published_liveness: (LivenessClass, RecoveryPhase),
}

impl LifecycleMachine {
    /// A machine in `stopped`.
    pub fn new(config: SupervisorConfig) -> Self {
        let mut core = Core::new(config);
        let machine = Lifecycle
            .uninitialized_state_machine()
            .init_with_context(&mut core);
        core.effects.clear();
        core.transitions.clear();
        let mut this = LifecycleMachine {
            machine,
            core,
            published: Status {
                state: LifecycleState::Stopped,
                port: 0,
                pid: None,
                uptime_ms: None,
                error: None,
                connected_at_ms: None,
                version: None,
                protocol: None,
                boot_id: None,
                reconnect_attempts: 0,
                gateway_ready: false,
                external: false,
            },
            trace: Vec::new(),
            published_liveness: (LivenessClass::Alive, RecoveryPhase::Watching),
        };
        this.published = this.status_without_uptime();
        this
    }

    /// Handle one event at `now_ms` and return the effects to carry out, in order.
    pub fn handle(&mut self, now_ms: u64, event: Event) -> Vec<Effect> {
        // The clock never runs backwards inside the machine, whatever the caller passes.
        self.core.now_ms = self.core.now_ms.max(now_ms);
        self.core.transitions.clear();
        self.trace.clear();
        if let Event::ProcessSpawned { epoch, pid } = &event {
            if *epoch != self.core.epoch && self.core.owned_pid.is_none() {
                self.adopt_superseded_spawn(*pid);
                self.publish_status_if_changed();
                return std::mem::take(&mut self.core.effects);
            }
        }
        if let Some(reason) = self.stale_reason(&event) {
            self.core.log(
                LogLevel::Debug,
                format!("dropped {}: {reason}", event.name()),
            );
            return std::mem::take(&mut self.core.effects);
        }
        self.dispatch(&event, event.name());
        let mut rounds = 0;
        while let Some(restart) = self.flush_deferred_restart() {
            rounds += 1;
            if rounds > MAX_FLUSH_ROUNDS {
                self.core.log(
                    LogLevel::Error,
                    "deferred restart flush did not settle; stopped flushing",
                );
                break;
            }
            self.dispatch(&restart, "DeferredRestart (R6)".to_string());
        }
        self.publish_status_if_changed();
        self.publish_liveness_if_changed();
        std::mem::take(&mut self.core.effects)
    }

    fn dispatch(&mut self, event: &Event, label: String) {
        self.core.shown_state = self.state();
        self.core.flow_ended = false;
        let before = self.state();
        self.machine.handle_with_context(event, &mut self.core);
        if self.state() != before {
            self.core.flow_ended = true;
        }
        for (from, to) in self.core.transitions.drain(..) {
            self.trace.push((from, label.clone(), to));
        }
    }

    /// E1 / X1: a spawn that a stop or a newer start superseded while it was under way still
    /// made a process, and the process actor owns it. Dropping the report as stale would leave
    /// that gateway running unsupervised, and the process actor would refuse every later spawn.
    /// So the machine owns it: a newer start flow or a pending reconnect uses it (it is a fresh
    /// gateway on our port); in any other state it is terminated.
    fn adopt_superseded_spawn(&mut self, pid: u32) {
        self.core.owned_pid = Some(pid);
        self.core.process_starts = self.core.process_starts.wrapping_add(1);
        match self.state() {
            LifecycleState::Starting | LifecycleState::Reconnecting => self.core.log(
                LogLevel::Info,
                format!("gateway pid {pid} was spawned by a superseded start; using it"),
            ),
            _ => {
                self.core.log(
                    LogLevel::Warn,
                    format!(
                        "gateway pid {pid} was spawned by a start that was superseded; \
                         terminating it"
                    ),
                );
                let grace_ms = self.core.config.stop.kill_grace_ms;
                self.core.push(Effect::TerminateProcess { pid, grace_ms });
            }
        }
    }

    /// E1 and friends: why this event must not reach the states, if it must not.
    fn stale_reason(&mut self, event: &Event) -> Option<String> {
        let epoch = match event {
            Event::PortProbed { epoch, .. }
            | Event::OrphansKilled { epoch, .. }
            | Event::PortFreed { epoch }
            | Event::ProcessSpawned { epoch, .. }
            | Event::ReadinessConfirmed { epoch }
            | Event::HandshakeCompleted { epoch, .. }
            | Event::StartupWindow { epoch, .. }
            | Event::StartupWatched { epoch, .. }
            | Event::StepFailed { epoch, .. }
            | Event::RepairFinished { epoch, .. }
            | Event::SocketClosed { epoch, .. }
            | Event::ShutdownAnnounced { epoch, .. }
            | Event::ProofOfLife { epoch }
            | Event::GatewayReadySignal { epoch, .. }
            | Event::ExternalShutdownFinished { epoch, .. }
            | Event::SocketChecked { epoch, .. }
            | Event::SignalSent { epoch, .. }
            | Event::ProcessSampled { epoch, .. }
            | Event::ProbeFinished { epoch, .. }
            | Event::ConfigDigestRead { epoch, .. }
            | Event::RestartWindow { epoch, .. }
            | Event::StartObserved { epoch, .. } => Some(*epoch),
            _ => None,
        };
        if let Some(epoch) = epoch {
            if epoch != self.core.epoch {
                return Some(format!(
                    "superseded (epoch {epoch}, now {})",
                    self.core.epoch
                ));
            }
        }
        match event {
            Event::TimerFired { timer, generation } => {
                if !self.core.take_firing(*timer, *generation) {
                    return Some(format!("stale timer {timer:?} (generation {generation})"));
                }
                None
            }
            Event::ProcessExited { pid, .. }
            | Event::StderrLine { pid, .. }
            | Event::ProcessSampled { pid, .. }
            | Event::StartupTrace { pid, .. } => {
                if self.core.owned_pid != Some(*pid) {
                    return Some(format!("pid {pid} is not the owned process"));
                }
                None
            }
            Event::ProcessSpawned { pid, .. } if self.core.owned_pid.is_some() => {
                Some(format!("spawn of pid {pid} while another process is owned"))
            }
            _ => None,
        }
    }

    /// R6: flush the deferred restart. Returns the restart command to feed back in, if due.
    fn flush_deferred_restart(&mut self) -> Option<Event> {
        if !self.core.flow_ended {
            return None;
        }
        self.core.flow_ended = false;
        let requested_at = self.core.deferred_restart_since?;
        let state = self.state();
        let stopping = matches!(self.machine.state(), State::Stopping { .. });
        if stopping || self.core.is_mid_flight(state) {
            return None;
        }
        if !self.core.auto_reconnect {
            self.core.deferred_restart_since = None;
            self.core.log(
                LogLevel::Info,
                "deferred restart dropped: auto-reconnect is off",
            );
            return None;
        }
        if self
            .core
            .last_restart_completed_at
            .is_some_and(|completed| completed >= requested_at)
        {
            self.core.deferred_restart_since = None;
            self.core.log(
                LogLevel::Info,
                "deferred restart dropped: a restart completed after it was requested",
            );
            return None;
        }
        self.core.deferred_restart_since = None;
        self.core
            .log(LogLevel::Info, "executing deferred gateway restart");
        Some(Event::Command {
            command: Command::Restart,
            reply: None,
        })
    }

    fn status_without_uptime(&self) -> Status {
        let core = &self.core;
        Status {
            state: self.state(),
            port: core.config.port,
            pid: core.owned_pid,
            uptime_ms: None,
            error: core.error.clone(),
            connected_at_ms: core.connected_at,
            version: core.version.clone(),
            protocol: core.protocol,
            boot_id: core.boot_id.clone(),
            reconnect_attempts: core.reconnect_attempts,
            gateway_ready: core.gateway_ready,
            external: core.external,
        }
    }

    fn publish_status_if_changed(&mut self) {
        let status = self.status_without_uptime();
        if status != self.published {
            self.published = status.clone();
            let now = self.core.now_ms;
            self.core
                .publish(Notice::Status(self.with_uptime(status, now)));
        }
    }

    /// D1–D7: tell subscribers when the classification or the recovery phase changes.
    fn publish_liveness_if_changed(&mut self) {
        let snapshot = self.recovery();
        let current = (snapshot.liveness, snapshot.phase);
        if current != self.published_liveness {
            self.published_liveness = current;
            self.core.publish(Notice::Liveness {
                liveness: current.0,
                phase: current.1,
            });
        }
    }

    /// H6 `recovery`: what the liveness recovery is doing now.
    pub fn recovery(&self) -> RecoverySnapshot {
        match self.machine.state() {
            State::Running { run } => run.liveness.snapshot(self.core.liveness_restart),
            _ => RecoverySnapshot {
                phase: self
                    .core
                    .liveness_restart
                    .unwrap_or(RecoveryPhase::Watching),
                liveness: LivenessClass::Alive,
                deadline_at_ms: None,
                process_evidence: false,
                last_sample: None,
                last_probe: None,
            },
        }
    }

    /// M6/H6: record how a user RPC ended. A capability method's time-out degrades that
    /// capability only; a call refused while nothing is connected is no failure at all.
    pub fn record_rpc_outcome(
        &mut self,
        now_ms: u64,
        method: &str,
        outcome: Result<(), RpcFailureKind>,
    ) {
        match outcome {
            Ok(()) => self.core.diagnostics.record_rpc_success_of(now_ms, method),
            Err(kind) => {
                let capability = self.core.config.liveness.is_capability(method);
                self.core
                    .diagnostics
                    .record_rpc_failure(now_ms, method, kind, capability);
            }
        }
    }

    fn with_uptime(&self, mut status: Status, now_ms: u64) -> Status {
        if status.state == LifecycleState::Running {
            status.uptime_ms = status
                .connected_at_ms
                .map(|connected_at| now_ms.saturating_sub(connected_at));
        }
        status
    }

    /// S2: the status snapshot, uptime recomputed at `now_ms`.
    pub fn status(&self, now_ms: u64) -> Status {
        self.with_uptime(self.status_without_uptime(), now_ms)
    }

    /// S1: the public state.
    pub fn state(&self) -> LifecycleState {
        public_state(self.machine.state())
    }

    /// The statig leaf state's name (`probing_port`, `running`, ...).
    pub fn leaf(&self) -> &'static str {
        state_name(self.machine.state())
    }

    /// The leaf state with the parts of its local data that change what it does next
    /// (used to explore the machine for diagrams).
    pub fn leaf_detail(&self) -> String {
        match self.machine.state() {
            State::Stopping { stop } => format!(
                "stopping(then={:?}, external={}, pid={})",
                stop.then,
                stop.awaiting_external,
                stop.awaiting_pid.is_some()
            ),
            State::ProbingPort { flow }
            | State::KillingOrphans { flow }
            | State::WaitingPortFree { flow }
            | State::Spawning { flow }
            | State::AwaitingReady { flow }
            | State::Connecting { flow }
            | State::Repairing { flow }
            | State::RetryWaiting { flow } => format!(
                "{}(kind={:?}, attempt={}, repaired={}, own={}, external={})",
                self.leaf(),
                flow.kind,
                flow.attempt.min(3),
                flow.repair_tried,
                flow.own_process,
                flow.external
            ),
            other => state_name(other).to_string(),
        }
    }

    /// S4: connected means `running` (the machine leaves `running` the moment the socket closes).
    pub fn is_connected(&self) -> bool {
        // Not while stopping: the socket closed the moment the stop began (T3).
        matches!(self.machine.state(), State::Running { .. })
    }

    /// The current lifecycle epoch (E1).
    pub fn epoch(&self) -> u64 {
        self.core.epoch
    }

    /// The owned process, if any.
    pub fn owned_pid(&self) -> Option<u32> {
        self.core.owned_pid
    }

    /// Timers armed now.
    pub fn armed_timers(&self) -> Vec<TimerKind> {
        self.core.armed_timers()
    }

    /// Timers armed now with the generation a firing must carry.
    pub fn armed_timer_generations(&self) -> Vec<(TimerKind, u64)> {
        self.core.armed_generations()
    }

    /// Transitions taken by the last [`handle`](Self::handle): (from leaf, cause, to leaf). The
    /// cause is the event's name, or `DeferredRestart (R6)` for a flushed deferred restart.
    pub fn last_transitions(&self) -> &[(&'static str, String, &'static str)] {
        &self.trace
    }

    /// R1: a deferred restart is pending (since when).
    pub fn deferred_restart_since(&self) -> Option<u64> {
        self.core.deferred_restart_since
    }

    /// Auto-reconnect is on (L2, T1).
    pub fn auto_reconnect(&self) -> bool {
        self.core.auto_reconnect
    }

    /// R3 counters.
    pub fn restart_counters(&self) -> GovernorCounters {
        self.core.governor.counters()
    }

    /// N4 totals: (attempts, successes).
    pub fn reconnect_totals(&self) -> (u64, u64) {
        (
            self.core.reconnect_attempts_total,
            self.core.reconnect_successes_total,
        )
    }

    /// Process starts and exits seen.
    pub fn process_counts(&self) -> (u64, u64) {
        (self.core.process_starts, self.core.process_exits)
    }

    /// H5/M6 diagnostics.
    pub fn diagnostics(&self) -> &Diagnostics {
        &self.core.diagnostics
    }

    /// M6: RPC outcomes are recorded by the caller (RPCs bypass the machine).
    pub fn diagnostics_mut(&mut self) -> &mut Diagnostics {
        &mut self.core.diagnostics
    }

    /// H6: the health summary at `now_ms`.
    pub fn health(&self, now_ms: u64) -> HealthSummary {
        let state = self.state();
        let recovery = self.recovery();
        summarize_health(
            &HealthInput {
                running: state == LifecycleState::Running,
                errored: state == LifecycleState::Error,
                diagnostics: &self.core.diagnostics,
                liveness: recovery.liveness,
                phase: recovery.phase,
                external_unavailable: self.core.external_unavailable,
            },
            &self.core.config.heartbeat,
            &self.core.config.liveness,
            now_ms,
        )
    }

    /// F8: the supervisor gave up: `error`, nothing scheduled to try again (no reconnect, no
    /// replacement of a gateway that failed to restart in place).
    pub fn gave_up(&self) -> bool {
        self.state() == LifecycleState::Error
            && self.core.replacement.is_none()
            && !self.core.is_armed(TimerKind::Reconnect)
    }

    /// The configuration the machine runs with.
    pub fn config(&self) -> &SupervisorConfig {
        &self.core.config
    }
}

impl Clone for LifecycleMachine {
    fn clone(&self) -> Self {
        LifecycleMachine {
            machine: self.machine.clone(),
            core: self.core.clone(),
            published: self.published.clone(),
            trace: self.trace.clone(),
            published_liveness: self.published_liveness,
        }
    }
}
