//! RPC, event, probe, keepalive and per-connection fault tests against the real simulator binary.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn probes_report_live_started_ready_and_405_for_post() {
    let (_sim, listening) = sim().start();
    let port = listening.port;
    for path in ["/healthz", "/health"] {
        assert_eq!(
            probe(port, path).await,
            (200, json!({"ok": true, "status": "live"}))
        );
    }
    for path in ["/startupz", "/startup"] {
        let (status, body) = probe(port, path).await;
        assert_eq!(
            (status, &body["status"]),
            (200, &json!("started")),
            "{body}"
        );
        assert_eq!(body["version"], "2026.9.6-sim");
        assert!(body["uptimeMs"].is_u64());
    }
    for path in ["/readyz", "/ready"] {
        let (status, body) = probe(port, path).await;
        assert_eq!(
            (status, &body["ready"], &body["failing"]),
            (200, &json!(true), &json!([])),
            "{body}"
        );
    }
    let (status, _) = http(port, "POST", "/healthz").await.unwrap();
    assert_eq!(status, 405);
    let (status, body) = http(port, "HEAD", "/readyz").await.unwrap();
    assert_eq!((status, body.as_str()), (200, ""));
}

#[tokio::test]
async fn startup_window_makes_probes_503_and_connect_unavailable_then_1013() {
    let (_sim, listening) = sim().args(&["--startup-window-ms", "1500"]).start();
    let port = listening.port;
    let (status, body) = probe(port, "/startupz").await;
    assert_eq!(
        (status, &body["status"], &body["pendingReason"]),
        (503, &json!("starting"), &json!("startup-sidecars"))
    );
    let (status, body) = probe(port, "/readyz").await;
    assert_eq!(
        (status, &body["failing"]),
        (503, &json!(["startup-sidecars"]))
    );
    assert_eq!(probe(port, "/healthz").await.0, 200);

    let (mut client, reply) =
        Client::connect(port, connect_params("test", "test", None), None).await;
    let error = &reply["error"];
    assert_eq!(error["code"], "UNAVAILABLE", "{reply}");
    assert_eq!(error["message"], "gateway starting; retry shortly");
    assert_eq!(
        (&error["retryable"], &error["retryAfterMs"]),
        (&json!(true), &json!(500))
    );
    assert_eq!(error["details"], json!({"reason": "startup-sidecars"}));
    assert_eq!(
        client.closed(SOON).await,
        Closed::Code(1013, "gateway starting".into())
    );

    // The window ends by itself.
    let deadline = tokio::time::Instant::now() + SOON;
    while probe(port, "/startupz").await.0 != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "startup window never ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Client::hello(port, None).await;
}

#[tokio::test]
async fn health_event_then_ticks_with_increasing_seq() {
    let (_sim, listening) = sim().args(&["--tick-interval-ms", "100"]).start();
    let mut client = Client::hello(listening.port, None).await;
    let health = client.event("health", SOON).await.unwrap();
    assert_eq!(health["seq"], 1);
    let first = client.event("tick", SOON).await.unwrap();
    let second = client.event("tick", SOON).await.unwrap();
    assert!(first["payload"]["ts"].is_i64());
    assert_eq!(
        second["seq"].as_u64().unwrap(),
        first["seq"].as_u64().unwrap() + 1
    );
}

#[tokio::test]
async fn ready_event_flag_sends_gateway_ready_after_hello() {
    let (_sim, listening) = sim().arg("--ready-event").start();
    let mut client = Client::hello(listening.port, None).await;
    let ready = client
        .event("gateway.ready", SOON)
        .await
        .expect("gateway.ready");
    assert_eq!(ready["seq"], 2);
}

#[tokio::test]
async fn health_needs_no_scope_and_status_requires_operator_read() {
    let (_sim, listening) = sim().args(&["--token", TOKEN]).start();
    let mut unscoped = Client::hello(listening.port, Some(TOKEN)).await;
    assert_eq!(
        unscoped.request("health", json!({})).await["payload"]["ok"],
        true
    );
    let reply = unscoped.request("status", json!({})).await;
    assert_eq!(reply["error"]["code"], "FORBIDDEN", "{reply}");
    assert_eq!(reply["error"]["details"]["code"], "MISSING_SCOPE");
    assert_eq!(reply["error"]["details"]["missingScope"], "operator.read");

    let mut admin = Client::admin(listening.port, Some(TOKEN)).await;
    let status = admin.request("status", json!({})).await["payload"].clone();
    assert_eq!(status["pid"], listening.pid);
    assert_eq!(status["bootId"], listening.boot_id.as_str());
    assert_eq!(status["version"], "2026.9.6-sim");
    assert!(status["uptimeMs"].is_u64());
}

#[tokio::test]
async fn unknown_methods_including_shutdown_answer_invalid_request() {
    let (_sim, listening) = sim().start();
    let mut client = Client::admin(listening.port, None).await;
    for method in ["shutdown", "frobnicate"] {
        let reply = client.request(method, json!({})).await;
        assert_eq!(reply["error"]["code"], "INVALID_REQUEST");
        assert_eq!(
            reply["error"]["message"],
            format!("unknown method: {method}")
        );
    }
}

#[tokio::test]
async fn echo_returns_params_and_serves_4096_requests_in_flight() {
    let (_sim, listening) = sim().start();
    let mut client = Client::hello(listening.port, None).await;
    let reply = client
        .request("echo", json!({"a": [1, 2, {"b": "c"}]}))
        .await;
    assert_eq!(reply["payload"], json!({"a": [1, 2, {"b": "c"}]}));

    let total = 4096;
    for index in 0..total {
        let frame = json!({"type": "req", "id": format!("e{index}"), "method": "echo", "params": {"i": index}});
        client
            .ws
            .feed(Message::text(frame.to_string()))
            .await
            .unwrap();
    }
    client.ws.flush().await.unwrap();
    let mut seen = vec![false; total];
    let mut answered = 0;
    while answered < total {
        let frame = client.next_json(SOON).await.expect("echo reply");
        if frame["type"] != "res" {
            continue;
        }
        let index = frame["payload"]["i"].as_u64().unwrap() as usize;
        assert_eq!(frame["id"], format!("e{index}"));
        assert!(!seen[index]);
        seen[index] = true;
        answered += 1;
    }
}

#[tokio::test]
async fn sleep_replies_out_of_order_while_other_requests_are_served() {
    let (_sim, listening) = sim().start();
    let mut client = Client::hello(listening.port, None).await;
    client
        .send_text(
            json!({"type": "req", "id": "slow", "method": "sleep", "params": {"ms": 300}})
                .to_string(),
        )
        .await;
    client
        .send_text(json!({"type": "req", "id": "fast", "method": "echo", "params": {}}).to_string())
        .await;
    let mut order = Vec::new();
    while order.len() < 2 {
        let frame = client.next_json(SOON).await.expect("reply");
        if frame["type"] == "res" {
            order.push(frame["id"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(order, ["fast", "slow"]);
}

#[tokio::test]
async fn server_ping_terminates_a_client_that_never_answers() {
    let (_sim, listening) = sim().args(&["--ping-interval-ms", "150"]).start();
    let mut responsive = Client::hello(listening.port, None).await;
    let mut silent = Client::hello(listening.port, None).await;
    // The responsive client keeps polling (tungstenite answers pings while reading); the silent one does not read.
    let _ = responsive
        .event("never-sent", Duration::from_millis(800))
        .await;
    assert_eq!(silent.closed(SOON).await, Closed::Abnormal);
    assert_eq!(responsive.request("health", json!({})).await["ok"], true);
}

#[tokio::test]
async fn post_auth_garbage_frames_are_dropped_and_the_socket_stays_usable() {
    let (_sim, listening) = sim().start();
    let mut client = Client::hello(listening.port, None).await;
    client.send_text("not json").await;
    client.send_text("[1,2]").await;
    client
        .ws
        .send(Message::binary(vec![0xff, 0x00]))
        .await
        .unwrap();
    let reply = client.request("echo", json!({"still": "alive"})).await;
    assert_eq!(reply["payload"]["still"], "alive");
    client
        .send_text(json!({"type": "req", "id": "x", "method": "echo", "bogus": 1}).to_string())
        .await;
    let reply = client.reply_to("x", SOON).await.unwrap();
    assert_eq!(
        reply["error"]["message"],
        "invalid request frame: at root: unexpected property 'bogus'"
    );
}

#[tokio::test]
async fn fault_malformed_sends_each_kind_of_bad_frame() {
    let (_sim, listening) = sim().start();
    let mut client = Client::hello(listening.port, None).await;
    for (what, check) in [
        (
            "non-json",
            (|v: &serde_json::Value| v == "this is not json {") as fn(&serde_json::Value) -> bool,
        ),
        ("non-object", |v| v == &json!([1, 2, 3])),
        ("unknown-id", |v| {
            v["type"] == "res" && v["id"].as_str().unwrap().starts_with("sim-unknown-")
        }),
    ] {
        let reply = client
            .request("sim.fault", json!({"kind": "malformed", "what": what}))
            .await;
        assert_eq!(reply["ok"], true, "{reply}");
        let frame = client.next_json(SOON).await.expect(what);
        assert!(check(&frame), "{what}: {frame}");
    }

    client.send_text(json!({"type": "req", "id": "big", "method": "sim.fault", "params": {"kind": "malformed", "what": "oversize"}}).to_string()).await;
    client.reply_to("big", SOON).await.unwrap();
    // tungstenite's default 16 MiB frame limit trips first; a client with a bigger limit sees the frame.
    match tokio::time::timeout(SOON, client.ws.next())
        .await
        .unwrap()
        .unwrap()
    {
        Ok(Message::Text(text)) => assert!(text.len() > 26_214_400),
        Err(tokio_tungstenite::tungstenite::Error::Capacity(_)) => {}
        other => panic!("expected an oversize text frame, got {other:?}"),
    }
    // The connection is unusable after a capacity error; check invalid UTF-8 on a fresh one.
    let mut client = Client::hello(listening.port, None).await;

    client.send_text(json!({"type": "req", "id": "utf", "method": "sim.fault", "params": {"kind": "malformed", "what": "invalid-utf8"}}).to_string()).await;
    client.reply_to("utf", SOON).await.unwrap();
    let next = tokio::time::timeout(SOON, client.ws.next())
        .await
        .unwrap()
        .unwrap();
    assert!(
        next.is_err(),
        "a strict client rejects the invalid UTF-8 text frame: {next:?}"
    );
}

#[tokio::test]
async fn fault_deep_nesting_sends_valid_json_past_any_recursion_limit() {
    let (_sim, listening) = sim().start();
    let mut client = Client::hello(listening.port, None).await;
    let reply = client
        .request(
            "sim.fault",
            json!({"kind": "malformed", "what": "deep-nesting", "depth": 1000}),
        )
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    // serde_json refuses it (depth 1000 > 128), so the helper hands back the raw text.
    let frame = client.next_json(SOON).await.expect("deep frame");
    let text = frame.as_str().expect("unparseable for serde_json");
    let prefix = r#"{"type":"event","event":"sim.deep","payload":"#;
    let nested = text
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_suffix('}'))
        .unwrap_or_else(|| panic!("not a sim.deep event: {}", &text[..80.min(text.len())]));
    assert_eq!(nested, format!("{}{}", "[".repeat(1000), "]".repeat(1000)));
    // The connection keeps serving.
    assert_eq!(client.request("health", json!({})).await["ok"], true);
}

#[tokio::test]
async fn fault_event_flood_sends_consecutive_events_and_keeps_serving() {
    let (_sim, listening) = sim().start();
    let mut client = Client::hello(listening.port, None).await;
    let reply = client
        .request(
            "sim.fault",
            json!({"kind": "event-flood", "count": 500, "bytes": 10}),
        )
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    let mut last_seq = None;
    for n in 0..500u64 {
        let event = client.event("sim.flood", SOON).await.expect("flood event");
        assert_eq!(event["payload"]["n"], n, "{event}");
        assert_eq!(event["payload"]["pad"], "x".repeat(10));
        let seq = event["seq"].as_u64().expect("seq");
        if let Some(last) = last_seq {
            assert_eq!(seq, last + 1, "consecutive seq");
        }
        last_seq = Some(seq);
    }
    assert_eq!(client.request("health", json!({})).await["ok"], true);
    let too_many = client
        .request(
            "sim.fault",
            json!({"kind": "event-flood", "count": 10_000_001u64}),
        )
        .await;
    assert_eq!(too_many["ok"], false, "{too_many}");
}

#[tokio::test]
async fn flag_event_flood_follows_every_hello() {
    let (_sim, listening) = sim()
        .args(&["--event-flood", "20", "--event-flood-bytes", "3"])
        .start();
    for _connection in 0..2 {
        let mut client = Client::hello(listening.port, None).await;
        for n in 0..20u64 {
            let event = client.event("sim.flood", SOON).await.expect("flood event");
            assert_eq!(event["payload"]["n"], n, "{event}");
            assert_eq!(event["payload"]["pad"], "xxx");
        }
    }
}

#[tokio::test]
async fn fault_close_1012_closes_the_socket_and_the_process_keeps_serving() {
    let (mut sim, listening) = sim().start();
    let mut client = Client::hello(listening.port, None).await;
    client
        .request(
            "sim.fault",
            json!({"kind": "close", "code": 1012, "shutdownEvent": "restarting"}),
        )
        .await;
    let shutdown = client
        .event("shutdown", SOON)
        .await
        .expect("shutdown event");
    assert_eq!(shutdown["payload"]["reason"], "gateway restarting");
    assert_eq!(
        client.closed(SOON).await,
        Closed::Code(1012, "service restart".into())
    );
    let mut other = Client::hello(listening.port, None).await;
    other
        .request(
            "sim.fault",
            json!({"kind": "close", "code": 4001, "reason": "gateway auth changed"}),
        )
        .await;
    assert_eq!(
        other.closed(SOON).await,
        Closed::Code(4001, "gateway auth changed".into())
    );
    assert!(sim.wait_exit(Duration::from_millis(100)).is_none());
    Client::hello(listening.port, None).await;
}

#[tokio::test]
async fn fault_drop_closes_tcp_without_a_close_frame() {
    let (_sim, listening) = sim().start();
    let mut client = Client::hello(listening.port, None).await;
    let reply = client.request("sim.fault", json!({"kind": "drop"})).await;
    assert_eq!(reply["ok"], true);
    assert_eq!(client.closed(SOON).await, Closed::Abnormal);
}

#[tokio::test]
async fn fault_stderr_noise_prints_lines_from_flag_and_rpc() {
    let (sim, listening) = sim()
        .args(&[
            "--stderr-line",
            "Config invalid: noise",
            "--stderr-repeat",
            "2",
        ])
        .start();
    assert_eq!(sim.wait_stderr_lines("Config invalid: noise", 2, SOON), 2);
    let mut client = Client::hello(listening.port, None).await;
    client
        .request(
            "sim.fault",
            json!({"kind": "stderr", "line": "rpc noise line", "repeat": 3}),
        )
        .await;
    assert_eq!(sim.wait_stderr_lines("rpc noise line", 3, SOON), 3);
}

#[tokio::test]
async fn no_challenge_flag_and_fault_accept_sockets_but_never_challenge() {
    let (_sim, listening) = sim().arg("--no-challenge").start();
    let mut client = Client::open_raw(listening.port).await;
    assert!(
        client.next_json(Duration::from_millis(500)).await.is_none(),
        "no frame expected"
    );

    let (_sim, listening) = common::sim().start();
    let mut client = Client::hello(listening.port, None).await;
    client
        .request("sim.fault", json!({"kind": "no-challenge"}))
        .await;
    let mut fresh = Client::open_raw(listening.port).await;
    assert!(
        fresh.next_json(Duration::from_millis(500)).await.is_none(),
        "no frame expected"
    );
}

#[tokio::test]
async fn fault_reject_token_turns_later_connects_into_mismatches() {
    let (_sim, listening) = sim().args(&["--token", TOKEN]).start();
    let mut client = Client::hello(listening.port, Some(TOKEN)).await;
    client
        .request("sim.fault", json!({"kind": "reject-token"}))
        .await;
    let (_c, reply) = Client::connect(
        listening.port,
        connect_params("test", "test", Some(TOKEN)),
        None,
    )
    .await;
    assert_eq!(detail_code(&reply), "AUTH_TOKEN_MISMATCH", "{reply}");
}

#[tokio::test]
async fn fault_with_bad_params_answers_invalid_request() {
    let (_sim, listening) = sim().start();
    let mut client = Client::hello(listening.port, None).await;
    let reply = client.request("sim.fault", json!({"kind": "meteor"})).await;
    assert_eq!(reply["error"]["code"], "INVALID_REQUEST");
}
