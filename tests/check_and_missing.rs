//! `check` (dry run: logs what differs, writes nothing) and `once --missing` (copies absent
//! tags only, never touches an existing tag even when it differs).

mod common;

use common::*;
use std::collections::BTreeSet;

struct Fixture {
    src: Registry,
    dst: Registry,
    stale: TestImage,
}

/// src `cm`: v1, v2, v3, v4 (index). dst `cm`: v1 same, v2 different, v3 absent, v4 same.
fn fixture() -> Fixture {
    let (src, dst) = (Registry::start(), Registry::start());
    let v1 = oci_image(600);
    let v4 = index_image(603, &["linux/amd64", "linux/arm64"]);
    push(&src, "cm", "v1", &v1);
    push(&src, "cm", "v2", &docker_image(601));
    push(
        &src,
        "cm",
        "v3",
        &manifest_list_image(602, &["linux/amd64", "linux/arm64"]),
    );
    push(&src, "cm", "v4", &v4);
    let stale = oci_image(699);
    push(&dst, "cm", "v1", &v1);
    push(&dst, "cm", "v2", &stale);
    push(&dst, "cm", "v4", &v4);
    Fixture { src, dst, stale }
}

fn targets(out: &Output, msg: &str) -> BTreeSet<String> {
    out.logs(msg)
        .iter()
        .map(|l| l["target"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn check_logs_exactly_the_differing_tags_and_writes_nothing() {
    let f = fixture();
    let cfg = config(
        &[&f.src, &f.dst],
        4,
        &[repo_step(&f.src.r("cm"), &f.dst.r("cm"), &[], &[])],
    );
    let (ms, md) = (f.src.mark(), f.dst.mark());
    let out = regsync(&["check", "-v", "debug"], &cfg);
    out.assert_ok();

    let want: BTreeSet<String> = [f.dst.r("cm:v2"), f.dst.r("cm:v3")].into_iter().collect();
    assert_eq!(targets(&out, "Image sync needed"), want, "{}", out.dump());
    for l in out.logs("Image sync needed") {
        assert_eq!(l["level"], "INFO");
        let t = l["target"].as_str().unwrap();
        let tag = t.rsplit(':').next().unwrap();
        assert_eq!(l["source"], f.src.r(&format!("cm:{tag}")));
    }
    let matches: BTreeSet<String> = [f.dst.r("cm:v1"), f.dst.r("cm:v4")].into_iter().collect();
    assert_eq!(targets(&out, "Image matches"), matches, "{}", out.dump());

    // Nothing changed.
    assert!(
        f.dst.writes_since(md).is_empty(),
        "{:?}",
        f.dst.writes_since(md)
    );
    assert!(f.src.writes_since(ms).is_empty());
    assert_eq!(
        f.src.count_since(ms, "GET", "/blobs/"),
        0,
        "check downloads no blobs"
    );
    assert_eq!(
        manifest_digest(&f.dst, "cm", "v2").as_deref(),
        Some(f.stale.digest())
    );
    assert_eq!(manifest_digest(&f.dst, "cm", "v3"), None);
    assert_summary(
        &out,
        &[
            ("images_checked", 4),
            ("images_copied", 0),
            ("images_matched", 2),
            ("images_failed", 0),
        ],
    );
}

#[test]
fn check_of_an_in_sync_image_logs_no_sync_needed() {
    let f = fixture();
    let cfg = config(
        &[&f.src, &f.dst],
        0,
        &[image_step(&f.src.r("cm:v4"), &f.dst.r("cm:v4"))],
    );
    let md = f.dst.mark();
    let out = regsync(&["check"], &cfg);
    out.assert_ok();
    assert!(out.logs("Image sync needed").is_empty(), "{}", out.dump());
    assert_summary(
        &out,
        &[
            ("images_checked", 1),
            ("images_matched", 1),
            ("images_copied", 0),
        ],
    );
    assert!(f.dst.writes_since(md).is_empty());
}

#[test]
fn check_of_a_missing_target_repository() {
    let f = fixture();
    let md = f.dst.mark();
    let cfg = config(
        &[&f.src, &f.dst],
        0,
        &[repo_step(
            &f.src.r("cm"),
            &f.dst.r("brand/new"),
            &["v1", "v3"],
            &[],
        )],
    );
    let out = regsync(&["check"], &cfg);
    out.assert_ok();
    let want: BTreeSet<String> = [f.dst.r("brand/new:v1"), f.dst.r("brand/new:v3")]
        .into_iter()
        .collect();
    assert_eq!(targets(&out, "Image sync needed"), want);
    assert!(f.dst.writes_since(md).is_empty());
    assert!(tags(&f.dst, "brand/new").is_empty());
}

#[test]
fn missing_copies_absent_tags_and_leaves_existing_ones() {
    let f = fixture();
    let cfg = config(
        &[&f.src, &f.dst],
        0,
        &[repo_step(&f.src.r("cm"), &f.dst.r("cm"), &[], &[])],
    );
    let md = f.dst.mark();
    let out = regsync(&["once", "--missing"], &cfg);
    out.assert_ok();

    // v3 copied; v2 (existing but different) untouched; v1/v4 untouched.
    assert_same_image(&f.src, &f.dst, "cm", "v3");
    assert_eq!(
        manifest_digest(&f.dst, "cm", "v2").as_deref(),
        Some(f.stale.digest())
    );
    assert_same_image(&f.src, &f.dst, "cm", "v1");
    assert_same_image(&f.src, &f.dst, "cm", "v4");
    assert_eq!(f.dst.count_since(md, "PUT", "/v2/cm/manifests/v2"), 0);
    assert_eq!(f.dst.count_since(md, "PUT", "/v2/cm/manifests/v1"), 0);
    assert_eq!(f.dst.count_since(md, "PUT", "/v2/cm/manifests/v4"), 0);
    assert_eq!(f.dst.count_since(md, "PUT", "/v2/cm/manifests/v3"), 1);
    assert_eq!(summary_field(&out, "images_copied"), 1, "{}", summary(&out));
    assert_eq!(summary_field(&out, "images_failed"), 0);

    // A normal run afterwards brings v2 up to date.
    regsync(&["once"], &cfg).assert_ok();
    assert_same_repo(&f.src, "cm", &f.dst, "cm");
}

#[test]
fn missing_on_image_step_with_differing_target_does_nothing() {
    let f = fixture();
    let md = f.dst.mark();
    let cfg = config(
        &[&f.src, &f.dst],
        0,
        &[image_step(&f.src.r("cm:v2"), &f.dst.r("cm:v2"))],
    );
    let out = regsync(&["once", "--missing"], &cfg);
    out.assert_ok();
    assert_eq!(
        manifest_digest(&f.dst, "cm", "v2").as_deref(),
        Some(f.stale.digest())
    );
    assert!(f.dst.writes_since(md).is_empty());
    assert_summary(&out, &[("images_copied", 0)]);
}
