//! `kvstore cluster` fails loudly: when one node cannot start (a port taken: client, peer or
//! admin; a data directory that belongs to another cluster) the command stops the other nodes
//! and exits non-zero with that node's reason, without printing its "connect" banner first.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use e2e::{free_port_block, kvstore_bin};
use net::client::KvClient;

/// A bound on how long the command may take to give up; reaching it fails the test (a hang).
const BOUND: Duration = Duration::from_secs(60);

fn cluster_command(data_dir: &Path, port: u16, token: &str) -> Command {
    let mut cmd = Command::new(kvstore_bin());
    cmd.args([
        "cluster",
        "--port",
        &port.to_string(),
        "--cluster-token",
        token,
    ])
    .arg("--data-dir")
    .arg(data_dir)
    .env("KVSTORE_LOG", "warn")
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    cmd
}

/// Runs the command to its end, killing it (and failing) if it outlives [`BOUND`].
fn run_to_end(mut cmd: Command) -> Output {
    let mut child = cmd.spawn().expect("spawning kvstore cluster");
    let start = Instant::now();
    while start.elapsed() < BOUND {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("output");
    panic!(
        "kvstore cluster was still running after {BOUND:?} although a node could not start;\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn assert_failed_loudly(out: &Output, reason: &str) {
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        !out.status.success(),
        "the command must fail: {}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    assert!(
        stderr.contains(reason),
        "stderr must name the reason ({reason}):\n{stderr}"
    );
    assert!(
        !stdout.contains("connect:"),
        "no success banner before every node has started:\n{stdout}"
    );
}

/// Holds the port at `offset` from a free block's base while the cluster starts on that block.
fn taken_port_stops_the_cluster(offset: u16) {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port_block();
    let taken = port + offset;
    let _squatter = TcpListener::bind(("127.0.0.1", taken)).expect("hold the port");
    let out = run_to_end(cluster_command(&dir.path().join("data"), port, "t"));
    assert_failed_loudly(&out, &format!("127.0.0.1:{taken}"));
}

#[test]
fn a_taken_client_port_stops_the_cluster_with_the_port_named() {
    taken_port_stops_the_cluster(1);
}

#[test]
fn a_taken_peer_port_stops_the_cluster_with_the_port_named() {
    taken_port_stops_the_cluster(102);
}

#[test]
fn a_taken_admin_port_stops_the_cluster_with_the_port_named() {
    taken_port_stops_the_cluster(201);
}

/// Runs a cluster until it has taken a write, then stops it with Ctrl-C.
async fn create_cluster(data_dir: &Path, port: u16, token: &str) {
    let mut child = cluster_command(data_dir, port, token)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning kvstore cluster");
    let servers: Vec<String> = (0..3).map(|i| format!("127.0.0.1:{}", port + i)).collect();
    let mut client = KvClient::new(servers);
    let written = client.set(b"k", b"v").await;
    let stopped = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(stopped.success(), "sending SIGINT failed");
    let status = child.wait().expect("wait");
    written.expect("the new cluster takes a write");
    assert!(status.success(), "the cluster stops cleanly: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_directory_of_another_cluster_stops_the_cluster() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ours, theirs) = (dir.path().join("ours"), dir.path().join("theirs"));
    let port = free_port_block();
    create_cluster(&ours, port, "ours").await;
    create_cluster(&theirs, port, "theirs").await;
    std::fs::remove_dir_all(ours.join("node2")).expect("remove node2");
    std::fs::rename(theirs.join("node2"), ours.join("node2")).expect("move node2");
    let out = run_to_end(cluster_command(&ours, port, "ours"));
    assert_failed_loudly(&out, "node 2");
}
