//! What an operator reads when a peer cannot be reached: one warning once the peer has been
//! out of reach for [`GRACE`] (a node started a moment after its peers is not news), a reminder
//! every [`REMINDER`] while it stays so, and a line when it is back. The outbound task of each
//! peer keeps one of these; every failed attempt to connect or write is reported to it.

use tokio::time::{Duration, Instant};

use raft_core::NodeId;

/// How long a peer may be out of reach before it is worth a warning.
pub const GRACE: Duration = Duration::from_secs(2);

/// How often a peer still out of reach is mentioned again.
pub const REMINDER: Duration = Duration::from_secs(60);

/// One peer's reachability as this node's outbound task sees it.
#[derive(Debug)]
pub struct PeerReachability {
    peer: NodeId,
    addr: String,
    /// When the current stretch out of reach began; `None` while connected.
    down_since: Option<Instant>,
    /// When a warning about the current stretch was last written.
    warned_at: Option<Instant>,
}

/// What the tracker decided to say, for tests and for the log.
#[derive(Debug, PartialEq, Eq)]
pub enum Said {
    Nothing,
    Unreachable { for_secs: u64 },
    Back { after_secs: u64 },
}

impl PeerReachability {
    pub fn new(peer: NodeId, addr: &str) -> Self {
        Self {
            peer,
            addr: addr.to_string(),
            down_since: None,
            warned_at: None,
        }
    }

    /// An attempt to connect or to write failed with `why`.
    pub fn failed(&mut self, now: Instant, why: &str) -> Said {
        let since = *self.down_since.get_or_insert(now);
        let due = match self.warned_at {
            None => now.duration_since(since) >= GRACE,
            Some(at) => now.duration_since(at) >= REMINDER,
        };
        if !due {
            return Said::Nothing;
        }
        self.warned_at = Some(now);
        let for_secs = now.duration_since(since).as_secs();
        tracing::warn!(
            peer = self.peer,
            addr = %self.addr,
            for_secs,
            error = why,
            "peer unreachable"
        );
        Said::Unreachable { for_secs }
    }

    /// A connection to the peer is up.
    pub fn connected(&mut self, now: Instant) -> Said {
        let since = self.down_since.take();
        let warned = self.warned_at.take();
        match (since, warned) {
            (Some(since), Some(_)) => {
                let after_secs = now.duration_since(since).as_secs();
                tracing::warn!(
                    peer = self.peer,
                    addr = %self.addr,
                    after_secs,
                    "peer reachable again"
                );
                Said::Back { after_secs }
            }
            _ => Said::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_reported_after_the_grace_then_rarely_then_when_back() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut p = PeerReachability::new(2, "127.0.0.1:7102");
        assert_eq!(p.failed(at(0), "refused"), Said::Nothing);
        assert_eq!(p.failed(at(1_000), "refused"), Said::Nothing);
        assert_eq!(
            p.failed(at(2_000), "refused"),
            Said::Unreachable { for_secs: 2 }
        );
        assert_eq!(p.failed(at(3_000), "refused"), Said::Nothing);
        assert_eq!(p.failed(at(61_000), "refused"), Said::Nothing);
        assert_eq!(
            p.failed(at(62_000), "refused"),
            Said::Unreachable { for_secs: 62 }
        );
        assert_eq!(p.connected(at(70_000)), Said::Back { after_secs: 70 });
        // Back to normal: a short blip later is not worth a line.
        assert_eq!(p.failed(at(80_000), "reset"), Said::Nothing);
        assert_eq!(p.connected(at(80_500)), Said::Nothing);
        assert_eq!(p.failed(at(90_000), "reset"), Said::Nothing);
    }
}
