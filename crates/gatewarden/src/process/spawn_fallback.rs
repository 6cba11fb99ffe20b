//! Spawning the gateway where Linux's `clone`, pidfds and parent-death signal do not exist (macOS
//! and other Unixes): std's `Command` on a thread of its own, with the same interface and the
//! same thread protocol as the Linux module (`spawn.rs`).
//!
//! What is kept: the spawn never blocks the actor (K3), and the child is reaped only once its
//! owner lets go (`waitid(.., WNOWAIT)` first), so a pid or group signal never reaches a reused
//! pid (K2's guarantee, without a pidfd: the documented fallback). What is missing: the
//! parent-death signal (the owned-gateway record lets the next supervisor find an orphan, O1).

use std::ffi::OsString;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{mpsc, Arc};

use tokio::sync::oneshot;

use crate::launch::LaunchSpec;

/// See the Linux module.
pub(super) struct Launched {
    pub pid: u32,
    pub start_ticks: Option<u64>,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub handle: ChildHandle,
    pub exit: oneshot::Receiver<io::Result<ExitStatus>>,
}

/// See the Linux module.
pub(super) struct Launch {
    pub result: oneshot::Receiver<io::Result<Launched>>,
    pid: Arc<AtomicI32>,
}

impl Launch {
    /// The child's pid, once `Command::spawn` has returned it.
    pub fn pid(&self) -> Option<u32> {
        u32::try_from(self.pid.load(Ordering::SeqCst))
            .ok()
            .filter(|pid| *pid > 0)
    }

    /// `posix_spawn`/`fork` return once the child exists, so there is nothing to end before the
    /// hand-over here; an unclaimed child is ended by its thread.
    pub fn abandon(&self) -> bool {
        false
    }
}

/// See the Linux module; signals go by pid, which stays safe because the child is not reaped
/// while this handle lives.
pub(super) struct ChildHandle {
    pid: libc::pid_t,
    _release: mpsc::Sender<()>,
}

impl ChildHandle {
    pub fn signal(&self, signal: libc::c_int) -> io::Result<()> {
        // SAFETY: kill has no memory preconditions; the pid is our unreaped child.
        if unsafe { libc::kill(self.pid, signal) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    pub fn signal_group(&self, signal: libc::c_int) -> io::Result<()> {
        // SAFETY: killpg has no memory preconditions; the unreaped leader keeps the group id.
        if unsafe { libc::killpg(self.pid, signal) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    pub fn uses_pidfd(&self) -> bool {
        false
    }
}

/// See the Linux module.
pub(super) type AfterExec = Box<dyn FnOnce(u32, Option<u64>) + Send>;

/// See the Linux module.
pub(super) struct LaunchExtras {
    pub extra_env: Vec<(OsString, OsString)>,
    /// Run first, on the spawn thread (K4's leftover cleanup).
    pub before_spawn: Option<Box<dyn FnOnce() + Send>>,
    pub after_exec: Option<AfterExec>,
}

/// Starts a spawn of `spec` on a thread of its own and returns at once.
pub(super) fn launch(spec: LaunchSpec, extras: LaunchExtras) -> io::Result<Launch> {
    let pid = Arc::new(AtomicI32::new(0));
    let (reply, result) = oneshot::channel();
    let thread_pid = pid.clone();
    std::thread::Builder::new()
        .name("gatewarden-child".into())
        .spawn(move || child_thread(&spec, extras, &thread_pid, reply))?;
    Ok(Launch { result, pid })
}

fn child_thread(
    spec: &LaunchSpec,
    mut extras: LaunchExtras,
    shared_pid: &AtomicI32,
    reply: oneshot::Sender<io::Result<Launched>>,
) {
    if let Some(before_spawn) = extras.before_spawn.take() {
        before_spawn();
    }
    let mut command = Command::new(spec.program());
    command.args(spec.arguments());
    if let Some(dir) = spec.working_dir() {
        command.current_dir(dir);
    }
    for name in spec.env_removed() {
        command.env_remove(name);
    }
    for (name, value) in spec.env_vars() {
        command.env(name, value);
    }
    for (name, secret) in spec.secret_env_vars() {
        // A3: the secret goes to the environment, which other users cannot read, never to argv.
        command.env(name, secret.expose());
    }
    for (name, value) in &extras.extra_env {
        command.env(name, value);
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: one killpg reaches the gateway and its workers, nothing of ours.
        .process_group(0);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            let _ = reply.send(Err(error));
            return;
        }
    };
    let raw_pid = i32::try_from(child.id()).unwrap_or(0);
    shared_pid.store(raw_pid, Ordering::SeqCst);
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        let _ = reply.send(Err(io::Error::other(
            "the child's output pipes are missing",
        )));
        return;
    };
    if let Some(after_exec) = extras.after_exec {
        after_exec(child.id(), None);
    }
    let (release, released) = mpsc::channel::<()>();
    let (exit_sender, exit) = oneshot::channel();
    let launched = Launched {
        pid: child.id(),
        start_ticks: None,
        stdout: stdout.into(),
        stderr: stderr.into(),
        handle: ChildHandle {
            pid: raw_pid,
            _release: release,
        },
        exit,
    };
    if let Err(Ok(launched)) = reply.send(Ok(launched)) {
        let _ = launched.handle.signal_group(libc::SIGKILL);
        drop(launched);
        let _ = child.wait();
        return;
    }
    let _ = exit_sender.send(wait_without_reaping(raw_pid));
    let _ = released.recv();
    let _ = child.wait();
}

/// The exit status, leaving the child a zombie until `Child::wait` reaps it.
fn wait_without_reaping(pid: libc::pid_t) -> io::Result<ExitStatus> {
    loop {
        // SAFETY: info is a valid out-pointer; waitid on our own child.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let id = libc::id_t::try_from(pid).unwrap_or(0);
        if unsafe { libc::waitid(libc::P_PID, id, &mut info, libc::WEXITED | libc::WNOWAIT) } == 0 {
            // SAFETY: waitid filled in a SIGCHLD siginfo for this child.
            let status = unsafe { info.si_status() };
            let raw = if info.si_code == libc::CLD_EXITED {
                (status & 0xff) << 8
            } else {
                status & 0x7f
            };
            return Ok(ExitStatus::from_raw(raw));
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}
