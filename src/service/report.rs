//! `once --report FILE` / `check --report FILE`: one JSON document per run, for comparing two
//! runs (benchmarks, a nightly mirror) with `diff` or `jq`. The schema is in the README
//! ("Run report"); every list has a fixed order (steps by index, failures as they were
//! logged, registries by name, requests by method, kind and status), so two reports of the
//! same catalog differ only where the runs did.

use super::status::{counts, registry, shard, time};
use crate::config::Config;
use crate::engine::host_stats::HostSnapshot;
use crate::engine::report::{image_of_error_line, RunReport};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Where the report goes: `-` is stdout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReportPath {
    Stdout,
    File(PathBuf),
}

impl std::str::FromStr for ReportPath {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "" => Err("empty path (use - for stdout)".into()),
            "-" => Ok(ReportPath::Stdout),
            p => Ok(ReportPath::File(PathBuf::from(p))),
        }
    }
}

impl ReportPath {
    /// Fails before the run starts when the file could not be written at its end: its folder
    /// is missing or not a folder.
    pub fn check(&self) -> Result<(), String> {
        let ReportPath::File(p) = self else {
            return Ok(());
        };
        let dir = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            return Err(format!(
                "--report {}: folder {} does not exist",
                p.display(),
                dir.display()
            ));
        }
        if p.is_dir() {
            return Err(format!("--report {}: is a folder", p.display()));
        }
        Ok(())
    }

    /// Writes `doc` whole: to a temporary file beside the target, then renamed over it, so a
    /// reader never sees half a report.
    pub fn write(&self, doc: &Value) -> Result<(), String> {
        let mut text = serde_json::to_string_pretty(doc).unwrap_or_default();
        text.push('\n');
        match self {
            ReportPath::Stdout => {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                // A closed stdout (`| head`) is the reader's choice, not a failure.
                let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
                Ok(())
            }
            ReportPath::File(p) => {
                let fail = |e: std::io::Error| format!("--report {}: {e}", p.display());
                let name = p.file_name().unwrap_or_default().to_string_lossy();
                let tmp = p.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
                std::fs::write(&tmp, text).map_err(|e| {
                    let _ = std::fs::remove_file(&tmp);
                    fail(e)
                })?;
                std::fs::rename(&tmp, p).map_err(|e| {
                    let _ = std::fs::remove_file(&tmp);
                    fail(e)
                })
            }
        }
    }
}

/// What the caller knows of the run besides the engine's report.
pub struct RunInfo<'a> {
    pub version: &'a str,
    /// `once` or `check`.
    pub mode: &'a str,
    /// `once --missing`.
    pub missing: bool,
    pub start: SystemTime,
    pub end: SystemTime,
    /// A signal stopped the run before every step finished.
    pub interrupted: bool,
    /// `--shard` (`0/1` when not sharded).
    pub shard: crate::shard::Shard,
}

/// The report document.
pub fn document(
    info: &RunInfo,
    config: &Config,
    run: &RunReport,
    registries: &[HostSnapshot],
) -> Value {
    let seconds = info
        .end
        .duration_since(info.start)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let result = if info.interrupted {
        "interrupted"
    } else if run.errors.is_empty() {
        "ok"
    } else {
        "failed"
    };
    let steps: Vec<Value> = run
        .steps
        .iter()
        .map(|s| {
            let step = config.sync.get(s.step);
            let (mut failed, mut other) = (Vec::new(), Vec::new());
            for line in &s.errors {
                match image_of_error_line(line) {
                    Some((source, target)) => failed.push(json!({
                        "source": source,
                        "target": target,
                        "error": line,
                    })),
                    None => other.push(Value::String(line.clone())),
                }
            }
            json!({
                "step": s.step,
                "name": format!("sync[{}]", s.step),
                "type": step.map(|st| st.kind.as_str()),
                "source": step.map(|st| st.source.as_str()),
                "target": step.map(|st| st.target.as_str()),
                "result": if s.errors.is_empty() { "ok" } else { "failed" },
                "seconds": s.duration.as_secs_f64(),
                "counts": counts(&s.counts),
                "shard": {
                    "repositories_owned": s.counts.repos_owned,
                    "repositories_other_shards": s.counts.repos_other_shards,
                },
                "failed_images": failed,
                "errors": other,
            })
        })
        .collect();
    json!({
        "version": info.version,
        "mode": info.mode,
        "missing": info.missing,
        "start": time(Some(info.start)),
        "end": time(Some(info.end)),
        "seconds": seconds,
        "result": result,
        "shard": shard(info.shard, &run.counts),
        "totals": counts(&run.counts),
        "errors": run.errors.len(),
        "steps": steps,
        "registries": registries.iter().map(registry).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_paths() {
        assert_eq!("-".parse::<ReportPath>(), Ok(ReportPath::Stdout));
        assert!("".parse::<ReportPath>().is_err());
        let missing = ReportPath::File("/nonexistent-dir-xyz/r.json".into());
        let e = missing.check().unwrap_err();
        assert!(
            e.contains("/nonexistent-dir-xyz/r.json") && e.contains("does not exist"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let folder = ReportPath::File(dir.path().to_path_buf());
        assert!(folder.check().unwrap_err().contains("is a folder"));
        let file = ReportPath::File(dir.path().join("r.json"));
        file.check().unwrap();
        file.write(&json!({"a": 1})).unwrap();
        let text = std::fs::read_to_string(dir.path().join("r.json")).unwrap();
        assert_eq!(text, "{\n  \"a\": 1\n}\n");
        // Nothing else is left beside it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
