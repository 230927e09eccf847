//! `kvstore cluster`, the README's first command: it starts, says how to connect, stops cleanly
//! on Ctrl-C (SIGINT), and resumes with all its data when run again.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::{free_port_block, kvstore_bin};
use net::client::KvClient;

const BOUND: Duration = Duration::from_secs(60);

fn start(data_dir: &Path, port: u16, stdout: &Path) -> Child {
    Command::new(kvstore_bin())
        .args(["cluster", "--port", &port.to_string(), "--data-dir"])
        .arg(data_dir)
        .env("KVSTORE_LOG", "warn")
        .stdout(std::fs::File::create(stdout).expect("stdout file"))
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning kvstore cluster")
}

/// Ctrl-C, then the exit status (killing the process if it does not stop within the bound).
fn interrupt(mut child: Child) -> std::process::ExitStatus {
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success(), "sending SIGINT failed");
    let start = Instant::now();
    while start.elapsed() < BOUND {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("kvstore cluster did not stop within {BOUND:?} of Ctrl-C");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_cluster_stops_on_ctrl_c_and_resumes_with_its_data() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let out = dir.path().join("stdout");
    let port = free_port_block();
    let servers: Vec<String> = (0..3).map(|i| format!("127.0.0.1:{}", port + i)).collect();

    let child = start(&data, port, &out);
    let mut client = KvClient::new(servers.clone());
    for k in 0..100 {
        client
            .set(format!("k{k}").as_bytes(), format!("v{k}").as_bytes())
            .await
            .unwrap_or_else(|e| panic!("write k{k}: {e}"));
    }
    let status = interrupt(child);
    assert!(
        status.success(),
        "Ctrl-C must end the cluster cleanly: {status}"
    );
    let printed = std::fs::read_to_string(&out).expect("stdout");
    assert!(
        printed.contains(&format!("redis-cli -p {port}")),
        "the cluster must say how to connect:\n{printed}"
    );
    for n in 1..=3 {
        assert!(data.join(format!("node{n}")).is_dir(), "node{n}'s data dir");
    }

    let child = start(&data, port, &out);
    let mut client = KvClient::new(servers);
    for k in 0..100 {
        let got = client
            .get(format!("k{k}").as_bytes())
            .await
            .unwrap_or_else(|e| panic!("read k{k}: {e}"));
        assert_eq!(
            got.as_deref(),
            Some(format!("v{k}").as_bytes()),
            "k{k} after restart"
        );
    }
    assert!(interrupt(child).success());
}
