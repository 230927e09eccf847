use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::tls::CertAuthority;

/// Writes member `id`'s certificate of `ca` (naming `names`, or the member's usual names) and
/// the CA into `dir`, and returns the files.
fn files(dir: &Path, ca: &CertAuthority, tag: &str, names: Option<&[&str]>) -> PeerTlsFiles {
    let pair = match names {
        None => ca.issue_node(tag.parse().unwrap(), "127.0.0.1").unwrap(),
        Some(names) => ca
            .issue(
                tag,
                &names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
                crate::tls::generate::valid_from_now(Duration::from_secs(3600)),
            )
            .unwrap(),
    };
    let files = PeerTlsFiles {
        cert: dir.join(format!("{tag}.pem")),
        key: dir.join(format!("{tag}-key.pem")),
        ca: dir.join(format!("ca-of-{tag}.pem")),
    };
    std::fs::write(&files.cert, pair.cert_pem).unwrap();
    std::fs::write(&files.key, pair.key_pem).unwrap();
    std::fs::write(&files.ca, ca.pem().cert_pem).unwrap();
    files
}

fn net(files: &PeerTlsFiles) -> PeerTlsNet {
    let metrics = Arc::new(NodeMetrics::new(PathBuf::new()));
    PeerTlsNet::load(files, metrics)
        .unwrap()
        .with_handshake_timeout(Duration::from_secs(2))
}

/// Node 1 listening; accepts one connection and establishes it.
async fn listen(
    node1: &PeerTlsNet,
) -> (
    String,
    tokio::task::JoinHandle<Option<(TlsStream<TcpStream>, PeerIdentity)>>,
) {
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().to_string()
    };
    let mut listener = node1.bind(addr.clone()).await.unwrap();
    let accepted = tokio::spawn(async move {
        let (stream, remote) = listener.accept().await.unwrap();
        let established = listener.establish(stream, remote).await;
        if let Some((mut stream, identity)) = established {
            // Echo one byte, so the dialer sees the connection work.
            let mut b = [0u8; 1];
            stream.read_exact(&mut b).await.ok()?;
            stream.write_all(&b).await.ok()?;
            return Some((stream, identity));
        }
        None
    });
    (addr, accepted)
}

#[tokio::test]
async fn a_peer_speaks_for_the_member_its_certificate_names_and_is_checked_as_the_member_dialed() {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertAuthority::generate("cluster").unwrap();
    let node1 = net(&files(dir.path(), &ca, "1", None));
    let node2 = net(&files(dir.path(), &ca, "2", None));

    let (addr, accepted) = listen(&node1).await;
    let mut dialed = node2
        .connect_member(addr, 1)
        .await
        .expect("node 1 is node 1");
    dialed.write_all(b"x").await.unwrap();
    let mut echo = [0u8; 1];
    dialed.read_exact(&mut echo).await.unwrap();
    let (_, identity) = accepted.await.unwrap().expect("established");
    assert!(identity.names_member(2));
    assert!(
        !identity.admits(3, "127.0.0.1:1"),
        "node 2 claiming to be 3"
    );
    assert!(!identity.admits(1, "127.0.0.1:1"));
    assert_eq!(node1.refusals.counted(Refusal::Identity), 2);

    // Dialing member 3 where member 1 answers fails; dialing "any member" succeeds.
    let (addr, accepted) = listen(&node1).await;
    let wrong = node2.connect_member(addr.clone(), 3).await;
    assert!(wrong.is_err(), "the certificate names member 1, not 3");
    let _ = accepted.await;
    let (addr, accepted) = listen(&node1).await;
    let mut any = node2.connect(addr).await.expect("any member will do");
    any.write_all(b"y").await.unwrap();
    any.read_exact(&mut echo).await.unwrap();
    assert!(accepted.await.unwrap().is_some());
}

#[tokio::test]
async fn another_cas_certificate_and_hostile_bytes_are_refused_at_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertAuthority::generate("cluster").unwrap();
    let other_ca = CertAuthority::generate("intruders").unwrap();
    let node1 = net(&files(dir.path(), &ca, "1", None));
    let intruder = net(&files(dir.path(), &other_ca, "2", None));

    let (addr, accepted) = listen(&node1).await;
    let dialed = intruder.connect_member(addr, 1).await;
    assert!(
        dialed.is_err(),
        "the intruder does not trust node 1's CA either"
    );
    assert!(accepted.await.unwrap().is_none());

    // Plain text, garbage, a huge record header, a stall: each refused within the timeout.
    for bytes in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3],
        &[0u8; 0],
    ] {
        let (addr, accepted) = listen(&node1).await;
        let mut tcp = TcpStream::connect(&addr).await.unwrap();
        tcp.write_all(bytes).await.unwrap();
        let outcome = tokio::time::timeout(Duration::from_secs(30), accepted).await;
        assert!(
            outcome
                .expect("the handshake timeout ends it")
                .unwrap()
                .is_none(),
            "{bytes:?}"
        );
        drop(tcp);
    }
    assert_eq!(node1.refusals.counted(Refusal::Handshake), 4);

    // A certificate of the right CA without a member name.
    let anonymous = net(&files(dir.path(), &ca, "anon", Some(&["localhost"])));
    let (addr, accepted) = listen(&node1).await;
    let mut dialed = anonymous.connect_member(addr, 1).await.unwrap();
    dialed.write_all(b"x").await.unwrap();
    let (_, identity) = accepted.await.unwrap().expect("the CA vouches for it");
    assert!(!(1..=9).any(|id| identity.names_member(id)));
}

#[test]
fn member_names_parse_strictly() {
    assert_eq!(member_of_name("node-3.kvstore.internal"), Some(3));
    assert_eq!(member_of_name("NODE-12.KVSTORE.INTERNAL"), Some(12));
    for not_a_member in [
        "node-03.kvstore.internal",
        "node-.kvstore.internal",
        "node-3.kvstore.internal.evil",
        "xnode-3.kvstore.internal",
        "*.kvstore.internal",
        "node-+3.kvstore.internal",
        "localhost",
    ] {
        assert_eq!(member_of_name(not_a_member), None, "{not_a_member}");
    }
}

#[test]
fn a_node_started_with_another_members_certificate_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertAuthority::generate("cluster").unwrap();
    let node2 = files(dir.path(), &ca, "2", None);
    assert!(check_names_member(&node2, 2).is_ok());
    let e = check_names_member(&node2, 3).unwrap_err();
    let said = e.to_string();
    assert!(said.contains("node-3.kvstore.internal"), "{said}");
    assert!(said.contains("node-2.kvstore.internal"), "{said}");
    let nameless = files(dir.path(), &ca, "plain", Some(&["localhost"]));
    let said = check_names_member(&nameless, 1).unwrap_err().to_string();
    assert!(said.contains("it names localhost"), "{said}");
}
