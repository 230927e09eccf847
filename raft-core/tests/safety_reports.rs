//! Breaches of safety that a core detects but did not cause (a peer or the driver broke its
//! side) are refused and kept for the driver to see in `RawNode::safety_violation`, not only
//! logged: a driver without a log subscriber, or a black-box test, must be able to tell a
//! safety violation from lost liveness. Hostile input must still never panic a node.

use bytes::Bytes;
use raft_core::{Entry, EntryKind, Message, MessageBody, RawNode, Role, SafetyViolation};

mod common;
use common::{drain, msg};

fn node(id: u64) -> RawNode {
    common::node(id, &[1, 2, 3])
}

/// n1 leads term 1 with n2's vote.
fn leader() -> RawNode {
    let mut n = node(1);
    n.campaign();
    drain(&mut n);
    n.step(msg(2, 1, 1, MessageBody::VoteResponse { granted: true }));
    drain(&mut n);
    assert_eq!(n.role(), Role::Leader);
    n
}

fn append(from: u64, to: u64, term: u64, prev: (u64, u64), terms: &[u64], commit: u64) -> Message {
    let entries = terms
        .iter()
        .enumerate()
        .map(|(i, &t)| Entry::new(t, prev.0 + 1 + i as u64, EntryKind::Normal, Bytes::new()))
        .collect();
    msg(
        from,
        to,
        term,
        MessageBody::AppendRequest {
            prev_log_index: prev.0,
            prev_log_term: prev.1,
            entries,
            commit,
        },
    )
}

#[test]
fn a_second_leader_in_my_term_is_reported_and_ignored() {
    let mut n = leader();
    assert_eq!(n.safety_violation(), None);
    let last = n.last_index();
    n.step(append(2, 1, 1, (0, 0), &[1], 0));
    assert_eq!(
        n.safety_violation(),
        Some(SafetyViolation::TwoLeadersInOneTerm { term: 1, other: 2 })
    );
    assert_eq!(n.role(), Role::Leader);
    assert_eq!(
        n.last_index(),
        last,
        "the other leader's append was ignored"
    );
}

#[test]
fn an_append_contradicting_a_committed_entry_is_reported_and_refused() {
    let mut n = node(2);
    n.step(append(1, 2, 1, (0, 0), &[1, 1], 2));
    drain(&mut n);
    assert_eq!(n.commit_index(), 2);
    // A leader of term 2 whose log lacks the committed entries: it could not have been elected.
    n.step(append(3, 2, 2, (0, 0), &[2], 0));
    let readies = drain(&mut n);
    assert_eq!(
        n.safety_violation(),
        Some(SafetyViolation::CommittedEntryConflict {
            term: 2,
            leader: 3,
            index: 1,
            committed: 2
        })
    );
    assert_eq!(n.term_at(1), Some(1), "the committed entry stays");
    assert!(
        readies
            .iter()
            .flat_map(|r| &r.messages)
            .all(|m| !matches!(m.body, MessageBody::AppendResponse { success: true, .. })),
        "the contradicting append is not acknowledged"
    );
}

#[test]
fn an_applied_index_beyond_what_was_handed_out_is_reported_and_ignored() {
    let mut n = node(2);
    n.step(append(1, 2, 1, (0, 0), &[1, 1], 1));
    drain(&mut n);
    n.on_applied(1);
    assert_eq!(n.safety_violation(), None);
    n.on_applied(2);
    assert_eq!(
        n.safety_violation(),
        Some(SafetyViolation::AppliedBeyondHandedOut {
            index: 2,
            handed_out: 1
        })
    );
    assert_eq!(n.applied_index(), 1);
}

#[test]
fn an_acknowledgement_beyond_the_leaders_log_is_reported_and_ignored() {
    let mut n = leader();
    let last = n.last_index();
    n.step(msg(
        2,
        1,
        1,
        MessageBody::AppendResponse {
            success: true,
            index: last + 5,
            hint_index: 0,
            hint_term: 0,
        },
    ));
    assert_eq!(
        n.safety_violation(),
        Some(SafetyViolation::AckBeyondLog {
            from: 2,
            index: last + 5,
            last_index: last
        })
    );
    assert_eq!(
        n.commit_index(),
        0,
        "nothing commits on a false acknowledgement"
    );
}

#[test]
fn the_first_violation_is_kept() {
    let mut n = leader();
    n.step(append(2, 1, 1, (0, 0), &[1], 0));
    n.on_applied(9);
    assert!(matches!(
        n.safety_violation(),
        Some(SafetyViolation::TwoLeadersInOneTerm { .. })
    ));
    assert!(n
        .safety_violation()
        .unwrap()
        .to_string()
        .contains("election safety"));
}
