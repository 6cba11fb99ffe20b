//! Heartbeat bookkeeping: ping misses (H1–H3) and the current gateway's tick-silence rule.
//!
//! The tracker is driven by the caller's ping timer ([`HeartbeatTracker::on_tick`] every
//! `interval_ms`) and by proof of life ([`HeartbeatTracker::record_alive`] on a pong or any inbound
//! frame). It answers whether to ping and whether the connection should now be declared dead.
//! Whether a dead declaration leads to a restart (H2: not on Windows, only with auto-reconnect on
//! and in `running`) is the machine's decision, not this module's.

use serde::{Deserialize, Serialize};

use crate::config::HeartbeatConfig;

/// Why the connection was declared dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum DeadReason {
    /// H2: this many consecutive pings went unanswered.
    MissedPings {
        /// Consecutive misses when the trigger fired.
        misses: u32,
    },
    /// Current gateways tick every `tickIntervalMs`: nothing at all arrived for this long.
    TickSilence {
        /// Milliseconds since the last inbound traffic (or since connect).
        silent_ms: u64,
    },
}

/// What one heartbeat tick found and what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatTick {
    /// H1: the outstanding ping counted as missed at this tick.
    pub missed: bool,
    /// Consecutive misses after this tick (H5 diagnostics).
    pub consecutive_misses: u32,
    /// H2: declare the connection dead now. Fires once until proof of life (H3).
    pub trigger: Option<DeadReason>,
    /// Send a ping now (always true: pinging continues after a trigger, so a late pong can still
    /// prove the connection alive).
    pub send_ping: bool,
}

/// H2's threshold as actually applied: at least 1, because a threshold of 0 would declare a
/// healthy connection dead at the first tick. H6 uses the same value for `unresponsive`.
pub fn effective_max_misses(config: &HeartbeatConfig) -> u32 {
    config.max_misses.max(1)
}

/// H1–H3 miss counting for one connection (create it at connect).
#[derive(Debug, Clone)]
pub struct HeartbeatTracker {
    timeout_ms: u64,
    max_misses: u32,
    tick_silence_factor: u32,
    tick_interval_ms: Option<u64>,
    /// When the ping still waiting for an answer was sent; `None` once anything arrived.
    outstanding_ping_at: Option<u64>,
    consecutive_misses: u32,
    /// H2/H3: a dead declaration was made and no proof of life came since. One flag for both
    /// reasons: a connection is declared dead once, whichever rule noticed first.
    triggered: bool,
    /// Start of the current silence: the last inbound traffic, or the connect time.
    silence_started_at: u64,
    last_alive_at: Option<u64>,
    last_timeout_at: Option<u64>,
}

impl HeartbeatTracker {
    /// A tracker for a connection made at `now_ms`.
    pub fn new(config: &HeartbeatConfig, now_ms: u64) -> Self {
        HeartbeatTracker {
            timeout_ms: config.timeout_ms,
            max_misses: effective_max_misses(config),
            tick_silence_factor: config.tick_silence_factor,
            tick_interval_ms: None,
            outstanding_ping_at: None,
            consecutive_misses: 0,
            triggered: false,
            silence_started_at: now_ms,
            last_alive_at: None,
            last_timeout_at: None,
        }
    }

    /// The gateway's advertised tick interval (`hello-ok.policy.tickIntervalMs`); `None` (older
    /// gateways) turns the tick-silence rule off.
    pub fn set_tick_interval(&mut self, tick_interval_ms: Option<u64>) {
        self.tick_interval_ms = tick_interval_ms;
    }

    /// H3: a pong or any inbound frame arrived: misses reset, the trigger is re-armed.
    pub fn record_alive(&mut self, now_ms: u64) {
        self.outstanding_ping_at = None;
        self.consecutive_misses = 0;
        self.triggered = false;
        self.silence_started_at = now_ms;
        self.last_alive_at = Some(now_ms);
    }

    /// H1/H2: the ping timer fired. The outstanding ping is judged before the next one is sent.
    pub fn on_tick(&mut self, now_ms: u64) -> HeartbeatTick {
        let mut missed = false;
        if let Some(sent_at) = self.outstanding_ping_at {
            if now_ms.saturating_sub(sent_at) >= self.timeout_ms {
                missed = true;
                self.consecutive_misses = self.consecutive_misses.saturating_add(1);
                self.last_timeout_at = Some(now_ms);
            }
        }
        let trigger = if self.triggered {
            None
        } else if self.consecutive_misses >= self.max_misses {
            Some(DeadReason::MissedPings {
                misses: self.consecutive_misses,
            })
        } else {
            self.silence_trigger(now_ms)
        };
        self.triggered |= trigger.is_some();
        // A ping that has not timed out yet (interval shorter than timeout) is replaced, as the
        // seed does: the new ping is the one a pong will answer.
        self.outstanding_ping_at = Some(now_ms);
        HeartbeatTick {
            missed,
            consecutive_misses: self.consecutive_misses,
            trigger,
            send_ping: true,
        }
    }

    /// Tick-silence check outside the ping timer, for a caller that arms a timer at
    /// [`HeartbeatTracker::silence_deadline`] to notice silence sooner than the next ping tick.
    pub fn check_silence(&mut self, now_ms: u64) -> Option<DeadReason> {
        if self.triggered {
            return None;
        }
        let trigger = self.silence_trigger(now_ms);
        self.triggered |= trigger.is_some();
        trigger
    }

    /// When the tick-silence rule will fire if nothing arrives (`None` when it is off or already
    /// fired).
    pub fn silence_deadline(&self) -> Option<u64> {
        if self.triggered {
            return None;
        }
        self.silence_limit_ms().map(|limit| {
            self.silence_started_at
                .saturating_add(limit)
                .saturating_add(1)
        })
    }

    /// D2 evidence: nothing arrived for longer than the tick-silence limit (whether or not the
    /// rule already fired).
    pub fn is_silent_at(&self, now_ms: u64) -> bool {
        self.silence_trigger(now_ms).is_some()
    }

    /// Consecutive missed pings so far.
    pub fn consecutive_misses(&self) -> u32 {
        self.consecutive_misses
    }

    /// The last proof of life.
    pub fn last_alive_at(&self) -> Option<u64> {
        self.last_alive_at
    }

    /// The last tick at which a ping counted as missed (H5 `lastHeartbeatTimeoutAt`).
    pub fn last_timeout_at(&self) -> Option<u64> {
        self.last_timeout_at
    }

    /// `factor × tickIntervalMs`, when the rule applies.
    fn silence_limit_ms(&self) -> Option<u64> {
        match self.tick_interval_ms {
            Some(interval) if interval > 0 && self.tick_silence_factor > 0 => {
                Some(interval.saturating_mul(u64::from(self.tick_silence_factor)))
            }
            _ => None,
        }
    }

    /// Silence *longer* than the limit counts, as the reference client's "tick timeout" does.
    fn silence_trigger(&self, now_ms: u64) -> Option<DeadReason> {
        let limit = self.silence_limit_ms()?;
        let silent_ms = now_ms.saturating_sub(self.silence_started_at);
        (silent_ms > limit).then_some(DeadReason::TickSilence { silent_ms })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker() -> HeartbeatTracker {
        HeartbeatTracker::new(&HeartbeatConfig::default(), 0)
    }

    #[test]
    fn h1_first_tick_sends_a_ping_and_misses_nothing() {
        let tick = tracker().on_tick(30_000);
        assert!(tick.send_ping);
        assert!(!tick.missed);
        assert_eq!(tick.consecutive_misses, 0);
        assert_eq!(tick.trigger, None);
    }

    #[test]
    fn h1_unanswered_ping_counts_as_missed_at_the_next_tick() {
        let mut tracker = tracker();
        tracker.on_tick(30_000);
        let tick = tracker.on_tick(60_000);
        assert!(tick.missed);
        assert_eq!(tick.consecutive_misses, 1);
        assert_eq!(tracker.last_timeout_at(), Some(60_000));
    }

    #[test]
    fn h1_ping_younger_than_the_timeout_is_not_missed() {
        let config = HeartbeatConfig {
            interval_ms: 5_000,
            timeout_ms: 12_000,
            ..HeartbeatConfig::default()
        };
        let mut tracker = HeartbeatTracker::new(&config, 0);
        tracker.on_tick(5_000);
        assert!(!tracker.on_tick(10_000).missed);
    }

    #[test]
    fn h1_ping_exactly_timeout_old_is_missed() {
        let mut tracker = tracker();
        tracker.on_tick(0);
        assert!(tracker.on_tick(12_000).missed);
    }

    #[test]
    fn h1_any_message_since_the_ping_means_not_missed() {
        let mut tracker = tracker();
        tracker.on_tick(30_000);
        tracker.record_alive(31_000);
        assert!(!tracker.on_tick(60_000).missed);
    }

    #[test]
    fn h2_triggers_once_at_max_misses() {
        let mut tracker = tracker();
        let triggers: Vec<_> = (1..=6)
            .map(|n| tracker.on_tick(n * 30_000).trigger)
            .collect();
        assert_eq!(
            triggers,
            vec![
                None,
                None,
                None,
                Some(DeadReason::MissedPings { misses: 3 }),
                None,
                None
            ]
        );
        assert_eq!(tracker.consecutive_misses(), 5);
    }

    #[test]
    fn h2_windows_preset_needs_five_misses() {
        let mut tracker = HeartbeatTracker::new(&HeartbeatConfig::windows(), 0);
        let fired_at: Vec<u64> = (1..=8)
            .filter_map(|n| tracker.on_tick(n * 60_000).trigger.map(|_| n))
            .collect();
        assert_eq!(fired_at, vec![6]);
    }

    #[test]
    fn h2_zero_max_misses_does_not_fire_on_a_healthy_connection() {
        let config = HeartbeatConfig {
            max_misses: 0,
            tick_silence_factor: 0,
            ..HeartbeatConfig::default()
        };
        let mut tracker = HeartbeatTracker::new(&config, 0);
        assert_eq!(tracker.on_tick(30_000).trigger, None);
    }

    #[test]
    fn h3_proof_of_life_resets_misses_and_rearms_the_trigger() {
        let mut tracker = tracker();
        for n in 1..=4 {
            tracker.on_tick(n * 30_000);
        }
        tracker.record_alive(125_000);
        assert_eq!(tracker.consecutive_misses(), 0);
        assert_eq!(tracker.last_alive_at(), Some(125_000));
        let later: Vec<_> = (5..=8)
            .filter_map(|n| tracker.on_tick(n * 30_000).trigger)
            .collect();
        assert_eq!(later, vec![DeadReason::MissedPings { misses: 3 }]);
    }

    #[test]
    fn h2_tick_silence_fires_after_factor_times_tick_interval() {
        let config = HeartbeatConfig {
            max_misses: 100,
            ..HeartbeatConfig::default()
        };
        let mut tracker = HeartbeatTracker::new(&config, 1_000);
        tracker.set_tick_interval(Some(30_000));
        assert_eq!(tracker.silence_deadline(), Some(61_001));
        assert_eq!(tracker.check_silence(61_000), None);
        assert_eq!(
            tracker.check_silence(61_001),
            Some(DeadReason::TickSilence { silent_ms: 60_001 })
        );
        // Once only, until proof of life.
        assert_eq!(tracker.check_silence(90_000), None);
        assert_eq!(tracker.on_tick(120_000).trigger, None);
        tracker.record_alive(120_500);
        assert_eq!(
            tracker.on_tick(181_000).trigger,
            Some(DeadReason::TickSilence { silent_ms: 60_500 })
        );
    }

    #[test]
    fn h2_tick_silence_is_off_without_an_interval_or_with_factor_zero() {
        let mut tracker = tracker();
        assert_eq!(tracker.check_silence(10_000_000), None);
        let config = HeartbeatConfig {
            tick_silence_factor: 0,
            ..HeartbeatConfig::default()
        };
        let mut tracker = HeartbeatTracker::new(&config, 0);
        tracker.set_tick_interval(Some(30_000));
        assert_eq!(tracker.silence_deadline(), None);
        assert_eq!(tracker.check_silence(10_000_000), None);
        // A gateway advertising `tickIntervalMs: 0` sends no ticks: no silence rule either.
        let mut tracker = tracker_with_tick_interval(Some(0));
        assert_eq!(tracker.silence_deadline(), None);
        assert!(!tracker.is_silent_at(10_000_000));
        assert_eq!(tracker.check_silence(10_000_000), None);
    }

    fn tracker_with_tick_interval(interval: Option<u64>) -> HeartbeatTracker {
        let mut tracker = tracker();
        tracker.set_tick_interval(interval);
        tracker
    }

    #[test]
    fn h3_inbound_traffic_postpones_tick_silence() {
        let mut tracker = tracker();
        tracker.set_tick_interval(Some(30_000));
        tracker.record_alive(50_000);
        assert_eq!(tracker.check_silence(100_000), None);
        assert_eq!(tracker.silence_deadline(), Some(110_001));
    }
}
