//! K1: one supervisor per state directory, enforced by an exclusive `flock` on a file in it.
//!
//! Why a lock and not the control socket: two supervisors started from different shells
//! (one with `XDG_RUNTIME_DIR`, one from cron or `su` without it) derive different control
//! paths, so a "someone answers on my socket" check passes for both, and each then treats the
//! other's gateway as its orphan. The state directory is what they really share, so that is
//! where the lock lives.
//!
//! Why `flock`: the kernel releases it when the holder dies, by any means (SIGKILL included), so
//! there is never a stale lock to break by hand, and a pid written in a file is only a hint for
//! the refusal message, never the source of truth. The descriptor is close-on-exec: a gateway
//! that outlived its supervisor never keeps the lock.

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The lock file's name inside the state directory.
pub const LOCK_FILE: &str = "supervisor.lock";

/// The holder description is tiny; anything larger is not ours and is not read whole.
const MAX_HOLDER_BYTES: u64 = 64 * 1024;

/// Who holds the lock: written into the lock file by the holder, read by a refused supervisor so
/// that its message can name the holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LockHolder {
    /// The holder's pid.
    pub pid: u32,
    /// The holder's start time in clock ticks since boot (`/proc/<pid>/stat` field 22), so a
    /// reused pid is not mistaken for the holder.
    #[serde(default)]
    pub start_ticks: Option<u64>,
    /// The holder's control socket, when it has one.
    #[serde(default)]
    pub control: Option<PathBuf>,
}

impl LockHolder {
    /// This process, with an optional control socket path.
    pub fn this_process(control: Option<PathBuf>) -> Self {
        let pid = std::process::id();
        LockHolder {
            pid,
            start_ticks: crate::orphan::process_start_ticks(pid),
            control,
        }
    }
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another supervisor holds it.
    #[error("{}", held_message(.state_dir, .holder.as_ref()))]
    Held {
        /// The state directory both want.
        state_dir: PathBuf,
        /// The holder, when its description could be read.
        holder: Option<LockHolder>,
    },
    /// The lock file could not be opened, locked or written.
    #[error("cannot lock {}: {source}", .path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The operating system's answer.
        source: io::Error,
    },
}

fn held_message(state_dir: &Path, holder: Option<&LockHolder>) -> String {
    let who = match holder {
        Some(LockHolder {
            pid,
            control: Some(control),
            ..
        }) => format!("pid {pid}, control socket {}", control.display()),
        Some(LockHolder { pid, .. }) => format!("pid {pid}, no control socket"),
        None => "a process that has not described itself yet".to_string(),
    };
    format!(
        "another gatewarden supervisor ({who}) already uses state directory {}; \
         only one supervisor may own a state directory (stop that one, or pick another --state-dir)",
        state_dir.display()
    )
}

/// The held lock. Dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct StateDirLock {
    file: File,
    path: PathBuf,
}

impl StateDirLock {
    /// Takes the lock of `state_dir` (which must exist) without waiting, and writes `holder`
    /// into it. A lock held by anyone else is [`LockError::Held`], naming the holder.
    pub fn acquire(state_dir: &Path, holder: &LockHolder) -> Result<StateDirLock, LockError> {
        let path = state_dir.join(LOCK_FILE);
        let io_error = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            // A symlink planted at the lock's name is not followed.
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(io_error)?;
        // SAFETY: flock on a descriptor we own; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let error = io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(LockError::Held {
                    state_dir: state_dir.to_owned(),
                    holder: read_holder(&mut file),
                });
            }
            return Err(io_error(error));
        }
        let text = serde_json::to_vec(holder).map_err(|error| io_error(io::Error::other(error)))?;
        file.set_len(0).map_err(io_error)?;
        file.seek(SeekFrom::Start(0)).map_err(io_error)?;
        file.write_all(&text).map_err(io_error)?;
        Ok(StateDirLock { file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StateDirLock {
    fn drop(&mut self) {
        // The file stays (removing it would let a third supervisor lock a new inode while a
        // second still waits on the old one); only the stale description goes.
        let _ = self.file.set_len(0);
    }
}

/// The holder's description, when it is there and readable. The holder writes it right after
/// locking, so a refused supervisor racing with a starting one may find it empty: it reads a few
/// times before giving up.
fn read_holder(file: &mut File) -> Option<LockHolder> {
    for attempt in 0..5 {
        let mut text = Vec::new();
        let read = file
            .seek(SeekFrom::Start(0))
            .and_then(|_| (&mut *file).take(MAX_HOLDER_BYTES).read_to_end(&mut text));
        if read.is_ok() {
            if let Ok(holder) = serde_json::from_slice(&text) {
                return Some(holder);
            }
        }
        if attempt < 4 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k1_a_second_lock_on_the_same_state_dir_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().expect("temp dir");
        let holder = LockHolder::this_process(Some(PathBuf::from("/run/gw/first.sock")));
        let first = StateDirLock::acquire(dir.path(), &holder).expect("first lock");
        // flock conflicts between open file descriptions, even within one process.
        let second = StateDirLock::acquire(dir.path(), &LockHolder::this_process(None));
        let error = second.expect_err("second lock refused");
        match &error {
            LockError::Held {
                holder: Some(found),
                ..
            } => assert_eq!(found, &holder),
            other => panic!("expected Held with the holder, got {other:?}"),
        }
        let message = error.to_string();
        assert!(
            message.contains(&format!("pid {}", std::process::id())),
            "{message}"
        );
        assert!(message.contains("/run/gw/first.sock"), "{message}");
        drop(first);
        StateDirLock::acquire(dir.path(), &holder).expect("free again once released");
    }

    #[test]
    fn k1_the_lock_file_is_not_followed_through_a_symlink() {
        let dir = tempfile::tempdir().expect("temp dir");
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, b"precious").expect("target");
        std::os::unix::fs::symlink(&target, dir.path().join(LOCK_FILE)).expect("symlink");
        let error = StateDirLock::acquire(dir.path(), &LockHolder::this_process(None))
            .expect_err("a symlink is refused");
        assert!(matches!(error, LockError::Io { .. }), "{error:?}");
        assert_eq!(std::fs::read(&target).expect("target"), b"precious");
    }
}
