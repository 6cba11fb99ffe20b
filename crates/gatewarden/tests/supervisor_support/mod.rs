//! Shared fixtures for supervisor tests: a supervisor on a free port with its own state
//! directory, running the real `gatewarden-sim`, and an event collector to await what it publishes.
#![allow(dead_code)]

use std::time::Duration;

use actix::prelude::*;
use gatewarden::events::GatewayEvent;
use gatewarden::profile::LaunchProfile;
use gatewarden::supervisor::{GetStatus, Subscribe, Supervisor};
use gatewarden::{GatewaySupervisor, SupervisorOptions};
use gatewarden_core::machine::{LifecycleState, Status};
use tokio::sync::mpsc;

/// Generous bound for real-time waits on a busy 2-core machine.
pub const WAIT: Duration = Duration::from_secs(30);

/// Forwards every published event into a channel.
pub struct Collector(pub mpsc::UnboundedSender<GatewayEvent>);

impl Actor for Collector {
    type Context = Context<Self>;
}

impl Handler<GatewayEvent> for Collector {
    type Result = ();

    fn handle(&mut self, event: GatewayEvent, _ctx: &mut Self::Context) {
        let _ = self.0.send(event);
    }
}

/// A free TCP port on loopback (bound and released; the sim binds it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

pub struct Fixture {
    pub supervisor: Addr<Supervisor>,
    pub events: mpsc::UnboundedReceiver<GatewayEvent>,
    pub state_dir: tempfile::TempDir,
    pub port: u16,
}

/// Options for a sim on a free port, with short heartbeat timings for tests.
pub fn options(state_dir: &tempfile::TempDir, extra_args: &[&str]) -> SupervisorOptions {
    let mut options = SupervisorOptions::new(
        LaunchProfile::Sim {
            program: None,
            extra_args: extra_args.iter().map(|arg| arg.to_string()).collect(),
        },
        state_dir.path().to_path_buf(),
    );
    options.core.port = free_port();
    options.core.stop.kill_grace_ms = 2_000;
    options
}

pub fn start(options: SupervisorOptions, state_dir: tempfile::TempDir) -> Fixture {
    let port = options.core.port;
    let supervisor = GatewaySupervisor::start(options).expect("valid options");
    let (sender, events) = mpsc::unbounded_channel();
    let collector = Collector(sender).start();
    supervisor.do_send(Subscribe(collector.recipient()));
    Fixture {
        supervisor,
        events,
        state_dir,
        port,
    }
}

impl Fixture {
    pub fn new(extra_args: &[&str]) -> Self {
        let state_dir = tempfile::tempdir().expect("temp dir");
        let options = options(&state_dir, extra_args);
        start(options, state_dir)
    }

    pub async fn status(&self) -> Status {
        self.supervisor
            .send(GetStatus)
            .await
            .expect("supervisor alive")
    }

    /// Wait until a published status satisfies `predicate` (or the current one already does).
    pub async fn wait_status(&mut self, predicate: impl Fn(&Status) -> bool) -> Status {
        let current = self.status().await;
        if predicate(&current) {
            return current;
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .expect("timed out waiting for a status")
                .expect("event channel closed");
            if let GatewayEvent::Status(status) = event {
                if predicate(&status) {
                    return status;
                }
            }
        }
    }

    pub async fn wait_state(&mut self, state: LifecycleState) -> Status {
        self.wait_status(|status| status.state == state).await
    }
}

/// Is a process alive (not a zombie)?
pub fn alive(pid: u32) -> bool {
    gatewarden::orphan::process_is_running(pid)
}

/// Wait (bounded) until `pid` is gone.
pub async fn wait_gone(pid: u32) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while alive(pid) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "pid {pid} still alive"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
