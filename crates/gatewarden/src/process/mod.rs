//! [`ProcessActor`]: owns one gateway child process at a time — spawn, output lines, exit, signals,
//! stop (X1, X2, T4, T6) — and nothing else.
//!
//! # Guarantees
//!
//! - **One child at most.** A [`Spawn`] while a child is owned is refused.
//! - **Nothing left behind.** The child leads its own process group, and every way the ownership
//!   ends — exit, [`Terminate`], [`ForceKill`], the actor stopping or being dropped — ends with
//!   SIGKILL to that group, so the gateway's workers go with it. If the supervisor process itself is
//!   killed, the kernel's parent-death signal (Linux) kills the gateway (T4 beyond).
//! - **Always reaped, never early.** A thread per child creates it, observes its exit and reaps it
//!   (see `spawn`), even after the actor has gone. It reaps only once the actor has let go of the
//!   child, so every signal the actor sends (to the gateway through its pidfd, to its group with
//!   `killpg`) reaches the gateway's own processes, never a reused pid (K2).
//! - **A spawn never blocks the actor (K3).** The child is created on its own thread; the actor
//!   awaits it for at most [`ProcessActorConfig::spawn_timeout_ms`] and then kills a child stuck
//!   before `execve` (stopped, or blocked on a hung file system) and reports it.
//! - **Exit after output.** [`ProcessExited`] is sent after the output lines of that process were
//!   delivered (waiting at most [`ProcessActorConfig::output_drain_ms`] for them, since a grandchild
//!   can keep the pipes open), so the recipient of both sees the last stderr lines first (L7).
//! - **Bounded output.** Lines are cut at [`ProcessActorConfig::max_line_bytes`] and a slow output
//!   recipient costs dropped (counted) lines, never memory; see [`output`](self) for the design.
//!
//! The actor only moves bytes and signals: deciding what a stderr line means (X3), whether an exit
//! was expected (X2) or what to do next belongs to the core. Every raw line goes to the output
//! recipient as a [`ProcessOutput`].
//!
//! # The thread that spawns matters
//!
//! Linux delivers the parent-death signal when the *thread* that created the child exits, not the
//! process. That thread is the child's own thread, which lives until the child is reaped, so the
//! gateway dies with the supervisor process and never because some other thread ended.

#[cfg(any(target_os = "linux", target_os = "android"))]
mod leftovers;
mod output;
mod record;
#[cfg(any(target_os = "linux", target_os = "android"))]
mod spawn;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
#[path = "spawn_fallback.rs"]
mod spawn;

use std::ffi::OsString;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::Either;
use nix::errno::Errno;
use nix::sys::signal::Signal;
use tokio::net::unix::pipe::Receiver;
use tokio::sync::oneshot;

use crate::launch::LaunchSpec;
use crate::orphan::process_start_ticks;
use crate::reports::ReportTo;
use output::StreamCapture;
use spawn::{ChildHandle, Launch, LaunchExtras, Launched};

#[cfg(any(target_os = "linux", target_os = "android"))]
pub use leftovers::{end_leftovers, LeftoverReport};
pub use record::{
    owned_record_path, read_owned_record, remove_owned_record, write_owned_record, OwnedRecord,
    RecordError, OWNED_RECORD_FILE, STATE_MARKER_ENV,
};

/// Settings of the process actor. Every number has its default here, not in the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessActorConfig {
    /// X1: longer output lines are cut to this many bytes (the rest of the line is discarded).
    pub max_line_bytes: usize,
    /// X1: lines queued per stream for a slow recipient; beyond that, lines are dropped and counted.
    pub output_queue_lines: usize,
    /// X2: after the leader exits, wait at most this long for its remaining output to be delivered
    /// before publishing the exit (a grandchild may hold the pipes open forever).
    pub output_drain_ms: u64,
    /// O1: where the owned-gateway record ([`OWNED_RECORD_FILE`]) is written; `None` writes none.
    /// K4: also the value of the [`STATE_MARKER_ENV`] variable every gateway gets.
    pub state_dir: Option<PathBuf>,
    /// K3: a child that has not reached `execve` after this long (stopped, or blocked on a hung
    /// file system) is killed and the spawn fails with [`ProcessError::SpawnStuck`]
    /// (`start.spawn_timeout_ms`, 10 s).
    pub spawn_timeout_ms: u64,
}

impl Default for ProcessActorConfig {
    fn default() -> Self {
        ProcessActorConfig {
            max_line_bytes: 16 * 1024,
            output_queue_lines: 256,
            output_drain_ms: 500,
            state_dir: None,
            spawn_timeout_ms: 10_000,
        }
    }
}

/// Why a process request failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// A gateway is already owned; the actor never owns two.
    #[error("a gateway process is already owned (pid {pid})")]
    AlreadyOwned {
        /// The owned process.
        pid: u32,
    },
    /// A spawn is still in progress; the actor never owns two.
    #[error("a gateway spawn is already in progress")]
    SpawnInProgress,
    /// The program could not be started (not found, not executable, bad working directory, ...).
    #[error(
        "could not start {} ({}): {source}",
        program.display(),
        describe_attempt(program, cwd.as_deref())
    )]
    SpawnFailed {
        /// The program that was run.
        program: PathBuf,
        /// The working directory that was asked for, if any.
        cwd: Option<PathBuf>,
        /// The operating system's answer.
        source: io::Error,
    },
    /// K3: the child did not reach `execve` in time (stopped, or blocked on a hung file system);
    /// it was killed.
    #[error(
        "the gateway process{} did not start its program within {waited_ms} ms ({}); it was killed",
        pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default(),
        state.as_deref().unwrap_or("state unknown")
    )]
    SpawnStuck {
        /// The stuck child, when it had run far enough to be named.
        pid: Option<u32>,
        /// How long it was waited for.
        waited_ms: u64,
        /// What `/proc` said about it (`stopped`, `sleeping`, ...).
        state: Option<String>,
    },
    /// A stop or kill arrived while the spawn was in progress; the child was killed.
    #[error("the spawn was cancelled by a stop")]
    SpawnCancelled,
    /// The request needs an owned process and there is none.
    #[error("no gateway process is owned")]
    NoProcess,
    /// The signal could not be delivered.
    #[error("could not send {signal} to pid {pid}: {source}")]
    SignalFailed {
        /// The target process.
        pid: u32,
        /// The signal.
        signal: Signal,
        /// The kernel's answer.
        source: Errno,
    },
}

/// The state letter of `/proc/<pid>/stat` in words.
fn describe_state(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let state = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .next()?;
    Some(
        match state {
            "T" | "t" => "stopped",
            "D" => "blocked in the kernel (uninterruptible)",
            "S" => "sleeping",
            "R" => "running",
            "Z" => "exited",
            other => other,
        }
        .to_string(),
    )
}

fn describe_attempt(program: &Path, cwd: Option<&Path>) -> String {
    // A bare name is looked up in PATH; anything with a slash is used as given. Saying which, and
    // in which directory, is what someone fixing "not found" needs to know.
    let lookup = if program.components().count() > 1 {
        "used as a path"
    } else {
        "searched in PATH"
    };
    match cwd {
        Some(dir) => format!("{lookup}, working directory {}", dir.display()),
        None => format!("{lookup}, supervisor's working directory"),
    }
}

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error (classified by X3 elsewhere).
    Stderr,
}

/// X1: one raw line of gateway output, sent to the output recipient.
#[derive(Debug, Clone, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct ProcessOutput {
    /// The process that wrote it.
    pub pid: u32,
    /// The stream it came from.
    pub stream: OutputStream,
    /// The line without its newline, lossily decoded as UTF-8, at most `max_line_bytes` long.
    pub line: String,
    /// True when the line was longer than `max_line_bytes` and was cut.
    pub truncated: bool,
    /// Lines of this stream dropped just before this one because the recipient was slow.
    pub dropped_before: u64,
}

/// X1/X2: the owned process ended and was reaped. Sent once per spawned process.
#[derive(Debug, Clone, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct ProcessExited {
    /// The process that ended.
    pub pid: u32,
    /// The exit code, or 128 + signal number when a signal killed it (as a shell reports it).
    /// `None` only when the exit status could not be read.
    pub code: Option<i32>,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// True when the end was asked for with [`Terminate`] or [`ForceKill`].
    pub stop_requested: bool,
    /// Output lines dropped because the output recipient was slow (both streams).
    pub dropped_output_lines: u64,
}

/// The spawned gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpawnedProcess {
    /// Its pid, which is also its process group id.
    pub pid: u32,
    /// Its start time in clock ticks since boot (`/proc/<pid>/stat` field 22); `None` without
    /// `/proc`.
    pub started_at_ticks: Option<u64>,
}

/// X1: spawn the gateway described by the spec. Refused while a process is owned.
#[derive(Debug, Message)]
#[rtype(result = "Result<SpawnedProcess, ProcessError>")]
pub struct Spawn(pub LaunchSpec);

/// T4: SIGTERM the process group, SIGKILL it after `grace_ms` if the leader has not exited, and
/// reply once the leader has been reaped. `grace_ms` comes from `StopConfig::kill_grace_ms` (5 s).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "TerminateReply")]
pub struct Terminate {
    /// Time between SIGTERM and SIGKILL.
    pub grace_ms: u64,
}

/// How a terminated leader ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminateOutcome {
    /// True when it exited before SIGKILL was needed.
    pub exited_gracefully: bool,
    /// As in [`ProcessExited::code`].
    pub code: Option<i32>,
    /// As in [`ProcessExited::signal`].
    pub signal: Option<i32>,
}

/// The reply to [`Terminate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminateReply {
    /// No process was owned: nothing to do (terminate is idempotent).
    NoProcess,
    /// The leader was reaped.
    Ended(TerminateOutcome),
    /// The actor stopped before the leader was reaped; it SIGKILLed the group on its way out.
    ActorStopped,
}

/// T6: SIGKILL the process group at once. Replies whether a process was owned.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "bool")]
pub struct ForceKill;

/// P3/P4: send a signal to the gateway (the group leader only, not its workers), e.g. the
/// configured reload signal (`ReloadSignal::Sigusr2` → [`Signal::SIGUSR2`]).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<(), ProcessError>")]
pub struct SendSignal(pub Signal);

/// The pid of the owned process, if any.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Option<u32>")]
pub struct GetPid;

/// The actor that owns the gateway process. See the module documentation for its guarantees.
pub struct ProcessActor {
    config: ProcessActorConfig,
    output: ReportTo<ProcessOutput>,
    exits: ReportTo<ProcessExited>,
    owned: Option<OwnedChild>,
    /// K3: a spawn whose child has not been handed over yet.
    pending: Option<PendingSpawn>,
    generation: u64,
}

/// A spawn in progress. Dropping it ends the child (see [`Launch`]'s drop).
struct PendingSpawn {
    generation: u64,
    launch: Launch,
    /// Dropping it wakes the waiting `Spawn` handler: the spawn was cancelled.
    cancel: oneshot::Sender<()>,
}

impl ProcessActor {
    /// An actor that sends output lines to `output` and exits to `exits` (keeping their
    /// receivers alive).
    pub fn new(
        config: ProcessActorConfig,
        output: Recipient<ProcessOutput>,
        exits: Recipient<ProcessExited>,
    ) -> Self {
        ProcessActor::reporting_to(config, output.into(), exits.into())
    }

    /// [`ProcessActor::new`] with destinations that may be weak (the supervisor's own child:
    /// see `crate::reports`).
    pub(crate) fn reporting_to(
        config: ProcessActorConfig,
        output: ReportTo<ProcessOutput>,
        exits: ReportTo<ProcessExited>,
    ) -> Self {
        ProcessActor {
            config,
            output,
            exits,
            owned: None,
            pending: None,
            generation: 0,
        }
    }

    /// Runs when the child's exit was observed (not yet reaped). It runs in the same poll as the
    /// observation; the child is reaped only when `owned` (and its [`ChildHandle`]) is dropped
    /// here, after the last signal to its group.
    fn on_reaped(&mut self, generation: u64, status: io::Result<ExitStatus>) {
        let Some(mut owned) = self.owned.take_if(|owned| owned.generation == generation) else {
            return;
        };
        let (code, signal) = match status {
            Ok(status) => match status.signal() {
                Some(signal) => (Some(128 + signal), Some(signal)),
                None => (status.code(), None),
            },
            Err(error) => {
                tracing::warn!(pid = owned.pid, %error, "could not read the gateway's exit status");
                (None, None)
            }
        };
        tracing::info!(
            pid = owned.pid,
            ?code,
            ?signal,
            stop_requested = owned.stop_requested,
            "gateway process exited"
        );
        let killed = owned.kill_sent && signal == Some(Signal::SIGKILL as i32);
        let outcome = TerminateOutcome {
            exited_gracefully: !killed,
            code,
            signal,
        };
        for waiter in owned.terminate_waiters.drain(..) {
            let _ = waiter.send(outcome);
        }
        let captures = std::mem::take(&mut owned.captures);
        let exited = ProcessExited {
            pid: owned.pid,
            code,
            signal,
            stop_requested: owned.stop_requested,
            dropped_output_lines: 0,
        };
        // Dropping the ownership SIGKILLs what is left of the group (workers), removes the record,
        // and only then lets the child's thread reap it.
        drop(owned);

        let exits = self.exits.clone();
        let drain = Duration::from_millis(self.config.output_drain_ms);
        // Detached from the actor's context so the exit is published even if the actor stops now.
        actix_rt::spawn(async move {
            let dropped_output_lines = drain_output(captures, drain).await;
            exits.do_send(ProcessExited {
                dropped_output_lines,
                ..exited
            });
        });
    }

    fn escalate(&mut self, generation: u64) {
        let Some(owned) = self.owned.as_mut() else {
            return;
        };
        if owned.generation != generation || owned.kill_sent {
            return;
        }
        tracing::warn!(
            pid = owned.pid,
            "gateway did not exit within the grace period; sending SIGKILL to its group"
        );
        owned.kill_sent = true;
        owned.signal_group(Signal::SIGKILL);
    }

    /// Ends a spawn in progress (stop, force-kill, actor stopping). True when there was one.
    fn cancel_pending(&mut self, why: &str) -> bool {
        let Some(pending) = self.pending.take() else {
            return false;
        };
        tracing::info!(
            pid = pending.launch.pid(),
            "{why} while the gateway was being spawned; killing the new process"
        );
        pending.launch.abandon();
        drop(pending.cancel);
        true
    }

    /// Takes ownership of a child that reached `execve`.
    fn adopt(
        &mut self,
        generation: u64,
        launched: Launched,
        display_argv: &[String],
        ctx: &mut Context<Self>,
    ) -> io::Result<SpawnedProcess> {
        let Launched {
            pid,
            start_ticks,
            stdout,
            stderr,
            handle,
            exit,
        } = launched;
        tracing::info!(pid, argv = ?display_argv, pidfd = handle.uses_pidfd(), "gateway process spawned");
        let record_path = self.config.state_dir.as_deref().map(owned_record_path);
        // Until the output is captured the handle is already owned, so any early return still
        // kills the group and lets the child be reaped.
        let mut owned = OwnedChild {
            pid,
            generation,
            stop_requested: false,
            kill_sent: false,
            terminate_waiters: Vec::new(),
            record_path,
            captures: Vec::new(),
            handle: Some(handle),
        };
        let mut streams = Vec::with_capacity(2);
        for (fd, stream) in [
            (stdout, OutputStream::Stdout),
            (stderr, OutputStream::Stderr),
        ] {
            streams.push((Receiver::from_owned_fd(fd)?, stream));
        }
        owned.captures = streams
            .into_iter()
            .map(|(receiver, stream)| {
                output::capture(
                    receiver,
                    pid,
                    stream,
                    self.config.max_line_bytes,
                    self.config.output_queue_lines,
                    self.output.clone(),
                )
            })
            .collect();
        self.owned = Some(owned);
        ctx.spawn(
            async move {
                exit.await.unwrap_or_else(|_| {
                    Err(io::Error::other(
                        "the child's thread ended without a status",
                    ))
                })
            }
            .into_actor(self)
            .map(move |status, actor, _ctx| actor.on_reaped(generation, status)),
        );
        Ok(SpawnedProcess {
            pid,
            started_at_ticks: start_ticks,
        })
    }
}

/// Waits (at most `drain`, shared by all streams) for the output tasks to finish, aborting those
/// still running. Returns the number of lines dropped for a slow recipient.
async fn drain_output(captures: Vec<StreamCapture>, drain: Duration) -> u64 {
    let deadline = tokio::time::Instant::now() + drain;
    let mut dropped = 0;
    for StreamCapture {
        mut reader,
        mut forwarder,
    } in captures
    {
        match tokio::time::timeout_at(deadline, &mut reader).await {
            Ok(Ok(summary)) => dropped += summary.dropped_lines,
            Ok(Err(_)) => {}
            Err(_) => reader.abort(),
        }
        if tokio::time::timeout_at(deadline, &mut forwarder)
            .await
            .is_err()
        {
            forwarder.abort();
        }
    }
    dropped
}

impl Actor for ProcessActor {
    type Context = Context<Self>;

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.cancel_pending("the process actor stopped");
        if let Some(owned) = self.owned.take() {
            tracing::warn!(
                pid = owned.pid,
                "process actor stopped while owning the gateway; killing its group"
            );
        }
    }
}

/// The ownership of one spawned child. Dropping it SIGKILLs the process group, removes the
/// owned-gateway record, and then lets the child be reaped: whichever way ownership ends, nothing
/// is left running, and no signal ever targets a freed pid.
struct OwnedChild {
    pid: u32,
    generation: u64,
    stop_requested: bool,
    kill_sent: bool,
    terminate_waiters: Vec<oneshot::Sender<TerminateOutcome>>,
    record_path: Option<PathBuf>,
    captures: Vec<StreamCapture>,
    /// Released (dropped) last, in `Drop`, after the final group kill.
    handle: Option<ChildHandle>,
}

impl OwnedChild {
    /// Signals the whole process group (the gateway's workers share it and must not outlive it,
    /// T4 beyond). The leader is not reaped while we hold its handle, so the group id is still
    /// ours. A group that is already gone is not an error.
    fn signal_group(&self, signal: Signal) {
        let Some(handle) = &self.handle else {
            return;
        };
        match handle.signal_group(signal as i32) {
            Ok(()) => {}
            Err(error) if error.raw_os_error() == Some(libc::ESRCH) => {}
            Err(error) => {
                tracing::warn!(pid = self.pid, %signal, %error, "could not signal the gateway's group")
            }
        }
    }
}

impl Drop for OwnedChild {
    fn drop(&mut self) {
        self.signal_group(Signal::SIGKILL);
        if let Some(path) = &self.record_path {
            match read_owned_record(path) {
                Ok(Some(record)) if record.pid == self.pid => {
                    if let Err(error) = remove_owned_record(path) {
                        tracing::warn!(%error, "could not remove the owned-gateway record");
                    }
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "could not read the owned-gateway record"),
            }
        }
        // Now the child's thread may reap it.
        self.handle.take();
    }
}

/// The extras every spawn gets: the K4 marker in the environment and, with a state directory,
/// the owned-gateway record written on the spawn thread right after `execve`.
fn launch_extras(config: &ProcessActorConfig, spec: &LaunchSpec) -> LaunchExtras {
    let Some(state_dir) = config.state_dir.clone() else {
        return LaunchExtras {
            extra_env: Vec::new(),
            before_spawn: None,
            after_exec: None,
        };
    };
    // K4, for embedders that do not run it before starting the supervisor (the CLI does): a
    // no-op without a record, and off the actor thread either way.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let before_spawn: Option<Box<dyn FnOnce() + Send>> = {
        let state_dir = state_dir.clone();
        Some(Box::new(move || {
            end_leftovers(&state_dir);
        }))
    };
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let before_spawn = None;
    let port = spec.recorded_port();
    let program = spec.program().to_string_lossy().into_owned();
    let after_exec = move |pid: u32, start_ticks: Option<u64>| {
        let Some(start_ticks) = start_ticks else {
            tracing::warn!(
                pid,
                "no process start time; owned-gateway record not written"
            );
            return;
        };
        let supervisor = std::process::id();
        let record = OwnedRecord {
            pid,
            start_ticks,
            port,
            program,
            pgid: Some(pid),
            supervisor_pid: Some(supervisor),
            supervisor_start_ticks: process_start_ticks(supervisor),
        };
        if let Err(error) = write_owned_record(&owned_record_path(&state_dir), &record) {
            tracing::warn!(%error, "could not write the owned-gateway record");
        }
    };
    LaunchExtras {
        extra_env: vec![(
            OsString::from(STATE_MARKER_ENV),
            config
                .state_dir
                .as_deref()
                .map(|dir| dir.as_os_str().to_owned())
                .unwrap_or_default(),
        )],
        before_spawn,
        after_exec: Some(Box::new(after_exec)),
    }
}

/// How a spawn in progress ended, as the `Spawn` handler sees it.
enum SpawnWait {
    Done(io::Result<Launched>),
    Cancelled,
    TimedOut,
}

impl Handler<Spawn> for ProcessActor {
    type Result = ResponseActFuture<Self, Result<SpawnedProcess, ProcessError>>;

    fn handle(&mut self, Spawn(spec): Spawn, _ctx: &mut Self::Context) -> Self::Result {
        if let Some(owned) = &self.owned {
            let pid = owned.pid;
            return Box::pin(fut::ready(Err(ProcessError::AlreadyOwned { pid })));
        }
        if self.pending.is_some() {
            return Box::pin(fut::ready(Err(ProcessError::SpawnInProgress)));
        }
        let program = spec.program().to_owned();
        let cwd = spec.working_dir().map(Path::to_owned);
        let display_argv = spec.display_argv();
        let extras = launch_extras(&self.config, &spec);
        let mut launch = match spawn::launch(spec, extras) {
            Ok(launch) => launch,
            Err(source) => {
                return Box::pin(fut::ready(Err(ProcessError::SpawnFailed {
                    program,
                    cwd,
                    source,
                })))
            }
        };
        self.generation += 1;
        let generation = self.generation;
        let (cancel, cancelled) = oneshot::channel::<()>();
        // The result channel moves into the future; the launch (to abandon) stays with the actor.
        let (_, placeholder) = oneshot::channel();
        let result = std::mem::replace(&mut launch.result, placeholder);
        self.pending = Some(PendingSpawn {
            generation,
            launch,
            cancel,
        });
        let timeout = Duration::from_millis(self.config.spawn_timeout_ms);
        let wait = async move {
            let race = futures_util::future::select(result, cancelled);
            match tokio::time::timeout(timeout, race).await {
                Err(_) => SpawnWait::TimedOut,
                Ok(Either::Left((Ok(outcome), _))) => SpawnWait::Done(outcome),
                Ok(Either::Left((Err(_), _))) => SpawnWait::Done(Err(io::Error::other(
                    "the spawn thread ended without an answer",
                ))),
                Ok(Either::Right(_)) => SpawnWait::Cancelled,
            }
        };
        Box::pin(wait.into_actor(self).map(move |wait, actor, ctx| {
            let pending = actor
                .pending
                .take_if(|pending| pending.generation == generation);
            match wait {
                SpawnWait::Done(Ok(launched)) => {
                    if pending.is_none() {
                        // Cancelled meanwhile: dropping `launched` kills and reaps it.
                        return Err(ProcessError::SpawnCancelled);
                    }
                    actor
                        .adopt(generation, launched, &display_argv, ctx)
                        .map_err(|source| ProcessError::SpawnFailed {
                            program,
                            cwd,
                            source,
                        })
                }
                SpawnWait::Done(Err(source)) => Err(ProcessError::SpawnFailed {
                    program,
                    cwd,
                    source,
                }),
                SpawnWait::Cancelled => Err(ProcessError::SpawnCancelled),
                SpawnWait::TimedOut => {
                    let Some(pending) = pending else {
                        return Err(ProcessError::SpawnCancelled);
                    };
                    let pid = pending.launch.pid();
                    let state = pid.and_then(describe_state);
                    // Still before its hand-over: killed now, reaped by its thread. Handed over at
                    // the last moment instead: the answer was dropped with this wait, so the
                    // thread ends the child itself. Either way this attempt failed, in bounded time.
                    if !pending.launch.abandon() {
                        tracing::debug!(?pid, "the gateway started just as its spawn timed out");
                    }
                    let error = ProcessError::SpawnStuck {
                        pid,
                        waited_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                        state,
                    };
                    tracing::error!("{error}");
                    Err(error)
                }
            }
        }))
    }
}

impl Handler<Terminate> for ProcessActor {
    type Result = ResponseFuture<TerminateReply>;

    fn handle(&mut self, msg: Terminate, ctx: &mut Self::Context) -> Self::Result {
        let Some(owned) = self.owned.as_mut() else {
            // Nothing has exec'd yet: there is nothing graceful to do, the new child just goes.
            self.cancel_pending("stop requested");
            return Box::pin(async { TerminateReply::NoProcess });
        };
        let (reply, replied) = oneshot::channel();
        owned.terminate_waiters.push(reply);
        // One SIGTERM per process: the gateway ignores repeats during shutdown and warns about
        // "another supervisor" after three identical signals (OPENCLAW.md §8).
        if !owned.stop_requested {
            owned.stop_requested = true;
            tracing::info!(
                pid = owned.pid,
                grace_ms = msg.grace_ms,
                "sending SIGTERM to the gateway's group"
            );
            owned.signal_group(Signal::SIGTERM);
        }
        let generation = owned.generation;
        ctx.run_later(Duration::from_millis(msg.grace_ms), move |actor, _ctx| {
            actor.escalate(generation)
        });
        Box::pin(async move {
            match replied.await {
                Ok(outcome) => TerminateReply::Ended(outcome),
                Err(_) => TerminateReply::ActorStopped,
            }
        })
    }
}

impl Handler<ForceKill> for ProcessActor {
    type Result = MessageResult<ForceKill>;

    fn handle(&mut self, _msg: ForceKill, _ctx: &mut Self::Context) -> Self::Result {
        let cancelled = self.cancel_pending("force-kill requested");
        let Some(owned) = self.owned.as_mut() else {
            return MessageResult(cancelled);
        };
        tracing::warn!(pid = owned.pid, "force-killing the gateway's group");
        owned.stop_requested = true;
        owned.kill_sent = true;
        owned.signal_group(Signal::SIGKILL);
        MessageResult(true)
    }
}

impl Handler<SendSignal> for ProcessActor {
    type Result = MessageResult<SendSignal>;

    fn handle(&mut self, SendSignal(signal): SendSignal, _ctx: &mut Self::Context) -> Self::Result {
        let Some(owned) = &self.owned else {
            return MessageResult(Err(ProcessError::NoProcess));
        };
        let pid = owned.pid;
        // K2: through the pidfd; after the exit this is ESRCH, never a signal to a reused pid.
        let result = owned
            .handle
            .as_ref()
            .ok_or(Errno::ESRCH)
            .and_then(|handle| {
                handle
                    .signal(signal as i32)
                    .map_err(|error| Errno::from_raw(error.raw_os_error().unwrap_or(libc::EIO)))
            })
            .map_err(|source| ProcessError::SignalFailed {
                pid,
                signal,
                source,
            });
        MessageResult(result)
    }
}

impl Handler<GetPid> for ProcessActor {
    type Result = MessageResult<GetPid>;

    fn handle(&mut self, _msg: GetPid, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.owned.as_ref().map(|owned| owned.pid))
    }
}
