//! One control WebSocket: challenge, `connect`, RPC dispatch, events, keepalive and per-connection faults.
//!
//! A connection is one task that owns its socket. Replies are written with `feed` and flushed once
//! per batch of ready frames, so thousands of in-flight requests (benchmarks push 4096) cost one
//! syscall per batch instead of one per reply. Delayed replies (`sleep`) come back through an
//! unbounded channel so the socket keeps being served meanwhile and replies may arrive out of order.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc};
use tokio::time::{sleep, sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::cli::HangMode;
use crate::faults::{self, BlockKind, Fault, Malformed, ShutdownNotice};
use crate::handshake::{self, Accepted, ServerPolicy};
use crate::protocol::{self, close, code, RpcError};
use crate::state::{unix_ms, Notice, Shared};

type Socket = WebSocketStream<TcpStream>;

/// Frames handled per wake-up before flushing, so one busy client cannot starve the flush.
const BATCH_LIMIT: usize = 512;
/// How long to wait for the peer's close reply after sending ours.
const CLOSE_LINGER: Duration = Duration::from_secs(1);
/// Longest `sleep` accepted, so a typo cannot park a reply for days.
const MAX_SLEEP_MS: u64 = 600_000;
/// Keys of the closed request-frame schema.
const REQUEST_KEYS: &[&str] = &[
    "type",
    "id",
    "method",
    "params",
    "traceparent",
    "expectedProfileId",
];

/// How a connection ends.
enum Ending {
    /// Send a close frame with this code and reason.
    Close(u16, String),
    /// Send a close frame without a status code (handshake timeout).
    CloseWithoutCode,
    /// Drop the TCP socket without a close frame (the peer sees 1006).
    Drop,
    /// The peer went away or the socket failed.
    Gone,
}

/// Process-level effects that must wait until the replies before them are flushed.
enum AfterFlush {
    Exit(i32),
    Hang(HangMode),
    Block(BlockKind, u64),
    RaiseRestart,
}

/// The authenticated session.
struct Session {
    scopes: Vec<String>,
}

struct Connection {
    shared: Arc<Shared>,
    connection_id: String,
    nonce: String,
    session: Option<Session>,
    seq: u64,
    replies_tx: mpsc::UnboundedSender<String>,
    replies_rx: mpsc::UnboundedReceiver<String>,
    notice_rx: tokio::sync::watch::Receiver<Notice>,
    ticks_rx: Option<broadcast::Receiver<i64>>,
    handshake_deadline: Instant,
    ping_due: Instant,
    awaiting_pong: bool,
    after_flush: Vec<AfterFlush>,
}

/// Serves an upgraded socket until it closes. `leftover` holds bytes read past the HTTP head.
pub async fn serve(shared: Arc<Shared>, stream: TcpStream, leftover: Vec<u8>) {
    // The post-auth limit is enforced by tungstenite; the 64 KiB pre-auth limit is checked by hand
    // because tokio-tungstenite cannot change the limit of a live socket.
    let config = WebSocketConfig::default()
        .max_message_size(Some(protocol::MAX_PAYLOAD_BYTES))
        .max_frame_size(Some(protocol::MAX_PAYLOAD_BYTES));
    let mut socket =
        WebSocketStream::from_partially_read(stream, leftover, Role::Server, Some(config)).await;
    let (replies_tx, replies_rx) = mpsc::unbounded_channel();
    let number = shared.next_connection.fetch_add(1, Ordering::Relaxed) + 1;
    let handshake_timeout = Duration::from_millis(shared.settings.handshake_timeout_ms);
    let mut connection = Connection {
        connection_id: format!(
            "conn-{number}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ),
        nonce: uuid::Uuid::new_v4().to_string(),
        session: None,
        seq: 0,
        replies_tx,
        replies_rx,
        notice_rx: shared.notice.subscribe(),
        ticks_rx: None,
        handshake_deadline: Instant::now() + handshake_timeout,
        ping_due: Instant::now(),
        awaiting_pong: false,
        after_flush: Vec::new(),
        shared,
    };
    let ending = connection.run(&mut socket).await;
    match ending {
        Ending::Close(code, reason) => {
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: truncate_reason(&reason).into(),
            };
            close_and_linger(&mut socket, Some(frame)).await;
        }
        Ending::CloseWithoutCode => close_and_linger(&mut socket, None).await,
        Ending::Drop | Ending::Gone => {}
    }
}

/// Close reasons are limited to 123 bytes by RFC 6455; cut at a character boundary.
fn truncate_reason(reason: &str) -> String {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_string()
}

async fn close_and_linger(socket: &mut Socket, frame: Option<CloseFrame>) {
    if socket.send(Message::Close(frame)).await.is_err() {
        return;
    }
    // Wait for the peer's close reply so the close handshake completes cleanly.
    let _ = timeout(CLOSE_LINGER, async {
        while let Some(Ok(_)) = socket.next().await {}
    })
    .await;
}

/// One wake-up of the connection loop.
enum Wake {
    Incoming(Option<Result<Message, WsError>>),
    Reply(String),
    Notice,
    Tick(i64),
    PingDue,
    HandshakeExpired,
}

impl Connection {
    async fn run(&mut self, socket: &mut Socket) -> Ending {
        match *self.notice_rx.borrow_and_update() {
            // A restart drain keeps admitting sockets, as the real gateway does; their `connect`
            // meets the `gateway-restarting` refusal (the boot state says so).
            Notice::Serving
            | Notice::ShuttingDown {
                restart_expected_ms: Some(_),
            } => {}
            Notice::ShuttingDown {
                restart_expected_ms: None,
            }
            | Notice::ListenerClosed => {
                return Ending::Close(close::SERVICE_RESTART, "service restart".into())
            }
        }
        let challenge = Message::text(protocol::challenge(&self.nonce, unix_ms()));
        if !self.shared.flags.no_challenge.load(Ordering::Relaxed)
            && socket.send(challenge).await.is_err()
        {
            return Ending::Gone;
        }
        loop {
            let authenticated = self.session.is_some();
            let wake = tokio::select! {
                changed = self.notice_rx.changed() => match changed {
                    Ok(()) => Wake::Notice,
                    // The sender lives as long as the process; treat its loss as the end.
                    Err(_) => return Ending::Gone,
                },
                incoming = socket.next() => Wake::Incoming(incoming),
                Some(reply) = self.replies_rx.recv() => Wake::Reply(reply),
                Some(ts) = next_tick(&mut self.ticks_rx), if authenticated => Wake::Tick(ts),
                _ = sleep_until(self.ping_due), if authenticated => Wake::PingDue,
                _ = sleep_until(self.handshake_deadline), if !authenticated => Wake::HandshakeExpired,
            };
            let mut ending = match wake {
                Wake::Incoming(incoming) => self.on_incoming(socket, incoming).await,
                Wake::Reply(reply) => feed(socket, Message::text(reply)).await,
                Wake::Notice => self.on_notice(socket).await,
                Wake::Tick(ts) => self.send_event(socket, "tick", &json!({"ts": ts})).await,
                Wake::PingDue => {
                    // After the event loop was blocked (busy, frozen-soft) the timer and the
                    // peer's pong become ready together: read what is already there first, so a
                    // pong that arrived during the block counts.
                    let mut ending = None;
                    let mut handled = 0;
                    while ending.is_none() && handled < BATCH_LIMIT {
                        let Some(incoming) = socket.next().now_or_never() else {
                            break;
                        };
                        ending = self.on_incoming(socket, incoming).await;
                        handled += 1;
                    }
                    match ending {
                        Some(ending) => Some(ending),
                        None => self.on_ping_due(socket).await,
                    }
                }
                Wake::HandshakeExpired => {
                    crate::log!("{}: handshake timeout", self.connection_id);
                    Some(Ending::CloseWithoutCode)
                }
            };
            // Serve whatever else is already readable before paying for a flush.
            let mut handled = 0;
            while ending.is_none() && handled < BATCH_LIMIT {
                let Some(incoming) = socket.next().now_or_never() else {
                    break;
                };
                ending = self.on_incoming(socket, incoming).await;
                handled += 1;
            }
            while ending.is_none() {
                let Ok(reply) = self.replies_rx.try_recv() else {
                    break;
                };
                ending = feed(socket, Message::text(reply)).await;
            }
            if socket.flush().await.is_err() {
                return Ending::Gone;
            }
            for effect in std::mem::take(&mut self.after_flush) {
                match effect {
                    AfterFlush::Exit(code) => faults::exit_now(code),
                    AfterFlush::Hang(mode) => faults::hang_now(mode),
                    AfterFlush::Block(kind, ms) => faults::block_now(kind, ms),
                    AfterFlush::RaiseRestart => {
                        // The real gateway signals SIGUSR2 to itself; doing the same keeps one restart path.
                        // SAFETY: kill() on our own pid with a handled signal has no memory-safety preconditions.
                        unsafe {
                            libc::kill(libc::getpid(), libc::SIGUSR2);
                        }
                    }
                }
            }
            if let Some(ending) = ending {
                return ending;
            }
        }
    }

    async fn on_notice(&mut self, socket: &mut Socket) -> Option<Ending> {
        let restart_expected_ms = match *self.notice_rx.borrow_and_update() {
            Notice::Serving => return None,
            Notice::ShuttingDown {
                restart_expected_ms,
            } => restart_expected_ms,
            // Normally every authenticated connection left at the drain's start; one that missed
            // that notice still gets its shutdown event.
            Notice::ListenerClosed => Some(self.shared.restart_expected_ms()),
        };
        if self.session.is_some() {
            let payload = match restart_expected_ms {
                Some(ms) => json!({"reason": "gateway restarting", "restartExpectedMs": ms}),
                None => json!({"reason": "gateway stopping"}),
            };
            if let Some(ending) = self.send_event(socket, "shutdown", &payload).await {
                return Some(ending);
            }
            if socket.flush().await.is_err() {
                return Some(Ending::Gone);
            }
            sleep(Duration::from_millis(protocol::SHUTDOWN_EVENT_LEAD_MS)).await;
        }
        Some(Ending::Close(
            close::SERVICE_RESTART,
            "service restart".into(),
        ))
    }

    async fn on_ping_due(&mut self, socket: &mut Socket) -> Option<Ending> {
        if self.awaiting_pong {
            // Like ws `terminate()`: no close frame, the client sees 1006.
            crate::log!(
                "{}: no pong within {} ms; terminating",
                self.connection_id,
                self.shared.settings.ping_interval_ms
            );
            return Some(Ending::Drop);
        }
        self.awaiting_pong = true;
        self.ping_due =
            Instant::now() + Duration::from_millis(self.shared.settings.ping_interval_ms);
        feed(socket, Message::Ping(Vec::new().into())).await
    }

    async fn send_event(
        &mut self,
        socket: &mut Socket,
        name: &str,
        payload: &Value,
    ) -> Option<Ending> {
        self.seq += 1;
        feed(
            socket,
            Message::text(protocol::event(name, payload, self.seq)),
        )
        .await
    }

    /// The event-flood fault: `count` `sim.flood` events, flushed in batches so the socket's
    /// write buffer stays small and the peer's reading speed sets the pace.
    async fn flood(&mut self, socket: &mut Socket, count: u64, pad_bytes: usize) -> Option<Ending> {
        const FLUSH_EVERY: u64 = 64;
        crate::log!(
            "{}: flooding {count} events of {pad_bytes} padding bytes",
            self.connection_id
        );
        let pad = "x".repeat(pad_bytes);
        for n in 0..count {
            let payload = json!({"n": n, "pad": pad});
            if let Some(ending) = self.send_event(socket, "sim.flood", &payload).await {
                return Some(ending);
            }
            if (n + 1).is_multiple_of(FLUSH_EVERY) && socket.flush().await.is_err() {
                return Some(Ending::Gone);
            }
        }
        if socket.flush().await.is_err() {
            return Some(Ending::Gone);
        }
        crate::log!("{}: flood of {count} events sent", self.connection_id);
        None
    }

    async fn on_incoming(
        &mut self,
        socket: &mut Socket,
        incoming: Option<Result<Message, WsError>>,
    ) -> Option<Ending> {
        let message = match incoming {
            None => return Some(Ending::Gone),
            Some(Ok(message)) => message,
            Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size }))) => {
                crate::log!(
                    "{}: frame of {size} bytes exceeds {max_size}",
                    self.connection_id
                );
                return Some(Ending::Close(
                    close::MESSAGE_TOO_BIG,
                    "Max payload size exceeded".into(),
                ));
            }
            Some(Err(WsError::Utf8(_))) => {
                crate::log!("{}: invalid UTF-8 in a text frame", self.connection_id);
                return Some(Ending::Close(
                    close::INVALID_PAYLOAD,
                    "invalid UTF-8".into(),
                ));
            }
            Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                return Some(Ending::Gone)
            }
            Some(Err(error)) => {
                crate::log!("{}: socket error: {error}", self.connection_id);
                return Some(Ending::Gone);
            }
        };
        let text = match &message {
            Message::Text(text) => text.as_str().to_string(),
            // Node's ws hands binary frames to the same parser as text; do the same.
            Message::Binary(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            Message::Pong(_) => {
                self.awaiting_pong = false;
                return None;
            }
            // tungstenite queues the pong (and the close reply) itself; the next flush sends it.
            Message::Ping(_) | Message::Frame(_) => return None,
            Message::Close(_) => return Some(Ending::Gone),
        };
        if self.session.is_none() {
            self.on_handshake_frame(socket, &text).await
        } else {
            self.on_request_frame(socket, &text).await
        }
    }

    async fn on_handshake_frame(&mut self, socket: &mut Socket, text: &str) -> Option<Ending> {
        if text.len() > protocol::MAX_PREAUTH_PAYLOAD_BYTES {
            crate::log!(
                "{}: pre-auth frame of {} bytes exceeds 64 KiB",
                self.connection_id,
                text.len()
            );
            return Some(Ending::Close(
                close::MESSAGE_TOO_BIG,
                "Max payload size exceeded".into(),
            ));
        }
        let Ok(frame) = serde_json::from_str::<Value>(text) else {
            // Observed on the real gateway: a pre-auth non-JSON frame closes with 1000 and no reason.
            crate::log!("{}: pre-auth frame is not JSON", self.connection_id);
            return Some(Ending::Close(1000, String::new()));
        };
        let id = frame.get("id").cloned().unwrap_or(Value::Null);
        let is_connect = frame.get("type").and_then(Value::as_str) == Some("req")
            && frame.get("method").and_then(Value::as_str) == Some("connect");
        if !is_connect {
            let error = RpcError::new(
                code::INVALID_REQUEST,
                "invalid handshake: first request must be connect",
            );
            return self
                .reject(socket, &id, error, close::POLICY_VIOLATION)
                .await;
        }

        if self.shared.settings.connect_no_reply {
            // Fault: stuck mid-handshake; only the pre-auth budget ends this connection.
            crate::log!(
                "{}: connect left unanswered (--connect-no-reply)",
                self.connection_id
            );
            return None;
        }
        if self.shared.settings.connect_close {
            crate::log!(
                "{}: connect answered by a dropped socket (--connect-close)",
                self.connection_id
            );
            return Some(Ending::CloseWithoutCode);
        }
        if self.shared.settings.connect_bad_hello {
            crate::log!(
                "{}: connect answered without a protocol (--connect-bad-hello)",
                self.connection_id
            );
            let reply = protocol::response_ok(&id, &serde_json::json!({"type": "hello-ok"}));
            return feed(socket, Message::text(reply)).await;
        }
        let now = std::time::Instant::now();
        let boot = self.shared.boot();
        let policy = ServerPolicy {
            protocol: self.shared.settings.protocol,
            token: self.shared.token.lock().expect("token lock").clone(),
            password: self.shared.settings.password.clone(),
            reject_token: self.shared.flags.reject_token.load(Ordering::Relaxed),
            starting: boot.phase(now) == crate::probes::Phase::Starting,
            restarting: boot.draining && boot.restarting,
        };
        let device_tokens = &self.shared.device_tokens;
        let lookup = |token: &str| {
            device_tokens
                .lock()
                .expect("device tokens lock")
                .get(token)
                .cloned()
        };
        let outcome = handshake::evaluate_connect(
            frame.get("params"),
            &policy,
            &self.nonce,
            unix_ms(),
            &lookup,
        );
        match outcome {
            Err(rejected) => {
                crate::log!(
                    "{}: connect rejected: {}",
                    self.connection_id,
                    rejected.error.message
                );
                let reply = protocol::response_error(&id, &rejected.error);
                if let Some(ending) = feed(socket, Message::text(reply)).await {
                    return Some(ending);
                }
                Some(Ending::Close(rejected.close_code, rejected.close_reason))
            }
            Ok(accepted) => self.accept(socket, &id, accepted, &boot.boot_id).await,
        }
    }

    async fn reject(
        &mut self,
        socket: &mut Socket,
        id: &Value,
        error: RpcError,
        close_code: u16,
    ) -> Option<Ending> {
        crate::log!("{}: {}", self.connection_id, error.message);
        if let Some(ending) =
            feed(socket, Message::text(protocol::response_error(id, &error))).await
        {
            return Some(ending);
        }
        Some(Ending::Close(close_code, error.message))
    }

    async fn accept(
        &mut self,
        socket: &mut Socket,
        id: &Value,
        accepted: Accepted,
        boot_id: &str,
    ) -> Option<Ending> {
        let device_token = accepted.issue_device_token.then(|| {
            let token = format!("sim-dt-{}", uuid::Uuid::new_v4().simple());
            self.shared
                .device_tokens
                .lock()
                .expect("device tokens lock")
                .insert(token.clone(), accepted.scopes.clone());
            token
        });
        let settings = &self.shared.settings;
        let mut auth = json!({
            "method": accepted.method.as_str(),
            "role": accepted.role,
            "scopes": accepted.scopes,
        });
        if let Some(token) = &device_token {
            auth["deviceToken"] = json!(token);
            auth["issuedAtMs"] = json!(unix_ms());
        }
        let hello = json!({
            "type": "hello-ok",
            "protocol": accepted.protocol,
            "server": {
                "version": settings.version_string,
                "buildId": self.shared.build_id,
                "bootId": boot_id,
                "controlUiBuildSource": "none",
                "connId": self.connection_id,
            },
            "features": {"methods": protocol::METHODS, "events": protocol::EVENTS, "capabilities": []},
            "snapshot": {
                "suspension": {"phase": "active"},
                "presence": [],
                "health": protocol::health_payload(unix_ms()),
                "stateVersion": {"presence": 1, "health": 1},
                "uptimeMs": self.shared.process_uptime_ms(),
                "appliedConfigHash": "sim",
                "sessionDefaults": {},
                "configPath": self.shared.config_path.display().to_string(),
                "stateDir": self.shared.config_path.parent().map(|dir| dir.display().to_string()),
                "authMode": if policy_has_secret(&self.shared) { "token" } else { "none" },
            },
            "auth": auth,
            "policy": {
                "maxPayload": protocol::MAX_PAYLOAD_BYTES,
                "maxBufferedBytes": protocol::MAX_BUFFERED_BYTES,
                "tickIntervalMs": settings.tick_interval_ms,
            },
        });
        crate::log!(
            "{}: connected client {}/{} auth {} scopes [{}]{}",
            self.connection_id,
            accepted.client_id,
            accepted.client_mode,
            accepted.method.as_str(),
            accepted.scopes.join(","),
            accepted
                .device
                .as_ref()
                .map(|device| format!(" device {} ({})", &device.id[..12], device.payload_version))
                .unwrap_or_default()
        );
        if let Some(ending) = feed(socket, Message::text(protocol::response_ok(id, &hello))).await {
            return Some(ending);
        }
        self.session = Some(Session {
            scopes: accepted.scopes,
        });
        self.ticks_rx = Some(self.shared.ticks.subscribe());
        self.ping_due = Instant::now() + Duration::from_millis(settings.ping_interval_ms);
        if let Some(ending) = self
            .send_event(socket, "health", &protocol::health_payload(unix_ms()))
            .await
        {
            return Some(ending);
        }
        if self.shared.settings.ready_event {
            if let Some(ending) = self
                .send_event(socket, "gateway.ready", &json!({"ts": unix_ms()}))
                .await
            {
                return Some(ending);
            }
        }
        let (count, pad_bytes) = (
            self.shared.settings.event_flood,
            self.shared.settings.event_flood_bytes,
        );
        if count > 0 {
            return self.flood(socket, count, pad_bytes).await;
        }
        None
    }

    async fn on_request_frame(&mut self, socket: &mut Socket, text: &str) -> Option<Ending> {
        let Ok(frame) = serde_json::from_str::<HashMap<String, &RawValue>>(text) else {
            crate::log!(
                "{}: dropped a frame that is not a JSON object",
                self.connection_id
            );
            return None;
        };
        let Some(raw_id) = frame
            .get("id")
            .filter(|raw| raw.get().starts_with('"') && raw.get() != "\"\"")
        else {
            crate::log!(
                "{}: dropped a frame without a string id",
                self.connection_id
            );
            return None;
        };
        let id: Value = serde_json::from_str(raw_id.get()).unwrap_or(Value::Null);
        if frame.get("type").map(|raw| raw.get()) != Some("\"req\"") {
            crate::log!("{}: dropped a non-request frame", self.connection_id);
            return None;
        }
        if let Some(unexpected) = frame
            .keys()
            .find(|key| !REQUEST_KEYS.contains(&key.as_str()))
        {
            let error = RpcError::new(
                code::INVALID_REQUEST,
                format!("invalid request frame: at root: unexpected property '{unexpected}'"),
            );
            return feed(socket, Message::text(protocol::response_error(&id, &error))).await;
        }
        let method: Option<String> = frame
            .get("method")
            .and_then(|raw| serde_json::from_str(raw.get()).ok());
        let Some(method) = method else {
            let error = RpcError::new(
                code::INVALID_REQUEST,
                "invalid request frame: at /method: must be string",
            );
            return feed(socket, Message::text(protocol::response_error(&id, &error))).await;
        };
        let raw_params = frame.get("params").copied();

        // The benchmark hot path: answer without building a Value tree.
        if method == "echo" {
            let reply = protocol::response_ok_raw(
                raw_id.get(),
                raw_params.map(RawValue::get).unwrap_or("{}"),
            );
            return feed(socket, Message::text(reply)).await;
        }
        let scopes = &self.session.as_ref().expect("authenticated").scopes;
        if let Some(required) = protocol::required_scope(&method) {
            if !protocol::scope_satisfied(scopes, required) {
                let error = RpcError::missing_scope(required, &[required]);
                return feed(socket, Message::text(protocol::response_error(&id, &error))).await;
            }
        }
        let params: Option<Value> = raw_params.and_then(|raw| serde_json::from_str(raw.get()).ok());
        let result = match method.as_str() {
            "health" => Ok(protocol::health_payload(unix_ms())),
            "status" => Ok(self.status_payload()),
            // Params are not validated, as on the real gateway (`{}`, `null` and `{"x":1}` alike).
            "system-presence" => Ok(protocol::system_presence_payload(
                &self.shared.settings.version_string,
                &self.shared.instance_id,
                unix_ms(),
            )),
            "sleep" => return self.sleep_then_reply(id, params.as_ref()),
            "gateway.restart.request" => {
                self.after_flush.push(AfterFlush::RaiseRestart);
                Ok(self.restart_payload(params.as_ref()))
            }
            "gateway.restart.preflight" => Ok(json!({"ok": true, "preflight": preflight()})),
            "sim.fault" => return self.apply_fault(socket, &id, params.as_ref()).await,
            other => Err(RpcError::unknown_method(other)),
        };
        let reply = match result {
            Ok(payload) => protocol::response_ok(&id, &payload),
            Err(error) => protocol::response_error(&id, &error),
        };
        feed(socket, Message::text(reply)).await
    }

    fn sleep_then_reply(&mut self, id: Value, params: Option<&Value>) -> Option<Ending> {
        let ms = params
            .and_then(|params| params.get("ms"))
            .and_then(Value::as_u64);
        let reply_tx = self.replies_tx.clone();
        let Some(ms) = ms.filter(|ms| *ms <= MAX_SLEEP_MS) else {
            let error = RpcError::new(
                code::INVALID_REQUEST,
                format!("invalid sleep params: ms must be 0..={MAX_SLEEP_MS}"),
            );
            let _ = reply_tx.send(protocol::response_error(&id, &error));
            return None;
        };
        tokio::spawn(async move {
            sleep(Duration::from_millis(ms)).await;
            // The connection may be gone by now; then nobody wants the reply.
            let _ = reply_tx.send(protocol::response_ok(&id, &json!({"sleptMs": ms})));
        });
        None
    }

    fn status_payload(&self) -> Value {
        let shared = &self.shared;
        let boot = shared.boot();
        let stats = shared.stats.lock().expect("stats lock");
        json!({
            "ok": true,
            "pid": shared.pid,
            "bootId": boot.boot_id,
            "buildId": shared.build_id,
            "version": shared.settings.version_string,
            "protocol": shared.settings.protocol,
            "port": shared.port.load(Ordering::Relaxed),
            "uptimeMs": shared.process_uptime_ms(),
            "bootUptimeMs": boot.started.elapsed().as_millis() as u64,
            "phase": format!("{:?}", boot.phase(std::time::Instant::now())).to_lowercase(),
            "restarts": stats.restarts,
            "connectionsTotal": stats.connections_total,
            "signals": stats.signals,
            "sigusr1Count": stats.signals.get("SIGUSR1").copied().unwrap_or(0),
            "grandchildPids": stats.grandchild_pids,
            "supervisorMode": if shared.external_supervisor { "external" } else { "in-process" },
            "shutdownBudget": {"drainMs": shared.settings.drain_ms, "shutdownMs": shared.settings.drain_ms + 10},
            "faults": {
                "rejectToken": shared.flags.reject_token.load(Ordering::Relaxed),
                "noChallenge": shared.flags.no_challenge.load(Ordering::Relaxed),
                "ignoreSigterm": shared.flags.ignore_sigterm.load(Ordering::Relaxed),
            },
        })
    }

    fn restart_payload(&self, params: Option<&Value>) -> Value {
        let reason = params
            .and_then(|params| params.get("reason"))
            .and_then(Value::as_str)
            .unwrap_or("rpc");
        json!({
            "ok": true,
            "status": "scheduled",
            "preflight": preflight(),
            "restart": {
                "ok": true, "pid": self.shared.pid, "signal": "SIGUSR2", "reason": reason, "mode": "emit",
                "cooldownMsApplied": 0, "delayMs": 0, "coalesced": false,
            },
        })
    }

    async fn apply_fault(
        &mut self,
        socket: &mut Socket,
        id: &Value,
        params: Option<&Value>,
    ) -> Option<Ending> {
        let fault = match faults::parse(params) {
            Ok(fault) => fault,
            Err(problem) => {
                let error = RpcError::new(
                    code::INVALID_REQUEST,
                    format!("invalid sim.fault params: {problem}"),
                );
                return feed(socket, Message::text(protocol::response_error(id, &error))).await;
            }
        };
        crate::log!("{}: fault injected: {fault:?}", self.connection_id);
        let mut payload =
            json!({"ok": true, "applied": params.and_then(|params| params.get("kind")).cloned()});
        let mut ending = None;
        let mut after_reply: Option<Message> = None;
        let mut flood = None;
        let mut event = None;
        let mut notice = None;
        let flags = &self.shared.flags;
        match fault {
            Fault::Crash { code, after_ms: 0 } => self.after_flush.push(AfterFlush::Exit(code)),
            Fault::Crash { code, after_ms } => {
                tokio::spawn(async move {
                    sleep(Duration::from_millis(after_ms)).await;
                    faults::exit_now(code);
                });
            }
            Fault::Hang { mode, after_ms: 0 } => self.after_flush.push(AfterFlush::Hang(mode)),
            Fault::Hang { mode, after_ms } => {
                tokio::spawn(async move {
                    sleep(Duration::from_millis(after_ms)).await;
                    faults::hang_now(mode);
                });
            }
            Fault::Block {
                kind,
                ms,
                after_ms: 0,
            } => self.after_flush.push(AfterFlush::Block(kind, ms)),
            Fault::Block { kind, ms, after_ms } => {
                tokio::spawn(async move {
                    sleep(Duration::from_millis(after_ms)).await;
                    faults::block_now(kind, ms);
                });
            }
            Fault::Restart => self.after_flush.push(AfterFlush::RaiseRestart),
            Fault::Stderr { line, repeat } => {
                for _ in 0..repeat {
                    eprintln!("{line}");
                }
            }
            Fault::Malformed(kind) => after_reply = Some(malformed_message(kind)),
            Fault::EventFlood { count, pad_bytes } => flood = Some((count, pad_bytes)),
            Fault::Event {
                name,
                payload,
                count,
                interval_ms,
                stamp,
            } => event = Some((name, payload, count, interval_ms, stamp)),
            Fault::IgnoreSigterm { enabled } => {
                flags.ignore_sigterm.store(enabled, Ordering::Relaxed)
            }
            Fault::SpawnGrandchild { command } => {
                match crate::server::spawn_grandchild(&self.shared, &command) {
                    Ok(pid) => payload["pid"] = json!(pid),
                    Err(error) => {
                        let error =
                            RpcError::new(code::UNAVAILABLE, format!("spawn failed: {error}"));
                        return feed(socket, Message::text(protocol::response_error(id, &error)))
                            .await;
                    }
                }
            }
            Fault::Close {
                code,
                reason,
                notice: shutdown,
            } => {
                notice = shutdown;
                ending = Some(Ending::Close(code, reason));
            }
            Fault::Drop => ending = Some(Ending::Drop),
            Fault::NoChallenge { enabled } => flags.no_challenge.store(enabled, Ordering::Relaxed),
            Fault::RejectToken { enabled } => flags.reject_token.store(enabled, Ordering::Relaxed),
            Fault::StartupWindow { ms } => {
                let until = std::time::Instant::now() + Duration::from_millis(ms);
                self.shared.boot.lock().expect("boot lock").startup_until = Some(until);
            }
            Fault::NextBoot(next) => {
                let mut armed = self.shared.next_boot.lock().expect("next boot lock");
                armed.slow_start_ms = armed.slow_start_ms.max(next.slow_start_ms);
                armed.exit_before_ready = next.exit_before_ready.or(armed.exit_before_ready);
                armed.invalid_config |= next.invalid_config;
                armed.startup_window_ms = armed.startup_window_ms.max(next.startup_window_ms);
            }
        }
        if let Some(ending) = feed(socket, Message::text(protocol::response_ok(id, &payload))).await
        {
            return Some(ending);
        }
        if let Some(message) = after_reply {
            if let Some(ending) = feed(socket, message).await {
                return Some(ending);
            }
        }
        if let Some((name, mut payload, count, interval_ms, stamp)) = event {
            for n in 0..count {
                if n > 0 && interval_ms > 0 {
                    sleep(Duration::from_millis(interval_ms)).await;
                }
                if stamp {
                    if let Some(object) = payload.as_object_mut() {
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|since| since.as_micros() as u64)
                            .unwrap_or(0);
                        object.insert("sentAtUs".into(), json!(now));
                        object.insert("n".into(), json!(n));
                    }
                }
                if let Some(ending) = self.send_event(socket, &name, &payload).await {
                    return Some(ending);
                }
                if socket.flush().await.is_err() {
                    return Some(Ending::Gone);
                }
            }
        }
        if let Some((count, pad_bytes)) = flood {
            if let Some(ending) = self.flood(socket, count, pad_bytes).await {
                return Some(ending);
            }
        }
        if let Some(kind) = notice {
            let payload = match kind {
                ShutdownNotice::Restarting => {
                    json!({"reason": "gateway restarting", "restartExpectedMs": self.shared.restart_expected_ms()})
                }
                ShutdownNotice::Stopping => json!({"reason": "gateway stopping"}),
            };
            if let Some(ending) = self.send_event(socket, "shutdown", &payload).await {
                return Some(ending);
            }
            if socket.flush().await.is_err() {
                return Some(Ending::Gone);
            }
            sleep(Duration::from_millis(protocol::SHUTDOWN_EVENT_LEAD_MS)).await;
        }
        ending
    }
}

fn policy_has_secret(shared: &Shared) -> bool {
    shared.token.lock().expect("token lock").is_some() || shared.settings.password.is_some()
}

fn preflight() -> Value {
    json!({
        "safe": true,
        "counts": {
            "queueSize": 0, "pendingReplies": 0, "embeddedRuns": 0, "cronRuns": 0,
            "backgroundExecSessions": 0, "rootRequests": 0, "activeTasks": 0, "totalActive": 0,
        },
        "blockers": [],
        "summary": "no active work",
    })
}

fn malformed_message(kind: Malformed) -> Message {
    match kind {
        Malformed::NonJson => Message::text("this is not json {"),
        Malformed::NonObject => Message::text("[1,2,3]"),
        Malformed::UnknownId => Message::text(
            json!({"type": "res", "id": format!("sim-unknown-{}", uuid::Uuid::new_v4()), "ok": true, "payload": {}})
                .to_string(),
        ),
        Malformed::Oversize { bytes } => {
            let prefix = r#"{"type":"event","event":"sim.oversize","payload":{"pad":""#;
            let suffix = r#""}}"#;
            let pad = bytes.saturating_sub(prefix.len() + suffix.len());
            let mut frame = String::with_capacity(bytes);
            frame.push_str(prefix);
            frame.extend(std::iter::repeat_n('x', pad));
            frame.push_str(suffix);
            Message::text(frame)
        }
        Malformed::DeepNesting { depth } => {
            let prefix = r#"{"type":"event","event":"sim.deep","payload":"#;
            let mut frame = String::with_capacity(prefix.len() + 2 * depth + 1);
            frame.push_str(prefix);
            frame.extend(std::iter::repeat_n('[', depth));
            frame.extend(std::iter::repeat_n(']', depth));
            frame.push('}');
            Message::text(frame)
        }
        // A text frame must be UTF-8; a raw frame is the only way to send one that is not.
        Malformed::InvalidUtf8 => {
            Message::Frame(Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true))
        }
    }
}

async fn next_tick(ticks: &mut Option<broadcast::Receiver<i64>>) -> Option<i64> {
    let Some(ticks) = ticks else {
        return std::future::pending().await;
    };
    loop {
        match ticks.recv().await {
            Ok(ts) => return Some(ts),
            // A lagging connection just skips ticks; they are liveness hints, not state.
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return std::future::pending().await,
        }
    }
}

/// Queues a frame without flushing; `Some(Gone)` when the socket is broken.
async fn feed(socket: &mut Socket, message: Message) -> Option<Ending> {
    match socket.feed(message).await {
        Ok(()) => None,
        Err(_) => Some(Ending::Gone),
    }
}
