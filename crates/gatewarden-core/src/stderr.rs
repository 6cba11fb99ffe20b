//! Gateway stderr handling: classify each line, log each distinct line once, keep the startup tail (X3).
//!
//! Three pieces, all per process (the caller makes fresh ones at every spawn):
//! [`classify_stderr_line`] decides the log level of one line, [`StderrDeduper`] turns a stream of
//! classified lines into log actions with bounded memory, and [`StartupStderrBuffer`] keeps the
//! last lines of a start attempt for the recovery choice (L7).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::{StartConfig, StderrConfig};

/// The longest stored or logged line, in bytes. A gateway printing a multi-megabyte line (a
/// dumped buffer, a minified stack) must not make the supervisor hold megabytes per remembered
/// line; 4 KiB keeps every real diagnostic line whole.
pub const MAX_STDERR_LINE_BYTES: usize = 4 * 1024;

/// Appended to a line cut at [`MAX_STDERR_LINE_BYTES`], so readers know text is missing.
pub const TRUNCATION_MARKER: &str = " [truncated]";

/// How a stderr line is logged (X3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StderrLevel {
    /// Known noise: not logged at all.
    Drop,
    /// Known, harmless: logged at debug level.
    Debug,
    /// Anything else: logged as a warning.
    Warn,
}

/// A stderr line with its level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassifiedLine {
    /// The level the line is logged at.
    pub level: StderrLevel,
    /// The line with ANSI escape sequences removed, trimmed, and capped at
    /// [`MAX_STDERR_LINE_BYTES`]. Dedup compares this text.
    pub normalized: String,
}

/// X3: classify one stderr line.
///
/// Matching is case-insensitive substring matching on the normalized line (no regex needed).
/// The patterns, checked in this order:
///
/// | level | the lower-cased line contains |
/// |---|---|
/// | drop | nothing (blank after trimming and ANSI stripping) |
/// | drop | a token mismatch (`token mismatch` or `token_mismatch`) together with `control ui`, `control-ui` or `controlui` |
/// | drop | `closed before connect` together with a token mismatch |
/// | debug | `closed before connect` together with `1005` |
/// | debug | `dangerous` together with `flag` (the dangerous-config-flags warning) |
/// | debug | `experimentalwarning` |
/// | debug | `deprecationwarning` |
/// | debug | `debugger attached` |
/// | debug | `config warnings:` |
/// | debug | `startup trace:` (the gateway's `OPENCLAW_GATEWAY_STARTUP_TRACE` timings) |
/// | debug | `node_options` together with `not allowed` and `--require` |
/// | warn | anything else |
pub fn classify_stderr_line(line: &str) -> ClassifiedLine {
    let normalized = normalize_stderr_line(line);
    let level = classify_normalized(&normalized.to_ascii_lowercase());
    ClassifiedLine { level, normalized }
}

fn classify_normalized(lower: &str) -> StderrLevel {
    if lower.is_empty() {
        return StderrLevel::Drop;
    }
    let token_mismatch = lower.contains("token mismatch") || lower.contains("token_mismatch");
    let control_ui = ["control ui", "control-ui", "controlui"]
        .iter()
        .any(|needle| lower.contains(needle));
    let closed_before_connect = lower.contains("closed before connect");
    if token_mismatch && (control_ui || closed_before_connect) {
        return StderrLevel::Drop;
    }
    let debug = (closed_before_connect && lower.contains("1005"))
        || (lower.contains("dangerous") && lower.contains("flag"))
        || lower.contains("experimentalwarning")
        || lower.contains("deprecationwarning")
        || lower.contains("debugger attached")
        || lower.contains("config warnings:")
        || lower.contains("startup trace:")
        || (lower.contains("node_options")
            && lower.contains("not allowed")
            && lower.contains("--require"));
    if debug {
        StderrLevel::Debug
    } else {
        StderrLevel::Warn
    }
}

/// Strip ANSI escape sequences, trim, and cap the length of one line.
pub fn normalize_stderr_line(line: &str) -> String {
    let stripped = strip_ansi(line);
    let trimmed = stripped.trim();
    if trimmed.len() <= MAX_STDERR_LINE_BYTES {
        return trimmed.to_string();
    }
    let mut cut = MAX_STDERR_LINE_BYTES;
    while !trimmed.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut capped = String::with_capacity(cut + TRUNCATION_MARKER.len());
    capped.push_str(&trimmed[..cut]);
    capped.push_str(TRUNCATION_MARKER);
    capped
}

/// Remove ANSI escape sequences: CSI (`ESC [ … final`), OSC (`ESC ] … BEL` or `ESC ] … ESC \`),
/// and two-character escapes (`ESC x`). Node colours its warnings with CSI sequences; the others
/// are removed so a terminal title or hyperlink cannot leak control bytes into the log.
fn strip_ansi(line: &str) -> String {
    const ESC: char = '\u{1b}';
    const BEL: char = '\u{7}';
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c != ESC {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('[') => {
                // Parameter and intermediate bytes, then one final byte in @..=~.
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => {
                while let Some(c) = chars.next() {
                    if c == BEL {
                        break;
                    }
                    if c == ESC && chars.peek() == Some(&'\\') {
                        chars.next();
                        break;
                    }
                }
            }
            // A lone ESC at the end, or a two-character escape: drop both.
            _ => {}
        }
    }
    out
}

/// One phase of the gateway's startup trace (`OPENCLAW_GATEWAY_STARTUP_TRACE=1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartupPhase {
    /// The phase's name (`config.load`, `entry.imports`, ...).
    pub name: String,
    /// How long it took, in whole milliseconds.
    pub duration_ms: u64,
}

/// Read one startup-trace line: `… startup trace: <phase> <duration>ms total=… …` (OPENCLAW.md
/// §12). Lines of the trace without a duration (metrics only) and anything else give `None`.
pub fn parse_startup_trace(line: &str) -> Option<StartupPhase> {
    const MARKER: &str = "startup trace: ";
    let at = line.find(MARKER)?;
    let mut words = line[at + MARKER.len()..].split_whitespace();
    let name = words.next()?;
    let duration = words.next()?.strip_suffix("ms")?;
    let duration: f64 = duration.parse().ok()?;
    if !duration.is_finite() || duration < 0.0 || name.is_empty() {
        return None;
    }
    // Saturating float-to-int: a absurd value cannot wrap.
    let duration_ms = duration.round() as u64;
    Some(StartupPhase {
        name: name
            .trim_matches(|c: char| c == '"' || c == ',')
            .to_string(),
        duration_ms,
    })
}

/// What to do with one observed stderr line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StderrAction {
    /// A dropped line: nothing to log.
    Ignore,
    /// First time this line was seen from this process: log it at `level`.
    Log {
        /// Debug or Warn.
        level: StderrLevel,
        /// The normalized line.
        text: String,
    },
    /// A repeat at a summary point: log "(suppressed N repeats) text" at `level` (always Debug,
    /// as the seed does: the first occurrence was already logged at its own level).
    Summarize {
        /// Always [`StderrLevel::Debug`].
        level: StderrLevel,
        /// The normalized line.
        text: String,
        /// Occurrences so far, the first included (the seed's count).
        repeats: u64,
    },
    /// A repeat between summary points: log nothing.
    Suppress,
}

/// X3 dedup of one process's stderr: each distinct line is logged once, then summarised at every
/// `repeat_summary_every`-th occurrence.
///
/// At most `dedup_capacity` distinct lines are remembered; the oldest remembered line is forgotten
/// first, so a flood of distinct lines costs bounded memory (at worst a forgotten line is logged
/// once more when it comes back).
#[derive(Debug, Clone)]
pub struct StderrDeduper {
    capacity: usize,
    summary_every: u64,
    /// Occurrences per remembered line. `Arc<str>` so the map and the eviction queue share one
    /// copy of each line.
    counts: HashMap<Arc<str>, u64>,
    /// Remembered lines, oldest first.
    order: VecDeque<Arc<str>>,
}

impl StderrDeduper {
    /// An empty deduper for a new process.
    pub fn new(config: &StderrConfig) -> Self {
        StderrDeduper {
            capacity: config.dedup_capacity,
            summary_every: config.repeat_summary_every,
            counts: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Record one classified line and say how to log it.
    pub fn observe(&mut self, classified: &ClassifiedLine) -> StderrAction {
        if classified.level == StderrLevel::Drop {
            return StderrAction::Ignore;
        }
        let text = classified.normalized.as_str();
        let count = match self.counts.get_mut(text) {
            Some(count) => {
                *count = count.saturating_add(1);
                *count
            }
            None => {
                self.remember(text);
                1
            }
        };
        if count == 1 {
            StderrAction::Log {
                level: classified.level,
                text: classified.normalized.clone(),
            }
        } else if self.summary_every > 0 && count % self.summary_every == 0 {
            StderrAction::Summarize {
                level: StderrLevel::Debug,
                text: classified.normalized.clone(),
                repeats: count,
            }
        } else {
            StderrAction::Suppress
        }
    }

    /// Distinct lines currently remembered (never more than the capacity).
    pub fn remembered(&self) -> usize {
        self.counts.len()
    }

    fn remember(&mut self, text: &str) {
        if self.capacity == 0 {
            return;
        }
        while self.order.len() >= self.capacity {
            match self.order.pop_front() {
                Some(oldest) => {
                    self.counts.remove(&oldest);
                }
                None => break,
            }
        }
        let line: Arc<str> = Arc::from(text);
        self.counts.insert(Arc::clone(&line), 1);
        self.order.push_back(line);
    }
}

/// X3/L7: the last non-blank stderr lines of a start attempt, for the recovery choice.
#[derive(Debug, Clone, Default)]
pub struct StartupStderrBuffer {
    capacity: usize,
    lines: VecDeque<String>,
}

impl StartupStderrBuffer {
    /// A buffer keeping `config.stderr_lines_kept` lines.
    pub fn new(config: &StartConfig) -> Self {
        Self::with_capacity(config.stderr_lines_kept)
    }

    /// A buffer keeping `capacity` lines.
    pub fn with_capacity(capacity: usize) -> Self {
        StartupStderrBuffer {
            capacity,
            lines: VecDeque::with_capacity(capacity.min(1_024)),
        }
    }

    /// Keep `line` (normalized as in [`normalize_stderr_line`]) unless it is blank; the oldest
    /// line goes when the buffer is full. Dropped lines are kept too: a token-mismatch line can
    /// still explain a failed start.
    pub fn push(&mut self, line: &str) {
        if self.capacity == 0 {
            return;
        }
        let normalized = normalize_stderr_line(line);
        if normalized.is_empty() {
            return;
        }
        while self.lines.len() >= self.capacity {
            self.lines.pop_front();
        }
        self.lines.push_back(normalized);
    }

    /// The kept lines, oldest first.
    pub fn lines(&self) -> impl Iterator<Item = &str> + '_ {
        self.lines.iter().map(String::as_str)
    }

    /// Number of kept lines.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// True when no line is kept.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Forget every line (a new start attempt begins).
    pub fn clear(&mut self) {
        self.lines.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn level(line: &str) -> StderrLevel {
        classify_stderr_line(line).level
    }

    #[test]
    fn x3_drops_blank_lines() {
        assert_eq!(level(""), StderrLevel::Drop);
        assert_eq!(level("   \t "), StderrLevel::Drop);
        assert_eq!(level("\u{1b}[31m\u{1b}[0m  "), StderrLevel::Drop);
    }

    #[test]
    fn x3_drops_control_ui_token_mismatch() {
        assert_eq!(
            level("[ws] unauthorized: Control UI token mismatch (conn=abc)"),
            StderrLevel::Drop
        );
        assert_eq!(
            level("openclaw-control-ui connect rejected: AUTH_TOKEN_MISMATCH"),
            StderrLevel::Drop
        );
    }

    #[test]
    fn x3_drops_closed_before_connect_with_token_mismatch() {
        assert_eq!(
            level("[ws] closed before connect conn=1 code=1008 reason=token mismatch"),
            StderrLevel::Drop
        );
    }

    #[test]
    fn x3_closed_before_connect_1005_is_debug() {
        assert_eq!(
            level("[ws] closed before connect conn=1 code=1005 reason=n/a"),
            StderrLevel::Debug
        );
    }

    #[test]
    fn x3_known_node_noise_is_debug() {
        for line in [
            "(node:123) ExperimentalWarning: SQLite is an experimental feature",
            "(node:123) [DEP0040] DeprecationWarning: The `punycode` module is deprecated.",
            "Debugger attached.",
            "Config warnings:",
            "  Config warnings: - plugins.foo: unknown",
            "Warning: dangerous config flags enabled: gateway.controlUi.allowInsecureAuth",
            "node: --require is not allowed in NODE_OPTIONS",
            "[gateway] startup trace: config.load 12.5ms total=80.1ms start=67.6ms",
        ] {
            assert_eq!(level(line), StderrLevel::Debug, "{line}");
        }
    }

    #[test]
    fn x3_anything_else_is_warn() {
        assert_eq!(
            level("Error: listen EADDRINUSE: address already in use"),
            StderrLevel::Warn
        );
        assert_eq!(
            level("[ws] closed before connect code=1006"),
            StderrLevel::Warn
        );
        assert_eq!(level("token mismatch for node client"), StderrLevel::Warn);
    }

    #[test]
    fn x3_normalizes_ansi_and_whitespace() {
        let classified =
            classify_stderr_line("  \u{1b}[33m(node:1) ExperimentalWarning\u{1b}[39m: x \r\n");
        assert_eq!(classified.normalized, "(node:1) ExperimentalWarning: x");
        assert_eq!(classified.level, StderrLevel::Debug);
        assert_eq!(
            normalize_stderr_line("\u{1b}]0;title\u{7}text\u{1b}]8;;http://x\u{1b}\\link"),
            "textlink"
        );
        assert_eq!(normalize_stderr_line("a\u{1b}"), "a");
    }

    #[test]
    fn x3_caps_huge_lines() {
        let line = "é".repeat(10_000);
        let normalized = normalize_stderr_line(&line);
        assert!(normalized.len() <= MAX_STDERR_LINE_BYTES + TRUNCATION_MARKER.len());
        assert!(normalized.ends_with(TRUNCATION_MARKER));
    }

    fn dedup_actions(deduper: &mut StderrDeduper, line: &str, times: usize) -> Vec<StderrAction> {
        let classified = classify_stderr_line(line);
        (0..times).map(|_| deduper.observe(&classified)).collect()
    }

    #[test]
    fn x3_logs_a_line_once_then_summarizes_every_50th() {
        let mut deduper = StderrDeduper::new(&StderrConfig::default());
        let actions = dedup_actions(&mut deduper, "boom", 100);
        assert_eq!(
            actions[0],
            StderrAction::Log {
                level: StderrLevel::Warn,
                text: "boom".into()
            }
        );
        let summaries: Vec<(usize, &StderrAction)> = actions
            .iter()
            .enumerate()
            .filter(|(_, action)| !matches!(action, StderrAction::Suppress))
            .skip(1)
            .collect();
        assert_eq!(
            summaries,
            vec![
                (
                    49,
                    &StderrAction::Summarize {
                        level: StderrLevel::Debug,
                        text: "boom".into(),
                        repeats: 50
                    }
                ),
                (
                    99,
                    &StderrAction::Summarize {
                        level: StderrLevel::Debug,
                        text: "boom".into(),
                        repeats: 100
                    }
                ),
            ]
        );
    }

    #[test]
    fn x3_dropped_lines_are_ignored_and_not_remembered() {
        let mut deduper = StderrDeduper::new(&StderrConfig::default());
        assert_eq!(
            dedup_actions(&mut deduper, "  ", 2),
            vec![StderrAction::Ignore; 2]
        );
        assert_eq!(deduper.remembered(), 0);
    }

    #[test]
    fn x3_dedup_memory_is_bounded_and_evicts_the_oldest() {
        let config = StderrConfig {
            dedup_capacity: 3,
            ..StderrConfig::default()
        };
        let mut deduper = StderrDeduper::new(&config);
        for line in ["a", "b", "c", "d"] {
            deduper.observe(&classify_stderr_line(line));
        }
        assert_eq!(deduper.remembered(), 3);
        // "a" was forgotten: logged again. "d" is still remembered: suppressed.
        assert!(matches!(
            deduper.observe(&classify_stderr_line("a")),
            StderrAction::Log { .. }
        ));
        assert_eq!(
            deduper.observe(&classify_stderr_line("d")),
            StderrAction::Suppress
        );
    }

    #[test]
    fn x3_startup_buffer_keeps_the_last_120_non_blank_lines() {
        let mut buffer = StartupStderrBuffer::new(&StartConfig::default());
        for n in 0..200 {
            buffer.push(&format!("line {n}"));
            buffer.push("   ");
        }
        assert_eq!(buffer.len(), 120);
        assert_eq!(buffer.lines().next(), Some("line 80"));
        assert_eq!(buffer.lines().last(), Some("line 199"));
        buffer.clear();
        assert!(buffer.is_empty());
    }

    #[test]
    fn l5_startup_trace_lines_are_parsed_into_phases() {
        assert_eq!(
            parse_startup_trace(
                "[gateway] startup trace: config.load 12.5ms total=80.1ms start=67.6ms files=3"
            ),
            Some(StartupPhase {
                name: "config.load".into(),
                duration_ms: 13
            })
        );
        assert_eq!(
            parse_startup_trace(
                r#"{"level":"info","message":"startup trace: sidecars.start 2400.0ms total=5000.0ms"}"#
            )
            .map(|phase| phase.duration_ms),
            Some(2_400)
        );
        assert_eq!(
            parse_startup_trace("startup trace: eventLoop max=3.0"),
            None
        );
        assert_eq!(parse_startup_trace("listening on 127.0.0.1"), None);
        assert_eq!(parse_startup_trace("startup trace: x NaNms"), None);
    }

    proptest! {
        #[test]
        fn l5_startup_trace_parse_never_panics(line in any::<String>()) {
            let _ = parse_startup_trace(&line);
        }

        #[test]
        fn x3_classify_never_panics_and_caps_length(line in any::<String>()) {
            let classified = classify_stderr_line(&line);
            prop_assert!(
                classified.normalized.len() <= MAX_STDERR_LINE_BYTES + TRUNCATION_MARKER.len()
            );
            prop_assert!(!classified.normalized.contains('\x1b'));
        }

        #[test]
        fn x3_dedup_stays_within_capacity(
            lines in proptest::collection::vec("[a-f]{1,3}", 0..300),
            capacity in 0usize..20,
        ) {
            let config = StderrConfig { dedup_capacity: capacity, ..StderrConfig::default() };
            let mut deduper = StderrDeduper::new(&config);
            for line in &lines {
                deduper.observe(&classify_stderr_line(line));
                prop_assert!(deduper.remembered() <= capacity);
                prop_assert_eq!(deduper.remembered(), deduper.order.len());
            }
        }
    }
}
