//! The command line reports a cluster without a quorum as such, within its `--timeout`, naming
//! the servers that are down and those up without a leader.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e::{free_port, kvstore_bin};

/// A bound on the whole command; reaching it fails the test (a hang).
const BOUND: Duration = Duration::from_secs(60);

#[test]
fn a_read_with_two_of_three_nodes_down_says_there_is_no_quorum() {
    let dir = tempfile::tempdir().expect("temp dir");
    let peers: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let clients: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let peer_list = (0..3)
        .map(|i| format!("{}=127.0.0.1:{}", i + 1, peers[i]))
        .collect::<Vec<_>>()
        .join(",");
    // Only node 1 of the three runs: it can never elect a leader.
    let mut node = Command::new(kvstore_bin())
        .args(["serve", "--id", "1", "--peers", &peer_list, "--client-addr"])
        .arg(format!("127.0.0.1:{}", clients[0]))
        .arg("--data-dir")
        .arg(dir.path().join("node1"))
        .env("KVSTORE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn node 1");
    let servers = clients
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut get = Command::new(kvstore_bin())
        .args(["get", "k", "--timeout", "3", "--servers", &servers])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kvstore get");
    let start = Instant::now();
    while get.try_wait().expect("wait").is_none() {
        if start.elapsed() > BOUND {
            let _ = get.kill();
            let _ = node.kill();
            panic!("kvstore get still ran after {BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = get.wait_with_output().expect("output");
    let _ = node.kill();
    let _ = node.wait();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(3),
        "no server could answer: {stderr}"
    );
    assert!(
        stderr.contains("no quorum: 2 of 3 servers unreachable"),
        "{stderr}"
    );
    for p in &clients[1..] {
        assert!(stderr.contains(&format!("127.0.0.1:{p}")), "{stderr}");
    }
    assert!(
        stderr.contains(&format!("127.0.0.1:{} knows no leader", clients[0])),
        "{stderr}"
    );
}
