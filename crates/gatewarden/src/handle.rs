//! [`GatewayHandle`]: the supervisor for any app, actix or not: `Clone + Send + Sync`, usable
//! from any tokio runtime, any other executor, or plain threads ([`block_on`]).
//!
//! # Threads
//!
//! The supervisor and its actors always run on an actix arbiter thread:
//!
//! - [`GatewayHandle::spawn`] called on an actix thread (inside a `System`) starts the supervisor
//!   there, as [`crate::GatewaySupervisor::start`] does.
//! - Called anywhere else (a tokio worker, a plain thread), it starts the supervisor on one shared
//!   thread, `gatewarden-actix`, created on first use and kept for the life of the process. Any
//!   number of supervisors share it.
//!
//! The handle talks to its supervisor through a channel into a small task on that thread, which
//! owns the supervisor's `Addr` and sends it the actor messages of [`crate::supervisor`]; each
//! answer comes back on a one-shot channel. RPCs skip that task: the handle keeps an
//! [`RpcClient`] and its calls go straight to the connection actor's mailbox (the same path and
//! rules as [`crate::supervisor::GetRpcClient`]; every call is answered exactly once).
//!
//! # Drop
//!
//! A handle made by [`GatewayHandle::spawn`] owns its supervisor: when the last clone is dropped,
//! the supervisor stops the gateway as [`GatewayHandle::stop`] does (T1–T5: the gateway's own
//! shutdown, SIGTERM, SIGKILL after `stop.kill_grace_ms`) and then stops itself. That happens on
//! the actor thread after `drop` returns; an app about to exit should `shutdown().await` first,
//! because a process that exits at once leaves only the gateway's parent-death signal (X1) to end
//! it. A handle made by [`GatewayHandle::from_addr`] does not own the supervisor: dropping it
//! leaves the supervisor to the app that started it (which stops when the app drops its last
//! `Addr`: docs/runtime-semantics.md, "Shutdown and drop").
//!
//! # Events
//!
//! [`GatewayHandle::subscribe`] returns an [`EventStream`] over a bounded ring
//! ([`crate::SupervisorOptions::event_capacity`]) shared by every subscriber. Publishing never
//! waits for a subscriber; one that falls behind by more than the ring loses the oldest events
//! and receives [`StreamEvent::Lagged`] with how many, so a stalled subscriber costs at most the
//! ring, never the supervisor's memory or speed.
//!
//! # Example
//!
//! ```no_run
//! use gatewarden::handle::{GatewayHandle, StreamEvent};
//! use gatewarden::profile::LaunchProfile;
//! use gatewarden::SupervisorOptions;
//!
//! # async fn app() -> Result<(), Box<dyn std::error::Error>> {
//! let options = SupervisorOptions::new(LaunchProfile::sim(), "/tmp/my-app-gateway".into());
//! let gateway = GatewayHandle::spawn(options)?;
//! let mut events = gateway.subscribe().await;
//! gateway.start().await?;
//! let answer = gateway.rpc("echo", serde_json::json!({"hello": "gateway"})).await?;
//! println!("{answer}");
//! while let Some(event) = events.recv().await {
//!     match event {
//!         StreamEvent::Event(event) => println!("{event:?}"),
//!         StreamEvent::Lagged(missed) => println!("missed {missed} events"),
//!     }
//! #   break;
//! }
//! gateway.shutdown().await?;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use actix::{Actor, Addr, MailboxError, WeakAddr};
use actix_rt::{Arbiter, ArbiterHandle};
use futures_util::future::LocalBoxFuture;
use futures_util::Stream;
use gatewarden_core::error::CommandFailure;
use gatewarden_core::health::HealthSummary;
use gatewarden_core::machine::{CommandOutcome, Status};
use gatewarden_core::rpc::RpcError;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot, OnceCell};

use crate::client::RpcClient;
use crate::endpoint::OptionsError;
use crate::events::GatewayEvent;
use crate::supervisor::{
    DiagnosticsSnapshot, ForceTerminateForQuit, GetDiagnostics, GetHealth, GetRpcClient, GetStatus,
    Reload, Restart, Rpc, Shutdown, Start, Stop, SubscribeBounded, Supervisor, SupervisorOptions,
};

/// Why a [`GatewayHandle`] call did not do what it asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandleError {
    /// The command ran and failed ([`CommandOutcome::Failed`]); match the [`CommandFailure`]
    /// (for a failed start, [`CommandFailure::Start`] with its
    /// [`StartFailure`](gatewarden_core::error::StartFailure)), never its text.
    #[error("gateway command failed: {0}")]
    Failed(#[source] CommandFailure),
    /// The supervisor has shut down ([`GatewayHandle::shutdown`], or its actix system ended);
    /// every later call gets this.
    #[error("the gateway supervisor has shut down")]
    ShutDown,
    /// The options were refused before anything started ([`SupervisorOptions::validate`]).
    #[error(transparent)]
    Options(#[from] OptionsError),
    /// The shared actor thread could not be started.
    #[error("cannot start the gatewarden actor thread: {0}")]
    Runtime(#[source] std::io::Error),
}

/// What an [`EventStream`] yields. (Not `#[non_exhaustive]`: an event or a gap is all a lossy
/// stream can say, and apps should be able to match it exhaustively.)
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// An event the supervisor published.
    Event(GatewayEvent),
    /// This subscriber fell behind by more than the ring holds: it missed this many events (the
    /// oldest); the stream goes on with the oldest event still held.
    Lagged(u64),
}

/// The events of one subscription ([`GatewayHandle::subscribe`]): a [`Stream`] of
/// [`StreamEvent`], also readable without stream combinators through [`EventStream::recv`]. It
/// ends when the supervisor shuts down; it does not keep the supervisor alive.
pub struct EventStream {
    inner: Pin<Box<dyn Stream<Item = StreamEvent> + Send>>,
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream").finish_non_exhaustive()
    }
}

impl EventStream {
    fn new(receiver: Option<broadcast::Receiver<GatewayEvent>>) -> Self {
        let stream = futures_util::stream::unfold(receiver, |receiver| async move {
            let mut receiver = receiver?;
            let item = match receiver.recv().await {
                Ok(event) => StreamEvent::Event(event),
                Err(broadcast::error::RecvError::Lagged(missed)) => StreamEvent::Lagged(missed),
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            Some((item, Some(receiver)))
        });
        EventStream {
            inner: Box::pin(stream),
        }
    }

    /// The next event; `None` once the supervisor has shut down.
    ///
    /// ```no_run
    /// # async fn f(gateway: gatewarden::handle::GatewayHandle) {
    /// let mut events = gateway.subscribe().await;
    /// while let Some(event) = events.recv().await {
    ///     println!("{event:?}");
    /// }
    /// # }
    /// ```
    pub async fn recv(&mut self) -> Option<StreamEvent> {
        std::future::poll_fn(|task| self.inner.as_mut().poll_next(task)).await
    }
}

impl Stream for EventStream {
    type Item = StreamEvent;

    fn poll_next(mut self: Pin<&mut Self>, task: &mut Context<'_>) -> Poll<Option<StreamEvent>> {
        self.inner.as_mut().poll_next(task)
    }
}

/// One request for the task that owns the supervisor's address, run on its thread.
type Job = Box<dyn FnOnce(Addr<Supervisor>) -> LocalBoxFuture<'static, ()> + Send>;

/// What the handle learns from its supervisor once, on first use.
struct Parts {
    rpc: RpcClient,
    supervisor: WeakAddr<Supervisor>,
}

struct Inner {
    /// Into the task that owns the supervisor's address. Dropped with the last handle, which
    /// ends that task (and, for an owned supervisor, shuts it down).
    jobs: mpsc::UnboundedSender<Job>,
    parts: OnceCell<Parts>,
}

/// A `Clone + Send + Sync` handle on one supervised gateway. See the [module docs](self) for its
/// threads, its drop behaviour and an example.
#[derive(Clone)]
pub struct GatewayHandle {
    inner: Arc<Inner>,
}

impl fmt::Debug for GatewayHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayHandle")
            .field("shut_down", &self.inner.jobs.is_closed())
            .finish_non_exhaustive()
    }
}

impl GatewayHandle {
    /// Start a supervisor for `options`, after [`SupervisorOptions::validate`] (the gateway
    /// itself starts on [`GatewayHandle::start`]). On an actix
    /// thread the supervisor runs there; anywhere else on the shared `gatewarden-actix` thread.
    /// The handle owns it: dropping the last clone stops the gateway and the supervisor.
    ///
    /// ```no_run
    /// use gatewarden::handle::GatewayHandle;
    /// use gatewarden::profile::LaunchProfile;
    /// use gatewarden::SupervisorOptions;
    ///
    /// # fn f() -> Result<(), gatewarden::handle::HandleError> {
    /// let options = SupervisorOptions::new(LaunchProfile::sim(), "/tmp/state".into());
    /// let gateway = GatewayHandle::spawn(options)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn spawn(options: SupervisorOptions) -> Result<Self, HandleError> {
        options.validate()?;
        let (jobs, receiver) = mpsc::unbounded_channel();
        let setup = move || {
            // Validated above (the supervisor itself is not `Send`: it is built on its thread).
            let supervisor = Supervisor::unchecked(options).start();
            actix_rt::spawn(own_supervisor(supervisor, receiver, true));
        };
        match Arbiter::try_current() {
            Some(_) => setup(),
            None => spawn_on_shared_thread(setup)?,
        }
        Ok(Self::from_jobs(jobs))
    }

    /// A handle on a supervisor an actix app already runs. It does not own it: dropping the
    /// handle leaves the supervisor running ([`GatewayHandle::shutdown`] still ends it). Called
    /// on an actix thread, its task runs there; elsewhere on the shared thread.
    ///
    /// ```no_run
    /// use gatewarden::handle::GatewayHandle;
    /// use gatewarden::profile::LaunchProfile;
    /// use gatewarden::{GatewaySupervisor, SupervisorOptions};
    ///
    /// # async fn f() {
    /// // Inside an actix system:
    /// let options = SupervisorOptions::new(LaunchProfile::sim(), "/tmp/state".into());
    /// let supervisor = GatewaySupervisor::start(options).expect("valid options");
    /// let handle = GatewayHandle::from_addr(supervisor.clone());
    /// // hand `handle` to code that is not actix code
    /// # }
    /// ```
    pub fn from_addr(supervisor: Addr<Supervisor>) -> Self {
        let (jobs, receiver) = mpsc::unbounded_channel();
        let task = own_supervisor(supervisor, receiver, false);
        let spawned = match Arbiter::try_current() {
            Some(_) => {
                actix_rt::spawn(task);
                Ok(())
            }
            None => spawn_on_shared_thread(move || {
                actix_rt::spawn(task);
            }),
        };
        if let Err(error) = spawned {
            // The receiver was dropped with the task: every call answers `ShutDown`.
            tracing::error!("gateway handle without a task: {error}");
        }
        Self::from_jobs(jobs)
    }

    fn from_jobs(jobs: mpsc::UnboundedSender<Job>) -> Self {
        GatewayHandle {
            inner: Arc::new(Inner {
                jobs,
                parts: OnceCell::new(),
            }),
        }
    }

    /// Run `request` on the supervisor's thread and bring its answer back.
    async fn ask<T, F, Fut>(&self, request: F) -> Result<T, HandleError>
    where
        T: Send + 'static,
        F: FnOnce(Addr<Supervisor>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, MailboxError>> + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |supervisor| {
            // Called in the owning task's loop, so the message enters the mailbox in the order
            // the handle sent it (`Addr::send` queues at once unless the mailbox is full).
            let answer = request(supervisor);
            Box::pin(async move {
                // The caller may have stopped waiting.
                let _ = reply.send(answer.await);
            })
        });
        self.inner
            .jobs
            .send(job)
            .map_err(|_| HandleError::ShutDown)?;
        match answer.await {
            Ok(Ok(value)) => Ok(value),
            // A closed mailbox (the supervisor stopped) or a task that is gone.
            Ok(Err(_)) | Err(_) => Err(HandleError::ShutDown),
        }
    }

    async fn parts(&self) -> Result<&Parts, HandleError> {
        self.inner
            .parts
            .get_or_try_init(|| {
                self.ask(|supervisor| async move {
                    let rpc = supervisor.send(GetRpcClient).await?;
                    Ok(Parts {
                        rpc,
                        supervisor: supervisor.downgrade(),
                    })
                })
            })
            .await
    }

    async fn command<M>(&self, message: M) -> Result<CommandOutcome, HandleError>
    where
        M: actix::Message<Result = CommandOutcome> + Send + 'static,
        Supervisor: actix::Handler<M>,
    {
        match self.ask(move |supervisor| supervisor.send(message)).await? {
            CommandOutcome::Failed { failure } => Err(HandleError::Failed(failure)),
            outcome => Ok(outcome),
        }
    }

    /// L1–L8: start the gateway; answers when the start flow ends. `Ok` carries how
    /// (`Completed`, or `Ignored` when it already runs); a failed start is
    /// [`HandleError::Failed`].
    pub async fn start(&self) -> Result<CommandOutcome, HandleError> {
        self.command(Start).await
    }

    /// T1–T5: stop the gateway; answers when it is stopped. The supervisor stays, ready for
    /// another start.
    pub async fn stop(&self) -> Result<CommandOutcome, HandleError> {
        self.command(Stop).await
    }

    /// R1–R6: restart the gateway (`Deferred` or `Suppressed` answer at once).
    pub async fn restart(&self) -> Result<CommandOutcome, HandleError> {
        self.command(Restart).await
    }

    /// P3–P4: reload the gateway's config in place when its policy allows, else restart it.
    pub async fn reload(&self) -> Result<CommandOutcome, HandleError> {
        self.command(Reload).await
    }

    /// T6: emergency quit: kill the owned gateway process now and nothing else (for an app
    /// whose orderly [`GatewayHandle::shutdown`] took too long).
    pub async fn force_terminate_for_quit(&self) -> Result<CommandOutcome, HandleError> {
        self.command(ForceTerminateForQuit).await
    }

    /// M1: call `method` with `params` (a `Value`, or `None`) and the default time limit
    /// (`rpc.default_timeout_ms`). Answered exactly once: the gateway's reply, its error, the
    /// timeout, [`RpcError::NotConnected`] at once while the gateway is not running, or
    /// [`RpcError::Stopped`] once the supervisor has shut down.
    ///
    /// ```no_run
    /// # async fn f(gateway: gatewarden::handle::GatewayHandle) {
    /// let health = gateway.rpc("health", None).await;
    /// let echo = gateway.rpc("echo", serde_json::json!({"n": 1})).await;
    /// # }
    /// ```
    pub async fn rpc(
        &self,
        method: impl Into<String>,
        params: impl Into<Option<Value>>,
    ) -> Result<Value, RpcError> {
        self.call(Rpc {
            method: method.into(),
            params: params.into(),
            timeout_ms: None,
        })
        .await
    }

    /// M1: [`GatewayHandle::rpc`] with every field of [`Rpc`] (its own time limit).
    pub async fn call(&self, rpc: Rpc) -> Result<Value, RpcError> {
        match self.parts().await {
            Ok(parts) => parts.rpc.call(rpc).await,
            Err(_) => Err(RpcError::Stopped),
        }
    }

    /// S2: the status snapshot.
    pub async fn status(&self) -> Result<Status, HandleError> {
        self.ask(|supervisor| supervisor.send(GetStatus)).await
    }

    /// H5/M6: diagnostics and the supervisor's counters.
    pub async fn diagnostics(&self) -> Result<DiagnosticsSnapshot, HandleError> {
        self.ask(|supervisor| supervisor.send(GetDiagnostics)).await
    }

    /// H6: the health summary.
    pub async fn health(&self) -> Result<HealthSummary, HandleError> {
        self.ask(|supervisor| supervisor.send(GetHealth)).await
    }

    /// Every event published from now on, through the bounded ring (see the
    /// [module docs](self)). After a shutdown, a stream that ends at once.
    pub async fn subscribe(&self) -> EventStream {
        let receiver = self
            .ask(|supervisor| supervisor.send(SubscribeBounded))
            .await
            .ok();
        EventStream::new(receiver)
    }

    /// Stop the gateway (T1–T5) and end the supervisor and its actors. Calling it again, or on
    /// a clone, is fine and answers `Ok`. Every other call answers [`HandleError::ShutDown`]
    /// (RPCs [`RpcError::Stopped`]) afterwards. A stop that fails is reported as
    /// [`HandleError::Failed`]; the supervisor has then still ended, killing what it owned.
    pub async fn shutdown(&self) -> Result<(), HandleError> {
        match self.ask(|supervisor| supervisor.send(Shutdown)).await {
            Ok(CommandOutcome::Failed { failure }) => Err(HandleError::Failed(failure)),
            Ok(_) | Err(HandleError::ShutDown) => Ok(()),
            Err(other) => Err(other),
        }
    }

    /// The supervisor's address, for actix code (send it the messages of
    /// [`crate::supervisor`]); `None` once it has shut down. It lives on the actor thread
    /// described in the [module docs](self); holding it does not keep an owned supervisor from
    /// being shut down when the last handle goes.
    pub async fn addr(&self) -> Option<Addr<Supervisor>> {
        self.parts().await.ok()?.supervisor.upgrade()
    }
}

/// The task that owns the supervisor's address: sends each request's message in order and
/// awaits its answer as a task of its own (a long start never delays a status), and when every
/// handle is gone shuts an owned supervisor down.
async fn own_supervisor(
    supervisor: Addr<Supervisor>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    owned: bool,
) {
    while let Some(job) = jobs.recv().await {
        actix_rt::spawn(job(supervisor.clone()));
    }
    if owned {
        // T-rules: the gateway is stopped, not orphaned; the supervisor then ends itself.
        if let Err(error) = supervisor.send(Shutdown).await {
            tracing::debug!("supervisor already gone when its last handle was dropped: {error}");
        }
    }
}

/// The shared actor thread, created on first use.
static SHARED_THREAD: Mutex<Option<ArbiterHandle>> = Mutex::new(None);

/// Run `setup` on the shared actor thread (starting it if needed).
fn spawn_on_shared_thread(setup: impl FnOnce() + Send + 'static) -> Result<(), HandleError> {
    let mut shared = SHARED_THREAD.lock().unwrap_or_else(PoisonError::into_inner);
    let arbiter = match shared.as_ref() {
        Some(arbiter) => arbiter.clone(),
        None => {
            let arbiter = start_shared_thread()?;
            *shared = Some(arbiter.clone());
            arbiter
        }
    };
    if arbiter.spawn_fn(setup) {
        return Ok(());
    }
    // The thread is gone (only if an actor panicked it away): nothing runs there any more, so
    // forget it; the next handle starts a fresh one.
    *shared = None;
    Err(HandleError::Runtime(std::io::Error::other(
        "the gatewarden actor thread has ended",
    )))
}

fn start_shared_thread() -> Result<ArbiterHandle, HandleError> {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("gatewarden-actix".into())
        .spawn(move || {
            let system = actix_rt::System::new();
            let arbiter = system.block_on(async { Arbiter::current() });
            if sender.send(arbiter).is_ok() {
                // Runs until the process exits: no one calls `System::stop` on this system.
                if let Err(error) = system.run() {
                    tracing::error!("gatewarden actor thread ended: {error}");
                }
            }
        })
        .map_err(HandleError::Runtime)?;
    receiver.recv().map_err(|_| {
        HandleError::Runtime(std::io::Error::other(
            "the gatewarden actor thread ended while starting",
        ))
    })
}

/// Run `future` to completion on this thread, parking it between wake-ups: the handle's futures
/// need no particular runtime, so a plain thread can use it through this. Do not call it from
/// async code (it would block that executor's thread).
///
/// ```no_run
/// use gatewarden::handle::{block_on, GatewayHandle};
/// # fn f(gateway: GatewayHandle) {
/// let status = block_on(gateway.status());
/// # }
/// ```
pub fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);

    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }

    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut task = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut task) {
            return output;
        }
        // A wake-up before this park makes it return at once; a spurious return polls again.
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_send<T: Send>(_: &T) {}

    /// Compiled, not run: the futures of every method can be spawned on a multi-threaded
    /// runtime (`tokio::spawn` needs `Send`).
    #[allow(dead_code)]
    fn every_future_of_the_handle_is_send(handle: &GatewayHandle) {
        is_send(&handle.start());
        is_send(&handle.stop());
        is_send(&handle.restart());
        is_send(&handle.reload());
        is_send(&handle.force_terminate_for_quit());
        is_send(&handle.rpc("echo", None));
        is_send(&handle.status());
        is_send(&handle.diagnostics());
        is_send(&handle.health());
        is_send(&handle.subscribe());
        is_send(&handle.shutdown());
        is_send(&handle.addr());
    }

    #[test]
    fn the_handle_is_clone_send_sync_and_its_stream_and_error_are_send() {
        fn clone_send_sync<T: Clone + Send + Sync + 'static>() {}
        fn send_static<T: Send + 'static>() {}
        clone_send_sync::<GatewayHandle>();
        send_static::<EventStream>();
        send_static::<HandleError>();
    }

    #[test]
    fn block_on_runs_a_future_that_is_woken_from_another_thread() {
        let (sender, receiver) = oneshot::channel();
        let waker = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            sender.send(7).unwrap();
        });
        assert_eq!(block_on(receiver), Ok(7));
        waker.join().unwrap();
    }
}
