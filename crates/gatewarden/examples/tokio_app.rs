//! A plain tokio app embedding a supervised gateway through a `GatewayHandle`: no actix in its own
//! code. It starts the bundled simulator, streams its events, makes RPCs from several tasks and
//! shuts everything down. The supervisor's actors run on a thread of their own that the handle
//! manages.
//!
//! ```sh
//! cargo build -p gatewarden-sim && cargo run -p gatewarden --example tokio_app
//! ```

use gatewarden::events::GatewayEvent;
use gatewarden::profile::LaunchProfile;
use gatewarden::{GatewayHandle, StreamEvent, SupervisorOptions};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let state_dir =
        std::env::temp_dir().join(format!("gatewarden-tokio-app-{}", std::process::id()));
    let options = SupervisorOptions::new(LaunchProfile::sim(), state_dir.clone());
    let gateway = GatewayHandle::spawn(options)?;

    // Events arrive on a bounded stream; a consumer that falls behind is told what it missed.
    let mut events = gateway.subscribe().await;
    let printer = tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            match event {
                StreamEvent::Event(GatewayEvent::Status(status)) => {
                    println!("status: {}", status.state.as_str());
                    if let Some(pid) = status.pid {
                        println!("gateway pid: {pid}");
                    }
                }
                StreamEvent::Event(GatewayEvent::GatewayReady) => println!("gateway ready"),
                StreamEvent::Event(_) => {}
                StreamEvent::Lagged(missed) => println!("missed {missed} events"),
            }
        }
        // The stream ends when the supervisor shuts down.
        println!("event stream ended");
    });

    println!("start: {:?}", gateway.start().await?);

    // The handle is Clone + Send + Sync: tasks on any worker thread share it.
    let calls: Vec<_> = (0..4)
        .map(|n| {
            let gateway = gateway.clone();
            tokio::spawn(async move { gateway.rpc("echo", json!({ "n": n })).await })
        })
        .collect();
    for call in calls {
        println!("echo: {:?}", call.await?);
    }

    let status = gateway.status().await?;
    println!("{}", serde_json::to_string_pretty(&status)?);
    let health = gateway.health().await?;
    println!("health: {}", serde_json::to_string(&health)?);

    // Stops the gateway (its own shutdown, then SIGTERM, then SIGKILL) and the supervisor. An
    // app that exits should do this first: dropping the last handle does the same, but only if
    // the process lives long enough for it to finish.
    gateway.shutdown().await?;
    printer.await?;
    let _ = std::fs::remove_dir_all(state_dir);
    Ok(())
}
