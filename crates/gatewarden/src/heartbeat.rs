//! The heartbeat actor: the ticking half of H1–H4.
//!
//! The machine decides (miss counting, the H2 trigger, the tick-silence rule live in the core's
//! `HeartbeatTracker`, so the model-based test checks them); this actor owns the periodic I/O: the
//! heartbeat and health-check ticks, the WebSocket ping, and the socket check. It reports each tick
//! and each check back to the supervisor as the core event the machine expects.

use std::collections::HashMap;
use std::time::Duration;

use actix::prelude::*;

use gatewarden_core::machine::{Event, TimerKind};

use crate::connection::{ConnectionActor, IsOpen, Ping};
use crate::reports::ReportTo;

/// Arm (or re-arm) a heartbeat-owned timer: fire `TimerFired { timer, generation }` after `delay_ms`.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct ArmTick {
    /// `Heartbeat` or `HealthCheck`.
    pub timer: TimerKind,
    /// Echoed in the firing.
    pub generation: u64,
    /// From now.
    pub delay_ms: u64,
}

/// Cancel a heartbeat-owned timer.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct CancelTick(pub TimerKind);

/// H1: send a WebSocket ping now.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct SendPing;

/// H4: check whether the socket is open; answer with `SocketChecked`.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct CheckSocket {
    /// Epoch of the connection.
    pub epoch: u64,
}

/// A core event for the supervisor.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct HeartbeatReport(pub Event);

/// Owns the heartbeat and health-check ticks and their I/O.
pub struct HeartbeatActor {
    connection: Addr<ConnectionActor>,
    reports: ReportTo<HeartbeatReport>,
    ticks: HashMap<TimerKind, SpawnHandle>,
}

impl HeartbeatActor {
    /// Pings through `connection`; reports to `reports`.
    pub fn new(connection: Addr<ConnectionActor>, reports: ReportTo<HeartbeatReport>) -> Self {
        HeartbeatActor {
            connection,
            reports,
            ticks: HashMap::new(),
        }
    }

    /// Does this actor own `timer`?
    pub fn owns(timer: TimerKind) -> bool {
        matches!(timer, TimerKind::Heartbeat | TimerKind::HealthCheck)
    }
}

impl Actor for HeartbeatActor {
    type Context = Context<Self>;
}

impl Handler<ArmTick> for HeartbeatActor {
    type Result = ();

    fn handle(&mut self, message: ArmTick, ctx: &mut Self::Context) {
        if let Some(handle) = self.ticks.remove(&message.timer) {
            ctx.cancel_future(handle);
        }
        let ArmTick {
            timer, generation, ..
        } = message;
        let handle = ctx.run_later(
            Duration::from_millis(message.delay_ms),
            move |actor, _ctx| {
                actor.ticks.remove(&timer);
                actor
                    .reports
                    .do_send(HeartbeatReport(Event::TimerFired { timer, generation }));
            },
        );
        self.ticks.insert(timer, handle);
    }
}

impl Handler<CancelTick> for HeartbeatActor {
    type Result = ();

    fn handle(&mut self, message: CancelTick, ctx: &mut Self::Context) {
        if let Some(handle) = self.ticks.remove(&message.0) {
            ctx.cancel_future(handle);
        }
    }
}

impl Handler<SendPing> for HeartbeatActor {
    type Result = ();

    fn handle(&mut self, _message: SendPing, _ctx: &mut Self::Context) {
        self.connection.do_send(Ping);
    }
}

impl Handler<CheckSocket> for HeartbeatActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, message: CheckSocket, _ctx: &mut Self::Context) -> Self::Result {
        let connection = self.connection.clone();
        let epoch = message.epoch;
        Box::pin(
            async move { connection.send(IsOpen).await.unwrap_or(false) }
                .into_actor(self)
                .map(move |open, actor, _ctx| {
                    actor
                        .reports
                        .do_send(HeartbeatReport(Event::SocketChecked { epoch, open }));
                }),
        )
    }
}
