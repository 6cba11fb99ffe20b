//! Why a start step failed: the typed reasons the recovery choice (L7) and the status (L8) read.

use serde::{Deserialize, Serialize};

/// A failed step of the start sequence (L5). `Display` gives the messages of the original, which
/// users see in `status.error`. Callers decide by variant, never by the text.
///
/// ```
/// use gatewarden_core::error::StartFailure;
///
/// let failure = StartFailure::PortHeldByOther { port: 18791, pid: Some(42), program: Some("nc".into()) };
/// assert!(!failure.is_transient());
/// assert!(matches!(failure, StartFailure::PortHeldByOther { pid: Some(42), .. }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "camelCase")]
#[non_exhaustive]
pub enum StartFailure {
    /// C1: the socket closed before the reply to `connect`.
    #[error("WebSocket closed before handshake: {reason}")]
    SocketClosedBeforeHandshake {
        /// Close code, when the gateway sent one.
        code: Option<u16>,
        /// Close reason or transport error.
        reason: String,
    },
    /// W1/C1: nothing listens on the port.
    #[error("connection refused on port {port}")]
    ConnectionRefused {
        /// The gateway port.
        port: u16,
    },
    /// W1: the owned process exited while we waited for it to become ready.
    #[error("process exited before becoming ready (code={})", display_code(*.code))]
    ExitedBeforeReady {
        /// Exit code, if it exited normally.
        code: Option<i32>,
    },
    /// W1: the gateway did not become ready within the configured time.
    #[error("gateway did not become ready within {waited_ms} ms")]
    ReadyTimeout {
        /// How long we waited.
        waited_ms: u64,
    },
    /// C1: no `connect.challenge` in time.
    #[error("Timed out waiting for connect.challenge")]
    ChallengeTimeout,
    /// C1: no reply to `connect` in time.
    #[error("Connect handshake timeout")]
    HandshakeTimeout,
    /// C1: the gateway answered `connect` with an error (bad token, protocol, device auth, ...).
    #[error("Gateway rejected connect: {message}{}", details_suffix(.details_code))]
    HandshakeRejected {
        /// Top-level error code (`INVALID_REQUEST`, ...).
        code: String,
        /// `error.details.code` (`AUTH_TOKEN_MISMATCH`, `PROTOCOL_MISMATCH`, ...).
        details_code: Option<String>,
        /// The gateway's message.
        message: String,
    },
    /// L5 step 3 (Windows): the port stayed busy.
    #[error("Port {port} still occupied")]
    PortStillOccupied {
        /// The gateway port.
        port: u16,
    },
    /// O1 (beyond): something that is not a gateway holds the port; it is never signalled.
    #[error("Port {port} is held by pid {} ({}), which is not a gateway; it was left alone", display_pid(*.pid), .program.as_deref().unwrap_or("unknown program"))]
    PortHeldByOther {
        /// The gateway port.
        port: u16,
        /// The listener's pid, when visible.
        pid: Option<u32>,
        /// The listener's program name, when visible.
        program: Option<String>,
    },
    /// O1 (beyond): a foreign gateway holds the port and the policy says fail.
    #[error("Port {port} is held by another gateway (pid {}); configured not to touch it", display_pid(*.pid))]
    ForeignGateway {
        /// The gateway port.
        port: u16,
        /// The foreign gateway's pid, when visible.
        pid: Option<u32>,
    },
    /// X1: the process could not be spawned (program missing, permission, ...).
    #[error("failed to spawn gateway: {message}")]
    SpawnFailed {
        /// What went wrong, naming the program and what was tried.
        message: String,
    },
    /// L6: the doctor repair failed.
    #[error("doctor repair failed: {failure}")]
    RepairFailed {
        /// What went wrong.
        failure: RepairFailure,
    },
    /// D5: the external gateway we reconnect to does not answer as a gateway; we never spawn
    /// our own while it may come back (reconnecting continues with backoff).
    #[error("the external gateway on port {port} does not answer; reconnecting to it only")]
    ExternalUnavailable {
        /// The gateway port.
        port: u16,
    },
    /// F1: another process holds the gateway's state lock; the line names the holder.
    #[error("another gateway process holds the gateway's state lock (stop it first): {line}")]
    LockHeld {
        /// The gateway's stderr line that says so.
        line: String,
    },
    /// F3: the runtime cannot run this gateway (found before spawning, or said by the gateway).
    #[error("the gateway cannot run on this runtime: {message}")]
    RuntimeIncompatible {
        /// What is wrong, naming the version found and the one required.
        message: String,
    },
    /// F1/F2: the config is still invalid after the doctor ran on it.
    #[error("the gateway config is still invalid after `doctor --fix` ran on it{}", line_suffix(.line))]
    ConfigStillInvalid {
        /// The gateway's stderr line that says so, if one was seen.
        line: Option<String>,
    },
    /// F6: the port accepted connections but no `connect.challenge` came within the bound.
    #[error("port {port} accepts connections but the gateway sent no connect.challenge within {waited_ms} ms")]
    NoChallenge {
        /// The gateway port.
        port: u16,
        /// How long we waited after the port opened.
        waited_ms: u64,
    },
    /// Anything else reported by the actor layer.
    #[error("{message}")]
    Other {
        /// The message.
        message: String,
    },
}

/// L6: why the doctor repair (`<gateway> doctor --fix`) failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "camelCase")]
#[non_exhaustive]
pub enum RepairFailure {
    /// The profile has no doctor, or its program could not be started.
    #[error("could not run: {message}")]
    CouldNotRun {
        /// What went wrong, naming the program.
        message: String,
    },
    /// It did not finish within `start.repair_timeout_ms`.
    #[error("timed out after {timeout_ms} ms")]
    TimedOut {
        /// The bound.
        timeout_ms: u64,
    },
    /// It exited unsuccessfully.
    #[error("exited with code {}", display_code(*.code))]
    Exited {
        /// Its exit code (128 + signal for a signal death).
        code: Option<i32>,
    },
}

/// P3: why the reload signal could not be sent to the owned gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "camelCase")]
#[non_exhaustive]
pub enum SignalFailure {
    /// The launch profile refuses the configured signal (SIGUSR1 for OpenClaw).
    #[error("the profile refuses this reload signal: {message}")]
    Refused {
        /// Why the profile refuses it.
        message: String,
    },
    /// No process was there to signal.
    #[error("no owned process to signal")]
    NoProcess,
    /// The kernel did not deliver it.
    #[error("could not deliver the signal: {message}")]
    NotDelivered {
        /// The kernel's answer.
        message: String,
    },
}

/// Why a command failed, as its caller receives it in
/// [`CommandOutcome::Failed`](crate::machine::CommandOutcome::Failed). `Display` is the text
/// `status.error` shows; decide by the variant.
///
/// ```
/// use gatewarden_core::error::{CommandFailure, StartFailure};
///
/// let failure = CommandFailure::Start {
///     failure: StartFailure::RuntimeIncompatible { message: "requires Node 24.16+".into() },
///     reason: None,
/// };
/// assert_eq!(failure.start_failure().map(StartFailure::is_transient), Some(false));
/// assert!(failure.to_string().contains("24.16+"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "camelCase")]
#[non_exhaustive]
pub enum CommandFailure {
    /// L8, R4: the start flow (of a start, a restart or a reload that became one) failed.
    #[error("{}", start_message(.failure, .reason.as_deref()))]
    Start {
        /// The failed step.
        failure: StartFailure,
        /// F4/F6: the gateway's last meaningful stderr line, or what the start saw, when that
        /// says more than the failure itself.
        reason: Option<String>,
    },
    /// F5: the gateway restarted in place but does not serve; it is being replaced.
    #[error("the gateway (pid {}) restarted in place but does not serve: {reason}", display_pid(*.pid))]
    InPlaceRestartFailed {
        /// The owned process, when known.
        pid: Option<u32>,
        /// The gateway's line that says why (or the bound that passed).
        reason: String,
    },
    /// The supervisor stopped before it answered.
    #[error("supervisor stopped")]
    SupervisorStopped,
}

impl CommandFailure {
    /// The failed start step, when a start flow failed.
    pub fn start_failure(&self) -> Option<&StartFailure> {
        match self {
            CommandFailure::Start { failure, .. } => Some(failure),
            _ => None,
        }
    }
}

/// F4: the status text of a failed start: its message and the gateway's own reason, when the
/// message does not already carry it.
fn start_message(failure: &StartFailure, reason: Option<&str>) -> String {
    let message = failure.to_string();
    match reason {
        // Only to avoid saying the same line twice in the text; nothing decides by it.
        Some(reason) if !message.contains(reason) => format!("{message}: {reason}"),
        _ => message,
    }
}

/// Why a command had nothing to do ([`CommandOutcome::Ignored`](crate::machine::CommandOutcome::Ignored)):
/// not an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "camelCase")]
#[non_exhaustive]
pub enum IgnoredReason {
    /// L1: the gateway already runs.
    #[error("already running")]
    AlreadyRunning,
    /// L1: a start flow is already in progress.
    #[error("a start is already in progress")]
    StartInProgress,
    /// T6: nothing owned to terminate.
    #[error("no owned process")]
    NoOwnedProcess,
    /// P3: connected so recently that the gateway already read the latest config.
    #[error("connected {connected_for_ms} ms ago; it already read the latest config")]
    ConnectedRecently {
        /// How long ago it connected.
        connected_for_ms: u64,
    },
    /// The command does not apply in the current state.
    #[error("not applicable in this state")]
    NotApplicable,
}

fn display_code(code: Option<i32>) -> String {
    code.map_or_else(|| "null".to_string(), |code| code.to_string())
}

fn line_suffix(line: &Option<String>) -> String {
    line.as_ref()
        .map(|line| format!(": {line}"))
        .unwrap_or_default()
}

fn display_pid(pid: Option<u32>) -> String {
    pid.map_or_else(|| "unknown".to_string(), |pid| pid.to_string())
}

fn details_suffix(details_code: &Option<String>) -> String {
    details_code
        .as_ref()
        .map(|code| format!(" ({code})"))
        .unwrap_or_default()
}

impl StartFailure {
    /// L7: the transient failures, worth another attempt.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StartFailure::SocketClosedBeforeHandshake { .. }
                | StartFailure::ConnectionRefused { .. }
                | StartFailure::ExitedBeforeReady { .. }
                | StartFailure::ChallengeTimeout
                | StartFailure::HandshakeTimeout
                | StartFailure::PortStillOccupied { .. }
                | StartFailure::ExternalUnavailable { .. }
                | StartFailure::NoChallenge { .. }
        )
    }

    /// A rejection no retry can fix (bad token, protocol mismatch, device auth): it must not
    /// turn into a restart storm.
    pub fn is_auth_rejection(&self) -> bool {
        match self {
            StartFailure::HandshakeRejected { details_code, .. } => details_code
                .as_deref()
                .is_some_and(|code| code.starts_with("AUTH_") || code.starts_with("DEVICE_")),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l7_transient_failures_are_the_listed_ones() {
        assert!(StartFailure::ChallengeTimeout.is_transient());
        assert!(StartFailure::HandshakeTimeout.is_transient());
        assert!(StartFailure::ExitedBeforeReady { code: Some(1) }.is_transient());
        assert!(StartFailure::ConnectionRefused { port: 1 }.is_transient());
        assert!(StartFailure::PortStillOccupied { port: 1 }.is_transient());
        assert!(StartFailure::SocketClosedBeforeHandshake {
            code: None,
            reason: "eof".into()
        }
        .is_transient());
        assert!(!StartFailure::SpawnFailed {
            message: "no such file".into()
        }
        .is_transient());
        assert!(!StartFailure::HandshakeRejected {
            code: "INVALID_REQUEST".into(),
            details_code: Some("AUTH_TOKEN_MISMATCH".into()),
            message: "unauthorized".into()
        }
        .is_transient());
    }

    #[test]
    fn w1_exit_before_ready_message_matches_the_original() {
        let failure = StartFailure::ExitedBeforeReady { code: Some(78) };
        assert_eq!(
            failure.to_string(),
            "process exited before becoming ready (code=78)"
        );
        let failure = StartFailure::ExitedBeforeReady { code: None };
        assert_eq!(
            failure.to_string(),
            "process exited before becoming ready (code=null)"
        );
    }

    #[test]
    fn c1_handshake_messages_match_the_original() {
        assert_eq!(
            StartFailure::ChallengeTimeout.to_string(),
            "Timed out waiting for connect.challenge"
        );
        assert_eq!(
            StartFailure::HandshakeTimeout.to_string(),
            "Connect handshake timeout"
        );
        assert_eq!(
            StartFailure::SocketClosedBeforeHandshake {
                code: Some(1008),
                reason: "invalid token".into()
            }
            .to_string(),
            "WebSocket closed before handshake: invalid token"
        );
    }

    #[test]
    fn o1_unrelated_listener_message_names_pid_and_program() {
        let failure = StartFailure::PortHeldByOther {
            port: 18791,
            pid: Some(4242),
            program: Some("python3".into()),
        };
        let text = failure.to_string();
        assert!(text.contains("4242") && text.contains("python3"), "{text}");
    }
}
