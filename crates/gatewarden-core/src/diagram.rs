//! State diagrams generated from the real machine.
//!
//! [`explore`] drives clones of a [`LifecycleMachine`] breadth-first from `stopped` with every
//! kind of event (commands, each step's results, process exits, socket closes, every armed
//! timer) and records the transitions the machine actually takes. [`mermaid`] and [`dot`] render
//! them with superstates as nested clusters. Nothing here is drawn by hand: a change to the
//! machine changes the diagrams, and a test fails until the committed copies are regenerated.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::config::{ForeignGatewayPolicy, SupervisorConfig};
use crate::error::{RepairFailure, SignalFailure, StartFailure};
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
            outcome: Err(RepairFailure::Exited { code: Some(1) }),
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
            outcome: Err(SignalFailure::NoProcess),
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

// --------------------------------------------------------------------------------------------
// Readable views: an overview and one diagram per part of the machine.
// --------------------------------------------------------------------------------------------
//
// The complete diagram above has every state and every transition; it is the reference, and too
// dense to read at page width. The views below are cut from the same exploration, driven only by
// the machine's leaf states (`LEAF_STATES`) and their superstates (`superstates_of`), so a new
// state or superstate lands in the right view by regenerating, with nothing to edit here.
//
// - A *part* is an innermost superstate whose children are all leaves (e.g. `starting`), or a
//   leaf that sits directly in a bigger superstate (e.g. `running`, `stopping`).
// - The overview draws each part with more than `COLLAPSE_ABOVE` leaves as one node, every other
//   leaf as itself, and the transitions between those nodes (no self-loops): the main flows.
// - A part's view draws its leaves and every transition into, inside and out of it; the states
//   outside are drawn (dashed) as the overview draws them. In a part of `AGGREGATE_FROM` leaves or
//   more, an event that leads from most of its states to the same place is drawn once, from an
//   "any state" node, with the exceptions named.

/// A part with more leaves than this is one node in the overview.
const COLLAPSE_ABOVE: usize = 1;

/// A part's view draws a bigger part outside it as one node.
const COLLAPSE_OUTSIDE_ABOVE: usize = 3;

/// The overview names this many events per edge (the most specific ones), then "+N more".
const OVERVIEW_EVENTS: usize = 2;

/// In a part with at least this many leaves, common transitions are drawn from "any state".
const AGGREGATE_FROM: usize = 4;

/// The superstate tree, and what the views derive from it.
struct Shape {
    tree: BTreeMap<&'static str, Vec<&'static str>>,
    /// The outermost superstate (every leaf is inside it); not drawn in the views.
    root: &'static str,
}

impl Shape {
    fn new() -> Shape {
        let root = LEAF_STATES
            .first()
            .and_then(|leaf| superstates_of(leaf).last().copied())
            .unwrap_or("supervised");
        Shape { tree: tree(), root }
    }

    fn is_superstate(&self, name: &str) -> bool {
        self.tree.contains_key(name)
    }

    /// The leaves under `node` (itself when it is a leaf), in diagram order.
    fn leaves_under(&self, node: &'static str) -> Vec<&'static str> {
        match self.tree.get(node) {
            None => vec![node],
            Some(children) => children
                .iter()
                .flat_map(|child| self.leaves_under(child))
                .collect(),
        }
    }

    /// The part a leaf belongs to.
    fn part_of(&self, leaf: &'static str) -> &'static str {
        match superstates_of(leaf).first() {
            Some(&inner)
                if inner != self.root
                    && self.tree[inner]
                        .iter()
                        .all(|child| !self.is_superstate(child)) =>
            {
                inner
            }
            _ => leaf,
        }
    }

    /// Every part, in the order of its first leaf.
    fn parts(&self) -> Vec<&'static str> {
        let mut parts = Vec::new();
        for leaf in LEAF_STATES {
            let part = self.part_of(leaf);
            if !parts.contains(&part) {
                parts.push(part);
            }
        }
        parts
    }

    fn collapsed(&self, part: &'static str) -> bool {
        self.is_superstate(part) && self.leaves_under(part).len() > COLLAPSE_ABOVE
    }

    /// How the overview draws a leaf: as its part when that is collapsed, else as itself.
    fn overview_node(&self, leaf: &'static str) -> &'static str {
        let part = self.part_of(leaf);
        if self.collapsed(part) {
            part
        } else {
            leaf
        }
    }

    /// How a part's view draws a state outside the part: as its part when that has more than
    /// `COLLAPSE_OUTSIDE_ABOVE` states (it has its own view), else as itself.
    fn outside_node(&self, leaf: &'static str) -> &'static str {
        let part = self.part_of(leaf);
        if self.is_superstate(part) && self.leaves_under(part).len() > COLLAPSE_OUTSIDE_ABOVE {
            part
        } else {
            leaf
        }
    }

    /// The superstates drawn around an overview node, outermost first (not the root, and not a
    /// collapsed part itself).
    fn clusters_around(&self, node: &'static str) -> Vec<&'static str> {
        let leaf = self.leaves_under(node)[0];
        let mut around: Vec<&'static str> = superstates_of(leaf)
            .iter()
            .copied()
            .filter(|superstate| *superstate != self.root && *superstate != node)
            .collect();
        around.reverse();
        around
    }

    fn node_label(&self, node: &'static str) -> String {
        if self.is_superstate(node) {
            format!("{node}\\n({} states)", self.leaves_under(node).len())
        } else {
            leaf_label(node)
        }
    }
}

fn leaf_label(leaf: &str) -> String {
    public_name(leaf)
        .map(|state| format!("{leaf}\\n(S1 {})", state.as_str()))
        .unwrap_or_else(|| leaf.to_string())
}

/// Events as an edge label, a few per line.
fn label(events: &[String]) -> String {
    events
        .chunks(2)
        .map(|chunk| chunk.join(", "))
        .collect::<Vec<_>>()
        .join("\\n")
}

fn add_event(events: &mut Vec<String>, event: &str) {
    if !events.iter().any(|known| known == event) {
        events.push(event.to_string());
    }
}

/// Nodes with the clusters around them (outermost first), rendered as nested DOT subgraphs.
fn nested_nodes(out: &mut String, nodes: &[(String, String, Vec<&'static str>)], depth: usize) {
    let pad = "    ".repeat(depth + 1);
    let mut index = 0;
    while index < nodes.len() {
        let (id, attributes, clusters) = &nodes[index];
        match clusters.get(depth) {
            None => {
                out.push_str(&format!("{pad}{id} [{attributes}];\n"));
                index += 1;
            }
            Some(cluster) => {
                // Every following node in the same cluster goes in one subgraph.
                let end = nodes[index..]
                    .iter()
                    .position(|(_, _, other)| other.get(depth) != Some(cluster))
                    .map_or(nodes.len(), |offset| index + offset);
                out.push_str(&format!(
                    "{pad}subgraph cluster_{cluster} {{\n{pad}    label=\"{cluster}\";\n"
                ));
                nested_nodes(out, &nodes[index..end], depth + 1);
                out.push_str(&format!("{pad}}}\n"));
                index = end;
            }
        }
    }
}

fn view_header(name: &str, title: &str) -> String {
    format!(
        "// Generated by `cargo run -p xtask -- diagrams` from the real lifecycle machine; do not edit.\n\
         digraph {name} {{\n    label=\"{title}\";\n    labelloc=t;\n    fontname=\"Helvetica\";\n    \
         rankdir=TB;\n    nodesep=0.3;\n    ranksep=0.45;\n    \
         node [shape=box, style=rounded, fontname=\"Helvetica\", fontsize=11];\n    \
         edge [fontname=\"Helvetica\", fontsize=9];\n"
    )
}

/// The overview: parts with many states as one node each, the transitions between nodes.
fn overview_dot(shape: &Shape, observed: &BTreeSet<ObservedTransition>) -> String {
    let mut out = view_header(
        "lifecycle_overview",
        "gatewarden lifecycle: overview (a box with a state count is drawn in its own diagram)",
    );
    let mut order: Vec<&'static str> = Vec::new();
    for leaf in LEAF_STATES {
        let node = shape.overview_node(leaf);
        if !order.contains(&node) {
            order.push(node);
        }
    }
    // Nodes sharing a cluster must be adjacent for `nested_nodes`: order by cluster path (the
    // sort is stable, so diagram order holds within a cluster).
    order.sort_by_key(|node| shape.clusters_around(node));
    let nodes: Vec<(String, String, Vec<&'static str>)> = order
        .iter()
        .map(|node| {
            let style = if shape.is_superstate(node) {
                "rounded,bold"
            } else {
                "rounded"
            };
            (
                node.to_string(),
                format!("label=\"{}\", style=\"{style}\"", shape.node_label(node)),
                shape.clusters_around(node),
            )
        })
        .collect();
    out.push_str(&format!(
        "    __start [shape=point];\n    __start -> {};\n",
        shape.overview_node(LEAF_STATES[0])
    ));
    nested_nodes(&mut out, &nodes, 0);
    let mut edges: BTreeMap<(&'static str, &'static str), Vec<String>> = BTreeMap::new();
    for transition in observed {
        let from = shape.overview_node(transition.from);
        let to = shape.overview_node(transition.to);
        if from != to {
            add_event(edges.entry((from, to)).or_default(), &transition.event);
        }
    }
    let specificity = specificity(observed);
    for ((from, to), events) in &edges {
        out.push_str(&format!(
            "    {from} -> {to} [label=\"{}\"];\n",
            short_label(events, &specificity)
        ));
    }
    out.push_str("}\n");
    out
}

/// One part: its states, and every transition into, inside and out of it. The states outside
/// are drawn twice, dashed: where the way in comes from (above), and where the ways out lead
/// (below), so the part's own flow reads top to bottom without crossing back.
fn part_dot(shape: &Shape, part: &'static str, observed: &BTreeSet<ObservedTransition>) -> String {
    let leaves = shape.leaves_under(part);
    let inside = |leaf: &str| leaves.contains(&leaf);
    let title = if shape.is_superstate(part) {
        format!(
            "gatewarden lifecycle: {part} ({} states), the ways in and out",
            leaves.len()
        )
    } else {
        format!("gatewarden lifecycle: {part}, the ways in and out")
    };
    let mut out = view_header(&format!("lifecycle_{part}"), &title);
    // Node ids: the part's leaves as themselves, outside states as `from_x` / `to_x`.
    let mut edges: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    // (target id, event) → the part's states it leaves from.
    let mut leaving: BTreeMap<(String, String), BTreeSet<&'static str>> = BTreeMap::new();
    let mut entries: Vec<&'static str> = Vec::new();
    let mut exits: Vec<&'static str> = Vec::new();
    for transition in observed {
        let (from_in, to_in) = (inside(transition.from), inside(transition.to));
        if !from_in && !to_in {
            continue;
        }
        let from = if from_in {
            transition.from.to_string()
        } else {
            let node = shape.outside_node(transition.from);
            if !entries.contains(&node) {
                entries.push(node);
            }
            format!("from_{node}")
        };
        let to = if to_in {
            transition.to.to_string()
        } else {
            let node = shape.outside_node(transition.to);
            if !exits.contains(&node) {
                exits.push(node);
            }
            format!("to_{node}")
        };
        if from_in {
            leaving
                .entry((to.clone(), transition.event.clone()))
                .or_default()
                .insert(transition.from);
        }
        add_event(edges.entry((from, to)).or_default(), &transition.event);
    }
    // Common transitions once, from "any state" (exceptions named), when the part is big.
    let any = format!("any_{part}");
    let mut from_any: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if leaves.len() >= AGGREGATE_FROM {
        for ((to, event), sources) in &leaving {
            let others: Vec<&'static str> = leaves
                .iter()
                .copied()
                .filter(|leaf| *leaf != to.as_str())
                .collect();
            let missing: Vec<&'static str> = others
                .iter()
                .copied()
                .filter(|leaf| !sources.contains(leaf))
                .collect();
            if missing.len() * 2 >= others.len() {
                continue;
            }
            for source in sources {
                if let Some(events) = edges.get_mut(&(source.to_string(), to.clone())) {
                    events.retain(|known| known != event);
                }
            }
            let text = if missing.is_empty() {
                event.clone()
            } else {
                let missing: Vec<String> = missing.iter().map(|leaf| leaf.to_string()).collect();
                format!("{event}, not from\\n{}", label(&missing))
            };
            from_any.entry(to.clone()).or_default().push(text);
        }
        edges.retain(|_, events| !events.is_empty());
    }
    let cluster: Vec<&'static str> = if shape.is_superstate(part) {
        vec![part]
    } else {
        Vec::new()
    };
    let outside_style = "style=\"rounded,dashed\", color=gray40, fontcolor=gray25";
    let mut nodes: Vec<(String, String, Vec<&'static str>)> = Vec::new();
    for node in &entries {
        nodes.push((
            format!("from_{node}"),
            format!("label=\"{}\", {outside_style}", shape.node_label(node)),
            Vec::new(),
        ));
    }
    if !from_any.is_empty() {
        nodes.push((
            any.clone(),
            format!("label=\"any {part} state\", style=\"dashed\""),
            cluster.clone(),
        ));
    }
    for leaf in &leaves {
        nodes.push((
            leaf.to_string(),
            format!("label=\"{}\"", leaf_label(leaf)),
            cluster.clone(),
        ));
    }
    for node in &exits {
        nodes.push((
            format!("to_{node}"),
            format!("label=\"{}\", {outside_style}", shape.node_label(node)),
            Vec::new(),
        ));
    }
    nested_nodes(&mut out, &nodes, 0);
    // Ways in above the part, ways out below it.
    for (rank, prefix, group) in [("source", "from", &entries), ("sink", "to", &exits)] {
        if !group.is_empty() {
            let ids: Vec<String> = group
                .iter()
                .map(|node| format!("{prefix}_{node}"))
                .collect();
            out.push_str(&format!("    {{ rank={rank}; {}; }}\n", ids.join("; ")));
        }
    }
    for (to, events) in &from_any {
        out.push_str(&format!(
            "    {any} -> {to} [label=\"{}\", style=dashed];\n",
            events.join("\\n")
        ));
    }
    let specificity = specificity(observed);
    for ((from, to), events) in &edges {
        // A way in is drawn in full in the view of the part it comes from; here its most
        // specific events are enough to tell the ways in apart.
        let text = if from.starts_with("from_") {
            short_label(events, &specificity)
        } else {
            label(events)
        };
        out.push_str(&format!("    {from} -> {to} [label=\"{text}\"];\n"));
    }
    out.push_str("}\n");
    out
}

/// For each event, on how many distinct (from, to) pairs of states the machine takes it: an event
/// seen on few says more about an edge (HandshakeCompleted) than one seen on many (Stop).
fn specificity(observed: &BTreeSet<ObservedTransition>) -> BTreeMap<String, usize> {
    let mut spread: BTreeMap<String, usize> = BTreeMap::new();
    for ((_, _), events) in edges(observed) {
        for event in events {
            *spread.entry(event).or_default() += 1;
        }
    }
    spread
}

/// The `OVERVIEW_EVENTS` most specific events, then "+N more".
fn short_label(events: &[String], specificity: &BTreeMap<String, usize>) -> String {
    let mut ranked = events.to_vec();
    ranked.sort_by_key(|event| (specificity.get(event).copied().unwrap_or(0), event.clone()));
    let more = ranked.len().saturating_sub(OVERVIEW_EVENTS);
    ranked.truncate(OVERVIEW_EVENTS);
    if more > 0 {
        ranked.push(format!("+{more} more"));
    }
    ranked.join("\\n")
}

/// Every generated diagram: `(file name in state-diagrams/, text)`. The complete machine
/// (`lifecycle.mmd`, `lifecycle.dot`), the overview (`lifecycle-overview.dot`) and one view per
/// part (`lifecycle-<part>.dot`). The `.dot` files are rendered to SVG where Graphviz is there.
pub fn files(observed: &BTreeSet<ObservedTransition>) -> Vec<(String, String)> {
    let shape = Shape::new();
    let mut files = vec![
        ("lifecycle.mmd".to_string(), mermaid(observed)),
        ("lifecycle.dot".to_string(), dot(observed)),
        (
            "lifecycle-overview.dot".to_string(),
            overview_dot(&shape, observed),
        ),
    ];
    for part in shape.parts() {
        files.push((
            format!("lifecycle-{part}.dot"),
            part_dot(&shape, part, observed),
        ));
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a view may hold and still be read at page width.
    const MAX_VIEW_BOXES: usize = 24;

    #[test]
    fn every_leaf_is_in_exactly_one_part_and_each_part_has_a_view() {
        let shape = Shape::new();
        let parts = shape.parts();
        for leaf in LEAF_STATES {
            let owners: Vec<_> = parts
                .iter()
                .filter(|part| shape.leaves_under(part).contains(&leaf))
                .collect();
            assert_eq!(owners.len(), 1, "{leaf} is in {owners:?}");
        }
        let names: Vec<String> = files(&BTreeSet::new())
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        for part in parts {
            assert!(
                names.contains(&format!("lifecycle-{part}.dot")),
                "{names:?}"
            );
        }
        assert!(names.contains(&"lifecycle-overview.dot".to_string()));
        // docs/lifecycle.md shows every view (a new part needs its paragraph there).
        let page = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/lifecycle.md"),
        )
        .expect("docs/lifecycle.md");
        for name in names.iter().filter(|name| name.starts_with("lifecycle-")) {
            let svg = name.replace(".dot", ".svg");
            assert!(
                page.contains(&format!("(../state-diagrams/{svg})")),
                "docs/lifecycle.md does not show {svg}"
            );
        }
    }

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
        let generated = files(&observed);
        for (file, fresh) in &generated {
            let committed = std::fs::read_to_string(root.join(file)).unwrap_or_default();
            assert!(
                committed == *fresh,
                "state-diagrams/{file} is stale: run `cargo run -p xtask -- diagrams`"
            );
        }
        // Readable at page width: no view grows past a couple dozen boxes.
        for (file, text) in &generated {
            if file.starts_with("lifecycle-") {
                let boxes = text
                    .lines()
                    .filter(|line| line.contains("[label=") && !line.contains("->"))
                    .count();
                assert!(
                    boxes <= MAX_VIEW_BOXES,
                    "{file} has {boxes} boxes: split the part"
                );
            }
        }
        // A diagram of a part that no longer exists is stale too.
        for entry in std::fs::read_dir(&root).expect("state-diagrams/") {
            let name = entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned();
            let stem = name
                .rsplit_once('.')
                .map_or(name.as_str(), |(stem, _)| stem);
            assert!(
                generated.iter().any(|(file, _)| file.rsplit_once('.').map(|(s, _)| s) == Some(stem)),
                "state-diagrams/{name} is not generated any more: delete it and run `cargo run -p xtask -- diagrams`"
            );
        }
    }
}
