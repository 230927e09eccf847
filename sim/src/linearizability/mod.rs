//! Per-key linearizability checking of client histories.
//!
//! Keys of a key-value store are independent registers, so a history is linearizable if and only
//! if each key's sub-history is (linearizability is local), and each key is checked on its own
//! against a sequential single-register model whose state is the key's value (`Option<bytes>`).
//! An atomic operation (`MGET`, `MSET`, a transaction, a `SCAN` call) ties its keys together:
//! keys tied directly or through other keys form a group, checked as one object whose state is
//! the array of its registers (at most [`MAX_GROUP_KEYS`]), an atomic operation being one step.
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
//! * `search.rs`: the search itself;
//! * `memo.rs`: the memo that prunes it (compact bitsets, explored and failed positions);
//! * `report.rs`: what a failed check says ([`CheckError`], [`Violation`]) and the minimisation
//!   that finds a smaller failing sub-history to show.

use std::collections::BTreeMap;

use crate::history::{History, Key, Operation};

mod memo;
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

/// The most keys atomic operations may tie into one group: the state of a group is an array
/// of this many registers at most.
pub const MAX_GROUP_KEYS: usize = 8;

/// Checks every key or group of keys, in key order. A violation (or malformed operation) is
/// returned as soon as it is found; an inconclusive key is returned only if no other key is
/// violated.
pub fn check_with(history: &History, config: &Config) -> Result<(), CheckError> {
    let mut inconclusive = None;
    for (keys, ops) in groups(history) {
        let result = match keys.len() {
            1 => check_key(&keys[0], ops, config),
            2 => check_group::<2>(&keys, ops, config),
            3..=4 => check_group::<4>(&keys, ops, config),
            5..=MAX_GROUP_KEYS => check_group::<MAX_GROUP_KEYS>(&keys, ops, config),
            n => Err(CheckError::Malformed {
                key: group_name(&keys),
                op: Box::new(ops[0].clone()),
                reason: format!(
                    "atomic operations tie {n} keys together; the checker handles {MAX_GROUP_KEYS}"
                ),
            }),
        };
        match result {
            Ok(()) => {}
            Err(e @ CheckError::Inconclusive { .. }) => {
                inconclusive.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    inconclusive.map_or(Ok(()), Err)
}

/// The keys that atomic operations tie together (each group sorted; a key no atomic operation
/// touches is a group of its own), with their operations in recorded order; groups in the order
/// of their first keys.
fn groups(history: &History) -> Vec<(Vec<Key>, Vec<&Operation>)> {
    let mut index: BTreeMap<&[u8], usize> = BTreeMap::new();
    for op in history.iter() {
        for k in op.op.keys(&op.key) {
            let n = index.len();
            index.entry(k).or_insert(n);
        }
    }
    let mut parent: Vec<usize> = (0..index.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for op in history.iter() {
        let keys = op.op.keys(&op.key);
        let first = root(&mut parent, index[keys[0]]);
        for k in &keys[1..] {
            let r = root(&mut parent, index[k]);
            parent[r] = first;
        }
    }
    // BTreeMaps keyed by a group's first key: the order is the keys', whatever the roots are.
    let mut keys_of: BTreeMap<usize, Vec<Key>> = BTreeMap::new();
    for (&k, &i) in &index {
        keys_of
            .entry(root(&mut parent, i))
            .or_default()
            .push(k.to_vec());
    }
    let mut ops_of: BTreeMap<usize, Vec<&Operation>> = BTreeMap::new();
    for op in history.iter() {
        let r = root(&mut parent, index[op.op.keys(&op.key)[0]]);
        ops_of.entry(r).or_default().push(op);
    }
    let mut out: Vec<(Vec<Key>, Vec<&Operation>)> = keys_of
        .into_iter()
        .map(|(r, keys)| (keys, ops_of.remove(&r).unwrap_or_default()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// A group's keys joined by commas, to name it.
fn group_name(keys: &[Key]) -> Key {
    keys.join(&b',')
}

/// Checks the operations of one key (the single-key operations' own `key` fields are not looked
/// at; an atomic one must touch `key` only).
pub fn check_key<'a>(
    key: &[u8],
    ops: impl IntoIterator<Item = &'a Operation>,
    config: &Config,
) -> Result<(), CheckError> {
    check_group::<1>(&[key.to_vec()], ops, config)
}

/// Checks the operations of a group of keys (sorted) against `N` registers.
fn check_group<'a, const N: usize>(
    keys: &[Key],
    ops: impl IntoIterator<Item = &'a Operation>,
    config: &Config,
) -> Result<(), CheckError> {
    let name = group_name(keys);
    let mut ops: Vec<Operation> = ops.into_iter().cloned().collect();
    sort_ops(&mut ops);
    for op in &ops {
        let outside = match &op.op {
            crate::history::Op::Atomic(parts) => parts.iter().any(|(k, _)| !keys.contains(k)),
            _ => false,
        };
        let validity = if outside {
            Err("an atomic operation touches a key outside the group checked".to_string())
        } else {
            op.validate()
        };
        if let Err(reason) = validity {
            return Err(CheckError::Malformed {
                key: name,
                op: Box::new(op.clone()),
                reason,
            });
        }
    }
    let problem = Problem::<N>::new(&ops, keys);
    match problem.search(config.max_steps_per_key) {
        Search::Linearizable { .. } => Ok(()),
        Search::Inconclusive { steps } => Err(CheckError::Inconclusive {
            key: name,
            ops: ops.len(),
            steps,
        }),
        Search::Violation(found) => {
            let minimal = if config.minimize {
                minimize::<N>(&ops, keys, found.steps, config.max_steps_per_key)
            } else {
                ops.clone()
            };
            let map = |id: u32| problem.orig[id as usize];
            let mut state_after_prefix = problem.values(&found.state);
            state_after_prefix.truncate(keys.len());
            Err(CheckError::Violation(Box::new(Violation {
                key: name,
                keys: keys.to_vec(),
                explanation: found.explanation,
                longest_prefix: found.prefix.iter().map(|&id| map(id)).collect(),
                state_after_prefix,
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
