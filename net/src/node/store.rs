//! The process level of a node: the Raft groups it hosts, by range id, and what they share: the
//! storage threads (joined at shutdown), the serving of snapshot images to peers, and the
//! routing of peer messages to the group of their range.
//!
//! Groups sit in a `BTreeMap` so that every pass over them (ticks, draining `Ready`s) goes in
//! range order, the same on every run. A node starts with the first range and each range its
//! data directory holds; a split applied here adds the new range's group
//! ([`Store::on_storage_event`]): the apply worker opens the child's state machine and reports
//! it, the log worker opens the child's log and reports it, and the store builds the group as
//! start builds every group. The node loop never waits on a storage thread for it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kv::ranges::{RangeDescriptor, RangeId, RangeTable, FIRST_RANGE};
use raft_core::NodeId;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use super::admin::AdminRequest;
use super::config::NodeConfig;
use super::group::Group;
use super::group_builder::{GroupBuilder, GroupStart};
use super::leader_spread::LeaderSpreading;
use super::member_follow::{self, MemberFollowing};
use super::snapshot_install::SnapshotEvent;
use crate::error::{NodeError, ServeError};
use crate::metrics::NodeMetrics;
use crate::request::{ClientRequest, RoutedRequest};
use crate::snapshot_transfer::ServeRequest;
use crate::storage::{self, LogRequest, RangeOnDisk, StorageEvent, StorageMode, Worker};
use crate::transport::RangeMessage;

pub struct Store {
    id: NodeId,
    pub(super) tick: Duration,
    #[cfg(feature = "test-switches")]
    pub(super) pause: super::config::PauseSwitch,
    storage: StorageMode,
    data_dir: PathBuf,
    workers: Vec<Worker>,
    /// Transfers this node may serve at once; a request beyond them is refused (the follower
    /// asks again later), so that no peer can make it open readers without bound.
    serving: Arc<Semaphore>,
    /// Always holds [`FIRST_RANGE`].
    groups: BTreeMap<RangeId, Group>,
    /// Each hosted range's descriptor as applied here (and the first range's from the start).
    descriptors: BTreeMap<RangeId, RangeDescriptor>,
    /// Builds the groups that splits create here.
    builder: GroupBuilder,
    unhosted: UnhostedRanges,
    metrics: Arc<NodeMetrics>,
    /// Where the hosted ranges are published for the client port's routing.
    ranges: watch::Sender<Arc<RangeTable>>,
    /// Hands each range's leadership to its preferred voter (`leader_spread.rs`).
    spreading: LeaderSpreading,
    /// Makes every range's configuration follow the first range's (`member_follow.rs`).
    following: MemberFollowing,
}

impl Store {
    /// A store hosting `groups` (the first range's among them), with their descriptors.
    pub fn new(
        cfg: &NodeConfig,
        workers: Vec<Worker>,
        serving: Arc<Semaphore>,
        groups: Vec<(Group, RangeDescriptor)>,
        ranges: watch::Sender<Arc<RangeTable>>,
        builder: GroupBuilder,
    ) -> Self {
        let mut store = Self {
            id: cfg.id,
            tick: cfg.tick,
            #[cfg(feature = "test-switches")]
            pause: cfg.pause.clone(),
            storage: cfg.storage.clone(),
            data_dir: cfg.data_dir.clone(),
            workers,
            serving,
            groups: BTreeMap::new(),
            descriptors: BTreeMap::new(),
            builder,
            unhosted: UnhostedRanges::default(),
            metrics: cfg.metrics.clone(),
            ranges,
            spreading: LeaderSpreading::default(),
            following: MemberFollowing::default(),
        };
        for (group, descriptor) in groups {
            store.descriptors.insert(group.range, descriptor);
            store.groups.insert(group.range, group);
        }
        debug_assert!(store.groups.contains_key(&FIRST_RANGE));
        store.publish_ranges();
        store
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Hands a storage event to the group of its range, or, for a split's new range, opens
    /// its log or builds its group. An event for a range not hosted here is dropped (its
    /// group stopped, or it was never built).
    pub fn on_storage_event(
        &mut self,
        range: RangeId,
        event: StorageEvent,
    ) -> Result<(), NodeError> {
        match event {
            StorageEvent::RangeCreated { parent, child } => {
                self.range_created(parent, child);
                Ok(())
            }
            StorageEvent::RangeLogOpened { state, restart } => {
                self.range_log_opened(state, *restart)
            }
            StorageEvent::Failed(error) => {
                tracing::error!(id = self.id, range, %error, "storage failed; stopping the node");
                Err(NodeError::Storage(error))
            }
            event => match self.groups.get_mut(&range) {
                Some(group) => group.on_storage_event(event),
                None => {
                    tracing::debug!(
                        id = self.id,
                        range,
                        ?event,
                        "storage event for a range not hosted"
                    );
                    Ok(())
                }
            },
        }
    }

    /// A split applied here shrank `parent` and created `child`: the child's log is opened
    /// (and given its start) by the log worker, which answers with `RangeLogOpened`.
    fn range_created(&mut self, parent: RangeDescriptor, child: RangeOnDisk) {
        tracing::info!(
            id = self.id,
            parent = parent.id,
            child = child.descriptor.id,
            at = %kv::ranges::show_key(&child.descriptor.start),
            "a split created a range; opening its log"
        );
        if let Some(known) = self.descriptors.get_mut(&parent.id) {
            *known = parent;
            self.publish_ranges();
        }
        if self.groups.contains_key(&child.descriptor.id) {
            return;
        }
        let _ =
            self.builder
                .queues
                .log
                .for_range(child.descriptor.id)
                .send(LogRequest::OpenRange {
                    state: child,
                    reply: None,
                });
    }

    /// A split's new range has its log: its group is built, as start builds every group.
    fn range_log_opened(
        &mut self,
        state: RangeOnDisk,
        logged: raft_core::RestartState,
    ) -> Result<(), NodeError> {
        let range = state.descriptor.id;
        if self.groups.contains_key(&range) {
            return Ok(());
        }
        let group = self
            .builder
            .build(GroupStart::split_range(&state, logged))?;
        tracing::info!(
            id = self.id,
            range,
            term = group.core.term(),
            "hosting a range created by a split"
        );
        self.groups.insert(range, group);
        self.descriptors.insert(range, state.descriptor);
        if self.groups.len() == 2 {
            tracing::warn!(
                id = self.id,
                "this node hosts several ranges: snapshot images, installs and log compaction \
                 are paused until per-range images exist"
            );
        }
        self.publish_ranges();
        Ok(())
    }

    /// Hands a peer's message to the group of its range. A message for a range this node does
    /// not host is dropped and counted, and logged once per range: Raft tolerates the loss,
    /// and the sender keeps trying until this node hosts the range.
    pub fn deliver(&mut self, message: RangeMessage) {
        match self.groups.get_mut(&message.range) {
            Some(group) => group.step(message.msg),
            None => {
                self.metrics.peer_messages_unhosted_range.inc();
                if self.unhosted.first_time(message.range) {
                    tracing::warn!(
                        id = self.id,
                        range = message.range,
                        from = message.msg.from,
                        "dropping peer messages for a range this node does not host"
                    );
                }
            }
        }
    }

    /// Hands a client request to the group of its range; a range this node does not host (the
    /// client port's table was stale, or the range is not created here yet) is refused with
    /// TRYAGAIN, and the client port looks its key up again.
    pub fn on_request(&mut self, routed: RoutedRequest) {
        if let ClientRequest::Admin {
            req: AdminRequest::ListMembers,
            ..
        } = &routed.req
        {
            member_follow::note_ranges_behind(&mut self.groups);
        }
        match self.groups.get_mut(&routed.range) {
            Some(group) => group.on_request(routed.req),
            None => routed.req.refuse(&format!(
                "range {} is not hosted on this node",
                routed.range
            )),
        }
    }

    /// Publishes the ranges this node hosts (as applied here) to the client port's routing.
    fn publish_ranges(&mut self) {
        let mut table = RangeTable::default();
        for descriptor in self.descriptors.values() {
            if let Err(conflict) = table.learn(descriptor.clone()) {
                // Descriptors applied here never overlap; if they did, the newer wins.
                tracing::error!(id = self.id, ?conflict, "hosted ranges overlap");
            }
        }
        self.metrics.ranges_hosted.set(self.groups.len() as i64);
        let several = self.groups.len() > 1;
        for group in self.groups.values_mut() {
            group.compaction_paused = several;
        }
        self.ranges.send_replace(Arc::new(table));
    }

    pub fn tick(&mut self, now: Instant) {
        for group in self.groups.values_mut() {
            group.tick(now);
        }
        self.spreading.on_tick(&mut self.groups);
        self.following.on_tick(&mut self.groups);
    }

    /// A peer's connection failed: every group that sends to it is told.
    pub fn report_unreachable(&mut self, peer: NodeId) {
        for group in self.groups.values_mut() {
            group.report_unreachable(peer);
        }
    }

    /// A transfer this node served ended: its range's group hears of it; every other event
    /// is about a snapshot install, which only the first range has.
    pub fn on_snapshot_event(&mut self, event: SnapshotEvent) {
        let range = match &event {
            SnapshotEvent::Sent { range, .. } => *range,
            _ => FIRST_RANGE,
        };
        if let Some(group) = self.groups.get_mut(&range) {
            group.on_snapshot_event(event);
        }
    }

    /// Lets every group act on its core's `Ready`s and publish its state.
    pub fn drain_ready(&mut self) {
        let mut led = 0;
        for group in self.groups.values_mut() {
            group.drain_ready();
            group.publish_status();
            led += i64::from(group.core.role() == raft_core::Role::Leader);
        }
        self.metrics.ranges_led.set(led);
    }

    /// A peer asks for the snapshot image of one of our ranges: a reader streams it to the
    /// peer's connection.
    pub fn serve_snapshot(&self, req: ServeRequest) {
        let range = req.request.range;
        if !self.groups.contains_key(&range) {
            let _ = req.chunks.try_send(Err(ServeError::NotHosted(range)));
            return;
        }
        if self.groups.len() > 1 {
            // The image is of the whole directory, and kv refuses it while ranges share it.
            let _ = req.chunks.try_send(Err(ServeError::ImagesPaused {
                range,
                hosted: self.groups.len(),
            }));
            return;
        }
        let Ok(permit) = self.serving.clone().try_acquire_owned() else {
            let _ = req.chunks.try_send(Err(ServeError::Busy));
            return;
        };
        tracing::info!(
            id = self.id,
            to = req.request.from,
            range,
            at_least = req.request.at_least.index,
            "serving a snapshot"
        );
        match storage::spawn_snapshot_reader(
            &self.storage,
            self.data_dir.clone(),
            req.request.at_least,
            req.chunks.clone(),
            permit,
        ) {
            // Detached: it ends with the transfer.
            Ok(_reader) => {}
            Err(e) => {
                let _ = req.chunks.try_send(Err(ServeError::Spawn(e)));
            }
        }
    }

    /// Stops every group (answering what waits and closing their storage queues), then waits
    /// for the storage threads to finish what is queued, flush and exit.
    pub async fn stop(self) {
        for group in self.groups.into_values() {
            group.stop();
        }
        // The builder holds the storage queues too: they close, and the threads end, only
        // once it is gone.
        drop(self.builder);
        for worker in self.workers {
            worker.join().await;
        }
    }
}

/// The ranges this node was sent messages for without hosting them, to log each once. A peer
/// could name any number of ranges: past [`UnhostedRanges::REMEMBERED`] of them, new ones are
/// counted but no longer logged.
#[derive(Default)]
struct UnhostedRanges {
    logged: BTreeSet<RangeId>,
}

impl UnhostedRanges {
    const REMEMBERED: usize = 1024;

    /// Whether messages for `range` are to be logged now: the first time it is seen.
    fn first_time(&mut self, range: RangeId) -> bool {
        if self.logged.len() >= Self::REMEMBERED {
            return false;
        }
        self.logged.insert(range)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_unhosted_range_is_logged_once_and_the_memory_is_bounded() {
        let mut unhosted = UnhostedRanges::default();
        assert!(unhosted.first_time(2));
        assert!(!unhosted.first_time(2));
        assert!(unhosted.first_time(3));
        for range in 4..10_000 {
            unhosted.first_time(range);
        }
        assert_eq!(unhosted.logged.len(), UnhostedRanges::REMEMBERED);
        assert!(
            !unhosted.first_time(20_000),
            "past the bound nothing is logged"
        );
    }
}
