//! Small binary encoding helpers shared by every on-disk and on-wire format of this crate.
//!
//! Integers are little-endian in values and big-endian in keys (so that LevelDB's byte order is
//! numeric order). The reader checks every length against the bytes that are actually left
//! before allocating or slicing, so decoding hostile input costs at most its own size.

use bytes::Bytes;

use crate::error::DecodeError;

pub(crate) fn crc32(parts: &[&[u8]]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for p in parts {
        h.update(p);
    }
    h.finalize()
}

/// Appends a CRC32 of everything in `buf` so far.
pub(crate) fn seal(buf: &mut Vec<u8>) {
    let c = crc32(&[buf]);
    buf.extend_from_slice(&c.to_le_bytes());
}

/// Checks and strips the trailing CRC32 written by [`seal`].
pub(crate) fn unseal(buf: &[u8]) -> Result<&[u8], DecodeError> {
    if buf.len() < 4 {
        return Err(DecodeError::Truncated {
            needed: 4,
            have: buf.len(),
        });
    }
    let (body, tail) = buf.split_at(buf.len() - 4);
    let stored = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
    let computed = crc32(&[body]);
    if stored != computed {
        return Err(DecodeError::BadChecksum { stored, computed });
    }
    Ok(body)
}

pub(crate) fn put_u64(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    buf.extend_from_slice(&(b.len() as u32).to_le_bytes());
    buf.extend_from_slice(b);
}

pub(crate) fn put_opt_bytes(buf: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => buf.push(0),
        Some(b) => {
            buf.push(1);
            put_bytes(buf, b);
        }
    }
}

/// Bound on a stored configuration: a million members, far beyond any real cluster.
const MAX_MEMBERSHIP_BYTES: usize = 8 << 20;

/// Appends a configuration as [`Reader::membership`] reads it.
pub(crate) fn put_membership(buf: &mut Vec<u8>, m: &raft_core::Membership) {
    put_bytes(buf, &m.encode());
}

/// A bounds-checked cursor over a `Bytes`; byte strings it returns share the input's memory.
pub(crate) struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    pub(crate) fn new(buf: Bytes) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated {
                needed: n,
                have: self.remaining(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }

    pub(crate) fn bytes(&mut self, what: &'static str, max: usize) -> Result<Bytes, DecodeError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(DecodeError::TooLong {
                what,
                len: len as u64,
                max: max as u64,
            });
        }
        if self.remaining() < len {
            return Err(DecodeError::Truncated {
                needed: len,
                have: self.remaining(),
            });
        }
        let b = self.buf.slice(self.pos..self.pos + len);
        self.pos += len;
        Ok(b)
    }

    /// A configuration stored as a length-prefixed [`raft_core::Membership::encode`].
    pub(crate) fn membership(
        &mut self,
        what: &'static str,
    ) -> Result<raft_core::Membership, DecodeError> {
        let bytes = self.bytes(what, MAX_MEMBERSHIP_BYTES)?;
        raft_core::Membership::decode(&bytes).map_err(|_| DecodeError::Invalid(what))
    }

    pub(crate) fn opt_bytes(
        &mut self,
        what: &'static str,
        max: usize,
    ) -> Result<Option<Bytes>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.bytes(what, max)?)),
            tag => Err(DecodeError::UnknownTag { what, tag }),
        }
    }

    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }
}
