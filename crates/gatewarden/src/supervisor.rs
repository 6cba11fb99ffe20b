//! The `Supervisor` actor: owns the lifecycle machine, turns messages and actor reports into core
//! events, and carries out the effects the machine returns.
//!
//! It is the only address an embedding app needs ([`GatewaySupervisor::start`]). It never holds
//! core state across an `.await`: every asynchronous step (a port probe, a spawn, a readiness wait,
//! a doctor run) runs as a future whose result comes back as a message, and the machine decides
//! what it means then (E1: a result for an old epoch is dropped by the machine).

use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::oneshot;

use gatewarden_core::config::SupervisorConfig as CoreConfig;
use gatewarden_core::error::{CommandFailure, RepairFailure, SignalFailure};
use gatewarden_core::health::{Diagnostics, HealthSummary, RpcFailureKind};
use gatewarden_core::liveness::{ProbeOutcome, RecoverySnapshot};
use gatewarden_core::machine::{
    Command, CommandOutcome, Effect, Event, ExternalShutdownOutcome, LifecycleMachine, LogLevel,
    Notice, PortProbe, ReplyId, Status, TimerKind,
};
use gatewarden_core::reload_policy::ReloadPolicy;
use gatewarden_core::rpc::RpcError;
use gatewarden_core::stderr::{classify_stderr_line, StderrAction, StderrDeduper, StderrLevel};

use crate::client::{RpcClient, RpcGate, RpcRefused};
use crate::connection::{self, ConnectionActor, ConnectionConfig, ConnectionReport, TokenSource};
use crate::endpoint::OptionsError;
use crate::events::GatewayEvent;
use crate::evidence;
use crate::gateway_log::GatewayLog;
use crate::heartbeat::{self, HeartbeatActor, HeartbeatReport};
use crate::launch::Secret;
use crate::orphan;
use crate::process::{
    owned_record_path, read_owned_record, ForceKill, OutputStream, ProcessActor,
    ProcessActorConfig, ProcessExited, ProcessOutput, SendSignal, Spawn, Terminate,
};
use crate::profile::LaunchProfile;
use crate::reload::{GetConfigDigest, GetReloadPolicy, ReloadPolicyActor};
use crate::reports::ReportTo;

/// Everything a supervisor needs. Made by [`SupervisorOptions::new`] (more fields may come, so it
/// cannot be written as a literal); then change any public field.
///
/// ```
/// use gatewarden::{LaunchProfile, SupervisorOptions};
///
/// let mut options = SupervisorOptions::new(LaunchProfile::sim(), "/tmp/my-app-gateway".into());
/// options.core.port = 18800;
/// options.core.stop.kill_grace_ms = 2_000;
/// assert!(options.validate().is_ok());
/// options.core.heartbeat.interval_ms = 0;
/// assert!(options.validate().is_err());
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SupervisorOptions {
    /// Every number of BEHAVIOUR.md (`core.port` is the gateway port).
    pub core: CoreConfig,
    /// What to run.
    pub profile: LaunchProfile,
    /// Where the supervisor keeps its files: the owned-process record, the device identity, and
    /// the gateway's own state directory (`<state_dir>/gateway`).
    pub state_dir: PathBuf,
    /// The gateway's shared token; passed to the gateway in its environment and sent in
    /// `connect`. Never logged.
    pub token: Option<Secret>,
    /// P1: the gateway config file holding `gateway.reload`; the profile's default when `None`.
    pub gateway_config_path: Option<PathBuf>,
    /// Host of the gateway: a loopback address (`127.0.0.1`, `::1`, `localhost`). Any other
    /// host is refused by [`SupervisorOptions::validate`]: this build has no TLS, and `connect`
    /// carries the token (see [`crate::endpoint`]).
    pub host: String,
    /// How many messages the supervisor's mailbox holds before `send` waits for room
    /// (default [`DEFAULT_MAILBOX_CAPACITY`]). actix's own default of 16 makes most callers park
    /// and be polled again as soon as a few dozen RPCs are in flight; the count costs no memory
    /// up front (the mailbox is a linked queue), it only bounds a caller that never awaits.
    pub mailbox_capacity: usize,
    /// How the gateway is reached: always `ws://` in this build. Not a public knob: the only
    /// other value (`wss://`) can only be refused until a TLS backend is built in.
    pub(crate) scheme: crate::endpoint::GatewayScheme,
    /// The opt-in for a host that is not loopback. Not a public knob for the same reason: without
    /// TLS it can only produce an error.
    pub(crate) allow_remote_host: bool,
    /// How many events the bounded subscriptions ([`SubscribeBounded`], the handle's
    /// `subscribe`) keep for a subscriber that has not read them yet (default
    /// [`DEFAULT_EVENT_CAPACITY`]). One ring shared by every such subscriber; a subscriber that
    /// falls further behind loses the oldest and is told how many. Clamped to
    /// 1..=[`MAX_EVENT_CAPACITY`] (the ring is allocated whole by the first such subscription).
    pub event_capacity: usize,
}

/// Notices that the last address of the supervisor is gone, without a timer: actix wakes an
/// actor's context when its last address is dropped, and the context polls every future spawned
/// on it at each wake-up, so this one is polled right then (an idle supervisor is never woken to
/// look; a poll for any other reason costs one atomic load). It then has the supervisor stop as
/// [`Supervisor::stop_when_unowned`] says, and ends.
struct OwnerWatch;

impl ActorFuture<Supervisor> for OwnerWatch {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        supervisor: &mut Supervisor,
        ctx: &mut Context<Supervisor>,
        _task: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if ctx.connected() {
            return std::task::Poll::Pending;
        }
        supervisor.stop_when_unowned(ctx);
        std::task::Poll::Ready(())
    }
}

/// Default of [`SupervisorOptions::mailbox_capacity`].
pub const DEFAULT_MAILBOX_CAPACITY: usize = 65_536;

/// Default of [`SupervisorOptions::event_capacity`].
pub const DEFAULT_EVENT_CAPACITY: usize = 1_024;

/// Upper bound of [`SupervisorOptions::event_capacity`].
pub const MAX_EVENT_CAPACITY: usize = 1 << 20;

impl SupervisorOptions {
    /// Options for `profile` with the defaults of BEHAVIOUR.md, the profile's default port and
    /// whether its reload signal restarts it in place (P4).
    pub fn new(profile: LaunchProfile, state_dir: PathBuf) -> Self {
        let mut core = CoreConfig::default();
        core.port = profile.default_port();
        core.reload.signal_restarts_in_place = profile.reload_restarts_in_place();
        SupervisorOptions {
            core,
            profile,
            state_dir,
            token: None,
            gateway_config_path: None,
            host: "127.0.0.1".to_string(),
            mailbox_capacity: DEFAULT_MAILBOX_CAPACITY,
            scheme: crate::endpoint::GatewayScheme::Ws,
            allow_remote_host: false,
            event_capacity: DEFAULT_EVENT_CAPACITY,
        }
    }
}

/// Entry point for embedding apps.
///
/// Start the supervisor inside an actix system, subscribe to its events, start the gateway,
/// call it, stop it. Every message answers exactly once; the rules behind each are in
/// [`gatewarden_core::rules`] (start L1–L8, stop T1–T6, RPC M1).
///
/// ```no_run
/// use actix::prelude::*;
/// use gatewarden::events::GatewayEvent;
/// use gatewarden::profile::LaunchProfile;
/// use gatewarden::supervisor::{GetStatus, Rpc, Start, Stop, Subscribe};
/// use gatewarden::{GatewaySupervisor, SupervisorOptions};
/// use gatewarden_core::machine::{CommandOutcome, LifecycleState};
///
/// struct Printer;
/// impl Actor for Printer {
///     type Context = Context<Self>;
/// }
/// impl Handler<GatewayEvent> for Printer {
///     type Result = ();
///     fn handle(&mut self, event: GatewayEvent, _: &mut Context<Self>) {
///         if let GatewayEvent::Status(status) = event {
///             println!("gateway {}", status.state.as_str());
///         }
///     }
/// }
///
/// actix_rt::System::new().block_on(async {
///     let state_dir = std::env::temp_dir().join("my-app-gateway");
///     let supervisor =
///         GatewaySupervisor::start(SupervisorOptions::new(LaunchProfile::sim(), state_dir))
///             .expect("valid options");
///     supervisor.do_send(Subscribe(Printer.start().recipient()));
///
///     // Answers when the start flow ends: running, or failed with the reason.
///     match supervisor.send(Start).await.expect("supervisor alive") {
///         CommandOutcome::Failed { failure } => eprintln!("did not start: {failure}"),
///         _ => {
///             let status = supervisor.send(GetStatus).await.expect("supervisor alive");
///             assert_eq!(status.state, LifecycleState::Running);
///             let reply = supervisor
///                 .send(Rpc { method: "health".into(), params: None, timeout_ms: None })
///                 .await
///                 .expect("supervisor alive");
///             println!("health: {reply:?}");
///         }
///     }
///     supervisor.send(Stop).await.expect("supervisor alive");
/// });
/// ```
pub struct GatewaySupervisor;

impl GatewaySupervisor {
    /// Start a supervisor actor after [`SupervisorOptions::validate`] (the gateway is not
    /// started until it receives [`Start`]). Must be called inside an actix system. Options
    /// that cannot work (a host that is not loopback, a zero interval, ...) are an
    /// [`OptionsError`] here, before anything starts.
    pub fn start(options: SupervisorOptions) -> Result<Addr<Supervisor>, OptionsError> {
        Ok(Supervisor::new(options)?.start())
    }
}

// ---------------------------------------------------------------------------------------------
// Public messages.
// ---------------------------------------------------------------------------------------------

/// L1–L8: start the gateway. Answers when the start flow ends.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "CommandOutcome")]
pub struct Start;

/// T1–T5: stop the gateway. Answers when it is stopped.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "CommandOutcome")]
pub struct Stop;

/// R1–R6: restart the gateway. Answers when the restart ends (or at once when deferred or
/// suppressed).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "CommandOutcome")]
pub struct Restart;

/// P3–P4: reload the gateway's config in place when possible.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "CommandOutcome")]
pub struct Reload;

/// R7: restart after the debounce window, coalescing requests.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "CommandOutcome")]
pub struct DebouncedRestart {
    /// The window; 2 s when `None`.
    pub delay_ms: Option<u64>,
}

/// P5: reload after the debounce window, coalescing requests.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "CommandOutcome")]
pub struct DebouncedReload {
    /// The window; the policy's `debounceMs` when `None`.
    pub delay_ms: Option<u64>,
}

/// T6: emergency quit: terminate the owned process only.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "CommandOutcome")]
pub struct ForceTerminateForQuit;

/// M1: call a gateway method.
///
/// The answer is the gateway's `payload`, or a typed [`RpcError`]: the gateway's own error
/// (`Gateway`, with its code) or why the call never got one (not connected, timed out, stopped,
/// the socket failed). Exactly one answer per call, also when the connection drops meanwhile.
///
/// ```no_run
/// # use actix::Addr;
/// # use gatewarden::supervisor::{Rpc, Supervisor};
/// # async fn call(supervisor: Addr<Supervisor>) {
/// let reply = supervisor
///     .send(Rpc {
///         method: "echo".into(),
///         params: Some(serde_json::json!({"hello": "gateway"})),
///         timeout_ms: Some(5_000),
///     })
///     .await
///     .expect("supervisor alive");
/// match reply {
///     Ok(payload) => println!("{payload}"),
///     Err(error) => eprintln!("rpc failed: {error}"),
/// }
/// # }
/// ```
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Value, RpcError>")]
pub struct Rpc {
    /// The method.
    pub method: String,
    /// Its params.
    pub params: Option<Value>,
    /// Time limit; 30 s when `None`.
    pub timeout_ms: Option<u64>,
}

/// M1: a handle whose calls go straight to the connection actor, with the rules of [`Rpc`]
/// (see [`RpcClient`]). Ask once; the handle is cheap to clone and stays valid for the life of
/// the supervisor.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "RpcClient")]
pub struct GetRpcClient;

/// S2: the status snapshot.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Status")]
pub struct GetStatus;

/// H5/M6: diagnostics.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "DiagnosticsSnapshot")]
pub struct GetDiagnostics;

/// H6: the health summary.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "HealthSummary")]
pub struct GetHealth;

/// Hear every [`GatewayEvent`].
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Subscribe(pub Recipient<GatewayEvent>);

/// Hear every [`GatewayEvent`] through a bounded ring ([`SupervisorOptions::event_capacity`])
/// instead of an actor's unbounded mailbox: publishing never waits for the receiver, and a
/// receiver that falls behind gets `RecvError::Lagged(n)` (the `n` oldest events are lost to it)
/// instead of growing memory. The channel closes when the supervisor stops.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "tokio::sync::broadcast::Receiver<GatewayEvent>")]
pub struct SubscribeBounded;

/// T1–T5, then the end of the supervisor: stop the gateway as [`Stop`] does, then stop the
/// supervisor actor and its actors (its address then answers every message with
/// `MailboxError::Closed`). Answers with the stop's outcome.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "CommandOutcome")]
pub struct Shutdown;

/// Diagnostics plus the supervisor's counters (for metrics).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct DiagnosticsSnapshot {
    /// H5/M6.
    #[serde(flatten)]
    pub diagnostics: Diagnostics,
    /// R3: restarts executed.
    pub restarts_executed: u64,
    /// R3: restarts suppressed.
    pub restarts_suppressed: u64,
    /// N4: reconnect attempts.
    pub reconnect_attempts_total: u64,
    /// N4: reconnect successes.
    pub reconnect_successes_total: u64,
    /// Processes spawned.
    pub process_starts: u64,
    /// Processes exited.
    pub process_exits: u64,
    /// The machine's leaf state (`probing_port`, `running`, ...).
    pub leaf_state: &'static str,
    /// H6: what the liveness recovery is doing (phase, classification, deadline, last probe).
    pub recovery: RecoverySnapshot,
}

// ---------------------------------------------------------------------------------------------
// Internal messages: results of asynchronous steps, fed back as core events.
// ---------------------------------------------------------------------------------------------

/// A core event produced by an asynchronous step.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Feed(Event);

/// The supervisor actor.
pub struct Supervisor {
    options: SupervisorOptions,
    machine: LifecycleMachine,
    origin: Instant,
    process: Option<Addr<ProcessActor>>,
    /// Shared with the RPC answers in flight: an `Rc` clone per call, where cloning an `Addr`
    /// would allocate.
    connection: Option<Rc<Addr<ConnectionActor>>>,
    heartbeat: Option<Addr<HeartbeatActor>>,
    reload_policy: Option<Addr<ReloadPolicyActor>>,
    subscribers: Vec<Recipient<GatewayEvent>>,
    /// The bounded subscriptions ([`SubscribeBounded`]): the ring is made by the first of them
    /// (tokio allocates all of its slots up front, about 200 KiB at the default capacity, which a
    /// supervisor nobody subscribes to should not pay).
    bounded_events: Option<tokio::sync::broadcast::Sender<GatewayEvent>>,
    timers: HashMap<TimerKind, SpawnHandle>,
    replies: HashMap<ReplyId, oneshot::Sender<CommandOutcome>>,
    next_reply: ReplyId,
    /// W1: the readiness wait in progress, with its epoch and port.
    readiness: Option<(SpawnHandle, u64, u16)>,
    /// W1 (beyond): the `/startupz` watch during the gateway's startup window.
    startup_watch: Option<SpawnHandle>,
    stderr: StderrDeduper,
    stderr_pid: Option<u32>,
    /// Q2: the gateway's output in our log, leveled and rate-limited.
    gateway_log: GatewayLog,
    /// S4: whether the machine is `running`, for [`RpcClient`]s (updated after every event).
    rpc_gate: Arc<RpcGate>,
    /// Every address of ours was dropped and the stop that follows has begun.
    unowned: bool,
}

impl Supervisor {
    /// A supervisor (not started), after [`SupervisorOptions::validate`]; for actix code that
    /// starts it itself (`Supervisor::start_in_arbiter`). [`GatewaySupervisor::start`] is the
    /// usual way.
    pub fn new(options: SupervisorOptions) -> Result<Self, OptionsError> {
        options.validate()?;
        Ok(Supervisor::unchecked(options))
    }

    /// [`Supervisor::new`] for options the caller has validated.
    pub(crate) fn unchecked(options: SupervisorOptions) -> Self {
        Supervisor {
            machine: LifecycleMachine::new(options.core.clone()),
            stderr: StderrDeduper::new(&options.core.stderr),
            bounded_events: None,
            gateway_log: GatewayLog::new(&options.core.stderr),
            options,
            origin: Instant::now(),
            process: None,
            connection: None,
            heartbeat: None,
            reload_policy: None,
            subscribers: Vec::new(),
            timers: HashMap::new(),
            replies: HashMap::new(),
            next_reply: 1,
            readiness: None,
            startup_watch: None,
            stderr_pid: None,
            rpc_gate: Arc::new(RpcGate::default()),
            unowned: false,
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// When no address of ours is left (the app dropped its last `Addr`; our children hold
    /// only weak ones), nobody can send us a command again: stop the gateway as `Stop` does
    /// (T1–T5), then end, as `Shutdown` does. A handle made by `GatewayHandle::spawn` holds an
    /// address until its own drop path has sent `Shutdown`, so the two never race for the
    /// gateway (a second stop is answered by the first).
    fn stop_when_unowned(&mut self, ctx: &mut Context<Self>) {
        if self.unowned || ctx.connected() {
            return;
        }
        self.unowned = true;
        tracing::info!("the last address of the supervisor was dropped: stopping the gateway");
        let stopped = outcome_future(self.command(Command::Stop, ctx));
        ctx.spawn(stopped.into_actor(self).map(|outcome, _supervisor, ctx| {
            tracing::debug!(?outcome, "stopped after the last address was dropped");
            ctx.stop();
        }));
    }

    /// Feed one event to the machine and carry out its effects.
    fn feed(&mut self, event: Event, ctx: &mut Context<Self>) {
        let now = self.now_ms();
        let effects = self.machine.handle(now, event);
        self.rpc_gate.set_connected(self.machine.is_connected());
        for effect in effects {
            self.execute(effect, ctx);
        }
        // An effect may have fed further events.
        self.rpc_gate.set_connected(self.machine.is_connected());
    }

    /// Feed a command and get the receiver of its outcome.
    fn command(
        &mut self,
        command: Command,
        ctx: &mut Context<Self>,
    ) -> oneshot::Receiver<CommandOutcome> {
        let reply = self.next_reply;
        self.next_reply += 1;
        let (sender, receiver) = oneshot::channel();
        self.replies.insert(reply, sender);
        self.feed(
            Event::Command {
                command,
                reply: Some(reply),
            },
            ctx,
        );
        receiver
    }

    fn publish(&mut self, event: GatewayEvent) {
        // A subscriber that went away is forgotten.
        self.subscribers.retain(|subscriber| subscriber.connected());
        for subscriber in &self.subscribers {
            subscriber.do_send(event.clone());
        }
        // Never waits: a full ring overwrites its oldest event. No receiver, no clone.
        if let Some(bounded) = &self.bounded_events {
            if bounded.receiver_count() > 0 {
                let _ = bounded.send(event);
            }
        }
    }

    fn wall_clock_status(&self, mut status: Status) -> Status {
        // The machine's clock starts with the supervisor; status shows Unix milliseconds.
        let offset = unix_ms().saturating_sub(self.now_ms());
        status.connected_at_ms = status.connected_at_ms.map(|at| at + offset);
        status
    }

    /// Run `future` and feed the event it produces.
    fn run<F>(&mut self, future: F, ctx: &mut Context<Self>) -> SpawnHandle
    where
        F: std::future::Future<Output = Event> + 'static,
    {
        ctx.spawn(
            future
                .into_actor(self)
                .map(|event, actor, ctx| actor.feed(event, ctx)),
        )
    }

    fn execute(&mut self, effect: Effect, ctx: &mut Context<Self>) {
        match effect {
            Effect::RefreshReloadPolicy { force } => {
                if let Some(reload) = &self.reload_policy {
                    reload.do_send(GetReloadPolicy { force });
                }
            }
            Effect::ProbePort { epoch, port } => {
                let host = self.options.host.clone();
                let record_path = owned_record_path(&self.options.state_dir);
                let probe_timeout = self.options.core.orphans.probe_timeout_ms;
                self.run(
                    async move {
                        let probe = probe_port(&host, port, &record_path, probe_timeout).await;
                        Event::PortProbed { epoch, probe }
                    },
                    ctx,
                );
            }
            Effect::KillOrphans { epoch, pids } => {
                let orphans = self.options.core.orphans.clone();
                self.run(
                    async move {
                        let survivors =
                            orphan::kill_orphans(&pids, orphans.term_wait_ms, orphans.kill_wait_ms)
                                .await;
                        Event::OrphansKilled { epoch, survivors }
                    },
                    ctx,
                );
            }
            Effect::WaitPortFree { epoch, port } => {
                let start = self.options.core.start.clone();
                self.run(
                    async move {
                        match orphan::wait_port_free(
                            port,
                            start.port_free_poll_ms,
                            start.port_free_timeout_ms,
                        )
                        .await
                        {
                            Ok(()) => Event::PortFreed { epoch },
                            Err(_) => Event::StepFailed {
                                epoch,
                                failure: gatewarden_core::error::StartFailure::PortStillOccupied {
                                    port,
                                },
                            },
                        }
                    },
                    ctx,
                );
            }
            Effect::SpawnProcess { epoch, port } => self.spawn_process(epoch, port, ctx),
            Effect::AwaitReadiness { epoch, port } => self.await_readiness(epoch, port, ctx),
            Effect::WatchStartup {
                epoch,
                port,
                interval_ms,
            } => self.watch_startup(epoch, port, interval_ms, ctx),
            Effect::OpenConnection { epoch, .. } => {
                if let Some(handle) = self.startup_watch.take() {
                    ctx.cancel_future(handle);
                }
                if let Some(connection) = &self.connection {
                    connection.do_send(connection::Open { epoch });
                }
            }
            Effect::CloseConnection => {
                if let Some(connection) = &self.connection {
                    // T1 turns auto-reconnect off before T3: a close with it off is a stop.
                    let reason = if self.machine.auto_reconnect() {
                        connection::CloseReason::Lost
                    } else {
                        connection::CloseReason::Stopped
                    };
                    connection.do_send(connection::Close { reason });
                }
            }
            Effect::SampleProcess { epoch, pid } => {
                let threads = self.options.core.liveness.cpu_threads;
                self.run(
                    async move {
                        // D2: /proc is read off the actor thread; a read that fails to come
                        // back is no reading.
                        let sample =
                            actix_rt::task::spawn_blocking(move || evidence::sample(pid, threads))
                                .await
                                .ok()
                                .flatten();
                        Event::ProcessSampled { epoch, pid, sample }
                    },
                    ctx,
                );
            }
            Effect::SendProbe {
                epoch,
                probe,
                method,
                timeout_ms,
            } => {
                let Some(connection) = self.connection.as_deref().cloned() else {
                    let outcome = ProbeOutcome::Failed {
                        reason: "no connection".into(),
                    };
                    self.feed(
                        Event::ProbeFinished {
                            epoch,
                            probe,
                            outcome,
                        },
                        ctx,
                    );
                    return;
                };
                self.run(
                    async move {
                        let answer = connection
                            .send(connection::Probe { method, timeout_ms })
                            .await;
                        let outcome = match answer {
                            Ok(Ok(_)) => ProbeOutcome::Succeeded,
                            Ok(Err(RpcError::Gateway { message, .. })) => {
                                ProbeOutcome::Refused { message }
                            }
                            Ok(Err(error)) => ProbeOutcome::Failed {
                                reason: error.to_string(),
                            },
                            Err(error) => ProbeOutcome::Failed {
                                reason: error.to_string(),
                            },
                        };
                        Event::ProbeFinished {
                            epoch,
                            probe,
                            outcome,
                        }
                    },
                    ctx,
                );
            }
            Effect::SendPing => {
                if let Some(heartbeat) = &self.heartbeat {
                    heartbeat.do_send(heartbeat::SendPing);
                }
            }
            Effect::CheckSocket { epoch } => {
                if let Some(heartbeat) = &self.heartbeat {
                    heartbeat.do_send(heartbeat::CheckSocket { epoch });
                }
            }
            Effect::RequestExternalShutdown { epoch, timeout_ms } => {
                let Some(connection) = self.connection.as_deref().cloned() else {
                    self.feed(
                        Event::ExternalShutdownFinished {
                            epoch,
                            outcome: ExternalShutdownOutcome::Failed("no connection".into()),
                        },
                        ctx,
                    );
                    return;
                };
                self.run(
                    async move {
                        let answer = connection
                            .send(connection::Rpc {
                                method: "shutdown".into(),
                                params: None,
                                timeout_ms,
                            })
                            .await;
                        let outcome = match answer {
                            Ok(Ok(_)) => ExternalShutdownOutcome::Accepted,
                            Ok(Err(error)) if is_unknown_shutdown(&error) => {
                                ExternalShutdownOutcome::Unsupported
                            }
                            Ok(Err(error)) => ExternalShutdownOutcome::Failed(error.to_string()),
                            Err(error) => ExternalShutdownOutcome::Failed(error.to_string()),
                        };
                        Event::ExternalShutdownFinished { epoch, outcome }
                    },
                    ctx,
                );
            }
            Effect::TerminateProcess { grace_ms, .. } => {
                // The exit arrives as ProcessExited; the reply only says how it ended.
                if let Some(process) = &self.process {
                    process.do_send(Terminate { grace_ms });
                }
            }
            Effect::ForceKillProcess { .. } => {
                if let Some(process) = &self.process {
                    process.do_send(ForceKill);
                }
            }
            Effect::SignalProcess { epoch, signal, .. } => {
                let process = self.process.clone();
                let signal = self.options.profile.reload_signal(signal);
                self.run(
                    async move {
                        let outcome = match (process, signal) {
                            (_, Err(error)) => Err(SignalFailure::Refused {
                                message: error.to_string(),
                            }),
                            (None, _) => Err(SignalFailure::NoProcess),
                            (Some(process), Ok(signal)) => {
                                match process.send(SendSignal(signal)).await {
                                    Ok(Ok(())) => Ok(()),
                                    Ok(Err(error)) => Err(SignalFailure::NotDelivered {
                                        message: error.to_string(),
                                    }),
                                    Err(_) => Err(SignalFailure::NoProcess),
                                }
                            }
                        };
                        Event::SignalSent { epoch, outcome }
                    },
                    ctx,
                );
            }
            Effect::RunDoctorRepair { epoch, timeout_ms } => {
                let profile = self.options.profile.clone();
                let state_dir = self.options.state_dir.clone();
                self.run(
                    async move {
                        // Building the spec may look for the simulator on disk: off this thread.
                        let spec = off_actor_thread(move || profile.doctor_spec(&state_dir)).await;
                        let outcome = match spec {
                            Ok(spec) => run_doctor(spec, timeout_ms).await,
                            Err(error) => Err(RepairFailure::CouldNotRun {
                                message: error.to_string(),
                            }),
                        };
                        Event::RepairFinished { epoch, outcome }
                    },
                    ctx,
                );
            }
            Effect::ArmTimer {
                timer,
                generation,
                at_ms,
            } => {
                if let Some(handle) = self.timers.remove(&timer) {
                    ctx.cancel_future(handle);
                }
                let delay_ms = at_ms.saturating_sub(self.now_ms());
                if let (true, Some(heartbeat)) = (HeartbeatActor::owns(timer), &self.heartbeat) {
                    heartbeat.do_send(heartbeat::ArmTick {
                        timer,
                        generation,
                        delay_ms,
                    });
                    return;
                }
                let delay = Duration::from_millis(delay_ms);
                let handle = ctx.run_later(delay, move |actor, ctx| {
                    actor.timers.remove(&timer);
                    actor.feed(Event::TimerFired { timer, generation }, ctx);
                });
                self.timers.insert(timer, handle);
            }
            Effect::CancelTimer { timer } => {
                if let Some(handle) = self.timers.remove(&timer) {
                    ctx.cancel_future(handle);
                }
                if let (true, Some(heartbeat)) = (HeartbeatActor::owns(timer), &self.heartbeat) {
                    heartbeat.do_send(heartbeat::CancelTick(timer));
                }
            }
            Effect::FailPendingRpcs { error } => {
                if let Some(connection) = &self.connection {
                    let reason = match error {
                        RpcError::Stopped => connection::CloseReason::Stopped,
                        RpcError::ExternalUnavailable => {
                            connection::CloseReason::ExternalUnavailable
                        }
                        _ => connection::CloseReason::Lost,
                    };
                    connection.do_send(connection::Close { reason });
                }
            }
            Effect::Publish(notice) => self.publish_notice(notice),
            Effect::Log { level, message } => match level {
                LogLevel::Debug => tracing::debug!("{message}"),
                LogLevel::Info => tracing::info!("{message}"),
                LogLevel::Warn => tracing::warn!("{message}"),
                LogLevel::Error => tracing::error!("{message}"),
            },
            Effect::Reply { reply, outcome } => {
                if let Some(sender) = self.replies.remove(&reply) {
                    let _ = sender.send(outcome);
                }
            }
            Effect::ReadConfigDigest { epoch } => {
                let reload = self.reload_policy.clone();
                self.run(
                    async move {
                        let digest = match reload {
                            Some(reload) => reload.send(GetConfigDigest).await.ok().flatten(),
                            None => None,
                        };
                        Event::ConfigDigestRead { epoch, digest }
                    },
                    ctx,
                );
            }
        }
    }

    /// W1: wait for the gateway's challenge. Probing starts at once and backs off; a fresh wait
    /// (which probes at once again) replaces a running one.
    fn await_readiness(&mut self, epoch: u64, port: u16, ctx: &mut Context<Self>) {
        if let Some((handle, _, _)) = self.readiness.take() {
            ctx.cancel_future(handle);
        }
        let host = self.options.host.clone();
        let connect = self.options.core.connect.clone();
        let me = ctx.address().downgrade();
        // F6: the probes report what they see; the machine decides what it means.
        let observe = move |observation| {
            if let Some(me) = me.upgrade() {
                me.do_send(Feed(Event::StartObserved { epoch, observation }));
            }
        };
        let handle = self.run(
            async move {
                match connection::await_readiness_observed(&host, port, &connect, observe).await {
                    Ok(()) => Event::ReadinessConfirmed { epoch },
                    Err(failure) => Event::StepFailed { epoch, failure },
                }
            },
            ctx,
        );
        self.readiness = Some((handle, epoch, port));
    }

    /// W1 (beyond): ask `/startupz` every `interval_ms` while it answers 503 (at most
    /// `ready_timeout_ms`); its first 200 becomes a settled [`Event::StartupWatched`], any other
    /// answer or none an unsettled one (the machine then retries after `retryAfterMs`).
    fn watch_startup(&mut self, epoch: u64, port: u16, interval_ms: u64, ctx: &mut Context<Self>) {
        if let Some(handle) = self.startup_watch.take() {
            ctx.cancel_future(handle);
        }
        let host = self.options.host.clone();
        let probe_ms = self.options.core.connect.probe_timeout_ms;
        let limit = Duration::from_millis(self.options.core.connect.ready_timeout_ms);
        let interval = Duration::from_millis(interval_ms.max(1));
        let watch = async move {
            let deadline = tokio::time::Instant::now() + limit;
            while tokio::time::Instant::now() + interval < deadline {
                tokio::time::sleep(interval).await;
                match connection::probe_startupz(&host, port, probe_ms).await {
                    Some(200) => {
                        return Event::StartupWatched {
                            epoch,
                            settled: true,
                        }
                    }
                    Some(503) => {}
                    other => {
                        tracing::debug!(port, answer = ?other, "no /startupz to watch");
                        break;
                    }
                }
            }
            Event::StartupWatched {
                epoch,
                settled: false,
            }
        };
        let handle = ctx.spawn(watch.into_actor(self).map(|event, actor, ctx| {
            actor.startup_watch = None;
            actor.feed(event, ctx);
        }));
        self.startup_watch = Some(handle);
    }

    fn spawn_process(&mut self, epoch: u64, port: u16, ctx: &mut Context<Self>) {
        let process = self.process.clone();
        let profile = self.options.profile.clone();
        let token = self.options.token.clone();
        let state_dir = self.options.state_dir.clone();
        self.run(
            async move {
                let failure = |message: String| Event::StepFailed {
                    epoch,
                    failure: gatewarden_core::error::StartFailure::SpawnFailed { message },
                };
                // X1: building the spec may look for the simulator on disk (candidates next to
                // the executable and on PATH): on the blocking pool, never on this thread.
                let spec = {
                    let profile = profile.clone();
                    off_actor_thread(move || profile.launch_spec(port, token.as_ref(), &state_dir))
                        .await
                };
                let spec = match spec {
                    Ok(spec) => spec,
                    Err(error) => return failure(error),
                };
                if let Err(error) = profile.check_runtime().await {
                    // F3: refused before spawning; the machine decides (no retry).
                    let failure = if error.is_runtime_incompatible() {
                        gatewarden_core::error::StartFailure::RuntimeIncompatible {
                            message: error.to_string(),
                        }
                    } else {
                        gatewarden_core::error::StartFailure::SpawnFailed {
                            message: error.to_string(),
                        }
                    };
                    return Event::StepFailed { epoch, failure };
                }
                tracing::info!(argv = ?spec.display_argv(), "spawning gateway");
                let Some(process) = process else {
                    return failure("process actor not running".into());
                };
                match process.send(Spawn(spec)).await {
                    Ok(Ok(spawned)) => Event::ProcessSpawned {
                        epoch,
                        pid: spawned.pid,
                    },
                    Ok(Err(error)) => failure(error.to_string()),
                    Err(error) => failure(error.to_string()),
                }
            },
            ctx,
        );
    }

    fn publish_notice(&mut self, notice: Notice) {
        match notice {
            Notice::Status(status) => {
                let status = self.wall_clock_status(status);
                tracing::debug!(state = status.state.as_str(), "status changed");
                self.publish(GatewayEvent::Status(status));
            }
            Notice::ProcessExit { pid, code, .. } => {
                self.publish(GatewayEvent::ProcessExit { pid, code });
            }
            Notice::Error { message, failure } => {
                self.publish(GatewayEvent::Error { message, failure })
            }
            Notice::GatewayReady => self.publish(GatewayEvent::GatewayReady),
            Notice::Liveness { liveness, phase } => {
                tracing::debug!(?liveness, ?phase, "gateway liveness changed");
                self.publish(GatewayEvent::Liveness { liveness, phase });
            }
            Notice::ExternalUnavailable => self.publish(GatewayEvent::ExternalUnavailable),
            Notice::StartupMetric {
                config_prep_ms,
                spawn_to_ready_ms,
                ready_to_connect_ms,
                total_ms,
                phases,
                slowest,
            } => {
                let trace = phases
                    .iter()
                    .map(|phase| format!("{}={}", phase.name, phase.duration_ms))
                    .collect::<Vec<_>>()
                    .join(",");
                tracing::info!(
                    config_prep_ms,
                    spawn_to_ready_ms,
                    ready_to_connect_ms,
                    total_ms,
                    trace = trace.as_str(),
                    slowest = slowest.as_ref().map_or("", |phase| phase.name.as_str()),
                    slowest_ms = slowest.as_ref().map_or(0, |phase| phase.duration_ms),
                    "[metric] gateway.startup"
                );
                // Subscribers (the control socket's event stream, Y1) hear it too.
                self.publish(GatewayEvent::StartupMetric {
                    config_prep_ms,
                    spawn_to_ready_ms,
                    ready_to_connect_ms,
                    total_ms,
                    phases,
                    slowest,
                });
            }
            Notice::ReconnectMetric {
                success,
                attempt,
                max_attempts,
                delay_ms,
                error,
                attempts_total,
                successes_total,
            } => {
                tracing::info!(
                    success,
                    attempt,
                    max_attempts,
                    delay_ms,
                    error = error.as_deref().unwrap_or(""),
                    attempts_total,
                    successes_total,
                    "[metric] gateway.reconnect"
                );
                self.publish(GatewayEvent::ReconnectMetric {
                    success,
                    attempt,
                    max_attempts,
                    delay_ms,
                    error,
                    attempts_total,
                    successes_total,
                });
            }
            Notice::RestartSuppressed {
                retry_after_ms,
                executed_total,
                suppressed_total,
            } => tracing::warn!(
                retry_after_ms,
                executed_total,
                suppressed_total,
                "[metric] gateway.restart.suppressed"
            ),
            Notice::GaveUp { reason, failure } => {
                self.publish(GatewayEvent::GaveUp { reason, failure })
            }
        }
    }

    fn handle_output(&mut self, output: ProcessOutput, ctx: &mut Context<Self>) {
        if self.stderr_pid != Some(output.pid) {
            // X3: identical lines are logged once per process.
            self.stderr = StderrDeduper::new(&self.options.core.stderr);
            self.stderr_pid = Some(output.pid);
        }
        let now = self.now_ms();
        if output.dropped_before > 0 {
            self.gateway_log.dropped(now, output.dropped_before);
        }
        match output.stream {
            OutputStream::Stdout => {
                self.gateway_log.stdout(now, &output.line);
                // The gateway's server logs its startup trace on stdout: report the phase, the
                // machine keeps it for the startup metric (the parser is the core's).
                let normalized = gatewarden_core::stderr::normalize_stderr_line(&output.line);
                if let Some(phase) = gatewarden_core::stderr::parse_startup_trace(&normalized) {
                    self.feed(
                        Event::StartupTrace {
                            pid: output.pid,
                            phase,
                        },
                        ctx,
                    );
                }
                // W1 (beyond): the gateway says it listens; probe now instead of at the next
                // backoff step. The probe still decides: a listening line is not readiness.
                if output.line.contains("\"listening\"") {
                    if let Some((_, epoch, port)) = self.readiness {
                        self.await_readiness(epoch, port, ctx);
                    }
                }
            }
            OutputStream::Stderr => {
                let classified = classify_stderr_line(&output.line);
                match self.stderr.observe(&classified) {
                    StderrAction::Log { level, text } => self.gateway_log.stderr(now, level, &text),
                    StderrAction::Summarize { text, repeats, .. } => {
                        self.gateway_log.repeats(now, repeats, &text)
                    }
                    StderrAction::Suppress | StderrAction::Ignore => {}
                }
                if classified.level != StderrLevel::Drop {
                    self.feed(
                        Event::StderrLine {
                            pid: output.pid,
                            line: classified.normalized,
                        },
                        ctx,
                    );
                }
            }
        }
    }

    fn handle_connection_report(&mut self, report: ConnectionReport, ctx: &mut Context<Self>) {
        let event = match report {
            ConnectionReport::HandshakeCompleted {
                epoch, handshake, ..
            } => Event::HandshakeCompleted { epoch, handshake },
            ConnectionReport::HandshakeFailed { epoch, failure } => {
                Event::StepFailed { epoch, failure }
            }
            ConnectionReport::StartupWindow {
                epoch,
                retry_after_ms,
            } => Event::StartupWindow {
                epoch,
                retry_after_ms,
            },
            ConnectionReport::RestartWindow {
                epoch,
                retry_after_ms,
            } => Event::RestartWindow {
                epoch,
                retry_after_ms,
            },
            ConnectionReport::ProofOfLife { epoch } => Event::ProofOfLife { epoch },
            ConnectionReport::Closed { epoch, code } => Event::SocketClosed { epoch, code },
            ConnectionReport::Shutdown {
                epoch,
                restart_expected_ms,
            } => Event::ShutdownAnnounced {
                epoch,
                restart_expected_ms,
            },
            ConnectionReport::ReadySignal { epoch, source } => {
                if source == gatewarden_core::machine::ReadySource::HealthEvent
                    && !self.options.core.ready.health_event_counts_as_ready
                {
                    return;
                }
                Event::GatewayReadySignal { epoch, source }
            }
            ConnectionReport::Published(event) => {
                if let GatewayEvent::ChannelStatus(_) = &event {
                    let now = self.now_ms();
                    self.machine
                        .diagnostics_mut()
                        .record_channel_status(now, true);
                }
                self.publish(event);
                return;
            }
            ConnectionReport::RpcsSucceeded { .. } => {
                // M6 keeps the time of the newest success, not a count.
                let now = self.now_ms();
                self.machine.diagnostics_mut().record_rpc_success(now);
                return;
            }
            ConnectionReport::RpcFinished { method, outcome } => {
                let now = self.now_ms();
                self.machine.record_rpc_outcome(now, &method, outcome);
                return;
            }
        };
        self.feed(event, ctx);
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// T2: "unknown method: shutdown" marks the external gateway as not supporting it.
fn is_unknown_shutdown(error: &RpcError) -> bool {
    error
        .to_string()
        .to_ascii_lowercase()
        .contains("unknown method: shutdown")
}

/// O1 / L5 step 1: who listens on the port, which of them is our recorded orphan, and does
/// anything there answer as a gateway.
async fn probe_port(
    host: &str,
    port: u16,
    record_path: &std::path::Path,
    probe_timeout_ms: u64,
) -> PortProbe {
    // A refused loopback connect answers "nobody listens" in microseconds; the /proc scan costs
    // milliseconds on a large machine (the kernel walks hash tables sized by RAM), so it only runs
    // when something answers, and then on the blocking pool with the record read: a slow disk or
    // a huge /proc must not stall the actor's thread (issue 23). The common case (a free port)
    // stays on this thread: a thread hop costs more than the connect on a loaded machine.
    if !something_listens(port) {
        return PortProbe::free();
    }
    let record_path = record_path.to_owned();
    let scanned = tokio::task::spawn_blocking(move || {
        let listeners = orphan::listeners_on_port(port).unwrap_or_default();
        if listeners.is_empty() {
            return None;
        }
        let record = read_owned_record(&record_path).ok().flatten();
        Some(
            listeners
                .iter()
                .map(|listener| gatewarden_core::machine::Listener {
                    pid: listener.pid,
                    program: listener.program.clone(),
                    ours_by_record: orphan::classify_listener(listener, record.as_ref())
                        == orphan::ListenerKind::OurOrphan,
                })
                .collect::<Vec<_>>(),
        )
    })
    .await
    .ok()
    .flatten();
    let Some(listeners) = scanned else {
        return PortProbe::free();
    };
    let answers_as_gateway = connection::probe_gateway(host, port, probe_timeout_ms).await;
    PortProbe {
        listeners,
        answers_as_gateway,
    }
}

/// Does anything accept connections on the port, on IPv4 or IPv6 loopback?
fn something_listens(port: u16) -> bool {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
    // Loopback connects are answered at once (accepted or refused); the bound only guards against
    // a pathological firewall rule.
    let bound = Duration::from_millis(200);
    [
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
    ]
    .iter()
    .any(|address| TcpStream::connect_timeout(address, bound).is_ok())
}

/// Runs `work` (file-system lookups) on the blocking pool, so a slow disk never stalls the
/// supervisor's thread (issue 23); a panic of `work` becomes an error of the same type.
async fn off_actor_thread<T, E>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, String>
where
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(|error| error.to_string()),
        Err(error) => Err(format!("the lookup on the blocking pool failed: {error}")),
    }
}

/// L6: run the doctor repair with a time limit, logging its output.
async fn run_doctor(spec: crate::launch::LaunchSpec, timeout_ms: u64) -> Result<(), RepairFailure> {
    let could_not_run = |error: &dyn std::fmt::Display| RepairFailure::CouldNotRun {
        message: error.to_string(),
    };
    let mut command = tokio::process::Command::new(spec.program());
    command
        .args(spec.arguments())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    for name in spec.env_removed() {
        command.env_remove(name);
    }
    for (name, value) in spec.env_vars() {
        command.env(name, value);
    }
    for (name, secret) in spec.secret_env_vars() {
        command.env(name, secret.expose());
    }
    tracing::info!(argv = ?spec.display_argv(), "running gateway doctor repair");
    command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // The spawn (fork, then a wait for the child's exec) runs on the blocking pool: a doctor
    // stopped or blocked before exec must not stall the actor's thread (K3, issue 23).
    let child = match tokio::task::spawn_blocking(move || command.spawn()).await {
        Ok(Ok(child)) => child,
        Ok(Err(error)) => return Err(could_not_run(&error)),
        Err(error) => return Err(could_not_run(&error)),
    };
    let run = child.wait_with_output();
    match tokio::time::timeout(Duration::from_millis(timeout_ms), run).await {
        Err(_) => Err(RepairFailure::TimedOut { timeout_ms }),
        Ok(Err(error)) => Err(could_not_run(&error)),
        Ok(Ok(output)) => {
            for line in String::from_utf8_lossy(&output.stdout)
                .lines()
                .chain(String::from_utf8_lossy(&output.stderr).lines())
            {
                tracing::info!(target: "gateway", "[doctor] {line}");
            }
            if output.status.success() {
                Ok(())
            } else {
                Err(RepairFailure::Exited {
                    code: exit_code(output.status),
                })
            }
        }
    }
}

/// The exit code, or 128 + signal number for a signal death (as a shell reports it).
fn exit_code(status: std::process::ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.options.mailbox_capacity);
        // The children report weakly: an address of ours held by them would keep us alive after
        // the app dropped its last one (crate::reports).
        let me = ctx.address().downgrade();
        let process = ProcessActor::reporting_to(
            ProcessActorConfig {
                state_dir: Some(self.options.state_dir.clone()),
                spawn_timeout_ms: self.options.core.start.spawn_timeout_ms,
                ..ProcessActorConfig::default()
            },
            ReportTo::weak(&me),
            ReportTo::weak(&me),
        )
        .start();
        self.process = Some(process);
        let identity_path = self.options.state_dir.join("identity").join("device.json");
        let connection = ConnectionActor::reporting_to(
            ConnectionConfig {
                port: self.options.core.port,
                host: self.options.host.clone(),
                connect: self.options.core.connect.clone(),
                token: match &self.options.token {
                    Some(token) => TokenSource::Value(token.clone()),
                    None => TokenSource::None,
                },
                identity_path: Some(identity_path),
                max_frame_bytes: self.options.core.connect.max_frame_bytes,
                read_batch: self.options.core.rpc.read_batch,
                ..ConnectionConfig::default()
            },
            ReportTo::weak(&me),
        )
        .start();
        self.heartbeat = Some(HeartbeatActor::new(connection.clone(), ReportTo::weak(&me)).start());
        self.connection = Some(Rc::new(connection));
        let config_path = self.options.gateway_config_path.clone().unwrap_or_else(|| {
            self.options
                .profile
                .gateway_config_path(&self.options.state_dir)
        });
        self.reload_policy =
            Some(ReloadPolicyActor::new(config_path, self.options.core.reload.clone()).start());
        ctx.spawn(OwnerWatch);
    }

    fn stopping(&mut self, _ctx: &mut Self::Context) -> Running {
        self.rpc_gate.set_connected(false);
        // Nothing may outlive the supervisor: the process actor kills its group when it stops,
        // and the child carries a parent-death signal for the case where we are killed.
        if let Some(process) = &self.process {
            process.do_send(ForceKill);
        }
        // RpcClients hold the connection actor's address; without this it would outlive us.
        if let Some(connection) = &self.connection {
            connection.do_send(connection::Retire);
        }
        Running::Stop
    }
}

impl Handler<Feed> for Supervisor {
    type Result = ();

    fn handle(&mut self, message: Feed, ctx: &mut Self::Context) {
        self.feed(message.0, ctx);
    }
}

impl Handler<ProcessOutput> for Supervisor {
    type Result = ();

    fn handle(&mut self, message: ProcessOutput, ctx: &mut Self::Context) {
        self.handle_output(message, ctx);
    }
}

impl Handler<ProcessExited> for Supervisor {
    type Result = ();

    fn handle(&mut self, message: ProcessExited, ctx: &mut Self::Context) {
        self.gateway_log.flush();
        if self.machine.owned_pid() == Some(message.pid) {
            // W1: the readiness wait for a dead process is over; the exit decides.
            if let Some((handle, _, _)) = self.readiness.take() {
                ctx.cancel_future(handle);
            }
            if let Some(handle) = self.startup_watch.take() {
                ctx.cancel_future(handle);
            }
        }
        self.feed(
            Event::ProcessExited {
                pid: message.pid,
                code: message.code,
            },
            ctx,
        );
    }
}

impl Handler<HeartbeatReport> for Supervisor {
    type Result = ();

    fn handle(&mut self, message: HeartbeatReport, ctx: &mut Self::Context) {
        self.feed(message.0, ctx);
    }
}

impl Handler<ConnectionReport> for Supervisor {
    type Result = ();

    fn handle(&mut self, message: ConnectionReport, ctx: &mut Self::Context) {
        self.handle_connection_report(message, ctx);
    }
}

fn outcome_future(receiver: oneshot::Receiver<CommandOutcome>) -> ResponseFuture<CommandOutcome> {
    Box::pin(async move {
        receiver.await.unwrap_or(CommandOutcome::Failed {
            failure: CommandFailure::SupervisorStopped,
        })
    })
}

impl Handler<Start> for Supervisor {
    type Result = ResponseFuture<CommandOutcome>;

    fn handle(&mut self, _message: Start, ctx: &mut Self::Context) -> Self::Result {
        outcome_future(self.command(Command::Start, ctx))
    }
}

impl Handler<Stop> for Supervisor {
    type Result = ResponseFuture<CommandOutcome>;

    fn handle(&mut self, _message: Stop, ctx: &mut Self::Context) -> Self::Result {
        outcome_future(self.command(Command::Stop, ctx))
    }
}

impl Handler<Restart> for Supervisor {
    type Result = ResponseFuture<CommandOutcome>;

    fn handle(&mut self, _message: Restart, ctx: &mut Self::Context) -> Self::Result {
        outcome_future(self.command(Command::Restart, ctx))
    }
}

impl Handler<DebouncedRestart> for Supervisor {
    type Result = ResponseFuture<CommandOutcome>;

    fn handle(&mut self, message: DebouncedRestart, ctx: &mut Self::Context) -> Self::Result {
        outcome_future(self.command(
            Command::DebouncedRestart {
                delay_ms: message.delay_ms,
            },
            ctx,
        ))
    }
}

impl Handler<ForceTerminateForQuit> for Supervisor {
    type Result = ResponseFuture<CommandOutcome>;

    fn handle(&mut self, _message: ForceTerminateForQuit, ctx: &mut Self::Context) -> Self::Result {
        outcome_future(self.command(Command::ForceTerminate, ctx))
    }
}

impl Supervisor {
    /// P1/P2: read the reload policy first (cached, shared reads), then feed the command built
    /// from it and answer with its outcome.
    fn with_reload_policy(
        &self,
        build: impl FnOnce(ReloadPolicy) -> Command + 'static,
    ) -> ResponseActFuture<Self, CommandOutcome> {
        let policy = self.reload_policy.clone();
        let fallback = gatewarden_core::reload_policy::default_policy(&self.options.core.reload);
        Box::pin(
            async move {
                match policy {
                    Some(policy) => policy
                        .send(GetReloadPolicy { force: false })
                        .await
                        .unwrap_or(fallback),
                    None => fallback,
                }
            }
            .into_actor(self)
            .then(move |policy, actor, ctx| {
                let receiver = actor.command(build(policy), ctx);
                outcome_future(receiver).into_actor(actor)
            }),
        )
    }
}

impl Handler<Reload> for Supervisor {
    type Result = ResponseActFuture<Self, CommandOutcome>;

    fn handle(&mut self, _message: Reload, _ctx: &mut Self::Context) -> Self::Result {
        self.with_reload_policy(|policy| Command::Reload { policy })
    }
}

impl Handler<DebouncedReload> for Supervisor {
    type Result = ResponseActFuture<Self, CommandOutcome>;

    fn handle(&mut self, message: DebouncedReload, _ctx: &mut Self::Context) -> Self::Result {
        self.with_reload_policy(move |policy| Command::DebouncedReload {
            delay_ms: message.delay_ms,
            policy,
        })
    }
}

/// How the supervisor answers an [`Rpc`]: at once (not connected), or by handing the caller's
/// own reply channel to the connection actor, which answers it when the gateway replies.
///
/// This is the RPC hot path. A `ResponseFuture` would make actix spawn a task per call and keep
/// a second channel in between; forwarding the caller's sender costs one mailbox hop and nothing
/// else, and the answer still arrives exactly once (the connection's pending table owns it).
pub struct RpcAnswer(RpcRoute);

enum RpcRoute {
    Now(Result<Value, RpcError>),
    Forward {
        connection: Rc<Addr<ConnectionActor>>,
        method: String,
        params: Option<Value>,
        timeout_ms: u64,
    },
}

impl actix::dev::MessageResponse<Supervisor, Rpc> for RpcAnswer {
    fn handle(
        self,
        _ctx: &mut Context<Supervisor>,
        tx: Option<actix::dev::OneshotSender<Result<Value, RpcError>>>,
    ) {
        match self.0 {
            RpcRoute::Now(answer) => {
                if let Some(tx) = tx {
                    // The caller may have stopped waiting.
                    let _ = tx.send(answer);
                }
            }
            RpcRoute::Forward {
                connection,
                method,
                params,
                timeout_ms,
            } => {
                // `do_send(Rpc)` has no reply channel; the call is still made (fire and forget).
                let reply = tx.unwrap_or_else(|| oneshot::channel().0);
                // `do_send` never parks on a full mailbox; the callers' own awaits bound what is
                // in flight. If the connection actor is gone, `reply` is dropped with the
                // message and the caller's `send` fails with `MailboxError::Closed`.
                connection.do_send(connection::Call {
                    method,
                    params,
                    timeout_ms,
                    reply,
                });
            }
        }
    }
}

impl Handler<Rpc> for Supervisor {
    type Result = RpcAnswer;

    fn handle(&mut self, message: Rpc, _ctx: &mut Self::Context) -> Self::Result {
        // M1: fail at once when not connected (S4).
        let connection = match (&self.connection, self.machine.is_connected()) {
            (Some(connection), true) => connection.clone(),
            _ => {
                self.record_not_connected(&message.method);
                return RpcAnswer(RpcRoute::Now(Err(RpcError::NotConnected)));
            }
        };
        let timeout_ms = message
            .timeout_ms
            .unwrap_or(self.options.core.rpc.default_timeout_ms);
        RpcAnswer(RpcRoute::Forward {
            connection,
            method: message.method,
            params: message.params,
            timeout_ms,
        })
    }
}

impl Supervisor {
    /// M6: a call refused because the gateway is not connected (H6: not an RPC failure; the
    /// machine decides what it counts).
    fn record_not_connected(&mut self, method: &str) {
        let now = self.now_ms();
        self.machine
            .record_rpc_outcome(now, method, Err(RpcFailureKind::NotConnected));
    }
}

impl Handler<RpcRefused> for Supervisor {
    type Result = ();

    fn handle(&mut self, message: RpcRefused, _ctx: &mut Self::Context) {
        self.record_not_connected(&message.method);
    }
}

impl Handler<GetRpcClient> for Supervisor {
    type Result = MessageResult<GetRpcClient>;

    fn handle(&mut self, _message: GetRpcClient, ctx: &mut Self::Context) -> Self::Result {
        // Always there once the supervisor has started, which it has when it handles messages.
        let connection = self.connection.as_deref().cloned();
        MessageResult(RpcClient::new(
            connection,
            ctx.address().downgrade().recipient(),
            self.rpc_gate.clone(),
            self.options.core.rpc.default_timeout_ms,
        ))
    }
}

impl Handler<GetStatus> for Supervisor {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _message: GetStatus, _ctx: &mut Self::Context) -> Self::Result {
        let status = self.machine.status(self.now_ms());
        MessageResult(self.wall_clock_status(status))
    }
}

impl Handler<GetDiagnostics> for Supervisor {
    type Result = MessageResult<GetDiagnostics>;

    fn handle(&mut self, _message: GetDiagnostics, _ctx: &mut Self::Context) -> Self::Result {
        let counters = self.machine.restart_counters();
        let (attempts, successes) = self.machine.reconnect_totals();
        let (starts, exits) = self.machine.process_counts();
        MessageResult(DiagnosticsSnapshot {
            diagnostics: self.machine.diagnostics().clone(),
            restarts_executed: counters.executed,
            restarts_suppressed: counters.suppressed,
            reconnect_attempts_total: attempts,
            reconnect_successes_total: successes,
            process_starts: starts,
            process_exits: exits,
            leaf_state: self.machine.leaf(),
            recovery: self.machine.recovery(),
        })
    }
}

impl Handler<GetHealth> for Supervisor {
    type Result = MessageResult<GetHealth>;

    fn handle(&mut self, _message: GetHealth, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.machine.health(self.now_ms()))
    }
}

impl Handler<Subscribe> for Supervisor {
    type Result = ();

    fn handle(&mut self, message: Subscribe, _ctx: &mut Self::Context) {
        self.subscribers.push(message.0);
    }
}

impl Handler<SubscribeBounded> for Supervisor {
    type Result = MessageResult<SubscribeBounded>;

    fn handle(&mut self, _message: SubscribeBounded, _ctx: &mut Self::Context) -> Self::Result {
        let capacity = self.options.event_capacity;
        let ring = self.bounded_events.get_or_insert_with(|| {
            // tokio's broadcast panics on 0 or on more than half the address space.
            tokio::sync::broadcast::Sender::new(capacity.clamp(1, MAX_EVENT_CAPACITY))
        });
        MessageResult(ring.subscribe())
    }
}

impl Handler<Shutdown> for Supervisor {
    type Result = ResponseActFuture<Self, CommandOutcome>;

    fn handle(&mut self, _message: Shutdown, ctx: &mut Self::Context) -> Self::Result {
        let stopped = outcome_future(self.command(Command::Stop, ctx));
        Box::pin(stopped.into_actor(self).map(|outcome, _actor, ctx| {
            // `stopping` kills whatever a later command may have spawned meanwhile (T6), so
            // nothing outlives the supervisor even when the stop was superseded.
            ctx.stop();
            outcome
        }))
    }
}
