//! The process actor against real child processes (`sh`, `sleep`, `seq`): spawn, output, exit,
//! terminate, force-kill, signals, secrets and the owned-gateway record.

mod process_support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use actix::prelude::*;
use gatewarden::launch::{LaunchSpec, Secret, GATEWAY_TOKEN_ENV, REDACTED};
use gatewarden::orphan::process_group_members;
use gatewarden::process::{
    owned_record_path, read_owned_record, ForceKill, GetPid, OutputStream, ProcessActor,
    ProcessActorConfig, ProcessError, ProcessExited, ProcessOutput, SendSignal, Spawn, Terminate,
    TerminateOutcome, TerminateReply,
};
use nix::sys::signal::Signal;
use process_support::*;
use tokio::sync::mpsc;

/// Defaults, except a long output drain: on a loaded machine the readers may need more than the
/// default half second to see end of file, and tests read lines right after the exit event.
fn config() -> ProcessActorConfig {
    ProcessActorConfig {
        output_drain_ms: 10_000,
        ..ProcessActorConfig::default()
    }
}

#[actix_rt::test]
async fn x1_spawn_reports_pid_and_exit_code() {
    let (actor, mut events) = start_actor(config());
    let spawned = spawn(&actor, shell("echo hello; exit 7")).await;
    assert!(spawned.pid > 1);
    assert!(spawned.started_at_ticks.is_some());

    let line = events.next_line(OutputStream::Stdout).await;
    assert_eq!((line.pid, line.line.as_str()), (spawned.pid, "hello"));
    let exit = events.next_exit().await;
    assert_eq!(
        exit,
        ProcessExited {
            pid: spawned.pid,
            code: Some(7),
            signal: None,
            stop_requested: false,
            dropped_output_lines: 0,
        }
    );
}

#[actix_rt::test]
async fn x1_signal_death_is_reported_as_128_plus_signal() {
    let (actor, mut events) = start_actor(config());
    let spawned = spawn(&actor, shell("kill -KILL $$")).await;
    let exit = events.next_exit().await;
    assert_eq!(exit.pid, spawned.pid);
    assert_eq!((exit.code, exit.signal), (Some(137), Some(9)));
}

#[actix_rt::test]
async fn x1_captures_stderr_lines() {
    let (actor, mut events) = start_actor(config());
    spawn(
        &actor,
        shell("echo one >&2; echo >&2; echo two >&2; printf 'three, no newline' >&2"),
    )
    .await;
    // The exit is published after the lines, so everything is already here when it arrives.
    events.next_exit().await;
    let lines: Vec<String> = events
        .received_lines(OutputStream::Stderr)
        .into_iter()
        .map(|line| line.line)
        .collect();
    assert_eq!(lines, ["one", "", "two", "three, no newline"]);
}

#[actix_rt::test]
async fn x1_lines_longer_than_limit_are_truncated() {
    let (actor, mut events) = start_actor(ProcessActorConfig {
        max_line_bytes: 1024,
        ..config()
    });
    spawn(
        &actor,
        shell("head -c 5000 /dev/zero | tr '\\0' a; echo; echo next; printf '\\377ok\\n'"),
    )
    .await;
    let long = events.next_line(OutputStream::Stdout).await;
    assert_eq!(long.line, "a".repeat(1024));
    assert!(long.truncated);
    let next = events.next_line(OutputStream::Stdout).await;
    assert_eq!((next.line.as_str(), next.truncated), ("next", false));
    let invalid = events.next_line(OutputStream::Stdout).await;
    assert_eq!(
        invalid.line, "\u{fffd}ok",
        "invalid UTF-8 is converted lossily"
    );
    events.next_exit().await;
}

/// A recipient that takes 20 ms per line, on its own thread.
struct SlowCollector(mpsc::UnboundedSender<ProcessOutput>);

impl Actor for SlowCollector {
    type Context = Context<Self>;
}

impl Handler<ProcessOutput> for SlowCollector {
    type Result = ();
    fn handle(&mut self, msg: ProcessOutput, _ctx: &mut Self::Context) {
        std::thread::sleep(Duration::from_millis(20));
        let _ = self.0.send(msg);
    }
}

#[actix_rt::test]
async fn x1_slow_recipient_drops_lines_and_counts_them() {
    let arbiter = Arbiter::new();
    let (slow_sender, mut slow_lines) = mpsc::unbounded_channel();
    let slow =
        SlowCollector::start_in_arbiter(&arbiter.handle(), move |_| SlowCollector(slow_sender));
    let (exit_sender, mut exit_receiver) = mpsc::unbounded_channel();
    let exit_collector = ExitCollector(exit_sender).start();
    let actor = ProcessActor::new(
        ProcessActorConfig {
            output_queue_lines: 4,
            output_drain_ms: 20_000,
            ..config()
        },
        slow.recipient(),
        exit_collector.recipient(),
    )
    .start();

    spawn(&actor, shell("seq 1 2000")).await;
    let exit = within(SOON, exit_receiver.recv()).await.expect("exit");
    let mut delivered = Vec::new();
    while let Ok(line) = slow_lines.try_recv() {
        delivered.push(line);
    }
    assert!(
        exit.dropped_output_lines > 0,
        "a slow recipient must cost lines, not memory"
    );
    assert_eq!(delivered.len() as u64 + exit.dropped_output_lines, 2000);
    let reported: u64 = delivered.iter().map(|line| line.dropped_before).sum();
    assert!(reported <= exit.dropped_output_lines);
    let numbers: Vec<u32> = delivered
        .iter()
        .map(|line| line.line.parse().expect("a number"))
        .collect();
    assert!(
        numbers.windows(2).all(|pair| pair[0] < pair[1]),
        "order kept"
    );
    arbiter.stop();
}

struct ExitCollector(mpsc::UnboundedSender<ProcessExited>);

impl Actor for ExitCollector {
    type Context = Context<Self>;
}

impl Handler<ProcessExited> for ExitCollector {
    type Result = ();
    fn handle(&mut self, msg: ProcessExited, _ctx: &mut Self::Context) {
        let _ = self.0.send(msg);
    }
}

#[actix_rt::test]
async fn x1_spawn_failure_names_program_and_what_was_tried() {
    let (actor, _events) = start_actor(config());
    let by_path = actor
        .send(Spawn(LaunchSpec::new(
            "/nonexistent/gatewarden-test-no-such",
        )))
        .await
        .expect("actor alive")
        .expect_err("cannot spawn");
    assert!(matches!(by_path, ProcessError::SpawnFailed { .. }));
    let message = by_path.to_string();
    assert!(
        message.contains("/nonexistent/gatewarden-test-no-such"),
        "{message}"
    );
    assert!(message.contains("used as a path"), "{message}");

    let by_name = actor
        .send(Spawn(LaunchSpec::new("gatewarden-test-no-such-program")))
        .await
        .expect("actor alive")
        .expect_err("cannot spawn")
        .to_string();
    assert!(by_name.contains("searched in PATH"), "{by_name}");

    let bad_cwd = actor
        .send(Spawn(
            LaunchSpec::new("sh").cwd("/nonexistent/gatewarden-test-dir"),
        ))
        .await
        .expect("actor alive")
        .expect_err("cannot spawn")
        .to_string();
    assert!(
        bad_cwd.contains("working directory /nonexistent/gatewarden-test-dir"),
        "{bad_cwd}"
    );
    assert_eq!(actor.send(GetPid).await.expect("actor alive"), None);
}

#[actix_rt::test]
async fn x1_refuses_second_spawn_while_owned() {
    let (actor, mut events) = start_actor(config());
    let first = spawn(&actor, LaunchSpec::new("sleep").arg("1000")).await;
    let second = actor
        .send(Spawn(LaunchSpec::new("sleep").arg("1000")))
        .await
        .expect("actor alive");
    assert!(matches!(second, Err(ProcessError::AlreadyOwned { pid }) if pid == first.pid));
    assert_eq!(
        actor.send(GetPid).await.expect("actor alive"),
        Some(first.pid)
    );
    assert!(actor.send(ForceKill).await.expect("actor alive"));
    events.next_exit().await;
}

#[actix_rt::test]
async fn x2_exit_detected_and_reaped() {
    let (actor, mut events) = start_actor(config());
    let spawned = spawn(&actor, shell("exit 3")).await;
    let exit = events.next_exit().await;
    assert_eq!((exit.pid, exit.code), (spawned.pid, Some(3)));
    // Reaped: not even a zombie entry is left in /proc.
    assert!(!Path::new(&format!("/proc/{}", spawned.pid)).exists());
    assert_eq!(actor.send(GetPid).await.expect("actor alive"), None);
    // No longer owned, so a new spawn is accepted.
    spawn(&actor, shell("exit 0")).await;
    assert_eq!(events.next_exit().await.code, Some(0));
}

#[actix_rt::test]
async fn t4_sigterm_then_sigkill_after_grace() {
    let (actor, mut events) = start_actor(config());
    // The leader ignores SIGTERM, so only the SIGKILL after the grace can end it.
    let spawned = spawn(&actor, shell("trap '' TERM; echo ready; exec sleep 1000")).await;
    events.wait_for_line(OutputStream::Stdout, "ready").await;

    let asked = Instant::now();
    let reply = within(SOON, actor.send(Terminate { grace_ms: 300 }))
        .await
        .expect("actor alive");
    assert!(asked.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        reply,
        TerminateReply::Ended(TerminateOutcome {
            exited_gracefully: false,
            code: Some(137),
            signal: Some(9),
        })
    );
    let exit = events.next_exit().await;
    assert_eq!(exit.pid, spawned.pid);
    assert!(exit.stop_requested);
}

#[actix_rt::test]
async fn t4_sigterm_ends_a_cooperative_gateway_within_grace() {
    let (actor, mut events) = start_actor(config());
    spawn(
        &actor,
        shell("trap 'echo bye; exit 0' TERM; sleep 1000 & echo ready; wait"),
    )
    .await;
    events.wait_for_line(OutputStream::Stdout, "ready").await;
    let asked = Instant::now();
    let reply = within(SOON, actor.send(Terminate { grace_ms: 15_000 }))
        .await
        .expect("actor alive");
    assert!(asked.elapsed() < Duration::from_secs(15));
    assert_eq!(
        reply,
        TerminateReply::Ended(TerminateOutcome {
            exited_gracefully: true,
            code: Some(0),
            signal: None,
        })
    );
    events.wait_for_line(OutputStream::Stdout, "bye").await;
}

#[actix_rt::test]
async fn t4_kills_whole_process_group() {
    let (actor, mut events) = start_actor(config());
    // A worker in the gateway's group that ignores SIGTERM, and a leader that exits on it: the
    // worker must still be gone after the stop.
    let spawned = spawn(
        &actor,
        shell(
            "(trap '' TERM; exec sleep 1000) & echo \"worker $!\"; \
             trap 'exit 0' TERM; echo ready; wait",
        ),
    )
    .await;
    let worker_line = events.next_line(OutputStream::Stdout).await.line;
    let worker: u32 = worker_line
        .strip_prefix("worker ")
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("unexpected line {worker_line:?}"));
    events.wait_for_line(OutputStream::Stdout, "ready").await;
    assert!(alive(worker));
    let mut members = process_group_members(spawned.pid);
    members.sort_unstable();
    let mut expected = vec![spawned.pid, worker];
    expected.sort_unstable();
    assert_eq!(members, expected, "leader and worker share the new group");

    let reply = within(SOON, actor.send(Terminate { grace_ms: 10_000 }))
        .await
        .expect("actor alive");
    assert!(
        matches!(reply, TerminateReply::Ended(outcome) if outcome.exited_gracefully && outcome.code == Some(0)),
        "{reply:?}"
    );
    eventually(SOON, "every member of the group is gone", || {
        process_group_members(spawned.pid).is_empty() && !alive(worker)
    })
    .await;
    events.next_exit().await;
}

#[actix_rt::test]
async fn t4_terminate_without_process_replies_no_process() {
    let (actor, _events) = start_actor(config());
    let reply = actor
        .send(Terminate { grace_ms: 100 })
        .await
        .expect("actor alive");
    assert_eq!(reply, TerminateReply::NoProcess);
}

#[actix_rt::test]
async fn t6_force_kill_terminates_owned_process() {
    let (actor, mut events) = start_actor(config());
    let spawned = spawn(&actor, LaunchSpec::new("sleep").arg("1000")).await;
    assert!(actor.send(ForceKill).await.expect("actor alive"));
    let exit = events.next_exit().await;
    assert_eq!(exit.pid, spawned.pid);
    assert_eq!((exit.code, exit.signal), (Some(137), Some(9)));
    assert!(exit.stop_requested);
    assert!(!alive(spawned.pid));
    assert!(
        !actor.send(ForceKill).await.expect("actor alive"),
        "nothing left to kill"
    );
}

#[actix_rt::test]
async fn p4_signal_reaches_the_leader_only() {
    let (actor, mut events) = start_actor(config());
    let no_process = actor
        .send(SendSignal(Signal::SIGUSR2))
        .await
        .expect("actor alive");
    assert!(matches!(no_process, Err(ProcessError::NoProcess)));

    // The worker would die of SIGUSR2 (default action); the leader traps it.
    spawn(
        &actor,
        shell(
            "sleep 1000 & echo \"worker $!\"; trap 'echo got-usr2' USR2; echo ready; \
             while :; do wait; done",
        ),
    )
    .await;
    let worker_line = events.next_line(OutputStream::Stdout).await.line;
    let worker: u32 = worker_line
        .strip_prefix("worker ")
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("unexpected line {worker_line:?}"));
    events.wait_for_line(OutputStream::Stdout, "ready").await;
    actor
        .send(SendSignal(Signal::SIGUSR2))
        .await
        .expect("actor alive")
        .expect("signal sent");
    events.wait_for_line(OutputStream::Stdout, "got-usr2").await;
    assert!(alive(worker), "only the leader was signalled");
    actor
        .send(Terminate { grace_ms: 5_000 })
        .await
        .expect("actor alive");
    events.next_exit().await;
}

#[test]
fn a3_display_argv_redacts_token() {
    let spec = LaunchSpec::new("node").args([
        "openclaw.mjs",
        "gateway",
        "run",
        "--token",
        "tok-123",
        "--password=pw-456",
        "--port",
        "18789",
    ]);
    let shown = spec.display_argv();
    assert_eq!(
        shown,
        [
            "node",
            "openclaw.mjs",
            "gateway",
            "run",
            "--token",
            REDACTED,
            "--password=[redacted]",
            "--port",
            "18789"
        ]
    );
    let debug = format!("{spec:?}");
    assert!(!debug.contains("tok-123") && !debug.contains("pw-456"));
}

#[actix_rt::test]
async fn a3_token_passed_in_env_not_argv() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("token-seen");
    let token = "tok-a3-secret-value";
    let (actor, mut events) = start_actor(config());
    let spec =
        shell("printf '%s' \"$OPENCLAW_GATEWAY_TOKEN\" > \"$0\"; sleep 1000 & echo ready; wait")
            .arg(file.to_string_lossy())
            .secret_env(GATEWAY_TOKEN_ENV, Secret::new(token));
    assert!(!format!("{spec:?}").contains(token));
    let spawned = spawn(&actor, spec).await;
    events.wait_for_line(OutputStream::Stdout, "ready").await;

    assert_eq!(std::fs::read_to_string(&file).expect("file"), token);
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", spawned.pid)).expect("cmdline");
    assert!(!String::from_utf8_lossy(&cmdline).contains(token));
    let environ = std::fs::read(format!("/proc/{}/environ", spawned.pid)).expect("environ");
    assert!(String::from_utf8_lossy(&environ)
        .split('\0')
        .any(|entry| entry == format!("{GATEWAY_TOKEN_ENV}={token}")));
    actor
        .send(Terminate { grace_ms: 5_000 })
        .await
        .expect("actor alive");
    events.next_exit().await;
}

#[actix_rt::test]
async fn o1_owned_record_written_on_spawn_and_removed_on_exit() {
    let state_dir = tempfile::tempdir().expect("temp dir");
    let (actor, mut events) = start_actor(ProcessActorConfig {
        state_dir: Some(state_dir.path().join("state")),
        ..config()
    });
    let spawned = spawn(&actor, LaunchSpec::new("sleep").arg("1000").port(4242)).await;
    let path = owned_record_path(&state_dir.path().join("state"));
    let record = read_owned_record(&path)
        .expect("readable")
        .expect("written");
    assert_eq!(record.pid, spawned.pid);
    assert_eq!(Some(record.start_ticks), spawned.started_at_ticks);
    assert_eq!(record.port, Some(4242));
    assert_eq!(record.program, "sleep");
    let mode = std::fs::metadata(&path)
        .expect("metadata")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    actor
        .send(Terminate { grace_ms: 5_000 })
        .await
        .expect("actor alive");
    events.next_exit().await;
    assert_eq!(read_owned_record(&path).expect("readable"), None);
}

#[actix_rt::test]
async fn x1_environment_is_set_and_scrubbed() {
    let (actor, mut events) = start_actor(config());
    let spec = shell("echo \"home=${HOME:-none} extra=$EXTRA\"")
        .scrub_service_markers()
        .env_remove("HOME")
        .env("EXTRA", "yes");
    assert!(spec
        .env_removed()
        .iter()
        .any(|name| name == "INVOCATION_ID"));
    spawn(&actor, spec).await;
    events
        .wait_for_line(OutputStream::Stdout, "home=none extra=yes")
        .await;
    events.next_exit().await;
}

/// The gateway starts with an empty signal mask and SIGPIPE at its default, as `Command` would
/// start it, although the supervisor blocks every signal while it creates the child and ignores
/// SIGPIPE (as every Rust program does). A gateway started with SIGTERM blocked could not be
/// stopped in order (T4); one with SIGPIPE ignored behaves differently from one started by hand.
#[actix_rt::test]
async fn t4_gateway_starts_with_an_empty_signal_mask_and_default_sigpipe() {
    let (actor, mut events) = start_actor(config());
    // grep itself, not through a shell: a shell clears its signal mask when it starts.
    let spec = LaunchSpec::new("grep")
        .arg("-E")
        .arg("^Sig(Blk|Ign):")
        .arg("/proc/self/status");
    spawn(&actor, spec).await;
    let mut masks = std::collections::HashMap::new();
    for _ in 0..2 {
        let line = events.next_line(OutputStream::Stdout).await.line;
        let (name, hex) = line.split_once(':').expect("a status line");
        let bits = u64::from_str_radix(hex.trim(), 16).expect("a hex mask");
        masks.insert(name.to_owned(), bits);
    }
    assert_eq!(masks.get("SigBlk"), Some(&0), "{masks:?}");
    let ignored = masks.get("SigIgn").copied().expect("SigIgn line");
    let sigpipe_bit = 1u64 << (Signal::SIGPIPE as u32 - 1);
    assert_eq!(ignored & sigpipe_bit, 0, "SIGPIPE ignored: {ignored:#x}");
    events.next_exit().await;
}
