//! Deterministic simulation of the replicated key-value store (DESIGN.md §6).
//!
//! The simulator proper (seeded clusters on turmoil, fault schedules, the known-unsafe switches it
//! must catch) lands with issue 5. What is here already is usable on its own:
//!
//! * [`history`]: the client-history model. Every operation on one key, with the client that
//!   issued it, its invoke and complete times on the simulator's global clock, and its outcome:
//!   ok (with what the client observed), failed (definitely not applied) or unknown (timed out).
//! * [`linearizability`]: a per-key linearizability checker for such histories (Wing–Gong search
//!   with Lowe's memoisation, as in Knossos and Porcupine), with a step budget that turns a
//!   pathological history into an `Inconclusive` answer instead of a hang.
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
