//! State diagrams generated from the real machine.
//!
//! [`explore`] drives clones of a [`LifecycleMachine`] breadth-first from `stopped` with every
//! kind of event (commands, each step's results, process exits, socket closes, every armed
//! timer) and records the transitions the machine actually takes. [`mermaid`] and [`dot`] render
//! them with superstates as nested clusters. Nothing here is drawn by hand: a change to the
//! machine changes the diagrams, and a test fails until the committed copies are regenerated.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::config::{ForeignGatewayPolicy, SupervisorConfig};
use crate::error::StartFailure;
use crate::machine::lifecycle::{superstates_of, LEAF_STATES};
use crate::machine::{
    Command, Event, ExternalShutdownOutcome, Handshake, LifecycleMachine, LifecycleState, Listener,
    PortProbe, ReadySource, StartObservation,
};
use crate::reload_policy::{ReloadMode, ReloadPolicy};

/// One observed transition: from a leaf state, on an event kind, to a leaf state.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObservedTransition {
    /// Source leaf state.
    pub from: &'static str,
    /// The event's name.
    pub event: String,
    /// Target leaf state.
    pub to: &'static str,
}

/// How far the exploration goes from `stopped`.
const MAX_DEPTH: usize = 14;

/// A coarse summary of a machine configuration, so exploration visits each once.
fn signature(machine: &LifecycleMachine) -> String {
    format!(
        "{}|owned={}|auto={}|deferred={}|ext={}|timers={:?}|attempts={}",
        machine.leaf_detail(),
        machine.owned_pid().is_some(),
        machine.auto_reconnect(),
        machine.deferred_restart_since().is_some(),
        machine.status(0).external,
        machine.armed_timers(),
        machine.status(0).reconnect_attempts.min(2),
    )
}

fn policy(mode: ReloadMode) -> ReloadPolicy {
    ReloadPolicy {
        mode,
        debounce_ms: 1_200,
    }
}

/// Every event kind, instantiated for the machine's current epoch, pid and timers.
fn sample_events(machine: &LifecycleMachine) -> Vec<Event> {
    let epoch = machine.epoch();
    let owned = machine.owned_pid();
    let mut events = vec![
        command(Command::Start),
        command(Command::Stop),
        command(Command::Restart),
        command(Command::Reload {
            policy: policy(ReloadMode::Hybrid),
        }),
        command(Command::DebouncedRestart { delay_ms: None }),
        command(Command::DebouncedReload {
            delay_ms: None,
            policy: policy(ReloadMode::Hybrid),
        }),
        command(Command::ForceTerminate),
        Event::PortProbed {
            epoch,
            probe: PortProbe::free(),
        },
        Event::PortProbed {
            epoch,
            probe: PortProbe {
                listeners: vec![Listener {
                    pid: Some(900),
                    program: Some("openclaw-gateway".into()),
                    ours_by_record: true,
                }],
                answers_as_gateway: true,
            },
        },
        Event::PortProbed {
            epoch,
            probe: PortProbe {
                listeners: vec![Listener {
                    pid: Some(901),
                    program: Some("node".into()),
                    ours_by_record: false,
                }],
                answers_as_gateway: true,
            },
        },
        Event::PortProbed {
            epoch,
            probe: PortProbe {
                listeners: vec![Listener {
                    pid: Some(902),
                    program: Some("python3".into()),
                    ours_by_record: false,
                }],
                answers_as_gateway: false,
            },
        },
        Event::PortProbed {
            epoch,
            probe: PortProbe {
                listeners: vec![Listener {
                    pid: None,
                    program: None,
                    ours_by_record: false,
                }],
                answers_as_gateway: false,
            },
        },
        Event::OrphansKilled {
            epoch,
            survivors: vec![],
        },
        Event::PortFreed { epoch },
        Event::ProcessSpawned {
            epoch,
            pid: 1000 + epoch as u32,
        },
        Event::ReadinessConfirmed { epoch },
        Event::HandshakeCompleted {
            epoch,
            handshake: Handshake {
                protocol: 4,
                server_version: Some("2026.9.6".into()),
                boot_id: Some("boot".into()),
                has_snapshot: false,
                tick_interval_ms: Some(30_000),
            },
        },
        Event::StartupWindow {
            epoch,
            retry_after_ms: Some(500),
        },
        Event::StartupWatched {
            epoch,
            settled: true,
        },
        Event::StartupWatched {
            epoch,
            settled: false,
        },
        Event::StepFailed {
            epoch,
            failure: StartFailure::HandshakeTimeout,
        },
        Event::StepFailed {
            epoch,
            failure: StartFailure::Other {
                message: "Config invalid: unrecognized key".into(),
            },
        },
        Event::RepairFinished {
            epoch,
            outcome: Ok(()),
        },
        Event::RepairFinished {
            epoch,
            outcome: Err("doctor failed".into()),
        },
        Event::SocketClosed {
            epoch,
            code: Some(1006),
        },
        Event::SocketClosed {
            epoch,
            code: Some(1012),
        },
        Event::ShutdownAnnounced {
            epoch,
            restart_expected_ms: Some(1_500),
        },
        Event::GatewayReadySignal {
            epoch,
            source: ReadySource::ReadyEvent,
        },
        Event::ExternalShutdownFinished {
            epoch,
            outcome: ExternalShutdownOutcome::Unsupported,
        },
        Event::SocketChecked { epoch, open: false },
        Event::SignalSent {
            epoch,
            outcome: Ok(()),
        },
        Event::SignalSent {
            epoch,
            outcome: Err("ESRCH".into()),
        },
    ];
    // F-rules (issue 22).
    events.push(Event::ConfigDigestRead {
        epoch,
        digest: Some("sha256:a".into()),
    });
    events.push(Event::RestartWindow {
        epoch,
        retry_after_ms: Some(1_000),
    });
    events.push(Event::StartObserved {
        epoch,
        observation: StartObservation {
            port_open: true,
            startupz: None,
        },
    });
    if let Some(pid) = owned {
        events.push(Event::ProcessExited { pid, code: Some(1) });
        events.push(Event::ProcessExited {
            pid,
            code: Some(78),
        });
        events.push(Event::StderrLine {
            pid,
            line: "[gateway] startup failed: Invalid config at /c.json: x. Process will stay \
                   alive; fix the issue and restart."
                .into(),
        });
    }
    for (timer, generation) in machine.armed_timer_generations() {
        events.push(Event::TimerFired { timer, generation });
    }
    events
}

fn command(command: Command) -> Event {
    Event::Command {
        command,
        reply: None,
    }
}

/// The configurations explored: the defaults, the Windows preset, and the non-default O1
/// policies, so every reachable transition shows up.
fn exploration_configs() -> Vec<SupervisorConfig> {
    let mut replace = SupervisorConfig::default();
    replace.orphans.foreign_gateway = ForeignGatewayPolicy::Replace;
    let mut fail = SupervisorConfig::default();
    fail.orphans.foreign_gateway = ForeignGatewayPolicy::Fail;
    let mut quick = SupervisorConfig::default();
    quick.reconnect.max_attempts = 1;
    vec![
        SupervisorConfig::default(),
        SupervisorConfig::windows(),
        replace,
        fail,
        quick,
    ]
}

/// Explore the machine and return every transition it takes, sorted.
pub fn explore() -> BTreeSet<ObservedTransition> {
    let mut observed = BTreeSet::new();
    for config in exploration_configs() {
        explore_from(LifecycleMachine::new(config), &mut observed);
    }
    observed
}

fn explore_from(initial: LifecycleMachine, observed: &mut BTreeSet<ObservedTransition>) {
    let mut seen = BTreeSet::new();
    let mut queue = VecDeque::new();
    seen.insert(signature(&initial));
    queue.push_back((initial, 0usize, 1_000u64));
    while let Some((machine, depth, now)) = queue.pop_front() {
        if depth >= MAX_DEPTH {
            continue;
        }
        for event in sample_events(&machine) {
            // Two clocks: right away, and after long enough for every cooldown and stable run.
            for step in [1u64, 400_000] {
                let mut next = machine.clone();
                let _ = next.handle(now + step, event.clone());
                for (from, cause, to) in next.last_transitions() {
                    observed.insert(ObservedTransition {
                        from,
                        event: cause.clone(),
                        to,
                    });
                }
                if seen.insert(signature(&next)) {
                    queue.push_back((next, depth + 1, now + step));
                }
            }
        }
    }
}

fn edges(
    observed: &BTreeSet<ObservedTransition>,
) -> BTreeMap<(&'static str, &'static str), Vec<String>> {
    let mut edges: BTreeMap<(&'static str, &'static str), Vec<String>> = BTreeMap::new();
    for transition in observed {
        let events = edges.entry((transition.from, transition.to)).or_default();
        if !events.contains(&transition.event) {
            events.push(transition.event.clone());
        }
    }
    edges
}

fn public_name(leaf: &str) -> Option<LifecycleState> {
    match leaf {
        "stopped" => Some(LifecycleState::Stopped),
        "failed" => Some(LifecycleState::Error),
        "running" => Some(LifecycleState::Running),
        "reconnecting" => Some(LifecycleState::Reconnecting),
        _ => None,
    }
}

/// The tree of superstates: parent → children (leaves and superstates), in diagram order.
fn tree() -> BTreeMap<&'static str, Vec<&'static str>> {
    let mut tree: BTreeMap<&'static str, Vec<&'static str>> = BTreeMap::new();
    for leaf in LEAF_STATES {
        let mut child = leaf;
        for parent in superstates_of(leaf) {
            let children = tree.entry(parent).or_default();
            if !children.contains(&child) {
                children.push(child);
            }
            child = parent;
        }
    }
    tree
}

/// Render as a Mermaid `stateDiagram-v2`, superstates as composite states.
pub fn mermaid(observed: &BTreeSet<ObservedTransition>) -> String {
    let tree = tree();
    let mut out = String::from(
        "%% Generated by `cargo run -p xtask -- diagrams` from the real lifecycle machine; do not edit.\nstateDiagram-v2\n",
    );
    out.push_str("    [*] --> stopped\n");
    fn nest(
        out: &mut String,
        tree: &BTreeMap<&'static str, Vec<&'static str>>,
        node: &str,
        indent: usize,
    ) {
        let pad = "    ".repeat(indent);
        match tree.get(node) {
            Some(children) => {
                out.push_str(&format!("{pad}state {node} {{\n"));
                for child in children {
                    nest(out, tree, child, indent + 1);
                }
                out.push_str(&format!("{pad}}}\n"));
            }
            None => {
                let label = public_name(node)
                    .map(|state| format!("{node} (S1 {})", state.as_str()))
                    .unwrap_or_else(|| node.to_string());
                out.push_str(&format!("{pad}{node} : {label}\n"));
            }
        }
    }
    nest(&mut out, &tree, "supervised", 1);
    for ((from, to), events) in edges(observed) {
        out.push_str(&format!("    {from} --> {to} : {}\n", events.join(", ")));
    }
    out
}

/// Render as Graphviz DOT, superstates as nested clusters.
pub fn dot(observed: &BTreeSet<ObservedTransition>) -> String {
    let tree = tree();
    let mut out = String::from(
        "// Generated by `cargo run -p xtask -- diagrams` from the real lifecycle machine; do not edit.\ndigraph lifecycle {\n    compound=true;\n    rankdir=LR;\n    node [shape=box, style=rounded, fontname=\"Helvetica\"];\n    edge [fontname=\"Helvetica\", fontsize=9];\n    __start [shape=point];\n    __start -> stopped;\n",
    );
    fn nest(
        out: &mut String,
        tree: &BTreeMap<&'static str, Vec<&'static str>>,
        node: &str,
        indent: usize,
    ) {
        let pad = "    ".repeat(indent);
        match tree.get(node) {
            Some(children) => {
                out.push_str(&format!(
                    "{pad}subgraph cluster_{node} {{\n{pad}    label=\"{node}\";\n"
                ));
                for child in children {
                    nest(out, tree, child, indent + 1);
                }
                out.push_str(&format!("{pad}}}\n"));
            }
            None => {
                let label = public_name(node)
                    .map(|state| format!("{node}\\n(S1 {})", state.as_str()))
                    .unwrap_or_else(|| node.to_string());
                out.push_str(&format!("{pad}{node} [label=\"{label}\"];\n"));
            }
        }
    }
    nest(&mut out, &tree, "supervised", 1);
    for ((from, to), events) in edges(observed) {
        out.push_str(&format!(
            "    {from} -> {to} [label=\"{}\"];\n",
            events.join("\\n")
        ));
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s1_committed_diagrams_match_a_fresh_exploration_of_every_state() {
        // One exploration (it is the slow part) serves both checks.
        let observed = explore();
        let reached: BTreeSet<&str> = observed
            .iter()
            .flat_map(|transition| [transition.from, transition.to])
            .collect();
        for leaf in LEAF_STATES {
            assert!(reached.contains(leaf), "{leaf} never reached");
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../state-diagrams");
        for (file, fresh) in [
            ("lifecycle.mmd", mermaid(&observed)),
            ("lifecycle.dot", dot(&observed)),
        ] {
            let committed = std::fs::read_to_string(root.join(file)).unwrap_or_default();
            assert!(
                committed == fresh,
                "state-diagrams/{file} is stale: run `cargo run -p xtask -- diagrams`"
            );
        }
    }
}
