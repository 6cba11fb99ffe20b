//! Helpers shared by the `supervisor_rules_*` tests (on top of `supervisor_support`): RPC and
//! polling shorthands, a gateway started outside the supervisor, and a tracing subscriber that
//! captures what the supervisor logs so a test can count lines.
#![allow(dead_code)]

use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use actix::prelude::*;
use gatewarden::supervisor::{DiagnosticsSnapshot, GetDiagnostics, Rpc, Supervisor};
use gatewarden_core::rpc::RpcError;
use serde_json::Value;

use crate::supervisor_support::WAIT;

/// Call a gateway method through the supervisor.
pub async fn rpc(
    supervisor: &Addr<Supervisor>,
    method: &str,
    params: Option<Value>,
    timeout_ms: u64,
) -> Result<Value, RpcError> {
    supervisor
        .send(Rpc {
            method: method.to_string(),
            params,
            timeout_ms: Some(timeout_ms),
        })
        .await
        .expect("supervisor alive")
}

/// Poll the diagnostics (bounded by [`WAIT`]) until `predicate` holds.
pub async fn wait_diagnostics(
    supervisor: &Addr<Supervisor>,
    what: &str,
    predicate: impl Fn(&DiagnosticsSnapshot) -> bool,
) -> DiagnosticsSnapshot {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let diagnostics = supervisor
            .send(GetDiagnostics)
            .await
            .expect("supervisor alive");
        if predicate(&diagnostics) {
            return diagnostics;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; last diagnostics: {diagnostics:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Poll `check` (bounded by [`WAIT`]) until it returns true.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A `gatewarden-sim` started by the test, outside any supervisor: a foreign gateway. Killed when
/// dropped.
pub struct ExternalSim {
    child: std::process::Child,
    /// Its pid.
    pub pid: u32,
    _home: tempfile::TempDir,
}

impl ExternalSim {
    /// Start a sim on `port` with its own home and state directory and no token, and wait until it
    /// accepts connections.
    pub async fn start(port: u16, extra_args: &[&str]) -> ExternalSim {
        let home = tempfile::tempdir().expect("temp dir");
        let sim = gatewarden::profile::find_sim_binary().expect("sim binary");
        let child = std::process::Command::new(sim)
            .args(["--port", &port.to_string()])
            .args(extra_args)
            .env("HOME", home.path())
            .env("OPENCLAW_STATE_DIR", home.path().join("state"))
            .env_remove("OPENCLAW_GATEWAY_TOKEN")
            .env_remove("OPENCLAW_GATEWAY_PASSWORD")
            .env_remove("OPENCLAW_CONFIG_PATH")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn the external sim");
        let pid = child.id();
        let deadline = tokio::time::Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "external sim never listened on {port}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        ExternalSim {
            child,
            pid,
            _home: home,
        }
    }

    /// Has it exited (reaped here, so a dead child is not mistaken for a live zombie)?
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ExternalSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One captured tracing event.
#[derive(Debug, Clone)]
pub struct Captured {
    /// Its level.
    pub level: tracing::Level,
    /// Its target.
    pub target: String,
    /// The message followed by every other field as ` name=value`.
    pub text: String,
}

thread_local! {
    /// The capture of this thread's test, if it installed one.
    static CURRENT: RefCell<Option<LogCapture>> = const { RefCell::new(None) };
}

/// Install the process-wide tracing subscriber that routes each event to the capture of the
/// thread it happens on. Every test of these binaries calls this first: tracing caches per
/// callsite whether anyone listens, and a thread-scoped subscriber installed while another test
/// thread registers a callsite can lose that race (the callsite stays muted). With one global
/// subscriber, installed before any test thread logs, every callsite is always enabled.
pub fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        tracing::subscriber::set_global_default(Router)
            .expect("no other global tracing subscriber in this test binary");
    });
}

/// Captures the events of the current thread, which is the thread an `#[actix_rt::test]` runs
/// its actors on.
#[derive(Clone, Default)]
pub struct LogCapture {
    events: Arc<Mutex<Vec<Captured>>>,
}

/// Stops capturing when dropped.
pub struct CaptureGuard(());

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        CURRENT.with(|current| current.borrow_mut().take());
    }
}

impl LogCapture {
    /// Capture this thread's events until the guard is dropped.
    pub fn install(&self) -> CaptureGuard {
        init_tracing();
        CURRENT.with(|current| *current.borrow_mut() = Some(self.clone()));
        CaptureGuard(())
    }

    /// Everything captured so far.
    pub fn events(&self) -> Vec<Captured> {
        self.events.lock().expect("capture lock").clone()
    }

    /// How many captured events contain `needle` in their text.
    pub fn count(&self, needle: &str) -> usize {
        self.events
            .lock()
            .expect("capture lock")
            .iter()
            .filter(|event| event.text.contains(needle))
            .count()
    }
}

struct FieldText<'a>(&'a mut String, &'a mut String);

impl tracing::field::Visit for FieldText<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.1, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.1, " {}={value}", field.name());
        }
    }
}

/// The global subscriber: every event goes to the current thread's capture, if any.
struct Router;

impl tracing::Subscriber for Router {
    fn enabled(&self, _metadata: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, _span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _span: &tracing::span::Id, _values: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _span: &tracing::span::Id, _follows: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let Some(capture) = CURRENT.with(|current| current.borrow().clone()) else {
            return;
        };
        let mut message = String::new();
        let mut fields = String::new();
        event.record(&mut FieldText(&mut message, &mut fields));
        message.push_str(&fields);
        capture.events.lock().expect("capture lock").push(Captured {
            level: *event.metadata().level(),
            target: event.metadata().target().to_string(),
            text: message,
        });
    }

    fn enter(&self, _span: &tracing::span::Id) {}

    fn exit(&self, _span: &tracing::span::Id) {}
}
