//! Scenarios `rest` and `scale`: memory and CPU of the supervising process. Each measurement runs
//! in a fresh child process (this binary with the hidden `--child` flag), so the RSS is that of a
//! process that supervises and does nothing else, not of a harness that just pushed a million RPCs.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::fixture::{ms_between, options, Supervised};
use crate::procfs::{cpu_micros, peak_rss_kib, proc_stat_ticks, rss_kib};
use crate::scenarios::{run_child, Plan};
use crate::stats::median;

const WAIT: Duration = Duration::from_secs(60);

/// Settling time before an RSS reading: the start flow's buffers are freed, sockets idle.
const SETTLE: Duration = Duration::from_secs(2);

/// RSS at one number of pending calls.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingPoint {
    pub pending: usize,
    pub rss_kib: u64,
}

/// What the `rest` child measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestResult {
    /// The child before it started any actor (runtime, binary, allocator).
    pub rss_process_base_kib: u64,
    /// Supervising one running sim, idle.
    pub rss_idle_kib: u64,
    pub idle_seconds: f64,
    /// CPU over the idle window, % of one core (getrusage).
    pub idle_cpu_percent: f64,
    /// The same from /proc/self/stat utime+stime ticks (10 ms resolution).
    pub idle_cpu_ticks: u64,
    pub pending: Vec<PendingPoint>,
    /// (RSS at the most pending − RSS at none) / most pending.
    pub bytes_per_pending: f64,
    pub peak_rss_kib: u64,
}

/// What one `scale` child measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScalePoint {
    pub gateways: usize,
    pub rss_process_base_kib: u64,
    pub rss_kib: u64,
    pub idle_seconds: f64,
    pub idle_cpu_percent: f64,
    /// All Starts sent → the last gateway `running`.
    pub all_running_ms: f64,
    /// Median over gateways of their own Start → running.
    pub median_running_ms: f64,
}

/// Scenario `scale`: one point per gateway count.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScaleResult {
    pub points: Vec<ScalePoint>,
    /// (RSS at the largest count − RSS at one) / (largest − 1).
    pub rss_per_extra_gateway_kib: f64,
}

/// Run `rest` in a child.
pub async fn rest(plan: &Plan) -> anyhow::Result<RestResult> {
    let levels: Vec<String> = plan
        .rest_pending_levels
        .iter()
        .map(ToString::to_string)
        .collect();
    let args = vec![
        "--child".to_string(),
        "rest".to_string(),
        "--idle-ms".to_string(),
        plan.rest_idle.as_millis().to_string(),
        "--pending-levels".to_string(),
        levels.join(","),
    ];
    run_child(&args, plan.rest_idle + Duration::from_secs(180)).await
}

/// Run `scale`: one child per gateway count.
pub async fn scale(plan: &Plan) -> anyhow::Result<ScaleResult> {
    let largest = plan.scale_counts.iter().copied().max().unwrap_or(1);
    let mut points = Vec::new();
    for &count in &plan.scale_counts {
        let idle = if count == largest {
            plan.scale_idle_largest
        } else {
            plan.scale_idle
        };
        let args = vec![
            "--child".to_string(),
            "scale".to_string(),
            "--idle-ms".to_string(),
            idle.as_millis().to_string(),
            "--gateways".to_string(),
            count.to_string(),
        ];
        let point: ScalePoint = run_child(&args, idle + Duration::from_secs(240)).await?;
        eprintln!(
            "  scale {count:>3}: rss {} KiB, cpu {:.3} %, all running in {:.0} ms",
            point.rss_kib, point.idle_cpu_percent, point.all_running_ms
        );
        points.push(point);
    }
    let rss_at = |count: usize| {
        points
            .iter()
            .find(|p| p.gateways == count)
            .map(|p| p.rss_kib as f64)
    };
    let rss_per_extra_gateway_kib = match (rss_at(1), rss_at(largest)) {
        (Some(one), Some(most)) if largest > 1 => (most - one) / (largest - 1) as f64,
        _ => f64::NAN,
    };
    Ok(ScaleResult {
        points,
        rss_per_extra_gateway_kib,
    })
}

/// CPU % of one core over `idle`, by getrusage and by /proc ticks.
async fn idle_cpu(idle: Duration) -> anyhow::Result<(f64, f64, u64)> {
    let (cpu_before, ticks_before, at) = (cpu_micros()?, proc_stat_ticks()?, Instant::now());
    tokio::time::sleep(idle).await;
    let (cpu_after, ticks_after) = (cpu_micros()?, proc_stat_ticks()?);
    let seconds = at.elapsed().as_secs_f64();
    let percent = (cpu_after - cpu_before) as f64 / 1e6 / seconds * 100.0;
    Ok((percent, seconds, ticks_after.saturating_sub(ticks_before)))
}

/// The `rest` child: one supervisor, idle, then loaded with pending `sleep` calls.
pub async fn rest_child(idle: Duration, pending_levels: &[usize]) -> anyhow::Result<RestResult> {
    let rss_process_base_kib = rss_kib()?;
    let state_dir = tempfile::tempdir()?;
    let mut supervised = Supervised::new(options(state_dir.path(), &[])?);
    let outcome = async {
        supervised.start_running(WAIT).await?;
        tokio::time::sleep(SETTLE).await;
        let rss_idle_kib = rss_kib()?;
        let (idle_cpu_percent, idle_seconds, idle_cpu_ticks) = idle_cpu(idle).await?;
        let mut pending = Vec::new();
        let mut issued = 0usize;
        for &level in pending_levels {
            while issued < level {
                // Each call is awaited by its own task, as an app awaiting many calls would.
                let call = supervised.supervisor.send(gatewarden::supervisor::Rpc {
                    method: "sleep".to_string(),
                    params: Some(json!({ "ms": 300_000 })),
                    timeout_ms: Some(600_000),
                });
                actix_rt::spawn(async move {
                    let _ = call.await;
                });
                issued += 1;
            }
            // The echo queues behind every sleep on the same path: when it returns, all of
            // them are pending at the gateway.
            tokio::task::yield_now().await;
            supervised
                .rpc("echo", Some(json!({"after": level})))
                .await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            pending.push(PendingPoint {
                pending: level,
                rss_kib: rss_kib()?,
            });
        }
        let bytes_per_pending = match (pending.first(), pending.last()) {
            (Some(first), Some(last)) if last.pending > first.pending => {
                (last.rss_kib as f64 - first.rss_kib as f64) * 1024.0
                    / (last.pending - first.pending) as f64
            }
            _ => f64::NAN,
        };
        anyhow::Ok(RestResult {
            rss_process_base_kib,
            rss_idle_kib,
            idle_seconds,
            idle_cpu_percent,
            idle_cpu_ticks,
            pending,
            bytes_per_pending,
            peak_rss_kib: peak_rss_kib()?,
        })
    }
    .await;
    supervised.stop().await;
    outcome
}

/// The `scale` child: `gateways` supervisors in one process, all started at once.
pub async fn scale_child(gateways: usize, idle: Duration) -> anyhow::Result<ScalePoint> {
    let rss_process_base_kib = rss_kib()?;
    let state_dir = tempfile::tempdir()?;
    let mut fleet = Vec::new();
    for index in 0..gateways {
        let dir = state_dir.path().join(format!("gw{index}"));
        fleet.push(Supervised::new(options(&dir, &[])?));
    }
    let outcome = async {
        for supervised in &fleet {
            supervised.status().await?;
        }
        let started = Instant::now();
        for supervised in &fleet {
            supervised.start();
        }
        let mut running_ms = Vec::new();
        for supervised in &mut fleet {
            let (at, _) = supervised
                .wait_status(WAIT, |status| {
                    status.state == gatewarden_core::machine::LifecycleState::Running
                })
                .await?;
            running_ms.push(ms_between(started, at));
        }
        let all_running_ms = running_ms.iter().copied().fold(0.0, f64::max);
        tokio::time::sleep(SETTLE).await;
        let rss = rss_kib()?;
        let (idle_cpu_percent, idle_seconds, _) = idle_cpu(idle).await?;
        anyhow::Ok(ScalePoint {
            gateways,
            rss_process_base_kib,
            rss_kib: rss,
            idle_seconds,
            idle_cpu_percent,
            all_running_ms,
            median_running_ms: median(&running_ms).unwrap_or(f64::NAN),
        })
    }
    .await;
    futures_util::future::join_all(fleet.iter().map(Supervised::stop)).await;
    outcome
}
