//! K2 and K3 against real processes: a child stopped before `execve` (caught there by a file
//! lease, then SIGSTOPped) never blocks the process actor, and an exited gateway is not reaped
//! (so its pid cannot be reused) before the actor has let go of it.

mod process_support;

use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

use gatewarden::launch::LaunchSpec;
use gatewarden::process::{GetPid, ProcessActorConfig, ProcessError, SendSignal, Spawn};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use process_support::*;

/// A gateway script that would just sleep, and the lease that makes its `execve` block.
fn leased_script(dir: &std::path::Path) -> (std::path::PathBuf, WriteLease) {
    let script = dir.join("gateway.sh");
    std::fs::write(&script, "#!/bin/sh\nexec sleep 1000\n").expect("script written");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let lease = WriteLease::hold(&script);
    (script, lease)
}

/// K3: the child is caught before `execve` (its `execve` waits for the lease), SIGSTOPped there,
/// and the lease released, so it stays stopped before exec for good. Meanwhile the actor answers
/// at once; after `spawn_timeout_ms` the spawn fails naming the stopped child, which is killed
/// and reaped.
#[actix_rt::test]
async fn k3_a_child_stopped_before_exec_never_blocks_the_actor() {
    const SPAWN_TIMEOUT_MS: u64 = 2_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let (script, lease) = leased_script(dir.path());
    let (actor, _events) = start_actor(ProcessActorConfig {
        spawn_timeout_ms: SPAWN_TIMEOUT_MS,
        ..ProcessActorConfig::default()
    });
    let started = Instant::now();
    let spawn = actix_rt::spawn(actor.send(Spawn(LaunchSpec::new(&script))));

    let mut child = None;
    eventually(SOON, "the child waiting before execve", || {
        child = children_before_exec(std::process::id()).first().copied();
        child.is_some()
    })
    .await;
    let child = child.expect("found");
    kill(Pid::from_raw(child as i32), Signal::SIGSTOP).expect("SIGSTOP the child");
    eventually(SOON, "the child stopped", || {
        matches!(stat_of(child), Some(('T', _, _)))
    })
    .await;
    drop(lease);

    let mut worst = Duration::ZERO;
    while started.elapsed() < Duration::from_millis(SPAWN_TIMEOUT_MS / 2) {
        let asked = Instant::now();
        let pid = within(SOON, actor.send(GetPid)).await.expect("actor alive");
        worst = worst.max(asked.elapsed());
        assert_eq!(pid, None, "nothing is owned before exec");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        worst < Duration::from_millis(100),
        "the actor answered in {worst:?} while the spawn was stuck"
    );
    assert!(
        matches!(stat_of(child), Some(('T', _, name)) if name == "gatewarden-chil"),
        "the child is still stopped before exec"
    );

    let outcome = within(SOON, spawn)
        .await
        .expect("spawn task")
        .expect("actor alive");
    let waited = started.elapsed();
    match outcome {
        Err(ProcessError::SpawnStuck {
            pid,
            waited_ms,
            state,
        }) => {
            assert_eq!(pid, Some(child));
            assert_eq!(waited_ms, SPAWN_TIMEOUT_MS);
            assert_eq!(state.as_deref(), Some("stopped"));
        }
        other => panic!("expected SpawnStuck, got {other:?}"),
    }
    assert!(waited >= Duration::from_millis(SPAWN_TIMEOUT_MS));
    eventually(SOON, "the stuck child killed and reaped", || {
        stat_of(child).is_none_or(|(_, parent, _)| parent != std::process::id())
    })
    .await;
    // The actor is free for the next spawn.
    let next = spawn_ok(&actor, shell("exit 0")).await;
    assert!(next > 1);
}

/// K3: an `execve` blocked in the kernel (here by the lease, as by a hung file system) is bounded
/// the same way, and reported as such.
#[actix_rt::test]
async fn k3_an_exec_blocked_on_the_file_system_is_bounded_and_reported() {
    const SPAWN_TIMEOUT_MS: u64 = 1_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let (script, _lease) = leased_script(dir.path());
    let (actor, _events) = start_actor(ProcessActorConfig {
        spawn_timeout_ms: SPAWN_TIMEOUT_MS,
        ..ProcessActorConfig::default()
    });
    let spawn = actix_rt::spawn(actor.send(Spawn(LaunchSpec::new(&script))));
    let asked = Instant::now();
    assert_eq!(within(SOON, actor.send(GetPid)).await.expect("alive"), None);
    assert!(asked.elapsed() < Duration::from_millis(100));
    let outcome = within(SOON, spawn).await.expect("task").expect("alive");
    let error = outcome.expect_err("the spawn fails");
    assert!(
        matches!(&error, ProcessError::SpawnStuck { state: Some(state), .. } if state == "sleeping"),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("did not start its program within 1000 ms"),
        "{message}"
    );
}

/// K2: the exit of a gateway is observed without reaping it; until the actor has handled the
/// exit (and with it dropped every way to signal it), the pid stays a zombie, so it cannot be
/// reused by another process and no signal of the actor can reach a stranger. The test blocks
/// the actor's thread (it is the test's own) while the child exits, and watches `/proc`: a
/// reaper that freed the pid on its own would make the entry vanish here.
#[actix_rt::test]
async fn k2_an_exited_gateway_is_not_reaped_before_the_actor_lets_go() {
    let (actor, mut events) = start_actor(ProcessActorConfig::default());
    let pid = spawn_ok(&actor, shell("exit 0")).await;
    let deadline = Instant::now() + SOON;
    // Blocking on purpose: the actor (same thread) cannot run meanwhile.
    while !matches!(stat_of(pid), Some(('Z', _, _))) {
        assert!(Instant::now() < deadline, "the child never exited");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        matches!(stat_of(pid), Some(('Z', _, _))),
        "the exited gateway was reaped before the actor knew: its pid was free for reuse"
    );
    let exit = events.next_exit().await;
    assert_eq!(exit.pid, pid);
    assert!(stat_of(pid).is_none(), "reaped once the actor let go");
    let late = actor
        .send(SendSignal(Signal::SIGTERM))
        .await
        .expect("alive");
    assert!(matches!(late, Err(ProcessError::NoProcess)), "{late:?}");
}

/// K2: signals go through the pidfd while the gateway runs.
#[actix_rt::test]
async fn k2_signals_reach_the_running_gateway() {
    let (actor, mut events) = start_actor(ProcessActorConfig::default());
    let pid = spawn_ok(&actor, LaunchSpec::new("sleep").arg("1000")).await;
    actor
        .send(SendSignal(Signal::SIGTERM))
        .await
        .expect("alive")
        .expect("signal delivered");
    let exit = events.next_exit().await;
    assert_eq!((exit.pid, exit.signal), (pid, Some(Signal::SIGTERM as i32)));
}

async fn spawn_ok(actor: &actix::Addr<gatewarden::process::ProcessActor>, spec: LaunchSpec) -> u32 {
    spawn(actor, spec).await.pid
}
