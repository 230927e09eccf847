//! The linearizability checker: hand-written histories with known verdicts, histories that are
//! linearizable by construction (and their corruptions), and a comparison against brute force.

mod common;

use common::{
    accepted, corrupt_one_read, generate, make_one_read_stale, model_apply, rejected, GenConfig,
};
use proptest::prelude::*;
use sim::history::{History, Observed, Op, Operation, Outcome, Value};
use sim::linearizability::{check, check_with, CheckError, Config};

// ---- Building histories on key "x" -------------------------------------------------------------

fn v(s: &str) -> Value {
    s.as_bytes().to_vec()
}

fn op(client: u64, invoke: u64, complete: u64, op: Op, outcome: Outcome) -> Operation {
    Operation::new(client, "x", op, invoke, complete, outcome)
}

fn get(c: u64, i: u64, r: u64, seen: Option<&str>) -> Operation {
    op(c, i, r, Op::Get, Outcome::Ok(Observed::Value(seen.map(v))))
}

fn set(c: u64, i: u64, r: u64, val: &str) -> Operation {
    op(c, i, r, Op::Set(v(val)), Outcome::Ok(Observed::Done))
}

fn set_ended(c: u64, i: u64, r: u64, val: &str, outcome: Outcome) -> Operation {
    op(c, i, r, Op::Set(v(val)), outcome)
}

fn incr(c: u64, i: u64, r: u64, by: i64, result: i64) -> Operation {
    op(c, i, r, Op::Incr(by), Outcome::Ok(Observed::Int(result)))
}

fn cas(
    c: u64,
    i: u64,
    r: u64,
    expected: Option<&str>,
    new: Option<&str>,
    swapped: bool,
) -> Operation {
    let o = Op::Cas {
        expected: expected.map(v),
        new: new.map(v),
    };
    op(c, i, r, o, Outcome::Ok(Observed::Swapped(swapped)))
}

fn del(c: u64, i: u64, r: u64, existed: Option<bool>) -> Operation {
    let seen = existed.map_or(Observed::Done, Observed::Existed);
    op(c, i, r, Op::Delete, Outcome::Ok(seen))
}

// ---- Known-bad histories -----------------------------------------------------------------------

#[test]
fn stale_read_after_a_completed_write_is_rejected() {
    let v = rejected(vec![
        set(1, 0, 10, "1"),
        set(1, 20, 30, "2"),
        get(2, 40, 50, Some("1")),
    ]);
    assert_eq!(v.key, b"x");
    assert_eq!(v.ops.len(), 3);
    assert_eq!(v.longest_prefix.len(), 2, "{v}");
    assert_eq!(v.state_after_prefix, vec![Some(b"2".to_vec())]);
    assert_eq!(v.stuck_before_return_of, Some(2));
}

#[test]
fn lost_acknowledged_write_is_rejected() {
    rejected(vec![
        set(1, 0, 10, "1"),
        get(2, 20, 30, None),
        get(3, 40, 50, None),
    ]);
    // Also with other traffic around: a later write, but no write explains the absence.
    rejected(vec![
        set(1, 0, 10, "a"),
        set(2, 5, 15, "b"),
        get(3, 20, 30, None),
        set(1, 40, 50, "c"),
        get(2, 60, 70, Some("c")),
    ]);
}

#[test]
fn a_write_applied_twice_is_rejected() {
    // One incr of 1, then two reads that both see 2.
    rejected(vec![
        incr(1, 0, 10, 1, 1),
        get(2, 20, 30, Some("2")),
        get(3, 40, 50, Some("2")),
    ]);
    // Two increments of 1 whose answers say one of them counted twice.
    rejected(vec![incr(1, 0, 10, 1, 1), incr(2, 20, 30, 1, 3)]);
}

#[test]
fn a_read_of_a_value_never_written_is_rejected() {
    rejected(vec![set(1, 0, 10, "a"), get(2, 5, 15, Some("zzz"))]);
    rejected(vec![get(2, 5, 15, Some("a"))]);
}

#[test]
fn a_cas_that_swaps_a_value_that_did_not_match_is_rejected() {
    rejected(vec![
        set(1, 0, 10, "a"),
        cas(2, 20, 30, Some("b"), Some("c"), true),
    ]);
    // Expected absent, but the key exists.
    rejected(vec![
        set(1, 0, 10, "a"),
        cas(2, 20, 30, None, Some("c"), true),
    ]);
    // And the converse: it matched, yet reports no swap.
    rejected(vec![
        set(1, 0, 10, "a"),
        cas(2, 20, 30, Some("a"), Some("c"), false),
    ]);
}

#[test]
fn reads_that_flip_between_two_completed_writes_are_rejected() {
    rejected(vec![
        set(1, 0, 100, "a"),
        set(2, 0, 100, "b"),
        get(3, 200, 210, Some("a")),
        get(3, 220, 230, Some("b")),
    ]);
}

#[test]
fn a_failed_write_whose_effect_appears_is_rejected() {
    rejected(vec![
        set(1, 0, 10, "1"),
        set_ended(2, 20, 30, "2", Outcome::Failed),
        get(3, 40, 50, Some("2")),
    ]);
}

#[test]
fn an_unknown_write_cannot_take_effect_before_it_was_invoked() {
    rejected(vec![
        set(1, 0, 10, "1"),
        get(2, 20, 30, Some("2")),
        set_ended(3, 40, 50, "2", Outcome::Unknown),
    ]);
}

#[test]
fn delete_and_incr_answers_are_checked() {
    rejected(vec![set(1, 0, 10, "a"), del(2, 20, 30, Some(false))]);
    rejected(vec![del(2, 20, 30, Some(true))]);
    // Incr of a non-integer is refused by the server; an Ok answer is impossible.
    rejected(vec![set(1, 0, 10, "abc"), incr(2, 20, 30, 1, 1)]);
    // Overflow likewise.
    rejected(vec![
        set(1, 0, 10, &i64::MAX.to_string()),
        incr(2, 20, 30, 1, i64::MIN),
    ]);
}

// ---- Known-good histories ----------------------------------------------------------------------

#[test]
fn concurrent_writes_may_be_read_in_either_order() {
    for first in ["a", "b"] {
        let second = if first == "a" { "b" } else { "a" };
        // Both writes done: any one of them may have won.
        accepted(vec![
            set(1, 0, 100, "a"),
            set(2, 0, 100, "b"),
            get(3, 200, 210, Some(first)),
            get(3, 220, 230, Some(first)),
        ]);
        // Reads during the writes may see one and then the other.
        accepted(vec![
            set(1, 0, 100, "a"),
            set(2, 0, 100, "b"),
            get(3, 10, 20, Some(first)),
            get(3, 30, 40, Some(second)),
        ]);
    }
}

#[test]
fn an_unknown_write_may_take_effect_later() {
    accepted(vec![
        set(1, 0, 10, "1"),
        set_ended(2, 5, 6, "2", Outcome::Unknown),
        get(3, 20, 30, Some("1")),
        get(3, 100, 110, Some("2")),
        get(4, 120, 130, Some("2")),
    ]);
}

#[test]
fn an_unknown_write_may_never_take_effect() {
    accepted(vec![
        set(1, 0, 10, "1"),
        set_ended(2, 5, 6, "2", Outcome::Unknown),
        get(3, 100, 110, Some("1")),
        get(3, 200, 210, Some("1")),
    ]);
}

#[test]
fn a_failed_write_that_never_appears_is_fine() {
    accepted(vec![
        set(1, 0, 10, "1"),
        set_ended(2, 20, 30, "2", Outcome::Failed),
        get(3, 40, 50, Some("1")),
    ]);
}

#[test]
fn the_model_follows_redis() {
    accepted(vec![
        incr(1, 0, 10, 5, 5), // absent counts as 0
        get(2, 20, 30, Some("5")),
        set(1, 40, 50, "007"),
        incr(2, 60, 70, 1, 8), // parsed as decimal, written canonically
        get(3, 80, 90, Some("8")),
        cas(1, 100, 110, Some("8"), None, true), // swap to absent
        get(2, 120, 130, None),
        del(3, 140, 150, Some(false)),
        cas(1, 160, 170, None, Some("x"), true),
        del(3, 180, 190, Some(true)),
        del(3, 200, 210, None),
    ]);
    // A refused incr (non-integer) recorded as unknown changes nothing.
    accepted(vec![
        set(1, 0, 10, "abc"),
        op(2, 20, 30, Op::Incr(1), Outcome::Unknown),
        get(3, 40, 50, Some("abc")),
    ]);
}

#[test]
fn operations_that_touch_count_as_concurrent() {
    // The write returns at 10 and the read is invoked at 10: either order is allowed.
    accepted(vec![set(1, 0, 10, "1"), get(2, 10, 20, None)]);
    rejected(vec![set(1, 0, 10, "1"), get(2, 11, 20, None)]);
}

#[test]
fn keys_are_independent_and_the_failing_key_is_named() {
    let mut ops = Vec::new();
    for (i, key) in ["a", "b", "c"].iter().enumerate() {
        let t = 100 * i as u64;
        ops.push(Operation::new(
            1,
            *key,
            Op::Set(v(key)),
            t,
            t + 10,
            Outcome::Ok(Observed::Done),
        ));
        let seen = if *key == "b" { "a" } else { key };
        ops.push(Operation::new(
            2,
            *key,
            Op::Get,
            t + 20,
            t + 30,
            Outcome::Ok(Observed::Value(Some(v(seen)))),
        ));
    }
    let h = History::from(ops);
    let e = check(&h).unwrap_err();
    assert_eq!(e.violation().expect("a violation").key, b"b");
    assert!(
        e.to_string().contains("key \"b\" is not linearizable"),
        "{e}"
    );
    // The same answer every time.
    assert_eq!(check(&h).unwrap_err(), e);
    assert_eq!(h.split_by_key().len(), 3);
}

#[test]
fn the_recording_api_leaves_pending_operations_unknown() {
    let mut h = History::new();
    let w = h.invoke(1, "k", Op::Set(v("1")), 0);
    h.complete(w, 10, Outcome::Ok(Observed::Done));
    let _pending = h.invoke(2, "k", Op::Set(v("2")), 15);
    let r = h.invoke(3, "k", Op::Get, 20);
    h.complete(r, 30, Outcome::Ok(Observed::Value(Some(v("2")))));
    assert!(check(&h).is_ok());
    h.complete(r, 30, Outcome::Ok(Observed::Value(Some(v("3")))));
    assert!(check(&h).unwrap_err().is_violation());
}

#[test]
fn malformed_operations_are_reported() {
    let e = check(&History::from(vec![op(
        1,
        0,
        10,
        Op::Get,
        Outcome::Ok(Observed::Done),
    )]));
    assert!(matches!(e, Err(CheckError::Malformed { .. })), "{e:?}");
    let e = check(&History::from(vec![set(1, 10, 5, "a")]));
    assert!(matches!(e, Err(CheckError::Malformed { .. })), "{e:?}");
}

#[test]
fn a_pathological_history_runs_out_of_budget_instead_of_forever() {
    // Timed-out increments by distinct powers of two, all concurrent, and a read of an integer none
    // of their subsets sums to: proving the violation means trying every subset.
    let history = |n: u64| {
        let mut ops: Vec<Operation> = (0..n)
            .map(|i| op(i, 0, 1, Op::Incr(1 << i), Outcome::Unknown))
            .collect();
        ops.push(get(99, 100, 110, Some("-1")));
        History::from(ops)
    };
    let tight = Config {
        max_steps_per_key: 10_000,
        ..Config::default()
    };
    let e = check_with(&history(20), &tight).unwrap_err();
    assert!(e.is_inconclusive(), "{e}");
    assert!(
        e.to_string().contains("undecided after 10000 search steps"),
        "{e}"
    );
    // With a few of them, the search decides.
    assert!(check_with(&history(5), &tight).unwrap_err().is_violation());
}

#[test]
fn the_minimal_sub_history_drops_what_does_not_matter() {
    // A long linearizable run, then a stale read, then more traffic.
    let mut ops = Vec::new();
    let mut t = 0;
    for i in 0..200 {
        ops.push(set(1, t, t + 10, &format!("v{i}")));
        ops.push(get(2, t + 5, t + 15, Some(&format!("v{i}"))));
        t += 20;
    }
    ops.push(get(3, t, t + 10, Some("v17")));
    for i in 0..50 {
        t += 20;
        ops.push(set(1, t, t + 10, &format!("w{i}")));
    }
    let v = rejected(ops);
    assert!(v.minimal.len() < 250, "{}", v.minimal.len());
    assert!(
        v.minimal
            .iter()
            .filter(|o| matches!(o.outcome, Outcome::Ok(Observed::Value(_))))
            .count()
            <= 2,
        "{v}"
    );
    assert!(v.minimal.iter().all(|o| o.invoke <= t - 50 * 20));
    let text = v.to_string();
    assert!(text.contains("get \"x\" => \"v17\""), "{text}");
}

// ---- Linearizable by construction ------------------------------------------------------------

/// An operation of a sequential run, with how far its window is widened around its instant.
#[derive(Clone, Debug)]
struct SeqOp {
    op: Op,
    before: u64,
    after: u64,
    /// 0: completed; 1: timed out but applied; 2: timed out, never applied; 3: failed.
    fate: u8,
}

fn small_value() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        (0..4u8).prop_map(|n| Some(n.to_string().into_bytes()))
    ]
}

fn any_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Get),
        2 => (0..4u8).prop_map(|n| Op::Set(n.to_string().into_bytes())),
        1 => Just(Op::Delete),
        1 => (small_value(), small_value()).prop_map(|(expected, new)| Op::Cas { expected, new }),
        1 => (-2..3i64).prop_map(Op::Incr),
    ]
}

fn seq_op() -> impl Strategy<Value = SeqOp> {
    (
        any_op(),
        0..400u64,
        0..400u64,
        prop_oneof![8 => Just(0u8), 1 => Just(1), 1 => Just(2), 1 => Just(3)],
    )
        .prop_map(|(op, before, after, fate)| SeqOp {
            op,
            before,
            after,
            fate,
        })
}

/// Runs the operations one at a time, 100 ns apart, then widens each window around its instant.
fn sequential_history(run: &[SeqOp]) -> History {
    let mut state: Option<Value> = None;
    let mut ops = Vec::new();
    for (i, s) in run.iter().enumerate() {
        let instant = 1_000 + 100 * i as u64;
        let applies = s.fate <= 1;
        let result = if applies {
            let r = model_apply(&state, &s.op, i % 2 == 0);
            if let Some((new, _)) = &r {
                state = new.clone();
            }
            r
        } else {
            None
        };
        let outcome = match (s.fate, result) {
            (0, Some((_, seen))) => Outcome::Ok(seen),
            (1 | 2, _) => Outcome::Unknown,
            _ => Outcome::Failed,
        };
        ops.push(Operation::new(
            (i % 8) as u64,
            "x",
            s.op.clone(),
            instant - s.before,
            instant + s.after,
            outcome,
        ));
    }
    ops.into()
}

/// Brute force: try every order the real-time constraints allow (and every subset of the unknown
/// operations).
fn brute_force_linearizable(h: &History) -> bool {
    let ops: Vec<&Operation> = h
        .iter()
        .filter(|o| match &o.outcome {
            Outcome::Failed => false,
            Outcome::Unknown => o.op != Op::Get,
            Outcome::Ok(_) => true,
        })
        .collect();
    fn go(ops: &[&Operation], done: &mut Vec<bool>, state: &Option<Value>) -> bool {
        let pending_ok = (0..ops.len()).filter(|&i| !done[i] && ops[i].outcome != Outcome::Unknown);
        let Some(bound) = pending_ok.map(|i| ops[i].complete).min() else {
            return true;
        };
        for i in 0..ops.len() {
            if done[i] || ops[i].invoke > bound {
                continue;
            }
            let next = match &ops[i].outcome {
                Outcome::Ok(seen) => {
                    let inspect = !matches!(seen, Observed::Done);
                    match model_apply(state, &ops[i].op, inspect) {
                        Some((new, obs)) if obs == *seen => new,
                        _ => continue,
                    }
                }
                _ => match model_apply(state, &ops[i].op, false) {
                    Some((new, _)) => new,
                    None => state.clone(),
                },
            };
            done[i] = true;
            let found = go(ops, done, &next);
            done[i] = false;
            if found {
                return true;
            }
        }
        false
    }
    go(&ops, &mut vec![false; ops.len()], &None)
}

fn small_random_op() -> impl Strategy<Value = Operation> {
    let outcome = |op: &Op| -> BoxedStrategy<Outcome> {
        let seen: BoxedStrategy<Observed> = match op {
            Op::Get => small_value().prop_map(Observed::Value).boxed(),
            Op::Set(_) => Just(Observed::Done).boxed(),
            Op::Delete => prop_oneof![
                Just(Observed::Done),
                any::<bool>().prop_map(Observed::Existed)
            ]
            .boxed(),
            Op::Cas { .. } => any::<bool>().prop_map(Observed::Swapped).boxed(),
            Op::Incr(_) => (-2..5i64).prop_map(Observed::Int).boxed(),
            Op::SetWith { .. } | Op::Exists | Op::Atomic(_) => unreachable!("not generated"),
        };
        prop_oneof![
            6 => seen.prop_map(Outcome::Ok),
            1 => Just(Outcome::Unknown),
            1 => Just(Outcome::Failed),
        ]
        .boxed()
    };
    (any_op(), 0..30u64, 0..15u64, 0..4u64).prop_flat_map(move |(op, invoke, len, client)| {
        outcome(&op).prop_map(move |outcome| {
            Operation::new(client, "x", op.clone(), invoke, invoke + len, outcome)
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn sequential_runs_widened_are_accepted(run in prop::collection::vec(seq_op(), 1..80)) {
        let h = sequential_history(&run);
        prop_assert!(check(&h).is_ok(), "{}", check(&h).unwrap_err());
    }

    #[test]
    fn sequential_runs_with_a_corrupted_read_are_rejected(
        run in prop::collection::vec(seq_op(), 1..80),
        seed in any::<u64>(),
    ) {
        let h = sequential_history(&run);
        if let Some(bad) = corrupt_one_read(&h, seed) {
            let e = check(&bad);
            prop_assert!(matches!(e, Err(CheckError::Violation(_))), "{:?}", e);
        }
    }

    #[test]
    fn agrees_with_brute_force(ops in prop::collection::vec(small_random_op(), 1..8)) {
        let h = History::from(ops);
        let expected = brute_force_linearizable(&h);
        let got = check(&h);
        prop_assert_eq!(got.is_ok(), expected, "{:?}", got);
        if let Err(CheckError::Violation(v)) = got {
            prop_assert!(!brute_force_linearizable(&History::from(v.minimal.clone())));
        }
    }
}

#[test]
fn generated_concurrent_histories_are_accepted_and_corruptions_rejected() {
    for seed in 0..40 {
        let cfg = GenConfig {
            unknown: 0.05,
            failed: 0.03,
            ..GenConfig::new(
                300 + 20 * seed as usize,
                1 + seed as usize % 3,
                2 + seed as usize % 7,
            )
        };
        let h = generate(seed, &cfg);
        if let Err(e) = check(&h) {
            panic!("seed {seed}: {e}");
        }
        let bad = corrupt_one_read(&h, seed).expect("reads");
        let e = check(&bad).unwrap_err();
        assert!(e.is_violation(), "seed {seed}: {e}");
        // A stale read takes the search itself to find (on a shorter history, to keep this quick:
        // refuting every placement of the timed-out operations is the expensive part).
        let short = generate(
            seed,
            &GenConfig {
                ops: 150 + 5 * seed as usize,
                ..cfg
            },
        );
        let bad = make_one_read_stale(&short, seed).expect("a read to make stale");
        match check(&bad) {
            Err(CheckError::Violation(v)) => {
                assert!(
                    v.explanation.contains("real-time order"),
                    "seed {seed}: {v}"
                );
                assert!(check(&History::from(v.minimal.clone())).is_err());
            }
            other => panic!("seed {seed}: {other:?}"),
        }
    }
}

#[test]
fn a_large_generated_history_is_checked_quickly() {
    let h = generate(7, &GenConfig::new(20_000, 5, 8));
    let start = std::time::Instant::now();
    check(&h).unwrap();
    // Generous: a few tens of milliseconds in practice, even unoptimised.
    assert!(start.elapsed().as_secs() < 10, "{:?}", start.elapsed());
}
