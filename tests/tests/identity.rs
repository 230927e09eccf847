//! A data directory's identity with real processes: a node whose directory was wiped is refused
//! when it tries to bootstrap again under its old id, while the cluster serves on; a node whose
//! peers are now written differently (the same ids at other spellings of their addresses) keeps
//! its directory; another cluster token is refused.

use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use e2e::{eventually, TestCluster};

const BOUND: Duration = Duration::from_secs(60);

/// Runs `cmd` until it exits, for up to `bound` (then kills it); its exit status (none if it
/// was still running) and what it wrote to stderr.
fn run_to_exit(
    mut cmd: Command,
    log: &std::path::Path,
    bound: Duration,
) -> (Option<ExitStatus>, String) {
    let file = std::fs::File::create(log).expect("log file");
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .expect("spawning kvstore");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for kvstore") {
            break Some(status);
        }
        if start.elapsed() > bound {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, std::fs::read_to_string(log).unwrap_or_default())
}

/// Gives node `id` a fresh client port before it starts again: its old one may have been taken
/// (as an outgoing connection's port, by anything on the machine) since it was killed, and
/// these tests are about its data directory, not its port.
fn fresh_client_port(cluster: &mut TestCluster, id: u64) {
    let node = cluster.nodes.get_mut(&id).expect("known node");
    node.client_addr = format!("127.0.0.1:{}", e2e::free_port());
}

/// Waits until node `id` has applied everything the cluster committed so far.
async fn caught_up(cluster: &TestCluster, id: u64) {
    let leader = cluster.wait_for_leader(BOUND).await;
    let target = cluster
        .info_number(leader, "commit_index")
        .await
        .expect("leader info");
    eventually(BOUND, "the node catching up", || async move {
        cluster
            .info_number(id, "applied_index")
            .await
            .is_some_and(|a| a >= target)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wiped_node_restarted_with_the_same_peers_is_refused_and_the_cluster_serves_on() {
    let mut cluster = TestCluster::start(3);
    cluster.wait_for_leader(BOUND).await;
    let mut client = cluster.client();
    client.set(b"before", b"the wipe").await.expect("write");
    // Node 3 has talked to the leader (acknowledged the write), so the leader pinned it.
    caught_up(&cluster, 3).await;

    cluster.kill(3);
    std::fs::remove_dir_all(&cluster.nodes[&3].data_dir).expect("wiping node 3");
    fresh_client_port(&mut cluster, 3);
    let log = cluster.dir.path().join("node3-wiped.log");
    let (status, stderr) = run_to_exit(cluster.serve_command(3), &log, BOUND);
    let status = status.unwrap_or_else(|| panic!("the wiped node kept running:\n{stderr}"));
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("member 3 has already been bootstrapped in cluster")
            && stderr.contains("kvstore member remove 3")
            && stderr.contains("kvstore serve --join"),
        "{stderr}"
    );
    assert!(
        !cluster.nodes[&3].data_dir.join("IDENTITY").exists(),
        "a refused node records no identity"
    );

    // The other two serve reads and writes as before.
    client.set(b"after", b"the refusal").await.expect("write");
    let mut survivor = cluster.client_of(1);
    for (k, v) in [
        (&b"before"[..], &b"the wipe"[..]),
        (b"after", b"the refusal"),
    ] {
        assert_eq!(survivor.get(k).await.expect("read").as_deref(), Some(v));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_whose_peers_are_written_differently_keeps_its_directory_and_another_token_is_refused(
) {
    let mut cluster = TestCluster::start(3);
    cluster.wait_for_leader(BOUND).await;
    cluster
        .client()
        .set(b"written", b"before the restart")
        .await
        .expect("write");
    caught_up(&cluster, 3).await;
    cluster.kill(3);
    fresh_client_port(&mut cluster, 3);

    // Another cluster token than the one the directory was bootstrapped with (the default).
    let mut wrong_token = cluster.serve_command(3);
    wrong_token.args(["--cluster-token", "another"]);
    let log = cluster.dir.path().join("node3-token.log");
    let (status, stderr) = run_to_exit(wrong_token, &log, BOUND);
    assert!(status.is_some_and(|s| !s.success()), "{stderr}");
    assert!(stderr.contains("--cluster-token"), "{stderr}");
    fresh_client_port(&mut cluster, 3);

    // The other members as `localhost` (node 3's own address stays as it was: `localhost` may
    // resolve to ::1 first, and the others reach it at 127.0.0.1). The cluster id used to be a
    // hash of this text, and the directory was refused.
    let own = cluster
        .peers
        .split(',')
        .find(|p| p.starts_with("3="))
        .expect("node 3 in --peers")
        .to_string();
    let original = cluster.peers.clone();
    cluster.peers = original
        .split(',')
        .map(|p| {
            if p == own {
                p.to_string()
            } else {
                p.replace("127.0.0.1", "localhost")
            }
        })
        .collect::<Vec<_>>()
        .join(",");
    assert_ne!(cluster.peers, original);
    cluster.start_node(3);
    caught_up(&cluster, 3).await;
    assert!(cluster.is_running(3), "{}", cluster.logs());
    let mut own_client = cluster.client_of(3);
    assert_eq!(
        own_client.get(b"written").await.expect("read").as_deref(),
        Some(&b"before the restart"[..])
    );
    own_client
        .set(b"written", b"through node 3")
        .await
        .expect("write through the moved node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wiped_node_that_bootstraps_while_its_peers_are_down_is_refused_by_them_later() {
    let mut cluster = TestCluster::start(3);
    cluster.wait_for_leader(BOUND).await;
    cluster
        .client()
        .set(b"kept", b"by the majority")
        .await
        .expect("write");
    // Every member pinned node 3's incarnation: a message connection opens with a hello frame
    // that introduces its sender, so followers that never exchanged a Raft message pin each
    // other too. (Before, only the leader had, and a survivor that had not pinned node 3 took
    // the wiped node as it was: the test failed whenever that survivor led.)
    caught_up(&cluster, 3).await;
    for id in 1..=3 {
        cluster.kill(id);
    }
    std::fs::remove_dir_all(&cluster.nodes[&3].data_dir).expect("wiping node 3");
    fresh_client_port(&mut cluster, 3);

    // Nobody answers its probe: it bootstraps a new incarnation after the bounded wait.
    cluster.start_node(3);
    {
        let c = &cluster;
        eventually(BOUND, "node 3 serving INFO", || async move {
            c.info(3).await.is_some()
        })
        .await;
    }
    for id in [1, 2] {
        fresh_client_port(&mut cluster, id);
        cluster.start_node(id);
    }
    let c = &cluster;

    // Its old peers refuse its frames (the incarnation is not the one they pinned) and serve
    // on without it.
    let mut survivors = net::client::KvClient::new(cluster.servers_except(3));
    survivors
        .set(b"written", b"without node 3")
        .await
        .expect("write through the survivors");
    assert_eq!(
        survivors.get(b"kept").await.expect("read").as_deref(),
        Some(&b"by the majority"[..])
    );
    eventually(
        BOUND,
        "both survivors refusing node 3's frames",
        || async move {
            for id in [1, 2] {
                let refused = c.info_number(id, "refused_incarnation_frames").await;
                if refused.unwrap_or(0) == 0 {
                    return false;
                }
            }
            true
        },
    )
    .await;
    let logs = cluster.logs();
    assert!(
        logs.contains("refusing frames from node 3"),
        "the refusal is logged, naming the node:\n{logs}"
    );
    let leader = cluster.wait_for_leader(BOUND).await;
    assert_ne!(leader, 3, "the wiped node must not lead");
}
