//! What the leader knows about each follower's log, and how much it may send it (flow control).
//!
//! A follower is in one of three states. In `Probe` the leader does not know where the logs
//! diverge, so it sends one append at a time and waits for the answer (or a heartbeat
//! response) before sending another. In `Replicate` the logs are known to match up to `matched`,
//! so the leader streams appends optimistically, bounded by a window of in-flight messages
//! and bytes. In `Snapshot` the follower needs entries the leader has compacted: it was sent the
//! leader's snapshot, and gets no appends until it acknowledges an index at or past it (or the
//! driver reports that the transfer failed, which sends it back to `Probe`).

use std::collections::VecDeque;

use crate::types::Index;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReplicationState {
    Probe,
    Replicate,
    /// Waiting for the follower to install the snapshot that ends at `pending`.
    Snapshot {
        pending: Index,
    },
}

#[derive(Debug)]
pub(crate) struct Progress {
    /// Highest index known to be durably stored on the follower and matching our log.
    pub(crate) matched: Index,
    /// Next index to send.
    pub(crate) next: Index,
    pub(crate) state: ReplicationState,
    /// In `Probe`: an append is outstanding, wait for an answer before sending another.
    pub(crate) probe_sent: bool,
    pub(crate) inflight: Inflights,
    /// Heard from within the current check-quorum period.
    pub(crate) recently_active: bool,
    /// The highest commit index this follower was told that it can use (bounded by `matched`),
    /// so that commit-only appends go out only when they let the follower apply more.
    pub(crate) commit_sent: Index,
    /// `matched` at the previous heartbeat answer: a follower in `Replicate` that made no
    /// progress over a whole heartbeat interval has probably lost an append.
    pub(crate) matched_at_last_heartbeat: Index,
    /// In `Snapshot`: heartbeat answers since the snapshot was last offered. The offer (metadata
    /// only) is repeated now and then, since it or the follower's acknowledgement may be lost.
    pub(crate) heartbeats_since_snapshot_offer: u32,
    /// For a peer the configuration in force no longer lists: the index of the entry that
    /// removed it. It is still replicated to until it holds that entry and was told it
    /// committed (see `sync_progress_with_membership`), and never counted.
    pub(crate) removed_by: Option<Index>,
}

impl Progress {
    pub(crate) fn new(next: Index, max_msgs: usize, max_bytes: u64) -> Self {
        Self {
            matched: 0,
            next,
            state: ReplicationState::Probe,
            probe_sent: false,
            inflight: Inflights::new(max_msgs, max_bytes),
            recently_active: false,
            commit_sent: 0,
            matched_at_last_heartbeat: 0,
            heartbeats_since_snapshot_offer: 0,
            removed_by: None,
        }
    }

    /// Whether the leader must hold back appends to this follower for now.
    pub(crate) fn is_paused(&self) -> bool {
        match self.state {
            ReplicationState::Probe => self.probe_sent,
            ReplicationState::Replicate => self.inflight.is_full(),
            ReplicationState::Snapshot { .. } => true,
        }
    }

    /// The follower needs entries up to and including `pending`, which only a snapshot holds.
    pub(crate) fn become_snapshot(&mut self, pending: Index) {
        self.state = ReplicationState::Snapshot { pending };
        self.probe_sent = false;
        self.inflight.clear();
        self.heartbeats_since_snapshot_offer = 0;
    }

    pub(crate) fn become_probe(&mut self) {
        self.state = ReplicationState::Probe;
        self.next = self.matched + 1;
        self.probe_sent = false;
        self.inflight.clear();
    }

    pub(crate) fn become_replicate(&mut self) {
        self.state = ReplicationState::Replicate;
        self.next = self.matched + 1;
        self.probe_sent = false;
        self.inflight.clear();
    }

    /// Records a successful append up to `index`. Returns false for a stale acknowledgement.
    pub(crate) fn update_matched(&mut self, index: Index) -> bool {
        if index <= self.matched {
            // Stale or duplicated. Resuming a probe here would answer every duplicate with a
            // new append, whose answer could be duplicated again: a message storm.
            return false;
        }
        self.matched = index;
        self.next = self.next.max(index + 1);
        self.probe_sent = false;
        true
    }

    /// Records that an append carrying entries up to `last` (with `bytes` of entries) was sent.
    pub(crate) fn sent_entries(&mut self, last: Index, bytes: u64) {
        match self.state {
            ReplicationState::Replicate => {
                self.next = last + 1;
                self.inflight.add(last, bytes);
            }
            ReplicationState::Probe => self.probe_sent = true,
            // Paused: nothing is sent while a snapshot is pending.
            ReplicationState::Snapshot { .. } => {}
        }
    }

    /// A rejection of the append that followed `rejected_prev`: back off to `retry_from`.
    /// Returns false if the rejection is stale (answers an append we have moved past).
    pub(crate) fn back_off(&mut self, rejected_prev: Index, retry_from: Index) -> bool {
        match self.state {
            ReplicationState::Replicate => {
                if rejected_prev <= self.matched {
                    return false;
                }
                self.become_probe();
                self.next = retry_from.max(self.matched + 1);
                true
            }
            ReplicationState::Probe => {
                if rejected_prev + 1 != self.next {
                    return false;
                }
                self.next = retry_from.max(self.matched + 1).min(self.next);
                self.probe_sent = false;
                true
            }
            // No append was sent since the snapshot: the rejection answers an older one.
            ReplicationState::Snapshot { .. } => false,
        }
    }
}

impl Progress {
    /// Panics if this follower's record is inconsistent; `last_index` is the leader's.
    pub(crate) fn assert_invariants(&self, peer: u64, last_index: Index) {
        assert!(
            self.matched < self.next && self.next <= last_index + 1,
            "n{peer}: need match {} < next {} <= last index + 1 ({})",
            self.matched,
            self.next,
            last_index + 1
        );
        assert!(
            self.commit_sent <= self.matched,
            "n{peer}: told commit {} beyond its match {}",
            self.commit_sent,
            self.matched
        );
        assert!(
            !self.probe_sent || self.state == ReplicationState::Probe,
            "n{peer}: probe_sent outside Probe ({:?})",
            self.state
        );
        if self.state == ReplicationState::Replicate {
            self.inflight
                .assert_invariants(peer, self.matched, self.next);
        } else {
            assert!(
                self.inflight.queue.is_empty() && self.inflight.bytes == 0,
                "n{peer}: messages in flight outside Replicate ({:?})",
                self.state
            );
        }
    }
}

/// The window of append messages sent to one follower and not yet acknowledged.
#[derive(Debug)]
pub(crate) struct Inflights {
    /// Last index and entry bytes of each message in flight, oldest first.
    queue: VecDeque<(Index, u64)>,
    bytes: u64,
    max_msgs: usize,
    max_bytes: u64,
}

impl Inflights {
    pub(crate) fn new(max_msgs: usize, max_bytes: u64) -> Self {
        Self {
            queue: VecDeque::new(),
            bytes: 0,
            max_msgs,
            max_bytes,
        }
    }

    pub(crate) fn is_full(&self) -> bool {
        self.queue.len() >= self.max_msgs || self.bytes >= self.max_bytes
    }

    pub(crate) fn add(&mut self, last: Index, bytes: u64) {
        self.queue.push_back((last, bytes));
        self.bytes += bytes;
    }

    /// Frees every message whose entries end at or below `index`.
    pub(crate) fn free_up_to(&mut self, index: Index) {
        while let Some(&(last, bytes)) = self.queue.front() {
            if last > index {
                break;
            }
            self.queue.pop_front();
            self.bytes -= bytes;
        }
    }

    pub(crate) fn clear(&mut self) {
        self.queue.clear();
        self.bytes = 0;
    }

    /// In-flight messages end in increasing order, below `next`; their bytes add up. (They may
    /// end at or below `matched`: acknowledgements free them only up to what they name.)
    fn assert_invariants(&self, peer: u64, matched: Index, next: Index) {
        let mut prev = 0;
        for &(last, _) in &self.queue {
            assert!(
                last > prev && last < next,
                "n{peer}: in-flight ends {:?} out of order or not below next {next} (match {matched})",
                self.queue
            );
            prev = last;
        }
        let sum: u64 = self.queue.iter().map(|&(_, b)| b).sum();
        assert_eq!(sum, self.bytes, "n{peer}: in-flight bytes do not add up");
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_fills_by_count_and_by_bytes() {
        let mut w = Inflights::new(2, 100);
        w.add(1, 10);
        assert!(!w.is_full());
        w.add(2, 10);
        assert!(w.is_full());
        w.free_up_to(1);
        assert!(!w.is_full());
        w.add(5, 90);
        assert!(w.is_full());
        w.free_up_to(4);
        assert_eq!(w.len(), 1);
        w.free_up_to(5);
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn probe_sends_one_append_at_a_time() {
        let mut p = Progress::new(5, 4, 1000);
        assert!(!p.is_paused());
        p.sent_entries(7, 10);
        assert!(p.is_paused());
        assert_eq!(p.next, 5, "probing does not advance next optimistically");
        assert!(p.back_off(4, 2));
        assert!(!p.is_paused());
        assert_eq!(p.next, 2);
    }

    #[test]
    fn a_stale_ack_does_not_resume_a_paused_probe() {
        let mut p = Progress::new(1, 4, 1000);
        assert!(p.update_matched(5));
        p.sent_entries(8, 10);
        assert!(p.is_paused());
        assert!(!p.update_matched(5));
        assert!(
            p.is_paused(),
            "a duplicate ack must not trigger another append"
        );
        assert!(p.update_matched(8));
        assert!(!p.is_paused());
    }

    #[test]
    fn stale_rejections_are_ignored() {
        let mut p = Progress::new(1, 4, 1000);
        p.update_matched(5);
        p.become_replicate();
        p.sent_entries(8, 10);
        assert!(!p.back_off(3, 1), "rejects an index already matched");
        assert_eq!(p.state, ReplicationState::Replicate);
        assert!(p.back_off(6, 6));
        assert_eq!(p.state, ReplicationState::Probe);
        assert_eq!(p.next, 6);
    }

    #[test]
    #[should_panic(expected = "need match")]
    fn a_next_index_at_or_below_the_match_is_caught() {
        let mut p = Progress::new(3, 4, 1000);
        p.matched = 3;
        p.assert_invariants(2, 5);
    }

    #[test]
    #[should_panic(expected = "in flight outside Replicate")]
    fn messages_in_flight_while_probing_are_caught() {
        let mut p = Progress::new(1, 4, 1000);
        p.inflight.add(1, 10);
        p.assert_invariants(2, 5);
    }
}
