//! The owned-gateway record: a small JSON file in the state directory naming the gateway this
//! supervisor spawned, so that a later supervisor can recognise it as its own orphan (O1 beyond).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file name of the record inside the state directory.
pub const OWNED_RECORD_FILE: &str = "gateway.pid.json";

/// K4: the environment variable every spawned gateway gets, holding the state directory. Its
/// processes (and their children, which inherit it) carry it, so a leftover of a dead supervisor
/// can be told from an unrelated process that happens to sit in a reused process group.
pub const STATE_MARKER_ENV: &str = "GATEWARDEN_STATE_MARKER";

/// The gateway this supervisor spawned. Pid and start time together identify the process: a reused
/// pid has another start time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedRecord {
    /// The gateway's pid.
    pub pid: u32,
    /// Its start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
    pub start_ticks: u64,
    /// The port it was told to listen on, when known.
    pub port: Option<u16>,
    /// The program that was run (no arguments: they may hold secrets).
    pub program: String,
    /// K4: the gateway's process group (its own pid: it leads its group). `None` in records
    /// written before K4, which then only ever name the gateway itself.
    #[serde(default)]
    pub pgid: Option<u32>,
    /// K1: the supervisor that spawned it. A record whose supervisor still lives is never acted
    /// on (it is another supervisor's gateway, not an orphan).
    #[serde(default)]
    pub supervisor_pid: Option<u32>,
    /// K1: that supervisor's start time in clock ticks since boot, so a reused pid does not pass
    /// for it.
    #[serde(default)]
    pub supervisor_start_ticks: Option<u64>,
}

impl OwnedRecord {
    /// K1: true while the supervisor that wrote this record still runs (same pid, same start
    /// time) and is not this process. Such a record belongs to a live supervisor: never act on it.
    pub fn supervisor_lives(&self) -> bool {
        let Some(pid) = self.supervisor_pid else {
            return false;
        };
        if pid == std::process::id() {
            return false;
        }
        crate::orphan::process_is_running(pid)
            && crate::orphan::process_start_ticks(pid) == self.supervisor_start_ticks
    }
}

/// Why the record could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The file or its directory could not be read, written or removed.
    #[error("owned-gateway record {path}: {source}")]
    Io {
        /// The record file.
        path: PathBuf,
        /// The I/O failure.
        source: io::Error,
    },
    /// The file exists but is not a record (truncated, edited by hand, another format).
    #[error("owned-gateway record {path} is not valid: {source}")]
    Invalid {
        /// The record file.
        path: PathBuf,
        /// The parse failure.
        source: serde_json::Error,
    },
}

/// The record path inside a state directory.
pub fn owned_record_path(state_dir: &Path) -> PathBuf {
    state_dir.join(OWNED_RECORD_FILE)
}

/// Writes the record atomically (temporary file, then rename) with mode 0600, creating the
/// directory (0700) if needed. Atomic so that a supervisor killed mid-write leaves either the old
/// record or the new one, never half a file.
pub fn write_owned_record(path: &Path, record: &OwnedRecord) -> Result<(), RecordError> {
    let io_error = |source| RecordError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_error)?;
    }
    let json = serde_json::to_vec_pretty(record).map_err(|source| RecordError::Invalid {
        path: path.to_owned(),
        source,
    })?;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(io_error)?;
    file.write_all(&json).map_err(io_error)?;
    drop(file);
    fs::rename(&temporary, path).map_err(io_error)
}

/// Reads the record; `Ok(None)` when there is none.
pub fn read_owned_record(path: &Path) -> Result<Option<OwnedRecord>, RecordError> {
    match fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| RecordError::Invalid {
                    path: path.to_owned(),
                    source,
                })
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(RecordError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Removes the record; a missing record is not an error.
pub fn remove_owned_record(path: &Path) -> Result<(), RecordError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(RecordError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}
