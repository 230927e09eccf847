//! The kvstore node around `raft-core` and `kv`.

pub mod resp;
