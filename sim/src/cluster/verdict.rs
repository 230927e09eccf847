//! The verdict on a run: what it did ([`RunReport`]) or why it failed ([`Failure`]), with the
//! trace file a failure leaves.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use net::node::SnapshotPolicy;
use raft_core::{NodeId, SnapshotMeta, Term};

use super::config::{describe_read_mode, describe_snapshots, RunConfig};
use super::membership::OperatorReport;
use super::triggers::Triggers;
use crate::faults::FaultKinds;
use crate::history::{History, Outcome};
use crate::linearizability::{self, CheckError};
use crate::observe::{CrashMidJoint, InvariantViolation, Observer};

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
    /// What the operator of a membership plan did (none without a plan).
    pub operator: Option<OperatorReport>,
    /// What the splitter of a split plan did (none without a plan).
    pub splits: Option<super::splits::SplitReport>,
    /// Every election won: (simulated ns, node, term), in order.
    pub leaders: Vec<(u64, NodeId, Term)>,
    /// Crashes (and lost disks) while the configuration was joint.
    pub crashes_mid_joint: Vec<CrashMidJoint>,
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
    pub trace_file: Option<PathBuf>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        writeln!(
            f,
            "simulation failed: seed {} ({} nodes, faults: {}, snapshots: {}, reads: {}, {} clients ({} staying on their node) on {} keys)",
            c.seed,
            c.nodes,
            c.kinds,
            describe_snapshots(&c.snapshots),
            describe_read_mode(c.read_mode),
            c.clients,
            c.sticky_clients.len(),
            c.keys
        )?;
        if let Some(plan) = &c.splits {
            let keys: Vec<String> = plan
                .splits
                .iter()
                .map(|(_, k)| format!("{:?}", String::from_utf8_lossy(k)))
                .collect();
            writeln!(f, "splits planned at {}", keys.join(", "))?;
        }
        if let Some(plan) = &c.membership {
            writeln!(f, "membership plan: {:?}", plan.steps)?;
        }
        match &self.kind {
            FailureKind::Invariant(v) => writeln!(f, "invariant broken: {}: {}", v.rule, v.detail)?,
            FailureKind::Linearizability(text) => writeln!(f, "not linearizable:\n{text}")?,
            FailureKind::Liveness(text) => writeln!(f, "no progress after healing: {text}")?,
            FailureKind::Simulation(text) => writeln!(f, "the simulation failed: {text}")?,
        }
        if !c.expect_failure {
            writeln!(
                f,
                "replay: SIM_SEED={} cargo test --release -p sim --test random_runs -- --nocapture",
                c.seed
            )?;
        }
        if let Some(p) = &self.trace_file {
            writeln!(f, "trace: {}", p.display())?;
        }
        Ok(())
    }
}

impl Failure {
    /// The failure of the run `cfg`, its trace written to a file.
    pub(super) fn new(cfg: &RunConfig, kind: FailureKind, trace: &[String]) -> Box<Failure> {
        let trace_file = write_trace(cfg, trace, &kind);
        Box::new(Failure {
            config: cfg.clone(),
            kind,
            trace_file,
        })
    }
}

/// What a run's end tells: the liveness probe must have succeeded and every key's history must
/// be linearizable. The history joins the trace (after the fault actions) for a failure's file.
/// The operator's plan must have been carried out (judged with liveness: it failed to make
/// progress, or the cluster did not serve when the plan said it must).
pub(super) fn operator_done(operator: Option<&OperatorReport>) -> Result<(), String> {
    match operator {
        Some(OperatorReport {
            error: Some(e),
            done,
            ..
        }) => Err(format!(
            "the membership plan was not carried out: {e}\ndone before:\n{}",
            done.join("\n")
        )),
        _ => Ok(()),
    }
}

pub(super) fn judge(
    cfg: &RunConfig,
    simulated: Duration,
    liveness: Result<(), String>,
    history: History,
    observer: &Observer,
    triggers: &Triggers,
    trace: &mut Vec<String>,
) -> Result<RunReport, FailureKind> {
    liveness.map_err(|e| FailureKind::Liveness(format!("{e}\n{}", observer.summary())))?;
    let faults = trace.clone();
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
        simulated,
        history,
        faults,
        snapshot_policy: cfg.snapshots,
        snapshots_taken: observer.snapshots_taken(),
        snapshots_installed: observer.snapshots_installed(),
        install_crashes: triggers.install_crashes(),
        first_snapshot_crashes: triggers.first_snapshot_crashes(),
        operator: None,
        splits: None,
        leaders: observer.leaders(),
        crashes_mid_joint: observer.crashes_mid_joint(),
    })
}

/// Writes the run's fault actions and client history under `target/sim-traces/`, or under
/// `target/sim-traces/expected-by-teeth-tests/` for a run that was meant to fail (a teeth
/// test's: a reader of the first directory should find real failures only).
fn write_trace(cfg: &RunConfig, trace: &[String], kind: &FailureKind) -> Option<PathBuf> {
    let mut dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/sim-traces");
    if cfg.expect_failure {
        dir.push("expected-by-teeth-tests");
    }
    std::fs::create_dir_all(&dir).ok()?;
    let path = dir.join(format!("seed-{}.txt", cfg.seed));
    let mut text = format!("{kind:?}\n\n");
    for line in trace {
        text.push_str(line);
        text.push('\n');
    }
    std::fs::write(&path, text).ok()?;
    Some(path)
}
