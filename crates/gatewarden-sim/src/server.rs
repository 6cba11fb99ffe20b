//! The lifecycle controller (boot, drain, in-process restart, stop), the accept loop, HTTP routing and signals.
//!
//! # Boot cycle
//!
//! `run_boots` loops over boots: apply start-up faults, validate the config, bind 127.0.0.1, print
//! the listening line, then wait for a [`Command`]. A stop drains and exits 0. A restart drains and
//! either exits 0 (external supervisor) or drops the listener for `--restart-down-ms` and boots again
//! in the same process with a new `bootId`. Connections learn about drains through the watch-channel
//! [`Notice`] and close themselves with 1012 after a `shutdown` event.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::time::sleep;

use crate::cli::Settings;
use crate::config;
use crate::connection;
use crate::faults::{self, BlockKind, BootFaults};
use crate::probes::{self, ProbeView};
use crate::state::{unix_ms, BootState, Command, Notice, Shared};

/// Default port: deliberately not the real gateway's 18789, so trying gatewarden never touches a real gateway.
pub const DEFAULT_PORT: u16 = 18791;
/// Largest HTTP request head accepted (probes and upgrades are tiny).
const MAX_REQUEST_HEAD_BYTES: usize = 16 * 1024;
/// A client that sends no complete request head within this time is dropped.
const REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// GUID of RFC 6455 for `Sec-WebSocket-Accept`.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Runs the gateway until it stops; returns the process exit code.
pub fn run(settings: Settings) -> i32 {
    // Node kills itself on SIGHUP (default disposition, exit status "killed by signal 1", 129 in a shell);
    // reset it in case our parent ignored it, so the simulator dies the same way.
    // SAFETY: setting a signal disposition to SIG_DFL has no memory-safety preconditions.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_DFL);
    }
    // The real launcher checks its runtime before anything else; a pretended old Node fails here.
    if let Some(version) = settings.fake_node_version.as_deref() {
        match crate::node_version::admission(version) {
            crate::node_version::Admission::Supported => {}
            crate::node_version::Admission::Note(note) => eprintln!("{note}"),
            crate::node_version::Admission::Refused(lines) => {
                eprint!(
                    "{}",
                    lines
                        .iter()
                        .map(|line| format!("{line}\n"))
                        .collect::<String>()
                );
                return 1;
            }
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            crate::log!("cannot start runtime: {error}");
            return 1;
        }
    };
    runtime.block_on(async_main(settings))
}

async fn async_main(settings: Settings) -> i32 {
    let env = |name: &str| std::env::var(name).ok();
    // One gateway per state directory, as the real one: a second exits 78 with its lines. Only an
    // explicit OPENCLAW_STATE_DIR is locked; the `$HOME/.openclaw` default would make unrelated
    // simulators of a test run exclude each other.
    let _state_lock = match env("OPENCLAW_STATE_DIR").filter(|dir| !dir.is_empty()) {
        Some(dir) => match config::lock_state_dir(Path::new(&dir)) {
            Ok(lock) => Some(lock),
            Err(config::StateLockError::Held) => {
                for line in config::STATE_LOCK_CONFLICT_LINES {
                    eprintln!("{line}");
                }
                return config::EXIT_INVALID_CONFIG;
            }
            Err(config::StateLockError::Io(error)) => {
                crate::log!("cannot lock the state dir {dir}: {error}; running without the lock");
                None
            }
        },
        None => None,
    };
    for _ in 0..settings.stderr_repeat {
        for line in &settings.stderr_lines {
            eprintln!("{line}");
        }
    }
    let (command_tx, command_rx) = mpsc::unbounded_channel();
    let (notice_tx, _) = tokio::sync::watch::channel(Notice::Serving);
    let (tick_tx, _) = tokio::sync::broadcast::channel(16);
    let config_path = config::resolve_path(settings.config_path.as_deref(), &env);
    let first_boot = BootFaults {
        slow_start_ms: settings.slow_start_ms,
        exit_before_ready: settings.exit_before_ready,
        invalid_config: settings.fault_invalid_config,
        startup_window_ms: settings.startup_window_ms,
    };
    let shared = Arc::new(Shared {
        token: std::sync::Mutex::new(settings.token.clone()),
        process_started: Instant::now(),
        pid: std::process::id(),
        build_id: format!("sim-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        instance_id: uuid::Uuid::new_v4().to_string(),
        port: Default::default(),
        boot: std::sync::Mutex::new(BootState {
            boot_id: String::new(),
            started: Instant::now(),
            startup_until: None,
            draining: false,
            restarting: false,
        }),
        flags: Default::default(),
        next_boot: std::sync::Mutex::new(first_boot),
        stats: Default::default(),
        device_tokens: Default::default(),
        notice: notice_tx,
        ticks: tick_tx,
        commands: command_tx,
        next_connection: Default::default(),
        external_supervisor: crate::state::external_supervisor_from_env(&env),
        config_path,
        settings,
    });
    shared
        .flags
        .reject_token
        .store(shared.settings.reject_token, Ordering::Relaxed);
    shared
        .flags
        .no_challenge
        .store(shared.settings.no_challenge, Ordering::Relaxed);
    shared
        .flags
        .ignore_sigterm
        .store(shared.settings.ignore_sigterm, Ordering::Relaxed);

    if let Err(error) = spawn_signal_handlers(&shared) {
        crate::log!("cannot install signal handlers: {error}");
        return 1;
    }
    run_boots(shared, command_rx).await
}

/// What ended a wait inside the controller.
enum Interrupt {
    /// A stop arrived: exit 0 without further ado.
    Stop,
    /// The wait ran to completion (restarts are ignored while waiting).
    Elapsed,
}

/// Sleeps `duration` but lets a stop cut it short; restarts during the wait are dropped,
/// like the real gateway ignores a second restart request while one is in flight.
async fn wait_unless_stopped(
    duration: Duration,
    commands: &mut mpsc::UnboundedReceiver<Command>,
) -> Interrupt {
    let deadline = tokio::time::Instant::now() + duration;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return Interrupt::Elapsed,
            command = commands.recv() => match command {
                Some(Command::Stop { .. }) => return Interrupt::Stop,
                Some(Command::Restart) => crate::log!("restart ignored: a lifecycle transition is already in progress"),
                None => return Interrupt::Elapsed,
            },
        }
    }
}

async fn run_boots(shared: Arc<Shared>, mut commands: mpsc::UnboundedReceiver<Command>) -> i32 {
    let mut first = true;
    loop {
        let boot_faults = std::mem::take(&mut *shared.next_boot.lock().expect("next boot lock"));
        if boot_faults.slow_start_ms > 0 {
            crate::log!("slow start: listening in {} ms", boot_faults.slow_start_ms);
            if let Interrupt::Stop = wait_unless_stopped(
                Duration::from_millis(boot_faults.slow_start_ms),
                &mut commands,
            )
            .await
            {
                return 0;
            }
        }
        if let Some(code) = boot_faults.exit_before_ready {
            crate::log!("fault: exiting with code {code} before listening");
            return code;
        }

        let loaded = if boot_faults.invalid_config {
            Err(config::ConfigProblem::UnrecognizedKeys(vec![
                "simulatedInvalidKey".to_string(),
            ]))
        } else {
            config::load(&shared.config_path)
        };
        let loaded = match loaded {
            Ok(loaded) => loaded,
            Err(problem) if first => {
                for line in problem.stderr_lines(&shared.config_path) {
                    eprintln!("{line}");
                }
                return config::EXIT_INVALID_CONFIG;
            }
            Err(problem) => {
                // The real gateway stays alive without a listener when a restart hits a bad config;
                // only another restart (which loads the config again) or a stop gets it out of there.
                // One write, so the lines are never interleaved with another log line.
                eprint!("{}", problem.restart_failure_text(&shared.config_path));
                match commands.recv().await {
                    Some(Command::Restart) => continue,
                    Some(Command::Stop { .. }) | None => return 0,
                }
            }
        };

        if first {
            // Precedence as observed on the real gateway: `--token`, then the config's
            // `gateway.auth.token`, then OPENCLAW_GATEWAY_TOKEN.
            let mut token = shared.token.lock().expect("token lock");
            if token.is_none() {
                *token = loaded
                    .gateway_token()
                    .or_else(|| shared.settings.env_token.clone());
            }
        }
        let port = if first {
            let env_port = std::env::var("OPENCLAW_GATEWAY_PORT")
                .ok()
                .and_then(|text| text.parse().ok());
            shared
                .settings
                .port
                .or(env_port)
                .or(loaded.gateway_port())
                .unwrap_or(DEFAULT_PORT)
        } else {
            shared.port.load(Ordering::Relaxed)
        };
        let listener =
            match bind_with_retry(port, shared.settings.bind_retry_ms, &mut commands).await {
                Ok(Some(listener)) => listener,
                Ok(None) => return 0,
                Err(error) => {
                    crate::log!("failed to bind 127.0.0.1:{port}: {error}");
                    return 1;
                }
            };
        let bound_port = listener
            .local_addr()
            .map(|address| address.port())
            .unwrap_or(port);
        shared.port.store(bound_port, Ordering::Relaxed);

        let boot_id = uuid::Uuid::new_v4().to_string();
        {
            let mut boot = shared.boot.lock().expect("boot lock");
            let now = Instant::now();
            *boot = BootState {
                boot_id: boot_id.clone(),
                started: now,
                startup_until: (boot_faults.startup_window_ms > 0)
                    .then(|| now + Duration::from_millis(boot_faults.startup_window_ms)),
                draining: false,
                restarting: false,
            };
        }
        shared.notice.send_replace(Notice::Serving);
        let accept_task = tokio::spawn(accept_loop(shared.clone(), listener));
        print_listening_line(bound_port, shared.pid, &boot_id);
        crate::log!(
            "listening on ws://127.0.0.1:{bound_port} (PID {}, boot {boot_id})",
            shared.pid
        );

        if first {
            first = false;
            start_process_faults(&shared);
            tokio::spawn(tick_loop(shared.clone()));
        } else {
            shared.stats.lock().expect("stats lock").restarts += 1;
        }

        let command = commands.recv().await.unwrap_or(Command::Stop {
            signal: "channel closed",
        });
        match command {
            Command::Stop { signal } => {
                crate::log!("{signal}: gateway stopping");
                drain(&shared, None, &mut commands).await;
                return 0;
            }
            Command::Restart if shared.external_supervisor => {
                crate::log!(
                    "restart requested: supervised mode, exiting for the supervisor to respawn"
                );
                drain(&shared, Some(shared.restart_expected_ms()), &mut commands).await;
                return 0;
            }
            Command::Restart => {
                crate::log!("restart requested: in-process restart");
                let stop_requested =
                    drain(&shared, Some(shared.restart_expected_ms()), &mut commands).await;
                // Sockets admitted during the drain go with the listener.
                shared.notice.send_replace(Notice::ListenerClosed);
                accept_task.abort();
                // Aborting drops the listener only once the task is polled again; wait for that so
                // the port is really closed during the down time.
                let _ = accept_task.await;
                if stop_requested {
                    return 0;
                }
                let down = Duration::from_millis(shared.settings.restart_down_ms);
                if let Interrupt::Stop = wait_unless_stopped(down, &mut commands).await {
                    return 0;
                }
            }
        }
    }
}

/// Marks the boot draining, tells connections to send `shutdown` and close 1012, and waits the drain time.
/// Returns whether a stop arrived meanwhile (repeated stops are otherwise ignored, as the real gateway does).
async fn drain(
    shared: &Shared,
    restart_expected_ms: Option<u64>,
    commands: &mut mpsc::UnboundedReceiver<Command>,
) -> bool {
    {
        let mut boot = shared.boot.lock().expect("boot lock");
        boot.draining = true;
        boot.restarting = restart_expected_ms.is_some();
    }
    shared.notice.send_replace(Notice::ShuttingDown {
        restart_expected_ms,
    });
    // The shutdown event goes out 10 ms before the close, so never drain for less than a few times that.
    let drain = Duration::from_millis(shared.settings.drain_ms.max(40));
    let deadline = tokio::time::Instant::now() + drain;
    let mut stop_requested = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return stop_requested,
            command = commands.recv() => match command {
                Some(Command::Stop { signal }) => {
                    crate::log!("{signal} ignored: shutdown already in progress");
                    stop_requested = true;
                }
                Some(Command::Restart) => crate::log!("restart ignored: shutdown already in progress"),
                None => return stop_requested,
            },
        }
    }
}

/// Binds 127.0.0.1:`port`, retrying EADDRINUSE like the real gateway; `Ok(None)` means a stop arrived.
async fn bind_with_retry(
    port: u16,
    retry_ms: u64,
    commands: &mut mpsc::UnboundedReceiver<Command>,
) -> std::io::Result<Option<TcpListener>> {
    let deadline = Instant::now() + Duration::from_millis(retry_ms);
    loop {
        match TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await {
            Ok(listener) => return Ok(Some(listener)),
            Err(error)
                if error.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline =>
            {
                crate::log!("port {port} in use; retrying");
                if let Interrupt::Stop =
                    wait_unless_stopped(Duration::from_millis(500), commands).await
                {
                    return Ok(None);
                }
            }
            Err(error) => return Err(error),
        }
    }
}

fn print_listening_line(port: u16, pid: u32, boot_id: &str) {
    // Written by hand to keep `event` first, so even a prefix match on `{"event":"listening"` works.
    let line = format!(
        r#"{{"event":"listening","port":{port},"pid":{pid},"unix_ms":{},"bootId":"{boot_id}"}}"#,
        unix_ms()
    );
    let mut stdout = std::io::stdout().lock();
    // A supervisor that closed our stdout must not kill the gateway: ignore write errors.
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

/// Start-up faults that act on the whole process after the first listen.
fn start_process_faults(shared: &Arc<Shared>) {
    let settings = &shared.settings;
    if settings.spawn_grandchild {
        match spawn_grandchild(shared, &["sleep".to_string(), "3600".to_string()]) {
            Ok(pid) => crate::log!("spawned grandchild pid {pid} in our process group"),
            Err(error) => crate::log!("cannot spawn grandchild: {error}"),
        }
    }
    if let Some(after_ms) = settings.crash_after_ms {
        let code = settings.crash_code;
        tokio::spawn(async move {
            sleep(Duration::from_millis(after_ms)).await;
            faults::exit_now(code);
        });
    }
    for (kind, ms, after_ms) in [
        (BlockKind::Busy, settings.busy_ms, settings.busy_after_ms),
        (
            BlockKind::FrozenSoft,
            settings.frozen_soft_ms,
            settings.frozen_soft_after_ms,
        ),
    ] {
        if let Some(ms) = ms {
            tokio::spawn(async move {
                sleep(Duration::from_millis(after_ms)).await;
                faults::block_now(kind, ms);
            });
        }
    }
    if let Some(after_ms) = settings.hang_after_ms {
        let mode = settings.hang_mode;
        tokio::spawn(async move {
            sleep(Duration::from_millis(after_ms)).await;
            faults::hang_now(mode);
        });
    }
}

/// Spawns `command` in our own process group (no setsid) and reaps it in the background.
pub fn spawn_grandchild(shared: &Shared, command: &[String]) -> std::io::Result<u32> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| std::io::Error::other("empty command"))?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let pid = child.id().unwrap_or_default();
    shared
        .stats
        .lock()
        .expect("stats lock")
        .grandchild_pids
        .push(pid);
    // Reaping avoids a zombie if the grandchild exits while we live; it is not killed with us on purpose.
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    Ok(pid)
}

/// The global tick schedule: not aligned to any connection, like the real gateway's.
async fn tick_loop(shared: Arc<Shared>) {
    let period = Duration::from_millis(shared.settings.tick_interval_ms);
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        // No receivers is normal (no authenticated client); ignore the error.
        let _ = shared.ticks.send(unix_ms());
    }
}

fn spawn_signal_handlers(shared: &Arc<Shared>) -> std::io::Result<()> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut user1 = signal(SignalKind::user_defined1())?;
    let mut user2 = signal(SignalKind::user_defined2())?;
    let shared = shared.clone();
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = interrupt.recv() => "SIGINT",
                _ = user1.recv() => "SIGUSR1",
                _ = user2.recv() => "SIGUSR2",
            };
            shared.record_signal(name);
            match name {
                "SIGTERM" if shared.flags.ignore_sigterm.load(Ordering::Relaxed) => {
                    crate::log!("SIGTERM ignored (fault ignore-sigterm)");
                }
                "SIGTERM" | "SIGINT" => {
                    let _ = shared.commands.send(Command::Stop { signal: name });
                }
                "SIGUSR1" => {
                    // What Node prints when SIGUSR1 opens the inspector; a supervisor must never send it.
                    eprintln!(
                        "Debugger listening on ws://127.0.0.1:9229/{}\nFor help, see: https://nodejs.org/en/docs/inspector",
                        uuid::Uuid::new_v4()
                    );
                }
                _ => {
                    let _ = shared.commands.send(Command::Restart);
                }
            }
        }
    });
    Ok(())
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                shared.stats.lock().expect("stats lock").connections_total += 1;
                tokio::spawn(serve_http(shared.clone(), stream));
            }
            Err(error) => {
                // EMFILE and friends: back off instead of spinning.
                crate::log!("accept failed: {error}");
                sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Reads one request head and either answers a probe or upgrades to the control WebSocket.
async fn serve_http(shared: Arc<Shared>, mut stream: TcpStream) {
    let Ok(Some((head, leftover))) =
        tokio::time::timeout(REQUEST_HEAD_TIMEOUT, read_request_head(&mut stream))
            .await
            .unwrap_or(Ok(None))
    else {
        return;
    };
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    if !matches!(request.parse(&head), Ok(httparse::Status::Complete(_))) {
        let _ = stream
            .write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .await;
        return;
    }
    let method = request.method.unwrap_or("GET").to_string();
    let target = request.path.unwrap_or("/").to_string();
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|header| header.name.eq_ignore_ascii_case(name))
            .and_then(|header| std::str::from_utf8(header.value).ok())
            .map(str::to_string)
    };
    let wants_websocket =
        header("upgrade").is_some_and(|value| value.to_ascii_lowercase().contains("websocket"));
    if let (true, Some(key)) = (wants_websocket, header("sec-websocket-key")) {
        let accept = base64::engine::general_purpose::STANDARD.encode(
            Sha1::new()
                .chain_update(key.trim().as_bytes())
                .chain_update(WEBSOCKET_GUID)
                .finalize(),
        );
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
        connection::serve(shared, stream, leftover).await;
        return;
    }
    let boot = shared.boot();
    let view = ProbeView {
        phase: boot.phase(Instant::now()),
        version: &shared.settings.version_string,
        boot_uptime_ms: boot.started.elapsed().as_millis() as u64,
    };
    let response = probes::respond(&method, &target, &view);
    let _ = stream.write_all(&probes::render(&method, &response)).await;
    let _ = stream.shutdown().await;
}

/// Reads until the end of the request head; returns the head and any bytes read past it.
async fn read_request_head(stream: &mut TcpStream) -> std::io::Result<Option<(Vec<u8>, Vec<u8>)>> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(None);
        }
        let searched_from = buffer.len().saturating_sub(3);
        buffer.extend_from_slice(&chunk[..read]);
        if let Some(end) = buffer[searched_from..]
            .windows(4)
            .position(|window| window == b"\r\n\r\n")
        {
            let head_len = searched_from + end + 4;
            let leftover = buffer.split_off(head_len);
            return Ok(Some((buffer, leftover)));
        }
        if buffer.len() > MAX_REQUEST_HEAD_BYTES {
            return Ok(None);
        }
    }
}

/// Used by `doctor` and tests: the config path this process would read.
pub fn config_path_for(settings_path: Option<&Path>) -> std::path::PathBuf {
    config::resolve_path(settings_path, &|name| std::env::var(name).ok())
}
