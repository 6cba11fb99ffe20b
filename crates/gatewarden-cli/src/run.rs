//! `gatewarden run`: start the supervisor in an actix system, serve the control socket and the
//! HTTP endpoint, keep the status area fresh, and stop gracefully on Ctrl-C or SIGTERM.
//!
//! Shutdown: the first SIGINT/SIGTERM sends `Stop` and waits for it (the library terminates the
//! gateway's whole process group), then exits 0. A second signal while that runs sends
//! `ForceTerminateForQuit` and exits 130, as shells expect from an interrupted program.

use std::cell::Cell;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use anyhow::Context as _;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::Notify;

use gatewarden::events::GatewayEvent;
use gatewarden::launch::Secret;
use gatewarden::lock::{LockHolder, StateDirLock};
use gatewarden::process::LeftoverReport;
use gatewarden::profile::LaunchProfile;
use gatewarden::supervisor::{ForceTerminateForQuit, Start, Stop, Subscribe, Supervisor};
use gatewarden::{GatewaySupervisor, SupervisorOptions};
use gatewarden_core::config::SupervisorConfig;
use gatewarden_core::error::{CommandFailure, StartFailure};
use gatewarden_core::machine::{CommandOutcome, LifecycleState, Status};

use crate::cli::{LogFormat, RunArgs, TargetArgs};
use crate::config::{ControlPlaneConfig, ProfileKind};
use crate::instance::Instance;
use crate::launch::TokenOrigin;
use crate::notify::Notifier;
use crate::{config, console, control, discovery, http, launch, notify};

/// How often the status area is redrawn when nothing happens (the uptime ticks).
const AREA_REFRESH: Duration = Duration::from_secs(1);

/// A second signal while stopping forces the quit; the force itself is bounded by this.
const FORCE_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything resolved before the actix system starts.
struct Plan {
    core: SupervisorConfig,
    profile: LaunchProfile,
    profile_kind: ProfileKind,
    state_dir: PathBuf,
    control_path: PathBuf,
    http: Option<std::net::SocketAddr>,
    token: Option<Secret>,
    token_origin: TokenOrigin,
    live_area: bool,
    /// Y1: the per-subscriber event queue.
    event_queue: Option<usize>,
    /// F8: leave non-zero after a give-up.
    exit_on_failure: bool,
    /// What the failure hints need to know.
    hints: HintContext,
    /// The one-line "what next" hint, printed once the gateway runs (terminals only).
    next_hint: Option<String>,
    leftovers: LeftoverReport,
    control_plane: ControlPlaneConfig,
}

/// `gatewarden run`.
pub fn run(args: &RunArgs, format: LogFormat) -> anyhow::Result<ExitCode> {
    let settings = config::resolve(args)?;
    let profile = launch::resolve_profile(&settings)?;
    let (token, token_origin) = launch::resolve_token(&settings)?;
    let state_dir = settings.state_dir();
    launch::create_private_dir(&state_dir)?;
    let control_path = settings.control_path();
    // K1: before anything else touches the state directory (the control socket, the orphan
    // probe, the record), so a second supervisor refuses without acting on the first's gateway.
    // Held until this function returns; the kernel releases it if we are killed.
    let _lock = StateDirLock::acquire(
        &state_dir,
        &LockHolder::this_process(Some(control_path.clone())),
    )?;
    // K4: what a killed predecessor left in its gateway's process group goes before anything is
    // spawned; the library logs the details, the status report keeps the pids.
    let leftovers = gatewarden::process::end_leftovers(&state_dir);
    let plan = Plan {
        core: settings.core.clone(),
        profile,
        profile_kind: settings.cli.profile,
        control_path,
        state_dir,
        http: settings.http,
        token,
        hints: HintContext {
            gateway_config: profile_config_path(&settings),
            token: describe_token(&token_origin),
        },
        token_origin,
        live_area: format == LogFormat::Text && console::enable_live_area(),
        exit_on_failure: args.exit_on_failure,
        event_queue: settings.cli.event_queue,
        next_hint: next_hint(std::io::stderr().is_terminal(), format, &args.target),
        leftovers,
        control_plane: settings.cli.control_plane.clone(),
    };
    let system = actix_rt::System::new();
    let result = system.block_on(supervise(plan));
    console::clear_status_area();
    result
}

async fn supervise(plan: Plan) -> anyhow::Result<ExitCode> {
    // Everything that can fail for a reason a person can fix is set up before the gateway starts.
    let control_socket = control::bind(&plan.control_path)?;
    // Discovery (`gatewarden ls`, port-less client commands); removed again on a normal exit.
    let _registration = match discovery::register(&discovery::InstanceRecord {
        port: plan.core.port,
        profile: plan.profile_kind,
        pid: std::process::id(),
        control: plan.control_path.clone(),
        state_dir: plan.state_dir.clone(),
    }) {
        Ok(registration) => Some(registration),
        Err(error) => {
            tracing::warn!("cannot record this instance for `gatewarden ls`: {error:#}");
            None
        }
    };
    let http_listener = match plan.http {
        Some(address) => Some(http::bind(address).await?),
        None => None,
    };
    let mut signals = Signals {
        interrupt: signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?,
        terminate: signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?,
    };
    let notifier = Notifier::from_env().map(Rc::new);

    let port = plan.core.port;
    let mut options = SupervisorOptions::new(plan.profile.clone(), plan.state_dir.clone());
    options.core = plan.core.clone();
    options.token = plan.token.clone();
    if let Some(queue) = plan.event_queue {
        options.event_capacity = queue;
    }
    let origin = Instant::now();
    // The config was validated when it was merged (exit 2 there); this refuses nothing new.
    let supervisor =
        GatewaySupervisor::start(options).context("the supervisor options were refused")?;
    let mut instance = Instance::new(supervisor.clone(), plan.profile_kind, origin);
    instance.leftovers_ended = plan.leftovers.ended.clone();
    let instance = Rc::new(instance);

    let refresh = Rc::new(Notify::new());
    let first_start_done = Rc::new(Cell::new(false));
    let watcher = EventWatcher {
        instance: instance.clone(),
        refresh: refresh.clone(),
        notifier: notifier.clone(),
        last: None,
        hints: plan.hints.clone(),
        first_start_done: first_start_done.clone(),
    }
    .start();
    supervisor.do_send(Subscribe(watcher.recipient()));

    let limits = &plan.control_plane;
    let mut tasks = vec![
        actix_rt::spawn(control::serve(
            control_socket,
            instance.clone(),
            control::Limits::from(limits),
        )),
        actix_rt::spawn({
            let instance = instance.clone();
            let every = Duration::from_millis(limits.snapshot_refresh_ms.max(1));
            async move { instance.refresh_snapshot(every).await }
        }),
    ];
    if let Some(listener) = http_listener {
        tasks.push(actix_rt::spawn(http::serve(
            listener,
            instance.clone(),
            http::Limits::from(limits),
        )));
    }
    if plan.live_area {
        let header = area_header(&plan);
        tasks.push(actix_rt::spawn(refresh_area(
            instance.clone(),
            refresh,
            header,
        )));
    }
    if let (Some(notifier), Some(interval)) = (notifier.clone(), notify::watchdog_interval()) {
        tasks.push(actix_rt::spawn(watchdog(
            instance.clone(),
            notifier,
            interval,
        )));
    }

    tracing::info!(
        profile = plan.profile_kind.as_str(),
        port,
        state_dir = %plan.state_dir.display(),
        control = %plan.control_path.display(),
        http = plan.http.map(|address| address.to_string()).unwrap_or_else(|| "off".into()),
        token = %describe_token(&plan.token_origin),
        "gatewarden supervising"
    );

    let code = supervise_until_quit(
        &instance,
        &mut signals,
        notifier.as_deref(),
        plan.exit_on_failure,
        &plan.hints,
        plan.next_hint.as_deref(),
        &first_start_done,
    )
    .await;
    // Y1: every subscriber reads the last events and an `end` line before the process exits.
    instance
        .streams
        .close(Duration::from_millis(
            plan.control_plane.stream_end_grace_ms,
        ))
        .await;
    for task in tasks {
        task.abort();
    }
    code
}

/// Start the gateway, wait for a quit request, stop it.
async fn supervise_until_quit(
    instance: &Instance,
    signals: &mut Signals,
    notifier: Option<&Notifier>,
    exit_on_failure: bool,
    hints: &HintContext,
    next_hint: Option<&str>,
    first_start_done: &Cell<bool>,
) -> anyhow::Result<ExitCode> {
    let supervisor = &instance.supervisor;
    let start = supervisor.send(Start);
    tokio::pin!(start);
    let outcome = tokio::select! {
        outcome = &mut start => Some(outcome),
        name = signals.next() => {
            tracing::info!("{name} during start: stopping");
            None
        }
    };
    match outcome {
        None => return Ok(shutdown(supervisor, signals, notifier).await),
        Some(Err(_)) => anyhow::bail!("the supervisor stopped unexpectedly during start"),
        Some(Ok(CommandOutcome::Failed { failure })) => {
            // The first start failed after the library's own retries (L5–L7): nothing will try
            // again, so say why and leave rather than sit in `error`. This is the one place the
            // CLI prints the reason (the event watcher holds it back until the first start is
            // done), with what to do about it.
            let _ = shutdown(supervisor, signals, notifier).await;
            let hint = failure_hint(Some(&failure), hints);
            return Err(anyhow::anyhow!("{failure}{hint}")).context("the gateway did not start");
        }
        Some(Ok(_)) => {}
    }
    first_start_done.set(true);
    if let Some(notifier) = notifier {
        notifier.send("READY=1");
    }
    let gave_up = async {
        if exit_on_failure {
            instance.gave_up_notice.notified().await
        } else {
            std::future::pending().await
        }
    };
    if let Some(hint) = next_hint {
        console::write_log(format!("{hint}\n").as_bytes());
    }
    tokio::select! {
        name = signals.next() => tracing::info!("{name}: stopping the gateway"),
        () = instance.exit_requested.notified() => {}
        () = gave_up => {
            // F8: systemd's `Restart=` (or whatever runs us) takes over from here.
            let reason = instance.gave_up.borrow().clone().unwrap_or_default();
            let hint = failure_hint(instance.gave_up_failure.borrow().as_ref(), hints);
            let _ = shutdown(supervisor, signals, notifier).await;
            return Err(anyhow::anyhow!("{reason}{hint}"))
                .context("gatewarden gave up on the gateway (--exit-on-failure)");
        }
    }
    Ok(shutdown(supervisor, signals, notifier).await)
}

/// Stop the gateway; a second signal forces the quit.
async fn shutdown(
    supervisor: &Addr<Supervisor>,
    signals: &mut Signals,
    notifier: Option<&Notifier>,
) -> ExitCode {
    if let Some(notifier) = notifier {
        notifier.send("STOPPING=1");
    }
    let stop = supervisor.send(Stop);
    tokio::pin!(stop);
    tokio::select! {
        outcome = &mut stop => {
            match outcome {
                Ok(CommandOutcome::Failed { failure }) => tracing::warn!("stop: {failure}"),
                Ok(_) => tracing::debug!("stop finished"),
                Err(_) => tracing::warn!("the supervisor went away while stopping"),
            }
            ExitCode::SUCCESS
        }
        name = signals.next() => {
            tracing::warn!("{name} again: terminating the gateway now");
            let _ = tokio::time::timeout(FORCE_TIMEOUT, supervisor.send(ForceTerminateForQuit)).await;
            ExitCode::from(130)
        }
    }
}

/// SIGINT and SIGTERM, as one stream.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    /// The next quit signal's name.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}

/// The "what next" line for a person at a terminal: the client commands that exist, each with
/// the flags that find this instance (the ones given to `run`), so they work as written.
/// `None` when stderr is not a terminal (a service, a pipe, a test) or the log lines are JSON.
fn next_hint(stderr_is_terminal: bool, format: LogFormat, target: &TargetArgs) -> Option<String> {
    if !stderr_is_terminal || format != LogFormat::Text {
        return None;
    }
    let mut flags = String::new();
    let mut add = |flag: &str, value: String| {
        flags.push_str(&format!(" {flag} {}", shell_quote(&value)));
    };
    if let Some(path) = &target.config {
        add("--config", path.display().to_string());
    }
    if let Some(port) = target.port {
        add("--port", port.to_string());
    }
    if let Some(path) = &target.state_dir {
        add("--state-dir", path.display().to_string());
    }
    if let Some(path) = &target.control {
        add("--control", path.display().to_string());
    }
    Some(format!(
        "next, in another terminal: gatewarden status{flags} · gatewarden events{flags} · \
         gatewarden rpc echo '{{}}'{flags} · gatewarden stop{flags} (Ctrl-C here also stops)"
    ))
}

/// `text` as one shell word: as is when it is plainly safe, else in single quotes.
fn shell_quote(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-:~+=,@".contains(c));
    if plain {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

fn describe_token(origin: &TokenOrigin) -> String {
    match origin {
        TokenOrigin::File(path) => format!("from {}", path.display()),
        TokenOrigin::Environment(name) => format!("from ${name}"),
        TokenOrigin::Generated => "generated for this run".into(),
        TokenOrigin::None => "none".into(),
    }
}

/// The gateway config file of the profile (where `gateway.auth.token` would be pinned).
fn profile_config_path(settings: &config::Settings) -> PathBuf {
    LaunchProfile::gateway_state_dir(&settings.state_dir()).join("openclaw.json")
}

/// What the failure hints need: where the gateway's own config is, where our token came from.
#[derive(Debug, Clone)]
struct HintContext {
    /// The gateway's own config file (for the `gateway.auth.token` hint).
    gateway_config: PathBuf,
    /// Where the token came from, in words (never the token).
    token: String,
}

/// What a person can do about a start failure the library reported, chosen by its variant
/// (never by its text). A rejected token says where ours came from, and names
/// `gateway.auth.token` when the gateway's own config pins one (it wins over the environment).
fn failure_hint(failure: Option<&CommandFailure>, hints: &HintContext) -> String {
    let Some(failure) = failure.and_then(CommandFailure::start_failure) else {
        return String::new();
    };
    if failure.is_auth_rejection() {
        let pinned = std::fs::read_to_string(&hints.gateway_config)
            .map(|text| gatewarden_core::reload_policy::config_pins_token(&text))
            .unwrap_or(false);
        if pinned {
            return format!(
                "\nThe gateway rejected our token ({}). Its own config {} pins gateway.auth.token, \
                 which wins over $OPENCLAW_GATEWAY_TOKEN and --token-file: remove that key or put \
                 the same token in --token-file FILE (gatewarden does not retry a rejected token).",
                hints.token,
                hints.gateway_config.display()
            );
        }
        return format!(
            "\nThe gateway rejected our token ({}): pass the gateway's token with --token-file \
             FILE or $OPENCLAW_GATEWAY_TOKEN (gatewarden does not retry a rejected token).",
            hints.token
        );
    }
    static_hint(failure).to_string()
}

fn static_hint(failure: &StartFailure) -> &'static str {
    match failure {
        StartFailure::RuntimeIncompatible { .. } => {
            "\nInstall a supported Node.js (scripts/install-openclaw.sh does) and pass it with --node."
        }
        StartFailure::LockHeld { .. } => {
            "\nAnother gateway uses the same state directory: stop it, or give this one its own \
             --state-dir."
        }
        StartFailure::ConfigStillInvalid { .. } => {
            "\nFix the gateway config by hand (`doctor --fix` already ran on this content), then \
             `gatewarden start`."
        }
        StartFailure::PortHeldByOther { .. } | StartFailure::ForeignGateway { .. } => {
            "\nAnother program holds the port; gatewarden never signals it. Stop it, or pick another --port."
        }
        StartFailure::SpawnFailed { .. } => {
            "\nCheck the gateway command (--openclaw/--node, or the command after --)."
        }
        _ => "",
    }
}

fn area_header(plan: &Plan) -> String {
    let mut header = format!(
        "{} · port {} · control {}",
        plan.profile_kind.as_str(),
        plan.core.port,
        plan.control_path.display()
    );
    if let Some(address) = plan.http {
        header.push_str(&format!(" · http {address}"));
    }
    header
}

/// Redraw the status area on every status event and once a second.
async fn refresh_area(instance: Rc<Instance>, refresh: Rc<Notify>, header: String) {
    loop {
        if let Ok(snapshot) = instance.snapshot().await {
            console::show(console::render(
                &snapshot,
                &header,
                instance.machine_now_ms(),
            ));
        }
        tokio::select! {
            () = refresh.notified() => {}
            () = tokio::time::sleep(AREA_REFRESH) => {}
        }
    }
}

/// `WATCHDOG=1` while the supervisor actor answers: a wedged supervisor stops the pings and
/// systemd restarts the service.
async fn watchdog(instance: Rc<Instance>, notifier: Rc<Notifier>, interval: Duration) {
    loop {
        if instance.status().await.is_ok() {
            notifier.send("WATCHDOG=1");
        }
        tokio::time::sleep(interval).await;
    }
}

/// Hears the supervisor's events: logs lifecycle changes, tells systemd, wakes the status area.
struct EventWatcher {
    instance: Rc<Instance>,
    refresh: Rc<Notify>,
    notifier: Option<Rc<Notifier>>,
    last: Option<(LifecycleState, Option<u32>, Option<String>)>,
    hints: HintContext,
    /// Until the first start has succeeded, a failure's reason is left to `run`'s final error
    /// message (printed once, with what to do), so the watcher does not repeat it.
    first_start_done: Rc<Cell<bool>>,
}

impl Actor for EventWatcher {
    type Context = Context<Self>;
}

impl Handler<GatewayEvent> for EventWatcher {
    type Result = ();

    fn handle(&mut self, event: GatewayEvent, _ctx: &mut Self::Context) {
        match event {
            GatewayEvent::Status(status) => {
                self.status_changed(&status);
                self.instance.remember(status);
            }
            GatewayEvent::ProcessExit { pid, code } => {
                let code = code
                    .map(|code| code.to_string())
                    .unwrap_or_else(|| "none".into());
                tracing::info!(pid, "gateway process exited (code {code})");
            }
            GatewayEvent::Error { message, .. } if self.first_start_done.get() => {
                tracing::warn!("gateway: {message}")
            }
            GatewayEvent::Error { message, .. } => tracing::debug!("gateway: {message}"),
            GatewayEvent::GatewayReady => tracing::info!("gateway ready"),
            GatewayEvent::Liveness { liveness, phase } => {
                tracing::info!(?liveness, ?phase, "gateway liveness")
            }
            GatewayEvent::ExternalUnavailable => {
                tracing::warn!("external gateway unavailable; reconnecting to it only")
            }
            GatewayEvent::GaveUp { reason, failure } => {
                // F8: tell the supervisors that look: the log, systemd, /healthz, the run loop.
                // A failed first start is reported once, by `run`'s final error message.
                if self.first_start_done.get() {
                    tracing::error!("gatewarden gave up: {reason}");
                }
                if let Some(notifier) = &self.notifier {
                    notifier.status(&format!("gave up: {reason}"));
                }
                *self.instance.gave_up.borrow_mut() = Some(reason);
                *self.instance.gave_up_failure.borrow_mut() = failure;
                self.instance.gave_up_notice.notify_one();
            }
            GatewayEvent::Notification { method, .. } => {
                tracing::debug!(method, "gateway notification")
            }
            GatewayEvent::RawMessage(_)
            | GatewayEvent::ChannelStatus(_)
            | GatewayEvent::ChatMessage(_)
            | GatewayEvent::StartupMetric { .. }
            | GatewayEvent::ReconnectMetric { .. } => {}
        }
        self.refresh.notify_one();
    }
}

impl EventWatcher {
    fn status_changed(&mut self, status: &Status) {
        let key = (status.state, status.pid, status.error.clone());
        if matches!(
            status.state,
            LifecycleState::Starting | LifecycleState::Running | LifecycleState::Stopped
        ) {
            // A new start (or a stop) ends the give-up.
            self.instance.gave_up.borrow_mut().take();
            self.instance.gave_up_failure.borrow_mut().take();
        }
        if self.last.as_ref() == Some(&key) {
            return;
        }
        self.last = Some(key);
        let pid = status
            .pid
            .map(|pid| pid.to_string())
            .unwrap_or_else(|| "-".into());
        match (&status.state, &status.error) {
            (LifecycleState::Error, Some(error)) if self.first_start_done.get() => {
                let hint =
                    failure_hint(self.instance.gave_up_failure.borrow().as_ref(), &self.hints);
                tracing::error!(pid, "gateway error: {error}{hint}");
            }
            (state, _) => tracing::info!(
                pid,
                version = status.version.as_deref().unwrap_or("-"),
                protocol = status.protocol.unwrap_or(0),
                reconnect_attempts = status.reconnect_attempts,
                "gateway {}",
                state.as_str()
            ),
        }
        if let Some(notifier) = &self.notifier {
            if self.instance.gave_up.borrow().is_some() {
                // F8: keep systemd's STATUS on the give-up until something new starts.
                return;
            }
            let mut text = format!("gateway {}", status.state.as_str());
            if let Some(pid) = status.pid {
                text.push_str(&format!(", pid {pid}"));
            }
            if let Some(version) = &status.version {
                text.push_str(&format!(", version {version}"));
            }
            if let Some(error) = &status.error {
                text.push_str(&format!(": {error}"));
            }
            notifier.status(&text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_hint_lists_the_client_commands_on_a_terminal_only() {
        let target = TargetArgs::default();
        let hint = next_hint(true, LogFormat::Text, &target).expect("a terminal gets the hint");
        for command in [
            "gatewarden status",
            "gatewarden events",
            "gatewarden rpc echo '{}'",
            "gatewarden stop",
        ] {
            assert!(hint.contains(command), "{hint}");
        }
        assert!(!hint.contains('\n'), "one line: {hint}");
        assert_eq!(next_hint(false, LogFormat::Text, &target), None);
        assert_eq!(next_hint(true, LogFormat::Json, &target), None);
    }

    #[test]
    fn the_next_hint_repeats_the_flags_that_find_this_instance() {
        let target = TargetArgs {
            config: None,
            port: Some(18800),
            state_dir: None,
            control: Some(PathBuf::from("/tmp/my dir/gw.sock")),
        };
        let hint = next_hint(true, LogFormat::Text, &target).expect("hint");
        assert!(
            hint.contains("gatewarden status --port 18800 --control '/tmp/my dir/gw.sock' ·"),
            "{hint}"
        );
        assert!(
            hint.contains("gatewarden stop --port 18800 --control '/tmp/my dir/gw.sock' "),
            "{hint}"
        );
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    fn start(failure: StartFailure) -> CommandFailure {
        CommandFailure::Start {
            failure,
            reason: None,
        }
    }

    fn token_mismatch() -> CommandFailure {
        start(StartFailure::HandshakeRejected {
            code: "INVALID_REQUEST".into(),
            details_code: Some("AUTH_TOKEN_MISMATCH".into()),
            message: "unauthorized".into(),
        })
    }

    fn hints(gateway_config: &std::path::Path) -> HintContext {
        HintContext {
            gateway_config: gateway_config.to_owned(),
            token: describe_token(&TokenOrigin::Environment("OPENCLAW_GATEWAY_TOKEN")),
        }
    }

    #[test]
    fn auth_rejections_get_a_token_hint_saying_where_ours_came_from() {
        let none = &hints(std::path::Path::new("/nonexistent/openclaw.json"));
        let hint = failure_hint(Some(&token_mismatch()), none);
        assert!(
            hint.contains("rejected our token (from $OPENCLAW_GATEWAY_TOKEN)"),
            "{hint}"
        );
        let held = start(StartFailure::PortHeldByOther {
            port: 5,
            pid: Some(7),
            program: Some("python3".into()),
        });
        assert!(failure_hint(Some(&held), none).contains("another --port"));
        assert_eq!(
            failure_hint(Some(&start(StartFailure::HandshakeTimeout)), none),
            ""
        );
        assert_eq!(failure_hint(None, none), "");
    }

    #[test]
    fn a3_token_hint_names_gateway_auth_token_when_the_gateway_config_pins_one() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("openclaw.json");
        std::fs::write(&config, r#"{gateway: {auth: {token: "pinned-value"}}}"#).unwrap();
        let hint = failure_hint(Some(&token_mismatch()), &hints(&config));
        assert!(hint.contains("gateway.auth.token"), "{hint}");
        assert!(hint.contains(&config.display().to_string()), "{hint}");
        assert!(!hint.contains("pinned-value"), "never the secret: {hint}");
    }

    #[test]
    fn f8_fatal_failures_get_their_hints() {
        let none = &hints(std::path::Path::new("/nonexistent/openclaw.json"));
        let old_node = start(StartFailure::RuntimeIncompatible {
            message: "Node 20.20.2 does not satisfy openclaw's engines.node".into(),
        });
        assert!(failure_hint(Some(&old_node), none).contains("--node"));
        let invalid = start(StartFailure::ConfigStillInvalid { line: None });
        assert!(failure_hint(Some(&invalid), none).contains("by hand"));
    }
}
