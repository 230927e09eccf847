//! The node's two storage workers: threads on a real disk, local tasks in the simulator.
//! LevelDB handles cannot move between threads, so each worker opens its own database and owns
//! it for life.
//!
//! - The log worker writes what the core asks to persist. Writes that queue up while one is
//!   being synced are merged into one batch and one fsync (group commit); completing the last
//!   of them reports all of them, since the core's writes complete in order.
//! - The apply worker applies committed entries to the key-value state machine and serves
//!   reads. Both arrive on one queue, so a read queued after entries up to `i` sees them. It
//!   also receives, stages and installs snapshots (it owns the state machine they replace).
//! - A snapshot reader streams this node's image to one peer for one transfer.
//!
//! The workers report on two channels: [`StorageEvent`]s (writes durable, entries applied,
//! images taken, failures) and, for snapshot fetches and installs,
//! [`SnapshotEvent`](crate::node::snapshot_install::SnapshotEvent)s.

mod apply_worker;
mod log_worker;
mod snapshot_reader;
mod snapshot_receive;

pub use apply_worker::{spawn_apply_worker, ApplyFaults, ApplyReports, ApplyWorker};
pub use log_worker::{spawn_log_worker, LogWorker};
pub use snapshot_reader::spawn_snapshot_reader;

use kv::ranges::{RangeDescriptor, RangeId};

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kv::{CommandResult, MemberTable, StorageEnv};
use raft_core::{Entry, Index, Persist, RestartState, SnapshotMeta, WriteId};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};

use crate::error::{StorageError, TransferError};
use crate::request::{ReadOp, ReadResult, RequestError};

/// Where the storage threads report: each event names the range it is about.
pub type EventSender = mpsc::UnboundedSender<(RangeId, StorageEvent)>;
/// Where the node loop hears the storage threads.
pub type EventReceiver = mpsc::UnboundedReceiver<(RangeId, StorageEvent)>;

/// One range's queue to a storage thread: the thread serves every range the node hosts on one
/// queue (so that one fsync covers the writes of all of them), and each request carries the
/// range it is for.
pub struct RangeQueue<T> {
    range: RangeId,
    tx: mpsc::UnboundedSender<(RangeId, T)>,
}

impl<T> Clone for RangeQueue<T> {
    fn clone(&self) -> Self {
        Self {
            range: self.range,
            tx: self.tx.clone(),
        }
    }
}

impl<T> RangeQueue<T> {
    pub fn new(range: RangeId, tx: mpsc::UnboundedSender<(RangeId, T)>) -> Self {
        Self { range, tx }
    }

    pub fn range(&self) -> RangeId {
        self.range
    }

    /// Queues `request` for this range; gives it back if the thread has stopped.
    pub fn send(&self, request: T) -> Result<(), T> {
        self.tx.send((self.range, request)).map_err(|e| e.0 .1)
    }

    /// The same thread's queue for another range.
    pub fn for_range(&self, range: RangeId) -> Self {
        Self {
            range,
            tx: self.tx.clone(),
        }
    }
}

/// What the storage threads report to the node loop (snapshot fetches and installs have a
/// channel of their own).
#[derive(Debug)]
pub enum StorageEvent {
    Persisted(WriteId),
    /// Entries up to `applied_index` are applied; each client command's result, by kv's
    /// `(client_id, seq)`; the member table as of `applied_index` if it may have changed (a
    /// conf-change entry applied, a snapshot installed).
    Applied {
        applied_index: Index,
        results: Vec<((u64, u64), CommandResult)>,
        members: Option<MemberTable>,
        /// The key counts at `applied_index` (DBSIZE, INFO keyspace; expiry needs time to
        /// pass in the log while keys with a deadline exist).
        keys: kv::state_machine::KeyCounts,
        /// A digest of each applied command's result, by index; empty unless asked for
        /// (`ApplyReports::outcomes`).
        outcomes: Vec<(Index, u64)>,
    },
    /// A storage error: the node cannot go on safely and stops.
    Failed(StorageError),
    /// The state machine wrote a new snapshot image (durable, with everything applied up to
    /// it): the log may be compacted up to it.
    SnapshotBuilt(SnapshotMeta),
    /// A split applied by this range created `child` (reported after the `Applied` of the
    /// batch that holds the split, once the child's state machine is open): the store asks the
    /// log worker to give the child's log its start, then builds the child's group. `parent`
    /// is this range's descriptor after the batch (the left half).
    RangeCreated {
        parent: RangeDescriptor,
        child: RangeOnDisk,
    },
    /// The log of a range created by a split (named by the event) is open: its group can be
    /// built from `restart`, with `state` as its state machine found itself.
    RangeLogOpened {
        state: RangeOnDisk,
        restart: Box<RestartState>,
    },
}

/// A range's state machine as the apply worker holds it, other than the first (whose
/// [`StateOnDisk`] says more: images, installs).
#[derive(Clone, Debug)]
pub struct RangeOnDisk {
    pub descriptor: RangeDescriptor,
    pub applied_index: Index,
    /// The configuration in force at `applied_index`, with the members' addresses.
    pub members: MemberTable,
}

impl RangeOnDisk {
    /// Where a range created by a split starts its log: the snapshot point every replica's
    /// state machine starts it at, with the configuration it was created in.
    pub fn log_start(&self) -> SnapshotMeta {
        SnapshotMeta {
            index: kv::state_machine::RANGE_INITIAL_INDEX,
            term: kv::state_machine::RANGE_INITIAL_TERM,
            membership: self.members.membership.clone(),
        }
    }
}

/// What the node loop asks of the apply worker, in order.
pub enum ApplyRequest {
    Entries(Vec<Entry>),
    Read {
        op: ReadOp,
        reply: oneshot::Sender<Result<ReadResult, RequestError>>,
    },
    /// Start receiving a snapshot at or after `at_least` as job `job`, dropping any earlier
    /// receive job or staged snapshot.
    BeginReceive {
        job: u64,
        at_least: SnapshotMeta,
    },
    /// The next chunk of job `job` (ignored if that job is no longer current). The permit is
    /// the fetcher's flow control: it is released once the chunk is stored.
    ReceiveChunk {
        job: u64,
        chunk: Bytes,
        _permit: OwnedSemaphorePermit,
    },
    /// Job `job`'s stream ended: stage it (`Ok`) or drop it.
    EndReceive {
        job: u64,
        outcome: Result<(), TransferError>,
    },
    /// Install the staged snapshot (the state-machine half of a `SnapshotWrite`): replace the
    /// state machine, tell the log worker, wait for it to install the log half, then finish.
    Install {
        snapshot: SnapshotMeta,
        state_installed: oneshot::Sender<bool>,
        log_installed: oneshot::Receiver<bool>,
    },
    /// The staged snapshot will not be installed (the core no longer needed it): remove it.
    DiscardStaged,
    /// Startup: the log half of an interrupted install is done; finish it.
    FinishInstall {
        reply: oneshot::Sender<Result<Index, StorageError>>,
    },
    /// Startup of a data directory that has applied nothing: record the member table it starts
    /// from (a new cluster's founding members, or what a joining node was told).
    SeedMembers {
        table: MemberTable,
        reply: oneshot::Sender<Result<(), StorageError>>,
    },
}

/// What the node loop asks of the log worker, in order.
pub enum LogRequest {
    /// One write of the core (merged with its neighbours into one fsync).
    Persist(Persist),
    /// Drop the entries up to this snapshot's index (the state machine has a durable image
    /// past it); the snapshot, with its configuration, becomes the log start.
    Compact(SnapshotMeta),
    /// The log half of a `SnapshotWrite`: once the state machine has the snapshot, the log
    /// becomes empty after it; reported as write `id`.
    InstallSnapshot {
        id: WriteId,
        snapshot: SnapshotMeta,
        state_installed: oneshot::Receiver<bool>,
        log_installed: oneshot::Sender<bool>,
    },
    /// Startup: the state machine holds an install whose log half may be missing: install it,
    /// then load the log again.
    FinishPendingInstall {
        snapshot: SnapshotMeta,
        reply: oneshot::Sender<Result<RestartState, StorageError>>,
    },
    /// Open the log of a range other than the first (the request's range), giving it `start`
    /// if it has no state yet (`RaftStorage::start_split_range`: idempotent), and load it.
    /// At start the answer comes on `reply`; for a split at run time, with no reply, it comes
    /// as [`StorageEvent::RangeLogOpened`] (the node loop never waits on a storage thread).
    OpenRange {
        state: RangeOnDisk,
        reply: Option<oneshot::Sender<Result<RestartState, StorageError>>>,
    },
}

/// When the state machine takes snapshots and how the log is compacted after them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// Take a snapshot once this many entries were applied since the last one (0: never).
    pub threshold: u64,
    /// Entries the log keeps before the applied index when it is compacted, so that a follower
    /// a little behind catches up with appends rather than a whole snapshot.
    pub tail: u64,
    /// Bytes per snapshot chunk (on disk and on the wire).
    pub chunk_bytes: usize,
    /// Keys an image step writes; applies and reads wait for one step at most.
    pub step_keys: usize,
}

impl Default for SnapshotPolicy {
    /// etcd's defaults (`--snapshot-count` 100,000, 5,000 catch-up entries).
    fn default() -> Self {
        Self {
            threshold: 100_000,
            tail: 5_000,
            chunk_bytes: kv::snapshot::DEFAULT_CHUNK_BYTES,
            step_keys: kv::snapshot::DEFAULT_SNAPSHOT_STEP,
        }
    }
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

/// The simulator's disk: the power-cut environment, how long each log write takes (the
/// simulator raises it to model a slow fsync), and the peers' pinned incarnations (kept with
/// the disk across crashes, as the file is on a real disk; a new disk starts with none).
#[derive(Clone, Default)]
pub struct SimulatedDisk {
    pub env: kv::PowerCutEnv,
    pub write_latency_micros: Arc<AtomicU64>,
    pub peer_pins: Arc<std::sync::Mutex<kv::PeerPins>>,
}

impl SimulatedDisk {
    pub(crate) fn write_latency(&self) -> Option<Duration> {
        match self.write_latency_micros.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }
}

impl StorageMode {
    /// A simulated disk nothing was ever written to (a real disk's emptiness is told by its
    /// identity file instead).
    pub(crate) fn is_blank_simulated_disk(&self) -> bool {
        match self {
            StorageMode::Disk => false,
            StorageMode::Simulated(disk) => disk.env.files().is_empty(),
        }
    }

    pub(crate) fn env(&self) -> StorageEnv {
        match self {
            StorageMode::Disk => StorageEnv::Disk,
            StorageMode::Simulated(disk) => StorageEnv::PowerCut(disk.env.clone()),
        }
    }
}

/// What the log worker found on disk (or why it could not open it), and the database's path.
pub type LogOpened = oneshot::Receiver<Result<(RestartState, PathBuf), StorageError>>;
/// What the state machine found on disk (or why it could not open).
pub type StateOpened = oneshot::Receiver<Result<StateOnDisk, StorageError>>;

/// The state machine as the apply worker opened it.
#[derive(Clone, Debug)]
pub struct StateOnDisk {
    pub applied_index: Index,
    pub path: PathBuf,
    /// An install interrupted after its commit point: the log half must be finished.
    pub pending_install: Option<SnapshotMeta>,
    /// The newest snapshot image in the data directory (index 0: none).
    pub image: SnapshotMeta,
    /// The member table as of `applied_index` (empty: never seeded, nothing learned).
    pub members: MemberTable,
    /// The first range's descriptor as stored.
    pub descriptor: RangeDescriptor,
    /// Every other range the database holds, in id order (each one's state machine is open).
    pub other_ranges: Vec<RangeOnDisk>,
}

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
pub(crate) fn spawn_worker<F, Fut>(
    mode: &StorageMode,
    name: &str,
    body: F,
) -> std::io::Result<Worker>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    match mode {
        StorageMode::Disk => {
            // The thread's log lines carry the node's span (its id, in `kvstore cluster`).
            let span = tracing::Span::current();
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    let _in_node = span.enter();
                    block_on_own_runtime(body())
                })
                .map(Worker::Thread)
        }
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
