//! D6 end to end: `gatewarden run` itself is paused (SIGSTOP, as a cgroup freeze, a VM pause or
//! a debugger would), then resumed. Its gateway is alive all along and must not pay for the
//! supervisor's stall with a restart. Default heartbeat timers (30 s pings, stall after 60 s).

mod support;

use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;

use support::{eventually, is_alive, Instance, Options};

fn pid_of(status: &Value) -> u32 {
    status["pid"]
        .as_u64()
        .and_then(|pid| u32::try_from(pid).ok())
        .expect("status has a pid")
}

#[test]
fn d6_a_supervisor_paused_for_90_s_keeps_its_gateway_and_lets_a_probe_decide() {
    // The simulator's own keepalive would drop our socket after one unanswered server ping
    // (25 s): the real gateway keeps the socket of a silent client open far longer, and that is
    // what this reproduces, so the sim's ping period is set beyond the pause.
    let sim = support::sim_binary();
    let instance = Instance::start(Options {
        command: vec![
            sim.display().to_string(),
            "--port".into(),
            "{port}".into(),
            "--ping-interval-ms".into(),
            "600000".into(),
        ],
        ..Options::default()
    });
    let before = instance.wait_running();
    let gateway = pid_of(&before);
    let boot_id = before["bootId"].clone();
    assert!(boot_id.is_string(), "{before}");

    instance.signal(Signal::SIGSTOP);
    std::thread::sleep(Duration::from_secs(90));
    instance.signal(Signal::SIGCONT);

    eventually("the stall to be noticed and a probe to answer", || {
        let logs = instance.logs();
        logs.contains("supervisor stall") && logs.contains("core probe (Stall) answered")
    });
    let after = instance.wait_running();
    assert_eq!(pid_of(&after), gateway, "the gateway was replaced");
    assert_eq!(after["bootId"], boot_id, "the gateway restarted in place");
    assert!(is_alive(gateway));
    let logs = instance.logs();
    assert!(
        !logs.contains("restarting the gateway") && !logs.contains("gateway frozen"),
        "a liveness restart was decided:\n{logs}"
    );
}
