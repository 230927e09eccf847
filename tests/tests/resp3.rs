//! The client port as a RESP3 client sees it, over raw TCP: HELLO switches the protocol and
//! later replies use RESP3's types (maps, nulls, verbatim strings), HELLO 2 switches back; a
//! bulk string over the parser's limit is refused and skipped while the connection stays
//! usable; a node that has not started yet answers `-LOADING` and still answers HELLO and INFO.

use std::time::Duration;

use bytes::BytesMut;
use e2e::{free_port, TestCluster};
use net::resp::{encode_request, Limits, Reply, ReplyParser};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BOUND: Duration = Duration::from_secs(60);

/// A client connection that speaks raw RESP.
struct Raw {
    stream: TcpStream,
    buf: BytesMut,
    parser: ReplyParser,
}

impl Raw {
    async fn connect(addr: &str) -> Raw {
        let start = std::time::Instant::now();
        loop {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    return Raw {
                        stream,
                        buf: BytesMut::new(),
                        parser: ReplyParser::new(Limits::default()),
                    }
                }
                Err(e) if start.elapsed() > BOUND => panic!("connecting to {addr}: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    async fn send(&mut self, args: &[&str]) {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        let mut out = BytesMut::new();
        encode_request(&args, &mut out);
        self.stream.write_all(&out).await.expect("send");
    }

    /// The next reply, and the bytes it was encoded in.
    async fn reply_raw(&mut self) -> (Reply, Vec<u8>) {
        let deadline = tokio::time::Instant::now() + BOUND;
        loop {
            let before = self.buf.clone();
            if let Some(reply) = self
                .parser
                .parse(&mut self.buf)
                .expect("a well-formed reply")
            {
                let used = before.len() - self.buf.len();
                return (reply, before[..used].to_vec());
            }
            let read = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf))
                .await
                .expect("a reply in time")
                .expect("read");
            assert!(read > 0, "the server closed the connection");
        }
    }

    async fn call(&mut self, args: &[&str]) -> Reply {
        self.send(args).await;
        self.reply_raw().await.0
    }

    /// The reply's first line, as sent.
    async fn call_head(&mut self, args: &[&str]) -> String {
        self.send(args).await;
        let raw = self.reply_raw().await.1;
        let text = String::from_utf8_lossy(&raw).into_owned();
        text.split("\r\n").next().unwrap_or_default().to_string()
    }
}

fn map_get<'a>(reply: &'a Reply, key: &str) -> Option<&'a Reply> {
    let Reply::Map(pairs) = reply else {
        panic!("expected a map, got {reply:?}")
    };
    pairs
        .iter()
        .find(|(k, _)| *k == Reply::bulk(key))
        .map(|(_, v)| v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hello_3_switches_the_connection_to_resp3_and_hello_2_back() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(BOUND).await;
    let mut c = Raw::connect(&cluster.nodes[&leader].client_addr).await;

    // RESP2 first: the map of HELLO 2 is a flat array, a missing key `$-1`.
    assert_eq!(c.call_head(&["HELLO", "2"]).await, "*14");
    assert_eq!(c.call_head(&["GET", "resp3:missing"]).await, "$-1");

    let hello = c.call(&["HELLO", "3", "SETNAME", "e2e"]).await;
    assert_eq!(map_get(&hello, "server"), Some(&Reply::bulk("redis")));
    assert_eq!(map_get(&hello, "proto"), Some(&Reply::Integer(3)));
    let role = map_get(&hello, "role");
    assert!(
        role == Some(&Reply::bulk("master")) || role == Some(&Reply::bulk("replica")),
        "{role:?}"
    );
    assert!(matches!(map_get(&hello, "id"), Some(Reply::Integer(id)) if *id > 0));
    assert_eq!(
        c.call_head(&["HELLO"]).await,
        "%7",
        "HELLO's reply is a map"
    );

    assert_eq!(c.call(&["SET", "resp3:k", "v"]).await, Reply::ok());
    assert_eq!(c.call(&["GET", "resp3:k"]).await, Reply::bulk("v"));
    assert_eq!(
        c.call_head(&["GET", "resp3:missing"]).await,
        "_",
        "RESP3's null"
    );
    assert_eq!(c.call(&["INCR", "resp3:n"]).await, Reply::Integer(1));
    let Reply::Verbatim(keyspace) = c.call(&["INFO", "keyspace"]).await else {
        panic!("INFO is a verbatim string in RESP3")
    };
    let keyspace = String::from_utf8_lossy(&keyspace).into_owned();
    assert!(
        keyspace.starts_with("# Keyspace\r\ndb0:keys=") && keyspace.contains(",expires=0,"),
        "{keyspace}"
    );
    assert_eq!(
        c.call(&["DEL", "resp3:k", "resp3:n"]).await,
        Reply::Integer(2)
    );
    assert_eq!(c.call(&["PING"]).await, Reply::Simple("PONG".into()));
    assert_eq!(c.call(&["CLIENT", "GETNAME"]).await, Reply::bulk("e2e"));
    let Reply::Verbatim(info) = c.call(&["INFO", "server"]).await else {
        panic!("INFO is a verbatim string in RESP3")
    };
    let info = String::from_utf8_lossy(&info).into_owned();
    assert!(info.starts_with("# Server\r\nredis_version:"), "{info}");
    let config = c.call(&["CONFIG", "GET", "proto-max-bulk-len"]).await;
    assert_eq!(
        map_get(&config, "proto-max-bulk-len"),
        Some(&Reply::bulk("67108864"))
    );
    assert_eq!(c.call_head(&["COMMAND", "INFO", "nonesuch"]).await, "*1");
    assert_eq!(
        c.call(&["COMMAND", "INFO", "nonesuch"]).await,
        Reply::Array(vec![Reply::Nil]),
        "a null for an unknown command"
    );

    // Pipelined: the replies after HELLO 2 are RESP2 again, in order.
    c.send(&["GET", "resp3:missing"]).await;
    c.send(&["HELLO", "2"]).await;
    c.send(&["GET", "resp3:missing"]).await;
    let heads: Vec<String> = [
        c.reply_raw().await.1,
        c.reply_raw().await.1,
        c.reply_raw().await.1,
    ]
    .iter()
    .map(|raw| {
        String::from_utf8_lossy(raw)
            .split("\r\n")
            .next()
            .unwrap()
            .to_string()
    })
    .collect();
    assert_eq!(heads, ["_", "*14", "$-1"]);
    assert_eq!(
        c.call(&["HELLO", "4"]).await,
        Reply::error("NOPROTO unsupported protocol version")
    );
    let log = std::fs::read_to_string(&cluster.nodes[&leader].log).unwrap_or_default();
    assert!(
        log.contains("ready: the client port serves requests"),
        "the moment a node is ready is logged:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bulk_string_over_the_limit_is_skipped_and_the_connection_stays_usable() {
    let cluster = TestCluster::start(1);
    cluster.wait_for_leader(BOUND).await;
    let mut c = Raw::connect(&cluster.nodes[&1].client_addr).await;
    let limit = Limits::default().max_bulk_len;
    let header = format!("*3\r\n$3\r\nSET\r\n$9\r\nresp3:big\r\n${}\r\n", limit + 1);
    c.stream.write_all(header.as_bytes()).await.expect("send");
    // Refused as soon as the length is read, before the value arrives.
    let refused = c.reply_raw().await.0;
    assert!(
        matches!(&refused, Reply::Error(e) if e.starts_with("ERR string exceeds maximum allowed size")),
        "{refused:?}"
    );
    let chunk = vec![b'x'; 1 << 20];
    let mut left = limit + 1;
    while left > 0 {
        let n = left.min(chunk.len());
        c.stream.write_all(&chunk[..n]).await.expect("send value");
        left -= n;
    }
    c.stream.write_all(b"\r\n").await.expect("send");
    assert_eq!(c.call(&["PING"]).await, Reply::Simple("PONG".into()));
    assert_eq!(
        c.call(&["GET", "resp3:big"]).await,
        Reply::Nil,
        "nothing was set"
    );
    assert_eq!(c.call(&["SET", "resp3:small", "ok"]).await, Reply::ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_has_not_started_answers_loading_and_still_says_hello() {
    // A new node asked to join a cluster nobody runs waits for an answer (about 10 s) before
    // it gives up: meanwhile its client port is open, and the node not started.
    let mut cluster = TestCluster::configure(1);
    let nobody = format!("127.0.0.1:{}", free_port());
    let cmd = cluster.serve_own_command(1, &["--join".to_string(), nobody]);
    cluster.start_with(1, cmd);
    let mut c = Raw::connect(&cluster.nodes[&1].client_addr).await;
    let loading = Reply::error("LOADING Redis is loading the dataset in memory");
    assert_eq!(c.call(&["PING"]).await, loading);
    assert_eq!(c.call(&["GET", "k"]).await, loading);
    assert_eq!(c.call(&["ECHO", "hi"]).await, Reply::bulk("hi"));
    let hello = c.call(&["HELLO", "3"]).await;
    assert_eq!(map_get(&hello, "proto"), Some(&Reply::Integer(3)));
    let Reply::Verbatim(info) = c.call(&["INFO"]).await else {
        panic!("INFO answers while loading")
    };
    let info = String::from_utf8_lossy(&info).into_owned();
    assert!(info.contains("loading:1\r\n"), "{info}");
    assert!(!info.contains("# Raft"), "{info}");
    assert_eq!(c.call(&["SET", "k", "v"]).await, loading);
}
