//! Liveness when replies take longer than election timeouts: most replies (votes,
//! acknowledgements, heartbeat answers) arrive one to seven election timeouts after they were
//! sent, as in the 6.5840 lab's Figure8Unreliable network. A leader must neither be deposed by
//! check-quorum for replies that are merely late, nor fail to commit.

use bytes::Bytes;

use crate::cluster::{Cluster, SlowReplies};
use crate::invariants::Violation;
use crate::random_run::{Failure, RunStats};
use raft_core::Config;

/// Random steps per election timeout of one node in an `nodes`-node cluster: each random step
/// ticks one random node with probability 120/1000 (see `Cluster::random_step`).
pub fn steps_per_election_timeout(nodes: u64, election_ticks: u32) -> u64 {
    u64::from(election_ticks) * nodes * 1000 / 120
}

/// A 3-node run with no faults but slow replies: nine replies in ten are delayed by one to
/// seven election timeouts. A proposal must commit within `max_steps` random steps; returns
/// the steps it took. `configure` adjusts each node's config (check-quorum is on).
pub fn slow_reply_run(
    seed: u64,
    max_steps: u64,
    configure: impl Fn(&mut Config),
) -> Result<u64, Box<Failure>> {
    let nodes = 3;
    let mut sample = Config::new(1, vec![1, 2, 3]);
    sample.check_quorum = true;
    configure(&mut sample);
    let timeout = steps_per_election_timeout(nodes, sample.election_ticks);
    let mut cluster = Cluster::new(nodes, seed, |cfg| {
        cfg.check_quorum = true;
        configure(cfg);
    });
    cluster.slow_replies = Some(SlowReplies {
        share: 0.9,
        min_steps: timeout,
        max_steps: 7 * timeout,
    });
    let marker = Bytes::from_static(b"slow-reply-marker");
    let fail = |cluster: &Cluster, violation: Violation, steps: u64| {
        Box::new(Failure {
            seed,
            violation,
            stats: RunStats {
                nodes,
                steps,
                ..RunStats::default()
            },
            recent: cluster.recent_events(),
            state: cluster.describe(),
        })
    };
    for step in 1..=max_steps {
        if let Err(v) = cluster.random_step(false) {
            return Err(fail(&cluster, v, step));
        }
        if step % 50 == 0 {
            if let Some(leader) = cluster.leader() {
                if let Err(v) = cluster.propose(leader, marker.clone()) {
                    return Err(fail(&cluster, v, step));
                }
            }
        }
        if cluster.marker_committed(&marker) {
            return Ok(step);
        }
    }
    let v = Violation {
        rule: "liveness",
        detail: format!("no proposal committed within {max_steps} steps with slow replies"),
    };
    Err(fail(&cluster, v, max_steps))
}
