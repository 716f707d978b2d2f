//! `type: image` copies between registries: single-platform OCI and Docker images, OCI indexes,
//! Docker manifest lists, re-tagging, overwrite, same-registry mounts, and the no-op re-run.

mod common;

use common::oci::{MT_DOCKER_LIST, MT_DOCKER_MANIFEST, MT_OCI_INDEX};
use common::*;

fn once(cfg: &str) -> Output {
    let out = regsync(&["once"], cfg);
    out.assert_ok();
    out
}

#[test]
fn copies_single_oci_image() {
    let (src, dst) = (Registry::start(), Registry::start());
    let img = oci_image(100);
    push(&src, "app", "v1", &img);
    let m = dst.mark();

    let cfg = config(
        &[&src, &dst],
        0,
        &[image_step(&src.r("app:v1"), &dst.r("app:v1"))],
    );
    let out = once(&cfg);

    assert_same_image(&src, &dst, "app", "v1");
    assert_has_image(&dst, "app", "v1", &img);
    assert_eq!(tags(&dst, "app"), vec!["v1"]);

    // Logs: every stderr line is a JSON object with time/level/msg (no error text on success).
    assert!(out.error_lines().is_empty(), "{}", out.dump());
    for l in &out.json_logs {
        assert!(
            l["time"].is_string() && l["level"].is_string() && l["msg"].is_string(),
            "{l}"
        );
    }
    assert!(
        out.logs("Image sync needed")
            .iter()
            .any(|l| l["source"] == src.r("app:v1") && l["target"] == dst.r("app:v1")),
        "{}",
        out.dump()
    );
    assert_summary_complete(&out);
    assert_summary(
        &out,
        &[
            ("images_checked", 1),
            ("images_copied", 1),
            ("images_matched", 0),
            ("images_failed", 0),
            ("manifests_pushed", 1),
            ("blobs_copied", 3),
        ],
    );
    assert!(summary_field(&out, "bytes_copied") >= img.blob_bytes() as u64);

    // Target requests: one manifest PUT, one upload per blob.
    assert_eq!(dst.count_since(m, "PUT", "/v2/app/manifests/"), 1);
    assert_eq!(
        dst.count_since(m, "POST", "/v2/app/blobs/uploads/"),
        3,
        "{:#?}",
        dst.access_since(m)
    );
    assert_eq!(dst.count_since(m, "DELETE", ""), 0);
}

#[test]
fn copies_docker_v2_image() {
    let (src, dst) = (Registry::start(), Registry::start());
    let img = docker_image(101);
    push(&src, "lib/docker", "1.0", &img);
    let cfg = config(
        &[&src, &dst],
        0,
        &[image_step(
            &src.r("lib/docker:1.0"),
            &dst.r("lib/docker:1.0"),
        )],
    );
    once(&cfg);
    assert_same_image(&src, &dst, "lib/docker", "1.0");
    let m = get_manifest(&dst, "lib/docker", "1.0").unwrap();
    assert_eq!(m.media_type, MT_DOCKER_MANIFEST);
    assert_eq!(m.bytes, img.top.bytes, "manifest bytes preserved");
}

#[test]
fn copies_multi_platform_oci_index() {
    let (src, dst) = (Registry::start(), Registry::start());
    let img = index_image(102, &["linux/amd64", "linux/arm64", "linux/arm/v7"]);
    push(&src, "multi", "v1", &img);
    let cfg = config(
        &[&src, &dst],
        0,
        &[image_step(&src.r("multi:v1"), &dst.r("multi:v1"))],
    );
    let out = once(&cfg);
    assert_same_image(&src, &dst, "multi", "v1");
    assert_has_image(&dst, "multi", "v1", &img);
    assert_eq!(
        get_manifest(&dst, "multi", "v1").unwrap().media_type,
        MT_OCI_INDEX
    );
    assert_summary(
        &out,
        &[
            ("images_copied", 1),
            ("images_failed", 0),
            ("manifests_pushed", 4),
            ("blobs_copied", 9),
        ],
    );
}

#[test]
fn copies_docker_manifest_list() {
    let (src, dst) = (Registry::start(), Registry::start());
    let img = manifest_list_image(103, &["linux/amd64", "linux/arm64"]);
    push(&src, "dlist", "latest", &img);
    let cfg = config(
        &[&src, &dst],
        0,
        &[image_step(&src.r("dlist:latest"), &dst.r("dlist:latest"))],
    );
    once(&cfg);
    assert_same_image(&src, &dst, "dlist", "latest");
    let m = get_manifest(&dst, "dlist", "latest").unwrap();
    assert_eq!(m.media_type, MT_DOCKER_LIST);
    for c in &img.children {
        assert_eq!(
            get_manifest(&dst, "dlist", &c.digest).unwrap().media_type,
            MT_DOCKER_MANIFEST
        );
    }
}

#[test]
fn copies_to_other_repository_and_tag() {
    let (src, dst) = (Registry::start(), Registry::start());
    let img = index_image(104, &["linux/amd64", "linux/arm64"]);
    push(&src, "team/a/b", "v1", &img);
    let cfg = config(
        &[&src, &dst],
        0,
        &[image_step(
            &src.r("team/a/b:v1"),
            &dst.r("mirror/c/d:stable"),
        )],
    );
    once(&cfg);
    assert_has_image(&dst, "mirror/c/d", "stable", &img);
    assert_eq!(tags(&dst, "mirror/c/d"), vec!["stable"]);
    assert_eq!(catalog(&dst), vec!["mirror/c/d"]);
}

#[test]
fn second_run_is_a_no_op() {
    let (src, dst) = (Registry::start(), Registry::start());
    let img = index_image(105, &["linux/amd64", "linux/arm64"]);
    push(&src, "noop", "v1", &img);
    push(&src, "noop", "v2", &docker_image(106));
    let cfg = config(
        &[&src, &dst],
        2,
        &[
            image_step(&src.r("noop:v1"), &dst.r("noop:v1")),
            image_step(&src.r("noop:v2"), &dst.r("noop:v2")),
        ],
    );
    let first = once(&cfg);
    assert_summary(&first, &[("images_copied", 2), ("images_failed", 0)]);
    assert_same_image(&src, &dst, "noop", "v1");
    assert_same_image(&src, &dst, "noop", "v2");

    let (ms, md) = (src.mark(), dst.mark());
    let second = once(&cfg);
    assert_summary(
        &second,
        &[
            ("images_checked", 2),
            ("images_copied", 0),
            ("images_matched", 2),
            ("images_failed", 0),
            ("manifests_pushed", 0),
            ("blobs_copied", 0),
            ("bytes_copied", 0),
        ],
    );
    assert!(
        second.logs("Image sync needed").is_empty(),
        "{}",
        second.dump()
    );
    assert_eq!(dst.count_since(md, "PUT", "/manifests/"), 0);
    assert_eq!(dst.count_since(md, "POST", "/blobs/uploads"), 0);
    assert!(
        dst.writes_since(md).is_empty(),
        "{:?}",
        dst.writes_since(md)
    );
    assert_eq!(
        src.count_since(ms, "GET", "/blobs/"),
        0,
        "no blob downloads on a no-op"
    );
}

#[test]
fn image_matches_is_logged_at_debug() {
    let (src, dst) = (Registry::start(), Registry::start());
    push(&src, "dbg", "v1", &oci_image(107));
    push(&dst, "dbg", "v1", &oci_image(107));
    let cfg = config(
        &[&src, &dst],
        0,
        &[image_step(&src.r("dbg:v1"), &dst.r("dbg:v1"))],
    );
    let out = regsync(&["once", "-v", "debug"], &cfg);
    out.assert_ok();
    let m = out.logs("Image matches");
    assert_eq!(m.len(), 1, "{}", out.dump());
    assert_eq!(m[0]["level"], "DEBUG");
    assert_eq!(m[0]["source"], src.r("dbg:v1"));
    assert_eq!(m[0]["target"], dst.r("dbg:v1"));
    // Without -v debug the DEBUG line is not printed.
    let out = regsync(&["once"], &cfg);
    out.assert_ok();
    assert!(out.logs_at("DEBUG").is_empty(), "{}", out.dump());
}

#[test]
fn overwrites_a_differing_target_tag() {
    let (src, dst) = (Registry::start(), Registry::start());
    let new = index_image(108, &["linux/amd64", "linux/arm64"]);
    let old = docker_image(109);
    push(&src, "ow", "latest", &new);
    push(&dst, "ow", "latest", &old);
    let cfg = config(
        &[&src, &dst],
        0,
        &[image_step(&src.r("ow:latest"), &dst.r("ow:latest"))],
    );
    let out = once(&cfg);
    assert_summary(&out, &[("images_copied", 1)]);
    assert_same_image(&src, &dst, "ow", "latest");
}

#[test]
fn same_registry_copy_mounts_blobs() {
    let reg = Registry::start();
    let img = index_image(110, &["linux/amd64", "linux/arm64"]);
    push(&reg, "origin/app", "v1", &img);
    let m = reg.mark();
    let cfg = config(
        &[&reg],
        0,
        &[image_step(&reg.r("origin/app:v1"), &reg.r("copy/app:v1"))],
    );
    let out = once(&cfg);
    assert_same_image_at(&reg, "origin/app", &reg, "copy/app", "v1");
    // Every blob arrives by cross-repo mount: no blob bytes are uploaded or downloaded.
    let log = reg.access_since(m);
    assert!(
        !log.iter()
            .any(|l| l.method == "PUT" && l.path.contains("/blobs/uploads/")),
        "blob uploaded instead of mounted: {log:?}"
    );
    assert_eq!(reg.count_since(m, "GET", "/v2/origin/app/blobs/"), 0);
    assert!(reg.count_since(m, "POST", "mount=") >= img.blob_digests().len());
    assert_summary(
        &out,
        &[
            ("blobs_mounted", img.blob_digests().len() as u64),
            ("blobs_copied", 0),
        ],
    );
}

#[test]
fn parallel_image_steps_all_copied() {
    let (src, dst) = (Registry::start(), Registry::start());
    let mut steps = Vec::new();
    for i in 0..4u64 {
        let repo = format!("par{i}");
        push(&src, &repo, "v1", &oci_image(120 + i));
        steps.push(image_step(
            &src.r(&format!("{repo}:v1")),
            &dst.r(&format!("{repo}:v1")),
        ));
    }
    let out = once(&config(&[&src, &dst], 4, &steps));
    assert_summary(&out, &[("images_copied", 4), ("images_failed", 0)]);
    for i in 0..4 {
        assert_same_image(&src, &dst, &format!("par{i}"), "v1");
    }
}
