//! The state database (`--state PATH`): an SQLite file that remembers what regsync-rs itself
//! wrote, so that pruning (README "Pruning") only ever deletes its own tags, and so that a
//! `server` keeps its steps' last-run times across restarts.
//!
//! * [`Db`] is the connection and every query, synchronous; `regsync state` uses it directly
//!   and the unit tests exercise it without a runtime.
//! * [`StateHandle`] is what the engine holds: a dedicated OS thread owns the one [`Db`] of the
//!   run and serves requests from a channel, answering through oneshot channels. Async code
//!   never waits on SQLite (a write with `fsync` can take milliseconds, and `busy_timeout` up to
//!   seconds): it awaits the answer while the tokio workers keep running. One thread also makes
//!   "one writer" true by construction within the process (across processes the writer's lock
//!   file does, see `lock`), and the connection is not shared, so no `Mutex` around
//!   `rusqlite::Connection` is needed. `spawn_blocking` per call would work too, but would need
//!   that mutex and may open work on several pool threads at once.
//! * The handle belongs to the run (`RunCtx`), never to a static: two engines in one process
//!   could use two files.
//!
//! Opening checks the file at once (schema version, migrations, a write transaction), so a
//! corrupt, foreign, newer or locked file is one [`StateError`] naming it before any request.
//! A writer (`once`, `server`, `regsync state forget`) first takes `<file>.lock`: a second
//! regsync process wanting to write the same file is refused ([`StateError::Held`]) before it
//! touches anything. Readers (`check`, `regsync state list|show`) take no lock and open the
//! file read-only, so they work while a server runs.

pub mod command;
mod db;
mod lock;

pub use db::{Db, Deletion, StepRun, TagRecord, SCHEMA_VERSION};

use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use tokio::sync::oneshot;

/// Errors of the state database. Every text names the file.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StateError {
    #[error("state database {path}: cannot open: {detail}")]
    Open { path: String, detail: String },
    #[error("state database {path}: not a regsync-rs state database or corrupt: {detail}")]
    Corrupt { path: String, detail: String },
    #[error("state database {path}: locked by another process (one writer at a time): {detail}")]
    Locked { path: String, detail: String },
    #[error("state database {path}: another regsync process{} holds it (lock file {lock}); one writer at a time: stop that one first (\"regsync state list|show\" and \"regsync check\" read it meanwhile)", pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Held {
        path: String,
        lock: String,
        pid: Option<u32>,
    },
    #[error("state database {path}: schema version {found} is newer than this regsync-rs knows ({known}); use a newer release")]
    TooNew {
        path: String,
        found: i64,
        known: i64,
    },
    #[error("state database {path}: schema version {found} is older than this regsync-rs reads ({known}); a `once` or `server` with it migrates it")]
    TooOld {
        path: String,
        found: i64,
        known: i64,
    },
    #[error("state database {path}: {detail}")]
    Query { path: String, detail: String },
    #[error("state database {path}: the database thread stopped")]
    Gone { path: String },
}

impl StateError {
    pub(crate) fn from_sqlite(path: &Path, e: rusqlite::Error) -> StateError {
        use rusqlite::ErrorCode;
        let path = path.display().to_string();
        let detail = e.to_string();
        match e.sqlite_error_code() {
            Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => {
                StateError::Corrupt { path, detail }
            }
            Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => {
                StateError::Locked { path, detail }
            }
            Some(ErrorCode::CannotOpen) | Some(ErrorCode::PermissionDenied) => {
                StateError::Open { path, detail }
            }
            _ => StateError::Query { path, detail },
        }
    }
}

type Job = Box<dyn FnOnce(&mut Db) + Send>;

/// What the database thread is asked to do.
enum Request {
    Job(Job),
    /// Close the database once the jobs queued before are done, then answer.
    Close(oneshot::Sender<()>),
}

/// The run's access to the state database: cheap to clone, every call answered by the one
/// database thread.
#[derive(Clone)]
pub struct StateHandle {
    tx: std_mpsc::Sender<Request>,
    path: PathBuf,
}

impl std::fmt::Debug for StateHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateHandle")
            .field("path", &self.path)
            .finish()
    }
}

impl StateHandle {
    /// Moves `db` to a thread of its own. The thread ends at [`close`](Self::close), or when
    /// the last handle is dropped (queued writes are done first).
    pub fn spawn(db: Db) -> StateHandle {
        let path = db.path().to_path_buf();
        let (tx, rx) = std_mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("regsync-state".into())
            .spawn(move || {
                let mut db = db;
                while let Ok(request) = rx.recv() {
                    match request {
                        Request::Job(job) => job(&mut db),
                        Request::Close(done) => {
                            drop(db);
                            let _ = done.send(());
                            return;
                        }
                    }
                }
            })
            .expect("spawn the state database thread");
        StateHandle { tx, path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the database thread and waits (asynchronously) for its answer.
    pub async fn call<T, F>(&self, f: F) -> Result<T, StateError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Db) -> Result<T, StateError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |db| {
            let _ = reply.send(f(db));
        });
        let gone = || StateError::Gone {
            path: self.path.display().to_string(),
        };
        self.tx.send(Request::Job(job)).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Queues `f` without waiting (step-run bookkeeping from synchronous code); a failure is
    /// logged.
    pub fn send(
        &self,
        log: slog::Logger,
        f: impl FnOnce(&mut Db) -> Result<(), StateError> + Send + 'static,
    ) {
        let inner = log.clone();
        let job: Job = Box::new(move |db| {
            if let Err(e) = f(db) {
                slog::error!(inner, "State database write failed"; "err" => e.to_string());
            }
        });
        if self.tx.send(Request::Job(job)).is_err() {
            slog::error!(log, "State database write failed";
                "err" => format!("state database {}: the database thread stopped", self.path.display()));
        }
    }

    /// Waits until every job queued before this call is done, then closes the database
    /// (before exit). A process that exits with the connection open leaves `FILE-wal` and
    /// `FILE-shm` beside the file, with the last writes only in the WAL: a copy of the file
    /// alone would miss them, and a reader that may not create `FILE-shm` could not open it.
    /// Closing moves the WAL into the file and removes both. Later calls fail (`Gone`).
    pub async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.tx.send(Request::Close(done)).is_ok() {
            let _ = closed.await;
        }
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// RFC 3339 UTC text of a Unix time (for `regsync state` output).
pub fn time_text(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| secs.to_string())
}

/// The stable name of a step in the database: its type, source and target as written. Steps
/// are known by what they copy, not by their position in the file, so inserting a step above
/// does not hand its tags to another one.
pub fn step_key(kind: &str, source: &str, target: &str) -> String {
    format!("{kind} {source} -> {target}")
}

#[cfg(test)]
mod tests;
