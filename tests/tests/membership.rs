//! Membership plumbing between real `kvstore` processes: a node that the cluster does not list
//! refuses to join; a node restarted on its own data directory with new addresses still starts.

use std::time::{Duration, Instant};

use e2e::TestCluster;

const BOUND: Duration = Duration::from_secs(90);

/// Waits until node `id`'s process has exited, for up to `bound`.
fn wait_for_exit(cluster: &mut TestCluster, id: u64, bound: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < bound {
        if !cluster.is_running(id) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn peer_addrs(cluster: &TestCluster, ids: impl IntoIterator<Item = u64>) -> String {
    ids.into_iter()
        .map(|id| cluster.nodes[&id].peer_addr.clone())
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_the_cluster_does_not_list_refuses_to_join_and_leaves_no_data() {
    let mut cluster = TestCluster::start(3);
    cluster.wait_for_leader(BOUND).await;
    cluster.configure_node(4);
    let join = vec!["--join".to_string(), peer_addrs(&cluster, 1..=3)];
    let cmd = cluster.serve_own_command(4, &join);
    cluster.start_with(4, cmd);
    assert!(
        wait_for_exit(&mut cluster, 4, BOUND),
        "node 4 should give up\n{}",
        cluster.logs()
    );
    let log = std::fs::read_to_string(&cluster.nodes[&4].log).unwrap_or_default();
    assert!(
        log.contains("does not list node 4") && log.contains("member add 4"),
        "the error should say why and what to do:\n{log}"
    );
    assert!(
        !cluster.nodes[&4]
            .data_dir
            .join(kv::identity::IDENTITY_FILE)
            .exists(),
        "a refused node records no identity, so a later --join starts afresh"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_restarted_on_its_data_with_new_addresses_and_no_member_list_starts() {
    let mut cluster = TestCluster::start(3);
    cluster.wait_for_leader(BOUND).await;
    let mut client = cluster.client();
    client.set(b"before", b"1").await.expect("write");
    cluster.kill(3);
    let node = cluster.nodes.get_mut(&3).expect("node 3");
    node.peer_addr = format!("127.0.0.1:{}", e2e::free_port());
    node.client_addr = format!("127.0.0.1:{}", e2e::free_port());
    let cmd = cluster.serve_own_command(3, &[]);
    cluster.start_with(3, cmd);
    // Its peers still send to the old address until the move is recorded, but it starts and
    // answers at its new client address.
    e2e::eventually(
        BOUND,
        "node 3 answering INFO at its new address",
        || async { cluster.info(3).await.is_some() },
    )
    .await;
    assert!(cluster.is_running(3), "{}", cluster.logs());
}
