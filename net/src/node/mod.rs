//! The node: the process-level parts ([`start`], [`store`]: storage threads, peer listener and
//! outbound queues, snapshot serving) and one Raft group ([`group`]: the core, its client
//! requests, apply progress, snapshot images and install), fed by one loop ([`run`]).
//!
//! | module | concern |
//! | --- | --- |
//! | [`config`] | `NodeConfig`, the observer hooks, the test switches |
//! | [`start`] | identity, storage threads, interrupted-install recovery, listeners, peers |
//! | [`identity`] | the data directory's identity, the bootstrap probe, the gate on peers' incarnations |
//! | [`store`] | process-level parts the group runs on: storage threads, serving snapshots |
//! | [`run`] | the loop: select over inputs, feed the group, drain the core's `Ready`s |
//! | [`group`] | one Raft group: feeds the core, acts on its `Ready`s |
//! | [`group_builder`] | one group from what storage found: at start, and for a split's new range |
//! | [`group_metrics`] | what the group publishes into the node's metrics: state, health, peers |
//! | [`tick_clock`] | in lease mode, the core's ticks made up to the clock's count |
//! | [`requests`] | client writes by `(client_id, seq)`, reads and their read context, parked requests |
//! | [`images`] | snapshot images taken, compaction points |
//! | [`membership`] | the address book, outbound peers following the configuration, removal |
//! | [`snapshot_install`] | fetch, stage, offer, install or discard: a state machine without IO |
//! | [`group_snapshots`] | the group carrying out the install state machine's actions |
//! | [`admin`] | operator requests: list and change the members, move the leadership |
//! | [`member_follow`] | on a split keyspace, every range's configuration following the first range's |
//! | [`admin_waits`] | operator requests waiting for their entry to apply, or for a new leader |

pub mod admin;
mod admin_waits;
mod change_reason;
pub mod config;
mod group;
mod group_builder;
mod group_metrics;
mod group_snapshots;
pub mod identity;
mod images;
mod leader_spread;
mod member_follow;
pub mod membership;
mod requests;
mod run;
pub mod snapshot_install;
mod start;
mod store;
mod tick_clock;

pub use crate::error::NodeError;
pub use crate::storage::SnapshotPolicy;
pub use config::{NodeConfig, NodeObserver, WallClock};
#[cfg(feature = "test-switches")]
pub use config::{PauseSwitch, UnsafeSwitches};
pub use identity::PeerGate;
pub use start::start;
