//! Closed-loop load through the public actor API, and the summary of one load run (shared with
//! the raw baseline).

use std::time::{Duration, Instant};

use actix::Addr;
use anyhow::Context as _;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt as _;
use gatewarden::client::RpcClient;
use gatewarden::handle::GatewayHandle;
use gatewarden::supervisor::{Rpc, Supervisor};
use serde::Serialize;
use serde_json::json;

use crate::stats::{percentile, sorted};

/// Throughput and latency of one closed-loop run at a fixed number of calls in flight.
#[derive(Debug, Clone, Serialize)]
pub struct LoadSample {
    pub in_flight: usize,
    pub completed: usize,
    pub failures: u64,
    pub throughput_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Calls answered over the whole run (warm-up and drain included): the divisor of the CPU
    /// figures below.
    #[serde(default)]
    pub answered_total: u64,
    /// CPU time of this process (the caller and the supervisor, or the raw client) per answered
    /// call, in microseconds, over the whole run.
    #[serde(default)]
    pub client_cpu_us_per_call: f64,
    /// CPU time of the gateway process per answered call, in microseconds, over the whole run.
    #[serde(default)]
    pub gateway_cpu_us_per_call: f64,
}

impl LoadSample {
    /// Summarise the latencies measured in a window of `measure`.
    pub fn new(in_flight: usize, measure: Duration, latencies_ms: Vec<f64>, failures: u64) -> Self {
        let latencies = sorted(latencies_ms);
        LoadSample {
            in_flight,
            completed: latencies.len(),
            failures,
            throughput_per_s: latencies.len() as f64 / measure.as_secs_f64(),
            p50_ms: percentile(&latencies, 50.0).unwrap_or(f64::NAN),
            p99_ms: percentile(&latencies, 99.0).unwrap_or(f64::NAN),
            answered_total: 0,
            client_cpu_us_per_call: f64::NAN,
            gateway_cpu_us_per_call: f64::NAN,
        }
    }

    /// Record the answered total and the CPU used by both sides since `meter` started.
    pub fn with_cpu(mut self, meter: CpuMeter, answered_total: u64) -> Self {
        let (client_us, gateway_us) = meter.elapsed_us();
        let per_call = |us: Option<f64>| match (us, answered_total) {
            (Some(us), n) if n > 0 => us / n as f64,
            _ => f64::NAN,
        };
        self.answered_total = answered_total;
        self.client_cpu_us_per_call = per_call(client_us);
        self.gateway_cpu_us_per_call = per_call(gateway_us);
        self
    }
}

/// CPU time of this process (getrusage) and of the gateway (its main thread's
/// `/proc/<pid>/schedstat`, nanosecond resolution; the sim runs on one thread) from a start.
pub struct CpuMeter {
    gateway_pid: Option<u32>,
    client_us: Option<u64>,
    gateway_ns: Option<u64>,
}

impl CpuMeter {
    /// Start counting.
    pub fn start(gateway_pid: Option<u32>) -> Self {
        CpuMeter {
            gateway_pid,
            client_us: crate::procfs::cpu_micros().ok(),
            gateway_ns: gateway_pid.and_then(crate::procfs::schedstat_ns),
        }
    }

    /// Microseconds of CPU used since the start by (this process, the gateway).
    fn elapsed_us(&self) -> (Option<f64>, Option<f64>) {
        let client = match (self.client_us, crate::procfs::cpu_micros().ok()) {
            (Some(from), Some(to)) => Some(to.saturating_sub(from) as f64),
            _ => None,
        };
        let gateway = match (
            self.gateway_ns,
            self.gateway_pid.and_then(crate::procfs::schedstat_ns),
        ) {
            (Some(from), Some(to)) => Some(to.saturating_sub(from) as f64 / 1_000.0),
            _ => None,
        };
        (client, gateway)
    }
}

/// How the actor-path load is issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Callers {
    /// `in_flight` caller tasks, each awaiting one call at a time (an app whose requests come
    /// from that many concurrent handlers).
    Tasks,
    /// One task keeping `in_flight` calls in a `FuturesUnordered`. With thousands in flight this
    /// meets tokio's cooperative budget: every reply channel polled after the task's budget is
    /// spent answers "pending" and is re-queued, which costs CPU and reorders completions.
    FuturesUnordered,
}

/// Which public API the actor-path calls go through.
#[derive(Clone)]
pub enum Api {
    /// `Addr<Supervisor>::send(Rpc)`: the supervisor's mailbox, then the connection actor's.
    Supervisor(Addr<Supervisor>),
    /// An `RpcClient` (`GetRpcClient`): straight to the connection actor's mailbox.
    Client(RpcClient),
    /// A `GatewayHandle`, called the way a tokio app calls it: from a thread of its own (a tokio
    /// runtime there), while the supervisor runs on the bench's actix thread.
    Handle(GatewayHandle),
}

impl Api {
    /// One call; `Err` is a failed call or a dead mailbox.
    async fn call(&self, rpc: Rpc) -> Result<(), ()> {
        match self {
            Api::Supervisor(supervisor) => match supervisor.send(rpc).await {
                Ok(Ok(_)) => Ok(()),
                _ => Err(()),
            },
            Api::Client(client) => client.call(rpc).await.map(drop).map_err(drop),
            Api::Handle(handle) => handle.call(rpc).await.map(drop).map_err(drop),
        }
    }
}

/// Keep `in_flight` `echo` calls outstanding through `api` (each completion issues the next),
/// the way an embedding app with that much concurrency would call it.
pub async fn actor_closed_loop(
    supervisor: &Api,
    gateway_pid: Option<u32>,
    callers: Callers,
    in_flight: usize,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<LoadSample> {
    if let Api::Handle(_) = supervisor {
        return on_app_thread(supervisor, gateway_pid, callers, in_flight, warmup, measure).await;
    }
    match callers {
        Callers::Tasks => {
            actor_closed_loop_tasks(supervisor, gateway_pid, in_flight, warmup, measure).await
        }
        Callers::FuturesUnordered => {
            actor_closed_loop_unordered(supervisor, gateway_pid, in_flight, warmup, measure).await
        }
    }
}

/// The closed loop on a thread of its own with a current-thread tokio runtime (a `LocalSet`, so
/// the same caller code runs there), awaited here without blocking the actix thread the
/// supervisor runs on. CPU is still measured for the whole process.
async fn on_app_thread(
    api: &Api,
    gateway_pid: Option<u32>,
    callers: Callers,
    in_flight: usize,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<LoadSample> {
    let api = api.clone();
    let (reply, answer) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("bench-app".into())
        .spawn(move || {
            let run = || -> anyhow::Result<LoadSample> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()?;
                tokio::task::LocalSet::new().block_on(&runtime, async {
                    match callers {
                        Callers::Tasks => {
                            actor_closed_loop_tasks(&api, gateway_pid, in_flight, warmup, measure)
                                .await
                        }
                        Callers::FuturesUnordered => {
                            actor_closed_loop_unordered(
                                &api,
                                gateway_pid,
                                in_flight,
                                warmup,
                                measure,
                            )
                            .await
                        }
                    }
                })
            };
            let _ = reply.send(run());
        })
        .context("starting the app thread")?;
    answer
        .await
        .context("the app thread ended without a result")?
}

fn echo(n: u64) -> Rpc {
    Rpc {
        method: "echo".to_string(),
        params: Some(json!({ "n": n })),
        timeout_ms: None,
    }
}

/// What one caller task saw.
#[derive(Default)]
struct CallerTally {
    latencies_ms: Vec<f64>,
    answered: u64,
    failures: u64,
}

async fn actor_closed_loop_tasks(
    supervisor: &Api,
    gateway_pid: Option<u32>,
    in_flight: usize,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<LoadSample> {
    let started = Instant::now();
    let window_start = started + warmup;
    let window_end = window_start + measure;
    let meter = CpuMeter::start(gateway_pid);
    let callers: Vec<_> = (0..in_flight as u64)
        .map(|caller| {
            let supervisor = supervisor.clone();
            actix_rt::spawn(async move {
                let mut tally = CallerTally::default();
                let mut n = caller;
                loop {
                    let at = Instant::now();
                    let answer = supervisor.call(echo(n)).await;
                    let now = Instant::now();
                    tally.answered += 1;
                    match answer {
                        Ok(()) if now >= window_start && now <= window_end => tally
                            .latencies_ms
                            .push(now.duration_since(at).as_secs_f64() * 1_000.0),
                        Ok(()) => {}
                        Err(()) => tally.failures += 1,
                    }
                    if now >= window_end {
                        return tally;
                    }
                    n += in_flight as u64;
                }
            })
        })
        .collect();
    let hard_stop = window_end + Duration::from_secs(30);
    let mut total = CallerTally::default();
    for caller in callers {
        let tally = tokio::time::timeout_at(hard_stop.into(), caller)
            .await
            .context("actor replies stopped")?
            .context("a caller task failed")?;
        total.latencies_ms.extend(tally.latencies_ms);
        total.answered += tally.answered;
        total.failures += tally.failures;
    }
    Ok(
        LoadSample::new(in_flight, measure, total.latencies_ms, total.failures)
            .with_cpu(meter, total.answered),
    )
}

async fn actor_closed_loop_unordered(
    supervisor: &Api,
    gateway_pid: Option<u32>,
    in_flight: usize,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<LoadSample> {
    let started = Instant::now();
    let window_start = started + warmup;
    let window_end = window_start + measure;
    let call = |n: u64| {
        let at = Instant::now();
        let request = supervisor.call(echo(n));
        async move { (at, request.await) }
    };
    let mut calls = FuturesUnordered::new();
    let mut next: u64 = 0;
    for _ in 0..in_flight {
        calls.push(call(next));
        next += 1;
    }
    let meter = CpuMeter::start(gateway_pid);
    let mut answered = 0u64;
    let mut latencies_ms = Vec::new();
    let mut failures = 0u64;
    let hard_stop = window_end + Duration::from_secs(30);
    while let Some((at, answer)) = tokio::time::timeout_at(hard_stop.into(), calls.next())
        .await
        .context("actor replies stopped")?
    {
        let now = Instant::now();
        answered += 1;
        match answer {
            Ok(()) if now >= window_start && now <= window_end => {
                latencies_ms.push(now.duration_since(at).as_secs_f64() * 1_000.0)
            }
            Ok(()) => {}
            Err(()) => failures += 1,
        }
        if now < window_end {
            calls.push(call(next));
            next += 1;
        }
    }
    Ok(LoadSample::new(in_flight, measure, latencies_ms, failures).with_cpu(meter, answered))
}
