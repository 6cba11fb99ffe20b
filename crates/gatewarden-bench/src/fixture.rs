//! What every scenario needs: a supervisor on a free port with its own temporary state directory,
//! running the real `gatewarden-sim`, an event collector that timestamps what it publishes, and
//! the sim spawned directly for its own start time.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use actix::prelude::*;
use anyhow::{anyhow, bail, Context as _};
use gatewarden::events::GatewayEvent;
use gatewarden::launch::Secret;
use gatewarden::profile::{find_sim_binary, LaunchProfile};
use gatewarden::supervisor::{GetStatus, Rpc, Start, Stop, Subscribe, Supervisor};
use gatewarden::{GatewaySupervisor, SupervisorOptions};
use gatewarden_core::machine::{LifecycleState, Status};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::io::AsyncBufReadExt as _;
use tokio::sync::mpsc;

/// The shared token of every sim the bench runs: both the supervisor and the raw client
/// authenticate with it, so they pay for the same handshake.
pub const TOKEN: &str = "gatewarden-bench-token";

/// A published event and when the collector saw it.
pub type Stamped = (Instant, GatewayEvent);

/// Forwards every published event, timestamped on arrival, into a channel.
pub struct Collector(pub mpsc::UnboundedSender<Stamped>);

impl Actor for Collector {
    type Context = Context<Self>;
}

impl Handler<GatewayEvent> for Collector {
    type Result = ();

    fn handle(&mut self, event: GatewayEvent, _ctx: &mut Self::Context) {
        let _ = self.0.send((Instant::now(), event));
    }
}

/// A free TCP port on loopback (bound and released; the sim binds it right after).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(listener.local_addr().context("local address")?.port())
}

/// The sim binary the supervisor will run (next to this executable when built together).
pub fn sim_binary() -> anyhow::Result<PathBuf> {
    find_sim_binary().map_err(|error| anyhow!("{error}"))
}

/// Options for a sim on a free port with the default (BEHAVIOUR.md) config and the bench token.
pub fn options(
    state_dir: &std::path::Path,
    extra_args: &[&str],
) -> anyhow::Result<SupervisorOptions> {
    let mut options = SupervisorOptions::new(
        LaunchProfile::Sim {
            program: Some(sim_binary()?),
            extra_args: extra_args.iter().map(|arg| arg.to_string()).collect(),
        },
        state_dir.to_path_buf(),
    );
    options.core.port = free_port()?;
    options.token = Some(Secret::new(TOKEN));
    Ok(options)
}

/// One supervisor under test and what it published.
pub struct Supervised {
    pub supervisor: Addr<Supervisor>,
    pub events: mpsc::UnboundedReceiver<Stamped>,
    pub port: u16,
}

impl Supervised {
    /// Start the supervisor actor and subscribe (the gateway is not started yet).
    pub fn new(options: SupervisorOptions) -> Self {
        let port = options.core.port;
        let supervisor = GatewaySupervisor::start(options).expect("valid options");
        let (sender, events) = mpsc::unbounded_channel();
        supervisor.do_send(Subscribe(Collector(sender).start().recipient()));
        Supervised {
            supervisor,
            events,
            port,
        }
    }

    /// The current status.
    pub async fn status(&self) -> anyhow::Result<Status> {
        self.supervisor
            .send(GetStatus)
            .await
            .context("supervisor stopped")
    }

    /// Send `Start` without waiting for its answer (the caller times the status events).
    pub fn start(&self) {
        let start = self.supervisor.send(Start);
        actix_rt::spawn(async move {
            let _ = start.await;
        });
    }

    /// Wait until a published status satisfies `predicate`; when it arrived. Events already
    /// queued count, so call it right after the action that causes the change.
    pub async fn wait_status(
        &mut self,
        limit: Duration,
        predicate: impl Fn(&Status) -> bool,
    ) -> anyhow::Result<(Instant, Status)> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let Ok(received) = tokio::time::timeout_at(deadline, self.events.recv()).await else {
                let current = self.status().await?;
                bail!(
                    "timed out after {} ms waiting for a status (now {} pid={:?} error={:?})",
                    limit.as_millis(),
                    current.state.as_str(),
                    current.pid,
                    current.error
                );
            };
            let (at, event) = received.ok_or_else(|| anyhow!("event channel closed"))?;
            if let GatewayEvent::Status(status) = event {
                if predicate(&status) {
                    return Ok((at, status));
                }
            }
        }
    }

    /// Start and wait for `running`; returns the running status.
    pub async fn start_running(&mut self, limit: Duration) -> anyhow::Result<Status> {
        self.start();
        let (_, status) = self
            .wait_status(limit, |status| status.state == LifecycleState::Running)
            .await?;
        Ok(status)
    }

    /// Call a gateway method through the public API.
    pub async fn rpc(&self, method: &str, params: Option<Value>) -> anyhow::Result<Value> {
        self.supervisor
            .send(Rpc {
                method: method.to_string(),
                params,
                timeout_ms: Some(10_000),
            })
            .await
            .context("supervisor stopped")?
            .map_err(|error| anyhow!("{method} failed: {error}"))
    }

    /// Stop the gateway (bounded), then make sure nothing the supervisor spawned survives: a
    /// stopped (SIGSTOP) gateway would otherwise wait out the whole kill grace.
    pub async fn stop(&self) {
        let pid = self.status().await.ok().and_then(|status| status.pid);
        if let Some(pid) = pid {
            let pid = Pid::from_raw(pid as i32);
            // A stopped process does not run its SIGTERM handler until continued.
            let _ = kill(pid, Signal::SIGCONT);
        }
        let stopped =
            tokio::time::timeout(Duration::from_secs(10), self.supervisor.send(Stop)).await;
        if stopped.is_err() {
            if let Some(pid) = pid {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
    }
}

/// Milliseconds between two instants, as a float with microsecond precision.
pub fn ms_between(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64() * 1_000.0
}

/// Wall-clock Unix time in milliseconds with sub-millisecond precision.
pub fn unix_ms_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |elapsed| elapsed.as_secs_f64() * 1_000.0)
}

/// The sim's own start time: spawn it directly (same binary, same arguments and environment
/// shape as the supervisor uses) and take its listening line's `unix_ms` minus the wall clock
/// just before the spawn. The child is killed before returning.
pub async fn sim_own_start_ms(state_dir: &std::path::Path) -> anyhow::Result<f64> {
    let gateway_state = state_dir.join("gateway");
    let mut command = tokio::process::Command::new(sim_binary()?);
    command
        .args(["--port", "0"])
        .env("OPENCLAW_NO_RESPAWN", "1")
        .env("OPENCLAW_STATE_DIR", &gateway_state)
        .env("OPENCLAW_CONFIG_PATH", gateway_state.join("openclaw.json"))
        .env("OPENCLAW_GATEWAY_TOKEN", TOKEN)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let spawned_at = unix_ms_f64();
    let mut child = command.spawn().context("spawning gatewarden-sim")?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .context("sim did not print its listening line in 10 s")?
        .context("reading the sim's stdout")?
        .ok_or_else(|| anyhow!("sim exited before listening"))?;
    let _ = child.start_kill();
    let _ = child.wait().await;
    let listening: Value = serde_json::from_str(&line).context("parsing the listening line")?;
    let unix_ms = listening
        .get("unix_ms")
        .and_then(Value::as_f64)
        .ok_or_else(|| anyhow!("listening line without unix_ms: {line}"))?;
    // unix_ms is whole milliseconds, truncated: +0.5 centres the estimate.
    Ok(unix_ms + 0.5 - spawned_at)
}
