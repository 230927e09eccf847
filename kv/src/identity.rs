//! Which node of which cluster, and which incarnation of that node, a data directory belongs to.
//!
//! Starting node 2 on node 1's directory, or a node of a new cluster on an old cluster's
//! directory, would silently merge two different histories: Raft's safety rests on each node's
//! log and vote being its own. The first open records the identity in `<data-dir>/IDENTITY`;
//! every later open must ask for the same node, and uses the cluster id recorded there.
//!
//! **Cluster id.** Derived once, when a cluster is bootstrapped, from the operator's cluster
//! token and the sorted ids of the initial members ([`bootstrap_cluster_id`]), never from
//! addresses, so that a node moved to another host or port (or named `localhost` instead of
//! `127.0.0.1`) keeps its directory. After that it is only ever read from the file.
//!
//! **Incarnation.** A random, non-zero number drawn by the caller (`kv` has no randomness) when
//! the directory is created. A node whose disk was wiped comes back with a new one, which its
//! peers have not pinned ([`PeerPins`]): it is a new member, never the old voter that forgot its
//! vote and its log.
//!
//! File, version 2: `"KVID" | 2 | node_id | cluster_id | incarnation | token_digest | crc32`
//! (integers u64 LE, the CRC u32 LE); version 1 (before incarnations): `"KVID" | 1 | node_id |
//! cluster_id | crc32`. Written to a temporary file, synced, renamed into place, and the
//! directory synced.

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::codec;
use crate::env::sync_dir;
use crate::error::{Error, Result};

mod pins;
#[cfg(test)]
mod tests;

pub use pins::{PeerPins, PinCheck, PEER_PINS_FILE};

pub const IDENTITY_FILE: &str = "IDENTITY";
/// The cluster token of a cluster bootstrapped without `--cluster-token`.
pub const DEFAULT_CLUSTER_TOKEN: &str = "kvstore";
/// An incarnation or token digest of 0 means "not recorded" (a version-1 file).
pub const UNKNOWN: u64 = 0;
const MAGIC: &[u8; 4] = b"KVID";
const VERSION: u8 = 2;
const V1_LEN: usize = 4 + 1 + 8 + 8 + 4;
const LEN: usize = 4 + 1 + 8 * 4 + 4;

/// A node's place in the world.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    pub node_id: u64,
    pub cluster_id: u64,
    /// Which life of `node_id` this directory holds (never 0 once recorded by version 2).
    pub incarnation: u64,
    /// [`token_digest`] of the cluster token the cluster was bootstrapped with; [`UNKNOWN`] for a
    /// cluster made before tokens, whose id was derived from its peer list.
    pub token_digest: u64,
}

/// FNV-1a, 64 bits: tiny, specified, the same on every platform and Rust version (std's
/// `DefaultHasher` promises none of that, and a cluster id must never change).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in parts.iter().flat_map(|p| p.iter()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The id of a cluster bootstrapped with `token` and the initial members `member_ids` (in any
/// order, duplicates ignored). Every node of a new cluster computes the same one; different
/// tokens or member sets give different ones. Addresses play no part.
pub fn bootstrap_cluster_id(token: &str, member_ids: impl IntoIterator<Item = u64>) -> u64 {
    let ids: std::collections::BTreeSet<u64> = member_ids.into_iter().collect();
    let mut canonical = Vec::with_capacity(32 + token.len() + 8 * ids.len());
    canonical.extend_from_slice(b"kvstore cluster id v1\0");
    canonical.extend_from_slice(&(token.len() as u64).to_le_bytes());
    canonical.extend_from_slice(token.as_bytes());
    canonical.extend_from_slice(&(ids.len() as u64).to_le_bytes());
    for id in ids {
        canonical.extend_from_slice(&id.to_le_bytes());
    }
    // 0 means "unknown" in the file; a token that hashes there is moved off it.
    fnv1a(&[&canonical]).max(1)
}

/// What the identity file records of a cluster token (the token itself is not kept).
pub fn token_digest(token: &str) -> u64 {
    fnv1a(&[b"kvstore cluster token v1\0", token.as_bytes()]).max(1)
}

impl Identity {
    /// Node `node_id` of cluster `cluster_id`, incarnation 1, token unknown: for tools and tests
    /// that open storage directly. A node records a drawn incarnation ([`Identity::create`]).
    pub fn new(node_id: u64, cluster_id: u64) -> Self {
        Self {
            node_id,
            cluster_id,
            incarnation: 1,
            token_digest: UNKNOWN,
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(LEN);
        b.extend_from_slice(MAGIC);
        b.push(VERSION);
        codec::put_u64(&mut b, self.node_id);
        codec::put_u64(&mut b, self.cluster_id);
        codec::put_u64(&mut b, self.incarnation);
        codec::put_u64(&mut b, self.token_digest);
        codec::seal(&mut b);
        b
    }

    /// A version-1 file decodes with incarnation and token digest [`UNKNOWN`].
    fn decode(path: &Path, b: &[u8]) -> Result<Identity> {
        let corrupt = |detail: String| Error::Corruption {
            path: path.to_path_buf(),
            index: None,
            detail,
        };
        let body = codec::unseal(b).map_err(|e| corrupt(e.to_string()))?;
        if body.len() < 5 || &body[..4] != MAGIC {
            return Err(corrupt("not an identity file (bad magic)".into()));
        }
        let u = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&body[i..i + 8]);
            u64::from_le_bytes(a)
        };
        let expected = match body[4] {
            1 => V1_LEN,
            VERSION => LEN,
            v => return Err(corrupt(format!("unknown identity version {v}"))),
        };
        if b.len() != expected {
            return Err(corrupt(format!(
                "identity version {} has {expected} bytes, found {}",
                body[4],
                b.len()
            )));
        }
        let mut id = Identity::new(u(5), u(13));
        if body[4] == 1 {
            id.incarnation = UNKNOWN;
        } else {
            id.incarnation = u(21);
            id.token_digest = u(29);
            if id.incarnation == UNKNOWN {
                return Err(corrupt("identity version 2 without an incarnation".into()));
            }
        }
        Ok(id)
    }

    /// The identity recorded in `data_dir`, if any (a version-1 file with an [`UNKNOWN`]
    /// incarnation).
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

    /// What a starting node finds in `data_dir`: `None` if nothing is recorded (a new
    /// directory: the caller decides whether it may bootstrap, then [`Identity::create`]s), else
    /// the recorded identity, which must be node `node_id`'s. A `cluster_token` given (not
    /// defaulted) must be the one the cluster was bootstrapped with.
    ///
    /// A version-1 file is upgraded here: `new_incarnation` is recorded in it, once. Refusing it
    /// instead would leave the operator nothing safe to do (wiping the directory is the very
    /// thing incarnations guard against), while naming it is safe: the directory holds this
    /// node's own vote and log, as it always did, and no peer has pinned an incarnation for it,
    /// since a version-1 node sent none and cannot talk to this version (the frame version
    /// changed). The first incarnation its peers see is therefore the one recorded here.
    pub fn open_recorded(
        data_dir: &Path,
        node_id: u64,
        cluster_token: Option<&str>,
        new_incarnation: u64,
    ) -> Result<Option<Identity>> {
        let Some(mut stored) = Identity::read(data_dir)? else {
            return Ok(None);
        };
        if stored.node_id != node_id {
            return Err(Error::IdentityMismatch {
                path: data_dir.to_path_buf(),
                stored_node: stored.node_id,
                stored_cluster: stored.cluster_id,
                requested_node: node_id,
                requested_cluster: stored.cluster_id,
            });
        }
        // A cluster made before tokens (digest unknown) was named by its peer list, not by any
        // token, so no token given now can be the wrong one.
        if let Some(token) = cluster_token {
            if stored.token_digest != UNKNOWN && stored.token_digest != token_digest(token) {
                return Err(Error::ClusterTokenMismatch {
                    path: data_dir.to_path_buf(),
                    cluster: stored.cluster_id,
                });
            }
        }
        if stored.incarnation == UNKNOWN {
            stored.incarnation = new_incarnation;
            write_atomically(data_dir, IDENTITY_FILE, &stored.encode_checked()?)?;
        }
        Ok(Some(stored))
    }

    /// Records `self` in `data_dir`, which must hold no identity yet.
    pub fn create(&self, data_dir: &Path) -> Result<()> {
        if let Some(stored) = Identity::read(data_dir)? {
            return Err(Error::InvalidRequest(format!(
                "{} already records node {} of cluster {}",
                data_dir.join(IDENTITY_FILE).display(),
                stored.node_id,
                ClusterIdText(stored.cluster_id)
            )));
        }
        write_atomically(data_dir, IDENTITY_FILE, &self.encode_checked()?)
    }

    fn encode_checked(&self) -> Result<Vec<u8>> {
        if self.incarnation == UNKNOWN {
            return Err(Error::InvalidRequest(
                "an identity needs a non-zero incarnation".into(),
            ));
        }
        Ok(self.encode())
    }

    /// Records `self` in a new data directory, or checks that an existing one belongs to the
    /// same node of the same cluster (whatever its incarnation). A mismatch is refused with an
    /// error naming both identities. For opening storage directly; a node uses
    /// [`Identity::open_recorded`] and [`Identity::create`].
    pub fn ensure(&self, data_dir: &Path) -> Result<()> {
        if let Some(stored) = Identity::read(data_dir)? {
            if (stored.node_id, stored.cluster_id) != (self.node_id, self.cluster_id) {
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
        write_atomically(data_dir, IDENTITY_FILE, &self.encode_checked()?)
    }
}

/// Writes `name` in `dir` so that a crash leaves the old file or the new one, never a mix:
/// temporary file, fsync, rename, fsync of the directory.
pub(crate) fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let io = |path: &Path, e: std::io::Error| Error::Io {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let mut f = fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| io(&tmp, e))?;
    f.sync_all().map_err(|e| io(&tmp, e))?;
    drop(f);
    fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
    sync_dir(dir).map_err(|e| io(dir, e))
}

/// A cluster id as every message and log line writes it: `0x` and sixteen hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClusterIdText(pub u64);

impl std::fmt::Display for ClusterIdText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#018x}", self.0)
    }
}
