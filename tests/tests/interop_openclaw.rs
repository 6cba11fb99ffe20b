//! The supervisor (`gatewarden::GatewaySupervisor`) against the real OpenClaw gateway, installed
//! by `scripts/install-openclaw.sh`: the nine scenarios of issue 6 (start, token placement,
//! SIGUSR2 reload, SIGKILL recovery, a frozen gateway, a draining stop, a foreign gateway on the
//! port, an invalid config and a lock conflict, a wrong token), each with its own temp state dir,
//! free port and random token.
//!
//! Without an install every test is reported by the test runner as ignored, with the reason
//! ("real OpenClaw not installed: run scripts/install-openclaw.sh"): `build.rs` sets
//! `cfg(openclaw_installed)` only when it finds the install. With
//! `GATEWARDEN_REQUIRE_OPENCLAW=1` (CI) a missing install fails the build instead.
//!
//! The tests run one at a time (a process-wide lock): a real gateway's cold start takes 12–100 s of
//! a shared 2-core machine, and several at once would only make every bound flaky. That also lets
//! one process-wide log capture serve every test: each test reads the supervisor's log lines
//! from its own start on.
//!
//! Measurements are printed as `interop-metric test=<name> <key>=<value>` lines (visible with
//! `-- --nocapture`). docs/interop.md has the results table.
// Each `#[actix_rt::test]` runs on its own thread with its own runtime, so holding the serialising
// std mutex across awaits blocks only that test's thread, which is the point: one gateway at a time.
#![allow(clippy::await_holding_lock)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use gatewarden::events::GatewayEvent;
use gatewarden::launch::Secret;
use gatewarden::orphan::{process_group_members, process_is_running};
use gatewarden::profile::LaunchProfile;
use gatewarden::supervisor::{
    DiagnosticsSnapshot, GetDiagnostics, GetStatus, Reload, Rpc, Start, Stop, Subscribe, Supervisor,
};
use gatewarden::{GatewaySupervisor, SupervisorOptions};
use gatewarden_core::config::ForeignGatewayPolicy;
use gatewarden_core::error::{CommandFailure, StartFailure};
use gatewarden_core::frame::SUPERVISOR_SCOPES;
use gatewarden_core::liveness::{ProbeOutcome, ProbePurpose};
use gatewarden_core::machine::{CommandOutcome, LifecycleState, Status};
use gatewarden_tests::{find_openclaw, free_port, http, OpenclawInstall};
use serde_json::Value;
use support::gateway_process::GatewayProcess;
use tokio::sync::mpsc;

mod support;

/// Bound for a cold start to `running`: 12–25 s measured with a load average of 3–5 on the 2-core
/// machine, but up to 106 s with a load average of 12–15 (four agents compiling).
const RUNNING_BOUND: Duration = Duration::from_secs(180);
/// Bound for SIGKILL → a new gateway running (includes a cold start and any restart backoff).
const RECOVERY_BOUND: Duration = Duration::from_secs(240);
/// Bound for one command (Stop, Reload) or one RPC.
const STEP_BOUND: Duration = Duration::from_secs(90);
/// Bound for the doctor repair (`start.repair_timeout_ms` in scenario 8): it took 163 s once with
/// a load average of 8–13 on the 2-core machine; the default of 120 s is for a machine of its own.
const DOCTOR_BOUND: Duration = Duration::from_secs(300);
/// How long scenario 9 watches a rejected start for further attempts.
const STORM_WINDOW: Duration = Duration::from_secs(15);
/// The gateway version the install script pins.
const EXPECTED_VERSION: &str = "2026.9.6";

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[actix_rt::test]
#[cfg_attr(
    not(openclaw_installed),
    ignore = "real OpenClaw not installed: run scripts/install-openclaw.sh"
)]
async fn interop_1_start_reaches_running_with_protocol_4_and_health_status_rpcs() {
    const NAME: &str = "interop_1";
    let _serial = serial();
    let install = installed();
    let mut gw = Gateway::launch(&install, |_| {});
    let status = gw.start_and_wait_running(NAME).await;

    assert_eq!(status.protocol, Some(4), "status: {status:?}");
    let version = status.version.clone().unwrap_or_default();
    assert!(
        version.starts_with(EXPECTED_VERSION),
        "version {version:?} does not start with {EXPECTED_VERSION}; status: {status:?}"
    );
    let pid = status.pid.expect("a running owned gateway has a pid");
    assert!(!status.external, "a spawned gateway is not external");

    // A1: the device identity was created, private, in the documented shape.
    let identity = gw.identity_file();
    let device_id = identity_device_id(&identity);
    assert!(
        device_id.len() == 64 && device_id.bytes().all(|b| b.is_ascii_hexdigit()),
        "deviceId {device_id:?} is not 64 hex digits"
    );
    // hello-ok.auth.scopes: the gateway granted every scope the supervisor asked for.
    let granted = gw.logs.granted_scopes(gw.since);
    assert_eq!(
        granted.len(),
        1,
        "one handshake, one scope list: {granted:?}"
    );
    for scope in SUPERVISOR_SCOPES {
        assert!(
            granted[0].contains(&format!("\"{scope}\"")),
            "scope {scope} not granted: {}",
            granted[0]
        );
    }

    // G2: gatewayReady comes from the core probe (system-presence): the real gateway sends no
    // ready event, and neither the snapshot nor the first health event count by default.
    let (_, ready) = gw
        .wait_status(STEP_BOUND, "gatewayReady", |s| s.gateway_ready)
        .await;
    assert!(ready.gateway_ready);
    let probe = gw
        .diagnostics()
        .await
        .recovery
        .last_probe
        .expect("a core probe is on record");
    assert_eq!(
        (probe.purpose, &probe.outcome),
        (ProbePurpose::Ready, &ProbeOutcome::Succeeded),
        "the ready probe: {probe:?}"
    );

    let health = gw.rpc("health").await;
    assert!(health.is_object(), "health payload: {health}");
    assert_eq!(
        health.get("ok").and_then(Value::as_bool),
        Some(true),
        "health payload: {health}"
    );
    let payload = gw.rpc("status").await;
    assert_eq!(
        payload.get("pid").and_then(Value::as_u64),
        Some(u64::from(pid)),
        "status RPC pid vs supervisor pid; payload keys: {:?}",
        payload.as_object().map(|o| o.keys().collect::<Vec<_>>())
    );
    println!(
        "interop-info test={NAME} version={version} pid={pid} device_id={device_id} scopes={}",
        granted[0]
    );
    gw.stop_and_check(NAME).await;
}

#[actix_rt::test]
#[cfg_attr(
    not(openclaw_installed),
    ignore = "real OpenClaw not installed: run scripts/install-openclaw.sh"
)]
async fn interop_2_token_is_in_the_environment_not_argv() {
    const NAME: &str = "interop_2";
    let _serial = serial();
    let install = installed();
    let mut gw = Gateway::launch(&install, |_| {});
    let status = gw.start_and_wait_running(NAME).await;
    let pid = status.pid.expect("pid");
    let token = gw.token.clone();

    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("read cmdline");
    assert!(!cmdline.is_empty(), "pid {pid} has an empty cmdline");
    assert!(
        !contains(&cmdline, token.as_bytes()),
        "the token is in the gateway's argv"
    );
    let argv: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    // The gateway sets its process title, which overwrites the argv area: /proc shows
    // `openclaw-gateway` instead of `node …/openclaw.mjs gateway run …` once it is up. (So this
    // check only proves the token is not visible *now*; the spawn argv is covered by the
    // profile's unit test `a3_openclaw_token_goes_to_the_environment_not_argv`, and the logged
    // spawn argv is checked below.)
    assert!(
        argv.iter().any(|a| a == "openclaw-gateway")
            || (argv.iter().any(|a| a == "gateway") && argv.iter().any(|a| a == "--auth")),
        "pid {pid} is not the gateway: {argv:?}"
    );

    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("read environ");
    let wanted = format!("OPENCLAW_GATEWAY_TOKEN={token}");
    assert!(
        environ
            .split(|b| *b == 0)
            .any(|entry| entry == wanted.as_bytes()),
        "OPENCLAW_GATEWAY_TOKEN=<the token> is not in /proc/{pid}/environ"
    );

    let status_json = serde_json::to_string(&gw.status().await).expect("status to JSON");
    assert!(
        !status_json.contains(&token),
        "the token is in the status JSON"
    );
    let diagnostics = gw.diagnostics().await;
    let diagnostics_json = serde_json::to_string(&diagnostics).expect("diagnostics to JSON");
    assert!(
        !diagnostics_json.contains(&token),
        "the token is in the diagnostics JSON"
    );
    assert!(
        !format!("{diagnostics:?}").contains(&token),
        "the token is in the diagnostics Debug output"
    );
    gw.stop_and_check(NAME).await;
    // A3: nothing the supervisor logged (the spawn argv, the handshake, the gateway's own output
    // it forwards, the stop) carries the token.
    let logged = gw.logs.since(gw.since);
    assert!(
        logged.iter().any(|line| line.contains("spawning gateway")),
        "the spawn was not logged; the log capture is not working"
    );
    assert!(
        !logged.iter().any(|line| line.contains(&token)),
        "the token is in the supervisor's logs"
    );
    println!(
        "interop-info test={NAME} argv={argv:?} log_lines_checked={}",
        logged.len()
    );
}

#[actix_rt::test]
#[cfg_attr(
    not(openclaw_installed),
    ignore = "real OpenClaw not installed: run scripts/install-openclaw.sh"
)]
async fn interop_3_sigusr2_reload_reconnects_to_the_same_pid() {
    const NAME: &str = "interop_3";
    let _serial = serial();
    let install = installed();
    let mut gw = Gateway::launch(&install, |options| {
        options.core.reload.recent_connect_skip_ms = 0;
        // The in-place restart announces 1.5 s but took up to 53 s on the loaded 2-core box;
        // the default 10 s margin would fall back to a full restart in the middle of it.
        options.core.reload.restart_expected_margin_ms = RECOVERY_BOUND.as_millis() as u64;
        // Likewise F5's bound on the restarted gateway listening again (interop_10 tests F5).
        options.core.connect.in_place_ready_timeout_ms = RECOVERY_BOUND.as_millis() as u64;
    });
    let status = gw.start_and_wait_running(NAME).await;
    let pid = status.pid.expect("pid");
    let old_boot = status
        .boot_id
        .clone()
        .expect("a boot id after the handshake");
    // Let the gateway finish its startup sidecars first (`/startupz` 200: a restart request
    // while it is still starting is not what this scenario measures). Soft: proceed after the
    // bound either way.
    let started = wait_startupz(gw.port, Duration::from_secs(120)).await;
    println!("interop-info test={NAME} startupz_200_before_reload={started}");

    let sent_at = Instant::now();
    // The announcement may take up to `restart_announce_timeout_ms`, then the restart itself.
    let reload_bound = RECOVERY_BOUND + Duration::from_secs(90);
    let outcome = tokio::time::timeout(reload_bound, gw.supervisor.send(Reload))
        .await
        .expect("Reload answered in time")
        .expect("supervisor alive");
    let reload_call_ms = sent_at.elapsed().as_millis();
    assert_eq!(
        outcome,
        CommandOutcome::Completed,
        "Reload outcome; status: {:?}",
        gw.status().await
    );
    // P4 (`reload.signal_restarts_in_place`, on for this profile): `Completed` means the
    // supervisor is back on the restarted gateway, not merely that the pid survived 1.5 s.
    let answered = gw.status().await;
    assert_eq!(answered.state, LifecycleState::Running, "{answered:?}");
    assert_ne!(
        answered.boot_id.as_deref(),
        Some(old_boot.as_str()),
        "Reload answered before the in-place restart: {answered:?}"
    );
    let (back_at, after) = gw
        .wait_status(STEP_BOUND, "running with a new bootId", |s| {
            s.state == LifecycleState::Running
                && s.boot_id.is_some()
                && s.boot_id != Some(old_boot.clone())
        })
        .await;
    // Under heavy load the real gateway's in-place restart can fail by itself: it cannot retake
    // its state lease within its own 5 s and exits 1 (seen once, load average 12). Then the
    // supervisor's respawn is what answers the reload (P4); that path is asserted instead, and
    // only when the gateway said so.
    let in_place_failed = gw.exits.iter().any(|(_, exited, _)| *exited == pid);
    if in_place_failed {
        assert!(
            gw.logs.count_since(
                sent_at,
                "failed to reacquire gateway lock for in-process restart"
            ) >= 1,
            "the gateway exited during its restart without saying why"
        );
        assert_ne!(answered.pid, Some(pid), "{answered:?}");
        assert!(answered.pid.is_some_and(process_is_running), "{answered:?}");
        println!(
            "interop-info test={NAME} in_place_restart_failed_by_itself=true new_pid={:?}",
            answered.pid
        );
    } else {
        assert_eq!(answered.pid, Some(pid), "{answered:?}");
        assert_eq!(after.pid, Some(pid), "an in-process restart keeps the pid");
        assert!(process_is_running(pid));
    }
    // Downtime as the supervisor published it: first non-running status after the request, to
    // the first running status with the new bootId.
    let down_at = gw
        .history
        .iter()
        .find(|(at, s)| *at >= sent_at && s.state != LifecycleState::Running)
        .map(|(at, _)| *at);
    let downtime = match down_at {
        Some(down) => format!("{}", back_at.duration_since(down).as_millis()),
        None => "none_published".to_string(),
    };
    let states: Vec<&str> = gw
        .history
        .iter()
        .filter(|(at, _)| *at >= sent_at)
        .map(|(_, s)| s.state.as_str())
        .collect();
    let announced = gw
        .logs
        .first_after(sent_at, "announced an in-place restart")
        .map_or("none".to_string(), |at| {
            at.duration_since(sent_at).as_millis().to_string()
        });
    println!(
        "interop-metric test={NAME} reload_call_ms={reload_call_ms} signal_to_announce_ms={announced} request_to_running_new_boot_ms={} downtime_ms={downtime} pid={pid} states={states:?}",
        back_at.duration_since(sent_at).as_millis()
    );
    gw.stop_and_check(NAME).await;
}

#[actix_rt::test]
#[cfg_attr(
    not(openclaw_installed),
    ignore = "real OpenClaw not installed: run scripts/install-openclaw.sh"
)]
async fn interop_4_kill_9_is_recovered_by_a_new_gateway() {
    const NAME: &str = "interop_4";
    let _serial = serial();
    let install = installed();
    let mut gw = Gateway::launch(&install, |_| {});
    let status = gw.start_and_wait_running(NAME).await;
    let old_pid = status.pid.expect("pid");
    let identity_before = std::fs::read(gw.identity_file()).expect("device identity written");

    let killed_at = Instant::now();
    signal(old_pid, nix::sys::signal::Signal::SIGKILL);
    let (at, recovered) = gw
        .wait_status(RECOVERY_BOUND, "a new gateway running after SIGKILL", |s| {
            s.state == LifecycleState::Running && s.pid.is_some() && s.pid != Some(old_pid)
        })
        .await;
    let recovery_ms = at.duration_since(killed_at).as_millis();
    let new_pid = recovered.pid.expect("pid");
    assert!(
        !process_is_running(old_pid),
        "the killed pid {old_pid} is still running"
    );
    assert!(process_is_running(new_pid), "new pid {new_pid} not running");
    assert_eq!(recovered.protocol, Some(4));
    // A1: the identity was created once and the new gateway accepted the same one.
    let identity_after = std::fs::read(gw.identity_file()).expect("device identity");
    assert_eq!(
        identity_before, identity_after,
        "the device identity file changed across the restart"
    );
    let granted = gw.logs.granted_scopes(gw.since);
    assert_eq!(granted.len(), 2, "two handshakes: {granted:?}");
    assert_eq!(
        granted[0], granted[1],
        "the same identity gets the same scopes from the new gateway"
    );
    println!(
        "interop-metric test={NAME} kill9_to_running_ms={recovery_ms} old_pid={old_pid} new_pid={new_pid}"
    );
    gw.stop_and_check(NAME).await;
}

#[actix_rt::test]
#[cfg_attr(
    not(openclaw_installed),
    ignore = "real OpenClaw not installed: run scripts/install-openclaw.sh"
)]
async fn interop_5_d3_a_sigstopped_gateway_is_classified_frozen_and_replaced() {
    const NAME: &str = "interop_5";
    let _serial = serial();
    let install = installed();
    let mut gw = Gateway::launch(&install, |options| {
        // D2/D3 with short numbers: a ping every 2.5 s, missed after 2 s; a gateway that /proc
        // shows stopped is `frozen`, restarted at 3 misses. The defaults (30 s × 3) would make
        // this test take two minutes.
        options.core.heartbeat.interval_ms = 2_500;
        options.core.heartbeat.timeout_ms = 2_000;
        options.core.heartbeat.max_misses = 3;
        // A stopped process never runs its SIGTERM handler: only the SIGKILL after the grace ends
        // it, so the grace is the part of the recovery this test waits for.
        options.core.stop.kill_grace_ms = 3_000;
    });
    let status = gw.start_and_wait_running(NAME).await;
    let old_pid = status.pid.expect("pid");
    // Let the startup sidecars settle first: a busy event loop right after the start is not
    // what this scenario measures. Soft: proceed after the bound either way.
    let ready = gw
        .try_wait_status(Duration::from_secs(60), |s| s.gateway_ready)
        .await
        .is_some();
    let before = gw.diagnostics().await;
    assert_eq!(
        gw.status().await.pid,
        Some(old_pid),
        "the heartbeat replaced the gateway before it was stopped (a false positive); \
         diagnostics: {before:?}"
    );

    let stopped_at = Instant::now();
    let frozen = Frozen::new(old_pid);
    let (at, recovered) = gw
        .wait_status(RECOVERY_BOUND, "a new gateway running after SIGSTOP", |s| {
            s.state == LifecycleState::Running && s.pid.is_some() && s.pid != Some(old_pid)
        })
        .await;
    let new_pid = recovered.pid.expect("pid");
    let detected_at = gw
        .logs
        .first_after(stopped_at, "gateway frozen:")
        .expect("the frozen gateway's restart was logged");
    // D3: decided within (misses + 1) × interval of the stop (plus scheduling slack).
    let bound = Duration::from_millis(4 * 2_500) + Duration::from_secs(3);
    assert!(
        detected_at.duration_since(stopped_at) <= bound,
        "decided {:?} after the SIGSTOP, bound {bound:?}",
        detected_at.duration_since(stopped_at)
    );
    let old_exit = gw.exits.iter().find(|(_, pid, _)| *pid == old_pid).cloned();
    let (exited_at, _, exit_code) = old_exit.expect("the frozen gateway's exit was published");
    // SIGKILL (by the group TERM→KILL), not a drain: the frozen process never ran again.
    assert_eq!(
        exit_code,
        Some(128 + nix::sys::signal::Signal::SIGKILL as i32),
        "exit of the frozen gateway"
    );
    assert!(!process_is_running(old_pid), "frozen pid {old_pid} lives");
    let members = wait_group_empty(old_pid).await;
    assert!(
        members.is_empty(),
        "the frozen gateway's group {old_pid} is not empty: {members:?}"
    );
    drop(frozen);
    let after = gw.diagnostics().await;
    assert_eq!(
        after.restarts_executed,
        before.restarts_executed + 1,
        "one heartbeat restart; diagnostics: {after:?}"
    );
    assert_eq!(
        after.process_starts,
        before.process_starts + 1,
        "one new gateway; diagnostics: {after:?}"
    );
    println!(
        "interop-metric test={NAME} sigstop_to_detected_ms={} sigstop_to_killed_ms={} sigstop_to_running_ms={} old_pid={old_pid} new_pid={new_pid} ready_before_stop={ready}",
        detected_at.duration_since(stopped_at).as_millis(),
        exited_at.duration_since(stopped_at).as_millis(),
        at.duration_since(stopped_at).as_millis(),
    );
    gw.stop_and_check(NAME).await;
}

#[actix_rt::test]
#[cfg_attr(
    not(openclaw_installed),
    ignore = "real OpenClaw not installed: run scripts/install-openclaw.sh"
)]
async fn interop_6_stop_drains_and_leaves_nothing() {
    const NAME: &str = "interop_6";
    let _serial = serial();
    let install = installed();
    let mut gw = Gateway::launch(&install, |_| {});
    let status = gw.start_and_wait_running(NAME).await;
    let pid = status.pid.expect("pid");
    let members_before = process_group_members(pid);
    println!("interop-info test={NAME} pid={pid} group_members_before={members_before:?}");
    gw.stop_and_check(NAME).await;
}

#[actix_rt::test]
#[cfg_attr(
    not(openclaw_installed),
    ignore = "real OpenClaw not installed: run scripts/install-openclaw.sh"
)]
async fn interop_7_a_foreign_gateway_is_attached_as_external_or_replaced_as_configured() {
    const NAME: &str = "interop_7";
    let _serial = serial();
    let install = installed();
    // O1 `attach` (the default): a supervisor with the foreign gateway's token.
    let mut attached = Gateway::launch(&install, |options| {
        options.core.orphans.foreign_gateway = ForeignGatewayPolicy::Attach;
    });
    let entry = install.entry.to_string_lossy().into_owned();
    // `--verbose` makes the gateway log every request and close, which is how this test sees
    // from the gateway's side which requests the supervisor sent.
    let foreign_started = Instant::now();
    let mut foreign = GatewayProcess::spawn_on(
        "foreign",
        &install.node,
        &[entry.as_str(), "gateway", "run", "--verbose"],
        &attached.token,
        &[],
        attached.port,
    );
    if let Err(error) = foreign.wait_started(RUNNING_BOUND, &mut || {}) {
        panic!("{error}\n{}", foreign.logs(4000));
    }
    let foreign_start_ms = foreign_started.elapsed().as_millis();
    let foreign_pid = foreign.pid();

    let status = attached.start_and_wait_running("interop_7_attach_1").await;
    assert!(status.external, "attached as external: {status:?}");
    assert_eq!(status.pid, None, "an external gateway's pid is never shown");
    assert_eq!(status.protocol, Some(4));
    let health = attached.rpc("health").await;
    assert_eq!(health.get("ok").and_then(Value::as_bool), Some(true));

    // T2: the first stop asks it to shut down; it answers "unknown method: shutdown".
    attached.stop_external(&mut foreign, 1).await;
    let log = wait_gateway_log(&foreign, |log| log.count_closes_after_handshake() >= 1).await;
    assert_eq!(
        log.shutdown_requests(),
        1,
        "the first stop sends `shutdown` once; the gateway's log:\n{}",
        log.ws_lines()
    );
    assert!(
        log.text.contains("unknown method: shutdown"),
        "the gateway's answer: {}",
        log.ws_lines()
    );
    let marked = "does not support \"shutdown\"; not asking again";
    assert_eq!(
        attached.logs.count_since(attached.since, marked),
        1,
        "the supervisor marked it unsupported"
    );

    // Attach again and stop again: no second `shutdown`.
    let status = attached.start_and_wait_running("interop_7_attach_2").await;
    assert!(status.external, "attached again: {status:?}");
    attached.stop_external(&mut foreign, 2).await;
    let log = wait_gateway_log(&foreign, |log| log.count_closes_after_handshake() >= 2).await;
    assert_eq!(
        log.shutdown_requests(),
        1,
        "`shutdown` was sent again after \"unknown method\"; the gateway's log:\n{}",
        log.ws_lines()
    );
    assert_eq!(
        attached.logs.count_since(attached.since, marked),
        1,
        "unsupported is remembered, not rediscovered"
    );
    let sessions = log.connects();
    let shutdowns = log.shutdown_requests();
    drop(attached);

    // O1 `replace`: a second supervisor, configured to replace, on the same port.
    let mut replacer = Gateway::launch(&install, |options| {
        options.core.orphans.foreign_gateway = ForeignGatewayPolicy::Replace;
        options.core.port = foreign.port;
    });
    let status = replacer.start_and_wait_running("interop_7_replace").await;
    let own_pid = status.pid.expect("the replacement is ours");
    assert_ne!(own_pid, foreign_pid);
    assert!(!status.external, "{status:?}");
    assert!(
        replacer
            .logs
            .count_since(replacer.since, "replacing the foreign gateway")
            == 1,
        "the replacement was logged"
    );
    let foreign_exit = foreign.try_exit();
    assert!(
        foreign_exit.is_some(),
        "the foreign gateway (pid {foreign_pid}) still runs after being replaced"
    );
    println!(
        "interop-metric test={NAME} foreign_start_ms={foreign_start_ms} foreign_pid={foreign_pid} \
         gateway_sessions={sessions} shutdown_requests_seen_by_gateway={shutdowns} \
         foreign_exit={foreign_exit:?} replacement_pid={own_pid}"
    );
    replacer.stop_and_check("interop_7_replace").await;
}

#[actix_rt::test]
#[cfg_attr(
    not(openclaw_installed),
    ignore = "real OpenClaw not installed: run scripts/install-openclaw.sh"
)]
async fn interop_8_an_invalid_config_is_repaired_by_doctor_but_a_lock_conflict_is_not() {
    const NAME: &str = "interop_8";
    let _serial = serial();
    let install = installed();
    let mut gw = Gateway::launch(&install, |options| {
        options.core.start.repair_timeout_ms = DOCTOR_BOUND.as_millis() as u64;
    });
    let config_path = gw.gateway_config_path();
    std::fs::create_dir_all(config_path.parent().expect("config dir")).expect("config dir");
    std::fs::write(&config_path, r#"{"gateway":{"bogusKey":true}}"#).expect("write config");

    // L6/L7: exit 78 with the config error on stderr → doctor → start again, all in one Start.
    let started = Instant::now();
    let flow_bound = RUNNING_BOUND * 2 + DOCTOR_BOUND;
    let outcome = tokio::time::timeout(flow_bound, gw.supervisor.send(Start))
        .await
        .unwrap_or_else(|_| panic!("Start not answered within {flow_bound:?}"))
        .expect("supervisor alive");
    let (running_at, status) = gw
        .wait_status(STEP_BOUND, "running after the repair", |s| {
            s.state == LifecycleState::Running
        })
        .await;
    assert_eq!(outcome, CommandOutcome::Completed, "status: {status:?}");
    let (exit_78_at, first_pid, _) = gw
        .exits
        .iter()
        .find(|(_, _, code)| *code == Some(78))
        .cloned()
        .expect("the first gateway exited with 78");
    assert_ne!(status.pid, Some(first_pid));
    let config_error = gw
        .logs
        .first_line_after(started, "Unrecognized key")
        .expect("the config error from the gateway's stderr was logged");
    assert!(
        config_error.contains("[Gateway stderr]") && config_error.contains("bogusKey"),
        "{config_error}"
    );
    let doctor_started = gw
        .logs
        .first_after(started, "running gateway doctor repair")
        .expect("the doctor ran");
    let doctor_argv = gw
        .logs
        .first_line_after(started, "running gateway doctor repair")
        .unwrap_or_default();
    for arg in ["doctor", "--fix", "--yes", "--non-interactive"] {
        assert!(
            doctor_argv.contains(&format!("\"{arg}\"")),
            "{arg} in {doctor_argv}"
        );
    }
    let doctor_done = gw
        .logs
        .first_after(started, "doctor repair succeeded")
        .expect("the doctor succeeded");
    let repaired = std::fs::read_to_string(&config_path).expect("config after doctor");
    assert!(!repaired.contains("bogusKey"), "doctor kept the key");
    let diagnostics = gw.diagnostics().await;
    assert_eq!(diagnostics.process_starts, 2, "{diagnostics:?}");
    println!(
        "interop-metric test={NAME} start_to_exit78_ms={} doctor_ms={} start_to_running_ms={} doctor_lines={}",
        exit_78_at.duration_since(started).as_millis(),
        doctor_done.duration_since(doctor_started).as_millis(),
        running_at.duration_since(started).as_millis(),
        gw.logs.count_since(started, "[doctor]"),
    );
    let holder_pid = status.pid.expect("pid");

    // L7/F1: a second supervisor whose gateway uses the same state directory (a symlink to the
    // first one's): its gateway exits 78 because the first holds the state lock. That is not a
    // config error, so no doctor; and no retry either (F1): the start fails at once, naming the
    // holder.
    let mut second = Gateway::launch(&install, |_| {});
    let shared = LaunchProfile::gateway_state_dir(second.state_dir());
    std::os::unix::fs::symlink(LaunchProfile::gateway_state_dir(gw.state_dir()), &shared)
        .expect("symlink the gateway state dir");
    let second_started = Instant::now();
    let outcome = tokio::time::timeout(RUNNING_BOUND * 3, second.supervisor.send(Start))
        .await
        .expect("Start answered in time")
        .expect("supervisor alive");
    let failed_after_ms = second_started.elapsed().as_millis();
    let CommandOutcome::Failed {
        failure:
            CommandFailure::Start {
                failure: StartFailure::LockHeld { line: message },
                ..
            },
    } = outcome
    else {
        panic!("a start on a locked state dir must fail with LockHeld: {outcome:?}")
    };
    let second_status = second.status().await;
    assert_eq!(
        second_status.state,
        LifecycleState::Error,
        "{second_status:?}"
    );
    let lock_line = second
        .logs
        .first_line_after(second_started, "another OpenClaw process owns")
        .expect("the lock conflict from the gateway's stderr was logged");
    assert_eq!(
        second
            .logs
            .count_since(second_started, "running gateway doctor repair"),
        0,
        "the doctor ran for a lock conflict"
    );
    assert_eq!(
        second.logs.count_since(second_started, "recovery: Repair"),
        0,
        "a lock conflict was treated as repairable"
    );
    second.drain_events();
    let exits: Vec<Option<i32>> = second.exits.iter().map(|(_, _, code)| *code).collect();
    let second_diagnostics = second.diagnostics().await;
    assert_eq!(
        second_diagnostics.process_starts, 1,
        "F1: no retry of a held lock; {second_diagnostics:?}"
    );
    assert!(
        message.contains("another OpenClaw process owns"),
        "F1: the error names the holder: {message}"
    );
    assert!(
        !exits.is_empty() && exits.iter().all(|code| *code == Some(78)),
        "exits {exits:?}"
    );
    // The lock holder was left alone.
    let holder = gw.status().await;
    assert_eq!(holder.state, LifecycleState::Running, "{holder:?}");
    assert_eq!(holder.pid, Some(holder_pid));
    let health = gw.rpc("health").await;
    assert_eq!(health.get("ok").and_then(Value::as_bool), Some(true));
    println!(
        "interop-metric test={NAME} lock_conflict_failed_after_ms={failed_after_ms} lock_exits={exits:?} message={message:?}"
    );
    println!("interop-info test={NAME} lock_stderr={lock_line:?}");
    let outcome = second
        .supervisor
        .send(Stop)
        .await
        .expect("supervisor alive");
    assert_eq!(outcome, CommandOutcome::Completed);
    second.stopped = true;
    gw.stop_and_check(NAME).await;
}

#[actix_rt::test]
#[cfg_attr(
    not(openclaw_installed),
    ignore = "real OpenClaw not installed: run scripts/install-openclaw.sh"
)]
async fn interop_9_a_wrong_token_is_reported_once_and_not_retried() {
    const NAME: &str = "interop_9";
    let _serial = serial();
    let install = installed();
    let mut gw = Gateway::launch(&install, |_| {});
    // The gateway's config pins another token; it wins over OPENCLAW_GATEWAY_TOKEN (observed),
    // so the supervisor's token is wrong for the gateway it spawned.
    let config_token = random_token();
    let config_path = gw.gateway_config_path();
    std::fs::create_dir_all(config_path.parent().expect("config dir")).expect("config dir");
    std::fs::write(
        &config_path,
        format!(r#"{{"gateway":{{"auth":{{"token":"{config_token}"}}}}}}"#),
    )
    .expect("write config");

    let started = Instant::now();
    let outcome = tokio::time::timeout(RUNNING_BOUND, gw.supervisor.send(Start))
        .await
        .expect("Start answered in time")
        .expect("supervisor alive");
    let failed_at = Instant::now();
    let CommandOutcome::Failed {
        failure:
            CommandFailure::Start {
                failure: StartFailure::HandshakeRejected { details_code, .. },
                ..
            },
    } = outcome
    else {
        panic!("a wrong token must fail the start as a rejected handshake: {outcome:?}")
    };
    assert_eq!(details_code.as_deref(), Some("AUTH_TOKEN_MISMATCH"));
    let status = gw.status().await;
    assert_eq!(status.state, LifecycleState::Error, "{status:?}");
    let error = status.error.clone().unwrap_or_default();
    assert!(
        error.contains("AUTH_TOKEN_MISMATCH"),
        "status error: {error}"
    );
    let pid = status.pid.expect("the spawned gateway is still ours");

    // No restart storm: nothing happens in the window after the rejection (the statuses published
    // during the start are already queued: record them first).
    gw.drain_events();
    let changed = gw
        .try_wait_status(STORM_WINDOW, |s| s.state != LifecycleState::Error)
        .await;
    assert!(changed.is_none(), "the state left error: {changed:?}");
    let diagnostics = gw.diagnostics().await;
    assert_eq!(diagnostics.process_starts, 1, "{diagnostics:?}");
    assert_eq!(diagnostics.process_exits, 0, "{diagnostics:?}");
    assert_eq!(diagnostics.reconnect_attempts_total, 0, "{diagnostics:?}");
    assert_eq!(diagnostics.restarts_executed, 0, "{diagnostics:?}");
    assert_eq!(gw.status().await.pid, Some(pid));
    assert!(process_is_running(pid));
    // Reported in the logs: the supervisor's own lines, and exactly one rejected connect on the
    // gateway's side (its stderr, forwarded by the supervisor).
    let mismatch_lines = gw.logs.count_since(started, "AUTH_TOKEN_MISMATCH");
    assert!(
        mismatch_lines >= 1,
        "AUTH_TOKEN_MISMATCH is not in the logs"
    );
    assert_eq!(
        gw.logs
            .count_since(started, "not reconnecting until the next start"),
        1
    );
    // One attempt, not retried: no second attempt of the start flow. (The gateway's own lines
    // about the rejection are counted for the metric only: since gateway output is logged at
    // INFO (Q2), one rejected connect can show in more than one of its lines.)
    let rejected_connects = gw.logs.count_since(started, "reason=token_mismatch");
    assert!(
        rejected_connects >= 1,
        "the gateway logged no rejected connect"
    );
    assert_eq!(
        gw.logs.count_since(started, "gateway start attempt 2/"),
        0,
        "the rejected connect was retried"
    );
    let logged = gw.logs.since(started);
    for secret in [&gw.token, &config_token] {
        assert!(
            !logged.iter().any(|line| line.contains(secret.as_str())),
            "a token is in the logs"
        );
        assert!(!error.contains(secret.as_str()), "a token is in the status");
    }
    println!(
        "interop-metric test={NAME} start_to_rejected_ms={} window_ms={} spawns={} connect_attempts={rejected_connects} reconnect_attempts={} mismatch_log_lines={mismatch_lines}",
        failed_at.duration_since(started).as_millis(),
        STORM_WINDOW.as_millis(),
        diagnostics.process_starts,
        diagnostics.reconnect_attempts_total,
    );
    gw.stop_and_check(NAME).await;
}

// ---------------------------------------------------------------------------------------------
// Fixture
// ---------------------------------------------------------------------------------------------

/// One real gateway at a time in this test binary.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The install. `build.rs` found it (or these tests would be ignored), so not finding it now
/// (removed since the build) is a failure, never a skip.
fn installed() -> OpenclawInstall {
    find_openclaw().unwrap_or_else(|reason| panic!("the real OpenClaw gateway is gone: {reason}"))
}

/// 32 hex digits from the OS random source.
fn random_token() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut file| file.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal)
        .unwrap_or_else(|error| panic!("{signal} to {pid}: {error}"));
}

// ---------------------------------------------------------------------------------------------
// Revision 2: failures that retrying cannot fix (issue 22)
// ---------------------------------------------------------------------------------------------

/// F5's default bound (`connect.in_place_ready_timeout_ms`).
const IN_PLACE_BOUND: Duration = Duration::from_millis(30_000);

#[actix_rt::test]
#[cfg_attr(
    not(openclaw_installed),
    ignore = "real OpenClaw not installed: run scripts/install-openclaw.sh"
)]
async fn interop_10_f5_invalid_config_on_reload_is_an_error_then_one_repaired_replacement() {
    const NAME: &str = "interop_10";
    let _serial = serial();
    let install = installed();
    let mut gw = Gateway::launch(&install, |options| {
        options.core.reload.recent_connect_skip_ms = 0;
        options.core.start.repair_timeout_ms = DOCTOR_BOUND.as_millis() as u64;
    });
    let status = gw.start_and_wait_running(NAME).await;
    let pid = status.pid.expect("pid");
    let ready = wait_startupz(gw.port, Duration::from_secs(120)).await;
    println!("interop-info test={NAME} startupz_200_before_reload={ready}");
    let config_path = gw.gateway_config_path();
    std::fs::create_dir_all(config_path.parent().expect("config dir")).expect("config dir");
    std::fs::write(&config_path, r#"{"gateway":{"bogusKey":true}}"#).expect("write config");
    // Hot reload skips an invalid edit ("config reload skipped (invalid config)"): wait a moment
    // so the reload below is what meets it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent = Instant::now();
    let reload = gw.supervisor.send(Reload);
    let (error_at, errored) = gw
        .wait_status(
            IN_PLACE_BOUND + Duration::from_secs(60),
            "error after the failed in-place restart",
            |s| s.state == LifecycleState::Error,
        )
        .await;
    let error = errored.error.clone().unwrap_or_default();
    // The gateway's block ("startup failed: Invalid config at …") when it came within the bound,
    // else the bound's message with its last config line ("config reload skipped (invalid
    // config)").
    assert!(
        error.to_ascii_lowercase().contains("invalid config"),
        "{error}"
    );
    let to_error = error_at.duration_since(sent);
    let announced = gw
        .logs
        .first_after(sent, "announced an in-place restart")
        .map(|at| at.duration_since(sent));
    // F5: within the bound (+5 s) of the gateway going down for its restart.
    let went_down = announced.unwrap_or_default();
    assert!(
        to_error <= went_down + IN_PLACE_BOUND + Duration::from_secs(5),
        "error {to_error:?} after the reload, restart announced after {announced:?}"
    );
    let outcome = tokio::time::timeout(STEP_BOUND, reload)
        .await
        .expect("Reload answered")
        .expect("supervisor alive");
    assert!(
        matches!(outcome, CommandOutcome::Failed { .. }),
        "{outcome:?}"
    );
    // The replacement: doctor once, then one cold start.
    let (running_at, running) = gw
        .wait_status(
            DOCTOR_BOUND + RUNNING_BOUND,
            "running after the repaired replacement",
            |s| s.state == LifecycleState::Running,
        )
        .await;
    let new_pid = running.pid.expect("pid");
    assert_ne!(new_pid, pid, "a fresh spawn replaced the stuck gateway");
    assert!(!process_is_running(pid), "the stuck gateway is gone");
    let repaired = std::fs::read_to_string(&config_path).expect("config after doctor");
    assert!(!repaired.contains("bogusKey"), "the doctor repaired it");
    assert_eq!(
        gw.logs.count_since(sent, "running gateway doctor repair"),
        1,
        "the doctor ran once"
    );
    // No second cold start: nothing restarts the replacement.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let after = gw.status().await;
    assert_eq!(after.state, LifecycleState::Running, "{after:?}");
    assert_eq!(after.pid, Some(new_pid), "{after:?}");
    let diagnostics = gw.diagnostics().await;
    assert_eq!(diagnostics.process_starts, 2, "{diagnostics:?}");
    assert_eq!(diagnostics.restarts_executed, 0, "{diagnostics:?}");
    println!(
        "interop-metric test={NAME} reload_to_error_ms={} announce_ms={} error_to_running_ms={} error={error:?}",
        to_error.as_millis(),
        announced.map_or("none".into(), |a| a.as_millis().to_string()),
        running_at.duration_since(error_at).as_millis()
    );
    gw.stop_and_check(NAME).await;
}

#[actix_rt::test]
#[cfg_attr(
    not(openclaw_installed),
    ignore = "real OpenClaw not installed: run scripts/install-openclaw.sh"
)]
async fn interop_11_f7_sigusr2_twice_half_a_second_apart_is_no_error_and_keeps_the_pid() {
    const NAME: &str = "interop_11";
    let _serial = serial();
    let install = installed();
    let mut gw = Gateway::launch(&install, |options| {
        // A loaded 2-core machine: the restart itself may take long; this test is about F7.
        options.core.connect.in_place_ready_timeout_ms = RECOVERY_BOUND.as_millis() as u64;
    });
    let status = gw.start_and_wait_running(NAME).await;
    let pid = status.pid.expect("pid");
    let old_boot = status.boot_id.clone().expect("boot id");
    let ready = wait_startupz(gw.port, Duration::from_secs(120)).await;
    println!("interop-info test={NAME} startupz_200_before_signals={ready}");
    let sent = Instant::now();
    signal(pid, nix::sys::signal::Signal::SIGUSR2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(pid, nix::sys::signal::Signal::SIGUSR2);
    let (back_at, after) = gw
        .wait_status(RECOVERY_BOUND, "running with a new bootId", |s| {
            s.state == LifecycleState::Running
                && s.boot_id.is_some()
                && s.boot_id != Some(old_boot.clone())
        })
        .await;
    // Settle: a second restart may follow the first.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let settled = gw.status().await;
    gw.drain_events();
    let errors: Vec<&Status> = gw
        .history
        .iter()
        .filter(|(at, s)| *at >= sent && (s.state == LifecycleState::Error || s.error.is_some()))
        .map(|(_, s)| s)
        .collect();
    assert!(errors.is_empty(), "no error ever set: {errors:#?}");
    assert_eq!(after.pid, Some(pid), "{after:?}");
    assert_eq!(settled.state, LifecycleState::Running, "{settled:?}");
    assert_eq!(settled.pid, Some(pid), "{settled:?}");
    let diagnostics = gw.diagnostics().await;
    assert_eq!(diagnostics.process_starts, 1, "{diagnostics:?}");
    let refusals = gw.logs.count_since(sent, "gateway is restarting in place");
    let failed_attempts = gw.logs.count_since(sent, "start attempt");
    assert_eq!(failed_attempts, 0, "no failed attempt");
    println!(
        "interop-metric test={NAME} signals_to_running_new_boot_ms={} restart_window_refusals={refusals}",
        back_at.duration_since(sent).as_millis()
    );
    gw.stop_and_check(NAME).await;
}

#[actix_rt::test]
#[cfg_attr(
    not(openclaw_installed),
    ignore = "real OpenClaw not installed: run scripts/install-openclaw.sh"
)]
async fn interop_12_f3_node_20_is_refused_before_spawn_with_the_version_message() {
    const NAME: &str = "interop_12";
    let _serial = serial();
    let install = installed();
    // The machine's own Node when it is 20, else a stub that reports 20.
    let stub_dir = tempfile::tempdir().expect("temp dir");
    let system = std::process::Command::new("/usr/bin/node")
        .arg("--version")
        .output()
        .ok()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|version| version.starts_with("v20."));
    let node = match &system {
        Some(_) => PathBuf::from("/usr/bin/node"),
        None => {
            use std::os::unix::fs::PermissionsExt;
            let stub = stub_dir.path().join("node");
            std::fs::write(&stub, "#!/bin/sh\necho v20.20.2\n").expect("stub");
            std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).expect("chmod");
            stub
        }
    };
    let old = OpenclawInstall {
        node,
        entry: install.entry.clone(),
    };
    let mut gw = Gateway::launch(&old, |_| {});
    let sent = Instant::now();
    let outcome = tokio::time::timeout(STEP_BOUND, gw.supervisor.send(Start))
        .await
        .expect("Start answered")
        .expect("supervisor alive");
    let took = sent.elapsed();
    let CommandOutcome::Failed {
        failure:
            CommandFailure::Start {
                failure: StartFailure::RuntimeIncompatible { message },
                ..
            },
    } = outcome
    else {
        panic!("an old Node must be refused as RuntimeIncompatible: {outcome:?}")
    };
    assert!(message.contains("engines.node"), "{message}");
    assert!(message.contains("20."), "{message}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = gw.status().await;
    assert_eq!(status.state, LifecycleState::Error, "{status:?}");
    let diagnostics = gw.diagnostics().await;
    assert_eq!(
        diagnostics.process_starts, 0,
        "never spawned: {diagnostics:?}"
    );
    gw.stopped = true;
    println!(
        "interop-metric test={NAME} refused_after_ms={} node={} message={message:?}",
        took.as_millis(),
        system.as_deref().unwrap_or("stub v20.20.2")
    );
}

#[actix_rt::test]
async fn interop_13_f6_a_hung_start_fails_after_the_challenge_timeout_not_the_ready_timeout() {
    const NAME: &str = "interop_13";
    let _serial = serial();
    let state_dir = tempfile::tempdir().expect("temp dir");
    let mut options = SupervisorOptions::new(
        LaunchProfile::Sim {
            program: Some(gatewarden_tests::sim_binary()),
            extra_args: vec!["--no-challenge".into()],
        },
        state_dir.path().to_path_buf(),
    );
    options.core.port = free_port();
    options.core.start.max_attempts = 1;
    let challenge_ms = options.core.connect.challenge_timeout_ms;
    let ready_ms = options.core.connect.ready_timeout_ms;
    let supervisor = GatewaySupervisor::start(options).expect("valid options");
    let sent = Instant::now();
    let outcome = tokio::time::timeout(STEP_BOUND, supervisor.send(Start))
        .await
        .expect("Start answered well before the ready timeout")
        .expect("supervisor alive");
    let took = sent.elapsed();
    let CommandOutcome::Failed {
        failure:
            CommandFailure::Start {
                failure: StartFailure::NoChallenge { .. },
                ..
            },
    } = outcome
    else {
        panic!("a hung start must fail with NoChallenge: {outcome:?}")
    };
    assert!(
        took >= Duration::from_millis(challenge_ms) && took < Duration::from_millis(challenge_ms) + Duration::from_secs(30),
        "failed after {took:?}: the challenge timeout is {challenge_ms} ms, the ready timeout {ready_ms} ms"
    );
    let _ = supervisor.send(Stop).await;
    println!(
        "interop-metric test={NAME} failed_after_ms={} challenge_timeout_ms={challenge_ms} ready_timeout_ms={ready_ms}",
        took.as_millis()
    );
}

/// Polls the gateway's `/startupz` until it answers 200 (sidecars settled, not draining);
/// false after `bound`.
async fn wait_startupz(port: u16, bound: Duration) -> bool {
    let deadline = Instant::now() + bound;
    while Instant::now() < deadline {
        if matches!(
            http(port, "GET", "/startupz", Duration::from_secs(5)),
            Ok((200, _))
        ) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

/// The process group's members, once it is empty or after 10 s.
async fn wait_group_empty(pgid: u32) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut members = process_group_members(pgid);
    while !members.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        members = process_group_members(pgid);
    }
    members
}

/// A1: the `deviceId` of the identity file, after checking its mode and shape.
fn identity_device_id(path: &Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .unwrap_or_else(|error| panic!("no device identity at {}: {error}", path.display()))
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "identity file mode {mode:o}");
    let identity: Value =
        serde_json::from_slice(&std::fs::read(path).expect("read identity")).expect("JSON");
    assert_eq!(identity["version"], 1, "identity: version");
    for key in ["publicKeyPem", "privateKeyPem"] {
        assert!(identity[key].is_string(), "identity: {key}");
    }
    assert!(identity["createdAtMs"].is_u64(), "identity: createdAtMs");
    identity["deviceId"]
        .as_str()
        .expect("identity: deviceId")
        .to_string()
}

/// SIGSTOP on creation; SIGCONT on drop if the process is still there, so a failed test leaves
/// nothing stopped (the fixture's safety net then SIGKILLs it).
struct Frozen(u32);

impl Frozen {
    fn new(pid: u32) -> Frozen {
        signal(pid, nix::sys::signal::Signal::SIGSTOP);
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if process_is_running(self.0) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.0 as i32),
                nix::sys::signal::Signal::SIGCONT,
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Logs: the supervisor's (captured) and a gateway's own (its stdout file)
// ---------------------------------------------------------------------------------------------

/// Every log line of this test process (tracing, DEBUG and up, no colours), with its arrival
/// time. One process-wide capture works because the tests run one at a time: each reads the
/// lines after its own start.
#[derive(Clone)]
struct LogCapture {
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
}

/// One formatted event; its lines are stored when the formatter drops it.
struct CaptureWriter {
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
    buffer: Vec<u8>,
}

impl Write for CaptureWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for CaptureWriter {
    fn drop(&mut self) {
        let now = Instant::now();
        let text = String::from_utf8_lossy(&self.buffer);
        let mut lines = self
            .lines
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        lines.extend(text.lines().map(|line| (now, line.to_string())));
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = CaptureWriter;

    fn make_writer(&'a self) -> CaptureWriter {
        CaptureWriter {
            lines: self.lines.clone(),
            buffer: Vec::new(),
        }
    }
}

impl LogCapture {
    /// The process-wide capture, installed as the global subscriber on first use.
    fn get() -> LogCapture {
        static CAPTURE: OnceLock<LogCapture> = OnceLock::new();
        CAPTURE
            .get_or_init(|| {
                let capture = LogCapture {
                    lines: Arc::new(Mutex::new(Vec::new())),
                };
                // Plain text, whatever features other crates of the workspace turn on for
                // tracing-subscriber (`ansi` colours would split `scopes=[...]`).
                let subscriber = tracing_subscriber::fmt()
                    .with_ansi(false)
                    .with_max_level(tracing::Level::DEBUG)
                    .with_writer(capture.clone())
                    .finish();
                tracing::subscriber::set_global_default(subscriber)
                    .expect("no other global subscriber in this test binary");
                capture
            })
            .clone()
    }

    fn after(&self, since: Instant) -> Vec<(Instant, String)> {
        self.lines
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .filter(|(at, _)| *at >= since)
            .cloned()
            .collect()
    }

    fn since(&self, since: Instant) -> Vec<String> {
        self.after(since)
            .into_iter()
            .map(|(_, line)| line)
            .collect()
    }

    fn count_since(&self, since: Instant, needle: &str) -> usize {
        self.after(since)
            .iter()
            .filter(|(_, line)| line.contains(needle))
            .count()
    }

    fn first_after(&self, since: Instant, needle: &str) -> Option<Instant> {
        self.after(since)
            .into_iter()
            .find(|(_, line)| line.contains(needle))
            .map(|(at, _)| at)
    }

    fn first_line_after(&self, since: Instant, needle: &str) -> Option<String> {
        self.after(since)
            .into_iter()
            .find(|(_, line)| line.contains(needle))
            .map(|(_, line)| line)
    }

    /// `hello-ok.auth.scopes` of every handshake since `since`, as the connection logs them
    /// (`scopes=["operator.admin", ...]`).
    fn granted_scopes(&self, since: Instant) -> Vec<String> {
        self.since(since)
            .iter()
            .filter(|line| line.contains("connected to the gateway"))
            .filter_map(|line| {
                let start = line.find("scopes=[")? + "scopes=".len();
                let end = start + line[start..].find(']')? + 1;
                Some(line[start..end].to_string())
            })
            .collect()
    }
}

/// A gateway's own log (stdout of one this test started), without colours.
struct GatewayLog {
    text: String,
}

impl GatewayLog {
    fn read(gateway: &GatewayProcess) -> GatewayLog {
        GatewayLog {
            text: strip_ansi(&gateway.stdout()),
        }
    }

    /// The WebSocket log lines (`[ws] …`), for failure messages.
    fn ws_lines(&self) -> String {
        self.text
            .lines()
            .filter(|line| line.contains("[ws]"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn count(&self, matches: impl Fn(&str) -> bool) -> usize {
        self.text.lines().filter(|line| matches(line)).count()
    }

    /// `⇄ res ✗ shutdown …`: one per `shutdown` request answered.
    fn shutdown_requests(&self) -> usize {
        self.count(|line| line.contains("⇄ res") && line.contains(" shutdown "))
    }

    /// `→ close … handshake=connected`: one per session that got past `connect`.
    fn count_closes_after_handshake(&self) -> usize {
        self.count(|line| line.contains("→ close") && line.contains("handshake=connected"))
    }

    /// `← connect …`: one per `connect` request.
    fn connects(&self) -> usize {
        self.count(|line| line.contains("← connect"))
    }
}

/// The gateway's log once `ready` holds (its log is written as it goes; 30 s at most).
async fn wait_gateway_log(
    gateway: &GatewayProcess,
    ready: impl Fn(&GatewayLog) -> bool,
) -> GatewayLog {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = GatewayLog::read(gateway);
        if ready(&log) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway's log did not show the expected lines in 30 s:\n{}",
            log.ws_lines()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Remove `ESC [ … final-byte` sequences (the gateway colours its console log).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for next in chars.by_ref() {
                    if ('@'..='~').contains(&next) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// A supervisor under test
// ---------------------------------------------------------------------------------------------

/// Forwards every published event, stamped with its arrival time.
struct Collector(mpsc::UnboundedSender<(Instant, GatewayEvent)>);

impl Actor for Collector {
    type Context = Context<Self>;
}

impl Handler<GatewayEvent> for Collector {
    type Result = ();

    fn handle(&mut self, event: GatewayEvent, _ctx: &mut Self::Context) {
        let _ = self.0.send((Instant::now(), event));
    }
}

struct Gateway {
    supervisor: Addr<Supervisor>,
    events: mpsc::UnboundedReceiver<(Instant, GatewayEvent)>,
    /// Every published status seen so far, with its arrival time.
    history: Vec<(Instant, Status)>,
    /// Every published process exit seen so far: when, pid, code.
    exits: Vec<(Instant, u32, Option<i32>)>,
    token: String,
    port: u16,
    /// The supervisor's log lines; this fixture's are those from `since` on.
    logs: LogCapture,
    since: Instant,
    gateway_config_path: PathBuf,
    /// Every gateway pid seen, for the safety net in `Drop`.
    pids: Vec<u32>,
    stopped: bool,
    state_dir: tempfile::TempDir,
}

impl Gateway {
    fn launch(install: &OpenclawInstall, tweak: impl FnOnce(&mut SupervisorOptions)) -> Self {
        let logs = LogCapture::get();
        let since = Instant::now();
        let state_dir = tempfile::Builder::new()
            .prefix("gatewarden-interop-")
            .tempdir()
            .expect("temp state dir");
        let mut options = SupervisorOptions::new(
            LaunchProfile::OpenClaw {
                node: install.node.clone(),
                entry: install.entry.clone(),
            },
            state_dir.path().to_path_buf(),
        );
        let token = random_token();
        options.core.port = free_port();
        options.token = Some(Secret::new(token.clone()));
        // The real gateway drains on SIGTERM; give it time before SIGKILL.
        options.core.stop.kill_grace_ms = 20_000;
        // Cold start on a loaded machine: never below the RUNNING_BOUND (default is 480 s).
        options.core.connect.ready_timeout_ms = options
            .core
            .connect
            .ready_timeout_ms
            .max(RUNNING_BOUND.as_millis() as u64 * 2);
        tweak(&mut options);
        let port = options.core.port;
        let gateway_config_path = options.profile.gateway_config_path(state_dir.path());
        let supervisor = GatewaySupervisor::start(options).expect("valid options");
        let (sender, events) = mpsc::unbounded_channel();
        let collector = Collector(sender).start();
        supervisor.do_send(Subscribe(collector.recipient()));
        Gateway {
            supervisor,
            events,
            history: Vec::new(),
            exits: Vec::new(),
            token,
            port,
            logs,
            since,
            gateway_config_path,
            pids: Vec::new(),
            stopped: false,
            state_dir,
        }
    }

    /// The supervisor's state directory.
    fn state_dir(&self) -> &Path {
        self.state_dir.path()
    }

    /// A1: where the supervisor keeps its device identity.
    fn identity_file(&self) -> PathBuf {
        self.state_dir().join("identity").join("device.json")
    }

    /// The gateway config file the profile points the gateway at (`OPENCLAW_CONFIG_PATH`).
    fn gateway_config_path(&self) -> PathBuf {
        self.gateway_config_path.clone()
    }

    /// Record one published event.
    fn note(&mut self, at: Instant, event: &GatewayEvent) {
        match event {
            GatewayEvent::Status(status) => {
                if let Some(pid) = status.pid {
                    if !self.pids.contains(&pid) {
                        self.pids.push(pid);
                    }
                }
                self.history.push((at, status.clone()));
            }
            GatewayEvent::ProcessExit { pid, code } => self.exits.push((at, *pid, *code)),
            _ => {}
        }
    }

    /// Record every event published so far.
    fn drain_events(&mut self) {
        while let Ok((at, event)) = self.events.try_recv() {
            self.note(at, &event);
        }
    }

    async fn status(&mut self) -> Status {
        let status = self
            .supervisor
            .send(GetStatus)
            .await
            .expect("supervisor alive");
        if let Some(pid) = status.pid {
            if !self.pids.contains(&pid) {
                self.pids.push(pid);
            }
        }
        status
    }

    async fn diagnostics(&mut self) -> DiagnosticsSnapshot {
        self.supervisor
            .send(GetDiagnostics)
            .await
            .expect("supervisor alive")
    }

    /// The first status (current, then published) that satisfies `predicate` within `bound`.
    async fn try_wait_status(
        &mut self,
        bound: Duration,
        predicate: impl Fn(&Status) -> bool,
    ) -> Option<(Instant, Status)> {
        let deadline = tokio::time::Instant::now() + bound;
        // Published statuses already queued come first (their arrival times are exact).
        while let Ok((at, event)) = self.events.try_recv() {
            self.note(at, &event);
            if let GatewayEvent::Status(status) = event {
                if predicate(&status) {
                    return Some((at, status));
                }
            }
        }
        let current = self.status().await;
        if predicate(&current) {
            return Some((Instant::now(), current));
        }
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) | Ok(None) => return None,
                Ok(Some((at, event))) => {
                    self.note(at, &event);
                    if let GatewayEvent::Status(status) = event {
                        if predicate(&status) {
                            return Some((at, status));
                        }
                    }
                }
            }
        }
    }

    async fn wait_status(
        &mut self,
        bound: Duration,
        what: &str,
        predicate: impl Fn(&Status) -> bool,
    ) -> (Instant, Status) {
        match self.try_wait_status(bound, predicate).await {
            Some(found) => found,
            None => {
                let status = self.status().await;
                let diagnostics = self.supervisor.send(GetDiagnostics).await.ok();
                panic!(
                    "timed out after {bound:?} waiting for {what} (port {}); status: {status:?}; \
                     diagnostics: {diagnostics:?}",
                    self.port
                )
            }
        }
    }

    /// Start → running within [`RUNNING_BOUND`]; prints `start_to_running_ms`.
    async fn start_and_wait_running(&mut self, test: &str) -> Status {
        let started = Instant::now();
        let outcome = tokio::time::timeout(RUNNING_BOUND, self.supervisor.send(Start))
            .await
            .unwrap_or_else(|_| panic!("Start not answered within {RUNNING_BOUND:?}"))
            .expect("supervisor alive");
        let start_call_ms = started.elapsed().as_millis();
        let remaining = RUNNING_BOUND.saturating_sub(started.elapsed());
        let (at, status) = self
            .wait_status(remaining, "running after Start", |s| {
                s.state == LifecycleState::Running
            })
            .await;
        assert_eq!(
            outcome,
            CommandOutcome::Completed,
            "Start outcome; status: {status:?}"
        );
        println!(
            "interop-metric test={test} start_to_running_ms={} start_call_ms={start_call_ms} port={}",
            at.duration_since(started).as_millis(),
            self.port
        );
        status
    }

    async fn rpc(&mut self, method: &str) -> Value {
        let reply = tokio::time::timeout(
            STEP_BOUND,
            self.supervisor.send(Rpc {
                method: method.to_string(),
                params: None,
                timeout_ms: Some(60_000),
            }),
        )
        .await
        .unwrap_or_else(|_| panic!("{method} RPC not answered in time"))
        .expect("supervisor alive");
        match reply {
            Ok(payload) => payload,
            Err(error) => panic!("{method} RPC failed: {error:?}"),
        }
    }

    /// Stop → Completed, state stopped, the gateway pid gone and its process group empty.
    async fn stop_and_check(&mut self, test: &str) {
        let pid = self.status().await.pid;
        let sent = Instant::now();
        let outcome = tokio::time::timeout(STEP_BOUND, self.supervisor.send(Stop))
            .await
            .expect("Stop answered in time")
            .expect("supervisor alive");
        let stop_call_ms = sent.elapsed().as_millis();
        self.stopped = true;
        assert_eq!(outcome, CommandOutcome::Completed, "Stop outcome");
        let status = self.status().await;
        assert_eq!(status.state, LifecycleState::Stopped, "status: {status:?}");
        assert_eq!(status.pid, None, "no pid once stopped: {status:?}");
        let Some(pid) = pid else {
            panic!("no gateway pid before Stop");
        };
        // The supervisor has reaped it when Stop answers; allow a moment for /proc to settle.
        let deadline = Instant::now() + Duration::from_secs(10);
        while process_is_running(pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!process_is_running(pid), "gateway pid {pid} survived Stop");
        let members = wait_group_empty(pid).await;
        assert!(
            members.is_empty(),
            "process group {pid} not empty after Stop: {members:?}"
        );
        println!(
            "interop-metric test={test} stop_ms={stop_call_ms} pid={pid} pid_gone=true group_empty=true"
        );
    }

    /// Stop while attached to `foreign`: Completed, state stopped, and the foreign gateway (not
    /// ours, and it does not support `shutdown`) still runs and answers.
    async fn stop_external(&mut self, foreign: &mut GatewayProcess, round: u32) {
        let sent = Instant::now();
        let outcome = tokio::time::timeout(STEP_BOUND, self.supervisor.send(Stop))
            .await
            .expect("Stop answered in time")
            .expect("supervisor alive");
        let stop_ms = sent.elapsed().as_millis();
        assert_eq!(outcome, CommandOutcome::Completed, "Stop outcome");
        let status = self.status().await;
        assert_eq!(status.state, LifecycleState::Stopped, "status: {status:?}");
        assert!(!status.external, "{status:?}");
        assert!(
            foreign.try_exit().is_none(),
            "the foreign gateway exited on our stop"
        );
        let probe = http(foreign.port, "GET", "/healthz", Duration::from_secs(10));
        assert!(
            matches!(probe, Ok((200, _))),
            "the foreign gateway no longer answers /healthz: {probe:?}"
        );
        println!("interop-metric test=interop_7_attach_{round} external_stop_ms={stop_ms}");
    }
}

impl Drop for Gateway {
    /// Safety net for a failed test: SIGKILL every gateway this fixture saw (its process group
    /// first), but only processes whose environment carries this fixture's token. On a failure
    /// it also prints the supervisor's last log lines.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let lines = self.logs.since(self.since);
            let tail = &lines[lines.len().saturating_sub(120)..];
            eprintln!(
                "--- the supervisor's last {} log lines (port {}) ---\n{}",
                tail.len(),
                self.port,
                tail.join("\n")
            );
        }
        let wanted = format!("OPENCLAW_GATEWAY_TOKEN={}", self.token);
        for &pid in &self.pids {
            let ours = std::fs::read(format!("/proc/{pid}/environ"))
                .map(|environ| {
                    environ
                        .split(|b| *b == 0)
                        .any(|entry| entry == wanted.as_bytes())
                })
                .unwrap_or(false);
            if ours && process_is_running(pid) {
                if !self.stopped {
                    eprintln!("interop cleanup: SIGKILL gateway pid {pid} and its group");
                }
                let target = nix::unistd::Pid::from_raw(pid as i32);
                let _ = nix::sys::signal::killpg(target, nix::sys::signal::Signal::SIGKILL);
                let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Revision 2: liveness (issue "Liveness that never kills live work")
// ---------------------------------------------------------------------------------------------

/// `target/<profile>/gatewarden`, which `cargo test --workspace` builds with the CLI crate.
fn gatewarden_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/..");
    let binary = dir.join("gatewarden");
    assert!(
        binary.is_file(),
        "{} is missing: run the workspace tests (`cargo test --workspace`) or `cargo build -p \
         gatewarden-cli` first",
        binary.display()
    );
    binary
}

/// A `gatewarden run --profile openclaw` process in its own group, killed with everything it was
/// seen to own when dropped.
struct RunProcess {
    child: std::process::Child,
    dir: tempfile::TempDir,
    control: PathBuf,
    gateways: Vec<u32>,
}

impl RunProcess {
    fn start(install: &OpenclawInstall) -> RunProcess {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::Builder::new()
            .prefix("gatewarden-interop-run-")
            .tempdir()
            .expect("temp dir");
        let port = free_port();
        let control = dir.path().join("gw.sock");
        let log = std::fs::File::create(dir.path().join("run.log")).expect("log file");
        let child = std::process::Command::new(gatewarden_binary())
            .args(["run", "--profile", "openclaw", "--port", &port.to_string()])
            .arg("--node")
            .arg(&install.node)
            .arg("--openclaw")
            .arg(&install.entry)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--control")
            .arg(&control)
            .env("OPENCLAW_GATEWAY_TOKEN", random_token())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("spawn gatewarden run");
        RunProcess {
            child,
            dir,
            control,
            gateways: Vec::new(),
        }
    }

    fn logs(&self) -> String {
        strip_ansi(&std::fs::read_to_string(self.dir.path().join("run.log")).unwrap_or_default())
    }

    fn status(&mut self) -> Option<Value> {
        let output = std::process::Command::new(gatewarden_binary())
            .args(["status", "--json", "--control"])
            .arg(&self.control)
            .output()
            .ok()?;
        let status: Value = serde_json::from_slice(&output.stdout).ok()?;
        if let Some(pid) = status["pid"].as_u64() {
            self.gateways.push(pid as u32);
        }
        Some(status)
    }

    fn wait_status(
        &mut self,
        bound: Duration,
        what: &str,
        accept: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + bound;
        let mut last = None;
        while Instant::now() < deadline {
            if let Some(status) = self.status() {
                if accept(&status) {
                    return status;
                }
                last = Some(status);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!(
            "timed out waiting for {what}; last status {last:?}\n{}",
            self.logs()
        );
    }

    /// Waits until any of the `(label, needle)` pairs is logged after byte `since` of the log;
    /// returns the first label found.
    fn wait_logged_any(
        &self,
        bound: Duration,
        since: usize,
        choices: &[(&'static str, &str)],
    ) -> &'static str {
        let deadline = Instant::now() + bound;
        while Instant::now() < deadline {
            let logs = self.logs();
            let fresh = logs.get(since..).unwrap_or("");
            if let Some((label, _)) = choices.iter().find(|(_, needle)| fresh.contains(needle)) {
                return label;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("never logged any of {choices:?}\n{}", self.logs());
    }
}

impl Drop for RunProcess {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGCONT);
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in &self.gateways {
            if process_is_running(*pid) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(*pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// D6 against the real gateway: `gatewarden run` itself SIGSTOPped for 75 s, then resumed. The
/// gateway was alive all along: same pid, same bootId, no restart; a probe decides.
#[test]
#[cfg_attr(
    not(openclaw_installed),
    ignore = "real OpenClaw not installed: run scripts/install-openclaw.sh"
)]
fn interop_20_d6_a_paused_supervisor_keeps_the_real_gateway() {
    const NAME: &str = "interop_20";
    let _serial = serial();
    let install = installed();
    let mut run = RunProcess::start(&install);
    let before = run.wait_status(RUNNING_BOUND, "running and ready", |status| {
        status["state"] == "running" && status["gatewayReady"] == true
    });
    let gateway = before["pid"].as_u64().expect("pid");
    let boot_id = before["bootId"].clone();
    assert!(boot_id.is_string(), "{before}");

    let logged_before_pause = run.logs().len();
    let paused_at = Instant::now();
    signal(run.child.id(), nix::sys::signal::Signal::SIGSTOP);
    std::thread::sleep(Duration::from_secs(75));
    signal(run.child.id(), nix::sys::signal::Signal::SIGCONT);
    // Two legitimate paths, decided by which wake-up the runtime serves first after SIGCONT:
    // the first late heartbeat tick notices the stall and a probe decides, or the real gateway
    // had dropped our silent socket during the pause (seen live: close 1006) and that close is
    // read before the tick, so the transport reconnects to the same process. Neither may restart.
    let path = run.wait_logged_any(
        STEP_BOUND,
        logged_before_pause,
        &[
            ("stall-probe", "supervisor stall"),
            ("socket-closed", "gateway socket closed"),
        ],
    );
    let after = run.wait_status(STEP_BOUND, "running and ready after the pause", |status| {
        status["state"] == "running" && status["gatewayReady"] == true
    });
    assert_eq!(
        after["pid"].as_u64(),
        Some(gateway),
        "the gateway was replaced"
    );
    assert_eq!(after["bootId"], boot_id, "the gateway restarted in place");
    let logs = run.logs();
    assert!(
        !logs.contains("gateway frozen") && !logs.contains("restarting the gateway"),
        "a liveness restart was decided:\n{logs}"
    );
    println!(
        "interop-metric test={NAME} paused_ms={} gateway_pid={gateway} path={path}",
        paused_at.elapsed().as_millis()
    );
}
