//! The seeded fault schedule of the chaos soak: a small deterministic generator and the weighted
//! choice of the next fault, so a seed names one exact sequence of faults (and their parameters).

/// SplitMix64: tiny, fast, good enough to shuffle faults, and fully determined by its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// The generator of pair `index` of a run seeded with `seed`: independent sub-schedules that
    /// are still named by the one seed.
    pub fn for_pair(seed: u64, index: usize) -> Self {
        let mut base = Rng(seed ^ 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(index as u64 + 1));
        Rng(base.next_u64())
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `low..=high`.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low + 1)
    }

    /// True with probability `percent` / 100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next_u64() % items.len() as u64) as usize]
    }
}

/// A malformed frame the simulator sends on the supervisor's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    NonJson,
    NonObject,
    InvalidUtf8,
    /// One byte over the client's 25 MiB limit: the client must drop it and stay up.
    Oversize,
}

impl Malformed {
    pub fn wire_name(self) -> &'static str {
        match self {
            Malformed::NonJson => "non-json",
            Malformed::NonObject => "non-object",
            Malformed::InvalidUtf8 => "invalid-utf8",
            Malformed::Oversize => "oversize",
        }
    }
}

/// One API command of a storm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiCall {
    Start,
    Stop,
    Restart,
    Reload,
    DebouncedRestart { delay_ms: u64 },
    DebouncedReload { delay_ms: u64 },
}

/// One fault of the schedule. Parameters are drawn when the fault is chosen, so the seed fixes
/// them too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL to the gateway.
    SigKill,
    /// SIGSTOP, then SIGCONT after `ms` (the heartbeat may restart it first).
    SigStop { ms: u64 },
    /// `sim.fault close` with this code, the process stays up.
    Close {
        code: u16,
        notice: Option<&'static str>,
    },
    /// `sim.fault drop`: the TCP connection dies without a close frame.
    DropSocket,
    /// The next in-place restart exits with `code` before listening; SIGUSR2 triggers it.
    ExitBeforeReady { code: i32 },
    /// The next in-place restart listens `ms` late; SIGUSR2 triggers it.
    SlowStart { ms: u64 },
    /// Reopen the startup window for `ms`, then drop the socket so the reconnect meets it.
    StartupWindow { ms: u64 },
    /// A malformed frame.
    Malformed(Malformed),
    /// A `res` frame for an id nobody asked for.
    UnknownIdReply,
    /// `lines` distinct stderr lines, each repeated `repeat` times.
    StderrFlood { lines: u64, repeat: u64 },
    /// SIGUSR2: in-place restart (same pid, new boot id).
    Sigusr2,
    /// The next in-place restart finds the config invalid and stays alive without a listener;
    /// SIGUSR2 triggers it.
    InvalidConfigRestart,
    /// `sim.fault crash` with `code` after `after_ms`.
    Crash { code: i32, after_ms: u64 },
    /// The gateway's only thread blocks: no frames, no signal handling; only SIGKILL ends it.
    HangSilent,
    /// The gateway ignores SIGTERM, then the API restarts it (SIGKILL after the grace).
    IgnoreSigtermThenRestart,
    /// A grandchild in the gateway's process group, then SIGKILL to the gateway: the group
    /// kill must take the grandchild too.
    GrandchildThenKill,
    /// Concurrent API commands (answered each) while the RPC load runs.
    ApiStorm(Vec<ApiCall>),
    /// Stop, check nothing of the gateway is left (processes, children), start again.
    StopCheckpoint,
    /// D4: the gateway's event loop burns CPU for `ms` (shorter than the liveness deadline):
    /// it must not be restarted.
    Busy { ms: u64 },
    /// D6: the pair's supervisor thread is blocked for `ms` (longer than the stall threshold),
    /// as a SIGSTOP of the embedding app would: its gateway must not be restarted.
    SupervisorPause { ms: u64 },
    /// F9: a reload, then SIGKILL to the gateway `delay_ms` later (mid-restart).
    ReloadThenKill { delay_ms: u64 },
}

impl Fault {
    /// A short name for the figures (one line per kind).
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::SigKill => "sigkill",
            Fault::SigStop { .. } => "sigstop/sigcont",
            Fault::Close { code: 1012, .. } => "close 1012 (no exit)",
            Fault::Close { .. } => "close other code",
            Fault::DropSocket => "drop socket",
            Fault::ExitBeforeReady { .. } => "exit before ready",
            Fault::SlowStart { .. } => "slow start",
            Fault::StartupWindow { .. } => "startup window",
            Fault::Malformed(Malformed::Oversize) => "malformed: oversize",
            Fault::Malformed(_) => "malformed frame",
            Fault::UnknownIdReply => "reply with unknown id",
            Fault::StderrFlood { .. } => "stderr flood",
            Fault::Sigusr2 => "sigusr2 in-place restart",
            Fault::InvalidConfigRestart => "invalid config on restart",
            Fault::Crash { .. } => "crash (exit code)",
            Fault::HangSilent => "hang (silent)",
            Fault::IgnoreSigtermThenRestart => "ignore sigterm + restart",
            Fault::GrandchildThenKill => "grandchild + sigkill",
            Fault::ApiStorm(_) => "api storm",
            Fault::StopCheckpoint => "stop checkpoint",
            Fault::Busy { .. } => "busy event loop",
            Fault::SupervisorPause { .. } => "supervisor pause",
            Fault::ReloadThenKill { .. } => "reload then kill",
        }
    }

    /// Faults after which the next one may follow at once (a burst); the others always wait
    /// for convergence because they check something afterwards.
    pub fn may_burst(&self) -> bool {
        !matches!(
            self,
            Fault::ApiStorm(_)
                | Fault::StopCheckpoint
                | Fault::GrandchildThenKill
                | Fault::IgnoreSigtermThenRestart
                | Fault::Busy { .. }
                | Fault::SupervisorPause { .. }
                | Fault::ReloadThenKill { .. }
                | Fault::InvalidConfigRestart
        )
    }
}

/// The longest busy period drawn (below the soak's liveness deadline).
pub const MAX_BUSY_MS: u64 = 2_000;

/// The longest supervisor pause drawn (above the soak's stall threshold).
pub const MAX_PAUSE_MS: u64 = 2_000;

/// The longest delay a fault itself asks for (SIGSTOP, slow start, startup window): part of the
/// convergence bound.
pub const MAX_FAULT_DELAY_MS: u64 = 600;

/// Draws the next fault. The weights favour the cheap, common failures (kills, closes, drops,
/// in-place restarts) and keep the expensive ones (a 25 MiB frame, a silent hang that costs the
/// whole heartbeat detection and kill grace) rare.
pub fn next_fault(rng: &mut Rng) -> Fault {
    const WEIGHTS: &[(u64, u8)] = &[
        (10, 0), // SigKill
        (8, 1),  // SigStop
        (8, 2),  // Close 1012
        (3, 3),  // Close other
        (8, 4),  // DropSocket
        (5, 5),  // ExitBeforeReady
        (5, 6),  // SlowStart
        (4, 7),  // StartupWindow
        (7, 8),  // Malformed (small)
        (1, 9),  // Malformed oversize
        (6, 10), // UnknownIdReply
        (6, 11), // StderrFlood
        (8, 12), // Sigusr2
        (4, 13), // Crash
        (3, 14), // HangSilent
        (2, 15), // IgnoreSigtermThenRestart
        (2, 16), // GrandchildThenKill
        (7, 17), // ApiStorm
        (3, 18), // StopCheckpoint
        (2, 19), // InvalidConfigRestart
        (5, 20), // Busy
        (2, 21), // SupervisorPause
        (3, 22), // ReloadThenKill
    ];
    let total: u64 = WEIGHTS.iter().map(|(weight, _)| weight).sum();
    let mut ticket = rng.next_u64() % total;
    let mut chosen = 0;
    for (weight, which) in WEIGHTS {
        if ticket < *weight {
            chosen = *which;
            break;
        }
        ticket -= weight;
    }
    match chosen {
        0 => Fault::SigKill,
        1 => Fault::SigStop {
            ms: rng.range(20, MAX_FAULT_DELAY_MS),
        },
        2 => Fault::Close {
            code: 1012,
            notice: *rng.pick(&[None, Some("restarting"), Some("stopping")]),
        },
        3 => Fault::Close {
            code: *rng.pick(&[1000, 1001, 1011, 4000]),
            notice: None,
        },
        4 => Fault::DropSocket,
        5 => Fault::ExitBeforeReady {
            code: *rng.pick(&[1, 2, 3]),
        },
        6 => Fault::SlowStart {
            ms: rng.range(20, MAX_FAULT_DELAY_MS),
        },
        7 => Fault::StartupWindow {
            ms: rng.range(50, MAX_FAULT_DELAY_MS),
        },
        8 => Fault::Malformed(*rng.pick(&[
            Malformed::NonJson,
            Malformed::NonObject,
            Malformed::InvalidUtf8,
        ])),
        9 => Fault::Malformed(Malformed::Oversize),
        10 => Fault::UnknownIdReply,
        11 => Fault::StderrFlood {
            lines: rng.range(1, 3),
            repeat: rng.range(100, 3_000),
        },
        12 => Fault::Sigusr2,
        13 => Fault::Crash {
            code: *rng.pick(&[0, 1, 2, 137]),
            after_ms: rng.range(0, 100),
        },
        14 => Fault::HangSilent,
        15 => Fault::IgnoreSigtermThenRestart,
        16 => Fault::GrandchildThenKill,
        17 => {
            let count = rng.range(2, 6);
            let calls = (0..count)
                .map(|_| match rng.range(0, 5) {
                    0 => ApiCall::Start,
                    1 => ApiCall::Stop,
                    2 => ApiCall::Restart,
                    3 => ApiCall::Reload,
                    4 => ApiCall::DebouncedRestart {
                        delay_ms: rng.range(0, 150),
                    },
                    _ => ApiCall::DebouncedReload {
                        delay_ms: rng.range(0, 150),
                    },
                })
                .collect();
            Fault::ApiStorm(calls)
        }
        18 => Fault::StopCheckpoint,
        19 => Fault::InvalidConfigRestart,
        20 => Fault::Busy {
            ms: rng.range(300, MAX_BUSY_MS),
        },
        21 => Fault::SupervisorPause {
            ms: rng.range(1_300, MAX_PAUSE_MS),
        },
        _ => Fault::ReloadThenKill {
            delay_ms: rng.range(0, 150),
        },
    }
}
