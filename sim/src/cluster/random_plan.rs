//! Operator plans drawn from a seed, for the share of random runs that change the members while
//! the drawn faults go on: learners added and promoted (growing the cluster), learners added
//! and left as learners or removed, voters removed (the leader among them, when it is the one
//! drawn), a voter replaced after its disk was lost, leadership transferred. A third of the
//! changes of the voters crash the leader while the configuration is joint.
//!
//! The plan keeps at least three voters that are not lost, so that a cluster under a drawn
//! crash or partition can always come back once the faults stop.

use std::time::Duration;

use rand::Rng;

use super::membership::{MemberOp, MemberPlan};
use crate::faults::FaultAction;
use crate::rng::{self, SimRng};

/// The share of seeds that run a plan.
const SHARE: f64 = 1.0 / 3.0;

/// The plan seed `seed` runs on a cluster of `nodes` founding members, if any. Drawn from a
/// generator of its own, so that the rest of the seed is what it was before plans existed.
pub(super) fn draw(seed: u64, nodes: u64) -> Option<MemberPlan> {
    let mut rng = rng::seeded(seed ^ 0x7A11_3E3B_E25D_0FE2);
    if !rng.gen_bool(SHARE) {
        return None;
    }
    let spares = rng.gen_range(1..=2);
    let start = Duration::from_millis(rng.gen_range(500..4_000));
    let changes = rng.gen_range(2..=5);
    let mut model = Model {
        rng,
        voters: (1..=nodes).collect(),
        learners: Vec::new(),
        next_spare: nodes + 1,
        last_spare: nodes + spares,
        steps: Vec::new(),
    };
    for _ in 0..changes {
        model.draw_change();
    }
    Some(MemberPlan {
        start,
        spares,
        steps: model.steps,
        faults_on_spares: true,
    })
}

/// The configuration as the plan leaves it so far.
struct Model {
    rng: SimRng,
    voters: Vec<u64>,
    learners: Vec<u64>,
    next_spare: u64,
    last_spare: u64,
    steps: Vec<MemberOp>,
}

impl Model {
    fn draw_change(&mut self) {
        if self.rng.gen_bool(0.5) {
            let pause = Duration::from_millis(self.rng.gen_range(0..3_000));
            self.steps.push(MemberOp::Wait(pause));
        }
        let spare_left = self.next_spare <= self.last_spare;
        match self.rng.gen_range(0..6) {
            0 | 1 if spare_left => {
                let id = self.add_learner();
                if self.rng.gen_bool(0.8) {
                    self.promote(id);
                }
            }
            2 if self.voters.len() > 3 => {
                let id = pick(&mut self.rng, &self.voters);
                self.voters.retain(|v| *v != id);
                self.voter_change(MemberOp::Remove(id));
            }
            2 if !self.learners.is_empty() => {
                let id = pick(&mut self.rng, &self.learners);
                self.learners.retain(|l| *l != id);
                self.steps.push(MemberOp::Remove(id));
            }
            3 if spare_left => {
                let lost = pick(&mut self.rng, &self.voters);
                self.voters.retain(|v| *v != lost);
                self.steps
                    .push(MemberOp::Fault(FaultAction::LoseDisk(vec![lost])));
                self.voter_change(MemberOp::Remove(lost));
                let id = self.add_learner();
                self.promote(id);
            }
            4 if !self.learners.is_empty() => {
                let id = self.learners[0];
                self.promote(id);
            }
            _ => {
                let to = pick(&mut self.rng, &self.voters);
                self.steps.push(MemberOp::TransferLeader(to));
            }
        }
    }

    fn add_learner(&mut self) -> u64 {
        let id = self.next_spare;
        self.next_spare += 1;
        self.learners.push(id);
        self.steps.push(MemberOp::AddLearner(id));
        id
    }

    fn promote(&mut self, id: u64) {
        self.learners.retain(|l| *l != id);
        self.voters.push(id);
        self.steps.push(MemberOp::AwaitCaughtUp(id));
        self.voter_change(MemberOp::Promote(id));
    }

    /// A change of the voters, which goes through a joint configuration: in a third of them,
    /// the leader crashes while it is joint.
    fn voter_change(&mut self, change: MemberOp) {
        if self.rng.gen_bool(1.0 / 3.0) {
            let downtime = Duration::from_millis(self.rng.gen_range(100..3_000));
            self.steps.push(MemberOp::CrashLeaderWhileJoint(downtime));
        }
        self.steps.push(change);
    }
}

fn pick(rng: &mut SimRng, ids: &[u64]) -> u64 {
    ids[rng::index(rng, ids.len())]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replays each plan's changes on the set of voters: never fewer than three that are not
    /// lost, every promotion of a learner added before, every spare added once.
    #[test]
    fn plans_keep_three_voters_and_change_only_what_exists() {
        let (mut planned, mut crashes_while_joint) = (0, 0);
        for seed in 0..300 {
            for nodes in [3, 5] {
                let Some(plan) = draw(seed, nodes) else {
                    continue;
                };
                planned += 1;
                let mut voters: Vec<u64> = (1..=nodes).collect();
                let mut learners = Vec::new();
                for step in &plan.steps {
                    match step {
                        MemberOp::AddLearner(id) => {
                            assert!(*id > nodes && *id <= nodes + plan.spares);
                            assert!(!learners.contains(id) && !voters.contains(id));
                            learners.push(*id);
                        }
                        MemberOp::Promote(id) => {
                            assert!(learners.contains(id), "{plan:?}");
                            learners.retain(|l| l != id);
                            voters.push(*id);
                        }
                        MemberOp::Remove(id) => {
                            assert!(voters.contains(id) || learners.contains(id), "{plan:?}");
                            voters.retain(|v| v != id);
                            learners.retain(|l| l != id);
                        }
                        MemberOp::TransferLeader(id) => assert!(voters.contains(id)),
                        MemberOp::CrashLeaderWhileJoint(_) => crashes_while_joint += 1,
                        _ => {}
                    }
                }
                assert!(voters.len() >= 3, "{plan:?}");
            }
        }
        assert!(
            (150..250).contains(&planned),
            "{planned} plans in 600 draws"
        );
        assert!(
            crashes_while_joint > 20,
            "{crashes_while_joint} crashes while joint"
        );
    }
}
