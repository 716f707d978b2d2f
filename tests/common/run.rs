//! Run the `regsync` binary with a config written to a temp file, `--logopt json`, and parse
//! its stderr into JSON log objects plus plain (non-JSON) error lines.

use serde_json::Value;
use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_regsync");

/// The binary under test: `$REGSYNC_TEST_BIN` when set (e.g. to run the suite against the Go
/// regsync for parity), else the crate's `regsync`.
pub fn bin() -> String {
    std::env::var("REGSYNC_TEST_BIN")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| BIN.to_string())
}

/// Default wall-clock limit for one run.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// Every stderr line that parses as a JSON object, in order.
    pub json_logs: Vec<Value>,
    pub elapsed: Duration,
}

impl Output {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
    pub fn success(&self) -> bool {
        self.status.success()
    }
    /// Non-empty stderr lines that are not JSON log objects (the final error text).
    pub fn error_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .filter(|l| !is_json_obj(l))
            .collect()
    }
    /// JSON log lines whose `msg` equals `msg`.
    pub fn logs(&self, msg: &str) -> Vec<&Value> {
        self.json_logs
            .iter()
            .filter(|v| v["msg"].as_str() == Some(msg))
            .collect()
    }
    /// JSON log lines at `level` ("INFO", "DEBUG", "WARN", "ERROR").
    pub fn logs_at(&self, level: &str) -> Vec<&Value> {
        self.json_logs
            .iter()
            .filter(|v| v["level"].as_str() == Some(level))
            .collect()
    }
    /// A readable dump for assertion messages.
    pub fn dump(&self) -> String {
        format!(
            "status: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
    /// Panics (with the dump) unless the exit code is 0.
    pub fn assert_ok(&self) -> &Self {
        assert!(self.success(), "regsync failed:\n{}", self.dump());
        self.assert_no_panic();
        self
    }
    /// Panics unless the exit code is exactly 1 (and no panic happened).
    pub fn assert_fail(&self) -> &Self {
        assert_eq!(self.code(), Some(1), "expected exit 1:\n{}", self.dump());
        self.assert_no_panic();
        self
    }
    pub fn assert_no_panic(&self) {
        assert!(
            !self.stderr.contains("panicked"),
            "regsync panicked:\n{}",
            self.dump()
        );
    }
    /// Exactly one plain error line, containing at least one of `needles`; returns it.
    pub fn assert_one_error_line(&self, needles: &[&str]) -> String {
        let lines = self.error_lines();
        assert_eq!(
            lines.len(),
            1,
            "expected exactly one error line on stderr, got {lines:?}\n{}",
            self.dump()
        );
        let l = lines[0];
        assert!(
            needles.iter().any(|n| l.contains(n)),
            "error line {l:?} names none of {needles:?}\n{}",
            self.dump()
        );
        l.to_string()
    }
}

fn is_json_obj(line: &str) -> bool {
    let t = line.trim();
    t.starts_with('{')
        && serde_json::from_str::<Value>(t)
            .map(|v| v.is_object())
            .unwrap_or(false)
}

/// Split stderr into JSON objects (the rest stays in `stderr` and is visible via
/// [`Output::error_lines`]).
pub fn parse_json_logs(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .filter(|l| is_json_obj(l))
        .filter_map(|l| serde_json::from_str(l.trim()).ok())
        .collect()
}

/// Run `regsync <args> -c <tmp config> --logopt json`.
pub fn regsync(args: &[&str], config_yaml: &str) -> Output {
    regsync_env(args, config_yaml, &[])
}

/// Like [`regsync`] with extra environment variables.
pub fn regsync_env(args: &[&str], config_yaml: &str, env: &[(&str, &str)]) -> Output {
    let dir = tempfile::Builder::new()
        .prefix("regsync-test-run")
        .tempdir()
        .expect("tempdir");
    let cfg = dir.path().join("regsync.yml");
    std::fs::write(&cfg, config_yaml).unwrap();
    let docker_cfg = dir.path().join("docker");
    std::fs::create_dir_all(&docker_cfg).unwrap();
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .arg("-c")
        .arg(&cfg)
        .args(["--logopt", "json"]);
    run_cmd(cmd, &docker_cfg, env)
}

/// Run the binary with exactly `args` (no config, no `--logopt`).
pub fn regsync_raw(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin());
    cmd.args(args);
    run_cmd(cmd, dir.path(), &[])
}

/// Runs `argv` (a program and its arguments: a wrapper such as `setpriv` dropping to
/// another user, then a binary and its arguments) in the environment of [`regsync_raw`].
pub fn run_argv(argv: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..]);
    run_cmd(cmd, dir.path(), &[])
}

/// The environment every regsync a test starts runs in: no proxy (loopback only), no Docker
/// credentials of the machine (`DOCKER_CONFIG` = `docker_cfg`), backtraces on; stdin null.
pub fn loopback_env(cmd: &mut Command, docker_cfg: &std::path::Path) {
    for k in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "DOCKER_AUTH_CONFIG",
        "RUST_LOG",
    ] {
        cmd.env_remove(k);
    }
    cmd.env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .env("DOCKER_CONFIG", docker_cfg)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null());
}

/// Collects `child`'s stderr line by line on a thread of its own.
pub fn collect_stderr(
    child: &mut std::process::Child,
) -> (
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    std::thread::JoinHandle<()>,
) {
    use std::io::BufRead;
    let stderr = child.stderr.take().expect("stderr piped");
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let l2 = lines.clone();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            match line {
                Ok(l) => l2.lock().unwrap().push(l),
                Err(_) => break,
            }
        }
    });
    (lines, reader)
}

fn run_cmd(mut cmd: Command, docker_cfg: &std::path::Path, env: &[(&str, &str)]) -> Output {
    loopback_env(&mut cmd, docker_cfg);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let start = Instant::now();
    let mut child = cmd.spawn().expect("spawn regsync");
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t1 = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = so.read_to_end(&mut s);
        s
    });
    let t2 = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = se.read_to_end(&mut s);
        s
    });
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait regsync") {
            break st;
        }
        if start.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            let e = String::from_utf8_lossy(&t2.join().unwrap_or_default()).into_owned();
            panic!("regsync timed out after {RUN_TIMEOUT:?}\n--- stderr ---\n{e}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = String::from_utf8_lossy(&t1.join().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&t2.join().unwrap()).into_owned();
    let json_logs = parse_json_logs(&stderr);
    Output {
        status,
        stdout,
        stderr,
        json_logs,
        elapsed: start.elapsed(),
    }
}

/// The last `Sync summary` log line (panics with the output when absent).
pub fn summary(out: &Output) -> Value {
    out.json_logs
        .iter()
        .rev()
        .find(|v| v["msg"].as_str() == Some("Sync summary"))
        .cloned()
        .unwrap_or_else(|| panic!("no \"Sync summary\" log line\n{}", out.dump()))
}

/// An integer field of the summary (panics when missing or not an integer).
pub fn summary_field(out: &Output, field: &str) -> u64 {
    let s = summary(out);
    s[field]
        .as_u64()
        .unwrap_or_else(|| panic!("summary field {field} missing/not an integer: {s}"))
}

/// Does any log line with `msg` have a string field `field` containing `needle`?
pub fn log_mentions(out: &Output, msg: &str, field: &str, needle: &str) -> bool {
    out.logs(msg).iter().any(|v| {
        v[field]
            .as_str()
            .map(|s| s.contains(needle))
            .unwrap_or(false)
    })
}

/// Assert integer summary fields, e.g. `assert_summary(&out, &[("images_copied", 1)])`.
pub fn assert_summary(out: &Output, expect: &[(&str, u64)]) {
    let s = summary(out);
    for (k, v) in expect {
        assert_eq!(
            s[*k].as_u64(),
            Some(*v),
            "summary field {k}: {s}\n{}",
            out.dump()
        );
    }
}

/// The summary carries every documented counter as an integer.
pub fn assert_summary_complete(out: &Output) {
    let s = summary(out);
    for k in SUMMARY_FIELDS {
        assert!(
            s[k].is_u64(),
            "summary field {k} missing or not an integer: {s}"
        );
    }
    assert_eq!(s["level"], "INFO", "{s}");
}

pub const SUMMARY_FIELDS: [&str; 11] = [
    "images_checked",
    "images_copied",
    "images_matched",
    "images_skipped",
    "images_failed",
    "blobs_copied",
    "blobs_mounted",
    "blobs_skipped",
    "blobs_deduped",
    "manifests_pushed",
    "bytes_copied",
];
