//! What a `GatewayHandle` answers when things go wrong: a refused option before anything starts,
//! and every start failure (L1–L8, F1–F6, O1) as a typed error, asserted by its variant, never by
//! its text. Each scenario is a real condition: a real `gatewarden-sim` with a fault flag, a real
//! listener on the port, a config file the doctor cannot repair, a program that does not exist.
//!
//! # Which test produces which `StartFailure`
//!
//! | variant | scenario | test |
//! |---|---|---|
//! | `ExitedBeforeReady` | sim `--exit-before-ready 3` | `w1_exited_before_ready_carries_the_exit_code_and_the_gateways_line` (here) |
//! | `ConfigStillInvalid` | sim `--fault-invalid-config` (exit 78 whatever the doctor does) | `l8_f1_a_config_still_invalid_after_the_doctor_fails_typed` (here) |
//! | `RepairFailed` | a config file that does not parse: the doctor refuses it (exit 1) | `l6_a_doctor_that_fails_is_repair_failed_with_its_exit_code` (here) |
//! | `LockHeld` | sim prints "another OpenClaw process owns gateway-lifecycle", exits 78 | `f1_a_held_gateway_lock_is_lock_held_naming_the_line` (here) |
//! | `RuntimeIncompatible` | sim `--fake-node-version 20.20.2` | `f3_an_old_runtime_is_runtime_incompatible` (here) |
//! | `NoChallenge` | sim `--no-challenge` | `f6_a_port_without_a_challenge_is_no_challenge` (here) |
//! | `HandshakeRejected` | sim `--reject-token` | `a3_a_rejected_token_is_handshake_rejected_and_an_auth_rejection` (here) |
//! | `PortHeldByOther` | this test process listens on the port | `o1_a_port_held_by_another_program_names_its_pid` (here) |
//! | `ForeignGateway` | a sim this supervisor did not spawn, policy `fail` | `o1_a_foreign_gateway_with_policy_fail_is_foreign_gateway` (here) |
//! | `SpawnFailed` | a gateway program that does not exist | `x1_a_missing_program_is_spawn_failed` (here) |
//! | `ReadyTimeout` | sim `--slow-start-ms` beyond `connect.ready_timeout_ms` | `w1_a_gateway_that_never_listens_is_ready_timeout` (here) |
//! | `ChallengeTimeout`, `ConnectionRefused`, `HandshakeRejected`, `ReadyTimeout` | the connection actor against a real sim / a bare listener / a closed port | `connection_handshake.rs` (`c1_no_challenge_times_out`, `c1_connection_refused_names_the_port`, `c1_rejected_token_reports_auth_token_mismatch`, `w1_bare_listener_is_not_ready`) |
//! | `HandshakeTimeout` | sim `--connect-no-reply` (the challenge comes, the `connect` reply never) | `c1_a_gateway_that_never_answers_connect_is_handshake_timeout` (here) |
//! | `SocketClosedBeforeHandshake` | sim `--connect-close` (the socket drops on `connect`) | `c1_a_socket_dropped_on_connect_is_socket_closed_before_handshake` (here) |
//! | `PortStillOccupied` | a listener no process holds: its only reference is an `SCM_RIGHTS` message in flight on a socket pair, so no `/proc/*/fd` names it (as for a process in its last moments or one we may not inspect) | `o1_a_listener_no_process_holds_is_port_still_occupied` (here) |
//! | `ExternalUnavailable` | an attached external sim SIGSTOPped: D5's transport-only reconnects fail, which no command waits on, so the published error event carries it | `supervisor_liveness.rs` (`d5_an_external_gateway_that_stops_answering_is_only_reconnected`) |
//! | `Other` | sim `--connect-bad-hello` (a `hello-ok` without `protocol`); also a malformed challenge | `c1_an_invalid_connect_reply_is_other_naming_it` (here) |

mod handle_support;

use std::time::Duration;

use gatewarden::handle::{GatewayHandle, HandleError};
use gatewarden::profile::LaunchProfile;
use gatewarden::SupervisorOptions;
use gatewarden_core::config::ForeignGatewayPolicy;
use gatewarden_core::error::{CommandFailure, RepairFailure, StartFailure};
use gatewarden_core::machine::LifecycleState;
use handle_support::{alive, free_port, options, WAIT};

#[test]
fn a3_spawn_refuses_a_remote_gateway_host_with_a_typed_error_before_starting_anything() {
    let state_dir = tempfile::tempdir().expect("temp dir");
    let mut options = options(&state_dir, &[]);
    options.host = "192.0.2.10".into();
    let refused = GatewayHandle::spawn(options);
    assert!(
        matches!(refused, Err(HandleError::Options(_))),
        "{refused:?}"
    );
}

/// Start through a handle and return the typed failure (the start must fail), after checking
/// the status says `error` and owns no process; the handle is shut down.
async fn failed_start(options: SupervisorOptions) -> (StartFailure, Option<String>) {
    let handle = GatewayHandle::spawn(options).expect("handle");
    let started = tokio::time::timeout(WAIT * 2, handle.start())
        .await
        .expect("the start flow ended within the bound");
    let failure = match started {
        Err(HandleError::Failed(CommandFailure::Start { failure, reason })) => (failure, reason),
        other => panic!("a failed start answered {other:?}"),
    };
    let status = handle.status().await.expect("status");
    assert_eq!(status.state, LifecycleState::Error, "{status:?}");
    handle.shutdown().await.expect("shutdown");
    failure
}

/// Options with one attempt and short retry delays (a failure is final at once).
fn one_attempt(state_dir: &tempfile::TempDir, sim_args: &[&str]) -> SupervisorOptions {
    let mut options = options(state_dir, sim_args);
    options.core.start.max_attempts = 1;
    options.core.start.retry_delay_ms = 20;
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w1_exited_before_ready_carries_the_exit_code_and_the_gateways_line() {
    let state_dir = tempfile::tempdir().expect("temp dir");
    let (failure, reason) =
        failed_start(one_attempt(&state_dir, &["--exit-before-ready", "3"])).await;
    assert_eq!(failure, StartFailure::ExitedBeforeReady { code: Some(3) });
    assert!(reason.is_some(), "F4: the gateway's last line comes along");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l8_f1_a_config_still_invalid_after_the_doctor_fails_typed() {
    let state_dir = tempfile::tempdir().expect("temp dir");
    // The sim exits with 78 (invalid config) whatever the doctor does.
    let (failure, _) = failed_start(options(&state_dir, &["--fault-invalid-config"])).await;
    assert!(
        matches!(failure, StartFailure::ConfigStillInvalid { line: Some(_) }),
        "{failure:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l6_a_doctor_that_fails_is_repair_failed_with_its_exit_code() {
    let state_dir = tempfile::tempdir().expect("temp dir");
    let config = LaunchProfile::gateway_state_dir(state_dir.path()).join("openclaw.json");
    std::fs::create_dir_all(config.parent().expect("parent")).expect("gateway dir");
    // Not JSON5: the gateway exits 78, and its doctor refuses to rewrite what it cannot parse.
    std::fs::write(&config, "{ gateway: { port: ").expect("write config");
    let (failure, _) = failed_start(options(&state_dir, &[])).await;
    assert_eq!(
        failure,
        StartFailure::RepairFailed {
            failure: RepairFailure::Exited { code: Some(1) }
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f1_a_held_gateway_lock_is_lock_held_naming_the_line() {
    let state_dir = tempfile::tempdir().expect("temp dir");
    let holder = "another OpenClaw process owns gateway-lifecycle (pid 4242)";
    let (failure, _) = failed_start(options(
        &state_dir,
        &["--stderr-line", holder, "--exit-before-ready", "78"],
    ))
    .await;
    match failure {
        StartFailure::LockHeld { line } => assert!(line.contains("pid 4242"), "{line}"),
        other => panic!("expected LockHeld, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f3_an_old_runtime_is_runtime_incompatible() {
    let state_dir = tempfile::tempdir().expect("temp dir");
    let (failure, _) = failed_start(options(&state_dir, &["--fake-node-version", "20.20.2"])).await;
    assert!(
        matches!(failure, StartFailure::RuntimeIncompatible { .. }),
        "{failure:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f6_a_port_without_a_challenge_is_no_challenge() {
    let state_dir = tempfile::tempdir().expect("temp dir");
    let mut options = one_attempt(&state_dir, &["--no-challenge"]);
    options.core.connect.challenge_timeout_ms = 1_000;
    let port = options.core.port;
    let (failure, _) = failed_start(options).await;
    match failure {
        StartFailure::NoChallenge {
            port: failed_port,
            waited_ms,
        } => {
            assert_eq!(failed_port, port);
            assert!(waited_ms >= 1_000, "{waited_ms}");
        }
        other => panic!("expected NoChallenge, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c1_a_gateway_that_never_answers_connect_is_handshake_timeout() {
    let state_dir = tempfile::tempdir().expect("temp dir");
    let mut options = one_attempt(&state_dir, &["--connect-no-reply"]);
    options.core.connect.handshake_timeout_ms = 1_000;
    let (failure, _) = failed_start(options).await;
    assert_eq!(failure, StartFailure::HandshakeTimeout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c1_a_socket_dropped_on_connect_is_socket_closed_before_handshake() {
    let state_dir = tempfile::tempdir().expect("temp dir");
    let (failure, _) = failed_start(one_attempt(&state_dir, &["--connect-close"])).await;
    assert!(
        matches!(failure, StartFailure::SocketClosedBeforeHandshake { .. }),
        "{failure:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c1_an_invalid_connect_reply_is_other_naming_it() {
    let state_dir = tempfile::tempdir().expect("temp dir");
    let (failure, _) = failed_start(one_attempt(&state_dir, &["--connect-bad-hello"])).await;
    match failure {
        StartFailure::Other { message } => {
            assert!(message.starts_with("invalid connect reply"), "{message}")
        }
        other => panic!("expected Other, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a3_a_rejected_token_is_handshake_rejected_and_an_auth_rejection() {
    let state_dir = tempfile::tempdir().expect("temp dir");
    let mut options = one_attempt(&state_dir, &["--reject-token"]);
    options.token = Some(gatewarden::launch::Secret::new(
        "tok-not-what-the-gateway-wants",
    ));
    let (failure, _) = failed_start(options).await;
    assert!(failure.is_auth_rejection(), "{failure:?}");
    match failure {
        StartFailure::HandshakeRejected { details_code, .. } => {
            assert_eq!(details_code.as_deref(), Some("AUTH_TOKEN_MISMATCH"))
        }
        other => panic!("expected HandshakeRejected, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o1_a_port_held_by_another_program_names_its_pid() {
    let state_dir = tempfile::tempdir().expect("temp dir");
    // This test process holds the port: a listener that is not a gateway.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let mut options = one_attempt(&state_dir, &[]);
    options.core.port = listener.local_addr().expect("address").port();
    let port = options.core.port;
    let (failure, _) = failed_start(options).await;
    assert_eq!(
        failure,
        StartFailure::PortHeldByOther {
            port,
            pid: Some(std::process::id()),
            program: failure_program(&failure),
        }
    );
    drop(listener);
}

/// Park `listener` where no process's file table shows it: sent as `SCM_RIGHTS` over a Unix
/// socket pair and never received, then closed here. The kernel keeps the socket open (and
/// listening) for as long as the message waits, i.e. while the returned pair lives.
fn park_unowned(
    listener: std::net::TcpListener,
) -> (
    std::os::unix::net::UnixStream,
    std::os::unix::net::UnixStream,
) {
    use std::os::fd::{AsRawFd, IntoRawFd};
    let (sender, receiver) = std::os::unix::net::UnixStream::pair().expect("socket pair");
    let fd = listener.into_raw_fd();
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) } as usize;
    let mut control = vec![0u8; space];
    // SAFETY: an all-zero msghdr is valid; every pointer set below outlives the sendmsg call.
    let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
    header.msg_iov = &mut iov;
    header.msg_iovlen = 1;
    header.msg_control = control.as_mut_ptr().cast();
    header.msg_controllen = space as _;
    // SAFETY: `control` has room for one cmsg carrying one fd (CMSG_SPACE above).
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&header);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>(), fd);
    }
    // SAFETY: `header` is fully initialised and `sender` is an open socket.
    let sent = unsafe { libc::sendmsg(sender.as_raw_fd(), &header, 0) };
    assert_eq!(sent, 1, "sendmsg: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is ours (taken from the listener above) and closed once.
    unsafe { libc::close(fd) };
    (sender, receiver)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o1_a_listener_no_process_holds_is_port_still_occupied() {
    let state_dir = tempfile::tempdir().expect("temp dir");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = listener.local_addr().expect("address").port();
    let parked = park_unowned(listener);
    // Still listening, though nobody holds it: a connection is accepted into its backlog.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    let mut options = one_attempt(&state_dir, &[]);
    options.core.port = port;
    let (failure, _) = failed_start(options).await;
    assert_eq!(failure, StartFailure::PortStillOccupied { port });
    drop(parked);
}

fn failure_program(failure: &StartFailure) -> Option<String> {
    match failure {
        StartFailure::PortHeldByOther { program, .. } => program.clone(),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o1_a_foreign_gateway_with_policy_fail_is_foreign_gateway() {
    let state_dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    // A gateway this supervisor did not spawn (no record of it in the state dir).
    let sim = gatewarden::profile::find_sim_binary().expect("sim binary");
    let mut foreign = std::process::Command::new(sim)
        .args(["--port", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("foreign sim");
    let deadline = std::time::Instant::now() + WAIT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the sim never listened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut options = one_attempt(&state_dir, &[]);
    options.core.port = port;
    options.core.orphans.foreign_gateway = ForeignGatewayPolicy::Fail;
    let (failure, _) = failed_start(options).await;
    assert_eq!(
        failure,
        StartFailure::ForeignGateway {
            port,
            pid: Some(foreign.id()),
        }
    );
    assert!(alive(foreign.id()), "a foreign gateway is never signalled");
    let _ = foreign.kill();
    let _ = foreign.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x1_a_missing_program_is_spawn_failed() {
    let state_dir = tempfile::tempdir().expect("temp dir");
    let mut options = one_attempt(&state_dir, &[]);
    options.profile = LaunchProfile::Custom {
        program: state_dir.path().join("no-such-gateway"),
        args: Vec::new(),
    };
    let (failure, _) = failed_start(options).await;
    assert!(
        matches!(failure, StartFailure::SpawnFailed { .. }),
        "{failure:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w1_a_gateway_that_never_listens_is_ready_timeout() {
    let state_dir = tempfile::tempdir().expect("temp dir");
    let mut options = one_attempt(&state_dir, &["--slow-start-ms", "60000"]);
    options.core.connect.ready_timeout_ms = 1_500;
    let (failure, _) = failed_start(options).await;
    match failure {
        StartFailure::ReadyTimeout { waited_ms } => assert!(waited_ms >= 1_500, "{waited_ms}"),
        other => panic!("expected ReadyTimeout, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f8_the_published_error_and_give_up_carry_the_typed_failure() {
    use gatewarden::handle::StreamEvent;
    use gatewarden::GatewayEvent;

    let state_dir = tempfile::tempdir().expect("temp dir");
    let handle = GatewayHandle::spawn(options(&state_dir, &["--fake-node-version", "20.20.2"]))
        .expect("handle");
    let mut events = handle.subscribe().await;
    let started = tokio::time::timeout(WAIT, handle.start())
        .await
        .expect("the start flow ended within the bound");
    assert!(
        matches!(started, Err(HandleError::Failed(_))),
        "{started:?}"
    );
    let runtime = |failure: &Option<CommandFailure>| {
        matches!(
            failure,
            Some(CommandFailure::Start {
                failure: StartFailure::RuntimeIncompatible { .. },
                ..
            })
        )
    };
    let (mut error_typed, mut gave_up_typed) = (false, false);
    let deadline = tokio::time::Instant::now() + WAIT;
    while !(error_typed && gave_up_typed) {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("the error and the give-up were published")
            .expect("stream open");
        match event {
            StreamEvent::Event(GatewayEvent::Error { failure, .. }) => {
                error_typed |= runtime(&failure)
            }
            StreamEvent::Event(GatewayEvent::GaveUp { failure, .. }) => {
                gave_up_typed |= runtime(&failure)
            }
            _ => {}
        }
    }
    handle.shutdown().await.expect("shutdown");
}
