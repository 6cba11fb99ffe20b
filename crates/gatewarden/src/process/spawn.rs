//! Spawning the gateway on Linux without `fork`, on a thread of its own, with a pidfd.
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
//! memory, until it calls `execve`; the calling thread waits meanwhile. Nothing is copied, so the
//! cost does not depend on the supervisor's size. Because the child shares the supervisor's
//! memory, it runs only async-signal-safe system calls on data prepared beforehand: no
//! allocation, no lock, no Rust code that could panic. Its stack has a guard page below it, so an
//! overflow kills the child instead of writing over the heap.
//!
//! # K3: the thread that waits is never the actor's
//!
//! A child stopped (SIGSTOP) or blocked (an `execve` reading from a hung file system, a broken
//! lease) before `execve` keeps the `CLONE_VFORK` caller suspended for as long as it stays so.
//! Each child therefore gets a thread of its own, which clones it, then waits for its exit, then
//! reaps it: the actor only awaits a channel, with a bound ([`Launch::abandon`] ends a stuck
//! child). The thread lives exactly as long as the child, which is also what the parent-death
//! signal needs: Linux sends it when the *thread* that created the child exits.
//!
//! # K2: a pidfd, and no reap before the owner lets go
//!
//! The child is created with `CLONE_PIDFD`, so a pidfd exists from the first instant; signals to
//! the gateway go through it (`pidfd_send_signal`), and its exit is observed through it
//! (`waitid(P_PIDFD, .., WEXITED | WNOWAIT)`), without reaping. The thread reaps only once the
//! owner drops its [`ChildHandle`]: until then the exited gateway stays a zombie, its pid and
//! process group id cannot be reused, and a `killpg` to its group (the workers) cannot reach a
//! stranger. On a kernel without pidfds (before 5.2) the same thread protocol runs on the pid
//! alone: the no-reap-before-release rule is what makes that safe, the pidfd is a second lock.
//!
//! What the child gets is what [`std::process::Command`] would give it: the program resolved on
//! the child's `PATH`, the argument vector, the environment (inherited, then removals, then
//! settings), the working directory, stdin on `/dev/null`, stdout and stderr on pipes, its own
//! process group, default signal dispositions for every caught signal and for `SIGPIPE` (which
//! Rust programs ignore), and an empty signal mask.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

use crate::launch::LaunchSpec;

/// Size of the child's stack until `execve`. The child calls a handful of libc wrappers; glibc's
/// own `posix_spawn` child manages with less.
const CHILD_STACK_BYTES: usize = 64 * 1024;

/// Stack of the thread that creates, waits for and reaps one child (it builds the argument and
/// environment vectors, then mostly sleeps in system calls).
const CHILD_THREAD_STACK_BYTES: usize = 256 * 1024;

/// What runs after `execve`, handed over by the spawn thread.
pub(super) struct Launched {
    /// The child's pid (also its process group id).
    pub pid: u32,
    /// Its start time (`/proc/<pid>/stat` field 22), read before anything could reap it.
    pub start_ticks: Option<u64>,
    /// Reading end of its stdout.
    pub stdout: OwnedFd,
    /// Reading end of its stderr.
    pub stderr: OwnedFd,
    /// Signals and the reap permission.
    pub handle: ChildHandle,
    /// Its exit status, once it has exited (observed without reaping it).
    pub exit: oneshot::Receiver<io::Result<ExitStatus>>,
}

/// A spawn in progress: its outcome arrives on `result`; [`Launch::abandon`] ends it if it takes
/// too long.
pub(super) struct Launch {
    /// The spawn thread's answer, once the child has exec'd (or failed before).
    pub result: oneshot::Receiver<io::Result<Launched>>,
    shared: Arc<Shared>,
}

/// What the spawn thread, the child and the actor share while the child has not exec'd.
struct Shared {
    /// Written by the child as its first act (it shares our memory), so a stuck child can be
    /// named in the report.
    pid: AtomicI32,
    /// Written by the kernel during `clone` (`CLONE_PIDFD`); -1 until then or without pidfds.
    pidfd: AtomicI32,
    phase: Mutex<Phase>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// `clone` has not returned, or the thread has not handed the child over yet.
    Starting,
    /// Handed over: the owner's [`ChildHandle`] decides from now on.
    HandedOver,
    /// The owner gave up on it: the thread kills and reaps whatever the child became.
    Abandoned,
}

impl Drop for Launch {
    fn drop(&mut self) {
        // Nobody will take the child any more: a spawn still in progress is ended, not leaked.
        self.abandon();
    }
}

impl Launch {
    /// The child's pid: what it wrote as its first act, or else (a child stopped before its
    /// first instruction, which the chaos soak's "stop before exec" fault catches now and then)
    /// what the kernel says of its pidfd.
    pub fn pid(&self) -> Option<u32> {
        let written = u32::try_from(self.shared.pid.load(Ordering::SeqCst))
            .ok()
            .filter(|pid| *pid > 0);
        if written.is_some() {
            return written;
        }
        // Under the lock, while the spawn is still starting, the thread cannot close the pidfd,
        // so the descriptor still names this child.
        let phase = self
            .shared
            .phase
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if *phase != Phase::Starting {
            return None;
        }
        let pidfd = self.shared.pidfd.load(Ordering::SeqCst);
        (pidfd >= 0).then(|| pid_of_pidfd(pidfd)).flatten()
    }

    /// Gives up on the spawn: SIGKILLs the child (stopped or blocked before `execve`, or just
    /// past it) and lets its thread reap it. Returns false when the child was already handed over
    /// ([`Launch::result`] then holds it, or is about to).
    pub fn abandon(&self) -> bool {
        let mut phase = self
            .shared
            .phase
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if *phase != Phase::Starting {
            return *phase == Phase::Abandoned;
        }
        *phase = Phase::Abandoned;
        // Under the lock the thread can neither close the pidfd nor reap the child, so neither
        // the descriptor nor the pid can name anything else here.
        let pidfd = self.shared.pidfd.load(Ordering::SeqCst);
        let pid = self.shared.pid.load(Ordering::SeqCst);
        if pidfd >= 0 {
            let _ = pidfd_send_signal(pidfd, libc::SIGKILL);
        } else if pid > 1 {
            // SAFETY: kill has no memory preconditions; pid is our unreaped child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        true
    }
}

/// The owner's hold on a spawned child: signals go through its pidfd, and the child is not
/// reaped (so neither its pid nor its process group id can be reused) until this is dropped.
pub(super) struct ChildHandle {
    pid: libc::pid_t,
    pidfd: Option<Arc<OwnedFd>>,
    /// Told on drop whether the child was reaped already; otherwise the thread reaps it.
    release: mpsc::Sender<bool>,
}

impl Drop for ChildHandle {
    fn drop(&mut self) {
        // A child whose exit was observed is reaped right here, so that whoever saw the exit
        // (ProcessExited) finds it gone from /proc; one still running (killed just now) is left
        // to its thread, which waits.
        let reaped = reap_now(self.pid, self.pidfd.as_deref());
        let _ = self.release.send(reaped);
    }
}

impl ChildHandle {
    /// Sends `signal` to the child itself. After its exit this fails with `ESRCH`, whatever
    /// process may have its pid by then (K2).
    pub fn signal(&self, signal: libc::c_int) -> io::Result<()> {
        match &self.pidfd {
            Some(pidfd) => pidfd_send_signal(pidfd.as_raw_fd(), signal),
            None => {
                // No pidfd on this kernel: the pid is still safe, as the child cannot have been
                // reaped while this handle lives.
                // SAFETY: kill has no memory preconditions.
                if unsafe { libc::kill(self.pid, signal) } == 0 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            }
        }
    }

    /// Sends `signal` to the child's whole process group (its workers too). Safe while this
    /// handle lives: the unreaped leader keeps the group id allocated.
    pub fn signal_group(&self, signal: libc::c_int) -> io::Result<()> {
        // SAFETY: killpg has no memory preconditions; pid > 1 (checked at spawn).
        if unsafe { libc::killpg(self.pid, signal) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// True when signals go through a pidfd (kernel 5.2 and later).
    pub fn uses_pidfd(&self) -> bool {
        self.pidfd.is_some()
    }
}

/// Run on the spawn thread after `execve` with the child's pid and start time.
pub(super) type AfterExec = Box<dyn FnOnce(u32, Option<u64>) + Send>;

/// Extra facts the spawn thread needs besides the spec.
pub(super) struct LaunchExtras {
    /// Environment variables added last (the K4 state-dir marker).
    pub extra_env: Vec<(OsString, OsString)>,
    /// Run first, on the spawn thread (K4's leftover cleanup).
    pub before_spawn: Option<Box<dyn FnOnce() + Send>>,
    /// Run right after `execve`, before the child is handed over, on the spawn thread (so a slow
    /// disk never stalls the actor): writes the owned-gateway record, say. Gets pid and start time.
    pub after_exec: Option<AfterExec>,
}

/// Starts a spawn of `spec` on a thread of its own and returns at once.
pub(super) fn launch(spec: LaunchSpec, extras: LaunchExtras) -> io::Result<Launch> {
    let shared = Arc::new(Shared {
        pid: AtomicI32::new(0),
        pidfd: AtomicI32::new(-1),
        phase: Mutex::new(Phase::Starting),
    });
    let (reply, result) = oneshot::channel();
    let thread_shared = shared.clone();
    std::thread::Builder::new()
        .name("gatewarden-child".into())
        .stack_size(CHILD_THREAD_STACK_BYTES)
        .spawn(move || child_thread(&spec, extras, &thread_shared, reply))?;
    Ok(Launch { result, shared })
}

/// The whole life of one child: create it, hand it over, observe its exit, reap it.
fn child_thread(
    spec: &LaunchSpec,
    mut extras: LaunchExtras,
    shared: &Shared,
    reply: oneshot::Sender<io::Result<Launched>>,
) {
    if let Some(before_spawn) = extras.before_spawn.take() {
        before_spawn();
    }
    let created = match create(spec, &extras.extra_env, shared) {
        Ok(created) => created,
        Err(error) => {
            let _ = reply.send(Err(error));
            return;
        }
    };
    let Created {
        pid,
        pidfd,
        stdout,
        stderr,
    } = created;
    let pidfd = pidfd.map(Arc::new);
    // Read now: nothing can reap the child before this thread does.
    let start_ticks = crate::orphan::process_start_ticks(pid.unsigned_abs());
    let abandoned =
        *shared.phase.lock().unwrap_or_else(PoisonError::into_inner) == Phase::Abandoned;
    if let (Some(after_exec), false) = (extras.after_exec, abandoned) {
        after_exec(pid.unsigned_abs(), start_ticks);
    }
    let (release, released) = mpsc::channel::<bool>();
    let (exit_sender, exit) = oneshot::channel();
    let launched = Launched {
        pid: pid.unsigned_abs(),
        start_ticks,
        stdout,
        stderr,
        handle: ChildHandle {
            pid,
            pidfd: pidfd.clone(),
            release,
        },
        exit,
    };
    let handed_over = {
        let mut phase = shared.phase.lock().unwrap_or_else(PoisonError::into_inner);
        if *phase == Phase::Starting {
            *phase = Phase::HandedOver;
            true
        } else {
            false
        }
    };
    // Abandoned, or nobody listens any more: the group goes, then the child is reaped.
    if !handed_over {
        end_unowned(launched, pidfd.as_deref(), &released);
        return;
    }
    if let Err(Ok(launched)) = reply.send(Ok(launched)) {
        end_unowned(launched, pidfd.as_deref(), &released);
        return;
    }
    let status = wait_exit(pid, pidfd.as_deref(), true);
    let _ = exit_sender.send(status);
    // Blocks until the owner drops its handle.
    if released.recv() != Ok(true) {
        let _ = wait_exit(pid, pidfd.as_deref(), false);
    }
}

/// A child that nobody owns: kill its group while the leader is unreaped, then reap it.
fn end_unowned(launched: Launched, pidfd: Option<&OwnedFd>, released: &mpsc::Receiver<bool>) {
    let _ = launched.handle.signal_group(libc::SIGKILL);
    let _ = launched.handle.signal(libc::SIGKILL);
    let pid = launched.handle.pid;
    // The handle's drop tries a reap that cannot wait; this one waits for the SIGKILL to land.
    drop(launched);
    if released.recv() != Ok(true) {
        let _ = wait_exit(pid, pidfd, false);
    }
}

/// Reaps the child if it has exited, without waiting. True when it was reaped.
fn reap_now(pid: libc::pid_t, pidfd: Option<&OwnedFd>) -> bool {
    let (id_type, id) = match pidfd {
        Some(fd) => (libc::P_PIDFD, fd.as_raw_fd().unsigned_abs()),
        None => (libc::P_PID, pid.unsigned_abs()),
    };
    // SAFETY: info is a valid out-pointer; waitid on our own child. With WNOHANG and nothing to
    // reap, the kernel leaves si_pid at 0.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let result = unsafe { libc::waitid(id_type, id, &mut info, libc::WEXITED | libc::WNOHANG) };
    // SAFETY: si_pid is valid after waitid (0 when nothing was reaped).
    result == 0 && unsafe { info.si_pid() } != 0
}

/// Waits for the child's exit through its pidfd (or its pid), reaping it unless `keep`.
fn wait_exit(pid: libc::pid_t, pidfd: Option<&OwnedFd>, keep: bool) -> io::Result<ExitStatus> {
    let (id_type, id) = match pidfd {
        Some(fd) => (libc::P_PIDFD, fd.as_raw_fd().unsigned_abs()),
        None => (libc::P_PID, pid.unsigned_abs()),
    };
    let options = libc::WEXITED | if keep { libc::WNOWAIT } else { 0 };
    loop {
        // SAFETY: info is a valid out-pointer; waitid on our own child.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        if unsafe { libc::waitid(id_type, id, &mut info, options) } == 0 {
            // SAFETY: waitid filled in a SIGCHLD siginfo for this child.
            let status = unsafe { info.si_status() };
            let raw = match info.si_code {
                libc::CLD_EXITED => (status & 0xff) << 8,
                libc::CLD_DUMPED => (status & 0x7f) | 0x80,
                _ => status & 0x7f,
            };
            return Ok(ExitStatus::from_raw(raw));
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// `pidfd_send_signal(2)`: the raw system call (glibc wraps it only since 2.36).
fn pidfd_send_signal(pidfd: RawFd, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: no siginfo is passed (null), flags 0; the kernel checks the descriptor.
    let result = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd,
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A child that has exec'd.
struct Created {
    pid: libc::pid_t,
    pidfd: Option<OwnedFd>,
    stdout: OwnedFd,
    stderr: OwnedFd,
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

/// Everything the child reads, prepared by the parent. The child writes only `failed_step`,
/// `errno` and its pid (the thread reads them after the child has exec'd or exited:
/// `CLONE_VFORK`; the actor reads the pid through its atomic).
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
    own_pid: *const AtomicI32,
    failed_step: Option<Step>,
    errno: i32,
}

/// Creates the child and returns once it has exec'd (or fails).
fn create(
    spec: &LaunchSpec,
    extra_env: &[(OsString, OsString)],
    shared: &Shared,
) -> io::Result<Created> {
    let mut environment = child_environment(spec);
    for (name, value) in extra_env {
        environment.retain(|(existing, _)| existing != name);
        environment.push((name.clone(), value.clone()));
    }
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
        own_pid: &shared.pid,
        failed_step: None,
        errno: 0,
    };
    let stack = GuardedStack::new(CHILD_STACK_BYTES)?;
    let (pid, pidfd) = clone_child(&mut plan, &stack, &shared.pidfd)?;
    // The child has exec'd or exited: its copies of the descriptors are its own now.
    drop((stdin, stdout_write, stderr_write));

    if let Some(step) = plan.failed_step {
        // It exited with 127 before exec; reap it here, it is not ours to report. First make
        // sure [`Launch::abandon`] can no longer use the descriptor or the pid we are about to
        // free.
        {
            let _phase = shared.phase.lock().unwrap_or_else(PoisonError::into_inner);
            shared.pidfd.store(-1, Ordering::SeqCst);
            shared.pid.store(0, Ordering::SeqCst);
        }
        let _ = wait_exit(pid, pidfd.as_ref(), false);
        let error = io::Error::from_raw_os_error(plan.errno);
        return Err(io::Error::new(
            error.kind(),
            format!("{} failed: {error}", step.describe()),
        ));
    }
    if pid <= 1 {
        return Err(io::Error::other("clone returned an impossible pid"));
    }
    Ok(Created {
        pid,
        pidfd,
        stdout: stdout_read,
        stderr: stderr_read,
    })
}

/// The child's stack: an anonymous mapping whose lowest page is inaccessible, so running off its
/// end faults (and kills the child) instead of writing over whatever lies below.
struct GuardedStack {
    base: *mut libc::c_void,
    len: usize,
    page: usize,
}

impl GuardedStack {
    fn new(bytes: usize) -> io::Result<GuardedStack> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .ok()
            .filter(|page| *page > 0)
            .unwrap_or(4096);
        let len = bytes.div_ceil(page) * page + page;
        // SAFETY: a fresh private anonymous mapping; no existing memory is touched.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = GuardedStack { base, len, page };
        // SAFETY: the first page of our own mapping.
        if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// The top of the stack (it grows down), 16-byte aligned.
    fn top(&self) -> *mut libc::c_void {
        let end = self.base as usize + self.len;
        (end - end % 16) as *mut libc::c_void
    }
}

impl Drop for GuardedStack {
    fn drop(&mut self) {
        let _ = self.page;
        // SAFETY: unmaps exactly the mapping made in new(); the child no longer uses it.
        unsafe { libc::munmap(self.base, self.len) };
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

/// Runs the child on `stack` and returns its pid (and pidfd, where the kernel gives one) once it
/// has exec'd or exited. The kernel stores the pidfd in `pidfd_slot` before the child runs, so
/// the actor can kill a child stuck before `execve` through it.
fn clone_child(
    plan: &mut ChildPlan,
    stack: &GuardedStack,
    pidfd_slot: &AtomicI32,
) -> io::Result<(libc::pid_t, Option<OwnedFd>)> {
    // All signals blocked around the clone: a handler of ours must never run in the child, which
    // shares our memory. The child resets the handlers before it unblocks.
    // SAFETY: both sigsets are valid; sigfillset and pthread_sigmask only write them.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut previous: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut previous);
    }
    // SAFETY: child_main only reads the plan (alive until clone returns, which with CLONE_VFORK
    // is after the child's exec or exit) and writes its result fields; the stack is ours and
    // outlives the child's use of it for the same reason; the kernel writes one int (the pidfd)
    // to the slot, which outlives the call.
    let pid = unsafe {
        libc::clone(
            child_main,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
            std::ptr::from_mut(plan).cast(),
            pidfd_slot.as_ptr(),
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
    // Kernels before 5.2 ignore the unknown flag and leave the slot at -1: no pidfd (the thread
    // protocol alone keeps the pid safe then).
    let raw = pidfd_slot.load(Ordering::SeqCst);
    // SAFETY: the kernel just created this descriptor for us; nobody else owns it.
    let pidfd = (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw) });
    Ok((pid, pidfd))
}

/// The child, until `execve`. Only system calls on the plan's prepared data: it shares the
/// supervisor's memory, whose thread is suspended meanwhile, and other threads of the supervisor
/// may hold any lock.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: arg is the ChildPlan the parent passed to clone; it stays valid (CLONE_VFORK).
    let plan = unsafe { &mut *arg.cast::<ChildPlan>() };
    // SAFETY: every call below is an async-signal-safe libc wrapper on valid arguments.
    unsafe {
        // First, so that a child stuck in any later step can be named (and killed): a plain
        // atomic store into the parent's memory, no lock.
        (*plan.own_pid).store(libc::getpid(), Ordering::SeqCst);
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

/// The pid a pidfd refers to (`Pid:` in `/proc/self/fdinfo/<fd>`, Linux 5.4+); `None` when the
/// process has exited (the kernel then says -1) or the line is missing. A procfs read, no disk.
fn pid_of_pidfd(pidfd: i32) -> Option<u32> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{pidfd}")).ok()?;
    info.lines()
        .find_map(|line| line.strip_prefix("Pid:"))
        .and_then(|pid| pid.trim().parse::<i64>().ok())
        .and_then(|pid| u32::try_from(pid).ok())
        .filter(|pid| *pid > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k3_a_pidfd_names_its_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("sleep runs");
        // SAFETY: pidfd_open with a valid pid and no flags; the result is checked.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) };
        assert!(raw >= 0, "pidfd_open: {}", io::Error::last_os_error());
        // SAFETY: the kernel just created this descriptor for us.
        let pidfd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
        assert_eq!(pid_of_pidfd(pidfd.as_raw_fd()), Some(child.id()));
        child.kill().expect("kill");
        child.wait().expect("reap");
        assert_eq!(
            pid_of_pidfd(pidfd.as_raw_fd()),
            None,
            "an exited process has no pid"
        );
    }

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
