//! The sequential model: a register per key whose state is the key's value, with values
//! interned so that a state is a small `Copy` value. A step acts on one register; an atomic
//! operation is a sequence of steps on the registers of its keys, all or none.
//!
//! Expiry needs no clock in the model: a write with a time to live may vanish at any moment
//! after it is made, but at one moment for every observer, and only once. So each such write
//! comes with an [`Step::Expire`] of its (unique) value, which the search places like a write
//! that timed out: anywhere after the write's invocation, or nowhere.

use std::collections::HashMap;

use crate::history::Value;

/// A value, interned: equal values are equal `Val`s. A value that is the canonical decimal form
/// of an `i64` (what `Incr` writes) is `Int`; any other is `Bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Val {
    Absent,
    Bytes(u32),
    Int(i64),
}

#[derive(Default)]
pub(super) struct Interner {
    ids: HashMap<Vec<u8>, u32>,
    values: Vec<Vec<u8>>,
    /// What `Incr` reads each interned value as, if it can.
    as_int: Vec<Option<i64>>,
}

impl Interner {
    pub(super) fn val(&mut self, v: Option<&[u8]>) -> Val {
        let Some(v) = v else { return Val::Absent };
        let parsed = std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse::<i64>().ok());
        if let Some(n) = parsed {
            if n.to_string().as_bytes() == v {
                return Val::Int(n);
            }
        }
        if let Some(&id) = self.ids.get(v) {
            return Val::Bytes(id);
        }
        let id = self.values.len() as u32;
        self.ids.insert(v.to_vec(), id);
        self.values.push(v.to_vec());
        self.as_int.push(parsed);
        Val::Bytes(id)
    }

    pub(super) fn bytes(&self, v: Val) -> Option<Value> {
        match v {
            Val::Absent => None,
            Val::Bytes(id) => Some(self.values[id as usize].clone()),
            Val::Int(n) => Some(n.to_string().into_bytes()),
        }
    }

    fn int(&self, v: Val) -> Option<i64> {
        match v {
            Val::Absent => Some(0),
            Val::Bytes(id) => self.as_int[id as usize],
            Val::Int(n) => Some(n),
        }
    }
}

/// An operation for the model; `None` observations are those of `Unknown` operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Step {
    Get(Val),
    Set(Val),
    Delete(Option<bool>),
    Cas {
        expected: Val,
        new: Val,
        swapped: Option<bool>,
    },
    Incr {
        by: i64,
        result: Option<i64>,
    },
    /// `SET NX` (`if_absent`) or `SET XX` of `value`; `written`: whether it was.
    SetIf {
        value: Val,
        if_absent: bool,
        written: Option<bool>,
    },
    /// Whether the key exists, as observed.
    Exists(bool),
    /// The value written with a time to live vanishes, if it is still there.
    Expire(Val),
}

impl Step {
    /// The state after this step from `state`, or `None` if its observation rules it out.
    #[inline]
    pub(super) fn apply(&self, state: Val, interner: &Interner) -> Option<Val> {
        match *self {
            Step::Get(v) => (v == state).then_some(state),
            Step::Set(v) => Some(v),
            Step::Delete(existed) => match existed {
                Some(e) if e != (state != Val::Absent) => None,
                _ => Some(Val::Absent),
            },
            Step::Cas {
                expected,
                new,
                swapped,
            } => {
                let matches = state == expected;
                match swapped {
                    Some(s) if s != matches => None,
                    _ => Some(if matches { new } else { state }),
                }
            }
            Step::Incr { by, result } => {
                match interner.int(state).and_then(|n| n.checked_add(by)) {
                    Some(n) => match result {
                        Some(r) if r != n => None,
                        _ => Some(Val::Int(n)),
                    },
                    // The server refuses it without effect; an answer would have been an error,
                    // which a client records as Failed, never as Ok.
                    None => result.is_none().then_some(state),
                }
            }
            Step::SetIf {
                value,
                if_absent,
                written,
            } => {
                let allowed = (state == Val::Absent) == if_absent;
                match written {
                    Some(w) if w != allowed => None,
                    _ => Some(if allowed { value } else { state }),
                }
            }
            Step::Exists(exists) => ((state != Val::Absent) == exists).then_some(state),
            Step::Expire(v) => Some(if state == v { Val::Absent } else { state }),
        }
    }
}
