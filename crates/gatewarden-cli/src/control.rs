//! The control socket: how `gatewarden status|start|stop|restart|reload|rpc` reach a running
//! `gatewarden run`.
//!
//! # Protocol
//!
//! A Unix stream socket, owner-only (0600, in a 0700 directory). One connection carries one
//! exchange: the client writes one JSON [`ControlRequest`] terminated by `\n`, the server writes one
//! JSON [`ControlResponse`] terminated by `\n` and closes. Lines are at most [`MAX_LINE_BYTES`];
//! a longer line, invalid JSON or an unknown command gets an `error` response, never a panic.
//!
//! ```text
//! → {"cmd":"status"}
//! ← {"ok":{"kind":"status","state":"running","port":18791,"pid":4242,...}}
//! → {"cmd":"rpc","method":"echo","params":{"a":1},"timeoutMs":5000}
//! ← {"ok":{"kind":"rpc","result":{"a":1}}}
//! → {"cmd":"restart"}
//! ← {"ok":{"kind":"command","outcome":{"outcome":"completed"}}}
//! → {"cmd":"rpc","method":"nope"}
//! ← {"error":{"kind":"gateway","message":"unknown method: nope","code":"INVALID_REQUEST"}}
//! ```

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{UnixListener, UnixStream};

use gatewarden::supervisor::{Reload, Restart, Rpc, Start, Stop};
use gatewarden_core::machine::CommandOutcome;
use gatewarden_core::rpc::RpcError;

use crate::config::ControlPlaneConfig;
use crate::instance::{Instance, StatusReport};

/// The longest request or response line. Large enough for any sensible RPC params or reply
/// (gateway status payloads are a few KiB), small enough that a stuck or hostile client cannot
/// make the supervisor buffer without bound.
pub const MAX_LINE_BYTES: usize = 4 * 1024 * 1024;

/// Q1: the budgets and timeouts of the control socket (from [`ControlPlaneConfig`]).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The request line must arrive within this.
    pub request_timeout: Duration,
    /// The answer must be taken within this.
    pub write_timeout: Duration,
    /// Connections open at once; more are closed at once.
    pub max_connections: usize,
    /// Commands running at once.
    pub max_commands: usize,
    /// RPCs running at once.
    pub max_rpcs: usize,
}

impl From<&ControlPlaneConfig> for Limits {
    fn from(config: &ControlPlaneConfig) -> Self {
        Limits {
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            write_timeout: Duration::from_millis(config.write_timeout_ms),
            max_connections: config.max_connections.max(1),
            max_commands: config.max_commands.max(1),
            max_rpcs: config.max_rpcs.max(1),
        }
    }
}

/// One request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "camelCase", deny_unknown_fields)]
pub enum ControlRequest {
    /// The status snapshot.
    Status {},
    /// Start the gateway.
    Start {},
    /// Stop the gateway; with `exit`, end `gatewarden run` afterwards.
    Stop {
        /// End the supervisor too.
        #[serde(default)]
        exit: bool,
    },
    /// Restart the gateway.
    Restart {},
    /// Reload the gateway's config.
    Reload {},
    /// The protocol version and features (Y1; `events_stream`).
    Hello {},
    /// Keep the connection open and stream every event (Y1; `events_stream`).
    Subscribe {},
    /// Call a gateway method.
    Rpc {
        /// The method.
        method: String,
        /// Its params.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        params: Option<Value>,
        /// Time limit; the configured default when absent.
        #[serde(default, rename = "timeoutMs", skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    },
}

/// One response: `{"ok": ...}` or `{"error": ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ControlResponse {
    /// The request succeeded.
    Ok(ControlReply),
    /// It did not.
    Error(ControlError),
}

/// What a successful request answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum ControlReply {
    /// `status`.
    Status(Box<StatusReport>),
    /// `start`, `stop`, `restart`, `reload`: how the command ended (completed, deferred, suppressed, ...).
    Command {
        /// The supervisor's answer; a failure is typed (`failure.kind`, and for a failed start
        /// `failure.failure.kind`).
        outcome: CommandOutcome,
        /// A failure's text, for clients that only show it (present only when it failed).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// `rpc`: the gateway's reply payload.
    Rpc {
        /// The payload.
        result: Value,
    },
    /// `hello`: what this server speaks.
    Hello {
        /// [`crate::events_stream::PROTOCOL_VERSION`].
        protocol: u32,
        /// [`crate::events_stream::FEATURES`].
        features: Vec<String>,
        /// The gatewarden version.
        version: String,
    },
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlError {
    /// The kind of failure.
    pub kind: ControlErrorKind,
    /// What to tell a person.
    pub message: String,
    /// The gateway's error code (`INVALID_REQUEST`, ...), for `gateway` errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The gateway's error details, for `gateway` errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

/// Kinds of control errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ControlErrorKind {
    /// The request line was not a valid request.
    BadRequest,
    /// The request line was longer than [`MAX_LINE_BYTES`].
    TooLong,
    /// M1: the gateway is not connected.
    NotConnected,
    /// M1: no reply in time.
    Timeout,
    /// T5: the gateway stopped while the call waited.
    Stopped,
    /// M1: the request could not be sent.
    SendFailed,
    /// M2: the gateway answered with an error.
    Gateway,
    /// D5: the attached external gateway stopped answering; the transport is reconnecting.
    ExternalUnavailable,
    /// The supervisor did not answer.
    SupervisorGone,
    /// Q1: the command's or the RPCs' budget is used up; try again.
    Busy,
}

impl ControlError {
    fn new(kind: ControlErrorKind, message: impl Into<String>) -> Self {
        ControlError {
            kind,
            message: message.into(),
            code: None,
            details: None,
        }
    }

    fn from_rpc(error: RpcError) -> Self {
        let message = error.to_string();
        match error {
            RpcError::NotConnected => ControlError::new(ControlErrorKind::NotConnected, message),
            RpcError::Timeout { .. } => ControlError::new(ControlErrorKind::Timeout, message),
            RpcError::Stopped => ControlError::new(ControlErrorKind::Stopped, message),
            RpcError::SendFailed { .. } => ControlError::new(ControlErrorKind::SendFailed, message),
            RpcError::ExternalUnavailable => {
                ControlError::new(ControlErrorKind::ExternalUnavailable, message)
            }
            RpcError::Gateway { code, details, .. } => ControlError {
                kind: ControlErrorKind::Gateway,
                message,
                code: (!code.is_empty()).then_some(code),
                details,
            },
        }
    }
}

impl std::fmt::Display for ControlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        if let Some(code) = &self.code {
            write!(f, " ({code})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ControlError {}

/// Parse one request line (without its newline).
pub fn parse_request(line: &[u8]) -> Result<ControlRequest, ControlError> {
    serde_json::from_slice(line).map_err(|error| {
        ControlError::new(
            ControlErrorKind::BadRequest,
            format!("not a control request: {error}"),
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Server.
// ---------------------------------------------------------------------------------------------

/// A bound control socket; the file is removed when this is dropped.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Bind the control socket at `path`: its directory is created owner-only, the socket is made
/// 0600, and a stale socket left by a killed instance is replaced. A live one is an error.
pub fn bind(path: &Path) -> anyhow::Result<ControlSocket> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        if !dir.exists() {
            crate::launch::create_private_dir(dir)?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                bail!(
                    "another gatewarden is already running with control socket {} \
                     (use `gatewarden status` to see it, or pick another --port / --control)",
                    path.display()
                );
            }
            // Nobody answers: a socket left behind by an instance that was killed.
            std::fs::remove_file(path).with_context(|| {
                format!("cannot remove stale control socket {}", path.display())
            })?;
        }
        Ok(_) => bail!(
            "{} exists and is not a socket; refusing to replace it with the control socket",
            path.display()
        ),
        Err(_) => {}
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("cannot create control socket {}", path.display()))?;
    // Owner-only: whoever can connect can stop the gateway and call any method on it.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot make control socket {} owner-only", path.display()))?;
    Ok(ControlSocket {
        listener,
        path: path.to_path_buf(),
    })
}

/// Serve control connections until the task is dropped.
///
/// Q1: the accept loop never waits for a budget, so an idle client never holds up the next one.
/// Each connection has [`Limits::request_timeout`] to send its line; once parsed, a command
/// takes a slot of the commands' budget and an RPC one of the RPCs' budget, each without waiting
/// (a full budget answers `busy`), so slow RPCs and stuck clients never delay `status` or `stop`.
pub async fn serve(socket: ControlSocket, instance: Rc<Instance>, limits: Limits) {
    let open = Rc::new(std::cell::Cell::new(0usize));
    let budgets = Rc::new(Budgets {
        commands: tokio::sync::Semaphore::new(limits.max_commands),
        rpcs: tokio::sync::Semaphore::new(limits.max_rpcs),
    });
    loop {
        let stream = match socket.listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "control socket accept failed");
                // Out of file descriptors and the like: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if open.get() >= limits.max_connections {
            tracing::debug!(
                max = limits.max_connections,
                "control connection refused: too many open"
            );
            drop(stream);
            continue;
        }
        open.set(open.get() + 1);
        let instance = instance.clone();
        let open = open.clone();
        let budgets = budgets.clone();
        actix_rt::spawn(async move {
            if let Err(error) = serve_connection(stream, &instance, &budgets, limits).await {
                tracing::debug!(%error, "control connection ended early");
            }
            open.set(open.get() - 1);
        });
    }
}

/// The two separate budgets of Q1.
struct Budgets {
    commands: tokio::sync::Semaphore,
    rpcs: tokio::sync::Semaphore,
}

async fn serve_connection(
    stream: UnixStream,
    instance: &Instance,
    budgets: &Budgets,
    limits: Limits,
) -> std::io::Result<()> {
    let (reader, mut writer) = stream.into_split();
    let mut reader = tokio::io::BufReader::new(reader).take(MAX_LINE_BYTES as u64 + 1);
    let mut line = Vec::new();
    let read =
        tokio::time::timeout(limits.request_timeout, reader.read_until(b'\n', &mut line)).await;
    let response = match read {
        Err(_) => ControlResponse::Error(ControlError::new(
            ControlErrorKind::BadRequest,
            format!(
                "no request line within {} ms",
                limits.request_timeout.as_millis()
            ),
        )),
        Ok(Err(error)) => return Err(error),
        Ok(Ok(_)) if line.len() > MAX_LINE_BYTES => ControlResponse::Error(ControlError::new(
            ControlErrorKind::TooLong,
            format!("request longer than {MAX_LINE_BYTES} bytes"),
        )),
        Ok(Ok(_)) => {
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            match parse_request(&line) {
                // Y1: the connection stays open and becomes an event stream.
                Ok(ControlRequest::Subscribe {}) => {
                    return crate::events_stream::serve(writer, instance).await
                }
                Ok(request) => {
                    let (budget, what) = match request {
                        ControlRequest::Rpc { .. } => (&budgets.rpcs, "RPCs"),
                        _ => (&budgets.commands, "commands"),
                    };
                    match budget.try_acquire() {
                        Ok(_permit) => handle(request, instance).await,
                        Err(_) => ControlResponse::Error(ControlError::new(
                            ControlErrorKind::Busy,
                            format!("too many {what} in progress; try again"),
                        )),
                    }
                }
                Err(error) => ControlResponse::Error(error),
            }
        }
    };
    let mut text = serde_json::to_vec(&response).unwrap_or_else(|_| {
        br#"{"error":{"kind":"badRequest","message":"response could not be encoded"}}"#.to_vec()
    });
    text.push(b'\n');
    let write = async {
        writer.write_all(&text).await?;
        writer.shutdown().await
    };
    match tokio::time::timeout(limits.write_timeout, write).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client did not take its answer",
        )),
    }
}

/// Carry out one request.
pub async fn handle(request: ControlRequest, instance: &Instance) -> ControlResponse {
    let gone = || {
        ControlResponse::Error(ControlError::new(
            ControlErrorKind::SupervisorGone,
            "the supervisor did not answer",
        ))
    };
    let supervisor = &instance.supervisor;
    let command = |outcome: Result<CommandOutcome, actix::MailboxError>| match outcome {
        Ok(outcome) => ControlResponse::Ok(ControlReply::Command {
            message: match &outcome {
                CommandOutcome::Failed { failure } => Some(failure.to_string()),
                _ => None,
            },
            outcome,
        }),
        Err(_) => gone(),
    };
    match request {
        ControlRequest::Status {} => match instance.report().await {
            Ok(report) => ControlResponse::Ok(ControlReply::Status(Box::new(report))),
            Err(_) => gone(),
        },
        ControlRequest::Hello {} => ControlResponse::Ok(ControlReply::Hello {
            protocol: crate::events_stream::PROTOCOL_VERSION,
            features: crate::events_stream::FEATURES
                .iter()
                .map(|feature| feature.to_string())
                .collect(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }),
        ControlRequest::Subscribe {} => ControlResponse::Error(ControlError::new(
            ControlErrorKind::BadRequest,
            "subscribe is only served on a control connection of its own",
        )),
        ControlRequest::Start {} => command(supervisor.send(Start).await),
        ControlRequest::Restart {} => command(supervisor.send(Restart).await),
        ControlRequest::Reload {} => command(supervisor.send(Reload).await),
        ControlRequest::Stop { exit } => {
            let outcome = supervisor.send(Stop).await;
            if exit {
                tracing::info!("stop --exit asked over the control socket");
                instance.exit_requested.notify_one();
            }
            command(outcome)
        }
        ControlRequest::Rpc {
            method,
            params,
            timeout_ms,
        } => {
            let outcome = supervisor
                .send(Rpc {
                    method,
                    params,
                    timeout_ms,
                })
                .await
                .unwrap_or(Err(RpcError::Stopped));
            instance.rpc.record(&outcome);
            match outcome {
                Ok(result) => ControlResponse::Ok(ControlReply::Rpc { result }),
                Err(error) => ControlResponse::Error(ControlError::from_rpc(error)),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Client.
// ---------------------------------------------------------------------------------------------

/// Connect to the control socket at `path`, with an error that says what to do when nobody is
/// there.
pub fn connect(path: &Path) -> anyhow::Result<std::os::unix::net::UnixStream> {
    std::os::unix::net::UnixStream::connect(path).map_err(|error| {
        let why = match error.kind() {
            std::io::ErrorKind::NotFound => "it does not exist".to_string(),
            std::io::ErrorKind::ConnectionRefused => "nobody answers: a stale socket".to_string(),
            std::io::ErrorKind::PermissionDenied => {
                "permission denied: it belongs to another user".to_string()
            }
            _ => error.to_string(),
        };
        anyhow::anyhow!(
            "no gatewarden is running there: cannot connect to control socket {} ({why}); \
             start one with `gatewarden run`, or pass the same --port / --control it uses",
            path.display()
        )
    })
}

/// Send one request to the instance behind `path` and wait up to `timeout` for the answer.
pub fn request(
    path: &Path,
    request: &ControlRequest,
    timeout: Duration,
) -> anyhow::Result<ControlResponse> {
    let mut stream = connect(path)?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    stream.set_read_timeout(Some(timeout))?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    stream
        .write_all(&line)
        .with_context(|| format!("cannot send to control socket {}", path.display()))?;
    let mut reader = BufReader::new(stream).take(MAX_LINE_BYTES as u64 + 1);
    let mut answer = Vec::new();
    match reader.read_until(b'\n', &mut answer) {
        Ok(_) => {}
        Err(error)
            if matches!(
                error.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            bail!(
                "no answer from gatewarden within {} ms",
                timeout.as_millis()
            )
        }
        Err(error) => return Err(error).context("cannot read the answer of gatewarden"),
    }
    if answer.is_empty() {
        bail!("gatewarden closed the control connection without answering");
    }
    serde_json::from_slice(answer.trim_ascii_end())
        .context("gatewarden sent an answer this client cannot read")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        for request in [
            ControlRequest::Status {},
            ControlRequest::Stop { exit: true },
            ControlRequest::Rpc {
                method: "echo".into(),
                params: Some(serde_json::json!({"a": 1})),
                timeout_ms: Some(5),
            },
        ] {
            let line = serde_json::to_vec(&request).unwrap();
            assert_eq!(parse_request(&line).unwrap(), request);
        }
        assert_eq!(
            parse_request(br#"{"cmd":"stop"}"#).unwrap(),
            ControlRequest::Stop { exit: false }
        );
    }

    #[test]
    fn garbage_is_a_bad_request_not_a_panic() {
        for line in [
            &b""[..],
            b"hello",
            b"{}",
            b"[]",
            b"{\"cmd\":\"explode\"}",
            b"{\"cmd\":\"status\",\"extra\":1}",
            b"{\"cmd\":\"rpc\"}",
            b"\xff\xfe",
        ] {
            let error = parse_request(line).unwrap_err();
            assert_eq!(error.kind, ControlErrorKind::BadRequest, "{line:?}");
        }
    }

    #[test]
    fn m2_gateway_errors_keep_their_code() {
        let error = ControlError::from_rpc(RpcError::Gateway {
            code: "INVALID_REQUEST".into(),
            message: "unknown method: nope".into(),
            details: None,
            retryable: false,
            retry_after_ms: None,
        });
        assert_eq!(error.to_string(), "unknown method: nope (INVALID_REQUEST)");
        let line = serde_json::to_string(&ControlResponse::Error(error)).unwrap();
        assert!(line.starts_with(r#"{"error":{"kind":"gateway""#), "{line}");
    }

    #[test]
    fn command_outcomes_are_nested() {
        let reply = ControlResponse::Ok(ControlReply::Command {
            outcome: CommandOutcome::Suppressed { retry_after_ms: 7 },
            message: None,
        });
        let line = serde_json::to_string(&reply).unwrap();
        let back: ControlResponse = serde_json::from_str(&line).unwrap();
        assert_eq!(back, reply);
    }

    #[test]
    fn a_failed_command_is_typed_on_the_wire_with_its_text_beside_it() {
        let failure = gatewarden_core::error::CommandFailure::Start {
            failure: gatewarden_core::error::StartFailure::LockHeld {
                line: "another OpenClaw process owns gateway-lifecycle".into(),
            },
            reason: None,
        };
        let reply = ControlResponse::Ok(ControlReply::Command {
            message: Some(failure.to_string()),
            outcome: CommandOutcome::Failed { failure },
        });
        let line = serde_json::to_value(&reply).unwrap();
        let outcome = &line["ok"]["outcome"];
        assert_eq!(outcome["outcome"], "failed");
        assert_eq!(outcome["failure"]["kind"], "start");
        assert_eq!(outcome["failure"]["failure"]["kind"], "lockHeld");
        assert!(line["ok"]["message"]
            .as_str()
            .unwrap()
            .contains("state lock"));
        let back: ControlResponse = serde_json::from_value(line).unwrap();
        assert_eq!(back, reply);
    }
}
