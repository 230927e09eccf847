//! A split through the log on a three-node cluster of real nodes (in this process, on
//! loopback): range 1 hands out an id and splits; every node opens the new range's state
//! machine and log and hosts its Raft group, which elects a leader and serves the keys from the
//! split key on; range 1 refuses them; a restart brings both ranges back with their data, and a
//! node that was down during the split catches up from the log.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use kv::ranges::{RangeId, Split, FIRST_RANGE};
use kv::{Command, CommandResult, Op};
use net::node::{self, NodeConfig, NodeError};
use net::request::{ClientRequest, NodeHandle, ReadOp, ReadResult, RequestError};
use net::transport::TokioNet;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

const BOUND: Duration = Duration::from_secs(60);
const SPLIT_AT: &[u8] = b"m";

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

/// One node of the cluster: its handle while it runs, and how to stop it.
struct Running {
    handle: NodeHandle,
    metrics: std::sync::Arc<net::metrics::NodeMetrics>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), NodeError>>,
}

struct Cluster {
    peers: BTreeMap<u64, String>,
    root: PathBuf,
    nodes: BTreeMap<u64, Running>,
    /// Each write's (client id, seq): a new seq for every attempt.
    seq: u64,
}

impl Cluster {
    fn new(root: &Path) -> Self {
        static LOGGING: std::sync::Once = std::sync::Once::new();
        if std::env::var_os("KVSTORE_LOG").is_some() {
            LOGGING.call_once(|| net::logging::init(net::logging::LogFormat::Text));
        }
        let peers = (1..=3).map(|id| (id, free_addr())).collect();
        Self {
            peers,
            root: root.to_path_buf(),
            nodes: BTreeMap::new(),
            seq: 0,
        }
    }

    fn config(&self, id: u64) -> NodeConfig {
        let mut cfg = NodeConfig::new(id, self.peers.clone(), self.root.join(format!("n{id}")));
        cfg.tick = Duration::from_millis(20);
        cfg
    }

    async fn start(&mut self, ids: &[u64]) {
        // Started together: a new cluster's nodes answer each other's bootstrap probes.
        let starting: Vec<_> = ids
            .iter()
            .map(|&id| {
                let (stop, shutdown) = watch::channel(false);
                let cfg = self.config(id);
                let metrics = cfg.metrics.clone();
                (
                    id,
                    stop,
                    metrics,
                    tokio::spawn(node::start(cfg, TokioNet, shutdown)),
                )
            })
            .collect();
        for (id, stop, metrics, started) in starting {
            let (handle, running) = started
                .await
                .expect("start task")
                .unwrap_or_else(|e| panic!("node {id} starts: {e}"));
            let task = tokio::spawn(running);
            let node = Running {
                handle,
                metrics,
                stop,
                task,
            };
            self.nodes.insert(id, node);
        }
    }

    async fn stop(&mut self, id: u64) {
        let node = self.nodes.remove(&id).expect("running");
        let _ = node.stop.send(true);
        node.task
            .await
            .expect("node task")
            .expect("node stops cleanly");
    }

    fn node(&self, id: u64) -> &NodeHandle {
        &self.nodes[&id].handle
    }

    /// Writes `op` to `range` through node `via` until it is answered (a leader may not be
    /// elected yet), with a new (client, seq) for each attempt.
    async fn write(&mut self, via: u64, range: RangeId, op: Op) -> CommandResult {
        let deadline = tokio::time::Instant::now() + BOUND;
        loop {
            self.seq += 1;
            let cmd = Command::new(7, self.seq, op.clone());
            let (reply, answer) = oneshot::channel();
            let req = ClientRequest::Write { cmd, reply };
            let sent = self.node(via).request_to(range, req).await;
            let result = match sent {
                Ok(()) => answer
                    .await
                    .unwrap_or_else(|_| Err(RequestError::Failed("gone".into()))),
                Err(e) => Err(e),
            };
            match result {
                Ok(result) => return result,
                Err(e) => assert!(
                    tokio::time::Instant::now() < deadline,
                    "range {range} never answered a write through node {via}: {e}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Reads `key` from `range` through node `via` (a linearizable read: the node has
    /// applied everything committed before it) until it is answered.
    async fn read(&self, via: u64, range: RangeId, key: &str) -> Option<Bytes> {
        let deadline = tokio::time::Instant::now() + BOUND;
        loop {
            let (reply, answer) = oneshot::channel();
            let req = ClientRequest::Read {
                op: ReadOp::Get(Bytes::copy_from_slice(key.as_bytes())),
                reply,
            };
            let result = match self.node(via).request_to(range, req).await {
                Ok(()) => answer
                    .await
                    .unwrap_or_else(|_| Err(RequestError::Failed("gone".into()))),
                Err(e) => Err(e),
            };
            match result {
                Ok(ReadResult::Value(v)) => return v,
                Ok(other) => panic!("a GET answered {other:?}"),
                Err(e) => assert!(
                    tokio::time::Instant::now() < deadline,
                    "range {range} never answered a read of {key} through node {via}: {e}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until node `id` hosts `range`, and returns the range's start key there.
    async fn hosted(&self, id: u64, range: RangeId) -> Bytes {
        let deadline = tokio::time::Instant::now() + BOUND;
        loop {
            if let Some(d) = self.node(id).ranges().get(range) {
                return d.start.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {id} never hosted range {range}: {:?}",
                self.node(id).ranges()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Allocates an id in range 1 and splits range 1 at [`SPLIT_AT`] through node `via`.
    async fn split(&mut self, via: u64) -> RangeId {
        let id = match self.write(via, FIRST_RANGE, Op::AllocateRangeId).await {
            CommandResult::Value(id) => RangeId::try_from(id).expect("a positive id"),
            other => panic!("AllocateRangeId answered {other:?}"),
        };
        let split = Split {
            range: FIRST_RANGE,
            epoch: 1,
            at: Bytes::from_static(SPLIT_AT),
            new_range: id,
        };
        match self.write(via, FIRST_RANGE, Op::Split(split)).await {
            CommandResult::Split { left, right } => {
                assert_eq!((left.id, right.id), (FIRST_RANGE, id));
                assert_eq!(right.start.as_ref(), SPLIT_AT);
            }
            other => panic!("the split answered {other:?}"),
        }
        id
    }

    async fn set(&mut self, via: u64, range: RangeId, key: &str, value: &str) -> CommandResult {
        let op = Op::Set {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
        };
        self.write(via, range, op).await
    }
}

fn value(v: &str) -> Option<Bytes> {
    Some(Bytes::copy_from_slice(v.as_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_creates_a_range_on_every_node_that_serves_its_keys_and_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::new(dir.path());
    cluster.start(&[1, 2, 3]).await;
    for (key, v) in [
        ("apple", "1"),
        ("kiwi", "2"),
        ("melon", "3"),
        ("zebra", "4"),
    ] {
        assert_eq!(cluster.set(1, FIRST_RANGE, key, v).await, CommandResult::Ok);
    }

    let right = cluster.split(2).await;
    for id in 1..=3 {
        assert_eq!(cluster.hosted(id, right).await.as_ref(), SPLIT_AT);
        let table = cluster.node(id).ranges();
        assert_eq!(
            table
                .get(FIRST_RANGE)
                .and_then(|d| d.end.clone())
                .as_deref(),
            Some(SPLIT_AT),
            "node {id} publishes the shrunk first range"
        );
    }

    // The new range's group elects a leader and takes writes for its keys.
    assert_eq!(
        cluster.set(3, right, "nectarine", "5").await,
        CommandResult::Ok
    );
    assert_eq!(cluster.set(1, right, "zebra", "6").await, CommandResult::Ok);
    for id in 1..=3 {
        assert_eq!(cluster.read(id, right, "nectarine").await, value("5"));
        assert_eq!(cluster.read(id, right, "zebra").await, value("6"));
        assert_eq!(
            cluster.read(id, right, "melon").await,
            value("3"),
            "moved with the split"
        );
        assert_eq!(cluster.read(id, FIRST_RANGE, "kiwi").await, value("2"));
    }
    // The first range no longer owns them.
    match cluster.set(2, FIRST_RANGE, "orange", "7").await {
        CommandResult::NotOwned { range, .. } => assert_eq!(range, FIRST_RANGE),
        other => panic!("range 1 took a key past the split: {other:?}"),
    }
    // No image while the node hosts two ranges: the request is refused, naming the range.
    let mut chunks = cluster
        .node(1)
        .image_chunks(raft_core::SnapshotMeta::default())
        .await
        .expect("queued");
    match chunks.recv().await {
        Some(Err(refused)) => assert!(
            refused.to_string().contains("no snapshot image of range 1"),
            "{refused}"
        ),
        other => panic!("an image was served with two ranges hosted: {other:?}"),
    }
    for id in 1..=3 {
        let hosted = cluster.nodes[&id].metrics.ranges_hosted.get();
        assert_eq!(hosted, 2, "node {id} counts both ranges hosted");
    }
    // Both ranges have the first range's configuration (member changes follow it: tested in
    // `tests/tests/split_membership.rs` and the simulator).
    match cluster
        .node(1)
        .admin(net::node::admin::AdminRequest::ListMembers)
        .await
    {
        Ok(net::node::admin::AdminReply::Members(list)) => {
            assert!(list.ranges_behind.is_empty(), "{list:?}")
        }
        other => panic!("the member list answered {other:?}"),
    }

    for id in 1..=3 {
        cluster.stop(id).await;
    }
    cluster.start(&[1, 2, 3]).await;
    for id in 1..=3 {
        assert_eq!(cluster.hosted(id, right).await.as_ref(), SPLIT_AT);
        assert_eq!(cluster.read(id, right, "nectarine").await, value("5"));
        assert_eq!(cluster.read(id, right, "zebra").await, value("6"));
        assert_eq!(cluster.read(id, FIRST_RANGE, "apple").await, value("1"));
    }
    assert_eq!(
        cluster.set(2, right, "papaya", "8").await,
        CommandResult::Ok
    );
    assert_eq!(cluster.read(3, right, "papaya").await, value("8"));
    for id in 1..=3 {
        cluster.stop(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_during_the_split_creates_the_range_from_the_log_after_its_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::new(dir.path());
    cluster.start(&[1, 2, 3]).await;
    assert_eq!(
        cluster.set(1, FIRST_RANGE, "olive", "1").await,
        CommandResult::Ok
    );
    assert_eq!(cluster.read(3, FIRST_RANGE, "olive").await, value("1"));
    cluster.stop(3).await;

    let right = cluster.split(1).await;
    assert_eq!(
        cluster.set(2, right, "quince", "2").await,
        CommandResult::Ok
    );
    assert_eq!(
        cluster.set(1, FIRST_RANGE, "banana", "3").await,
        CommandResult::Ok
    );

    cluster.start(&[3]).await;
    assert_eq!(cluster.hosted(3, right).await.as_ref(), SPLIT_AT);
    assert_eq!(cluster.read(3, right, "quince").await, value("2"));
    assert_eq!(cluster.read(3, right, "olive").await, value("1"));
    assert_eq!(cluster.read(3, FIRST_RANGE, "banana").await, value("3"));
    for id in 1..=3 {
        cluster.stop(id).await;
    }
}
