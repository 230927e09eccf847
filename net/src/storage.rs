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
use kv::{
    Command, CommandResult, KvStateMachine, RaftStorage, SnapshotBuilder, SnapshotReader,
    StagedSnapshot, StorageEnv,
};
use raft_core::{Entry, Index, NodeId, Persist, RestartState, SnapshotMeta, WriteId};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};

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
    /// The state machine wrote a new snapshot image (durable, with everything applied up to
    /// it): the log may be compacted up to it.
    SnapshotBuilt(SnapshotMeta),
    /// Receive job `job` has the snapshot `snapshot` staged, ready to install.
    SnapshotStaged {
        job: u64,
        snapshot: SnapshotMeta,
    },
    /// Receive job `job` failed; nothing of it remains.
    SnapshotFetchFailed {
        job: u64,
        why: String,
    },
    /// A snapshot install finished: state machine and log are the snapshot.
    SnapshotInstalled(SnapshotMeta),
    /// A transfer of our image to `to` ended (not a storage event, but reported the same way).
    SnapshotSent {
        to: NodeId,
        ok: bool,
    },
}

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
        outcome: Result<(), String>,
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
        reply: oneshot::Sender<Result<Index, String>>,
    },
}

/// What the node loop asks of the log worker, in order.
pub enum LogRequest {
    /// One write of the core (merged with its neighbours into one fsync).
    Persist(Persist),
    /// Drop the entries up to this index (the state machine has a durable image past it).
    Compact(Index),
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
        reply: oneshot::Sender<Result<RestartState, String>>,
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
/// What the state machine found on disk (or why it could not open).
pub type StateOpened = oneshot::Receiver<Result<StateOnDisk, String>>;

/// The state machine as the apply worker opened it.
#[derive(Clone, Debug)]
pub struct StateOnDisk {
    pub applied: Index,
    pub path: PathBuf,
    /// An install interrupted after its commit point: the log half must be finished.
    pub pending_install: Option<SnapshotMeta>,
    /// The newest snapshot image in the data directory (index 0: none).
    pub image: SnapshotMeta,
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
                let _ = loaded_tx.send(Err(e.to_string()));
                return;
            }
        };
        let mut log = LogWriter {
            storage: &mut storage,
            events: &events,
            acknowledge_before_writing,
            disk: disk.as_ref(),
        };
        'serve: while let Some(first) = rx.recv().await {
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
}

impl LogWriter<'_> {
    fn fail(&self, why: String) -> bool {
        let _ = self.events.send(StorageEvent::Failed(why));
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
        match self.storage.persist(&write) {
            Ok(()) if self.acknowledge_before_writing => true,
            Ok(()) => self.events.send(StorageEvent::Persisted(write.id)).is_ok(),
            Err(e) => self.fail(format!("writing the raft log failed: {e}")),
        }
    }

    async fn handle(&mut self, request: LogRequest) -> bool {
        match request {
            LogRequest::Persist(p) => self.persist(vec![p]).await,
            LogRequest::Compact(up_to) => match self.storage.compact(up_to) {
                Ok(()) => true,
                Err(e) => self.fail(format!("compacting the raft log up to {up_to} failed: {e}")),
            },
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
                    return self.fail(format!(
                        "installing snapshot {}/{}: the state machine did not install it",
                        snapshot.index, snapshot.term
                    ));
                }
                match self.storage.install_snapshot(snapshot) {
                    Ok(()) => {
                        let _ = log_installed.send(true);
                        self.events.send(StorageEvent::Persisted(id)).is_ok()
                    }
                    Err(e) => {
                        let _ = log_installed.send(false);
                        self.fail(format!(
                            "installing snapshot {}/{} in the raft log failed: {e}",
                            snapshot.index, snapshot.term
                        ))
                    }
                }
            }
            LogRequest::FinishPendingInstall { snapshot, reply } => {
                let done = self
                    .storage
                    .install_snapshot(snapshot)
                    .and_then(|()| self.storage.load())
                    .map_err(|e| e.to_string());
                let ok = done.is_ok();
                let _ = reply.send(done);
                ok
            }
        }
    }
}

pub struct ApplyWorker {
    pub worker: Worker,
    pub requests: mpsc::UnboundedSender<ApplyRequest>,
}

/// Opens `kv_data`, sends back what it found, then applies entries and serves reads in queue
/// order, takes a snapshot whenever `policy.threshold` entries were applied since the last
/// one, and receives and installs snapshots from other nodes.
pub fn spawn_apply_worker(
    mode: &StorageMode,
    data_dir: PathBuf,
    cluster_id: u64,
    policy: SnapshotPolicy,
    events: mpsc::UnboundedSender<StorageEvent>,
    install_without_data: bool,
) -> std::io::Result<(ApplyWorker, StateOpened)> {
    let (requests, mut rx) = mpsc::unbounded_channel::<ApplyRequest>();
    let (opened_tx, opened_rx) = oneshot::channel();
    let env = mode.env();
    let worker = spawn_worker(mode, "kv-apply", move || async move {
        let (sm, image) = match KvStateMachine::open_with(&data_dir, &env, kv::DEFAULT_MAX_SESSIONS)
        {
            Ok(sm) => {
                let image = sm
                    .snapshot_reader()
                    .map(|r| r.meta())
                    .unwrap_or(SnapshotMeta { index: 0, term: 0 });
                let _ = opened_tx.send(Ok(StateOnDisk {
                    applied: sm.applied_index(),
                    path: sm.path(),
                    pending_install: sm.pending_install(),
                    image,
                }));
                (sm, image)
            }
            Err(e) => {
                let _ = opened_tx.send(Err(e.to_string()));
                return;
            }
        };
        let mut w = ApplyState {
            last_image: image.index,
            sm: Some(sm),
            events,
            cluster_id,
            policy,
            data_dir,
            env,
            receiving: None,
            staged: None,
            install_without_data,
        };
        'serve: loop {
            // While an image is being written, a step runs whenever the queue is empty (as well
            // as after every batch), so that it also progresses on an idle node.
            let first = if w.building() {
                match rx.try_recv() {
                    Ok(r) => r,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        w.snapshot_step();
                        tokio::task::yield_now().await;
                        continue;
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                }
            } else {
                match rx.recv().await {
                    Some(r) => r,
                    None => break,
                }
            };
            let mut next = Some(first);
            // Entries queued together are applied in one batch, and reads after them.
            let mut entries: Vec<Entry> = Vec::new();
            let mut reads = Vec::new();
            while let Some(req) = next.take() {
                match req {
                    ApplyRequest::Entries(es) if reads.is_empty() => entries.extend(es),
                    ApplyRequest::Entries(es) => {
                        // A read waits for entries queued before it only; these came after.
                        if !w.apply_and_serve(&mut entries, &mut reads) {
                            break 'serve;
                        }
                        entries.extend(es);
                    }
                    ApplyRequest::Read { op, reply } => reads.push((op, reply)),
                    other => {
                        if !w.apply_and_serve(&mut entries, &mut reads) || !w.handle(other).await {
                            break 'serve;
                        }
                    }
                }
                if entries.len() + reads.len() < 4096 {
                    next = rx.try_recv().ok();
                }
            }
            if !w.apply_and_serve(&mut entries, &mut reads) {
                break;
            }
            w.maybe_take_snapshot();
            w.snapshot_step();
        }
        if let Some(sm) = w.sm.as_mut() {
            if let Err(e) = sm.sync() {
                tracing::warn!(error = %e, "syncing the state machine on shutdown failed");
            }
        }
    })?;
    Ok((ApplyWorker { worker, requests }, opened_rx))
}

type PendingReads = Vec<(ReadOp, oneshot::Sender<Result<ReadResult, RequestError>>)>;

/// The apply worker's state while it serves requests.
struct ApplyState {
    /// `None` only after an install failed half-way (the worker then stops).
    sm: Option<KvStateMachine>,
    events: mpsc::UnboundedSender<StorageEvent>,
    cluster_id: u64,
    policy: SnapshotPolicy,
    data_dir: PathBuf,
    env: StorageEnv,
    /// The index of the newest image in the data directory (0: none).
    last_image: Index,
    /// The receive job in progress, and its builder (`None` once it failed).
    receiving: Option<(u64, Option<SnapshotBuilder>)>,
    staged: Option<StagedSnapshot>,
    /// The deliberate bug (`UnsafeSwitches::install_without_data`).
    install_without_data: bool,
}

impl ApplyState {
    fn fail(&self, why: String) -> bool {
        let _ = self.events.send(StorageEvent::Failed(why));
        false
    }

    fn apply_and_serve(&mut self, entries: &mut Vec<Entry>, reads: &mut PendingReads) -> bool {
        let Some(sm) = self.sm.as_mut() else {
            return false;
        };
        if !apply_batch(sm, entries, &self.events) {
            return false;
        }
        serve_reads(sm, reads);
        true
    }

    /// Starts a snapshot image if `policy.threshold` entries were applied since the last one
    /// began. It is written in steps between batches ([`ApplyState::snapshot_step`]), so
    /// applies and reads wait for one step at most. A failure is logged and retried after
    /// another threshold of entries, since the log is then simply not compacted.
    fn maybe_take_snapshot(&mut self) {
        let Some(sm) = self.sm.as_mut() else { return };
        let threshold = self.policy.threshold;
        if threshold == 0 || sm.applied_index() < self.last_image.saturating_add(threshold) {
            return;
        }
        if sm.pending_install().is_some() || sm.snapshot_in_progress().is_some() {
            return;
        }
        let applied = sm.applied_index();
        self.last_image = applied;
        match sm.start_snapshot(self.cluster_id, self.policy.chunk_bytes) {
            Ok(meta) => tracing::debug!(index = meta.index, "snapshot started"),
            Err(e) => {
                tracing::error!(error = %e, applied, "taking a snapshot failed; the log is not compacted")
            }
        }
    }

    fn building(&self) -> bool {
        self.sm
            .as_ref()
            .is_some_and(|sm| sm.snapshot_in_progress().is_some())
    }

    /// Writes the next step of the image in progress, if any, and reports it once complete.
    fn snapshot_step(&mut self) {
        let Some(sm) = self.sm.as_mut() else { return };
        match sm.snapshot_step(self.policy.step_keys) {
            Ok(Some(meta)) => {
                tracing::info!(index = meta.index, term = meta.term, "snapshot taken");
                let _ = self.events.send(StorageEvent::SnapshotBuilt(meta));
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "writing a snapshot failed; the log is not compacted")
            }
        }
    }

    async fn handle(&mut self, req: ApplyRequest) -> bool {
        match req {
            ApplyRequest::Entries(_) | ApplyRequest::Read { .. } => true,
            ApplyRequest::BeginReceive { job, at_least } => {
                self.staged = None;
                self.receiving = None;
                match SnapshotBuilder::new(&self.data_dir, &self.env, at_least, self.cluster_id) {
                    Ok(b) => self.receiving = Some((job, Some(b))),
                    Err(e) => self.receive_failed(job, format!("cannot start receiving: {e}")),
                }
                true
            }
            ApplyRequest::ReceiveChunk { job, chunk, .. } => {
                let Some((current, Some(builder))) = self.receiving.as_mut() else {
                    return true;
                };
                if *current != job {
                    return true;
                }
                if let Err(e) = builder.push(&chunk) {
                    self.receiving = Some((job, None));
                    self.receive_failed(job, e.to_string());
                }
                true
            }
            ApplyRequest::EndReceive { job, outcome } => {
                let Some((current, builder)) = self.receiving.take() else {
                    return true;
                };
                if current != job {
                    self.receiving = Some((current, builder));
                    return true;
                }
                match (builder, outcome) {
                    (Some(b), Ok(())) => match b.finish() {
                        Ok(staged) => {
                            let snapshot = staged.meta();
                            self.staged = Some(staged);
                            let _ = self
                                .events
                                .send(StorageEvent::SnapshotStaged { job, snapshot });
                        }
                        Err(e) => self.receive_failed(job, e.to_string()),
                    },
                    // The failure of a poisoned builder was reported when it happened.
                    (None, _) => {}
                    (Some(_), Err(why)) => self.receive_failed(job, why),
                }
                true
            }
            ApplyRequest::Install {
                snapshot,
                state_installed,
                log_installed,
            } => self.install(snapshot, state_installed, log_installed).await,
            ApplyRequest::DiscardStaged => {
                if let Some(staged) = self.staged.take() {
                    if let Err(e) = staged.discard() {
                        tracing::warn!(error = %e, "removing an unused staged snapshot failed");
                    }
                }
                true
            }
            ApplyRequest::FinishInstall { reply } => {
                let done = match self.sm.as_mut() {
                    Some(sm) => sm
                        .finish_install()
                        .map(|()| sm.applied_index())
                        .map_err(|e| e.to_string()),
                    None => Err("the state machine is closed".into()),
                };
                let ok = done.is_ok();
                let _ = reply.send(done);
                ok
            }
        }
    }

    fn receive_failed(&self, job: u64, why: String) {
        let _ = self
            .events
            .send(StorageEvent::SnapshotFetchFailed { job, why });
    }

    async fn install(
        &mut self,
        snapshot: SnapshotMeta,
        state_installed: oneshot::Sender<bool>,
        log_installed: oneshot::Receiver<bool>,
    ) -> bool {
        let staged = match self.staged.take() {
            Some(s) if s.meta() == snapshot => s,
            _ => {
                let _ = state_installed.send(false);
                return self.fail(format!(
                    "asked to install snapshot {}/{}, which is not the one staged",
                    snapshot.index, snapshot.term
                ));
            }
        };
        let Some(sm) = self.sm.take() else {
            let _ = state_installed.send(false);
            return false;
        };
        let installed = if self.install_without_data {
            // The deliberate bug: the old state machine stays, moved up to the snapshot's
            // index with empty entries, and the install is reported done.
            let mut sm = sm;
            let filler: Vec<Entry> = (sm.applied_index() + 1..=snapshot.index)
                .map(|i| Entry::new(snapshot.term, i, raft_core::EntryKind::Noop, Bytes::new()))
                .collect();
            match sm.apply(&filler).and_then(|_| sm.sync()) {
                Ok(_) => Ok(sm),
                Err(e) => Err(e),
            }
        } else {
            sm.install(staged)
        };
        match installed {
            Ok(sm) => self.sm = Some(sm),
            Err(e) => {
                let _ = state_installed.send(false);
                return self.fail(format!(
                    "installing snapshot {}/{} in the state machine failed: {e}",
                    snapshot.index, snapshot.term
                ));
            }
        }
        let _ = state_installed.send(true);
        if log_installed.await != Ok(true) {
            // The log worker reported why; a restart finishes the install from its marker.
            return false;
        }
        let Some(sm) = self.sm.as_mut() else {
            return false;
        };
        if let Err(e) = sm.finish_install() {
            return self.fail(format!(
                "finishing the install of snapshot {}/{} failed: {e}",
                snapshot.index, snapshot.term
            ));
        }
        self.last_image = snapshot.index;
        tracing::info!(
            index = snapshot.index,
            term = snapshot.term,
            "snapshot installed"
        );
        let _ = self.events.send(StorageEvent::Applied {
            last_index: snapshot.index,
            results: Vec::new(),
        });
        self.events
            .send(StorageEvent::SnapshotInstalled(snapshot))
            .is_ok()
    }
}

/// Starts a reader of this node's newest snapshot image for one transfer: it sends the
/// image's chunks into `chunks` (waiting while the queue is full: the connection's pace), or
/// why it cannot serve one at or after `at_least`. Runs on a thread of its own (a local task
/// in the simulator), like the other storage workers, and ends when the transfer does.
pub fn spawn_snapshot_reader(
    mode: &StorageMode,
    data_dir: PathBuf,
    at_least: SnapshotMeta,
    chunks: mpsc::Sender<Result<Bytes, String>>,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> std::io::Result<Worker> {
    let env = mode.env();
    spawn_worker(mode, "snapshot-send", move || async move {
        // Held for the transfer: the node serves a bounded number at once.
        let _permit = permit;
        let mut reader = match SnapshotReader::open(&data_dir, &env) {
            Ok(r) => r,
            Err(e) => {
                let _ = chunks.send(Err(format!("no snapshot image: {e}"))).await;
                return;
            }
        };
        let meta = reader.meta();
        if meta.index < at_least.index
            || (meta.index == at_least.index && meta.term != at_least.term)
        {
            let _ = chunks
                .send(Err(format!(
                    "the newest image is {}/{}, {}/{} or later was asked for",
                    meta.index, meta.term, at_least.index, at_least.term
                )))
                .await;
            return;
        }
        loop {
            let next = match reader.next_chunk() {
                Ok(Some(c)) => Ok(c),
                Ok(None) => return,
                Err(e) => Err(format!("reading the image failed: {e}")),
            };
            let stop = next.is_err();
            if chunks.send(next).await.is_err() || stop {
                return;
            }
        }
    })
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
