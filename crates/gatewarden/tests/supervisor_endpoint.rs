//! A gateway host that is not loopback would need TLS, which this build does not have: `start`
//! (and `GatewayHandle::spawn`) always validate the options and refuse such a host with a typed
//! error before anything starts, so no socket ever carries the token off the machine. Config
//! values that cannot work (Q3) are refused the same way. (The check before every connect stays
//! as defence in depth; it has a unit test in `src/endpoint.rs`.)

mod supervisor_rules_common;
mod supervisor_support;

use gatewarden::endpoint::{EndpointError, OptionsError};
use gatewarden::supervisor::GetStatus;
use gatewarden::GatewaySupervisor;
use gatewarden_core::machine::LifecycleState;
use supervisor_rules_common::init_tracing;
use supervisor_support::options;

#[actix_rt::test]
async fn a3_start_refuses_a_remote_host_with_a_typed_error() {
    init_tracing();
    let state_dir = tempfile::tempdir().unwrap();
    let base = options(&state_dir, &[]);
    let refused = |host: &str| {
        let mut options = base.clone();
        options.host = host.to_string();
        GatewaySupervisor::start(options).err()
    };
    // Documentation range (RFC 5737): refused before anything starts, so nothing is sent.
    assert_eq!(
        refused("192.0.2.10"),
        Some(OptionsError::Endpoint(EndpointError::RemoteNotAllowed {
            host: "192.0.2.10".into()
        }))
    );
    // Not loopback by address, yet Linux delivers a connect to 0.0.0.0 to this host.
    assert_eq!(
        refused("0.0.0.0"),
        Some(OptionsError::Endpoint(EndpointError::RemoteNotAllowed {
            host: "0.0.0.0".into()
        }))
    );
    assert_eq!(
        refused(""),
        Some(OptionsError::Endpoint(EndpointError::EmptyHost))
    );
    // Loopback over ws:// is the supported case.
    for host in ["127.0.0.1", "::1", "localhost"] {
        let mut options = base.clone();
        options.host = host.to_string();
        let supervisor = GatewaySupervisor::start(options).expect("loopback is accepted");
        assert_eq!(
            supervisor.send(GetStatus).await.unwrap().state,
            LifecycleState::Stopped
        );
    }
}

#[actix_rt::test]
async fn q3_start_refuses_a_config_value_that_cannot_work_naming_its_key() {
    init_tracing();
    let state_dir = tempfile::tempdir().unwrap();
    let mut options = options(&state_dir, &[]);
    options.core.heartbeat.interval_ms = 0;
    match GatewaySupervisor::start(options) {
        Err(OptionsError::Config(invalid)) => assert_eq!(invalid.key, "heartbeat.interval_ms"),
        other => panic!("expected a refused config value, got {:?}", other.err()),
    }
}
