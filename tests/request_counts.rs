//! How many requests a run sends (performance issue), counted in the registries' own access
//! logs: a no-op run sends at most two manifest HEADs per tag plus the listings and no
//! manifest GET; a copy asks the target about a tag only when the target's tag listing
//! has it.

mod common;

use common::registry::count_lines;
use common::*;

/// A repository of four tags, one of which the target already holds: the copy sends one
/// manifest HEAD to the target (the tag its listing names), not four. The second run is a
/// no-op: per registry at most one HEAD per tag plus one tag listing, and no manifest GET.
#[test]
fn the_target_is_asked_only_about_listed_tags_and_a_no_op_stays_at_two_heads_per_tag() {
    let (src, dst) = (Registry::start(), Registry::start());
    let images: Vec<_> = (0..4).map(|i| oci_image(9700 + i)).collect();
    for (i, img) in images.iter().enumerate() {
        push(&src, "app", &format!("v{i}"), img);
    }
    push(&dst, "app", "v0", &images[0]);
    let cfg = config(
        &[&src, &dst],
        2,
        &[repo_step(&src.r("app"), &dst.r("app"), &[], &[])],
    );

    let mark = dst.mark();
    let out = regsync(&["once"], &cfg);
    out.assert_ok();
    assert_summary(&out, &[("images_copied", 3), ("images_matched", 1)]);
    let seen = dst.access_since(mark);
    assert_eq!(
        count_lines(&seen, "HEAD", "/manifests/"),
        1,
        "target manifest HEADs: {seen:?}"
    );
    for i in 0..4 {
        assert_same_image(&src, &dst, "app", &format!("v{i}"));
    }

    let (src_mark, dst_mark) = (src.mark(), dst.mark());
    let out = regsync(&["once"], &cfg);
    out.assert_ok();
    assert_summary(&out, &[("images_matched", 4), ("images_copied", 0)]);
    for (reg, mark) in [(&src, src_mark), (&dst, dst_mark)] {
        let seen = reg.access_since(mark);
        let heads = count_lines(&seen, "HEAD", "/manifests/");
        let gets = count_lines(&seen, "GET", "/manifests/");
        let lists = count_lines(&seen, "GET", "/tags/list");
        let pings = seen.iter().filter(|l| l.path == "/v2/").count();
        let other = seen.len() - heads - gets - lists - pings;
        assert!(heads <= 4, "{} manifest HEADs: {seen:?}", heads);
        assert_eq!(gets, 0, "manifest GETs in a no-op: {seen:?}");
        assert!(lists <= 1, "{lists} tag listings: {seen:?}");
        assert_eq!(other, 0, "other requests: {seen:?}");
    }
}

/// A target listing that is out of date (the proxy in front of the target answers every tag
/// listing with no tags) must not cost the backup of the image a copy overwrites: with
/// `backup` set the target tag is always asked about.
#[test]
fn a_stale_target_listing_never_skips_the_backup_of_an_overwritten_tag() {
    use common::rewrite::{Reply, RewriteOpts, RewriteProxy};
    use std::sync::Arc;
    let (src, dst) = (Registry::start(), Registry::start());
    let (old, new) = (oci_image(9710), oci_image(9711));
    push(&dst, "app", "v1", &old);
    push(&src, "app", "v1", &new);
    let front = RewriteProxy::start(
        &dst.url(),
        RewriteOpts {
            after: Some(Arc::new(|seen, reply: &mut Reply| {
                if seen.method == "GET" && seen.path.contains("/tags/list") {
                    *reply = Reply::new(200, "application/json", r#"{"name":"app","tags":[]}"#);
                }
            })),
            ..Default::default()
        },
    );
    let step =
        repo_step(&src.r("app"), &front.r("app"), &[], &[]) + "backup: \"bk-{{.Ref.Tag}}\"\n";
    let cfg = config(&[&src, &front], 2, &[step]);
    let out = regsync(&["once"], &cfg);
    out.assert_ok();
    assert_same_image(&src, &dst, "app", "v1");
    assert!(
        tags(&dst, "app").contains(&"bk-v1".to_string()),
        "no backup of the overwritten v1: {:?}\n{}",
        tags(&dst, "app"),
        out.dump()
    );
}

/// A cold copy into a repository the target does not have: the target's tag listing
/// answers 404, which proves every tag absent, so the target is asked about none of them, and
/// the source manifest is read once (GET by tag), not HEADed and then read. Per image: one
/// manifest GET on the source, one manifest PUT on the target, no manifest HEAD on either.
#[test]
fn a_cold_copy_into_a_new_repository_reads_each_source_manifest_once_and_heads_nothing() {
    let (src, dst) = (Registry::start(), Registry::start());
    let images: Vec<_> = (0..3).map(|i| oci_image(9720 + i)).collect();
    for (i, img) in images.iter().enumerate() {
        push(&src, "app", &format!("v{i}"), img);
    }
    let cfg = config(
        &[&src, &dst],
        2,
        &[repo_step(&src.r("app"), &dst.r("new/app"), &[], &[])],
    );
    let (src_mark, dst_mark) = (src.mark(), dst.mark());
    let out = regsync(&["once"], &cfg);
    out.assert_ok();
    assert_summary(&out, &[("images_copied", 3)]);
    let (src_seen, dst_seen) = (src.access_since(src_mark), dst.access_since(dst_mark));
    for i in 0..3 {
        assert_same_image_at(&src, "app", &dst, "new/app", &format!("v{i}"));
    }
    for (side, seen, method, want) in [
        ("source", &src_seen, "HEAD", 0),
        ("source", &src_seen, "GET", 3),
        ("target", &dst_seen, "HEAD", 0),
        ("target", &dst_seen, "PUT", 3),
    ] {
        let got = count_lines(seen, method, "/manifests/");
        assert_eq!(got, want, "{side} manifest {method}s: {seen:?}");
    }
}

/// Where reading the source manifest whole up front would cost pulls it need not, the
/// source is HEADed first even for a tag the target lacks: a `mediaTypes` that leaves out a
/// common type (a tag it skips is never copied, so it is absent on every run), and the
/// manifest cache (one source read by digest serves every target).
#[test]
fn a_tag_the_target_lacks_is_headed_first_when_a_get_could_be_wasted() {
    let (src, dst) = (Registry::start(), Registry::start());
    push(&src, "app", "v0", &oci_image(9730));
    // mediaTypes without the OCI manifest type: the OCI tag is skipped, after a HEAD only.
    let step = repo_step(&src.r("app"), &dst.r("narrow/app"), &[], &[])
        + "mediaTypes:\n  - application/vnd.docker.distribution.manifest.v2+json\n";
    let cfg = config(&[&src, &dst], 2, &[step]);
    let mark = src.mark();
    let out = regsync(&["once"], &cfg);
    out.assert_ok();
    assert_summary(&out, &[("images_skipped", 1), ("images_copied", 0)]);
    let seen = src.access_since(mark);
    assert_eq!(count_lines(&seen, "GET", "/manifests/"), 0, "{seen:?}");
    assert_eq!(count_lines(&seen, "HEAD", "/manifests/"), 1, "{seen:?}");

    // The cache on, one source into two new repositories: one manifest read in all.
    let steps = [
        repo_step(&src.r("app"), &dst.r("one/app"), &[], &[]),
        repo_step(&src.r("app"), &dst.r("two/app"), &[], &[]),
    ];
    let cfg = config(&[&src, &dst], 1, &steps).replacen(
        "defaults:\n",
        "defaults:\n  cacheCount: 100\n  cacheTime: 5m\n",
        1,
    );
    let mark = src.mark();
    let out = regsync(&["once"], &cfg);
    out.assert_ok();
    assert_summary(&out, &[("images_copied", 2)]);
    let seen = src.access_since(mark);
    assert_eq!(count_lines(&seen, "GET", "/manifests/"), 1, "{seen:?}");
}

/// Only the first page's 404 proves a target repository absent: a tag listing whose `Link`
/// page answers 404 is a failed listing, and the tags are asked about (the one the target
/// holds is matched, not pushed again).
#[test]
fn a_404_on_a_later_listing_page_does_not_make_every_tag_absent() {
    use common::rewrite::{Reply, RewriteOpts, RewriteProxy};
    use std::sync::Arc;
    let (src, dst) = (Registry::start(), Registry::start());
    let img = oci_image(9740);
    push(&src, "app", "v0", &img);
    push(&dst, "app", "v0", &img);
    let front = RewriteProxy::start(
        &dst.url(),
        RewriteOpts {
            before: Some(Arc::new(|seen| {
                if !(seen.method == "GET" && seen.path.contains("/tags/list")) {
                    return None;
                }
                if seen.path.contains("last=") {
                    return Some(Reply::new(
                        404,
                        "application/json",
                        r#"{"errors":[{"code":"NAME_UNKNOWN","message":"gone"}]}"#,
                    ));
                }
                let mut r = Reply::new(200, "application/json", r#"{"name":"app","tags":[]}"#);
                r.set_header("link", "</v2/app/tags/list?last=a&n=1>; rel=\"next\"");
                Some(r)
            })),
            ..Default::default()
        },
    );
    let cfg = config(
        &[&src, &front],
        2,
        &[repo_step(&src.r("app"), &front.r("app"), &[], &[])],
    );
    let out = regsync(&["once"], &cfg);
    out.assert_ok();
    assert_summary(&out, &[("images_matched", 1), ("images_copied", 0)]);
}
