//! One seeded run: a cluster of real nodes (the production driver, transport and storage) on
//! turmoil's simulated network and the power-cut disk, clients running a mixed workload on a
//! few hot keys, a fault schedule, and the checks: invariants while running, liveness once the
//! faults stop, and linearizability of every key's history at the end.
//!
//! * `config.rs`: what a run is ([`RunConfig`], drawn from the seed);
//! * `hosts.rs`: each node's configuration and software, as turmoil (re)starts its host;
//! * `clients.rs`: the workload clients and the liveness probe;
//! * `redis_ops.rs`: the workload's multi-key operations and writes with a time to live;
//! * `fault_loop.rs`: stepping the simulation and making the fault actions between steps;
//! * `membership.rs`: spare nodes that join once added, and the operator changing the members;
//! * `random_plan.rs`: the operator plans a share of the seeds draw;
//! * `splits.rs`: the operator splitting the keyspace into ranges in a share of the seeds;
//! * `triggers.rs`: the power cuts that snapshot events set off;
//! * `verdict.rs`: judging the end of a run ([`RunReport`], [`Failure`]) and the trace file.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use rand::Rng;

use crate::faults::Schedule;
use crate::history::History;
use crate::observe::Observer;
use crate::rng;

mod clients;
mod config;
mod fault_loop;
mod hosts;
mod membership;
mod random_plan;
mod redis_ops;
mod splits;
mod triggers;
mod verdict;

pub use config::{
    describe_read_mode, describe_snapshots, snapshots_off, RunConfig, LEASE_MAX_CLOCK_DRIFT,
};
pub use membership::{MemberOp, MemberPlan, OperatorReport};
pub use splits::{SplitPlan, SplitReport};
pub use verdict::{Failure, FailureKind, InstallCrashes, RunReport};

const PEER_PORT: u16 = 7100;
/// How far simulated time moves per step: the network's resolution (a message is delivered at
/// the first step after its latency, drawn up to 1-20 ms). Timers inside a host fire at their
/// exact times whatever the step. turmoil steps every host at every tick, busy or not: at 1 ms
/// that was half of a run's CPU time.
const TICK: Duration = Duration::from_millis(2);
const CLIENT_PORT: u16 = 6379;

fn node_name(id: u64) -> String {
    format!("n{id}")
}

/// Simulated nanoseconds since the start, on the simulator's global clock.
pub fn now() -> u64 {
    turmoil::sim_elapsed().map_or(0, |d| d.as_nanos() as u64)
}

/// Runs one seed to the end and judges it. A failure's trace (fault actions, then the client
/// history) is written under `target/sim-traces/` (see [`RunConfig::expect_failure`]).
pub fn run(cfg: &RunConfig) -> Result<RunReport, Box<Failure>> {
    let mut trace = Vec::<String>::new();
    run_and_judge(cfg, &mut trace).map_err(|kind| Failure::new(cfg, kind, &trace))
}

fn run_and_judge(cfg: &RunConfig, trace: &mut Vec<String>) -> Result<RunReport, FailureKind> {
    let schedule = schedule(cfg);
    let mut rng = rng::seeded(cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut sim = new_sim(cfg, &schedule, &mut rng);
    let triggers = triggers::Triggers::new(cfg);
    let observer = Observer::with_hook(triggers.hook());
    let deadline = (schedule.heal_at + cfg.liveness_bound).as_nanos() as u64;
    let spares = cfg.membership.as_ref().map_or(0, |p| p.spares);
    let servers = hosts::client_addresses(cfg.nodes + spares);
    let operator = cfg
        .membership
        .as_ref()
        .map(|_| membership::SharedOperator::default());
    let nodes = hosts::start_nodes(
        &mut sim,
        cfg,
        &observer,
        &triggers,
        operator.as_ref(),
        &mut rng,
    );
    let history: clients::SharedHistory = Rc::new(RefCell::new(History::new()));
    let mut tasks = ClientTasks::default();
    clients::start_workload(&mut tasks, cfg, &servers, &history, &observer, &mut rng);
    let liveness = clients::start_probe(
        &mut tasks,
        cfg,
        schedule.heal_at,
        &servers,
        &history,
        &mut rng,
    );
    if let (Some(plan), Some(state)) = (&cfg.membership, &operator) {
        membership::start_operator(&mut tasks, plan, state, &servers, deadline, cfg.seed);
    }
    let splits = cfg.splits.as_ref().map(|plan| {
        let seed_and_operator = (cfg.seed, operator.clone());
        splits::start_splitter(&mut tasks, plan, &servers, deadline, seed_and_operator)
    });
    tasks.start(&mut sim);
    fault_loop::run(
        &mut sim,
        &schedule,
        &nodes,
        &triggers,
        &observer,
        operator.as_ref(),
        trace,
    )?;
    let liveness = liveness.borrow().clone();
    let history = history.borrow().clone();
    let operator = operator.map(|o| o.borrow().report.clone());
    let splits = splits.map(|s| s.borrow().clone());
    let liveness = liveness
        .and_then(|()| verdict::operator_done(operator.as_ref()))
        .and_then(|()| splits::splits_done(splits.as_ref()));
    let mut report = verdict::judge(
        cfg,
        sim.elapsed(),
        liveness,
        history,
        &observer,
        &triggers,
        trace,
    )?;
    report.operator = operator;
    report.splits = splits;
    Ok(report)
}

/// Every client of a run (the workload clients, the liveness probe, the operator) as tasks of
/// one turmoil client host. turmoil steps the runtime of every host at every tick, busy or not,
/// and with a host per client that fixed cost was half of a run's CPU time. Clients lose nothing
/// by sharing a host: faults only touch the links between nodes.
#[derive(Default)]
pub(super) struct ClientTasks(Vec<Pin<Box<dyn Future<Output = ()>>>>);

impl ClientTasks {
    pub(super) fn add(&mut self, task: impl Future<Output = ()> + 'static) {
        self.0.push(Box::pin(task));
    }

    /// Adds the host that runs the tasks, each a task of its own, in the order they were added.
    fn start(self, sim: &mut turmoil::Sim<'_>) {
        sim.client("clients", async move {
            let running: Vec<_> = self.0.into_iter().map(tokio::task::spawn_local).collect();
            for task in running {
                task.await?;
            }
            Ok(())
        });
    }
}

/// The seed's fault schedule, with a test's extra actions merged in.
fn schedule(cfg: &RunConfig) -> Schedule {
    let spares = cfg
        .membership
        .as_ref()
        .filter(|p| p.faults_on_spares)
        .map_or(0, |p| p.spares);
    let mut schedule = Schedule::draw(cfg.seed, cfg.nodes + spares, cfg.kinds, cfg.workload);
    if !cfg.extra_faults.is_empty() {
        schedule.actions.extend(cfg.extra_faults.iter().cloned());
        // Stable: the drawn actions keep their order among themselves.
        schedule.actions.sort_by_key(|(at, _)| *at);
    }
    schedule
}

/// The simulation: turmoil seeded with the run's seed (see `rng.rs` for what turmoil draws),
/// network latency up to a drawn bound, and time enough for the liveness probe after healing.
fn new_sim<'a>(cfg: &RunConfig, schedule: &Schedule, rng: &mut rng::SimRng) -> turmoil::Sim<'a> {
    let mut builder = turmoil::Builder::new();
    builder
        .rng_seed(cfg.seed)
        .epoch(UNIX_EPOCH + Duration::from_secs(1_800_000_000))
        .tick_duration(TICK)
        .min_message_latency(Duration::from_millis(0))
        .max_message_latency(Duration::from_millis(rng.gen_range(1..20)))
        .simulation_duration(schedule.heal_at + cfg.liveness_bound + Duration::from_secs(30));
    builder.build()
}
