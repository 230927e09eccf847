//! What a driver learns from the calls it makes: whether a fetched snapshot was taken, that a
//! failed fetch is asked for again at the next word from the leader, and why a restart state
//! is refused.

use bytes::Bytes;
use raft_core::{
    Config, ConfigError, Entry, EntryKind, HardState, Membership, Message, MessageBody, RawNode,
    RestartState, SnapshotMeta, SnapshotToFetch,
};

mod common;
use common::{msg, persist_all};

fn follower() -> RawNode {
    common::node(2, &[1, 2, 3])
}

fn from_leader(body: MessageBody) -> Message {
    msg(1, 2, 1, body)
}

fn heartbeat() -> Message {
    from_leader(MessageBody::Heartbeat {
        commit: 0,
        read_round: 0,
    })
}

fn fetch_requests(n: &mut RawNode) -> Vec<SnapshotToFetch> {
    let mut out = Vec::new();
    while n.has_ready() {
        let rd = n.take_ready();
        persist_all(n, &rd);
        out.extend(rd.snapshot_to_fetch);
    }
    out
}

fn snapshot_at(index: u64) -> SnapshotMeta {
    SnapshotMeta::new(index, 1, Membership::with_voters([1, 2, 3]))
}

fn snapshot() -> SnapshotMeta {
    snapshot_at(5)
}

#[test]
fn a_failed_fetch_is_asked_for_again_at_the_next_heartbeat() {
    let mut n = follower();
    n.step(from_leader(MessageBody::InstallSnapshot {
        snapshot: Box::new(snapshot()),
    }));
    let asked = fetch_requests(&mut n);
    assert_eq!(asked.len(), 1);
    n.step(heartbeat());
    assert!(
        fetch_requests(&mut n).is_empty(),
        "a fetch in progress is not asked for again"
    );
    n.on_snapshot_fetch_failed(snapshot());
    assert!(fetch_requests(&mut n).is_empty(), "not in a tight loop");
    n.step(heartbeat());
    assert_eq!(
        fetch_requests(&mut n),
        asked,
        "asked again once the leader is heard"
    );
    n.step(heartbeat());
    assert!(fetch_requests(&mut n).is_empty(), "once per failure");
}

#[test]
fn on_snapshot_fetched_says_whether_the_core_took_the_snapshot() {
    let mut n = follower();
    assert!(!n.on_snapshot_fetched(snapshot()), "not asked for");
    n.step(from_leader(MessageBody::InstallSnapshot {
        snapshot: Box::new(snapshot()),
    }));
    fetch_requests(&mut n);
    assert!(
        !n.on_snapshot_fetched(snapshot_at(4)),
        "older than asked for"
    );
    assert!(n.on_snapshot_fetched(snapshot()));
    assert_eq!(
        n.applied_index(),
        5,
        "the core counts the snapshot as applied at once"
    );
    assert!(
        !n.on_snapshot_fetched(snapshot()),
        "a second report is not asked for"
    );
}

#[test]
fn a_restart_state_overlapping_its_snapshot_is_refused_as_an_overlap() {
    let entries = (4..=6)
        .map(|i| Entry::new(1, i, EntryKind::Normal, Bytes::new()))
        .collect();
    let state = RestartState {
        hard_state: HardState {
            term: 1,
            vote: None,
            commit: 5,
        },
        snapshot: snapshot(),
        entries,
        applied: 5,
    };
    let err = RawNode::restart(Config::new(2, vec![1, 2, 3]), state)
        .err()
        .expect("entries up to the snapshot must have been dropped");
    assert_eq!(
        err,
        ConfigError::EntriesOverlapSnapshot {
            first: 4,
            snapshot_index: 5
        },
        "{err}"
    );
}
