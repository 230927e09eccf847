//! The cluster's hosts: each node's configuration and software, as turmoil (re)starts them.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use net::node::{self, NodeConfig, PauseSwitch};
use net::storage::{SimulatedDisk, StorageMode};
use net::transport::{Net, TransportTimeouts};
use rand::Rng;

use super::config::RunConfig;
use super::fault_loop::NodeControls;
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

/// Adds a host per node to `sim`; returns what the fault loop holds of each node.
pub(super) fn start_nodes(
    sim: &mut turmoil::Sim<'_>,
    cfg: &RunConfig,
    observer: &Observer,
    triggers: &Triggers,
    rng: &mut SimRng,
) -> BTreeMap<u64, NodeControls> {
    let peers: BTreeMap<u64, String> = (1..=cfg.nodes)
        .map(|i| (i, format!("{}:{PEER_PORT}", node_name(i))))
        .collect();
    let client_addrs: BTreeMap<u64, String> =
        (1..=cfg.nodes).zip(client_addresses(cfg.nodes)).collect();
    let mut nodes = BTreeMap::new();
    for id in 1..=cfg.nodes {
        let clock = NodeClock::draw(cfg, rng);
        let controls = NodeControls {
            disk: SimulatedDisk::default(),
            pause: PauseSwitch::default(),
        };
        let host = HostSetup {
            id,
            cfg: cfg.clone(),
            peers: peers.clone(),
            client_addrs: client_addrs.clone(),
            controls: controls.clone(),
            observer: observer.clone(),
            clock,
        };
        let fuse = triggers.add_node(id, &controls.disk);
        let boots = Rc::new(Cell::new(0u64));
        sim.host(node_name(id), move || {
            host.controls.disk.env.power_on();
            fuse.reset();
            boots.set(boots.get() + 1);
            let nc = host.node_config(boots.get());
            let (fuse, offset) = (fuse.clone(), host.clock.offset);
            async move {
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
        nodes.insert(id, controls);
    }
    nodes
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
}

impl HostSetup {
    /// The node's configuration for its `boot`-th start.
    fn node_config(&self, boot: u64) -> NodeConfig {
        let id = self.id;
        let mut nc = NodeConfig::new(id, self.peers.clone(), format!("/n{id}").into());
        nc.tick = self.clock.tick;
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
        nc
    }
}

/// One node's software, as a host runs it after each (re)start.
async fn serve(cfg: NodeConfig) -> turmoil::Result {
    let id = cfg.id;
    let clients = TurmoilNet
        .bind(format!("{}:{CLIENT_PORT}", node_name(id)))
        .await?;
    // Never fired: a simulated node stops only by crashing. The sender must stay alive, or the
    // node would read its drop as a shutdown.
    let (_keep_running, shutdown) = tokio::sync::watch::channel(false);
    let seed = cfg.seed;
    let (handle, run) = node::start(cfg, TurmoilNet, shutdown.clone())
        .await
        .map_err(|e| format!("node {id}: {e}"))?;
    tokio::spawn(net::server::run_client_server(
        clients, handle, shutdown, seed,
    ));
    run.await.map_err(|e| format!("node {id}: {e}"))?;
    Ok(())
}
