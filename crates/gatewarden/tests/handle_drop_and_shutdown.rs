//! T1–T5 for embedding apps: a gateway owned by a handle is stopped, never orphaned, when the
//! last handle is dropped, and so is the gateway of a bare supervisor when the app drops its last
//! `Addr`; `shutdown()` may be called any number of times and everything after it answers "shut
//! down" instead of hanging.

mod handle_support;

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use gatewarden::handle::{GatewayHandle, HandleError};
use gatewarden::supervisor::{GetStatus, Start};
use gatewarden_core::rpc::RpcError;
use handle_support::{alive, options, running, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t4_dropping_the_last_handle_stops_the_gateway_within_the_kill_grace() {
    let state_dir = tempfile::tempdir().expect("temp dir");
    let options = options(&state_dir, &[]);
    let grace = Duration::from_millis(options.core.stop.kill_grace_ms);
    let (handle, pid) = running(options).await;
    let clone = handle.clone();
    drop(handle);
    // A clone keeps it running.
    assert!(clone.status().await.is_ok());
    assert!(alive(pid));
    let dropped = Instant::now();
    drop(clone);
    while alive(pid) {
        assert!(
            dropped.elapsed() <= grace + Duration::from_secs(1),
            "gateway {pid} still alive {:?} after the last handle was dropped",
            dropped.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t5_shutdown_twice_is_fine_and_every_later_call_answers_shut_down() {
    let state_dir = tempfile::tempdir().expect("temp dir");
    let (handle, pid) = running(options(&state_dir, &[])).await;
    let clone = handle.clone();
    let mut events = handle.subscribe().await;
    handle.shutdown().await.expect("first shutdown");
    assert!(!alive(pid), "gateway {pid} alive after shutdown answered");
    handle.shutdown().await.expect("second shutdown");
    clone.shutdown().await.expect("a clone's shutdown");
    assert!(matches!(handle.status().await, Err(HandleError::ShutDown)));
    assert!(matches!(clone.start().await, Err(HandleError::ShutDown)));
    assert!(matches!(handle.health().await, Err(HandleError::ShutDown)));
    assert_eq!(handle.rpc("echo", None).await, Err(RpcError::Stopped));
    assert!(handle.addr().await.is_none());
    // The stream of a shut-down supervisor ends, and a new one ends at once.
    tokio::time::timeout(WAIT, async { while events.next().await.is_some() {} })
        .await
        .expect("the event stream ended");
    assert!(handle.subscribe().await.next().await.is_none());
}

/// An actix app that drops every `Addr` of its supervisor (no handle): the supervisor's children
/// hold only weak addresses back to it, so it notices, stops its gateway gracefully (T1–T5) and
/// ends, and its actors with it.
#[actix_rt::test]
async fn t4_dropping_every_addr_of_a_bare_supervisor_stops_the_gateway_and_ends_it() {
    let state_dir = tempfile::tempdir().expect("temp dir");
    let options = options(&state_dir, &[]);
    let grace = Duration::from_millis(options.core.stop.kill_grace_ms);
    let supervisor = gatewarden::GatewaySupervisor::start(options).expect("valid options");
    let outcome = tokio::time::timeout(WAIT, supervisor.send(Start))
        .await
        .expect("start within the bound")
        .expect("supervisor alive");
    assert_eq!(outcome, gatewarden::CommandOutcome::Completed);
    let pid = supervisor
        .send(GetStatus)
        .await
        .expect("supervisor alive")
        .pid
        .expect("a running gateway has a pid");
    let weak = supervisor.downgrade();
    let dropped = Instant::now();
    drop(supervisor);
    while alive(pid) {
        assert!(
            dropped.elapsed() <= grace + Duration::from_secs(1),
            "gateway {pid} still alive {:?} after the last Addr was dropped",
            dropped.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The supervisor itself ends (its children went with it: nothing else held them).
    let deadline = Instant::now() + WAIT;
    while weak.upgrade().is_some() {
        assert!(
            Instant::now() < deadline,
            "the supervisor actor never ended"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A handle on a supervisor an actix app owns does not stop it when dropped.
#[actix_rt::test]
async fn t1_a_handle_from_an_address_leaves_the_apps_supervisor_running_when_dropped() {
    let state_dir = tempfile::tempdir().expect("temp dir");
    let supervisor =
        gatewarden::GatewaySupervisor::start(options(&state_dir, &[])).expect("valid options");
    let handle = GatewayHandle::from_addr(supervisor.clone());
    let outcome = tokio::time::timeout(WAIT, handle.start())
        .await
        .expect("start");
    assert!(outcome.is_ok(), "{outcome:?}");
    let pid = handle.status().await.expect("status").pid.expect("pid");
    drop(handle);
    // Give a wrongly owning handle's shutdown every chance to arrive first.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = supervisor.send(GetStatus).await.expect("supervisor alive");
    assert_eq!(status.pid, Some(pid));
    assert!(alive(pid));
    let again = GatewayHandle::from_addr(supervisor.clone());
    again.shutdown().await.expect("shutdown");
    assert!(!alive(pid));
    assert!(
        supervisor.send(GetStatus).await.is_err(),
        "supervisor still answers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t6_force_terminate_for_quit_through_the_handle_kills_the_owned_gateway() {
    let state_dir = tempfile::tempdir().expect("temp dir");
    // A gateway that ignores SIGTERM: only the kill ends it.
    let (handle, pid) = running(options(&state_dir, &["--ignore-sigterm"])).await;
    let outcome = tokio::time::timeout(WAIT, handle.force_terminate_for_quit())
        .await
        .expect("answered within the bound");
    assert!(
        matches!(
            outcome,
            Ok(gatewarden_core::machine::CommandOutcome::Completed)
        ),
        "{outcome:?}"
    );
    let deadline = Instant::now() + WAIT;
    while alive(pid) {
        assert!(Instant::now() < deadline, "gateway {pid} survived T6");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    handle.shutdown().await.expect("shutdown");
}
