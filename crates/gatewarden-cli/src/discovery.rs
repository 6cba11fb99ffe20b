//! Instance discovery: every `gatewarden run` leaves a small record (port, profile, pid, control
//! path) in a per-user registry folder while it runs, so `gatewarden ls` can list the instances
//! and client commands without `--port`/`--control` can find the only one.
//!
//! The record is a hint, not the truth: a killed instance leaves its record behind, so every
//! reader checks liveness by asking the control socket for its status.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::ProfileKind;
use crate::control::{self, ControlReply, ControlRequest, ControlResponse};
use crate::instance::StatusReport;
use gatewarden_core::machine::Status;

/// How long `ls` waits for each instance's status.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// What a running instance records about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceRecord {
    /// The gateway port (also the record's file name).
    pub port: u16,
    /// The launch profile.
    pub profile: ProfileKind,
    /// The pid of `gatewarden run`.
    pub pid: u32,
    /// Its control socket.
    pub control: PathBuf,
    /// Its state directory.
    pub state_dir: PathBuf,
}

/// A record whose control socket answered.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveInstance {
    /// The record.
    #[serde(flatten)]
    pub record: InstanceRecord,
    /// Its status when asked.
    pub state: String,
    /// The gateway's pid, if one runs.
    pub gateway_pid: Option<u32>,
}

/// The registry folder: `$XDG_RUNTIME_DIR/gatewarden/instances` (a per-user tmpfs, emptied at
/// logout, like the default control sockets), else `instances` next to the state directories.
pub fn registry_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute() && dir.is_dir())
    {
        Some(runtime) => runtime.join("gatewarden").join("instances"),
        None => crate::launch::default_state_dir(0)
            .parent()
            .map(|base| base.join("instances"))
            .unwrap_or_else(|| PathBuf::from("instances")),
    }
}

/// The record of a running instance; removes its file when dropped (a normal exit).
pub struct Registration {
    path: PathBuf,
}

impl Drop for Registration {
    fn drop(&mut self) {
        // Only our own record: another instance may have taken the port since (it overwrote it).
        if let Ok(text) = std::fs::read(&self.path) {
            if serde_json::from_slice::<InstanceRecord>(&text)
                .is_ok_and(|record| record.pid == std::process::id())
            {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Write `record` into the registry. A failure only costs discoverability, so the caller logs it
/// and runs on.
pub fn register(record: &InstanceRecord) -> anyhow::Result<Registration> {
    let dir = registry_dir();
    if !dir.exists() {
        crate::launch::create_private_dir(&dir)?;
    }
    let path = dir.join(format!("{}.json", record.port));
    // Written whole, then renamed: a reader never sees half a record.
    let temporary = dir.join(format!(".{}.{}.tmp", record.port, std::process::id()));
    std::fs::write(&temporary, serde_json::to_vec(record)?)?;
    std::fs::rename(&temporary, &path)?;
    Ok(Registration { path })
}

/// Every record in the registry, unchecked, ordered by port.
pub fn records() -> Vec<InstanceRecord> {
    records_in(&registry_dir())
}

fn records_in(dir: &Path) -> Vec<InstanceRecord> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut records: Vec<InstanceRecord> = entries
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".json"))
        .filter_map(|entry| std::fs::read(entry.path()).ok())
        .filter_map(|text| serde_json::from_slice(&text).ok())
        .collect();
    records.sort_by_key(|record| record.port);
    records
}

/// The instances whose control socket answers a status request.
pub fn live() -> Vec<LiveInstance> {
    records()
        .into_iter()
        .filter_map(|record| {
            let answer =
                control::request(&record.control, &ControlRequest::Status {}, PROBE_TIMEOUT)
                    .ok()?;
            let ControlResponse::Ok(ControlReply::Status(report)) = answer else {
                return None;
            };
            let StatusReport {
                status: Status { state, pid, .. },
                ..
            } = *report;
            Some(LiveInstance {
                record,
                state: state.as_str().to_string(),
                gateway_pid: pid,
            })
        })
        .collect()
}

/// The `ls` table.
pub fn table(instances: &[LiveInstance]) -> String {
    let mut out = format!(
        "{:<6} {:<9} {:<12} {:<8} {:<12} {}\n",
        "PORT", "PROFILE", "STATE", "PID", "GATEWAY PID", "CONTROL"
    );
    for instance in instances {
        out.push_str(&format!(
            "{:<6} {:<9} {:<12} {:<8} {:<12} {}\n",
            instance.record.port,
            instance.record.profile.as_str(),
            instance.state,
            instance.record.pid,
            instance
                .gateway_pid
                .map(|pid| pid.to_string())
                .unwrap_or_else(|| "-".into()),
            instance.record.control.display()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_garbage_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let record = InstanceRecord {
            port: 18800,
            profile: ProfileKind::Sim,
            pid: 42,
            control: dir.path().join("gw.sock"),
            state_dir: dir.path().join("state"),
        };
        std::fs::write(
            dir.path().join("18800.json"),
            serde_json::to_vec(&record).unwrap(),
        )
        .unwrap();
        std::fs::write(dir.path().join("1.json"), b"not json").unwrap();
        assert_eq!(records_in(dir.path()), vec![record]);
    }
}
