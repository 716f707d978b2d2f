//! Logging in regsync's shape (Go slog): `time=… level=INFO msg="Image sync needed" source=…`
//! on stderr, or one JSON object per line with `--logopt json`. Built on slog.

use slog::{Drain, Level, OwnedKVList, Record, KV};
use std::fmt::Write as _;

use std::sync::Mutex;

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

pub struct RegsyncDrain<W: std::io::Write + Send> {
    out: Mutex<W>,
    json: bool,
    verbosity: Verbosity,
}

impl<W: std::io::Write + Send> Drain for RegsyncDrain<W> {
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
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let msg = record.msg().to_string();
        let line = if self.json {
            let mut obj = serde_json::Map::new();
            obj.insert("time".into(), time.into());
            obj.insert("level".into(), level_name(record.level()).into());
            obj.insert("msg".into(), msg.into());
            for (k, v) in pairs.0 {
                let value = match v.parse::<i64>() {
                    Ok(n) if !v.starts_with('+') && (v == "0" || !v.starts_with('0')) => n.into(),
                    _ => serde_json::Value::String(v),
                };
                obj.insert(k, value);
            }
            serde_json::Value::Object(obj).to_string()
        } else {
            let mut s = format!(
                "time={time} level={} msg={}",
                level_name(record.level()),
                quote(&msg)
            );
            for (k, v) in pairs.0 {
                let _ = write!(s, " {k}={}", quote(&v));
            }
            s
        };
        if let Ok(mut out) = self.out.lock() {
            let _ = writeln!(out, "{line}");
        }
        Ok(())
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

/// The process logger: stderr, text or JSON.
pub fn logger(verbosity: Verbosity, json: bool) -> slog::Logger {
    logger_to(std::io::stderr(), verbosity, json)
}

pub fn logger_to<W: std::io::Write + Send + 'static>(
    w: W,
    verbosity: Verbosity,
    json: bool,
) -> slog::Logger {
    let drain = RegsyncDrain {
        out: Mutex::new(w),
        json,
        verbosity,
    };
    slog::Logger::root(drain.fuse(), slog::o!())
}

/// A logger that drops everything (unit tests).
pub fn discard() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

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
        let log = logger_to(buf.clone(), Verbosity(0), false);
        slog::info!(log, "Image sync needed"; "source" => "a b", "target" => "t");
        slog::debug!(log, "hidden");
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(out.contains("level=INFO msg=\"Image sync needed\" source=\"a b\" target=t"));
        assert!(!out.contains("hidden"));

        let buf = Buf::default();
        let log = logger_to(buf.clone(), Verbosity(-4), true);
        slog::debug!(log, "Sync summary"; "images_copied" => 3u64, "x" => "007");
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["images_copied"], 3);
        assert_eq!(v["x"], "007");
        assert_eq!(v["level"], "DEBUG");
    }
}
