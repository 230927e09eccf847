//! What the single-core tests share: a node fed by hand with the timing features off (so that
//! every step the test takes is the only thing that happens), a message builder, and a drain
//! that reports every write durable at once, as an instant disk would.

#![allow(dead_code)] // each test file uses its own subset

use raft_core::{Config, Message, MessageBody, RawNode, Ready};

/// Node `id` of a cluster of `voters`, with pre-vote and check-quorum off.
pub fn node(id: u64, voters: &[u64]) -> RawNode {
    let mut cfg = Config::new(id, voters.to_vec());
    cfg.pre_vote = false;
    cfg.check_quorum = false;
    RawNode::new(cfg).expect("valid config")
}

/// A message from `from` to `to` in `term`.
pub fn msg(from: u64, to: u64, term: u64, body: MessageBody) -> Message {
    Message {
        from,
        to,
        term,
        body,
    }
}

/// Reports the `Ready`'s writes durable (the snapshot write first, as the contract orders).
pub fn persist_all(n: &mut RawNode, rd: &Ready) {
    if let Some(w) = &rd.snapshot_write {
        n.on_persisted(w.id);
    }
    if let Some(p) = &rd.persist {
        n.on_persisted(p.id);
    }
}

/// Takes every `Ready` there is, reporting each one's writes durable, and returns them.
pub fn drain(n: &mut RawNode) -> Vec<Ready> {
    let mut out = Vec::new();
    while n.has_ready() {
        let rd = n.take_ready();
        persist_all(n, &rd);
        out.push(rd);
    }
    out
}
