//! Membership change and leadership transfer (Raft thesis §3.10, §4), one test per rule,
//! scripted on the harness, whose invariant checks (commit durable on a majority of each voter
//! set of the leader's configuration among them) run after every event. Where a rule has a
//! deliberately broken variant, the same script shows the break caught.

use std::collections::BTreeSet;

use bytes::Bytes;
use raft_core::{
    ConfChangeEntry, Config, EntryKind, MemberChange, Membership, Message, ProposeError, Role,
};
use raft_harness::{Cluster, Violation};

use MemberChange::{AddLearner, AddVoter, Remove};

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

fn ids(set: &[u64]) -> BTreeSet<u64> {
    set.iter().copied().collect()
}

fn config(voters: &[u64], outgoing: &[u64], learners: &[u64]) -> Membership {
    Membership {
        voters: ids(voters),
        outgoing: ids(outgoing),
        learners: ids(learners),
    }
}

fn not_to(blocked: &'static [u64]) -> impl Fn(&Message) -> bool {
    move |m| !blocked.contains(&m.to) && !blocked.contains(&m.from)
}

/// Three voters led by 1, and two fresh nodes 4 and 5 waiting to be added; 1 has proposed
/// replacing 2 and 3 by 4 and 5, and the joint entry reached 2 and 3 but not 4 and 5.
fn replacing_two_voters() -> Result<(Cluster, u64), Violation> {
    let mut c = Cluster::new(3, 31, plain);
    elect(&mut c, 1)?;
    c.add_node(4);
    c.add_node(5);
    c.isolate(4);
    c.isolate(5);
    let joint = c
        .propose_conf_change(1, &[Remove(2), Remove(3), AddVoter(4), AddVoter(5)])?
        .expect("accepted");
    c.stabilize()?;
    for id in [1, 2, 3] {
        assert_eq!(
            c.core(id).membership(),
            &config(&[1, 4, 5], &[1, 2, 3], &[]),
            "n{id} uses the joint configuration once it holds the entry"
        );
    }
    Ok((c, joint))
}

#[test]
fn joint_consensus_needs_both_majorities_to_commit() -> Result<(), Violation> {
    let (mut c, joint) = replacing_two_voters()?;
    assert!(
        c.core(1).commit_index() < joint,
        "the old majority alone does not commit the joint entry"
    );
    c.heal();
    c.tick(1)?;
    c.stabilize()?;
    assert!(
        c.core(1).commit_index() > joint,
        "both majorities commit it"
    );
    for id in [1, 4, 5] {
        assert_eq!(
            c.core(id).membership(),
            &config(&[1, 4, 5], &[], &[]),
            "n{id}: the leader left the joint configuration by itself once it committed"
        );
    }
    assert!(c.propose(1, Bytes::from_static(b"after"))?);
    c.stabilize()?;
    Ok(())
}

#[test]
fn joint_consensus_needs_both_majorities_to_elect() -> Result<(), Violation> {
    let (mut c, _) = replacing_two_voters()?;
    c.crash(1);
    c.campaign(2)?;
    c.stabilize()?;
    assert_ne!(
        c.core(2).role(),
        Role::Leader,
        "votes of 2 and 3 are an old majority only"
    );
    c.heal();
    c.campaign(2)?;
    c.stabilize()?;
    assert_eq!(
        c.core(4).leader(),
        Some(2),
        "with 4 and 5 it holds both majorities"
    );
    // It then finished the change, which removes it, and stepped down.
    assert_eq!(c.core(4).membership(), &config(&[1, 4, 5], &[], &[]));
    assert_eq!(c.core(2).role(), Role::Follower);
    Ok(())
}

#[test]
fn joint_consensus_needs_both_majorities_for_read_index() -> Result<(), Violation> {
    let (mut c, _) = replacing_two_voters()?;
    let served = c.check.reads_served;
    c.read(1)?;
    c.deliver_where(not_to(&[4, 5]))?;
    c.tick(1)?;
    c.deliver_where(not_to(&[4, 5]))?;
    assert_eq!(
        c.check.reads_served, served,
        "the old majority does not confirm"
    );
    c.heal();
    c.tick(1)?;
    c.stabilize()?;
    assert_eq!(c.check.reads_served, served + 1);
    Ok(())
}

#[test]
fn a_leader_not_in_the_new_configuration_steps_down_after_it_commits() -> Result<(), Violation> {
    let mut c = Cluster::new(3, 32, plain);
    elect(&mut c, 1)?;
    c.add_node(4);
    c.propose_conf_change(1, &[Remove(1), AddVoter(4)])?
        .expect("accepted");
    c.stabilize()?;
    assert_eq!(
        c.core(1).role(),
        Role::Follower,
        "stepped down once it committed"
    );
    assert_eq!(c.core(1).membership(), &config(&[2, 3, 4], &[], &[]));
    for _ in 0..10 {
        c.tick_all(5)?;
        c.stabilize()?;
    }
    let leader = c.leader().expect("the new configuration elects a leader");
    assert!([2, 3, 4].contains(&leader));
    assert_eq!(
        c.core(1).role(),
        Role::Follower,
        "a non-voter never campaigns"
    );
    Ok(())
}

#[test]
fn a_removed_server_does_not_disrupt_the_cluster() -> Result<(), Violation> {
    for pre_vote in [true, false] {
        let mut c = Cluster::new(3, 33, |cfg| cfg.pre_vote = pre_vote);
        elect(&mut c, 1)?;
        // 3 is cut off before it hears of its removal, so it still believes it votes.
        c.isolate(3);
        c.propose_conf_change(1, &[Remove(3)])?.expect("accepted");
        c.stabilize()?;
        assert_eq!(c.core(1).membership(), &config(&[1, 2], &[], &[]));
        assert!(c.core(3).membership().is_voter(3));
        c.heal();
        c.cut_link(1, 3);
        let term = c.core(1).term();
        for _ in 0..40 {
            c.tick_all(1)?;
            c.stabilize()?;
        }
        assert_eq!(c.leader(), Some(1), "pre_vote {pre_vote}: the leader stays");
        assert_eq!(c.core(1).term(), term, "pre_vote {pre_vote}: no new term");
        assert_eq!(c.core(2).term(), term);
    }
    Ok(())
}

#[test]
fn a_removed_server_is_sent_the_entry_that_removes_it_and_then_forgotten() -> Result<(), Violation>
{
    let mut c = Cluster::new(3, 35, |_| {});
    elect(&mut c, 1)?;
    c.propose_conf_change(1, &[Remove(3)])?.expect("accepted");
    c.stabilize()?;
    assert_eq!(c.core(1).membership(), &config(&[1, 2], &[], &[]));
    assert_eq!(
        c.core(3).membership(),
        &config(&[1, 2], &[], &[]),
        "3's own log says it was removed, so it knows"
    );
    assert!(
        c.core(3).commit_index() >= c.core(1).commit_index(),
        "3 was told its removal committed, so it applies what it forwarded before"
    );
    assert!(
        c.core(1).peer_progress(3).is_none(),
        "the leader stops replicating to 3 once 3 holds its removal, committed"
    );
    let term = c.core(1).term();
    for _ in 0..40 {
        c.tick_all(1)?;
        c.stabilize()?;
    }
    assert_eq!(c.core(3).role(), Role::Follower, "3 never campaigns");
    assert_eq!(c.core(1).term(), term);
    Ok(())
}

/// A server forwards what its clients send to the leader. What it forwarded before it learned
/// of its removal must not land after the entry removing it: it is never sent those entries,
/// so it could not tell its clients their outcome. The leader refuses them instead.
#[test]
fn a_leader_refuses_proposals_forwarded_by_a_server_it_has_removed() -> Result<(), Violation> {
    let mut c = Cluster::new(3, 37, |_| {});
    elect(&mut c, 1)?;
    let late = c.unique_payload();
    assert!(c.propose(3, late.clone())?, "3 forwards to its leader");
    // 3's forward is slow: the removal of 3 commits first.
    c.propose_conf_change(1, &[Remove(3)])?.expect("accepted");
    c.deliver_where(|m| m.from != 3)?;
    assert_eq!(c.core(1).membership(), &config(&[1, 2], &[], &[]));
    let removal_committed = c.core(1).commit_index();
    c.stabilize()?;
    let leader = c.core(1);
    let landed = (removal_committed..=leader.last_index())
        .filter_map(|i| leader.entry(i))
        .any(|e| e.payload == late);
    assert!(
        !landed,
        "the leader appended what its removed member forwarded"
    );
    // A member's forwards are still taken.
    let welcome = c.unique_payload();
    assert!(c.propose(2, welcome.clone())?);
    c.stabilize()?;
    let leader = c.core(1);
    let taken = (removal_committed..=leader.last_index())
        .filter_map(|i| leader.entry(i))
        .any(|e| e.payload == welcome);
    assert!(taken, "a member's forwarded proposal is appended");
    Ok(())
}

#[test]
fn a_removed_server_that_missed_its_removal_learns_it_from_the_next_leader() -> Result<(), Violation>
{
    let mut c = Cluster::new(4, 36, |_| {});
    elect(&mut c, 1)?;
    // 4 is cut off while it is removed, and the leader that removed it hands over: the new
    // leader never tracked 4.
    c.isolate(4);
    c.propose_conf_change(1, &[Remove(4)])?.expect("accepted");
    c.stabilize()?;
    assert_eq!(c.core(1).membership(), &config(&[1, 2, 3], &[], &[]));
    c.transfer_leader(1, 2)?.expect("2 is a voter");
    c.stabilize()?;
    assert_eq!(c.leader(), Some(2));
    assert!(c.core(4).membership().contains(4), "4 missed its removal");
    let term = c.core(2).term();
    // Back, 4 hears no leader and asks for votes: the leader answers with the log.
    c.heal();
    for _ in 0..60 {
        c.tick_all(1)?;
        c.stabilize()?;
    }
    assert!(
        !c.core(4).membership().contains(4),
        "4 learned it was removed: {:?}",
        c.core(4).membership()
    );
    assert_eq!(c.leader(), Some(2), "and disrupted nothing");
    assert_eq!(c.core(2).term(), term);
    assert!(c.core(2).peer_progress(4).is_none(), "then it is forgotten");
    Ok(())
}

/// 1 leads voters 1..=3 with learners 4 and 5; 2 and 3 are cut off. Returns how far 1 committed
/// beyond the point where they were cut off.
fn commit_with_only_a_learner(learners_count: bool) -> Result<u64, Violation> {
    let mut c = Cluster::new(3, 34, |cfg| {
        plain(cfg);
        cfg.bugs.learners_count_in_quorum = learners_count;
    });
    elect(&mut c, 1)?;
    c.add_node(4);
    c.add_node(5);
    c.propose_conf_change(1, &[AddLearner(4), AddLearner(5)])?
        .expect("accepted");
    c.stabilize()?;
    assert_eq!(c.core(4).membership(), &config(&[1, 2, 3], &[], &[4, 5]));
    assert_eq!(
        c.core(4).last_index(),
        c.core(1).last_index(),
        "replicated to"
    );
    c.isolate(2);
    c.isolate(3);
    let before = c.core(1).commit_index();
    c.propose(1, Bytes::from_static(b"x"))?;
    c.stabilize()?;
    Ok(c.core(1).commit_index() - before)
}

#[test]
fn a_learner_never_votes_or_counts() -> Result<(), Violation> {
    assert_eq!(
        commit_with_only_a_learner(false)?,
        0,
        "a learner does not count"
    );
    let err = commit_with_only_a_learner(true).expect_err("counting a learner is caught");
    assert_eq!(err.rule, "commit needs a durable majority");
    // A learner cut off from everyone never campaigns.
    let mut c = Cluster::new(3, 35, plain);
    elect(&mut c, 1)?;
    c.add_node(4);
    c.propose_conf_change(1, &[AddLearner(4)])?
        .expect("accepted");
    c.stabilize()?;
    c.isolate(4);
    for _ in 0..100 {
        c.tick(4)?;
    }
    assert_eq!(c.core(4).role(), Role::Follower);
    assert_eq!(c.core(4).term(), c.core(1).term());
    Ok(())
}

#[test]
fn one_change_at_a_time() -> Result<(), Violation> {
    let mut c = Cluster::new(3, 36, plain);
    c.campaign(1)?;
    // Elected, but its no-op is not committed yet.
    c.deliver_where(|m| !matches!(m.body, raft_core::MessageBody::AppendResponse { .. }))?;
    assert_eq!(c.core(1).role(), Role::Leader);
    assert_eq!(
        c.propose_conf_change(1, &[AddLearner(4)])?,
        Err(ProposeError::ConfChangeInProgress),
        "not before the leader committed an entry of its term"
    );
    c.stabilize()?;
    c.add_node(4);
    c.add_node(5);
    c.propose_conf_change(1, &[AddLearner(4)])?
        .expect("accepted");
    assert_eq!(
        c.propose_conf_change(1, &[AddLearner(5)])?,
        Err(ProposeError::ConfChangeInProgress),
        "one uncommitted change at a time"
    );
    c.stabilize()?;
    c.propose_conf_change(1, &[AddLearner(5)])?
        .expect("the first committed");
    c.stabilize()?;
    for bad in [
        vec![AddLearner(5)],
        vec![AddVoter(2)],
        vec![Remove(9)],
        vec![Remove(1), Remove(2), Remove(3)],
    ] {
        assert!(
            matches!(
                c.propose_conf_change(1, &bad)?,
                Err(ProposeError::InvalidConfChange { .. })
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        c.propose_conf_change(2, &[Remove(5)])?,
        Err(ProposeError::NotLeader { .. })
    ));
    Ok(())
}

#[test]
fn an_empty_change_restates_the_configuration_for_its_context() -> Result<(), Violation> {
    let mut c = Cluster::new(3, 38, plain);
    elect(&mut c, 1)?;
    let before = c.core(1).membership().clone();
    let index = c.propose_conf_change(1, &[])?.expect("accepted");
    assert_eq!(
        c.propose_conf_change(1, &[])?,
        Err(ProposeError::ConfChangeInProgress),
        "it is a change like any other: one at a time"
    );
    c.stabilize()?;
    for id in 1..=3 {
        let core = c.core(id);
        assert!(core.commit_index() >= index, "n{id} committed it");
        let entry = core.entry(index).expect("in the log");
        assert_eq!(entry.kind, EntryKind::ConfChange);
        let restated = ConfChangeEntry::decode(&entry.payload).expect("decodes");
        assert_eq!(restated.membership, before, "n{id}: the same configuration");
        assert_eq!(&restated.context[..], b"ctx", "n{id}: with the context");
        assert_eq!(core.membership(), &before);
    }
    Ok(())
}

#[test]
fn leadership_transfer_completes() -> Result<(), Violation> {
    let mut c = Cluster::new(3, 37, |_| {});
    elect(&mut c, 1)?;
    c.propose(1, Bytes::from_static(b"x"))?;
    c.stabilize()?;
    let term = c.core(1).term();
    c.transfer_leader(1, 2)?.expect("2 is a voter");
    assert_eq!(
        c.core_mut(1).propose(Bytes::from_static(b"y")),
        Err(ProposeError::TransferringLeadership { to: 2 }),
        "no proposals while handing over"
    );
    c.stabilize()?;
    assert_eq!(c.leader(), Some(2), "the target campaigned past the lease");
    assert_eq!(c.core(2).term(), term + 1);
    assert_eq!(c.core(1).role(), Role::Follower);
    assert!(c.propose(2, Bytes::from_static(b"z"))?);
    c.stabilize()?;
    assert!(matches!(
        c.transfer_leader(2, 9)?,
        Err(ProposeError::InvalidTransferTarget { to: 9 })
    ));
    Ok(())
}

#[test]
fn leadership_transfer_is_abandoned_when_the_target_is_unreachable() -> Result<(), Violation> {
    let mut c = Cluster::new(3, 38, |_| {});
    elect(&mut c, 1)?;
    c.isolate(3);
    c.transfer_leader(1, 3)?.expect("3 is a voter");
    assert_eq!(c.core(1).transferring_to(), Some(3));
    for _ in 0..10 {
        c.tick(1)?;
        c.stabilize()?;
    }
    assert_eq!(
        c.core(1).transferring_to(),
        None,
        "abandoned after an election timeout"
    );
    assert_eq!(c.leader(), Some(1));
    assert!(c.core_mut(1).propose(Bytes::from_static(b"again")).is_ok());
    c.stabilize()?;
    Ok(())
}

#[test]
fn restart_recovers_the_configuration_from_the_log_and_from_a_snapshot() -> Result<(), Violation> {
    let mut c = Cluster::new(3, 39, plain);
    elect(&mut c, 1)?;
    c.add_node(4);
    c.propose_conf_change(1, &[AddLearner(4)])?
        .expect("accepted");
    c.stabilize()?;
    let grown = config(&[1, 2, 3], &[], &[4]);
    c.crash(2);
    c.restart(2)?;
    assert_eq!(c.core(2).membership(), &grown, "from the log");
    for _ in 0..3 {
        c.propose(1, Bytes::from_static(b"x"))?;
    }
    c.stabilize()?;
    let applied = c.core(2).applied_index();
    c.compact(2, applied).expect("applied");
    assert_eq!(c.nodes[&2].durable_snapshot().membership, grown);
    assert!(c
        .core(2)
        .log_entries()
        .iter()
        .all(|e| e.kind != raft_core::EntryKind::ConfChange));
    c.crash(2);
    c.restart(2)?;
    assert_eq!(c.core(2).membership(), &grown, "from the snapshot");
    // A node that installs the snapshot gets the configuration with it.
    c.compact(1, c.core(1).applied_index()).expect("applied");
    c.add_node(5);
    c.propose_conf_change(1, &[AddLearner(5)])?
        .expect("accepted");
    c.stabilize()?;
    assert!(c.snapshots_installed > 0);
    assert_eq!(c.core(5).membership(), &config(&[1, 2, 3], &[], &[4, 5]));
    Ok(())
}

#[test]
fn a_truncated_conf_entry_reverts_the_configuration() -> Result<(), Violation> {
    let mut c = Cluster::new(3, 40, plain);
    elect(&mut c, 1)?;
    c.add_node(4);
    c.isolate(1);
    c.propose_conf_change(1, &[AddLearner(4)])?
        .expect("accepted");
    assert_eq!(
        c.core(1).membership(),
        &config(&[1, 2, 3], &[], &[4]),
        "in force once appended"
    );
    elect(&mut c, 2)?;
    c.propose(2, Bytes::from_static(b"x"))?;
    c.stabilize()?;
    c.heal();
    c.tick(2)?;
    c.stabilize()?;
    assert_eq!(c.core(1).role(), Role::Follower);
    assert_eq!(
        c.core(1).membership(),
        &config(&[1, 2, 3], &[], &[]),
        "the conflicting entry was truncated, and its configuration with it"
    );
    Ok(())
}

/// 1 leads {1,2,3}; cut off from 2 and 3 but not from the new nodes 4 and 5, it replaces 2 and
/// 3 by 4 and 5 and proposes an entry, while 2 wins an election on the other side and commits
/// its own. Safe only if 1's change needs the old majority too.
fn replace_two_voters_while_partitioned(bugs: impl Fn(&mut Config)) -> Result<(), Violation> {
    let mut c = Cluster::new(3, 41, |cfg| {
        plain(cfg);
        bugs(cfg);
    });
    elect(&mut c, 1)?;
    c.add_node(4);
    c.add_node(5);
    c.partition(&[1, 4, 5]);
    c.propose_conf_change(1, &[Remove(2), Remove(3), AddVoter(4), AddVoter(5)])?
        .expect("accepted");
    c.tick(1)?;
    c.stabilize()?;
    c.propose(1, Bytes::from_static(b"new side"))?;
    c.tick(1)?;
    c.stabilize()?;
    elect(&mut c, 2)?;
    c.propose(2, Bytes::from_static(b"old side"))?;
    c.stabilize()?;
    c.heal();
    for _ in 0..5 {
        c.tick_all(1)?;
        c.stabilize()?;
    }
    Ok(())
}

/// What a broken joint consensus is caught as: a commit whose majority misses the configuration
/// before it, or the harm that follows.
const JOINT_BUG_RULES: [&str; 3] = [
    "commit overlaps every configuration that can elect",
    "leader completeness",
    "state machine safety",
];

#[test]
fn a_multi_voter_change_without_joint_consensus_is_caught() -> Result<(), Violation> {
    replace_two_voters_while_partitioned(|_| {})?;
    let err = replace_two_voters_while_partitioned(|cfg| cfg.bugs.conf_change_without_joint = true)
        .expect_err("two majorities that do not overlap commit different entries");
    assert!(JOINT_BUG_RULES.contains(&err.rule), "{err}");
    Ok(())
}

#[test]
fn leaving_the_joint_configuration_before_it_commits_is_caught() -> Result<(), Violation> {
    let err = replace_two_voters_while_partitioned(|cfg| cfg.bugs.leave_joint_before_commit = true)
        .expect_err("the new voters alone commit");
    assert!(JOINT_BUG_RULES.contains(&err.rule), "{err}");
    Ok(())
}
