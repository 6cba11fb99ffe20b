//! `gatewarden-sim`: a reference OpenClaw gateway 2026.9.6 with fault injection.
//!
//! A library so that the `gatewarden` CLI can embed it (`gatewarden` runs it from its own binary
//! when no separate `gatewarden-sim` is installed); the `gatewarden-sim` binary is a thin `main`.
//!
//! # Layout
//!
//! - `cli`: argv (the real gateway's shape plus simulator and fault flags).
//! - `config`: config path resolution, closed top-level schema, `doctor --fix`.
//! - `handshake`: the `connect` decision as a pure function (schema, protocol, auth, device signature, scopes).
//! - `protocol`: wire constants and frame builders.
//! - `probes`: `/healthz`, `/startupz`, `/readyz` as a pure function.
//! - `faults`: `sim.fault` parsing and process-level fault effects (crash, hang, busy, frozen-soft).
//! - `node_version`: the real launcher's Node runtime admission for `--fake-node-version`.
//! - `state`: what the tasks of one process share.
//! - `server`: lifecycle controller, accept loop, HTTP routing, signals.
//! - `connection`: one control WebSocket.

mod cli;
mod config;
mod connection;
mod faults;
mod handshake;
mod logging;
mod node_version;
mod probes;
mod protocol;
mod server;
mod state;

/// Run the simulator with `args` (argv without the program name); returns the exit code.
pub fn main_with_args(args: &[String]) -> i32 {
    match cli::parse(args, &|name| std::env::var(name).ok()) {
        Ok(cli::Invocation::Run(settings)) => server::run(*settings),
        Ok(cli::Invocation::Doctor(doctor)) => {
            let path = server::config_path_for(doctor.config_path.as_deref());
            config::run_doctor(&path, doctor.fix)
        }
        Ok(cli::Invocation::Help) => {
            print!("{}", cli::HELP);
            0
        }
        Ok(cli::Invocation::Version) => {
            println!("2026.9.6-sim");
            0
        }
        Err(message) => {
            eprintln!("{message}");
            eprintln!("(run gatewarden-sim --help for the flag list)");
            1
        }
    }
}
