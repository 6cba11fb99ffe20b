//! Y1: the control socket's event stream (`{"cmd":"subscribe"}`) and `{"cmd":"hello"}`, plus the
//! client side used by `gatewarden events`.
//!
//! [`StreamLine`] is the one serde type of every line a subscriber reads; the server writes it,
//! `gatewarden events` reads it back, and a unit test writes a sample of every kind for the Node
//! client's declarations (clients/node/test/fixtures/events.sample.json). docs/control-protocol.md
//! describes it for people.
//!
//! Each subscriber gets its own receiver of the supervisor's bounded broadcast ring
//! (`SubscribeBounded`): publishing never waits for a subscriber; one that falls more than
//! `event_queue` events behind loses the oldest and reads `{"lagged": n}` instead.

use std::cell::Cell;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::AsyncWriteExt as _;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{watch, Notify};

use gatewarden::events::GatewayEvent;
use gatewarden::supervisor::SubscribeBounded;
use gatewarden_core::error::CommandFailure;
use gatewarden_core::liveness::{LivenessClass, RecoveryPhase};
use gatewarden_core::machine::Status;
use gatewarden_core::stderr::StartupPhase;

use crate::instance::{unix_ms, Instance, StatusReport};

/// The control protocol's version, answered by `hello`. 1 was the one-exchange protocol; 2 adds
/// `hello` and `subscribe`.
pub const PROTOCOL_VERSION: u32 = 2;

/// What this server supports, answered by `hello` (clients check for a feature, not a version).
pub const FEATURES: &[&str] = &[
    "status",
    "start",
    "stop",
    "restart",
    "reload",
    "rpc",
    "subscribe",
    "lagged",
];

/// One line of the event stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StreamLine {
    /// An event (the first one is always a `snapshot`).
    Event(EventLine),
    /// The subscriber fell behind: `lagged` events were lost to it. The next event's `seq` is
    /// larger by that many, so the numbering stays comparable.
    Lagged {
        /// How many events it missed.
        lagged: u64,
    },
    /// The last line: the stream ends (EOF follows).
    End {
        /// Why.
        end: EndReason,
    },
}

/// An event with its place in the stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventLine {
    /// 1 for the snapshot, then +1 per event (a `lagged` line accounts for the missing ones).
    pub seq: u64,
    /// Unix milliseconds when gatewarden wrote the line.
    pub ts: u64,
    /// The event.
    #[serde(flatten)]
    pub event: StreamEvent,
}

/// Why a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EndReason {
    /// `gatewarden run` is exiting.
    InstanceStopped,
    /// The supervisor went away without the instance saying so.
    SupervisorGone,
}

/// The events of a stream, tagged by `kind`. Payloads that may be any JSON value sit under a
/// named field, so every line is an object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum StreamEvent {
    /// The first line: the full `status --json` report when the subscription began.
    Snapshot {
        /// The report.
        status: Box<StatusReport>,
    },
    /// S3: the status changed (S2 shape, times in Unix ms).
    Status {
        /// The status.
        status: Box<Status>,
    },
    /// M5: a gateway frame that is neither a reply, an event nor JSON-RPC.
    RawMessage {
        /// The frame.
        message: Value,
    },
    /// M3/M4: a gateway event or JSON-RPC notification.
    Notification {
        /// The event name or method.
        method: String,
        /// Its payload.
        params: Value,
    },
    /// X2: the owned gateway process exited.
    ProcessExit {
        /// Its pid.
        pid: u32,
        /// Exit code (128 + signal for a signal death).
        code: Option<i32>,
    },
    /// An error worth attention (never contains a secret).
    Error {
        /// What happened.
        message: String,
        /// The typed failure behind it, when a command failure is what went wrong.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failure: Option<CommandFailure>,
    },
    /// M3/M4: a channel-status event.
    ChannelStatus {
        /// Its payload.
        status: Value,
    },
    /// M3/M4: a chat message.
    ChatMessage {
        /// The message.
        message: Value,
    },
    /// G1/G2: the gateway's subsystems are ready.
    GatewayReady {},
    /// D1–D7: the liveness classification or recovery phase changed.
    Liveness {
        /// D2.
        liveness: LivenessClass,
        /// What the recovery is doing.
        phase: RecoveryPhase,
    },
    /// D5: the attached external gateway stopped answering.
    ExternalUnavailable {},
    /// F8: the supervisor gave up until a command.
    GaveUp {
        /// Why.
        reason: String,
        /// The typed failure behind it, when a start failure caused it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failure: Option<CommandFailure>,
    },
    /// N3: a start reached running.
    #[serde(rename_all = "camelCase")]
    StartupMetric {
        /// Start requested → spawn done.
        config_prep_ms: u64,
        /// Spawn → ready.
        spawn_to_ready_ms: u64,
        /// Ready → handshake done.
        ready_to_connect_ms: u64,
        /// Start requested → running.
        total_ms: u64,
        /// The gateway's startup trace.
        phases: Vec<StartupPhase>,
        /// Its slowest phase.
        slowest: Option<StartupPhase>,
    },
    /// N4: a reconnect attempt ended.
    #[serde(rename_all = "camelCase")]
    ReconnectMetric {
        /// Whether it reached running.
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

impl From<GatewayEvent> for StreamEvent {
    fn from(event: GatewayEvent) -> Self {
        match event {
            GatewayEvent::Status(status) => StreamEvent::Status {
                status: Box::new(status),
            },
            GatewayEvent::RawMessage(message) => StreamEvent::RawMessage { message },
            GatewayEvent::Notification { method, params } => {
                StreamEvent::Notification { method, params }
            }
            GatewayEvent::ProcessExit { pid, code } => StreamEvent::ProcessExit { pid, code },
            GatewayEvent::Error { message, failure } => StreamEvent::Error { message, failure },
            GatewayEvent::ChannelStatus(status) => StreamEvent::ChannelStatus { status },
            GatewayEvent::ChatMessage(message) => StreamEvent::ChatMessage { message },
            GatewayEvent::GatewayReady => StreamEvent::GatewayReady {},
            GatewayEvent::Liveness { liveness, phase } => StreamEvent::Liveness { liveness, phase },
            GatewayEvent::ExternalUnavailable => StreamEvent::ExternalUnavailable {},
            GatewayEvent::GaveUp { reason, failure } => StreamEvent::GaveUp { reason, failure },
            GatewayEvent::StartupMetric {
                config_prep_ms,
                spawn_to_ready_ms,
                ready_to_connect_ms,
                total_ms,
                phases,
                slowest,
            } => StreamEvent::StartupMetric {
                config_prep_ms,
                spawn_to_ready_ms,
                ready_to_connect_ms,
                total_ms,
                phases,
                slowest,
            },
            GatewayEvent::ReconnectMetric {
                success,
                attempt,
                max_attempts,
                delay_ms,
                error,
                attempts_total,
                successes_total,
            } => StreamEvent::ReconnectMetric {
                success,
                attempt,
                max_attempts,
                delay_ms,
                error,
                attempts_total,
                successes_total,
            },
        }
    }
}

impl StreamEvent {
    /// The `kind` tag as written on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            StreamEvent::Snapshot { .. } => "snapshot",
            StreamEvent::Status { .. } => "status",
            StreamEvent::RawMessage { .. } => "rawMessage",
            StreamEvent::Notification { .. } => "notification",
            StreamEvent::ProcessExit { .. } => "processExit",
            StreamEvent::Error { .. } => "error",
            StreamEvent::ChannelStatus { .. } => "channelStatus",
            StreamEvent::ChatMessage { .. } => "chatMessage",
            StreamEvent::GatewayReady {} => "gatewayReady",
            StreamEvent::Liveness { .. } => "liveness",
            StreamEvent::ExternalUnavailable {} => "externalUnavailable",
            StreamEvent::GaveUp { .. } => "gaveUp",
            StreamEvent::StartupMetric { .. } => "startupMetric",
            StreamEvent::ReconnectMetric { .. } => "reconnectMetric",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Server.
// ---------------------------------------------------------------------------------------------

/// The open streams of an instance, so `gatewarden run` can end them with a final line before it
/// exits instead of cutting them off.
pub struct Streams {
    closing: watch::Sender<bool>,
    open: Cell<usize>,
    all_ended: Notify,
}

impl Default for Streams {
    fn default() -> Self {
        Streams {
            closing: watch::channel(false).0,
            open: Cell::new(0),
            all_ended: Notify::new(),
        }
    }
}

impl Streams {
    /// Tell every stream to flush what it holds, write its `end` line and close; wait up to
    /// `grace` for them (a subscriber that stopped reading is not waited for longer).
    pub async fn close(&self, grace: Duration) {
        let _ = self.closing.send(true);
        let wait = async {
            while self.open.get() > 0 {
                self.all_ended.notified().await;
            }
        };
        let _ = tokio::time::timeout(grace, wait).await;
    }
}

/// Counts a stream as open while it lives.
struct OpenGuard<'a>(&'a Streams);

impl<'a> OpenGuard<'a> {
    fn new(streams: &'a Streams) -> Self {
        streams.open.set(streams.open.get() + 1);
        OpenGuard(streams)
    }
}

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.open.set(self.0.open.get().saturating_sub(1));
        self.0.all_ended.notify_waiters();
    }
}

/// Serve `{"cmd":"subscribe"}` on `writer` until the instance stops or the client goes away.
pub async fn serve(mut writer: OwnedWriteHalf, instance: &Instance) -> std::io::Result<()> {
    let _open = OpenGuard::new(&instance.streams);
    let mut closing = instance.streams.closing.subscribe();
    // Subscribe before the snapshot: an event published in between is then delivered after it
    // (at worst repeating what the snapshot already shows), never lost.
    let Ok(mut events) = instance.supervisor.send(SubscribeBounded).await else {
        return write(&mut writer, &end(EndReason::SupervisorGone)).await;
    };
    let Ok(report) = instance.report().await else {
        return write(&mut writer, &end(EndReason::SupervisorGone)).await;
    };
    let mut seq = 1;
    write(
        &mut writer,
        &event_line(
            seq,
            StreamEvent::Snapshot {
                status: Box::new(report),
            },
        ),
    )
    .await?;
    loop {
        if *closing.borrow_and_update() {
            // Flush what the ring still holds for us (the final `stopped` status), then end.
            loop {
                match events.try_recv() {
                    Ok(event) => {
                        seq += 1;
                        write(&mut writer, &event_line(seq, event.into())).await?;
                    }
                    Err(tokio::sync::broadcast::error::TryRecvError::Lagged(n)) => {
                        seq += n;
                        write(&mut writer, &StreamLine::Lagged { lagged: n }).await?;
                    }
                    Err(_) => break,
                }
            }
            return write(&mut writer, &end(EndReason::InstanceStopped)).await;
        }
        let line = tokio::select! {
            received = events.recv() => match received {
                Ok(event) => {
                    seq += 1;
                    event_line(seq, event.into())
                }
                Err(RecvError::Lagged(n)) => {
                    seq += n;
                    StreamLine::Lagged { lagged: n }
                }
                Err(RecvError::Closed) => {
                    return write(&mut writer, &end(EndReason::SupervisorGone)).await;
                }
            },
            changed = closing.changed() => {
                if changed.is_err() {
                    return write(&mut writer, &end(EndReason::InstanceStopped)).await;
                }
                continue;
            }
        };
        write(&mut writer, &line).await?;
    }
}

fn event_line(seq: u64, event: StreamEvent) -> StreamLine {
    StreamLine::Event(EventLine {
        seq,
        ts: unix_ms(),
        event,
    })
}

fn end(end: EndReason) -> StreamLine {
    StreamLine::End { end }
}

async fn write(writer: &mut OwnedWriteHalf, line: &StreamLine) -> std::io::Result<()> {
    let mut text = serde_json::to_vec(line).map_err(std::io::Error::other)?;
    text.push(b'\n');
    writer.write_all(&text).await?;
    if matches!(line, StreamLine::End { .. }) {
        writer.shutdown().await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Client.
// ---------------------------------------------------------------------------------------------

/// Subscribe to the instance behind `path` and hand every line to `each` until the stream ends.
/// Returns the end reason, or an error when the stream broke off without one.
pub fn follow(
    path: &Path,
    mut each: impl FnMut(&StreamLine, &str) -> anyhow::Result<()>,
) -> anyhow::Result<EndReason> {
    let mut stream = crate::control::connect(path)?;
    stream.write_all(b"{\"cmd\":\"subscribe\"}\n")?;
    let reader = BufReader::new(stream);
    for line in reader.lines() {
        let line = line?;
        let parsed: StreamLine = match serde_json::from_str(&line) {
            Ok(parsed) => parsed,
            Err(_) => {
                // A one-shot error answer (an older server, a bad request) ends the stream.
                if let Ok(crate::control::ControlResponse::Error(error)) =
                    serde_json::from_str(&line)
                {
                    return Err(error.into());
                }
                anyhow::bail!("gatewarden sent a line this client cannot read: {line}");
            }
        };
        each(&parsed, &line)?;
        if let StreamLine::End { end } = parsed {
            return Ok(end);
        }
    }
    anyhow::bail!("the event stream broke off without an end line")
}

/// One line for people: time, kind, the gist.
pub fn human_line(line: &StreamLine) -> String {
    let event = match line {
        StreamLine::Lagged { lagged } => return format!("(fell behind: {lagged} events lost)"),
        StreamLine::End { end } => {
            return match end {
                EndReason::InstanceStopped => "(instance stopped)".into(),
                EndReason::SupervisorGone => "(supervisor gone)".into(),
            }
        }
        StreamLine::Event(event) => event,
    };
    let optional = |value: Option<String>| value.unwrap_or_else(|| "-".into());
    let gist = match &event.event {
        StreamEvent::Snapshot { status: report } => format!(
            "{} · port {} · pid {}",
            report.status.state.as_str(),
            report.status.port,
            optional(report.status.pid.map(|pid| pid.to_string()))
        ),
        StreamEvent::Status { status } => {
            let mut text = format!(
                "{} · pid {}",
                status.state.as_str(),
                optional(status.pid.map(|pid| pid.to_string()))
            );
            if let Some(error) = &status.error {
                text.push_str(&format!(" · {error}"));
            }
            text
        }
        StreamEvent::RawMessage { message } | StreamEvent::ChatMessage { message } => {
            compact(message)
        }
        StreamEvent::Notification { method, params } => format!("{method} {}", compact(params)),
        StreamEvent::ProcessExit { pid, code } => format!(
            "pid {pid} exited (code {})",
            optional(code.map(|code| code.to_string()))
        ),
        StreamEvent::Error { message, .. } => message.clone(),
        StreamEvent::ChannelStatus { status } => compact(status),
        StreamEvent::GatewayReady {} | StreamEvent::ExternalUnavailable {} => String::new(),
        StreamEvent::Liveness { liveness, phase } => format!("{liveness:?} · {phase:?}"),
        StreamEvent::GaveUp { reason, .. } => reason.clone(),
        StreamEvent::StartupMetric { total_ms, .. } => format!("started in {total_ms} ms"),
        StreamEvent::ReconnectMetric {
            success, attempt, ..
        } => format!(
            "attempt {attempt} {}",
            if *success { "succeeded" } else { "failed" }
        ),
    };
    let clock = clock_text(event.ts);
    format!("{clock} {:<20} {gist}", event.event.kind())
        .trim_end()
        .to_string()
}

/// A JSON value on one line, cut to a readable length.
fn compact(value: &Value) -> String {
    const MAX: usize = 200;
    let text = value.to_string();
    if text.len() <= MAX {
        return text;
    }
    let mut cut = MAX;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &text[..cut])
}

/// `HH:MM:SS.mmm` (UTC) of a Unix-ms time: short, sortable, and needs no time-zone database.
fn clock_text(unix_ms: u64) -> String {
    let ms = unix_ms % 1000;
    let secs = unix_ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{ms:03}Z",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatewarden_core::machine::LifecycleState;
    use serde_json::json;

    /// Every variant gets a distinct number below [`KINDS`]; the match is exhaustive, so a new
    /// variant does not compile until it is numbered (and then the sample must cover it).
    const KINDS: usize = 14;

    fn variant_number(event: &StreamEvent) -> usize {
        match event {
            StreamEvent::Snapshot { .. } => 0,
            StreamEvent::Status { .. } => 1,
            StreamEvent::RawMessage { .. } => 2,
            StreamEvent::Notification { .. } => 3,
            StreamEvent::ProcessExit { .. } => 4,
            StreamEvent::Error { .. } => 5,
            StreamEvent::ChannelStatus { .. } => 6,
            StreamEvent::ChatMessage { .. } => 7,
            StreamEvent::GatewayReady {} => 8,
            StreamEvent::Liveness { .. } => 9,
            StreamEvent::ExternalUnavailable {} => 10,
            StreamEvent::GaveUp { .. } => 11,
            StreamEvent::StartupMetric { .. } => 12,
            StreamEvent::ReconnectMetric { .. } => 13,
        }
    }

    fn status(state: LifecycleState) -> Status {
        Status {
            state,
            port: 18791,
            pid: Some(4242),
            uptime_ms: Some(1200),
            error: None,
            connected_at_ms: Some(1_764_931_200_000),
            version: Some("2026.3.1".into()),
            protocol: Some(3),
            boot_id: Some("b-1".into()),
            reconnect_attempts: 0,
            gateway_ready: true,
            external: false,
        }
    }

    /// One line of every shape, as a server writes them.
    fn sample() -> Vec<StreamLine> {
        let report: StatusReport = serde_json::from_value(json!({
            "state": "running", "port": 18791, "pid": 4242, "uptimeMs": 1200,
            "connectedAtMs": 1_764_931_200_000u64, "version": "2026.3.1", "protocol": 3,
            "bootId": "b-1", "reconnectAttempts": 0, "gatewayReady": true, "external": false,
            "health": {
                "state": "healthy", "reasons": [], "liveness": "alive",
                "consecutiveHeartbeatMisses": 0, "lastAliveAt": 1_764_931_200_500u64,
                "degradedCapabilities": []
            },
            "recovery": {"phase": "watching", "liveness": "alive", "processEvidence": true},
            "supervisor": {"pid": 4000, "profile": "sim", "uptimeMs": 1500, "version": "0.1.0"}
        }))
        .expect("a status report");
        let phase = StartupPhase {
            name: "plugins".into(),
            duration_ms: 40,
        };
        let events = vec![
            StreamEvent::Snapshot {
                status: Box::new(report),
            },
            StreamEvent::Status {
                status: Box::new(status(LifecycleState::Running)),
            },
            StreamEvent::RawMessage {
                message: json!({"type": "odd"}),
            },
            StreamEvent::Notification {
                method: "health".into(),
                params: json!({"ok": true}),
            },
            StreamEvent::ProcessExit {
                pid: 4242,
                code: Some(137),
            },
            StreamEvent::Error {
                message: "gateway closed the connection (1006)".into(),
                failure: None,
            },
            StreamEvent::ChannelStatus {
                status: json!({"channelId": "telegram", "status": "connected"}),
            },
            StreamEvent::ChatMessage {
                message: json!({"text": "hi"}),
            },
            StreamEvent::GatewayReady {},
            StreamEvent::Liveness {
                liveness: LivenessClass::Busy,
                phase: RecoveryPhase::Verifying,
            },
            StreamEvent::ExternalUnavailable {},
            StreamEvent::GaveUp {
                reason: "restart limit reached".into(),
                failure: None,
            },
            StreamEvent::StartupMetric {
                config_prep_ms: 3,
                spawn_to_ready_ms: 880,
                ready_to_connect_ms: 25,
                total_ms: 910,
                phases: vec![phase.clone()],
                slowest: Some(phase),
            },
            StreamEvent::ReconnectMetric {
                success: false,
                attempt: 1,
                max_attempts: 10,
                delay_ms: 1000,
                error: Some("connection refused".into()),
                attempts_total: 1,
                successes_total: 0,
            },
        ];
        let mut lines: Vec<StreamLine> = events
            .into_iter()
            .enumerate()
            .map(|(index, event)| {
                StreamLine::Event(EventLine {
                    seq: index as u64 + 1,
                    ts: 1_764_931_200_000 + index as u64,
                    event,
                })
            })
            .collect();
        lines.push(StreamLine::Lagged { lagged: 3 });
        lines.push(StreamLine::End {
            end: EndReason::InstanceStopped,
        });
        lines
    }

    #[test]
    fn y1_every_line_round_trips_through_the_one_type() {
        let lines = sample();
        let mut covered = [false; KINDS];
        for line in &lines {
            let text = serde_json::to_string(line).unwrap();
            let back: StreamLine = serde_json::from_str(&text).unwrap();
            assert_eq!(&back, line, "{text}");
            assert!(!text.contains('\n'));
            if let StreamLine::Event(event) = line {
                covered[variant_number(&event.event)] = true;
                let value: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(value["kind"], event.event.kind(), "{text}");
            }
        }
        assert!(covered.iter().all(|kind| *kind), "the sample misses a kind");
    }

    #[test]
    fn y1_lagged_and_end_lines_have_their_documented_shape() {
        assert_eq!(
            serde_json::to_string(&StreamLine::Lagged { lagged: 5 }).unwrap(),
            r#"{"lagged":5}"#
        );
        assert_eq!(
            serde_json::to_string(&StreamLine::End {
                end: EndReason::InstanceStopped
            })
            .unwrap(),
            r#"{"end":"instanceStopped"}"#
        );
    }

    /// The Node client's declarations are checked against this file (clients/node/test/); it is
    /// regenerated here, so the Rust type stays the source of truth.
    #[test]
    fn y1_the_node_client_sample_is_current() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../clients/node/test/fixtures/events.sample.json");
        let mut text = serde_json::to_string_pretty(&sample()).unwrap();
        text.push('\n');
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current != text {
            std::fs::write(&path, &text).expect("write the sample");
            panic!(
                "{} was out of date and has been rewritten: commit it (and check the Node \
                 client's declarations)",
                path.display()
            );
        }
    }

    #[test]
    fn human_lines_name_the_kind() {
        for line in sample() {
            let text = human_line(&line);
            if let StreamLine::Event(event) = &line {
                assert!(text.contains(event.event.kind()), "{text}");
            }
        }
        assert_eq!(clock_text(3_723_004), "01:02:03.004Z");
    }
}
