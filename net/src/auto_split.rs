//! Automatic splits by size (`--range-max-keys N`): every few seconds, each range this node
//! leads that holds more than N keys is split at its middle key, as `kvstore split` would split
//! it (`RAFT.SPLIT`: an id allocated in the first range, the split proposed to the range at the
//! epoch this node applied). Only a range's leader acts, so one node asks for each split; a
//! split refused or lost (a leadership change, a range that changed meanwhile) is asked again
//! at the next check if the range is still too large. A range far over the bound halves at
//! every check until each part is under it.
//!
//! Off by default: a node hosting several ranges takes no snapshot images yet, so its logs
//! are not compacted (see docs/OPERATIONS.md).

use std::time::Duration;

use bytes::Bytes;
use kv::ranges::{show_key, RangeId};
use raft_core::Role;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

use crate::node::NodeConfig;
use crate::request::{NodeHandle, ReadOp, ReadResult};
use crate::resp::Reply;

/// How often the ranges are looked at.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// When ranges split by themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AutoSplit {
    pub max_keys: u64,
    pub every: Duration,
}

impl AutoSplit {
    /// The node's policy, if it has one (`range_max_keys` above 0).
    pub fn of(cfg: &NodeConfig) -> Option<Self> {
        (cfg.range_max_keys > 0).then_some(AutoSplit {
            max_keys: cfg.range_max_keys,
            every: CHECK_EVERY,
        })
    }
}

/// Splits the ranges this node leads that outgrew `policy` until `shutdown`; `seed` seeds the
/// request ids of the splits.
pub async fn run(
    node: NodeHandle,
    policy: AutoSplit,
    seed: u64,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ids = rand::rngs::StdRng::seed_from_u64(seed);
    let mut ticker = tokio::time::interval(policy.every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = ticker.tick() => {}
        }
        for (range, keys) in oversized_ranges_led_here(&node, policy.max_keys).await {
            split_in_two(&node, (range, keys), ids.gen::<u64>() | 1).await;
        }
    }
}

/// The ranges this node leads holding more than `max_keys` keys, with their key counts.
async fn oversized_ranges_led_here(node: &NodeHandle, max_keys: u64) -> Vec<(RangeId, u64)> {
    let table = node.ranges();
    let mut oversized = Vec::new();
    for range in table.ranges() {
        let Ok(info) = node.info_of(range.id).await else {
            continue;
        };
        if info.role == Role::Leader && info.keys > max_keys {
            oversized.push((range.id, info.keys));
        }
    }
    oversized
}

/// Splits `range` at its middle key; a failure is logged and left to the next check.
async fn split_in_two(node: &NodeHandle, (range, keys): (RangeId, u64), request_id: u64) {
    let at: Bytes = match node.read_in(range, ReadOp::SplitPoint).await {
        Ok(ReadResult::Value(Some(at))) => at,
        Ok(_) => return,
        Err(e) => {
            tracing::debug!(range, error = %e, "no split point for an automatic split");
            return;
        }
    };
    match crate::server_ranges::split_command(std::slice::from_ref(&at), node, request_id).await {
        Reply::Error(error) => tracing::warn!(
            range,
            at = %show_key(&at),
            %error,
            "an automatic split failed; it is asked again at the next check if still needed"
        ),
        _ => tracing::info!(
            range,
            keys,
            at = %show_key(&at),
            "split a range that outgrew --range-max-keys"
        ),
    }
}
