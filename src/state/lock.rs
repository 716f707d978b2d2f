//! One writer per state database across processes: an advisory exclusive lock (`flock`) on
//! `<file>.lock`, taken before the database is touched and held as long as the writer's
//! [`super::Db`].
//!
//! SQLite's own locks last one transaction only, so two processes could each open the file
//! and interleave their pruning decisions; its `locking_mode=EXCLUSIVE` would keep readers
//! out as well. The lock is on a file of its own rather than on the database: SQLite's POSIX
//! locks on the database file are dropped when any descriptor of that file in the process is
//! closed, and NFS emulates `flock` with POSIX locks, which would collide with SQLite's.
//! The kernel releases the lock when the process ends, however it ends (`kill -9` included),
//! so a stale lock file is harmless and is never deleted: deleting it would let a second
//! process lock a new file while the first still holds the old one.

use super::StateError;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The held lock; dropping it (closing the file) releases it.
#[derive(Debug)]
pub(crate) struct WriterLock {
    _file: File,
}

/// `state.db` → `state.db.lock`, beside the file the path leads to: a symlink to the
/// database, or a path spelled another way (`..`, a symlinked directory), finds the same
/// lock.
pub(crate) fn lock_path(db: &Path) -> PathBuf {
    let mut name = real_path(db).into_os_string();
    name.push(".lock");
    PathBuf::from(name)
}

/// `db` with every symlink and `..` resolved; a file not created yet is named in its
/// directory's resolved path. As given when even the directory cannot be resolved (opening
/// the database then fails with the reason).
fn real_path(db: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(db) {
        return p;
    }
    let (Some(dir), Some(name)) = (db.parent(), db.file_name()) else {
        return db.to_path_buf();
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    std::fs::canonicalize(dir)
        .map(|d| d.join(name))
        .unwrap_or_else(|_| db.to_path_buf())
}

impl WriterLock {
    /// Takes the lock of the database `db` without waiting: another process holding it is
    /// [`StateError::Held`], naming its pid when the lock file says it.
    pub(crate) fn acquire(db: &Path) -> Result<WriterLock, StateError> {
        let lock = lock_path(db);
        let failed = |what: &str, e: std::io::Error| StateError::Open {
            path: db.display().to_string(),
            detail: format!("cannot {what} the lock file {}: {e}", lock.display()),
        };
        // Not truncated on open: the holder's pid stays readable for the refused.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock)
            .map_err(|e| failed("open", e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(StateError::Held {
                    path: db.display().to_string(),
                    lock: lock.display().to_string(),
                    pid: holder_pid(&lock),
                })
            }
            Err(TryLockError::Error(e)) => return Err(failed("lock", e)),
        }
        // Only a courtesy for the message of the next process: the lock is what counts.
        file.set_len(0)
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .map_err(|e| failed("write", e))?;
        Ok(WriterLock { _file: file })
    }
}

/// The pid the holder wrote into the lock file (`None` when it has not written it yet).
fn holder_pid(lock: &Path) -> Option<u32> {
    std::fs::read_to_string(lock).ok()?.trim().parse().ok()
}
