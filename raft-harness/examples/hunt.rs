//! Runs many seeds of the fault harness and reports failures:
//! `cargo run --release -p raft-harness --example hunt -- RUNS [BUG]`
//! where BUG is one of vote, ack, commit, read (default: none).
use raft_harness::random_run;

fn main() {
    let mut args = std::env::args().skip(1);
    let runs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let bug = args.next().unwrap_or_default();
    let mut failures = 0;
    for seed in 0..runs {
        let result = random_run(seed, |c| match bug.as_str() {
            "vote" => c.bugs.vote_without_log_check = true,
            "ack" => c.bugs.ack_before_persist = true,
            "commit" => c.bugs.commit_earlier_term_by_counting = true,
            "read" => c.bugs.read_index_without_quorum = true,
            _ => {}
        });
        if let Err(f) = result {
            failures += 1;
            if failures <= 3 {
                println!("{f}");
            }
        }
    }
    println!("{failures} failures in {runs} runs");
}
