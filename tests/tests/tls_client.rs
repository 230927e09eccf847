//! TLS on the client port, as users meet it: certificates from `kvstore certs`, nodes started
//! with `--tls-cert/--tls-key`, and redis-cli `--tls`, redis-py `ssl=True` and the `kvstore`
//! client commands `--cacert` talking to them; a plain-text client on the TLS port dropped
//! while others are served; client certificates when required; clear start errors; SIGHUP.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use e2e::redis_oracle::redis_tool;
use e2e::{free_port, free_port_block, kvstore_bin, TestCluster};

const BOUND: Duration = Duration::from_secs(60);

/// `kvstore certs` for nodes 1..=n on 127.0.0.1 into `dir`.
fn make_certs(dir: &Path, n: u64) {
    let nodes = (1..=n)
        .map(|i| format!("{i}=127.0.0.1"))
        .collect::<Vec<_>>()
        .join(",");
    let out = Command::new(kvstore_bin())
        .args(["certs", "--nodes", &nodes, "--out"])
        .arg(dir)
        .output()
        .expect("kvstore certs runs");
    assert!(out.status.success(), "kvstore certs: {out:?}");
}

fn tls_args(dir: &Path, id: u64) -> Vec<String> {
    vec![
        "--tls-cert".into(),
        dir.join(format!("node{id}.pem")).display().to_string(),
        "--tls-key".into(),
        dir.join(format!("node{id}-key.pem")).display().to_string(),
    ]
}

/// redis-cli over TLS to `addr` with the CA `ca` (and `extra` arguments), its output.
fn redis_cli_tls(addr: &str, ca: &Path, extra: &[&str], command: &[&str]) -> Output {
    let (host, port) = addr.rsplit_once(':').expect("HOST:PORT");
    Command::new(redis_tool("redis-cli"))
        .args(["-h", host, "-p", port, "--tls", "--cacert"])
        .arg(ca)
        .args(extra)
        .args(command)
        .output()
        .expect("redis-cli runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Retries `kvstore set ready 1 --cacert CA --servers ADDRS` until it succeeds (a leader is
/// elected and the TLS port answers).
fn wait_until_served(addrs: &str, ca: &Path) {
    let start = Instant::now();
    loop {
        let out = Command::new(kvstore_bin())
            .args(["set", "ready", "1", "--servers", addrs, "--cacert"])
            .arg(ca)
            .output()
            .expect("kvstore set runs");
        if out.status.success() {
            return;
        }
        assert!(
            start.elapsed() < BOUND,
            "the TLS cluster never served: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A cluster of `n` nodes whose client ports speak TLS only, with its certificates' directory.
fn tls_cluster(n: u64, extra: &[String]) -> (TestCluster, PathBuf) {
    let mut cluster = TestCluster::configure(n);
    let certs = cluster.dir.path().join("tls");
    make_certs(&certs, n);
    for id in 1..=n {
        let mut cmd = cluster.serve_command(id);
        cmd.args(tls_args(&certs, id)).args(extra);
        cluster.start_with(id, cmd);
    }
    wait_until_served(&cluster.servers().join(","), &certs.join("ca.pem"));
    (cluster, certs)
}

#[test]
fn a_tls_cluster_serves_redis_cli_redis_py_and_the_kvstore_commands() {
    let (cluster, certs) = tls_cluster(3, &[]);
    let ca = certs.join("ca.pem");
    let addrs = cluster.servers();
    let set = redis_cli_tls(&addrs[0], &ca, &[], &["set", "greeting", "hello"]);
    assert_eq!(stdout(&set), "OK", "{set:?}\n{}", cluster.log_tails(40));
    for addr in &addrs {
        let got = redis_cli_tls(addr, &ca, &[], &["get", "greeting"]);
        assert_eq!(stdout(&got), "hello", "{addr}: {got:?}");
    }
    // redis-py with ssl=True, trusting the CA.
    let (host, port) = addrs[1].rsplit_once(':').unwrap();
    let script = format!(
        "import redis\nr = redis.Redis(host='{host}', port={port}, ssl=True, ssl_ca_certs='{}')\n\
         assert r.set('py', 'tls') is True\nassert r.get('py') == b'tls', r.get('py')\n\
         assert r.get('greeting') == b'hello'\nprint('redis-py over TLS: ok')\n",
        ca.display()
    );
    let py = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3 runs");
    assert!(
        py.status.success() && stdout(&py).contains("ok"),
        "redis-py over TLS: {py:?}"
    );
    // The kvstore commands with --cacert, and without it (refused: plain text to a TLS port).
    let servers = addrs.join(",");
    let get = |extra: &[&str]| {
        Command::new(kvstore_bin())
            .args(["get", "py", "--servers", &servers, "--timeout", "3"])
            .args(extra)
            .output()
            .expect("kvstore get runs")
    };
    let ca_text = ca.display().to_string();
    let with_ca = get(&["--cacert", &ca_text]);
    assert_eq!(
        String::from_utf8_lossy(&with_ca.stdout),
        "tls",
        "{with_ca:?}"
    );
    assert!(
        !get(&[]).status.success(),
        "a plain client must not be served"
    );
    let status = Command::new(kvstore_bin())
        .args(["status", "--servers", &servers, "--cacert", &ca_text])
        .output()
        .expect("kvstore status runs");
    assert!(
        status.status.success(),
        "kvstore status over TLS: {status:?}"
    );
    let bench = Command::new(kvstore_bin())
        .args(["bench", "--servers", &servers, "--cacert", &ca_text])
        .args(["--clients", "4", "--ops", "200"])
        .output()
        .expect("kvstore bench runs");
    assert!(
        bench.status.success() && stdout(&bench).contains("ok=200"),
        "kvstore bench over TLS: {bench:?}"
    );
    // A CA that did not sign the servers' certificates: refused.
    let other = cluster.dir.path().join("other");
    make_certs(&other, 1);
    let refused = redis_cli_tls(&addrs[0], &other.join("ca.pem"), &[], &["get", "greeting"]);
    assert_ne!(stdout(&refused), "hello", "{refused:?}");
}

#[test]
fn a_plain_client_on_the_tls_port_is_dropped_and_the_node_serves_others() {
    let (cluster, certs) = tls_cluster(1, &[]);
    let ca = certs.join("ca.pem");
    let addr = &cluster.servers()[0];
    // A client that connects and says nothing holds no one up.
    let stalled = TcpStream::connect(addr).expect("connect");
    // Plain text: the server ends the connection (an alert at most, never a reply).
    let mut plain = TcpStream::connect(addr).expect("connect");
    plain.set_read_timeout(Some(BOUND)).unwrap();
    plain.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !String::from_utf8_lossy(&answer).contains("PONG"),
        "a plain-text client got an answer: {answer:?}"
    );
    // Garbage, then a truncated handshake record.
    for junk in [
        &[0xffu8; 512][..],
        &[0x16, 0x03, 0x01, 0x40, 0x00, 0x01][..],
    ] {
        let mut raw = TcpStream::connect(addr).expect("connect");
        raw.write_all(junk).unwrap();
        drop(raw);
    }
    let pong = redis_cli_tls(addr, &ca, &[], &["ping"]);
    assert_eq!(stdout(&pong), "PONG", "{pong:?}");
    let clients = redis_cli_tls(addr, &ca, &[], &["client", "list"]);
    assert!(clients.status.success(), "{clients:?}");
    let info = redis_cli_tls(addr, &ca, &[], &["info", "clients"]);
    assert!(stdout(&info).contains("connected_clients"), "{info:?}");
    drop(stalled);
}

#[test]
fn a_required_client_certificate_refuses_clients_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("tls");
    make_certs(&certs, 2);
    let ca = certs.join("ca.pem");
    let extra = vec!["--tls-client-ca".to_string(), ca.display().to_string()];
    let mut cluster = TestCluster::configure(1);
    let mut cmd = cluster.serve_command(1);
    cmd.args(tls_args(&certs, 1)).args(&extra);
    cluster.start_with(1, cmd);
    let addr = cluster.servers()[0].clone();
    // Node 2's certificate serves as a client certificate: same CA, client auth.
    let cert = certs.join("node2.pem").display().to_string();
    let key = certs.join("node2-key.pem").display().to_string();
    let start = Instant::now();
    loop {
        let out = Command::new(kvstore_bin())
            .args(["set", "k", "v", "--servers", &addr, "--cacert"])
            .arg(&ca)
            .args(["--cert", &cert, "--key", &key])
            .output()
            .unwrap();
        if out.status.success() {
            break;
        }
        assert!(start.elapsed() < BOUND, "never served: {out:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let with_cert = redis_cli_tls(&addr, &ca, &["--cert", &cert, "--key", &key], &["get", "k"]);
    assert_eq!(stdout(&with_cert), "v", "{with_cert:?}");
    let without = redis_cli_tls(&addr, &ca, &[], &["get", "k"]);
    assert_ne!(
        stdout(&without),
        "v",
        "served without a certificate: {without:?}"
    );
    let out = Command::new(kvstore_bin())
        .args(["get", "k", "--servers", &addr, "--timeout", "3", "--cacert"])
        .arg(&ca)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "kvstore get without a certificate: {out:?}"
    );
}

/// `kvstore serve` with the given TLS flags: it must exit 2 and say `words`.
fn refuses_to_start(cluster: &TestCluster, tls: &[String], words: &str) {
    let out = cluster
        .serve_command(1)
        .args(tls)
        .output()
        .expect("kvstore serve runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(words), "expected `{words}` in:\n{stderr}");
}

#[test]
fn bad_certificate_files_stop_the_start_with_a_clear_error() {
    let cluster = TestCluster::configure(1);
    let certs = cluster.dir.path().join("tls");
    make_certs(&certs, 2);
    let path = |name: &str| certs.join(name).display().to_string();
    let flags = |cert: &str, key: &str| {
        vec![
            "--tls-cert".to_string(),
            path(cert),
            "--tls-key".into(),
            path(key),
        ]
    };
    refuses_to_start(
        &cluster,
        &flags("missing.pem", "node1-key.pem"),
        "does not exist",
    );
    refuses_to_start(
        &cluster,
        &flags("node1.pem", "node2-key.pem"),
        "does not belong",
    );
    refuses_to_start(
        &cluster,
        &flags("node1-key.pem", "node1-key.pem"),
        "no CERTIFICATE",
    );
    let ca = net::tls::CertAuthority::generate("test").unwrap();
    let now = time::OffsetDateTime::now_utc();
    let old = ca
        .issue(
            "old",
            &["127.0.0.1".to_string()],
            (
                now - time::Duration::days(30),
                now - time::Duration::days(1),
            ),
        )
        .unwrap();
    std::fs::write(certs.join("old.pem"), old.cert_pem).unwrap();
    std::fs::write(certs.join("old-key.pem"), old.key_pem).unwrap();
    refuses_to_start(&cluster, &flags("old.pem", "old-key.pem"), "expired");
    let mut only_cert = flags("node1.pem", "node1-key.pem");
    only_cert.truncate(2);
    refuses_to_start(&cluster, &only_cert, "--tls-key");
}

#[test]
fn sighup_reloads_the_certificate_and_a_bad_one_keeps_the_old() {
    let (cluster, certs) = tls_cluster(1, &[]);
    let ca = certs.join("ca.pem");
    let addr = cluster.servers()[0].clone();
    let pid = cluster.pid(1).expect("running").to_string();
    let hup = || {
        let sent = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
        assert!(sent.success());
    };
    let wait_for_log = |words: &str, count: usize| {
        let start = Instant::now();
        while cluster.logs().matches(words).count() < count {
            assert!(
                start.elapsed() < BOUND,
                "no `{words}` in the log:\n{}",
                cluster.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // A half-written certificate: refused, the old one serves on.
    std::fs::write(certs.join("node1.pem"), "-----BEGIN CERT").unwrap();
    hup();
    wait_for_log("not reloaded", 1);
    assert_eq!(stdout(&redis_cli_tls(&addr, &ca, &[], &["ping"])), "PONG");
    // A certificate from a new CA: after SIGHUP only that CA's clients get through.
    let fresh = cluster.dir.path().join("fresh");
    make_certs(&fresh, 1);
    for name in ["node1.pem", "node1-key.pem"] {
        std::fs::copy(fresh.join(name), certs.join(name)).unwrap();
    }
    hup();
    wait_for_log("TLS files reloaded", 1);
    let new_ca = fresh.join("ca.pem");
    assert_eq!(
        stdout(&redis_cli_tls(&addr, &new_ca, &[], &["ping"])),
        "PONG"
    );
    assert_ne!(stdout(&redis_cli_tls(&addr, &ca, &[], &["ping"])), "PONG");
    assert!(cluster.pid(1).is_some());
}

#[test]
fn plain_and_tls_ports_side_by_side() {
    let mut cluster = TestCluster::configure(1);
    let certs = cluster.dir.path().join("tls");
    make_certs(&certs, 1);
    let tls_addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = cluster.serve_command(1);
    cmd.args(tls_args(&certs, 1))
        .args(["--tls-client-addr", &tls_addr]);
    cluster.start_with(1, cmd);
    wait_until_served(&tls_addr, &certs.join("ca.pem"));
    let plain = &cluster.servers()[0];
    let (host, port) = plain.rsplit_once(':').unwrap();
    let out = Command::new(redis_tool("redis-cli"))
        .args(["-h", host, "-p", port, "get", "ready"])
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "1", "the plain port: {out:?}");
    let out = redis_cli_tls(&tls_addr, &certs.join("ca.pem"), &[], &["get", "ready"]);
    assert_eq!(stdout(&out), "1", "the TLS port: {out:?}");
}

#[test]
fn the_local_cluster_with_tls_makes_its_certificates_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port_block();
    let run = || {
        let stdout = dir.path().join("stdout");
        let child = Command::new(kvstore_bin())
            .args([
                "cluster",
                "--tls",
                "--port",
                &port.to_string(),
                "--data-dir",
            ])
            .arg(&data)
            .env("KVSTORE_LOG", "warn")
            .stdout(std::fs::File::create(&stdout).unwrap())
            .spawn()
            .expect("kvstore cluster runs");
        let ca = data.join("tls/ca.pem");
        let start = Instant::now();
        while !ca.exists() {
            assert!(start.elapsed() < BOUND, "no CA made");
            std::thread::sleep(Duration::from_millis(50));
        }
        let servers: Vec<String> = (0..3).map(|i| format!("127.0.0.1:{}", port + i)).collect();
        wait_until_served(&servers.join(","), &ca);
        (child, stdout)
    };
    let (mut child, stdout_path) = run();
    let printed = std::fs::read_to_string(&stdout_path).unwrap();
    assert!(printed.contains("--tls --cacert"), "{printed}");
    // The peer ports speak TLS too: bytes that are no handshake get a TLS alert record (type
    // 21), where a plain peer port would wait for a frame or close without a word.
    let mut peer = std::net::TcpStream::connect(("127.0.0.1", port + 100)).unwrap();
    peer.set_read_timeout(Some(BOUND)).unwrap();
    std::io::Write::write_all(&mut peer, b"not a TLS handshake, not a frame either").unwrap();
    let mut first = [0u8; 1];
    std::io::Read::read_exact(&mut peer, &mut first).expect("the peer port answers");
    assert_eq!(first[0], 0x15, "a TLS alert from the peer port");
    let first_ca = std::fs::read(data.join("tls/ca.pem")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("tls/node1-key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let _ = child.wait();
    let (mut child, _) = run();
    assert_eq!(
        std::fs::read(data.join("tls/ca.pem")).unwrap(),
        first_ca,
        "the CA was remade"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn kvstore_backup_over_tls_is_complete_and_a_wrong_ca_is_refused() {
    let (cluster, certs) = tls_cluster(1, &[]);
    let ca = certs.join("ca.pem");
    let addr = cluster.servers()[0].clone();
    let set = redis_cli_tls(&addr, &ca, &[], &["set", "kept", "over-tls"]);
    assert_eq!(stdout(&set), "OK", "{set:?}");
    let backup = |ca: &Path, out: &Path| {
        Command::new(kvstore_bin())
            .args(["backup", "--servers", &addr, "--timeout", "10", "--cacert"])
            .arg(ca)
            .arg("--out")
            .arg(out)
            .output()
            .expect("kvstore backup runs")
    };
    let file = cluster.dir.path().join("tls.kvbak");
    let taken = backup(&ca, &file);
    assert!(taken.status.success(), "backup over TLS: {taken:?}");
    let verified = Command::new(kvstore_bin())
        .args(["backup", "--verify"])
        .arg(&file)
        .output()
        .expect("kvstore backup --verify runs");
    assert!(
        verified.status.success() && stdout(&verified).contains("  2 keys"),
        "the image should hold `ready` and `kept`: {verified:?}"
    );
    // A CA that did not sign the server's certificate: refused, and nothing is left behind.
    let other = cluster.dir.path().join("other");
    make_certs(&other, 1);
    let refused_file = cluster.dir.path().join("refused.kvbak");
    let refused = backup(&other.join("ca.pem"), &refused_file);
    let err = String::from_utf8_lossy(&refused.stderr).to_string();
    assert!(
        !refused.status.success(),
        "a wrong CA was accepted: {refused:?}"
    );
    assert!(err.contains(&addr), "{err}");
    assert!(
        !refused_file.exists(),
        "a refused backup left {refused_file:?}"
    );
}
