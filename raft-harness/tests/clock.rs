//! Time carried in the log (`clock.rs`): the leader stamps its clock in front of what it
//! appends once the clock has moved, so every replica reads the same time at the same index.

use bytes::Bytes;
use raft_core::clock::decode_clock;
use raft_core::{Entry, EntryKind, Role};
use raft_harness::{Cluster, Violation};

fn stamps(c: &Cluster, id: u64) -> Vec<(u64, u64)> {
    let core = c.core(id);
    (1..=core.last_index())
        .filter_map(|i| core.entry(i))
        .filter(|e| e.kind == EntryKind::Clock)
        .map(|e: &Entry| (e.index, decode_clock(&e.payload).expect("a clock payload")))
        .collect()
}

#[test]
fn the_leader_stamps_its_clock_before_proposals_once_it_moved() -> Result<(), Violation> {
    let mut c = Cluster::new(3, 41, |cfg| cfg.clock_stamps = true);
    c.core_mut(1).set_clock(1_000);
    c.campaign(1)?;
    c.stabilize()?;
    assert_eq!(c.core(1).role(), Role::Leader);
    assert_eq!(
        stamps(&c, 1),
        vec![(2, 1_000)],
        "stamped right after the no-op"
    );

    assert!(c.propose(1, Bytes::from_static(b"a"))?);
    assert_eq!(
        stamps(&c, 1).len(),
        1,
        "the clock did not move: no new stamp"
    );
    c.core_mut(1).set_clock(1_005);
    assert!(c.propose(1, Bytes::from_static(b"b"))?);
    let last = c.core(1).last_index();
    assert_eq!(
        stamps(&c, 1).last(),
        Some(&(last - 1, 1_005)),
        "stamp, then the proposal"
    );

    // A forwarded proposal is stamped by the leader, with the leader's clock.
    c.core_mut(2).set_clock(9_999_999);
    c.core_mut(1).set_clock(1_010);
    c.stabilize()?;
    assert!(c.propose(2, Bytes::from_static(b"c"))?);
    c.stabilize()?;
    assert_eq!(stamps(&c, 1).last().map(|s| s.1), Some(1_010));
    assert!(stamps(&c, 1).iter().all(|s| s.1 != 9_999_999));

    // Idle, the driver may stamp by itself; followers hold the same stamps.
    c.core_mut(1).set_clock(1_500);
    assert!(c.core_mut(1).stamp_clock());
    assert!(!c.core_mut(1).stamp_clock(), "nothing new to stamp");
    c.tick(1)?; // the harness drives the leader's Ready
    c.stabilize()?;
    assert_eq!(stamps(&c, 2), stamps(&c, 1));
    assert!(!c.core_mut(2).stamp_clock(), "only a leader stamps");
    Ok(())
}

#[test]
fn without_clock_stamps_nothing_is_stamped() -> Result<(), Violation> {
    let mut c = Cluster::new(3, 42, |_| {});
    c.core_mut(1).set_clock(1_000);
    c.campaign(1)?;
    c.stabilize()?;
    assert!(c.propose(1, Bytes::from_static(b"a"))?);
    assert!(!c.core_mut(1).stamp_clock());
    assert!(stamps(&c, 1).is_empty());
    Ok(())
}
