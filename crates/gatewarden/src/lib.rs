//! The actor shell of gatewarden: it carries out what the functional core (`gatewarden-core`)
//! decides, and turns every result back into an event.
//!
//! # Layout
//!
//! - [`launch`]: what to run ([`launch::LaunchSpec`]), secrets that never reach argv or logs (A3),
//!   and the service-manager variables scrubbed from the child environment.
//! - [`process`]: [`process::ProcessActor`], which owns one gateway child at a time (X1, X2, T4, T6),
//!   forwards every raw output line (X3 classification happens elsewhere) and records the owned
//!   gateway in the state directory so a later supervisor can recognise its orphan (O1).
//! - [`orphan`]: Linux `/proc` inspection: who listens on a port, process start times, process
//!   group members, killing orphans and waiting for a port to be free (O1, L5 step 3).
#![deny(missing_docs)]

pub mod connection;
pub mod events;
pub mod identity;
pub mod launch;
pub mod orphan;
pub mod process;
pub mod profile;
pub mod reload;
pub mod supervisor;

pub use supervisor::{GatewaySupervisor, Supervisor, SupervisorOptions};
