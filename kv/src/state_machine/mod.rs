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
//! Conf-change entries are applied too: the configuration and member addresses they carry go to
//! the member table ([`KvStateMachine::members`]), a metadata row written in the same batch as
//! the applied index, so that it is exactly the table at the applied index and snapshot images
//! carry it like any other row.
//!
//! Several ranges share one database ([`KvStateMachine::open_range`]): the key layout, the
//! first range's rows as before ranges and every other range's behind its prefix, is in
//! `row_keys.rs`; the descriptor and the ownership check in `range_rows.rs`; a range's image
//! and its install in `range_image.rs`; range ids and the split command in `split.rs`, and
//! the listing of a database's ranges in `stored_ranges.rs`. The metadata encodings are in `records.rs`; what each
//! command does, and the session table's bookkeeping, in `commands.rs`.

use std::cell::{RefCell, RefMut};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use raft_core::{ConfChangeEntry, Entry, EntryKind, Index, Membership, SnapshotMeta, Term};
use rusty_leveldb::WriteBatch;

use crate::command::CommandResult;
use crate::env::SyncStats;
use crate::error::{Error, Result};
use crate::ldb::{Ldb, StorageEnv};
use crate::members::MemberTable;
use crate::ranges::{RangeDescriptor, RangeId, FIRST_RANGE};

mod commands;
mod expiry;
mod key_meta;
mod keyspace;
mod layout;
mod ops;
mod queries;
mod range_image;
mod range_rows;
mod records;
mod row_keys;
mod split;
mod stored_ranges;
mod watch;

pub use expiry::{FLUSH_CHUNK_ROWS, SWEEP_PER_STAMP};
pub(crate) use keyspace::decode_clock;
use keyspace::Txn;
pub use keyspace::{scan_hash, KeyCounts, Record};
pub use range_image::{RangeImage, RANGE_INSTALL_BATCH_ROWS};
use records::encode_session;
pub(crate) use records::{
    decode_applied, decode_member_addrs, decode_session, encode_applied, encode_member_addrs,
    Session, LAYOUT_RECORDS,
};
use row_keys::{user_row, StateKeys};
pub(crate) use row_keys::{
    EXPIRY, HASHED, KEY_APPLIED, KEY_CLOCK, KEY_COUNTS, KEY_DESCRIPTOR, KEY_LAYOUT, KEY_MEMBERS,
    SESSION_PREFIX, USER,
};
pub use split::{RANGE_INITIAL_INDEX, RANGE_INITIAL_TERM};
pub(crate) use watch::check_watch_row;
pub use watch::WATCHED_ABSENT;

/// Subdirectory of the data directory that holds the state machine.
pub const KV_DATA_DIR: &str = "kv_data";
/// Default bound on the session table.
pub const DEFAULT_MAX_SESSIONS: usize = 10_000;

/// Commands from this client id are applied without a session: no deduplication, no session
/// row written. For requests that are never retried (a plain Redis connection), whose `seq` is
/// then only a request id that lets the node route the result back.
pub const SESSIONLESS_CLIENT: u64 = 0;

/// What [`KvStateMachine::apply`] returns per applied entry: `None` for a Raft no-op entry.
pub type Applied = Vec<(Index, Option<CommandResult>)>;

/// The replicated key-value map of one range. One owner; every method takes `&mut self`. The
/// ranges of one node share one database ([`KvStateMachine::open_range`]): user rows are keyed
/// by the user key alone, every other row by the range (`row_keys.rs`).
pub struct KvStateMachine {
    db: Rc<RefCell<Ldb>>,
    /// The database's directory, for messages (kept apart so that naming it never borrows it).
    path: PathBuf,
    /// The keys of this range's rows.
    keys: StateKeys,
    /// The keys this range owns, as of the applied index.
    range: RangeDescriptor,
    applied_index: Index,
    applied_term: Term,
    durable_applied_index: Index,
    sessions: BTreeMap<u64, Session>,
    /// The configuration in force at the applied index (that of the last configuration-change
    /// entry applied, or of the installed snapshot, or, neither yet, the seeded one) and the
    /// members' addresses.
    members: MemberTable,
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
    pending_install: Option<SnapshotMeta>,
    /// A snapshot image being written in steps between applies (see `snapshot/build.rs`).
    pub(crate) image_in_progress: Option<Box<crate::snapshot::ImageInProgress>>,
    /// Log time at the applied index: the largest clock stamp applied (`expiry.rs`).
    pub(crate) clock_ms: u64,
    pub(crate) counts: KeyCounts,
    /// What WATCH compares a key watched absent with (`watch.rs`), as of the applied index.
    removed: watch::RemovedVersions,
    /// The version and deadline of recently used keys, as the database holds them (`key_meta.rs`).
    key_meta: key_meta::KeyMetaCache,
    /// The ranges the last call to `apply` created by splitting this one (`split.rs`).
    created_ranges: Vec<RangeDescriptor>,
    /// The deliberate bug: apply commands whatever their keys' range (the simulator's teeth).
    #[cfg(feature = "deliberate-bugs")]
    ignores_ownership: bool,
    /// The deliberate bug: a split applied before the entries its batch holds ahead of it.
    #[cfg(feature = "deliberate-bugs")]
    splits_first: bool,
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
        let path = db.path().to_path_buf();
        let mut sm = Self::unloaded(
            Rc::new(RefCell::new(db)),
            path,
            RangeDescriptor::whole(FIRST_RANGE),
            data_dir,
            env,
            max_sessions,
        );
        sm.pending_install = pending_install;
        sm.load()?;
        Ok(sm)
    }

    /// The state machine of another range in the same database: its rows as stored, or, if it
    /// has none yet, a new range owning `descriptor`'s keys (its descriptor and layout rows are
    /// written at once, synced). A range that has rows keeps its stored descriptor, which may be
    /// newer than `descriptor`; it must have the same id. The first range is the one
    /// [`KvStateMachine::open_with`] opens, and it alone has snapshots of the whole directory
    /// (`crate::snapshot`), which refuse while another range shares the database.
    pub fn open_range(&self, descriptor: RangeDescriptor) -> Result<KvStateMachine> {
        if descriptor.id == FIRST_RANGE {
            return Err(Error::InvalidRequest(format!(
                "{}: the first range is opened with the data directory, not as another range",
                self.path.display()
            )));
        }
        let mut sm = Self::unloaded(
            self.db.clone(),
            self.path.clone(),
            descriptor,
            &self.data_dir,
            &self.env,
            self.max_sessions,
        );
        // An install interrupted after deleting the range's rows finishes before the range
        // could be taken for a new one.
        sm.finish_range_install(range_image::RANGE_INSTALL_BATCH_ROWS)?;
        sm.create_range_rows()?;
        sm.load()?;
        Ok(sm)
    }

    fn unloaded(
        db: Rc<RefCell<Ldb>>,
        path: PathBuf,
        range: RangeDescriptor,
        data_dir: &Path,
        env: &StorageEnv,
        max_sessions: usize,
    ) -> KvStateMachine {
        KvStateMachine {
            db,
            path,
            keys: StateKeys::of(range.id),
            range,
            applied_index: 0,
            applied_term: 0,
            durable_applied_index: 0,
            sessions: BTreeMap::new(),
            members: MemberTable::default(),
            lru: BTreeSet::new(),
            max_sessions: max_sessions.max(1),
            sync_writes: false,
            poisoned: None,
            data_dir: data_dir.to_path_buf(),
            env: env.clone(),
            pending_install: None,
            image_in_progress: None,
            clock_ms: 0,
            counts: KeyCounts::default(),
            removed: watch::RemovedVersions::default(),
            key_meta: key_meta::KeyMetaCache::new(),
            created_ranges: Vec::new(),
            #[cfg(feature = "deliberate-bugs")]
            ignores_ownership: false,
            #[cfg(feature = "deliberate-bugs")]
            splits_first: false,
        }
    }

    fn load(&mut self) -> Result<()> {
        self.finish_range_install(range_image::RANGE_INSTALL_BATCH_ROWS)?;
        self.load_descriptor()?;
        self.load_applied()?;
        self.load_members()?;
        self.load_sessions()?;
        self.load_keyspace()?;
        self.load_watch_rows()
    }

    /// The database this range's rows are in (shared with the node's other ranges).
    pub(crate) fn db(&self) -> RefMut<'_, Ldb> {
        self.db.borrow_mut()
    }

    /// Whether another range's state machine shares this one's database at the moment.
    pub(crate) fn shares_database(&self) -> bool {
        Rc::strong_count(&self.db) > 1
    }

    /// The range, its bounds and epoch as of the applied index.
    pub fn descriptor(&self) -> &RangeDescriptor {
        &self.range
    }

    pub fn range_id(&self) -> RangeId {
        self.range.id
    }

    fn load_applied(&mut self) -> Result<()> {
        let applied = self.db().get(&self.keys.applied())?;
        if let Some(v) = applied {
            let (i, t, membership) = decode_applied(&v)
                .map_err(|e| self.corrupt(None, format!("applied index: {e}")))?;
            self.applied_index = i;
            self.applied_term = t;
            self.members.membership = membership;
            self.durable_applied_index = i;
        }
        if let Some(m) = self.pending_install.as_mut() {
            // The install marker names the snapshot; its configuration is the installed state's.
            m.membership = self.members.membership.clone();
        }
        if let Some(m) = &self.pending_install {
            if (self.applied_index, self.applied_term) != (m.index, m.term) {
                return Err(self.corrupt(
                    Some(self.applied_index),
                    format!(
                        "a snapshot install of {}/{} is marked as committed, but the state \
                         machine is at {}/{}",
                        m.index, m.term, self.applied_index, self.applied_term
                    ),
                ));
            }
        }
        Ok(())
    }

    fn load_members(&mut self) -> Result<()> {
        let stored = self.db().get(&self.keys.members())?;
        if let Some(v) = stored {
            let addrs = decode_member_addrs(&v)
                .map_err(|e| self.corrupt(None, format!("member table: {e}")))?;
            self.members.addrs = addrs;
        }
        Ok(())
    }

    fn load_sessions(&mut self) -> Result<()> {
        let mut loaded = Vec::new();
        let mut bad = None;
        let prefix = self.keys.session_prefix();
        let keys = &self.keys;
        self.db.borrow_mut().scan_from(&prefix, |k, v| {
            if !k.starts_with(&prefix) {
                return Ok(false);
            }
            let Some(client) = keys.client_of_session(k) else {
                bad = Some(format!("malformed session key {k:02x?}"));
                return Ok(false);
            };
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
            return Err(self.corrupt(None, b));
        }
        for (client, s) in loaded {
            self.lru.insert((s.last_index, client));
            self.sessions.insert(client, s);
        }
        Ok(())
    }

    /// Sync every apply batch (slower; makes `durable_applied_index() == applied_index()`).
    pub fn set_sync_writes(&mut self, sync: bool) {
        self.sync_writes = sync;
    }

    fn corrupt(&self, index: Option<Index>, detail: String) -> Error {
        let detail = if self.keys.is_first() {
            detail
        } else {
            format!("range {}: {detail}", self.range.id)
        };
        Error::Corruption {
            path: self.path.clone(),
            index,
            detail,
        }
    }

    pub(crate) fn check_poison(&self) -> Result<()> {
        match &self.poisoned {
            Some(p) => Err(Error::Io {
                path: self.path.clone(),
                detail: format!("state machine unusable after an earlier failure, reopen it: {p}"),
            }),
            None => Ok(()),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.path.clone()
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

    pub(crate) fn ldb(&mut self) -> RefMut<'_, Ldb> {
        self.db()
    }

    /// A snapshot install that reached the state machine but is not yet known to have reached the
    /// Raft log (a crash between the two, or [`KvStateMachine::install`] just returned). Until
    /// the owner has called `RaftStorage::install_snapshot(meta)` and then
    /// [`KvStateMachine::finish_install`], `apply` is refused: the log may still hold entries
    /// that conflict with the installed state. `NodeStorage::open` does both.
    pub fn pending_install(&self) -> Option<SnapshotMeta> {
        self.pending_install.clone()
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
        self.applied_index
    }

    pub fn applied_term(&self) -> Term {
        self.applied_term
    }

    /// The configuration in force at the applied index (empty if none is known: a node that
    /// was never given its bootstrap configuration, or one waiting to be added).
    pub fn applied_membership(&self) -> &Membership {
        &self.members.membership
    }

    /// The configuration a cluster was bootstrapped with, which is in force until the first
    /// configuration-change entry: used only while the state machine has applied no
    /// configuration (no conf-change entry, no snapshot carrying one). Not stored by itself:
    /// the next apply records it with the applied index, and a restart seeds it again.
    pub fn seed_membership(&mut self, bootstrap: &Membership) {
        if self.members.membership.is_empty() {
            self.members.membership = bootstrap.clone();
        }
    }

    /// Applied index known to be on stable storage: the log must keep every entry above it.
    pub fn durable_applied_index(&self) -> Index {
        self.durable_applied_index
    }

    /// The configuration and member addresses as of the applied index (empty until seeded or
    /// a conf-change entry or snapshot brings one).
    pub fn members(&self) -> &MemberTable {
        &self.members
    }

    /// Seeds the member table of a state machine that has applied nothing yet, durably (the
    /// configuration in the applied record at index 0, the addresses in their row): the
    /// founding members of a new cluster (whose initial configuration is no log entry), or what
    /// a joining node was told by the cluster before it has the log. Refused once anything has
    /// been applied: from then on only entries and snapshots change the table.
    pub fn seed_members(&mut self, table: MemberTable) -> Result<()> {
        self.check_poison()?;
        if self.applied_index != 0 {
            return Err(Error::InvalidRequest(format!(
                "{}: cannot seed the member table at applied index {}",
                self.path.display(),
                self.applied_index
            )));
        }
        let mut batch = WriteBatch::default();
        batch.put(
            &self.keys.applied(),
            &encode_applied(0, 0, &table.membership),
        );
        batch.put(&self.keys.members(), &encode_member_addrs(&table.addrs));
        self.db().write(batch, true)?;
        self.members = table;
        Ok(())
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The clients that have a session, in id order.
    pub fn session_clients(&self) -> Vec<u64> {
        self.sessions.keys().copied().collect()
    }

    pub fn sync_stats(&self) -> Option<Arc<SyncStats>> {
        self.db().sync_stats()
    }

    /// Makes everything applied so far durable.
    pub fn sync(&mut self) -> Result<Index> {
        self.check_poison()?;
        self.db().flush()?;
        self.durable_applied_index = self.applied_index;
        Ok(self.applied_index)
    }

    /// Applies committed entries in log order. Entries at or below the applied index are skipped
    /// (a replay after restart); the rest must continue it without a gap. Returns the result of
    /// each applied entry. All of it is one `WriteBatch`.
    pub fn apply(&mut self, entries: &[Entry]) -> Result<Applied> {
        self.created_ranges.clear();
        self.check_poison()?;
        if let Some(m) = &self.pending_install {
            return Err(Error::InvalidRequest(format!(
                "{}: the install of snapshot {}/{} is unfinished: install it in the Raft log \
                 and call finish_install before applying entries",
                self.path.display(),
                m.index,
                m.term
            )));
        }
        let fresh: Vec<&Entry> = entries
            .iter()
            .filter(|e| e.index > self.applied_index)
            .collect();
        for (k, e) in fresh.iter().enumerate() {
            let want = self.applied_index + 1 + k as u64;
            if e.index != want {
                return Err(Error::InvalidRequest(format!(
                    "cannot apply entry {} to {}: expected index {want} (applied index {})",
                    e.index,
                    self.path.display(),
                    self.applied_index
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
                self.created_ranges.clear();
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
        let mut t = Txn::new(self);
        // Decoded once: the keys are read ahead for the whole batch, then each command runs.
        let commands: Vec<
            Option<std::result::Result<crate::command::Command, crate::DecodeError>>,
        > = fresh
            .iter()
            .map(|e| {
                (e.kind == EntryKind::Normal).then(|| crate::command::Command::decode(&e.payload))
            })
            .collect();
        // An entry that flushes writes batches of its own while it is applied: the entries
        // before it are written first, in a batch of their own (see `flush_all`).
        let flushing = commands
            .iter()
            .skip(1)
            .position(|c| matches!(c, Some(Ok(c)) if Self::flushes(&c.op)));
        if let Some(at) = flushing.map(|p| p + 1) {
            let (before, from) = fresh.split_at(at);
            let mut applied =
                self.apply_fresh(before, before[at - 1].index, before[at - 1].term)?;
            applied.extend(self.apply_fresh(from, last_index, last_term)?);
            return Ok(applied);
        }
        let (mut keys, mut values) = (Vec::new(), Vec::new());
        for c in commands.iter().flatten().flatten() {
            c.op.visit_strings(&mut keys, &mut values);
        }
        self.prefetch(&mut t, keys.into_iter())?;
        let mut dirty: BTreeSet<u64> = BTreeSet::new();
        let mut results = Vec::with_capacity(fresh.len());
        for k in self.apply_order(&commands) {
            let (e, decoded) = (fresh[k], &commands[k]);
            let r = match e.kind {
                EntryKind::Normal => match decoded {
                    Some(decoded) => Some(self.apply_entry(e, decoded, &mut t, &mut dirty)?),
                    None => None,
                },
                EntryKind::Clock => {
                    // Every replica holds the same bytes: an unreadable stamp is skipped alike.
                    if let Some(ms) = raft_core::clock::decode_clock(&e.payload) {
                        t.index = e.index;
                        self.advance_clock(&mut t, ms)?;
                    }
                    None
                }
                EntryKind::ConfChange => {
                    let change = ConfChangeEntry::decode(&e.payload).map_err(|err| {
                        self.corrupt(Some(e.index), format!("configuration change: {err}"))
                    })?;
                    let table = t.members.get_or_insert_with(|| self.members.clone());
                    // An undecodable context still applies the configuration; the addresses
                    // stay as they were (every replica decides alike).
                    let _ = table.apply_conf_change(change.membership, &change.context);
                    None
                }
                // No-ops, and kinds that carry no command for the state machine.
                _ => None,
            };
            results.push((e.index, r));
        }
        #[cfg(feature = "deliberate-bugs")]
        results.sort_by_key(|(index, _)| *index);
        t.finish(self);
        let members = t.members.take();
        let mut batch = WriteBatch::default();
        for (k, v) in &t.rows {
            match v {
                Some(v) => batch.put(k, v),
                None => batch.delete(k),
            }
        }
        for c in &dirty {
            match self.sessions.get(c) {
                Some(s) => batch.put(&self.keys.session(*c), &encode_session(s)),
                None => batch.delete(&self.keys.session(*c)),
            }
        }
        let recorded = members.as_ref().unwrap_or(&self.members);
        batch.put(
            &self.keys.applied(),
            &encode_applied(last_index, last_term, &recorded.membership),
        );
        if let Some(t) = &members {
            batch.put(&self.keys.members(), &encode_member_addrs(&t.addrs));
        }
        if self.image_in_progress.is_some() {
            let written = t
                .rows
                .keys()
                .cloned()
                .chain(dirty.iter().map(|c| self.keys.session(*c)))
                .chain(std::iter::once(self.keys.applied()))
                .chain(members.as_ref().map(|_| self.keys.members()))
                .collect::<Vec<_>>();
            self.keep_images_before_overwriting(written.into_iter())?;
        }
        self.db().write(batch, self.sync_writes)?;
        self.applied_index = last_index;
        self.applied_term = last_term;
        self.clock_ms = t.clock;
        self.counts = t.counts;
        self.removed.note_written(&self.keys, &t.rows);
        self.key_meta
            .write_through(t.rows.range(vec![USER]..vec![USER + 1]));
        if let Some(t) = members {
            self.members = t;
        }
        if self.sync_writes {
            self.durable_applied_index = last_index;
        }
        Ok(results)
    }

    /// The value of a user key at the applied index and log time (a key past its deadline is
    /// absent); a read error is an error, never "absent".
    /// A key this range does not own is refused ([`Error::InvalidRequest`]): its row may be
    /// another range's.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>> {
        self.check_poison()?;
        self.range
            .check_owns([key])
            .map_err(|refused| Error::InvalidRequest(refused.to_string()))?;
        let t = Txn::new(self);
        Ok(self.live(&t, key)?.map(|r| r.value))
    }

    /// Log time at the applied index, in milliseconds.
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// How many keys there are (expired ones not yet swept included, as Redis counts them),
    /// and how many have a deadline.
    pub fn key_counts(&self) -> KeyCounts {
        self.counts
    }

    /// Up to `limit` user keys of this range starting with `prefix`, in key order.
    pub fn scan_prefix(&mut self, prefix: &[u8], limit: usize) -> Result<Vec<(Bytes, Bytes)>> {
        let wanted = user_row(prefix);
        let (from, end) = self.owned_user_rows(wanted.clone());
        self.scan(&from, limit, |k| {
            k.starts_with(&wanted) && k < end.as_slice()
        })
    }

    /// Up to `limit` user keys of this range in `[start, end)` (`end = None`: to the last key),
    /// in key order.
    pub fn scan_range(
        &mut self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>> {
        let wanted_end = end.map(user_row);
        let (from, owned_end) = self.owned_user_rows(user_row(start));
        self.scan(&from, limit, |k| {
            k.first() == Some(&USER)
                && wanted_end.as_deref().is_none_or(|e| k < e)
                && k < owned_end.as_slice()
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
        let path = self.path.clone();
        self.db().scan_from(start, |k, v| {
            if !keep(k) {
                return Ok(false);
            }
            let record = Record::decode(&v).map_err(|e| Error::Corruption {
                path: path.clone(),
                index: None,
                detail: format!("the value of a key: {e}"),
            })?;
            out.push((Bytes::copy_from_slice(&k[1..]), record.value));
            Ok(out.len() < limit)
        })?;
        Ok(out)
    }

    /// Compacts the whole database, dropping deleted and overwritten data.
    pub fn compact(&mut self) -> Result<()> {
        self.check_poison()?;
        self.db().compact_all()
    }

    #[cfg(test)]
    pub(crate) fn raw_get(&mut self, key: &[u8]) -> Result<Option<Bytes>> {
        self.db().get(key)
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod tests_key_meta;

#[cfg(test)]
mod tests_redis;

#[cfg(test)]
mod tests_watch;

#[cfg(test)]
mod tests_layout;

#[cfg(test)]
mod tests_ranges;

#[cfg(test)]
mod tests_range_image;

#[cfg(test)]
mod tests_split;
