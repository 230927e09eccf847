//! The incarnation of each peer this node has heard from, pinned for good.
//!
//! A peer's incarnation is pinned durably the first time one of its frames arrives (before the
//! frame is acted on), and frames from any other incarnation of that id are refused from then
//! on. A peer whose disk was wiped has forgotten its vote and its log; letting it back in under
//! its old id would let it vote twice in one term or drop a committed entry's majority. The
//! membership layer forgets a pin when the member is removed ([`PeerPins::forget`]), so that the
//! id can be added again as a new member.
//!
//! File `<data-dir>/PEER_PINS`: `"KVPP" | version 1 | count: u32 | (node_id: u64,
//! incarnation: u64) * count | crc32`, little-endian, sorted by node id; replaced atomically
//! (temporary file, fsync, rename, directory fsync) on every change.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::write_atomically;
use crate::codec;
use crate::error::{Error, Result};

pub const PEER_PINS_FILE: &str = "PEER_PINS";
const MAGIC: &[u8; 4] = b"KVPP";
const VERSION: u8 = 1;
/// More pins than any cluster has members; bounds what a damaged file can make us allocate.
const MAX_PINS: usize = 1 << 16;

/// What [`PeerPins::check`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinCheck {
    /// The incarnation pinned for this peer.
    Known,
    /// The first incarnation seen for this peer; now pinned (durably, for a directory).
    NewlyPinned,
    /// Another incarnation of a pinned peer: refuse it.
    Conflict { pinned: u64 },
}

/// Pinned incarnations by node id, kept in a data directory or (for a simulated disk, which
/// keeps no identity either) in memory only.
#[derive(Debug)]
pub struct PeerPins {
    dir: Option<PathBuf>,
    pins: BTreeMap<u64, u64>,
}

impl Default for PeerPins {
    fn default() -> Self {
        PeerPins::in_memory()
    }
}

impl PeerPins {
    /// The pins recorded in `data_dir` (none if the file does not exist yet).
    pub fn open(data_dir: &Path) -> Result<PeerPins> {
        let path = data_dir.join(PEER_PINS_FILE);
        let pins = match fs::read(&path) {
            Ok(b) => decode(&path, &b)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                return Err(Error::Io {
                    path,
                    detail: e.to_string(),
                })
            }
        };
        Ok(PeerPins {
            dir: Some(data_dir.to_path_buf()),
            pins,
        })
    }

    /// Pins that last as long as the process.
    pub fn in_memory() -> PeerPins {
        PeerPins {
            dir: None,
            pins: BTreeMap::new(),
        }
    }

    /// The incarnation pinned for `node_id`, if any.
    pub fn pinned(&self, node_id: u64) -> Option<u64> {
        self.pins.get(&node_id).copied()
    }

    /// Every pin, by node id.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.pins.iter().map(|(&id, &inc)| (id, inc))
    }

    /// Whether `incarnation` is the one pinned for `node_id`; pins it if none is. A new pin is
    /// durable before this returns; if it cannot be written, nothing is pinned and the error
    /// says why (the caller must then refuse the frame).
    pub fn check(&mut self, node_id: u64, incarnation: u64) -> Result<PinCheck> {
        match self.pins.get(&node_id) {
            Some(&pinned) if pinned == incarnation => Ok(PinCheck::Known),
            Some(&pinned) => Ok(PinCheck::Conflict { pinned }),
            None => {
                let mut next = self.pins.clone();
                next.insert(node_id, incarnation);
                self.store(next)?;
                Ok(PinCheck::NewlyPinned)
            }
        }
    }

    /// Drops `node_id`'s pin (the member was removed), durably; whether there was one. The id
    /// may then come back with any incarnation.
    pub fn forget(&mut self, node_id: u64) -> Result<bool> {
        if !self.pins.contains_key(&node_id) {
            return Ok(false);
        }
        let mut next = self.pins.clone();
        next.remove(&node_id);
        self.store(next)?;
        Ok(true)
    }

    fn store(&mut self, pins: BTreeMap<u64, u64>) -> Result<()> {
        if pins.len() > MAX_PINS {
            return Err(Error::InvalidRequest(format!(
                "more than {MAX_PINS} peers pinned"
            )));
        }
        if let Some(dir) = &self.dir {
            write_atomically(dir, PEER_PINS_FILE, &encode(&pins))?;
        }
        self.pins = pins;
        Ok(())
    }
}

fn encode(pins: &BTreeMap<u64, u64>) -> Vec<u8> {
    let mut b = Vec::with_capacity(4 + 1 + 4 + 16 * pins.len() + 4);
    b.extend_from_slice(MAGIC);
    b.push(VERSION);
    b.extend_from_slice(&(pins.len() as u32).to_le_bytes());
    for (&id, &incarnation) in pins {
        codec::put_u64(&mut b, id);
        codec::put_u64(&mut b, incarnation);
    }
    codec::seal(&mut b);
    b
}

fn decode(path: &Path, b: &[u8]) -> Result<BTreeMap<u64, u64>> {
    let corrupt = |detail: String| Error::Corruption {
        path: path.to_path_buf(),
        index: None,
        detail,
    };
    let body = codec::unseal(b).map_err(|e| corrupt(e.to_string()))?;
    if body.len() < 9 || &body[..4] != MAGIC {
        return Err(corrupt("not a peer pins file (bad magic)".into()));
    }
    if body[4] != VERSION {
        return Err(corrupt(format!("unknown peer pins version {}", body[4])));
    }
    let count = u32::from_le_bytes([body[5], body[6], body[7], body[8]]) as usize;
    if count > MAX_PINS || body.len() != 9 + 16 * count {
        return Err(corrupt(format!(
            "{count} pins do not fit a body of {} bytes",
            body.len()
        )));
    }
    let u = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&body[i..i + 8]);
        u64::from_le_bytes(a)
    };
    let mut pins = BTreeMap::new();
    for i in 0..count {
        let at = 9 + 16 * i;
        if pins.insert(u(at), u(at + 8)).is_some() {
            return Err(corrupt(format!("node {} pinned twice", u(at))));
        }
    }
    Ok(pins)
}
