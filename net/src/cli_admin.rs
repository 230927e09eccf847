//! The operator's subcommands of `kvstore`: `member list|add|promote|remove|update` and
//! `transfer-leader`. Each talks to the cluster through `KvClient` (which finds the leader)
//! with the `RAFT.*` commands of [`crate::server_admin`].

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Subcommand;
use raft_core::NodeId;

use crate::cli::ServersArg;
use crate::client::{ClientConfig, ClientError, KvClient};
use crate::error::{CliError, ConfigError};
use crate::node::admin::{MemberList, MemberRole, LEARNER_READY_LAG};
use crate::server::parse_info;
use crate::server_admin::is_host_port;
use crate::tls::MaybeTlsNet;

#[derive(Subcommand, Debug)]
pub enum MemberCmd {
    /// List the members: id, peer and client address, voter or learner, match index and lag
    /// (as the leader sees them), and whether each answers on its client address.
    List {
        #[command(flatten)]
        servers: ServersArg,
    },
    /// Add a node as a learner: it receives the log but does not vote. Then start it with
    /// `kvstore serve --join`, and promote it once it has caught up.
    Add {
        /// The new member's id (unused by any member, past or present).
        id: NodeId,
        /// Where the new member listens for peers.
        #[arg(long, value_name = "HOST:PORT")]
        peer_addr: String,
        /// Where the new member listens for clients.
        #[arg(long, value_name = "HOST:PORT")]
        client_addr: String,
        #[command(flatten)]
        servers: ServersArg,
    },
    /// Make a learner a voter. Refused while the learner is more than a few entries behind
    /// the leader ("learner not ready"): wait for it to catch up and retry.
    Promote {
        id: NodeId,
        #[command(flatten)]
        servers: ServersArg,
    },
    /// Remove a voter or a learner. A removed node stops serving clients; stop it afterwards.
    /// The leader hands its leadership to the most caught-up other voter first.
    Remove {
        id: NodeId,
        #[command(flatten)]
        servers: ServersArg,
    },
    /// Record a member's new addresses (restart it on its data directory with them).
    Update {
        id: NodeId,
        #[arg(long, value_name = "HOST:PORT")]
        peer_addr: String,
        #[arg(long, value_name = "HOST:PORT")]
        client_addr: String,
        #[command(flatten)]
        servers: ServersArg,
    },
}

fn check_addr(flag: &'static str, addr: &str) -> Result<(), CliError> {
    if is_host_port(addr) {
        Ok(())
    } else {
        Err(ConfigError::Invalid(format!("{flag} `{addr}` is not HOST:PORT")).into())
    }
}

fn check_id(id: NodeId) -> Result<(), CliError> {
    if id == 0 {
        return Err(ConfigError::Invalid("node id 0 is reserved".into()).into());
    }
    Ok(())
}

/// A client for an operator command: it retries for longer than a data request, since a
/// change may wait for an election or for a change in flight to finish.
fn admin_client(servers: &ServersArg) -> Result<KvClient<MaybeTlsNet>, CliError> {
    servers.client(ClientConfig {
        max_attempts: 50,
        ..Default::default()
    })
}

pub async fn run_member(cmd: MemberCmd) -> Result<(), CliError> {
    match cmd {
        MemberCmd::List { servers } => {
            let list = admin_client(&servers)?.member_list().await?;
            let reachable = probe_all(&list).await;
            print!("{}", format_member_list(&list, &reachable));
        }
        MemberCmd::Add {
            id,
            peer_addr,
            client_addr,
            servers,
        } => {
            check_id(id)?;
            check_addr("--peer-addr", &peer_addr)?;
            check_addr("--client-addr", &client_addr)?;
            let mut client = admin_client(&servers)?;
            client.member_add(id, &peer_addr, &client_addr).await?;
            wait_for_ranges(&mut client).await;
            println!(
                "node {id} added as a learner; start it with `kvstore serve --id {id} --peer-addr {peer_addr} --client-addr {client_addr} --join ...`, then promote it"
            );
        }
        MemberCmd::Promote { id, servers } => {
            check_id(id)?;
            let mut client = admin_client(&servers)?;
            client.member_promote(id).await?;
            wait_for_ranges(&mut client).await;
            println!("node {id} is a voter");
        }
        MemberCmd::Remove { id, servers } => {
            check_id(id)?;
            let mut client = admin_client(&servers)?;
            hand_off_if_leading(&mut client, id).await;
            client.member_remove(id).await?;
            wait_for_ranges(&mut client).await;
            println!("node {id} removed");
        }
        MemberCmd::Update {
            id,
            peer_addr,
            client_addr,
            servers,
        } => {
            check_id(id)?;
            check_addr("--peer-addr", &peer_addr)?;
            check_addr("--client-addr", &client_addr)?;
            let mut client = admin_client(&servers)?;
            client.member_update(id, &peer_addr, &client_addr).await?;
            wait_for_ranges(&mut client).await;
            println!("node {id} now at {peer_addr} (peers), {client_addr} (clients)");
        }
    }
    Ok(())
}

/// How long a `kvstore member` command waits for every range to follow its change.
const RANGES_FOLLOW_WAIT: Duration = Duration::from_secs(60);

/// Once the first range has made a change: on a split keyspace, waits until every range's
/// configuration has followed it (a promoted learner must first catch up with each range),
/// saying which ranges it waits for. Past [`RANGES_FOLLOW_WAIT`] it says which are still
/// behind and returns: they go on following by themselves.
async fn wait_for_ranges(client: &mut KvClient<MaybeTlsNet>) {
    let started = tokio::time::Instant::now();
    let deadline = started + RANGES_FOLLOW_WAIT;
    let mut told = false;
    loop {
        let behind = match client.member_list().await {
            Ok(list) if list.ranges_behind.is_empty() => return,
            Ok(list) => Some(list.ranges_behind),
            Err(_) => None,
        };
        let names = behind.as_deref().map(range_names).unwrap_or_default();
        if tokio::time::Instant::now() >= deadline {
            eprintln!(
                "ranges {names} have not followed the change within {} s; they follow it by                  themselves (`kvstore member list` names the ranges still behind)",
                RANGES_FOLLOW_WAIT.as_secs()
            );
            return;
        }
        // Ranges usually follow within a few ticks: say so only when they keep us waiting.
        if !told && behind.is_some() && started.elapsed() >= Duration::from_secs(1) {
            eprintln!("the first range made the change; waiting for ranges {names} to follow");
            told = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn range_names(ranges: &[u64]) -> String {
    ranges
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// If node `id` leads, makes the most caught-up other voter the leader first. A leader removed
/// by a change steps down once the change commits, and the others then wait an election
/// timeout before one of them campaigns: clients would wait that long. After a transfer they
/// wait for a transfer only. A failed hand-off is reported and the removal goes on.
async fn hand_off_if_leading(client: &mut KvClient<MaybeTlsNet>, id: NodeId) {
    let Ok(list) = client.member_list().await else {
        return;
    };
    if list.leader != Some(id) {
        return;
    }
    let successor = list
        .members
        .iter()
        .filter(|m| m.id != id && m.role == MemberRole::Voter)
        .min_by_key(|m| (m.lag.unwrap_or(u64::MAX), m.id));
    let Some(to) = successor.map(|m| m.id) else {
        return;
    };
    match client.transfer_leader(to).await {
        Ok(()) => println!("node {id} led: node {to} leads now"),
        Err(e) => eprintln!("handing the leadership from node {id} to node {to} failed ({e}); removing node {id} anyway"),
    }
}

pub async fn run_transfer_leader(id: NodeId, servers: ServersArg) -> Result<(), CliError> {
    check_id(id)?;
    admin_client(&servers)?.transfer_leader(id).await?;
    println!("node {id} leads");
    Ok(())
}

/// `kvstore status`: one row per server asked, then the configuration as the leader (or else
/// the first server that answered) has it.
pub async fn status(servers_arg: ServersArg) -> Result<(), CliError> {
    let servers = &servers_arg.servers;
    const ROW: fn(&[String]) -> String = |c| {
        format!(
            "{:<22} {:>4} {:<12} {:<15} {:>6} {:>7} {:>12} {:>12} {:>12} {:>6} {:>9} {:>6} {:>5}",
            c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10], c[11], c[12]
        )
    };
    let header = [
        "server",
        "node",
        "role",
        "member",
        "term",
        "leader",
        "commit",
        "applied",
        "snapshot",
        "taken",
        "installed",
        "ranges",
        "leads",
    ];
    println!("{}", ROW(&header.map(String::from)));
    let mut configuration: Option<(bool, BTreeMap<String, String>)> = None;
    let mut refusal: Option<String> = None;
    for addr in servers {
        let mut c = servers_arg.client_for(
            vec![addr.clone()],
            ClientConfig {
                max_attempts: 1,
                request_timeout: Duration::from_secs(2),
                // Each row is about the server asked, not the leader.
                follow_leader: false,
                ..Default::default()
            },
        )?;
        match c.info().await {
            Ok(text) if parse_info(&text).get("loading").is_some_and(|l| l == "1") => {
                println!("{addr:<22} starting (not serving yet)")
            }
            Ok(text) => {
                let f = parse_info(&text);
                let get = |k: &str| f.get(k).cloned().unwrap_or_else(|| "?".into());
                let fields = [
                    "node_id",
                    "role",
                    "member_role",
                    "term",
                    "leader_id",
                    "commit_index",
                    "applied_index",
                    "last_snapshot_index",
                    "snapshot_count",
                    "snapshots_installed",
                ];
                let mut row = vec![addr.clone()];
                row.extend(fields.iter().map(|k| get(k)));
                row.extend(hosted_and_led(&mut c, &get("node_id")).await);
                println!("{}", ROW(&row));
                let leads = get("role") == "leader";
                if configuration.as_ref().is_none_or(|(led, _)| !led && leads) {
                    configuration = Some((leads, f));
                }
            }
            Err(ClientError::Server(reply)) => {
                println!("{addr:<22} refused ({reply})");
                refusal = Some(reply);
            }
            Err(e) => println!("{addr:<22} down ({e})"),
        }
    }
    let Some((_, info)) = configuration else {
        // Servers that answered with a refusal did answer: say why they refused.
        return Err(match refusal {
            Some(reply) => CliError::Client(ClientError::Server(reply)),
            None => CliError::NoServerAnswered,
        });
    };
    println!("{}", configuration_line(&info));
    Ok(())
}

/// How many ranges the server hosts and how many of them it leads (from `RAFT.RANGES`; the
/// other columns of `status` describe the first range's group), or `?` if it does not say.
async fn hosted_and_led(client: &mut KvClient<MaybeTlsNet>, node_id: &str) -> [String; 2] {
    let Ok(ranges) = client.ranges().await else {
        return ["?".into(), "?".into()];
    };
    let led = ranges
        .iter()
        .filter(|r| r.leader.is_some_and(|l| l.to_string() == node_id))
        .count();
    [ranges.len().to_string(), led.to_string()]
}

/// `configuration (node 1): voters 1,2,3; learners 4; joint no` from INFO's fields.
fn configuration_line(info: &BTreeMap<String, String>) -> String {
    let get = |k: &str| match info.get(k).map(String::as_str) {
        None => "?".to_string(),
        Some("") => "-".to_string(),
        Some(v) => v.to_string(),
    };
    let mut line = format!(
        "configuration (as node {} has it): voters {}; learners {}; joint {}",
        get("node_id"),
        get("voters"),
        get("learners"),
        get("joint")
    );
    if info.get("joint").is_some_and(|j| j == "yes") {
        line.push_str(&format!(" (outgoing voters {})", get("outgoing_voters")));
    }
    line
}

/// Whether each member answers PING on its client address (false where none is known).
async fn probe_all(list: &MemberList) -> Vec<bool> {
    let probes = list.members.iter().map(|m| {
        let addr = m.client_addr.clone();
        async move {
            if addr.is_empty() {
                return false;
            }
            let mut c = KvClient::with_config(
                vec![addr],
                ClientConfig {
                    max_attempts: 1,
                    connect_timeout: Duration::from_millis(500),
                    request_timeout: Duration::from_secs(1),
                    follow_leader: false,
                    ..Default::default()
                },
            );
            c.call(&[b"PING"], false).await.is_ok()
        }
    });
    let tasks: Vec<_> = probes.map(tokio::spawn).collect();
    let mut reachable = Vec::with_capacity(tasks.len());
    for t in tasks {
        reachable.push(t.await.unwrap_or(false));
    }
    reachable
}

/// The table `member list` prints.
pub fn format_member_list(list: &MemberList, reachable: &[bool]) -> String {
    let dash = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    let mut out = format!(
        "{:>4} {:<22} {:<22} {:<15} {:>12} {:>8} {}\n",
        "id", "peer address", "client address", "role", "match", "lag", "reachable"
    );
    for (i, m) in list.members.iter().enumerate() {
        let role = if list.leader == Some(m.id) {
            format!("{} (leader)", m.role.as_str())
        } else {
            m.role.as_str().to_string()
        };
        out.push_str(&format!(
            "{:>4} {:<22} {:<22} {:<15} {:>12} {:>8} {}\n",
            m.id,
            if m.peer_addr.is_empty() {
                "?"
            } else {
                &m.peer_addr
            },
            if m.client_addr.is_empty() {
                "?"
            } else {
                &m.client_addr
            },
            role,
            dash(m.match_index),
            dash(m.lag),
            if reachable.get(i).copied().unwrap_or(false) {
                "yes"
            } else {
                "no"
            },
        ));
    }
    if list.joint {
        out.push_str("joint configuration: a change of the voters is in progress\n");
    }
    if !list.ranges_behind.is_empty() {
        out.push_str(&format!(
            "ranges still following the last change (their configuration differs from the \
             first range's on node {}): {}\n",
            list.answered_by,
            range_names(&list.ranges_behind)
        ));
    }
    if list.members.iter().all(|m| m.match_index.is_none()) {
        out.push_str(&format!(
            "(answered by node {}, not the leader: no match index or lag)\n",
            list.answered_by
        ));
    } else {
        out.push_str(&format!(
            "a learner may be promoted once its lag is at most {LEARNER_READY_LAG}\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Cmd};
    use crate::node::admin::{MemberRole, MemberStatus};

    fn parse(line: &str) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(line.split_whitespace())
    }

    #[test]
    fn member_subcommands_take_the_documented_arguments() {
        let cli = parse(
            "kvstore member add 4 --peer-addr 127.0.0.1:7104 --client-addr 127.0.0.1:7004 --servers a:1,b:2",
        )
        .unwrap();
        let Cmd::Member(MemberCmd::Add {
            id,
            peer_addr,
            client_addr,
            servers,
        }) = cli.command
        else {
            panic!("parsed as {:?}", cli.command);
        };
        assert_eq!((id, peer_addr.as_str()), (4, "127.0.0.1:7104"));
        assert_eq!(client_addr, "127.0.0.1:7004");
        assert_eq!(servers.servers, ["a:1", "b:2"]);
        assert!(matches!(
            parse("kvstore member promote 4 --servers a:1")
                .unwrap()
                .command,
            Cmd::Member(MemberCmd::Promote { id: 4, .. })
        ));
        assert!(matches!(
            parse("kvstore member remove 2").unwrap().command,
            Cmd::Member(MemberCmd::Remove { id: 2, .. })
        ));
        assert!(matches!(
            parse("kvstore member list --servers a:1").unwrap().command,
            Cmd::Member(MemberCmd::List { .. })
        ));
        assert!(matches!(
            parse("kvstore member update 2 --peer-addr h:1 --client-addr h:2")
                .unwrap()
                .command,
            Cmd::Member(MemberCmd::Update { id: 2, .. })
        ));
        assert!(matches!(
            parse("kvstore transfer-leader 3 --servers a:1")
                .unwrap()
                .command,
            Cmd::TransferLeader { id: 3, .. }
        ));
    }

    #[test]
    fn missing_or_malformed_arguments_are_refused() {
        assert!(parse("kvstore member add 4 --peer-addr h:1").is_err());
        assert!(parse("kvstore member promote").is_err());
        assert!(parse("kvstore member remove x").is_err());
        assert!(parse("kvstore transfer-leader").is_err());
        assert!(parse("kvstore member frobnicate").is_err());
        assert!(check_addr("--peer-addr", "nohost").is_err());
        assert!(check_addr("--peer-addr", ":7").is_err());
        assert!(check_addr("--peer-addr", "h:7").is_ok());
        assert!(check_id(0).is_err());
    }

    #[test]
    fn the_member_table_shows_roles_progress_and_reachability() {
        let list = MemberList {
            answered_by: 1,
            leader: Some(1),
            joint: false,
            members: vec![
                MemberStatus {
                    id: 1,
                    peer_addr: "h:7101".into(),
                    client_addr: "h:7001".into(),
                    role: MemberRole::Voter,
                    match_index: Some(50),
                    lag: Some(0),
                },
                MemberStatus {
                    id: 4,
                    peer_addr: "h:7104".into(),
                    client_addr: String::new(),
                    role: MemberRole::Learner,
                    match_index: Some(20),
                    lag: Some(30),
                },
            ],
            ranges_behind: vec![3, 7],
        };
        let table = format_member_list(&list, &[true, false]);
        assert!(
            table.contains("ranges still following the last change") && table.contains(": 3, 7\n"),
            "{table}"
        );
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[1].contains("voter (leader)") && lines[1].ends_with("yes"));
        assert!(lines[2].contains("learner") && lines[2].contains("30"));
        assert!(lines[2].contains(" ? ") && lines[2].trim_end().ends_with("no"));
    }
}
