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

//!
//! * `mod.rs`: the entry points ([`check`], [`check_key`]) and their [`Config`];
//! * `model.rs`: the sequential single-register model (interned values, one step per operation);
//! * `search.rs`: the search itself, and the memo that prunes it;
//! * `report.rs`: what a failed check says ([`CheckError`], [`Violation`]) and the minimisation
//!   that finds a smaller failing sub-history to show.

use crate::history::{History, Operation};

mod model;
mod report;
mod search;

use report::minimize;
pub use report::{CheckError, Violation};
use search::{Problem, Search};

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
