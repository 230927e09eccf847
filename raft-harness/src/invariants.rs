//! Raft's safety invariants, checked from what a driver sees: a conformance check any driver of
//! `raft-core` can feed.
//!
//! The [`InvariantChecker`] knows nothing of clusters, disks or networks. A driver (a test
//! harness, a simulator, a model checker) tells it what happens, node by node, and each report
//! returns the first property it breaks as a [`Violation`]:
//!
//! | report | property checked | fed by |
//! | --- | --- | --- |
//! | [`leader_elected`](InvariantChecker::leader_elected) | election safety: at most one leader per term | harness, simulator (role changes) |
//! | [`leader_holds_committed`](InvariantChecker::leader_holds_committed) | leader completeness: a new leader holds every entry committed so far | harness (the new leader's log) |
//! | [`entry_written`](InvariantChecker::entry_written) | log matching: an `(index, term)` always names the same entry after the same predecessor | harness (every log write) |
//! | [`committed`](InvariantChecker::committed) | state machine safety, at commit time: one term committed per index | harness (every commit index advance) |
//! | [`leader_committed`](InvariantChecker::leader_committed) | a leader's commit index lands only on an entry of its own term (§5.4.2, Figure 8) | harness (a leader's commit index at each advance) |
//! | [`commit_durable_on`](InvariantChecker::commit_durable_on) | a leader's commit needs the entry durable on a majority of each voter set of its configuration (both while joint; learners never count) | harness (every disk) |
//! | [`commit_overlaps_earlier_configuration`](InvariantChecker::commit_overlaps_earlier_configuration) | a commit made while a configuration change is not committed is durable on a majority of the configuration before it too (which can still elect a leader): one of its voter sets, if it is joint | harness (every disk, the leader's log) |
//! | [`applied`](InvariantChecker::applied) | state machine safety: every node applies the same entry at each index | harness, simulator (entries handed to the state machine) |
//! | [`snapshot`](InvariantChecker::snapshot) | a snapshot ends at an entry that was committed (applied) with its term | harness, simulator (snapshots taken and installed) |
//! | [`read_requested`](InvariantChecker::read_requested), [`read_served`](InvariantChecker::read_served) | ReadIndex: a read never sees less than what was applied anywhere when it was asked | harness (reads asked and confirmed) |
//!
//! A driver reports what it can see; the rest are skipped. The simulator's observer sees the
//! real nodes through `net`'s `NodeObserver`: role changes, the entries each node hands to its
//! state machine, and snapshots. It cannot feed the commit checks: it never sees a commit index,
//! and the last entry a leader hands out need not be at its commit index (hand-outs are
//! batched), so the commit rule is checked by the core-tier harness, which reads each core's
//! commit index after every `Ready`, and reports everything. If a driver reports commits, an
//! entry applied must have been reported committed first; otherwise the first node to apply an
//! index defines the entry there.
//!
//! The checker keeps every committed entry's term and payload (payloads are reference-counted
//! [`Bytes`], so this costs little while the driver keeps them too).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use raft_core::{Entry, Index, Membership, NodeId, SnapshotMeta, Term};

/// A safety or liveness property that did not hold: which, and what showed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The property's name, e.g. "election safety" (stable: tests match on it).
    pub rule: &'static str,
    /// What happened, naming the nodes, terms and indexes involved.
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.rule, self.detail)
    }
}

impl std::error::Error for Violation {}

/// `Err` with a violation of `rule`.
pub(crate) fn violation(rule: &'static str, detail: String) -> Result<(), Violation> {
    Err(Violation { rule, detail })
}

/// The entry known at one index: committed (reported by [`InvariantChecker::committed`]) or
/// applied somewhere.
#[derive(Clone, Debug)]
struct Known {
    term: Term,
    /// Known once some node applied it (commit reports carry no payload).
    payload: Option<Bytes>,
    /// The node that first reported it, for the report of a conflict.
    first: NodeId,
}

/// Raft's safety invariants over one cluster's history; see the [module docs](self).
#[derive(Clone, Debug, Default)]
pub struct InvariantChecker {
    /// The leader of each term.
    leaders: BTreeMap<Term, NodeId>,
    /// Every entry ever written anywhere, by (index, term): its payload and the term of its
    /// predecessor. One (index, term) must always name the same entry after the same prefix,
    /// which by induction is the Log Matching property.
    written: BTreeMap<(Index, Term), (Bytes, Term)>,
    /// The entry committed or applied at each index.
    known: BTreeMap<Index, Known>,
    /// Whether the driver reports commits (then applies must follow them).
    commits_reported: bool,
    /// The highest index applied on any node: a client may have been told about it.
    acknowledged: Index,
    /// Reads in flight: the acknowledged index when each was asked for.
    read_floors: BTreeMap<Bytes, Index>,
    /// Reads served, for reporting.
    pub reads_served: u64,
    /// Entries applied (on all nodes together), for reporting.
    pub entries_applied: u64,
    /// Leaders elected, for reporting.
    pub elections: u64,
}

impl InvariantChecker {
    /// A checker that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// `node` became leader of `term`. Election safety: no other node led `term`.
    pub fn leader_elected(&mut self, node: NodeId, term: Term) -> Result<(), Violation> {
        match self.leaders.get(&term) {
            Some(&other) if other != node => {
                return violation(
                    "election safety",
                    format!("nodes {other} and {node} both lead term {term}"),
                )
            }
            Some(_) => {}
            None => {
                self.leaders.insert(term, node);
                self.elections += 1;
            }
        }
        Ok(())
    }

    /// Leader completeness: the new leader `node` of `term` holds every entry committed so far;
    /// `term_at(index)` is the term of its entry at `index` (from its log, or its snapshot's
    /// data below the log), `None` if it has none.
    pub fn leader_holds_committed(
        &self,
        node: NodeId,
        term: Term,
        term_at: impl Fn(Index) -> Option<Term>,
    ) -> Result<(), Violation> {
        for (&index, known) in &self.known {
            let held = term_at(index);
            if held != Some(known.term) {
                return violation(
                    "leader completeness",
                    format!(
                        "node {node} leads term {term} without the entry committed at {index} (term {}); it has {held:?}",
                        known.term
                    ),
                );
            }
        }
        Ok(())
    }

    /// `node` wrote `entry` to its log after an entry of term `prev_term` (0 at index 1). Log
    /// matching: an `(index, term)` pair names one payload after one predecessor term, whoever
    /// writes it.
    pub fn entry_written(
        &mut self,
        node: NodeId,
        entry: &Entry,
        prev_term: Term,
    ) -> Result<(), Violation> {
        match self.written.get(&(entry.index, entry.term)) {
            Some((payload, prev)) if *payload != entry.payload || *prev != prev_term => violation(
                "log matching",
                format!(
                    "node {node} wrote entry {}@{} that differs from the one other nodes hold",
                    entry.index, entry.term
                ),
            ),
            Some(_) => Ok(()),
            None => {
                self.written.insert(
                    (entry.index, entry.term),
                    (entry.payload.clone(), prev_term),
                );
                Ok(())
            }
        }
    }

    /// `node`'s commit index passed `index`, whose entry there has `term`. State machine
    /// safety: no node committed another term at `index`.
    pub fn committed(&mut self, node: NodeId, index: Index, term: Term) -> Result<(), Violation> {
        self.commits_reported = true;
        match self.known.get(&index) {
            Some(known) if known.term != term => violation(
                "state machine safety",
                format!(
                    "node {node} committed term {term} at index {index}, node {} term {}",
                    known.first, known.term
                ),
            ),
            Some(_) => Ok(()),
            None => {
                self.known.insert(
                    index,
                    Known {
                        term,
                        payload: None,
                        first: node,
                    },
                );
                Ok(())
            }
        }
    }

    /// `node`, leader of `leader_term`, advanced its commit index to `index`, whose entry has
    /// `term`. A leader counts replicas only for entries of its own term; earlier ones commit
    /// with them (§5.4.2). Counting an earlier term's entry is what Figure 8 breaks: that entry
    /// can still be overwritten by a leader that never saw it.
    pub fn leader_committed(
        &self,
        node: NodeId,
        leader_term: Term,
        index: Index,
        term: Term,
    ) -> Result<(), Violation> {
        if term != leader_term {
            return violation(
                "leader commits only entries of its term",
                format!(
                    "node {node}, leader of term {leader_term}, advanced its commit index to {index} of term {term}"
                ),
            );
        }
        Ok(())
    }

    /// `node` committed `index` (of `term`) while `durable_on` of the `voters` nodes held that
    /// entry durably. A commit needs a durable majority; only a driver that sees every disk can
    /// report this.
    pub fn commit_durable_on(
        &self,
        node: NodeId,
        index: Index,
        term: Term,
        membership: &Membership,
        durable: impl Fn(NodeId) -> bool,
    ) -> Result<(), Violation> {
        for (which, voters) in [
            ("voters", &membership.voters),
            ("outgoing voters", &membership.outgoing),
        ] {
            let durable_on = voters.iter().filter(|&&v| durable(v)).count();
            if !voters.is_empty() && durable_on < voters.len() / 2 + 1 {
                return violation(
                    "commit needs a durable majority",
                    format!(
                        "leader {node} committed index {index} (term {term}) but only {durable_on} of its {which} {voters:?} hold it durably (configuration {membership:?})"
                    ),
                );
            }
        }
        Ok(())
    }

    /// `node` committed `index` (of `term`) while a configuration change in its log, made from
    /// `earlier`, was not committed yet. Nodes that have not received that change still use
    /// `earlier` and can elect a leader with it, so the commit's majority must overlap every
    /// such election: it must hold a majority of `earlier`'s voters, or, if `earlier` is joint
    /// (electing there needs both majorities), of its outgoing voters. A voter set changed in
    /// one step (no joint configuration) breaks this at once: the new majority can commit
    /// while the old one elects someone else.
    pub fn commit_overlaps_earlier_configuration(
        &self,
        node: NodeId,
        index: Index,
        term: Term,
        earlier: &Membership,
        durable: impl Fn(NodeId) -> bool,
    ) -> Result<(), Violation> {
        let majority_of = |voters: &BTreeSet<NodeId>| {
            !voters.is_empty() && voters.iter().filter(|&&v| durable(v)).count() > voters.len() / 2
        };
        if majority_of(&earlier.voters) || majority_of(&earlier.outgoing) {
            return Ok(());
        }
        violation(
            "commit overlaps every configuration that can elect",
            format!(
                "leader {node} committed index {index} (term {term}) without a majority of the configuration {earlier:?}, which nodes that have not received the change can still elect with"
            ),
        )
    }

    /// `node` handed `entry` to its state machine. State machine safety: every node applies the
    /// same entry (term and payload) at each index; with commit reports, only committed ones.
    pub fn applied(&mut self, node: NodeId, entry: &Entry) -> Result<(), Violation> {
        self.entries_applied += 1;
        self.acknowledged = self.acknowledged.max(entry.index);
        let Some(known) = self.known.get_mut(&entry.index) else {
            if self.commits_reported {
                return violation(
                    "state machine safety",
                    format!(
                        "node {node} applies {}@{}, which no node committed",
                        entry.index, entry.term
                    ),
                );
            }
            self.known.insert(
                entry.index,
                Known {
                    term: entry.term,
                    payload: Some(entry.payload.clone()),
                    first: node,
                },
            );
            return Ok(());
        };
        let payload = known.payload.get_or_insert_with(|| entry.payload.clone());
        if known.term != entry.term || *payload != entry.payload {
            return violation(
                "state machine safety",
                format!(
                    "index {}: node {} applied or committed an entry of term {}, node {node} applies one of term {}",
                    entry.index, known.first, known.term, entry.term
                ),
            );
        }
        Ok(())
    }

    /// `node` took or installs (`what`) a snapshot ending at `snapshot`: that index must have
    /// been committed (or applied somewhere) with the snapshot's term. An install also counts
    /// as applying up to the snapshot for the read checks.
    pub fn snapshot(
        &mut self,
        node: NodeId,
        snapshot: &SnapshotMeta,
        what: &str,
    ) -> Result<(), Violation> {
        match self.known.get(&snapshot.index) {
            Some(known) if known.term != snapshot.term => violation(
                "state machine safety",
                format!(
                    "node {node} {what} a snapshot at index {} of term {}, but node {} applied or committed an entry of term {} there",
                    snapshot.index, snapshot.term, known.first, known.term
                ),
            ),
            Some(_) => Ok(()),
            None => violation(
                "state machine safety",
                format!(
                    "node {node} {what} a snapshot at index {} (term {}), which no node has applied",
                    snapshot.index, snapshot.term
                ),
            ),
        }
    }

    /// The term committed (or applied) at `index`, if any node reported one.
    pub fn committed_term(&self, index: Index) -> Option<Term> {
        self.known.get(&index).map(|k| k.term)
    }

    /// How many indexes are known committed.
    pub fn committed_count(&self) -> u64 {
        self.known.len() as u64
    }

    /// A linearizable read identified by `ctx` was asked for: it must see at least every index
    /// applied anywhere by now.
    pub fn read_requested(&mut self, ctx: Bytes) {
        self.read_floors.insert(ctx, self.acknowledged);
    }

    /// `node` will serve the read `ctx` once it has applied `index`. ReadIndex safety: `index`
    /// is not below what was applied anywhere when the read was asked for.
    pub fn read_served(
        &mut self,
        node: NodeId,
        ctx: &Bytes,
        index: Index,
    ) -> Result<(), Violation> {
        let floor = self.read_floors.remove(ctx).unwrap_or(0);
        if index < floor {
            return violation(
                "read index linearizability",
                format!(
                    "node {node} served a read at index {index} but index {floor} was already acknowledged"
                ),
            );
        }
        self.reads_served += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_core::EntryKind;

    fn entry(index: Index, term: Term, payload: &'static [u8]) -> Entry {
        Entry::new(term, index, EntryKind::Normal, Bytes::from_static(payload))
    }

    #[test]
    fn two_leaders_in_one_term_break_election_safety() {
        let mut c = InvariantChecker::new();
        c.leader_elected(1, 3).unwrap();
        c.leader_elected(1, 3).unwrap();
        assert_eq!(c.leader_elected(2, 3).unwrap_err().rule, "election safety");
        c.leader_elected(2, 4).unwrap();
    }

    #[test]
    fn different_entries_applied_at_one_index_break_state_machine_safety() {
        let mut c = InvariantChecker::new();
        c.applied(1, &entry(1, 1, b"a")).unwrap();
        c.applied(2, &entry(1, 1, b"a")).unwrap();
        let err = c.applied(3, &entry(1, 1, b"b")).unwrap_err();
        assert_eq!(err.rule, "state machine safety");
        assert_eq!(
            c.applied(3, &entry(1, 2, b"a")).unwrap_err().rule,
            "state machine safety"
        );
    }

    #[test]
    fn with_commit_reports_only_committed_entries_may_be_applied() {
        let mut c = InvariantChecker::new();
        c.committed(1, 1, 1).unwrap();
        c.applied(1, &entry(1, 1, b"a")).unwrap();
        assert!(c.applied(1, &entry(2, 1, b"b")).is_err());
        assert!(c.committed(2, 1, 2).is_err());
    }

    #[test]
    fn log_matching_and_leader_completeness() {
        let mut c = InvariantChecker::new();
        c.entry_written(1, &entry(1, 1, b"a"), 0).unwrap();
        c.entry_written(2, &entry(1, 1, b"a"), 0).unwrap();
        assert_eq!(
            c.entry_written(3, &entry(1, 1, b"x"), 0).unwrap_err().rule,
            "log matching"
        );
        c.committed(1, 1, 1).unwrap();
        c.leader_holds_committed(2, 2, |i| (i == 1).then_some(1))
            .unwrap();
        assert_eq!(
            c.leader_holds_committed(3, 2, |_| None).unwrap_err().rule,
            "leader completeness"
        );
    }

    #[test]
    fn reads_and_snapshots_and_durability() {
        let mut c = InvariantChecker::new();
        c.applied(1, &entry(1, 1, b"a")).unwrap();
        c.applied(1, &entry(2, 1, b"b")).unwrap();
        c.read_requested(Bytes::from_static(b"r"));
        assert_eq!(
            c.read_served(2, &Bytes::from_static(b"r"), 1)
                .unwrap_err()
                .rule,
            "read index linearizability"
        );
        c.snapshot(2, &SnapshotMeta::new(2, 1, Default::default()), "installs")
            .unwrap();
        assert!(c
            .snapshot(2, &SnapshotMeta::new(2, 2, Default::default()), "installs")
            .is_err());
        assert!(c
            .snapshot(2, &SnapshotMeta::new(9, 1, Default::default()), "took")
            .is_err());
        let three = Membership::with_voters([1, 2, 3]);
        c.commit_durable_on(1, 2, 1, &three, |n| n <= 2).unwrap();
        assert!(c.commit_durable_on(1, 2, 1, &three, |n| n == 1).is_err());
        let joint = Membership {
            voters: [1, 4, 5].into(),
            outgoing: [1, 2, 3].into(),
            learners: [6, 7].into(),
        };
        c.commit_durable_on(1, 2, 1, &joint, |n| [1, 2, 4].contains(&n))
            .unwrap();
        assert!(
            c.commit_durable_on(1, 2, 1, &joint, |n| n <= 3).is_err(),
            "the old majority alone"
        );
        assert!(
            c.commit_durable_on(1, 2, 1, &joint, |n| n == 1 || n >= 4)
                .is_err(),
            "learners never count"
        );
    }

    #[test]
    fn a_commit_during_a_change_overlaps_the_configuration_before_it() {
        let c = InvariantChecker::new();
        let three = Membership::with_voters([1, 2, 3]);
        // {1,2,3} -> {1,4,5} in one step: 1, 4 and 5 alone do not hold a majority of {1,2,3}.
        assert_eq!(
            c.commit_overlaps_earlier_configuration(1, 7, 2, &three, |n| n == 1 || n >= 4)
                .unwrap_err()
                .rule,
            "commit overlaps every configuration that can elect"
        );
        c.commit_overlaps_earlier_configuration(1, 7, 2, &three, |n| n <= 2)
            .unwrap();
        // After a joint configuration, a majority of either of its voter sets overlaps every
        // election it allows (those need both).
        let joint = Membership {
            voters: [1, 4, 5].into(),
            outgoing: [1, 2, 3].into(),
            learners: [].into(),
        };
        c.commit_overlaps_earlier_configuration(1, 7, 2, &joint, |n| n == 1 || n >= 4)
            .unwrap();
        assert!(c
            .commit_overlaps_earlier_configuration(1, 7, 2, &joint, |n| n == 1)
            .is_err());
    }
}
