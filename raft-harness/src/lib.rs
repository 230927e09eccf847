//! A seeded cluster of `raft-core` nodes on an in-memory network and simulated disks, for tests.
//!
//! The test (or the random schedule of [`random_run`]) decides every event: which node ticks,
//! which message is delivered (in any order, dropped, duplicated or delayed), which write
//! reaches the disk, who crashes (losing every write not yet durable) and who restarts (from its
//! disk only), and how the network is partitioned. After every event an [`InvariantChecker`]
//! verifies Raft's safety properties; a broken one is returned as a [`Violation`].
//!
//! Snapshots: a node's "state machine" is the list of entries it applied, and a snapshot is a
//! prefix of that list, kept on its disk beside the log. A test compacts a node with
//! [`Cluster::compact`] (random runs do it on their own for some seeds); the harness plays the
//! driver for snapshot transfers: it fetches the leader's durable prefix, stages it, and
//! installs it when the core asks for the write.
//!
//! The [`InvariantChecker`] is public and knows nothing of this harness: any driver of
//! `raft-core` can feed it what its nodes do, as a conformance check (the simulator's observer
//! does, with the real node, storage and network).
//!
//! Everything is drawn from one seeded RNG and kept in ordered maps, so a seed replays exactly.
//!
//! This crate turns on raft-core's `deliberate-bugs` feature, so that tests can show each
//! deliberate bug caught; it is never a dependency of a product.

mod checks;
mod cluster;
pub mod invariants;
mod membership;
mod random_membership;
mod random_run;
mod slow_replies;

pub use cluster::{Cluster, Compaction, Faults, SimNode, SlowReplies};
pub use invariants::{InvariantChecker, Violation};
pub use random_run::{random_run, Failure, RunStats, FAULT_STEPS, LIVENESS_STEPS};
pub use slow_replies::{slow_reply_run, steps_per_election_timeout};
