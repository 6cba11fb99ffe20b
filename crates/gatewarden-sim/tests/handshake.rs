//! Handshake tests against the real simulator binary: challenge, connect schema, protocol, token, device auth, scopes.

mod common;

use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn handshake_succeeds_with_token_and_reports_hello_ok_fields() {
    let (_sim, listening) = sim()
        .args(&["--token", TOKEN, "--tick-interval-ms", "1234"])
        .start();
    let (mut client, reply) = Client::connect(
        listening.port,
        connect_params("test", "test", Some(TOKEN)),
        None,
    )
    .await;
    assert_eq!(reply["ok"], true, "{reply}");
    let hello = &reply["payload"];
    assert_eq!(hello["type"], "hello-ok");
    assert_eq!(hello["protocol"], 4);
    assert_eq!(hello["server"]["version"], "2026.9.6-sim");
    assert_eq!(hello["server"]["bootId"], listening.boot_id.as_str());
    assert!(hello["server"]["connId"].is_string() && hello["server"]["buildId"].is_string());
    assert!(hello["features"]["methods"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m == "status"));
    assert!(hello["snapshot"]["uptimeMs"].is_u64());
    assert_eq!(hello["auth"]["method"], "token");
    assert_eq!(hello["auth"]["role"], "operator");
    assert_eq!(hello["policy"]["maxPayload"], 26214400);
    assert_eq!(hello["policy"]["maxBufferedBytes"], 52428800);
    assert_eq!(hello["policy"]["tickIntervalMs"], 1234);
    let health = client
        .event("health", SOON)
        .await
        .expect("health event after hello");
    assert_eq!(health["seq"], 1);
}

#[tokio::test]
async fn handshake_rejects_first_request_that_is_not_connect_with_1008() {
    let (_sim, listening) = sim().start();
    let mut client = Client::open(listening.port).await;
    let reply = client.request("health", json!({})).await;
    assert_eq!(reply["error"]["code"], "INVALID_REQUEST");
    assert_eq!(
        reply["error"]["message"],
        "invalid handshake: first request must be connect"
    );
    assert_eq!(
        client.closed(SOON).await,
        Closed::Code(
            1008,
            "invalid handshake: first request must be connect".into()
        )
    );
}

#[tokio::test]
async fn handshake_rejects_unknown_property_with_1008() {
    let (_sim, listening) = sim().start();
    let mut params = connect_params("test", "test", None);
    params["foo"] = json!(1);
    let (mut client, reply) = Client::connect(listening.port, params, None).await;
    assert_eq!(reply["error"]["code"], "INVALID_REQUEST");
    assert_eq!(
        reply["error"]["message"],
        "invalid connect params: at root: unexpected property 'foo'"
    );
    assert!(matches!(client.closed(SOON).await, Closed::Code(1008, _)));
}

#[tokio::test]
async fn handshake_rejects_unknown_client_id_and_mode_with_1008() {
    let (_sim, listening) = sim().start();
    for (id, mode) in [("my-supervisor", "backend"), ("cli", "daemon")] {
        let (mut client, reply) =
            Client::connect(listening.port, connect_params(id, mode, None), None).await;
        assert_eq!(reply["error"]["code"], "INVALID_REQUEST", "{reply}");
        assert!(reply["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid connect params: at /client/"));
        assert!(matches!(client.closed(SOON).await, Closed::Code(1008, _)));
    }
}

#[tokio::test]
async fn handshake_rejects_protocol_3_only_with_1002() {
    let (_sim, listening) = sim().start();
    let mut params = connect_params("gateway-client", "backend", None);
    params["minProtocol"] = json!(3);
    params["maxProtocol"] = json!(3);
    let (mut client, reply) = Client::connect(listening.port, params, None).await;
    assert_eq!(reply["error"]["code"], "INVALID_REQUEST");
    assert_eq!(reply["error"]["message"], "protocol mismatch");
    assert_eq!(
        reply["error"]["details"],
        json!({"code": "PROTOCOL_MISMATCH", "clientMinProtocol": 3, "clientMaxProtocol": 3,
               "expectedProtocol": 4, "minimumProbeProtocol": 3})
    );
    assert_eq!(
        client.closed(SOON).await,
        Closed::Code(1002, "protocol mismatch".into())
    );
}

#[tokio::test]
async fn handshake_accepts_a_3_to_4_range_and_a_v3_probe() {
    let (_sim, listening) = sim().start();
    let mut params = connect_params("gateway-client", "backend", None);
    params["minProtocol"] = json!(3);
    let (_client, reply) = Client::connect(listening.port, params, None).await;
    assert_eq!(reply["payload"]["protocol"], 4, "{reply}");
    let mut probe = connect_params("openclaw-probe", "probe", None);
    probe["minProtocol"] = json!(3);
    probe["maxProtocol"] = json!(3);
    let (_client, reply) = Client::connect(listening.port, probe, None).await;
    assert_eq!(reply["ok"], true, "{reply}");
}

#[tokio::test]
async fn protocol_3_emulation_rejects_a_client_requiring_4_and_accepts_3() {
    let (_sim, listening) = sim().args(&["--protocol", "3"]).start();
    let (mut client, reply) =
        Client::connect(listening.port, connect_params("test", "test", None), None).await;
    assert_eq!(detail_code(&reply), "PROTOCOL_MISMATCH");
    assert_eq!(reply["error"]["details"]["expectedProtocol"], 3);
    assert_eq!(
        client.closed(SOON).await,
        Closed::Code(1002, "protocol mismatch".into())
    );
    let mut params = connect_params("test", "test", None);
    params["minProtocol"] = json!(3);
    let (_client, reply) = Client::connect(listening.port, params, None).await;
    assert_eq!(reply["payload"]["protocol"], 3, "{reply}");
}

#[tokio::test]
async fn handshake_rejects_missing_token_with_auth_token_missing_and_1008() {
    let (_sim, listening) = sim().env("OPENCLAW_GATEWAY_TOKEN", TOKEN).start();
    let (mut client, reply) =
        Client::connect(listening.port, connect_params("test", "test", None), None).await;
    assert_eq!(detail_code(&reply), "AUTH_TOKEN_MISSING", "{reply}");
    assert!(matches!(client.closed(SOON).await, Closed::Code(1008, _)));
}

#[tokio::test]
async fn handshake_rejects_wrong_token_with_auth_token_mismatch_and_1008() {
    let (sim, listening) = sim().env("OPENCLAW_GATEWAY_TOKEN", TOKEN).start();
    let (mut client, reply) = Client::connect(
        listening.port,
        connect_params("test", "test", Some("nope")),
        None,
    )
    .await;
    assert_eq!(detail_code(&reply), "AUTH_TOKEN_MISMATCH", "{reply}");
    assert!(matches!(client.closed(SOON).await, Closed::Code(1008, _)));
    assert!(
        !sim.stderr().iter().any(|line| line.contains(TOKEN)),
        "the token must never be printed"
    );
}

#[tokio::test]
async fn handshake_token_in_the_config_beats_the_environment_and_the_flag_beats_both() {
    // As the real 2026.9.6 gateway does (seen live): `--token`, then `gateway.auth.token`, then
    // OPENCLAW_GATEWAY_TOKEN.
    let with_config = || {
        let state = tempfile::tempdir().unwrap();
        std::fs::write(
            state.path().join("openclaw.json"),
            r#"{"gateway":{"auth":{"token":"from-config"}}}"#,
        )
        .unwrap();
        sim()
            .env("OPENCLAW_GATEWAY_TOKEN", "from-env")
            .state_dir(state)
    };
    let (_sim, listening) = with_config().start();
    for (token, accepted) in [("from-config", true), ("from-env", false)] {
        let (_client, reply) = Client::connect(
            listening.port,
            connect_params("test", "test", Some(token)),
            None,
        )
        .await;
        if accepted {
            assert_eq!(reply["ok"], true, "{token}: {reply}");
        } else {
            assert_eq!(
                detail_code(&reply),
                "AUTH_TOKEN_MISMATCH",
                "{token}: {reply}"
            );
        }
    }
    let (_sim, listening) = with_config().args(&["--token", "from-flag"]).start();
    let (_client, reply) = Client::connect(
        listening.port,
        connect_params("test", "test", Some("from-flag")),
        None,
    )
    .await;
    assert_eq!(reply["ok"], true, "{reply}");
}

#[tokio::test]
async fn handshake_accepts_the_shared_token_in_the_password_field() {
    let (_sim, listening) = sim().args(&["--token", TOKEN]).start();
    let mut params = connect_params("test", "test", None);
    params["auth"] = json!({"password": TOKEN});
    let (_client, reply) = Client::connect(listening.port, params, None).await;
    assert_eq!(reply["ok"], true, "{reply}");
}

#[tokio::test]
async fn handshake_without_configured_token_needs_no_auth() {
    let (_sim, listening) = sim().start();
    let (_client, reply) =
        Client::connect(listening.port, connect_params("test", "test", None), None).await;
    assert_eq!(reply["payload"]["auth"]["method"], "none", "{reply}");
}

#[tokio::test]
async fn reject_token_flag_makes_every_token_a_mismatch() {
    let (_sim, listening) = sim().args(&["--token", TOKEN, "--reject-token"]).start();
    let (mut client, reply) = Client::connect(
        listening.port,
        connect_params("test", "test", Some(TOKEN)),
        None,
    )
    .await;
    assert_eq!(detail_code(&reply), "AUTH_TOKEN_MISMATCH", "{reply}");
    assert!(matches!(client.closed(SOON).await, Closed::Code(1008, _)));
}

#[tokio::test]
async fn device_signatures_v3_and_v2_are_both_accepted() {
    let (_sim, listening) = sim().args(&["--token", TOKEN]).start();
    let device = Device::new(11);
    for version in ["v3", "v2"] {
        let mut client = Client::open(listening.port).await;
        let mut params = connect_params("test", "test", Some(TOKEN));
        let nonce = client.nonce.clone();
        device.sign(&mut params, &nonce, now_ms(), version);
        let reply = client.request("connect", params).await;
        assert_eq!(reply["ok"], true, "{version}: {reply}");
        assert_eq!(
            reply["payload"]["auth"]["scopes"],
            json!(["operator.admin", "operator.read"])
        );
    }
}

/// Connects with a signed device after `tamper` edits the params; returns the reply and the close.
async fn connect_tampered(port: u16, tamper: impl FnOnce(&mut Value, &str)) -> (Value, Closed) {
    let mut client = Client::open(port).await;
    let mut params = connect_params("test", "test", Some(TOKEN));
    let nonce = client.nonce.clone();
    Device::new(12).sign(&mut params, &nonce, now_ms(), "v3");
    tamper(&mut params, &nonce);
    let reply = client.request("connect", params).await;
    let closed = client.closed(SOON).await;
    (reply, closed)
}

#[tokio::test]
async fn device_auth_failures_report_each_detail_code_and_close_1008() {
    let (_sim, listening) = sim().args(&["--token", TOKEN]).start();
    let port = listening.port;
    type Tamper = Box<dyn FnOnce(&mut Value, &str)>;
    let cases: Vec<(&str, Tamper)> = vec![
        (
            "DEVICE_AUTH_NONCE_REQUIRED",
            Box::new(|p, _| drop(p["device"].as_object_mut().unwrap().remove("nonce"))),
        ),
        (
            "DEVICE_AUTH_NONCE_MISMATCH",
            Box::new(|p, _| p["device"]["nonce"] = json!("another-nonce")),
        ),
        (
            "DEVICE_AUTH_SIGNATURE_INVALID",
            Box::new(|p, _| p["scopes"] = json!(["operator.admin"])),
        ),
        (
            "DEVICE_AUTH_SIGNATURE_EXPIRED",
            Box::new(|p, _| p["device"]["signedAt"] = json!(now_ms() - 200_000)),
        ),
        (
            "DEVICE_AUTH_DEVICE_ID_MISMATCH",
            Box::new(|p, _| p["device"]["id"] = json!("00".repeat(32))),
        ),
        (
            "DEVICE_AUTH_PUBLIC_KEY_INVALID",
            Box::new(|p, _| p["device"]["publicKey"] = json!("not-a-key")),
        ),
    ];
    for (expected, tamper) in cases {
        let (reply, closed) = connect_tampered(port, tamper).await;
        assert_eq!(detail_code(&reply), expected, "{reply}");
        assert!(
            matches!(closed, Closed::Code(1008, _)),
            "{expected}: {closed:?}"
        );
    }
}

#[tokio::test]
async fn device_signature_within_skew_is_accepted_and_outside_is_expired() {
    let (_sim, listening) = sim().start();
    let device = Device::new(13);
    for (offset, ok) in [(-110_000, true), (110_000, true), (130_000, false)] {
        let mut client = Client::open(listening.port).await;
        let mut params = connect_params("test", "test", None);
        let nonce = client.nonce.clone();
        device.sign(&mut params, &nonce, now_ms() + offset, "v3");
        let reply = client.request("connect", params).await;
        assert_eq!(reply["ok"], ok, "offset {offset}: {reply}");
        if !ok {
            assert_eq!(detail_code(&reply), "DEVICE_AUTH_SIGNATURE_EXPIRED");
        }
    }
}

#[tokio::test]
async fn scopes_are_granted_with_a_device_and_a_device_token_is_issued() {
    let (_sim, listening) = sim().args(&["--token", TOKEN]).start();
    let device = Device::new(14);
    let (_client, reply) = Client::connect(
        listening.port,
        connect_params("test", "test", Some(TOKEN)),
        Some(&device),
    )
    .await;
    let auth = &reply["payload"]["auth"];
    assert_eq!(
        auth["scopes"],
        json!(["operator.admin", "operator.read"]),
        "{reply}"
    );
    let device_token = auth["deviceToken"]
        .as_str()
        .expect("deviceToken")
        .to_string();

    // Reconnect with the device token instead of the shared token.
    let mut params = connect_params("test", "test", None);
    params["auth"] = json!({"deviceToken": device_token});
    let (_client, reply) = Client::connect(listening.port, params, Some(&device)).await;
    assert_eq!(
        reply["payload"]["auth"]["method"], "device-token",
        "{reply}"
    );
}

#[tokio::test]
async fn scopes_are_empty_without_device_except_for_backend_and_cli() {
    let (_sim, listening) = sim().args(&["--token", TOKEN]).start();
    let port = listening.port;
    let (_c, reply) =
        Client::connect(port, connect_params("test", "test", Some(TOKEN)), None).await;
    assert_eq!(reply["payload"]["auth"]["scopes"], json!([]), "{reply}");
    let (_c, reply) = Client::connect(
        port,
        connect_params("gateway-client", "backend", Some(TOKEN)),
        None,
    )
    .await;
    assert_eq!(
        reply["payload"]["auth"]["scopes"],
        json!(["operator.admin", "operator.read"]),
        "{reply}"
    );
    assert!(reply["payload"]["auth"].get("deviceToken").is_none());
    let (_c, reply) = Client::connect(port, connect_params("cli", "cli", Some(TOKEN)), None).await;
    assert_eq!(
        reply["payload"]["auth"]["scopes"],
        json!(["operator.admin", "operator.read"]),
        "{reply}"
    );
    // A signing trusted backend keeps its scopes but is not paired.
    let (_c, reply) = Client::connect(
        port,
        connect_params("gateway-client", "backend", Some(TOKEN)),
        Some(&Device::new(15)),
    )
    .await;
    assert_eq!(
        reply["payload"]["auth"]["scopes"],
        json!(["operator.admin", "operator.read"]),
        "{reply}"
    );
    assert!(reply["payload"]["auth"].get("deviceToken").is_none());
}

#[tokio::test]
async fn preauth_frame_over_64k_closes_with_1009() {
    let (_sim, listening) = sim().start();
    let mut client = Client::open(listening.port).await;
    let padding = "x".repeat(70_000);
    client
        .send_text(
            json!({"type": "req", "id": "1", "method": "connect", "params": {"pad": padding}})
                .to_string(),
        )
        .await;
    assert!(matches!(client.closed(SOON).await, Closed::Code(1009, _)));
}

#[tokio::test]
async fn preauth_non_json_frame_closes_the_socket() {
    let (_sim, listening) = sim().start();
    let mut client = Client::open(listening.port).await;
    client.send_text("hello?").await;
    assert_eq!(client.closed(SOON).await, Closed::Code(1000, String::new()));
}

#[tokio::test]
async fn handshake_timeout_closes_a_client_that_never_connects() {
    let (_sim, listening) = sim().args(&["--handshake-timeout-ms", "200"]).start();
    let mut client = Client::open(listening.port).await;
    assert_eq!(client.closed(SOON).await, Closed::NoCode);
}

#[tokio::test]
async fn websocket_is_served_on_any_path() {
    let (_sim, listening) = sim().start();
    for path in ["/", "/ws", "/foo/bar"] {
        let client = Client::open_path(listening.port, path).await;
        assert!(!client.nonce.is_empty());
    }
}
