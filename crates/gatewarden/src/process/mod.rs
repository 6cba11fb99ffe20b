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
//! - **Always reaped.** The actor waits on the child for as long as it owns it, so no zombie stays.
//!   On Linux a small thread per child waits for it (see [`spawn`](self)), so it is reaped even
//!   after the actor has gone; elsewhere a killed child outliving the actor is handed to tokio's
//!   orphan reaper, which reaps it while the runtime lives.
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
//! Linux delivers the parent-death signal when the *thread* that forked the child exits, not the
//! process. actix runs an actor on one arbiter thread for its whole life, so the gateway dies when
//! that arbiter (or the whole supervisor) goes away — which is the intent. Do not run this actor on
//! a thread that exits while the gateway should live.

mod output;
mod record;
#[cfg(any(target_os = "linux", target_os = "android"))]
mod spawn;

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitStatus;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
use std::process::Stdio;
use std::time::Duration;

use actix::prelude::*;
use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncRead;
use tokio::sync::oneshot;

use crate::launch::LaunchSpec;
use crate::orphan::process_start_ticks;
use output::StreamCapture;

pub use record::{
    owned_record_path, read_owned_record, remove_owned_record, write_owned_record, OwnedRecord,
    RecordError, OWNED_RECORD_FILE,
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
    pub state_dir: Option<PathBuf>,
}

impl Default for ProcessActorConfig {
    fn default() -> Self {
        ProcessActorConfig {
            max_line_bytes: 16 * 1024,
            output_queue_lines: 256,
            output_drain_ms: 500,
            state_dir: None,
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
    output: Recipient<ProcessOutput>,
    exits: Recipient<ProcessExited>,
    owned: Option<OwnedChild>,
    generation: u64,
}

impl ProcessActor {
    /// An actor that sends output lines to `output` and exits to `exits`.
    pub fn new(
        config: ProcessActorConfig,
        output: Recipient<ProcessOutput>,
        exits: Recipient<ProcessExited>,
    ) -> Self {
        ProcessActor {
            config,
            output,
            exits,
            owned: None,
            generation: 0,
        }
    }

    /// Runs when the wait future has reaped the child. It runs in the same poll as the reap, so no
    /// message can observe a reaped pid as still owned (and signal a pid the kernel may reuse).
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
        // Dropping the ownership SIGKILLs what is left of the group (workers) and removes the record.
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
        signal_group(owned.pid, Signal::SIGKILL);
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
        if let Some(owned) = self.owned.take() {
            tracing::warn!(
                pid = owned.pid,
                "process actor stopped while owning the gateway; killing its group"
            );
        }
    }
}

/// The ownership of one spawned child. Dropping it SIGKILLs the process group and removes the
/// owned-gateway record: whichever way ownership ends, nothing is left running.
struct OwnedChild {
    pid: u32,
    generation: u64,
    stop_requested: bool,
    kill_sent: bool,
    terminate_waiters: Vec<oneshot::Sender<TerminateOutcome>>,
    record_path: Option<PathBuf>,
    captures: Vec<StreamCapture>,
}

impl Drop for OwnedChild {
    fn drop(&mut self) {
        // After the leader is reaped its pid stays allocated while any group member lives (the
        // kernel keeps the pgid), so this can only reach our own group's leftovers.
        signal_group(self.pid, Signal::SIGKILL);
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
    }
}

/// Signals the whole process group led by `pid`. Why the group: the gateway's workers share it
/// and must not outlive it (T4 beyond). A group that is already gone is not an error.
fn signal_group(pid: u32, signal: Signal) {
    let Ok(raw) = i32::try_from(pid) else {
        return;
    };
    // pid 0 or 1 would address our own group or init: never.
    if raw <= 1 {
        return;
    }
    match killpg(Pid::from_raw(raw), signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(error) => tracing::warn!(pid, %signal, %error, "could not signal the gateway's group"),
    }
}

/// A started child, before anything waits for it.
struct Started {
    pid: u32,
    stdout: Pin<Box<dyn AsyncRead + Send>>,
    stderr: Pin<Box<dyn AsyncRead + Send>>,
    waiter: Waiter,
}

/// What collects the exit status; started only after the pid has been used (start time read), so
/// the pid cannot be reused in between.
enum Waiter {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    Thread(u32),
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    Tokio(tokio::process::Child),
}

impl Waiter {
    fn wait(self) -> Pin<Box<dyn std::future::Future<Output = io::Result<ExitStatus>>>> {
        match self {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Waiter::Thread(pid) => {
                let status = spawn::reap(pid);
                Box::pin(async move {
                    status.await.unwrap_or_else(|_| {
                        Err(io::Error::other(
                            "the waiting thread ended without a status",
                        ))
                    })
                })
            }
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            Waiter::Tokio(mut child) => Box::pin(async move { child.wait().await }),
        }
    }
}

/// Linux: the child sets its parent-death signal before exec, and no `fork` copies our memory
/// for it ([`spawn`]).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn start_child(spec: &LaunchSpec) -> io::Result<Started> {
    let child = spawn::spawn(spec)?;
    Ok(Started {
        pid: child.pid,
        stdout: Box::pin(child.stdout),
        stderr: Box::pin(child.stderr),
        waiter: Waiter::Thread(child.pid),
    })
}

/// Elsewhere: no parent-death signal exists; the owned-gateway record lets the next supervisor
/// find an orphan instead (O1).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn start_child(spec: &LaunchSpec) -> io::Result<Started> {
    let mut command = tokio::process::Command::new(spec.program());
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
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so one killpg reaches the gateway and its workers and nothing of
        // ours, and a Ctrl-C at the supervisor's terminal goes to the supervisor, which then stops
        // the gateway in order (T4), instead of straight to the gateway.
        .process_group(0)
        // Ownership (and killing) is ours to manage, not the Child handle's.
        .kill_on_drop(false);
    let mut child = command.spawn()?;
    let pid = child
        .id()
        .ok_or_else(|| io::Error::other("the child had no pid right after it was spawned"))?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(io::Error::other("the child's output pipes are missing"));
    };
    Ok(Started {
        pid,
        stdout: Box::pin(stdout),
        stderr: Box::pin(stderr),
        waiter: Waiter::Tokio(child),
    })
}

impl Handler<Spawn> for ProcessActor {
    type Result = MessageResult<Spawn>;

    fn handle(&mut self, Spawn(spec): Spawn, ctx: &mut Self::Context) -> Self::Result {
        if let Some(owned) = &self.owned {
            return MessageResult(Err(ProcessError::AlreadyOwned { pid: owned.pid }));
        }
        let Started {
            pid,
            stdout,
            stderr,
            waiter,
        } = match start_child(&spec) {
            Ok(started) => started,
            Err(source) => {
                return MessageResult(Err(ProcessError::SpawnFailed {
                    program: spec.program().to_owned(),
                    cwd: spec.working_dir().map(Path::to_owned),
                    source,
                }))
            }
        };
        // Read now, while the child cannot have been reaped yet (nothing waits on it yet).
        let started_at_ticks = process_start_ticks(pid);
        tracing::info!(pid, argv = ?spec.display_argv(), "gateway process spawned");

        let captures = vec![
            output::capture(
                stdout,
                pid,
                OutputStream::Stdout,
                self.config.max_line_bytes,
                self.config.output_queue_lines,
                self.output.clone(),
            ),
            output::capture(
                stderr,
                pid,
                OutputStream::Stderr,
                self.config.max_line_bytes,
                self.config.output_queue_lines,
                self.output.clone(),
            ),
        ];

        let record_path = self.config.state_dir.as_deref().and_then(|dir| {
            let path = owned_record_path(dir);
            let Some(start_ticks) = started_at_ticks else {
                tracing::warn!(
                    pid,
                    "no process start time; owned-gateway record not written"
                );
                return None;
            };
            let record = OwnedRecord {
                pid,
                start_ticks,
                port: spec.recorded_port(),
                program: spec.program().to_string_lossy().into_owned(),
                pgid: Some(pid),
                supervisor_pid: Some(std::process::id()),
                supervisor_start_ticks: process_start_ticks(std::process::id()),
            };
            match write_owned_record(&path, &record) {
                Ok(()) => Some(path),
                Err(error) => {
                    tracing::warn!(%error, "could not write the owned-gateway record");
                    None
                }
            }
        });

        self.generation += 1;
        let generation = self.generation;
        self.owned = Some(OwnedChild {
            pid,
            generation,
            stop_requested: false,
            kill_sent: false,
            terminate_waiters: Vec::new(),
            record_path,
            captures,
        });
        ctx.spawn(
            waiter
                .wait()
                .into_actor(self)
                .map(move |status, actor, _ctx| actor.on_reaped(generation, status)),
        );
        MessageResult(Ok(SpawnedProcess {
            pid,
            started_at_ticks,
        }))
    }
}

impl Handler<Terminate> for ProcessActor {
    type Result = ResponseFuture<TerminateReply>;

    fn handle(&mut self, msg: Terminate, ctx: &mut Self::Context) -> Self::Result {
        let Some(owned) = self.owned.as_mut() else {
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
            signal_group(owned.pid, Signal::SIGTERM);
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
        let Some(owned) = self.owned.as_mut() else {
            return MessageResult(false);
        };
        tracing::warn!(pid = owned.pid, "force-killing the gateway's group");
        owned.stop_requested = true;
        owned.kill_sent = true;
        signal_group(owned.pid, Signal::SIGKILL);
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
        let result = i32::try_from(pid)
            .map_err(|_| Errno::ESRCH)
            .and_then(|raw| kill(Pid::from_raw(raw), signal))
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
