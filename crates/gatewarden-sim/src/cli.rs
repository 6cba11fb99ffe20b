//! Command-line parsing for `gatewarden-sim`: the real gateway's argv shape plus the simulator's fault flags.
//!
//! Parsing is hand-rolled rather than done with clap because the simulator must start in a few
//! milliseconds and stay at a few MiB; the flag table below doubles as the `--help` text.

use std::path::PathBuf;

/// What the process was asked to do.
#[derive(Debug)]
pub enum Invocation {
    /// Serve the gateway (the default, also `gateway run`).
    Run(Box<Settings>),
    /// `doctor [--fix] [--yes] [--non-interactive] [--config PATH]`: check or repair the config file.
    Doctor(DoctorArgs),
    /// `--help`: print the flag table.
    Help,
    /// `--version`: print the version string.
    Version,
}

/// Arguments of the `doctor` subcommand.
#[derive(Debug, Default)]
pub struct DoctorArgs {
    /// Rewrite the config file without the offending keys (otherwise only report them).
    pub fix: bool,
    /// Explicit config path; otherwise the same resolution as `run`.
    pub config_path: Option<PathBuf>,
}

/// How a `hang` fault stops answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HangMode {
    /// Block the only runtime thread: nothing is answered, signal handlers never run (like a busy Node event loop).
    Silent,
    /// `raise(SIGSTOP)`: the kernel stops the process until SIGCONT.
    SigStop,
}

impl HangMode {
    /// Parses the wire/flag spelling (`silent`, `sigstop`).
    pub fn parse(text: &str) -> Option<HangMode> {
        match text {
            "silent" => Some(HangMode::Silent),
            "sigstop" | "stop" => Some(HangMode::SigStop),
            _ => None,
        }
    }
}

/// Every knob of a `run`, after flags and environment are merged.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `--port`; `None` means "use OPENCLAW_GATEWAY_PORT, then gateway.port, then 18791".
    pub port: Option<u16>,
    /// Shared token from `--token`, the highest-precedence source. Never printed.
    pub token: Option<String>,
    /// `OPENCLAW_GATEWAY_TOKEN`: the *lowest*-precedence source, below the config's
    /// `gateway.auth.token` (the real 2026.9.6 gateway does so, although its `--help` calls the
    /// variable `--token`'s default). Never printed.
    pub env_token: Option<String>,
    /// Shared password (`--password`, else `OPENCLAW_GATEWAY_PASSWORD`). Never printed.
    pub password: Option<String>,
    /// `--config PATH`; otherwise resolved from the environment.
    pub config_path: Option<PathBuf>,
    /// Reported as `server.version`, in `/startupz` and in `status`.
    pub version_string: String,
    /// The protocol this gateway speaks (4 = current, 3 = emulate an older gateway).
    pub protocol: u32,
    /// Interval of the global `tick` event, advertised as `policy.tickIntervalMs`.
    pub tick_interval_ms: u64,
    /// Server WebSocket ping interval after auth; a pong must arrive within one interval.
    pub ping_interval_ms: u64,
    /// Pre-auth budget: a socket that has not completed `connect` by then is closed.
    pub handshake_timeout_ms: u64,
    /// How long probes report `draining` before a stop exits or a restart drops the listener.
    pub drain_ms: u64,
    /// How long the listener stays down during an in-process restart.
    pub restart_down_ms: u64,
    /// Send a `gateway.ready` event after `hello-ok` (emulates an older gateway).
    pub ready_event: bool,
    /// Delay before binding the listener.
    pub slow_start_ms: u64,
    /// After listening, `connect` answers UNAVAILABLE and `/startupz`, `/readyz` say starting for this long.
    pub startup_window_ms: u64,
    /// Exit with this code without ever listening.
    pub exit_before_ready: Option<i32>,
    /// Behave as if the config file had an unknown key.
    pub fault_invalid_config: bool,
    /// Lines written to stderr at start (stderr-noise fault).
    pub stderr_lines: Vec<String>,
    /// How many times the `--stderr-line` set is repeated.
    pub stderr_repeat: u32,
    /// Log and ignore SIGTERM (SIGINT still stops), so SIGKILL escalation can be tested.
    pub ignore_sigterm: bool,
    /// Spawn `sleep 3600` in our own process group at start.
    pub spawn_grandchild: bool,
    /// Accept WebSockets but never send `connect.challenge`.
    pub no_challenge: bool,
    /// Send the challenge but never answer `connect` (a gateway stuck mid-handshake).
    pub connect_no_reply: bool,
    /// Send the challenge, then drop the socket without a close code on `connect` (a gateway
    /// that fails mid-handshake).
    pub connect_close: bool,
    /// Answer `connect` with a `hello-ok` that has no `protocol` (a broken or foreign server).
    pub connect_bad_hello: bool,
    /// Treat every presented token as a mismatch.
    pub reject_token: bool,
    /// Exit with `crash_code` this many ms after listening.
    pub crash_after_ms: Option<u64>,
    /// Exit code for `--crash-after-ms`.
    pub crash_code: i32,
    /// Hang this many ms after listening.
    pub hang_after_ms: Option<u64>,
    /// Mode for `--hang-after-ms`.
    pub hang_mode: HangMode,
    /// How long EADDRINUSE is retried before exiting 1 (the real gateway retries about 10 s).
    pub bind_retry_ms: u64,
    /// Block the event loop busily (spinning) for this many ms, once, `busy_after_ms` after the first listen.
    pub busy_ms: Option<u64>,
    /// Delay of `--busy-ms` after the first listen.
    pub busy_after_ms: u64,
    /// Block the event loop without CPU (sleeping) for this many ms, once, `frozen_soft_after_ms` after the first listen.
    pub frozen_soft_ms: Option<u64>,
    /// Delay of `--frozen-soft-ms` after the first listen.
    pub frozen_soft_after_ms: u64,
    /// Pretend to run on this Node version (`--fake-node-version`, else
    /// `GATEWARDEN_SIM_NODE_VERSION`): an unsupported one fails at start like the real launcher.
    pub fake_node_version: Option<String>,
    /// Send this many `sim.flood` events after every `hello-ok` (0: none).
    pub event_flood: u64,
    /// Padding bytes in each flood event's payload.
    pub event_flood_bytes: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            port: None,
            token: None,
            env_token: None,
            password: None,
            config_path: None,
            version_string: "2026.9.6-sim".to_string(),
            protocol: 4,
            tick_interval_ms: 30_000,
            ping_interval_ms: 25_000,
            handshake_timeout_ms: 15_000,
            drain_ms: 50,
            restart_down_ms: 300,
            ready_event: false,
            slow_start_ms: 0,
            startup_window_ms: 0,
            exit_before_ready: None,
            fault_invalid_config: false,
            stderr_lines: Vec::new(),
            stderr_repeat: 1,
            ignore_sigterm: false,
            spawn_grandchild: false,
            no_challenge: false,
            connect_no_reply: false,
            connect_close: false,
            connect_bad_hello: false,
            reject_token: false,
            crash_after_ms: None,
            crash_code: 1,
            event_flood: 0,
            event_flood_bytes: crate::faults::DEFAULT_FLOOD_PAD_BYTES,
            hang_after_ms: None,
            hang_mode: HangMode::Silent,
            busy_ms: None,
            busy_after_ms: 0,
            frozen_soft_ms: None,
            frozen_soft_after_ms: 0,
            fake_node_version: None,
            bind_retry_ms: 10_000,
        }
    }
}

/// The `--help` text; README.md documents the same flags in more detail.
pub const HELP: &str = "\
gatewarden-sim: reference OpenClaw gateway (protocol 4) with fault injection

USAGE:
  gatewarden-sim [gateway run] [FLAGS]
  gatewarden-sim doctor [--fix] [--yes] [--non-interactive] [--config PATH]

REAL-GATEWAY FLAGS:
  --port N                 listen port on 127.0.0.1 (0 = pick a free one; default 18791)
  --token T                shared token (default: $OPENCLAW_GATEWAY_TOKEN)
  --password P             shared password (default: $OPENCLAW_GATEWAY_PASSWORD)
  --config PATH            config file (default: $OPENCLAW_CONFIG_PATH, $OPENCLAW_STATE_DIR/openclaw.json, ~/.openclaw/openclaw.json)
  --bind loopback | --auth MODE | --allow-unconfigured | --force | --verbose   accepted and ignored

SIMULATOR FLAGS:
  --version-string S       server.version (default 2026.9.6-sim)
  --protocol 3|4           protocol spoken (default 4)
  --tick-interval-ms N     tick period (default 30000)
  --ping-interval-ms N     server ping period and pong deadline (default 25000)
  --handshake-timeout-ms N pre-auth budget (default 15000, $OPENCLAW_HANDSHAKE_TIMEOUT_MS can raise it)
  --drain-ms N             draining time before exit/restart (default 50)
  --restart-down-ms N      listener down time in an in-process restart (default 300)
  --bind-retry-ms N        EADDRINUSE retry budget before exit 1 (default 10000)
  --ready-event            send gateway.ready after hello-ok

FAULT FLAGS:
  --slow-start-ms N        listen only after N ms
  --startup-window-ms N    connect answers UNAVAILABLE/1013 and probes say starting for N ms
  --exit-before-ready CODE exit with CODE without listening
  --fault-invalid-config   behave as if the config had an unknown key (exit 78)
  --stderr-line LINE       print LINE to stderr at start (repeatable)
  --stderr-repeat N        repeat the --stderr-line set N times
  --ignore-sigterm         log and ignore SIGTERM
  --spawn-grandchild       spawn `sleep 3600` in our process group
  --no-challenge           never send connect.challenge
  --connect-no-reply       send the challenge, never answer connect
  --connect-close          send the challenge, close without a code on connect
  --connect-bad-hello      answer connect with a hello-ok that has no protocol
  --reject-token           every token is a mismatch
  --crash-after-ms N       exit with --crash-code (default 1) N ms after listening
  --crash-code N
  --hang-after-ms N        hang N ms after listening (--hang-mode silent|sigstop, default silent)
  --hang-mode MODE
  --busy-ms N              block the event loop spinning (CPU grows) for N ms, then serve what queued
  --busy-after-ms N        ... N ms after listening (default 0)
  --frozen-soft-ms N       block the event loop sleeping (no CPU, state S) for N ms, then serve what queued
  --frozen-soft-after-ms N ... N ms after listening (default 0)
  --fake-node-version V    pretend to run on Node V (also $GATEWARDEN_SIM_NODE_VERSION); an
                           unsupported one prints the real launcher's lines and exits 1
  --event-flood N          send N sim.flood events after every hello-ok
  --event-flood-bytes N    padding bytes per flood event (default 256)
";

/// Parses `args` (without argv[0]); `env` looks up environment variables so tests can inject them.
pub fn parse(args: &[String], env: &dyn Fn(&str) -> Option<String>) -> Result<Invocation, String> {
    let mut rest: &[String] = args;
    // The real CLI is `openclaw gateway run ...`; accept the same positional words.
    if rest.first().map(String::as_str) == Some("gateway") {
        rest = &rest[1..];
    }
    if rest.first().map(String::as_str) == Some("run") {
        rest = &rest[1..];
    }
    if rest.first().map(String::as_str) == Some("doctor") {
        return parse_doctor(&rest[1..]).map(Invocation::Doctor);
    }

    let mut settings = Settings::default();
    let mut flags = FlagReader::new(rest);
    while let Some(flag) = flags.next_flag()? {
        match flag.as_str() {
            "--help" | "-h" => return Ok(Invocation::Help),
            "--version" | "-V" => return Ok(Invocation::Version),
            "--port" => settings.port = Some(flags.number("--port")?),
            "--token" => settings.token = Some(flags.value("--token")?),
            "--password" => settings.password = Some(flags.value("--password")?),
            "--config" => settings.config_path = Some(PathBuf::from(flags.value("--config")?)),
            "--bind" => {
                let bind = flags.value("--bind")?;
                if bind != "loopback" {
                    crate::log!("--bind {bind} ignored: the simulator only ever binds 127.0.0.1");
                }
            }
            "--auth" => {
                flags.value("--auth")?;
            }
            "--allow-unconfigured" | "--force" | "--verbose" | "--dev" => {}
            "--version-string" => settings.version_string = flags.value("--version-string")?,
            "--protocol" => {
                let protocol: u32 = flags.number("--protocol")?;
                if protocol != 3 && protocol != 4 {
                    return Err(format!("--protocol must be 3 or 4, got {protocol}"));
                }
                settings.protocol = protocol;
            }
            "--tick-interval-ms" => {
                settings.tick_interval_ms = flags.positive("--tick-interval-ms")?
            }
            "--ping-interval-ms" => {
                settings.ping_interval_ms = flags.positive("--ping-interval-ms")?
            }
            "--handshake-timeout-ms" => {
                settings.handshake_timeout_ms = flags.positive("--handshake-timeout-ms")?
            }
            "--drain-ms" => settings.drain_ms = flags.number("--drain-ms")?,
            "--restart-down-ms" => settings.restart_down_ms = flags.number("--restart-down-ms")?,
            "--bind-retry-ms" => settings.bind_retry_ms = flags.number("--bind-retry-ms")?,
            "--ready-event" => settings.ready_event = true,
            "--slow-start-ms" => settings.slow_start_ms = flags.number("--slow-start-ms")?,
            "--startup-window-ms" => {
                settings.startup_window_ms = flags.number("--startup-window-ms")?
            }
            "--exit-before-ready" => {
                settings.exit_before_ready = Some(flags.number("--exit-before-ready")?)
            }
            "--fault-invalid-config" => settings.fault_invalid_config = true,
            "--stderr-line" => settings.stderr_lines.push(flags.value("--stderr-line")?),
            "--stderr-repeat" => settings.stderr_repeat = flags.number("--stderr-repeat")?,
            "--ignore-sigterm" => settings.ignore_sigterm = true,
            "--spawn-grandchild" => settings.spawn_grandchild = true,
            "--no-challenge" => settings.no_challenge = true,
            "--connect-no-reply" => settings.connect_no_reply = true,
            "--connect-close" => settings.connect_close = true,
            "--connect-bad-hello" => settings.connect_bad_hello = true,
            "--reject-token" => settings.reject_token = true,
            "--crash-after-ms" => settings.crash_after_ms = Some(flags.number("--crash-after-ms")?),
            "--crash-code" => settings.crash_code = flags.number("--crash-code")?,
            "--hang-after-ms" => settings.hang_after_ms = Some(flags.number("--hang-after-ms")?),
            "--hang-mode" => {
                let mode = flags.value("--hang-mode")?;
                settings.hang_mode = HangMode::parse(&mode)
                    .ok_or_else(|| format!("--hang-mode must be silent or sigstop, got {mode}"))?;
            }
            "--busy-ms" => settings.busy_ms = Some(block_ms(&mut flags, "--busy-ms")?),
            "--busy-after-ms" => settings.busy_after_ms = flags.number("--busy-after-ms")?,
            "--frozen-soft-ms" => {
                settings.frozen_soft_ms = Some(block_ms(&mut flags, "--frozen-soft-ms")?)
            }
            "--frozen-soft-after-ms" => {
                settings.frozen_soft_after_ms = flags.number("--frozen-soft-after-ms")?
            }
            "--fake-node-version" => {
                settings.fake_node_version = Some(flags.value("--fake-node-version")?)
            }
            "--event-flood" => {
                settings.event_flood = flags.number("--event-flood")?;
                if settings.event_flood > crate::faults::MAX_FLOOD_COUNT {
                    return Err(format!(
                        "--event-flood must be at most {}",
                        crate::faults::MAX_FLOOD_COUNT
                    ));
                }
            }
            "--event-flood-bytes" => {
                settings.event_flood_bytes = flags.number("--event-flood-bytes")?;
                if settings.event_flood_bytes > crate::protocol::MAX_PAYLOAD_BYTES {
                    return Err(format!(
                        "--event-flood-bytes must be at most {}",
                        crate::protocol::MAX_PAYLOAD_BYTES
                    ));
                }
            }
            other => return Err(format!("error: unknown option '{other}'")),
        }
    }

    if settings.fake_node_version.is_none() {
        settings.fake_node_version =
            env("GATEWARDEN_SIM_NODE_VERSION").filter(|version| !version.is_empty());
    }
    settings.env_token = env("OPENCLAW_GATEWAY_TOKEN").filter(|token| !token.is_empty());
    if settings.password.is_none() {
        settings.password =
            env("OPENCLAW_GATEWAY_PASSWORD").filter(|password| !password.is_empty());
    }
    // Like the real gateway, the environment can only widen the handshake budget.
    if let Some(from_env) =
        env("OPENCLAW_HANDSHAKE_TIMEOUT_MS").and_then(|text| text.parse::<u64>().ok())
    {
        settings.handshake_timeout_ms = settings.handshake_timeout_ms.max(from_env);
    }
    Ok(Invocation::Run(Box::new(settings)))
}

/// A `--busy-ms`/`--frozen-soft-ms` value: at most [`crate::faults::MAX_BLOCK_MS`].
fn block_ms(flags: &mut FlagReader<'_>, flag: &str) -> Result<u64, String> {
    let ms = flags.number(flag)?;
    if ms > crate::faults::MAX_BLOCK_MS {
        return Err(format!(
            "error: option '{flag}' must be at most {}",
            crate::faults::MAX_BLOCK_MS
        ));
    }
    Ok(ms)
}

fn parse_doctor(args: &[String]) -> Result<DoctorArgs, String> {
    let mut doctor = DoctorArgs::default();
    let mut flags = FlagReader::new(args);
    while let Some(flag) = flags.next_flag()? {
        match flag.as_str() {
            "--fix" | "--repair" => doctor.fix = true,
            "--yes" | "--non-interactive" | "--force" | "--deep" => {}
            "--config" => doctor.config_path = Some(PathBuf::from(flags.value("--config")?)),
            other => return Err(format!("error: unknown option '{other}'")),
        }
    }
    Ok(doctor)
}

/// Walks `--flag value` and `--flag=value` arguments.
struct FlagReader<'a> {
    args: &'a [String],
    index: usize,
    inline_value: Option<String>,
}

impl<'a> FlagReader<'a> {
    fn new(args: &'a [String]) -> Self {
        FlagReader {
            args,
            index: 0,
            inline_value: None,
        }
    }

    fn next_flag(&mut self) -> Result<Option<String>, String> {
        if let Some(value) = self.inline_value.take() {
            return Err(format!("unexpected value '{value}'"));
        }
        let Some(arg) = self.args.get(self.index) else {
            return Ok(None);
        };
        self.index += 1;
        if !arg.starts_with('-') {
            return Err(format!("error: unexpected argument '{arg}'"));
        }
        match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                self.inline_value = Some(value.to_string());
                Ok(Some(flag.to_string()))
            }
            _ => Ok(Some(arg.clone())),
        }
    }

    fn value(&mut self, flag: &str) -> Result<String, String> {
        if let Some(value) = self.inline_value.take() {
            return Ok(value);
        }
        let value = self
            .args
            .get(self.index)
            .ok_or_else(|| format!("error: option '{flag}' argument missing"))?;
        self.index += 1;
        Ok(value.clone())
    }

    fn number<T: std::str::FromStr>(&mut self, flag: &str) -> Result<T, String> {
        let text = self.value(flag)?;
        text.parse()
            .map_err(|_| format!("error: option '{flag}' expects a number, got '{text}'"))
    }

    fn positive(&mut self, flag: &str) -> Result<u64, String> {
        match self.number::<u64>(flag)? {
            0 => Err(format!("error: option '{flag}' must be greater than 0")),
            value => Ok(value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|arg| arg.to_string()).collect()
    }

    #[test]
    fn accepts_the_real_gateway_argv_shape() {
        let parsed = parse(
            &args(&[
                "gateway",
                "run",
                "--port",
                "0",
                "--bind",
                "loopback",
                "--auth",
                "token",
                "--allow-unconfigured",
            ]),
            &|_| None,
        )
        .unwrap();
        let Invocation::Run(settings) = parsed else {
            panic!("expected run")
        };
        assert_eq!(settings.port, Some(0));
        assert_eq!(settings.protocol, 4);
    }

    #[test]
    fn block_fault_flags_and_the_fake_node_version_parse() {
        let env =
            |name: &str| (name == "GATEWARDEN_SIM_NODE_VERSION").then(|| "20.1.0".to_string());
        let Invocation::Run(settings) = parse(
            &args(&[
                "--busy-ms",
                "1500",
                "--busy-after-ms=200",
                "--frozen-soft-ms",
                "700",
            ]),
            &env,
        )
        .unwrap() else {
            panic!("expected run")
        };
        assert_eq!(
            (settings.busy_ms, settings.busy_after_ms),
            (Some(1500), 200)
        );
        assert_eq!(
            (settings.frozen_soft_ms, settings.frozen_soft_after_ms),
            (Some(700), 0)
        );
        assert_eq!(settings.fake_node_version.as_deref(), Some("20.1.0"));
        let Invocation::Run(settings) =
            parse(&args(&["--fake-node-version", "24.16.0"]), &env).unwrap()
        else {
            panic!("expected run")
        };
        assert_eq!(
            settings.fake_node_version.as_deref(),
            Some("24.16.0"),
            "the flag wins"
        );
        assert!(parse(&args(&["--busy-ms", "600001"]), &|_| None).is_err());
    }

    #[test]
    fn token_flag_and_environment_are_kept_apart() {
        let env = |name: &str| (name == "OPENCLAW_GATEWAY_TOKEN").then(|| "from-env".to_string());
        let Invocation::Run(settings) = parse(&[], &env).unwrap() else {
            panic!()
        };
        assert_eq!(settings.token, None);
        assert_eq!(settings.env_token.as_deref(), Some("from-env"));
        let Invocation::Run(settings) = parse(&args(&["--token=flag"]), &env).unwrap() else {
            panic!()
        };
        assert_eq!(settings.token.as_deref(), Some("flag"));
        assert_eq!(settings.env_token.as_deref(), Some("from-env"));
    }

    #[test]
    fn handshake_timeout_env_only_widens_the_budget() {
        let env = |name: &str| (name == "OPENCLAW_HANDSHAKE_TIMEOUT_MS").then(|| "100".to_string());
        let Invocation::Run(settings) = parse(&[], &env).unwrap() else {
            panic!()
        };
        assert_eq!(settings.handshake_timeout_ms, 15_000);
    }

    #[test]
    fn doctor_subcommand_parses_fix_flags() {
        let Invocation::Doctor(doctor) = parse(
            &args(&["doctor", "--fix", "--yes", "--non-interactive"]),
            &|_| None,
        )
        .unwrap() else {
            panic!()
        };
        assert!(doctor.fix);
    }

    #[test]
    fn unknown_flag_is_an_error() {
        assert!(parse(&args(&["--frobnicate"]), &|_| None).is_err());
    }
}
