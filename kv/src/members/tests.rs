use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;

fn addrs(pairs: &[(NodeId, &str, &str)]) -> BTreeMap<NodeId, MemberAddrs> {
    pairs
        .iter()
        .map(|&(id, p, c)| (id, MemberAddrs::new(p, c)))
        .collect()
}

fn three() -> MemberTable {
    MemberTable::founding(addrs(&[
        (1, "h:7101", "h:7001"),
        (2, "h:7102", "h:7002"),
        (3, "h:7103", ""),
    ]))
}

#[test]
fn a_founding_table_makes_every_member_a_voter_and_round_trips() {
    let t = three();
    assert_eq!(t.membership, Membership::with_voters([1, 2, 3]));
    assert_eq!(MemberTable::decode(&t.encode()), Ok(t.clone()));
    assert_eq!(
        MemberTable::decode(&MemberTable::default().encode()),
        Ok(MemberTable::default())
    );
}

#[test]
fn applying_a_change_merges_the_context_and_forgets_removed_members() {
    let mut t = three();
    let mut learners = Membership::with_voters([1, 2, 3]);
    learners.learners.insert(4);
    let ctx = MemberContext {
        addrs: addrs(&[(4, "h:7104", "h:7004")]),
    };
    assert_eq!(
        t.apply_conf_change(learners.clone(), &ctx.encode()),
        ContextOutcome::Applied
    );
    assert_eq!(t.membership, learners);
    assert_eq!(t.addrs_of(4), Some(&MemberAddrs::new("h:7104", "h:7004")));

    // An address change with the same configuration: only the fields given change.
    let moved = MemberContext {
        addrs: addrs(&[(3, "", "h:7003"), (2, "h:9102", "")]),
    };
    assert_eq!(
        t.apply_conf_change(learners, &moved.encode()),
        ContextOutcome::Applied
    );
    assert_eq!(t.addrs_of(3), Some(&MemberAddrs::new("h:7103", "h:7003")));
    assert_eq!(t.addrs_of(2), Some(&MemberAddrs::new("h:9102", "h:7002")));

    // Removing node 1 (the core's joint entry, then its auto-leave with an empty context).
    let joint = Membership {
        voters: [2, 3, 4].into(),
        outgoing: [1, 2, 3].into(),
        learners: BTreeSet::new(),
    };
    t.apply_conf_change(joint, &[]);
    assert!(
        t.addrs_of(1).is_some(),
        "an outgoing voter is still a member"
    );
    t.apply_conf_change(Membership::with_voters([2, 3, 4]), &[]);
    assert_eq!(t.addrs.keys().copied().collect::<Vec<_>>(), vec![2, 3, 4]);
    assert_eq!(MemberTable::decode(&t.encode()), Ok(t));
}

#[test]
fn a_context_naming_a_non_member_or_undecodable_changes_no_address() {
    let mut t = three();
    let stranger = MemberContext {
        addrs: addrs(&[(9, "h:1", "h:2")]),
    };
    t.apply_conf_change(Membership::with_voters([1, 2, 3]), &stranger.encode());
    assert_eq!(t, three());
    let out = t.apply_conf_change(Membership::with_voters([1, 2]), b"not a context");
    assert!(matches!(out, ContextOutcome::Undecodable(_)));
    assert_eq!(t.membership, Membership::with_voters([1, 2]));
    assert_eq!(t.addrs.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
}

#[test]
fn hostile_encodings_are_refused() {
    let t = three().encode();
    for cut in 0..t.len() {
        assert!(
            MemberTable::decode(&t[..cut]).is_err(),
            "prefix of {cut} bytes"
        );
    }
    let mut flipped = t.clone();
    flipped[3] ^= 1;
    assert!(matches!(
        MemberTable::decode(&flipped),
        Err(DecodeError::BadChecksum { .. })
    ));
    // Well sealed but wrong inside: unknown version, descending ids, a huge count, bad UTF-8,
    // an address for a non-member.
    let reseal = |body: Vec<u8>| {
        let mut b = body;
        codec::seal(&mut b);
        b
    };
    let mut v = MemberContext::default().encode().to_vec();
    v[0] = 9;
    let v = reseal(v[..v.len() - 4].to_vec());
    assert_eq!(
        MemberContext::decode(&v),
        Err(DecodeError::UnknownVersion(9))
    );
    let entry = |id: u64, addr: &[u8]| {
        let mut b = Vec::new();
        codec::put_u64(&mut b, id);
        codec::put_bytes(&mut b, addr);
        codec::put_bytes(&mut b, b"");
        b
    };
    let context = |count: u32, entries: &[Vec<u8>]| {
        let mut b = vec![CONTEXT_VERSION];
        b.extend_from_slice(&count.to_le_bytes());
        for e in entries {
            b.extend_from_slice(e);
        }
        reseal(b)
    };
    assert!(MemberContext::decode(&context(2, &[entry(2, b"a:1"), entry(1, b"a:2")])).is_err());
    assert!(MemberContext::decode(&context(1, &[entry(0, b"a:1")])).is_err());
    assert!(MemberContext::decode(&context(u32::MAX, &[])).is_err());
    assert!(MemberContext::decode(&context(1, &[entry(1, &[0xff, 0xfe])])).is_err());
    assert!(MemberContext::decode(&context(1, &[entry(1, &[b'x'; MAX_ADDR_LEN + 1])])).is_err());
    assert!(MemberContext::decode(&context(1, &[entry(1, b"a:1")])).is_ok());
    let mut stranger = vec![TABLE_VERSION];
    codec::put_bytes(&mut stranger, &Membership::with_voters([1]).encode());
    stranger.extend_from_slice(&1u32.to_le_bytes());
    stranger.extend_from_slice(&entry(2, b"a:1"));
    assert_eq!(
        MemberTable::decode(&reseal(stranger)),
        Err(DecodeError::Invalid(
            "address of an id that is not a member"
        ))
    );
}

fn arb_addrs() -> impl Strategy<Value = BTreeMap<NodeId, MemberAddrs>> {
    proptest::collection::btree_map(1u64..50, ("[a-z0-9.:]{0,12}", "[a-z0-9.:]{0,12}"), 0..6)
        .prop_map(|m| {
            m.into_iter()
                .map(|(id, (p, c))| (id, MemberAddrs::new(p, c)))
                .collect()
        })
}

proptest! {
    #[test]
    fn every_context_and_table_round_trips(a in arb_addrs(), learners in proptest::collection::btree_set(50u64..60, 0..3)) {
        let ctx = MemberContext { addrs: a.clone() };
        prop_assert_eq!(MemberContext::decode(&ctx.encode()), Ok(ctx));
        let mut t = MemberTable::founding(a);
        if !t.membership.voters.is_empty() {
            t.membership.learners = learners;
        }
        prop_assert_eq!(MemberTable::decode(&t.encode()), Ok(t));
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_decode_canonically(input in proptest::collection::vec(any::<u8>(), 0..96)) {
        if let Ok(c) = MemberContext::decode(&input) {
            prop_assert_eq!(c.encode().to_vec(), input.clone());
        }
        if let Ok(t) = MemberTable::decode(&input) {
            prop_assert_eq!(t.encode(), input.clone());
        }
        // The same bytes resealed get past the checksum and reach the parsers.
        let mut sealed = input.clone();
        codec::seal(&mut sealed);
        if let Ok(c) = MemberContext::decode(&sealed) {
            prop_assert_eq!(c.encode().to_vec(), sealed.clone());
        }
        if let Ok(t) = MemberTable::decode(&sealed) {
            prop_assert_eq!(t.encode(), sealed);
        }
    }
}
