//! LevelDB environments that make "synced" mean durable.
//!
//! rusty-leveldb 4.0.2 never calls fsync: `write(batch, sync = true)` ends in a `flush()` of the
//! log writer, which only reaches the kernel's page cache, and a power cut can then lose an
//! acknowledged write. [`SyncDiskEnv`] wraps the disk and turns every `flush()` of a writable file
//! into `sync_data()`. The places LevelDB flushes are exactly the ones whose durability it relies
//! on: the write-ahead log on a synced write, a finished table, and a manifest record. Files
//! are also synced when closed (the `CURRENT` pointer is written without a flush and then renamed
//! into place), and the directory is fsynced after a file is created or renamed so that the new
//! name itself survives.
//!
//! [`PowerCutEnv`] is the same contract in memory: bytes become durable only when synced, and
//! [`PowerCutEnv::cut_power`] drops everything else and refuses further writes, as a machine that
//! lost power would. Tests use it to show that acknowledged state survives and only unacknowledged
//! state is lost; the simulator uses it for crashes with loss of unsynced writes.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rusty_leveldb::env::{Env, FileLock, Logger, RandomAccess};
use rusty_leveldb::{PosixDiskEnv, Status, StatusCode};

type LResult<T> = rusty_leveldb::Result<T>;

fn io_status(op: &str, p: &Path, e: io::Error) -> Status {
    let mut s = Status::from(e);
    s.err = format!("{op} {}: {}", p.display(), s.err);
    s
}

/// Counters and the sticky failure of a [`SyncDiskEnv`], shared with whoever created it.
#[derive(Debug, Default)]
pub struct SyncStats {
    file_syncs: AtomicU64,
    dir_syncs: AtomicU64,
    /// A sync that failed where no error could be returned (in a destructor). After a failed
    /// fsync the page cache may have dropped the data, so the database must not be trusted again
    /// (the "fsyncgate" lesson); the owner checks this after every operation.
    failure: Mutex<Option<String>>,
}

impl SyncStats {
    /// `sync_data` calls on files.
    pub fn file_syncs(&self) -> u64 {
        self.file_syncs.load(Ordering::Relaxed)
    }

    /// fsync calls on directories.
    pub fn dir_syncs(&self) -> u64 {
        self.dir_syncs.load(Ordering::Relaxed)
    }

    /// The first sync failure that could not be reported to a caller, if any.
    pub fn failure(&self) -> Option<String> {
        lock_ignoring_poison(&self.failure).clone()
    }

    fn record_failure(&self, msg: String) {
        let mut f = lock_ignoring_poison(&self.failure);
        if f.is_none() {
            *f = Some(msg);
        }
    }
}

fn lock_ignoring_poison<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data behind these mutexes stays consistent across a panic (plain counters and buffers),
    // so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The disk environment with real durability. See the module docs.
pub struct SyncDiskEnv {
    inner: PosixDiskEnv,
    stats: Arc<SyncStats>,
    /// Obsolete files leave at once and are unlinked by a background thread
    /// ([`crate::deferred_delete`]).
    delete_in_background: bool,
}

impl Default for SyncDiskEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl SyncDiskEnv {
    pub fn new() -> Self {
        Self {
            inner: PosixDiskEnv::new(),
            stats: Arc::new(SyncStats::default()),
            delete_in_background: false,
        }
    }

    /// For a LevelDB database, whose obsolete files (an old write-ahead log, compacted tables)
    /// are deleted in the middle of a write: they are renamed away at once and unlinked in the
    /// background. Whoever opens the database calls [`crate::deferred_delete::remove_leftovers`]
    /// first.
    pub(crate) fn deleting_in_background(mut self) -> Self {
        self.delete_in_background = true;
        self
    }

    pub fn stats(&self) -> Arc<SyncStats> {
        self.stats.clone()
    }

    fn sync_dir_of(&self, p: &Path) -> LResult<()> {
        let dir = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        sync_dir(dir).map_err(|e| io_status("fsync directory", dir, e))?;
        self.stats.dir_syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn open_for_write(&self, p: &Path, append: bool) -> LResult<Box<dyn Write>> {
        let existed = p.exists();
        let mut o = OpenOptions::new();
        o.create(true);
        if append {
            o.append(true);
        } else {
            o.write(true).truncate(true);
        }
        let file = o.open(p).map_err(|e| io_status("open for writing", p, e))?;
        if !existed {
            self.sync_dir_of(p)?;
        }
        Ok(Box::new(SyncFile {
            file,
            path: p.to_path_buf(),
            dirty: !append,
            stats: self.stats.clone(),
        }))
    }
}

/// Fsyncs a directory, making the names in it (created, renamed) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

struct SyncFile {
    file: File,
    path: PathBuf,
    /// Whether bytes were written since the last sync; spares an fsync on close after a flush.
    dirty: bool,
    stats: Arc<SyncStats>,
}

impl Write for SyncFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.dirty = true;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.dirty {
            self.file.sync_data()?;
            self.dirty = false;
            self.stats.file_syncs.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

impl Drop for SyncFile {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            self.stats
                .record_failure(format!("sync on close of {}: {e}", self.path.display()));
        }
    }
}

impl Env for SyncDiskEnv {
    fn open_sequential_file(&self, p: &Path) -> LResult<Box<dyn Read>> {
        self.inner.open_sequential_file(p)
    }
    fn open_random_access_file(&self, p: &Path) -> LResult<Box<dyn RandomAccess>> {
        self.inner.open_random_access_file(p)
    }
    fn open_writable_file(&self, p: &Path) -> LResult<Box<dyn Write>> {
        self.open_for_write(p, false)
    }
    fn open_appendable_file(&self, p: &Path) -> LResult<Box<dyn Write>> {
        self.open_for_write(p, true)
    }
    fn exists(&self, p: &Path) -> LResult<bool> {
        self.inner.exists(p)
    }
    fn children(&self, p: &Path) -> LResult<Vec<PathBuf>> {
        self.inner.children(p)
    }
    fn size_of(&self, p: &Path) -> LResult<usize> {
        self.inner.size_of(p)
    }
    fn delete(&self, p: &Path) -> LResult<()> {
        // No directory sync: a deletion that is lost leaves an obsolete file, which LevelDB
        // removes again on the next open.
        if self.delete_in_background {
            return crate::deferred_delete::delete(p).map_err(|e| io_status("delete", p, e));
        }
        self.inner.delete(p)
    }
    fn mkdir(&self, p: &Path) -> LResult<()> {
        let existed = p.exists();
        self.inner.mkdir(p)?;
        if !existed {
            self.sync_dir_of(p)?;
        }
        Ok(())
    }
    fn rmdir(&self, p: &Path) -> LResult<()> {
        self.inner.rmdir(p)
    }
    fn rename(&self, old: &Path, new: &Path) -> LResult<()> {
        self.inner.rename(old, new)?;
        self.sync_dir_of(new)
    }
    fn lock(&self, p: &Path) -> LResult<FileLock> {
        self.inner.lock(p)
    }
    fn unlock(&self, l: FileLock) -> LResult<()> {
        self.inner.unlock(l)
    }
    fn new_logger(&self, p: &Path) -> LResult<Logger> {
        self.inner.new_logger(p)
    }
    fn micros(&self) -> u64 {
        self.inner.micros()
    }
    fn sleep_for(&self, micros: u32) {
        self.inner.sleep_for(micros)
    }
}

// ---------------------------------------------------------------------------------------------
// Power-cut environment
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct MemFile {
    data: Vec<u8>,
    /// Length of the prefix of `data` that survives a power cut.
    synced: usize,
}

type SharedFile = Arc<Mutex<MemFile>>;

#[derive(Default)]
struct PowerState {
    files: BTreeMap<PathBuf, SharedFile>,
    dirs: BTreeSet<PathBuf>,
    locks: BTreeSet<PathBuf>,
    powered_off: bool,
    syncs: u64,
}

/// An in-memory environment that loses unsynced bytes on [`PowerCutEnv::cut_power`].
///
/// File contents are durable up to the last sync (a `flush()`, or closing the file, as on
/// [`SyncDiskEnv`]). Names (create, rename, delete) are durable at once, which matches
/// `SyncDiskEnv`, since it fsyncs the directory right after each of them. Clones share one
/// machine, so a test keeps a clone to cut the power and to "reboot" after the database handle
/// is dropped.
#[derive(Clone, Default)]
pub struct PowerCutEnv {
    state: Arc<Mutex<PowerState>>,
}

impl PowerCutEnv {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, PowerState> {
        lock_ignoring_poison(&self.state)
    }

    /// Drops every unsynced byte and refuses all writes until [`PowerCutEnv::power_on`].
    pub fn cut_power(&self) {
        let mut st = self.state();
        st.powered_off = true;
        for f in st.files.values() {
            let mut f = lock_ignoring_poison(f);
            let keep = f.synced;
            f.data.truncate(keep);
        }
    }

    /// Boots the machine again: writes are accepted and the old process's locks are gone.
    pub fn power_on(&self) {
        let mut st = self.state();
        st.powered_off = false;
        st.locks.clear();
    }

    /// Replaces the disk with a blank one, as an operator does after a drive dies: every file and
    /// directory is gone, synced or not. Meant for a machine whose power is off (its process
    /// dead); it stays off until [`PowerCutEnv::power_on`].
    pub fn wipe(&self) {
        let mut st = self.state();
        st.powered_off = true;
        st.files.clear();
        st.dirs.clear();
        st.locks.clear();
    }

    /// Number of file syncs so far.
    pub fn syncs(&self) -> u64 {
        self.state().syncs
    }

    /// Paths of all files, in order (for tests that damage a file on purpose).
    pub fn files(&self) -> Vec<PathBuf> {
        self.state().files.keys().cloned().collect()
    }

    /// Current size of a file (synced or not).
    pub fn file_len(&self, p: &Path) -> Option<usize> {
        let st = self.state();
        st.files.get(p).map(|f| lock_ignoring_poison(f).data.len())
    }

    fn check_power(&self, op: &str, p: &Path) -> LResult<()> {
        if self.state().powered_off {
            return Err(Status::new(
                StatusCode::IOError,
                &format!("{op} {}: the power is off", p.display()),
            ));
        }
        Ok(())
    }

    fn get(&self, p: &Path) -> LResult<SharedFile> {
        self.state().files.get(p).cloned().ok_or_else(|| {
            Status::new(
                StatusCode::NotFound,
                &format!("no such file: {}", p.display()),
            )
        })
    }

    fn open_write(&self, p: &Path, truncate: bool) -> LResult<Box<dyn Write>> {
        self.check_power("open", p)?;
        let f = {
            let mut st = self.state();
            st.files.entry(p.to_path_buf()).or_default().clone()
        };
        if truncate {
            let mut g = lock_ignoring_poison(&f);
            g.data.clear();
            g.synced = 0;
        }
        Ok(Box::new(PowerCutFile {
            env: self.clone(),
            file: f,
            path: p.to_path_buf(),
        }))
    }
}

struct PowerCutFile {
    env: PowerCutEnv,
    file: SharedFile,
    path: PathBuf,
}

impl PowerCutFile {
    fn sync(&self) -> io::Result<()> {
        let mut st = self.env.state();
        if st.powered_off {
            return Err(io::Error::other(format!(
                "sync {}: the power is off",
                self.path.display()
            )));
        }
        let mut f = lock_ignoring_poison(&self.file);
        if f.synced != f.data.len() {
            f.synced = f.data.len();
            st.syncs += 1;
        }
        Ok(())
    }
}

impl Write for PowerCutFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.env.state().powered_off {
            return Err(io::Error::other(format!(
                "write {}: the power is off",
                self.path.display()
            )));
        }
        lock_ignoring_poison(&self.file).data.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sync()
    }
}

impl Drop for PowerCutFile {
    fn drop(&mut self) {
        // Mirrors SyncDiskEnv's sync on close; refused (and so lost) after a power cut.
        let _ = self.sync();
    }
}

struct PowerCutReader {
    file: SharedFile,
    pos: usize,
}

impl Read for PowerCutReader {
    fn read(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        let f = lock_ignoring_poison(&self.file);
        let n = read_at(&f.data, self.pos, dst);
        self.pos += n;
        Ok(n)
    }
}

fn read_at(data: &[u8], off: usize, dst: &mut [u8]) -> usize {
    if off >= data.len() {
        return 0;
    }
    let n = dst.len().min(data.len() - off);
    dst[..n].copy_from_slice(&data[off..off + n]);
    n
}

struct PowerCutRandom(SharedFile);

impl RandomAccess for PowerCutRandom {
    fn read_at(&self, off: usize, dst: &mut [u8]) -> LResult<usize> {
        let f = lock_ignoring_poison(&self.0);
        Ok(read_at(&f.data, off, dst))
    }
}

impl Env for PowerCutEnv {
    fn open_sequential_file(&self, p: &Path) -> LResult<Box<dyn Read>> {
        Ok(Box::new(PowerCutReader {
            file: self.get(p)?,
            pos: 0,
        }))
    }
    fn open_random_access_file(&self, p: &Path) -> LResult<Box<dyn RandomAccess>> {
        Ok(Box::new(PowerCutRandom(self.get(p)?)))
    }
    fn open_writable_file(&self, p: &Path) -> LResult<Box<dyn Write>> {
        self.open_write(p, true)
    }
    fn open_appendable_file(&self, p: &Path) -> LResult<Box<dyn Write>> {
        self.open_write(p, false)
    }
    fn exists(&self, p: &Path) -> LResult<bool> {
        let st = self.state();
        Ok(st.files.contains_key(p) || st.dirs.contains(p))
    }
    fn children(&self, p: &Path) -> LResult<Vec<PathBuf>> {
        let st = self.state();
        Ok(st
            .files
            .keys()
            .filter(|f| f.parent() == Some(p))
            .filter_map(|f| f.file_name().map(PathBuf::from))
            .collect())
    }
    fn size_of(&self, p: &Path) -> LResult<usize> {
        let f = self.get(p)?;
        let len = lock_ignoring_poison(&f).data.len();
        Ok(len)
    }
    fn delete(&self, p: &Path) -> LResult<()> {
        self.check_power("delete", p)?;
        match self.state().files.remove(p) {
            Some(_) => Ok(()),
            None => Err(Status::new(
                StatusCode::NotFound,
                &format!("delete {}: no such file", p.display()),
            )),
        }
    }
    fn mkdir(&self, p: &Path) -> LResult<()> {
        self.check_power("mkdir", p)?;
        self.state().dirs.insert(p.to_path_buf());
        Ok(())
    }
    fn rmdir(&self, p: &Path) -> LResult<()> {
        self.check_power("rmdir", p)?;
        let mut st = self.state();
        st.dirs.remove(p);
        st.files.retain(|f, _| !f.starts_with(p));
        Ok(())
    }
    fn rename(&self, old: &Path, new: &Path) -> LResult<()> {
        self.check_power("rename", old)?;
        let mut st = self.state();
        if st.dirs.contains(old) {
            // A directory: every name under it moves (one atomic step, as rename(2) is).
            if st.dirs.contains(new) || st.files.keys().any(|f| f.starts_with(new)) {
                return Err(Status::new(
                    StatusCode::IOError,
                    &format!("rename {}: {} exists", old.display(), new.display()),
                ));
            }
            let moved = |p: &Path| new.join(p.strip_prefix(old).unwrap_or(p));
            let dirs: Vec<PathBuf> = st
                .dirs
                .iter()
                .filter(|d| d.starts_with(old))
                .cloned()
                .collect();
            for d in dirs {
                st.dirs.remove(&d);
                st.dirs.insert(moved(&d));
            }
            let files: Vec<PathBuf> = st
                .files
                .keys()
                .filter(|f| f.starts_with(old))
                .cloned()
                .collect();
            for f in files {
                if let Some(h) = st.files.remove(&f) {
                    st.files.insert(moved(&f), h);
                }
            }
            return Ok(());
        }
        match st.files.remove(old) {
            Some(f) => {
                st.files.insert(new.to_path_buf(), f);
                Ok(())
            }
            None => Err(Status::new(
                StatusCode::NotFound,
                &format!("rename {}: no such file", old.display()),
            )),
        }
    }
    fn lock(&self, p: &Path) -> LResult<FileLock> {
        let mut st = self.state();
        if !st.locks.insert(p.to_path_buf()) {
            return Err(Status::new(
                StatusCode::LockError,
                &format!("{} is locked", p.display()),
            ));
        }
        Ok(FileLock {
            id: p.to_string_lossy().into_owned(),
        })
    }
    fn unlock(&self, l: FileLock) -> LResult<()> {
        self.state().locks.remove(Path::new(&l.id));
        Ok(())
    }
    fn new_logger(&self, _: &Path) -> LResult<Logger> {
        Ok(Logger::new(Box::new(io::sink())))
    }
    fn micros(&self) -> u64 {
        // Only used by LevelDB for statistics; a constant keeps simulated runs deterministic.
        0
    }
    fn sleep_for(&self, _: u32) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(env: &dyn Env, p: &Path) -> Vec<u8> {
        let mut r = env.open_sequential_file(p).unwrap();
        let mut v = Vec::new();
        r.read_to_end(&mut v).unwrap();
        v
    }

    #[test]
    fn power_cut_keeps_synced_bytes_only() {
        let env = PowerCutEnv::new();
        let p = Path::new("/d/f");
        let mut w = env.open_writable_file(p).unwrap();
        w.write_all(b"synced").unwrap();
        w.flush().unwrap();
        w.write_all(b"+lost").unwrap();
        let mut other = env.open_writable_file(Path::new("/d/g")).unwrap();
        other.write_all(b"never synced").unwrap();
        assert_eq!(read_all(&env, p), b"synced+lost");
        env.cut_power();
        assert!(
            w.write_all(b"x").is_err(),
            "writes after the cut are refused"
        );
        assert!(w.flush().is_err());
        drop(w);
        drop(other); // the close-time sync is refused too
        assert_eq!(read_all(&env, p), b"synced");
        assert_eq!(read_all(&env, Path::new("/d/g")), b"");
        assert!(env.open_writable_file(Path::new("/d/h")).is_err());
        env.power_on();
        let mut w = env.open_appendable_file(p).unwrap();
        w.write_all(b"!").unwrap();
        drop(w); // closing syncs
        env.cut_power();
        env.power_on();
        assert_eq!(read_all(&env, p), b"synced!");
    }

    #[test]
    fn a_wiped_disk_is_blank_and_stays_off_until_powered_on() {
        let env = PowerCutEnv::new();
        env.mkdir(Path::new("/d")).unwrap();
        let mut w = env.open_writable_file(Path::new("/d/f")).unwrap();
        w.write_all(b"synced").unwrap();
        w.flush().unwrap();
        env.wipe();
        assert!(w.write_all(b"x").is_err(), "the old process writes nothing");
        drop(w);
        assert!(env.files().is_empty());
        assert!(!env.exists(Path::new("/d")).unwrap());
        env.power_on();
        assert!(
            env.files().is_empty(),
            "a handle closed after the wipe left nothing"
        );
        env.open_writable_file(Path::new("/d/g")).unwrap();
    }

    #[test]
    fn disk_env_syncs_on_flush_close_and_new_names() {
        let dir = tempfile::tempdir().unwrap();
        let env = SyncDiskEnv::new();
        let st = env.stats();
        let p = dir.path().join("f");
        let mut w = env.open_writable_file(&p).unwrap();
        assert_eq!(st.dir_syncs(), 1, "a new file's name is synced");
        w.write_all(b"abc").unwrap();
        assert_eq!(st.file_syncs(), 0);
        w.flush().unwrap();
        assert_eq!(st.file_syncs(), 1);
        w.flush().unwrap();
        assert_eq!(st.file_syncs(), 1, "nothing new, no second sync");
        w.write_all(b"def").unwrap();
        drop(w);
        assert_eq!(st.file_syncs(), 2, "closing syncs unsynced bytes");
        env.rename(&p, &dir.path().join("g")).unwrap();
        assert_eq!(st.dir_syncs(), 2, "a rename is synced");
        assert_eq!(std::fs::read(dir.path().join("g")).unwrap(), b"abcdef");
        assert_eq!(st.failure(), None);
    }
}
