//! The client port's range commands on a real node (in this process, on loopback): a cluster of
//! one node, which elects itself, lists its one range with its leader and key count, and serves
//! every data command as before ranges (one range: nothing is routed).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use net::client::KvClient;
use net::node::{self, NodeConfig};
use net::resp::Reply;
use net::transport::TokioNet;

const BOUND: Duration = Duration::from_secs(60);

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

/// A one-node cluster serving clients; the sender stops it.
async fn one_node(dir: &std::path::Path) -> (String, tokio::sync::watch::Sender<bool>) {
    let peers = BTreeMap::from([(1, free_addr())]);
    let cfg = NodeConfig::new(1, peers, dir.join("node1"));
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let (handle, running) = node::start(cfg, TokioNet, shutdown.clone())
        .await
        .expect("node 1 starts");
    tokio::spawn(running);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(net::server::run_client_server(
        listener, handle, shutdown, 7,
    ));
    (addr, stop)
}

async fn wait_for_leader(client: &mut KvClient) -> Vec<net::server_ranges::RangeStatus> {
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let ranges = client.ranges().await.expect("RAFT.RANGES");
        if ranges.iter().all(|r| r.leader.is_some()) {
            return ranges;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no leader: {ranges:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_never_split_lists_one_range_owning_every_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, stop) = one_node(dir.path()).await;
    let mut client = KvClient::new(vec![addr]);
    let before = wait_for_leader(&mut client).await;
    assert_eq!(before.len(), 1, "{before:?}");
    let range = &before[0];
    assert_eq!(
        (
            range.id,
            range.start.as_ref(),
            range.end.as_ref(),
            range.leader
        ),
        (1, &b""[..], None, Some(1))
    );

    for key in ["a", "m", "z"] {
        client.set(key.as_bytes(), b"v").await.expect("SET");
    }
    let mset = client
        .call(&[b"MSET", b"a", b"1", b"z", b"2"], true)
        .await
        .expect("MSET in one range");
    assert_eq!(mset, Reply::ok());
    let after = client.ranges().await.expect("RAFT.RANGES");
    assert_eq!(after[0].keys, Some(3));
    let mget = client
        .call(&[b"MGET", b"z", b"a"], false)
        .await
        .expect("MGET");
    assert_eq!(
        mget,
        Reply::Array(vec![
            Reply::Bulk(Bytes::from_static(b"2")),
            Reply::Bulk(Bytes::from_static(b"1"))
        ])
    );
    let help = client
        .call(&[b"RAFT.RANGES", b"HELP"], false)
        .await
        .expect("HELP");
    assert!(
        matches!(&help, Reply::Array(lines) if lines.len() == 4),
        "{help:?}"
    );
    let _ = stop.send(true);
}
