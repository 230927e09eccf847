//! The apply worker: applies committed entries to the key-value state machine and serves reads
//! in queue order, takes a snapshot image every `policy.threshold` entries (in steps, between
//! batches), and receives and installs snapshots from other nodes
//! ([`snapshot_receive`](super::snapshot_receive)).

use crate::node::WallClock;
use kv::CommandResult;
use std::collections::BTreeMap;
use std::path::PathBuf;

use kv::ranges::{RangeId, FIRST_RANGE};
use kv::{Command, KvStateMachine, SnapshotReceiver, StagedSnapshot, StorageEnv};
use raft_core::{Entry, EntryKind, Index};
use tokio::sync::{mpsc, oneshot};

use super::{
    spawn_worker, ApplyRequest, EventSender, RangeOnDisk, RangeQueue, SnapshotPolicy, StateOnDisk,
    StateOpened, StorageEvent, StorageMode, Worker,
};
use crate::error::StorageError;
use crate::node::snapshot_install::SnapshotEvent;
use crate::request::{ReadOp, ReadResult, RequestError};

pub struct ApplyWorker {
    pub worker: Worker,
    /// The first range's queue ([`RangeQueue::for_range`] gives the others').
    pub requests: RangeQueue<ApplyRequest>,
}

/// Where the apply worker reports.
pub struct ApplyReports {
    pub events: EventSender,
    pub snapshots: mpsc::UnboundedSender<SnapshotEvent>,
    pub metrics: std::sync::Arc<crate::metrics::NodeMetrics>,
    /// Report a digest of every applied entry's result (`StorageEvent::Applied::outcomes`).
    pub outcomes: bool,
}

/// Opens `kv_data`, sends back what it found, then serves the node loop's requests in order.
pub fn spawn_apply_worker(
    mode: &StorageMode,
    data_dir: PathBuf,
    cluster_id: u64,
    policy: SnapshotPolicy,
    reports: ApplyReports,
    faults: ApplyFaults,
    bootstrap: raft_core::Membership,
) -> std::io::Result<(ApplyWorker, StateOpened)> {
    let (requests, rx) = mpsc::unbounded_channel::<(RangeId, ApplyRequest)>();
    let (opened_tx, opened_rx) = oneshot::channel();
    let env = mode.env();
    let worker = spawn_worker(mode, "kv-apply", move || async move {
        let opened = KvStateMachine::open_with(&data_dir, &env, kv::DEFAULT_MAX_SESSIONS)
            .map(|sm| faults.carried_by(sm))
            .and_then(|sm| open_other_ranges(&sm, &faults).map(|others| (sm, others)));
        let (sm, others, image) = match opened {
            Ok((mut sm, others)) => {
                // As stored: empty in a directory that was never seeded (see `node::start`).
                let members = sm.members().clone();
                // Until it applies a configuration, the state machine is in the bootstrap one
                // (its images carry it).
                sm.seed_membership(&bootstrap);
                let image = sm.snapshot_reader().map(|r| r.meta()).unwrap_or_default();
                let _ = opened_tx.send(Ok(StateOnDisk {
                    applied_index: sm.applied_index(),
                    path: sm.path(),
                    pending_install: sm.pending_install(),
                    image: image.clone(),
                    members,
                    descriptor: sm.descriptor().clone(),
                    other_ranges: others.values().map(range_on_disk).collect(),
                }));
                (sm, others, image)
            }
            Err(e) => {
                let _ = opened_tx.send(Err(StorageError::kv("opening the state machine")(e)));
                return;
            }
        };
        let mut w = ApplyState {
            last_image: image.index,
            sm: Some(sm),
            others,
            images_paused_logged: false,
            events: reports.events,
            snapshot_events: reports.snapshots,
            cluster_id,
            policy,
            data_dir,
            env,
            receiving: None,
            staged: None,
            image_waits: Vec::new(),
            install_without_data: faults.install_without_data,
            local_expiry_clock: faults.local_expiry_clock.clone(),
            faults,
            metrics: reports.metrics,
            outcomes: reports.outcomes,
            snapshot_started: None,
            receive_started: None,
        };
        w.serve(rx).await;
        if let Some(sm) = w.sm.as_mut() {
            if let Err(e) = sm.sync() {
                tracing::warn!(error = %e, "syncing the state machine on shutdown failed");
            }
        }
    })?;
    let requests = RangeQueue::new(FIRST_RANGE, requests);
    Ok((ApplyWorker { worker, requests }, opened_rx))
}

/// Opens the state machine of every range the database holds besides the first.
fn open_other_ranges(
    first: &KvStateMachine,
    faults: &ApplyFaults,
) -> kv::Result<BTreeMap<RangeId, KvStateMachine>> {
    let mut others = BTreeMap::new();
    for descriptor in first.stored_ranges()? {
        if descriptor.id != FIRST_RANGE {
            let sm = faults.carried_by(first.open_range(descriptor)?);
            others.insert(sm.range_id(), sm);
        }
    }
    Ok(others)
}

fn range_on_disk(sm: &KvStateMachine) -> RangeOnDisk {
    RangeOnDisk {
        descriptor: sm.descriptor().clone(),
        applied_index: sm.applied_index(),
        members: sm.members().clone(),
    }
}

type ReadReply = oneshot::Sender<Result<ReadResult, RequestError>>;
pub(super) type PendingReads = Vec<(ReadOp, ReadReply)>;

/// The apply worker's state while it serves requests.
pub(super) struct ApplyState {
    /// The first range's state machine. `None` only after an install failed half-way (the
    /// worker then stops). Kept apart from the others: it alone has whole-directory images
    /// and installs, which replace it.
    pub(super) sm: Option<KvStateMachine>,
    /// Every other hosted range's state machine, over the same database.
    others: BTreeMap<RangeId, KvStateMachine>,
    /// Whether the pause of images (several ranges) was logged.
    images_paused_logged: bool,
    pub(super) events: EventSender,
    pub(super) snapshot_events: mpsc::UnboundedSender<SnapshotEvent>,
    pub(super) cluster_id: u64,
    policy: SnapshotPolicy,
    pub(super) data_dir: PathBuf,
    pub(super) env: StorageEnv,
    /// The index of the newest image in the data directory (0: none).
    pub(super) last_image: Index,
    /// The receive job in progress, and its builder (`None` once it failed).
    pub(super) receiving: Option<(u64, Option<SnapshotReceiver>)>,
    pub(super) staged: Option<StagedSnapshot>,
    /// Backups waiting for an image at or after their read point (the applied index when
    /// their `ReadOp::Image` came).
    image_waits: Vec<(Index, ReadReply)>,
    /// The deliberate bug (`UnsafeSwitches::install_without_data`).
    pub(super) install_without_data: bool,
    /// The deliberate bugs every state machine opened here carries.
    faults: ApplyFaults,
    /// The deliberate bug (`UnsafeSwitches::expiry_by_local_clock`).
    local_expiry_clock: Option<WallClock>,
    pub(super) metrics: std::sync::Arc<crate::metrics::NodeMetrics>,
    /// Whether applies report their results' digests (an observer checks replicas agree).
    outcomes: bool,
    /// When the image in progress was begun, and when the current receive job began.
    snapshot_started: Option<std::time::Instant>,
    pub(super) receive_started: Option<std::time::Instant>,
}

/// The deliberate bugs an apply worker may carry (the simulator's teeth tests; all off in a
/// product).
#[derive(Clone, Default)]
pub struct ApplyFaults {
    /// Report a snapshot install done while keeping the old state machine.
    pub install_without_data: bool,
    /// Judge expiry on reads by this clock instead of the log's time.
    pub local_expiry_clock: Option<WallClock>,
    /// Apply commands whatever their keys' range (`UnsafeSwitches::ignore_range_ownership`).
    pub ignore_range_ownership: bool,
    /// Apply a split ahead of the entries its batch holds before it
    /// (`UnsafeSwitches::split_out_of_order_on`).
    pub splits_first: bool,
}

impl ApplyFaults {
    /// Gives a state machine just opened the deliberate bugs it is to carry.
    fn carried_by(&self, sm: KvStateMachine) -> KvStateMachine {
        #[cfg(feature = "test-switches")]
        let sm = {
            let mut sm = sm;
            sm.ignore_ownership(self.ignore_range_ownership);
            sm.apply_splits_first(self.splits_first);
            sm
        };
        sm
    }
}

impl ApplyState {
    pub(super) fn fail(&self, error: StorageError) -> bool {
        let _ = self.events.send((FIRST_RANGE, StorageEvent::Failed(error)));
        false
    }

    /// Why no image is taken or installed now: the whole-directory image holds every range
    /// of the shared database, and a node hosting several waits for per-range images.
    pub(super) fn images_paused(&self) -> Option<String> {
        (!self.others.is_empty()).then(|| {
            format!(
                "this node hosts {} ranges; snapshot images and installs are paused until \
                 per-range images exist",
                self.others.len() + 1
            )
        })
    }

    /// Serves requests until the queue closes or the worker must stop. While an image is being
    /// written, a step runs whenever the queue is empty (as well as after every batch), so that
    /// it also progresses on an idle node.
    async fn serve(&mut self, mut rx: mpsc::UnboundedReceiver<(RangeId, ApplyRequest)>) {
        loop {
            let first = if self.building() {
                match rx.try_recv() {
                    Ok(r) => r,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        self.snapshot_step();
                        self.answer_image_waits();
                        tokio::task::yield_now().await;
                        continue;
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => return,
                }
            } else {
                match rx.recv().await {
                    Some(r) => r,
                    None => return,
                }
            };
            if !self.serve_batch(first, &mut rx).await {
                return;
            }
            self.maybe_take_snapshot();
            self.snapshot_step();
            self.answer_image_waits();
        }
    }

    /// Serves `first` and what is queued behind it: entries queued together are applied in one
    /// batch, and reads after them. False when the worker must stop.
    async fn serve_batch(
        &mut self,
        first: (RangeId, ApplyRequest),
        rx: &mut mpsc::UnboundedReceiver<(RangeId, ApplyRequest)>,
    ) -> bool {
        let mut range = first.0;
        let mut next = Some(first);
        let mut entries: Vec<Entry> = Vec::new();
        let mut reads = Vec::new();
        while let Some((for_range, req)) = next.take() {
            if for_range != range {
                // One range's batch at a time; each range's order is kept.
                if !self.apply_and_serve(range, &mut entries, &mut reads) {
                    return false;
                }
                range = for_range;
            }
            match req {
                ApplyRequest::Entries(es) if reads.is_empty() => entries.extend(es),
                ApplyRequest::Entries(es) => {
                    // A read waits for entries queued before it only; these came after.
                    if !self.apply_and_serve(range, &mut entries, &mut reads) {
                        return false;
                    }
                    entries.extend(es);
                }
                ApplyRequest::Read { op, reply } => reads.push((op, reply)),
                other => {
                    if !self.apply_and_serve(range, &mut entries, &mut reads)
                        || !self.handle_range_request(range, other).await
                    {
                        return false;
                    }
                }
            }
            if entries.len() + reads.len() < 4096 {
                next = rx.try_recv().ok();
            }
        }
        self.apply_and_serve(range, &mut entries, &mut reads)
    }

    /// A request other than entries and reads: the first range's snapshot work; another
    /// range has none yet (its images wait for per-range images), and says so.
    async fn handle_range_request(&mut self, range: RangeId, request: ApplyRequest) -> bool {
        if range == FIRST_RANGE {
            return self.handle_snapshot_request(request).await;
        }
        let why = format!("range {range} has no snapshot images yet");
        match request {
            ApplyRequest::Install {
                state_installed, ..
            } => {
                let _ = state_installed.send(false);
            }
            ApplyRequest::FinishInstall { reply } => {
                let _ = reply.send(Err(StorageError::kv(why.clone())(
                    kv::Error::InvalidRequest(why),
                )));
            }
            ApplyRequest::SeedMembers { reply, .. } => {
                let _ = reply.send(Ok(()));
            }
            ApplyRequest::BeginReceive { job, .. } => {
                let _ = self.snapshot_events.send(SnapshotEvent::FetchFailed {
                    job,
                    error: crate::error::TransferError::Stage(kv::Error::InvalidRequest(why)),
                });
            }
            _ => {}
        }
        true
    }

    fn apply_and_serve(
        &mut self,
        range: RangeId,
        entries: &mut Vec<Entry>,
        reads: &mut PendingReads,
    ) -> bool {
        if range != FIRST_RANGE {
            return self.apply_and_serve_other(range, entries, reads);
        }
        let Some(sm) = self.sm.as_mut() else {
            return false;
        };
        let (count, started) = (entries.len() as u64, std::time::Instant::now());
        let Some(created) = apply_batch(sm, range, entries, (&self.events, self.outcomes)) else {
            return false;
        };
        if !self.open_created(range, created) {
            return false;
        }
        let Some(sm) = self.sm.as_mut() else {
            return false;
        };
        if count > 0 {
            self.metrics
                .apply_latency
                .observe_duration(started.elapsed());
            self.metrics.apply_batch_entries.observe_count(count);
        }
        let applied = sm.applied_index();
        for (_, reply) in reads.extract_if(.., |(op, _)| *op == ReadOp::Image) {
            self.image_waits.push((applied, reply));
        }
        serve_reads(sm, reads, self.local_expiry_clock.as_ref());
        true
    }

    /// Applies entries of a range other than the first and serves its reads (no images).
    fn apply_and_serve_other(
        &mut self,
        range: RangeId,
        entries: &mut Vec<Entry>,
        reads: &mut PendingReads,
    ) -> bool {
        let Some(sm) = self.others.get_mut(&range) else {
            // The node never queues work for a range whose state machine is not open here.
            if !entries.is_empty() {
                return self.fail(StorageError::kv(format!(
                    "applying entries of range {range}"
                ))(kv::Error::InvalidRequest(format!(
                    "range {range} is not open on this node"
                ))));
            }
            for (_, reply) in reads.drain(..) {
                let why = format!("range {range} is not hosted on this node");
                let _ = reply.send(Err(RequestError::TryAgain(why)));
            }
            return true;
        };
        let Some(created) = apply_batch(sm, range, entries, (&self.events, self.outcomes)) else {
            return false;
        };
        let refused = "a range other than the first has no snapshot images yet";
        for (_, reply) in reads.extract_if(.., |(op, _)| *op == ReadOp::Image) {
            let _ = reply.send(Err(RequestError::Failed(refused.into())));
        }
        serve_reads(sm, reads, self.local_expiry_clock.as_ref());
        self.open_created(range, created)
    }

    /// Opens the state machine of each range a split just created and reports it, after the
    /// parent's `Applied` (already sent): the store builds the child's group from it.
    fn open_created(&mut self, range: RangeId, children: Created) -> bool {
        if children.is_empty() {
            return true;
        }
        let parent = match (range, self.sm.as_ref(), self.others.get(&range)) {
            (FIRST_RANGE, Some(sm), _) | (_, _, Some(sm)) => sm.descriptor().clone(),
            _ => return false,
        };
        for child in children {
            let Some(first) = self.sm.as_ref() else {
                return false;
            };
            let id = child.id;
            let sm = match first.open_range(child) {
                Ok(sm) => self.faults.carried_by(sm),
                Err(e) => {
                    return self.fail(StorageError::kv(format!(
                        "opening range {id}, created by a split of range {}",
                        parent.id
                    ))(e))
                }
            };
            let child = range_on_disk(&sm);
            self.others.insert(id, sm);
            let event = StorageEvent::RangeCreated {
                parent: parent.clone(),
                child,
            };
            if self.events.send((parent.id, event)).is_err() {
                return false;
            }
        }
        true
    }

    /// Starts a snapshot image if `policy.threshold` entries were applied since the last one
    /// began. It is written in steps between batches ([`ApplyState::snapshot_step`]), so
    /// applies and reads wait for one step at most. A failure is logged and retried after
    /// another threshold of entries, since the log is then simply not compacted.
    fn maybe_take_snapshot(&mut self) {
        let threshold = self.policy.threshold;
        let applied = self.sm.as_ref().map_or(0, KvStateMachine::applied_index);
        if threshold == 0 || applied < self.last_image.saturating_add(threshold) {
            return;
        }
        if let Some(why) = self.images_paused() {
            if !self.images_paused_logged {
                self.images_paused_logged = true;
                tracing::warn!("no snapshot image is taken and the log is not compacted: {why}");
            }
            return;
        }
        let Some(sm) = self.sm.as_mut() else { return };
        if sm.pending_install().is_some() || sm.snapshot_in_progress().is_some() {
            return;
        }
        let applied = sm.applied_index();
        self.last_image = applied;
        match sm.start_snapshot(self.cluster_id, self.policy.chunk_bytes) {
            Ok(meta) => {
                self.snapshot_started = Some(std::time::Instant::now());
                tracing::debug!(index = meta.index, "snapshot started")
            }
            Err(e) => {
                tracing::error!(error = %e, applied, "taking a snapshot failed; the log is not compacted")
            }
        }
    }

    /// Answers the backups waiting for an image with the newest one once it is at or after
    /// their read point; if some still wait and no image is being written, starts one at the
    /// applied index (images are otherwise only taken every `policy.threshold` entries).
    fn answer_image_waits(&mut self) {
        if self.image_waits.is_empty() || self.building() {
            return;
        }
        if let Some(why) = self.images_paused() {
            for (_, reply) in self.image_waits.drain(..) {
                let _ = reply.send(Err(RequestError::Failed(format!("no image: {why}"))));
            }
            return;
        }
        let Some(sm) = self.sm.as_mut() else { return };
        let newest = sm.snapshot_reader().map(|r| r.meta()).ok();
        let mut waiting = Vec::new();
        for (floor, reply) in self.image_waits.drain(..) {
            match &newest {
                Some(image) if image.index >= floor => {
                    let _ = reply.send(Ok(ReadResult::Image(image.clone())));
                }
                _ => waiting.push((floor, reply)),
            }
        }
        self.image_waits = waiting;
        if self.image_waits.is_empty() || sm.pending_install().is_some() {
            // An install in progress brings an image of its own.
            return;
        }
        match sm.start_snapshot(self.cluster_id, self.policy.chunk_bytes) {
            Ok(meta) => {
                self.last_image = meta.index;
                tracing::info!(index = meta.index, "snapshot started for a backup");
            }
            Err(e) => {
                let why = format!("taking a snapshot for the backup failed: {e}");
                for (_, reply) in self.image_waits.drain(..) {
                    let _ = reply.send(Err(RequestError::Failed(why.clone())));
                }
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
                if let Some(started) = self.snapshot_started.take() {
                    self.metrics
                        .snapshot_take_duration
                        .observe_duration(started.elapsed());
                }
                let _ = self
                    .events
                    .send((FIRST_RANGE, StorageEvent::SnapshotBuilt(meta)));
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "writing a snapshot failed; the log is not compacted")
            }
        }
    }
}

/// The ranges one apply batch created by splitting its range (usually none).
type Created = Vec<kv::ranges::RangeDescriptor>;

/// Applies a batch of `range` and reports it; `None` when the worker must stop.
fn apply_batch(
    sm: &mut KvStateMachine,
    range: RangeId,
    entries: &mut Vec<Entry>,
    (events, report_outcomes): (&EventSender, bool),
) -> Option<Created> {
    let batch = std::mem::take(entries);
    let Some(applied_index) = batch.last().map(|e| e.index) else {
        return Some(Created::new());
    };
    let changes_members = batch.iter().any(|e| e.kind == EntryKind::ConfChange);
    match sm.apply(&batch) {
        Ok(applied) => {
            let first = batch[0].index;
            let mut results = Vec::with_capacity(applied.len());
            let outcomes = if report_outcomes {
                outcome_digests(&applied)
            } else {
                Vec::new()
            };
            for (index, result) in applied {
                let entry = index.checked_sub(first).and_then(|k| batch.get(k as usize));
                if let (Some(result), Some(entry)) = (result, entry) {
                    if let Ok(cmd) = Command::decode(&entry.payload) {
                        results.push(((cmd.client_id, cmd.seq), result));
                    }
                }
            }
            let applied = StorageEvent::Applied {
                applied_index,
                results,
                members: changes_members.then(|| sm.members().clone()),
                keys: sm.key_counts(),
                outcomes,
            };
            events.send((range, applied)).ok()?;
            Some(sm.created_ranges().to_vec())
        }
        Err(e) => {
            let _ = events.send((
                range,
                StorageEvent::Failed(StorageError::kv(format!(
                    "applying entries of range {range} up to {applied_index}"
                ))(e)),
            ));
            None
        }
    }
}

/// Each applied command's result, digested (FNV-1a over its encoding), by entry index.
fn outcome_digests(applied: &[(Index, Option<CommandResult>)]) -> Vec<(Index, u64)> {
    let digest = |bytes: &[u8]| {
        bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    applied
        .iter()
        .filter_map(|(index, result)| Some((*index, digest(&result.as_ref()?.encode()))))
        .collect()
}

fn serve_reads(sm: &mut KvStateMachine, reads: &mut PendingReads, clock: Option<&WallClock>) {
    for (op, reply) in reads.drain(..) {
        let Some(op) = op.for_range_at(sm.descriptor()) else {
            let _ = reply.send(Ok(crate::request::not_owned(sm.descriptor())));
            continue;
        };
        let result = match (op, clock) {
            (ReadOp::Get(key), Some(clock)) => sm
                .query_at_clock(&kv::Query::Get { key }, clock.now_ms())
                .map(|r| match r {
                    CommandResult::Bulk(v) => ReadResult::Value(Some(v)),
                    _ => ReadResult::Value(None),
                }),
            (ReadOp::Query(q), Some(clock)) => sm
                .query_at_clock(&q, clock.now_ms())
                .map(ReadResult::Answer),
            (op, _) => serve_read(sm, op),
        };
        let _ = reply.send(result.map_err(|e| RequestError::Failed(format!("read failed: {e}"))));
    }
}

fn serve_read(sm: &mut KvStateMachine, op: ReadOp) -> kv::Result<ReadResult> {
    match op {
        ReadOp::Get(key) => sm.get(&key).map(ReadResult::Value),
        ReadOp::Exists(keys) => keys
            .iter()
            .try_fold(0i64, |n, k| sm.get(k).map(|v| n + i64::from(v.is_some())))
            .map(ReadResult::Count),
        ReadOp::Query(q) => sm.query_now(&q).map(ReadResult::Answer),
        ReadOp::SplitPoint => sm.split_point().map(ReadResult::Value),
        // Checked and unwrapped by `serve_reads`.
        ReadOp::WholeRange { query, .. } => sm.query_now(&query).map(ReadResult::Answer),
        // Taken out of the queue before reads are served (`answer_image_waits`).
        ReadOp::Image => Err(kv::Error::InvalidRequest(
            "an image is not read from the key space".into(),
        )),
    }
}
