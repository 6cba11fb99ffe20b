//! Connection diagnostics and the health summary built from them (H5, H6, M6).
//!
//! [`Diagnostics`] is a plain record the machine updates as facts arrive; [`summarize_health`]
//! turns it, with the lifecycle state, into the `healthy | degraded | unresponsive` answer the
//! health API reports.

use serde::{Deserialize, Serialize};

use crate::config::HeartbeatConfig;
use crate::heartbeat::effective_max_misses;

/// How an RPC failed, as far as M6 cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RpcFailureKind {
    /// No reply within the time limit.
    Timeout,
    /// The call was made while not connected.
    NotConnected,
    /// The gateway was stopped while the call waited.
    Stopped,
    /// The request could not be written to the socket.
    SendFailed,
    /// The gateway answered with an error: the connection works, so it is not an RPC failure.
    Gateway,
}

impl RpcFailureKind {
    /// M6: only transport failures count against the connection.
    pub fn is_transport(self) -> bool {
        !matches!(self, RpcFailureKind::Gateway)
    }
}

/// H5/M6 diagnostics of the gateway connection. Times are the caller's monotonic milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Diagnostics {
    /// H5: the last pong or inbound frame.
    pub last_alive_at: Option<u64>,
    /// M6: the last successful RPC.
    pub last_rpc_success_at: Option<u64>,
    /// M6: the last RPC transport failure.
    pub last_rpc_failure_at: Option<u64>,
    /// M6: the method of the last RPC transport failure.
    pub last_rpc_failure_method: Option<String>,
    /// H5: the last tick at which a ping counted as missed.
    pub last_heartbeat_timeout_at: Option<u64>,
    /// H5: consecutive missed pings.
    pub consecutive_heartbeat_misses: u32,
    /// H5: when the socket last closed.
    pub last_socket_close_at: Option<u64>,
    /// H5: the close code of that close.
    pub last_socket_close_code: Option<u16>,
    /// M6: RPC transport failures since the last success.
    pub consecutive_rpc_failures: u32,
    /// H6: the last successful channel-status check.
    pub last_channels_status_ok_at: Option<u64>,
    /// H6: the last failed channel-status check.
    pub last_channels_status_failure_at: Option<u64>,
}

impl Diagnostics {
    /// M6: an RPC succeeded: the consecutive failure count starts over.
    pub fn record_rpc_success(&mut self, now_ms: u64) {
        self.last_rpc_success_at = Some(now_ms);
        self.consecutive_rpc_failures = 0;
    }

    /// M6: an RPC failed. Only transport failures are recorded; a gateway error answer neither
    /// counts nor resets the count (the gateway answered, but the call did not succeed).
    pub fn record_rpc_failure(&mut self, now_ms: u64, method: &str, kind: RpcFailureKind) {
        if !kind.is_transport() {
            return;
        }
        self.last_rpc_failure_at = Some(now_ms);
        self.last_rpc_failure_method = Some(method.to_string());
        self.consecutive_rpc_failures = self.consecutive_rpc_failures.saturating_add(1);
    }

    /// H3/H5: proof of life: the heartbeat misses are over.
    pub fn record_alive(&mut self, now_ms: u64) {
        self.last_alive_at = Some(now_ms);
        self.consecutive_heartbeat_misses = 0;
    }

    /// H5: a ping counted as missed; `misses` is the consecutive count now.
    pub fn record_heartbeat_timeout(&mut self, now_ms: u64, misses: u32) {
        self.last_heartbeat_timeout_at = Some(now_ms);
        self.consecutive_heartbeat_misses = misses;
    }

    /// H5: the socket closed with `code` (`None` when it closed without a close frame).
    pub fn record_socket_close(&mut self, now_ms: u64, code: Option<u16>) {
        self.last_socket_close_at = Some(now_ms);
        self.last_socket_close_code = code;
    }

    /// H6: a channel-status check succeeded (`ok`) or failed.
    pub fn record_channel_status(&mut self, now_ms: u64, ok: bool) {
        if ok {
            self.last_channels_status_ok_at = Some(now_ms);
        } else {
            self.last_channels_status_failure_at = Some(now_ms);
        }
    }

    /// The misses of a connection that is gone are meaningless (the seed zeroes them at stop).
    pub fn clear_heartbeat_misses(&mut self) {
        self.consecutive_heartbeat_misses = 0;
    }
}

/// H6 overall health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    /// Running, and nothing is wrong.
    Healthy,
    /// Not running, or something is wrong but the gateway still answers.
    Degraded,
    /// Running, but `max_misses` pings in a row went unanswered.
    Unresponsive,
}

/// H6 reasons, reported as snake_case strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthReason {
    /// Lifecycle state is `error`.
    GatewayError,
    /// Lifecycle state is neither `running` nor `error`.
    GatewayNotRunning,
    /// Consecutive misses reached the threshold.
    GatewayUnresponsive,
    /// Some pings were missed, fewer than the threshold.
    GatewayDegraded,
    /// RPC transport failures since the last success.
    RpcTimeout,
    /// A recent channel-status check failed and none succeeded since.
    ChannelsStatusTimeout,
}

/// What [`summarize_health`] needs besides the config.
#[derive(Debug, Clone, Copy)]
pub struct HealthInput<'a> {
    /// Lifecycle state is `running`.
    pub running: bool,
    /// Lifecycle state is `error`.
    pub errored: bool,
    /// The current diagnostics.
    pub diagnostics: &'a Diagnostics,
}

/// H6 health summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthSummary {
    /// Overall state.
    pub state: HealthState,
    /// Why it is not healthy (empty when healthy).
    pub reasons: Vec<HealthReason>,
    /// H5: consecutive missed pings.
    pub consecutive_heartbeat_misses: u32,
    /// H5: the last proof of life.
    pub last_alive_at: Option<u64>,
    /// M6: the last successful RPC.
    pub last_rpc_success_at: Option<u64>,
    /// M6: the last RPC transport failure.
    pub last_rpc_failure_at: Option<u64>,
    /// M6: its method.
    pub last_rpc_failure_method: Option<String>,
    /// H6: the last successful channel-status check.
    pub last_channels_status_ok_at: Option<u64>,
    /// H6: the last failed channel-status check.
    pub last_channels_status_failure_at: Option<u64>,
}

/// H6: summarise health.
///
/// Reading of H6: when the gateway is not `running` the summary is `degraded` with the single
/// reason `gateway_error` or `gateway_not_running`, and the connection rules are not evaluated.
/// Misses, RPC failures and channel checks describe a connection, and there is none outside
/// `running` (stale numbers from the last connection would otherwise turn a stopped gateway
/// `unresponsive`, which says the wrong thing). The diagnostic fields are still reported as they
/// are.
///
/// In `running`: misses ≥ threshold → `unresponsive`; misses > 0 → `gateway_degraded`; RPC
/// transport failures > 0 → `rpc_timeout`; a channel-status failure no older than
/// `channel_failure_window_ms` and newer than the last success → `channels_status_timeout`. Any
/// reason → `degraded` unless unresponsive; none → `healthy`.
pub fn summarize_health(
    input: &HealthInput<'_>,
    config: &HeartbeatConfig,
    now_ms: u64,
) -> HealthSummary {
    let diagnostics = input.diagnostics;
    let mut reasons = Vec::new();
    let mut state = HealthState::Healthy;
    if !input.running {
        reasons.push(if input.errored {
            HealthReason::GatewayError
        } else {
            HealthReason::GatewayNotRunning
        });
    } else {
        let misses = diagnostics.consecutive_heartbeat_misses;
        if misses >= effective_max_misses(config) {
            reasons.push(HealthReason::GatewayUnresponsive);
            state = HealthState::Unresponsive;
        } else if misses > 0 {
            reasons.push(HealthReason::GatewayDegraded);
        }
        if diagnostics.consecutive_rpc_failures > 0 {
            reasons.push(HealthReason::RpcTimeout);
        }
        if channel_failure_is_current(diagnostics, config, now_ms) {
            reasons.push(HealthReason::ChannelsStatusTimeout);
        }
    }
    if state != HealthState::Unresponsive && !reasons.is_empty() {
        state = HealthState::Degraded;
    }
    HealthSummary {
        state,
        reasons,
        consecutive_heartbeat_misses: diagnostics.consecutive_heartbeat_misses,
        last_alive_at: diagnostics.last_alive_at,
        last_rpc_success_at: diagnostics.last_rpc_success_at,
        last_rpc_failure_at: diagnostics.last_rpc_failure_at,
        last_rpc_failure_method: diagnostics.last_rpc_failure_method.clone(),
        last_channels_status_ok_at: diagnostics.last_channels_status_ok_at,
        last_channels_status_failure_at: diagnostics.last_channels_status_failure_at,
    }
}

fn channel_failure_is_current(
    diagnostics: &Diagnostics,
    config: &HeartbeatConfig,
    now_ms: u64,
) -> bool {
    let Some(failed_at) = diagnostics.last_channels_status_failure_at else {
        return false;
    };
    let recent = now_ms.saturating_sub(failed_at) <= config.channel_failure_window_ms;
    let newer_than_ok = diagnostics
        .last_channels_status_ok_at
        .is_none_or(|ok_at| failed_at > ok_at);
    recent && newer_than_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(diagnostics: &Diagnostics) -> HealthInput<'_> {
        HealthInput {
            running: true,
            errored: false,
            diagnostics,
        }
    }

    fn summary(input: HealthInput<'_>, now_ms: u64) -> HealthSummary {
        summarize_health(&input, &HeartbeatConfig::default(), now_ms)
    }

    #[test]
    fn h6_running_with_nothing_wrong_is_healthy() {
        let diagnostics = Diagnostics::default();
        let summary = summary(running(&diagnostics), 0);
        assert_eq!(summary.state, HealthState::Healthy);
        assert!(summary.reasons.is_empty());
    }

    #[test]
    fn h6_error_state_is_degraded_with_gateway_error() {
        let diagnostics = Diagnostics::default();
        let input = HealthInput {
            running: false,
            errored: true,
            diagnostics: &diagnostics,
        };
        let summary = summary(input, 0);
        assert_eq!(summary.state, HealthState::Degraded);
        assert_eq!(summary.reasons, vec![HealthReason::GatewayError]);
    }

    #[test]
    fn h6_not_running_ignores_stale_connection_diagnostics() {
        let diagnostics = Diagnostics {
            consecutive_heartbeat_misses: 7,
            consecutive_rpc_failures: 2,
            ..Diagnostics::default()
        };
        let input = HealthInput {
            running: false,
            errored: false,
            diagnostics: &diagnostics,
        };
        let summary = summary(input, 0);
        assert_eq!(summary.state, HealthState::Degraded);
        assert_eq!(summary.reasons, vec![HealthReason::GatewayNotRunning]);
        assert_eq!(summary.consecutive_heartbeat_misses, 7);
    }

    #[test]
    fn h6_misses_at_threshold_are_unresponsive() {
        let diagnostics = Diagnostics {
            consecutive_heartbeat_misses: 3,
            consecutive_rpc_failures: 1,
            ..Diagnostics::default()
        };
        let summary = summary(running(&diagnostics), 0);
        assert_eq!(summary.state, HealthState::Unresponsive);
        assert_eq!(
            summary.reasons,
            vec![HealthReason::GatewayUnresponsive, HealthReason::RpcTimeout]
        );
    }

    #[test]
    fn h6_windows_threshold_is_five() {
        let diagnostics = Diagnostics {
            consecutive_heartbeat_misses: 4,
            ..Diagnostics::default()
        };
        let summary = summarize_health(&running(&diagnostics), &HeartbeatConfig::windows(), 0);
        assert_eq!(summary.state, HealthState::Degraded);
        assert_eq!(summary.reasons, vec![HealthReason::GatewayDegraded]);
    }

    #[test]
    fn h6_some_misses_are_degraded() {
        let diagnostics = Diagnostics {
            consecutive_heartbeat_misses: 1,
            ..Diagnostics::default()
        };
        let summary = summary(running(&diagnostics), 0);
        assert_eq!(summary.state, HealthState::Degraded);
        assert_eq!(summary.reasons, vec![HealthReason::GatewayDegraded]);
    }

    #[test]
    fn h6_rpc_failures_are_rpc_timeout() {
        let diagnostics = Diagnostics {
            consecutive_rpc_failures: 1,
            ..Diagnostics::default()
        };
        let summary = summary(running(&diagnostics), 0);
        assert_eq!(summary.state, HealthState::Degraded);
        assert_eq!(summary.reasons, vec![HealthReason::RpcTimeout]);
    }

    #[test]
    fn h6_recent_channel_failure_newer_than_success_degrades() {
        let mut diagnostics = Diagnostics::default();
        diagnostics.record_channel_status(1_000, true);
        diagnostics.record_channel_status(2_000, false);
        let recent = summary(running(&diagnostics), 122_000);
        assert_eq!(recent.reasons, vec![HealthReason::ChannelsStatusTimeout]);
        let old = summary(running(&diagnostics), 122_001);
        assert_eq!(old.state, HealthState::Healthy);
        diagnostics.record_channel_status(3_000, true);
        let recovered = summary(running(&diagnostics), 3_000);
        assert_eq!(recovered.state, HealthState::Healthy);
    }

    #[test]
    fn h6_serializes_lowercase_state_and_snake_case_reasons() {
        let diagnostics = Diagnostics {
            consecutive_heartbeat_misses: 1,
            consecutive_rpc_failures: 1,
            ..Diagnostics::default()
        };
        let json = serde_json::to_value(summary(running(&diagnostics), 0)).unwrap();
        assert_eq!(json["state"], "degraded");
        assert_eq!(
            json["reasons"],
            serde_json::json!(["gateway_degraded", "rpc_timeout"])
        );
        assert_eq!(json["consecutiveHeartbeatMisses"], 1);
    }

    #[test]
    fn m6_transport_failures_count_and_success_resets() {
        let mut diagnostics = Diagnostics::default();
        diagnostics.record_rpc_failure(1, "status", RpcFailureKind::Timeout);
        diagnostics.record_rpc_failure(2, "health", RpcFailureKind::SendFailed);
        assert_eq!(diagnostics.consecutive_rpc_failures, 2);
        assert_eq!(diagnostics.last_rpc_failure_at, Some(2));
        assert_eq!(
            diagnostics.last_rpc_failure_method.as_deref(),
            Some("health")
        );
        diagnostics.record_rpc_success(3);
        assert_eq!(diagnostics.consecutive_rpc_failures, 0);
        assert_eq!(diagnostics.last_rpc_success_at, Some(3));
    }

    #[test]
    fn m6_gateway_errors_neither_count_nor_reset() {
        let mut diagnostics = Diagnostics::default();
        diagnostics.record_rpc_failure(1, "status", RpcFailureKind::NotConnected);
        diagnostics.record_rpc_failure(2, "bogus", RpcFailureKind::Gateway);
        assert_eq!(diagnostics.consecutive_rpc_failures, 1);
        assert_eq!(
            diagnostics.last_rpc_failure_method.as_deref(),
            Some("status")
        );
        assert!(RpcFailureKind::Stopped.is_transport());
        assert!(!RpcFailureKind::Gateway.is_transport());
    }

    #[test]
    fn h5_records_alive_timeouts_and_socket_closes() {
        let mut diagnostics = Diagnostics::default();
        diagnostics.record_heartbeat_timeout(10, 2);
        assert_eq!(diagnostics.consecutive_heartbeat_misses, 2);
        assert_eq!(diagnostics.last_heartbeat_timeout_at, Some(10));
        diagnostics.record_alive(11);
        assert_eq!(diagnostics.consecutive_heartbeat_misses, 0);
        assert_eq!(diagnostics.last_alive_at, Some(11));
        diagnostics.record_socket_close(12, Some(1012));
        assert_eq!(diagnostics.last_socket_close_at, Some(12));
        assert_eq!(diagnostics.last_socket_close_code, Some(1012));
        let json = serde_json::to_value(&diagnostics).unwrap();
        assert_eq!(json["lastSocketCloseCode"], 1012);
    }
}
