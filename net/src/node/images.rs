//! A group's snapshot images and the compaction points they make: an image the state machine
//! took is durable with everything applied up to it, so once `policy.tail` more entries are
//! applied the log may drop everything up to it. Only images are compaction points: a follower
//! that needs the compacted entries gets the newest image, which is at or after the log start.

use raft_core::Index;

use crate::storage::SnapshotPolicy;

/// Images kept as compaction points at most (a tail far longer than the threshold would
/// otherwise collect one per threshold entries); the oldest are forgotten first.
const MAX_UNCOMPACTED_IMAGES: usize = 64;

pub struct Images {
    policy: SnapshotPolicy,
    /// Images taken and not yet compacted to, in index order.
    uncompacted: Vec<Index>,
    /// The newest image in the data directory (taken here or installed).
    newest: Index,
    /// Taken since this process started.
    taken: u64,
}

impl Images {
    /// `newest` is the image found at start; if it is newer than the log start it is a
    /// compaction point too (it was taken before a restart).
    pub fn new(policy: SnapshotPolicy, newest: Index, log_start: Index) -> Self {
        let uncompacted = if newest > log_start {
            vec![newest]
        } else {
            Vec::new()
        };
        Self {
            policy,
            uncompacted,
            newest,
            taken: 0,
        }
    }

    /// The state machine took an image of everything applied up to `index`.
    pub fn taken(&mut self, index: Index) {
        self.taken += 1;
        self.newest = self.newest.max(index);
        self.uncompacted.push(index);
        if self.uncompacted.len() > MAX_UNCOMPACTED_IMAGES {
            self.uncompacted.remove(0);
        }
    }

    /// A snapshot was installed up to `index`: older images are no compaction points.
    pub fn installing(&mut self, index: Index) {
        self.uncompacted.retain(|&i| i > index);
    }

    pub fn installed(&mut self, index: Index) {
        self.newest = index;
    }

    /// The newest image that `applied_index` has passed by the policy's tail, to compact the
    /// log up to; it and older images are then forgotten.
    pub fn compaction_point(&mut self, applied_index: Index) -> Option<Index> {
        let tail = self.policy.tail;
        let up_to = *self
            .uncompacted
            .iter()
            .rev()
            .find(|&&i| i.saturating_add(tail) <= applied_index)?;
        self.uncompacted.retain(|&i| i > up_to);
        Some(up_to)
    }

    pub fn newest(&self) -> Index {
        self.newest
    }

    pub fn taken_count(&self) -> u64 {
        self.taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_image_the_tail_has_passed_is_the_compaction_point() {
        let policy = SnapshotPolicy {
            tail: 10,
            ..SnapshotPolicy::default()
        };
        let mut images = Images::new(policy, 0, 0);
        images.taken(100);
        images.taken(200);
        assert_eq!(images.compaction_point(109), None);
        assert_eq!(images.compaction_point(215), Some(200));
        assert_eq!(images.compaction_point(400), None, "100 went with 200");
        assert_eq!((images.newest(), images.taken_count()), (200, 2));
    }
}
