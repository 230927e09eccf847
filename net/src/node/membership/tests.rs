use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::*;

type Spawned = Arc<Mutex<Vec<(NodeId, String)>>>;

fn members(me: NodeId, table: MemberTable, cmdline: &[(NodeId, &str)]) -> (Members, Spawned) {
    let spawned: Spawned = Arc::default();
    let log = spawned.clone();
    let spawn: PeerSpawner = Box::new(move |id, addr| {
        log.lock().unwrap().push((id, addr));
        mpsc::channel(1).0
    });
    let cmdline = cmdline
        .iter()
        .map(|&(id, a)| (id, MemberAddrs::new(a, "")))
        .collect();
    let published = watch::channel(MemberTable::default()).0;
    (
        Members::new(me, table, 5, cmdline, spawn, published),
        spawned,
    )
}

fn founding() -> MemberTable {
    MemberTable::founding(
        (1..=3)
            .map(|i| {
                (
                    i,
                    MemberAddrs::new(format!("h:710{i}"), format!("h:700{i}")),
                )
            })
            .collect(),
    )
}

fn conf(index: Index, membership: &Membership, addrs: &[(NodeId, &str)]) -> Entry {
    let context = MemberContext {
        addrs: addrs
            .iter()
            .map(|&(id, a)| (id, MemberAddrs::new(a, "")))
            .collect(),
    };
    let cc = ConfChangeEntry {
        membership: membership.clone(),
        context: if addrs.is_empty() {
            Bytes::new()
        } else {
            context.encode()
        },
    };
    Entry::new(1, index, EntryKind::ConfChange, cc.encode())
}

fn outbound(m: &Members) -> Vec<(NodeId, String)> {
    m.outbound
        .iter()
        .map(|(id, o)| (*id, o.addr.clone()))
        .collect()
}

#[test]
fn outbound_peers_follow_the_configuration_in_force() {
    let (mut m, spawned) = members(1, founding(), &[]);
    m.follow(&founding().membership);
    assert_eq!(
        outbound(&m),
        vec![(2, "h:7102".to_string()), (3, "h:7103".to_string())]
    );
    // Node 4 added as a learner by an appended entry: reachable before it is applied.
    let mut with_4 = founding().membership;
    with_4.learners.insert(4);
    m.note_appended(&[conf(6, &with_4, &[(4, "h:7104")])]);
    m.follow(&with_4);
    assert_eq!(outbound(&m).last(), Some(&(4, "h:7104".to_string())));
    assert_eq!(
        m.subscribe()
            .borrow()
            .addrs_of(4)
            .map(|a| a.peer_addr.as_str()),
        Some("h:7104")
    );
    // Node 2 removed: its queue goes; node 3 moves: a new task at the new address.
    let mut without_2 = with_4.clone();
    without_2.voters.remove(&2);
    m.note_appended(&[conf(7, &without_2, &[(3, "h:9103")])]);
    m.follow(&without_2);
    assert_eq!(
        outbound(&m),
        vec![(3, "h:9103".to_string()), (4, "h:7104".to_string())]
    );
    assert_eq!(spawned.lock().unwrap().len(), 4, "2, 3, 4, then 3 again");
    // The applied table of an earlier index does not undo the move.
    m.note_applied(founding(), 6);
    m.follow(&without_2);
    assert_eq!(outbound(&m)[0], (3, "h:9103".to_string()));
}

#[test]
fn a_node_waiting_to_be_added_talks_to_every_address_it_knows() {
    // What the cluster told it: it is a learner.
    let mut told = founding();
    let mut with_4 = told.membership.clone();
    with_4.learners.insert(4);
    told.apply_conf_change(with_4, &[]);
    let (mut m, _) = members(4, told, &[(4, "h:7104")]);
    m.follow(&Membership::default());
    assert_eq!(
        outbound(&m).iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert!(
        !m.is_removed(),
        "not yet in the configuration is not removed"
    );
}

#[test]
fn the_applied_configuration_decides_removal_and_the_command_line_only_fills_gaps() {
    let (mut m, _) = members(3, founding(), &[(3, "other:1"), (9, "h:9")]);
    assert_eq!(
        m.addresses()[&3].peer_addr,
        "h:7103",
        "the data directory wins"
    );
    assert_eq!(m.addresses()[&9].peer_addr, "h:9");
    assert!(!m.is_removed());
    let mut table = founding();
    table.apply_conf_change(Membership::with_voters([1, 2]), &[]);
    assert_eq!(m.note_applied(table, 8), vec![3], "node 3 left");
    assert!(m.is_removed());
    assert_eq!(m.client_addr(1).as_deref(), Some("h:7001"));
}

#[test]
fn the_configuration_in_force_is_the_last_appended_and_reverts_when_truncated() {
    let (mut m, _) = members(1, founding(), &[]);
    let three = founding().membership;
    let mut four = three.clone();
    four.learners.insert(4);
    m.note_appended(&[conf(6, &four, &[(4, "h:7104")])]);
    assert_eq!(m.in_force(), &four);
    // A new leader's entries overwrite index 6 on: the change is gone.
    m.note_appended(&[Entry::new(2, 6, EntryKind::Noop, Bytes::new())]);
    assert_eq!(m.in_force(), &three);
    m.note_appended(&[conf(7, &four, &[])]);
    m.note_applied(founding(), 8);
    assert_eq!(
        m.in_force(),
        &three,
        "applied past it: the applied table decides"
    );
    // An installed snapshot replaces the log, and its configuration is in force.
    m.note_appended(&[conf(9, &three, &[])]);
    m.note_log_replaced(&raft_core::SnapshotMeta::new(20, 3, four.clone()));
    assert_eq!(m.in_force(), &four);
}
