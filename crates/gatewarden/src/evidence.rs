//! D2: process evidence. Reads the gateway's scheduler state and the CPU time of its event-loop
//! thread from `/proc`, so the machine can tell a busy gateway from a frozen one.
//!
//! Only the reading lives here; what a reading means is the core's [`LivenessTracker`]'s call.
//! The supervisor runs [`sample`] on a blocking thread (a `/proc` read of a process in an
//! uninterruptible wait can block), never on the actor thread.
//!
//! [`LivenessTracker`]: gatewarden_core::liveness::LivenessTracker

use gatewarden_core::config::CpuThreads;
use gatewarden_core::liveness::{ProcessRunState, ProcessSample};

/// D2: one reading of `pid`; `None` when the process is gone (or this platform has no `/proc`).
pub fn sample(pid: u32, threads: CpuThreads) -> Option<ProcessSample> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    // The main thread's own file: for Node the event loop runs there (tid = pid), and a worker
    // thread's CPU must not make a stuck event loop look busy.
    let path = match threads {
        CpuThreads::Main => format!("/proc/{pid}/task/{pid}/stat"),
        CpuThreads::All => format!("/proc/{pid}/stat"),
    };
    let text = std::fs::read_to_string(path).ok()?;
    let (state, ticks) = parse_stat(&text)?;
    Some(ProcessSample {
        state,
        cpu_ms: ticks_to_ms(ticks),
    })
}

/// The state letter and utime + stime (clock ticks) of a `/proc/.../stat` line. The command name
/// (field 2) may hold spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_stat(text: &str) -> Option<(ProcessRunState, u64)> {
    let after_name = &text[text.rfind(')')? + 1..];
    let mut fields = after_name.split_ascii_whitespace();
    // Field 3 (state) is the first after the name; utime and stime are fields 14 and 15.
    let state = fields.next()?.chars().next()?;
    let mut rest = fields.skip(10);
    let utime: u64 = rest.next()?.parse().ok()?;
    let stime: u64 = rest.next()?.parse().ok()?;
    Some((
        ProcessRunState::from_letter(state),
        utime.saturating_add(stime),
    ))
}

fn ticks_to_ms(ticks: u64) -> u64 {
    // SAFETY: sysconf reads a constant of the running system; it has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = u64::try_from(per_second)
        .ok()
        .filter(|hz| *hz > 0)
        .unwrap_or(100);
    ticks.saturating_mul(1_000) / per_second
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn d2_parses_state_and_cpu_after_a_name_with_spaces_and_parentheses() {
        let line = "4242 (node (main) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 11 0";
        assert_eq!(parse_stat(line), Some((ProcessRunState::Sleeping, 300)));
        let stopped = "7 (sim) T 1 7 7 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0";
        assert_eq!(parse_stat(stopped), Some((ProcessRunState::Stopped, 3)));
    }

    #[test]
    fn d2_a_truncated_line_is_no_reading() {
        assert_eq!(parse_stat("4242 (node) S 1 2"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn d2_reads_this_process_and_sees_its_cpu_grow() {
        let pid = std::process::id();
        let before = sample(pid, CpuThreads::All).expect("this process is readable");
        // The process's state is its main thread's, which only waits for the test threads.
        assert!(!before.state.is_frozen(), "{before:?}");
        // Burn CPU on this thread until the process's reading has grown by 50 ms: a process
        // whose CPU time did not move would loop until the test harness's time-out.
        let started = std::time::Instant::now();
        let mut spin = 0_u64;
        loop {
            spin = std::hint::black_box(spin.wrapping_add(1));
            if spin.is_multiple_of(1_000_000) {
                let now = sample(pid, CpuThreads::All).expect("readable");
                if now.cpu_ms >= before.cpu_ms + 50 {
                    break;
                }
                assert!(started.elapsed() < std::time::Duration::from_secs(30));
            }
        }
        // The main thread of the test binary only waits for the test threads.
        let main = sample(pid, CpuThreads::Main).expect("readable");
        assert_ne!(main.state, ProcessRunState::Stopped);
        assert_eq!(sample(u32::MAX, CpuThreads::Main), None);
    }
}
