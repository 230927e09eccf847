//! The fault loop: steps the simulation, and between steps makes the scheduled fault actions,
//! turns the power cuts set off by snapshot events into crashes and restarts, and stops at the
//! first invariant the observer saw broken.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use net::node::PauseSwitch;
use net::storage::SimulatedDisk;

use super::membership::SharedOperator;
use super::node_name;
use super::triggers::Triggers;
use super::verdict::FailureKind;
use crate::faults::{FaultAction, Schedule};
use crate::observe::Observer;

/// What the fault schedule holds of each node, outside the node's (crashable) host.
#[derive(Clone, Default)]
pub(super) struct NodeControls {
    pub(super) disk: SimulatedDisk,
    pub(super) pause: PauseSwitch,
    /// How many times the node's disk was lost: each reinstall is a new incarnation.
    pub(super) disks_lost: Arc<AtomicU64>,
}

/// Runs the simulation to its end (every client finished), making `schedule`'s actions as their
/// times come, and writing each action to `trace`.
pub(super) fn run(
    sim: &mut turmoil::Sim<'_>,
    schedule: &Schedule,
    nodes: &BTreeMap<u64, NodeControls>,
    triggers: &Triggers,
    observer: &Observer,
    operator: Option<&SharedOperator>,
    trace: &mut Vec<String>,
) -> Result<(), FailureKind> {
    let mut actions = schedule.actions.iter().peekable();
    let names: Vec<String> = nodes.keys().copied().map(node_name).collect();
    let mut crashed = Crashed::default();
    loop {
        let finished = step(sim, observer)?;
        let elapsed = sim.elapsed();
        crashed.cut_power(sim, triggers, observer, elapsed, trace);
        crashed.restart_due(sim, elapsed, trace);
        if elapsed >= schedule.heal_at {
            triggers.disarm();
        }
        while let Some((at, action)) = actions.next_if(|(at, _)| *at <= elapsed) {
            let action = resolve(action, nodes, observer);
            trace.push(format!("{:>10.3}s {action:?}", at.as_secs_f64()));
            apply(sim, &action, &names, nodes, &mut crashed, observer);
        }
        // The operator's own fault actions, made as it asks for them.
        let asked = operator.map(|o| std::mem::take(&mut o.borrow_mut().faults));
        for action in asked.unwrap_or_default() {
            let action = resolve(&action, nodes, observer);
            let at = elapsed.as_secs_f64();
            trace.push(format!("{at:>10.3}s {action:?} (by the operator)"));
            apply(sim, &action, &names, nodes, &mut crashed, observer);
        }
        if let Some(operator) = operator {
            crash_leader_while_joint(sim, operator, observer, nodes, &mut crashed, trace);
        }
        if let Some(v) = observer.violations().into_iter().next() {
            return Err(FailureKind::Invariant(v));
        }
        if finished {
            return Ok(());
        }
    }
}

/// Crashes the leader if the operator armed that for a joint configuration and the
/// configuration is joint now; schedules its restart.
fn crash_leader_while_joint(
    sim: &mut turmoil::Sim<'_>,
    operator: &SharedOperator,
    observer: &Observer,
    nodes: &BTreeMap<u64, NodeControls>,
    down: &mut Crashed,
    trace: &mut Vec<String>,
) {
    let Some(downtime) = operator.borrow().crash_leader_while_joint else {
        return;
    };
    let Some(leader) = observer.leader_while_joint() else {
        return;
    };
    // A leader that crashed keeps its last role in the observer's eyes: wait for the next.
    if down.hosts.contains(&leader) || down.lost.contains(&leader) {
        return;
    }
    operator.borrow_mut().crash_leader_while_joint = None;
    let elapsed = sim.elapsed();
    let action = FaultAction::Crash(vec![leader]);
    let at = elapsed.as_secs_f64();
    trace.push(format!("{at:>10.3}s {action:?} (the leader, while joint)"));
    let names: Vec<String> = nodes.keys().copied().map(node_name).collect();
    apply(sim, &action, &names, nodes, down, observer);
    down.restarts.push((elapsed + downtime, leader));
}

/// Node `id` loses its disk: a power cut, the host crashed (if it was up), every file and
/// pinned peer gone; it stays down until reinstalled.
fn lose_disk(
    sim: &mut turmoil::Sim<'_>,
    id: u64,
    node: &NodeControls,
    down: &mut Crashed,
    observer: &Observer,
) {
    if down.lost.contains(&id) {
        return;
    }
    node.disk.env.cut_power();
    if !down.hosts.contains(&id) {
        observer.crashed(id, sim.elapsed().as_nanos() as u64);
        sim.crash(node_name(id));
    }
    down.hosts.retain(|c| *c != id);
    // The pins are kept with the data directory: they go with it.
    node.disk.env.wipe();
    *node
        .disk
        .peer_pins
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = kv::PeerPins::in_memory();
    node.disks_lost.fetch_add(1, Ordering::Relaxed);
    down.lost.push(id);
}

/// One step of the simulation: whether every client has finished.
fn step(sim: &mut turmoil::Sim<'_>, observer: &Observer) -> Result<bool, FailureKind> {
    sim.step().map_err(|e| {
        let text = e.to_string();
        if text.contains("Ran for duration") {
            FailureKind::Liveness(format!(
                "clients still running at the end of the simulation ({text})\n{}",
                observer.summary()
            ))
        } else {
            FailureKind::Simulation(text)
        }
    })
}

/// The hosts that are down, and when those crashed by snapshot-driven faults come back.
#[derive(Default)]
struct Crashed {
    hosts: Vec<u64>,
    /// Hosts whose disk was lost: down until reinstalled, whatever heals or restarts.
    lost: Vec<u64>,
    /// Restarts due for the hosts crashed by snapshot-driven faults: (when, node).
    restarts: Vec<(Duration, u64)>,
}

impl Crashed {
    /// Crashes the hosts whose power a snapshot event cut during the last step.
    fn cut_power(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        triggers: &Triggers,
        observer: &Observer,
        elapsed: Duration,
        trace: &mut Vec<String>,
    ) {
        for cut in triggers.take_cuts() {
            if self.hosts.contains(&cut.node) || self.lost.contains(&cut.node) {
                continue;
            }
            trace.push(format!(
                "{:>10.3}s {} on n{}",
                elapsed.as_secs_f64(),
                cut.what,
                cut.node
            ));
            observer.crashed(cut.node, elapsed.as_nanos() as u64);
            sim.crash(node_name(cut.node));
            self.hosts.push(cut.node);
            self.restarts.push((elapsed + cut.downtime, cut.node));
        }
    }

    /// Restarts the hosts whose downtime is over.
    fn restart_due(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        elapsed: Duration,
        trace: &mut Vec<String>,
    ) {
        while let Some(k) = self.restarts.iter().position(|(at, _)| *at <= elapsed) {
            let (_, id) = self.restarts.remove(k);
            // Unless a scheduled restart or a heal was first.
            if let Some(pos) = self.hosts.iter().position(|c| *c == id) {
                self.hosts.remove(pos);
                trace.push(format!("{:>10.3}s Restart([{id}])", elapsed.as_secs_f64()));
                sim.bounce(node_name(id));
            }
        }
    }
}

/// The action to make now: one that names no node ([`FaultAction::IsolateLeader`]) is made
/// concrete here, so that the trace shows the nodes it struck.
fn resolve(
    action: &FaultAction,
    nodes: &BTreeMap<u64, NodeControls>,
    observer: &Observer,
) -> FaultAction {
    match (action, observer.leader()) {
        (FaultAction::IsolateLeader, Some(leader)) => {
            let others = nodes.keys().copied().filter(|id| *id != leader).collect();
            FaultAction::Partition(vec![leader], others)
        }
        _ => action.clone(),
    }
}

/// Makes one fault action on the cluster.
fn apply(
    sim: &mut turmoil::Sim<'_>,
    action: &FaultAction,
    names: &[String],
    nodes: &BTreeMap<u64, NodeControls>,
    down: &mut Crashed,
    observer: &Observer,
) {
    let name = |id: &u64| node_name(*id);
    let crashed = &mut down.hosts;
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
        // Made a partition by `resolve` when some node leads; with none there is no one to cut.
        FaultAction::IsolateLeader => {}
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
                if crashed.contains(id) || down.lost.contains(id) {
                    continue;
                }
                // Cut the power first: the host's destructors (LevelDB flushes on drop) must
                // not reach the disk.
                nodes[id].disk.env.cut_power();
                observer.crashed(*id, sim.elapsed().as_nanos() as u64);
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
        FaultAction::LoseDisk(ids) => {
            for id in ids {
                lose_disk(sim, *id, &nodes[id], down, observer);
            }
        }
        FaultAction::Reinstall(ids) => {
            for id in ids {
                if let Some(pos) = down.lost.iter().position(|c| c == id) {
                    down.lost.remove(pos);
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
        FaultAction::Calm => calm(sim, names, nodes),
    }
}

/// Every link back to normal latency and no loss, every disk back to full speed.
fn calm(sim: &mut turmoil::Sim<'_>, names: &[String], nodes: &BTreeMap<u64, NodeControls>) {
    for node in nodes.values() {
        node.disk.write_latency_micros.store(0, Ordering::Relaxed);
    }
    for (i, x) in names.iter().enumerate() {
        for y in &names[i + 1..] {
            sim.set_link_fail_rate(x.as_str(), y.as_str(), 0.0);
            sim.set_link_max_message_latency(x.as_str(), y.as_str(), Duration::from_millis(20));
        }
    }
}
