//! One Raft group: the core and what belongs to it alone: its client requests, its apply
//! progress, its snapshot images and install. It feeds the core and acts on its `Ready`s; the
//! loop ([`super::run`]) hands it the inputs. Nothing here decides anything about Raft.

use std::sync::Arc;

use kv::ranges::RangeId;
use raft_core::{Index, Message, NodeId, RawNode, SnapshotMeta, Term};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::admin_waits::AdminWaits;
use super::config::NodeConfig;
use super::identity::PeerGate;
use super::images::Images;
use super::membership::{Members, REMOVED};
use super::requests::{ConfirmedRead, PendingRead, Requests};
use super::snapshot_install::SnapshotInstall;
use super::tick_clock::TickClock;
use crate::error::NodeError;
use crate::request::{ClientRequest, NodeInfo, RequestError};
use crate::snapshot_transfer::FetchJob;
use crate::storage::{ApplyRequest, LogRequest, RangeQueue, StorageEvent};
use crate::transport::RangeMessage;

/// Starts the task that fetches a snapshot (it needs the network, which the group does not know).
pub type Fetcher = Box<dyn Fn(FetchJob) -> JoinHandle<()> + Send + Sync>;

/// The group's queues to the storage threads.
pub struct StorageQueues {
    pub log: RangeQueue<LogRequest>,
    pub apply: RangeQueue<ApplyRequest>,
}

impl StorageQueues {
    /// The same storage threads' queues for `range`.
    pub fn for_range(&self, range: RangeId) -> Self {
        Self {
            log: RangeQueue::for_range(&self.log, range),
            apply: self.apply.for_range(range),
        }
    }
}

pub struct Group {
    /// The range whose Raft group this is: its messages are tagged with it.
    pub(super) range: RangeId,
    pub(super) cfg: NodeConfig,
    pub(super) core: RawNode,
    pub(super) queues: StorageQueues,
    /// The address book and each peer's bounded outbound queue.
    pub(super) members: Members,
    pub(super) requests: Requests,
    /// Operator requests waiting for their entry, or for a new leader.
    pub(super) admin: AdminWaits,
    pub(super) images: Images,
    pub(super) install: SnapshotInstall,
    pub(super) fetcher: Fetcher,
    /// The fetch task of the current receive job.
    pub(super) fetch_task: Option<(u64, JoinHandle<()>)>,
    /// Committed entries up to here are queued to the apply worker.
    pub(super) handed_to_apply: Index,
    /// The apply worker applied entries up to here.
    pub(super) applied_index: Index,
    /// Keys with a deadline, as of the last apply: while there are any, the leader stamps its
    /// clock into the log every tick so that they expire without client writes.
    volatile_keys: u64,
    key_counts: kv::state_machine::KeyCounts,
    term_seen: Term,
    /// Admits peers by their pinned incarnation (start sets it; the membership layer forgets a
    /// removed member's pin through it).
    pub(super) peer_gate: Option<Arc<PeerGate>>,
    /// In lease mode, the ticks the core is owed by the clock.
    tick_clock: Option<TickClock>,
    /// When each peer was last heard from, for health and reachability.
    pub(super) silence: super::group_metrics::PeerSilence,
    /// Set by the store while the node hosts several ranges: a lagging follower could then
    /// get no snapshot, so the log keeps every entry (even past an image taken before).
    pub(super) compaction_paused: bool,
    /// On the first range's group: the other ranges whose configuration this node still sees
    /// differ from this one's (`member_follow.rs`), for `member list`.
    pub(super) ranges_behind: Vec<RangeId>,
}

impl Group {
    /// The group of range `range`; `(applied_index, image)` is what its state machine found on
    /// disk: the index it applied up to and its newest snapshot image.
    pub fn new(
        range: RangeId,
        cfg: NodeConfig,
        core: RawNode,
        queues: StorageQueues,
        members: Members,
        fetcher: Fetcher,
        (applied_index, image): (Index, SnapshotMeta),
    ) -> Self {
        let images = Images::new(cfg.snapshots, image.index, core.snapshot().index);
        Self {
            range,
            term_seen: core.term(),
            cfg,
            core,
            queues,
            members,
            requests: Requests::default(),
            admin: AdminWaits::default(),
            images,
            install: SnapshotInstall::new(),
            fetcher,
            fetch_task: None,
            handed_to_apply: applied_index,
            applied_index,
            volatile_keys: 0,
            key_counts: Default::default(),
            peer_gate: None,
            tick_clock: None,
            silence: Default::default(),
            compaction_paused: false,
            ranges_behind: Vec::new(),
        }
        .with_tick_clock()
    }

    fn with_tick_clock(mut self) -> Self {
        if matches!(self.cfg.read_mode, raft_core::ReadMode::Lease { .. }) {
            self.tick_clock = Some(TickClock::new(self.cfg.tick));
        }
        self
    }

    /// Ticks the core as many times as the clock says are owed (lease mode only; `at_least`
    /// when the ticker fired).
    fn catch_up_ticks(&mut self, now: Instant, at_least: u64) {
        let owed = self
            .tick_clock
            .as_mut()
            .map_or(0, |c| c.owed(now, at_least));
        for _ in 0..owed {
            self.core.tick();
        }
    }

    pub fn tick(&mut self, now: Instant) {
        self.core.set_clock(self.cfg.wall_clock.now_ms());
        if self.tick_clock.is_some() {
            self.catch_up_ticks(now, 1);
        } else {
            self.core.tick();
        }
        if self.volatile_keys > 0 {
            // Time must pass in the log for keys to expire while no client writes.
            self.core.stamp_clock();
        }
        self.requests.expire(now);
        self.admin.expire(now);
        if self.core.role() == raft_core::Role::Leader && self.requests.has_parked() {
            // Parked by a leadership transfer that was abandoned, or is still going on (then
            // they are parked again).
            self.resubmit_parked();
        }
        self.publish_health();
    }

    pub fn step(&mut self, msg: Message) {
        self.note_received(&msg);
        self.core.step(msg);
    }

    pub fn report_unreachable(&mut self, peer: NodeId) {
        self.core.report_unreachable(peer);
    }

    /// A storage thread reports. An error stops the node.
    pub fn on_storage_event(&mut self, event: StorageEvent) -> Result<(), NodeError> {
        match event {
            StorageEvent::Persisted(id) => self.core.on_persisted(id),
            StorageEvent::Applied {
                applied_index,
                results,
                members,
                keys,
                outcomes,
            } => {
                if let (Some(observer), false) = (&self.cfg.observer, outcomes.is_empty()) {
                    observer.applied(self.cfg.id, self.range, &outcomes);
                }
                self.volatile_keys = keys.volatile;
                self.key_counts = keys;
                if let Some(table) = members {
                    let left = self.members.note_applied(table, applied_index);
                    self.forget_pins(&left);
                }
                self.core.on_applied(applied_index);
                self.applied_index = self.applied_index.max(applied_index);
                self.requests.writes_applied(results);
                self.answer_what_a_removed_node_cannot();
                // Applying moves the compaction point into reach (images taken earlier).
                self.maybe_compact();
                self.admin.applied(self.applied_index);
            }
            // The store handles range creation; it never hands these to a group.
            StorageEvent::RangeCreated { .. } | StorageEvent::RangeLogOpened { .. } => {}
            StorageEvent::Failed(error) => {
                tracing::error!(id = self.cfg.id, %error, "storage failed; stopping the node");
                return Err(NodeError::Storage(error));
            }
            StorageEvent::SnapshotBuilt(meta) => {
                self.cfg.metrics.snapshots_taken.inc();
                if let Some(observer) = &self.cfg.observer {
                    observer.snapshot_taken(self.cfg.id, self.range, meta.clone());
                }
                self.images.taken(meta.index);
                self.maybe_compact();
            }
        }
        Ok(())
    }

    /// Members removed by an applied change may come back only as new members (a new data
    /// directory, a new incarnation): forgetting their pinned incarnation lets them in then.
    fn forget_pins(&self, left: &[NodeId]) {
        let Some(gate) = &self.peer_gate else { return };
        for &id in left {
            match gate.forget(id) {
                Ok(_) => tracing::info!(
                    id = self.cfg.id,
                    peer = id,
                    "forgot a removed member's incarnation"
                ),
                Err(e) => {
                    tracing::warn!(id = self.cfg.id, peer = id, error = %e, "cannot forget a removed member's incarnation")
                }
            }
        }
    }

    /// Compacts the core and the log up to the newest image the applied index has passed by the
    /// policy's tail.
    fn maybe_compact(&mut self) {
        if self.compaction_paused {
            return;
        }
        let Some(up_to) = self.images.compaction_point(self.core.applied_index()) else {
            return;
        };
        match self.core.compact(up_to) {
            Ok(()) => {
                tracing::debug!(id = self.cfg.id, up_to, "compacting the log");
                // The log start records the configuration at `up_to`, as the core computed it.
                let _ = self
                    .queues
                    .log
                    .send(LogRequest::Compact(self.core.snapshot()));
            }
            // Already past it: a snapshot from the leader was installed meanwhile.
            Err(e) => tracing::debug!(id = self.cfg.id, error = %e, "not compacting"),
        }
    }

    /// A client request arrived.
    pub fn on_request(&mut self, req: ClientRequest) {
        let deadline = Instant::now() + self.cfg.request_timeout;
        self.submit(req, deadline);
    }

    fn submit(&mut self, req: ClientRequest, deadline: Instant) {
        if self.members.is_removed(self.core.membership())
            && !matches!(req, ClientRequest::Info { .. })
        {
            return req.refuse_as_removed(REMOVED);
        }
        match req {
            ClientRequest::Write { cmd, reply } => {
                let key = (cmd.client_id, cmd.seq);
                let payload = cmd.encode();
                self.core.set_clock(self.cfg.wall_clock.now_ms());
                let proposal = self.core.propose(payload.clone());
                self.cfg.metrics.proposal(match &proposal {
                    Ok(_) => 0,
                    Err(e) if self.requests.worth_parking(e) => 1,
                    Err(_) => 2,
                });
                match proposal {
                    Ok(proposed) => {
                        let retry = (cmd.client_id != kv::SESSIONLESS_CLIENT)
                            .then(|| (payload, self.core.term()));
                        self.requests
                            .track_write(key, &proposed, retry, reply, deadline)
                    }
                    Err(e) if self.requests.worth_parking(&e) => self
                        .requests
                        .park(ClientRequest::Write { cmd, reply }, deadline),
                    Err(e) => {
                        let _ = reply.send(Err(RequestError::TryAgain(e.to_string())));
                    }
                }
            }
            ClientRequest::Read { op, reply } if self.cfg.serve_reads_locally() => {
                let _ = self.queues.apply.send(ApplyRequest::Read { op, reply });
            }
            ClientRequest::Read { op, reply } => {
                if self.tick_clock.is_some() {
                    // A lease is judged by the tick count: bring it up to the clock first.
                    self.catch_up_ticks(Instant::now(), 0);
                }
                let (id, ctx) = self.requests.next_read();
                match self.core.read_index(ctx) {
                    Ok(()) => self.requests.track_read(id, op, reply, deadline),
                    Err(e) if self.requests.worth_parking(&e) => self
                        .requests
                        .park(ClientRequest::Read { op, reply }, deadline),
                    Err(e) => {
                        let _ = reply.send(Err(RequestError::TryAgain(e.to_string())));
                    }
                }
            }
            ClientRequest::Info { reply } => {
                let _ = reply.send(self.info());
            }
            ClientRequest::Admin { req, reply } => self.on_admin(req, reply, deadline),
        }
    }

    /// A removed node that has applied up to the committed entry that removed it will learn
    /// nothing more: what still waits is answered now rather than at its timeout.
    fn answer_what_a_removed_node_cannot(&mut self) {
        let membership = self.core.membership();
        let removal = self.core.membership_index().unwrap_or(0);
        if self.members.is_removed(membership)
            && self.core.commit_index() >= removal
            && self.applied_index >= self.core.commit_index()
        {
            self.requests.answer_all_as_removed();
        }
    }

    fn info(&self) -> NodeInfo {
        NodeInfo {
            id: self.cfg.id,
            cluster_id: self.cfg.cluster_id,
            incarnation: self.cfg.incarnation,
            refused_incarnation_frames: self.peer_gate.as_ref().map_or(0, |g| g.refused_frames()),
            role: self.core.role(),
            term: self.core.term(),
            leader: self.core.leader(),
            commit_index: self.core.commit_index(),
            applied_index: self.applied_index,
            last_index: self.core.last_index(),
            last_snapshot_index: self.images.newest(),
            log_start_index: self.core.snapshot().index,
            snapshot_count: self.images.taken_count(),
            snapshots_installed: self.install.installed(),
            keys: self.key_counts.keys,
            expires: self.key_counts.volatile,
            // A removed node hears from no leader; the one it last knew may have lost the
            // leadership long ago, and naming it would send clients back and forth between
            // the two (the simulator's seed 78).
            leader_client_addr: self
                .core
                .leader()
                .filter(|_| !self.members.is_removed(self.core.membership()))
                .and_then(|l| {
                    self.members
                        .client_addr(l)
                        .or_else(|| self.cfg.client_addrs.get(&l).cloned())
                }),
            membership: self.core.membership().clone(),
            read_mode: crate::request::ReadModeInfo::of(self.cfg.read_mode),
        }
    }

    /// Acts on every `Ready` the core has: the snapshot steps first (an install comes before
    /// the write of the same `Ready`), then the write, messages, committed entries and reads.
    pub fn drain_ready(&mut self) {
        while self.core.has_ready() {
            let ready = self.core.take_ready();
            if let Some(soft) = ready.soft_state {
                self.role_changed(soft);
            }
            if let Some(asked) = ready.snapshot_to_fetch {
                self.install.handle_fetch_asked(asked);
                self.perform_snapshot_actions();
            }
            if let Some(write) = ready.snapshot_write {
                self.install.handle_install_asked(write);
                self.perform_snapshot_actions();
            }
            if let Some(write) = ready.persist {
                self.members.note_appended(&write.entries);
                let _ = self.queues.log.send(LogRequest::Persist(write));
            }
            self.members.maybe_follow(self.core.membership());
            self.send_messages(ready.messages);
            self.hand_to_apply(ready.committed);
            for rs in ready.read_states {
                self.note_read_confirmed(&rs.ctx);
                match self
                    .requests
                    .read_confirmed(&rs.ctx, rs.index, self.handed_to_apply)
                {
                    ConfirmedRead::Serve(read) => self.serve_read(read),
                    ConfirmedRead::Waiting | ConfirmedRead::Gone => {}
                }
            }
        }
    }

    fn role_changed(&mut self, soft: raft_core::SoftState) {
        super::change_reason::log_change(&soft, self.cfg.tick);
        self.note_role(soft.role, soft.leader);
        if let Some(observer) = &self.cfg.observer {
            observer.role_changed(self.cfg.id, self.range, soft.term, soft.role, soft.leader);
        }
        if soft.term != self.term_seen {
            self.term_seen = soft.term;
            self.requests.leadership_changed();
        }
        self.admin.role_changed(soft.role, soft.leader);
        if soft.leader.is_some() {
            self.resubmit_parked();
            self.propose_lost_writes_again(soft.term);
        }
    }

    /// See [`Requests::writes_to_propose_again`]. A proposal refused now is left to its
    /// client's timeout, as before.
    fn propose_lost_writes_again(&mut self, term: raft_core::Term) {
        for (key, payload) in self.requests.writes_to_propose_again(term) {
            if let Ok(proposed) = self.core.propose(payload) {
                self.requests.proposed_again(key, &proposed);
            }
        }
    }

    fn resubmit_parked(&mut self) {
        for parked in self.requests.take_parked() {
            self.submit(parked.req, parked.deadline);
        }
    }

    fn send_messages(&mut self, messages: Vec<Message>) {
        for msg in messages {
            if !self.members.knows_peer_addr(msg.to) {
                // A peer the book does not know yet (a leader added by an entry this node has
                // not received): where it said it listens, in its hello.
                if let Some(addr) = self
                    .peer_gate
                    .as_ref()
                    .and_then(|g| g.introduced_addr(msg.to))
                {
                    self.members.learn_introduced(msg.to, addr);
                }
            }
            let kind = crate::metrics::message_kind(&msg);
            if let Some(queue) = self.members.queue(msg.to) {
                let to = msg.to;
                let range = self.range;
                let sent = queue.try_send(RangeMessage { range, msg }).is_ok();
                self.note_sent(kind, sent);
                if !sent {
                    // A slow or dead peer never blocks the node: drop, and stop streaming to it.
                    self.core.report_unreachable(to);
                }
            } else {
                self.note_sent(kind, false);
            }
        }
    }

    fn hand_to_apply(&mut self, committed: Vec<raft_core::Entry>) {
        let Some(last) = committed.last().map(|e| e.index) else {
            return;
        };
        if let Some(observer) = &self.cfg.observer {
            observer.committed(self.cfg.id, self.range, &committed);
        }
        self.admin.committed(&committed);
        let _ = self.queues.apply.send(ApplyRequest::Entries(committed));
        self.handed_to_apply = last;
        self.release_reads_up_to(last);
    }

    /// Hands the confirmed reads waiting for entries up to `index` to the apply worker, which
    /// has been handed those entries.
    pub(super) fn release_reads_up_to(&mut self, index: Index) {
        let released: Vec<PendingRead> = self.requests.release_reads_up_to(index).collect();
        for read in released {
            self.serve_read(read);
        }
    }

    fn serve_read(&self, read: PendingRead) {
        let _ = self.queues.apply.send(ApplyRequest::Read {
            op: read.op,
            reply: read.reply,
        });
    }

    /// Answers every request still waiting and closes the queues to the storage threads, so
    /// that they finish what is queued and exit.
    pub fn stop(self) {
        self.requests.shut_down();
        self.admin.shut_down();
        if let Some((_, task)) = self.fetch_task {
            task.abort();
        }
        // The fetcher holds a sender of the apply queue: dropping it (with the group) lets the
        // apply worker see its queue close.
    }
}
