//! The handle from a plain thread with no async runtime at all: its futures need none, and
//! `gatewarden::handle::block_on` runs them.

mod handle_support;

use gatewarden::handle::{block_on, GatewayHandle};
use gatewarden_core::machine::LifecycleState;
use handle_support::{alive, options};
use serde_json::json;

#[test]
fn a_plain_thread_starts_calls_and_shuts_down_a_gateway_through_block_on() {
    let state_dir = tempfile::tempdir().expect("temp dir");
    let options = options(&state_dir, &[]);
    let thread = std::thread::spawn(move || {
        let handle = GatewayHandle::spawn(options).expect("handle");
        let outcome = block_on(handle.start());
        assert!(outcome.is_ok(), "start: {outcome:?}");
        let status = block_on(handle.status()).expect("status");
        assert_eq!(status.state, LifecycleState::Running);
        let pid = status.pid.expect("pid");
        for n in 0..100 {
            assert_eq!(
                block_on(handle.rpc("echo", json!({ "n": n }))),
                Ok(json!({ "n": n }))
            );
        }
        block_on(handle.shutdown()).expect("shutdown");
        pid
    });
    let pid = thread.join().expect("the thread finished");
    assert!(!alive(pid));
}
