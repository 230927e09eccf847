//! Snapshots (Raft §7): log compaction, the leader sending its snapshot to a follower whose
//! needed entries it has compacted, and the follower installing it.
//!
//! The core never holds snapshot data, only its metadata (`SnapshotMeta`: the last index and
//! term it covers). The state machine's data lives with the driver, and travels between drivers
//! out of band; the core decides what is needed and when it is safe.
//!
//! - **Compaction** is the driver's decision: once its state machine has a durable snapshot up
//!   to some applied index, it calls [`RawNode::compact`] and the core drops the entries it
//!   covers. The driver chooses when, and should keep a tail of entries after the snapshot so
//!   that a follower slightly behind catches up with appends rather than a whole snapshot.
//! - **Sending.** A follower whose next index is at or below the leader's snapshot index gets an
//!   `InstallSnapshot` message naming the snapshot, and its progress enters `Snapshot`: no
//!   appends until it acknowledges an index at or past the snapshot, or until the driver reports
//!   a failed transfer ([`RawNode::report_snapshot`]), after which it is probed again.
//! - **Receiving** takes two steps, so that installing can never undo a promise: the follower
//!   asks its driver to fetch the data (`Ready::snapshot_to_fetch`), the driver reports the data
//!   staged ([`RawNode::on_snapshot_fetched`]), and only then, if the snapshot is still needed,
//!   the core replaces its log in memory and asks for the install as a write ordered with its
//!   other writes (`Ready::snapshot_write`). The acknowledgement waits for that write. Had the
//!   driver installed on its own, an install finishing late could wipe entries the follower
//!   had meanwhile received from a new leader and acknowledged, breaking commit durability.

use crate::error::CompactError;
use crate::message::MessageBody;
use crate::node::RawNode;
use crate::progress::ReplicationState;
use crate::ready::SnapshotToFetch;
use crate::types::{Index, NodeId, Role, SnapshotMeta, Term};

/// A snapshot this follower asked its driver to fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PendingFetch {
    pub(crate) from: NodeId,
    pub(crate) snapshot: SnapshotMeta,
    /// The term in which the leader offered it: the acknowledgement goes to that leader only
    /// if the term has not moved on.
    pub(crate) term: Term,
    /// The driver reported the fetch failed: ask again at the next message from the leader.
    pub(crate) failed: bool,
}

impl RawNode {
    // ----- compaction ---------------------------------------------------------------------

    /// The driver's state machine has a durable snapshot covering every entry up to `up_to`:
    /// drop those entries from the log, which now starts after `(up_to, term of up_to)`.
    ///
    /// `up_to` must be applied (reported with `on_applied`, hence committed) and above the
    /// current snapshot; otherwise nothing changes and the error says why. The core never
    /// compacts on its own: when to, and how long a tail to keep, is the driver's choice.
    ///
    /// The driver drops its stored entries up to `up_to` as well and stores `(up_to, term)` as
    /// its log start, so that a later [`RestartState`](crate::RestartState) has `entries`
    /// starting at `up_to + 1` (entries at or below the snapshot are refused as
    /// [`ConfigError::EntriesOverlapSnapshot`](crate::ConfigError::EntriesOverlapSnapshot)).
    pub fn compact(&mut self, up_to: Index) -> Result<(), CompactError> {
        let result = self.compact_inner(up_to);
        self.debug_assert_invariants();
        result
    }

    fn compact_inner(&mut self, up_to: Index) -> Result<(), CompactError> {
        let snapshot_index = self.log.snapshot().index;
        if up_to <= snapshot_index {
            return Err(CompactError::AlreadyCompacted {
                up_to,
                snapshot_index,
            });
        }
        if up_to > self.applied_index() {
            return Err(CompactError::NotApplied {
                up_to,
                applied: self.applied_index(),
            });
        }
        self.log.compact(up_to);
        tracing::debug!(id = self.id, term = self.term, up_to, "log compacted");
        Ok(())
    }

    /// The last entry covered by this node's snapshot; the log continues after it.
    pub fn snapshot(&self) -> SnapshotMeta {
        self.log.snapshot().clone()
    }

    // ----- leader -------------------------------------------------------------------------

    /// Offers our snapshot to `to`, whose next entries are compacted, and stops appending to it
    /// until it has installed the snapshot.
    pub(crate) fn send_snapshot(&mut self, to: NodeId) {
        let snapshot = self.log.snapshot().clone();
        let Some(pr) = self.progress.get_mut(&to) else {
            return;
        };
        tracing::info!(
            id = self.id,
            term = self.term,
            to,
            next = pr.next,
            snapshot_index = snapshot.index,
            "follower needs compacted entries: sending a snapshot"
        );
        pr.become_snapshot(snapshot.index);
        self.send(
            to,
            MessageBody::InstallSnapshot {
                snapshot: Box::new(snapshot),
            },
        );
    }

    /// A heartbeat answer from a follower waiting for a snapshot. It triggers no append; but
    /// if the follower has neither acknowledged nor been reported failed for a while, the offer
    /// (metadata only, cheap) is repeated: it or the acknowledgement may have been lost, and a
    /// follower that has the snapshot answers a repeated offer with its commit index.
    pub(crate) fn snapshot_heartbeat_answered(&mut self, from: NodeId) {
        // About one election timeout between offers.
        let every = (self.cfg.election_ticks / self.cfg.heartbeat_ticks).max(1);
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.heartbeats_since_snapshot_offer += 1;
        if pr.heartbeats_since_snapshot_offer >= every {
            pr.heartbeats_since_snapshot_offer = 0;
            let snapshot = self.log.snapshot().clone();
            self.send(
                from,
                MessageBody::InstallSnapshot {
                    snapshot: Box::new(snapshot),
                },
            );
        }
    }

    /// The driver's report on a snapshot transfer to `to`. `ok = false` (the transfer failed,
    /// or `to` is unreachable): the follower goes back to `Probe`, and at the next heartbeat
    /// answer it is probed again, which offers the snapshot again if it still needs it.
    /// `ok = true`: nothing changes until the follower acknowledges the install, which moves it
    /// on, so `ok = true` may be reported when the data was sent or when the follower confirmed
    /// it arrived; either is correct. A report for a follower not waiting for a snapshot is
    /// stale and ignored.
    pub fn report_snapshot(&mut self, to: NodeId, ok: bool) {
        self.snapshot_transfer_reported(to, ok);
        self.debug_assert_invariants();
    }

    fn snapshot_transfer_reported(&mut self, to: NodeId, ok: bool) {
        let Some(pr) = self.progress.get_mut(&to) else {
            return;
        };
        if !matches!(pr.state, ReplicationState::Snapshot { .. }) {
            return;
        }
        if ok {
            pr.heartbeats_since_snapshot_offer = 0;
        } else {
            pr.become_probe();
            // Wait for a heartbeat answer before probing: a driver that fails at once must not
            // turn this into a loop of offers.
            pr.probe_sent = true;
        }
    }

    /// Handles an acknowledgement from a follower in `Snapshot`. Returns whether it left that
    /// state (its log now matches ours far enough to append).
    pub(crate) fn snapshot_acknowledged(&mut self, from: NodeId, index: Index) -> bool {
        let Some(pr) = self.progress.get_mut(&from) else {
            return false;
        };
        let ReplicationState::Snapshot { pending } = pr.state else {
            return false;
        };
        pr.update_matched(index);
        if pr.matched >= pending {
            pr.become_replicate();
            return true;
        }
        // An older acknowledgement, from before the snapshot was needed: keep waiting.
        false
    }

    // ----- follower -----------------------------------------------------------------------

    /// The leader `from` offers its snapshot. The term rules ran already (we follow `from`).
    pub(crate) fn handle_install_snapshot(&mut self, from: NodeId, snapshot: SnapshotMeta) {
        let committed = self.log.committed();
        if snapshot.index <= committed {
            // Stale or duplicated, or our acknowledgement was lost: we hold it already.
            self.acknowledge_append(from, committed);
            return;
        }
        if self.log.matches(snapshot.index, snapshot.term) {
            // The snapshot's last entry is ours, so is everything before it (log matching), and
            // it is committed: commit it and keep what follows.
            self.log.commit_to(snapshot.index);
            self.acknowledge_append(from, snapshot.index);
            return;
        }
        if let Some(p) = &self.pending_fetch {
            if p.term == self.term && snapshot.index < p.snapshot.index {
                // A reordered older offer from the same leader: the newer one is on its way.
                return;
            }
        }
        self.pending_fetch = Some(PendingFetch {
            from,
            snapshot: snapshot.clone(),
            term: self.term,
            failed: false,
        });
        self.fetch_request = Some(SnapshotToFetch { from, snapshot });
    }

    /// The driver has fetched (and staged, not installed) the data of `snapshot`. Returns
    /// whether the core took it: `true` when it replaced its log with it at once and asks for
    /// the install in the next `Ready::snapshot_write`; `false` when the report is ignored (not
    /// asked for, older than the snapshot asked for, or caught up by appends meanwhile), and
    /// the driver drops the staged data.
    ///
    /// From `true` on, the core counts the state machine as the snapshot: `applied_index()` is
    /// `snapshot.index`, and the next committed entries it hands out start at
    /// `snapshot.index + 1`. The driver's state machine becomes the snapshot's data when the
    /// [`SnapshotWrite`](crate::SnapshotWrite) is carried out, before any entry handed out
    /// after it is applied. Every entry handed out before it has an index below
    /// `snapshot.index` (the core installs only snapshots beyond its commit index): an
    /// asynchronous applier that has not applied them yet must drop them, telling them apart
    /// by index alone (an entry at or below the installed snapshot's index is covered by it).
    ///
    /// The fetched snapshot may be *later* than the one asked for: the leader may have taken a
    /// newer snapshot since it made the offer, and serves that. It must come from a state
    /// machine's applied state, so it is committed, and installing it is as safe as installing
    /// the one offered. This is what lets a driver keep a log tail after its snapshot and still
    /// keep only one snapshot image.
    pub fn on_snapshot_fetched(&mut self, snapshot: SnapshotMeta) -> bool {
        let taken = self.take_fetched_snapshot(snapshot);
        self.debug_assert_invariants();
        taken
    }

    /// The driver could not fetch the snapshot it was asked for (`snapshot`, as in the
    /// request). The core asks again, with the same request in a `Ready`, as soon as it next
    /// hears from the leader (a heartbeat interval), rather than at the leader's next offer,
    /// about an election timeout later; so the driver keeps no state per fetch and just
    /// reports. A report for a snapshot no longer asked for is ignored.
    pub fn on_snapshot_fetch_failed(&mut self, snapshot: SnapshotMeta) {
        if let Some(pending) = self.pending_fetch.as_mut() {
            if pending.snapshot == snapshot {
                pending.failed = true;
            }
        }
        self.debug_assert_invariants();
    }

    /// A message from the leader `from`: if its snapshot could not be fetched, ask again.
    pub(crate) fn retry_failed_fetch(&mut self, from: NodeId) {
        let Some(pending) = self.pending_fetch.as_mut() else {
            return;
        };
        if pending.failed && pending.from == from {
            pending.failed = false;
            self.fetch_request = Some(SnapshotToFetch {
                from,
                snapshot: pending.snapshot.clone(),
            });
        }
    }

    fn take_fetched_snapshot(&mut self, snapshot: SnapshotMeta) -> bool {
        let Some(pending) = self.pending_fetch.clone() else {
            tracing::debug!(
                id = self.id,
                term = self.term,
                ?snapshot,
                "ignoring a snapshot not asked for"
            );
            return false;
        };
        let asked = pending.snapshot;
        let older = snapshot.index < asked.index;
        if older || (snapshot.index == asked.index && snapshot.term != asked.term) {
            tracing::debug!(
                id = self.id,
                term = self.term,
                ?snapshot,
                ?asked,
                "ignoring a snapshot older than the one asked for"
            );
            return false;
        }
        self.pending_fetch = None;
        if self
            .fetch_request
            .as_ref()
            .is_some_and(|r| r.snapshot == asked)
        {
            self.fetch_request = None;
        }
        if self.role == Role::Leader || snapshot.index <= self.log.committed() {
            // Caught up meanwhile (a leader holds every committed entry).
            return false;
        }
        if self.log.matches(snapshot.index, snapshot.term) {
            // Appends from a new leader brought the snapshot's last entry meanwhile; installing
            // would drop entries after it that may have been acknowledged.
            self.log.commit_to(snapshot.index);
            return false;
        }
        // Every entry of ours that the install drops conflicts with the leader's log (our entry
        // at `snapshot.index` differs or is missing), so none of them can ever commit.
        tracing::info!(
            id = self.id,
            term = self.term,
            snapshot_index = snapshot.index,
            snapshot_term = snapshot.term,
            "installing a snapshot"
        );
        let index = snapshot.index;
        self.log.install_snapshot(snapshot);
        self.applied = index;
        if pending.term == self.term {
            self.acknowledge_append(pending.from, index);
        }
        true
    }
}
