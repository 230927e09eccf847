//! Answers to [`Query`]s, at the applied index (a read) or inside a transaction (seeing the
//! writes queued before it). Bounded: `SCAN` looks at most at [`MAX_SCAN_COUNT`] keys a call,
//! and `KEYS` refuses to answer more than [`MAX_KEYS_REPLY`].

use bytes::Bytes;

use super::keyspace::{scan_hash, Txn};
use super::row_keys::{HASHED, USER};
use super::KvStateMachine;
use crate::command::CommandResult;
use crate::error::Result;
use crate::glob;
use crate::query::{Query, TtlForm, MAX_KEYS_REPLY, MAX_SCAN_COUNT};

impl KvStateMachine {
    /// Answers `q` at the applied index and log time; a key this range does not own is
    /// refused ([`CommandResult::NotOwned`]), as at apply.
    pub fn query_now(&mut self, q: &Query) -> Result<CommandResult> {
        self.check_poison()?;
        if let Some(refused) = self.query_refusal(q) {
            return Ok(refused);
        }
        let t = Txn::new(self);
        self.query(q, &t)
    }

    /// Answers `q` at the applied index as if the log's time were `clock_ms`. Only the
    /// simulator's deliberate bug calls it (expiry judged by a replica's own clock, which
    /// replicas disagree on); every read of the product is answered at the log's time.
    #[doc(hidden)]
    pub fn query_at_clock(&mut self, q: &Query, clock_ms: u64) -> Result<CommandResult> {
        self.check_poison()?;
        let mut t = Txn::new(self);
        t.clock = clock_ms;
        self.query(q, &t)
    }

    pub(super) fn query(&mut self, q: &Query, t: &Txn) -> Result<CommandResult> {
        Ok(match q {
            Query::Get { key } => self.value_of(t, key)?,
            Query::MGet { keys } => CommandResult::Array(
                keys.iter()
                    .map(|k| self.value_of(t, k))
                    .collect::<Result<_>>()?,
            ),
            Query::Exists { keys } => {
                let mut n = 0;
                for k in keys {
                    n += i64::from(self.live(t, k)?.is_some());
                }
                CommandResult::Value(n)
            }
            Query::Ttl { key, form } => CommandResult::Value(self.ttl(t, key, *form)?),
            Query::StrLen { key } => {
                CommandResult::Value(self.live(t, key)?.map_or(0, |r| r.value.len() as i64))
            }
            Query::Type { key } => CommandResult::Status(
                if self.live(t, key)?.is_some() {
                    "string"
                } else {
                    "none"
                }
                .into(),
            ),
            Query::DbSize => CommandResult::Value(t.counts.keys as i64),
            Query::Scan {
                cursor,
                pattern,
                count,
            } => self.scan_keys(t, *cursor, pattern.as_deref(), *count)?,
            Query::Keys { pattern } => self.keys_matching(t, pattern)?,
            Query::Versions { keys } => CommandResult::Array(
                keys.iter()
                    .map(|k| Ok(CommandResult::Value(self.watch_token(t, k)? as i64)))
                    .collect::<Result<_>>()?,
            ),
        })
    }

    fn value_of(&mut self, t: &Txn, key: &[u8]) -> Result<CommandResult> {
        Ok(match self.live(t, key)? {
            Some(r) => CommandResult::Bulk(r.value),
            None => CommandResult::Nil,
        })
    }

    /// Redis's answers: -2 no key, -1 no deadline, else the time left or the deadline.
    fn ttl(&mut self, t: &Txn, key: &[u8], form: TtlForm) -> Result<i64> {
        let Some(r) = self.live(t, key)? else {
            return Ok(-2);
        };
        if r.expires_at == 0 {
            return Ok(-1);
        }
        let left = r.expires_at - t.clock;
        let n = match form {
            TtlForm::Seconds => (left + 500) / 1000,
            TtlForm::Millis => left,
            TtlForm::AtSeconds => r.expires_at / 1000,
            TtlForm::AtMillis => r.expires_at,
        };
        Ok(i64::try_from(n).unwrap_or(i64::MAX))
    }

    /// One `SCAN` step: keys in hash order from `cursor`; the next cursor is the hash of the
    /// first key not looked at (0: none left). Keys sharing a hash are taken together, so a
    /// cursor always moves forward.
    fn scan_keys(
        &mut self,
        t: &Txn,
        cursor: u64,
        pattern: Option<&[u8]>,
        count: u64,
    ) -> Result<CommandResult> {
        let count = count.clamp(1, MAX_SCAN_COUNT) as usize;
        let start = self.keys.hashed(cursor.max(1), &[]);
        let keys = self.keys.clone();
        let in_index = |k: &[u8]| keys.index_entry(HASHED, k).is_some();
        // Only rows `in_index` kept are asked about.
        let hash_of = |k: &[u8]| keys.index_entry(HASHED, k).map_or(0, |(hash, _)| hash);
        let mut want = count + 1;
        let rows = loop {
            let rows = self.rows_from(t, &start, want, in_index)?;
            let straddles =
                rows.len() == want && hash_of(&rows[want - 1].0) == hash_of(&rows[want - 2].0);
            if !straddles {
                break rows;
            }
            want += count;
        };
        let (taken, next) = if rows.len() == want {
            (&rows[..want - 1], hash_of(&rows[want - 1].0))
        } else {
            (&rows[..], 0)
        };
        let mut found = Vec::new();
        for (row, _) in taken {
            let Some((hash, key)) = keys.index_entry(HASHED, row) else {
                continue;
            };
            debug_assert_eq!(scan_hash(key), hash);
            if pattern.is_some_and(|p| !glob::matches(p, key)) {
                continue;
            }
            if self.live(t, key)?.is_some() {
                found.push(CommandResult::Bulk(Bytes::copy_from_slice(key)));
            }
        }
        Ok(CommandResult::Array(vec![
            CommandResult::Bulk(Bytes::from(next.to_string())),
            CommandResult::Array(found),
        ]))
    }

    /// Every live key of this range matching `pattern`, in key order, walking from its literal
    /// prefix.
    fn keys_matching(&mut self, t: &Txn, pattern: &[u8]) -> Result<CommandResult> {
        let mut prefix = vec![USER];
        prefix.extend_from_slice(glob::literal_prefix(pattern));
        let (start, end) = self.owned_user_rows(prefix.clone());
        let mut out = Vec::new();
        let mut from = start;
        loop {
            let rows = self.rows_from(t, &from, 4096, |k| {
                k.starts_with(&prefix) && k < end.as_slice()
            })?;
            let Some((last, _)) = rows.last() else {
                break;
            };
            let mut next = last.clone();
            next.push(0);
            let done = rows.len() < 4096;
            for (row, value) in rows {
                let key = &row[1..];
                if !glob::matches(pattern, key) {
                    continue;
                }
                let record = super::keyspace::Record::decode(&value)
                    .map_err(|e| self.corrupt(None, format!("the value of a key: {e}")))?;
                if record.expired_at(t.clock) {
                    continue;
                }
                if out.len() == MAX_KEYS_REPLY {
                    return Ok(CommandResult::Error(format!(
                        "KEYS would answer more than {MAX_KEYS_REPLY} keys; use SCAN"
                    )));
                }
                out.push(CommandResult::Bulk(Bytes::copy_from_slice(key)));
            }
            if done {
                break;
            }
            from = next;
        }
        Ok(CommandResult::Array(out))
    }
}
