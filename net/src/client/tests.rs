use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// A server at a local port that answers every request with `reply`.
async fn scripted_server(reply: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {
                    if stream.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn client(servers: Vec<String>) -> KvClient<TokioNet> {
    let cfg = ClientConfig {
        max_attempts: 4,
        backoff: Duration::from_millis(1),
        follow_leader: false,
        ..ClientConfig::default()
    };
    KvClient::over(TokioNet, servers, cfg, 7)
}

#[tokio::test]
async fn a_removed_node_sends_the_client_on_to_another_server() {
    let removed = scripted_server("-REMOVED this node was removed from the cluster\r\n").await;
    let member = scripted_server("$1\r\nv\r\n").await;
    let mut client = client(vec![removed, member]);
    assert_eq!(client.get(b"k").await.unwrap().as_deref(), Some(&b"v"[..]));
}

#[tokio::test]
async fn a_write_refused_by_a_removed_node_after_a_timeout_elsewhere_may_still_be_applied() {
    // The first attempt timed out (it may have been applied); the removed node's refusal says
    // nothing about it, so the outcome stays unknown rather than failed.
    let timed_out = scripted_server("-TIMEOUT no outcome within the request timeout\r\n").await;
    let removed = scripted_server("-REMOVED this node was removed from the cluster\r\n").await;
    let mut client = client(vec![timed_out, removed]);
    match client.set(b"k", b"v").await {
        Err(ClientError::Unavailable { maybe_applied, .. }) => assert!(maybe_applied),
        other => panic!("expected an unknown outcome, got {other:?}"),
    }
}
