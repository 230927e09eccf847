//! Each cause of a role, term or leader change gives its reason in the reported `SoftState`,
//! so that a driver can log why an election happened.

use raft_core::{ChangeReason, Config, Message, MessageBody, RawNode, Ready, Role, SoftState};

mod common;
use common::{drain, msg};

fn config(pre_vote: bool, check_quorum: bool) -> Config {
    let mut cfg = Config::new(1, vec![1, 2, 3]);
    cfg.pre_vote = pre_vote;
    cfg.check_quorum = check_quorum;
    cfg
}

/// The soft state the last of these `Ready`s reported.
fn reported(readies: &[Ready]) -> SoftState {
    readies
        .iter()
        .rev()
        .find_map(|r| r.soft_state)
        .expect("a role, term or leader change was reported")
}

fn heartbeat(from: u64, term: u64) -> Message {
    msg(
        from,
        1,
        term,
        MessageBody::Heartbeat {
            commit: 0,
            read_round: 0,
        },
    )
}

fn vote(from: u64, term: u64, granted: bool) -> Message {
    msg(from, 1, term, MessageBody::VoteResponse { granted })
}

/// Node 1 following node 2 in term 1.
fn follower_of_2(pre_vote: bool, check_quorum: bool) -> RawNode {
    let mut n = RawNode::new(config(pre_vote, check_quorum)).unwrap();
    n.step(heartbeat(2, 1));
    drain(&mut n);
    n
}

/// Node 1 leading term 1 (votes from itself and node 2).
fn leader(check_quorum: bool) -> RawNode {
    let mut n = RawNode::new(config(false, check_quorum)).unwrap();
    n.campaign();
    drain(&mut n);
    n.step(vote(2, 1, true));
    drain(&mut n);
    assert_eq!(n.role(), Role::Leader);
    n
}

#[test]
fn a_new_node_reports_that_it_started() {
    let n = RawNode::new(config(true, true)).unwrap();
    assert_eq!(n.soft_state().reason, ChangeReason::Started);
}

#[test]
fn a_heartbeat_from_a_new_leader_says_the_leader_was_found() {
    let mut n = RawNode::new(config(false, false)).unwrap();
    n.step(heartbeat(2, 1));
    let soft = reported(&drain(&mut n));
    assert_eq!(soft.leader, Some(2));
    assert_eq!(soft.reason, ChangeReason::LeaderFound { leader: 2 });
}

#[test]
fn a_silent_leader_gives_an_election_timeout_naming_it() {
    let mut n = follower_of_2(false, false);
    let mut readies = Vec::new();
    while n.role() == Role::Follower {
        n.tick();
        readies.extend(drain(&mut n));
    }
    let soft = reported(&readies);
    assert_eq!(
        (soft.role, soft.term, soft.leader),
        (Role::Candidate, 2, None)
    );
    match soft.reason {
        ChangeReason::ElectionTimeout {
            leader: Some(2),
            ticks,
        } => assert!(ticks >= Config::new(1, vec![1]).election_ticks),
        other => panic!("expected an election timeout naming leader 2, got {other:?}"),
    }
}

#[test]
fn an_election_timeout_starts_the_pre_vote_with_that_reason() {
    let mut n = follower_of_2(true, false);
    let mut readies = Vec::new();
    while n.role() == Role::Follower {
        n.tick();
        readies.extend(drain(&mut n));
    }
    let soft = reported(&readies);
    assert_eq!(soft.role, Role::PreCandidate);
    assert!(matches!(
        soft.reason,
        ChangeReason::ElectionTimeout {
            leader: Some(2),
            ..
        }
    ));
}

#[test]
fn an_asked_for_campaign_says_so() {
    let mut n = RawNode::new(config(false, false)).unwrap();
    n.campaign();
    let soft = reported(&drain(&mut n));
    assert_eq!(soft.role, Role::Candidate);
    assert_eq!(soft.reason, ChangeReason::CampaignRequested);
}

#[test]
fn a_won_pre_vote_then_a_won_election() {
    let mut n = RawNode::new(config(true, false)).unwrap();
    n.campaign();
    assert_eq!(reported(&drain(&mut n)).role, Role::PreCandidate);
    n.step(msg(2, 1, 1, MessageBody::PreVoteResponse { granted: true }));
    let soft = reported(&drain(&mut n));
    assert_eq!((soft.role, soft.term), (Role::Candidate, 1));
    assert_eq!(soft.reason, ChangeReason::PreVoteWon);
    n.step(vote(2, 1, true));
    let soft = reported(&drain(&mut n));
    assert_eq!(soft.role, Role::Leader);
    assert_eq!(soft.reason, ChangeReason::ElectionWon);
}

#[test]
fn a_lost_pre_vote_and_a_lost_election_say_which() {
    let mut n = RawNode::new(config(true, false)).unwrap();
    n.campaign();
    drain(&mut n);
    n.step(msg(
        2,
        1,
        0,
        MessageBody::PreVoteResponse { granted: false },
    ));
    n.step(msg(
        3,
        1,
        0,
        MessageBody::PreVoteResponse { granted: false },
    ));
    let soft = reported(&drain(&mut n));
    assert_eq!(soft.role, Role::Follower);
    assert_eq!(soft.reason, ChangeReason::ElectionLost { pre_vote: true });

    let mut n = RawNode::new(config(false, false)).unwrap();
    n.campaign();
    drain(&mut n);
    n.step(vote(2, 1, false));
    n.step(vote(3, 1, false));
    let soft = reported(&drain(&mut n));
    assert_eq!(soft.role, Role::Follower);
    assert_eq!(soft.reason, ChangeReason::ElectionLost { pre_vote: false });
}

#[test]
fn a_leader_that_hears_no_majority_steps_down_for_check_quorum() {
    let mut n = leader(true);
    let window = config(false, true).check_quorum_window();
    let mut readies = Vec::new();
    while n.role() == Role::Leader {
        n.tick();
        readies.extend(drain(&mut n));
    }
    let soft = reported(&readies);
    assert_eq!(soft.role, Role::Follower);
    assert_eq!(soft.reason, ChangeReason::QuorumLost { ticks: window });
}

#[test]
fn a_transfer_names_the_leader_that_handed_over() {
    let mut n = follower_of_2(true, true);
    n.step(msg(2, 1, 1, MessageBody::TimeoutNow));
    let soft = reported(&drain(&mut n));
    assert_eq!((soft.role, soft.term), (Role::Candidate, 2));
    assert_eq!(soft.reason, ChangeReason::TransferFrom { from: 2 });
}

#[test]
fn a_higher_term_names_its_sender() {
    let mut n = leader(false);
    n.step(msg(
        3,
        1,
        5,
        MessageBody::VoteRequest {
            last_log_index: 0,
            last_log_term: 0,
            transfer: false,
        },
    ));
    let soft = reported(&drain(&mut n));
    assert_eq!(
        (soft.role, soft.term, soft.leader),
        (Role::Follower, 5, None)
    );
    assert_eq!(soft.reason, ChangeReason::HigherTerm { from: 3 });
}

#[test]
fn a_change_of_reason_alone_is_not_reported() {
    // A pre-candidate whose pre-vote times out tries again: same role, term and leader.
    let mut n = RawNode::new(config(true, false)).unwrap();
    n.campaign();
    drain(&mut n);
    for _ in 0..100 {
        n.tick();
        assert!(drain(&mut n).iter().all(|r| r.soft_state.is_none()));
    }
    assert_eq!(n.role(), Role::PreCandidate);
}
