//! L6–L7, F1–F4: what a failed start means and what to do about it: repair the config, retry, or
//! give up.
//!
//! [`classify_failure`] is a pure function of the failure (which carries the exit code), the
//! attempt's stderr tail (X3) and nothing else; [`choose_recovery`] turns its class into a
//! recovery. The lifecycle machine calls both; the actor shell never reads stderr for meaning.

use crate::error::StartFailure;
use crate::stderr::{classify_stderr_line, StderrLevel};

/// The recovery chosen for a failed start step (L6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Run the gateway's doctor repair once, then start again with error and attempts reset.
    Repair,
    /// Wait the retry delay and try again.
    Retry,
    /// Give up: the start fails (L8).
    Fail,
}

/// What kind of failure a failed start is (F1–F3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// F1: another process holds the gateway's state lock: no doctor, no retry.
    LockHeld,
    /// F3: the runtime cannot run this gateway (old Node, SQLite missing): no doctor, no retry.
    RuntimeIncompatible,
    /// F1/L7: the gateway's config is invalid: the doctor runs once (F2), then no retry.
    ConfigInvalid,
    /// A failure no retry can fix that is not one of the above (bad token, spawn failure).
    Permanent,
    /// Worth another attempt.
    Transient,
}

impl FailureClass {
    /// F1/F3 (and a config still invalid after the doctor): a restart cannot fix it, so
    /// auto-reconnect goes off until the next start.
    pub fn is_fatal(self) -> bool {
        matches!(
            self,
            FailureClass::LockHeld | FailureClass::RuntimeIncompatible
        )
    }
}

/// A failure with its class and the stderr line that explains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassifiedFailure {
    /// What kind of failure.
    pub class: FailureClass,
    /// F1/F3: the line carrying the signal; otherwise F4's last meaningful stderr line.
    pub reason: Option<String>,
}

/// Lower-case fragments that mean "the gateway config is invalid" (L7).
pub const INVALID_CONFIG_SIGNALS: [&str; 4] = [
    "invalid config",
    "config invalid",
    "unrecognized key",
    "run: openclaw doctor --fix",
];

/// Lower-case fragments that mean exit 78 came from a lock held by another live gateway, not from
/// a broken config (OPENCLAW.md §8): `doctor --fix` cannot help while that gateway lives.
pub const LOCK_CONFLICT_SIGNALS: [&str; 3] = [
    "another openclaw process owns",
    "could not enter maintenance",
    "another healthy gateway already owns",
];

/// Lower-case fragments that mean the runtime cannot run the gateway (OPENCLAW.md §12: Node 20
/// prints "node:sqlite is unavailable; use 24.16+" and exits 1). "use N.N+" is matched apart.
pub const RUNTIME_SIGNALS: [&str; 7] = [
    "node:sqlite is unavailable",
    "requires node",
    "unsupported node",
    "no such built-in module: node:sqlite",
    "err_unknown_builtin_module",
    "was compiled against a different node.js version",
    "could not load sqlite",
];

/// F5: what a gateway prints when an in-place restart failed and it stays alive without a
/// listener (OPENCLAW.md §12). The real gateway writes a block: `[gateway] startup failed:
/// Invalid config at PATH:`, the problems, then `… Process will stay alive; fix the issue and
/// restart.`, so the two fragments arrive on different lines.
pub const STAY_ALIVE_SIGNAL: &str = "process will stay alive";

/// F5: the first line of that block, which carries the reason.
pub const STARTUP_FAILED_SIGNAL: &str = "startup failed";

fn mentions_any(text: &str, fragments: &[&str]) -> bool {
    let lower = text.to_ascii_lowercase();
    fragments.iter().any(|fragment| lower.contains(fragment))
}

/// L7: does this text carry an invalid-config signal?
pub fn is_invalid_config_signal(text: &str) -> bool {
    mentions_any(text, &INVALID_CONFIG_SIGNALS)
}

/// F1: does this text say another process holds the gateway's lock?
pub fn is_lock_signal(text: &str) -> bool {
    mentions_any(text, &LOCK_CONFLICT_SIGNALS)
}

/// F3: does this text say the runtime is too old or lacks what the gateway needs?
pub fn is_runtime_signal(text: &str) -> bool {
    mentions_any(text, &RUNTIME_SIGNALS) || mentions_use_version_plus(text)
}

/// F5: does this line say the gateway stays alive after a failed (re)start?
pub fn is_stay_alive_signal(text: &str) -> bool {
    text.to_ascii_lowercase().contains(STAY_ALIVE_SIGNAL)
}

/// F5: is this the `startup failed: REASON` line that opens the block?
pub fn is_startup_failed_line(text: &str) -> bool {
    text.to_ascii_lowercase().contains(STARTUP_FAILED_SIGNAL)
}

/// "use 24.16+": the word `use`, a dotted version, then `+`.
fn mentions_use_version_plus(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.match_indices("use ").any(|(at, _)| {
        let rest = &lower[at + 4..];
        let version: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        version.contains('.')
            && version.starts_with(|c: char| c.is_ascii_digit())
            && version.ends_with(|c: char| c.is_ascii_digit())
            && rest[version.len()..].starts_with('+')
    })
}

/// F4: the last stderr line worth showing a person: not noise by X3's classes, not a stack frame,
/// not Node's `Node.js vX` trailer or the caret under a source excerpt.
pub fn last_meaningful_line<'a, I>(lines: I) -> Option<String>
where
    I: IntoIterator<Item = &'a str>,
    I::IntoIter: DoubleEndedIterator,
{
    lines
        .into_iter()
        .rev()
        .map(classify_stderr_line)
        .find(|classified| {
            let text = classified.normalized.as_str();
            classified.level == StderrLevel::Warn
                && !text.starts_with("at ")
                && !text.starts_with("Node.js v")
                && text.chars().any(char::is_alphanumeric)
        })
        .map(|classified| classified.normalized)
}

/// F1–F4: classify a failed start from the failure (with its exit code) and the attempt's
/// stderr tail. The signal lines win in this order: lock held, runtime, invalid config.
pub fn classify_failure(failure: &StartFailure, stderr_tail: &[String]) -> ClassifiedFailure {
    let error_text = failure.to_string();
    let find = |signal: fn(&str) -> bool| -> Option<Option<String>> {
        if let Some(line) = stderr_tail.iter().rev().find(|line| signal(line)) {
            return Some(Some(line.clone()));
        }
        signal(&error_text).then_some(None)
    };
    let fatal = match failure {
        StartFailure::LockHeld { line } => Some((FailureClass::LockHeld, Some(line.clone()))),
        StartFailure::RuntimeIncompatible { message } => {
            Some((FailureClass::RuntimeIncompatible, Some(message.clone())))
        }
        StartFailure::ConfigStillInvalid { line } => {
            Some((FailureClass::ConfigInvalid, line.clone()))
        }
        _ => None,
    };
    let (class, reason) = if let Some(found) = fatal {
        found
    } else if let Some(line) = find(is_lock_signal) {
        (FailureClass::LockHeld, line)
    } else if let Some(line) = find(is_runtime_signal) {
        (FailureClass::RuntimeIncompatible, line)
    } else if let Some(line) = find(is_invalid_config_signal) {
        (FailureClass::ConfigInvalid, line)
    } else if failure.is_transient() {
        (FailureClass::Transient, None)
    } else {
        (FailureClass::Permanent, None)
    };
    let reason = reason.or_else(|| last_meaningful_line(stderr_tail.iter().map(String::as_str)));
    ClassifiedFailure { class, reason }
}

/// F2: the digest the doctor's once-per-content rule remembers: `sha256:` and the hex digest of
/// the gateway's config file bytes.
pub fn config_digest(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(bytes);
    let mut text = String::with_capacity(7 + 64);
    text.push_str("sha256:");
    for byte in digest {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

/// What the recovery choice looks at.
#[derive(Debug, Clone, Copy)]
pub struct RecoveryInput<'a> {
    /// The failure of this attempt.
    pub failure: &'a StartFailure,
    /// The last stderr lines of this start attempt (X3).
    pub stderr_tail: &'a [String],
    /// Whether the doctor repair already ran in this start flow.
    pub repair_tried: bool,
    /// 1-based number of the attempt that just failed.
    pub attempt: u32,
    /// L5: attempts allowed.
    pub max_attempts: u32,
}

/// The recovery with the classification it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryChoice {
    /// What to do.
    pub recovery: Recovery,
    /// Why.
    pub failure: ClassifiedFailure,
}

/// L7, F1–F3: choose the recovery for a failed start step.
///
/// Lock held (F1) or runtime incompatible (F3): fail at once. An invalid config (F1): repair
/// when not yet tried in this flow, else fail (no retry: the same config fails the same way).
/// Otherwise retry while attempts remain and the failure is transient; else fail.
pub fn choose_recovery(input: RecoveryInput<'_>) -> RecoveryChoice {
    let failure = classify_failure(input.failure, input.stderr_tail);
    let recovery = match failure.class {
        FailureClass::LockHeld | FailureClass::RuntimeIncompatible => Recovery::Fail,
        FailureClass::ConfigInvalid if !input.repair_tried => Recovery::Repair,
        FailureClass::ConfigInvalid => Recovery::Fail,
        FailureClass::Transient if input.attempt < input.max_attempts => Recovery::Retry,
        FailureClass::Transient | FailureClass::Permanent => Recovery::Fail,
    };
    RecoveryChoice { recovery, failure }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited(code: i32) -> StartFailure {
        StartFailure::ExitedBeforeReady { code: Some(code) }
    }

    fn input<'a>(failure: &'a StartFailure, tail: &'a [String], tried: bool) -> RecoveryInput<'a> {
        RecoveryInput {
            failure,
            stderr_tail: tail,
            repair_tried: tried,
            attempt: 1,
            max_attempts: 3,
        }
    }

    fn recovery(input: RecoveryInput<'_>) -> Recovery {
        choose_recovery(input).recovery
    }

    fn lines(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|line| line.to_string()).collect()
    }

    #[test]
    fn l7_repairs_when_stderr_signals_invalid_config() {
        let failure = exited(78);
        for line in [
            "Config invalid: /home/u/.openclaw/openclaw.json",
            "  - <root>: Unrecognized key: \"foo\"",
            "Run: openclaw doctor --fix",
            "error: INVALID CONFIG detected",
        ] {
            let tail = vec![line.to_string()];
            assert_eq!(
                recovery(input(&failure, &tail, false)),
                Recovery::Repair,
                "{line}"
            );
        }
    }

    #[test]
    fn f1_config_still_invalid_after_the_doctor_is_not_retried() {
        let failure = exited(78);
        let tail = vec!["Config invalid".to_string()];
        let choice = choose_recovery(input(&failure, &tail, true));
        assert_eq!(choice.recovery, Recovery::Fail);
        assert_eq!(choice.failure.class, FailureClass::ConfigInvalid);
        assert_eq!(choice.failure.reason.as_deref(), Some("Config invalid"));
    }

    #[test]
    fn l7_error_text_alone_can_signal_invalid_config() {
        let failure = StartFailure::Other {
            message: "gateway said: config invalid".into(),
        };
        assert_eq!(recovery(input(&failure, &[], false)), Recovery::Repair);
    }

    #[test]
    fn f1_lock_conflict_fails_at_once_naming_the_holder() {
        let failure = exited(78);
        let tail = lines(&[
            "Config invalid",
            "Doctor could not enter maintenance: another OpenClaw process owns gateway-lifecycle",
        ]);
        let choice = choose_recovery(input(&failure, &tail, false));
        assert_eq!(choice.recovery, Recovery::Fail);
        assert_eq!(choice.failure.class, FailureClass::LockHeld);
        assert!(choice.failure.class.is_fatal());
        assert!(choice
            .failure
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("owns gateway-lifecycle"));
    }

    #[test]
    fn f3_runtime_incompatibility_fails_at_once_with_its_line() {
        for line in [
            "Error: Node 20.x: node:sqlite is unavailable; use 24.16+",
            "openclaw requires Node >=24.16.0",
            "Error [ERR_UNKNOWN_BUILTIN_MODULE]: No such built-in module: node:sqlite",
            "please use 22.12+ to run this",
        ] {
            let failure = exited(1);
            let tail = lines(&[line, "    at x (file.js:1:1)", "Node.js v20.11.1"]);
            let choice = choose_recovery(input(&failure, &tail, false));
            assert_eq!(choice.recovery, Recovery::Fail, "{line}");
            assert_eq!(
                choice.failure.class,
                FailureClass::RuntimeIncompatible,
                "{line}"
            );
            assert_eq!(choice.failure.reason.as_deref(), Some(line));
        }
        assert!(!is_runtime_signal("we use 3 workers"));
        assert!(!is_runtime_signal("use 2.+"));
    }

    #[test]
    fn f4_reason_is_the_last_meaningful_stderr_line() {
        let tail = lines(&[
            "listen EADDRINUSE: address already in use 127.0.0.1:18789",
            "    at Server.setupListenHandle (node:net:1817:16)",
            "(node:12) ExperimentalWarning: SQLite is an experimental feature",
            "   ^",
            "Node.js v24.16.0",
        ]);
        let choice = choose_recovery(input(&exited(1), &tail, false));
        assert_eq!(choice.recovery, Recovery::Retry);
        assert_eq!(
            choice.failure.reason.as_deref(),
            Some("listen EADDRINUSE: address already in use 127.0.0.1:18789")
        );
        assert_eq!(last_meaningful_line(Vec::<&str>::new()), None);
        assert_eq!(last_meaningful_line(["", "Debugger attached."]), None);
    }

    #[test]
    fn f5_stay_alive_line_is_recognised_and_is_a_config_signal() {
        let line = "[gateway] startup failed: Invalid config at /s/openclaw.json: gateway.bind: \
                    Invalid input. Process will stay alive; fix the issue and restart.";
        assert!(is_stay_alive_signal(line));
        assert!(is_invalid_config_signal(line));
        assert!(is_startup_failed_line(line));
        // The real block: the two fragments on different lines.
        assert!(is_startup_failed_line(
            "[gateway] startup failed: Invalid config at /s/openclaw.json:"
        ));
        assert!(!is_stay_alive_signal(
            "[gateway] startup failed: Invalid config at /s/openclaw.json:"
        ));
        assert!(is_stay_alive_signal(
            "If startup is still blocked, inspect the adjacent .bak backup before restoring it \
             manually.. Process will stay alive; fix the issue and restart."
        ));
    }

    #[test]
    fn l7_retries_transient_failures_while_attempts_remain() {
        let failure = StartFailure::HandshakeTimeout;
        assert_eq!(recovery(input(&failure, &[], false)), Recovery::Retry);
        let last = RecoveryInput {
            attempt: 3,
            ..input(&failure, &[], false)
        };
        assert_eq!(recovery(last), Recovery::Fail);
    }

    #[test]
    fn l7_fails_on_non_transient_failures() {
        let failure = StartFailure::HandshakeRejected {
            code: "INVALID_REQUEST".into(),
            details_code: Some("AUTH_TOKEN_MISMATCH".into()),
            message: "unauthorized: gateway token mismatch".into(),
        };
        let choice = choose_recovery(input(&failure, &[], false));
        assert_eq!(choice.recovery, Recovery::Fail);
        assert_eq!(choice.failure.class, FailureClass::Permanent);
    }

    #[test]
    fn f2_config_digest_depends_on_content_only() {
        assert_eq!(config_digest(b"{}"), config_digest(b"{}"));
        assert_ne!(config_digest(b"{}"), config_digest(b"{ }"));
        assert!(config_digest(b"").starts_with("sha256:e3b0c442"));
    }

    #[test]
    fn f1_typed_fatal_failures_keep_their_class() {
        let failure = StartFailure::RuntimeIncompatible {
            message: "Node 20.11.1 does not satisfy >=24.16.0".into(),
        };
        let choice = choose_recovery(input(&failure, &[], false));
        assert_eq!(choice.failure.class, FailureClass::RuntimeIncompatible);
        assert_eq!(choice.recovery, Recovery::Fail);
    }
}
