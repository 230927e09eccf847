//! The node's two storage workers: threads on a real disk, local tasks in the simulator.
//! LevelDB handles cannot move between threads, so each worker opens its own database and owns
//! it for life.
//!
//! - The log worker writes what the core asks to persist. Writes that queue up while one is
//!   being synced are merged into one batch and one fsync (group commit); completing the last
//!   of them reports all of them, since the core's writes complete in order.
//! - The apply worker applies committed entries to the key-value state machine and serves
//!   reads. Both arrive on one queue, so a read queued after entries up to `i` sees them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kv::{Command, CommandResult, KvStateMachine, RaftStorage, StorageEnv};
use raft_core::{Entry, Index, Persist, RestartState, WriteId};
use tokio::sync::{mpsc, oneshot};

use crate::request::{ReadOp, ReadResult, RequestError};

/// What the storage threads report to the node loop.
#[derive(Debug)]
pub enum StorageEvent {
    Persisted(WriteId),
    /// Entries up to `last_index` are applied; each client command's result, by (client, seq).
    Applied {
        last_index: Index,
        results: Vec<((u64, u64), CommandResult)>,
    },
    /// A storage error: the node cannot go on safely and stops.
    Failed(String),
}

pub enum ApplyRequest {
    Entries(Vec<Entry>),
    Read {
        op: ReadOp,
        reply: oneshot::Sender<Result<ReadResult, RequestError>>,
    },
}

/// Merges writes that completed in order into one with the same effect: the last hard state,
/// and the log as the sequence of overwrites leaves it.
pub fn merge_writes(writes: Vec<Persist>) -> Option<Persist> {
    let mut iter = writes.into_iter();
    let mut merged = iter.next()?;
    for w in iter {
        merged.id = w.id;
        if w.hard_state.is_some() {
            merged.hard_state = w.hard_state;
        }
        if let Some(from) = w.overwrite_from() {
            merged.entries.retain(|e| e.index < from);
            merged.entries.extend(w.entries);
        }
    }
    Some(merged)
}

/// Where a node keeps its data, and so how its storage runs.
#[derive(Clone, Default)]
pub enum StorageMode {
    /// The real disk (fsync for real). Storage runs on two threads of its own, so that an fsync
    /// never stalls the node loop.
    #[default]
    Disk,
    /// The simulator's in-memory disk, which keeps synced bytes and drops the rest when the
    /// power is cut. Storage runs as local tasks of the node's own (simulated) runtime, so that
    /// a run is deterministic.
    Simulated(SimulatedDisk),
}

/// The simulator's disk: the power-cut environment, and how long each log write takes (the
/// simulator raises it to model a slow fsync).
#[derive(Clone, Default)]
pub struct SimulatedDisk {
    pub env: kv::PowerCutEnv,
    pub write_latency_micros: Arc<AtomicU64>,
}

impl SimulatedDisk {
    fn write_latency(&self) -> Option<Duration> {
        match self.write_latency_micros.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }
}

impl StorageMode {
    fn env(&self) -> StorageEnv {
        match self {
            StorageMode::Disk => StorageEnv::Disk,
            StorageMode::Simulated(disk) => StorageEnv::PowerCut(disk.env.clone()),
        }
    }
}

/// What the log worker found on disk (or why it could not open it), and the database's path.
pub type LogOpened = oneshot::Receiver<Result<(RestartState, PathBuf), String>>;
/// The state machine's applied index (or why it could not open), and the database's path.
pub type StateOpened = oneshot::Receiver<Result<(Index, PathBuf), String>>;

/// A storage thread or task; joining it waits until it has flushed and closed its database.
pub enum Worker {
    Thread(std::thread::JoinHandle<()>),
    Task(tokio::task::JoinHandle<()>),
}

impl Worker {
    pub async fn join(self) {
        match self {
            Worker::Thread(t) => {
                let _ = tokio::task::spawn_blocking(move || t.join()).await;
            }
            Worker::Task(t) => {
                let _ = t.await;
            }
        }
    }
}

/// Runs `body` on a thread named `name`, or as a local task of the current runtime.
fn spawn_worker<F, Fut>(mode: &StorageMode, name: &str, body: F) -> std::io::Result<Worker>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    match mode {
        StorageMode::Disk => std::thread::Builder::new()
            .name(name.into())
            .spawn(move || block_on_own_runtime(body()))
            .map(Worker::Thread),
        StorageMode::Simulated(_) => Ok(Worker::Task(tokio::task::spawn_local(body()))),
    }
}

/// Runs a storage worker's future on the calling thread (its own thread), which it may block.
fn block_on_own_runtime<F: std::future::Future<Output = ()>>(f: F) {
    match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(rt) => rt.block_on(f),
        Err(e) => tracing::error!(error = %e, "cannot start a storage thread's runtime"),
    }
}

pub struct LogWorker {
    pub worker: Worker,
    pub writes: mpsc::UnboundedSender<Persist>,
}

/// Opens `raft_logs`, sends back what it holds, then serves writes: the writes queued while one
/// is being synced are merged into one batch and one fsync (group commit).
pub fn spawn_log_worker(
    mode: &StorageMode,
    data_dir: PathBuf,
    events: mpsc::UnboundedSender<StorageEvent>,
    acknowledge_before_writing: bool,
) -> std::io::Result<(LogWorker, LogOpened)> {
    let (writes, mut rx) = mpsc::unbounded_channel::<Persist>();
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
                let _ = loaded_tx.send(Err(e.to_string()));
                return;
            }
        };
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
            }
            let Some(write) = merge_writes(batch) else {
                continue;
            };
            if acknowledge_before_writing {
                // The deliberate bug: the write is reported durable, then left unwritten for a
                // while, so that a crash in between loses an acknowledged write.
                let _ = events.send(StorageEvent::Persisted(write.id));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if let Some(latency) = disk.as_ref().and_then(SimulatedDisk::write_latency) {
                tokio::time::sleep(latency).await;
            }
            match storage.persist(&write) {
                Ok(()) if acknowledge_before_writing => {}
                Ok(()) => {
                    if events.send(StorageEvent::Persisted(write.id)).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = events.send(StorageEvent::Failed(format!(
                        "writing the raft log failed: {e}"
                    )));
                    break;
                }
            }
        }
        if let Err(e) = storage.flush() {
            tracing::warn!(error = %e, "flushing the raft log on shutdown failed");
        }
    })?;
    Ok((LogWorker { worker, writes }, loaded_rx))
}

pub struct ApplyWorker {
    pub worker: Worker,
    pub requests: mpsc::UnboundedSender<ApplyRequest>,
}

/// Opens `kv_data`, sends back its applied index and path, then applies entries and serves
/// reads in queue order.
pub fn spawn_apply_worker(
    mode: &StorageMode,
    data_dir: PathBuf,
    events: mpsc::UnboundedSender<StorageEvent>,
) -> std::io::Result<(ApplyWorker, StateOpened)> {
    let (requests, mut rx) = mpsc::unbounded_channel::<ApplyRequest>();
    let (opened_tx, opened_rx) = oneshot::channel();
    let env = mode.env();
    let worker = spawn_worker(mode, "kv-apply", move || async move {
        let mut sm = match KvStateMachine::open_with(&data_dir, &env, kv::DEFAULT_MAX_SESSIONS) {
            Ok(sm) => {
                let _ = opened_tx.send(Ok((sm.applied_index(), sm.path())));
                sm
            }
            Err(e) => {
                let _ = opened_tx.send(Err(e.to_string()));
                return;
            }
        };
        while let Some(first) = rx.recv().await {
            let mut next = Some(first);
            // Entries queued together are applied in one batch, and reads after them.
            let mut entries: Vec<Entry> = Vec::new();
            let mut reads = Vec::new();
            while let Some(req) = next.take() {
                match req {
                    ApplyRequest::Entries(es) if reads.is_empty() => entries.extend(es),
                    ApplyRequest::Entries(es) => {
                        // A read waits for entries queued before it only; these came after.
                        if !apply_batch(&mut sm, &mut entries, &events) {
                            return;
                        }
                        serve_reads(&mut sm, &mut reads);
                        entries.extend(es);
                    }
                    ApplyRequest::Read { op, reply } => reads.push((op, reply)),
                }
                if entries.len() + reads.len() < 4096 {
                    next = rx.try_recv().ok();
                }
            }
            if !apply_batch(&mut sm, &mut entries, &events) {
                return;
            }
            serve_reads(&mut sm, &mut reads);
        }
        if let Err(e) = sm.sync() {
            tracing::warn!(error = %e, "syncing the state machine on shutdown failed");
        }
    })?;
    Ok((ApplyWorker { worker, requests }, opened_rx))
}

fn apply_batch(
    sm: &mut KvStateMachine,
    entries: &mut Vec<Entry>,
    events: &mpsc::UnboundedSender<StorageEvent>,
) -> bool {
    if entries.is_empty() {
        return true;
    }
    let batch = std::mem::take(entries);
    let Some(last_index) = batch.last().map(|e| e.index) else {
        return true;
    };
    match sm.apply(&batch) {
        Ok(applied) => {
            let first = batch[0].index;
            let mut results = Vec::with_capacity(applied.len());
            for (index, result) in applied {
                let entry = index.checked_sub(first).and_then(|k| batch.get(k as usize));
                if let (Some(result), Some(entry)) = (result, entry) {
                    if let Ok(cmd) = Command::decode(&entry.payload) {
                        results.push(((cmd.client_id, cmd.seq), result));
                    }
                }
            }
            events
                .send(StorageEvent::Applied {
                    last_index,
                    results,
                })
                .is_ok()
        }
        Err(e) => {
            let _ = events.send(StorageEvent::Failed(format!(
                "applying entries up to {last_index} failed: {e}"
            )));
            false
        }
    }
}

fn serve_reads(
    sm: &mut KvStateMachine,
    reads: &mut Vec<(ReadOp, oneshot::Sender<Result<ReadResult, RequestError>>)>,
) {
    for (op, reply) in reads.drain(..) {
        let result = match op {
            ReadOp::Get(key) => sm.get(&key).map(ReadResult::Value),
            ReadOp::Exists(keys) => keys
                .iter()
                .try_fold(0i64, |n, k| sm.get(k).map(|v| n + i64::from(v.is_some())))
                .map(ReadResult::Count),
        };
        let _ = reply.send(result.map_err(|e| RequestError::Failed(format!("read failed: {e}"))));
    }
}

/// The bytes of a read context for the core.
pub fn read_ctx(id: u64) -> Bytes {
    Bytes::copy_from_slice(&id.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_core::{EntryKind, HardState};

    fn write(seq: u64, hs_term: Option<u64>, entries: &[(u64, u64)]) -> Persist {
        Persist {
            id: WriteId { seq, term: 1 },
            hard_state: hs_term.map(|term| HardState {
                term,
                vote: None,
                commit: 0,
            }),
            entries: entries
                .iter()
                .map(|&(i, t)| Entry::new(t, i, EntryKind::Normal, Bytes::new()))
                .collect(),
        }
    }

    #[test]
    fn merged_writes_leave_the_log_as_applying_them_in_order_would() {
        let merged = merge_writes(vec![
            write(1, Some(1), &[(5, 1), (6, 1), (7, 1)]),
            write(2, None, &[(8, 1)]),
            write(3, Some(2), &[(7, 2)]),
            write(4, None, &[]),
        ])
        .unwrap();
        assert_eq!(merged.id.seq, 4);
        assert_eq!(merged.hard_state.map(|h| h.term), Some(2));
        let got: Vec<(u64, u64)> = merged.entries.iter().map(|e| (e.index, e.term)).collect();
        assert_eq!(got, vec![(5, 1), (6, 1), (7, 2)]);
        let merged = merge_writes(vec![
            write(1, None, &[(5, 1), (6, 1)]),
            write(2, None, &[(3, 2)]),
        ])
        .unwrap();
        assert_eq!(
            merged.overwrite_from(),
            Some(3),
            "an earlier overwrite point must survive the merge"
        );
    }
}
