//! The search for a linearization of the operations of one key, or of a group of keys that
//! atomic operations tie together (see the parent module's docs): the problem laid out as lists,
//! the memo of explored and failed states, and the walk. The state is an array of `N`
//! registers, one per key of the group (a single key: `N = 1`).

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasherDefault;

use super::memo::{Bits, Failed, FxHasher, MemoKey};
use super::model::{Interner, Step, Val};
use crate::history::{show_value, Key, Observed, Op, Operation, Outcome, SetCond, Time};

/// The registers of a group of `N` keys.
pub(super) type State<const N: usize> = [Val; N];

/// One step on one register (by its index in the group).
pub(super) type Part = (u8, Step);

/// What an operation does to the registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Move {
    One(Part),
    /// An atomic operation: its parts are `Problem::atomic[i]`, applied in order, all or none.
    Many(u32),
}

/// The operations of a key or a group of keys, ready to search. Search ids: completed operations
/// `0..n_ok` and then the unknown ones, each group in invoke order. The expiry of a write with a
/// time to live is an unknown operation of its own, invoked with the write (its search id maps
/// to the write's index).
pub(super) struct Problem<const N: usize> {
    steps: Vec<Move>,
    atomic: Vec<Vec<Part>>,
    /// Search id -> index in the sorted operations of the key.
    pub(super) orig: Vec<usize>,
    invoke: Vec<Time>,
    /// Return times of the completed operations.
    complete: Vec<Time>,
    /// For an unknown operation, the previous unknown one with the very same step, if any.
    twin: Vec<Option<u32>>,
    /// A completed read of a value that nothing invoked before it returned could have written.
    impossible_read: Option<u32>,
    n_ok: usize,
    pub(super) interner: Interner,
    /// The completed operations' calls and returns in time order: node `1 + 2 id` is the call of
    /// `id`, `2 + 2 id` its return; node 0 is the head and `2 n_ok + 1` the tail.
    order: Vec<u32>,
}

const HEAD: u32 = 0;

pub(super) enum Search {
    Linearizable { steps: u64 },
    Violation(Found),
    Inconclusive { steps: u64 },
}

pub(super) struct Found {
    pub(super) explanation: String,
    pub(super) prefix: Vec<u32>,
    pub(super) state: Vec<Val>,
    pub(super) stuck: Option<u32>,
    pub(super) candidates: Vec<u32>,
    pub(super) steps: u64,
}

impl<const N: usize> Problem<N> {
    /// `ops` sorted by invoke time and valid; `keys` sorted, the group's (for a single key, the
    /// operations' own keys are not looked at).
    pub(super) fn new(ops: &[Operation], keys: &[Key]) -> Self {
        assert!(keys.len() <= N, "{} keys for {N} registers", keys.len());
        let mut interner = Interner::default();
        let mut atomic = Vec::new();
        let mut ok = Vec::new();
        let mut unknown = Vec::new();
        let slot = |key: &[u8]| -> u8 {
            if N == 1 {
                return 0;
            }
            let i = keys.binary_search_by(|k| k.as_slice().cmp(key));
            i.expect("every key of the group is listed") as u8
        };
        for (i, o) in ops.iter().enumerate() {
            let observed = match &o.outcome {
                Outcome::Failed => continue,
                Outcome::Unknown if o.op.is_read() => continue,
                Outcome::Unknown => None,
                Outcome::Ok(observed) => Some(observed),
            };
            let step = match &o.op {
                Op::Atomic(parts) => {
                    let results = match observed {
                        Some(Observed::Results(r)) => r.iter().map(Some).collect(),
                        _ => vec![None; parts.len()],
                    };
                    let steps = parts
                        .iter()
                        .zip(results)
                        .filter_map(|((key, op), seen)| {
                            step_of(&mut interner, op, seen).map(|s| (slot(key), s))
                        })
                        .collect();
                    atomic.push(steps);
                    Move::Many(atomic.len() as u32 - 1)
                }
                op => match step_of(&mut interner, op, observed) {
                    Some(step) => Move::One((slot(&o.key), step)),
                    None => continue,
                },
            };
            if observed.is_some() {
                ok.push((i, step));
            } else {
                unknown.push((i, step));
            }
            for expiry in expiries(&mut interner, o, &slot) {
                unknown.push((i, Move::One(expiry)));
            }
        }
        let n_ok = ok.len();
        let mut events: Vec<(Time, bool, u32)> = Vec::with_capacity(2 * n_ok);
        for (id, &(i, _)) in ok.iter().enumerate() {
            events.push((ops[i].invoke, false, id as u32));
            events.push((ops[i].complete, true, id as u32));
        }
        events.sort_unstable();
        let order = events
            .iter()
            .map(|&(_, ret, id)| 1 + 2 * id + u32::from(ret))
            .collect();
        let all = ok.into_iter().chain(unknown);
        let (orig, steps): (Vec<usize>, Vec<Move>) = all.unzip();
        let invoke: Vec<Time> = orig.iter().map(|&i| ops[i].invoke).collect();
        let complete: Vec<Time> = orig[..n_ok].iter().map(|&i| ops[i].complete).collect();
        let mut seen: HashMap<Move, u32> = HashMap::new();
        let twin = (n_ok..steps.len())
            .map(|id| seen.insert(steps[id], id as u32))
            .collect();
        let mut problem = Self {
            steps,
            atomic,
            orig,
            invoke,
            complete,
            twin,
            impossible_read: None,
            n_ok,
            interner,
            order,
        };
        problem.impossible_read = problem.find_impossible_read();
        problem
    }

    /// The parts of a move.
    fn parts<'a>(&'a self, m: &'a Move) -> &'a [Part] {
        match m {
            Move::One(part) => std::slice::from_ref(part),
            Move::Many(i) => &self.atomic[*i as usize],
        }
    }

    /// The state after move `m` from `state`, or `None` if an observation rules it out.
    #[inline]
    fn apply(&self, m: &Move, state: State<N>) -> Option<State<N>> {
        let mut next = state;
        for &(slot, step) in self.parts(m) {
            let r = &mut next[slot as usize];
            *r = step.apply(*r, &self.interner)?;
        }
        Some(next)
    }

    /// The value of each register, for a report.
    pub(super) fn values(&self, state: &[Val]) -> Vec<Option<crate::history::Value>> {
        state.iter().map(|&v| self.interner.bytes(v)).collect()
    }
}

/// The step of a single-key operation, given what it observed (`None`: unknown); `None` for a
/// read that observed nothing (it constrains nothing).
fn step_of(interner: &mut Interner, op: &Op, observed: Option<&Observed>) -> Option<Step> {
    Some(match (op, observed) {
        (Op::Get, Some(Observed::Value(v))) => Step::Get(interner.val(v.as_deref())),
        (Op::Exists, Some(Observed::Existed(e))) => Step::Exists(*e),
        (Op::Get | Op::Exists, _) => return None,
        (Op::Set(v), _) => Step::Set(interner.val(Some(v))),
        (Op::SetWith { value, cond, .. }, observed) => {
            let value = interner.val(Some(value));
            match cond {
                None => Step::Set(value),
                Some(c) => Step::SetIf {
                    value,
                    if_absent: *c == SetCond::IfAbsent,
                    written: match observed {
                        Some(Observed::Swapped(w)) => Some(*w),
                        _ => None,
                    },
                },
            }
        }
        (Op::Delete, Some(Observed::Existed(e))) => Step::Delete(Some(*e)),
        (Op::Delete, _) => Step::Delete(None),
        (Op::Cas { expected, new }, observed) => Step::Cas {
            expected: interner.val(expected.as_deref()),
            new: interner.val(new.as_deref()),
            swapped: match observed {
                Some(Observed::Swapped(s)) => Some(*s),
                _ => None,
            },
        },
        (Op::Incr(by), observed) => Step::Incr {
            by: *by,
            result: match observed {
                Some(Observed::Int(n)) => Some(*n),
                _ => None,
            },
        },
        (Op::Atomic(_), _) => unreachable!("validated: atomic operations do not nest"),
    })
}

/// The expiries an operation's writes with a time to live may lead to (none for a conditional
/// write known not to have written).
fn expiries(interner: &mut Interner, o: &Operation, slot: &impl Fn(&[u8]) -> u8) -> Vec<Part> {
    let single;
    let parts: &[(Key, Op)] = match &o.op {
        Op::Atomic(parts) => parts,
        Op::SetWith {
            ttl_ms: Some(_), ..
        } => {
            single = [(o.key.clone(), o.op.clone())];
            &single
        }
        // Nothing else writes with a time to live.
        _ => return Vec::new(),
    };
    let results: Vec<Option<&Observed>> = match &o.outcome {
        Outcome::Ok(Observed::Results(r)) => r.iter().map(Some).collect(),
        Outcome::Ok(observed) => vec![Some(observed)],
        _ => vec![None; parts.len()],
    };
    parts
        .iter()
        .zip(results)
        .filter_map(|((key, op), seen)| match op {
            Op::SetWith {
                value,
                ttl_ms: Some(_),
                ..
            } if seen != Some(&Observed::Swapped(false)) => {
                Some((slot(key), Step::Expire(interner.val(Some(value)))))
            }
            _ => None,
        })
        .collect()
}

impl<const N: usize> Problem<N> {
    /// A quick necessary condition: every completed read sees the initial absence or a value
    /// that some operation invoked before the read returned may have written to its key. It
    /// finds at once what the search could only prove by exhausting every placement of the
    /// unknown operations.
    fn find_impossible_read(&self) -> Option<u32> {
        // The earliest invocation that may write each value to each register; `any_int`: that
        // of an unknown Incr, which may write any integer.
        let mut earliest: HashMap<(u8, Val), Time> = HashMap::new();
        let mut any_int = Time::MAX;
        for (id, m) in self.steps.iter().enumerate() {
            for &(slot, step) in self.parts(m) {
                let written = match step {
                    Step::Set(v) => Some(v),
                    Step::Delete(_) | Step::Expire(_) => Some(Val::Absent),
                    Step::Cas {
                        swapped: Some(false),
                        ..
                    }
                    | Step::SetIf {
                        written: Some(false),
                        ..
                    } => None,
                    Step::Cas { new, .. } => Some(new),
                    Step::SetIf { value, .. } => Some(value),
                    Step::Incr {
                        result: Some(n), ..
                    } => Some(Val::Int(n)),
                    Step::Incr { result: None, .. } => {
                        any_int = any_int.min(self.invoke[id]);
                        None
                    }
                    Step::Get(_) | Step::Exists(_) => None,
                };
                if let Some(v) = written {
                    let t = earliest.entry((slot, v)).or_insert(Time::MAX);
                    *t = (*t).min(self.invoke[id]);
                }
            }
        }
        (0..self.n_ok).find_map(|id| {
            let by = self.complete[id];
            let impossible = self.parts(&self.steps[id]).iter().any(|&(slot, step)| {
                let Step::Get(v) = step else { return false };
                let possible = v == Val::Absent
                    || earliest.get(&(slot, v)).is_some_and(|&t| t <= by)
                    || (matches!(v, Val::Int(_)) && any_int <= by);
                !possible
            });
            impossible.then_some(id as u32)
        })
    }
}

/// A linearized operation, to undo on backtracking.
struct Frame<const N: usize> {
    id: u32,
    prev_state: State<N>,
    /// For an unknown operation, the completed operation whose return bounded the candidates;
    /// `NO_BOUND` for a completed one.
    bound: u32,
}

const NO_BOUND: u32 = u32::MAX;

enum Cursor {
    /// At a node of the completed operations' list.
    Main(u32),
    /// At a node of the unknown operations' list; candidates must be invoked no later than the
    /// return of completed operation `bound`.
    Unknown { node: u32, bound: u32 },
}

#[inline]
fn unlink(next: &mut [u32], prev: &mut [u32], x: u32) {
    let (p, n) = (prev[x as usize], next[x as usize]);
    next[p as usize] = n;
    prev[n as usize] = p;
}

#[inline]
fn relink(next: &mut [u32], prev: &mut [u32], x: u32) {
    let (p, n) = (prev[x as usize], next[x as usize]);
    next[p as usize] = x;
    prev[n as usize] = x;
}

impl<const N: usize> Problem<N> {
    /// Searches for a linearization, visiting at most `max_steps` list positions.
    pub(super) fn search(&self, max_steps: u64) -> Search {
        if let Some(read) = self.impossible_read {
            return Search::Violation(self.impossible_read_found(read));
        }
        let mut walk = Walk::new(self);
        let mut cursor = Cursor::Main(walk.next[HEAD as usize]);
        loop {
            if walk.remaining == 0 {
                return Search::Linearizable { steps: walk.steps };
            }
            walk.steps += 1;
            if walk.steps > max_steps {
                return Search::Inconclusive { steps: max_steps };
            }
            cursor = match cursor {
                Cursor::Main(node) => walk.at_completed(node),
                Cursor::Unknown { node, bound } => match walk.at_unknown(node, bound) {
                    Some(next) => next,
                    None => match walk.backtrack(bound) {
                        Ok(next) => next,
                        Err(found) => return Search::Violation(found),
                    },
                },
            };
        }
    }

    fn impossible_read_found(&self, read: u32) -> Found {
        let seen: Vec<String> = self
            .parts(&self.steps[read as usize])
            .iter()
            .filter_map(|&(_, step)| match step {
                Step::Get(v) => Some(show_value(self.interner.bytes(v).as_deref())),
                _ => None,
            })
            .collect();
        Found {
            explanation: format!(
                "a read saw {}, which no operation invoked before it returned could have written",
                seen.join(" or ")
            ),
            prefix: Vec::new(),
            state: vec![Val::Absent; N],
            stuck: Some(read),
            candidates: Vec::new(),
            steps: 0,
        }
    }

    /// The operations that may be linearized next, given the lists' current state.
    fn candidates(&self, bound: u32, next: &[u32], unext: &[u32]) -> Vec<u32> {
        const MAX_UNKNOWN: usize = 16;
        let mut out = Vec::new();
        let mut node = next[HEAD as usize];
        while node & 1 == 1 {
            out.push((node - 1) / 2);
            node = next[node as usize];
        }
        let utail = (self.steps.len() - self.n_ok) as u32 + 1;
        let mut node = unext[0];
        let mut shown = 0;
        while node != utail
            && self.invoke[self.n_ok + node as usize - 1] <= self.complete[bound as usize]
            && shown < MAX_UNKNOWN
        {
            out.push(self.n_ok as u32 + node - 1);
            shown += 1;
            node = unext[node as usize];
        }
        out
    }
}

/// The search in progress: both lists with the linearized operations unlinked, the sets of
/// linearized operations, the memo, the stack of moves to undo, and the deepest dead end so far
/// (the evidence a violation reports).
struct Walk<'p, const N: usize> {
    problem: &'p Problem<N>,
    /// The completed operations' list: head, events, tail.
    next: Vec<u32>,
    prev: Vec<u32>,
    tail: u32,
    /// The unknown operations' list: node `1 + j` is search id `n_ok + j`.
    unext: Vec<u32>,
    uprev: Vec<u32>,
    utail: u32,
    ok_bits: Bits,
    unknown_bits: Bits,
    memo: HashSet<MemoKey<N>, BuildHasherDefault<FxHasher>>,
    failed: Failed<N>,
    state: State<N>,
    stack: Vec<Frame<N>>,
    /// Completed operations not linearized yet.
    remaining: usize,
    steps: u64,
    best: Option<Found>,
    /// How many leading frames of `stack` are `best.prefix`'s.
    common: usize,
}

impl<'p, const N: usize> Walk<'p, N> {
    fn new(problem: &'p Problem<N>) -> Self {
        let n_ok = problem.n_ok;
        let n_unknown = problem.steps.len() - n_ok;
        let tail = 2 * n_ok as u32 + 1;
        let mut next = vec![0u32; tail as usize + 1];
        let mut prev = vec![0u32; tail as usize + 1];
        let mut last = HEAD;
        for &node in problem.order.iter().chain([&tail]) {
            next[last as usize] = node;
            prev[node as usize] = last;
            last = node;
        }
        let utail = n_unknown as u32 + 1;
        Self {
            problem,
            next,
            prev,
            tail,
            unext: (1..=utail + 1).collect(),
            uprev: (0..=utail).map(|i| i.saturating_sub(1)).collect(),
            utail,
            ok_bits: Bits::new(n_ok),
            unknown_bits: Bits::new(n_unknown),
            memo: HashSet::default(),
            failed: Failed::default(),
            state: [Val::Absent; N],
            stack: Vec::new(),
            remaining: n_ok,
            steps: 0,
            best: None,
            common: 0,
        }
    }

    /// At a node of the completed operations' list: linearize the operation if this is its call
    /// and the model accepts it from an unexplored state; at a return, turn to the unknown
    /// operations that may come before it.
    fn at_completed(&mut self, node: u32) -> Cursor {
        debug_assert!(node != self.tail, "a return always precedes the tail");
        let p = self.problem;
        let id = (node - 1) / 2;
        let is_call = node & 1 == 1;
        if !is_call {
            return Cursor::Unknown {
                node: self.unext[0],
                bound: id,
            };
        }
        if let Some(new_state) = p.apply(&p.steps[id as usize], self.state) {
            self.ok_bits.set(id as usize);
            let key = MemoKey::new(new_state, false, &mut self.ok_bits, &mut self.unknown_bits);
            if !self.failed.subsumes(&key) && self.memo.insert(key) {
                self.stack.push(Frame {
                    id,
                    prev_state: self.state,
                    bound: NO_BOUND,
                });
                self.state = new_state;
                unlink(&mut self.next, &mut self.prev, node);
                unlink(&mut self.next, &mut self.prev, node + 1);
                self.remaining -= 1;
                return Cursor::Main(self.next[HEAD as usize]);
            }
            self.ok_bits.clear(id as usize);
        }
        Cursor::Main(self.next[node as usize])
    }

    /// At a node of the unknown operations' list: linearize it if it may come before `bound`
    /// returns and the move is worth trying. `None` at a dead end: nothing more can be
    /// linearized before `bound` returns.
    fn at_unknown(&mut self, node: u32, bound: u32) -> Option<Cursor> {
        let p = self.problem;
        let n_ok = p.n_ok;
        let id = n_ok as u32 + node - 1;
        if node == self.utail || p.invoke[id as usize] > p.complete[bound as usize] {
            return None;
        }
        let j = (node - 1) as usize;
        let in_run = self.stack.last().is_some_and(|f| f.bound != NO_BOUND);
        let step = &p.steps[id as usize];
        // Moves that some other linearization makes at least as well are skipped (each keeps
        // every option the skipped one has):
        // * a step that leaves the state as it is: never applying it does the same;
        // * a blind write after other unknown steps with no completed one between: it erases
        //   them, so they might as well never happen;
        // * the twin of a pending unknown operation (same step, invoked earlier, so also a
        //   candidate here): it was tried already.
        let blind = N == 1 && matches!(step, Move::One((_, Step::Set(_) | Step::Delete(_))));
        let twin_pending =
            p.twin[j].is_some_and(|t| !self.unknown_bits.contains(t as usize - n_ok));
        let applied = if (blind && in_run) || twin_pending {
            None
        } else {
            p.apply(step, self.state).filter(|&s| s != self.state)
        };
        if let Some(new_state) = applied {
            self.unknown_bits.set(j);
            let key = MemoKey::new(new_state, true, &mut self.ok_bits, &mut self.unknown_bits);
            if !self.failed.subsumes(&key) && self.memo.insert(key) {
                self.stack.push(Frame {
                    id,
                    prev_state: self.state,
                    bound,
                });
                self.state = new_state;
                unlink(&mut self.unext, &mut self.uprev, node);
                return Some(Cursor::Main(self.next[HEAD as usize]));
            }
            self.unknown_bits.clear(j);
        }
        Some(Cursor::Unknown {
            node: self.unext[node as usize],
            bound,
        })
    }

    /// At a dead end: records it if it is the deepest so far, then undoes the last move and
    /// goes on with the next candidate after it. `Err` with the evidence once no move is left
    /// to undo: the history is not linearizable.
    fn backtrack(&mut self, bound: u32) -> Result<Cursor, Found> {
        self.record_dead_end(bound);
        let Some(f) = self.stack.pop() else {
            let mut found = self.best.take().expect("recorded at this dead end");
            found.steps = self.steps;
            return Err(found);
        };
        self.common = self.common.min(self.stack.len());
        // Every move from the node `f` led to was tried: it fails.
        let in_run = f.bound != NO_BOUND;
        self.failed.insert(MemoKey::new(
            self.state,
            in_run,
            &mut self.ok_bits,
            &mut self.unknown_bits,
        ));
        self.state = f.prev_state;
        if f.bound == NO_BOUND {
            self.ok_bits.clear(f.id as usize);
            let call = 1 + 2 * f.id;
            relink(&mut self.next, &mut self.prev, call + 1);
            relink(&mut self.next, &mut self.prev, call);
            self.remaining += 1;
            Ok(Cursor::Main(self.next[call as usize]))
        } else {
            let j = f.id - self.problem.n_ok as u32;
            self.unknown_bits.clear(j as usize);
            relink(&mut self.unext, &mut self.uprev, j + 1);
            Ok(Cursor::Unknown {
                node: self.unext[(j + 1) as usize],
                bound: f.bound,
            })
        }
    }

    /// Keeps the deepest dead end as the violation's evidence: the prefix linearized so far, the
    /// state after it, the return it got stuck before and the candidates it had.
    fn record_dead_end(&mut self, bound: u32) {
        if self
            .best
            .as_ref()
            .is_some_and(|b| self.stack.len() <= b.prefix.len())
        {
            return;
        }
        let state = self.state.to_vec();
        let b = self.best.get_or_insert_with(|| Found {
            explanation: "no order of the operations respects both their real-time order and \
                          the answers they got"
                .to_string(),
            prefix: Vec::new(),
            state: state.clone(),
            stuck: None,
            candidates: Vec::new(),
            steps: 0,
        });
        b.prefix.truncate(self.common);
        b.prefix
            .extend(self.stack[self.common..].iter().map(|f| f.id));
        self.common = self.stack.len();
        b.state = state;
        b.stuck = Some(bound);
        b.candidates = self.problem.candidates(bound, &self.next, &self.unext);
    }
}
