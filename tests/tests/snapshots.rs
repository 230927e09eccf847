//! Snapshots between real `kvstore` processes: a node that fell behind the leader's log start
//! catches up by snapshot, and a node killed (kill -9) while it receives or installs one still
//! converges. A small `--snapshot-threshold` makes the nodes snapshot and compact often.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use e2e::{check_all, eventually, write_all, TestCluster};

const BOUND: Duration = Duration::from_secs(90);

fn cluster_with_snapshots(threshold: u64, tail: u64) -> TestCluster {
    let mut cluster = TestCluster::configure(3);
    cluster.extra_args = vec![
        "--snapshot-threshold".into(),
        threshold.to_string(),
        "--snapshot-tail".into(),
        tail.to_string(),
    ];
    for id in 1..=3 {
        cluster.start_node(id);
    }
    cluster
}

/// Waits until node `id` has applied everything the leader had committed when asked.
async fn wait_until_caught_up(cluster: &TestCluster, leader: u64, id: u64) {
    let target = cluster
        .info_number(leader, "commit_index")
        .await
        .expect("leader info");
    eventually(BOUND, "the lagging node catching up", || async move {
        cluster
            .info_number(id, "applied_index")
            .await
            .is_some_and(|a| a >= target)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_behind_the_log_start_catches_up_by_snapshot_and_serves_every_key() {
    let mut cluster = cluster_with_snapshots(1000, 200);
    let leader = cluster.wait_for_leader(BOUND).await;
    let lagging = if leader == 1 { 2 } else { 1 };
    let mut acked = BTreeMap::new();
    write_all(cluster.servers(), "early-", 0..100, &mut acked).await;

    cluster.kill(lagging);
    let up = cluster.servers_except(lagging);
    write_all(up, "k", 0..20_000, &mut acked).await;
    let leader = cluster.wait_for_leader(BOUND).await;
    let log_start = cluster
        .info_number(leader, "log_start_index")
        .await
        .expect("leader info");
    let taken = cluster
        .info_number(leader, "snapshot_count")
        .await
        .expect("leader info");
    assert!(
        log_start > 1000 && taken >= 10,
        "the leader should have snapshotted and compacted: log start {log_start}, {taken} taken"
    );

    cluster.start_node(lagging);
    wait_until_caught_up(&cluster, leader, lagging).await;
    let info = cluster.info(lagging).await.expect("lagging node info");
    assert!(
        info["snapshots_installed"].parse::<u64>().unwrap_or(0) >= 1,
        "the node should have caught up by snapshot, INFO says {info:?}\n{}",
        cluster.logs()
    );
    assert!(info["log_start_index"].parse::<u64>().unwrap_or(0) >= log_start);
    // Every key, read through the node that installed the snapshot.
    check_all(|| cluster.client_of(lagging), &acked).await;

    // Restarted, it loads the snapshot and the log tail and serves the same data.
    cluster.kill(lagging);
    cluster.start_node(lagging);
    wait_until_caught_up(&cluster, leader, lagging).await;
    check_all(|| cluster.client_of(lagging), &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_less_than_the_tail_behind_catches_up_by_appends() {
    // Snapshots every 100 entries, but 1,000 entries kept behind the applied index.
    let mut cluster = cluster_with_snapshots(100, 1000);
    let leader = cluster.wait_for_leader(BOUND).await;
    let lagging = if leader == 1 { 2 } else { 1 };
    let mut acked = BTreeMap::new();
    write_all(cluster.servers(), "before-", 0..1500, &mut acked).await;
    cluster.kill(lagging);
    let up = cluster.servers_except(lagging);
    write_all(up, "while-down-", 0..600, &mut acked).await;
    let leader = cluster.wait_for_leader(BOUND).await;
    let log_start = cluster
        .info_number(leader, "log_start_index")
        .await
        .expect("leader info");
    assert!(log_start > 0, "the leader should have compacted its log");

    cluster.start_node(lagging);
    wait_until_caught_up(&cluster, leader, lagging).await;
    assert_eq!(
        cluster.info_number(lagging, "snapshots_installed").await,
        Some(0),
        "600 entries behind, within the tail of 1,000: appends, not a snapshot\n{}",
        cluster.logs()
    );
    check_all(|| cluster.client_of(lagging), &acked).await;
}

/// Which step of a snapshot install a kill should land in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// The follower writes the incoming data beside its state machine (`kv_data.incoming`).
    Receiving,
    /// Past the install's commit point (`KV_INSTALL` exists): directories are being swapped
    /// and the log emptied.
    Installing,
}

impl Phase {
    fn marker(self) -> &'static str {
        match self {
            Phase::Receiving => kv::snapshot::INCOMING_DIR,
            Phase::Installing => kv::snapshot::INSTALL_MARKER,
        }
    }
}

/// Polls `data_dir` for the phase's marker appearing (after it was seen absent: a leftover
/// of an earlier kill does not count). True if it appeared within the bound.
async fn wait_for_phase(data_dir: &Path, phase: Phase, bound: Duration) -> bool {
    let path = data_dir.join(phase.marker());
    let start = Instant::now();
    let mut seen_absent = false;
    while start.elapsed() < bound {
        match (path.exists(), seen_absent) {
            (true, true) => return true,
            (false, _) => seen_absent = true,
            (true, false) => {}
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_while_receiving_or_installing_a_snapshot_still_converges() {
    let mut cluster = cluster_with_snapshots(500, 50);
    let leader = cluster.wait_for_leader(BOUND).await;
    let lagging = if leader == 1 { 2 } else { 1 };
    let up = cluster.servers_except(lagging);
    let data_dir = cluster.nodes[&lagging].data_dir.clone();
    let mut acked = BTreeMap::new();
    let mut hits = Vec::new();
    for (round, phase) in [
        Phase::Receiving,
        Phase::Installing,
        Phase::Installing,
        Phase::Receiving,
        Phase::Installing,
        Phase::Installing,
    ]
    .into_iter()
    .enumerate()
    {
        cluster.kill(lagging);
        write_all(up.clone(), &format!("r{round}-"), 0..4000, &mut acked).await;
        cluster.start_node(lagging);
        if wait_for_phase(&data_dir, phase, Duration::from_secs(30)).await {
            cluster.kill(lagging);
            hits.push(phase);
        }
    }
    assert!(
        hits.contains(&Phase::Receiving) && hits.contains(&Phase::Installing),
        "a kill should land in each phase at least once; landed in {hits:?}"
    );
    eprintln!("kills landed in: {hits:?}");

    cluster.kill(lagging);
    cluster.start_node(lagging);
    let leader = cluster.wait_for_leader(BOUND).await;
    wait_until_caught_up(&cluster, leader, lagging).await;
    assert!(cluster.is_running(lagging), "{}", cluster.logs());
    assert!(
        !data_dir.join(kv::snapshot::INSTALL_MARKER).exists(),
        "an interrupted install must be finished on restart"
    );
    check_all(|| cluster.client_of(lagging), &acked).await;
    let log = std::fs::read_to_string(&cluster.nodes[&lagging].log).unwrap_or_default();
    eprintln!(
        "restarts that finished an interrupted install: {}",
        log.matches("finishing an interrupted snapshot install")
            .count()
    );
}

/// Bytes of the files in `dir` (a file renamed `*.deleting` is being unlinked in the background).
fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| !e.file_name().to_string_lossy().ends_with(".deleting"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_raft_log_gives_its_disk_back_after_compaction() {
    const KEYS: usize = 6000;
    const VALUE: usize = 4096;
    let cluster = cluster_with_snapshots(200, 20);
    cluster.wait_for_leader(BOUND).await;
    let writers: Vec<_> = (0..8usize)
        .map(|c| {
            let mut client = net::client::KvClient::new(cluster.servers()).starting_at(c);
            tokio::spawn(async move {
                let value = vec![b'v'; VALUE];
                for k in (c..KEYS).step_by(8) {
                    client
                        .set(format!("big{k}").as_bytes(), &value)
                        .await
                        .unwrap_or_else(|e| panic!("write big{k}: {e}"));
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer task");
    }
    let written = (KEYS * VALUE) as u64;
    // The log keeps about 220 entries (0.9 MB) and some tombstones; without giving the space
    // back it held 6.9 MB of the 24 MB written (measured with snapshots every 500 entries).
    let bound = written / 8;
    for (id, node) in &cluster.nodes {
        let logs = node.data_dir.join(kv::raft_storage::RAFT_LOGS_DIR);
        eventually(BOUND, "raft_logs shrinking after compaction", || {
            let logs = logs.clone();
            async move { dir_size(&logs) <= bound }
        })
        .await;
        eprintln!(
            "node {id}: raft_logs {} bytes after writing {written}",
            dir_size(&logs)
        );
    }
}
