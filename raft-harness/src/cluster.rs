//! The simulated cluster: cores, their disks and the network between them, and the events a
//! test drives (ticks, deliveries, completed writes and fetches, crashes, partitions).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use crate::invariants::{violation, InvariantChecker, Violation};
use raft_core::{
    CompactError, ConfChangeEntry, Config, Entry, EntryKind, HardState, Index, Membership, Message,
    NodeId, Persist, RawNode, RestartState, Role, SeededRng, SnapshotMeta, SnapshotToFetch,
    SnapshotWrite,
};

/// How hostile the network and the nodes are.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Faults {
    /// Probability that a sent message is lost.
    pub drop: f64,
    /// Probability that a sent message is delivered twice.
    pub duplicate: f64,
    /// Messages are delayed by up to this many steps (and so reordered).
    pub max_delay: u64,
    pub crashes: bool,
    pub partitions: bool,
}

/// A write handed out by a core: a snapshot install or hard state and entries.
pub(crate) enum QueuedWrite {
    Snapshot(SnapshotWrite),
    Persist(Persist),
}

/// One node of the simulated cluster: its core (absent while crashed) and its disk.
pub struct SimNode {
    pub core: Option<RawNode>,
    pub(crate) cfg: Config,
    pub(crate) disk_hard_state: HardState,
    /// Where the durable log starts: the last entry the durable snapshot covers.
    pub(crate) disk_snapshot: SnapshotMeta,
    /// The durable snapshot's data: the applied entries it covers, `[i]` with index `i + 1`.
    pub(crate) disk_snapshot_data: Vec<Entry>,
    /// Durable entries after the snapshot; `disk_log[i]` has index `disk_snapshot.index + i + 1`.
    pub(crate) disk_log: Vec<Entry>,
    /// Writes handed out by the core and not yet durable: a crash loses them.
    pub(crate) pending_writes: VecDeque<QueuedWrite>,
    /// The snapshot the core asked to fetch, not fetched yet (a crash forgets it).
    pub(crate) fetch: Option<SnapshotToFetch>,
    /// Fetched snapshot data waiting for the core's install write (a crash loses it).
    pub(crate) staged: Option<(SnapshotMeta, Vec<Entry>)>,
    /// Highest index applied in this life of the node.
    pub(crate) applied: Index,
    /// Commit index last seen, to check what each advance commits.
    pub(crate) seen_commit: Index,
}

impl SimNode {
    pub fn is_up(&self) -> bool {
        self.core.is_some()
    }

    /// The durable entry at `index`, in the snapshot's data or in the log, if any.
    pub fn durable_entry(&self, index: Index) -> Option<&Entry> {
        let i = index.checked_sub(1)? as usize;
        if index <= self.disk_snapshot.index {
            self.disk_snapshot_data.get(i)
        } else {
            self.disk_log
                .get((index - self.disk_snapshot.index - 1) as usize)
        }
    }

    /// The durable log after the snapshot.
    pub fn durable_log(&self) -> &[Entry] {
        &self.disk_log
    }

    /// The durable snapshot's metadata.
    pub fn durable_snapshot(&self) -> SnapshotMeta {
        self.disk_snapshot.clone()
    }

    /// The configuration in force at durable `index` (at most the last durable index): that of
    /// the last configuration-change entry at or below it, else the cluster's first one.
    pub fn durable_membership_at(&self, index: Index, bootstrap: &Membership) -> Membership {
        (1..=index)
            .rev()
            .filter_map(|i| self.durable_entry(i))
            .find(|e| e.kind == EntryKind::ConfChange)
            .and_then(|e| ConfChangeEntry::decode(&e.payload).ok())
            .map_or_else(|| bootstrap.clone(), |c| c.membership)
    }

    /// The applied entries the durable snapshot covers.
    pub fn durable_snapshot_data(&self) -> &[Entry] {
        &self.disk_snapshot_data
    }
}

/// A cluster of cores under the test's control.
pub struct Cluster {
    pub nodes: BTreeMap<NodeId, SimNode>,
    pub(crate) in_flight: VecDeque<(u64, Message)>,
    /// Directed links that lose every message.
    pub(crate) cut: BTreeSet<(NodeId, NodeId)>,
    pub faults: Faults,
    /// Raft's invariants, fed with everything the cluster does.
    pub check: InvariantChecker,
    pub(crate) rng: SeededRng,
    pub(crate) now: u64,
    pub(crate) next_payload: u64,
    /// Recent events, printed when a check fails.
    pub(crate) recent: VecDeque<String>,
    pub keep_trace: bool,
    /// Random steps compact a node whose log since its snapshot passes this many entries.
    pub compaction: Option<Compaction>,
    /// Snapshots installed by followers, for reporting.
    pub snapshots_installed: u64,
    /// Replies delayed far longer than the other faults delay messages, if set.
    pub slow_replies: Option<SlowReplies>,
    /// The configuration the cluster was created with (in force until a conf-change entry).
    pub bootstrap: Membership,
    /// Random steps under faults sometimes change the configuration or transfer leadership.
    pub membership_changes: bool,
    /// Configuration changes a leader accepted, and leadership transfers it started.
    pub conf_changes_accepted: u64,
    pub transfers_started: u64,
}

/// Replies (every response message) delayed past election timeouts: with probability `share`
/// a reply is delivered between `min_steps` and `max_steps` steps after it was sent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SlowReplies {
    pub share: f64,
    pub min_steps: u64,
    pub max_steps: u64,
}

/// When random steps compact: once a node's applied entries since its snapshot pass
/// `max_log`, it compacts, keeping a random tail of up to `max_tail` applied entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compaction {
    pub max_log: u64,
    pub max_tail: u64,
}

impl Cluster {
    /// `n` nodes (ids 1..=n) with empty logs; `configure` adjusts each node's config.
    pub fn new(n: u64, seed: u64, configure: impl Fn(&mut Config)) -> Self {
        let states = (1..=n).map(|_| RestartState::default()).collect();
        Self::with_states(states, seed, configure)
    }

    /// One node per given state (ids 1..=n), as if each had restarted from that disk.
    pub fn with_states(
        states: Vec<RestartState>,
        seed: u64,
        configure: impl Fn(&mut Config),
    ) -> Self {
        let ids: Vec<NodeId> = (1..=states.len() as u64).collect();
        let mut rng = SeededRng::new(seed);
        let mut nodes = BTreeMap::new();
        for (id, state) in ids.iter().copied().zip(states) {
            let mut cfg = Config::new(id, ids.clone());
            cfg.seed = rng.next_u64();
            // The harness proposes on any node and recognises its payloads when they commit.
            cfg.forward_to_leader = true;
            configure(&mut cfg);
            let mut node = SimNode {
                core: None,
                cfg,
                disk_hard_state: state.hard_state,
                // A given state starts with no snapshot; tests compact once it runs.
                disk_snapshot: SnapshotMeta::default(),
                disk_snapshot_data: Vec::new(),
                disk_log: state.entries,
                pending_writes: VecDeque::new(),
                fetch: None,
                staged: None,
                applied: 0,
                seen_commit: 0,
            };
            boot(&mut node);
            nodes.insert(id, node);
        }
        Self {
            nodes,
            in_flight: VecDeque::new(),
            cut: BTreeSet::new(),
            faults: Faults::default(),
            check: InvariantChecker::new(),
            rng,
            now: 0,
            next_payload: 0,
            recent: VecDeque::new(),
            keep_trace: true,
            compaction: None,
            snapshots_installed: 0,
            slow_replies: None,
            bootstrap: Membership::with_voters(ids),
            membership_changes: false,
            conf_changes_accepted: 0,
            transfers_started: 0,
        }
    }

    pub fn core(&self, id: NodeId) -> &RawNode {
        self.nodes[&id].core.as_ref().expect("node is down")
    }

    pub fn core_mut(&mut self, id: NodeId) -> &mut RawNode {
        self.nodes
            .get_mut(&id)
            .and_then(|n| n.core.as_mut())
            .expect("node is down")
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// The leader with the highest term among live nodes, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|(&id, n)| {
                n.core
                    .as_ref()
                    .map(|c| (c.term(), c.role() == Role::Leader, id))
            })
            .filter(|&(_, leads, _)| leads)
            .max()
            .map(|(_, _, id)| id)
    }

    pub fn messages_in_flight(&self) -> usize {
        self.in_flight.len()
    }

    pub(crate) fn note(&mut self, what: impl FnOnce() -> String) {
        if self.keep_trace {
            if self.recent.len() == 64 {
                self.recent.pop_front();
            }
            let line = format!("t={} {}", self.now, what());
            self.recent.push_back(line);
        }
    }

    /// One line per node: role, term, log and commit positions, disk and queue sizes.
    pub fn describe(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .nodes
            .iter()
            .map(|(id, n)| match &n.core {
                None => format!("n{id}: down, disk holds {} entries", n.disk_log.len()),
                Some(c) => format!(
                    "n{id}: {:?} term {} leader {:?} snapshot {} last {}@{} persisted {} commit {} applied {} pending writes {} fetch {:?} ",
                    c.role(), c.term(), c.leader(), c.snapshot().index, c.last_index(), c.last_term(), c.persisted_index(),
                    c.commit_index(), n.applied, n.pending_writes.len(), n.fetch.as_ref().map(|f| f.snapshot.index)
                ) + &c.describe_progress(),
            })
            .collect();
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, m) in &self.in_flight {
            *kinds.entry(m.body.kind_name()).or_default() += 1;
        }
        out.push(format!(
            "{} messages in flight {kinds:?}, cut links {:?}",
            self.in_flight.len(),
            self.cut
        ));
        out
    }

    /// The last events before now, oldest first.
    pub fn recent_events(&self) -> Vec<String> {
        self.recent.iter().cloned().collect()
    }

    // ----- events -------------------------------------------------------------------------

    pub fn tick(&mut self, id: NodeId) -> Result<(), Violation> {
        let Some(core) = self.nodes.get_mut(&id).and_then(|n| n.core.as_mut()) else {
            return Ok(());
        };
        core.tick();
        self.process_ready(id)
    }

    /// Ticks every live node `n` times, delivering nothing.
    pub fn tick_all(&mut self, n: u32) -> Result<(), Violation> {
        for _ in 0..n {
            for id in self.ids() {
                self.tick(id)?;
            }
        }
        Ok(())
    }

    pub fn campaign(&mut self, id: NodeId) -> Result<(), Violation> {
        self.note(|| format!("campaign n{id}"));
        if let Some(core) = self.nodes.get_mut(&id).and_then(|n| n.core.as_mut()) {
            core.campaign();
        }
        self.process_ready(id)
    }

    /// Proposes `payload` on `id`; the result says where it went.
    pub fn propose(&mut self, id: NodeId, payload: Bytes) -> Result<bool, Violation> {
        let Some(core) = self.nodes.get_mut(&id).and_then(|n| n.core.as_mut()) else {
            return Ok(false);
        };
        let accepted = core.propose(payload).is_ok();
        self.process_ready(id)?;
        Ok(accepted)
    }

    /// A fresh payload no other proposal carries.
    pub fn unique_payload(&mut self) -> Bytes {
        self.next_payload += 1;
        Bytes::copy_from_slice(&self.next_payload.to_be_bytes())
    }

    /// Asks `id` for a linearizable read; the check remembers what it must at least see.
    pub fn read(&mut self, id: NodeId) -> Result<Option<Bytes>, Violation> {
        let ctx = self.unique_payload();
        let Some(core) = self.nodes.get_mut(&id).and_then(|n| n.core.as_mut()) else {
            return Ok(None);
        };
        if core.read_index(ctx.clone()).is_err() {
            return Ok(None);
        }
        self.check.read_requested(ctx.clone());
        self.process_ready(id)?;
        Ok(Some(ctx))
    }

    /// Makes the oldest pending write of `id` durable and tells its core.
    pub fn complete_write(&mut self, id: NodeId) -> Result<bool, Violation> {
        let node = self.nodes.get_mut(&id).expect("unknown node");
        let Some(write) = node.pending_writes.pop_front() else {
            return Ok(false);
        };
        let write_id = match write {
            QueuedWrite::Snapshot(w) => {
                self.install_snapshot(id, w.snapshot)?;
                w.id
            }
            QueuedWrite::Persist(write) => {
                if let Some(hs) = write.hard_state {
                    node.disk_hard_state = hs;
                }
                if let Some(from) = write.overwrite_from() {
                    let Some(keep) = from.checked_sub(node.disk_snapshot.index + 1) else {
                        return Err(Violation {
                            rule: "writes stay after the snapshot",
                            detail: format!(
                                "n{id} was asked to write from {from}, inside its snapshot up to {}",
                                node.disk_snapshot.index
                            ),
                        });
                    };
                    node.disk_log.truncate(keep as usize);
                    node.disk_log.extend(write.entries.iter().cloned());
                }
                write.id
            }
        };
        let node = self.nodes.get_mut(&id).expect("unknown node");
        if let Some(core) = node.core.as_mut() {
            core.on_persisted(write_id);
        }
        self.process_ready(id)?;
        Ok(true)
    }

    /// Installs the staged snapshot data as the disk's snapshot and empties the log, as one
    /// atomic write. The data must be what every node committed at each index.
    pub(crate) fn install_snapshot(
        &mut self,
        id: NodeId,
        snapshot: SnapshotMeta,
    ) -> Result<(), Violation> {
        let node = self.nodes.get_mut(&id).expect("unknown node");
        let data = match node.staged.take() {
            Some((meta, data)) if meta == snapshot => data,
            Some((meta, _)) if meta.membership != snapshot.membership => {
                return violation(
                    "snapshot install",
                    format!("n{id} was asked to install {snapshot:?} but staged {meta:?}"),
                );
            }
            other => {
                return violation(
                    "snapshot install",
                    format!(
                        "n{id} was asked to install {snapshot:?} but staged {:?}",
                        other.map(|(m, _)| m)
                    ),
                );
            }
        };
        for e in &data {
            if self.check.committed_term(e.index) != Some(e.term) {
                return violation(
                    "state machine safety",
                    format!(
                        "n{id} installs a snapshot holding {}@{}, but the entry committed there is {:?}",
                        e.index,
                        e.term,
                        self.check.committed_term(e.index)
                    ),
                );
            }
        }
        let (index, term) = (snapshot.index, snapshot.term);
        node.disk_snapshot = snapshot;
        node.disk_snapshot_data = data;
        node.disk_log.clear();
        self.snapshots_installed += 1;
        self.note(|| format!("n{id} installed snapshot {index}@{term}"));
        Ok(())
    }

    /// Plays `id`'s driver fetching the snapshot its core asked for: copies the durable data of
    /// the node it came from, stages it, and reports it fetched; the sender's core hears how
    /// the transfer went. Returns whether a fetch was pending.
    pub fn complete_fetch(&mut self, id: NodeId, succeed: bool) -> Result<bool, Violation> {
        let node = self.nodes.get_mut(&id).expect("unknown node");
        let Some(fetch) = node.fetch.take() else {
            return Ok(false);
        };
        let source = &self.nodes[&fetch.from];
        // Every other fetch gets the sender's state as it is now, later than the snapshot it
        // offered (a driver that keeps one image serves its newest); the rest get the offer.
        let applied_now = source.core.as_ref().map_or(0, RawNode::applied_index);
        let later = self.snapshots_installed % 2 == 1 && applied_now > fetch.snapshot.index;
        let s = match source.durable_entry(applied_now) {
            Some(e) if later => SnapshotMeta::new(
                e.index,
                e.term,
                source.durable_membership_at(e.index, &self.bootstrap),
            ),
            _ => fetch.snapshot.clone(),
        };
        let data: Option<Vec<Entry>> = succeed
            .then(|| {
                (1..=s.index)
                    .map(|i| source.durable_entry(i).cloned())
                    .collect::<Option<Vec<Entry>>>()
            })
            .flatten()
            .filter(|d| d.last().is_some_and(|e| e.term == s.term));
        let ok = data.is_some();
        self.note(|| {
            format!(
                "n{id} fetches snapshot {}@{} from n{}: ok={ok}",
                s.index, s.term, fetch.from
            )
        });
        if let Some(data) = data {
            let node = self.nodes.get_mut(&id).expect("unknown node");
            node.staged = Some((s.clone(), data));
            let taken = node
                .core
                .as_mut()
                .is_some_and(|core| core.on_snapshot_fetched(s.clone()));
            // The core asked for the install (a write) or dropped the request; forget staged
            // data no write will use.
            self.process_ready(id)?;
            let node = self.nodes.get_mut(&id).expect("unknown node");
            let asked = node
                .pending_writes
                .iter()
                .any(|w| matches!(w, QueuedWrite::Snapshot(w) if w.snapshot == s));
            if !asked {
                node.staged = None;
            }
            if taken != asked {
                return Err(Violation {
                    rule: "driver contract",
                    detail: format!(
                        "n{id}: on_snapshot_fetched returned {taken} but the core asked for the \
                         install: {asked}"
                    ),
                });
            }
        } else if let Some(core) = self.nodes.get_mut(&id).and_then(|n| n.core.as_mut()) {
            // The core asks again at the leader's next heartbeat.
            core.on_snapshot_fetch_failed(fetch.snapshot);
        }
        if let Some(core) = self
            .nodes
            .get_mut(&fetch.from)
            .and_then(|n| n.core.as_mut())
        {
            core.report_snapshot(id, ok);
        }
        self.process_ready(fetch.from)?;
        Ok(true)
    }

    /// `id`'s state machine has a durable snapshot up to `up_to`: its disk keeps the applied
    /// prefix as snapshot data, and its core compacts.
    pub fn compact(&mut self, id: NodeId, up_to: Index) -> Result<(), CompactError> {
        let node = self.nodes.get_mut(&id).expect("unknown node");
        let core = node.core.as_mut().expect("node is down");
        core.compact(up_to)?;
        let term = core.term_at(up_to).expect("compacted up to a known entry");
        let start = node.disk_snapshot.index;
        let moved: Vec<Entry> = node.disk_log.drain(..(up_to - start) as usize).collect();
        assert_eq!(
            moved.last().map(|e| (e.index, e.term)),
            Some((up_to, term)),
            "applied entries are durable"
        );
        node.disk_snapshot_data.extend(moved);
        // What a driver stores as its log start: the core's snapshot, configuration included.
        node.disk_snapshot = core.snapshot();
        self.note(|| format!("n{id} compacted up to {up_to}"));
        Ok(())
    }

    /// Delivers the in-flight message at `slot` (dropped if its link is cut or its target down).
    pub(crate) fn deliver_slot(&mut self, slot: usize) -> Result<(), Violation> {
        let Some((_, msg)) = self.in_flight.remove(slot) else {
            return Ok(());
        };
        let to = msg.to;
        if self.cut.contains(&(msg.from, to)) {
            return Ok(());
        }
        if !self.nodes.get(&to).is_some_and(SimNode::is_up) {
            return Ok(());
        }
        if self.keep_trace {
            let what = match &msg.body {
                raft_core::MessageBody::AppendRequest {
                    prev_log_index,
                    prev_log_term,
                    entries,
                    commit,
                } => {
                    format!(
                        "AppendRequest prev {prev_log_index}@{prev_log_term} +{} commit {commit}",
                        entries.len()
                    )
                }
                raft_core::MessageBody::AppendResponse {
                    success,
                    index,
                    hint_index,
                    hint_term,
                } => {
                    format!(
                        "AppendResponse ok={success} index {index} hint {hint_index}@{hint_term}"
                    )
                }
                other => other.kind_name().to_string(),
            };
            let line = format!("deliver {what} n{}->n{} t{}", msg.from, to, msg.term);
            self.note(|| line);
        }
        let core = self
            .nodes
            .get_mut(&to)
            .and_then(|n| n.core.as_mut())
            .expect("checked above");
        core.step(msg);
        self.process_ready(to)
    }

    /// Delivers every message and completes every write until the cluster is quiet.
    pub fn stabilize(&mut self) -> Result<(), Violation> {
        self.deliver_where(|_| true)
    }

    /// Completes every write and delivers, oldest first, the in-flight messages that match
    /// `pred` (including the ones they cause), until none is left. Others stay in flight.
    pub fn deliver_where(&mut self, pred: impl Fn(&Message) -> bool) -> Result<(), Violation> {
        for _ in 0..1_000_000 {
            for id in self.ids() {
                while self.complete_write(id)? {}
                if self.complete_fetch(id, true)? {
                    while self.complete_write(id)? {}
                }
            }
            match self.in_flight.iter().position(|(_, m)| pred(m)) {
                Some(slot) => self.deliver_slot(slot)?,
                None => return Ok(()),
            }
        }
        violation("stabilize", "the cluster never went quiet".into())
    }

    /// Loses every message in flight.
    pub fn drop_in_flight(&mut self) {
        self.in_flight.clear();
    }

    /// Cuts `id` off from everyone, both ways.
    pub fn isolate(&mut self, id: NodeId) {
        self.note(|| format!("isolate n{id}"));
        for other in self.ids() {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    /// Splits the cluster into `group` and the rest.
    pub fn partition(&mut self, group: &[NodeId]) {
        self.note(|| format!("partition {group:?}"));
        for a in self.ids() {
            for b in self.ids() {
                if group.contains(&a) != group.contains(&b) {
                    self.cut.insert((a, b));
                }
            }
        }
    }

    pub fn cut_link(&mut self, from: NodeId, to: NodeId) {
        self.cut.insert((from, to));
    }

    pub fn heal(&mut self) {
        self.note(|| "heal".into());
        self.cut.clear();
    }

    /// Power loss: the node stops and every write not yet durable is lost.
    pub fn crash(&mut self, id: NodeId) {
        self.note(|| format!("crash n{id}"));
        let node = self.nodes.get_mut(&id).expect("unknown node");
        node.core = None;
        node.pending_writes.clear();
        node.fetch = None;
        node.staged = None;
    }

    /// Restarts a crashed node from its disk alone.
    pub fn restart(&mut self, id: NodeId) -> Result<(), Violation> {
        self.note(|| format!("restart n{id}"));
        let node = self.nodes.get_mut(&id).expect("unknown node");
        if node.core.is_none() {
            boot(node);
        }
        self.process_ready(id)
    }
}

/// Builds a node's core from its disk alone, as a real restart would.
pub(crate) fn boot(node: &mut SimNode) {
    // The state machine restarts as the durable snapshot; entries after it are applied again.
    let state = RestartState {
        hard_state: node.disk_hard_state,
        snapshot: node.disk_snapshot.clone(),
        entries: node.disk_log.clone(),
        applied: node.disk_snapshot.index,
    };
    let core =
        RawNode::restart(node.cfg.clone(), state).expect("a disk the harness wrote is valid");
    node.seen_commit = node.disk_snapshot.index;
    node.applied = node.disk_snapshot.index;
    node.core = Some(core);
}
