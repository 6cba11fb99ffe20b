//! Y1 for embedding apps: a subscriber of the handle that never reads while 100 000 events flow
//! costs a bounded amount of memory, never slows the supervisor, and is told what it missed with
//! a `Lagged` item.
//!
//! One test in this binary on purpose: it measures this process's resident memory, which another
//! test running in parallel would disturb.

mod handle_support;

use futures_util::StreamExt as _;
use gatewarden::events::GatewayEvent;
use gatewarden::handle::StreamEvent;
use handle_support::{options, proc_status_kib, running, WAIT};
use serde_json::json;

const FLOOD_EVENTS: u64 = 100_000;
/// About 100 MiB of padding in total: a subscriber queue that kept even a tenth of the events
/// would exceed the bound below.
const FLOOD_PAD_BYTES: u64 = 1_024;
/// The ring of the test's supervisor.
const CAPACITY: usize = 1_024;
/// Growth of the resident set allowed over the flood (the ring holds about CAPACITY × 1.3 KiB).
const RSS_GROWTH_BOUND_KIB: u64 = 24 * 1024;

fn is_flood(event: &StreamEvent) -> bool {
    matches!(event, StreamEvent::Event(GatewayEvent::Notification { method, .. }) if method == "sim.flood")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn y1_a_stalled_handle_subscriber_gets_lagged_and_memory_stays_bounded_over_100000_events() {
    let state_dir = tempfile::tempdir().expect("temp dir");
    let mut options = options(&state_dir, &[]);
    options.event_capacity = CAPACITY;
    let (handle, _pid) = running(options).await;

    // Subscribed and never read until the flood is over.
    let mut stalled = handle.subscribe().await;
    // Reads as fast as it can, so the test knows when the flood is through: every flood event
    // is either received or counted in a `Lagged` item.
    let mut reader = handle.subscribe().await;
    let before_kib = proc_status_kib("VmRSS:");

    let flood = handle
        .rpc(
            "sim.fault",
            json!({"kind": "event-flood", "count": FLOOD_EVENTS, "bytes": FLOOD_PAD_BYTES}),
        )
        .await;
    assert!(flood.is_ok(), "flood: {flood:?}");
    let mut seen = 0;
    let mut peak_kib = before_kib;
    tokio::time::timeout(WAIT * 4, async {
        while seen < FLOOD_EVENTS {
            let event = reader.next().await.expect("stream open");
            match event {
                StreamEvent::Lagged(missed) => seen += missed,
                event if is_flood(&event) => seen += 1,
                _ => {}
            }
            if seen % 4_096 == 0 {
                peak_kib = peak_kib.max(proc_status_kib("VmRSS:"));
            }
        }
    })
    .await
    .expect("the flood reached the subscriber within the bound");
    let after_kib = proc_status_kib("VmRSS:");
    peak_kib = peak_kib.max(after_kib);
    eprintln!("VmRSS before {before_kib} KiB, after {after_kib} KiB, highest seen {peak_kib} KiB");
    assert!(
        peak_kib.saturating_sub(before_kib) <= RSS_GROWTH_BOUND_KIB,
        "RSS grew from {before_kib} KiB to {peak_kib} KiB over the flood"
    );

    // The stalled subscriber: told first how much it missed, then at most the ring.
    let first = stalled.next().await.expect("stream open");
    let StreamEvent::Lagged(missed) = first else {
        panic!("a stalled subscriber's first item is not Lagged: {first:?}");
    };
    assert!(
        missed >= FLOOD_EVENTS - CAPACITY as u64,
        "missed only {missed} of {FLOOD_EVENTS} with a ring of {CAPACITY}"
    );
    // The supervisor kept up: it answers at once and is still running, no restart.
    let status = handle.status().await.expect("status");
    assert_eq!(status.state.as_str(), "running");
    assert_eq!(
        handle.rpc("echo", json!({"after": "flood"})).await,
        Ok(json!({"after": "flood"}))
    );
    handle.shutdown().await.expect("shutdown");
    // The stream ends with the supervisor (whatever the ring still held comes first).
    let rest = tokio::time::timeout(WAIT, stalled.count())
        .await
        .expect("stream ended");
    assert!(rest <= CAPACITY + 16, "{rest} items after the lag");
}
