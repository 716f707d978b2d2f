//! One broken object fails alone and fast: a source whose every GET of one layer answers 500
//! fails that image within seconds (its retries back off on that blob, not on the whole
//! host), the other image sharing its base layer still copies, and the target layout stays
//! consistent.

mod common;

use common::faults::{FaultOpts, FaultProxy};
use common::oci::sha256_digest;
use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
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
    let sp = FaultProxy::start(
        &src,
        FaultOpts {
            fail_rate: 1.0,
            fail_status: vec![500],
            fault_methods: vec!["GET".into()],
            fault_paths: vec![format!("/blobs/{broken}")],
            ..Default::default()
        },
    );
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
