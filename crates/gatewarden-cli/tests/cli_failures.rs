//! F8 end to end: `gatewarden run` reports a give-up where supervisors look (`/healthz` 503, and
//! with `--exit-on-failure` a non-zero exit), and the actionable `--openclaw DIR` message.

mod support;

use support::{Instance, Options};

/// A simulator that crashes 300 ms after every start, with one reconnect attempt allowed: the
/// supervisor gives up (N2) a few seconds in.
fn crashing(http: bool, exit_on_failure: bool, config_dir: &tempfile::TempDir) -> Instance {
    let config = config_dir.path().join("gatewarden.toml");
    std::fs::write(
        &config,
        "[reconnect]\nmax_attempts = 1\nbase_delay_ms = 200\njitter = 0.0\n",
    )
    .unwrap();
    let mut args = vec!["--config".to_string(), config.display().to_string()];
    if exit_on_failure {
        args.push("--exit-on-failure".into());
    }
    Instance::start(Options {
        http,
        args,
        command: vec![
            support::sim_binary().display().to_string(),
            "--port".into(),
            "{port}".into(),
            "--crash-after-ms".into(),
            "300".into(),
        ],
        ..Options::default()
    })
}

#[test]
fn f8_healthz_is_503_after_a_give_up() {
    let config_dir = tempfile::tempdir().unwrap();
    let instance = crashing(true, false, &config_dir);
    instance.wait_for("state error", |status| status["state"] == "error");
    support::eventually("/healthz 503", || instance.http_get("/healthz").0 == 503);
    let (_, body) = instance.http_get("/healthz");
    assert!(body.contains("gaveUp"), "{body}");
    assert!(
        body.contains("Failed to reconnect after maximum attempts"),
        "{body}"
    );
    // A new start ends the give-up.
    let start = instance.cli(&["start"]);
    assert!(start.status.success() || start.status.code() == Some(1));
    support::eventually("/healthz 200 again", || {
        instance.http_get("/healthz").0 == 200
    });
}

#[test]
fn f8_exit_on_failure_exits_non_zero_after_a_give_up() {
    let config_dir = tempfile::tempdir().unwrap();
    let mut instance = crashing(false, true, &config_dir);
    let status = instance.wait_exit();
    assert_eq!(status.code(), Some(1), "{}", instance.logs());
    let logs = instance.logs();
    assert!(logs.contains("gave up"), "{logs}");
    assert!(
        logs.contains("Failed to reconnect after maximum attempts"),
        "{logs}"
    );
}

#[test]
fn f8_without_exit_on_failure_run_stays_up_after_a_give_up() {
    let config_dir = tempfile::tempdir().unwrap();
    let instance = crashing(false, false, &config_dir);
    instance.wait_for("state error", |status| status["state"] == "error");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(instance.status().is_some(), "still answering");
}

#[test]
fn openclaw_flag_with_a_directory_says_where_the_entry_was_expected() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("openclaw-install");
    std::fs::create_dir_all(&dir).unwrap();
    let output = support::command(home.path())
        .args(["run", "--profile", "openclaw", "--openclaw"])
        .arg(&dir)
        .args(["--state-dir"])
        .arg(home.path().join("state"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("is a directory"), "{text}");
    assert!(
        text.contains("node_modules/openclaw/openclaw.mjs"),
        "{text}"
    );
    // With the entry inside, the message names it.
    let entry = dir.join("node_modules/openclaw/openclaw.mjs");
    std::fs::create_dir_all(entry.parent().unwrap()).unwrap();
    std::fs::write(&entry, "").unwrap();
    let output = support::command(home.path())
        .args(["run", "--profile", "openclaw", "--openclaw"])
        .arg(&dir)
        .args(["--state-dir"])
        .arg(home.path().join("state"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(
        text.contains(&format!("--openclaw {}", entry.display())),
        "{text}"
    );
}

#[test]
fn f8_sd_notify_status_says_gave_up() {
    let config_dir = tempfile::tempdir().unwrap();
    let socket_path = config_dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let config = config_dir.path().join("gatewarden.toml");
    std::fs::write(
        &config,
        "[reconnect]\nmax_attempts = 1\nbase_delay_ms = 200\njitter = 0.0\n",
    )
    .unwrap();
    let _instance = Instance::start(Options {
        args: vec!["--config".into(), config.display().to_string()],
        env: vec![("NOTIFY_SOCKET".into(), socket_path.display().to_string())],
        command: vec![
            support::sim_binary().display().to_string(),
            "--port".into(),
            "{port}".into(),
            "--crash-after-ms".into(),
            "300".into(),
        ],
        ..Options::default()
    });
    let mut buffer = [0u8; 4096];
    let mut seen = Vec::new();
    loop {
        let read = socket.recv(&mut buffer).expect("a datagram within 30 s");
        let text = String::from_utf8_lossy(&buffer[..read]).into_owned();
        if text.starts_with("STATUS=gave up:") {
            assert!(text.contains("maximum attempts"), "{text}");
            break;
        }
        seen.push(text);
        assert!(seen.len() < 200, "{seen:?}");
    }
}
