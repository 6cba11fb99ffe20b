//! Pending RPC calls with their deadlines, and the RPC error type (M1, M6).
//!
//! The table is generic over the waiter `W` (in the actor layer, the sender that answers the
//! caller), so the core never sees a channel. Every way out of the table (a reply, a deadline, a
//! stop) removes the entry and hands back its waiter by value: a waiter can be answered only by
//! whoever took it out, which is how M1's "answered exactly once" is kept by construction.

use std::borrow::Borrow;
use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};

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
    /// D5: the attached external gateway stopped answering its core probe; the socket was closed
    /// and only the transport is being reconnected (the gateway is not ours to restart).
    #[error("External gateway unavailable")]
    ExternalUnavailable,
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
            RpcError::NotConnected | RpcError::ExternalUnavailable => RpcFailureKind::NotConnected,
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
    /// Which part of the deadline index holds it.
    slot: Slot,
    waiter: W,
}

/// Where a call's deadline is indexed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// In the queue, at this ordinal (its position plus the queue's base).
    Queued(u64),
    /// In the sorted set.
    Sorted,
}

/// One place in the deadline queue; a resolved call leaves its place dead until it is dropped.
#[derive(Debug)]
struct Queued<K> {
    deadline_ms: u64,
    seq: u64,
    key: K,
    live: bool,
}

/// Dead places the queue may hold beyond as many as it has live ones, before it is compacted.
const QUEUE_SLACK: usize = 1024;

/// The id of one request: a random (v4) UUID held as 128 bits, written and read in the
/// hyphenated lowercase form (`8-4-4-4-12` hex digits) the gateway echoes back.
///
/// As a key it is hashed with [`RequestIdHashing`] (a multiply-and-fold of its bits): the ids
/// are random and made by us, and a reply from the gateway can only look one up, never insert
/// one, so the DoS-resistant default hasher buys nothing on this path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId(u128);

impl RequestId {
    /// The length of the written form.
    pub const LEN: usize = 36;

    /// The id with these bits.
    pub const fn from_u128(bits: u128) -> Self {
        RequestId(bits)
    }

    /// Its bits.
    pub const fn as_u128(self) -> u128 {
        self.0
    }

    /// Read the written form; `None` for anything else (such an id was never ours).
    pub fn parse(text: &str) -> Option<Self> {
        // Only the hyphenated form is ours; uuid also reads braced, URN and simple forms.
        if text.len() != Self::LEN {
            return None;
        }
        uuid::Uuid::try_parse(text)
            .ok()
            .map(|id| RequestId(id.as_u128()))
    }

    /// The written form in `buf`, without allocating.
    pub fn encode(self, buf: &mut [u8; Self::LEN]) -> &str {
        uuid::Uuid::from_u128(self.0).hyphenated().encode_lower(buf)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.encode(&mut [0; Self::LEN]))
    }
}

/// The hasher of [`RequestIdHashing`]: folds a `u128` key with one multiplication; other input
/// (never written by `RequestId`) is folded byte by byte.
#[derive(Debug, Default, Clone, Copy)]
pub struct RequestIdHasher(u64);

impl Hasher for RequestIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 =
                (self.0.rotate_left(5) ^ u64::from(byte)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn write_u128(&mut self, value: u128) {
        // The high half of a v4 UUID has its version nibble fixed and the low half its variant
        // bits: mixing both halves through a multiply spreads the random bits over the top
        // bits too, which hashbrown uses as its tag.
        let folded = (value as u64) ^ ((value >> 64) as u64).rotate_left(29);
        self.0 = (self.0 ^ folded).wrapping_mul(0x9e_37_79_b9_7f_4a_7c_15);
    }
}

/// How [`PendingRpcs`] keyed by [`RequestId`] hashes.
pub type RequestIdHashing = BuildHasherDefault<RequestIdHasher>;

/// M1: the pending calls of one connection, with one deadline index for all of them.
///
/// Invariant: every entry has exactly one place in the deadline index and every live place
/// points at an entry, so [`PendingRpcs::next_deadline`] is the earliest deadline of a waiting
/// call and the caller needs a single timer for all calls (quinn's `poll_timeout` pattern).
///
/// The index has two parts. Calls usually share one timeout, so a new call's deadline is
/// rarely before the newest one's: those go to a queue, ordered by (deadline, seq) because they
/// arrive in that order, in and out in O(1). A call resolved before it reaches the front leaves
/// a dead place behind; dead places are dropped when they reach the front, and the queue is
/// compacted when they outnumber the live ones (plus a slack), so it never holds more than about
/// twice the calls waiting. Any other call goes to a sorted set.
///
/// Keys are `K` (text ids by default; the connection uses [`RequestId`]), hashed by `S`.
#[derive(Debug)]
pub struct PendingRpcs<W, K = String, S = RandomState> {
    entries: HashMap<K, Entry<W>, S>,
    queue: VecDeque<Queued<K>>,
    /// The ordinal of the queue's front place.
    queue_base: u64,
    /// Live places in the queue.
    queue_live: usize,
    sorted: BTreeMap<(u64, u64), K>,
    next_seq: u64,
    /// [`QUEUE_SLACK`], lowered by the tests to exercise compaction.
    queue_slack: usize,
}

impl<W> PendingRpcs<W> {
    /// An empty table with text ids.
    pub fn new() -> Self {
        Self::empty()
    }
}

impl<W> Default for PendingRpcs<W> {
    fn default() -> Self {
        Self::new()
    }
}

impl<W, K: Hash + Eq + Clone, S: BuildHasher + Default> PendingRpcs<W, K, S> {
    /// An empty table with keys `K` hashed by `S`.
    pub fn empty() -> Self {
        PendingRpcs {
            entries: HashMap::default(),
            queue: VecDeque::new(),
            queue_base: 0,
            queue_live: 0,
            sorted: BTreeMap::new(),
            next_seq: 0,
            queue_slack: QUEUE_SLACK,
        }
    }

    /// Register a call. An id that is already waiting is refused and its waiter handed back
    /// (`Err(waiter)`), because replacing the earlier entry would leave that call unanswered.
    /// Ids are UUIDs, so this only happens on a caller bug; the caller should fail the new call.
    pub fn insert(&mut self, id: K, method: String, deadline_ms: u64, waiter: W) -> Result<(), W> {
        use std::collections::hash_map::Entry as Place;
        let seq = self.next_seq;
        match self.entries.entry(id) {
            Place::Occupied(_) => Err(waiter),
            Place::Vacant(place) => {
                self.next_seq = self.next_seq.wrapping_add(1);
                let in_order = self
                    .queue
                    .back()
                    .is_none_or(|newest| deadline_ms >= newest.deadline_ms);
                let slot = if in_order {
                    let ordinal = self.queue_base + self.queue.len() as u64;
                    self.queue.push_back(Queued {
                        deadline_ms,
                        seq,
                        key: place.key().clone(),
                        live: true,
                    });
                    self.queue_live += 1;
                    Slot::Queued(ordinal)
                } else {
                    self.sorted.insert((deadline_ms, seq), place.key().clone());
                    Slot::Sorted
                };
                place.insert(Entry {
                    method,
                    deadline_ms,
                    seq,
                    slot,
                    waiter,
                });
                Ok(())
            }
        }
    }

    /// M2/M4: a reply arrived: take the call out (with its deadline). `None` when the id is not
    /// pending (the reply then falls through, see [`crate::frame::decode_inbound_for`]).
    pub fn resolve<Q>(&mut self, id: &Q) -> Option<(String, W)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let entry = self.entries.remove(id)?;
        match entry.slot {
            Slot::Sorted => {
                self.sorted.remove(&(entry.deadline_ms, entry.seq));
            }
            Slot::Queued(ordinal) => {
                let index = ordinal
                    .checked_sub(self.queue_base)
                    .and_then(|index| usize::try_from(index).ok());
                if let Some(place) = index.and_then(|index| self.queue.get_mut(index)) {
                    place.live = false;
                    self.queue_live -= 1;
                }
                self.tidy_queue();
            }
        }
        Some((entry.method, entry.waiter))
    }

    /// Drop dead places from the front, and compact the queue when dead places outnumber the
    /// live ones by more than the slack. Afterwards the front place, if any, is live.
    fn tidy_queue(&mut self) {
        while self.queue.front().is_some_and(|place| !place.live) {
            self.queue.pop_front();
            self.queue_base += 1;
        }
        if self.queue.len() > 2 * self.queue_live + self.queue_slack {
            let places = std::mem::take(&mut self.queue);
            self.queue = VecDeque::with_capacity(self.queue_live);
            for place in places.into_iter().filter(|place| place.live) {
                let ordinal = self.queue_base + self.queue.len() as u64;
                if let Some(entry) = self.entries.get_mut(&place.key) {
                    entry.slot = Slot::Queued(ordinal);
                }
                self.queue.push_back(place);
            }
        }
    }

    /// The earliest of the two parts of the index: `Some(true)` for the queue's front, `Some(false)`
    /// for the sorted set's first, with its (deadline, seq).
    fn earliest(&self) -> Option<(bool, (u64, u64))> {
        let queued = self
            .queue
            .front()
            .map(|place| (place.deadline_ms, place.seq));
        let sorted = self.sorted.first_key_value().map(|(&at, _)| at);
        match (queued, sorted) {
            (Some(queued), Some(sorted)) if sorted < queued => Some((false, sorted)),
            (Some(queued), _) => Some((true, queued)),
            (None, Some(sorted)) => Some((false, sorted)),
            (None, None) => None,
        }
    }

    /// Take out the call with the earliest deadline (from the part `earliest` named).
    fn take_earliest(&mut self, from_queue: bool) -> Option<(K, String, W)> {
        let key = if from_queue {
            let place = self.queue.pop_front()?;
            self.queue_base += 1;
            self.queue_live -= 1;
            self.tidy_queue();
            place.key
        } else {
            self.sorted.pop_first()?.1
        };
        let call = self.entries.remove(&key)?;
        Some((key, call.method, call.waiter))
    }

    /// The earliest deadline of a waiting call: arm one timer for it.
    pub fn next_deadline(&self) -> Option<u64> {
        self.earliest().map(|(_, (deadline_ms, _))| deadline_ms)
    }

    /// M1: take out every call whose deadline is at or before `now_ms`, earliest first, as
    /// `(id, method, waiter)`. Answer each with [`RpcError::Timeout`].
    pub fn expire(&mut self, now_ms: u64) -> Vec<(K, String, W)> {
        let mut expired = Vec::new();
        while let Some((from_queue, (deadline_ms, _))) = self.earliest() {
            if deadline_ms > now_ms {
                break;
            }
            expired.extend(self.take_earliest(from_queue));
        }
        expired
    }

    /// T5: take out every call, earliest deadline first (answer each with
    /// [`RpcError::Stopped`]).
    pub fn drain_all(&mut self) -> Vec<(K, String, W)> {
        let mut drained = Vec::with_capacity(self.entries.len());
        while let Some((from_queue, _)) = self.earliest() {
            drained.extend(self.take_earliest(from_queue));
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
    pub fn contains<Q>(&self, id: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.contains_key(id)
    }

    /// The method of a waiting call.
    pub fn method_of<Q>(&self, id: &Q) -> Option<&str>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
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

    #[test]
    fn m1_request_ids_round_trip_through_their_written_form() {
        let id = RequestId::from_u128(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210);
        let text = id.to_string();
        assert_eq!(text, "01234567-89ab-cdef-fedc-ba9876543210");
        assert_eq!(RequestId::parse(&text), Some(id));
        assert_eq!(RequestId::parse(&text.to_uppercase()), Some(id));
        for bad in [
            "",
            "01234567-89ab-cdef-fedc-ba987654321",
            "01234567-89ab-cdef-fedc-ba98765432100",
            "0123456789ab-cdef-fedc-ba98-76543210",
            "01234567-89ab-cdef-fedc-ba987654321g",
            "01234567+89ab-cdef-fedc-ba9876543210",
            "0123456\u{e9}-89ab-cdef-fedc-ba987654321",
        ] {
            assert_eq!(RequestId::parse(bad), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn m1_any_request_id_round_trips(bits in any::<u128>()) {
            let id = RequestId::from_u128(bits);
            prop_assert_eq!(RequestId::parse(&id.to_string()), Some(id));
            let uuid_like = format!("{:032x}", bits);
            let hyphenated = format!(
                "{}-{}-{}-{}-{}",
                &uuid_like[0..8], &uuid_like[8..12], &uuid_like[12..16], &uuid_like[16..20], &uuid_like[20..]
            );
            prop_assert_eq!(id.to_string(), hyphenated);
        }
    }

    #[test]
    fn m1_a_table_keyed_by_request_id_resolves_by_id() {
        let mut pending: PendingRpcs<u8, RequestId, RequestIdHashing> = PendingRpcs::empty();
        let a = RequestId::from_u128(1);
        let b = RequestId::from_u128(u128::MAX);
        pending.insert(a, "m".into(), 5, 1).unwrap();
        pending.insert(b, "n".into(), 3, 2).unwrap();
        assert_eq!(pending.insert(a, "again".into(), 1, 3), Err(3));
        assert!(pending.contains(&b));
        assert_eq!(pending.resolve(&b), Some(("n".into(), 2)));
        assert_eq!(pending.next_deadline(), Some(5));
        assert_eq!(pending.drain_all(), vec![(a, "m".to_string(), 1)]);
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

    /// The deadline index agrees with the entries, both ways (the table's invariant).
    fn assert_index_matches_entries<
        W,
        K: Hash + Eq + Clone + fmt::Debug,
        S: BuildHasher + Default,
    >(
        pending: &PendingRpcs<W, K, S>,
    ) {
        let live: Vec<&Queued<K>> = pending.queue.iter().filter(|place| place.live).collect();
        assert_eq!(live.len(), pending.queue_live, "live places miscounted");
        assert_eq!(live.len() + pending.sorted.len(), pending.entries.len());
        assert!(
            pending.queue.front().is_none_or(|place| place.live),
            "dead front"
        );
        assert!(pending.queue.len() <= 2 * pending.queue_live + pending.queue_slack);
        let order: Vec<(u64, u64)> = pending
            .queue
            .iter()
            .map(|place| (place.deadline_ms, place.seq))
            .collect();
        assert!(
            order.windows(2).all(|pair| pair[0] <= pair[1]),
            "queue out of order"
        );
        for (key, entry) in &pending.entries {
            let at = (entry.deadline_ms, entry.seq);
            match entry.slot {
                Slot::Queued(ordinal) => {
                    let place = &pending.queue[(ordinal - pending.queue_base) as usize];
                    assert!(place.live && &place.key == key);
                    assert_eq!((place.deadline_ms, place.seq), at);
                }
                Slot::Sorted => assert_eq!(pending.sorted.get(&at), Some(key)),
            }
        }
    }

    /// The model run of `ops`: deadlines as drawn, or (`in_order`) never before the previous
    /// one's, as when every call has the same timeout.
    fn run_model(ops: Vec<Op>, in_order: bool, queue_slack: usize) -> Result<(), TestCaseError> {
        {
            let mut pending: PendingRpcs<u64> = PendingRpcs::new();
            pending.queue_slack = queue_slack;
            let mut latest = 0u64;
            let mut next_waiter = 0u64;
            let mut accepted: HashSet<u64> = HashSet::new();
            let mut answered: Vec<u64> = Vec::new();
            let mut deadlines: HashMap<String, u64> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(id, deadline) => {
                        let deadline = if in_order {
                            latest += deadline % 3;
                            latest
                        } else {
                            deadline
                        };
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
                assert_index_matches_entries(&pending);
                prop_assert_eq!(pending.next_deadline(), deadlines.values().min().copied());
            }
            answered.extend(pending.drain_all().into_iter().map(|(.., w)| w));
            let unique: HashSet<u64> = answered.iter().copied().collect();
            prop_assert_eq!(unique.len(), answered.len(), "a waiter was answered twice");
            prop_assert_eq!(unique, accepted, "a waiter was never answered");
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn m1_every_call_is_answered_exactly_once(ops in proptest::collection::vec(op(), 0..200)) {
            run_model(ops, false, QUEUE_SLACK)?;
        }

        #[test]
        fn m1_every_call_is_answered_exactly_once_with_one_timeout_for_all(
            ops in proptest::collection::vec(op(), 0..300),
            queue_slack in 0usize..4,
        ) {
            run_model(ops, true, queue_slack)?;
        }
    }
}
