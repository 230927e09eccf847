//! The process-level parts a group runs on, apart from the group itself: the storage threads
//! (joined at shutdown) and the serving of this node's snapshot image to peers. With many
//! Raft groups in one process these are shared, and each group keeps its own
//! [`Group`](super::group::Group).

use std::path::PathBuf;
use std::sync::Arc;

use raft_core::NodeId;
use tokio::sync::Semaphore;

use super::config::NodeConfig;
use crate::error::ServeError;
use crate::snapshot_transfer::ServeRequest;
use crate::storage::{self, StorageMode, Worker};

pub struct Store {
    id: NodeId,
    storage: StorageMode,
    data_dir: PathBuf,
    workers: Vec<Worker>,
    /// Transfers this node may serve at once; a request beyond them is refused (the follower
    /// asks again later), so that no peer can make it open readers without bound.
    serving: Arc<Semaphore>,
}

impl Store {
    pub fn new(cfg: &NodeConfig, workers: Vec<Worker>, serving: Arc<Semaphore>) -> Self {
        Self {
            id: cfg.id,
            storage: cfg.storage.clone(),
            data_dir: cfg.data_dir.clone(),
            workers,
            serving,
        }
    }

    /// A peer asks for our snapshot image: a reader streams it to the peer's connection.
    pub fn serve_snapshot(&self, req: ServeRequest) {
        let Ok(permit) = self.serving.clone().try_acquire_owned() else {
            let _ = req.chunks.try_send(Err(ServeError::Busy));
            return;
        };
        tracing::info!(
            id = self.id,
            to = req.request.from,
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

    /// Waits for the storage threads to finish what is queued, flush and exit (their queues
    /// must be closed first: the group drops its senders when it stops).
    pub async fn stop(self) {
        for worker in self.workers {
            worker.join().await;
        }
    }
}
