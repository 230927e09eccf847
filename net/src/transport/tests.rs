use super::*;
use raft_core::MessageBody;

fn msg() -> Message {
    Message {
        from: 1,
        to: 2,
        term: 3,
        body: MessageBody::Heartbeat {
            commit: 4,
            read_round: 5,
        },
    }
}

#[test]
fn frames_round_trip_and_name_the_wrong_cluster() {
    let mut buf = BytesMut::new();
    encode_frame(42, 9, 2, &msg(), &mut buf);
    let len = buf.get_u32() as usize;
    assert_eq!(len, buf.len());
    let body = buf.freeze();
    let sender = Sender {
        node_id: 1,
        incarnation: 9,
    };
    let tagged = RangeMessage {
        range: 2,
        msg: msg(),
    };
    assert_eq!(decode_frame(42, body.clone()), Ok((sender, tagged)));
    // A header naming another node than the message is refused.
    let mut forged = body.to_vec();
    forged[13 + 7] = 2;
    assert_eq!(
        decode_frame(42, Bytes::from(forged)),
        Err(FrameError::NotFromSender {
            header: 2,
            message: 1
        })
    );
    assert_eq!(
        decode_frame(43, body),
        Err(FrameError::WrongCluster {
            ours: 43,
            theirs: 42
        })
    );
}

#[test]
fn a_frame_names_its_range_and_the_first_range_costs_one_byte() {
    let mut first = BytesMut::new();
    encode_frame(42, 9, kv::ranges::FIRST_RANGE, &msg(), &mut first);
    assert_eq!(
        first.len(),
        4 + FRAME_HEADER_LEN + 1 + codec::encoded_len(&msg())
    );
    let mut far = BytesMut::new();
    encode_frame(42, 9, u64::MAX, &msg(), &mut far);
    assert_eq!(far.len(), first.len() + 9);
    let (_, got) = decode_frame(42, far.freeze().slice(4..)).unwrap();
    assert_eq!((got.range, got.msg), (u64::MAX, msg()));
    // A malformed range id is refused with what is wrong, and never read as a message.
    let body = first.freeze().slice(4..);
    let mut zero = body.to_vec();
    zero[FRAME_HEADER_LEN] = 0;
    let refused = decode_frame(42, Bytes::from(zero)).unwrap_err();
    assert_eq!(refused, FrameError::RangeId(RangeIdError::Zero));
    assert!(refused.to_string().contains("range id 0"), "{refused}");
    let cut = body.slice(..FRAME_HEADER_LEN);
    assert_eq!(
        decode_frame(42, cut),
        Err(FrameError::RangeId(RangeIdError::Truncated))
    );
    // A frame of the previous version (no range id) is refused by its version, which says
    // the peer is older.
    let mut old = body.to_vec();
    old[4] = FRAME_VERSION - 1;
    let refused = decode_frame(42, Bytes::from(old)).unwrap_err();
    assert_eq!(refused, FrameError::UnknownVersion(FRAME_VERSION - 1));
    assert!(refused.to_string().contains("older"), "{refused}");
}

#[test]
fn hostile_frames_are_refused() {
    assert!(matches!(
        check_frame_len(u32::MAX as usize),
        Err(FrameError::TooLarge { .. })
    ));
    assert!(matches!(check_frame_len(3), Err(FrameError::TooShort(3))));
    let mut garbage = BytesMut::new();
    garbage.put_u32(0xdead_beef);
    garbage.put_slice(&[0u8; 40]);
    assert_eq!(
        decode_frame(1, garbage.freeze()),
        Err(FrameError::BadMagic(0xdead_beef))
    );
    crate::fuzzing::peer_frame(&[
        0, 0, 0, 13, 0x4B, 0x56, 0x52, 0x46, 1, 0, 0, 0, 0, 0, 0, 0, 7,
    ]);
}

#[test]
fn a_hello_carries_its_sender_and_address_and_hostile_ones_are_errors() {
    let me = Sender {
        node_id: 3,
        incarnation: 9,
    };
    let mut out = BytesMut::new();
    encode_hello(7, me, "10.0.0.3:7100", &mut out);
    let body = &out[4..];
    assert_eq!(
        out.len() - 4,
        u32::from_be_bytes([out[0], out[1], out[2], out[3]]) as usize
    );
    assert_eq!(
        decode_hello(7, body).unwrap(),
        (me, "10.0.0.3:7100".to_string())
    );
    assert!(decode_hello(8, body).is_err(), "another cluster");
    for cut in 0..body.len() {
        assert!(
            decode_hello(7, &body[..cut]).is_err(),
            "prefix of {cut} bytes"
        );
    }
    let mut long = body.to_vec();
    long.push(b'x');
    assert!(decode_hello(7, &long).is_err(), "trailing bytes");
    let mut not_utf8 = body.to_vec();
    let last = not_utf8.len() - 1;
    not_utf8[last] = 0xff;
    assert!(decode_hello(7, &not_utf8).is_err());
    let mut too_long = BytesMut::new();
    encode_hello(7, me, &"a".repeat(300), &mut too_long);
    assert_eq!(decode_hello(7, &too_long[4..]).unwrap().1, "", "left out");
}

#[tokio::test]
async fn frames_split_across_reads_or_packed_into_one_come_out_whole() {
    let mut wire = BytesMut::new();
    let messages: Vec<Message> = (0..50)
        .map(|i| Message {
            to: 2 + i % 3,
            ..msg()
        })
        .collect();
    for m in &messages {
        encode_frame(42, 9, 1, m, &mut wire);
    }
    // A pipe of 7 bytes: every frame arrives in pieces.
    let (mut writer, mut reader) = tokio::io::duplex(7);
    let sent = wire.clone();
    tokio::spawn(async move { writer.write_all(&sent).await });
    let mut frames = FrameReader::default();
    for m in &messages {
        let body = frames
            .next(&mut reader, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(decode_frame(42, body).unwrap().1.msg, *m);
    }
    assert!(matches!(
        frames.next(&mut reader, Duration::from_secs(5)).await,
        Err(FrameReadError::Closed)
    ));
    // All in one read, then a length over the limit: refused before its body is read.
    let (mut writer, mut reader) = tokio::io::duplex(1 << 16);
    wire.put_u32(u32::MAX);
    writer.write_all(&wire).await.unwrap();
    let mut frames = FrameReader::default();
    for m in &messages {
        let body = frames.next(&mut reader, Duration::from_secs(5)).await;
        assert_eq!(decode_frame(42, body.unwrap()).unwrap().1.msg, *m);
    }
    assert!(matches!(
        frames.next(&mut reader, Duration::from_secs(5)).await,
        Err(FrameReadError::Refused(FrameError::TooLarge { .. }))
    ));
}

#[tokio::test]
async fn a_message_after_the_peer_closed_an_idle_connection_is_sent_on_a_new_one() {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (queue, rx) = mpsc::channel(16);
    let (unreachable, _unreachable_rx) = mpsc::unbounded_channel();
    let me = Sender {
        node_id: 1,
        incarnation: 5,
    };
    tokio::spawn(run_outbound(
        TokioNet,
        2,
        addr,
        (7, me, "127.0.0.1:1".into()),
        TransportTimeouts::default(),
        rx,
        unreachable,
    ));
    // The first connection brings its hello; then the peer closes it, as it does idle ones.
    let (mut first, _) = listener.accept().await.unwrap();
    let mut hello = vec![0u8; 4 + FRAME_HEADER_LEN + 2 + "127.0.0.1:1".len()];
    first.read_exact(&mut hello).await.unwrap();
    drop(first);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let tagged = RangeMessage {
        range: 7_000,
        msg: msg(),
    };
    queue.send(tagged.clone()).await.unwrap();
    // The message comes on a second connection, after its hello.
    let (mut second, _) =
        tokio::time::timeout(std::time::Duration::from_secs(5), listener.accept())
            .await
            .expect("the message was written to the closed connection and lost")
            .unwrap();
    let mut again = vec![0u8; hello.len()];
    second.read_exact(&mut again).await.unwrap();
    assert_eq!(again, hello);
    let mut len = [0u8; 4];
    second.read_exact(&mut len).await.unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    second.read_exact(&mut body).await.unwrap();
    let (sender, got) = decode_frame(7, Bytes::from(body)).unwrap();
    assert_eq!((sender, got), (me, tagged));
}
