//! The soak's supervisor in a process of its own (issue 23): `gatewarden run` from the CLI binary
//! against the simulator, with the three faults an in-process supervisor cannot take:
//!
//! - **stop before exec** (K3): the gateway program is held by a file lease so the next spawn's
//!   `execve` waits, the gateway is killed, the respawned child is SIGSTOPped before exec and the
//!   lease released; the stuck spawn must be ended after `start.spawn_timeout_ms` and reported,
//!   and the supervisor must answer all along;
//! - **second supervisor** (K1): another `gatewarden run` on the same state directory and port
//!   with a different control socket must refuse (naming the holder) and leave the first's
//!   gateway alone;
//! - **supervisor SIGKILL + restart** (K4): with a grandchild in the gateway's group and a
//!   bystander (no state-dir marker) in the same group, the supervisor is SIGKILLed and started
//!   again on the same state directory: the grandchild must be ended and reported, the bystander
//!   left alone, and exactly one gateway run afterwards.
//!
//! The same continuous checks as for the in-process pairs: a `/proc` watcher counts live gateways
//! on the pair's port every few milliseconds (duplicates), every process carrying the state
//! directory's marker must be in the current gateway's group after every step and none after the
//! final stop (leaks), the bystander shows no unrelated process was signalled, and a prober
//! asks `status` on the control socket and `/healthz` every 50 ms while a supervisor is up
//! (control-plane latency). Everything here blocks, so it runs on a thread of its own and never
//! delays the in-process pairs' answers on the soak's runtime thread.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead as _, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::observe;
use crate::schedule::Rng;

/// The stuck-spawn bound of the pair's supervisor (`start.spawn_timeout_ms`): short, so a round
/// costs about a second, and far above a normal spawn on a busy machine.
const SPAWN_TIMEOUT_MS: u64 = 1_000;
/// The pair's supervisor settings besides the defaults, as `GATEWARDEN_*` overrides: the stuck
/// spawn bound, and (as for the in-process pairs) a short reconnect backoff and restart cooldown
/// with the give-up limits out of reach, so faults in a row cost a second each rather than the
/// default backoff's 30 s, and every fault must end in `running` again.
const SUPERVISOR_ENV: &[(&str, &str)] = &[
    // SPAWN_TIMEOUT_MS.
    ("GATEWARDEN_START__SPAWN_TIMEOUT_MS", "1000"),
    ("GATEWARDEN_START__RETRY_DELAY_MS", "100"),
    ("GATEWARDEN_RECONNECT__BASE_DELAY_MS", "20"),
    ("GATEWARDEN_RECONNECT__MAX_DELAY_MS", "400"),
    ("GATEWARDEN_RECONNECT__MAX_ATTEMPTS", "30"),
    ("GATEWARDEN_RECONNECT__STABLE_UPTIME_MS", "300"),
    ("GATEWARDEN_RECONNECT__INTENSITY_MAX_RESTARTS", "50"),
    ("GATEWARDEN_RECONNECT__INTENSITY_WINDOW_MS", "5000"),
    ("GATEWARDEN_RESTART__COOLDOWN_MS", "100"),
];
/// After each fault the gateway runs this long, past the stable uptime above, so the next fault
/// counts as isolated and the attempt count cannot climb without bound.
const SETTLE_AFTER_FAULT: Duration = Duration::from_millis(400);
/// How long the first gateway is watched after a second supervisor was refused (the bug this
/// guards against killed it within 5 s; the refused process has exited by then, so nothing of it
/// is left to act later).
const WATCH_AFTER_REFUSAL: Duration = Duration::from_secs(2);
/// Generous bound of every wait of this pair (start, recovery, exit): the machine has two
/// cores shared with the in-process pairs and other work.
const BOUND: Duration = Duration::from_secs(30);
/// A control-plane answer slower than this is a failure: a frozen supervisor (the bug of K3)
/// answers after the stuck spawn is released, seconds later; a busy 2-core machine can delay a
/// healthy one by some hundreds of milliseconds.
const PROBE_FAIL_AFTER: Duration = Duration::from_millis(1_000);
/// The target for `status` and `/healthz` under attack; answers above it are counted.
const PROBE_TARGET: Duration = Duration::from_millis(100);
/// The prober's period.
const PROBE_PERIOD: Duration = Duration::from_millis(50);
/// The `/proc` watcher's period: a duplicate gateway lives for seconds (until a heartbeat or an
/// orphan scan finds it), and listing `/proc` more often costs the machine the in-process pairs
/// share.
const WATCH_PERIOD: Duration = Duration::from_millis(10);
/// Kinds of the figures (and of `--only`).
pub const STOP_BEFORE_EXEC: &str = "cli: stop before exec";
pub const SECOND_SUPERVISOR: &str = "cli: second supervisor";
pub const KILL_AND_RESTART: &str = "cli: supervisor sigkill + restart";
pub const KINDS: [&str; 3] = [STOP_BEFORE_EXEC, SECOND_SUPERVISOR, KILL_AND_RESTART];

/// What the process pair measured.
#[derive(Debug, Default)]
pub struct CliFigures {
    pub faults_by_kind: BTreeMap<&'static str, u64>,
    pub supervisors_started: u64,
    pub stuck_spawns_reported: u64,
    /// Stuck spawns a newer start flow cancelled before the bound (killed and logged too).
    pub stuck_spawns_cancelled: u64,
    /// The longest a stopped-before-exec child lived after its SIGSTOP.
    pub max_stuck_ms: u64,
    pub refusals: u64,
    pub leftovers_ended: u64,
    pub bystanders_left_alone: u64,
    pub status_probes: u64,
    pub healthz_probes: u64,
    pub worst_status: Duration,
    pub worst_healthz: Duration,
    pub probes_over_target: u64,
    pub watcher_samples: u64,
    pub max_alive: usize,
    pub gateways_seen: usize,
    pub duplicates: usize,
    pub leak_checks: u64,
    /// The longest fault of each kind, from its injection to `running` again.
    pub slowest_by_kind: BTreeMap<&'static str, Duration>,
    pub elapsed: Duration,
}

/// The pair's outcome: its figures and what went wrong.
#[derive(Debug, Default)]
pub struct CliOutcome {
    pub figures: CliFigures,
    pub failures: Vec<String>,
}

/// The seeded order of `rounds` faults of each kind that `only` (a substring of a kind) admits.
pub fn schedule(seed: u64, rounds: u64, only: Option<&str>) -> Vec<&'static str> {
    let kinds: Vec<&'static str> = KINDS
        .iter()
        .copied()
        .filter(|kind| only.is_none_or(|only| kind.contains(only)))
        .collect();
    let mut faults: Vec<&'static str> = (0..rounds).flat_map(|_| kinds.clone()).collect();
    let mut rng = Rng::for_pair(seed, 0xc11);
    // Fisher-Yates with the seeded generator: the seed names the order.
    for index in (1..faults.len()).rev() {
        let other = rng.range(0, index as u64) as usize;
        faults.swap(index, other);
    }
    faults
}

/// Runs the process pair through `faults` on a thread of its own.
pub fn start(
    faults: Vec<&'static str>,
    gatewarden: PathBuf,
    sim: PathBuf,
    sim_args: &'static [&'static str],
) -> JoinHandle<CliOutcome> {
    std::thread::Builder::new()
        .name("soak-cli-pair".into())
        .spawn(move || {
            let started = Instant::now();
            let mut outcome = CliOutcome::default();
            match CliPair::new(gatewarden, &sim, sim_args) {
                Ok(mut pair) => {
                    pair.drive(&faults, &mut outcome);
                    pair.finish(&mut outcome);
                }
                Err(error) => outcome
                    .failures
                    .push(format!("cli pair: cannot set up: {error}")),
            }
            outcome.figures.elapsed = started.elapsed();
            outcome
        })
        .expect("spawn the cli pair thread")
}

// ---------------------------------------------------------------------------------------------
// The pair
// ---------------------------------------------------------------------------------------------

struct CliPair {
    gatewarden: PathBuf,
    home: tempfile::TempDir,
    state_dir: PathBuf,
    control: PathBuf,
    port: u16,
    http_port: u16,
    script: PathBuf,
    marker: String,
    supervisor: Option<Child>,
    /// Supervisors that were SIGKILLed (reaped) and the log of each start.
    logs: Vec<PathBuf>,
    prober: Prober,
    watcher: Watcher,
    /// Every gateway pid a status named, killed (with its group) at the end in case the
    /// supervisor under test did not.
    seen_gateways: Vec<u32>,
}

impl CliPair {
    fn new(gatewarden: PathBuf, sim: &Path, sim_args: &[&str]) -> std::io::Result<CliPair> {
        use std::os::unix::fs::PermissionsExt as _;
        let home = tempfile::Builder::new()
            .prefix("gatewarden-soak-cli-")
            .tempdir()?;
        let script = home.path().join("gateway.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nexec '{}' \"$@\" {}\n",
                sim.display(),
                sim_args.join(" ")
            ),
        )?;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
        let state_dir = home.path().join("state");
        let control = home.path().join("ctl").join("gw.sock");
        let port = gatewarden_tests::free_port();
        let http_port = gatewarden_tests::free_port();
        let marker = format!("GATEWARDEN_STATE_MARKER={}", state_dir.display());
        let prober = Prober::start(control.clone(), http_port);
        let watcher = Watcher::start(port);
        Ok(CliPair {
            gatewarden,
            home,
            state_dir,
            control,
            port,
            http_port,
            script,
            marker,
            supervisor: None,
            logs: Vec::new(),
            prober,
            watcher,
            seen_gateways: Vec::new(),
        })
    }

    /// A `gatewarden` command with a clean environment (no inherited `GATEWARDEN_*` or
    /// `OPENCLAW_*`), private XDG folders, and the parent-death signal so a dying soak takes it.
    fn command(&self) -> Command {
        let mut command = Command::new(&self.gatewarden);
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
        let home = self.home.path();
        command
            .env("XDG_RUNTIME_DIR", home.join("runtime"))
            .env("XDG_STATE_HOME", home.join("state-home"))
            .env("XDG_CACHE_HOME", home.join("cache"))
            .stdin(Stdio::null());
        // SAFETY: prctl with constant arguments is async-signal-safe and touches no memory.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                Ok(())
            });
        }
        command
    }

    /// Starts `gatewarden run` on the pair's state directory, port and control socket, and
    /// waits until it runs a ready gateway.
    fn start_supervisor(&mut self) -> Result<Value, String> {
        let log = self
            .home
            .path()
            .join(format!("run-{}.log", self.logs.len()));
        let file = std::fs::File::create(&log).map_err(|error| error.to_string())?;
        let stdout = file.try_clone().map_err(|error| error.to_string())?;
        let mut command = self.command();
        command
            .arg("run")
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--control")
            .arg(&self.control)
            .arg("--http")
            .arg(format!("127.0.0.1:{}", self.http_port))
            .env("GATEWARDEN_SIM_BIN", &self.script)
            .envs(SUPERVISOR_ENV.iter().copied())
            .stdout(stdout)
            .stderr(file)
            // Its own group, so the end of the soak can kill it and anything left in it.
            .process_group(0);
        let child = command
            .spawn()
            .map_err(|error| format!("spawn gatewarden run: {error}"))?;
        self.logs.push(log);
        self.supervisor = Some(child);
        let status = self.wait_running(None)?;
        self.prober.expect_up(true);
        Ok(status)
    }

    fn supervisor_pid(&self) -> u32 {
        self.supervisor.as_ref().map(Child::id).unwrap_or(0)
    }

    fn log(&self) -> String {
        self.logs
            .last()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .unwrap_or_default()
    }

    /// The status report, or `None` when nobody answers (yet).
    fn status(&mut self) -> Option<Value> {
        let (answer, _) = control_request(&self.control, &json!({"cmd": "status"}))?;
        let status = answer.get("ok")?.clone();
        if let Some(pid) = status["pid"].as_u64() {
            let pid = pid as u32;
            if !self.seen_gateways.contains(&pid) {
                self.seen_gateways.push(pid);
            }
        }
        Some(status)
    }

    /// Waits until the supervisor runs a ready gateway (other than `not`, when given).
    fn wait_running(&mut self, not: Option<u32>) -> Result<Value, String> {
        let began = Instant::now();
        let mut last = None;
        while began.elapsed() < BOUND {
            if let Some(child) = self.supervisor.as_mut() {
                if let Ok(Some(exit)) = child.try_wait() {
                    return Err(format!(
                        "gatewarden run exited ({exit}) while waiting for it to run:\n{}",
                        tail(&self.log())
                    ));
                }
            }
            if let Some(status) = self.status() {
                let pid = status["pid"].as_u64().map(|pid| pid as u32);
                if status["state"] == "running"
                    && status["gatewayReady"] == true
                    && pid.is_some()
                    && pid != not
                {
                    return Ok(status);
                }
                last = Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "not running with a ready gateway {} s after asked; last status {last:?}\n{}",
            BOUND.as_secs(),
            tail(&self.log())
        ))
    }

    fn drive(&mut self, faults: &[&'static str], outcome: &mut CliOutcome) {
        outcome.figures.supervisors_started += 1;
        if let Err(error) = self.start_supervisor() {
            outcome
                .failures
                .push(format!("cli pair: the first start: {error}"));
            return;
        }
        for (index, fault) in faults.iter().enumerate() {
            let began = Instant::now();
            let result = match *fault {
                STOP_BEFORE_EXEC => self.stop_before_exec(&mut outcome.figures),
                SECOND_SUPERVISOR => self.second_supervisor(&mut outcome.figures),
                _ => self.kill_and_restart(&mut outcome.figures),
            };
            *outcome.figures.faults_by_kind.entry(fault).or_default() += 1;
            let slowest = outcome.figures.slowest_by_kind.entry(fault).or_default();
            *slowest = (*slowest).max(began.elapsed());
            let result = result.and_then(|()| self.check_one_group(&mut outcome.figures));
            if let Err(error) = result {
                outcome
                    .failures
                    .push(format!("cli pair: fault {index} ({fault}): {error}"));
                return;
            }
            let violations = self.prober.take_violations();
            if !violations.is_empty() {
                outcome.failures.extend(violations);
                return;
            }
            std::thread::sleep(SETTLE_AFTER_FAULT);
        }
    }

    /// K3 as a fault: see the module documentation.
    fn stop_before_exec(&mut self, figures: &mut CliFigures) -> Result<(), String> {
        let status = self.wait_running(None)?;
        let gateway = pid_of(&status)?;
        let supervisor = self.supervisor_pid();
        // The lease is refused while anything has the script open (a shell still reading it);
        // the gateway has exec'd the simulator by the time it is ready, so this is rare.
        let lease = (0..50)
            .find_map(|_| {
                WriteLease::hold(&self.script).ok().or_else(|| {
                    std::thread::sleep(Duration::from_millis(20));
                    None
                })
            })
            .ok_or("cannot take a lease on the gateway script")?;
        // The supervisor still owns the gateway (a status just named it, and it does not reap
        // before it let go, K2), so the pid is not a stranger's.
        if kill(Pid::from_raw(gateway as i32), Signal::SIGKILL).is_err() {
            return Err(format!("gateway {gateway} gone before the SIGKILL"));
        }
        let child = wait_until(BOUND, || children_before_exec(supervisor).first().copied())
            .ok_or_else(|| {
                format!(
                "no respawn of the killed gateway {gateway} waiting before execve within {} s\n{}",
                BOUND.as_secs(),
                tail(&self.log())
            )
            })?;
        kill(Pid::from_raw(child as i32), Signal::SIGSTOP)
            .map_err(|error| format!("SIGSTOP {child}: {error}"))?;
        let stopped_at = Instant::now();
        wait_until(BOUND, || {
            matches!(observe::read_stat(child), Some(stat) if stat.state == 'T').then_some(())
        })
        .ok_or_else(|| format!("the child {child} did not stop"))?;
        drop(lease);
        // The prober asks status and /healthz meanwhile; the stuck spawn must end within the
        // spawn bound (and the machine's slack).
        wait_until(BOUND, || (!is_child_of(child, supervisor)).then_some(())).ok_or_else(|| {
            format!(
                "the child {child} stopped before exec was not ended {} s later\n{}",
                BOUND.as_secs(),
                tail(&self.log())
            )
        })?;
        let lived = stopped_at.elapsed();
        figures.max_stuck_ms = figures.max_stuck_ms.max(lived.as_millis() as u64);
        // Reported either as stuck (the spawn bound passed), or as cancelled when a newer flow
        // of the machine superseded that start first (the killed gateway's connection loss can
        // arrive after the spawn began): bounded and logged with its pid either way.
        let reported =
            format!("(pid {child}) did not start its program within {SPAWN_TIMEOUT_MS} ms");
        let cancelled = format!("pid={child}");
        let stuck = wait_until(Duration::from_secs(5), || {
            let log = self.log();
            if log.contains(&reported) {
                return Some(true);
            }
            log.lines()
                .any(|line| {
                    line.contains(&cancelled)
                        && line.contains("while the gateway was being spawned; killing")
                })
                .then_some(false)
        })
        .ok_or_else(|| {
            let log = self.log();
            let related: Vec<&str> = log
                .lines()
                .filter(|line| line.contains(&child.to_string()) || line.contains("did not start"))
                .collect();
            format!(
                "the stuck spawn of {child} was not reported ({reported:?}); lines naming it:\n{}\n{}",
                related.join("\n"),
                tail(&log)
            )
        })?;
        if stuck {
            figures.stuck_spawns_reported += 1;
        } else {
            figures.stuck_spawns_cancelled += 1;
        }
        self.wait_running(Some(gateway))?;
        Ok(())
    }

    /// K1 as a fault: see the module documentation.
    fn second_supervisor(&mut self, figures: &mut CliFigures) -> Result<(), String> {
        let status = self.wait_running(None)?;
        let gateway = pid_of(&status)?;
        let ticks = observe::read_stat(gateway).map(|stat| stat.start_ticks);
        let second_home = self.home.path().join("second");
        let mut second = self.command();
        second
            .arg("run")
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--control")
            .arg(second_home.join("second.sock"))
            .env("GATEWARDEN_SIM_BIN", &self.script)
            .env("XDG_RUNTIME_DIR", second_home.join("runtime"));
        let (code, message) = run_bounded(second, BOUND)?;
        if code != Some(1)
            || !message.contains(&format!("pid {}", self.supervisor_pid()))
            || !message.contains(&self.control.display().to_string())
        {
            return Err(format!(
                "the second supervisor did not refuse naming the first (pid {}, {}): exit \
                 {code:?}: {message}",
                self.supervisor_pid(),
                self.control.display()
            ));
        }
        figures.refusals += 1;
        let watch = Instant::now();
        while watch.elapsed() < WATCH_AFTER_REFUSAL {
            let status = self
                .status()
                .ok_or("the first supervisor stopped answering")?;
            if status["state"] != "running"
                || status["pid"].as_u64() != Some(u64::from(gateway))
                || observe::read_stat(gateway).map(|stat| stat.start_ticks) != ticks
            {
                return Err(format!(
                    "the first gateway {gateway} was touched after a second supervisor was \
                     refused: {status}"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// K4 as a fault: see the module documentation.
    fn kill_and_restart(&mut self, figures: &mut CliFigures) -> Result<(), String> {
        let status = self.wait_running(None)?;
        let gateway = pid_of(&status)?;
        let (reply, _) = control_request(
            &self.control,
            &json!({"cmd": "rpc", "method": "sim.fault",
                    "params": {"kind": "spawn-grandchild"}, "timeoutMs": 5_000}),
        )
        .ok_or("no answer to sim.fault spawn-grandchild")?;
        let grandchild = reply["ok"]["result"]["pid"]
            .as_u64()
            .map(|pid| pid as u32)
            .ok_or_else(|| format!("spawn-grandchild answered {reply}"))?;
        // A process in the gateway's group that is not ours: no marker in its environment.
        let mut bystander = Command::new("sleep");
        bystander
            .arg("300")
            .env_remove("GATEWARDEN_STATE_MARKER")
            .stdin(Stdio::null())
            .process_group(gateway as i32);
        let bystander = KillOnDrop(
            bystander
                .spawn()
                .map_err(|error| format!("bystander: {error}"))?,
        );
        let bystander_pid = bystander.0.id();

        self.prober.expect_up(false);
        let mut old = self.supervisor.take().ok_or("no supervisor")?;
        let _ = kill(Pid::from_raw(old.id() as i32), Signal::SIGKILL);
        let _ = old.wait();
        // The parent-death signal ends the gateway; the grandchild outlives it.
        wait_until(BOUND, || (!is_alive(gateway)).then_some(()))
            .ok_or_else(|| format!("the gateway {gateway} outlived its SIGKILLed supervisor"))?;
        figures.supervisors_started += 1;
        let status = self.start_supervisor()?;
        let ended = status["supervisor"]["leftoversEnded"]
            .as_array()
            .is_some_and(|ended| {
                ended
                    .iter()
                    .any(|pid| pid.as_u64() == Some(grandchild.into()))
            });
        if is_alive(grandchild) || !ended {
            return Err(format!(
                "the grandchild {grandchild} left by the killed supervisor was not ended and \
                 reported (alive {}): {status}",
                is_alive(grandchild)
            ));
        }
        figures.leftovers_ended += 1;
        if !is_alive(bystander_pid) {
            return Err(format!(
                "the bystander {bystander_pid} in the dead gateway's group (no marker) was \
                 signalled"
            ));
        }
        figures.bystanders_left_alone += 1;
        drop(bystander);
        Ok(())
    }

    /// Every process carrying the state directory's marker is in the current gateway's group
    /// (settling for a moment: a process being ended may still be listed).
    fn check_one_group(&mut self, figures: &mut CliFigures) -> Result<(), String> {
        figures.leak_checks += 1;
        let status = self.wait_running(None)?;
        let gateway = pid_of(&status)?;
        let mut strays = Vec::new();
        let settled = wait_until(Duration::from_secs(2), || {
            strays = marked_processes(&self.marker)
                .into_iter()
                .filter(|stat| stat.pgrp != gateway)
                .map(|stat| stat.pid)
                .collect();
            strays.is_empty().then_some(())
        });
        settled.ok_or_else(|| {
            format!(
                "processes of the state directory outside the gateway {gateway}'s group: \
                 {strays:?}"
            )
        })
    }

    /// The final stop: SIGTERM, exit 0, nothing of the state directory left; then the figures.
    fn finish(&mut self, outcome: &mut CliOutcome) {
        self.prober.expect_up(false);
        if let Some(mut child) = self.supervisor.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let exited = wait_until(BOUND, || child.try_wait().ok().flatten());
            match exited {
                Some(exit) if exit.success() => {}
                other => outcome.failures.push(format!(
                    "cli pair: gatewarden run after SIGTERM: {other:?}\n{}",
                    tail(&self.log())
                )),
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        outcome.figures.leak_checks += 1;
        let mut left = Vec::new();
        let gone = wait_until(Duration::from_secs(5), || {
            left = marked_processes(&self.marker);
            left.is_empty().then_some(())
        });
        if gone.is_none() {
            outcome.failures.push(format!(
                "cli pair: after the final stop, processes of the state directory left: {left:?}"
            ));
        }
        let probes = self.prober.finish();
        outcome.failures.extend(probes.violations.clone());
        let figures = &mut outcome.figures;
        figures.status_probes = probes.status_count;
        figures.healthz_probes = probes.healthz_count;
        figures.worst_status = probes.worst_status;
        figures.worst_healthz = probes.worst_healthz;
        figures.probes_over_target = probes.over_target;
        let watched = self.watcher.finish();
        figures.watcher_samples = watched.samples;
        figures.max_alive = watched.max_alive;
        figures.gateways_seen = watched.seen;
        figures.duplicates = watched.violations.len();
        outcome
            .failures
            .extend(watched.violations.into_iter().take(10));
    }
}

impl Drop for CliPair {
    fn drop(&mut self) {
        // Never rely on what is tested to clean up after the test.
        if let Some(mut child) = self.supervisor.take() {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in &self.seen_gateways {
            if is_alive(*pid) {
                let _ = killpg(Pid::from_raw(*pid as i32), Signal::SIGKILL);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The prober: the control plane answers while a supervisor is up
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Clone)]
struct Probes {
    status_count: u64,
    healthz_count: u64,
    worst_status: Duration,
    worst_healthz: Duration,
    over_target: u64,
    violations: Vec<String>,
}

struct Prober {
    up: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    probes: Arc<Mutex<Probes>>,
    thread: Option<JoinHandle<()>>,
}

impl Prober {
    fn start(control: PathBuf, http_port: u16) -> Prober {
        let up = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let probes = Arc::new(Mutex::new(Probes::default()));
        let thread = {
            let (up, stop, probes) = (up.clone(), stop.clone(), probes.clone());
            std::thread::Builder::new()
                .name("soak-cli-prober".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(PROBE_PERIOD);
                        if !up.load(Ordering::Relaxed) {
                            continue;
                        }
                        let status = control_request(&control, &json!({"cmd": "status"}));
                        let healthz = timed_healthz(http_port);
                        // A supervisor being SIGKILLed by the driver meanwhile is not a failure.
                        if !up.load(Ordering::Relaxed) {
                            continue;
                        }
                        let mut probes = probes.lock().expect("probes lock");
                        match status {
                            Some((answer, took)) if answer.get("ok").is_some() => {
                                probes.status_count += 1;
                                probes.worst_status = probes.worst_status.max(took);
                                probes.over_target += u64::from(took > PROBE_TARGET);
                                if took > PROBE_FAIL_AFTER {
                                    probes
                                        .violations
                                        .push(format!("cli pair: status answered after {took:?}"));
                                }
                            }
                            other => probes
                                .violations
                                .push(format!("cli pair: status not answered: {other:?}")),
                        }
                        match healthz {
                            Some((code, took)) if code != 0 => {
                                probes.healthz_count += 1;
                                probes.worst_healthz = probes.worst_healthz.max(took);
                                probes.over_target += u64::from(took > PROBE_TARGET);
                                if took > PROBE_FAIL_AFTER {
                                    probes.violations.push(format!(
                                        "cli pair: /healthz answered after {took:?}"
                                    ));
                                }
                            }
                            other => probes
                                .violations
                                .push(format!("cli pair: /healthz not answered: {other:?}")),
                        }
                    }
                })
                .expect("spawn the prober")
        };
        Prober {
            up,
            stop,
            probes,
            thread: Some(thread),
        }
    }

    fn expect_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
    }

    fn take_violations(&self) -> Vec<String> {
        std::mem::take(&mut self.probes.lock().expect("probes lock").violations)
    }

    fn finish(&mut self) -> Probes {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.probes.lock().expect("probes lock").clone()
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.finish();
    }
}

/// One control request, timed: (answer, how long it took); `None` when nobody answers.
fn control_request(path: &Path, request: &Value) -> Option<(Value, Duration)> {
    let began = Instant::now();
    let mut stream = UnixStream::connect(path).ok()?;
    stream.set_read_timeout(Some(BOUND)).ok()?;
    stream.set_write_timeout(Some(BOUND)).ok()?;
    stream.write_all(format!("{request}\n").as_bytes()).ok()?;
    let mut line = String::new();
    std::io::BufReader::new(stream).read_line(&mut line).ok()?;
    let answer = serde_json::from_str(&line).ok()?;
    Some((answer, began.elapsed()))
}

/// `GET /healthz`, timed: (status code, how long it took).
fn timed_healthz(port: u16) -> Option<(u16, Duration)> {
    let began = Instant::now();
    let (code, _) = gatewarden_tests::http(port, "GET", "/healthz", BOUND).ok()?;
    Some((code, began.elapsed()))
}

// ---------------------------------------------------------------------------------------------
// The watcher: at most one live gateway on the pair's port at any moment
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Watched {
    samples: u64,
    max_alive: usize,
    seen: usize,
    violations: Vec<String>,
}

struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Watched>>,
}

impl Watcher {
    /// Lists `/proc` every [`WATCH_PERIOD`]; each new pid is classified once (by its command
    /// line: `--port <port>`, not a doctor run, not `gatewarden` itself), a pid that vanished is
    /// forgotten (a reused pid must vanish first), and the live gateways are counted.
    fn start(port: u16) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("soak-cli-watcher".into())
                .spawn(move || {
                    let mut watched = Watched::default();
                    let mut known: HashMap<u32, bool> = HashMap::new();
                    let mut seen = std::collections::HashSet::new();
                    while !stop.load(Ordering::Relaxed) {
                        let Ok(entries) = std::fs::read_dir("/proc") else {
                            break;
                        };
                        let listed: Vec<u32> = entries
                            .flatten()
                            .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
                            .collect();
                        let present: std::collections::HashSet<u32> =
                            listed.iter().copied().collect();
                        known.retain(|pid, _| present.contains(pid));
                        let mut alive: Vec<(u32, u32)> = Vec::new();
                        for pid in listed {
                            let gateway = match known.get(&pid) {
                                Some(gateway) => *gateway,
                                None => match classify(pid, port) {
                                    Some(gateway) => {
                                        known.insert(pid, gateway);
                                        gateway
                                    }
                                    None => false,
                                },
                            };
                            if gateway {
                                if let Some(stat) = observe::read_stat(pid) {
                                    if !stat.exited() {
                                        alive.push((pid, stat.ppid));
                                    }
                                }
                            }
                        }
                        // A gateway's own fork (the simulator starting its grandchild, before that
                        // child's exec) shows the gateway's command line for a moment: a process
                        // whose parent is a gateway of the pair is part of that gateway.
                        let pids: Vec<u32> = alive.iter().map(|(pid, _)| *pid).collect();
                        let alive: Vec<u32> = alive
                            .iter()
                            .filter(|(_, parent)| !pids.contains(parent))
                            .map(|(pid, _)| *pid)
                            .collect();
                        for pid in &alive {
                            if let Some(stat) = observe::read_stat(*pid) {
                                seen.insert((*pid, stat.start_ticks));
                            }
                        }
                        watched.samples += 1;
                        watched.max_alive = watched.max_alive.max(alive.len());
                        if alive.len() > 1 && watched.violations.len() < 100 {
                            let described: Vec<String> =
                                alive.iter().map(|pid| describe(*pid)).collect();
                            watched.violations.push(format!(
                                "cli pair: {} gateways alive at once on port {port}: {}",
                                alive.len(),
                                described.join("; ")
                            ));
                        }
                        std::thread::sleep(WATCH_PERIOD);
                    }
                    watched.seen = seen.len();
                    watched
                })
                .expect("spawn the watcher")
        };
        Watcher {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(&mut self) -> Watched {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|thread| thread.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.finish();
    }
}

/// `pid` as a failure message names it: its `/proc` stat line and command line.
fn describe(pid: u32) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| String::from_utf8_lossy(&bytes).replace('\0', " "))
        .unwrap_or_default();
    let stat: String = stat
        .split_whitespace()
        .take(8)
        .collect::<Vec<_>>()
        .join(" ");
    format!("{pid} [{stat}] {cmdline}")
}

/// Is `pid` a gateway on `port`? `None` while it cannot tell yet: a child of `gatewarden`
/// before its `execve` still shows the supervisor's command line (which names the port too), so
/// it is asked again at the next sample.
fn classify(pid: u32, port: u16) -> Option<bool> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    if comm.trim_end() == "gatewarden-chil" {
        return None;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = cmdline.split(|byte| *byte == 0).collect();
    let program = args.first().copied().unwrap_or_default();
    if program.ends_with(b"/gatewarden") || program == b"gatewarden" {
        return Some(false);
    }
    if args.iter().any(|arg| *arg == b"doctor") {
        return Some(false);
    }
    let port = port.to_string();
    Some(
        args.windows(2)
            .any(|pair| pair[0] == b"--port" && pair[1] == port.as_bytes()),
    )
}

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/// Polls `check` every 10 ms until it gives a value, for at most `bound`.
fn wait_until<T>(bound: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let began = Instant::now();
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if began.elapsed() > bound {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn pid_of(status: &Value) -> Result<u32, String> {
    status["pid"]
        .as_u64()
        .map(|pid| pid as u32)
        .ok_or_else(|| format!("a running status without a pid: {status}"))
}

fn is_alive(pid: u32) -> bool {
    observe::read_stat(pid).is_some_and(|stat| !stat.exited())
}

fn is_child_of(pid: u32, parent: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let rest = &stat[stat.rfind(')')? + 2..];
            let mut fields = rest.split_whitespace();
            let state = fields.next()?;
            let ppid: u32 = fields.next()?.parse().ok()?;
            Some(ppid == parent && state != "Z")
        })
        .unwrap_or(false)
}

/// Children of `parent` that have not exec'd yet: they still carry the name of the thread that
/// created them (`gatewarden-child`, cut to 15 bytes by the kernel). Read from the `children`
/// lists of `parent`'s threads (a child belongs to the thread that cloned it), not from a scan
/// of all of `/proc`, which this is polled for.
fn children_before_exec(parent: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{parent}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|pid| pid.parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .filter(|pid| is_child_of(*pid, parent))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim_end() == "gatewarden-chil")
        })
        .collect()
}

/// Live processes whose environment holds `marker`.
fn marked_processes(marker: &str) -> Vec<observe::ProcStat> {
    let me = std::process::id();
    observe::all_processes()
        .into_iter()
        .filter(|stat| stat.pid != me && !stat.exited())
        .filter(|stat| observe::environ_has(stat.pid, marker.as_bytes()))
        .collect()
}

/// Runs `command` to its end (stderr captured), killing it after `bound`.
fn run_bounded(mut command: Command, bound: Duration) -> Result<(Option<i32>, String), String> {
    let mut child = KillOnDrop(
        command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| format!("spawn the second supervisor: {error}"))?,
    );
    let exit = wait_until(bound, || child.0.try_wait().ok().flatten())
        .ok_or_else(|| format!("the second supervisor still ran after {bound:?}"))?;
    let mut text = String::new();
    if let Some(mut stderr) = child.0.stderr.take() {
        let _ = stderr.read_to_string(&mut text);
    }
    Ok((exit.code(), text))
}

/// The last lines of a log, for a failure message.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// A child process killed when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A write lease on a file (`fcntl(F_SETLEASE, F_WRLCK)`): until it is dropped, anyone else's
/// `open` of the file (an `execve` of it included) waits in the kernel, as on a hung file system.
struct WriteLease(#[allow(dead_code)] std::fs::File);

impl WriteLease {
    /// Takes the lease on `path`; fails while anything else has the file open. SIGIO, which the
    /// kernel sends the holder when someone wants the file, is ignored in this process.
    fn hold(path: &Path) -> std::io::Result<WriteLease> {
        use std::os::fd::AsRawFd as _;
        // SAFETY: setting a signal's disposition to ignore has no memory preconditions.
        unsafe { libc::signal(libc::SIGIO, libc::SIG_IGN) };
        let file = std::fs::File::open(path)?;
        // SAFETY: fcntl on a descriptor we own.
        let taken = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLEASE, libc::F_WRLCK) };
        if taken != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(WriteLease(file))
    }
}
