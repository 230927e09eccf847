//! redis-py 8, with its default settings (RESP3: it opens every connection with HELLO 3),
//! against a 3-node cluster: the checks are in tests/clients/redis_py_check.py, one stage per
//! test. python3 and redis-py must be installed (.ci/run installs them): without them these
//! tests fail.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use e2e::TestCluster;

const BOUND: Duration = Duration::from_secs(30);

fn check_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/redis_py_check.py")
}

/// `python3 redis_py_check.py STAGE ADDRS`, its output checked for success.
fn python_stage(stage: &str, addrs: &str) -> Command {
    let mut cmd = Command::new("python3");
    cmd.arg(check_script()).args([stage, addrs]);
    cmd
}

#[track_caller]
fn assert_stage_passed(stage: &str, out: &Output, cluster: &TestCluster) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("No module named 'redis'") {
        panic!(
            "redis-py is not installed (`python3 -m pip install redis==8.1.0`, as .ci/run does)"
        );
    }
    assert!(
        out.status.success() && stdout.contains(&format!("{stage}: ok")),
        "redis-py stage {stage} failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}\n{}",
        out.status,
        cluster.log_tails(60)
    );
}

/// Runs one stage of the script against a new 3-node cluster.
async fn run_stage(stage: &str) {
    let cluster = TestCluster::start(3);
    cluster.wait_for_leader(BOUND).await;
    let out = python_stage(stage, &cluster.servers().join(","))
        .output()
        .expect("python3 runs (installed by .ci/run)");
    assert_stage_passed(stage, &out, &cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_py_with_its_defaults_runs_the_basic_commands() {
    run_stage("basic").await;
}

/// `r.pipeline()` (MULTI/EXEC), WATCH aborting it, `r.transaction`, an error inside EXEC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_py_pipeline_is_a_transaction() {
    run_stage("transaction").await;
}

/// SET EX/PX, SETEX, EXPIRE, PEXPIRE, EXPIREAT, TTL, PTTL, PERSIST; expired keys gone everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_py_ttls() {
    run_stage("ttl").await;
}

/// `scan_iter` with MATCH and COUNT on every node, DBSIZE, KEYS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_py_scan_iter_walks_every_key() {
    run_stage("scan").await;
}

/// A `SET NX PX` lock, released by its holder through WATCH/MULTI, or by its expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_py_set_nx_px_lock() {
    run_stage("lock").await;
}

/// redis-py writes key after key starting on node 1; node 1 is killed (-9) after 50 writes and
/// the client goes on through the other nodes; node 1 is restarted after 150, and at the end
/// every key reads back from every node, the restarted one included (it caught up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_py_goes_on_through_a_node_restart() {
    let mut cluster = TestCluster::start(3);
    cluster.wait_for_leader(BOUND).await;
    let mut child = python_stage("restart", &cluster.servers().join(","))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (installed by .ci/run)");
    let mut stdin = child.stdin.take().expect("stdin");
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut seen = Vec::new();
    for line in stdout.lines() {
        let Ok(line) = line else { break };
        match line.as_str() {
            "wrote 50" => cluster.kill(1),
            "wrote 150" => cluster.start_node(1),
            "wrote 300" => {
                writeln!(stdin, "restarted").expect("telling the script");
            }
            _ => {}
        }
        seen.push(line);
    }
    let out = child.wait_with_output().expect("the script's end");
    let out = Output {
        stdout: seen.join("\n").into_bytes(),
        ..out
    };
    assert_stage_passed("restart", &out, &cluster);
    assert!(seen.iter().any(|l| l == "verified"), "{seen:?}");
}

/// The same stages against a keyspace split into five ranges at keys that fall among each
/// stage's keys (SCAN walks two ranges, the TTL keys live in two, single-key commands meet
/// ranges led by different nodes) but never between the keys of one multi-key write, which a
/// split keyspace refuses as Redis Cluster does (CROSSSLOT).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_py_with_its_defaults_works_against_a_split_keyspace() {
    let cluster = TestCluster::start(3);
    cluster.wait_for_leader(BOUND).await;
    for at in ["py:n", "sc:150", "ttl:s", "tx:"] {
        let (ok, out, err) = cluster.kvstore(&["split", at]);
        assert!(ok, "kvstore split {at}: {out}{err}");
    }
    let (_, ranges, _) = cluster.kvstore(&["ranges"]);
    assert_eq!(ranges.lines().count(), 5, "{ranges}");
    // The scan stage counts every key there is: it goes first.
    for stage in ["scan", "basic", "transaction", "ttl", "lock"] {
        let out = python_stage(stage, &cluster.servers().join(","))
            .output()
            .expect("python3 runs (installed by .ci/run)");
        assert_stage_passed(stage, &out, &cluster);
    }
}
