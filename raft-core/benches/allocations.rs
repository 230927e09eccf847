//! Heap allocations per committed entry on the cluster `commit_throughput` measures, counted
//! by a global allocator that wraps the system one. Allocation counts are deterministic, so
//! unlike the throughput they do not depend on what else the machine runs.
//!
//! `cargo bench -p raft-core --bench allocations`

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use support::Cluster;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations (and reallocations) per entry over `batches` batches of `batch` entries, after
/// a warm-up that lets every buffer reach its steady size.
fn allocations_per_entry(batch: usize, batches: usize) -> f64 {
    let payloads: Vec<Bytes> = (0..batch)
        .map(|i| Bytes::from(vec![i as u8; 128]))
        .collect();
    let mut cluster = Cluster::elected();
    for _ in 0..batches {
        cluster.commit_batch(&payloads);
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..batches {
        cluster.commit_batch(&payloads);
    }
    let counted = ALLOCATIONS.load(Ordering::Relaxed) - before;
    counted as f64 / (batch * batches) as f64
}

fn main() {
    // `cargo bench` passes `--bench` (`cargo test --benches` does not: then a short run); a
    // number among the arguments picks that batch size only (for `perf stat` on one size).
    let args: Vec<String> = std::env::args().skip(1).collect();
    let batches = if args.iter().any(|a| a == "--bench") {
        2_000
    } else {
        20
    };
    let picked: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    for batch in [1, 64] {
        if !picked.is_empty() && !picked.contains(&batch) {
            continue;
        }
        let per_entry = allocations_per_entry(batch, batches);
        println!("allocations per committed entry, 3 nodes, batch {batch}: {per_entry:.2}");
    }
}
