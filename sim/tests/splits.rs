//! Split scenarios: seeded whole-cluster runs in which an operator splits the keyspace into
//! ranges (`RAFT.SPLIT`) while the workload goes on, checked like any seed (invariants,
//! liveness, per-key linearizability across the splits) and for having done what they name:
//! every split answered, every node hosting the same ranges at the end.

use std::time::Duration;

use net::node::admin::MemberRole;
use sim::cluster::{run, snapshots_off, MemberOp, MemberPlan, RunConfig, RunReport, SplitPlan};
use sim::faults::{FaultAction, FaultKinds};

/// Splits at every point the random plans draw from, a few hundred milliseconds apart: the
/// hot keys, the cold ones and the volatile ones end up in different ranges.
fn every_split() -> SplitPlan {
    let keys = ["k1", "w", "k3", "e2", "t", "w7", "k", "w3", "w12"];
    SplitPlan {
        start: Duration::from_millis(500),
        splits: keys
            .iter()
            .map(|k| (Duration::from_millis(300), k.as_bytes().to_vec()))
            .collect(),
    }
}

fn scenario(seed: u64, kinds: FaultKinds) -> RunConfig {
    let mut cfg = RunConfig::from_seed(seed);
    cfg.kinds = kinds;
    cfg.snapshots = snapshots_off();
    cfg.membership = None;
    cfg.splits = Some(every_split());
    cfg
}

fn pass(cfg: &RunConfig) -> RunReport {
    let report = run(cfg).unwrap_or_else(|f| panic!("{f}"));
    let splits = report.splits.clone().unwrap_or_default();
    println!(
        "seed {}: {} nodes, faults {}: {} ops ({} ok), {} splits, {} ranges",
        report.seed,
        report.nodes,
        report.kinds,
        report.ops,
        report.ok,
        splits.done.len(),
        splits.ranges
    );
    for line in report.faults.iter().chain(&splits.done) {
        println!("  {line}");
    }
    assert!(report.ok > 10, "the run did almost nothing: {report:?}");
    let planned = cfg.splits.as_ref().map_or(0, |p| p.splits.len());
    assert_eq!(splits.done.len(), planned, "{splits:?}");
    assert_eq!(splits.ranges, planned + 1, "{splits:?}");
    report
}

#[test]
fn splits_under_a_reliable_network_keep_every_key_linearizable() {
    pass(&scenario(11, FaultKinds::none()));
}

#[test]
fn splits_under_every_fault_keep_every_key_linearizable() {
    for seed in [21, 22] {
        pass(&scenario(seed, FaultKinds::all()));
    }
}

/// Teeth: with ranges applying commands for keys they no longer own (what a stale routing table
/// sends to the parent after a split), the replicas apply two logs' writes to one key in
/// different orders, and the run is caught.
#[test]
fn teeth_a_range_applying_keys_it_no_longer_owns_is_caught() {
    for seed in 0..40 {
        let mut cfg = scenario(seed, FaultKinds::none());
        cfg.expect_failure = true;
        cfg.switches.ignore_range_ownership = true;
        if let Err(failure) = run(&cfg) {
            println!("caught at seed {seed}: {}", failure.kind.rule());
            return;
        }
    }
    panic!("a range applying keys it no longer owns was not caught in 40 seeds");
}

/// Teeth: one replica applying a split ahead of the entries its apply batch holds before it
/// (the split's log order broken on that replica alone) refuses writes the others applied, and
/// the replicas' results disagree.
#[test]
fn teeth_a_split_applied_out_of_log_order_on_one_replica_is_caught() {
    for seed in 0..40 {
        let mut cfg = scenario(seed, FaultKinds::none());
        cfg.expect_failure = true;
        cfg.switches.split_out_of_order_on = Some(1);
        if let Err(failure) = run(&cfg) {
            println!("caught at seed {seed}: {}", failure.kind.rule());
            return;
        }
    }
    panic!("a split applied out of log order on one replica was not caught in 40 seeds");
}

/// Splits while the cluster grows from three voters to five, then two founders crash: the two
/// new members serve every range only if every range's configuration followed the first
/// range's (each range adds them, promotes them once caught up with its own log), and the
/// operator, as `kvstore member` does, waits for every range after each change.
#[test]
fn splits_while_the_cluster_grows_to_five_then_survives_losing_two_founders() {
    let mut cfg = scenario(31, degraded_but_connected());
    cfg.nodes = 3;
    cfg.workload = Duration::from_secs(20);
    cfg.membership = Some(MemberPlan {
        start: Duration::from_secs(1),
        spares: 2,
        steps: vec![
            MemberOp::AddLearner(4),
            MemberOp::AddLearner(5),
            MemberOp::AwaitCaughtUp(4),
            MemberOp::AwaitCaughtUp(5),
            MemberOp::Promote(4),
            MemberOp::Promote(5),
            MemberOp::Fault(FaultAction::Crash(vec![1, 2])),
            MemberOp::ExpectServing(Duration::from_secs(15)),
        ],
        faults_on_spares: false,
    });
    let report = pass(&cfg);
    let operator = report.operator.expect("the run had a plan");
    for line in &operator.done {
        println!("  operator: {line}");
    }
    let members = operator
        .final_members
        .expect("the operator listed the members");
    assert!(
        members.ranges_behind.is_empty(),
        "ranges still behind at the end: {members:?}"
    );
    let voters: Vec<u64> = members
        .members
        .iter()
        .filter(|m| m.role == MemberRole::Voter)
        .map(|m| m.id)
        .collect();
    assert_eq!(voters, vec![1, 2, 3, 4, 5]);
}

/// Faults that leave every node up and every link connected: with two of five voters down, any
/// node lost besides would stop the cluster.
fn degraded_but_connected() -> FaultKinds {
    FaultKinds {
        pauses: true,
        clock_skew: true,
        latency: true,
        flaky_links: true,
        slow_disk: true,
        ..FaultKinds::none()
    }
}
