//! A node's whole data directory: identity, Raft log and state machine, opened together.
//!
//! Opening them separately is allowed, but the checks that relate them live here: the directory
//! must belong to this node, and the state machine's applied index must lie inside what the log
//! can replay. If the log was compacted past what the state machine applied, or the state
//! machine is ahead of the log, entries are missing and starting would silently diverge.

use std::path::Path;

use raft_core::RestartState;

use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::ldb::StorageEnv;
use crate::raft_storage::RaftStorage;
use crate::snapshot::{InstallStep, StagedSnapshot};
use crate::state_machine::{KvStateMachine, DEFAULT_MAX_SESSIONS};

/// Both databases of one node.
pub struct NodeStorage {
    pub log: RaftStorage,
    pub state: KvStateMachine,
}

impl NodeStorage {
    /// Checks (or records) the identity, then opens `raft_logs` and `kv_data` under `data_dir`.
    ///
    /// A snapshot install that a crash interrupted after its commit point is finished here (its
    /// log part is installed), so the two databases always describe one state.
    pub fn open(data_dir: &Path, identity: Identity) -> Result<NodeStorage> {
        Self::open_with(data_dir, identity, &StorageEnv::Disk, DEFAULT_MAX_SESSIONS)
    }

    /// [`NodeStorage::open`] on any environment. The identity file is kept (and checked) on the
    /// real disk only; the power-cut environment is for tests and the simulator.
    pub fn open_with(
        data_dir: &Path,
        identity: Identity,
        env: &StorageEnv,
        max_sessions: usize,
    ) -> Result<NodeStorage> {
        if matches!(env, StorageEnv::Disk) {
            identity.ensure(data_dir)?;
        }
        let mut n = NodeStorage {
            log: RaftStorage::open_with(data_dir, env)?,
            state: KvStateMachine::open_with(data_dir, env, max_sessions)?,
        };
        n.finish_pending_install(&mut |_| {})?;
        Ok(n)
    }

    fn finish_pending_install(&mut self, hook: &mut dyn FnMut(InstallStep)) -> Result<()> {
        if let Some(meta) = self.state.pending_install() {
            self.log.install_snapshot(meta)?;
            hook(InstallStep::LogInstalled);
            let dir = self.state.data_dir().to_path_buf();
            let env = self.state.env().clone();
            crate::snapshot::finish(&dir, &env, hook)?;
            self.state.finish_install()?;
        }
        Ok(())
    }

    /// Installs a received snapshot: the state machine becomes it, the log becomes empty after
    /// it (`SnapshotWrite`'s contract). Atomic across a crash: reopening gives the old state or
    /// the new one. On error the storage must be reopened (which finishes or drops the install).
    pub fn install_snapshot(self, staged: StagedSnapshot) -> Result<NodeStorage> {
        self.install_snapshot_with_hook(staged, &mut |_| {})
    }

    #[doc(hidden)]
    pub fn install_snapshot_with_hook(
        self,
        staged: StagedSnapshot,
        hook: &mut dyn FnMut(InstallStep),
    ) -> Result<NodeStorage> {
        let NodeStorage { log, state } = self;
        let state = state.install_with_hook(staged, hook)?;
        let mut n = NodeStorage { log, state };
        n.finish_pending_install(hook)?;
        Ok(n)
    }

    /// What the core restarts from, with `applied` taken from the state machine.
    pub fn restart_state(&mut self) -> Result<RestartState> {
        let logged = self.log.load()?;
        restart_state_from(
            logged,
            &self.log.path(),
            self.state.applied_index(),
            &self.state.path(),
        )
    }
}

/// Joins what the Raft log holds with how far the state machine got, refusing a pair that cannot
/// have come from one node: a log compacted past the applied index (entries are gone) or a state
/// machine ahead of the log. For drivers that open the two databases on different threads
/// (LevelDB handles cannot move between threads).
pub fn restart_state_from(
    mut rs: RestartState,
    log_path: &Path,
    applied_index: raft_core::Index,
    state_path: &Path,
) -> Result<RestartState> {
    let last = rs.entries.last().map_or(rs.snapshot.index, |e| e.index);
    if applied_index < rs.snapshot.index {
        return Err(Error::Corruption {
            path: log_path.to_path_buf(),
            index: Some(applied_index + 1),
            detail: format!(
                "the log was compacted up to {} but the state machine ({}) has only applied \
                 up to {applied_index}: entries {}..={} are gone",
                rs.snapshot.index,
                state_path.display(),
                applied_index + 1,
                rs.snapshot.index
            ),
        });
    }
    if applied_index > last {
        return Err(Error::Corruption {
            path: log_path.to_path_buf(),
            index: Some(last + 1),
            detail: format!(
                "the state machine ({}) has applied up to {applied_index} but the log ends at {last}",
                state_path.display()
            ),
        });
    }
    rs.applied = applied_index;
    Ok(rs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use raft_core::{Entry, EntryKind, HardState, Persist, WriteId};

    #[test]
    fn restart_state_joins_log_and_state_machine() {
        let dir = tempfile::tempdir().unwrap();
        let es: Vec<Entry> = (1..=5)
            .map(|i| Entry::new(1, i, EntryKind::Noop, Bytes::new()))
            .collect();
        {
            let mut n = NodeStorage::open(dir.path(), Identity::new(1, 9)).unwrap();
            n.log
                .persist(&Persist {
                    id: WriteId { seq: 1, term: 1 },
                    hard_state: Some(HardState {
                        term: 1,
                        vote: None,
                        commit: 5,
                    }),
                    entries: es.clone(),
                })
                .unwrap();
            n.state.apply(&es[..3]).unwrap();
            n.state.sync().unwrap();
            let rs = n.restart_state().unwrap();
            assert_eq!((rs.applied, rs.entries.len()), (3, 5));
            // Compacting past the applied index loses entries the state machine still needs.
            n.log.compact(4, &raft_core::Membership::default()).unwrap();
            let e = n.restart_state().unwrap_err();
            assert!(e.to_string().contains("entries 4..=4 are gone"), "{e}");
        }
        assert!(NodeStorage::open(dir.path(), Identity::new(2, 9)).is_err());
    }
}
