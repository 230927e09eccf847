//! Building one Raft group from what storage found: the first range's at start, each other
//! range's at start and when a split creates it here. One function for all, so that every
//! group of a node has the same configuration, address book, peer gate and read mode.

use std::path::PathBuf;
use std::sync::Arc;

use kv::ranges::RangeId;
use kv::MemberTable;
use raft_core::{Config, EntryKind, Index, RawNode, RestartState, SnapshotMeta};
use tokio::sync::watch;

use super::config::NodeConfig;
use super::group::{Fetcher, Group, StorageQueues};
use super::identity::PeerGate;
use super::membership::{self, Members, PeerSpawner};
use crate::error::{NodeError, StorageError};
use crate::storage::{ApplyRequest, RangeOnDisk, RangeQueue};

/// Where the node's configuration comes from at this start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Origin {
    /// A new cluster: the founding members (`--peers`) are the initial voters.
    Bootstrap,
    /// A node added to a running cluster, on an empty data directory: no configuration until
    /// the leader's snapshot or log brings one.
    Joining,
    /// The data directory's: the log start's configuration and the log, else the applied table.
    DataDir,
}

/// What one group is built from.
pub(super) struct GroupStart {
    pub range: RangeId,
    /// The log as loaded, its applied index not yet raised to the state machine's.
    pub logged: RestartState,
    pub origin: Origin,
    /// The state machine's member table, applied index and newest image (index 0: none).
    pub members: MemberTable,
    pub applied_index: Index,
    pub image: SnapshotMeta,
    /// Where the group publishes its configuration for join requests (the first range's
    /// answers them; another range's goes nowhere).
    pub published: watch::Sender<MemberTable>,
}

impl GroupStart {
    /// A range other than the first, as its state machine and its log were found: no image
    /// (ranges split off the first take none yet), and nobody to publish its configuration to.
    pub(super) fn split_range(state: &RangeOnDisk, logged: RestartState) -> Self {
        Self {
            range: state.descriptor.id,
            logged,
            origin: Origin::DataDir,
            members: state.members.clone(),
            applied_index: state.applied_index,
            image: SnapshotMeta::default(),
            published: watch::channel(MemberTable::default()).0,
        }
    }
}

/// Builds the node's groups; the store keeps it to build the groups splits create.
pub(super) struct GroupBuilder {
    pub cfg: NodeConfig,
    pub gate: Arc<PeerGate>,
    /// A new address book's outbound peers, one spawner per group.
    pub spawn_peers: Box<dyn Fn() -> PeerSpawner + Send + Sync>,
    /// A group's snapshot fetcher, feeding its range's apply queue.
    pub fetcher: Box<dyn Fn(RangeQueue<ApplyRequest>) -> Fetcher + Send + Sync>,
    /// The first range's queues to the storage threads; other ranges' are these, re-tagged.
    pub queues: StorageQueues,
    /// The databases' paths, for messages.
    pub log_path: PathBuf,
    pub state_path: PathBuf,
}

impl GroupBuilder {
    /// The group of `start.range`, its core restarted from what storage found.
    pub fn build(&self, start: GroupStart) -> Result<Group, NodeError> {
        let cfg = &self.cfg;
        let restart = kv::restart_state_from(
            start.logged,
            &self.log_path,
            start.applied_index,
            &self.state_path,
        )
        .map_err(StorageError::kv(format!(
            "reading the state to restart range {} from",
            start.range
        )))?;
        let mut members = Members::new(
            cfg.id,
            start.members.clone(),
            start.applied_index,
            membership::command_line_book(cfg),
            (self.spawn_peers)(),
            start.published,
        );
        members.note_appended(&restart.entries);
        let core = restart_core(cfg, restart, start.origin, &start.members)?;
        members.maybe_follow(core.membership());
        let queues = self.queues.for_range(start.range);
        let fetcher = (self.fetcher)(queues.apply.clone());
        // Every report names the group's range (`NodeObserver`): the simulator checks each
        // range's log on its own.
        let mut group = Group::new(
            start.range,
            cfg.clone(),
            core,
            queues,
            members,
            fetcher,
            (start.applied_index, start.image),
        );
        group.peer_gate = Some(self.gate.clone());
        Ok(group)
    }
}

/// The core, from the configuration and what storage found. A restart's configuration is the
/// log start's and the log's; where neither holds one (nothing compacted, no conf change yet)
/// it is the applied table's, which is then the configuration at the log start too.
fn restart_core(
    cfg: &NodeConfig,
    mut restart: RestartState,
    origin: Origin,
    table: &MemberTable,
) -> Result<RawNode, NodeError> {
    let voters = match origin {
        Origin::Bootstrap => cfg.peers.keys().copied().collect(),
        Origin::Joining => Vec::new(),
        Origin::DataDir if table.membership.is_empty() => cfg.peers.keys().copied().collect(),
        Origin::DataDir => {
            let log_has_conf = restart
                .entries
                .iter()
                .any(|e| e.kind == EntryKind::ConfChange);
            if restart.snapshot.membership.is_empty() && !log_has_conf {
                restart.snapshot.membership = table.membership.clone();
            }
            Vec::new()
        }
    };
    let mut core_cfg = Config::new(cfg.id, voters);
    core_cfg.election_ticks = cfg.election_ticks;
    core_cfg.heartbeat_ticks = cfg.heartbeat_ticks;
    core_cfg.read_mode = cfg.read_mode;
    core_cfg.seed = cfg.seed;
    // Clients reach any node; their writes are recognised by (client id, seq) when they commit,
    // and time out and retry, so a forwarded proposal that is lost costs only a retry.
    core_cfg.forward_to_leader = true;
    // Key expiry decides from time carried in the log (kv's state machine).
    core_cfg.clock_stamps = true;
    #[cfg(feature = "test-switches")]
    {
        core_cfg.bugs = cfg.unsafe_switches.raft;
        core_cfg.clock_stamps = !cfg.unsafe_switches.no_clock_stamps;
    }
    RawNode::restart(core_cfg, restart).map_err(NodeError::Core)
}
