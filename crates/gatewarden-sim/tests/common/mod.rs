//! Client-side helpers for the simulator's integration tests: a process guard and a handshaking WebSocket client.
//!
//! `Sim` spawns the real binary in its own process group with an isolated HOME and state dir,
//! parses the JSON listening line(s) from stdout, collects stderr, and SIGKILLs the whole group
//! on drop. `Client` speaks the gateway protocol, including an Ed25519-signed `connect`.
//! Other crates may copy these ideas; nothing here knows about the supervisor.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// Generous bound for anything that should happen "soon" on a busy 2-core machine.
pub const SOON: Duration = Duration::from_secs(10);
/// The shared token most tests configure.
pub const TOKEN: &str = "test-token-123";

/// Environment variables that change the simulator's behaviour and must not leak in from the test runner.
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

/// Epoch milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A parsed `{"event":"listening",...}` line.
#[derive(Debug, Clone)]
pub struct Listening {
    pub port: u16,
    pub pid: u32,
    pub boot_id: String,
}

/// How to start a simulator.
pub struct SimBuilder {
    args: Vec<String>,
    env: Vec<(String, String)>,
    state_dir: Option<tempfile::TempDir>,
}

impl SimBuilder {
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }

    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|arg| arg.to_string()));
        self
    }

    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// Uses a state dir prepared by the test (e.g. with a config file in it).
    pub fn state_dir(mut self, dir: tempfile::TempDir) -> Self {
        self.state_dir = Some(dir);
        self
    }

    /// Spawns without waiting for the listening line.
    pub fn spawn(self) -> Sim {
        let state_dir = self
            .state_dir
            .unwrap_or_else(|| tempfile::tempdir().expect("tempdir"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_gatewarden-sim"));
        command.args(&self.args);
        for name in SCRUBBED_ENV {
            command.env_remove(name);
        }
        command
            .env("HOME", state_dir.path())
            .env("OPENCLAW_STATE_DIR", state_dir.path())
            .envs(
                self.env
                    .iter()
                    .map(|(name, value)| (name.as_str(), value.as_str())),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Own process group, so Drop can kill grandchildren too.
            .process_group(0);
        let mut child = command.spawn().expect("spawn gatewarden-sim");
        let (lines_tx, lines_rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr_lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = stderr_lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Sim {
            child,
            stdout_lines: lines_rx,
            stderr_lines,
            state_dir,
            exit: None,
            pid: 0,
        }
    }

    /// Spawns and waits for the first listening line.
    pub fn start(self) -> (Sim, Listening) {
        let mut sim = self.spawn();
        let listening = sim.next_listening(SOON).expect("listening line");
        (sim, listening)
    }
}

/// A running simulator; killed with its whole process group on drop.
pub struct Sim {
    child: Child,
    stdout_lines: mpsc::Receiver<String>,
    stderr_lines: Arc<Mutex<Vec<String>>>,
    pub state_dir: tempfile::TempDir,
    exit: Option<ExitStatus>,
    pid: u32,
}

/// A simulator with `--port 0` and the given extra arguments.
pub fn sim() -> SimBuilder {
    SimBuilder {
        args: vec!["--port".into(), "0".into()],
        env: Vec::new(),
        state_dir: None,
    }
}

impl Sim {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the next `listening` line on stdout.
    pub fn next_listening(&mut self, within: Duration) -> Option<Listening> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let line = self.stdout_lines.recv_timeout(left).ok()?;
            let Ok(value) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if value["event"] == "listening" {
                return Some(Listening {
                    port: value["port"].as_u64().unwrap() as u16,
                    pid: value["pid"].as_u64().unwrap() as u32,
                    boot_id: value["bootId"].as_str().unwrap().to_string(),
                });
            }
        }
    }

    /// Stderr captured so far.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr_lines.lock().unwrap().clone()
    }

    /// Waits until a stderr line contains `needle`.
    pub fn wait_stderr(&self, needle: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.stderr().iter().any(|line| line.contains(needle)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Waits until exactly-equal stderr lines number at least `count`; returns the final count.
    pub fn wait_stderr_lines(&self, line: &str, count: usize, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let seen = self.stderr().iter().filter(|seen| *seen == line).count();
            if seen >= count || Instant::now() >= deadline {
                return seen;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `signal` to the simulator process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill() on a pid we spawned and have not reaped yet.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    /// Waits for exit; `None` if it is still running after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.exit {
            return Some(status);
        }
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.exit = Some(status);
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Exit code, panicking with stderr when the process did not exit normally in time.
    pub fn exit_code(&mut self, within: Duration) -> i32 {
        let status = self
            .wait_exit(within)
            .unwrap_or_else(|| panic!("still running; stderr: {:?}", self.stderr()));
        status
            .code()
            .unwrap_or_else(|| panic!("killed by signal {:?}", status.signal()))
    }

    /// `/proc/<pid>/stat` state letter (`S`, `R`, `T` for stopped, ...).
    pub fn proc_state(&self) -> char {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        stat.rsplit(')')
            .next()
            .and_then(|rest| rest.trim().chars().next())
            .unwrap_or('?')
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        // SAFETY: the child is its own process-group leader (process_group(0)); killing the
        // group also takes any grandchild a fault spawned.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
            libc::kill(self.child.id() as i32, libc::SIGCONT);
        }
        let _ = self.child.wait();
    }
}

/// GET/HEAD/POST one path with a raw HTTP/1.1 request; returns status and body.
pub async fn http(port: u16, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let request = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// GET with a timeout; the body parsed as JSON.
pub async fn probe(port: u16, path: &str) -> (u16, Value) {
    let (status, body) = tokio::time::timeout(SOON, http(port, "GET", path))
        .await
        .expect("probe timeout")
        .expect("probe");
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// An Ed25519 device identity.
pub struct Device {
    pub key: SigningKey,
}

impl Device {
    pub fn new(seed: u8) -> Self {
        Device {
            key: SigningKey::from_bytes(&[seed; 32]),
        }
    }

    pub fn public_key(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.key.verifying_key().to_bytes())
    }

    pub fn id(&self) -> String {
        Sha256::digest(self.key.verifying_key().to_bytes())
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    /// Adds a `device` block to connect params, signing the `version` ("v3" or "v2") payload.
    pub fn sign(&self, params: &mut Value, nonce: &str, signed_at: i64, version: &str) {
        let text = |value: &Value| value.as_str().unwrap_or("").to_string();
        let client = &params["client"];
        let scopes: Vec<String> = params["scopes"]
            .as_array()
            .map(|s| s.iter().map(text).collect())
            .unwrap_or_default();
        let role = params["role"].as_str().unwrap_or("operator");
        let auth = &params["auth"];
        let token = auth["token"]
            .as_str()
            .or(auth["deviceToken"].as_str())
            .unwrap_or("");
        let mut payload = format!(
            "{version}|{}|{}|{}|{role}|{}|{signed_at}|{token}|{nonce}",
            self.id(),
            text(&client["id"]),
            text(&client["mode"]),
            scopes.join(",")
        );
        if version == "v3" {
            payload.push_str(&format!(
                "|{}|{}",
                text(&client["platform"]).trim().to_ascii_lowercase(),
                text(&client["deviceFamily"]).trim().to_ascii_lowercase()
            ));
        }
        let signature = self.key.sign(payload.as_bytes());
        params["device"] = json!({
            "id": self.id(),
            "publicKey": self.public_key(),
            "signature": URL_SAFE_NO_PAD.encode(signature.to_bytes()),
            "signedAt": signed_at,
            "nonce": nonce,
        });
    }
}

/// Connect params for `client_id`/`mode` with protocol 4, the admin+read scopes and `token`.
pub fn connect_params(client_id: &str, mode: &str, token: Option<&str>) -> Value {
    let mut params = json!({
        "minProtocol": 4,
        "maxProtocol": 4,
        "client": {"id": client_id, "version": "0.1.0", "platform": "Linux", "mode": mode, "deviceFamily": "Server"},
        "role": "operator",
        "scopes": ["operator.admin", "operator.read"],
    });
    if let Some(token) = token {
        params["auth"] = json!({"token": token});
    }
    params
}

/// How a socket ended, from the client's side.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    /// A close frame with this code and reason.
    Code(u16, String),
    /// A close frame without a status code.
    NoCode,
    /// TCP went away without a close frame (1006).
    Abnormal,
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A protocol-speaking test client.
pub struct Client {
    pub ws: Ws,
    /// The challenge nonce (empty when no challenge arrived).
    pub nonce: String,
    /// Events received while waiting for replies.
    pub events: Vec<Value>,
    next_id: u64,
}

impl Client {
    /// Opens a socket on `path` and waits for `connect.challenge`.
    pub async fn open_path(port: u16, path: &str) -> Client {
        let (ws, _) = tokio::time::timeout(
            SOON,
            tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}{path}")),
        )
        .await
        .expect("ws connect timeout")
        .expect("ws connect");
        let mut client = Client {
            ws,
            nonce: String::new(),
            events: Vec::new(),
            next_id: 0,
        };
        let challenge = client.next_json(SOON).await.expect("challenge");
        assert_eq!(challenge["event"], "connect.challenge", "{challenge}");
        assert!(challenge.get("seq").is_none());
        client.nonce = challenge["payload"]["nonce"].as_str().unwrap().to_string();
        client
    }

    pub async fn open(port: u16) -> Client {
        Client::open_path(port, "/").await
    }

    /// Opens a socket without expecting a challenge.
    pub async fn open_raw(port: u16) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/"))
            .await
            .expect("ws connect");
        Client {
            ws,
            nonce: String::new(),
            events: Vec::new(),
            next_id: 0,
        }
    }

    /// Opens, sends `connect` with `params` (signed by `device` with v3 when given) and returns the reply.
    pub async fn connect(port: u16, mut params: Value, device: Option<&Device>) -> (Client, Value) {
        let mut client = Client::open(port).await;
        if let Some(device) = device {
            let nonce = client.nonce.clone();
            device.sign(&mut params, &nonce, now_ms(), "v3");
        }
        let reply = client.request("connect", params).await;
        (client, reply)
    }

    /// Connects as `test`/`test` with the given token and asserts `hello-ok`.
    pub async fn hello(port: u16, token: Option<&str>) -> Client {
        let (client, reply) =
            Client::connect(port, connect_params("test", "test", token), None).await;
        assert_eq!(reply["ok"], true, "{reply}");
        client
    }

    /// Connects as the trusted backend (keeps admin without a device).
    pub async fn admin(port: u16, token: Option<&str>) -> Client {
        let (client, reply) = Client::connect(
            port,
            connect_params("gateway-client", "backend", token),
            None,
        )
        .await;
        assert_eq!(reply["ok"], true, "{reply}");
        client
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws
            .send(Message::text(text.into()))
            .await
            .expect("send");
    }

    /// Sends a request and returns its `res` frame, stashing events that arrive first.
    pub async fn request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = format!("req-{}", self.next_id);
        self.send_text(
            json!({"type": "req", "id": id, "method": method, "params": params}).to_string(),
        )
        .await;
        self.reply_to(&id, SOON)
            .await
            .unwrap_or_else(|| panic!("no reply to {method}"))
    }

    /// Like [`Client::request`], but a socket that ends first gives `Value::Null` instead of a panic.
    pub async fn request_or_end(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = format!("req-{}", self.next_id);
        let frame = json!({"type": "req", "id": id, "method": method, "params": params});
        if self
            .ws
            .send(Message::text(frame.to_string()))
            .await
            .is_err()
        {
            return Value::Null;
        }
        self.reply_to(&id, SOON).await.unwrap_or(Value::Null)
    }

    /// Waits for the `res` with `id`.
    pub async fn reply_to(&mut self, id: &str, within: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.checked_duration_since(tokio::time::Instant::now())?;
            let frame = self.next_json(left).await?;
            if frame["type"] == "res" && frame["id"] == id {
                return Some(frame);
            }
            self.events.push(frame);
        }
    }

    /// The next text frame parsed as JSON (`Value::String` holding the raw text when not JSON).
    pub async fn next_json(&mut self, within: Duration) -> Option<Value> {
        // One deadline for the whole wait: pings and pongs must not restart the clock.
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??
            {
                Ok(Message::Text(text)) => {
                    return Some(
                        serde_json::from_str(&text).unwrap_or(Value::String(text.to_string())),
                    )
                }
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// Waits for an event named `name` (looking at stashed events first).
    pub async fn event(&mut self, name: &str, within: Duration) -> Option<Value> {
        if let Some(index) = self.events.iter().position(|event| event["event"] == name) {
            return Some(self.events.remove(index));
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.checked_duration_since(tokio::time::Instant::now())?;
            let frame = self.next_json(left).await?;
            if frame["type"] == "event" && frame["event"] == name {
                return Some(frame);
            }
            self.events.push(frame);
        }
    }

    /// Reads until the socket ends and reports how.
    pub async fn closed(&mut self, within: Duration) -> Closed {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline
                .checked_duration_since(tokio::time::Instant::now())
                .expect("socket did not close in time");
            match tokio::time::timeout(left, self.ws.next())
                .await
                .expect("socket did not close in time")
            {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return Closed::Code(frame.code.into(), frame.reason.to_string())
                }
                Some(Ok(Message::Close(None))) => return Closed::NoCode,
                Some(Ok(Message::Text(text))) => {
                    if let Ok(value) = serde_json::from_str(&text) {
                        self.events.push(value);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Closed::Abnormal,
            }
        }
    }
}

/// `details.code` of a failed reply.
pub fn detail_code(reply: &Value) -> &str {
    reply["error"]["details"]["code"].as_str().unwrap_or("")
}
