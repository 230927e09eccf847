//! A pure, IO-free Raft state machine.
//!
//! Feed events in, take actions out. A [`RawNode`] takes ticks ([`RawNode::tick`]), messages
//! from peers ([`RawNode::step`]), client requests ([`RawNode::propose`],
//! [`RawNode::read_index`]) and completion reports ([`RawNode::on_persisted`],
//! [`RawNode::on_applied`]). After any of them, [`RawNode::take_ready`] returns a [`Ready`]:
//! what to write to stable storage, what to send, what to apply, which reads became servable.
//! It never does IO, never reads a clock, and draws randomness only from the seed in its
//! [`Config`], so the same inputs give the same outputs.
//!
//! The contract is built so that a driver cannot get durability wrong by acting too early:
//! - every message in a `Ready` is safe to send at once: vote grants and append acknowledgements
//!   are held inside the core until the write that makes them true is reported durable;
//! - every committed entry in a `Ready` is durable locally, so it is safe to apply at once;
//! - writes (`Ready::snapshot_write`, then `Ready::persist`) must be made durable in order and
//!   reported with their [`WriteId`];
//!   the leader writes its own log while followers replicate it, and counts itself toward a
//!   quorum only once its write is reported.
//!
//! # A driver loop
//!
//! Three nodes on an in-memory network, committing one entry. Each round, each node hands out
//! its `Ready`s until it has none left: acting on one (reporting a write durable, above all)
//! often makes the next one ready at once, for example the acknowledgement the write was
//! holding back. A driver that took one `Ready` per round would send every acknowledgement a
//! round late.
//!
//! ```
//! use std::collections::BTreeMap;
//! use bytes::Bytes;
//! use raft_core::{Config, Entry, RawNode, Role};
//!
//! let ids = vec![1, 2, 3];
//! let mut nodes: BTreeMap<u64, RawNode> = ids
//!     .iter()
//!     .map(|&id| (id, RawNode::new(Config::new(id, ids.clone())).unwrap()))
//!     .collect();
//! let mut disks: BTreeMap<u64, Vec<Entry>> = BTreeMap::new();
//! let mut applied: BTreeMap<u64, Vec<Entry>> = BTreeMap::new();
//! let mut network = Vec::new();
//!
//! nodes.get_mut(&1).unwrap().campaign();
//! let mut proposed = false;
//! for _round in 0..20 {
//!     for (&id, node) in nodes.iter_mut() {
//!         while node.has_ready() {
//!             let ready = node.take_ready();
//!             // No snapshots in this example; a driver installs `ready.snapshot_write` here,
//!             // before `ready.persist`.
//!             if let Some(write) = ready.persist {
//!                 // A real driver writes atomically and fsyncs here, then reports completion.
//!                 let disk = disks.entry(id).or_default();
//!                 if let Some(from) = write.overwrite_from() {
//!                     disk.truncate(from as usize - 1);
//!                 }
//!                 disk.extend(write.entries);
//!                 node.on_persisted(write.id);
//!             }
//!             network.extend(ready.messages);
//!             let state_machine = applied.entry(id).or_default();
//!             if let Some(last) = ready.committed.last() {
//!                 let last = last.index;
//!                 state_machine.extend(ready.committed);
//!                 node.on_applied(last);
//!             }
//!         }
//!     }
//!     for msg in std::mem::take(&mut network) {
//!         nodes.get_mut(&msg.to).unwrap().step(msg);
//!     }
//!     let leader = nodes.get_mut(&1).unwrap();
//!     if !proposed && leader.role() == Role::Leader {
//!         leader.propose(Bytes::from_static(b"hello")).unwrap();
//!         proposed = true;
//!     }
//! }
//! // Every node applied the leader's no-op and then the proposal.
//! for entries in applied.values() {
//!     assert_eq!(entries.last().unwrap().payload, Bytes::from_static(b"hello"));
//! }
//! ```
//!
//! `examples/three_mem_nodes.rs` is a longer version that also serves a linearizable read.
//!
//! # Memory: the log since the last snapshot
//!
//! The core keeps every entry after its last snapshot in memory (the leader serves followers
//! from it, and committed entries are handed out from it), so its memory grows by each entry's
//! payload plus about [`ENTRY_OVERHEAD_BYTES`] and a `Vec` slot until the log is compacted. The
//! driver bounds it: once the state machine has applied (and durably snapshotted) up to some
//! index, it calls [`RawNode::compact`] with that index, dropping the entries up to it from
//! memory (and drops them from its own storage too). A follower that then needs them gets the
//! snapshot instead. A typical policy compacts once the log since the snapshot passes a byte or
//! entry count, keeping a short tail so that slightly lagging followers still catch up from the
//! log. `Config::max_uncommitted_bytes` bounds the part of the log that is not committed yet.
//!
//! # Where the Raft rules live
//!
//! | rule | file |
//! | --- | --- |
//! | election timeout, campaign, RequestVote, pre-vote, check-quorum | `election.rs` |
//! | AppendEntries (both sides), commit rule, heartbeats | `replication.rs` |
//! | probe/replicate, in-flight window | `progress.rs` |
//! | majorities, joint-aware | `quorum.rs` |
//! | the configuration, its codec, conf-change entries | `membership.rs` |
//! | proposing configuration changes, auto-leave, a removed leader stepping down | `conf_change.rs` |
//! | leadership transfer | `transfer.rs` |
//! | ReadIndex | `read_index.rs` |
//! | lease reads, the followers' side of a lease | `lease.rs` |
//! | compaction, sending and installing snapshots | `snapshot.rs` |
//! | the in-memory log, conflict search, up-to-date check | `log.rs` |
//! | term rules for every message, when the election timer restarts | `step.rs` |
//! | writes in order, messages held until durable | `durability.rs` |
//! | the node's state, inputs other than messages, `Ready` | `node.rs` |
//! | breaches caused by peers or the driver, asserted invariants | `safety.rs` |
//! | checks on peers' messages and on restart states | `validate.rs` |
//! | the seeded PRNG (randomized election timeouts), its output specified | `rng.rs` |

#![deny(missing_docs)]

#[cfg(feature = "deliberate-bugs")]
pub mod bugs;
#[cfg(not(feature = "deliberate-bugs"))]
mod bugs;
pub mod clock;
pub mod codec;
mod conf_change;
mod config;
mod durability;
mod election;
mod error;
mod lease;
mod log;
mod membership;
mod message;
mod node;
mod progress;
mod quorum;
mod read_index;
mod ready;
mod replication;
pub mod rng;
mod safety;
mod snapshot;
mod spares;
mod step;
mod transfer;
mod types;
mod validate;

pub use config::{Config, ReadMode};
pub use error::{CompactError, ConfigError, ProposeError};
pub use membership::{ConfChangeEntry, MemberChange, Membership, MEMBERSHIP_FORMAT};
pub use message::{Message, MessageBody};
pub use node::{PeerProgress, Proposed, RawNode};
pub use ready::{
    ChangeReason, Persist, ReadState, Ready, SnapshotToFetch, SnapshotWrite, SoftState, WriteId,
};
pub use rng::SeededRng;
pub use safety::SafetyViolation;
pub use types::{
    Entry, EntryKind, HardState, Index, NodeId, RestartState, Role, SnapshotMeta, Term,
    ENTRY_OVERHEAD_BYTES,
};
