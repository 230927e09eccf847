//! Mutual TLS between peers: a cluster whose nodes accept and dial peers only with
//! certificates of the cluster CA naming the member they claim to be. It elects, replicates and
//! catches a killed node up by snapshot over TLS; a process holding another CA's certificate
//! cannot send Raft messages or join; a certificate of the right CA naming member 2 cannot
//! speak for member 3. The admin endpoint over TLS wants its bearer token for /metrics.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use e2e::{check_all, eventually, free_port, write_all, TestCluster};
use net::peer_header::Sender;
use net::tls::{CertAuthority, ClientTlsFiles, TlsStream};
use net::transport::{RaftMessage, RaftMessageBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BOUND: Duration = Duration::from_secs(90);

/// A CA's certificate file, and its certificates for members, written into `dir`.
struct Pki {
    dir: PathBuf,
    ca: CertAuthority,
}

impl Pki {
    fn new(dir: &Path, name: &str) -> Self {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).expect("pki dir");
        let ca = CertAuthority::generate(name).expect("a CA");
        std::fs::write(dir.join("ca.pem"), ca.pem().cert_pem).expect("ca.pem");
        Pki { dir, ca }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Member `id`'s certificate and key files.
    fn node(&self, id: u64) -> (PathBuf, PathBuf) {
        let (cert, key) = (
            self.dir.join(format!("node{id}.pem")),
            self.dir.join(format!("node{id}-key.pem")),
        );
        if !cert.exists() {
            let pair = self
                .ca
                .issue_node(id, "127.0.0.1")
                .expect("a node certificate");
            std::fs::write(&cert, pair.cert_pem).expect("cert");
            std::fs::write(&key, pair.key_pem).expect("key");
        }
        (cert, key)
    }

    /// `--peer-tls-*` for a node presenting member `id`'s certificate.
    fn serve_args(&self, id: u64) -> Vec<String> {
        let (cert, key) = self.node(id);
        vec![
            "--peer-tls-cert".into(),
            cert.display().to_string(),
            "--peer-tls-key".into(),
            key.display().to_string(),
            "--peer-tls-ca".into(),
            self.ca_file().display().to_string(),
        ]
    }
}

fn start_tls_node(cluster: &mut TestCluster, pki: &Pki, id: u64, extra: &[String]) {
    let mut cmd = cluster.serve_command(id);
    cmd.args(pki.serve_args(id)).args(extra);
    cluster.start_with(id, cmd);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mutual_tls_cluster_elects_replicates_and_catches_a_killed_node_up_by_snapshot() {
    let mut cluster = TestCluster::configure(3);
    let pki = Pki::new(cluster.dir.path(), "cluster-ca");
    cluster.extra_args = ["--snapshot-threshold", "200", "--snapshot-tail", "50"]
        .map(String::from)
        .to_vec();
    for id in 1..=3 {
        start_tls_node(&mut cluster, &pki, id, &[]);
    }
    let leader = cluster.wait_for_leader(BOUND).await;
    let mut acked = BTreeMap::new();
    write_all(cluster.servers(), "before-", 0..100, &mut acked).await;
    let lagging = if leader == 3 { 2 } else { 3 };
    cluster.kill(lagging);
    write_all(
        cluster.servers_except(lagging),
        "while-down-",
        0..1500,
        &mut acked,
    )
    .await;
    start_tls_node(&mut cluster, &pki, lagging, &[]);
    cluster.wait_until_caught_up(lagging, BOUND).await;
    assert!(
        cluster
            .info_number(lagging, "snapshots_installed")
            .await
            .is_some_and(|n| n >= 1),
        "1,500 entries behind a tail of 50: a snapshot, sent over TLS\n{}",
        cluster.logs()
    );
    check_all(|| cluster.client_of(lagging), &acked).await;
    let logs = cluster.logs();
    assert!(
        !logs.contains("claims to be member"),
        "members of the cluster are never refused:\n{logs}"
    );
}

/// A TLS connection to `addr` trusting `trusted_ca`, presenting `cert` and `key`, expecting the
/// server to be member `member`.
async fn dial(
    addr: &str,
    trusted_ca: &Path,
    (cert, key): (PathBuf, PathBuf),
    member: u64,
) -> std::io::Result<TlsStream<TcpStream>> {
    let files = ClientTlsFiles {
        ca: trusted_ca.to_path_buf(),
        identity: Some((cert, key)),
    };
    let config = files.load().expect("client configuration");
    let tcp = TcpStream::connect(addr).await?;
    let name = net::tls::node_dns_name(member);
    let mut stream = TlsStream::connect(tcp, config, &name, Duration::from_secs(10)).await?;
    // TLS 1.3: a refused client certificate shows on the first read after the handshake.
    stream.flush().await?;
    Ok(stream)
}

/// Sends a hello from `claimed` and a heartbeat of `term` from it to node 1, over `stream`,
/// then waits until node 1 closes the connection or a few seconds pass.
async fn speak_as(mut stream: TlsStream<TcpStream>, cluster_id: u64, claimed: Sender, term: u64) {
    let mut out = BytesMut::new();
    net::transport::encode_hello(cluster_id, claimed, "", &mut out);
    let heartbeat = RaftMessage {
        from: claimed.node_id,
        to: 1,
        term,
        body: RaftMessageBody::Heartbeat {
            commit: 0,
            read_round: 0,
        },
    };
    let first = kv::ranges::FIRST_RANGE;
    net::transport::encode_frame(cluster_id, claimed.incarnation, first, &heartbeat, &mut out);
    let _ = stream.write_all(&out).await;
    let _ = stream.flush().await;
    let mut buf = [0u8; 64];
    let _ = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf)).await;
}

/// Node `id`'s `kvstore_peer_connections_refused_total` for `reason`, from its admin port.
async fn refused(admin_addr: &str, reason: &str) -> u64 {
    let text = http_get(admin_addr, "/metrics").await;
    let wanted = format!("kvstore_peer_connections_refused_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&wanted))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {wanted} in\n{text}"))
}

async fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.expect("admin port");
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.expect("request");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text).await;
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_cas_certificate_or_another_members_name_never_reaches_the_core() {
    let mut cluster = TestCluster::configure(3);
    let pki = Pki::new(cluster.dir.path(), "cluster-ca");
    let intruders = Pki::new(cluster.dir.path(), "intruder-ca");
    let admin = format!("127.0.0.1:{}", free_port());
    start_tls_node(
        &mut cluster,
        &pki,
        1,
        &["--admin-addr".into(), admin.clone()],
    );
    for id in 2..=3 {
        start_tls_node(&mut cluster, &pki, id, &[]);
    }
    cluster.wait_for_leader(BOUND).await;
    let node1 = cluster.nodes[&1].peer_addr.clone();
    let cluster_id = kv::bootstrap_cluster_id("kvstore", [1, 2, 3]);
    let incarnation_3 = cluster.info(3).await.expect("node 3 info")["incarnation"].clone();
    let node3 = Sender {
        node_id: 3,
        incarnation: u64::from_str_radix(incarnation_3.trim_start_matches("0x"), 16)
            .expect("incarnation"),
    };
    let term = cluster.info_number(1, "term").await.expect("term");
    let forged_term = term + 1000;
    let term_of_1 = || async { cluster.info_number(1, "term").await.unwrap_or(0) };

    // Another CA's certificate naming member 3, trusting the cluster CA (which is public): the
    // handshake fails, three times over; the refusal is logged once and counted each time.
    for _ in 0..3 {
        if let Ok(stream) = dial(&node1, &pki.ca_file(), intruders.node(3), 1).await {
            speak_as(stream, cluster_id, node3, forged_term).await;
        }
    }
    eventually(BOUND, "the handshake refusals counted", || async {
        refused(&admin, "tls_handshake").await >= 3
    })
    .await;
    // Nor can it join: the join request is never answered.
    let intruder_net = net::tls::TlsNet::client(
        net::transport::TokioNet,
        net::tls::Reloadable::fixed(
            ClientTlsFiles {
                ca: pki.ca_file(),
                identity: Some(intruders.node(4)),
            }
            .load()
            .expect("config"),
        ),
    )
    .with_server_name(net::tls::node_dns_name(1));
    let asked = net::join::ask(&intruder_net, &node1, 4, Duration::from_secs(5)).await;
    assert!(asked.is_err(), "another CA's node was answered: {asked:?}");
    let log1 = std::fs::read_to_string(&cluster.nodes[&1].log).unwrap_or_default();
    assert_eq!(
        log1.matches("TLS handshake failed").count(),
        1,
        "logged once for the peer, not once per connection:\n{log1}"
    );

    // The right CA, a certificate naming member 2, claiming to be member 3.
    let before = refused(&admin, "certificate_identity").await;
    let stream = dial(&node1, &pki.ca_file(), pki.node(2), 1)
        .await
        .expect("the CA vouches for member 2");
    speak_as(stream, cluster_id, node3, forged_term).await;
    eventually(BOUND, "the identity refusal counted", || async {
        refused(&admin, "certificate_identity").await > before
    })
    .await;
    let log1 = std::fs::read_to_string(&cluster.nodes[&1].log).unwrap_or_default();
    assert!(
        log1.contains("claims to be member 3"),
        "the refusal names the claim:\n{log1}"
    );
    assert!(
        term_of_1().await < forged_term,
        "a refused frame reached the core"
    );
    // The same forged join, with member 2's certificate asking as 4: refused too.
    let member2_net = net::tls::TlsNet::client(
        net::transport::TokioNet,
        net::tls::Reloadable::fixed(
            ClientTlsFiles {
                ca: pki.ca_file(),
                identity: Some(pki.node(2)),
            }
            .load()
            .expect("config"),
        ),
    )
    .with_server_name(net::tls::node_dns_name(1));
    assert!(
        net::join::ask(&member2_net, &node1, 4, Duration::from_secs(5))
            .await
            .is_err()
    );
    // Member 4's own certificate is answered: the refusals above are the certificates'.
    let member4_net = net::tls::TlsNet::client(
        net::transport::TokioNet,
        net::tls::Reloadable::fixed(
            ClientTlsFiles {
                ca: pki.ca_file(),
                identity: Some(pki.node(4)),
            }
            .load()
            .expect("config"),
        ),
    )
    .with_server_name(net::tls::node_dns_name(1));
    let answer = net::join::ask(&member4_net, &node1, 4, Duration::from_secs(5))
        .await
        .expect("a join request from member 4's certificate is answered");
    assert_eq!(answer.cluster_id, cluster_id);

    // The control: the same frames with member 3's own certificate reach the core, whose term
    // jumps. (Without it, the test would pass as well if forged frames were never read at all.)
    let stream = dial(&node1, &pki.ca_file(), pki.node(3), 1)
        .await
        .expect("member 3's certificate");
    speak_as(stream, cluster_id, node3, forged_term).await;
    eventually(BOUND, "the forged term reaching node 1", || async {
        term_of_1().await >= forged_term
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_admin_endpoint_over_tls_wants_the_bearer_token_for_metrics() {
    let mut cluster = TestCluster::configure(1);
    let pki = Pki::new(cluster.dir.path(), "cluster-ca");
    let admin = format!("127.0.0.1:{}", free_port());
    let token_file = cluster.dir.path().join("admin-token");
    std::fs::write(&token_file, "correct-horse\n").expect("token file");
    start_tls_node(
        &mut cluster,
        &pki,
        1,
        &[
            "--admin-addr".into(),
            admin.clone(),
            "--admin-tls".into(),
            "--admin-token-file".into(),
            token_file.display().to_string(),
        ],
    );
    cluster.wait_for_leader(BOUND).await;
    let config = ClientTlsFiles::new(pki.ca_file()).load().expect("config");
    let get = |path: &'static str, token: Option<&'static str>| {
        let (config, admin) = (Arc::clone(&config), admin.clone());
        async move {
            let tcp = TcpStream::connect(&admin).await.expect("admin port");
            let mut s = TlsStream::connect(tcp, config, "127.0.0.1", Duration::from_secs(10))
                .await
                .expect("an HTTPS handshake");
            let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
            let request =
                format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
            s.write_all(request.as_bytes()).await.expect("request");
            let mut text = String::new();
            let _ = s.read_to_string(&mut text).await;
            text
        }
    };
    let status = |text: &str| text.split(' ').nth(1).unwrap_or("").to_string();
    assert_eq!(status(&get("/metrics", None).await), "401");
    assert_eq!(status(&get("/metrics", Some("wrong-horse")).await), "401");
    let scraped = get("/metrics", Some("correct-horse")).await;
    assert_eq!(status(&scraped), "200", "{scraped}");
    assert!(scraped.contains("kvstore_peer_connections_refused_total"));
    // Probes need no token.
    assert_eq!(status(&get("/ready", None).await), "200");
    // Plain HTTP on the TLS port gets no answer, and the port keeps serving.
    let plain = tokio::time::timeout(Duration::from_secs(15), http_get(&admin, "/ready")).await;
    assert!(!plain.unwrap_or_default().contains("200 OK"));
    // Health is decided on each tick, so it may trail an election by one tick: a single node
    // that has just elected itself can still read "Candidate" for up to 50 ms.
    eventually(
        BOUND,
        "/health answering 200 over TLS without a token",
        || async { status(&get("/health", None).await) == "200" },
    )
    .await;
}
