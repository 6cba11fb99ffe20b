//! Fault kinds accepted by the `sim.fault` RPC (parsed purely here) and the process-level effects they run.

use serde_json::Value;

use crate::cli::HangMode;
use crate::protocol::MAX_PAYLOAD_BYTES;

/// What a malformed-frame fault sends on the requesting connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// A text frame that is not JSON.
    NonJson,
    /// Valid JSON that is not an object (`[1,2,3]`).
    NonObject,
    /// A `res` frame whose id was never requested.
    UnknownId,
    /// A text frame of `bytes` bytes (default: one byte over `maxPayload`).
    Oversize {
        /// Total frame size in bytes.
        bytes: usize,
    },
    /// A text frame whose payload is not valid UTF-8.
    InvalidUtf8,
    /// An event whose payload is `depth` nested arrays (`[[[...]]]`): valid JSON far deeper than
    /// any parser's recursion limit.
    DeepNesting {
        /// Nesting depth.
        depth: usize,
    },
}

/// Default of the `deep-nesting` fault's `depth`: far past serde_json's limit of 128.
pub const DEFAULT_NESTING_DEPTH: usize = 100_000;

/// Default of the event flood's `count`.
pub const DEFAULT_FLOOD_COUNT: u64 = 10_000;

/// Default size of the padding in each flood event's payload.
pub const DEFAULT_FLOOD_PAD_BYTES: usize = 256;

/// Most events one flood may send (a typo must not keep the simulator busy for hours).
pub const MAX_FLOOD_COUNT: u64 = 10_000_000;

/// Longest `busy` or `frozen-soft` block accepted (the same ceiling as the `sleep` RPC), so a typo
/// cannot block the simulator for days.
pub const MAX_BLOCK_MS: u64 = 600_000;

/// Default length of a `busy` or `frozen-soft` block when `ms` is not given.
pub const DEFAULT_BLOCK_MS: u64 = 1_000;

/// How a timed block of the event loop spends its time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// Spin on the event-loop thread: the process is `R` and its CPU time grows (a busy Node loop
    /// running model, tool or compaction work).
    Busy,
    /// Sleep on the event-loop thread: the process is `S` and its CPU time does not grow (a loop
    /// stuck in a blocking call; alive to the kernel, silent to its clients).
    FrozenSoft,
}

impl BlockKind {
    /// Wire and flag spelling (`busy`, `frozen-soft`).
    pub fn as_str(self) -> &'static str {
        match self {
            BlockKind::Busy => "busy",
            BlockKind::FrozenSoft => "frozen-soft",
        }
    }
}

/// Which `shutdown` event, if any, precedes a scripted close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownNotice {
    /// `{"reason":"gateway restarting","restartExpectedMs":N}`.
    Restarting,
    /// `{"reason":"gateway stopping"}`.
    Stopping,
}

/// Faults applied to the next in-process boot (they model trouble while starting).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootFaults {
    /// Delay before binding.
    pub slow_start_ms: u64,
    /// Exit with this code instead of listening.
    pub exit_before_ready: Option<i32>,
    /// Treat the config as invalid.
    pub invalid_config: bool,
    /// Startup window length for that boot.
    pub startup_window_ms: u64,
}

/// One `sim.fault` request.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Exit with `code`, now or after `after_ms`.
    Crash {
        /// Process exit code.
        code: i32,
        /// Delay before exiting.
        after_ms: u64,
    },
    /// Stop answering (see [`HangMode`]).
    Hang {
        /// How to hang.
        mode: HangMode,
        /// Delay before hanging.
        after_ms: u64,
    },
    /// Block the event loop for `ms` (spinning or sleeping), then serve everything queued.
    Block {
        /// Spin or sleep.
        kind: BlockKind,
        /// How long the loop is blocked.
        ms: u64,
        /// Delay before blocking.
        after_ms: u64,
    },
    /// Restart in place, as SIGUSR2 does (the simulator signals itself after the reply).
    Restart,
    /// Write `line` to stderr `repeat` times.
    Stderr {
        /// The line.
        line: String,
        /// How many times.
        repeat: u32,
    },
    /// Send a malformed frame on this connection.
    Malformed(Malformed),
    /// Send `count` `sim.flood` events on this connection as fast as the socket takes them.
    EventFlood {
        /// How many events.
        count: u64,
        /// Padding bytes in each payload.
        pad_bytes: usize,
    },
    /// Send one gateway event `name` with `payload` on this connection, after the reply (a
    /// `chat` event for a client's `chat:message`, say).
    Event {
        /// The event name.
        name: String,
        /// Its payload.
        payload: Value,
        /// How many times (default 1, at most [`MAX_FLOOD_COUNT`]).
        count: u64,
        /// Pause between two of them (default 0).
        interval_ms: u64,
        /// Add `sentAtUs` (Unix microseconds when sent) to an object payload, for latency
        /// measurements.
        stamp: bool,
    },
    /// Turn SIGTERM ignoring on or off.
    IgnoreSigterm {
        /// New state.
        enabled: bool,
    },
    /// Spawn a grandchild in our process group.
    SpawnGrandchild {
        /// argv of the grandchild.
        command: Vec<String>,
    },
    /// Close this connection with `code` without exiting.
    Close {
        /// WebSocket close code.
        code: u16,
        /// Close reason.
        reason: String,
        /// Optional `shutdown` event sent 10 ms before.
        notice: Option<ShutdownNotice>,
    },
    /// Drop this connection's TCP socket without a close frame.
    Drop,
    /// Turn `--no-challenge` on or off for new connections.
    NoChallenge {
        /// New state.
        enabled: bool,
    },
    /// Turn `--reject-token` on or off for new connections.
    RejectToken {
        /// New state.
        enabled: bool,
    },
    /// Reopen the startup window for `ms` from now.
    StartupWindow {
        /// Window length.
        ms: u64,
    },
    /// Arm faults for the next in-process restart.
    NextBoot(BootFaults),
}

/// Parses `sim.fault` params; the error text goes into an INVALID_REQUEST answer.
pub fn parse(params: Option<&Value>) -> Result<Fault, String> {
    let params = params
        .and_then(Value::as_object)
        .ok_or("params must be an object with a kind")?;
    let kind = params
        .get("kind")
        .and_then(Value::as_str)
        .ok_or("missing kind")?;
    let number = |name: &str, default: u64| -> Result<u64, String> {
        match params.get(name) {
            None | Some(Value::Null) => Ok(default),
            Some(value) => value
                .as_u64()
                .ok_or(format!("{name} must be a non-negative integer")),
        }
    };
    let enabled = || {
        params
            .get("enabled")
            .and_then(Value::as_bool)
            .unwrap_or(true)
    };
    let after_ms = number("afterMs", 0)?;
    match kind {
        "crash" | "exit" => {
            let code = params.get("code").and_then(Value::as_i64).unwrap_or(1);
            let code = i32::try_from(code).map_err(|_| "code out of range".to_string())?;
            Ok(Fault::Crash { code, after_ms })
        }
        "hang" => {
            let mode_text = params
                .get("mode")
                .and_then(Value::as_str)
                .unwrap_or("silent");
            let mode =
                HangMode::parse(mode_text).ok_or(format!("unknown hang mode: {mode_text}"))?;
            Ok(Fault::Hang { mode, after_ms })
        }
        "sigstop" => Ok(Fault::Hang {
            mode: HangMode::SigStop,
            after_ms,
        }),
        "busy" | "frozen-soft" => {
            let kind = if kind == "busy" {
                BlockKind::Busy
            } else {
                BlockKind::FrozenSoft
            };
            let ms = number("ms", DEFAULT_BLOCK_MS)?;
            if ms > MAX_BLOCK_MS {
                return Err(format!("ms above {MAX_BLOCK_MS}"));
            }
            Ok(Fault::Block { kind, ms, after_ms })
        }
        "restart" => Ok(Fault::Restart),
        "stderr" => {
            let line = params
                .get("line")
                .and_then(Value::as_str)
                .ok_or("stderr needs a line")?
                .to_string();
            let repeat = u32::try_from(number("repeat", 1)?)
                .map_err(|_| "repeat out of range".to_string())?;
            Ok(Fault::Stderr { line, repeat })
        }
        "malformed" => {
            let what = params
                .get("what")
                .and_then(Value::as_str)
                .ok_or("malformed needs what")?;
            let malformed = match what {
                "non-json" => Malformed::NonJson,
                "non-object" => Malformed::NonObject,
                "unknown-id" => Malformed::UnknownId,
                "oversize" => {
                    let bytes = number("bytes", MAX_PAYLOAD_BYTES as u64 + 1)?;
                    let bytes =
                        usize::try_from(bytes).map_err(|_| "bytes out of range".to_string())?;
                    // Keep a sane ceiling so a typo cannot make the simulator allocate gigabytes.
                    if bytes > 4 * MAX_PAYLOAD_BYTES {
                        return Err("bytes too large".to_string());
                    }
                    Malformed::Oversize { bytes }
                }
                "invalid-utf8" => Malformed::InvalidUtf8,
                "deep-nesting" => {
                    let depth = number("depth", DEFAULT_NESTING_DEPTH as u64)?;
                    let depth =
                        usize::try_from(depth).map_err(|_| "depth out of range".to_string())?;
                    // Two bytes per level; the same ceiling as an oversize frame.
                    if depth > 2 * MAX_PAYLOAD_BYTES {
                        return Err("depth too large".to_string());
                    }
                    Malformed::DeepNesting { depth }
                }
                other => return Err(format!("unknown malformed kind: {other}")),
            };
            Ok(Fault::Malformed(malformed))
        }
        "event-flood" => {
            let count = number("count", DEFAULT_FLOOD_COUNT)?;
            if count > MAX_FLOOD_COUNT {
                return Err(format!("count above {MAX_FLOOD_COUNT}"));
            }
            let pad_bytes = number("bytes", DEFAULT_FLOOD_PAD_BYTES as u64)?;
            let pad_bytes = usize::try_from(pad_bytes)
                .ok()
                .filter(|bytes| *bytes <= MAX_PAYLOAD_BYTES)
                .ok_or("bytes too large")?;
            Ok(Fault::EventFlood { count, pad_bytes })
        }
        "event" => {
            let name = params
                .get("event")
                .and_then(Value::as_str)
                .filter(|name| !name.is_empty())
                .ok_or("event needs an \"event\" name")?;
            let count = number("count", 1)?;
            if count > MAX_FLOOD_COUNT {
                return Err(format!("count above {MAX_FLOOD_COUNT}"));
            }
            let interval_ms = number("intervalMs", 0)?;
            if interval_ms > MAX_BLOCK_MS {
                return Err(format!("intervalMs above {MAX_BLOCK_MS}"));
            }
            Ok(Fault::Event {
                name: name.to_string(),
                payload: params.get("payload").cloned().unwrap_or(Value::Null),
                count,
                interval_ms,
                stamp: params
                    .get("stamp")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            })
        }
        "ignore-sigterm" => Ok(Fault::IgnoreSigterm { enabled: enabled() }),
        "spawn-grandchild" | "spawn" => {
            let command = match params.get("command") {
                None | Some(Value::Null) => vec!["sleep".to_string(), "3600".to_string()],
                Some(Value::Array(items)) if !items.is_empty() => items
                    .iter()
                    .map(|item| {
                        item.as_str()
                            .map(str::to_string)
                            .ok_or("command must be strings")
                    })
                    .collect::<Result<_, _>>()?,
                Some(_) => return Err("command must be a non-empty array of strings".to_string()),
            };
            Ok(Fault::SpawnGrandchild { command })
        }
        "close" => {
            let code = u16::try_from(number("code", 1012)?)
                .map_err(|_| "code out of range".to_string())?;
            let default_reason = if code == 1012 { "service restart" } else { "" };
            let reason = params
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or(default_reason)
                .to_string();
            let notice = match params.get("shutdownEvent").and_then(Value::as_str) {
                None => None,
                Some("restarting") => Some(ShutdownNotice::Restarting),
                Some("stopping") => Some(ShutdownNotice::Stopping),
                Some(other) => {
                    return Err(format!(
                        "shutdownEvent must be restarting or stopping, got {other}"
                    ))
                }
            };
            Ok(Fault::Close {
                code,
                reason,
                notice,
            })
        }
        "drop" => Ok(Fault::Drop),
        "no-challenge" => Ok(Fault::NoChallenge { enabled: enabled() }),
        "reject-token" => Ok(Fault::RejectToken { enabled: enabled() }),
        "startup-window" => Ok(Fault::StartupWindow {
            ms: number("ms", 1000)?,
        }),
        "slow-start" => Ok(Fault::NextBoot(BootFaults {
            slow_start_ms: number("ms", 1000)?,
            ..BootFaults::default()
        })),
        "exit-before-ready" => {
            let code = params.get("code").and_then(Value::as_i64).unwrap_or(1);
            let code = i32::try_from(code).map_err(|_| "code out of range".to_string())?;
            Ok(Fault::NextBoot(BootFaults {
                exit_before_ready: Some(code),
                ..BootFaults::default()
            }))
        }
        "invalid-config" => Ok(Fault::NextBoot(BootFaults {
            invalid_config: true,
            ..BootFaults::default()
        })),
        other => Err(format!("unknown fault kind: {other}")),
    }
}

/// Ends the process now with `code`, flushing stdout first so the listening line is never torn.
pub fn exit_now(code: i32) -> ! {
    use std::io::Write;
    crate::log!("fault: exiting with code {code}");
    let _ = std::io::stdout().flush();
    std::process::exit(code)
}

/// Hangs the process. `Silent` blocks the only runtime thread forever, so nothing is answered
/// and queued signals are never handled (like a Node event loop stuck in a busy loop);
/// `SigStop` stops the process until someone sends SIGCONT, then returns.
pub fn hang_now(mode: HangMode) {
    match mode {
        HangMode::Silent => {
            crate::log!(
                "fault: hanging (silent): no frames, pings, probes or signal handling from now on"
            );
            loop {
                std::thread::park();
            }
        }
        HangMode::SigStop => {
            crate::log!("fault: stopping myself with SIGSTOP");
            // SAFETY: raise() only delivers a signal to this process; SIGSTOP cannot be caught.
            unsafe {
                libc::raise(libc::SIGSTOP);
            }
            crate::log!("fault: continued after SIGSTOP");
        }
    }
}

/// The kernel thread id of the calling thread.
pub fn current_tid() -> i64 {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) }
}

/// Blocks the calling thread, which must be the event-loop thread, for `ms`: spinning (`Busy`)
/// or sleeping (`FrozenSoft`). Nothing else runs meanwhile (the runtime has one thread), so no
/// frame, tick, ping, pong or probe answer goes out and signals wait; afterwards the runtime
/// serves everything that queued up in the socket buffers.
pub fn block_now(kind: BlockKind, ms: u64) {
    let tid = current_tid();
    let pid = i64::from(std::process::id());
    // A supervisor reads the event-loop thread's CPU time at /proc/<pid>/task/<pid>/stat: the
    // block must run on that thread (the runtime is current-thread on the main thread), or the
    // busy/frozen evidence would be on the wrong thread.
    if tid != pid {
        crate::log!(
            "fault: {} runs on thread {tid}, not on the main thread {pid}; CPU evidence will be on the wrong thread",
            kind.as_str()
        );
    }
    crate::log!(
        "fault: {} for {ms} ms on the event-loop thread (tid {tid})",
        kind.as_str()
    );
    let duration = std::time::Duration::from_millis(ms);
    match kind {
        BlockKind::Busy => {
            let started = std::time::Instant::now();
            let mut spins: u64 = 0;
            while started.elapsed() < duration {
                // Real work the optimiser cannot remove, so the thread stays on the CPU.
                for _ in 0..1_000 {
                    spins = std::hint::black_box(
                        spins.wrapping_mul(6364136223846793005).wrapping_add(1),
                    );
                }
            }
            std::hint::black_box(spins);
        }
        // One sleep: the thread is in `S` for the whole time and uses no CPU.
        BlockKind::FrozenSoft => std::thread::sleep(duration),
    }
    crate::log!(
        "fault: {} over after {ms} ms; serving what queued up",
        kind.as_str()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn crash_defaults_to_code_1_now() {
        assert_eq!(
            parse(Some(&json!({"kind": "crash"}))).unwrap(),
            Fault::Crash {
                code: 1,
                after_ms: 0
            }
        );
    }

    #[test]
    fn close_1012_defaults_to_the_service_restart_reason() {
        let fault = parse(Some(&json!({"kind": "close", "code": 1012}))).unwrap();
        assert_eq!(
            fault,
            Fault::Close {
                code: 1012,
                reason: "service restart".into(),
                notice: None
            }
        );
    }

    #[test]
    fn deep_nesting_and_event_flood_have_bounded_defaults() {
        assert_eq!(
            parse(Some(&json!({"kind": "malformed", "what": "deep-nesting"}))).unwrap(),
            Fault::Malformed(Malformed::DeepNesting {
                depth: DEFAULT_NESTING_DEPTH
            })
        );
        assert_eq!(
            parse(Some(
                &json!({"kind": "event-flood", "count": 5, "bytes": 1})
            ))
            .unwrap(),
            Fault::EventFlood {
                count: 5,
                pad_bytes: 1
            }
        );
        assert!(parse(Some(
            &json!({"kind": "event-flood", "count": MAX_FLOOD_COUNT + 1})
        ))
        .is_err());
        assert!(parse(Some(
            &json!({"kind": "malformed", "what": "deep-nesting", "depth": 1u64 << 40})
        ))
        .is_err());
    }

    #[test]
    fn busy_and_frozen_soft_take_ms_and_after_ms_with_a_ceiling() {
        assert_eq!(
            parse(Some(&json!({"kind": "busy", "ms": 250}))).unwrap(),
            Fault::Block {
                kind: BlockKind::Busy,
                ms: 250,
                after_ms: 0
            }
        );
        assert_eq!(
            parse(Some(&json!({"kind": "frozen-soft", "afterMs": 5}))).unwrap(),
            Fault::Block {
                kind: BlockKind::FrozenSoft,
                ms: DEFAULT_BLOCK_MS,
                after_ms: 5
            }
        );
        assert!(parse(Some(&json!({"kind": "busy", "ms": MAX_BLOCK_MS + 1}))).is_err());
        assert!(parse(Some(&json!({"kind": "busy", "ms": -1}))).is_err());
        assert_eq!(
            parse(Some(&json!({"kind": "restart"}))).unwrap(),
            Fault::Restart
        );
    }

    #[test]
    fn event_fault_names_an_event() {
        assert_eq!(
            parse(Some(
                &json!({"kind": "event", "event": "chat", "payload": {"text": "hi"}})
            ))
            .unwrap(),
            Fault::Event {
                name: "chat".into(),
                payload: json!({"text": "hi"}),
                count: 1,
                interval_ms: 0,
                stamp: false,
            }
        );
        assert!(parse(Some(&json!({"kind": "event"}))).is_err());
    }

    #[test]
    fn unknown_kind_is_an_error() {
        assert!(parse(Some(&json!({"kind": "meteor"}))).is_err());
        assert!(parse(None).is_err());
    }
}
