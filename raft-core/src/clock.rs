//! Time carried in the log. An application that needs time to mean the same on every replica
//! (key expiry, leases held by clients) cannot let each replica read its own clock: replicas
//! would disagree, and replaying the log after a restart would decide differently. So the
//! leader stamps its log: the driver reports the leader's clock ([`RawNode::set_clock`]), and
//! when [`Config::clock_stamps`](crate::Config::clock_stamps) is on the leader appends an
//! [`EntryKind::Clock`] entry (the milliseconds as a little-endian `u64`) in front of the
//! proposals it appends once its clock has moved since the last stamp, and after its no-op on
//! election. The application reads time only from those entries, in log order.
//!
//! The core never reads a clock; the value is whatever the driver says, and may go backwards
//! (a new leader whose clock is behind): the application should take the largest stamp seen.

use bytes::Bytes;

use crate::node::RawNode;
use crate::types::{Entry, EntryKind, Role};

/// The leader's clock as the driver last reported it, and the last time stamped into the log.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LeaderClock {
    now_ms: u64,
    stamped_ms: Option<u64>,
}

/// The payload of a clock entry.
pub fn encode_clock(ms: u64) -> Bytes {
    Bytes::copy_from_slice(&ms.to_le_bytes())
}

/// The milliseconds a clock entry's payload carries, if it is one.
pub fn decode_clock(payload: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(payload.try_into().ok()?))
}

impl RawNode {
    /// Reports the time, in milliseconds since an epoch the application chooses (the Unix
    /// epoch, typically). Only a leader's is used, and only with
    /// [`Config::clock_stamps`](crate::Config::clock_stamps).
    pub fn set_clock(&mut self, now_ms: u64) {
        self.clock.now_ms = now_ms;
    }

    /// A leader whose clock moved since its last stamp appends a clock entry now, without a
    /// proposal (for an application that must see time pass while no client writes, such as
    /// one expiring keys). True if it appended one.
    pub fn stamp_clock(&mut self) -> bool {
        if self.role != Role::Leader || self.transfer.is_some() {
            return false;
        }
        let stamped = self.append_clock_stamp_if_due(self.log.last_index() + 1);
        if stamped {
            self.broadcast_pending = true;
        }
        stamped
    }

    /// Appends a clock entry at `index` (the next free one) if stamps are on and the clock
    /// moved since the last. Called by the leader before it appends proposals.
    pub(crate) fn append_clock_stamp_if_due(&mut self, index: u64) -> bool {
        debug_assert_eq!(index, self.log.last_index() + 1);
        let clock = self.clock;
        if !self.cfg.clock_stamps || clock.stamped_ms.is_some_and(|s| s == clock.now_ms) {
            return false;
        }
        let entry = Entry::new(
            self.term,
            index,
            EntryKind::Clock,
            encode_clock(clock.now_ms),
        );
        self.uncommitted_bytes += entry.size();
        self.log.append(vec![entry]);
        self.clock.stamped_ms = Some(clock.now_ms);
        true
    }

    /// A new term of leadership stamps afresh.
    pub(crate) fn forget_clock_stamp(&mut self) {
        self.clock.stamped_ms = None;
    }
}
