use raft_core::harness::random_run;
fn main() {
    let seed: u64 = std::env::args().nth(1).unwrap().parse().unwrap();
    match random_run(seed, |_| {}) {
        Ok(s) => println!("ok {s:?}"),
        Err(f) => println!("{f}"),
    }
}
