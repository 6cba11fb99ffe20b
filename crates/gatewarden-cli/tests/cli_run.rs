//! End-to-end: `gatewarden run` supervising the bundled simulator, driven through the control
//! socket, signals and the HTTP endpoint, exactly as a person or a service manager would.

mod support;

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixStream;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use support::{eventually, group_members, is_alive, proc_state, Instance, Options};

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn pid_of(status: &Value) -> u32 {
    status["pid"]
        .as_u64()
        .and_then(|pid| u32::try_from(pid).ok())
        .expect("status has a pid")
}

#[test]
fn s2_run_reaches_running_and_status_json_reports_the_gateway() {
    let instance = Instance::start(Options::default());
    let status = instance.wait_running();
    assert_eq!(status["port"], instance.port);
    assert!(
        is_alive(pid_of(&status)),
        "the reported pid is a live process"
    );
    assert_eq!(status["version"], "2026.9.6-sim");
    assert_eq!(status["protocol"], 4);
    assert_eq!(status["reconnectAttempts"], 0);
    assert_eq!(status["error"], Value::Null);
    assert!(status["uptimeMs"].is_u64());
    assert!(status["connectedAtMs"].is_u64());
    assert!(status.get("uptime").is_none(), "the old name is gone");
    assert!(status["supervisor"]["uptimeMs"].is_u64());
    assert_eq!(status["health"]["state"], "healthy");
    assert_eq!(status["supervisor"]["pid"], instance.pid());

    let human = instance.cli(&["status"]);
    assert!(human.status.success());
    assert!(
        stdout(&human).contains("gateway running"),
        "{}",
        stdout(&human)
    );
}

#[test]
fn m1_m2_rpc_round_trips_and_reports_gateway_errors() {
    let instance = Instance::start(Options::default());
    instance.wait_running();

    let echo = instance.cli(&["rpc", "echo", r#"{"a":1}"#]);
    assert!(echo.status.success(), "{}", stderr(&echo));
    let reply: Value = serde_json::from_str(stdout(&echo).trim()).expect("rpc prints JSON");
    assert_eq!(reply, json!({"a": 1}));

    let unknown = instance.cli(&["rpc", "no.such.method", "--timeout", "5000"]);
    assert_eq!(unknown.status.code(), Some(1));
    let message = stderr(&unknown);
    assert!(
        message.contains("unknown method: no.such.method"),
        "{message}"
    );
    assert!(message.contains("INVALID_REQUEST"), "{message}");

    let bad_params = instance.cli(&["rpc", "echo", "{not json"]);
    assert_eq!(bad_params.status.code(), Some(2), "{}", stderr(&bad_params));
}

#[test]
fn r4_restart_spawns_a_new_gateway_process() {
    let instance = Instance::start(Options::default());
    let before = pid_of(&instance.wait_running());
    let restart = instance.cli(&["restart"]);
    assert!(
        restart.status.success(),
        "{}\n{}",
        stderr(&restart),
        instance.logs()
    );
    let after = instance.wait_for("a running gateway with a new pid", |status| {
        status["state"] == "running" && status["pid"].is_u64() && status["pid"] != before
    });
    assert!(is_alive(pid_of(&after)));
    eventually("the old gateway to be gone", || !is_alive(before));
}

#[test]
fn p3_reload_keeps_the_same_gateway_process() {
    let instance = Instance::start(Options {
        // P3: without this a reload right after connecting is skipped (the gateway already
        // read the latest config).
        env: vec![(
            "GATEWARDEN_RELOAD__RECENT_CONNECT_SKIP_MS".into(),
            "0".into(),
        )],
        ..Options::default()
    });
    let before = instance.wait_running();
    let reload = instance.cli(&["reload"]);
    assert!(
        reload.status.success(),
        "{}\n{}",
        stderr(&reload),
        instance.logs()
    );
    assert!(
        stdout(&reload).contains("reload: done"),
        "{}",
        stdout(&reload)
    );
    let after = instance.wait_running();
    assert_eq!(after["pid"], before["pid"], "a reload keeps the process");
}

#[test]
fn n1_a_killed_gateway_is_replaced_by_a_new_process() {
    let instance = Instance::start(Options::default());
    let before = pid_of(&instance.wait_running());
    kill(Pid::from_raw(before as i32), Signal::SIGKILL).expect("kill the gateway");
    let after = instance.wait_for("the gateway running again with a new pid", |status| {
        status["state"] == "running" && status["pid"].is_u64() && status["pid"] != before
    });
    assert!(is_alive(pid_of(&after)));
}

fn assert_signal_stops_cleanly(signal: Signal) {
    let mut instance = Instance::start(Options::default());
    let gateway = pid_of(&instance.wait_running());
    let (_, group) = proc_state(gateway).expect("gateway process visible in /proc");
    instance.signal(signal);
    let exit = instance.wait_exit();
    assert_eq!(
        exit.code(),
        Some(0),
        "{signal} exits 0\n{}",
        instance.logs()
    );
    assert!(
        !is_alive(gateway),
        "gateway {gateway} outlived gatewarden\n{}",
        instance.logs()
    );
    assert_eq!(
        group_members(group),
        Vec::<u32>::new(),
        "processes left in the gateway's group"
    );
    assert!(
        !instance.control.exists(),
        "the control socket is removed on exit"
    );
}

#[test]
fn t4_sigint_stops_gracefully_and_leaves_no_gateway() {
    assert_signal_stops_cleanly(Signal::SIGINT);
}

#[test]
fn t4_sigterm_stops_gracefully_and_leaves_no_gateway() {
    assert_signal_stops_cleanly(Signal::SIGTERM);
}

#[test]
fn http_endpoints_follow_the_lifecycle() {
    let mut instance = Instance::start(Options {
        http: true,
        ..Options::default()
    });
    instance.wait_running();
    assert_eq!(instance.http_get("/healthz").0, 200);
    let (code, body) = instance.http_get("/readyz");
    assert_eq!(code, 200, "{body}");
    instance.cli(&["rpc", "echo", "{}"]);
    let (code, metrics) = instance.http_get("/metrics");
    assert_eq!(code, 200);
    for line in [
        "gatewarden_state{state=\"running\"} 1",
        "gatewarden_gateway_ready 1",
        "gatewarden_process_starts_total 1",
        "gatewarden_rpc_successes_total 1",
        "gatewarden_restarts_executed_total 0",
        "gatewarden_heartbeat_misses 0",
    ] {
        assert!(
            metrics.lines().any(|metric| metric == line),
            "missing `{line}` in\n{metrics}"
        );
    }
    assert_eq!(instance.http_get("/nope").0, 404);

    let stop = instance.cli(&["stop"]);
    assert!(stop.status.success(), "{}", stderr(&stop));
    instance.wait_for("state stopped", |status| status["state"] == "stopped");
    assert_eq!(instance.http_get("/readyz").0, 503, "not ready after stop");
    assert_eq!(
        instance.http_get("/healthz").0,
        200,
        "the supervisor is still alive"
    );
    let (_, metrics) = instance.http_get("/metrics");
    assert!(
        metrics.contains("gatewarden_state{state=\"stopped\"} 1"),
        "{metrics}"
    );

    let start = instance.cli(&["start"]);
    assert!(start.status.success(), "{}", stderr(&start));
    instance.wait_running();
    assert_eq!(instance.http_get("/readyz").0, 200);

    // `stop --exit` ends the supervisor too.
    let quit = instance.cli(&["stop", "--exit"]);
    assert!(quit.status.success(), "{}", stderr(&quit));
    assert_eq!(instance.wait_exit().code(), Some(0), "{}", instance.logs());
}

#[test]
fn http_readyz_is_503_while_the_gateway_is_not_ready() {
    // A gateway that accepts WebSockets but never sends `connect.challenge` never becomes ready
    // (W1), so the instance stays in `starting` for as long as the test looks.
    let sim = support::sim_binary();
    let instance = Instance::start(Options {
        http: true,
        command: vec![
            sim.display().to_string(),
            "--port".into(),
            "{port}".into(),
            "--no-challenge".into(),
        ],
        ..Options::default()
    });
    instance.wait_for("state starting", |status| status["state"] == "starting");
    let (code, body) = instance.http_get("/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("\"starting\""), "{body}");
    assert_eq!(instance.http_get("/healthz").0, 200);
    let (_, metrics) = instance.http_get("/metrics");
    assert!(
        metrics.contains("gatewarden_state{state=\"starting\"} 1"),
        "{metrics}"
    );
}

#[test]
fn control_socket_is_owner_only_and_answers_garbage_with_errors() {
    let instance = Instance::start(Options::default());
    instance.wait_running();
    let mode = std::fs::metadata(&instance.control)
        .expect("control socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    let dir_mode = std::fs::metadata(instance.control.parent().expect("dir"))
        .expect("control dir")
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700, "directory mode {dir_mode:o}");

    let exchange = |request: &[u8]| -> Value {
        let mut stream = UnixStream::connect(&instance.control).expect("connect");
        stream
            .set_read_timeout(Some(support::DEADLINE))
            .expect("timeout");
        // The server may answer (and close) before reading all of an oversized line.
        let _ = stream.write_all(request);
        let mut line = String::new();
        BufReader::new(stream)
            .read_line(&mut line)
            .expect("read answer");
        serde_json::from_str(&line).expect("the answer is one JSON line")
    };
    assert_eq!(exchange(b"hello\n")["error"]["kind"], "badRequest");
    assert_eq!(
        exchange(b"{\"cmd\":\"explode\"}\n")["error"]["kind"],
        "badRequest"
    );
    assert_eq!(exchange(b"\xff\xfe\n")["error"]["kind"], "badRequest");
    let mut huge = vec![b'x'; 5 * 1024 * 1024];
    huge.push(b'\n');
    assert_eq!(exchange(&huge)["error"]["kind"], "tooLong");
    let status = exchange(b"{\"cmd\":\"status\"}\n");
    assert_eq!(status["ok"]["kind"], "status");
    assert_eq!(status["ok"]["state"], "running");
}

#[test]
fn o1_port_held_by_another_program_is_reported_with_its_pid() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let dir = tempfile::tempdir().expect("temp dir");
    let output = support::command(dir.path())
        .env("GATEWARDEN_ORPHANS__PROBE_TIMEOUT_MS", "1000")
        .args(["run", "--port", &port.to_string()])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--control")
        .arg(dir.path().join("gw.sock"))
        .output()
        .expect("run gatewarden");
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains(&format!("held by pid {}", std::process::id())),
        "{message}"
    );
    assert!(message.contains("not a gateway"), "{message}");
    assert_reason_printed_once_at_the_end(
        &message,
        "not a gateway",
        "Another program holds the port",
    );
    drop(listener);
}

/// A failed first start: the CLI prints the reason once, as its last words (`gatewarden: error:
/// the gateway did not start: <reason>` and what to do); its own log lines do not repeat it (the
/// library's log lines above are the record of the attempts).
fn assert_reason_printed_once_at_the_end(stderr: &str, reason: &str, hint: &str) {
    assert_eq!(stderr.matches(hint).count(), 1, "the hint once: {stderr}");
    let repeated: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("gatewarden_cli::") && line.contains(reason))
        .collect();
    assert!(
        repeated.is_empty(),
        "the CLI's log repeats the reason: {repeated:?}"
    );
    // The library's record names the final failure once ("gateway start failed"); the attempt
    // that ended the start is a DEBUG detail, earlier retried attempts are their own failures.
    let library: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("gatewarden::") && line.contains(reason))
        .filter(|line| line.contains(" WARN ") || line.contains(" ERROR "))
        .filter(|line| !line.contains("recovery: Retry") && !line.contains("recovery: Repair"))
        .collect();
    assert!(
        library.len() <= 1,
        "the library logs the final failure more than once: {library:?}"
    );
    let last_error = stderr
        .lines()
        .position(|line| line.starts_with("gatewarden: error: the gateway did not start:"))
        .expect("the final error message");
    assert!(
        stderr
            .lines()
            .nth(last_error)
            .is_some_and(|line| line.contains(reason)),
        "{stderr}"
    );
    assert!(
        stderr
            .lines()
            .skip(last_error + 1)
            .all(|line| !line.contains(" INFO ")
                && !line.contains(" WARN ")
                && !line.contains(" ERROR ")),
        "nothing is logged after the final message: {stderr}"
    );
}

#[test]
fn c1_a_rejected_token_is_reported_as_such() {
    // A gateway we did not start, with a token we do not have: gatewarden attaches (O1) and the
    // gateway rejects the token.
    let dir = tempfile::tempdir().expect("temp dir");
    let port = support::free_port();
    let mut gateway = support::KillOnDrop(
        std::process::Command::new(support::sim_binary())
            .args(["--port", &port.to_string()])
            .env("OPENCLAW_GATEWAY_TOKEN", "the-right-token")
            .env("OPENCLAW_STATE_DIR", dir.path().join("gw"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start the simulator"),
    );
    // Its first stdout line says it listens.
    let mut line = String::new();
    BufReader::new(gateway.0.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("listening line");
    let output = support::command(dir.path())
        .env("GATEWARDEN_TOKEN", "a-wrong-token")
        .args(["run", "--port", &port.to_string()])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--control")
        .arg(dir.path().join("gw.sock"))
        .output()
        .expect("run gatewarden");
    drop(gateway);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(message.contains("AUTH_TOKEN_MISMATCH"), "{message}");
    // Where our token came from, never the token itself.
    assert!(
        message.contains("rejected our token (from $GATEWARDEN_TOKEN)"),
        "{message}"
    );
    assert_reason_printed_once_at_the_end(&message, "AUTH_TOKEN_MISMATCH", "rejected our token");
    assert!(
        !message.contains("a-wrong-token"),
        "the token is never printed"
    );
}

#[test]
fn run_prints_no_next_hint_when_stderr_is_not_a_terminal() {
    // The hint is for a person at a terminal; a service's journal or a pipe gets log lines only.
    // (Which text a terminal gets is the unit test `the_next_hint_lists_the_client_commands_...`.)
    let mut instance = Instance::start(Options::default());
    instance.wait_running();
    let quit = instance.cli(&["stop", "--exit"]);
    assert!(quit.status.success(), "{}", stderr(&quit));
    assert_eq!(instance.wait_exit().code(), Some(0), "{}", instance.logs());
    let logs = instance.logs();
    assert!(logs.contains("gateway running"), "{logs}");
    assert!(!logs.contains("in another terminal"), "{logs}");
}

#[test]
fn h6_plain_status_shows_health_reasons_and_last_known_facts_after_stop() {
    let instance = Instance::start(Options::default());
    instance.wait_running();
    let running = instance.cli(&["status"]);
    assert!(running.status.success(), "{}", stderr(&running));
    let text = stdout(&running);
    assert!(text.contains("version 2026.9.6-sim · protocol 4"), "{text}");
    assert!(!text.contains("last known"), "{text}");

    let stop = instance.cli(&["stop"]);
    assert!(stop.status.success(), "{}", stderr(&stop));
    instance.wait_for("state stopped", |status| status["state"] == "stopped");
    let stopped = instance.cli(&["status"]);
    assert!(stopped.status.success(), "{}", stderr(&stopped));
    let text = stdout(&stopped);
    assert!(text.contains("gateway stopped"), "{text}");
    assert!(
        text.contains("health degraded (gateway_not_running)"),
        "{text}"
    );
    assert!(
        text.contains("· last known version 2026.9.6-sim · protocol 4 ·"),
        "a stopped gateway's version is not shown as current: {text}"
    );
}
