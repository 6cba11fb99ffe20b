//! The functional core of gatewarden: the lifecycle state machine and every supervisor policy.
//!
//! # Layout
//!
//! Nothing in this crate touches an async runtime, a socket, a process, a clock or a file. Time
//! comes in as an argument (`now_ms`, milliseconds on a monotonic clock chosen by the caller), and
//! decisions go out as values. The actor crate (`gatewarden`) carries out those values and feeds
//! every result back in as an event.
//!
//! - [`config`]: every number, with the defaults of BEHAVIOUR.md and the Windows preset.
//! - [`machine`]: the statig lifecycle machine (`(now, event) -> effects`).
//! - Policies, each plain code with its own tests: [`reconnect`] (N2, N5), [`governor`] (R3),
//!   [`heartbeat`] (H1–H3), [`recovery`] (L7), [`reload_policy`] (P1, P2), [`stderr`] (X3),
//!   [`output_log`] (Q2),
//!   [`health`] (H5, H6, M6), [`rpc`] (M1), [`frame`] (C1, M2–M5), [`device_auth`] (A1, A2).
//! - [`diagram`]: explores the real machine and renders the state diagrams.
//! - [`rules`]: the specification, `docs/spec/BEHAVIOUR.md`. Rule ids in these docs (L1–L8 start,
//!   T1–T6 stop, R1–R7 restart, N1–N5 reconnect, H1–H6 health, …) name its rules.
//! - [`fuzzing`]: the entry points of the fuzz targets and of the corpus replay test.
#![deny(missing_docs)]

pub mod config;
pub mod device_auth;
pub mod diagram;
pub mod error;
pub mod frame;
pub mod fuzzing;
pub mod governor;
pub mod health;
pub mod heartbeat;
pub mod liveness;
pub mod machine;
pub mod output_log;
pub mod reconnect;
pub mod recovery;
pub mod reload_policy;
pub mod rpc;
pub mod rules;
pub mod stderr;
