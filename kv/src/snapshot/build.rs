//! Writing an image of the state machine in steps between applies (a fuzzy checkpoint with
//! before-images; see the module docs of [`crate::snapshot`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::ops::Bound;
use std::path::PathBuf;

use bytes::Bytes;
use raft_core::SnapshotMeta;

use super::format::{frame, stream_covered, SnapshotHeader};
use super::read::SnapshotReader;
use super::{
    io_err, FRAME_OVERHEAD, IMAGE_FILE, IMAGE_TMP, KIND_HEADER, KIND_RECORDS, KIND_TRAILER,
    MAX_CHUNK_LEN, MAX_RECORD_KEY, MAX_RECORD_VALUE, TRAILER_LEN,
};
use crate::codec;
use crate::error::{Error, Result};
use crate::state_machine::KvStateMachine;

/// A key and its value as the database holds them.
type StoredRecord = (Vec<u8>, Bytes);

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

    /// Writes the stored keys merged with the kept ones, in key order. A kept value wins: it is
    /// the one at the image's index; a kept `None` means the key did not exist then, and a kept
    /// key missing from the scan was deleted since.
    fn write_merged(
        &mut self,
        scanned: Vec<StoredRecord>,
        kept: Vec<(Vec<u8>, Option<Bytes>)>,
    ) -> Result<()> {
        let mut kept_iter = kept.into_iter().peekable();
        for (k, v) in scanned {
            while let Some((kk, kv)) = kept_iter.next_if(|(kk, _)| *kk < k) {
                if let Some(kv) = kv {
                    self.writer.record(&kk, &kv)?;
                }
            }
            match kept_iter.next_if(|(kk, _)| *kk == k) {
                Some((_, Some(kv))) => self.writer.record(&k, &kv)?,
                Some((_, None)) => {}
                None => self.writer.record(&k, &v)?,
            }
        }
        for (kk, kv) in kept_iter {
            if let Some(kv) = kv {
                self.writer.record(&kk, &kv)?;
            }
        }
        Ok(())
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
        self.check_whole_directory("build a snapshot image")?;
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
            membership: self.applied_membership().clone(),
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
        writer.emit(KIND_HEADER, &header.encode())?;
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
        self.image_in_progress.as_ref().map(|img| img.meta.clone())
    }

    /// Writes the next `max_keys` keys of the image in progress. Returns its snapshot once the
    /// image is complete and durable (`<data-dir>/kv_snapshot`), `None` while keys remain or if
    /// none is in progress. After an error the image is abandoned.
    pub fn snapshot_step(&mut self, max_keys: usize) -> Result<Option<SnapshotMeta>> {
        let Some(mut img) = self.image_in_progress.take() else {
            return Ok(None);
        };
        self.check_poison()?;
        let (scanned, upper) = self.scan_after_cursor(&img, max_keys.max(1))?;
        let lower = match &img.cursor {
            Some(c) => Bound::Excluded(c.clone()),
            None => Bound::Unbounded,
        };
        let kept: Vec<(Vec<u8>, Option<Bytes>)> = img
            .before
            .range((lower, upper.clone()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        img.write_merged(scanned, kept)?;
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

    /// The next stored keys after the image's cursor, at most `max_keys`, and the upper bound of
    /// the range they cover (unbounded once the scan reached the end of the key space).
    fn scan_after_cursor(
        &mut self,
        img: &ImageInProgress,
        max_keys: usize,
    ) -> Result<(Vec<StoredRecord>, Bound<Vec<u8>>)> {
        let start = img.cursor.clone().unwrap_or_default();
        let mut scanned: Vec<StoredRecord> = Vec::new();
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
        Ok((scanned, upper))
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
