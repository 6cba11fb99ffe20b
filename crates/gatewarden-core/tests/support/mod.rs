//! A script helper for driving the lifecycle machine on a virtual clock: it plays the actor
//! layer's part (answers effects when told to, keeps the armed timers, collects replies), so a
//! test reads as the sequence of facts it feeds in.
#![allow(dead_code)]

use std::collections::BTreeMap;

use gatewarden_core::config::SupervisorConfig;
use gatewarden_core::liveness::{ProbeOutcome, ProcessSample};
use gatewarden_core::machine::{
    Command, CommandOutcome, Effect, Event, Handshake, LifecycleMachine, LifecycleState, Notice,
    PortProbe, ReplyId, TimerKind,
};

/// How the harness's stand-in connection answers core probes (D4, D6, G2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeMode {
    /// Never answered (the probe stays in flight).
    Ignore,
    /// Answered successfully after this many ms.
    Answer(u64),
    /// Answered with a gateway error after this many ms (alive, not ready).
    Refuse(u64),
    /// Fails after its time limit.
    Fail,
}

/// The gateway's CPU time as a function of the clock (D2 samples); `None` leaves samples
/// unanswered.
pub type CpuModel = Box<dyn Fn(u64) -> Option<ProcessSample>>;

pub struct Harness {
    pub machine: LifecycleMachine,
    pub now: u64,
    /// Effects of the last step.
    pub last: Vec<Effect>,
    /// Every effect since the harness began.
    pub all: Vec<Effect>,
    pub timers: BTreeMap<TimerKind, (u64, u64)>,
    pub replies: BTreeMap<ReplyId, Vec<CommandOutcome>>,
    next_reply: ReplyId,
    next_pid: u32,
    /// Answers to effects that arrive later (probe results).
    pub pending: Vec<(u64, Event)>,
    pub probes: ProbeMode,
    pub cpu: Option<CpuModel>,
}

impl Harness {
    pub fn new(config: SupervisorConfig) -> Self {
        Harness {
            machine: LifecycleMachine::new(config),
            now: 1_000,
            last: Vec::new(),
            all: Vec::new(),
            timers: BTreeMap::new(),
            replies: BTreeMap::new(),
            next_reply: 1,
            next_pid: 4_000,
            pending: Vec::new(),
            probes: ProbeMode::Ignore,
            cpu: None,
        }
    }

    /// Defaults without jitter, so delays are exact.
    pub fn quiet() -> Self {
        let mut config = SupervisorConfig::default();
        config.reconnect.jitter = 0.0;
        Harness::new(config)
    }

    pub fn send(&mut self, event: Event) -> &[Effect] {
        let effects = self.machine.handle(self.now, event);
        for effect in &effects {
            match effect {
                Effect::ArmTimer {
                    timer,
                    generation,
                    at_ms,
                } => {
                    self.timers.insert(*timer, (*generation, *at_ms));
                }
                Effect::CancelTimer { timer } => {
                    self.timers.remove(timer);
                }
                Effect::Reply { reply, outcome } => {
                    self.replies
                        .entry(*reply)
                        .or_default()
                        .push(outcome.clone());
                }
                Effect::SendProbe {
                    epoch,
                    probe,
                    timeout_ms,
                    ..
                } => {
                    let answer = match self.probes {
                        ProbeMode::Ignore => None,
                        ProbeMode::Answer(after) => Some((after, ProbeOutcome::Succeeded)),
                        ProbeMode::Refuse(after) => Some((
                            after,
                            ProbeOutcome::Refused {
                                message: "unknown method: system-presence".into(),
                            },
                        )),
                        ProbeMode::Fail => Some((
                            *timeout_ms,
                            ProbeOutcome::Failed {
                                reason: "RPC timeout: system-presence".into(),
                            },
                        )),
                    };
                    if let Some((after, outcome)) = answer {
                        self.pending.push((
                            self.now + after,
                            Event::ProbeFinished {
                                epoch: *epoch,
                                probe: *probe,
                                outcome,
                            },
                        ));
                    }
                }
                Effect::SampleProcess { epoch, pid } => {
                    if let Some(cpu) = &self.cpu {
                        let sample = cpu(self.now);
                        self.pending.push((
                            self.now,
                            Event::ProcessSampled {
                                epoch: *epoch,
                                pid: *pid,
                                sample,
                            },
                        ));
                    }
                }
                _ => {}
            }
        }
        self.all.extend(effects.iter().cloned());
        self.last = effects;
        &self.last
    }

    pub fn command(&mut self, command: Command) -> ReplyId {
        let reply = self.next_reply;
        self.next_reply += 1;
        self.send(Event::Command {
            command,
            reply: Some(reply),
        });
        reply
    }

    pub fn reply_of(&self, reply: ReplyId) -> Option<&CommandOutcome> {
        let outcomes = self.replies.get(&reply)?;
        assert_eq!(
            outcomes.len(),
            1,
            "reply {reply} answered {} times",
            outcomes.len()
        );
        outcomes.first()
    }

    /// Advance the clock by `ms`, firing every timer that falls due, in order.
    pub fn advance(&mut self, ms: u64) {
        let until = self.now + ms;
        loop {
            // Answers due first (at the same time as a timer, an answer was on its way first).
            if let Some(index) = self
                .pending
                .iter()
                .enumerate()
                .filter(|(_, (at, _))| *at <= until)
                .min_by_key(|(_, (at, _))| *at)
                .map(|(index, _)| index)
            {
                let due_timer = self
                    .timers
                    .values()
                    .map(|(_, at)| *at)
                    .min()
                    .unwrap_or(u64::MAX);
                if self.pending[index].0 <= due_timer {
                    let (at, event) = self.pending.remove(index);
                    self.now = self.now.max(at);
                    self.send(event);
                    continue;
                }
            }
            let due = self
                .timers
                .iter()
                .filter(|(_, (_, at))| *at <= until)
                .min_by_key(|(_, (_, at))| *at)
                .map(|(timer, (generation, at))| (*timer, *generation, *at));
            let Some((timer, generation, at)) = due else {
                break;
            };
            self.timers.remove(&timer);
            self.now = self.now.max(at);
            self.send(Event::TimerFired { timer, generation });
        }
        self.now = until;
    }

    /// D6: the supervisor is paused for `ms`: the clock jumps and nothing fires meanwhile; what
    /// was due fires late, in order, on the next `advance`.
    pub fn pause(&mut self, ms: u64) {
        self.now += ms;
    }

    pub fn epoch(&self) -> u64 {
        self.machine.epoch()
    }

    pub fn state(&self) -> LifecycleState {
        self.machine.state()
    }

    pub fn leaf(&self) -> &'static str {
        self.machine.leaf()
    }

    pub fn probe_free(&mut self) {
        let epoch = self.epoch();
        self.send(Event::PortProbed {
            epoch,
            probe: PortProbe::free(),
        });
    }

    pub fn spawned(&mut self) -> u32 {
        self.next_pid += 1;
        let pid = self.next_pid;
        let epoch = self.epoch();
        self.send(Event::ProcessSpawned { epoch, pid });
        pid
    }

    pub fn ready(&mut self) {
        let epoch = self.epoch();
        self.send(Event::ReadinessConfirmed { epoch });
    }

    pub fn handshake(&mut self) {
        let epoch = self.epoch();
        self.send(Event::HandshakeCompleted {
            epoch,
            handshake: Handshake {
                protocol: 4,
                server_version: Some("2026.9.6".into()),
                boot_id: Some(format!("boot-{epoch}")),
                has_snapshot: false,
                tick_interval_ms: None,
            },
        });
    }

    /// Start → running through a fresh spawn. Returns the pid.
    pub fn start_to_running(&mut self) -> u32 {
        self.command(Command::Start);
        self.run_start_flow()
    }

    /// Drive an already begun start flow to running through a fresh spawn.
    pub fn run_start_flow(&mut self) -> u32 {
        assert_eq!(self.leaf(), "probing_port", "start flow expected");
        self.probe_free();
        if self.leaf() == "waiting_port_free" {
            let epoch = self.epoch();
            self.send(Event::PortFreed { epoch });
        }
        let pid = self.spawned();
        self.ready();
        self.handshake();
        assert_eq!(self.state(), LifecycleState::Running);
        pid
    }

    pub fn exit(&mut self, pid: u32, code: i32) {
        self.send(Event::ProcessExited {
            pid,
            code: Some(code),
        });
    }

    pub fn socket_closed(&mut self, code: u16) {
        let epoch = self.epoch();
        self.send(Event::SocketClosed {
            epoch,
            code: Some(code),
        });
    }

    pub fn last_has(&self, predicate: impl Fn(&Effect) -> bool) -> bool {
        self.last.iter().any(predicate)
    }

    pub fn all_count(&self, predicate: impl Fn(&Effect) -> bool) -> usize {
        self.all.iter().filter(|effect| predicate(effect)).count()
    }

    pub fn spawns(&self) -> usize {
        self.all_count(|effect| matches!(effect, Effect::SpawnProcess { .. }))
    }

    pub fn published_status_states(&self) -> Vec<LifecycleState> {
        self.all
            .iter()
            .filter_map(|effect| match effect {
                Effect::Publish(Notice::Status(status)) => Some(status.state),
                _ => None,
            })
            .collect()
    }

    pub fn terminate_pid(&self) -> Option<u32> {
        self.last.iter().find_map(|effect| match effect {
            Effect::TerminateProcess { pid, .. } => Some(*pid),
            _ => None,
        })
    }
}
