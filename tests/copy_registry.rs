//! `type: registry`: catalog → repos (allow/deny) → every tag, into a target host with a path
//! prefix (`127.0.0.1:P2/mirror`).

mod common;

use common::*;

fn seed(src: &Registry) {
    push(src, "lib/alpha", "v1", &oci_image(400));
    push(
        src,
        "lib/alpha",
        "v2",
        &index_image(401, &["linux/amd64", "linux/arm64"]),
    );
    push(src, "lib/beta", "v1", &docker_image(402));
    push(
        src,
        "other/gamma",
        "1.0",
        &manifest_list_image(403, &["linux/amd64", "linux/arm64"]),
    );
    push(src, "other/delta", "1.0", &oci_image(404));
    push(src, "skip-me", "latest", &oci_image(405));
}

#[test]
fn registry_copy_with_repo_allow_and_deny() {
    let (src, dst) = (Registry::start(), Registry::start());
    seed(&src);
    let cfg = config(
        &[&src, &dst],
        2,
        &[registry_step(
            &src.host(),
            &format!("{}/mirror", dst.host()),
            &["lib/.*", "other/gamma"],
            &["lib/beta"],
        )],
    );
    let out = regsync(&["once"], &cfg);
    out.assert_ok();
    assert_eq!(
        catalog(&dst),
        vec!["mirror/lib/alpha", "mirror/other/gamma"]
    );
    assert_same_repo(&src, "lib/alpha", &dst, "mirror/lib/alpha");
    assert_same_repo(&src, "other/gamma", &dst, "mirror/other/gamma");
    assert_summary(&out, &[("images_copied", 3), ("images_failed", 0)]);
    assert!(src.count("GET", "/v2/_catalog") >= 1);
}

#[test]
fn registry_copy_everything_then_no_op() {
    let (src, dst) = (Registry::start(), Registry::start());
    seed(&src);
    let cfg = config(
        &[&src, &dst],
        4,
        &[registry_step(
            &src.host(),
            &format!("{}/mirror", dst.host()),
            &[],
            &[],
        )],
    );
    let out = regsync(&["once"], &cfg);
    out.assert_ok();
    let repos = catalog(&src);
    assert_eq!(repos.len(), 5);
    assert_eq!(
        catalog(&dst),
        repos
            .iter()
            .map(|r| format!("mirror/{r}"))
            .collect::<Vec<_>>()
    );
    for r in &repos {
        assert_same_repo(&src, r, &dst, &format!("mirror/{r}"));
    }
    assert_summary(&out, &[("images_copied", 6), ("images_failed", 0)]);

    let md = dst.mark();
    let again = regsync(&["once"], &cfg);
    again.assert_ok();
    assert_summary(
        &again,
        &[
            ("images_copied", 0),
            ("images_matched", 6),
            ("images_failed", 0),
        ],
    );
    assert!(
        dst.writes_since(md).is_empty(),
        "{:?}",
        dst.writes_since(md)
    );
}

#[test]
fn registry_copy_without_prefix() {
    let (src, dst) = (Registry::start(), Registry::start());
    push(&src, "one", "v1", &oci_image(410));
    push(&src, "two/nested/repo", "v1", &docker_image(411));
    let cfg = config(
        &[&src, &dst],
        0,
        &[registry_step(&src.host(), &dst.host(), &[], &[])],
    );
    regsync(&["once"], &cfg).assert_ok();
    assert_eq!(catalog(&dst), vec!["one", "two/nested/repo"]);
    assert_same_image(&src, &dst, "one", "v1");
    assert_same_image(&src, &dst, "two/nested/repo", "v1");
}
