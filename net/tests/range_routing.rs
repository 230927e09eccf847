//! A real node (in this process, on loopback) routes peer messages by the range their frame
//! names: a message for a range it does not host never reaches the first range's Raft core, is
//! counted, and a snapshot request for such a range is refused by name.
//!
//! Node 1 of a three-member cluster runs alone (its peers' addresses refuse connections), so
//! it stays a follower at term 0: pre-votes raise no term. A fake node 2 then speaks to it.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use net::node::{self, NodeConfig};
use net::peer_header::Sender;
use net::request::NodeHandle;
use net::snapshot_transfer::{self, FetchRequest, Reply};
use net::transport::{self, RaftMessage, RaftMessageBody, TokioNet};
use raft_core::SnapshotMeta;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BOUND: Duration = Duration::from_secs(60);
const NODE_2: Sender = Sender {
    node_id: 2,
    incarnation: 77,
};

/// A loopback address nothing listens on (bound, then released).
fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

fn heartbeat(term: u64) -> RaftMessage {
    RaftMessage {
        from: NODE_2.node_id,
        to: 1,
        term,
        body: RaftMessageBody::Heartbeat {
            commit: 0,
            read_round: 0,
        },
    }
}

/// Waits until node 1 reports a term of at least `term`, and returns its info then.
async fn wait_for_term(handle: &NodeHandle, term: u64) -> net::request::NodeInfo {
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let info = handle.info().await.expect("info");
        if info.term >= term {
            return info;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node 1 never reached term {term}: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_for_another_range_never_reaches_the_first_ranges_core() {
    let dir = tempfile::tempdir().expect("tempdir");
    let peer_addr = free_addr();
    let peers = BTreeMap::from([(1, peer_addr.clone()), (2, free_addr()), (3, free_addr())]);
    let cfg = NodeConfig::new(1, peers, dir.path().join("node1"));
    let (cluster_id, metrics) = (cfg.cluster_id, cfg.metrics.clone());
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let (handle, running) = node::start(cfg, TokioNet, shutdown)
        .await
        .expect("node 1 starts");
    let running = tokio::spawn(running);
    assert_eq!(handle.info().await.expect("info").term, 0);

    // On one connection, in this order: range 2's heartbeat of term 5, then the first range's
    // of term 3. The node handles them in order, so once it is at term 3 it has seen both.
    let mut out = BytesMut::new();
    transport::encode_hello(cluster_id, NODE_2, "", &mut out);
    transport::encode_frame(cluster_id, NODE_2.incarnation, 2, &heartbeat(5), &mut out);
    let first = kv::ranges::FIRST_RANGE;
    transport::encode_frame(
        cluster_id,
        NODE_2.incarnation,
        first,
        &heartbeat(3),
        &mut out,
    );
    let mut conn = TcpStream::connect(&peer_addr).await.expect("connect");
    conn.write_all(&out).await.expect("write");

    let info = wait_for_term(&handle, 3).await;
    assert_eq!(
        (info.term, info.leader),
        (3, Some(2)),
        "range 2's heartbeat of term 5 reached the first range's core"
    );
    assert_eq!(metrics.peer_messages_unhosted_range.get(), 1);

    // A snapshot request for range 2 is refused, naming the range.
    let request = FetchRequest {
        from: NODE_2.node_id,
        range: 2,
        at_least: SnapshotMeta::new(0, 0, Default::default()),
    };
    let mut out = BytesMut::new();
    snapshot_transfer::encode_request(cluster_id, NODE_2.incarnation, &request, &mut out);
    let mut snap = TcpStream::connect(&peer_addr).await.expect("connect");
    snap.write_all(&out).await.expect("write");
    let mut len = [0u8; 4];
    tokio::time::timeout(BOUND, snap.read_exact(&mut len))
        .await
        .expect("an answer")
        .expect("read");
    let len = u32::from_be_bytes(len) as usize;
    snapshot_transfer::check_reply_len(len).expect("a reply frame");
    let mut body = vec![0u8; len];
    snap.read_exact(&mut body).await.expect("read");
    match snapshot_transfer::decode_reply(Bytes::from(body)).expect("a reply") {
        Reply::Refused(why) => assert!(why.contains("range 2"), "{why}"),
        other => panic!("a snapshot of a range node 1 does not host: {other:?}"),
    }

    let _ = stop.send(true);
    drop(conn);
    let stopped = tokio::time::timeout(BOUND, running)
        .await
        .expect("node stops");
    assert!(matches!(stopped, Ok(Ok(()))), "{stopped:?}");
}
