//! [`RpcClient`]: RPCs that go straight to the connection actor (M1, M6, S4).
//!
//! `Addr<Supervisor>::send(Rpc)` costs two mailbox hops per call: the supervisor's, whose handler
//! only checks that the gateway is connected and forwards, then the connection actor's. The
//! supervisor is the control plane; an app that makes many calls can ask it once for an
//! [`RpcClient`] ([`crate::supervisor::GetRpcClient`]) and send its calls to the connection
//! actor directly. The rules are the same as for [`crate::supervisor::Rpc`]:
//!
//! - S4/M1: while the lifecycle is not `running`, a call fails at once with
//!   [`RpcError::NotConnected`], and the failure is recorded in the diagnostics (M6). The
//!   supervisor publishes whether it is connected through a shared flag after every transition,
//!   so the check costs one atomic load.
//! - M1: every call is answered exactly once: by the gateway's reply, its timeout (the
//!   supervisor's `rpc.default_timeout_ms` unless the call sets one), a transport failure, or
//!   [`RpcError::Stopped`] when the supervisor or its connection actor is gone.
//!
//! The client holds the connection actor's address, so a call costs no upgrade of a weak
//! address (two allocations in actix). It never keeps a stopped supervisor's actors running:
//! the supervisor retires its connection actor when it stops ([`crate::connection::Retire`]),
//! and calls to a retired actor are answered [`RpcError::Stopped`]. The supervisor itself is
//! only held weakly.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use actix::{Addr, Message, WeakRecipient};
use gatewarden_core::rpc::RpcError;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::connection::{Call, ConnectionActor};
use crate::supervisor::Rpc;

/// S4: whether RPCs may go to the gateway now. Written by the supervisor after every
/// transition of its machine, read by every [`RpcClient`] call.
#[derive(Debug, Default)]
pub(crate) struct RpcGate {
    connected: AtomicBool,
}

impl RpcGate {
    pub(crate) fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Release);
    }

    fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }
}

/// M6: a call an [`RpcClient`] refused because the gateway was not connected; the supervisor
/// records it as it records its own refusals.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub(crate) struct RpcRefused {
    pub(crate) method: String,
}

/// A cloneable handle for RPCs; get one with [`crate::supervisor::GetRpcClient`].
#[derive(Clone)]
pub struct RpcClient {
    /// `None` only for a client asked of a supervisor that had no connection actor.
    connection: Option<Addr<ConnectionActor>>,
    supervisor: WeakRecipient<RpcRefused>,
    gate: Arc<RpcGate>,
    default_timeout_ms: u64,
}

impl std::fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcClient")
            .field("connected", &self.gate.is_connected())
            .field("default_timeout_ms", &self.default_timeout_ms)
            .finish_non_exhaustive()
    }
}

impl RpcClient {
    pub(crate) fn new(
        connection: Option<Addr<ConnectionActor>>,
        supervisor: WeakRecipient<RpcRefused>,
        gate: Arc<RpcGate>,
        default_timeout_ms: u64,
    ) -> Self {
        RpcClient {
            connection,
            supervisor,
            gate,
            default_timeout_ms,
        }
    }

    /// M1: make one call. The returned future is answered exactly once; dropping it abandons
    /// the call (the gateway's reply, or its timeout, is then discarded).
    pub fn call(&self, rpc: Rpc) -> RpcCall {
        if !self.gate.is_connected() {
            // M6: recorded by the supervisor. Once it is gone, the answer is that it stopped.
            let Some(supervisor) = self.supervisor.upgrade() else {
                return RpcCall::answered(Err(RpcError::Stopped));
            };
            supervisor.do_send(RpcRefused { method: rpc.method });
            return RpcCall::answered(Err(RpcError::NotConnected));
        }
        let Some(connection) = &self.connection else {
            return RpcCall::answered(Err(RpcError::Stopped));
        };
        let (reply, answer) = oneshot::channel();
        // `do_send` never waits for mailbox room (the callers' own awaits bound what is in
        // flight). If the connection actor has stopped (retired, or its arbiter is gone), its
        // mailbox is closed: `reply` is dropped with the message and the call is answered
        // `Stopped`.
        connection.do_send(Call {
            method: rpc.method,
            params: rpc.params,
            timeout_ms: rpc.timeout_ms.unwrap_or(self.default_timeout_ms),
            reply,
        });
        RpcCall {
            state: CallState::Waiting(answer),
        }
    }
}

/// The answer to one [`RpcClient::call`].
#[must_use = "a call's answer is only seen by awaiting it"]
#[derive(Debug)]
pub struct RpcCall {
    state: CallState,
}

#[derive(Debug)]
enum CallState {
    Answered(Option<Result<Value, RpcError>>),
    Waiting(oneshot::Receiver<Result<Value, RpcError>>),
}

impl RpcCall {
    fn answered(answer: Result<Value, RpcError>) -> Self {
        RpcCall {
            state: CallState::Answered(Some(answer)),
        }
    }
}

impl Future for RpcCall {
    type Output = Result<Value, RpcError>;

    fn poll(self: Pin<&mut Self>, task: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().state {
            // Polled again after its answer: the contract of `Future` allows anything but UB;
            // answer `Stopped` rather than panic.
            CallState::Answered(answer) => {
                Poll::Ready(answer.take().unwrap_or(Err(RpcError::Stopped)))
            }
            // A dropped sender means the connection actor went away without answering.
            CallState::Waiting(answer) => Pin::new(answer)
                .poll(task)
                .map(|answer| answer.unwrap_or(Err(RpcError::Stopped))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix::{Actor, Addr, Context as ActorContext, Handler};
    use std::sync::atomic::AtomicUsize;

    /// Stands in for the supervisor's side of [`RpcRefused`]: counts what it is told.
    struct Recorder(Arc<AtomicUsize>);

    impl Actor for Recorder {
        type Context = ActorContext<Self>;
    }

    impl Handler<RpcRefused> for Recorder {
        type Result = ();

        fn handle(&mut self, message: RpcRefused, _ctx: &mut Self::Context) {
            assert_eq!(message.method, "echo");
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl Handler<crate::connection::ConnectionReport> for Recorder {
        type Result = ();

        fn handle(
            &mut self,
            _message: crate::connection::ConnectionReport,
            _ctx: &mut Self::Context,
        ) {
        }
    }

    fn echo() -> Rpc {
        Rpc {
            method: "echo".into(),
            params: None,
            timeout_ms: None,
        }
    }

    fn client(recorder: &Addr<Recorder>, connected: bool) -> RpcClient {
        let gate = Arc::new(RpcGate::default());
        gate.set_connected(connected);
        RpcClient::new(None, recorder.downgrade().recipient(), gate, 30_000)
    }

    #[actix_rt::test]
    async fn s4_a_client_refuses_at_once_while_not_connected_and_the_refusal_is_recorded() {
        let refused = Arc::new(AtomicUsize::new(0));
        let recorder = Recorder(refused.clone()).start();
        let client = client(&recorder, false);
        assert_eq!(client.call(echo()).await, Err(RpcError::NotConnected));
        // The record travels as a message; the recorder's answer to a later one proves it came.
        recorder
            .send(RpcRefused {
                method: "echo".into(),
            })
            .await
            .unwrap();
        assert_eq!(refused.load(Ordering::SeqCst), 2);
    }

    /// The client holds a strong address; a retired connection actor must still answer its calls
    /// `Stopped` (not leave them to a live actor that no longer belongs to a supervisor).
    #[actix_rt::test]
    async fn m1_calls_to_a_retired_connection_actor_are_answered_stopped() {
        let recorder = Recorder(Arc::new(AtomicUsize::new(0))).start();
        let connection = crate::connection::ConnectionActor::new(
            crate::connection::ConnectionConfig::default(),
            recorder.clone().recipient(),
        )
        .start();
        let gate = Arc::new(RpcGate::default());
        gate.set_connected(true);
        let client = RpcClient::new(
            Some(connection.clone()),
            recorder.downgrade().recipient(),
            gate,
            30_000,
        );
        // Never opened: the actor itself answers.
        assert_eq!(client.call(echo()).await, Err(RpcError::NotConnected));
        connection.send(crate::connection::Retire).await.unwrap();
        let closed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while connection.connected() {
                tokio::task::yield_now().await;
            }
        });
        assert!(
            closed.await.is_ok(),
            "a retired actor keeps its mailbox open"
        );
        assert_eq!(client.call(echo()).await, Err(RpcError::Stopped));
    }

    #[actix_rt::test]
    async fn m1_a_client_whose_actors_are_gone_answers_stopped() {
        let recorder = Recorder(Arc::new(AtomicUsize::new(0))).start();
        // Connected, but no connection actor to send to.
        assert_eq!(
            client(&recorder, true).call(echo()).await,
            Err(RpcError::Stopped)
        );
        // Not connected, and the supervisor is gone: nobody to record it for.
        let orphan = client(&recorder, false);
        let weak = recorder.downgrade();
        drop(recorder);
        while weak.upgrade().is_some() {
            tokio::task::yield_now().await;
        }
        assert_eq!(orphan.call(echo()).await, Err(RpcError::Stopped));
    }
}
