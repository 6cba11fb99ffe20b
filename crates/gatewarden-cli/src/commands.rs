//! The subcommands other than `run`: the control-socket clients, `config print` and `diagrams`.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Parser as _;

use gatewarden_core::diagram;
use gatewarden_core::machine::{CommandOutcome, LifecycleState};

use crate::cli::{Cli, Command, ConfigCommand, RunArgs, TargetArgs};
use crate::control::{self, ControlReply, ControlRequest, ControlResponse};
use crate::instance::StatusReport;
use crate::{config, console, discovery, events_stream, launch, logging, run, UsageError};

/// How long `status` waits for an answer.
const STATUS_TIMEOUT: Duration = Duration::from_secs(15);

/// How long `start`, `restart`, `reload` and `stop` wait: a start of the real gateway may take
/// minutes (readiness waits up to `connect.ready_timeout_ms`, 8 min by default).
const LIFECYCLE_TIMEOUT: Duration = Duration::from_secs(600);

/// Margin on top of an RPC's own time limit for the answer to come back over the socket.
const RPC_MARGIN: Duration = Duration::from_secs(10);

/// Parse the command line and do what it says.
pub fn dispatch() -> anyhow::Result<ExitCode> {
    // Bad flags: clap prints its message and exits 2 (`--help`/`--version` exit 0).
    let cli = Cli::parse();
    logging::init(cli.log_format);
    match cli.command {
        Command::Run(args) => run::run(&args, cli.log_format),
        Command::Status { target, json } => status(&target, json),
        Command::Start { target } => lifecycle(&target, "start", ControlRequest::Start {}),
        Command::Restart { target } => lifecycle(&target, "restart", ControlRequest::Restart {}),
        Command::Reload { target } => lifecycle(&target, "reload", ControlRequest::Reload {}),
        Command::Stop { target, exit } => lifecycle(&target, "stop", ControlRequest::Stop { exit }),
        Command::Rpc {
            target,
            method,
            params,
            timeout,
        } => rpc(&target, method, params.as_deref(), timeout),
        Command::Events { target, json } => events(&target, json),
        Command::Ls { json } => ls(json),
        Command::Config(ConfigCommand::Print(args)) => config_print(&args),
        Command::Diagrams { out } => diagrams(&out),
    }
}

/// The control socket and the settings of the instance `target` names.
fn target_settings(target: &TargetArgs) -> anyhow::Result<(config::Settings, PathBuf)> {
    let args = RunArgs {
        target: target.clone(),
        ..RunArgs::default()
    };
    let settings = config::resolve(&args)?;
    let named = target.port.is_some()
        || target.control.is_some()
        || target.state_dir.is_some()
        || target.config.is_some()
        || ["port", "control", "state_dir"]
            .iter()
            .any(|key| settings.origins.contains_key(*key));
    if !named {
        // Nothing says which instance: the only running one, whatever its port.
        let live = discovery::live();
        match live.as_slice() {
            [] => {}
            [only] => {
                let path = only.record.control.clone();
                return Ok((settings, path));
            }
            several => {
                return Err(UsageError(format!(
                    "{} gatewarden instances are running; say which with --port \
                     (or --control):\n{}",
                    several.len(),
                    discovery::table(several).trim_end()
                ))
                .into())
            }
        }
    }
    if target.control.is_none() && target.state_dir.is_none() && target.port.is_some() {
        // `--port` alone: the instance on that port, wherever its control socket is.
        if let Some(record) = discovery::records()
            .into_iter()
            .find(|record| record.port == settings.core.port)
        {
            if record.control.exists() {
                return Ok((settings, record.control));
            }
        }
    }
    let path = settings.control_path();
    Ok((settings, path))
}

/// `gatewarden events`: follow the stream until the instance stops.
fn events(target: &TargetArgs, json: bool) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    let (_, path) = target_settings(target)?;
    let stdout = std::io::stdout();
    events_stream::follow(&path, |line, raw| {
        let mut out = stdout.lock();
        if json {
            writeln!(out, "{raw}")?;
        } else {
            writeln!(out, "{}", events_stream::human_line(line))?;
        }
        // Line by line even into a pipe: a script follows events as they happen.
        out.flush()?;
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `gatewarden ls`.
fn ls(json: bool) -> anyhow::Result<ExitCode> {
    let live = discovery::live();
    if json {
        println!("{}", serde_json::to_string_pretty(&live)?);
    } else if live.is_empty() {
        println!("no gatewarden instance is running (start one with `gatewarden run`)");
    } else {
        print!("{}", discovery::table(&live));
    }
    Ok(ExitCode::SUCCESS)
}

fn ask(path: &Path, request: &ControlRequest, timeout: Duration) -> anyhow::Result<ControlReply> {
    match control::request(path, request, timeout)? {
        ControlResponse::Ok(reply) => Ok(reply),
        ControlResponse::Error(error) => Err(error.into()),
    }
}

fn status(target: &TargetArgs, json: bool) -> anyhow::Result<ExitCode> {
    let (_, path) = target_settings(target)?;
    let reply = ask(&path, &ControlRequest::Status {}, STATUS_TIMEOUT)?;
    let ControlReply::Status(report) = reply else {
        bail!("gatewarden answered `status` with something else");
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", human_status(&report));
    }
    Ok(ExitCode::SUCCESS)
}

/// The plain-text `status`. Version and protocol come from the last handshake: outside
/// `running` they are marked "last known", since nothing is connected to vouch for them.
fn human_status(report: &StatusReport) -> String {
    let status = &report.status;
    let optional = |value: Option<String>| value.unwrap_or_else(|| "-".into());
    let mut out = format!(
        "gateway {} (pid {}, uptime {})\n",
        status.state.as_str(),
        optional(status.pid.map(|pid| pid.to_string())),
        optional(status.uptime_ms.map(console::human_duration)),
    );
    let connected = status.state == LifecycleState::Running;
    let handshake = match (&status.version, status.protocol) {
        (None, None) => String::new(),
        (version, protocol) => format!(
            " · {}version {} · protocol {}",
            if connected { "" } else { "last known " },
            optional(version.clone()),
            optional(protocol.map(|protocol| protocol.to_string())),
        ),
    };
    out.push_str(&format!(
        "  port {}{handshake} · ready {}{}\n",
        status.port,
        if status.gateway_ready { "yes" } else { "no" },
        if status.external {
            " · external (not ours)"
        } else {
            ""
        }
    ));
    out.push_str(&format!(
        "  health {} · reconnect attempts {} · heartbeat misses {}\n",
        console::health_text(&report.health),
        status.reconnect_attempts,
        report.health.consecutive_heartbeat_misses
    ));
    if let Some(error) = &status.error {
        out.push_str(&format!("  error: {error}\n"));
    }
    out.push_str(&format!(
        "  supervisor pid {} · profile {} · up {}\n",
        report.supervisor.pid,
        report.supervisor.profile.as_str(),
        console::human_duration(report.supervisor.uptime_ms)
    ));
    out
}

fn lifecycle(target: &TargetArgs, name: &str, request: ControlRequest) -> anyhow::Result<ExitCode> {
    let (_, path) = target_settings(target)?;
    let reply = ask(&path, &request, LIFECYCLE_TIMEOUT)?;
    let ControlReply::Command { outcome, .. } = reply else {
        bail!("gatewarden answered `{name}` with something else");
    };
    match outcome {
        CommandOutcome::Completed => println!("{name}: done"),
        CommandOutcome::Scheduled => println!("{name}: scheduled"),
        CommandOutcome::Deferred => {
            println!("{name}: deferred until the current start or reconnect settles")
        }
        CommandOutcome::Ignored { reason } => println!("{name}: nothing to do ({reason})"),
        CommandOutcome::Suppressed { retry_after_ms } => {
            bail!("{name} suppressed by the restart governor; try again in {retry_after_ms} ms")
        }
        CommandOutcome::Superseded => bail!("{name} was superseded by a later start or stop"),
        CommandOutcome::Failed { failure } => bail!("{name} failed: {failure}"),
        other => bail!("{name}: an answer this gatewarden does not know: {other:?}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn rpc(
    target: &TargetArgs,
    method: String,
    params: Option<&str>,
    timeout_ms: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let params =
        match params {
            None => None,
            Some(text) => Some(serde_json::from_str(text).map_err(|error| {
                UsageError(format!("PARAMS is not valid JSON ({error}): {text}"))
            })?),
        };
    let (settings, path) = target_settings(target)?;
    let limit = Duration::from_millis(timeout_ms.unwrap_or(settings.core.rpc.default_timeout_ms));
    let request = ControlRequest::Rpc {
        method: method.clone(),
        params,
        timeout_ms,
    };
    let reply = ask(&path, &request, limit.saturating_add(RPC_MARGIN))
        .with_context(|| format!("rpc {method} failed"))?;
    let ControlReply::Rpc { result } = reply else {
        bail!("gatewarden answered `rpc` with something else");
    };
    let text = if std::io::stdout().is_terminal() {
        serde_json::to_string_pretty(&result)?
    } else {
        serde_json::to_string(&result)?
    };
    println!("{text}");
    Ok(ExitCode::SUCCESS)
}

fn config_print(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let settings = config::resolve(args)?;
    let origin = launch::token_origin(&settings);
    if let launch::TokenOrigin::File(path) = &origin {
        std::fs::metadata(path)
            .with_context(|| format!("cannot read token file {}", path.display()))?;
    }
    let summary = launch::TokenSummary { origin };
    print!("{}", config::render(&settings, &summary)?);
    Ok(ExitCode::SUCCESS)
}

/// Write the diagrams as `cargo run -p xtask -- diagrams` does.
fn diagrams(out: &Path) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let observed = diagram::explore();
    let mut sources = Vec::new();
    for (name, text) in diagram::files(&observed) {
        let path = out.join(&name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {}", path.display());
        if name.ends_with(".dot") {
            sources.push(path);
        }
    }
    // The SVGs are a convenience for readers; without Graphviz the text formats are enough.
    for source in sources {
        let svg = source.with_extension("svg");
        match std::process::Command::new("dot")
            .arg("-Tsvg")
            .arg(&source)
            .arg("-o")
            .arg(&svg)
            .status()
        {
            Ok(status) if status.success() => println!("wrote {}", svg.display()),
            Ok(status) => eprintln!(
                "dot failed on {} ({status}); skipped its SVG",
                source.display()
            ),
            Err(_) => {
                eprintln!("Graphviz `dot` not installed; skipped the SVGs");
                break;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProfileKind;
    use crate::instance::SupervisorInfo;
    use gatewarden_core::health::{HealthReason, HealthState, HealthSummary};
    use gatewarden_core::liveness::{LivenessClass, RecoveryPhase, RecoverySnapshot};
    use gatewarden_core::machine::Status;

    fn report(state: LifecycleState, reasons: Vec<HealthReason>) -> StatusReport {
        StatusReport {
            status: Status {
                state,
                port: 18791,
                pid: None,
                uptime_ms: None,
                error: None,
                connected_at_ms: None,
                version: Some("2026.9.6-sim".into()),
                protocol: Some(4),
                boot_id: None,
                reconnect_attempts: 0,
                gateway_ready: false,
                external: false,
            },
            health: HealthSummary {
                state: if reasons.is_empty() {
                    HealthState::Healthy
                } else {
                    HealthState::Degraded
                },
                reasons,
                liveness: LivenessClass::Alive,
                consecutive_heartbeat_misses: 0,
                last_alive_at: None,
                last_rpc_success_at: None,
                last_rpc_failure_at: None,
                last_rpc_failure_method: None,
                last_channels_status_ok_at: None,
                last_channels_status_failure_at: None,
                degraded_capabilities: Vec::new(),
            },
            recovery: RecoverySnapshot {
                phase: RecoveryPhase::Watching,
                liveness: LivenessClass::Alive,
                deadline_at_ms: None,
                process_evidence: false,
                last_sample: None,
                last_probe: None,
            },
            supervisor: SupervisorInfo {
                pid: 1,
                profile: ProfileKind::Sim,
                uptime_ms: 1000,
                version: "0.1.0".into(),
                leftovers_ended: Vec::new(),
            },
        }
    }

    #[test]
    fn plain_status_names_the_health_reasons() {
        let text = human_status(&report(
            LifecycleState::Running,
            vec![HealthReason::GatewayDegraded, HealthReason::RpcTimeout],
        ));
        assert!(
            text.contains("health degraded (gateway_degraded, rpc_timeout)"),
            "{text}"
        );
        let healthy = human_status(&report(LifecycleState::Running, vec![]));
        assert!(healthy.contains("health healthy ·"), "{healthy}");
    }

    #[test]
    fn plain_status_marks_the_handshake_facts_as_last_known_when_not_running() {
        let running = human_status(&report(LifecycleState::Running, vec![]));
        assert!(
            running.contains("· version 2026.9.6-sim · protocol 4 ·"),
            "{running}"
        );
        assert!(!running.contains("last known"), "{running}");
        for state in [
            LifecycleState::Stopped,
            LifecycleState::Reconnecting,
            LifecycleState::Error,
        ] {
            let text = human_status(&report(state, vec![HealthReason::GatewayNotRunning]));
            assert!(
                text.contains("· last known version 2026.9.6-sim · protocol 4 ·"),
                "{state:?}: {text}"
            );
        }
        let mut never = report(LifecycleState::Starting, vec![]);
        never.status.version = None;
        never.status.protocol = None;
        let text = human_status(&never);
        assert!(!text.contains("version"), "{text}");
    }
}
