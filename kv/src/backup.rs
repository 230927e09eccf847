//! Backup files: a snapshot image of a live cluster, kept outside it (`kvstore backup`), and the
//! seeding of a new cluster's data directories from one (`kvstore restore`, [`restore`]).
//!
//! **Layout.** A backup file is
//! * `magic "KVBACKUP" | format version: u32` (12 bytes);
//! * the image's chunks exactly as a node serves them to a follower ([`crate::snapshot`]): the
//!   header chunk (index, term, cluster id, configuration), the records chunks (the whole
//!   `kv_data` key space in key order: user data, sessions, the applied record and the
//!   members' addresses), the trailer chunk (counts and a checksum over the stream);
//! * an end record `tag 'E' | file bytes before it: u64 | crc32 of those bytes: u32 | crc32`.
//!
//! Reusing the image's framing means a backup is checked by the same rules as a transfer
//! (each chunk's own CRC, numbering, key order, the trailer's counts and stream checksum),
//! and a node serves one with the code that serves followers. The end record adds what a file
//! needs that a connection does not: proof that nothing was appended or cut after the image
//! (a file cut right after the trailer chunk would otherwise look complete), and one checksum
//! of the whole file to print and compare.
//!
//! Every check names the byte offset and the chunk where it failed. Reading never panics and
//! allocates at most one chunk ([`crate::snapshot::MAX_CHUNK_LEN`]) at a time, whatever the
//! input.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Write};

use bytes::Bytes;
use raft_core::NodeId;

use crate::members::{MemberAddrs, MemberTable};
use crate::snapshot::format::{frame_len, stream_covered};
use crate::snapshot::{decode_chunk, ChunkBody, SnapshotHeader, FRAME_HEAD};
use crate::state_machine::{decode_member_addrs, KEY_MEMBERS, USER};

pub mod restore;

/// The first bytes of every backup file.
pub const BACKUP_MAGIC: &[u8; 8] = b"KVBACKUP";
/// The layout this version writes and reads.
pub const BACKUP_FORMAT: u32 = 1;
const PREAMBLE_LEN: usize = 12;
const END_TAG: u8 = b'E';
const END_LEN: usize = 1 + 8 + 4 + 4;

/// Why a backup file (or stream) is refused: what is wrong, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupError {
    /// Bytes of the file before the part found wrong.
    pub offset: u64,
    pub problem: String,
}

impl fmt::Display for BackupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: {}", self.offset, self.problem)
    }
}

impl std::error::Error for BackupError {}

/// What a complete backup holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupSummary {
    pub format: u32,
    /// Index, term, cluster id and configuration of the image.
    pub header: SnapshotHeader,
    /// Every member's addresses, as the image records them.
    pub addrs: BTreeMap<NodeId, MemberAddrs>,
    pub chunks: u64,
    /// Rows of the key space (user data, its index rows, sessions, metadata).
    pub records: u64,
    /// User keys, and the bytes of their keys and stored values.
    pub keys: u64,
    pub key_bytes: u64,
    /// The whole file's size and the checksum its end record carries.
    pub file_bytes: u64,
    pub crc: u32,
}

impl BackupSummary {
    /// The configuration with its addresses.
    pub fn members(&self) -> MemberTable {
        MemberTable {
            membership: self.header.membership.clone(),
            addrs: self.addrs.clone(),
        }
    }
}

/// Checks an image's chunks in order, as a receiver would, and sums up what they hold.
#[derive(Default)]
struct ImageCheck {
    next_seq: u64,
    header: Option<SnapshotHeader>,
    stream_crc: crc32fast::Hasher,
    records: u64,
    keys: u64,
    key_bytes: u64,
    last_key: Option<Bytes>,
    addrs: BTreeMap<NodeId, MemberAddrs>,
    complete: bool,
}

impl ImageCheck {
    fn check(&mut self, chunk: &[u8]) -> Result<(), String> {
        let seq = self.next_seq;
        if self.complete {
            return Err(format!("a chunk after the image's trailer (chunk {seq})"));
        }
        let decoded = decode_chunk(chunk).map_err(|e| format!("chunk {seq} is damaged: {e}"))?;
        if decoded.seq != seq {
            return Err(format!(
                "chunk {seq} is numbered {} (chunks missing or out of order)",
                decoded.seq
            ));
        }
        match (seq, decoded.body) {
            (0, ChunkBody::Header(h)) => self.header = Some(h),
            (0, _) => return Err("the image does not start with its header chunk".into()),
            (_, ChunkBody::Header(_)) => return Err(format!("chunk {seq} is a second header")),
            (_, ChunkBody::Records(records)) => self.records_chunk(seq, records)?,
            (
                _,
                ChunkBody::Trailer {
                    chunks,
                    records,
                    crc,
                },
            ) => {
                let computed = self.stream_crc.clone().finalize();
                if (chunks, records, crc) != (seq, self.records, computed) {
                    return Err(format!(
                        "the trailer (chunk {seq}) says {chunks} chunks, {records} records, \
                         checksum {crc:08x}; the image holds {seq} chunks, {} records, \
                         checksum {computed:08x}",
                        self.records
                    ));
                }
                self.complete = true;
            }
        }
        self.stream_crc.update(stream_covered(chunk));
        self.next_seq += 1;
        Ok(())
    }

    fn records_chunk(&mut self, seq: u64, records: Vec<(Bytes, Bytes)>) -> Result<(), String> {
        for (key, value) in records {
            if self.last_key.as_ref().is_some_and(|last| key <= *last) {
                return Err(format!("chunk {seq}: keys out of order"));
            }
            if key.first() == Some(&USER) {
                self.keys += 1;
                self.key_bytes += (key.len() - 1 + value.len()) as u64;
            } else if key.as_ref() == KEY_MEMBERS {
                self.addrs = decode_member_addrs(&value)
                    .map_err(|e| format!("chunk {seq}: the members' addresses: {e}"))?;
            }
            self.records += 1;
            self.last_key = Some(key);
        }
        Ok(())
    }
}

/// Writes a backup file from an image's chunks, checking each as it goes: a stream that is
/// damaged, out of order or incomplete never makes a file that [`BackupReader`] accepts.
pub struct BackupWriter<W: Write> {
    out: W,
    check: ImageCheck,
    file_crc: crc32fast::Hasher,
    written: u64,
}

impl<W: Write> BackupWriter<W> {
    pub fn new(mut out: W) -> io::Result<Self> {
        let mut preamble = Vec::with_capacity(PREAMBLE_LEN);
        preamble.extend_from_slice(BACKUP_MAGIC);
        preamble.extend_from_slice(&BACKUP_FORMAT.to_le_bytes());
        out.write_all(&preamble)?;
        let mut file_crc = crc32fast::Hasher::new();
        file_crc.update(&preamble);
        Ok(Self {
            out,
            check: ImageCheck::default(),
            file_crc,
            written: PREAMBLE_LEN as u64,
        })
    }

    /// The image's header, once its first chunk was pushed.
    pub fn header(&self) -> Option<&SnapshotHeader> {
        self.check.header.as_ref()
    }

    /// Whether the image's trailer was pushed.
    pub fn is_complete(&self) -> bool {
        self.check.complete
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Checks and appends the next chunk.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), WriteError> {
        self.check.check(chunk).map_err(|problem| {
            WriteError::Invalid(BackupError {
                offset: self.written,
                problem,
            })
        })?;
        self.out.write_all(chunk).map_err(WriteError::Io)?;
        self.file_crc.update(chunk);
        self.written += chunk.len() as u64;
        Ok(())
    }

    /// Appends the end record once the image is complete, flushes, and returns what the file
    /// holds and the writer (for the caller to sync and rename).
    pub fn finish(mut self) -> Result<(BackupSummary, W), WriteError> {
        if !self.check.complete {
            return Err(WriteError::Invalid(BackupError {
                offset: self.written,
                problem: format!(
                    "the image ended after {} chunks, before its trailer",
                    self.check.next_seq
                ),
            }));
        }
        let crc = self.file_crc.clone().finalize();
        let end = end_record(self.written, crc);
        self.out.write_all(&end).map_err(WriteError::Io)?;
        self.out.flush().map_err(WriteError::Io)?;
        let file_bytes = self.written + end.len() as u64;
        let summary = summary(self.check, file_bytes, crc).map_err(WriteError::Invalid)?;
        Ok((summary, self.out))
    }
}

/// Why writing a backup failed.
#[derive(Debug)]
pub enum WriteError {
    /// The stream is not a valid image.
    Invalid(BackupError),
    Io(io::Error),
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteError::Invalid(e) => write!(f, "the image received is invalid {e}"),
            WriteError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for WriteError {}

fn end_record(file_bytes: u64, crc: u32) -> Vec<u8> {
    let mut end = Vec::with_capacity(END_LEN);
    end.push(END_TAG);
    end.extend_from_slice(&file_bytes.to_le_bytes());
    end.extend_from_slice(&crc.to_le_bytes());
    let seal = crc32fast::hash(&end);
    end.extend_from_slice(&seal.to_le_bytes());
    end
}

fn summary(check: ImageCheck, file_bytes: u64, crc: u32) -> Result<BackupSummary, BackupError> {
    let Some(header) = check.header else {
        return Err(BackupError {
            offset: PREAMBLE_LEN as u64,
            problem: "the image has no header".into(),
        });
    };
    Ok(BackupSummary {
        format: BACKUP_FORMAT,
        header,
        addrs: check.addrs,
        chunks: check.next_seq,
        records: check.records,
        keys: check.keys,
        key_bytes: check.key_bytes,
        file_bytes,
        crc,
    })
}

/// Reads a backup file chunk by chunk, checking everything: [`BackupReader::next_chunk`]
/// returns the image's chunks in order and `None` once the end record and the end of the file
/// are checked too.
pub struct BackupReader<R: Read> {
    input: R,
    check: ImageCheck,
    file_crc: crc32fast::Hasher,
    offset: u64,
    summary: Option<BackupSummary>,
}

impl<R: Read> BackupReader<R> {
    /// Checks the file's magic and format version.
    pub fn new(mut input: R) -> Result<Self, BackupError> {
        let mut preamble = [0u8; PREAMBLE_LEN];
        let n = fill(&mut input, &mut preamble, 0)?;
        if n < BACKUP_MAGIC.len() || &preamble[..BACKUP_MAGIC.len()] != BACKUP_MAGIC {
            return Err(BackupError {
                offset: 0,
                problem: format!(
                    "not a kvstore backup file (it does not start with {:?})",
                    std::str::from_utf8(BACKUP_MAGIC).unwrap_or_default()
                ),
            });
        }
        if n < PREAMBLE_LEN {
            return Err(truncated(n as u64, "the format version"));
        }
        let format = u32::from_le_bytes([preamble[8], preamble[9], preamble[10], preamble[11]]);
        if format != BACKUP_FORMAT {
            return Err(BackupError {
                offset: 8,
                problem: format!(
                    "backup format version {format}; this kvstore reads version {BACKUP_FORMAT}"
                ),
            });
        }
        let mut file_crc = crc32fast::Hasher::new();
        file_crc.update(&preamble);
        Ok(Self {
            input,
            check: ImageCheck::default(),
            file_crc,
            offset: PREAMBLE_LEN as u64,
            summary: None,
        })
    }

    /// Bytes read so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The image's header, once its first chunk was read.
    pub fn header(&self) -> Option<&SnapshotHeader> {
        self.check.header.as_ref()
    }

    /// What the file holds, once [`BackupReader::next_chunk`] returned `None`.
    pub fn summary(&self) -> Option<&BackupSummary> {
        self.summary.as_ref()
    }

    /// The next chunk of the image, checked; `None` once the whole file is checked.
    pub fn next_chunk(&mut self) -> Result<Option<Bytes>, BackupError> {
        if self.summary.is_some() {
            return Ok(None);
        }
        if self.check.complete {
            self.read_end()?;
            return Ok(None);
        }
        let seq = self.check.next_seq;
        let what = || format!("chunk {seq}");
        let mut head = [0u8; FRAME_HEAD];
        let n = fill(&mut self.input, &mut head, self.offset)?;
        if n < FRAME_HEAD {
            return Err(truncated(self.offset + n as u64, &what()));
        }
        let len = frame_len(&head).map_err(|e| BackupError {
            offset: self.offset,
            problem: format!("{} is damaged: {e}", what()),
        })?;
        let mut chunk = vec![0u8; len];
        chunk[..FRAME_HEAD].copy_from_slice(&head);
        let n = fill(&mut self.input, &mut chunk[FRAME_HEAD..], self.offset)?;
        if n < len - FRAME_HEAD {
            return Err(BackupError {
                offset: self.offset,
                problem: format!(
                    "{} declares {len} bytes but the file ends at byte {}: it is truncated \
                     (or the chunk's length is damaged)",
                    what(),
                    self.offset + (FRAME_HEAD + n) as u64
                ),
            });
        }
        self.check.check(&chunk).map_err(|problem| BackupError {
            offset: self.offset,
            problem,
        })?;
        self.file_crc.update(&chunk);
        self.offset += len as u64;
        Ok(Some(Bytes::from(chunk)))
    }

    /// Reads the whole file, checking it; what it holds.
    pub fn verify(mut self, progress: &mut dyn FnMut(u64)) -> Result<BackupSummary, BackupError> {
        while self.next_chunk()?.is_some() {
            progress(self.offset);
        }
        progress(self.offset);
        self.summary.ok_or_else(|| BackupError {
            offset: self.offset,
            problem: "the file was not read to its end".into(),
        })
    }

    fn read_end(&mut self) -> Result<(), BackupError> {
        let at = self.offset;
        let mut end = [0u8; END_LEN];
        let n = fill(&mut self.input, &mut end, at)?;
        if n < END_LEN {
            return Err(truncated(at + n as u64, "the end record"));
        }
        let damaged = |problem: String| BackupError {
            offset: at,
            problem,
        };
        let sealed = u32::from_le_bytes([end[13], end[14], end[15], end[16]]);
        if end[0] != END_TAG || crc32fast::hash(&end[..13]) != sealed {
            return Err(damaged("the end record after the image is damaged".into()));
        }
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&end[1..9]);
        let recorded_len = u64::from_le_bytes(bytes);
        let recorded_crc = u32::from_le_bytes([end[9], end[10], end[11], end[12]]);
        let crc = self.file_crc.clone().finalize();
        if (recorded_len, recorded_crc) != (at, crc) {
            return Err(damaged(format!(
                "the end record says {recorded_len} bytes with checksum {recorded_crc:08x}; \
                 the file holds {at} bytes with checksum {crc:08x}"
            )));
        }
        let mut extra = [0u8; 1];
        if fill(&mut self.input, &mut extra, at + END_LEN as u64)? != 0 {
            return Err(BackupError {
                offset: at + END_LEN as u64,
                problem: "bytes after the end record (two files joined?)".into(),
            });
        }
        self.offset = at + END_LEN as u64;
        let check = std::mem::take(&mut self.check);
        self.summary = Some(summary(check, self.offset, crc)?);
        Ok(())
    }
}

fn truncated(offset: u64, inside: &str) -> BackupError {
    BackupError {
        offset,
        problem: format!("the file ends inside {inside}: it is truncated"),
    }
}

/// Reads up to `buf.len()` bytes; fewer only at the end of the input.
fn fill<R: Read>(input: &mut R, buf: &mut [u8], offset: u64) -> Result<usize, BackupError> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(BackupError {
                    offset: offset + n as u64,
                    problem: format!("reading the file: {e}"),
                })
            }
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests;
