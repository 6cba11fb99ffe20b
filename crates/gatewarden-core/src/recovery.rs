//! L6–L7: what to do when a start step fails: repair the config, retry, or give up.

use crate::error::StartFailure;

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

fn mentions_any(text: &str, fragments: &[&str]) -> bool {
    let lower = text.to_ascii_lowercase();
    fragments.iter().any(|fragment| lower.contains(fragment))
}

/// L7: does this text carry an invalid-config signal?
pub fn is_invalid_config_signal(text: &str) -> bool {
    mentions_any(text, &INVALID_CONFIG_SIGNALS)
}

/// L7: choose the recovery for a failed start step.
///
/// `repair` when not yet tried and the stderr tail or the error text signals an invalid config,
/// unless the same output says another gateway holds the state directory's lock (the real
/// gateway exits 78 for that too, and a repair would not help); else `retry` while attempts
/// remain and the failure is transient; else `fail`.
pub fn choose_recovery(input: RecoveryInput<'_>) -> Recovery {
    let error_text = input.failure.to_string();
    let lock_conflict = mentions_any(&error_text, &LOCK_CONFLICT_SIGNALS)
        || input
            .stderr_tail
            .iter()
            .any(|line| mentions_any(line, &LOCK_CONFLICT_SIGNALS));
    let invalid_config = is_invalid_config_signal(&error_text)
        || input
            .stderr_tail
            .iter()
            .any(|line| is_invalid_config_signal(line));
    if !input.repair_tried && invalid_config && !lock_conflict {
        return Recovery::Repair;
    }
    if input.attempt < input.max_attempts && input.failure.is_transient() {
        return Recovery::Retry;
    }
    Recovery::Fail
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
                choose_recovery(input(&failure, &tail, false)),
                Recovery::Repair,
                "{line}"
            );
        }
    }

    #[test]
    fn l7_repairs_only_once_per_flow() {
        let failure = exited(78);
        let tail = vec!["Config invalid".to_string()];
        // Exit before ready is transient, so after the repair the choice falls to retry.
        assert_eq!(
            choose_recovery(input(&failure, &tail, true)),
            Recovery::Retry
        );
    }

    #[test]
    fn l7_error_text_alone_can_signal_invalid_config() {
        let failure = StartFailure::Other {
            message: "gateway said: config invalid".into(),
        };
        assert_eq!(
            choose_recovery(input(&failure, &[], false)),
            Recovery::Repair
        );
    }

    #[test]
    fn l7_lock_conflict_exit_78_is_not_repairable() {
        let failure = exited(78);
        let tail = vec![
            "Doctor could not enter maintenance: another OpenClaw process owns gateway-lifecycle"
                .to_string(),
            "Config invalid".to_string(),
        ];
        assert_ne!(
            choose_recovery(input(&failure, &tail, false)),
            Recovery::Repair
        );
    }

    #[test]
    fn l7_retries_transient_failures_while_attempts_remain() {
        let failure = StartFailure::HandshakeTimeout;
        assert_eq!(
            choose_recovery(input(&failure, &[], false)),
            Recovery::Retry
        );
        let last = RecoveryInput {
            attempt: 3,
            ..input(&failure, &[], false)
        };
        assert_eq!(choose_recovery(last), Recovery::Fail);
    }

    #[test]
    fn l7_fails_on_non_transient_failures() {
        let failure = StartFailure::HandshakeRejected {
            code: "INVALID_REQUEST".into(),
            details_code: Some("AUTH_TOKEN_MISMATCH".into()),
            message: "unauthorized: gateway token mismatch".into(),
        };
        assert_eq!(choose_recovery(input(&failure, &[], false)), Recovery::Fail);
    }
}
