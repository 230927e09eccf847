//! One seeded run: a cluster of real nodes (the production driver, transport and storage) on
//! turmoil's simulated network and the power-cut disk, clients running a mixed workload on a
//! few hot keys, a fault schedule, and the checks: invariants while running, liveness once the
//! faults stop, and linearizability of every key's history at the end.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, UNIX_EPOCH};

use net::client::{ClientConfig, ClientError, KvClient};
use net::node::{self, NodeConfig, PauseSwitch, UnsafeSwitches};
use net::storage::{SimulatedDisk, StorageMode};
use net::transport::{Net, TransportTimeouts};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::faults::{FaultAction, FaultKinds, Schedule};
use crate::history::{History, Observed, Op, Operation, Outcome};
use crate::linearizability::{self, CheckError};
use crate::net::TurmoilNet;
use crate::observe::{InvariantViolation, Observer};

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
    pub keys: u64,
    pub switches: UnsafeSwitches,
}

impl RunConfig {
    /// The configuration a seed stands for: 3 or 5 nodes, a random mix of faults (swarm testing),
    /// 10 to 20 simulated seconds of workload.
    pub fn from_seed(seed: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        Self {
            seed,
            nodes: if rng.gen_bool(0.7) { 3 } else { 5 },
            kinds: FaultKinds::from_rng(&mut rng),
            workload: Duration::from_secs(rng.gen_range(10..=20)),
            liveness_bound: Duration::from_secs(30),
            clients: rng.gen_range(3..=5),
            keys: rng.gen_range(2..=5),
            switches: UnsafeSwitches::default(),
        }
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
            "simulation failed: seed {} ({} nodes, faults: {}, {} clients on {} keys)",
            c.seed, c.nodes, c.kinds, c.clients, c.keys
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
fn now() -> u64 {
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
    let schedule = Schedule::draw(cfg.seed, cfg.nodes, cfg.kinds, cfg.workload);
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

    let observer = Observer::default();
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
        let (peers, observer, switches, seed) =
            (peers.clone(), observer.clone(), cfg.switches, cfg.seed);
        let client_addrs: BTreeMap<u64, String> = servers
            .iter()
            .enumerate()
            .map(|(i, a)| (i as u64 + 1, a.clone()))
            .collect();
        let boots = Rc::new(Cell::new(0u64));
        sim.host(node_name(id), move || {
            disk.env.power_on();
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
            async move {
                tokio::time::sleep(offset).await;
                serve(nc).await
            }
        });
    }

    let history = Rc::new(RefCell::new(History::new()));
    let workload_end = cfg.workload.as_nanos() as u64;
    for c in 1..=cfg.clients {
        let client_id = rng.gen::<u64>() | 1;
        let client = KvClient::over(TurmoilNet, servers.clone(), client_config(4), client_id)
            .starting_at(c as usize);
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
        let (liveness, history, keys) = (liveness.clone(), history.clone(), cfg.keys);
        sim.client("probe", async move {
            tokio::time::sleep(Duration::from_nanos(heal.saturating_sub(now()))).await;
            *liveness.borrow_mut() = probe(client, history, keys, heal + bound).await;
            Ok(())
        });
    }

    let mut actions = schedule.actions.iter().peekable();
    let node_names: Vec<String> = (1..=cfg.nodes).map(node_name).collect();
    let mut crashed: Vec<u64> = Vec::new();
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
    })
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

/// One simulated client: random operations on a few hot keys until the workload ends.
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
            let key = format!("k{}", self.rng.gen_range(0..self.keys)).into_bytes();
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
/// once more into the history.
async fn probe(
    mut client: KvClient<TurmoilNet>,
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
    for k in 0..keys {
        let key = format!("k{k}").into_bytes();
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
