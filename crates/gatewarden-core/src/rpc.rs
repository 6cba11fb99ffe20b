//! Pending RPC calls with their deadlines, and the RPC error type (M1, M6).
//!
//! The table is generic over the waiter `W` (in the actor layer, the sender that answers the
//! caller), so the core never sees a channel. Every way out of the table (a reply, a deadline, a
//! stop) removes the entry and hands back its waiter by value: a waiter can be answered only by
//! whoever took it out, which is how M1's "answered exactly once" is kept by construction.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::health::RpcFailureKind;

/// Why an RPC did not produce a result (M1, M2, T5). `Display` gives the seed's messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum RpcError {
    /// M1: the call was made while not connected.
    #[error("Gateway not connected")]
    NotConnected,
    /// M1: no reply within the time limit.
    #[error("RPC timeout: {method}")]
    Timeout {
        /// The method that timed out.
        method: String,
    },
    /// T5: the gateway was stopped (or the socket closed) while the call waited.
    #[error("Gateway stopped")]
    Stopped,
    /// M1: the request could not be written to the socket.
    #[error("Failed to send RPC request: {reason}")]
    SendFailed {
        /// The transport's error text.
        reason: String,
    },
    /// M2: the gateway answered with an error.
    #[error("{message}")]
    Gateway {
        /// `error.code` (`INVALID_REQUEST`, `UNAVAILABLE`, ...; a legacy numeric code as text;
        /// empty when the error had none).
        code: String,
        /// M2: `error.message`, or the error as JSON when it has no message.
        message: String,
        /// `error.details`, when present.
        details: Option<serde_json::Value>,
        /// `error.retryable` (false when absent).
        retryable: bool,
        /// `error.retryAfterMs`, when present.
        #[serde(rename = "retryAfterMs")]
        retry_after_ms: Option<u64>,
    },
}

impl RpcError {
    /// M6: a transport failure (timeout, not connected, stopped, send failure) counts against
    /// the connection; a gateway error answer does not.
    pub fn is_transport(&self) -> bool {
        self.failure_kind().is_transport()
    }

    /// The M6 kind of this error, for [`crate::health::Diagnostics::record_rpc_failure`].
    pub fn failure_kind(&self) -> RpcFailureKind {
        match self {
            RpcError::NotConnected => RpcFailureKind::NotConnected,
            RpcError::Timeout { .. } => RpcFailureKind::Timeout,
            RpcError::Stopped => RpcFailureKind::Stopped,
            RpcError::SendFailed { .. } => RpcFailureKind::SendFailed,
            RpcError::Gateway { .. } => RpcFailureKind::Gateway,
        }
    }

    /// A gateway error with only a code and a message.
    pub fn gateway(code: impl Into<String>, message: impl Into<String>) -> Self {
        RpcError::Gateway {
            code: code.into(),
            message: message.into(),
            details: None,
            retryable: false,
            retry_after_ms: None,
        }
    }
}

/// One waiting call.
#[derive(Debug)]
struct Entry<W> {
    method: String,
    deadline_ms: u64,
    /// Tie-breaker in the deadline index: calls with the same deadline stay distinct (and expire
    /// in the order they were made).
    seq: u64,
    waiter: W,
}

/// M1: the pending calls of one connection, with one deadline index for all of them.
///
/// Invariant: every entry has exactly one key in the deadline index and every key points at an
/// entry, so [`PendingRpcs::next_deadline`] is the earliest deadline of a waiting call and the
/// caller needs a single timer for all calls (quinn's `poll_timeout` pattern).
#[derive(Debug)]
pub struct PendingRpcs<W> {
    entries: HashMap<String, Entry<W>>,
    deadlines: BTreeMap<(u64, u64), String>,
    next_seq: u64,
}

impl<W> Default for PendingRpcs<W> {
    fn default() -> Self {
        Self::new()
    }
}

impl<W> PendingRpcs<W> {
    /// An empty table.
    pub fn new() -> Self {
        PendingRpcs {
            entries: HashMap::new(),
            deadlines: BTreeMap::new(),
            next_seq: 0,
        }
    }

    /// Register a call. An id that is already waiting is refused and its waiter handed back
    /// (`Err(waiter)`), because replacing the earlier entry would leave that call unanswered.
    /// Ids are UUIDs, so this only happens on a caller bug; the caller should fail the new call.
    pub fn insert(
        &mut self,
        id: String,
        method: String,
        deadline_ms: u64,
        waiter: W,
    ) -> Result<(), W> {
        if self.entries.contains_key(&id) {
            return Err(waiter);
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.deadlines.insert((deadline_ms, seq), id.clone());
        self.entries.insert(
            id,
            Entry {
                method,
                deadline_ms,
                seq,
                waiter,
            },
        );
        Ok(())
    }

    /// M2/M4: a reply arrived: take the call out (with its deadline). `None` when the id is not
    /// pending (the reply then falls through, see [`crate::frame::decode_inbound_for`]).
    pub fn resolve(&mut self, id: &str) -> Option<(String, W)> {
        let entry = self.entries.remove(id)?;
        self.deadlines.remove(&(entry.deadline_ms, entry.seq));
        Some((entry.method, entry.waiter))
    }

    /// The earliest deadline of a waiting call: arm one timer for it.
    pub fn next_deadline(&self) -> Option<u64> {
        self.deadlines
            .first_key_value()
            .map(|(&(deadline_ms, _), _)| deadline_ms)
    }

    /// M1: take out every call whose deadline is at or before `now_ms`, earliest first, as
    /// `(id, method, waiter)`. Answer each with [`RpcError::Timeout`].
    pub fn expire(&mut self, now_ms: u64) -> Vec<(String, String, W)> {
        let mut expired = Vec::new();
        while let Some(entry) = self.deadlines.first_entry() {
            if entry.key().0 > now_ms {
                break;
            }
            let id = entry.remove();
            if let Some(call) = self.entries.remove(&id) {
                expired.push((id, call.method, call.waiter));
            }
        }
        expired
    }

    /// T5: take out every call, earliest deadline first (answer each with
    /// [`RpcError::Stopped`]).
    pub fn drain_all(&mut self) -> Vec<(String, String, W)> {
        let deadlines = std::mem::take(&mut self.deadlines);
        let mut drained = Vec::with_capacity(deadlines.len());
        for id in deadlines.into_values() {
            if let Some(call) = self.entries.remove(&id) {
                drained.push((id, call.method, call.waiter));
            }
        }
        // Unreachable while the invariant holds; kept so a broken invariant cannot leak waiters.
        drained.extend(
            self.entries
                .drain()
                .map(|(id, call)| (id, call.method, call.waiter)),
        );
        drained
    }

    /// Number of waiting calls.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no call is waiting.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// True when `id` is waiting (M2/M4: whether a reply belongs to us).
    pub fn contains(&self, id: &str) -> bool {
        self.entries.contains_key(id)
    }

    /// The method of a waiting call.
    pub fn method_of(&self, id: &str) -> Option<&str> {
        self.entries.get(id).map(|entry| entry.method.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[test]
    fn m1_error_messages_match_the_seed() {
        assert_eq!(RpcError::NotConnected.to_string(), "Gateway not connected");
        assert_eq!(
            RpcError::Timeout {
                method: "status".into()
            }
            .to_string(),
            "RPC timeout: status"
        );
        assert_eq!(RpcError::Stopped.to_string(), "Gateway stopped");
        assert_eq!(
            RpcError::SendFailed {
                reason: "broken pipe".into()
            }
            .to_string(),
            "Failed to send RPC request: broken pipe"
        );
        assert_eq!(
            RpcError::gateway("INVALID_REQUEST", "unknown method: x").to_string(),
            "unknown method: x"
        );
    }

    #[test]
    fn m6_only_transport_errors_are_transport() {
        assert!(RpcError::NotConnected.is_transport());
        assert!(RpcError::Stopped.is_transport());
        assert!(RpcError::Timeout { method: "a".into() }.is_transport());
        assert!(RpcError::SendFailed { reason: "a".into() }.is_transport());
        assert!(!RpcError::gateway("FORBIDDEN", "missing scope").is_transport());
    }

    #[test]
    fn m1_resolve_removes_the_entry_and_its_deadline() {
        let mut pending = PendingRpcs::new();
        pending.insert("a".into(), "status".into(), 100, 1).unwrap();
        pending.insert("b".into(), "health".into(), 50, 2).unwrap();
        assert_eq!(pending.next_deadline(), Some(50));
        assert_eq!(pending.resolve("b"), Some(("health".into(), 2)));
        assert_eq!(pending.next_deadline(), Some(100));
        assert_eq!(pending.resolve("b"), None);
        assert!(pending.contains("a"));
        assert_eq!(pending.len(), 1);
    }

    #[test]
    fn m1_expire_takes_calls_at_or_before_now() {
        let mut pending = PendingRpcs::new();
        pending.insert("a".into(), "m1".into(), 100, 'a').unwrap();
        pending.insert("b".into(), "m2".into(), 100, 'b').unwrap();
        pending.insert("c".into(), "m3".into(), 101, 'c').unwrap();
        assert!(pending.expire(99).is_empty());
        let expired = pending.expire(100);
        assert_eq!(
            expired,
            vec![
                ("a".to_string(), "m1".to_string(), 'a'),
                ("b".to_string(), "m2".to_string(), 'b')
            ]
        );
        assert_eq!(pending.next_deadline(), Some(101));
        assert_eq!(pending.expire(u64::MAX).len(), 1);
        assert!(pending.is_empty());
        assert_eq!(pending.next_deadline(), None);
    }

    #[test]
    fn m1_duplicate_id_is_refused_and_the_first_call_kept() {
        let mut pending = PendingRpcs::new();
        pending.insert("a".into(), "first".into(), 10, 1).unwrap();
        assert_eq!(pending.insert("a".into(), "second".into(), 5, 2), Err(2));
        assert_eq!(pending.next_deadline(), Some(10));
        assert_eq!(pending.resolve("a"), Some(("first".into(), 1)));
    }

    #[test]
    fn t5_drain_all_empties_the_table() {
        let mut pending = PendingRpcs::new();
        pending.insert("a".into(), "m".into(), 20, 1).unwrap();
        pending.insert("b".into(), "m".into(), 10, 2).unwrap();
        let drained: Vec<_> = pending.drain_all().into_iter().map(|(id, ..)| id).collect();
        assert_eq!(drained, vec!["b", "a"]);
        assert!(pending.is_empty());
        assert_eq!(pending.next_deadline(), None);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u64),
        Resolve(u8),
        Expire(u64),
        DrainAll,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..16, 0u64..100).prop_map(|(id, deadline)| Op::Insert(id, deadline)),
            3 => (0u8..16).prop_map(Op::Resolve),
            2 => (0u64..100).prop_map(Op::Expire),
            1 => Just(Op::DrainAll),
        ]
    }

    proptest! {
        #[test]
        fn m1_every_call_is_answered_exactly_once(ops in proptest::collection::vec(op(), 0..200)) {
            let mut pending: PendingRpcs<u64> = PendingRpcs::new();
            let mut next_waiter = 0u64;
            let mut accepted: HashSet<u64> = HashSet::new();
            let mut answered: Vec<u64> = Vec::new();
            let mut deadlines: HashMap<String, u64> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(id, deadline) => {
                        let waiter = next_waiter;
                        next_waiter += 1;
                        let id = id.to_string();
                        match pending.insert(id.clone(), "m".into(), deadline, waiter) {
                            Ok(()) => {
                                prop_assert!(!deadlines.contains_key(&id));
                                accepted.insert(waiter);
                                deadlines.insert(id, deadline);
                            }
                            Err(back) => {
                                prop_assert_eq!(back, waiter);
                                prop_assert!(deadlines.contains_key(&id));
                            }
                        }
                    }
                    Op::Resolve(id) => {
                        let id = id.to_string();
                        let was_pending = deadlines.remove(&id).is_some();
                        let resolved = pending.resolve(&id);
                        prop_assert_eq!(resolved.is_some(), was_pending);
                        answered.extend(resolved.map(|(_, waiter)| waiter));
                    }
                    Op::Expire(now) => {
                        for (id, _, waiter) in pending.expire(now) {
                            let deadline = deadlines.remove(&id);
                            prop_assert!(deadline.is_some_and(|d| d <= now));
                            answered.push(waiter);
                        }
                        prop_assert!(deadlines.values().all(|&d| d > now));
                    }
                    Op::DrainAll => {
                        answered.extend(pending.drain_all().into_iter().map(|(.., w)| w));
                        deadlines.clear();
                    }
                }
                prop_assert_eq!(pending.len(), deadlines.len());
                prop_assert_eq!(pending.deadlines.len(), pending.entries.len());
                prop_assert_eq!(pending.next_deadline(), deadlines.values().min().copied());
            }
            answered.extend(pending.drain_all().into_iter().map(|(.., w)| w));
            let unique: HashSet<u64> = answered.iter().copied().collect();
            prop_assert_eq!(unique.len(), answered.len(), "a waiter was answered twice");
            prop_assert_eq!(unique, accepted, "a waiter was never answered");
        }
    }
}
