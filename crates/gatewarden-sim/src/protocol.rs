//! Wire constants and frame builders of the gateway protocol (OPENCLAW.md sections 3 to 7).

use serde_json::{json, Value};

/// Protocol version spoken by current gateways.
pub const CURRENT_PROTOCOL: u32 = 4;
/// Oldest protocol a probe client may use; reported in PROTOCOL_MISMATCH details.
pub const MINIMUM_PROBE_PROTOCOL: u32 = 3;
/// Largest first frame accepted before the handshake completes (`MAX_PREAUTH_PAYLOAD_BYTES`).
pub const MAX_PREAUTH_PAYLOAD_BYTES: usize = 64 * 1024;
/// Largest frame after the handshake, advertised as `policy.maxPayload`.
pub const MAX_PAYLOAD_BYTES: usize = 26_214_400;
/// Send-buffer budget advertised as `policy.maxBufferedBytes`.
pub const MAX_BUFFERED_BYTES: usize = 52_428_800;
/// Allowed clock skew for `device.signedAt` (`DEVICE_SIGNATURE_SKEW_MS`).
pub const DEVICE_SIGNATURE_SKEW_MS: i64 = 120_000;
/// Delay between the `shutdown` event and the 1012 close, as observed on the real gateway.
pub const SHUTDOWN_EVENT_LEAD_MS: u64 = 10;

/// WebSocket close codes the gateway uses (section 6).
pub mod close {
    /// Protocol mismatch.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// Invalid UTF-8 in a text frame.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// Policy: auth, invalid handshake or params.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// Frame too large.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// Restart and terminal shutdown alike.
    pub const SERVICE_RESTART: u16 = 1012;
    /// Startup sidecars not settled yet.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// Top-level `error.code` values.
pub mod code {
    /// Malformed request, unknown method, handshake and auth failures.
    pub const INVALID_REQUEST: &str = "INVALID_REQUEST";
    /// Missing scope.
    pub const FORBIDDEN: &str = "FORBIDDEN";
    /// Temporarily unable to serve (startup window).
    pub const UNAVAILABLE: &str = "UNAVAILABLE";
}

/// An `error` object of a `res` frame.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// Top-level code (`INVALID_REQUEST`, `FORBIDDEN`, `UNAVAILABLE`).
    pub code: &'static str,
    /// Human text; clients must branch on codes, not on this.
    pub message: String,
    /// Structured details, usually with their own `code`.
    pub details: Option<Value>,
    /// Whether retrying may succeed.
    pub retryable: Option<bool>,
    /// Suggested wait before retrying.
    pub retry_after_ms: Option<u64>,
}

impl RpcError {
    /// An error without details.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
            details: None,
            retryable: None,
            retry_after_ms: None,
        }
    }

    /// Adds a `details` object.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// The unknown-method answer (note: `shutdown` is unknown on the real gateway too).
    pub fn unknown_method(method: &str) -> Self {
        RpcError::new(code::INVALID_REQUEST, format!("unknown method: {method}"))
    }

    /// The missing-scope answer.
    pub fn missing_scope(missing: &str, required: &[&str]) -> Self {
        RpcError::new(code::FORBIDDEN, format!("missing scope: {missing}")).with_details(
            json!({"code": "MISSING_SCOPE", "missingScope": missing, "requiredScopes": required}),
        )
    }

    fn to_value(&self) -> Value {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(details) = &self.details {
            error["details"] = details.clone();
        }
        if let Some(retryable) = self.retryable {
            error["retryable"] = json!(retryable);
        }
        if let Some(retry_after_ms) = self.retry_after_ms {
            error["retryAfterMs"] = json!(retry_after_ms);
        }
        error
    }
}

/// `{"type":"res","id":..,"ok":true,"payload":..}`.
pub fn response_ok(id: &Value, payload: &Value) -> String {
    json!({"type": "res", "id": id, "ok": true, "payload": payload}).to_string()
}

/// `{"type":"res","id":..,"ok":true,"payload":<raw>}` without re-serializing the payload (echo hot path).
pub fn response_ok_raw(raw_id: &str, raw_payload: &str) -> String {
    let mut frame = String::with_capacity(raw_id.len() + raw_payload.len() + 48);
    frame.push_str(r#"{"type":"res","id":"#);
    frame.push_str(raw_id);
    frame.push_str(r#","ok":true,"payload":"#);
    frame.push_str(raw_payload);
    frame.push('}');
    frame
}

/// `{"type":"res","id":..,"ok":false,"error":{..}}`.
pub fn response_error(id: &Value, error: &RpcError) -> String {
    json!({"type": "res", "id": id, "ok": false, "error": error.to_value()}).to_string()
}

/// An event frame with a per-connection `seq`.
pub fn event(name: &str, payload: &Value, seq: u64) -> String {
    json!({"type": "event", "event": name, "payload": payload, "seq": seq}).to_string()
}

/// The first frame of every connection; it carries no `seq`.
pub fn challenge(nonce: &str, ts_ms: i64) -> String {
    json!({
        "type": "event",
        "event": "connect.challenge",
        "payload": {"nonce": nonce, "ts": ts_ms, "capabilities": ["model-catalog-snapshot"]},
    })
    .to_string()
}

/// RPC methods this gateway answers (advertised in `hello-ok.features.methods`).
pub const METHODS: &[&str] = &[
    "health",
    "status",
    "system-presence",
    "echo",
    "sleep",
    "gateway.restart.request",
    "gateway.restart.preflight",
    "sim.fault",
];

/// Events this gateway may send (advertised in `hello-ok.features.events`).
pub const EVENTS: &[&str] = &[
    "connect.challenge",
    "tick",
    "health",
    "shutdown",
    "gateway.ready",
    "sim.oversize",
    "sim.deep",
    "sim.flood",
];

/// The `health` RPC result and `health` event payload.
pub fn health_payload(now_ms: i64) -> Value {
    json!({
        "ok": true,
        "ts": now_ms,
        "durationMs": 0,
        "plugins": {"loaded": 0, "failed": []},
        "configReload": {"hotReloadStatus": "idle"},
        "channels": {},
        "agents": [],
        "sessions": {"count": 0},
        "modelRuntime": {"status": "idle"},
        "eventLoop": {"delayMs": 0, "utilization": 0.0},
    })
}

/// The `system-presence` result: the gateway's own presence row and nothing else (connections
/// of operator clients do not add rows on the real 2026.9.6 gateway either; nodes would). The real
/// row's `ip` is the primary LAN IPv4 when there is one and the host name otherwise; the
/// simulator always uses the host name (it binds loopback only). `modelIdentifier` is absent on
/// Linux, as on the real gateway.
pub fn system_presence_payload(version: &str, instance_id: &str, now_ms: i64) -> Value {
    let (host, release) = host_and_release();
    let ip = host.clone();
    json!([{
        "host": host,
        "ip": ip,
        "version": version,
        "platform": format!("linux {release}"),
        "deviceFamily": "Linux",
        "mode": "gateway",
        "reason": "self",
        "instanceId": instance_id,
        "text": format!("Gateway: {host} ({ip}) · app {version} · mode gateway · reason self"),
        "ts": now_ms,
    }])
}

/// The host name and kernel release (`uname`), as Node's `os.hostname()` and `os.release()`.
fn host_and_release() -> (String, String) {
    // SAFETY: uname fills a caller-owned struct; an all-zero utsname is a valid initial value.
    let mut name: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is a valid, writable utsname.
    if unsafe { libc::uname(&mut name) } != 0 {
        return ("localhost".to_string(), "unknown".to_string());
    }
    let field = |chars: &[libc::c_char]| {
        let bytes: Vec<u8> = chars
            .iter()
            .take_while(|byte| **byte != 0)
            .map(|byte| *byte as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    (field(&name.nodename), field(&name.release))
}

/// Required scope of each scoped method: `status`, `system-presence` and `gateway.restart.preflight` need read,
/// `gateway.restart.request` needs admin (admin satisfies read). `sim.fault` is deliberately unscoped so
/// a test can inject faults from any connection.
pub fn required_scope(method: &str) -> Option<&'static str> {
    match method {
        "status" | "system-presence" | "gateway.restart.preflight" => Some("operator.read"),
        "gateway.restart.request" => Some("operator.admin"),
        _ => None,
    }
}

/// Whether `granted` satisfies `required` (`operator.admin` satisfies every operator scope).
pub fn scope_satisfied(granted: &[String], required: &str) -> bool {
    granted
        .iter()
        .any(|scope| scope == required || scope == "operator.admin")
}
