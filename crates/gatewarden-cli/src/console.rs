//! The terminal: log lines scroll above a small status area that is redrawn in place.
//!
//! Log lines go to stderr, the status area to stdout, and only when stdout is a terminal. Both go
//! through one lock so a log line never lands in the middle of the area: erase the area, write the
//! line, draw the area again. The lock is held only for those writes, never across an `.await`.

use std::io::{IsTerminal as _, Write as _};
use std::sync::{Mutex, OnceLock};

use gatewarden_core::health::HealthSummary;
use gatewarden_core::machine::LifecycleState;

use crate::instance::Snapshot;

/// The process-wide console (logs and the status area share the terminal).
static CONSOLE: OnceLock<Mutex<Area>> = OnceLock::new();

/// What is drawn now.
#[derive(Default)]
struct Area {
    /// The status area is in use (stdout is a terminal and `run` asked for it).
    live: bool,
    /// The lines on screen, bottom of the terminal.
    lines: Vec<String>,
}

fn console() -> &'static Mutex<Area> {
    CONSOLE.get_or_init(|| Mutex::new(Area::default()))
}

fn with_area<R>(action: impl FnOnce(&mut Area) -> R) -> R {
    // A panic while holding the lock leaves a consistent enough area: keep going.
    let mut area = console()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    action(&mut area)
}

/// Use the live status area if stdout is a terminal; true when it is on.
pub fn enable_live_area() -> bool {
    let live = std::io::stdout().is_terminal();
    with_area(|area| area.live = live);
    live
}

/// Write one log record (already formatted, ending in a newline).
pub fn write_log(record: &[u8]) {
    with_area(|area| {
        let mut stdout = std::io::stdout().lock();
        erase(area, &mut stdout);
        let mut stderr = std::io::stderr().lock();
        let _ = stderr.write_all(record);
        let _ = stderr.flush();
        draw(area, &mut stdout);
    });
}

/// Replace the status area.
pub fn show(lines: Vec<String>) {
    with_area(|area| {
        if !area.live || area.lines == lines {
            return;
        }
        let mut stdout = std::io::stdout().lock();
        erase(area, &mut stdout);
        area.lines = lines;
        draw(area, &mut stdout);
    });
}

/// Remove the status area for good (at exit, and before printing a fatal error).
pub fn clear_status_area() {
    if let Some(console) = CONSOLE.get() {
        let mut area = console
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut stdout = std::io::stdout().lock();
        erase(&area, &mut stdout);
        area.lines.clear();
        area.live = false;
    }
}

fn erase(area: &Area, out: &mut impl std::io::Write) {
    if area.live && !area.lines.is_empty() {
        // Up to the first line of the area, then clear to the end of the screen.
        let _ = write!(out, "\r\x1b[{}A\x1b[J", area.lines.len());
        let _ = out.flush();
    }
}

fn draw(area: &Area, out: &mut impl std::io::Write) {
    if !area.live || area.lines.is_empty() {
        return;
    }
    // Auto-wrap off while drawing: a line wider than the terminal is cut instead of wrapping,
    // which would make the area taller than the number of lines erased next time.
    let _ = write!(out, "\x1b[?7l");
    for line in &area.lines {
        let _ = writeln!(out, "{line}\x1b[K");
    }
    let _ = write!(out, "\x1b[?7h");
    let _ = out.flush();
}

/// The status area's lines for a snapshot.
pub fn render(snapshot: &Snapshot, header: &str, machine_now_ms: u64) -> Vec<String> {
    let status = &snapshot.status;
    let diagnostics = &snapshot.diagnostics.diagnostics;
    let state_colour = match status.state {
        LifecycleState::Running => "\x1b[32m",
        LifecycleState::Starting | LifecycleState::Reconnecting => "\x1b[33m",
        LifecycleState::Error => "\x1b[31m",
        LifecycleState::Stopped => "\x1b[2m",
    };
    let optional = |value: Option<String>| value.unwrap_or_else(|| "-".into());
    let ago = |at: u64| format!("{} ago", human_duration(machine_now_ms.saturating_sub(at)));
    let last_rpc = match (
        diagnostics.last_rpc_success_at,
        diagnostics.last_rpc_failure_at,
    ) {
        (None, None) => "none".to_string(),
        (Some(ok), None) => format!("ok {}", ago(ok)),
        (Some(ok), Some(failed)) if ok >= failed => format!("ok {}", ago(ok)),
        (_, Some(failed)) => format!(
            "failed ({}) {}",
            diagnostics
                .last_rpc_failure_method
                .as_deref()
                .unwrap_or("?"),
            ago(failed)
        ),
    };
    let mut lines = vec![
        format!("\x1b[1m── gatewarden\x1b[0m {header}"),
        format!(
            "   state {state_colour}{:<12}\x1b[0m pid {:<8} uptime {:<10} ready {}",
            status.state.as_str(),
            optional(status.pid.map(|pid| pid.to_string())),
            optional(status.uptime_ms.map(human_duration)),
            if status.gateway_ready { "yes" } else { "no" }
        ),
        format!(
            "   gateway {} · protocol {} · reconnect attempts {}{}",
            optional(status.version.clone()),
            optional(status.protocol.map(|protocol| protocol.to_string())),
            status.reconnect_attempts,
            if status.external { " · external" } else { "" }
        ),
        format!(
            "   last rpc {last_rpc} · heartbeat misses {} · health {}",
            diagnostics.consecutive_heartbeat_misses,
            health_text(&snapshot.health),
        ),
    ];
    let recovery = &snapshot.diagnostics.recovery;
    let name = |value: serde_json::Result<serde_json::Value>| {
        value
            .ok()
            .and_then(|value| value.as_str().map(String::from))
            .unwrap_or_default()
    };
    let probe = recovery
        .last_probe
        .as_ref()
        .map_or("none".to_string(), |probe| {
            let result = if probe.outcome.answered() {
                "answered"
            } else {
                "failed"
            };
            format!(
                "{result} in {} ms",
                probe.finished_at_ms.saturating_sub(probe.sent_at_ms)
            )
        });
    lines.push(format!(
        "   liveness {} · recovery {} · last probe {probe}",
        name(serde_json::to_value(recovery.liveness)),
        name(serde_json::to_value(recovery.phase)),
    ));
    if let Some(error) = &status.error {
        lines.push(format!("   \x1b[31merror\x1b[0m {error}"));
    }
    lines
}

/// The health state with its reasons, as `status --json` spells them: `healthy`,
/// `degraded (busy, rpc_timeout)`.
pub fn health_text(health: &HealthSummary) -> String {
    let word = |value: serde_json::Result<serde_json::Value>| {
        value
            .ok()
            .and_then(|value| value.as_str().map(String::from))
            .unwrap_or_default()
    };
    let state = word(serde_json::to_value(health.state));
    if health.reasons.is_empty() {
        return state;
    }
    let reasons: Vec<String> = health
        .reasons
        .iter()
        .map(|reason| word(serde_json::to_value(reason)))
        .collect();
    format!("{state} ({})", reasons.join(", "))
}

/// `1h 02m`, `3m 05s`, `12s`, `450ms`.
pub fn human_duration(ms: u64) -> String {
    let seconds = ms / 1000;
    match seconds {
        0 => format!("{ms}ms"),
        1..=59 => format!("{seconds}s"),
        60..=3599 => format!("{}m {:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h {:02}m", seconds / 3600, (seconds % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_a_person_writes_them() {
        assert_eq!(human_duration(450), "450ms");
        assert_eq!(human_duration(12_300), "12s");
        assert_eq!(human_duration(185_000), "3m 05s");
        assert_eq!(human_duration(3_720_000), "1h 02m");
    }
}
