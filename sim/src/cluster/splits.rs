//! Splits in a run: in a share of the seeds an operator splits the keyspace at drawn keys while
//! the workload and the faults go on, through the client port (`RAFT.SPLIT`) as `kvstore split`
//! does. Every key's history must stay linearizable across the splits (the checker sees one
//! history per key, whichever range served each operation), every split must be done once the
//! faults stop, and then every node must host the same ranges, tiling the keyspace.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use net::client::{ClientConfig, KvClient};
use net::node::admin::MemberRole;
use net::server_ranges::RangeStatus;
use rand::Rng;

use super::membership::SharedOperator;
use super::now;
use crate::net::TurmoilNet;
use crate::rng;

/// The share of seeds that split.
const SHARE: f64 = 0.3;

/// Where a run may split: never between the keys of one multi-key operation of the workload
/// (the group keys `t*` stay in one range, since a write over two ranges is refused), and
/// through the hot, cold and volatile keys, so that most operations meet a moved key.
const SPLIT_POINTS: &[&str] = &["e2", "k", "k1", "k3", "t", "w", "w3", "w7", "w12"];

/// The splits of a run, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct SplitPlan {
    /// When the first split is asked for.
    pub start: Duration,
    /// Each split's key, with the pause before it is asked for.
    pub splits: Vec<(Duration, Vec<u8>)>,
}

/// What the splitter did, as the run's report shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SplitReport {
    /// Each split done, with the simulated time it was answered at and the halves' ids.
    pub done: Vec<String>,
    /// Why the plan was not carried out, if it was not.
    pub error: Option<String>,
    /// How many ranges every node hosted at the end.
    pub ranges: usize,
}

pub(super) type SharedSplits = Rc<RefCell<SplitReport>>;

/// The plan seed `seed` runs, if any. Splits are drawn only in runs that take no snapshots (a
/// node behind a compacted log needs a range's image, and images pause while several ranges
/// exist); runs that change the members split too (every range follows the first range's
/// configuration). From a generator of its own, so that the rest of the seed is what it was
/// before splits existed.
pub(super) fn draw(seed: u64, takes_snapshots: bool) -> Option<SplitPlan> {
    let mut rng = rng::seeded(seed ^ 0x5911_7A7E_0DD5_EED5);
    if !rng.gen_bool(SHARE) || takes_snapshots {
        return None;
    }
    let mut points: Vec<&str> = SPLIT_POINTS.to_vec();
    rng::shuffle(&mut rng, &mut points);
    points.truncate(rng.gen_range(1..=points.len()));
    let splits = points
        .into_iter()
        .map(|key| {
            let pause = Duration::from_millis(rng.gen_range(0..2_000));
            (pause, key.as_bytes().to_vec())
        })
        .collect();
    Some(SplitPlan {
        start: Duration::from_millis(rng.gen_range(200..4_000)),
        splits,
    })
}

/// The splitter's verdict, judged with liveness: every split done, then every node hosting the
/// same tiling of the keyspace, by the deadline.
pub(super) fn splits_done(report: Option<&SplitReport>) -> Result<(), String> {
    match report {
        Some(SplitReport {
            error: Some(e),
            done,
            ..
        }) => Err(format!(
            "the split plan was not carried out: {e}\ndone before:\n{}",
            done.join("\n")
        )),
        _ => Ok(()),
    }
}

/// Adds the splitter to `tasks`; it must be done by `deadline` (simulated ns).
pub(super) fn start_splitter(
    tasks: &mut super::ClientTasks,
    plan: &SplitPlan,
    servers: &[String],
    deadline: u64,
    (seed, operator): (u64, Option<SharedOperator>),
) -> SharedSplits {
    let report = SharedSplits::default();
    let splitter = Splitter {
        servers: servers.to_vec(),
        operator,
        rng: RefCell::new(rng::seeded(seed ^ 0x0DD5_EED5_5911_7A7E)),
        report: report.clone(),
        deadline,
    };
    let plan = plan.clone();
    tasks.add(async move {
        tokio::time::sleep(plan.start).await;
        let outcome = splitter.run(&plan).await;
        if let Err(e) = outcome {
            splitter.report.borrow_mut().error = Some(e);
        }
    });
    report
}

fn splitter_config(follow_leader: bool) -> ClientConfig {
    ClientConfig {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(3),
        max_attempts: 3,
        backoff: Duration::from_millis(100),
        follow_leader,
        credentials: None,
    }
}

struct Splitter {
    servers: Vec<String>,
    /// The operator changing the members in the same run, if any: the nodes compared at the
    /// end are the members it leaves.
    operator: Option<SharedOperator>,
    /// The splitter is one task: its generator is borrowed one draw at a time.
    rng: RefCell<rng::SimRng>,
    report: SharedSplits,
    deadline: u64,
}

impl Splitter {
    async fn run(&self, plan: &SplitPlan) -> Result<(), String> {
        for (pause, key) in &plan.splits {
            tokio::time::sleep(*pause).await;
            self.split(key).await?;
        }
        let Some(members) = self.final_members().await else {
            // The operator's plan failed, and the run with it.
            return Ok(());
        };
        self.await_same_ranges_everywhere(&members, plan.splits.len() + 1)
            .await
    }

    /// The client addresses of the nodes that must host every range at the end: every node,
    /// or, with an operator changing the members, the members once its plan is done (`None`
    /// if the plan failed).
    async fn final_members(&self) -> Option<Vec<String>> {
        let Some(operator) = &self.operator else {
            return Some(self.servers.clone());
        };
        loop {
            let report = operator.borrow().report.clone();
            if report.error.is_some() {
                return None;
            }
            if let Some(list) = report.final_members {
                let members = list
                    .members
                    .iter()
                    .filter(|m| m.role != MemberRole::None)
                    .filter_map(|m| self.servers.get((m.id as usize).checked_sub(1)?).cloned())
                    .collect();
                return Some(members);
            }
            if now() >= self.deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Asks for the split until it is answered (a retry of a split that took effect answers the
    /// ranges meeting at its key), from a new client each time, starting at a drawn node.
    async fn split(&self, key: &[u8]) -> Result<(), String> {
        let mut last = String::new();
        while now() < self.deadline {
            let id = self.rng_u64() | 1;
            let start = self.rng_index(self.servers.len());
            let mut client =
                KvClient::over(TurmoilNet, self.servers.clone(), splitter_config(true), id)
                    .starting_at(start);
            match client.split(key).await {
                Ok([left, right]) => {
                    let line = format!(
                        "{:.3}s split at {:?}: ranges {} and {} (epoch {})",
                        now() as f64 / 1e9,
                        String::from_utf8_lossy(key),
                        left.id,
                        right.id,
                        right.epoch
                    );
                    self.report.borrow_mut().done.push(line);
                    return Ok(());
                }
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(format!(
            "the split at {:?} was not done by the deadline (last answer: {last})",
            String::from_utf8_lossy(key)
        ))
    }

    /// Waits until every node, asked alone, hosts `expected` ranges that tile the keyspace, the
    /// same on every node.
    async fn await_same_ranges_everywhere(
        &self,
        nodes: &[String],
        expected: usize,
    ) -> Result<(), String> {
        let mut last = String::new();
        while now() < self.deadline {
            match self.every_node_s_ranges(nodes).await {
                Ok(views) => match agree(&views, expected) {
                    Ok(()) => {
                        self.report.borrow_mut().ranges = expected;
                        return Ok(());
                    }
                    Err(e) => last = e,
                },
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(format!(
            "the nodes did not come to host the same {expected} ranges by the deadline: {last}"
        ))
    }

    async fn every_node_s_ranges(&self, nodes: &[String]) -> Result<Vec<Vec<RangeStatus>>, String> {
        let mut views = Vec::new();
        for server in nodes {
            let id = self.rng_u64() | 1;
            let mut client =
                KvClient::over(TurmoilNet, vec![server.clone()], splitter_config(false), id);
            let ranges = client
                .ranges()
                .await
                .map_err(|e| format!("{server}: {e}"))?;
            views.push(ranges);
        }
        Ok(views)
    }

    fn rng_u64(&self) -> u64 {
        self.rng.borrow_mut().gen()
    }

    fn rng_index(&self, len: usize) -> usize {
        rng::index(&mut self.rng.borrow_mut(), len.max(1))
    }
}

/// A range as the nodes are compared on: id, start, end, epoch.
type Bounds = (u64, Vec<u8>, Option<Vec<u8>>, u64);

/// Whether every node's ranges are the same `expected` ones, tiling the keyspace in key order.
fn agree(views: &[Vec<RangeStatus>], expected: usize) -> Result<(), String> {
    let Some(first) = views.first() else {
        return Err("no node answered".into());
    };
    let bounds = |ranges: &[RangeStatus]| -> Vec<Bounds> {
        ranges
            .iter()
            .map(|r| {
                (
                    r.id,
                    r.start.to_vec(),
                    r.end.as_ref().map(|e| e.to_vec()),
                    r.epoch,
                )
            })
            .collect()
    };
    if first.len() != expected {
        return Err(format!("{} ranges, not {expected}", first.len()));
    }
    for (i, view) in views.iter().enumerate() {
        if bounds(view) != bounds(first) {
            return Err(format!(
                "node {} hosts {:?}, node 1 {:?}",
                i + 1,
                bounds(view),
                bounds(first)
            ));
        }
    }
    let tiles = first.first().is_some_and(|r| r.start.is_empty())
        && first.last().is_some_and(|r| r.end.is_none())
        && first
            .windows(2)
            .all(|w| w[0].end.as_ref() == Some(&w[1].start));
    if !tiles {
        return Err(format!(
            "the ranges do not tile the keyspace: {:?}",
            bounds(first)
        ));
    }
    Ok(())
}
