//! Scenario `rpc`: echo throughput and latency through `Addr<Supervisor>` at several in-flight
//! counts, side by side with the raw awc client against the same sim in the same run.

use std::time::Duration;

use serde::Serialize;

use crate::fixture::{options, Supervised, TOKEN};
use crate::load::{actor_closed_loop, LoadSample};
use crate::raw::RawClient;
use crate::scenarios::Plan;
use crate::stats::median;

/// One in-flight level: the median over rounds of each client, and every round.
#[derive(Debug, Clone, Serialize)]
pub struct RpcLevel {
    pub in_flight: usize,
    pub actor: LoadSample,
    pub raw: LoadSample,
    pub rounds_actor: Vec<LoadSample>,
    pub rounds_raw: Vec<LoadSample>,
}

/// The whole scenario.
#[derive(Debug, Clone, Serialize)]
pub struct RpcResult {
    /// How the actor-path calls were issued.
    pub callers: crate::load::Callers,
    pub levels: Vec<RpcLevel>,
}

fn median_sample(in_flight: usize, samples: &[LoadSample]) -> LoadSample {
    let pick = |field: fn(&LoadSample) -> f64| {
        median(&samples.iter().map(field).collect::<Vec<_>>()).unwrap_or(f64::NAN)
    };
    LoadSample {
        in_flight,
        completed: samples.iter().map(|s| s.completed).sum(),
        failures: samples.iter().map(|s| s.failures).sum(),
        throughput_per_s: pick(|s| s.throughput_per_s),
        p50_ms: pick(|s| s.p50_ms),
        p99_ms: pick(|s| s.p99_ms),
        answered_total: samples.iter().map(|s| s.answered_total).sum(),
        client_cpu_us_per_call: pick(|s| s.client_cpu_us_per_call),
        gateway_cpu_us_per_call: pick(|s| s.gateway_cpu_us_per_call),
    }
}

/// Run it. Rounds alternate which client goes first, so a drift in machine load does not favour
/// one side.
pub async fn run(plan: &Plan) -> anyhow::Result<RpcResult> {
    let state_dir = tempfile::tempdir()?;
    let mut supervised = Supervised::new(options(state_dir.path(), &[])?);
    let outcome = async {
        let pid = supervised.start_running(Duration::from_secs(30)).await?.pid;
        let mut raw = RawClient::connect(supervised.port, TOKEN).await?;
        // Warm both paths (allocator, socket buffers, the sim's JIT-free but cache-cold code).
        let warm = Duration::from_millis(if plan.smoke { 50 } else { 300 });
        raw.closed_loop(pid, 16, Duration::ZERO, warm).await?;
        actor_closed_loop(&supervised.supervisor, pid, plan.rpc_callers, 16, Duration::ZERO, warm).await?;
        let mut levels = Vec::new();
        for &in_flight in &plan.rpc_levels {
            let mut rounds_actor = Vec::new();
            let mut rounds_raw = Vec::new();
            for round in 0..plan.rpc_rounds {
                let (warmup, measure) = (plan.rpc_warmup, plan.rpc_measure);
                if round % 2 == 0 {
                    rounds_raw.push(raw.closed_loop(pid, in_flight, warmup, measure).await?);
                    rounds_actor.push(
                        actor_closed_loop(&supervised.supervisor, pid, plan.rpc_callers, in_flight, warmup, measure).await?,
                    );
                } else {
                    rounds_actor.push(
                        actor_closed_loop(&supervised.supervisor, pid, plan.rpc_callers, in_flight, warmup, measure).await?,
                    );
                    rounds_raw.push(raw.closed_loop(pid, in_flight, warmup, measure).await?);
                }
            }
            let level = RpcLevel {
                in_flight,
                actor: median_sample(in_flight, &rounds_actor),
                raw: median_sample(in_flight, &rounds_raw),
                rounds_actor,
                rounds_raw,
            };
            eprintln!(
                "  rpc {in_flight:>5} in flight: actor {:>9.0}/s p50 {:.3} p99 {:.3} cpu/call {:.2}+{:.2} us | raw {:>9.0}/s p50 {:.3} p99 {:.3} cpu/call {:.2}+{:.2} us",
                level.actor.throughput_per_s, level.actor.p50_ms, level.actor.p99_ms,
                level.actor.client_cpu_us_per_call, level.actor.gateway_cpu_us_per_call,
                level.raw.throughput_per_s, level.raw.p50_ms, level.raw.p99_ms,
                level.raw.client_cpu_us_per_call, level.raw.gateway_cpu_us_per_call
            );
            levels.push(level);
        }
        raw.close().await;
        anyhow::Ok(RpcResult {
            callers: plan.rpc_callers,
            levels,
        })
    }
    .await;
    supervised.stop().await;
    outcome
}
