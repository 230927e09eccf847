//! Deterministic simulation of the replicated key-value store (DESIGN.md §6): whole clusters of
//! the production node, transport, storage and client on turmoil's simulated network and a disk
//! that loses unsynced writes, under a fault schedule drawn from a seed, judged by Raft's
//! invariants while running, liveness once the faults stop, and linearizability at the end.
//!
//! * [`cluster`]: one seeded run ([`cluster::RunConfig::from_seed`], [`cluster::run`]).
//! * [`faults`]: which faults a seed turns on (swarm testing) and their schedule.
//! * [`net`](mod@net): the driver's network seam over turmoil's TCP.
//! * [`observe`]: the invariants checked while a run goes, and the run's trace hash.
//! * [`history`]: the client-history model. Every operation on one key, with the client that
//!   issued it, its invoke and complete times on the simulator's global clock, and its outcome:
//!   ok (with what the client observed), failed (definitely not applied) or unknown (timed out).
//! * [`linearizability`]: a per-key linearizability checker for such histories (Wing–Gong search
//!   with Lowe's memoisation, as in Knossos and Porcupine), with a step budget that turns a
//!   pathological history into an `Inconclusive` answer instead of a hang.
//! * [`rng`]: the generator every random draw comes from, specified so that a seed replays the
//!   same run on every platform.
//!
//! The seeds, the determinism check and the teeth tests (each deliberate bug caught) are in
//! `tests/random_runs.rs`; the snapshot scenarios in `tests/snapshots.rs`.
//!
//! ```
//! use sim::history::{History, Observed, Op, Outcome};
//! use sim::linearizability::check;
//!
//! let mut h = History::new();
//! let w = h.invoke(1, "k", Op::Set(b"1".to_vec()), 0);
//! h.complete(w, 10, Outcome::Ok(Observed::Done));
//! let r = h.invoke(2, "k", Op::Get, 20);
//! h.complete(r, 30, Outcome::Ok(Observed::Value(None))); // lost the acknowledged write
//! assert!(check(&h).is_err());
//! ```

pub mod cluster;
pub mod faults;
pub mod history;
pub mod linearizability;
pub mod net;
pub mod observe;
pub mod rng;
