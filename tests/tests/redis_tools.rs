//! The real Redis tools against a 3-node cluster: redis-benchmark's tests and redis-cli's
//! `--stat`, `--scan` and `--bigkeys` run without errors and show what the cluster holds.
//! The tools must be installed (.ci/run installs redis-tools): without them these tests fail.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use e2e::redis_oracle::redis_tool;
use e2e::resp_wire::RespConn;
use e2e::TestCluster;

const BOUND: Duration = Duration::from_secs(30);

/// A cluster with a leader, and the leader's host and port.
async fn cluster_and_port() -> (TestCluster, String) {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(BOUND).await;
    let port = cluster.nodes[&leader]
        .client_addr
        .rsplit(':')
        .next()
        .expect("port")
        .to_string();
    (cluster, port)
}

/// Writes `count` keys through raw RESP: `tool:N` holds N+1 bytes, so the last is the biggest.
fn write_keys(cluster: &TestCluster, count: usize) {
    let mut conn = RespConn::connect(&cluster.nodes[&1].client_addr).expect("connect");
    for n in 0..count {
        let value = "x".repeat(n + 1);
        let reply = conn
            .call_str(&["SET", &format!("tool:{n}"), &value])
            .expect("SET reply");
        assert!(!reply.is_error(), "SET tool:{n}: {reply}");
    }
}

fn run(tool: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(redis_tool(tool))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {tool}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// redis-benchmark's name for each test `-t` selects.
const BENCHMARK_TESTS: &[(&str, &[&str])] = &[
    ("ping", &["PING_INLINE", "PING_MBULK"]),
    ("set", &["SET"]),
    ("get", &["GET"]),
    ("incr", &["INCR"]),
    ("mset", &["MSET (10 keys)"]),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_benchmark_runs_its_tests_without_errors() {
    let (cluster, port) = cluster_and_port().await;
    let tests: Vec<&str> = BENCHMARK_TESTS.iter().map(|(t, _)| *t).collect();
    let (ok, out, err) = run(
        "redis-benchmark",
        &["-p", &port, "-q", "-n", "10000", "-t", &tests.join(",")],
    );
    let said = format!("stdout:\n{out}\nstderr:\n{err}\n{}", cluster.log_tails(50));
    assert!(ok, "redis-benchmark failed: {said}");
    assert!(!out.contains("ERR") && !err.contains("ERR"), "{said}");
    // With -q each test ends with one line `NAME: N requests per second, p50=...`; progress
    // lines before it end in a carriage return.
    let finished: Vec<&str> = out
        .split(['\r', '\n'])
        .filter(|l| l.contains("requests per second"))
        .map(str::trim)
        .collect();
    for name in BENCHMARK_TESTS.iter().flat_map(|(_, names)| names.iter()) {
        assert!(
            finished.iter().any(|l| l.starts_with(&format!("{name}: "))),
            "no result for {name}: {said}"
        );
    }
}

/// `redis-cli --stat` for a few intervals: every row shows the key count and figures (a field
/// INFO lacks shows as a huge negative number).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_stat_shows_the_figures() {
    let (cluster, port) = cluster_and_port().await;
    write_keys(&cluster, 20);
    // redis-cli buffers a pipe fully; stdbuf makes it write each row as it comes.
    let mut child = Command::new("stdbuf")
        .arg("-oL")
        .arg(redis_tool("redis-cli"))
        .args(["-p", &port, "--stat", "-i", "0.2"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("redis-cli --stat");
    let stdout = child.stdout.take().expect("stdout");
    let lines: Vec<String> = BufReader::new(stdout)
        .lines()
        .take(6)
        .map(|l| l.expect("a line"))
        .collect();
    let _ = child.kill();
    let _ = child.wait();
    let text = lines.join("\n");
    assert!(lines[1].starts_with("keys "), "{text}");
    for row in &lines[2..] {
        let fields: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(fields.first(), Some(&"20"), "keys column: {text}");
        assert!(
            !row.contains("-9223372036854775808"),
            "a missing field: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_scan_lists_every_key() {
    let (cluster, port) = cluster_and_port().await;
    write_keys(&cluster, 250);
    let (ok, out, err) = run("redis-cli", &["-p", &port, "--scan"]);
    assert!(ok && err.is_empty(), "{out}\n{err}");
    let mut keys: Vec<&str> = out.lines().collect();
    keys.sort_unstable();
    let mut want: Vec<String> = (0..250).map(|n| format!("tool:{n}")).collect();
    want.sort_unstable();
    assert_eq!(keys, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_bigkeys_finds_the_biggest_string() {
    let (cluster, port) = cluster_and_port().await;
    write_keys(&cluster, 30);
    let (ok, out, err) = run("redis-cli", &["-p", &port, "--bigkeys"]);
    let said = format!("{out}\n{err}");
    assert!(ok && !out.contains("ERR") && !err.contains("ERR"), "{said}");
    assert!(out.contains("Sampled 30 keys"), "{said}");
    assert!(
        out.contains("Biggest string found '\"tool:29\"' has 30 bytes"),
        "{said}"
    );
    assert!(out.contains("30 strings with 465 bytes"), "{said}");
}
