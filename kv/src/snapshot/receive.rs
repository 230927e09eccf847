//! Receiving a snapshot: every chunk checked before it is used, the records written into a new
//! database beside the live one, and the result staged for install.

use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use raft_core::SnapshotMeta;
use rusty_leveldb::env::Env;
use rusty_leveldb::WriteBatch;

use super::format::{decode_chunk, stream_covered, ChunkBody, SnapshotHeader};
use super::install::{exists, remove_dir, remove_file};
use super::{io_err, INCOMING_DIR, INCOMING_IMAGE, INSTALL_MARKER};
use crate::error::{Error, Result};
use crate::ldb::{Ldb, StorageEnv};
use crate::state_machine::{
    decode_applied, decode_clock, decode_member_addrs, decode_session, KeyCounts, Record, EXPIRY,
    HASHED, KEY_APPLIED, KEY_CLOCK, KEY_COUNTS, KEY_DESCRIPTOR, KEY_LAYOUT, KEY_MEMBERS,
    LAYOUT_RECORDS, SESSION_PREFIX, USER,
};

/// Receives a snapshot's chunks in order into `<data-dir>/kv_data.incoming`. See the module docs.
pub struct SnapshotReceiver {
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
    saw_applied_record: bool,
    complete: bool,
    failed: Option<String>,
}

impl SnapshotReceiver {
    /// Starts receiving a snapshot at or after `at_least` (the one the core asked for; the
    /// sender may serve a newer one, which the core accepts too). `cluster_id` (0: unchecked)
    /// must match the image's if the image names one. Removes the leftovers of an earlier
    /// unfinished receive.
    pub fn new(
        data_dir: &Path,
        env: &StorageEnv,
        at_least: SnapshotMeta,
        cluster_id: u64,
    ) -> Result<SnapshotReceiver> {
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
        Ok(SnapshotReceiver {
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
            saw_applied_record: false,
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

    /// Checks and stores the next chunk. After an error the receiver refuses everything: start
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
            ChunkBody::Header(h) if c.seq == 0 => self.accept_header(h)?,
            ChunkBody::Header(_) => return Err(self.bad("a second header".into())),
            _ if c.seq == 0 => {
                return Err(self.bad("the stream does not start with a header".into()))
            }
            ChunkBody::Records(recs) => self.accept_records(recs)?,
            ChunkBody::Trailer {
                chunks,
                records,
                crc,
            } => self.accept_trailer(chunks, records, crc)?,
        }
        let path = self.data_dir.join(INCOMING_IMAGE);
        match self.image.as_mut() {
            Some(w) => w.write_all(chunk).map_err(|e| io_err(&path, e))?,
            None => return Err(self.bad("the receiver is closed".into())),
        }
        self.crc.update(stream_covered(chunk));
        self.next_seq += 1;
        Ok(())
    }

    fn accept_header(&mut self, h: SnapshotHeader) -> Result<()> {
        let (got, asked) = (h.meta(), &self.expected);
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
                crate::ClusterIdText(h.cluster_id),
                crate::ClusterIdText(self.cluster_id)
            )));
        }
        Ok(())
    }

    fn accept_records(&mut self, recs: Vec<(Bytes, Bytes)>) -> Result<()> {
        let mut batch = WriteBatch::default();
        for (k, v) in recs {
            self.check_record(&k, &v)?;
            batch.put(&k, &v);
            self.last_key = Some(k);
            self.records += 1;
        }
        match self.db.as_mut() {
            Some(db) => db.write(batch, false),
            None => Err(self.bad("the receiver is closed".into())),
        }
    }

    fn accept_trailer(&mut self, chunks: u64, records: u64, crc: u32) -> Result<()> {
        let computed = self.crc.clone().finalize();
        if chunks != self.next_seq || records != self.records || crc != computed {
            return Err(self.bad(format!(
                "trailer does not match the stream: it declares {chunks} chunks, {records} \
                 records, checksum {crc:#010x}; received {} chunks, {} records, checksum \
                 {computed:#010x}",
                self.next_seq, self.records
            )));
        }
        if self.expected.index > 0 && !self.saw_applied_record {
            return Err(self.bad("the image has no applied-index record".into()));
        }
        self.complete = true;
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
        match k.first() {
            Some(&USER) => {
                return Record::decode(v)
                    .map(|_| ())
                    .map_err(|e| self.bad(format!("value record: {e}")))
            }
            Some(&EXPIRY) | Some(&HASHED) if k.len() >= 9 && v.is_empty() => return Ok(()),
            _ => {}
        }
        if k.as_ref() == KEY_LAYOUT {
            return if v.as_ref() == [LAYOUT_RECORDS] {
                Ok(())
            } else {
                Err(self.bad(format!("unknown key layout {v:02x?}")))
            };
        }
        if k.as_ref() == KEY_COUNTS {
            return KeyCounts::decode(v)
                .map(|_| ())
                .map_err(|e| self.bad(format!("key counts: {e}")));
        }
        if k.as_ref() == KEY_CLOCK {
            return decode_clock(v)
                .map(|_| ())
                .map_err(|e| self.bad(format!("log time: {e}")));
        }
        if k.as_ref() == KEY_APPLIED {
            let decoded = decode_applied(v);
            return match decoded {
                Ok((i, t, m))
                    if i == self.expected.index
                        && t == self.expected.term
                        && m == self.expected.membership =>
                {
                    self.saw_applied_record = true;
                    Ok(())
                }
                Ok((_, _, m)) if m != self.expected.membership => Err(self.bad(format!(
                    "the applied record's configuration {m:?} differs from the header's {:?}",
                    self.expected.membership
                ))),
                Ok((i, t, _)) => Err(self.bad(format!(
                    "the applied-index record says {i}/{t}, the header {}/{}",
                    self.expected.index, self.expected.term
                ))),
                Err(e) => Err(self.bad(format!("applied-index record: {e}"))),
            };
        }
        if let Some(valid) = crate::state_machine::check_watch_row(k, v) {
            return if valid {
                Ok(())
            } else {
                Err(self.bad(format!("watch row {:02x?} does not decode", k.as_ref())))
            };
        }
        if k.as_ref() == KEY_DESCRIPTOR {
            return match crate::ranges::RangeDescriptor::decode(v) {
                Ok(d) if d.id == crate::ranges::FIRST_RANGE => Ok(()),
                Ok(d) => Err(self.bad(format!("the image describes range {}", d.id))),
                Err(e) => Err(self.bad(format!("range descriptor: {e}"))),
            };
        }
        if k.as_ref() == KEY_MEMBERS {
            return decode_member_addrs(v)
                .map(|_| ())
                .map_err(|e| self.bad(format!("member addresses record: {e}")));
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
            meta: self.expected.clone(),
        })
    }
}

/// A received, verified and durable snapshot in `<data-dir>/kv_data.incoming`, ready for
/// [`KvStateMachine::install`].
pub struct StagedSnapshot {
    pub(super) data_dir: PathBuf,
    pub(super) env: StorageEnv,
    pub(super) meta: SnapshotMeta,
}

impl StagedSnapshot {
    pub fn meta(&self) -> SnapshotMeta {
        self.meta.clone()
    }

    /// Removes the received data without installing it (the core no longer wants it).
    pub fn discard(self) -> Result<()> {
        let files = self.env.files();
        remove_dir(files.as_ref(), &self.data_dir.join(INCOMING_DIR))?;
        remove_file(files.as_ref(), &self.data_dir.join(INCOMING_IMAGE))
    }
}
