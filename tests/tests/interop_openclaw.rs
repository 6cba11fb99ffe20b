//! The supervisor (`gatewarden::GatewaySupervisor`) against the real OpenClaw gateway, installed
//! by `scripts/install-openclaw.sh`: start, token placement, SIGKILL recovery, SIGUSR2 reload and
//! a draining stop, each with its own temp state dir, free port and random token.
//!
//! Without an install every test prints `SKIPPED` and passes, unless
//! `GATEWARDEN_REQUIRE_OPENCLAW=1`, which makes a missing install a failure (as in
//! `sim_crosscheck.rs`).
//!
//! The tests run one at a time (a process-wide lock): a real gateway's cold start takes 5–25 s of
//! a shared 2-core machine, and five at once would only make every bound flaky.
//!
//! Measurements are printed as `interop-metric test=<name> <key>=<value>` lines (visible with
//! `-- --nocapture`). docs/interop.md has the results table.
// Each `#[actix_rt::test]` runs on its own thread with its own runtime, so holding the serialising
// std mutex across awaits blocks only that test's thread, which is the point: one gateway at a time.
#![allow(clippy::await_holding_lock)]

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix::prelude::*;
use gatewarden::events::GatewayEvent;
use gatewarden::launch::Secret;
use gatewarden::orphan::{process_group_members, process_is_running};
use gatewarden::profile::LaunchProfile;
use gatewarden::supervisor::{
    GetDiagnostics, GetStatus, Reload, Rpc, Start, Stop, Subscribe, Supervisor,
};
use gatewarden::{GatewaySupervisor, SupervisorOptions};
use gatewarden_core::machine::{CommandOutcome, LifecycleState, Status};
use gatewarden_tests::{find_openclaw, free_port, OpenclawInstall};
use serde_json::Value;
use tokio::sync::mpsc;

/// Bound for a cold start to `running` (5–25 s measured on the loaded 2-core machine).
const RUNNING_BOUND: Duration = Duration::from_secs(120);
/// Bound for SIGKILL → a new gateway running (includes a cold start and any restart backoff).
const RECOVERY_BOUND: Duration = Duration::from_secs(180);
/// Bound for one command (Stop, Reload) or one RPC.
const STEP_BOUND: Duration = Duration::from_secs(90);
/// The gateway version the install script pins.
const EXPECTED_VERSION: &str = "2026.9.6";

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[actix_rt::test]
async fn interop_1_start_reaches_running_with_protocol_4_and_health_status_rpcs() {
    const NAME: &str = "interop_1";
    let _serial = serial();
    let Some(install) = install_or_skip(NAME) else {
        return;
    };
    let mut gw = Gateway::launch(&install, |_| {});
    let status = gw.start_and_wait_running(NAME).await;

    assert_eq!(status.protocol, Some(4), "status: {status:?}");
    let version = status.version.clone().unwrap_or_default();
    assert!(
        version.starts_with(EXPECTED_VERSION),
        "version {version:?} does not start with {EXPECTED_VERSION}; status: {status:?}"
    );
    let pid = status.pid.expect("a running owned gateway has a pid");
    assert!(!status.external, "a spawned gateway is not external");

    let health = gw.rpc("health").await;
    assert!(health.is_object(), "health payload: {health}");
    assert_eq!(
        health.get("ok").and_then(Value::as_bool),
        Some(true),
        "health payload: {health}"
    );
    let payload = gw.rpc("status").await;
    assert_eq!(
        payload.get("pid").and_then(Value::as_u64),
        Some(u64::from(pid)),
        "status RPC pid vs supervisor pid; payload keys: {:?}",
        payload.as_object().map(|o| o.keys().collect::<Vec<_>>())
    );
    println!("interop-info test={NAME} version={version} pid={pid}");
    gw.stop_and_check(NAME).await;
}

#[actix_rt::test]
async fn interop_2_token_is_in_the_environment_not_argv() {
    const NAME: &str = "interop_2";
    let _serial = serial();
    let Some(install) = install_or_skip(NAME) else {
        return;
    };
    let mut gw = Gateway::launch(&install, |_| {});
    let status = gw.start_and_wait_running(NAME).await;
    let pid = status.pid.expect("pid");
    let token = gw.token.clone();

    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("read cmdline");
    assert!(!cmdline.is_empty(), "pid {pid} has an empty cmdline");
    assert!(
        !contains(&cmdline, token.as_bytes()),
        "the token is in the gateway's argv"
    );
    let argv: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    // The gateway sets its process title, which overwrites the argv area: /proc shows
    // `openclaw-gateway` instead of `node …/openclaw.mjs gateway run …` once it is up. (So this
    // check only proves the token is not visible *now*; the spawn argv is covered by the
    // profile's unit test `a3_openclaw_token_goes_to_the_environment_not_argv`.)
    assert!(
        argv.iter().any(|a| a == "openclaw-gateway")
            || (argv.iter().any(|a| a == "gateway") && argv.iter().any(|a| a == "--auth")),
        "pid {pid} is not the gateway: {argv:?}"
    );

    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("read environ");
    let wanted = format!("OPENCLAW_GATEWAY_TOKEN={token}");
    assert!(
        environ
            .split(|b| *b == 0)
            .any(|entry| entry == wanted.as_bytes()),
        "OPENCLAW_GATEWAY_TOKEN=<the token> is not in /proc/{pid}/environ"
    );

    let status_json = serde_json::to_string(&gw.status().await).expect("status to JSON");
    assert!(
        !status_json.contains(&token),
        "the token is in the status JSON"
    );
    let diagnostics = gw
        .supervisor
        .send(GetDiagnostics)
        .await
        .expect("supervisor");
    let diagnostics_json = serde_json::to_string(&diagnostics).expect("diagnostics to JSON");
    assert!(
        !diagnostics_json.contains(&token),
        "the token is in the diagnostics JSON"
    );
    assert!(
        !format!("{diagnostics:?}").contains(&token),
        "the token is in the diagnostics Debug output"
    );
    println!("interop-info test={NAME} argv={argv:?}");
    gw.stop_and_check(NAME).await;
}

#[actix_rt::test]
async fn interop_4_kill_9_is_recovered_by_a_new_gateway() {
    const NAME: &str = "interop_4";
    let _serial = serial();
    let Some(install) = install_or_skip(NAME) else {
        return;
    };
    let mut gw = Gateway::launch(&install, |_| {});
    let status = gw.start_and_wait_running(NAME).await;
    let old_pid = status.pid.expect("pid");

    let killed_at = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("SIGKILL the gateway");
    let (at, recovered) = gw
        .wait_status(RECOVERY_BOUND, "a new gateway running after SIGKILL", |s| {
            s.state == LifecycleState::Running && s.pid.is_some() && s.pid != Some(old_pid)
        })
        .await;
    let recovery_ms = at.duration_since(killed_at).as_millis();
    let new_pid = recovered.pid.expect("pid");
    assert!(
        !process_is_running(old_pid),
        "the killed pid {old_pid} is still running"
    );
    assert!(process_is_running(new_pid), "new pid {new_pid} not running");
    assert_eq!(recovered.protocol, Some(4));
    println!(
        "interop-metric test={NAME} kill9_to_running_ms={recovery_ms} old_pid={old_pid} new_pid={new_pid}"
    );
    gw.stop_and_check(NAME).await;
}

#[actix_rt::test]
async fn interop_3_sigusr2_reload_reconnects_to_the_same_pid() {
    const NAME: &str = "interop_3";
    let _serial = serial();
    let Some(install) = install_or_skip(NAME) else {
        return;
    };
    let mut gw = Gateway::launch(&install, |options| {
        options.core.reload.recent_connect_skip_ms = 0;
    });
    let status = gw.start_and_wait_running(NAME).await;
    let pid = status.pid.expect("pid");
    let old_boot = status
        .boot_id
        .clone()
        .expect("a boot id after the handshake");
    // Let the gateway finish its startup sidecars first (a restart request while it is still
    // starting is not what this scenario measures). Soft: proceed after the bound either way.
    let ready = gw
        .try_wait_status(Duration::from_secs(60), |s| s.gateway_ready)
        .await
        .is_some();
    println!("interop-info test={NAME} gateway_ready_before_reload={ready}");

    let sent_at = Instant::now();
    let outcome = tokio::time::timeout(STEP_BOUND, gw.supervisor.send(Reload))
        .await
        .expect("Reload answered in time")
        .expect("supervisor alive");
    let reload_call_ms = sent_at.elapsed().as_millis();
    assert_eq!(
        outcome,
        CommandOutcome::Completed,
        "Reload outcome; status: {:?}",
        gw.status().await
    );
    let (back_at, after) = gw
        .wait_status(STEP_BOUND, "running with a new bootId", |s| {
            s.state == LifecycleState::Running
                && s.boot_id.is_some()
                && s.boot_id != Some(old_boot.clone())
        })
        .await;
    assert_eq!(after.pid, Some(pid), "an in-process restart keeps the pid");
    assert!(process_is_running(pid));
    // Downtime as the supervisor published it: first non-running status after the request, to
    // the first running status with the new bootId.
    let down_at = gw
        .history
        .iter()
        .find(|(at, s)| *at >= sent_at && s.state != LifecycleState::Running)
        .map(|(at, _)| *at);
    let downtime = match down_at {
        Some(down) => format!("{}", back_at.duration_since(down).as_millis()),
        None => "none_published".to_string(),
    };
    let states: Vec<&str> = gw
        .history
        .iter()
        .filter(|(at, _)| *at >= sent_at)
        .map(|(_, s)| s.state.as_str())
        .collect();
    println!(
        "interop-metric test={NAME} reload_call_ms={reload_call_ms} request_to_running_new_boot_ms={} downtime_ms={downtime} pid={pid} states={states:?}",
        back_at.duration_since(sent_at).as_millis()
    );
    gw.stop_and_check(NAME).await;
}

#[actix_rt::test]
async fn interop_6_stop_drains_and_leaves_nothing() {
    const NAME: &str = "interop_6";
    let _serial = serial();
    let Some(install) = install_or_skip(NAME) else {
        return;
    };
    let mut gw = Gateway::launch(&install, |_| {});
    let status = gw.start_and_wait_running(NAME).await;
    let pid = status.pid.expect("pid");
    let members_before = process_group_members(pid);
    println!("interop-info test={NAME} pid={pid} group_members_before={members_before:?}");
    gw.stop_and_check(NAME).await;
}

// ---------------------------------------------------------------------------------------------
// Fixture
// ---------------------------------------------------------------------------------------------

/// One real gateway at a time in this test binary.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The install, or `None` after printing SKIPPED (a failure with `GATEWARDEN_REQUIRE_OPENCLAW=1`).
fn install_or_skip(test: &str) -> Option<OpenclawInstall> {
    match find_openclaw() {
        Ok(install) => Some(install),
        Err(reason) if std::env::var("GATEWARDEN_REQUIRE_OPENCLAW").as_deref() == Ok("1") => {
            panic!("GATEWARDEN_REQUIRE_OPENCLAW=1 but the real OpenClaw gateway is not installed: {reason}")
        }
        Err(reason) => {
            eprintln!(
                "SKIPPED {test}: the real OpenClaw gateway is not installed: {reason}. \
                 (GATEWARDEN_REQUIRE_OPENCLAW=1 makes this a failure.)"
            );
            None
        }
    }
}

/// 32 hex digits from the OS random source.
fn random_token() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut file| file.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Forwards every published event, stamped with its arrival time.
struct Collector(mpsc::UnboundedSender<(Instant, GatewayEvent)>);

impl Actor for Collector {
    type Context = Context<Self>;
}

impl Handler<GatewayEvent> for Collector {
    type Result = ();

    fn handle(&mut self, event: GatewayEvent, _ctx: &mut Self::Context) {
        let _ = self.0.send((Instant::now(), event));
    }
}

struct Gateway {
    supervisor: Addr<Supervisor>,
    events: mpsc::UnboundedReceiver<(Instant, GatewayEvent)>,
    /// Every published status seen so far, with its arrival time.
    history: Vec<(Instant, Status)>,
    token: String,
    port: u16,
    /// Every gateway pid seen, for the safety net in `Drop`.
    pids: Vec<u32>,
    stopped: bool,
    _state_dir: tempfile::TempDir,
}

impl Gateway {
    fn launch(install: &OpenclawInstall, tweak: impl FnOnce(&mut SupervisorOptions)) -> Self {
        let state_dir = tempfile::Builder::new()
            .prefix("gatewarden-interop-")
            .tempdir()
            .expect("temp state dir");
        let mut options = SupervisorOptions::new(
            LaunchProfile::OpenClaw {
                node: install.node.clone(),
                entry: install.entry.clone(),
            },
            state_dir.path().to_path_buf(),
        );
        let token = random_token();
        options.core.port = free_port();
        options.token = Some(Secret::new(token.clone()));
        // The real gateway drains on SIGTERM; give it time before SIGKILL.
        options.core.stop.kill_grace_ms = 20_000;
        // Cold start on a loaded machine: never below the RUNNING_BOUND (default is 480 s).
        options.core.connect.ready_timeout_ms = options
            .core
            .connect
            .ready_timeout_ms
            .max(RUNNING_BOUND.as_millis() as u64 * 2);
        tweak(&mut options);
        let port = options.core.port;
        let supervisor = GatewaySupervisor::start(options);
        let (sender, events) = mpsc::unbounded_channel();
        let collector = Collector(sender).start();
        supervisor.do_send(Subscribe(collector.recipient()));
        Gateway {
            supervisor,
            events,
            history: Vec::new(),
            token,
            port,
            pids: Vec::new(),
            stopped: false,
            _state_dir: state_dir,
        }
    }

    fn note(&mut self, at: Instant, status: &Status) {
        if let Some(pid) = status.pid {
            if !self.pids.contains(&pid) {
                self.pids.push(pid);
            }
        }
        self.history.push((at, status.clone()));
    }

    async fn status(&mut self) -> Status {
        let status = self
            .supervisor
            .send(GetStatus)
            .await
            .expect("supervisor alive");
        if let Some(pid) = status.pid {
            if !self.pids.contains(&pid) {
                self.pids.push(pid);
            }
        }
        status
    }

    /// The first status (current, then published) that satisfies `predicate` within `bound`.
    async fn try_wait_status(
        &mut self,
        bound: Duration,
        predicate: impl Fn(&Status) -> bool,
    ) -> Option<(Instant, Status)> {
        let deadline = tokio::time::Instant::now() + bound;
        // Published statuses already queued come first (their arrival times are exact).
        while let Ok((at, event)) = self.events.try_recv() {
            if let GatewayEvent::Status(status) = event {
                self.note(at, &status);
                if predicate(&status) {
                    return Some((at, status));
                }
            }
        }
        let current = self.status().await;
        if predicate(&current) {
            return Some((Instant::now(), current));
        }
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) | Ok(None) => return None,
                Ok(Some((at, GatewayEvent::Status(status)))) => {
                    self.note(at, &status);
                    if predicate(&status) {
                        return Some((at, status));
                    }
                }
                Ok(Some(_)) => {}
            }
        }
    }

    async fn wait_status(
        &mut self,
        bound: Duration,
        what: &str,
        predicate: impl Fn(&Status) -> bool,
    ) -> (Instant, Status) {
        match self.try_wait_status(bound, predicate).await {
            Some(found) => found,
            None => {
                let status = self.status().await;
                let diagnostics = self.supervisor.send(GetDiagnostics).await.ok();
                panic!(
                    "timed out after {bound:?} waiting for {what} (port {}); status: {status:?}; \
                     diagnostics: {diagnostics:?}",
                    self.port
                )
            }
        }
    }

    /// Start → running within [`RUNNING_BOUND`]; prints `start_to_running_ms`.
    async fn start_and_wait_running(&mut self, test: &str) -> Status {
        let started = Instant::now();
        let outcome = tokio::time::timeout(RUNNING_BOUND, self.supervisor.send(Start))
            .await
            .unwrap_or_else(|_| panic!("Start not answered within {RUNNING_BOUND:?}"))
            .expect("supervisor alive");
        let start_call_ms = started.elapsed().as_millis();
        let remaining = RUNNING_BOUND.saturating_sub(started.elapsed());
        let (at, status) = self
            .wait_status(remaining, "running after Start", |s| {
                s.state == LifecycleState::Running
            })
            .await;
        assert_eq!(
            outcome,
            CommandOutcome::Completed,
            "Start outcome; status: {status:?}"
        );
        println!(
            "interop-metric test={test} start_to_running_ms={} start_call_ms={start_call_ms} port={}",
            at.duration_since(started).as_millis(),
            self.port
        );
        status
    }

    async fn rpc(&mut self, method: &str) -> Value {
        let reply = tokio::time::timeout(
            STEP_BOUND,
            self.supervisor.send(Rpc {
                method: method.to_string(),
                params: None,
                timeout_ms: Some(60_000),
            }),
        )
        .await
        .unwrap_or_else(|_| panic!("{method} RPC not answered in time"))
        .expect("supervisor alive");
        match reply {
            Ok(payload) => payload,
            Err(error) => panic!("{method} RPC failed: {error:?}"),
        }
    }

    /// Stop → Completed, state stopped, the gateway pid gone and its process group empty.
    async fn stop_and_check(&mut self, test: &str) {
        let pid = self.status().await.pid;
        let sent = Instant::now();
        let outcome = tokio::time::timeout(STEP_BOUND, self.supervisor.send(Stop))
            .await
            .expect("Stop answered in time")
            .expect("supervisor alive");
        let stop_call_ms = sent.elapsed().as_millis();
        self.stopped = true;
        assert_eq!(outcome, CommandOutcome::Completed, "Stop outcome");
        let status = self.status().await;
        assert_eq!(status.state, LifecycleState::Stopped, "status: {status:?}");
        assert_eq!(status.pid, None, "no pid once stopped: {status:?}");
        let Some(pid) = pid else {
            panic!("no gateway pid before Stop");
        };
        // The supervisor has reaped it when Stop answers; allow a moment for /proc to settle.
        let deadline = Instant::now() + Duration::from_secs(10);
        while process_is_running(pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!process_is_running(pid), "gateway pid {pid} survived Stop");
        let mut members = process_group_members(pid);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !members.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            members = process_group_members(pid);
        }
        assert!(
            members.is_empty(),
            "process group {pid} not empty after Stop: {members:?}"
        );
        println!(
            "interop-metric test={test} stop_ms={stop_call_ms} pid={pid} pid_gone=true group_empty=true"
        );
    }
}

impl Drop for Gateway {
    /// Safety net for a failed test: SIGKILL every gateway this fixture saw (its process group
    /// first), but only processes whose environment carries this fixture's token.
    fn drop(&mut self) {
        let wanted = format!("OPENCLAW_GATEWAY_TOKEN={}", self.token);
        for &pid in &self.pids {
            let ours = std::fs::read(format!("/proc/{pid}/environ"))
                .map(|environ| {
                    environ
                        .split(|b| *b == 0)
                        .any(|entry| entry == wanted.as_bytes())
                })
                .unwrap_or(false);
            if ours && process_is_running(pid) {
                if !self.stopped {
                    eprintln!("interop cleanup: SIGKILL gateway pid {pid} and its group");
                }
                let target = nix::unistd::Pid::from_raw(pid as i32);
                let _ = nix::sys::signal::killpg(target, nix::sys::signal::Signal::SIGKILL);
                let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}
