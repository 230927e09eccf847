use raft_core::harness::random_run;
fn main() {
    let n: u64 = std::env::args().nth(1).unwrap().parse().unwrap();
    let mut found = 0;
    for seed in 0..n {
        if let Err(f) = random_run(seed, |c| c.bugs.commit_earlier_term_by_counting = true) {
            found += 1;
            if found <= 3 { println!("seed {seed}: {}", f.violation); }
        }
    }
    println!("{found} of {n}");
}
