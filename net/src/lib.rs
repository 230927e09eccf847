//! The kvstore node around `raft-core` and `kv`: the driver loop ([`node`]), the peer
//! transport ([`transport`]) and snapshot transfers ([`snapshot_transfer`]), the storage
//! threads ([`storage`]), the Redis-protocol client port
//! ([`server`], [`resp`]), the Rust client ([`client`]) and the command line ([`cli`]).

pub mod bench;
pub mod cli;
pub mod client;
pub mod fuzzing;
pub mod node;
pub mod peer_header;
pub mod request;
pub mod resp;
pub mod server;
pub mod snapshot_transfer;
pub mod storage;
pub mod transport;
