//! Splitting a live cluster's keyspace through the client port, end to end: nodes in this
//! process on loopback, each serving clients. `RAFT.SPLIT` splits the first range; the nodes
//! create the new range's group, and every client command then goes to the range owning its
//! keys: reads and writes in both halves, MGET joined across them, MSET across them refused
//! with CROSSSLOT, SCAN walking both in key order, DBSIZE summed.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use net::client::{ClientConfig, KvClient};
use net::node::{self, NodeConfig};
use net::resp::Reply;
use net::transport::TokioNet;

const BOUND: Duration = Duration::from_secs(60);
const NODES: u64 = 3;

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

/// Starts `NODES` nodes and their client ports; returns the client addresses and the sender
/// that stops them all.
async fn cluster(dir: &std::path::Path) -> (Vec<String>, tokio::sync::watch::Sender<bool>) {
    let peers: BTreeMap<u64, String> = (1..=NODES).map(|id| (id, free_addr())).collect();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let mut clients = Vec::new();
    for id in 1..=NODES {
        let cfg = NodeConfig::new(id, peers.clone(), dir.join(format!("node{id}")));
        let (handle, running) = node::start(cfg, TokioNet, shutdown.clone())
            .await
            .expect("a node starts");
        tokio::spawn(running);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        clients.push(listener.local_addr().expect("addr").to_string());
        tokio::spawn(net::server::run_client_server(
            listener,
            handle,
            shutdown.clone(),
            id,
        ));
    }
    (clients, stop)
}

fn client(servers: Vec<String>) -> KvClient {
    KvClient::over(
        TokioNet,
        servers,
        ClientConfig {
            max_attempts: 200,
            ..Default::default()
        },
        41,
    )
}

fn bulk(s: &str) -> Reply {
    Reply::Bulk(Bytes::copy_from_slice(s.as_bytes()))
}

/// Every key SCAN returns from cursor 0 to 0 with COUNT `count`, in the order returned.
async fn scan_all(client: &mut KvClient, count: &str) -> Vec<Bytes> {
    let (mut cursor, mut keys) = (String::from("0"), Vec::new());
    for _ in 0..10_000 {
        let reply = client
            .call(
                &[b"SCAN", cursor.as_bytes(), b"COUNT", count.as_bytes()],
                false,
            )
            .await
            .expect("SCAN");
        let Reply::Array(page) = reply else {
            panic!("SCAN answers an array: {reply:?}");
        };
        let [Reply::Bulk(next), Reply::Array(found)] = &page[..] else {
            panic!("SCAN answers a cursor and keys: {page:?}");
        };
        for key in found {
            let Reply::Bulk(key) = key else {
                panic!("a key: {key:?}");
            };
            keys.push(key.clone());
        }
        cursor = String::from_utf8_lossy(next).into_owned();
        if cursor == "0" {
            return keys;
        }
    }
    panic!("SCAN did not end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_split_every_command_goes_to_the_range_owning_its_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (servers, stop) = cluster(dir.path()).await;
    let mut c = client(servers.clone());
    let keys = ["apple", "banana", "kiwi", "melon", "pear", "zucchini"];
    for key in keys {
        c.set(key.as_bytes(), key.as_bytes()).await.expect("SET");
    }

    let [left, right] = c.split(b"m").await.expect("RAFT.SPLIT m");
    assert_eq!((left.id, left.end.as_deref()), (1, Some(&b"m"[..])));
    assert_eq!((&right.start[..], right.end.as_deref()), (&b"m"[..], None));
    assert_ne!(right.id, 1);

    // Every node lists both ranges once it has applied the split, each with a leader.
    for server in &servers {
        let mut one = client(vec![server.clone()]);
        let deadline = tokio::time::Instant::now() + BOUND;
        loop {
            let ranges = one.ranges().await.expect("RAFT.RANGES");
            if ranges.len() == 2 && ranges.iter().all(|r| r.leader.is_some()) {
                assert_eq!(ranges[0].id, 1);
                assert_eq!(ranges[1].id, right.id);
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{server}: {ranges:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // Reads and writes in both halves, from any node.
    for key in keys {
        assert_eq!(
            c.get(key.as_bytes()).await.expect("GET").as_deref(),
            Some(key.as_bytes())
        );
    }
    c.set(b"orange", b"o").await.expect("SET in the right half");
    c.set(b"fig", b"f").await.expect("SET in the left half");
    let mget = c
        .call(
            &[b"MGET", b"zucchini", b"nothere", b"apple", b"orange"],
            false,
        )
        .await
        .expect("MGET across both ranges");
    assert_eq!(
        mget,
        Reply::Array(vec![bulk("zucchini"), Reply::Nil, bulk("apple"), bulk("o")])
    );
    let crossing = c
        .call(&[b"MSET", b"apple", b"1", b"pear", b"2"], true)
        .await;
    match crossing {
        Err(net::client::ClientError::Server(e)) => assert!(e.starts_with("CROSSSLOT"), "{e}"),
        other => panic!("MSET across ranges: {other:?}"),
    }
    assert_eq!(
        c.get(b"apple").await.expect("GET").as_deref(),
        Some(&b"apple"[..])
    );
    let dbsize = c.call(&[b"DBSIZE"], false).await.expect("DBSIZE");
    assert_eq!(dbsize, Reply::Integer(8));

    // SCAN walks the left range, then the right one, and misses nothing.
    let scanned = scan_all(&mut c, "2").await;
    let first_right = scanned
        .iter()
        .position(|k| k.as_ref() >= &b"m"[..])
        .expect("keys of the right half");
    assert!(
        scanned[..first_right]
            .iter()
            .all(|k| k.as_ref() < &b"m"[..]),
        "{scanned:?}"
    );
    assert!(
        scanned[first_right..]
            .iter()
            .all(|k| k.as_ref() >= &b"m"[..]),
        "{scanned:?}"
    );
    let mut distinct = scanned.clone();
    distinct.sort();
    distinct.dedup();
    let mut expected: Vec<Bytes> = keys
        .iter()
        .chain(["orange", "fig"].iter())
        .map(|k| Bytes::copy_from_slice(k.as_bytes()))
        .collect();
    expected.sort();
    assert_eq!(distinct, expected);
    let _ = stop.send(true);
}

/// Leaders spread over the nodes: after three splits, each new range's leadership goes to its
/// preferred voter (`range id mod 3`, in id order: ids 2, 3 and 4 go to nodes 3, 1 and 2). A
/// split that was proposed again takes a new id (an allocated id is never reused), so the
/// expected leaders follow the ids the splits got.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_splits_each_range_is_led_by_its_preferred_voter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (servers, stop) = cluster(dir.path()).await;
    let mut c = client(servers.clone());
    let mut expected = BTreeMap::new();
    for at in ["d", "h", "m"] {
        let [_, right] = c.split(at.as_bytes()).await.expect("split");
        expected.insert(right.id, [1, 2, 3][(right.id % 3) as usize]);
    }
    let deadline = tokio::time::Instant::now() + BOUND;
    let mut asked = client(vec![servers[0].clone()]);
    loop {
        let ranges = asked.ranges().await.expect("RAFT.RANGES");
        let leaders: BTreeMap<u64, u64> = ranges
            .iter()
            .filter(|r| r.id != 1)
            .filter_map(|r| r.leader.map(|l| (r.id, l)))
            .collect();
        if leaders == expected {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the leaders never spread: {leaders:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for key in ["b", "f", "k", "z"] {
        let reply = c
            .call(&[b"SET", key.as_bytes(), b"v"], true)
            .await
            .expect("SET");
        assert_eq!(reply, Reply::Simple("OK".into()), "SET {key}");
        let reply = c.call(&[b"GET", key.as_bytes()], false).await.expect("GET");
        assert_eq!(reply, bulk("v"), "GET {key}");
    }
    let _ = stop.send(true);
}
