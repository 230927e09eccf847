use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::generate::valid_from_now;
use super::*;
use crate::transport::{Listener, Net, TokioNet};

/// A CA and node 1's certificate, written as `ca.pem`, `node1.pem`, `node1-key.pem`.
struct Files {
    dir: tempfile::TempDir,
    ca: CertAuthority,
}

impl Files {
    fn new() -> Files {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertAuthority::generate("test CA").unwrap();
        let files = Files { dir, ca };
        files.write("ca.pem", &files.ca.pem().cert_pem);
        files.write_pair("node1", &files.ca.issue_node(1, "127.0.0.1").unwrap());
        files
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        std::fs::write(self.path(name), text).unwrap();
        self.path(name)
    }

    fn write_pair(&self, stem: &str, pair: &PemPair) {
        self.write(&format!("{stem}.pem"), &pair.cert_pem);
        self.write(&format!("{stem}-key.pem"), &pair.key_pem);
    }

    fn server(&self, stem: &str) -> ServerTlsFiles {
        ServerTlsFiles::new(
            self.path(&format!("{stem}.pem")),
            self.path(&format!("{stem}-key.pem")),
        )
    }
}

fn expect_err<T>(result: Result<T, TlsError>) -> TlsError {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

fn mentions(e: &TlsError, path: &Path, words: &str) {
    let text = e.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains(words), "{text}");
}

#[test]
fn a_generated_node_certificate_loads_and_names_its_member() {
    let files = Files::new();
    files.server("node1").load().unwrap();
    let identity = load_identity(&files.path("node1.pem"), &files.path("node1-key.pem")).unwrap();
    let names = certificate_dns_names(&identity.chain[0]);
    assert_eq!(names, vec!["node-1.kvstore.internal", "localhost"]);
    let ca = load_ca_bundle(&files.path("ca.pem")).unwrap();
    check_signed_by(
        &files.path("node1.pem"),
        &identity.chain,
        &files.path("ca.pem"),
        &ca,
    )
    .unwrap();
}

#[test]
fn a_missing_file_is_named() {
    let files = Files::new();
    let mut server = files.server("node1");
    server.cert = files.path("nope.pem");
    let e = expect_err(server.load());
    assert!(matches!(e, TlsError::Read { .. }));
    mentions(&e, &files.path("nope.pem"), "does not exist");
}

#[test]
fn a_file_that_is_not_pem_or_holds_the_wrong_thing_is_named() {
    let files = Files::new();
    let mut server = files.server("node1");
    server.cert = files.write("text.pem", "just some text\n");
    mentions(
        &expect_err(server.load()),
        &server.cert,
        "holds no CERTIFICATE",
    );
    server.cert = files.write(
        "broken.pem",
        "-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n",
    );
    mentions(&expect_err(server.load()), &server.cert, "not valid PEM");
    // The key given as the certificate, and the certificate as the key.
    let swapped = ServerTlsFiles::new(files.path("node1-key.pem"), files.path("node1.pem"));
    mentions(
        &expect_err(swapped.load()),
        &swapped.cert,
        "holds no CERTIFICATE",
    );
    let mut server = files.server("node1");
    server.key = files.path("node1.pem");
    mentions(
        &expect_err(server.load()),
        &server.key,
        "holds no PRIVATE KEY",
    );
    server.cert = files.write(
        "garbage-der.pem",
        "-----BEGIN CERTIFICATE-----\nAAECAwQ=\n-----END CERTIFICATE-----\n",
    );
    mentions(
        &expect_err(server.load()),
        &server.cert,
        "malformed certificate",
    );
}

#[test]
fn a_key_of_another_certificate_is_refused() {
    let files = Files::new();
    files.write_pair("node2", &files.ca.issue_node(2, "127.0.0.1").unwrap());
    let mut server = files.server("node1");
    server.key = files.path("node2-key.pem");
    let e = expect_err(server.load());
    assert!(matches!(e, TlsError::KeyMismatch { .. }), "{e}");
    mentions(&e, &server.key, "does not belong to certificate");
}

#[test]
fn an_expired_or_not_yet_valid_certificate_is_refused() {
    let files = Files::new();
    let now = OffsetDateTime::now_utc();
    let day = time::Duration::days(1);
    let names = vec!["localhost".to_string()];
    let expired = files
        .ca
        .issue("old", &names, (now - day * 30, now - day))
        .unwrap();
    files.write_pair("expired", &expired);
    let e = expect_err(files.server("expired").load());
    assert!(matches!(e, TlsError::Expired { .. }), "{e}");
    mentions(&e, &files.path("expired.pem"), "expired on");
    let future = files
        .ca
        .issue("new", &names, (now + day, now + day * 30))
        .unwrap();
    files.write_pair("future", &future);
    let e = expect_err(files.server("future").load());
    assert!(matches!(e, TlsError::NotYetValid { .. }), "{e}");
    // An expired CA bundle too.
    let old_ca = CertAuthority::generate_valid("old CA", (now - day * 30, now - day)).unwrap();
    let old_ca_path = files.write("old-ca.pem", &old_ca.pem().cert_pem);
    assert!(matches!(
        load_ca_bundle(&old_ca_path),
        Err(TlsError::Expired { .. })
    ));
}

#[test]
fn a_certificate_of_another_ca_is_refused_where_a_ca_is_required() {
    let files = Files::new();
    let other = CertAuthority::generate("other CA").unwrap();
    files.write_pair("stranger", &other.issue_node(1, "127.0.0.1").unwrap());
    let mut server = files.server("stranger");
    server.cert_signed_by = Some(files.path("ca.pem"));
    let e = expect_err(server.load());
    assert!(matches!(e, TlsError::NotSignedByCa { .. }), "{e}");
    mentions(&e, &files.path("stranger.pem"), "issued by another CA");
    let mut ours = files.server("node1");
    ours.cert_signed_by = Some(files.path("ca.pem"));
    ours.load().unwrap();
}

#[test]
fn a_failed_reload_keeps_the_configuration_in_force() {
    let files = Files::new();
    let server = files.server("node1");
    let holder = Reloadable::load("test", move || server.load()).unwrap();
    let first = holder.current();
    std::fs::write(files.path("node1.pem"), "half written").unwrap();
    assert!(holder.reload().is_err());
    assert!(Arc::ptr_eq(&first, &holder.current()));
    files.write_pair("node1", &files.ca.issue_node(1, "127.0.0.1").unwrap());
    holder.reload().unwrap();
    assert!(!Arc::ptr_eq(&first, &holder.current()));
}

async fn tls_listener(
    server: &ServerTlsFiles,
    timeout: Duration,
) -> (TlsListener<TcpListener>, String) {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap().to_string();
    let server = server.clone();
    let config = Reloadable::load("test", move || server.load()).unwrap();
    (TlsListener::new(tcp, config, timeout), addr)
}

fn client_net(files: &Files, identity: Option<&str>) -> TlsNet<TokioNet> {
    let mut client = ClientTlsFiles::new(files.path("ca.pem"));
    client.identity = identity.map(|stem| {
        (
            files.path(&format!("{stem}.pem")),
            files.path(&format!("{stem}-key.pem")),
        )
    });
    TlsNet::client(TokioNet, Reloadable::fixed(client.load().unwrap()))
}

/// Accepts one connection and echoes one line's worth of bytes; returns the handshake's
/// outcome and the DNS names of the client's certificate.
async fn serve_one(mut listener: TlsListener<TcpListener>) -> std::io::Result<Vec<String>> {
    let (mut stream, _) = listener.accept().await?;
    stream.handshake().await?;
    let names = stream
        .peer_certificates()
        .and_then(|c| c.first())
        .map(certificate_dns_names)
        .unwrap_or_default();
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf).await?;
    stream.write_all(&buf[..n]).await?;
    stream.flush().await?;
    Ok(names)
}

#[tokio::test]
async fn a_client_trusting_the_ca_talks_to_the_server_and_checks_its_name() {
    let files = Files::new();
    let (listener, addr) = tls_listener(&files.server("node1"), DEFAULT_HANDSHAKE_TIMEOUT).await;
    let server = tokio::spawn(serve_one(listener));
    let mut stream = client_net(&files, None)
        .connect(addr.clone())
        .await
        .unwrap();
    stream.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 5];
    stream.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello");
    assert_eq!(server.await.unwrap().unwrap(), Vec::<String>::new());
    // The certificate names node 1, not node 2.
    let (listener, addr) = tls_listener(&files.server("node1"), DEFAULT_HANDSHAKE_TIMEOUT).await;
    let _server = tokio::spawn(serve_one(listener));
    let net = client_net(&files, None).with_server_name(node_dns_name(2));
    assert!(net.connect(addr).await.is_err());
}

#[tokio::test]
async fn a_required_client_certificate_must_come_from_the_ca() {
    let files = Files::new();
    files.write_pair("client", &files.ca.issue_node(7, "127.0.0.1").unwrap());
    let other = CertAuthority::generate("other CA").unwrap();
    files.write_pair("stranger", &other.issue_node(7, "127.0.0.1").unwrap());
    let mut server = files.server("node1");
    server.client_ca = Some(files.path("ca.pem"));
    for (identity, accepted) in [
        (Some("client"), true),
        (None, false),
        (Some("stranger"), false),
    ] {
        let (listener, addr) = tls_listener(&server, DEFAULT_HANDSHAKE_TIMEOUT).await;
        let served = tokio::spawn(serve_one(listener));
        // TLS 1.3 clients learn of the refusal on their first read, not at connect.
        if let Ok(mut stream) = client_net(&files, identity).connect(addr).await {
            let _ = stream.write_all(b"hi").await;
            let mut buf = [0u8; 2];
            let _ = stream.read_exact(&mut buf).await;
        }
        let outcome = served.await.unwrap();
        assert_eq!(outcome.is_ok(), accepted, "{identity:?}: {outcome:?}");
        if accepted {
            assert_eq!(outcome.unwrap()[0], node_dns_name(7));
        }
    }
}

/// Sends `bytes` raw to a TLS listener (then stalls or closes) and returns what the server's
/// stream made of it.
async fn hostile(bytes: &[u8], close: bool, timeout: Duration) -> std::io::Error {
    let files = Files::new();
    let (mut listener, addr) = tls_listener(&files.server("node1"), timeout).await;
    let mut raw = TcpStream::connect(addr).await.unwrap();
    let (mut stream, _) = listener.accept().await.unwrap();
    raw.write_all(bytes).await.unwrap();
    if close {
        drop(raw);
        let mut buf = [0u8; 16];
        return stream.read(&mut buf).await.unwrap_err();
    }
    let mut buf = [0u8; 16];
    let e = stream.read(&mut buf).await.unwrap_err();
    drop(raw);
    e
}

#[tokio::test]
async fn hostile_handshakes_end_in_an_error_without_a_panic() {
    let long = DEFAULT_HANDSHAKE_TIMEOUT;
    // A plain-text Redis client on the TLS port.
    hostile(b"*1\r\n$4\r\nPING\r\n", false, long).await;
    // Garbage before any handshake.
    hostile(&[0xff; 4096], false, long).await;
    // A handshake record header promising more than arrives, then the client leaves.
    hostile(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00], true, long).await;
    // A client that says nothing: the handshake timeout ends it.
    let e = hostile(b"", false, Duration::from_millis(200)).await;
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
    // Half a handshake, then silence.
    let e = hostile(
        &[0x16, 0x03, 0x01, 0x02, 0x00],
        false,
        Duration::from_millis(200),
    )
    .await;
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
}

#[test]
fn host_of_strips_the_port_and_brackets() {
    assert_eq!(stream::host_of("127.0.0.1:6379"), "127.0.0.1");
    assert_eq!(stream::host_of("[::1]:6379"), "::1");
    assert_eq!(stream::host_of("localhost"), "localhost");
    let _ = valid_from_now(Duration::from_secs(1));
}
