//! The cluster's hosts: each node's configuration and software, as turmoil (re)starts them.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use net::node::{self, NodeConfig, NodeError, WallClock};
use net::storage::StorageMode;
use net::transport::{Net, TransportTimeouts};
use rand::Rng;

use super::config::RunConfig;
use super::fault_loop::NodeControls;
use super::membership::{self, SharedOperator};
use super::triggers::Triggers;
use super::{node_name, CLIENT_PORT, PEER_PORT};
use crate::net::TurmoilNet;
use crate::observe::Observer;
use crate::rng::SimRng;

/// The client address of every node, in node order (node `i` at position `i - 1`).
pub(super) fn client_addresses(nodes: u64) -> Vec<String> {
    (1..=nodes)
        .map(|i| format!("{}:{CLIENT_PORT}", node_name(i)))
        .collect()
}

/// Adds a host per node to `sim` (the founding members, then the spare nodes of a membership
/// plan, whose hosts wait until `operator` admits them); returns what the fault loop holds of
/// each node.
pub(super) fn start_nodes(
    sim: &mut turmoil::Sim<'_>,
    cfg: &RunConfig,
    observer: &Observer,
    triggers: &Triggers,
    operator: Option<&SharedOperator>,
    rng: &mut SimRng,
) -> BTreeMap<u64, NodeControls> {
    let peers: BTreeMap<u64, String> = (1..=cfg.nodes)
        .map(|i| (i, format!("{}:{PEER_PORT}", node_name(i))))
        .collect();
    let client_addrs: BTreeMap<u64, String> =
        (1..=cfg.nodes).zip(client_addresses(cfg.nodes)).collect();
    let mut nodes = BTreeMap::new();
    for id in 1..=cfg.nodes {
        let host = HostSetup {
            id,
            cfg: cfg.clone(),
            peers: peers.clone(),
            client_addrs: client_addrs.clone(),
            controls: NodeControls::default(),
            observer: observer.clone(),
            clock: NodeClock::draw(cfg, rng),
            joining: None,
        };
        nodes.insert(id, add_host(sim, host, triggers));
    }
    let (Some(operator), Some(plan)) = (operator, &cfg.membership) else {
        return nodes;
    };
    // The spares' clocks come from a generator of their own: the founding members' draws stay
    // what they are without a plan.
    let mut spare_rng = crate::rng::seeded(cfg.seed ^ 0x5BA4_E5E7_0A11_D0C5);
    for id in cfg.nodes + 1..=cfg.nodes + plan.spares {
        let host = HostSetup {
            id,
            cfg: cfg.clone(),
            peers: peers.clone(),
            client_addrs: client_addrs.clone(),
            controls: NodeControls::default(),
            observer: observer.clone(),
            clock: NodeClock::draw(cfg, &mut spare_rng),
            joining: Some(operator.clone()),
        };
        nodes.insert(id, add_host(sim, host, triggers));
    }
    nodes
}

/// Adds the host of one node: a founding member starts at once; a joining one once the operator
/// has added it, and then as `kvstore serve --join` on an empty disk.
fn add_host(sim: &mut turmoil::Sim<'_>, host: HostSetup, triggers: &Triggers) -> NodeControls {
    let id = host.id;
    let controls = host.controls.clone();
    let fuse = triggers.add_node(id, &controls.disk);
    let boots = Rc::new(Cell::new(0u64));
    sim.host(node_name(id), move || {
        host.controls.disk.env.power_on();
        fuse.reset();
        boots.set(boots.get() + 1);
        let nc = host.node_config(boots.get());
        let (fuse, offset) = (fuse.clone(), host.clock.offset);
        let joining = host.joining.clone();
        async move {
            if let Some(operator) = joining {
                while !operator.borrow().admitted.contains(&id) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            tokio::time::sleep(offset).await;
            match serve(nc).await {
                // The power was cut from inside the host (a snapshot-driven fault): the
                // node stops on its storage errors, and the fault loop crashes the host
                // at the end of this step. Until then it is as dead as it will be.
                Err(_) if fuse.blown() => std::future::pending().await,
                result => result,
            }
        }
    });
    controls
}

/// A node's clock: its tick length (skewed by 0.8x to 1.25x with the clock-skew fault) and the
/// phase its ticks start at.
#[derive(Clone, Copy)]
struct NodeClock {
    tick: Duration,
    offset: Duration,
}

impl NodeClock {
    fn draw(cfg: &RunConfig, rng: &mut SimRng) -> Self {
        let skew = if cfg.kinds.clock_skew {
            rng.gen_range(0.8..1.25)
        } else {
            1.0
        };
        let tick = Duration::from_micros((100_000.0 * skew) as u64);
        let offset = if cfg.kinds.clock_skew {
            Duration::from_micros(rng.gen_range(0..100_000))
        } else {
            Duration::ZERO
        };
        Self { tick, offset }
    }

    /// The node's wall clock (what it stamps into the log as leader): simulated time from a
    /// fixed epoch, running at the node's skewed rate and, with the clock-skew fault, up to
    /// 2 s ahead (derived from the tick phase, so no draw is added to a run).
    fn wall_clock(&self) -> WallClock {
        const EPOCH_MS: u64 = 1_800_000_000_000;
        let rate = self.tick.as_secs_f64() / 0.1;
        let ahead_ms = (self.offset.as_micros() / 50) as u64;
        WallClock::from_fn(move || {
            let elapsed = turmoil::sim_elapsed().unwrap_or_default();
            EPOCH_MS + ahead_ms + (elapsed.as_secs_f64() * 1000.0 * rate) as u64
        })
    }
}

/// Everything a host needs to start its node again after a crash.
struct HostSetup {
    id: u64,
    cfg: RunConfig,
    peers: BTreeMap<u64, String>,
    client_addrs: BTreeMap<u64, String>,
    controls: NodeControls,
    observer: Observer,
    clock: NodeClock,
    /// For a node that is not a founding member: the operator that admits it.
    joining: Option<SharedOperator>,
}

impl HostSetup {
    /// The node's configuration for its `boot`-th start.
    fn node_config(&self, boot: u64) -> NodeConfig {
        let id = self.id;
        let mut nc = NodeConfig::new(id, self.peers.clone(), format!("/n{id}").into());
        nc.tick = self.clock.tick;
        nc.read_mode = self.cfg.read_mode;
        nc.request_timeout = Duration::from_secs(2);
        nc.transport = TransportTimeouts {
            connect: Duration::from_millis(500),
            write: Duration::from_secs(1),
            idle_read: Duration::from_secs(2),
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_millis(500),
        };
        nc.seed = self.cfg.seed ^ (id << 48) ^ (boot << 32);
        nc.client_addrs = self.client_addrs.clone();
        nc.storage = StorageMode::Simulated(self.controls.disk.clone());
        nc.pause = self.controls.pause.clone();
        nc.observer = Some(std::sync::Arc::new(self.observer.clone()));
        nc.unsafe_switches = self.cfg.switches;
        nc.snapshots = self.cfg.snapshots;
        nc.wall_clock = self.clock.wall_clock();
        let disks_lost = self.controls.disks_lost.load(Ordering::Relaxed);
        if disks_lost > 0 && !self.cfg.reinstall_keeps_incarnation {
            // What the command line does for a new data directory: a new incarnation, kept
            // for the disk's life (drawn from the seed here, not from the OS).
            let mut rng = crate::rng::seeded(self.cfg.seed ^ (id << 40) ^ disks_lost);
            nc.incarnation = (nc.incarnation ^ rng.gen::<u64>()) | 1;
        }
        if self.joining.is_some() {
            // As `kvstore serve --join`: its own addresses only, the founders' peer ports to
            // ask; the cluster id (founders') and everything else it learns from the cluster.
            let (peer, client) = membership::addresses(id);
            nc.join = self.peers.values().cloned().collect();
            nc.peers = [(id, peer)].into();
            nc.client_addrs = [(id, client)].into();
        }
        nc
    }
}

/// One node's software, as a host runs it after each (re)start. A joining node whose cluster
/// does not list it yet (or that no member answered) asks again, as an operator would restart it.
async fn serve(cfg: NodeConfig) -> turmoil::Result {
    let id = cfg.id;
    let clients = TurmoilNet
        .bind(format!("{}:{CLIENT_PORT}", node_name(id)))
        .await?;
    // Never fired: a simulated node stops only by crashing. The sender must stay alive, or the
    // node would read its drop as a shutdown.
    let (_keep_running, shutdown) = tokio::sync::watch::channel(false);
    let seed = cfg.seed;
    let (handle, run) = loop {
        match node::start(cfg.clone(), TurmoilNet, shutdown.clone()).await {
            Ok(started) => break started,
            Err(NodeError::Join(why)) => {
                let _ = why;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(format!("node {id}: {e}").into()),
        }
    };
    tokio::task::spawn_local(net::server::run_client_server(
        clients, handle, shutdown, seed,
    ));
    run.await.map_err(|e| format!("node {id}: {e}"))?;
    Ok(())
}
