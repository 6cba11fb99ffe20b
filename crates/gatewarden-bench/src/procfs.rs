//! This process's memory and CPU time, and a description of the machine (Linux `/proc`).

use anyhow::{anyhow, Context as _};
use serde::Serialize;

/// `VmRSS` of this process in KiB: what the supervisor costs in resident memory.
pub fn rss_kib() -> anyhow::Result<u64> {
    status_field_kib("VmRSS:")
}

/// `VmHWM` (peak RSS) of this process in KiB.
pub fn peak_rss_kib() -> anyhow::Result<u64> {
    status_field_kib("VmHWM:")
}

fn status_field_kib(name: &str) -> anyhow::Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let line = status
        .lines()
        .find(|line| line.starts_with(name))
        .ok_or_else(|| anyhow!("{name} missing from /proc/self/status"))?;
    line.split_whitespace()
        .nth(1)
        .and_then(|value| value.parse().ok())
        .ok_or_else(|| anyhow!("unparseable {name} line: {line}"))
}

/// User + system CPU time of this process in microseconds. `getrusage` rather than
/// `/proc/self/stat` (`utime`+`stime`): the latter counts 10 ms ticks, and 0.5 % of a core over
/// 10 s is only 50 ms, five ticks.
pub fn cpu_micros() -> anyhow::Result<u64> {
    use nix::sys::resource::{getrusage, UsageWho};
    let usage = getrusage(UsageWho::RUSAGE_SELF).context("getrusage")?;
    let micros = |time: nix::sys::time::TimeVal| {
        u64::try_from(time.tv_sec()).unwrap_or(0) * 1_000_000
            + u64::try_from(time.tv_usec()).unwrap_or(0)
    };
    Ok(micros(usage.user_time()) + micros(usage.system_time()))
}

/// Nanoseconds on CPU of `pid`'s main thread (first field of `/proc/<pid>/schedstat`); `None`
/// when the process is gone or the kernel has no schedstats.
pub fn schedstat_ns(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `utime + stime` from `/proc/self/stat` in clock ticks, reported next to getrusage as the issue
/// asks for it (the two must agree within a tick).
pub fn proc_stat_ticks() -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let after = stat
        .rfind(')')
        .map(|at| &stat[at + 1..])
        .ok_or_else(|| anyhow!("unparseable /proc/self/stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (1-based, man 5 proc); `after` starts at field 3.
    let field = |number: usize| -> anyhow::Result<u64> {
        fields
            .get(number - 3)
            .and_then(|value| value.parse().ok())
            .ok_or_else(|| anyhow!("field {number} missing from /proc/self/stat"))
    };
    Ok(field(14)? + field(15)?)
}

/// The machine the numbers were taken on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Online CPUs.
    pub nproc: usize,
    /// `model name` of the first CPU in /proc/cpuinfo.
    pub cpu_model: String,
    /// MemTotal in MiB.
    pub mem_total_mib: u64,
    /// `uname -r`-like kernel release.
    pub kernel: String,
    /// 1-minute load average when the run started: other builds share this machine.
    pub loadavg_at_start: String,
}

/// Describe this machine; unknown fields stay empty rather than failing the run.
pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split_once(':'))
        .map(|(_, model)| model.trim().to_string())
        .unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_total_mib = meminfo
        .lines()
        .find(|line| line.starts_with("MemTotal:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024);
    Machine {
        nproc: std::thread::available_parallelism().map_or(0, usize::from),
        cpu_model,
        mem_total_mib,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        loadavg_at_start: std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}
