//! What a failed check reports: the error, the violation with the evidence (the longest
//! linearizable prefix, where the search got stuck, the candidates it had), and the
//! minimisation that cuts a failing history down to a smaller one that still fails.

use std::collections::HashSet;
use std::fmt;

use super::search::{Problem, Search};
use crate::history::{show_value, Key, Operation, Outcome, Time, Value};

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

/// A key (or a group of keys that atomic operations tie together) whose operations cannot be
/// linearized, and what the search learned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The key, or the group's keys joined by commas.
    pub key: Key,
    /// The group's keys, in order (one for a single key).
    pub keys: Vec<Key>,
    /// What went wrong, in a sentence.
    pub explanation: String,
    /// Every operation of the key, sorted by invoke time (then complete time, then client).
    pub ops: Vec<Operation>,
    /// The longest sequence of operations the search managed to linearize (indices into `ops`,
    /// in linearization order).
    pub longest_prefix: Vec<usize>,
    /// The value of each key (in `keys`' order) after that prefix.
    pub state_after_prefix: Vec<Option<Value>>,
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
    /// The values after the longest prefix: `"v"` for one key, `k1="v" k2=nil` for a group.
    fn show_state(&self) -> String {
        if self.keys.len() == 1 {
            return show_value(self.state_after_prefix[0].as_deref());
        }
        let shown: Vec<String> = self
            .keys
            .iter()
            .zip(&self.state_after_prefix)
            .map(|(k, v)| format!("{}={}", k.escape_ascii(), show_value(v.as_deref())))
            .collect();
        shown.join(" ")
    }

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
            "{} {} is not linearizable ({} operations): {}",
            if self.keys.len() > 1 { "keys" } else { "key" },
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
            self.show_state()
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

struct Budget<'k, const N: usize> {
    keys: &'k [Key],
    steps_per_check: u64,
    /// For all the checks together, so that minimising costs a few times the search at most.
    steps_left: u64,
    checks_left: u32,
}

impl<const N: usize> Budget<'_, N> {
    /// Whether `ops` is known not to be linearizable (false when the budget says "don't know").
    fn fails(&mut self, ops: &[Operation]) -> bool {
        if self.checks_left == 0 || self.steps_left == 0 {
            return false;
        }
        self.checks_left -= 1;
        let (fails, steps) = match Problem::<N>::new(ops, self.keys)
            .search(self.steps_per_check.min(self.steps_left))
        {
            Search::Violation(found) => (true, found.steps),
            Search::Linearizable { steps } | Search::Inconclusive { steps } => (false, steps),
        };
        self.steps_left = self.steps_left.saturating_sub(steps);
        fails
    }
}

pub(super) fn minimize<const N: usize>(
    ops: &[Operation],
    keys: &[Key],
    steps: u64,
    max_steps: u64,
) -> Vec<Operation> {
    let mut budget = Budget::<N> {
        keys,
        steps_per_check: (steps.saturating_mul(2).saturating_add(10_000)).min(max_steps),
        steps_left: (steps.saturating_mul(4).saturating_add(1_000_000)).min(max_steps),
        checks_left: 200,
    };
    let mut best = earliest_failing_cut(ops, &mut budget);

    // Drop reads, in halving chunks from the latest.
    let mut chunk = best.len().div_ceil(2).max(1);
    loop {
        let reads: Vec<usize> = (0..best.len())
            .filter(|&i| best[i].op.is_read() && matches!(best[i].outcome, Outcome::Ok(_)))
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

fn earliest_failing_cut<const N: usize>(
    ops: &[Operation],
    budget: &mut Budget<'_, N>,
) -> Vec<Operation> {
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
