//! Helpers for the end-to-end tests: run the built `gatewarden` binary against the bundled
//! simulator on a free port, with a private state directory and control socket, and always kill
//! what was started.
#![allow(dead_code)]

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// Generous: the machine has two cores and runs other builds at the same time.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The binary under test.
pub fn gatewarden() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gatewarden"))
}

/// The simulator next to the binary under test; built there if it is missing (cargo cannot
/// depend on another package's binary, so `cargo test -p gatewarden-cli` alone would lack it).
pub fn sim_binary() -> PathBuf {
    static SIM: OnceLock<PathBuf> = OnceLock::new();
    SIM.get_or_init(|| {
        let binary = gatewarden();
        let dir = binary.parent().expect("binary has a folder").to_path_buf();
        let sim = dir.join("gatewarden-sim");
        if !sim.is_file() {
            let target_dir = dir.parent().expect("profile folder has a parent");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut build = Command::new(cargo);
            build
                .args(["build", "-p", "gatewarden-sim"])
                .env("CARGO_TARGET_DIR", target_dir)
                .current_dir(env!("CARGO_MANIFEST_DIR"));
            if dir.file_name().is_some_and(|name| name == "release") {
                build.arg("--release");
            }
            let status = build.status().expect("run cargo to build gatewarden-sim");
            assert!(status.success(), "building gatewarden-sim failed");
        }
        assert!(sim.is_file(), "gatewarden-sim missing at {}", sim.display());
        sim
    })
    .clone()
}

/// A port nobody listens on (bind :0, read it, release it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// A `gatewarden` command with a clean environment: no inherited `GATEWARDEN_*`, token or
/// systemd variables, private XDG folders under `home`.
pub fn command(home: &Path) -> Command {
    let mut command = Command::new(gatewarden());
    for (name, _) in std::env::vars_os() {
        let text = name.to_string_lossy();
        if text.starts_with("GATEWARDEN_")
            || text.starts_with("OPENCLAW_")
            || text.starts_with("WATCHDOG_")
            || text == "NOTIFY_SOCKET"
            || text == "RUST_LOG"
        {
            command.env_remove(&name);
        }
    }
    command
        .env("XDG_RUNTIME_DIR", home.join("runtime"))
        .env("XDG_STATE_HOME", home.join("state-home"))
        .env("XDG_CACHE_HOME", home.join("cache"))
        // No GATEWARDEN_SIM_BIN: `run` uses the simulator built into gatewarden, the default
        // path a new user takes.
        .stdin(Stdio::null());
    command
}

/// How to start an instance.
#[derive(Default)]
pub struct Options {
    /// Extra `run` arguments (before any `--`).
    pub args: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Serve HTTP on a free port.
    pub http: bool,
    /// A custom gateway command (after `--`).
    pub command: Vec<String>,
    /// Share this home (XDG folders) instead of the instance's own, so several instances see one
    /// registry (`gatewarden ls`).
    pub home: Option<PathBuf>,
    /// Use this state directory instead of a fresh one under the instance's folder.
    pub state_dir: Option<PathBuf>,
}

/// A running `gatewarden run`, killed (with every gateway it was seen to own) when dropped.
pub struct Instance {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub control: PathBuf,
    pub http_port: Option<u16>,
    child: Option<Child>,
    seen_gateways: std::cell::RefCell<Vec<u32>>,
}

impl Instance {
    /// Start `gatewarden run` on a free port.
    pub fn start(options: Options) -> Instance {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let control = dir.path().join("ctl").join("gw.sock");
        let http_port = options.http.then(free_port);
        let mut command = command(options.home.as_deref().unwrap_or(dir.path()));
        command
            .arg("run")
            .arg("--port")
            .arg(port.to_string())
            .arg("--state-dir")
            .arg(
                options
                    .state_dir
                    .clone()
                    .unwrap_or_else(|| dir.path().join("state")),
            )
            .arg("--control")
            .arg(&control)
            .args(&options.args);
        if let Some(http_port) = http_port {
            command.arg("--http").arg(format!("127.0.0.1:{http_port}"));
        }
        if !options.command.is_empty() {
            command.arg("--").args(&options.command);
        }
        for (name, value) in &options.env {
            command.env(name, value);
        }
        let stdout = File::create(dir.path().join("stdout.log")).expect("stdout log");
        let stderr = File::create(dir.path().join("stderr.log")).expect("stderr log");
        // Its own process group, so Drop can kill gatewarden and anything it left in its group.
        command.stdout(stdout).stderr(stderr).process_group(0);
        let child = command.spawn().expect("spawn gatewarden run");
        Instance {
            dir,
            port,
            control,
            http_port,
            child: Some(child),
            seen_gateways: std::cell::RefCell::new(Vec::new()),
        }
    }

    /// The pid of `gatewarden run`.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Run a client command against this instance.
    pub fn cli(&self, args: &[&str]) -> Output {
        command(self.dir.path())
            .args(args)
            .arg("--control")
            .arg(&self.control)
            .arg("--port")
            .arg(self.port.to_string())
            .output()
            .expect("run gatewarden client")
    }

    /// `status --json`, or `None` when the instance does not answer (yet).
    pub fn status(&self) -> Option<Value> {
        let output = self.cli(&["status", "--json"]);
        if !output.status.success() {
            return None;
        }
        let status: Value = serde_json::from_slice(&output.stdout).ok()?;
        if let Some(pid) = status["pid"].as_u64() {
            let pid = u32::try_from(pid).unwrap_or(0);
            let mut seen = self.seen_gateways.borrow_mut();
            if !seen.contains(&pid) {
                seen.push(pid);
            }
        }
        Some(status)
    }

    /// Poll `status --json` until `accept` holds; panics with the logs after [`DEADLINE`].
    pub fn wait_for(&self, what: &str, accept: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        let mut last = None;
        while started.elapsed() < DEADLINE {
            if let Some(status) = self.status() {
                if accept(&status) {
                    return status;
                }
                last = Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "timed out waiting for {what}; last status {last:?}\n{}",
            self.logs()
        );
    }

    /// Wait until the gateway runs and is ready.
    pub fn wait_running(&self) -> Value {
        self.wait_for("state running", |status| {
            status["state"] == "running" && status["gatewayReady"] == true && status["pid"].is_u64()
        })
    }

    /// Send a signal to `gatewarden run`.
    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid() as i32), signal).expect("signal gatewarden");
    }

    /// Wait for `gatewarden run` to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let started = Instant::now();
        let child = self.child.as_mut().expect("child");
        while started.elapsed() < DEADLINE {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("gatewarden did not exit\n{}", self.logs());
    }

    /// What gatewarden logged.
    pub fn logs(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!(
            "--- stderr ---\n{}\n--- stdout ---\n{}",
            read("stderr.log"),
            read("stdout.log")
        )
    }

    /// One HTTP GET: (status code, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        let port = self.http_port.expect("instance started with http");
        http_get(port, path)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let group = Pid::from_raw(child.id() as i32);
            let _ = killpg(group, Signal::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
        }
        // The gateways live in their own process groups; the parent-death signal should end
        // them, but a test never relies on what it is testing to clean up after it.
        for pid in self.seen_gateways.borrow().iter() {
            if is_alive(*pid) {
                let _ = killpg(Pid::from_raw(*pid as i32), Signal::SIGKILL);
                let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
            }
        }
    }
}

/// One HTTP GET to 127.0.0.1:`port`.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the http endpoint");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").expect("send request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read answer");
    let code = answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (code, body)
}

/// Fields 3 (state) and 5 (process group) of `/proc/<pid>/stat`.
pub fn proc_state(pid: u32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let group = fields.next()?.parse().ok()?;
    Some((state, group))
}

/// Alive and not a zombie.
pub fn is_alive(pid: u32) -> bool {
    matches!(proc_state(pid), Some((state, _)) if state != 'Z' && state != 'X')
}

/// Live processes in process group `group`.
pub fn group_members(group: i32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| matches!(proc_state(*pid), Some((state, pgrp)) if pgrp == group && state != 'Z' && state != 'X'))
        .collect()
}

/// Wait until `condition` holds (polling), or panic after [`DEADLINE`].
pub fn eventually(what: &str, condition: impl Fn() -> bool) {
    let started = Instant::now();
    while started.elapsed() < DEADLINE {
        if condition() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

/// Run `command` to its end, killing it (and failing) after `deadline`: a command that should
/// refuse at once must not hang the test if it does not.
pub fn run_bounded(mut command: Command, deadline: Duration) -> (Option<i32>, String) {
    let mut child = KillOnDrop(
        command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the command"),
    );
    let started = Instant::now();
    loop {
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            let mut text = String::new();
            if let Some(mut stderr) = child.0.stderr.take() {
                let _ = stderr.read_to_string(&mut text);
            }
            return (status.code(), text);
        }
        if started.elapsed() > deadline {
            panic!("the command still ran after {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `/proc/<pid>/stat` field 22: the start time, which tells a process from a reused pid.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// A child process killed when dropped (a panicking test still cleans up).
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A write lease held on a file (`fcntl(F_SETLEASE, F_WRLCK)`): until it is dropped (or the
/// kernel's `lease-break-time`, 45 s by default, passes), anyone else's `open` of the file blocks
/// in the kernel. An `execve` of the file opens it, so a spawn of it is stuck before `execve` as
/// on a hung file system, with no special file system needed.
pub struct WriteLease(File);

impl WriteLease {
    /// Takes the lease on `path` (a file nobody else has open). SIGIO, which the kernel sends the
    /// holder when someone wants the file, is ignored in this process.
    pub fn hold(path: &Path) -> WriteLease {
        use std::os::fd::AsRawFd as _;
        // SAFETY: setting a signal's disposition to ignore has no memory preconditions.
        unsafe { libc::signal(libc::SIGIO, libc::SIG_IGN) };
        let file = File::open(path).expect("open the file to lease");
        // SAFETY: fcntl on a descriptor we own.
        let taken = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLEASE, libc::F_WRLCK) };
        assert_eq!(
            taken,
            0,
            "cannot take a write lease: {}",
            std::io::Error::last_os_error()
        );
        WriteLease(file)
    }
}

/// `(state letter, parent pid, command name)` of `/proc/<pid>/stat`.
pub fn stat_of(pid: u32) -> Option<(char, u32, String)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_string();
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let parent = rest.next()?.parse().ok()?;
    Some((state, parent, name))
}

/// Children of `parent` that have not exec'd yet: they still carry the name of the thread that
/// created them (`gatewarden-child`, cut to 15 bytes by the kernel).
pub fn children_before_exec(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            matches!(stat_of(*pid), Some((state, ppid, name))
                if ppid == parent && name == "gatewarden-chil" && state != 'Z')
        })
        .collect()
}

/// One control request over the socket, timed: (answer line, how long it took).
pub fn control_request(path: &Path, request: &str) -> (String, Duration) {
    use std::io::BufRead as _;
    let started = Instant::now();
    let mut stream = std::os::unix::net::UnixStream::connect(path).expect("connect control");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    stream
        .write_all(format!("{request}\n").as_bytes())
        .expect("send request");
    let mut answer = String::new();
    std::io::BufReader::new(stream)
        .read_line(&mut answer)
        .expect("read answer");
    (answer, started.elapsed())
}

/// One timed HTTP GET: (status code, how long it took).
pub fn timed_http_get(port: u16, path: &str) -> (u16, Duration) {
    let started = Instant::now();
    let (code, _) = http_get(port, path);
    (code, started.elapsed())
}
