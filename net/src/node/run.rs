//! The node loop: one task selects over the tick timer, storage completions, snapshot news,
//! peer messages, client requests and transport failures, feeds each to the store (which hands
//! it to the group it is for; draining whatever else is already queued, so that one `Ready`
//! covers many inputs), then lets the groups act on their cores' `Ready`s.

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::snapshot_install::SnapshotEvent;
use super::store::Store;
use crate::error::NodeError;
use crate::request::RoutedRequest;
use crate::snapshot_transfer::ServeRequest;
use crate::storage::{EventReceiver, StorageEvent};
use crate::transport::RangeMessage;
use kv::ranges::RangeId;
use raft_core::NodeId;

/// How many queued inputs of one kind are fed to the core before it is drained.
const MAX_BATCH: usize = 1024;

/// Everything the loop listens to.
pub struct Inputs {
    pub events: EventReceiver,
    pub snapshot_events: mpsc::UnboundedReceiver<SnapshotEvent>,
    pub inbox: mpsc::Receiver<RangeMessage>,
    pub requests: mpsc::Receiver<RoutedRequest>,
    pub unreachable: mpsc::UnboundedReceiver<NodeId>,
    pub serve: mpsc::Receiver<ServeRequest>,
    pub shutdown: watch::Receiver<bool>,
}

/// Runs the store's groups until shutdown or a storage failure, then stops the store.
pub async fn run(mut store: Store, mut inputs: Inputs) -> Result<(), NodeError> {
    let mut ticker = tokio::time::interval(store.tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        #[cfg(feature = "test-switches")]
        while store.pause.is_paused() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        // Biased, rare inputs first: a flood of one kind must not starve ticks or storage.
        tokio::select! {
            biased;
            _ = inputs.shutdown.changed() => break Ok(()),
            _ = ticker.tick() => store.tick(Instant::now()),
            Some(ev) = inputs.events.recv() => {
                if let Err(e) = on_storage_events(&mut store, ev, &mut inputs.events) {
                    break Err(e);
                }
            }
            Some(ev) = inputs.snapshot_events.recv() => store.on_snapshot_event(ev),
            Some(peer) = inputs.unreachable.recv() => store.report_unreachable(peer),
            Some(req) = inputs.serve.recv() => store.serve_snapshot(req),
            Some(msg) = inputs.inbox.recv() => {
                store.deliver(msg);
                for _ in 0..MAX_BATCH {
                    match inputs.inbox.try_recv() {
                        Ok(m) => store.deliver(m),
                        Err(_) => break,
                    }
                }
            }
            Some(req) = inputs.requests.recv() => {
                store.on_request(req);
                for _ in 0..MAX_BATCH {
                    match inputs.requests.try_recv() {
                        Ok(r) => store.on_request(r),
                        Err(_) => break,
                    }
                }
            }
        }
        store.drain_ready();
    };
    let id = store.id();
    // The inputs stay open until the storage threads are done, so that they finish what is
    // queued rather than stop at their first report.
    store.stop().await;
    drop(inputs);
    tracing::info!(id, "node stopped");
    result
}

/// Feeds `first` and what else is queued (up to [`MAX_BATCH`]) to the store, which hands each
/// to its range's group.
fn on_storage_events(
    store: &mut Store,
    (range, first): (RangeId, StorageEvent),
    events: &mut EventReceiver,
) -> Result<(), NodeError> {
    store.on_storage_event(range, first)?;
    for _ in 0..MAX_BATCH {
        match events.try_recv() {
            Ok((range, ev)) => store.on_storage_event(range, ev)?,
            Err(_) => break,
        }
    }
    Ok(())
}
