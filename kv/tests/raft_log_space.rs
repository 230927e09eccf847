//! The Raft log gives its disk back after compaction: LevelDB keeps a deleted entry (and its
//! tombstone) until a compaction of its key range reaches the entry's level, which with the
//! log's ever-growing keys its own background compactions may never do.

use std::fs;
use std::path::Path;
use std::time::Instant;

use bytes::Bytes;
use kv::raft_storage::RAFT_LOGS_DIR;
use kv::RaftStorage;
use raft_core::{Entry, EntryKind, Membership, Persist, WriteId};

const PAYLOAD: usize = 128;
/// Entries per write, as a loaded node's group commit batches them.
const BATCH: u64 = 100;

/// Bytes of the files LevelDB uses (a file being unlinked in the background is already out of
/// its namespace, renamed to `*.deleting`).
fn dir_size(p: &Path) -> u64 {
    fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| !e.file_name().to_string_lossy().ends_with(".deleting"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

/// Appends entries `from..=to` in batches of [`BATCH`].
fn append(log: &mut RaftStorage, from: u64, to: u64) {
    let payload = Bytes::from(vec![b'p'; PAYLOAD]);
    let mut first = from;
    while first <= to {
        let last = to.min(first + BATCH - 1);
        let entries = (first..=last)
            .map(|i| Entry::new(1, i, EntryKind::Normal, payload.clone()))
            .collect();
        log.persist(&Persist {
            id: WriteId {
                seq: first,
                term: 1,
            },
            hard_state: None,
            entries,
        })
        .unwrap();
        first = last + 1;
    }
}

/// Writes `total` entries, compacting every `threshold` entries to a tail of `tail`, as the
/// node's snapshot policy does.
fn write_and_compact(log: &mut RaftStorage, total: u64, threshold: u64, tail: u64) {
    let mut written = 0;
    while written < total {
        append(log, written + 1, written + threshold);
        written += threshold;
        log.compact(written - tail, &Membership::default()).unwrap();
    }
}

#[test]
fn a_compacted_log_gives_its_disk_back_in_steps() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(RAFT_LOGS_DIR);
    let mut log = RaftStorage::open(dir.path()).unwrap();
    let (total, threshold, tail) = (300_000, 100_000, 5_000);
    write_and_compact(&mut log, total, threshold, tail);
    let live = tail * (PAYLOAD as u64 + 9 + 30);
    let before = dir_size(&path);
    eprintln!("raft_logs: {before} bytes before reclaiming, {live} bytes live");
    // Without reclaiming, most of what the last compactions deleted is still there.
    assert!(
        before > 8 * live,
        "raft_logs holds only {before} bytes before reclaiming (live {live}): nothing to prove"
    );
    assert_eq!(log.unreclaimed_entries(), total - tail);

    let mut steps = 0;
    while log.reclaim_step(20_000).unwrap() > 0 {
        steps += 1;
    }
    assert_eq!(steps, (total - tail).div_ceil(20_000) - 1);
    let after = dir_size(&path);
    eprintln!(
        "raft_logs: {after} bytes after reclaiming in {} steps",
        steps + 1
    );
    assert!(
        after <= 3 * live,
        "raft_logs still holds {after} bytes for {live} bytes of live entries"
    );

    // The log is intact and keeps working.
    drop(log);
    let mut log = RaftStorage::open(dir.path()).unwrap();
    let rs = log.load().unwrap();
    assert_eq!(rs.snapshot.index, total - tail);
    assert_eq!(rs.entries.len() as u64, tail);
    append(&mut log, total + 1, total + 10);
    assert_eq!(log.last_index(), total + 10);
}

#[test]
fn reopening_gives_back_what_an_earlier_run_left() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(RAFT_LOGS_DIR);
    let mut log = RaftStorage::open(dir.path()).unwrap();
    write_and_compact(&mut log, 200_000, 50_000, 5_000);
    let before = dir_size(&path);
    // A crash (or an older version) before any step.
    drop(log);
    let mut log = RaftStorage::open(dir.path()).unwrap();
    let after = dir_size(&path);
    eprintln!("raft_logs: {before} bytes before reopening, {after} after");
    assert!(
        after * 5 < before,
        "{after} bytes after reopening, {before} before"
    );
    assert_eq!(log.load().unwrap().entries.len(), 5_000);
}

/// Measures what one reclaim step costs the writer that calls it, for several step sizes
/// (`cargo test -p kv --test raft_log_space -- --ignored --nocapture`).
#[test]
#[ignore]
fn measure_reclaim_steps() {
    for step in [5_000, 20_000, 100_000] {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RaftStorage::open(dir.path()).unwrap();
        write_and_compact(&mut log, 400_000, 100_000, 5_000);
        let before = dir_size(&dir.path().join(RAFT_LOGS_DIR));
        let mut times = Vec::new();
        loop {
            let t = Instant::now();
            let left = log.reclaim_step(step).unwrap();
            times.push(t.elapsed().as_secs_f64() * 1e3);
            if left == 0 {
                break;
            }
        }
        times.sort_by(f64::total_cmp);
        eprintln!(
            "step {step} entries: {} steps, median {:.1} ms, max {:.1} ms, total {:.0} ms",
            times.len(),
            times[times.len() / 2],
            times[times.len() - 1],
            times.iter().sum::<f64>()
        );
        eprintln!(
            "  raft_logs {before} bytes before, {} after",
            dir_size(&dir.path().join(RAFT_LOGS_DIR))
        );
    }
}
