//! Log set-up: `tracing-subscriber` with the `RUST_LOG` filter (default `info`), text or JSON,
//! written through the console so log lines stay above the live status area.
//!
//! Secrets never reach a log line: the token is a `Secret` whose `Debug`/`Display` print
//! `[redacted]`, and nothing here formats it.

use std::io::IsTerminal as _;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Install the global subscriber.
pub fn init(format: LogFormat) {
    let (filter, bad_filter) = match EnvFilter::try_from_default_env() {
        Ok(filter) => (filter, None),
        Err(error) => {
            let bad = std::env::var("RUST_LOG")
                .ok()
                .map(|text| (text, error.to_string()));
            (EnvFilter::new("info"), bad)
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(ConsoleWriter);
    let installed = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if installed.is_ok() {
        if let Some((text, error)) = bad_filter {
            // An empty RUST_LOG is common and harmless; only a real typo is worth a warning.
            if !text.trim().is_empty() {
                tracing::warn!("ignoring RUST_LOG={text:?} ({error}); logging at info");
            }
        }
    }
}

/// Hands every formatted record to the console in one piece.
struct ConsoleWriter;

impl<'a> MakeWriter<'a> for ConsoleWriter {
    type Writer = LogRecord;

    fn make_writer(&'a self) -> Self::Writer {
        LogRecord(Vec::with_capacity(256))
    }
}

/// One record, buffered until it is complete (the formatter writes it in pieces).
struct LogRecord(Vec<u8>);

impl std::io::Write for LogRecord {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogRecord {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            crate::console::write_log(&self.0);
        }
    }
}
