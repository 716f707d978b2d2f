//! The connection, the schema and its migrations, and every query.

use super::lock::WriterLock;
use super::StateError;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `PRAGMA application_id` of a regsync-rs state file ("RSYS"): a foreign SQLite file is
/// refused instead of being written into.
const APPLICATION_ID: i64 = 0x5253_5953;

/// The schema version this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 1;

/// Migrations: `MIGRATIONS[n]` takes a database from version `n` to `n + 1`. Never edit a
/// released entry; add one.
const MIGRATIONS: &[&str] = &[
    // 0 → 1: the first release.
    "CREATE TABLE tags (
         target         TEXT NOT NULL,  -- target repository: registry/repo or ocidir://path
         tag            TEXT NOT NULL,
         step           TEXT NOT NULL,  -- '<type> <source> -> <target>' as written
         source         TEXT NOT NULL,  -- source reference of the image
         source_digest  TEXT NOT NULL,
         target_digest  TEXT NOT NULL,
         media_type     TEXT NOT NULL,
         first_written  INTEGER NOT NULL, -- Unix seconds
         last_confirmed INTEGER NOT NULL,
         PRIMARY KEY (target, tag)
     );
     CREATE INDEX tags_by_step ON tags (step, target);
     CREATE TABLE step_runs (
         step         TEXT PRIMARY KEY,
         mode         TEXT NOT NULL,    -- copy, missing or check
         last_start   INTEGER,
         last_end     INTEGER,
         result       TEXT,             -- ok, failed, or NULL while running
         last_success INTEGER
     );
     CREATE TABLE deletions (
         id     INTEGER PRIMARY KEY AUTOINCREMENT,
         at     INTEGER NOT NULL,
         step   TEXT NOT NULL,
         target TEXT NOT NULL,
         tag    TEXT NOT NULL,
         digest TEXT NOT NULL,
         reason TEXT NOT NULL
     );",
];

/// One target tag regsync-rs wrote or confirmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagRecord {
    pub target: String,
    pub tag: String,
    pub step: String,
    pub source: String,
    pub source_digest: String,
    pub target_digest: String,
    pub media_type: String,
    pub first_written: i64,
    pub last_confirmed: i64,
}

/// The last run of one step.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct StepRun {
    pub step: String,
    pub mode: String,
    pub last_start: Option<i64>,
    pub last_end: Option<i64>,
    pub result: Option<String>,
    pub last_success: Option<i64>,
}

/// One tag deleted by pruning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deletion {
    pub at: i64,
    pub step: String,
    pub target: String,
    pub tag: String,
    pub digest: String,
    pub reason: String,
}

/// Refused before anything is opened: SQLite's error for a directory says less.
fn refuse_directory(path: &Path) -> Result<(), StateError> {
    if path.is_dir() {
        return Err(StateError::Open {
            path: path.display().to_string(),
            detail: "is a directory".into(),
        });
    }
    Ok(())
}

/// A connection to `path` with `flags` (one thread owns it: no SQLite mutex) and a busy
/// timeout for the moments another connection holds SQLite's lock.
fn connect(path: &Path, flags: OpenFlags) -> Result<Connection, StateError> {
    let err = |e| StateError::from_sqlite(path, e);
    let conn =
        Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX).map_err(err)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
    Ok(conn)
}

/// `FILE-wal`: the writes not yet moved into the file.
fn wal_of(path: &Path) -> PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

/// A read-only connection that treats the file at `real` (absolute, no symlinks) as
/// unchanging (SQLite's `immutable=1`).
fn connect_immutable(real: &Path) -> Result<Connection, StateError> {
    let path = real;
    // A file: URI, percent-encoded, so no character of the path is read as a URI parameter.
    let mut uri = url::Url::from_file_path(real).map_err(|()| StateError::Open {
        path: path.display().to_string(),
        detail: "not a path SQLite can open as a URI".into(),
    })?;
    uri.set_query(Some("immutable=1"));
    connect(
        Path::new(uri.as_str()),
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
    )
}

/// The state database connection: a writer (`once`, `server`, `regsync state forget`), the
/// only one across processes, or a reader (`check`, `regsync state list|show`).
pub struct Db {
    conn: Connection,
    path: PathBuf,
    /// The writer's lock, `None` for a reader. After `conn`: fields drop in order, so the lock
    /// is released only once the connection has closed.
    _writer: Option<WriterLock>,
}

impl Db {
    /// Opens (or creates) the file as its one writer: takes the writer's lock first (another
    /// regsync process holding it is [`StateError::Held`], and nothing is touched), checks
    /// that it is a regsync-rs state database, applies the migrations it lacks, and takes
    /// SQLite's write lock once to prove no other program holds it.
    pub fn open(path: &Path) -> Result<Db, StateError> {
        refuse_directory(path)?;
        let lock = WriterLock::acquire(path)?;
        let conn = connect(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        )?;
        let mut db = Db {
            conn,
            path: path.to_path_buf(),
            _writer: Some(lock),
        };
        db.init()?;
        Ok(db)
    }

    /// Opens an existing file to read it, also while a writer holds it: no writer's lock,
    /// and a read-only connection, so a reader writes nothing even by mistake (WAL gives it
    /// a consistent snapshot while the writer goes on). The file must have this release's
    /// schema: a reader does not migrate.
    pub fn open_read(path: &Path) -> Result<Db, StateError> {
        refuse_directory(path)?;
        // SQLite's "unable to open database file" would not say why.
        let missing = |detail: String| StateError::Open {
            path: path.display().to_string(),
            detail,
        };
        match path.try_exists() {
            Ok(true) => {}
            Ok(false) => {
                return Err(missing(
                    "no such file (a `once` or `server` with it creates it)".into(),
                ))
            }
            Err(e) => return Err(missing(e.to_string())),
        }
        let reader = |conn| {
            let db = Db {
                conn,
                path: path.to_path_buf(),
                _writer: None,
            };
            db.check_header().map(|version| (db, version))
        };
        let (db, version) = match connect(path, OpenFlags::SQLITE_OPEN_READ_ONLY).and_then(reader) {
            Ok(opened) => opened,
            Err(e) => {
                // A read-only connection to a WAL file must create `FILE-shm` when no
                // writer has the file open, so an account that may read the file but not
                // write its directory is refused. Without a `FILE-wal` every record is in
                // the file itself: read it as immutable (no -shm, no locks). A writer that
                // starts meanwhile writes to a new WAL, which such a reader does not see.
                // SQLite keeps the WAL beside the file a symlink leads to: look there, and
                // open that file.
                let Ok(real) = path.canonicalize() else {
                    return Err(e);
                };
                if wal_of(&real).exists() {
                    return Err(e);
                }
                connect_immutable(&real).and_then(reader).map_err(|_| e)?
            }
        };
        if version < SCHEMA_VERSION {
            return Err(StateError::TooOld {
                path: path.display().to_string(),
                found: version,
                known: SCHEMA_VERSION,
            });
        }
        Ok(db)
    }

    fn err(&self, e: rusqlite::Error) -> StateError {
        StateError::from_sqlite(&self.path, e)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's schema version, once it is known to be SQLite, of this application, and not
    /// newer than this release.
    fn check_header(&self) -> Result<i64, StateError> {
        // Reading the header is what finds a file that is not SQLite at all.
        let app_id: i64 = self
            .conn
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        let tables: i64 = self
            .conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        let path = self.path.display().to_string();
        if (app_id != 0 && app_id != APPLICATION_ID) || (app_id == 0 && tables > 0) {
            return Err(StateError::Corrupt {
                path,
                detail: "an SQLite file of another application".into(),
            });
        }
        if version > SCHEMA_VERSION {
            return Err(StateError::TooNew {
                path,
                found: version,
                known: SCHEMA_VERSION,
            });
        }
        Ok(version)
    }

    fn init(&mut self) -> Result<(), StateError> {
        self.check_header()?;
        let path = self.path.display().to_string();
        let mode: String = self
            .conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StateError::Open {
                path,
                detail: format!("cannot use WAL mode (journal mode {mode})"),
            });
        }
        // WAL: a commit is durable at the next checkpoint; a power loss may lose the last
        // records, which the next run confirms again (never a record without its tag).
        self.conn
            .execute_batch("PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;")
            .map_err(|e| self.err(e))?;
        // One write transaction, also when nothing is to migrate: a file another program
        // holds locked (an `sqlite3` shell; another regsync-rs was refused by the writer's
        // lock already) fails here, at start, rather than in the middle of a run.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| StateError::from_sqlite(&self.path, e))?;
        let current: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| StateError::from_sqlite(&self.path, e))?;
        for (n, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            tx.execute_batch(sql)
                .and_then(|_| tx.execute_batch(&format!("PRAGMA user_version = {}", n + 1)))
                .map_err(|e| StateError::from_sqlite(&self.path, e))?;
        }
        tx.execute_batch(&format!("PRAGMA application_id = {APPLICATION_ID}"))
            .map_err(|e| StateError::from_sqlite(&self.path, e))?;
        tx.commit()
            .map_err(|e| StateError::from_sqlite(&self.path, e))?;
        Ok(())
    }

    pub fn schema_version(&self) -> Result<i64, StateError> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// The target holds `rec.tag` with `rec.target_digest`, written or found matching by
    /// `rec.step`: insert, or update everything but `first_written`.
    pub fn confirm_tag(&mut self, rec: &TagRecord) -> Result<(), StateError> {
        self.conn
            .execute(
                "INSERT INTO tags (target, tag, step, source, source_digest, target_digest,
                                   media_type, first_written, last_confirmed)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (target, tag) DO UPDATE SET
                     step = excluded.step, source = excluded.source,
                     source_digest = excluded.source_digest,
                     target_digest = excluded.target_digest,
                     media_type = excluded.media_type,
                     last_confirmed = excluded.last_confirmed",
                params![
                    rec.target,
                    rec.tag,
                    rec.step,
                    rec.source,
                    rec.source_digest,
                    rec.target_digest,
                    rec.media_type,
                    rec.first_written,
                    rec.last_confirmed
                ],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Every row `sql` selects with `args`, each made a `T` by `row`.
    fn rows<T>(
        &self,
        sql: &str,
        args: impl rusqlite::Params,
        row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StateError> {
        let mut stmt = self.conn.prepare(sql).map_err(|e| self.err(e))?;
        let rows = stmt.query_map(args, row).map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    fn tag_rows(
        &self,
        sql: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<TagRecord>, StateError> {
        self.rows(sql, args, |r| {
            Ok(TagRecord {
                target: r.get(0)?,
                tag: r.get(1)?,
                step: r.get(2)?,
                source: r.get(3)?,
                source_digest: r.get(4)?,
                target_digest: r.get(5)?,
                media_type: r.get(6)?,
                first_written: r.get(7)?,
                last_confirmed: r.get(8)?,
            })
        })
    }

    const TAG_COLUMNS: &'static str = "SELECT target, tag, step, source, source_digest, \
         target_digest, media_type, first_written, last_confirmed FROM tags";

    /// The tags `step` wrote into the repository `target`, by tag.
    pub fn managed_tags(&self, step: &str, target: &str) -> Result<Vec<TagRecord>, StateError> {
        self.tag_rows(
            &format!(
                "{} WHERE step = ?1 AND target = ?2 ORDER BY tag",
                Self::TAG_COLUMNS
            ),
            params![step, target],
        )
    }

    /// Every record, by target and tag.
    pub fn all_tags(&self) -> Result<Vec<TagRecord>, StateError> {
        self.tag_rows(&format!("{} ORDER BY target, tag", Self::TAG_COLUMNS), [])
    }

    /// The records of one target repository (`tag` None) or one tag.
    pub fn tags_of(&self, target: &str, tag: Option<&str>) -> Result<Vec<TagRecord>, StateError> {
        match tag {
            Some(t) => self.tag_rows(
                &format!("{} WHERE target = ?1 AND tag = ?2", Self::TAG_COLUMNS),
                params![target, t],
            ),
            None => self.tag_rows(
                &format!("{} WHERE target = ?1 ORDER BY tag", Self::TAG_COLUMNS),
                params![target],
            ),
        }
    }

    /// Drops records (`regsync state forget`, or tags found gone from the target). Returns how
    /// many.
    pub fn forget(&mut self, target: &str, tag: Option<&str>) -> Result<usize, StateError> {
        let n = match tag {
            Some(t) => self.conn.execute(
                "DELETE FROM tags WHERE target = ?1 AND tag = ?2",
                params![target, t],
            ),
            None => self
                .conn
                .execute("DELETE FROM tags WHERE target = ?1", params![target]),
        };
        n.map_err(|e| self.err(e))
    }

    /// Forgets records of tags the target no longer holds, in one transaction.
    pub fn forget_tags(&mut self, target: &str, tags: &[String]) -> Result<(), StateError> {
        let path = self.path.clone();
        let err = |e| StateError::from_sqlite(&path, e);
        let tx = self.conn.transaction().map_err(err)?;
        for t in tags {
            tx.execute(
                "DELETE FROM tags WHERE target = ?1 AND tag = ?2",
                params![target, t],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// A pruned tag: its record goes and the deletion is logged, in one transaction. Called
    /// only after the store deleted the tag.
    pub fn record_deletion(&mut self, d: &Deletion) -> Result<(), StateError> {
        let path = self.path.clone();
        let err = |e| StateError::from_sqlite(&path, e);
        let tx = self.conn.transaction().map_err(err)?;
        tx.execute(
            "DELETE FROM tags WHERE target = ?1 AND tag = ?2",
            params![d.target, d.tag],
        )
        .map_err(err)?;
        tx.execute(
            "INSERT INTO deletions (at, step, target, tag, digest, reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![d.at, d.step, d.target, d.tag, d.digest, d.reason],
        )
        .map_err(err)?;
        tx.commit().map_err(err)
    }

    /// Deletions, newest first; of one target repository when `target` is given.
    pub fn deletions(&self, target: Option<&str>) -> Result<Vec<Deletion>, StateError> {
        self.rows(
            "SELECT at, step, target, tag, digest, reason FROM deletions
             WHERE ?1 IS NULL OR target = ?1 ORDER BY id DESC",
            params![target],
            |r| {
                Ok(Deletion {
                    at: r.get(0)?,
                    step: r.get(1)?,
                    target: r.get(2)?,
                    tag: r.get(3)?,
                    digest: r.get(4)?,
                    reason: r.get(5)?,
                })
            },
        )
    }

    /// A step run began.
    pub fn run_started(&mut self, step: &str, mode: &str, at: i64) -> Result<(), StateError> {
        self.conn
            .execute(
                "INSERT INTO step_runs (step, mode, last_start) VALUES (?1, ?2, ?3)
                 ON CONFLICT (step) DO UPDATE SET mode = excluded.mode,
                     last_start = excluded.last_start",
                params![step, mode, at],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// A step run ended (`ok`: without an error).
    pub fn run_ended(&mut self, step: &str, at: i64, ok: bool) -> Result<(), StateError> {
        self.conn
            .execute(
                "UPDATE step_runs SET last_end = ?2, result = ?3,
                     last_success = CASE WHEN ?4 THEN ?2 ELSE last_success END
                 WHERE step = ?1",
                params![step, at, if ok { "ok" } else { "failed" }, ok],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Every step's last run, by step.
    pub fn step_runs(&self) -> Result<Vec<StepRun>, StateError> {
        self.rows(
            "SELECT step, mode, last_start, last_end, result, last_success FROM step_runs
             ORDER BY step",
            [],
            |r| {
                Ok(StepRun {
                    step: r.get(0)?,
                    mode: r.get(1)?,
                    last_start: r.get(2)?,
                    last_end: r.get(3)?,
                    result: r.get(4)?,
                    last_success: r.get(5)?,
                })
            },
        )
    }

    /// Forget one step's run record.
    pub fn forget_step(&mut self, step: &str) -> Result<usize, StateError> {
        self.conn
            .execute("DELETE FROM step_runs WHERE step = ?1", params![step])
            .map_err(|e| self.err(e))
    }

    /// The record of one tag, if any.
    pub fn tag(&self, target: &str, tag: &str) -> Result<Option<TagRecord>, StateError> {
        Ok(self.tags_of(target, Some(tag))?.into_iter().next())
    }

    /// Whether the file has a table `name` (tests of migrations).
    pub fn has_table(&self, name: &str) -> Result<bool, StateError> {
        self.conn
            .query_row(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
                params![name],
                |_| Ok(()),
            )
            .optional()
            .map(|o| o.is_some())
            .map_err(|e| self.err(e))
    }
}
