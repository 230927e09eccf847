//! A seeded cluster of cores on an in-memory network and simulated disks, for tests.
//!
//! The test (or the random schedule of [`random_run`]) decides every event: which node ticks,
//! which message is delivered (in any order, dropped, duplicated or delayed), which write
//! reaches the disk, who crashes (losing every write not yet durable) and who restarts (from its
//! disk only), and how the network is partitioned. After every event the [`Checker`] verifies
//! Raft's safety properties; a broken one is returned as a [`Violation`].
//!
//! Snapshots: a node's "state machine" is the list of entries it applied, and a snapshot is a
//! prefix of that list, kept on its disk beside the log. A test compacts a node with
//! [`Cluster::compact`] (random runs do it on their own for some seeds); the harness plays the
//! driver for snapshot transfers: it fetches the leader's durable prefix, stages it, and
//! installs it when the core asks for the write.
//!
//! Everything is drawn from one seeded RNG and kept in ordered maps, so a seed replays exactly.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::{
    CompactError, Config, Entry, HardState, Index, Message, NodeId, Persist, RawNode, RestartState,
    Role, SnapshotMeta, SnapshotToFetch, SnapshotWrite, Term,
};

/// A safety or liveness property that did not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub rule: &'static str,
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.rule, self.detail)
    }
}

fn violation(rule: &'static str, detail: String) -> Result<(), Violation> {
    Err(Violation { rule, detail })
}

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
enum QueuedWrite {
    Snapshot(SnapshotWrite),
    Persist(Persist),
}

/// One node of the simulated cluster: its core (absent while crashed) and its disk.
pub struct SimNode {
    pub core: Option<RawNode>,
    cfg: Config,
    disk_hard_state: HardState,
    /// Where the durable log starts: the last entry the durable snapshot covers.
    disk_snapshot: SnapshotMeta,
    /// The durable snapshot's data: the applied entries it covers, `[i]` with index `i + 1`.
    disk_snapshot_data: Vec<Entry>,
    /// Durable entries after the snapshot; `disk_log[i]` has index `disk_snapshot.index + i + 1`.
    disk_log: Vec<Entry>,
    /// Writes handed out by the core and not yet durable: a crash loses them.
    pending_writes: VecDeque<QueuedWrite>,
    /// The snapshot the core asked to fetch, not fetched yet (a crash forgets it).
    fetch: Option<SnapshotToFetch>,
    /// Fetched snapshot data waiting for the core's install write (a crash loses it).
    staged: Option<(SnapshotMeta, Vec<Entry>)>,
    /// Highest index applied in this life of the node.
    applied: Index,
    /// Commit index last seen, to check what each advance commits.
    seen_commit: Index,
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
        self.disk_snapshot
    }

    /// The applied entries the durable snapshot covers.
    pub fn durable_snapshot_data(&self) -> &[Entry] {
        &self.disk_snapshot_data
    }
}

/// Safety properties checked after every event.
#[derive(Default)]
pub struct Checker {
    /// The leader of each term (election safety).
    leaders: BTreeMap<Term, NodeId>,
    /// Every entry ever written anywhere, by (index, term): its payload and the term of its
    /// predecessor. One (index, term) must always name the same entry after the same prefix,
    /// which by induction is the Log Matching property.
    entries: BTreeMap<(Index, Term), (Bytes, Term)>,
    /// The term of the entry committed at each index (state machine safety).
    committed: BTreeMap<Index, Term>,
    /// The highest index applied on any node: a client may have been told about it.
    acknowledged: Index,
    /// Reads in flight: the acknowledged index when each was asked for.
    read_floors: BTreeMap<Bytes, Index>,
    pub reads_served: u64,
    pub entries_applied: u64,
}

/// A cluster of cores under the test's control.
pub struct Cluster {
    pub nodes: BTreeMap<NodeId, SimNode>,
    in_flight: VecDeque<(u64, Message)>,
    /// Directed links that lose every message.
    cut: BTreeSet<(NodeId, NodeId)>,
    pub faults: Faults,
    pub check: Checker,
    rng: SmallRng,
    now: u64,
    next_payload: u64,
    /// Recent events, printed when a check fails.
    recent: VecDeque<String>,
    pub keep_trace: bool,
    /// Random steps compact a node whose log since its snapshot passes this many entries.
    pub compaction: Option<Compaction>,
    /// Snapshots installed by followers, for reporting.
    pub snapshots_installed: u64,
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
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut nodes = BTreeMap::new();
        for (id, state) in ids.iter().copied().zip(states) {
            let mut cfg = Config::new(id, ids.clone());
            cfg.seed = rng.gen();
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
            check: Checker::default(),
            rng,
            now: 0,
            next_payload: 0,
            recent: VecDeque::new(),
            keep_trace: true,
            compaction: None,
            snapshots_installed: 0,
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

    fn note(&mut self, what: impl FnOnce() -> String) {
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
                    c.commit_index(), n.applied, n.pending_writes.len(), n.fetch.map(|f| f.snapshot.index)
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
        let floor = self.check.acknowledged;
        let Some(core) = self.nodes.get_mut(&id).and_then(|n| n.core.as_mut()) else {
            return Ok(None);
        };
        if core.read_index(ctx.clone()).is_err() {
            return Ok(None);
        }
        self.check.read_floors.insert(ctx.clone(), floor);
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
    fn install_snapshot(&mut self, id: NodeId, snapshot: SnapshotMeta) -> Result<(), Violation> {
        let node = self.nodes.get_mut(&id).expect("unknown node");
        let data = match node.staged.take() {
            Some((meta, data)) if meta == snapshot => data,
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
            if self.check.committed.get(&e.index) != Some(&e.term) {
                return violation(
                    "state machine safety",
                    format!(
                        "n{id} installs a snapshot holding {}@{}, but the entry committed there is {:?}",
                        e.index,
                        e.term,
                        self.check.committed.get(&e.index)
                    ),
                );
            }
        }
        node.disk_snapshot = snapshot;
        node.disk_snapshot_data = data;
        node.disk_log.clear();
        self.snapshots_installed += 1;
        self.note(|| {
            format!(
                "n{id} installed snapshot {}@{}",
                snapshot.index, snapshot.term
            )
        });
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
            Some(e) if later => SnapshotMeta {
                index: e.index,
                term: e.term,
            },
            _ => fetch.snapshot,
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
            node.staged = Some((s, data));
            if let Some(core) = node.core.as_mut() {
                core.on_snapshot_fetched(s);
            }
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
        node.disk_snapshot = SnapshotMeta { index: up_to, term };
        self.note(|| format!("n{id} compacted up to {up_to}"));
        Ok(())
    }

    /// Delivers the in-flight message at `slot` (dropped if its link is cut or its target down).
    fn deliver_slot(&mut self, slot: usize) -> Result<(), Violation> {
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
                crate::MessageBody::AppendRequest {
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
                crate::MessageBody::AppendResponse {
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

    // ----- the checks ---------------------------------------------------------------------

    /// Drains `id`'s ready, routes its output, and checks every property its output touches.
    fn process_ready(&mut self, id: NodeId) -> Result<(), Violation> {
        loop {
            let node = self.nodes.get_mut(&id).expect("unknown node");
            let Some(core) = node.core.as_mut() else {
                return Ok(());
            };
            if !core.has_ready() {
                return Ok(());
            }
            let ready = core.take_ready();
            let (term, role) = (core.term(), core.role());

            if let Some(soft) = ready.soft_state {
                if soft.role == Role::Leader {
                    self.note(|| format!("n{id} leads term {}", soft.term));
                    self.check_new_leader(id, soft.term)?;
                }
            }
            if let Some(fetch) = ready.snapshot_to_fetch {
                self.note(|| {
                    format!(
                        "n{id} asks for snapshot {}@{} from n{}",
                        fetch.snapshot.index, fetch.snapshot.term, fetch.from
                    )
                });
                self.nodes.get_mut(&id).expect("exists").fetch = Some(fetch);
            }
            if let Some(write) = ready.snapshot_write {
                let node = self.nodes.get_mut(&id).expect("exists");
                node.applied = write.snapshot.index;
                node.pending_writes.push_back(QueuedWrite::Snapshot(write));
            }
            if let Some(write) = ready.persist {
                self.check_written_entries(id, &write)?;
                self.nodes
                    .get_mut(&id)
                    .expect("exists")
                    .pending_writes
                    .push_back(QueuedWrite::Persist(write));
            }
            for msg in ready.messages {
                self.send(msg);
            }
            self.check_commit_advance(id)?;
            for entry in ready.committed {
                self.apply(id, entry)?;
            }
            for rs in ready.read_states {
                let floor = self.check.read_floors.remove(&rs.ctx).unwrap_or(0);
                if rs.index < floor {
                    return violation(
                        "read index linearizability",
                        format!("n{id} (term {term}, {role:?}) served a read at index {} but index {floor} was already acknowledged", rs.index),
                    );
                }
                self.check.reads_served += 1;
            }
        }
    }

    fn send(&mut self, msg: Message) {
        if self.faults.drop > 0.0 && self.rng.gen_bool(self.faults.drop) {
            return;
        }
        let delay = if self.faults.max_delay > 0 {
            self.rng.gen_range(0..=self.faults.max_delay)
        } else {
            0
        };
        if self.faults.duplicate > 0.0 && self.rng.gen_bool(self.faults.duplicate) {
            let again = self.rng.gen_range(0..=self.faults.max_delay.max(1));
            self.in_flight.push_back((self.now + again, msg.clone()));
        }
        self.in_flight.push_back((self.now + delay, msg));
    }

    /// Election safety, and leader completeness: a new leader holds every committed entry.
    fn check_new_leader(&mut self, id: NodeId, term: Term) -> Result<(), Violation> {
        if let Some(&other) = self.check.leaders.get(&term) {
            if other != id {
                return violation(
                    "election safety",
                    format!("n{other} and n{id} both lead term {term}"),
                );
            }
        }
        self.check.leaders.insert(term, id);
        let core = self.core(id);
        let node = &self.nodes[&id];
        for (&index, &committed_term) in &self.check.committed {
            let held = if index < core.snapshot().index {
                node.durable_entry(index).map(|e| e.term)
            } else {
                core.term_at(index)
            };
            if held != Some(committed_term) {
                return violation(
                    "leader completeness",
                    format!("n{id} leads term {term} without the entry committed at {index} (term {committed_term}); it has {:?}", core.term_at(index)),
                );
            }
        }
        Ok(())
    }

    /// Log matching: an (index, term) pair always names the same payload after the same
    /// predecessor term, whoever writes it.
    fn check_written_entries(&mut self, id: NodeId, write: &Persist) -> Result<(), Violation> {
        for e in &write.entries {
            let core = self.core(id);
            let prev_term = if e.index == 1 {
                0
            } else {
                core.term_at(e.index - 1).unwrap_or(0)
            };
            match self.check.entries.get(&(e.index, e.term)) {
                Some((payload, prev)) if *payload != e.payload || *prev != prev_term => {
                    return violation(
                        "log matching",
                        format!(
                            "n{id} wrote entry {}@{} that differs from the one other nodes hold",
                            e.index, e.term
                        ),
                    );
                }
                Some(_) => {}
                None => {
                    self.check
                        .entries
                        .insert((e.index, e.term), (e.payload.clone(), prev_term));
                }
            }
        }
        Ok(())
    }

    /// Whatever a node's commit index passes is the same entry everywhere, and durable on a
    /// majority of disks.
    fn check_commit_advance(&mut self, id: NodeId) -> Result<(), Violation> {
        let node = &self.nodes[&id];
        let core = node.core.as_ref().expect("checked by caller");
        let commit = core.commit_index();
        if commit <= node.seen_commit {
            return Ok(());
        }
        // Below the snapshot the log is gone; an installed snapshot's data is checked on install.
        let from = node.seen_commit.max(core.snapshot().index);
        for index in from + 1..=commit {
            let Some(term) = core.term_at(index) else {
                return violation(
                    "commit",
                    format!("n{id} committed {index}, which its log does not hold"),
                );
            };
            match self.check.committed.get(&index) {
                Some(&t) if t != term => {
                    return violation(
                        "state machine safety",
                        format!("n{id} committed term {term} at index {index}, another node committed term {t}"),
                    );
                }
                Some(_) => {}
                None => {
                    self.check.committed.insert(index, term);
                }
            }
        }
        let term = core.term_at(commit).expect("checked above");
        let durable = self
            .nodes
            .values()
            .filter(|n| n.durable_entry(commit).is_some_and(|e| e.term == term))
            .count();
        if durable < self.nodes.len() / 2 + 1 {
            return violation(
                "commit needs a durable majority",
                format!("n{id} committed index {commit} (term {term}) but only {durable} of {} disks hold it", self.nodes.len()),
            );
        }
        self.nodes.get_mut(&id).expect("exists").seen_commit = commit;
        Ok(())
    }

    /// Applies in order only durable, committed entries (contract rule 2).
    fn apply(&mut self, id: NodeId, entry: Entry) -> Result<(), Violation> {
        let node = self.nodes.get_mut(&id).expect("exists");
        if entry.index != node.applied + 1 {
            return violation(
                "apply order",
                format!("n{id} was handed {} after {}", entry.index, node.applied),
            );
        }
        if node
            .durable_entry(entry.index)
            .is_none_or(|e| e.term != entry.term)
        {
            return violation(
                "apply only durable entries",
                format!("n{id} was handed {} before it was durable", entry.index),
            );
        }
        match self.check.committed.get(&entry.index) {
            Some(&t) if t == entry.term => {}
            other => {
                return violation(
                    "state machine safety",
                    format!(
                        "n{id} applies {}@{} but the committed entry there is {other:?}",
                        entry.index, entry.term
                    ),
                );
            }
        }
        node.applied = entry.index;
        if let Some(core) = node.core.as_mut() {
            core.on_applied(entry.index);
        }
        self.check.acknowledged = self.check.acknowledged.max(entry.index);
        self.check.entries_applied += 1;
        Ok(())
    }
}

/// Builds a node's core from its disk alone, as a real restart would.
fn boot(node: &mut SimNode) {
    // The state machine restarts as the durable snapshot; entries after it are applied again.
    let state = RestartState {
        hard_state: node.disk_hard_state,
        snapshot: node.disk_snapshot,
        entries: node.disk_log.clone(),
        applied: node.disk_snapshot.index,
    };
    let core =
        RawNode::restart(node.cfg.clone(), state).expect("a disk the harness wrote is valid");
    node.seen_commit = node.disk_snapshot.index;
    node.applied = node.disk_snapshot.index;
    node.core = Some(core);
}

// ----- random runs --------------------------------------------------------------------------

/// What a random run did, for reporting.
#[derive(Clone, Debug, Default)]
pub struct RunStats {
    pub nodes: u64,
    pub steps: u64,
    pub committed: u64,
    pub reads_served: u64,
    pub snapshots_installed: u64,
    pub faults: Faults,
    pub compaction: Option<Compaction>,
}

/// A failed run: the seed, what broke, and the events just before.
#[derive(Debug)]
pub struct Failure {
    pub seed: u64,
    pub violation: Violation,
    pub stats: RunStats,
    pub recent: Vec<String>,
    pub state: Vec<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "seed {} failed after {} steps: {}",
            self.seed, self.stats.steps, self.violation
        )?;
        writeln!(
            f,
            "  {} nodes, faults {:?}, compaction {:?}",
            self.stats.nodes, self.stats.faults, self.stats.compaction
        )?;
        writeln!(
            f,
            "  replay: RAFT_SEED={} cargo test -p raft-core --test fault_runs -- --nocapture",
            self.seed
        )?;
        writeln!(f, "  last events:")?;
        for e in &self.recent {
            writeln!(f, "    {e}")?;
        }
        writeln!(f, "  state at the end:")?;
        for line in &self.state {
            writeln!(f, "    {line}")?;
        }
        Ok(())
    }
}

/// Steps of fault injection before the network heals.
pub const FAULT_STEPS: u64 = 3_000;
/// After healing, a proposal must commit within this many steps (liveness).
pub const LIVENESS_STEPS: u64 = 4_000;

/// One random run: a 3- or 5-node cluster under a seeded mix of faults, then healed, then a
/// liveness check. `configure` may switch on deliberate bugs.
pub fn random_run(seed: u64, configure: impl Fn(&mut Config)) -> Result<RunStats, Box<Failure>> {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x5eed_5eed_5eed_5eed);
    let n = if rng.gen_bool(0.5) { 3 } else { 5 };
    // Swarm testing: each run switches each fault on or off, so that rare combinations occur.
    let faults = Faults {
        drop: [0.0, 0.02, 0.1, 0.3][rng.gen_range(0..4)],
        duplicate: [0.0, 0.0, 0.05][rng.gen_range(0..3)],
        max_delay: [0, 3, 20][rng.gen_range(0..3)],
        crashes: rng.gen_bool(0.6),
        partitions: rng.gen_bool(0.6),
    };
    let pre_vote = rng.gen_bool(0.7);
    let check_quorum = rng.gen_bool(0.7);
    let small_windows = rng.gen_bool(0.5);
    // Half the runs compact, some keeping no tail at all, so that followers cut off by
    // partitions or crashes fall behind the leader's log start and need snapshots.
    let compaction = rng.gen_bool(0.5).then(|| Compaction {
        max_log: [4, 16, 64][rng.gen_range(0..3)],
        max_tail: [0, 2, 8][rng.gen_range(0..3)],
    });
    let mut cluster = Cluster::new(n, seed, |cfg| {
        cfg.pre_vote = pre_vote;
        cfg.check_quorum = check_quorum;
        if small_windows {
            cfg.max_msg_bytes = 100;
            cfg.max_inflight_msgs = 2;
        }
        // Back-pressure keeps the backlog, and so the time to catch up after healing, bounded.
        cfg.max_uncommitted_bytes = 2048;
        configure(cfg);
    });
    cluster.faults = faults;
    cluster.compaction = compaction;
    let mut stats = RunStats {
        nodes: n,
        faults,
        compaction,
        ..RunStats::default()
    };
    let fail = |cluster: &Cluster, violation: Violation, stats: RunStats| {
        Box::new(Failure {
            seed,
            violation,
            stats,
            recent: cluster.recent_events(),
            state: cluster.describe(),
        })
    };
    for _ in 0..FAULT_STEPS {
        stats.steps += 1;
        if let Err(v) = cluster.random_step(true) {
            return Err(fail(&cluster, v, stats));
        }
    }
    // Heal everything and require progress.
    cluster.heal();
    cluster.faults = Faults::default();
    for id in cluster.ids() {
        if let Err(v) = cluster.restart(id) {
            return Err(fail(&cluster, v, stats));
        }
    }
    let marker = Bytes::from_static(b"liveness-marker");
    let mut committed = false;
    let verbose = std::env::var_os("RAFT_HARNESS_VERBOSE").is_some();
    for step in 0..LIVENESS_STEPS {
        stats.steps += 1;
        if verbose && step % 500 == 0 {
            eprintln!(
                "liveness step {step}:\n  {}",
                cluster.describe().join("\n  ")
            );
        }
        if let Err(v) = cluster.random_step(false) {
            return Err(fail(&cluster, v, stats));
        }
        if step % 50 == 0 {
            if let Some(leader) = cluster.leader() {
                if let Err(v) = cluster.propose(leader, marker.clone()) {
                    return Err(fail(&cluster, v, stats));
                }
            }
        }
        let marker_committed = cluster.nodes.values().any(|n| {
            n.core.as_ref().is_some_and(|c| {
                (1..=c.commit_index())
                    .rev()
                    .take(64)
                    .any(|i| c.entry(i).is_some_and(|e| e.payload == marker))
            })
        });
        if marker_committed {
            committed = true;
            break;
        }
    }
    stats.committed = cluster.check.committed.len() as u64;
    stats.reads_served = cluster.check.reads_served;
    stats.snapshots_installed = cluster.snapshots_installed;
    if !committed {
        let v = Violation {
            rule: "liveness",
            detail: format!("no proposal committed within {LIVENESS_STEPS} steps after healing"),
        };
        return Err(fail(&cluster, v, stats));
    }
    Ok(stats)
}

impl Cluster {
    /// One random event. With `faults` off only ticks, deliveries and writes happen: no faults
    /// and no client load.
    pub fn random_step(&mut self, faults: bool) -> Result<(), Violation> {
        self.now += 1;
        let ids = self.ids();
        let pick = |rng: &mut SmallRng| ids[rng.gen_range(0..ids.len())];
        let roll: u32 = self.rng.gen_range(0..1000);
        match roll {
            // Messages move much faster than clocks tick, as on a real network.
            0..=449 => {
                for _ in 0..self.rng.gen_range(1..=8) {
                    let ready: Vec<usize> = self
                        .in_flight
                        .iter()
                        .enumerate()
                        .filter(|(_, (at, _))| *at <= self.now)
                        .map(|(i, _)| i)
                        .collect();
                    if ready.is_empty() {
                        break;
                    }
                    // Mostly oldest first, as links are; sometimes any message (reordering).
                    let slot = if self.rng.gen_bool(0.8) {
                        ready[0]
                    } else {
                        ready[self.rng.gen_range(0..ready.len())]
                    };
                    self.deliver_slot(slot)?;
                }
            }
            450..=569 => {
                let id = pick(&mut self.rng);
                self.tick(id)?;
            }
            570..=829 => {
                // A disk finishes some of its queued writes together, as with group commit; or
                // a snapshot transfer ends (under faults, sometimes in failure).
                let busy: Vec<NodeId> = self
                    .nodes
                    .iter()
                    .filter(|(_, n)| !n.pending_writes.is_empty() || n.fetch.is_some())
                    .map(|(&id, _)| id)
                    .collect();
                if !busy.is_empty() {
                    let id = busy[self.rng.gen_range(0..busy.len())];
                    let queued = self.nodes[&id].pending_writes.len();
                    if queued > 0 {
                        for _ in 0..self.rng.gen_range(1..=queued) {
                            self.complete_write(id)?;
                        }
                    } else {
                        let succeed = !faults || self.rng.gen_bool(0.8);
                        self.complete_fetch(id, succeed)?;
                    }
                }
            }
            830..=919 if faults => {
                let id = pick(&mut self.rng);
                let payload = self.unique_payload();
                self.note(|| format!("propose on n{id}"));
                self.propose(id, payload)?;
            }
            920..=959 if faults => {
                let id = pick(&mut self.rng);
                self.read(id)?;
            }
            _ if !faults => {}
            960..=969 if self.faults.crashes => {
                let id = pick(&mut self.rng);
                self.crash(id);
            }
            970..=989 if self.faults.crashes => {
                let down: Vec<NodeId> = self
                    .ids()
                    .into_iter()
                    .filter(|id| !self.nodes[id].is_up())
                    .collect();
                if !down.is_empty() {
                    let id = down[self.rng.gen_range(0..down.len())];
                    self.restart(id)?;
                }
            }
            990..=994 if self.faults.partitions => {
                self.heal();
                match self.rng.gen_range(0..3) {
                    0 => {
                        let id = pick(&mut self.rng);
                        self.isolate(id);
                    }
                    1 => {
                        let mut group: Vec<NodeId> = ids.clone();
                        group.retain(|_| self.rng.gen_bool(0.5));
                        self.partition(&group);
                    }
                    _ => {
                        let (a, b) = (pick(&mut self.rng), pick(&mut self.rng));
                        self.note(|| format!("cut n{a}->n{b}"));
                        self.cut_link(a, b);
                    }
                }
            }
            995..=999 if self.faults.partitions => self.heal(),
            _ => {}
        }
        self.maybe_compact();
        Ok(())
    }

    /// Compacts every live node whose applied log since its snapshot passed the limit,
    /// keeping a random tail (see [`Compaction`]).
    fn maybe_compact(&mut self) {
        let Some(policy) = self.compaction else {
            return;
        };
        for id in self.ids() {
            let Some(core) = self.nodes[&id].core.as_ref() else {
                continue;
            };
            let (applied, start) = (core.applied_index(), core.snapshot().index);
            if applied.saturating_sub(start) <= policy.max_log {
                continue;
            }
            let up_to = applied.saturating_sub(self.rng.gen_range(0..=policy.max_tail));
            if up_to > start {
                self.compact(id, up_to)
                    .expect("compacting applied entries above the snapshot is allowed");
            }
        }
    }
}
