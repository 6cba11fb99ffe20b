//! A gateway host that is not loopback needs an explicit opt-in and `wss://`, and this build has no
//! TLS: `try_start` refuses such options with a typed error, and a supervisor started unchecked
//! never opens a socket to such a host (the token would cross the network in clear text).

mod supervisor_rules_common;
mod supervisor_support;

use gatewarden::endpoint::{EndpointError, GatewayScheme};
use gatewarden::supervisor::{GetDiagnostics, GetStatus, Start, Stop};
use gatewarden::GatewaySupervisor;
use gatewarden_core::machine::{CommandOutcome, LifecycleState};
use supervisor_rules_common::{init_tracing, LogCapture};
use supervisor_support::options;

#[actix_rt::test]
async fn a3_try_start_refuses_a_remote_host_with_a_typed_error() {
    init_tracing();
    let state_dir = tempfile::tempdir().unwrap();
    let base = options(&state_dir, &[]);
    // Documentation range (RFC 5737): refused before anything starts, so nothing is sent.
    let host = "192.0.2.10".to_string();
    let refused = |allow_remote_host: bool, scheme: GatewayScheme| {
        let mut options = base.clone();
        options.host = host.clone();
        options.allow_remote_host = allow_remote_host;
        options.scheme = scheme;
        GatewaySupervisor::try_start(options).err()
    };
    assert_eq!(
        refused(false, GatewayScheme::Ws),
        Some(EndpointError::RemoteNotAllowed { host: host.clone() })
    );
    assert_eq!(
        refused(true, GatewayScheme::Ws),
        Some(EndpointError::RemoteWithoutTls { host: host.clone() })
    );
    assert_eq!(
        refused(true, GatewayScheme::Wss),
        Some(EndpointError::TlsNotBuiltIn { host: host.clone() })
    );
    // Loopback over ws:// is the supported case.
    let supervisor = GatewaySupervisor::try_start(base).expect("loopback is accepted");
    assert_eq!(
        supervisor.send(GetStatus).await.unwrap().state,
        LifecycleState::Stopped
    );
}

#[actix_rt::test]
async fn a3_an_unchecked_remote_host_is_never_connected() {
    init_tracing();
    let capture = LogCapture::default();
    let _guard = capture.install();
    let state_dir = tempfile::tempdir().unwrap();
    let mut options = options(&state_dir, &[]);
    // Not loopback by address, yet Linux delivers a connect to 0.0.0.0 to this host: without the
    // check before every connect, the supervisor would reach the sim it spawned and run.
    options.host = "0.0.0.0".to_string();
    options.core.connect.ready_timeout_ms = 1_000;
    options.core.start.max_attempts = 1;
    let supervisor = GatewaySupervisor::start(options);
    let outcome = supervisor.send(Start).await.unwrap();
    assert!(
        matches!(outcome, CommandOutcome::Failed { .. }),
        "{outcome:?}"
    );
    let status = supervisor.send(GetStatus).await.unwrap();
    assert_ne!(status.state, LifecycleState::Running, "{status:?}");
    let diagnostics = supervisor.send(GetDiagnostics).await.unwrap();
    assert!(diagnostics.process_starts >= 1, "{diagnostics:?}");
    assert!(
        capture.count("is not a loopback address") >= 1,
        "the refusal is logged"
    );
    assert_eq!(
        capture.count("connected to the gateway"),
        0,
        "a socket reached the gateway"
    );
    supervisor.send(Stop).await.unwrap();
}
