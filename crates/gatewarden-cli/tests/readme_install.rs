//! The README, followed from a fresh install: its `runnable=install` line (`cargo install … &&
//! gatewarden run`) is run into an empty `--root`, then, with only that root's `bin` added to
//! `PATH`, the README's runnable client commands (status, rpc, restart, reload, stop) against
//! that `gatewarden run` while `gatewarden events --json` follows it from a third "terminal",
//! then Ctrl-C, which must stop it cleanly, end the event stream, and leave no gateway behind.
//!
//! The install command is the README's, with four additions that change where and how it builds,
//! not what it installs: `--root <temp dir>` (never the user's `~/.cargo/bin`), `--offline`
//! (tests do not reach the network; the lock file's crates are already fetched by the build that
//! runs this test), `--target-dir` set to this test's own target dir, and the test's profile
//! (`--debug` under `cargo test`): the build then reuses what `cargo test` has just compiled, a few
//! seconds, where a cold release build of the dependency graph takes minutes of a 2-core CI
//! machine. It is still a real `cargo install` of the package at that path, with its lock file.

mod support;

use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use serde_json::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The README's fenced blocks whose info string carries `mark`, with their bodies.
fn readme_blocks(mark: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let mut blocks = Vec::new();
    // Inside a block: `Some(body)` when it carries the mark, `None` when it does not.
    let mut inside: Option<Option<Vec<&str>>> = None;
    for line in readme.lines() {
        let fence = line.starts_with("```");
        match inside.take() {
            None if fence => {
                let marked = line.split_whitespace().skip(1).any(|word| word == mark);
                inside = Some(marked.then(Vec::new));
            }
            None => {}
            Some(body) if fence => blocks.extend(body.map(|body| body.join("\n"))),
            Some(mut body) => {
                if let Some(body) = body.as_mut() {
                    body.push(line);
                }
                inside = Some(body);
            }
        }
    }
    blocks
}

/// The target dir and the profile the test binary was built with.
fn target_and_profile() -> (PathBuf, String) {
    let binary = support::gatewarden();
    let profile_dir = binary.parent().expect("profile dir");
    let profile = profile_dir
        .file_name()
        .and_then(|name| name.to_str())
        .expect("profile name")
        .to_string();
    let target = profile_dir.parent().expect("target dir").to_path_buf();
    (target, profile)
}

/// `program` with a clean environment: PATH = `bin` first, then the system's; private HOME and
/// XDG folders; the instance on `port` through `GATEWARDEN_PORT`.
fn command(program: impl AsRef<std::ffi::OsStr>, root: &Path, bin: &Path, port: u16) -> Command {
    let mut command = Command::new(program);
    command.env_clear();
    let system_path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![bin.to_path_buf()];
    paths.extend(std::env::split_paths(&system_path));
    command
        .env("PATH", std::env::join_paths(paths).expect("PATH"))
        .env("HOME", root.join("home"))
        .env("XDG_RUNTIME_DIR", root.join("runtime"))
        .env("XDG_STATE_HOME", root.join("state"))
        .env("XDG_CACHE_HOME", root.join("cache"))
        .env("GATEWARDEN_PORT", port.to_string())
        .current_dir(root.join("home"))
        .stdin(Stdio::null());
    command
}

#[test]
fn readme_install_then_run_status_rpc_stop_from_a_fresh_root() {
    let installs = readme_blocks("runnable=install");
    assert_eq!(installs.len(), 1, "README.md has one install block");
    let line = installs[0].trim();
    let (install, run) = line
        .split_once(" && ")
        .expect("the install block is `cargo install … && gatewarden run`");
    assert_eq!(run.trim(), "gatewarden run", "{line}");
    let install_args: Vec<&str> = install.split_whitespace().collect();
    assert_eq!(&install_args[..2], ["cargo", "install"], "{line}");

    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    std::fs::create_dir_all(root.join("home")).expect("home");
    let install_root = root.join("install");
    let (target, profile) = target_and_profile();

    // 1. The README's install, into the empty root.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cargo_install = Command::new(&cargo);
    cargo_install
        .args(&install_args[1..])
        .arg("--root")
        .arg(&install_root)
        .arg("--offline")
        .arg("--target-dir")
        .arg(&target)
        .current_dir(repo_root());
    match profile.as_str() {
        "debug" => {
            cargo_install.arg("--debug");
        }
        "release" => {}
        other => {
            cargo_install.args(["--profile", other]);
        }
    }
    let started = Instant::now();
    let output = cargo_install.output().expect("run cargo install");
    assert!(
        output.status.success(),
        "cargo install failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let bin = install_root.join("bin");
    assert!(
        bin.join("gatewarden").is_file(),
        "cargo install put gatewarden in {}",
        bin.display()
    );
    eprintln!("cargo install took {:?}", started.elapsed());

    // 2. `gatewarden run`, found on PATH in the installed root only.
    let port = support::free_port();
    let log = root.join("run.log");
    let file = File::create(&log).expect("log");
    let mut run = KillGroupOnDrop(
        command("gatewarden", root, &bin, port)
            .arg("run")
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .process_group(0)
            .spawn()
            .expect("gatewarden run from the installed root"),
    );
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    let status = || -> Option<Value> {
        let output = command("gatewarden", root, &bin, port)
            .args(["status", "--json"])
            .output()
            .ok()?;
        serde_json::from_slice(&output.stdout).ok()
    };
    let started = Instant::now();
    let running = loop {
        if let Some(status) = status() {
            if status["state"] == "running" && status["gatewayReady"] == true {
                break status;
            }
        }
        if started.elapsed() > support::DEADLINE {
            let _ = killpg(Pid::from_raw(run.0.id() as i32), Signal::SIGKILL);
            panic!("the installed gatewarden did not get running\n{}", logs());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let gateway = running["pid"].as_u64().expect("gateway pid") as u32;

    // The README's `gatewarden events --json`, following the instance from its own "terminal".
    let events_log = root.join("events.log");
    let mut events = KillGroupOnDrop(
        command("gatewarden", root, &bin, port)
            .args(["events", "--json"])
            .stdout(File::create(&events_log).expect("events log"))
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("gatewarden events from the installed root"),
    );
    let event_lines = || -> Vec<Value> {
        std::fs::read_to_string(&events_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    };
    support::eventually("gatewarden events to print its snapshot", || {
        event_lines()
            .first()
            .is_some_and(|first| first["kind"] == "snapshot")
    });

    // 3. The README's client commands, as written, in another "terminal".
    let clients = readme_blocks("runnable");
    assert!(
        !clients.is_empty(),
        "README.md has runnable client commands"
    );
    for block in &clients {
        let output = command("sh", root, &bin, port)
            .arg("-e")
            .arg("-c")
            .arg(block)
            .output()
            .expect("run the README's commands");
        assert!(
            output.status.success(),
            "{block}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- gatewarden run ---\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            logs()
        );
    }

    // 4. Ctrl-C: a clean exit, and no gateway left behind.
    kill(Pid::from_raw(run.0.id() as i32), Signal::SIGINT).expect("SIGINT");
    let started = Instant::now();
    let exit = loop {
        if let Some(exit) = run.0.try_wait().expect("try_wait") {
            break exit;
        }
        if started.elapsed() > support::DEADLINE {
            let _ = killpg(Pid::from_raw(run.0.id() as i32), Signal::SIGKILL);
            panic!("gatewarden run did not stop on Ctrl-C\n{}", logs());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(exit.code(), Some(0), "{}", logs());
    support::eventually("the first gateway to be gone", || {
        !support::is_alive(gateway)
    });

    // The event stream saw what the commands did and ended with the instance.
    let started = Instant::now();
    let events_exit = loop {
        if let Some(exit) = events.0.try_wait().expect("try_wait") {
            break exit;
        }
        assert!(
            started.elapsed() < support::DEADLINE,
            "gatewarden events did not end with the instance"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(events_exit.success(), "gatewarden events: {events_exit:?}");
    let lines = event_lines();
    let states: Vec<&str> = lines
        .iter()
        .filter(|line| line["kind"] == "status")
        .filter_map(|line| line["status"]["state"].as_str())
        .collect();
    assert!(
        states.contains(&"starting") && states.contains(&"stopped"),
        "the restart and stop were streamed: {states:?}"
    );
    assert!(
        lines
            .last()
            .is_some_and(|last| last["end"] == "instanceStopped"),
        "the stream ends with the instance: {:?}",
        lines.last()
    );
}

/// `gatewarden run` and its process group, killed if the test ends early.
struct KillGroupOnDrop(std::process::Child);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = killpg(Pid::from_raw(self.0.id() as i32), Signal::SIGKILL);
            let _ = self.0.wait();
        }
    }
}
