//! What the chaos soak watches from outside the supervisor: the gateway processes in `/proc`
//! (sampled every few milliseconds on a thread of its own), process groups left behind, and this
//! process's open file descriptors.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// One process as `/proc/<pid>/stat` describes it.
#[derive(Debug, Clone, Copy)]
pub struct ProcStat {
    pub pid: u32,
    pub state: char,
    pub ppid: u32,
    pub pgrp: u32,
    pub start_ticks: u64,
}

impl ProcStat {
    /// A zombie (or dead) process has exited: it is not "alive", only unreaped.
    pub fn exited(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

pub fn read_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: split after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        pid,
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        // Field 22 of stat; index 19 after dropping pid and comm.
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

/// The direct children of this process, read from every thread's `children` list (a child
/// belongs to the thread that forked it, and the supervisors run on arbiter threads).
pub fn own_children() -> Vec<u32> {
    let mut pids = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return pids;
    };
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            pids.extend(
                text.split_whitespace()
                    .filter_map(|pid| pid.parse::<u32>().ok()),
            );
        }
    }
    pids
}

/// Every process on the machine.
pub fn all_processes() -> Vec<ProcStat> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(read_stat)
        .collect()
}

/// The `--port` argument of a process, if it has one and is not a doctor run.
fn gateway_port(pid: u32) -> Option<u16> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = cmdline.split(|byte| *byte == 0).collect();
    if args.iter().any(|arg| *arg == b"doctor") {
        return None;
    }
    let at = args.iter().position(|arg| *arg == b"--port")?;
    std::str::from_utf8(args.get(at + 1)?).ok()?.parse().ok()
}

/// Is `pid` a live child of this process running with `--port port`?
pub fn is_live_gateway_child(pid: u32, port: u16) -> bool {
    own_children().contains(&pid)
        && read_stat(pid).is_some_and(|stat| !stat.exited())
        && gateway_port(pid) == Some(port)
}

/// The open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|entries| entries.count().saturating_sub(1)) // the directory handle itself
        .unwrap_or(0)
}

/// What the sampler found.
#[derive(Debug, Default)]
pub struct Sampled {
    /// Every gateway process seen, per pair: (pid, start ticks).
    pub seen: Vec<HashSet<(u32, u64)>>,
    /// Moments when a pair had more than one live gateway.
    pub violations: Vec<String>,
    /// The largest number of live gateways one pair had at one sample.
    pub max_alive_per_pair: usize,
}

/// Samples the children of this process every `period` and counts live gateways per pair (by
/// their `--port`).
pub struct Sampler {
    stop: Arc<AtomicBool>,
    pub samples: Arc<AtomicU64>,
    pub found: Arc<Mutex<Sampled>>,
    thread: Option<JoinHandle<()>>,
}

impl Sampler {
    pub fn start(ports: Vec<u16>, period: Duration) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(AtomicU64::new(0));
        let found = Arc::new(Mutex::new(Sampled {
            seen: vec![HashSet::new(); ports.len()],
            ..Sampled::default()
        }));
        let pair_of: HashMap<u16, usize> = ports
            .iter()
            .enumerate()
            .map(|(index, port)| (*port, index))
            .collect();
        let thread = {
            let (stop, samples, found) = (stop.clone(), samples.clone(), found.clone());
            std::thread::Builder::new()
                .name("soak-sampler".into())
                .spawn(move || {
                    // (pid, start ticks) -> pair, so the cmdline is read once per process.
                    let mut known: HashMap<(u32, u64), Option<usize>> = HashMap::new();
                    while !stop.load(Ordering::Relaxed) {
                        let mut alive: Vec<Vec<u32>> = vec![Vec::new(); ports.len()];
                        for pid in own_children() {
                            let Some(stat) = read_stat(pid) else { continue };
                            if stat.exited() {
                                continue;
                            }
                            let key = (pid, stat.start_ticks);
                            let pair = *known.entry(key).or_insert_with(|| {
                                gateway_port(pid).and_then(|port| pair_of.get(&port).copied())
                            });
                            if let Some(pair) = pair {
                                alive[pair].push(pid);
                                let mut found = found.lock().expect("sampler lock");
                                found.seen[pair].insert(key);
                            }
                        }
                        let most = alive.iter().map(Vec::len).max().unwrap_or(0);
                        if most > 0 {
                            let mut found = found.lock().expect("sampler lock");
                            found.max_alive_per_pair = found.max_alive_per_pair.max(most);
                            for (pair, pids) in alive.iter().enumerate() {
                                if pids.len() > 1 {
                                    found.violations.push(format!(
                                        "pair {pair}: {} gateways alive at once: {pids:?}",
                                        pids.len()
                                    ));
                                }
                            }
                        }
                        samples.fetch_add(1, Ordering::Relaxed);
                        if known.len() > 4096 {
                            known.clear();
                        }
                        std::thread::sleep(period);
                    }
                })
                .expect("spawn the sampler thread")
        };
        Sampler {
            stop,
            samples,
            found,
            thread: Some(thread),
        }
    }

    pub fn finish(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Does the environment of `pid` hold `marker` (a `NAME=value` entry)?
pub fn environ_has(pid: u32, marker: &[u8]) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|environ| {
            environ
                .split(|byte| *byte == 0)
                .any(|entry| entry == marker)
        })
        .unwrap_or(false)
}

/// After a stop: what is left of the gateways of the pair on `port` whose gateway state
/// directory is `state_marker` (`OPENCLAW_STATE_DIR=...`, inherited by everything a gateway
/// spawns): children of this process running with that port, unreaped gateways of the pair
/// (`seen` by the sampler), and any
/// process anywhere carrying the pair's marker (a grandchild that escaped the group kill).
/// The marker, not the process group id, identifies them: with a 32768 pid space, an old
/// group id is soon reused by unrelated processes on a busy machine.
pub fn leftovers(port: u16, state_marker: &str, seen: &HashSet<(u32, u64)>) -> Vec<String> {
    let mut left = Vec::new();
    for pid in own_children() {
        let stat = read_stat(pid);
        if gateway_port(pid) == Some(port) {
            let state = stat.map(|stat| stat.state).unwrap_or('?');
            left.push(format!(
                "child {pid} (state {state}) still runs with --port {port}"
            ));
        } else if let Some(stat) = stat.filter(|stat| stat.exited()) {
            // A zombie has no cmdline left: it is recognised by the sampler's record of it.
            if seen.contains(&(pid, stat.start_ticks)) {
                left.push(format!("gateway {pid} exited but was never reaped"));
            }
        }
    }
    let me = std::process::id();
    for stat in all_processes() {
        if stat.pid != me && environ_has(stat.pid, state_marker.as_bytes()) {
            left.push(format!(
                "process {} (state {}, group {}) of the gateway is left",
                stat.pid, stat.state, stat.pgrp
            ));
        }
    }
    left
}

/// The id of the calling thread.
pub fn current_tid() -> u32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as u32 }
}

/// How long thread `tid` of this process has waited on a run queue in total (the second field of
/// its `schedstat`).
pub fn runqueue_wait(tid: u32) -> Duration {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .ok()
        .and_then(|text| text.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(Duration::from_nanos)
        .unwrap_or_default()
}
