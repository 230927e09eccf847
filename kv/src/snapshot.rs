//! State-machine snapshots: building an image of `kv_data`, streaming it as bounded chunks,
//! receiving it beside the live database, and installing it atomically (DESIGN.md §4, the
//! snapshot contract in ARCHITECTURE.md).
//!
//! **Building: in steps between applies, into a file.** rusty-leveldb's garbage-collection
//! workaround (`ldb`) is sound only if no iterator or snapshot outlives a call into `Ldb`, so a
//! LevelDB snapshot cannot be kept pinned while an image is written (or streamed over the
//! network for seconds or minutes). Instead, [`KvStateMachine::start_snapshot`] fixes the
//! image's index (the applied index, made durable) and [`KvStateMachine::snapshot_step`] scans
//! the key space a few thousand keys at a time, each step with a fresh iterator from where the
//! last one stopped. Between steps the owner goes on applying; `apply` keeps the value, at the
//! image's index, of every key the scan has not reached yet, the first time it overwrites or
//! deletes it (one point read per such key), and the steps write those kept values instead of
//! the stored ones. The image is therefore exactly the state at its index, while applies and
//! reads wait for one step at most, never for a whole scan (a fuzzy checkpoint with
//! before-images). [`KvStateMachine::build_snapshot`] does all steps in one call. The image
//! goes to `<data-dir>/kv_snapshot` (written as `kv_snapshot.tmp`, synced, renamed); streaming
//! then reads the file with no hold on the database, and any number of readers may stream it
//! at once.
//!
//! The log may be compacted up to the [`SnapshotMeta`] a finished image returns (never further:
//! a follower that needs the compacted entries is served the newest image, which must cover
//! them). The image is durable (a restarted leader serves it again) and stays until the next
//! build or install replaces it.
//!
//! **Format.** The image is a sequence of chunks; each chunk is one frame
//! `version: u8 | kind: u8 | seq: u64 | body_len: u32 | body | crc32(everything before): u32`
//! (little-endian), numbered from 0:
//! * chunk 0, header: `applied_index: u64 | applied_term: u64 | cluster_id: u64` (0: not given);
//! * records: `count: u32 | count × (key: len u32 + bytes | value: len u32 + bytes)`, the raw
//!   `kv_data` key space in key order: user data, the client-session table and the applied
//!   index/term, so exactly-once survives the transfer;
//! * the last chunk, trailer: `chunks before it: u64 | records: u64 | crc32 over every chunk
//!   before it, each without its own CRC: u32` (with them, CRC's linearity would let a chunk
//!   altered and resealed go unnoticed; a test shows it).
//!
//! A records chunk holds whole records and at most `chunk_bytes` bytes, unless one record alone
//! is larger (keys and values are bounded by the command limits, so never more than
//! [`MAX_CHUNK_LEN`]).
//!
//! **Receiving.** [`SnapshotBuilder`] takes the chunks in order and checks each one before
//! using it: its own checksum and declared length (against [`MAX_CHUNK_LEN`] before
//! allocating), its number, the header against the snapshot the core asked for, key order,
//! that every key is user data or well-formed metadata (sessions must decode, the applied
//! record must match the header), and at the end the trailer's counts and whole-stream
//! checksum. It writes the records into a new LevelDB `<data-dir>/kv_data.incoming` (and the
//! raw chunks into `<data-dir>/kv_snapshot.incoming`, so that this node can serve the same
//! image later), one chunk in memory at a time. Any error poisons the builder; the live
//! `kv_data` is never touched, and the leftovers are removed by the next builder or open.
//!
//! **Installing, crash-safe.** [`SnapshotBuilder::finish`] syncs the new database and returns a
//! [`StagedSnapshot`]. [`KvStateMachine::install`] then:
//! 1. writes the marker `<data-dir>/KV_INSTALL` naming the snapshot (temporary file, synced,
//!    renamed, directory synced): **the commit point**;
//! 2. renames `kv_data` to `kv_data.old` and `kv_data.incoming` to `kv_data`, and the incoming
//!    image over `kv_snapshot` (each rename fsyncs the data directory);
//! 3. reopens `kv_data`. The state machine is now the snapshot, with
//!    [`KvStateMachine::pending_install`] set: the caller must install the log part
//!    (`RaftStorage::install_snapshot`) and then call [`KvStateMachine::finish_install`], which
//!    removes the marker and `kv_data.old`. `NodeStorage::install_snapshot` does all of it.
//!
//! On open ([`recover`]): with no marker, an unfinished receive or a finished install's
//! leftovers are removed (the old state stays); with a marker, step 2 is completed (every step
//! is checked by what exists, so repeating it is harmless) and the install stays pending, so
//! that the log part is completed too. A crash at any point therefore leaves the old state or
//! the new one. Until the log part is done, `apply` is refused: the old log may still hold
//! entries that conflict with the installed state.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::ops::Bound;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use raft_core::{Index, SnapshotMeta, Term};
use rusty_leveldb::env::Env;
use rusty_leveldb::WriteBatch;

use crate::codec::{self, Reader};
use crate::command::{MAX_COMMAND_LEN, MAX_KEY_LEN};
use crate::error::{DecodeError, Error, Result};
use crate::ldb::{Ldb, StorageEnv};
use crate::state_machine::{
    decode_session, KvStateMachine, KEY_APPLIED, KV_DATA_DIR, SESSION_PREFIX, USER,
};

/// The chunk format version.
pub const SNAPSHOT_VERSION: u8 = 1;
/// Default target size of a chunk.
pub const DEFAULT_CHUNK_BYTES: usize = 1 << 20;
/// Largest stored key: a user key plus its prefix byte (metadata keys are shorter).
pub const MAX_RECORD_KEY: usize = MAX_KEY_LEN + 1;
/// Largest stored value: a session row with the largest cached result, and some framing.
pub const MAX_RECORD_VALUE: usize = MAX_COMMAND_LEN + 64;
/// Hard bound on one chunk, checked before anything is allocated for it.
pub const MAX_CHUNK_LEN: usize = FRAME_OVERHEAD + 4 + 8 + MAX_RECORD_KEY + MAX_RECORD_VALUE;

/// The image this node serves to followers.
pub const IMAGE_FILE: &str = "kv_snapshot";
const IMAGE_TMP: &str = "kv_snapshot.tmp";
/// Where a snapshot being received is written.
pub const INCOMING_DIR: &str = "kv_data.incoming";
const INCOMING_IMAGE: &str = "kv_snapshot.incoming";
const OLD_DIR: &str = "kv_data.old";
/// Present from the commit point of an install until its log part is done.
pub const INSTALL_MARKER: &str = "KV_INSTALL";
const MARKER_TMP: &str = "KV_INSTALL.tmp";

const FRAME_HEAD: usize = 1 + 1 + 8 + 4;
const FRAME_OVERHEAD: usize = FRAME_HEAD + 4;
const KIND_HEADER: u8 = 1;
const KIND_RECORDS: u8 = 2;
const KIND_TRAILER: u8 = 3;
const HEADER_LEN: usize = 24;
const TRAILER_LEN: usize = 20;
/// Smallest encoded record: two empty length-prefixed strings.
const MIN_RECORD: usize = 8;

/// What chunk 0 says about the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotHeader {
    pub applied_index: Index,
    pub applied_term: Term,
    /// The cluster the image comes from; 0 when not given.
    pub cluster_id: u64,
}

impl SnapshotHeader {
    pub fn meta(&self) -> SnapshotMeta {
        SnapshotMeta {
            index: self.applied_index,
            term: self.applied_term,
        }
    }
}

/// One decoded chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChunkBody {
    Header(SnapshotHeader),
    Records(Vec<(Bytes, Bytes)>),
    Trailer { chunks: u64, records: u64, crc: u32 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedChunk {
    pub seq: u64,
    pub body: ChunkBody,
}

fn frame(kind: u8, seq: u64, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(body.len() + FRAME_OVERHEAD);
    f.push(SNAPSHOT_VERSION);
    f.push(kind);
    codec::put_u64(&mut f, seq);
    f.extend_from_slice(&(body.len() as u32).to_le_bytes());
    f.extend_from_slice(body);
    codec::seal(&mut f);
    f
}

/// The part of a chunk the whole-stream checksum covers: all but the chunk's own CRC. Covering
/// the chunk CRCs too would make the stream checksum blind to a chunk altered and resealed
/// (CRC is linear: `crc(M || crc(M))` does not depend on `M`, whatever came before).
fn stream_covered(chunk: &[u8]) -> &[u8] {
    &chunk[..chunk.len().saturating_sub(4)]
}

fn frame_len(head: &[u8]) -> Result<usize, DecodeError> {
    if head.len() < FRAME_HEAD {
        return Err(DecodeError::Truncated {
            needed: FRAME_HEAD,
            have: head.len(),
        });
    }
    let body = u32::from_le_bytes([head[10], head[11], head[12], head[13]]) as usize;
    let total = body + FRAME_OVERHEAD;
    if total > MAX_CHUNK_LEN {
        return Err(DecodeError::TooLong {
            what: "snapshot chunk",
            len: total as u64,
            max: MAX_CHUNK_LEN as u64,
        });
    }
    Ok(total)
}

/// Decodes one chunk. Never panics; allocates at most in proportion to `data`.
pub fn decode_chunk(data: &[u8]) -> Result<DecodedChunk, DecodeError> {
    let total = frame_len(data)?;
    if data.len() != total {
        return Err(if data.len() < total {
            DecodeError::Truncated {
                needed: total,
                have: data.len(),
            }
        } else {
            DecodeError::TrailingBytes(data.len() - total)
        });
    }
    let body = codec::unseal(data)?;
    if body[0] != SNAPSHOT_VERSION {
        return Err(DecodeError::UnknownVersion(body[0]));
    }
    let kind = body[1];
    let mut r = Reader::new(Bytes::copy_from_slice(&body[2..]));
    let seq = r.u64()?;
    let len = r.u32()? as usize;
    let body = match kind {
        KIND_HEADER => {
            if len != HEADER_LEN {
                return Err(DecodeError::Invalid("snapshot header has the wrong length"));
            }
            ChunkBody::Header(SnapshotHeader {
                applied_index: r.u64()?,
                applied_term: r.u64()?,
                cluster_id: r.u64()?,
            })
        }
        KIND_TRAILER => {
            if len != TRAILER_LEN {
                return Err(DecodeError::Invalid(
                    "snapshot trailer has the wrong length",
                ));
            }
            ChunkBody::Trailer {
                chunks: r.u64()?,
                records: r.u64()?,
                crc: r.u32()?,
            }
        }
        KIND_RECORDS => {
            let count = r.u32()? as usize;
            if count == 0 {
                return Err(DecodeError::Invalid("snapshot records chunk is empty"));
            }
            if count > r.remaining() / MIN_RECORD {
                return Err(DecodeError::Invalid(
                    "snapshot chunk declares more records than it can hold",
                ));
            }
            let mut recs = Vec::with_capacity(count);
            for _ in 0..count {
                let k = r.bytes("snapshot key", MAX_RECORD_KEY)?;
                let v = r.bytes("snapshot value", MAX_RECORD_VALUE)?;
                recs.push((k, v));
            }
            ChunkBody::Records(recs)
        }
        tag => {
            return Err(DecodeError::UnknownTag {
                what: "snapshot chunk kind",
                tag,
            })
        }
    };
    r.finish()?;
    Ok(DecodedChunk { seq, body })
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Building and reading the image
// ---------------------------------------------------------------------------------------------

struct ImageWriter {
    out: Box<dyn Write>,
    path: PathBuf,
    chunk_bytes: usize,
    seq: u64,
    crc: crc32fast::Hasher,
    buf: Vec<u8>,
    in_buf: u32,
    records: u64,
}

impl ImageWriter {
    fn emit(&mut self, kind: u8, body: &[u8]) -> Result<()> {
        let f = frame(kind, self.seq, body);
        self.out.write_all(&f).map_err(|e| io_err(&self.path, e))?;
        self.crc.update(stream_covered(&f));
        self.seq += 1;
        Ok(())
    }

    fn flush_records(&mut self) -> Result<()> {
        if self.in_buf == 0 {
            return Ok(());
        }
        let mut body = Vec::with_capacity(self.buf.len() + 4);
        body.extend_from_slice(&self.in_buf.to_le_bytes());
        body.append(&mut self.buf);
        self.in_buf = 0;
        self.emit(KIND_RECORDS, &body)
    }

    fn record(&mut self, k: &[u8], v: &[u8]) -> Result<()> {
        if k.len() > MAX_RECORD_KEY || v.len() > MAX_RECORD_VALUE {
            return Err(Error::Corruption {
                path: self.path.clone(),
                index: None,
                detail: format!(
                    "stored record too large for a snapshot: key of {} bytes, value of {}",
                    k.len(),
                    v.len()
                ),
            });
        }
        let len = 8 + k.len() + v.len();
        if self.in_buf > 0 && FRAME_OVERHEAD + 4 + self.buf.len() + len > self.chunk_bytes {
            self.flush_records()?;
        }
        codec::put_bytes(&mut self.buf, k);
        codec::put_bytes(&mut self.buf, v);
        self.in_buf += 1;
        self.records += 1;
        Ok(())
    }
}

/// An image being written in steps, consistent at the applied index where it began: keys are
/// scanned in order, a few thousand per step, and `apply` keeps the value at that index of
/// every key after the scan's cursor before overwriting it. A step writes, for each key in its
/// range, the kept value if there is one (`None`: the key did not exist then) and the stored
/// value otherwise, so the image never sees a write made after it began.
pub(crate) struct ImageInProgress {
    writer: ImageWriter,
    meta: SnapshotMeta,
    /// The last key written to the image; the keys after it are still to come.
    cursor: Option<Vec<u8>>,
    /// The value, at the image's index, of keys after the cursor written since it began.
    before: BTreeMap<Vec<u8>, Option<Bytes>>,
}

impl ImageInProgress {
    fn is_ahead(&self, key: &[u8]) -> bool {
        self.cursor.as_deref().is_none_or(|c| key > c)
    }
}

/// Keys scanned per step of [`KvStateMachine::build_snapshot`]'s loop: one step at a time
/// bounds how long a caller that interleaves steps with applies blocks them.
pub const DEFAULT_SNAPSHOT_STEP: usize = 4096;

impl KvStateMachine {
    /// Writes an image of the state machine at its applied index to `<data-dir>/kv_snapshot`,
    /// cut into chunks of about `chunk_bytes` (see the module docs), and makes it durable,
    /// together with everything applied so far. Blocks the owner for one scan of the database;
    /// [`KvStateMachine::start_snapshot`] and [`KvStateMachine::snapshot_step`] do the same in
    /// steps between applies. Returns the snapshot's index and term: the point up to which the
    /// log may now be compacted.
    pub fn build_snapshot(&mut self, cluster_id: u64, chunk_bytes: usize) -> Result<SnapshotMeta> {
        self.start_snapshot(cluster_id, chunk_bytes)?;
        loop {
            if let Some(meta) = self.snapshot_step(DEFAULT_SNAPSHOT_STEP)? {
                return Ok(meta);
            }
        }
    }

    /// Begins an image of the state machine at its applied index, to be written by
    /// [`KvStateMachine::snapshot_step`] calls interleaved with `apply` (reads and applies go on
    /// meanwhile; the image stays exactly at this index). Makes everything applied so far
    /// durable first, so that once the image is finished the log may be compacted up to it.
    /// Returns the snapshot the image will be.
    pub fn start_snapshot(&mut self, cluster_id: u64, chunk_bytes: usize) -> Result<SnapshotMeta> {
        if let Some(m) = self.pending_install() {
            return Err(Error::InvalidRequest(format!(
                "cannot build a snapshot while the install of {}/{} is unfinished",
                m.index, m.term
            )));
        }
        if let Some(img) = &self.image_in_progress {
            return Err(Error::InvalidRequest(format!(
                "a snapshot at {}/{} is being built already",
                img.meta.index, img.meta.term
            )));
        }
        self.sync()?;
        let tmp = self.data_dir().join(IMAGE_TMP);
        let out = self
            .env()
            .files()
            .open_writable_file(&tmp)
            .map_err(|e| io_err(&tmp, e))?;
        let header = SnapshotHeader {
            applied_index: self.applied_index(),
            applied_term: self.applied_term(),
            cluster_id,
        };
        let mut writer = ImageWriter {
            out,
            path: tmp,
            chunk_bytes: chunk_bytes.clamp(64, MAX_CHUNK_LEN),
            seq: 0,
            crc: crc32fast::Hasher::new(),
            buf: Vec::new(),
            in_buf: 0,
            records: 0,
        };
        let mut hb = Vec::with_capacity(HEADER_LEN);
        codec::put_u64(&mut hb, header.applied_index);
        codec::put_u64(&mut hb, header.applied_term);
        codec::put_u64(&mut hb, header.cluster_id);
        writer.emit(KIND_HEADER, &hb)?;
        self.image_in_progress = Some(Box::new(ImageInProgress {
            writer,
            meta: header.meta(),
            cursor: None,
            before: BTreeMap::new(),
        }));
        Ok(header.meta())
    }

    /// Whether an image begun with [`KvStateMachine::start_snapshot`] is still being written.
    pub fn snapshot_in_progress(&self) -> Option<SnapshotMeta> {
        self.image_in_progress.as_ref().map(|img| img.meta)
    }

    /// Writes the next `max_keys` keys of the image in progress. Returns its snapshot once the
    /// image is complete and durable (`<data-dir>/kv_snapshot`), `None` while keys remain or if
    /// none is in progress. After an error the image is abandoned.
    pub fn snapshot_step(&mut self, max_keys: usize) -> Result<Option<SnapshotMeta>> {
        let Some(mut img) = self.image_in_progress.take() else {
            return Ok(None);
        };
        self.check_poison()?;
        let max_keys = max_keys.max(1);
        let start = img.cursor.clone().unwrap_or_default();
        let mut scanned: Vec<(Vec<u8>, Bytes)> = Vec::new();
        let mut at_end = true;
        self.ldb().scan_from(&start, |k, v| {
            if img.cursor.as_deref() == Some(k) {
                return Ok(true);
            }
            if scanned.len() == max_keys {
                at_end = false;
                return Ok(false);
            }
            scanned.push((k.to_vec(), v));
            Ok(true)
        })?;
        let upper = match (at_end, scanned.last()) {
            (false, Some((k, _))) => Bound::Included(k.clone()),
            _ => Bound::Unbounded,
        };
        let lower = match &img.cursor {
            Some(c) => Bound::Excluded(c.clone()),
            None => Bound::Unbounded,
        };
        let kept: Vec<(Vec<u8>, Option<Bytes>)> = img
            .before
            .range((lower, upper.clone()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // Merge the stored keys with the kept ones (a kept value wins: it is the one at the
        // image's index; a kept key missing from the scan was deleted since).
        let mut kept_iter = kept.into_iter().peekable();
        for (k, v) in scanned {
            while let Some((kk, kv)) = kept_iter.next_if(|(kk, _)| *kk < k) {
                if let Some(kv) = kv {
                    img.writer.record(&kk, &kv)?;
                }
            }
            match kept_iter.next_if(|(kk, _)| *kk == k) {
                Some((_, Some(kv))) => img.writer.record(&k, &kv)?,
                Some((_, None)) => {}
                None => img.writer.record(&k, &v)?,
            }
        }
        for (kk, kv) in kept_iter {
            if let Some(kv) = kv {
                img.writer.record(&kk, &kv)?;
            }
        }
        match upper {
            Bound::Included(k) => {
                img.before = img.before.split_off(&k);
                img.before.remove(&k);
                img.cursor = Some(k);
                self.image_in_progress = Some(img);
                Ok(None)
            }
            _ => self.finish_image(*img).map(Some),
        }
    }

    fn finish_image(&mut self, img: ImageInProgress) -> Result<SnapshotMeta> {
        let ImageInProgress {
            writer: mut w,
            meta,
            ..
        } = img;
        w.flush_records()?;
        let mut tb = Vec::with_capacity(TRAILER_LEN);
        codec::put_u64(&mut tb, w.seq);
        codec::put_u64(&mut tb, w.records);
        tb.extend_from_slice(&w.crc.clone().finalize().to_le_bytes());
        w.emit(KIND_TRAILER, &tb)?;
        let tmp = w.path.clone();
        w.out.flush().map_err(|e| io_err(&tmp, e))?;
        drop(w);
        let image = self.data_dir().join(IMAGE_FILE);
        self.env()
            .files()
            .rename(&tmp, &image)
            .map_err(|e| io_err(&image, e))?;
        Ok(meta)
    }

    /// Called by `apply` with every key its batch is about to write, while an image is in
    /// progress: keeps the current value of each key the image has not reached yet, the first
    /// time it is overwritten.
    pub(crate) fn keep_images_before_overwriting(
        &mut self,
        keys: impl Iterator<Item = Vec<u8>>,
    ) -> Result<()> {
        let Some(mut img) = self.image_in_progress.take() else {
            return Ok(());
        };
        let mut result = Ok(());
        for k in keys {
            if img.is_ahead(&k) && !img.before.contains_key(&k) {
                match self.ldb().get(&k) {
                    Ok(v) => {
                        img.before.insert(k, v);
                    }
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
        }
        // A failed read abandons the image (the caller's apply fails and poisons anyway).
        if result.is_ok() {
            self.image_in_progress = Some(img);
        }
        result
    }

    /// Opens the last image built or installed in this data directory, for streaming.
    pub fn snapshot_reader(&self) -> Result<SnapshotReader> {
        SnapshotReader::open(self.data_dir(), self.env())
    }
}

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
        self.header
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

// ---------------------------------------------------------------------------------------------
// Receiving
// ---------------------------------------------------------------------------------------------

/// Receives a snapshot's chunks in order into `<data-dir>/kv_data.incoming`. See the module docs.
pub struct SnapshotBuilder {
    files: Box<dyn Env>,
    env: StorageEnv,
    data_dir: PathBuf,
    dir: PathBuf,
    expected: SnapshotMeta,
    cluster_id: u64,
    db: Option<Ldb>,
    image: Option<Box<dyn Write>>,
    next_seq: u64,
    crc: crc32fast::Hasher,
    records: u64,
    last_key: Option<Bytes>,
    saw_applied: bool,
    complete: bool,
    failed: Option<String>,
}

impl SnapshotBuilder {
    /// Starts receiving a snapshot at or after `at_least` (the one the core asked for; the
    /// sender may serve a newer one, which the core accepts too). `cluster_id` (0: unchecked)
    /// must match the image's if the image names one. Removes the leftovers of an earlier
    /// unfinished receive.
    pub fn new(
        data_dir: &Path,
        env: &StorageEnv,
        at_least: SnapshotMeta,
        cluster_id: u64,
    ) -> Result<SnapshotBuilder> {
        let files = env.files();
        let marker = data_dir.join(INSTALL_MARKER);
        if exists(files.as_ref(), &marker)? {
            return Err(Error::InvalidRequest(format!(
                "{}: an earlier snapshot install is unfinished; reopen the storage to finish it",
                marker.display()
            )));
        }
        let dir = data_dir.join(INCOMING_DIR);
        remove_dir(files.as_ref(), &dir)?;
        let image_path = data_dir.join(INCOMING_IMAGE);
        let db = Ldb::open(&dir, env)?;
        let image = files
            .open_writable_file(&image_path)
            .map_err(|e| io_err(&image_path, e))?;
        Ok(SnapshotBuilder {
            files,
            env: env.clone(),
            data_dir: data_dir.to_path_buf(),
            dir,
            expected: at_least,
            cluster_id,
            db: Some(db),
            image: Some(image),
            next_seq: 0,
            crc: crc32fast::Hasher::new(),
            records: 0,
            last_key: None,
            saw_applied: false,
            complete: false,
            failed: None,
        })
    }

    /// Chunks accepted so far.
    pub fn chunks(&self) -> u64 {
        self.next_seq
    }

    /// Whether the trailer has been accepted.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    fn bad(&self, detail: String) -> Error {
        Error::Corruption {
            path: self.dir.clone(),
            index: None,
            detail: format!("snapshot chunk {}: {detail}", self.next_seq),
        }
    }

    /// Checks and stores the next chunk. After an error the builder refuses everything: start
    /// again with a new one.
    pub fn push(&mut self, chunk: &[u8]) -> Result<()> {
        if let Some(f) = &self.failed {
            return Err(Error::InvalidRequest(format!(
                "snapshot receive into {} failed earlier ({f}); start again",
                self.dir.display()
            )));
        }
        let r = self.push_inner(chunk);
        if let Err(e) = &r {
            self.failed = Some(e.to_string());
        }
        r
    }

    fn push_inner(&mut self, chunk: &[u8]) -> Result<()> {
        if self.complete {
            return Err(self.bad("chunk after the trailer".into()));
        }
        let c = decode_chunk(chunk).map_err(|e| self.bad(e.to_string()))?;
        if c.seq != self.next_seq {
            return Err(self.bad(format!(
                "out of order: chunk {} received, {} expected",
                c.seq, self.next_seq
            )));
        }
        match c.body {
            ChunkBody::Header(h) => {
                if c.seq != 0 {
                    return Err(self.bad("a second header".into()));
                }
                let (got, asked) = (h.meta(), self.expected);
                if got.index < asked.index || (got.index == asked.index && got.term != asked.term) {
                    return Err(self.bad(format!(
                        "the image is snapshot {}/{}, but {}/{} or later was asked for",
                        got.index, got.term, asked.index, asked.term
                    )));
                }
                // From here on, the records must describe the snapshot the header names.
                self.expected = got;
                if h.cluster_id != 0 && self.cluster_id != 0 && h.cluster_id != self.cluster_id {
                    return Err(self.bad(format!(
                        "the image comes from cluster {}, this node is in cluster {}",
                        h.cluster_id, self.cluster_id
                    )));
                }
            }
            _ if c.seq == 0 => {
                return Err(self.bad("the stream does not start with a header".into()))
            }
            ChunkBody::Records(recs) => {
                let mut batch = WriteBatch::default();
                for (k, v) in recs {
                    self.check_record(&k, &v)?;
                    batch.put(&k, &v);
                    self.last_key = Some(k);
                    self.records += 1;
                }
                match self.db.as_mut() {
                    Some(db) => db.write(batch, false)?,
                    None => return Err(self.bad("the builder is closed".into())),
                }
            }
            ChunkBody::Trailer {
                chunks,
                records,
                crc,
            } => {
                let computed = self.crc.clone().finalize();
                if chunks != self.next_seq || records != self.records || crc != computed {
                    return Err(self.bad(format!(
                        "trailer does not match the stream: it declares {chunks} chunks, \
                         {records} records, checksum {crc:#010x}; received {} chunks, {} \
                         records, checksum {computed:#010x}",
                        self.next_seq, self.records
                    )));
                }
                if self.expected.index > 0 && !self.saw_applied {
                    return Err(self.bad("the image has no applied-index record".into()));
                }
                self.complete = true;
            }
        }
        let path = self.data_dir.join(INCOMING_IMAGE);
        match self.image.as_mut() {
            Some(w) => w.write_all(chunk).map_err(|e| io_err(&path, e))?,
            None => return Err(self.bad("the builder is closed".into())),
        }
        self.crc.update(stream_covered(chunk));
        self.next_seq += 1;
        Ok(())
    }

    fn check_record(&mut self, k: &Bytes, v: &Bytes) -> Result<()> {
        if let Some(prev) = &self.last_key {
            if k <= prev {
                return Err(self.bad(format!(
                    "keys out of order: {:02x?} after {:02x?}",
                    &k[..k.len().min(16)],
                    &prev[..prev.len().min(16)]
                )));
            }
        }
        if k.first() == Some(&USER) {
            return Ok(());
        }
        if k.as_ref() == KEY_APPLIED {
            let decoded = codec::unseal(v).and_then(|body| {
                let mut r = Reader::new(Bytes::copy_from_slice(body));
                let _version = r.u8()?;
                let (i, t) = (r.u64()?, r.u64()?);
                r.finish()?;
                Ok((i, t))
            });
            return match decoded {
                Ok((i, t)) if i == self.expected.index && t == self.expected.term => {
                    self.saw_applied = true;
                    Ok(())
                }
                Ok((i, t)) => Err(self.bad(format!(
                    "the applied-index record says {i}/{t}, the header {}/{}",
                    self.expected.index, self.expected.term
                ))),
                Err(e) => Err(self.bad(format!("applied-index record: {e}"))),
            };
        }
        if k.len() == SESSION_PREFIX.len() + 8 && k.starts_with(SESSION_PREFIX) {
            return decode_session(v.clone())
                .map(|_| ())
                .map_err(|e| self.bad(format!("session record: {e}")));
        }
        Err(self.bad(format!("unknown key {:02x?}", &k[..k.len().min(16)])))
    }

    /// Ends the receive: requires the trailer, makes the new database durable and closes it.
    /// On error the incoming data is removed.
    pub fn finish(mut self) -> Result<StagedSnapshot> {
        let r = self.finish_inner();
        if r.is_err() {
            self.db = None;
            self.image = None;
            let _ = remove_dir(self.files.as_ref(), &self.dir);
            let _ = remove_file(self.files.as_ref(), &self.data_dir.join(INCOMING_IMAGE));
        }
        r
    }

    fn finish_inner(&mut self) -> Result<StagedSnapshot> {
        if let Some(f) = &self.failed {
            return Err(Error::InvalidRequest(format!(
                "snapshot receive into {} failed earlier ({f})",
                self.dir.display()
            )));
        }
        if !self.complete {
            return Err(self.bad(format!(
                "the stream ended after {} chunks without a trailer",
                self.next_seq
            )));
        }
        if let Some(mut db) = self.db.take() {
            db.flush()?;
        }
        if let Some(mut w) = self.image.take() {
            let path = self.data_dir.join(INCOMING_IMAGE);
            w.flush().map_err(|e| io_err(&path, e))?;
        }
        Ok(StagedSnapshot {
            data_dir: self.data_dir.clone(),
            env: self.env.clone(),
            meta: self.expected,
        })
    }
}

/// A received, verified and durable snapshot in `<data-dir>/kv_data.incoming`, ready for
/// [`KvStateMachine::install`].
pub struct StagedSnapshot {
    data_dir: PathBuf,
    env: StorageEnv,
    meta: SnapshotMeta,
}

impl StagedSnapshot {
    pub fn meta(&self) -> SnapshotMeta {
        self.meta
    }

    /// Removes the received data without installing it (the core no longer wants it).
    pub fn discard(self) -> Result<()> {
        let files = self.env.files();
        remove_dir(files.as_ref(), &self.data_dir.join(INCOMING_DIR))?;
        remove_file(files.as_ref(), &self.data_dir.join(INCOMING_IMAGE))
    }
}

// ---------------------------------------------------------------------------------------------
// Installing
// ---------------------------------------------------------------------------------------------

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
        write_marker(files.as_ref(), &dir, staged.meta)?;
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

fn exists(files: &dyn Env, p: &Path) -> Result<bool> {
    files.exists(p).map_err(|e| io_err(p, e))
}

fn remove_dir(files: &dyn Env, p: &Path) -> Result<()> {
    if exists(files, p)? {
        files.rmdir(p).map_err(|e| io_err(p, e))?;
    }
    Ok(())
}

fn remove_file(files: &dyn Env, p: &Path) -> Result<()> {
    if exists(files, p)? {
        files.delete(p).map_err(|e| io_err(p, e))?;
    }
    Ok(())
}

fn write_marker(files: &dyn Env, dir: &Path, meta: SnapshotMeta) -> Result<()> {
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
        Ok(SnapshotMeta { index, term })
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frames_round_trip_and_damage_is_refused() {
        let mut body = Vec::new();
        body.extend_from_slice(&2u32.to_le_bytes());
        for (k, v) in [(&b"\x01a"[..], &b"1"[..]), (b"\x01b", b"")] {
            codec::put_bytes(&mut body, k);
            codec::put_bytes(&mut body, v);
        }
        let f = frame(KIND_RECORDS, 3, &body);
        let c = decode_chunk(&f).unwrap();
        assert_eq!(c.seq, 3);
        assert_eq!(
            c.body,
            ChunkBody::Records(vec![
                (Bytes::from_static(b"\x01a"), Bytes::from_static(b"1")),
                (Bytes::from_static(b"\x01b"), Bytes::new()),
            ])
        );
        for i in 0..f.len() {
            let mut g = f.clone();
            g[i] ^= 0x10;
            assert!(decode_chunk(&g).is_err(), "flipped byte {i} accepted");
        }
        assert!(decode_chunk(&f[..f.len() - 1]).is_err());
        let mut long = f.clone();
        long.push(0);
        assert!(decode_chunk(&long).is_err());
    }

    #[test]
    fn declared_lengths_are_checked_before_allocating() {
        // A frame head declaring a 4 GiB body is refused from its 14 bytes.
        let mut head = vec![SNAPSHOT_VERSION, KIND_RECORDS];
        head.extend_from_slice(&0u64.to_le_bytes());
        head.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode_chunk(&head),
            Err(DecodeError::TooLong { .. })
        ));
        // A records chunk declaring a billion records in a few bytes.
        let mut body = Vec::new();
        body.extend_from_slice(&1_000_000_000u32.to_le_bytes());
        body.extend_from_slice(&[0; 16]);
        let f = frame(KIND_RECORDS, 1, &body);
        assert!(matches!(decode_chunk(&f), Err(DecodeError::Invalid(_))));
    }

    proptest! {
        #[test]
        fn arbitrary_chunk_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode_chunk(&data);
        }

        /// Arbitrary bodies inside a valid frame reach the body parser.
        #[test]
        fn arbitrary_bodies_never_panic(kind in 0u8..5, seq in any::<u64>(), body in proptest::collection::vec(any::<u8>(), 0..400)) {
            let f = frame(kind, seq, &body);
            if let Ok(c) = decode_chunk(&f) {
                prop_assert_eq!(c.seq, seq);
            }
        }
    }
}
