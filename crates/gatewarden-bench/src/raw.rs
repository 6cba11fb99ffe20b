//! The raw baseline: a minimal awc WebSocket client with no actors. It does the supervisor's
//! handshake (challenge, then `connect` as `gateway-client`/`backend` with the shared token, no
//! device) and pipelines `echo` requests, so the difference to the actor path is the cost of the
//! actors, mailboxes and bookkeeping, not of the protocol.
//!
//! Its frames are the supervisor's frames byte for byte in form: `{"type":"req","id":..,
//! "method":"echo","params":{"n":..}}` with a fresh UUID v4 id (M1), so the gateway does the
//! same work for both clients. (Until the fifth performance pass the baseline sent decimal
//! ids, 30-odd bytes shorter per frame each way.)

use std::collections::HashMap;
use std::pin::Pin;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use awc::ws::{Frame, Message};
use bytes_free::text_of;
use futures_util::{FutureExt as _, Sink, SinkExt as _, Stream, StreamExt as _};
use gatewarden_core::config::ConnectConfig;
use gatewarden_core::frame::{encode_request, ClientInfo, ConnectRequest};
use serde_json::Value;

use crate::load::{CpuMeter, LoadSample};

type FrameSink = Pin<Box<dyn Sink<Message, Error = awc::error::WsProtocolError>>>;
type FrameStream = Pin<Box<dyn Stream<Item = Result<Frame, awc::error::WsProtocolError>>>>;

/// The frame size limit the library uses (the gateway's post-auth limit).
const MAX_FRAME_BYTES: usize = 26_214_400;

/// One handshaken socket.
pub struct RawClient {
    sink: FrameSink,
    stream: FrameStream,
}

mod bytes_free {
    //! Text of a frame without a `bytes` dependency of our own.
    use awc::ws::Frame;

    /// The UTF-8 text of a text frame, `None` for anything else or invalid UTF-8.
    pub fn text_of(frame: &Frame) -> Option<&str> {
        match frame {
            Frame::Text(bytes) => std::str::from_utf8(bytes).ok(),
            _ => None,
        }
    }
}

impl RawClient {
    /// Connect to `127.0.0.1:port` and complete the handshake within 10 s.
    pub async fn connect(port: u16, token: &str) -> anyhow::Result<Self> {
        let budget = Duration::from_secs(10);
        let client = awc::Client::builder().timeout(budget).finish();
        let (_response, framed) = tokio::time::timeout(
            budget,
            client
                .ws(format!("ws://127.0.0.1:{port}/"))
                .max_frame_size(MAX_FRAME_BYTES)
                .connect(),
        )
        .await
        .context("raw connect timed out")?
        .map_err(|error| anyhow!("raw connect failed: {error}"))?;
        let (sink, stream) = framed.split();
        let mut raw = RawClient {
            sink: Box::pin(sink),
            stream: Box::pin(stream),
        };
        tokio::time::timeout(budget, raw.handshake(token))
            .await
            .context("raw handshake timed out")??;
        Ok(raw)
    }

    async fn next_text(&mut self) -> anyhow::Result<String> {
        loop {
            let frame = self
                .stream
                .next()
                .await
                .ok_or_else(|| anyhow!("connection closed"))?
                .map_err(|error| anyhow!("websocket error: {error}"))?;
            match frame {
                Frame::Ping(payload) => self
                    .sink
                    .send(Message::Pong(payload))
                    .await
                    .map_err(|error| anyhow!("pong failed: {error}"))?,
                Frame::Close(reason) => bail!("closed by the gateway: {reason:?}"),
                other => {
                    if let Some(text) = text_of(&other) {
                        return Ok(text.to_string());
                    }
                }
            }
        }
    }

    async fn handshake(&mut self, token: &str) -> anyhow::Result<()> {
        loop {
            let text = self.next_text().await?;
            let value: Value = serde_json::from_str(&text).context("challenge is not JSON")?;
            if value.get("event").and_then(Value::as_str) == Some("connect.challenge") {
                break;
            }
        }
        let mut connect = ConnectRequest::new(
            &ConnectConfig::default(),
            ClientInfo::supervisor("gatewarden-bench", "linux"),
        );
        connect.token = Some(token.to_string());
        let frame = encode_request("connect-1", "connect", Some(&connect.to_params()));
        self.sink
            .send(Message::Text(frame.into()))
            .await
            .map_err(|error| anyhow!("sending connect: {error}"))?;
        loop {
            let text = self.next_text().await?;
            let value: Value = serde_json::from_str(&text).context("reply is not JSON")?;
            if value.get("id").and_then(Value::as_str) == Some("connect-1") {
                if value.get("ok").and_then(Value::as_bool) == Some(true) {
                    return Ok(());
                }
                bail!("connect rejected: {text}");
            }
        }
    }

    /// Queue `echo` number `n` under a fresh UUID v4 id, and return the id.
    async fn queue_echo(&mut self, n: u64) -> anyhow::Result<u128> {
        let id = uuid::Uuid::new_v4();
        let frame = format!(
            r#"{{"type":"req","id":"{}","method":"echo","params":{{"n":{n}}}}}"#,
            id.hyphenated()
        );
        // feed without flushing: the flush happens once per batch of replies.
        self.sink
            .feed(Message::Text(frame.into()))
            .await
            .map_err(|error| anyhow!("queueing a request: {error}"))?;
        Ok(id.as_u128())
    }

    /// Keep `in_flight` echo requests outstanding (closed loop) until `warmup + measure` has
    /// passed; latencies and completions are counted only in the measured window.
    pub async fn closed_loop(
        &mut self,
        gateway_pid: Option<u32>,
        in_flight: usize,
        warmup: Duration,
        measure: Duration,
    ) -> anyhow::Result<LoadSample> {
        let started = Instant::now();
        let window_start = started + warmup;
        let window_end = window_start + measure;
        let meter = CpuMeter::start(gateway_pid);
        let mut answered = 0u64;
        let mut sent_at: HashMap<u128, Instant> = HashMap::with_capacity(in_flight * 2);
        let mut next: u64 = 0;
        let mut latencies_ms = Vec::new();
        let mut failures = 0u64;
        for _ in 0..in_flight {
            let id = self.queue_echo(next).await?;
            sent_at.insert(id, Instant::now());
            next += 1;
        }
        self.sink
            .flush()
            .await
            .map_err(|error| anyhow!("flush: {error}"))?;
        while !sent_at.is_empty() {
            let left =
                (window_end + Duration::from_secs(30)).saturating_duration_since(Instant::now());
            let first = tokio::time::timeout(left, self.stream.next())
                .await
                .context("raw replies stopped")?;
            let mut batch = vec![first];
            // Drain what is already buffered so one flush covers many new requests.
            while let Some(more) = self.stream.next().now_or_never() {
                batch.push(more);
            }
            let mut sent_any = false;
            for item in batch {
                let frame = item
                    .ok_or_else(|| anyhow!("connection closed"))?
                    .map_err(|error| anyhow!("websocket error: {error}"))?;
                let text = match &frame {
                    Frame::Ping(payload) => {
                        self.sink
                            .feed(Message::Pong(payload.clone()))
                            .await
                            .map_err(|error| anyhow!("pong: {error}"))?;
                        sent_any = true;
                        continue;
                    }
                    other => match text_of(other) {
                        Some(text) => text,
                        None => continue,
                    },
                };
                let value: Value = match serde_json::from_str(text) {
                    Ok(value) => value,
                    Err(_) => continue,
                };
                let Some(id) = value
                    .get("id")
                    .and_then(Value::as_str)
                    .and_then(|id| uuid::Uuid::try_parse(id).ok())
                    .map(|id| id.as_u128())
                else {
                    continue;
                };
                let Some(at) = sent_at.remove(&id) else {
                    continue;
                };
                let now = Instant::now();
                answered += 1;
                if value.get("ok").and_then(Value::as_bool) != Some(true) {
                    failures += 1;
                } else if now >= window_start && now <= window_end {
                    latencies_ms.push(now.duration_since(at).as_secs_f64() * 1_000.0);
                }
                if now < window_end {
                    let id = self.queue_echo(next).await?;
                    sent_at.insert(id, Instant::now());
                    next += 1;
                    sent_any = true;
                }
            }
            if sent_any {
                self.sink
                    .flush()
                    .await
                    .map_err(|error| anyhow!("flush: {error}"))?;
            }
        }
        Ok(LoadSample::new(in_flight, measure, latencies_ms, failures).with_cpu(meter, answered))
    }

    /// Close the socket politely.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(
            Duration::from_millis(200),
            self.sink.send(Message::Close(None)),
        )
        .await;
    }
}
