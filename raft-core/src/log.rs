//! The in-memory Raft log: every entry since the last snapshot, how much of it is durable
//! locally, how much is committed, and how much has been handed out for applying.
//!
//! The core never reads the disk (rule 3 of the contract), so this is the whole log.
//! Indexes relate as `applying <= committed` and `persisted <= last_index`; `committed` may run
//! ahead of `persisted` on a follower, but nothing above `persisted` is ever handed out.

use std::ops::Range;

use crate::membership::{ConfChangeEntry, Membership};
use crate::types::{Entry, EntryKind, Index, SnapshotMeta, Term};

#[derive(Debug)]
pub(crate) struct RaftLog {
    /// The last entry folded into a snapshot; `entries[0]` has index `snapshot.index + 1`.
    snapshot: SnapshotMeta,
    entries: Vec<Entry>,
    /// Highest index known durable on local storage and matching this log.
    persisted: Index,
    /// Lowest index changed since the last write was asked for; `None` when nothing is pending.
    unpersisted_from: Option<Index>,
    committed: Index,
    /// Highest index handed to the driver for applying.
    applying: Index,
    /// A fetched snapshot that replaced this log in memory and is not yet asked to be written.
    unwritten_snapshot: Option<SnapshotMeta>,
    /// The configuration-change entries in `entries`, in index order, decoded: the last one is
    /// the configuration in force (else the snapshot's). Kept in step with every change to
    /// `entries`, so that truncating an entry reverts its configuration.
    confs: Vec<(Index, Membership)>,
}

impl RaftLog {
    /// A log rebuilt from storage: every entry given is durable.
    pub(crate) fn restore(
        snapshot: SnapshotMeta,
        entries: Vec<Entry>,
        committed: Index,
        applied: Index,
    ) -> Self {
        let last = snapshot.index + entries.len() as u64;
        let committed = committed.max(applied).max(snapshot.index).min(last);
        let applying = applied.max(snapshot.index).min(committed);
        let confs = conf_changes(&entries);
        Self {
            snapshot,
            entries,
            persisted: last,
            unpersisted_from: None,
            committed,
            applying,
            unwritten_snapshot: None,
            confs,
        }
    }

    /// The last entry folded into a snapshot (index 0 if none).
    pub(crate) fn snapshot(&self) -> &SnapshotMeta {
        &self.snapshot
    }

    /// The configuration in force: that of the last configuration-change entry in the log,
    /// else the snapshot's.
    pub(crate) fn membership(&self) -> &Membership {
        self.confs
            .last()
            .map_or(&self.snapshot.membership, |(_, m)| m)
    }

    /// The index of the last configuration-change entry in the log, if it holds one.
    pub(crate) fn last_conf_index(&self) -> Option<Index> {
        self.confs.last().map(|(i, _)| *i)
    }

    /// The configuration in force at `index` (at or after the snapshot).
    pub(crate) fn membership_at(&self, index: Index) -> &Membership {
        self.confs
            .iter()
            .rev()
            .find(|(i, _)| *i <= index)
            .map_or(&self.snapshot.membership, |(_, m)| m)
    }

    /// Drops every entry up to `up_to`, which a durable snapshot of the state machine covers.
    /// The caller checked that `up_to` is applied and above the current snapshot; applied
    /// entries are durable and committed, so no pending write or conflict can touch them.
    pub(crate) fn compact(&mut self, up_to: Index) {
        let term = self
            .term(up_to)
            .expect("the caller checked up_to is in the log");
        let membership = self.membership_at(up_to).clone();
        self.entries.drain(..(up_to - self.snapshot.index) as usize);
        self.snapshot = SnapshotMeta::new(up_to, term, membership);
        self.confs.retain(|(i, _)| *i > up_to);
        if let Some(from) = self.unpersisted_from {
            self.unpersisted_from = Some(from.max(up_to + 1));
        }
    }

    /// Replaces the whole log by `snapshot` (fetched from the leader): nothing follows it, and
    /// everything up to it is committed and applied. The caller checked that the log does not
    /// hold `(snapshot.index, snapshot.term)` and that the snapshot is above the commit index,
    /// so every entry dropped here conflicts with the leader's log and can never commit.
    pub(crate) fn install_snapshot(&mut self, snapshot: SnapshotMeta) {
        debug_assert!(snapshot.index > self.committed);
        let index = snapshot.index;
        self.snapshot = snapshot.clone();
        self.entries.clear();
        self.confs.clear();
        // Nothing in memory is older than the write that installs it; acknowledgements of that
        // write are held until it is durable.
        self.persisted = index;
        self.unpersisted_from = None;
        self.committed = index;
        self.applying = index;
        self.unwritten_snapshot = Some(snapshot);
    }

    /// The snapshot to install in the next write, forgetting it as pending.
    pub(crate) fn take_unwritten_snapshot(&mut self) -> Option<SnapshotMeta> {
        self.unwritten_snapshot.take()
    }

    pub(crate) fn first_index(&self) -> Index {
        self.snapshot.index + 1
    }

    pub(crate) fn last_index(&self) -> Index {
        self.snapshot.index + self.entries.len() as u64
    }

    pub(crate) fn last_term(&self) -> Term {
        self.entries.last().map_or(self.snapshot.term, |e| e.term)
    }

    pub(crate) fn committed(&self) -> Index {
        self.committed
    }

    pub(crate) fn persisted(&self) -> Index {
        self.persisted
    }

    pub(crate) fn applying(&self) -> Index {
        self.applying
    }

    /// The term of the entry at `index`, or `None` if it is compacted or beyond the log.
    pub(crate) fn term(&self, index: Index) -> Option<Term> {
        if index == self.snapshot.index {
            return Some(self.snapshot.term);
        }
        self.entry(index).map(|e| e.term)
    }

    pub(crate) fn entry(&self, index: Index) -> Option<&Entry> {
        if index < self.first_index() {
            return None;
        }
        self.entries.get((index - self.first_index()) as usize)
    }

    pub(crate) fn matches(&self, index: Index, term: Term) -> bool {
        self.term(index) == Some(term)
    }

    /// Raft §5.4.1: a candidate's log is at least as up to date as ours if its last term is
    /// higher, or equal with an index at least as high.
    pub(crate) fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Entries in `[from, last_index]`, at most `max_bytes` of them but always at least one.
    pub(crate) fn entries_from(&self, from: Index, max_bytes: u64) -> &[Entry] {
        self.entries_between(from, self.last_index(), max_bytes)
    }

    /// Entries in `[from, upto]` (within the log), at most `max_bytes` of them but always at
    /// least one.
    fn entries_between(&self, from: Index, upto: Index, max_bytes: u64) -> &[Entry] {
        &self.entries[self.positions_between(from, upto, max_bytes)]
    }

    /// Where [`entries_between`](Self::entries_between)'s entries are in `entries`.
    fn positions_between(&self, from: Index, upto: Index, max_bytes: u64) -> Range<usize> {
        let upto = upto.min(self.last_index());
        if from < self.first_index() || from > upto {
            return 0..0;
        }
        let start = (from - self.first_index()) as usize;
        let stop = (upto - self.first_index()) as usize + 1;
        let mut end = start;
        let mut bytes = 0u64;
        while end < stop {
            bytes += self.entries[end].size();
            if end > start && bytes > max_bytes {
                break;
            }
            end += 1;
        }
        start..end
    }

    /// Appends entries that directly follow the last one (the leader's own entries), moving
    /// them in without a collection of their own.
    pub(crate) fn append(&mut self, new: impl IntoIterator<Item = Entry>) {
        let start = self.entries.len();
        self.entries.extend(new);
        let Some(first) = self.entries.get(start) else {
            return;
        };
        assert_eq!(
            first.index,
            self.snapshot.index + start as u64 + 1,
            "leader appends must extend the log"
        );
        let first = first.index;
        self.note_unpersisted(first);
        self.confs.extend(conf_changes(&self.entries[start..]));
    }

    /// The index of the first entry in `new` that is not already in the log with the same term,
    /// or `None` if every one of them is. `new` must be contiguous.
    pub(crate) fn find_conflict(&self, new: &[Entry]) -> Option<Index> {
        new.iter()
            .find(|e| !self.matches(e.index, e.term))
            .map(|e| e.index)
    }

    /// Makes the log hold `new` (contiguous, directly after an entry that matches) by dropping
    /// every entry from the first conflict on and moving in the rest. The caller has checked
    /// that no committed entry conflicts.
    /// Returns `new`, emptied of what it moved in, for reuse.
    pub(crate) fn append_after_match(&mut self, mut new: Vec<Entry>) -> Vec<Entry> {
        let Some(conflict) = self.find_conflict(&new) else {
            return new;
        };
        debug_assert!(
            conflict > self.committed,
            "a committed entry may never be overwritten"
        );
        let Some(first_new) = new.first() else {
            return new;
        };
        let skip = (conflict - first_new.index) as usize;
        if conflict <= self.last_index() {
            self.entries
                .truncate((conflict - self.first_index()) as usize);
            self.persisted = self.persisted.min(conflict - 1);
            // A truncated configuration entry no longer is in force.
            self.confs.retain(|(i, _)| *i < conflict);
        }
        self.note_unpersisted(conflict);
        self.confs.extend(conf_changes(&new[skip..]));
        self.entries.extend(new.drain(skip..));
        new
    }

    pub(crate) fn has_unpersisted(&self) -> bool {
        self.unpersisted_from.is_some() || self.unwritten_snapshot.is_some()
    }

    fn note_unpersisted(&mut self, from: Index) {
        self.unpersisted_from = Some(self.unpersisted_from.map_or(from, |f| f.min(from)));
    }

    /// Hands out the entries that changed since the last write was asked for, and forgets them
    /// as pending. Returns the entries to write (possibly none).
    pub(crate) fn take_unpersisted(&mut self) -> &[Entry] {
        match self.unpersisted_from.take() {
            Some(from) if from <= self.last_index() => {
                let start = (from - self.first_index()) as usize;
                &self.entries[start..]
            }
            _ => &[],
        }
    }

    /// A write holding entries up to `(index, term)` is durable. If that entry has since been
    /// replaced, the write no longer says anything about this log and is ignored: an
    /// `(index, term)` pair names one entry cluster-wide, so a match means the whole prefix matches.
    pub(crate) fn persisted_to(&mut self, index: Index, term: Term) {
        if index > self.persisted && self.matches(index, term) {
            self.persisted = index;
        }
    }

    /// Advances the commit index; never moves it back.
    pub(crate) fn commit_to(&mut self, index: Index) -> bool {
        if index > self.committed {
            assert!(
                index <= self.last_index(),
                "commit index {index} beyond last index {}",
                self.last_index()
            );
            self.committed = index;
            true
        } else {
            false
        }
    }

    /// Committed entries that are durable here and not yet handed out, marking them handed out.
    pub(crate) fn take_committed(&mut self, max_bytes: u64) -> &[Entry] {
        let upto = self.committed.min(self.persisted);
        if upto <= self.applying {
            return &[];
        }
        let positions = self.positions_between(self.applying + 1, upto, max_bytes);
        let out = &self.entries[positions];
        if let Some(last) = out.last() {
            debug_assert_eq!(last.index, self.applying + out.len() as u64);
            self.applying = last.index;
        }
        out
    }

    /// For fast backtracking (Raft §5.3, the optimisation in etcd-raft's `findConflictByTerm`):
    /// the last index at or below `index` whose term is at most `term`, with its term. Every
    /// entry between it and `index` has a higher term, so it cannot match a log whose entry at
    /// `index` has term `term`. `None` if the search runs below the snapshot: the answer is in
    /// the compacted part, of which only the snapshot's last entry is known.
    pub(crate) fn find_conflict_by_term(&self, index: Index, term: Term) -> Option<(Index, Term)> {
        let mut i = index.min(self.last_index());
        loop {
            match self.term(i) {
                Some(t) if t > term => i -= 1,
                Some(t) => return Some((i, t)),
                None => return None,
            }
        }
    }

    /// Panics if the log's indexes are inconsistent (called after every change in debug
    /// builds, through `RawNode::debug_assert_invariants`).
    pub(crate) fn assert_invariants(&self) {
        let snapshot = self.snapshot.index;
        let last = self.last_index();
        if let (Some(first), Some(tail)) = (self.entries.first(), self.entries.last()) {
            assert_eq!(
                first.index,
                snapshot + 1,
                "the log starts right after the snapshot"
            );
            assert_eq!(tail.index, last, "the log is contiguous");
            assert!(
                first.term >= self.snapshot.term && tail.term >= first.term,
                "terms never decrease along the log"
            );
        }
        assert!(
            snapshot <= self.applying && self.applying <= self.committed && self.committed <= last,
            "need snapshot {snapshot} <= applying {} <= committed {} <= last index {last}",
            self.applying,
            self.committed
        );
        assert!(
            self.applying <= self.persisted && self.persisted <= last,
            "need applying {} <= persisted {} <= last index {last}",
            self.applying,
            self.persisted
        );
        if let Some(from) = self.unpersisted_from {
            assert!(
                from > snapshot && from > self.persisted,
                "unwritten entries from {from} must follow the snapshot {snapshot} and the \
                 durable prefix {}",
                self.persisted
            );
        }
        if let Some(unwritten) = &self.unwritten_snapshot {
            assert_eq!(
                unwritten, &self.snapshot,
                "an unwritten snapshot is the log start"
            );
        }
        assert_eq!(
            self.confs,
            conf_changes(&self.entries),
            "the configurations tracked are those of the log's entries"
        );
    }

    pub(crate) fn all_entries(&self) -> &[Entry] {
        &self.entries
    }
}

/// The configuration-change entries among `entries`, decoded. Their payloads were checked when
/// they entered the core (a peer's append, a restart state) or built by this leader, so one
/// that does not decode cannot occur; it would be skipped rather than trusted.
fn conf_changes(entries: &[Entry]) -> Vec<(Index, Membership)> {
    entries
        .iter()
        .filter(|e| e.kind == EntryKind::ConfChange)
        .filter_map(|e| {
            let decoded = ConfChangeEntry::decode(&e.payload);
            debug_assert!(decoded.is_ok(), "undecodable conf change at {}", e.index);
            decoded.ok().map(|c| (e.index, c.membership))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EntryKind;
    use bytes::Bytes;

    fn e(index: Index, term: Term) -> Entry {
        Entry::new(term, index, EntryKind::Normal, Bytes::new())
    }

    fn log_of(terms: &[Term]) -> RaftLog {
        let entries = terms
            .iter()
            .enumerate()
            .map(|(i, t)| e(i as u64 + 1, *t))
            .collect();
        RaftLog::restore(SnapshotMeta::default(), entries, 0, 0)
    }

    #[test]
    fn up_to_date_compares_last_term_then_index() {
        let log = log_of(&[1, 2, 2]);
        assert!(log.is_up_to_date(1, 3));
        assert!(log.is_up_to_date(3, 2));
        assert!(log.is_up_to_date(4, 2));
        assert!(!log.is_up_to_date(2, 2));
        assert!(!log.is_up_to_date(10, 1));
    }

    #[test]
    fn conflicting_suffix_is_replaced_and_persisted_index_drops() {
        let mut log = log_of(&[1, 1, 1, 1]);
        assert_eq!(log.persisted(), 4);
        log.append_after_match(vec![e(2, 1), e(3, 2)]);
        assert_eq!(log.last_index(), 3);
        assert_eq!(log.term(3), Some(2));
        assert_eq!(log.persisted(), 2);
        let write = log.take_unpersisted();
        assert_eq!(write.iter().map(|e| e.index).collect::<Vec<_>>(), vec![3]);
    }

    #[test]
    fn matching_entries_are_not_rewritten() {
        let mut log = log_of(&[1, 1, 1]);
        log.append_after_match(vec![e(1, 1), e(2, 1)]);
        assert_eq!(log.last_index(), 3);
        assert!(log.take_unpersisted().is_empty());
    }

    #[test]
    fn persisted_ack_for_a_replaced_entry_is_ignored() {
        let mut log = log_of(&[1]);
        log.append(vec![e(2, 1)]);
        let _ = log.take_unpersisted();
        log.append_after_match(vec![e(2, 2)]);
        log.persisted_to(2, 1);
        assert_eq!(log.persisted(), 1);
        log.persisted_to(2, 2);
        assert_eq!(log.persisted(), 2);
    }

    #[test]
    fn committed_entries_wait_for_local_durability() {
        let mut log = log_of(&[1]);
        log.append(vec![e(2, 1), e(3, 1)]);
        log.commit_to(3);
        assert_eq!(log.take_committed(u64::MAX).len(), 1);
        log.persisted_to(3, 1);
        let rest = log.take_committed(u64::MAX);
        assert_eq!(rest.iter().map(|e| e.index).collect::<Vec<_>>(), vec![2, 3]);
    }

    #[test]
    fn conflict_by_term_skips_entries_of_higher_terms() {
        let log = log_of(&[1, 1, 4, 4, 5]);
        assert_eq!(log.find_conflict_by_term(5, 3), Some((2, 1)));
        assert_eq!(log.find_conflict_by_term(5, 5), Some((5, 5)));
        assert_eq!(log.find_conflict_by_term(9, 4), Some((4, 4)));
        assert_eq!(log.find_conflict_by_term(2, 0), Some((0, 0)));
    }

    #[test]
    fn conflict_by_term_below_the_snapshot_is_unknown() {
        let mut log = log_of(&[1, 2, 3, 3]);
        log.commit_to(4);
        log.compact(2);
        assert_eq!(log.find_conflict_by_term(4, 3), Some((4, 3)));
        assert_eq!(log.find_conflict_by_term(4, 2), Some((2, 2)));
        assert_eq!(log.find_conflict_by_term(4, 1), None);
    }

    #[test]
    fn compaction_keeps_the_tail_and_the_last_compacted_term() {
        let mut log = log_of(&[1, 1, 2, 2]);
        log.commit_to(4);
        log.compact(3);
        assert_eq!(log.first_index(), 4);
        assert_eq!(
            log.snapshot(),
            &SnapshotMeta::new(3, 2, Membership::default())
        );
        assert_eq!(log.term(3), Some(2));
        assert_eq!(log.term(2), None);
        assert_eq!(log.last_index(), 4);
        assert_eq!(log.entries_from(4, u64::MAX).len(), 1);
    }

    #[test]
    fn an_installed_snapshot_replaces_the_log_and_is_written_once() {
        let mut log = log_of(&[1, 1, 1]);
        log.install_snapshot(SnapshotMeta::new(9, 4, Membership::default()));
        assert_eq!((log.last_index(), log.last_term()), (9, 4));
        assert_eq!(
            (log.committed(), log.applying(), log.persisted()),
            (9, 9, 9)
        );
        assert!(log.has_unpersisted());
        assert_eq!(
            log.take_unwritten_snapshot(),
            Some(SnapshotMeta::new(9, 4, Membership::default()))
        );
        assert!(log.take_unpersisted().is_empty());
        assert!(!log.has_unpersisted());
    }

    #[test]
    fn batches_respect_max_bytes_but_send_at_least_one() {
        let log = log_of(&[1, 1, 1, 1]);
        assert_eq!(log.entries_from(1, 0).len(), 1);
        assert_eq!(
            log.entries_from(1, 2 * crate::ENTRY_OVERHEAD_BYTES).len(),
            2
        );
        assert_eq!(log.entries_from(5, u64::MAX).len(), 0);
    }

    #[test]
    fn the_invariants_hold_through_appends_commits_and_compaction() {
        let mut log = log_of(&[1, 1, 2]);
        log.assert_invariants();
        log.append(vec![e(4, 2)]);
        log.commit_to(3);
        let _ = log.take_committed(u64::MAX);
        log.compact(2);
        log.assert_invariants();
    }

    #[test]
    #[should_panic(expected = "applying")]
    fn handing_out_beyond_the_commit_index_is_caught() {
        let mut log = log_of(&[1, 1]);
        log.applying = 2;
        log.assert_invariants();
    }

    #[test]
    #[should_panic(expected = "persisted")]
    fn a_durable_index_beyond_the_log_is_caught() {
        let mut log = log_of(&[1]);
        log.persisted = 2;
        log.assert_invariants();
    }

    #[test]
    #[should_panic(expected = "the log starts right after the snapshot")]
    fn a_log_not_starting_after_its_snapshot_is_caught() {
        let mut log = log_of(&[1, 1]);
        log.snapshot = SnapshotMeta::new(1, 1, Membership::default());
        log.assert_invariants();
    }
}
