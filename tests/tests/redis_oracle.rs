//! The same command scripts against a real redis-server and a 3-node cluster, replies compared
//! (see `e2e::redis_oracle` for the script syntax and the differences forgiven). Adding a script
//! is adding a few lines to [`SCRIPTS`]. redis-server must be installed (.ci/run installs it):
//! without it this test fails.

use std::time::Duration;

use e2e::redis_oracle::{report, split_scripts, Oracle, RedisServer, NORMALISATIONS};
use e2e::TestCluster;

/// The scripts: each starts with a `## name` line; then one command per line, in redis-cli's
/// syntax. Until the cluster knows FLUSHALL, each script uses keys of its own.
const SCRIPTS: &str = r#"
## strings
SET s:a hello
GET s:a
GET s:missing
SET s:a ""
GET s:a
SET s:bin "\x00\xff\r\n end"
GET s:bin
set s:case lower
GeT s:case

## exists and del
SET e:1 x
SET e:2 y
EXISTS e:1
EXISTS e:1 e:2 e:1 e:none
DEL e:1
DEL e:1
EXISTS e:1
DEL e:2 e:none
EXISTS e:2

## incr family
INCR i:n
INCR i:n
INCRBY i:n 10
DECR i:n
DECRBY i:n 5
INCRBY i:n -3
DECRBY i:n -4
INCR i:missing-then-decr
DECR i:fresh
SET i:max 9223372036854775806
INCR i:max
INCR i:max
GET i:max
SET i:min -9223372036854775807
DECR i:min
DECR i:min
DECRBY i:other -9223372036854775808
INCRBY i:other -9223372036854775808
SET i:word abc
INCR i:word
GET i:word

## integer arguments as Redis parses them
INCRBY a:n 0
INCRBY a:n +5
INCRBY a:n 007
INCRBY a:n -0
INCRBY a:n 00
INCRBY a:n " 5"
INCRBY a:n "5 "
INCRBY a:n ""
INCRBY a:n -
INCRBY a:n 1e3
INCRBY a:n 0x10
INCRBY a:n 1.0
INCRBY a:n 9223372036854775808
INCRBY a:n -9223372036854775809
INCRBY a:n 99999999999999999999
INCRBY a:n "5\x00"
DECRBY a:n 007
DECRBY a:n +1
DECRBY a:n -1
GET a:n
INCRBY a:big 9223372036854775807
INCRBY a:small -9223372036854775808

## wrong arity
GET
GET w:a w:b
SET w:a
EXISTS
DEL
INCR
INCR w:a w:b
DECR
INCRBY w:a
DECRBY w:a 1 2
get

## unknown commands
FROBNICATE
frob w:a w:b
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_replies_are_redis_replies() {
    let redis = RedisServer::start();
    let cluster = TestCluster::start(3);
    cluster.wait_for_leader(Duration::from_secs(30)).await;
    let node = cluster.nodes[&1].client_addr.clone();
    let scripts = split_scripts(SCRIPTS);
    assert!(
        scripts.len() >= 6,
        "{:?}",
        scripts.iter().map(|s| s.0).collect::<Vec<_>>()
    );
    let mismatches = tokio::task::spawn_blocking(move || {
        let mut oracle = Oracle::connect(&redis, &node);
        scripts
            .into_iter()
            .flat_map(|(name, script)| oracle.run(name, script))
            .collect::<Vec<_>>()
    })
    .await
    .expect("oracle task");
    assert!(
        mismatches.is_empty(),
        "{} replies differ from redis-server's (forgiven differences: {}):\n{}",
        mismatches.len(),
        NORMALISATIONS
            .iter()
            .map(|n| n.name)
            .collect::<Vec<_>>()
            .join(", "),
        report(&mismatches)
    );
}

/// The comparison has teeth: two redis-servers differ in their ports, and CONFIG GET port is
/// reported, with its line and both replies, unless the line asks for the shape only.
#[test]
fn a_differing_reply_is_reported() {
    let redis = RedisServer::start();
    let other = RedisServer::start();
    let mut oracle = Oracle::connect(&redis, &other.addr);
    let found = oracle.run("teeth", "PING\nCONFIG GET port\n? CONFIG GET port");
    assert_eq!(found.len(), 1, "{}", report(&found));
    assert_eq!(
        (found[0].line, found[0].command.as_str()),
        (2, "CONFIG GET port")
    );
    let port = |addr: &str| addr.rsplit(':').next().unwrap_or_default().to_string();
    assert_eq!(
        found[0].redis,
        format!("[\"port\", \"{}\"]", port(&redis.addr))
    );
    assert_eq!(
        found[0].ours,
        format!("[\"port\", \"{}\"]", port(&other.addr))
    );
}
