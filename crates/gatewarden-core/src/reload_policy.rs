//! The gateway's reload policy, read from its JSON5 config file, and its cache (P1, P2).
//!
//! Reading the file is the actor's job; this module turns the text into a [`ReloadPolicy`] and
//! keeps the bookkeeping that decides when to read it again. Parsing never fails: anything
//! missing or malformed falls back to the default of that field (P1), so a broken config file
//! can never stop the supervisor from reloading or restarting.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::ReloadConfig;

/// Deepest bracket nesting the parser is given. The JSON5 parser recurses once per level and has
/// no limit of its own, so a pathological file could overflow the stack; a real config is a few
/// levels deep. 128 is serde_json's own limit.
pub const MAX_CONFIG_NESTING: usize = 128;

/// P1: how the gateway wants config changes applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReloadMode {
    /// Reload in place when possible, restart otherwise (the default).
    #[default]
    Hybrid,
    /// Reload in place.
    Reload,
    /// Always restart.
    Restart,
    /// No in-place reload: config changes restart.
    Off,
}

impl ReloadMode {
    /// The mode named by `text` (exact, lowercase, as the gateway spells it).
    pub fn from_config_str(text: &str) -> Option<Self> {
        match text {
            "hybrid" => Some(ReloadMode::Hybrid),
            "reload" => Some(ReloadMode::Reload),
            "restart" => Some(ReloadMode::Restart),
            "off" => Some(ReloadMode::Off),
            _ => None,
        }
    }
}

/// P1: the policy read from `gateway.reload`. (Not `Copy`, so it can grow fields without
/// breaking callers.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReloadPolicy {
    /// `gateway.reload.mode`.
    pub mode: ReloadMode,
    /// `gateway.reload.debounceMs`, rounded and clamped.
    pub debounce_ms: u64,
}

/// P1: the policy when the file says nothing.
pub fn default_policy(config: &ReloadConfig) -> ReloadPolicy {
    ReloadPolicy {
        mode: ReloadMode::default(),
        debounce_ms: config.default_debounce_ms.min(config.max_debounce_ms),
    }
}

/// P1: read `gateway.reload.mode` and `gateway.reload.debounceMs` from the config file's text.
///
/// The text is JSON5 (comments, trailing commas, unquoted keys). Text that does not parse gives
/// the defaults. `mode` must be one of the four names; `debounceMs` must be a finite number (a
/// string such as `"1500"` is malformed), which is rounded and clamped to `[0, max_debounce_ms]`.
///
/// One quirk of the JSON5 parser: an integer literal too large for 64 bits, or a float literal
/// that overflows to infinity (`1e400`), makes the whole text unparseable, so every field takes
/// its default. Infinity as a debounce gives its default in either reading.
pub fn parse_reload_policy(config_text: &str, config: &ReloadConfig) -> ReloadPolicy {
    let defaults = default_policy(config);
    if nesting_depth_exceeds(config_text, MAX_CONFIG_NESTING) {
        return defaults;
    }
    let Ok(root) = json5::from_str::<Value>(config_text) else {
        return defaults;
    };
    let reload = root
        .get("gateway")
        .and_then(|gateway| gateway.get("reload"));
    let mode = reload
        .and_then(|reload| reload.get("mode"))
        .and_then(Value::as_str)
        .and_then(ReloadMode::from_config_str)
        .unwrap_or(defaults.mode);
    let debounce_ms = reload
        .and_then(|reload| reload.get("debounceMs"))
        .and_then(Value::as_f64)
        .filter(|debounce| debounce.is_finite())
        .map(|debounce| clamp_debounce(debounce, config.max_debounce_ms))
        .unwrap_or(defaults.debounce_ms);
    ReloadPolicy { mode, debounce_ms }
}

/// Does the gateway's own config pin a token (`gateway.auth.token`, which wins over
/// `OPENCLAW_GATEWAY_TOKEN`)? Used to name that key when the gateway rejects our token. The value
/// itself is never returned.
pub fn config_pins_token(config_text: &str) -> bool {
    if nesting_depth_exceeds(config_text, MAX_CONFIG_NESTING) {
        return false;
    }
    let Ok(root) = json5::from_str::<Value>(config_text) else {
        return false;
    };
    root.get("gateway")
        .and_then(|gateway| gateway.get("auth"))
        .and_then(|auth| auth.get("token"))
        .is_some_and(|token| !token.is_null())
}

/// Round (half away from zero) and clamp to `[0, max]`. The float-to-int `as` saturates, and
/// the clamp happens in floating point first, so no value can wrap.
fn clamp_debounce(debounce: f64, max_ms: u64) -> u64 {
    let rounded = debounce.round();
    if rounded <= 0.0 {
        0
    } else if rounded >= max_ms as f64 {
        max_ms
    } else {
        (rounded as u64).min(max_ms)
    }
}

/// True when `[`/`{` nesting goes deeper than `limit`, counting only brackets outside strings
/// and comments. A miscount only makes a pathological file fall back to defaults.
fn nesting_depth_exceeds(text: &str, limit: usize) -> bool {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            quote @ (b'"' | b'\'') => {
                index += 1;
                while index < bytes.len() && bytes[index] != quote {
                    // Skip the escaped character (it may be a quote).
                    index += if bytes[index] == b'\\' { 2 } else { 1 };
                }
            }
            b'/' if bytes.get(index + 1) == Some(&b'/') => {
                while index < bytes.len() && bytes[index] != b'\n' {
                    index += 1;
                }
            }
            b'/' if bytes.get(index + 1) == Some(&b'*') => {
                index += 2;
                while index < bytes.len()
                    && !(bytes[index] == b'*' && bytes.get(index + 1) == Some(&b'/'))
                {
                    index += 1;
                }
                index += 1;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        index += 1;
    }
    false
}

/// P2: what to do when the policy is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshDecision {
    /// The cached policy is fresh enough: use it.
    UseCached,
    /// Read the file now (then call [`ReloadPolicyCache::read_started`]).
    StartRead,
    /// A read is already running: wait for its result instead of starting another.
    JoinInFlight,
}

/// P2: the cached policy and its refresh bookkeeping.
#[derive(Debug, Clone)]
pub struct ReloadPolicyCache {
    cache_ms: u64,
    policy: ReloadPolicy,
    loaded_at: Option<u64>,
    refresh_in_flight: bool,
}

impl ReloadPolicyCache {
    /// A cache holding the defaults, never loaded.
    pub fn new(config: &ReloadConfig) -> Self {
        ReloadPolicyCache {
            cache_ms: config.policy_cache_ms,
            policy: default_policy(config),
            loaded_at: None,
            refresh_in_flight: false,
        }
    }

    /// P2: use the cache, start a read, or join the read in flight. A forced refresh (L2: every
    /// start) skips the cache but still joins a running read: that read is at least as fresh as
    /// one started now.
    pub fn needs_refresh(&self, now_ms: u64, force: bool) -> RefreshDecision {
        if self.refresh_in_flight {
            return RefreshDecision::JoinInFlight;
        }
        match self.loaded_at {
            Some(loaded_at) if !force && now_ms.saturating_sub(loaded_at) < self.cache_ms => {
                RefreshDecision::UseCached
            }
            _ => RefreshDecision::StartRead,
        }
    }

    /// A read of the file began.
    pub fn read_started(&mut self) {
        self.refresh_in_flight = true;
    }

    /// The read finished with `policy` (the defaults when the file was unreadable, P1).
    pub fn read_finished(&mut self, now_ms: u64, policy: ReloadPolicy) {
        self.policy = policy;
        self.loaded_at = Some(now_ms);
        self.refresh_in_flight = false;
    }

    /// The read was abandoned without a result (its task was cancelled): keep the old policy and
    /// let the next request start a new read.
    pub fn read_abandoned(&mut self) {
        self.refresh_in_flight = false;
    }

    /// The current policy (the defaults until the first read finishes).
    pub fn current(&self) -> &ReloadPolicy {
        &self.policy
    }

    /// When the current policy was read.
    pub fn loaded_at(&self) -> Option<u64> {
        self.loaded_at
    }

    /// True while a read runs.
    pub fn refresh_in_flight(&self) -> bool {
        self.refresh_in_flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> ReloadPolicy {
        parse_reload_policy(text, &ReloadConfig::default())
    }

    fn policy(mode: ReloadMode, debounce_ms: u64) -> ReloadPolicy {
        ReloadPolicy { mode, debounce_ms }
    }

    #[test]
    fn p1_defaults_are_hybrid_and_1200() {
        assert_eq!(
            default_policy(&ReloadConfig::default()),
            policy(ReloadMode::Hybrid, 1_200)
        );
        assert_eq!(parse("{}"), policy(ReloadMode::Hybrid, 1_200));
    }

    #[test]
    fn p1_reads_mode_and_debounce() {
        for (mode, expected) in [
            ("hybrid", ReloadMode::Hybrid),
            ("reload", ReloadMode::Reload),
            ("restart", ReloadMode::Restart),
            ("off", ReloadMode::Off),
        ] {
            let text =
                format!(r#"{{"gateway":{{"reload":{{"mode":"{mode}","debounceMs":500}}}}}}"#);
            assert_eq!(parse(&text), policy(expected, 500));
        }
    }

    #[test]
    fn p1_parses_json5_comments_trailing_commas_and_unquoted_keys() {
        let text = r#"
            // the user's config
            {
              gateway: {
                /* reload settings */
                reload: { mode: 'off', debounceMs: 2500, },
              },
            }
        "#;
        assert_eq!(parse(text), policy(ReloadMode::Off, 2_500));
    }

    #[test]
    fn p1_rounds_debounce() {
        assert_eq!(
            parse("{gateway:{reload:{debounceMs: 1500.5}}}").debounce_ms,
            1_501
        );
        assert_eq!(
            parse("{gateway:{reload:{debounceMs: 1500.4}}}").debounce_ms,
            1_500
        );
    }

    #[test]
    fn p1_clamps_debounce_to_60000() {
        assert_eq!(
            parse("{gateway:{reload:{debounceMs: 1e12}}}").debounce_ms,
            60_000
        );
        assert_eq!(
            parse("{gateway:{reload:{debounceMs: 60001}}}").debounce_ms,
            60_000
        );
    }

    #[test]
    fn p1_clamps_negative_debounce_to_zero() {
        assert_eq!(parse("{gateway:{reload:{debounceMs: -5}}}").debounce_ms, 0);
        assert_eq!(
            parse("{gateway:{reload:{debounceMs: -0.4}}}").debounce_ms,
            0
        );
    }

    #[test]
    fn p1_non_finite_or_non_number_debounce_takes_the_default() {
        for value in [
            "NaN",
            "Infinity",
            "-Infinity",
            "'1500'",
            "null",
            "true",
            "[1]",
            "{}",
        ] {
            let text = format!("{{gateway:{{reload:{{mode:'restart', debounceMs: {value}}}}}}}");
            assert_eq!(parse(&text), policy(ReloadMode::Restart, 1_200), "{value}");
        }
    }

    #[test]
    fn p1_unknown_or_mistyped_mode_takes_the_default() {
        for value in ["'hot'", "'HYBRID'", "5", "null", "['off']"] {
            let text = format!("{{gateway:{{reload:{{mode: {value}, debounceMs: 10}}}}}}");
            assert_eq!(parse(&text), policy(ReloadMode::Hybrid, 10), "{value}");
        }
    }

    #[test]
    fn p1_wrong_nesting_types_give_defaults() {
        for text in [
            "{gateway: 5}",
            "{gateway: {reload: 'off'}}",
            "{gateway: [{reload: {mode: 'off'}}]}",
            "[1, 2]",
            "'text'",
        ] {
            assert_eq!(parse(text), policy(ReloadMode::Hybrid, 1_200), "{text}");
        }
    }

    #[test]
    fn p1_unparseable_text_gives_defaults() {
        for text in ["", "{", "not json at all", "{gateway:{reload:{mode:'off'}}"] {
            assert_eq!(parse(text), policy(ReloadMode::Hybrid, 1_200), "{text}");
        }
    }

    #[test]
    fn p1_huge_integer_literal_makes_the_text_unparseable() {
        assert_eq!(
            parse("{gateway:{reload:{mode:'off', debounceMs: 99999999999999999999999}}}"),
            policy(ReloadMode::Hybrid, 1_200)
        );
    }

    #[test]
    fn p1_deep_nesting_gives_defaults_without_overflowing_the_stack() {
        let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(parse(&deep), policy(ReloadMode::Hybrid, 1_200));
        // Brackets inside strings and comments do not count.
        let text = format!(
            "// {}\n{{gateway:{{reload:{{mode:'off', x: '{}'}}}}}}",
            "[".repeat(500),
            "{".repeat(500)
        );
        assert_eq!(parse(&text).mode, ReloadMode::Off);
    }

    #[test]
    fn p1_config_max_debounce_is_honoured() {
        let config = ReloadConfig {
            max_debounce_ms: 100,
            ..ReloadConfig::default()
        };
        assert_eq!(
            parse_reload_policy("{gateway:{reload:{debounceMs: 5000}}}", &config).debounce_ms,
            100
        );
        // A default above the maximum is clamped too.
        assert_eq!(default_policy(&config).debounce_ms, 100);
    }

    #[test]
    fn p2_uses_the_cache_for_15_seconds() {
        let mut cache = ReloadPolicyCache::new(&ReloadConfig::default());
        assert_eq!(cache.needs_refresh(0, false), RefreshDecision::StartRead);
        cache.read_started();
        cache.read_finished(1_000, policy(ReloadMode::Off, 10));
        assert_eq!(cache.current(), &policy(ReloadMode::Off, 10));
        assert_eq!(
            cache.needs_refresh(15_999, false),
            RefreshDecision::UseCached
        );
        assert_eq!(
            cache.needs_refresh(16_000, false),
            RefreshDecision::StartRead
        );
    }

    #[test]
    fn p2_force_skips_the_cache() {
        let mut cache = ReloadPolicyCache::new(&ReloadConfig::default());
        cache.read_started();
        cache.read_finished(1_000, policy(ReloadMode::Off, 10));
        assert_eq!(cache.needs_refresh(1_001, true), RefreshDecision::StartRead);
    }

    #[test]
    fn p2_overlapping_refreshes_share_one_read() {
        let mut cache = ReloadPolicyCache::new(&ReloadConfig::default());
        cache.read_started();
        assert_eq!(cache.needs_refresh(1, false), RefreshDecision::JoinInFlight);
        assert_eq!(cache.needs_refresh(1, true), RefreshDecision::JoinInFlight);
        cache.read_abandoned();
        assert_eq!(cache.needs_refresh(2, false), RefreshDecision::StartRead);
        assert_eq!(cache.current(), &default_policy(&ReloadConfig::default()));
    }

    proptest! {
        #[test]
        fn p1_parse_never_panics_on_arbitrary_text(text in any::<String>()) {
            let policy = parse(&text);
            prop_assert!(policy.debounce_ms <= 60_000);
        }

        #[test]
        fn p1_parse_never_panics_on_config_like_text(
            text in r#"\{ ?(gateway|'gateway'|"gateway") ?: ?\{ ?reload ?: ?\{ ?(mode|debounceMs) ?: ?(-?[0-9]{1,25}(\.[0-9]{0,5})?(e-?[0-9]{1,3})?|NaN|Infinity|'[a-z]{0,8}'|null|\[\]|\{\})[,]? ?\}[,]? ?\}[,]? ?\}"#
        ) {
            let policy = parse(&text);
            prop_assert!(policy.debounce_ms <= 60_000);
        }

        #[test]
        fn p1_any_finite_debounce_lands_in_range(debounce in proptest::num::f64::NORMAL | proptest::num::f64::ZERO) {
            let text = format!("{{gateway:{{reload:{{debounceMs: {debounce:e}}}}}}}");
            let parsed = parse(&text).debounce_ms;
            prop_assert!(parsed <= 60_000);
            if (0.0..=60_000.0).contains(&debounce) {
                prop_assert_eq!(parsed, debounce.round() as u64);
            }
        }
    }

    #[test]
    fn a3_config_pinning_a_token_is_recognised_without_reading_it_out() {
        assert!(config_pins_token(r#"{gateway: {auth: {token: "x"}}}"#));
        assert!(!config_pins_token(r#"{gateway: {auth: {mode: "token"}}}"#));
        assert!(!config_pins_token("not json"));
        assert!(!config_pins_token(
            r#"{"gateway": {"auth": {"token": null}}}"#
        ));
    }
}
