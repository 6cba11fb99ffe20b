//! The faults and the RPC that the liveness rules (BEHAVIOUR.md Revision 2, D1–D4, G2) are proved
//! with: `busy` (the event loop spins: CPU of the event-loop thread grows), `frozen-soft` (the
//! event loop sleeps: no CPU, state `S`), both by `sim.fault` and by flag, and the core probe
//! `system-presence`. Real simulator processes, real sockets, the kernel's own accounting in /proc.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// How long the event loop is blocked in these tests: long against scheduling noise, short for CI.
const BLOCK_MS: u64 = 1500;

/// CPU time (user + system) and scheduler state of one thread, from `/proc/<pid>/task/<tid>/stat`.
fn thread_cpu_and_state(pid: u32, tid: u32) -> (Duration, char) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat"))
        .unwrap_or_else(|error| panic!("read /proc/{pid}/task/{tid}/stat: {error}"));
    cpu_and_state_of(&stat)
}

/// CPU time (all threads) and state of the whole process, from `/proc/<pid>/stat`.
fn process_cpu_and_state(pid: u32) -> (Duration, char) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|error| panic!("read /proc/{pid}/stat: {error}"));
    cpu_and_state_of(&stat)
}

fn cpu_and_state_of(stat: &str) -> (Duration, char) {
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("stat has a comm field")
        .1
        .split_whitespace()
        .collect();
    // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    let state = fields[0].chars().next().expect("state");
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    (Duration::from_millis(ticks * 1000 / per_second), state)
}

/// Time on the CPU and time waiting for one (runnable but not running), from
/// `/proc/<pid>/task/<tid>/schedstat`. Together they are the time the thread wanted the CPU: for
/// a spinning thread that is the wall time, whatever share of a core a loaded machine gives it.
fn thread_schedstat(pid: u32, tid: u32) -> (Duration, Duration) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat"))
        .unwrap_or_else(|error| panic!("read /proc/{pid}/task/{tid}/schedstat: {error}"));
    let mut fields = text
        .split_whitespace()
        .map(|field| field.parse::<u64>().expect("ns"));
    let on_cpu = Duration::from_nanos(fields.next().expect("run time"));
    let waiting = Duration::from_nanos(fields.next().expect("wait time"));
    (on_cpu, waiting)
}

/// Thread ids of the process.
fn threads(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("task dir")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// What a client saw while the event loop was blocked.
struct Observed {
    /// When the fault's own reply arrived (the block starts right after it is flushed).
    fault_reply_at: Instant,
    /// Every frame after that, with its arrival time, until the probe request's reply.
    frames: Vec<(Instant, Value)>,
    /// When the reply to the `health` request sent during the block arrived.
    late_reply_at: Instant,
    /// When the pong to our ping sent during the block arrived.
    pong_at: Instant,
    /// Scheduler states of the event-loop thread sampled during the block.
    states: Vec<char>,
    /// CPU time of the event-loop thread (tid == pid) across the block.
    loop_cpu: Duration,
    /// CPU time of the whole process across the block.
    process_cpu: Duration,
    /// Time the event-loop thread was running or runnable across the block (schedstat).
    loop_wanted_cpu: Duration,
}

/// Injects `kind` for [`BLOCK_MS`] on an admin connection (ticks every 100 ms), then sends a
/// ping and a `health` request during the block and records when everything arrived.
async fn observe_block(kind: &str) -> Observed {
    let (sim, listening) = sim().args(&["--tick-interval-ms", "100"]).start();
    let pid = listening.pid;
    assert_eq!(threads(pid), vec![pid], "the simulator runs on one thread");
    let mut client = Client::admin(listening.port, None).await;
    // Ticks flow before the fault.
    client
        .event("tick", SOON)
        .await
        .expect("a tick before the fault");
    let (loop_before, _) = thread_cpu_and_state(pid, pid);
    let (process_before, _) = process_cpu_and_state(pid);
    let (run_before, wait_before) = thread_schedstat(pid, pid);
    let reply = client
        .request("sim.fault", json!({"kind": kind, "ms": BLOCK_MS}))
        .await;
    let fault_reply_at = Instant::now();
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["payload"]["applied"], kind);

    // During the block: sample the scheduler state (from 100 ms in: the simulator is still
    // finishing the flush and its log line when the reply arrives), then queue a ping and a request.
    std::thread::sleep(Duration::from_millis(100));
    let mut states = Vec::new();
    while fault_reply_at.elapsed() < Duration::from_millis(BLOCK_MS / 2) {
        states.push(thread_cpu_and_state(pid, pid).1);
        std::thread::sleep(Duration::from_millis(20));
    }
    client
        .ws
        .send(Message::Ping(b"late".to_vec().into()))
        .await
        .expect("ping");
    client
        .send_text(
            json!({"type": "req", "id": "during", "method": "health", "params": {}}).to_string(),
        )
        .await;

    let mut frames = Vec::new();
    let mut pong_at = None;
    let mut late_reply_at = None;
    let deadline = Instant::now() + SOON;
    while late_reply_at.is_none() || pong_at.is_none() {
        let left = deadline
            .checked_duration_since(Instant::now())
            .expect("the reply and the pong came back after the block");
        let message = tokio::time::timeout(left, client.ws.next())
            .await
            .expect("reply and pong within the deadline")
            .expect("socket open")
            .expect("socket ok");
        let at = Instant::now();
        match message {
            Message::Pong(payload) => {
                assert_eq!(&payload[..], b"late");
                pong_at = Some(at);
            }
            Message::Text(text) => {
                let frame: Value = serde_json::from_str(&text).expect("json frame");
                if frame["id"] == "during" {
                    assert_eq!(frame["ok"], true, "{frame}");
                    late_reply_at = Some(at);
                }
                frames.push((at, frame));
            }
            _ => {}
        }
    }
    let (loop_after, _) = thread_cpu_and_state(pid, pid);
    let (process_after, _) = process_cpu_and_state(pid);
    let (run_after, wait_after) = thread_schedstat(pid, pid);
    drop(sim);
    Observed {
        fault_reply_at,
        frames,
        late_reply_at: late_reply_at.expect("reply"),
        pong_at: pong_at.expect("pong"),
        states,
        loop_cpu: loop_after - loop_before,
        process_cpu: process_after - process_before,
        loop_wanted_cpu: (run_after - run_before) + (wait_after - wait_before),
    }
}

/// What both blocks share: nothing goes out while blocked, everything queued is answered after.
fn assert_silent_then_answers(observed: &Observed) {
    let block = Duration::from_millis(BLOCK_MS);
    // A little slack: the block starts just after the fault reply is flushed, and our clock
    // started when we read that reply.
    let slack = Duration::from_millis(100);
    assert!(
        observed.late_reply_at - observed.fault_reply_at >= block - slack,
        "the request sent during the block was answered after {:?}, before the block of {block:?} ended",
        observed.late_reply_at - observed.fault_reply_at
    );
    assert!(
        observed.pong_at - observed.fault_reply_at >= block - slack,
        "the ping sent during the block was answered after {:?}",
        observed.pong_at - observed.fault_reply_at
    );
    // No frame at all (ticks run every 100 ms) while blocked.
    let quiet_from = observed.fault_reply_at + slack;
    let quiet_until = observed.fault_reply_at + block - slack;
    let during: Vec<&Value> = observed
        .frames
        .iter()
        .filter(|(at, _)| *at > quiet_from && *at < quiet_until)
        .map(|(_, frame)| frame)
        .collect();
    assert!(during.is_empty(), "frames sent while blocked: {during:?}");
}

/// The event-loop thread (tid == pid) spun through the block: it wanted the CPU the whole time
/// (running or runnable), and its CPU time, which a supervisor reads, grew well beyond an idle
/// simulator's few ms. On a loaded 2-core box it may get only part of a core, so the CPU time
/// itself is only asked to reach a tenth of the block.
fn assert_spun(cpu: Duration, wanted_cpu: Duration, what: &str) {
    let block = Duration::from_millis(BLOCK_MS);
    assert!(
        wanted_cpu >= block * 8 / 10,
        "{what}: the event-loop thread wanted the CPU for only {wanted_cpu:?} of a {block:?} block"
    );
    assert!(
        cpu >= block / 10,
        "{what}: event-loop thread CPU grew by only {cpu:?} during a {block:?} block"
    );
}

#[tokio::test]
async fn d2_busy_fault_burns_cpu_on_the_event_loop_thread_and_answers_queued_frames_after() {
    let observed = observe_block("busy").await;
    assert_silent_then_answers(&observed);
    assert_spun(observed.loop_cpu, observed.loop_wanted_cpu, "busy fault");
    assert!(
        observed.states.iter().all(|state| *state == 'R'),
        "a spinning thread is running or runnable: {:?}",
        observed.states
    );
}

#[tokio::test]
async fn d2_frozen_soft_fault_blocks_without_cpu_in_state_s_and_answers_queued_frames_after() {
    let observed = observe_block("frozen-soft").await;
    assert_silent_then_answers(&observed);
    // No CPU for the whole process (no worker thread burns it either): the little there is
    // comes from serving the reply, the pong and the ticks before and after.
    assert!(
        observed.process_cpu <= Duration::from_millis(BLOCK_MS / 10),
        "process CPU grew by {:?} during a frozen-soft block of {BLOCK_MS} ms",
        observed.process_cpu
    );
    assert!(
        observed.states.iter().all(|state| *state == 'S'),
        "a sleeping event loop is S, never T or R: {:?}",
        observed.states
    );
}

/// The flag forms: `--busy-ms` / `--frozen-soft-ms` after `--…-after-ms`, once after the first listen.
async fn block_by_flag(kind: &str) -> (Duration, Vec<char>, Duration, Duration) {
    let (sim, listening) = sim()
        .args(&[
            &format!("--{kind}-after-ms"),
            "2000",
            &format!("--{kind}-ms"),
            &BLOCK_MS.to_string(),
        ])
        .start();
    let pid = listening.pid;
    let mut client = Client::admin(listening.port, None).await;
    let (cpu_before, _) = thread_cpu_and_state(pid, pid);
    let (run_before, wait_before) = thread_schedstat(pid, pid);
    assert!(
        sim.wait_stderr(
            &format!("fault: {kind} for {BLOCK_MS} ms on the event-loop thread (tid {pid})"),
            SOON
        ),
        "the block starts on the main thread: {:?}",
        sim.stderr()
    );
    let blocked_at = Instant::now();
    std::thread::sleep(Duration::from_millis(100));
    let mut states = Vec::new();
    while blocked_at.elapsed() < Duration::from_millis(BLOCK_MS / 2) {
        states.push(thread_cpu_and_state(pid, pid).1);
        std::thread::sleep(Duration::from_millis(20));
    }
    let reply = client.request("health", json!({})).await;
    assert_eq!(reply["ok"], true);
    let answered_after = blocked_at.elapsed();
    let (cpu_after, _) = thread_cpu_and_state(pid, pid);
    let (run_after, wait_after) = thread_schedstat(pid, pid);
    let wanted = (run_after - run_before) + (wait_after - wait_before);
    (answered_after, states, cpu_after - cpu_before, wanted)
}

#[tokio::test]
async fn d2_busy_and_frozen_soft_flags_block_the_event_loop_once_after_listening() {
    let block = Duration::from_millis(BLOCK_MS);
    let slack = Duration::from_millis(150);
    let (answered_after, states, cpu, wanted) = block_by_flag("busy").await;
    assert!(
        answered_after >= block - slack,
        "busy: answered after {answered_after:?}"
    );
    assert!(states.iter().all(|state| *state == 'R'), "busy: {states:?}");
    assert_spun(cpu, wanted, "busy flag");

    let (answered_after, states, cpu, _) = block_by_flag("frozen-soft").await;
    assert!(
        answered_after >= block - slack,
        "frozen-soft: answered after {answered_after:?}"
    );
    assert!(
        states.iter().all(|state| *state == 'S'),
        "frozen-soft: {states:?}"
    );
    assert!(
        cpu <= block / 10,
        "frozen-soft: event-loop CPU grew by {cpu:?}"
    );
}

#[tokio::test]
async fn d4_system_presence_answers_the_gateway_self_row_and_needs_operator_read() {
    let (_sim, listening) = sim().start();
    let mut admin = Client::admin(listening.port, None).await;
    let hello_methods = {
        // A fresh connect's hello-ok advertises the method.
        let (client, reply) = Client::connect(
            listening.port,
            connect_params("gateway-client", "backend", None),
            None,
        )
        .await;
        drop(client);
        reply["payload"]["features"]["methods"].clone()
    };
    assert!(
        hello_methods
            .as_array()
            .unwrap()
            .contains(&json!("system-presence")),
        "{hello_methods}"
    );
    // Params are not validated, as on the real gateway.
    for params in [json!({}), json!(null), json!({"x": 1})] {
        let reply = admin.request("system-presence", params.clone()).await;
        assert_eq!(reply["ok"], true, "{params}: {reply}");
        let rows = reply["payload"]
            .as_array()
            .expect("an array of presence rows");
        assert_eq!(rows.len(), 1, "only the gateway's own row: {rows:?}");
        let row = &rows[0];
        assert_eq!(row["mode"], "gateway");
        assert_eq!(row["reason"], "self");
        assert_eq!(row["deviceFamily"], "Linux");
        assert_eq!(row["version"], "2026.9.6-sim");
        assert!(row["platform"].as_str().unwrap().starts_with("linux "));
        for key in ["host", "ip", "instanceId", "text"] {
            assert!(row[key].is_string(), "{key}: {row}");
        }
        assert!(row["ts"].is_i64(), "{row}");
    }
    // The instance id is the process's: the same on every call.
    let first = admin.request("system-presence", json!({})).await;
    let second = admin.request("system-presence", json!({})).await;
    assert_eq!(
        first["payload"][0]["instanceId"],
        second["payload"][0]["instanceId"]
    );

    // Without operator.read (a client without device keeps no scopes): FORBIDDEN.
    let mut unscoped = Client::hello(listening.port, None).await;
    let reply = unscoped.request("system-presence", json!({})).await;
    assert_eq!(reply["error"]["code"], "FORBIDDEN", "{reply}");
    assert_eq!(reply["error"]["message"], "missing scope: operator.read");
    assert_eq!(detail_code(&reply), "MISSING_SCOPE");
}

/// D1: a pong that reached the simulator while its event loop was blocked counts. The ping goes
/// out, the block starts before the pong is read, and when the loop resumes the ping timer and
/// the queued pong are ready together: the pong must be read first, or the client would be
/// dropped (1006) for a pong it sent in time. Without that, each round fails about half the time,
/// so four rounds.
#[tokio::test]
async fn d1_a_pong_queued_during_a_busy_block_counts_when_the_loop_resumes() {
    const PING_MS: u64 = 1000;
    for round in 0..4 {
        let (sim, listening) = sim()
            .args(&["--ping-interval-ms", &PING_MS.to_string()])
            .start();
        let mut client = Client::admin(listening.port, None).await;
        // The first ping is due PING_MS after hello-ok; the block starts 100 ms after it, and we
        // read (and so answer) the ping only 300 ms after it, during the block.
        let hello_at = Instant::now();
        let reply = client
            .request(
                "sim.fault",
                json!({"kind": "busy", "ms": BLOCK_MS, "afterMs": PING_MS + 100 - hello_at.elapsed().as_millis() as u64}),
            )
            .await;
        assert_eq!(reply["ok"], true, "{reply}");
        tokio::time::sleep_until((hello_at + Duration::from_millis(PING_MS + 300)).into()).await;
        // Reading now answers the ping; the reply to this request comes after the block.
        let reply = client.request_or_end("health", json!({})).await;
        assert_eq!(
            reply["ok"],
            true,
            "round {round}: {reply} {:?}",
            sim.stderr()
        );
        // Still connected one ping interval after the block (reading answers the next ping).
        assert!(
            client
                .event("no-such-event", Duration::from_millis(PING_MS + 200))
                .await
                .is_none(),
            "round {round}"
        );
        let reply = client.request_or_end("health", json!({})).await;
        assert_eq!(
            reply["ok"],
            true,
            "round {round}: dropped after the block: {reply} {:?}",
            sim.stderr()
        );
    }
}
