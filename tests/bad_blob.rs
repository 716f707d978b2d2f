//! One broken object fails alone and fast: a source whose every GET of one layer answers 500
//! fails that image within seconds (its retries back off on that blob, not on the whole
//! host), the other image sharing its base layer still copies, and the target layout stays
//! consistent.

mod common;

use common::faults::{FaultOpts, FaultProxy};
use common::oci::sha256_digest;
use common::rewrite::{Reply, RewriteOpts, RewriteProxy};
use common::server::Server;
use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The image that cannot be copied must fail within this (Go regsync: about 3 s).
const FAIL_BOUND: Duration = Duration::from_secs(15);

#[test]
fn one_blob_always_failing_fails_its_image_alone_and_fast() {
    let src = Registry::start();
    let base = layer(7100, 4096, Format::Oci);
    let good = ImageSpec::new(7101, Format::Oci)
        .base(std::slice::from_ref(&base))
        .layers(1, 4096)
        .build();
    let bad = ImageSpec::new(7102, Format::Oci)
        .base(std::slice::from_ref(&base))
        .layers(1, 4096)
        .build();
    push(&src, "app", "good", &good);
    push(&src, "app", "bad", &bad);
    let broken = bad
        .blobs
        .iter()
        .find(|b| b.media_type.contains("layer") && b.digest != base.digest)
        .expect("a layer only the bad image has")
        .digest
        .clone();
    let sp = failing(&src.url(), &broken);
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let cfg = config(
        &[&sp],
        1,
        &[repo_step(&sp.r("app"), &ocidir_ref(&layout, ""), &[], &[])],
    );
    let out = regsync(&["once"], &cfg);

    assert_eq!(out.code(), Some(1), "{}", out.dump());
    out.assert_no_panic();
    let line = out.assert_one_error_line(&["app:bad"]);
    eprintln!("failure line after {:?}: {line}", out.elapsed);
    assert!(!line.contains("app:good"), "{line}");
    assert!(
        out.elapsed < FAIL_BOUND,
        "took {:?} to give up on one broken blob\n{}",
        out.elapsed,
        out.dump()
    );
    assert!(sp.stats().failed > 0, "the broken blob was never asked for");
    assert_same_image_at(&src, "app", tmp.path(), "layout", "good");
    assert_summary(&out, &[("images_copied", 1), ("images_failed", 1)]);
    assert_layout_consistent(&layout);
}

/// Every blob referenced from `index.json` and (recursively) from the manifests exists with
/// its size and digest, and nothing but `oci-layout`, `index.json` and blobs is left behind.
fn assert_layout_consistent(layout: &Path) {
    let index = read_json(&layout.join("index.json"));
    let mut seen = BTreeSet::new();
    let mut todo: Vec<Value> = index["manifests"].as_array().cloned().unwrap_or_default();
    while let Some(desc) = todo.pop() {
        let digest = desc["digest"].as_str().expect("digest").to_string();
        if !seen.insert(digest.clone()) {
            continue;
        }
        let path = blob_path(layout, &digest);
        let data = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{digest} is referenced but missing: {e}"));
        assert_eq!(
            data.len() as u64,
            desc["size"].as_u64().expect("size"),
            "{digest}"
        );
        assert_eq!(sha256_digest(&data), digest, "{digest} content");
        let mt = desc["mediaType"].as_str().unwrap_or("");
        if mt.contains("manifest") || mt.contains("index") {
            let m: Value = serde_json::from_slice(&data).expect("manifest JSON");
            if let Some(c) = m.get("config") {
                todo.push(c.clone());
            }
            for key in ["layers", "manifests"] {
                todo.extend(m[key].as_array().cloned().unwrap_or_default());
            }
        }
    }
    assert!(!seen.is_empty(), "the layout lists nothing");
    for entry in walk(layout) {
        let rel = entry
            .strip_prefix(layout)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let ok = rel == "oci-layout"
            || rel == "index.json"
            || (rel.starts_with("blobs/sha256/")
                && rel.len() == "blobs/sha256/".len() + 64
                && !rel.ends_with(".tmp"));
        assert!(ok, "stray file in the layout: {rel}");
    }
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{p:?}: {e}"))).unwrap()
}

fn blob_path(layout: &Path, digest: &str) -> std::path::PathBuf {
    let (alg, hex) = digest.split_once(':').expect("alg:hex");
    layout.join("blobs").join(alg).join(hex)
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The upload sessions `registry` holds for `repo`: distribution keeps one directory per
/// session under `_uploads`, with the blob so far (`data`) and its start time (`startedat`,
/// which its purge reads, a week later by default), until it is committed or deleted. A
/// directory with neither is what distribution 2.8 leaves after a successful `DELETE` (its
/// close after the cancel writes the hash state again), not a session.
fn upload_sessions(registry: &Registry, repo: &str) -> Vec<String> {
    let dir = registry
        .data_dir()
        .join("docker/registry/v2/repositories")
        .join(repo)
        .join("_uploads");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("data").exists() || p.join("startedat").exists())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// `dst` holds no upload session of `app` (`log`: the run's output, for the failure message).
fn assert_no_session_left(dst: &Registry, log: &str) {
    let left = upload_sessions(dst, "app");
    assert!(
        left.is_empty(),
        "upload sessions left on the target: {left:?}\n{log}"
    );
}

/// SIGTERM while a blob is being uploaded: the run's cancellation stops the upload, and its
/// upload session on the target is still deleted (best effort, within a few seconds), not
/// left for the registry's week-long purge at every restart of a mirror.
///
/// The download stalls before its first byte, so the upload is in flight with nothing stored
/// yet. Once part of a monolithic body is stored, distribution refuses a `DELETE` whose
/// `_state` (from the `Location` the client holds) names another offset (2.8 then even fails
/// to cancel the session): that case is left to the registry's purge, and not tested here
/// (chunked uploads: `a_chunked_upload_stopped_by_sigterm_has_its_session_deleted`).
#[test]
fn an_upload_stopped_by_sigterm_has_its_session_deleted() {
    let (src, dst) = (Registry::start(), Registry::start());
    let layers = push_app_v1(&src, 7110, 1, 4 * 1024 * 1024);
    let sp = stalling(&src.url(), &layers[0], 0);
    let mut run = Server::start_cmd("once", &app_v1_config(&sp.url(), &dst.host()), &[]);
    wait_for_open_session(&mut run, &sp, &dst, 2);

    run.signal(libc::SIGTERM);
    let (status, took) = run.wait_exit(Duration::from_secs(25));
    assert_eq!(status.code(), Some(1), "{}", run.stderr());
    // Well within the default 30 s --shutdown-timeout: the clean-up has a short bound.
    assert!(took < Duration::from_secs(10), "{took:?}\n{}", run.stderr());
    assert_eq!(
        manifest_digest(&dst, "app", "v1"),
        None,
        "copy finished before the signal"
    );
    assert_no_session_left(&dst, &run.stderr());
}

/// A config copying `source/app:v1` (`source` named `localhost:P`, so that it sorts after the
/// target `127.0.0.1:Q`: each upload takes its slot first and starts its download inside its
/// `PUT`) into `target/app:v1`, both over plain HTTP, one image at a time.
fn app_v1_config(source_url: &str, target_host: &str) -> String {
    let source = format!("localhost:{}", source_url.rsplit(':').next().unwrap());
    format!(
        "version: 1\ncreds:\n  - registry: {source}\n    tls: disabled\n  - registry: {target_host}\n    tls: disabled\ndefaults:\n  parallel: 1\nsync:\n  - source: {source}/app:v1\n    target: {target_host}/app:v1\n    type: image\n",
    )
}

/// Pushes `app:v1` to `src`: an image of `layers` layers of `size` bytes each. Returns the
/// layers' digests.
fn push_app_v1(src: &Registry, seed: u64, layers: usize, size: usize) -> Vec<String> {
    let image = ImageSpec::new(seed, Format::Oci)
        .layers(layers, size)
        .build();
    push(src, "app", "v1", &image);
    image
        .blobs
        .iter()
        .filter(|b| b.media_type.contains("layer"))
        .map(|b| b.digest.clone())
        .collect()
}

/// `app:v1` (seed `seed`) with two layers on a source seen through two proxies: the first
/// layer's download stalls before its first byte (`stall`), every GET of the second answers
/// 500 (`sp`, the front one); and an empty target. The image fails while the stalled
/// upload is still open. Returns the source, the target and both proxies (each is stopped
/// when dropped).
fn one_layer_stalled_one_broken(seed: u64) -> (Registry, Registry, FaultProxy, FaultProxy) {
    let (src, dst) = (Registry::start(), Registry::start());
    let layers = push_app_v1(&src, seed, 2, 64 * 1024);
    let stall = stalling(&src.url(), &layers[0], 0);
    let sp = failing(&stall.url(), &layers[1]);
    (src, dst, stall, sp)
}

/// A proxy in front of `upstream` whose GETs of blob `digest` send `bytes` of the body, then
/// hang: an upload that is in flight for as long as the test needs.
fn stalling(upstream: &str, digest: &str, bytes: u64) -> FaultProxy {
    FaultProxy::start_url(
        upstream,
        FaultOpts {
            stall_after: Some(bytes),
            fault_kinds: vec!["blob_get".into()],
            fault_paths: vec![format!("/blobs/{digest}")],
            ..Default::default()
        },
    )
}

/// A proxy in front of `upstream` whose every GET of blob `digest` answers 500.
fn failing(upstream: &str, digest: &str) -> FaultProxy {
    FaultProxy::start_url(
        upstream,
        FaultOpts {
            fail_rate: 1.0,
            fail_status: vec![500],
            fault_methods: vec!["GET".into()],
            fault_paths: vec![format!("/blobs/{digest}")],
            ..Default::default()
        },
    )
}

/// A proxy in front of `dst` whose every `DELETE` waits a minute before `dst` sees it: more
/// than the 5 s clean-up grace.
fn slow_deletes(dst: &Registry) -> FaultProxy {
    FaultProxy::start(
        dst,
        FaultOpts {
            slow_rate: 1.0,
            slow: Duration::from_secs(60),
            fault_methods: vec!["DELETE".into()],
            ..Default::default()
        },
    )
}

/// Waits until `dst` holds an upload session for `app` that stays open (the config blob's
/// session comes and goes as it is committed) and `sp` has seen `gets` blob GETs.
fn wait_for_open_session(run: &mut Server, sp: &FaultProxy, dst: &Registry, gets: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if sp.count("blob_get") >= gets && !upload_sessions(dst, "app").is_empty() {
            std::thread::sleep(Duration::from_millis(500));
            if !upload_sessions(dst, "app").is_empty() {
                return;
            }
        }
        assert!(
            std::time::Instant::now() < deadline && run.running(),
            "no upload session open on the target\n{}",
            run.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The upload sessions' deletes after a signal are part of the shutdown, not work still
/// running: a target slow to answer them (a minute, more than the 5 s grace and the 3 s
/// timeout) does not turn the run into one that "shutdown timed out" (which also leaves its
/// state database open); it still ends as interrupted.
#[test]
fn a_slow_session_delete_does_not_turn_the_shutdown_into_a_timeout() {
    let (src, dst) = (Registry::start(), Registry::start());
    let layers = push_app_v1(&src, 7111, 1, 1024 * 1024);
    let sp = stalling(&src.url(), &layers[0], 0);
    let tp = slow_deletes(&dst);
    let cfg = app_v1_config(&sp.url(), &tp.host());
    let mut run = Server::start_cmd("once", &cfg, &["--shutdown-timeout", "3s"]);
    wait_for_open_session(&mut run, &sp, &dst, 2);

    let stderr = stop_interrupted(&mut run);
    assert!(tp.count("upload_delete") > 0, "no DELETE sent\n{stderr}");
}

/// A `once` run that ends normally while a blob of an image that already failed is still
/// uploading (its sibling layer broke): nothing waits for that upload any more, so it is
/// stopped and its session deleted, rather than the exit waiting for it and then leaving
/// the session to the registry's week-long purge.
#[test]
fn an_upload_left_by_a_failed_image_has_its_session_deleted_at_the_end_of_once() {
    let (_src, dst, stall, sp) = one_layer_stalled_one_broken(7112);
    let cfg = app_v1_config(&sp.url(), &dst.host());
    let mut run = Server::start_cmd("once", &cfg, &[]);
    let (status, _) = run.wait_exit(Duration::from_secs(60));

    assert_eq!(status.code(), Some(1), "{}", run.stderr());
    assert!(sp.stats().failed > 0, "the broken blob was never asked for");
    assert!(
        stall.count("blob_get") > 0,
        "the stalled blob was never asked for"
    );
    assert_no_session_left(&dst, &run.stderr());
}

/// The same after part of a chunked upload was stored: each `PATCH` answers with the
/// session's next `Location` (distribution's `_state` names the offset), and the `DELETE`
/// goes to the latest one, which distribution accepts, rather than to the `POST`'s, which it
/// refuses once the offset moved on.
#[test]
fn a_chunked_upload_stopped_by_sigterm_has_its_session_deleted() {
    let (src, dst) = (Registry::start(), Registry::start());
    let layers = push_app_v1(&src, 7113, 1, 4 * 1024 * 1024);
    // One whole 1 MiB chunk reaches the target, then the download hangs.
    let sp = stalling(&src.url(), &layers[0], 1536 * 1024);
    let cfg = in_chunks(&app_v1_config(&sp.url(), &dst.host()), &dst.host());
    let mut run = Server::start_cmd("once", &cfg, &[]);
    // The chunk is on disk before distribution answers its PATCH; its access-log line comes
    // after the answer. (A signal in between would stop the client before it read the new
    // `Location`, and that session stays: README "Retries".)
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !session_holds(&dst, "app", 1024 * 1024) || dst.count("PATCH", "/blobs/uploads/") == 0 {
        assert!(
            std::time::Instant::now() < deadline && run.running(),
            "no chunk stored on the target\n{}",
            run.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    run.signal(libc::SIGTERM);
    let (status, _) = run.wait_exit(Duration::from_secs(25));
    assert_eq!(status.code(), Some(1), "{}", run.stderr());
    assert_eq!(manifest_digest(&dst, "app", "v1"), None);
    assert_no_session_left(&dst, &run.stderr());
}

/// `cfg` with uploads to `target_host` in chunks of 1 MiB (`blobMax: 1024`: every layer).
fn in_chunks(cfg: &str, target_host: &str) -> String {
    let creds = format!("  - registry: {target_host}\n    tls: disabled\n");
    assert!(cfg.contains(&creds), "{cfg}");
    cfg.replace(
        &creds,
        &format!("{creds}    blobMax: 1024\n    blobChunk: 1048576\n"),
    )
}

/// Whether an upload session of `repo` on `registry` stored at least `bytes` of its blob.
fn session_holds(registry: &Registry, repo: &str, bytes: u64) -> bool {
    let dir = registry
        .data_dir()
        .join("docker/registry/v2/repositories")
        .join(repo)
        .join("_uploads");
    upload_sessions(registry, repo)
        .iter()
        .any(|s| std::fs::metadata(dir.join(s).join("data")).is_ok_and(|m| m.len() >= bytes))
}

/// A `PATCH` the registry stored but whose answer the client refuses (here an acknowledged
/// `Range` that is not what was sent): the session moved on at the registry all the same, so
/// its `DELETE` must use the answer's `Location`, or distribution refuses it and the session
/// stays for the purge.
#[test]
fn a_chunk_answer_refused_still_moves_the_session_it_deletes() {
    let (src, dst) = (Registry::start(), Registry::start());
    push_app_v1(&src, 7114, 1, 2 * 1024 * 1024);
    let front = RewriteProxy::start(
        &dst.url(),
        RewriteOpts {
            after: Some(Arc::new(|seen, reply: &mut Reply| {
                if seen.method == "PATCH" && reply.status == 202 {
                    reply.set_header("range", "0-1");
                }
            })),
            ..Default::default()
        },
    );
    let cfg = in_chunks(&app_v1_config(&src.url(), &front.host()), &front.host());
    let out = regsync(&["once"], &cfg);

    assert_eq!(out.code(), Some(1), "{}", out.dump());
    out.assert_no_panic();
    let patches = front.seen().iter().filter(|s| s.method == "PATCH").count();
    assert!(patches > 0, "no chunk sent\n{}", out.dump());
    assert_no_session_left(&dst, &out.dump());
}

/// While the end of a `once` run waits for the deletes of leftover upload sessions (up to
/// 5 s), a signal still ends the process at once: the run is already stopping, so it acts as
/// the second signal does, and is not swallowed. The run's report and state database were
/// written before that wait, so the signal loses only the clean-up.
#[test]
fn a_signal_during_the_clean_up_at_the_end_exits_at_once() {
    let (_src, dst, _stall, sp) = one_layer_stalled_one_broken(7115);
    let tp = slow_deletes(&dst);
    let cfg = app_v1_config(&sp.url(), &tp.host());
    let tmp = tempfile::tempdir().unwrap();
    let (report, state) = (tmp.path().join("report.json"), tmp.path().join("state.db"));
    let mut run = Server::start_cmd(
        "once",
        &cfg,
        &[
            "--report",
            report.to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
        ],
    );
    run.wait_logs("Failed to copy layer", 1, Duration::from_secs(30));
    // The broken layer's own delete (one: a failed download is not started over) came
    // before its failure; the second is the stalled upload's, sent once the run ended.
    run.wait_until(
        "the leftover upload's DELETE",
        Duration::from_secs(20),
        |_| tp.count("upload_delete") >= 2,
    );

    run.signal(libc::SIGTERM);
    let (status, took) = run.wait_exit(Duration::from_secs(25));
    assert_eq!(
        status.code(),
        Some(128 + 15),
        "not ended by the signal (after {took:?})\n{}",
        run.stderr()
    );
    // What the run did was recorded before the wait the signal cut short.
    let written = read_json(&report);
    assert_eq!(written["totals"]["images_failed"], 1, "{written}");
    let wal = tmp.path().join("state.db-wal");
    assert!(state.exists() && !wal.exists(), "state database not closed");
}

/// A target that takes its time answering the `DELETE` of a failed upload's session does not
/// hold the failure of the image: the clean-up is best effort, bounded by its 5 s grace also
/// when no signal stopped the run.
#[test]
fn a_hanging_session_delete_does_not_hold_the_failed_image() {
    let (src, dst) = (Registry::start(), Registry::start());
    let layers = push_app_v1(&src, 7116, 1, 64 * 1024);
    let sp = failing(&src.url(), &layers[0]);
    let tp = slow_deletes(&dst);
    let out = regsync(&["once"], &app_v1_config(&sp.url(), &tp.host()));

    assert_eq!(out.code(), Some(1), "{}", out.dump());
    assert!(
        tp.count("upload_delete") > 0,
        "no session deleted\n{}",
        out.dump()
    );
    assert!(
        out.elapsed < FAIL_BOUND,
        "took {:?} to give up on one broken blob\n{}",
        out.elapsed,
        out.dump()
    );
}

/// A mount the target answers with an ordinary upload session (`202`, the source repository
/// lacked the blob) is cancelled like any other session: its `DELETE` is owed by the run,
/// not by the copy that asked. A signal while that `DELETE` is on its way (here it takes
/// 1 s to reach the registry, within the clean-up grace and the shutdown timeout) must
/// neither turn the stop into a timeout nor leave the session to the registry's week-long
/// purge.
#[test]
fn a_mount_answered_with_a_session_has_it_deleted_when_a_signal_stops_the_copy() {
    let reg = Registry::start();
    let image = ImageSpec::new(7117, Format::Oci)
        .layers(1, 64 * 1024)
        .build();
    push(&reg, "origin/app", "v1", &image);
    // A session of the target repository the mount will be answered with.
    let session = block_on(async {
        let resp = http()
            .post(format!("{}/v2/copy/app/blobs/uploads/", reg.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        resp.headers()["location"].to_str().unwrap().to_string()
    });
    assert_eq!(upload_sessions(&reg, "copy/app").len(), 1);
    let slow = FaultProxy::start(
        &reg,
        FaultOpts {
            slow_rate: 1.0,
            slow: Duration::from_secs(1),
            fault_methods: vec!["DELETE".into()],
            ..Default::default()
        },
    );
    // The first mount is answered with that session instead of the registry's 201.
    let answered = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let front = RewriteProxy::start(
        &slow.url(),
        RewriteOpts {
            after: Some(Arc::new(move |seen, reply: &mut Reply| {
                if seen.method == "POST"
                    && seen.path.contains("mount=")
                    && !answered.swap(true, std::sync::atomic::Ordering::SeqCst)
                {
                    reply.status = 202;
                    let path = session.split_once("/v2/").map(|(_, p)| p).unwrap();
                    reply.set_header("location", &format!("/v2/{path}"));
                }
            })),
            ..Default::default()
        },
    );
    let host = front.host();
    let cfg = format!(
        "version: 1\ncreds:\n  - registry: {host}\n    tls: disabled\ndefaults:\n  parallel: 1\nsync:\n  - source: {host}/origin/app:v1\n    target: {host}/copy/app:v1\n    type: image\n"
    );
    let mut run = Server::start_cmd("once", &cfg, &[]);
    wait_while_running(&mut run, "the mount's session deleted", || {
        slow.count("upload_delete") > 0
    });

    let stderr = stop_interrupted(&mut run);
    let left = upload_sessions(&reg, "copy/app");
    assert!(left.is_empty(), "upload sessions left: {left:?}\n{stderr}");
}

/// SIGTERM while the `POST` that opens an upload session is on its way back: the registry
/// has opened the session, its answer (here held for 1 s) has not arrived yet. Cut off, the
/// client would never learn the session's `Location` and could not delete it; the `POST` is
/// given the clean-up grace to answer instead, and the session it opened is deleted.
#[test]
fn an_upload_session_opened_as_a_signal_arrives_is_deleted() {
    let (src, dst) = (Registry::start(), Registry::start());
    push_app_v1(&src, 7118, 1, 64 * 1024);
    let tp = FaultProxy::start(
        &dst,
        FaultOpts {
            slow_rate: 1.0,
            slow: Duration::from_secs(1),
            slow_answer: true,
            fault_kinds: vec!["upload_post".into()],
            ..Default::default()
        },
    );
    let mut run = Server::start_cmd("once", &app_v1_config(&src.url(), &tp.host()), &[]);
    wait_while_running(&mut run, "an upload session opened", || {
        !upload_sessions(&dst, "app").is_empty()
    });

    let stderr = stop_interrupted(&mut run);
    assert_no_session_left(&dst, &stderr);
}

/// Waits until `ready` (20 s at most, and only while `run` is still going); `what` names
/// what was awaited in the failure.
fn wait_while_running(run: &mut Server, what: &str, ready: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !ready() {
        assert!(
            std::time::Instant::now() < deadline && run.running(),
            "never seen: {what}\n{}",
            run.stderr()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// SIGTERM to a `once` run, which must end as interrupted (exit 1), not as one whose
/// shutdown timed out (its clean-ups counted as work); returns its stderr.
fn stop_interrupted(run: &mut Server) -> String {
    run.signal(libc::SIGTERM);
    let (status, _) = run.wait_exit(Duration::from_secs(25));
    let stderr = run.stderr();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        !stderr.contains("shutdown timed out"),
        "the clean-up counted as work:\n{stderr}"
    );
    assert!(stderr.contains("interrupted by SIGTERM"), "{stderr}");
    stderr
}
