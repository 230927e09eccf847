use std::collections::BTreeMap;

use bytes::Bytes;
use proptest::prelude::*;
use raft_core::{Entry, EntryKind, Membership};

use super::restore::{restore_into, restored_cluster_id, RestorePlan};
use super::*;
use crate::command::{Command, Op};
use crate::{Identity, KvStateMachine, MemberAddrs, RaftStorage};

const CLUSTER: u64 = 0xc1;

fn set_entry(index: u64, key: &str, value: &str) -> Entry {
    let op = Op::Set {
        key: Bytes::from(key.to_owned()),
        value: Bytes::from(value.to_owned()),
    };
    Entry::new(
        3,
        index,
        EntryKind::Normal,
        Command::new(9, index, op).encode(),
    )
}

fn addrs(ids: &[u64], base: u16) -> BTreeMap<u64, MemberAddrs> {
    ids.iter()
        .map(|&id| {
            let port = base + id as u16;
            (
                id,
                MemberAddrs::new(format!("h:{}", port + 100), format!("h:{port}")),
            )
        })
        .collect()
}

/// A backup file of a state machine holding `keys` keys, in chunks of about 300 bytes.
fn backup_bytes(keys: u64) -> (Vec<u8>, BackupSummary) {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = KvStateMachine::open(dir.path()).unwrap();
    sm.seed_members(MemberTable::founding(addrs(&[1, 2, 3], 7000)))
        .unwrap();
    let entries: Vec<Entry> = (1..=keys)
        .map(|i| set_entry(i, &format!("key{i:04}"), &format!("value {i}")))
        .collect();
    sm.apply(&entries).unwrap();
    sm.build_snapshot(CLUSTER, 300).unwrap();
    let mut reader = sm.snapshot_reader().unwrap();
    let mut w = BackupWriter::new(Vec::new()).unwrap();
    while let Some(chunk) = reader.next_chunk().unwrap() {
        w.push(&chunk).unwrap();
    }
    let (summary, bytes) = w.finish().unwrap();
    (bytes, summary)
}

fn verify(bytes: &[u8]) -> Result<BackupSummary, BackupError> {
    BackupReader::new(bytes)?.verify(&mut |_| {})
}

#[test]
fn a_backup_round_trips_and_says_what_it_holds() {
    let (bytes, written) = backup_bytes(40);
    let read = verify(&bytes).unwrap();
    assert_eq!(read, written);
    assert_eq!(read.header.applied_index, 40);
    assert_eq!(read.header.applied_term, 3);
    assert_eq!(read.header.cluster_id, CLUSTER);
    assert_eq!(read.header.membership, Membership::with_voters([1, 2, 3]));
    assert_eq!(read.addrs, addrs(&[1, 2, 3], 7000));
    assert_eq!(read.keys, 40);
    assert!(read.chunks > 3, "several records chunks: {}", read.chunks);
    assert_eq!(read.file_bytes, bytes.len() as u64);
}

#[test]
fn every_flipped_byte_is_detected() {
    let (bytes, _) = backup_bytes(12);
    for i in 0..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[i] ^= 0x40;
        let e = verify(&damaged).expect_err(&format!("byte {i} flipped, accepted"));
        assert!(e.offset <= i as u64, "byte {i} reported at {}", e.offset);
    }
}

#[test]
fn every_truncation_is_detected_and_named() {
    let (bytes, _) = backup_bytes(12);
    for len in 0..bytes.len() {
        let e = verify(&bytes[..len]).expect_err(&format!("cut at {len}, accepted"));
        if len >= BACKUP_MAGIC.len() {
            assert!(e.problem.contains("truncated"), "cut at {len}: {e}");
            assert!(e.offset <= len as u64, "cut at {len}: {e}");
        }
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(verify(&longer)
        .unwrap_err()
        .problem
        .contains("after the end"));
}

#[test]
fn a_missing_or_repeated_chunk_is_detected() {
    let (bytes, _) = backup_bytes(12);
    let mut chunks = Vec::new();
    let mut r = BackupReader::new(&bytes[..]).unwrap();
    while let Some(c) = r.next_chunk().unwrap() {
        chunks.push(c);
    }
    let rebuild = |chunks: &[Bytes]| {
        let mut w = BackupWriter::new(Vec::new()).unwrap();
        for c in chunks {
            w.push(c)?;
        }
        w.finish().map(|(_, b)| b)
    };
    let mut dropped = chunks.clone();
    dropped.remove(2);
    assert!(rebuild(&dropped).is_err());
    let mut repeated = chunks.clone();
    repeated.insert(2, chunks[2].clone());
    assert!(rebuild(&repeated).is_err());
    assert!(rebuild(&chunks[..chunks.len() - 1]).is_err(), "no trailer");
    assert!(rebuild(&chunks).is_ok());
}

#[test]
fn a_wrong_magic_or_version_is_named() {
    let (mut bytes, _) = backup_bytes(2);
    bytes[8] = 9;
    assert!(verify(&bytes)
        .unwrap_err()
        .problem
        .contains("format version 9"));
    assert!(verify(b"SQLite format 3\0")
        .unwrap_err()
        .problem
        .contains("not a kvstore backup"));
}

#[test]
fn a_restore_seeds_a_directory_of_a_new_cluster() {
    let (bytes, summary) = backup_bytes(30);
    let root = tempfile::tempdir().unwrap();
    let target = root.path().join("node2");
    let plan = RestorePlan {
        node_id: 2,
        members: MemberTable::founding(addrs(&[1, 2, 3], 9000)),
        cluster_token: "kvstore".into(),
        incarnation: 77,
    };
    let reader = BackupReader::new(&bytes[..]).unwrap();
    let restored = restore_into(reader, &target, &plan, &mut |_| {}).unwrap();
    assert_ne!(restored.cluster_id, CLUSTER);
    assert_eq!(
        restored.cluster_id,
        restored_cluster_id(&summary.header, "kvstore", [1, 2, 3]),
        "every node of the new cluster derives the same id"
    );
    assert_ne!(
        restored.cluster_id,
        restored_cluster_id(&summary.header, "other", [1, 2, 3])
    );
    let identity = Identity::read(&target).unwrap().unwrap();
    assert_eq!(
        (identity.node_id, identity.cluster_id),
        (2, restored.cluster_id)
    );
    let mut sm = KvStateMachine::open(&target).unwrap();
    assert_eq!(sm.applied_index(), 30);
    assert_eq!(sm.get(b"key0007").unwrap(), Some(Bytes::from("value 7")));
    assert_eq!(sm.members(), &plan.members);
    let image = sm.snapshot_reader().unwrap().header();
    assert_eq!(image.cluster_id, restored.cluster_id);
    assert_eq!(image.membership, plan.members.membership);
    drop(sm);
    let log = RaftStorage::open(&target).unwrap();
    assert_eq!(log.snapshot().index, 30);
    assert_eq!(log.hard_state().term, 3);
    assert!(!super::restore::staging_dir(&target).exists());

    // A non-empty directory is refused; a damaged backup leaves nothing behind.
    let reader = BackupReader::new(&bytes[..]).unwrap();
    assert!(restore_into(reader, &target, &plan, &mut |_| {}).is_err());
    let other = root.path().join("node3");
    let cut = &bytes[..bytes.len() - 30];
    let reader = BackupReader::new(cut).unwrap();
    assert!(restore_into(reader, &other, &plan, &mut |_| {}).is_err());
    assert!(!other.exists());
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_the_reader(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut file = BACKUP_MAGIC.to_vec();
        file.extend_from_slice(&BACKUP_FORMAT.to_le_bytes());
        file.extend_from_slice(&data);
        prop_assert!(verify(&file).is_err());
        let _ = verify(&data);
    }

    #[test]
    fn damaged_backups_never_panic_the_reader(at in 0usize..4096, by in 1u8..=255, cut in 0usize..4096) {
        let (mut bytes, _) = backup_bytes(5);
        let at = at % bytes.len();
        bytes[at] ^= by;
        bytes.truncate(bytes.len() - cut % bytes.len());
        prop_assert!(verify(&bytes).is_err());
    }
}
