//! Issue 23, "move blocking work off the actor thread": file reads a supervisor makes while it
//! runs happen on the blocking pool, so a slow or hung disk never stalls its thread (status,
//! heartbeats, RPC answers). The hung disk is a FIFO nobody writes: a read of it blocks until a
//! writer comes, exactly like a read from a hung file system, with no special file system.

mod supervisor_support;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatewarden::supervisor::GetStatus;
use gatewarden_core::machine::LifecycleState;
use supervisor_support::*;

/// Releases a FIFO's readers (by opening it for writing and closing it: they read end-of-file)
/// once `release_after` has passed or when dropped. The test's thread is the supervisor's, so if
/// a read of the FIFO ever ran there again, this thread is what ends the freeze, and the test
/// fails on the latency it measured instead of hanging.
struct FifoRelease {
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FifoRelease {
    fn after(path: PathBuf, release_after: Duration) -> FifoRelease {
        let done = Arc::new(AtomicBool::new(false));
        let thread = {
            let done = done.clone();
            std::thread::spawn(move || {
                let began = Instant::now();
                while !done.load(Ordering::Relaxed) && began.elapsed() < release_after {
                    std::thread::sleep(Duration::from_millis(10));
                }
                // Release every reader that comes until the test is over (a blocked read must not
                // keep the runtime from shutting down).
                loop {
                    release(&path);
                    if done.load(Ordering::Relaxed) {
                        release(&path);
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        FifoRelease {
            done,
            thread: Some(thread),
        }
    }
}

impl Drop for FifoRelease {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Opens the FIFO for writing without blocking (fails harmlessly when no reader waits) and
/// closes it at once.
fn release(path: &Path) {
    use std::os::unix::fs::OpenOptionsExt as _;
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path);
}

fn make_fifo(path: &Path) {
    let name = CString::new(path.as_os_str().as_bytes()).expect("no NUL in the path");
    // SAFETY: a valid C string; mkfifo touches no memory of ours.
    let made = unsafe { libc::mkfifo(name.as_ptr(), 0o600) };
    assert_eq!(made, 0, "mkfifo: {}", std::io::Error::last_os_error());
}

/// A1 + issue 23: the device identity file is read on the blocking pool. With the file a FIFO
/// nobody writes, the supervisor answers `status` all along (20 ms apart, never more than 250 ms), and reaches `running`
/// (connecting without `device` after the bounded wait for the read) long before the FIFO is
/// released. Read on the supervisor's thread, the first `status` would take until the release.
#[actix_rt::test]
async fn a1_a_hung_identity_file_read_never_stalls_the_supervisor() {
    const RELEASE_AFTER: Duration = Duration::from_secs(15);
    let state_dir = tempfile::tempdir().expect("temp dir");
    let identity_dir = state_dir.path().join("identity");
    {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&identity_dir)
            .expect("identity dir");
    }
    let fifo = identity_dir.join("device.json");
    make_fifo(&fifo);
    let release = FifoRelease::after(fifo.clone(), RELEASE_AFTER);

    let options = options(&state_dir, &[]);
    let mut fixture = start(options, state_dir);
    let began = Instant::now();
    fixture.supervisor.do_send(gatewarden::supervisor::Start);

    // The gap between one answer and the next (a 20 ms sleep apart): a thread frozen by a read
    // delays the sleep's wake-up as much as the answer, so the gap is what shows it.
    let mut worst = Duration::ZERO;
    let mut answers = 0;
    let mut last_answer = Instant::now();
    loop {
        let status = fixture.supervisor.send(GetStatus).await.expect("alive");
        worst = worst.max(last_answer.elapsed());
        last_answer = Instant::now();
        answers += 1;
        if status.state == LifecycleState::Running {
            break;
        }
        assert!(
            began.elapsed() < WAIT,
            "not running after {WAIT:?}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let running_after = began.elapsed();
    eprintln!(
        "running after {running_after:?} with the identity file hung; {answers} status answers, \
         longest gap {worst:?}"
    );
    assert!(
        running_after < RELEASE_AFTER,
        "running only after the hung read was released ({running_after:?})"
    );
    assert!(
        worst < Duration::from_millis(250),
        "{worst:?} between two status answers (20 ms apart) while the identity file hung"
    );
    // Still answering, with the read still hung.
    let asked = Instant::now();
    let _ = fixture.supervisor.send(GetStatus).await.expect("alive");
    assert!(asked.elapsed() < Duration::from_millis(200));
    drop(release);
    let _ = fixture.supervisor.send(gatewarden::supervisor::Stop).await;
    fixture.wait_state(LifecycleState::Stopped).await;
}

/// P1 + issue 23: the gateway config (the reload policy) is read on the blocking pool. With the
/// config a FIFO nobody writes, a `reload` waits for the read, but the supervisor answers
/// `status` all along; once the read returns (end of file: no policy, the defaults), the reload
/// is answered.
#[actix_rt::test]
async fn p1_a_hung_config_file_read_never_stalls_the_supervisor() {
    const HUNG_FOR: Duration = Duration::from_millis(1_500);
    let state_dir = tempfile::tempdir().expect("temp dir");
    let mut options = options(&state_dir, &[]);
    // Every reload reads the file (no cached policy).
    options.core.reload.policy_cache_ms = 0;
    // A reload right after the connect is not skipped.
    options.core.reload.recent_connect_skip_ms = 0;
    let config = options.profile.gateway_config_path(state_dir.path());
    let mut fixture = start(options, state_dir);
    let _ = fixture.supervisor.send(gatewarden::supervisor::Start).await;
    fixture.wait_state(LifecycleState::Running).await;

    let _ = std::fs::remove_file(&config);
    std::fs::create_dir_all(config.parent().expect("config folder")).expect("config folder");
    make_fifo(&config);
    let release = FifoRelease::after(config.clone(), HUNG_FOR);
    let reload = actix_rt::spawn(fixture.supervisor.send(gatewarden::supervisor::Reload));

    let began = Instant::now();
    let mut worst = Duration::ZERO;
    let mut last_answer = Instant::now();
    while began.elapsed() < HUNG_FOR {
        let _ = fixture.supervisor.send(GetStatus).await.expect("alive");
        worst = worst.max(last_answer.elapsed());
        last_answer = Instant::now();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("longest gap between status answers with the config file hung: {worst:?}");
    assert!(
        !reload.is_finished(),
        "the reload did not wait for the config read (the test does not test what it says)"
    );
    assert!(
        worst < Duration::from_millis(250),
        "{worst:?} between two status answers (20 ms apart) while the config file hung"
    );
    let outcome = tokio::time::timeout(WAIT, reload)
        .await
        .expect("the reload is answered once the read returns")
        .expect("task")
        .expect("alive");
    eprintln!("reload after the hung read: {outcome:?}");
    drop(release);
    let _ = fixture.supervisor.send(gatewarden::supervisor::Stop).await;
    fixture.wait_state(LifecycleState::Stopped).await;
}
