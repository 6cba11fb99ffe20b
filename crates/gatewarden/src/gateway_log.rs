//! Q2: writing the gateway's output into the supervisor's log, at the level the gateway's own line
//! gives ([`gateway_line_level`]) and within the budget of one [`OutputRateLimiter`] shared by
//! stdout, stderr and the slow-reader notices, so that no gateway output can flood the log.
//!
//! The core decides (X3 whether a stderr line is logged at all, Q2 its level and the budget);
//! this only turns the decisions into `tracing` events, under the `gateway` target.

use gatewarden_core::config::StderrConfig;
use gatewarden_core::output_log::{gateway_line_level, Admit, OutputLevel, OutputRateLimiter};
use gatewarden_core::stderr::StderrLevel;

/// The gateway's side of the log.
#[derive(Debug)]
pub(crate) struct GatewayLog {
    limiter: OutputRateLimiter,
}

impl GatewayLog {
    /// A log with the budget of `config` (`stderr.log_lines_per_sec`, `stderr.log_burst`).
    pub(crate) fn new(config: &StderrConfig) -> Self {
        GatewayLog {
            limiter: OutputRateLimiter::new(config.log_lines_per_sec, config.log_burst),
        }
    }

    /// One line the gateway wrote to stdout.
    pub(crate) fn stdout(&mut self, now_ms: u64, line: &str) {
        if self.admit(now_ms) {
            emit(gateway_line_level(line), "", line);
        }
    }

    /// One stderr line X3 decided to log, at X3's `level` (`Debug` stays debug; anything else
    /// gets the gateway's own level).
    pub(crate) fn stderr(&mut self, now_ms: u64, level: StderrLevel, text: &str) {
        if !self.admit(now_ms) {
            return;
        }
        match level {
            StderrLevel::Drop => {}
            StderrLevel::Debug => tracing::debug!(target: "gateway", "[Gateway stderr] {text}"),
            StderrLevel::Warn => emit(gateway_line_level(text), "[Gateway stderr] ", text),
        }
    }

    /// X3's summary of a line repeated `repeats` times.
    pub(crate) fn repeats(&mut self, now_ms: u64, repeats: u64, text: &str) {
        if self.admit(now_ms) {
            tracing::debug!(target: "gateway", "[Gateway stderr] (suppressed {repeats} repeats) {text}");
        }
    }

    /// Output lines the capture had to drop for a slow reader.
    pub(crate) fn dropped(&mut self, now_ms: u64, count: u64) {
        if self.admit(now_ms) {
            tracing::info!(
                target: "gateway",
                dropped = count,
                "gateway output lines dropped (slow reader)"
            );
        }
    }

    /// Reports what the budget held back and has not been reported yet (call when the gateway's
    /// output ends).
    pub(crate) fn flush(&mut self) {
        let suppressed = self.limiter.take_suppressed();
        if suppressed > 0 {
            report_suppressed(suppressed);
        }
    }

    fn admit(&mut self, now_ms: u64) -> bool {
        match self.limiter.admit(now_ms) {
            Admit::Log { suppressed_before } => {
                if suppressed_before > 0 {
                    report_suppressed(suppressed_before);
                }
                true
            }
            Admit::Suppress => false,
        }
    }
}

fn report_suppressed(count: u64) {
    tracing::info!(
        target: "gateway",
        suppressed = count,
        "{count} gateway output lines suppressed (log rate limit, stderr.log_lines_per_sec)"
    );
}

fn emit(level: OutputLevel, prefix: &str, line: &str) {
    match level {
        OutputLevel::Info => tracing::info!(target: "gateway", "{prefix}{line}"),
        OutputLevel::Warn => tracing::warn!(target: "gateway", "{prefix}{line}"),
        OutputLevel::Error => tracing::error!(target: "gateway", "{prefix}{line}"),
    }
}
