//! Hostile input on both ports, and bad command lines: each gets a clear error, and the node
//! keeps serving everyone else.

use std::time::Duration;

use e2e::{kvstore_bin, TestCluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BOUND: Duration = Duration::from_secs(60);

/// Sends `bytes` and returns what comes back before the server closes or goes quiet.
async fn exchange(addr: &str, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_bytes_on_both_ports_leave_the_cluster_serving() {
    let cluster = TestCluster::start(3);
    cluster.wait_for_leader(BOUND).await;
    let client_addr = cluster.nodes[&1].client_addr.clone();
    let peer_addr = cluster
        .peers
        .split(',')
        .next()
        .and_then(|p| p.split_once('='))
        .map(|(_, a)| a.to_string())
        .expect("peer addr");

    // Client port: negative and huge bulk lengths, garbage.
    for bad in [
        &b"*1\r\n$-5\r\n"[..],
        b"*1\r\n$1099511627776\r\n",
        b"*99999999999\r\n",
        b"\x00\xff\xfe garbage \r\n*x\r\n",
    ] {
        let reply = String::from_utf8_lossy(&exchange(&client_addr, bad).await).to_string();
        assert!(reply.starts_with('-'), "{bad:?} got {reply:?}");
    }
    // Unknown command, wrong arity: an error, and the connection stays usable.
    let reply = exchange(
        &client_addr,
        b"*1\r\n$4\r\nNOPE\r\n*1\r\n$3\r\nGET\r\n*1\r\n$4\r\nPING\r\n",
    )
    .await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(
        reply.contains("unknown command")
            && reply.contains("wrong number")
            && reply.ends_with("+PONG\r\n"),
        "{reply}"
    );

    // Peer port: a frame claiming 4 GiB, garbage, and a frame from another cluster.
    let mut huge = u32::MAX.to_be_bytes().to_vec();
    huge.extend_from_slice(&[0u8; 64]);
    assert!(
        exchange(&peer_addr, &huge).await.is_empty(),
        "the connection must just close"
    );
    assert!(exchange(&peer_addr, b"GET / HTTP/1.1\r\n\r\n")
        .await
        .is_empty());
    let mut foreign = bytes::BytesMut::new();
    let msg = raft_message();
    net::transport::encode_frame(0xbad_c1a5, 1, kv::ranges::FIRST_RANGE, &msg, &mut foreign);
    assert!(exchange(&peer_addr, &foreign).await.is_empty());

    // A bootstrap probe is answered (node 1 never heard of a node 9), and one of the wrong
    // length is refused like any bad frame.
    let asker = net::peer_header::Sender {
        node_id: 9,
        incarnation: 1,
    };
    let mut probe = bytes::BytesMut::new();
    net::probe::encode_request(0xbad_c1a5, asker, &mut probe);
    let answer = exchange(&peer_addr, &probe).await;
    assert_eq!(answer.len(), 4 + net::probe::ANSWER_LEN, "{answer:?}");
    let answer = net::probe::decode_answer(bytes::Bytes::copy_from_slice(&answer[4..]))
        .expect("a probe answer");
    assert_eq!(
        (
            answer.cluster_id,
            answer.node.node_id,
            answer.pinned_for_asker
        ),
        (kv::bootstrap_cluster_id("kvstore", [1, 2, 3]), 1, None),
        "{answer:?}"
    );
    let mut long_probe = probe.to_vec();
    long_probe[3] += 1;
    long_probe.push(0);
    assert!(exchange(&peer_addr, &long_probe).await.is_empty());

    // Everyone else is still served.
    let mut c = cluster.client();
    c.set(b"still", b"serving")
        .await
        .expect("write after hostile input");
    assert_eq!(
        c.get(b"still").await.expect("read").as_deref(),
        Some(&b"serving"[..])
    );
    let log = std::fs::read_to_string(&cluster.nodes[&1].log).unwrap_or_default();
    assert!(
        log.contains("cluster") || log.contains("closing peer connection"),
        "the refusal is logged:\n{log}"
    );
}

fn raft_message() -> raft_core_msg::Message {
    raft_core_msg::Message {
        from: 2,
        to: 1,
        term: 1,
        body: raft_core_msg::MessageBody::HeartbeatResponse { read_round: 0 },
    }
}

mod raft_core_msg {
    pub use net::transport::RaftMessage as Message;
    pub use net::transport::RaftMessageBody as MessageBody;
}

#[test]
fn serve_refuses_an_occupied_port_and_another_nodes_data_dir() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_addr = taken.local_addr().expect("addr").to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let peers = format!(
        "1=127.0.0.1:{},2=127.0.0.1:{}",
        e2e::free_port(),
        e2e::free_port()
    );
    let run = |id: &str, client: &str| {
        std::process::Command::new(kvstore_bin())
            .args([
                "serve",
                "--id",
                id,
                "--peers",
                &peers,
                "--client-addr",
                client,
            ])
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .expect("kvstore runs")
    };
    let out = run("1", &taken_addr);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot listen") && err.contains(&taken_addr),
        "{err}"
    );

    // Claim the directory as node 1 (the run above failed before touching it, so do it now).
    let identity = kv::Identity::new(1, kv::bootstrap_cluster_id("kvstore", [1, 2]));
    identity.create(dir.path()).expect("identity");
    let out = run("2", &format!("127.0.0.1:{}", e2e::free_port()));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("node") && err.contains('1') && err.contains('2'),
        "{err}"
    );

    let out = std::process::Command::new(kvstore_bin())
        .args([
            "serve",
            "--id",
            "9",
            "--peers",
            &peers,
            "--client-addr",
            "x:1",
            "--data-dir",
            "/tmp/x",
        ])
        .output()
        .expect("runs");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not one of the --peers"));
    let out = std::process::Command::new(kvstore_bin())
        .args(["serve", "--bogus"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
}

/// A RESP request of `args`.
fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Reads one reply line (enough for the simple and error replies asked for here).
async fn reply_line(s: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte))
            .await
            .expect("a reply, at once")
            .expect("read");
        assert_eq!(n, 1, "the connection closed");
        line.push(byte[0]);
    }
    String::from_utf8_lossy(&line).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_oversized_key_or_value_is_refused_at_the_door_and_nothing_is_committed() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(BOUND).await;
    let addr = cluster.nodes[&leader].client_addr.clone();
    let mut s = TcpStream::connect(&addr).await.expect("connect");
    s.write_all(&resp(&[b"SET", b"warm", b"up"])).await.unwrap();
    assert_eq!(reply_line(&mut s).await, "+OK\r\n");
    let before = cluster
        .info_number(leader, "commit_index")
        .await
        .expect("commit index");

    let big_value = vec![b'v'; kv::command::MAX_VALUE_LEN + 1];
    s.write_all(&resp(&[b"SET", b"k", &big_value]))
        .await
        .unwrap();
    let refused = reply_line(&mut s).await;
    assert!(
        refused.starts_with("-ERR string exceeds maximum allowed size"),
        "{refused}"
    );
    let big_key = vec![b'k'; kv::command::MAX_KEY_LEN + 1];
    s.write_all(&resp(&[b"SET", &big_key, b"v"])).await.unwrap();
    let refused = reply_line(&mut s).await;
    assert!(refused.starts_with("-ERR key exceeds"), "{refused}");
    s.write_all(&resp(&[b"DEL", b"a", &big_key])).await.unwrap();
    let refused = reply_line(&mut s).await;
    assert!(refused.starts_with("-ERR key exceeds"), "{refused}");

    // The connection stays usable, and nothing entered the log.
    s.write_all(&resp(&[b"PING"])).await.unwrap();
    assert_eq!(reply_line(&mut s).await, "+PONG\r\n");
    let after = cluster
        .info_number(leader, "commit_index")
        .await
        .expect("commit index");
    assert_eq!(after, before, "an oversized request was proposed");
}
