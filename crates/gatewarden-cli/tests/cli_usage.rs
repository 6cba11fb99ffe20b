//! End-to-end: what `gatewarden` says about mistakes (bad flags, bad config, nothing running,
//! no simulator), `config print`, and `diagrams`. No gateway is started here.

mod support;

use std::path::Path;
use std::process::Output;

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn run_in(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = support::command(home);
    command.args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("run gatewarden")
}

fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("gatewarden.toml");
    std::fs::write(&path, text).expect("write config");
    path.display().to_string()
}

#[test]
fn bad_flag_is_a_usage_error_with_exit_2() {
    let home = tempfile::tempdir().expect("temp dir");
    let output = run_in(home.path(), &["run", "--no-such-flag"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("--no-such-flag"),
        "{}",
        stderr(&output)
    );
    let output = run_in(home.path(), &["run", "--port", "not-a-port"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--port"), "{}", stderr(&output));
}

#[test]
fn unknown_config_key_is_named_and_exits_2() {
    let home = tempfile::tempdir().expect("temp dir");
    let config = write_config(home.path(), "[heartbeat]\nintervall_ms = 100\n");
    let output = run_in(home.path(), &["run", "--config", &config], &[]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(message.contains("`heartbeat.intervall_ms`"), "{message}");
    assert!(message.contains("unknown field"), "{message}");
    assert!(message.contains(&config), "names the file: {message}");
}

#[test]
fn wrong_config_type_is_named_and_exits_2() {
    let home = tempfile::tempdir().expect("temp dir");
    let config = write_config(home.path(), "[heartbeat]\ninterval_ms = \"fast\"\n");
    let output = run_in(home.path(), &["run", "--config", &config], &[]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(message.contains("`heartbeat.interval_ms`"), "{message}");
    assert!(message.contains("invalid type"), "{message}");

    // A read batch of 0 would never read a frame: refused by its type, with the key named.
    let config = write_config(home.path(), "[rpc]\nread_batch = 0\n");
    let output = run_in(home.path(), &["config", "print", "--config", &config], &[]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(message.contains("`rpc.read_batch`"), "{message}");
    assert!(message.contains("nonzero"), "{message}");

    let config = write_config(home.path(), "port = 70000\n");
    let output = run_in(home.path(), &["config", "print", "--config", &config], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("`port`"), "{}", stderr(&output));

    let config = write_config(home.path(), "[heartbeat\n");
    let output = run_in(home.path(), &["run", "--config", &config], &[]);
    assert_eq!(
        output.status.code(),
        Some(2),
        "a TOML syntax error is a usage error"
    );
}

#[test]
fn bad_environment_override_names_key_and_variable() {
    let home = tempfile::tempdir().expect("temp dir");
    let output = run_in(
        home.path(),
        &["run"],
        &[("GATEWARDEN_HEARTBEAT__INTERVAL_MS", "soon")],
    );
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(message.contains("`heartbeat.interval_ms`"), "{message}");
    assert!(
        message.contains("GATEWARDEN_HEARTBEAT__INTERVAL_MS"),
        "{message}"
    );
}

#[test]
fn config_print_applies_precedence_and_redacts_the_token() {
    let home = tempfile::tempdir().expect("temp dir");
    let token_file = home.path().join("token");
    std::fs::write(&token_file, "sup3r-s3cret-token\n").expect("write token");
    let config = write_config(
        home.path(),
        "port = 20001\n[heartbeat]\ninterval_ms = 1000\ntimeout_ms = 500\n[reconnect]\nmax_attempts = 4\n",
    );
    let output = run_in(
        home.path(),
        &[
            "config",
            "print",
            "--config",
            &config,
            "--port",
            "20003",
            "--token-file",
            &token_file.display().to_string(),
        ],
        &[
            ("GATEWARDEN_PORT", "20002"),
            ("GATEWARDEN_HEARTBEAT__INTERVAL_MS", "2000"),
            ("OPENCLAW_GATEWAY_TOKEN", "env-s3cret-token"),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        !text.contains("sup3r-s3cret-token") && !text.contains("env-s3cret-token"),
        "{text}"
    );
    assert!(text.contains("[redacted]"), "{text}");
    let printed: toml::Table = text.parse().expect("config print is TOML");
    assert_eq!(
        printed["port"].as_integer(),
        Some(20003),
        "flag beats environment"
    );
    assert_eq!(
        printed["heartbeat"]["interval_ms"].as_integer(),
        Some(2000),
        "environment beats file"
    );
    assert_eq!(
        printed["heartbeat"]["timeout_ms"].as_integer(),
        Some(500),
        "file beats defaults"
    );
    assert_eq!(printed["reconnect"]["max_attempts"].as_integer(), Some(4));
    assert_eq!(
        printed["heartbeat"]["max_misses"].as_integer(),
        Some(3),
        "defaults fill the rest"
    );
    assert_eq!(printed["profile"].as_str(), Some("sim"));

    // The environment token is redacted too.
    let output = run_in(
        home.path(),
        &["config", "print"],
        &[("OPENCLAW_GATEWAY_TOKEN", "env-s3cret-token")],
    );
    assert!(output.status.success());
    let text = stdout(&output);
    assert!(
        !text.contains("env-s3cret-token") && text.contains("[redacted]"),
        "{text}"
    );
}

#[test]
fn status_without_a_running_instance_says_none_is_running() {
    let home = tempfile::tempdir().expect("temp dir");
    let control = home.path().join("nothing.sock");
    let output = run_in(
        home.path(),
        &["status", "--control", &control.display().to_string()],
        &[],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("no gatewarden is running"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn x1_a_missing_explicit_simulator_says_what_was_tried() {
    let home = tempfile::tempdir().expect("temp dir");
    let missing = home.path().join("nowhere").join("gatewarden-sim");
    let output = support::command(home.path())
        .args(["run", "--port", &support::free_port().to_string()])
        .arg("--state-dir")
        .arg(home.path().join("state"))
        .arg("--control")
        .arg(home.path().join("gw.sock"))
        .env("GATEWARDEN_SIM_BIN", &missing)
        .output()
        .expect("run gatewarden");
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(message.contains("gatewarden-sim not found"), "{message}");
    assert!(
        message.contains(&missing.display().to_string()),
        "{message}"
    );
    assert!(message.contains("GATEWARDEN_SIM_BIN"), "{message}");
}

#[test]
fn x1_the_built_in_simulator_runs_as_gatewarden_sim() {
    // A copy of the binary alone in a folder: no gatewarden-sim anywhere, and `sim` still works.
    let home = tempfile::tempdir().expect("temp dir");
    let lonely = home.path().join("bin").join("gatewarden");
    std::fs::create_dir_all(lonely.parent().expect("dir")).expect("mkdir");
    std::fs::copy(support::gatewarden(), &lonely).expect("copy binary");
    let output = std::process::Command::new(&lonely)
        .args(["sim", "--version"])
        .env("PATH", home.path().join("empty"))
        .output()
        .expect("run the copy");
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "2026.9.6-sim"
    );
}

#[test]
fn openclaw_not_found_says_what_was_tried() {
    let home = tempfile::tempdir().expect("temp dir");
    let output = run_in(
        home.path(),
        &[
            "run",
            "--profile",
            "openclaw",
            "--state-dir",
            &home.path().join("s").display().to_string(),
        ],
        &[
            (
                "GATEWARDEN_OPENCLAW_HOME",
                &home.path().join("oc").display().to_string(),
            ),
            ("PATH", "/nonexistent"),
        ],
    );
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains("gw/node_modules/openclaw/openclaw.mjs"),
        "{message}"
    );
    assert!(message.contains("scripts/install-openclaw.sh"), "{message}");
}

#[test]
fn diagrams_are_the_core_renderings() {
    let home = tempfile::tempdir().expect("temp dir");
    let out = home.path().join("diagrams");
    let output = run_in(
        home.path(),
        &["diagrams", "--out", &out.display().to_string()],
        &[],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    // The committed copies are what xtask writes from the same machine (and the workspace's
    // freshness check keeps them current); exploring the machine again here would double the
    // slowest part of this test.
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../state-diagrams");
    let mut compared = 0;
    for entry in std::fs::read_dir(&committed).expect("state-diagrams/") {
        let name = entry.expect("entry").file_name();
        let name = name.to_string_lossy();
        if !(name.ends_with(".dot") || name.ends_with(".mmd")) {
            continue;
        }
        let written = std::fs::read_to_string(out.join(&*name)).expect("diagram written");
        let expected = std::fs::read_to_string(committed.join(&*name)).expect("committed diagram");
        assert_eq!(
            written, expected,
            "{name} differs from state-diagrams/{name}"
        );
        compared += 1;
    }
    assert!(
        compared >= 3,
        "the complete diagram, the overview and the parts"
    );
}

/// Q3: values that parse but cannot work are usage errors naming the key and where it came from.
#[test]
fn q3_values_that_cannot_work_exit_2_naming_the_key() {
    let home = tempfile::tempdir().expect("temp dir");
    for (text, key) in [
        ("[heartbeat]\ninterval_ms = 0\n", "heartbeat.interval_ms"),
        (
            "[connect]\nmax_frame_bytes = 0\n",
            "connect.max_frame_bytes",
        ),
        (
            "[connect]\nmin_protocol = 5\nmax_protocol = 4\n",
            "connect.min_protocol",
        ),
        ("[reconnect]\njitter = nan\n", "reconnect.jitter"),
        ("[reconnect]\njitter = -0.5\n", "reconnect.jitter"),
    ] {
        let config = write_config(home.path(), text);
        let output = run_in(home.path(), &["run", "--config", &config], &[]);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{text}: {message}");
        assert!(message.contains(key), "{text}: {message}");
        assert!(message.contains(&config), "names the file: {message}");
    }
    // Port 0 would have the gateway pick a port nobody tells the supervisor: it used to probe
    // port 0 until the start timed out.
    let output = run_in(home.path(), &["run", "--port", "0"], &[]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert!(
        message.contains("port: must be a fixed port") && message.contains("--port"),
        "{message}"
    );
    let output = run_in(
        home.path(),
        &["run"],
        &[("GATEWARDEN_HEARTBEAT__INTERVAL_MS", "0")],
    );
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert!(
        message.contains("heartbeat.interval_ms")
            && message.contains("GATEWARDEN_HEARTBEAT__INTERVAL_MS"),
        "{message}"
    );
}

/// Q3: a missing, unreadable or endless config or token file is a usage error (exit 2), read
/// with a 1 MiB bound (`/dev/zero` used to grow the supervisor to gigabytes).
#[test]
fn q3_missing_or_oversized_config_and_token_files_exit_2() {
    let home = tempfile::tempdir().expect("temp dir");
    let missing = home.path().join("missing.toml");
    let missing = missing.display().to_string();
    for args in [
        vec!["run", "--config", missing.as_str()],
        vec!["run", "--config", "/dev/zero"],
        vec!["run", "--token-file", missing.as_str()],
        vec!["run", "--token-file", "/dev/zero"],
    ] {
        let started = std::time::Instant::now();
        let output = run_in(home.path(), &args, &[]);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {message}");
        assert!(message.contains("cannot read"), "{args:?}: {message}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{args:?} took {:?}",
            started.elapsed()
        );
        if args[2] == "/dev/zero" {
            assert!(message.contains("larger than 1048576 bytes"), "{message}");
        }
    }
}

/// Q3: a misspelled `GATEWARDEN_*` variable is an error naming the nearest known one, not
/// silently ignored.
#[test]
fn q3_an_unknown_gatewarden_variable_names_the_nearest_known_one() {
    let home = tempfile::tempdir().expect("temp dir");
    for (name, nearest) in [
        (
            "GATEWARDEN_HEARTBEAT_INTERVAL_MS",
            "GATEWARDEN_HEARTBEAT__INTERVAL_MS",
        ),
        ("GATEWARDEN_TOKN", "GATEWARDEN_TOKEN"),
        ("GATEWARDEN_PORTT", "GATEWARDEN_PORT"),
    ] {
        let output = run_in(home.path(), &["run"], &[(name, "100")]);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{name}: {message}");
        assert!(
            message.contains(&format!(
                "unknown environment variable {name}; did you mean {nearest}?"
            )),
            "{message}"
        );
    }
}
