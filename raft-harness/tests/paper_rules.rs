//! One test per rule of the Raft paper (and of the thesis, for pre-vote, check-quorum and
//! ReadIndex), each a scripted scenario on the harness, whose invariant checks run after every
//! event. Where a rule has a deliberately broken variant, the same script shows the break caught.

use std::cell::RefCell;
use std::collections::BTreeSet;

use bytes::Bytes;
use raft_core::{Config, Entry, EntryKind, HardState, Message, MessageBody, RestartState, Role};
use raft_harness::{Cluster, Violation};

fn plain(cfg: &mut Config) {
    cfg.pre_vote = false;
    cfg.check_quorum = false;
}

fn is_vote(m: &Message) -> bool {
    matches!(
        m.body,
        MessageBody::VoteRequest { .. } | MessageBody::VoteResponse { .. }
    )
}

fn among(ids: &'static [u64]) -> impl Fn(&Message) -> bool {
    move |m| ids.contains(&m.from) && ids.contains(&m.to)
}

fn elect(c: &mut Cluster, id: u64) -> Result<(), Violation> {
    c.campaign(id)?;
    c.stabilize()?;
    assert_eq!(c.core(id).role(), Role::Leader, "n{id} should have won");
    Ok(())
}

fn log_of(terms: &[u64]) -> RestartState {
    let entries: Vec<Entry> = terms
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            Entry::new(
                t,
                i as u64 + 1,
                EntryKind::Normal,
                Bytes::from(format!("{}@{t}", i + 1)),
            )
        })
        .collect();
    RestartState {
        hard_state: HardState {
            term: terms.last().copied().unwrap_or(0),
            vote: None,
            commit: 0,
        },
        entries,
        ..RestartState::default()
    }
}

fn terms(c: &Cluster, id: u64) -> Vec<u64> {
    c.core(id).log_entries().iter().map(|e| e.term).collect()
}

// ----- §5.2 Election safety -------------------------------------------------------------------

#[test]
fn election_safety_at_most_one_leader_per_term() -> Result<(), Violation> {
    // Every node campaigns in the same term at once; the harness fails on two leaders per term.
    for seed in 0..50 {
        let mut c = Cluster::new(5, seed, plain);
        for id in c.ids() {
            c.campaign(id)?;
        }
        c.faults.max_delay = 5;
        for _ in 0..3000 {
            c.random_step(false)?;
        }
        c.stabilize()?;
        let leaders: Vec<u64> = c
            .ids()
            .into_iter()
            .filter(|&id| c.core(id).role() == Role::Leader)
            .collect();
        assert!(leaders.len() <= 1, "seed {seed}: leaders {leaders:?}");
    }
    Ok(())
}

// ----- §5.4.1 Election restriction --------------------------------------------------------------

#[test]
fn vote_only_for_a_log_at_least_as_up_to_date() -> Result<(), Violation> {
    // n1 lacks the entry n2 and n3 hold: it cannot win; n2 can.
    let mut c = Cluster::with_states(
        vec![log_of(&[1]), log_of(&[1, 1]), log_of(&[1, 1])],
        1,
        plain,
    );
    c.campaign(1)?;
    c.stabilize()?;
    assert_ne!(c.core(1).role(), Role::Leader);
    assert_eq!(c.core(2).voted_for(), None, "n2 must refuse a shorter log");
    // A longer log of an older last term loses too.
    let mut c = Cluster::with_states(
        vec![log_of(&[1, 1, 1]), log_of(&[1, 2]), log_of(&[1, 2])],
        2,
        plain,
    );
    c.campaign(1)?;
    c.stabilize()?;
    assert_ne!(c.core(1).role(), Role::Leader);
    elect(&mut c, 2)
}

#[test]
fn vote_restriction_broken_is_caught() {
    // The same shape with the check switched off: n1 wins without the committed entry 2.
    let mut c = Cluster::with_states(
        vec![log_of(&[1]), log_of(&[1, 1]), log_of(&[1, 1])],
        1,
        |cfg| {
            plain(cfg);
            cfg.bugs.vote_without_log_check = true;
        },
    );
    let result = (|| {
        elect(&mut c, 2)?;
        c.isolate(1);
        c.propose(2, Bytes::from_static(b"x"))?;
        c.stabilize()?;
        c.crash(2);
        c.heal();
        c.campaign(1)?;
        c.stabilize()
    })();
    let err = result.expect_err("a leader without a committed entry must be reported");
    assert_eq!(err.rule, "leader completeness");
}

// ----- §5.3 Figure 7: follower logs converge ------------------------------------------------------

#[test]
fn figure_7_every_follower_log_converges_to_the_leaders() -> Result<(), Violation> {
    let leader = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
    let shapes: [&[u64]; 7] = [
        &leader,
        &[1, 1, 1, 4, 4, 5, 5, 6, 6],          // (a) missing an entry
        &[1, 1, 1, 4],                         // (b) missing many
        &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],    // (c) an extra uncommitted entry
        &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7], // (d) extra entries of a later term
        &[1, 1, 1, 4, 4, 4, 4],                // (e) missing and extra
        &[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],    // (f) a whole divergent history
    ];
    let states = shapes.iter().map(|s| {
        let mut st = log_of(s);
        st.hard_state.term = 7;
        st
    });
    let mut c = Cluster::with_states(states.collect(), 7, |cfg| {
        plain(cfg);
        cfg.max_msg_bytes = 64; // a few entries per message, so backtracking takes several steps
    });
    // n1 wins term 8 with the votes of (a), (b), (e) and (f), as in the figure.
    c.campaign(1)?;
    c.deliver_where(|m| {
        is_vote(m) && [1, 2, 3, 6, 7].contains(&m.from) && [1, 2, 3, 6, 7].contains(&m.to)
    })?;
    assert_eq!(c.core(1).role(), Role::Leader);
    assert_eq!(c.core(1).term(), 8);
    c.stabilize()?;
    c.propose(1, Bytes::from_static(b"after"))?;
    c.stabilize()?;
    let expected = terms(&c, 1);
    assert_eq!(&expected[..10], &leader);
    for id in 2..=7 {
        assert_eq!(terms(&c, id), expected, "follower n{id} did not converge");
        assert_eq!(
            c.core(id).log_entries(),
            c.core(1).log_entries(),
            "log matching on n{id}"
        );
    }
    Ok(())
}

// ----- §5.4.2 Figure 8: commit only current-term entries by counting ---------------------------------

/// The scenario of Figure 8 with one entry per message, so that an entry of an earlier term can
/// reach a majority before the new leader's no-op does. Returns n1's commit index at (c).
fn figure_8(commit_by_counting: bool) -> Result<u64, Violation> {
    let mut c = Cluster::new(5, 8, |cfg| {
        plain(cfg);
        cfg.max_msg_bytes = 1;
        cfg.bugs.commit_earlier_term_by_counting = commit_by_counting;
    });
    // (a) n1 leads term 1; its entry 2@1 reaches n2 only.
    elect(&mut c, 1)?;
    c.propose(1, Bytes::from_static(b"from term 1"))?;
    c.deliver_where(among(&[1, 2]))?;
    c.drop_in_flight();
    // (b) n1 crashes; n5 wins term 2 with n3 and n4 and writes its no-op 2@2 only locally.
    c.crash(1);
    c.campaign(5)?;
    c.deliver_where(|m| is_vote(m) && among(&[3, 4, 5])(m))?;
    assert_eq!(c.core(5).role(), Role::Leader);
    c.drop_in_flight();
    // (c) n5 crashes; n1 restarts, wins a later term with n2 and n3, and replicates 2@1 to n3
    // and n4 but not yet its own no-op.
    c.crash(5);
    c.restart(1)?;
    for _ in 0..3 {
        if c.core(1).role() == Role::Leader {
            break;
        }
        c.campaign(1)?;
        c.deliver_where(|m| is_vote(m) && among(&[1, 2, 3])(m))?;
    }
    assert_eq!(c.core(1).role(), Role::Leader);
    let noop_term = c.core(1).term();
    let probed = RefCell::new(BTreeSet::new());
    c.deliver_where(|m| {
        if !among(&[1, 3, 4])(m) {
            return false;
        }
        match &m.body {
            // The first probe is rejected (they lack index 2); later ones would carry the no-op.
            MessageBody::AppendRequest { entries, .. }
                if entries.iter().any(|e| e.term == noop_term) =>
            {
                probed.borrow_mut().insert(m.to)
            }
            _ => true,
        }
    })?;
    c.drop_in_flight();
    let commit_at_c = c.core(1).commit_index();
    // (d) n1 crashes; n5 restarts and wins with n2, n3, n4, whose last term (1) is older than its own.
    c.crash(1);
    c.restart(5)?;
    for _ in 0..3 {
        if c.core(5).role() == Role::Leader {
            break;
        }
        c.campaign(5)?;
        c.deliver_where(|m| is_vote(m) && among(&[2, 3, 4, 5])(m))?;
    }
    assert_eq!(c.core(5).role(), Role::Leader);
    c.stabilize()?;
    assert_eq!(
        c.core(3).term_at(2),
        c.core(5).term_at(2),
        "n5 overwrites the uncommitted 2@1"
    );
    Ok(commit_at_c)
}

#[test]
fn figure_8_a_leader_never_commits_an_earlier_term_entry_by_counting() -> Result<(), Violation> {
    let commit = figure_8(false)?;
    assert_eq!(
        commit, 1,
        "2@1 is on a majority but must not commit before the no-op does"
    );
    Ok(())
}

#[test]
fn figure_8_committing_by_counting_is_caught() {
    let err = figure_8(true).expect_err("the broken commit rule must be reported");
    // The rule check fires at (c), when n1 counts 2@1; without it, leader completeness at (d).
    assert_eq!(err.rule, "leader commits only entries of its term", "{err}");
}

// ----- §5.3 Leader append-only, log matching -----------------------------------------------------

#[test]
fn leader_append_only_a_leader_never_rewrites_its_log() -> Result<(), Violation> {
    let mut c = Cluster::new(3, 3, plain);
    elect(&mut c, 1)?;
    c.propose(1, Bytes::from_static(b"a"))?;
    c.stabilize()?;
    c.isolate(1);
    elect(&mut c, 2)?;
    c.propose(2, Bytes::from_static(b"b"))?;
    c.stabilize()?;
    let before = c.core(2).log_entries().to_vec();
    // The old leader's stale append with a conflicting entry reaches the new leader.
    let stale = Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::AppendRequest {
            prev_log_index: 2,
            prev_log_term: 1,
            entries: vec![Entry::new(
                1,
                3,
                EntryKind::Normal,
                Bytes::from_static(b"stale"),
            )],
            commit: 3,
        },
    };
    c.core_mut(2).step(stale);
    c.stabilize()?;
    assert_eq!(c.core(2).role(), Role::Leader);
    assert_eq!(
        c.core(2).log_entries(),
        &before[..],
        "the leader's log changed"
    );
    Ok(())
}

#[test]
fn log_matching_a_conflicting_suffix_is_replaced_and_the_prefix_kept() -> Result<(), Violation> {
    // n3 holds two entries of a term-2 leader that never committed them.
    let mut c = Cluster::with_states(
        vec![log_of(&[1, 1]), log_of(&[1, 1]), log_of(&[1, 2, 2])],
        5,
        plain,
    );
    c.campaign(1)?;
    c.deliver_where(|m| is_vote(m) && among(&[1, 2])(m))?;
    assert_eq!(c.core(1).role(), Role::Leader);
    c.stabilize()?;
    assert_eq!(c.core(3).log_entries(), c.core(1).log_entries());
    assert_eq!(terms(&c, 3)[..2], [1, 1]);
    Ok(())
}

// ----- Thesis §9.6 pre-vote, §6.2 check-quorum ------------------------------------------------------

fn rejoin_after_isolation(pre_vote: bool) -> Result<(u64, u64, Option<u64>), Violation> {
    let mut c = Cluster::new(3, 11, |cfg| {
        cfg.pre_vote = pre_vote;
        cfg.check_quorum = false;
    });
    elect(&mut c, 1)?;
    let term = c.core(1).term();
    c.isolate(3);
    for _ in 0..100 {
        c.tick(3)?;
    }
    c.stabilize()?;
    c.heal();
    // Time passes for everyone: n3 campaigns with whatever term it reached.
    for _ in 0..30 {
        c.tick_all(1)?;
        c.stabilize()?;
    }
    Ok((term, c.core(1).term(), c.leader()))
}

#[test]
fn pre_vote_stops_a_rejoining_partitioned_node_from_disrupting_the_leader() -> Result<(), Violation>
{
    let (before, after, leader) = rejoin_after_isolation(true)?;
    assert_eq!(before, after, "the term must not move");
    assert_eq!(leader, Some(1));
    // Without pre-vote the same script deposes the leader: the test can tell the difference.
    let (before, after, _) = rejoin_after_isolation(false)?;
    assert!(
        after > before,
        "without pre-vote the rejoining node raises the term"
    );
    Ok(())
}

fn isolated_leader_after_ticks(check_quorum: bool) -> Result<Role, Violation> {
    let mut c = Cluster::new(3, 12, |cfg| {
        cfg.pre_vote = true;
        cfg.check_quorum = check_quorum;
    });
    elect(&mut c, 1)?;
    c.isolate(1);
    // The window in which it last heard from the others ends, then a whole window without them.
    let window = Config::new(1, vec![1, 2, 3]).check_quorum_window();
    for _ in 0..=2 * window {
        c.tick(1)?;
    }
    Ok(c.core(1).role())
}

#[test]
fn check_quorum_deposes_an_isolated_leader() -> Result<(), Violation> {
    assert_eq!(isolated_leader_after_ticks(true)?, Role::Follower);
    assert_eq!(
        isolated_leader_after_ticks(false)?,
        Role::Leader,
        "without check-quorum it stays"
    );
    Ok(())
}

// ----- Thesis §6.4 ReadIndex -----------------------------------------------------------------------

/// A deposed leader that does not know it yet is asked for a read after the new leader has
/// acknowledged a write. Returns how many reads the old leader served.
fn read_on_a_deposed_leader(read_without_quorum: bool) -> Result<u64, Violation> {
    let mut c = Cluster::new(3, 13, |cfg| {
        plain(cfg);
        cfg.bugs.read_index_without_quorum = read_without_quorum;
    });
    elect(&mut c, 1)?;
    c.isolate(1);
    elect(&mut c, 2)?;
    c.propose(2, Bytes::from_static(b"acknowledged"))?;
    c.stabilize()?;
    let served = c.check.reads_served;
    c.read(1)?;
    for _ in 0..3 {
        c.tick(1)?;
        c.stabilize()?;
    }
    Ok(c.check.reads_served - served)
}

#[test]
fn read_index_never_returns_an_index_below_an_acknowledged_write() -> Result<(), Violation> {
    assert_eq!(read_on_a_deposed_leader(false)?, 0, "no quorum, no read");
    let err = read_on_a_deposed_leader(true).expect_err("a stale read must be reported");
    assert_eq!(err.rule, "read index linearizability");
    Ok(())
}

#[test]
fn read_index_on_leader_and_followers_is_served_once_confirmed() -> Result<(), Violation> {
    let mut c = Cluster::new(3, 14, plain);
    elect(&mut c, 1)?;
    c.propose(1, Bytes::from_static(b"x"))?;
    c.stabilize()?;
    for id in [1, 2, 3] {
        c.read(id)?;
    }
    c.stabilize()?;
    assert_eq!(c.check.reads_served, 3);
    Ok(())
}
