//! Writing an immutable memtable to a level-0 table in bounded steps.
//!
//! Without a background thread, the write that finds the memtable full used to write the whole
//! memtable to a table (and sync it) before returning: one write paid for megabytes of I/O. A
//! `MemtableFlush` does the same work a step at a time: each later write adds a bounded number
//! of the immutable memtable's entries to the table and syncs what it wrote, while the memtable
//! stays readable as `imm` until the finished table is installed.

use std::io::{BufWriter, Write};
use std::path::Path;

use crate::env::Env;
use crate::error::Result;
use crate::memtable::{MemTable, MemtableIterator};
use crate::options::Options;
use crate::table_builder::TableBuilder;
use crate::table_cache::table_file_name;
use crate::types::{FileMetaData, FileNum, LdbIterator};

/// Bytes of table written between two syncs of the file: finishing then syncs at most this much,
/// instead of the whole table.
const SYNC_EVERY_BYTES: usize = 256 << 10;

pub struct MemtableFlush {
    num: FileNum,
    entries: MemtableIterator,
    builder: TableBuilder<BufWriter<Box<dyn Write>>>,
    smallest: Option<Vec<u8>>,
    largest: Vec<u8>,
    synced_up_to: usize,
}

impl MemtableFlush {
    /// Creates table file `num` for `mem`'s entries; nothing is written yet.
    pub fn begin(db_path: &Path, opt: &Options, mem: &MemTable, num: FileNum) -> Result<Self> {
        let file = opt.env.open_writable_file(&table_file_name(db_path, num))?;
        let mut entries = mem.iter();
        entries.reset();
        Ok(MemtableFlush {
            num,
            entries,
            builder: TableBuilder::new(opt.clone(), BufWriter::new(file)),
            smallest: None,
            largest: Vec::new(),
            synced_up_to: 0,
        })
    }

    pub fn file_num(&self) -> FileNum {
        self.num
    }

    /// Adds entries to the table until at least `budget` bytes of keys and values were added or
    /// the memtable is exhausted, and syncs the file every `SYNC_EVERY_BYTES`. True once every
    /// entry has been added.
    pub fn step(&mut self, budget: usize) -> Result<bool> {
        let mut added = 0;
        while added < budget {
            if !self.entries.advance() {
                return Ok(true);
            }
            let Some((key, value)) = self.entries.current() else {
                return Ok(true);
            };
            self.builder.add(&key, &value)?;
            added += key.len() + value.len();
            if self.smallest.is_none() {
                self.smallest = Some(key.to_vec());
            }
            self.largest.clear();
            self.largest.extend_from_slice(&key);
        }
        if self.builder.size_estimate() >= self.synced_up_to + SYNC_EVERY_BYTES {
            self.builder.flush()?;
            self.synced_up_to = self.builder.size_estimate();
        }
        Ok(false)
    }

    /// Writes the table's index and footer and syncs it. Returns its metadata, or a metadata of
    /// size 0 (and no file) if the memtable held nothing.
    pub fn finish(self, env: &dyn Env, db_path: &Path) -> Result<FileMetaData> {
        let path = table_file_name(db_path, self.num);
        let Some(smallest) = self.smallest else {
            drop(self.builder);
            let _ = env.delete(&path);
            return Ok(FileMetaData::default());
        };
        if let Err(e) = self.builder.finish() {
            let _ = env.delete(&path);
            return Err(e);
        }
        Ok(FileMetaData {
            num: self.num,
            size: env.size_of(&path)?,
            smallest: smallest.into(),
            largest: self.largest.into(),
            ..Default::default()
        })
    }

    /// Gives up: the file is deleted, the memtable is left to be written again.
    pub fn abandon(self, env: &dyn Env, db_path: &Path) {
        drop(self.builder);
        let _ = env.delete(&table_file_name(db_path, self.num));
    }
}
