//! Q2: how the gateway's own output reaches the supervisor's log.
//!
//! Two decisions, both pure so they run on virtual time in tests:
//!
//! - [`gateway_line_level`]: the level of a line worth logging (X3 keeps deciding *whether* a
//!   line is logged). Normal output ("listening on …") is INFO; WARN or ERROR only where the
//!   gateway's own line says so (a level field or tag, a `Warning:`/`Error:` prefix, an uncaught
//!   exception), so an operator's WARN filter sees the gateway's warnings, not its chatter.
//! - [`OutputRateLimiter`]: a token bucket over all logged output lines. A gateway printing
//!   distinct lines as fast as it can (650 MB of log in 35 s, before) costs at most
//!   `log_burst` lines at once and `log_lines_per_sec` after that; what was held back is counted
//!   and reported with the next line that passes ("N lines suppressed").

use serde::{Deserialize, Serialize};

/// The log level of one gateway output line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputLevel {
    /// Ordinary output.
    Info,
    /// The gateway says it is a warning.
    Warn,
    /// The gateway says it is an error (or it is an uncaught exception).
    Error,
}

/// Q2: the level a line is logged at, from what the line itself says.
///
/// | level | the lower-cased line |
/// |---|---|
/// | error | has a level field or tag `error`/`fatal` (`"level":"error"`, `level=error`, `[error]`, `[fatal]`), starts with `error`, `fatal`, `uncaught` or a JavaScript error name (`TypeError:`, `RangeError:`, ...), or contains `uncaught exception` / `unhandled rejection` |
/// | warn | has a level field or tag `warn`/`warning`, starts with `warn`, or contains `warning:` (Node's `(node:123) Warning:`) |
/// | info | anything else |
pub fn gateway_line_level(line: &str) -> OutputLevel {
    let lower = line.trim().to_ascii_lowercase();
    let tagged = |level: &str| {
        lower.contains(&format!("\"level\":\"{level}"))
            || lower.contains(&format!("\"level\": \"{level}"))
            || lower.contains(&format!("level={level}"))
            || lower.contains(&format!("[{level}]"))
    };
    let error_names = [
        "error",
        "fatal",
        "uncaught",
        "typeerror:",
        "rangeerror:",
        "referenceerror:",
        "syntaxerror:",
    ];
    if tagged("error")
        || tagged("fatal")
        || error_names.iter().any(|name| lower.starts_with(name))
        || lower.contains("uncaught exception")
        || lower.contains("unhandled rejection")
    {
        return OutputLevel::Error;
    }
    if tagged("warn") || lower.starts_with("warn") || lower.contains("warning:") {
        return OutputLevel::Warn;
    }
    OutputLevel::Info
}

/// What to do with one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Log it; first report that many lines were suppressed before it (when non-zero).
    Log {
        /// Lines held back since the last logged one.
        suppressed_before: u64,
    },
    /// Over budget: do not log it (it is counted).
    Suppress,
}

/// Q2: a token bucket over logged gateway output lines (see the module documentation).
#[derive(Debug, Clone)]
pub struct OutputRateLimiter {
    /// Refill per second, in lines.
    rate: u64,
    /// Bucket size, in thousandths of a line.
    capacity_milli: u64,
    tokens_milli: u64,
    last_ms: Option<u64>,
    suppressed: u64,
}

impl OutputRateLimiter {
    /// `lines_per_sec` sustained, `burst` at once (`stderr.log_lines_per_sec`,
    /// `stderr.log_burst`). A zero rate never refills: only the burst is ever logged.
    pub fn new(lines_per_sec: u32, burst: u32) -> Self {
        let capacity_milli = u64::from(burst.max(1)) * 1000;
        OutputRateLimiter {
            rate: u64::from(lines_per_sec),
            capacity_milli,
            tokens_milli: capacity_milli,
            last_ms: None,
            suppressed: 0,
        }
    }

    /// Decide about one line seen at `now_ms` (monotonic milliseconds).
    pub fn admit(&mut self, now_ms: u64) -> Admit {
        if let Some(last) = self.last_ms {
            let elapsed = now_ms.saturating_sub(last);
            // rate lines per second = rate thousandths of a line per millisecond.
            self.tokens_milli = self
                .tokens_milli
                .saturating_add(elapsed.saturating_mul(self.rate))
                .min(self.capacity_milli);
        }
        self.last_ms = Some(now_ms.max(self.last_ms.unwrap_or(0)));
        if self.tokens_milli >= 1000 {
            self.tokens_milli -= 1000;
            Admit::Log {
                suppressed_before: std::mem::take(&mut self.suppressed),
            }
        } else {
            self.suppressed = self.suppressed.saturating_add(1);
            Admit::Suppress
        }
    }

    /// Lines suppressed and not reported yet (to report them when the stream ends).
    pub fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q2_ordinary_output_is_info_and_the_gateways_own_levels_are_kept() {
        for line in [
            "[gateway] listening on ws://127.0.0.1:18789",
            "{\"level\":\"info\",\"msg\":\"ready\"}",
            "config hot reload applied",
            "0 errors found",
        ] {
            assert_eq!(gateway_line_level(line), OutputLevel::Info, "{line}");
        }
        for line in [
            "(node:42) Warning: something is deprecated",
            "[warn] slow consumer",
            "{\"level\":\"warn\",\"msg\":\"x\"}",
            "WARNING low disk",
            "level=warn msg=x",
        ] {
            assert_eq!(gateway_line_level(line), OutputLevel::Warn, "{line}");
        }
        for line in [
            "Error: listen EADDRINUSE",
            "TypeError: x is not a function",
            "{\"level\":\"error\",\"msg\":\"boom\"}",
            "[gateway] [error] startup failed",
            "Uncaught exception in worker",
            "level=fatal msg=x",
        ] {
            assert_eq!(gateway_line_level(line), OutputLevel::Error, "{line}");
        }
    }

    #[test]
    fn q2_a_flood_is_cut_to_the_budget_and_the_rest_counted() {
        let mut limiter = OutputRateLimiter::new(10, 5);
        // 1000 lines in the same millisecond: the burst passes, the rest is counted.
        let logged = (0..1000)
            .filter(|_| matches!(limiter.admit(0), Admit::Log { .. }))
            .count();
        assert_eq!(logged, 5);
        // 100 ms later one token is back; the line that passes reports the 995 before it.
        assert_eq!(
            limiter.admit(100),
            Admit::Log {
                suppressed_before: 995
            }
        );
        assert_eq!(limiter.admit(100), Admit::Suppress);
        // Over 10 s of a continuous flood (one line per ms), about rate × time lines pass.
        let mut passed = 0;
        for ms in 101..10_101 {
            if matches!(limiter.admit(ms), Admit::Log { .. }) {
                passed += 1;
            }
        }
        assert!((99..=101).contains(&passed), "{passed}");
        // The flood's last line passed (at 10 100 ms); the next one in the same millisecond is
        // held back, and is what a final flush reports.
        assert_eq!(limiter.admit(10_100), Admit::Suppress);
        assert_eq!(limiter.take_suppressed(), 1);
        assert_eq!(limiter.take_suppressed(), 0);
    }

    #[test]
    fn q2_a_quiet_gateway_is_never_limited() {
        let mut limiter = OutputRateLimiter::new(10, 5);
        for second in 0..100 {
            assert_eq!(
                limiter.admit(second * 1000),
                Admit::Log {
                    suppressed_before: 0
                }
            );
        }
    }
}
