//! What the simulator sees of the nodes while a run goes on: the Raft invariants that must hold
//! at every moment, and a hash of every event, so that two runs of one seed can be compared.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use net::node::NodeObserver;
use raft_core::{Entry, NodeId, Role, SnapshotMeta, Term};

/// A broken invariant, with what showed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvariantViolation {
    pub rule: &'static str,
    pub detail: String,
}

#[derive(Default)]
struct State {
    leaders: BTreeMap<Term, NodeId>,
    /// The first entry any node handed to its state machine at each index: (term, payload hash).
    committed: BTreeMap<u64, (Term, u64, NodeId)>,
    violations: Vec<InvariantViolation>,
    trace: TraceHash,
    events: u64,
    elections: u64,
    /// Highest index each node handed to its state machine (an installed snapshot counts).
    applied: BTreeMap<NodeId, u64>,
    /// Each node's last role change: term, role, leader.
    roles: BTreeMap<NodeId, (Term, Role, Option<NodeId>)>,
    /// Snapshot images taken, by node: (simulated time in ns, snapshot).
    taken: BTreeMap<NodeId, Vec<(u64, SnapshotMeta)>>,
    /// Snapshot installs begun, by node: (simulated time in ns, snapshot).
    installed: BTreeMap<NodeId, Vec<(u64, SnapshotMeta)>>,
}

/// What a snapshot event is, for [`SnapshotHook`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotEvent {
    Taken,
    Installing,
}

/// Told of each snapshot event as it happens, on the node's own host (the simulator's
/// snapshot-driven faults hang here).
pub type SnapshotHook = Arc<dyn Fn(NodeId, SnapshotEvent, SnapshotMeta) + Send + Sync>;

/// Shared by every node of a run (and kept across crashes, since it lives outside the hosts).
#[derive(Clone, Default)]
pub struct Observer {
    state: Arc<Mutex<State>>,
    hook: Option<SnapshotHook>,
}

impl Observer {
    /// An observer that also calls `hook` on every snapshot event.
    pub fn with_hook(hook: SnapshotHook) -> Self {
        Self {
            state: Arc::default(),
            hook: Some(hook),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Snapshot images taken on every node, in the order taken: (node, time in ns, snapshot).
    pub fn snapshots_taken(&self) -> Vec<(NodeId, u64, SnapshotMeta)> {
        flatten(&self.state().taken)
    }

    /// Snapshot installs begun on every node: (node, time in ns, snapshot).
    pub fn snapshots_installed(&self) -> Vec<(NodeId, u64, SnapshotMeta)> {
        flatten(&self.state().installed)
    }

    /// A snapshot at `snapshot.index` must hold exactly the committed entries up to there: that
    /// index was handed to some state machine (the image of a state machine, or an image of
    /// one), with the same term. `what` names the event for the report.
    fn check_snapshot(st: &mut State, node: NodeId, snapshot: SnapshotMeta, what: &str) {
        match st.committed.get(&snapshot.index) {
            Some(&(term, _, first)) if term != snapshot.term => {
                st.violations.push(InvariantViolation {
                    rule: "state machine safety",
                    detail: format!(
                        "node {node} {what} a snapshot at index {} of term {}, but node {first} applied an entry of term {term} there",
                        snapshot.index, snapshot.term
                    ),
                });
            }
            Some(_) => {}
            None => st.violations.push(InvariantViolation {
                rule: "state machine safety",
                detail: format!(
                    "node {node} {what} a snapshot at index {} (term {}), which no node has applied",
                    snapshot.index, snapshot.term
                ),
            }),
        }
    }

    fn snapshot_event(&self, node: NodeId, event: SnapshotEvent, snapshot: SnapshotMeta) {
        {
            let mut st = self.state();
            st.events += 1;
            let code = match event {
                SnapshotEvent::Taken => b't',
                SnapshotEvent::Installing => b'i',
            };
            let mut bytes = vec![b's', code];
            bytes.extend(node.to_be_bytes());
            bytes.extend(snapshot.index.to_be_bytes());
            bytes.extend(snapshot.term.to_be_bytes());
            st.trace.add(&bytes);
            let at = crate::cluster::now();
            match event {
                SnapshotEvent::Taken => {
                    Self::check_snapshot(&mut st, node, snapshot, "took");
                    st.taken.entry(node).or_default().push((at, snapshot));
                }
                SnapshotEvent::Installing => {
                    Self::check_snapshot(&mut st, node, snapshot, "installs");
                    st.installed.entry(node).or_default().push((at, snapshot));
                    // The state machine jumps to the snapshot: the entries in between are never
                    // handed to it one by one.
                    let applied = st.applied.entry(node).or_insert(0);
                    *applied = (*applied).max(snapshot.index);
                }
            }
        }
        // Outside the lock: the hook may act on the cluster.
        if let Some(hook) = &self.hook {
            hook(node, event, snapshot);
        }
    }

    pub fn violations(&self) -> Vec<InvariantViolation> {
        self.state().violations.clone()
    }

    /// Folds a client-side event (an operation's outcome) into the trace.
    pub fn record(&self, event: &[u8]) {
        let mut st = self.state();
        st.events += 1;
        st.trace.add(event);
    }

    pub fn trace_hash(&self) -> u64 {
        self.state().trace.0
    }

    pub fn events(&self) -> u64 {
        self.state().events
    }

    pub fn elections(&self) -> u64 {
        self.state().elections
    }

    /// Each node's last known term, role, leader and applied index, one line per node.
    pub fn summary(&self) -> String {
        let st = self.state();
        st.roles
            .iter()
            .map(|(id, (term, role, leader))| {
                format!(
                    "n{id}: term {term} {role:?} (leader {leader:?}), applied up to {}",
                    st.applied.get(id).copied().unwrap_or(0)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Highest index handed to the state machine on any node.
    pub fn max_applied(&self) -> u64 {
        self.state().applied.values().copied().max().unwrap_or(0)
    }
}

impl NodeObserver for Observer {
    fn role_changed(&self, node: NodeId, term: Term, role: Role, leader: Option<NodeId>) {
        let mut st = self.state();
        st.events += 1;
        st.roles.insert(node, (term, role, leader));
        let role_code = match role {
            Role::Follower => 0u8,
            Role::PreCandidate => 1,
            Role::Candidate => 2,
            Role::Leader => 3,
            _ => 255,
        };
        let mut event = vec![b'r', role_code];
        event.extend(node.to_be_bytes());
        event.extend(term.to_be_bytes());
        event.extend(leader.unwrap_or(0).to_be_bytes());
        st.trace.add(&event);
        if role == Role::Leader {
            st.elections += 1;
            match st.leaders.get(&term) {
                Some(&other) if other != node => st.violations.push(InvariantViolation {
                    rule: "election safety",
                    detail: format!("nodes {other} and {node} both lead term {term}"),
                }),
                _ => {
                    st.leaders.insert(term, node);
                }
            }
        }
    }

    fn committed(&self, node: NodeId, entries: &[Entry]) {
        let mut st = self.state();
        st.events += 1;
        for e in entries {
            let hash = fnv(&e.payload);
            let mut event = vec![b'c'];
            event.extend(node.to_be_bytes());
            event.extend(e.index.to_be_bytes());
            event.extend(e.term.to_be_bytes());
            st.trace.add(&event);
            match st.committed.get(&e.index) {
                Some(&(term, h, first)) if (term, h) != (e.term, hash) => {
                    st.violations.push(InvariantViolation {
                        rule: "state machine safety",
                        detail: format!(
                            "index {}: node {first} applied an entry of term {term}, node {node} one of term {}",
                            e.index, e.term
                        ),
                    });
                }
                Some(_) => {}
                None => {
                    st.committed.insert(e.index, (e.term, hash, node));
                }
            }
            let applied = st.applied.entry(node).or_insert(0);
            *applied = (*applied).max(e.index);
        }
    }

    fn snapshot_installed(&self, node: NodeId, snapshot: SnapshotMeta) {
        self.snapshot_event(node, SnapshotEvent::Installing, snapshot);
    }

    fn snapshot_taken(&self, node: NodeId, snapshot: SnapshotMeta) {
        self.snapshot_event(node, SnapshotEvent::Taken, snapshot);
    }
}

fn flatten(
    by_node: &BTreeMap<NodeId, Vec<(u64, SnapshotMeta)>>,
) -> Vec<(NodeId, u64, SnapshotMeta)> {
    let mut all: Vec<(NodeId, u64, SnapshotMeta)> = by_node
        .iter()
        .flat_map(|(&n, v)| v.iter().map(move |&(t, s)| (n, t, s)))
        .collect();
    all.sort_by_key(|&(n, t, s)| (t, n, s.index));
    all
}

/// FNV-1a over a sequence of events: stable across runs, builds and platforms.
#[derive(Clone, Copy, Debug)]
pub struct TraceHash(pub u64);

impl Default for TraceHash {
    fn default() -> Self {
        TraceHash(0xcbf2_9ce4_8422_2325)
    }
}

impl TraceHash {
    pub fn add(&mut self, bytes: &[u8]) {
        for b in bytes.iter().chain(b";") {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    let mut h = TraceHash::default();
    h.add(bytes);
    h.0
}
