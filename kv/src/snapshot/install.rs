//! Installing a staged snapshot, crash-safe: the marker is the commit point, every later step
//! is checked by what exists so that [`recover`] can repeat it after a crash.

use std::io::{Read, Write};
use std::path::Path;

use bytes::Bytes;
use raft_core::SnapshotMeta;
use rusty_leveldb::env::Env;

use super::receive::StagedSnapshot;
use super::{
    io_err, IMAGE_FILE, IMAGE_TMP, INCOMING_DIR, INCOMING_IMAGE, INSTALL_MARKER, MARKER_TMP,
    OLD_DIR, SNAPSHOT_VERSION,
};
use crate::codec::{self, Reader};
use crate::error::{DecodeError, Error, Result};
use crate::ldb::StorageEnv;
use crate::state_machine::{KvStateMachine, KV_DATA_DIR};

/// The steps of an install, for tests that cut the power after each one.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstallStep {
    OldClosed,
    MarkerWritten,
    OldMovedAside,
    NewMovedIn,
    ImageMovedIn,
    Reopened,
    LogInstalled,
    MarkerRemoved,
    OldRemoved,
}

impl KvStateMachine {
    /// Makes `staged` the state machine (see the module docs): returns it reopened, with
    /// [`KvStateMachine::pending_install`] set until the log part is recorded with
    /// [`KvStateMachine::finish_install`]. On error, reopen: the open finishes or drops the
    /// install, depending on whether the commit point was reached.
    pub fn install(self, staged: StagedSnapshot) -> Result<KvStateMachine> {
        self.install_with_hook(staged, &mut |_| {})
    }

    #[doc(hidden)]
    pub fn install_with_hook(
        self,
        staged: StagedSnapshot,
        hook: &mut dyn FnMut(InstallStep),
    ) -> Result<KvStateMachine> {
        self.check_whole_directory("install a snapshot")?;
        if staged.data_dir != self.data_dir() {
            return Err(Error::InvalidRequest(format!(
                "snapshot staged in {} cannot be installed in {}",
                staged.data_dir.display(),
                self.data_dir().display()
            )));
        }
        let dir = staged.data_dir.clone();
        let env = staged.env.clone();
        let files = env.files();
        if !exists(files.as_ref(), &dir.join(INCOMING_DIR))? {
            return Err(Error::InvalidRequest(format!(
                "the staged snapshot {}/{} is gone from {} (the storage was reopened since it \
                 was received, which drops unfinished receives): receive it again",
                staged.meta.index,
                staged.meta.term,
                dir.display()
            )));
        }
        let max_sessions = self.max_sessions();
        drop(self);
        hook(InstallStep::OldClosed);
        write_marker(files.as_ref(), &dir, &staged.meta)?;
        hook(InstallStep::MarkerWritten);
        swap_in(files.as_ref(), &dir, hook)?;
        let sm = KvStateMachine::open_with(&dir, &env, max_sessions)?;
        hook(InstallStep::Reopened);
        if sm.applied_index() != staged.meta.index || sm.applied_term() != staged.meta.term {
            return Err(Error::Corruption {
                path: sm.path(),
                index: Some(sm.applied_index()),
                detail: format!(
                    "installed snapshot {}/{} opens at {}/{}",
                    staged.meta.index,
                    staged.meta.term,
                    sm.applied_index(),
                    sm.applied_term()
                ),
            });
        }
        Ok(sm)
    }
}

pub(super) fn exists(files: &dyn Env, p: &Path) -> Result<bool> {
    files.exists(p).map_err(|e| io_err(p, e))
}

pub(super) fn remove_dir(files: &dyn Env, p: &Path) -> Result<()> {
    if exists(files, p)? {
        files.rmdir(p).map_err(|e| io_err(p, e))?;
    }
    Ok(())
}

pub(super) fn remove_file(files: &dyn Env, p: &Path) -> Result<()> {
    if exists(files, p)? {
        files.delete(p).map_err(|e| io_err(p, e))?;
    }
    Ok(())
}

fn write_marker(files: &dyn Env, dir: &Path, meta: &SnapshotMeta) -> Result<()> {
    let tmp = dir.join(MARKER_TMP);
    let mut b = vec![SNAPSHOT_VERSION];
    codec::put_u64(&mut b, meta.index);
    codec::put_u64(&mut b, meta.term);
    codec::seal(&mut b);
    let mut w = files
        .open_writable_file(&tmp)
        .map_err(|e| io_err(&tmp, e))?;
    w.write_all(&b).map_err(|e| io_err(&tmp, e))?;
    w.flush().map_err(|e| io_err(&tmp, e))?;
    drop(w);
    let marker = dir.join(INSTALL_MARKER);
    files.rename(&tmp, &marker).map_err(|e| io_err(&marker, e))
}

fn read_marker(files: &dyn Env, dir: &Path) -> Result<Option<SnapshotMeta>> {
    let path = dir.join(INSTALL_MARKER);
    if !exists(files, &path)? {
        return Ok(None);
    }
    let mut r = files
        .open_sequential_file(&path)
        .map_err(|e| io_err(&path, e))?;
    let mut b = Vec::new();
    // The marker is 21 bytes; read at most a little more, whatever is on disk.
    (&mut r)
        .take(64)
        .read_to_end(&mut b)
        .map_err(|e| io_err(&path, e))?;
    let decoded = codec::unseal(&b).and_then(|body| {
        let mut r = Reader::new(Bytes::copy_from_slice(body));
        let v = r.u8()?;
        if v != SNAPSHOT_VERSION {
            return Err(DecodeError::UnknownVersion(v));
        }
        let (index, term) = (r.u64()?, r.u64()?);
        r.finish()?;
        // The configuration is the installed state machine's (its applied record).
        Ok(SnapshotMeta::new(index, term, Default::default()))
    });
    decoded.map(Some).map_err(|e| Error::Corruption {
        path,
        index: None,
        detail: format!("snapshot install marker: {e}"),
    })
}

/// Step 2 of an install; every part is checked by what exists, so a restart can repeat it.
fn swap_in(files: &dyn Env, dir: &Path, hook: &mut dyn FnMut(InstallStep)) -> Result<()> {
    let cur = dir.join(KV_DATA_DIR);
    let inc = dir.join(INCOMING_DIR);
    let old = dir.join(OLD_DIR);
    if exists(files, &inc)? {
        if exists(files, &cur)? {
            remove_dir(files, &old)?;
            files.rename(&cur, &old).map_err(|e| io_err(&old, e))?;
            hook(InstallStep::OldMovedAside);
        }
        files.rename(&inc, &cur).map_err(|e| io_err(&cur, e))?;
        hook(InstallStep::NewMovedIn);
    } else if !exists(files, &cur)? {
        return Err(Error::Corruption {
            path: cur,
            index: None,
            detail: format!(
                "a snapshot install is marked as committed, but neither {INCOMING_DIR} nor \
                 {KV_DATA_DIR} exists"
            ),
        });
    }
    let inc_image = dir.join(INCOMING_IMAGE);
    if exists(files, &inc_image)? {
        let image = dir.join(IMAGE_FILE);
        files
            .rename(&inc_image, &image)
            .map_err(|e| io_err(&image, e))?;
        hook(InstallStep::ImageMovedIn);
    }
    Ok(())
}

/// The last step of an install: the marker goes (the install is complete), then the old state.
pub(crate) fn finish(
    dir: &Path,
    env: &StorageEnv,
    hook: &mut dyn FnMut(InstallStep),
) -> Result<()> {
    let files = env.files();
    remove_file(files.as_ref(), &dir.join(INSTALL_MARKER))?;
    hook(InstallStep::MarkerRemoved);
    remove_dir(files.as_ref(), &dir.join(OLD_DIR))?;
    hook(InstallStep::OldRemoved);
    Ok(())
}

/// Called before `kv_data` is opened: completes a committed install's renames (and reports it
/// as pending), or removes what an unfinished receive or a finished install left behind.
pub(crate) fn recover(dir: &Path, env: &StorageEnv) -> Result<Option<SnapshotMeta>> {
    let files = env.files();
    let files = files.as_ref();
    remove_file(files, &dir.join(MARKER_TMP))?;
    remove_file(files, &dir.join(IMAGE_TMP))?;
    match read_marker(files, dir)? {
        Some(meta) => {
            swap_in(files, dir, &mut |_| {})?;
            Ok(Some(meta))
        }
        None => {
            remove_dir(files, &dir.join(INCOMING_DIR))?;
            remove_file(files, &dir.join(INCOMING_IMAGE))?;
            remove_dir(files, &dir.join(OLD_DIR))?;
            Ok(None)
        }
    }
}
