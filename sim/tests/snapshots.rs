//! Snapshot scenarios: seeded whole-cluster runs with a fixed fault selection and snapshot
//! policy, each checked like any seed (invariants, liveness, linearizability) and for having
//! done what it names: installs happened, a power cut landed inside an install, every node
//! restarted from a compacted log.
//!
//! The seeds were picked (by running the scenario's configuration over a range of seeds) so
//! that the run exercises what the test names; the test asserts it, so a change that makes a
//! seed stop doing so fails here rather than passing vacuously: pick another seed then.

use std::time::Duration;

use net::node::SnapshotPolicy;
use sim::cluster::{describe_snapshots, run, RunConfig, RunReport};
use sim::faults::{FaultAction, FaultKinds};

fn policy(threshold: u64, tail: u64, chunk_bytes: usize) -> SnapshotPolicy {
    SnapshotPolicy {
        threshold,
        tail,
        chunk_bytes,
        // Images span several apply batches.
        step_keys: 2,
    }
}

/// The seed's configuration with these faults and this snapshot policy.
fn scenario(seed: u64, kinds: FaultKinds, snapshots: SnapshotPolicy) -> RunConfig {
    let mut cfg = RunConfig::from_seed(seed);
    cfg.kinds = kinds;
    cfg.snapshots = snapshots;
    // As these scenarios were written: no operator changing the members, and no splits
    // (a node hosting several ranges takes no snapshot images yet).
    cfg.membership = None;
    cfg.splits = None;
    cfg
}

/// Runs the scenario; a failure panics with its report.
fn pass(cfg: &RunConfig) -> RunReport {
    let report = run(cfg).unwrap_or_else(|f| panic!("{f}"));
    println!(
        "seed {}: {} nodes, faults {}, snapshots {}: {} ops ({} ok), {} snapshots taken, {} installed, install power cuts {:?}, {} after a first snapshot",
        report.seed,
        report.nodes,
        report.kinds,
        describe_snapshots(&report.snapshot_policy),
        report.ops,
        report.ok,
        report.snapshots_taken.len(),
        report.snapshots_installed.len(),
        report.install_crashes,
        report.first_snapshot_crashes,
    );
    for line in &report.faults {
        println!("  {line}");
    }
    assert!(report.ok > 10, "the run did almost nothing: {report:?}");
    report
}

fn reliable_network(seed: u64) -> RunConfig {
    // No drawn faults: one node is down for a while, the others compact past it, and it
    // catches up with an install over a network that loses nothing.
    let mut cfg = scenario(seed, FaultKinds::none(), policy(30, 5, 256));
    cfg.extra_faults = vec![
        (Duration::from_secs(2), FaultAction::Crash(vec![2])),
        (Duration::from_secs(6), FaultAction::Restart(vec![2])),
    ];
    cfg
}

fn unreliable_network(seed: u64) -> RunConfig {
    let kinds = FaultKinds {
        partitions: true,
        latency: true,
        flaky_links: true,
        ..FaultKinds::none()
    };
    scenario(seed, kinds, policy(40, 0, 128))
}

fn with_crashes(seed: u64) -> RunConfig {
    let kinds = FaultKinds {
        crashes: true,
        majority_crashes: true,
        ..FaultKinds::none()
    };
    scenario(seed, kinds, policy(50, 10, 512))
}

/// Crashes every node at `at` and restarts them all a second later.
fn all_crash(seed: u64, at: Duration) -> RunConfig {
    let mut cfg = scenario(seed, FaultKinds::none(), policy(25, 0, 1024));
    let all: Vec<u64> = (1..=cfg.nodes).collect();
    cfg.extra_faults = vec![
        (at, FaultAction::Crash(all.clone())),
        (at + Duration::from_secs(1), FaultAction::Restart(all)),
    ];
    cfg
}

fn first_snapshot_restart(seed: u64) -> RunConfig {
    // A tail as long as the threshold: the image is not compacted to yet when the node
    // restarts, so the restart finds an image newer than its log start.
    let mut cfg = scenario(seed, FaultKinds::none(), policy(60, 60, 300));
    cfg.crash_after_first_snapshot = true;
    cfg
}

fn install_crashes(seed: u64) -> RunConfig {
    let kinds = FaultKinds {
        partitions: true,
        crashes: true,
        install_crashes: true,
        ..FaultKinds::none()
    };
    scenario(seed, kinds, policy(20, 0, 200))
}

#[test]
fn a_follower_catches_up_by_install_over_a_reliable_network() {
    let report = pass(&reliable_network(4));
    assert!(
        !report.snapshots_installed.is_empty(),
        "no snapshot was installed"
    );
}

#[test]
fn installs_survive_lossy_links_latency_spikes_and_partitions() {
    let report = pass(&unreliable_network(1));
    assert!(
        report.snapshots_installed.len() >= 2,
        "fewer than two installs: {:?}",
        report.snapshots_installed
    );
}

#[test]
fn installs_survive_crashes_of_a_node_and_of_a_majority() {
    let report = pass(&with_crashes(1));
    assert!(
        !report.snapshots_installed.is_empty(),
        "no snapshot was installed"
    );
    assert!(report.faults.iter().any(|f| f.contains("Crash")));
}

#[test]
fn every_node_crashes_and_restarts_from_a_compacted_log() {
    let at = Duration::from_secs(6);
    let cfg = all_crash(0, at);
    let report = pass(&cfg);
    // Tail 0: each node compacts its log to each image as soon as it takes it.
    for node in 1..=cfg.nodes {
        assert!(
            report
                .snapshots_taken
                .iter()
                .any(|&(n, t, _)| n == node && t < at.as_nanos() as u64),
            "node {node} took no snapshot before the crash"
        );
    }
}

#[test]
fn a_node_restarts_right_after_its_first_snapshot() {
    let cfg = first_snapshot_restart(0);
    let report = pass(&cfg);
    assert_eq!(
        report.first_snapshot_crashes, cfg.nodes,
        "every node should have lost its power right after its first snapshot"
    );
}

#[test]
fn regression_power_cut_inside_a_snapshot_install() {
    // Cuts land between the state machine's half of the install (its marker written) and the
    // end, so the restart finishes the install from the marker.
    let report = pass(&install_crashes(0));
    assert!(
        report.install_crashes.inside >= 1,
        "no power cut landed inside an install: {:?}",
        report.install_crashes
    );
}

#[test]
fn regression_a_raft_log_record_read_with_an_old_value_after_majority_crashes() {
    // Seed 70200, as drawn with the simulator's former generator (`SmallRng`): after a majority
    // crash, rusty-leveldb's `DB::get` read node 3's last-index record as 20 while an iterator
    // read 161, and the node refused to start ("the state machine has applied up to 109 but the
    // log ends at 20"). kv's `Ldb::get` reads through an iterator since (`ldb.rs`: the table's
    // index test skips a block that ends with the version looked up); `ldb.rs` also reproduces
    // the bug deterministically on a bare handle. With ChaCha8 (`sim::rng`) the seed draws
    // another run, kept as one more seed with snapshots on.
    let report = pass(&RunConfig::from_seed(70200));
    assert!(!report.snapshots_taken.is_empty());
}
