//! M1–M6, H3, H5, P4, T3: requests, inbound frames and closing, against the real simulator.

mod connection_support;

use std::time::{Duration, Instant};

use connection_support::*;
use gatewarden::connection::{Close, CloseReason, ConnectionReport, IsOpen, Ping};
use gatewarden::events::GatewayEvent;
use gatewarden_core::health::RpcFailureKind;
use gatewarden_core::machine::ReadySource;
use gatewarden_core::rpc::RpcError;
use serde_json::json;

/// M6: successes reported so far (they are coalesced into `RpcsSucceeded` counts).
fn successes(reports: &[ConnectionReport]) -> u64 {
    reports
        .iter()
        .map(|report| match report {
            ConnectionReport::RpcsSucceeded { count } => *count,
            _ => 0,
        })
        .sum()
}

/// M6: failures reported for `method`, in order (each failure is reported on its own).
fn finished_for<'a>(
    reports: &'a [ConnectionReport],
    method: &'a str,
) -> impl Iterator<Item = &'a Result<(), RpcFailureKind>> + 'a {
    reports.iter().filter_map(move |report| match report {
        ConnectionReport::RpcFinished { method: m, outcome } if m == method => Some(outcome),
        _ => None,
    })
}

#[actix_rt::test]
async fn m1_rpc_not_connected_fails_at_once() {
    let (connection, mut reports) = start_connection(config_for(free_port()));
    let started = Instant::now();
    let answer = rpc(&connection, "status", None, 30_000).await;
    assert_eq!(answer, Err(RpcError::NotConnected));
    assert_eq!(answer.unwrap_err().to_string(), "Gateway not connected");
    assert!(started.elapsed() < Duration::from_secs(5));
    reports
        .wait_for("not-connected outcome", |report| {
            matches!(report, ConnectionReport::RpcFinished { method, outcome: Err(RpcFailureKind::NotConnected) } if method == "status")
        })
        .await;
}

/// M1/M6: a call whose write fails is answered `SendFailed` exactly once, and the socket that
/// cannot be written is reported closed (1006). The gateway is stopped with a request unread in
/// its socket, then killed: the kernel resets the connection, and the next write fails. The
/// runtime is blocked from the kill until the call is queued, so the write is what discovers the
/// reset (the I/O future writes before it reads).
#[actix_rt::test]
async fn m1_a_call_whose_write_fails_is_answered_send_failed_once() {
    let (mut sim, listening) = start_sim(&[]);
    let (connection, mut reports) = start_connection(config_for(listening.port));
    open(&connection, &mut reports, 1).await;
    assert_eq!(
        rpc(&connection, "echo", Some(json!(1)), 10_000).await,
        Ok(json!(1))
    );
    sim.signal(nix::sys::signal::Signal::SIGSTOP);
    // Written (the timer fires after the write's flush) and left unread by the stopped gateway.
    assert_eq!(
        rpc(&connection, "unread", None, 100).await,
        Err(RpcError::Timeout {
            method: "unread".into()
        })
    );
    // Blocking on purpose: nothing on this runtime runs until the call below is queued.
    sim.kill_and_wait();
    let answer = rpc(&connection, "echo", Some(json!(2)), 10_000).await;
    assert!(
        matches!(&answer, Err(RpcError::SendFailed { reason }) if !reason.is_empty()),
        "{answer:?}"
    );
    reports
        .wait_for("the socket reported closed", |report| {
            matches!(
                report,
                ConnectionReport::Closed {
                    epoch: 1,
                    code: Some(1006)
                }
            )
        })
        .await;
    let outcomes: Vec<_> = finished_for(&reports.seen, "echo").collect();
    assert_eq!(outcomes, vec![&Err(RpcFailureKind::SendFailed)]);
    // The connection is gone: the next call fails at once.
    assert_eq!(
        rpc(&connection, "echo", None, 10_000).await,
        Err(RpcError::NotConnected)
    );
}

#[actix_rt::test]
async fn m1_rpc_timeout_answers_once() {
    let (_sim, listening) = start_sim(&[]);
    let (connection, mut reports) = start_connection(config_for(listening.port));
    open(&connection, &mut reports, 1).await;
    let started = Instant::now();
    let answer = rpc(&connection, "sleep", Some(json!({"ms": 1500})), 200).await;
    assert_eq!(
        answer,
        Err(RpcError::Timeout {
            method: "sleep".into()
        })
    );
    assert_eq!(answer.unwrap_err().to_string(), "RPC timeout: sleep");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(190), "{waited:?}");
    // The late reply is no longer pending: it falls through as a raw message (M2), and the
    // call is not answered or reported a second time.
    reports
        .wait_for("late sleep reply as raw message", |report| {
            matches!(report, ConnectionReport::Published(GatewayEvent::RawMessage(value)) if value["type"] == "res")
        })
        .await;
    let outcomes: Vec<_> = finished_for(&reports.seen, "sleep").collect();
    assert_eq!(outcomes, vec![&Err(RpcFailureKind::Timeout)]);
    // The connection still works.
    assert_eq!(
        rpc(&connection, "echo", Some(json!(5)), 10_000).await,
        Ok(json!(5))
    );
}

/// M1: a call's time limit counts from when it was made. The connection reads the clock once
/// per batch of calls; a batch long gone must not lend its time to a later call.
#[actix_rt::test]
async fn m1_a_deadline_counts_from_its_own_call_not_from_an_earlier_batch() {
    let (_sim, listening) = start_sim(&[]);
    let (connection, mut reports) = start_connection(config_for(listening.port));
    open(&connection, &mut reports, 1).await;
    assert_eq!(
        rpc(&connection, "echo", Some(json!(1)), 10_000).await,
        Ok(json!(1))
    );
    // Longer than the next call's limit: counted from the first call, that limit would be
    // over before the second call is even made.
    actix_rt::time::sleep(Duration::from_millis(1_200)).await;
    let answer = rpc(&connection, "sleep", Some(json!({"ms": 300})), 1_000).await;
    assert!(answer.is_ok(), "{answer:?}");
}

#[actix_rt::test]
async fn m1_many_rpcs_in_flight_all_answered_once() {
    let (_sim, listening) = start_sim(&[]);
    many_rpcs_in_flight_all_answered_once(config_for(listening.port)).await;
}

/// The smallest read batch: the I/O future yields after every frame, so replies, the callers'
/// next requests and the timer interleave as finely as they can; every call is still answered
/// exactly once, with its own payload.
#[actix_rt::test]
async fn m1_many_rpcs_in_flight_all_answered_once_with_a_read_batch_of_one() {
    let (_sim, listening) = start_sim(&[]);
    let mut config = config_for(listening.port);
    config.read_batch = std::num::NonZeroUsize::MIN;
    many_rpcs_in_flight_all_answered_once(config).await;
}

async fn many_rpcs_in_flight_all_answered_once(config: gatewarden::connection::ConnectionConfig) {
    const CALLS: usize = 2_000;
    let (connection, mut reports) = start_connection(config);
    open(&connection, &mut reports, 1).await;
    // One slow call keeps a late deadline in the table while the rest come and go.
    let slow = rpc(&connection, "sleep", Some(json!({"ms": 300})), 60_000);
    let calls = (0..CALLS).map(|index| {
        let connection = connection.clone();
        async move {
            let answer = rpc(&connection, "echo", Some(json!({"i": index})), 60_000).await;
            (index, answer)
        }
    });
    let (slow, answers) =
        futures_util::future::join(slow, futures_util::future::join_all(calls)).await;
    assert!(slow.is_ok(), "{slow:?}");
    for (index, answer) in answers {
        assert_eq!(answer, Ok(json!({"i": index})));
    }
    // Every echo and the slow call succeeded: the coalesced success counts add up to exactly
    // that, and no call is reported as failed.
    let expected = CALLS as u64 + 1;
    let deadline = Instant::now() + SOON;
    while successes(&reports.seen) < expected && Instant::now() < deadline {
        reports.collect_for(Duration::from_millis(200)).await;
    }
    assert_eq!(successes(&reports.seen), expected);
    // Nothing else is answered later (no stray timeouts from the shared timer).
    reports.collect_for(Duration::from_millis(500)).await;
    assert_eq!(successes(&reports.seen), expected);
    assert_eq!(finished_for(&reports.seen, "echo").count(), 0);
    assert_eq!(finished_for(&reports.seen, "sleep").count(), 0);
}

#[actix_rt::test]
async fn m2_gateway_error_rejects_with_its_message() {
    let (_sim, listening) = start_sim(&[]);
    let (connection, mut reports) = start_connection(config_for(listening.port));
    open(&connection, &mut reports, 1).await;
    let answer = rpc(&connection, "no.such.method", None, 10_000).await;
    let error = answer.unwrap_err();
    assert_eq!(error.to_string(), "unknown method: no.such.method");
    match &error {
        RpcError::Gateway { code, .. } => assert_eq!(code, "INVALID_REQUEST"),
        other => panic!("{other:?}"),
    }
    assert!(!error.is_transport());
}

#[actix_rt::test]
async fn m3_events_are_published() {
    let (_sim, listening) = start_sim(&["--ready-event"]);
    let (connection, mut reports) = start_connection(config_for(listening.port));
    open(&connection, &mut reports, 5).await;
    // `health` right after hello-ok: a ready signal (G2 beyond) and a notification (M3).
    reports
        .wait_for("health ready signal", |report| {
            matches!(
                report,
                ConnectionReport::ReadySignal {
                    epoch: 5,
                    source: ReadySource::HealthEvent
                }
            )
        })
        .await;
    reports
        .wait_for("health notification", |report| {
            matches!(report, ConnectionReport::Published(GatewayEvent::Notification { method, .. }) if method == "health")
        })
        .await;
    // `gateway.ready` (G1).
    reports
        .wait_for("ready event", |report| {
            matches!(
                report,
                ConnectionReport::ReadySignal {
                    epoch: 5,
                    source: ReadySource::ReadyEvent
                }
            )
        })
        .await;
    drop(connection);
}

#[actix_rt::test]
async fn m5_malformed_frames_are_dropped_without_panic() {
    let (_sim, listening) = start_sim(&[]);
    let mut config = config_for(listening.port);
    // A small bound keeps the oversize case quick; the rule is the same at 25 MiB.
    config.max_frame_bytes = 1 << 20;
    let (connection, mut reports) = start_connection(config);
    open(&connection, &mut reports, 1).await;
    for (what, extra) in [
        ("non-json", json!({})),
        ("non-object", json!({})),
        ("unknown-id", json!({})),
        ("invalid-utf8", json!({})),
        ("oversize", json!({"bytes": 2 << 20})),
    ] {
        let mut params = json!({"kind": "malformed", "what": what});
        params
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let applied = rpc(&connection, "sim.fault", Some(params), 10_000).await;
        assert!(applied.is_ok(), "{what}: {applied:?}");
        // The socket survives each and keeps answering.
        assert_eq!(
            rpc(&connection, "echo", Some(json!(what)), 10_000).await,
            Ok(json!(what)),
            "after {what}"
        );
    }
    assert!(connection.send(IsOpen).await.unwrap());
    // The reply to an unknown id is an object: published as a raw message (M5).
    reports
        .wait_for("unknown-id reply as raw message", |report| {
            matches!(
                report,
                ConnectionReport::Published(GatewayEvent::RawMessage(_))
            )
        })
        .await;
    assert!(
        !reports
            .seen
            .iter()
            .any(|report| matches!(report, ConnectionReport::Closed { .. })),
        "{:#?}",
        reports.seen
    );
}

#[actix_rt::test]
async fn h3_frames_and_pongs_count_as_proof_of_life() {
    // The gateway pings every 300 ms and drops a client that does not answer within that time.
    let (_sim, listening) = start_sim(&["--ping-interval-ms", "300"]);
    let mut config = config_for(listening.port);
    config.proof_of_life_interval_ms = 100;
    let (connection, mut reports) = start_connection(config);
    open(&connection, &mut reports, 9).await;

    // Frames: the health event after hello-ok.
    reports
        .wait_for("proof of life from frames", |report| {
            matches!(report, ConnectionReport::ProofOfLife { epoch: 9 })
        })
        .await;

    // Pongs: our ping's pong is proof of life on its own.
    reports.collect_for(Duration::from_millis(300)).await;
    connection.send(Ping).await.unwrap();
    reports
        .wait_for("proof of life after ping", |report| {
            matches!(report, ConnectionReport::ProofOfLife { epoch: 9 })
        })
        .await;

    // We answer the gateway's pings: after several intervals the socket is still open.
    let quiet = reports.collect_for(Duration::from_millis(1_500)).await;
    assert!(
        !quiet
            .iter()
            .any(|report| matches!(report, ConnectionReport::Closed { .. })),
        "{quiet:#?}"
    );
    assert!(connection.send(IsOpen).await.unwrap());

    // A flood of frames is coalesced: far fewer reports than frames.
    reports.collect_for(Duration::from_millis(200)).await;
    let started = Instant::now();
    let calls = (0..300).map(|index| rpc(&connection, "echo", Some(json!(index)), 30_000));
    for answer in futures_util::future::join_all(calls).await {
        assert!(answer.is_ok());
    }
    let elapsed_ms = started.elapsed().as_millis() as usize;
    let flood = reports.collect_for(Duration::from_millis(300)).await;
    let alive = flood
        .iter()
        .filter(|report| matches!(report, ConnectionReport::ProofOfLife { .. }))
        .count();
    assert!(alive >= 1);
    // Leading + trailing report per interval, plus the server's pings in the window.
    assert!(
        alive <= (elapsed_ms + 300) / 100 + 3,
        "{alive} proof-of-life reports in {elapsed_ms} ms"
    );
}

#[actix_rt::test]
async fn p4_shutdown_event_and_1012_are_reported() {
    let (_sim, listening) = start_sim(&[]);
    let (connection, mut reports) = start_connection(config_for(listening.port));
    open(&connection, &mut reports, 3).await;
    let pending = rpc(&connection, "sleep", Some(json!({"ms": 10_000})), 30_000);
    let fault = rpc(
        &connection,
        "sim.fault",
        Some(json!({"kind": "close", "code": 1012, "shutdownEvent": "restarting"})),
        10_000,
    );
    let (pending, fault) = futures_util::future::join(pending, fault).await;
    assert!(fault.is_ok(), "{fault:?}");
    // A socket closed under a pending call rejects it as not connected.
    assert_eq!(pending, Err(RpcError::NotConnected));
    let shutdown = reports
        .wait_for("shutdown announcement", |report| {
            matches!(report, ConnectionReport::Shutdown { .. })
        })
        .await;
    match shutdown {
        ConnectionReport::Shutdown {
            epoch,
            restart_expected_ms,
        } => {
            assert_eq!(epoch, 3);
            assert!(restart_expected_ms.is_some());
        }
        _ => unreachable!(),
    }
    reports
        .wait_for("close 1012", |report| {
            matches!(
                report,
                ConnectionReport::Closed {
                    epoch: 3,
                    code: Some(1012)
                }
            )
        })
        .await;
    assert!(!connection.send(IsOpen).await.unwrap());
    // Exactly one Closed for the connection.
    reports.collect_for(Duration::from_millis(300)).await;
    let closed = reports
        .seen
        .iter()
        .filter(|report| matches!(report, ConnectionReport::Closed { .. }))
        .count();
    assert_eq!(closed, 1);
}

#[actix_rt::test]
async fn h5_dropped_connection_reports_1006() {
    let (_sim, listening) = start_sim(&[]);
    let (connection, mut reports) = start_connection(config_for(listening.port));
    open(&connection, &mut reports, 2).await;
    assert!(rpc(
        &connection,
        "sim.fault",
        Some(json!({"kind": "drop"})),
        10_000
    )
    .await
    .is_ok());
    reports
        .wait_for("close 1006", |report| {
            matches!(
                report,
                ConnectionReport::Closed {
                    epoch: 2,
                    code: Some(1006)
                }
            )
        })
        .await;
    assert_eq!(
        rpc(&connection, "echo", None, 10_000).await,
        Err(RpcError::NotConnected)
    );
}

#[actix_rt::test]
async fn t3_close_rejects_pending_with_stopped() {
    let (_sim, listening) = start_sim(&[]);
    let (connection, mut reports) = start_connection(config_for(listening.port));
    open(&connection, &mut reports, 6).await;
    let pending = {
        let connection = connection.clone();
        actix_rt::spawn(async move {
            rpc(&connection, "sleep", Some(json!({"ms": 20_000})), 60_000).await
        })
    };
    // Make sure the call is in flight before closing.
    let deadline = Instant::now() + SOON;
    while !reports
        .seen
        .iter()
        .any(|report| matches!(report, ConnectionReport::ProofOfLife { .. }))
        && Instant::now() < deadline
    {
        reports.collect_for(Duration::from_millis(50)).await;
    }
    reports.collect_for(Duration::from_millis(200)).await;
    assert_eq!(established_client_sockets(listening.port), 1);
    let started = Instant::now();
    connection
        .send(Close {
            reason: CloseReason::Stopped,
        })
        .await
        .unwrap();
    let answer = pending.await.unwrap();
    assert_eq!(answer, Err(RpcError::Stopped));
    assert_eq!(answer.unwrap_err().to_string(), "Gateway stopped");
    // At once: no close handshake to wait for.
    assert!(started.elapsed() < Duration::from_secs(5));
    reports
        .wait_for("closed by us", |report| {
            matches!(
                report,
                ConnectionReport::Closed {
                    epoch: 6,
                    code: None
                }
            )
        })
        .await;
    assert!(!connection.send(IsOpen).await.unwrap());
    // T3: the TCP connection is gone, not left waiting for a close handshake.
    let deadline = Instant::now() + SOON;
    while established_client_sockets(listening.port) > 0 && Instant::now() < deadline {
        reports.collect_for(Duration::from_millis(20)).await;
    }
    assert_eq!(established_client_sockets(listening.port), 0);
    assert_eq!(
        rpc(&connection, "echo", None, 10_000).await,
        Err(RpcError::NotConnected)
    );
    // A second close is a no-op: still exactly one Closed.
    connection
        .send(Close {
            reason: CloseReason::Lost,
        })
        .await
        .unwrap();
    reports.collect_for(Duration::from_millis(300)).await;
    let closed = reports
        .seen
        .iter()
        .filter(|report| matches!(report, ConnectionReport::Closed { .. }))
        .count();
    assert_eq!(closed, 1);
}

#[actix_rt::test]
async fn m6_rpc_outcomes_are_reported() {
    let (_sim, listening) = start_sim(&[]);
    let (connection, mut reports) = start_connection(config_for(listening.port));
    // Not connected.
    let _ = rpc(&connection, "health", None, 10_000).await;
    open(&connection, &mut reports, 1).await;
    // Success, gateway error, timeout.
    assert!(rpc(&connection, "health", None, 10_000).await.is_ok());
    assert!(rpc(&connection, "nope", None, 10_000).await.is_err());
    assert!(rpc(&connection, "sleep", Some(json!({"ms": 2_000})), 100)
        .await
        .is_err());
    reports
        .wait_for("timeout outcome", |report| {
            matches!(report, ConnectionReport::RpcFinished { method, .. } if method == "sleep")
        })
        .await;
    let health: Vec<_> = finished_for(&reports.seen, "health").cloned().collect();
    assert_eq!(health, vec![Err(RpcFailureKind::NotConnected)]);
    // The one success is reported, and before the failure that followed it (so the
    // supervisor's consecutive-failure count is reset in the right order).
    assert_eq!(successes(&reports.seen), 1);
    let success_at = reports
        .seen
        .iter()
        .position(|report| matches!(report, ConnectionReport::RpcsSucceeded { .. }))
        .expect("a success report");
    let nope_at = reports
        .seen
        .iter()
        .position(|report| matches!(report, ConnectionReport::RpcFinished { method, .. } if method == "nope"))
        .expect("the gateway-error report");
    assert!(
        success_at < nope_at,
        "success reported after the later failure"
    );
    let nope: Vec<_> = finished_for(&reports.seen, "nope").cloned().collect();
    assert_eq!(nope, vec![Err(RpcFailureKind::Gateway)]);
    let sleep: Vec<_> = finished_for(&reports.seen, "sleep").cloned().collect();
    assert_eq!(sleep, vec![Err(RpcFailureKind::Timeout)]);
}
