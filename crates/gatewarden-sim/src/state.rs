//! State shared by the lifecycle controller, the accept loop and the connections of one simulator process.
//!
//! The simulator runs on a single thread, so the locks here are never contended; they exist to make
//! the shared state `Sync` for `tokio::spawn`, and no lock is ever held across an `.await`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{broadcast, mpsc, watch};

use crate::cli::Settings;
use crate::faults::BootFaults;
use crate::probes::Phase;

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or_default()
}

/// A request to the lifecycle controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Graceful stop (SIGTERM, SIGINT).
    Stop {
        /// Which signal asked for it.
        signal: &'static str,
    },
    /// Restart (SIGUSR2, also raised by `gateway.restart.request`).
    Restart,
}

/// What every connection must do now, broadcast through a watch channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// Serve normally.
    Serving,
    /// Send `shutdown` (restart expected in N ms, or a stop when `None`) and close 1012.
    ShuttingDown {
        /// `restartExpectedMs` of the shutdown event; `None` for a terminal stop.
        restart_expected_ms: Option<u64>,
    },
    /// The restart drain is over and the listener is going away: connections admitted during
    /// the drain (which answered `connect` with the `gateway-restarting` refusal) close now too.
    ListenerClosed,
}

/// Per-boot facts (a boot ends at every in-process restart).
#[derive(Debug, Clone)]
pub struct BootState {
    /// Changes on every in-process restart.
    pub boot_id: String,
    /// When this boot started listening.
    pub started: Instant,
    /// End of the startup window, if one is open.
    pub startup_until: Option<Instant>,
    /// A stop or restart is draining.
    pub draining: bool,
    /// The drain is for an in-process restart: new sockets are still admitted, and their
    /// `connect` is refused with `UNAVAILABLE` / `gateway-restarting`, as the real gateway does.
    pub restarting: bool,
}

impl BootState {
    /// Phase as seen by probes and `connect`.
    pub fn phase(&self, now: Instant) -> Phase {
        if self.draining {
            Phase::Draining
        } else if self.startup_until.is_some_and(|until| now < until) {
            Phase::Starting
        } else {
            Phase::Started
        }
    }
}

/// Counters reported by `status`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Signals received, by name.
    pub signals: BTreeMap<&'static str, u64>,
    /// Recent arrival times per signal, for the "another supervisor" warning.
    pub recent_signals: HashMap<&'static str, Vec<Instant>>,
    /// In-process restarts completed.
    pub restarts: u64,
    /// Pids of grandchildren spawned by faults.
    pub grandchild_pids: Vec<u32>,
    /// Connections accepted.
    pub connections_total: u64,
}

/// Faults toggled at run time that new connections consult.
#[derive(Debug, Default)]
pub struct RuntimeFlags {
    /// Every token is a mismatch.
    pub reject_token: AtomicBool,
    /// New connections get no challenge.
    pub no_challenge: AtomicBool,
    /// SIGTERM is logged and ignored.
    pub ignore_sigterm: AtomicBool,
}

/// Everything the tasks of one simulator process share.
pub struct Shared {
    /// Start-up settings (flags and environment).
    pub settings: Settings,
    /// Shared token after config resolution. Never printed.
    pub token: Mutex<Option<String>>,
    /// When the process started, for `snapshot.uptimeMs`.
    pub process_started: Instant,
    /// Our pid.
    pub pid: u32,
    /// Fixed for the process lifetime.
    pub build_id: String,
    /// `instanceId` of this gateway's own `system-presence` row: one per process (it survives
    /// in-process restarts, like the real gateway's module-level id).
    pub instance_id: String,
    /// Port actually bound (reused by in-process restarts).
    pub port: AtomicU16,
    /// Current boot.
    pub boot: Mutex<BootState>,
    /// Run-time fault toggles.
    pub flags: RuntimeFlags,
    /// Faults armed for the next in-process boot.
    pub next_boot: Mutex<BootFaults>,
    /// `status` counters.
    pub stats: Mutex<Stats>,
    /// Device tokens issued by silent loopback pairing, with the scopes they grant.
    pub device_tokens: Mutex<HashMap<String, Vec<String>>>,
    /// Broadcast of the lifecycle notice to connections.
    pub notice: watch::Sender<Notice>,
    /// Global tick schedule (payload `ts`).
    pub ticks: broadcast::Sender<i64>,
    /// Requests to the lifecycle controller.
    pub commands: mpsc::UnboundedSender<Command>,
    /// Connection id counter.
    pub next_connection: AtomicU64,
    /// Whether a restart means "exit 0 and let the supervisor respawn".
    pub external_supervisor: bool,
    /// Config path in use (reported in the snapshot).
    pub config_path: std::path::PathBuf,
}

impl Shared {
    /// A copy of the current boot state.
    pub fn boot(&self) -> BootState {
        self.boot.lock().expect("boot lock").clone()
    }

    /// Process uptime in ms.
    pub fn process_uptime_ms(&self) -> u64 {
        self.process_started.elapsed().as_millis() as u64
    }

    /// Milliseconds `restartExpectedMs` announces: drain plus listener down time.
    pub fn restart_expected_ms(&self) -> u64 {
        self.settings.drain_ms + self.settings.restart_down_ms
    }

    /// Records a signal and warns like the real gateway when the same one arrives 3 times in 5 minutes.
    pub fn record_signal(&self, name: &'static str) {
        let mut stats = self.stats.lock().expect("stats lock");
        *stats.signals.entry(name).or_default() += 1;
        let now = Instant::now();
        let recent = stats.recent_signals.entry(name).or_default();
        recent.retain(|at| now.duration_since(*at) < Duration::from_secs(300));
        recent.push(now);
        if recent.len() >= 3 {
            crate::log!("received {name} 3 times within 5 minutes: another supervisor may be managing this Gateway");
        }
    }
}

/// Whether the environment asks for supervised restarts (exit 0 on SIGUSR2), per OPENCLAW.md section 8.
pub fn external_supervisor_from_env(env: &dyn Fn(&str) -> Option<String>) -> bool {
    if env("OPENCLAW_NO_RESPAWN").as_deref() == Some("1") {
        return false;
    }
    if env("OPENCLAW_SUPERVISOR_MODE").as_deref() == Some("external") {
        return true;
    }
    // Service-manager markers make the real gateway choose a supervised restart too; a supervisor
    // that forgets to scrub them from the child's environment should see that here as well.
    const MARKERS: &[&str] = &[
        "INVOCATION_ID",
        "SYSTEMD_EXEC_PID",
        "JOURNAL_STREAM",
        "OPENCLAW_SYSTEMD_UNIT",
        "LAUNCH_JOB_LABEL",
        "XPC_SERVICE_NAME",
        "OPENCLAW_SERVICE_MARKER",
        "OPENCLAW_SERVICE_KIND",
    ];
    MARKERS
        .iter()
        .any(|marker| env(marker).is_some_and(|value| !value.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_respawn_wins_over_external_mode() {
        let env = |name: &str| match name {
            "OPENCLAW_NO_RESPAWN" => Some("1".to_string()),
            "OPENCLAW_SUPERVISOR_MODE" => Some("external".to_string()),
            _ => None,
        };
        assert!(!external_supervisor_from_env(&env));
        let external =
            |name: &str| (name == "OPENCLAW_SUPERVISOR_MODE").then(|| "external".to_string());
        assert!(external_supervisor_from_env(&external));
        let systemd = |name: &str| (name == "INVOCATION_ID").then(|| "abc".to_string());
        assert!(external_supervisor_from_env(&systemd));
        assert!(!external_supervisor_from_env(&|_| None));
    }
}
