//! Logging in regsync's shape (Go slog): `time=… level=INFO msg="Image sync needed" source=…`
//! on stderr, or one JSON object per line with `--logopt json`. Built on slog.

use slog::{Drain, Level, OwnedKVList, Record, KV};
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Log verbosity as regsync parses it: `debug|info|warn|error` (case-insensitive) with an
/// optional `+N`/`-N` offset, or exactly `trace` (= debug-4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verbosity(pub i32);

impl Verbosity {
    pub const TRACE: i32 = -8;
    pub const DEBUG: i32 = -4;
    pub const INFO: i32 = 0;
    pub const WARN: i32 = 4;
    pub const ERROR: i32 = 8;

    pub fn parse(s: &str) -> Result<Verbosity, String> {
        if s == "trace" {
            return Ok(Verbosity(Self::TRACE));
        }
        let err =
            || format!("unable to parse verbosity {s}: slog: level string {s:?}: unknown name");
        let split = s.find(['+', '-']).unwrap_or(s.len());
        let (name, offset) = s.split_at(split);
        let base = match name.to_ascii_lowercase().as_str() {
            "debug" => Self::DEBUG,
            "info" => Self::INFO,
            "warn" => Self::WARN,
            "error" => Self::ERROR,
            _ => return Err(err()),
        };
        let off = if offset.is_empty() {
            0
        } else {
            offset.parse::<i32>().map_err(|_| err())?
        };
        Ok(Verbosity(base + off))
    }

    /// Does a record at slog level `l` pass this verbosity?
    fn allows(self, l: Level) -> bool {
        go_level(l) >= self.0
    }
}

/// slog's levels mapped to Go slog's numeric levels.
fn go_level(l: Level) -> i32 {
    match l {
        Level::Critical | Level::Error => Verbosity::ERROR,
        Level::Warning => Verbosity::WARN,
        Level::Info => Verbosity::INFO,
        Level::Debug => Verbosity::DEBUG,
        Level::Trace => Verbosity::TRACE,
    }
}

fn level_name(l: Level) -> &'static str {
    match l {
        Level::Critical | Level::Error => "ERROR",
        Level::Warning => "WARN",
        Level::Info => "INFO",
        Level::Debug => "DEBUG",
        Level::Trace => "DEBUG-4",
    }
}

/// Collects key/value pairs of a record in order.
struct Pairs(Vec<(String, String)>);

impl slog::Serializer for Pairs {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments) -> slog::Result {
        self.0.push((key.to_string(), val.to_string()));
        Ok(())
    }
}

/// Lines waiting for the writer thread. A blocked stderr (a full pipe nobody reads) must not
/// block whoever logs, so the queue is bounded and drops instead of waiting: debug and trace
/// lines once [`QUEUE_VERBOSE`] lines wait, every line once [`QUEUE_ALL`] do. Each run of
/// dropped lines is replaced, in place, by one `Log messages dropped` line with their count,
/// so the order of what is written stays that of the records.
const QUEUE_VERBOSE: usize = 4096;
const QUEUE_ALL: usize = 16384;

#[derive(Default)]
struct Queue {
    lines: VecDeque<String>,
    /// Lines dropped since the last one queued.
    dropped: u64,
    /// Whether the writer holds lines it has not finished writing.
    writing: bool,
    /// No logger is left: the writer ends once the queue is empty.
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    /// What else draws on the same terminal (the progress display): lines are written while
    /// it is put aside. (Only the writer thread calls it: slog's unwind-safety bound on the
    /// drain does not concern it.)
    overlay: Option<std::panic::AssertUnwindSafe<Arc<dyn Overlay>>>,
    /// Lines (or a drop count) to write, or closing.
    ready: Condvar,
    /// The queue became empty and nothing is being written.
    idle: Condvar,
    json: bool,
    /// Lines written so far: how [`LogFlush::flush`] tells a slow reader from none.
    written: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic elsewhere while holding the lock leaves the queue usable.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn dropped_line(&self, count: u64) -> String {
        format_line(
            self.json,
            Level::Warning,
            "Log messages dropped while the log output was blocked",
            vec![("count".to_string(), count.to_string())],
        )
    }
}

/// The slog drain: formats each record on the caller's thread, queues the line and returns;
/// a writer thread writes the lines in order ([`logger_to`]).
pub struct RegsyncDrain {
    shared: Arc<Shared>,
    verbosity: Verbosity,
}

impl Drain for RegsyncDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record, values: &OwnedKVList) -> Result<(), slog::Never> {
        if !self.verbosity.allows(record.level()) {
            return Ok(());
        }
        let mut pairs = Pairs(Vec::new());
        let _ = record.kv().serialize(record, &mut pairs);
        let _ = values.serialize(record, &mut pairs);
        // slog serialises record pairs last-to-first; restore the order they were written in.
        pairs.0.reverse();
        let line = format_line(
            self.shared.json,
            record.level(),
            &record.msg().to_string(),
            pairs.0,
        );
        let limit = if record.level().is_at_least(Level::Info) {
            QUEUE_ALL
        } else {
            QUEUE_VERBOSE
        };
        let mut q = self.shared.lock();
        if q.lines.len() >= limit {
            q.dropped += 1;
            return Ok(());
        }
        if q.dropped > 0 {
            let notice = self.shared.dropped_line(std::mem::take(&mut q.dropped));
            q.lines.push_back(notice);
        }
        q.lines.push_back(line);
        drop(q);
        self.shared.ready.notify_one();
        Ok(())
    }
}

impl Drop for RegsyncDrain {
    /// The last logger is gone: the writer finishes the queue and ends.
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_one();
    }
}

/// Writes queued lines until the queue is closed and empty.
fn write_lines<W: std::io::Write>(shared: &Shared, mut out: W) {
    loop {
        let mut batch = {
            let mut q = shared.lock();
            loop {
                if !q.lines.is_empty() || q.dropped > 0 {
                    break;
                }
                if q.closed {
                    return;
                }
                q = shared.ready.wait(q).unwrap_or_else(|e| e.into_inner());
            }
            let mut batch = std::mem::take(&mut q.lines);
            if q.dropped > 0 {
                // Dropped lines at the end of the queue: say so now.
                batch.push_back(shared.dropped_line(std::mem::take(&mut q.dropped)));
            }
            q.writing = true;
            batch
        };
        let mut write = || {
            for line in batch.drain(..) {
                let _ = writeln!(out, "{line}");
                shared.written.fetch_add(1, Ordering::Relaxed);
            }
            let _ = out.flush();
        };
        match &shared.overlay {
            Some(overlay) => overlay.suspend(&mut write),
            None => write(),
        }
        let mut q = shared.lock();
        q.writing = false;
        if q.lines.is_empty() && q.dropped == 0 {
            shared.idle.notify_all();
        }
    }
}

/// Waits until every line logged so far has been written ([`LogFlush::flush`], also on drop):
/// the last lines of a run (its `Sync summary`) are on stderr before the process exits.
pub struct LogFlush {
    shared: Arc<Shared>,
}

/// How long [`LogFlush::flush`] waits while not one line gets written (nobody reads the pipe):
/// the exit is not held for ever, whatever the reader does.
const FLUSH_STALL: Duration = Duration::from_secs(3);

impl LogFlush {
    /// `false` when the output stopped taking lines for [`FLUSH_STALL`] (what is left is
    /// given up).
    pub fn flush(&self) -> bool {
        let mut q = self.shared.lock();
        let mut seen = self.shared.written.load(Ordering::Relaxed);
        let mut since = Instant::now();
        while q.writing || !q.lines.is_empty() || q.dropped > 0 {
            let now = self.shared.written.load(Ordering::Relaxed);
            if now != seen {
                (seen, since) = (now, Instant::now());
            } else if since.elapsed() >= FLUSH_STALL {
                return false;
            }
            q = self
                .shared
                .idle
                .wait_timeout(q, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

impl Drop for LogFlush {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// One line in regsync's text or JSON shape.
fn format_line(json: bool, level: Level, msg: &str, pairs: Vec<(String, String)>) -> String {
    let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    if json {
        let mut obj = serde_json::Map::new();
        obj.insert("time".into(), time.into());
        obj.insert("level".into(), level_name(level).into());
        obj.insert("msg".into(), msg.into());
        for (k, v) in pairs {
            let value = match v.parse::<i64>() {
                Ok(n) if !v.starts_with('+') && (v == "0" || !v.starts_with('0')) => n.into(),
                _ => serde_json::Value::String(v),
            };
            obj.insert(k, value);
        }
        serde_json::Value::Object(obj).to_string()
    } else {
        let mut s = format!("time={time} level={} msg={}", level_name(level), quote(msg));
        for (k, v) in pairs {
            let _ = write!(s, " {k}={}", quote(&v));
        }
        s
    }
}

/// Go slog's text handler quotes values with spaces, quotes, `=` or control characters.
fn quote(v: &str) -> String {
    let needs = v.is_empty()
        || v.chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '=' || c.is_control());
    if needs {
        format!("{v:?}")
    } else {
        v.to_string()
    }
}

/// Something else drawn on the terminal the log goes to (the progress display, which owns the
/// lines below the log). The log writer thread hands it each batch of lines to write:
/// it takes itself off the screen, calls `write`, and draws itself again below.
pub trait Overlay: Send + Sync {
    /// Runs `write` (once) with the terminal free of the overlay.
    fn suspend(&self, write: &mut dyn FnMut());
}

/// The process logger: stderr, text or JSON; keep the [`LogFlush`] until the end.
pub fn logger(verbosity: Verbosity, json: bool) -> (slog::Logger, LogFlush) {
    logger_to(std::io::stderr(), verbosity, json)
}

/// A logger writing to `w` from a thread of its own, so that a blocked `w` never blocks the
/// code that logs (see [`QUEUE_VERBOSE`]).
pub fn logger_to<W: std::io::Write + Send + 'static>(
    w: W,
    verbosity: Verbosity,
    json: bool,
) -> (slog::Logger, LogFlush) {
    logger_with(w, verbosity, json, None)
}

/// Like [`logger_to`], each batch of lines written inside `overlay`'s
/// [`suspend`](Overlay::suspend), on the writer thread: a blocked `w` still blocks only it.
pub fn logger_over<W: std::io::Write + Send + 'static>(
    w: W,
    verbosity: Verbosity,
    json: bool,
    overlay: Arc<dyn Overlay>,
) -> (slog::Logger, LogFlush) {
    logger_with(w, verbosity, json, Some(overlay))
}

fn logger_with<W: std::io::Write + Send + 'static>(
    w: W,
    verbosity: Verbosity,
    json: bool,
    overlay: Option<Arc<dyn Overlay>>,
) -> (slog::Logger, LogFlush) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue::default()),
        overlay: overlay.map(std::panic::AssertUnwindSafe),
        ready: Condvar::new(),
        idle: Condvar::new(),
        json,
        written: AtomicU64::new(0),
    });
    let writer = shared.clone();
    std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || write_lines(&writer, w))
        .expect("spawn the log writer thread");
    let drain = RegsyncDrain {
        shared: shared.clone(),
        verbosity,
    };
    (
        slog::Logger::root(drain.fuse(), slog::o!()),
        LogFlush { shared },
    )
}

/// A logger that drops everything (unit tests).
pub fn discard() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn verbosity_names_and_offsets() {
        assert_eq!(Verbosity::parse("info").unwrap().0, 0);
        assert_eq!(Verbosity::parse("INFO").unwrap().0, 0);
        assert_eq!(Verbosity::parse("info+2").unwrap().0, 2);
        assert_eq!(Verbosity::parse("debug-1").unwrap().0, -5);
        assert_eq!(Verbosity::parse("trace").unwrap().0, -8);
        assert!(Verbosity::parse("TRACE").is_err());
        assert!(Verbosity::parse("loud").is_err());
    }

    #[test]
    fn text_and_json_lines() {
        let buf = Buf::default();
        let (log, flush) = logger_to(buf.clone(), Verbosity(0), false);
        slog::info!(log, "Image sync needed"; "source" => "a b", "target" => "t");
        slog::debug!(log, "hidden");
        flush.flush();
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(out.contains("level=INFO msg=\"Image sync needed\" source=\"a b\" target=t"));
        assert!(!out.contains("hidden"));

        let buf = Buf::default();
        let (log, flush) = logger_to(buf.clone(), Verbosity(-4), true);
        slog::debug!(log, "Sync summary"; "images_copied" => 3u64, "x" => "007");
        flush.flush();
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["images_copied"], 3);
        assert_eq!(v["x"], "007");
        assert_eq!(v["level"], "DEBUG");
    }

    /// Records what the output held when each suspension began and ended.
    struct Marks {
        buf: Buf,
        marks: Mutex<Vec<(usize, usize)>>,
    }
    impl Overlay for Marks {
        fn suspend(&self, write: &mut dyn FnMut()) {
            let before = self.buf.0.lock().unwrap().len();
            write();
            let after = self.buf.0.lock().unwrap().len();
            self.marks.lock().unwrap().push((before, after));
        }
    }

    #[test]
    fn with_an_overlay_every_line_is_written_inside_its_suspension() {
        let buf = Buf::default();
        let marks = Arc::new(Marks {
            buf: buf.clone(),
            marks: Mutex::default(),
        });
        let (log, flush) = logger_over(buf.clone(), Verbosity(0), false, marks.clone());
        for i in 0..50 {
            slog::info!(log, "line"; "i" => i);
        }
        assert!(flush.flush());
        let out = buf.0.lock().unwrap().clone();
        assert_eq!(String::from_utf8_lossy(&out).lines().count(), 50);
        let marks = marks.marks.lock().unwrap().clone();
        assert!(!marks.is_empty());
        // The suspensions cover the output end to end, one after the other: no byte was
        // written outside one.
        let mut at = 0;
        for (before, after) in marks {
            assert_eq!(before, at, "bytes written between two suspensions");
            at = after;
        }
        assert_eq!(at, out.len());
    }

    /// A writer that blocks until the gate opens (a full pipe nobody reads).
    #[derive(Clone)]
    struct Stalled {
        buf: Buf,
        open: Arc<(Mutex<bool>, Condvar)>,
    }
    impl std::io::Write for Stalled {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let (lock, cv) = &*self.open;
            let mut open = lock.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            self.buf.write(b)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_blocked_output_never_blocks_logging_and_keeps_the_order() {
        let stalled = Stalled {
            buf: Buf::default(),
            open: Arc::new((Mutex::new(false), Condvar::new())),
        };
        let (log, flush) = logger_to(stalled.clone(), Verbosity(Verbosity::TRACE), true);
        let total = 3 * QUEUE_ALL;
        let (tx, rx) = std::sync::mpsc::channel();
        let l2 = log.clone();
        std::thread::spawn(move || {
            for i in 0..total {
                slog::debug!(l2, "step"; "i" => i);
            }
            slog::info!(l2, "Sync summary"; "images_copied" => 1u64);
            let _ = tx.send(());
        });
        rx.recv_timeout(std::time::Duration::from_secs(20))
            .expect("logging blocked on a stalled output");
        {
            let (lock, cv) = &*stalled.open;
            *lock.lock().unwrap() = true;
            cv.notify_all();
        }
        flush.flush();
        let out = String::from_utf8(stalled.buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        // the summary made it, last
        assert_eq!(lines.last().unwrap()["msg"], "Sync summary");
        // what was written is in order, and every dropped line is counted where it was dropped
        let mut expect = 0u64;
        let mut written = 0;
        for l in &lines[..lines.len() - 1] {
            match l["msg"].as_str().unwrap() {
                "step" => {
                    assert_eq!(l["i"].as_u64().unwrap(), expect, "{l}");
                    expect += 1;
                    written += 1;
                }
                m if m.starts_with("Log messages dropped") => {
                    assert_eq!(l["level"], "WARN");
                    expect += l["count"].as_u64().unwrap();
                }
                other => panic!("unexpected line {other}"),
            }
        }
        assert_eq!(expect, total as u64);
        assert!(
            written < total,
            "nothing was dropped: the test proves nothing"
        );
    }
}
