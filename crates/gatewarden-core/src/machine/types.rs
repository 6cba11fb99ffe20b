//! The vocabulary of the lifecycle machine: the events it takes, the effects it returns, and the
//! status it reports.
//!
//! Events are past-tense facts or commands from users; effects are instructions for the actor
//! layer. Every effect that starts an asynchronous step carries the lifecycle `epoch` (E1); the
//! actor echoes it in the result event, so a result of a superseded flow is recognised and dropped.

use serde::{Deserialize, Serialize};

use crate::config::ReloadSignal;
use crate::error::{CommandFailure, IgnoredReason, RepairFailure, SignalFailure, StartFailure};
use crate::liveness::{LivenessClass, ProbeOutcome, ProcessSample, RecoveryPhase};
use crate::reload_policy::ReloadPolicy;
use crate::rpc::RpcError;

/// Identifies a caller waiting for the outcome of a command; echoed in [`Effect::Reply`].
pub type ReplyId = u64;

/// S1: the lifecycle states users see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LifecycleState {
    /// Not running and not trying to.
    Stopped,
    /// A start flow is running.
    Starting,
    /// Connected and handshaken.
    Running,
    /// Waiting for the next automatic reconnect attempt.
    Reconnecting,
    /// The last start failed or reconnecting gave up.
    Error,
}

impl LifecycleState {
    /// The lower-case name used in status output.
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleState::Stopped => "stopped",
            LifecycleState::Starting => "starting",
            LifecycleState::Running => "running",
            LifecycleState::Reconnecting => "reconnecting",
            LifecycleState::Error => "error",
        }
    }
}

/// S2: the status snapshot (see [`crate::rules`]). The handshake's facts (`version`,
/// `protocol`, `boot_id`) stay after the connection ends: outside `running` they are the last
/// known ones.
///
/// ```
/// use gatewarden_core::config::SupervisorConfig;
/// use gatewarden_core::machine::{LifecycleMachine, LifecycleState};
///
/// let machine = LifecycleMachine::new(SupervisorConfig::default());
/// let status = machine.status(0);
/// assert_eq!(status.state, LifecycleState::Stopped);
/// assert_eq!(status.pid, None);
/// // Serialized with camelCase names.
/// let json = serde_json::to_value(&status).unwrap();
/// assert_eq!(json["reconnectAttempts"], 0);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// S1 state.
    pub state: LifecycleState,
    /// The gateway port.
    pub port: u16,
    /// The owned process's pid (never an external gateway's).
    pub pid: Option<u32>,
    /// Milliseconds since connected, recomputed when read in `running`.
    pub uptime_ms: Option<u64>,
    /// Last error text.
    pub error: Option<String>,
    /// When the handshake completed (machine clock, ms).
    pub connected_at_ms: Option<u64>,
    /// Gateway version from the handshake reply.
    pub version: Option<String>,
    /// C2: the protocol the gateway chose.
    pub protocol: Option<u32>,
    /// The gateway's boot id (changes on every in-place restart).
    pub boot_id: Option<String>,
    /// Automatic reconnect attempts made since the last reset.
    pub reconnect_attempts: u32,
    /// G1/G2: the gateway's subsystems are ready.
    pub gateway_ready: bool,
    /// Connected to a gateway this supervisor did not spawn.
    pub external: bool,
}

/// A user command (the public API's messages, minus RPC which bypasses the machine).
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// L1–L8.
    Start,
    /// T1–T5.
    Stop,
    /// R1–R6.
    Restart,
    /// P3–P4, with the reload policy current when the request was made (P1–P2).
    Reload {
        /// The reload policy read from the gateway config.
        policy: ReloadPolicy,
    },
    /// R7.
    DebouncedRestart {
        /// Debounce window; the configured default when `None`.
        delay_ms: Option<u64>,
    },
    /// P5.
    DebouncedReload {
        /// Debounce window; the policy's `debounceMs` when `None`.
        delay_ms: Option<u64>,
        /// The reload policy read from the gateway config.
        policy: ReloadPolicy,
    },
    /// T6: terminate the owned process only.
    ForceTerminate,
}

impl Command {
    /// A short name for logs and diagrams.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Start => "Start",
            Command::Stop => "Stop",
            Command::Restart => "Restart",
            Command::Reload { .. } => "Reload",
            Command::DebouncedRestart { .. } => "DebouncedRestart",
            Command::DebouncedReload { .. } => "DebouncedReload",
            Command::ForceTerminate => "ForceTerminate",
        }
    }
}

/// One process found listening on the gateway port (O1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    /// Its pid, when visible.
    pub pid: Option<u32>,
    /// Its program name, when visible.
    pub program: Option<String>,
    /// Recorded in our state directory with a matching pid and start time: our own orphan.
    pub ours_by_record: bool,
}

/// O1 / L5 step 1: what the port looks like before spawning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortProbe {
    /// Processes listening on the port.
    pub listeners: Vec<Listener>,
    /// Something on the port answered the gateway probe (sent `connect.challenge`).
    pub answers_as_gateway: bool,
}

impl PortProbe {
    /// Nothing listens on the port.
    pub fn free() -> Self {
        PortProbe {
            listeners: Vec::new(),
            answers_as_gateway: false,
        }
    }
}

/// What the handshake reply told us (C1, C2, G2).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Handshake {
    /// C2: the protocol the gateway chose.
    pub protocol: u32,
    /// `hello-ok.server.version`.
    pub server_version: Option<String>,
    /// `hello-ok.server.bootId`.
    pub boot_id: Option<String>,
    /// `hello-ok.snapshot` was present (G2 beyond: a ready signal).
    pub has_snapshot: bool,
    /// `hello-ok.policy.tickIntervalMs`, for the tick-silence rule.
    pub tick_interval_ms: Option<u64>,
}

/// Where a gateway-ready signal came from (G1, G2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ReadySource {
    /// A `gateway.ready` / `ready` event (G1).
    ReadyEvent,
    /// The first `health` event (G2 beyond).
    HealthEvent,
    /// The gateway's `/readyz` answered ready (G2 beyond).
    Readyz,
}

/// T2: how the `shutdown` request to an external gateway ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExternalShutdownOutcome {
    /// The gateway accepted it.
    Accepted,
    /// "unknown method: shutdown": never ask this gateway again.
    Unsupported,
    /// Any other failure (timeout, closed socket); logged.
    Failed(String),
}

/// The machine's timers. Each arm carries a generation; a firing whose generation is not the
/// armed one is stale and dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TimerKind {
    /// N2/N3: the next reconnect attempt.
    Reconnect,
    /// L6: wait before retrying the start sequence.
    StartRetry,
    /// W1 (beyond): retry `connect` after the startup-window answer.
    ConnectRetry,
    /// G2: the next core probe for readiness (never a ready signal by itself).
    ReadyProbe,
    /// H1: heartbeat tick.
    Heartbeat,
    /// H4: health check tick.
    HealthCheck,
    /// R7: debounced restart.
    RestartDebounce,
    /// P5: debounced reload.
    ReloadDebounce,
    /// P3: check the process after the reload signal.
    ReloadCheck,
    /// P4: give up waiting for the in-place restart's reconnect.
    ReloadDeadline,
    /// N5: the gateway has stayed up long enough to count as stable.
    StableRun,
    /// D4: the liveness deadline of a silent gateway (re-armed from the last evidence of life).
    LivenessDeadline,
    /// D7: a liveness restart the governor suppressed runs when its cooldown ends.
    LivenessRestart,
    // F-rules (issue 22)
    /// F5: the owned gateway restarting in place must serve again by now.
    InPlaceRestart,
    /// F6: the port opened but no `connect.challenge` came; the attempt fails when this fires.
    ChallengeWait,
    /// F6: log what the start in progress has seen so far.
    StartProgress,
}

impl TimerKind {
    /// Every timer kind.
    pub const ALL: [TimerKind; 16] = [
        TimerKind::Reconnect,
        TimerKind::StartRetry,
        TimerKind::ConnectRetry,
        TimerKind::ReadyProbe,
        TimerKind::Heartbeat,
        TimerKind::HealthCheck,
        TimerKind::RestartDebounce,
        TimerKind::ReloadDebounce,
        TimerKind::ReloadCheck,
        TimerKind::ReloadDeadline,
        TimerKind::StableRun,
        TimerKind::LivenessDeadline,
        TimerKind::LivenessRestart,
        // F-rules (issue 22)
        TimerKind::InPlaceRestart,
        TimerKind::ChallengeWait,
        TimerKind::StartProgress,
    ];
}

/// Everything the machine reacts to.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A user command; `reply` gets exactly one [`Effect::Reply`].
    Command {
        /// The command.
        command: Command,
        /// Who waits for the outcome, if anyone.
        reply: Option<ReplyId>,
    },
    /// Result of [`Effect::ProbePort`].
    PortProbed {
        /// Flow epoch (E1).
        epoch: u64,
        /// What listens on the port.
        probe: PortProbe,
    },
    /// Result of [`Effect::KillOrphans`].
    OrphansKilled {
        /// Flow epoch (E1).
        epoch: u64,
        /// Pids still alive after SIGKILL.
        survivors: Vec<u32>,
    },
    /// Result of [`Effect::WaitPortFree`]: the port is free.
    PortFreed {
        /// Flow epoch (E1).
        epoch: u64,
    },
    /// Result of [`Effect::SpawnProcess`].
    ProcessSpawned {
        /// Flow epoch (E1).
        epoch: u64,
        /// The new process.
        pid: u32,
    },
    /// Result of [`Effect::AwaitReadiness`]: the gateway sent `connect.challenge` (W1).
    ReadinessConfirmed {
        /// Flow epoch (E1).
        epoch: u64,
    },
    /// Result of [`Effect::OpenConnection`].
    HandshakeCompleted {
        /// Flow epoch (E1).
        epoch: u64,
        /// What the gateway told us.
        handshake: Handshake,
    },
    /// W1 (beyond): `connect` got the startup-window answer (UNAVAILABLE + 1013): not ready yet.
    StartupWindow {
        /// Flow epoch (E1).
        epoch: u64,
        /// The gateway's `retryAfterMs`.
        retry_after_ms: Option<u64>,
    },
    /// W1 (beyond): the `/startupz` watch of [`Effect::WatchStartup`] is over.
    StartupWatched {
        /// Flow epoch (E1).
        epoch: u64,
        /// `true`: it answered 200, connect now. `false`: it answered something else or nothing
        /// (a gateway without that probe): retry after `retryAfterMs` instead.
        settled: bool,
    },
    /// A step of the start sequence failed.
    StepFailed {
        /// Flow epoch (E1).
        epoch: u64,
        /// Why.
        failure: StartFailure,
    },
    /// Result of [`Effect::RunDoctorRepair`].
    RepairFinished {
        /// Flow epoch (E1).
        epoch: u64,
        /// `Err` with the reason when the repair failed.
        outcome: Result<(), RepairFailure>,
    },
    /// X2: a process we spawned exited (and was reaped).
    ProcessExited {
        /// Its pid.
        pid: u32,
        /// Exit code (128 + signal for a signal death).
        code: Option<i32>,
    },
    /// X3: a stderr line of the owned process (kept for L7 during a start flow).
    StderrLine {
        /// The process.
        pid: u32,
        /// The line.
        line: String,
    },
    /// The connection opened in `epoch` closed.
    SocketClosed {
        /// Epoch of the connection.
        epoch: u64,
        /// Close code (1006 when the TCP connection dropped).
        code: Option<u16>,
    },
    /// P4: the gateway sent a `shutdown` event.
    ShutdownAnnounced {
        /// Epoch of the connection.
        epoch: u64,
        /// Present when the gateway is restarting in place.
        restart_expected_ms: Option<u64>,
    },
    /// H3: a pong or any frame arrived.
    ProofOfLife {
        /// Epoch of the connection.
        epoch: u64,
    },
    /// G1/G2: a ready signal.
    GatewayReadySignal {
        /// Epoch of the connection.
        epoch: u64,
        /// Where it came from.
        source: ReadySource,
    },
    /// Result of [`Effect::RequestExternalShutdown`] (T2).
    ExternalShutdownFinished {
        /// Flow epoch (E1).
        epoch: u64,
        /// How it went.
        outcome: ExternalShutdownOutcome,
    },
    /// Result of [`Effect::CheckSocket`] (H4).
    SocketChecked {
        /// Epoch of the connection.
        epoch: u64,
        /// The socket is open.
        open: bool,
    },
    /// Result of [`Effect::SignalProcess`] (P3).
    SignalSent {
        /// Flow epoch (E1).
        epoch: u64,
        /// `Err` with the reason when signalling failed.
        outcome: Result<(), SignalFailure>,
    },
    /// D2: result of [`Effect::SampleProcess`].
    ProcessSampled {
        /// Epoch of the connection.
        epoch: u64,
        /// The process sampled.
        pid: u32,
        /// The reading; `None` when the process is gone.
        sample: Option<ProcessSample>,
    },
    /// D4/D6/G2: result of [`Effect::SendProbe`].
    ProbeFinished {
        /// Epoch of the connection.
        epoch: u64,
        /// The probe's id.
        probe: u64,
        /// How it ended.
        outcome: ProbeOutcome,
    },
    /// A timer armed by [`Effect::ArmTimer`] fired.
    TimerFired {
        /// Which timer.
        timer: TimerKind,
        /// The generation it was armed with.
        generation: u64,
    },
    // F-rules (issue 22)
    /// Result of [`Effect::ReadConfigDigest`] (F2).
    ConfigDigestRead {
        /// Flow epoch (E1).
        epoch: u64,
        /// A digest of the gateway's config file; `None` when it is missing or unreadable.
        digest: Option<String>,
    },
    /// F7: `connect` was refused because the gateway is restarting in place (UNAVAILABLE,
    /// retryable, `details.reason` `gateway-restarting` / `gateway-suspending`, close 1013).
    RestartWindow {
        /// Flow epoch (E1).
        epoch: u64,
        /// The gateway's `retryAfterMs`.
        retry_after_ms: Option<u64>,
    },
    /// F6: what the readiness wait saw on the port (reported when it changes).
    StartObserved {
        /// Flow epoch (E1).
        epoch: u64,
        /// What it saw.
        observation: StartObservation,
    },
    /// L5 step 4: a phase of the gateway's startup trace (`OPENCLAW_GATEWAY_STARTUP_TRACE`),
    /// read from its stdout (the server's phases) or stderr (the bootstrap's).
    StartupTrace {
        /// The process.
        pid: u32,
        /// The phase.
        phase: crate::stderr::StartupPhase,
    },
}

/// F6: what a readiness probe saw on the gateway's port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartObservation {
    /// Something accepted a TCP connection on the port.
    pub port_open: bool,
    /// `/startupz`'s status code, when it answered (503: the gateway says it is still starting).
    pub startupz: Option<u16>,
}

impl Event {
    /// A short name for logs and diagrams.
    pub fn name(&self) -> String {
        match self {
            Event::Command { command, .. } => command.name().to_string(),
            Event::PortProbed { .. } => "PortProbed".into(),
            Event::OrphansKilled { .. } => "OrphansKilled".into(),
            Event::PortFreed { .. } => "PortFreed".into(),
            Event::ProcessSpawned { .. } => "ProcessSpawned".into(),
            Event::ReadinessConfirmed { .. } => "ReadinessConfirmed".into(),
            Event::HandshakeCompleted { .. } => "HandshakeCompleted".into(),
            Event::StartupWindow { .. } => "StartupWindow".into(),
            Event::StartupWatched { .. } => "StartupWatched".into(),
            Event::StepFailed { .. } => "StepFailed".into(),
            Event::RepairFinished { .. } => "RepairFinished".into(),
            Event::ProcessExited { .. } => "ProcessExited".into(),
            Event::StderrLine { .. } => "StderrLine".into(),
            Event::SocketClosed { .. } => "SocketClosed".into(),
            Event::ShutdownAnnounced { .. } => "ShutdownAnnounced".into(),
            Event::ProofOfLife { .. } => "ProofOfLife".into(),
            Event::GatewayReadySignal { .. } => "GatewayReadySignal".into(),
            Event::ExternalShutdownFinished { .. } => "ExternalShutdownFinished".into(),
            Event::SocketChecked { .. } => "SocketChecked".into(),
            Event::SignalSent { .. } => "SignalSent".into(),
            Event::ProcessSampled { .. } => "ProcessSampled".into(),
            Event::ProbeFinished { .. } => "ProbeFinished".into(),
            Event::TimerFired { timer, .. } => format!("Timer({timer:?})"),
            Event::ConfigDigestRead { .. } => "ConfigDigestRead".into(),
            Event::RestartWindow { .. } => "RestartWindow".into(),
            Event::StartObserved { .. } => "StartObserved".into(),
            Event::StartupTrace { .. } => "StartupTrace".into(),
        }
    }
}

/// The outcome of a command, sent once to its caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "camelCase")]
#[non_exhaustive]
pub enum CommandOutcome {
    /// Done: started, stopped, restarted, reloaded, terminated.
    Completed,
    /// Accepted for later: a debounced request was (re)scheduled.
    Scheduled,
    /// R1: recorded as a deferred restart, to run when the lifecycle settles.
    Deferred,
    /// R3: suppressed by the restart governor.
    Suppressed {
        /// How long until a restart would be allowed.
        retry_after_ms: u64,
    },
    /// Nothing to do (L1 start while running or starting; P3 recent connect; T6 nothing owned).
    Ignored {
        /// Why.
        reason: IgnoredReason,
    },
    /// E1: a later start or stop took over before this one finished.
    Superseded,
    /// The command failed.
    Failed {
        /// Why, by variant.
        failure: CommandFailure,
    },
}

/// Log severity of a machine decision worth telling a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogLevel {
    /// Noise for debugging.
    Debug,
    /// Normal lifecycle news.
    Info,
    /// Something went wrong and was handled.
    Warn,
    /// Something failed.
    Error,
}

/// Something subscribers hear about (the published events of BEHAVIOUR.md, as far as the
/// machine decides them; raw messages, notifications, chat and channel events are dispatched by
/// the connection directly).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Notice {
    /// S3: the status changed.
    Status(Status),
    /// X2: the owned process exited.
    ProcessExit {
        /// Its pid.
        pid: u32,
        /// Its exit code.
        code: Option<i32>,
        /// Whether the exit was asked for (auto-reconnect off).
        expected: bool,
    },
    /// An error worth a subscriber's attention (H4, start failures).
    Error {
        /// The message.
        message: String,
        /// The typed failure, when a command failure (a failed start, an in-place restart
        /// that does not serve) is what went wrong; decide by this, not by `message`.
        failure: Option<CommandFailure>,
    },
    /// G1/G2: the gateway became ready.
    GatewayReady,
    /// L5 step 4: one startup metric per managed start.
    StartupMetric {
        /// Start requested → spawn done.
        config_prep_ms: u64,
        /// Spawn → ready.
        spawn_to_ready_ms: u64,
        /// Ready → handshake done.
        ready_to_connect_ms: u64,
        /// Start requested → running.
        total_ms: u64,
        /// The gateway's own startup trace (`OPENCLAW_GATEWAY_STARTUP_TRACE`), per phase, in the
        /// order first seen; empty when it printed none.
        phases: Vec<crate::stderr::StartupPhase>,
        /// The slowest phase of the trace.
        slowest: Option<crate::stderr::StartupPhase>,
    },
    /// N4: one metric per reconnect attempt.
    ReconnectMetric {
        /// Whether the attempt reached `running`.
        success: bool,
        /// Attempt number.
        attempt: u32,
        /// Maximum attempts.
        max_attempts: u32,
        /// Delay before it.
        delay_ms: u64,
        /// Why it failed.
        error: Option<String>,
        /// Attempts since the supervisor started.
        attempts_total: u64,
        /// Successes since the supervisor started.
        successes_total: u64,
    },
    /// D1–D7: the gateway's liveness classification or the recovery phase changed.
    Liveness {
        /// The classification (D2).
        liveness: LivenessClass,
        /// What the recovery is doing.
        phase: RecoveryPhase,
    },
    /// D5: the attached external gateway failed its core probe; only the transport reconnects.
    ExternalUnavailable,
    /// R3: a restart was suppressed.
    RestartSuppressed {
        /// When it would be allowed.
        retry_after_ms: u64,
        /// Restarts executed so far.
        executed_total: u64,
        /// Restarts suppressed so far.
        suppressed_total: u64,
    },
    // F-rules (issue 22)
    /// F8: the supervisor gave up (N2, N5, L8, F1–F3): nothing will try again until a command.
    GaveUp {
        /// Why (the status error).
        reason: String,
        /// The failure that ended it, when a start flow's failure did (not for N2/N5).
        failure: Option<CommandFailure>,
    },
}

/// An instruction for the actor layer.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// L2/P2: refresh the reload policy (`force` bypasses the cache).
    RefreshReloadPolicy {
        /// Bypass the cache.
        force: bool,
    },
    /// O1 / L5 step 1: look at the port; answer [`Event::PortProbed`].
    ProbePort {
        /// Flow epoch.
        epoch: u64,
        /// The port.
        port: u16,
    },
    /// O1: terminate orphans (TERM, wait, KILL); answer [`Event::OrphansKilled`].
    KillOrphans {
        /// Flow epoch.
        epoch: u64,
        /// Their pids.
        pids: Vec<u32>,
    },
    /// L5 step 3: wait until the port is free; answer [`Event::PortFreed`] or a failed step.
    WaitPortFree {
        /// Flow epoch.
        epoch: u64,
        /// The port.
        port: u16,
    },
    /// X1: spawn the gateway; answer [`Event::ProcessSpawned`] or a failed step.
    SpawnProcess {
        /// Flow epoch.
        epoch: u64,
        /// The port.
        port: u16,
    },
    /// W1: wait until the gateway sends a challenge; answer [`Event::ReadinessConfirmed`] or a
    /// failed step. The owned process's exit arrives as [`Event::ProcessExited`].
    AwaitReadiness {
        /// Flow epoch.
        epoch: u64,
        /// The port.
        port: u16,
    },
    /// C1: connect and handshake; answer [`Event::HandshakeCompleted`], [`Event::StartupWindow`]
    /// or a failed step. Later frames report with this epoch.
    OpenConnection {
        /// Flow epoch, echoed by every later report of this connection.
        epoch: u64,
        /// The port.
        port: u16,
    },
    /// W1 (beyond): ask the gateway's `/startupz` every `interval_ms` while it answers 503;
    /// answer [`Event::StartupWatched`] on its first 200 (`settled`) or on any other answer or
    /// none (not settled: a gateway without that probe).
    WatchStartup {
        /// Flow epoch.
        epoch: u64,
        /// The port.
        port: u16,
        /// Between two probes.
        interval_ms: u64,
    },
    /// T3: close the socket at once, without a close handshake.
    CloseConnection,
    /// H1: send a WebSocket ping.
    SendPing,
    /// D2: read the owned gateway's scheduler state and CPU time off the actor thread; answer
    /// [`Event::ProcessSampled`].
    SampleProcess {
        /// Epoch of the connection.
        epoch: u64,
        /// The owned process.
        pid: u32,
    },
    /// D4/D6/G2: send the core probe RPC on the current connection (not counted as a user RPC,
    /// M6); answer [`Event::ProbeFinished`].
    SendProbe {
        /// Epoch of the connection.
        epoch: u64,
        /// Echo this in the result.
        probe: u64,
        /// The RPC method.
        method: String,
        /// Time limit.
        timeout_ms: u64,
    },
    /// H4: is the socket open? answer [`Event::SocketChecked`].
    CheckSocket {
        /// Epoch of the connection.
        epoch: u64,
    },
    /// T2: ask the external gateway to shut down; answer [`Event::ExternalShutdownFinished`].
    RequestExternalShutdown {
        /// Flow epoch.
        epoch: u64,
        /// Time limit.
        timeout_ms: u64,
    },
    /// T4: SIGTERM the process group, SIGKILL after the grace; the exit arrives as
    /// [`Event::ProcessExited`].
    TerminateProcess {
        /// The owned process.
        pid: u32,
        /// Grace before SIGKILL.
        grace_ms: u64,
    },
    /// T6: SIGKILL the owned process group now.
    ForceKillProcess {
        /// The owned process.
        pid: u32,
    },
    /// P3/P4: send the reload signal; answer [`Event::SignalSent`].
    SignalProcess {
        /// Flow epoch.
        epoch: u64,
        /// The owned process.
        pid: u32,
        /// Which signal.
        signal: ReloadSignal,
    },
    /// L6: run `<gateway> doctor --fix --yes --non-interactive`; answer [`Event::RepairFinished`].
    RunDoctorRepair {
        /// Flow epoch.
        epoch: u64,
        /// Time limit.
        timeout_ms: u64,
    },
    /// Arm (or re-arm) a timer; fire [`Event::TimerFired`] at `at_ms` with this generation.
    ArmTimer {
        /// Which timer.
        timer: TimerKind,
        /// Echo this in the firing.
        generation: u64,
        /// When, on the machine clock.
        at_ms: u64,
    },
    /// Cancel a timer (a late firing is dropped anyway by its generation).
    CancelTimer {
        /// Which timer.
        timer: TimerKind,
    },
    /// M1/T5: answer every pending RPC with this error.
    FailPendingRpcs {
        /// The error.
        error: RpcError,
    },
    /// Tell subscribers.
    Publish(Notice),
    /// Tell a person (through `tracing`).
    Log {
        /// Severity.
        level: LogLevel,
        /// The message (never contains a secret: the machine never sees one).
        message: String,
    },
    /// Answer a command's caller (exactly once per command with a reply id).
    Reply {
        /// Who.
        reply: ReplyId,
        /// What happened.
        outcome: CommandOutcome,
    },
    // F-rules (issue 22)
    /// F2: read a digest of the gateway's config file; answer [`Event::ConfigDigestRead`].
    ReadConfigDigest {
        /// Flow epoch.
        epoch: u64,
    },
}
