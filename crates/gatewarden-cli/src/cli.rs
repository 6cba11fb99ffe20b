//! The command line: subcommands and flags, parsed by clap (bad flags exit 2 with clap's message).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Keep an OpenClaw gateway alive, and control it.
#[derive(Debug, Parser)]
#[command(name = "gatewarden", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log line format (the filter comes from `RUST_LOG`, default `info`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (no live status area).
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Supervise a gateway in the foreground (the bundled simulator unless told otherwise).
    Run(RunArgs),
    /// Show the status of a running instance.
    Status {
        #[command(flatten)]
        target: TargetArgs,
        /// Print the status snapshot as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Start the gateway of a running instance (after `stop`).
    Start {
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Restart the gateway of a running instance.
    Restart {
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Ask the gateway of a running instance to reload its config (in place when it can).
    Reload {
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Stop the gateway of a running instance; the supervisor stays up unless `--exit`.
    Stop {
        #[command(flatten)]
        target: TargetArgs,
        /// Also end the `gatewarden run` process once the gateway is stopped.
        #[arg(long)]
        exit: bool,
    },
    /// Call a gateway method through a running instance and print the reply as JSON.
    Rpc {
        #[command(flatten)]
        target: TargetArgs,
        /// The method, e.g. `health` or `echo`.
        method: String,
        /// Its params as JSON, e.g. '{"a":1}'.
        params: Option<String>,
        /// Time limit in milliseconds (the configured `rpc.default_timeout_ms` when absent).
        #[arg(long, value_name = "MS")]
        timeout: Option<u64>,
    },
    /// Follow the events of a running instance until it stops (Y1), one line each.
    Events {
        #[command(flatten)]
        target: TargetArgs,
        /// Print the protocol's JSON lines (docs/control-protocol.md) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List the running instances (port, profile, state, pid, control socket).
    Ls {
        /// Print them as a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Configuration helpers.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Regenerate the lifecycle state diagrams (Mermaid, DOT, and SVG when Graphviz is installed).
    Diagrams {
        /// Where to write them.
        #[arg(long, value_name = "DIR", default_value = "state-diagrams")]
        out: PathBuf,
    },
}

/// `gatewarden config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration (file < environment < flags), secrets redacted.
    Print(RunArgs),
}

/// Which instance a command talks to; also the config inputs every command shares.
#[derive(Debug, Clone, Default, Args)]
pub struct TargetArgs {
    /// TOML config file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Gateway port (default: 18791 for the simulator, 18789 for OpenClaw).
    #[arg(long)]
    pub port: Option<u16>,
    /// Supervisor state directory (default: $XDG_STATE_HOME/gatewarden/<port>).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Control socket (default: $XDG_RUNTIME_DIR/gatewarden/<port>.sock, else in the state dir).
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
}

/// `gatewarden run` (and `config print`, which resolves the same inputs).
#[derive(Debug, Clone, Default, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Which gateway to run.
    #[arg(long, value_enum)]
    pub profile: Option<ProfileArg>,
    /// OpenClaw entry point (`.../node_modules/openclaw/openclaw.mjs`).
    #[arg(long, value_name = "PATH")]
    pub openclaw: Option<PathBuf>,
    /// Node.js binary for the OpenClaw profile.
    #[arg(long, value_name = "PATH")]
    pub node: Option<PathBuf>,
    /// File holding the gateway token (else $GATEWARDEN_TOKEN or $OPENCLAW_GATEWAY_TOKEN).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Serve /healthz, /readyz and /metrics on this address (loopback only by default).
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
    /// Allow `--http` on a non-loopback address.
    #[arg(long)]
    pub http_allow_remote: bool,
    /// F8: exit non-zero when gatewarden gives up on the gateway (reconnect attempts exhausted,
    /// restart intensity limit, a failure retrying cannot fix), so systemd's `Restart=` takes over.
    #[arg(long)]
    pub exit_on_failure: bool,
    /// Run this command as the gateway instead (`{port}` is replaced by the port).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// The launch profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProfileArg {
    /// The bundled simulator `gatewarden-sim`.
    Sim,
    /// The real OpenClaw gateway (Node.js).
    Openclaw,
    /// The command after `--`.
    Custom,
}

impl ProfileArg {
    /// The spelling used in config files.
    pub fn as_str(self) -> &'static str {
        match self {
            ProfileArg::Sim => "sim",
            ProfileArg::Openclaw => "openclaw",
            ProfileArg::Custom => "custom",
        }
    }
}
