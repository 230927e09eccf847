//! The steps a range takes towards the first range's configuration, one rule per test.

use std::collections::{BTreeMap, BTreeSet};

use kv::MemberAddrs;
use raft_core::{Membership, NodeId};

use super::{next_step, same_configuration, FollowStep, Replica};

fn addrs(id: NodeId) -> MemberAddrs {
    MemberAddrs::new(format!("h:{}", 7100 + id), format!("h:{}", 7000 + id))
}

fn book(ids: impl IntoIterator<Item = NodeId>) -> BTreeMap<NodeId, MemberAddrs> {
    ids.into_iter().map(|id| (id, addrs(id))).collect()
}

fn config(voters: &[NodeId], learners: &[NodeId]) -> Membership {
    Membership {
        voters: voters.iter().copied().collect(),
        outgoing: BTreeSet::new(),
        learners: learners.iter().copied().collect(),
    }
}

/// The step range `have` (led by node 1, with address book `have_book`) takes towards `want`;
/// `ready` lists the learners caught up.
fn step(
    (want, want_book): (&Membership, &BTreeMap<NodeId, MemberAddrs>),
    (have, have_book): (&Membership, &BTreeMap<NodeId, MemberAddrs>),
    ready: &[NodeId],
) -> Option<FollowStep> {
    let (want_lookup, have_lookup) = (|id| want_book.get(&id), |id| have_book.get(&id));
    let target = Replica {
        membership: want,
        addrs: &want_lookup,
    };
    let current = Replica {
        membership: have,
        addrs: &have_lookup,
    };
    let next = next_step(&target, &current, |id| ready.contains(&id), 1);
    if next.is_some() {
        assert!(
            !same_configuration(&target, &current),
            "a step is taken only where the configurations differ"
        );
    }
    next
}

#[test]
fn a_member_new_to_the_first_range_joins_the_range_as_a_learner_with_its_addresses() {
    let want = config(&[1, 2, 3], &[4]);
    let have = config(&[1, 2, 3], &[]);
    assert_eq!(
        step((&want, &book(1..=4)), (&have, &book(1..=3)), &[]),
        Some(FollowStep::AddLearner(4, addrs(4)))
    );
}

#[test]
fn a_member_whose_address_is_not_known_yet_is_not_added() {
    let want = config(&[1, 2, 3], &[4]);
    let have = config(&[1, 2, 3], &[]);
    assert_eq!(
        step((&want, &book(1..=3)), (&have, &book(1..=3)), &[]),
        None
    );
}

#[test]
fn a_members_new_addresses_are_recorded() {
    let want = config(&[1, 2, 3], &[]);
    let mut moved = book(1..=3);
    moved.insert(2, MemberAddrs::new("new:1", "new:2"));
    assert_eq!(
        step((&want, &moved), (&want, &book(1..=3)), &[]),
        Some(FollowStep::UpdateAddrs(
            2,
            MemberAddrs::new("new:1", "new:2")
        ))
    );
}

#[test]
fn a_learner_made_a_voter_is_promoted_only_once_it_has_caught_up_with_the_range() {
    let want = config(&[1, 2, 3, 4], &[]);
    let have = config(&[1, 2, 3], &[4]);
    let books = (book(1..=4), book(1..=4));
    assert_eq!(step((&want, &books.0), (&have, &books.1), &[]), None);
    assert_eq!(
        step((&want, &books.0), (&have, &books.1), &[4]),
        Some(FollowStep::Promote(4))
    );
}

#[test]
fn a_voter_leaves_only_once_every_promotion_is_done_but_a_learner_leaves_at_once() {
    // Node 3 is replaced by node 4: the range keeps three voters throughout.
    let want = config(&[1, 2, 4], &[]);
    let have = config(&[1, 2, 3], &[4, 5]);
    let books = (book(1..=5), book(1..=5));
    assert_eq!(
        step((&want, &books.0), (&have, &books.1), &[]),
        Some(FollowStep::Remove(5)),
        "the learner the first range no longer has goes first"
    );
    let have = config(&[1, 2, 3], &[4]);
    assert_eq!(step((&want, &books.0), (&have, &books.1), &[]), None);
    assert_eq!(
        step((&want, &books.0), (&have, &books.1), &[4]),
        Some(FollowStep::Promote(4))
    );
    let have = config(&[1, 2, 3, 4], &[]);
    assert_eq!(
        step((&want, &books.0), (&have, &books.1), &[]),
        Some(FollowStep::Remove(3))
    );
}

#[test]
fn the_ranges_leader_removes_itself_after_every_other_member() {
    let want = config(&[3, 4], &[]);
    let have = config(&[1, 2, 3, 4], &[]);
    let books = (book(1..=4), book(1..=4));
    assert_eq!(
        step((&want, &books.0), (&have, &books.1), &[]),
        Some(FollowStep::Remove(2))
    );
    let have = config(&[1, 3, 4], &[]);
    assert_eq!(
        step((&want, &books.0), (&have, &books.1), &[]),
        Some(FollowStep::Remove(1))
    );
}

#[test]
fn a_voter_the_first_range_made_a_learner_is_removed_then_added_back_as_a_learner() {
    let want = config(&[1, 2], &[3]);
    let have = config(&[1, 2, 3], &[]);
    let books = (book(1..=3), book(1..=3));
    assert_eq!(
        step((&want, &books.0), (&have, &books.1), &[]),
        Some(FollowStep::Remove(3))
    );
    let have = config(&[1, 2], &[]);
    assert_eq!(
        step((&want, &books.0), (&have, &books.1), &[]),
        Some(FollowStep::AddLearner(3, addrs(3)))
    );
}

#[test]
fn nothing_is_proposed_while_the_range_is_joint_and_nothing_once_it_follows() {
    let want = config(&[1, 2, 4], &[]);
    let mut joint = config(&[1, 2, 4], &[]);
    joint.outgoing = [1, 2, 3].into();
    let books = (book(1..=4), book(1..=4));
    assert_eq!(step((&want, &books.0), (&joint, &books.1), &[]), None);
    assert_eq!(step((&want, &books.0), (&want, &books.1), &[]), None);
    let (want_lookup, have_lookup) = (|id| books.0.get(&id), |id| books.1.get(&id));
    let replica = |membership, addrs| Replica { membership, addrs };
    assert!(same_configuration(
        &replica(&want, &want_lookup),
        &replica(&want, &have_lookup)
    ));
    assert!(!same_configuration(
        &replica(&want, &want_lookup),
        &replica(&joint, &have_lookup)
    ));
}
