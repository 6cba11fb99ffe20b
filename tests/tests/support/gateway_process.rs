//! A gateway process started by a test itself, not by the supervisor: the real OpenClaw gateway
//! or the simulator, in its own process group, with a private HOME, CWD and port, and tied to
//! the test process with `PR_SET_PDEATHSIG` so that not even a killed test run leaves one behind.
//! Shared by `sim_crosscheck.rs` and `interop_openclaw.rs`.
// Each test binary that includes this module uses only part of it.
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use gatewarden_tests::{free_port, http};

/// Variables that change a gateway's behaviour and must not leak in from the test runner.
pub const SCRUBBED_ENV: &[&str] = &[
    "OPENCLAW_GATEWAY_TOKEN",
    "OPENCLAW_GATEWAY_PASSWORD",
    "OPENCLAW_GATEWAY_PORT",
    "OPENCLAW_CONFIG_PATH",
    "OPENCLAW_STATE_DIR",
    "OPENCLAW_HOME",
    "OPENCLAW_PROFILE",
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
    "NODE_OPTIONS",
];

type SpawnJob = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns on one thread that lives as long as the process, with `PR_SET_PDEATHSIG = SIGKILL`:
/// the kernel kills the child when *the spawning thread* dies, so a dedicated thread makes that
/// mean "when the test process dies", even by SIGKILL or Ctrl-C, when no destructor runs.
fn spawn_tied(mut command: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (jobs_tx, jobs_rx) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("gateway-spawner".into())
            .spawn(move || {
                for (mut command, reply) in jobs_rx {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("spawner thread");
        Mutex::new(jobs_tx)
    });
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls (prctl, getppid, raise) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            if libc::getppid() != parent {
                libc::raise(libc::SIGKILL);
            }
            Ok(())
        });
    }
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .send((command, reply_tx))
        .expect("spawner alive");
    reply_rx.recv().expect("spawner replied")
}

/// A gateway (real or simulated) in its own process group with a private HOME, state dir, CWD
/// and port. Drop sends SIGTERM to the group, waits up to 10 s, then SIGKILLs the group and reaps.
pub struct GatewayProcess {
    pub name: String,
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
    exited: Option<std::process::ExitStatus>,
}

impl GatewayProcess {
    /// Spawns `program args... --port <free> --bind loopback --auth token --allow-unconfigured`
    /// with `OPENCLAW_GATEWAY_TOKEN=token`. stdout/stderr go to files in the private dir.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[&str],
        token: &str,
        extra_env: &[(&str, &str)],
    ) -> GatewayProcess {
        GatewayProcess::spawn_on(name, program, args, token, extra_env, free_port())
    }

    /// As [`GatewayProcess::spawn`], on a port the caller chose.
    pub fn spawn_on(
        name: &str,
        program: &Path,
        args: &[&str],
        token: &str,
        extra_env: &[(&str, &str)],
        port: u16,
    ) -> GatewayProcess {
        let dir = tempfile::Builder::new()
            .prefix(&format!("gatewarden-{name}-"))
            .tempdir()
            .expect("tempdir");
        let state = dir.path().join("state");
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(&state).expect("state dir");
        std::fs::create_dir_all(&tmp).expect("tmp dir");
        let log = |file: &str| std::fs::File::create(dir.path().join(file)).expect("log file");
        let mut command = Command::new(program);
        command
            .args(args)
            .args(["--port", &port.to_string()])
            .args([
                "--bind",
                "loopback",
                "--auth",
                "token",
                "--allow-unconfigured",
            ]);
        for variable in SCRUBBED_ENV {
            command.env_remove(variable);
        }
        command
            .env("HOME", dir.path())
            .env("OPENCLAW_STATE_DIR", &state)
            .env("TMPDIR", &tmp)
            .env("OPENCLAW_GATEWAY_TOKEN", token)
            .envs(extra_env.iter().copied())
            // The gateway reads `.env` from its CWD: give it an empty one.
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log("stdout.log"))
            .stderr(log("stderr.log"))
            .process_group(0);
        let child = spawn_tied(command)
            .unwrap_or_else(|error| panic!("spawn {name} ({}): {error}", program.display()));
        GatewayProcess {
            name: name.to_string(),
            port,
            child,
            dir,
            exited: None,
        }
    }

    /// Everything the gateway wrote to stdout so far (its log, with `--verbose` its WebSocket
    /// log too), ANSI colours included.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default()
    }

    /// Everything the gateway wrote to stderr so far, ANSI colours included.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// The gateway's state dir (`OPENCLAW_STATE_DIR`); its config file is `openclaw.json` in it.
    pub fn state_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("state")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` once the process has exited.
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// The last `max` bytes of stdout and stderr, for failure messages.
    pub fn logs(&self, max: usize) -> String {
        let mut out = String::new();
        for file in ["stdout.log", "stderr.log"] {
            let text = std::fs::read_to_string(self.dir.path().join(file)).unwrap_or_default();
            let start = text.len().saturating_sub(max);
            let start = (start..text.len())
                .find(|i| text.is_char_boundary(*i))
                .unwrap_or(text.len());
            out.push_str(&format!(
                "--- {} {file} (last {max} bytes) ---\n{}\n",
                self.name,
                &text[start..]
            ));
        }
        out
    }

    /// Polls `/startupz` until it answers 200, calling `on_starting` once, the first time it
    /// answers 503 `"starting"` (the startup window). Fails early when the process exits.
    pub fn wait_started(
        &mut self,
        within: Duration,
        on_starting: &mut dyn FnMut(),
    ) -> Result<Duration, String> {
        let started = Instant::now();
        let mut seen_starting = false;
        loop {
            if let Some(status) = self.try_exit() {
                return Err(format!("{} exited early ({status})", self.name));
            }
            match http(self.port, "GET", "/startupz", Duration::from_secs(5)) {
                Ok((200, _)) => return Ok(started.elapsed()),
                Ok((503, body)) if !seen_starting && body.contains("\"starting\"") => {
                    seen_starting = true;
                    on_starting();
                    continue;
                }
                _ => {}
            }
            if started.elapsed() > within {
                return Err(format!(
                    "{} did not answer /startupz 200 within {within:?}",
                    self.name
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM to the process group, up to `grace` for the leader to exit, then SIGKILL the group.
    pub fn stop(&mut self, grace: Duration) {
        let group = self.child.id() as libc::pid_t;
        if self.try_exit().is_none() {
            // SAFETY: signalling the process group this guard created (process_group(0)).
            unsafe { libc::kill(-group, libc::SIGTERM) };
            let deadline = Instant::now() + grace;
            while self.try_exit().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // Whatever is left in the group (also after a clean exit of the leader).
        // SAFETY: as above; a vanished group just gives ESRCH.
        unsafe { libc::kill(-group, libc::SIGKILL) };
        if self.exited.is_none() {
            self.exited = self.child.wait().ok();
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(10));
    }
}
