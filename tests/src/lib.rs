//! Helpers for end-to-end tests: build the real `kvstore` binary, run clusters of it as child
//! processes on loopback ports, kill and restart them, and poll their state with generous
//! bounds (never timing assertions: the machines are shared and noisy).

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use net::client::{ClientConfig, Credentials, KvClient};
use net::server::parse_info;

pub mod redis_oracle;
pub mod resp_wire;

/// The `kvstore` binary of this build profile, built once per test run.
pub fn kvstore_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test> -> target/<profile>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target profile directory")
            .to_path_buf();
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let mut build = Command::new(env!("CARGO"));
        build.args(["build", "-q", "-p", "net", "--bin", "kvstore"]);
        if release {
            build.arg("--release");
        }
        let status = build.status().expect("running cargo build");
        assert!(status.success(), "building kvstore failed");
        profile_dir.join("kvstore")
    })
    .clone()
}

/// The nodes' log filter: `E2E_KVSTORE_LOG` if set (to debug a failure, for example
/// `E2E_KVSTORE_LOG=info,raft_core=debug`), else what explains a failure without flooding.
fn node_log_filter() -> String {
    std::env::var("E2E_KVSTORE_LOG").unwrap_or_else(|_| "warn,net=info".to_string())
}

/// Starts a port walk at a point of its span drawn from the process id, once per process, so
/// that concurrent test binaries walk different stretches.
fn start_from_pid(next: &std::sync::atomic::AtomicU32, span: u32) {
    use std::sync::atomic::Ordering;
    let _ = next.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(2_654_435_761) % span,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
}

/// A free loopback port for a node to listen on later, taken below the kernel's ephemeral range
/// (32768 and up on Linux): a port bound to 0 and released would be handed out again as the
/// source port of some outgoing connection (the tests open thousands) before the node binds it.
/// Each test process walks its own stretch of the range (from its pid), so concurrent test
/// binaries rarely meet, and a port still in use is skipped.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    start_from_pid(&NEXT, SPAN);
    for _ in 0..SPAN {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {FIRST} and {}", FIRST + SPAN)
}

/// A base port P for `kvstore cluster --port P` with three nodes: the client ports P..P+2, the
/// peer ports P+100..P+102 and the admin ports P+200..P+202 are all free now, and below the ephemeral range (see
/// [`free_port`]). Successive calls in one process walk on, so two tests rarely meet.
pub fn free_port_block() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000 - 203;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    start_from_pid(&NEXT, SPAN);
    for _ in 0..200 {
        let base = (FIRST + NEXT.fetch_add(397, Ordering::SeqCst) % SPAN) as u16;
        let ports = (0..3).flat_map(|i| [base + i, base + 100 + i, base + 200 + i]);
        let held: Vec<_> = ports.map(|p| TcpListener::bind(("127.0.0.1", p))).collect();
        if held.iter().all(Result::is_ok) {
            return base;
        }
    }
    panic!("no free block of ports found below the ephemeral range")
}

pub struct TestNode {
    pub id: u64,
    pub client_addr: String,
    pub peer_addr: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

/// A cluster of `kvstore serve` processes.
pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub peers: String,
    pub nodes: BTreeMap<u64, TestNode>,
    /// Appended to every node's `kvstore serve` command line.
    pub extra_args: Vec<String>,
    /// How the harness's own clients (and `kvstore` commands) log in, for a cluster started
    /// with `--requirepass` or `--users-file`.
    pub login: Option<Credentials>,
}

impl TestCluster {
    /// An `n`-node cluster with every node started.
    pub fn start(n: u64) -> Self {
        let mut cluster = Self::configure(n);
        for id in 1..=n {
            cluster.start_node(id);
        }
        cluster
    }

    /// An `n`-node cluster whose nodes are started one by one with [`Self::start_node`].
    pub fn configure(n: u64) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let peer_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let peers = (1..=n)
            .map(|i| format!("{i}=127.0.0.1:{}", peer_ports[i as usize - 1]))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = BTreeMap::new();
        for id in 1..=n {
            let node = TestNode {
                id,
                client_addr: format!("127.0.0.1:{}", free_port()),
                peer_addr: format!("127.0.0.1:{}", peer_ports[id as usize - 1]),
                data_dir: dir.path().join(format!("node{id}")),
                log: dir.path().join(format!("node{id}.log")),
                child: None,
            };
            nodes.insert(id, node);
        }
        Self {
            dir,
            peers,
            nodes,
            extra_args: Vec::new(),
            login: None,
        }
    }

    pub fn serve_command(&self, id: u64) -> Command {
        let node = &self.nodes[&id];
        let mut cmd = Command::new(kvstore_bin());
        cmd.args([
            "serve",
            "--id",
            &id.to_string(),
            "--peers",
            &self.peers,
            "--client-addr",
            &node.client_addr,
            "--client-addrs",
            &self.client_addrs(),
        ])
        .arg("--data-dir")
        .arg(&node.data_dir)
        .args(["--tick-ms", "50"])
        .args(&self.extra_args)
        .env("KVSTORE_LOG", node_log_filter());
        cmd
    }

    pub fn start_node(&mut self, id: u64) {
        let cmd = self.serve_command(id);
        self.start_with(id, cmd);
    }

    /// Adds node `id` to the harness, with a data directory and ports of its own, neither
    /// started nor a member of the cluster (`kvstore member add` makes it one).
    pub fn configure_node(&mut self, id: u64) {
        let node = TestNode {
            id,
            client_addr: format!("127.0.0.1:{}", free_port()),
            peer_addr: format!("127.0.0.1:{}", free_port()),
            data_dir: self.dir.path().join(format!("node{id}")),
            log: self.dir.path().join(format!("node{id}.log")),
            child: None,
        };
        self.nodes.insert(id, node);
    }

    /// `kvstore serve` for node `id` with its own addresses only (no `--peers`), then `extra`:
    /// a restart on its data directory, or with `--join` a node added to the cluster.
    pub fn serve_own_command(&self, id: u64, extra: &[String]) -> Command {
        let node = &self.nodes[&id];
        let mut cmd = Command::new(kvstore_bin());
        cmd.args(["serve", "--id", &id.to_string()])
            .args(["--peer-addr", &node.peer_addr])
            .args(["--client-addr", &node.client_addr])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--tick-ms", "50"])
            .args(&self.extra_args)
            .args(extra)
            .env("KVSTORE_LOG", node_log_filter());
        cmd
    }

    /// Starts node `id` as `cmd`, logging to its log file.
    pub fn start_with(&mut self, id: u64, mut cmd: Command) {
        let node = self.nodes.get_mut(&id).expect("known node");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("log file");
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning kvstore");
        node.child = Some(child);
    }

    /// The process id of node `id`, while it runs.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.nodes[&id].child.as_ref().map(std::process::Child::id)
    }

    /// Whether node `id`'s process is running (started and not killed or exited).
    pub fn is_running(&mut self, id: u64) -> bool {
        self.nodes
            .get_mut(&id)
            .and_then(|n| n.child.as_mut())
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// kill -9.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.nodes.get_mut(&id).and_then(|n| n.child.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM (a graceful stop: a leader hands its leadership over first), then waits for
    /// the process to exit, killing it if it does not within `bound`. True if it exited by
    /// itself.
    pub fn stop(&mut self, id: u64, bound: Duration) -> bool {
        let Some(mut child) = self.nodes.get_mut(&id).and_then(|n| n.child.take()) else {
            return true;
        };
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        let start = Instant::now();
        while sent && start.elapsed() < bound {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Runs `kvstore ARGS... --servers <every node>` (the command line a user types) and
    /// returns its exit status, stdout and stderr.
    pub fn kvstore(&self, args: &[&str]) -> (bool, String, String) {
        let mut cmd = Command::new(kvstore_bin());
        cmd.args(args)
            .args(["--servers", &self.servers().join(",")]);
        if let Some(login) = &self.login {
            cmd.env("KVSTORE_PASSWORD", &login.password);
            if let Some(user) = &login.user {
                cmd.args(["--user", user]);
            }
        }
        let out = cmd.output().expect("running kvstore");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `1=HOST:PORT,...` of every node's client port.
    pub fn client_addrs(&self) -> String {
        self.nodes
            .values()
            .map(|n| format!("{}={}", n.id, n.client_addr))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn servers(&self) -> Vec<String> {
        self.nodes.values().map(|n| n.client_addr.clone()).collect()
    }

    /// The client addresses of every node but `id`.
    pub fn servers_except(&self, id: u64) -> Vec<String> {
        self.nodes
            .values()
            .filter(|n| n.id != id)
            .map(|n| n.client_addr.clone())
            .collect()
    }

    pub fn client(&self) -> KvClient {
        let cfg = ClientConfig {
            credentials: self.login.clone(),
            ..Default::default()
        };
        KvClient::with_config(self.servers(), cfg)
    }

    /// A client that talks to node `id` only (reads are served from its own state machine).
    pub fn client_of(&self, id: u64) -> KvClient {
        let cfg = ClientConfig {
            follow_leader: false,
            credentials: self.login.clone(),
            ..Default::default()
        };
        KvClient::with_config(vec![self.nodes[&id].client_addr.clone()], cfg)
    }

    /// One INFO field of node `id` as a number, if it answers.
    pub async fn info_number(&self, id: u64, field: &str) -> Option<u64> {
        self.info(id).await?.get(field)?.parse().ok()
    }

    /// Node `id`'s INFO fields, once it has started (None before, or if it does not answer).
    pub async fn info(&self, id: u64) -> Option<BTreeMap<String, String>> {
        let cfg = ClientConfig {
            max_attempts: 1,
            request_timeout: Duration::from_secs(2),
            follow_leader: false,
            credentials: self.login.clone(),
            ..Default::default()
        };
        let mut c = KvClient::with_config(vec![self.nodes[&id].client_addr.clone()], cfg);
        // A node that has not started yet answers INFO too (`loading:1`, no Raft fields).
        c.info()
            .await
            .ok()
            .map(|t| parse_info(&t))
            .filter(|info| info.get("loading").is_none_or(|l| l != "1"))
    }

    /// `HOST:PORT,...` of the peer addresses of `ids`: what `kvstore serve --join` takes.
    pub fn peer_addrs(&self, ids: impl IntoIterator<Item = u64>) -> String {
        ids.into_iter()
            .map(|id| self.nodes[&id].peer_addr.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Waits until node `id` has applied everything the leader had committed when asked.
    pub async fn wait_until_caught_up(&self, id: u64, bound: Duration) {
        let leader = self.wait_for_leader(bound).await;
        let target = self
            .info_number(leader, "commit_index")
            .await
            .expect("leader info");
        let start = Instant::now();
        while start.elapsed() < bound {
            if self
                .info_number(id, "applied_index")
                .await
                .is_some_and(|a| a >= target)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "node {id} did not catch up to {target} within {bound:?}\n{}",
            self.logs()
        );
    }

    /// The id of a node that says it leads, polling for up to `bound`.
    pub async fn wait_for_leader(&self, bound: Duration) -> u64 {
        let start = Instant::now();
        while start.elapsed() < bound {
            for &id in self.nodes.keys() {
                if self.nodes[&id].child.is_none() {
                    continue;
                }
                if let Some(info) = self.info(id).await {
                    if info.get("role").map(String::as_str) == Some("leader") {
                        return id;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no leader within {bound:?}\n{}", self.logs());
    }

    /// The last `lines` lines each node logged.
    pub fn log_tails(&self, lines: usize) -> String {
        self.nodes
            .values()
            .map(|n| {
                let log = std::fs::read_to_string(&n.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(lines).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!(
                    "--- node {} (last {lines} lines) ---\n{}\n",
                    n.id,
                    tail.join("\n")
                )
            })
            .collect()
    }

    /// Everything the nodes logged, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes
            .values()
            .map(|n| {
                format!(
                    "--- node {} ---\n{}",
                    n.id,
                    std::fs::read_to_string(&n.log).unwrap_or_default()
                )
            })
            .collect()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "the test failed; the end of each node's log:\n{}",
                self.log_tails(300)
            );
        }
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.kill(id);
        }
    }
}

/// Polls `check` until it returns true, for up to `bound`.
pub async fn eventually<F, Fut>(bound: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < bound {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen within {bound:?}");
}

/// Writes `prefix{k}` = `value-{k}` for every k in `range` with eight clients in parallel, and
/// adds each acknowledged write to `acked`.
pub async fn write_all(
    servers: Vec<String>,
    prefix: &str,
    range: std::ops::Range<u32>,
    acked: &mut BTreeMap<String, String>,
) {
    let shares: Vec<_> = (0..8u32)
        .map(|c| {
            let servers = servers.clone();
            let keys: Vec<u32> = range.clone().filter(|k| k % 8 == c).collect();
            let prefix = prefix.to_string();
            tokio::spawn(async move {
                let mut client = KvClient::new(servers).starting_at(c as usize);
                let mut done = Vec::new();
                for k in keys {
                    let (key, value) = (format!("{prefix}{k}"), format!("value-{k}"));
                    client
                        .set(key.as_bytes(), value.as_bytes())
                        .await
                        .unwrap_or_else(|e| panic!("write {key}: {e}"));
                    done.push((key, value));
                }
                done
            })
        })
        .collect();
    for s in shares {
        acked.extend(s.await.expect("writer task"));
    }
}

/// Reads every acknowledged key back (eight clients made by `client` in parallel) and checks
/// its value.
pub async fn check_all<F: Fn() -> KvClient>(client: F, acked: &BTreeMap<String, String>) {
    let all: Vec<(String, String)> = acked.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let readers: Vec<_> = (0..8usize)
        .map(|c| {
            let mut client = client();
            let mine: Vec<(String, String)> = all.iter().skip(c).step_by(8).cloned().collect();
            tokio::spawn(async move {
                for (k, v) in mine {
                    let got = client
                        .get(k.as_bytes())
                        .await
                        .unwrap_or_else(|e| panic!("read {k}: {e}"));
                    assert_eq!(
                        got.as_deref(),
                        Some(v.as_bytes()),
                        "acknowledged write of {k} lost"
                    );
                }
            })
        })
        .collect();
    for r in readers {
        if let Err(e) = r.await {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

/// What a [`Writer`] saw.
#[derive(Debug, Default)]
pub struct WriterReport {
    /// Every acknowledged write.
    pub acked: BTreeMap<String, String>,
    /// Every write that got an error, with the error.
    pub failed: Vec<String>,
    /// Attempts that timed out, even when a retry then succeeded.
    pub timed_out_attempts: u64,
    /// The longest a write took (retries included).
    pub slowest: Duration,
}

/// A closed-loop client writing `{prefix}{i}` = `v{i}` one after another until it is
/// finished: the load under which membership changes and restarts must lose no write.
pub struct Writer {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<WriterReport>,
}

impl Writer {
    pub fn start(client: KvClient, prefix: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let prefix = prefix.to_string();
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut client = client;
            let mut report = WriterReport::default();
            let mut i = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let (key, value) = (format!("{prefix}{i}"), format!("v{i}"));
                let start = Instant::now();
                match client.set(key.as_bytes(), value.as_bytes()).await {
                    Ok(()) => {
                        report.acked.insert(key, value);
                    }
                    Err(e) => report.failed.push(format!("{key}: {e}")),
                }
                report.slowest = report.slowest.max(start.elapsed());
                i += 1;
            }
            report.timed_out_attempts = client.timed_out_attempts();
            report
        });
        Self { stop, task }
    }

    /// Stops the writer once its write in flight has an outcome, and returns what it saw.
    pub async fn finish(self) -> WriterReport {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("writer task")
    }
}
