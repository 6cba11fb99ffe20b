//! `gatewarden`: run, watch and control a supervised OpenClaw gateway from the command line.
//!
//! # Layout
//!
//! - [`cli`]: the flags and subcommands (clap derive).
//! - [`config`]: the layered configuration: TOML file, then `GATEWARDEN_*` environment, then
//!   flags, deserialised into the core's `SupervisorConfig` so serde names every bad key.
//! - [`launch`]: which gateway to run (simulator, OpenClaw discovery, a custom command), the
//!   token and the default paths.
//! - [`run`]: `gatewarden run`: the actix system, signals, the live status area.
//! - [`control`]: the local control socket protocol (one JSON line each way), its server and client.
//! - [`http`]: `/healthz`, `/readyz` and `/metrics`.
//! - [`notify`]: `sd_notify` for systemd's `Type=notify` and watchdog.
//! - [`console`] and [`logging`]: log lines above a status area that is redrawn in place.
//! - `gatewarden sim ...`: the bundled simulator (`gatewarden-sim`), run from this binary.
//! - [`commands`]: the client commands (`status`, `restart`, `rpc`, ...), `config print`, `diagrams`.
//!
//! `main` stays thin (as ripgrep's does): it calls [`commands::dispatch`], prints an error once
//! with its context chain, and maps it to an exit code.

mod cli;
mod commands;
mod config;
mod console;
mod control;
mod http;
mod instance;
mod launch;
mod logging;
mod notify;
mod run;

use std::process::ExitCode;

/// Exit code for usage and configuration errors (clap uses the same).
const EXIT_USAGE: u8 = 2;

/// A mistake in the command line, the config file or the environment: exit code 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn main() -> ExitCode {
    // `gatewarden sim ...` is the bundled simulator (the default gateway of `gatewarden run`),
    // handed its own argv before clap sees it: its flags are the simulator's, not ours.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("sim") {
        let code = gatewarden_sim::main_with_args(&args[1..]);
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    match commands::dispatch() {
        Ok(code) => code,
        Err(error) => {
            console::clear_status_area();
            eprintln!("gatewarden: error: {error:#}");
            let usage = error.chain().any(|cause| cause.is::<UsageError>());
            ExitCode::from(if usage { EXIT_USAGE } else { 1 })
        }
    }
}
