//! What the simulator sees of the nodes while a run goes on: the Raft invariants that must hold
//! at every moment (checked by raft-harness's [`InvariantChecker`], the same checker the core
//! harness uses, fed with what the real nodes report), and a hash of every event, so that two
//! runs of one seed can be compared.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use kv::ranges::{RangeId, FIRST_RANGE};
use net::node::NodeObserver;
use raft_core::{ConfChangeEntry, Entry, EntryKind, Index, NodeId, Role, SnapshotMeta, Term};
use raft_harness::InvariantChecker;

/// A broken invariant, with what showed it.
pub use raft_harness::Violation as InvariantViolation;

#[derive(Default)]
struct State {
    /// Election safety, from role changes; state machine safety, from the entries each node
    /// hands to its state machine and the snapshots it takes and installs.
    checker: InvariantChecker,
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
    /// Every election won: (simulated time in ns, node, term).
    leaders: Vec<(u64, NodeId, Term)>,
    /// The last configuration entry any node applied: its index, and whether it is joint
    /// (then the cluster is between `C_old,new` and `C_new`).
    last_conf: Option<(u64, bool)>,
    /// Crashes that came while a joint configuration was committed and not yet left.
    crashes_mid_joint: Vec<CrashMidJoint>,
    /// The same invariants for each range split off the first one: every range is a Raft log
    /// of its own, with its own terms and indexes. (Everything else above is the first
    /// range's: the members change and snapshots are taken there alone.)
    split_ranges: BTreeMap<RangeId, InvariantChecker>,
    /// The first digest of the result any replica applied each entry to, and that replica:
    /// every replica must apply an entry to the same result (a replica that applies a range's
    /// entries in another order, or judges them by state the others lack, shows here).
    outcomes: BTreeMap<(RangeId, Index), (u64, NodeId)>,
}

/// A node that crashed (or lost its disk) while the configuration was joint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrashMidJoint {
    /// Simulated time in ns.
    pub at: u64,
    pub node: NodeId,
    /// Whether the node was the leader, as its last role change said.
    pub leader: bool,
    /// The joint configuration entry's index.
    pub joint_index: u64,
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

    /// A snapshot at `snapshot.index` must end at an entry some node applied there, with the
    /// same term. `what` names the event for the report.
    fn check_snapshot(st: &mut State, node: NodeId, snapshot: &SnapshotMeta, what: &str) {
        if let Err(v) = st.checker.snapshot(node, snapshot, what) {
            st.violations.push(v);
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
                    Self::check_snapshot(&mut st, node, &snapshot, "took");
                    st.taken
                        .entry(node)
                        .or_default()
                        .push((at, snapshot.clone()));
                }
                SnapshotEvent::Installing => {
                    Self::check_snapshot(&mut st, node, &snapshot, "installs");
                    st.installed
                        .entry(node)
                        .or_default()
                        .push((at, snapshot.clone()));
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

    /// Every election won: (simulated time in ns, node, term), in order.
    pub fn leaders(&self) -> Vec<(u64, NodeId, Term)> {
        self.state().leaders.clone()
    }

    /// Notes that `node` crashed or lost its disk at `at` (simulated ns); kept if the
    /// configuration was joint.
    pub fn crashed(&self, node: NodeId, at: u64) {
        let mut st = self.state();
        let Some((joint_index, true)) = st.last_conf else {
            return;
        };
        let leader = matches!(st.roles.get(&node), Some((_, Role::Leader, _)));
        st.crashes_mid_joint.push(CrashMidJoint {
            at,
            node,
            leader,
            joint_index,
        });
    }

    /// While the configuration is joint: the leader of the highest term, if it still leads.
    pub fn leader_while_joint(&self) -> Option<NodeId> {
        let st = self.state();
        st.last_conf.filter(|(_, joint)| *joint)?;
        Self::highest_leader(&st)
    }

    /// The leader of the highest term, if it still leads (as its last role change said).
    pub fn leader(&self) -> Option<NodeId> {
        Self::highest_leader(&self.state())
    }

    fn highest_leader(st: &State) -> Option<NodeId> {
        st.roles
            .iter()
            .filter(|(_, (_, role, _))| *role == Role::Leader)
            .max_by_key(|(_, (term, _, _))| *term)
            .map(|(id, _)| *id)
    }

    /// The crashes that came while the configuration was joint.
    pub fn crashes_mid_joint(&self) -> Vec<CrashMidJoint> {
        self.state().crashes_mid_joint.clone()
    }

    /// Follows the configuration entries applied: a joint one opens the window, any later one
    /// (the leader's entry leaving it) closes it.
    fn conf_applied(st: &mut State, entry: &Entry) {
        let Ok(conf) = ConfChangeEntry::decode(&entry.payload) else {
            return;
        };
        if st.last_conf.is_none_or(|(index, _)| index < entry.index) {
            st.last_conf = Some((entry.index, conf.membership.is_joint()));
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

impl Observer {
    /// A role change in a range split off the first: election safety within that range.
    fn split_range_role(st: &mut State, node: NodeId, range: RangeId, term: Term, role: Role) {
        st.events += 1;
        let mut event = vec![b'R', role_code(role)];
        event.extend(range.to_be_bytes());
        event.extend(node.to_be_bytes());
        event.extend(term.to_be_bytes());
        st.trace.add(&event);
        if role == Role::Leader {
            st.elections += 1;
            let checker = st.split_ranges.entry(range).or_default();
            if let Err(v) = checker.leader_elected(node, term) {
                st.violations.push(v);
            }
        }
    }

    /// Entries applied in a range split off the first: state machine safety within that range.
    fn split_range_committed(st: &mut State, node: NodeId, range: RangeId, entries: &[Entry]) {
        st.events += 1;
        for e in entries {
            let mut event = vec![b'C'];
            event.extend(range.to_be_bytes());
            event.extend(node.to_be_bytes());
            event.extend(e.index.to_be_bytes());
            event.extend(e.term.to_be_bytes());
            st.trace.add(&event);
            let checker = st.split_ranges.entry(range).or_default();
            if let Err(v) = checker.applied(node, e) {
                st.violations.push(v);
            }
        }
    }
}

impl NodeObserver for Observer {
    fn role_changed(
        &self,
        node: NodeId,
        range: RangeId,
        term: Term,
        role: Role,
        leader: Option<NodeId>,
    ) {
        let mut st = self.state();
        if range != FIRST_RANGE {
            return Self::split_range_role(&mut st, node, range, term, role);
        }
        st.events += 1;
        st.roles.insert(node, (term, role, leader));
        let mut event = vec![b'r', role_code(role)];
        event.extend(node.to_be_bytes());
        event.extend(term.to_be_bytes());
        event.extend(leader.unwrap_or(0).to_be_bytes());
        st.trace.add(&event);
        if role == Role::Leader {
            st.elections += 1;
            let at = crate::cluster::now();
            st.leaders.push((at, node, term));
            if let Err(v) = st.checker.leader_elected(node, term) {
                st.violations.push(v);
            }
        }
    }

    fn committed(&self, node: NodeId, range: RangeId, entries: &[Entry]) {
        let mut st = self.state();
        if range != FIRST_RANGE {
            return Self::split_range_committed(&mut st, node, range, entries);
        }
        st.events += 1;
        for e in entries {
            let mut event = vec![b'c'];
            event.extend(node.to_be_bytes());
            event.extend(e.index.to_be_bytes());
            event.extend(e.term.to_be_bytes());
            st.trace.add(&event);
            if let Err(v) = st.checker.applied(node, e) {
                st.violations.push(v);
            }
            if e.kind == EntryKind::ConfChange {
                Self::conf_applied(&mut st, e);
            }
            let applied = st.applied.entry(node).or_insert(0);
            *applied = (*applied).max(e.index);
        }
    }

    fn applied(&self, node: NodeId, range: RangeId, outcomes: &[(Index, u64)]) {
        let mut st = self.state();
        for &(index, digest) in outcomes {
            let (first, by) = *st.outcomes.entry((range, index)).or_insert((digest, node));
            if first != digest {
                st.violations.push(InvariantViolation {
                    rule: "replica agreement",
                    detail: format!(
                        "range {range}, entry {index}: node {node} applied it to another \
                         result than node {by} did"
                    ),
                });
            }
        }
    }

    fn wants_outcomes(&self) -> bool {
        true
    }

    // Snapshots are taken and installed while the first range is the only one (images pause
    // once a node hosts several), so only the first range's are watched.
    fn snapshot_installed(&self, node: NodeId, range: RangeId, snapshot: SnapshotMeta) {
        if range == FIRST_RANGE {
            self.snapshot_event(node, SnapshotEvent::Installing, snapshot);
        }
    }

    fn snapshot_taken(&self, node: NodeId, range: RangeId, snapshot: SnapshotMeta) {
        if range == FIRST_RANGE {
            self.snapshot_event(node, SnapshotEvent::Taken, snapshot);
        }
    }
}

fn role_code(role: Role) -> u8 {
    match role {
        Role::Follower => 0,
        Role::PreCandidate => 1,
        Role::Candidate => 2,
        Role::Leader => 3,
        _ => 255,
    }
}

fn flatten(
    by_node: &BTreeMap<NodeId, Vec<(u64, SnapshotMeta)>>,
) -> Vec<(NodeId, u64, SnapshotMeta)> {
    let mut all: Vec<(NodeId, u64, SnapshotMeta)> = by_node
        .iter()
        .flat_map(|(&n, v)| v.iter().map(move |(t, s)| (n, *t, s.clone())))
        .collect();
    all.sort_by_key(|(n, t, s)| (*t, *n, s.index));
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
