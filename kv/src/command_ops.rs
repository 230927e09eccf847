//! The encoding of the ops that came with the Redis command set (`SET` options, multi-key
//! writes, expiry, transactions, reads inside transactions), in the same body format as the
//! first ones in `command.rs`.

use bytes::Bytes;

use crate::codec::{self, Reader};
use crate::command::{
    Deadline, ExpireCondition, Op, SetCondition, MAX_KEY_LEN, MAX_VALUE_LEN, OP_ALLOCATE_RANGE_ID,
    OP_APPEND, OP_DELETE_MANY, OP_EXPIRE, OP_FLUSHALL, OP_GETDEL, OP_MSET, OP_MULTI, OP_QUERY,
    OP_RENAME, OP_SET_WITH, OP_SPLIT,
};
use crate::error::DecodeError;
use crate::query::{self, put_keys, Query};
use crate::ranges::{RangeDescriptor, Split};

pub(crate) fn write_op(op: &Op, b: &mut Vec<u8>) {
    match op {
        Op::SetWith {
            key,
            value,
            condition,
            deadline,
            get,
        } => {
            b.push(OP_SET_WITH);
            codec::put_bytes(b, key);
            codec::put_bytes(b, value);
            b.push(*condition as u8);
            put_deadline(b, deadline);
            b.push(u8::from(*get));
        }
        Op::GetDel { key } => {
            b.push(OP_GETDEL);
            codec::put_bytes(b, key);
        }
        Op::DeleteMany { keys } => {
            b.push(OP_DELETE_MANY);
            put_keys(b, keys);
        }
        Op::MSet {
            pairs,
            if_none_exist,
        } => {
            b.push(OP_MSET);
            b.push(u8::from(*if_none_exist));
            b.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
            for (k, v) in pairs {
                codec::put_bytes(b, k);
                codec::put_bytes(b, v);
            }
        }
        Op::Append { key, value } => {
            b.push(OP_APPEND);
            codec::put_bytes(b, key);
            codec::put_bytes(b, value);
        }
        Op::Expire {
            key,
            deadline,
            condition,
        } => {
            b.push(OP_EXPIRE);
            codec::put_bytes(b, key);
            put_deadline(b, deadline);
            b.push(*condition as u8);
        }
        Op::Rename {
            from,
            to,
            if_absent,
        } => {
            b.push(OP_RENAME);
            codec::put_bytes(b, from);
            codec::put_bytes(b, to);
            b.push(u8::from(*if_absent));
        }
        Op::FlushAll => b.push(OP_FLUSHALL),
        Op::Multi { watches, ops } => {
            b.push(OP_MULTI);
            b.extend_from_slice(&(watches.len() as u32).to_le_bytes());
            for (k, version) in watches {
                codec::put_bytes(b, k);
                codec::put_u64(b, *version);
            }
            b.extend_from_slice(&(ops.len() as u32).to_le_bytes());
            for op in ops {
                op.write_to(b);
            }
        }
        Op::Query(q) => {
            b.push(OP_QUERY);
            q.write_to(b);
        }
        Op::AllocateRangeId => b.push(OP_ALLOCATE_RANGE_ID),
        Op::Split(split) => {
            b.push(OP_SPLIT);
            codec::put_u64(b, split.range);
            codec::put_u64(b, split.epoch);
            codec::put_bytes(b, &split.at);
            codec::put_u64(b, split.new_range);
        }
        Op::Set { .. } | Op::Delete { .. } | Op::Cas { .. } | Op::Incr { .. } | Op::Noop => {
            unreachable!("written by command.rs")
        }
    }
}

pub(crate) fn read_op(tag: u8, r: &mut Reader, nested_ok: bool) -> Result<Op, DecodeError> {
    let key = |r: &mut Reader| r.bytes("key", MAX_KEY_LEN);
    let value = |r: &mut Reader| r.bytes("value", MAX_VALUE_LEN);
    Ok(match tag {
        OP_SET_WITH => Op::SetWith {
            key: key(r)?,
            value: value(r)?,
            condition: match r.u8()? {
                0 => SetCondition::Always,
                1 => SetCondition::IfAbsent,
                2 => SetCondition::IfPresent,
                tag => {
                    return Err(DecodeError::UnknownTag {
                        what: "set condition",
                        tag,
                    })
                }
            },
            deadline: read_deadline(r)?,
            get: flag(r)?,
        },
        OP_GETDEL => Op::GetDel { key: key(r)? },
        OP_DELETE_MANY => Op::DeleteMany {
            keys: query::keys(r)?,
        },
        OP_MSET => {
            let if_none_exist = flag(r)?;
            let n = count(r, 8, "key-value pairs")?;
            let pairs = (0..n)
                .map(|_| Ok((key(r)?, value(r)?)))
                .collect::<Result<_, DecodeError>>()?;
            Op::MSet {
                pairs,
                if_none_exist,
            }
        }
        OP_APPEND => Op::Append {
            key: key(r)?,
            value: value(r)?,
        },
        OP_EXPIRE => Op::Expire {
            key: key(r)?,
            deadline: read_deadline(r)?,
            condition: match r.u8()? {
                0 => ExpireCondition::Always,
                1 => ExpireCondition::IfNone,
                2 => ExpireCondition::IfSome,
                3 => ExpireCondition::IfLater,
                4 => ExpireCondition::IfEarlier,
                5 => ExpireCondition::IfSomeAndEarlier,
                tag => {
                    return Err(DecodeError::UnknownTag {
                        what: "expire condition",
                        tag,
                    })
                }
            },
        },
        OP_RENAME => Op::Rename {
            from: key(r)?,
            to: key(r)?,
            if_absent: flag(r)?,
        },
        OP_FLUSHALL => Op::FlushAll,
        OP_MULTI if nested_ok => {
            let n = count(r, 12, "watched keys")?;
            let watches = (0..n)
                .map(|_| Ok((key(r)?, r.u64()?)))
                .collect::<Result<_, DecodeError>>()?;
            let n = count(r, 1, "queued commands")?;
            let ops = (0..n)
                .map(|_| Op::read_from(r, false))
                .collect::<Result<_, DecodeError>>()?;
            Op::Multi { watches, ops }
        }
        OP_MULTI => return Err(DecodeError::Invalid("a transaction inside a transaction")),
        OP_QUERY => Op::Query(Query::read_from(r)?),
        // Not inside a transaction: its ownership check runs before its ops, so a split among
        // them would let the later ones write keys the range just gave away.
        OP_ALLOCATE_RANGE_ID | OP_SPLIT if !nested_ok => {
            return Err(DecodeError::Invalid(
                "a range operation inside a transaction",
            ))
        }
        OP_ALLOCATE_RANGE_ID => Op::AllocateRangeId,
        OP_SPLIT => Op::Split(Split {
            range: r.u64()?,
            epoch: r.u64()?,
            at: key(r)?,
            new_range: r.u64()?,
        }),
        tag => return Err(DecodeError::UnknownTag { what: "op", tag }),
    })
}

/// A descriptor inside a result, field by field (no frame of its own: the result's covers it).
pub(crate) fn put_descriptor(b: &mut Vec<u8>, d: &RangeDescriptor) {
    codec::put_u64(b, d.id);
    codec::put_bytes(b, &d.start);
    codec::put_opt_bytes(b, d.end.as_deref());
    codec::put_u64(b, d.epoch);
}

/// The size [`put_descriptor`] writes.
pub(crate) fn descriptor_len(d: &RangeDescriptor) -> usize {
    8 + 4 + d.start.len() + 1 + d.end.as_ref().map_or(0, |e| 4 + e.len()) + 8
}

pub(crate) fn read_descriptor(r: &mut Reader) -> Result<RangeDescriptor, DecodeError> {
    Ok(RangeDescriptor {
        id: r.u64()?,
        start: r.bytes("range start", MAX_KEY_LEN)?,
        end: r.opt_bytes("range end", MAX_KEY_LEN)?,
        epoch: r.u64()?,
    })
}

fn flag(r: &mut Reader) -> Result<bool, DecodeError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::Invalid("flag is not 0 or 1")),
    }
}

/// A count of items of at least `min_size` bytes each, checked against the bytes left.
fn count(r: &mut Reader, min_size: usize, what: &'static str) -> Result<usize, DecodeError> {
    let n = r.u32()? as usize;
    let room = r.remaining() / min_size;
    if n > room {
        return Err(DecodeError::TooLong {
            what,
            len: n as u64,
            max: room as u64,
        });
    }
    Ok(n)
}

fn put_deadline(b: &mut Vec<u8>, d: &Deadline) {
    let (tag, ms) = match d {
        Deadline::None => (0, 0),
        Deadline::Keep => (1, 0),
        Deadline::In(ms) => (2, *ms),
        Deadline::At(ms) => (3, *ms),
    };
    b.push(tag);
    codec::put_u64(b, ms);
}

fn read_deadline(r: &mut Reader) -> Result<Deadline, DecodeError> {
    let tag = r.u8()?;
    let ms = r.u64()?;
    Ok(match tag {
        // Canonical: what decodes re-encodes to the same bytes.
        0 | 1 if ms != 0 => return Err(DecodeError::Invalid("a deadline without time has one")),
        0 => Deadline::None,
        1 => Deadline::Keep,
        2 => Deadline::In(ms),
        3 => Deadline::At(ms),
        tag => {
            return Err(DecodeError::UnknownTag {
                what: "deadline",
                tag,
            })
        }
    })
}

impl Query {
    pub(crate) fn visit_keys<'a>(&'a self, keys: &mut Vec<&'a Bytes>) {
        match self {
            Query::Get { key }
            | Query::Ttl { key, .. }
            | Query::StrLen { key }
            | Query::Type { key } => keys.push(key),
            Query::MGet { keys: ks }
            | Query::Exists { keys: ks }
            | Query::Versions { keys: ks } => keys.extend(ks),
            Query::Keys { pattern } => keys.push(pattern),
            Query::Scan { pattern, .. } => keys.extend(pattern.iter()),
            Query::DbSize => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use proptest::prelude::*;

    use crate::command::{Command, CommandResult, Op};
    use crate::ranges::{RangeDescriptor, Split};

    fn arb_bytes() -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..24).prop_map(Bytes::from)
    }

    fn arb_descriptor() -> impl Strategy<Value = RangeDescriptor> {
        (
            any::<u64>(),
            arb_bytes(),
            proptest::option::of(arb_bytes()),
            any::<u64>(),
        )
            .prop_map(|(id, start, end, epoch)| RangeDescriptor {
                id,
                start,
                end,
                epoch,
            })
    }

    proptest! {
        #[test]
        fn range_ops_round_trip(range in any::<u64>(), epoch in any::<u64>(), at in arb_bytes(),
                                new_range in any::<u64>(), seq in any::<u64>()) {
            for op in [Op::AllocateRangeId, Op::Split(Split { range, epoch, at: at.clone(), new_range })] {
                let c = Command::new(3, seq, op);
                prop_assert_eq!(Command::decode(&c.encode()).unwrap(), c);
            }
        }

        #[test]
        fn split_results_round_trip_and_their_size_is_known(left in arb_descriptor(), right in arb_descriptor()) {
            let r = CommandResult::Split { left, right };
            let encoded = r.encode();
            prop_assert_eq!(CommandResult::decode(&encoded).unwrap(), r.clone());
            // The frame adds 9 bytes to the body that `encoded_len` measures.
            prop_assert_eq!(r.encoded_len() + 9, encoded.len());
        }

        /// Any damage to a split's body, behind a valid frame, is an error or another valid
        /// command, never a panic (the frame's checksum normally stops it before).
        #[test]
        fn hostile_split_bodies_never_panic(cut in 0usize..64, flip in any::<u8>(), pos in any::<prop::sample::Index>()) {
            let c = Command::new(3, 1, Op::Split(Split { range: 2, epoch: 7, at: Bytes::from_static(b"m"), new_range: 9 }));
            let frame = c.encode();
            let mut body = frame[5..frame.len() - 4].to_vec();
            let i = pos.index(body.len());
            body[i] ^= flip;
            body.truncate(body.len().saturating_sub(cut % 8));
            let resealed = Bytes::from(crate::fuzzing::seal_frame(frame[0], &body));
            crate::fuzzing::command(&resealed);
        }
    }

    #[test]
    fn range_ops_are_refused_inside_a_transaction() {
        for op in [
            Op::AllocateRangeId,
            Op::Split(Split {
                range: 1,
                epoch: 1,
                at: Bytes::from_static(b"m"),
                new_range: 2,
            }),
        ] {
            let multi = Command::new(
                3,
                1,
                Op::Multi {
                    watches: Vec::new(),
                    ops: vec![op],
                },
            );
            let err = Command::decode(&multi.encode()).unwrap_err().to_string();
            assert!(err.contains("inside a transaction"), "{err}");
        }
    }

    #[test]
    fn results_of_older_versions_still_decode() {
        // A NotOwned result as the version before splits wrote it, byte for byte.
        let mut body = vec![13];
        body.extend_from_slice(&2u64.to_le_bytes());
        body.extend_from_slice(&3u64.to_le_bytes());
        let old = Bytes::from(crate::fuzzing::seal_frame(1, &body));
        assert_eq!(
            CommandResult::decode(&old).unwrap(),
            CommandResult::NotOwned { range: 2, epoch: 3 }
        );
    }
}
