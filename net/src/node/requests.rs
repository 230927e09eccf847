//! A group's client requests between arrival and answer: writes waiting for their entry to be
//! applied (by kv's `(client_id, seq)`), reads waiting for the core to confirm them and then for
//! the apply worker, and requests parked while no leader is known.

use std::collections::BTreeMap;

use bytes::Bytes;
use kv::CommandResult;
use raft_core::{Index, ProposeError, Proposed, Term};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::request::{ClientRequest, ReadOp, ReadResult, RequestError};

/// How many requests may wait for a leader at once; beyond that they are refused at once.
const MAX_PARKED: usize = 65_536;

/// A client's write, as the applied entry's result names it: kv's `(client_id, seq)`.
pub type WriteKey = (u64, u64);

pub type WriteReply = oneshot::Sender<Result<CommandResult, RequestError>>;
pub type ReadReply = oneshot::Sender<Result<ReadResult, RequestError>>;

struct WriteWaiter {
    reply: WriteReply,
    deadline: Instant,
}

/// A proposed write and the clients waiting for its result.
#[derive(Default)]
struct PendingWrite {
    waiters: Vec<WriteWaiter>,
    /// What to propose again if a new term begins before it is applied; only for writes of a
    /// client session, whose copies the state machine applies once.
    retry: Option<Retry>,
    /// Whether it may be in the log without this node seeing its result: this node appended
    /// it as leader (a later leader may commit it), or a snapshot that may cover it was
    /// installed. A write only ever forwarded is known not applied once this node has applied
    /// the entry removing it, since leaders refuse what a removed server forwards.
    outcome_unknown: bool,
}

struct Retry {
    payload: Bytes,
    /// The term of the last proposal.
    term: Term,
}

/// A read the core has been asked to confirm, or has confirmed.
pub struct PendingRead {
    pub op: ReadOp,
    pub reply: ReadReply,
    deadline: Instant,
}

/// A request that arrived while no leader was known, waiting for an election to end.
pub struct ParkedRequest {
    pub req: ClientRequest,
    pub deadline: Instant,
}

/// The read context handed to the core with a read (`read_index`) and given back in its
/// `ReadState`: the read's id, big-endian. Encoded and decoded only here.
mod read_context {
    use bytes::Bytes;

    pub fn encode(read_id: u64) -> Bytes {
        Bytes::copy_from_slice(&read_id.to_be_bytes())
    }

    pub fn decode(ctx: &[u8]) -> Option<u64> {
        Some(u64::from_be_bytes(ctx.try_into().ok()?))
    }
}

/// Where a confirmed read goes next.
pub enum ConfirmedRead {
    /// Its index is already handed to the apply worker: queue it there now.
    Serve(PendingRead),
    /// It waits for entries up to its index to be handed out ([`Requests::release_reads_up_to`]).
    Waiting,
    /// Unknown or already answered (timed out, or a term changed).
    Gone,
}

#[derive(Default)]
pub struct Requests {
    writes: BTreeMap<WriteKey, PendingWrite>,
    reads: BTreeMap<u64, PendingRead>,
    /// Confirmed reads waiting for the apply worker to be handed their index.
    reads_waiting_for_apply: BTreeMap<Index, Vec<PendingRead>>,
    /// Requests that came while no leader was known (a cluster starting, an election): they
    /// are submitted when one is, or refused with TRYAGAIN at their deadline.
    parked: Vec<ParkedRequest>,
    next_read_id: u64,
}

impl Requests {
    /// Whether a request the core refused with `e` may succeed once an election ends, and
    /// there is room to park it.
    /// A leader handing its leadership over refuses proposals for a moment: they wait for
    /// the new leader, to whom they are then forwarded, rather than send the client round the
    /// cluster.
    pub fn worth_parking(&self, e: &ProposeError) -> bool {
        matches!(
            e,
            ProposeError::NotLeader { leader_hint: None }
                | ProposeError::TransferringLeadership { .. }
        ) && self.parked.len() < MAX_PARKED
    }

    pub fn park(&mut self, req: ClientRequest, deadline: Instant) {
        self.parked.push(ParkedRequest { req, deadline });
    }

    pub fn has_parked(&self) -> bool {
        !self.parked.is_empty()
    }

    /// The parked requests, to submit now that a leader is known.
    pub fn take_parked(&mut self) -> Vec<ParkedRequest> {
        std::mem::take(&mut self.parked)
    }

    /// A write was proposed in `term`: its reply waits for the entry's result. `retry` is the
    /// proposal's payload if it may be proposed again ([`Requests::writes_to_propose_again`]).
    pub fn track_write(
        &mut self,
        key: WriteKey,
        proposed: &Proposed,
        retry: Option<(Bytes, Term)>,
        reply: WriteReply,
        deadline: Instant,
    ) {
        let pending = self.writes.entry(key).or_default();
        pending.waiters.push(WriteWaiter { reply, deadline });
        pending.outcome_unknown |= matches!(proposed, Proposed::Appended { .. });
        if let Some((payload, term)) = retry {
            pending.retry = Some(Retry { payload, term });
        }
    }

    /// A leader is known in `term`: the session writes last proposed in an earlier term, to
    /// propose again. A proposal forwarded to a leader that died, or appended by one and then
    /// overwritten, is lost, and its client would otherwise wait out its timeout; a copy that
    /// was not lost is harmless, since the state machine applies a session's sequence number
    /// once. Writes without a session are never proposed twice: a second copy would apply
    /// twice.
    pub fn writes_to_propose_again(&mut self, term: Term) -> Vec<(WriteKey, Bytes)> {
        let mut again = Vec::new();
        for (key, pending) in &mut self.writes {
            if let Some(retry) = pending.retry.as_mut().filter(|r| r.term < term) {
                retry.term = term;
                again.push((*key, retry.payload.clone()));
            }
        }
        again
    }

    /// The write `key` was proposed again ([`Requests::writes_to_propose_again`]).
    pub fn proposed_again(&mut self, key: WriteKey, proposed: &Proposed) {
        if let Some(pending) = self.writes.get_mut(&key) {
            pending.outcome_unknown |= matches!(proposed, Proposed::Appended { .. });
        }
    }

    /// A snapshot was installed: it may hold writes still waiting here, whose entries this
    /// node will then never apply.
    pub fn snapshot_installed(&mut self) {
        for pending in self.writes.values_mut() {
            pending.outcome_unknown = true;
        }
    }

    /// Entries were applied: answers the writes waiting for these results.
    pub fn writes_applied(&mut self, results: Vec<(WriteKey, CommandResult)>) {
        for (key, result) in results {
            let pending = self.writes.remove(&key).unwrap_or_default();
            for waiter in pending.waiters {
                let _ = waiter.reply.send(Ok(result.clone()));
            }
        }
    }

    /// The context to hand the core with the next read, and the id to track it by.
    pub fn next_read(&mut self) -> (u64, Bytes) {
        self.next_read_id += 1;
        (self.next_read_id, read_context::encode(self.next_read_id))
    }

    /// The core was asked to confirm read `id`.
    pub fn track_read(&mut self, id: u64, op: ReadOp, reply: ReadReply, deadline: Instant) {
        self.reads.insert(
            id,
            PendingRead {
                op,
                reply,
                deadline,
            },
        );
    }

    /// When the read of context `ctx` times out (its arrival plus the request timeout).
    pub fn read_deadline(&self, ctx: &[u8]) -> Option<Instant> {
        read_context::decode(ctx).and_then(|id| self.reads.get(&id).map(|r| r.deadline))
    }

    /// The core confirmed the read of context `ctx` at `index`; entries up to `handed_out`
    /// are with the apply worker.
    pub fn read_confirmed(&mut self, ctx: &[u8], index: Index, handed_out: Index) -> ConfirmedRead {
        let Some(read) = read_context::decode(ctx).and_then(|id| self.reads.remove(&id)) else {
            return ConfirmedRead::Gone;
        };
        if index <= handed_out {
            return ConfirmedRead::Serve(read);
        }
        self.reads_waiting_for_apply
            .entry(index)
            .or_default()
            .push(read);
        ConfirmedRead::Waiting
    }

    /// The confirmed reads whose index is now handed to the apply worker.
    pub fn release_reads_up_to(&mut self, index: Index) -> impl Iterator<Item = PendingRead> {
        let still_waiting = self
            .reads_waiting_for_apply
            .split_off(&index.saturating_add(1));
        std::mem::replace(&mut self.reads_waiting_for_apply, still_waiting)
            .into_values()
            .flatten()
    }

    /// The term changed: reads in flight under the old one can no longer be confirmed. They
    /// are side-effect free, so the client may retry them at once.
    pub fn leadership_changed(&mut self) {
        for (_, read) in std::mem::take(&mut self.reads) {
            let _ = read
                .reply
                .send(Err(RequestError::TryAgain("leadership changed".into())));
        }
    }

    /// Answers every request whose deadline has passed.
    pub fn expire(&mut self, now: Instant) {
        for parked in self.parked.extract_if(.., |p| p.deadline <= now) {
            parked
                .req
                .refuse("no leader was elected within the request timeout");
        }
        for pending in self.writes.values_mut() {
            for w in pending.waiters.extract_if(.., |w| w.deadline <= now) {
                let _ = w.reply.send(Err(RequestError::Timeout(
                    "no outcome within the request timeout".into(),
                )));
            }
        }
        self.writes.retain(|_, w| !w.waiters.is_empty());
        let expired: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            if let Some(r) = self.reads.remove(&id) {
                let _ = r.reply.send(Err(RequestError::TryAgain(
                    "the read could not be confirmed in time".into(),
                )));
            }
        }
    }

    /// This node was removed and has applied all it will ever learn. A write it only
    /// forwarded was refused by the leader if it came after the removal, so it is answered
    /// REMOVED (not applied: retry on another member). One whose outcome is unknown (see
    /// `PendingWrite::outcome_unknown`) is answered TIMEOUT, and the reads TRYAGAIN.
    pub fn answer_all_as_removed(&mut self) {
        const UNKNOWN: &str =
            "this node was removed from the cluster before it learned the outcome";
        const NOT_APPLIED: &str =
            "this node was removed from the cluster; the write was not applied";
        for pending in std::mem::take(&mut self.writes).into_values() {
            for w in pending.waiters {
                let _ = w.reply.send(Err(if pending.outcome_unknown {
                    RequestError::Timeout(UNKNOWN.into())
                } else {
                    RequestError::Removed(NOT_APPLIED.into())
                }));
            }
        }
        for r in std::mem::take(&mut self.reads).into_values() {
            let _ = r.reply.send(Err(RequestError::TryAgain(UNKNOWN.into())));
        }
    }

    /// The node stops: every request still waiting is answered.
    pub fn shut_down(self) {
        const WHY: &str = "the node is shutting down";
        for w in self.writes.into_values().flat_map(|w| w.waiters) {
            let _ = w.reply.send(Err(RequestError::Timeout(WHY.into())));
        }
        for r in self.reads.into_values() {
            let _ = r.reply.send(Err(RequestError::TryAgain(WHY.into())));
        }
        for parked in self.parked {
            parked.req.refuse(WHY);
        }
        for r in self.reads_waiting_for_apply.into_values().flatten() {
            let _ = r.reply.send(Err(RequestError::TryAgain(WHY.into())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(
        requests: &mut Requests,
    ) -> (Bytes, oneshot::Receiver<Result<ReadResult, RequestError>>) {
        let (id, ctx) = requests.next_read();
        let (tx, rx) = oneshot::channel();
        let deadline = Instant::now() + std::time::Duration::from_secs(60);
        requests.track_read(id, ReadOp::Get(Bytes::from_static(b"k")), tx, deadline);
        (ctx, rx)
    }

    #[test]
    fn a_confirmed_read_waits_for_its_index_to_be_handed_to_the_apply_worker() {
        let mut requests = Requests::default();
        let (early, _) = read(&mut requests);
        let (late, _) = read(&mut requests);
        assert!(matches!(
            requests.read_confirmed(&early, 5, 5),
            ConfirmedRead::Serve(_)
        ));
        assert!(matches!(
            requests.read_confirmed(&late, 9, 5),
            ConfirmedRead::Waiting
        ));
        assert!(matches!(
            requests.read_confirmed(&late, 9, 9),
            ConfirmedRead::Gone
        ));
        assert_eq!(requests.release_reads_up_to(8).count(), 0);
        assert_eq!(requests.release_reads_up_to(9).count(), 1);
        assert!(matches!(
            requests.read_confirmed(b"garbage", 1, 9),
            ConfirmedRead::Gone
        ));
    }

    #[test]
    fn a_term_change_answers_unconfirmed_reads_with_tryagain() {
        let mut requests = Requests::default();
        let (_, mut answer) = read(&mut requests);
        requests.leadership_changed();
        assert!(matches!(
            answer.try_recv(),
            Ok(Err(RequestError::TryAgain(_)))
        ));
    }

    #[test]
    fn session_writes_of_an_earlier_term_are_proposed_again_once_per_term() {
        let mut requests = Requests::default();
        let deadline = Instant::now() + std::time::Duration::from_secs(60);
        let session = Bytes::from_static(b"session write");
        let (tx, _session_answer) = oneshot::channel();
        requests.track_write((7, 1), &FORWARDED, Some((session.clone(), 3)), tx, deadline);
        let (tx, _sessionless_answer) = oneshot::channel();
        requests.track_write((0, 99), &FORWARDED, None, tx, deadline);
        assert!(
            requests.writes_to_propose_again(3).is_empty(),
            "proposed in this term"
        );
        assert_eq!(
            requests.writes_to_propose_again(4),
            vec![((7, 1), session.clone())]
        );
        assert!(
            requests.writes_to_propose_again(4).is_empty(),
            "once per term"
        );
        requests.writes_applied(vec![((7, 1), CommandResult::Ok)]);
        assert!(
            requests.writes_to_propose_again(5).is_empty(),
            "applied: nothing left to propose"
        );
    }

    const FORWARDED: Proposed = Proposed::Forwarded { to: 2 };

    fn write(
        requests: &mut Requests,
        key: WriteKey,
        proposed: &Proposed,
    ) -> oneshot::Receiver<Result<CommandResult, RequestError>> {
        let (tx, rx) = oneshot::channel();
        let deadline = Instant::now() + std::time::Duration::from_secs(60);
        requests.track_write(key, proposed, None, tx, deadline);
        rx
    }

    #[test]
    fn a_removed_node_says_not_applied_only_for_writes_it_only_forwarded() {
        let mut requests = Requests::default();
        let mut forwarded = write(&mut requests, (1, 1), &FORWARDED);
        let appended = Proposed::Appended {
            first: 9,
            last: 9,
            term: 3,
        };
        let mut appended_here = write(&mut requests, (1, 2), &appended);
        let mut forwarded_again_appended = write(&mut requests, (1, 3), &FORWARDED);
        requests.proposed_again((1, 3), &appended);
        requests.answer_all_as_removed();
        assert!(matches!(
            forwarded.try_recv(),
            Ok(Err(RequestError::Removed(_)))
        ));
        assert!(matches!(
            appended_here.try_recv(),
            Ok(Err(RequestError::Timeout(_)))
        ));
        assert!(matches!(
            forwarded_again_appended.try_recv(),
            Ok(Err(RequestError::Timeout(_)))
        ));

        let mut covered = write(&mut requests, (1, 4), &FORWARDED);
        requests.snapshot_installed();
        requests.answer_all_as_removed();
        assert!(
            matches!(covered.try_recv(), Ok(Err(RequestError::Timeout(_)))),
            "a snapshot may have applied it"
        );
    }
}
