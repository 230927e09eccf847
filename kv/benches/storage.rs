//! Synced Raft appends against the disk's raw fdatasync rate, apply throughput, and point reads.
//!
//! Everything lives under `CARGO_TARGET_TMPDIR`, so the raw fsync baseline and the databases are
//! on the same file system. Run: `cargo bench -p kv --bench storage`.

use std::fs::OpenOptions;
use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use kv::{Command, KvStateMachine, Op, RaftStorage};
use raft_core::{Entry, EntryKind, HardState, Persist, WriteId};

fn bench_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir")
}

fn raw_fdatasync(c: &mut Criterion) {
    raw_fdatasync_named(c, "append_128B_fdatasync");
}

/// The same baseline once more after the database runs, to see whether the disk drifted.
fn raw_fdatasync_again(c: &mut Criterion) {
    raw_fdatasync_named(c, "append_128B_fdatasync_after");
}

fn raw_fdatasync_named(c: &mut Criterion, name: &str) {
    let dir = bench_dir();
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path().join("raw"))
        .expect("open");
    let buf = [0x5au8; 128];
    let mut g = c.benchmark_group("raw");
    g.throughput(Throughput::Elements(1));
    g.bench_function(name, |b| {
        b.iter(|| {
            f.write_all(&buf).expect("write");
            f.sync_data().expect("sync");
        })
    });
    g.finish();
}

fn synced_appends(c: &mut Criterion) {
    let mut g = c.benchmark_group("raft_storage_persist_synced");
    for batch in [1usize, 64, 1024] {
        let dir = bench_dir();
        let mut log = RaftStorage::open(dir.path()).expect("open");
        let payload = Bytes::from(vec![0x42u8; 128]);
        let mut next = 1u64;
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(format!("batch_{batch}x128B"), |b| {
            b.iter(|| {
                let entries: Vec<Entry> = (next..next + batch as u64)
                    .map(|i| Entry::new(1, i, EntryKind::Normal, payload.clone()))
                    .collect();
                next += batch as u64;
                log.persist(&Persist {
                    id: WriteId { seq: next, term: 1 },
                    hard_state: Some(HardState {
                        term: 1,
                        vote: Some(1),
                        commit: next - 1,
                    }),
                    entries,
                })
                .expect("persist");
            })
        });
    }
    g.finish();
}

fn apply(c: &mut Criterion) {
    let dir = bench_dir();
    let mut sm = KvStateMachine::open(dir.path()).expect("open");
    let value = Bytes::from(vec![0x61u8; 128]);
    let mut next = 1u64;
    let batch = 1024u64;
    let mut g = c.benchmark_group("kv_apply_unsynced");
    g.throughput(Throughput::Elements(batch));
    g.bench_function("batch_1024_set_128B_1000_clients", |b| {
        b.iter_batched(
            || {
                let es: Vec<Entry> = (next..next + batch)
                    .map(|i| {
                        let cmd = Command::new(
                            i % 1000,
                            i,
                            Op::Set {
                                key: Bytes::from(format!("key{:06}", i % 100_000)),
                                value: value.clone(),
                            },
                        );
                        Entry::new(1, i, EntryKind::Normal, cmd.encode())
                    })
                    .collect();
                next += batch;
                es
            },
            |es| sm.apply(&es).expect("apply"),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// Point reads of a state machine whose 200k keys sit in tables (compacted), in a fixed
/// scattered order: a hit, and a miss (a key between two stored ones).
fn point_reads(c: &mut Criterion) {
    const KEYS: u64 = 200_000;
    let dir = bench_dir();
    let mut sm = KvStateMachine::open(dir.path()).expect("open");
    let value = Bytes::from(vec![0x61u8; 128]);
    for first in (1..=KEYS).step_by(1000) {
        let es: Vec<Entry> = (first..first + 1000)
            .map(|i| {
                let op = Op::Set {
                    key: Bytes::from(format!("key{i:06}")),
                    value: value.clone(),
                };
                Entry::new(
                    1,
                    i,
                    EntryKind::Normal,
                    Command::new(i % 1000, i, op).encode(),
                )
            })
            .collect();
        sm.apply(&es).expect("apply");
    }
    sm.compact().expect("compact");
    let mut g = c.benchmark_group("kv_get");
    for (name, suffix) in [
        ("hit_200k_keys_in_tables", ""),
        ("miss_200k_keys_in_tables", "x"),
    ] {
        let mut i = 0u64;
        g.bench_function(name, |b| {
            b.iter(|| {
                // A stride coprime with the key count visits the keys scattered.
                i = (i + 7919) % KEYS;
                let key = format!("key{:06}{suffix}", i + 1);
                let found = sm.get(key.as_bytes()).expect("get");
                assert_eq!(found.is_some(), suffix.is_empty());
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = raw_fdatasync, synced_appends, raw_fdatasync_again, apply, point_reads
}
criterion_main!(benches);
