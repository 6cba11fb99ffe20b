//! Turning scenario results into rows (value, in-run baseline, ratio, target), medians over runs,
//! the printed table, results.json and the SVG plots.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;

use crate::scenarios::cost::{RestResult, ScaleResult};
use crate::scenarios::lifecycle::{HangResult, RecoveryResult, StartupResult};
use crate::scenarios::real::RealResult;
use crate::scenarios::rpc::RpcResult;
use crate::stats::median;
use crate::svg::{Chart, Line};

/// Everything one run of the harness measured (a scenario not selected is `None`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunResults {
    pub rpc: Option<RpcResult>,
    pub startup: Option<StartupResult>,
    /// The same, in a process holding `startup_ballast_mib` of memory.
    pub startup_large_parent: Option<StartupResult>,
    pub recovery: Option<RecoveryResult>,
    pub hang: Option<HangResult>,
    pub rest: Option<RestResult>,
    pub scale: Option<ScaleResult>,
    pub real: Option<RealResult>,
}

/// A target of issue 7.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(tag = "kind", content = "limit", rename_all = "camelCase")]
pub enum Target {
    /// The value must be at most this.
    ValueAtMost(f64),
    /// value / baseline must be at least this.
    RatioAtLeast(f64),
    /// value / baseline must be at most this.
    RatioAtMost(f64),
}

impl Target {
    fn met(self, value: f64, ratio: Option<f64>) -> bool {
        match self {
            Target::ValueAtMost(limit) => value <= limit,
            Target::RatioAtLeast(limit) => ratio.is_some_and(|r| r >= limit),
            Target::RatioAtMost(limit) => ratio.is_some_and(|r| r <= limit),
        }
    }

    fn describe(self, unit: &str) -> String {
        match self {
            Target::ValueAtMost(limit) => format!("<= {limit} {unit}"),
            Target::RatioAtLeast(limit) => format!("ratio >= {limit}"),
            Target::RatioAtMost(limit) => format!("ratio <= {limit}"),
        }
    }
}

/// One measured quantity of one run.
#[derive(Debug, Clone)]
struct Row {
    key: String,
    unit: &'static str,
    value: f64,
    baseline: Option<f64>,
    baseline_name: &'static str,
    target: Option<Target>,
}

/// One quantity, median over runs.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub key: String,
    pub unit: &'static str,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: usize,
    pub baseline_name: &'static str,
    pub baseline_median: Option<f64>,
    /// Median over runs of value / baseline taken in the same run.
    pub ratio_median: Option<f64>,
    pub target: Option<Target>,
    pub target_text: Option<String>,
    pub met: Option<bool>,
}

fn row(key: impl Into<String>, unit: &'static str, value: f64) -> Row {
    Row {
        key: key.into(),
        unit,
        value,
        baseline: None,
        baseline_name: "",
        target: None,
    }
}

impl Row {
    fn vs(mut self, name: &'static str, baseline: f64) -> Self {
        self.baseline_name = name;
        self.baseline = Some(baseline);
        self
    }
    fn target(mut self, target: Target) -> Self {
        self.target = Some(target);
        self
    }
}

fn rows(run: &RunResults) -> Vec<Row> {
    let mut rows = Vec::new();
    if let Some(rpc) = &run.rpc {
        for level in &rpc.levels {
            let n = level.in_flight;
            let mut throughput = row(
                format!("rpc.in_flight_{n}.throughput"),
                "req/s",
                level.actor.throughput_per_s,
            )
            .vs("raw awc", level.raw.throughput_per_s);
            if n == 256 {
                throughput = throughput.target(Target::RatioAtLeast(0.8));
            }
            rows.push(throughput);
            rows.push(
                row(format!("rpc.in_flight_{n}.p50"), "ms", level.actor.p50_ms)
                    .vs("raw awc", level.raw.p50_ms),
            );
            let mut p99 = row(format!("rpc.in_flight_{n}.p99"), "ms", level.actor.p99_ms)
                .vs("raw awc", level.raw.p99_ms);
            if n == 1 {
                p99 = p99.target(Target::RatioAtMost(1.5));
            }
            rows.push(p99);
            rows.push(
                row(
                    format!("rpc.in_flight_{n}.client_cpu_per_call"),
                    "us",
                    level.actor.client_cpu_us_per_call,
                )
                .vs("raw awc", level.raw.client_cpu_us_per_call),
            );
            rows.push(
                row(
                    format!("rpc.in_flight_{n}.gateway_cpu_per_call"),
                    "us",
                    level.actor.gateway_cpu_us_per_call,
                )
                .vs("raw awc", level.raw.gateway_cpu_us_per_call),
            );
            if let Some(client) = &level.client {
                let mut throughput = row(
                    format!("rpc.client.in_flight_{n}.throughput"),
                    "req/s",
                    client.throughput_per_s,
                )
                .vs("raw awc", level.raw.throughput_per_s);
                if n == 256 {
                    throughput = throughput.target(Target::RatioAtLeast(0.8));
                }
                rows.push(throughput);
                let mut p99 = row(format!("rpc.client.in_flight_{n}.p99"), "ms", client.p99_ms)
                    .vs("raw awc", level.raw.p99_ms);
                if n == 1 {
                    p99 = p99.target(Target::RatioAtMost(1.5));
                }
                rows.push(p99);
                rows.push(
                    row(
                        format!("rpc.client.in_flight_{n}.client_cpu_per_call"),
                        "us",
                        client.client_cpu_us_per_call,
                    )
                    .vs("raw awc", level.raw.client_cpu_us_per_call),
                );
            }
            if let Some(handle) = &level.handle {
                let mut throughput = row(
                    format!("rpc.handle.in_flight_{n}.throughput"),
                    "req/s",
                    handle.throughput_per_s,
                )
                .vs("raw awc", level.raw.throughput_per_s);
                if n == 256 {
                    throughput = throughput.target(Target::RatioAtLeast(0.8));
                }
                rows.push(throughput);
                rows.push(
                    row(format!("rpc.handle.in_flight_{n}.p99"), "ms", handle.p99_ms)
                        .vs("raw awc", level.raw.p99_ms),
                );
                rows.push(
                    row(
                        format!("rpc.handle.in_flight_{n}.client_cpu_per_call"),
                        "us",
                        handle.client_cpu_us_per_call,
                    )
                    .vs("raw awc", level.raw.client_cpu_us_per_call),
                );
            }
        }
    }
    if let Some(startup) = &run.startup {
        let warm_median = |field: fn(&crate::scenarios::lifecycle::StartupSample) -> f64| {
            median(&startup.warm.iter().map(field).collect::<Vec<_>>()).unwrap_or(f64::NAN)
        };
        rows.push(
            row(
                "startup.start_to_running",
                "ms",
                startup.median_start_to_running_ms,
            )
            .vs("sim own start", startup.median_sim_own_start_ms),
        );
        rows.push(
            row("startup.overhead", "ms", startup.overhead_ms).target(Target::ValueAtMost(5.0)),
        );
        rows.push(row(
            "startup.overhead_incl_exec",
            "ms",
            startup.overhead_incl_exec_ms,
        ));
        rows.push(row(
            "startup.start_to_sim_main",
            "ms",
            warm_median(|s| s.start_to_sim_main_ms),
        ));
        rows.push(row(
            "startup.sim_main_to_listen",
            "ms",
            warm_median(|s| s.sim_main_to_listen_ms),
        ));
        rows.push(row(
            "startup.listen_to_running",
            "ms",
            warm_median(|s| s.listen_to_running_ms),
        ));
        rows.push(row(
            "startup.cold_first_start",
            "ms",
            startup.cold.start_to_running_ms,
        ));
        if let Some(large) = &run.startup_large_parent {
            let mib = large.parent_ballast_mib;
            rows.push(
                row(
                    format!("startup.overhead_{mib}mib_parent"),
                    "ms",
                    large.overhead_ms,
                )
                .vs("small parent", startup.overhead_ms),
            );
            rows.push(
                row(
                    format!("startup.start_to_sim_main_{mib}mib_parent"),
                    "ms",
                    crate::scenarios::lifecycle::median_start_to_sim_main(large),
                )
                .vs(
                    "small parent",
                    crate::scenarios::lifecycle::median_start_to_sim_main(startup),
                ),
            );
        }
    }
    if let Some(recovery) = &run.recovery {
        rows.push(
            row(
                "recovery.kill_to_running",
                "ms",
                recovery.median_kill_to_running_ms,
            )
            .vs("sim own start", recovery.median_sim_own_start_ms),
        );
        rows.push(
            row("recovery.overhead", "ms", recovery.overhead_ms).target(Target::ValueAtMost(20.0)),
        );
        let noticed = median(
            &recovery
                .samples
                .iter()
                .map(|s| s.kill_to_noticed_ms)
                .collect::<Vec<_>>(),
        );
        rows.push(row(
            "recovery.kill_to_noticed",
            "ms",
            noticed.unwrap_or(f64::NAN),
        ));
        for (index, delay) in recovery.crash_loop.delay_per_attempt_ms.iter().enumerate() {
            let nominal = recovery
                .crash_loop
                .nominal_delay_ms
                .get(index)
                .copied()
                .unwrap_or(f64::NAN);
            rows.push(
                row(
                    format!("recovery.crash_loop.attempt_{}_delay", index + 1),
                    "ms",
                    *delay,
                )
                .vs("nominal N2 delay", nominal),
            );
        }
    }
    if let Some(hang) = &run.hang {
        rows.push(
            row(
                "hang.sigstop_to_restart_decided",
                "ms",
                hang.median_stop_to_decision_ms,
            )
            .vs("(max_misses+1) x interval", hang.bound_ms as f64)
            .target(Target::RatioAtMost(1.0)),
        );
        let visible: Vec<f64> = hang
            .samples
            .iter()
            .filter_map(|s| s.stop_to_status_change_ms)
            .collect();
        if let Some(visible) = median(&visible) {
            rows.push(row("hang.sigstop_to_status_change", "ms", visible).vs(
                "bound + kill grace",
                (hang.bound_ms + hang.kill_grace_ms) as f64,
            ));
        }
    }
    if let Some(rest) = &run.rest {
        rows.push(
            row(
                "rest.rss_idle_1_gateway",
                "MiB",
                rest.rss_idle_kib as f64 / 1024.0,
            )
            .vs(
                "process before any actor",
                rest.rss_process_base_kib as f64 / 1024.0,
            )
            .target(Target::ValueAtMost(8.0)),
        );
        rows.push(row(
            "rest.cpu_idle_1_gateway",
            "% core",
            rest.idle_cpu_percent,
        ));
        if let Some(last) = rest.pending.last() {
            rows.push(
                row(
                    format!("rest.rss_{}_pending", last.pending),
                    "MiB",
                    last.rss_kib as f64 / 1024.0,
                )
                .vs("idle", rest.rss_idle_kib as f64 / 1024.0),
            );
        }
        rows.push(row(
            "rest.bytes_per_pending_rpc",
            "B",
            rest.bytes_per_pending,
        ));
    }
    if let Some(scale) = &run.scale {
        rows.push(
            row(
                "scale.rss_per_extra_gateway",
                "KiB",
                scale.rss_per_extra_gateway_kib,
            )
            .target(Target::ValueAtMost(300.0)),
        );
        if let Some(largest) = scale.points.iter().max_by_key(|p| p.gateways) {
            let n = largest.gateways;
            rows.push(row(
                format!("scale.rss_{n}_gateways"),
                "MiB",
                largest.rss_kib as f64 / 1024.0,
            ));
            rows.push(
                row(
                    format!("scale.cpu_idle_{n}_gateways"),
                    "% core",
                    largest.idle_cpu_percent,
                )
                .target(Target::ValueAtMost(0.5)),
            );
            rows.push(
                row(
                    format!("scale.all_{n}_running"),
                    "ms",
                    largest.all_running_ms,
                )
                .target(Target::ValueAtMost(2000.0)),
            );
            rows.push(row(
                format!("scale.median_{n}_start_to_running"),
                "ms",
                largest.median_running_ms,
            ));
        }
    }
    if let Some(real) = &run.real {
        let median_of = |values: Vec<f64>| median(&values).unwrap_or(f64::NAN);
        let own_start = median_of(real.starts.iter().map(|s| s.gateway_own_ms).collect());
        let to_running = median_of(real.starts.iter().map(|s| s.start_to_running_ms).collect());
        rows.push(
            row("real.start_to_running", "ms", to_running)
                .vs("gateway's own spawn to /startupz 200", own_start),
        );
        rows.push(row(
            "real.start_overhead",
            "ms",
            real.median_start_overhead_ms,
        ));
        rows.push(row(
            "real.startupz_200_to_running",
            "ms",
            real.median_startupz_to_running_ms,
        ));
        if !real.reloads.is_empty() {
            rows.push(
                row("real.reload_downtime", "ms", real.median_reload_downtime_ms).vs(
                    "gateway's own /startupz gap",
                    real.median_reload_gateway_gap_ms,
                ),
            );
            let to_running = median_of(
                real.reloads
                    .iter()
                    .map(|r| r.reload_to_running_ms)
                    .collect(),
            );
            rows.push(row("real.reload_to_running", "ms", to_running));
        }
        if !real.recoveries.is_empty() {
            let own = median_of(real.recoveries.iter().map(|r| r.gateway_own_ms).collect());
            rows.push(
                row("real.kill_to_running", "ms", real.median_kill_to_running_ms)
                    .vs("gateway's own spawn to /startupz 200", own),
            );
            rows.push(row(
                "real.kill_overhead",
                "ms",
                real.median_kill_overhead_ms,
            ));
        }
    }
    rows
}

/// Medians over runs of every row, in first-seen order.
pub fn summarize(runs: &[RunResults]) -> Vec<Summary> {
    let mut order: Vec<String> = Vec::new();
    let mut grouped: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    for run in runs {
        for row in rows(run) {
            if !grouped.contains_key(&row.key) {
                order.push(row.key.clone());
            }
            grouped.entry(row.key.clone()).or_default().push(row);
        }
    }
    order
        .into_iter()
        .filter_map(|key| {
            let group = grouped.remove(&key)?;
            let first = group.first()?.clone();
            let values: Vec<f64> = group.iter().map(|r| r.value).collect();
            let baselines: Vec<f64> = group.iter().filter_map(|r| r.baseline).collect();
            let ratios: Vec<f64> = group
                .iter()
                .filter_map(|r| r.baseline.map(|b| r.value / b))
                .collect();
            let value = median(&values).unwrap_or(f64::NAN);
            let ratio = median(&ratios);
            Some(Summary {
                unit: first.unit,
                median: value,
                min: values.iter().copied().fold(f64::INFINITY, f64::min),
                max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                runs: values.len(),
                baseline_name: first.baseline_name,
                baseline_median: median(&baselines),
                ratio_median: ratio,
                target: first.target,
                target_text: first.target.map(|t| t.describe(first.unit)),
                met: first.target.map(|t| t.met(value, ratio)),
                key,
            })
        })
        .collect()
}

fn number(value: f64) -> String {
    if !value.is_finite() {
        "-".into()
    } else if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

/// The table printed at the end (and pasted into docs/PERFORMANCE.md).
pub fn table(summaries: &[Summary]) -> String {
    let mut out = String::new();
    out.push_str("| metric | median | unit | runs | min..max | baseline (same run) | ratio | target | met |\n");
    out.push_str("|---|---:|---|---:|---|---|---:|---|---|\n");
    for s in summaries {
        let baseline = match s.baseline_median {
            Some(b) => format!("{}: {}", s.baseline_name, number(b)),
            None => String::new(),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {}..{} | {} | {} | {} | {} |\n",
            s.key,
            number(s.median),
            s.unit,
            s.runs,
            number(s.min),
            number(s.max),
            baseline,
            s.ratio_median.map(number).unwrap_or_default(),
            s.target_text.clone().unwrap_or_default(),
            match s.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "",
            }
        ));
    }
    out
}

/// (chart, line) → x → values over runs.
type SeriesMap = BTreeMap<(&'static str, String), BTreeMap<u64, Vec<f64>>>;

fn add(series: &mut SeriesMap, chart: &'static str, line: &str, x: f64, y: f64) {
    series
        .entry((chart, line.to_string()))
        .or_default()
        .entry(x.to_bits())
        .or_default()
        .push(y);
}

/// The curves of issue 7 §7, medians per x over runs.
pub fn series(runs: &[RunResults]) -> BTreeMap<(&'static str, String), Vec<(f64, f64)>> {
    let mut series = SeriesMap::new();
    for run in runs {
        if let Some(rpc) = &run.rpc {
            for level in &rpc.levels {
                let x = level.in_flight as f64;
                add(
                    &mut series,
                    "rpc_latency",
                    "actor p50",
                    x,
                    level.actor.p50_ms,
                );
                add(
                    &mut series,
                    "rpc_latency",
                    "actor p99",
                    x,
                    level.actor.p99_ms,
                );
                add(&mut series, "rpc_latency", "raw p50", x, level.raw.p50_ms);
                add(&mut series, "rpc_latency", "raw p99", x, level.raw.p99_ms);
                add(
                    &mut series,
                    "rpc_throughput",
                    "actor",
                    x,
                    level.actor.throughput_per_s,
                );
                add(
                    &mut series,
                    "rpc_throughput",
                    "raw awc",
                    x,
                    level.raw.throughput_per_s,
                );
            }
        }
        if let Some(rest) = &run.rest {
            for point in &rest.pending {
                add(
                    &mut series,
                    "memory_pending",
                    "supervisor RSS",
                    point.pending as f64,
                    point.rss_kib as f64 / 1024.0,
                );
            }
        }
        if let Some(scale) = &run.scale {
            for point in &scale.points {
                let x = point.gateways as f64;
                add(
                    &mut series,
                    "scale_memory",
                    "RSS",
                    x,
                    point.rss_kib as f64 / 1024.0,
                );
                add(
                    &mut series,
                    "scale_cpu",
                    "idle CPU",
                    x,
                    point.idle_cpu_percent,
                );
                add(
                    &mut series,
                    "scale_startup",
                    "all running",
                    x,
                    point.all_running_ms,
                );
                add(
                    &mut series,
                    "scale_startup",
                    "median gateway",
                    x,
                    point.median_running_ms,
                );
            }
        }
        if let Some(recovery) = &run.recovery {
            for (index, delay) in recovery.crash_loop.delay_per_attempt_ms.iter().enumerate() {
                add(
                    &mut series,
                    "backoff",
                    "measured",
                    (index + 1) as f64,
                    *delay,
                );
            }
            for (index, delay) in recovery.crash_loop.nominal_delay_ms.iter().enumerate() {
                add(
                    &mut series,
                    "backoff",
                    "nominal (no jitter)",
                    (index + 1) as f64,
                    *delay,
                );
            }
        }
    }
    series
        .into_iter()
        .map(|(key, points)| {
            let points = points
                .into_iter()
                .filter_map(|(x, ys)| Some((f64::from_bits(x), median(&ys)?)))
                .collect();
            (key, points)
        })
        .collect()
}

/// Write one SVG per chart that has data.
pub fn write_charts(
    out: &Path,
    series: &BTreeMap<(&'static str, String), Vec<(f64, f64)>>,
) -> anyhow::Result<Vec<String>> {
    let specs: [(&str, &str, &str, &str, bool, bool); 7] = [
        (
            "rpc_latency",
            "Echo latency vs calls in flight",
            "calls in flight",
            "latency (ms)",
            true,
            true,
        ),
        (
            "rpc_throughput",
            "Echo throughput vs calls in flight",
            "calls in flight",
            "requests / s",
            true,
            false,
        ),
        (
            "memory_pending",
            "Supervisor RSS vs pending RPCs",
            "pending sleep RPCs",
            "RSS (MiB)",
            false,
            false,
        ),
        (
            "scale_memory",
            "Supervisor RSS vs supervised gateways",
            "gateways",
            "RSS (MiB)",
            false,
            false,
        ),
        (
            "scale_cpu",
            "Idle CPU vs supervised gateways",
            "gateways",
            "% of one core",
            false,
            false,
        ),
        (
            "scale_startup",
            "Time to running vs supervised gateways",
            "gateways",
            "ms after all Starts",
            false,
            false,
        ),
        (
            "backoff",
            "Crash loop: delay before each restart",
            "attempt",
            "delay (ms)",
            false,
            false,
        ),
    ];
    let mut written = Vec::new();
    for (id, title, x_label, y_label, log_x, log_y) in specs {
        let lines: Vec<Line> = series
            .iter()
            .filter(|((chart, _), _)| *chart == id)
            .map(|((_, name), points)| Line {
                name: name.clone(),
                points: points.clone(),
            })
            .collect();
        if lines.is_empty() {
            continue;
        }
        let chart = Chart {
            title: title.to_string(),
            x_label: x_label.to_string(),
            y_label: y_label.to_string(),
            log_x,
            log_y,
            lines,
        };
        let path = out.join(format!("{id}.svg"));
        std::fs::write(&path, chart.render())
            .with_context(|| format!("writing {}", path.display()))?;
        written.push(path.display().to_string());
    }
    Ok(written)
}
