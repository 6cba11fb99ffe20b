//! D1–D7: is a silent gateway busy, frozen or dead, and what may be done about it.
//!
//! A restart is expensive: the gateway drops in-flight agent work, and after a few unclean boots
//! its own restart-loop breaker suppresses channel auto-start. So silence alone never restarts a
//! gateway here. [`LivenessTracker`] gathers the evidence of one connection: evidence of life
//! (any frame, pong or reply: D1), the heartbeat's missed pongs (kept by the
//! [`HeartbeatTracker`], diagnostics only), samples of the gateway process's scheduler state and
//! event-loop CPU time (D2), the probes in flight and the supervisor's own stalls (D6). From that it
//! classifies the gateway ([`LivenessClass`]) and says what is allowed ([`LivenessAction`]):
//!
//! - `frozen` (stopped, zombie, or no CPU progress while silent) and owned: restart once the H2
//!   miss threshold is reached, as fast as before (D3);
//! - `busy` (CPU progressing while silent), or silent with no process evidence at all: nothing
//!   before the liveness deadline, then one core probe; only its failure restarts (D4);
//! - a tick that comes much later than scheduled means the supervisor was paused: the silence is
//!   discarded and a probe decides (D6).
//!
//! Whether a restart is then executed, deferred or suppressed by the governor is the machine's
//! call (R1, R3, D7); this module never sees the lifecycle.

use serde::{Deserialize, Serialize};

use crate::config::{HeartbeatConfig, LivenessConfig};
use crate::heartbeat::{effective_max_misses, HeartbeatTracker};

/// D2: the gateway process's scheduler state, as `/proc/<pid>/stat` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProcessRunState {
    /// `R`: on a CPU or ready to run.
    Running,
    /// `S`: sleeping interruptibly (an idle event loop waits here).
    Sleeping,
    /// `D`: uninterruptible sleep (disk or another kernel wait).
    DiskSleep,
    /// `T` / `t`: stopped by a signal or a tracer.
    Stopped,
    /// `Z`: exited, not yet reaped.
    Zombie,
    /// Anything else (`I`, `X`, ...).
    Other,
}

impl ProcessRunState {
    /// The state for one `/proc/<pid>/stat` state letter.
    pub fn from_letter(letter: char) -> Self {
        match letter {
            'R' => ProcessRunState::Running,
            'S' => ProcessRunState::Sleeping,
            'D' => ProcessRunState::DiskSleep,
            'T' | 't' => ProcessRunState::Stopped,
            'Z' | 'X' | 'x' => ProcessRunState::Zombie,
            _ => ProcessRunState::Other,
        }
    }

    /// D2: stopped or zombie: `frozen` at once, whatever the CPU did.
    pub fn is_frozen(self) -> bool {
        matches!(self, ProcessRunState::Stopped | ProcessRunState::Zombie)
    }
}

/// D2: one reading of the gateway process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessSample {
    /// Its scheduler state.
    pub state: ProcessRunState,
    /// CPU time (user + system) of the thread(s) that count, in milliseconds.
    pub cpu_ms: u64,
}

/// D2: what the evidence says about the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LivenessClass {
    /// Evidence of life since the last heartbeat judgement.
    Alive,
    /// Silent, but its event loop burns CPU (or there is no process evidence to say otherwise).
    Busy,
    /// Silent, and stopped, a zombie, or its event loop made no CPU progress.
    Frozen,
    /// The process is gone (its exit is on its way).
    Dead,
}

/// What the recovery of an unanswering gateway is doing (H6 `recovery.phase`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecoveryPhase {
    /// Gathering evidence; nothing to do.
    Watching,
    /// A D4/D6 core probe is in flight.
    Verifying,
    /// A liveness restart was decided and waits for the governor's cooldown (D7) or for the
    /// lifecycle to settle (R1).
    RestartPending,
    /// A liveness restart is running.
    RestartExecuting,
}

/// Why a core probe is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProbePurpose {
    /// G2: is the gateway ready?
    Ready,
    /// D4: the liveness deadline passed.
    Deadline,
    /// D6: the supervisor was paused; a probe decides.
    Stall,
}

/// How a core probe ended, as the machine sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "camelCase")]
pub enum ProbeOutcome {
    /// A successful reply (G2 ready; D4 evidence of life).
    Succeeded,
    /// The gateway answered with an error (evidence of life, but not ready).
    Refused {
        /// The gateway's error message.
        message: String,
    },
    /// No answer: time-out, socket closed, write failed (a core failure).
    Failed {
        /// Why.
        reason: String,
    },
}

impl ProbeOutcome {
    /// Any answer at all is evidence of life.
    pub fn answered(&self) -> bool {
        !matches!(self, ProbeOutcome::Failed { .. })
    }
}

/// The last probe, for diagnostics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeRecord {
    /// Why it was sent.
    pub purpose: ProbePurpose,
    /// When it was sent (machine clock, ms).
    pub sent_at_ms: u64,
    /// When it ended.
    pub finished_at_ms: u64,
    /// How it ended.
    pub outcome: ProbeOutcome,
}

/// A probe in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeInFlight {
    /// Its id (echoed by the result).
    pub id: u64,
    /// Why it was sent.
    pub purpose: ProbePurpose,
    /// When.
    pub sent_at_ms: u64,
}

/// H6 `recovery` in diagnostics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecoverySnapshot {
    /// What the recovery is doing.
    pub phase: RecoveryPhase,
    /// The latest classification (D2).
    pub liveness: LivenessClass,
    /// D4: when a silent gateway will be probed (machine clock, ms; `None` when not running).
    pub deadline_at_ms: Option<u64>,
    /// D2: process evidence was read for this gateway.
    pub process_evidence: bool,
    /// The last process sample.
    pub last_sample: Option<ProcessSample>,
    /// The last core probe that ended.
    pub last_probe: Option<ProbeRecord>,
}

/// What one heartbeat tick found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LivenessTick {
    /// D6: the supervisor was paused; the silence window was discarded.
    pub stalled: Option<u64>,
    /// H1: the outstanding ping counted as missed at this tick.
    pub missed: bool,
    /// H5: consecutive misses after this tick.
    pub consecutive_misses: u32,
}

/// What the evidence allows now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LivenessAction {
    /// Nothing.
    Wait,
    /// Send a core probe for this purpose (D4, D6).
    Probe(ProbePurpose),
    /// D3: a frozen owned gateway reached the miss threshold; restart it.
    RestartFrozen {
        /// Consecutive misses.
        misses: u32,
    },
    /// D4: the core probe failed with no newer evidence of life.
    ProbeFailed,
    /// D6: the stall probe failed; read the process now and decide from what it did across the
    /// pause.
    SampleNow,
}

/// D1–D7 for one connection (create it at the handshake).
#[derive(Debug, Clone)]
pub struct LivenessTracker {
    heartbeat: HeartbeatTracker,
    max_misses: u32,
    deadline_ms: u64,
    stall_threshold_ms: u64,
    busy_cpu_min_ms: u64,
    /// The last evidence of life (D1), or the handshake.
    last_evidence_at: u64,
    /// When the last heartbeat tick was handled (D6).
    last_tick_at: u64,
    /// The previous sample of this silent period, compared with the next (D2).
    baseline: Option<ProcessSample>,
    last_sample: Option<ProcessSample>,
    process_evidence: bool,
    class: LivenessClass,
    probe: Option<ProbeInFlight>,
    last_probe: Option<ProbeRecord>,
    /// A liveness restart was decided; set until evidence of life or the end of the connection.
    restart_decided: bool,
    /// D6: the stall probe failed; the next sample is compared with the last one before the
    /// stall (`Some(false)`), and says `frozen` (`Some(true)`: restart) or not.
    stall_verdict: Option<bool>,
}

impl LivenessTracker {
    /// A tracker for a connection made at `now_ms`.
    pub fn new(heartbeat: &HeartbeatConfig, liveness: &LivenessConfig, now_ms: u64) -> Self {
        LivenessTracker {
            heartbeat: HeartbeatTracker::new(heartbeat, now_ms),
            max_misses: effective_max_misses(heartbeat),
            deadline_ms: liveness.deadline_ms,
            stall_threshold_ms: liveness.stall_threshold_ms(heartbeat.interval_ms),
            busy_cpu_min_ms: liveness.busy_cpu_min_ms,
            last_evidence_at: now_ms,
            last_tick_at: now_ms,
            baseline: None,
            last_sample: None,
            process_evidence: false,
            class: LivenessClass::Alive,
            probe: None,
            last_probe: None,
            restart_decided: false,
            stall_verdict: None,
        }
    }

    /// The gateway's advertised tick interval (silence evidence; see [`HeartbeatTracker`]).
    pub fn set_tick_interval(&mut self, tick_interval_ms: Option<u64>) {
        self.heartbeat.set_tick_interval(tick_interval_ms);
    }

    /// D1: evidence of life (a frame, a pong, a reply). Misses reset, the deadline restarts, a
    /// decided restart is called off.
    pub fn record_alive(&mut self, now_ms: u64) {
        self.heartbeat.record_alive(now_ms);
        self.last_evidence_at = self.last_evidence_at.max(now_ms);
        self.class = LivenessClass::Alive;
        self.baseline = None;
        self.restart_decided = false;
        self.stall_verdict = None;
    }

    /// H1 + D6: the heartbeat timer fired. Judges the outstanding ping (evidence only: D1) and
    /// notices a supervisor stall.
    pub fn on_tick(&mut self, now_ms: u64) -> LivenessTick {
        let gap = now_ms.saturating_sub(self.last_tick_at);
        self.last_tick_at = now_ms;
        if gap > self.stall_threshold_ms {
            // D6: we, not the gateway, were silent. What arrived meanwhile is still queued; the
            // silence window means nothing. Start it over and let a probe decide. The last CPU
            // sample stays: whether the gateway's event loop ran during the pause is evidence a
            // failed probe is judged by.
            self.heartbeat.record_alive(now_ms);
            self.last_evidence_at = self.last_evidence_at.max(now_ms);
            self.stall_verdict = None;
            let tick = self.heartbeat.on_tick(now_ms);
            return LivenessTick {
                stalled: Some(gap),
                missed: false,
                consecutive_misses: tick.consecutive_misses,
            };
        }
        let tick = self.heartbeat.on_tick(now_ms);
        if !self.process_evidence && self.is_silent(now_ms) {
            // D2: without process evidence silence counts as busy (the D4 path).
            self.class = LivenessClass::Busy;
        }
        LivenessTick {
            stalled: None,
            missed: tick.missed,
            consecutive_misses: tick.consecutive_misses,
        }
    }

    /// D2: a process sample arrived (`None`: the process is gone).
    pub fn on_sample(&mut self, sample: Option<ProcessSample>, now_ms: u64) {
        let Some(sample) = sample else {
            self.class = LivenessClass::Dead;
            return;
        };
        self.process_evidence = true;
        self.last_sample = Some(sample);
        if self.stall_verdict == Some(false) {
            // D6: did the event loop run across the pause? CPU progress says busy (no restart
            // before the deadline); none, or a stopped process, says frozen.
            let progressed = self.baseline.is_some_and(|baseline| {
                sample.cpu_ms.saturating_sub(baseline.cpu_ms) >= self.busy_cpu_min_ms
            });
            let frozen = sample.state.is_frozen() || !progressed;
            self.class = if frozen {
                LivenessClass::Frozen
            } else {
                LivenessClass::Busy
            };
            // One comparison, not a mode: frozen restarts (at the next decision); busy leaves
            // the gateway to the usual rules.
            self.stall_verdict = frozen.then_some(true);
            self.baseline = Some(sample);
            return;
        }
        if !self.is_silent(now_ms) {
            // Judged only across a silent window: a sample taken while frames still arrive is the
            // baseline for the next one.
            self.class = LivenessClass::Alive;
            self.baseline = Some(sample);
            return;
        }
        if sample.state.is_frozen() {
            self.class = LivenessClass::Frozen;
        } else if let Some(baseline) = self.baseline {
            let progress = sample.cpu_ms.saturating_sub(baseline.cpu_ms);
            self.class = if progress >= self.busy_cpu_min_ms {
                LivenessClass::Busy
            } else {
                LivenessClass::Frozen
            };
        } else if self.class == LivenessClass::Alive {
            // The first silent sample: nothing to compare with yet.
            self.class = LivenessClass::Busy;
        }
        self.baseline = Some(sample);
    }

    /// Silent: a ping went unanswered, or nothing arrived for longer than the tick-silence limit.
    pub fn is_silent(&self, now_ms: u64) -> bool {
        self.heartbeat.consecutive_misses() > 0 || self.heartbeat.is_silent_at(now_ms)
    }

    /// D3/D4: what the evidence allows at `now_ms`, for an `owned` gateway or not.
    pub fn decide(&mut self, now_ms: u64, owned: bool) -> LivenessAction {
        if self.restart_decided {
            return LivenessAction::Wait;
        }
        let misses = self.heartbeat.consecutive_misses();
        let frozen = matches!(self.class, LivenessClass::Frozen | LivenessClass::Dead);
        if self.stall_verdict == Some(true) {
            // D6: the stall probe failed and the event loop did not run across the pause.
            self.stall_verdict = None;
            if owned {
                self.restart_decided = true;
                return LivenessAction::RestartFrozen { misses };
            }
        }
        if owned && frozen && misses >= self.max_misses && self.is_silent(now_ms) {
            self.restart_decided = true;
            return LivenessAction::RestartFrozen { misses };
        }
        if now_ms >= self.deadline_at() && self.probe.is_none() {
            return LivenessAction::Probe(ProbePurpose::Deadline);
        }
        LivenessAction::Wait
    }

    /// D1: the last evidence of life (or the handshake, or the end of a supervisor stall).
    pub fn last_evidence_at(&self) -> u64 {
        self.last_evidence_at
    }

    /// D4: when a silent gateway is probed.
    pub fn deadline_at(&self) -> u64 {
        self.last_evidence_at.saturating_add(self.deadline_ms)
    }

    /// One probe of each kind at a time: a liveness probe is not sent while one is in flight.
    pub fn probe_in_flight(&self) -> Option<ProbeInFlight> {
        self.probe
    }

    /// A liveness probe was sent.
    pub fn probe_sent(&mut self, probe: ProbeInFlight) {
        self.probe = Some(probe);
    }

    /// D4: the liveness probe `id` ended. An answer is evidence of life; a failure restarts only
    /// when nothing newer proved the gateway alive meanwhile (E1).
    pub fn probe_finished(
        &mut self,
        id: u64,
        outcome: &ProbeOutcome,
        now_ms: u64,
    ) -> LivenessAction {
        let Some(probe) = self.probe.filter(|probe| probe.id == id) else {
            return LivenessAction::Wait;
        };
        self.probe = None;
        self.record_probe(probe, outcome.clone(), now_ms);
        if outcome.answered() {
            self.record_alive(now_ms);
            return LivenessAction::Wait;
        }
        if self.last_evidence_at > probe.sent_at_ms || self.restart_decided {
            return LivenessAction::Wait;
        }
        if probe.purpose == ProbePurpose::Stall {
            // D6: a stall probe that fails restarts nothing by itself: the gateway may simply be
            // busy. With process evidence, one sample compared with the last before the pause
            // decides (frozen: restart; busy: the D4 deadline applies); without it, the D4
            // deadline does.
            if self.process_evidence {
                self.stall_verdict = Some(false);
                return LivenessAction::SampleNow;
            }
            return LivenessAction::Wait;
        }
        self.restart_decided = true;
        LivenessAction::ProbeFailed
    }

    /// Keep `outcome` as the last probe (G2's ready probes are recorded here too).
    pub fn record_probe(&mut self, probe: ProbeInFlight, outcome: ProbeOutcome, now_ms: u64) {
        self.last_probe = Some(ProbeRecord {
            purpose: probe.purpose,
            sent_at_ms: probe.sent_at_ms,
            finished_at_ms: now_ms,
            outcome,
        });
    }

    /// The latest classification.
    pub fn class(&self) -> LivenessClass {
        self.class
    }

    /// H5: consecutive missed pings.
    pub fn consecutive_misses(&self) -> u32 {
        self.heartbeat.consecutive_misses()
    }

    /// A liveness restart was decided and no evidence of life came since.
    pub fn restart_decided(&self) -> bool {
        self.restart_decided
    }

    /// H6 `recovery`, given what the machine knows about the restart.
    pub fn snapshot(&self, restart: Option<RecoveryPhase>) -> RecoverySnapshot {
        let phase = match restart {
            Some(phase) => phase,
            None if self
                .probe
                .is_some_and(|probe| probe.purpose != ProbePurpose::Ready) =>
            {
                RecoveryPhase::Verifying
            }
            None => RecoveryPhase::Watching,
        };
        RecoverySnapshot {
            phase,
            liveness: self.class,
            deadline_at_ms: Some(self.deadline_at()),
            process_evidence: self.process_evidence,
            last_sample: self.last_sample,
            last_probe: self.last_probe.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: u64 = 30_000;

    fn tracker() -> LivenessTracker {
        LivenessTracker::new(&HeartbeatConfig::default(), &LivenessConfig::default(), 0)
    }

    fn sample(state: ProcessRunState, cpu_ms: u64) -> Option<ProcessSample> {
        Some(ProcessSample { state, cpu_ms })
    }

    /// Ticks every interval from `from` through `to`, each followed by a sample whose CPU time
    /// `cpu(at)` gives; returns the first action that is not `Wait`, with its time.
    fn run(
        tracker: &mut LivenessTracker,
        from: u64,
        to: u64,
        cpu: impl Fn(u64) -> Option<ProcessSample>,
    ) -> Option<(u64, LivenessAction)> {
        let mut at = from;
        while at <= to {
            tracker.on_tick(at);
            tracker.on_sample(cpu(at), at);
            let action = tracker.decide(at, true);
            if action != LivenessAction::Wait {
                return Some((at, action));
            }
            at += INTERVAL;
        }
        None
    }

    #[test]
    fn d1_missed_pongs_alone_never_restart_without_process_evidence() {
        let mut tracker = tracker();
        let mut at = INTERVAL;
        while at < 180_000 {
            tracker.on_tick(at);
            assert_eq!(tracker.decide(at, true), LivenessAction::Wait, "at {at}");
            at += INTERVAL;
        }
        assert!(tracker.consecutive_misses() >= 3);
        assert_eq!(tracker.class(), LivenessClass::Busy);
    }

    #[test]
    fn d4_the_deadline_alone_sends_a_probe_even_before_a_pong_was_missed() {
        // A deadline shorter than the heartbeat interval: no miss yet, but no evidence either.
        let liveness = LivenessConfig {
            deadline_ms: 20_000,
            ..LivenessConfig::default()
        };
        let mut tracker = LivenessTracker::new(&HeartbeatConfig::default(), &liveness, 0);
        assert_eq!(tracker.decide(19_999, true), LivenessAction::Wait);
        assert_eq!(
            tracker.decide(20_000, true),
            LivenessAction::Probe(ProbePurpose::Deadline)
        );
    }

    #[test]
    fn d2_cpu_progress_while_silent_is_busy() {
        let mut tracker = tracker();
        let action = run(&mut tracker, INTERVAL, 150_000, |at| {
            sample(ProcessRunState::Running, at)
        });
        assert_eq!(action, None);
        assert_eq!(tracker.class(), LivenessClass::Busy);
    }

    #[test]
    fn d2_no_cpu_progress_while_silent_is_frozen() {
        let mut tracker = tracker();
        tracker.on_tick(INTERVAL);
        tracker.on_sample(sample(ProcessRunState::Sleeping, 500), INTERVAL);
        tracker.on_tick(2 * INTERVAL);
        tracker.on_sample(sample(ProcessRunState::Sleeping, 505), 2 * INTERVAL);
        assert_eq!(tracker.class(), LivenessClass::Frozen);
    }

    #[test]
    fn d2_cpu_below_the_threshold_is_not_busy_and_at_it_is() {
        let config = LivenessConfig::default();
        let mut frozen = tracker();
        frozen.on_tick(INTERVAL);
        frozen.on_sample(sample(ProcessRunState::Sleeping, 0), INTERVAL);
        frozen.on_tick(2 * INTERVAL);
        frozen.on_sample(
            sample(ProcessRunState::Sleeping, config.busy_cpu_min_ms - 1),
            2 * INTERVAL,
        );
        assert_eq!(frozen.class(), LivenessClass::Frozen);
        let mut busy = tracker();
        busy.on_tick(INTERVAL);
        busy.on_sample(sample(ProcessRunState::Sleeping, 0), INTERVAL);
        busy.on_tick(2 * INTERVAL);
        busy.on_sample(
            sample(ProcessRunState::Sleeping, config.busy_cpu_min_ms),
            2 * INTERVAL,
        );
        assert_eq!(busy.class(), LivenessClass::Busy);
    }

    #[test]
    fn d2_stopped_or_zombie_is_frozen_at_once() {
        for state in [ProcessRunState::Stopped, ProcessRunState::Zombie] {
            let mut tracker = tracker();
            tracker.on_tick(INTERVAL);
            tracker.on_tick(2 * INTERVAL);
            tracker.on_sample(sample(state, 1_000_000), 2 * INTERVAL);
            assert_eq!(tracker.class(), LivenessClass::Frozen, "{state:?}");
        }
    }

    #[test]
    fn d2_a_sample_while_frames_arrive_is_alive() {
        let mut tracker = tracker();
        tracker.on_tick(INTERVAL);
        tracker.record_alive(INTERVAL + 5);
        tracker.on_sample(sample(ProcessRunState::Stopped, 0), INTERVAL + 10);
        assert_eq!(tracker.class(), LivenessClass::Alive);
    }

    #[test]
    fn d2_a_vanished_process_is_dead() {
        let mut tracker = tracker();
        tracker.on_sample(None, 10);
        assert_eq!(tracker.class(), LivenessClass::Dead);
    }

    #[test]
    fn d3_frozen_owned_restarts_at_the_miss_threshold_as_fast_as_before() {
        let mut tracker = tracker();
        let action = run(&mut tracker, INTERVAL, 600_000, |_| {
            sample(ProcessRunState::Sleeping, 42)
        });
        // Ping at 30 s, misses at 60, 90, 120 s: (3 + 1) × interval.
        assert_eq!(
            action,
            Some((4 * INTERVAL, LivenessAction::RestartFrozen { misses: 3 }))
        );
        // Decided once.
        assert_eq!(tracker.decide(4 * INTERVAL, true), LivenessAction::Wait);
    }

    #[test]
    fn d3_frozen_but_not_owned_is_never_restarted_only_probed() {
        let mut tracker = tracker();
        let mut at = INTERVAL;
        let mut actions = Vec::new();
        while at <= 240_000 {
            tracker.on_tick(at);
            tracker.on_sample(sample(ProcessRunState::Stopped, 0), at);
            let action = tracker.decide(at, false);
            if action != LivenessAction::Wait {
                actions.push((at, action));
                break;
            }
            at += INTERVAL;
        }
        assert_eq!(
            actions,
            vec![(180_000, LivenessAction::Probe(ProbePurpose::Deadline))]
        );
    }

    #[test]
    fn d4_busy_is_probed_at_the_deadline_and_a_reply_resets_it() {
        let mut tracker = tracker();
        let action = run(&mut tracker, INTERVAL, 600_000, |at| {
            sample(ProcessRunState::Running, at)
        });
        // The deadline (180 s after the last evidence) is checked at the ticks.
        assert_eq!(
            action,
            Some((180_000, LivenessAction::Probe(ProbePurpose::Deadline)))
        );
        let probe = ProbeInFlight {
            id: 7,
            purpose: ProbePurpose::Deadline,
            sent_at_ms: 180_000,
        };
        tracker.probe_sent(probe);
        assert_eq!(
            tracker.decide(181_000, true),
            LivenessAction::Wait,
            "one probe at a time"
        );
        assert_eq!(
            tracker.probe_finished(7, &ProbeOutcome::Succeeded, 180_040),
            LivenessAction::Wait
        );
        assert_eq!(tracker.deadline_at(), 180_040 + 180_000);
        assert_eq!(tracker.class(), LivenessClass::Alive);
    }

    #[test]
    fn d4_an_error_answer_is_evidence_of_life() {
        let mut tracker = tracker();
        tracker.probe_sent(ProbeInFlight {
            id: 1,
            purpose: ProbePurpose::Deadline,
            sent_at_ms: 180_000,
        });
        let refused = ProbeOutcome::Refused {
            message: "unknown method".into(),
        };
        assert_eq!(
            tracker.probe_finished(1, &refused, 180_100),
            LivenessAction::Wait
        );
        assert_eq!(tracker.deadline_at(), 360_100);
    }

    #[test]
    fn d4_a_failed_probe_restarts_once() {
        let mut tracker = tracker();
        tracker.probe_sent(ProbeInFlight {
            id: 1,
            purpose: ProbePurpose::Deadline,
            sent_at_ms: 180_000,
        });
        let failed = ProbeOutcome::Failed {
            reason: "timeout".into(),
        };
        assert_eq!(
            tracker.probe_finished(1, &failed, 185_000),
            LivenessAction::ProbeFailed
        );
        assert!(tracker.restart_decided());
        // A second report of the same probe changes nothing.
        assert_eq!(
            tracker.probe_finished(1, &failed, 185_001),
            LivenessAction::Wait
        );
    }

    #[test]
    fn d4_a_probe_failing_after_newer_evidence_is_ignored() {
        let mut tracker = tracker();
        tracker.probe_sent(ProbeInFlight {
            id: 1,
            purpose: ProbePurpose::Deadline,
            sent_at_ms: 180_000,
        });
        tracker.record_alive(182_000);
        let failed = ProbeOutcome::Failed {
            reason: "timeout".into(),
        };
        assert_eq!(
            tracker.probe_finished(1, &failed, 185_000),
            LivenessAction::Wait
        );
        assert!(!tracker.restart_decided());
    }

    #[test]
    fn d4_a_result_for_another_probe_is_ignored() {
        let mut tracker = tracker();
        tracker.probe_sent(ProbeInFlight {
            id: 2,
            purpose: ProbePurpose::Deadline,
            sent_at_ms: 180_000,
        });
        let failed = ProbeOutcome::Failed {
            reason: "timeout".into(),
        };
        assert_eq!(
            tracker.probe_finished(1, &failed, 185_000),
            LivenessAction::Wait
        );
        assert!(tracker.probe_in_flight().is_some());
    }

    #[test]
    fn d6_a_late_tick_discards_the_silence_and_misses_nothing() {
        let mut tracker = tracker();
        tracker.on_tick(INTERVAL);
        // Paused for 88 s: the next tick comes 118 s after the previous one.
        let tick = tracker.on_tick(INTERVAL + 118_000);
        assert_eq!(tick.stalled, Some(118_000));
        assert!(!tick.missed);
        assert_eq!(tick.consecutive_misses, 0);
        assert!(!tracker.is_silent(INTERVAL + 118_000));
        assert_eq!(
            tracker.decide(INTERVAL + 118_000, true),
            LivenessAction::Wait
        );
    }

    fn stalled_and_probed(tracker: &mut LivenessTracker) -> u64 {
        tracker.on_tick(INTERVAL);
        tracker.on_sample(sample(ProcessRunState::Sleeping, 1_000), INTERVAL);
        let resumed = INTERVAL + 90_000;
        assert!(tracker.on_tick(resumed).stalled.is_some());
        tracker.probe_sent(ProbeInFlight {
            id: 3,
            purpose: ProbePurpose::Stall,
            sent_at_ms: resumed,
        });
        let failed = ProbeOutcome::Failed {
            reason: "timeout".into(),
        };
        assert_eq!(
            tracker.probe_finished(3, &failed, resumed + 5_000),
            LivenessAction::SampleNow,
            "a failed stall probe restarts nothing by itself"
        );
        resumed + 5_000
    }

    #[test]
    fn d6_a_failed_stall_probe_of_a_gateway_that_ran_across_the_pause_is_busy_not_restarted() {
        let mut tracker = tracker();
        let at = stalled_and_probed(&mut tracker);
        tracker.on_sample(sample(ProcessRunState::Running, 60_000), at);
        assert_eq!(tracker.class(), LivenessClass::Busy);
        assert_eq!(tracker.decide(at, true), LivenessAction::Wait);
    }

    #[test]
    fn d6_a_failed_stall_probe_of_a_gateway_that_did_not_run_restarts_it() {
        let mut tracker = tracker();
        let at = stalled_and_probed(&mut tracker);
        tracker.on_sample(sample(ProcessRunState::Sleeping, 1_000), at);
        assert_eq!(tracker.class(), LivenessClass::Frozen);
        assert!(matches!(
            tracker.decide(at, true),
            LivenessAction::RestartFrozen { .. }
        ));
        assert_eq!(tracker.decide(at, true), LivenessAction::Wait, "once");
    }

    #[test]
    fn d6_a_failed_stall_probe_without_process_evidence_waits_for_the_deadline() {
        let mut tracker = tracker();
        let resumed = INTERVAL + 90_000;
        tracker.on_tick(INTERVAL);
        assert!(tracker.on_tick(resumed).stalled.is_some());
        tracker.probe_sent(ProbeInFlight {
            id: 4,
            purpose: ProbePurpose::Stall,
            sent_at_ms: resumed,
        });
        let failed = ProbeOutcome::Failed {
            reason: "timeout".into(),
        };
        assert_eq!(
            tracker.probe_finished(4, &failed, resumed + 5_000),
            LivenessAction::Wait
        );
        assert_eq!(tracker.decide(resumed + 5_000, true), LivenessAction::Wait);
        assert_eq!(tracker.deadline_at(), resumed + 180_000);
    }

    #[test]
    fn d6_the_stall_threshold_is_twice_the_interval_and_at_least_the_minimum() {
        let config = LivenessConfig::default();
        assert_eq!(config.stall_threshold_ms(30_000), 60_000);
        assert_eq!(config.stall_threshold_ms(1_000), 5_000);
        let mut tracker = tracker();
        tracker.on_tick(INTERVAL);
        assert_eq!(tracker.on_tick(INTERVAL + 60_000).stalled, None);
        assert_eq!(tracker.on_tick(INTERVAL + 120_001).stalled, Some(60_001));
    }

    #[test]
    fn h6_the_snapshot_says_verifying_while_a_liveness_probe_is_in_flight() {
        let mut tracker = tracker();
        assert_eq!(tracker.snapshot(None).phase, RecoveryPhase::Watching);
        tracker.probe_sent(ProbeInFlight {
            id: 1,
            purpose: ProbePurpose::Deadline,
            sent_at_ms: 1,
        });
        assert_eq!(tracker.snapshot(None).phase, RecoveryPhase::Verifying);
        assert_eq!(
            tracker.snapshot(Some(RecoveryPhase::RestartPending)).phase,
            RecoveryPhase::RestartPending
        );
    }

    #[test]
    fn d2_state_letters_map_as_proc_documents_them() {
        assert_eq!(ProcessRunState::from_letter('R'), ProcessRunState::Running);
        assert_eq!(ProcessRunState::from_letter('S'), ProcessRunState::Sleeping);
        assert_eq!(
            ProcessRunState::from_letter('D'),
            ProcessRunState::DiskSleep
        );
        assert_eq!(ProcessRunState::from_letter('T'), ProcessRunState::Stopped);
        assert_eq!(ProcessRunState::from_letter('t'), ProcessRunState::Stopped);
        assert_eq!(ProcessRunState::from_letter('Z'), ProcessRunState::Zombie);
        assert_eq!(ProcessRunState::from_letter('I'), ProcessRunState::Other);
    }
}
