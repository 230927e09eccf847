//! A real 3-node cluster of `kvstore` processes: failover, catch-up, full restart, exactly-once
//! retries, and the Redis tools.

use std::collections::BTreeMap;
use std::time::Duration;

use e2e::{check_all, eventually, write_all, TestCluster};
use net::client::KvClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BOUND: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_survive_leader_failure_catch_up_and_full_restart() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(BOUND).await;
    let mut acked = BTreeMap::new();
    write_all(cluster.servers(), "k", 0..1000, &mut acked).await;

    // kill -9 the leader: writes resume on the other two.
    cluster.kill(leader);
    write_all(cluster.servers(), "after-kill-", 0..100, &mut acked).await;
    let new_leader = cluster.wait_for_leader(BOUND).await;
    assert_ne!(new_leader, leader);

    // The old leader restarts and catches up.
    cluster.start_node(leader);
    let target = cluster
        .info(new_leader)
        .await
        .and_then(|i| i["commit_index"].parse::<u64>().ok())
        .expect("leader info");
    let c = &cluster;
    eventually(BOUND, "the restarted node catching up", || async move {
        c.info(leader)
            .await
            .and_then(|i| i.get("applied_index")?.parse::<u64>().ok())
            .is_some_and(|a| a >= target)
    })
    .await;

    // Every node down at once, then up again: nothing acknowledged is lost.
    for id in 1..=3 {
        cluster.kill(id);
    }
    for id in 1..=3 {
        cluster.start_node(id);
    }
    cluster.wait_for_leader(BOUND).await;
    check_all(|| cluster.client(), &acked).await;
}

/// Sends one request on a fresh connection and returns the raw reply bytes (or none if `read`
/// is false: the reply is "lost").
async fn raw(addr: &str, request: &[u8], read: bool) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("send");
    if !read {
        return Vec::new();
    }
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("a reply in time")
        .expect("read");
    buf.truncate(n);
    buf
}

fn resp(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_retried_after_its_reply_was_lost_is_applied_once() {
    let cluster = TestCluster::start(3);
    cluster.wait_for_leader(BOUND).await;
    let servers = cluster.servers();
    let client_id = "4242";
    for seq in 1..=20u32 {
        let req = resp(&["SEQ", client_id, &seq.to_string(), "INCR", "counter"]);
        // The first try's reply is lost; the retry goes to another node with the same (client, seq).
        raw(&servers[seq as usize % 3], &req, false).await;
        let reply = raw(&servers[(seq as usize + 1) % 3], &req, true).await;
        assert!(
            reply.starts_with(b":"),
            "INCR reply: {}",
            String::from_utf8_lossy(&reply)
        );
    }
    let mut c = cluster.client();
    let v = c.get(b"counter").await.expect("read counter");
    assert_eq!(
        v.as_deref(),
        Some(&b"20"[..]),
        "each of the 20 increments must count once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_cli_works_against_a_follower() {
    if std::process::Command::new("redis-cli")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "redis-cli is missing (apt-get install redis-tools)"
        );
        eprintln!(
            "SKIPPED: redis-cli is not installed (apt-get install redis-tools); CI installs it"
        );
        return;
    }
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(BOUND).await;
    let follower = (1..=3).find(|&i| i != leader).expect("a follower");
    let port = cluster.nodes[&follower]
        .client_addr
        .rsplit(':')
        .next()
        .expect("port")
        .to_string();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &port])
            .args(args)
            .output()
            .expect("redis-cli runs");
        (
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    assert_eq!(cli(&["set", "tool", "redis-cli"]).0, "OK");
    assert_eq!(cli(&["get", "tool"]).0, "redis-cli");
    assert_eq!(cli(&["incr", "n"]).0, "1");
    assert_eq!(cli(&["cas", "tool", "redis-cli", "swapped"]).0, "1");
    assert_eq!(cli(&["get", "tool"]).0, "swapped");
    let (unknown, _) = cli(&["frobnicate"]);
    assert!(unknown.contains("unknown command"), "{unknown}");
    let (info, stderr) = cli(&["info"]);
    assert!(info.contains("role:follower"), "{info}\n{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_sent_before_any_leader_exists_waits_for_the_election() {
    // One node of three cannot elect a leader: its request must wait, not fail at once.
    let mut cluster = TestCluster::configure(3);
    cluster.start_node(1);
    let addr = cluster.nodes[&1].client_addr.clone();
    let probe = addr.clone();
    // Until the node has started its client port answers -LOADING; then it takes requests.
    eventually(BOUND, "node 1 started", || {
        let probe = probe.clone();
        async move {
            TcpStream::connect(&probe).await.is_ok()
                && raw(&probe, &resp(&["PING"]), true).await == b"+PONG\r\n"
        }
    })
    .await;
    let early =
        tokio::spawn(async move { raw(&addr, &resp(&["SET", "early", "bird"]), true).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.start_node(2);
    cluster.start_node(3);
    let reply = early.await.expect("request task");
    assert_eq!(
        String::from_utf8_lossy(&reply),
        "+OK\r\n",
        "a request sent during startup must be served once a leader is elected"
    );
    let mut c = cluster.client();
    assert_eq!(
        c.get(b"early").await.expect("read").as_deref(),
        Some(&b"bird"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pipelined_requests_take_effect_in_the_order_they_were_sent() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(BOUND).await;
    for id in 1..=3 {
        // One pipeline: many writes to one key, then a read of it. Redis clients expect the
        // read to see the last write, on a follower (forwarding) as on the leader.
        let key = format!("pipelined-{id}");
        let mut pipeline = Vec::new();
        for v in 1..=64 {
            pipeline.extend(resp(&["SET", &key, &v.to_string()]));
        }
        pipeline.extend(resp(&["GET", &key]));
        let mut s = TcpStream::connect(&cluster.nodes[&id].client_addr)
            .await
            .expect("connect");
        s.write_all(&pipeline).await.expect("send");
        let expected = format!("{}$2\r\n64\r\n", "+OK\r\n".repeat(64));
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while got.len() < expected.len() {
            let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
                .await
                .expect("replies in time")
                .expect("read");
            assert!(n > 0, "connection closed early");
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(
            String::from_utf8_lossy(&got),
            expected,
            "node {id} (leader {leader})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_starts_at_a_follower_moves_to_the_leader() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(BOUND).await;
    let follower = (1..=3).find(|&i| i != leader).expect("a follower");
    let leader_addr = cluster.nodes[&leader].client_addr.clone();
    let info = cluster.info(follower).await.expect("follower info");
    assert_eq!(
        info["leader_client_addr"], leader_addr,
        "INFO names the leader"
    );

    let mut c = KvClient::new(cluster.servers()).starting_at(follower as usize - 1);
    assert_eq!(
        c.current_server(),
        Some(cluster.nodes[&follower].client_addr.as_str())
    );
    c.set(b"hint", b"followed").await.expect("write");
    assert_eq!(c.current_server(), Some(leader_addr.as_str()));
    assert_eq!(
        c.get(b"hint").await.expect("read").as_deref(),
        Some(&b"followed"[..])
    );
}
