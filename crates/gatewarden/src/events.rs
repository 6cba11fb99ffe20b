//! What subscribers of a supervisor hear: the published events of BEHAVIOUR.md.

use actix::Message;
use gatewarden_core::error::CommandFailure;
use gatewarden_core::liveness::{LivenessClass, RecoveryPhase};
use gatewarden_core::machine::Status;
use gatewarden_core::stderr::StartupPhase;
use serde::Serialize;
use serde_json::Value;

/// One published event (status, raw message, notification, process exit, error, channel status,
/// chat message, gateway ready).
///
/// Deliberately not `#[non_exhaustive]` although it will grow: the CLI's event stream (Y1) must
/// forward every event, and its exhaustive match is what makes a new variant a compile error
/// there instead of an event silently left out. An app that matches it should keep a `_` arm.
#[derive(Debug, Clone, PartialEq, Serialize, Message)]
#[rtype(result = "()")]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum GatewayEvent {
    /// S3: the status changed.
    Status(Status),
    /// M5: a frame that is neither a reply, an event nor JSON-RPC.
    RawMessage(Value),
    /// M3/M4: a gateway event or JSON-RPC notification.
    Notification {
        /// The event name or JSON-RPC method.
        method: String,
        /// Its payload or params.
        params: Value,
    },
    /// X2: the owned process exited.
    ProcessExit {
        /// Its pid.
        pid: u32,
        /// Its exit code (128 + signal for a signal death).
        code: Option<i32>,
    },
    /// An error worth a subscriber's attention.
    Error {
        /// The message (never contains a secret).
        message: String,
        /// The typed failure, when a command failure is what went wrong (a failed start, an
        /// in-place restart that does not serve); decide by this, not by `message`.
        failure: Option<CommandFailure>,
    },
    /// M3/M4: a channel-status event.
    ChannelStatus(Value),
    /// M3/M4: a chat message.
    ChatMessage(Value),
    /// G1/G2: the gateway's subsystems are ready.
    GatewayReady,
    /// D1–D7: the liveness classification or the recovery phase changed.
    Liveness {
        /// The classification (D2).
        liveness: LivenessClass,
        /// What the recovery is doing.
        phase: RecoveryPhase,
    },
    /// D5: the attached external gateway stopped answering; only the transport reconnects.
    ExternalUnavailable,
    // F-rules (issue 22)
    /// F8: the supervisor gave up (reconnect attempts exhausted, restart intensity limit, a
    /// failure retrying cannot fix): nothing tries again until a command.
    GaveUp {
        /// Why (the status error).
        reason: String,
        /// The failure that ended it, when a start flow's failure did (not after N2's last
        /// reconnect attempt or N5's intensity limit). Decide by this, not by `reason`.
        failure: Option<CommandFailure>,
    },
    /// N3: a start reached `running`; how long each stage took.
    StartupMetric {
        /// Start requested → spawn done.
        config_prep_ms: u64,
        /// Spawn → ready.
        spawn_to_ready_ms: u64,
        /// Ready → handshake done.
        ready_to_connect_ms: u64,
        /// Start requested → running.
        total_ms: u64,
        /// The gateway's own startup trace, per phase (empty when it printed none).
        phases: Vec<StartupPhase>,
        /// The slowest phase of the trace.
        slowest: Option<StartupPhase>,
    },
    /// N4: one reconnect attempt ended.
    ReconnectMetric {
        /// Whether the attempt reached `running`.
        success: bool,
        /// Attempt number.
        attempt: u32,
        /// Maximum attempts.
        max_attempts: u32,
        /// Delay before it.
        delay_ms: u64,
        /// Why it failed.
        error: Option<String>,
        /// Attempts since the supervisor started.
        attempts_total: u64,
        /// Successes since the supervisor started.
        successes_total: u64,
    },
}
