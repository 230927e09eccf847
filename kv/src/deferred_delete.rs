//! Deleting a database's obsolete files off the writing thread.
//!
//! LevelDB deletes the old write-ahead log (megabytes) and compacted tables in the middle of the
//! write that installs a new table. On this machine's ext4 (mounted with `discard`) unlinking a
//! 4 MiB file takes 4-25 ms, which that write, and every request behind it, waited for. Here the
//! file is renamed out of LevelDB's namespace at once (a rename frees no blocks and is quick), so
//! its name can be reused immediately, and a background thread unlinks it. A file whose unlink
//! never ran (a crash, an error) keeps its `.deleting` name, which LevelDB ignores, and
//! [`remove_leftovers`] deletes it when the database is next opened.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::sync::{Mutex, OnceLock};

const SUFFIX: &str = ".deleting";

enum Job {
    Unlink(PathBuf),
    /// Answered once every unlink queued before it has run.
    Barrier(Sender<()>),
}

/// The background thread's queue; `None` if it could not be started (deletions then run inline).
fn queue() -> Option<&'static Mutex<Sender<Job>>> {
    static QUEUE: OnceLock<Option<Mutex<Sender<Job>>>> = OnceLock::new();
    QUEUE
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Job>();
            std::thread::Builder::new()
                .name("kv-unlink".into())
                .spawn(move || {
                    for job in rx {
                        match job {
                            // A failure leaves the `.deleting` file, which the next open removes.
                            Job::Unlink(p) => drop(std::fs::remove_file(p)),
                            Job::Barrier(done) => {
                                let _ = done.send(());
                            }
                        }
                    }
                })
                .ok()
                .map(|_| Mutex::new(tx))
        })
        .as_ref()
}

fn trash_name(p: &Path) -> Option<PathBuf> {
    let mut name: OsString = p.file_name()?.to_owned();
    name.push(SUFFIX);
    Some(p.with_file_name(name))
}

/// Removes `p` from the directory now and frees its blocks in the background.
pub(crate) fn delete(p: &Path) -> io::Result<()> {
    let (Some(queue), Some(trash)) = (queue(), trash_name(p)) else {
        return std::fs::remove_file(p);
    };
    std::fs::rename(p, &trash)?;
    let sent = queue
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(Job::Unlink(trash.clone()));
    if sent.is_err() {
        std::fs::remove_file(&trash)?;
    }
    Ok(())
}

/// Deletes the files in `dir` whose background deletion never ran.
pub(crate) fn remove_leftovers(dir: &Path) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_name().to_string_lossy().ends_with(SUFFIX) {
            match std::fs::remove_file(entry.path()) {
                // The background thread, still unlinking for an earlier open of this database
                // in this process, got there first.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                done => done?,
            }
        }
    }
    Ok(())
}

/// Waits until every deletion queued so far has run (after an explicit compaction, whose
/// caller wants the space back).
pub(crate) fn wait_for_background() {
    let (tx, rx) = mpsc::channel();
    if let Some(queue) = queue() {
        let _ = queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(Job::Barrier(tx));
        let _ = rx.recv();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The name is free at once: a file created under it again (LevelDB reuses a file number
    /// whose table came out empty) is not the one the background thread deletes.
    #[test]
    fn a_name_reused_at_once_keeps_the_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("000007.ldb");
        std::fs::write(&p, b"old").unwrap();
        delete(&p).unwrap();
        assert!(!p.exists());
        std::fs::write(&p, b"new").unwrap();
        wait_for_background();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("000007.ldb")]);
    }

    #[test]
    fn leftovers_are_removed_and_other_files_kept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("000003.log.deleting"), b"x").unwrap();
        std::fs::write(dir.path().join("000004.log"), b"y").unwrap();
        remove_leftovers(dir.path()).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("000004.log")]);
        remove_leftovers(&dir.path().join("absent")).unwrap();
    }
}
