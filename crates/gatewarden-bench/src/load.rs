//! Closed-loop load through the public actor API, and the summary of one load run (shared with
//! the raw baseline).

use std::time::{Duration, Instant};

use actix::Addr;
use anyhow::Context as _;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt as _;
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
        }
    }
}

/// Keep `in_flight` `echo` calls outstanding through `Addr<Supervisor>` (each completion issues
/// the next), the way an embedding app with that much concurrency would call it.
pub async fn actor_closed_loop(
    supervisor: &Addr<Supervisor>,
    in_flight: usize,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<LoadSample> {
    let started = Instant::now();
    let window_start = started + warmup;
    let window_end = window_start + measure;
    let call = |n: u64| {
        let request = supervisor.send(Rpc {
            method: "echo".to_string(),
            params: Some(json!({ "n": n })),
            timeout_ms: None,
        });
        let at = Instant::now();
        async move { (at, request.await) }
    };
    let mut calls = FuturesUnordered::new();
    let mut next: u64 = 0;
    for _ in 0..in_flight {
        calls.push(call(next));
        next += 1;
    }
    let mut latencies_ms = Vec::new();
    let mut failures = 0u64;
    let hard_stop = window_end + Duration::from_secs(30);
    while let Some((at, answer)) = tokio::time::timeout_at(hard_stop.into(), calls.next())
        .await
        .context("actor replies stopped")?
    {
        let now = Instant::now();
        match answer {
            Ok(Ok(_)) if now >= window_start && now <= window_end => {
                latencies_ms.push(now.duration_since(at).as_secs_f64() * 1_000.0)
            }
            Ok(Ok(_)) => {}
            _ => failures += 1,
        }
        if now < window_end {
            calls.push(call(next));
            next += 1;
        }
    }
    Ok(LoadSample::new(in_flight, measure, latencies_ms, failures))
}
