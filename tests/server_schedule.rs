//! `regsync server` (spec §12) with the real binary, real registries and real signals: the
//! initial missing-only pass, `@every` firings that pick up a tag changed upstream, SIGTERM
//! (exit status, in the middle of a large copy), an invalid cron spec, and a step without a
//! schedule. Shutdown of `server` and `once`: `--shutdown-timeout` bounds the wait for work
//! that does not stop, a second signal exits at once, an interrupted `once` exits 1.

mod common;

use common::run::bin;
use common::server::Server;
use common::*;
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn index_of(logs: &[Value], msg: &str) -> Option<usize> {
    logs.iter().position(|v| v["msg"].as_str() == Some(msg))
}

fn wait_for(what: &str, timeout: Duration, mut pred: impl FnMut() -> bool) {
    let start = Instant::now();
    while !pred() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

const SIGTERM: i32 = libc::SIGTERM;

#[test]
fn initial_pass_then_every_firing_copies_a_changed_tag_and_sigterm_exits_0() {
    let (src, dst) = (Registry::start(), Registry::start());
    let (a, b, stale) = (oci_image(7100), docker_image(7101), oci_image(7199));
    push(&src, "app", "v1", &a);
    push(&src, "app", "v2", &b);
    push(&dst, "app", "v2", &stale);
    let step = repo_step(&src.r("app"), &dst.r("app"), &[], &[]) + "interval: 1s\n";
    let mut server = Server::start(&config(&[&src, &dst], 2, &[step]), &[]);

    // Initial pass, missing mode: v1 copied, the existing (different) v2 left alone.
    let first = server.wait_log("Step summary", Duration::from_secs(10), |_| true);
    assert_eq!(first["mode"], "missing", "{first}");
    assert_eq!(first["step"], "sync[0]", "{first}");
    // (missing mode lists the target's tags and looks only at the absent ones)
    assert_eq!(first["images_checked"], 1, "{first}");
    assert_eq!(first["images_copied"], 1, "{first}");
    assert_eq!(first["manifests_pushed"], 1, "{first}");
    assert!(first["bytes_copied"].as_u64().unwrap() > 0, "{first}");
    assert!(first["seconds"].is_string(), "{first}");
    assert_same_image(&src, &dst, "app", "v1");
    let sched = server.wait_log("Scheduled task", Duration::from_secs(1), |_| true);
    assert_eq!(sched["sched"], "@every 1s", "{sched}");

    // A firing in copy mode brings the stale v2 up to date.
    server.wait_log("Running task", Duration::from_secs(5), |_| true);
    wait_for("v2 refreshed", Duration::from_secs(5), || {
        manifest_digest(&dst, "app", "v2").as_deref() == Some(b.digest())
    });
    assert_same_image(&src, &dst, "app", "v2");

    // v1 changes upstream: a later firing copies the new content.
    let a2 = oci_image(7102);
    push(&src, "app", "v1", &a2);
    wait_for("v1 follows upstream", Duration::from_secs(6), || {
        manifest_digest(&dst, "app", "v1").as_deref() == Some(a2.digest())
    });
    assert_same_image(&src, &dst, "app", "v1");
    let copy_run = server.wait_log("Step summary", Duration::from_secs(3), |v| {
        v["mode"] == "copy" && v["images_copied"].as_u64() >= Some(1)
    });
    assert_eq!(copy_run["source"], src.r("app"), "{copy_run}");

    server.signal(SIGTERM);
    // Well under the 30 s `--shutdown-timeout`: the cancellation stopped the work, not the
    // deadline (a loaded 2-core CI machine gets room).
    let (status, took) = server.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{}", server.stderr());
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(
        server.error_lines().is_empty(),
        "{:?}",
        server.error_lines()
    );
    let logs = server.logs();
    let (i, s, w) = (
        index_of(&logs, "Interrupt received, stopping").expect("interrupt log"),
        index_of(&logs, "Stopping server").expect("stopping log"),
        index_of(&logs, "Waiting on running tasks").expect("waiting log"),
    );
    assert!(i < s && s < w, "order: {i} {s} {w}");
    assert_eq!(logs[s]["level"], "INFO");
    assert_eq!(logs[i]["level"], "DEBUG");
}

#[test]
fn invalid_cron_is_reported_with_step_and_text_and_exit_is_1_after_sigterm() {
    let (src, dst) = (Registry::start(), Registry::start());
    let img = oci_image(7200);
    push(&src, "bad", "v1", &img);
    let step = image_step(&src.r("bad:v1"), &dst.r("bad:v1")) + "schedule: \"61 * * * *\"\n";
    let mut server = Server::start(&config(&[&src, &dst], 0, &[step]), &[]);

    let e = server.wait_log("Failed to schedule cron", Duration::from_secs(10), |_| true);
    assert_eq!(e["level"], "ERROR", "{e}");
    assert_eq!(e["sched"], "61 * * * *", "{e}");
    assert_eq!(e["err"], "end of range (61) above maximum (59): 61", "{e}");
    assert_eq!(e["source"], src.r("bad:v1"), "{e}");
    assert_eq!(e["target"], dst.r("bad:v1"), "{e}");
    // regsync's quirk 7, kept: the step still gets its initial missing-only pass.
    server.wait_log("Step summary", Duration::from_secs(10), |v| {
        v["mode"] == "missing"
    });
    assert_same_image(&src, &dst, "bad", "v1");
    // ... and the server keeps running until told to stop.
    std::thread::sleep(Duration::from_millis(500));
    assert!(server.running(), "{}", server.stderr());

    server.signal(SIGTERM);
    let (status, _) = server.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(1), "{}", server.stderr());
    let lines = server.error_lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    for needle in [
        "sync[0]",
        "61 * * * *",
        "end of range (61) above maximum (59): 61",
    ] {
        assert!(lines[0].contains(needle), "{:?} lacks {needle:?}", lines[0]);
    }
}

#[test]
fn invalid_cron_with_abort_on_error_stops_without_a_signal() {
    let (src, dst) = (Registry::start(), Registry::start());
    push(&src, "bad", "v1", &oci_image(7300));
    let step = image_step(&src.r("bad:v1"), &dst.r("bad:v1")) + "schedule: \"0 0 * * 7\"\n";
    let mut server = Server::start(&config(&[&src, &dst], 0, &[step]), &["--abort-on-error"]);
    let (status, _) = server.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(1), "{}", server.stderr());
    let lines = server.error_lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("end of range (7) above maximum (6): 7"),
        "{lines:?}"
    );
    // Nothing ran: abort-on-error stops before the step's initial pass.
    assert!(
        server.logs_of("Step summary").is_empty(),
        "{}",
        server.stderr()
    );
    assert_eq!(manifest_digest(&dst, "bad", "v1"), None);
}

#[test]
fn step_without_schedule_or_interval_is_ignored() {
    let (src, dst) = (Registry::start(), Registry::start());
    push(&src, "idle", "v1", &oci_image(7400));
    push(&src, "busy", "v1", &oci_image(7401));
    let idle = image_step(&src.r("idle:v1"), &dst.r("idle:v1"));
    let busy = image_step(&src.r("busy:v1"), &dst.r("busy:v1")) + "schedule: \"@every 1s\"\n";
    let mut server = Server::start(&config(&[&src, &dst], 2, &[idle, busy]), &[]);

    let e = server.wait_log(
        "No schedule or interval found, ignoring",
        Duration::from_secs(10),
        |_| true,
    );
    assert_eq!(e["level"], "ERROR", "{e}");
    assert_eq!(e["source"], src.r("idle:v1"), "{e}");
    assert_eq!(e["target"], dst.r("idle:v1"), "{e}");
    assert_eq!(e["type"], "image", "{e}");
    // The scheduled step runs (initial pass and a firing); the other never does.
    server.wait_log("Step summary", Duration::from_secs(10), |v| {
        v["mode"] == "copy"
    });
    assert_same_image(&src, &dst, "busy", "v1");
    assert_eq!(manifest_digest(&dst, "idle", "v1"), None);
    assert!(
        server
            .logs_of("Step summary")
            .iter()
            .all(|v| v["step"] == "sync[1]"),
        "{}",
        server.stderr()
    );

    server.signal(SIGTERM);
    let (status, _) = server.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "{}", server.stderr());
}

#[test]
fn sigterm_during_a_large_copy_exits_fast_and_leaves_no_broken_tag() {
    let (src, dst) = (Registry::start(), Registry::start());
    // 12 layers of 512 KiB (6 MiB) read from a source paced at 3 requests per second: the
    // copy needs several seconds.
    let big = ImageSpec::new(7500, Format::Oci)
        .layers(12, 512 * 1024)
        .build();
    push(&src, "big", "v1", &big);
    let cfg = format!(
        "version: 1\ncreds:\n  - registry: {}\n    tls: disabled\n    reqPerSec: 3\n  - registry: {}\n    tls: disabled\ndefaults:\n  parallel: 2\nsync:\n  - source: {}\n    target: {}\n    type: image\n    interval: 1h\n",
        src.host(),
        dst.host(),
        src.r("big:v1"),
        dst.r("big:v1"),
    );
    let mut server = Server::start(&cfg, &[]);
    server.wait_log("Image sync running", Duration::from_secs(10), |_| true);
    // Let a few layers land, then stop in the middle.
    wait_for("some layers copied", Duration::from_secs(8), || {
        big.blob_digests()
            .iter()
            .filter(|d| blob_exists(&dst, "big", d))
            .count()
            >= 2
    });
    server.signal(SIGTERM);
    let (status, took) = server.wait_exit(Duration::from_secs(20));
    assert!(
        took < Duration::from_secs(10),
        "took {took:?}\n{}",
        server.stderr()
    );
    // A cancelled copy is not an error.
    assert_eq!(status.code(), Some(0), "{}", server.stderr());
    // The run was really interrupted, and the tag is absent or complete, never dangling.
    let landed = big
        .blob_digests()
        .iter()
        .filter(|d| blob_exists(&dst, "big", d))
        .count();
    assert!(
        landed < big.blob_digests().len(),
        "copy finished before the signal"
    );
    match manifest_digest(&dst, "big", "v1") {
        None => {}
        Some(d) => {
            assert_eq!(d, big.digest());
            assert_same_image(&src, &dst, "big", "v1");
        }
    }

    // The next run completes the work.
    let out = regsync(&["once"], &cfg);
    out.assert_ok();
    assert_same_image(&src, &dst, "big", "v1");
}

/// A credential helper that never answers keeps an image's first request waiting (the helper
/// runs outside the run's cancellation): the work that does not stop on a signal.
fn hanging_cred_helper(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("hanging-helper");
    // Its output closed: an orphaned `sleep` must not hold the test's stderr pipe open.
    std::fs::write(&p, "#!/bin/sh\nexec sleep 60 </dev/null >/dev/null 2>&1\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn hanging_config(src: &Registry, dst: &Registry, helper: &std::path::Path) -> String {
    format!(
        "version: 1\ncreds:\n  - registry: {}\n    tls: disabled\n    credHelper: {}\n  - registry: {}\n    tls: disabled\nsync:\n  - source: {}\n    target: {}\n    type: image\n    interval: 1h\n",
        src.host(),
        helper.display(),
        dst.host(),
        src.r("app:v1"),
        dst.r("app:v1"),
    )
}

#[test]
fn shutdown_timeout_bounds_the_wait_for_work_that_does_not_stop() {
    let src = Registry::with_auth("u", "p");
    let dst = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let helper = hanging_cred_helper(dir.path());
    let mut server = Server::start(
        &hanging_config(&src, &dst, &helper),
        &["--shutdown-timeout", "1s"],
    );
    // The source's 401: the credential helper is running now.
    server.wait_log("registry response", Duration::from_secs(10), |v| {
        v["status"] == 401
    });
    std::thread::sleep(Duration::from_millis(300));
    server.signal(SIGTERM);
    let (status, took) = server.wait_exit(Duration::from_secs(20));
    assert!(
        took < Duration::from_secs(6),
        "took {took:?}\n{}",
        server.stderr()
    );
    assert_eq!(status.code(), Some(1), "{}", server.stderr());
    let errors = server.error_lines();
    assert!(
        errors.iter().any(|l| l.contains("shutdown timed out")),
        "{errors:?}"
    );
    assert_eq!(
        server.logs_of("Sync summary").len(),
        1,
        "{}",
        server.stderr()
    );
}

#[test]
fn a_second_signal_exits_at_once() {
    let src = Registry::with_auth("u", "p");
    let dst = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let helper = hanging_cred_helper(dir.path());
    let mut server = Server::start(&hanging_config(&src, &dst, &helper), &[]);
    server.wait_log("registry response", Duration::from_secs(10), |v| {
        v["status"] == 401
    });
    server.signal(SIGTERM);
    // The first signal waits for the work (default timeout 30 s); the second does not.
    std::thread::sleep(Duration::from_millis(500));
    assert!(server.running(), "{}", server.stderr());
    server.signal(SIGTERM);
    let (status, took) = server.wait_exit(Duration::from_secs(10));
    assert!(
        took < Duration::from_secs(2),
        "took {took:?}\n{}",
        server.stderr()
    );
    assert_eq!(status.code(), Some(128 + 15), "{}", server.stderr());
}

#[test]
fn sigterm_stops_once_with_exit_1_a_summary_and_no_broken_tag() {
    let (src, dst) = (Registry::start(), Registry::start());
    let big = ImageSpec::new(7600, Format::Oci)
        .layers(12, 512 * 1024)
        .build();
    push(&src, "big", "v1", &big);
    let cfg = format!(
        "version: 1\ncreds:\n  - registry: {}\n    tls: disabled\n    reqPerSec: 3\n  - registry: {}\n    tls: disabled\nsync:\n  - source: {}\n    target: {}\n    type: image\n",
        src.host(),
        dst.host(),
        src.r("big:v1"),
        dst.r("big:v1"),
    );
    let mut once = Server::start_cmd("once", &cfg, &[]);
    wait_for("some layers copied", Duration::from_secs(10), || {
        big.blob_digests()
            .iter()
            .filter(|d| blob_exists(&dst, "big", d))
            .count()
            >= 2
    });
    once.signal(SIGTERM);
    let (status, took) = once.wait_exit(Duration::from_secs(20));
    assert!(
        took < Duration::from_secs(10),
        "took {took:?}\n{}",
        once.stderr()
    );
    assert_eq!(status.code(), Some(1), "{}", once.stderr());
    let errors = once.error_lines();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("interrupted by SIGTERM"), "{errors:?}");
    assert_eq!(once.logs_of("Sync summary").len(), 1, "{}", once.stderr());
    match manifest_digest(&dst, "big", "v1") {
        None => {}
        Some(d) => {
            assert_eq!(d, big.digest());
            assert_same_image(&src, &dst, "big", "v1");
        }
    }
}

#[test]
fn a_bad_shutdown_timeout_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("regsync.yml");
    std::fs::write(&cfg, "version: 1\nsync: []\n").unwrap();
    let out = Command::new(bin())
        .args(["once", "-c"])
        .arg(&cfg)
        .arg("--shutdown-timeout=-5s")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("shutdown-timeout"), "{err}");
}

/// Logging never blocks the copy (a bounded queue and a writer thread), and it must not block
/// the exit either: a stderr nobody reads (a full pipe) cannot hold the process after a
/// signal for longer than `--shutdown-timeout` plus a short wait for the last lines.
#[test]
fn an_unread_stderr_does_not_hold_the_exit_after_a_signal() {
    use std::os::fd::AsRawFd;
    let (src, dst) = (Registry::start(), Registry::start());
    let big = ImageSpec::new(7700, Format::Oci)
        .layers(12, 256 * 1024)
        .build();
    push(&src, "big", "v1", &big);
    let cfg = format!(
        "version: 1\ncreds:\n  - registry: {}\n    tls: disabled\n    reqPerSec: 3\n  - registry: {}\n    tls: disabled\nsync:\n  - source: {}\n    target: {}\n    type: image\n",
        src.host(),
        dst.host(),
        src.r("big:v1"),
        dst.r("big:v1"),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("regsync.yml");
    std::fs::write(&path, cfg).unwrap();
    let mut child = Command::new(bin())
        .args([
            "once",
            "-v",
            "trace",
            "--logopt",
            "json",
            "--shutdown-timeout",
            "2s",
            "-c",
        ])
        .arg(&path)
        .env("DOCKER_CONFIG", dir.path())
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The smallest pipe the kernel allows, never read while the process runs.
    let stderr = child.stderr.take().unwrap();
    unsafe { libc::fcntl(stderr.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) };
    wait_for("a layer copied", Duration::from_secs(15), || {
        big.blob_digests()
            .iter()
            .any(|d| blob_exists(&dst, "big", d))
    });
    let rc = unsafe { libc::kill(child.id() as i32, SIGTERM) };
    assert_eq!(rc, 0);
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if start.elapsed() > Duration::from_secs(30) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    drop(stderr);
    let status = status.expect("regsync did not exit within 30 s of SIGTERM with stderr unread");
    assert_eq!(status.code(), Some(1), "{status:?}");
}
