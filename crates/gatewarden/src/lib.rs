//! The actor shell of gatewarden: it carries out what the functional core (`gatewarden-core`)
//! decides, and turns every result back into an event.
//!
//! Apps that are not actix apps (plain tokio, other executors, threads) embed it through a
//! [`GatewayHandle`] (`Clone + Send + Sync`, see [`handle`] and `examples/tokio_app.rs`).
//! actix apps can also embed it through one address: [`GatewaySupervisor::start`] returns an
//! `Addr<`[`Supervisor`]`>` that takes the messages of [`supervisor`] (`Start`, `Stop`, `Restart`,
//! `Reload`, `Rpc`, `GetStatus`, `Subscribe`, ...). See `examples/embed.rs`.
//!
//! What an embedder uses is re-exported here, including the core types it needs
//! ([`Status`], [`LifecycleState`], [`CommandOutcome`], [`CommandFailure`], [`StartFailure`],
//! [`RpcError`], [`HealthSummary`], [`SupervisorConfig`]), so `gatewarden` is the only dependency
//! an app needs:
//!
//! ```no_run
//! use gatewarden::{CommandFailure, GatewayHandle, HandleError, LaunchProfile, StartFailure, SupervisorOptions};
//!
//! # async fn app() -> Result<(), Box<dyn std::error::Error>> {
//! let gateway = GatewayHandle::spawn(SupervisorOptions::new(LaunchProfile::sim(), "/tmp/gw".into()))?;
//! match gateway.start().await {
//!     Ok(_) => println!("running: {:?}", gateway.status().await?),
//!     // Decide by the variant, never by the text.
//!     Err(HandleError::Failed(CommandFailure::Start { failure: StartFailure::PortHeldByOther { pid, .. }, .. })) => {
//!         eprintln!("the port is taken by pid {pid:?}")
//!     }
//!     Err(other) => eprintln!("{other}"),
//! }
//! gateway.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Rule ids (L5, T4, R6, …) name the rules of the specification, rendered in
//! [`gatewarden_core::rules`] (`docs/spec/BEHAVIOUR.md`).
//!
//! # Layout
//!
//! - [`supervisor`]: the `Supervisor` actor, which owns the lifecycle machine and carries out its
//!   effects, and the public messages.
//! - [`process`]: [`process::ProcessActor`], which owns one gateway child at a time (X1, X2, T4, T6)
//!   and records it so a later supervisor can recognise its orphan (O1).
//! - [`connection`]: [`connection::ConnectionActor`], the WebSocket: handshake (C1, C2), device
//!   identity (A1, A2), token (A3), RPC (M1), dispatch (M2–M5); readiness probes (W1).
//! - `heartbeat` (internal): the heartbeat and health-check ticks and their I/O (H1, H4); the
//!   machine counts the misses.
//! - `reload` (internal): the cached reload policy (P1, P2).
//! - [`profile`]: launch profiles (sim, openclaw, custom), the doctor command, the reload signal.
//! - [`launch`]: what to run, secrets that never reach argv or logs (A3).
//! - [`identity`]: the device key pair on disk (A1).
//! - `evidence` (internal): `/proc` readings of the gateway process for the liveness rules (D2).
//! - [`endpoint`]: which gateway hosts may be reached (loopback; others need an opt-in and TLS).
//! - [`lock`]: the state directory's instance lock: one supervisor per state directory (K1).
//! - [`orphan`]: `/proc` inspection: listeners on a port, start times, process groups (O1).
//! - [`events`]: [`events::GatewayEvent`], what subscribers hear.
//! - [`handle`]: [`GatewayHandle`], the supervisor for any runtime or thread.
#![deny(missing_docs)]

pub mod client;
pub mod connection;
pub mod endpoint;
pub mod events;
pub(crate) mod evidence;
mod gateway_log;
pub mod handle;
pub(crate) mod heartbeat;
pub mod identity;
pub mod launch;
pub mod lock;
pub mod orphan;
pub mod process;
pub mod profile;
pub(crate) mod reload;
mod reports;
pub mod supervisor;

pub use client::RpcClient;
pub use endpoint::{EndpointError, OptionsError};
pub use events::GatewayEvent;
pub use handle::{EventStream, GatewayHandle, HandleError, StreamEvent};
pub use launch::Secret;
pub use profile::{LaunchProfile, ProfileError};
pub use supervisor::{
    DebouncedReload, DebouncedRestart, DiagnosticsSnapshot, ForceTerminateForQuit,
    GatewaySupervisor, GetDiagnostics, GetHealth, GetRpcClient, GetStatus, Reload, Restart, Rpc,
    Shutdown, Start, Stop, Subscribe, SubscribeBounded, Supervisor, SupervisorOptions,
};

pub use gatewarden_core::config::SupervisorConfig;
pub use gatewarden_core::error::{CommandFailure, IgnoredReason, StartFailure};
pub use gatewarden_core::health::HealthSummary;
pub use gatewarden_core::machine::{CommandOutcome, LifecycleState, Status};
pub use gatewarden_core::rpc::RpcError;
