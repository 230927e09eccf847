//! Contract points of the core that need a whole cluster to show.

use raft_core::{Message, MessageBody, Role};
use raft_harness::Cluster;

/// A follower whose acknowledgement arrives after the entry committed still learns the commit
/// at once, without waiting for a heartbeat: a client whose write was forwarded by that follower
/// is answered when the follower applies it, so otherwise every such write waits a heartbeat.
#[test]
fn a_follower_acknowledging_after_the_commit_learns_it_without_a_heartbeat() {
    let mut c = Cluster::new(3, 7, |cfg| {
        cfg.pre_vote = false;
        cfg.check_quorum = false;
    });
    c.campaign(1).expect("campaign");
    c.stabilize().expect("election");
    assert_eq!(c.core(1).role(), Role::Leader);

    let payload = c.unique_payload();
    c.propose(3, payload).expect("forwarded");
    let late_ack =
        |m: &Message| m.from == 3 && matches!(m.body, MessageBody::AppendResponse { .. });
    c.deliver_where(|m| !late_ack(m)).expect("commit with n2");
    let committed = c.core(1).commit_index();
    assert!(
        committed > c.core(3).commit_index(),
        "the scenario needs n3 to be behind"
    );
    // n3's acknowledgement arrives; no tick happens, so no heartbeat carries the commit.
    c.stabilize().expect("late acknowledgement");
    assert_eq!(c.core(3).commit_index(), committed);
}
