//! The admin endpoints of real `kvstore serve` processes: `/metrics` parses as Prometheus text
//! and its counters move under load on every node; `/health` turns 503 with a reason on a node
//! cut off from the others (both others stopped with SIGSTOP) and 200 again once they resume;
//! `/ready` answers 200 once a node serves clients.

use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use e2e::{eventually, free_port, TestCluster, Writer};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use prometheus_parse::{Scrape, Value};

const BOUND: Duration = Duration::from_secs(60);

/// GET `path` from `addr`: the status code and the body.
async fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header("host", addr)
        .body(Empty::<Bytes>::new())
        .ok()?;
    let resp = sender.send_request(req).await.ok()?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A 3-node cluster whose nodes serve the admin endpoints; their addresses by node.
fn cluster_with_admin() -> (TestCluster, Vec<String>) {
    let mut cluster = TestCluster::configure(3);
    let admin: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    for id in 1..=3 {
        let mut cmd = cluster.serve_command(id);
        cmd.args(["--admin-addr", &admin[id as usize - 1]]);
        cluster.start_with(id, cmd);
    }
    (cluster, admin)
}

async fn scrape(addr: &str) -> Scrape {
    let (status, text) = get(addr, "/metrics").await.expect("/metrics answers");
    assert_eq!(status, 200, "{text}");
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text parses")
}

/// The sum of every sample named `name` whose labels include `labels`.
fn total(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

/// Families every node must export (a histogram by its `_count`).
const FAMILIES: &[&str] = &[
    "kvstore_role",
    "kvstore_term",
    "kvstore_leader_id",
    "kvstore_commit_index",
    "kvstore_applied_index",
    "kvstore_last_index",
    "kvstore_persisted_index",
    "kvstore_log_start_index",
    "kvstore_proposals_total",
    "kvstore_fsync_duration_seconds_count",
    "kvstore_fsync_batch_entries_count",
    "kvstore_apply_duration_seconds_count",
    "kvstore_peer_messages_sent_total",
    "kvstore_peer_messages_received_total",
    "kvstore_peer_messages_dropped_total",
    "kvstore_peer_reachable",
    "kvstore_snapshots_taken_total",
    "kvstore_snapshots_installed_total",
    "kvstore_snapshots_sent_total",
    "kvstore_leader_changes_total",
    "kvstore_elections_started_total",
    "kvstore_read_index_rounds_total",
    "kvstore_read_index_latency_seconds_count",
    "kvstore_client_connections",
    "kvstore_disk_bytes",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_under_load_on_every_node() {
    let (cluster, admin) = cluster_with_admin();
    let leader = cluster.wait_for_leader(BOUND).await;
    for addr in &admin {
        eventually(BOUND, "/ready answers 200", || async {
            get(addr, "/ready").await.is_some_and(|(s, _)| s == 200)
        })
        .await;
    }
    let writer = Writer::start(cluster.client(), "m");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut reader = cluster.client();
    reader.get(b"m0").await.expect("a read");
    let mut first = Vec::new();
    for addr in &admin {
        first.push(scrape(addr).await);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    reader.get(b"m1").await.expect("a read");
    let report = writer.finish().await;
    assert!(!report.acked.is_empty(), "the writer wrote: {report:?}");
    let mut second = Vec::new();
    for addr in &admin {
        second.push(scrape(addr).await);
    }
    for (i, (a, b)) in first.iter().zip(&second).enumerate() {
        let node = i + 1;
        for family in FAMILIES {
            assert!(
                b.samples.iter().any(|s| s.metric == *family),
                "node {node} exports {family}"
            );
        }
        for moving in [
            "kvstore_commit_index",
            "kvstore_applied_index",
            "kvstore_fsync_duration_seconds_count",
            "kvstore_apply_duration_seconds_count",
            "kvstore_peer_messages_received_total",
        ] {
            assert!(
                total(b, moving, &[]) > total(a, moving, &[]),
                "node {node}: {moving} moved under load ({} then {})",
                total(a, moving, &[]),
                total(b, moving, &[])
            );
        }
        assert!(total(b, "kvstore_disk_bytes", &[("database", "raft_logs")]) > 0.0);
        assert_eq!(total(b, "kvstore_leader_id", &[]), leader as f64);
    }
    let sets = |scrapes: &[Scrape]| -> f64 {
        scrapes
            .iter()
            .map(|s| {
                total(
                    s,
                    "kvstore_client_commands_total",
                    &[("command", "set"), ("outcome", "ok")],
                )
            })
            .sum()
    };
    assert!(
        sets(&second) > sets(&first),
        "acknowledged SETs are counted ({} then {})",
        sets(&first),
        sets(&second)
    );
    let leader_scrape = &second[leader as usize - 1];
    assert_eq!(
        total(leader_scrape, "kvstore_role", &[("role", "leader")]),
        1.0
    );
    assert!(
        leader_scrape
            .samples
            .iter()
            .any(|s| s.metric == "kvstore_follower_lag_entries"),
        "the leader reports its followers' lag"
    );
    assert!(total(leader_scrape, "kvstore_read_index_rounds_total", &[]) > 0.0);
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill {sig} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_turns_503_with_a_reason_when_cut_off_and_200_after() {
    let (cluster, admin) = cluster_with_admin();
    cluster.wait_for_leader(BOUND).await;
    let health = |id: usize| get(&admin[id - 1], "/health");
    eventually(BOUND, "node 1 healthy", || async {
        health(1).await.is_some_and(|(s, _)| s == 200)
    })
    .await;
    let others: Vec<u32> = [2, 3]
        .iter()
        .map(|&id| cluster.pid(id).expect("running"))
        .collect();
    for &pid in &others {
        signal(pid, "-STOP");
    }
    let mut reason = String::new();
    for _ in 0..600 {
        match health(1).await {
            Some((503, body)) => {
                reason = body;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    for &pid in &others {
        signal(pid, "-CONT");
    }
    assert!(
        !reason.is_empty(),
        "node 1 never reported unhealthy while cut off"
    );
    assert!(
        ["no leader", "not heard from", "quorum not reachable"]
            .iter()
            .any(|r| reason.contains(r)),
        "the 503 names the reason: {reason}"
    );
    assert_eq!(reason.trim().lines().count(), 1, "one line: {reason}");
    eventually(BOUND, "node 1 healthy again", || async {
        health(1).await.is_some_and(|(s, _)| s == 200)
    })
    .await;
    let (status, body) = get(&admin[0], "/ready").await.expect("/ready answers");
    assert_eq!((status, body.trim()), (200, "ready"));
}
