//! Per-key linearizability checking of client histories.
//!
//! Keys of a key-value store are independent registers, so a history is linearizable if and only
//! if each key's sub-history is (linearizability is local), and each key is checked on its own
//! against a sequential single-register model whose state is the key's value (`Option<bytes>`).
//!
//! The search is Wing & Gong's, with Lowe's memoisation, as in Knossos and Porcupine: the calls and
//! returns of the operations that completed are laid out in time order in a doubly linked list
//! (a call before a return at equal times, so touching operations count as concurrent). The search
//! walks the list from its head; an operation whose call comes before the first remaining return
//! may be linearized next if the model accepts its observed result, after which its call and
//! return are unlinked ("lifted") and the walk restarts. Reaching a return means no candidate is
//! left: backtrack, relink the last operation and try the one after it. A cache of every
//! (set of linearized operations, model state) already explored prunes the search; the set is a
//! bitset, stored compactly (leading full words counted, trailing zero words trimmed) because in
//! practice it is a prefix plus a window of concurrency.
//!
//! Operations that timed out (`Unknown`) have no return: they sit in a second list and may be
//! linearized anywhere after their call, or never; the search ends as soon as every completed
//! operation is linearized. They are tried only once the completed candidates are exhausted, which
//! keeps the common case (most of them never needed) fast without losing completeness. `Failed`
//! operations, and `Unknown` reads, constrain nothing and are dropped before the search.
//!
//! Every decision depends only on the history: the cache is a hash set used for membership only,
//! so the verdict, the prefix and the sub-history reported are the same on every run. A step
//! budget per key turns a pathological history into [`CheckError::Inconclusive`].

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use crate::history::{show_value, History, Key, Observed, Op, Operation, Outcome, Time, Value};

/// Limits of the search.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Search steps (list positions visited) allowed per key before answering `Inconclusive`.
    /// A step costs well under a microsecond.
    pub max_steps_per_key: u64,
    /// On a violation, look for a smaller failing sub-history (costs a few more searches).
    pub minimize: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_steps_per_key: 20_000_000,
            minimize: true,
        }
    }
}

/// Why a history is not accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckError {
    /// The operations of a key cannot be linearized.
    Violation(Box<Violation>),
    /// The step budget ran out before the search decided.
    Inconclusive {
        key: Key,
        /// Operations of the key.
        ops: usize,
        steps: u64,
    },
    /// An operation makes no sense (an answer of the wrong kind, completed before invoked).
    Malformed {
        key: Key,
        op: Box<Operation>,
        reason: String,
    },
}

impl CheckError {
    pub fn is_violation(&self) -> bool {
        matches!(self, CheckError::Violation(_))
    }

    pub fn is_inconclusive(&self) -> bool {
        matches!(self, CheckError::Inconclusive { .. })
    }

    pub fn violation(&self) -> Option<&Violation> {
        match self {
            CheckError::Violation(v) => Some(v),
            _ => None,
        }
    }
}

/// A key whose operations cannot be linearized, and what the search learned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub key: Key,
    /// What went wrong, in a sentence.
    pub explanation: String,
    /// Every operation of the key, sorted by invoke time (then complete time, then client).
    pub ops: Vec<Operation>,
    /// The longest sequence of operations the search managed to linearize (indices into `ops`,
    /// in linearization order).
    pub longest_prefix: Vec<usize>,
    /// The value after that prefix.
    pub state_after_prefix: Option<Value>,
    /// The completed operation (index into `ops`) whose return the search could not get past
    /// after that prefix: no pending operation could be linearized before it returned.
    pub stuck_before_return_of: Option<usize>,
    /// The operations that were candidates at that point (indices into `ops`; capped).
    pub candidates: Vec<usize>,
    /// The smallest sub-history found that is itself not linearizable, sorted by invoke time.
    /// It comes from reductions that preserve a violation (cutting the history at a time, where
    /// the operations still running at the cut become `Unknown`; dropping reads), so it is
    /// evidence on its own. Equal to `ops` when minimisation is off or found nothing smaller.
    pub minimal: Vec<Operation>,
}

impl Violation {
    /// Every operation of the key, one a line.
    pub fn render_ops(&self) -> String {
        render(self.ops.iter())
    }
}

fn render<'a>(ops: impl Iterator<Item = &'a Operation>) -> String {
    let mut s = String::new();
    for op in ops {
        s.push_str("    ");
        s.push_str(&op.to_string());
        s.push('\n');
    }
    s
}

const SHOW_MAX: usize = 40;

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "key {} is not linearizable ({} operations): {}",
            show_value(Some(&self.key)),
            self.ops.len(),
            self.explanation
        )?;
        let m = &self.minimal;
        writeln!(
            f,
            "  smallest failing sub-history found ({} operations, by invoke time):",
            m.len()
        )?;
        if m.len() > SHOW_MAX {
            writeln!(f, "    ... {} earlier operations", m.len() - SHOW_MAX)?;
        }
        f.write_str(&render(m[m.len().saturating_sub(SHOW_MAX)..].iter()))?;
        writeln!(
            f,
            "  longest linearizable prefix: {} operations, leaving {}; its last ones:",
            self.longest_prefix.len(),
            show_value(self.state_after_prefix.as_deref())
        )?;
        let tail = &self.longest_prefix[self.longest_prefix.len().saturating_sub(8)..];
        f.write_str(&render(tail.iter().map(|&i| &self.ops[i])))?;
        if let Some(stuck) = self.stuck_before_return_of {
            writeln!(
                f,
                "  then nothing could be linearized before this returned: {}",
                self.ops[stuck]
            )?;
            writeln!(f, "  candidates were:")?;
            f.write_str(&render(self.candidates.iter().map(|&i| &self.ops[i])))?;
        }
        Ok(())
    }
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckError::Violation(v) => v.fmt(f),
            CheckError::Inconclusive { key, ops, steps } => write!(
                f,
                "key {}: linearizability undecided after {steps} search steps ({ops} operations)",
                show_value(Some(key))
            ),
            CheckError::Malformed { key, op, reason } => write!(
                f,
                "key {}: malformed operation {op}: {reason}",
                show_value(Some(key))
            ),
        }
    }
}

impl std::error::Error for CheckError {}

/// Checks every key with the default [`Config`].
pub fn check(history: &History) -> Result<(), CheckError> {
    check_with(history, &Config::default())
}

/// Checks every key, in key order. A violation (or malformed operation) is returned as soon as it
/// is found; an inconclusive key is returned only if no other key is violated.
pub fn check_with(history: &History, config: &Config) -> Result<(), CheckError> {
    let mut inconclusive = None;
    for (key, ops) in history.by_key() {
        match check_key(key, ops, config) {
            Ok(()) => {}
            Err(e @ CheckError::Inconclusive { .. }) => {
                inconclusive.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    inconclusive.map_or(Ok(()), Err)
}

/// Checks the operations of one key (their own `key` fields are not looked at).
pub fn check_key<'a>(
    key: &[u8],
    ops: impl IntoIterator<Item = &'a Operation>,
    config: &Config,
) -> Result<(), CheckError> {
    let mut ops: Vec<Operation> = ops.into_iter().cloned().collect();
    sort_ops(&mut ops);
    for op in &ops {
        if let Err(reason) = op.validate() {
            return Err(CheckError::Malformed {
                key: key.to_vec(),
                op: Box::new(op.clone()),
                reason,
            });
        }
    }
    let problem = Problem::new(&ops);
    match problem.search(config.max_steps_per_key) {
        Search::Linearizable { .. } => Ok(()),
        Search::Inconclusive { steps } => Err(CheckError::Inconclusive {
            key: key.to_vec(),
            ops: ops.len(),
            steps,
        }),
        Search::Violation(found) => {
            let minimal = if config.minimize {
                minimize(&ops, found.steps, config.max_steps_per_key)
            } else {
                ops.clone()
            };
            let map = |id: u32| problem.orig[id as usize];
            Err(CheckError::Violation(Box::new(Violation {
                key: key.to_vec(),
                explanation: found.explanation,
                longest_prefix: found.prefix.iter().map(|&id| map(id)).collect(),
                state_after_prefix: problem.interner.bytes(found.state),
                stuck_before_return_of: found.stuck.map(map),
                candidates: found.candidates.iter().map(|&id| map(id)).collect(),
                ops,
                minimal,
            })))
        }
    }
}

/// By invoke time, then complete time, then client; ties keep the recorded order.
fn sort_ops(ops: &mut [Operation]) {
    ops.sort_by_key(|o| (o.invoke, o.complete, o.client));
}

// ---------------------------------------------------------------------------------------------
// Minimisation.
//
// Two reductions keep a violation a violation, so whatever they leave is evidence on its own:
// * Cutting at time T: keep the operations invoked at or before T, and make those still running at
//   T `Unknown`. A linearization of the whole history, restricted to them, linearizes the cut:
//   every completed operation in the cut returned by T, so everything linearized before it was
//   invoked by T; an `Unknown` one may be placed wherever it was. Failing is monotone in T, so the
//   earliest failing cut is found by bisection.
// * Dropping a read (a completed `Get`): a read changes nothing, so the same linearization works
//   without it.

fn cut(ops: &[Operation], t: Time) -> Vec<Operation> {
    ops.iter()
        .filter(|o| o.invoke <= t)
        .map(|o| {
            let mut o = o.clone();
            if o.outcome != Outcome::Unknown && o.complete > t {
                o.outcome = Outcome::Unknown;
            }
            o
        })
        .collect()
}

struct Budget {
    steps_per_check: u64,
    /// For all the checks together, so that minimising costs a few times the search at most.
    steps_left: u64,
    checks_left: u32,
}

impl Budget {
    /// Whether `ops` is known not to be linearizable (false when the budget says "don't know").
    fn fails(&mut self, ops: &[Operation]) -> bool {
        if self.checks_left == 0 || self.steps_left == 0 {
            return false;
        }
        self.checks_left -= 1;
        let (fails, steps) =
            match Problem::new(ops).search(self.steps_per_check.min(self.steps_left)) {
                Search::Violation(found) => (true, found.steps),
                Search::Linearizable { steps } | Search::Inconclusive { steps } => (false, steps),
            };
        self.steps_left = self.steps_left.saturating_sub(steps);
        fails
    }
}

fn minimize(ops: &[Operation], steps: u64, max_steps: u64) -> Vec<Operation> {
    let mut budget = Budget {
        steps_per_check: (steps.saturating_mul(2).saturating_add(10_000)).min(max_steps),
        steps_left: (steps.saturating_mul(4).saturating_add(1_000_000)).min(max_steps),
        checks_left: 200,
    };
    let mut best = earliest_failing_cut(ops, &mut budget);

    // Drop reads, in halving chunks from the latest.
    let mut chunk = best.len().div_ceil(2).max(1);
    loop {
        let reads: Vec<usize> = (0..best.len())
            .filter(|&i| matches!(best[i].outcome, Outcome::Ok(Observed::Value(_))))
            .collect();
        let mut end = reads.len();
        while end > 0 && budget.checks_left > 0 && budget.steps_left > 0 {
            let start = end.saturating_sub(chunk);
            let drop: HashSet<usize> = reads[start..end].iter().copied().collect();
            let candidate: Vec<Operation> = (0..best.len())
                .filter(|i| !drop.contains(i))
                .map(|i| best[i].clone())
                .collect();
            if budget.fails(&candidate) {
                // Indices shift; `reads` still lists the reads before `start`, which did not move.
                best = candidate;
            }
            end = start;
        }
        if chunk == 1 || budget.checks_left == 0 || budget.steps_left == 0 {
            break;
        }
        chunk = chunk.div_ceil(2);
    }
    earliest_failing_cut(&best, &mut budget)
}

fn earliest_failing_cut(ops: &[Operation], budget: &mut Budget) -> Vec<Operation> {
    let mut times: Vec<Time> = ops
        .iter()
        .flat_map(|o| [o.invoke, o.complete])
        .filter(|&t| t != Time::MAX)
        .collect();
    times.sort_unstable();
    times.dedup();
    // The cut at the last time is the history itself (up to Unknown complete times), which fails.
    let (mut lo, mut hi) = (0, times.len());
    let mut best: Option<Vec<Operation>> = None;
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let c = cut(ops, times[mid]);
        if budget.fails(&c) {
            best = Some(c);
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    best.unwrap_or_else(|| ops.to_vec())
}

// ---------------------------------------------------------------------------------------------
// The model.

/// A value, interned: equal values are equal `Val`s. A value that is the canonical decimal form
/// of an `i64` (what `Incr` writes) is `Int`; any other is `Bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Val {
    Absent,
    Bytes(u32),
    Int(i64),
}

#[derive(Default)]
struct Interner {
    ids: HashMap<Vec<u8>, u32>,
    values: Vec<Vec<u8>>,
    /// What `Incr` reads each interned value as, if it can.
    as_int: Vec<Option<i64>>,
}

impl Interner {
    fn val(&mut self, v: Option<&[u8]>) -> Val {
        let Some(v) = v else { return Val::Absent };
        let parsed = std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse::<i64>().ok());
        if let Some(n) = parsed {
            if n.to_string().as_bytes() == v {
                return Val::Int(n);
            }
        }
        if let Some(&id) = self.ids.get(v) {
            return Val::Bytes(id);
        }
        let id = self.values.len() as u32;
        self.ids.insert(v.to_vec(), id);
        self.values.push(v.to_vec());
        self.as_int.push(parsed);
        Val::Bytes(id)
    }

    fn bytes(&self, v: Val) -> Option<Value> {
        match v {
            Val::Absent => None,
            Val::Bytes(id) => Some(self.values[id as usize].clone()),
            Val::Int(n) => Some(n.to_string().into_bytes()),
        }
    }

    fn int(&self, v: Val) -> Option<i64> {
        match v {
            Val::Absent => Some(0),
            Val::Bytes(id) => self.as_int[id as usize],
            Val::Int(n) => Some(n),
        }
    }
}

/// An operation for the model; `None` observations are those of `Unknown` operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Step {
    Get(Val),
    Set(Val),
    Delete(Option<bool>),
    Cas {
        expected: Val,
        new: Val,
        swapped: Option<bool>,
    },
    Incr {
        by: i64,
        result: Option<i64>,
    },
}

impl Step {
    /// The state after this step from `state`, or `None` if its observation rules it out.
    #[inline]
    fn apply(&self, state: Val, interner: &Interner) -> Option<Val> {
        match *self {
            Step::Get(v) => (v == state).then_some(state),
            Step::Set(v) => Some(v),
            Step::Delete(existed) => match existed {
                Some(e) if e != (state != Val::Absent) => None,
                _ => Some(Val::Absent),
            },
            Step::Cas {
                expected,
                new,
                swapped,
            } => {
                let matches = state == expected;
                match swapped {
                    Some(s) if s != matches => None,
                    _ => Some(if matches { new } else { state }),
                }
            }
            Step::Incr { by, result } => {
                match interner.int(state).and_then(|n| n.checked_add(by)) {
                    Some(n) => match result {
                        Some(r) if r != n => None,
                        _ => Some(Val::Int(n)),
                    },
                    // The server refuses it without effect; an answer would have been an error,
                    // which a client records as Failed, never as Ok.
                    None => result.is_none().then_some(state),
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The search.

/// One key's operations, ready to search. Search ids: completed operations `0..n_ok` and then the
/// unknown ones, each group in invoke order.
struct Problem {
    steps: Vec<Step>,
    /// Search id -> index in the sorted operations of the key.
    orig: Vec<usize>,
    invoke: Vec<Time>,
    /// Return times of the completed operations.
    complete: Vec<Time>,
    /// For an unknown operation, the previous unknown one with the very same step, if any.
    twin: Vec<Option<u32>>,
    /// A completed read of a value that nothing invoked before it returned could have written.
    impossible_read: Option<u32>,
    n_ok: usize,
    interner: Interner,
    /// The completed operations' calls and returns in time order: node `1 + 2 id` is the call of
    /// `id`, `2 + 2 id` its return; node 0 is the head and `2 n_ok + 1` the tail.
    order: Vec<u32>,
}

const HEAD: u32 = 0;

enum Search {
    Linearizable { steps: u64 },
    Violation(Found),
    Inconclusive { steps: u64 },
}

struct Found {
    explanation: String,
    prefix: Vec<u32>,
    state: Val,
    stuck: Option<u32>,
    candidates: Vec<u32>,
    steps: u64,
}

impl Problem {
    /// `ops` sorted by invoke time and valid.
    fn new(ops: &[Operation]) -> Self {
        let mut interner = Interner::default();
        let mut ok = Vec::new();
        let mut unknown = Vec::new();
        for (i, o) in ops.iter().enumerate() {
            let observed = match &o.outcome {
                Outcome::Failed => continue,
                Outcome::Unknown if o.op == Op::Get => continue,
                Outcome::Unknown => None,
                Outcome::Ok(observed) => Some(observed),
            };
            let step = match (&o.op, observed) {
                (Op::Get, Some(Observed::Value(v))) => Step::Get(interner.val(v.as_deref())),
                (Op::Set(v), _) => Step::Set(interner.val(Some(v))),
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
                (Op::Get, _) => unreachable!("validated"),
            };
            if observed.is_some() {
                ok.push((i, step));
            } else {
                unknown.push((i, step));
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
        let (orig, steps): (Vec<usize>, Vec<Step>) = all.unzip();
        let invoke: Vec<Time> = orig.iter().map(|&i| ops[i].invoke).collect();
        let complete: Vec<Time> = orig[..n_ok].iter().map(|&i| ops[i].complete).collect();
        let mut seen: HashMap<Step, u32> = HashMap::new();
        let twin = (n_ok..steps.len())
            .map(|id| seen.insert(steps[id], id as u32))
            .collect();
        let impossible_read = impossible_read(&steps, &invoke, &complete, n_ok);
        Self {
            steps,
            orig,
            invoke,
            complete,
            twin,
            impossible_read,
            n_ok,
            interner,
            order,
        }
    }
}

/// A quick necessary condition: every completed read sees the initial absence or a value that some
/// operation invoked before the read returned may have written. It finds at once what the search
/// could only prove by exhausting every placement of the unknown operations.
fn impossible_read(steps: &[Step], invoke: &[Time], complete: &[Time], n_ok: usize) -> Option<u32> {
    // The earliest invocation that may write each value; `any_int`: that of an unknown Incr, which
    // may write any integer.
    let mut earliest: HashMap<Val, Time> = HashMap::new();
    let mut any_int = Time::MAX;
    for (id, step) in steps.iter().enumerate() {
        let written = match *step {
            Step::Set(v) => Some(v),
            Step::Delete(_) => Some(Val::Absent),
            Step::Cas {
                swapped: Some(false),
                ..
            } => None,
            Step::Cas { new, .. } => Some(new),
            Step::Incr {
                result: Some(n), ..
            } => Some(Val::Int(n)),
            Step::Incr { result: None, .. } => {
                any_int = any_int.min(invoke[id]);
                None
            }
            Step::Get(_) => None,
        };
        if let Some(v) = written {
            let t = earliest.entry(v).or_insert(Time::MAX);
            *t = (*t).min(invoke[id]);
        }
    }
    (0..n_ok).find_map(|id| {
        let Step::Get(v) = steps[id] else {
            return None;
        };
        let by = complete[id];
        let possible = v == Val::Absent
            || earliest.get(&v).is_some_and(|&t| t <= by)
            || (matches!(v, Val::Int(_)) && any_int <= by);
        (!possible).then_some(id as u32)
    })
}

/// A set of search ids as a bitset that knows its leading full words and (roughly) its last
/// non-zero word, so that its compact form costs the width of its "ragged" middle only.
struct Bits {
    words: Vec<u64>,
    /// `words[..full]` are all ones.
    full: usize,
    /// `words[hi..]` are all zero; `hi >= full`.
    hi: usize,
}

impl Bits {
    fn new(n: usize) -> Self {
        Self {
            words: vec![0; n.div_ceil(64)],
            full: 0,
            hi: 0,
        }
    }

    #[inline]
    fn set(&mut self, i: usize) {
        let w = i / 64;
        self.words[w] |= 1 << (i % 64);
        self.hi = self.hi.max(w + 1);
        while self.full < self.words.len() && self.words[self.full] == u64::MAX {
            self.full += 1;
        }
    }

    #[inline]
    fn contains(&self, i: usize) -> bool {
        self.words[i / 64] & (1 << (i % 64)) != 0
    }

    #[inline]
    fn clear(&mut self, i: usize) {
        let w = i / 64;
        self.words[w] &= !(1 << (i % 64));
        self.full = self.full.min(w);
    }

    /// The words up to the trailing zero ones.
    #[inline]
    fn prefix(&mut self) -> &[u64] {
        self.middle();
        &self.words[..self.hi]
    }

    /// The words between the full ones and the trailing zero ones.
    #[inline]
    fn middle(&mut self) -> &[u64] {
        while self.hi > self.full && self.words[self.hi - 1] == 0 {
            self.hi -= 1;
        }
        &self.words[self.full..self.hi]
    }
}

/// Where the search stands, but for which unknown operations are linearized.
#[derive(PartialEq, Eq, Hash)]
struct Position {
    state: Val,
    /// Whether the last operation linearized is an unknown one (which restricts the next moves).
    in_run: bool,
    ok_full: u32,
    /// The completed operations linearized, past the `ok_full` full words.
    ok: Box<[u64]>,
}

/// A memoised search node: the position and the unknown operations linearized.
#[derive(PartialEq, Eq, Hash)]
struct MemoKey {
    pos: Position,
    /// Trailing zero words trimmed.
    unknown: Box<[u64]>,
}

impl MemoKey {
    fn new(state: Val, in_run: bool, ok: &mut Bits, unknown: &mut Bits) -> Self {
        let ok_full = ok.full as u32;
        Self {
            pos: Position {
                state,
                in_run,
                ok_full,
                ok: ok.middle().into(),
            },
            unknown: unknown.prefix().into(),
        }
    }
}

/// Positions known to fail, each with the sets of unknown operations it failed with. A node whose
/// unknown set contains one of those fails too: it has the same moves but fewer unknown ones
/// (which a linearization may always leave out), so the search skips it.
#[derive(Default)]
struct Failed(HashMap<Position, Vec<Box<[u64]>>, BuildHasherDefault<FxHasher>>);

impl Failed {
    fn subsumes(&self, key: &MemoKey) -> bool {
        self.0.get(&key.pos).is_some_and(|sets| {
            sets.iter().any(|failed| {
                failed.len() <= key.unknown.len()
                    && failed
                        .iter()
                        .zip(&key.unknown[..])
                        .all(|(f, u)| f & !u == 0)
            })
        })
    }

    fn insert(&mut self, key: MemoKey) {
        self.0.entry(key.pos).or_default().push(key.unknown);
    }
}

/// A small fast hasher (FxHash's mixing with a final avalanche); the cache is only ever asked
/// about membership, so its quality affects speed, never the answer.
#[derive(Default)]
struct FxHasher(u64);

impl FxHasher {
    #[inline]
    fn add(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        for &b in chunks.remainder() {
            self.add(u64::from(b));
        }
    }
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }
    fn write_i64(&mut self, n: i64) {
        self.add(n as u64);
    }
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
    fn write_isize(&mut self, n: isize) {
        self.add(n as u64);
    }
    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h
    }
}

/// A linearized operation, to undo on backtracking.
struct Frame {
    id: u32,
    prev_state: Val,
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

impl Problem {
    fn search(&self, max_steps: u64) -> Search {
        if let Some(read) = self.impossible_read {
            let Step::Get(v) = self.steps[read as usize] else {
                unreachable!("a read")
            };
            return Search::Violation(Found {
                explanation: format!(
                    "a read saw {}, which no operation invoked before it returned could have written",
                    show_value(self.interner.bytes(v).as_deref())
                ),
                prefix: Vec::new(),
                state: Val::Absent,
                stuck: Some(read),
                candidates: Vec::new(),
                steps: 0,
            });
        }
        let n_ok = self.n_ok;
        let n_unknown = self.steps.len() - n_ok;
        // The completed operations' list: head, events, tail.
        let tail = 2 * n_ok as u32 + 1;
        let mut next = vec![0u32; tail as usize + 1];
        let mut prev = vec![0u32; tail as usize + 1];
        let mut last = HEAD;
        for &node in self.order.iter().chain([&tail]) {
            next[last as usize] = node;
            prev[node as usize] = last;
            last = node;
        }
        // The unknown operations' list: node `1 + j` is search id `n_ok + j`.
        let utail = n_unknown as u32 + 1;
        let mut unext: Vec<u32> = (1..=utail + 1).collect();
        let mut uprev: Vec<u32> = (0..=utail).map(|i| i.saturating_sub(1)).collect();

        let mut ok_bits = Bits::new(n_ok);
        let mut unknown_bits = Bits::new(n_unknown);
        let mut memo: HashSet<MemoKey, BuildHasherDefault<FxHasher>> = HashSet::default();
        let mut failed = Failed::default();
        let mut state = Val::Absent;
        let mut stack: Vec<Frame> = Vec::new();
        let mut remaining = n_ok;
        let mut cursor = Cursor::Main(next[HEAD as usize]);
        let mut steps = 0u64;
        let mut best: Option<Found> = None;
        // How many leading frames of `stack` are `best.prefix`'s.
        let mut common = 0usize;

        loop {
            if remaining == 0 {
                return Search::Linearizable { steps };
            }
            steps += 1;
            if steps > max_steps {
                return Search::Inconclusive { steps: max_steps };
            }
            match cursor {
                Cursor::Main(node) => {
                    debug_assert!(node != tail, "a return always precedes the tail");
                    let id = (node - 1) / 2;
                    let is_call = node & 1 == 1;
                    if !is_call {
                        cursor = Cursor::Unknown {
                            node: unext[0],
                            bound: id,
                        };
                        continue;
                    }
                    if let Some(new_state) = self.steps[id as usize].apply(state, &self.interner) {
                        ok_bits.set(id as usize);
                        let key = MemoKey::new(new_state, false, &mut ok_bits, &mut unknown_bits);
                        if !failed.subsumes(&key) && memo.insert(key) {
                            stack.push(Frame {
                                id,
                                prev_state: state,
                                bound: NO_BOUND,
                            });
                            state = new_state;
                            unlink(&mut next, &mut prev, node);
                            unlink(&mut next, &mut prev, node + 1);
                            remaining -= 1;
                            cursor = Cursor::Main(next[HEAD as usize]);
                            continue;
                        }
                        ok_bits.clear(id as usize);
                    }
                    cursor = Cursor::Main(next[node as usize]);
                }
                Cursor::Unknown { node, bound } => {
                    let id = n_ok as u32 + node - 1;
                    if node != utail && self.invoke[id as usize] <= self.complete[bound as usize] {
                        let j = (node - 1) as usize;
                        let in_run = stack.last().is_some_and(|f| f.bound != NO_BOUND);
                        let step = &self.steps[id as usize];
                        // Moves that some other linearization makes at least as well are skipped
                        // (each keeps every option the skipped one has):
                        // * a step that leaves the state as it is: never applying it does the same;
                        // * a blind write after other unknown steps with no completed one between:
                        //   it erases them, so they might as well never happen;
                        // * the twin of a pending unknown operation (same step, invoked earlier,
                        //   so also a candidate here): it was tried already.
                        let blind = matches!(step, Step::Set(_) | Step::Delete(_));
                        let twin_pending =
                            self.twin[j].is_some_and(|t| !unknown_bits.contains(t as usize - n_ok));
                        let applied = if (blind && in_run) || twin_pending {
                            None
                        } else {
                            step.apply(state, &self.interner).filter(|&s| s != state)
                        };
                        if let Some(new_state) = applied {
                            unknown_bits.set(j);
                            let key =
                                MemoKey::new(new_state, true, &mut ok_bits, &mut unknown_bits);
                            if !failed.subsumes(&key) && memo.insert(key) {
                                stack.push(Frame {
                                    id,
                                    prev_state: state,
                                    bound,
                                });
                                state = new_state;
                                unlink(&mut unext, &mut uprev, node);
                                cursor = Cursor::Main(next[HEAD as usize]);
                                continue;
                            }
                            unknown_bits.clear(j);
                        }
                        cursor = Cursor::Unknown {
                            node: unext[node as usize],
                            bound,
                        };
                        continue;
                    }
                    // Dead end: nothing more can be linearized before `bound` returns.
                    if best.as_ref().is_none_or(|b| stack.len() > b.prefix.len()) {
                        let b = best.get_or_insert_with(|| Found {
                            explanation: "no order of the operations respects both their \
                                          real-time order and the answers they got"
                                .to_string(),
                            prefix: Vec::new(),
                            state,
                            stuck: None,
                            candidates: Vec::new(),
                            steps: 0,
                        });
                        b.prefix.truncate(common);
                        b.prefix.extend(stack[common..].iter().map(|f| f.id));
                        common = stack.len();
                        b.state = state;
                        b.stuck = Some(bound);
                        b.candidates = self.candidates(bound, &next, &unext);
                    }
                    let Some(f) = stack.pop() else {
                        let mut found = best.expect("recorded at this dead end");
                        found.steps = steps;
                        return Search::Violation(found);
                    };
                    common = common.min(stack.len());
                    // Every move from the node `f` led to was tried: it fails.
                    let in_run = f.bound != NO_BOUND;
                    failed.insert(MemoKey::new(state, in_run, &mut ok_bits, &mut unknown_bits));
                    state = f.prev_state;
                    if f.bound == NO_BOUND {
                        ok_bits.clear(f.id as usize);
                        let call = 1 + 2 * f.id;
                        relink(&mut next, &mut prev, call + 1);
                        relink(&mut next, &mut prev, call);
                        remaining += 1;
                        cursor = Cursor::Main(next[call as usize]);
                    } else {
                        let j = f.id - n_ok as u32;
                        unknown_bits.clear(j as usize);
                        relink(&mut unext, &mut uprev, j + 1);
                        cursor = Cursor::Unknown {
                            node: unext[(j + 1) as usize],
                            bound: f.bound,
                        };
                    }
                }
            }
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
