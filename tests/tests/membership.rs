//! Membership plumbing between real `kvstore` processes: a learner added with `member add` and
//! started with `--join` catches up (by snapshot), is promoted and restarts on its own data; a
//! node that the cluster does not list refuses to join; a node restarted on its own data
//! directory with new addresses still starts.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use e2e::{check_all, write_all, TestCluster};
use net::client::KvClient;
use net::node::admin::MemberRole;

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

/// Waits until node `id` has applied everything the leader had committed when asked.
async fn wait_until_caught_up(cluster: &TestCluster, leader: u64, id: u64) {
    let target = cluster
        .info_number(leader, "commit_index")
        .await
        .expect("leader info");
    let start = Instant::now();
    while start.elapsed() < BOUND {
        if cluster
            .info_number(id, "applied_index")
            .await
            .is_some_and(|a| a >= target)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "node {id} did not catch up to {target} within {BOUND:?}\n{}",
        cluster.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_learner_started_with_join_catches_up_by_snapshot_is_promoted_and_restarts_alone() {
    let mut cluster = TestCluster::configure(3);
    cluster.extra_args = ["--snapshot-threshold", "1000", "--snapshot-tail", "200"]
        .map(String::from)
        .to_vec();
    for id in 1..=3 {
        cluster.start_node(id);
    }
    cluster.wait_for_leader(BOUND).await;
    let mut acked = BTreeMap::new();
    write_all(cluster.servers_except(4), "k", 0..3000, &mut acked).await;
    let leader = cluster.wait_for_leader(BOUND).await;
    let log_start = cluster
        .info_number(leader, "log_start_index")
        .await
        .expect("leader info");
    assert!(log_start > 1, "the leader should have compacted its log");

    cluster.configure_node(4);
    let (peer, client) = (
        cluster.nodes[&4].peer_addr.clone(),
        cluster.nodes[&4].client_addr.clone(),
    );
    let mut admin = KvClient::new(cluster.servers_except(4));
    admin
        .member_add(4, &peer, &client)
        .await
        .expect("adding node 4 as a learner");
    let join = vec!["--join".to_string(), peer_addrs(&cluster, 1..=3)];
    let cmd = cluster.serve_own_command(4, &join);
    cluster.start_with(4, cmd);
    wait_until_caught_up(&cluster, leader, 4).await;
    let info = cluster.info(4).await.expect("node 4 info");
    assert!(
        info["snapshots_installed"].parse::<u64>().unwrap_or(0) >= 1,
        "node 4 should have caught up by snapshot: {info:?}\n{}",
        cluster.logs()
    );
    check_all(|| cluster.client_of(4), &acked).await;

    // Promoted once it has caught up ("learner not ready" is retried).
    e2e::eventually(BOUND, "node 4 promoted", || {
        let servers = cluster.servers_except(4);
        async move { KvClient::new(servers).member_promote(4).await.is_ok() }
    })
    .await;
    let list = admin.member_list().await.expect("member list");
    let four = list.members.iter().find(|m| m.id == 4);
    assert_eq!(
        four.map(|m| m.role),
        Some(MemberRole::Voter),
        "node 4 should be a voter: {list:?}"
    );

    // A restart needs neither --join nor --peers: everything comes from its data directory.
    cluster.kill(4);
    write_all(cluster.servers_except(4), "after-", 0..200, &mut acked).await;
    let cmd = cluster.serve_own_command(4, &[]);
    cluster.start_with(4, cmd);
    let leader = cluster.wait_for_leader(BOUND).await;
    wait_until_caught_up(&cluster, leader, 4).await;
    check_all(|| cluster.client_of(4), &acked).await;
}
