//! Who this node is, and which peers it lets in.
//!
//! * At start, [`open`] reads the data directory's identity (`kv::Identity`): a recorded one is
//!   used as it is (its cluster id, not one derived from today's command line, so a node moved
//!   to another address keeps its directory). An empty directory gets a new identity: the
//!   cluster id derived from the cluster token and the initial members' ids, and the
//!   incarnation drawn by the command line.
//! * Before an empty directory bootstraps (`--peers`), [`check_bootstrap`] probes the peers
//!   (`probe`): one that has pinned an incarnation of this node's id means that this id was a
//!   member whose directory was lost, and the node refuses to start.
//! * [`PeerGate`] admits peers' frames: the first incarnation seen from each peer id is pinned
//!   durably (`kv::PeerPins`), and any other incarnation of it is refused, logged and counted.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use kv::identity::{token_digest, DEFAULT_CLUSTER_TOKEN};
use kv::{Identity, PeerPins, PinCheck};
use raft_core::NodeId;

use super::config::NodeConfig;
use crate::error::{NodeError, StorageError};
use crate::peer_header::Sender;
use crate::probe::{self, ProbeAnswer};
use crate::storage::StorageMode;
use crate::transport::{Listener, Net};

/// How long an empty node told to bootstrap waits for its peers to answer the probe: long
/// enough for nodes of a new cluster started together to come up, short enough not to matter.
pub const BOOTSTRAP_PROBE_WAIT: Duration = Duration::from_secs(2);
/// Pause between two probes of a peer that did not answer.
const PROBE_RETRY: Duration = Duration::from_millis(100);

/// The identity a node runs with, and whether it is still to be recorded (an empty directory).
pub(super) struct Opened {
    pub identity: Identity,
    pub is_new: bool,
}

/// Reads (or, for an empty directory, makes up) the node's identity. The simulator's disks keep
/// no identity file: there the configuration's cluster id and incarnation are the identity.
pub(super) fn open(cfg: &NodeConfig) -> Result<Opened, NodeError> {
    let token = cfg.cluster_token.as_deref();
    let made_up = Identity {
        node_id: cfg.id,
        cluster_id: cfg.cluster_id,
        incarnation: cfg.incarnation,
        token_digest: token_digest(token.unwrap_or(DEFAULT_CLUSTER_TOKEN)),
    };
    if !matches!(cfg.storage, StorageMode::Disk) {
        return Ok(Opened {
            identity: made_up,
            is_new: false,
        });
    }
    let recorded = Identity::open_recorded(&cfg.data_dir, cfg.id, token, cfg.incarnation)
        .map_err(StorageError::kv("checking the data directory's identity"))?;
    Ok(match recorded {
        Some(identity) => Opened {
            identity,
            is_new: false,
        },
        None => Opened {
            identity: made_up,
            is_new: true,
        },
    })
}

/// Records a new directory's identity (after [`check_bootstrap`] let it start).
pub(super) fn record(cfg: &NodeConfig, identity: &Identity) -> Result<(), NodeError> {
    identity
        .create(&cfg.data_dir)
        .map_err(StorageError::kv("recording the data directory's identity"))?;
    tracing::info!(
        id = identity.node_id,
        cluster = %kv::ClusterIdText(identity.cluster_id),
        incarnation = format_args!("{:#x}", identity.incarnation),
        "new data directory"
    );
    Ok(())
}

/// The pins of the data directory (kept with a simulated disk, in memory).
pub(super) fn open_pins(cfg: &NodeConfig) -> Result<Arc<Mutex<PeerPins>>, NodeError> {
    match &cfg.storage {
        StorageMode::Disk => Ok(Arc::new(Mutex::new(
            PeerPins::open(&cfg.data_dir)
                .map_err(StorageError::kv("reading the pinned peer incarnations"))?,
        ))),
        StorageMode::Simulated(disk) => Ok(disk.peer_pins.clone()),
    }
}

/// Asks every peer, for up to `wait`, whether this empty node may bootstrap: refused if one of
/// them has pinned an incarnation of this node's id (it was a member, and lost its directory),
/// or belongs to another cluster. Peers that do not answer in time are taken as a cluster
/// starting together.
pub(super) async fn check_bootstrap<N: Net>(
    net: &N,
    cfg: &NodeConfig,
    wait: Duration,
) -> Result<(), NodeError> {
    let me = Sender {
        node_id: cfg.id,
        incarnation: cfg.incarnation,
    };
    let deadline = Instant::now() + wait;
    let mut asks = Vec::new();
    for (&peer, addr) in cfg.peers.iter().filter(|(&p, _)| p != cfg.id) {
        let (net, addr, cluster_id) = (net.clone(), addr.clone(), cfg.cluster_id);
        asks.push(N::Listener::spawn(async move {
            let answer = ask_until(&net, &addr, cluster_id, me, deadline).await;
            (peer, addr, answer)
        }));
    }
    let mut answers = Vec::new();
    for ask in asks {
        if let Ok(answer) = ask.await {
            answers.push(answer);
        }
    }
    answers.sort_by_key(|(peer, _, _)| *peer);
    for (peer, addr, answer) in &answers {
        match answer {
            Some(a) => tracing::info!(
                peer,
                %addr,
                cluster = %kv::ClusterIdText(a.cluster_id),
                has_data = a.has_data,
                knows_this_node = a.pinned_for_asker.is_some(),
                "bootstrap probe answered"
            ),
            None => tracing::info!(peer, %addr, "bootstrap probe not answered in time"),
        }
    }
    decide(cfg, &answers)
}

/// The verdict on the probe's answers, in peer id order.
fn decide(
    cfg: &NodeConfig,
    answers: &[(NodeId, String, Option<ProbeAnswer>)],
) -> Result<(), NodeError> {
    let answered = answers
        .iter()
        .filter_map(|(p, addr, a)| Some((p, addr, a.as_ref()?)));
    for (_, _, a) in answered.clone() {
        if let Some(pinned) = a.pinned_for_asker {
            return Err(NodeError::AlreadyBootstrapped {
                id: cfg.id,
                cluster: a.cluster_id,
                told_by: a.node.node_id,
                pinned,
            });
        }
    }
    for (&peer, addr, a) in answered {
        if a.cluster_id != cfg.cluster_id {
            return Err(NodeError::ForeignCluster {
                peer,
                addr: addr.clone(),
                theirs: a.cluster_id,
                ours: cfg.cluster_id,
            });
        }
    }
    Ok(())
}

/// Probes `addr` until it answers or `deadline` passes.
async fn ask_until<N: Net>(
    net: &N,
    addr: &str,
    cluster_id: u64,
    me: Sender,
    deadline: Instant,
) -> Option<ProbeAnswer> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        match probe::ask(net, addr, cluster_id, me, left.min(Duration::from_secs(1))).await {
            Ok(answer) => return Some(answer),
            Err(e) => tracing::debug!(%addr, error = %e, "bootstrap probe failed"),
        }
        tokio::time::sleep(PROBE_RETRY.min(deadline.saturating_duration_since(Instant::now())))
            .await;
    }
}

/// Admits peers' frames by their sender's incarnation, answers probes, and counts refusals.
/// Shared by every inbound connection.
#[derive(Debug)]
pub struct PeerGate {
    cluster_id: u64,
    me: Sender,
    has_data: AtomicBool,
    pins: Arc<Mutex<PeerPins>>,
    refused: AtomicU64,
    /// The peer address each admitted sender gave in its hello frame (bounded).
    introduced: Mutex<BTreeMap<NodeId, String>>,
}

/// How many introduced addresses a gate keeps.
const MAX_INTRODUCED: usize = 1024;

impl PeerGate {
    pub fn new(cluster_id: u64, me: Sender, pins: Arc<Mutex<PeerPins>>) -> Self {
        Self {
            cluster_id,
            me,
            has_data: AtomicBool::new(false),
            pins,
            refused: AtomicU64::new(0),
            introduced: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// Whether this node holds Raft state, as probes are told.
    pub fn set_has_data(&self, has_data: bool) {
        self.has_data.store(has_data, Ordering::Relaxed);
    }

    fn pins(&self) -> std::sync::MutexGuard<'_, PeerPins> {
        // A panic while holding the lock cannot leave the pins half-changed: they are replaced
        // only after the file is written.
        self.pins
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether frames from `sender` may be acted on. The first incarnation seen of a peer id is
    /// pinned (durably, before this returns: writing a small file once per peer, which briefly
    /// blocks this thread); another incarnation of a pinned peer is refused with a warning that
    /// names both, and counted.
    pub fn admit(&self, sender: Sender, remote: &str) -> bool {
        let checked = self.pins().check(sender.node_id, sender.incarnation);
        match checked {
            Ok(PinCheck::Known) => true,
            Ok(PinCheck::NewlyPinned) => {
                tracing::info!(
                    peer = sender.node_id,
                    incarnation = format_args!("{:#x}", sender.incarnation),
                    "pinned the incarnation of a peer"
                );
                true
            }
            Ok(PinCheck::Conflict { pinned }) => {
                let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(
                    peer = sender.node_id,
                    %remote,
                    refused,
                    "refusing frames from node {}: its incarnation {:#x} is not the {:#x} this \
                     node knows (its data directory was lost or replaced: remove it with \
                     `kvstore member remove {}` and add it back as a new member)",
                    sender.node_id,
                    sender.incarnation,
                    pinned,
                    sender.node_id
                );
                false
            }
            Err(e) => {
                tracing::error!(peer = sender.node_id, error = %e, "cannot pin a peer's incarnation; refusing its frames");
                false
            }
        }
    }

    /// Records the peer address admitted peer `node_id` gave in its hello (empty: none).
    pub fn note_introduced(&self, node_id: NodeId, addr: String) {
        if addr.is_empty() {
            return;
        }
        let mut introduced = self.introduced.lock().unwrap_or_else(|e| e.into_inner());
        if introduced.len() < MAX_INTRODUCED || introduced.contains_key(&node_id) {
            introduced.insert(node_id, addr);
        }
    }

    /// The peer address `node_id` gave in its last hello, if any.
    pub fn introduced_addr(&self, node_id: NodeId) -> Option<String> {
        let introduced = self.introduced.lock().unwrap_or_else(|e| e.into_inner());
        introduced.get(&node_id).cloned()
    }

    /// Forgets `node_id`'s pinned incarnation (it was removed from the cluster), so that the id
    /// can come back as a new member.
    pub fn forget(&self, node_id: NodeId) -> Result<bool, kv::Error> {
        self.pins().forget(node_id)
    }

    /// Frames refused since start because their sender's incarnation was not the pinned one.
    pub fn refused_frames(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// What a probe from node `asker` is told.
    pub fn probe_answer(&self, asker: NodeId) -> ProbeAnswer {
        ProbeAnswer {
            cluster_id: self.cluster_id,
            node: self.me,
            has_data: self.has_data.load(Ordering::Relaxed),
            pinned_for_asker: self.pins().pinned(asker),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const OLD_3: Sender = Sender {
        node_id: 3,
        incarnation: 0x333,
    };
    const WIPED_3: Sender = Sender {
        node_id: 3,
        incarnation: 0x334,
    };

    fn gate(pins: PeerPins) -> PeerGate {
        let me = Sender {
            node_id: 1,
            incarnation: 0x111,
        };
        PeerGate::new(77, me, Arc::new(Mutex::new(pins)))
    }

    #[test]
    fn a_peer_is_pinned_at_its_first_frame_and_another_incarnation_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let g = gate(PeerPins::open(dir.path()).unwrap());
        assert_eq!(g.probe_answer(3).pinned_for_asker, None);
        assert!(g.admit(OLD_3, "test"));
        assert!(g.admit(OLD_3, "test"));
        assert!(!g.admit(WIPED_3, "test"), "a wiped node must not come back");
        assert_eq!(g.refused_frames(), 1);
        assert_eq!(g.probe_answer(3).pinned_for_asker, Some(OLD_3.incarnation));

        // Durable: a restarted node still refuses the wiped incarnation.
        let g = gate(PeerPins::open(dir.path()).unwrap());
        assert!(!g.admit(WIPED_3, "test"));
        assert!(g.admit(OLD_3, "test"));

        // Once the member is removed (its pin forgotten), the id can come back as a new member.
        assert!(g.forget(3).unwrap());
        assert!(g.admit(WIPED_3, "test"));
        assert!(!g.admit(OLD_3, "test"));
    }

    fn answer(cluster_id: u64, peer: NodeId, pinned: Option<u64>) -> Option<ProbeAnswer> {
        Some(ProbeAnswer {
            cluster_id,
            node: Sender {
                node_id: peer,
                incarnation: peer * 10,
            },
            has_data: true,
            pinned_for_asker: pinned,
        })
    }

    #[test]
    fn the_bootstrap_probe_refuses_a_known_member_and_a_foreign_cluster_only() {
        let peers: BTreeMap<NodeId, String> =
            (1..=3).map(|i| (i, format!("127.0.0.1:{i}"))).collect();
        let cfg = NodeConfig::new(3, peers, "/nonexistent".into());
        let ours = cfg.cluster_id;
        let row = |peer: NodeId, a| (peer, format!("127.0.0.1:{peer}"), a);

        // Nobody answered (a cluster starting together), or peers with data that never heard
        // of node 3 (it starts a moment after the others elected a leader): go ahead.
        assert!(decide(&cfg, &[row(1, None), row(2, None)]).is_ok());
        assert!(decide(&cfg, &[row(1, answer(ours, 1, None)), row(2, None)]).is_ok());

        let e = decide(
            &cfg,
            &[
                row(1, answer(ours, 1, None)),
                row(2, answer(ours, 2, Some(9))),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with(&format!(
                "member 3 has already been bootstrapped in cluster {}",
                kv::ClusterIdText(ours)
            )) && e.contains("kvstore member remove 3")
                && e.contains("kvstore serve --join"),
            "{e}"
        );

        let e = decide(&cfg, &[row(1, answer(ours + 1, 1, None))])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("peer 1 at 127.0.0.1:1 belongs to cluster"),
            "{e}"
        );
    }
}
