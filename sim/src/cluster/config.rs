//! What a run is: everything it depends on, drawn from its seed unless a test overrides it.

use std::collections::BTreeSet;
use std::time::Duration;

use net::node::{SnapshotPolicy, UnsafeSwitches};
use raft_core::ReadMode;
use rand::Rng;

use super::membership::MemberPlan;
use super::splits::SplitPlan;
use crate::faults::{FaultAction, FaultKinds};
use crate::rng;

/// Everything a run depends on; all of it derives from the seed unless a test overrides it.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub seed: u64,
    pub nodes: u64,
    pub kinds: FaultKinds,
    /// How long clients run and faults are injected (simulated time).
    pub workload: Duration,
    /// How long after the faults stop a write and a read must succeed.
    pub liveness_bound: Duration,
    pub clients: u64,
    /// The workload clients (numbered from 1) that stay on the node they start at, as clients
    /// spread over the followers do in production: they do not ask for the leader, and the node
    /// forwards their requests. The others go to the leader.
    pub sticky_clients: BTreeSet<u64>,
    /// The workload clients (numbered from 1) that only read: a GET of a hot or a cold key each
    /// time (a test's scenario, to aim reads at the leader while others write; never drawn).
    pub read_only_clients: BTreeSet<u64>,
    pub keys: u64,
    pub switches: UnsafeSwitches,
    /// When nodes take snapshots and compact their logs (`threshold` 0: never).
    pub snapshots: SnapshotPolicy,
    /// Each node loses its power right after its first snapshot image, and restarts (a test's
    /// scenario; never drawn).
    pub crash_after_first_snapshot: bool,
    /// Fault actions added to the drawn schedule (a test's scenario; never drawn). Times must
    /// fall within the workload.
    pub extra_faults: Vec<(Duration, FaultAction)>,
    /// A teeth test's run, with a deliberate bug switched on: failing is what it is for, so its
    /// trace is written under `target/sim-traces/expected-by-teeth-tests/`, apart from the
    /// traces of real failures (never drawn).
    pub expect_failure: bool,
    /// An operator changing the cluster's members while the run goes: drawn in a third of the
    /// seeds (`random_plan.rs`), or a test's scenario. Its spare nodes get hosts that wait to
    /// be added.
    pub membership: Option<MemberPlan>,
    /// A node reinstalled after its disk was lost ([`FaultAction::Reinstall`]) comes back as
    /// the same incarnation, as every node did before incarnations existed: its peers cannot
    /// tell it from the voter it was (a teeth test's; never drawn).
    pub reinstall_keeps_incarnation: bool,
    /// How leaders confirm reads: by their lease in a third of the seeds, with the drift bound
    /// [`LEASE_MAX_CLOCK_DRIFT`], which covers the clock-skew fault; ReadIndex in the others.
    pub read_mode: ReadMode,
    /// An operator splitting the keyspace into ranges while the run goes (`splits.rs`): drawn
    /// in a share of the seeds that neither change the members nor take snapshots, or a
    /// test's scenario.
    pub splits: Option<SplitPlan>,
}

/// The clock-skew fault gives each node a tick from 0.8x to 1.25x the nominal one, so one
/// node's tick may last up to 1.25 / 0.8 = 1.5625 times another's: a drift of 0.5625, bounded
/// here with a little room.
pub const LEASE_MAX_CLOCK_DRIFT: f64 = 0.6;

impl RunConfig {
    /// The configuration a seed stands for: 3 or 5 nodes, a random mix of faults (swarm testing),
    /// 10 to 20 simulated seconds of workload; in half of the seeds, snapshots every 20 to 300
    /// entries with a log tail of up to as many, and then in half of those, crashes during
    /// snapshot installs. Half of the clients stay on their starting node (see
    /// [`RunConfig::sticky_clients`]). In a third of the seeds, an operator changes the members
    /// (see [`RunConfig::membership`]).
    pub fn from_seed(seed: u64) -> Self {
        let mut rng = rng::seeded(seed);
        let nodes = if rng.gen_bool(0.7) { 3 } else { 5 };
        let mut kinds = FaultKinds::from_rng(&mut rng);
        let workload = Duration::from_secs(rng.gen_range(10..=20));
        let clients = rng.gen_range(3..=5);
        let keys = rng.gen_range(2..=5);
        // Drawn after everything else, so that the rest of a seed's configuration stayed what
        // it was before snapshots were drawn.
        let snapshots = if rng.gen_bool(0.5) {
            let threshold = rng.gen_range(20..=300);
            SnapshotPolicy {
                threshold,
                tail: rng.gen_range(0..=threshold),
                chunk_bytes: rng.gen_range(64..=4096u64) as usize,
                step_keys: draw_step_keys(seed),
            }
        } else {
            snapshots_off()
        };
        kinds.install_crashes = snapshots.threshold > 0 && rng.gen_bool(0.5);
        let sticky_clients = draw_sticky_clients(seed, clients);
        Self {
            seed,
            nodes,
            kinds,
            workload,
            liveness_bound: Duration::from_secs(30),
            clients,
            sticky_clients,
            read_only_clients: BTreeSet::new(),
            keys,
            switches: UnsafeSwitches::default(),
            snapshots,
            crash_after_first_snapshot: false,
            extra_faults: Vec::new(),
            expect_failure: false,
            membership: super::random_plan::draw(seed, nodes),
            reinstall_keeps_incarnation: false,
            read_mode: draw_read_mode(seed),
            splits: None,
        }
        .with_drawn_splits()
    }
}

impl RunConfig {
    fn with_drawn_splits(mut self) -> Self {
        self.splits = super::splits::draw(self.seed, self.snapshots.threshold > 0);
        self
    }
}

/// Lease reads in a third of the seeds. From a generator of its own, so that every other draw
/// of a seed stays what it was before lease reads were drawn.
fn draw_read_mode(seed: u64) -> ReadMode {
    let mut rng = rng::seeded(seed ^ 0x1EA5_E4EA_D5EE_D000);
    if rng.gen_bool(1.0 / 3.0) {
        ReadMode::Lease {
            max_clock_drift: LEASE_MAX_CLOCK_DRIFT,
        }
    } else {
        ReadMode::ReadIndex
    }
}

/// A read mode, as the summaries print it.
pub fn describe_read_mode(mode: ReadMode) -> String {
    match mode {
        ReadMode::Lease { max_clock_drift } => format!("lease (drift bound {max_clock_drift})"),
        _ => "read-index".into(),
    }
}

/// Half of the clients (rounded down), chosen per seed, stay on their starting node. Drawn from
/// a generator of their own, so that every other draw of a seed (configuration, schedule,
/// workload) is what it was before sticky clients were added.
fn draw_sticky_clients(seed: u64, clients: u64) -> BTreeSet<u64> {
    let mut rng = rng::seeded(seed ^ 0x5717_C4C1_1E47_5EED);
    let mut ids: Vec<u64> = (1..=clients).collect();
    rng::shuffle(&mut rng, &mut ids);
    ids.truncate((clients / 2) as usize);
    ids.into_iter().collect()
}

/// How many keys each step of an image writes: mostly a few, so that an image spans many apply
/// batches and its kept values are exercised (the workload has a few dozen keys). From a
/// generator of its own, so that the rest of the seed's draws stay what they were.
fn draw_step_keys(seed: u64) -> usize {
    let mut rng = rng::seeded(seed ^ 0x57E9_4E75_0F1A_6E5A);
    const STEPS: [usize; 6] = [1, 2, 3, 5, 8, 4096];
    STEPS[rng::index(&mut rng, STEPS.len())]
}

/// A snapshot policy that never takes one.
pub fn snapshots_off() -> SnapshotPolicy {
    SnapshotPolicy {
        threshold: 0,
        ..SnapshotPolicy::default()
    }
}

/// A snapshot policy, as the summaries print it.
pub fn describe_snapshots(p: &SnapshotPolicy) -> String {
    if p.threshold == 0 {
        "off".into()
    } else {
        format!(
            "every {} entries, tail {}, {}-byte chunks, {} keys per image step",
            p.threshold, p.tail, p.chunk_bytes, p.step_keys
        )
    }
}
