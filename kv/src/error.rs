//! The one error type of the crate.
//!
//! Every error that comes from the disk names the path it came from and, where one exists, the
//! log index, because the operator who reads it has to find and repair (or wipe) that directory.

use std::fmt;
use std::path::PathBuf;

use raft_core::Index;

/// Everything that can go wrong in `kv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// LevelDB or the file system failed.
    Io { path: PathBuf, detail: String },
    /// Stored bytes are not what was written: bad checksum, impossible length, wrong index, gap.
    Corruption {
        path: PathBuf,
        index: Option<Index>,
        detail: String,
    },
    /// The data directory belongs to another node or cluster.
    IdentityMismatch {
        path: PathBuf,
        stored_node: u64,
        stored_cluster: u64,
        requested_node: u64,
        requested_cluster: u64,
    },
    /// A cluster token was given that is not the one the directory's cluster was bootstrapped
    /// with.
    ClusterTokenMismatch { path: PathBuf, cluster: u64 },
    /// The caller asked for something the stored state cannot do (a write that would leave a gap,
    /// compaction past the end of the log, ...). Nothing was written.
    InvalidRequest(String),
    /// Bytes handed to a decoder (from a peer, a client or a file) are not a valid encoding.
    Decode(DecodeError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, detail } => write!(f, "I/O error on {}: {detail}", path.display()),
            Error::Corruption {
                path,
                index: Some(i),
                detail,
            } => write!(f, "corruption in {} at index {i}: {detail}", path.display()),
            Error::Corruption {
                path,
                index: None,
                detail,
            } => write!(f, "corruption in {}: {detail}", path.display()),
            Error::IdentityMismatch {
                path,
                stored_node,
                stored_cluster,
                requested_node,
                requested_cluster,
            } => write!(
                f,
                "data directory {} belongs to node {stored_node} of cluster {}, \
                 refusing to open it as node {requested_node} of cluster {}",
                path.display(),
                crate::ClusterIdText(*stored_cluster),
                crate::ClusterIdText(*requested_cluster)
            ),
            Error::ClusterTokenMismatch { path, cluster } => write!(
                f,
                "data directory {} belongs to cluster {}, which was bootstrapped with \
                 another --cluster-token: give the token it was bootstrapped with, or none",
                path.display(),
                crate::ClusterIdText(*cluster)
            ),
            Error::InvalidRequest(s) => write!(f, "invalid request: {s}"),
            Error::Decode(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<DecodeError> for Error {
    fn from(e: DecodeError) -> Self {
        Error::Decode(e)
    }
}

/// Why a byte string is not a valid encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    Truncated {
        needed: usize,
        have: usize,
    },
    BadChecksum {
        stored: u32,
        computed: u32,
    },
    UnknownVersion(u8),
    UnknownTag {
        what: &'static str,
        tag: u8,
    },
    TooLong {
        what: &'static str,
        len: u64,
        max: u64,
    },
    TrailingBytes(usize),
    Invalid(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated { needed, have } => {
                write!(f, "truncated encoding: needed {needed} bytes, have {have}")
            }
            DecodeError::BadChecksum { stored, computed } => write!(
                f,
                "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ),
            DecodeError::UnknownVersion(v) => write!(f, "unknown encoding version {v}"),
            DecodeError::UnknownTag { what, tag } => write!(f, "unknown {what} tag {tag}"),
            DecodeError::TooLong { what, len, max } => {
                write!(f, "{what} of {len} bytes exceeds the limit of {max}")
            }
            DecodeError::TrailingBytes(n) => write!(f, "{n} unexpected trailing bytes"),
            DecodeError::Invalid(s) => write!(f, "invalid encoding: {s}"),
        }
    }
}

impl std::error::Error for DecodeError {}

pub type Result<T, E = Error> = std::result::Result<T, E>;
