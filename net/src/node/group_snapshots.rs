//! The group's IO for snapshots: it feeds the install state machine
//! ([`super::snapshot_install`]) the snapshot channel's events and carries out its actions:
//! fetch tasks, the apply and log workers' requests, and the core's calls.

use raft_core::SnapshotWrite;
use tokio::sync::oneshot;

use super::group::Group;
use super::snapshot_install::{Action, SnapshotEvent};
use crate::error::TransferError;
use crate::snapshot_transfer::{FetchJob, FetchRequest};
use crate::storage::{ApplyRequest, LogRequest};

impl Group {
    /// The apply worker or the peer transport reports on a snapshot.
    pub fn on_snapshot_event(&mut self, event: SnapshotEvent) {
        match event {
            SnapshotEvent::Staged { job, snapshot } => {
                self.install.handle_staged(job, snapshot);
            }
            SnapshotEvent::FetchFailed { job, error } => {
                if let Some(asked) = self.install.handle_fetch_failed(job) {
                    tracing::warn!(id = self.cfg.id, from = asked.from, %error, "fetching a snapshot failed; the core asks again at the leader's next message");
                }
            }
            SnapshotEvent::Installed(meta) => {
                self.cfg.metrics.snapshots_installed.inc();
                self.install.handle_installed();
                self.images.installed(meta.index);
            }
            SnapshotEvent::Sent {
                to,
                ok,
                bytes,
                took,
                range: _,
            } => {
                let m = &self.cfg.metrics;
                m.snapshot_sent_bytes.inc_by(bytes);
                if ok {
                    m.snapshots_sent.inc();
                    m.snapshot_send_duration.observe_duration(took);
                }
                self.core.report_snapshot(to, ok)
            }
        }
        self.perform_snapshot_actions();
    }

    /// Carries out what the install state machine asks, in order.
    pub(super) fn perform_snapshot_actions(&mut self) {
        while let Some(action) = self.install.poll_action() {
            match action {
                Action::StartFetch { job, asked } => self.start_fetch(job, asked),
                Action::CancelFetch { job } => {
                    if let Some((_, task)) = self.fetch_task.take_if(|(j, _)| *j == job) {
                        task.abort();
                    }
                    let _ = self.queues.apply.send(ApplyRequest::EndReceive {
                        job,
                        outcome: Err(TransferError::Superseded),
                    });
                }
                Action::OfferToCore(snapshot) => {
                    let taken = self.core.on_snapshot_fetched(snapshot);
                    self.install.handle_offer_answered(taken);
                }
                Action::ReportFetchFailed(snapshot) => self.core.on_snapshot_fetch_failed(snapshot),
                Action::Install(write) => self.install_snapshot(write),
                Action::DiscardStaged => {
                    let _ = self.queues.apply.send(ApplyRequest::DiscardStaged);
                }
            }
        }
    }

    /// Opens receive job `job` on the apply worker and starts a task fetching into it.
    fn start_fetch(&mut self, job: u64, asked: raft_core::SnapshotToFetch) {
        let Some(addr) = self.members.peer_addr(asked.from) else {
            self.install.handle_fetch_failed(job);
            return;
        };
        tracing::info!(
            id = self.cfg.id,
            from = asked.from,
            index = asked.snapshot.index,
            "fetching a snapshot"
        );
        let _ = self.queues.apply.send(ApplyRequest::BeginReceive {
            job,
            at_least: asked.snapshot.clone(),
        });
        let task = (self.fetcher)(FetchJob {
            job,
            from: asked.from,
            addr,
            request: FetchRequest {
                from: self.cfg.id,
                range: self.range,
                at_least: asked.snapshot,
            },
        });
        self.fetch_task = Some((job, task));
    }

    /// Installs the staged snapshot, before this `Ready`'s write: the apply worker replaces the
    /// state machine, then the log worker the log (queued before the writes that follow), then
    /// the apply worker finishes the install. The two are linked by a pair of oneshots, so the
    /// loop never waits.
    fn install_snapshot(&mut self, write: SnapshotWrite) {
        self.requests.snapshot_installed();
        let snapshot = write.snapshot;
        if let Some(observer) = &self.cfg.observer {
            observer.snapshot_installed(self.cfg.id, self.range, snapshot.clone());
        }
        let (state_tx, state_rx) = oneshot::channel();
        let (log_tx, log_rx) = oneshot::channel();
        let index = snapshot.index;
        let _ = self.queues.apply.send(ApplyRequest::Install {
            snapshot: snapshot.clone(),
            state_installed: state_tx,
            log_installed: log_rx,
        });
        let _ = self.queues.log.send(LogRequest::InstallSnapshot {
            id: write.id,
            snapshot: snapshot.clone(),
            state_installed: state_rx,
            log_installed: log_tx,
        });
        self.images.installing(index);
        if index > self.handed_to_apply {
            self.handed_to_apply = index;
            self.release_reads_up_to(index);
        }
    }
}
