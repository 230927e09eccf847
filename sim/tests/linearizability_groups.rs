//! The checker on what Redis adds to single-key registers: atomic operations on several keys
//! (MGET, MSET, MULTI/EXEC, a SCAN call), conditional writes (SET NX/XX) and keys that expire.
//! Hand-written histories with known verdicts, and a comparison against brute force for groups.

mod common;

use common::{accepted, model_apply, rejected};
use proptest::prelude::*;
use sim::history::{History, Key, Observed, Op, Operation, Outcome, SetCond, Value};
use sim::linearizability::{check, CheckError};

fn v(s: &str) -> Value {
    s.as_bytes().to_vec()
}

fn k(s: &str) -> Key {
    s.as_bytes().to_vec()
}

/// An atomic operation on keys `a` and `b` (named "ab" for display).
fn atomic(c: u64, i: u64, r: u64, parts: Vec<(&str, Op)>, seen: Vec<Observed>) -> Operation {
    let parts = parts.into_iter().map(|(key, op)| (k(key), op)).collect();
    Operation::new(
        c,
        "ab",
        Op::Atomic(parts),
        i,
        r,
        Outcome::Ok(Observed::Results(seen)),
    )
}

fn mset(c: u64, i: u64, r: u64, a: &str, b: &str) -> Operation {
    atomic(
        c,
        i,
        r,
        vec![("a", Op::Set(v(a))), ("b", Op::Set(v(b)))],
        vec![Observed::Done, Observed::Done],
    )
}

fn mget(c: u64, i: u64, r: u64, a: Option<&str>, b: Option<&str>) -> Operation {
    atomic(
        c,
        i,
        r,
        vec![("a", Op::Get), ("b", Op::Get)],
        vec![Observed::Value(a.map(v)), Observed::Value(b.map(v))],
    )
}

fn scan(c: u64, i: u64, r: u64, a: bool, b: bool) -> Operation {
    atomic(
        c,
        i,
        r,
        vec![("a", Op::Exists), ("b", Op::Exists)],
        vec![Observed::Existed(a), Observed::Existed(b)],
    )
}

fn on(key: &str, c: u64, i: u64, r: u64, op: Op, seen: Observed) -> Operation {
    Operation::new(c, key, op, i, r, Outcome::Ok(seen))
}

fn get(key: &str, c: u64, i: u64, r: u64, seen: Option<&str>) -> Operation {
    on(key, c, i, r, Op::Get, Observed::Value(seen.map(v)))
}

fn set_px(key: &str, c: u64, i: u64, r: u64, val: &str) -> Operation {
    let op = Op::SetWith {
        value: v(val),
        cond: None,
        ttl_ms: Some(100),
    };
    on(key, c, i, r, op, Observed::Done)
}

fn set_nx_px(key: &str, c: u64, i: u64, r: u64, val: &str, written: bool) -> Operation {
    let op = Op::SetWith {
        value: v(val),
        cond: Some(SetCond::IfAbsent),
        ttl_ms: Some(100),
    };
    on(key, c, i, r, op, Observed::Swapped(written))
}

// ---- Atomic operations ---------------------------------------------------------------------------

#[test]
fn an_mset_seen_half_applied_is_rejected() {
    let v = rejected(vec![
        mset(1, 0, 10, "1", "1"),
        mset(1, 20, 40, "2", "2"),
        mget(2, 25, 35, Some("2"), Some("1")),
    ]);
    assert_eq!(v.keys, vec![k("a"), k("b")]);
    assert_eq!(v.key, b"a,b");
}

#[test]
fn concurrent_atomic_operations_may_apply_in_either_order() {
    accepted(vec![
        mset(1, 0, 30, "1", "1"),
        mset(2, 5, 25, "2", "2"),
        mget(3, 10, 40, Some("1"), Some("1")),
        mget(4, 35, 50, Some("1"), Some("1")),
    ]);
}

#[test]
fn a_transaction_seen_apart_is_rejected() {
    // MULTI; INCR a; INCR b; EXEC answered [1, 1]: a read cannot see a's increment alone.
    let txn = atomic(
        1,
        0,
        20,
        vec![("a", Op::Incr(1)), ("b", Op::Incr(1))],
        vec![Observed::Int(1), Observed::Int(1)],
    );
    rejected(vec![txn.clone(), mget(2, 5, 15, Some("1"), None)]);
    accepted(vec![txn, mget(2, 5, 15, None, None)]);
}

#[test]
fn a_transaction_reads_its_own_writes() {
    let txn = atomic(
        1,
        0,
        10,
        vec![("a", Op::Set(v("7"))), ("a", Op::Get), ("b", Op::Delete)],
        vec![
            Observed::Done,
            Observed::Value(Some(v("7"))),
            Observed::Existed(false),
        ],
    );
    accepted(vec![txn.clone(), get("a", 2, 20, 30, Some("7"))]);
    let mut wrong = txn;
    wrong.outcome = Outcome::Ok(Observed::Results(vec![
        Observed::Done,
        Observed::Value(None),
        Observed::Existed(false),
    ]));
    rejected(vec![wrong]);
}

#[test]
fn a_scan_lists_the_keys_present_at_one_moment() {
    let del_a = on("a", 1, 20, 30, Op::Delete, Observed::Existed(true));
    accepted(vec![
        mset(1, 0, 10, "1", "1"),
        del_a.clone(),
        scan(2, 25, 28, true, true),
        scan(2, 40, 50, false, true),
    ]);
    rejected(vec![
        mset(1, 0, 10, "1", "1"),
        del_a,
        scan(2, 40, 50, true, true),
    ]);
}

#[test]
fn an_unknown_transaction_applies_whole_or_not_at_all() {
    let mut txn = mset(1, 0, 10, "1", "1");
    txn.outcome = Outcome::Unknown;
    accepted(vec![txn.clone(), mget(2, 20, 30, Some("1"), Some("1"))]);
    accepted(vec![txn.clone(), mget(2, 20, 30, None, None)]);
    rejected(vec![txn, mget(2, 20, 30, Some("1"), None)]);
}

#[test]
fn keys_no_atomic_operation_ties_are_checked_apart() {
    // "x" is on its own: its violation names it alone, whatever the group does.
    let h = vec![
        mset(1, 0, 10, "1", "1"),
        mget(2, 20, 30, Some("1"), Some("1")),
        get("x", 3, 0, 5, Some("ghost")),
    ];
    let v = rejected(h);
    assert_eq!(v.keys, vec![k("x")]);
}

// ---- Conditional writes and expiry -------------------------------------------------------------

#[test]
fn set_nx_writes_only_an_absent_key() {
    accepted(vec![
        set_nx_px("l", 1, 0, 10, "1", true),
        set_nx_px("l", 2, 20, 30, "2", false),
        get("l", 3, 40, 50, Some("1")),
    ]);
    rejected(vec![
        set_nx_px("l", 1, 0, 10, "1", true),
        set_nx_px("l", 2, 20, 30, "2", true),
        get("l", 3, 40, 50, Some("1")),
    ]);
}

#[test]
fn a_lock_may_be_taken_again_once_it_expired() {
    accepted(vec![
        set_nx_px("l", 1, 0, 10, "1", true),
        set_nx_px("l", 2, 20, 30, "2", true),
        get("l", 3, 40, 50, Some("2")),
    ]);
}

#[test]
fn a_key_with_a_time_to_live_may_vanish_at_any_moment_after_its_write() {
    accepted(vec![
        set_px("e", 1, 0, 10, "1"),
        get("e", 2, 20, 30, Some("1")),
        get("e", 2, 40, 50, None),
    ]);
}

#[test]
fn an_expired_key_does_not_come_back() {
    // What replicas judging expiry by their own clocks do: one calls it gone, another still
    // serves it.
    let v = rejected(vec![
        set_px("e", 1, 0, 10, "1"),
        get("e", 2, 20, 30, None),
        get("e", 3, 40, 50, Some("1")),
    ]);
    assert!(v.explanation.contains("real-time order"), "{v}");
}

#[test]
fn a_key_does_not_expire_before_it_is_written() {
    rejected(vec![
        set_px("e", 1, 0, 10, "1"),
        get("e", 2, 20, 30, None),
        set_px("e", 1, 40, 50, "2"),
        get("e", 2, 35, 38, Some("2")),
    ]);
}

#[test]
fn a_write_without_time_to_live_does_not_expire() {
    let plain = on("e", 1, 20, 30, Op::Set(v("2")), Observed::Done);
    rejected(vec![
        set_px("e", 1, 0, 10, "1"),
        plain.clone(),
        get("e", 2, 40, 50, None),
    ]);
    accepted(vec![
        set_px("e", 1, 0, 10, "1"),
        plain,
        get("e", 2, 40, 50, Some("2")),
    ]);
}

#[test]
fn a_conditional_write_that_did_not_write_sets_no_expiry() {
    let plain = on("e", 1, 0, 10, Op::Set(v("1")), Observed::Done);
    rejected(vec![
        plain,
        set_nx_px("e", 2, 20, 30, "1", false),
        get("e", 3, 40, 50, None),
    ]);
}

// ---- Brute force ---------------------------------------------------------------------------------

/// Brute force over the registers of `a` and `b`: every order the real-time constraints allow,
/// and every subset of the unknown operations.
fn brute_force_linearizable(h: &History) -> bool {
    type State = [Option<Value>; 2];
    let slot = |key: &[u8]| usize::from(key == b"b");
    let parts_of = |o: &Operation| -> Vec<(usize, Op)> {
        match &o.op {
            Op::Atomic(parts) => parts.iter().map(|(k, op)| (slot(k), op.clone())).collect(),
            op => vec![(slot(&o.key), op.clone())],
        }
    };
    let apply = |state: &State, o: &Operation| -> Option<State> {
        let seen: Vec<Option<Observed>> = match &o.outcome {
            Outcome::Ok(Observed::Results(r)) => r.iter().cloned().map(Some).collect(),
            Outcome::Ok(seen) => vec![Some(seen.clone())],
            _ => vec![None; parts_of(o).len()],
        };
        let mut next = state.clone();
        for ((i, op), seen) in parts_of(o).into_iter().zip(seen) {
            let inspect = !matches!(seen, Some(Observed::Done));
            let (new, obs) = model_apply(&next[i], &op, inspect)?;
            if seen.is_some_and(|s| s != obs) {
                return None;
            }
            next[i] = new;
        }
        Some(next)
    };
    let ops: Vec<&Operation> = h
        .iter()
        .filter(|o| match &o.outcome {
            Outcome::Failed => false,
            Outcome::Unknown => !o.op.is_read(),
            Outcome::Ok(_) => true,
        })
        .collect();
    fn go(
        ops: &[&Operation],
        done: &mut Vec<bool>,
        state: &State,
        apply: &dyn Fn(&State, &Operation) -> Option<State>,
    ) -> bool {
        let pending_ok = (0..ops.len()).filter(|&i| !done[i] && ops[i].outcome != Outcome::Unknown);
        let Some(bound) = pending_ok.map(|i| ops[i].complete).min() else {
            return true;
        };
        for i in 0..ops.len() {
            if done[i] || ops[i].invoke > bound {
                continue;
            }
            let Some(next) = apply(state, ops[i]) else {
                continue;
            };
            done[i] = true;
            let found = go(ops, done, &next, apply);
            done[i] = false;
            if found {
                return true;
            }
        }
        false
    }
    go(&ops, &mut vec![false; ops.len()], &[None, None], &apply)
}

fn small_value() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![Just(None), (0..3u8).prop_map(|n| Some(v(&n.to_string())))]
}

fn single_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Get),
        2 => (0..3u8).prop_map(|n| Op::Set(v(&n.to_string()))),
        1 => Just(Op::Delete),
        1 => (-1..2i64).prop_map(Op::Incr),
        1 => Just(Op::Exists),
        1 => (0..3u8, any::<bool>()).prop_map(|(n, nx)| Op::SetWith {
            value: v(&n.to_string()),
            cond: Some(if nx { SetCond::IfAbsent } else { SetCond::IfPresent }),
            ttl_ms: None,
        }),
    ]
}

fn observed_for(op: &Op) -> BoxedStrategy<Observed> {
    match op {
        Op::Get => small_value().prop_map(Observed::Value).boxed(),
        Op::Set(_) => Just(Observed::Done).boxed(),
        Op::Delete | Op::Exists => any::<bool>().prop_map(Observed::Existed).boxed(),
        Op::Incr(_) => (-2..4i64).prop_map(Observed::Int).boxed(),
        Op::SetWith { .. } => any::<bool>().prop_map(Observed::Swapped).boxed(),
        _ => unreachable!("not generated"),
    }
}

/// An operation on `a`, on `b`, or on both atomically, with a random (often wrong) answer.
fn group_op() -> impl Strategy<Value = Operation> {
    let key = prop_oneof![Just(k("a")), Just(k("b"))];
    let parts = prop::collection::vec((key, single_op()), 1..=3);
    (parts, 0..30u64, 0..15u64, 0..4u64, 0..8u8).prop_flat_map(
        |(parts, invoke, len, client, fate)| {
            let seen: Vec<BoxedStrategy<Observed>> =
                parts.iter().map(|(_, op)| observed_for(op)).collect();
            seen.prop_map(move |seen| {
                let outcome = |o: Observed| match fate {
                    0 => Outcome::Unknown,
                    1 => Outcome::Failed,
                    _ => Outcome::Ok(o),
                };
                if parts.len() == 1 {
                    let (key, op) = parts[0].clone();
                    let o = outcome(seen[0].clone());
                    return Operation::new(client, key, op, invoke, invoke + len, o);
                }
                let o = outcome(Observed::Results(seen.clone()));
                let op = Op::Atomic(parts.clone());
                Operation::new(client, "ab", op, invoke, invoke + len, o)
            })
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]

    #[test]
    fn agrees_with_brute_force_on_groups(ops in prop::collection::vec(group_op(), 1..7)) {
        let h = History::from(ops);
        let expected = brute_force_linearizable(&h);
        let got = check(&h);
        prop_assert_eq!(got.is_ok(), expected, "{:?}\n{:#?}", got, h);
        if let Err(CheckError::Violation(v)) = got {
            prop_assert!(!brute_force_linearizable(&History::from(v.minimal.clone())));
        }
    }
}
