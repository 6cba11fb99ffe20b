//! `gatewarden-sim`: the reference gateway's binary; everything lives in the library.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(gatewarden_sim::main_with_args(&args));
}
