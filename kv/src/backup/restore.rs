//! Seeding one data directory of a new cluster from a backup (`kvstore restore`).
//!
//! The directory is built beside its final place (`<dir>.restoring`) and renamed into place
//! only when complete, so a restore that fails or is interrupted never leaves a directory that
//! `kvstore serve` would take for a node's. What it holds, once renamed:
//! * `kv_data`: the backup's key space as it is (user data, sessions: a client retrying a write
//!   across the restore is still answered exactly once), but with the new cluster's
//!   configuration and addresses in place of the old ones;
//! * `raft_logs`: an empty log starting after the backup's index, at its term, with the new
//!   configuration, so the node starts where the backup ends;
//! * `kv_snapshot`: an image of the above, so the new cluster can bring a member added later
//!   up to date from the start;
//! * the identity: this node's id, a new incarnation and the new cluster's id.
//!
//! **The new cluster id.** Every node of the new cluster is restored separately and must come
//! out with the same cluster id, different from the original's (peer frames carry the cluster
//! id, so the restored cluster and the original can never exchange messages), without the
//! nodes talking to each other. [`restored_cluster_id`] derives it from what every restore of
//! that cluster is given: the backup's cluster id, index and term, the new members' ids and a
//! cluster token (etcd's `--initial-cluster-token`). The same backup restored twice with the
//! same ids and token gives the same id; giving each restored cluster its own token keeps
//! such twins apart.

use std::io::Read;
use std::path::{Path, PathBuf};

use raft_core::{HardState, Persist, SnapshotMeta, WriteId};
use rusty_leveldb::WriteBatch;

use super::{BackupError, BackupReader, BackupSummary};
use crate::identity::{bootstrap_cluster_id, token_digest, Identity};
use crate::ldb::{Ldb, StorageEnv};
use crate::members::MemberTable;
use crate::snapshot::{decode_chunk, ChunkBody, SnapshotHeader, DEFAULT_CHUNK_BYTES};
use crate::state_machine::{
    encode_applied, encode_member_addrs, KvStateMachine, KEY_APPLIED, KEY_MEMBERS, KV_DATA_DIR,
};
use crate::RaftStorage;

/// Who the restored node is, in which new cluster.
#[derive(Clone, Debug)]
pub struct RestorePlan {
    pub node_id: u64,
    /// The new cluster's founding members with their addresses.
    pub members: MemberTable,
    pub cluster_token: String,
    /// The new directory's incarnation (random, non-zero).
    pub incarnation: u64,
}

/// Why a restore failed.
#[derive(Debug)]
pub enum RestoreError {
    Backup(BackupError),
    Storage(crate::Error),
    Refused(String),
}

impl std::fmt::Display for RestoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestoreError::Backup(e) => write!(f, "the backup file is refused {e}"),
            RestoreError::Storage(e) => write!(f, "{e}"),
            RestoreError::Refused(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for RestoreError {}

impl From<crate::Error> for RestoreError {
    fn from(e: crate::Error) -> Self {
        RestoreError::Storage(e)
    }
}

impl From<BackupError> for RestoreError {
    fn from(e: BackupError) -> Self {
        RestoreError::Backup(e)
    }
}

/// What a restore made.
#[derive(Clone, Debug)]
pub struct Restored {
    pub backup: BackupSummary,
    pub cluster_id: u64,
}

/// The id of the cluster restored from a backup with `header` (see the module's notes).
pub fn restored_cluster_id(
    header: &SnapshotHeader,
    token: &str,
    member_ids: impl IntoIterator<Item = u64>,
) -> u64 {
    let name = format!(
        "restored from cluster {:016x} at {}/{}, token {token}",
        header.cluster_id, header.applied_index, header.applied_term
    );
    let id = bootstrap_cluster_id(&name, member_ids);
    if id == header.cluster_id {
        id.wrapping_add(1).max(1)
    } else {
        id
    }
}

/// Where a restore into `target` is built before it is renamed into place.
pub fn staging_dir(target: &Path) -> PathBuf {
    let mut name = target.file_name().unwrap_or_default().to_os_string();
    name.push(".restoring");
    target.with_file_name(name)
}

/// Restores the backup `reader` reads into the new data directory `target` (absent or empty),
/// as node `plan.node_id` of the new cluster. `progress` is told the bytes read so far.
pub fn restore_into<R: Read>(
    mut reader: BackupReader<R>,
    target: &Path,
    plan: &RestorePlan,
    progress: &mut dyn FnMut(u64),
) -> Result<Restored, RestoreError> {
    if is_non_empty_dir(target)? {
        return Err(RestoreError::Refused(format!(
            "{} is not empty: a restore seeds a new data directory",
            target.display()
        )));
    }
    if !plan.members.membership.is_voter(plan.node_id) {
        return Err(RestoreError::Refused(format!(
            "node {} is not one of the new cluster's members",
            plan.node_id
        )));
    }
    let staging = staging_dir(target);
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| io_error(&staging, e))?;
    }
    std::fs::create_dir_all(&staging).map_err(|e| io_error(&staging, e))?;
    let backup = write_key_space(&mut reader, &staging, plan, progress)?;
    let header = &backup.header;
    let cluster_id = restored_cluster_id(
        header,
        &plan.cluster_token,
        plan.members.addrs.keys().copied(),
    );
    let start = SnapshotMeta::new(
        header.applied_index,
        header.applied_term,
        plan.members.membership.clone(),
    );
    let mut log = RaftStorage::open(&staging)?;
    log.install_snapshot(start.clone())?;
    // A term below the log's last would let the first leader append entries of a smaller term
    // after the backup's.
    log.persist(&Persist {
        id: WriteId { seq: 0, term: 0 },
        hard_state: Some(HardState {
            term: header.applied_term,
            vote: None,
            commit: header.applied_index,
        }),
        entries: Vec::new(),
    })?;
    drop(log);
    let mut state = KvStateMachine::open(&staging)?;
    if state.applied_index() != header.applied_index {
        return Err(RestoreError::Refused(format!(
            "the restored state machine is at index {}, the backup at {}",
            state.applied_index(),
            header.applied_index
        )));
    }
    state.build_snapshot(cluster_id, DEFAULT_CHUNK_BYTES)?;
    drop(state);
    Identity {
        node_id: plan.node_id,
        cluster_id,
        incarnation: plan.incarnation,
        token_digest: token_digest(&plan.cluster_token),
    }
    .create(&staging)?;
    if target.exists() {
        // Empty (checked above): rename does not replace a directory on every platform.
        std::fs::remove_dir(target).map_err(|e| io_error(target, e))?;
    }
    std::fs::rename(&staging, target).map_err(|e| io_error(target, e))?;
    if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Ok(dir) = std::fs::File::open(parent) {
            dir.sync_all().map_err(|e| io_error(parent, e))?;
        }
    }
    Ok(Restored { backup, cluster_id })
}

/// Writes every record of the backup into `<dir>/kv_data`, the new configuration and addresses
/// in place of the backup's.
fn write_key_space<R: Read>(
    reader: &mut BackupReader<R>,
    dir: &Path,
    plan: &RestorePlan,
    progress: &mut dyn FnMut(u64),
) -> Result<BackupSummary, RestoreError> {
    let mut db = Ldb::open(&dir.join(KV_DATA_DIR), &StorageEnv::Disk)?;
    while let Some(chunk) = reader.next_chunk()? {
        progress(reader.offset());
        // Checked by the reader already.
        let Ok(decoded) = decode_chunk(&chunk) else {
            continue;
        };
        let ChunkBody::Records(records) = decoded.body else {
            continue;
        };
        let mut batch = WriteBatch::default();
        for (key, value) in records {
            if key.as_ref() != KEY_APPLIED && key.as_ref() != KEY_MEMBERS {
                batch.put(&key, &value);
            }
        }
        db.write(batch, false)?;
    }
    progress(reader.offset());
    let Some(backup) = reader.summary().cloned() else {
        return Err(RestoreError::Refused(
            "the backup was not read to its end".into(),
        ));
    };
    let header = &backup.header;
    let mut batch = WriteBatch::default();
    batch.put(
        KEY_APPLIED,
        &encode_applied(
            header.applied_index,
            header.applied_term,
            &plan.members.membership,
        ),
    );
    batch.put(KEY_MEMBERS, &encode_member_addrs(&plan.members.addrs));
    db.write(batch, true)?;
    db.flush()?;
    Ok(backup)
}

fn is_non_empty_dir(path: &Path) -> Result<bool, RestoreError> {
    match std::fs::read_dir(path) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Err(RestoreError::Refused(
            format!("{} is a file, not a data directory", path.display()),
        )),
        Err(e) => Err(io_error(path, e)),
    }
}

fn io_error(path: &Path, e: std::io::Error) -> RestoreError {
    RestoreError::Storage(crate::Error::Io {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}
