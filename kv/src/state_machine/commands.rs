//! What each command does to the state machine, and the client-session bookkeeping that makes
//! a retried command return its first result instead of running twice.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use raft_core::Entry;

use super::records::{user_key, Session};
use super::{KvStateMachine, SESSIONLESS_CLIENT};
use crate::command::{Command, CommandResult, Op};
use crate::error::Result;

impl KvStateMachine {
    pub(super) fn apply_entry(
        &mut self,
        e: &Entry,
        overlay: &mut BTreeMap<Bytes, Option<Bytes>>,
        dirty: &mut BTreeSet<u64>,
    ) -> Result<CommandResult> {
        let cmd = match Command::decode(&e.payload) {
            Ok(c) => c,
            // Every replica holds the same bytes and so reaches the same verdict: skipping the
            // entry keeps them identical, while halting would stop the whole cluster.
            Err(err) => {
                return Ok(CommandResult::Error(format!(
                    "entry {} does not hold a valid command: {err}",
                    e.index
                )))
            }
        };
        if cmd.client_id == SESSIONLESS_CLIENT {
            return self.execute(&cmd.op, overlay);
        }
        if let Some(s) = self.sessions.get(&cmd.client_id) {
            if cmd.seq == s.last_seq {
                return Ok(s.result.clone());
            }
            if cmd.seq < s.last_seq {
                return Ok(CommandResult::Stale {
                    last_seq: s.last_seq,
                });
            }
        }
        let result = self.execute(&cmd.op, overlay)?;
        if let Some(old) = self.sessions.get(&cmd.client_id) {
            self.lru.remove(&(old.last_index, cmd.client_id));
        }
        self.sessions.insert(
            cmd.client_id,
            Session {
                last_seq: cmd.seq,
                last_index: e.index,
                result: result.clone(),
            },
        );
        self.lru.insert((e.index, cmd.client_id));
        dirty.insert(cmd.client_id);
        while self.sessions.len() > self.max_sessions {
            let Some((_, victim)) = self.lru.pop_first() else {
                break;
            };
            self.sessions.remove(&victim);
            dirty.insert(victim);
        }
        Ok(result)
    }

    fn read(
        &mut self,
        overlay: &BTreeMap<Bytes, Option<Bytes>>,
        key: &Bytes,
    ) -> Result<Option<Bytes>> {
        match overlay.get(key) {
            Some(v) => Ok(v.clone()),
            None => self.db.get(&user_key(key)),
        }
    }

    fn execute(
        &mut self,
        op: &Op,
        overlay: &mut BTreeMap<Bytes, Option<Bytes>>,
    ) -> Result<CommandResult> {
        Ok(match op {
            Op::Set { key, value } => {
                overlay.insert(key.clone(), Some(value.clone()));
                CommandResult::Ok
            }
            Op::Delete { key } => {
                let existed = self.read(overlay, key)?.is_some();
                overlay.insert(key.clone(), None);
                CommandResult::Deleted { existed }
            }
            Op::Cas { key, expected, new } => {
                let current = self.read(overlay, key)?;
                if current == *expected {
                    overlay.insert(key.clone(), new.clone());
                    CommandResult::CasOk
                } else {
                    CommandResult::CasFailed { current }
                }
            }
            Op::Incr { key, by } => {
                let current = match self.read(overlay, key)? {
                    None => 0,
                    Some(v) => match std::str::from_utf8(&v)
                        .ok()
                        .and_then(|s| s.parse::<i64>().ok())
                    {
                        Some(n) => n,
                        None => {
                            return Ok(CommandResult::Error(
                                "value is not an integer or out of range".into(),
                            ))
                        }
                    },
                };
                match current.checked_add(*by) {
                    Some(n) => {
                        overlay.insert(key.clone(), Some(Bytes::from(n.to_string())));
                        CommandResult::Value(n)
                    }
                    None => CommandResult::Error("increment or decrement would overflow".into()),
                }
            }
            Op::Noop => CommandResult::Ok,
        })
    }
}
