//! The log worker: writes what the core asks to persist, merging the writes queued while one
//! is being synced into one batch and one fsync (group commit); compactions and the log half
//! of snapshot installs take their turn between them. When no write has come for a moment,
//! the disk space of compacted entries is given back, one step at a time.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use kv::ranges::{RangeId, FIRST_RANGE};
use kv::RaftStorage;
use raft_core::{Persist, RestartState, WriteId};
use tokio::sync::{mpsc, oneshot};

use super::{
    merge_writes, spawn_worker, EventSender, LogOpened, LogRequest, RangeOnDisk, RangeQueue,
    SimulatedDisk, StorageEvent, StorageMode, Worker,
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
    /// The first range's queue ([`RangeQueue::for_range`] gives the others').
    pub writes: RangeQueue<LogRequest>,
}

/// Opens `raft_logs`, sends back what it holds, then serves the node loop's requests in order:
/// the writes queued while one is being synced are merged into one batch and one fsync (group
/// commit); compactions and snapshot installs take their turn between them.
pub fn spawn_log_worker(
    mode: &StorageMode,
    data_dir: PathBuf,
    events: EventSender,
    acknowledge_before_writing: bool,
    metrics: std::sync::Arc<crate::metrics::NodeMetrics>,
) -> std::io::Result<(LogWorker, LogOpened)> {
    let (writes, mut rx) = mpsc::unbounded_channel::<(RangeId, LogRequest)>();
    let (loaded_tx, loaded_rx) = oneshot::channel();
    let env = mode.env();
    let disk = match mode {
        StorageMode::Simulated(disk) => Some(disk.clone()),
        StorageMode::Disk => None,
    };
    let worker = spawn_worker(mode, "raft-log", move || async move {
        let opened =
            RaftStorage::open_with(&data_dir, &env).and_then(|mut s| s.load().map(|rs| (s, rs)));
        let storage = match opened {
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
            logs: BTreeMap::from([(FIRST_RANGE, storage)]),
            events: &events,
            acknowledge_before_writing,
            disk: disk.as_ref(),
            metrics: &metrics,
        };
        'serve: loop {
            let first = if log.first().unreclaimed_entries() == 0 {
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
            let mut writes = QueuedWrites::new();
            for (range, request) in requests {
                match request {
                    LogRequest::Persist(p) => writes.entry(range).or_default().push(p),
                    other => {
                        if !log.persist(std::mem::take(&mut writes)).await
                            || !log.handle(range, other).await
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
        // The ranges share one database: flushing one flushes it.
        if let Err(e) = log.first().flush() {
            tracing::warn!(error = %e, "flushing the raft log on shutdown failed");
        }
    })?;
    let writes = RangeQueue::new(FIRST_RANGE, writes);
    Ok((LogWorker { worker, writes }, loaded_rx))
}

/// The writes queued by each range since the last batch, in queue order.
type QueuedWrites = BTreeMap<RangeId, Vec<Persist>>;

/// The log worker's state while it serves requests.
struct LogWriter<'a> {
    /// Every hosted range's log, in the one shared database; always holds the first range.
    logs: BTreeMap<RangeId, RaftStorage>,
    events: &'a EventSender,
    acknowledge_before_writing: bool,
    disk: Option<&'a SimulatedDisk>,
    metrics: &'a crate::metrics::NodeMetrics,
}

impl LogWriter<'_> {
    fn first(&mut self) -> &mut RaftStorage {
        self.logs
            .get_mut(&FIRST_RANGE)
            .expect("the log worker holds the first range's log for life")
    }

    fn fail(&self, error: StorageError) -> bool {
        let _ = self.events.send((FIRST_RANGE, StorageEvent::Failed(error)));
        false
    }

    fn report(&self, range: RangeId, event: StorageEvent) -> bool {
        self.events.send((range, event)).is_ok()
    }

    /// Writes every range's queued writes as one batch with one fsync (group commit across
    /// groups), then reports each range's last. A write for a range whose log is not open is
    /// dropped with a warning: its group does not exist here, so nobody waits for it. False
    /// when the worker must stop.
    async fn persist(&mut self, writes: QueuedWrites) -> bool {
        let mut merged: Vec<(RangeId, Persist)> = Vec::new();
        for (range, queued) in writes {
            if !self.logs.contains_key(&range) {
                tracing::warn!(
                    range,
                    "dropping raft log writes for a range whose log is not open"
                );
                continue;
            }
            merged.extend(merge_writes(queued).map(|w| (range, w)));
        }
        if merged.is_empty() {
            return true;
        }
        let done: Vec<(RangeId, WriteId)> = merged.iter().map(|(r, w)| (*r, w.id)).collect();
        if self.acknowledge_before_writing {
            // The deliberate bug: the write is reported durable, then left unwritten for a
            // while, so that a crash in between loses an acknowledged write.
            for &(range, id) in &done {
                self.report(range, StorageEvent::Persisted(id));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Some(latency) = self.disk.and_then(SimulatedDisk::write_latency) {
            tokio::time::sleep(latency).await;
        }
        let started = std::time::Instant::now();
        let entries: usize = merged.iter().map(|(_, w)| w.entries.len()).sum();
        let written = {
            let mut batch: Vec<(&mut RaftStorage, &Persist)> = Vec::with_capacity(merged.len());
            let mut logs = self.logs.iter_mut();
            // Both are in range order: pair each write with its range's log.
            for (range, write) in &merged {
                for (id, log) in logs.by_ref() {
                    if id == range {
                        batch.push((log, write));
                        break;
                    }
                }
            }
            RaftStorage::persist_together(&mut batch)
        };
        self.metrics
            .fsync_latency
            .observe_duration(started.elapsed());
        self.metrics
            .fsync_batch_entries
            .observe_count(entries as u64);
        match written {
            Ok(()) if self.acknowledge_before_writing => true,
            Ok(()) => done
                .into_iter()
                .all(|(range, id)| self.report(range, StorageEvent::Persisted(id))),
            Err(e) => self.fail(StorageError::kv("writing the raft log")(e)),
        }
    }

    /// Opens (giving it its start if new) and loads the log of a range other than the first.
    fn open_range(&mut self, state: &RangeOnDisk) -> Result<RestartState, StorageError> {
        let range = state.descriptor.id;
        let opened = match self.logs.get_mut(&range) {
            Some(log) => log.load(),
            None => self.first().open_range(range).and_then(|mut log| {
                log.start_split_range(state.log_start())?;
                let loaded = log.load()?;
                self.logs.insert(range, log);
                Ok(loaded)
            }),
        };
        opened.map_err(StorageError::kv(format!(
            "opening the raft log of range {range}"
        )))
    }

    /// Gives back the space of some compacted entries. False when the worker must stop.
    fn reclaim_step(&mut self) -> bool {
        let before = self.first().unreclaimed_entries();
        match self.first().reclaim_step(RECLAIM_STEP_ENTRIES) {
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

    async fn handle(&mut self, range: RangeId, request: LogRequest) -> bool {
        if let LogRequest::OpenRange { state, reply } = request {
            let opened = self.open_range(&state);
            let ok = opened.is_ok();
            match (reply, opened) {
                (Some(reply), opened) => {
                    let _ = reply.send(opened);
                }
                (None, Ok(restart)) => {
                    let restart = Box::new(restart);
                    return self.report(range, StorageEvent::RangeLogOpened { state, restart });
                }
                (None, Err(e)) => return self.fail(e),
            }
            return ok;
        }
        if range != FIRST_RANGE {
            // Compaction and installs wait for per-range images (docs/ARCHITECTURE.md): the
            // node sends none for other ranges.
            tracing::warn!(
                range,
                "ignoring a log request other than a write for range {range}"
            );
            return true;
        }
        match request {
            LogRequest::Persist(p) => self.persist(QueuedWrites::from([(range, vec![p])])).await,
            LogRequest::OpenRange { .. } => true,
            LogRequest::Compact(start) => {
                match self.first().compact(start.index, &start.membership) {
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
                match self.first().install_snapshot(snapshot.clone()) {
                    Ok(()) => {
                        let _ = log_installed.send(true);
                        self.report(range, StorageEvent::Persisted(id))
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
                let log = self.first();
                let done = log
                    .install_snapshot(snapshot)
                    .and_then(|()| log.load())
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
