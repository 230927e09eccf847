//! The group's view of the cluster's members: where each one is (the address book), which
//! peers have an outbound queue (they follow the configuration), and whether this node was
//! removed.
//!
//! **The address book** starts from the member table the state machine applied (and, for ids
//! it does not name, the command line), then takes the context of every conf-change entry as
//! it is APPENDED to the log (a `Ready`'s write, or the log found at restart): the leader must
//! reach a member added by an entry that is not applied yet. Each address remembers the log
//! index it came from, so an older source never overwrites a newer one (the applied table at
//! index 90 does not undo an address change appended at 100); the command line counts as
//! index 0.
//!
//! **Outbound peers** follow the configuration in force (`core.membership()`, the last
//! appended one) joined with the applied one: a queue and task for every member of either with
//! a known peer address, started when a member appears or moves, stopped (its queue dropped)
//! once its removal is APPLIED. A member removed by an entry that is only appended must still
//! hear this node: a leader removing itself needs the acknowledgements of the entry that
//! removes it to commit it, and only then steps down. A node in no configuration yet (waiting
//! to be added) talks to every address it knows, since it must answer a leader it cannot name
//! from its configuration.
//!
//! **A removed node** (its configuration in force no longer lists it: the leader replicates to
//! a removed member until it holds the entry that removed it) answers clients with an error
//! that says so; the core keeps it from campaigning.

use std::collections::{BTreeMap, BTreeSet};

use std::time::Duration;

use kv::{MemberAddrs, MemberContext, MemberTable};
use raft_core::{ConfChangeEntry, Entry, EntryKind, Index, Membership, NodeId};
use tokio::sync::{mpsc, watch};

use super::config::NodeConfig;
use crate::error::NodeError;
use crate::join::{self, JoinAnswer};
use crate::transport::{Net, RangeMessage};

/// How long a node started with `--join` keeps asking before it gives up: the entry adding it
/// may still be on its way to the member it asks.
const JOIN_WAIT: Duration = Duration::from_secs(10);
const JOIN_ASK_TIMEOUT: Duration = Duration::from_secs(2);
const JOIN_RETRY: Duration = Duration::from_millis(200);

/// Starts the outbound task of one peer at one address, returning its queue.
pub type PeerSpawner = Box<dyn Fn(NodeId, String) -> mpsc::Sender<RangeMessage> + Send + Sync>;

/// What a client of a removed node is told.
pub const REMOVED: &str =
    "this node was removed from the cluster; send requests to the cluster's other members";

struct Outbound {
    addr: String,
    queue: mpsc::Sender<RangeMessage>,
}

pub struct Members {
    me: NodeId,
    /// Every known member address, with the log index it is as of.
    book: BTreeMap<NodeId, (Index, MemberAddrs)>,
    /// The table as the state machine applied it.
    applied: MemberTable,
    outbound: BTreeMap<NodeId, Outbound>,
    spawn: PeerSpawner,
    /// The configuration in force with the known addresses, for join requests.
    published: watch::Sender<MemberTable>,
    /// The configuration in force outbound peers last followed, and whether an address or the
    /// applied configuration changed since.
    followed: Option<Membership>,
    book_changed: bool,
}

impl Members {
    /// The book from the applied table at `applied_index`, then the command line for ids the
    /// table does not name.
    pub fn new(
        me: NodeId,
        applied: MemberTable,
        applied_index: Index,
        command_line: BTreeMap<NodeId, MemberAddrs>,
        spawn: PeerSpawner,
        published: watch::Sender<MemberTable>,
    ) -> Self {
        let mut members = Self {
            me,
            book: command_line
                .into_iter()
                .map(|(id, a)| (id, (0, a)))
                .collect(),
            applied: MemberTable::default(),
            outbound: BTreeMap::new(),
            spawn,
            published,
            followed: None,
            book_changed: true,
        };
        // Nothing was applied before: no member has left.
        let _ = members.note_applied(applied, applied_index);
        members
    }

    /// A receiver of the configuration in force with its addresses (answers join requests).
    #[cfg(test)]
    pub fn subscribe(&self) -> watch::Receiver<MemberTable> {
        self.published.subscribe()
    }

    /// The state machine applied up to `index`, where the table is `table`. Returns the ids
    /// the applied configuration no longer lists (removed members).
    pub fn note_applied(&mut self, table: MemberTable, index: Index) -> Vec<NodeId> {
        for (id, addrs) in &table.addrs {
            self.learn(*id, index, addrs);
        }
        let left = self
            .applied
            .membership
            .members()
            .into_iter()
            .filter(|id| !table.membership.contains(*id))
            .collect();
        if table.membership != self.applied.membership {
            self.book_changed = true;
        }
        self.applied = table;
        left
    }

    /// Entries were appended to the log: takes the addresses their conf changes carry (the
    /// configurations themselves the core keeps).
    pub fn note_appended(&mut self, entries: &[Entry]) {
        for e in entries.iter().filter(|e| e.kind == EntryKind::ConfChange) {
            let Ok(cc) = ConfChangeEntry::decode(&e.payload) else {
                continue;
            };
            if cc.context.is_empty() {
                continue;
            }
            match MemberContext::decode(&cc.context) {
                Ok(ctx) => {
                    for (id, addrs) in &ctx.addrs {
                        self.learn(*id, e.index, addrs);
                    }
                }
                Err(err) => {
                    tracing::warn!(index = e.index, error = %err, "conf change with undecodable addresses")
                }
            }
        }
    }

    /// Takes the peer address a peer gave in its hello, for an id the book has no address for
    /// (as of index 0: the log and the applied table override it).
    pub fn learn_introduced(&mut self, id: NodeId, peer_addr: String) {
        if !self.knows_peer_addr(id) {
            tracing::info!(peer = id, addr = %peer_addr, "learned a peer's address from its hello");
            self.learn(id, 0, &MemberAddrs::new(peer_addr, ""));
        }
    }

    /// Takes the fields `addrs` knows unless the book has them from a later index.
    fn learn(&mut self, id: NodeId, index: Index, addrs: &MemberAddrs) {
        let (known_at, known) = self.book.entry(id).or_default();
        if *known_at > index {
            return;
        }
        *known_at = index;
        self.book_changed = true;
        if !addrs.peer_addr.is_empty() {
            known.peer_addr = addrs.peer_addr.clone();
        }
        if !addrs.client_addr.is_empty() {
            known.client_addr = addrs.client_addr.clone();
        }
    }

    /// [`Members::follow`] `in_force` (the core's configuration), if it, the applied one or an
    /// address changed since the last time.
    pub fn maybe_follow(&mut self, in_force: &Membership) {
        if self.book_changed || self.followed.as_ref() != Some(in_force) {
            self.follow(in_force);
        }
    }

    /// Starts and stops outbound peers so that they follow `membership` (the configuration in
    /// force) and the applied configuration, and republishes the configuration in force for
    /// join requests if it or an address changed.
    pub fn follow(&mut self, membership: &Membership) {
        self.book_changed = false;
        self.followed = Some(membership.clone());
        let wanted: BTreeSet<NodeId> = if membership.is_empty() {
            self.book.keys().copied().collect()
        } else {
            // Members whose removal is not applied yet stay: see the module's docs.
            membership
                .members()
                .into_iter()
                .chain(self.applied.membership.members())
                .collect()
        };
        let mut targets = BTreeMap::new();
        for id in wanted.into_iter().filter(|&id| id != self.me) {
            match self.book.get(&id) {
                Some((_, a)) if !a.peer_addr.is_empty() => {
                    targets.insert(id, a.peer_addr.clone());
                }
                _ => {}
            }
        }
        // Dropping a queue ends its task.
        self.outbound
            .retain(|id, out| targets.get(id).is_some_and(|addr| *addr == out.addr));
        for (id, addr) in targets {
            if !self.outbound.contains_key(&id) {
                tracing::info!(peer = id, %addr, "connecting to member");
                let queue = (self.spawn)(id, addr.clone());
                self.outbound.insert(id, Outbound { addr, queue });
            }
        }
        let view = MemberTable {
            membership: membership.clone(),
            addrs: self
                .book
                .iter()
                .filter(|(id, _)| membership.contains(**id))
                .map(|(id, (_, a))| (*id, a.clone()))
                .collect(),
        };
        self.published.send_if_modified(|current| {
            let changed = *current != view;
            if changed {
                *current = view;
            }
            changed
        });
    }

    /// The queue of peer `to`: one this node talks to, or, if its address is known, a new one.
    /// The core sends to peers outside the configuration too: a removed member until it holds
    /// the entry that removed it, a removed node's vote requests answered. Such a queue lasts
    /// until the next change of the configuration or the book.
    pub fn queue(&mut self, to: NodeId) -> Option<&mpsc::Sender<RangeMessage>> {
        if !self.outbound.contains_key(&to) && to != self.me {
            let addr = self.peer_addr(to)?;
            let queue = (self.spawn)(to, addr.clone());
            self.outbound.insert(to, Outbound { addr, queue });
        }
        self.outbound.get(&to).map(|o| &o.queue)
    }

    /// Where member `id` listens for peers, if known.
    pub fn peer_addr(&self, id: NodeId) -> Option<String> {
        self.book
            .get(&id)
            .map(|(_, a)| a.peer_addr.clone())
            .filter(|a| !a.is_empty())
    }

    /// Whether the book has a peer address for `id` (asked per message sent: no copy).
    pub fn knows_peer_addr(&self, id: NodeId) -> bool {
        self.book
            .get(&id)
            .is_some_and(|(_, a)| !a.peer_addr.is_empty())
    }

    /// Where member `id` takes client requests, if known.
    pub fn client_addr(&self, id: NodeId) -> Option<String> {
        self.book
            .get(&id)
            .map(|(_, a)| a.client_addr.clone())
            .filter(|a| !a.is_empty())
    }

    /// Whether `in_force` (the core's configuration) no longer lists this node: its log holds
    /// the entry that removed it. That entry may not be committed yet, and a new leader may
    /// still overwrite it; the node then serves again (a refusal in between is harmless).
    pub fn is_removed(&self, in_force: &Membership) -> bool {
        !in_force.is_empty() && !in_force.contains(self.me)
    }

    /// Member `id`'s addresses, if known.
    pub fn addrs(&self, id: NodeId) -> Option<&MemberAddrs> {
        self.book.get(&id).map(|(_, a)| a)
    }

    /// Every known address (for `member list` and status).
    pub fn addresses(&self) -> BTreeMap<NodeId, MemberAddrs> {
        self.book
            .iter()
            .map(|(id, (_, a))| (*id, a.clone()))
            .collect()
    }
}

/// The member table of a new cluster: every `--peers` member a voter, with the client addresses
/// the command line gives.
pub fn founding_table(cfg: &NodeConfig) -> MemberTable {
    MemberTable::founding(
        cfg.peers
            .iter()
            .map(|(id, peer)| {
                let client = cfg.client_addrs.get(id).cloned().unwrap_or_default();
                (*id, MemberAddrs::new(peer.clone(), client))
            })
            .collect(),
    )
}

/// The command line's addresses, for ids the data directory does not name.
pub fn command_line_book(cfg: &NodeConfig) -> BTreeMap<NodeId, MemberAddrs> {
    founding_table(cfg).addrs
}

/// Asks the `--join` members for the cluster id and the member table, until one lists this node
/// as a learner. Refused (no retry) if the cluster lists it as a voter; refused after
/// [`JOIN_WAIT`] if none lists it or none answers.
pub async fn ask_to_join<N: Net>(net: &N, cfg: &NodeConfig) -> Result<JoinAnswer, NodeError> {
    let me = cfg.id;
    let deadline = tokio::time::Instant::now() + JOIN_WAIT;
    let (mut not_listed, mut failed) = (None, None);
    loop {
        for addr in &cfg.join {
            match join::ask(net, addr, me, JOIN_ASK_TIMEOUT).await {
                Ok(answer) => {
                    let m = &answer.members.membership;
                    if m.is_learner(me) {
                        return Ok(answer);
                    }
                    if m.is_voter(me) {
                        return Err(NodeError::Join(format!(
                            "cluster {} lists node {me} as a voter: a voter restarts only on its \
                             own data directory; if that is lost, remove the node \
                             (`kvstore member remove {me}`) and add it again as a new member \
                             (`kvstore member add {me} ...`)",
                            kv::ClusterIdText(answer.cluster_id)
                        )));
                    }
                    not_listed = Some(format!(
                        "cluster {} (asked at {addr}) does not list node {me}; its members \
                         are {:?}: add it first with `kvstore member add {me} --peer-addr ... \
                         --client-addr ...`",
                        kv::ClusterIdText(answer.cluster_id),
                        m.members()
                    ));
                }
                Err(e) => {
                    tracing::info!(%addr, error = %e, "asking to join failed");
                    failed = Some(format!("no member answered (last at {addr}: {e})"));
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            let why = not_listed.or(failed);
            return Err(NodeError::Join(
                why.unwrap_or_else(|| "no --join address given".into()),
            ));
        }
        tokio::time::sleep(JOIN_RETRY).await;
    }
}

#[cfg(test)]
mod tests;
