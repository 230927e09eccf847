//! Writing a node's metrics in the Prometheus text format: one `prometheus-client` registry per
//! scrape, whose collector reads the node's atomics (and its databases' sizes on disk).

use std::path::Path;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::{
    Count, Histogram, NodeMetrics, Outcome, MESSAGE_KINDS, PEER_REFUSALS, PROPOSAL_OUTCOMES,
};
use crate::command_table::COMMANDS;

/// The text a scrape of `/metrics` answers; every name starts `kvstore_`.
pub fn encode(metrics: &Arc<NodeMetrics>) -> String {
    let mut registry = Registry::with_prefix("kvstore");
    registry.register_collector(Box::new(Scrape(metrics.clone())));
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    text
}

#[derive(Debug)]
struct Scrape(Arc<NodeMetrics>);

type Fmt = Result<(), std::fmt::Error>;

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> Fmt {
    ConstGauge::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> Fmt {
    ConstCounter::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Counter)?)
}

/// One counter family: a labelled count per row.
fn counters<'a>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Vec<(&'a str, &'a str)>, u64)>,
) -> Fmt {
    let mut family = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        ConstCounter::new(v).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn histogram(e: &mut DescriptorEncoder, name: &str, help: &str, h: &Histogram) -> Fmt {
    let (sum, count, buckets) = h.snapshot();
    e.encode_descriptor(name, help, None, MetricType::Histogram)?
        .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> Fmt {
        let m = &*self.0;
        encode_raft_state(&mut e, m)?;
        encode_clients(&mut e, m)?;
        encode_storage(&mut e, m)?;
        encode_peers(&mut e, m)?;
        encode_snapshots(&mut e, m)
    }
}

fn encode_raft_state(e: &mut DescriptorEncoder, m: &NodeMetrics) -> Fmt {
    let s = &m.status;
    let role = s.role.get();
    {
        let mut family = e.encode_descriptor(
            "role",
            "1 for the node's current role (follower, pre_candidate, candidate, leader)",
            None,
            MetricType::Gauge,
        )?;
        for (code, name) in ["follower", "pre_candidate", "candidate", "leader"]
            .iter()
            .enumerate()
        {
            let labels = [("role", *name)];
            ConstGauge::new(i64::from(role == code as i64))
                .encode(family.encode_family(&labels)?)?;
        }
    }
    gauge(
        e,
        "is_leader",
        "1 while this node leads",
        i64::from(role == 3),
    )?;
    gauge(e, "term", "The node's current term", s.term.get())?;
    gauge(
        e,
        "leader_id",
        "The leader this node knows (0: none)",
        s.leader.get(),
    )?;
    gauge(
        e,
        "commit_index",
        "The highest log index known committed",
        s.commit_index.get(),
    )?;
    gauge(
        e,
        "applied_index",
        "The highest log index the state machine applied",
        s.applied_index.get(),
    )?;
    gauge(
        e,
        "last_index",
        "The index of the last entry in the node's log",
        s.last_index.get(),
    )?;
    gauge(
        e,
        "persisted_index",
        "The highest log index synced to this node's disk",
        s.persisted_index.get(),
    )?;
    gauge(
        e,
        "log_start_index",
        "The index the log starts after (its snapshot's)",
        s.log_start_index.get(),
    )?;
    gauge(e, "ready", "1 once the node serves clients", s.ready.get())?;
    let healthy = s.health.lock().is_ok_and(|h| h.is_healthy());
    gauge(
        e,
        "healthy",
        "1 when /health answers 200: a known leader and a quorum reachable",
        i64::from(healthy),
    )?;
    counter(
        e,
        "leader_changes",
        "Times the leader this node knows changed",
        m.leader_changes.get(),
    )?;
    counter(
        e,
        "elections_started",
        "Campaigns this node started (pre-vote and vote)",
        m.elections_started.get(),
    )?;
    counters(
        e,
        "proposals",
        "Client writes proposed to Raft here, by outcome (parked: waiting for a leader)",
        PROPOSAL_OUTCOMES
            .iter()
            .zip(&m.proposals)
            .map(|(o, c)| (vec![("outcome", *o)], c.get())),
    )?;
    counter(
        e,
        "read_index_rounds",
        "ReadIndex rounds confirmed for client reads",
        m.read_index_rounds.get(),
    )?;
    histogram(
        e,
        "read_index_latency_seconds",
        "From a read's arrival to its ReadIndex confirmation",
        &m.read_index_latency,
    )
}

fn encode_clients(e: &mut DescriptorEncoder, m: &NodeMetrics) -> Fmt {
    gauge(
        e,
        "client_connections",
        "Open client connections",
        m.client_connections.get(),
    )?;
    let name_of = |row: usize| COMMANDS.get(row).map_or("other", |c| c.name);
    counters(
        e,
        "client_commands",
        "Client commands answered, by command and outcome",
        m.commands.iter().enumerate().flat_map(|(row, c)| {
            Outcome::ALL
                .iter()
                .zip(&c.outcomes)
                .filter(|(_, n)| n.get() > 0)
                .map(move |(o, n)| {
                    (
                        vec![("command", name_of(row)), ("outcome", o.label())],
                        n.get(),
                    )
                })
        }),
    )?;
    let mut family = e.encode_descriptor(
        "client_command_duration_seconds",
        "Time from a command's parsing to its reply, by command",
        None,
        MetricType::Histogram,
    )?;
    for (row, c) in m.commands.iter().enumerate() {
        let (sum, count, buckets) = c.latency.snapshot();
        if count == 0 {
            continue;
        }
        let labels = [("command", name_of(row))];
        family
            .encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
    }
    Ok(())
}

fn encode_storage(e: &mut DescriptorEncoder, m: &NodeMetrics) -> Fmt {
    histogram(
        e,
        "fsync_duration_seconds",
        "Time to write and sync one batch of the Raft log",
        &m.fsync_latency,
    )?;
    histogram(
        e,
        "fsync_batch_entries",
        "Entries per synced Raft log write (group commit)",
        &m.fsync_batch_entries,
    )?;
    histogram(
        e,
        "apply_duration_seconds",
        "Time to apply one batch of committed entries",
        &m.apply_latency,
    )?;
    histogram(
        e,
        "apply_batch_entries",
        "Committed entries per applied batch",
        &m.apply_batch_entries,
    )?;
    let mut family = e.encode_descriptor(
        "disk_bytes",
        "Size on disk of each of the node's databases (raft_logs, kv_data, ...)",
        None,
        MetricType::Gauge,
    )?;
    for (db, bytes) in database_sizes(&m.data_dir) {
        let labels = [("database", db.as_str())];
        ConstGauge::new(bytes as i64).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn encode_peers(e: &mut DescriptorEncoder, m: &NodeMetrics) -> Fmt {
    let msgs = &m.messages;
    for (name, help, counts) in [
        (
            "peer_messages_sent",
            "Raft messages queued to peers, by type",
            &msgs.sent,
        ),
        (
            "peer_messages_received",
            "Raft messages received from peers, by type",
            &msgs.received,
        ),
        (
            "peer_messages_dropped",
            "Raft messages not sent (a peer's queue full, its address unknown), by type",
            &msgs.dropped,
        ),
    ] {
        let rows = MESSAGE_KINDS
            .iter()
            .zip(counts.iter())
            .map(|(k, c): (&&str, &Count)| (vec![("type", *k)], c.get()));
        counters(e, name, help, rows)?;
    }
    let refused = PEER_REFUSALS
        .iter()
        .zip(m.peer_connections_refused.iter())
        .map(|(reason, c)| (vec![("reason", *reason)], c.get()));
    counters(
        e,
        "peer_connections_refused",
        "Inbound peer connections refused: TLS handshake failed, or the certificate does not name the member claimed",
        refused,
    )?;
    counter(
        e,
        "peer_messages_unhosted_range",
        "Raft messages from peers for a range this node does not host, dropped",
        m.peer_messages_unhosted_range.get(),
    )?;
    gauge(
        e,
        "ranges_hosted",
        "Ranges (Raft groups) this node hosts",
        m.ranges_hosted.get(),
    )?;
    gauge(
        e,
        "ranges_led",
        "Ranges whose Raft group this node leads",
        m.ranges_led.get(),
    )?;
    let peers = m.status.peers.lock().map(|p| p.clone()).unwrap_or_default();
    let ids: Vec<String> = peers.iter().map(|p| p.id.to_string()).collect();
    {
        let mut family = e.encode_descriptor(
            "peer_reachable",
            "1 when the peer was heard from within an election timeout (the leader: every member; a follower: its leader)",
            None,
            MetricType::Gauge,
        )?;
        for (p, id) in peers.iter().zip(&ids) {
            if let Some(reachable) = p.reachable {
                let labels = [("peer", id.as_str())];
                ConstGauge::new(i64::from(reachable)).encode(family.encode_family(&labels)?)?;
            }
        }
    }
    let last = m.status.last_index.get();
    for (name, help, value) in [
        (
            "follower_match_index",
            "On the leader: the highest index known to match on each follower",
            &(|i: i64| i) as &dyn Fn(i64) -> i64,
        ),
        (
            "follower_lag_entries",
            "On the leader: entries each follower is behind the leader's last index",
            &|i: i64| last.saturating_sub(i).max(0),
        ),
    ] {
        let mut family = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (p, id) in peers.iter().zip(&ids) {
            if let Some(matched) = p.match_index {
                let labels = [("peer", id.as_str())];
                ConstGauge::new(value(matched as i64)).encode(family.encode_family(&labels)?)?;
            }
        }
    }
    Ok(())
}

fn encode_snapshots(e: &mut DescriptorEncoder, m: &NodeMetrics) -> Fmt {
    counter(
        e,
        "snapshots_taken",
        "Snapshot images this node's state machine took",
        m.snapshots_taken.get(),
    )?;
    histogram(
        e,
        "snapshot_take_duration_seconds",
        "Time to build one snapshot image",
        &m.snapshot_take_duration,
    )?;
    counter(
        e,
        "snapshots_installed",
        "Snapshots received from a leader and installed",
        m.snapshots_installed.get(),
    )?;
    counter(
        e,
        "snapshot_installed_bytes",
        "Bytes of snapshots received and installed",
        m.snapshot_install_bytes.get(),
    )?;
    histogram(
        e,
        "snapshot_install_duration_seconds",
        "Time to fetch and stage one snapshot from a peer",
        &m.snapshot_install_duration,
    )?;
    counter(
        e,
        "snapshots_sent",
        "Snapshots served to peers in full",
        m.snapshots_sent.get(),
    )?;
    counter(
        e,
        "snapshot_sent_bytes",
        "Bytes of snapshots served to peers",
        m.snapshot_sent_bytes.get(),
    )?;
    histogram(
        e,
        "snapshot_send_duration_seconds",
        "Time to serve one snapshot to a peer",
        &m.snapshot_send_duration,
    )
}

/// Each database directory under the data directory, with the size of its files.
fn database_sizes(data_dir: &Path) -> Vec<(String, u64)> {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return Vec::new();
    };
    let mut sizes: Vec<(String, u64)> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                dir_size(&e.path()),
            )
        })
        .collect();
    sizes.sort();
    sizes
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(md) if md.is_dir() => dir_size(&e.path()),
            Ok(md) => md.len(),
            Err(_) => 0,
        })
        .sum()
}
