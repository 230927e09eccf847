//! Liveness when replies take longer than election timeouts (the 6.5840 lab's
//! Figure8Unreliable network): nine replies in ten arrive one to seven election timeouts late.
//! Elections then often fail (grants arrive after the candidate gave up), so the property is a
//! rate over seeds: almost every run commits within a bound. With a check-quorum window equal
//! to the minimum election timeout, as the core had before, leaders are deposed one window after
//! they win for replies that are merely late, and many runs never commit.

use raft_core::Config;
use raft_harness::{slow_reply_run, steps_per_election_timeout};

const SEEDS: u64 = 200;
/// As in the lab: an election timeout of three heartbeats.
const ELECTION_TICKS: u32 = 3;
/// A proposal must commit within this many election timeouts.
const BOUND_IN_TIMEOUTS: u64 = 70;

/// How many of the seeds failed to commit within the bound.
fn failures(configure: impl Fn(&mut Config)) -> u64 {
    let bound = BOUND_IN_TIMEOUTS * steps_per_election_timeout(3, ELECTION_TICKS);
    let mut failed = 0;
    for seed in 0..SEEDS {
        let outcome = slow_reply_run(seed, bound, |cfg| {
            cfg.election_ticks = ELECTION_TICKS;
            cfg.heartbeat_ticks = 1;
            cfg.pre_vote = seed % 2 == 0;
            configure(cfg);
        });
        match outcome {
            Ok(_) => {}
            Err(failure) if failure.violation.rule == "liveness" => failed += 1,
            Err(failure) => panic!("{failure}"),
        }
    }
    println!(
        "{failed} of {SEEDS} runs did not commit within {BOUND_IN_TIMEOUTS} election timeouts"
    );
    failed
}

#[test]
fn long_delayed_replies_still_let_a_leader_commit() {
    let failed = failures(|_| {});
    assert!(
        failed * 100 <= SEEDS,
        "{failed} of {SEEDS} runs never committed with slow replies"
    );
}

#[test]
fn teeth_a_check_quorum_window_of_one_election_timeout_stalls_under_slow_replies() {
    let failed = failures(|cfg| cfg.check_quorum_ticks = Some(cfg.election_ticks));
    assert!(
        failed * 100 >= 3 * SEEDS,
        "only {failed} of {SEEDS} runs stalled: the old window would not be caught"
    );
}
