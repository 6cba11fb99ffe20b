//! Scenarios `startup`, `recovery` and `hang`: how long the supervisor takes from a command or a
//! failure to `running` (or to a restart decision), net of the sim's own start time measured in
//! the same run.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use gatewarden::events::GatewayEvent;
use gatewarden::supervisor::GetDiagnostics;
use gatewarden_core::machine::LifecycleState;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::fixture::{ms_between, options, sim_own_start_ms, Supervised};
use crate::scenarios::Plan;
use crate::stats::median;

/// A generous bound for one wait on a busy shared machine.
const WAIT: Duration = Duration::from_secs(30);

/// One `Start` → `running`, split with the sim's own clocks (`status` RPC right after running:
/// `uptimeMs` counts from the sim's `main`, `bootUptimeMs` from its listen).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartupSample {
    /// `Start` sent → `running` published (seen by a subscriber).
    pub start_to_running_ms: f64,
    /// `Start` → the sim's `main` ran (probe port, spawn, exec, dynamic loading).
    pub start_to_sim_main_ms: f64,
    /// The sim's `main` → listening (the sim's own work).
    pub sim_main_to_listen_ms: f64,
    /// Listening → `running` (readiness probe, handshake, publish).
    pub listen_to_running_ms: f64,
}

/// Scenario `startup`, measured in a fresh child process of this binary (so the harness's heap
/// from earlier scenarios is not charged to the spawn: see [`startup`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartupResult {
    /// Memory the child allocated and touched before measuring, standing for an embedding app's
    /// heap (0 for the plain measurement).
    pub parent_ballast_mib: usize,
    /// The child's RSS when it started measuring.
    pub parent_rss_kib: u64,
    /// The first start in a fresh state directory (creates the device identity).
    pub cold: StartupSample,
    /// Later starts (identity on disk, like every start but the first on a machine).
    pub warm: Vec<StartupSample>,
    /// The sim spawned directly: listening line `unix_ms` − wall clock before spawn.
    pub sim_own_start_ms: Vec<f64>,
    pub median_start_to_running_ms: f64,
    pub median_sim_own_start_ms: f64,
    /// median(start → running) − median(sim's own start): the definition.
    pub overhead_ms: f64,
    /// median over samples of (start → running − sim main → listen): includes fork/exec.
    pub overhead_incl_exec_ms: f64,
}

async fn one_start(state_dir: &std::path::Path) -> anyhow::Result<StartupSample> {
    let mut supervised = Supervised::new(options(state_dir, &[])?);
    let outcome = async {
        // The actor must be up (subscribed) before the clock starts: GetStatus round-trips it.
        supervised.status().await?;
        let started = Instant::now();
        supervised.start();
        let (running_at, _) = supervised
            .wait_status(WAIT, |status| status.state == LifecycleState::Running)
            .await?;
        let status = supervised.rpc("status", None).await?;
        let replied_at = Instant::now();
        let field = |name: &str| {
            status
                .get(name)
                .and_then(Value::as_f64)
                .ok_or_else(|| anyhow!("status reply without {name}"))
        };
        // Both are truncated to whole ms: +0.5 centres them.
        let uptime = field("uptimeMs")? + 0.5;
        let boot_uptime = field("bootUptimeMs")? + 0.5;
        let start_to_running = ms_between(started, running_at);
        let start_to_reply = ms_between(started, replied_at);
        anyhow::Ok(StartupSample {
            start_to_running_ms: start_to_running,
            start_to_sim_main_ms: start_to_reply - uptime,
            sim_main_to_listen_ms: uptime - boot_uptime,
            listen_to_running_ms: start_to_running - (start_to_reply - boot_uptime),
        })
    }
    .await;
    supervised.stop().await;
    outcome
}

/// Run `startup` in fresh child processes: once as a small process, once holding
/// `plan.startup_ballast_mib` of touched memory, standing for the app that embeds the supervisor.
/// A spawn by fork copies the parent's page tables, so its cost grows with the parent's RSS; the
/// supervisor's spawn does not fork (process/spawn.rs), and the ballast run shows it stays flat.
/// Measured in the harness's own process, the figure would also depend on what earlier scenarios
/// left on its heap (4096 RPC callers leave tens of MiB).
pub async fn startup(plan: &Plan) -> anyhow::Result<(StartupResult, StartupResult)> {
    let small = startup_in_child(plan.startup_samples, 0).await?;
    let large = startup_in_child(plan.startup_samples, plan.startup_ballast_mib).await?;
    eprintln!(
        "  startup overhead {:.2} ms; with {} MiB of parent memory {:.2} ms (start -> sim main {:.2} vs {:.2} ms)",
        small.overhead_ms,
        large.parent_ballast_mib,
        large.overhead_ms,
        median_start_to_sim_main(&small),
        median_start_to_sim_main(&large),
    );
    Ok((small, large))
}

/// Median over the warm samples of `Start` → the sim's `main`.
pub fn median_start_to_sim_main(result: &StartupResult) -> f64 {
    let values: Vec<f64> = result.warm.iter().map(|s| s.start_to_sim_main_ms).collect();
    median(&values).unwrap_or(f64::NAN)
}

async fn startup_in_child(samples: usize, ballast_mib: usize) -> anyhow::Result<StartupResult> {
    let args = vec![
        "--child".to_string(),
        "startup".to_string(),
        "--samples".to_string(),
        samples.to_string(),
        "--ballast-mib".to_string(),
        ballast_mib.to_string(),
    ];
    crate::scenarios::run_child(&args, Duration::from_secs(120)).await
}

/// The `startup` child: samples alternate with direct spawns of the sim.
pub async fn startup_child(samples: usize, ballast_mib: usize) -> anyhow::Result<StartupResult> {
    // Written (not just reserved), so its pages are mapped and a fork has to copy their tables.
    let ballast = vec![1u8; ballast_mib << 20];
    let parent_rss_kib = crate::procfs::rss_kib()?;
    let state_dir = tempfile::tempdir()?;
    let cold = one_start(state_dir.path()).await?;
    let mut warm = Vec::new();
    let mut sim_own = Vec::new();
    for _ in 0..samples {
        sim_own.push(sim_own_start_ms(state_dir.path()).await?);
        warm.push(one_start(state_dir.path()).await?);
    }
    let median_of = |values: Vec<f64>| median(&values).unwrap_or(f64::NAN);
    let median_total = median_of(warm.iter().map(|s| s.start_to_running_ms).collect());
    let median_sim = median_of(sim_own.clone());
    let overhead_incl_exec = median_of(
        warm.iter()
            .map(|s| s.start_to_running_ms - s.sim_main_to_listen_ms)
            .collect(),
    );
    std::hint::black_box(&ballast);
    drop(ballast);
    Ok(StartupResult {
        parent_ballast_mib: ballast_mib,
        parent_rss_kib,
        cold,
        warm,
        sim_own_start_ms: sim_own,
        median_start_to_running_ms: median_total,
        median_sim_own_start_ms: median_sim,
        overhead_ms: median_total - median_sim,
        overhead_incl_exec_ms: overhead_incl_exec,
    })
}

/// One recovery from SIGKILL.
#[derive(Debug, Clone, Serialize)]
pub struct RecoverySample {
    /// SIGKILL → the supervisor left `running`.
    pub kill_to_noticed_ms: f64,
    /// SIGKILL → `running` again with a new pid.
    pub kill_to_running_ms: f64,
    /// The state published right after `running` was left.
    pub next_state: String,
}

/// A crash-looping gateway: what happened, when.
#[derive(Debug, Clone, Serialize)]
pub struct CrashLoop {
    /// The sim exits this long after listening, every time.
    pub crash_after_ms: u64,
    /// (ms since Start, event) for every status change and process exit.
    pub trace: Vec<(f64, String)>,
    /// Per crash: process exit → the next start attempt (`starting`), in order.
    pub delay_per_attempt_ms: Vec<f64>,
    /// The nominal N2 schedule for comparison: base × 2^(attempt−1), capped, before jitter.
    pub nominal_delay_ms: Vec<f64>,
}

/// Scenario `recovery`.
#[derive(Debug, Clone, Serialize)]
pub struct RecoveryResult {
    pub stable_uptime_ms: u64,
    pub samples: Vec<RecoverySample>,
    pub sim_own_start_ms: Vec<f64>,
    pub median_kill_to_running_ms: f64,
    pub median_sim_own_start_ms: f64,
    /// median(kill → running) − median(sim's own start).
    pub overhead_ms: f64,
    pub crash_loop: CrashLoop,
}

/// Run `recovery`: several supervisors start together, stay up past `stable_uptime_ms`, then are
/// killed one at a time (so each sample waits the stable run once, not once per sample).
pub async fn recovery(plan: &Plan) -> anyhow::Result<RecoveryResult> {
    let state_dir = tempfile::tempdir()?;
    let mut fleet = Vec::new();
    let mut stable_uptime_ms = 0;
    for index in 0..plan.recovery_gateways {
        let dir = state_dir.path().join(format!("gw{index}"));
        let mut options = options(&dir, &[])?;
        if let Some(stable) = plan.recovery_stable_uptime_ms {
            options.core.reconnect.stable_uptime_ms = stable;
        }
        stable_uptime_ms = options.core.reconnect.stable_uptime_ms;
        fleet.push(Supervised::new(options));
    }
    let outcome = async {
        for supervised in &mut fleet {
            supervised.start_running(WAIT).await?;
        }
        let mut sim_own = Vec::new();
        for _ in 0..plan.recovery_gateways.max(3) {
            sim_own.push(sim_own_start_ms(state_dir.path()).await?);
        }
        tokio::time::sleep(Duration::from_millis(stable_uptime_ms + 1_000)).await;
        let mut samples = Vec::new();
        for supervised in &mut fleet {
            let old_pid = supervised
                .status()
                .await?
                .pid
                .ok_or_else(|| anyhow!("running without a pid"))?;
            let killed_at = Instant::now();
            kill(Pid::from_raw(old_pid as i32), Signal::SIGKILL).context("SIGKILL")?;
            let (noticed_at, next) = supervised
                .wait_status(WAIT, |status| status.state != LifecycleState::Running)
                .await?;
            let (running_at, _) = supervised
                .wait_status(WAIT, |status| {
                    status.state == LifecycleState::Running && status.pid != Some(old_pid)
                })
                .await?;
            samples.push(RecoverySample {
                kill_to_noticed_ms: ms_between(killed_at, noticed_at),
                kill_to_running_ms: ms_between(killed_at, running_at),
                next_state: next.state.as_str().to_string(),
            });
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::Ok((samples, sim_own))
    }
    .await;
    for supervised in &fleet {
        supervised.stop().await;
    }
    let (samples, sim_own) = outcome?;
    let crash_loop = crash_loop(plan).await?;
    let median_kill = median(
        &samples
            .iter()
            .map(|s| s.kill_to_running_ms)
            .collect::<Vec<_>>(),
    )
    .unwrap_or(f64::NAN);
    let median_sim = median(&sim_own).unwrap_or(f64::NAN);
    Ok(RecoveryResult {
        stable_uptime_ms,
        samples,
        sim_own_start_ms: sim_own,
        median_kill_to_running_ms: median_kill,
        median_sim_own_start_ms: median_sim,
        overhead_ms: median_kill - median_sim,
        crash_loop,
    })
}

/// A gateway that exits shortly after every start, with the default reconnect config.
async fn crash_loop(plan: &Plan) -> anyhow::Result<CrashLoop> {
    const CRASH_AFTER_MS: u64 = 200;
    let state_dir = tempfile::tempdir()?;
    let crash_after = CRASH_AFTER_MS.to_string();
    let options = options(
        state_dir.path(),
        &["--crash-after-ms", crash_after.as_str()],
    )?;
    let reconnect = options.core.reconnect.clone();
    let mut supervised = Supervised::new(options);
    supervised.status().await?;
    let started = Instant::now();
    supervised.start();
    let deadline = tokio::time::Instant::now() + plan.crash_loop;
    let mut trace = Vec::new();
    let mut delays = Vec::new();
    let mut last_exit: Option<Instant> = None;
    while let Ok(Some((at, event))) =
        tokio::time::timeout_at(deadline, supervised.events.recv()).await
    {
        match event {
            GatewayEvent::Status(status) => {
                trace.push((
                    ms_between(started, at),
                    format!(
                        "{} attempts={} pid={:?}",
                        status.state.as_str(),
                        status.reconnect_attempts,
                        status.pid
                    ),
                ));
                if status.state == LifecycleState::Starting {
                    if let Some(exit) = last_exit.take() {
                        delays.push(ms_between(exit, at));
                    }
                }
            }
            GatewayEvent::ProcessExit { pid, code } => {
                trace.push((
                    ms_between(started, at),
                    format!("exit pid={pid} code={code:?}"),
                ));
                last_exit = Some(at);
            }
            _ => {}
        }
    }
    supervised.stop().await;
    let nominal = (1..=delays.len().max(1))
        .map(|attempt| {
            let doubled = reconnect
                .base_delay_ms
                .saturating_mul(1u64 << (attempt - 1).min(30));
            doubled.min(reconnect.max_delay_ms) as f64
        })
        .collect();
    Ok(CrashLoop {
        crash_after_ms: CRASH_AFTER_MS,
        trace,
        delay_per_attempt_ms: delays,
        nominal_delay_ms: nominal,
    })
}

/// One hang.
#[derive(Debug, Clone, Serialize)]
pub struct HangSample {
    /// SIGSTOP → the machine left its `running` leaf state (the restart decision), seen by
    /// polling `GetDiagnostics` every millisecond: the published status does not change yet.
    pub stop_to_decision_ms: f64,
    /// The leaf state the decision led to.
    pub decided_leaf: String,
    /// SIGSTOP → the published status left `running` (only measured on the first sample: it
    /// waits out the kill grace of a process that cannot run its SIGTERM handler).
    pub stop_to_status_change_ms: Option<f64>,
    pub next_state: Option<String>,
}

/// Scenario `hang`.
#[derive(Debug, Clone, Serialize)]
pub struct HangResult {
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub max_misses: u32,
    /// (max_misses + 1) × interval: the last good pong can come just before the stop, then
    /// `max_misses` pings must each time out, and the first may only go out a full interval later.
    pub bound_ms: u64,
    pub kill_grace_ms: u64,
    pub samples: Vec<HangSample>,
    pub median_stop_to_decision_ms: f64,
}

/// Run `hang`: a fresh supervisor per sample with a short heartbeat.
pub async fn hang(plan: &Plan) -> anyhow::Result<HangResult> {
    let (interval_ms, timeout_ms, max_misses) = (200, 100, 3);
    let mut samples = Vec::new();
    let mut kill_grace_ms = 0;
    for index in 0..plan.hang_samples {
        let state_dir = tempfile::tempdir()?;
        let mut options = options(state_dir.path(), &[])?;
        options.core.heartbeat.interval_ms = interval_ms;
        options.core.heartbeat.timeout_ms = timeout_ms;
        options.core.heartbeat.max_misses = max_misses;
        kill_grace_ms = options.core.stop.kill_grace_ms;
        let mut supervised = Supervised::new(options);
        let outcome = async {
            let status = supervised.start_running(WAIT).await?;
            let pid = status.pid.ok_or_else(|| anyhow!("running without a pid"))?;
            // A few heartbeats first, so detection starts from the steady state.
            tokio::time::sleep(Duration::from_millis(3 * interval_ms + 50)).await;
            let stopped_at = Instant::now();
            kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).context("SIGSTOP")?;
            let deadline = stopped_at + WAIT;
            let (decided_at, decided_leaf) = loop {
                let diagnostics = supervised
                    .supervisor
                    .send(GetDiagnostics)
                    .await
                    .context("supervisor stopped")?;
                if diagnostics.leaf_state != "running" {
                    break (Instant::now(), diagnostics.leaf_state.to_string());
                }
                if Instant::now() > deadline {
                    anyhow::bail!("no restart decision within {} s", WAIT.as_secs());
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            };
            let (status_change, next_state) = if index == 0 {
                let (changed_at, next) = supervised
                    .wait_status(WAIT, |status| status.state != LifecycleState::Running)
                    .await?;
                (
                    Some(ms_between(stopped_at, changed_at)),
                    Some(next.state.as_str().to_string()),
                )
            } else {
                (None, None)
            };
            anyhow::Ok(HangSample {
                stop_to_decision_ms: ms_between(stopped_at, decided_at),
                decided_leaf,
                stop_to_status_change_ms: status_change,
                next_state,
            })
        }
        .await;
        supervised.stop().await;
        samples.push(outcome?);
    }
    let median_decision = median(
        &samples
            .iter()
            .map(|s| s.stop_to_decision_ms)
            .collect::<Vec<_>>(),
    )
    .unwrap_or(f64::NAN);
    Ok(HangResult {
        interval_ms,
        timeout_ms,
        max_misses,
        bound_ms: (u64::from(max_misses) + 1) * interval_ms,
        kill_grace_ms,
        samples,
        median_stop_to_decision_ms: median_decision,
    })
}
