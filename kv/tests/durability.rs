//! Durability on the real disk: sync calls, a process that aborts, a torn LevelDB log.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command as Process;

use bytes::Bytes;
use kv::raft_storage::RAFT_LOGS_DIR;
use kv::{Command, KvStateMachine, Op, RaftStorage};
use raft_core::{Entry, EntryKind, HardState, Index, Persist, WriteId};

fn entry(term: u64, index: Index, len: usize) -> Entry {
    let mut p = format!("entry-{index}-").into_bytes();
    p.resize(len, b'.');
    Entry::new(term, index, EntryKind::Normal, Bytes::from(p))
}

fn persist(term: u64, entries: Vec<Entry>) -> Persist {
    Persist {
        id: WriteId { seq: 0, term },
        hard_state: Some(HardState {
            term,
            vote: Some(1),
            commit: 0,
        }),
        entries,
    }
}

#[test]
fn synced_writes_call_sync_data_and_unsynced_ones_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = RaftStorage::open(dir.path()).unwrap();
    let stats = log.sync_stats().unwrap();
    assert!(
        stats.dir_syncs() > 0,
        "creating the database must fsync its directory"
    );
    let before = stats.file_syncs();
    for i in 1..=20 {
        log.persist(&persist(1, vec![entry(1, i, 100)])).unwrap();
    }
    let synced = stats.file_syncs() - before;
    assert!(
        (20..=22).contains(&synced),
        "20 synced writes made {synced} sync_data calls"
    );

    let mut sm = KvStateMachine::open(dir.path()).unwrap();
    let stats = sm.sync_stats().unwrap();
    let before = stats.file_syncs();
    for i in 1..=20u64 {
        let c = Command::new(
            1,
            i,
            Op::Set {
                key: Bytes::from(format!("k{i}")),
                value: Bytes::from_static(b"v"),
            },
        );
        sm.apply(&[Entry::new(1, i, EntryKind::Normal, c.encode())])
            .unwrap();
    }
    assert_eq!(
        stats.file_syncs() - before,
        0,
        "unsynced writes must not sync"
    );
    sm.sync().unwrap();
    assert_eq!(stats.file_syncs() - before, 1, "sync() is one sync_data");
    sm.set_sync_writes(true);
    let c = Command::new(1, 21, Op::Noop);
    sm.apply(&[Entry::new(1, 21, EntryKind::Normal, c.encode())])
        .unwrap();
    assert_eq!(stats.file_syncs() - before, 2);
    assert_eq!(sm.durable_applied_index(), 21);
}

const CHILD_ENV: &str = "KV_TEST_ABORT_CHILD_DIR";
const CHILD_BATCHES: u64 = 300;
const CHILD_BATCH_LEN: u64 = 4;

/// Runs in the child process: synced batches, each acknowledged on stdout once `persist`
/// returned, then an abort with no cleanup at all (no destructors, no flush).
fn child_main(dir: &Path) -> ! {
    let mut log = RaftStorage::open(dir).expect("child: open");
    let mut out = std::io::stdout().lock();
    for b in 1..=CHILD_BATCHES {
        let first = (b - 1) * CHILD_BATCH_LEN + 1;
        let es = (first..first + CHILD_BATCH_LEN)
            .map(|i| entry(b, i, 200))
            .collect();
        log.persist(&persist(b, es)).expect("child: persist");
        writeln!(out, "ACK {b}").expect("child: stdout");
        out.flush().expect("child: flush stdout");
    }
    std::process::abort();
}

#[test]
fn child_process_abort_keeps_every_acknowledged_batch() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        child_main(Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Process::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process_abort_keeps_every_acknowledged_batch",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the child must die by abort");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let acked: Vec<u64> = stdout
        .lines()
        // The test harness prints its own words on the first line, before the child's.
        .filter_map(|l| l.rsplit_once("ACK ").map(|(_, n)| n))
        .map(|n| n.trim().parse().unwrap())
        .collect();
    assert_eq!(
        acked,
        (1..=CHILD_BATCHES).collect::<Vec<_>>(),
        "child output: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut log = RaftStorage::open(dir.path()).unwrap();
    let rs = log.load().unwrap();
    let last_acked = *acked.last().unwrap();
    assert_eq!(rs.hard_state.term, last_acked);
    assert_eq!(rs.entries.len() as u64, last_acked * CHILD_BATCH_LEN);
    for (k, e) in rs.entries.iter().enumerate() {
        let want = entry(k as u64 / CHILD_BATCH_LEN + 1, k as u64 + 1, 200);
        assert_eq!(*e, want);
    }
}

fn log_files(db: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(db)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    v.sort();
    v
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "LOCK" {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Cuts LevelDB's write-ahead log at many offsets. Every open must succeed, keep every batch
/// whose bytes were wholly before the cut, and keep new synced writes made after the recovery
/// (with `reuse_logs = true` those were appended behind the torn record and lost on the next
/// open).
#[test]
fn torn_log_tail_keeps_the_synced_prefix() {
    let src = tempfile::tempdir().unwrap();
    let mut ends = vec![0u64];
    let batches = 120u64;
    {
        let mut log = RaftStorage::open(src.path()).unwrap();
        let db = src.path().join(RAFT_LOGS_DIR);
        for b in 1..=batches {
            log.persist(&persist(
                b,
                vec![entry(b, b, 300 + (b as usize * 37) % 200)],
            ))
            .unwrap();
            let f = log_files(&db);
            assert_eq!(f.len(), 1, "one live log expected: {f:?}");
            ends.push(fs::metadata(&f[0]).unwrap().len());
        }
    }
    let src_db = src.path().join(RAFT_LOGS_DIR);
    let log_name = log_files(&src_db)[0].file_name().unwrap().to_owned();
    let total = *ends.last().unwrap();
    assert!(
        total > 40_000,
        "the log must span more than one 32 KiB block"
    );

    let mut cuts: Vec<u64> = (0..total).step_by(211).collect();
    // Right at, just before and just after some record boundaries.
    for b in (1..=batches as usize).step_by(7) {
        cuts.extend([ends[b] - 1, ends[b], ends[b] + 1]);
    }
    cuts.extend([32 * 1024 - 1, 32 * 1024, 32 * 1024 + 7, total - 1]);
    cuts.sort();
    cuts.dedup();

    let work = tempfile::tempdir().unwrap();
    for (n, &cut) in cuts.iter().enumerate() {
        let data = work.path().join(format!("cut{n}"));
        let db = data.join(RAFT_LOGS_DIR);
        copy_dir(&src_db, &db);
        let f = fs::OpenOptions::new()
            .write(true)
            .open(db.join(&log_name))
            .unwrap();
        f.set_len(cut).unwrap();
        drop(f);

        let whole = ends.iter().filter(|&&e| e > 0 && e <= cut).count() as u64;
        let next = {
            let mut log = RaftStorage::open(&data)
                .unwrap_or_else(|e| panic!("open after cut at {cut} failed: {e}"));
            let rs = log
                .load()
                .unwrap_or_else(|e| panic!("load after cut at {cut} failed: {e}"));
            let have = rs.entries.len() as u64;
            assert!(
                have >= whole,
                "cut at {cut}: {whole} batches were wholly written, {have} survived"
            );
            assert!(have <= batches);
            for (k, e) in rs.entries.iter().enumerate() {
                let i = k as u64 + 1;
                assert_eq!(
                    *e,
                    entry(i, i, 300 + (i as usize * 37) % 200),
                    "cut at {cut}"
                );
            }
            // A synced write after recovery must survive the next restart.
            log.persist(&persist(1000, vec![entry(1000, have + 1, 50)]))
                .unwrap();
            have + 1
        };
        let mut log = RaftStorage::open(&data).unwrap();
        let rs = log.load().unwrap();
        assert_eq!(
            rs.entries.len() as u64,
            next,
            "cut at {cut}: post-recovery write lost"
        );
        assert_eq!(rs.hard_state.term, 1000);
        drop(log);
        fs::remove_dir_all(&data).unwrap();
    }
}
