//! Zero lost images: no object is written twice at once into one repository (distribution
//! rewrites its link files in place, so a manifest PUT racing a second write of one of its
//! references is refused with `DIGEST_INVALID`), and what the engine remembers about a target
//! (landed blobs, lenders, empty repositories, pushed manifests) lives for one run only, so
//! a target that lost content (layout GC, registry GC or retention) is repaired on the next
//! run instead of being written over missing references.

mod common;

use common::faults::{FaultOpts, FaultProxy};
use common::server::Server;
use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

const PLATFORMS: &[&str] = &["linux/amd64", "linux/arm64", "linux/arm/v7", "linux/s390x"];

/// Eight tags of one repository name the same multi-platform index, copied with `parallel: 8`
/// into a fresh repository: every child manifest is PUT exactly once (the tags share one
/// landed table), every tag lands, and the run exits 0. Repeated to give the race a chance.
#[test]
fn tags_sharing_an_index_push_each_child_once() {
    let (src, dst) = (Registry::start(), Registry::start());
    let img = index_image(8100, PLATFORMS);
    let tags: Vec<String> = (0..8).map(|i| format!("t{i}")).collect();
    for t in &tags {
        push(&src, "app", t, &img);
    }
    for round in 0..3 {
        let repo = format!("app-{round}");
        let mark = dst.mark();
        let cfg = config(
            &[&src, &dst],
            8,
            &[repo_step(&src.r("app"), &dst.r(&repo), &[], &[])],
        );
        let out = regsync(&["once"], &cfg);
        out.assert_ok();
        for t in &tags {
            assert_same_image_at(&src, "app", &dst, &repo, t);
        }
        let log = dst.access_since(mark);
        for child in img.child_digests() {
            let path = format!("/v2/{repo}/manifests/{child}");
            let puts = log
                .iter()
                .filter(|l| l.method == "PUT" && l.path == path)
                .count();
            assert_eq!(puts, 1, "round {round}: child {child} PUT {puts} times");
        }
        // The index itself goes once per tag, never twice for one tag.
        for t in &tags {
            let path = format!("/v2/{repo}/manifests/{t}");
            let puts = log
                .iter()
                .filter(|l| l.method == "PUT" && l.path == path)
                .count();
            assert_eq!(puts, 1, "round {round}: tag {t} PUT {puts} times");
        }
        // No blob is uploaded twice into the repository.
        for b in &img.blob_digests() {
            let uploads = log
                .iter()
                .filter(|l| l.method == "PUT" && l.path.contains("/blobs/uploads/"))
                .filter(|l| l.path.contains(b.trim_start_matches("sha256:")))
                .count();
            assert!(
                uploads <= 1,
                "round {round}: blob {b} uploaded {uploads} times"
            );
        }
        assert_eq!(summary_field(&out, "images_failed"), 0);
    }
}

/// Every blob and manifest reachable from `index.json` of the layout at `dir` exists.
fn assert_layout_complete(dir: &Path) {
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let mut todo: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["digest"].as_str().unwrap().to_string())
        .collect();
    let mut seen = BTreeSet::new();
    let path = |d: &str| {
        dir.join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    while let Some(d) = todo.pop() {
        if !seen.insert(d.clone()) {
            continue;
        }
        let raw = std::fs::read(path(&d)).unwrap_or_else(|e| {
            panic!("{d} is referenced but missing from {}: {e}", dir.display())
        });
        let v: Value = match serde_json::from_slice(&raw) {
            Ok(v) => v,
            Err(_) => continue,
        };
        for key in ["manifests", "layers"] {
            for c in v[key].as_array().into_iter().flatten() {
                todo.push(c["digest"].as_str().unwrap().to_string());
            }
        }
        if let Some(c) = v["config"]["digest"].as_str() {
            todo.push(c.to_string());
        }
    }
}

/// One run into one layout, three steps in file order: `a` gets an image with the base layer
/// X, then `a` is overwritten by an image without X (the layout GC after that copy deletes
/// X), then `b` gets another image with X. The third copy must not trust "X landed earlier in
/// this run": X is written again and the layout ends complete.
#[test]
fn ocidir_blob_deleted_by_gc_earlier_in_the_run_is_written_again() {
    let src = Registry::start();
    let base = layer(8200, 32 * 1024, Format::Oci);
    let with_x = |seed| {
        ImageSpec::new(seed, Format::Oci)
            .base(std::slice::from_ref(&base))
            .layers(1, 2048)
            .build()
    };
    let (a0, c, b) = (with_x(8201), oci_image(8202), with_x(8203));
    push(&src, "app", "a0", &a0);
    push(&src, "app", "c", &c);
    push(&src, "app", "b", &b);
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("mirror");
    let cfg = config(
        &[&src],
        0,
        &[
            image_step(&src.r("app:a0"), &ocidir_ref(&layout, "a")),
            image_step(&src.r("app:c"), &ocidir_ref(&layout, "a")),
            image_step(&src.r("app:b"), &ocidir_ref(&layout, "b")),
        ],
    );
    let out = regsync(&["once", "-v", "debug"], &cfg);
    out.assert_ok();
    assert_layout_complete(&layout);
    assert_same_image_at(&src, "app", &layout, "", "b");
    let hex = base.digest.trim_start_matches("sha256:");
    assert!(
        layout.join("blobs/sha256").join(hex).is_file(),
        "base layer missing"
    );
}

/// A missing-mode run whose target tag listing fails must not take the target repository for
/// empty (and skip its blob HEADs): a blob the target already has is found with a HEAD, not
/// uploaded again.
#[test]
fn failed_target_tag_listing_does_not_mark_the_repository_empty() {
    let (src, dst) = (Registry::start(), Registry::start());
    let base = layer(8300, 64 * 1024, Format::Oci);
    let img = |seed| {
        ImageSpec::new(seed, Format::Oci)
            .base(std::slice::from_ref(&base))
            .layers(1, 1024)
            .build()
    };
    let (v1, v2) = (img(8301), img(8302));
    push(&src, "app", "v1", &v1);
    push(&src, "app", "v2", &v2);
    push(&dst, "app", "v1", &v1);
    let proxy = FaultProxy::start(
        &dst,
        FaultOpts {
            fail_rate: 1.0,
            fail_status: vec![500],
            fault_kinds: vec!["tags".into()],
            ..FaultOpts::default()
        },
    );
    let mark = dst.mark();
    let cfg = format!(
        "version: 1\ncreds:\n  - registry: {}\n    tls: disabled\n  - registry: {}\n    tls: disabled\n\
         defaults:\n  parallel: 2\nsync:\n  - source: {}\n    target: {}\n    type: repository\n",
        src.host(),
        proxy.host(),
        src.r("app"),
        proxy.r("app"),
    );
    let out = regsync(&["once", "--missing"], &cfg);
    out.assert_ok();
    assert!(proxy.count("tags") > 0, "the tag listing was not tried");
    assert_same_image(&src, &dst, "app", "v2");
    let hex = base.digest.trim_start_matches("sha256:");
    let uploads = dst
        .access_since(mark)
        .into_iter()
        .filter(|l| l.method == "PUT" && l.path.contains("/blobs/uploads/") && l.path.contains(hex))
        .count();
    assert_eq!(uploads, 0, "the shared base layer was uploaded again");
}

/// distribution answers `DIGEST_INVALID` when a manifest PUT reads a link file that a
/// concurrent write is rewriting. A refusal while every reference of the manifest landed in
/// this run (and still answers a HEAD) is that race: the push is tried again, with a debug
/// line naming it, and the run succeeds.
#[test]
fn manifest_refused_over_present_references_is_retried() {
    let (src, dst) = (Registry::start(), Registry::start());
    let img = oci_image(8500);
    push(&src, "app", "v1", &img);
    // The seed makes the first manifest PUT fail and a later one pass.
    let proxy = FaultProxy::start(
        &dst,
        FaultOpts {
            fail_rate: 0.5,
            fail_status: vec![400],
            fail_code: Some("DIGEST_INVALID".into()),
            fault_kinds: vec!["manifest_put".into()],
            seed: 7,
            ..FaultOpts::default()
        },
    );
    let cfg = format!(
        "version: 1\ncreds:\n  - registry: {}\n    tls: disabled\n  - registry: {}\n    tls: disabled\n\
         sync:\n  - source: {}\n    target: {}\n    type: image\n",
        src.host(),
        proxy.host(),
        src.r("app:v1"),
        proxy.r("app:v1"),
    );
    let out = regsync(&["once", "-v", "debug"], &cfg);
    let failed = proxy.stats().failed;
    assert!(
        (1..=3).contains(&failed),
        "the seed should fail 1 to 3 PUTs, failed {failed}"
    );
    out.assert_ok();
    assert_same_image(&src, &dst, "app", "v1");
    let retried = out
        .json_logs
        .iter()
        .filter(|v| {
            v["msg"]
                .as_str()
                .is_some_and(|m| m.contains("link-file race"))
        })
        .count();
    assert_eq!(retried as u64, failed, "{}", out.dump());
}

/// `server` with a short interval: the target loses all its content between two firings
/// (registry storage wiped while it is stopped, as after a GC or a retention policy). The
/// next firing copies everything again (blobs, children, tags) instead of trusting what an
/// earlier run pushed, and every later firing stays clean.
#[test]
fn server_recopies_what_the_target_lost_between_firings() {
    let (src, mut dst) = (Registry::start(), Registry::start());
    let (plain, multi) = (oci_image(8400), index_image(8401, PLATFORMS));
    push(&src, "app", "plain", &plain);
    push(&src, "app", "multi", &multi);
    let step = repo_step(&src.r("app"), &dst.r("app"), &[], &[]) + "interval: 1s\n";
    let mut server = Server::start(&config(&[&src, &dst], 2, &[step]), &[]);
    // initial pass, then one clean copy-mode firing
    server.wait_summary(0, Duration::from_secs(20), |v| {
        v["mode"] == "copy" && v["errors"] == 0
    });
    assert_same_image(&src, &dst, "app", "plain");
    assert_same_image(&src, &dst, "app", "multi");

    dst.stop();
    std::fs::remove_dir_all(dst.data_dir().join("docker")).unwrap();
    dst.restart(false);
    let seen = server.summaries().len();
    // The next firing that copied both images must be clean, and so must the one after it.
    server.wait_summary(seen, Duration::from_secs(30), |v| {
        v["mode"] == "copy" && v["images_copied"].as_u64() >= Some(2)
    });
    let copied = server
        .summaries()
        .into_iter()
        .skip(seen)
        .find(|v| v["images_copied"].as_u64() >= Some(2))
        .unwrap();
    assert_eq!(copied["errors"], 0, "{copied}\n{}", server.stderr());
    assert_same_image(&src, &dst, "app", "plain");
    assert_same_image(&src, &dst, "app", "multi");
    let after = server.summaries().len();
    server.wait_summary(after, Duration::from_secs(10), |v| v["mode"] == "copy");
    let next = server.summaries().into_iter().nth(after).unwrap();
    assert_eq!(next["errors"], 0, "{next}");
}
