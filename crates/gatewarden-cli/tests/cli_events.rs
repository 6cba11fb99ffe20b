//! Y1 end to end: the control socket's event stream (`{"cmd":"subscribe"}`), `hello`,
//! `gatewarden events`, and instance discovery (`gatewarden ls`, port-less client commands),
//! against `gatewarden run` with the bundled simulator.

mod support;

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use support::{Instance, KillOnDrop, Options, DEADLINE};

/// A raw subscriber on the control socket.
struct Subscriber {
    reader: BufReader<UnixStream>,
}

impl Subscriber {
    fn connect(control: &Path) -> Subscriber {
        let mut stream = UnixStream::connect(control).expect("connect to the control socket");
        stream
            .write_all(b"{\"cmd\":\"subscribe\"}\n")
            .expect("send subscribe");
        stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
        Subscriber {
            reader: BufReader::new(stream),
        }
    }

    /// The next line, or `None` at EOF.
    fn next(&mut self) -> Option<Value> {
        let mut line = String::new();
        let read = self
            .reader
            .read_line(&mut line)
            .expect("read a stream line");
        if read == 0 {
            return None;
        }
        Some(serde_json::from_str(&line).unwrap_or_else(|error| panic!("{error}: {line}")))
    }

    /// Lines until one satisfies `accept` (which is returned with everything before it).
    fn until(&mut self, what: &str, accept: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            let line = self
                .next()
                .unwrap_or_else(|| panic!("stream ended before {what}: {seen:?}"));
            let done = accept(&line);
            seen.push(line);
            if done {
                return seen;
            }
        }
    }
}

fn flood(instance: &Instance, count: u64, bytes: u64) {
    let params = json!({"kind": "event-flood", "count": count, "bytes": bytes}).to_string();
    let output = instance.cli(&["rpc", "sim.fault", &params]);
    assert!(
        output.status.success(),
        "sim.fault failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn flood_n(line: &Value) -> Option<u64> {
    (line["kind"] == "notification" && line["method"] == "sim.flood")
        .then(|| line["params"]["n"].as_u64())
        .flatten()
}

#[test]
fn y1_snapshot_first_then_every_event_in_order_with_seq_without_gaps() {
    let instance = Instance::start(Options::default());
    instance.wait_running();
    let mut subscriber = Subscriber::connect(&instance.control);
    let first = subscriber.next().expect("a first line");
    assert_eq!(first["kind"], "snapshot", "{first}");
    assert_eq!(first["seq"], 1, "{first}");
    assert_eq!(first["status"]["state"], "running", "{first}");
    assert_eq!(first["status"]["port"], instance.port, "{first}");
    assert!(first["ts"].as_u64().unwrap() > 1_600_000_000_000, "{first}");

    const COUNT: u64 = 300;
    flood(&instance, COUNT, 1);
    let lines = subscriber.until("the last flood event", |line| {
        flood_n(line) == Some(COUNT - 1)
    });
    let mut seq = 1;
    let mut next_n = 0;
    for line in &lines {
        assert!(
            line.get("lagged").is_none(),
            "a keeping-up subscriber lagged: {line}"
        );
        seq += 1;
        assert_eq!(line["seq"], seq, "a gap in seq: {line}");
        if let Some(n) = flood_n(line) {
            assert_eq!(n, next_n, "events out of order");
            next_n += 1;
        }
    }
    assert_eq!(next_n, COUNT);
}

#[test]
fn y1_several_subscribers_each_get_every_event() {
    let instance = Instance::start(Options::default());
    instance.wait_running();
    let mut subscribers: Vec<Subscriber> = (0..3)
        .map(|_| Subscriber::connect(&instance.control))
        .collect();
    for subscriber in &mut subscribers {
        assert_eq!(subscriber.next().unwrap()["kind"], "snapshot");
    }
    const COUNT: u64 = 200;
    flood(&instance, COUNT, 1);
    for subscriber in &mut subscribers {
        let lines = subscriber.until("the last flood event", |line| {
            flood_n(line) == Some(COUNT - 1)
        });
        let ns: Vec<u64> = lines.iter().filter_map(flood_n).collect();
        assert_eq!(ns, (0..COUNT).collect::<Vec<_>>());
    }
}

/// Events in the flood past a stalled subscriber.
const STALL_FLOOD: u64 = 20_000;

/// An instance with a small event queue (`extra_env` added) and two subscribers, one that reads
/// nothing after its snapshot and one that reads on, then a flood of [`STALL_FLOOD`] 512-byte
/// events: megabytes, far more than the stalled subscriber's socket buffers hold (its stream's
/// writer is blocked) and than a queue of 16 holds. Returns once the reader has seen the last
/// one (so all were published), with the lines it read.
fn flood_past_a_stalled_subscriber(
    extra_env: Vec<(String, String)>,
) -> (Instance, Subscriber, Vec<Value>) {
    let mut env = vec![("GATEWARDEN_EVENT_QUEUE".to_string(), "16".to_string())];
    env.extend(extra_env);
    let instance = Instance::start(Options {
        env,
        ..Options::default()
    });
    instance.wait_running();
    let mut stalled = Subscriber::connect(&instance.control);
    assert_eq!(stalled.next().unwrap()["kind"], "snapshot");
    let mut reader = Subscriber::connect(&instance.control);
    assert_eq!(reader.next().unwrap()["kind"], "snapshot");
    flood(&instance, STALL_FLOOD, 512);
    let lines = reader.until("the last flood event", |line| {
        flood_n(line) == Some(STALL_FLOOD - 1)
    });
    (instance, stalled, lines)
}

#[test]
fn y1_a_stalled_subscriber_gets_a_lagged_line_and_blocks_nobody() {
    let (instance, mut stalled, lines) = flood_past_a_stalled_subscriber(Vec::new());
    // The supervisor kept serving while one subscriber read nothing.
    assert!(!lines.is_empty());
    let started = Instant::now();
    let status = instance
        .status()
        .expect("status answers while a subscriber stalls");
    assert_eq!(status["state"], "running");
    assert!(started.elapsed() < Duration::from_secs(10));

    // The stalled one now reads: a lagged marker, and seq jumps by exactly what it lost.
    let mut previous_seq = 1;
    // Lagged lines may come back to back (the ring overran again before the next event).
    let mut lost = 0;
    let lines = stalled.until("the last flood event", |line| {
        flood_n(line) == Some(STALL_FLOOD - 1)
    });
    for line in &lines {
        if let Some(n) = line["lagged"].as_u64() {
            assert!(n > 0, "{line}");
            lost += n;
            continue;
        }
        let seq = line["seq"].as_u64().expect("an event line has seq");
        assert_eq!(seq, previous_seq + 1 + lost, "{line}");
        lost = 0;
        previous_seq = seq;
    }
    assert!(
        lines.iter().any(|line| line.get("lagged").is_some()),
        "no lagged line after {STALL_FLOOD} events into a queue of 16"
    );
}

#[test]
fn y1_the_stream_ends_cleanly_when_the_instance_stops() {
    let mut instance = Instance::start(Options::default());
    instance.wait_running();
    let mut subscriber = Subscriber::connect(&instance.control);
    assert_eq!(subscriber.next().unwrap()["kind"], "snapshot");
    let output = instance.cli(&["stop", "--exit"]);
    assert!(output.status.success());
    let mut lines = Vec::new();
    while let Some(line) = subscriber.next() {
        lines.push(line);
    }
    let last = lines.last().expect("a final line");
    assert_eq!(last, &json!({"end": "instanceStopped"}), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|line| line["kind"] == "status" && line["status"]["state"] == "stopped"),
        "the final status was not delivered: {lines:?}"
    );
    assert!(instance.wait_exit().success());
}

/// Y1: a subscriber that stopped reading holds up the exit for `control_plane.stream_end_grace_ms`
/// and no longer: its stream is blocked on a full socket, so the instance waits out the grace
/// and then exits anyway.
#[test]
fn y1_a_subscriber_that_stopped_reading_holds_up_the_exit_for_the_grace_only() {
    // Far from the 2 s default, so a grace that ignored the key would fail the lower bound.
    const GRACE: Duration = Duration::from_millis(4_000);
    let (mut instance, stalled, _) = flood_past_a_stalled_subscriber(vec![(
        "GATEWARDEN_CONTROL_PLANE__STREAM_END_GRACE_MS".into(),
        GRACE.as_millis().to_string(),
    )]);
    assert!(instance.cli(&["stop", "--exit"]).status.success());
    let stopped = Instant::now();
    assert!(instance.wait_exit().success());
    let waited = stopped.elapsed();
    // The reader's stream ends at once; the stalled one is waited for, up to the grace.
    assert!(
        waited >= GRACE - Duration::from_millis(100),
        "exited after {waited:?}: the grace of {GRACE:?} was not waited out"
    );
    assert!(
        waited < GRACE + Duration::from_secs(10),
        "exited after {waited:?}: the grace did not bound the wait"
    );
    drop(stalled);
}

#[test]
fn y1_hello_names_the_protocol_version_and_features() {
    let instance = Instance::start(Options::default());
    instance.wait_running();
    let mut stream = UnixStream::connect(&instance.control).unwrap();
    stream.write_all(b"{\"cmd\":\"hello\"}\n").unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    let answer: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(answer["ok"]["kind"], "hello", "{answer}");
    assert_eq!(answer["ok"]["protocol"], 2, "{answer}");
    let features = answer["ok"]["features"].as_array().unwrap();
    assert!(features.contains(&json!("subscribe")), "{answer}");
    assert!(features.contains(&json!("lagged")), "{answer}");
}

#[test]
fn events_command_prints_lines_and_ends_when_the_instance_stops() {
    let mut instance = Instance::start(Options::default());
    instance.wait_running();
    let spawn = |json: bool| {
        let mut command = support::command(instance.dir.path());
        command
            .arg("events")
            .arg("--control")
            .arg(&instance.control);
        if json {
            command.arg("--json");
        }
        KillOnDrop(
            command
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn gatewarden events"),
        )
    };
    let mut text = spawn(false);
    let mut json_lines = spawn(true);
    // Both have subscribed once their first line is out; then end the instance.
    let mut text_out = BufReader::new(text.0.stdout.take().unwrap());
    let mut json_out = BufReader::new(json_lines.0.stdout.take().unwrap());
    let mut first_text = String::new();
    text_out.read_line(&mut first_text).unwrap();
    assert!(first_text.contains("snapshot"), "{first_text}");
    assert!(first_text.contains("running"), "{first_text}");
    let mut first_json = String::new();
    json_out.read_line(&mut first_json).unwrap();
    let first: Value = serde_json::from_str(&first_json).unwrap();
    assert_eq!(first["kind"], "snapshot");

    assert!(instance.cli(&["stop", "--exit"]).status.success());
    let rest_text: Vec<String> = text_out.lines().map(Result::unwrap).collect();
    let rest_json: Vec<Value> = json_out
        .lines()
        .map(|line| serde_json::from_str(&line.unwrap()).unwrap())
        .collect();
    assert!(text.0.wait().unwrap().success());
    assert!(json_lines.0.wait().unwrap().success());
    assert_eq!(
        rest_text.last().map(String::as_str),
        Some("(instance stopped)")
    );
    assert!(
        rest_text
            .iter()
            .any(|line| line.contains("status") && line.contains("stopped")),
        "{rest_text:?}"
    );
    assert_eq!(rest_json.last(), Some(&json!({"end": "instanceStopped"})));
    assert!(instance.wait_exit().success());
}

fn ls_json(home: &Path) -> Vec<Value> {
    let output = support::command(home)
        .args(["ls", "--json"])
        .output()
        .expect("run gatewarden ls");
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice::<Value>(&output.stdout)
        .expect("ls --json is JSON")
        .as_array()
        .cloned()
        .expect("an array")
}

#[test]
fn ls_and_port_less_commands_use_the_only_running_instance() {
    let home = tempfile::tempdir().unwrap();
    let instance = Instance::start(Options {
        home: Some(home.path().to_path_buf()),
        ..Options::default()
    });
    instance.wait_running();
    let listed = ls_json(home.path());
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["port"], instance.port);
    assert_eq!(listed[0]["profile"], "sim");
    assert_eq!(listed[0]["state"], "running");
    assert_eq!(listed[0]["pid"], instance.pid());
    assert_eq!(listed[0]["control"], instance.control.display().to_string());
    let table = support::command(home.path()).arg("ls").output().unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains(&instance.port.to_string()), "{table}");
    assert!(table.contains("running"), "{table}");

    // No --port, no --control: the only instance, although it is not on the default port.
    let output = support::command(home.path())
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let status: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(status["port"], instance.port);
    let output = support::command(home.path())
        .args(["rpc", "echo", r#"{"a":1}"#])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");

    drop(instance);
    // A killed instance leaves its record; ls checks and does not list it.
    assert!(ls_json(home.path()).is_empty());
}

#[test]
fn port_less_commands_with_two_instances_list_them_and_ask_for_a_port() {
    let home = tempfile::tempdir().unwrap();
    let start = || {
        Instance::start(Options {
            home: Some(home.path().to_path_buf()),
            ..Options::default()
        })
    };
    let first = start();
    let second = start();
    first.wait_running();
    second.wait_running();
    let listed = ls_json(home.path());
    let ports: Vec<&Value> = listed.iter().map(|instance| &instance["port"]).collect();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(ports.contains(&&json!(first.port)) && ports.contains(&&json!(second.port)));

    let output = support::command(home.path())
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--port"), "{stderr}");
    assert!(stderr.contains(&first.port.to_string()), "{stderr}");
    assert!(stderr.contains(&second.port.to_string()), "{stderr}");

    // With --port alone the one on that port answers (its control socket found by its record).
    let output = support::command(home.path())
        .args(["status", "--json", "--port", &second.port.to_string()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let status: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(status["port"], second.port);
}
