//! Bad input from the gateway, end to end through the supervisor against the real
//! `gatewarden-sim`: oversize frames, invalid UTF-8, deeply nested JSON and an event flood. Each
//! is dropped with a log line or delivered, never a panic; the socket stays open, the gateway is
//! not restarted, and the supervisor's peak memory stays bounded.
//!
//! One test in this binary on purpose: it measures this process's peak RSS (`VmHWM`), which
//! another test running in parallel would disturb.

mod supervisor_rules_common;
mod supervisor_support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use gatewarden::events::GatewayEvent;
use gatewarden::supervisor::{GetDiagnostics, Start, Stop, Subscribe, Supervisor};
use gatewarden::GatewaySupervisor;
use gatewarden_core::machine::{CommandOutcome, LifecycleState};
use serde_json::{json, Value};
use supervisor_rules_common::{init_tracing, rpc, LogCapture};
use supervisor_support::{options, WAIT};

/// The bound the test sets on inbound messages (the default is the gateway's 25 MiB).
const MAX_FRAME_BYTES: usize = 1 << 20;

/// Oversize frames, each sixteen times the bound.
const OVERSIZE_FRAMES: usize = 8;
const OVERSIZE_BYTES: usize = 16 * MAX_FRAME_BYTES;

/// Levels of the deeply nested payload: far past serde_json's recursion limit (128), small
/// enough to be under the frame bound (2 bytes a level).
const NESTING_DEPTH: usize = 200_000;

/// The event flood: 50 000 events of about 1 KiB, about 55 MiB through the socket.
const FLOOD_EVENTS: u64 = 50_000;
const FLOOD_PAD_BYTES: u64 = 1_024;

/// The peak RSS may grow by at most this much over the baseline during each phase. The traffic
/// of each phase is far larger (128 MiB of oversize frames, about 55 MiB of events), so a
/// supervisor that buffered even a tenth of it would exceed this.
const PEAK_GROWTH_BOUND_KIB: u64 = 8 * 1024;

/// Counts `sim.flood` notifications and drops everything else: a subscriber that keeps up.
struct FloodCounter(Arc<AtomicU64>);

impl Actor for FloodCounter {
    type Context = Context<Self>;
}

impl Handler<GatewayEvent> for FloodCounter {
    type Result = ();

    fn handle(&mut self, event: GatewayEvent, _ctx: &mut Self::Context) {
        if matches!(&event, GatewayEvent::Notification { method, .. } if method == "sim.flood") {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn proc_status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// Reset the peak RSS to the current RSS (Linux `clear_refs` 5) and return the current RSS.
fn reset_peak_rss() -> u64 {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM");
    proc_status_kib("VmRSS:")
}

fn peak_rss() -> u64 {
    proc_status_kib("VmHWM:")
}

async fn fault(supervisor: &Addr<Supervisor>, params: Value) {
    let applied = rpc(supervisor, "sim.fault", Some(params.clone()), 30_000).await;
    assert!(applied.is_ok(), "{params}: {applied:?}");
}

/// The socket still carries RPCs, the supervisor is running and nothing was restarted.
async fn still_healthy(supervisor: &Addr<Supervisor>, after: &str) {
    assert_eq!(
        rpc(supervisor, "echo", Some(json!(after)), 30_000).await,
        Ok(json!(after)),
        "echo after {after}"
    );
    let diagnostics = supervisor.send(GetDiagnostics).await.unwrap();
    assert_eq!(
        diagnostics.process_starts, 1,
        "after {after}: {diagnostics:?}"
    );
    assert_eq!(
        diagnostics.reconnect_attempts_total, 0,
        "after {after}: {diagnostics:?}"
    );
    assert_eq!(diagnostics.leaf_state, "running", "after {after}");
}

#[actix_rt::test]
async fn m5_bad_input_is_dropped_with_a_log_and_bounded_memory() {
    init_tracing();
    let capture = LogCapture::default();
    let guard = capture.install();
    let state_dir = tempfile::tempdir().unwrap();
    let mut options = options(&state_dir, &[]);
    options.core.connect.max_frame_bytes = MAX_FRAME_BYTES;
    let supervisor = GatewaySupervisor::start(options).expect("valid options");
    let flood_seen = Arc::new(AtomicU64::new(0));
    let counter = FloodCounter(flood_seen.clone()).start();
    supervisor.do_send(Subscribe(counter.recipient()));
    assert_eq!(
        supervisor.send(Start).await.unwrap(),
        CommandOutcome::Completed
    );
    still_healthy(&supervisor, "start").await;

    // Oversize: each frame is skipped by the codec with an error log; memory does not follow
    // the size of what was sent.
    let baseline = reset_peak_rss();
    for _ in 0..OVERSIZE_FRAMES {
        fault(
            &supervisor,
            json!({"kind": "malformed", "what": "oversize", "bytes": OVERSIZE_BYTES}),
        )
        .await;
    }
    still_healthy(&supervisor, "oversize").await;
    let oversize_growth = peak_rss().saturating_sub(baseline);
    let oversize_logged = capture.count("dropped an inbound frame larger than max_frame_bytes");
    assert_eq!(
        oversize_logged, OVERSIZE_FRAMES,
        "one error line per oversize frame"
    );

    // Invalid UTF-8 in a text frame: dropped with a debug line naming why.
    fault(
        &supervisor,
        json!({"kind": "malformed", "what": "invalid-utf8"}),
    )
    .await;
    still_healthy(&supervisor, "invalid-utf8").await;
    assert!(
        capture
            .events()
            .iter()
            .any(|event| event.text.contains("dropped an inbound message")
                && event.text.contains("not valid UTF-8")),
        "no log line for the invalid UTF-8 frame"
    );

    // Deep nesting: valid JSON 200 000 levels deep, under the frame bound; serde_json stops at
    // its recursion limit, so it is unparseable text: dropped with a debug line, no stack
    // overflow.
    let before = capture.count("dropped a frame that is not JSON");
    fault(
        &supervisor,
        json!({"kind": "malformed", "what": "deep-nesting", "depth": NESTING_DEPTH}),
    )
    .await;
    still_healthy(&supervisor, "deep-nesting").await;
    assert_eq!(
        capture.count("dropped a frame that is not JSON"),
        before + 1,
        "no log line for the deeply nested frame"
    );

    // Event flood: every event is delivered to a subscriber that keeps up (nothing is lost, so
    // nothing needs a drop line), the supervisor stays healthy, and memory stays bounded:
    // reading is paced by handling, so frames never pile up. The log capture stops first: it
    // keeps every TRACE line of the WebSocket codec (two per frame), which is the test's memory,
    // not the supervisor's.
    drop(guard);
    let baseline_flood = reset_peak_rss();
    fault(
        &supervisor,
        json!({"kind": "event-flood", "count": FLOOD_EVENTS, "bytes": FLOOD_PAD_BYTES}),
    )
    .await;
    let deadline = tokio::time::Instant::now() + WAIT * 4;
    while flood_seen.load(Ordering::Relaxed) < FLOOD_EVENTS {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {FLOOD_EVENTS} flood events arrived",
            flood_seen.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    still_healthy(&supervisor, "event flood").await;
    let flood_growth = peak_rss().saturating_sub(baseline_flood);

    let status = supervisor
        .send(gatewarden::supervisor::GetStatus)
        .await
        .unwrap();
    assert_eq!(status.state, LifecycleState::Running);
    supervisor.send(Stop).await.unwrap();

    // The figures for docs/RELIABILITY.md ("Fuzzing and security").
    eprintln!(
        "bad-input figures: oversize {OVERSIZE_FRAMES} x {OVERSIZE_BYTES} B peak RSS +{oversize_growth} KiB \
         (baseline {baseline} KiB); flood {FLOOD_EVENTS} x {FLOOD_PAD_BYTES} B peak RSS +{flood_growth} KiB \
         (baseline {baseline_flood} KiB)"
    );
    assert!(
        oversize_growth < PEAK_GROWTH_BOUND_KIB,
        "peak RSS grew by {oversize_growth} KiB during the oversize frames"
    );
    assert!(
        flood_growth < PEAK_GROWTH_BOUND_KIB,
        "peak RSS grew by {flood_growth} KiB during the event flood"
    );
}
