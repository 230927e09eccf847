//! The apply worker's part in receiving and installing a snapshot: it owns the state machine,
//! so it is the only one that may build the staged copy beside it and swap it in. Outcomes go
//! to the group's snapshot channel ([`SnapshotEvent`]).

use bytes::Bytes;
use kv::ranges::FIRST_RANGE;
use kv::SnapshotReceiver;
use raft_core::{Entry, SnapshotMeta};
use tokio::sync::oneshot;

use super::apply_worker::ApplyState;
use super::{ApplyRequest, StorageEvent};
use crate::error::{StorageError, TransferError};
use crate::node::snapshot_install::SnapshotEvent;

impl ApplyState {
    /// Serves a request other than entries and reads. False when the worker must stop.
    pub(super) async fn handle_snapshot_request(&mut self, req: ApplyRequest) -> bool {
        match req {
            ApplyRequest::Entries(_) | ApplyRequest::Read { .. } => true,
            ApplyRequest::BeginReceive { job, at_least } => {
                self.begin_receive(job, at_least);
                true
            }
            ApplyRequest::ReceiveChunk { job, chunk, .. } => {
                self.receive_chunk(job, &chunk);
                true
            }
            ApplyRequest::EndReceive { job, outcome } => {
                self.end_receive(job, outcome);
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
                let done =
                    match self.sm.as_mut() {
                        Some(sm) => sm.finish_install().map(|()| sm.applied_index()).map_err(
                            StorageError::kv("finishing an interrupted snapshot install"),
                        ),
                        None => Err(StorageError::WorkerStopped),
                    };
                let ok = done.is_ok();
                let _ = reply.send(done);
                ok
            }
            ApplyRequest::SeedMembers { table, reply } => {
                let done = match self.sm.as_mut() {
                    Some(sm) => sm
                        .seed_members(table)
                        .map_err(StorageError::kv("recording the initial member table")),
                    None => Err(StorageError::WorkerStopped),
                };
                let ok = done.is_ok();
                let _ = reply.send(done);
                ok
            }
        }
    }

    /// Starts receive job `job`, dropping any earlier one and any staged snapshot.
    fn begin_receive(&mut self, job: u64, at_least: SnapshotMeta) {
        self.staged = None;
        self.receiving = None;
        if let Some(why) = self.images_paused() {
            let refused = kv::Error::InvalidRequest(format!("cannot receive a snapshot: {why}"));
            return self.receive_failed(job, TransferError::Stage(refused));
        }
        match SnapshotReceiver::new(&self.data_dir, &self.env, at_least, self.cluster_id) {
            Ok(b) => {
                self.receiving = Some((job, Some(b)));
                self.receive_started = Some(std::time::Instant::now());
            }
            Err(e) => self.receive_failed(job, TransferError::Stage(e)),
        }
    }

    /// Stores the next chunk of job `job` (ignored if that job is no longer current).
    fn receive_chunk(&mut self, job: u64, chunk: &Bytes) {
        let Some((current, Some(builder))) = self.receiving.as_mut() else {
            return;
        };
        if *current != job {
            return;
        }
        self.metrics
            .snapshot_install_bytes
            .inc_by(chunk.len() as u64);
        if let Err(e) = builder.push(chunk) {
            self.receiving = Some((job, None));
            self.receive_failed(job, TransferError::Stage(e));
        }
    }

    /// Job `job`'s stream ended: stage what it received (`Ok`) or drop it.
    fn end_receive(&mut self, job: u64, outcome: Result<(), TransferError>) {
        let Some((current, builder)) = self.receiving.take() else {
            return;
        };
        if current != job {
            self.receiving = Some((current, builder));
            return;
        }
        match (builder, outcome) {
            (Some(b), Ok(())) => match b.finish() {
                Ok(staged) => {
                    let snapshot = staged.meta();
                    self.staged = Some(staged);
                    if let Some(started) = self.receive_started.take() {
                        self.metrics
                            .snapshot_install_duration
                            .observe_duration(started.elapsed());
                    }
                    let _ = self
                        .snapshot_events
                        .send(SnapshotEvent::Staged { job, snapshot });
                }
                Err(e) => self.receive_failed(job, TransferError::Stage(e)),
            },
            // The failure of a poisoned builder was reported when it happened.
            (None, _) => {}
            (Some(_), Err(error)) => self.receive_failed(job, error),
        }
    }

    fn receive_failed(&self, job: u64, error: TransferError) {
        let _ = self
            .snapshot_events
            .send(SnapshotEvent::FetchFailed { job, error });
    }

    /// The state machine's half of a `SnapshotWrite`: swaps in the staged snapshot (its marker
    /// is the commit point), tells the log worker, waits for it to install the log half, then
    /// removes the marker. False when the worker must stop.
    async fn install(
        &mut self,
        snapshot: SnapshotMeta,
        state_installed: oneshot::Sender<bool>,
        log_installed: oneshot::Receiver<bool>,
    ) -> bool {
        let installed = self.swap_in_staged(snapshot.clone());
        let _ = state_installed.send(installed);
        if !installed {
            return false;
        }
        if log_installed.await != Ok(true) {
            // The log worker reported why; a restart finishes the install from its marker.
            return false;
        }
        let Some(sm) = self.sm.as_mut() else {
            return false;
        };
        if let Err(e) = sm.finish_install() {
            return self.fail(StorageError::kv(format!(
                "finishing the install of snapshot {}/{}",
                snapshot.index, snapshot.term
            ))(e));
        }
        self.last_image = snapshot.index;
        tracing::info!(
            index = snapshot.index,
            term = snapshot.term,
            "snapshot installed"
        );
        let _ = self.events.send((
            FIRST_RANGE,
            StorageEvent::Applied {
                applied_index: snapshot.index,
                results: Vec::new(),
                members: Some(sm.members().clone()),
                keys: sm.key_counts(),
                outcomes: Vec::new(),
            },
        ));
        self.snapshot_events
            .send(SnapshotEvent::Installed(snapshot))
            .is_ok()
    }

    /// Replaces the state machine with the staged snapshot. False (reported) if it cannot.
    fn swap_in_staged(&mut self, snapshot: SnapshotMeta) -> bool {
        let staged = match self.staged.take() {
            Some(s) if s.meta() == snapshot => s,
            _ => {
                return self.fail(StorageError::NotStaged {
                    index: snapshot.index,
                    term: snapshot.term,
                })
            }
        };
        let Some(sm) = self.sm.take() else {
            return false;
        };
        let installed = if self.install_without_data {
            // The deliberate bug: the old state machine stays, moved up to the snapshot's
            // index with empty entries, and the install is reported done.
            let mut sm = sm;
            let filler: Vec<Entry> = (sm.applied_index() + 1..=snapshot.index)
                .map(|i| Entry::new(snapshot.term, i, raft_core::EntryKind::Noop, Bytes::new()))
                .collect();
            sm.apply(&filler).and_then(|_| sm.sync()).map(|_| sm)
        } else {
            sm.install(staged)
        };
        match installed {
            Ok(sm) => {
                self.sm = Some(sm);
                true
            }
            Err(e) => self.fail(StorageError::kv(format!(
                "installing snapshot {}/{} in the state machine",
                snapshot.index, snapshot.term
            ))(e)),
        }
    }
}
