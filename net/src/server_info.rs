//! INFO and CONFIG GET: what the node tells tools about itself, in Redis's sections and names.
//!
//! INFO's sections are rows of [`SECTIONS`]: a new section is one function and one row. The
//! Redis sections come first, then ours (Raft, Snapshots, Membership); a field that appears in
//! two sections (`role`) is read by [`crate::server::parse_info`] from the later one (Raft's).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tokio::time::Instant;

use crate::node::admin::MemberRole;
use crate::request::NodeInfo;
use crate::resp::{Limits, Reply};
use crate::server::upper;
use crate::server_conn::{ClientPort, REDIS_VERSION};

/// Connections beyond this many are refused (`-ERR max number of clients reached`).
pub const MAX_CLIENTS: usize = 10_000;

/// What INFO reports on.
pub struct InfoSource<'a> {
    pub port: &'a ClientPort,
    /// None while the node is loading: the sections about it are left out.
    pub node: Option<&'a NodeInfo>,
}

type Section = fn(&InfoSource, &mut String) -> Option<()>;

/// Name (lower case), whether `INFO` without arguments shows it, and how it is written.
const SECTIONS: &[(&str, bool, Section)] = &[
    ("server", true, server),
    ("clients", true, clients),
    ("memory", true, memory),
    ("persistence", true, persistence),
    ("stats", true, stats),
    ("replication", true, replication),
    ("cluster", true, cluster),
    ("keyspace", true, keyspace),
    ("raft", true, raft),
    ("snapshots", true, snapshots),
    ("membership", true, membership),
];

/// `INFO [section ...]`: sections by name, or `default`, `all`, `everything`; an unknown
/// section adds nothing.
pub fn info_text(source: &InfoSource, args: &[Bytes]) -> String {
    let wanted: Vec<String> = args.iter().map(|a| upper(a).to_lowercase()).collect();
    let shown = |name: &str, default: bool| {
        if wanted.is_empty() {
            return default;
        }
        wanted.iter().any(|w| match w.as_str() {
            "all" | "everything" => true,
            "default" => default,
            w => w == name,
        })
    };
    let mut out = String::new();
    for (name, default, write) in SECTIONS {
        if !shown(name, *default) {
            continue;
        }
        let mut body = String::new();
        if write(source, &mut body).is_some() {
            if !out.is_empty() {
                out.push_str("\r\n");
            }
            let title = format!("{}{}", name[..1].to_uppercase(), &name[1..]);
            let _ = write!(out, "# {title}\r\n{body}");
        }
    }
    out
}

fn field(out: &mut String, name: &str, value: impl std::fmt::Display) {
    let _ = write!(out, "{name}:{value}\r\n");
}

fn server(s: &InfoSource, out: &mut String) -> Option<()> {
    let uptime = Instant::now().duration_since(s.port.started).as_secs();
    field(out, "redis_version", REDIS_VERSION);
    field(out, "redis_mode", "standalone");
    field(out, "kvstore_version", env!("CARGO_PKG_VERSION"));
    field(out, "os", os_name());
    field(out, "arch_bits", usize::BITS);
    field(out, "process_id", std::process::id());
    field(out, "tcp_port", s.port.tcp_port);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    field(out, "server_time_usec", now);
    field(out, "uptime_in_seconds", uptime);
    field(out, "uptime_in_days", uptime / 86_400);
    if let Some(n) = s.node {
        field(
            out,
            "run_id",
            format!(
                "{:016x}{:016x}{:08x}",
                n.cluster_id, n.incarnation, n.id as u32
            ),
        );
        field(out, "node_id", n.id);
        field(out, "cluster_id", kv::ClusterIdText(n.cluster_id));
        field(out, "incarnation", format!("{:#x}", n.incarnation));
        field(
            out,
            "refused_incarnation_frames",
            n.refused_incarnation_frames,
        );
    }
    Some(())
}

fn os_name() -> String {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let os = match std::env::consts::OS {
        "linux" => "Linux",
        other => other,
    };
    format!("{os} {} {}", release.trim(), std::env::consts::ARCH)
}

fn clients(s: &InfoSource, out: &mut String) -> Option<()> {
    field(out, "connected_clients", s.port.connected_clients());
    field(out, "maxclients", MAX_CLIENTS);
    field(out, "blocked_clients", 0);
    Some(())
}

/// The process's memory from /proc/self/status, in bytes: resident now, and at its peak.
/// kvstore keeps no allocator statistics, so `used_memory` is the resident set size too.
fn process_memory() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|k| k * 1024)
    };
    Some((kib("VmRSS:")?, kib("VmHWM:")?))
}

/// As Redis writes sizes for people: `512B`, `1.21K`, `3.00M`, ...
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["K", "M", "G", "T", "P"];
    if n < 1024 {
        return format!("{n}B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.2}{}", UNITS[unit])
}

fn memory(_: &InfoSource, out: &mut String) -> Option<()> {
    if let Some((rss, peak)) = process_memory() {
        field(out, "used_memory", rss);
        field(out, "used_memory_human", human_bytes(rss));
        field(out, "used_memory_rss", rss);
        field(out, "used_memory_rss_human", human_bytes(rss));
        field(out, "used_memory_peak", peak);
        field(out, "used_memory_peak_human", human_bytes(peak));
    }
    field(out, "maxmemory", 0);
    field(out, "maxmemory_human", "0B");
    field(out, "maxmemory_policy", "noeviction");
    Some(())
}

fn persistence(s: &InfoSource, out: &mut String) -> Option<()> {
    field(out, "loading", u8::from(s.node.is_none()));
    field(out, "async_loading", 0);
    field(out, "rdb_bgsave_in_progress", 0);
    field(out, "aof_enabled", 0);
    field(out, "aof_rewrite_in_progress", 0);
    Some(())
}

fn stats(s: &InfoSource, out: &mut String) -> Option<()> {
    let p = s.port;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    field(
        out,
        "total_connections_received",
        load(&p.connections_received),
    );
    field(out, "total_commands_processed", load(&p.commands_processed));
    field(out, "instantaneous_ops_per_sec", p.ops_per_sec());
    field(out, "total_net_input_bytes", load(&p.net_input_bytes));
    field(out, "total_net_output_bytes", load(&p.net_output_bytes));
    field(out, "rejected_connections", load(&p.rejected_connections));
    Some(())
}

/// Redis's view of a Raft group: the leader is the master, the other members its replicas.
fn replication(s: &InfoSource, out: &mut String) -> Option<()> {
    let n = s.node?;
    if n.role == raft_core::Role::Leader {
        let m = &n.membership;
        let others = m
            .voters
            .iter()
            .chain(&m.outgoing)
            .chain(&m.learners)
            .filter(|id| **id != n.id)
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        field(out, "role", "master");
        field(out, "connected_slaves", others);
    } else {
        field(out, "role", "slave");
        let leader = n
            .leader_client_addr
            .as_deref()
            .and_then(|a| a.rsplit_once(':'));
        field(out, "master_host", leader.map_or("", |(host, _)| host));
        field(out, "master_port", leader.map_or("", |(_, port)| port));
        field(
            out,
            "master_link_status",
            if leader.is_some() { "up" } else { "down" },
        );
    }
    Some(())
}

/// Redis's `db0:keys=..,expires=..,avg_ttl=..` line; absent while the database is empty, as
/// in Redis. The counts are the state machine's at this node's applied index; the average
/// time to live is not kept (0, as Redis reports when it has not sampled one).
fn keyspace(s: &InfoSource, out: &mut String) -> Option<()> {
    let n = s.node?;
    if n.keys > 0 {
        field(
            out,
            "db0",
            format!("keys={},expires={},avg_ttl=0", n.keys, n.expires),
        );
    }
    Some(())
}

fn cluster(_: &InfoSource, out: &mut String) -> Option<()> {
    field(out, "cluster_enabled", 0);
    Some(())
}

fn raft(s: &InfoSource, out: &mut String) -> Option<()> {
    let n = s.node?;
    let role = match n.role {
        raft_core::Role::Leader => "leader",
        raft_core::Role::Follower => "follower",
        raft_core::Role::Candidate => "candidate",
        raft_core::Role::PreCandidate => "precandidate",
        _ => "unknown",
    };
    field(out, "role", role);
    field(out, "term", n.term);
    field(out, "leader_id", n.leader.unwrap_or(0));
    field(out, "commit_index", n.commit_index);
    field(out, "applied_index", n.applied_index);
    field(out, "last_index", n.last_index);
    field(out, "read_mode", n.read_mode.name);
    field(out, "max_clock_drift", &n.read_mode.max_clock_drift);
    field(
        out,
        "leader_client_addr",
        n.leader_client_addr.as_deref().unwrap_or(""),
    );
    Some(())
}

fn snapshots(s: &InfoSource, out: &mut String) -> Option<()> {
    let n = s.node?;
    field(out, "last_snapshot_index", n.last_snapshot_index);
    field(out, "log_start_index", n.log_start_index);
    field(out, "snapshot_count", n.snapshot_count);
    field(out, "snapshots_installed", n.snapshots_installed);
    Some(())
}

fn membership(s: &InfoSource, out: &mut String) -> Option<()> {
    let n = s.node?;
    let ids = |set: &std::collections::BTreeSet<raft_core::NodeId>| {
        set.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
    };
    let m = &n.membership;
    field(out, "voters", ids(&m.voters));
    field(out, "outgoing_voters", ids(&m.outgoing));
    field(out, "learners", ids(&m.learners));
    field(out, "joint", if m.is_joint() { "yes" } else { "no" });
    field(out, "member_role", MemberRole::of(m, n.id).as_str());
    Some(())
}

/// The settings CONFIG GET reports. None can be changed at run time.
fn settings(port: &ClientPort) -> Vec<(&'static str, String)> {
    vec![
        ("appendonly", "no".into()),
        ("bind", String::new()),
        ("cluster-enabled", "no".into()),
        ("databases", "1".into()),
        ("hz", "10".into()),
        ("io-threads", "1".into()),
        ("maxclients", MAX_CLIENTS.to_string()),
        ("maxmemory", "0".into()),
        ("maxmemory-policy", "noeviction".into()),
        ("port", port.tcp_port.to_string()),
        (
            "proto-max-bulk-len",
            Limits::default().max_bulk_len.to_string(),
        ),
        ("requirepass", String::new()),
        ("save", String::new()),
        ("tcp-keepalive", "0".into()),
        ("timeout", "0".into()),
    ]
}

/// `CONFIG GET pattern ...`, `CONFIG RESETSTAT`; CONFIG SET is refused.
pub fn config(port: &ClientPort, args: &[Bytes]) -> Reply {
    let Some(sub) = args.first() else {
        return crate::server::arity_error("CONFIG");
    };
    let rest = &args[1..];
    match (upper(sub).as_str(), rest) {
        ("GET", []) => crate::server_conn::sub_arity_error("CONFIG", sub),
        ("GET", patterns) => Reply::Map(
            settings(port)
                .into_iter()
                .filter(|(name, _)| patterns.iter().any(|p| glob_match(p, name.as_bytes())))
                .map(|(name, value)| (Reply::bulk(name), Reply::bulk(value)))
                .collect(),
        ),
        ("RESETSTAT", []) => {
            port.reset_stats();
            Reply::ok()
        }
        ("SET", _) => Reply::error(
            "ERR CONFIG SET is not supported: kvstore's settings are fixed at start (see \
             `kvstore --help`)",
        ),
        ("RESETSTAT", _) => crate::server_conn::sub_arity_error("CONFIG", sub),
        _ => Reply::error(format!(
            "ERR unknown subcommand '{}'. Try CONFIG HELP.",
            String::from_utf8_lossy(sub)
        )),
    }
}

/// Redis's glob, case-insensitive (as CONFIG GET and COMMAND LIST match names).
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    kv::glob::matches(&pattern.to_ascii_lowercase(), &text.to_ascii_lowercase())
}

#[cfg(test)]
mod tests;
