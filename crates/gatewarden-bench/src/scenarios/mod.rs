//! The scenarios of issue 7 and how big each one runs (`--smoke`, `--quick`, full).

pub mod cost;
pub mod lifecycle;
pub mod real;
pub mod rpc;

use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};

/// How much of everything to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Tiny runs, no timing claims: CI keeps the harness building and running.
    pub smoke: bool,
    pub rpc_levels: Vec<usize>,
    pub rpc_rounds: usize,
    pub rpc_warmup: Duration,
    pub rpc_measure: Duration,
    /// How the actor-path calls are issued.
    pub rpc_callers: crate::load::Callers,
    /// The supervisor's `rpc.read_batch` in the `rpc` scenario (`None`: its default).
    pub rpc_read_batch: Option<std::num::NonZeroUsize>,
    pub startup_samples: usize,
    /// Touched memory of the second startup child (an embedding app's heap), MiB.
    pub startup_ballast_mib: usize,
    pub recovery_gateways: usize,
    /// `None`: the default `reconnect.stable_uptime_ms` (10 s). Smoke shortens it.
    pub recovery_stable_uptime_ms: Option<u64>,
    pub crash_loop: Duration,
    pub hang_samples: usize,
    pub rest_idle: Duration,
    pub rest_pending_levels: Vec<usize>,
    pub scale_counts: Vec<usize>,
    pub scale_idle: Duration,
    pub scale_idle_largest: Duration,
    /// `real`: supervisors started (one start each); the first also reloads and is killed.
    pub real_starts: usize,
    pub real_reloads: usize,
    pub real_kills: usize,
}

impl Plan {
    /// The full plan: what docs/PERFORMANCE.md reports.
    pub fn full() -> Self {
        Plan {
            smoke: false,
            rpc_levels: vec![1, 16, 256, 4096],
            rpc_rounds: 3,
            rpc_warmup: Duration::from_millis(300),
            rpc_measure: Duration::from_secs(2),
            rpc_callers: crate::load::Callers::Tasks,
            rpc_read_batch: None,
            startup_samples: 15,
            startup_ballast_mib: 256,
            recovery_gateways: 6,
            recovery_stable_uptime_ms: None,
            crash_loop: Duration::from_secs(20),
            hang_samples: 5,
            rest_idle: Duration::from_secs(60),
            rest_pending_levels: vec![0, 100, 1_000, 2_500, 5_000, 10_000],
            scale_counts: vec![1, 10, 50, 100],
            scale_idle: Duration::from_secs(15),
            scale_idle_largest: Duration::from_secs(30),
            real_starts: 3,
            real_reloads: 2,
            real_kills: 2,
        }
    }

    /// `--quick`: the same scenarios, fewer samples and 10 s idle windows.
    pub fn quick() -> Self {
        Plan {
            rpc_rounds: 2,
            rpc_measure: Duration::from_secs(1),
            startup_samples: 7,
            recovery_gateways: 3,
            crash_loop: Duration::from_secs(8),
            hang_samples: 3,
            rest_idle: Duration::from_secs(10),
            scale_counts: vec![1, 25, 100],
            scale_idle: Duration::from_secs(5),
            scale_idle_largest: Duration::from_secs(10),
            real_starts: 1,
            real_reloads: 1,
            real_kills: 1,
            ..Plan::full()
        }
    }

    /// `--smoke`: every scenario, tiny.
    pub fn smoke() -> Self {
        Plan {
            smoke: true,
            rpc_levels: vec![1, 16, 256, 4096],
            rpc_rounds: 1,
            rpc_warmup: Duration::from_millis(50),
            rpc_measure: Duration::from_millis(200),
            rpc_callers: crate::load::Callers::Tasks,
            rpc_read_batch: None,
            startup_samples: 2,
            startup_ballast_mib: 32,
            recovery_gateways: 1,
            recovery_stable_uptime_ms: Some(300),
            crash_loop: Duration::from_millis(2_500),
            hang_samples: 1,
            rest_idle: Duration::from_secs(1),
            rest_pending_levels: vec![0, 200],
            scale_counts: vec![1, 3],
            scale_idle: Duration::from_secs(1),
            scale_idle_largest: Duration::from_secs(1),
            real_starts: 1,
            real_reloads: 1,
            real_kills: 1,
        }
    }
}

/// Run this binary as a child (the hidden `--child` flag) and parse the JSON line it prints
/// last: the measurements that need a fresh process of their own.
pub async fn run_child<T: serde::de::DeserializeOwned>(
    args: &[String],
    limit: Duration,
) -> anyhow::Result<T> {
    let exe = std::env::current_exe().context("locating this binary")?;
    let mut command = tokio::process::Command::new(exe);
    command
        .args(args)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    let output = tokio::time::timeout(limit, command.output())
        .await
        .with_context(|| format!("child {args:?} took longer than {} s", limit.as_secs()))?
        .context("running the child")?;
    if !output.status.success() {
        bail!("child {args:?} failed with {}", output.status);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|line| line.starts_with('{'))
        .ok_or_else(|| anyhow!("child {args:?} printed no result"))?;
    serde_json::from_str(line).with_context(|| format!("parsing the child's result: {line}"))
}
