//! Entry points of the fuzz targets (`tests/fuzz`) and of the corpus replay test, so both run the
//! same code on the same bytes.
//!
//! Each function takes arbitrary bytes, feeds them to one parser of untrusted input, and checks
//! the parser's promises with `assert!`: a panic here is a bug the fuzzer reports (or the corpus
//! test, once the input is committed). None of them may panic on any input otherwise.

use serde_json::Value;

use crate::config::{ReloadConfig, StderrConfig};
use crate::frame::{self, GatewayErrorInfo, Inbound, CONNECT_CHALLENGE_EVENT};
use crate::reload_policy::parse_reload_policy;
use crate::stderr::{
    classify_stderr_line, StartupStderrBuffer, StderrAction, StderrDeduper, StderrLevel,
    MAX_STDERR_LINE_BYTES, TRUNCATION_MARKER,
};

/// M2–M5: one inbound text frame through decoding and dispatch, as the connection does it.
///
/// Bytes that are not UTF-8 never reach the decoder (the frame assembler drops them), so they are
/// skipped. Which reply ids are "pending" comes from the first byte, so both the pending and the
/// fall-through paths of M2/M4 are explored.
pub fn frame(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    // Bit 0: every id pending; bit 1: none; otherwise ids of even length.
    let is_pending = |id: &str| match selector & 3 {
        1 => true,
        2 => false,
        _ => id.len().is_multiple_of(2),
    };
    let inbound = frame::decode_inbound_for(text, is_pending);
    // M2: the fast path for plain replies never changes what a frame decodes to.
    assert_eq!(
        inbound,
        frame::decode_inbound_full(text, is_pending),
        "the reply fast path disagrees with the full decode"
    );
    // M2: the connection's hot path for successful replies reads what the full decode reads.
    if let Some((id, payload)) = frame::decode_success_reply(text) {
        assert_eq!(
            frame::decode_inbound_full(text, |other| other == id),
            Inbound::Response {
                id: id.to_string(),
                outcome: Ok(payload)
            },
            "the success-reply hot path disagrees with the full decode"
        );
    }
    match &inbound {
        Inbound::Response { id, outcome } | Inbound::LegacyResponse { id, outcome } => {
            assert!(
                is_pending(id),
                "M2: a reply to id {id:?} that is not pending"
            );
            match outcome {
                // The handshake decoders run on whatever a reply carries (C1).
                Ok(payload) => {
                    let _ = frame::decode_hello_ok(payload);
                }
                Err(error) => {
                    if let Some(info) = GatewayErrorInfo::from_rpc_error(error) {
                        let _ = frame::is_startup_window(&info);
                    }
                    let _ = error.to_string();
                }
            }
        }
        Inbound::Event { event, payload, .. } => {
            if event == CONNECT_CHALLENGE_EVENT {
                let _ = frame::decode_challenge(payload);
            }
            if let Some(error) = payload.get("error") {
                let _ = frame::is_startup_window(&GatewayErrorInfo::from_error_value(error));
            }
        }
        Inbound::LegacyNotification { .. }
        | Inbound::Other(_)
        | Inbound::NonObject
        | Inbound::Unparseable => {}
    }
    let _ = inbound.into_dispatches();

    // M1: a request built from any params decodes as a request (never as a reply or an event),
    // or, when the params sit at the nesting limit, as nothing at all.
    if let Ok(params) = serde_json::from_str::<Value>(text) {
        let request = frame::encode_request("fuzz-id", "fuzz.method", Some(&params));
        let decoded = frame::decode_inbound(&request);
        assert!(
            matches!(decoded, Inbound::Other(_) | Inbound::Unparseable),
            "M1: an encoded request decoded as {decoded:?}"
        );
    }
}

/// P1: the gateway config file's text through the JSON5 reload-policy parser, with the default
/// limits and with a small `max_debounce_ms` taken from the first byte.
pub fn reload_policy(data: &[u8]) {
    let Some((&max, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let small = ReloadConfig {
        max_debounce_ms: u64::from(max),
        default_debounce_ms: u64::from(max / 2),
        ..ReloadConfig::default()
    };
    for config in [ReloadConfig::default(), small] {
        let policy = parse_reload_policy(&text, &config);
        assert!(
            policy.debounce_ms <= config.max_debounce_ms,
            "P1: debounce {} above the maximum {}",
            policy.debounce_ms,
            config.max_debounce_ms
        );
    }
}

/// X3: the gateway's stderr, one line per `\n`, through classification, dedup and the startup
/// buffer, with small capacities so eviction is exercised.
pub fn stderr(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let config = StderrConfig {
        repeat_summary_every: 3,
        dedup_capacity: 4,
        ..StderrConfig::default()
    };
    let mut deduper = StderrDeduper::new(&config);
    let mut startup = StartupStderrBuffer::with_capacity(3);
    for line in text.split('\n') {
        let classified = classify_stderr_line(line);
        assert!(
            classified.normalized.len() <= MAX_STDERR_LINE_BYTES + TRUNCATION_MARKER.len(),
            "X3: a normalized line of {} bytes",
            classified.normalized.len()
        );
        assert!(
            classified.normalized.ends_with(TRUNCATION_MARKER)
                || classified.normalized == classified.normalized.trim(),
            "X3: a normalized line that is not trimmed: {:?}",
            classified.normalized
        );
        match deduper.observe(&classified) {
            StderrAction::Summarize { level, .. } => assert_eq!(level, StderrLevel::Debug),
            StderrAction::Log { level, .. } => assert_ne!(level, StderrLevel::Drop),
            StderrAction::Ignore => assert_eq!(classified.level, StderrLevel::Drop),
            StderrAction::Suppress => {}
        }
        assert!(deduper.remembered() <= config.dedup_capacity);
        startup.push(line);
        assert!(startup.len() <= 3);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn m5_serde_json_stops_below_128_levels() {
        // The bound the frame decoder relies on (no stack overflow on hostile nesting):
        // serde_json's recursion budget is 128, so 127 nested arrays parse and 128 do not. A
        // change of serde_json's default shows up here.
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert_eq!(frame::decode_inbound(&nested(127)), Inbound::NonObject);
        assert_eq!(frame::decode_inbound(&nested(128)), Inbound::Unparseable);
    }

    #[test]
    fn m5_entry_points_accept_empty_and_garbage_input() {
        for data in [
            &b""[..],
            b"\x00",
            b"\x01{\"type\":\"res\",\"id\":\"ab\"}",
            b"\xff\xfe",
        ] {
            frame(data);
            reload_policy(data);
            stderr(data);
        }
    }
}
