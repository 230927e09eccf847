//! Snapshots and log compaction (Raft §7), one test per rule: scripted scenarios on the harness
//! (whose invariant checks run after every event) and single cores fed by hand.

use std::cell::Cell;

use bytes::Bytes;
use raft_core::{
    CompactError, Config, Message, MessageBody, RawNode, Ready, RestartState, Role, SnapshotMeta,
};
use raft_harness::{Cluster, Violation};

fn plain(cfg: &mut Config) {
    cfg.pre_vote = false;
    cfg.check_quorum = false;
}

fn elect(c: &mut Cluster, id: u64) -> Result<(), Violation> {
    c.campaign(id)?;
    c.stabilize()?;
    assert_eq!(c.core(id).role(), Role::Leader, "n{id} should have won");
    Ok(())
}

fn propose_n(c: &mut Cluster, leader: u64, n: usize) -> Result<(), Violation> {
    for _ in 0..n {
        let p = c.unique_payload();
        c.propose(leader, p)?;
        c.stabilize()?;
    }
    Ok(())
}

fn is_snapshot_offer(m: &Message) -> bool {
    matches!(m.body, MessageBody::InstallSnapshot { .. })
}

/// Heartbeats from n1 until it offers a snapshot; the offer is left in flight.
fn heartbeats_until_offer(c: &mut Cluster) -> Result<(), Violation> {
    for _ in 0..5 {
        c.tick(1)?;
        c.deliver_where(|m| !is_snapshot_offer(m))?;
        if c.messages_in_flight() > 0 {
            return Ok(());
        }
    }
    panic!("n1 never offered its snapshot");
}

/// A cluster where n3 was cut off while n1 committed and compacted past everything n3 has.
fn follower_behind_the_log_start() -> Result<Cluster, Violation> {
    let mut c = Cluster::new(3, 21, plain);
    elect(&mut c, 1)?;
    propose_n(&mut c, 1, 2)?;
    c.isolate(3);
    propose_n(&mut c, 1, 5)?;
    let applied = c.core(1).applied_index();
    c.compact(1, applied - 1)
        .expect("applied entries can be compacted");
    c.compact(2, applied - 1)
        .expect("applied entries can be compacted");
    assert!(c.core(3).last_index() < c.core(1).snapshot().index);
    c.heal();
    Ok(c)
}

// ----- sending and installing ----------------------------------------------------------------

#[test]
fn a_follower_behind_the_log_start_gets_a_snapshot_then_catches_up_by_appends(
) -> Result<(), Violation> {
    let mut c = follower_behind_the_log_start()?;
    let snapshot = c.core(1).snapshot();
    // n3's appends were lost: a heartbeat interval without progress has n1 probe it, and the
    // probe finds the gap.
    heartbeats_until_offer(&mut c)?;
    c.stabilize()?;
    assert_eq!(c.snapshots_installed, 1);
    assert_eq!(c.nodes[&3].durable_snapshot(), snapshot);
    assert_eq!(
        c.nodes[&3].durable_snapshot_data(),
        c.nodes[&1].durable_snapshot_data(),
        "the installed prefix is what the leader applied"
    );
    // The tail after the snapshot came by appends, and new entries keep coming that way.
    propose_n(&mut c, 1, 2)?;
    assert_eq!(c.core(3).commit_index(), c.core(1).commit_index());
    assert_eq!(c.core(3).log_entries(), c.core(1).log_entries());
    assert_eq!(c.core(3).applied_index(), c.core(1).applied_index());
    assert_eq!(c.snapshots_installed, 1, "one snapshot was enough");
    Ok(())
}

#[test]
fn a_follower_whose_log_holds_the_snapshots_last_entry_keeps_its_log() {
    let mut n = follower(2);
    append(&mut n, 1, 0, 0, &[1, 1, 1], 0);
    offer(&mut n, meta(2, 1));
    let rd = n.take_ready();
    assert!(rd.snapshot_to_fetch.is_none(), "nothing to fetch");
    assert_eq!(n.commit_index(), 2);
    assert_eq!(n.last_index(), 3, "entries after the snapshot are kept");
    assert_eq!(acks(&rd), vec![2]);
}

#[test]
fn a_stale_or_duplicated_install_snapshot_changes_nothing_and_is_acknowledged(
) -> Result<(), Violation> {
    let mut c = follower_behind_the_log_start()?;
    heartbeats_until_offer(&mut c)?;
    c.stabilize()?;
    let snapshot = c.nodes[&3].durable_snapshot();
    let before = (
        c.core(3).commit_index(),
        c.core(3).last_index(),
        c.core(3).snapshot(),
    );
    // The same offer again (duplicated), and an older one (reordered).
    for stale in [snapshot, meta(1, 1)] {
        let term = c.core(1).term();
        c.core_mut(3).step(msg(
            1,
            3,
            term,
            MessageBody::InstallSnapshot {
                snapshot: Box::new(stale),
            },
        ));
        let rd = c.core_mut(3).take_ready();
        assert!(rd.snapshot_to_fetch.is_none() && rd.snapshot_write.is_none());
        assert_eq!(
            acks(&rd),
            vec![before.0],
            "a harmless ack at the commit index"
        );
        assert_eq!(
            (
                c.core(3).commit_index(),
                c.core(3).last_index(),
                c.core(3).snapshot()
            ),
            before
        );
        // The leader takes the ack in its stride.
        for m in rd.messages {
            c.core_mut(1).step(m);
        }
        c.stabilize()?;
    }
    assert_eq!(c.snapshots_installed, 1);
    Ok(())
}

#[test]
fn a_fetched_snapshot_that_was_not_asked_for_is_ignored() {
    let mut n = follower(2);
    append(&mut n, 1, 0, 0, &[1], 1);
    let _ = n.take_ready(); // the append's output is not what this test checks
    let before = (n.commit_index(), n.last_index(), n.snapshot());
    // Nothing asked for at all.
    n.on_snapshot_fetched(meta(5, 1));
    assert!(n.take_ready().snapshot_write.is_none());
    // Asked for one snapshot, a different (older) one reported.
    offer(&mut n, meta(7, 1));
    let rd = n.take_ready();
    assert_eq!(
        rd.snapshot_to_fetch.map(|f| (f.from, f.snapshot)),
        Some((1, meta(7, 1)))
    );
    n.on_snapshot_fetched(meta(5, 1));
    let rd = n.take_ready();
    assert!(rd.snapshot_write.is_none());
    assert!(acks(&rd).is_empty());
    assert_eq!((n.commit_index(), n.last_index(), n.snapshot()), before);
    // The one asked for is installed, and acknowledged once durable.
    n.on_snapshot_fetched(meta(7, 1));
    let rd = n.take_ready();
    let write = rd.snapshot_write.clone().expect("install write");
    assert_eq!(write.snapshot, meta(7, 1));
    assert!(acks(&rd).is_empty(), "the ack waits for the install write");
    assert_eq!(
        (n.commit_index(), n.last_index(), n.applied_index()),
        (7, 7, 7)
    );
    n.on_persisted(write.id);
    assert_eq!(acks(&n.take_ready()), vec![7]);
    // Reported twice: the second report is ignored.
    n.on_snapshot_fetched(meta(7, 1));
    assert!(n.take_ready().is_empty());
}

#[test]
fn a_fetched_snapshot_later_than_the_one_asked_for_is_installed() {
    // The leader took a newer snapshot between its offer and the fetch, and served that one.
    let mut n = follower(2);
    offer(&mut n, meta(5, 1));
    let _ = n.take_ready(); // the append's output is not what this test checks
    n.on_snapshot_fetched(meta(5, 2));
    assert!(
        n.take_ready().snapshot_write.is_none(),
        "same index, another term: not the leader's log"
    );
    n.on_snapshot_fetched(meta(9, 1));
    let rd = n.take_ready();
    let write = rd.snapshot_write.expect("install write");
    assert_eq!(write.snapshot, meta(9, 1));
    assert_eq!(
        (n.commit_index(), n.last_index(), n.applied_index()),
        (9, 9, 9)
    );
    n.on_persisted(write.id);
    assert_eq!(
        acks(&n.take_ready()),
        vec![9],
        "acknowledges what it installed"
    );
}

#[test]
fn a_newer_offer_replaces_the_pending_one() {
    let mut n = follower(2);
    offer(&mut n, meta(5, 1));
    let _ = n.take_ready(); // the append's output is not what this test checks
    offer(&mut n, meta(9, 1));
    assert_eq!(
        n.take_ready().snapshot_to_fetch.map(|f| f.snapshot),
        Some(meta(9, 1))
    );
    n.on_snapshot_fetched(meta(5, 1));
    assert!(
        n.take_ready().snapshot_write.is_none(),
        "the replaced one is ignored"
    );
    n.on_snapshot_fetched(meta(9, 1));
    assert_eq!(
        n.take_ready().snapshot_write.map(|w| w.snapshot),
        Some(meta(9, 1))
    );
}

#[test]
fn an_install_acknowledgement_goes_only_to_the_leader_of_the_same_term() {
    let mut n = follower(2);
    offer(&mut n, meta(5, 1));
    let _ = n.take_ready(); // the append's output is not what this test checks
                            // A new term begins (n3 asks for votes) before the fetch completes.
    n.step(msg(
        3,
        2,
        2,
        MessageBody::VoteRequest {
            last_log_index: 0,
            last_log_term: 0,
            transfer: false,
        },
    ));
    let rd = n.take_ready();
    if let Some(p) = &rd.persist {
        n.on_persisted(p.id);
    }
    let _ = n.take_ready(); // the append's output is not what this test checks
    n.on_snapshot_fetched(meta(5, 1));
    let rd = n.take_ready();
    let write = rd
        .snapshot_write
        .expect("still worth installing: it is committed data");
    n.on_persisted(write.id);
    assert!(acks(&n.take_ready()).is_empty(), "no ack across terms");
    assert_eq!(n.commit_index(), 5);
}

#[test]
fn a_follower_that_caught_up_by_appends_meanwhile_does_not_install() {
    let mut n = follower(2);
    offer(&mut n, meta(2, 1));
    let _ = n.take_ready(); // the append's output is not what this test checks
                            // A leader's appends bring entries 1..=3 before the fetch completes (and are acknowledged).
    append(&mut n, 1, 0, 0, &[1, 1, 1], 0);
    n.on_snapshot_fetched(meta(2, 1));
    let rd = n.take_ready();
    assert!(
        rd.snapshot_write.is_none(),
        "installing would drop acknowledged entries"
    );
    assert_eq!((n.commit_index(), n.last_index()), (2, 3));
}

// ----- the leader's side ----------------------------------------------------------------------

#[test]
fn report_snapshot_failure_makes_the_leader_offer_again_later() -> Result<(), Violation> {
    let mut c = follower_behind_the_log_start()?;
    heartbeats_until_offer(&mut c)?;
    c.drop_in_flight(); // the transfer never happens
                        // Waiting for the snapshot: heartbeat answers trigger no appends and, this soon, no offer.
    let appends_to_n3 = Cell::new(0);
    c.tick(1)?;
    c.deliver_where(|m| {
        if m.to == 3 && matches!(m.body, MessageBody::AppendRequest { .. }) {
            appends_to_n3.set(appends_to_n3.get() + 1);
        }
        !is_snapshot_offer(m)
    })?;
    assert_eq!(
        appends_to_n3.get(),
        0,
        "nothing but heartbeats while waiting"
    );
    assert_eq!(c.messages_in_flight(), 0, "no offer yet");
    // The driver reports the transfer failed: the leader probes again at the next heartbeat
    // answer, which offers the snapshot again.
    c.core_mut(1).report_snapshot(3, false);
    assert_eq!(c.messages_in_flight(), 0, "not at once: later");
    c.tick(1)?;
    c.deliver_where(|m| !is_snapshot_offer(m))?;
    assert!(
        c.messages_in_flight() > 0,
        "offered again after the failure"
    );
    c.stabilize()?;
    assert_eq!(c.snapshots_installed, 1);
    assert_eq!(c.core(3).commit_index(), c.core(1).commit_index());
    Ok(())
}

#[test]
fn a_lost_offer_or_acknowledgement_is_repeated_after_a_while() -> Result<(), Violation> {
    let mut c = follower_behind_the_log_start()?;
    heartbeats_until_offer(&mut c)?;
    c.drop_in_flight(); // the offer is lost, and no driver reports anything
    for _ in 0..30 {
        c.tick(1)?;
        c.stabilize()?;
        if c.snapshots_installed > 0 {
            break;
        }
    }
    assert_eq!(c.snapshots_installed, 1);
    assert_eq!(c.core(3).commit_index(), c.core(1).commit_index());
    Ok(())
}

// ----- compaction and restart -----------------------------------------------------------------

#[test]
fn compaction_refuses_to_go_past_the_applied_index() {
    let mut cfg = Config::new(1, vec![1]);
    plain(&mut cfg);
    let mut n = RawNode::new(cfg).expect("valid");
    n.campaign();
    drive(&mut n);
    n.propose(Bytes::from_static(b"a")).expect("leader");
    let rd = n.take_ready();
    n.on_persisted(rd.persist.as_ref().expect("write").id);
    // Entry 2 is committed and handed out, but not reported applied yet.
    let rd = n.take_ready();
    assert_eq!(rd.committed.last().map(|e| e.index), Some(2));
    n.on_applied(1);
    assert_eq!(
        n.compact(2),
        Err(CompactError::NotApplied {
            up_to: 2,
            applied: 1
        })
    );
    let alone = raft_core::Membership::with_voters([1]);
    assert_eq!(
        n.snapshot(),
        SnapshotMeta::new(0, 0, alone.clone()),
        "nothing changed"
    );
    n.on_applied(2);
    assert_eq!(n.compact(2), Ok(()));
    assert_eq!(n.snapshot(), SnapshotMeta::new(2, 1, alone));
    assert_eq!(
        n.compact(2),
        Err(CompactError::AlreadyCompacted {
            up_to: 2,
            snapshot_index: 2
        })
    );
    assert_eq!(n.term_at(1), None);
    assert_eq!(n.term_at(2), Some(1));
}

#[test]
fn a_restart_from_a_snapshot_and_log_tail_serves_the_same_log() -> Result<(), Violation> {
    let mut c = Cluster::new(3, 22, plain);
    elect(&mut c, 1)?;
    propose_n(&mut c, 1, 6)?;
    let applied = c.core(2).applied_index();
    c.compact(2, applied - 3).expect("allowed");
    let before = (
        c.core(2).snapshot(),
        c.core(2).log_entries().to_vec(),
        c.core(2).commit_index(),
        c.core(2).term(),
    );
    c.crash(2);
    c.restart(2)?;
    c.tick(1)?; // a heartbeat brings the commit index back
    c.stabilize()?;
    assert_eq!(c.core(2).snapshot(), before.0);
    assert_eq!(c.core(2).log_entries(), &before.1[..]);
    assert!(c.core(2).commit_index() >= before.2);
    // And it keeps serving the cluster: it can lead and replicate to others from there.
    c.isolate(1);
    for _ in 0..3 {
        if c.core(2).role() == Role::Leader {
            break;
        }
        c.campaign(2)?;
        c.stabilize()?;
    }
    assert_eq!(c.core(2).role(), Role::Leader);
    assert!(c.core(2).term() > before.3);
    propose_n(&mut c, 2, 1)?;
    assert_eq!(c.core(3).commit_index(), c.core(2).commit_index());
    Ok(())
}

#[test]
fn restart_accepts_a_snapshot_and_refuses_an_inconsistent_one() {
    let cfg = || Config::new(1, vec![1, 2, 3]);
    let mut state = RestartState::default();
    state.hard_state.term = 3;
    state.hard_state.commit = 4; // below the snapshot: only a hint, lifted to it
    state.snapshot = SnapshotMeta::new(5, 2, Default::default());
    state.applied = 5;
    let n = RawNode::restart(cfg(), state.clone()).expect("a snapshot with an empty tail is valid");
    assert_eq!((n.last_index(), n.last_term(), n.commit_index()), (5, 2, 5));
    let mut bad = state.clone();
    bad.applied = 4;
    assert!(
        RawNode::restart(cfg(), bad).is_err(),
        "state machine behind its snapshot"
    );
    let mut bad = state.clone();
    bad.snapshot.term = 4;
    assert!(
        RawNode::restart(cfg(), bad).is_err(),
        "snapshot term beyond the current term"
    );
    let mut bad = state;
    bad.entries = vec![raft_core::Entry::new(
        2,
        7,
        raft_core::EntryKind::Normal,
        Bytes::new(),
    )];
    assert!(
        RawNode::restart(cfg(), bad).is_err(),
        "a gap after the snapshot"
    );
}

#[test]
fn a_malformed_install_snapshot_is_dropped() {
    let mut n = follower(2);
    for snapshot in [meta(0, 0), meta(3, 0), meta(3, 9)] {
        offer(&mut n, snapshot);
    }
    let rd = n.take_ready();
    assert!(rd.snapshot_to_fetch.is_none());
    assert_eq!(
        n.term(),
        0,
        "nothing, not even the term, was taken from them"
    );
}

// ----- helpers --------------------------------------------------------------------------------

fn meta(index: u64, term: u64) -> SnapshotMeta {
    SnapshotMeta::new(index, term, raft_core::Membership::with_voters([1, 2, 3]))
}

fn msg(from: u64, to: u64, term: u64, body: MessageBody) -> Message {
    Message {
        from,
        to,
        term,
        body,
    }
}

/// n1, leader of term 1, offers `snapshot` to follower n2.
fn offer(n: &mut RawNode, snapshot: SnapshotMeta) {
    n.step(msg(
        1,
        2,
        1,
        MessageBody::InstallSnapshot {
            snapshot: Box::new(snapshot),
        },
    ));
}

fn follower(id: u64) -> RawNode {
    let mut cfg = Config::new(id, vec![1, 2, 3]);
    plain(&mut cfg);
    RawNode::new(cfg).expect("valid")
}

/// Steps an append from n1 in `term` with entries of the given terms after `prev`, persists
/// everything and drains.
fn append(n: &mut RawNode, term: u64, prev: u64, prev_term: u64, terms: &[u64], commit: u64) {
    let entries = terms
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            raft_core::Entry::new(
                t,
                prev + 1 + i as u64,
                raft_core::EntryKind::Normal,
                Bytes::new(),
            )
        })
        .collect();
    n.step(msg(
        1,
        n.id(),
        term,
        MessageBody::AppendRequest {
            prev_log_index: prev,
            prev_log_term: prev_term,
            entries,
            commit,
        },
    ));
    drive(n);
}

/// Drains and persists until quiet.
fn drive(n: &mut RawNode) {
    for _ in 0..5 {
        let rd = n.take_ready();
        if let Some(p) = &rd.persist {
            n.on_persisted(p.id);
        }
    }
}

/// The indexes of successful append acknowledgements in `rd`.
fn acks(rd: &Ready) -> Vec<u64> {
    rd.messages
        .iter()
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
