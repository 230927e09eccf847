//! The key-value state machine on LevelDB (`<data-dir>/kv_data`).
//!
//! Each call to [`KvStateMachine::apply`] is one `WriteBatch` holding the user writes of its
//! entries, the applied index and the changed client sessions. LevelDB applies a batch entirely or
//! not at all, so after any crash the stored state is exactly "every entry up to the applied
//! index", and restarting replays the log from there. The batch need not be synced: the log keeps
//! every entry above [`KvStateMachine::durable_applied_index`], and replaying them is harmless
//! because of the session table.
//!
//! Exactly-once: each client keeps its last sequence number and result. A command whose sequence
//! number equals the client's last is a retry and gets the cached result without being applied
//! again; a lower one is an old retry overtaken by a newer request ([`CommandResult::Stale`]).
//! The table is bounded: past `max_sessions` clients, the one whose last command sits earliest in
//! the log is evicted. Log position is the same on every replica, so every replica evicts the same
//! clients; wall-clock expiry would let replicas disagree.
//!
//! Keys: `0x00 ...` metadata, `0x01 | user key` user data. Every user key gets the `0x01` prefix,
//! whatever its bytes, so no user key can overwrite metadata.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use raft_core::{Entry, EntryKind, Index, Term};
use rusty_leveldb::WriteBatch;

use crate::codec::{self, Reader};
use crate::command::{Command, CommandResult, Op, MAX_COMMAND_LEN};
use crate::env::SyncStats;
use crate::error::{DecodeError, Error, Result};
use crate::ldb::{Ldb, StorageEnv};

/// Subdirectory of the data directory that holds the state machine.
pub const KV_DATA_DIR: &str = "kv_data";
/// Default bound on the session table.
pub const DEFAULT_MAX_SESSIONS: usize = 10_000;

const META: u8 = 0x00;
pub(crate) const USER: u8 = 0x01;
pub(crate) const KEY_APPLIED: &[u8] = &[META, b'a'];
pub(crate) const SESSION_PREFIX: &[u8] = &[META, b's'];
const FORMAT_VERSION: u8 = 1;

fn user_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(USER);
    k.extend_from_slice(key);
    k
}

fn session_key(client: u64) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[..2].copy_from_slice(SESSION_PREFIX);
    k[2..].copy_from_slice(&client.to_be_bytes());
    k
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Session {
    last_seq: u64,
    /// Log index of the client's last applied command; the eviction order.
    last_index: Index,
    result: CommandResult,
}

fn encode_session(s: &Session) -> Vec<u8> {
    let mut b = vec![FORMAT_VERSION];
    codec::put_u64(&mut b, s.last_seq);
    codec::put_u64(&mut b, s.last_index);
    codec::put_bytes(&mut b, &s.result.encode());
    codec::seal(&mut b);
    b
}

pub(crate) fn decode_session(v: Bytes) -> Result<Session, DecodeError> {
    codec::unseal(&v)?;
    let mut r = Reader::new(v.slice(..v.len() - 4));
    let version = r.u8()?;
    if version != FORMAT_VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    let last_seq = r.u64()?;
    let last_index = r.u64()?;
    let result = CommandResult::decode(&r.bytes("cached result", MAX_COMMAND_LEN)?)?;
    r.finish()?;
    Ok(Session {
        last_seq,
        last_index,
        result,
    })
}

/// Commands from this client id are applied without a session: no deduplication, no session
/// row written. For requests that are never retried (a plain Redis connection), whose `seq` is
/// then only a request id that lets the node route the result back.
pub const SESSIONLESS_CLIENT: u64 = 0;

/// What [`KvStateMachine::apply`] returns per applied entry: `None` for a Raft no-op entry.
pub type Applied = Vec<(Index, Option<CommandResult>)>;

/// The replicated key-value map. One owner; every method takes `&mut self`.
pub struct KvStateMachine {
    db: Ldb,
    applied: Index,
    applied_term: Term,
    durable_applied: Index,
    sessions: BTreeMap<u64, Session>,
    /// `(last_index, client)` of every session: the first element is the next to evict.
    lru: BTreeSet<(Index, u64)>,
    max_sessions: usize,
    sync_writes: bool,
    /// Set when a failure left memory and disk possibly out of step; the owner must reopen.
    poisoned: Option<String>,
    data_dir: PathBuf,
    env: StorageEnv,
    /// A snapshot install whose state-machine part is done but whose log part may not be: see
    /// [`KvStateMachine::pending_install`].
    pending_install: Option<raft_core::SnapshotMeta>,
    /// A snapshot image being written in steps between applies (see `snapshot.rs`).
    pub(crate) image_in_progress: Option<Box<crate::snapshot::ImageInProgress>>,
}

impl KvStateMachine {
    /// Opens (creating if needed) `<data_dir>/kv_data` on the real disk.
    pub fn open(data_dir: &Path) -> Result<KvStateMachine> {
        Self::open_with(data_dir, &StorageEnv::Disk, DEFAULT_MAX_SESSIONS)
    }

    pub fn open_with(
        data_dir: &Path,
        env: &StorageEnv,
        max_sessions: usize,
    ) -> Result<KvStateMachine> {
        let pending_install = crate::snapshot::recover(data_dir, env)?;
        let db = Ldb::open(&data_dir.join(KV_DATA_DIR), env)?;
        let mut sm = KvStateMachine {
            db,
            applied: 0,
            applied_term: 0,
            durable_applied: 0,
            sessions: BTreeMap::new(),
            lru: BTreeSet::new(),
            max_sessions: max_sessions.max(1),
            sync_writes: false,
            poisoned: None,
            data_dir: data_dir.to_path_buf(),
            env: env.clone(),
            pending_install,
            image_in_progress: None,
        };
        if let Some(v) = sm.db.get(KEY_APPLIED)? {
            let decoded = codec::unseal(&v).and_then(|body| {
                let mut r = Reader::new(Bytes::copy_from_slice(body));
                let version = r.u8()?;
                if version != FORMAT_VERSION {
                    return Err(DecodeError::UnknownVersion(version));
                }
                let (i, t) = (r.u64()?, r.u64()?);
                r.finish()?;
                Ok((i, t))
            });
            let (i, t) = decoded.map_err(|e| sm.corrupt(None, format!("applied index: {e}")))?;
            sm.applied = i;
            sm.applied_term = t;
            sm.durable_applied = i;
        }
        if let Some(m) = sm.pending_install {
            if (sm.applied, sm.applied_term) != (m.index, m.term) {
                return Err(sm.corrupt(
                    Some(sm.applied),
                    format!(
                        "a snapshot install of {}/{} is marked as committed, but the state \
                         machine is at {}/{}",
                        m.index, m.term, sm.applied, sm.applied_term
                    ),
                ));
            }
        }
        let mut loaded = Vec::new();
        let mut bad = None;
        sm.db.scan_from(SESSION_PREFIX, |k, v| {
            if !k.starts_with(SESSION_PREFIX) {
                return Ok(false);
            }
            if k.len() != 10 {
                bad = Some(format!("malformed session key {k:02x?}"));
                return Ok(false);
            }
            let mut a = [0u8; 8];
            a.copy_from_slice(&k[2..]);
            let client = u64::from_be_bytes(a);
            match decode_session(v) {
                Ok(s) => loaded.push((client, s)),
                Err(e) => {
                    bad = Some(format!("session of client {client}: {e}"));
                    return Ok(false);
                }
            }
            Ok(true)
        })?;
        if let Some(b) = bad {
            return Err(sm.corrupt(None, b));
        }
        for (client, s) in loaded {
            sm.lru.insert((s.last_index, client));
            sm.sessions.insert(client, s);
        }
        Ok(sm)
    }

    /// Sync every apply batch (slower; makes `durable_applied_index() == applied_index()`).
    pub fn set_sync_writes(&mut self, sync: bool) {
        self.sync_writes = sync;
    }

    fn corrupt(&self, index: Option<Index>, detail: String) -> Error {
        Error::Corruption {
            path: self.db.path().to_path_buf(),
            index,
            detail,
        }
    }

    pub(crate) fn check_poison(&self) -> Result<()> {
        match &self.poisoned {
            Some(p) => Err(Error::Io {
                path: self.db.path().to_path_buf(),
                detail: format!("state machine unusable after an earlier failure, reopen it: {p}"),
            }),
            None => Ok(()),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.db.path().to_path_buf()
    }

    /// The data directory this state machine lives in.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub(crate) fn env(&self) -> &StorageEnv {
        &self.env
    }

    pub(crate) fn max_sessions(&self) -> usize {
        self.max_sessions
    }

    pub(crate) fn ldb(&mut self) -> &mut Ldb {
        &mut self.db
    }

    /// A snapshot install that reached the state machine but is not yet known to have reached the
    /// Raft log (a crash between the two, or [`KvStateMachine::install`] just returned). Until
    /// the owner has called `RaftStorage::install_snapshot(meta)` and then
    /// [`KvStateMachine::finish_install`], `apply` is refused: the log may still hold entries
    /// that conflict with the installed state. `NodeStorage::open` does both.
    pub fn pending_install(&self) -> Option<raft_core::SnapshotMeta> {
        self.pending_install
    }

    /// Records that the log part of a pending install is durable: removes the install marker
    /// and the previous state machine.
    pub fn finish_install(&mut self) -> Result<()> {
        if self.pending_install.is_some() {
            crate::snapshot::finish(&self.data_dir, &self.env, &mut |_| {})?;
            self.pending_install = None;
        }
        Ok(())
    }

    pub fn applied_index(&self) -> Index {
        self.applied
    }

    pub fn applied_term(&self) -> Term {
        self.applied_term
    }

    /// Applied index known to be on stable storage: the log must keep every entry above it.
    pub fn durable_applied_index(&self) -> Index {
        self.durable_applied
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The clients that have a session, in id order.
    pub fn session_clients(&self) -> Vec<u64> {
        self.sessions.keys().copied().collect()
    }

    pub fn sync_stats(&self) -> Option<Arc<SyncStats>> {
        self.db.sync_stats()
    }

    /// Makes everything applied so far durable.
    pub fn sync(&mut self) -> Result<Index> {
        self.check_poison()?;
        self.db.flush()?;
        self.durable_applied = self.applied;
        Ok(self.applied)
    }

    /// Applies committed entries in log order. Entries at or below the applied index are skipped
    /// (a replay after restart); the rest must continue it without a gap. Returns the result of
    /// each applied entry. All of it is one `WriteBatch`.
    pub fn apply(&mut self, entries: &[Entry]) -> Result<Applied> {
        self.check_poison()?;
        if let Some(m) = self.pending_install {
            return Err(Error::InvalidRequest(format!(
                "{}: the install of snapshot {}/{} is unfinished: install it in the Raft log \
                 and call finish_install before applying entries",
                self.db.path().display(),
                m.index,
                m.term
            )));
        }
        let fresh: Vec<&Entry> = entries.iter().filter(|e| e.index > self.applied).collect();
        for (k, e) in fresh.iter().enumerate() {
            let want = self.applied + 1 + k as u64;
            if e.index != want {
                return Err(Error::InvalidRequest(format!(
                    "cannot apply entry {} to {}: expected index {want} (applied index {})",
                    e.index,
                    self.db.path().display(),
                    self.applied
                )));
            }
        }
        let Some(last) = fresh.last() else {
            return Ok(Vec::new());
        };
        let (last_index, last_term) = (last.index, last.term);
        match self.apply_fresh(&fresh, last_index, last_term) {
            Ok(r) => Ok(r),
            Err(e) => {
                // Sessions in memory may already reflect entries that did not reach the disk.
                self.poisoned = Some(e.to_string());
                Err(e)
            }
        }
    }

    fn apply_fresh(
        &mut self,
        fresh: &[&Entry],
        last_index: Index,
        last_term: Term,
    ) -> Result<Applied> {
        let mut overlay: BTreeMap<Bytes, Option<Bytes>> = BTreeMap::new();
        let mut dirty: BTreeSet<u64> = BTreeSet::new();
        let mut results = Vec::with_capacity(fresh.len());
        for e in fresh {
            let r = match e.kind {
                EntryKind::Normal => Some(self.apply_entry(e, &mut overlay, &mut dirty)?),
                // No-ops, and kinds that carry no command for the state machine.
                _ => None,
            };
            results.push((e.index, r));
        }
        let mut batch = WriteBatch::default();
        for (k, v) in &overlay {
            match v {
                Some(v) => batch.put(&user_key(k), v),
                None => batch.delete(&user_key(k)),
            }
        }
        for c in &dirty {
            match self.sessions.get(c) {
                Some(s) => batch.put(&session_key(*c), &encode_session(s)),
                None => batch.delete(&session_key(*c)),
            }
        }
        let mut applied = vec![FORMAT_VERSION];
        codec::put_u64(&mut applied, last_index);
        codec::put_u64(&mut applied, last_term);
        codec::seal(&mut applied);
        batch.put(KEY_APPLIED, &applied);
        if self.image_in_progress.is_some() {
            let written = overlay
                .keys()
                .map(|k| user_key(k))
                .chain(dirty.iter().map(|c| session_key(*c).to_vec()))
                .chain(std::iter::once(KEY_APPLIED.to_vec()));
            self.keep_images_before_overwriting(written)?;
        }
        self.db.write(batch, self.sync_writes)?;
        self.applied = last_index;
        self.applied_term = last_term;
        if self.sync_writes {
            self.durable_applied = last_index;
        }
        Ok(results)
    }

    fn apply_entry(
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

    /// The value of a user key; a read error is an error, never "absent".
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>> {
        self.check_poison()?;
        self.db.get(&user_key(key))
    }

    /// Up to `limit` user keys starting with `prefix`, in key order.
    pub fn scan_prefix(&mut self, prefix: &[u8], limit: usize) -> Result<Vec<(Bytes, Bytes)>> {
        let start = user_key(prefix);
        self.scan(&start, limit, |k| k.starts_with(&start))
    }

    /// Up to `limit` user keys in `[start, end)` (`end = None`: to the last key), in key order.
    pub fn scan_range(
        &mut self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>> {
        let end = end.map(user_key);
        self.scan(&user_key(start), limit, |k| {
            k.first() == Some(&USER) && end.as_deref().is_none_or(|e| k < e)
        })
    }

    fn scan(
        &mut self,
        start: &[u8],
        limit: usize,
        keep: impl Fn(&[u8]) -> bool,
    ) -> Result<Vec<(Bytes, Bytes)>> {
        self.check_poison()?;
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        self.db.scan_from(start, |k, v| {
            if !keep(k) {
                return Ok(false);
            }
            out.push((Bytes::copy_from_slice(&k[1..]), v));
            Ok(out.len() < limit)
        })?;
        Ok(out)
    }

    /// Compacts the whole database, dropping deleted and overwritten data.
    pub fn compact(&mut self) -> Result<()> {
        self.check_poison()?;
        self.db.compact_all()
    }

    #[cfg(test)]
    pub(crate) fn raw_get(&mut self, key: &[u8]) -> Result<Option<Bytes>> {
        self.db.get(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::PowerCutEnv;

    fn b(s: &str) -> Bytes {
        Bytes::from(s.to_owned())
    }

    fn cmd_entry(index: Index, client: u64, seq: u64, op: Op) -> Entry {
        Entry::new(
            1,
            index,
            EntryKind::Normal,
            Command::new(client, seq, op).encode(),
        )
    }

    fn set(k: &str, v: &str) -> Op {
        Op::Set {
            key: b(k),
            value: b(v),
        }
    }

    fn incr(k: &str, by: i64) -> Op {
        Op::Incr { key: b(k), by }
    }

    fn results(r: Applied) -> Vec<Option<CommandResult>> {
        r.into_iter().map(|(_, r)| r).collect()
    }

    #[test]
    fn sessionless_commands_are_applied_every_time_and_keep_no_session() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = KvStateMachine::open(dir.path()).unwrap();
        // The same (client, seq) twice: without a session both apply, so the counter says 2.
        let es = vec![
            cmd_entry(1, SESSIONLESS_CLIENT, 9, incr("n", 1)),
            cmd_entry(2, SESSIONLESS_CLIENT, 9, incr("n", 1)),
        ];
        let r = results(sm.apply(&es).unwrap());
        assert_eq!(
            r,
            vec![Some(CommandResult::Value(1)), Some(CommandResult::Value(2))]
        );
        assert_eq!(sm.session_count(), 0);
    }

    #[test]
    fn operations_and_results() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = KvStateMachine::open(dir.path()).unwrap();
        let es = vec![
            cmd_entry(1, 1, 1, set("a", "1")),
            cmd_entry(2, 1, 2, incr("a", 41)),
            cmd_entry(3, 1, 3, incr("n", -5)),
            cmd_entry(4, 1, 4, set("s", "text")),
            cmd_entry(5, 1, 5, incr("s", 1)),
            cmd_entry(
                6,
                1,
                6,
                Op::Cas {
                    key: b("c"),
                    expected: None,
                    new: Some(b("x")),
                },
            ),
            cmd_entry(
                7,
                1,
                7,
                Op::Cas {
                    key: b("c"),
                    expected: None,
                    new: Some(b("y")),
                },
            ),
            cmd_entry(
                8,
                1,
                8,
                Op::Cas {
                    key: b("c"),
                    expected: Some(b("x")),
                    new: None,
                },
            ),
            cmd_entry(9, 1, 9, Op::Delete { key: b("a") }),
            cmd_entry(10, 1, 10, Op::Delete { key: b("a") }),
            Entry::new(1, 11, EntryKind::Noop, Bytes::new()),
            cmd_entry(12, 1, 11, set("big", "9223372036854775807")),
            cmd_entry(13, 1, 12, incr("big", 1)),
            Entry::new(1, 14, EntryKind::Normal, Bytes::from_static(b"garbage")),
            cmd_entry(15, 1, 13, Op::Noop),
        ];
        let r = results(sm.apply(&es).unwrap());
        use CommandResult as R;
        assert_eq!(r[0], Some(R::Ok));
        assert_eq!(r[1], Some(R::Value(42)));
        assert_eq!(r[2], Some(R::Value(-5)));
        assert!(matches!(&r[4], Some(R::Error(m)) if m.contains("not an integer")));
        assert_eq!(r[5], Some(R::CasOk));
        assert_eq!(
            r[6],
            Some(R::CasFailed {
                current: Some(b("x"))
            })
        );
        assert_eq!(r[7], Some(R::CasOk));
        assert_eq!(r[8], Some(R::Deleted { existed: true }));
        assert_eq!(r[9], Some(R::Deleted { existed: false }));
        assert_eq!(r[10], None);
        assert!(matches!(&r[12], Some(R::Error(m)) if m.contains("overflow")));
        assert!(matches!(&r[13], Some(R::Error(m)) if m.contains("entry 14")));
        assert_eq!(r[14], Some(R::Ok));
        assert_eq!(sm.get(b"a").unwrap(), None);
        assert_eq!(sm.get(b"c").unwrap(), None);
        assert_eq!(sm.get(b"n").unwrap(), Some(b("-5")));
        assert_eq!(sm.get(b"s").unwrap(), Some(b("text")));
        assert_eq!(sm.applied_index(), 15);
    }

    #[test]
    fn replayed_entries_are_skipped_and_gaps_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = KvStateMachine::open(dir.path()).unwrap();
        sm.apply(&[
            cmd_entry(1, 1, 1, incr("k", 1)),
            cmd_entry(2, 2, 1, incr("k", 1)),
        ])
        .unwrap();
        // Entries 1 and 2 again (a replay after restart) plus a new one.
        let r = sm
            .apply(&[
                cmd_entry(1, 1, 1, incr("k", 1)),
                cmd_entry(2, 2, 1, incr("k", 1)),
                cmd_entry(3, 3, 1, incr("k", 1)),
            ])
            .unwrap();
        assert_eq!(r, vec![(3, Some(CommandResult::Value(3)))]);
        let e = sm.apply(&[cmd_entry(5, 3, 2, incr("k", 1))]).unwrap_err();
        assert!(e.to_string().contains("expected index 4"), "{e}");
        // Refused before anything was changed.
        assert_eq!(sm.get(b"k").unwrap(), Some(b("3")));
        sm.apply(&[cmd_entry(4, 3, 2, incr("k", 1))]).unwrap();
    }

    #[test]
    fn exactly_once_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut sm = KvStateMachine::open(dir.path()).unwrap();
            let r = sm
                .apply(&[
                    cmd_entry(1, 7, 1, incr("ctr", 10)),
                    // The client retried the same request; it got into the log twice.
                    cmd_entry(2, 7, 1, incr("ctr", 10)),
                ])
                .unwrap();
            assert_eq!(
                results(r),
                vec![
                    Some(CommandResult::Value(10)),
                    Some(CommandResult::Value(10))
                ]
            );
            sm.apply(&[cmd_entry(3, 7, 2, incr("ctr", 1))]).unwrap();
        }
        let mut sm = KvStateMachine::open(dir.path()).unwrap();
        let r = sm
            .apply(&[
                cmd_entry(4, 7, 2, incr("ctr", 1)),
                cmd_entry(5, 7, 1, incr("ctr", 10)),
                cmd_entry(6, 7, 3, incr("ctr", 1)),
            ])
            .unwrap();
        assert_eq!(
            results(r),
            vec![
                Some(CommandResult::Value(11)),
                Some(CommandResult::Stale { last_seq: 2 }),
                Some(CommandResult::Value(12)),
            ]
        );
        assert_eq!(sm.get(b"ctr").unwrap(), Some(b("12")));
    }

    fn run_eviction(dir: &Path) -> (Vec<u64>, Vec<Option<CommandResult>>, Option<Bytes>) {
        let mut sm = KvStateMachine::open_with(dir, &StorageEnv::Disk, 3).unwrap();
        // Clients 10, 20, 30, 40 in that log order; then 10 again (moves to most recent),
        // then 50: evicts 20 and 30, the least recently used by log position.
        let mut es = vec![];
        for (i, c) in [10u64, 20, 30, 40].iter().enumerate() {
            es.push(cmd_entry(i as u64 + 1, *c, 1, incr("x", 1)));
        }
        es.push(cmd_entry(5, 10, 2, incr("x", 1)));
        es.push(cmd_entry(6, 50, 1, incr("x", 1)));
        let mut r = results(sm.apply(&es).unwrap());
        assert_eq!(sm.session_clients(), vec![10, 40, 50]);
        drop(sm);
        let mut sm = KvStateMachine::open_with(dir, &StorageEnv::Disk, 3).unwrap();
        assert_eq!(sm.session_clients(), vec![10, 40, 50]);
        // 40 is still known: its retry is answered from the cache. 20 was forgotten: its retry
        // is applied again (the documented cost of a bounded table).
        r.extend(results(
            sm.apply(&[
                cmd_entry(7, 40, 1, incr("x", 1)),
                cmd_entry(8, 20, 1, incr("x", 1)),
            ])
            .unwrap(),
        ));
        (sm.session_clients(), r, sm.get(b"x").unwrap())
    }

    #[test]
    fn session_eviction_is_by_log_position_and_deterministic() {
        let d1 = tempfile::tempdir().unwrap();
        let d2 = tempfile::tempdir().unwrap();
        let a = run_eviction(d1.path());
        let b_ = run_eviction(d2.path());
        assert_eq!(a, b_);
        assert_eq!(a.0, vec![10, 20, 50]);
        assert_eq!(a.1[6], Some(CommandResult::Value(4)));
        assert_eq!(a.1[7], Some(CommandResult::Value(7)));
        assert_eq!(a.2, Some(b("7")));
    }

    #[test]
    fn user_keys_cannot_touch_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = KvStateMachine::open(dir.path()).unwrap();
        let mut evil_session = SESSION_PREFIX.to_vec();
        evil_session.extend_from_slice(&5u64.to_be_bytes());
        let evil: Vec<Bytes> = vec![
            Bytes::from_static(KEY_APPLIED),
            Bytes::from(evil_session),
            Bytes::from_static(&[0x00]),
            Bytes::from_static(&[0x01, 0x00, b'a']),
            Bytes::new(),
        ];
        let mut es = vec![cmd_entry(1, 5, 1, incr("k", 1))];
        for (i, k) in evil.iter().enumerate() {
            es.push(cmd_entry(
                i as u64 + 2,
                9,
                i as u64 + 1,
                Op::Set {
                    key: k.clone(),
                    value: Bytes::from_static(b"\xff\xff"),
                },
            ));
        }
        sm.apply(&es).unwrap();
        drop(sm);
        let mut sm = KvStateMachine::open(dir.path()).unwrap();
        assert_eq!(sm.applied_index(), 6);
        assert_eq!(sm.session_clients(), vec![5, 9]);
        for k in &evil {
            assert_eq!(sm.get(k).unwrap(), Some(Bytes::from_static(b"\xff\xff")));
        }
        // The real metadata is intact, under its own keys.
        assert!(sm.raw_get(KEY_APPLIED).unwrap().unwrap().len() > 2);
        let all = sm.scan_range(b"", None, 100).unwrap();
        let mut want = evil.clone();
        want.push(b("k"));
        want.sort();
        assert_eq!(all.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(), want);
        // Retry of client 5's command: still cached, so the session survived the evil keys.
        let r = sm.apply(&[cmd_entry(7, 5, 1, incr("k", 1))]).unwrap();
        assert_eq!(r, vec![(7, Some(CommandResult::Value(1)))]);
    }

    #[test]
    fn scans() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = KvStateMachine::open(dir.path()).unwrap();
        let keys = ["a", "a|1", "a|2", "ab", "b", "b|x", "c"];
        let es: Vec<Entry> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| cmd_entry(i as u64 + 1, 1, i as u64 + 1, set(k, k)))
            .collect();
        sm.apply(&es).unwrap();
        let ks = |v: Vec<(Bytes, Bytes)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(
            ks(sm.scan_prefix(b"a|", 10).unwrap()),
            vec![b("a|1"), b("a|2")]
        );
        // Byte order: "ab" < "a|1" (b'b' = 0x62 < b'|' = 0x7c).
        assert_eq!(ks(sm.scan_prefix(b"a", 2).unwrap()), vec![b("a"), b("ab")]);
        assert_eq!(ks(sm.scan_prefix(b"z", 10).unwrap()), Vec::<Bytes>::new());
        assert_eq!(
            ks(sm.scan_range(b"ab", Some(b"b|x"), 10).unwrap()),
            vec![b("ab"), b("a|1"), b("a|2"), b("b")]
        );
        assert_eq!(
            ks(sm.scan_range(b"b|", None, 10).unwrap()),
            vec![b("b|x"), b("c")]
        );
        assert_eq!(sm.scan_range(b"", None, 0).unwrap(), vec![]);
    }

    /// Unsynced apply batches may be lost on a power cut, but never partly: after the cut the
    /// state is exactly "everything up to the applied index", and at least what was synced.
    #[test]
    fn power_cut_loses_only_unsynced_batches_and_never_half_a_batch() {
        let env = PowerCutEnv::new();
        let senv = StorageEnv::PowerCut(env.clone());
        let dir = Path::new("/n1");
        let batch = |n: u64| -> Vec<Entry> {
            // Batch n (1-based) sets keys n.0 .. n.9 and increments a counter.
            let mut es: Vec<Entry> = (0..10)
                .map(|j| {
                    cmd_entry(
                        (n - 1) * 11 + j + 1,
                        1,
                        (n - 1) * 11 + j + 1,
                        set(&format!("{n}.{j}"), "v"),
                    )
                })
                .collect();
            es.push(cmd_entry(n * 11, 1, n * 11, incr("batches", 1)));
            es
        };
        {
            let mut sm = KvStateMachine::open_with(dir, &senv, 100).unwrap();
            for n in 1..=40 {
                sm.apply(&batch(n)).unwrap();
                if n == 25 {
                    assert_eq!(sm.sync().unwrap(), 275);
                }
            }
            assert_eq!(sm.durable_applied_index(), 275);
            env.cut_power();
        }
        env.power_on();
        let mut sm = KvStateMachine::open_with(dir, &senv, 100).unwrap();
        let applied = sm.applied_index();
        assert!(applied >= 275, "synced state lost: applied {applied}");
        assert!(
            applied < 440,
            "nothing unsynced was lost; the test proves nothing"
        );
        assert_eq!(applied % 11, 0, "half a batch survived: applied {applied}");
        let done = applied / 11;
        assert_eq!(
            sm.get(b"batches").unwrap(),
            Some(Bytes::from(done.to_string()))
        );
        for n in 1..=40u64 {
            for j in 0..10 {
                let present = sm.get(format!("{n}.{j}").as_bytes()).unwrap().is_some();
                assert_eq!(
                    present,
                    n <= done,
                    "key {n}.{j} with {done} batches applied"
                );
            }
        }
        // The lost entries are replayed from the log and applied exactly once.
        for n in done + 1..=40 {
            sm.apply(&batch(n)).unwrap();
        }
        assert_eq!(sm.get(b"batches").unwrap(), Some(b("40")));
    }
}
