//! The log worker: writes what the core asks to persist, merging the writes queued while one
//! is being synced into one batch and one fsync (group commit); compactions and the log half
//! of snapshot installs take their turn between them. When no write has come for a moment,
//! the disk space of compacted entries is given back, one step at a time.

use std::path::PathBuf;
use std::time::Duration;

use kv::RaftStorage;
use raft_core::Persist;
use tokio::sync::{mpsc, oneshot};

use super::{
    merge_writes, spawn_worker, LogOpened, LogRequest, SimulatedDisk, StorageEvent, StorageMode,
    Worker,
};
use crate::error::StorageError;

/// How long the log must have been idle before a reclaim step runs: a step can take a
/// hundred milliseconds (docs/PERFORMANCE.md, "Giving the log's disk back"), which a write
/// arriving meanwhile waits for, so it runs only when writes have paused.
const RECLAIM_WHEN_IDLE_FOR: Duration = Duration::from_millis(200);
/// Deleted entries whose space one step gives back.
const RECLAIM_STEP_ENTRIES: u64 = 20_000;

pub struct LogWorker {
    pub worker: Worker,
    pub writes: mpsc::UnboundedSender<LogRequest>,
}

/// Opens `raft_logs`, sends back what it holds, then serves the node loop's requests in order:
/// the writes queued while one is being synced are merged into one batch and one fsync (group
/// commit); compactions and snapshot installs take their turn between them.
pub fn spawn_log_worker(
    mode: &StorageMode,
    data_dir: PathBuf,
    events: mpsc::UnboundedSender<StorageEvent>,
    acknowledge_before_writing: bool,
    metrics: std::sync::Arc<crate::metrics::NodeMetrics>,
) -> std::io::Result<(LogWorker, LogOpened)> {
    let (writes, mut rx) = mpsc::unbounded_channel::<LogRequest>();
    let (loaded_tx, loaded_rx) = oneshot::channel();
    let env = mode.env();
    let disk = match mode {
        StorageMode::Simulated(disk) => Some(disk.clone()),
        StorageMode::Disk => None,
    };
    let worker = spawn_worker(mode, "raft-log", move || async move {
        let opened =
            RaftStorage::open_with(&data_dir, &env).and_then(|mut s| s.load().map(|rs| (s, rs)));
        let mut storage = match opened {
            Ok((storage, rs)) => {
                let _ = loaded_tx.send(Ok((rs, storage.path())));
                storage
            }
            Err(e) => {
                let _ = loaded_tx.send(Err(StorageError::kv("opening the raft log")(e)));
                return;
            }
        };
        let mut log = LogWriter {
            storage: &mut storage,
            events: &events,
            acknowledge_before_writing,
            disk: disk.as_ref(),
            metrics: &metrics,
        };
        'serve: loop {
            let first = if log.storage.unreclaimed_entries() == 0 {
                rx.recv().await
            } else {
                match tokio::time::timeout(RECLAIM_WHEN_IDLE_FOR, rx.recv()).await {
                    Ok(request) => request,
                    Err(_idle) => {
                        if !log.reclaim_step() {
                            break;
                        }
                        continue;
                    }
                }
            };
            let Some(first) = first else { break };
            let mut requests = vec![first];
            while let Ok(more) = rx.try_recv() {
                requests.push(more);
            }
            let mut writes = Vec::new();
            for request in requests {
                match request {
                    LogRequest::Persist(p) => writes.push(p),
                    other => {
                        if !log.persist(std::mem::take(&mut writes)).await
                            || !log.handle(other).await
                        {
                            break 'serve;
                        }
                    }
                }
            }
            if !log.persist(writes).await {
                break;
            }
        }
        if let Err(e) = storage.flush() {
            tracing::warn!(error = %e, "flushing the raft log on shutdown failed");
        }
    })?;
    Ok((LogWorker { worker, writes }, loaded_rx))
}

/// The log worker's state while it serves requests.
struct LogWriter<'a> {
    storage: &'a mut RaftStorage,
    events: &'a mpsc::UnboundedSender<StorageEvent>,
    acknowledge_before_writing: bool,
    disk: Option<&'a SimulatedDisk>,
    metrics: &'a crate::metrics::NodeMetrics,
}

impl LogWriter<'_> {
    fn fail(&self, error: StorageError) -> bool {
        let _ = self.events.send(StorageEvent::Failed(error));
        false
    }

    /// Writes these writes as one batch with one fsync, then reports the last. False when the
    /// worker must stop.
    async fn persist(&mut self, writes: Vec<Persist>) -> bool {
        let Some(write) = merge_writes(writes) else {
            return true;
        };
        if self.acknowledge_before_writing {
            // The deliberate bug: the write is reported durable, then left unwritten for a
            // while, so that a crash in between loses an acknowledged write.
            let _ = self.events.send(StorageEvent::Persisted(write.id));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Some(latency) = self.disk.and_then(SimulatedDisk::write_latency) {
            tokio::time::sleep(latency).await;
        }
        let started = std::time::Instant::now();
        let written = self.storage.persist(&write);
        self.metrics
            .fsync_latency
            .observe_duration(started.elapsed());
        self.metrics
            .fsync_batch_entries
            .observe_count(write.entries.len() as u64);
        match written {
            Ok(()) if self.acknowledge_before_writing => true,
            Ok(()) => self.events.send(StorageEvent::Persisted(write.id)).is_ok(),
            Err(e) => self.fail(StorageError::kv("writing the raft log")(e)),
        }
    }

    /// Gives back the space of some compacted entries. False when the worker must stop.
    fn reclaim_step(&mut self) -> bool {
        let before = self.storage.unreclaimed_entries();
        match self.storage.reclaim_step(RECLAIM_STEP_ENTRIES) {
            Ok(left) => {
                tracing::debug!(
                    reclaimed = before - left,
                    left,
                    "gave back the raft log's space of compacted entries"
                );
                true
            }
            Err(e) => self.fail(StorageError::kv("giving back the raft log's disk space")(e)),
        }
    }

    async fn handle(&mut self, request: LogRequest) -> bool {
        match request {
            LogRequest::Persist(p) => self.persist(vec![p]).await,
            LogRequest::Compact(start) => {
                match self.storage.compact(start.index, &start.membership) {
                    Ok(()) => true,
                    Err(e) => self.fail(StorageError::kv(format!(
                        "compacting the raft log up to {}",
                        start.index
                    ))(e)),
                }
            }
            LogRequest::InstallSnapshot {
                id,
                snapshot,
                state_installed,
                log_installed,
            } => {
                // The state machine goes first: its install marker is the commit point, and a
                // restart finishes the log half from it.
                if state_installed.await != Ok(true) {
                    let _ = log_installed.send(false);
                    return self.fail(StorageError::InstallAbandoned {
                        index: snapshot.index,
                        term: snapshot.term,
                    });
                }
                match self.storage.install_snapshot(snapshot.clone()) {
                    Ok(()) => {
                        let _ = log_installed.send(true);
                        self.events.send(StorageEvent::Persisted(id)).is_ok()
                    }
                    Err(e) => {
                        let _ = log_installed.send(false);
                        self.fail(StorageError::kv(format!(
                            "installing snapshot {}/{} in the raft log",
                            snapshot.index, snapshot.term
                        ))(e))
                    }
                }
            }
            LogRequest::FinishPendingInstall { snapshot, reply } => {
                let done = self
                    .storage
                    .install_snapshot(snapshot)
                    .and_then(|()| self.storage.load())
                    .map_err(StorageError::kv(
                        "finishing an interrupted snapshot install in the raft log",
                    ));
                let ok = done.is_ok();
                let _ = reply.send(done);
                ok
            }
        }
    }
}
