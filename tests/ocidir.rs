//! OCI image layouts (`ocidir://`) as target and as source.

mod common;

use common::oci::REF_NAME;
use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

fn index_json(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("index.json")).expect("index.json")).unwrap()
}

fn blob_files(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if let Ok(rd) = std::fs::read_dir(dir.join("blobs/sha256")) {
        for e in rd.flatten() {
            out.insert(format!("sha256:{}", e.file_name().to_string_lossy()));
        }
    }
    out
}

#[test]
fn registry_image_to_ocidir() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let img = index_image(500, &["linux/amd64", "linux/arm64"]);
    push(&reg, "app", "v1", &img);
    let layout = tmp.path().join("layout");
    let cfg = config(
        &[&reg],
        0,
        &[image_step(&reg.r("app:v1"), &ocidir_ref(&layout, "v1"))],
    );
    let out = regsync(&["once"], &cfg);
    out.assert_ok();

    assert_same_image_at(&reg, "app", tmp.path(), "layout", "v1");
    assert_has_image(tmp.path(), "layout", "v1", &img);
    assert_eq!(
        std::fs::read_to_string(layout.join("oci-layout")).unwrap(),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );
    let idx = index_json(&layout);
    assert_eq!(idx["schemaVersion"], 2);
    let entries = idx["manifests"].as_array().unwrap();
    assert_eq!(
        entries.len(),
        1,
        "child manifests are not listed in index.json: {idx}"
    );
    assert_eq!(entries[0]["annotations"][REF_NAME], "v1");
    assert_eq!(entries[0]["digest"], img.digest());
    assert_summary(&out, &[("images_copied", 1), ("images_failed", 0)]);
}

#[test]
fn registry_repository_to_ocidir() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    push(&reg, "repo", "v1", &oci_image(510));
    push(
        &reg,
        "repo",
        "v2",
        &manifest_list_image(511, &["linux/amd64", "linux/arm64"]),
    );
    push(&reg, "repo", "v3", &docker_image(512));
    let layout = tmp.path().join("repo-copy");
    let cfg = config(
        &[&reg],
        2,
        &[repo_step(
            &reg.r("repo"),
            &ocidir_ref(&layout, ""),
            &[],
            &["v3"],
        )],
    );
    regsync(&["once"], &cfg).assert_ok();
    assert_eq!(tags(&layout, ""), vec!["v1", "v2"]);
    assert_same_image_at(&reg, "repo", &layout, "", "v1");
    assert_same_image_at(&reg, "repo", &layout, "", "v2");
}

#[test]
fn ocidir_repository_to_registry() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("src");
    write_layout(
        &layout,
        &index_image(520, &["linux/amd64", "linux/arm64", "linux/arm/v7"]),
        "v1",
    );
    write_layout(&layout, &manifest_list_image(521, &["linux/amd64"]), "v2");
    write_layout(&layout, &oci_image(522), "latest");
    let cfg = config(
        &[&reg],
        0,
        &[repo_step(
            &ocidir_ref(&layout, ""),
            &reg.r("fromdir"),
            &[],
            &[],
        )],
    );
    let out = regsync(&["once"], &cfg);
    out.assert_ok();
    assert_same_repo(&layout, "", &reg, "fromdir");
    assert_summary(&out, &[("images_copied", 3), ("images_failed", 0)]);
}

#[test]
fn ocidir_image_to_registry() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("one");
    let img = docker_image(530);
    write_layout(&layout, &img, "stable");
    let cfg = config(
        &[&reg],
        0,
        &[image_step(
            &ocidir_ref(&layout, "stable"),
            &reg.r("one:stable"),
        )],
    );
    regsync(&["once"], &cfg).assert_ok();
    assert_has_image(&reg, "one", "stable", &img);
}

#[test]
fn ocidir_to_ocidir() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    write_layout(&a, &index_image(535, &["linux/amd64", "linux/arm64"]), "v1");
    let cfg = config(
        &[],
        0,
        &[image_step(&ocidir_ref(&a, "v1"), &ocidir_ref(&b, "v1"))],
    );
    regsync(&["once"], &cfg).assert_ok();
    assert_same_image_at(&a, "", &b, "", "v1");
}

#[test]
fn ocidir_target_second_run_is_a_no_op() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    push(
        &reg,
        "app",
        "v1",
        &index_image(540, &["linux/amd64", "linux/arm64"]),
    );
    push(&reg, "app", "v2", &oci_image(541));
    let layout = tmp.path().join("noop");
    let cfg = config(
        &[&reg],
        0,
        &[repo_step(&reg.r("app"), &ocidir_ref(&layout, ""), &[], &[])],
    );
    regsync(&["once"], &cfg).assert_ok();
    let before_index = std::fs::read(layout.join("index.json")).unwrap();
    let before_blobs = blob_files(&layout);
    let ms = reg.mark();

    let out = regsync(&["once"], &cfg);
    out.assert_ok();
    assert_summary(
        &out,
        &[
            ("images_copied", 0),
            ("images_matched", 2),
            ("images_failed", 0),
        ],
    );
    assert_eq!(
        std::fs::read(layout.join("index.json")).unwrap(),
        before_index,
        "index.json rewritten"
    );
    assert_eq!(blob_files(&layout), before_blobs);
    assert_eq!(reg.count_since(ms, "GET", "/blobs/"), 0);
}

#[test]
fn ocidir_overwrite_garbage_collects_unreferenced_blobs() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let old = index_image(550, &["linux/amd64", "linux/arm64"]);
    let new = oci_image(551);
    push(&reg, "gc", "v1", &old);
    let layout = tmp.path().join("gc");
    let cfg = config(
        &[&reg],
        0,
        &[image_step(&reg.r("gc:v1"), &ocidir_ref(&layout, "v1"))],
    );
    regsync(&["once"], &cfg).assert_ok();
    assert_has_image(&layout, "", "v1", &old);

    push(&reg, "gc", "v1", &new);
    regsync(&["once"], &cfg).assert_ok();
    assert_has_image(&layout, "", "v1", &new);
    let mut want: BTreeSet<String> = new.blob_digests();
    want.insert(new.digest().to_string());
    assert_eq!(
        blob_files(&layout),
        want,
        "only blobs reachable from index.json remain"
    );
    let idx = index_json(&layout);
    assert_eq!(idx["manifests"].as_array().unwrap().len(), 1, "{idx}");
}
