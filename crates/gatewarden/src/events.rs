//! What subscribers of a supervisor hear: the published events of BEHAVIOUR.md.

use actix::Message;
use gatewarden_core::liveness::{LivenessClass, RecoveryPhase};
use gatewarden_core::machine::Status;
use serde::Serialize;
use serde_json::Value;

/// One published event (status, raw message, notification, process exit, error, channel status,
/// chat message, gateway ready).
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
    },
}
