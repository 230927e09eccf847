//! The same command scripts against a real redis-server and a 3-node cluster, replies compared
//! (see `e2e::redis_oracle` for the script syntax and the differences forgiven). Adding a script
//! is adding a few lines to [`SCRIPTS`]. redis-server must be installed (.ci/run installs it):
//! without it this test fails.

use std::time::Duration;

use e2e::redis_oracle::{report, split_scripts, Oracle, RedisServer, NORMALISATIONS};
use e2e::TestCluster;

/// The scripts: each starts with a `## name` line; then one command per line, in redis-cli's
/// syntax. Each script uses keys of its own; `keyspace` flushes everything first.
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

## stored integers as Redis parses them
SET si:plus +5
INCR si:plus
SET si:zero 007
INCRBY si:zero 1
SET si:neg -0
DECR si:neg
SET si:sp " 5"
INCR si:sp
SET si:max 9223372036854775807
INCR si:max
GET si:max
APPEND si:app 5
INCR si:app
SET si:big 99999999999999999999
INCR si:big
SET si:min -9223372036854775808
DECR si:min

## RESP3 after HELLO 3
? HELLO 3
GET r3:missing
SET r3:a 10
GET r3:a
INCR r3:a
EXISTS r3:a r3:missing
DEL r3:a
INCRBY r3:a +1
GET
PING
ECHO "\x00x"
? HELLO 2
GET r3:missing

## connection commands
PING
PING hello
ECHO hi
SELECT 0
# SELECT 1 differs by design: one database (db 0), where Redis has 16
CLIENT SETNAME "with space"
CLIENT SETNAME oracle
CLIENT GETNAME
CLIENT NOSUCH
HELLO 4
AUTH x
AUTH default x
? CLIENT ID

## unknown commands
FROBNICATE
frob w:a w:b

## set options
SET so:a 1 NX
SET so:a 2 NX
SET so:a 3 XX GET
GET so:a
SET so:b v XX
SET so:a v NX XX
SET so:a v EX 0
SET so:a v EX abc
SET so:a v EX 10 PX 10
SET so:a v PX
SET so:a v PX 100000
? PTTL so:a
TTL so:a
SET so:a w KEEPTTL
TTL so:a
SET so:a v
TTL so:a
SETNX so:a x
SETNX so:n x
SETEX so:e 100 v
TTL so:e
PSETEX so:e 0 v
SETEX so:e v 100
GETSET so:n y
GETDEL so:n
GETDEL so:n
SET so:past v EXAT 1
GET so:past
EXISTS so:past

## multi-key writes and reads
MSET mk:a 1 mk:b 2
MGET mk:a mk:b mk:c
MSETNX mk:a 9 mk:c 3
MGET mk:a mk:c
MSETNX mk:c 3 mk:d 4
MSET mk:a
MSET
MGET
DEL mk:a mk:b mk:zz
UNLINK mk:c mk:d
UNLINK mk:c

## expire family
SET ex:a v
EXPIRE ex:a 100
TTL ex:a
EXPIRE ex:a 50 GT
EXPIRE ex:a 200 GT
EXPIRE ex:a 300 LT
EXPIRE ex:a 100 NX
EXPIRE ex:a 100 XX
EXPIRE ex:a 100 NX XX
EXPIRE ex:a 100 GT LT
EXPIRE ex:a 100 FOO
EXPIRE ex:a abc
PERSIST ex:a
PERSIST ex:a
TTL ex:a
PTTL ex:a
TTL ex:none
PTTL ex:none
EXPIRETIME ex:a
EXPIRE ex:none 10
PEXPIRE ex:a 100000
? PTTL ex:a
EXPIREAT ex:a 4102444800
EXPIRETIME ex:a
PEXPIRETIME ex:a
PEXPIREAT ex:a 4102444800123
PEXPIRETIME ex:a
EXPIRE ex:a -1
EXISTS ex:a
SET ex:b v
EXPIRE ex:b 100 XX
EXPIRE ex:b 100 GT
EXPIRE ex:b 100 LT
PERSIST ex:b
EXPIRE ex:b 100 XX LT
TTL ex:b

## append, strlen, type, rename
APPEND st:a hello
APPEND st:a " world"
GET st:a
STRLEN st:a
STRLEN st:none
TYPE st:a
TYPE st:none
RENAME st:a st:b
GET st:b
GET st:a
RENAME st:none st:x
RENAMENX st:b st:b
RENAME st:b st:b
SET st:c 1
RENAMENX st:b st:c
EXPIRE st:b 100
RENAME st:b st:d
TTL st:d
RENAMENX st:d st:e
TTL st:e

## keyspace
FLUSHALL
DBSIZE
MSET ks:a 1 ks:b 2 ks:c 3
DBSIZE
? KEYS ks:*
KEYS nomatch*
SCAN 0 MATCH nomatch* COUNT 100
? SCAN 0 COUNT 100
SCAN x
SCAN 0 COUNT 0
SCAN 0 TYPE list
FLUSHDB
DBSIZE
FLUSHALL ASYNC
FLUSHALL NOW

## transactions
MULTI
SET tx:a 1
INCR tx:a
GET tx:a
MGET tx:a tx:none
INCR tx:fresh
EXEC
MULTI
SET tx:b v
INCR tx:b
GET tx:b
EXEC
EXEC
DISCARD
MULTI
SET tx:c 1
DISCARD
GET tx:c
MULTI
MULTI
SET tx:d
EXEC
GET tx:d
MULTI
FROBNICATE
SET tx:d 1
EXEC
GET tx:d
MULTI
EXEC
WATCH
WATCH tx:w
SET tx:w 1
MULTI
GET tx:w
EXEC
WATCH tx:w tx:none
MULTI
GET tx:w
SET tx:none 2
EXEC
MULTI
WATCH tx:w
EXEC
WATCH tx:w
UNWATCH
SET tx:w 3
MULTI
GET tx:w
EXEC
MULTI
SETNX tx:n 1
SETNX tx:n 2
SET tx:e v EX 0
EXEC

## transactions with commands that need no log entry
MULTI
PING
PING tq:hi
ECHO tq:msg
SET tq:a 1
CLIENT SETNAME tq-name
CLIENT GETNAME
SELECT 0
AUTH nopass
GET tq:a
UNWATCH
PING a b
EXEC
CLIENT GETNAME
MULTI
ECHO
PING
EXEC
WATCH tq:w
SET tq:w 1
MULTI
PING
CLIENT SETNAME tq-aborted
EXEC
CLIENT GETNAME
MULTI
PING
CLIENT SETNAME ""
EXEC
CLIENT GETNAME

## watched keys that come and go
WATCH tw:k
SET tw:k 1
DEL tw:k
MULTI
SET tw:out 1
EXEC
GET tw:out
WATCH tw:never
MULTI
SET tw:out 2
EXEC
WATCH tw:p
SET tw:p v PXAT 1
EXISTS tw:p
MULTI
SET tw:out 3
EXEC
GET tw:out
SET tw:src v
WATCH tw:r
RENAME tw:src tw:r
RENAME tw:r tw:src
MULTI
PING
EXEC
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_replies_are_redis_replies() {
    let redis = RedisServer::start();
    let cluster = TestCluster::start(3);
    cluster.wait_for_leader(Duration::from_secs(30)).await;
    let node = cluster.nodes[&1].client_addr.clone();
    let scripts = split_scripts(SCRIPTS);
    assert!(
        scripts.len() >= 12,
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
