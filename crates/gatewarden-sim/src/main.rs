//! `gatewarden-sim`: a reference OpenClaw gateway 2026.9.6 with fault injection.
//!
//! # Layout
//!
//! - `cli`: argv (the real gateway's shape plus simulator and fault flags).
//! - `config`: config path resolution, closed top-level schema, `doctor --fix`.
//! - `handshake`: the `connect` decision as a pure function (schema, protocol, auth, device signature, scopes).
//! - `protocol`: wire constants and frame builders.
//! - `probes`: `/healthz`, `/startupz`, `/readyz` as a pure function.
//! - `faults`: `sim.fault` parsing and process-level fault effects.
//! - `state`: what the tasks of one process share.
//! - `server`: lifecycle controller, accept loop, HTTP routing, signals.
//! - `connection`: one control WebSocket.

mod cli;
mod config;
mod connection;
mod faults;
mod handshake;
mod logging;
mod probes;
mod protocol;
mod server;
mod state;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match cli::parse(&args, &|name| std::env::var(name).ok()) {
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
    };
    std::process::exit(code);
}
