//! `gatewarden`: run, watch and control a supervised OpenClaw gateway from the command line.
//!
//! `main` stays thin (as ripgrep's does): the command lives in the `gatewarden_cli` library; this
//! hands `gatewarden sim ...` to the bundled simulator, calls [`commands::dispatch`], prints an
//! error once with its context chain, and maps it to an exit code.

use std::process::ExitCode;

use gatewarden_cli::{commands, console, UsageError};

/// Exit code for usage and configuration errors (clap uses the same).
const EXIT_USAGE: u8 = 2;

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
