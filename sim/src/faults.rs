//! Which faults a seed turns on (swarm testing: each kind on or off per seed), and the schedule
//! of fault actions drawn from the seed.

use std::fmt;
use std::time::Duration;

use rand::Rng;

use crate::rng::{self, SimRng};

/// The kinds of fault a run may inject.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultKinds {
    /// Network partitions: one node isolated, random halves, one-way, a bridge node.
    pub partitions: bool,
    /// A node crashes (losing unsynced writes) and restarts later.
    pub crashes: bool,
    /// A majority crashes at once.
    pub majority_crashes: bool,
    /// A node's links are held (a paused process), then released with their backlog.
    pub pauses: bool,
    /// Each node's clock runs at its own rate (ticks between 0.8x and 1.25x).
    pub clock_skew: bool,
    /// Latency spikes on links (reordering across connections).
    pub latency: bool,
    /// Links that lose messages, so connections stall and must be replaced.
    pub flaky_links: bool,
    /// A node's log writes (fsync) become slow for a while.
    pub slow_disk: bool,
    /// A node that begins installing a snapshot from the leader loses its power a moment later
    /// (inside the install or just after it), and restarts later. Meaningful only with
    /// snapshots on; drawn apart from the others (see `RunConfig::from_seed`).
    pub install_crashes: bool,
}

impl FaultKinds {
    pub fn all() -> Self {
        Self {
            partitions: true,
            crashes: true,
            majority_crashes: true,
            pauses: true,
            clock_skew: true,
            latency: true,
            flaky_links: true,
            slow_disk: true,
            install_crashes: true,
        }
    }

    /// No faults at all (a test turns on the ones it names).
    pub fn none() -> Self {
        Self::default()
    }

    /// Each kind on with probability one half (`install_crashes` stays off: it depends on the
    /// snapshot policy, drawn after these).
    pub fn from_rng(rng: &mut SimRng) -> Self {
        Self {
            partitions: rng.gen_bool(0.5),
            crashes: rng.gen_bool(0.5),
            majority_crashes: rng.gen_bool(0.25),
            pauses: rng.gen_bool(0.5),
            clock_skew: rng.gen_bool(0.5),
            latency: rng.gen_bool(0.5),
            flaky_links: rng.gen_bool(0.3),
            slow_disk: rng.gen_bool(0.3),
            install_crashes: false,
        }
    }

    pub fn any(&self) -> bool {
        *self != Self::default()
    }
}

impl fmt::Display for FaultKinds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (self.partitions, "partitions"),
            (self.crashes, "crashes"),
            (self.majority_crashes, "majority-crashes"),
            (self.pauses, "pauses"),
            (self.clock_skew, "clock-skew"),
            (self.latency, "latency"),
            (self.flaky_links, "flaky-links"),
            (self.slow_disk, "slow-disk"),
            (self.install_crashes, "install-crashes"),
        ];
        let on: Vec<&str> = names
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| *n)
            .collect();
        if on.is_empty() {
            write!(f, "none")
        } else {
            write!(f, "{}", on.join(","))
        }
    }
}

/// One thing the fault schedule does to the cluster. Nodes are numbered from 1.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultAction {
    /// Cut every link between the two groups, both ways.
    Partition(Vec<u64>, Vec<u64>),
    /// Cut the links from the first group to the second only.
    PartitionOneWay(Vec<u64>, Vec<u64>),
    /// Cut the node leading at that moment (the leader of the highest term, as the nodes' role
    /// changes tell) from every other node, both ways, as [`FaultAction::Partition`]; clients
    /// still reach it. Nothing if no node leads. Never drawn: a test's scenario.
    IsolateLeader,
    /// Restore every link between nodes.
    Heal,
    /// Power cut: unsynced writes are lost and the process dies.
    Crash(Vec<u64>),
    /// Start crashed nodes again.
    Restart(Vec<u64>),
    /// The node's disk is lost: a power cut, then every file gone. The node stays down (heals
    /// and restarts leave it) until [`FaultAction::Reinstall`]. Never drawn: a test's scenario
    /// or an operator's plan asks for it.
    LoseDisk(Vec<u64>),
    /// Starts nodes whose disk was lost again, on their blank disks, under their old ids, as an
    /// operator who reinstalls a machine and starts it as before: each is a new incarnation of
    /// its id, which its peers must refuse.
    Reinstall(Vec<u64>),
    /// Freeze the node (no ticks, nothing handled) and hold its links; messages wait.
    Pause(u64),
    /// Release the held links.
    Resume(u64),
    /// Raise the latency of the node's links to the given maximum.
    LatencySpike(u64, Duration),
    /// Links of the node lose this share of their messages.
    Flaky(u64, f64),
    /// Each log write of the node takes this long.
    SlowDisk(u64, Duration),
    /// Every link back to normal latency and no loss, every disk back to full speed.
    Calm,
}

/// A schedule: actions at simulated times, in order, that leaves the cluster whole at `heal_at`.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub actions: Vec<(Duration, FaultAction)>,
    pub heal_at: Duration,
}

impl Schedule {
    /// Draws a schedule for `nodes` nodes over `duration` from `seed`.
    pub fn draw(seed: u64, nodes: u64, kinds: FaultKinds, duration: Duration) -> Schedule {
        let mut rng = rng::seeded(seed ^ 0x5ced_u64.rotate_left(40));
        let ids: Vec<u64> = (1..=nodes).collect();
        let mut actions = Vec::new();
        let mut t = Duration::from_millis(rng.gen_range(1_000..3_000));
        let menu: Vec<u8> = [
            (kinds.partitions, 0u8),
            (kinds.crashes, 1),
            (kinds.majority_crashes, 2),
            (kinds.pauses, 3),
            (kinds.latency, 4),
            (kinds.flaky_links, 5),
            (kinds.slow_disk, 6),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|&(_, k)| k)
        .collect();
        while t < duration && !menu.is_empty() {
            let pick = menu[rng::index(&mut rng, menu.len())];
            let node = ids[rng::index(&mut rng, ids.len())];
            match pick {
                0 => {
                    let mut shuffled = ids.clone();
                    rng::shuffle(&mut rng, &mut shuffled);
                    let split = 1 + rng::index(&mut rng, shuffled.len() - 1);
                    let (a, b) = shuffled.split_at(split);
                    let action = match rng.gen_range(0..4) {
                        0 => FaultAction::Partition(vec![node], others(&ids, &[node])),
                        1 => FaultAction::Partition(a.to_vec(), b.to_vec()),
                        2 => FaultAction::PartitionOneWay(a.to_vec(), b.to_vec()),
                        _ => {
                            // A bridge: the first node keeps every link, the rest are split.
                            let rest = &shuffled[1..];
                            let half = rest.len() / 2;
                            FaultAction::Partition(rest[..half].to_vec(), rest[half..].to_vec())
                        }
                    };
                    actions.push((t, action));
                    t += Duration::from_millis(rng.gen_range(500..4_000));
                    actions.push((t, FaultAction::Heal));
                }
                // Each fault is undone before the next one starts, so none overlap.
                1 | 2 => {
                    let victims = if pick == 1 {
                        vec![node]
                    } else {
                        let mut shuffled = ids.clone();
                        rng::shuffle(&mut rng, &mut shuffled);
                        shuffled[..ids.len() / 2 + 1].to_vec()
                    };
                    actions.push((t, FaultAction::Crash(victims.clone())));
                    t += Duration::from_millis(rng.gen_range(200..3_000));
                    actions.push((t, FaultAction::Restart(victims)));
                }
                3 => {
                    actions.push((t, FaultAction::Pause(node)));
                    t += Duration::from_millis(rng.gen_range(200..3_000));
                    actions.push((t, FaultAction::Resume(node)));
                }
                4 => {
                    let max = Duration::from_millis(rng.gen_range(50..500));
                    actions.push((t, FaultAction::LatencySpike(node, max)));
                    t += Duration::from_millis(rng.gen_range(500..3_000));
                    actions.push((t, FaultAction::Calm));
                }
                5 => {
                    let rate = rng.gen_range(0.01..0.2);
                    actions.push((t, FaultAction::Flaky(node, rate)));
                    t += Duration::from_millis(rng.gen_range(500..3_000));
                    actions.push((t, FaultAction::Calm));
                }
                6 => {
                    let latency = Duration::from_millis(rng.gen_range(5..300));
                    actions.push((t, FaultAction::SlowDisk(node, latency)));
                    t += Duration::from_millis(rng.gen_range(500..3_000));
                    actions.push((t, FaultAction::Calm));
                }
                _ => {}
            }
            t += Duration::from_millis(rng.gen_range(100..2_000));
        }
        let heal_at = t.max(duration);
        actions.push((heal_at, FaultAction::Heal));
        actions.push((heal_at, FaultAction::Calm));
        Schedule { actions, heal_at }
    }
}

fn others(ids: &[u64], except: &[u64]) -> Vec<u64> {
    ids.iter()
        .copied()
        .filter(|i| !except.contains(i))
        .collect()
}
