//! Seeded random runs: a cluster under a random mix of faults, healed, then checked for
//! liveness.

use bytes::Bytes;

use crate::cluster::{Cluster, Compaction, Faults};
use crate::invariants::Violation;
use raft_core::{Config, NodeId, SeededRng};

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
    /// Appends carried one entry each (`max_msg_bytes = 1`).
    pub one_entry_per_append: bool,
    /// The run changed the configuration and transferred leadership now and then.
    pub membership_changes: bool,
    /// Configuration changes accepted and leadership transfers started.
    pub conf_changes: u64,
    pub transfers: u64,
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
            "  {} nodes, faults {:?}, compaction {:?}, one entry per append {}, membership changes {}",
            self.stats.nodes,
            self.stats.faults,
            self.stats.compaction,
            self.stats.one_entry_per_append,
            self.stats.membership_changes
        )?;
        writeln!(
            f,
            "  replay: RAFT_SEED={} cargo test -p raft-harness --test fault_runs -- --nocapture",
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

/// The settings a run draws from its seed. Swarm testing: each run switches each fault on or
/// off, so that rare combinations occur.
struct RunSettings {
    nodes: u64,
    faults: Faults,
    pre_vote: bool,
    check_quorum: bool,
    small_windows: bool,
    compaction: Option<Compaction>,
    one_entry_per_append: bool,
    membership_changes: bool,
}

impl RunSettings {
    /// Draws the settings. The order of the draws is part of what a seed means: a new setting
    /// is drawn last, so that every seed keeps the run it had.
    fn draw(rng: &mut SeededRng) -> Self {
        let nodes = if rng.gen_bool(0.5) { 3 } else { 5 };
        let faults = Faults {
            drop: [0.0, 0.02, 0.1, 0.3][rng.gen_range(0..4usize)],
            duplicate: [0.0, 0.0, 0.05][rng.gen_range(0..3usize)],
            max_delay: [0, 3, 20][rng.gen_range(0..3usize)],
            crashes: rng.gen_bool(0.6),
            partitions: rng.gen_bool(0.6),
        };
        let pre_vote = rng.gen_bool(0.7);
        let check_quorum = rng.gen_bool(0.7);
        let small_windows = rng.gen_bool(0.5);
        // Half the runs compact, some keeping no tail at all, so that followers cut off by
        // partitions or crashes fall behind the leader's log start and need snapshots.
        let compaction = rng.gen_bool(0.5).then(|| Compaction {
            max_log: [4, 16, 64][rng.gen_range(0..3usize)],
            max_tail: [0, 2, 8][rng.gen_range(0..3usize)],
        });
        // Half the small-window runs (a quarter of all) send one entry per append, so that a
        // new leader's no-op does not travel with the older entries it commits: committing an
        // earlier term's entry by counting replicas (Figure 8) is then reachable by random
        // schedules.
        let one_entry_per_append = small_windows && rng.gen_bool(0.5);
        // A third of the runs change the configuration (and transfer leadership) under faults.
        let membership_changes = rng.gen_bool(0.3);
        Self {
            nodes,
            faults,
            pre_vote,
            check_quorum,
            small_windows,
            compaction,
            one_entry_per_append,
            membership_changes,
        }
    }

    fn configure(&self, cfg: &mut Config) {
        cfg.pre_vote = self.pre_vote;
        cfg.check_quorum = self.check_quorum;
        if self.small_windows {
            // At least one entry is always sent, so a single byte means exactly one.
            cfg.max_msg_bytes = if self.one_entry_per_append { 1 } else { 100 };
            cfg.max_inflight_msgs = 2;
        }
        // Back-pressure keeps the backlog, and so the time to catch up after healing, bounded.
        cfg.max_uncommitted_bytes = 2048;
    }
}

/// One random run: a 3- or 5-node cluster under a seeded mix of faults, then healed, then a
/// liveness check. `configure` may switch on deliberate bugs.
pub fn random_run(seed: u64, configure: impl Fn(&mut Config)) -> Result<RunStats, Box<Failure>> {
    let mut rng = SeededRng::new(seed ^ 0x5eed_5eed_5eed_5eed);
    let settings = RunSettings::draw(&mut rng);
    let mut cluster = Cluster::new(settings.nodes, seed, |cfg| {
        settings.configure(cfg);
        configure(cfg);
    });
    cluster.faults = settings.faults;
    cluster.compaction = settings.compaction;
    cluster.membership_changes = settings.membership_changes;
    let mut stats = RunStats {
        nodes: settings.nodes,
        faults: settings.faults,
        compaction: settings.compaction,
        one_entry_per_append: settings.one_entry_per_append,
        membership_changes: settings.membership_changes,
        ..RunStats::default()
    };
    let outcome = run_under_faults(&mut cluster, &mut stats)
        .and_then(|()| heal_everything(&mut cluster))
        .and_then(|()| check_liveness(&mut cluster, &mut stats));
    match outcome {
        Ok(()) => Ok(stats),
        Err(violation) => Err(Box::new(Failure {
            seed,
            violation,
            stats,
            recent: cluster.recent_events(),
            state: cluster.describe(),
        })),
    }
}

fn run_under_faults(cluster: &mut Cluster, stats: &mut RunStats) -> Result<(), Violation> {
    for _ in 0..FAULT_STEPS {
        stats.steps += 1;
        cluster.random_step(true)?;
    }
    Ok(())
}

fn heal_everything(cluster: &mut Cluster) -> Result<(), Violation> {
    cluster.heal();
    cluster.faults = Faults::default();
    for id in cluster.ids() {
        cluster.restart(id)?;
    }
    Ok(())
}

/// With the network healed, a proposal must commit within [`LIVENESS_STEPS`]. Fills in the
/// run's totals either way.
fn check_liveness(cluster: &mut Cluster, stats: &mut RunStats) -> Result<(), Violation> {
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
        cluster.random_step(false)?;
        if step % 50 == 0 {
            if let Some(leader) = cluster.leader() {
                cluster.propose(leader, marker.clone())?;
            }
        }
        if cluster.marker_committed(&marker) {
            committed = true;
            break;
        }
    }
    stats.committed = cluster.check.committed_count();
    stats.reads_served = cluster.check.reads_served;
    stats.snapshots_installed = cluster.snapshots_installed;
    stats.conf_changes = cluster.conf_changes_accepted;
    stats.transfers = cluster.transfers_started;
    if !committed {
        return Err(Violation {
            rule: "liveness",
            detail: format!("no proposal committed within {LIVENESS_STEPS} steps after healing"),
        });
    }
    Ok(())
}

impl Cluster {
    /// Whether an entry carrying `payload` is committed on some live node (looking at the
    /// last 64 committed entries of each).
    pub fn marker_committed(&self, payload: &Bytes) -> bool {
        self.nodes.values().any(|n| {
            n.core.as_ref().is_some_and(|c| {
                (1..=c.commit_index())
                    .rev()
                    .take(64)
                    .any(|i| c.entry(i).is_some_and(|e| e.payload == *payload))
            })
        })
    }

    /// One random event. With `faults` off only ticks, deliveries and writes happen: no faults
    /// and no client load.
    pub fn random_step(&mut self, faults: bool) -> Result<(), Violation> {
        self.now += 1;
        let ids = self.ids();
        let roll: u32 = self.rng.gen_range(0..1000u32);
        match roll {
            // Messages move much faster than clocks tick, as on a real network.
            0..=449 => self.deliver_some()?,
            450..=569 => {
                let id = pick(&mut self.rng, &ids);
                self.tick(id)?;
            }
            570..=829 => self.finish_some_io(faults)?,
            830..=919 if faults && self.membership_changes && self.rng.gen_bool(0.05) => {
                self.random_conf_change()?
            }
            830..=919 if faults => {
                let id = pick(&mut self.rng, &ids);
                let payload = self.unique_payload();
                self.note(|| format!("propose on n{id}"));
                self.propose(id, payload)?;
            }
            920..=959 if faults => {
                let id = pick(&mut self.rng, &ids);
                self.read(id)?;
            }
            _ if !faults => {}
            960..=969 if self.faults.crashes => {
                let id = pick(&mut self.rng, &ids);
                self.crash(id);
            }
            970..=989 if self.faults.crashes => self.restart_a_crashed_node()?,
            990..=994 if self.faults.partitions => self.reshape_network(&ids),
            995..=999 if self.faults.partitions => self.heal(),
            _ => {}
        }
        self.maybe_compact();
        Ok(())
    }

    /// Delivers up to eight messages that are due.
    fn deliver_some(&mut self) -> Result<(), Violation> {
        for _ in 0..self.rng.gen_range(1..=8u32) {
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
        Ok(())
    }

    /// A disk finishes some of its queued writes together, as with group commit; or a
    /// snapshot transfer ends (under faults, sometimes in failure).
    fn finish_some_io(&mut self, faults: bool) -> Result<(), Violation> {
        let busy: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| !n.pending_writes.is_empty() || n.fetch.is_some())
            .map(|(&id, _)| id)
            .collect();
        if busy.is_empty() {
            return Ok(());
        }
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
        Ok(())
    }

    fn restart_a_crashed_node(&mut self) -> Result<(), Violation> {
        let down: Vec<NodeId> = self
            .ids()
            .into_iter()
            .filter(|id| !self.nodes[id].is_up())
            .collect();
        if !down.is_empty() {
            let id = down[self.rng.gen_range(0..down.len())];
            self.restart(id)?;
        }
        Ok(())
    }

    /// Heals the network, then isolates a node, splits the cluster in two or cuts one link.
    fn reshape_network(&mut self, ids: &[NodeId]) {
        self.heal();
        match self.rng.gen_range(0..3u32) {
            0 => {
                let id = pick(&mut self.rng, ids);
                self.isolate(id);
            }
            1 => {
                let mut group: Vec<NodeId> = ids.to_vec();
                group.retain(|_| self.rng.gen_bool(0.5));
                self.partition(&group);
            }
            _ => {
                let (a, b) = (pick(&mut self.rng, ids), pick(&mut self.rng, ids));
                self.note(|| format!("cut n{a}->n{b}"));
                self.cut_link(a, b);
            }
        }
    }

    /// Compacts every live node whose applied log since its snapshot passed the limit,
    /// keeping a random tail (see [`Compaction`]).
    pub(crate) fn maybe_compact(&mut self) {
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

fn pick(rng: &mut SeededRng, ids: &[NodeId]) -> NodeId {
    ids[rng.gen_range(0..ids.len())]
}
