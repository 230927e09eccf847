//! What an operator reads: every election logs its reason on the node that campaigns, and
//! `kvstore bench` draws no progress bar (no escape codes) when its stderr is not a terminal.

use std::time::Duration;

use e2e::{eventually, TestCluster};

const BOUND: Duration = Duration::from_secs(60);

fn log_of(cluster: &TestCluster, id: u64) -> String {
    std::fs::read_to_string(&cluster.nodes[&id].log).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn elections_log_their_reason() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(BOUND).await;
    let target = (1..=3).find(|&i| i != leader).expect("another node");

    let (ok, out, err) = cluster.kvstore(&["transfer-leader", &target.to_string()]);
    assert!(ok, "transfer-leader failed:\n{out}\n{err}");
    let expected = format!("starting an election: leadership transfer from {leader}");
    let c = &cluster;
    eventually(BOUND, "the target logging why it campaigned", || {
        let expected = expected.clone();
        async move { log_of(c, target).contains(&expected) }
    })
    .await;
    assert!(
        log_of(&cluster, target).contains("role change: election won"),
        "{}",
        cluster.logs()
    );

    // The new leader dies: a survivor campaigns, naming the leader it stopped hearing from.
    cluster.kill(target);
    let expected = format!("starting an election: no heartbeat from leader {target} for ");
    let c = &cluster;
    eventually(BOUND, "a survivor logging the silent leader", || {
        let expected = expected.clone();
        async move {
            (1..=3)
                .filter(|&i| i != target)
                .any(|i| log_of(c, i).contains(&expected))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bench_without_a_terminal_prints_its_summary_and_no_escape_codes() {
    let cluster = TestCluster::start(1);
    cluster.wait_for_leader(BOUND).await;
    let (ok, out, err) = cluster.kvstore(&["bench", "--ops", "300", "--clients", "4"]);
    assert!(ok, "bench failed:\n{out}\n{err}");
    assert!(out.contains("clients=4 ok=300 errors=0"), "{out}");
    assert!(
        !err.contains('\u{1b}') && !err.contains('\r'),
        "a progress bar was drawn on a non-terminal stderr: {err:?}"
    );
}
