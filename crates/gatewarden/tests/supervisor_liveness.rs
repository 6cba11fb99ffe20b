//! D1–D7 end to end against the real simulator, with the default heartbeat timers (30 s pings,
//! 3 misses, 180 s liveness deadline, 5 s probe) except where a test says otherwise.
//!
//! These scenarios are bounded by the gateway's and the supervisor's real clocks (up to ~3
//! minutes each), so they run *together*: one test starts every scenario on its own sim and
//! supervisor in one actix system and waits for all of them. Each scenario is an `async fn` named
//! after the rule it proves; the test fails naming every scenario that failed. (The standard
//! harness runs two tests at a time on a 2-core machine; run one by one they would take four
//! times as long.)

mod supervisor_rules_common;
mod supervisor_support;

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use actix::Addr;
use gatewarden::events::GatewayEvent;
use gatewarden::supervisor::{
    DiagnosticsSnapshot, GetDiagnostics, GetHealth, Rpc, Start, Stop, Supervisor,
};
use gatewarden_core::error::StartFailure;
use gatewarden_core::health::{HealthReason, HealthState};
use gatewarden_core::liveness::{LivenessClass, RecoveryPhase};
use gatewarden_core::machine::{CommandOutcome, LifecycleState};
use gatewarden_core::rpc::RpcError;
use serde_json::json;
use supervisor_rules_common::{init_tracing, ExternalSim};
use supervisor_support::{alive, free_port, options, start, Fixture};

type Scenario = Pin<Box<dyn Future<Output = Result<(), String>>>>;

const INTERVAL_MS: u64 = 30_000;
const MISSES: u64 = 3;
/// Scheduling slack on a busy 2-core machine.
const SLACK: Duration = Duration::from_secs(6);

fn check(condition: bool, message: impl FnOnce() -> String) -> Result<(), String> {
    if condition {
        Ok(())
    } else {
        Err(message())
    }
}

async fn diagnostics(supervisor: &Addr<Supervisor>) -> DiagnosticsSnapshot {
    supervisor
        .send(GetDiagnostics)
        .await
        .expect("supervisor alive")
}

/// Poll every 200 ms until `predicate` holds or `limit` passes; returns when it first held.
async fn wait_until(
    supervisor: &Addr<Supervisor>,
    limit: Duration,
    predicate: impl Fn(&DiagnosticsSnapshot) -> bool,
) -> Option<Instant> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if predicate(&diagnostics(supervisor).await) {
            return Some(Instant::now());
        }
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

async fn fault(supervisor: &Addr<Supervisor>, params: serde_json::Value) -> Result<(), String> {
    supervisor
        .send(Rpc {
            method: "sim.fault".into(),
            params: Some(params),
            timeout_ms: Some(5_000),
        })
        .await
        .expect("supervisor alive")
        .map(|_| ())
        .map_err(|error| format!("sim.fault failed: {error}"))
}

async fn running(fixture: &mut Fixture) -> Result<u32, String> {
    let outcome = fixture
        .supervisor
        .send(Start)
        .await
        .expect("supervisor alive");
    check(outcome == CommandOutcome::Completed, || {
        format!("start: {outcome:?}")
    })?;
    let status = fixture.wait_state(LifecycleState::Running).await;
    status.pid.ok_or_else(|| "no pid".to_string())
}

/// D4: busy for 170 s with the default 180 s deadline: no restart, the RPC sent during the busy
/// period is answered, health `degraded` with reason `busy`, never `unresponsive`.
async fn d4_a_gateway_busy_for_170_s_is_never_restarted() -> Result<(), String> {
    let mut fixture = Fixture::new(&[]);
    let pid = running(&mut fixture).await?;
    let busy_ms = 170_000;
    fault(&fixture.supervisor, json!({"kind": "busy", "ms": busy_ms})).await?;
    let began = Instant::now();
    // A call made while the event loop is blocked: answered when it is free again.
    let call = fixture.supervisor.send(Rpc {
        method: "echo".into(),
        params: Some(json!({"during": "busy"})),
        timeout_ms: Some(busy_ms + 60_000),
    });
    let watch = async {
        let mut saw_busy = false;
        while began.elapsed() < Duration::from_millis(busy_ms) {
            let health = fixture.supervisor.send(GetHealth).await.expect("alive");
            if health.state == HealthState::Unresponsive {
                return Err(format!("unresponsive while busy: {health:?}"));
            }
            if health.state == HealthState::Degraded && health.reasons.contains(&HealthReason::Busy)
            {
                saw_busy = true;
            }
            actix_rt::time::sleep(Duration::from_millis(500)).await;
        }
        check(saw_busy, || "health never said busy".to_string())
    };
    let (answer, watched) = futures_join(call, watch).await;
    watched?;
    let answer = answer.expect("supervisor alive");
    check(answer == Ok(json!({"during": "busy"})), || {
        format!("the call made during the busy period: {answer:?}")
    })?;
    let after = diagnostics(&fixture.supervisor).await;
    check(
        after.restarts_executed == 0 && after.process_starts == 1,
        || format!("restarted a busy gateway: {after:?}"),
    )?;
    check(alive(pid), || "the busy gateway is gone".into())?;
    let probe = after.recovery.last_probe.clone();
    eprintln!(
        "liveness-metric scenario=busy_170s restarts={} last_probe={probe:?}",
        after.restarts_executed
    );
    fixture.supervisor.send(Stop).await.expect("alive");
    Ok(())
}

/// D4 with a shorter deadline: busy past it → exactly one restart, decided at deadline + probe
/// time-out.
async fn d4_a_gateway_busy_past_the_deadline_is_restarted_once_after_a_failed_probe(
) -> Result<(), String> {
    let state_dir = tempfile::tempdir().expect("temp dir");
    let mut options = options(&state_dir, &[]);
    options.core.liveness.deadline_ms = 20_000;
    let deadline = Duration::from_millis(options.core.liveness.deadline_ms);
    let probe = Duration::from_millis(options.core.liveness.probe_timeout_ms);
    let mut fixture = start(options, state_dir);
    let first = running(&mut fixture).await?;
    // Ready (the probe answered) before the fault, so the deadline counts from about now.
    fixture.wait_status(|status| status.gateway_ready).await;
    fault(&fixture.supervisor, json!({"kind": "busy", "ms": 90_000})).await?;
    let began = Instant::now();
    let decided = wait_until(&fixture.supervisor, deadline + probe + SLACK * 2, |d| {
        d.restarts_executed >= 1 || d.recovery.phase == RecoveryPhase::RestartExecuting
    })
    .await
    .ok_or("no restart of a gateway busy past the deadline")?;
    let took = decided - began;
    check(took + Duration::from_secs(1) >= deadline + probe, || {
        format!("restarted after {took:?}, before deadline + probe time-out")
    })?;
    check(took <= deadline + probe + SLACK, || {
        format!("restarted only after {took:?}")
    })?;
    eprintln!(
        "liveness-metric scenario=busy_past_deadline decided_ms={} deadline_plus_probe_ms={}",
        took.as_millis(),
        (deadline + probe).as_millis()
    );
    let status = fixture
        .wait_status(|status| {
            status.state == LifecycleState::Running && status.pid.is_some_and(|pid| pid != first)
        })
        .await;
    // Running again: give a second restart a chance to show up (it must not).
    actix_rt::time::sleep(Duration::from_secs(3)).await;
    let after = diagnostics(&fixture.supervisor).await;
    check(
        after.restarts_executed == 1 && after.process_starts == 2,
        || {
            format!(
                "expected exactly one restart: {after:?} (pid {:?})",
                status.pid
            )
        },
    )?;
    fixture.supervisor.send(Stop).await.expect("alive");
    Ok(())
}

/// D3: a frozen-soft gateway (event loop asleep, no CPU) is replaced within (misses + 1) ×
/// interval, as fast as before Revision 2.
async fn d3_a_frozen_soft_gateway_is_restarted_within_misses_plus_one_intervals(
) -> Result<(), String> {
    let mut fixture = Fixture::new(&[]);
    let first = running(&mut fixture).await?;
    fault(
        &fixture.supervisor,
        json!({"kind": "frozen-soft", "ms": 400_000}),
    )
    .await?;
    let began = Instant::now();
    let bound = Duration::from_millis((MISSES + 1) * INTERVAL_MS);
    let decided = wait_until(&fixture.supervisor, bound + SLACK * 2, |d| {
        d.restarts_executed >= 1 || d.recovery.phase == RecoveryPhase::RestartExecuting
    })
    .await
    .ok_or("a frozen-soft gateway was never restarted")?;
    check(decided - began <= bound + SLACK, || {
        format!("restarted after {:?}, bound {bound:?}", decided - began)
    })?;
    eprintln!(
        "liveness-metric scenario=frozen_soft decided_ms={} bound_ms={}",
        (decided - began).as_millis(),
        bound.as_millis()
    );
    let status = fixture
        .wait_status(|status| {
            status.state == LifecycleState::Running && status.pid.is_some_and(|pid| pid != first)
        })
        .await;
    check(status.pid != Some(first), || "same pid".into())?;
    fixture.supervisor.send(Stop).await.expect("alive");
    Ok(())
}

/// D2/D3: a gateway stopped with SIGSTOP is `frozen` at once and replaced at the miss threshold.
async fn d3_a_sigstopped_gateway_is_frozen_and_replaced() -> Result<(), String> {
    let mut fixture = Fixture::new(&[]);
    let first = running(&mut fixture).await?;
    // SAFETY: kill() signals the sim this supervisor spawned and still owns.
    unsafe {
        libc::kill(first as i32, libc::SIGSTOP);
    }
    let began = Instant::now();
    let frozen = wait_until(
        &fixture.supervisor,
        Duration::from_millis(3 * INTERVAL_MS),
        |d| d.recovery.liveness == LivenessClass::Frozen,
    )
    .await;
    check(frozen.is_some(), || "never classified frozen".into())?;
    let bound = Duration::from_millis((MISSES + 1) * INTERVAL_MS);
    let decided = wait_until(&fixture.supervisor, bound + SLACK * 2, |d| {
        d.restarts_executed >= 1 || d.recovery.phase == RecoveryPhase::RestartExecuting
    })
    .await
    .ok_or("a stopped gateway was never restarted")?;
    check(decided - began <= bound + SLACK, || {
        format!("restarted after {:?}, bound {bound:?}", decided - began)
    })?;
    eprintln!(
        "liveness-metric scenario=sigstop decided_ms={} bound_ms={}",
        (decided - began).as_millis(),
        bound.as_millis()
    );
    fixture
        .wait_status(|status| {
            status.state == LifecycleState::Running && status.pid.is_some_and(|pid| pid != first)
        })
        .await;
    fixture.supervisor.send(Stop).await.expect("alive");
    Ok(())
}

/// D5: an external gateway that stops answering is never signalled; the transport reconnects,
/// health says `external_unavailable`, and it is `running` again once the gateway answers.
async fn d5_an_external_gateway_that_stops_answering_is_only_reconnected() -> Result<(), String> {
    let port = free_port();
    let mut external = ExternalSim::start(port, &[]).await;
    let state_dir = tempfile::tempdir().expect("temp dir");
    let mut options = options(&state_dir, &[]);
    options.core.port = port;
    let deadline = Duration::from_millis(options.core.liveness.deadline_ms);
    let probe = Duration::from_millis(options.core.liveness.probe_timeout_ms);
    let mut fixture = start(options, state_dir);
    let outcome = fixture.supervisor.send(Start).await.expect("alive");
    check(outcome == CommandOutcome::Completed, || {
        format!("attach: {outcome:?}")
    })?;
    let status = fixture.wait_state(LifecycleState::Running).await;
    check(status.external, || "not attached as external".into())?;
    // It stops answering (stopped by its owner, not by us).
    // SAFETY: kill() signals the sim this test started.
    unsafe {
        libc::kill(external.pid as i32, libc::SIGSTOP);
    }
    let unavailable = async {
        let limit = Instant::now() + deadline + probe + SLACK * 3;
        loop {
            let health = fixture.supervisor.send(GetHealth).await.expect("alive");
            if health.state == HealthState::ExternalUnavailable {
                return Ok(());
            }
            if Instant::now() > limit {
                return Err(format!("never external_unavailable: {health:?}"));
            }
            actix_rt::time::sleep(Duration::from_millis(500)).await;
        }
    };
    unavailable.await?;
    // A call now is refused with the typed error or not-connected, never hangs.
    let refused = fixture
        .supervisor
        .send(Rpc {
            method: "echo".into(),
            params: None,
            timeout_ms: Some(2_000),
        })
        .await
        .expect("alive");
    check(
        matches!(
            refused,
            Err(RpcError::NotConnected) | Err(RpcError::ExternalUnavailable)
        ),
        || format!("a call while unavailable: {refused:?}"),
    )?;
    // While it stays silent, the transport-only reconnect fails typed (never a spawn): the
    // published error carries StartFailure::ExternalUnavailable.
    let typed = async {
        let limit = Instant::now() + Duration::from_secs(90);
        loop {
            let next =
                actix_rt::time::timeout(Duration::from_millis(500), fixture.events.recv()).await;
            match next {
                Ok(Some(GatewayEvent::Error {
                    failure: Some(failure),
                    ..
                })) if matches!(
                    failure.start_failure(),
                    Some(StartFailure::ExternalUnavailable { .. })
                ) =>
                {
                    return Ok(())
                }
                Ok(None) => return Err("the event channel closed".to_string()),
                _ => {}
            }
            if Instant::now() > limit {
                return Err("no start failure ExternalUnavailable was published".to_string());
            }
        }
    };
    typed.await?;
    // SAFETY: as above.
    unsafe {
        libc::kill(external.pid as i32, libc::SIGCONT);
    }
    fixture
        .wait_status(|status| status.state == LifecycleState::Running && status.external)
        .await;
    let after = diagnostics(&fixture.supervisor).await;
    check(after.process_starts == 0, || {
        format!("spawned a gateway in place of the user's: {after:?}")
    })?;
    check(!external.exited() && alive(external.pid), || {
        "the external gateway was ended".into()
    })?;
    fixture.supervisor.send(Stop).await.expect("alive");
    Ok(())
}

/// Poll two futures to completion on this thread.
async fn futures_join<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let mut a = Box::pin(a);
    let mut b = Box::pin(b);
    let mut a_out = None;
    let mut b_out = None;
    std::future::poll_fn(|cx| {
        if a_out.is_none() {
            if let std::task::Poll::Ready(out) = a.as_mut().poll(cx) {
                a_out = Some(out);
            }
        }
        if b_out.is_none() {
            if let std::task::Poll::Ready(out) = b.as_mut().poll(cx) {
                b_out = Some(out);
            }
        }
        if a_out.is_some() && b_out.is_some() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    (
        a_out.expect("polled to completion"),
        b_out.expect("polled to completion"),
    )
}

#[actix_rt::test]
async fn d1_to_d5_liveness_scenarios_against_the_sim_with_default_timers() {
    init_tracing();
    let scenarios: Vec<(&str, Scenario)> = vec![
        (
            "d4_a_gateway_busy_for_170_s_is_never_restarted",
            Box::pin(d4_a_gateway_busy_for_170_s_is_never_restarted()),
        ),
        (
            "d4_a_gateway_busy_past_the_deadline_is_restarted_once_after_a_failed_probe",
            Box::pin(d4_a_gateway_busy_past_the_deadline_is_restarted_once_after_a_failed_probe()),
        ),
        (
            "d3_a_frozen_soft_gateway_is_restarted_within_misses_plus_one_intervals",
            Box::pin(d3_a_frozen_soft_gateway_is_restarted_within_misses_plus_one_intervals()),
        ),
        (
            "d3_a_sigstopped_gateway_is_frozen_and_replaced",
            Box::pin(d3_a_sigstopped_gateway_is_frozen_and_replaced()),
        ),
        (
            "d5_an_external_gateway_that_stops_answering_is_only_reconnected",
            Box::pin(d5_an_external_gateway_that_stops_answering_is_only_reconnected()),
        ),
    ];
    let names: Vec<&str> = scenarios.iter().map(|(name, _)| *name).collect();
    let handles: Vec<_> = scenarios
        .into_iter()
        .map(|(_, scenario)| actix_rt::spawn(scenario))
        .collect();
    let mut failures = Vec::new();
    for (name, handle) in names.into_iter().zip(handles) {
        match handle.await {
            Ok(Ok(())) => eprintln!("scenario {name}: ok"),
            Ok(Err(reason)) => failures.push(format!("{name}: {reason}")),
            Err(panic) => failures.push(format!("{name}: panicked: {panic}")),
        }
    }
    assert!(
        failures.is_empty(),
        "failed scenarios:\n{}",
        failures.join("\n")
    );
}
