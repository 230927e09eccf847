//! When a follower's election timer restarts (Raft Figure 2, "Rules for Servers", Followers):
//! only on granting a vote or on hearing from the current leader. A vote request it rejects,
//! even one with a higher term, must not hold back its own campaign: with `pre_vote` off, stale
//! candidates could otherwise starve the only node whose log can win.

use raft_core::{Config, Message, MessageBody, RawNode, Ready, Role};

mod common;
use common::{drain, msg};

fn follower(id: u64) -> RawNode {
    common::node(id, &[1, 2, 3])
}

fn vote_request(from: u64, to: u64, term: u64, last_log_index: u64, last_log_term: u64) -> Message {
    let body = MessageBody::VoteRequest {
        last_log_index,
        last_log_term,
        transfer: false,
    };
    msg(from, to, term, body)
}

fn granted(readies: &[Ready]) -> bool {
    readies
        .iter()
        .flat_map(|r| &r.messages)
        .any(|m| matches!(m.body, MessageBody::VoteResponse { granted: true }))
}

/// Gives node 1 a log no other node has, so that it alone can win: one entry of term 1.
fn electable_node() -> RawNode {
    let mut n = follower(1);
    n.step(Message {
        from: 2,
        to: 1,
        term: 1,
        body: MessageBody::AppendRequest {
            prev_log_index: 0,
            prev_log_term: 0,
            entries: vec![raft_core::Entry::new(
                1,
                1,
                raft_core::EntryKind::Normal,
                bytes::Bytes::from_static(b"x"),
            )],
            commit: 0,
        },
    });
    drain(&mut n);
    n
}

#[test]
fn a_rejected_vote_request_with_a_higher_term_does_not_restart_the_election_timer() {
    let mut n = electable_node();
    let election_ticks = Config::new(1, vec![1, 2, 3]).election_ticks;
    // A stale candidate (empty log) asks just before every possible timeout, each time with a
    // higher term. Node 1 rejects every request, so its timer keeps running and it campaigns
    // within its randomized timeout (below 2 * election_ticks) in spite of them.
    let mut term = 1;
    for _ in 0..(2 * election_ticks) {
        if n.role() == Role::Candidate {
            break;
        }
        for _ in 0..(election_ticks - 1) {
            n.tick();
            if n.role() == Role::Candidate {
                break;
            }
        }
        if n.role() == Role::Candidate {
            break;
        }
        term += 1;
        n.step(vote_request(3, 1, term, 0, 0));
        let readies = drain(&mut n);
        assert!(!granted(&readies), "a stale log must not win the vote");
        assert_eq!(
            n.term(),
            term,
            "a higher term is adopted even when rejecting"
        );
    }
    assert_eq!(
        n.role(),
        Role::Candidate,
        "rejected vote requests held back the only electable node's campaign"
    );
}

#[test]
fn a_granted_vote_restarts_the_election_timer() {
    let mut n = follower(1);
    let election_ticks = Config::new(1, vec![1, 2, 3]).election_ticks;
    for _ in 0..(election_ticks - 1) {
        n.tick();
    }
    n.step(vote_request(2, 1, 1, 0, 0));
    assert!(granted(&drain(&mut n)));
    for _ in 0..(election_ticks - 1) {
        n.tick();
    }
    assert_eq!(
        n.role(),
        Role::Follower,
        "a node that just granted a vote waits a whole election timeout before campaigning"
    );
}
