//! `--http`: `/healthz`, `/readyz` and `/metrics` (Prometheus text format) from a small
//! hand-written HTTP/1.1 responder.
//!
//! Hand-written because the surface is three GET routes with `Connection: close`: a web framework
//! would be most of the binary. Requests are bounded ([`MAX_REQUEST_BYTES`], a read deadline) and
//! anything unexpected gets a 4xx answer, never a panic.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use gatewarden_core::health::HealthState;
use gatewarden_core::liveness::{LivenessClass, RecoveryPhase};
use gatewarden_core::machine::LifecycleState;

use crate::config::ControlPlaneConfig;
use crate::instance::{Instance, Snapshot};

/// The largest request head accepted (the routes take no body).
const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// Q1: the HTTP endpoint's budgets and timeouts (from [`ControlPlaneConfig`]).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The request head must arrive within this.
    pub header_timeout: Duration,
    /// The answer must be taken within this.
    pub write_timeout: Duration,
    /// Connections open at once; more are closed at once.
    pub max_connections: usize,
    /// The probes' snapshot counts as the supervisor's answer while younger than this.
    pub snapshot_stale: Duration,
}

impl From<&ControlPlaneConfig> for Limits {
    fn from(config: &ControlPlaneConfig) -> Self {
        Limits {
            header_timeout: Duration::from_millis(config.http_header_timeout_ms),
            write_timeout: Duration::from_millis(config.write_timeout_ms),
            max_connections: config.http_max_connections.max(1),
            snapshot_stale: Duration::from_millis(config.snapshot_stale_ms),
        }
    }
}

/// Bind the HTTP endpoint (before the gateway starts, so a taken port fails fast).
pub async fn bind(address: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot serve HTTP on {address}"))
}

/// Serve until the task is dropped.
///
/// Q1: the accept loop never waits for a free slot, each connection must send its head within
/// [`Limits::header_timeout`], and `/healthz` and `/readyz` answer from the status snapshot, so
/// slowloris clients cost a connection slot each for at most that long and never delay a probe.
pub async fn serve(listener: TcpListener, instance: Rc<Instance>, limits: Limits) {
    let open = Rc::new(std::cell::Cell::new(0usize));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if open.get() >= limits.max_connections {
            tracing::debug!(
                max = limits.max_connections,
                "HTTP connection refused: too many open"
            );
            drop(stream);
            continue;
        }
        open.set(open.get() + 1);
        let instance = instance.clone();
        let open = open.clone();
        actix_rt::spawn(async move {
            if let Err(error) = serve_connection(stream, &instance, limits).await {
                tracing::debug!(%error, "HTTP connection ended early");
            }
            open.set(open.get() - 1);
        });
    }
}

/// An answer.
struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
    allow: bool,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Self {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
            allow: false,
        }
    }

    fn json(status: u16, body: serde_json::Value) -> Self {
        Response {
            status,
            content_type: "application/json",
            body: format!("{body}\n"),
            allow: false,
        }
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    instance: &Instance,
    limits: Limits,
) -> std::io::Result<()> {
    let head = match tokio::time::timeout(limits.header_timeout, read_head(&mut stream)).await {
        Ok(Ok(head)) => head,
        Ok(Err(error)) => return Err(error),
        Err(_) => None,
    };
    let (response, head_only) = match head.as_deref().map(parse_request_line) {
        None => (Response::text(400, "bad request\n"), false),
        Some(Err(status)) => (Response::text(status, "bad request\n"), false),
        Some(Ok((method, path))) => {
            let head_only = method == "HEAD";
            if method != "GET" && !head_only {
                let mut response = Response::text(405, "method not allowed\n");
                response.allow = true;
                (response, false)
            } else {
                (route(path, instance, limits).await, head_only)
            }
        }
    };
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    );
    if response.allow {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    if !head_only {
        out.push_str(&response.body);
    }
    let write = async {
        stream.write_all(out.as_bytes()).await?;
        stream.shutdown().await
    };
    match tokio::time::timeout(limits.write_timeout, write).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client did not take its answer",
        )),
    }
}

/// Read up to the end of the request head; `None` when it is too long or the peer went away.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(None);
        }
        buffer.extend_from_slice(&chunk[..read]);
        if let Some(end) = find(&buffer, b"\r\n\r\n").or_else(|| find(&buffer, b"\n\n")) {
            buffer.truncate(end);
            return Ok(Some(String::from_utf8_lossy(&buffer).into_owned()));
        }
        if buffer.len() > MAX_REQUEST_BYTES {
            return Ok(None);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// `GET /path HTTP/1.1` → (`GET`, `/path`), query string dropped; `Err(status)` otherwise.
fn parse_request_line(head: &str) -> Result<(&str, &str), u16> {
    let line = head.lines().next().ok_or(400u16)?;
    let mut parts = line.split_ascii_whitespace();
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(400);
    };
    if !version.starts_with("HTTP/1.") {
        return Err(505);
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    Ok((method, path))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

async fn route(path: &str, instance: &Instance, limits: Limits) -> Response {
    // Q1: the probes answer from the snapshot (refreshed every second and on every status
    // event), never by waiting for the supervisor actor.
    let not_answering = |age: Option<Duration>| match age {
        Some(age) => format!(
            "supervisor not answering (last status {} ms ago)",
            age.as_millis()
        ),
        None => "supervisor not answering yet".to_string(),
    };
    match path {
        // Liveness of the supervisor itself: it answered a status query recently.
        // F8: after a give-up the supervisor lives but nothing will bring the gateway back:
        // 503, so a probe or an orchestrator acts.
        "/healthz" => match instance.snapshot_status(limits.snapshot_stale) {
            Ok(status) => match instance.gave_up.borrow().clone() {
                Some(reason) => Response::json(
                    503,
                    serde_json::json!({"ok": false, "state": status.state, "gaveUp": reason}),
                ),
                None => Response::json(200, serde_json::json!({"ok": true, "state": status.state})),
            },
            Err(age) => Response::json(
                503,
                serde_json::json!({"ok": false, "error": not_answering(age)}),
            ),
        },
        // Readiness of the gateway: running and its subsystems ready (G1/G2).
        "/readyz" => match instance.snapshot_status(limits.snapshot_stale) {
            Ok(status) => {
                let ready = status.state == LifecycleState::Running && status.gateway_ready;
                let body = serde_json::json!({
                    "ready": ready,
                    "state": status.state,
                    "gatewayReady": status.gateway_ready,
                });
                Response::json(if ready { 200 } else { 503 }, body)
            }
            Err(age) => Response::json(
                503,
                serde_json::json!({"ready": false, "error": not_answering(age)}),
            ),
        },
        "/metrics" => match instance.snapshot().await {
            Ok(snapshot) => Response {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: render_metrics(&snapshot, instance),
                allow: false,
            },
            Err(_) => Response::text(503, "supervisor not answering\n"),
        },
        _ => Response::text(404, "not found (try /healthz, /readyz, /metrics)\n"),
    }
}

/// The Prometheus text exposition of a snapshot.
pub fn render_metrics(snapshot: &Snapshot, instance: &Instance) -> String {
    let mut out = String::new();
    let status = &snapshot.status;
    let counters = &snapshot.diagnostics;
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let plain = |value: u64| vec![(String::new(), value)];
    let states = [
        LifecycleState::Stopped,
        LifecycleState::Starting,
        LifecycleState::Running,
        LifecycleState::Reconnecting,
        LifecycleState::Error,
    ];
    let state_samples: Vec<(String, u64)> = states
        .iter()
        .map(|state| {
            (
                format!("{{state=\"{}\"}}", state.as_str()),
                u64::from(*state == status.state),
            )
        })
        .collect();
    metric(
        "gatewarden_state",
        "gauge",
        "Lifecycle state of the gateway (1 for the current state).",
        &state_samples,
    );
    let health_samples: Vec<(String, u64)> = [
        (HealthState::Healthy, "healthy"),
        (HealthState::Degraded, "degraded"),
        (HealthState::Verifying, "verifying"),
        (HealthState::Unresponsive, "unresponsive"),
        (HealthState::ExternalUnavailable, "external_unavailable"),
    ]
    .iter()
    .map(|(state, name)| {
        (
            format!("{{state=\"{name}\"}}"),
            u64::from(*state == snapshot.health.state),
        )
    })
    .collect();
    metric(
        "gatewarden_health",
        "gauge",
        "Health summary of the gateway (1 for the current state).",
        &health_samples,
    );
    metric(
        "gatewarden_gateway_ready",
        "gauge",
        "1 when the gateway reports its subsystems ready.",
        &plain(u64::from(status.gateway_ready)),
    );
    metric(
        "gatewarden_gateway_uptime_seconds",
        "gauge",
        "Seconds since the gateway connection was established (0 when not running).",
        &plain(status.uptime_ms.unwrap_or(0) / 1000),
    );
    metric(
        "gatewarden_supervisor_uptime_seconds",
        "gauge",
        "Seconds since gatewarden started.",
        &plain(instance.machine_now_ms() / 1000),
    );
    metric(
        "gatewarden_restarts_executed_total",
        "counter",
        "Restarts carried out (R3).",
        &plain(counters.restarts_executed),
    );
    metric(
        "gatewarden_restarts_suppressed_total",
        "counter",
        "Restarts refused by the restart governor (R3).",
        &plain(counters.restarts_suppressed),
    );
    metric(
        "gatewarden_reconnect_attempts",
        "gauge",
        "Automatic reconnect attempts since the last reset (N2).",
        &plain(u64::from(status.reconnect_attempts)),
    );
    metric(
        "gatewarden_reconnect_attempts_total",
        "counter",
        "Automatic reconnect attempts (N4).",
        &plain(counters.reconnect_attempts_total),
    );
    metric(
        "gatewarden_reconnect_successes_total",
        "counter",
        "Successful automatic reconnects (N4).",
        &plain(counters.reconnect_successes_total),
    );
    metric(
        "gatewarden_rpc_successes_total",
        "counter",
        "RPCs made through gatewarden that succeeded.",
        &plain(instance.rpc.successes.get()),
    );
    metric("gatewarden_rpc_failures_total", "counter", "RPCs made through gatewarden that failed in transport: timeout, not connected, stopped, send failure (M6).", &plain(instance.rpc.failures.get()));
    metric(
        "gatewarden_rpc_gateway_errors_total",
        "counter",
        "RPCs made through gatewarden that the gateway answered with an error.",
        &plain(instance.rpc.gateway_errors.get()),
    );
    metric(
        "gatewarden_rpc_consecutive_failures",
        "gauge",
        "RPC transport failures since the last success (M6).",
        &plain(u64::from(counters.diagnostics.consecutive_rpc_failures)),
    );
    metric(
        "gatewarden_heartbeat_misses",
        "gauge",
        "Consecutive missed heartbeat pings (H5).",
        &plain(u64::from(counters.diagnostics.consecutive_heartbeat_misses)),
    );
    let recovery = &counters.recovery;
    let liveness_samples: Vec<(String, u64)> = [
        (LivenessClass::Alive, "alive"),
        (LivenessClass::Busy, "busy"),
        (LivenessClass::Frozen, "frozen"),
        (LivenessClass::Dead, "dead"),
    ]
    .iter()
    .map(|(class, name)| {
        (
            format!("{{class=\"{name}\"}}"),
            u64::from(*class == recovery.liveness),
        )
    })
    .collect();
    metric(
        "gatewarden_liveness",
        "gauge",
        "Liveness classification of the gateway (D2; 1 for the current class).",
        &liveness_samples,
    );
    let phase_samples: Vec<(String, u64)> = [
        (RecoveryPhase::Watching, "watching"),
        (RecoveryPhase::Verifying, "verifying"),
        (RecoveryPhase::RestartPending, "restart-pending"),
        (RecoveryPhase::RestartExecuting, "restart-executing"),
    ]
    .iter()
    .map(|(phase, name)| {
        (
            format!("{{phase=\"{name}\"}}"),
            u64::from(*phase == recovery.phase),
        )
    })
    .collect();
    metric(
        "gatewarden_recovery_phase",
        "gauge",
        "What the liveness recovery is doing (D4, D7; 1 for the current phase).",
        &phase_samples,
    );
    let now = instance.machine_now_ms();
    metric(
        "gatewarden_liveness_deadline_seconds",
        "gauge",
        "Seconds until a silent gateway gets its core probe (D4; 0 when not running or due).",
        &plain(
            recovery
                .deadline_at_ms
                .map_or(0, |at| at.saturating_sub(now) / 1000),
        ),
    );
    if let Some(probe) = &recovery.last_probe {
        metric(
            "gatewarden_last_probe_ok",
            "gauge",
            "1 when the last core probe was answered (D4, G2).",
            &plain(u64::from(probe.outcome.answered())),
        );
        metric(
            "gatewarden_last_probe_age_seconds",
            "gauge",
            "Seconds since the last core probe ended.",
            &plain(now.saturating_sub(probe.finished_at_ms) / 1000),
        );
        metric(
            "gatewarden_last_probe_rtt_milliseconds",
            "gauge",
            "Round trip of the last core probe.",
            &plain(probe.finished_at_ms.saturating_sub(probe.sent_at_ms)),
        );
    }
    metric(
        "gatewarden_process_starts_total",
        "counter",
        "Gateway processes spawned.",
        &plain(counters.process_starts),
    );
    metric(
        "gatewarden_process_exits_total",
        "counter",
        "Gateway processes that exited.",
        &plain(counters.process_exits),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_are_parsed_strictly() {
        assert_eq!(
            parse_request_line("GET /readyz?x=1 HTTP/1.1\r\nHost: a"),
            Ok(("GET", "/readyz"))
        );
        assert_eq!(parse_request_line("GET /readyz"), Err(400));
        assert_eq!(parse_request_line("GET / HTTP/2 extra"), Err(400));
        assert_eq!(parse_request_line("GET / SPDY/3"), Err(505));
        assert_eq!(parse_request_line(""), Err(400));
    }
}
