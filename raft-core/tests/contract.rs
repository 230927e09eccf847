//! The driver-facing contract of the core (DESIGN.md §3), tested on single cores fed by hand:
//! messages that promise durability wait for it, stale acknowledgements do nothing, restarts
//! assume only what was persisted, and hostile input is harmless.

use bytes::Bytes;
use raft_core::{
    Config, ConfigError, Entry, EntryKind, HardState, Message, MessageBody, ProposeError, Proposed,
    RawNode, Ready, RestartState, Role, SnapshotMeta, WriteId,
};

mod common;
use common::{drain, msg, node, persist_all};

fn votes_granted(rd: &Ready) -> usize {
    rd.messages
        .iter()
        .filter(|m| matches!(m.body, MessageBody::VoteResponse { granted: true }))
        .count()
}

/// Makes a single-node cluster's node the leader, persisting as asked.
fn single_leader() -> RawNode {
    let mut n = node(1, &[1]);
    n.campaign();
    for _ in 0..3 {
        let rd = n.take_ready();
        persist_all(&mut n, &rd);
    }
    assert_eq!(n.role(), Role::Leader);
    n
}

#[test]
fn a_vote_is_sent_only_after_it_is_durable() {
    let mut n = node(2, &[1, 2, 3]);
    n.step(msg(
        1,
        2,
        1,
        MessageBody::VoteRequest {
            last_log_index: 0,
            last_log_term: 0,
            transfer: false,
        },
    ));
    let rd = n.take_ready();
    let write = rd.persist.clone().expect("the vote must be written");
    assert_eq!(write.hard_state.map(|h| h.vote), Some(Some(1)));
    assert_eq!(votes_granted(&rd), 0, "granted before the vote was durable");
    n.on_persisted(write.id);
    assert_eq!(votes_granted(&n.take_ready()), 1);
}

#[test]
fn an_append_is_acknowledged_only_after_it_is_durable() {
    let mut n = node(2, &[1, 2, 3]);
    let e = Entry::new(1, 1, EntryKind::Normal, Bytes::from_static(b"x"));
    n.step(msg(
        1,
        2,
        1,
        MessageBody::AppendRequest {
            prev_log_index: 0,
            prev_log_term: 0,
            entries: vec![e],
            commit: 0,
        },
    ));
    let rd = n.take_ready();
    let write = rd.persist.clone().expect("entries must be written");
    assert_eq!(write.entries.len(), 1);
    assert!(rd
        .messages
        .iter()
        .all(|m| !matches!(m.body, MessageBody::AppendResponse { success: true, .. })));
    n.on_persisted(write.id);
    let rd = n.take_ready();
    assert!(rd.messages.iter().any(|m| matches!(
        m.body,
        MessageBody::AppendResponse {
            success: true,
            index: 1,
            ..
        }
    )));
}

#[test]
fn a_leader_counts_itself_only_after_its_own_write() {
    let mut n = single_leader();
    let commit = n.commit_index();
    let Ok(Proposed::Appended { last, .. }) = n.propose(Bytes::from_static(b"x")) else {
        panic!("leader must append")
    };
    let rd = n.take_ready();
    assert!(rd.committed.is_empty());
    assert_eq!(
        n.commit_index(),
        commit,
        "committed before its own write was durable"
    );
    n.on_persisted(rd.persist.expect("a write").id);
    assert_eq!(n.commit_index(), last);
    let rd = n.take_ready();
    assert_eq!(rd.committed.last().map(|e| e.index), Some(last));
}

#[test]
fn a_stale_persistence_ack_is_ignored() {
    let mut n = single_leader();
    n.propose(Bytes::from_static(b"x")).expect("leader");
    let write = n.take_ready().persist.expect("a write").id;
    let commit = n.commit_index();
    // The same sequence number from an earlier term, and one never issued: both ignored.
    n.on_persisted(WriteId {
        seq: write.seq,
        term: write.term - 1,
    });
    n.on_persisted(WriteId {
        seq: write.seq + 7,
        term: write.term,
    });
    assert_eq!(n.commit_index(), commit);
    n.on_persisted(write);
    assert!(n.commit_index() > commit);
}

#[test]
fn a_restarted_node_assumes_only_what_was_persisted() {
    // The node voted for 1 in term 3 and stored two entries; it must not vote for 2 in term 3.
    let entries = vec![
        Entry::new(1, 1, EntryKind::Noop, Bytes::new()),
        Entry::new(2, 2, EntryKind::Normal, Bytes::from_static(b"a")),
    ];
    let state = RestartState {
        hard_state: HardState {
            term: 3,
            vote: Some(1),
            commit: 1,
        },
        entries,
        applied: 0,
        ..RestartState::default()
    };
    let mut cfg = Config::new(3, vec![1, 2, 3]);
    cfg.pre_vote = false;
    let mut n = RawNode::restart(cfg, state).expect("valid state");
    assert_eq!((n.term(), n.last_index(), n.commit_index()), (3, 2, 1));
    n.step(msg(
        2,
        3,
        3,
        MessageBody::VoteRequest {
            last_log_index: 9,
            last_log_term: 3,
            transfer: false,
        },
    ));
    let rd = n.take_ready();
    assert_eq!(votes_granted(&rd), 0, "voted twice in one term");
    // Entry 1 is committed and durable, so it is handed out for applying at once.
    assert_eq!(
        rd.committed.iter().map(|e| e.index).collect::<Vec<_>>(),
        vec![1]
    );
}

#[test]
fn restart_refuses_an_inconsistent_disk() {
    let cfg = Config::new(1, vec![1, 2, 3]);
    let gap = RestartState {
        hard_state: HardState {
            term: 1,
            vote: None,
            commit: 0,
        },
        entries: vec![Entry::new(1, 2, EntryKind::Normal, Bytes::new())],
        ..RestartState::default()
    };
    let err = RawNode::restart(cfg.clone(), gap)
        .err()
        .expect("a gap must be refused");
    assert_eq!(
        err,
        ConfigError::LogGap {
            expected: 1,
            found: 2
        }
    );
    let bad_vote = RestartState {
        hard_state: HardState {
            term: 1,
            vote: Some(0),
            commit: 0,
        },
        ..RestartState::default()
    };
    assert_eq!(
        RawNode::restart(cfg.clone(), bad_vote).err(),
        Some(ConfigError::VoteForNonVoter { vote: 0 })
    );
    // A driver that compacted its core but kept its stored entries gets the overlap named,
    // with what to do about it, rather than "a gap".
    let overlap = RestartState {
        hard_state: HardState {
            term: 1,
            vote: None,
            commit: 3,
        },
        snapshot: SnapshotMeta::new(3, 1, raft_core::Membership::with_voters([1, 2, 3])),
        entries: (1..=4)
            .map(|i| Entry::new(1, i, EntryKind::Normal, Bytes::new()))
            .collect(),
        applied: 3,
    };
    let err = RawNode::restart(cfg, overlap).err().expect("an overlap");
    assert_eq!(
        err,
        ConfigError::EntriesOverlapSnapshot {
            first: 1,
            snapshot_index: 3
        }
    );
    assert!(err.to_string().contains("drop stored entries"), "{err}");
}

#[test]
fn followers_forward_proposals_or_refuse_with_a_hint() {
    assert!(
        !Config::new(2, vec![1, 2, 3]).forward_to_leader,
        "a forwarded proposal may be lost silently, so forwarding is opt-in"
    );
    let mut cfg = Config::new(2, vec![1, 2, 3]);
    cfg.forward_to_leader = true;
    let mut n = RawNode::new(cfg).expect("valid");
    assert_eq!(
        n.propose(Bytes::from_static(b"x")),
        Err(ProposeError::NotLeader { leader_hint: None })
    );
    n.step(msg(
        1,
        2,
        1,
        MessageBody::Heartbeat {
            commit: 0,
            read_round: 0,
        },
    ));
    assert_eq!(
        n.propose(Bytes::from_static(b"x")),
        Ok(Proposed::Forwarded { to: 1 })
    );
    let rd = n.take_ready();
    assert!(rd
        .messages
        .iter()
        .any(|m| m.to == 1 && matches!(m.body, MessageBody::Propose { .. })));

    let mut cfg = Config::new(2, vec![1, 2, 3]);
    cfg.forward_to_leader = false;
    let mut n = RawNode::new(cfg).expect("valid");
    n.step(msg(
        1,
        2,
        1,
        MessageBody::Heartbeat {
            commit: 0,
            read_round: 0,
        },
    ));
    assert_eq!(
        n.propose(Bytes::from_static(b"x")),
        Err(ProposeError::NotLeader {
            leader_hint: Some(1)
        })
    );
}

#[test]
fn a_leader_refuses_proposals_past_the_uncommitted_limit() {
    let mut cfg = Config::new(1, vec![1, 2, 3]);
    cfg.max_uncommitted_bytes = 1000;
    let mut n = RawNode::new(cfg).expect("valid");
    n.campaign();
    let rd = n.take_ready();
    persist_all(&mut n, &rd);
    for from in [2, 3] {
        n.step(msg(
            from,
            1,
            1,
            MessageBody::PreVoteResponse { granted: true },
        ));
    }
    let rd = n.take_ready();
    persist_all(&mut n, &rd);
    for from in [2, 3] {
        n.step(msg(from, 1, 1, MessageBody::VoteResponse { granted: true }));
    }
    assert_eq!(n.role(), Role::Leader);
    let big = Bytes::from(vec![0u8; 600]);
    assert!(
        n.propose(big.clone()).is_ok(),
        "one proposal always fits an empty pipeline"
    );
    assert_eq!(n.propose(big), Err(ProposeError::TooManyUncommittedBytes));
}

#[test]
fn a_new_leader_serves_reads_only_after_committing_in_its_term() {
    let mut n = node(1, &[1, 2, 3]);
    n.campaign();
    let rd = n.take_ready();
    persist_all(&mut n, &rd);
    n.step(msg(2, 1, 1, MessageBody::VoteResponse { granted: true }));
    assert_eq!(n.role(), Role::Leader);
    n.read_index(Bytes::from_static(b"r"))
        .expect("leader accepts reads");
    let rd = n.take_ready();
    assert!(rd.read_states.is_empty());
    assert!(
        rd.messages
            .iter()
            .all(|m| !matches!(m.body, MessageBody::Heartbeat { read_round: r, .. } if r > 0)),
        "no read round before the no-op commits"
    );
    persist_all(&mut n, &rd);
    // n2 acknowledges the no-op: it commits, and the read's heartbeat round starts.
    n.step(msg(
        2,
        1,
        1,
        MessageBody::AppendResponse {
            success: true,
            index: 1,
            hint_index: 0,
            hint_term: 0,
        },
    ));
    assert_eq!(n.commit_index(), 1);
    let rd = n.take_ready();
    let round = rd
        .messages
        .iter()
        .find_map(|m| match m.body {
            MessageBody::Heartbeat { read_round, .. } if read_round > 0 => Some(read_round),
            _ => None,
        })
        .expect("a read round");
    n.step(msg(
        3,
        1,
        1,
        MessageBody::HeartbeatResponse { read_round: round },
    ));
    let rd = n.take_ready();
    assert_eq!(rd.read_states.len(), 1);
    assert_eq!(rd.read_states[0].index, 1);
}

#[test]
fn hostile_messages_change_nothing_and_never_panic() {
    let mut n = node(2, &[1, 2, 3]);
    let before = (n.term(), n.last_index(), n.commit_index());
    let e = |i, t| Entry::new(t, i, EntryKind::Normal, Bytes::new());
    let hostile = vec![
        msg(
            0,
            2,
            5,
            MessageBody::Heartbeat {
                commit: 5,
                read_round: 0,
            },
        ), // from nobody (a node outside our configuration is heard: ours may lag the leader's)
        msg(
            1,
            3,
            5,
            MessageBody::Heartbeat {
                commit: 5,
                read_round: 0,
            },
        ), // not for us
        msg(
            2,
            2,
            5,
            MessageBody::Heartbeat {
                commit: 5,
                read_round: 0,
            },
        ), // from ourselves
        msg(
            1,
            2,
            1,
            MessageBody::AppendRequest {
                prev_log_index: 0,
                prev_log_term: 0,
                entries: vec![e(2, 1)],
                commit: 0,
            },
        ),
        msg(
            1,
            2,
            1,
            MessageBody::AppendRequest {
                prev_log_index: u64::MAX,
                prev_log_term: 0,
                entries: vec![e(0, 1)],
                commit: 0,
            },
        ),
        msg(
            1,
            2,
            1,
            MessageBody::AppendRequest {
                prev_log_index: 0,
                prev_log_term: 0,
                entries: vec![e(1, 7)],
                commit: 0,
            },
        ),
        msg(
            1,
            2,
            1,
            MessageBody::AppendRequest {
                prev_log_index: 0,
                prev_log_term: 3,
                entries: vec![],
                commit: 0,
            },
        ),
    ];
    for m in hostile {
        n.step(m);
    }
    assert_eq!((n.term(), n.last_index(), n.commit_index()), before);
    // Well-formed but far ahead: an index beyond the log is rejected with a hint, no panic.
    n.step(msg(
        1,
        2,
        1,
        MessageBody::AppendRequest {
            prev_log_index: 1 << 40,
            prev_log_term: 1,
            entries: vec![],
            commit: 1 << 41,
        },
    ));
    n.step(msg(
        1,
        2,
        1,
        MessageBody::Heartbeat {
            commit: u64::MAX,
            read_round: u64::MAX,
        },
    ));
    n.step(msg(
        1,
        2,
        1,
        MessageBody::ReadIndexResponse {
            ctx: Bytes::new(),
            index: u64::MAX,
        },
    ));
    assert_eq!(n.last_index(), 0);
    assert_eq!(n.commit_index(), 0);
    let rd = n.take_ready();
    assert!(rd.messages.iter().any(|m| matches!(
        m.body,
        MessageBody::AppendResponse {
            success: false,
            hint_index: 0,
            ..
        }
    )));
}

mod arbitrary_input {
    use super::*;
    use proptest::prelude::*;

    /// Messages from plausible and implausible peers, with small numbers so that they often
    /// touch real state (terms, indexes near the log) rather than being rejected outright.
    fn message() -> impl Strategy<Value = Message> {
        let small = 0u64..6;
        let entry = (small.clone(), small.clone(), any::<bool>()).prop_map(|(t, i, noop)| {
            Entry::new(
                t,
                i,
                if noop {
                    EntryKind::Noop
                } else {
                    EntryKind::Normal
                },
                Bytes::new(),
            )
        });
        let body = prop_oneof![
            (small.clone(), small.clone()).prop_map(|(i, t)| MessageBody::VoteRequest {
                last_log_index: i,
                last_log_term: t,
                transfer: false,
            }),
            (small.clone(), small.clone()).prop_map(|(i, t)| MessageBody::PreVoteRequest {
                last_log_index: i,
                last_log_term: t,
                transfer: false,
            }),
            any::<bool>().prop_map(|granted| MessageBody::VoteResponse { granted }),
            any::<bool>().prop_map(|granted| MessageBody::PreVoteResponse { granted }),
            (
                small.clone(),
                small.clone(),
                proptest::collection::vec(entry, 0..4),
                small.clone()
            )
                .prop_map(|(p, pt, entries, c)| {
                    MessageBody::AppendRequest {
                        prev_log_index: p,
                        prev_log_term: pt,
                        entries,
                        commit: c,
                    }
                }),
            (any::<bool>(), small.clone(), small.clone(), small.clone()).prop_map(
                |(s, i, hi, ht)| MessageBody::AppendResponse {
                    success: s,
                    index: i,
                    hint_index: hi,
                    hint_term: ht
                }
            ),
            (small.clone(), small.clone()).prop_map(|(c, r)| MessageBody::Heartbeat {
                commit: c,
                read_round: r
            }),
            small
                .clone()
                .prop_map(|r| MessageBody::HeartbeatResponse { read_round: r }),
            (small.clone(), small.clone()).prop_map(|(index, term)| {
                MessageBody::InstallSnapshot {
                    snapshot: Box::new(raft_core::SnapshotMeta::new(
                        index,
                        term,
                        raft_core::Membership::with_voters([1, 2, 3]),
                    )),
                }
            }),
            Just(MessageBody::Propose {
                payloads: vec![Bytes::from_static(b"p")]
            }),
            Just(MessageBody::ReadIndexRequest {
                ctx: Bytes::from_static(b"r")
            }),
            small
                .clone()
                .prop_map(|index| MessageBody::ReadIndexResponse {
                    ctx: Bytes::new(),
                    index
                }),
        ];
        (0u64..5, 0u64..5, small, body).prop_map(|(from, to, term, body)| Message {
            from,
            to,
            term,
            body,
        })
    }

    proptest! {
        #[test]
        fn arbitrary_message_sequences_never_panic_a_node(msgs in proptest::collection::vec(message(), 1..60), ticks in 0u32..3) {
            let mut n = node(1, &[1, 2, 3]);
            for m in msgs {
                n.step(m);
                for _ in 0..ticks {
                    n.tick();
                }
                let rd = n.take_ready();
                persist_all(&mut n, &rd);
                prop_assert!(n.commit_index() <= n.last_index());
                prop_assert!(n.persisted_index() <= n.last_index());
            }
        }
    }
}

/// The success acknowledgements among `readys`' messages, by index.
fn append_acks(readys: &[Ready]) -> Vec<u64> {
    readys
        .iter()
        .flat_map(|rd| &rd.messages)
        .filter_map(|m| match m.body {
            MessageBody::AppendResponse {
                success: true,
                index,
                ..
            } => Some(index),
            _ => None,
        })
        .collect()
}

#[test]
fn commit_news_that_would_repeat_the_last_acknowledgement_is_applied_unanswered() {
    let mut n = node(2, &[1, 2, 3]);
    let e = |i| Entry::new(1, i, EntryKind::Normal, Bytes::from_static(b"x"));
    let append = |term: u64, prev: u64, entries: Vec<Entry>, commit: u64| {
        let prev_log_term = if prev == 0 { 0 } else { 1 };
        msg(
            1,
            2,
            term,
            MessageBody::AppendRequest {
                prev_log_index: prev,
                prev_log_term,
                entries,
                commit,
            },
        )
    };
    n.step(append(1, 0, vec![e(1), e(2)], 0));
    assert_eq!(append_acks(&drain(&mut n)), vec![2]);
    // The leader's commit news, anchored at the match it holds: applied, and not answered.
    n.step(append(1, 2, vec![], 2));
    let readys = drain(&mut n);
    assert_eq!(append_acks(&readys), Vec::<u64>::new());
    assert_eq!(n.commit_index(), 2);
    let applied: usize = readys.iter().map(|rd| rd.committed.len()).sum();
    assert_eq!(applied, 2);
    // Anchored anywhere else (a probe), it is answered.
    n.step(append(1, 1, vec![], 2));
    assert_eq!(append_acks(&drain(&mut n)), vec![2]);
    // So is the same append from the leader of a new term.
    n.step(append(2, 2, vec![], 2));
    assert_eq!(append_acks(&drain(&mut n)), vec![2]);
    n.step(append(2, 2, vec![], 2));
    assert_eq!(append_acks(&drain(&mut n)), Vec::<u64>::new());
}
