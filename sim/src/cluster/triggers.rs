//! The faults that snapshot events set off: a power cut at a drawn point during a snapshot
//! install (the install-crash fault), or right after a node's first snapshot (a scenario).
//! They fire on the node's own host; the fault loop turns each cut into a crash and a restart.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use net::storage::SimulatedDisk;
use raft_core::{NodeId, SnapshotMeta};
use rand::Rng;

use super::config::RunConfig;
use super::verdict::InstallCrashes;
use crate::observe::{SnapshotEvent, SnapshotHook};
use crate::rng::{self, SimRng};

/// A node's power as the snapshot-driven faults see it: a cut drawn and not yet made
/// (`pending`), or made (`blown`: the host is crashed after this step; its storage errors are
/// the power cut's, not a failure).
#[derive(Default)]
pub(super) struct Fuse {
    pending: AtomicBool,
    blown: AtomicBool,
}

impl Fuse {
    pub(super) fn reset(&self) {
        self.pending.store(false, Ordering::Relaxed);
        self.blown.store(false, Ordering::Relaxed);
    }

    pub(super) fn blown(&self) -> bool {
        self.blown.load(Ordering::Relaxed)
    }
}

/// A power cut made from inside a host, for the fault loop to turn into a crash.
pub(super) struct Cut {
    pub(super) node: u64,
    pub(super) downtime: Duration,
    pub(super) what: String,
}

/// The faults that snapshot events set off: the observer's hook calls them on the node's own
/// host, they cut the power there (at a drawn point), and the fault loop crashes the host after
/// the step and restarts it later, as for the scheduled crashes.
#[derive(Clone)]
pub(super) struct Triggers {
    state: Arc<Mutex<TriggerState>>,
}

struct TriggerState {
    rng: SimRng,
    /// Off once the faults stop.
    armed: bool,
    install_crashes: bool,
    after_first_snapshot: bool,
    took_first: BTreeSet<u64>,
    nodes: BTreeMap<u64, (kv::PowerCutEnv, Arc<Fuse>)>,
    cuts: Vec<Cut>,
    install_stats: InstallCrashes,
    first_snapshot_crashes: u64,
}

impl Triggers {
    pub(super) fn new(cfg: &RunConfig) -> Self {
        Self {
            state: Arc::new(Mutex::new(TriggerState {
                rng: rng::seeded(cfg.seed ^ 0x01a5_7a11_u64.rotate_left(24)),
                armed: true,
                install_crashes: cfg.kinds.install_crashes,
                after_first_snapshot: cfg.crash_after_first_snapshot,
                took_first: BTreeSet::new(),
                nodes: BTreeMap::new(),
                cuts: Vec::new(),
                install_stats: InstallCrashes::default(),
                first_snapshot_crashes: 0,
            })),
        }
    }

    fn state(&self) -> MutexGuard<'_, TriggerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The observer's hook that sets these faults off.
    pub(super) fn hook(&self) -> SnapshotHook {
        let triggers = self.clone();
        Arc::new(move |node, event, snapshot| triggers.on_snapshot(node, event, snapshot))
    }

    pub(super) fn add_node(&self, id: u64, disk: &SimulatedDisk) -> Arc<Fuse> {
        let fuse = Arc::new(Fuse::default());
        self.state()
            .nodes
            .insert(id, (disk.env.clone(), fuse.clone()));
        fuse
    }

    pub(super) fn disarm(&self) {
        self.state().armed = false;
    }

    pub(super) fn take_cuts(&self) -> Vec<Cut> {
        std::mem::take(&mut self.state().cuts)
    }

    pub(super) fn install_crashes(&self) -> InstallCrashes {
        self.state().install_stats
    }

    pub(super) fn first_snapshot_crashes(&self) -> u64 {
        self.state().first_snapshot_crashes
    }

    /// Called on the node's host by the observer, before the node acts on the event.
    pub(super) fn on_snapshot(&self, node: NodeId, event: SnapshotEvent, snapshot: SnapshotMeta) {
        let mut st = self.state();
        if !st.armed {
            return;
        }
        let fire = match event {
            SnapshotEvent::Installing => st.install_crashes && st.rng.gen_bool(0.5),
            SnapshotEvent::Taken => st.after_first_snapshot && st.took_first.insert(node),
        };
        if !fire {
            return;
        }
        let Some((env, fuse)) = st.nodes.get(&node).cloned() else {
            return;
        };
        if fuse.pending.swap(true, Ordering::Relaxed) {
            return;
        }
        // Where the cut lands: after a few turns of the host's other tasks, or a few simulated
        // milliseconds later. The install runs on the two storage workers in turns; with one
        // turn, the cut lands between the state machine's half and the end.
        let (turns, delay) = if st.rng.gen_bool(0.75) {
            let turns = if st.rng.gen_bool(0.7) {
                1
            } else {
                st.rng.gen_range(0..4u32)
            };
            (turns, Duration::ZERO)
        } else {
            (0, Duration::from_millis(st.rng.gen_range(0..=4)))
        };
        let downtime = Duration::from_millis(st.rng.gen_range(100..2_000));
        drop(st);
        let triggers = self.clone();
        tokio::task::spawn_local(async move {
            for _ in 0..turns {
                next_turn().await;
            }
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let phase = install_phase(&env.files(), &PathBuf::from(format!("/n{node}")));
            env.cut_power();
            fuse.blown.store(true, Ordering::Relaxed);
            let mut st = triggers.state();
            let what = match event {
                SnapshotEvent::Installing => {
                    let stats = &mut st.install_stats;
                    match phase {
                        InstallPhase::Before => stats.before += 1,
                        InstallPhase::Inside => stats.inside += 1,
                        InstallPhase::After => stats.after += 1,
                    }
                    let when = match phase {
                        InstallPhase::Before => "before",
                        InstallPhase::Inside => "inside",
                        InstallPhase::After => "after",
                    };
                    format!(
                        "power cut {when} the install of snapshot {}/{}",
                        snapshot.index, snapshot.term
                    )
                }
                SnapshotEvent::Taken => {
                    st.first_snapshot_crashes += 1;
                    format!(
                        "power cut after the first snapshot {}/{}",
                        snapshot.index, snapshot.term
                    )
                }
            };
            st.cuts.push(Cut {
                node,
                downtime,
                what,
            });
        });
    }
}

/// Lets every task already runnable on this host run first: the task goes to the back of the
/// run queue at once (`tokio::task::yield_now` instead waits until the runtime has nothing
/// else to do, which is after a whole install).
async fn next_turn() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InstallPhase {
    Before,
    Inside,
    After,
}

/// Where a node's install stands, from the files in its data directory `dir`: the install
/// marker (or its temporary) is there from the commit point to the end; before it, the staged
/// snapshot waits aside.
fn install_phase(files: &[PathBuf], dir: &Path) -> InstallPhase {
    let marker = files.iter().any(|f| {
        f.parent() == Some(dir)
            && f.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(kv::snapshot::INSTALL_MARKER))
    });
    let incoming = dir.join(kv::snapshot::INCOMING_DIR);
    if marker {
        InstallPhase::Inside
    } else if files.iter().any(|f| f.starts_with(&incoming)) {
        InstallPhase::Before
    } else {
        InstallPhase::After
    }
}
