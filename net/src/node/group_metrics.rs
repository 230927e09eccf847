//! What the group publishes into the node's metrics: its Raft state once per loop turn (a few
//! relaxed stores), and once per tick the health decision and the per-peer view (reachability,
//! and on the leader each follower's match index). Nothing here feeds back into the node.

use std::collections::BTreeMap;

use raft_core::{Message, NodeId, Role};
use tokio::time::Instant;

use super::group::Group;
use crate::metrics::{self, Health, HealthView, PeerStatus};

/// When the group last heard from each peer, in ticks of its own count.
#[derive(Debug, Default)]
pub struct PeerSilence {
    ticks: u64,
    heard_at: BTreeMap<NodeId, u64>,
    /// The leader last published, to count changes.
    leader: Option<NodeId>,
}

impl PeerSilence {
    fn heard(&mut self, from: NodeId) {
        match self.heard_at.get_mut(&from) {
            Some(at) => *at = self.ticks,
            None => {
                self.heard_at.insert(from, self.ticks);
            }
        }
    }

    fn silent_ticks(&self, peer: NodeId) -> Option<u64> {
        self.heard_at.get(&peer).map(|at| self.ticks - at)
    }
}

impl Group {
    /// A peer message arrived.
    pub(super) fn note_received(&mut self, msg: &Message) {
        self.cfg.metrics.messages.received[metrics::message_kind(msg)].inc();
        self.silence.heard(msg.from);
    }

    /// A peer message was queued to its peer (`sent`) or dropped.
    pub(super) fn note_sent(&self, kind: usize, sent: bool) {
        let counts = &self.cfg.metrics.messages;
        if sent {
            counts.sent[kind].inc();
        } else {
            counts.dropped[kind].inc();
        }
    }

    /// The role or leader changed: count elections and leader changes.
    pub(super) fn note_role(&mut self, role: Role, leader: Option<NodeId>) {
        let m = &self.cfg.metrics;
        if matches!(role, Role::PreCandidate | Role::Candidate) {
            m.elections_started.inc();
        }
        if leader.is_some() && leader != self.silence.leader {
            m.leader_changes.inc();
        }
        if leader.is_some() {
            self.silence.leader = leader;
        }
    }

    /// The core confirmed a ReadIndex round for the read of context `ctx`.
    pub(super) fn note_read_confirmed(&self, ctx: &[u8]) {
        let m = &self.cfg.metrics;
        m.read_index_rounds.inc();
        let arrived = self
            .requests
            .read_deadline(ctx)
            .and_then(|deadline| deadline.checked_sub(self.cfg.request_timeout));
        if let Some(arrived) = arrived {
            m.read_index_latency
                .observe_duration(Instant::now().saturating_duration_since(arrived));
        }
    }

    /// Publishes the Raft state: once per loop turn.
    pub(super) fn publish_status(&self) {
        // The node's status gauges describe the first range's group until they are per range.
        if self.range != kv::ranges::FIRST_RANGE {
            return;
        }
        let s = &self.cfg.metrics.status;
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        s.role.set(metrics::role_code(self.core.role()));
        s.term.set(as_i64(self.core.term()));
        s.leader.set(as_i64(self.core.leader().unwrap_or(0)));
        s.commit_index.set(as_i64(self.core.commit_index()));
        s.applied_index.set(as_i64(self.applied_index));
        s.last_index.set(as_i64(self.core.last_index()));
        s.persisted_index.set(as_i64(self.core.persisted_index()));
        s.log_start_index.set(as_i64(self.core.snapshot().index));
    }

    /// A tick: decides the health and publishes the per-peer view.
    pub(super) fn publish_health(&mut self) {
        self.silence.ticks += 1;
        let tick_ms = u64::try_from(self.cfg.tick.as_millis()).unwrap_or(u64::MAX);
        let stale_after_ticks = u64::from(self.cfg.election_ticks);
        let silence = &self.silence;
        let silent_ms = |peer: NodeId| silence.silent_ticks(peer).map(|t| t * tick_ms);
        let membership = self.core.membership();
        let health = Health::decide(&HealthView {
            me: self.cfg.id,
            role: self.core.role(),
            leader: self.core.leader(),
            membership,
            silent_ms: &silent_ms,
            stale_after_ms: stale_after_ticks * tick_ms,
        });
        let members = membership.members();
        // A leader hears from every member; anyone else only from its leader.
        let leading = self.core.role() == Role::Leader;
        let leader = self.core.leader();
        let peers: Vec<PeerStatus> = members
            .into_iter()
            .filter(|&id| id != self.cfg.id)
            .map(|id| PeerStatus {
                id,
                reachable: (leading || Some(id) == leader).then(|| {
                    silence
                        .silent_ticks(id)
                        .is_some_and(|t| t <= stale_after_ticks)
                }),
                match_index: self.core.peer_progress(id).map(|p| p.match_index),
            })
            .collect();
        if self.range != kv::ranges::FIRST_RANGE {
            return;
        }
        let status = &self.cfg.metrics.status;
        if let Ok(mut h) = status.health.lock() {
            *h = health;
        }
        if let Ok(mut p) = status.peers.lock() {
            *p = peers;
        }
    }
}
