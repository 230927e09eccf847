use super::*;

fn corrupt_byte(path: &Path, at: usize) {
    let mut b = fs::read(path).unwrap();
    b[at] ^= 1;
    fs::write(path, &b).unwrap();
}

/// A version-1 file as the previous release wrote it.
fn version_1_file(node_id: u64, cluster_id: u64) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(MAGIC);
    b.push(1);
    codec::put_u64(&mut b, node_id);
    codec::put_u64(&mut b, cluster_id);
    codec::seal(&mut b);
    b
}

#[test]
fn identity_is_recorded_and_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("node");
    Identity::new(1, 77).ensure(&d).unwrap();
    Identity::new(1, 77).ensure(&d).unwrap();
    assert_eq!(Identity::read(&d).unwrap(), Some(Identity::new(1, 77)));

    let e = Identity::new(2, 77).ensure(&d).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::IdentityMismatch { .. }));
    assert!(
        msg.contains("node 1 of cluster 0x000000000000004d"),
        "{msg}"
    );
    assert!(
        msg.contains("node 2 of cluster 0x000000000000004d"),
        "{msg}"
    );

    let msg = Identity::new(1, 78).ensure(&d).unwrap_err().to_string();
    assert!(
        msg.contains("cluster 0x000000000000004d") && msg.contains("cluster 0x000000000000004e"),
        "{msg}"
    );
}

#[test]
fn a_new_directory_is_created_once_and_then_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("node");
    assert_eq!(Identity::open_recorded(&d, 3, None, 99).unwrap(), None);
    let id = Identity {
        node_id: 3,
        cluster_id: 1234,
        incarnation: 0xfeed,
        token_digest: token_digest("prod"),
    };
    id.create(&d).unwrap();
    // The recorded id wins; the incarnation offered for an upgrade is not used.
    assert_eq!(Identity::open_recorded(&d, 3, None, 99).unwrap(), Some(id));
    assert_eq!(
        Identity::open_recorded(&d, 3, Some("prod"), 99).unwrap(),
        Some(id)
    );
    // Creating over an existing identity is refused, whatever it says.
    assert!(matches!(
        id.create(&d).unwrap_err(),
        Error::InvalidRequest(_)
    ));
    // Incarnation 0 means "unknown" and is never recorded.
    let e = Identity {
        incarnation: UNKNOWN,
        ..id
    }
    .create(&dir.path().join("other"))
    .unwrap_err();
    assert!(e.to_string().contains("incarnation"), "{e}");
}

#[test]
fn another_node_id_or_another_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let id = Identity {
        node_id: 3,
        cluster_id: 1234,
        incarnation: 5,
        token_digest: token_digest("prod"),
    };
    id.create(dir.path()).unwrap();
    let e = Identity::open_recorded(dir.path(), 4, None, 9).unwrap_err();
    assert!(matches!(e, Error::IdentityMismatch { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("node 3 of cluster 0x00000000000004d2"),
        "{e}"
    );
    let e = Identity::open_recorded(dir.path(), 3, Some("staging"), 9).unwrap_err();
    assert!(matches!(e, Error::ClusterTokenMismatch { .. }), "{e}");
    assert!(e.to_string().contains("--cluster-token"), "{e}");
    // Nothing was changed by the refusals.
    assert_eq!(Identity::read(dir.path()).unwrap(), Some(id));
}

#[test]
fn a_version_1_file_is_upgraded_once_with_the_offered_incarnation() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(IDENTITY_FILE), version_1_file(2, 4242)).unwrap();
    let read = Identity::read(dir.path()).unwrap().unwrap();
    assert_eq!(
        (read.node_id, read.cluster_id, read.incarnation),
        (2, 4242, UNKNOWN)
    );
    // Any token is accepted: no token named a cluster made before tokens.
    let opened = Identity::open_recorded(dir.path(), 2, Some("anything"), 777)
        .unwrap()
        .unwrap();
    assert_eq!(
        (opened.cluster_id, opened.incarnation, opened.token_digest),
        (4242, 777, UNKNOWN)
    );
    // Written as version 2: a second start keeps the first incarnation.
    let bytes = fs::read(dir.path().join(IDENTITY_FILE)).unwrap();
    assert_eq!((bytes.len(), bytes[4]), (LEN, VERSION));
    let again = Identity::open_recorded(dir.path(), 2, None, 888)
        .unwrap()
        .unwrap();
    assert_eq!(again, opened);
}

#[test]
fn damaged_identity_is_corruption_not_a_new_node() {
    let dir = tempfile::tempdir().unwrap();
    Identity::new(3, 4).ensure(dir.path()).unwrap();
    let p = dir.path().join(IDENTITY_FILE);
    corrupt_byte(&p, 6);
    let e = Identity::new(3, 4).ensure(dir.path()).unwrap_err();
    assert!(matches!(e, Error::Corruption { .. }), "{e}");
    assert!(e.to_string().contains("IDENTITY"), "{e}");
    let e = Identity::open_recorded(dir.path(), 3, None, 1).unwrap_err();
    assert!(matches!(e, Error::Corruption { .. }), "{e}");

    // Sealed but wrong: an unknown version, a wrong length for its version, no incarnation.
    let sealed = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = Identity::new(3, 4).encode();
        b.truncate(b.len() - 4);
        f(&mut b);
        codec::seal(&mut b);
        fs::write(&p, &b).unwrap();
        Identity::read(dir.path()).unwrap_err().to_string()
    };
    assert!(sealed(&|b| b[4] = 9).contains("unknown identity version 9"));
    assert!(sealed(&|b| b[4] = 1).contains("has 25 bytes, found 41"));
    assert!(sealed(&|b| b[21..29].fill(0)).contains("without an incarnation"));
    assert!(sealed(&|b| b[0] = b'X').contains("bad magic"));
    fs::write(&p, b"KV").unwrap();
    assert!(matches!(
        Identity::read(dir.path()).unwrap_err(),
        Error::Corruption { .. }
    ));
}

#[test]
fn the_cluster_id_depends_on_token_and_member_ids_only_and_is_pinned() {
    let a = bootstrap_cluster_id("kvstore", [1, 2, 3]);
    assert_eq!(a, bootstrap_cluster_id("kvstore", [3, 1, 2, 2]));
    assert_ne!(a, bootstrap_cluster_id("kvstore", [1, 2, 3, 4]));
    assert_ne!(a, bootstrap_cluster_id("other", [1, 2, 3]));
    assert_ne!(a, bootstrap_cluster_id("", [1, 2, 3]));
    // The same on every platform and release (checked against an independent FNV-1a): a
    // change here would make new nodes disagree with recorded ones.
    assert_eq!(a, 0xa4e8_a5a1_b0e5_d6d9);
    assert_eq!(token_digest("kvstore"), 0x8bf6_f381_554c_17a9);
}

#[test]
fn pins_round_trip_through_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut pins = PeerPins::open(dir.path()).unwrap();
    assert_eq!(pins.check(2, 20).unwrap(), PinCheck::NewlyPinned);
    assert_eq!(pins.check(3, 30).unwrap(), PinCheck::NewlyPinned);
    assert_eq!(pins.check(2, 20).unwrap(), PinCheck::Known);
    assert_eq!(
        pins.check(2, 21).unwrap(),
        PinCheck::Conflict { pinned: 20 }
    );

    let reopened = PeerPins::open(dir.path()).unwrap();
    assert_eq!(reopened.iter().collect::<Vec<_>>(), vec![(2, 20), (3, 30)]);
    assert_eq!(reopened.pinned(3), Some(30));
    assert_eq!(reopened.pinned(4), None);
}

#[test]
fn a_forgotten_pin_lets_the_id_come_back_as_a_new_incarnation() {
    let dir = tempfile::tempdir().unwrap();
    let mut pins = PeerPins::open(dir.path()).unwrap();
    pins.check(3, 30).unwrap();
    assert!(pins.forget(3).unwrap());
    assert!(!pins.forget(3).unwrap());
    let mut reopened = PeerPins::open(dir.path()).unwrap();
    assert_eq!(reopened.pinned(3), None);
    assert_eq!(reopened.check(3, 31).unwrap(), PinCheck::NewlyPinned);
    assert_eq!(
        PeerPins::open(dir.path()).unwrap().pinned(3),
        Some(31),
        "the new incarnation is pinned durably"
    );

    let mut memory = PeerPins::in_memory();
    assert_eq!(memory.check(1, 5).unwrap(), PinCheck::NewlyPinned);
    assert_eq!(
        memory.check(1, 6).unwrap(),
        PinCheck::Conflict { pinned: 5 }
    );
    assert!(memory.forget(1).unwrap());
    assert_eq!(memory.check(1, 6).unwrap(), PinCheck::NewlyPinned);
}

#[test]
fn damaged_pins_are_corruption_never_an_empty_set() {
    let dir = tempfile::tempdir().unwrap();
    let mut pins = PeerPins::open(dir.path()).unwrap();
    pins.check(2, 20).unwrap();
    let p = dir.path().join(PEER_PINS_FILE);
    let good = fs::read(&p).unwrap();
    for at in [0, 4, 5, 12, good.len() - 1] {
        fs::write(&p, &good).unwrap();
        corrupt_byte(&p, at);
        let e = PeerPins::open(dir.path()).unwrap_err();
        assert!(matches!(e, Error::Corruption { .. }), "byte {at}: {e}");
        assert!(e.to_string().contains(PEER_PINS_FILE), "{e}");
    }
    // A count that does not fit the body, sealed so that only the count is wrong.
    let mut b = good[..good.len() - 4].to_vec();
    b[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
    codec::seal(&mut b);
    fs::write(&p, &b).unwrap();
    let e = PeerPins::open(dir.path()).unwrap_err();
    assert!(e.to_string().contains("do not fit"), "{e}");
    fs::write(&p, b"").unwrap();
    assert!(PeerPins::open(dir.path()).is_err());
}
