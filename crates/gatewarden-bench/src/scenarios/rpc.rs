//! Scenario `rpc`: echo throughput and latency through the public RPC APIs
//! (`Addr<Supervisor>::send(Rpc)`, an `RpcClient`, and a `GatewayHandle` called from another
//! thread as a tokio app calls it) at several in-flight counts, side by side with the raw awc
//! client against the same sim in the same run.

use std::time::Duration;

use serde::Serialize;

use crate::fixture::{options, Supervised, TOKEN};
use crate::load::{actor_closed_loop, Api, LoadSample};
use crate::raw::RawClient;
use crate::scenarios::Plan;
use crate::stats::median;

/// One in-flight level: the median over rounds of each client, and every round.
#[derive(Debug, Clone, Serialize)]
pub struct RpcLevel {
    pub in_flight: usize,
    /// Through `Addr<Supervisor>::send(Rpc)`.
    pub actor: LoadSample,
    /// Through an `RpcClient` (absent in results from before it existed).
    #[serde(default)]
    pub client: Option<LoadSample>,
    pub raw: LoadSample,
    /// Through a `GatewayHandle` from another thread (absent in results from before it existed).
    #[serde(default)]
    pub handle: Option<LoadSample>,
    pub rounds_actor: Vec<LoadSample>,
    #[serde(default)]
    pub rounds_client: Vec<LoadSample>,
    #[serde(default)]
    pub rounds_handle: Vec<LoadSample>,
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

/// The median over rounds of `a`'s throughput over `b`'s in the same round. Each round measures
/// every client back to back, so on a machine whose speed drifts (a shared VM) this pairs
/// windows taken seconds apart instead of comparing medians taken over the whole level.
fn paired_throughput_ratio(a: &[LoadSample], b: &[LoadSample]) -> f64 {
    let ratios: Vec<f64> = a
        .iter()
        .zip(b)
        .map(|(a, b)| a.throughput_per_s / b.throughput_per_s)
        .collect();
    median(&ratios).unwrap_or(f64::NAN)
}

/// Run it.
pub async fn run(plan: &Plan) -> anyhow::Result<RpcResult> {
    let state_dir = tempfile::tempdir()?;
    let mut options = options(state_dir.path(), &[])?;
    if let Some(batch) = plan.rpc_read_batch {
        options.core.rpc.read_batch = batch;
    }
    let mut supervised = Supervised::new(options);
    let outcome = async {
        let pid = supervised.start_running(Duration::from_secs(30)).await?.pid;
        let mut raw = RawClient::connect(supervised.port, TOKEN).await?;
        let via_supervisor = Api::Supervisor(supervised.supervisor.clone());
        let via_client = Api::Client(
            supervised
                .supervisor
                .send(gatewarden::supervisor::GetRpcClient)
                .await?,
        );
        // The handle a tokio app would hold; its calls come from another thread (load.rs).
        let via_handle = Api::Handle(gatewarden::handle::GatewayHandle::from_addr(
            supervised.supervisor.clone(),
        ));
        let callers = plan.rpc_callers;
        // Warm every path (allocator, socket buffers, the sim's JIT-free but cache-cold code).
        let warm = Duration::from_millis(if plan.smoke { 50 } else { 300 });
        raw.closed_loop(pid, 16, Duration::ZERO, warm).await?;
        actor_closed_loop(&via_supervisor, pid, callers, 16, Duration::ZERO, warm).await?;
        actor_closed_loop(&via_client, pid, callers, 16, Duration::ZERO, warm).await?;
        actor_closed_loop(&via_handle, pid, callers, 16, Duration::ZERO, warm).await?;
        let mut levels = Vec::new();
        for &in_flight in &plan.rpc_levels {
            // [raw, supervisor, client, handle]
            let mut rounds: [Vec<LoadSample>; 4] = Default::default();
            for round in 0..plan.rpc_rounds {
                let (warmup, measure) = (plan.rpc_warmup, plan.rpc_measure);
                // Each round starts with a different client, so a drift in machine load does
                // not favour one of them.
                for turn in 0..4 {
                    let which = (round + turn) % 4;
                    let sample = match which {
                        0 => raw.closed_loop(pid, in_flight, warmup, measure).await?,
                        1 => {
                            actor_closed_loop(
                                &via_supervisor,
                                pid,
                                callers,
                                in_flight,
                                warmup,
                                measure,
                            )
                            .await?
                        }
                        2 => {
                            actor_closed_loop(&via_client, pid, callers, in_flight, warmup, measure)
                                .await?
                        }
                        _ => {
                            actor_closed_loop(&via_handle, pid, callers, in_flight, warmup, measure)
                                .await?
                        }
                    };
                    rounds[which].push(sample);
                }
            }
            let [rounds_raw, rounds_actor, rounds_client, rounds_handle] = rounds;
            let level = RpcLevel {
                in_flight,
                actor: median_sample(in_flight, &rounds_actor),
                client: Some(median_sample(in_flight, &rounds_client)),
                handle: Some(median_sample(in_flight, &rounds_handle)),
                raw: median_sample(in_flight, &rounds_raw),
                rounds_actor,
                rounds_client,
                rounds_handle,
                rounds_raw,
            };
            let show = |sample: &LoadSample| {
                format!(
                    "{:>9.0}/s p50 {:.3} p99 {:.3} cpu/call {:.2}+{:.2} us",
                    sample.throughput_per_s,
                    sample.p50_ms,
                    sample.p99_ms,
                    sample.client_cpu_us_per_call,
                    sample.gateway_cpu_us_per_call
                )
            };
            eprintln!(
                "  rpc {in_flight:>5} in flight: send {} | client {} | handle {} | raw {} | paired send/raw {:.3} client/raw {:.3} handle/raw {:.3}",
                show(&level.actor),
                level.client.as_ref().map(show).unwrap_or_default(),
                level.handle.as_ref().map(show).unwrap_or_default(),
                show(&level.raw),
                paired_throughput_ratio(&level.rounds_actor, &level.rounds_raw),
                paired_throughput_ratio(&level.rounds_client, &level.rounds_raw),
                paired_throughput_ratio(&level.rounds_handle, &level.rounds_raw),
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
