//! Lease reads (Raft thesis §6.4.1): a leader serves a linearizable read at once, without a
//! quorum round, while no other leader can have been elected.
//!
//! The argument, in ticks. A heartbeat round is sent at the leader's tick `s` and acknowledged
//! by a quorum (both majorities when joint; learners never count). Each follower in that
//! quorum received the round after it was sent, restarted its election timer, and from then
//! on (check-quorum's rule, `RawNode::in_leader_lease`) neither campaigns nor answers a vote
//! request for a higher term until it has counted `election_ticks` of its own ticks: at least
//! `election_ticks - 1` tick lengths after the sending, since its first tick may come at once.
//! Any new leader needs a vote from one of them (its electing quorum, of the leader's
//! configuration or the one before it, meets this one), so none exists before then. The leader
//! holds the lease until its own tick `s + lease_ticks`, with
//! `lease_ticks = (election_ticks - 1) / (1 + max_clock_drift)`: if no tick is more than
//! `1 + max_clock_drift` times as long as another, the lease ends first.
//!
//! What would break it, and what closes each gap:
//! - A follower's vote for a transfer target passes through its side of the lease: a leader
//!   that starts a transfer holds no lease for the rest of its term (a `TimeoutNow` sent now
//!   may arrive late).
//! - A configuration change: the quorum that acknowledged a round must meet every quorum that
//!   can elect the next leader. Rounds sent before the leader appends a configuration entry no
//!   longer count; with at most one change pending, the next leader's configuration is the
//!   leader's or the one before it, whose quorums meet.
//! - A follower that restarts forgot when it last heard from its leader: in lease mode a node
//!   refuses votes for its first `election_ticks` ticks after a start, and a forced campaign
//!   ([`RawNode::campaign`]) is ignored while the node keeps its side of a lease.
//! - The leader stepping down, or any change of term, ends the lease with the role.
//! - A paused leader whose ticks fall behind its clock would hold the lease too long: the
//!   driver must tick for the time that passed before it serves reads.

use std::collections::VecDeque;

use crate::config::ReadMode;
use crate::node::RawNode;

/// Rounds remembered while waiting for a quorum; older ones are dropped (a round missing here
/// only means no lease from it).
const MAX_ROUNDS_REMEMBERED: usize = 1024;

/// The leader's lease, and the tick count every node keeps for it.
#[derive(Debug, Default)]
pub(crate) struct Lease {
    /// Ticks since this node started.
    now: u64,
    /// Heartbeat rounds sent since the lease last ended and not yet acknowledged by a quorum,
    /// oldest first, with the tick each was sent at.
    sent: VecDeque<(u64, u64)>,
    /// The tick at which the latest quorum-acknowledged round was sent.
    held_from: Option<u64>,
    /// A transfer began in this term of leadership: no lease until the role changes.
    barred: bool,
}

impl Lease {
    pub(crate) fn tick(&mut self) {
        self.now += 1;
    }

    fn round_sent(&mut self, round: u64) {
        if self.sent.len() == MAX_ROUNDS_REMEMBERED {
            self.sent.pop_front();
        }
        self.sent.push_back((round, self.now));
    }

    /// A quorum acknowledged every round up to `round`.
    fn confirmed(&mut self, round: u64) {
        let mut sent_at = None;
        while let Some(&(r, at)) = self.sent.front() {
            if r > round {
                break;
            }
            sent_at = Some(at);
            self.sent.pop_front();
        }
        if let Some(at) = sent_at {
            self.held_from = Some(self.held_from.map_or(at, |h| h.max(at)));
        }
    }

    fn holds(&self, lease_ticks: u64) -> bool {
        !self.barred
            && self
                .held_from
                .is_some_and(|from| self.now < from + lease_ticks)
    }

    /// Ends the lease; only rounds sent from now on can start another.
    pub(crate) fn end(&mut self) {
        self.sent.clear();
        self.held_from = None;
    }

    /// Ends the lease and the chance of another until the role changes.
    pub(crate) fn bar(&mut self) {
        self.end();
        self.barred = true;
    }

    /// The role changed: a new leader starts without a lease, and may hold one.
    pub(crate) fn reset(&mut self) {
        self.end();
        self.barred = false;
    }
}

impl RawNode {
    pub(crate) fn lease_mode(&self) -> bool {
        matches!(self.cfg.read_mode, ReadMode::Lease { .. })
    }

    fn lease_length(&self) -> u64 {
        if self.bugs().lease_outlasts_election_timeout {
            return 2 * u64::from(self.cfg.election_ticks);
        }
        self.cfg.lease_ticks().map_or(0, u64::from)
    }

    /// Whether this leader may serve a read now without a quorum round.
    pub(crate) fn lease_holds(&self) -> bool {
        self.lease_mode() && self.lease.holds(self.lease_length())
    }

    /// In lease mode, a node's first `election_ticks` ticks after a start: it may have
    /// acknowledged a leader's round just before it stopped, and refuses votes meanwhile.
    pub(crate) fn in_restart_quiet(&self) -> bool {
        self.lease_mode() && self.lease.now < u64::from(self.cfg.election_ticks)
    }

    /// The round a leader's periodic heartbeats carry. In lease mode each is a new round, so
    /// that an acknowledgement dates from the tick it was sent at and renews the lease.
    pub(crate) fn heartbeat_round(&mut self) -> u64 {
        if !self.lease_mode() {
            return self.reads.current_round();
        }
        let round = self.reads.start_round_now();
        self.lease.round_sent(round);
        round
    }

    /// Starts a round for the reads that wait for one, if any.
    pub(crate) fn start_read_round(&mut self) -> Option<u64> {
        let round = self.reads.start_round()?;
        if self.lease_mode() {
            self.lease.round_sent(round);
        }
        Some(round)
    }

    /// A quorum acknowledged every round up to `round`.
    pub(crate) fn lease_confirmed(&mut self, round: u64) {
        if self.lease_mode() {
            self.lease.confirmed(round);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_runs_from_the_sending_of_the_acknowledged_round() {
        let mut lease = Lease::default();
        lease.tick();
        lease.round_sent(1);
        lease.tick();
        lease.tick();
        lease.round_sent(2);
        assert!(!lease.holds(5), "nothing acknowledged yet");
        lease.confirmed(1);
        assert!(lease.holds(5), "sent at tick 1, now 3");
        lease.tick();
        lease.tick();
        assert!(lease.holds(5), "tick 5: the last of the lease");
        lease.tick();
        assert!(!lease.holds(5), "tick 6 is tick 1 + 5");
        lease.confirmed(2);
        assert!(lease.holds(5), "renewed from tick 3");
    }

    #[test]
    fn an_acknowledgement_of_a_round_sent_before_the_lease_ended_renews_nothing() {
        let mut lease = Lease::default();
        lease.round_sent(1);
        lease.end();
        lease.confirmed(1);
        assert!(!lease.holds(5));
        lease.round_sent(2);
        lease.bar();
        lease.round_sent(3);
        lease.confirmed(3);
        assert!(!lease.holds(5), "barred until the role changes");
        lease.reset();
        lease.round_sent(4);
        lease.confirmed(4);
        assert!(lease.holds(5));
    }

    #[test]
    fn lease_mode_is_refused_without_check_quorum_or_with_an_unbounded_drift() {
        use crate::{Config, ConfigError};
        let mut cfg = Config::new(1, vec![1, 2, 3]);
        cfg.read_mode = ReadMode::Lease {
            max_clock_drift: 0.5,
        };
        assert_eq!(cfg.lease_ticks(), Some(6), "(10 - 1) / 1.5");
        assert_eq!(cfg.validate(), Ok(()));
        cfg.check_quorum = false;
        assert_eq!(cfg.validate(), Err(ConfigError::LeaseWithoutCheckQuorum));
        cfg.check_quorum = true;
        for drift in [-0.1, 1.5, f64::NAN] {
            cfg.read_mode = ReadMode::Lease {
                max_clock_drift: drift,
            };
            assert_eq!(cfg.validate(), Err(ConfigError::ClockDriftOutOfRange));
        }
        cfg.election_ticks = 3;
        cfg.read_mode = ReadMode::Lease {
            max_clock_drift: 0.5,
        };
        assert!(matches!(
            cfg.validate(),
            Err(ConfigError::LeaseNotAboveHeartbeat { lease_ticks: 1, .. })
        ));
    }
}
