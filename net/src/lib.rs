//! The kvstore node around `raft-core` and `kv`: the node ([`node`]: its start, its Raft group
//! and the loop that feeds it), the peer transport ([`transport`], frames headed by
//! [`peer_header`]), snapshot transfers ([`snapshot_transfer`]), the bootstrap probe
//! ([`probe`]), join requests ([`join`]), the storage threads ([`storage`]), the Redis-protocol
//! client port ([`server`], [`resp`], operator commands in [`server_admin`]), the Rust client
//! ([`client`]), the command line ([`cli`]) and the errors of all of them ([`error`]).

pub mod admin_http;
pub mod auth;
pub mod auto_split;
pub mod bench;
pub mod cli;
pub mod cli_admin;
pub mod cli_auth;
mod cli_backup;
pub mod cli_data;
pub mod cli_peer_tls;
mod cli_ranges;
mod cli_reach;
pub mod cli_read_mode;
mod cli_run;
pub mod cli_tls;
pub mod client;
pub mod command_table;
pub mod error;
pub mod fuzzing;
pub mod join;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod peer_header;
pub mod peer_reachability;
pub mod probe;
pub mod request;
pub mod resp;
pub mod routing;
pub mod server;
pub mod server_admin;
pub mod server_backup;
pub mod server_conn;
pub mod server_data;
pub mod server_info;
pub mod server_multi;
pub mod server_parse;
pub mod server_ranges;
mod server_routed;
pub mod snapshot_transfer;
pub mod storage;
pub mod tls;
pub mod transport;
