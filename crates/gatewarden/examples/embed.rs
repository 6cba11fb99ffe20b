//! An app embedding the supervisor through its address only: start it, subscribe, make an RPC,
//! restart, stop. Runs the bundled simulator:
//!
//! ```sh
//! cargo build -p gatewarden-sim && cargo run -p gatewarden --example embed
//! ```

use actix::prelude::*;
use gatewarden::events::GatewayEvent;
use gatewarden::profile::LaunchProfile;
use gatewarden::supervisor::{GetRpcClient, GetStatus, Restart, Rpc, Start, Stop, Subscribe};
use gatewarden::{GatewaySupervisor, SupervisorOptions};

/// Prints what the supervisor publishes.
struct Printer;

impl Actor for Printer {
    type Context = Context<Self>;
}

impl Handler<GatewayEvent> for Printer {
    type Result = ();

    fn handle(&mut self, event: GatewayEvent, _ctx: &mut Self::Context) {
        if let GatewayEvent::Status(status) = &event {
            println!("status: {} pid={:?}", status.state.as_str(), status.pid);
            // CI checks that every gateway this example ran is gone after it exits.
            if let Some(pid) = status.pid {
                println!("gateway pid: {pid}");
            }
        }
    }
}

fn main() -> std::io::Result<()> {
    let system = actix_rt::System::new();
    system.block_on(async {
        let state_dir =
            std::env::temp_dir().join(format!("gatewarden-embed-{}", std::process::id()));
        let supervisor = GatewaySupervisor::start(SupervisorOptions::new(
            LaunchProfile::sim(),
            state_dir.clone(),
        ))
        .expect("the default options are valid");
        supervisor.do_send(Subscribe(Printer.start().recipient()));

        println!("start: {:?}", supervisor.send(Start).await);
        let reply = supervisor
            .send(Rpc {
                method: "echo".into(),
                params: Some(serde_json::json!({"hello": "gateway"})),
                timeout_ms: None,
            })
            .await;
        println!("echo: {reply:?}");
        // An app that makes many calls asks once for a handle; its calls skip the supervisor's
        // mailbox and follow the same rules.
        if let Ok(client) = supervisor.send(GetRpcClient).await {
            let reply = client
                .call(Rpc {
                    method: "echo".into(),
                    params: Some(serde_json::json!({"via": "client"})),
                    timeout_ms: None,
                })
                .await;
            println!("echo via client: {reply:?}");
        }
        println!("restart: {:?}", supervisor.send(Restart).await);
        if let Ok(status) = supervisor.send(GetStatus).await {
            println!(
                "{}",
                serde_json::to_string_pretty(&status).unwrap_or_default()
            );
        }
        println!("stop: {:?}", supervisor.send(Stop).await);
        let _ = std::fs::remove_dir_all(state_dir);
    });
    Ok(())
}
