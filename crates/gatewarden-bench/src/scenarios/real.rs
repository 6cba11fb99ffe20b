//! Scenario `real` (issue 7, item 6): the supervisor against the real OpenClaw gateway, installed
//! by `scripts/install-openclaw.sh`. Each quantity is split against the gateway's own readiness,
//! its `/startupz` probe, watched by a thread of its own every [`POLL`] while the supervisor works:
//!
//! - start: `Start` → `running`, minus the gateway's spawn → first `/startupz` 200;
//! - reload: `Reload` (SIGUSR2, an in-place restart) → `running` on the new boot, the time the
//!   supervisor published something other than `running`, and the gateway's own probe gap;
//! - recovery: SIGKILL → `running` with a new pid, minus the new gateway's spawn → `/startupz` 200.
//!
//! A cold start of this gateway takes seconds of module loading, so samples are few and the
//! interesting figure is the difference, not the total.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use gatewarden::events::GatewayEvent;
use gatewarden::launch::Secret;
use gatewarden::profile::LaunchProfile;
use gatewarden::supervisor::Reload;
use gatewarden::SupervisorOptions;
use gatewarden_core::machine::{CommandOutcome, LifecycleState, Status};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Serialize;

use crate::fixture::{free_port, ms_between, Supervised, TOKEN};
use crate::scenarios::Plan;
use crate::stats::median;

/// How often the watcher asks `/startupz`: the resolution of every "gateway's own" figure.
const POLL: Duration = Duration::from_millis(5);
/// One probe's bound (the gateway answers in well under a millisecond once it serves HTTP).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// A cold start of the real gateway took 12–106 s on the shared 2-core machine (docs/interop.md).
const COLD_START: Duration = Duration::from_secs(240);

/// Where the real gateway is, or why it is not there.
pub fn install() -> Result<gatewarden_tests::OpenclawInstall, String> {
    gatewarden_tests::find_openclaw()
}

/// What `/startupz` answered: `0` for no HTTP answer (refused, reset, timed out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    code: u16,
    first: Instant,
    last: Instant,
}

/// Polls `/startupz` on a thread until dropped, keeping runs of equal answers.
struct StartupzWatch {
    runs: Arc<Mutex<Vec<Run>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StartupzWatch {
    fn start(port: u16) -> anyhow::Result<StartupzWatch> {
        let runs = Arc::new(Mutex::new(Vec::<Run>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("startupz-watch".into())
            .spawn({
                let runs = runs.clone();
                let stop = stop.clone();
                move || {
                    while !stop.load(Ordering::Relaxed) {
                        let code = gatewarden_tests::http(port, "GET", "/startupz", PROBE_TIMEOUT)
                            .map_or(0, |(code, _)| code);
                        let now = Instant::now();
                        let mut runs = runs.lock().unwrap_or_else(|poison| poison.into_inner());
                        match runs.last_mut() {
                            Some(run) if run.code == code => run.last = now,
                            _ => runs.push(Run {
                                code,
                                first: now,
                                last: now,
                            }),
                        }
                        drop(runs);
                        std::thread::sleep(POLL);
                    }
                }
            })
            .context("starting the /startupz watcher")?;
        Ok(StartupzWatch {
            runs,
            stop,
            thread: Some(thread),
        })
    }

    fn runs(&self) -> Vec<Run> {
        self.runs
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    /// The first 200 seen at or after `since`.
    fn first_200_after(&self, since: Instant) -> Option<Instant> {
        self.runs()
            .iter()
            .filter(|run| run.code == 200 && run.last >= since)
            .map(|run| run.first.max(since))
            .next()
    }

    /// Wait (polling the record, not the gateway) for a 200 at or after `since`.
    async fn wait_200_after(&self, since: Instant, limit: Duration) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(at) = self.first_200_after(since) {
                return Ok(at);
            }
            if Instant::now() > deadline {
                bail!(
                    "no /startupz 200 within {} s (answers: {:?})",
                    limit.as_secs(),
                    self.runs().iter().map(|r| r.code).collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Between `from` and `to`: the last 200 before the first non-200, and the first 200 after
    /// it (the gateway's own probe gap), when there was one.
    fn gap(&self, from: Instant, to: Instant) -> Option<(Instant, Instant)> {
        let runs: Vec<Run> = self
            .runs()
            .into_iter()
            .filter(|run| run.last >= from && run.first <= to)
            .collect();
        let broken = runs.iter().position(|run| run.code != 200)?;
        let before = runs[..broken].iter().rev().find(|run| run.code == 200)?;
        let after = runs[broken..].iter().find(|run| run.code == 200)?;
        Some((before.last, after.first))
    }

    /// The probe gap of a restart requested at `sent_at`, which the supervisor saw completed at
    /// `back_at`: waits for the gateway's 200 after the gap; `None` when its probe never
    /// stopped answering 200 (checked until 2 s after `back_at`).
    async fn wait_gap(&self, sent_at: Instant, back_at: Instant) -> Option<(Instant, Instant)> {
        let deadline = Instant::now() + COLD_START;
        loop {
            let now = Instant::now();
            if let Some(gap) = self.gap(sent_at, now) {
                return Some(gap);
            }
            let broke = self
                .runs()
                .iter()
                .any(|run| run.code != 200 && run.last >= sent_at);
            if (!broke && now > back_at + Duration::from_secs(2)) || now > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for StartupzWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One `Start` → `running` of the real gateway.
#[derive(Debug, Clone, Serialize)]
pub struct RealStart {
    /// `Start` sent → `running` published.
    pub start_to_running_ms: f64,
    /// `Start` → the status that carries the new pid (port probe, orphan check, spawn).
    pub start_to_spawned_ms: f64,
    /// Spawned → the first `/startupz` 200: the gateway's own readiness.
    pub gateway_own_ms: f64,
    /// The first `/startupz` 200 → `running` (negative: the supervisor was there first).
    pub startupz_to_running_ms: f64,
    /// start → running − gateway's own: what the supervisor adds (item 6's definition).
    pub overhead_ms: f64,
}

/// One `Reload` (SIGUSR2 in-place restart).
#[derive(Debug, Clone, Serialize)]
pub struct RealReload {
    pub outcome: String,
    /// `Reload` sent → `running` with a new boot id.
    pub reload_to_running_ms: f64,
    /// First published non-`running` status → `running` again: the supervisor's downtime.
    pub published_downtime_ms: Option<f64>,
    /// The gateway's own downtime: last `/startupz` 200 before the restart → first after it.
    pub gateway_probe_gap_ms: Option<f64>,
    /// The gateway's first 200 after the restart → `running` (negative: supervisor first).
    pub startupz_to_running_ms: Option<f64>,
    /// Whether the gateway kept its pid (an in-place restart) or the supervisor respawned it.
    pub same_pid: bool,
}

/// One SIGKILL → recovered.
#[derive(Debug, Clone, Serialize)]
pub struct RealRecovery {
    /// SIGKILL → `running` with a new pid.
    pub kill_to_running_ms: f64,
    /// SIGKILL → the status that carries the new pid (notice, backoff, spawn).
    pub kill_to_spawned_ms: f64,
    /// The new gateway: spawned → first `/startupz` 200.
    pub gateway_own_ms: f64,
    /// kill → running − gateway's own.
    pub overhead_ms: f64,
}

/// Scenario `real`.
#[derive(Debug, Clone, Serialize)]
pub struct RealResult {
    pub node: String,
    pub entry: String,
    pub version: Option<String>,
    pub poll_interval_ms: u64,
    pub starts: Vec<RealStart>,
    pub reloads: Vec<RealReload>,
    pub recoveries: Vec<RealRecovery>,
    pub median_start_overhead_ms: f64,
    pub median_startupz_to_running_ms: f64,
    pub median_reload_downtime_ms: f64,
    pub median_reload_gateway_gap_ms: f64,
    pub median_kill_to_running_ms: f64,
    pub median_kill_overhead_ms: f64,
}

fn options(
    install: &gatewarden_tests::OpenclawInstall,
    state_dir: &std::path::Path,
) -> anyhow::Result<SupervisorOptions> {
    let mut options = SupervisorOptions::new(
        LaunchProfile::OpenClaw {
            node: install.node.clone(),
            entry: install.entry.clone(),
        },
        state_dir.to_path_buf(),
    );
    options.core.port = free_port()?;
    options.token = Some(Secret::new(TOKEN));
    // The real gateway drains on SIGTERM; a bench stop should not SIGKILL it mid-drain.
    options.core.stop.kill_grace_ms = 20_000;
    // The in-place restart announces 1.5 s but takes longer on a loaded machine: with the
    // default margin a slow one would be measured as a fallback full restart.
    options.core.reload.restart_expected_margin_ms = COLD_START.as_millis() as u64;
    // Measure every reload, not the R6 "connected less than 8 s ago" skip.
    options.core.reload.recent_connect_skip_ms = 0;
    Ok(options)
}

/// The first published status with a pid other than `old`, and when.
async fn wait_new_pid(
    supervised: &mut Supervised,
    old: Option<u32>,
) -> anyhow::Result<(Instant, Status)> {
    supervised
        .wait_status(COLD_START, |status| {
            status.pid.is_some() && status.pid != old
        })
        .await
}

/// Start → running, split at the spawn and at the gateway's own first `/startupz` 200.
async fn one_start(
    supervised: &mut Supervised,
    watch: &StartupzWatch,
) -> anyhow::Result<(RealStart, Status)> {
    let started = Instant::now();
    supervised.start();
    let (spawned_at, _) = wait_new_pid(supervised, None).await?;
    let (running_at, status) = supervised
        .wait_status(COLD_START, |status| status.state == LifecycleState::Running)
        .await?;
    let ready_at = watch.wait_200_after(spawned_at, COLD_START).await?;
    let sample = RealStart {
        start_to_running_ms: ms_between(started, running_at),
        start_to_spawned_ms: ms_between(started, spawned_at),
        gateway_own_ms: ms_between(spawned_at, ready_at),
        startupz_to_running_ms: signed_ms(ready_at, running_at),
        overhead_ms: ms_between(started, running_at) - ms_between(spawned_at, ready_at),
    };
    eprintln!(
        "  real start: {:.0} ms to running, gateway's own {:.0} ms, /startupz 200 -> running {:+.1} ms",
        sample.start_to_running_ms, sample.gateway_own_ms, sample.startupz_to_running_ms
    );
    Ok((sample, status))
}

/// `to − from` in ms, negative when `to` came first.
fn signed_ms(from: Instant, to: Instant) -> f64 {
    if to >= from {
        ms_between(from, to)
    } else {
        -ms_between(to, from)
    }
}

async fn one_reload(
    supervised: &mut Supervised,
    watch: &StartupzWatch,
    before: &Status,
) -> anyhow::Result<RealReload> {
    let old_boot = before.boot_id.clone();
    let old_pid = before.pid;
    // Only a settled gateway: a reload inside its startup window is not what this measures.
    watch.wait_200_after(Instant::now(), COLD_START).await?;
    let sent_at = Instant::now();
    let outcome = tokio::time::timeout(COLD_START * 2, supervised.supervisor.send(Reload))
        .await
        .context("Reload not answered")?
        .context("supervisor stopped")?;
    if outcome != CommandOutcome::Completed {
        bail!("Reload answered {outcome:?}");
    }
    // Statuses published since the request, in order, up to running on a new boot.
    let mut down_at = None;
    let (back_at, after) = loop {
        let (at, event) = tokio::time::timeout(COLD_START, supervised.events.recv())
            .await
            .context("no running status on the new boot")?
            .ok_or_else(|| anyhow!("event channel closed"))?;
        let GatewayEvent::Status(status) = event else {
            continue;
        };
        if at < sent_at {
            continue;
        }
        if status.state != LifecycleState::Running {
            down_at.get_or_insert(at);
        } else if status.boot_id.is_some() && status.boot_id != old_boot {
            break (at, status);
        }
    };
    let gap = watch.wait_gap(sent_at, back_at).await;
    let sample = RealReload {
        outcome: format!("{outcome:?}"),
        reload_to_running_ms: ms_between(sent_at, back_at),
        published_downtime_ms: down_at.map(|down| ms_between(down, back_at)),
        gateway_probe_gap_ms: gap.map(|(last, first)| ms_between(last, first)),
        startupz_to_running_ms: gap.map(|(_, first)| signed_ms(first, back_at)),
        same_pid: after.pid == old_pid,
    };
    eprintln!(
        "  real reload: {:.0} ms to running, published downtime {:?} ms, gateway gap {:?} ms",
        sample.reload_to_running_ms, sample.published_downtime_ms, sample.gateway_probe_gap_ms
    );
    Ok(sample)
}

async fn one_kill(
    supervised: &mut Supervised,
    watch: &StartupzWatch,
    before: &Status,
    stable_uptime_ms: u64,
) -> anyhow::Result<(RealRecovery, Status)> {
    let old_pid = before.pid.ok_or_else(|| anyhow!("running without a pid"))?;
    // N5: an isolated crash after a stable run, as in scenario `recovery`: a kill right after
    // the reload's reconnect would be measured with the backoff of an unstable gateway.
    tokio::time::sleep(Duration::from_millis(stable_uptime_ms + 1_000)).await;
    let killed_at = Instant::now();
    kill(Pid::from_raw(old_pid as i32), Signal::SIGKILL).context("SIGKILL")?;
    let (spawned_at, _) = wait_new_pid(supervised, Some(old_pid)).await?;
    let (running_at, status) = supervised
        .wait_status(COLD_START, |status| {
            status.state == LifecycleState::Running && status.pid != Some(old_pid)
        })
        .await?;
    // Counting from the spawn: the killed gateway cannot answer after it, the new one is not
    // listening before it.
    let ready_at = watch.wait_200_after(spawned_at, COLD_START).await?;
    let own = ms_between(spawned_at, ready_at);
    let sample = RealRecovery {
        kill_to_running_ms: ms_between(killed_at, running_at),
        kill_to_spawned_ms: ms_between(killed_at, spawned_at),
        gateway_own_ms: own,
        overhead_ms: ms_between(killed_at, running_at) - own,
    };
    eprintln!(
        "  real kill: {:.0} ms to running, gateway's own {:.0} ms, overhead {:.1} ms",
        sample.kill_to_running_ms, sample.gateway_own_ms, sample.overhead_ms
    );
    Ok((sample, status))
}

/// Run `real`: one supervisor per start sample; the first also does the reloads and the kills.
pub async fn run(plan: &Plan) -> anyhow::Result<RealResult> {
    let install = install().map_err(|reason| anyhow!("the real gateway: {reason}"))?;
    let mut starts = Vec::new();
    let mut reloads = Vec::new();
    let mut recoveries = Vec::new();
    let mut version = None;
    for index in 0..plan.real_starts.max(1) {
        let state_dir = tempfile::tempdir()?;
        let options = options(&install, state_dir.path())?;
        let stable_uptime_ms = options.core.reconnect.stable_uptime_ms;
        let watch = StartupzWatch::start(options.core.port)?;
        let mut supervised = Supervised::new(options);
        supervised.status().await?;
        let outcome = async {
            let (sample, mut status) = one_start(&mut supervised, &watch).await?;
            starts.push(sample);
            if version.is_none() {
                version = status.version.clone();
            }
            if index == 0 {
                for _ in 0..plan.real_reloads {
                    let sample = one_reload(&mut supervised, &watch, &status).await?;
                    reloads.push(sample);
                    status = supervised.status().await?;
                }
                for _ in 0..plan.real_kills {
                    let (sample, after) =
                        one_kill(&mut supervised, &watch, &status, stable_uptime_ms).await?;
                    recoveries.push(sample);
                    status = after;
                }
            }
            anyhow::Ok(())
        }
        .await;
        supervised.stop().await;
        outcome?;
    }
    let median_of = |values: Vec<f64>| median(&values).unwrap_or(f64::NAN);
    Ok(RealResult {
        node: install.node.display().to_string(),
        entry: install.entry.display().to_string(),
        version,
        poll_interval_ms: POLL.as_millis() as u64,
        median_start_overhead_ms: median_of(starts.iter().map(|s| s.overhead_ms).collect()),
        median_startupz_to_running_ms: median_of(
            starts.iter().map(|s| s.startupz_to_running_ms).collect(),
        ),
        median_reload_downtime_ms: median_of(
            reloads
                .iter()
                .filter_map(|r| r.published_downtime_ms)
                .collect(),
        ),
        median_reload_gateway_gap_ms: median_of(
            reloads
                .iter()
                .filter_map(|r| r.gateway_probe_gap_ms)
                .collect(),
        ),
        median_kill_to_running_ms: median_of(
            recoveries.iter().map(|r| r.kill_to_running_ms).collect(),
        ),
        median_kill_overhead_ms: median_of(recoveries.iter().map(|r| r.overhead_ms).collect()),
        starts,
        reloads,
        recoveries,
    })
}
