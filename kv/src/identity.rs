//! Which node of which cluster a data directory belongs to.
//!
//! Starting node 2 on node 1's directory, or a node of a new cluster on an old cluster's
//! directory, would silently merge two different histories: Raft's safety rests on each node's
//! log and vote being its own. The first open records the identity in `<data-dir>/IDENTITY`;
//! every later open must ask for the same one.
//!
//! File: `"KVID" | version: u8 | node_id: u64 LE | cluster_id: u64 LE | crc32: u32 LE`, written to
//! a temporary file, synced, renamed into place, and the directory synced.

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::codec;
use crate::env::sync_dir;
use crate::error::{Error, Result};

pub const IDENTITY_FILE: &str = "IDENTITY";
const MAGIC: &[u8; 4] = b"KVID";
const VERSION: u8 = 1;
const LEN: usize = 4 + 1 + 8 + 8 + 4;

/// A node's place in the world.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    pub node_id: u64,
    pub cluster_id: u64,
}

impl Identity {
    pub fn new(node_id: u64, cluster_id: u64) -> Self {
        Self {
            node_id,
            cluster_id,
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(LEN);
        b.extend_from_slice(MAGIC);
        b.push(VERSION);
        codec::put_u64(&mut b, self.node_id);
        codec::put_u64(&mut b, self.cluster_id);
        codec::seal(&mut b);
        b
    }

    fn decode(path: &Path, b: &[u8]) -> Result<Identity> {
        let corrupt = |detail: String| Error::Corruption {
            path: path.to_path_buf(),
            index: None,
            detail,
        };
        if b.len() != LEN {
            return Err(corrupt(format!("expected {LEN} bytes, found {}", b.len())));
        }
        let body = codec::unseal(b).map_err(|e| corrupt(e.to_string()))?;
        if &body[..4] != MAGIC {
            return Err(corrupt("not an identity file (bad magic)".into()));
        }
        if body[4] != VERSION {
            return Err(corrupt(format!("unknown identity version {}", body[4])));
        }
        let u = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&body[i..i + 8]);
            u64::from_le_bytes(a)
        };
        Ok(Identity::new(u(5), u(13)))
    }

    /// The identity recorded in `data_dir`, if any.
    pub fn read(data_dir: &Path) -> Result<Option<Identity>> {
        let path = data_dir.join(IDENTITY_FILE);
        match fs::read(&path) {
            Ok(b) => Identity::decode(&path, &b).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Io {
                path,
                detail: e.to_string(),
            }),
        }
    }

    /// Records `self` in a new data directory, or checks that an existing one belongs to `self`.
    /// A mismatch is refused with an error naming both identities.
    pub fn ensure(&self, data_dir: &Path) -> Result<()> {
        let io = |path: &Path, e: std::io::Error| Error::Io {
            path: path.to_path_buf(),
            detail: e.to_string(),
        };
        if let Some(stored) = Identity::read(data_dir)? {
            if stored != *self {
                return Err(Error::IdentityMismatch {
                    path: data_dir.to_path_buf(),
                    stored_node: stored.node_id,
                    stored_cluster: stored.cluster_id,
                    requested_node: self.node_id,
                    requested_cluster: self.cluster_id,
                });
            }
            return Ok(());
        }
        fs::create_dir_all(data_dir).map_err(|e| io(data_dir, e))?;
        let tmp = data_dir.join(format!("{IDENTITY_FILE}.tmp"));
        let path = data_dir.join(IDENTITY_FILE);
        let mut f = fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
        f.write_all(&self.encode()).map_err(|e| io(&tmp, e))?;
        f.sync_all().map_err(|e| io(&tmp, e))?;
        drop(f);
        fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
        sync_dir(data_dir).map_err(|e| io(data_dir, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_recorded_and_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("node");
        Identity::new(1, 77).ensure(&d).unwrap();
        Identity::new(1, 77).ensure(&d).unwrap();
        assert_eq!(Identity::read(&d).unwrap(), Some(Identity::new(1, 77)));

        let e = Identity::new(2, 77).ensure(&d).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::IdentityMismatch { .. }));
        assert!(msg.contains("node 1 of cluster 77"), "{msg}");
        assert!(msg.contains("node 2 of cluster 77"), "{msg}");

        let msg = Identity::new(1, 78).ensure(&d).unwrap_err().to_string();
        assert!(
            msg.contains("cluster 77") && msg.contains("cluster 78"),
            "{msg}"
        );
    }

    #[test]
    fn damaged_identity_is_corruption_not_a_new_node() {
        let dir = tempfile::tempdir().unwrap();
        Identity::new(3, 4).ensure(dir.path()).unwrap();
        let p = dir.path().join(IDENTITY_FILE);
        let mut b = fs::read(&p).unwrap();
        b[6] ^= 1;
        fs::write(&p, &b).unwrap();
        let e = Identity::new(3, 4).ensure(dir.path()).unwrap_err();
        assert!(matches!(e, Error::Corruption { .. }), "{e}");
        assert!(e.to_string().contains("IDENTITY"), "{e}");
    }
}
