//! What each write does to the key space, with Redis's semantics. Time is the log's (`t.clock`):
//! a key past its deadline is absent to every command, though its row may still wait for the
//! sweep.

use bytes::Bytes;

use super::key_meta::KeyMeta;
use super::keyspace::Txn;
use super::KvStateMachine;
use crate::command::{CommandResult, Deadline, ExpireCondition, Op, SetCondition, MAX_VALUE_LEN};
use crate::error::Result;

const NOT_AN_INTEGER: &str = "value is not an integer or out of range";

impl KvStateMachine {
    pub(super) fn execute(&mut self, op: &Op, t: &mut Txn) -> Result<CommandResult> {
        Ok(match op {
            Op::Set { key, value } => {
                self.store(t, key, value.clone(), 0)?;
                CommandResult::Ok
            }
            Op::SetWith {
                key,
                value,
                condition,
                deadline,
                get,
            } => self.set_with(t, key, value, *condition, *deadline, *get)?,
            Op::Delete { key } => CommandResult::Deleted {
                existed: self.delete_live(t, key)?,
            },
            Op::DeleteMany { keys } => {
                let mut existed = 0;
                for key in keys {
                    existed += i64::from(self.delete_live(t, key)?);
                }
                CommandResult::Value(existed)
            }
            Op::GetDel { key } => match self.live(t, key)? {
                Some(old) => {
                    self.unstore(t, key)?;
                    CommandResult::Bulk(old.value)
                }
                None => CommandResult::Nil,
            },
            Op::Cas { key, expected, new } => {
                let current = self.live(t, key)?.map(|r| r.value);
                if current != *expected {
                    return Ok(CommandResult::CasFailed { current });
                }
                match new {
                    Some(v) => self.store(t, key, v.clone(), 0)?,
                    None => {
                        self.unstore(t, key)?;
                    }
                }
                CommandResult::CasOk
            }
            Op::Incr { key, by } => self.incr(t, key, *by)?,
            Op::MSet {
                pairs,
                if_none_exist,
            } => self.mset(t, pairs, *if_none_exist)?,
            Op::Append { key, value } => self.append(t, key, value)?,
            Op::Expire {
                key,
                deadline,
                condition,
            } => self.expire(t, key, *deadline, *condition)?,
            Op::Rename {
                from,
                to,
                if_absent,
            } => self.rename(t, from, to, *if_absent)?,
            Op::FlushAll => {
                self.flush_all(t)?;
                CommandResult::Ok
            }
            Op::Multi { watches, ops } => self.multi(t, watches, ops)?,
            Op::Query(q) => self.query(q, t)?,
            Op::Noop => CommandResult::Ok,
            Op::AllocateRangeId => self.allocate_range_id(t)?,
            Op::Split(split) => self.split(t, split)?,
        })
    }

    /// Deletes the key; true if it was there (not expired).
    fn delete_live(&mut self, t: &mut Txn, key: &[u8]) -> Result<bool> {
        Ok(self
            .unstore(t, key)?
            .is_some_and(|old| !old.expired_at(t.clock)))
    }

    /// The deadline `d` gives a key whose live record is `old`, in log time (0: none).
    fn deadline_at(t: &Txn, d: Deadline, old: Option<&KeyMeta>) -> u64 {
        match d {
            Deadline::None => 0,
            Deadline::Keep => old.map_or(0, |r| r.expires_at),
            Deadline::In(ms) => t.clock.saturating_add(ms).max(1),
            Deadline::At(ms) => ms.max(1),
        }
    }

    /// Writes the key, or deletes it if its deadline has already passed (Redis: a `SET ... EXAT`
    /// in the past leaves no key).
    fn store_until(
        &mut self,
        t: &mut Txn,
        key: &[u8],
        value: Bytes,
        expires_at: u64,
    ) -> Result<()> {
        if expires_at != 0 && expires_at <= t.clock {
            // Written and gone at once: for WATCH, the key was touched (Redis aborts).
            self.unstore(t, key)?;
            self.note_removed(t, key, t.index)?;
            return Ok(());
        }
        self.store(t, key, value, expires_at)
    }

    fn set_with(
        &mut self,
        t: &mut Txn,
        key: &Bytes,
        value: &Bytes,
        condition: SetCondition,
        deadline: Deadline,
        get: bool,
    ) -> Result<CommandResult> {
        // The value only for GET; the rest needs the version and deadline alone.
        let (old, previous) = if get {
            let old = self.live(t, key)?;
            let previous = match &old {
                Some(r) => CommandResult::Bulk(r.value.clone()),
                None => CommandResult::Nil,
            };
            (old.as_ref().map(KeyMeta::of), previous)
        } else {
            (self.live_meta(t, key)?, CommandResult::Nil)
        };
        let allowed = match condition {
            SetCondition::Always => true,
            SetCondition::IfAbsent => old.is_none(),
            SetCondition::IfPresent => old.is_some(),
        };
        if !allowed {
            return Ok(previous);
        }
        let answer = if get { previous } else { CommandResult::Ok };
        let expires_at = Self::deadline_at(t, deadline, old.as_ref());
        self.store_until(t, key, value.clone(), expires_at)?;
        Ok(answer)
    }

    fn incr(&mut self, t: &mut Txn, key: &Bytes, by: i64) -> Result<CommandResult> {
        let old = self.live(t, key)?;
        let current = match &old {
            None => 0,
            Some(r) => match crate::redis_int::parse_i64(&r.value) {
                Some(n) => n,
                None => return Ok(CommandResult::Error(NOT_AN_INTEGER.into())),
            },
        };
        let Some(n) = current.checked_add(by) else {
            return Ok(CommandResult::Error(
                "increment or decrement would overflow".into(),
            ));
        };
        let expires_at = old.map_or(0, |r| r.expires_at);
        self.store(t, key, Bytes::from(n.to_string()), expires_at)?;
        Ok(CommandResult::Value(n))
    }

    fn mset(
        &mut self,
        t: &mut Txn,
        pairs: &[(Bytes, Bytes)],
        if_none_exist: bool,
    ) -> Result<CommandResult> {
        if if_none_exist {
            for (k, _) in pairs {
                if self.live_meta(t, k)?.is_some() {
                    return Ok(CommandResult::Value(0));
                }
            }
        }
        for (k, v) in pairs {
            self.store(t, k, v.clone(), 0)?;
        }
        Ok(if if_none_exist {
            CommandResult::Value(1)
        } else {
            CommandResult::Ok
        })
    }

    fn append(&mut self, t: &mut Txn, key: &Bytes, value: &Bytes) -> Result<CommandResult> {
        let old = self.live(t, key)?;
        let old_len = old.as_ref().map_or(0, |r| r.value.len());
        if old_len + value.len() > MAX_VALUE_LEN {
            return Ok(CommandResult::Error(format!(
                "string exceeds maximum allowed size (values up to {MAX_VALUE_LEN} bytes)"
            )));
        }
        let mut joined = Vec::with_capacity(old_len + value.len());
        if let Some(r) = &old {
            joined.extend_from_slice(&r.value);
        }
        joined.extend_from_slice(value);
        let len = joined.len() as i64;
        let expires_at = old.map_or(0, |r| r.expires_at);
        self.store(t, key, Bytes::from(joined), expires_at)?;
        Ok(CommandResult::Value(len))
    }

    fn expire(
        &mut self,
        t: &mut Txn,
        key: &Bytes,
        deadline: Deadline,
        condition: ExpireCondition,
    ) -> Result<CommandResult> {
        let Some(old) = self.live(t, key)? else {
            return Ok(CommandResult::Value(0));
        };
        let new = Self::deadline_at(t, deadline, Some(&KeyMeta::of(&old)));
        // No deadline counts as infinitely far, as Redis has it for GT and LT.
        let far = |d: u64| if d == 0 { u64::MAX } else { d };
        let allowed = match condition {
            ExpireCondition::Always => true,
            ExpireCondition::IfNone => old.expires_at == 0,
            ExpireCondition::IfSome => old.expires_at != 0,
            ExpireCondition::IfLater => far(new) > far(old.expires_at),
            ExpireCondition::IfEarlier => far(new) < far(old.expires_at),
            ExpireCondition::IfSomeAndEarlier => {
                old.expires_at != 0 && far(new) < far(old.expires_at)
            }
        };
        if !allowed || (deadline == Deadline::None && old.expires_at == 0) {
            return Ok(CommandResult::Value(0));
        }
        self.store_until(t, key, old.value, new)?;
        Ok(CommandResult::Value(1))
    }

    fn rename(
        &mut self,
        t: &mut Txn,
        from: &Bytes,
        to: &Bytes,
        if_absent: bool,
    ) -> Result<CommandResult> {
        let Some(src) = self.live(t, from)? else {
            return Ok(CommandResult::Error("no such key".into()));
        };
        if if_absent && self.live_meta(t, to)?.is_some() {
            return Ok(CommandResult::Value(0));
        }
        if from != to {
            self.unstore(t, from)?;
            self.unstore(t, to)?;
            self.store(t, to, src.value, src.expires_at)?;
        }
        Ok(if if_absent {
            CommandResult::Value(1)
        } else {
            CommandResult::Ok
        })
    }

    fn multi(
        &mut self,
        t: &mut Txn,
        watches: &[(Bytes, u64)],
        ops: &[Op],
    ) -> Result<CommandResult> {
        for (key, token) in watches {
            if !self.unchanged_since_watch(t, key, *token)? {
                return Ok(CommandResult::Aborted);
            }
        }
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            results.push(self.execute(op, t)?);
        }
        Ok(CommandResult::Array(results))
    }
}
