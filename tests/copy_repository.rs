//! `type: repository`: every tag, tag allow/deny filters, no matching tags, the no-op re-run,
//! and blob de-duplication of a base layer shared by several tags under `parallel: 4`.

mod common;

use common::*;

fn seed_repo(reg: &Registry, repo: &str) -> Vec<(String, TestImage)> {
    let imgs = vec![
        ("v1".to_string(), oci_image(200)),
        ("v2".to_string(), docker_image(201)),
        (
            "v3".to_string(),
            index_image(202, &["linux/amd64", "linux/arm64"]),
        ),
        (
            "latest".to_string(),
            manifest_list_image(203, &["linux/amd64", "linux/arm/v7"]),
        ),
        ("dev".to_string(), oci_image(204)),
    ];
    for (t, img) in &imgs {
        push(reg, repo, t, img);
    }
    imgs
}

#[test]
fn copies_every_tag() {
    let (src, dst) = (Registry::start(), Registry::start());
    seed_repo(&src, "lib/app");
    let cfg = config(
        &[&src, &dst],
        0,
        &[repo_step(&src.r("lib/app"), &dst.r("lib/app"), &[], &[])],
    );
    let out = regsync(&["once"], &cfg);
    out.assert_ok();
    assert_same_repo(&src, "lib/app", &dst, "lib/app");
    assert_summary(
        &out,
        &[
            ("images_checked", 5),
            ("images_copied", 5),
            ("images_failed", 0),
        ],
    );
}

#[test]
fn copies_into_a_different_repository_name() {
    let (src, dst) = (Registry::start(), Registry::start());
    seed_repo(&src, "upstream/app");
    let cfg = config(
        &[&src, &dst],
        2,
        &[repo_step(
            &src.r("upstream/app"),
            &dst.r("mirror/app"),
            &[],
            &[],
        )],
    );
    regsync(&["once"], &cfg).assert_ok();
    assert_same_repo(&src, "upstream/app", &dst, "mirror/app");
    assert_eq!(catalog(&dst), vec!["mirror/app"]);
}

#[test]
fn tag_allow_and_deny_filters() {
    let (src, dst) = (Registry::start(), Registry::start());
    seed_repo(&src, "filt");
    let cfg = config(
        &[&src, &dst],
        0,
        &[repo_step(
            &src.r("filt"),
            &dst.r("filt"),
            &["v.*", "latest"],
            &["v2"],
        )],
    );
    let out = regsync(&["once"], &cfg);
    out.assert_ok();
    assert_eq!(tags(&dst, "filt"), vec!["latest", "v1", "v3"]);
    for t in ["latest", "v1", "v3"] {
        assert_same_image(&src, &dst, "filt", t);
    }
    assert_summary(&out, &[("images_copied", 3), ("images_failed", 0)]);
}

#[test]
fn allow_patterns_are_anchored() {
    let (src, dst) = (Registry::start(), Registry::start());
    for (i, t) in ["1", "1.1", "11", "x1"].iter().enumerate() {
        push(&src, "anch", t, &oci_image(210 + i as u64));
    }
    // "1" must match only the tag "1" (implicit ^...$), "1\.[0-9]" only "1.1".
    let cfg = config(
        &[&src, &dst],
        0,
        &[repo_step(
            &src.r("anch"),
            &dst.r("anch"),
            &["1", "1\\.[0-9]"],
            &[],
        )],
    );
    regsync(&["once"], &cfg).assert_ok();
    assert_eq!(tags(&dst, "anch"), vec!["1", "1.1"]);
}

#[test]
fn deny_only_filter() {
    let (src, dst) = (Registry::start(), Registry::start());
    seed_repo(&src, "denyonly");
    let cfg = config(
        &[&src, &dst],
        0,
        &[repo_step(
            &src.r("denyonly"),
            &dst.r("denyonly"),
            &[],
            &["dev", "latest"],
        )],
    );
    regsync(&["once"], &cfg).assert_ok();
    assert_eq!(tags(&dst, "denyonly"), vec!["v1", "v2", "v3"]);
}

#[test]
fn no_matching_tags_is_a_warning_not_an_error() {
    let (src, dst) = (Registry::start(), Registry::start());
    seed_repo(&src, "nomatch");
    let cfg = config(
        &[&src, &dst],
        0,
        &[repo_step(
            &src.r("nomatch"),
            &dst.r("nomatch"),
            &["nothing-.*"],
            &[],
        )],
    );
    let out = regsync(&["once"], &cfg);
    out.assert_ok();
    let w = out.logs("No matching tags found");
    assert_eq!(w.len(), 1, "{}", out.dump());
    assert_eq!(w[0]["level"], "WARN");
    assert!(catalog(&dst).is_empty());
    assert_summary(&out, &[("images_copied", 0), ("images_failed", 0)]);
}

#[test]
fn second_run_uploads_nothing() {
    let (src, dst) = (Registry::start(), Registry::start());
    seed_repo(&src, "again");
    let cfg = config(
        &[&src, &dst],
        4,
        &[repo_step(&src.r("again"), &dst.r("again"), &[], &[])],
    );
    regsync(&["once"], &cfg).assert_ok();
    assert_same_repo(&src, "again", &dst, "again");

    let md = dst.mark();
    let out = regsync(&["once"], &cfg);
    out.assert_ok();
    assert_summary(
        &out,
        &[
            ("images_checked", 5),
            ("images_copied", 0),
            ("images_matched", 5),
            ("manifests_pushed", 0),
            ("blobs_copied", 0),
        ],
    );
    assert_eq!(dst.count_since(md, "PUT", "/manifests/"), 0);
    assert_eq!(dst.count_since(md, "POST", "/blobs/uploads"), 0);
    assert!(
        dst.writes_since(md).is_empty(),
        "{:?}",
        dst.writes_since(md)
    );
}

#[test]
fn shared_base_layer_uploaded_at_most_once() {
    let (src, dst) = (Registry::start(), Registry::start());
    let base = layer(9_999, 64 * 1024, Format::Oci);
    let mut imgs = Vec::new();
    for i in 0..5u64 {
        let img = ImageSpec::new(300 + i, Format::Oci)
            .base(std::slice::from_ref(&base))
            .layers(1, 4096)
            .build();
        push(&src, "shared", &format!("t{i}"), &img);
        imgs.push(img);
    }
    let md = dst.mark();
    let cfg = config(
        &[&src, &dst],
        4,
        &[repo_step(&src.r("shared"), &dst.r("shared"), &[], &[])],
    );
    let out = regsync(&["once"], &cfg);
    out.assert_ok();
    for i in 0..5 {
        assert_same_image(&src, &dst, "shared", &format!("t{i}"));
    }
    let hex = base.digest.trim_start_matches("sha256:");
    let log = dst.access_since(md);
    let base_uploads: Vec<_> = log
        .iter()
        .filter(|l| l.method == "PUT" && l.path.contains("/blobs/uploads/") && l.path.contains(hex))
        .collect();
    assert!(
        base_uploads.len() <= 1,
        "base layer uploaded {} times: {base_uploads:?}",
        base_uploads.len()
    );
    assert!(blob_exists(&dst, "shared", &base.digest));
    // Its bytes were also downloaded from the source at most once.
    assert!(src.count("GET", &format!("/v2/shared/blobs/{}", base.digest)) <= 1);
    assert_summary(&out, &[("images_copied", 5), ("images_failed", 0)]);
    // 5 configs + 5 unique layers + 1 base copied; the other 4 uses of the base are not.
    assert_eq!(summary_field(&out, "blobs_copied"), 11, "{}", summary(&out));
}
