//! Every number the supervisor uses, as config fields with the documented defaults.
//!
//! Durations are plain milliseconds (`*_ms`): they serialise as numbers in TOML and JSON, read the
//! same way the gateway's own config does (`debounceMs`), and need no unit parser. Each field's
//! doc names the BEHAVIOUR.md rule it comes from.

use std::num::NonZeroUsize;

use serde::{Deserialize, Serialize};

/// The platform whose quirks the supervisor follows.
///
/// Windows is a preset, not a build target: its different numbers and guards (H1, H2, N1, P3, L5
/// step 3) are plain data, so they are testable on Linux.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// Linux and macOS: POSIX signals, heartbeat recovery, reconnect on socket close.
    #[default]
    Unix,
    /// Windows: no reload signal, no heartbeat restart, reconnect only on exit or close 1012.
    Windows,
}

/// What to do with a foreign gateway (one that answers the probe but was not spawned by us).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ForeignGatewayPolicy {
    /// Connect to it as an external gateway, as the original does (L5 step 1).
    #[default]
    Attach,
    /// Terminate it and spawn our own.
    Replace,
    /// Refuse to start, with a message naming the process.
    Fail,
}

/// The whole supervisor configuration. `Default` gives the Unix defaults of BEHAVIOUR.md;
/// [`SupervisorConfig::windows`] gives the Windows preset. (More fields will come: start from
/// `Default` and change fields, never a literal.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct SupervisorConfig {
    /// Platform quirks to follow (H1, H2, N1, P3, L5 step 3).
    pub platform: Platform,
    /// S2: the gateway port.
    pub port: u16,
    /// Start sequence (L5–L7).
    pub start: StartConfig,
    /// Readiness and handshake (W1, C1, C2).
    pub connect: ConnectConfig,
    /// RPC defaults (M1).
    pub rpc: RpcConfig,
    /// Heartbeat and health checks (H1–H6).
    pub heartbeat: HeartbeatConfig,
    /// Gateway readiness (G1, G2).
    pub ready: ReadyConfig,
    /// Liveness: when silence means busy, frozen or dead, and the core probe (D1–D7, H6).
    pub liveness: LivenessConfig,
    /// Stopping (T2, T4).
    pub stop: StopConfig,
    /// Restart governor and debounce (R3, R7).
    pub restart: RestartConfig,
    /// Reload (P1–P5).
    pub reload: ReloadConfig,
    /// Auto-reconnect (N1–N5).
    pub reconnect: ReconnectConfig,
    /// Stderr handling (X3).
    pub stderr: StderrConfig,
    /// Orphan handling (O1).
    pub orphans: OrphanConfig,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            platform: Platform::Unix,
            port: 18789,
            start: StartConfig::default(),
            connect: ConnectConfig::default(),
            rpc: RpcConfig::default(),
            heartbeat: HeartbeatConfig::default(),
            ready: ReadyConfig::default(),
            liveness: LivenessConfig::default(),
            stop: StopConfig::default(),
            restart: RestartConfig::default(),
            reload: ReloadConfig::default(),
            reconnect: ReconnectConfig::default(),
            stderr: StderrConfig::default(),
            orphans: OrphanConfig::default(),
        }
    }
}

impl SupervisorConfig {
    /// The Windows preset: longer, more lenient heartbeat (H1, H2) and the Windows guards.
    pub fn windows() -> Self {
        SupervisorConfig {
            platform: Platform::Windows,
            heartbeat: HeartbeatConfig::windows(),
            ..SupervisorConfig::default()
        }
    }

    /// True when the Windows quirks apply.
    pub fn is_windows(&self) -> bool {
        self.platform == Platform::Windows
    }
}

/// Q3: a value that parses but cannot work, with the key that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidValue {
    /// The dotted key (`heartbeat.interval_ms`).
    pub key: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl std::fmt::Display for InvalidValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl std::error::Error for InvalidValue {}

impl SupervisorConfig {
    /// Q3: refuses values that cannot work: a zero interval, timeout or frame size (a zero
    /// heartbeat interval restarted a healthy gateway every 2.5 s; a zero frame size never left
    /// `starting`), `connect.min_protocol` above `connect.max_protocol`, a jitter that is NaN,
    /// negative or above 1. The first offending key is named.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        let positive: [(&'static str, u64); 21] = [
            ("heartbeat.interval_ms", self.heartbeat.interval_ms),
            ("heartbeat.timeout_ms", self.heartbeat.timeout_ms),
            ("heartbeat.max_misses", u64::from(self.heartbeat.max_misses)),
            (
                "heartbeat.health_check_interval_ms",
                self.heartbeat.health_check_interval_ms,
            ),
            (
                "connect.probe_interval_initial_ms",
                self.connect.probe_interval_initial_ms,
            ),
            (
                "connect.probe_interval_max_ms",
                self.connect.probe_interval_max_ms,
            ),
            ("connect.probe_timeout_ms", self.connect.probe_timeout_ms),
            ("connect.ready_timeout_ms", self.connect.ready_timeout_ms),
            (
                "connect.challenge_timeout_ms",
                self.connect.challenge_timeout_ms,
            ),
            (
                "connect.handshake_timeout_ms",
                self.connect.handshake_timeout_ms,
            ),
            (
                "connect.max_frame_bytes",
                u64::try_from(self.connect.max_frame_bytes).unwrap_or(u64::MAX),
            ),
            ("rpc.default_timeout_ms", self.rpc.default_timeout_ms),
            ("start.max_attempts", u64::from(self.start.max_attempts)),
            ("start.port_free_poll_ms", self.start.port_free_poll_ms),
            ("start.spawn_timeout_ms", self.start.spawn_timeout_ms),
            ("reconnect.max_delay_ms", self.reconnect.max_delay_ms),
            ("liveness.deadline_ms", self.liveness.deadline_ms),
            ("liveness.probe_timeout_ms", self.liveness.probe_timeout_ms),
            (
                "liveness.stall_factor",
                u64::from(self.liveness.stall_factor),
            ),
            ("ready.probe_repeat_ms", self.ready.probe_repeat_ms),
            (
                "connect.in_place_ready_timeout_ms",
                self.connect.in_place_ready_timeout_ms,
            ),
        ];
        if self.port == 0 {
            // The gateway would listen on a port of its own choosing, which nothing tells the
            // supervisor: it would probe port 0 until the start timed out.
            return Err(InvalidValue {
                key: "port",
                message: "must be a fixed port: with 0 the gateway picks one the supervisor \
                          cannot know"
                    .into(),
            });
        }
        for (key, value) in positive {
            if value == 0 {
                return Err(InvalidValue {
                    key,
                    message: "must be greater than 0".into(),
                });
            }
        }
        if self.liveness.probe_method.trim().is_empty() {
            return Err(InvalidValue {
                key: "liveness.probe_method",
                message: "must name the gateway's core probe method".into(),
            });
        }
        if self.connect.min_protocol > self.connect.max_protocol {
            return Err(InvalidValue {
                key: "connect.min_protocol",
                message: format!(
                    "{} is above connect.max_protocol ({})",
                    self.connect.min_protocol, self.connect.max_protocol
                ),
            });
        }
        if self.connect.probe_interval_initial_ms > self.connect.probe_interval_max_ms {
            return Err(InvalidValue {
                key: "connect.probe_interval_initial_ms",
                message: format!(
                    "{} is above connect.probe_interval_max_ms ({})",
                    self.connect.probe_interval_initial_ms, self.connect.probe_interval_max_ms
                ),
            });
        }
        let jitter = self.reconnect.jitter;
        if !jitter.is_finite() || !(0.0..=1.0).contains(&jitter) {
            return Err(InvalidValue {
                key: "reconnect.jitter",
                message: format!("{jitter} is not a fraction between 0 and 1"),
            });
        }
        Ok(())
    }
}

/// L5–L7: the start sequence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct StartConfig {
    /// L5: how many times the start sequence is attempted.
    pub max_attempts: u32,
    /// L6: wait before a `retry`.
    pub retry_delay_ms: u64,
    /// L6: time limit of the doctor repair run.
    pub repair_timeout_ms: u64,
    /// L5 step 3 (Windows): poll interval while waiting for the port to be free.
    pub port_free_poll_ms: u64,
    /// L5 step 3 (Windows): give up waiting for the port after this long.
    pub port_free_timeout_ms: u64,
    /// X3/L7: startup stderr lines kept for the recovery choice.
    pub stderr_lines_kept: usize,
    /// F6: while a start takes long, log what it has seen (port, probes, challenge) this often
    /// (0 turns the progress lines off).
    pub progress_interval_ms: u64,
    /// L5 step 4: a start that took at least this long logs its slowest startup-trace phase as a
    /// warning.
    pub slow_start_ms: u64,
    /// K3: a gateway process that has not started its program (`execve`) after this long is
    /// killed and the attempt fails (a child stopped before exec, an exec blocked on a hung file
    /// system). The supervisor answers meanwhile either way.
    pub spawn_timeout_ms: u64,
}

impl Default for StartConfig {
    fn default() -> Self {
        StartConfig {
            max_attempts: 3,
            retry_delay_ms: 1_000,
            repair_timeout_ms: 120_000,
            port_free_poll_ms: 500,
            port_free_timeout_ms: 30_000,
            stderr_lines_kept: 120,
            progress_interval_ms: 10_000,
            slow_start_ms: 30_000,
            spawn_timeout_ms: 10_000,
        }
    }
}

/// W1, C1, C2: readiness, handshake and protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ConnectConfig {
    /// W1 (beyond): first readiness probe interval; it doubles up to `probe_interval_max_ms`.
    pub probe_interval_initial_ms: u64,
    /// W1: the cap of the growing probe interval (the seed polls at a fixed 200 ms).
    pub probe_interval_max_ms: u64,
    /// W1: the time limit of one readiness probe.
    pub probe_timeout_ms: u64,
    /// W1: give up waiting for readiness after this long (seed: 2400 tries × 200 ms).
    pub ready_timeout_ms: u64,
    /// C1: wait this long for `connect.challenge`.
    pub challenge_timeout_ms: u64,
    /// C1: wait this long for the reply to `connect`.
    pub handshake_timeout_ms: u64,
    /// C2: lowest protocol offered.
    pub min_protocol: u32,
    /// C2: highest protocol offered.
    pub max_protocol: u32,
    /// W1: the startup window answer (UNAVAILABLE + 1013) is retried after this long when the
    /// gateway gives no `retryAfterMs`.
    pub startup_window_retry_ms: u64,
    /// W1 (beyond): while the gateway answers the startup window, ask its `/startupz` this
    /// often and connect on its first 200, instead of sleeping the whole `retryAfterMs`
    /// (500 ms on the real gateway). 0 turns the probe off.
    pub startup_probe_interval_ms: u64,
    /// F5: a gateway restarting in place (after a 1012 close or a `shutdown` event announcing a
    /// restart) that does not serve again within this long is reported as `error` with its
    /// reason and replaced by a fresh spawn. Its "startup failed … Process will stay alive"
    /// stderr line ends the wait at once. 0 turns the bound off.
    pub in_place_ready_timeout_ms: u64,
    /// M5: inbound messages larger than this are dropped with a logged error, so a hostile or
    /// broken gateway cannot make the supervisor buffer without bound. The default is the
    /// gateway's own post-handshake `maxPayload` ([`DEFAULT_MAX_FRAME_BYTES`]).
    pub max_frame_bytes: usize,
}

/// The default of [`ConnectConfig::max_frame_bytes`]: the gateway's post-handshake `maxPayload`
/// (25 MiB, OPENCLAW.md §3).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 26_214_400;

impl Default for ConnectConfig {
    fn default() -> Self {
        ConnectConfig {
            probe_interval_initial_ms: 2,
            probe_interval_max_ms: 25,
            probe_timeout_ms: 1_500,
            ready_timeout_ms: 480_000,
            challenge_timeout_ms: 10_000,
            handshake_timeout_ms: 20_000,
            min_protocol: 3,
            max_protocol: 4,
            startup_window_retry_ms: 500,
            startup_probe_interval_ms: 25,
            in_place_ready_timeout_ms: 30_000,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
        }
    }
}

/// M1: RPC defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RpcConfig {
    /// M1: default time limit of one call.
    pub default_timeout_ms: u64,
    /// How many inbound frames the connection handles per wake-up before it lets the callers
    /// run, so their next requests are written while the gateway still has work. Smaller
    /// batches keep the gateway busy under load (the supervisor and the gateway work in
    /// parallel instead of taking turns); larger ones cost fewer wake-ups. A throughput
    /// setting, not a behaviour: every frame is handled, in order. At least 1.
    pub read_batch: NonZeroUsize,
}

/// The default of [`RpcConfig::read_batch`]; docs/PERFORMANCE.md (fifth pass) has the sweep
/// that chose it.
pub const DEFAULT_READ_BATCH: NonZeroUsize = match NonZeroUsize::new(32) {
    Some(batch) => batch,
    None => NonZeroUsize::MIN,
};

impl Default for RpcConfig {
    fn default() -> Self {
        RpcConfig {
            default_timeout_ms: 30_000,
            read_batch: DEFAULT_READ_BATCH,
        }
    }
}

/// H1–H6: heartbeat and health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct HeartbeatConfig {
    /// H1: ping interval.
    pub interval_ms: u64,
    /// H1: a ping with no pong or message this long after it counts as missed.
    pub timeout_ms: u64,
    /// H2/D3: consecutive misses after which a gateway classified `frozen` is restarted (misses
    /// alone never restart anything: D1).
    pub max_misses: u32,
    /// H4: health check interval while `running`.
    pub health_check_interval_ms: u64,
    /// H6: a channel-status failure this recent (and newer than the last success) degrades health.
    pub channel_failure_window_ms: u64,
    /// Current gateways: no inbound traffic for this many × `tickIntervalMs` counts as silence,
    /// evidence for D2 (never a restart by itself: D1; 0 disables the rule).
    pub tick_silence_factor: u32,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig {
            interval_ms: 30_000,
            timeout_ms: 12_000,
            max_misses: 3,
            health_check_interval_ms: 30_000,
            channel_failure_window_ms: 120_000,
            tick_silence_factor: 2,
        }
    }
}

impl HeartbeatConfig {
    /// H1/H2 Windows variant: 60 s interval, 25 s timeout, 5 misses.
    pub fn windows() -> Self {
        HeartbeatConfig {
            interval_ms: 60_000,
            timeout_ms: 25_000,
            max_misses: 5,
            ..HeartbeatConfig::default()
        }
    }
}

/// G1–G2: gateway readiness of subsystems.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ReadyConfig {
    /// G2: after the handshake, the core probe is tried at these offsets (ms after the
    /// handshake) until one succeeds; never a timer alone.
    pub probe_schedule_ms: Vec<u64>,
    /// G2: after the schedule, the probe is tried again this often until one succeeds.
    pub probe_repeat_ms: u64,
    /// G2 (beyond, off by default): treat a handshake snapshot as the ready signal. Current
    /// gateways send one in every `hello-ok`, before their channels are up.
    pub snapshot_counts_as_ready: bool,
    /// G2 (beyond, off by default): treat the first `health` event as the ready signal. Current
    /// gateways send one right after `hello-ok`.
    pub health_event_counts_as_ready: bool,
}

impl Default for ReadyConfig {
    fn default() -> Self {
        ReadyConfig {
            probe_schedule_ms: vec![0, 1_500, 3_000, 5_000, 8_000, 12_000, 30_000],
            probe_repeat_ms: 30_000,
            snapshot_counts_as_ready: false,
            health_event_counts_as_ready: false,
        }
    }
}

/// How the CPU time of a gateway is read for D2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CpuThreads {
    /// The event-loop thread only (Node: the main thread, tid = pid). A worker thread's CPU does
    /// not make a stuck event loop look busy.
    #[default]
    Main,
    /// Every thread of the process (for gateways whose event loop is not the main thread).
    All,
}

/// D1–D7, H6: liveness. A restart is expensive (the gateway drops in-flight work and, after a few
/// unclean boots, suppresses channel auto-start), so silence alone never restarts a gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct LivenessConfig {
    /// D4: a `busy` (or silent, unclassifiable) gateway is probed only after this long without
    /// evidence of life.
    pub deadline_ms: u64,
    /// D4/G2: the core probe's RPC method.
    pub probe_method: String,
    /// D4/G2: the core probe's time limit.
    pub probe_timeout_ms: u64,
    /// D6: a heartbeat tick later than `stall_factor` × interval after the previous one means the
    /// supervisor itself was paused.
    pub stall_factor: u32,
    /// D6: and never less than this.
    pub stall_min_ms: u64,
    /// D2: CPU time the event-loop thread must gain across a silent heartbeat interval to count as
    /// `busy` rather than `frozen`. One clock tick (10 ms at 100 Hz): a frozen event loop gains
    /// none, while a busy one on a starved machine may get only a small share of a CPU, and
    /// calling a busy gateway frozen kills live work.
    pub busy_cpu_min_ms: u64,
    /// D2: which threads' CPU time counts.
    pub cpu_threads: CpuThreads,
    /// D2: read the owned gateway's scheduler state and CPU time where the platform gives them
    /// (Linux `/proc`; the default is on there and off elsewhere). Off: silence counts as `busy`
    /// (the D4 path). A reading that finds no process says `dead`.
    pub process_evidence: bool,
    /// H6: RPC methods whose time-outs degrade that capability, not the core (a trailing `*`
    /// matches a prefix).
    pub capability_methods: Vec<String>,
    /// H6: a capability stays degraded this long after its last time-out (or until it succeeds).
    pub capability_failure_window_ms: u64,
}

impl Default for LivenessConfig {
    fn default() -> Self {
        LivenessConfig {
            deadline_ms: 180_000,
            probe_method: "system-presence".to_string(),
            probe_timeout_ms: 5_000,
            stall_factor: 2,
            stall_min_ms: 5_000,
            busy_cpu_min_ms: 10,
            cpu_threads: CpuThreads::Main,
            process_evidence: cfg!(target_os = "linux"),
            capability_methods: vec![
                "health".to_string(),
                "status".to_string(),
                "channels.status".to_string(),
                "doctor.memory.*".to_string(),
            ],
            capability_failure_window_ms: 120_000,
        }
    }
}

impl LivenessConfig {
    /// H6: is `method` a capability method (its time-outs degrade only that capability)?
    pub fn is_capability(&self, method: &str) -> bool {
        self.capability_methods
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => method.starts_with(prefix),
                None => method == pattern,
            })
    }

    /// D6: the tick gap beyond which the supervisor counts as having been paused.
    pub fn stall_threshold_ms(&self, interval_ms: u64) -> u64 {
        interval_ms
            .saturating_mul(u64::from(self.stall_factor.max(1)))
            .max(self.stall_min_ms)
    }
}

/// T2, T4: stopping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct StopConfig {
    /// T2: time limit of the `shutdown` request to an external gateway.
    pub external_shutdown_timeout_ms: u64,
    /// T4: grace between SIGTERM and SIGKILL.
    pub kill_grace_ms: u64,
}

impl Default for StopConfig {
    fn default() -> Self {
        StopConfig {
            external_shutdown_timeout_ms: 5_000,
            kill_grace_ms: 5_000,
        }
    }
}

/// R3, R7: restart governor and debounce.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RestartConfig {
    /// R3: executed restarts are at least this far apart.
    pub cooldown_ms: u64,
    /// R7: default debounce of `DebouncedRestart`.
    pub debounce_ms: u64,
}

impl Default for RestartConfig {
    fn default() -> Self {
        RestartConfig {
            cooldown_ms: 2_500,
            debounce_ms: 2_000,
        }
    }
}

/// The reload signal (P4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "UPPERCASE")]
pub enum ReloadSignal {
    /// What current OpenClaw handles: an in-place restart.
    #[default]
    Sigusr2,
    /// What the seed sent. Current OpenClaw opens the inspector on it: never send it to them.
    Sigusr1,
    /// SIGHUP, for gateways that reload on it.
    Sighup,
}

/// P1–P5: reload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ReloadConfig {
    /// P2: the reload policy read from the gateway config is cached this long.
    pub policy_cache_ms: u64,
    /// P1: default debounce when the config file gives none.
    pub default_debounce_ms: u64,
    /// P1: the largest debounce the config file may ask for.
    pub max_debounce_ms: u64,
    /// P3: skip a reload when connected less than this long ago.
    pub recent_connect_skip_ms: u64,
    /// P3: after signalling, check the process after this long (gateways without in-place restart).
    pub post_signal_check_ms: u64,
    /// P4: added to the gateway's announced `restartExpectedMs` while waiting for the reconnect.
    pub restart_expected_margin_ms: u64,
    /// P4: the signal that asks the gateway to reload.
    pub signal: ReloadSignal,
    /// P4: the signal makes the gateway restart in place (a `shutdown` event with
    /// `restartExpectedMs`, close 1012, same pid), as OpenClaw's SIGUSR2 does with
    /// `OPENCLAW_NO_RESPAWN=1`. The reload then waits for that announcement (up to
    /// `restart_announce_timeout_ms`) and for the reconnect to the same process instead of the
    /// fixed `post_signal_check_ms` check, which under load can answer before the gateway has
    /// even begun its restart. Off by default (the seed's P3 check); the OpenClaw profile turns
    /// it on.
    pub signal_restarts_in_place: bool,
    /// P4: with `signal_restarts_in_place`, how long to wait for the gateway's `shutdown`
    /// announcement after signalling before judging the process the P3 way. Generous because the
    /// real gateway defers a signalled restart while it is busy: 15 s passed without one once,
    /// on a loaded 2-core machine, right after its start.
    pub restart_announce_timeout_ms: u64,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        ReloadConfig {
            policy_cache_ms: 15_000,
            default_debounce_ms: 1_200,
            max_debounce_ms: 60_000,
            recent_connect_skip_ms: 8_000,
            post_signal_check_ms: 1_500,
            restart_expected_margin_ms: 10_000,
            signal: ReloadSignal::Sigusr2,
            signal_restarts_in_place: false,
            restart_announce_timeout_ms: 60_000,
        }
    }
}

/// N1–N5: auto-reconnect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ReconnectConfig {
    /// N2: attempts before giving up with `error`.
    pub max_attempts: u32,
    /// N2: delay of the first attempt; doubles each attempt.
    pub base_delay_ms: u64,
    /// N2: the delay cap.
    pub max_delay_ms: u64,
    /// N5: jitter as a fraction of the delay (0 disables it; 0.2 means ±20 %).
    pub jitter: f64,
    /// N5: seed of the jitter generator, so runs are reproducible.
    pub jitter_seed: u64,
    /// N5: a gateway that stayed up this long crashed in isolation: restart at once and reset the
    /// attempt count.
    pub stable_uptime_ms: u64,
    /// N5: at most this many automatic restarts within `intensity_window_ms` (0 disables).
    pub intensity_max_restarts: u32,
    /// N5: the window of the restart intensity limit.
    pub intensity_window_ms: u64,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        ReconnectConfig {
            max_attempts: 10,
            base_delay_ms: 1_000,
            max_delay_ms: 30_000,
            jitter: 0.2,
            jitter_seed: 0x6761_7465_7761_7264,
            stable_uptime_ms: 10_000,
            intensity_max_restarts: 20,
            intensity_window_ms: 300_000,
        }
    }
}

/// X3: stderr handling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct StderrConfig {
    /// X3: a repeated line is summarised at every this-many-th repeat.
    pub repeat_summary_every: u64,
    /// X3: at most this many distinct lines are remembered for dedup per process (bounded
    /// memory under a flood of distinct lines).
    pub dedup_capacity: usize,
    /// Q2: gateway output lines logged per second, sustained (stdout and stderr together);
    /// beyond it lines are counted and summarised ("N lines suppressed").
    pub log_lines_per_sec: u32,
    /// Q2: gateway output lines logged at once before the per-second budget applies.
    pub log_burst: u32,
}

impl Default for StderrConfig {
    fn default() -> Self {
        StderrConfig {
            repeat_summary_every: 50,
            dedup_capacity: 4_096,
            log_lines_per_sec: 20,
            log_burst: 200,
        }
    }
}

/// O1: orphans and foreign listeners.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct OrphanConfig {
    /// O1: wait after SIGTERM to orphans.
    pub term_wait_ms: u64,
    /// O1: wait after SIGKILL to survivors.
    pub kill_wait_ms: u64,
    /// O1: time limit of the gateway probe of an existing listener.
    pub probe_timeout_ms: u64,
    /// O1 (beyond): what to do with a foreign gateway on the port.
    pub foreign_gateway: ForeignGatewayPolicy,
}

impl Default for OrphanConfig {
    fn default() -> Self {
        OrphanConfig {
            term_wait_ms: 3_000,
            kill_wait_ms: 1_000,
            probe_timeout_ms: 5_000,
            foreign_gateway: ForeignGatewayPolicy::Attach,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q3_values_that_cannot_work_are_refused_naming_the_key() {
        assert_eq!(SupervisorConfig::default().validate(), Ok(()));
        assert_eq!(SupervisorConfig::windows().validate(), Ok(()));
        let key_of = |config: SupervisorConfig| config.validate().expect_err("refused").key;
        let mut config = SupervisorConfig::default();
        config.heartbeat.interval_ms = 0;
        assert_eq!(key_of(config), "heartbeat.interval_ms");
        let mut config = SupervisorConfig::default();
        config.connect.max_frame_bytes = 0;
        assert_eq!(key_of(config), "connect.max_frame_bytes");
        let mut config = SupervisorConfig::default();
        config.connect.min_protocol = 5;
        config.connect.max_protocol = 4;
        assert_eq!(key_of(config), "connect.min_protocol");
        for jitter in [f64::NAN, -0.1, f64::INFINITY, 1.5] {
            let mut config = SupervisorConfig::default();
            config.reconnect.jitter = jitter;
            assert_eq!(key_of(config), "reconnect.jitter", "{jitter}");
        }
        let mut config = SupervisorConfig::default();
        config.reconnect.jitter = 0.0;
        assert_eq!(config.validate(), Ok(()), "no jitter is fine");
        let mut config = SupervisorConfig::default();
        config.liveness.deadline_ms = 0;
        assert_eq!(key_of(config), "liveness.deadline_ms");
        let mut config = SupervisorConfig::default();
        config.liveness.probe_timeout_ms = 0;
        assert_eq!(key_of(config), "liveness.probe_timeout_ms");
        let mut config = SupervisorConfig::default();
        config.liveness.probe_method = " ".into();
        assert_eq!(key_of(config), "liveness.probe_method");
        let config = SupervisorConfig {
            port: 0,
            ..SupervisorConfig::default()
        };
        assert_eq!(key_of(config), "port");
    }

    #[test]
    fn h1_windows_preset_uses_lenient_heartbeat() {
        let config = SupervisorConfig::windows();
        assert_eq!(config.heartbeat.interval_ms, 60_000);
        assert_eq!(config.heartbeat.timeout_ms, 25_000);
        assert_eq!(config.heartbeat.max_misses, 5);
        assert!(config.is_windows());
    }

    #[test]
    fn h1_unix_defaults_match_the_seed() {
        let config = SupervisorConfig::default();
        assert_eq!(config.heartbeat.interval_ms, 30_000);
        assert_eq!(config.heartbeat.timeout_ms, 12_000);
        assert_eq!(config.heartbeat.max_misses, 3);
        assert_eq!(config.port, 18789);
        assert_eq!(config.reconnect.max_attempts, 10);
        assert_eq!(config.restart.cooldown_ms, 2_500);
        assert_eq!(config.rpc.default_timeout_ms, 30_000);
    }

    #[test]
    fn config_rejects_unknown_keys() {
        let error = serde_json::from_str::<SupervisorConfig>(r#"{"heartbeat":{"intervall_ms":1}}"#)
            .unwrap_err();
        assert!(error.to_string().contains("intervall_ms"), "{error}");
    }

    #[test]
    fn config_round_trips_through_json() {
        let config = SupervisorConfig::windows();
        let text = serde_json::to_string(&config).unwrap();
        let back: SupervisorConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(back, config);
    }
}
