use super::*;
use raft_core::{EntryKind, WriteId};

pub(super) fn ent(term: Term, index: Index, payload: &str) -> Entry {
    Entry::new(
        term,
        index,
        EntryKind::Normal,
        Bytes::from(payload.to_owned()),
    )
}

pub(super) fn persist(hs: Option<HardState>, entries: Vec<Entry>) -> Persist {
    Persist {
        id: WriteId { seq: 0, term: 0 },
        hard_state: hs,
        entries,
    }
}

fn hs(term: Term, vote: Option<u64>, commit: Index) -> HardState {
    HardState { term, vote, commit }
}

#[test]
fn empty_storage_loads_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = RaftStorage::open(dir.path()).unwrap();
    assert_eq!(s.load().unwrap(), RestartState::default());
    assert!(dir.path().join(RAFT_LOGS_DIR).is_dir());
}

#[test]
fn persist_overwrite_and_load() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = RaftStorage::open(dir.path()).unwrap();
        let first: Vec<Entry> = (1..=5).map(|i| ent(1, i, &format!("a{i}"))).collect();
        s.persist(&persist(Some(hs(1, Some(2), 0)), first)).unwrap();
        // A new leader overwrites from 3 with a shorter suffix: 4 and 5 must go.
        s.persist(&persist(Some(hs(2, None, 2)), vec![ent(2, 3, "b3")]))
            .unwrap();
        assert_eq!(s.last_index(), 3);
        // Hard state alone leaves the log as it is.
        s.persist(&persist(Some(hs(3, Some(1), 3)), vec![]))
            .unwrap();
    }
    let mut s = RaftStorage::open(dir.path()).unwrap();
    let rs = s.load().unwrap();
    assert_eq!(rs.hard_state, hs(3, Some(1), 3));
    assert_eq!(
        rs.entries,
        vec![ent(1, 1, "a1"), ent(1, 2, "a2"), ent(2, 3, "b3")]
    );
    assert_eq!(s.entry(4).unwrap(), None);
    assert_eq!(s.entry(5).unwrap(), None);
    // Appending after an overwrite continues from the new end.
    s.persist(&persist(None, vec![ent(3, 4, "c4")])).unwrap();
    assert_eq!(s.load().unwrap().entries.len(), 4);
}

#[test]
fn persist_refuses_gaps_and_rewriting_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = RaftStorage::open(dir.path()).unwrap();
    s.persist(&persist(None, vec![ent(1, 1, "x")])).unwrap();
    assert!(matches!(
        s.persist(&persist(None, vec![ent(1, 3, "x")])),
        Err(Error::InvalidRequest(_))
    ));
    assert!(matches!(
        s.persist(&persist(None, vec![ent(1, 2, "x"), ent(1, 4, "y")])),
        Err(Error::InvalidRequest(_))
    ));
    s.persist(&persist(None, vec![ent(1, 2, "x")])).unwrap();
    s.compact(1, &raft_core::Membership::default()).unwrap();
    assert!(matches!(
        s.persist(&persist(None, vec![ent(2, 1, "x")])),
        Err(Error::InvalidRequest(_))
    ));
    assert_eq!(s.load().unwrap().entries, vec![ent(1, 2, "x")]);
}

#[test]
fn compaction_moves_the_log_start_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = RaftStorage::open(dir.path()).unwrap();
        let es: Vec<Entry> = (1..=3000).map(|i| ent(1 + i / 1000, i, "p")).collect();
        s.persist(&persist(None, es)).unwrap();
        s.compact(2500, &raft_core::Membership::default()).unwrap();
        assert!(s.compact(3001, &raft_core::Membership::default()).is_err());
        s.compact(100, &raft_core::Membership::default()).unwrap(); // below the start: nothing to do
    }
    let mut s = RaftStorage::open(dir.path()).unwrap();
    let rs = s.load().unwrap();
    assert_eq!(rs.snapshot, SnapshotMeta::new(2500, 3, Default::default()));
    assert_eq!(rs.applied, 2500);
    assert_eq!(rs.entries.first().map(|e| e.index), Some(2501));
    assert_eq!(rs.entries.len(), 500);
    assert_eq!(s.entry(1).unwrap(), None);
    assert_eq!(s.entry(2500).unwrap(), None);
}

#[test]
fn interrupted_compaction_is_finished_on_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = RaftStorage::open(dir.path()).unwrap();
        let es: Vec<Entry> = (1..=10).map(|i| ent(1, i, "p")).collect();
        s.persist(&persist(None, es)).unwrap();
        // The crash window: log start and marker durable, no entry deleted yet.
        let mut b = WriteBatch::default();
        b.put(KEY_LOG_START, &encode_pair(6, 1));
        b.put(KEY_PURGE_FROM, &encode_pair(1, 0));
        s.db.borrow_mut().write(b, true).unwrap();
    }
    let mut s = RaftStorage::open(dir.path()).unwrap();
    for i in 1..=6 {
        assert_eq!(s.raw_get(&entry_key(i)).unwrap(), None, "entry {i}");
    }
    assert_eq!(s.raw_get(KEY_PURGE_FROM).unwrap(), None);
    let rs = s.load().unwrap();
    assert_eq!(rs.entries.first().map(|e| e.index), Some(7));
}

fn expect_corruption(dir: &Path, index: Index, needle: &str) {
    let mut s = RaftStorage::open(dir).unwrap();
    let e = s.load().unwrap_err();
    let msg = e.to_string();
    match &e {
        Error::Corruption {
            index: Some(i),
            path,
            ..
        } => {
            assert_eq!(*i, index, "{msg}");
            assert!(path.ends_with(RAFT_LOGS_DIR), "{msg}");
        }
        other => panic!("expected corruption at {index}, got {other}"),
    }
    assert!(msg.contains(&format!("index {index}")), "{msg}");
    assert!(msg.contains(RAFT_LOGS_DIR), "{msg}");
    assert!(msg.contains(needle), "{msg}");
}

fn five_entries(dir: &Path) {
    let mut s = RaftStorage::open(dir).unwrap();
    let es: Vec<Entry> = (1..=5).map(|i| ent(1, i, "payload")).collect();
    s.persist(&persist(Some(hs(1, None, 0)), es)).unwrap();
}

#[test]
fn flipped_byte_in_an_entry_is_reported_with_its_index() {
    let dir = tempfile::tempdir().unwrap();
    five_entries(dir.path());
    {
        let mut s = RaftStorage::open(dir.path()).unwrap();
        let mut v = s.raw_get(&entry_key(3)).unwrap().unwrap().to_vec();
        v[20] ^= 0x40;
        s.raw_put(&entry_key(3), &v).unwrap();
    }
    expect_corruption(dir.path(), 3, "checksum");
}

#[test]
fn entry_under_the_wrong_key_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    five_entries(dir.path());
    {
        let mut s = RaftStorage::open(dir.path()).unwrap();
        let v = s.raw_get(&entry_key(4)).unwrap().unwrap();
        s.raw_put(&entry_key(2), &v).unwrap();
    }
    expect_corruption(dir.path(), 2, "records index 4");
}

#[test]
fn decreasing_terms_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    five_entries(dir.path());
    RaftStorage::open(dir.path())
        .unwrap()
        .raw_put(&entry_key(4), &encode_entry(&ent(0, 4, "payload")))
        .unwrap();
    expect_corruption(dir.path(), 4, "never decrease");
}

#[test]
fn gap_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    five_entries(dir.path());
    RaftStorage::open(dir.path())
        .unwrap()
        .raw_delete(&entry_key(3))
        .unwrap();
    expect_corruption(dir.path(), 3, "missing");
}

#[test]
fn lost_tail_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    five_entries(dir.path());
    RaftStorage::open(dir.path())
        .unwrap()
        .raw_delete(&entry_key(5))
        .unwrap();
    expect_corruption(dir.path(), 5, "should end at 5");
}

#[test]
fn damaged_hard_state_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    five_entries(dir.path());
    {
        let mut s = RaftStorage::open(dir.path()).unwrap();
        let mut v = s.raw_get(KEY_HARD_STATE).unwrap().unwrap().to_vec();
        v[3] ^= 1;
        s.raw_put(KEY_HARD_STATE, &v).unwrap();
    }
    let e = RaftStorage::open(dir.path()).err().unwrap();
    assert!(e.to_string().contains("hard state"), "{e}");
}

#[test]
fn power_cut_keeps_acknowledged_writes() {
    use crate::env::PowerCutEnv;
    let env = PowerCutEnv::new();
    let senv = StorageEnv::PowerCut(env.clone());
    let dir = Path::new("/node");
    {
        let mut s = RaftStorage::open_with(dir, &senv).unwrap();
        for i in 1..=50 {
            s.persist(&persist(Some(hs(i, None, 0)), vec![ent(i, i, "x")]))
                .unwrap();
        }
        env.cut_power();
        // Refused after the cut: not acknowledged, and not stored.
        assert!(s
            .persist(&persist(Some(hs(99, None, 0)), vec![ent(99, 51, "y")]))
            .is_err());
    }
    env.power_on();
    let mut s = RaftStorage::open_with(dir, &senv).unwrap();
    let rs = s.load().unwrap();
    assert_eq!(rs.hard_state.term, 50);
    assert_eq!(rs.entries.len(), 50);
}

/// The shape the simulator found (seed 10 with sticky clients): the entries and the last
/// index reach one table; a compaction (log start, marker, then the deletions of the entries
/// and of the marker) reaches a newer table that holds no last-index record. Through
/// rusty-leveldb 4.0.2's `DB::get` the last index then read as absent whenever that newer
/// table's Bloom filter let the lookup in (a false positive, about one compaction point in a
/// few hundred here), because the first key after it there is a deletion (see `ldb`; fixed in
/// the vendored copy): the log looked as if it ended at the log start. Every compaction point
/// of a 300-entry log is tried, so the shape is hit whatever the filter's hashing, and at each
/// `DB::get` must agree with an iterator. Both reopens are power cuts; a clean close and
/// reopen does the same.
#[test]
fn last_index_survives_a_compaction_and_power_cuts() {
    use crate::env::PowerCutEnv;
    const N: Index = 300;
    let dir = Path::new("/node");
    let mut lookup_misses = Vec::new();
    for up_to in 1..N {
        let env = PowerCutEnv::new();
        let senv = StorageEnv::PowerCut(env.clone());
        {
            let mut s = RaftStorage::open_with(dir, &senv).unwrap();
            let entries: Vec<Entry> = (1..=N).map(|i| ent(1, i, "x")).collect();
            s.persist(&persist(Some(hs(1, Some(1), N)), entries))
                .unwrap();
            env.cut_power();
        }
        // Reopening writes the recovered log into a table.
        env.power_on();
        {
            let mut s = RaftStorage::open_with(dir, &senv).unwrap();
            assert_eq!(s.last_index(), N);
            s.compact(up_to, &raft_core::Membership::default()).unwrap();
            // A synced write after the compaction's unsynced deletions makes them durable.
            s.persist(&persist(Some(hs(1, Some(1), N)), vec![]))
                .unwrap();
            env.cut_power();
        }
        env.power_on();
        let mut s = RaftStorage::open_with(dir, &senv).unwrap();
        let through_iterator = s.db.borrow_mut().iterator_get(KEY_LAST_INDEX);
        if through_iterator.is_some()
            && s.db.borrow_mut().get(KEY_LAST_INDEX).unwrap() != through_iterator
        {
            lookup_misses.push(up_to);
        }
        assert_eq!(
            s.snapshot(),
            SnapshotMeta::new(up_to, 1, Default::default())
        );
        assert_eq!(
            s.last_index(),
            N,
            "compaction to {up_to}: the synced last index was lost"
        );
        let rs = s.load().unwrap();
        assert_eq!(rs.entries.len() as u64, N - up_to);
        assert_eq!(rs.entries.last().map(|e| e.index), Some(N));
        assert_eq!(rs.hard_state, hs(1, Some(1), N));
    }
    assert_eq!(
        lookup_misses,
        Vec::<Index>::new(),
        "compaction points where `DB::get` disagrees with an iterator"
    );
}

#[test]
fn the_log_start_keeps_its_configuration_across_compaction_install_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let joint = raft_core::Membership {
        voters: [1, 2, 4].into(),
        outgoing: [1, 2, 3].into(),
        learners: [5].into(),
    };
    {
        let mut s = RaftStorage::open(dir.path()).unwrap();
        let es: Vec<Entry> = (1..=10).map(|i| ent(1, i, "p")).collect();
        s.persist(&persist(None, es)).unwrap();
        s.compact(4, &joint).unwrap();
        assert_eq!(s.snapshot(), SnapshotMeta::new(4, 1, joint.clone()));
    }
    let mut s = RaftStorage::open(dir.path()).unwrap();
    assert_eq!(
        s.load().unwrap().snapshot,
        SnapshotMeta::new(4, 1, joint.clone())
    );
    let later = SnapshotMeta::new(20, 2, raft_core::Membership::with_voters([1, 2, 4]));
    s.install_snapshot(later.clone()).unwrap();
    drop(s);
    let mut s = RaftStorage::open(dir.path()).unwrap();
    assert_eq!(s.load().unwrap().snapshot, later);
}

#[test]
fn a_log_start_written_before_configurations_were_recorded_still_opens() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = RaftStorage::open(dir.path()).unwrap();
        let es: Vec<Entry> = (1..=3).map(|i| ent(1, i, "p")).collect();
        s.persist(&persist(None, es)).unwrap();
        // The old record: a bare index/term pair.
        let mut batch = WriteBatch::default();
        batch.put(KEY_LOG_START, &encode_pair(2, 1));
        s.db.borrow_mut().write(batch, true).unwrap();
    }
    let s = RaftStorage::open(dir.path()).unwrap();
    assert_eq!(s.snapshot(), SnapshotMeta::new(2, 1, Default::default()));
}
