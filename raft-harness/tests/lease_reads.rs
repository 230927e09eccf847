//! Lease reads (thesis §6.4.1, `raft-core/src/lease.rs`): one scripted scenario per rule. With
//! `election_ticks` 10 and a drift bound of 0.5, a lease lasts (10 - 1) / 1.5 = 6 ticks from
//! the sending of the heartbeat round a quorum acknowledged.

use bytes::Bytes;
use raft_core::{Config, MemberChange, Message, MessageBody, ReadMode, Role};
use raft_harness::{Cluster, Violation};

const LEASE_TICKS: u32 = 6;

fn lease(cfg: &mut Config) {
    cfg.election_ticks = 10;
    cfg.heartbeat_ticks = 1;
    cfg.read_mode = ReadMode::Lease {
        max_clock_drift: 0.5,
    };
}

/// A cluster past its nodes' first election timeout (a node that just started refuses votes
/// for one), with nothing in flight.
fn started(n: u64, seed: u64, configure: impl Fn(&mut Config)) -> Result<Cluster, Violation> {
    let mut c = Cluster::new(n, seed, configure);
    c.tick_all(10)?;
    c.drop_in_flight();
    Ok(c)
}

fn elect(c: &mut Cluster, id: u64) -> Result<(), Violation> {
    c.campaign(id)?;
    c.stabilize()?;
    assert_eq!(c.core(id).role(), Role::Leader, "n{id} should have won");
    Ok(())
}

/// Node 1 leads, has committed in its term, and holds a lease from a round it sent just now.
fn leader_with_lease(seed: u64, configure: impl Fn(&mut Config)) -> Result<Cluster, Violation> {
    let mut c = started(3, seed, configure)?;
    elect(&mut c, 1)?;
    c.propose(1, Bytes::from_static(b"x"))?;
    c.stabilize()?;
    c.tick(1)?;
    c.stabilize()?;
    Ok(c)
}

/// Asks `id` for a read and delivers nothing: whether it was served at once.
fn served_at_once(c: &mut Cluster, id: u64) -> Result<bool, Violation> {
    let before = c.check.reads_served;
    c.read(id)?;
    Ok(c.check.reads_served > before)
}

#[test]
fn a_lease_read_is_served_by_the_leader_without_a_round() -> Result<(), Violation> {
    let mut c = leader_with_lease(1, lease)?;
    assert!(served_at_once(&mut c, 1)?);
    assert_eq!(c.messages_in_flight(), 0, "no heartbeat was needed");
    Ok(())
}

#[test]
fn a_read_index_leader_needs_a_round_for_the_same_read() -> Result<(), Violation> {
    let mut c = leader_with_lease(1, |_| {})?;
    assert!(!served_at_once(&mut c, 1)?);
    c.stabilize()?;
    assert_eq!(c.check.reads_served, 1);
    Ok(())
}

#[test]
fn the_lease_lasts_its_ticks_from_the_sending_then_reads_fall_back_to_read_index(
) -> Result<(), Violation> {
    let mut c = leader_with_lease(2, lease)?;
    // The acknowledged round went out at this tick; later heartbeats are lost.
    for _ in 0..LEASE_TICKS {
        assert!(served_at_once(&mut c, 1)?);
        c.tick(1)?;
        c.drop_in_flight();
    }
    assert!(!served_at_once(&mut c, 1)?, "the lease has run out");
    let served = c.check.reads_served;
    c.stabilize()?;
    assert_eq!(c.check.reads_served, served + 1, "confirmed by a round");
    assert!(
        served_at_once(&mut c, 1)?,
        "and that round renewed the lease"
    );
    Ok(())
}

#[test]
fn a_read_forwarded_by_a_follower_is_answered_from_the_leaders_lease() -> Result<(), Violation> {
    let mut c = leader_with_lease(3, lease)?;
    let served = c.check.reads_served;
    c.read(2)?;
    let read_messages_only = |m: &Message| {
        matches!(
            m.body,
            MessageBody::ReadIndexRequest { .. } | MessageBody::ReadIndexResponse { .. }
        )
    };
    c.deliver_where(read_messages_only)?;
    assert_eq!(c.check.reads_served, served + 1);
    Ok(())
}

#[test]
fn a_transfer_ends_the_lease_at_once() -> Result<(), Violation> {
    let mut c = leader_with_lease(4, lease)?;
    c.core_mut(1)
        .transfer_leader(2)
        .expect("n2 is a voter in the leader's progress");
    assert!(!served_at_once(&mut c, 1)?);
    Ok(())
}

#[test]
fn a_configuration_change_ends_the_lease() -> Result<(), Violation> {
    let mut c = leader_with_lease(5, lease)?;
    c.core_mut(1)
        .propose_conf_change(&[MemberChange::AddLearner(4)], Bytes::new())
        .expect("the leader accepts a learner");
    assert!(!served_at_once(&mut c, 1)?);
    Ok(())
}

#[test]
fn no_lease_read_before_the_leader_commits_an_entry_of_its_term() -> Result<(), Violation> {
    let mut c = started(3, 6, lease)?;
    let elections_and_heartbeats = |m: &Message| {
        matches!(
            m.body,
            MessageBody::PreVoteRequest { .. }
                | MessageBody::PreVoteResponse { .. }
                | MessageBody::VoteRequest { .. }
                | MessageBody::VoteResponse { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::HeartbeatResponse { .. }
        )
    };
    c.campaign(1)?;
    c.deliver_where(elections_and_heartbeats)?;
    assert_eq!(c.core(1).role(), Role::Leader);
    c.tick(1)?;
    c.deliver_where(elections_and_heartbeats)?;
    assert!(
        !served_at_once(&mut c, 1)?,
        "a quorum acknowledged a round, but the no-op is not committed"
    );
    c.stabilize()?;
    assert_eq!(c.check.reads_served, 1, "served once the no-op commits");
    Ok(())
}

#[test]
fn a_forced_campaign_is_ignored_while_the_node_vouches_for_a_lease() -> Result<(), Violation> {
    let mut c = leader_with_lease(7, lease)?;
    c.campaign(2)?;
    c.stabilize()?;
    assert_eq!(c.core(1).role(), Role::Leader);
    assert_eq!(c.core(2).role(), Role::Follower);
    Ok(())
}

/// Node 1 leads; node 2 crashes and restarts; node 1 is cut off; node 3 times out. Returns
/// whether node 3 won before node 2 had ticked an election timeout since its restart.
fn restarted_voter_elects_at_once(configure: impl Fn(&mut Config)) -> Result<bool, Violation> {
    let mut c = leader_with_lease(8, configure)?;
    c.crash(2);
    c.restart(2)?;
    c.isolate(1);
    for _ in 0..20 {
        c.tick(3)?;
        c.stabilize()?;
    }
    Ok(c.core(3).role() == Role::Leader)
}

#[test]
fn a_restarted_node_refuses_votes_for_an_election_timeout() -> Result<(), Violation> {
    assert!(!restarted_voter_elects_at_once(lease)?);
    assert!(
        restarted_voter_elects_at_once(|_| {})?,
        "without leases it votes at once"
    );
    Ok(())
}

/// Node 1 holds a lease and is cut off; every node ticks at the same rate while nodes 2 and 3
/// elect a leader and acknowledge a write, and node 1 is asked for a read at every tick.
fn reads_on_a_cut_off_lease_holder(seed: u64, bug: bool) -> Result<u64, Violation> {
    let mut c = leader_with_lease(seed, |cfg| {
        lease(cfg);
        cfg.bugs.lease_outlasts_election_timeout = bug;
    })?;
    c.isolate(1);
    let served_before = c.check.reads_served;
    for _ in 0..25 {
        for id in [1, 2, 3] {
            c.tick(id)?;
        }
        c.stabilize()?;
        if let Some(leader) = [2, 3]
            .into_iter()
            .find(|&id| c.core(id).role() == Role::Leader)
        {
            let payload = c.unique_payload();
            c.propose(leader, payload)?;
            c.stabilize()?;
        }
        c.read(1)?;
    }
    assert!(
        [2, 3].iter().any(|&id| c.core(id).role() == Role::Leader),
        "nodes 2 and 3 elected a leader"
    );
    Ok(c.check.reads_served - served_before)
}

#[test]
fn a_lease_ends_before_the_followers_could_elect_another_leader() -> Result<(), Violation> {
    for seed in 10..20 {
        let served = reads_on_a_cut_off_lease_holder(seed, false)?;
        assert!(served >= 1, "reads inside the lease were served");
    }
    Ok(())
}

#[test]
fn teeth_a_lease_outlasting_the_election_timeout_serves_a_stale_read() {
    let caught = (10..20).find_map(|seed| reads_on_a_cut_off_lease_holder(seed, true).err());
    let err = caught.expect("some seed serves a read after the new leader's write");
    assert_eq!(err.rule, "read index linearizability");
}
