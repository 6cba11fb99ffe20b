//! K4: ending what a dead supervisor left in its gateway's process group.
//!
//! The parent-death signal reaches only the gateway itself; its workers (and anything else it
//! started in its group) survive a SIGKILLed supervisor. The owned-gateway record names the group
//! and the gateway's start time, and every gateway carries the state directory in its environment
//! ([`STATE_MARKER_ENV`], inherited by its children). At the next start a process is ended only
//! when all of this holds:
//!
//! - the record's supervisor no longer runs (K1: a live supervisor's record is never acted on);
//! - it is in the recorded process group;
//! - it started no earlier than the recorded gateway (a group id is a reused pid after all);
//! - its environment holds the marker with this very state directory.
//!
//! Anything else in that group is left alone and reported. Each process is pinned with a pidfd
//! before its facts are checked, and signalled through that pidfd, so a pid reused between the
//! check and the signal cannot be hit.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use super::record::{owned_record_path, read_owned_record, remove_owned_record, STATE_MARKER_ENV};
use crate::orphan::{process_group_members, process_is_running, process_start_ticks};

/// How long ended leftovers are waited for (SIGKILL is prompt; a process in uninterruptible sleep
/// is reported as still running).
const KILL_WAIT: Duration = Duration::from_secs(2);

/// The largest environment read from `/proc/<pid>/environ`; a larger one is not searched further.
const MAX_ENVIRON_BYTES: u64 = 1024 * 1024;

/// What [`end_leftovers`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeftoverReport {
    /// Group members left by a dead supervisor, ended (SIGKILL).
    pub ended: Vec<u32>,
    /// Of those, the ones still running after the wait.
    pub survivors: Vec<u32>,
    /// Processes in the recorded group that failed the checks (wrong start time or no marker):
    /// never signalled.
    pub left_alone: Vec<u32>,
    /// True when the record's supervisor still runs: nothing was examined (K1).
    pub supervisor_alive: bool,
}

impl LeftoverReport {
    /// True when there is nothing to report.
    pub fn is_empty(&self) -> bool {
        self.ended.is_empty() && self.left_alone.is_empty() && !self.supervisor_alive
    }
}

/// K4: ends the members of the recorded gateway's process group that a dead supervisor left
/// behind in `state_dir`, then removes the stale record. Blocking (`/proc` scans, waits): run it
/// before the supervisor starts, or on a thread of its own.
pub fn end_leftovers(state_dir: &Path) -> LeftoverReport {
    let path = owned_record_path(state_dir);
    let record = match read_owned_record(&path) {
        Ok(Some(record)) => record,
        Ok(None) => return LeftoverReport::default(),
        Err(error) => {
            tracing::warn!(%error, "cannot read the owned-gateway record; no leftover cleanup");
            return LeftoverReport::default();
        }
    };
    if record.supervisor_lives() {
        tracing::warn!(
            supervisor = record.supervisor_pid,
            "the owned-gateway record belongs to a supervisor that still runs; not touching it"
        );
        return LeftoverReport {
            supervisor_alive: true,
            ..LeftoverReport::default()
        };
    }
    let group = record.pgid.unwrap_or(record.pid);
    let marker = {
        let mut marker = STATE_MARKER_ENV.as_bytes().to_vec();
        marker.push(b'=');
        marker.extend_from_slice(state_dir.as_os_str().as_encoded_bytes());
        marker
    };
    let own = std::process::id();
    let mut report = LeftoverReport::default();
    let mut pinned = Vec::new();
    for pid in process_group_members(group) {
        if pid <= 1 || pid == own {
            continue;
        }
        // Pin first, check second: the checks then describe the process the pidfd refers to.
        let Some(pidfd) = pidfd_open(pid) else {
            continue;
        };
        let started_after_gateway =
            process_start_ticks(pid).is_some_and(|ticks| ticks >= record.start_ticks);
        if started_after_gateway && has_marker(pid, &marker) && process_is_running(pid) {
            pinned.push((pid, pidfd));
        } else {
            report.left_alone.push(pid);
        }
    }
    for (pid, pidfd) in &pinned {
        // SAFETY: no siginfo (null), flags 0; the kernel checks the descriptor.
        let sent = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                pidfd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if sent == 0 {
            report.ended.push(*pid);
        }
    }
    let deadline = Instant::now() + KILL_WAIT;
    loop {
        report.survivors = report
            .ended
            .iter()
            .copied()
            .filter(|pid| process_is_running(*pid))
            .collect();
        if report.survivors.is_empty() || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if !report.ended.is_empty() {
        tracing::warn!(
            group,
            ended = ?report.ended,
            survivors = ?report.survivors,
            "ended processes a dead supervisor left in its gateway's process group"
        );
    }
    if !report.left_alone.is_empty() {
        tracing::warn!(
            group,
            left_alone = ?report.left_alone,
            "processes in the old gateway's process group without this state directory's marker \
             (or older than the gateway) were left alone"
        );
    }
    if let Err(error) = remove_owned_record(&path) {
        tracing::warn!(%error, "could not remove the stale owned-gateway record");
    }
    report
}

/// `pidfd_open(2)`; `None` when the process is gone (or the kernel has no pidfds, in which case
/// nothing is signalled: without a pin, a check and a signal could name two processes).
fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    let raw = libc::pid_t::try_from(pid).ok()?;
    // SAFETY: plain system call with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw, 0) };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: the kernel just returned this descriptor; nobody else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// True when `/proc/<pid>/environ` holds exactly the entry `marker` (`NAME=value`).
fn has_marker(pid: u32, marker: &[u8]) -> bool {
    use std::io::Read as _;
    let Ok(file) = std::fs::File::open(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let mut environ = Vec::new();
    if file
        .take(MAX_ENVIRON_BYTES)
        .read_to_end(&mut environ)
        .is_err()
    {
        return false;
    }
    environ
        .split(|byte| *byte == 0)
        .any(|entry| entry == marker)
}
