//! The operator's commands on the client port, so that any Redis client can drive them:
//!
//! | command | does |
//! | --- | --- |
//! | `RAFT.MEMBER LIST` | the configuration: each member's id, addresses, role, and on the leader its match index and lag |
//! | `RAFT.MEMBER ADD id peer-addr client-addr` | adds a learner |
//! | `RAFT.MEMBER PROMOTE id` | makes a learner that has caught up a voter |
//! | `RAFT.MEMBER REMOVE id` | removes a voter or a learner |
//! | `RAFT.MEMBER UPDATE id peer-addr client-addr` | records a member's new addresses |
//! | `RAFT.MEMBER HELP` | this list |
//! | `RAFT.TRANSFER-LEADER id` | makes a voter the leader |
//!
//! A change answers `+OK` once applied (a change of the voters, once the joint configuration
//! is left too), a transfer once the target leads. A follower answers `-TRYAGAIN` naming the
//! leader, as for any request that certainly did not take effect; asking again for what is
//! already so waits for it to be applied and answers `+OK`, so a retry is harmless.
//!
//! `LIST` answers a flat list of field/value pairs (`answered_by`, `leader`, `joint`,
//! `members`, `ranges_behind`), `members` being one such list per member (`id`, `peer_addr`,
//! `client_addr`, `role`, `match_index`, `lag`; the last two nil except on the leader), and
//! `ranges_behind` the ranges whose configuration, on the answering node, has not followed the
//! first range's yet (empty on an unsplit keyspace).
//!
//! Once the keyspace is split, a change is made to the first range, and every other range
//! follows it by itself (`node/member_follow.rs`).

use bytes::Bytes;
use raft_core::NodeId;

use crate::node::admin::{AdminReply, AdminRequest, MemberList, MemberRole, MemberStatus};
use crate::request::NodeHandle;
use crate::resp::Reply;
use kv::MemberAddrs;

const MEMBER_HELP: &[&str] = &[
    "RAFT.MEMBER <subcommand> [<arg> ...]. Subcommands are:",
    "LIST",
    "    Every member: id, peer and client address, role; on the leader, match index and lag.",
    "ADD <id> <peer-addr> <client-addr>",
    "    Add a learner; start it with `kvstore serve --join`.",
    "PROMOTE <id>",
    "    Make a learner that has caught up a voter.",
    "REMOVE <id>",
    "    Remove a voter or a learner.",
    "UPDATE <id> <peer-addr> <client-addr>",
    "    Record a member's new addresses.",
    "HELP",
    "    Print this help.",
];

fn upper(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_ascii_uppercase()
}

fn arity_error(command: &str) -> Reply {
    Reply::error(format!(
        "ERR wrong number of arguments for '{}' command",
        command.to_ascii_lowercase()
    ))
}

fn parse_id(b: &[u8]) -> Result<NodeId, Reply> {
    match std::str::from_utf8(b)
        .ok()
        .and_then(|t| t.parse::<u64>().ok())
    {
        Some(0) => Err(Reply::error("ERR node id 0 is reserved")),
        Some(id) => Ok(id),
        None => Err(Reply::error("ERR value is not an integer or out of range")),
    }
}

/// Whether `text` is `HOST:PORT` with a non-empty host and a port number.
pub fn is_host_port(text: &str) -> bool {
    text.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

fn parse_addr(b: &[u8], what: &str) -> Result<String, Reply> {
    match std::str::from_utf8(b) {
        Ok(text) if is_host_port(text) => Ok(text.to_string()),
        _ => Err(Reply::error(format!(
            "ERR invalid {what} address '{}' (expected HOST:PORT)",
            String::from_utf8_lossy(b)
        ))),
    }
}

fn parse_addrs(peer: &[u8], client: &[u8]) -> Result<MemberAddrs, Reply> {
    Ok(MemberAddrs {
        peer_addr: parse_addr(peer, "peer")?,
        client_addr: parse_addr(client, "client")?,
    })
}

/// What `RAFT.MEMBER args...` asks, or the error to answer.
pub fn parse_member_command(args: &[Bytes]) -> Result<AdminRequest, Reply> {
    let Some(sub) = args.first() else {
        return Err(arity_error("raft.member"));
    };
    let sub = upper(sub);
    let rest = &args[1..];
    let wrong_arity = || arity_error(&format!("raft.member|{sub}"));
    match (sub.as_str(), rest) {
        ("LIST", []) => Ok(AdminRequest::ListMembers),
        ("ADD", [id, peer, client]) => Ok(AdminRequest::AddLearner {
            id: parse_id(id)?,
            addrs: parse_addrs(peer, client)?,
        }),
        ("PROMOTE", [id]) => Ok(AdminRequest::Promote { id: parse_id(id)? }),
        ("REMOVE", [id]) => Ok(AdminRequest::Remove { id: parse_id(id)? }),
        ("UPDATE", [id, peer, client]) => Ok(AdminRequest::UpdateAddrs {
            id: parse_id(id)?,
            addrs: parse_addrs(peer, client)?,
        }),
        ("HELP", []) => Err(Reply::Array(
            MEMBER_HELP
                .iter()
                .map(|l| Reply::Simple((*l).to_string()))
                .collect(),
        )),
        ("LIST" | "ADD" | "PROMOTE" | "REMOVE" | "UPDATE" | "HELP", _) => Err(wrong_arity()),
        _ => Err(Reply::error(format!(
            "ERR unknown subcommand '{}'. Try RAFT.MEMBER HELP.",
            String::from_utf8_lossy(&args[0])
        ))),
    }
}

/// What `RAFT.TRANSFER-LEADER args...` asks, or the error to answer.
pub fn parse_transfer_command(args: &[Bytes]) -> Result<AdminRequest, Reply> {
    match args {
        [to] => Ok(AdminRequest::TransferLeader { to: parse_id(to)? }),
        _ => Err(arity_error("raft.transfer-leader")),
    }
}

/// Runs a parsed operator request and answers it.
pub async fn execute(parsed: Result<AdminRequest, Reply>, node: &NodeHandle) -> Reply {
    let req = match parsed {
        Ok(req) => req,
        Err(reply) => return reply,
    };
    match node.admin(req).await {
        Ok(AdminReply::Members(list)) => member_list_reply(&list),
        Ok(AdminReply::Changed { .. } | AdminReply::LeaderIs(_) | AdminReply::Unchanged(_)) => {
            Reply::ok()
        }
        Err(e) => Reply::error(e.to_string()),
    }
}

pub(crate) fn bulk(text: &str) -> Reply {
    Reply::Bulk(Bytes::from(text.to_string()))
}

fn index_or_nil(i: Option<u64>) -> Reply {
    i.map_or(Reply::Nil, |i| Reply::Integer(i as i64))
}

pub fn member_list_reply(list: &MemberList) -> Reply {
    let members = list
        .members
        .iter()
        .map(|m| {
            Reply::Array(vec![
                bulk("id"),
                Reply::Integer(m.id as i64),
                bulk("peer_addr"),
                bulk(&m.peer_addr),
                bulk("client_addr"),
                bulk(&m.client_addr),
                bulk("role"),
                bulk(m.role.as_str()),
                bulk("match_index"),
                index_or_nil(m.match_index),
                bulk("lag"),
                index_or_nil(m.lag),
            ])
        })
        .collect();
    Reply::Array(vec![
        bulk("answered_by"),
        Reply::Integer(list.answered_by as i64),
        bulk("leader"),
        index_or_nil(list.leader),
        bulk("joint"),
        bulk(if list.joint { "yes" } else { "no" }),
        bulk("members"),
        Reply::Array(members),
        bulk("ranges_behind"),
        Reply::Array(
            list.ranges_behind
                .iter()
                .map(|&r| Reply::Integer(r as i64))
                .collect(),
        ),
    ])
}

/// Reads a flat field/value list.
pub(crate) fn pairs(reply: &Reply) -> Result<Vec<(String, &Reply)>, String> {
    let Reply::Array(items) = reply else {
        return Err(format!("expected a list of fields, got {reply:?}"));
    };
    items
        .chunks(2)
        .map(|pair| match pair {
            [Reply::Bulk(k), v] => Ok((String::from_utf8_lossy(k).into_owned(), v)),
            _ => Err(format!("expected field/value pairs, got {pair:?}")),
        })
        .collect()
}

pub(crate) fn number(v: &Reply) -> Result<Option<u64>, String> {
    match v {
        Reply::Integer(n) => u64::try_from(*n)
            .map(Some)
            .map_err(|_| format!("negative number {n}")),
        Reply::Nil => Ok(None),
        other => Err(format!("expected a number, got {other:?}")),
    }
}

pub(crate) fn text(v: &Reply) -> Result<String, String> {
    match v {
        Reply::Bulk(b) => Ok(String::from_utf8_lossy(b).into_owned()),
        other => Err(format!("expected text, got {other:?}")),
    }
}

/// The inverse of [`member_list_reply`], for clients; unknown fields are skipped.
pub fn parse_member_list(reply: &Reply) -> Result<MemberList, String> {
    let mut list = MemberList {
        answered_by: 0,
        leader: None,
        joint: false,
        members: Vec::new(),
        ranges_behind: Vec::new(),
    };
    for (field, value) in pairs(reply)? {
        match field.as_str() {
            "answered_by" => list.answered_by = number(value)?.unwrap_or(0),
            "leader" => list.leader = number(value)?,
            "joint" => list.joint = text(value)? == "yes",
            "members" => {
                let Reply::Array(members) = value else {
                    return Err(format!("expected a list of members, got {value:?}"));
                };
                for m in members {
                    list.members.push(parse_member(m)?);
                }
            }
            "ranges_behind" => {
                let Reply::Array(ranges) = value else {
                    return Err(format!("expected a list of ranges, got {value:?}"));
                };
                for r in ranges {
                    list.ranges_behind
                        .push(number(r)?.ok_or("a range without an id")?);
                }
            }
            _ => {}
        }
    }
    Ok(list)
}

fn parse_member(reply: &Reply) -> Result<MemberStatus, String> {
    let mut m = MemberStatus {
        id: 0,
        peer_addr: String::new(),
        client_addr: String::new(),
        role: MemberRole::None,
        match_index: None,
        lag: None,
    };
    for (field, value) in pairs(reply)? {
        match field.as_str() {
            "id" => m.id = number(value)?.ok_or("a member without an id")?,
            "peer_addr" => m.peer_addr = text(value)?,
            "client_addr" => m.client_addr = text(value)?,
            "role" => {
                let role = text(value)?;
                m.role = MemberRole::parse(&role).ok_or(format!("unknown role {role}"))?;
            }
            "match_index" => m.match_index = number(value)?,
            "lag" => m.lag = number(value)?,
            _ => {}
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<Bytes> {
        text.split_whitespace()
            .map(|a| Bytes::from(a.to_string()))
            .collect()
    }

    fn error_of(parsed: Result<AdminRequest, Reply>) -> String {
        match parsed {
            Err(Reply::Error(e)) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn member_subcommands_parse_case_insensitively() {
        assert_eq!(
            parse_member_command(&args("list")),
            Ok(AdminRequest::ListMembers)
        );
        assert_eq!(
            parse_member_command(&args("Add 4 127.0.0.1:7104 localhost:7004")),
            Ok(AdminRequest::AddLearner {
                id: 4,
                addrs: MemberAddrs {
                    peer_addr: "127.0.0.1:7104".into(),
                    client_addr: "localhost:7004".into(),
                },
            })
        );
        assert_eq!(
            parse_member_command(&args("PROMOTE 4")),
            Ok(AdminRequest::Promote { id: 4 })
        );
        assert_eq!(
            parse_member_command(&args("remove 2")),
            Ok(AdminRequest::Remove { id: 2 })
        );
        assert_eq!(
            parse_member_command(&args("UPDATE 2 h:1 h:2")),
            Ok(AdminRequest::UpdateAddrs {
                id: 2,
                addrs: MemberAddrs {
                    peer_addr: "h:1".into(),
                    client_addr: "h:2".into(),
                },
            })
        );
        assert_eq!(
            parse_transfer_command(&args("3")),
            Ok(AdminRequest::TransferLeader { to: 3 })
        );
    }

    #[test]
    fn bad_arguments_are_refused_as_redis_words_them() {
        assert_eq!(
            error_of(parse_member_command(&[])),
            "ERR wrong number of arguments for 'raft.member' command"
        );
        assert_eq!(
            error_of(parse_member_command(&args("ADD 4 h:1"))),
            "ERR wrong number of arguments for 'raft.member|add' command"
        );
        assert_eq!(
            error_of(parse_member_command(&args("promote"))),
            "ERR wrong number of arguments for 'raft.member|promote' command"
        );
        assert_eq!(
            error_of(parse_member_command(&args("frobnicate 1"))),
            "ERR unknown subcommand 'frobnicate'. Try RAFT.MEMBER HELP."
        );
        assert_eq!(
            error_of(parse_member_command(&args("REMOVE x"))),
            "ERR value is not an integer or out of range"
        );
        assert_eq!(
            error_of(parse_member_command(&args("REMOVE 0"))),
            "ERR node id 0 is reserved"
        );
        assert_eq!(
            error_of(parse_member_command(&args("ADD 4 nohost h:2"))),
            "ERR invalid peer address 'nohost' (expected HOST:PORT)"
        );
        assert_eq!(
            error_of(parse_member_command(&args("UPDATE 4 h:1 h:99999"))),
            "ERR invalid client address 'h:99999' (expected HOST:PORT)"
        );
        assert_eq!(
            error_of(parse_transfer_command(&args("1 2"))),
            "ERR wrong number of arguments for 'raft.transfer-leader' command"
        );
        assert!(matches!(
            parse_member_command(&args("help")),
            Err(Reply::Array(_))
        ));
    }

    #[test]
    fn a_member_list_reads_back_as_it_was_written() {
        let list = MemberList {
            answered_by: 1,
            leader: Some(1),
            joint: true,
            members: vec![
                MemberStatus {
                    id: 1,
                    peer_addr: "h:1".into(),
                    client_addr: "h:2".into(),
                    role: MemberRole::Voter,
                    match_index: Some(10),
                    lag: Some(0),
                },
                MemberStatus {
                    id: 4,
                    peer_addr: String::new(),
                    client_addr: "h:4".into(),
                    role: MemberRole::IncomingVoter,
                    match_index: None,
                    lag: None,
                },
            ],
            ranges_behind: vec![2, 5],
        };
        assert_eq!(parse_member_list(&member_list_reply(&list)), Ok(list));
        assert!(parse_member_list(&Reply::Integer(1)).is_err());
        assert!(parse_member_list(&Reply::Array(vec![bulk("members"), Reply::Nil])).is_err());
    }
}
