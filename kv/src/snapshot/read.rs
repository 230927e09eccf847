//! Streaming an image file chunk by chunk, to a follower or a test.

use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use raft_core::SnapshotMeta;

use super::format::{decode_chunk, frame_len, ChunkBody, DecodedChunk, SnapshotHeader};
use super::{io_err, FRAME_HEAD, IMAGE_FILE};
use crate::error::{Error, Result};
use crate::ldb::StorageEnv;

/// Streams an image file chunk by chunk. Holds no database handle, so the state machine keeps
/// applying meanwhile; each reader has its own file handle (a later build replaces the file
/// under a new name, so a reader in progress keeps reading the image it started with).
pub struct SnapshotReader {
    input: Box<dyn Read>,
    path: PathBuf,
    header: SnapshotHeader,
    first: Option<Bytes>,
    done: bool,
}

impl SnapshotReader {
    /// Opens `<data_dir>/kv_snapshot` and reads its header.
    pub fn open(data_dir: &Path, env: &StorageEnv) -> Result<SnapshotReader> {
        let path = data_dir.join(IMAGE_FILE);
        let input = env
            .files()
            .open_sequential_file(&path)
            .map_err(|e| io_err(&path, e))?;
        let mut r = SnapshotReader {
            input,
            path,
            header: SnapshotHeader {
                applied_index: 0,
                applied_term: 0,
                cluster_id: 0,
                membership: raft_core::Membership::default(),
            },
            first: None,
            done: false,
        };
        let first = r
            .read_frame()?
            .ok_or_else(|| r.corrupt("the image is empty".into()))?;
        match decode_chunk(&first) {
            Ok(DecodedChunk {
                seq: 0,
                body: ChunkBody::Header(h),
            }) => r.header = h,
            Ok(_) => return Err(r.corrupt("the image does not start with a header".into())),
            Err(e) => return Err(r.corrupt(format!("chunk 0: {e}"))),
        }
        r.first = Some(first);
        Ok(r)
    }

    fn corrupt(&self, detail: String) -> Error {
        Error::Corruption {
            path: self.path.clone(),
            index: None,
            detail,
        }
    }

    pub fn header(&self) -> SnapshotHeader {
        self.header.clone()
    }

    /// The snapshot's index and term.
    pub fn meta(&self) -> SnapshotMeta {
        self.header.meta()
    }

    /// Reads up to `buf.len()` bytes; fewer only at the end of the file.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match self.input.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err(&self.path, e)),
            }
        }
        Ok(n)
    }

    fn read_frame(&mut self) -> Result<Option<Bytes>> {
        let mut head = [0u8; FRAME_HEAD];
        let n = self.fill(&mut head)?;
        if n == 0 {
            return Ok(None);
        }
        if n < FRAME_HEAD {
            return Err(self.corrupt("the image ends inside a chunk".into()));
        }
        let total = frame_len(&head).map_err(|e| self.corrupt(e.to_string()))?;
        let mut f = vec![0u8; total];
        f[..FRAME_HEAD].copy_from_slice(&head);
        if self.fill(&mut f[FRAME_HEAD..])? < total - FRAME_HEAD {
            return Err(self.corrupt("the image ends inside a chunk".into()));
        }
        Ok(Some(Bytes::from(f)))
    }

    /// The next chunk, or `None` after the trailer. Each chunk's own checksum is checked
    /// (a damaged image file is reported here rather than sent); the receiver checks again.
    pub fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        if let Some(f) = self.first.take() {
            return Ok(Some(f));
        }
        if self.done {
            return Ok(None);
        }
        let Some(f) = self.read_frame()? else {
            return Err(self.corrupt("the image ends without a trailer".into()));
        };
        match decode_chunk(&f) {
            Ok(DecodedChunk {
                body: ChunkBody::Trailer { .. },
                ..
            }) => self.done = true,
            Ok(_) => {}
            Err(e) => return Err(self.corrupt(e.to_string())),
        }
        Ok(Some(f))
    }
}

impl Iterator for SnapshotReader {
    type Item = Result<Bytes>;
    fn next(&mut self) -> Option<Result<Bytes>> {
        match self.next_chunk() {
            Ok(Some(c)) => Some(Ok(c)),
            Ok(None) => None,
            Err(e) => {
                self.done = true;
                self.first = None;
                Some(Err(e))
            }
        }
    }
}
