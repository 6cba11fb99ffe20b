//! C1, C2, A1, A3, W1: opening a connection to the real simulator, and readiness probing.

mod connection_support;

use std::time::{Duration, Instant};

use connection_support::*;
use gatewarden::connection::{
    await_readiness, probe_gateway, ConnectionReport, GetHandshake, IsOpen, Open, TokenSource,
};
use gatewarden::launch::Secret;
use gatewarden_core::config::ConnectConfig;
use gatewarden_core::error::StartFailure;
use serde_json::json;

fn handshake_failure(report: &ConnectionReport) -> Option<&StartFailure> {
    match report {
        ConnectionReport::HandshakeFailed { failure, .. } => Some(failure),
        _ => None,
    }
}

async fn expect_failure(reports: &mut Reports, epoch: u64) -> StartFailure {
    let report = reports
        .wait_for("handshake outcome", |report| {
            matches!(report,
                ConnectionReport::HandshakeFailed { epoch: e, .. }
                | ConnectionReport::HandshakeCompleted { epoch: e, .. }
                | ConnectionReport::StartupWindow { epoch: e, .. } if *e == epoch)
        })
        .await;
    handshake_failure(&report)
        .cloned()
        .unwrap_or_else(|| panic!("expected a failed handshake, got {report:?}"))
}

#[actix_rt::test]
async fn c1_handshake_reaches_hello_ok_and_records_protocol_4() {
    let (_sim, listening) = start_sim(&[]);
    let (connection, mut reports) = start_connection(config_for(listening.port));
    assert!(!connection.send(IsOpen).await.unwrap());
    connection.send(Open { epoch: 7 }).await.unwrap();
    let report = reports
        .wait_for("handshake completed", |report| {
            matches!(report, ConnectionReport::HandshakeCompleted { .. })
        })
        .await;
    let ConnectionReport::HandshakeCompleted {
        epoch,
        handshake,
        hello,
    } = report
    else {
        unreachable!()
    };
    assert_eq!(epoch, 7);
    assert_eq!(handshake.protocol, 4);
    assert_eq!(hello.protocol, 4);
    assert_eq!(handshake.server_version.as_deref(), Some("2026.9.6-sim"));
    assert!(handshake.boot_id.is_some());
    assert!(handshake.has_snapshot);
    assert_eq!(handshake.tick_interval_ms, Some(30_000));
    assert!(hello.scopes.iter().any(|scope| scope == "operator.admin"));

    assert!(connection.send(IsOpen).await.unwrap());
    let recorded = connection.send(GetHandshake).await.unwrap().unwrap();
    assert_eq!(recorded.protocol, 4);
    // The open socket answers requests.
    let echoed = rpc(&connection, "echo", Some(json!({"a": 1})), 10_000).await;
    assert_eq!(echoed.unwrap(), json!({"a": 1}));
}

#[actix_rt::test]
async fn c1_no_challenge_times_out() {
    let (_sim, listening) = start_sim(&["--no-challenge"]);
    let mut config = config_for(listening.port);
    config.connect.challenge_timeout_ms = 300;
    let (connection, mut reports) = start_connection(config);
    let started = Instant::now();
    connection.send(Open { epoch: 1 }).await.unwrap();
    let failure = expect_failure(&mut reports, 1).await;
    assert_eq!(failure, StartFailure::ChallengeTimeout);
    assert_eq!(
        failure.to_string(),
        "Timed out waiting for connect.challenge"
    );
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert!(!connection.send(IsOpen).await.unwrap());
}

#[actix_rt::test]
async fn c1_connection_refused_names_the_port() {
    let port = free_port();
    let (connection, mut reports) = start_connection(config_for(port));
    connection.send(Open { epoch: 3 }).await.unwrap();
    assert_eq!(
        expect_failure(&mut reports, 3).await,
        StartFailure::ConnectionRefused { port }
    );
}

#[actix_rt::test]
async fn c1_rejected_token_reports_auth_token_mismatch() {
    let (_sim, listening) = start_sim(&[]);
    let mut config = config_for(listening.port);
    config.token = TokenSource::Value(Secret::new("wrong-token"));
    let (connection, mut reports) = start_connection(config);
    connection.send(Open { epoch: 2 }).await.unwrap();
    let failure = expect_failure(&mut reports, 2).await;
    let StartFailure::HandshakeRejected {
        details_code,
        message,
        ..
    } = &failure
    else {
        panic!("expected a rejection, got {failure:?}");
    };
    assert_eq!(details_code.as_deref(), Some("AUTH_TOKEN_MISMATCH"));
    assert!(!message.contains("wrong-token"), "{message}");
    assert!(failure.is_auth_rejection());
    assert!(!failure.is_transient());
}

#[actix_rt::test]
async fn c2_offers_3_to_4_and_older_gateway_chooses_3() {
    let (_sim, listening) = start_sim(&["--protocol", "3"]);
    let config = config_for(listening.port);
    assert_eq!(
        (config.connect.min_protocol, config.connect.max_protocol),
        (3, 4)
    );
    let (connection, mut reports) = start_connection(config);
    connection.send(Open { epoch: 1 }).await.unwrap();
    let report = reports
        .wait_for("handshake outcome", |report| {
            !matches!(
                report,
                ConnectionReport::RpcFinished { .. }
                    | ConnectionReport::RpcsSucceeded { .. }
                    | ConnectionReport::ProofOfLife { .. }
            )
        })
        .await;
    match report {
        ConnectionReport::HandshakeCompleted { handshake, .. } => {
            assert_eq!(handshake.protocol, 3)
        }
        other => panic!("expected hello-ok, got {other:?}"),
    }
    assert_eq!(
        connection
            .send(GetHandshake)
            .await
            .unwrap()
            .unwrap()
            .protocol,
        3
    );
}

#[actix_rt::test]
async fn c2_protocol_4_only_against_3_only_gateway_is_rejected() {
    let (_sim, listening) = start_sim(&["--protocol", "3"]);
    let mut config = config_for(listening.port);
    config.connect.min_protocol = 4;
    config.connect.max_protocol = 4;
    let (connection, mut reports) = start_connection(config);
    connection.send(Open { epoch: 1 }).await.unwrap();
    let failure = expect_failure(&mut reports, 1).await;
    match &failure {
        StartFailure::HandshakeRejected { details_code, .. } => {
            assert_eq!(details_code.as_deref(), Some("PROTOCOL_MISMATCH"))
        }
        other => panic!("expected PROTOCOL_MISMATCH, got {other:?}"),
    }
}

#[actix_rt::test]
async fn a1_device_identity_grants_scopes() {
    let (_sim, listening) = start_sim(&[]);
    let state = tempfile::tempdir().unwrap();
    let identity_path = state.path().join("identity").join("device.json");
    let mut config = config_for(listening.port);
    config.identity_path = Some(identity_path.clone());
    // A platform with capitals and spaces: the v3 payload signs it trimmed and lowercased.
    config.platform = " Linux ".to_string();
    config.scopes = vec!["operator.read".to_string(), "operator.admin".to_string()];
    let (connection, mut reports) = start_connection(config);
    open(&connection, &mut reports, 1).await;
    let hello = connection.send(GetHandshake).await.unwrap().unwrap();
    assert!(
        hello.scopes.iter().any(|scope| scope == "operator.read"),
        "{:?}",
        hello.scopes
    );
    // A wrong signature would have been rejected (DEVICE_AUTH_*); `status` needs operator.read.
    let status = rpc(&connection, "status", None, 10_000).await.unwrap();
    assert_eq!(status["pid"], listening.pid);
    // The identity was created once and is reused by the next connection.
    let stored = std::fs::read_to_string(&identity_path).unwrap();
    connection.send(Open { epoch: 2 }).await.unwrap();
    reports
        .wait_for("second handshake", |report| {
            matches!(
                report,
                ConnectionReport::HandshakeCompleted { epoch: 2, .. }
            )
        })
        .await;
    assert_eq!(std::fs::read_to_string(&identity_path).unwrap(), stored);
}

#[actix_rt::test]
async fn a1_unusable_identity_path_connects_without_device() {
    let (_sim, listening) = start_sim(&[]);
    let state = tempfile::tempdir().unwrap();
    // A file where the directory should be: no identity can be stored there.
    let blocker = state.path().join("not-a-dir");
    std::fs::write(&blocker, "x").unwrap();
    let mut config = config_for(listening.port);
    config.identity_path = Some(blocker.join("device.json"));
    let (connection, mut reports) = start_connection(config);
    open(&connection, &mut reports, 1).await;
    assert!(rpc(&connection, "health", None, 10_000).await.is_ok());
}

#[actix_rt::test]
async fn a3_token_read_at_connect_time_from_env() {
    let (_sim, listening) = start_sim(&[]);
    let variable = format!("GATEWARDEN_CONN_TEST_TOKEN_{}", std::process::id());
    std::env::remove_var(&variable);
    let mut config = config_for(listening.port);
    config.token = TokenSource::Env(variable.clone());
    let (connection, mut reports) = start_connection(config);

    // Unset at connect time: no token is sent.
    connection.send(Open { epoch: 1 }).await.unwrap();
    match expect_failure(&mut reports, 1).await {
        StartFailure::HandshakeRejected { details_code, .. } => {
            assert_eq!(details_code.as_deref(), Some("AUTH_TOKEN_MISSING"))
        }
        other => panic!("{other:?}"),
    }

    // Set after the actor was created: the next connect reads it.
    std::env::set_var(&variable, TOKEN);
    open(&connection, &mut reports, 2).await;

    // Rotated to a wrong value: the next connect uses the new value.
    std::env::set_var(&variable, "rotated-wrong");
    connection.send(Open { epoch: 3 }).await.unwrap();
    match expect_failure(&mut reports, 3).await {
        StartFailure::HandshakeRejected { details_code, .. } => {
            assert_eq!(details_code.as_deref(), Some("AUTH_TOKEN_MISMATCH"))
        }
        other => panic!("{other:?}"),
    }
    std::env::remove_var(&variable);
    // The token never shows in a report.
    let shown = format!("{:?}", reports.seen);
    assert!(!shown.contains(TOKEN) && !shown.contains("rotated-wrong"));
}

#[actix_rt::test]
async fn w1_bare_listener_is_not_ready() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accept and say nothing, holding the connections open.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().map_while(Result::ok) {
            held.push(stream);
            if held.len() > 64 {
                break;
            }
        }
    });
    let started = Instant::now();
    assert!(!probe_gateway("127.0.0.1", port, 400).await);
    assert!(started.elapsed() < Duration::from_secs(10));

    let mut config = ConnectConfig::default();
    config.ready_timeout_ms = 900;
    config.probe_timeout_ms = 300;
    match await_readiness("127.0.0.1", port, &config).await {
        Err(StartFailure::ReadyTimeout { waited_ms }) => assert!(waited_ms >= 900),
        other => panic!("{other:?}"),
    }

    // A WebSocket that opens but sends no challenge is not ready either.
    let (_quiet, quiet) = start_sim(&["--no-challenge"]);
    assert!(!probe_gateway("127.0.0.1", quiet.port, 400).await);
    // A gateway is.
    let (_sim, listening) = start_sim(&[]);
    assert!(probe_gateway("127.0.0.1", listening.port, 10_000).await);
    // Nothing listening: not ready, and fast.
    assert!(!probe_gateway("127.0.0.1", free_port(), 10_000).await);
}

#[actix_rt::test]
async fn w1_readiness_detected_fast_after_slow_start() {
    let port = free_port();
    let port_text = port.to_string();
    let mut sim = spawn_sim(&[
        "--port",
        &port_text,
        "--token",
        TOKEN,
        "--slow-start-ms",
        "300",
    ]);
    let started = Instant::now();
    let mut config = ConnectConfig::default();
    config.ready_timeout_ms = 20_000;
    await_readiness("127.0.0.1", port, &config).await.unwrap();
    let ready_unix_ms = unix_ms();
    let waited = started.elapsed();
    let listening = sim.next_listening(SOON).expect("listening line");
    assert_eq!(listening.port, port);
    assert!(
        waited >= Duration::from_millis(250),
        "ready before the gateway listened: {waited:?}"
    );
    // The probe interval is capped at 100 ms: readiness follows the listen closely. The bound
    // is generous because the machine is shared.
    let lag = ready_unix_ms.saturating_sub(listening.unix_ms);
    assert!(lag < 1_500, "readiness detected {lag} ms after listening");
}

#[actix_rt::test]
async fn w1_startup_window_is_reported() {
    let (_sim, listening) = start_sim(&["--startup-window-ms", "20000"]);
    let (connection, mut reports) = start_connection(config_for(listening.port));
    // The gateway answers the probe during its startup window: it is up, not yet ready.
    assert!(probe_gateway("127.0.0.1", listening.port, 10_000).await);
    connection.send(Open { epoch: 4 }).await.unwrap();
    let report = reports
        .wait_for("startup window", |report| {
            !matches!(
                report,
                ConnectionReport::RpcFinished { .. }
                    | ConnectionReport::RpcsSucceeded { .. }
                    | ConnectionReport::ProofOfLife { .. }
            )
        })
        .await;
    match report {
        ConnectionReport::StartupWindow {
            epoch,
            retry_after_ms,
        } => {
            assert_eq!(epoch, 4);
            assert_eq!(retry_after_ms, Some(500));
        }
        other => panic!("expected the startup window, got {other:?}"),
    }
    assert!(!connection.send(IsOpen).await.unwrap());
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
