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
    // Node 2 removed by an appended entry, node 3 moves: a new task at the new address, and
    // node 2 keeps its queue until its removal is applied.
    let mut without_2 = with_4.clone();
    without_2.voters.remove(&2);
    m.note_appended(&[conf(7, &without_2, &[(3, "h:9103")])]);
    m.maybe_follow(&without_2);
    assert_eq!(
        outbound(&m),
        vec![
            (2, "h:7102".to_string()),
            (3, "h:9103".to_string()),
            (4, "h:7104".to_string())
        ]
    );
    assert_eq!(spawned.lock().unwrap().len(), 4, "2, 3, 4, then 3 again");
    // The applied table of an earlier index does not undo the move.
    m.note_applied(founding(), 6);
    m.maybe_follow(&without_2);
    assert_eq!(outbound(&m)[1], (3, "h:9103".to_string()));
    // Applying the removal drops node 2's queue.
    let mut table = founding();
    let moved = MemberContext {
        addrs: [(3, MemberAddrs::new("h:9103", ""))].into(),
    };
    table.apply_conf_change(without_2.clone(), &moved.encode());
    assert_eq!(m.note_applied(table, 7), vec![2]);
    m.maybe_follow(&without_2);
    assert_eq!(
        outbound(&m),
        vec![(3, "h:9103".to_string()), (4, "h:7104".to_string())]
    );
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
        !m.is_removed(&Membership::default()),
        "not yet in the configuration is not removed"
    );
}

#[test]
fn the_configuration_in_force_decides_removal_and_the_command_line_only_fills_gaps() {
    let (mut m, _) = members(3, founding(), &[(3, "other:1"), (9, "h:9")]);
    assert_eq!(
        m.addresses()[&3].peer_addr,
        "h:7103",
        "the data directory wins"
    );
    assert_eq!(m.addresses()[&9].peer_addr, "h:9");
    assert!(!m.is_removed(&founding().membership));
    let without_3 = Membership::with_voters([1, 2]);
    assert!(
        m.is_removed(&without_3),
        "the entry removing it is in its log"
    );
    let mut table = founding();
    table.apply_conf_change(without_3, &[]);
    assert_eq!(m.note_applied(table, 8), vec![3], "node 3 left");
    assert_eq!(m.client_addr(1).as_deref(), Some("h:7001"));
}

#[test]
fn a_peer_outside_the_configuration_is_reached_when_the_core_sends_to_it() {
    let (mut m, spawned) = members(1, founding(), &[]);
    let without_3 = Membership::with_voters([1, 2]);
    let mut table = founding();
    table.apply_conf_change(without_3.clone(), &[]);
    m.note_applied(table, 8);
    m.maybe_follow(&without_3);
    assert_eq!(outbound(&m), vec![(2, "h:7102".to_string())]);
    assert!(m.queue(3).is_some(), "3's address is still in the book");
    assert_eq!(
        spawned.lock().unwrap().last(),
        Some(&(3, "h:7103".to_string()))
    );
    assert!(m.queue(9).is_none(), "no address, no queue");
    assert!(m.queue(1).is_none(), "never to itself");
}
