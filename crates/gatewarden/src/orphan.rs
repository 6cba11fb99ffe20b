//! Finding and removing processes left on the gateway port (O1), waiting for the port to be free
//! (L5 step 3), and `/proc` facts about processes (start time, process group).
//!
//! Everything here reads Linux `/proc` directly instead of shelling out to `lsof`/`ss`: no extra
//! dependency on the box, no output format to parse per distribution, and unreadable entries
//! (other users' processes, processes that exit mid-scan) are skipped instead of failing the scan.
//! On other platforms the scans find nothing and [`wait_port_free`] falls back to a bind probe.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::launch::redact_argv;
use crate::process::OwnedRecord;

/// How often [`kill_orphans`] looks whether the signalled processes are gone. Short, because the
/// gateway usually exits in about 0.3 s after SIGTERM (OPENCLAW.md §8) and the start sequence waits.
const ORPHAN_POLL: Duration = Duration::from_millis(20);

/// One listening TCP socket on the port and a process holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// The process holding the socket, when it could be found (other users' processes are not
    /// readable without privileges).
    pub pid: Option<u32>,
    /// The process name (`/proc/<pid>/comm`), e.g. `openclaw-gateway` or `python3`.
    pub program: Option<String>,
    /// The command line, with secret option values redacted (A3) because it may be logged.
    pub cmdline: Option<String>,
    /// The process start time in clock ticks since boot (`/proc/<pid>/stat` field 22), which with
    /// the pid identifies a process even if the pid is reused.
    pub start_ticks: Option<u64>,
    /// The local address the socket listens on.
    pub address: IpAddr,
    /// The socket inode.
    pub inode: u64,
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.pid, &self.program) {
            (Some(pid), Some(program)) => write!(f, "{program} (pid {pid}) on {}", self.address),
            (Some(pid), None) => write!(f, "pid {pid} on {}", self.address),
            _ => write!(
                f,
                "unknown process on {} (inode {})",
                self.address, self.inode
            ),
        }
    }
}

/// Whose a listener is, as far as the process facts tell (O1 beyond).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// A gateway this supervisor spawned and recorded: same pid *and* same start time. Safe to kill.
    OurOrphan,
    /// Anything else. A protocol probe decides whether it is a foreign gateway (attach, replace or
    /// fail as configured) or an unrelated program (report, never signal).
    Unknown,
}

/// The port is still taken after waiting (L5 step 3). The message is the one L7 treats as transient.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Port {port} still occupied")]
pub struct PortBusy {
    /// The port waited for.
    pub port: u16,
    /// Who holds it at the end of the wait (empty where `/proc` is not available).
    pub listeners: Vec<Listener>,
}

/// Every process listening on `port` on a loopback or wildcard address (127.0.0.1, ::1, 0.0.0.0,
/// ::, and their IPv4-mapped forms): exactly the sockets that stop a loopback gateway from binding.
///
/// One entry per (socket, process) pair; a socket whose holder cannot be found is listed once with
/// `pid: None`. Outside Linux the list is empty.
pub fn listeners_on_port(port: u16) -> io::Result<Vec<Listener>> {
    let mut sockets = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        match fs::read_to_string(table) {
            Ok(text) => sockets.extend(parse_listening_sockets(&text, port)),
            // No IPv6 in this kernel, or not Linux at all: nothing listens there.
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
    }
    if sockets.is_empty() {
        return Ok(Vec::new());
    }
    let inodes: Vec<u64> = sockets.iter().map(|(_, inode)| *inode).collect();
    let holders = socket_holders(&inodes);
    let mut listeners = Vec::new();
    for (address, inode) in sockets {
        match holders.get(&inode) {
            Some(pids) => {
                for pid in pids {
                    listeners.push(describe_listener(Some(*pid), address, inode));
                }
            }
            None => listeners.push(describe_listener(None, address, inode)),
        }
    }
    Ok(listeners)
}

fn describe_listener(pid: Option<u32>, address: IpAddr, inode: u64) -> Listener {
    Listener {
        pid,
        program: pid.and_then(process_name),
        cmdline: pid.and_then(process_cmdline),
        start_ticks: pid.and_then(process_start_ticks),
        address,
        inode,
    }
}

/// Parses one `/proc/net/tcp{,6}` table: the (address, inode) of sockets in LISTEN state (`0A`) on
/// `port` whose address is loopback or wildcard. Malformed lines are skipped.
fn parse_listening_sockets(table: &str, port: u16) -> Vec<(IpAddr, u64)> {
    let mut found = Vec::new();
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
        let (Some(local), Some(state), Some(inode)) = (fields.get(1), fields.get(3), fields.get(9))
        else {
            continue;
        };
        if *state != "0A" {
            continue;
        }
        let Some((address_hex, port_hex)) = local.split_once(':') else {
            continue;
        };
        if u16::from_str_radix(port_hex, 16).ok() != Some(port) {
            continue;
        }
        let (Some(address), Ok(inode)) = (parse_proc_address(address_hex), inode.parse::<u64>())
        else {
            continue;
        };
        if blocks_loopback_bind(address) {
            found.push((address, inode));
        }
    }
    found
}

/// `/proc/net/tcp` prints an address as 32-bit words, each in the host's byte order.
fn parse_proc_address(hex: &str) -> Option<IpAddr> {
    let word = |chunk: &str| u32::from_str_radix(chunk, 16).ok().map(u32::to_ne_bytes);
    match hex.len() {
        8 => word(hex).map(|bytes| IpAddr::V4(Ipv4Addr::from(bytes))),
        32 => {
            let mut bytes = [0u8; 16];
            for (index, out) in bytes.chunks_mut(4).enumerate() {
                out.copy_from_slice(&word(hex.get(index * 8..index * 8 + 8)?)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

fn blocks_loopback_bind(address: IpAddr) -> bool {
    let address = match address {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    };
    match address {
        IpAddr::V4(v4) => v4 == Ipv4Addr::LOCALHOST || v4.is_unspecified(),
        IpAddr::V6(v6) => v6 == Ipv6Addr::LOCALHOST || v6.is_unspecified(),
    }
}

/// Maps socket inodes to the pids holding them, by reading every `/proc/<pid>/fd/*` link
/// `socket:[inode]`. Processes we may not inspect, or that exit during the scan, are skipped.
fn socket_holders(inodes: &[u64]) -> HashMap<u64, Vec<u32>> {
    let mut holders: HashMap<u64, Vec<u32>> = HashMap::new();
    for pid in all_pids() {
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = fs::read_link(fd.path()) else {
                continue;
            };
            let target = target.to_string_lossy();
            let Some(inode) = target
                .strip_prefix("socket:[")
                .and_then(|rest| rest.strip_suffix(']'))
                .and_then(|inode| inode.parse::<u64>().ok())
            else {
                continue;
            };
            if inodes.contains(&inode) {
                let pids = holders.entry(inode).or_default();
                if !pids.contains(&pid) {
                    pids.push(pid);
                }
            }
        }
    }
    holders
}

fn all_pids() -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .collect()
}

/// The fields of `/proc/<pid>/stat` after the command name, so that index 0 is field 3 (state).
///
/// The command name (field 2) is in parentheses and may itself contain spaces and `)`, so the split
/// starts after the *last* `)`.
fn stat_fields_after_comm(pid: u32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Field `number` (1-based, as in `man 5 proc`) of `/proc/<pid>/stat`, for fields after the name.
fn stat_field(fields: &[String], number: usize) -> Option<&str> {
    fields.get(number.checked_sub(3)?).map(String::as_str)
}

/// The start time of a process in clock ticks since boot (`/proc/<pid>/stat` field 22). `None` when
/// the process does not exist or `/proc` is unavailable.
pub fn process_start_ticks(pid: u32) -> Option<u64> {
    let fields = stat_fields_after_comm(pid)?;
    stat_field(&fields, 22)?.parse().ok()
}

/// True while the process exists and has not terminated. A zombie (dead, waiting to be reaped by
/// its parent) counts as gone: it holds no socket and runs no code.
pub fn process_is_running(pid: u32) -> bool {
    match stat_fields_after_comm(pid) {
        Some(fields) => !matches!(stat_field(&fields, 3), Some("Z" | "X" | "x") | None),
        None => false,
    }
}

/// The running members of process group `pgid` (`/proc/*/stat` field 5). Zombies are not counted
/// (see [`process_is_running`]). Used to verify that a stop left nothing behind (T4).
pub fn process_group_members(pgid: u32) -> Vec<u32> {
    let wanted = pgid.to_string();
    all_pids()
        .into_iter()
        .filter(|pid| {
            stat_fields_after_comm(*pid).is_some_and(|fields| {
                stat_field(&fields, 5) == Some(wanted.as_str())
                    && !matches!(stat_field(&fields, 3), Some("Z" | "X" | "x"))
            })
        })
        .collect()
}

fn process_name(pid: u32) -> Option<String> {
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(comm.trim_end_matches('\n').to_owned())
}

fn process_cmdline(pid: u32) -> Option<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if raw.is_empty() {
        return None;
    }
    let argv: Vec<String> = raw
        .split(|byte| *byte == 0)
        .filter(|arg| !arg.is_empty())
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect();
    Some(redact_argv(&argv).join(" "))
}

/// Decides whether a listener is a gateway this supervisor left behind: only when both its pid and
/// its start time equal the record written at spawn. A pid reused by another program has another
/// start time, so it cannot be mistaken for ours.
///
/// K1: a record whose supervisor still lives names another supervisor's gateway, never an orphan.
pub fn classify_listener(listener: &Listener, owned_record: Option<&OwnedRecord>) -> ListenerKind {
    match (owned_record, listener.pid, listener.start_ticks) {
        (Some(record), Some(pid), Some(start_ticks))
            if record.pid == pid
                && record.start_ticks == start_ticks
                && !record.supervisor_lives() =>
        {
            ListenerKind::OurOrphan
        }
        _ => ListenerKind::Unknown,
    }
}

/// O1: SIGTERM each pid, wait up to `term_wait_ms` for them to go, SIGKILL the survivors, wait up to
/// `kill_wait_ms` (`OrphanConfig::term_wait_ms`/`kill_wait_ms`: 3 s, 1 s). Returns the pids still
/// running at the end.
///
/// Each pid's start time is noted before the first signal, and a pid whose start time changed is
/// treated as gone and never signalled again: the waits are long enough for a pid to be reused.
/// Pids 0 and 1 and this process are refused (kill(0) would signal our own process group) and
/// reported as survivors.
pub async fn kill_orphans(pids: &[u32], term_wait_ms: u64, kill_wait_ms: u64) -> Vec<u32> {
    let own_pid = std::process::id();
    let mut refused = Vec::new();
    let mut candidates = Vec::new();
    for pid in pids {
        if *pid <= 1 || *pid == own_pid || i32::try_from(*pid).is_err() {
            tracing::warn!(pid, "refusing to signal this pid as an orphan");
            refused.push(*pid);
        } else if !candidates.contains(pid) {
            candidates.push(*pid);
        }
    }
    // Every /proc read and signal runs on the blocking pool, never on the caller's (actor's)
    // thread.
    let targets = blocking(move || {
        let targets: Vec<(u32, Option<u64>)> = candidates
            .into_iter()
            .map(|pid| (pid, process_start_ticks(pid)))
            .collect();
        signal_targets(&targets, Signal::SIGTERM);
        targets
    })
    .await
    .unwrap_or_default();
    let mut survivors = wait_until_gone(targets, term_wait_ms).await;
    if !survivors.is_empty() {
        tracing::warn!(
            pids = ?survivors.iter().map(|(pid, _)| pid).collect::<Vec<_>>(),
            term_wait_ms,
            "orphans ignored SIGTERM; sending SIGKILL"
        );
        survivors = blocking(move || {
            signal_targets(&survivors, Signal::SIGKILL);
            survivors
        })
        .await
        .unwrap_or_default();
        survivors = wait_until_gone(survivors, kill_wait_ms).await;
    }
    refused.extend(survivors.into_iter().map(|(pid, _)| pid));
    refused
}

/// Runs `work` on the runtime's blocking pool: `/proc` reads can be slow on a large or loaded
/// machine and must not stall the actor's thread. `None` only if the work panicked.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(work).await.ok()
}

fn same_process(pid: u32, start_ticks: Option<u64>) -> bool {
    process_is_running(pid) && process_start_ticks(pid) == start_ticks
}

fn signal_targets(targets: &[(u32, Option<u64>)], signal: Signal) {
    for (pid, start_ticks) in targets {
        if !same_process(*pid, *start_ticks) {
            continue;
        }
        let Ok(raw) = i32::try_from(*pid) else {
            continue;
        };
        match kill(Pid::from_raw(raw), signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(error) => tracing::warn!(pid, %signal, %error, "could not signal orphan"),
        }
    }
}

async fn wait_until_gone(
    mut targets: Vec<(u32, Option<u64>)>,
    wait_ms: u64,
) -> Vec<(u32, Option<u64>)> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
    loop {
        let checked = targets.clone();
        targets = blocking(move || {
            let mut checked = checked;
            checked.retain(|(pid, start_ticks)| same_process(*pid, *start_ticks));
            checked
        })
        .await
        .unwrap_or(targets);
        if targets.is_empty() || tokio::time::Instant::now() >= deadline {
            return targets;
        }
        tokio::time::sleep(ORPHAN_POLL.min(deadline - tokio::time::Instant::now())).await;
    }
}

/// L5 step 3: wait until nothing listens on `port` (polling every `poll_ms`), or fail after
/// `timeout_ms` with [`PortBusy`] naming who holds it (`StartConfig::port_free_poll_ms`/
/// `port_free_timeout_ms`: 500 ms, 30 s).
///
/// On Linux the check reads `/proc/net/tcp{,6}`, which neither disturbs the holder nor is fooled by
/// sockets in TIME_WAIT. Elsewhere it tries to bind the loopback port.
pub async fn wait_port_free(port: u16, poll_ms: u64, timeout_ms: u64) -> Result<(), PortBusy> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
    let poll = Duration::from_millis(poll_ms.max(1));
    loop {
        let listeners = blocking(move || port_holders(port)).await.flatten();
        if listeners.as_ref().is_some_and(Vec::is_empty) {
            return Ok(());
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(PortBusy {
                port,
                listeners: listeners.unwrap_or_default(),
            });
        }
        tokio::time::sleep(poll.min(deadline - now)).await;
    }
}

/// `Some(holders)` (empty when free) or `None` when the port is taken by someone we cannot see.
fn port_holders(port: u16) -> Option<Vec<Listener>> {
    if Path::new("/proc/net/tcp").exists() {
        match listeners_on_port(port) {
            Ok(listeners) => Some(listeners),
            Err(error) => {
                tracing::debug!(port, %error, "cannot read /proc/net/tcp; probing with bind");
                bind_probe(port)
            }
        }
    } else {
        bind_probe(port)
    }
}

fn bind_probe(port: u16) -> Option<Vec<Listener>> {
    match std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
        Ok(_) => Some(Vec::new()),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn o1_parses_listening_sockets_of_the_port_only() {
        // 127.0.0.1:8080 LISTEN, 10.0.0.5:8080 LISTEN (not loopback), 127.0.0.1:8080 ESTABLISHED,
        // 0.0.0.0:8081 LISTEN (other port), 0.0.0.0:8080 LISTEN.
        let local = u32::from_ne_bytes([127, 0, 0, 1]);
        let private = u32::from_ne_bytes([10, 0, 0, 5]);
        let table = format!(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             0: {local:08X}:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 111 1 0\n\
             1: {private:08X}:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 222 1 0\n\
             2: {local:08X}:1F90 {local:08X}:D000 01 00000000:00000000 00:00000000 00000000  1000        0 333 1 0\n\
             3: 00000000:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 444 1 0\n\
             4: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 555 1 0\n\
             garbage line\n"
        );
        let found = parse_listening_sockets(&table, 8080);
        assert_eq!(
            found,
            vec![
                (IpAddr::V4(Ipv4Addr::LOCALHOST), 111),
                (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 555)
            ]
        );
    }

    #[test]
    fn o1_parses_ipv6_loopback() {
        let words: Vec<String> = Ipv6Addr::LOCALHOST
            .octets()
            .chunks(4)
            .map(|chunk| {
                format!(
                    "{:08X}",
                    u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]])
                )
            })
            .collect();
        assert_eq!(
            parse_proc_address(&words.concat()),
            Some(IpAddr::V6(Ipv6Addr::LOCALHOST))
        );
        assert_eq!(parse_proc_address("xyz"), None);
    }

    #[test]
    fn o1_start_ticks_of_self_are_readable() {
        assert!(process_start_ticks(std::process::id()).is_some());
        assert!(process_is_running(std::process::id()));
    }
}
