//! A `regsync` process (`server`, or `once`/`check` when a test needs to signal it) with its
//! JSON stderr collected line by line: wait for log lines and step summaries, send signals,
//! wait for the exit. Dropping it sends SIGTERM, then SIGKILL after 5 s.

use super::run::{bin, parse_json_logs};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A `regsync server` process with its stderr collected line by line.
pub struct Server {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Server {
    pub fn start(config_yaml: &str, extra: &[&str]) -> Server {
        Server::start_cmd("server", config_yaml, extra)
    }

    /// `regsync <command>` (`server`, `once`, `check`) with JSON debug logs.
    pub fn start_cmd(command: &str, config_yaml: &str, extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("regsync.yml");
        std::fs::write(&cfg, config_yaml).unwrap();
        let docker = dir.path().join("docker");
        std::fs::create_dir_all(&docker).unwrap();
        let mut cmd = Command::new(bin());
        cmd.arg(command)
            .arg("-c")
            .arg(&cfg)
            .args(["--logopt", "json", "-v", "debug"])
            .args(extra);
        super::run::loopback_env(&mut cmd, &docker);
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn regsync server");
        let (lines, reader) = super::run::collect_stderr(&mut child);
        Server {
            child,
            lines,
            reader: Some(reader),
            _dir: dir,
        }
    }

    /// The config file the process was started with (rewrite it, then SIGHUP).
    pub fn config_path(&self) -> std::path::PathBuf {
        self._dir.path().join("regsync.yml")
    }

    pub fn stderr(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    pub fn logs(&self) -> Vec<Value> {
        parse_json_logs(&self.stderr())
    }

    /// Log lines with `msg` so far.
    pub fn logs_of(&self, msg: &str) -> Vec<Value> {
        self.logs()
            .into_iter()
            .filter(|v| v["msg"].as_str() == Some(msg))
            .collect()
    }

    /// Polls until `pred` holds (panics with the log after `timeout`).
    pub fn wait_until(
        &mut self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&Server) -> bool,
    ) {
        let start = Instant::now();
        loop {
            if pred(self) {
                return;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                // One last look: the line may have arrived with the exit.
                self.join_reader();
                if pred(self) {
                    return;
                }
                panic!(
                    "server exited ({st}) while waiting for {what}\n{}",
                    self.stderr()
                );
            }
            if start.elapsed() > timeout {
                panic!("timed out waiting for {what}\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits for a log line with `msg` whose fields satisfy `pred`.
    pub fn wait_log(
        &mut self,
        msg: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let mut found = None;
        self.wait_until(&format!("log {msg:?}"), timeout, |s| {
            found = s.logs_of(msg).into_iter().find(|v| pred(v));
            found.is_some()
        });
        found.unwrap()
    }

    pub fn signal(&self, sig: i32) {
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill({sig})");
    }

    pub fn join_reader(&mut self) {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }

    /// Waits for the exit (panics after `timeout`); returns the status and how long it took.
    pub fn wait_exit(&mut self, timeout: Duration) -> (ExitStatus, Duration) {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                self.join_reader();
                assert!(
                    !self.stderr().contains("panicked"),
                    "server panicked\n{}",
                    self.stderr()
                );
                return (st, start.elapsed());
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                let _ = self.child.wait();
                self.join_reader();
                panic!("server did not exit within {timeout:?}\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Plain (non-JSON) stderr lines: the final error text.
    pub fn error_lines(&self) -> Vec<String> {
        self.stderr()
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('{'))
            .map(String::from)
            .collect()
    }

    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// The process id of the `regsync` process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `n` log lines with `msg` were seen; returns them all.
    pub fn wait_logs(&mut self, msg: &str, n: usize, timeout: Duration) -> Vec<Value> {
        self.wait_until(&format!("{n} log lines {msg:?}"), timeout, |s| {
            s.logs_of(msg).len() >= n
        });
        self.logs_of(msg)
    }

    pub fn summaries(&self) -> Vec<Value> {
        parse_json_logs(&self.stderr())
            .into_iter()
            .filter(|v| v["msg"] == "Step summary")
            .collect()
    }

    /// Waits for a `Step summary` after the first `skip` ones that satisfies `pred`.
    pub fn wait_summary(&mut self, skip: usize, timeout: Duration, pred: impl Fn(&Value) -> bool) {
        let start = Instant::now();
        loop {
            if self.summaries().iter().skip(skip).any(&pred) {
                return;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("server exited ({st})\n{}", self.stderr());
            }
            assert!(
                start.elapsed() < timeout,
                "timed out waiting for a step summary\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if self.child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `--listen`: the address the process logged in its `Listening` line (waits for it).
impl Server {
    pub fn listen_addr(&mut self) -> String {
        let line = self.wait_log("Listening", Duration::from_secs(10), |_| true);
        line["addr"]
            .as_str()
            .unwrap_or_else(|| panic!("Listening without addr: {line}"))
            .to_string()
    }
}

/// `GET http://{addr}{path}`: the status and the body text (panics when nothing answers).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    try_http_get(addr, path).unwrap_or_else(|e| panic!("GET {path} on {addr}: {e}"))
}

/// [`http_get`] for a listener that may be gone (a `once` run that just ended).
pub fn try_http_get(addr: &str, path: &str) -> Result<(u16, String), String> {
    super::block_on(async {
        let resp = super::http()
            .get(format!("http://{addr}{path}"))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        Ok((status, resp.text().await.unwrap_or_default()))
    })
}

/// The value of the sample `name{labels}` (`labels` as written in the exposition, without
/// braces; empty for none) in a Prometheus text exposition.
pub fn metric(text: &str, name: &str, labels: &str) -> Option<f64> {
    let key = if labels.is_empty() {
        name.to_string()
    } else {
        format!("{name}{{{labels}}}")
    };
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(&key)?.strip_prefix(' ')?.trim().parse().ok())
}
