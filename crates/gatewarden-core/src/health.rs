//! Connection diagnostics and the health summary built from them (H5, H6, M6).
//!
//! [`Diagnostics`] is a plain record the machine updates as facts arrive; [`summarize_health`]
//! turns it, with the lifecycle state, into the `healthy | degraded | unresponsive` answer the
//! health API reports.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{HeartbeatConfig, LivenessConfig};
use crate::liveness::{LivenessClass, RecoveryPhase};

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
    /// H6: capability methods whose last call timed out (method → when); they degrade that
    /// capability, not the core.
    pub capability_timeouts: BTreeMap<String, u64>,
}

impl Diagnostics {
    /// M6: an RPC succeeded: the consecutive failure count starts over.
    pub fn record_rpc_success(&mut self, now_ms: u64) {
        self.last_rpc_success_at = Some(now_ms);
        self.consecutive_rpc_failures = 0;
    }

    /// M6: an RPC failed. Only transport failures are recorded; a gateway error answer neither
    /// counts nor resets the count (the gateway answered, but the call did not succeed).
    /// H6: a call refused because nothing was connected is no RPC failure at all, and a time-out
    /// of a `capability` method marks that capability, not the connection.
    pub fn record_rpc_failure(
        &mut self,
        now_ms: u64,
        method: &str,
        kind: RpcFailureKind,
        capability: bool,
    ) {
        if !kind.is_transport() || kind == RpcFailureKind::NotConnected {
            return;
        }
        self.last_rpc_failure_at = Some(now_ms);
        self.last_rpc_failure_method = Some(method.to_string());
        if capability && kind == RpcFailureKind::Timeout {
            self.capability_timeouts.insert(method.to_string(), now_ms);
            return;
        }
        self.consecutive_rpc_failures = self.consecutive_rpc_failures.saturating_add(1);
    }

    /// H6: `method` succeeded: its capability is no longer degraded.
    pub fn record_rpc_success_of(&mut self, now_ms: u64, method: &str) {
        self.record_rpc_success(now_ms);
        self.capability_timeouts.remove(method);
    }

    /// H6: evidence resets on each new connection.
    pub fn reset_for_connection(&mut self) {
        self.consecutive_rpc_failures = 0;
        self.consecutive_heartbeat_misses = 0;
        self.capability_timeouts.clear();
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
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    /// Running, and nothing is wrong.
    Healthy,
    /// Not running, or something is wrong but nothing says the gateway is dead.
    Degraded,
    /// A core probe (D4, D6) is in flight: the gateway was silent and is being checked.
    Verifying,
    /// A liveness restart is pending or running (D3, D4, D7); never for silence alone.
    Unresponsive,
    /// D5: the attached external gateway stopped answering; only the transport reconnects.
    ExternalUnavailable,
}

/// H6 reasons, reported as snake_case strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthReason {
    /// Lifecycle state is `error`.
    GatewayError,
    /// Lifecycle state is neither `running` nor `error`.
    GatewayNotRunning,
    /// A liveness restart is pending or running.
    GatewayUnresponsive,
    /// Some pongs were missed (diagnostics only: D1).
    GatewayDegraded,
    /// D2: silent, but its event loop is working.
    Busy,
    /// D4/D6: a core probe is checking the silent gateway.
    Verifying,
    /// RPC transport failures of non-capability methods since the last success.
    RpcTimeout,
    /// A capability method (`health`, `status`, ...) timed out recently.
    CapabilityTimeout,
    /// A recent channel-status check failed and none succeeded since.
    ChannelsStatusTimeout,
    /// D5: the external gateway does not answer.
    ExternalUnavailable,
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
    /// D2: the latest classification (`Alive` when not running).
    pub liveness: LivenessClass,
    /// What the recovery is doing.
    pub phase: RecoveryPhase,
    /// D5: the attached external gateway failed its core probe.
    pub external_unavailable: bool,
}

/// H6 health summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthSummary {
    /// Overall state.
    pub state: HealthState,
    /// Why it is not healthy (empty when healthy).
    pub reasons: Vec<HealthReason>,
    /// D2: the latest classification.
    pub liveness: LivenessClass,
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
    /// H6: capability methods degraded now.
    pub degraded_capabilities: Vec<String>,
    /// H6: the last successful channel-status check.
    pub last_channels_status_ok_at: Option<u64>,
    /// H6: the last failed channel-status check.
    pub last_channels_status_failure_at: Option<u64>,
}

/// H6: summarise health.
///
/// - D5 first: an external gateway that failed its core probe is `external_unavailable`, in
///   whatever state the transport reconnect is.
/// - A liveness restart pending or running is the only `unresponsive` (D3, D4, D7).
/// - Not `running`: `degraded` with the single reason `gateway_error` or `gateway_not_running`;
///   the connection rules are not evaluated (stale numbers from the last connection would say the
///   wrong thing).
/// - In `running`: misses > 0 → `gateway_degraded`; `busy` → `busy`; non-capability transport
///   failures → `rpc_timeout`; a capability time-out no older than the window → `capability_timeout`;
///   a recent channel-status failure newer than the last success → `channels_status_timeout`.
///   A core probe in flight → `verifying` (with the reasons); else any reason → `degraded`;
///   none → `healthy`.
pub fn summarize_health(
    input: &HealthInput<'_>,
    heartbeat: &HeartbeatConfig,
    liveness: &LivenessConfig,
    now_ms: u64,
) -> HealthSummary {
    let diagnostics = input.diagnostics;
    let mut reasons = Vec::new();
    let capabilities: Vec<String> = diagnostics
        .capability_timeouts
        .iter()
        .filter(|(_, at)| now_ms.saturating_sub(**at) <= liveness.capability_failure_window_ms)
        .map(|(method, _)| method.clone())
        .collect();
    let restarting = matches!(
        input.phase,
        RecoveryPhase::RestartPending | RecoveryPhase::RestartExecuting
    );
    let state = if input.external_unavailable {
        reasons.push(HealthReason::ExternalUnavailable);
        HealthState::ExternalUnavailable
    } else if restarting {
        reasons.push(HealthReason::GatewayUnresponsive);
        HealthState::Unresponsive
    } else if !input.running {
        reasons.push(if input.errored {
            HealthReason::GatewayError
        } else {
            HealthReason::GatewayNotRunning
        });
        HealthState::Degraded
    } else {
        if diagnostics.consecutive_heartbeat_misses > 0 {
            reasons.push(HealthReason::GatewayDegraded);
        }
        if input.liveness == LivenessClass::Busy {
            reasons.push(HealthReason::Busy);
        }
        if diagnostics.consecutive_rpc_failures > 0 {
            reasons.push(HealthReason::RpcTimeout);
        }
        if !capabilities.is_empty() {
            reasons.push(HealthReason::CapabilityTimeout);
        }
        if channel_failure_is_current(diagnostics, heartbeat, now_ms) {
            reasons.push(HealthReason::ChannelsStatusTimeout);
        }
        if input.phase == RecoveryPhase::Verifying {
            reasons.push(HealthReason::Verifying);
            HealthState::Verifying
        } else if reasons.is_empty() {
            HealthState::Healthy
        } else {
            HealthState::Degraded
        }
    };
    HealthSummary {
        state,
        reasons,
        liveness: input.liveness,
        consecutive_heartbeat_misses: diagnostics.consecutive_heartbeat_misses,
        last_alive_at: diagnostics.last_alive_at,
        last_rpc_success_at: diagnostics.last_rpc_success_at,
        last_rpc_failure_at: diagnostics.last_rpc_failure_at,
        last_rpc_failure_method: diagnostics.last_rpc_failure_method.clone(),
        degraded_capabilities: capabilities,
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
            liveness: LivenessClass::Alive,
            phase: RecoveryPhase::Watching,
            external_unavailable: false,
        }
    }

    fn not_running(diagnostics: &Diagnostics, errored: bool) -> HealthInput<'_> {
        HealthInput {
            running: false,
            errored,
            ..running(diagnostics)
        }
    }

    fn summary(input: HealthInput<'_>, now_ms: u64) -> HealthSummary {
        summarize_health(
            &input,
            &HeartbeatConfig::default(),
            &LivenessConfig::default(),
            now_ms,
        )
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
        let summary = summary(not_running(&diagnostics, true), 0);
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
        let summary = summary(not_running(&diagnostics, false), 0);
        assert_eq!(summary.state, HealthState::Degraded);
        assert_eq!(summary.reasons, vec![HealthReason::GatewayNotRunning]);
        assert_eq!(summary.consecutive_heartbeat_misses, 7);
    }

    #[test]
    fn h6_misses_at_any_count_are_degraded_never_unresponsive() {
        for misses in [1, 3, 50] {
            let diagnostics = Diagnostics {
                consecutive_heartbeat_misses: misses,
                ..Diagnostics::default()
            };
            let summary = summary(running(&diagnostics), 0);
            assert_eq!(summary.state, HealthState::Degraded, "{misses}");
            assert_eq!(summary.reasons, vec![HealthReason::GatewayDegraded]);
        }
    }

    #[test]
    fn h6_busy_is_degraded_with_reason_busy() {
        let diagnostics = Diagnostics {
            consecutive_heartbeat_misses: 4,
            ..Diagnostics::default()
        };
        let input = HealthInput {
            liveness: LivenessClass::Busy,
            ..running(&diagnostics)
        };
        let summary = summary(input, 0);
        assert_eq!(summary.state, HealthState::Degraded);
        assert_eq!(
            summary.reasons,
            vec![HealthReason::GatewayDegraded, HealthReason::Busy]
        );
        assert_eq!(summary.liveness, LivenessClass::Busy);
    }

    #[test]
    fn h6_verifying_while_a_core_probe_is_in_flight() {
        let diagnostics = Diagnostics::default();
        let input = HealthInput {
            liveness: LivenessClass::Busy,
            phase: RecoveryPhase::Verifying,
            ..running(&diagnostics)
        };
        let summary = summary(input, 0);
        assert_eq!(summary.state, HealthState::Verifying);
        assert_eq!(
            summary.reasons,
            vec![HealthReason::Busy, HealthReason::Verifying]
        );
    }

    #[test]
    fn h6_unresponsive_only_while_a_liveness_restart_is_pending_or_running() {
        let diagnostics = Diagnostics::default();
        for phase in [
            RecoveryPhase::RestartPending,
            RecoveryPhase::RestartExecuting,
        ] {
            for running_now in [true, false] {
                let input = HealthInput {
                    running: running_now,
                    phase,
                    ..running(&diagnostics)
                };
                let summary = summary(input, 0);
                assert_eq!(summary.state, HealthState::Unresponsive, "{phase:?}");
                assert_eq!(summary.reasons, vec![HealthReason::GatewayUnresponsive]);
            }
        }
    }

    #[test]
    fn h6_external_unavailable_wins_in_any_state() {
        let diagnostics = Diagnostics::default();
        let input = HealthInput {
            external_unavailable: true,
            ..not_running(&diagnostics, false)
        };
        let summary = summary(input, 0);
        assert_eq!(summary.state, HealthState::ExternalUnavailable);
        assert_eq!(summary.reasons, vec![HealthReason::ExternalUnavailable]);
        let json = serde_json::to_value(&summary).unwrap();
        assert_eq!(json["state"], "external_unavailable");
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
    fn h6_a_capability_timeout_degrades_that_capability_not_the_core() {
        let mut diagnostics = Diagnostics::default();
        diagnostics.record_rpc_failure(1_000, "health", RpcFailureKind::Timeout, true);
        assert_eq!(diagnostics.consecutive_rpc_failures, 0);
        let window = LivenessConfig::default().capability_failure_window_ms;
        let recent = summary(running(&diagnostics), 1_000 + window);
        assert_eq!(recent.state, HealthState::Degraded);
        assert_eq!(recent.reasons, vec![HealthReason::CapabilityTimeout]);
        assert_eq!(recent.degraded_capabilities, vec!["health".to_string()]);
        let old = summary(running(&diagnostics), 1_001 + window);
        assert_eq!(old.state, HealthState::Healthy);
        diagnostics.record_rpc_success_of(2_000, "health");
        assert!(diagnostics.capability_timeouts.is_empty());
    }

    #[test]
    fn h6_a_refused_call_while_not_connected_is_no_rpc_failure() {
        let mut diagnostics = Diagnostics::default();
        diagnostics.record_rpc_failure(1, "status", RpcFailureKind::NotConnected, false);
        assert_eq!(diagnostics, Diagnostics::default());
        assert_eq!(
            summary(running(&diagnostics), 2).state,
            HealthState::Healthy
        );
    }

    #[test]
    fn h6_evidence_resets_on_each_new_connection() {
        let mut diagnostics = Diagnostics::default();
        diagnostics.record_rpc_failure(1, "chat.send", RpcFailureKind::Timeout, false);
        diagnostics.record_rpc_failure(1, "health", RpcFailureKind::Timeout, true);
        diagnostics.record_heartbeat_timeout(2, 2);
        diagnostics.reset_for_connection();
        assert_eq!(
            summary(running(&diagnostics), 3).state,
            HealthState::Healthy
        );
        // What happened stays on record.
        assert_eq!(diagnostics.last_rpc_failure_at, Some(1));
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
        // A failure in the same millisecond as a success is not newer than it.
        diagnostics.record_channel_status(3_000, false);
        let same_instant = summary(running(&diagnostics), 3_000);
        assert_eq!(same_instant.state, HealthState::Healthy);
    }

    #[test]
    fn h6_serializes_snake_case_state_and_reasons() {
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
        assert_eq!(json["liveness"], "alive");
    }

    #[test]
    fn m6_transport_failures_count_and_success_resets() {
        let mut diagnostics = Diagnostics::default();
        diagnostics.record_rpc_failure(1, "chat.send", RpcFailureKind::Timeout, false);
        diagnostics.record_rpc_failure(2, "health", RpcFailureKind::SendFailed, true);
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
        diagnostics.record_rpc_failure(1, "status", RpcFailureKind::Stopped, false);
        diagnostics.record_rpc_failure(2, "bogus", RpcFailureKind::Gateway, false);
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
