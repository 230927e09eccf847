//! Who the far end of an inbound peer connection may speak for. With mutual TLS between peers
//! the cluster CA vouches for a certificate, and the certificate names one member with the DNS
//! name `node-N.kvstore.internal`; every member id a frame claims (a hello, a Raft message, a
//! snapshot or join request, a bootstrap probe) must be one its connection's certificate names,
//! else a node holding any certificate of the CA could speak as any other member.
//!
//! Refusals are logged once per peer and reason, not once per connection: a refused peer
//! reconnects as often as it has something to say. Every refusal is counted
//! (`kvstore_peer_connections_refused_total`).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use raft_core::NodeId;

use crate::metrics::NodeMetrics;

use crate::tls::node_dns_name as member_dns_name;

/// What an inbound peer connection's certificate says about it.
#[derive(Clone, Debug)]
pub enum PeerIdentity {
    /// The network does not authenticate peers (plain TCP, the simulator): any claim stands.
    Unauthenticated,
    /// A certificate the cluster CA signed, verified in the handshake, with its DNS names.
    Certified {
        dns_names: Arc<[String]>,
        refusals: Arc<PeerRefusals>,
    },
}

impl PeerIdentity {
    /// Whether the connection may speak for member `id`. A wildcard name names nobody: it would
    /// let its holder claim to be any member.
    pub fn names_member(&self, id: NodeId) -> bool {
        match self {
            PeerIdentity::Unauthenticated => true,
            PeerIdentity::Certified { dns_names, .. } => {
                let expected = member_dns_name(id);
                dns_names.iter().any(|n| n.eq_ignore_ascii_case(&expected))
            }
        }
    }

    /// [`Self::names_member`]; a refusal is counted, and logged the first time for this claim
    /// and these names.
    pub fn admits(&self, claimed: NodeId, remote: &str) -> bool {
        if self.names_member(claimed) {
            return true;
        }
        if let PeerIdentity::Certified {
            dns_names,
            refusals,
        } = self
        {
            let named = members_named(dns_names);
            let why = format!(
                "its certificate names {named}, but it claims to be member {claimed} (expected \
                 the name {})",
                member_dns_name(claimed)
            );
            refusals.refuse(
                Refusal::Identity,
                &format!("{claimed} {named}"),
                remote,
                &why,
            );
        }
        false
    }
}

/// The member names among a certificate's DNS names, for a log line.
fn members_named(dns_names: &[String]) -> String {
    let members: Vec<&str> = dns_names
        .iter()
        .map(String::as_str)
        .filter(|n| n.ends_with(".kvstore.internal"))
        .collect();
    if members.is_empty() {
        "no member (no DNS name node-N.kvstore.internal)".into()
    } else {
        members.join(", ")
    }
}

/// Why an inbound peer connection was refused, as counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The TLS handshake failed: no certificate, one of another CA, not TLS at all, or none
    /// within the handshake timeout.
    Handshake = 0,
    /// The certificate does not name the member a frame claims.
    Identity = 1,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        crate::metrics::PEER_REFUSALS[self as usize]
    }
}

/// How many (peer, reason) pairs are remembered as logged; past that, refusals are counted
/// but no longer logged, so that a flood of distinct hostile peers cannot grow the set.
const MAX_LOGGED: usize = 1024;

/// Counts refused peer connections and logs each peer's reason once.
#[derive(Debug)]
pub struct PeerRefusals {
    metrics: Arc<NodeMetrics>,
    logged: Mutex<BTreeSet<(u8, String)>>,
}

impl PeerRefusals {
    pub fn new(metrics: Arc<NodeMetrics>) -> Self {
        Self {
            metrics,
            logged: Mutex::new(BTreeSet::new()),
        }
    }

    /// Counts a refusal of the connection from `remote`; logs `why` the first time `peer` (who
    /// the refused peer is, as far as known) is refused for this reason.
    pub fn refuse(&self, kind: Refusal, peer: &str, remote: &str, why: &str) {
        self.metrics.peer_connections_refused[kind as usize].inc();
        let first = {
            let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
            logged.len() < MAX_LOGGED && logged.insert((kind as u8, peer.to_string()))
        };
        if first {
            tracing::warn!(
                %remote,
                reason = kind.label(),
                "refusing peer connections from {remote}: {why} (logged once per peer; \
                 counted in kvstore_peer_connections_refused_total)"
            );
        }
    }

    /// Refusals counted so far, of each kind.
    pub fn counted(&self, kind: Refusal) -> u64 {
        self.metrics.peer_connections_refused[kind as usize].get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certified(names: &[&str]) -> (PeerIdentity, Arc<PeerRefusals>) {
        let refusals = Arc::new(PeerRefusals::new(Arc::new(NodeMetrics::new(
            std::path::PathBuf::new(),
        ))));
        let identity = PeerIdentity::Certified {
            dns_names: names.iter().map(|n| n.to_string()).collect(),
            refusals: refusals.clone(),
        };
        (identity, refusals)
    }

    #[test]
    fn a_certificate_speaks_only_for_the_member_it_names() {
        let (node2, refusals) = certified(&["localhost", "node-2.kvstore.internal", "10.0.0.2"]);
        assert!(node2.admits(2, "10.0.0.2:5000"));
        assert!(!node2.admits(3, "10.0.0.2:5000"), "member 2 claiming 3");
        assert!(
            !node2.admits(22, "10.0.0.2:5000"),
            "a prefix is not the name"
        );
        assert!(!node2.admits(0, "10.0.0.2:5000"));
        assert_eq!(refusals.counted(Refusal::Identity), 3);
        let (upper, _) = certified(&["NODE-7.KVSTORE.INTERNAL"]);
        assert!(upper.names_member(7), "DNS names compare without case");
        let (wildcard, _) = certified(&["*.kvstore.internal"]);
        assert!(!wildcard.names_member(1), "a wildcard names nobody");
        let (none, _) = certified(&[]);
        assert!(!none.names_member(1));
        assert!(PeerIdentity::Unauthenticated.admits(3, "sim"));
    }

    #[test]
    fn refusals_are_counted_every_time_and_remembered_within_a_bound() {
        let (_, refusals) = certified(&[]);
        for i in 0..(MAX_LOGGED + 10) {
            refusals.refuse(Refusal::Handshake, &format!("10.0.0.{i}"), "r", "why");
            refusals.refuse(Refusal::Handshake, &format!("10.0.0.{i}"), "r", "why");
        }
        assert_eq!(
            refusals.counted(Refusal::Handshake),
            2 * (MAX_LOGGED as u64 + 10)
        );
        assert_eq!(refusals.logged.lock().unwrap().len(), MAX_LOGGED);
    }
}
