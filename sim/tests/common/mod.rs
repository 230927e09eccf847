//! Seeded generation of linearizable histories, shared by the tests and the checker benchmark
//! (which includes this file by path).
//!
//! Clients run operations one after another; each operation takes effect at a random instant
//! inside its window (its true linearization point). Applying the operations to a plain model in
//! the order of those instants gives every observation, so the history is linearizable by
//! construction. Some operations time out (`Unknown`: applied at their instant or never) or fail
//! (`Failed`: never applied).

#![allow(dead_code)]

use sim::history::{History, Observed, Op, Operation, Outcome, SetCond, Time, Value};
use sim::linearizability::{check, CheckError, Violation};

/// SplitMix64: tiny, seeded, good enough for workloads.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64) / ((1u64 << 53) as f64) < p
    }
}

#[derive(Clone, Debug)]
pub struct GenConfig {
    pub ops: usize,
    pub keys: usize,
    pub clients: usize,
    /// Share of operations that time out (half of them applied, half never).
    pub unknown: f64,
    /// Share of operations that fail without effect.
    pub failed: f64,
    /// Operation latency is uniform in `1..=max_latency` ns.
    pub max_latency: Time,
    /// A client waits uniform `1..=max_think` ns between operations.
    pub max_think: Time,
}

impl GenConfig {
    pub fn new(ops: usize, keys: usize, clients: usize) -> Self {
        Self {
            ops,
            keys,
            clients,
            unknown: 0.02,
            failed: 0.01,
            max_latency: 1_000,
            max_think: 200,
        }
    }
}

pub fn key_name(k: usize) -> Vec<u8> {
    format!("k{k}").into_bytes()
}

/// The sequential model: the new value and the observation, or `None` if the server would refuse
/// the operation without effect (an `Incr` of a non-integer, or one that overflows).
pub fn model_apply(
    state: &Option<Value>,
    op: &Op,
    inspect_delete: bool,
) -> Option<(Option<Value>, Observed)> {
    Some(match op {
        Op::Get => (state.clone(), Observed::Value(state.clone())),
        Op::Set(v) => (Some(v.clone()), Observed::Done),
        Op::Delete => (
            None,
            if inspect_delete {
                Observed::Existed(state.is_some())
            } else {
                Observed::Done
            },
        ),
        Op::Cas { expected, new } => {
            if state == expected {
                (new.clone(), Observed::Swapped(true))
            } else {
                (state.clone(), Observed::Swapped(false))
            }
        }
        Op::Incr(by) => {
            let current = match state {
                None => 0,
                Some(v) => std::str::from_utf8(v).ok()?.parse::<i64>().ok()?,
            };
            let n = current.checked_add(*by)?;
            (Some(n.to_string().into_bytes()), Observed::Int(n))
        }
        // Time does not pass in this model: a time to live never ends.
        Op::SetWith { value, cond, .. } => {
            let allowed = match cond {
                None => true,
                Some(SetCond::IfAbsent) => state.is_none(),
                Some(SetCond::IfPresent) => state.is_some(),
            };
            let new = if allowed {
                Some(value.clone())
            } else {
                state.clone()
            };
            let seen = match cond {
                None => Observed::Done,
                Some(_) => Observed::Swapped(allowed),
            };
            (new, seen)
        }
        Op::Exists => (state.clone(), Observed::Existed(state.is_some())),
        Op::Atomic(_) => panic!("the single-key model has no atomic operations"),
    })
}

fn small_int(rng: &mut Rng) -> Value {
    rng.below(6).to_string().into_bytes()
}

fn random_op(rng: &mut Rng, client: usize, i: usize, recent: &[Value]) -> Op {
    let unique = || format!("c{client}-{i}").into_bytes();
    let roll = rng.below(100);
    if roll < 45 {
        Op::Get
    } else if roll < 65 {
        Op::Set(if rng.chance(0.3) {
            small_int(rng)
        } else {
            unique()
        })
    } else if roll < 75 {
        Op::Incr(rng.below(9) as i64 - 3)
    } else if roll < 90 {
        let expected = match rng.below(4) {
            0 => None,
            1 => Some(small_int(rng)),
            _ if !recent.is_empty() => {
                Some(recent[rng.below(recent.len() as u64) as usize].clone())
            }
            _ => Some(small_int(rng)),
        };
        let new = match rng.below(10) {
            0 => None,
            1..=3 => Some(small_int(rng)),
            _ => Some(unique()),
        };
        Op::Cas { expected, new }
    } else {
        Op::Delete
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ok,
    Failed,
    Unknown,
}

struct Planned {
    client: usize,
    key: usize,
    op: Op,
    invoke: Time,
    complete: Time,
    lin: Time,
    applied: bool,
    kind: Kind,
    inspect_delete: bool,
}

/// A linearizable history of `cfg.ops` operations.
pub fn generate(seed: u64, cfg: &GenConfig) -> History {
    let mut rng = Rng::new(seed);
    let mut free: Vec<Time> = (0..cfg.clients).map(|_| rng.below(cfg.max_think)).collect();
    let mut recent: Vec<Vec<Value>> = vec![Vec::new(); cfg.keys];
    let mut planned = Vec::with_capacity(cfg.ops);
    for i in 0..cfg.ops {
        let client = i % cfg.clients;
        let key = rng.below(cfg.keys as u64) as usize;
        let op = random_op(&mut rng, client, i, &recent[key]);
        if let Op::Set(v) | Op::Cas { new: Some(v), .. } = &op {
            if recent[key].len() == 4 {
                recent[key].remove(0);
            }
            recent[key].push(v.clone());
        }
        let invoke = free[client] + rng.range(1, cfg.max_think);
        let latency = rng.range(1, cfg.max_latency);
        let lin = invoke + rng.below(latency + 1);
        let kind = if rng.chance(cfg.unknown) {
            Kind::Unknown
        } else if rng.chance(cfg.failed) {
            Kind::Failed
        } else {
            Kind::Ok
        };
        let (complete, applied) = match kind {
            Kind::Ok => (invoke + latency, true),
            Kind::Failed => (invoke + latency, false),
            Kind::Unknown => (invoke + 3 * cfg.max_latency, rng.chance(0.5)),
        };
        free[client] = complete;
        planned.push(Planned {
            client,
            key,
            op,
            invoke,
            complete,
            lin,
            applied,
            kind,
            inspect_delete: rng.chance(0.5),
        });
    }
    let mut order: Vec<usize> = (0..planned.len()).filter(|&i| planned[i].applied).collect();
    order.sort_by_key(|&i| (planned[i].lin, i));
    let mut state: Vec<Option<Value>> = vec![None; cfg.keys];
    let mut observed: Vec<Option<Observed>> = vec![None; planned.len()];
    for i in order {
        let p = &planned[i];
        if let Some((new, obs)) = model_apply(&state[p.key], &p.op, p.inspect_delete) {
            state[p.key] = new;
            observed[i] = Some(obs);
        }
    }
    planned
        .into_iter()
        .zip(observed)
        .map(|(p, obs)| {
            let outcome = match (p.kind, obs) {
                (Kind::Ok, Some(o)) => Outcome::Ok(o),
                // Refused by the server (Incr of a non-integer): an error answer, no effect.
                (Kind::Ok, None) | (Kind::Failed, _) => Outcome::Failed,
                (Kind::Unknown, _) => Outcome::Unknown,
            };
            Operation::new(
                p.client as u64,
                key_name(p.key),
                p.op,
                p.invoke,
                p.complete,
                outcome,
            )
        })
        .collect()
}

/// The same history with one completed read (chosen by `seed`) now claiming to have seen a value
/// that no operation ever wrote; `None` if there is no completed read.
pub fn corrupt_one_read(h: &History, seed: u64) -> Option<History> {
    let reads: Vec<usize> = (0..h.len())
        .filter(|&i| matches!(h.ops()[i].outcome, Outcome::Ok(Observed::Value(_))))
        .collect();
    if reads.is_empty() {
        return None;
    }
    let victim = reads[Rng::new(seed).below(reads.len() as u64) as usize];
    let mut ops = h.ops().to_vec();
    ops[victim].outcome = Outcome::Ok(Observed::Value(Some(b"never written".to_vec())));
    Some(ops.into())
}

/// The same history with one completed read (the first found from a point chosen by `seed`) now
/// claiming to have seen a stale value: one written, by the only operation that ever writes it,
/// before another completed write that finished before the read began. `None` if no read fits.
pub fn make_one_read_stale(h: &History, seed: u64) -> Option<History> {
    use std::collections::HashMap;
    let ops = h.ops();
    // How many operations (of any outcome but Failed) may write each (key, value).
    let mut writers: HashMap<(&[u8], &[u8]), usize> = HashMap::new();
    for o in ops {
        if o.outcome == Outcome::Failed {
            continue;
        }
        if let Op::Set(v) | Op::Cas { new: Some(v), .. } = &o.op {
            *writers.entry((&o.key, v)).or_default() += 1;
        }
    }
    let completed_set = |o: &Operation| matches!((&o.op, &o.outcome), (Op::Set(_), Outcome::Ok(_)));
    let n = ops.len();
    let start = Rng::new(seed).below(n as u64) as usize;
    for r in (0..n).map(|k| (start + k) % n) {
        let read = &ops[r];
        if !matches!(read.outcome, Outcome::Ok(Observed::Value(_))) {
            continue;
        }
        let same_key = |o: &&Operation| o.key == read.key;
        for w in ops.iter().filter(same_key).filter(|o| completed_set(o)) {
            let Op::Set(v) = &w.op else { continue };
            if writers[&(&w.key[..], &v[..])] != 1 {
                continue;
            }
            let overwritten = ops.iter().filter(same_key).any(|w2| {
                completed_set(w2)
                    && w.complete < w2.invoke
                    && w2.complete < read.invoke
                    && w2.op != w.op
            });
            if overwritten {
                let mut out = ops.to_vec();
                out[r].outcome = Outcome::Ok(Observed::Value(Some(v.clone())));
                return Some(out.into());
            }
        }
    }
    None
}

/// Asserts that the checker accepts `ops`.
#[track_caller]
pub fn accepted(ops: Vec<Operation>) {
    let h = History::from(ops);
    if let Err(e) = check(&h) {
        panic!("expected linearizable, got:\n{e}");
    }
}

/// Asserts that the checker rejects `ops`, and that the smallest failing sub-history it reports
/// is rejected too; returns the violation.
#[track_caller]
pub fn rejected(ops: Vec<Operation>) -> Violation {
    let h = History::from(ops);
    match check(&h) {
        Err(CheckError::Violation(v)) => {
            let again = check(&History::from(v.minimal.clone()));
            assert!(
                matches!(again, Err(CheckError::Violation(_))),
                "minimal sub-history passes:\n{v}"
            );
            *v
        }
        other => panic!("expected a violation, got {other:?}"),
    }
}
