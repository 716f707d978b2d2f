//! Every step run owns its counters: two steps of `server` whose runs overlap each report
//! only their own images, blobs and bytes in their `Step summary`, and the closing `Sync
//! summary` is the total of both.

mod common;

use common::run::{bin, parse_json_logs};
use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `regsync server` with JSON debug logs collected line by line; stopped with SIGTERM.
struct Server {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(config_yaml: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("regsync.yml");
        std::fs::write(&cfg, config_yaml).unwrap();
        let docker = dir.path().join("docker");
        std::fs::create_dir_all(&docker).unwrap();
        let mut cmd = Command::new(bin());
        cmd.arg("server")
            .arg("-c")
            .arg(&cfg)
            .args(["--logopt", "json", "-v", "debug"]);
        for k in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
            "DOCKER_AUTH_CONFIG",
        ] {
            cmd.env_remove(k);
        }
        cmd.env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .env("DOCKER_CONFIG", &docker)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn regsync server");
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l2 = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                match line {
                    Ok(l) => l2.lock().unwrap().push(l),
                    Err(_) => break,
                }
            }
        });
        Server {
            child,
            lines,
            reader: Some(reader),
            _dir: dir,
        }
    }

    fn stderr(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    fn logs_of(&self, msg: &str) -> Vec<Value> {
        parse_json_logs(&self.stderr())
            .into_iter()
            .filter(|v| v["msg"] == msg)
            .collect()
    }

    /// Waits until `n` lines with `msg` were logged (panics with the log after `timeout`).
    fn wait_for(&mut self, msg: &str, n: usize, timeout: Duration) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let found = self.logs_of(msg);
            if found.len() >= n {
                return found;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("server exited ({st})\n{}", self.stderr());
            }
            assert!(
                start.elapsed() < timeout,
                "timed out waiting for {n} {msg:?}\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// SIGTERM, then the exit (bounded); the reader has seen every line afterwards.
    fn stop(&mut self) {
        let rc = unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill");
        let start = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "server did not stop\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn field(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("field {k} missing: {v}"))
}

/// `server`'s initial pass runs both steps at once (`parallel: 2`): a repository of three
/// tags and a single image. Each `Step summary` counts only its own step's work, whichever
/// finishes first; the `Sync summary` at the stop is their sum.
#[test]
fn overlapping_step_runs_each_count_only_their_own_work() {
    let (src, dst) = (Registry::start(), Registry::start());
    let alpha = [oci_image(9100), oci_image(9101), oci_image(9102)];
    for (i, img) in alpha.iter().enumerate() {
        push(&src, "alpha", &format!("v{i}"), img);
    }
    let beta = docker_image(9110);
    push(&src, "beta", "v1", &beta);
    let steps = [
        repo_step(&src.r("alpha"), &dst.r("alpha"), &[], &[]) + "interval: 1h\n",
        image_step(&src.r("beta:v1"), &dst.r("beta:v1")) + "interval: 1h\n",
    ];
    let mut server = Server::start(&config(&[&src, &dst], 2, &steps));
    let summaries = server.wait_for("Step summary", 2, Duration::from_secs(30));
    let of = |step: &str| {
        summaries
            .iter()
            .find(|v| v["step"] == step)
            .unwrap_or_else(|| panic!("no Step summary for {step}\n{summaries:?}"))
            .clone()
    };
    let (a, b) = (of("sync[0]"), of("sync[1]"));
    for (s, images, bytes) in [
        (&a, 3, alpha.iter().map(|i| i.blob_bytes()).sum::<usize>()),
        (&b, 1, beta.blob_bytes()),
    ] {
        assert_eq!(s["mode"], "missing", "{s}");
        assert_eq!(s["errors"], 0, "{s}");
        assert_eq!(field(s, "images_checked"), images, "{s}");
        assert_eq!(field(s, "images_copied"), images, "{s}");
        assert_eq!(field(s, "images_failed"), 0, "{s}");
        assert_eq!(field(s, "manifests_pushed"), images, "{s}");
        assert_eq!(field(s, "bytes_copied"), bytes as u64, "{s}");
    }
    for (i, _) in alpha.iter().enumerate() {
        assert_same_image(&src, &dst, "alpha", &format!("v{i}"));
    }
    assert_same_image(&src, &dst, "beta", "v1");

    server.stop();
    let total = server
        .logs_of("Sync summary")
        .pop()
        .unwrap_or_else(|| panic!("no Sync summary\n{}", server.stderr()));
    for k in [
        "images_checked",
        "images_copied",
        "manifests_pushed",
        "blobs_copied",
        "bytes_copied",
    ] {
        assert_eq!(
            field(&total, k),
            field(&a, k) + field(&b, k),
            "{k}: {total}"
        );
    }
}

/// SIGTERM in the middle of a copy: the interrupted image is counted as cancelled, not as
/// failed, in the step run's `Step summary` and in the `Sync summary`.
#[test]
fn an_image_stopped_by_sigterm_counts_as_canceled_not_failed() {
    let (src, dst) = (Registry::start(), Registry::start());
    // 12 layers read from a source paced at 3 requests per second: several seconds of copy.
    let big = ImageSpec::new(9200, Format::Oci)
        .layers(12, 256 * 1024)
        .build();
    push(&src, "big", "v1", &big);
    let cfg = format!(
        "version: 1\ncreds:\n  - registry: {}\n    tls: disabled\n    reqPerSec: 3\n  - registry: {}\n    tls: disabled\ndefaults:\n  parallel: 2\nsync:\n  - source: {}\n    target: {}\n    type: image\n    interval: 1h\n",
        src.host(),
        dst.host(),
        src.r("big:v1"),
        dst.r("big:v1"),
    );
    let mut server = Server::start(&cfg);
    server.wait_for("Image sync running", 1, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    server.stop();
    assert_eq!(
        manifest_digest(&dst, "big", "v1"),
        None,
        "copy finished before the signal"
    );
    let step = server
        .logs_of("Step summary")
        .pop()
        .unwrap_or_else(|| panic!("no Step summary\n{}", server.stderr()));
    let total = server
        .logs_of("Sync summary")
        .pop()
        .unwrap_or_else(|| panic!("no Sync summary\n{}", server.stderr()));
    for s in [&step, &total] {
        assert_eq!(field(s, "images_checked"), 1, "{s}");
        assert_eq!(field(s, "images_canceled"), 1, "{s}");
        assert_eq!(field(s, "images_failed"), 0, "{s}");
        assert_eq!(field(s, "images_copied"), 0, "{s}");
    }
}
