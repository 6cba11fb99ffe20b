//! Shared fixtures of the process-layer tests: an event collector actor, a child guard that never
//! leaves a process behind, and polling helpers with generous deadlines for a busy 2-core machine.
// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::future::Future;
use std::process::Child;
use std::time::Duration;

use actix::prelude::*;
use gatewarden::launch::LaunchSpec;
use gatewarden::process::{
    OutputStream, ProcessActor, ProcessActorConfig, ProcessExited, ProcessOutput, Spawn,
    SpawnedProcess,
};
use tokio::sync::mpsc;

/// Upper bound for anything that should happen "soon". Generous: the machine is shared.
pub const SOON: Duration = Duration::from_secs(20);

/// Forwards everything the process actor reports into channels the test awaits.
pub struct Collector {
    lines: mpsc::UnboundedSender<ProcessOutput>,
    exits: mpsc::UnboundedSender<ProcessExited>,
}

impl Actor for Collector {
    type Context = Context<Self>;
}

impl Handler<ProcessOutput> for Collector {
    type Result = ();
    fn handle(&mut self, msg: ProcessOutput, _ctx: &mut Self::Context) {
        let _ = self.lines.send(msg);
    }
}

impl Handler<ProcessExited> for Collector {
    type Result = ();
    fn handle(&mut self, msg: ProcessExited, _ctx: &mut Self::Context) {
        let _ = self.exits.send(msg);
    }
}

/// What the test receives from the actor.
pub struct Events {
    pub lines: mpsc::UnboundedReceiver<ProcessOutput>,
    pub exits: mpsc::UnboundedReceiver<ProcessExited>,
}

impl Events {
    /// The next output line of `stream` (other streams' lines are skipped).
    pub async fn next_line(&mut self, stream: OutputStream) -> ProcessOutput {
        within(SOON, async {
            loop {
                let line = self.lines.recv().await.expect("collector alive");
                if line.stream == stream {
                    return line;
                }
            }
        })
        .await
    }

    /// Waits for a line equal to `text` on `stream`.
    pub async fn wait_for_line(&mut self, stream: OutputStream, text: &str) {
        within(SOON, async {
            loop {
                let line = self.lines.recv().await.expect("collector alive");
                if line.stream == stream && line.line == text {
                    return;
                }
            }
        })
        .await
    }

    /// The next exit event.
    pub async fn next_exit(&mut self) -> ProcessExited {
        within(SOON, async {
            self.exits.recv().await.expect("collector alive")
        })
        .await
    }

    /// Lines already received (call after the exit: the actor sends lines first).
    pub fn received_lines(&mut self, stream: OutputStream) -> Vec<ProcessOutput> {
        let mut lines = Vec::new();
        while let Ok(line) = self.lines.try_recv() {
            if line.stream == stream {
                lines.push(line);
            }
        }
        lines
    }
}

/// Starts a process actor reporting to a fresh collector.
pub fn start_actor(config: ProcessActorConfig) -> (Addr<ProcessActor>, Events) {
    let (line_sender, lines) = mpsc::unbounded_channel();
    let (exit_sender, exits) = mpsc::unbounded_channel();
    let collector = Collector {
        lines: line_sender,
        exits: exit_sender,
    }
    .start();
    let actor =
        ProcessActor::new(config, collector.clone().recipient(), collector.recipient()).start();
    (actor, Events { lines, exits })
}

/// `sh -c script`.
pub fn shell(script: &str) -> LaunchSpec {
    LaunchSpec::new("sh").arg("-c").arg(script)
}

/// Spawns and unwraps.
pub async fn spawn(actor: &Addr<ProcessActor>, spec: LaunchSpec) -> SpawnedProcess {
    actor
        .send(Spawn(spec))
        .await
        .expect("actor alive")
        .expect("spawn succeeds")
}

/// Awaits `future`, failing the test (with a clear message) after `limit`.
pub async fn within<T>(limit: Duration, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, future).await {
        Ok(value) => value,
        Err(_) => panic!("nothing happened within {limit:?}"),
    }
}

/// Polls `condition` every 20 ms until it holds, failing the test after `limit`.
pub async fn eventually(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not true within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// True while `/proc/<pid>` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    gatewarden::orphan::process_is_running(pid)
}

/// A child started with `std::process::Command` that is killed and reaped when the test ends, even
/// when it fails.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port that was free a moment ago (bound to port 0, then released).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local addr").port()
}

/// A write lease held on a file (`fcntl(F_SETLEASE, F_WRLCK)`): until it is dropped, or the
/// kernel's `lease-break-time` (45 s by default) passes, anyone else's `open` of the file blocks
/// in the kernel. An `execve` of the file opens it, so a spawn of it is stuck before `execve`
/// exactly as on a hung file system, with no special file system needed.
pub struct WriteLease(std::fs::File);

impl WriteLease {
    /// Takes the lease on `path` (a file nobody else has open). SIGIO, which the kernel sends the
    /// holder when someone wants the file, is ignored in this process.
    pub fn hold(path: &std::path::Path) -> WriteLease {
        use std::os::fd::AsRawFd as _;
        // SAFETY: setting a signal's disposition to ignore has no memory preconditions.
        unsafe { libc::signal(libc::SIGIO, libc::SIG_IGN) };
        let file = std::fs::File::open(path).expect("open the file to lease");
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
