//! The WebSocket connection to the gateway: one actor, one socket (C1, C2, A1–A3, M1–M6, H3, H4, T3).
//!
//! # What it does
//!
//! [`ConnectionActor`] owns at most one socket at a time. [`Open`] runs the handshake
//! (`handshake`) as a cancellable future; only a socket that reached `hello-ok` becomes the
//! actor's open link. The open link is read and written by one future on the actor's context
//! (up to `read_batch` frames per wake-up; writes go through an outbox and never wait, so a slow
//! socket never blocks message handling). [`Call`] is the RPC hot path: the supervisor forwards
//! its caller's reply channel, and the answer goes straight back to that caller.
//!
//! # Reports (to the supervisor's `Recipient<ConnectionReport>`)
//!
//! - Every [`Open`] ends in exactly one of [`ConnectionReport::HandshakeCompleted`],
//!   [`ConnectionReport::HandshakeFailed`] or [`ConnectionReport::StartupWindow`], unless a
//!   [`Close`] or a newer [`Open`] cancels it first (the supervisor asked for that, so nothing is
//!   reported for the abandoned attempt).
//! - Every completed handshake is followed by exactly one [`ConnectionReport::Closed`], whoever
//!   closed: the gateway (its close code), the network (1006), a protocol error (1002), the
//!   supervisor ([`Close`] or a new [`Open`]: no code).
//! - Every RPC is answered exactly once (M1). For M6 a failed call is reported at once as
//!   [`ConnectionReport::RpcFinished`]; successes are counted and reported as
//!   [`ConnectionReport::RpcsSucceeded`] together with the proof-of-life report below (so at high
//!   rates the supervisor gets one message per interval, not one per call). Reports keep the
//!   order of the answers: pending successes are reported before any later failure.
//! - Inbound traffic is reported as [`ConnectionReport::ProofOfLife`] (H3), at most one report per
//!   `proof_of_life_interval_ms` plus one trailing report, so a flood of frames does not flood the
//!   supervisor while the last frame is never hidden from it.
//!
//! # Timers
//!
//! All pending RPCs share one `PendingRpcs` table and one timer, armed for the earliest
//! deadline. The timer is moved earlier when an earlier deadline appears and is otherwise left
//! alone: when it fires it expires what is due and re-arms for the next deadline.

mod frames;
mod handshake;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use actix::prelude::*;
use awc::error::WsProtocolError;
use awc::ws::{Frame, Message as WsMessage};
use bytes::Bytes;
use gatewarden_core::config::ConnectConfig;
use gatewarden_core::error::StartFailure;
use gatewarden_core::frame::{
    decode_inbound_for, decode_success_reply, write_request, ClientInfo, Dispatch, HelloOk,
    Inbound, SUPERVISOR_SCOPES,
};
use gatewarden_core::health::RpcFailureKind;
use gatewarden_core::machine::{Handshake, ReadySource};
use gatewarden_core::rpc::{PendingRpcs, RequestId, RequestIdHashing, RpcError};
use serde_json::Value;
use tokio::sync::oneshot;

use self::frames::{FrameAssembler, Received};
pub use self::handshake::{
    await_readiness, await_readiness_observed, probe_gateway, probe_startupz,
};
use self::handshake::{HandshakeOutcome, HandshakeRequest};
use crate::events::GatewayEvent;
use crate::identity::{self, DeviceIdentity};
use crate::launch::Secret;
use crate::reports::ReportTo;

/// The gateway's post-handshake `maxPayload` (25 MiB, OPENCLAW.md §3): larger inbound messages
/// are dropped. The supervisor takes its value from `connect.max_frame_bytes`.
pub const DEFAULT_MAX_FRAME_BYTES: usize = gatewarden_core::config::DEFAULT_MAX_FRAME_BYTES;

/// Default of [`ConnectionConfig::proof_of_life_interval_ms`].
pub const DEFAULT_PROOF_OF_LIFE_INTERVAL_MS: u64 = 100;

/// Default of [`ConnectionConfig::read_batch`] (the core's `rpc.read_batch`).
pub const DEFAULT_READ_BATCH: std::num::NonZeroUsize = gatewarden_core::config::DEFAULT_READ_BATCH;

/// Close code reported when the TCP connection went away without a close frame.
pub const CLOSE_ABNORMAL: u16 = 1006;

/// Close code reported when the gateway broke the WebSocket protocol and we dropped the socket.
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;

/// The payload of our WebSocket pings (H1); the gateway echoes it in the pong.
const PING_PAYLOAD: &[u8] = b"gatewarden";

/// Where the shared token comes from. It is read at every connect (A3), so a rotated token in
/// the environment is picked up by the next reconnect, and it is never logged.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TokenSource {
    /// No token: connect without `auth`.
    #[default]
    None,
    /// A configured token.
    Value(Secret),
    /// The value of this environment variable at connect time (unset or empty: no token).
    Env(String),
}

impl TokenSource {
    /// The token now, if there is one.
    pub fn read(&self) -> Option<Secret> {
        match self {
            TokenSource::None => None,
            TokenSource::Value(secret) => Some(secret.clone()),
            TokenSource::Env(name) => std::env::var(name)
                .ok()
                .filter(|value| !value.is_empty())
                .map(Secret::new),
        }
    }
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// The gateway port.
    pub port: u16,
    /// The gateway host (loopback by default).
    pub host: String,
    /// The WebSocket path (the gateway serves its control socket on any path; `/` is documented).
    pub path: String,
    /// Timeouts and the protocol range (C1, C2).
    pub connect: ConnectConfig,
    /// The shared token (A3).
    pub token: TokenSource,
    /// The device identity file (A1); `None` connects without `device`.
    pub identity_path: Option<PathBuf>,
    /// `client.version`.
    pub client_version: String,
    /// `client.platform` (also signed, lowercased, in the v3 payload).
    pub platform: String,
    /// The scopes asked for (signed in this order).
    pub scopes: Vec<String>,
    /// Inbound messages larger than this are dropped with a logged error.
    pub max_frame_bytes: usize,
    /// H3: at most one proof-of-life report per this many ms (plus one trailing report).
    pub proof_of_life_interval_ms: u64,
    /// At most this many inbound frames are handled per wake-up of the actor before it yields
    /// to its other work (its mailbox, timers) and to the callers its replies woke, whose next
    /// requests then go out while the gateway is still busy with the rest: a batch as large as
    /// the calls in flight makes the two processes take turns instead of working in parallel
    /// (see `rpc.read_batch` in the core config).
    pub read_batch: std::num::NonZeroUsize,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            port: 18789,
            host: "127.0.0.1".to_string(),
            path: "/".to_string(),
            connect: ConnectConfig::default(),
            token: TokenSource::None,
            identity_path: None,
            client_version: env!("CARGO_PKG_VERSION").to_string(),
            platform: std::env::consts::OS.to_string(),
            scopes: SUPERVISOR_SCOPES
                .iter()
                .map(|scope| scope.to_string())
                .collect(),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            proof_of_life_interval_ms: DEFAULT_PROOF_OF_LIFE_INTERVAL_MS,
            read_batch: DEFAULT_READ_BATCH,
        }
    }
}

/// Why the supervisor closes the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// T3/T5: a stop; pending RPCs fail with "Gateway stopped".
    Stopped,
    /// The connection is considered dead (heartbeat, restart); pending RPCs fail with
    /// "Gateway not connected".
    Lost,
    /// D5: the external gateway stopped answering; pending RPCs fail with
    /// [`RpcError::ExternalUnavailable`].
    ExternalUnavailable,
}

/// C1: connect and handshake; the outcome is reported with this epoch. An open or opening socket
/// is dropped first.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Open {
    /// The lifecycle epoch the connection belongs to (E1).
    pub epoch: u64,
}

/// T3: drop the socket at once (no close handshake) and fail every pending RPC.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Close {
    /// Why; decides the error of pending RPCs.
    pub reason: CloseReason,
}

/// Stop the actor for good: the socket is dropped and every pending RPC answered
/// [`RpcError::Stopped`]; calls sent after it are answered `Stopped` too (its mailbox is
/// closed). The supervisor sends it when it stops, so an [`crate::client::RpcClient`]'s address
/// never keeps the actor running.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Retire;

/// H1: send a WebSocket ping if the socket is open.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Ping;

/// H4: is a handshaken socket open?
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "bool")]
pub struct IsOpen;

/// M1: one request; answered exactly once, through the reply of this message.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Value, RpcError>")]
pub struct Rpc {
    /// The method.
    pub method: String,
    /// The params (omitted from the frame when `None`).
    pub params: Option<Value>,
    /// Time limit.
    pub timeout_ms: u64,
}

/// D4/D6/G2: the machine's core probe (`params` `{}`); answered like [`Rpc`], but not counted
/// as a user RPC (M6): the machine judges it from its own result.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Value, RpcError>")]
pub struct Probe {
    /// The method (`system-presence` by default).
    pub method: String,
    /// Time limit.
    pub timeout_ms: u64,
}

/// M1: one request whose answer goes to `reply` (exactly once). This is [`Rpc`] for a caller
/// that already holds a reply channel, e.g. the supervisor answering its own caller: the answer
/// then travels straight from this actor to the caller, without a second mailbox round trip.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Call {
    /// The method.
    pub method: String,
    /// The params (omitted from the frame when `None`).
    pub params: Option<Value>,
    /// Time limit.
    pub timeout_ms: u64,
    /// Where the answer goes. A caller that gave up waiting simply drops its receiver.
    pub reply: oneshot::Sender<Result<Value, RpcError>>,
}

/// The `hello-ok` of the open socket, if any.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Option<HelloOk>")]
pub struct GetHandshake;

/// What the connection tells the supervisor.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub enum ConnectionReport {
    /// C1: `hello-ok` arrived; the socket is open.
    HandshakeCompleted {
        /// The epoch of the [`Open`].
        epoch: u64,
        /// What the lifecycle machine needs (C2: the chosen protocol).
        handshake: Handshake,
        /// The whole decoded reply.
        hello: HelloOk,
    },
    /// C1: the handshake failed.
    HandshakeFailed {
        /// The epoch of the [`Open`].
        epoch: u64,
        /// Why.
        failure: StartFailure,
    },
    /// W1 (beyond): the gateway answered `connect` with its startup window; retry later.
    StartupWindow {
        /// The epoch of the [`Open`].
        epoch: u64,
        /// The gateway's `retryAfterMs`.
        retry_after_ms: Option<u64>,
    },
    /// F7: the gateway answered `connect` with its in-place restart window; retry later.
    RestartWindow {
        /// The epoch of the [`Open`].
        epoch: u64,
        /// The gateway's `retryAfterMs`.
        retry_after_ms: Option<u64>,
    },
    /// H3: frames or pongs arrived.
    ProofOfLife {
        /// The epoch of the connection.
        epoch: u64,
    },
    /// The open socket closed (exactly once per completed handshake).
    Closed {
        /// The epoch of the connection.
        epoch: u64,
        /// The gateway's close code (1005 for a close frame without one), 1006 when the TCP
        /// connection dropped, 1002 after a protocol error, `None` when the supervisor closed.
        code: Option<u16>,
    },
    /// P4: the gateway announced a shutdown (with `restart_expected_ms` it restarts in place).
    Shutdown {
        /// The epoch of the connection.
        epoch: u64,
        /// `restartExpectedMs`.
        restart_expected_ms: Option<u64>,
    },
    /// G1/G2: a ready event, or the first `health` event of the connection.
    ReadySignal {
        /// The epoch of the connection.
        epoch: u64,
        /// Which signal.
        source: ReadySource,
    },
    /// M3–M5: something for subscribers.
    Published(GatewayEvent),
    /// M6: an RPC failed (reported at once, after any successes answered before it).
    RpcFinished {
        /// The method.
        method: String,
        /// The failure kind (always `Err`; the `Result` keeps the M6 shape of one outcome).
        outcome: Result<(), RpcFailureKind>,
    },
    /// M6: this many RPCs succeeded since the last report (coalesced with proof of life, so the
    /// newest success reaches the supervisor within `proof_of_life_interval_ms`).
    RpcsSucceeded {
        /// How many.
        count: u64,
    },
}

/// One frame waiting to be written; `rpc_id` names the request it carries, so a failed write
/// fails that request with `SendFailed`.
struct Outbound {
    message: WsMessage,
    rpc_id: Option<RequestId>,
}

/// Both directions of an open socket, polled on the actor's own context.
///
/// Reading: every frame is handled by the actor in arrival order, at most `batch` per wake-up;
/// after that it yields (and wakes itself), so a flood of frames cannot starve the mailbox or the
/// timers, and so the callers its replies woke get to run: their next requests go out while the
/// gateway still works through the rest. A batch as large as the calls in flight would handle
/// every reply before any caller runs, and the two processes would take turns instead of working
/// in parallel (docs/PERFORMANCE.md, fifth pass, measures it).
///
/// Writing: handlers queue frames in the link's outbox; this future encodes them into the
/// socket's buffer and flushes without ever waiting, so a slow socket never blocks message
/// handling (the outbox grows instead). The actor's context polls its futures right after its
/// mailbox, so all the calls of one wake-up go out with one flush, and there is no second task
/// or channel between a call and its socket.
struct SocketIo {
    framed: handshake::WsFramed,
    connection: u64,
    batch: usize,
}

impl SocketIo {
    /// Write what the outbox holds and flush. `Err` is the transport's error text.
    fn pump_writes(
        &mut self,
        link: &mut OpenLink,
        task: &mut std::task::Context<'_>,
    ) -> Result<(), String> {
        use std::task::Poll;
        let mut framed = std::pin::Pin::new(&mut self.framed);
        loop {
            while framed.is_write_ready() {
                let Some(outbound) = link.outbox.pop_front() else {
                    break;
                };
                framed
                    .as_mut()
                    .write(outbound.message)
                    .map_err(|error| error.to_string())?;
                link.unflushed.extend(outbound.rpc_id);
            }
            if framed.is_write_buf_empty() {
                link.unflushed.clear();
                return Ok(());
            }
            match framed.as_mut().flush::<WsMessage>(task) {
                Poll::Ready(Ok(())) => {
                    link.unflushed.clear();
                    if link.outbox.is_empty() {
                        return Ok(());
                    }
                }
                Poll::Ready(Err(error)) => return Err(error.to_string()),
                // The socket is full: woken when it drains; the outbox keeps the rest.
                Poll::Pending => return Ok(()),
            }
        }
    }

    /// Write, and on failure fail the requests of the unflushed batch and drop the socket.
    /// `false` when the socket is gone.
    fn write_or_drop(
        &mut self,
        actor: &mut ConnectionActor,
        ctx: &mut Context<ConnectionActor>,
        task: &mut std::task::Context<'_>,
    ) -> bool {
        let result = match &mut actor.link {
            Link::Open(link) if link.connection == self.connection => {
                if !link
                    .io_waker
                    .as_ref()
                    .is_some_and(|waker| waker.will_wake(task.waker()))
                {
                    link.io_waker = Some(task.waker().clone());
                }
                self.pump_writes(link, task)
            }
            _ => return false,
        };
        match result {
            Ok(()) => true,
            Err(reason) => {
                actor.write_failed(reason, ctx);
                false
            }
        }
    }
}

impl ActorFuture<ConnectionActor> for SocketIo {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        actor: &mut ConnectionActor,
        ctx: &mut Context<ConnectionActor>,
        task: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        use futures_util::Stream as _;
        use std::task::Poll;
        let this = self.get_mut();
        // The mailbox batch before this poll is over (see `ConnectionActor::call_now_ms`).
        actor.call_clock_ms = None;
        if !this.write_or_drop(actor, ctx, task) {
            return Poll::Ready(());
        }
        let mut exhausted = true;
        let mut received = false;
        for _ in 0..this.batch {
            match std::pin::Pin::new(&mut this.framed).poll_next(task) {
                Poll::Ready(Some(frame)) => {
                    received = true;
                    actor.on_frame(this.connection, Some(frame), ctx)
                }
                Poll::Ready(None) => {
                    actor.on_frame(this.connection, None, ctx);
                    return Poll::Ready(());
                }
                Poll::Pending => {
                    exhausted = false;
                    break;
                }
            }
            if actor
                .open_link()
                .is_none_or(|link| link.connection != this.connection)
            {
                // The frame closed the socket (or the actor dropped it).
                return Poll::Ready(());
            }
            // The actor asked to wait for a future of its own; the context polls us again
            // once that is done.
            if ctx.waiting() {
                exhausted = false;
                break;
            }
        }
        // H3, once per batch and after its frames were handled: the successes of the replies
        // are then part of this report (or of the trailing one), so the newest success is never
        // left unreported.
        if received {
            actor.note_alive(ctx);
        }
        // Replies just handled may have queued frames (pongs); the callers' next requests come
        // through the mailbox, which the context polls before us.
        if !this.write_or_drop(actor, ctx, task) {
            return Poll::Ready(());
        }
        if exhausted {
            task.waker().wake_by_ref();
        }
        Poll::Pending
    }
}

/// Who waits for an answer, and whether it counts for M6.
#[derive(Debug)]
enum Waiter {
    /// A user's call: its outcome is reported to the supervisor (M6).
    Caller(oneshot::Sender<Result<Value, RpcError>>),
    /// The machine's core probe (D4, D6, G2): judged by the machine through its own result, so
    /// it is not also counted as a user RPC (a ready probe's success must not reset the count of
    /// a user's failures, nor its time-out count as one).
    Probe(oneshot::Sender<Result<Value, RpcError>>),
}

/// The handshaken socket.
struct OpenLink {
    epoch: u64,
    /// Distinguishes this socket's I/O future from an older socket's.
    connection: u64,
    /// The [`SocketIo`] future that owns the socket.
    io: SpawnHandle,
    /// Frames queued for the socket and not yet handed to it.
    outbox: std::collections::VecDeque<Outbound>,
    /// Requests handed to the socket since its last completed flush: a failed write fails
    /// these with `SendFailed`.
    unflushed: Vec<RequestId>,
    /// Wakes the I/O future when a frame is queued from outside its poll.
    io_waker: Option<std::task::Waker>,
    assembler: FrameAssembler,
    hello: HelloOk,
    health_seen: bool,
    last_seq: Option<u64>,
}

enum Link {
    Idle,
    Handshaking { attempt: u64, handle: SpawnHandle },
    Open(Box<OpenLink>),
}

/// The connection actor. Create with [`ConnectionActor::new`] and start it.
pub struct ConnectionActor {
    config: ConnectionConfig,
    reports: ReportTo<ConnectionReport>,
    /// Origin of the monotonic milliseconds of the RPC deadlines.
    clock: Instant,
    identity: Option<DeviceIdentity>,
    /// A1: the identity file is being read (or created) on the blocking pool; its result comes
    /// back as [`IdentityLoaded`]. At most one read at a time: a read stuck on a hung disk is
    /// not joined by another at every connect.
    identity_loading: bool,
    /// Handshakes waiting (bounded, [`IDENTITY_WAIT`]) for the identity read in flight.
    identity_waiters: Vec<oneshot::Sender<Option<DeviceIdentity>>>,
    link: Link,
    next_attempt: u64,
    next_connection: u64,
    pending: PendingRpcs<Waiter, RequestId, RequestIdHashing>,
    /// The one RPC timer and the deadline it is armed for.
    rpc_timer: Option<(u64, SpawnHandle)>,
    last_life_report: Option<Instant>,
    life_timer: Option<SpawnHandle>,
    /// M6: successes answered but not yet reported (see [`ConnectionReport::RpcsSucceeded`]).
    unreported_successes: u64,
    /// The clock as read for the calls of the current mailbox batch (see [`Self::call_now_ms`]).
    call_clock_ms: Option<u64>,
    /// Request frames are written here and split off, so many frames share one allocation.
    frames: bytes::BytesMut,
}

/// How much room [`ConnectionActor::frames`] is given when it runs low: enough for hundreds of
/// ordinary request frames (a buffer size, not a behaviour: frames of any size are written).
const FRAME_BUFFER_BYTES: usize = 64 * 1024;
/// Below this much room left, the frame buffer is refilled before a request is written.
const FRAME_BUFFER_LOW: usize = 1024;

impl ConnectionActor {
    /// A connection actor that reports to `reports` (keeping it alive).
    pub fn new(config: ConnectionConfig, reports: Recipient<ConnectionReport>) -> Self {
        ConnectionActor::reporting_to(config, reports.into())
    }

    /// [`ConnectionActor::new`] with a destination that may be weak (the supervisor's own child:
    /// see `crate::reports`).
    pub(crate) fn reporting_to(
        config: ConnectionConfig,
        reports: ReportTo<ConnectionReport>,
    ) -> Self {
        ConnectionActor {
            config,
            reports,
            clock: Instant::now(),
            identity: None,
            identity_loading: false,
            identity_waiters: Vec::new(),
            link: Link::Idle,
            next_attempt: 0,
            next_connection: 0,
            pending: PendingRpcs::empty(),
            rpc_timer: None,
            last_life_report: None,
            life_timer: None,
            unreported_successes: 0,
            call_clock_ms: None,
            frames: bytes::BytesMut::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.clock.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The clock for the deadlines of calls: read once per batch of calls taken from the
    /// mailbox. The socket's I/O future, which the context polls right after every mailbox
    /// batch, forgets it (as do a socket opening or closing), so a deadline is never counted
    /// from a time older than the batch its call arrived in.
    fn call_now_ms(&mut self) -> u64 {
        match self.call_clock_ms {
            Some(now) => now,
            None => {
                let now = self.now_ms();
                self.call_clock_ms = Some(now);
                now
            }
        }
    }

    /// M1: the request frame of one call, split off the shared frame buffer.
    fn request_frame(
        &mut self,
        id: RequestId,
        method: &str,
        params: Option<&Value>,
    ) -> Result<bytestring::ByteString, String> {
        use bytes::BufMut as _;
        if self.frames.capacity() - self.frames.len() < FRAME_BUFFER_LOW {
            // Takes back the old allocation when every frame cut from it is gone.
            self.frames.reserve(FRAME_BUFFER_BYTES);
        }
        let written = write_request(
            &mut (&mut self.frames).writer(),
            id.encode(&mut [0; RequestId::LEN]),
            method,
            params,
        );
        let frame = self.frames.split().freeze();
        written.map_err(|error| format!("encoding the request: {error}"))?;
        bytestring::ByteString::try_from(frame)
            .map_err(|_| "encoding the request: not UTF-8".to_string())
    }

    fn report(&self, report: ConnectionReport) {
        self.reports.do_send(report);
    }

    fn open_link(&self) -> Option<&OpenLink> {
        match &self.link {
            Link::Open(link) => Some(link),
            _ => None,
        }
    }

    /// A1: the identity for the next connect. Loaded once; until then the file is read (or
    /// created) on the blocking pool, never on this actor's thread (which the supervisor may
    /// share): a slow or hung disk must not stall heartbeats, RPC answers or status (issue 23).
    /// The handshake waits for the read at most [`IDENTITY_WAIT`]; a failed or late read means
    /// connecting without `device`, and a failed one is tried again at the next connect.
    fn identity_for_connect(
        &mut self,
        ctx: &mut Context<Self>,
    ) -> Option<oneshot::Receiver<Option<DeviceIdentity>>> {
        if self.identity.is_some() {
            return None;
        }
        let path = self.config.identity_path.clone()?;
        if !self.identity_loading {
            self.identity_loading = true;
            let me = ctx.address();
            actix_rt::spawn(async move {
                let loaded = tokio::task::spawn_blocking(move || {
                    identity::load_or_create(&path, handshake::unix_ms())
                        .map_err(|error| error.to_string())
                })
                .await
                .unwrap_or_else(|error| Err(format!("the identity read panicked: {error}")));
                me.do_send(IdentityLoaded(loaded));
            });
        }
        let (sender, receiver) = oneshot::channel();
        // Handshakes cancelled meanwhile no longer wait.
        self.identity_waiters.retain(|waiter| !waiter.is_closed());
        self.identity_waiters.push(sender);
        Some(receiver)
    }

    fn start_handshake(&mut self, epoch: u64, ctx: &mut Context<Self>) {
        let mut request = HandshakeRequest {
            host: self.config.host.clone(),
            port: self.config.port,
            path: self.config.path.clone(),
            max_frame_bytes: self.config.max_frame_bytes,
            connect: self.config.connect.clone(),
            token: self.config.token.read(),
            identity: self.identity.clone(),
            client: ClientInfo::supervisor(&self.config.client_version, &self.config.platform),
            scopes: self.config.scopes.clone(),
        };
        let identity_wait = self.identity_for_connect(ctx);
        self.next_attempt += 1;
        let attempt = self.next_attempt;
        tracing::debug!(epoch, port = self.config.port, "connecting to the gateway");
        let attempt_future = async move {
            if let Some(receiver) = identity_wait {
                match tokio::time::timeout(IDENTITY_WAIT, receiver).await {
                    Ok(Ok(identity)) => request.identity = identity,
                    Ok(Err(_)) => {}
                    Err(_) => tracing::warn!(
                        waited_ms = IDENTITY_WAIT.as_millis() as u64,
                        "the device identity file was not read in time; connecting without \
                         device (the read goes on and the next connect uses it)"
                    ),
                }
            }
            handshake::handshake(request).await
        };
        let handle = ctx.spawn(
            attempt_future
                .into_actor(self)
                .map(move |outcome, actor, ctx| {
                    actor.handshake_finished(epoch, attempt, outcome, ctx)
                }),
        );
        self.link = Link::Handshaking { attempt, handle };
    }

    fn handshake_finished(
        &mut self,
        epoch: u64,
        attempt: u64,
        outcome: HandshakeOutcome,
        ctx: &mut Context<Self>,
    ) {
        // A cancelled attempt never gets here; the check guards against a stale one anyway.
        if !matches!(self.link, Link::Handshaking { attempt: current, .. } if current == attempt) {
            return;
        }
        self.link = Link::Idle;
        match outcome {
            HandshakeOutcome::Completed(established) => {
                let handshake::Established { socket, hello } = *established;
                tracing::info!(
                    epoch,
                    protocol = hello.protocol,
                    server_version = hello.server_version.as_deref().unwrap_or("unknown"),
                    scopes = ?hello.scopes,
                    "connected to the gateway"
                );
                let handshake = Handshake {
                    protocol: hello.protocol,
                    server_version: hello.server_version.clone(),
                    boot_id: hello.boot_id.clone(),
                    has_snapshot: hello.has_snapshot,
                    tick_interval_ms: hello.tick_interval_ms,
                };
                self.install(epoch, socket, hello.clone(), ctx);
                self.report(ConnectionReport::HandshakeCompleted {
                    epoch,
                    handshake,
                    hello,
                });
            }
            HandshakeOutcome::StartupWindow { retry_after_ms } => {
                tracing::info!(epoch, ?retry_after_ms, "gateway is still starting");
                self.report(ConnectionReport::StartupWindow {
                    epoch,
                    retry_after_ms,
                });
            }
            HandshakeOutcome::RestartWindow { retry_after_ms } => {
                tracing::info!(epoch, ?retry_after_ms, "gateway is restarting in place");
                self.report(ConnectionReport::RestartWindow {
                    epoch,
                    retry_after_ms,
                });
            }
            HandshakeOutcome::Failed(failure) => {
                // The machine logs what the failure means (a retried attempt or the failed start).
                tracing::debug!(epoch, %failure, "gateway handshake failed");
                self.report(ConnectionReport::HandshakeFailed { epoch, failure });
            }
        }
    }

    /// Make a handshaken socket the open link, its I/O on the actor's context.
    fn install(
        &mut self,
        epoch: u64,
        socket: handshake::Socket,
        hello: HelloOk,
        ctx: &mut Context<Self>,
    ) {
        self.next_connection += 1;
        let connection = self.next_connection;
        let handshake::Socket { framed, assembler } = socket;
        let io = ctx.spawn(SocketIo {
            framed,
            connection,
            batch: self.config.read_batch.get(),
        });
        self.last_life_report = None;
        self.call_clock_ms = None;
        self.link = Link::Open(Box::new(OpenLink {
            epoch,
            connection,
            io,
            outbox: std::collections::VecDeque::new(),
            unflushed: Vec::new(),
            io_waker: None,
            assembler,
            hello,
            health_seen: false,
            last_seq: None,
        }));
    }

    /// Drop whatever socket there is. An open one reports `Closed { code }` and fails every
    /// pending RPC with `error`; a handshake in progress is cancelled silently.
    fn drop_link(&mut self, code: Option<u16>, error: RpcError, ctx: &mut Context<Self>) {
        self.call_clock_ms = None;
        match std::mem::replace(&mut self.link, Link::Idle) {
            Link::Idle => {}
            Link::Handshaking { handle, .. } => {
                ctx.cancel_future(handle);
            }
            Link::Open(link) => {
                // T3: no close handshake: cancel the I/O future, which drops the socket and
                // with it the TCP connection (queued frames are dropped with the link).
                ctx.cancel_future(link.io);
                if let Some(handle) = self.life_timer.take() {
                    ctx.cancel_future(handle);
                }
                self.fail_all_pending(&error);
                self.disarm_rpc_timer_if_idle(ctx);
                self.report_successes();
                self.report(ConnectionReport::Closed {
                    epoch: link.epoch,
                    code,
                });
            }
        }
    }

    fn fail_all_pending(&mut self, error: &RpcError) {
        for (_id, method, waiter) in self.pending.drain_all() {
            self.finish_rpc(method, waiter, Err(error.clone()));
        }
    }

    /// Answer one call (M1: each exactly once) and account for it (M6): a success is counted
    /// for the next proof-of-life report (every reply is an inbound frame, so one is always
    /// due), a failure is reported now, after the successes that came before it.
    fn finish_rpc(&mut self, method: String, waiter: Waiter, outcome: Result<Value, RpcError>) {
        let failure = outcome.as_ref().err().map(RpcError::failure_kind);
        // The caller may have given up waiting; the answer is then simply dropped.
        let sender = match waiter {
            Waiter::Caller(sender) => sender,
            Waiter::Probe(sender) => {
                let _ = sender.send(outcome);
                return;
            }
        };
        let _ = sender.send(outcome);
        match failure {
            None => self.unreported_successes += 1,
            Some(kind) => {
                self.report_successes();
                self.report(ConnectionReport::RpcFinished {
                    method,
                    outcome: Err(kind),
                });
            }
        }
    }

    fn report_successes(&mut self) {
        let count = std::mem::take(&mut self.unreported_successes);
        if count > 0 {
            self.report(ConnectionReport::RpcsSucceeded { count });
        }
    }

    /// Keep the single RPC timer at or before the earliest deadline.
    fn arm_rpc_timer(&mut self, ctx: &mut Context<Self>) {
        let Some(deadline) = self.pending.next_deadline() else {
            return;
        };
        if let Some((armed, handle)) = self.rpc_timer {
            if armed <= deadline {
                return;
            }
            ctx.cancel_future(handle);
        }
        let delay = Duration::from_millis(deadline.saturating_sub(self.now_ms()));
        let handle = ctx.run_later(delay, |actor, ctx| {
            actor.rpc_timer = None;
            let now = actor.now_ms();
            for (_id, method, waiter) in actor.pending.expire(now) {
                let error = RpcError::Timeout {
                    method: method.clone(),
                };
                actor.finish_rpc(method, waiter, Err(error));
            }
            actor.arm_rpc_timer(ctx);
        });
        self.rpc_timer = Some((deadline, handle));
    }

    /// H3: report proof of life now, or once the coalescing interval has passed.
    fn note_alive(&mut self, ctx: &mut Context<Self>) {
        let interval = Duration::from_millis(self.config.proof_of_life_interval_ms);
        let since_last = self.last_life_report.map(|at| at.elapsed());
        match since_last {
            Some(elapsed) if elapsed < interval => {
                // A trailing report, so the supervisor never misses the newest traffic (a pong
                // that arrives right after a report still counts for the ping it answers).
                if self.life_timer.is_none() {
                    let handle = ctx.run_later(interval - elapsed, |actor, _ctx| {
                        actor.life_timer = None;
                        actor.report_alive();
                    });
                    self.life_timer = Some(handle);
                }
            }
            _ => self.report_alive(),
        }
    }

    fn report_alive(&mut self) {
        self.report_successes();
        if let Some(epoch) = self.open_link().map(|link| link.epoch) {
            self.last_life_report = Some(Instant::now());
            self.report(ConnectionReport::ProofOfLife { epoch });
        }
    }

    fn send_frame(&mut self, message: WsMessage) {
        self.queue_frame(Outbound {
            message,
            rpc_id: None,
        });
    }

    /// Queue a frame for the open socket (dropped when there is none). The I/O future writes
    /// it: within this poll of the context when queued by a message handler, else once woken.
    fn queue_frame(&mut self, outbound: Outbound) {
        if let Link::Open(link) = &mut self.link {
            if link.outbox.is_empty() {
                if let Some(waker) = &link.io_waker {
                    waker.wake_by_ref();
                }
            }
            link.outbox.push_back(outbound);
        }
    }

    /// Writing to the socket failed: fail the requests of the failed batch, drop the socket.
    fn write_failed(&mut self, reason: String, ctx: &mut Context<Self>) {
        tracing::warn!(reason = %reason, "writing to the gateway socket failed");
        let unflushed = match &mut self.link {
            Link::Open(link) => std::mem::take(&mut link.unflushed),
            _ => Vec::new(),
        };
        for id in unflushed {
            if let Some((method, waiter)) = self.pending.resolve(&id) {
                let error = RpcError::SendFailed {
                    reason: reason.clone(),
                };
                self.finish_rpc(method, waiter, Err(error));
            }
        }
        // A socket that cannot be written is gone.
        self.drop_link(Some(CLOSE_ABNORMAL), RpcError::NotConnected, ctx);
    }

    fn handle_text(&mut self, text: &str, ctx: &mut Context<Self>) {
        // M2, the commonest frame first: a successful reply in the gateway's own form, read
        // without building the frame around its payload. Not ours (late, or unknown): the full
        // decode below decides what it is.
        if let Some((id, payload)) = decode_success_reply(text) {
            let resolved = RequestId::parse(id).and_then(|id| self.pending.resolve(&id));
            if let Some((method, waiter)) = resolved {
                self.finish_rpc(method, waiter, Ok(payload));
                self.disarm_rpc_timer_if_idle(ctx);
                return;
            }
        }
        let pending = &self.pending;
        let inbound = decode_inbound_for(text, |id| {
            RequestId::parse(id).is_some_and(|id| pending.contains(&id))
        });
        match inbound {
            Inbound::Response { id, outcome } | Inbound::LegacyResponse { id, outcome } => {
                let resolved = RequestId::parse(&id).and_then(|id| self.pending.resolve(&id));
                if let Some((method, waiter)) = resolved {
                    self.finish_rpc(method, waiter, outcome);
                }
            }
            Inbound::NonObject => {
                tracing::debug!(
                    bytes = text.len(),
                    "dropped a frame that is not a JSON object"
                )
            }
            Inbound::Unparseable => {
                tracing::debug!(bytes = text.len(), "dropped a frame that is not JSON")
            }
            other => {
                if let Inbound::Event {
                    seq: Some(seq),
                    event,
                    ..
                } = &other
                {
                    self.check_seq(*seq, event);
                }
                for dispatch in other.into_dispatches() {
                    self.dispatch(dispatch);
                }
            }
        }
        // A reply that removes the earliest deadline leaves the timer armed early: it then
        // fires, finds nothing due and re-arms, which is cheaper than re-arming on every reply.
        // With nothing left to wait for, the timer goes.
        self.disarm_rpc_timer_if_idle(ctx);
    }

    fn disarm_rpc_timer_if_idle(&mut self, ctx: &mut Context<Self>) {
        if self.pending.is_empty() {
            if let Some((_, handle)) = self.rpc_timer.take() {
                ctx.cancel_future(handle);
            }
        }
    }

    /// OPENCLAW.md §3: a gap in `seq` means the gateway dropped events for us (slow consumer).
    fn check_seq(&mut self, seq: u64, event: &str) {
        if let Link::Open(link) = &mut self.link {
            if let Some(last) = link.last_seq {
                if seq > last.saturating_add(1) {
                    tracing::warn!(
                        event,
                        expected = last.saturating_add(1),
                        got = seq,
                        "gateway events were lost (sequence gap)"
                    );
                }
            }
            link.last_seq = Some(seq);
        }
    }

    fn dispatch(&mut self, dispatch: Dispatch) {
        let Some(epoch) = self.open_link().map(|link| link.epoch) else {
            return;
        };
        match dispatch {
            Dispatch::Notification { method, params } => {
                self.report(ConnectionReport::Published(GatewayEvent::Notification {
                    method,
                    params,
                }))
            }
            Dispatch::ChatMessage { message } => self.report(ConnectionReport::Published(
                GatewayEvent::ChatMessage(message),
            )),
            Dispatch::ChannelStatus { payload } => self.report(ConnectionReport::Published(
                GatewayEvent::ChannelStatus(payload),
            )),
            Dispatch::Error { message } => {
                self.report(ConnectionReport::Published(GatewayEvent::Error {
                    message,
                    failure: None,
                }))
            }
            Dispatch::RawMessage(value) => {
                self.report(ConnectionReport::Published(GatewayEvent::RawMessage(value)))
            }
            // G1: the supervisor decides (it publishes gateway-ready when the state allows).
            Dispatch::GatewayReady => self.report(ConnectionReport::ReadySignal {
                epoch,
                source: ReadySource::ReadyEvent,
            }),
            Dispatch::Shutdown {
                reason,
                restart_expected_ms,
            } => {
                tracing::info!(
                    epoch,
                    reason = reason.as_deref().unwrap_or(""),
                    ?restart_expected_ms,
                    "gateway announced shutdown"
                );
                self.report(ConnectionReport::Shutdown {
                    epoch,
                    restart_expected_ms,
                });
            }
            // G2 (beyond): the first `health` event of a connection is a ready signal.
            Dispatch::Health { .. } => {
                let first = match &mut self.link {
                    Link::Open(link) => !std::mem::replace(&mut link.health_seen, true),
                    _ => false,
                };
                if first {
                    self.report(ConnectionReport::ReadySignal {
                        epoch,
                        source: ReadySource::HealthEvent,
                    });
                }
            }
        }
    }
}

impl Actor for ConnectionActor {
    type Context = Context<Self>;

    fn stopped(&mut self, ctx: &mut Self::Context) {
        self.drop_link(None, RpcError::Stopped, ctx);
        // Calls that were never sent (none while idle, but keep the invariant): answer them.
        self.fail_all_pending(&RpcError::Stopped);
    }
}

/// A1: the identity file's read (or creation) finished on the blocking pool.
#[derive(Message)]
#[rtype(result = "()")]
struct IdentityLoaded(Result<DeviceIdentity, String>);

/// How long a handshake waits for the identity file's first read: far longer than any healthy
/// disk takes (a read and, the first time, a key generation and an atomic write), short enough
/// that a hung one only delays the connect.
const IDENTITY_WAIT: Duration = Duration::from_secs(2);

impl Handler<IdentityLoaded> for ConnectionActor {
    type Result = ();

    fn handle(&mut self, message: IdentityLoaded, _ctx: &mut Self::Context) {
        self.identity_loading = false;
        let identity = match message.0 {
            Ok(identity) => {
                self.identity = Some(identity.clone());
                Some(identity)
            }
            Err(error) => {
                tracing::warn!(%error, "no device identity; connecting without device");
                None
            }
        };
        for waiter in self.identity_waiters.drain(..) {
            let _ = waiter.send(identity.clone());
        }
    }
}

impl Handler<Open> for ConnectionActor {
    type Result = ();

    fn handle(&mut self, message: Open, ctx: &mut Self::Context) {
        self.drop_link(None, RpcError::NotConnected, ctx);
        self.start_handshake(message.epoch, ctx);
    }
}

impl Handler<Close> for ConnectionActor {
    type Result = ();

    fn handle(&mut self, message: Close, ctx: &mut Self::Context) {
        let error = match message.reason {
            CloseReason::Stopped => RpcError::Stopped,
            CloseReason::Lost => RpcError::NotConnected,
            CloseReason::ExternalUnavailable => RpcError::ExternalUnavailable,
        };
        self.drop_link(None, error, ctx);
    }
}

impl Handler<Retire> for ConnectionActor {
    type Result = ();

    fn handle(&mut self, _message: Retire, ctx: &mut Self::Context) {
        // `stopped` drops the link and answers what is pending.
        ctx.stop();
    }
}

impl Handler<Ping> for ConnectionActor {
    type Result = ();

    fn handle(&mut self, _message: Ping, _ctx: &mut Self::Context) {
        self.send_frame(WsMessage::Ping(Bytes::from_static(PING_PAYLOAD)));
    }
}

impl Handler<IsOpen> for ConnectionActor {
    type Result = bool;

    fn handle(&mut self, _message: IsOpen, _ctx: &mut Self::Context) -> bool {
        self.open_link().is_some()
    }
}

impl Handler<GetHandshake> for ConnectionActor {
    type Result = Option<HelloOk>;

    fn handle(&mut self, _message: GetHandshake, _ctx: &mut Self::Context) -> Option<HelloOk> {
        self.open_link().map(|link| link.hello.clone())
    }
}

impl ConnectionActor {
    /// M1: send one request and register `waiter` for its answer (or answer it now).
    fn start_call(
        &mut self,
        method: String,
        params: Option<Value>,
        timeout_ms: u64,
        waiter: Waiter,
        ctx: &mut Context<Self>,
    ) {
        if self.open_link().is_none() {
            // M1: at once, without waiting for a socket.
            self.finish_rpc(method, waiter, Err(RpcError::NotConnected));
            return;
        }
        let id = RequestId::from_u128(uuid::Uuid::new_v4().as_u128());
        if self.pending.contains(&id) {
            // Two equal v4 UUIDs: practically impossible, but never leave a caller hanging.
            let error = RpcError::SendFailed {
                reason: "duplicate request id".to_string(),
            };
            self.finish_rpc(method, waiter, Err(error));
            return;
        }
        let frame = match self.request_frame(id, &method, params.as_ref()) {
            Ok(frame) => frame,
            Err(reason) => {
                self.finish_rpc(method, waiter, Err(RpcError::SendFailed { reason }));
                return;
            }
        };
        let deadline = self.call_now_ms().saturating_add(timeout_ms);
        // Cannot be refused: the id was checked just above.
        let _ = self.pending.insert(id, method, deadline, waiter);
        // Checked at the top that the link is open; nothing in between closes it.
        self.queue_frame(Outbound {
            message: WsMessage::Text(frame),
            rpc_id: Some(id),
        });
        self.arm_rpc_timer(ctx);
    }
}

impl Handler<Rpc> for ConnectionActor {
    type Result = ResponseFuture<Result<Value, RpcError>>;

    fn handle(&mut self, message: Rpc, ctx: &mut Self::Context) -> Self::Result {
        let (waiter, answer) = oneshot::channel();
        self.start_call(
            message.method,
            message.params,
            message.timeout_ms,
            Waiter::Caller(waiter),
            ctx,
        );
        Box::pin(async move {
            // A dropped waiter means the actor went away without answering: that is a stop.
            answer.await.unwrap_or(Err(RpcError::Stopped))
        })
    }
}

impl Handler<Probe> for ConnectionActor {
    type Result = ResponseFuture<Result<Value, RpcError>>;

    fn handle(&mut self, message: Probe, ctx: &mut Self::Context) -> Self::Result {
        let (waiter, answer) = oneshot::channel();
        self.start_call(
            message.method,
            Some(Value::Object(serde_json::Map::new())),
            message.timeout_ms,
            Waiter::Probe(waiter),
            ctx,
        );
        Box::pin(async move { answer.await.unwrap_or(Err(RpcError::Stopped)) })
    }
}

impl Handler<Call> for ConnectionActor {
    type Result = ();

    fn handle(&mut self, message: Call, ctx: &mut Self::Context) {
        self.start_call(
            message.method,
            message.params,
            message.timeout_ms,
            Waiter::Caller(message.reply),
            ctx,
        );
    }
}

impl ConnectionActor {
    /// One item of socket `connection`'s reading half; `None` marks its end.
    fn on_frame(
        &mut self,
        connection: u64,
        frame: Option<Result<Frame, WsProtocolError>>,
        ctx: &mut Context<Self>,
    ) {
        let current = self
            .open_link()
            .is_some_and(|link| link.connection == connection);
        if !current {
            return;
        }
        let frame = match frame {
            None => {
                tracing::warn!("gateway connection dropped without a close frame");
                self.drop_link(Some(CLOSE_ABNORMAL), RpcError::NotConnected, ctx);
                return;
            }
            Some(Err(WsProtocolError::Overflow)) => {
                // The codec skips the whole frame, so the socket stays usable.
                tracing::error!(
                    max_frame_bytes = self.config.max_frame_bytes,
                    "dropped an inbound frame larger than max_frame_bytes"
                );
                return;
            }
            Some(Err(error)) => {
                tracing::warn!(%error, "gateway broke the WebSocket protocol; dropping the socket");
                self.drop_link(Some(CLOSE_PROTOCOL_ERROR), RpcError::NotConnected, ctx);
                return;
            }
            Some(Ok(frame)) => frame,
        };
        let received = match &mut self.link {
            Link::Open(link) => link.assembler.accept(frame),
            _ => return,
        };
        match received {
            Received::Text(text) => self.handle_text(&text, ctx),
            Received::Ping(bytes) => self.send_frame(WsMessage::Pong(bytes)),
            Received::Close { code, reason } => {
                tracing::info!(code, reason = %reason, "gateway closed the connection");
                self.drop_link(Some(code), RpcError::NotConnected, ctx);
            }
            Received::Dropped(why) => tracing::debug!(why, "dropped an inbound message"),
            Received::Binary => tracing::debug!("dropped a binary message"),
            Received::Pong | Received::Partial => {}
        }
        // H3 is reported by the I/O future once its batch of frames is handled.
    }
}
