//! What each command does to the state machine, and the client-session bookkeeping that makes
//! a retried command return its first result instead of running twice.

use std::collections::BTreeSet;

use raft_core::Entry;

use super::keyspace::Txn;
use super::records::Session;
use super::{KvStateMachine, SESSIONLESS_CLIENT};
use crate::command::{Command, CommandResult, MAX_COMMAND_LEN};
use crate::error::{DecodeError, Result};

impl KvStateMachine {
    pub(super) fn apply_entry(
        &mut self,
        e: &Entry,
        decoded: &std::result::Result<Command, DecodeError>,
        t: &mut Txn,
        dirty: &mut BTreeSet<u64>,
    ) -> Result<CommandResult> {
        let cmd = match decoded {
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
        t.index = e.index;
        if cmd.client_id == SESSIONLESS_CLIENT {
            if let Some(refused) = self.refusal(&cmd.op) {
                return Ok(refused);
            }
            return self.execute(&cmd.op, t);
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
        // After the session check: a retry of a command applied before the range gave its key
        // away gets its first result, where a refusal would send it to run again elsewhere. A
        // refusal is not kept in the session: nothing was applied.
        if let Some(refused) = self.refusal(&cmd.op) {
            return Ok(refused);
        }
        let mut result = self.execute(&cmd.op, t)?;
        if result.encoded_len() > MAX_COMMAND_LEN {
            // The session keeps the result for a retry, and a stored result must decode again.
            result = CommandResult::Error(format!(
                "the reply is larger than {MAX_COMMAND_LEN} bytes and was not kept: its effect is applied"
            ));
        }
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
}
