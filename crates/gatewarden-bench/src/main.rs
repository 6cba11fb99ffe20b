//! `gatewarden-bench`: the benchmark harness of issue 7. Runs the selected scenarios against
//! gatewarden-sim, prints a table and writes `results.json` and SVG plots.
//!
//! ```sh
//! CARGO_TARGET_DIR=target-bench cargo build --release -p gatewarden-bench -p gatewarden-sim
//! target-bench/release/gatewarden-bench --runs 3 --out docs/perf
//! ```
//!
//! # Layout
//!
//! - `scenarios/`: `rpc`, `lifecycle` (startup, recovery, hang), `cost` (rest, scale; these run in
//!   child processes of this binary, started with the hidden `--child` flag).
//! - `load`: the closed-loop load through the actor API; `raw`: the actor-free baseline client.
//! - `fixture`: supervisors on free ports with temp state dirs, timestamped status events.
//! - `report`, `svg`, `stats`, `procfs`: results, plots, medians, /proc readings.

mod fixture;
mod load;
mod procfs;
mod raw;
mod report;
mod scenarios;
mod stats;
mod svg;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;

use crate::report::RunResults;
use crate::scenarios::Plan;

const SCENARIOS: [&str; 7] = [
    "rpc", "startup", "recovery", "hang", "rest", "scale", "real",
];

/// Benchmarks of the gatewarden supervisor against gatewarden-sim.
#[derive(Debug, Parser)]
#[command(name = "gatewarden-bench")]
struct Cli {
    /// Fewer samples and 10 s idle windows (a few minutes instead of ~5 per run).
    #[arg(long)]
    quick: bool,
    /// Every scenario, tiny, no timing claims (CI): finishes in well under a minute.
    #[arg(long, conflicts_with = "quick")]
    smoke: bool,
    /// Run only these scenarios (rpc,startup,recovery,hang,rest,scale,real). By default every
    /// one, but `real` (the installed OpenClaw gateway) only when it is installed and not with
    /// --smoke; asked for by name, a missing install is an error.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Where results.json and the SVGs go (docs/perf; a temp dir with --smoke).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Repeat everything this many times; the table shows medians over runs.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Only these RPC in-flight levels (e.g. `256` to profile one level); default 1,16,256,4096.
    #[arg(long, value_delimiter = ',')]
    rpc_levels: Vec<usize>,
    /// Length of each measured RPC window in ms (default 2000, 1000 with --quick).
    #[arg(long)]
    rpc_measure_ms: Option<u64>,
    /// Rounds per RPC level (default 3, 2 with --quick). Each round measures every client once,
    /// starting with a different one; more, shorter rounds give steadier ratios on a noisy
    /// machine.
    #[arg(long)]
    rpc_rounds: Option<usize>,
    /// The supervisor's `rpc.read_batch` in the rpc scenario (default: the supervisor's own
    /// default), to sweep it.
    #[arg(long)]
    rpc_read_batch: Option<std::num::NonZeroUsize>,
    /// How the actor-path RPC load is issued: one task per call in flight, or one task with a
    /// FuturesUnordered (see docs/PERFORMANCE.md for why they differ at 4096).
    #[arg(long, value_enum, default_value_t = load::Callers::Tasks)]
    rpc_callers: load::Callers,
    /// Internal: run one measurement in this fresh process (`rest`, `scale` or `startup`).
    #[arg(long, hide = true)]
    child: Option<String>,
    #[arg(long, hide = true, default_value_t = 1_000)]
    idle_ms: u64,
    #[arg(long, hide = true, value_delimiter = ',')]
    pending_levels: Vec<usize>,
    #[arg(long, hide = true, default_value_t = 1)]
    gateways: usize,
    #[arg(long, hide = true, default_value_t = 15)]
    samples: usize,
    #[arg(long, hide = true, default_value_t = 0)]
    ballast_mib: usize,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("gatewarden-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(child) = &cli.child {
        return run_child(child, &cli);
    }
    let selected: Vec<&str> = if cli.only.is_empty() {
        let real = match scenarios::real::install() {
            Ok(_) if !cli.smoke => true,
            Ok(_) => {
                eprintln!("scenario real: not part of --smoke (a cold start takes seconds)");
                false
            }
            Err(reason) => {
                eprintln!("scenario real skipped: {reason}");
                false
            }
        };
        SCENARIOS
            .iter()
            .copied()
            .filter(|name| *name != "real" || real)
            .collect()
    } else {
        let mut selected = Vec::new();
        for name in &cli.only {
            match SCENARIOS.iter().find(|known| **known == name.as_str()) {
                Some(known) => selected.push(*known),
                None => bail!("unknown scenario {name:?} (known: {})", SCENARIOS.join(",")),
            }
        }
        selected
    };
    if cli.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let mut plan = if cli.smoke {
        Plan::smoke()
    } else if cli.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    if !cli.rpc_levels.is_empty() {
        if cli.rpc_levels.contains(&0) {
            bail!("--rpc-levels must be at least 1");
        }
        plan.rpc_levels = cli.rpc_levels.clone();
    }
    plan.rpc_callers = cli.rpc_callers;
    plan.rpc_read_batch = cli.rpc_read_batch;
    if let Some(rounds) = cli.rpc_rounds {
        if rounds == 0 {
            bail!("--rpc-rounds must be at least 1");
        }
        plan.rpc_rounds = rounds;
    }
    if let Some(ms) = cli.rpc_measure_ms {
        if ms == 0 {
            bail!("--rpc-measure-ms must be at least 1");
        }
        plan.rpc_measure = Duration::from_millis(ms);
    }
    let out = match &cli.out {
        Some(out) => out.clone(),
        None if cli.smoke => std::env::temp_dir().join("gatewarden-bench-smoke"),
        None => PathBuf::from("docs/perf"),
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    // Fail before minutes of work, not after: the sim must be there.
    fixture::sim_binary()?;
    let machine = procfs::machine();
    eprintln!(
        "machine: {} x {} | {} MiB | load {}",
        machine.nproc, machine.cpu_model, machine.mem_total_mib, machine.loadavg_at_start
    );

    let started = Instant::now();
    let mut runs = Vec::new();
    let system = actix_rt::System::new();
    for index in 0..cli.runs {
        eprintln!("run {}/{}", index + 1, cli.runs);
        let results = system.block_on(run_scenarios(&plan, &selected))?;
        runs.push(results);
    }

    let summaries = report::summarize(&runs);
    let table = report::table(&summaries);
    println!("{table}");
    let series = report::series(&runs);
    let charts = report::write_charts(&out, &series)?;
    let mode = if cli.smoke {
        "smoke"
    } else if cli.quick {
        "quick"
    } else {
        "full"
    };
    let document = serde_json::json!({
        "generatedUnixMs": fixture::unix_ms_f64() as u64,
        "command": std::env::args().collect::<Vec<_>>(),
        "mode": mode,
        "scenarios": selected,
        "wallSeconds": started.elapsed().as_secs_f64(),
        "machine": machine,
        "summary": summaries,
        "series": series.iter().map(|((chart, line), points)| serde_json::json!({
            "chart": chart, "line": line, "points": points,
        })).collect::<Vec<_>>(),
        "charts": charts,
        "runs": runs,
    });
    let path = out.join("results.json");
    std::fs::write(&path, serde_json::to_string_pretty(&document)?)
        .with_context(|| format!("writing {}", path.display()))?;
    let path = out.join("table.md");
    std::fs::write(&path, &table).with_context(|| format!("writing {}", path.display()))?;
    eprintln!(
        "wrote {} and {} plots in {:.0} s",
        out.join("results.json").display(),
        charts.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn run_scenarios(plan: &Plan, selected: &[&str]) -> anyhow::Result<RunResults> {
    let mut results = RunResults::default();
    for &name in selected {
        let at = Instant::now();
        eprintln!("- {name}");
        match name {
            "rpc" => results.rpc = Some(scenarios::rpc::run(plan).await.context("rpc")?),
            "startup" => {
                let (small, large) = scenarios::lifecycle::startup(plan)
                    .await
                    .context("startup")?;
                results.startup = Some(small);
                results.startup_large_parent = Some(large);
            }
            "recovery" => {
                results.recovery = Some(
                    scenarios::lifecycle::recovery(plan)
                        .await
                        .context("recovery")?,
                )
            }
            "hang" => results.hang = Some(scenarios::lifecycle::hang(plan).await.context("hang")?),
            "rest" => results.rest = Some(scenarios::cost::rest(plan).await.context("rest")?),
            "scale" => results.scale = Some(scenarios::cost::scale(plan).await.context("scale")?),
            "real" => results.real = Some(scenarios::real::run(plan).await.context("real")?),
            other => bail!("unknown scenario {other}"),
        }
        eprintln!("  ({:.1} s)", at.elapsed().as_secs_f64());
    }
    Ok(results)
}

/// The measurements that run in a process of their own (`rest`, `scale`, `startup`).
fn run_child(child: &str, cli: &Cli) -> anyhow::Result<()> {
    let idle = Duration::from_millis(cli.idle_ms);
    let system = actix_rt::System::new();
    let line = match child {
        "rest" => {
            let result = system.block_on(scenarios::cost::rest_child(idle, &cli.pending_levels))?;
            serde_json::to_string(&result)?
        }
        "scale" => {
            let result = system.block_on(scenarios::cost::scale_child(cli.gateways, idle))?;
            serde_json::to_string(&result)?
        }
        "startup" => {
            let result = system.block_on(scenarios::lifecycle::startup_child(
                cli.samples,
                cli.ballast_mib,
            ))?;
            serde_json::to_string(&result)?
        }
        other => bail!("unknown child {other:?}"),
    };
    println!("{line}");
    Ok(())
}
