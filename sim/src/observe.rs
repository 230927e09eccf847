//! What the simulator sees of the nodes while a run goes on: the Raft invariants that must hold
//! at every moment, and a hash of every event, so that two runs of one seed can be compared.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use net::node::NodeObserver;
use raft_core::{Entry, NodeId, Role, Term};

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
    /// Highest index each node handed to its state machine.
    applied: BTreeMap<NodeId, u64>,
    /// Each node's last role change: term, role, leader.
    roles: BTreeMap<NodeId, (Term, Role, Option<NodeId>)>,
}

/// Shared by every node of a run (and kept across crashes, since it lives outside the hosts).
#[derive(Clone, Default)]
pub struct Observer {
    state: Arc<Mutex<State>>,
}

impl Observer {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
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
