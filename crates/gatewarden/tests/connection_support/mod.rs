//! Shared fixtures of the connection tests: the real `gatewarden-sim` gateway in its own process
//! group, a report collector, and waits with generous deadlines for a busy 2-core machine.
// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc as std_mpsc, OnceLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use gatewarden::connection::{ConnectionActor, ConnectionConfig, ConnectionReport, TokenSource};
use gatewarden::launch::Secret;
use gatewarden_core::config::ConnectConfig;
use serde_json::Value;
use tokio::sync::mpsc;

/// Upper bound for anything that should happen "soon". Generous: the machine is shared.
pub const SOON: Duration = Duration::from_secs(20);

/// The shared token the simulators are started with.
pub const TOKEN: &str = "conn-test-token";

/// Environment variables that change the simulator's behaviour and must not leak in from the
/// test runner.
const SCRUBBED_ENV: &[&str] = &[
    "OPENCLAW_GATEWAY_TOKEN",
    "OPENCLAW_GATEWAY_PASSWORD",
    "OPENCLAW_GATEWAY_PORT",
    "OPENCLAW_CONFIG_PATH",
    "OPENCLAW_SUPERVISOR_MODE",
    "OPENCLAW_NO_RESPAWN",
    "OPENCLAW_HANDSHAKE_TIMEOUT_MS",
    "INVOCATION_ID",
    "SYSTEMD_EXEC_PID",
    "JOURNAL_STREAM",
    "OPENCLAW_SYSTEMD_UNIT",
    "LAUNCH_JOB_LABEL",
    "XPC_SERVICE_NAME",
    "OPENCLAW_SERVICE_MARKER",
    "OPENCLAW_SERVICE_KIND",
];

/// The simulator binary: `GATEWARDEN_SIM_BIN`, else next to this test's target directory
/// (`<target>/<profile>/gatewarden-sim`), built there with cargo when it is missing.
pub fn sim_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            if let Some(path) = std::env::var_os("GATEWARDEN_SIM_BIN") {
                return PathBuf::from(path);
            }
            let exe = std::env::current_exe().expect("current test executable");
            // <target>/<profile>/deps/<test-exe>
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("test executable lives in <target>/<profile>/deps");
            let binary = profile_dir.join("gatewarden-sim");
            if !binary.exists() {
                build_sim(profile_dir);
            }
            assert!(
                binary.exists(),
                "gatewarden-sim not found at {}",
                binary.display()
            );
            binary
        })
        .clone()
}

fn build_sim(profile_dir: &Path) {
    let target_dir = profile_dir.parent().expect("<target>/<profile>");
    let profile = profile_dir
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or("debug");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args(["build", "-p", "gatewarden-sim", "--bin", "gatewarden-sim"])
        .env("CARGO_TARGET_DIR", target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile == "release" {
        command.arg("--release");
    }
    let status = command
        .status()
        .expect("run cargo build for gatewarden-sim");
    assert!(status.success(), "building gatewarden-sim failed: {status}");
}

/// The simulator's `listening` line.
#[derive(Debug, Clone)]
pub struct Listening {
    pub port: u16,
    pub pid: u32,
    pub unix_ms: u64,
}

/// A running simulator, killed with its whole process group on drop.
pub struct Sim {
    child: Child,
    lines: std_mpsc::Receiver<String>,
    _home: tempfile::TempDir,
}

/// Starts a simulator with `--port 0`, the shared [`TOKEN`] and `args`, and waits until it
/// listens.
pub fn start_sim(args: &[&str]) -> (Sim, Listening) {
    let mut full = vec!["--port", "0", "--token", TOKEN];
    full.extend_from_slice(args);
    let mut sim = spawn_sim(&full);
    let listening = sim.next_listening(SOON).expect("simulator listening line");
    (sim, listening)
}

/// Spawns a simulator with exactly `args`, without waiting.
pub fn spawn_sim(args: &[&str]) -> Sim {
    let home = tempfile::tempdir().expect("simulator home");
    let mut command = Command::new(sim_binary());
    command.args(args);
    for name in SCRUBBED_ENV {
        command.env_remove(name);
    }
    command
        .env("HOME", home.path())
        .env("OPENCLAW_STATE_DIR", home.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        // Its own process group, so Drop kills anything it started too.
        .process_group(0);
    let mut child = command.spawn().expect("spawn gatewarden-sim");
    let stdout = child.stdout.take().expect("piped stdout");
    let (sender, lines) = std_mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    Sim {
        child,
        lines,
        _home: home,
    }
}

impl Sim {
    /// Waits for the next `listening` line.
    pub fn next_listening(&mut self, within: Duration) -> Option<Listening> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let line = self.lines.recv_timeout(left).ok()?;
            let Ok(value) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if value["event"] == "listening" {
                return Some(Listening {
                    port: u16::try_from(value["port"].as_u64()?).ok()?,
                    pid: u32::try_from(value["pid"].as_u64()?).ok()?,
                    unix_ms: value["unix_ms"].as_u64()?,
                });
            }
        }
    }
}

impl Sim {
    /// Sends `signal` to the simulator process.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = i32::try_from(self.child.id()).expect("pid fits i32");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).expect("signal the sim");
    }

    /// SIGKILLs the simulator and blocks until it is gone (its sockets are closed by then).
    pub fn kill_and_wait(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
        self.child.wait().expect("reap the sim");
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago (for simulators that must listen on a known port later).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// Forwards every report into a channel the test awaits.
pub struct Collector(mpsc::UnboundedSender<ConnectionReport>);

impl Actor for Collector {
    type Context = Context<Self>;
}

impl Handler<ConnectionReport> for Collector {
    type Result = ();
    fn handle(&mut self, report: ConnectionReport, _ctx: &mut Self::Context) {
        let _ = self.0.send(report);
    }
}

/// What the test receives from the connection actor; keeps everything it saw for messages.
pub struct Reports {
    receiver: mpsc::UnboundedReceiver<ConnectionReport>,
    pub seen: Vec<ConnectionReport>,
}

impl Reports {
    /// The next report that matches, skipping (and keeping) others; panics after [`SOON`].
    pub async fn wait_for(
        &mut self,
        what: &str,
        matches: impl Fn(&ConnectionReport) -> bool,
    ) -> ConnectionReport {
        let deadline = tokio::time::Instant::now() + SOON;
        loop {
            match tokio::time::timeout_at(deadline, self.receiver.recv()).await {
                Ok(Some(report)) => {
                    self.seen.push(report.clone());
                    if matches(&report) {
                        return report;
                    }
                }
                Ok(None) => panic!("report channel closed while waiting for {what}"),
                Err(_) => panic!("no {what} within {SOON:?}; saw {:#?}", self.seen),
            }
        }
    }

    /// Everything that arrives within `window`.
    pub async fn collect_for(&mut self, window: Duration) -> Vec<ConnectionReport> {
        let deadline = tokio::time::Instant::now() + window;
        let mut collected = Vec::new();
        while let Ok(Some(report)) = tokio::time::timeout_at(deadline, self.receiver.recv()).await {
            self.seen.push(report.clone());
            collected.push(report);
        }
        collected
    }
}

/// A connection config for a simulator on `port` with the shared token and test-sized timeouts.
pub fn config_for(port: u16) -> ConnectionConfig {
    let mut connect = ConnectConfig::default();
    connect.challenge_timeout_ms = 10_000;
    connect.handshake_timeout_ms = 10_000;
    ConnectionConfig {
        port,
        token: TokenSource::Value(Secret::new(TOKEN)),
        connect,
        ..ConnectionConfig::default()
    }
}

/// Starts a connection actor with `config` and a collector for its reports.
pub fn start_connection(config: ConnectionConfig) -> (Addr<ConnectionActor>, Reports) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let collector = Collector(sender).start();
    let connection = ConnectionActor::new(config, collector.recipient()).start();
    (
        connection,
        Reports {
            receiver,
            seen: Vec::new(),
        },
    )
}

/// Opens with `epoch` and waits for the handshake to complete.
pub async fn open(connection: &Addr<ConnectionActor>, reports: &mut Reports, epoch: u64) {
    connection
        .send(gatewarden::connection::Open { epoch })
        .await
        .expect("connection actor alive");
    reports
        .wait_for("handshake completed", |report| {
            matches!(report, ConnectionReport::HandshakeCompleted { epoch: e, .. } if *e == epoch)
        })
        .await;
}

/// One RPC through the actor.
pub async fn rpc(
    connection: &Addr<ConnectionActor>,
    method: &str,
    params: Option<Value>,
    timeout_ms: u64,
) -> Result<Value, gatewarden_core::rpc::RpcError> {
    connection
        .send(gatewarden::connection::Rpc {
            method: method.to_string(),
            params,
            timeout_ms,
        })
        .await
        .expect("connection actor alive")
}

/// How many established IPv4 TCP connections in this network namespace have `port` as their
/// remote port (client sockets to a local server on `port`), from `/proc/net/tcp`.
pub fn established_client_sockets(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let remote = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // fields: sl local_address rem_address st ...; 01 = ESTABLISHED
            fields.len() > 3 && fields[2].ends_with(&remote) && fields[3] == "01"
        })
        .count()
}
