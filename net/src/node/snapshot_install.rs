//! Receiving and installing a leader's snapshot, as a state machine of its own with no IO:
//! `handle_*` tells it what happened, [`SnapshotInstall::poll_action`] says what to do next,
//! and the group ([`super::group`]) does it. Its inputs come from the core's `Ready` and from
//! the snapshot channel ([`SnapshotEvent`]), which the apply worker and the peer transport
//! report on; storage events never carry snapshot news. It keeps only the fetch in progress:
//! what was asked for, failed or staged is the core's state.
//!
//! One install, step by step:
//! 1. the core asks for a snapshot (`Ready::snapshot_to_fetch`): [`handle_fetch_asked`] ->
//!    [`Action::StartFetch`] (the apply worker opens receive job `job`, a task fetches the
//!    chunks into it). A repeated identical ask means "still wanted" and changes nothing; an ask
//!    for another snapshot or from another node (a new leader) cancels the fetch in progress
//!    first ([`Action::CancelFetch`]).
//! 2. the apply worker staged the data ([`SnapshotEvent::Staged`]): [`handle_staged`] ->
//!    [`Action::OfferToCore`]. Or the fetch failed ([`SnapshotEvent::FetchFailed`]):
//!    [`handle_fetch_failed`] -> [`Action::ReportFetchFailed`], and the core asks again when it
//!    next hears from the leader (step 1 starts a new job).
//! 3. the core answers the offer (`on_snapshot_fetched`'s result, [`handle_offer_answered`]):
//!    declined (it caught up meanwhile) -> [`Action::DiscardStaged`]; taken -> it asks to
//!    install it in its next `Ready` (`Ready::snapshot_write`): [`handle_install_asked`] ->
//!    [`Action::Install`], carried out by the apply and log workers together.
//! 4. the apply worker finished the install ([`SnapshotEvent::Installed`]):
//!    [`handle_installed`] counts it.
//!
//! [`handle_fetch_asked`]: SnapshotInstall::handle_fetch_asked
//! [`handle_staged`]: SnapshotInstall::handle_staged
//! [`handle_fetch_failed`]: SnapshotInstall::handle_fetch_failed
//! [`handle_offer_answered`]: SnapshotInstall::handle_offer_answered
//! [`handle_install_asked`]: SnapshotInstall::handle_install_asked
//! [`handle_installed`]: SnapshotInstall::handle_installed

use std::collections::VecDeque;

use raft_core::{NodeId, SnapshotMeta, SnapshotToFetch, SnapshotWrite};

use crate::error::TransferError;

/// What the apply worker and the peer transport report about snapshots, on a channel of its own.
#[derive(Debug)]
pub enum SnapshotEvent {
    /// Receive job `job` has `snapshot` staged, ready to install.
    Staged { job: u64, snapshot: SnapshotMeta },
    /// Receive job `job` failed; nothing of it remains.
    FetchFailed { job: u64, error: TransferError },
    /// An install finished: the state machine and the log are the snapshot.
    Installed(SnapshotMeta),
    /// A transfer of range `range`'s image to `to` ended (the leader's side).
    /// `bytes` of chunks went out in `took` (for the metrics).
    Sent {
        range: kv::ranges::RangeId,
        to: NodeId,
        ok: bool,
        bytes: u64,
        took: std::time::Duration,
    },
}

/// What the group must do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Open receive job `job` on the apply worker and fetch `asked` into it.
    StartFetch { job: u64, asked: SnapshotToFetch },
    /// Stop fetching job `job` and drop what it received.
    CancelFetch { job: u64 },
    /// Tell the core the snapshot is staged (`on_snapshot_fetched`), and pass its answer to
    /// [`SnapshotInstall::handle_offer_answered`].
    OfferToCore(SnapshotMeta),
    /// Tell the core the fetch of this snapshot failed (`on_snapshot_fetch_failed`).
    ReportFetchFailed(SnapshotMeta),
    /// Install the staged snapshot: the state machine, then the log, as one write of the core.
    Install(SnapshotWrite),
    /// The core did not take the staged snapshot: remove it.
    DiscardStaged,
}

/// A fetch in progress.
#[derive(Clone, Debug)]
struct Fetch {
    job: u64,
    asked: SnapshotToFetch,
}

/// The follower's side of one snapshot at a time: fetch, stage, offer, install or discard.
#[derive(Debug)]
pub struct SnapshotInstall {
    fetch: Option<Fetch>,
    next_job: u64,
    installed: u64,
    actions: VecDeque<Action>,
}

impl Default for SnapshotInstall {
    fn default() -> Self {
        Self::new()
    }
}

impl SnapshotInstall {
    pub fn new() -> Self {
        Self {
            fetch: None,
            next_job: 1,
            installed: 0,
            actions: VecDeque::new(),
        }
    }

    /// The core asks for `asked`'s data.
    pub fn handle_fetch_asked(&mut self, asked: SnapshotToFetch) {
        if self.fetch.as_ref().is_some_and(|f| f.asked == asked) {
            return;
        }
        if let Some(old) = self.fetch.take() {
            self.actions.push_back(Action::CancelFetch { job: old.job });
        }
        let job = self.next_job;
        self.next_job += 1;
        self.fetch = Some(Fetch {
            job,
            asked: asked.clone(),
        });
        self.actions.push_back(Action::StartFetch { job, asked });
    }

    /// Receive job `job` has `snapshot` staged. Returns false if the job is no longer the
    /// current one (nothing is offered then).
    pub fn handle_staged(&mut self, job: u64, snapshot: SnapshotMeta) -> bool {
        if self.fetch.as_ref().is_none_or(|f| f.job != job) {
            return false;
        }
        self.fetch = None;
        self.actions.push_back(Action::OfferToCore(snapshot));
        true
    }

    /// Receive job `job` failed. Returns what it was fetching if it was the current job; the
    /// failure is then reported to the core, which asks again (a new job) when it next hears
    /// from the leader.
    pub fn handle_fetch_failed(&mut self, job: u64) -> Option<SnapshotToFetch> {
        let f = self.fetch.take_if(|f| f.job == job)?;
        self.actions
            .push_back(Action::ReportFetchFailed(f.asked.snapshot.clone()));
        Some(f.asked)
    }

    /// The core answered an [`Action::OfferToCore`]: a snapshot it declined (it caught up
    /// meanwhile) is discarded at once; one it took it asks to install in its next `Ready`.
    pub fn handle_offer_answered(&mut self, taken: bool) {
        if !taken {
            self.actions.push_back(Action::DiscardStaged);
        }
    }

    /// The core asks to install the staged snapshot.
    pub fn handle_install_asked(&mut self, write: SnapshotWrite) {
        self.actions.push_back(Action::Install(write));
    }

    /// An install finished.
    pub fn handle_installed(&mut self) {
        self.installed += 1;
    }

    /// The next thing to do, in the order the events asked for them.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Snapshots installed since the process started.
    pub fn installed(&self) -> u64 {
        self.installed
    }

    /// The receive job in progress, if any.
    pub fn fetching(&self) -> Option<u64> {
        self.fetch.as_ref().map(|f| f.job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_core::WriteId;

    fn meta(index: u64, term: u64) -> SnapshotMeta {
        SnapshotMeta::new(index, term, Default::default())
    }

    fn ask(from: NodeId, index: u64) -> SnapshotToFetch {
        SnapshotToFetch {
            from,
            snapshot: meta(index, 2),
        }
    }

    fn actions(sm: &mut SnapshotInstall) -> Vec<Action> {
        std::iter::from_fn(|| sm.poll_action()).collect()
    }

    #[test]
    fn a_repeated_ask_carries_on_and_a_failed_fetch_is_reported_to_the_core() {
        let mut sm = SnapshotInstall::new();
        sm.handle_fetch_asked(ask(1, 100));
        assert_eq!(
            actions(&mut sm),
            [Action::StartFetch {
                job: 1,
                asked: ask(1, 100)
            }]
        );
        sm.handle_fetch_asked(ask(1, 100));
        assert_eq!(actions(&mut sm), [], "still wanted: the fetch carries on");
        assert_eq!(sm.handle_fetch_failed(1), Some(ask(1, 100)));
        assert_eq!(
            actions(&mut sm),
            [Action::ReportFetchFailed(meta(100, 2))],
            "the core keeps the failure and asks again"
        );
        assert_eq!(sm.fetching(), None);
        assert_eq!(sm.handle_fetch_failed(1), None, "reported once");
        sm.handle_fetch_asked(ask(1, 100));
        assert_eq!(
            actions(&mut sm),
            [Action::StartFetch {
                job: 2,
                asked: ask(1, 100)
            }],
            "the failed job is over: nothing to cancel"
        );
        assert_eq!(sm.fetching(), Some(2));
    }

    #[test]
    fn a_new_leaders_offer_cancels_the_fetch_and_the_old_jobs_news_is_ignored() {
        let mut sm = SnapshotInstall::new();
        sm.handle_fetch_asked(ask(1, 100));
        sm.handle_fetch_asked(ask(2, 150));
        assert_eq!(
            actions(&mut sm),
            [
                Action::StartFetch {
                    job: 1,
                    asked: ask(1, 100)
                },
                Action::CancelFetch { job: 1 },
                Action::StartFetch {
                    job: 2,
                    asked: ask(2, 150)
                }
            ]
        );
        assert!(!sm.handle_staged(1, meta(100, 2)), "job 1 was cancelled");
        assert_eq!(sm.handle_fetch_failed(1), None);
        assert_eq!(actions(&mut sm), []);
        assert!(sm.handle_staged(2, meta(160, 2)), "a later image is fine");
        assert_eq!(actions(&mut sm), [Action::OfferToCore(meta(160, 2))]);
    }

    #[test]
    fn a_staged_snapshot_the_core_takes_is_installed_and_one_it_declines_is_discarded() {
        let mut sm = SnapshotInstall::new();
        sm.handle_fetch_asked(ask(1, 100));
        assert!(sm.handle_staged(1, meta(100, 2)));
        sm.handle_offer_answered(true);
        let write = SnapshotWrite {
            id: WriteId { seq: 7, term: 2 },
            snapshot: meta(100, 2),
        };
        sm.handle_install_asked(write.clone());
        assert_eq!(
            actions(&mut sm)[1..],
            [Action::OfferToCore(meta(100, 2)), Action::Install(write)],
            "taken: installed, not discarded"
        );
        sm.handle_installed();
        assert_eq!(sm.installed(), 1);

        sm.handle_fetch_asked(ask(1, 200));
        assert!(sm.handle_staged(2, meta(200, 2)));
        sm.handle_offer_answered(false);
        assert_eq!(
            actions(&mut sm)[1..],
            [Action::OfferToCore(meta(200, 2)), Action::DiscardStaged],
            "declined: discarded at once"
        );
        assert_eq!(sm.fetching(), None);
        assert_eq!(sm.installed(), 1);
    }
}
