//! The restart governor: executed restarts stay at least a cooldown apart (R3, R5).
//!
//! It is the one restart cooldown of the supervisor (N2 notes the seed's second, never-set
//! cooldown; it is not reproduced). The governor only decides and counts; the caller runs the
//! restart and reports back with [`RestartGovernor::record_executed`] when it completed.

use serde::{Deserialize, Serialize};

use crate::config::RestartConfig;

/// The governor's answer to a restart request (R3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum GovernorDecision {
    /// Go ahead and restart.
    Allow,
    /// Too soon after the last executed restart: do not restart, report `retry_after_ms`.
    Suppress {
        /// Milliseconds until the cooldown ends.
        retry_after_ms: u64,
    },
}

/// R3 counters, reported in status and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GovernorCounters {
    /// Restarts that ran to completion (R5).
    pub executed: u64,
    /// Restart requests refused inside the cooldown.
    pub suppressed: u64,
}

/// R3 restart governor.
#[derive(Debug, Clone)]
pub struct RestartGovernor {
    cooldown_ms: u64,
    counters: GovernorCounters,
    last_executed_at: Option<u64>,
}

impl RestartGovernor {
    /// A governor with zeroed counters and no restart executed yet.
    pub fn new(config: &RestartConfig) -> Self {
        Self::with_counters(config, GovernorCounters::default())
    }

    /// A governor whose counters start at `counters` (restoring reported totals; tests use it to
    /// start at the top of the range).
    pub fn with_counters(config: &RestartConfig, counters: GovernorCounters) -> Self {
        RestartGovernor {
            cooldown_ms: config.cooldown_ms,
            counters,
            last_executed_at: None,
        }
    }

    /// R3: may a restart run now? A refusal is counted as suppressed.
    ///
    /// The cooldown is measured from the last *executed* restart, not from the last request, so
    /// a stream of requests cannot postpone a restart forever.
    pub fn decide(&mut self, now_ms: u64) -> GovernorDecision {
        match self.remaining_cooldown(now_ms) {
            0 => GovernorDecision::Allow,
            retry_after_ms => {
                // R3: counters wrap to 0 at the top of their range instead of overflowing.
                self.counters.suppressed = self.counters.suppressed.wrapping_add(1);
                GovernorDecision::Suppress { retry_after_ms }
            }
        }
    }

    /// R5: a restart completed at `now_ms`: count it and start the cooldown from here.
    pub fn record_executed(&mut self, now_ms: u64) {
        self.counters.executed = self.counters.executed.wrapping_add(1);
        self.last_executed_at = Some(now_ms);
    }

    /// Milliseconds left in the cooldown at `now_ms` (0 when a restart may run). A `now_ms`
    /// earlier than the last restart (a caller mixing clocks) counts as inside the cooldown.
    pub fn remaining_cooldown(&self, now_ms: u64) -> u64 {
        match self.last_executed_at {
            None => 0,
            Some(last) => self.cooldown_ms.saturating_sub(now_ms.saturating_sub(last)),
        }
    }

    /// The executed and suppressed counts.
    pub fn counters(&self) -> GovernorCounters {
        self.counters
    }

    /// When the last restart completed (R5, R6 compare it with a deferred request's time).
    pub fn last_executed_at(&self) -> Option<u64> {
        self.last_executed_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn governor() -> RestartGovernor {
        RestartGovernor::new(&RestartConfig::default())
    }

    #[test]
    fn r3_allows_the_first_restart() {
        assert_eq!(governor().decide(0), GovernorDecision::Allow);
    }

    #[test]
    fn r3_suppresses_within_the_cooldown_with_retry_after() {
        let mut governor = governor();
        governor.record_executed(10_000);
        assert_eq!(
            governor.decide(11_000),
            GovernorDecision::Suppress {
                retry_after_ms: 1_500
            }
        );
        assert_eq!(
            governor.counters(),
            GovernorCounters {
                executed: 1,
                suppressed: 1
            }
        );
    }

    #[test]
    fn r3_allows_once_the_cooldown_has_passed() {
        let mut governor = governor();
        governor.record_executed(10_000);
        assert_eq!(governor.decide(12_500), GovernorDecision::Allow);
        assert_eq!(governor.counters().suppressed, 0);
    }

    #[test]
    fn r3_cooldown_counts_from_the_last_executed_restart_not_requests() {
        let mut governor = governor();
        governor.record_executed(0);
        for now in [500, 1_000, 2_000] {
            assert!(matches!(
                governor.decide(now),
                GovernorDecision::Suppress { .. }
            ));
        }
        assert_eq!(governor.decide(2_500), GovernorDecision::Allow);
        assert_eq!(governor.counters().suppressed, 3);
    }

    #[test]
    fn r3_counters_wrap_to_zero_at_the_top() {
        let mut governor = RestartGovernor::with_counters(
            &RestartConfig::default(),
            GovernorCounters {
                executed: u64::MAX,
                suppressed: u64::MAX,
            },
        );
        governor.record_executed(0);
        assert!(matches!(
            governor.decide(1),
            GovernorDecision::Suppress { .. }
        ));
        assert_eq!(governor.counters(), GovernorCounters::default());
    }

    #[test]
    fn r3_clock_going_backwards_stays_in_cooldown() {
        let mut governor = governor();
        governor.record_executed(10_000);
        assert_eq!(
            governor.decide(5_000),
            GovernorDecision::Suppress {
                retry_after_ms: 2_500
            }
        );
    }

    #[test]
    fn r5_record_executed_remembers_the_time() {
        let mut governor = governor();
        assert_eq!(governor.last_executed_at(), None);
        governor.record_executed(42);
        assert_eq!(governor.last_executed_at(), Some(42));
        assert_eq!(governor.counters().executed, 1);
    }
}
