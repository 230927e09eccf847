//! Several ranges' logs in one database: apart in every respect, written together in one sync.

use super::records::{entry_key, LogKeys, KEY_HARD_STATE, KEY_LOG_START};
use super::tests::{ent, persist};
use super::*;

fn hs(term: Term, commit: Index) -> HardState {
    HardState {
        term,
        vote: None,
        commit,
    }
}

/// Range `r`'s write: `n` entries of term `r` whose payloads name the range.
fn write_of(r: RangeId, n: u64) -> Persist {
    let entries = (1..=n).map(|i| ent(r, i, &format!("r{r}e{i}"))).collect();
    persist(Some(hs(r, n)), entries)
}

#[test]
fn the_first_ranges_rows_keep_the_keys_a_log_had_before_ranges() {
    let first = LogKeys::of(FIRST_RANGE);
    assert_eq!(first.entry(5).to_vec(), entry_key(5).to_vec());
    assert_eq!(first.hard_state(), KEY_HARD_STATE.to_vec());
    assert_eq!(first.log_start(), KEY_LOG_START.to_vec());
    let mut expected = vec![0x02, 0, 0, 0, 0, 0, 0, 0, 7];
    expected.extend_from_slice(&entry_key(5));
    assert_eq!(LogKeys::of(7).entry(5).to_vec(), expected);
}

#[test]
fn ranges_in_one_database_keep_their_logs_and_hard_states_apart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut first = RaftStorage::open(dir.path()).unwrap();
        let mut second = first.open_range(2).unwrap();
        let mut third = first.open_range(3).unwrap();
        first.persist(&write_of(1, 4)).unwrap();
        second.persist(&write_of(2, 2)).unwrap();
        third.persist(&write_of(3, 6)).unwrap();
        // A later overwrite in one range leaves the others' entries at the same indexes alone.
        second
            .persist(&persist(None, vec![ent(9, 2, "overwritten")]))
            .unwrap();
    }
    let first = RaftStorage::open(dir.path()).unwrap();
    for (r, n) in [(1, 4), (2, 2), (3, 6)] {
        let mut log = first.open_range(r).unwrap();
        assert_eq!(log.range(), r);
        let rs = log.load().unwrap();
        assert_eq!(rs.hard_state, hs(r, n), "range {r}");
        assert_eq!(rs.entries.len() as u64, n, "range {r}");
        let last = rs.entries.last().unwrap();
        let expected = if r == 2 {
            "overwritten".to_string()
        } else {
            format!("r{r}e{n}")
        };
        assert_eq!(last.payload, Bytes::from(expected), "range {r}");
    }
    assert_eq!(
        first.open_range(4).unwrap().load().unwrap(),
        RestartState::default()
    );
}

#[test]
fn one_synced_batch_carries_the_writes_of_several_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = RaftStorage::open(dir.path()).unwrap();
    let mut second = first.open_range(2).unwrap();
    let mut third = first.open_range(3).unwrap();
    let stats = first
        .sync_stats()
        .expect("the disk environment counts syncs");
    let (w1, w2, w3) = (write_of(1, 3), write_of(2, 1), write_of(3, 5));
    let before = stats.file_syncs();
    RaftStorage::persist_together(&mut [(&mut first, &w1), (&mut second, &w2), (&mut third, &w3)])
        .unwrap();
    assert_eq!(stats.file_syncs() - before, 1, "one fsync for three ranges");
    assert_eq!(
        (first.last_index(), second.last_index(), third.last_index()),
        (3, 1, 5)
    );
    drop((first, second, third));
    let first = RaftStorage::open(dir.path()).unwrap();
    assert_eq!(
        first.open_range(3).unwrap().load().unwrap().entries.len(),
        5
    );
}

#[test]
fn a_range_twice_in_one_batch_or_a_bad_write_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = RaftStorage::open(dir.path()).unwrap();
    let mut again = first.open_range(FIRST_RANGE).unwrap();
    let mut second = first.open_range(2).unwrap();
    let (w1, w2) = (write_of(1, 2), write_of(2, 2));
    let twice = RaftStorage::persist_together(&mut [(&mut first, &w1), (&mut again, &w2)]);
    assert!(matches!(twice, Err(Error::InvalidRequest(_))), "{twice:?}");
    // Range 2's write is fine, the first range's leaves a gap: neither is stored.
    let gap = persist(None, vec![ent(1, 5, "after a gap")]);
    let refused = RaftStorage::persist_together(&mut [(&mut second, &w2), (&mut first, &gap)]);
    assert!(
        matches!(refused, Err(Error::InvalidRequest(_))),
        "{refused:?}"
    );
    assert_eq!((first.last_index(), second.last_index()), (0, 0));
    drop((first, again, second));
    let first = RaftStorage::open(dir.path()).unwrap();
    assert_eq!(
        first.open_range(2).unwrap().load().unwrap(),
        RestartState::default()
    );
}

#[test]
fn compacting_or_installing_in_one_range_leaves_the_others_alone() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut first = RaftStorage::open(dir.path()).unwrap();
        let mut second = first.open_range(2).unwrap();
        let mut third = first.open_range(3).unwrap();
        for (log, r) in [(&mut first, 1), (&mut second, 2), (&mut third, 3)] {
            log.persist(&write_of(r, 10)).unwrap();
        }
        second.compact(6, &Membership::default()).unwrap();
        third
            .install_snapshot(SnapshotMeta::new(40, 5, Membership::default()))
            .unwrap();
        while second.reclaim_step(3).unwrap() > 0 {}
    }
    let first = RaftStorage::open(dir.path()).unwrap();
    let mut logs: Vec<RaftStorage> = [1, 2, 3].map(|r| first.open_range(r).unwrap()).into();
    let loaded: Vec<RestartState> = logs.iter_mut().map(|l| l.load().unwrap()).collect();
    assert_eq!(loaded[0].entries.len(), 10);
    assert_eq!(loaded[0].snapshot.index, 0);
    assert_eq!(loaded[1].snapshot.index, 6);
    assert_eq!(loaded[1].entries.first().map(|e| e.index), Some(7));
    assert_eq!(loaded[2].snapshot.index, 40);
    assert!(loaded[2].entries.is_empty());
    assert_eq!(logs[0].entry(3).unwrap().map(|e| e.term), Some(1));
}

#[test]
fn damage_in_another_range_names_that_range() {
    let dir = tempfile::tempdir().unwrap();
    {
        let first = RaftStorage::open(dir.path()).unwrap();
        let mut second = first.open_range(2).unwrap();
        second.persist(&write_of(2, 3)).unwrap();
        let key = LogKeys::of(2).entry(2);
        second.raw_delete(&key).unwrap();
    }
    let first = RaftStorage::open(dir.path()).unwrap();
    assert!(first.open_range(1).unwrap().load().is_ok());
    let e = first.open_range(2).unwrap().load().unwrap_err().to_string();
    assert!(
        e.contains("range 2") && e.contains("entry 2 is missing"),
        "{e}"
    );
}
