//! The log of a range created by a split: its start, written once, and a Raft group that can
//! run from it.

use super::tests::{ent, persist};
use super::*;
use crate::state_machine::{RANGE_INITIAL_INDEX, RANGE_INITIAL_TERM};
use raft_core::{Config, Message, RawNode, Role};

fn split_start(voters: &[u64]) -> SnapshotMeta {
    SnapshotMeta::new(
        RANGE_INITIAL_INDEX,
        RANGE_INITIAL_TERM,
        Membership::with_voters(voters.iter().copied()),
    )
}

#[test]
fn a_split_range_s_log_starts_at_the_initial_point_once_and_keeps_it_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let first = RaftStorage::open(dir.path()).unwrap();
        let mut child = first.open_range(2).unwrap();
        child.start_split_range(split_start(&[1, 2, 3])).unwrap();
        // Called again at every start, with whatever the caller has: nothing changes.
        child.start_split_range(split_start(&[9])).unwrap();
    }
    let first = RaftStorage::open(dir.path()).unwrap();
    let mut child = first.open_range(2).unwrap();
    let rs = child.load().unwrap();
    assert_eq!(rs.snapshot, split_start(&[1, 2, 3]));
    assert_eq!(
        rs.hard_state,
        HardState {
            term: RANGE_INITIAL_TERM,
            vote: None,
            commit: RANGE_INITIAL_INDEX
        }
    );
    assert!(rs.entries.is_empty());
    assert_eq!(rs.applied, RANGE_INITIAL_INDEX);
    assert_eq!(child.first_index(), RANGE_INITIAL_INDEX + 1);
    // The first range's log is not touched.
    let mut first = first;
    assert_eq!(first.load().unwrap().hard_state, HardState::default());
}

#[test]
fn a_log_with_state_is_left_alone_and_the_first_range_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = RaftStorage::open(dir.path()).unwrap();
    assert!(first.start_split_range(split_start(&[1])).is_err());
    // A replica that heard from the new group's leader before it applied the split.
    let mut child = first.open_range(3).unwrap();
    let hs = HardState {
        term: 7,
        vote: Some(2),
        commit: 0,
    };
    child.persist(&persist(Some(hs), Vec::new())).unwrap();
    child.start_split_range(split_start(&[1, 2])).unwrap();
    let rs = child.load().unwrap();
    assert_eq!(rs.hard_state, hs);
    assert_eq!(rs.snapshot, SnapshotMeta::default());
    let mut other = first.open_range(4).unwrap();
    other.persist(&persist(None, vec![ent(1, 1, "x")])).unwrap();
    other.start_split_range(split_start(&[1])).unwrap();
    assert_eq!(other.load().unwrap().entries.len(), 1);
}

/// Three replicas start the new group from what `start_split_range` wrote, as the node's
/// start does (`net/src/node/start.rs`: no voters from the configuration, the membership
/// from the log start): followers of the initial term, which elect a leader that commits
/// entries after the initial index.
#[test]
fn a_group_started_from_a_split_range_s_log_elects_a_leader_and_commits() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut logs: Vec<RaftStorage> = dirs
        .iter()
        .map(|d| {
            let first = RaftStorage::open(d.path()).unwrap();
            let mut child = first.open_range(2).unwrap();
            child.start_split_range(split_start(&[1, 2, 3])).unwrap();
            child
        })
        .collect();
    let mut nodes: Vec<RawNode> = logs
        .iter_mut()
        .enumerate()
        .map(|(k, log)| {
            let mut cfg = Config::new(k as u64 + 1, Vec::new());
            cfg.seed = k as u64 + 11;
            RawNode::restart(cfg, log.load().unwrap()).unwrap()
        })
        .collect();
    for n in &nodes {
        assert_eq!((n.role(), n.term()), (Role::Follower, RANGE_INITIAL_TERM));
    }
    let mut committed: Vec<Vec<Index>> = vec![Vec::new(); 3];
    for _round in 0..200 {
        let mut inflight: Vec<Message> = Vec::new();
        for (k, node) in nodes.iter_mut().enumerate() {
            node.tick();
            while node.has_ready() {
                let ready = node.take_ready();
                assert!(ready.snapshot_write.is_none() && ready.snapshot_to_fetch.is_none());
                if let Some(p) = &ready.persist {
                    logs[k].persist(p).unwrap();
                    node.on_persisted(p.id);
                }
                committed[k].extend(ready.committed.iter().map(|e| e.index));
                inflight.extend(ready.messages);
            }
        }
        for m in inflight {
            nodes[(m.to - 1) as usize].step(m);
        }
        if committed.iter().all(|c| !c.is_empty()) {
            break;
        }
    }
    let leaders: Vec<_> = nodes.iter().filter(|n| n.role() == Role::Leader).collect();
    assert_eq!(leaders.len(), 1, "one leader");
    assert!(leaders[0].term() > RANGE_INITIAL_TERM);
    for c in &committed {
        // The new leader's first entry follows the initial index.
        assert_eq!(c.first(), Some(&(RANGE_INITIAL_INDEX + 1)), "{committed:?}");
    }
}
