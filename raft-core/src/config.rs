//! How a core is set up. Start from [`Config::new`] and change what you need.

use crate::error::ConfigError;
use crate::types::NodeId;

/// How a leader confirms that it still leads before it serves a linearizable read.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum ReadMode {
    /// Raft thesis §6.4: a round of heartbeats acknowledged by a quorum, started after the
    /// read arrived. Safe whatever the clocks do.
    #[default]
    ReadIndex,
    /// Raft thesis §6.4.1: the read is served at once while the leader's lease holds, and by
    /// ReadIndex otherwise. The lease runs from the tick a quorum-acknowledged heartbeat round
    /// was sent, for [`Config::lease_ticks`] ticks: shorter than the time a follower that
    /// acknowledged it refuses to vote for anyone else, as long as no node's tick is more than
    /// `1 + max_clock_drift` times as long as another's. Needs `check_quorum`, and a driver
    /// whose ticks keep pace with its clock (a paused process must catch up its ticks before
    /// it serves reads). See `lease.rs`.
    Lease {
        /// The largest ratio by which one node's tick may exceed another's, minus one
        /// (0.5: any tick at most 1.5 times any other). At least 0 and at most 1.
        max_clock_drift: f64,
    },
}

/// The settings of one core. Every node of a cluster should use the same timing settings;
/// `seed` should differ between nodes (the default, the node's id, does).
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's id; never 0, and one of `voters` unless `voters` is empty.
    pub id: NodeId,
    /// The initial configuration: every voting member, this node included. Used only when
    /// storage holds no configuration (no conf-change entry in the log and an empty
    /// `SnapshotMeta::membership`), as on a cluster's first start; from then on the
    /// configuration comes from the log and snapshots. Empty means a node waiting to be added:
    /// it never campaigns and learns its configuration from the leader that adds it.
    pub voters: Vec<NodeId>,
    /// A follower campaigns after a randomized timeout in `[election_ticks, 2 * election_ticks)`.
    pub election_ticks: u32,
    /// The leader sends heartbeats every `heartbeat_ticks`; must be below `election_ticks`.
    pub heartbeat_ticks: u32,
    /// Seeds the election-timeout RNG. Give each node a different seed.
    pub seed: u64,
    /// Ask for pre-votes before raising the term, so that a node rejoining from a partition does
    /// not depose a healthy leader.
    pub pre_vote: bool,
    /// A leader that has not heard from a majority within a check-quorum window
    /// ([`check_quorum_ticks`](Self::check_quorum_ticks)) steps down, and followers ignore vote
    /// requests while they still hear from a leader.
    pub check_quorum: bool,
    /// The check-quorum window in ticks; `None` means `2 * election_ticks`, the longest
    /// randomized election timeout. Any message a follower sends in the leader's term counts it
    /// as active for the window in which it arrives, however late it is (a reply to a heartbeat
    /// of an earlier window included), as in etcd. The window only bounds how long a leader cut
    /// off from a majority keeps believing it leads, which costs clients time, never safety
    /// (reads are confirmed by a quorum round, not by a lease). Too short a window deposes
    /// healthy leaders whenever replies take longer than it: with a window equal to the
    /// minimum election timeout and replies delayed beyond it, a leader is deposed one window
    /// after it wins and nothing commits. Must exceed `heartbeat_ticks`.
    pub check_quorum_ticks: Option<u32>,
    /// At most this many bytes of entries in one append message (at least one entry is sent).
    pub max_msg_bytes: u64,
    /// At most this many append messages in flight to one follower.
    pub max_inflight_msgs: usize,
    /// At most this many entry bytes in flight to one follower.
    pub max_inflight_bytes: u64,
    /// A leader refuses proposals while it holds more than this many uncommitted entry bytes
    /// (a single proposal is always accepted when nothing is uncommitted).
    pub max_uncommitted_bytes: u64,
    /// On a follower, forward proposals and read requests to the leader instead of refusing
    /// them. Off by default.
    ///
    /// **A forwarded request may be lost without a trace**: `propose` then returns
    /// `Ok(Proposed::Forwarded { .. })`, but the message may be dropped, the leader may refuse
    /// it (too many uncommitted bytes) or lose leadership before appending it, and nobody is
    /// told. Turn it on only if the driver recognises its commands when they commit (by an id in
    /// the payload) and times them out and retries; otherwise keep it off and send clients to
    /// the leader named in [`ProposeError::NotLeader`](crate::ProposeError::NotLeader).
    pub forward_to_leader: bool,
    /// Stamp the leader's clock into the log ([`EntryKind::Clock`](crate::EntryKind::Clock)
    /// entries; see [`RawNode::set_clock`](crate::RawNode::set_clock)). Off by default.
    pub clock_stamps: bool,
    /// How the leader confirms a linearizable read: a quorum round per batch of reads
    /// (ReadIndex, the default), or its lease while one holds ([`ReadMode::Lease`], which
    /// assumes bounded clock drift). Every node of a cluster must use the same mode: the
    /// followers' side of a lease is theirs to keep.
    pub read_mode: ReadMode,
    /// Deliberately broken behaviour, only for proving that tests catch it.
    #[cfg(feature = "deliberate-bugs")]
    pub bugs: crate::bugs::Bugs,
}

impl Config {
    /// Defaults suited to a tick of about 100 ms on a LAN: elections after 1–2 s, heartbeats every
    /// 100 ms, pre-vote and check-quorum on (a 2 s window), no forwarding, 1 MiB messages, 256
    /// messages or 16 MiB in flight per follower, 64 MiB uncommitted.
    pub fn new(id: NodeId, voters: Vec<NodeId>) -> Self {
        Self {
            id,
            voters,
            election_ticks: 10,
            heartbeat_ticks: 1,
            seed: id,
            pre_vote: true,
            check_quorum: true,
            check_quorum_ticks: None,
            max_msg_bytes: 1 << 20,
            max_inflight_msgs: 256,
            max_inflight_bytes: 16 << 20,
            max_uncommitted_bytes: 64 << 20,
            forward_to_leader: false,
            clock_stamps: false,
            read_mode: ReadMode::ReadIndex,
            #[cfg(feature = "deliberate-bugs")]
            bugs: crate::bugs::Bugs::default(),
        }
    }

    /// The check-quorum window in ticks (see [`check_quorum_ticks`](Self::check_quorum_ticks)).
    pub fn check_quorum_window(&self) -> u32 {
        self.check_quorum_ticks
            .unwrap_or_else(|| self.election_ticks.saturating_mul(2))
    }

    /// How many ticks a lease lasts from the sending of the heartbeat round a quorum
    /// acknowledged, in [`ReadMode::Lease`]; `None` in ReadIndex mode.
    ///
    /// A follower that received the round refuses votes until it counts `election_ticks` of
    /// its own ticks, the first of which may come at once: at least `election_ticks - 1` of
    /// its ticks after the sending. The leader's ticks may be up to `1 + max_clock_drift` times
    /// as long, hence `(election_ticks - 1) / (1 + max_clock_drift)`, rounded down.
    pub fn lease_ticks(&self) -> Option<u32> {
        match self.read_mode {
            ReadMode::ReadIndex => None,
            ReadMode::Lease { max_clock_drift } => {
                let refusing = f64::from(self.election_ticks.saturating_sub(1));
                Some((refusing / (1.0 + max_clock_drift)).floor() as u32)
            }
        }
    }

    fn validate_read_mode(&self) -> Result<(), ConfigError> {
        let ReadMode::Lease { max_clock_drift } = self.read_mode else {
            return Ok(());
        };
        if !(0.0..=1.0).contains(&max_clock_drift) {
            return Err(ConfigError::ClockDriftOutOfRange);
        }
        if !self.check_quorum {
            return Err(ConfigError::LeaseWithoutCheckQuorum);
        }
        let lease_ticks = self.lease_ticks().unwrap_or(0);
        if lease_ticks <= self.heartbeat_ticks {
            return Err(ConfigError::LeaseNotAboveHeartbeat {
                lease_ticks,
                heartbeat_ticks: self.heartbeat_ticks,
            });
        }
        Ok(())
    }

    /// Checks the settings [`crate::RawNode::new`] and [`crate::RawNode::restart`] rely on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id == 0 || self.voters.contains(&0) {
            return Err(ConfigError::ReservedNodeId);
        }
        if !self.voters.is_empty() && !self.voters.contains(&self.id) {
            return Err(ConfigError::NotAVoter {
                id: self.id,
                voters: self.voters.clone(),
            });
        }
        let mut sorted = self.voters.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != self.voters.len() {
            return Err(ConfigError::DuplicateVoters {
                voters: self.voters.clone(),
            });
        }
        if self.heartbeat_ticks == 0 {
            return Err(ConfigError::ZeroHeartbeatTicks);
        }
        if self.election_ticks <= self.heartbeat_ticks {
            return Err(ConfigError::ElectionTicksNotAboveHeartbeat {
                election_ticks: self.election_ticks,
                heartbeat_ticks: self.heartbeat_ticks,
            });
        }
        if self.check_quorum_window() <= self.heartbeat_ticks {
            return Err(ConfigError::CheckQuorumWindowNotAboveHeartbeat {
                check_quorum_ticks: self.check_quorum_window(),
                heartbeat_ticks: self.heartbeat_ticks,
            });
        }
        self.validate_read_mode()?;
        if self.max_inflight_msgs == 0 {
            return Err(ConfigError::ZeroInflightMessages);
        }
        if self.max_msg_bytes == 0 || self.max_inflight_bytes == 0 {
            return Err(ConfigError::ZeroByteLimit);
        }
        Ok(())
    }
}
