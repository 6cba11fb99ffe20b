//! The docs run as written: every fenced block in `README.md` and `docs/*.md` is marked in its
//! info string as `runnable` (run here), `runnable=install` (the README's install line, run by
//! `readme_install.rs`) or `illustrative` (not run); `text` and `mermaid` blocks are output and
//! diagrams, not examples, and need no mark.
//!
//! - ```` ```sh runnable ````: the block runs with `sh -e` against a `gatewarden run` of the
//!   bundled simulator, exactly as a reader types it in a second terminal: `gatewarden` on
//!   `PATH`, no flags. The instance is found the default way (the port from `GATEWARDEN_PORT`, a
//!   free one, and the control socket under a private `XDG_RUNTIME_DIR`), so nothing in the block
//!   is rewritten. Each block gets a fresh instance, started and ready before the block runs.
//! - ```` ```toml runnable ````: written to a file and loaded with
//!   `gatewarden config print --config FILE`, which must succeed.

mod support;

use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// Marks that say what happens to a block.
const RUNNABLE: &str = "runnable";
const INSTALL: &str = "runnable=install";
const ILLUSTRATIVE: &str = "illustrative";
/// Blocks in these languages are output or pictures, not examples.
const UNMARKED_LANGUAGES: &[&str] = &["text", "mermaid"];

/// One fenced block.
#[derive(Debug)]
struct Block {
    /// `README.md:23`.
    place: String,
    /// The first word of the info string.
    language: String,
    /// The other words.
    marks: Vec<String>,
    body: String,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `README.md` and `docs/*.md` (not `docs/spec/`, the specification's own copy).
fn doc_files() -> Vec<PathBuf> {
    let root = repo_root();
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("read docs/")
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    files.sort();
    files.insert(0, root.join("README.md"));
    files
}

/// The fenced blocks of one Markdown file (``` or ~~~ fences, indented or not).
fn blocks(path: &Path) -> Vec<Block> {
    let text = std::fs::read_to_string(path).expect("read a doc file");
    let name = path
        .strip_prefix(repo_root())
        .unwrap_or(path)
        .display()
        .to_string();
    let mut found = Vec::new();
    let mut open: Option<(String, usize, String, Vec<String>)> = None;
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let fence: String = trimmed
            .chars()
            .take_while(|c| *c == '`' || *c == '~')
            .collect();
        let is_fence = fence.len() >= 3 && fence.chars().all(|c| c == fence.as_bytes()[0] as char);
        match &mut open {
            None if is_fence => {
                let info = trimmed[fence.len()..].trim().to_string();
                open = Some((fence, index + 1, info, Vec::new()));
            }
            None => {}
            Some((opening, _, _, _))
                if is_fence && trimmed.trim_end() == fence && fence.len() >= opening.len() =>
            {
                let (_, line, info, body) = open.take().expect("open block");
                let mut words = info.split_whitespace().map(String::from);
                found.push(Block {
                    place: format!("{name}:{line}"),
                    language: words.next().unwrap_or_default(),
                    marks: words.collect(),
                    body: body.join("\n"),
                });
            }
            Some((_, _, _, body)) => body.push(line.to_string()),
        }
    }
    assert!(open.is_none(), "{name}: a fenced block is never closed");
    found
}

fn all_blocks() -> Vec<Block> {
    doc_files().iter().flat_map(|path| blocks(path)).collect()
}

fn has(block: &Block, mark: &str) -> bool {
    block.marks.iter().any(|m| m == mark)
}

#[test]
fn docs_every_fenced_block_is_runnable_or_illustrative() {
    let blocks = all_blocks();
    let mut problems = Vec::new();
    for block in &blocks {
        let marks = [RUNNABLE, INSTALL, ILLUSTRATIVE]
            .into_iter()
            .filter(|mark| has(block, mark))
            .count();
        if marks == 0 && !UNMARKED_LANGUAGES.contains(&block.language.as_str()) {
            problems.push(format!(
                "{}: ```{} needs `{RUNNABLE}` (run by this test) or `{ILLUSTRATIVE}` after the language",
                block.place, block.language
            ));
        }
        if marks > 1 {
            problems.push(format!("{}: more than one mark", block.place));
        }
        if has(block, RUNNABLE) && !["sh", "toml"].contains(&block.language.as_str()) {
            problems.push(format!(
                "{}: only sh and toml blocks can be runnable",
                block.place
            ));
        }
        if has(block, RUNNABLE)
            && block.language == "sh"
            && block
                .body
                .lines()
                .any(|line| line.trim().starts_with("gatewarden run"))
        {
            problems.push(format!(
                "{}: a runnable block cannot start `gatewarden run` (the test provides one)",
                block.place
            ));
        }
    }
    let installs: Vec<&Block> = blocks.iter().filter(|block| has(block, INSTALL)).collect();
    if installs.len() != 1 || !installs[0].place.starts_with("README.md:") {
        problems.push(format!(
            "exactly one `{INSTALL}` block, in README.md, is expected: {installs:?}"
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The test below must have something to run.
    let runnable = |language: &str| {
        blocks
            .iter()
            .filter(|block| has(block, RUNNABLE) && block.language == language)
            .count()
    };
    assert!(
        runnable("sh") >= 2,
        "README and docs/cli.md have runnable commands"
    );
    assert!(runnable("toml") >= 1, "docs/cli.md has a runnable config");
}

/// A private place to run docs commands: `gatewarden` on `PATH`, XDG folders and HOME inside.
struct Sandbox {
    dir: tempfile::TempDir,
    port: u16,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().expect("temp dir");
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).expect("bin dir");
        std::os::unix::fs::symlink(support::gatewarden(), bin.join("gatewarden"))
            .expect("link gatewarden into bin");
        for sub in ["home", "work"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("sandbox folder");
        }
        Sandbox {
            dir,
            port: support::free_port(),
        }
    }

    /// `program` with the sandbox's environment (nothing inherited that could change what
    /// gatewarden does) and a null stdin.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let root = self.dir.path();
        let mut command = Command::new(program);
        command.env_clear();
        for name in ["LANG", "LC_ALL", "TERM", "TMPDIR"] {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![root.join("bin")];
        paths.extend(std::env::split_paths(&path));
        command
            .env("PATH", std::env::join_paths(paths).expect("PATH"))
            .env("HOME", root.join("home"))
            .env("XDG_RUNTIME_DIR", root.join("runtime"))
            .env("XDG_STATE_HOME", root.join("state"))
            .env("XDG_CACHE_HOME", root.join("cache"))
            .env("GATEWARDEN_PORT", self.port.to_string())
            .current_dir(root.join("work"))
            .stdin(Stdio::null());
        command
    }

    fn gatewarden(&self, args: &[&str]) -> Output {
        self.command("gatewarden")
            .args(args)
            .output()
            .expect("run gatewarden")
    }

    fn status(&self) -> Option<Value> {
        let output = self.gatewarden(&["status", "--json"]);
        output
            .status
            .success()
            .then(|| serde_json::from_slice(&output.stdout).ok())
            .flatten()
    }
}

/// `gatewarden run` in the sandbox, killed with its process group when dropped; the gateways it
/// was seen to own are killed too.
struct Run {
    child: Child,
    gateways: Vec<u32>,
    log: PathBuf,
}

impl Run {
    fn start(sandbox: &Sandbox, number: usize) -> Run {
        let log = sandbox.dir.path().join(format!("run-{number}.log"));
        let file = File::create(&log).expect("log");
        let child = sandbox
            .command("gatewarden")
            .arg("run")
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .process_group(0)
            .spawn()
            .expect("spawn gatewarden run");
        Run {
            child,
            gateways: Vec::new(),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until the gateway runs and is ready (starting it if it stopped).
    fn ensure_running(&mut self, sandbox: &Sandbox) {
        let started = Instant::now();
        let mut asked = false;
        while started.elapsed() < support::DEADLINE {
            if let Some(status) = sandbox.status() {
                if let Some(pid) = status["pid"].as_u64().and_then(|p| u32::try_from(p).ok()) {
                    if !self.gateways.contains(&pid) {
                        self.gateways.push(pid);
                    }
                }
                if status["state"] == "running" && status["gatewayReady"] == true {
                    return;
                }
                if !asked && ["stopped", "error"].contains(&status["state"].as_str().unwrap_or(""))
                {
                    sandbox.gatewarden(&["start"]);
                    asked = true;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the docs instance did not run\n{}", self.log());
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in &self.gateways {
            if support::is_alive(*pid) {
                let _ = killpg(Pid::from_raw(*pid as i32), Signal::SIGKILL);
            }
        }
    }
}

/// Run `command` to completion within [`support::DEADLINE`] (killed after it).
fn output_within_deadline(mut command: Command) -> Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn");
    let started = Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if started.elapsed() > support::DEADLINE {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect output")
}

#[test]
fn docs_runnable_examples_work_against_the_simulator() {
    let blocks = all_blocks();
    let sandbox = Sandbox::new();
    let mut run: Option<Run> = None;
    let mut runs = 0;
    let mut ran = 0;
    for block in blocks.iter().filter(|block| has(block, RUNNABLE)) {
        let output = match block.language.as_str() {
            "sh" => {
                // A fresh instance per block: blocks are read on their own, and one block's
                // `restart` must not meet the restart governor's cooldown left by another's.
                drop(run.take());
                runs += 1;
                run = Some(Run::start(&sandbox, runs));
                let instance = run.as_mut().expect("started above");
                instance.ensure_running(&sandbox);
                let mut shell = sandbox.command("sh");
                shell.arg("-e").arg("-c").arg(&block.body);
                output_within_deadline(shell)
            }
            "toml" => {
                let file = sandbox.dir.path().join("work").join("example.toml");
                std::fs::write(&file, &block.body).expect("write the example");
                let mut print = sandbox.command("gatewarden");
                print.args(["config", "print", "--config"]).arg(&file);
                output_within_deadline(print)
            }
            other => panic!("{}: cannot run a {other} block", block.place),
        };
        assert!(
            output.status.success(),
            "{} failed ({}):\n{}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- gatewarden run ---\n{}",
            block.place,
            output.status,
            block.body,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            run.as_ref().map(Run::log).unwrap_or_default(),
        );
        ran += 1;
    }
    assert!(ran >= 3, "ran {ran} blocks");
}
