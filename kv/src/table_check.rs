//! Checks every block checksum of LevelDB's table files at open.
//!
//! rusty-leveldb 4.0.2 verifies a block's checksum when it reads it, but its lookup path
//! (`Version::get`, used by both `get` and `get_at`) discards the error and moves on to the next
//! file: a key whose block is damaged reads as absent, or as an older version from a lower level.
//! Its iterators end early the same way. A wrong answer is worse than no answer, so `Ldb::open`
//! reads every live table once and refuses to open a database with a damaged block (data, index,
//! filter or meta-index), naming the file and the block. Damage that appears while the database
//! is open is not caught here.
//!
//! Table layout (LevelDB's): blocks, each followed by `compression: u8 | masked crc32c: u32`;
//! then a 48-byte footer `meta-index handle | index handle | padding | magic`. A handle is two
//! varints (offset, size). Block contents: prefix-compressed entries, then the restart array and
//! its length (`u32` each).

use std::path::Path;

use rusty_leveldb::env::Env;

const FOOTER_LEN: usize = 48;
const MAGIC: [u8; 8] = [0x57, 0xfb, 0x80, 0x8b, 0x24, 0x75, 0x47, 0xdb];
const TRAILER_LEN: usize = 5;
const MASK_DELTA: u32 = 0xa282_ead8;

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or("truncated varint")?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint too long".into())
}

fn handle(buf: &[u8], pos: &mut usize) -> Result<(usize, usize), String> {
    let off = varint(buf, pos)?;
    let size = varint(buf, pos)?;
    Ok((off as usize, size as usize))
}

/// Checks the block at `(off, size)` and returns its contents.
fn block(file: &[u8], (off, size): (usize, usize)) -> Result<&[u8], String> {
    let end = off
        .checked_add(size)
        .and_then(|e| e.checked_add(TRAILER_LEN))
        .filter(|&e| e <= file.len())
        .ok_or_else(|| format!("block at offset {off} of {size} bytes lies outside the file"))?;
    let data = &file[off..off + size];
    let trailer = &file[off + size..end];
    let stored = u32::from_le_bytes([trailer[1], trailer[2], trailer[3], trailer[4]]);
    let rot = stored.wrapping_sub(MASK_DELTA);
    let want = rot.rotate_right(17);
    let got = crc32c::crc32c_append(crc32c::crc32c(data), &trailer[..1]);
    if got != want {
        return Err(format!("checksum mismatch in block at offset {off}"));
    }
    if trailer[0] != 0 {
        // kv never enables compression, so a compressed block is damage (or a foreign file).
        return Err(format!(
            "block at offset {off} has compression type {}",
            trailer[0]
        ));
    }
    Ok(data)
}

/// The values of all entries of a (checked) block.
fn block_values(data: &[u8]) -> Result<Vec<&[u8]>, String> {
    if data.len() < 4 {
        return Err("block too short".into());
    }
    let n = data.len();
    let restarts =
        u32::from_le_bytes([data[n - 4], data[n - 3], data[n - 2], data[n - 1]]) as usize;
    let entries_end = restarts
        .checked_mul(4)
        .and_then(|r| n.checked_sub(4 + r))
        .ok_or("restart array larger than the block")?;
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < entries_end {
        let _shared = varint(data, &mut pos)?;
        let unshared = varint(data, &mut pos)? as usize;
        let vlen = varint(data, &mut pos)? as usize;
        let vstart = pos
            .checked_add(unshared)
            .filter(|&s| s <= entries_end)
            .ok_or("entry key overruns the block")?;
        let vend = vstart
            .checked_add(vlen)
            .filter(|&e| e <= entries_end)
            .ok_or("entry value overruns the block")?;
        out.push(&data[vstart..vend]);
        pos = vend;
    }
    Ok(out)
}

/// Verifies every block of one table file.
pub(crate) fn verify_table(file: &[u8]) -> Result<(), String> {
    if file.len() < FOOTER_LEN || file[file.len() - 8..] != MAGIC {
        return Err("missing table footer".into());
    }
    let footer = &file[file.len() - FOOTER_LEN..];
    let mut pos = 0;
    let meta = handle(footer, &mut pos)?;
    let index = handle(footer, &mut pos)?;
    for top in [meta, index] {
        let data = block(file, top)?;
        for v in block_values(data)? {
            let mut p = 0;
            block(file, handle(v, &mut p)?)?;
        }
    }
    Ok(())
}

/// Verifies every table file in `dir`; the error names the file.
pub(crate) fn verify_dir(env: &dyn Env, dir: &Path) -> Result<(), String> {
    let mut names = env.children(dir).map_err(|e| e.to_string())?;
    names.sort();
    for name in names {
        if name.extension().and_then(|x| x.to_str()) != Some("ldb") {
            continue;
        }
        let path = dir.join(&name);
        let len = env.size_of(&path).map_err(|e| e.to_string())?;
        let f = env
            .open_random_access_file(&path)
            .map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; len];
        let mut done = 0;
        while done < len {
            let n = f
                .read_at(done, &mut buf[done..])
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err(format!(
                    "{}: short read ({done} of {len} bytes)",
                    path.display()
                ));
            }
            done += n;
        }
        verify_table(&buf).map_err(|e| format!("table {}: {e}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The parser reads untrusted bytes: it must never panic or over-allocate.
        #[test]
        fn arbitrary_files_never_panic(mut data in proptest::collection::vec(any::<u8>(), 0..300), magic in any::<bool>()) {
            if magic && data.len() >= 48 {
                let n = data.len();
                data[n - 8..].copy_from_slice(&MAGIC);
            }
            let _ = verify_table(&data);
        }
    }
}
