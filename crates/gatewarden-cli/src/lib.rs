//! The `gatewarden` command as a library: everything but `main`, so the fuzz targets and the corpus
//! replay test can reach the config parser and the control protocol (see [`fuzzing`]).
//!
//! # Layout
//!
//! - `cli`: the flags and subcommands (clap derive).
//! - `config`: the layered configuration: TOML file, then `GATEWARDEN_*` environment, then
//!   flags, deserialised into the core's `SupervisorConfig` so serde names every bad key.
//! - `launch`: which gateway to run (simulator, OpenClaw discovery, a custom command), the
//!   token and the default paths.
//! - `run`: `gatewarden run`: the actix system, signals, the live status area.
//! - `control`: the local control socket protocol (one JSON line each way), its server and client.
//! - `discovery`: the registry of running instances (`gatewarden ls`, port-less commands).
//! - `events_stream`: Y1, the control socket's event stream and `hello`.
//! - `http`: `/healthz`, `/readyz` and `/metrics`.
//! - `notify`: `sd_notify` for systemd's `Type=notify` and watchdog.
//! - [`console`] and `logging`: log lines above a status area that is redrawn in place.
//! - `gatewarden sim ...`: the bundled simulator (`gatewarden-sim`), run from this binary.
//! - [`commands`]: the client commands (`status`, `restart`, `rpc`, ...), `config print`, `diagrams`.
//!
//! - [`fuzzing`]: the entry points of the fuzz targets (`tests/fuzz`) and of the corpus replay test.
//!
//! `main` (in `main.rs`) stays thin, as ripgrep's does: it calls [`commands::dispatch`], prints an
//! error once with its context chain, and maps it to an exit code.

mod cli;
pub mod commands;
mod config;
pub mod console;
mod control;
mod discovery;
mod events_stream;
pub mod fuzzing;
mod http;
mod instance;
mod launch;
mod logging;
mod notify;
mod run;

/// A mistake in the command line, the config file or the environment: exit code 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}
