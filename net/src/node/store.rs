//! The process level of a node: the Raft groups it hosts, by range id, and what they share: the
//! storage threads (joined at shutdown), the serving of snapshot images to peers, and the
//! routing of peer messages to the group of their range.
//!
//! Groups sit in a `BTreeMap` so that every pass over them (ticks, draining `Ready`s) goes in
//! range order, the same on every run. Today a node hosts the first range alone; the storage
//! threads and the client port serve it (`first_group`), and a split will add groups here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kv::ranges::{RangeId, RangeTable, FIRST_RANGE};
use raft_core::NodeId;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use super::config::NodeConfig;
use super::group::Group;
use super::snapshot_install::SnapshotEvent;
use crate::error::ServeError;
use crate::metrics::NodeMetrics;
use crate::request::RoutedRequest;
use crate::snapshot_transfer::ServeRequest;
use crate::storage::{self, StorageMode, Worker};
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
    /// Always holds [`FIRST_RANGE`] (the storage threads' group).
    groups: BTreeMap<RangeId, Group>,
    unhosted: UnhostedRanges,
    metrics: Arc<NodeMetrics>,
    /// Where the hosted ranges are published for the client port's routing.
    ranges: watch::Sender<Arc<RangeTable>>,
}

impl Store {
    /// A store hosting `first`, the first range's group.
    pub fn new(
        cfg: &NodeConfig,
        workers: Vec<Worker>,
        serving: Arc<Semaphore>,
        first: Group,
        ranges: watch::Sender<Arc<RangeTable>>,
    ) -> Self {
        debug_assert_eq!(first.range, FIRST_RANGE);
        let store = Self {
            id: cfg.id,
            tick: cfg.tick,
            #[cfg(feature = "test-switches")]
            pause: cfg.pause.clone(),
            storage: cfg.storage.clone(),
            data_dir: cfg.data_dir.clone(),
            workers,
            serving,
            groups: BTreeMap::from([(FIRST_RANGE, first)]),
            unhosted: UnhostedRanges::default(),
            metrics: cfg.metrics.clone(),
            ranges,
        };
        store.publish_ranges(RangeTable::first());
        store
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The group the storage threads and the client port serve.
    pub fn first_group(&mut self) -> &mut Group {
        self.groups
            .get_mut(&FIRST_RANGE)
            .expect("the store hosts the first range from its start to its stop")
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
        match self.groups.get_mut(&routed.range) {
            Some(group) => group.on_request(routed.req),
            None => routed.req.refuse(&format!(
                "range {} is not hosted on this node",
                routed.range
            )),
        }
    }

    /// Publishes the ranges this node hosts (as applied here) to the client port's routing.
    pub fn publish_ranges(&self, table: RangeTable) {
        self.ranges.send_replace(Arc::new(table));
    }

    pub fn tick(&mut self, now: Instant) {
        for group in self.groups.values_mut() {
            group.tick(now);
        }
    }

    /// A peer's connection failed: every group that sends to it is told.
    pub fn report_unreachable(&mut self, peer: NodeId) {
        for group in self.groups.values_mut() {
            group.report_unreachable(peer);
        }
    }

    /// A transfer this node served ended: its range's group hears of it; every other event
    /// comes from the storage threads, whose group is the first range's.
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
        for group in self.groups.values_mut() {
            group.drain_ready();
            group.publish_status();
        }
    }

    /// A peer asks for the snapshot image of one of our ranges: a reader streams it to the
    /// peer's connection.
    pub fn serve_snapshot(&self, req: ServeRequest) {
        let range = req.request.range;
        if !self.groups.contains_key(&range) {
            let _ = req.chunks.try_send(Err(ServeError::NotHosted(range)));
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
