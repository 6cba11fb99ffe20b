//! The auto-reconnect schedule: when to try again after a failure, and when to give up (N2, N5).
//!
//! The schedule is a pure decision: the caller passes what it knows (is auto-reconnect on, is a
//! timer already armed, how many attempts were made, did the gateway run stably before this
//! failure, the time) and gets back what to do. The only state it keeps is its own: the seeded
//! jitter generator and the times of recently scheduled restarts for the intensity limit.

use std::collections::VecDeque;
use std::time::Duration;

use backoff::backoff::Backoff;
use backoff::ExponentialBackoffBuilder;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::config::ReconnectConfig;

/// Why the schedule gave up instead of scheduling another attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum GiveUpReason {
    /// N2: `max_attempts` attempts failed in a row.
    MaxAttempts,
    /// N5: more than `intensity_max_restarts` restarts within `intensity_window_ms`.
    IntensityLimit {
        /// Restarts already scheduled inside the window when the next one was refused.
        restarts: u32,
        /// The window the restarts were counted in.
        window_ms: u64,
    },
}

impl GiveUpReason {
    /// The text that goes into `status.error` (the N2 one is the seed's message, verbatim).
    pub fn message(&self) -> String {
        match self {
            GiveUpReason::MaxAttempts => "Failed to reconnect after maximum attempts".to_string(),
            GiveUpReason::IntensityLimit {
                restarts,
                window_ms,
            } => format!(
                "Gave up reconnecting: restart intensity limit reached \
                 ({restarts} restarts within {window_ms} ms)"
            ),
        }
    }
}

/// What the caller should do about a failure (N2, N5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum ReconnectDecision {
    /// Auto-reconnect is off (the user stopped the gateway): do nothing.
    Skip,
    /// A reconnect timer is already armed: it will do the work, arm no second one.
    AlreadyScheduled,
    /// Stop trying: state `error` with [`GiveUpReason::message`].
    GiveUp {
        /// The attempts value at the time of giving up.
        attempts: u32,
        /// Why.
        reason: GiveUpReason,
    },
    /// Arm the reconnect timer for `delay_ms` and set `reconnectAttempts` to `attempt`; state
    /// `reconnecting`.
    Schedule {
        /// Delay before the attempt, jitter included.
        delay_ms: u64,
        /// The new attempts value (the attempt this timer will make).
        attempt: u32,
    },
}

/// The reconnect schedule of one supervisor (N2, N5).
#[derive(Debug, Clone)]
pub struct ReconnectSchedule {
    config: ReconnectConfig,
    /// Seeded so a test run (and a bug report's replay) sees the same delays every time.
    rng: StdRng,
    /// Times of the restarts scheduled inside the current intensity window, oldest first. Holds at
    /// most `intensity_max_restarts` entries, because one more is refused rather than recorded.
    recent_restarts: VecDeque<u64>,
}

impl ReconnectSchedule {
    /// A schedule with the jitter generator seeded from `config.jitter_seed`.
    pub fn new(config: &ReconnectConfig) -> Self {
        ReconnectSchedule {
            config: config.clone(),
            rng: StdRng::seed_from_u64(config.jitter_seed),
            recent_restarts: VecDeque::new(),
        }
    }

    /// N2/N5 decision for one failure.
    ///
    /// `attempts` is `status.reconnectAttempts` (attempts made so far). `stable_run` is true when
    /// the gateway had been up for `stable_uptime_ms` before this failure: such a crash is
    /// isolated, so the attempt count starts over (N5: "the attempt count resets only after a
    /// stable run") and the restart happens at once, with no backoff. The caller may reset its
    /// own count before calling or not: with `stable_run` the passed `attempts` is ignored and the
    /// returned `attempt` is 1 either way.
    ///
    /// Checks run in the seed's order (off, timer set, attempts cap), then the intensity limit,
    /// which counts restarts whatever the attempt count, so a gateway that runs "stably" just long
    /// enough between crashes still ends in `error` instead of looping forever.
    pub fn decide(
        &mut self,
        auto_reconnect: bool,
        timer_already_set: bool,
        attempts: u32,
        stable_run: bool,
        now_ms: u64,
    ) -> ReconnectDecision {
        if !auto_reconnect {
            return ReconnectDecision::Skip;
        }
        if timer_already_set {
            return ReconnectDecision::AlreadyScheduled;
        }
        let attempts = if stable_run { 0 } else { attempts };
        if attempts >= self.config.max_attempts {
            return ReconnectDecision::GiveUp {
                attempts,
                reason: GiveUpReason::MaxAttempts,
            };
        }
        if let Some(reason) = self.intensity_exceeded(now_ms) {
            return ReconnectDecision::GiveUp { attempts, reason };
        }
        let delay_ms = if stable_run {
            0
        } else {
            let base = self.delay_for_attempt(attempts);
            self.apply_jitter(base)
        };
        if self.config.intensity_max_restarts > 0 {
            self.recent_restarts.push_back(now_ms);
        }
        ReconnectDecision::Schedule {
            delay_ms,
            attempt: attempts.saturating_add(1),
        }
    }

    /// N2 delay before jitter: `min(base × 2^attempts, max)`, in milliseconds.
    ///
    /// Computed with the `backoff` crate (randomization off, since its jitter draws from an
    /// unseeded global generator; ours is applied in [`ReconnectSchedule::decide`]). The sequence
    /// is non-decreasing and flat once it reaches the cap, so iteration stops there: a huge
    /// `attempts` costs at most ~64 steps.
    pub fn delay_for_attempt(&self, attempts: u32) -> u64 {
        let base_ms = self.config.base_delay_ms;
        let max_ms = self.config.max_delay_ms;
        if base_ms == 0 || max_ms == 0 {
            return 0;
        }
        if base_ms >= max_ms {
            return max_ms;
        }
        // `max_elapsed_time(None)`: the crate never ends the sequence on its own, so its internal
        // clock reading has no effect on the values.
        let mut backoff = ExponentialBackoffBuilder::new()
            .with_initial_interval(Duration::from_millis(base_ms))
            .with_randomization_factor(0.0)
            .with_multiplier(2.0)
            .with_max_interval(Duration::from_millis(max_ms))
            .with_max_elapsed_time(None)
            .build();
        let mut delay_ms = 0;
        for _ in 0..=attempts {
            let Some(next) = backoff.next_backoff() else {
                break;
            };
            // Whole milliseconds: the crate's float arithmetic may add a nanosecond.
            let next_ms = u64::try_from(next.as_millis()).unwrap_or(max_ms);
            // The crate works in f64 nanoseconds: near a huge cap the value can stop growing a
            // hair below it. Growth has stopped only at the cap, so that is the cap.
            if next_ms >= max_ms || (delay_ms > 0 && next_ms <= delay_ms) {
                return max_ms;
            }
            delay_ms = next_ms;
        }
        delay_ms.min(max_ms)
    }

    /// Forget the restarts counted for the intensity limit (a manual start is a fresh beginning,
    /// like L3's reset of the attempt count).
    pub fn reset_intensity(&mut self) {
        self.recent_restarts.clear();
    }

    /// Restarts currently counted inside the intensity window (oldest first).
    pub fn recent_restarts(&self) -> impl Iterator<Item = u64> + '_ {
        self.recent_restarts.iter().copied()
    }

    /// N5 intensity limit: `Some` when one more restart would exceed it.
    fn intensity_exceeded(&mut self, now_ms: u64) -> Option<GiveUpReason> {
        let max_restarts = self.config.intensity_max_restarts;
        if max_restarts == 0 {
            return None;
        }
        let window_ms = self.config.intensity_window_ms;
        while let Some(&oldest) = self.recent_restarts.front() {
            if now_ms.saturating_sub(oldest) >= window_ms {
                self.recent_restarts.pop_front();
            } else {
                break;
            }
        }
        let restarts = u32::try_from(self.recent_restarts.len()).unwrap_or(u32::MAX);
        (restarts >= max_restarts).then_some(GiveUpReason::IntensityLimit {
            restarts,
            window_ms,
        })
    }

    /// N5 jitter: `delay × (1 ± jitter)`, drawn from the seeded generator. A jitter that is not a
    /// finite positive number disables it; above 1 it is capped at 1 (a delay cannot go negative).
    fn apply_jitter(&mut self, delay_ms: u64) -> u64 {
        let jitter = self.config.jitter;
        if !(jitter.is_finite() && jitter > 0.0) || delay_ms == 0 {
            return delay_ms;
        }
        let jitter = jitter.min(1.0);
        // A uniform draw in [0, 1) mapped to [-jitter, +jitter). Not `gen_range` on floats: rand
        // 0.8 narrows a float range one ulp at a time, which never ends for tiny jitters.
        let unit: f64 = self.rng.gen();
        let factor = 1.0 + jitter * (2.0 * unit - 1.0);
        let jittered = (delay_ms as f64 * factor).round();
        // `as` saturates for floats: a result beyond u64 becomes u64::MAX, never a panic.
        jittered.max(0.0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn no_jitter() -> ReconnectConfig {
        ReconnectConfig {
            jitter: 0.0,
            ..ReconnectConfig::default()
        }
    }

    fn schedule_delays(schedule: &mut ReconnectSchedule, count: u32) -> Vec<u64> {
        (0..count)
            .map(
                |attempts| match schedule.decide(true, false, attempts, false, 0) {
                    ReconnectDecision::Schedule { delay_ms, .. } => delay_ms,
                    other => panic!("expected a schedule, got {other:?}"),
                },
            )
            .collect()
    }

    #[test]
    fn n2_delays_double_from_1000_up_to_30000_without_jitter() {
        let mut schedule = ReconnectSchedule::new(&no_jitter());
        assert_eq!(
            schedule_delays(&mut schedule, 10),
            vec![1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000, 30_000, 30_000]
        );
    }

    #[test]
    fn n2_skips_when_auto_reconnect_is_off() {
        let mut schedule = ReconnectSchedule::new(&no_jitter());
        assert_eq!(
            schedule.decide(false, false, 0, false, 0),
            ReconnectDecision::Skip
        );
    }

    #[test]
    fn n2_does_nothing_when_a_timer_is_already_set() {
        let mut schedule = ReconnectSchedule::new(&no_jitter());
        assert_eq!(
            schedule.decide(true, true, 0, false, 0),
            ReconnectDecision::AlreadyScheduled
        );
    }

    #[test]
    fn n2_gives_up_at_max_attempts() {
        let mut schedule = ReconnectSchedule::new(&no_jitter());
        let decision = schedule.decide(true, false, 10, false, 0);
        assert_eq!(
            decision,
            ReconnectDecision::GiveUp {
                attempts: 10,
                reason: GiveUpReason::MaxAttempts
            }
        );
        assert_eq!(
            GiveUpReason::MaxAttempts.message(),
            "Failed to reconnect after maximum attempts"
        );
    }

    #[test]
    fn n2_schedule_increments_the_attempt_count() {
        let mut schedule = ReconnectSchedule::new(&no_jitter());
        assert_eq!(
            schedule.decide(true, false, 3, false, 0),
            ReconnectDecision::Schedule {
                delay_ms: 8_000,
                attempt: 4
            }
        );
    }

    #[test]
    fn n2_delay_for_attempt_is_capped_and_survives_huge_attempts() {
        let schedule = ReconnectSchedule::new(&no_jitter());
        assert_eq!(schedule.delay_for_attempt(0), 1_000);
        assert_eq!(schedule.delay_for_attempt(4), 16_000);
        assert_eq!(schedule.delay_for_attempt(u32::MAX), 30_000);
    }

    #[test]
    fn n5_same_seed_gives_the_same_jittered_delays() {
        let config = ReconnectConfig {
            max_attempts: 100,
            intensity_max_restarts: 0,
            ..ReconnectConfig::default()
        };
        let first = schedule_delays(&mut ReconnectSchedule::new(&config), 20);
        let second = schedule_delays(&mut ReconnectSchedule::new(&config), 20);
        assert_eq!(first, second);
        let other_seed = ReconnectConfig {
            jitter_seed: config.jitter_seed.wrapping_add(1),
            ..config.clone()
        };
        assert_ne!(
            first,
            schedule_delays(&mut ReconnectSchedule::new(&other_seed), 20)
        );
    }

    /// 200 scheduled delays with `jitter`, each with the un-jittered delay of its attempt.
    fn jittered_delays(jitter: f64) -> Vec<(u64, u64)> {
        let config = ReconnectConfig {
            jitter,
            max_attempts: 1_000,
            intensity_max_restarts: 0,
            ..ReconnectConfig::default()
        };
        let mut schedule = ReconnectSchedule::new(&config);
        (0..200)
            .map(|attempts| {
                let base = schedule.delay_for_attempt(attempts);
                match schedule.decide(true, false, attempts, false, 0) {
                    ReconnectDecision::Schedule { delay_ms, .. } => (base, delay_ms),
                    other => panic!("expected a schedule, got {other:?}"),
                }
            })
            .collect()
    }

    #[test]
    fn n5_jitter_stays_within_the_configured_fraction() {
        let delays = jittered_delays(ReconnectConfig::default().jitter);
        for (base, delay) in &delays {
            let (base, delay) = (*base as f64, *delay as f64);
            assert!(delay >= (base * 0.8).floor() && delay <= (base * 1.2).ceil());
        }
        assert!(
            delays.iter().any(|(base, delay)| base != delay),
            "jitter 0.2 never changed a delay"
        );
    }

    /// Q3 rejects such a config, but the policy must not depend on that: a jitter that is not a
    /// finite positive number means none, and one above 1 is capped at 1 (never a negative or
    /// an infinite delay).
    #[test]
    fn n5_a_non_finite_or_non_positive_jitter_is_no_jitter_and_above_one_is_capped() {
        for jitter in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.5, 0.0] {
            let config = ReconnectConfig {
                jitter,
                max_attempts: 100,
                intensity_max_restarts: 0,
                ..ReconnectConfig::default()
            };
            assert_eq!(
                schedule_delays(&mut ReconnectSchedule::new(&config), 6),
                vec![1_000, 2_000, 4_000, 8_000, 16_000, 30_000],
                "jitter {jitter}"
            );
        }
        let delays = jittered_delays(7.0);
        for (base, delay) in &delays {
            assert!(delay <= &(base * 2), "{delay} > 2 × {base}");
        }
        assert!(
            delays.iter().any(|(base, delay)| base != delay),
            "a capped jitter still jitters"
        );
    }

    #[test]
    fn n5_stable_run_restarts_at_once_and_resets_the_count() {
        let mut schedule = ReconnectSchedule::new(&ReconnectConfig::default());
        assert_eq!(
            schedule.decide(true, false, 0, true, 0),
            ReconnectDecision::Schedule {
                delay_ms: 0,
                attempt: 1
            }
        );
        // Even a count the caller did not reset starts over after a stable run.
        assert_eq!(
            schedule.decide(true, false, 9, true, 1),
            ReconnectDecision::Schedule {
                delay_ms: 0,
                attempt: 1
            }
        );
    }

    #[test]
    fn n5_unstable_crash_backs_off() {
        let mut schedule = ReconnectSchedule::new(&no_jitter());
        assert_eq!(
            schedule.decide(true, false, 2, false, 0),
            ReconnectDecision::Schedule {
                delay_ms: 4_000,
                attempt: 3
            }
        );
    }

    #[test]
    fn n5_intensity_limit_gives_up_after_k_restarts_in_the_window() {
        let config = ReconnectConfig {
            intensity_max_restarts: 3,
            intensity_window_ms: 10_000,
            ..no_jitter()
        };
        let mut schedule = ReconnectSchedule::new(&config);
        for now in [0, 1_000, 2_000] {
            assert!(matches!(
                schedule.decide(true, false, 0, true, now),
                ReconnectDecision::Schedule { .. }
            ));
        }
        assert_eq!(
            schedule.decide(true, false, 0, true, 3_000),
            ReconnectDecision::GiveUp {
                attempts: 0,
                reason: GiveUpReason::IntensityLimit {
                    restarts: 3,
                    window_ms: 10_000
                }
            }
        );
        // Once the first restart leaves the window, one more is allowed.
        assert!(matches!(
            schedule.decide(true, false, 0, true, 10_000),
            ReconnectDecision::Schedule { .. }
        ));
    }

    #[test]
    fn n5_intensity_limit_zero_disables_it() {
        let config = ReconnectConfig {
            intensity_max_restarts: 0,
            ..no_jitter()
        };
        let mut schedule = ReconnectSchedule::new(&config);
        for now in 0..1_000 {
            assert!(matches!(
                schedule.decide(true, false, 0, true, now),
                ReconnectDecision::Schedule { .. }
            ));
        }
        assert_eq!(schedule.recent_restarts().count(), 0);
    }

    #[test]
    fn n5_reset_intensity_forgets_counted_restarts() {
        let config = ReconnectConfig {
            intensity_max_restarts: 1,
            ..no_jitter()
        };
        let mut schedule = ReconnectSchedule::new(&config);
        assert!(matches!(
            schedule.decide(true, false, 0, false, 0),
            ReconnectDecision::Schedule { .. }
        ));
        assert!(matches!(
            schedule.decide(true, false, 1, false, 1),
            ReconnectDecision::GiveUp { .. }
        ));
        assert_eq!(schedule.recent_restarts().collect::<Vec<_>>(), vec![0]);
        schedule.reset_intensity();
        assert_eq!(schedule.recent_restarts().count(), 0);
        assert!(matches!(
            schedule.decide(true, false, 1, false, 2),
            ReconnectDecision::Schedule { .. }
        ));
    }

    proptest! {
        #[test]
        fn n2_delay_matches_the_closed_form(
            base in 0u64..100_000,
            max in 0u64..10_000_000,
            attempts in 0u32..200,
        ) {
            let config = ReconnectConfig {
                base_delay_ms: base,
                max_delay_ms: max,
                ..no_jitter()
            };
            let expected = base.saturating_mul(2u64.saturating_pow(attempts)).min(max);
            prop_assert_eq!(ReconnectSchedule::new(&config).delay_for_attempt(attempts), expected);
        }

        #[test]
        fn n5_decide_never_panics_on_odd_configs(
            jitter in proptest::num::f64::ANY,
            base in any::<u64>(),
            max in any::<u64>(),
            attempts in any::<u32>(),
            now in any::<u64>(),
        ) {
            let config = ReconnectConfig {
                jitter,
                base_delay_ms: base,
                max_delay_ms: max,
                max_attempts: u32::MAX,
                ..ReconnectConfig::default()
            };
            let mut schedule = ReconnectSchedule::new(&config);
            prop_assert!(schedule.delay_for_attempt(attempts) <= max);
            let _ = schedule.decide(true, false, attempts, false, now);
        }
    }
}
