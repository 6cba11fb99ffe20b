//! What a `GatewayHandle` answers when things go wrong: a refused option before anything starts,
//! and a start that fails (L1–L8) as an error carrying the machine's outcome, not a string.

mod handle_support;

use gatewarden::handle::{GatewayHandle, HandleError};
use gatewarden_core::machine::{CommandOutcome, LifecycleState};
use handle_support::{options, WAIT};

#[test]
fn a3_spawn_refuses_a_remote_gateway_host_with_a_typed_error_before_starting_anything() {
    let state_dir = tempfile::tempdir().expect("temp dir");
    let mut options = options(&state_dir, &[]);
    options.host = "192.0.2.10".into();
    let refused = GatewayHandle::spawn(options);
    assert!(
        matches!(refused, Err(HandleError::Options(_))),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l8_a_failed_start_is_an_error_carrying_the_failed_outcome() {
    let state_dir = tempfile::tempdir().expect("temp dir");
    // The sim exits with 78 (invalid config) instead of listening.
    let handle =
        GatewayHandle::spawn(options(&state_dir, &["--fault-invalid-config"])).expect("handle");
    let started = tokio::time::timeout(WAIT * 2, handle.start())
        .await
        .expect("the start flow ended within the bound");
    match started {
        Err(HandleError::Failed(CommandOutcome::Failed { .. })) => {}
        other => panic!("a failed start answered {other:?}"),
    }
    let status = handle.status().await.expect("status");
    assert_ne!(status.state, LifecycleState::Running);
    assert!(status.pid.is_none(), "{status:?}");
    handle.shutdown().await.expect("shutdown");
}
