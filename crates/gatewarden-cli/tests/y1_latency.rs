//! Y1 measured: how long a gateway event takes to reach a control-socket subscriber as a line
//! (p50/p99), and how many events per second one subscriber takes. The simulator stamps each
//! event with its send time (`sim.fault` `event` with `stamp`); the subscriber reads the stream
//! on the same host clock. docs/PERFORMANCE.md quotes the figures from
//! `cargo test --release -p gatewarden-cli --test y1_latency -- --nocapture`.
//!
//! The assertions only check that every event arrived in order (a debug build on a busy machine
//! says nothing about speed); the numbers are printed.

mod support;

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use support::{Instance, Options, DEADLINE};

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_micros() as u64)
        .unwrap_or(0)
}

fn subscribe(control: &std::path::Path) -> BufReader<UnixStream> {
    let mut stream = UnixStream::connect(control).expect("connect");
    stream.write_all(b"{\"cmd\":\"subscribe\"}\n").unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut reader = BufReader::new(stream);
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    assert!(first.contains("\"snapshot\""), "{first}");
    reader
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[test]
fn y1_event_to_subscriber_latency_and_throughput() {
    let instance = Instance::start(Options::default());
    instance.wait_running();

    // Latency: paced events (2 ms apart), so each is measured alone, not behind a queue.
    const PACED: u64 = 500;
    let mut reader = subscribe(&instance.control);
    let params = json!({"kind": "event", "event": "bench.tick", "payload": {}, "count": PACED,
        "intervalMs": 2, "stamp": true})
    .to_string();
    assert!(instance
        .cli(&["rpc", "sim.fault", &params])
        .status
        .success());
    let mut latencies = Vec::new();
    let mut line = String::new();
    while (latencies.len() as u64) < PACED {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "the stream ended");
        let arrived = now_us();
        let value: Value = serde_json::from_str(&line).unwrap();
        assert!(value.get("lagged").is_none(), "a paced subscriber lagged");
        if value["method"] != "bench.tick" {
            continue;
        }
        assert_eq!(value["params"]["n"], latencies.len() as u64, "out of order");
        let sent = value["params"]["sentAtUs"].as_u64().unwrap();
        latencies.push(arrived.saturating_sub(sent));
    }
    latencies.sort_unstable();
    let (p50, p99) = (percentile(&latencies, 0.50), percentile(&latencies, 0.99));

    // Throughput: a flood as fast as the simulator sends; how fast one subscriber takes it.
    const FLOOD: u64 = 100_000;
    let mut reader = subscribe(&instance.control);
    let params = json!({"kind": "event-flood", "count": FLOOD, "bytes": 64}).to_string();
    assert!(instance
        .cli(&["rpc", "sim.fault", &params])
        .status
        .success());
    let mut received = 0u64;
    let mut lost = 0u64;
    let mut started = None;
    loop {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "the stream ended");
        let value: Value = serde_json::from_str(&line).unwrap();
        if let Some(n) = value["lagged"].as_u64() {
            lost += n;
            continue;
        }
        if value["method"] != "sim.flood" {
            continue;
        }
        started.get_or_insert_with(Instant::now);
        received += 1;
        if value["params"]["n"] == FLOOD - 1 {
            break;
        }
    }
    let elapsed = started.unwrap().elapsed().as_secs_f64();
    let rate = received as f64 / elapsed.max(1e-9);
    assert_eq!(
        received + lost,
        FLOOD,
        "events neither delivered nor counted lost"
    );

    println!(
        "Y1 latency over {PACED} paced events: p50 {:.3} ms, p99 {:.3} ms (max {:.3} ms)",
        p50 as f64 / 1000.0,
        p99 as f64 / 1000.0,
        *latencies.last().unwrap() as f64 / 1000.0
    );
    println!(
        "Y1 throughput: {received} of {FLOOD} flood events in {elapsed:.2} s = {rate:.0} events/s \
         to one subscriber ({lost} lost to lag, queue 1024)"
    );
}
