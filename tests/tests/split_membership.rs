//! Membership changes on a keyspace split into ranges, between real `kvstore` processes, with
//! the operator's commands a user types: the change is made to the first range, and every
//! other range's Raft group follows it by itself (`net/src/node/member_follow.rs`).

use std::collections::BTreeMap;
use std::time::Duration;

use e2e::{check_all, write_all, TestCluster};
use net::client::KvClient;

const BOUND: Duration = Duration::from_secs(90);

/// Runs `kvstore ARGS... --servers <every node>` and panics with its output if it fails.
fn kvstore_ok(cluster: &TestCluster, args: &[&str]) -> String {
    let (ok, out, err) = cluster.kvstore(args);
    assert!(
        ok,
        "kvstore {args:?} failed:\n{out}\n{err}\n{}",
        cluster.logs()
    );
    out
}

/// The ids of the ranges node `id` hosts, from its `RAFT.RANGES`.
async fn ranges_of(cluster: &TestCluster, id: u64) -> Vec<u64> {
    let cfg = net::client::ClientConfig {
        max_attempts: 1,
        follow_leader: false,
        ..Default::default()
    };
    let addr = cluster.nodes[&id].client_addr.clone();
    match KvClient::with_config(vec![addr], cfg).ranges().await {
        Ok(ranges) => ranges.iter().map(|r| r.id).collect(),
        Err(_) => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_split_cluster_takes_a_new_member_into_every_range_and_serves_without_two_founders() {
    let mut cluster = TestCluster::start(3);
    cluster.wait_for_leader(BOUND).await;
    kvstore_ok(&cluster, &["split", "g"]);
    kvstore_ok(&cluster, &["split", "p"]);
    // `kvstore status`: every node hosts the three ranges, and each range has one leader.
    let status = kvstore_ok(&cluster, &["status"]);
    let rows: Vec<Vec<&str>> = status
        .lines()
        .skip(1)
        .filter(|l| l.starts_with("127.0.0.1"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 3, "{status}");
    assert!(rows.iter().all(|r| r[r.len() - 2] == "3"), "{status}");
    e2e::eventually(BOUND, "every range led by one node", || async {
        let status = cluster.kvstore(&["status"]).1;
        let leads: u64 = status
            .lines()
            .filter(|l| l.starts_with("127.0.0.1"))
            .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
            .sum();
        leads == 3
    })
    .await;
    let founders: Vec<String> = (1..=3)
        .map(|id| cluster.nodes[&id].client_addr.clone())
        .collect();
    let started = std::time::Instant::now();
    let mut acked = BTreeMap::new();
    for prefix in ["a-", "k-", "x-"] {
        write_all(founders.clone(), prefix, 0..100, &mut acked).await;
    }

    // Node 4 joins: added as a learner (to every range, by the command's wait), started with
    // `--join`, promoted once it has caught up.
    cluster.configure_node(4);
    let (peer, client) = (
        cluster.nodes[&4].peer_addr.clone(),
        cluster.nodes[&4].client_addr.clone(),
    );
    let out = kvstore_ok(
        &cluster,
        &[
            "member",
            "add",
            "4",
            "--peer-addr",
            &peer,
            "--client-addr",
            &client,
        ],
    );
    assert!(out.contains("added as a learner"), "{out}");
    eprintln!("{:?}: node 4 added", started.elapsed());
    let join = vec!["--join".to_string(), cluster.peer_addrs([1, 2, 3])];
    let cmd = cluster.serve_own_command(4, &join);
    cluster.start_with(4, cmd);
    e2e::eventually(BOUND, "node 4 hosting the three ranges", || async {
        ranges_of(&cluster, 4).await.len() == 3
    })
    .await;
    e2e::eventually(BOUND, "node 4 promoted", || async {
        cluster.kvstore(&["member", "promote", "4"]).0
    })
    .await;
    eprintln!("{:?}: node 4 promoted", started.elapsed());
    let list = kvstore_ok(&cluster, &["member", "list"]);
    assert!(
        !list.contains("ranges still following"),
        "member promote returned before every range followed:\n{list}"
    );

    // Remove one founder (the first range's leader) and stop it, as an operator would, then
    // kill another: the two nodes left are a majority of every range only if every range
    // made node 4 a voter and removed the founder.
    let leader = cluster.wait_for_leader(BOUND).await;
    let removed = if leader == 4 { 1 } else { leader };
    kvstore_ok(&cluster, &["member", "remove", &removed.to_string()]);
    cluster.kill(removed);
    let killed = (1..=3).find(|&id| id != removed).expect("a founder");
    cluster.kill(killed);
    let survivors: Vec<String> = (1..=4)
        .filter(|&id| id != removed && id != killed)
        .map(|id| cluster.nodes[&id].client_addr.clone())
        .collect();
    check_all(|| KvClient::new(survivors.clone()), &acked).await;
    eprintln!("{:?}: every key read from nodes 3 and 4", started.elapsed());
    write_all(survivors.clone(), "after-", 0..50, &mut acked).await;
    write_all(survivors.clone(), "z-", 0..50, &mut acked).await;
    check_all(|| KvClient::new(survivors.clone()), &acked).await;
}
