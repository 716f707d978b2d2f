//! Failures: exit 1, one plain stderr line per failed image naming the reference (or step),
//! no panic, nothing written to the target; `--abort-on-error` vs. carrying on.

mod common;

use common::*;

fn assert_nothing_written(dst: &Registry, mark: usize) {
    assert!(
        catalog(dst).is_empty(),
        "target has repositories: {:?}",
        catalog(dst)
    );
    let w = dst.writes_since(mark);
    assert!(
        w.iter()
            .all(|l| !(l.method == "PUT" && l.path.contains("/manifests/") && l.status == 201)),
        "a manifest was written: {w:?}"
    );
}

#[test]
fn malformed_yaml() {
    let dst = Registry::start();
    let m = dst.mark();
    let cfg = format!(
        "version: 1\nsync:\n  - source: 127.0.0.1:1/a:v1\n    target: {}\n   type: image\n  - [unclosed\n",
        dst.r("a:v1")
    );
    let out = regsync(&["once"], &cfg);
    out.assert_fail();
    assert!(
        !out.error_lines().is_empty(),
        "no error text\n{}",
        out.dump()
    );
    assert_nothing_written(&dst, m);
}

#[test]
fn wrongly_typed_yaml_value() {
    let dst = Registry::start();
    let cfg = format!(
        "version: 1\ndefaults:\n  parallel: lots\nsync:\n  - source: 127.0.0.1:1/a:v1\n    target: {}\n    type: image\n",
        dst.r("a:v1")
    );
    let out = regsync(&["once"], &cfg);
    out.assert_fail();
    assert!(!out.error_lines().is_empty(), "{}", out.dump());
}

#[test]
fn unsupported_config_version() {
    let out = regsync(&["once"], "version: 2\nsync: []\n");
    out.assert_fail();
    assert!(
        out.stderr.contains("unsupported config version"),
        "{}",
        out.dump()
    );
}

#[test]
fn unknown_tls_value() {
    let out = regsync(
        &["once"],
        "version: 1\ncreds:\n  - registry: 127.0.0.1:1\n    tls: bogus\n",
    );
    out.assert_fail();
    assert!(out.stderr.contains("bogus"), "{}", out.dump());
}

#[test]
fn missing_config_flag() {
    let out = regsync_raw(&["once"]);
    out.assert_fail();
    assert!(!out.error_lines().is_empty());
}

#[test]
fn empty_config_does_nothing_and_succeeds() {
    let out = regsync(&["once"], "");
    out.assert_ok();
    assert!(out.error_lines().is_empty(), "{}", out.dump());
}

#[test]
fn unknown_step_type() {
    let (src, dst) = (Registry::start(), Registry::start());
    push(&src, "a", "v1", &oci_image(800));
    let m = dst.mark();
    let step = format!(
        "source: {}\ntarget: {}\ntype: mirror-everything\n",
        src.r("a:v1"),
        dst.r("a:v1")
    );
    let out = regsync(&["once"], &config(&[&src, &dst], 0, &[step]));
    out.assert_fail();
    out.assert_one_error_line(&[
        "invalid input",
        &src.r("a:v1"),
        "mirror-everything",
        "sync[0]",
    ]);
    let e = out.logs("Type not recognized, must be one of: registry, repository, or image");
    assert_eq!(e.len(), 1, "{}", out.dump());
    assert_eq!(e[0]["level"], "ERROR");
    assert_eq!(e[0]["type"], "mirror-everything");
    assert_nothing_written(&dst, m);
}

#[test]
fn invalid_source_reference() {
    let dst = Registry::start();
    let m = dst.mark();
    let bad = "127.0.0.1:5999/Invalid:v1:garbage";
    let out = regsync(
        &["once"],
        &config(&[&dst], 0, &[image_step(bad, &dst.r("a:v1"))]),
    );
    out.assert_fail();
    let l = out.assert_one_error_line(&[bad, "Invalid:v1:garbage"]);
    assert!(l.contains("invalid reference"), "{l}");
    assert_nothing_written(&dst, m);
}

#[test]
fn invalid_target_reference() {
    let (src, dst) = (Registry::start(), Registry::start());
    push(&src, "a", "v1", &oci_image(801));
    let m = dst.mark();
    let bad = format!("{}/UPPER/case:v1", dst.host());
    let out = regsync(
        &["once"],
        &config(&[&src, &dst], 0, &[image_step(&src.r("a:v1"), &bad)]),
    );
    out.assert_fail();
    let l = out.assert_one_error_line(&[&bad, "UPPER/case"]);
    assert!(l.contains("invalid reference"), "{l}");
    assert_nothing_written(&dst, m);
}

#[test]
fn unreachable_source_host() {
    let dst = Registry::start();
    let m = dst.mark();
    let guard = ClosedPort::new();
    let closed = guard.host();
    let src_ref = format!("{closed}/gone/app:v1");
    let cfg = config(
        &[&HostCreds::plain(&closed), &dst],
        0,
        &[image_step(&src_ref, &dst.r("gone/app:v1"))],
    );
    let t = std::time::Instant::now();
    let out = regsync(&["once"], &cfg);
    out.assert_fail();
    out.assert_one_error_line(&[&closed, "gone/app"]);
    assert!(
        t.elapsed().as_secs() < 30,
        "gave up too slowly: {:?}",
        t.elapsed()
    );
    assert_nothing_written(&dst, m);
}

#[test]
fn unreachable_target_host() {
    let src = Registry::start();
    push(&src, "a", "v1", &oci_image(802));
    let guard = ClosedPort::new();
    let closed = guard.host();
    let cfg = config(
        &[&src, &HostCreds::plain(&closed)],
        0,
        &[image_step(&src.r("a:v1"), &format!("{closed}/a:v1"))],
    );
    let out = regsync(&["once"], &cfg);
    out.assert_fail();
    out.assert_one_error_line(&[&closed, "a:v1"]);
}

#[test]
fn wrong_password_on_source() {
    let src = Registry::with_auth("testuser", "testpass");
    let dst = Registry::start();
    push(&src, "locked/app", "v1", &oci_image(803));
    let m = dst.mark();
    let wrong = HostCreds::new(&src.host(), "testuser", "not-the-password");
    let cfg = config(
        &[&wrong, &dst],
        0,
        &[image_step(&src.r("locked/app:v1"), &dst.r("locked/app:v1"))],
    );
    let out = regsync(&["once"], &cfg);
    out.assert_fail();
    let l = out.assert_one_error_line(&["locked/app", &src.host()]);
    let ll = l.to_lowercase();
    assert!(ll.contains("unauthorized") || ll.contains("401"), "{l}");
    assert!(src.access_log().iter().any(|a| a.status == 401));
    assert_nothing_written(&dst, m);
}

#[test]
fn wrong_password_on_target() {
    let src = Registry::start();
    let dst = Registry::with_auth("testuser", "testpass");
    push(&src, "a", "v1", &oci_image(804));
    let m = dst.mark();
    let wrong = HostCreds::new(&dst.host(), "testuser", "nope");
    let cfg = config(
        &[&src, &wrong],
        0,
        &[image_step(&src.r("a:v1"), &dst.r("a:v1"))],
    );
    let out = regsync(&["once"], &cfg);
    out.assert_fail();
    out.assert_one_error_line(&["a:v1", &dst.host()]);
    assert_nothing_written(&dst, m);
}

#[test]
fn missing_source_tag() {
    let (src, dst) = (Registry::start(), Registry::start());
    push(&src, "app", "v1", &oci_image(805));
    let m = dst.mark();
    let cfg = config(
        &[&src, &dst],
        0,
        &[image_step(&src.r("app:nope"), &dst.r("app:nope"))],
    );
    let out = regsync(&["once"], &cfg);
    out.assert_fail();
    let l = out.assert_one_error_line(&["app:nope", "nope"]);
    assert!(l.to_lowercase().contains("not found"), "{l}");
    assert!(
        !out.logs("Failed to lookup source manifest").is_empty(),
        "{}",
        out.dump()
    );
    assert_nothing_written(&dst, m);
    assert_summary(&out, &[("images_failed", 1), ("images_copied", 0)]);
}

#[test]
fn missing_source_repository() {
    let (src, dst) = (Registry::start(), Registry::start());
    let m = dst.mark();
    let cfg = config(
        &[&src, &dst],
        0,
        &[repo_step(&src.r("no/such/repo"), &dst.r("x"), &[], &[])],
    );
    let out = regsync(&["once"], &cfg);
    out.assert_fail();
    out.assert_one_error_line(&["no/such/repo"]);
    assert!(
        !out.logs("Failed getting source tags").is_empty(),
        "{}",
        out.dump()
    );
    assert_nothing_written(&dst, m);
}

#[test]
fn missing_ocidir_source() {
    let dst = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let gone = tmp.path().join("does-not-exist");
    let cfg = config(
        &[&dst],
        0,
        &[repo_step(&ocidir_ref(&gone, ""), &dst.r("x"), &[], &[])],
    );
    let out = regsync(&["once"], &cfg);
    out.assert_fail();
    out.assert_one_error_line(&["does-not-exist"]);
    assert!(
        !gone.exists(),
        "reading a missing layout must not create it"
    );
}

#[test]
fn registry_step_with_path_in_source() {
    let (src, dst) = (Registry::start(), Registry::start());
    let bad = format!("{}/some/path", src.host());
    let cfg = config(
        &[&src, &dst],
        0,
        &[registry_step(&bad, &dst.host(), &[], &[])],
    );
    let out = regsync(&["once"], &cfg);
    out.assert_fail();
    let l = out.assert_one_error_line(&[&bad]);
    assert!(l.contains("invalid hostname"), "{l}");
}

#[test]
fn read_only_target_one_error_line_per_failed_image() {
    let src = Registry::start();
    let mut dst = Registry::start();
    dst.restart(true);
    push(&src, "ro", "v1", &oci_image(806));
    push(&src, "ro", "v2", &oci_image(807));
    let cfg = config(
        &[&src, &dst],
        0,
        &[repo_step(&src.r("ro"), &dst.r("ro"), &[], &[])],
    );
    let out = regsync(&["once"], &cfg);
    out.assert_fail();
    let lines = out.error_lines();
    assert_eq!(
        lines.len(),
        2,
        "one line per failed image: {lines:?}\n{}",
        out.dump()
    );
    assert!(lines.iter().any(|l| l.contains("ro:v1")), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("ro:v2")), "{lines:?}");
    assert_summary(&out, &[("images_failed", 2), ("images_copied", 0)]);
}

/// Two sequential steps (parallel 0), the first fails.
fn two_steps(src: &Registry, dst: &Registry) -> String {
    push(src, "good", "v1", &oci_image(810));
    config(
        &[src, dst],
        0,
        &[
            image_step(&src.r("bad:v1"), &dst.r("bad:v1")),
            image_step(&src.r("good:v1"), &dst.r("good:v1")),
        ],
    )
}

#[test]
fn abort_on_error_stops_after_first_failure() {
    let (src, dst) = (Registry::start(), Registry::start());
    let cfg = two_steps(&src, &dst);
    let out = regsync(&["once", "--abort-on-error"], &cfg);
    out.assert_fail();
    out.assert_one_error_line(&["bad:v1", "bad"]);
    assert_eq!(
        manifest_digest(&dst, "good", "v1"),
        None,
        "second step ran despite --abort-on-error"
    );
    assert!(catalog(&dst).is_empty());
}

#[test]
fn without_abort_on_error_later_steps_still_run() {
    let (src, dst) = (Registry::start(), Registry::start());
    let cfg = two_steps(&src, &dst);
    let out = regsync(&["once"], &cfg);
    out.assert_fail();
    out.assert_one_error_line(&["bad:v1", "bad"]);
    assert_same_image(&src, &dst, "good", "v1");
    assert_eq!(manifest_digest(&dst, "bad", "v1"), None);
    assert_summary(&out, &[("images_failed", 1), ("images_copied", 1)]);
}

#[test]
fn check_reports_failures_too() {
    let (src, dst) = (Registry::start(), Registry::start());
    let cfg = two_steps(&src, &dst);
    let m = dst.mark();
    let out = regsync(&["check"], &cfg);
    out.assert_fail();
    out.assert_one_error_line(&["bad:v1", "bad"]);
    assert!(dst.writes_since(m).is_empty());
    assert_eq!(out.logs("Image sync needed").len(), 1, "{}", out.dump());
}
