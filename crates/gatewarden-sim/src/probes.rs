//! The unauthenticated HTTP probes (`/healthz`, `/startupz`, `/readyz` and aliases) as a pure function.

use serde_json::json;

/// Where the current boot is, as the probes see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Inside the startup window: sidecars have not settled.
    Starting,
    /// Serving normally.
    Started,
    /// A stop or restart is draining.
    Draining,
}

/// Inputs of a probe answer.
#[derive(Debug, Clone, Copy)]
pub struct ProbeView<'a> {
    /// Current phase.
    pub phase: Phase,
    /// Server version string.
    pub version: &'a str,
    /// Milliseconds since this boot started listening (resets on an in-process restart).
    pub boot_uptime_ms: u64,
}

/// An HTTP answer: status code, body, content type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResponse {
    /// HTTP status code.
    pub status: u16,
    /// Response body (empty for HEAD is handled by the writer).
    pub body: String,
    /// `Content-Type` header value.
    pub content_type: &'static str,
}

impl ProbeResponse {
    fn json(status: u16, body: serde_json::Value) -> Self {
        ProbeResponse {
            status,
            body: body.to_string(),
            content_type: "application/json; charset=utf-8",
        }
    }

    fn text(status: u16, body: &str) -> Self {
        ProbeResponse {
            status,
            body: body.to_string(),
            content_type: "text/plain; charset=utf-8",
        }
    }
}

/// Answers a plain (non-upgrade) HTTP request.
pub fn respond(method: &str, target: &str, view: &ProbeView<'_>) -> ProbeResponse {
    let path = target.split(['?', '#']).next().unwrap_or("/");
    let known = matches!(
        path,
        "/healthz" | "/health" | "/startupz" | "/startup" | "/readyz" | "/ready"
    );
    if !known {
        return ProbeResponse::text(404, "Not Found");
    }
    if method != "GET" && method != "HEAD" {
        return ProbeResponse::text(405, "Method Not Allowed");
    }
    let uptime_ms = view.boot_uptime_ms;
    match (path, view.phase) {
        ("/healthz" | "/health", _) => {
            ProbeResponse::json(200, json!({"ok": true, "status": "live"}))
        }
        ("/startupz" | "/startup", Phase::Started) => ProbeResponse::json(
            200,
            json!({"ok": true, "status": "started", "version": view.version, "uptimeMs": uptime_ms}),
        ),
        ("/startupz" | "/startup", Phase::Starting) => ProbeResponse::json(
            503,
            json!({"ok": false, "status": "starting", "version": view.version, "uptimeMs": uptime_ms,
                   "pendingReason": "startup-sidecars"}),
        ),
        ("/startupz" | "/startup", Phase::Draining) => ProbeResponse::json(
            503,
            json!({"ok": false, "status": "draining", "version": view.version, "uptimeMs": uptime_ms}),
        ),
        (_, Phase::Started) => ProbeResponse::json(
            200,
            json!({"ready": true, "failing": [], "uptimeMs": uptime_ms,
                   "eventLoop": {"delayMs": 0, "utilization": 0.0}}),
        ),
        (_, Phase::Starting) => ProbeResponse::json(
            503,
            json!({"ready": false, "failing": ["startup-sidecars"], "uptimeMs": uptime_ms}),
        ),
        (_, Phase::Draining) => ProbeResponse::json(
            503,
            json!({"ready": false, "failing": ["draining"], "uptimeMs": uptime_ms}),
        ),
    }
}

/// Serializes a full HTTP/1.1 response; the connection is closed after it, so no keep-alive bookkeeping.
pub fn render(method: &str, response: &ProbeResponse) -> Vec<u8> {
    let reason = match response.status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Bad Request",
    };
    let allow = if response.status == 405 {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let mut out = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n{allow}Connection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        out.extend_from_slice(response.body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(phase: Phase) -> ProbeView<'static> {
        ProbeView {
            phase,
            version: "v",
            boot_uptime_ms: 5,
        }
    }

    #[test]
    fn startupz_is_503_while_starting_and_draining_and_200_when_started() {
        assert_eq!(
            respond("GET", "/startupz", &view(Phase::Starting)).status,
            503
        );
        assert_eq!(
            respond("GET", "/startup", &view(Phase::Draining)).status,
            503
        );
        assert_eq!(
            respond("GET", "/startupz?x=1", &view(Phase::Started)).status,
            200
        );
    }

    #[test]
    fn healthz_is_live_even_while_draining_and_post_is_405() {
        assert_eq!(
            respond("GET", "/healthz", &view(Phase::Draining)).body,
            r#"{"ok":true,"status":"live"}"#
        );
        assert_eq!(
            respond("POST", "/healthz", &view(Phase::Started)).status,
            405
        );
    }
}
