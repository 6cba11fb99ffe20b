//! Spawning the gateway on Linux without `fork`.
//!
//! The child must set its parent-death signal itself, between its creation and `exec` (T4
//! beyond). With std's `Command` that takes a `pre_exec` closure, and a `pre_exec` closure makes
//! std `fork` instead of using `posix_spawn`. A `fork` copies the page tables of the whole
//! supervising process, so the spawn costs time in proportion to the app that embeds the
//! supervisor: measured here, 2 ms from `Start` to the gateway's `main` in a small process,
//! 15–18 ms in one holding 256 MiB (`gatewarden-bench --only startup`, docs/PERFORMANCE.md).
//!
//! This module does what glibc's `posix_spawn` does, plus the parent-death signal: `clone` with
//! `CLONE_VM | CLONE_VFORK` runs the child on a small stack of its own, in the supervisor's
//! memory, until it calls `execve`; the supervisor's thread waits meanwhile. Nothing is copied, so
//! the cost does not depend on the supervisor's size. Because the child shares the supervisor's
//! memory, it runs only async-signal-safe system calls on data prepared beforehand: no
//! allocation, no lock, no Rust code that could panic.
//!
//! What the child gets is what [`std::process::Command`] would give it: the program resolved on
//! the child's `PATH`, the argument vector, the environment (inherited, then removals, then
//! settings), the working directory, stdin on `/dev/null`, stdout and stderr on pipes, its own
//! process group, default signal dispositions for every caught signal and for `SIGPIPE` (which
//! Rust programs ignore), and an empty signal mask.
//!
//! The exit status is collected by a small thread per child, blocked in `waitpid` on that pid
//! only, so the child is reaped even when its owner has gone (no zombie, no dependence on a
//! runtime being alive).

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use tokio::net::unix::pipe::Receiver;
use tokio::sync::oneshot;

use crate::launch::LaunchSpec;

/// Size of the child's stack until `execve`. The child calls a handful of libc wrappers; glibc's
/// own `posix_spawn` child manages with less.
const CHILD_STACK_BYTES: usize = 64 * 1024;

/// Stack of the thread that waits for one child.
const REAPER_STACK_BYTES: usize = 64 * 1024;

/// A spawned gateway: its pid and the reading ends of its output.
pub(super) struct SpawnedChild {
    pub pid: u32,
    pub stdout: Receiver,
    pub stderr: Receiver,
}

/// Which step of the child failed before `execve` (the errno is reported with it).
#[derive(Clone, Copy)]
enum Step {
    ProcessGroup,
    ParentDeathSignal,
    ParentGone,
    Stdio,
    WorkingDir,
    SignalMask,
    Exec,
}

impl Step {
    fn describe(self) -> &'static str {
        match self {
            Step::ProcessGroup => "setpgid",
            Step::ParentDeathSignal => "prctl(PR_SET_PDEATHSIG)",
            Step::ParentGone => "parent check",
            Step::Stdio => "redirecting stdio",
            Step::WorkingDir => "chdir",
            Step::SignalMask => "signal mask",
            Step::Exec => "execve",
        }
    }
}

/// Everything the child reads, prepared by the parent. The child writes only `failed_step` and
/// `errno` (the parent reads them after the child has exec'd or exited: `CLONE_VFORK`).
#[repr(C)]
struct ChildPlan {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    parent: libc::pid_t,
    failed_step: Option<Step>,
    errno: i32,
}

/// Spawns `spec` and returns its pid and output pipes. The child is not waited for: call
/// [`reap`] once (after reading anything that needs the pid to still be the child's).
pub(super) fn spawn(spec: &LaunchSpec) -> io::Result<SpawnedChild> {
    let environment = child_environment(spec);
    let program = resolve_program(spec.program(), &environment)?;
    let program = c_string(program.as_os_str().as_bytes())?;
    let mut argv_strings = Vec::with_capacity(spec.arguments().len() + 1);
    argv_strings.push(c_string(spec.program().as_os_str().as_bytes())?);
    for argument in spec.arguments() {
        argv_strings.push(c_string(argument.as_bytes())?);
    }
    let env_strings = environment
        .iter()
        .map(|(name, value)| {
            let mut entry = Vec::with_capacity(name.len() + value.len() + 1);
            entry.extend_from_slice(name.as_bytes());
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            c_string(&entry)
        })
        .collect::<io::Result<Vec<_>>>()?;
    let cwd = spec
        .working_dir()
        .map(|dir| c_string(dir.as_os_str().as_bytes()))
        .transpose()?;
    let argv = null_terminated(&argv_strings);
    let envp = null_terminated(&env_strings);

    // Every descriptor at 3 or above, so the child's dup2 onto 0, 1 and 2 never overwrites one it
    // still has to copy, and every one close-on-exec, so only the copies survive the exec.
    let stdin = above_stdio(std::fs::File::open("/dev/null")?.into())?;
    let (stdout_read, stdout_write) = pipe()?;
    let (stderr_read, stderr_write) = pipe()?;

    let mut plan = ChildPlan {
        program: program.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        cwd: cwd.as_ref().map_or(std::ptr::null(), |dir| dir.as_ptr()),
        stdin: stdin.as_raw_fd(),
        stdout: stdout_write.as_raw_fd(),
        stderr: stderr_write.as_raw_fd(),
        // SAFETY: getpid has no preconditions.
        parent: unsafe { libc::getpid() },
        failed_step: None,
        errno: 0,
    };
    let mut stack = vec![0u8; CHILD_STACK_BYTES];
    let pid = clone_child(&mut plan, &mut stack)?;
    // The child has exec'd or exited: its copies of the descriptors are its own now.
    drop((stdin, stdout_write, stderr_write));

    if let Some(step) = plan.failed_step {
        // It exited with 127 before exec; reap it here, it is not ours to report.
        let _ = wait_for(pid);
        let error = io::Error::from_raw_os_error(plan.errno);
        return Err(io::Error::new(
            error.kind(),
            format!("{} failed: {error}", step.describe()),
        ));
    }
    let stdout = Receiver::from_owned_fd(stdout_read)?;
    let stderr = Receiver::from_owned_fd(stderr_read)?;
    let pid = u32::try_from(pid).map_err(|_| io::Error::other("clone returned a negative pid"))?;
    Ok(SpawnedChild {
        pid,
        stdout,
        stderr,
    })
}

/// Waits for `pid` on a thread of its own; the answer is its exit status. The thread reaps the
/// child even when nobody awaits the answer any more.
pub(super) fn reap(pid: u32) -> oneshot::Receiver<io::Result<ExitStatus>> {
    let (sender, receiver) = oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name(format!("gatewarden-reap-{pid}"))
        .stack_size(REAPER_STACK_BYTES)
        .spawn(move || {
            let status = libc::pid_t::try_from(pid)
                .map_err(|_| io::Error::other("pid out of range"))
                .and_then(wait_for);
            let _ = sender.send(status);
        });
    if let Err(error) = spawned {
        // No thread: the child would become a zombie. Kill its group and reap it right here.
        tracing::warn!(pid, %error, "no thread to wait for the gateway; killing it");
        if let Ok(raw) = libc::pid_t::try_from(pid) {
            // SAFETY: killpg has no memory preconditions; raw is a child we spawned (> 1).
            unsafe { libc::killpg(raw, libc::SIGKILL) };
            let _ = wait_for(raw);
        }
    }
    receiver
}

/// Blocks until our child `pid` has exited and returns its status.
fn wait_for(pid: libc::pid_t) -> io::Result<ExitStatus> {
    loop {
        let mut status = 0;
        // SAFETY: status is a valid out-pointer; waitpid on our own child.
        let reaped = unsafe { libc::waitpid(pid, &mut status, 0) };
        if reaped == pid {
            return Ok(ExitStatus::from_raw(status));
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// The inherited environment, then the spec's removals, then its settings (secrets last), in the
/// order [`std::process::Command`] applies them.
fn child_environment(spec: &LaunchSpec) -> Vec<(OsString, OsString)> {
    let mut environment: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let mut set = |name: &OsStr, value: Option<&OsStr>| {
        environment.retain(|(existing, _)| existing != name);
        if let Some(value) = value {
            environment.push((name.to_owned(), value.to_owned()));
        }
    };
    for name in spec.env_removed() {
        set(OsStr::new(name), None);
    }
    for (name, value) in spec.env_vars() {
        set(OsStr::new(name), Some(OsStr::new(value)));
    }
    for (name, secret) in spec.secret_env_vars() {
        // A3: secrets go to the environment, never to argv or a log.
        set(OsStr::new(name), Some(OsStr::new(secret.expose())));
    }
    environment
}

/// A program without a slash is looked up on the child's `PATH`, as `Command` does.
fn resolve_program(program: &Path, environment: &[(OsString, OsString)]) -> io::Result<PathBuf> {
    if program.as_os_str().as_bytes().contains(&b'/') {
        return Ok(program.to_owned());
    }
    let path = environment
        .iter()
        .find(|(name, _)| name == "PATH")
        .map(|(_, value)| value.clone())
        .unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        if is_executable_file(&candidate) {
            return Ok(candidate);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        "no such program on the gateway's PATH",
    ))
}

fn is_executable_file(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn c_string(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a program, argument, variable or directory contains a NUL byte",
        )
    })
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|string| string.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// A close-on-exec pipe, both ends at 3 or above: (read, write).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds is a valid out-array of two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 just returned these two descriptors, owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((above_stdio(read)?, above_stdio(write)?))
}

/// `fd` itself when it is 3 or above, else a close-on-exec copy at 3 or above (a supervisor
/// started with a closed stdin, say, gets 0 from its next open).
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor we own returns a new one or -1.
    let copy = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if copy < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fcntl just returned this descriptor, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}

/// Runs the child on `stack` and returns its pid once it has exec'd or exited.
fn clone_child(plan: &mut ChildPlan, stack: &mut [u8]) -> io::Result<libc::pid_t> {
    // All signals blocked around the clone: a handler of ours must never run in the child, which
    // shares our memory. The child resets the handlers before it unblocks.
    // SAFETY: both sigsets are valid; sigfillset and pthread_sigmask only write them.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut previous: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut previous);
    }
    // The stack grows down: pass its top, 16-byte aligned.
    let top = stack.as_mut_ptr_range().end;
    let top = top.wrapping_sub(top as usize % 16);
    // SAFETY: child_main only reads the plan (alive until clone returns, which with CLONE_VFORK
    // is after the child's exec or exit) and writes its two result fields; the stack is ours and
    // outlives the child's use of it for the same reason.
    let pid = unsafe {
        libc::clone(
            child_main,
            top.cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            std::ptr::from_mut(plan).cast(),
        )
    };
    let error = io::Error::last_os_error();
    // SAFETY: restores the mask saved above.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut());
    }
    if pid < 0 {
        return Err(error);
    }
    Ok(pid)
}

/// The child, until `execve`. Only system calls on the plan's prepared data: it shares the
/// supervisor's memory, whose thread is suspended meanwhile, and other threads of the supervisor
/// may hold any lock.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: arg is the ChildPlan the parent passed to clone; it stays valid (CLONE_VFORK).
    let plan = unsafe { &mut *arg.cast::<ChildPlan>() };
    // SAFETY: every call below is an async-signal-safe libc wrapper on valid arguments.
    unsafe {
        let fail = |plan: &mut ChildPlan, step: Step| -> libc::c_int {
            plan.failed_step = Some(step);
            plan.errno = *libc::__errno_location();
            libc::_exit(127)
        };
        // Its own process group: one killpg reaches the gateway and its workers, nothing of ours.
        if libc::setpgid(0, 0) != 0 {
            return fail(plan, Step::ProcessGroup);
        }
        // T4 beyond: if the supervisor dies (even by SIGKILL), the kernel kills the gateway.
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            return fail(plan, Step::ParentDeathSignal);
        }
        // The supervisor may have died before the prctl; the signal would then never come.
        if libc::getppid() != plan.parent {
            *libc::__errno_location() = libc::ESRCH;
            return fail(plan, Step::ParentGone);
        }
        for (from, to) in [(plan.stdin, 0), (plan.stdout, 1), (plan.stderr, 2)] {
            // The sources are all above 2 (the parent made sure), so dup2 always makes a new
            // descriptor, without close-on-exec.
            if libc::dup2(from, to) < 0 {
                return fail(plan, Step::Stdio);
            }
        }
        if !plan.cwd.is_null() && libc::chdir(plan.cwd) != 0 {
            return fail(plan, Step::WorkingDir);
        }
        // Default dispositions for every caught signal (a handler address means nothing after
        // exec, and must not run before it) and for SIGPIPE, which Rust ignores in its own
        // process; other ignored signals stay ignored, as with Command.
        for signal in 1..=libc::SIGRTMAX() {
            if signal == libc::SIGKILL || signal == libc::SIGSTOP {
                continue;
            }
            let mut current: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &mut current) != 0 {
                continue;
            }
            let caught =
                current.sa_sigaction != libc::SIG_DFL && current.sa_sigaction != libc::SIG_IGN;
            if caught || signal == libc::SIGPIPE {
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                // glibc refuses its two internal signals; nothing to do about those.
                libc::sigaction(signal, &default, std::ptr::null_mut());
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        if libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
            return fail(plan, Step::SignalMask);
        }
        libc::execve(plan.program, plan.argv, plan.envp);
        fail(plan, Step::Exec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_with_a_slash_is_taken_as_is() {
        let resolved = resolve_program(Path::new("./gateway"), &[]).expect("resolved");
        assert_eq!(resolved, PathBuf::from("./gateway"));
    }

    #[test]
    fn a_bare_program_is_found_on_the_childs_path() {
        let environment = vec![(OsString::from("PATH"), OsString::from("/nonexistent:/bin"))];
        let resolved = resolve_program(Path::new("sh"), &environment).expect("sh on /bin");
        assert_eq!(resolved, PathBuf::from("/bin/sh"));
        let missing = resolve_program(Path::new("no-such-gateway-binary"), &environment);
        assert_eq!(
            missing.expect_err("not found").kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn a_nul_byte_is_invalid_input() {
        let error = c_string(b"a\0b").expect_err("NUL refused");
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }
}
