//! Membership scenarios: seeded whole-cluster runs in which an operator changes the members
//! (through the nodes' operator requests) while clients write and the simulator injects faults.
//! Each is checked like any seed (the invariants while running, liveness once the faults stop,
//! linearizability of every key's history) and for what it names: the configuration it ends
//! with, and that the cluster served when the plan said it must.

use std::time::Duration;

use net::node::admin::{MemberList, MemberRole};
use net::node::UnsafeSwitches;
use sim::cluster::{run, MemberOp, MemberPlan, RunConfig, RunReport};
use sim::faults::{FaultAction, FaultKinds};

/// Seed `seed`'s run with 3 founding members, these faults and this plan, over 30 s of
/// workload.
fn scenario(seed: u64, kinds: FaultKinds, spares: u64, steps: Vec<MemberOp>) -> RunConfig {
    let mut cfg = RunConfig::from_seed(seed);
    cfg.nodes = 3;
    cfg.kinds = kinds;
    cfg.workload = Duration::from_secs(30);
    cfg.membership = Some(MemberPlan {
        start: Duration::from_secs(2),
        spares,
        steps,
    });
    cfg
}

/// Runs the scenario; a failure panics with its report.
fn pass(cfg: &RunConfig) -> RunReport {
    let report = run(cfg).unwrap_or_else(|f| panic!("{f}"));
    println!(
        "seed {}: faults {}, {} ops ({} ok, {} unknown, {} failed), {} elections",
        report.seed,
        report.kinds,
        report.ops,
        report.ok,
        report.unknown,
        report.failed,
        report.elections
    );
    for line in &report.faults {
        println!("  {line}");
    }
    let operator = report.operator.clone().expect("the run had a plan");
    for line in &operator.done {
        println!("  operator: {line}");
    }
    assert!(report.ok > 10, "the run did almost nothing: {report:?}");
    report
}

fn final_members(report: &RunReport) -> MemberList {
    let operator = report.operator.as_ref().expect("the run had a plan");
    operator
        .final_members
        .clone()
        .expect("the operator listed the members")
}

fn with_role(list: &MemberList, role: MemberRole) -> Vec<u64> {
    list.members
        .iter()
        .filter(|m| m.role == role)
        .map(|m| m.id)
        .collect()
}

/// Faults that leave every node up and every link connected, however slow or lossy: with two
/// of five voters down, any node lost besides would stop the cluster, and a partition's heal
/// would restart the crashed ones.
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

fn grow_then_lose_two_founders(seed: u64, promote: bool) -> RunConfig {
    let mut steps = vec![MemberOp::AddLearner(4), MemberOp::AddLearner(5)];
    if promote {
        steps.extend([
            MemberOp::AwaitCaughtUp(4),
            MemberOp::AwaitCaughtUp(5),
            MemberOp::Promote(4),
            MemberOp::Promote(5),
        ]);
    }
    steps.extend([
        MemberOp::Fault(FaultAction::Crash(vec![1, 2])),
        MemberOp::ExpectServing(Duration::from_secs(15)),
    ]);
    scenario(seed, degraded_but_connected(), 2, steps)
}

#[test]
fn grow_from_three_to_five_while_clients_write_then_survive_losing_two_founders() {
    let report = pass(&grow_then_lose_two_founders(1, true));
    let members = final_members(&report);
    assert_eq!(with_role(&members, MemberRole::Voter), vec![1, 2, 3, 4, 5]);
    assert!(!members.joint, "{members:?}");
}

/// Teeth for the check above: without the promotions, the two learners do not count, and
/// losing two of the three voters stops the cluster; the run fails on the operator's check.
#[test]
fn learners_alone_do_not_keep_the_cluster_serving() {
    let mut cfg = grow_then_lose_two_founders(1, false);
    cfg.expect_failure = true;
    let failure = run(&cfg).expect_err("two learners kept a cluster of three voters serving");
    assert_eq!(failure.kind.rule(), "liveness", "{failure}");
    assert!(
        failure.to_string().contains("no write and read succeeded"),
        "{failure}"
    );
}

fn transfer_then_partition_the_old_leader(seed: u64) -> RunConfig {
    let kinds = FaultKinds {
        partitions: true,
        latency: true,
        flaky_links: true,
        ..FaultKinds::none()
    };
    let steps = vec![
        MemberOp::TransferLeader(1),
        MemberOp::TransferLeader(2),
        MemberOp::Fault(FaultAction::Partition(vec![1], vec![2, 3])),
        MemberOp::ExpectServing(Duration::from_secs(15)),
        MemberOp::TransferLeader(3),
        MemberOp::Fault(FaultAction::Heal),
        MemberOp::TransferLeader(1),
    ];
    scenario(seed, kinds, 0, steps)
}

#[test]
fn leadership_moves_under_partitions_and_the_history_stays_linearizable() {
    let report = pass(&transfer_then_partition_the_old_leader(2));
    let members = final_members(&report);
    assert_eq!(with_role(&members, MemberRole::Voter), vec![1, 2, 3]);
}

/// Teeth: the same scenario with reads served from the local state machine (no ReadIndex)
/// lets the partitioned old leader answer stale reads, which the checker catches.
#[test]
fn local_reads_on_a_partitioned_old_leader_are_caught() {
    let mut cfg = transfer_then_partition_the_old_leader(2);
    cfg.switches = UnsafeSwitches {
        local_reads: true,
        ..UnsafeSwitches::default()
    };
    cfg.expect_failure = true;
    let failure = run(&cfg).expect_err("stale local reads went unnoticed");
    assert_eq!(failure.kind.rule(), "linearizability", "{failure}");
}

fn shrink_removing_the_leader(seed: u64) -> RunConfig {
    let kinds = FaultKinds {
        partitions: true,
        crashes: true,
        latency: true,
        clock_skew: true,
        ..FaultKinds::none()
    };
    let steps = vec![
        MemberOp::TransferLeader(5),
        MemberOp::Remove(5),
        MemberOp::Remove(4),
        MemberOp::ExpectServing(Duration::from_secs(15)),
    ];
    let mut cfg = scenario(seed, kinds, 0, steps);
    cfg.nodes = 5;
    cfg
}

#[test]
fn shrink_from_five_to_three_removing_the_leader() {
    let report = pass(&shrink_removing_the_leader(3));
    let members = final_members(&report);
    assert_eq!(with_role(&members, MemberRole::Voter), vec![1, 2, 3]);
    assert!(!members.joint, "{members:?}");
}
