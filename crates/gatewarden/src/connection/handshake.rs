//! Opening a gateway socket: connect, wait for `connect.challenge`, send `connect`, read `hello-ok`
//! (C1, C2, A1–A3), and the readiness probe built on the same first step (W1).
//!
//! These are plain async functions over an owned socket, so the actor runs one as a cancellable
//! future and gets the socket back only when the handshake succeeded: a half-open socket never
//! reaches the actor's state, and dropping the future drops the socket (T3).

use std::time::Duration;

use awc::error::{ConnectError, SendRequestError, WsClientError, WsProtocolError};
use awc::ws::{CloseCode, CloseReason, Message};
use futures_util::{SinkExt as _, StreamExt as _};
use gatewarden_core::config::ConnectConfig;
use gatewarden_core::device_auth::SignaturePayload;
use gatewarden_core::error::StartFailure;
use gatewarden_core::frame::{
    decode_challenge, decode_hello_ok, decode_inbound_for, encode_request, is_restart_window,
    is_startup_window, Challenge, ClientInfo, ConnectRequest, GatewayErrorInfo, HelloOk, Inbound,
    SignedDevice, CONNECT_CHALLENGE_EVENT, CONNECT_METHOD,
};
use gatewarden_core::machine::StartObservation;
use tokio::time::{timeout_at, Instant};

use super::frames::{BoundedCodec, FrameAssembler, Received};
use crate::endpoint::{check_gateway_endpoint, EndpointError, GatewayScheme};
use crate::identity::DeviceIdentity;
use crate::launch::Secret;

/// A gateway socket: one framed stream for both directions (reading and writing it from one
/// place needs no lock between two halves).
pub(crate) type WsFramed = actix_codec::Framed<awc::BoxedSocket, BoundedCodec>;

/// The largest message a readiness probe accepts: it only reads the challenge, and the gateway
/// limits pre-auth frames to 64 KiB anyway.
const PROBE_MAX_FRAME_BYTES: usize = 64 * 1024;

/// How long a probe waits for its close frame to be written before dropping the socket.
const PROBE_CLOSE_BUDGET: Duration = Duration::from_millis(200);

/// An open WebSocket and the assembler that joins its fragments.
pub(crate) struct Socket {
    pub(crate) framed: WsFramed,
    pub(crate) assembler: FrameAssembler,
}

/// Why a socket could not be opened.
#[derive(Debug)]
enum OpenError {
    /// Nothing listens on the port.
    Refused,
    /// The TCP connect or the HTTP upgrade did not finish in time.
    Timeout,
    /// Anything else (upgrade refused with an HTTP status, reset, ...).
    Other(String),
    /// The host may not be reached (not loopback; this build has no TLS).
    HostRefused(EndpointError),
}

/// Where a message wait ended without a text message.
enum Ended {
    /// The server sent a close frame.
    Closed { code: u16, reason: String },
    /// The TCP connection went away (or the stream failed) without a close frame.
    Dropped(String),
}

fn websocket_url(host: &str, port: u16, path: &str) -> String {
    // A bare IPv6 address needs brackets in a URL.
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    format!("ws://{host}:{port}{path}")
}

/// Connect and upgrade, within `budget`.
async fn open_socket(
    host: &str,
    port: u16,
    path: &str,
    max_frame_bytes: usize,
    budget: Duration,
) -> Result<Socket, OpenError> {
    // No TLS in this build, so only loopback is ever reachable (see crate::endpoint); checked
    // here too, so no unchecked configuration can send the token over a network.
    if let Err(error) = check_gateway_endpoint(host, GatewayScheme::Ws, false) {
        return Err(OpenError::HostRefused(error));
    }
    let client = awc::Client::builder().timeout(budget).finish();
    let connecting = client
        .ws(websocket_url(host, port, path))
        .max_frame_size(max_frame_bytes)
        .connect();
    let (_response, framed) = match tokio::time::timeout(budget, connecting).await {
        Err(_) => return Err(OpenError::Timeout),
        Ok(Err(error)) => return Err(classify_open_error(error)),
        Ok(Ok(connected)) => connected,
    };
    // Our own bound on top of awc's, which buffers a whole oversize frame before dropping it.
    let framed = framed.into_map_codec(|codec| BoundedCodec::new(codec, max_frame_bytes));
    Ok(Socket {
        framed,
        assembler: FrameAssembler::new(max_frame_bytes),
    })
}

fn classify_open_error(error: WsClientError) -> OpenError {
    match error {
        WsClientError::SendRequest(SendRequestError::Connect(ConnectError::Io(io)))
            if io.kind() == std::io::ErrorKind::ConnectionRefused =>
        {
            OpenError::Refused
        }
        WsClientError::SendRequest(SendRequestError::Connect(ConnectError::Timeout))
        | WsClientError::SendRequest(SendRequestError::Timeout) => OpenError::Timeout,
        other => OpenError::Other(other.to_string()),
    }
}

impl Socket {
    /// The next whole text message, answering pings on the way. Binary and malformed messages
    /// are skipped (M5).
    async fn next_text(&mut self) -> Result<String, Ended> {
        loop {
            let frame = match self.framed.next().await {
                None => return Err(Ended::Dropped("connection dropped".to_string())),
                Some(Err(WsProtocolError::Overflow)) => {
                    tracing::error!("dropped an inbound frame larger than max_frame_bytes");
                    continue;
                }
                Some(Err(error)) => return Err(Ended::Dropped(error.to_string())),
                Some(Ok(frame)) => frame,
            };
            match self.assembler.accept(frame) {
                Received::Text(text) => return Ok(text.to_string()),
                Received::Ping(bytes) => {
                    if let Err(error) = self.framed.send(Message::Pong(bytes)).await {
                        return Err(Ended::Dropped(error.to_string()));
                    }
                }
                Received::Close { code, reason } => return Err(Ended::Closed { code, reason }),
                Received::Dropped(why) => tracing::debug!(why, "dropped an inbound message"),
                Received::Binary | Received::Pong | Received::Partial => {}
            }
        }
    }

    /// Wait for `connect.challenge` until `deadline`.
    async fn challenge(&mut self, deadline: Instant) -> Result<Challenge, StartFailure> {
        loop {
            let text = match timeout_at(deadline, self.next_text()).await {
                Err(_) => return Err(StartFailure::ChallengeTimeout),
                Ok(Err(ended)) => return Err(closed_before_handshake(ended)),
                Ok(Ok(text)) => text,
            };
            match decode_inbound_for(&text, |_| false) {
                Inbound::Event { event, payload, .. } if event == CONNECT_CHALLENGE_EVENT => {
                    return decode_challenge(&payload).map_err(|error| StartFailure::Other {
                        message: format!("invalid connect.challenge: {error}"),
                    });
                }
                _ => tracing::debug!(
                    bytes = text.len(),
                    "ignored a frame that arrived before connect.challenge"
                ),
            }
        }
    }
}

fn closed_before_handshake(ended: Ended) -> StartFailure {
    match ended {
        Ended::Closed { code, reason } => StartFailure::SocketClosedBeforeHandshake {
            code: Some(code),
            reason: if reason.is_empty() {
                format!("code {code}")
            } else {
                reason
            },
        },
        Ended::Dropped(reason) => StartFailure::SocketClosedBeforeHandshake { code: None, reason },
    }
}

/// Everything one handshake needs, owned so the future is `'static`.
pub(crate) struct HandshakeRequest {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) path: String,
    pub(crate) max_frame_bytes: usize,
    pub(crate) connect: ConnectConfig,
    /// A3: read at connect time by the caller; never logged.
    pub(crate) token: Option<Secret>,
    /// A1: the device identity, when one could be loaded.
    pub(crate) identity: Option<DeviceIdentity>,
    pub(crate) client: ClientInfo,
    pub(crate) scopes: Vec<String>,
}

/// A socket that completed the handshake, with the reply.
pub(crate) struct Established {
    pub(crate) socket: Socket,
    pub(crate) hello: HelloOk,
}

/// How a handshake ended.
pub(crate) enum HandshakeOutcome {
    /// `hello-ok`: the socket is ready for requests (boxed: it is much larger than a failure).
    Completed(Box<Established>),
    /// W1 (beyond): the gateway is still starting (UNAVAILABLE + 1013); retry later.
    StartupWindow { retry_after_ms: Option<u64> },
    /// F7: the gateway is restarting in place (UNAVAILABLE `gateway-restarting`); retry later.
    RestartWindow { retry_after_ms: Option<u64> },
    /// Any other failure.
    Failed(StartFailure),
}

/// C1: open, wait for the challenge, send `connect` (C2 range, A1/A2 device, A3 token), and
/// wait for the reply.
pub(crate) async fn handshake(request: HandshakeRequest) -> HandshakeOutcome {
    let challenge_deadline =
        Instant::now() + Duration::from_millis(request.connect.challenge_timeout_ms);
    let budget = challenge_deadline.saturating_duration_since(Instant::now());
    let mut socket = match open_socket(
        &request.host,
        request.port,
        &request.path,
        request.max_frame_bytes,
        budget,
    )
    .await
    {
        Ok(socket) => socket,
        Err(OpenError::Refused) => {
            return HandshakeOutcome::Failed(StartFailure::ConnectionRefused { port: request.port })
        }
        Err(OpenError::Timeout) => return HandshakeOutcome::Failed(StartFailure::ChallengeTimeout),
        Err(OpenError::Other(reason)) => {
            return HandshakeOutcome::Failed(StartFailure::SocketClosedBeforeHandshake {
                code: None,
                reason,
            })
        }
        Err(OpenError::HostRefused(error)) => {
            return HandshakeOutcome::Failed(StartFailure::Other {
                message: error.to_string(),
            })
        }
    };
    let challenge = match socket.challenge(challenge_deadline).await {
        Ok(challenge) => challenge,
        Err(failure) => return HandshakeOutcome::Failed(failure),
    };

    let params = connect_params(&request, &challenge);
    let request_id = uuid::Uuid::new_v4().to_string();
    let frame = encode_request(&request_id, CONNECT_METHOD, Some(&params));
    // The frame holds the token: it goes to the socket and nowhere else.
    if let Err(error) = socket.framed.send(Message::Text(frame.into())).await {
        return HandshakeOutcome::Failed(StartFailure::SocketClosedBeforeHandshake {
            code: None,
            reason: error.to_string(),
        });
    }

    let reply_deadline =
        Instant::now() + Duration::from_millis(request.connect.handshake_timeout_ms);
    let outcome = loop {
        let text = match timeout_at(reply_deadline, socket.next_text()).await {
            Err(_) => return HandshakeOutcome::Failed(StartFailure::HandshakeTimeout),
            Ok(Err(ended)) => return HandshakeOutcome::Failed(closed_before_handshake(ended)),
            Ok(Ok(text)) => text,
        };
        match decode_inbound_for(&text, |id| id == request_id) {
            Inbound::Response { outcome, .. } => break outcome,
            _ => tracing::debug!(
                bytes = text.len(),
                "ignored a frame that arrived before the connect reply"
            ),
        }
    };

    match outcome {
        Ok(payload) => match decode_hello_ok(&payload) {
            Ok(hello) => HandshakeOutcome::Completed(Box::new(Established { socket, hello })),
            Err(error) => HandshakeOutcome::Failed(StartFailure::Other {
                message: format!("invalid connect reply: {error}"),
            }),
        },
        Err(error) => match GatewayErrorInfo::from_rpc_error(&error) {
            Some(info) if is_startup_window(&info) => HandshakeOutcome::StartupWindow {
                retry_after_ms: info.retry_after_ms,
            },
            Some(info) if is_restart_window(&info) => HandshakeOutcome::RestartWindow {
                retry_after_ms: info.retry_after_ms,
            },
            Some(info) => HandshakeOutcome::Failed(StartFailure::HandshakeRejected {
                code: info.code,
                details_code: info.details_code,
                message: error.to_string(),
            }),
            None => HandshakeOutcome::Failed(StartFailure::Other {
                message: error.to_string(),
            }),
        },
    }
}

/// The `connect` params: configured protocol range (C2), operator role and scopes, the token
/// (A3) and, with an identity, the device signed over the v3 payload (A1, A2).
fn connect_params(request: &HandshakeRequest, challenge: &Challenge) -> serde_json::Value {
    let mut connect = ConnectRequest::new(&request.connect, request.client.clone());
    connect.scopes = request.scopes.clone();
    connect.token = request
        .token
        .as_ref()
        .map(|token| token.expose().to_string());
    if let Some(identity) = &request.identity {
        // The docs ask for the challenge `ts`; the gateway accepts ±2 min of its own clock, so
        // local time is the fallback when the challenge has none.
        let signed_at = challenge.ts.unwrap_or_else(unix_ms);
        let payload = SignaturePayload {
            device_id: identity.device_id(),
            client_id: &connect.client.id,
            client_mode: &connect.client.mode,
            role: &connect.role,
            scopes: &connect.scopes,
            signed_at_ms: signed_at,
            token: connect.token.as_deref(),
            nonce: Some(&challenge.nonce),
            platform: Some(&connect.client.platform),
            device_family: connect.client.device_family.as_deref(),
        }
        .v3();
        connect.device = Some(SignedDevice {
            id: identity.device_id().to_string(),
            public_key: identity.public_key_base64url(),
            signature: identity.sign(&payload),
            signed_at,
            nonce: challenge.nonce.clone(),
        });
    }
    connect.to_params()
}

/// Wall-clock epoch milliseconds (0 if the clock is before 1970).
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// W1/O1: true only when a WebSocket to the port receives `connect.challenge` within
/// `timeout_ms`. A bare TCP listener, or a WebSocket that says nothing, is not a gateway. The
/// probe socket is closed with a normal close frame, so the gateway logs nothing alarming.
pub async fn probe_gateway(host: &str, port: u16, timeout_ms: u64) -> bool {
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    let budget = deadline.saturating_duration_since(Instant::now());
    let mut socket = match open_socket(host, port, "/", PROBE_MAX_FRAME_BYTES, budget).await {
        Ok(socket) => socket,
        Err(OpenError::HostRefused(error)) => {
            tracing::error!(%error, "not probing the gateway");
            return false;
        }
        Err(_) => return false,
    };
    let ready = socket.challenge(deadline).await.is_ok();
    let close = socket
        .framed
        .send(Message::Close(Some(CloseReason::from(CloseCode::Normal))));
    // Best effort: the probe's answer does not depend on the close going out.
    let _ = tokio::time::timeout(PROBE_CLOSE_BUDGET, close).await;
    ready
}

/// W1 (beyond): the status code of the gateway's `GET /startupz` (200 once its startup
/// sidecars have settled, 503 while starting or draining), `None` without an HTTP answer within
/// `timeout_ms`. Plain HTTP on loopback, like the WebSocket (see crate::endpoint).
pub async fn probe_startupz(host: &str, port: u16, timeout_ms: u64) -> Option<u16> {
    check_gateway_endpoint(host, GatewayScheme::Ws, false).ok()?;
    let budget = Duration::from_millis(timeout_ms.max(1));
    let url = websocket_url(host, port, "/startupz").replacen("ws://", "http://", 1);
    let client = awc::Client::builder().timeout(budget).finish();
    let request = client.get(url).send();
    let response = tokio::time::timeout(budget, request).await.ok()?.ok()?;
    Some(response.status().as_u16())
}

/// F6: what one readiness probe found.
enum ProbeSeen {
    /// Nothing accepts connections on the port.
    Refused,
    /// Something accepted the connection but sent no challenge in time.
    OpenNoChallenge,
    /// The gateway sent `connect.challenge`.
    Challenge,
}

/// One readiness probe, telling a refused port from an open one that sends no challenge.
async fn probe_gateway_seen(host: &str, port: u16, timeout_ms: u64) -> ProbeSeen {
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    let budget = deadline.saturating_duration_since(Instant::now());
    let mut socket = match open_socket(host, port, "/", PROBE_MAX_FRAME_BYTES, budget).await {
        Ok(socket) => socket,
        Err(OpenError::HostRefused(error)) => {
            tracing::error!(%error, "not probing the gateway");
            return ProbeSeen::Refused;
        }
        Err(OpenError::Refused) => return ProbeSeen::Refused,
        // The TCP connect got through (loopback refuses at once otherwise); the upgrade did not.
        Err(OpenError::Timeout | OpenError::Other(_)) => return ProbeSeen::OpenNoChallenge,
    };
    let ready = socket.challenge(deadline).await.is_ok();
    let close = socket
        .framed
        .send(Message::Close(Some(CloseReason::from(CloseCode::Normal))));
    let _ = tokio::time::timeout(PROBE_CLOSE_BUDGET, close).await;
    if ready {
        ProbeSeen::Challenge
    } else {
        ProbeSeen::OpenNoChallenge
    }
}

/// W1 (beyond): probe until the gateway sends `connect.challenge`, starting every
/// `probe_interval_initial_ms` and doubling up to `probe_interval_max_ms`, each probe bounded by
/// `probe_timeout_ms`, all of it by `ready_timeout_ms` ([`StartFailure::ReadyTimeout`]).
///
/// A gateway that is not listening yet refuses at once, so the short first intervals find a
/// fast-starting gateway within a few milliseconds while a slow one is polled at most every
/// `probe_interval_max_ms`. The caller cancels the wait (process exit) by dropping the future.
pub async fn await_readiness(
    host: &str,
    port: u16,
    config: &ConnectConfig,
) -> Result<(), StartFailure> {
    await_readiness_observed(host, port, config, |_| {}).await
}

/// [`await_readiness`], telling `observe` what the probes see whenever it changes (F6): the
/// port open or not, and, while it is open without a challenge, `/startupz`'s answer. The
/// lifecycle machine decides what that means (the challenge bound, the progress lines).
pub async fn await_readiness_observed(
    host: &str,
    port: u16,
    config: &ConnectConfig,
    mut observe: impl FnMut(StartObservation),
) -> Result<(), StartFailure> {
    let started = Instant::now();
    let deadline = started + Duration::from_millis(config.ready_timeout_ms);
    let max_interval = config.probe_interval_max_ms.max(1);
    let mut interval = config.probe_interval_initial_ms.clamp(1, max_interval);
    let mut last: Option<StartObservation> = None;
    let timed_out = || StartFailure::ReadyTimeout {
        waited_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        let probe_ms = config
            .probe_timeout_ms
            .min(u64::try_from(left.as_millis()).unwrap_or(u64::MAX))
            .max(1);
        let observation = match probe_gateway_seen(host, port, probe_ms).await {
            ProbeSeen::Challenge => {
                tracing::debug!(
                    port,
                    waited_ms = started.elapsed().as_millis() as u64,
                    "gateway ready"
                );
                return Ok(());
            }
            ProbeSeen::Refused => StartObservation {
                port_open: false,
                startupz: None,
            },
            ProbeSeen::OpenNoChallenge => StartObservation {
                port_open: true,
                startupz: probe_startupz(host, port, probe_ms).await,
            },
        };
        if last != Some(observation) {
            last = Some(observation);
            observe(observation);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        tokio::time::sleep(Duration::from_millis(interval).min(left)).await;
        interval = interval.saturating_mul(2).min(max_interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_bracket_ipv6_and_keep_the_path() {
        assert_eq!(websocket_url("127.0.0.1", 5, "/"), "ws://127.0.0.1:5/");
        assert_eq!(websocket_url("::1", 5, "ws"), "ws://[::1]:5/ws");
    }
}
