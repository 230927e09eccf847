//! One seeded run: a cluster of real nodes (the production driver, transport and storage) on
//! turmoil's simulated network and the power-cut disk, clients running a mixed workload on a
//! few hot keys, a fault schedule, and the checks: invariants while running, liveness once the
//! faults stop, and linearizability of every key's history at the end.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};

use net::client::{ClientConfig, ClientError, KvClient};
use net::node::{self, NodeConfig, PauseSwitch, SnapshotPolicy, UnsafeSwitches};
use net::storage::{SimulatedDisk, StorageMode};
use net::transport::{Net, TransportTimeouts};
use raft_core::{NodeId, SnapshotMeta};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::faults::{FaultAction, FaultKinds, Schedule};
use crate::history::{History, Observed, Op, Operation, Outcome};
use crate::linearizability::{self, CheckError};
use crate::net::TurmoilNet;
use crate::observe::{InvariantViolation, Observer, SnapshotEvent, SnapshotHook};

const PEER_PORT: u16 = 7100;
const CLIENT_PORT: u16 = 6379;

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
}

impl RunConfig {
    /// The configuration a seed stands for: 3 or 5 nodes, a random mix of faults (swarm testing),
    /// 10 to 20 simulated seconds of workload; in half of the seeds, snapshots every 20 to 300
    /// entries with a log tail of up to as many, and then in half of those, crashes during
    /// snapshot installs. Half of the clients stay on their starting node (see
    /// [`RunConfig::sticky_clients`]).
    pub fn from_seed(seed: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
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
                chunk_bytes: rng.gen_range(64..=4096),
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
            keys,
            switches: UnsafeSwitches::default(),
            snapshots,
            crash_after_first_snapshot: false,
            extra_faults: Vec::new(),
        }
    }
}

/// Half of the clients (rounded down), chosen per seed, stay on their starting node. Drawn from
/// a generator of their own, so that every other draw of a seed (configuration, schedule,
/// workload) is what it was before sticky clients were added.
fn draw_sticky_clients(seed: u64, clients: u64) -> BTreeSet<u64> {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x5717_C4C1_1E47_5EED);
    let mut ids: Vec<u64> = (1..=clients).collect();
    for i in 0..ids.len() {
        let j = rng.gen_range(i..ids.len());
        ids.swap(i, j);
    }
    ids.truncate((clients / 2) as usize);
    ids.into_iter().collect()
}

/// How many keys each step of an image writes: mostly a few, so that an image spans many apply
/// batches and its kept values are exercised (the workload has a few dozen keys). From a
/// generator of its own, so that the rest of the seed's draws stay what they were.
fn draw_step_keys(seed: u64) -> usize {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x57E9_4E75_0F1A_6E5A);
    [1, 2, 3, 5, 8, 4096][rng.gen_range(0..6)]
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

/// Where the power cuts of the install-crash fault landed, judged from the node's disk at the
/// moment of the cut: before the install began (the staged snapshot still aside), inside it
/// (its marker on disk: the state machine swapped, the log maybe not yet), or after it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InstallCrashes {
    pub before: u64,
    pub inside: u64,
    pub after: u64,
}

impl InstallCrashes {
    pub fn total(&self) -> u64 {
        self.before + self.inside + self.after
    }
}

/// What a run did, for summaries and the determinism check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunReport {
    pub seed: u64,
    pub nodes: u64,
    pub kinds: FaultKinds,
    pub ops: usize,
    pub ok: usize,
    pub unknown: usize,
    pub failed: usize,
    pub elections: u64,
    pub max_applied: u64,
    pub trace_hash: u64,
    /// The checker ran out of budget on some key: linearizability was not decided.
    pub inconclusive: bool,
    pub simulated: Duration,
    pub history: History,
    /// The fault actions taken, with their simulated times.
    pub faults: Vec<String>,
    pub snapshot_policy: SnapshotPolicy,
    /// Snapshot images taken, on every node: (node, simulated ns, snapshot), in time order.
    pub snapshots_taken: Vec<(NodeId, u64, SnapshotMeta)>,
    /// Snapshot installs begun, on every node: (node, simulated ns, snapshot), in time order.
    pub snapshots_installed: Vec<(NodeId, u64, SnapshotMeta)>,
    /// Power cuts of the install-crash fault.
    pub install_crashes: InstallCrashes,
    /// Power cuts right after a node's first snapshot (`crash_after_first_snapshot`).
    pub first_snapshot_crashes: u64,
}

/// Why a run failed.
#[derive(Clone, Debug)]
pub enum FailureKind {
    Invariant(InvariantViolation),
    Linearizability(String),
    Liveness(String),
    /// The simulation itself failed (a node stopped with an error, a client panicked).
    Simulation(String),
}

impl FailureKind {
    /// A short name for the rule that broke.
    pub fn rule(&self) -> &str {
        match self {
            FailureKind::Invariant(v) => v.rule,
            FailureKind::Linearizability(_) => "linearizability",
            FailureKind::Liveness(_) => "liveness",
            FailureKind::Simulation(_) => "simulation",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Failure {
    pub config: RunConfig,
    pub kind: FailureKind,
    pub trace_file: Option<std::path::PathBuf>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        writeln!(
            f,
            "simulation failed: seed {} ({} nodes, faults: {}, snapshots: {}, {} clients ({} staying on their node) on {} keys)",
            c.seed,
            c.nodes,
            c.kinds,
            describe_snapshots(&c.snapshots),
            c.clients,
            c.sticky_clients.len(),
            c.keys
        )?;
        match &self.kind {
            FailureKind::Invariant(v) => writeln!(f, "invariant broken: {}: {}", v.rule, v.detail)?,
            FailureKind::Linearizability(text) => writeln!(f, "not linearizable:\n{text}")?,
            FailureKind::Liveness(text) => writeln!(f, "no progress after healing: {text}")?,
            FailureKind::Simulation(text) => writeln!(f, "the simulation failed: {text}")?,
        }
        writeln!(
            f,
            "replay: SIM_SEED={} cargo test --release -p sim --test random_runs -- --nocapture",
            c.seed
        )?;
        if let Some(p) = &self.trace_file {
            writeln!(f, "trace: {}", p.display())?;
        }
        Ok(())
    }
}

fn node_name(id: u64) -> String {
    format!("n{id}")
}

/// Simulated nanoseconds since the start, on the simulator's global clock.
pub fn now() -> u64 {
    turmoil::sim_elapsed().map_or(0, |d| d.as_nanos() as u64)
}

/// Runs one seed to the end and judges it.
pub fn run(cfg: &RunConfig) -> Result<RunReport, Box<Failure>> {
    let mut trace = Vec::<String>::new();
    let outcome = run_inner(cfg, &mut trace);
    let fail = |kind: FailureKind, trace: &[String]| {
        let trace_file = write_trace(cfg.seed, trace, &kind);
        Box::new(Failure {
            config: cfg.clone(),
            kind,
            trace_file,
        })
    };
    match outcome {
        Ok(report) => Ok(report),
        Err(kind) => Err(fail(kind, &trace)),
    }
}

fn run_inner(cfg: &RunConfig, trace: &mut Vec<String>) -> Result<RunReport, FailureKind> {
    let mut schedule = Schedule::draw(cfg.seed, cfg.nodes, cfg.kinds, cfg.workload);
    if !cfg.extra_faults.is_empty() {
        schedule.actions.extend(cfg.extra_faults.iter().cloned());
        // Stable: the drawn actions keep their order among themselves.
        schedule.actions.sort_by_key(|(at, _)| *at);
    }
    let mut rng = SmallRng::seed_from_u64(cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut builder = turmoil::Builder::new();
    builder
        .rng_seed(cfg.seed)
        .epoch(UNIX_EPOCH + Duration::from_secs(1_800_000_000))
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_millis(0))
        .max_message_latency(Duration::from_millis(rng.gen_range(1..20)))
        .simulation_duration(schedule.heal_at + cfg.liveness_bound + Duration::from_secs(30));
    let mut sim = builder.build();

    let triggers = Triggers::new(cfg);
    let hook: SnapshotHook = {
        let triggers = triggers.clone();
        Arc::new(move |node, event, snapshot| triggers.on_snapshot(node, event, snapshot))
    };
    let observer = Observer::with_hook(hook);
    let peers: BTreeMap<u64, String> = (1..=cfg.nodes)
        .map(|i| (i, format!("{}:{PEER_PORT}", node_name(i))))
        .collect();
    let servers: Vec<String> = (1..=cfg.nodes)
        .map(|i| format!("{}:{CLIENT_PORT}", node_name(i)))
        .collect();
    let mut nodes = BTreeMap::new();
    for id in 1..=cfg.nodes {
        let disk = SimulatedDisk::default();
        let pause = PauseSwitch::default();
        let fuse = triggers.add_node(id, &disk);
        nodes.insert(
            id,
            NodeControls {
                disk: disk.clone(),
                pause: pause.clone(),
            },
        );
        let skew = if cfg.kinds.clock_skew {
            rng.gen_range(0.8..1.25)
        } else {
            1.0
        };
        let tick = Duration::from_micros((100_000.0 * skew) as u64);
        // The clock's offset: each node's ticks start at their own phase.
        let offset = if cfg.kinds.clock_skew {
            Duration::from_micros(rng.gen_range(0..100_000))
        } else {
            Duration::ZERO
        };
        let (peers, observer, switches, seed, snapshots) = (
            peers.clone(),
            observer.clone(),
            cfg.switches,
            cfg.seed,
            cfg.snapshots,
        );
        let client_addrs: BTreeMap<u64, String> = servers
            .iter()
            .enumerate()
            .map(|(i, a)| (i as u64 + 1, a.clone()))
            .collect();
        let boots = Rc::new(Cell::new(0u64));
        sim.host(node_name(id), move || {
            disk.env.power_on();
            fuse.reset();
            boots.set(boots.get() + 1);
            let mut nc = NodeConfig::new(id, peers.clone(), format!("/n{id}").into());
            nc.tick = tick;
            nc.request_timeout = Duration::from_secs(2);
            nc.transport = TransportTimeouts {
                connect: Duration::from_millis(500),
                write: Duration::from_secs(1),
                idle_read: Duration::from_secs(2),
                backoff_min: Duration::from_millis(20),
                backoff_max: Duration::from_millis(500),
            };
            nc.seed = seed ^ (id << 48) ^ (boots.get() << 32);
            nc.client_addrs = client_addrs.clone();
            nc.storage = StorageMode::Simulated(disk.clone());
            nc.pause = pause.clone();
            nc.observer = Some(std::sync::Arc::new(observer.clone()));
            nc.unsafe_switches = switches;
            nc.snapshots = snapshots;
            let fuse = fuse.clone();
            async move {
                tokio::time::sleep(offset).await;
                match serve(nc).await {
                    // The power was cut from inside the host (a snapshot-driven fault): the
                    // node stops on its storage errors, and the fault loop crashes the host
                    // at the end of this step. Until then it is as dead as it will be.
                    Err(_) if fuse.blown() => std::future::pending().await,
                    result => result,
                }
            }
        });
    }

    let history = Rc::new(RefCell::new(History::new()));
    let workload_end = cfg.workload.as_nanos() as u64;
    for c in 1..=cfg.clients {
        let client_id = rng.gen::<u64>() | 1;
        let mut config = client_config(4);
        config.follow_leader = !cfg.sticky_clients.contains(&c);
        let client =
            KvClient::over(TurmoilNet, servers.clone(), config, client_id).starting_at(c as usize);
        let w = Workload {
            client,
            history: history.clone(),
            observer: observer.clone(),
            rng: SmallRng::seed_from_u64(rng.gen()),
            keys: cfg.keys,
            id: c,
            last_seen: BTreeMap::new(),
            next_value: 0,
        };
        sim.client(format!("c{c}"), async move {
            w.run(workload_end).await;
            Ok(())
        });
    }

    // After the faults stop: a write and a read must succeed within the bound, and a final read
    // of every key joins the history (so a lost acknowledged write shows up there).
    let liveness: Rc<RefCell<Result<(), String>>> = Rc::new(RefCell::new(Err(
        "the liveness probe never finished".into(),
    )));
    {
        let heal = schedule.heal_at.as_nanos() as u64;
        let bound = cfg.liveness_bound.as_nanos() as u64;
        let client_id = rng.gen::<u64>() | 1;
        let client = KvClient::over(TurmoilNet, servers.clone(), client_config(1_000), client_id);
        // One client per node that stays on it: the last reads of every key on every node
        // show a replica whose state machine went astray.
        let replicas: Vec<(u64, KvClient<TurmoilNet>)> = servers
            .iter()
            .enumerate()
            .map(|(i, server)| {
                let mut config = client_config(3);
                config.follow_leader = false;
                let id = rng.gen::<u64>() | 1;
                let client = KvClient::over(TurmoilNet, vec![server.clone()], config, id);
                (i as u64 + 1, client)
            })
            .collect();
        let (liveness, history, keys) = (liveness.clone(), history.clone(), cfg.keys);
        sim.client("probe", async move {
            tokio::time::sleep(Duration::from_nanos(heal.saturating_sub(now()))).await;
            *liveness.borrow_mut() = probe(client, replicas, history, keys, heal + bound).await;
            Ok(())
        });
    }

    let mut actions = schedule.actions.iter().peekable();
    let node_names: Vec<String> = (1..=cfg.nodes).map(node_name).collect();
    let mut crashed: Vec<u64> = Vec::new();
    // Restarts due for the hosts crashed by snapshot-driven faults: (when, node).
    let mut restarts: Vec<(Duration, u64)> = Vec::new();
    loop {
        let finished = match sim.step() {
            Ok(done) => done,
            Err(e) => {
                let text = e.to_string();
                if text.contains("Ran for duration") {
                    return Err(FailureKind::Liveness(format!(
                        "clients still running at the end of the simulation ({text})\n{}",
                        observer.summary()
                    )));
                }
                return Err(FailureKind::Simulation(text));
            }
        };
        let elapsed = sim.elapsed();
        for cut in triggers.take_cuts() {
            if crashed.contains(&cut.node) {
                continue;
            }
            trace.push(format!(
                "{:>10.3}s {} on n{}",
                elapsed.as_secs_f64(),
                cut.what,
                cut.node
            ));
            sim.crash(node_name(cut.node));
            crashed.push(cut.node);
            restarts.push((elapsed + cut.downtime, cut.node));
        }
        while let Some(k) = restarts.iter().position(|(at, _)| *at <= elapsed) {
            let (_, id) = restarts.remove(k);
            // Unless a scheduled restart or a heal was first.
            if let Some(pos) = crashed.iter().position(|c| *c == id) {
                crashed.remove(pos);
                trace.push(format!("{:>10.3}s Restart([{id}])", elapsed.as_secs_f64()));
                sim.bounce(node_name(id));
            }
        }
        if elapsed >= schedule.heal_at {
            triggers.disarm();
        }
        while let Some((at, action)) = actions.next_if(|(at, _)| *at <= elapsed) {
            trace.push(format!("{:>10.3}s {action:?}", at.as_secs_f64()));
            apply(&mut sim, action, &node_names, &nodes, &mut crashed);
        }
        if let Some(v) = observer.violations().into_iter().next() {
            return Err(FailureKind::Invariant(v));
        }
        if finished {
            break;
        }
    }

    liveness
        .borrow()
        .clone()
        .map_err(|e| FailureKind::Liveness(format!("{e}\n{}", observer.summary())))?;
    let faults = trace.clone();
    let history = history.borrow().clone();
    for op in history.iter() {
        trace.push(op.to_string());
    }
    let inconclusive = match linearizability::check(&history) {
        Ok(()) => false,
        // A history too tangled to decide within the budget proves nothing either way; the
        // report says so, so that a run of seeds can count them.
        Err(CheckError::Inconclusive { .. }) => true,
        Err(e) => return Err(FailureKind::Linearizability(e.to_string())),
    };
    let count = |f: fn(&Outcome) -> bool| history.iter().filter(|o| f(&o.outcome)).count();
    Ok(RunReport {
        seed: cfg.seed,
        nodes: cfg.nodes,
        kinds: cfg.kinds,
        ops: history.len(),
        ok: count(|o| matches!(o, Outcome::Ok(_))),
        unknown: count(|o| matches!(o, Outcome::Unknown)),
        failed: count(|o| matches!(o, Outcome::Failed)),
        elections: observer.elections(),
        max_applied: observer.max_applied(),
        trace_hash: observer.trace_hash(),
        inconclusive,
        simulated: sim.elapsed(),
        history,
        faults,
        snapshot_policy: cfg.snapshots,
        snapshots_taken: observer.snapshots_taken(),
        snapshots_installed: observer.snapshots_installed(),
        install_crashes: triggers.install_crashes(),
        first_snapshot_crashes: triggers.first_snapshot_crashes(),
    })
}

/// A node's power as the snapshot-driven faults see it: a cut drawn and not yet made
/// (`pending`), or made (`blown`: the host is crashed after this step; its storage errors are
/// the power cut's, not a failure).
#[derive(Default)]
struct Fuse {
    pending: AtomicBool,
    blown: AtomicBool,
}

impl Fuse {
    fn reset(&self) {
        self.pending.store(false, Ordering::Relaxed);
        self.blown.store(false, Ordering::Relaxed);
    }

    fn blown(&self) -> bool {
        self.blown.load(Ordering::Relaxed)
    }
}

/// A power cut made from inside a host, for the fault loop to turn into a crash.
struct Cut {
    node: u64,
    downtime: Duration,
    what: String,
}

/// The faults that snapshot events set off: the observer's hook calls them on the node's own
/// host, they cut the power there (at a drawn point), and the fault loop crashes the host after
/// the step and restarts it later, as for the scheduled crashes.
#[derive(Clone)]
struct Triggers {
    state: Arc<Mutex<TriggerState>>,
}

struct TriggerState {
    rng: SmallRng,
    /// Off once the faults stop.
    armed: bool,
    install_crashes: bool,
    after_first_snapshot: bool,
    took_first: BTreeSet<u64>,
    nodes: BTreeMap<u64, (kv::PowerCutEnv, Arc<Fuse>)>,
    cuts: Vec<Cut>,
    install_stats: InstallCrashes,
    first_snapshot_crashes: u64,
}

impl Triggers {
    fn new(cfg: &RunConfig) -> Self {
        Self {
            state: Arc::new(Mutex::new(TriggerState {
                rng: SmallRng::seed_from_u64(cfg.seed ^ 0x01a5_7a11_u64.rotate_left(24)),
                armed: true,
                install_crashes: cfg.kinds.install_crashes,
                after_first_snapshot: cfg.crash_after_first_snapshot,
                took_first: BTreeSet::new(),
                nodes: BTreeMap::new(),
                cuts: Vec::new(),
                install_stats: InstallCrashes::default(),
                first_snapshot_crashes: 0,
            })),
        }
    }

    fn state(&self) -> MutexGuard<'_, TriggerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add_node(&self, id: u64, disk: &SimulatedDisk) -> Arc<Fuse> {
        let fuse = Arc::new(Fuse::default());
        self.state()
            .nodes
            .insert(id, (disk.env.clone(), fuse.clone()));
        fuse
    }

    fn disarm(&self) {
        self.state().armed = false;
    }

    fn take_cuts(&self) -> Vec<Cut> {
        std::mem::take(&mut self.state().cuts)
    }

    fn install_crashes(&self) -> InstallCrashes {
        self.state().install_stats
    }

    fn first_snapshot_crashes(&self) -> u64 {
        self.state().first_snapshot_crashes
    }

    /// Called on the node's host by the observer, before the node acts on the event.
    fn on_snapshot(&self, node: NodeId, event: SnapshotEvent, snapshot: SnapshotMeta) {
        let mut st = self.state();
        if !st.armed {
            return;
        }
        let fire = match event {
            SnapshotEvent::Installing => st.install_crashes && st.rng.gen_bool(0.5),
            SnapshotEvent::Taken => st.after_first_snapshot && st.took_first.insert(node),
        };
        if !fire {
            return;
        }
        let Some((env, fuse)) = st.nodes.get(&node).cloned() else {
            return;
        };
        if fuse.pending.swap(true, Ordering::Relaxed) {
            return;
        }
        // Where the cut lands: after a few turns of the host's other tasks, or a few simulated
        // milliseconds later. The install runs on the two storage workers in turns; with one
        // turn, the cut lands between the state machine's half and the end.
        let (turns, delay) = if st.rng.gen_bool(0.75) {
            let turns = if st.rng.gen_bool(0.7) {
                1
            } else {
                st.rng.gen_range(0..4u32)
            };
            (turns, Duration::ZERO)
        } else {
            (0, Duration::from_millis(st.rng.gen_range(0..=4)))
        };
        let downtime = Duration::from_millis(st.rng.gen_range(100..2_000));
        drop(st);
        let triggers = self.clone();
        tokio::task::spawn_local(async move {
            for _ in 0..turns {
                next_turn().await;
            }
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let phase = install_phase(&env.files(), &PathBuf::from(format!("/n{node}")));
            env.cut_power();
            fuse.blown.store(true, Ordering::Relaxed);
            let mut st = triggers.state();
            let what = match event {
                SnapshotEvent::Installing => {
                    let stats = &mut st.install_stats;
                    match phase {
                        InstallPhase::Before => stats.before += 1,
                        InstallPhase::Inside => stats.inside += 1,
                        InstallPhase::After => stats.after += 1,
                    }
                    let when = match phase {
                        InstallPhase::Before => "before",
                        InstallPhase::Inside => "inside",
                        InstallPhase::After => "after",
                    };
                    format!(
                        "power cut {when} the install of snapshot {}/{}",
                        snapshot.index, snapshot.term
                    )
                }
                SnapshotEvent::Taken => {
                    st.first_snapshot_crashes += 1;
                    format!(
                        "power cut after the first snapshot {}/{}",
                        snapshot.index, snapshot.term
                    )
                }
            };
            st.cuts.push(Cut {
                node,
                downtime,
                what,
            });
        });
    }
}

/// Lets every task already runnable on this host run first: the task goes to the back of the
/// run queue at once (`tokio::task::yield_now` instead waits until the runtime has nothing
/// else to do, which is after a whole install).
async fn next_turn() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InstallPhase {
    Before,
    Inside,
    After,
}

/// Where a node's install stands, from the files in its data directory `dir`: the install
/// marker (or its temporary) is there from the commit point to the end; before it, the staged
/// snapshot waits aside.
fn install_phase(files: &[PathBuf], dir: &Path) -> InstallPhase {
    let marker = files.iter().any(|f| {
        f.parent() == Some(dir)
            && f.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(kv::snapshot::INSTALL_MARKER))
    });
    let incoming = dir.join(kv::snapshot::INCOMING_DIR);
    if marker {
        InstallPhase::Inside
    } else if files.iter().any(|f| f.starts_with(&incoming)) {
        InstallPhase::Before
    } else {
        InstallPhase::After
    }
}

/// One node's software, as a host runs it after each (re)start.
async fn serve(cfg: NodeConfig) -> turmoil::Result {
    let id = cfg.id;
    let clients = TurmoilNet
        .bind(format!("{}:{CLIENT_PORT}", node_name(id)))
        .await?;
    // Never fired: a simulated node stops only by crashing. The sender must stay alive, or the
    // node would read its drop as a shutdown.
    let (_keep_running, shutdown) = tokio::sync::watch::channel(false);
    let seed = cfg.seed;
    let (handle, run) = node::start(cfg, TurmoilNet, shutdown.clone())
        .await
        .map_err(|e| format!("node {id}: {e}"))?;
    tokio::spawn(net::server::run_client_server(
        clients, handle, shutdown, seed,
    ));
    run.await.map_err(|e| format!("node {id}: {e}"))?;
    Ok(())
}

fn client_config(max_attempts: u32) -> ClientConfig {
    ClientConfig {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(3),
        max_attempts,
        backoff: Duration::from_millis(100),
        follow_leader: true,
    }
}

fn apply(
    sim: &mut turmoil::Sim<'_>,
    action: &FaultAction,
    names: &[String],
    nodes: &BTreeMap<u64, NodeControls>,
    crashed: &mut Vec<u64>,
) {
    let name = |id: &u64| node_name(*id);
    match action {
        FaultAction::Partition(a, b) => {
            for x in a.iter().map(name) {
                for y in b.iter().map(name) {
                    sim.partition(x.as_str(), y.as_str());
                }
            }
        }
        FaultAction::PartitionOneWay(a, b) => {
            for x in a.iter().map(name) {
                for y in b.iter().map(name) {
                    sim.partition_oneway(x.as_str(), y.as_str());
                }
            }
        }
        FaultAction::Heal => {
            for (i, x) in names.iter().enumerate() {
                for y in &names[i + 1..] {
                    sim.repair(x.as_str(), y.as_str());
                }
            }
            for id in std::mem::take(crashed) {
                sim.bounce(name(&id));
            }
        }
        FaultAction::Crash(ids) => {
            for id in ids {
                if crashed.contains(id) {
                    continue;
                }
                // Cut the power first: the host's destructors (LevelDB flushes on drop) must
                // not reach the disk.
                nodes[id].disk.env.cut_power();
                sim.crash(name(id));
                crashed.push(*id);
            }
        }
        FaultAction::Restart(ids) => {
            for id in ids {
                if let Some(pos) = crashed.iter().position(|c| c == id) {
                    crashed.remove(pos);
                    sim.bounce(name(id));
                }
            }
        }
        FaultAction::Pause(id) => {
            nodes[id].pause.set(true);
            for other in names.iter().filter(|n| **n != name(id)) {
                sim.hold(name(id), other.as_str());
            }
        }
        FaultAction::Resume(id) => {
            nodes[id].pause.set(false);
            for other in names.iter().filter(|n| **n != name(id)) {
                sim.release(name(id), other.as_str());
            }
        }
        FaultAction::LatencySpike(id, max) => {
            for other in names.iter().filter(|n| **n != name(id)) {
                sim.set_link_max_message_latency(name(id), other.as_str(), *max);
            }
        }
        FaultAction::Flaky(id, rate) => {
            for other in names.iter().filter(|n| **n != name(id)) {
                sim.set_link_fail_rate(name(id), other.as_str(), *rate);
            }
        }
        FaultAction::SlowDisk(id, latency) => {
            let micros = latency.as_micros() as u64;
            nodes[id]
                .disk
                .write_latency_micros
                .store(micros, Ordering::Relaxed);
        }
        FaultAction::Calm => {
            for node in nodes.values() {
                node.disk.write_latency_micros.store(0, Ordering::Relaxed);
            }
            for (i, x) in names.iter().enumerate() {
                for y in &names[i + 1..] {
                    sim.set_link_fail_rate(x.as_str(), y.as_str(), 0.0);
                    sim.set_link_max_message_latency(
                        x.as_str(),
                        y.as_str(),
                        Duration::from_millis(20),
                    );
                }
            }
        }
    }
}

/// What the fault schedule holds of each node, outside the node's (crashable) host.
struct NodeControls {
    disk: SimulatedDisk,
    pause: PauseSwitch,
}

/// Keys written rarely (`w0`, `w1`, ...), besides the hot ones: a replica whose state machine
/// went astray keeps the difference on them long enough for a read to see it, where the hot
/// keys are overwritten within milliseconds.
const COLD_KEYS: u64 = 16;

/// Every key the workload touches: the hot keys `k0..k{hot}`, then the cold ones.
fn all_keys(hot: u64) -> Vec<Vec<u8>> {
    (0..hot)
        .map(|k| format!("k{k}").into_bytes())
        .chain((0..COLD_KEYS).map(|k| format!("w{k}").into_bytes()))
        .collect()
}

/// One simulated client: random operations on a few hot keys, and now and then on one of the
/// cold keys, until the workload ends.
struct Workload {
    client: KvClient<TurmoilNet>,
    history: Rc<RefCell<History>>,
    observer: Observer,
    rng: SmallRng,
    keys: u64,
    id: u64,
    /// The value this client last saw at each key, for compare-and-set.
    last_seen: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    next_value: u64,
}

impl Workload {
    async fn run(mut self, until: u64) {
        while now() < until {
            let key = if self.rng.gen_bool(0.1) {
                format!("w{}", self.rng.gen_range(0..COLD_KEYS)).into_bytes()
            } else {
                format!("k{}", self.rng.gen_range(0..self.keys)).into_bytes()
            };
            let op = self.pick(&key);
            let invoke = now();
            let outcome = execute(&mut self.client, &key, &op).await;
            let complete = now();
            if let Outcome::Ok(Observed::Value(v)) = &outcome {
                self.last_seen.insert(key.clone(), v.clone());
            }
            let mut event = format!("{} {:?} {:?}", self.id, op, outcome).into_bytes();
            event.extend(complete.to_be_bytes());
            self.observer.record(&event);
            self.history
                .borrow_mut()
                .push(Operation::new(self.id, key, op, invoke, complete, outcome));
            let think = self.rng.gen_range(0..20);
            tokio::time::sleep(Duration::from_millis(think)).await;
        }
    }

    fn pick(&mut self, key: &[u8]) -> Op {
        // Values are integers, unique per write, so that INCR always applies and every read
        // names the write it saw.
        self.next_value += 1;
        let unique = (self.id * 1_000_000 + self.next_value)
            .to_string()
            .into_bytes();
        match self.rng.gen_range(0..100) {
            0..=34 => Op::Get,
            35..=59 => Op::Set(unique),
            60..=74 => Op::Cas {
                expected: self.last_seen.get(key).cloned().flatten(),
                new: Some(unique),
            },
            75..=89 => Op::Incr(self.rng.gen_range(1..=5)),
            _ => Op::Delete,
        }
    }
}

/// Runs `op` and turns the client's answer into a history outcome.
async fn execute(client: &mut KvClient<TurmoilNet>, key: &[u8], op: &Op) -> Outcome {
    let is_write = !matches!(op, Op::Get);
    let result = match op {
        Op::Get => client
            .get(key)
            .await
            .map(|v| Observed::Value(v.map(|b| b.to_vec()))),
        Op::Set(v) => client.set(key, v).await.map(|()| Observed::Done),
        Op::Delete => client.del(key).await.map(Observed::Existed),
        Op::Cas { expected, new } => match new {
            Some(new) => client
                .cas(key, expected.as_deref(), new)
                .await
                .map(Observed::Swapped),
            None => return Outcome::Failed,
        },
        Op::Incr(by) => client.incr_by(key, *by).await.map(Observed::Int),
    };
    match result {
        Ok(observed) => Outcome::Ok(observed),
        Err(ClientError::Unavailable { maybe_applied, .. }) if is_write && maybe_applied => {
            Outcome::Unknown
        }
        Err(ClientError::Unavailable { .. }) => Outcome::Failed,
        // The server refused the command (it took no effect) or answered oddly.
        Err(ClientError::Server(_)) => Outcome::Failed,
        Err(ClientError::Protocol(_)) if is_write => Outcome::Unknown,
        Err(ClientError::Protocol(_)) => Outcome::Failed,
    }
}

/// After the faults stop: a write and a read succeed before `deadline`, then every key is read
/// once more into the history, and once on each node (`replicas`: a client for each, by node
/// id; a follower serves a read from its own state machine once the leader confirms the index).
async fn probe(
    mut client: KvClient<TurmoilNet>,
    replicas: Vec<(u64, KvClient<TurmoilNet>)>,
    history: Rc<RefCell<History>>,
    keys: u64,
    deadline: u64,
) -> Result<(), String> {
    let started = now();
    let write_and_read = async {
        let write = client.set(b"liveness", b"1").await;
        let read = client.get(b"liveness").await;
        (write, read)
    };
    let limit = Duration::from_nanos(deadline.saturating_sub(started));
    match tokio::time::timeout(limit, write_and_read).await {
        Ok((Ok(()), Ok(Some(_)))) => {}
        Ok((w, r)) => {
            return Err(format!(
                "after the faults stopped at {:.1}s: write {w:?}, read {r:?}",
                started as f64 / 1e9
            ))
        }
        Err(_) => {
            return Err(format!(
                "no write and read succeeded within {:.1}s of the faults stopping at {:.1}s",
                limit.as_secs_f64(),
                started as f64 / 1e9
            ))
        }
    }
    for key in all_keys(keys) {
        let invoke = now();
        let outcome = execute(&mut client, &key, &Op::Get).await;
        history.borrow_mut().push(Operation::new(
            u64::MAX,
            key,
            Op::Get,
            invoke,
            now(),
            outcome,
        ));
    }
    // Bounded: a replica that cannot serve reads is not what liveness asks (one write and one
    // read), and reads left unfinished take no effect.
    let per_replica = async {
        for (node, mut client) in replicas {
            for key in all_keys(keys) {
                let invoke = now();
                let outcome = execute(&mut client, &key, &Op::Get).await;
                history.borrow_mut().push(Operation::new(
                    100 + node,
                    key,
                    Op::Get,
                    invoke,
                    now(),
                    outcome,
                ));
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(20), per_replica).await;
    Ok(())
}

/// Writes the run's fault actions and client history under `target/sim-traces/`.
fn write_trace(seed: u64, trace: &[String], kind: &FailureKind) -> Option<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/sim-traces");
    std::fs::create_dir_all(&dir).ok()?;
    let path = dir.join(format!("seed-{seed}.txt"));
    let mut text = format!("{kind:?}\n\n");
    for line in trace {
        text.push_str(line);
        text.push('\n');
    }
    std::fs::write(&path, text).ok()?;
    Some(path)
}
