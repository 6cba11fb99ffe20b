//! The running instance as the control socket, the HTTP endpoint and the status area see it: the
//! supervisor's address plus what only the CLI knows (profile, clock origin, RPC counters).

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::Addr;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use gatewarden::supervisor::{
    DiagnosticsSnapshot, GetDiagnostics, GetHealth, GetStatus, Supervisor,
};
use gatewarden_core::error::CommandFailure;
use gatewarden_core::health::HealthSummary;
use gatewarden_core::liveness::RecoverySnapshot;
use gatewarden_core::machine::Status;
use gatewarden_core::rpc::RpcError;

use crate::config::ProfileKind;

/// How long a status query may take before the supervisor counts as wedged.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything the CLI's servers share. Single-threaded (the actix system), hence `Cell`.
pub struct Instance {
    /// The supervisor actor.
    pub supervisor: Addr<Supervisor>,
    /// Which profile runs.
    pub profile: ProfileKind,
    /// When the supervisor was started: its machine clock counts from (about) here.
    pub origin: Instant,
    /// The same moment in Unix milliseconds.
    pub origin_unix_ms: u64,
    /// RPCs made through this instance.
    pub rpc: RpcCounters,
    /// Set by `stop --exit`: the run loop ends once the gateway is stopped.
    pub exit_requested: Notify,
    /// F8: why the supervisor gave up, while it has (cleared when a start begins).
    pub gave_up: RefCell<Option<String>>,
    /// F8: the typed failure behind the give-up, when a start failure caused it (the hints of
    /// `run` are chosen by it, never by the text).
    pub gave_up_failure: RefCell<Option<CommandFailure>>,
    /// F8: woken when the supervisor gives up (`run --exit-on-failure` leaves then).
    pub gave_up_notice: Notify,
    /// Y1: the open event streams, ended with a final line when the instance exits.
    pub streams: crate::events_stream::Streams,
    /// K4: processes a dead predecessor left in its gateway's group, ended at this start.
    pub leftovers_ended: Vec<u32>,
    /// Q1: the latest status and when it was taken; `/healthz` and `/readyz` answer from it
    /// without asking the supervisor actor.
    latest: RefCell<Option<(Status, Instant)>>,
}

/// RPC outcomes counted by the CLI (the library keeps only the last success and failure).
#[derive(Debug, Default)]
pub struct RpcCounters {
    /// Answered successfully.
    pub successes: Cell<u64>,
    /// Transport failures (timeout, not connected, stopped, send failure): M6's failures.
    pub failures: Cell<u64>,
    /// The gateway answered with an error (the connection works).
    pub gateway_errors: Cell<u64>,
}

impl RpcCounters {
    /// Count one outcome.
    pub fn record(&self, outcome: &Result<serde_json::Value, RpcError>) {
        let cell = match outcome {
            Ok(_) => &self.successes,
            Err(error) if error.is_transport() => &self.failures,
            Err(_) => &self.gateway_errors,
        };
        cell.set(cell.get().wrapping_add(1));
    }
}

/// The `status --json` snapshot: the library's [`Status`] (the same type and serde shape, its
/// fields at the top level: `uptimeMs`, `connectedAtMs` in Unix ms, ...), plus health, recovery
/// and the supervisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    /// S2, as the library reports it.
    #[serde(flatten)]
    pub status: Status,
    /// H6, with times in Unix ms.
    pub health: HealthSummary,
    /// H6/D1–D7: what the liveness recovery is doing, with times in Unix ms.
    pub recovery: RecoverySnapshot,
    /// The supervisor itself.
    pub supervisor: SupervisorInfo,
}

/// About the `gatewarden run` process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupervisorInfo {
    /// Its pid.
    pub pid: u32,
    /// The launch profile.
    pub profile: ProfileKind,
    /// Milliseconds since it started.
    pub uptime_ms: u64,
    /// Its version.
    pub version: String,
    /// K4: pids a dead predecessor left in its gateway's process group, ended at this start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leftovers_ended: Vec<u32>,
}

/// Everything `/metrics` and the status area need, read in one go.
pub struct Snapshot {
    /// S2.
    pub status: Status,
    /// H6.
    pub health: HealthSummary,
    /// Counters and diagnostics.
    pub diagnostics: DiagnosticsSnapshot,
}

/// The supervisor did not answer.
#[derive(Debug, Clone, Copy)]
pub struct Gone;

impl std::fmt::Display for Gone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the supervisor did not answer")
    }
}

impl std::error::Error for Gone {}

impl Instance {
    /// A new instance around `supervisor`, started at `origin`.
    pub fn new(supervisor: Addr<Supervisor>, profile: ProfileKind, origin: Instant) -> Self {
        Instance {
            supervisor,
            profile,
            origin,
            origin_unix_ms: unix_ms().saturating_sub(millis(origin.elapsed())),
            rpc: RpcCounters::default(),
            exit_requested: Notify::new(),
            gave_up: RefCell::new(None),
            gave_up_failure: RefCell::new(None),
            gave_up_notice: Notify::new(),
            streams: crate::events_stream::Streams::default(),
            leftovers_ended: Vec::new(),
            latest: RefCell::new(None),
        }
    }

    /// Q1: keep `status` as the snapshot the probes answer from.
    pub fn remember(&self, status: Status) {
        *self.latest.borrow_mut() = Some((status, Instant::now()));
    }

    /// Q1: the snapshot, when it is younger than `stale`; `Err` with its age (or `None` when
    /// there is none yet) otherwise.
    pub fn snapshot_status(&self, stale: Duration) -> Result<Status, Option<Duration>> {
        match &*self.latest.borrow() {
            Some((status, at)) if at.elapsed() <= stale => Ok(status.clone()),
            Some((_, at)) => Err(Some(at.elapsed())),
            None => Err(None),
        }
    }

    /// Q1: refresh the snapshot every `every` by asking the supervisor (status events refresh it
    /// in between). A supervisor that stops answering leaves it to age, and `/healthz` says so.
    pub async fn refresh_snapshot(&self, every: Duration) {
        loop {
            if let Ok(status) = self.status().await {
                self.remember(status);
            }
            tokio::time::sleep(every).await;
        }
    }

    /// The supervisor's machine clock now (ms since `origin`).
    pub fn machine_now_ms(&self) -> u64 {
        millis(self.origin.elapsed())
    }

    /// A machine-clock time as Unix milliseconds.
    pub fn to_unix_ms(&self, machine_ms: u64) -> u64 {
        self.origin_unix_ms.saturating_add(machine_ms)
    }

    /// Status, health and diagnostics.
    pub async fn snapshot(&self) -> Result<Snapshot, Gone> {
        let ask = async {
            let status = self.supervisor.send(GetStatus).await.map_err(|_| Gone)?;
            let health = self.supervisor.send(GetHealth).await.map_err(|_| Gone)?;
            let diagnostics = self
                .supervisor
                .send(GetDiagnostics)
                .await
                .map_err(|_| Gone)?;
            Ok(Snapshot {
                status,
                health,
                diagnostics,
            })
        };
        tokio::time::timeout(QUERY_TIMEOUT, ask)
            .await
            .unwrap_or(Err(Gone))
    }

    /// Only the status (the cheapest liveness question).
    pub async fn status(&self) -> Result<Status, Gone> {
        match tokio::time::timeout(QUERY_TIMEOUT, self.supervisor.send(GetStatus)).await {
            Ok(Ok(status)) => Ok(status),
            _ => Err(Gone),
        }
    }

    /// The `status --json` report.
    pub async fn report(&self) -> Result<StatusReport, Gone> {
        let snapshot = self.snapshot().await?;
        Ok(self.report_from(snapshot))
    }

    /// The `status --json` report of a snapshot.
    pub fn report_from(&self, snapshot: Snapshot) -> StatusReport {
        let Snapshot {
            status,
            mut health,
            diagnostics,
        } = snapshot;
        let mut recovery = diagnostics.recovery;
        // The health times are on the supervisor's machine clock; people and scripts want Unix
        // time, like `connectedAtMs`.
        let unix = |at: Option<u64>| at.map(|at| self.to_unix_ms(at));
        health.last_alive_at = unix(health.last_alive_at);
        health.last_rpc_success_at = unix(health.last_rpc_success_at);
        health.last_rpc_failure_at = unix(health.last_rpc_failure_at);
        health.last_channels_status_ok_at = unix(health.last_channels_status_ok_at);
        health.last_channels_status_failure_at = unix(health.last_channels_status_failure_at);
        recovery.deadline_at_ms = unix(recovery.deadline_at_ms);
        if let Some(probe) = recovery.last_probe.as_mut() {
            probe.sent_at_ms = self.to_unix_ms(probe.sent_at_ms);
            probe.finished_at_ms = self.to_unix_ms(probe.finished_at_ms);
        }
        StatusReport {
            status,
            health,
            recovery,
            supervisor: SupervisorInfo {
                pid: std::process::id(),
                profile: self.profile,
                uptime_ms: millis(self.origin.elapsed()),
                version: env!("CARGO_PKG_VERSION").to_string(),
                leftovers_ended: self.leftovers_ended.clone(),
            },
        }
    }
}

/// Milliseconds of a duration, saturating.
pub fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Unix time in milliseconds.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(millis)
        .unwrap_or(0)
}
