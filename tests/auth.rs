//! Authentication: htpasswd basic auth on the source and on the target, and a Docker-Hub-like
//! Bearer-token proxy as the source (with credentials and anonymous).

mod common;

use common::*;

#[test]
fn basic_auth_source() {
    let src = Registry::with_auth("testuser", "testpass");
    let dst = Registry::start();
    push(
        &src,
        "private/app",
        "v1",
        &index_image(700, &["linux/amd64", "linux/arm64"]),
    );
    push(&src, "private/app", "v2", &docker_image(701));
    let cfg = config(
        &[&src, &dst],
        2,
        &[repo_step(
            &src.r("private/app"),
            &dst.r("private/app"),
            &[],
            &[],
        )],
    );
    regsync(&["once"], &cfg).assert_ok();
    assert_same_repo(&src, "private/app", &dst, "private/app");
}

#[test]
fn basic_auth_target() {
    let src = Registry::start();
    let dst = Registry::with_auth("pusher", "s3cr3t-pw");
    let img = manifest_list_image(710, &["linux/amd64", "linux/arm64"]);
    push(&src, "pub/app", "v1", &img);
    let cfg = config(
        &[&src, &dst],
        0,
        &[image_step(&src.r("pub/app:v1"), &dst.r("pub/app:v1"))],
    );
    regsync(&["once"], &cfg).assert_ok();
    assert_same_image(&src, &dst, "pub/app", "v1");
    assert!(dst
        .access_log()
        .iter()
        .any(|l| l.method == "PUT" && l.status == 201));
}

#[test]
fn basic_auth_on_both_sides_with_different_users() {
    let src = Registry::with_auth("alice", "alicepw");
    let dst = Registry::with_auth("bob", "bobpw");
    push(&src, "x", "v1", &oci_image(720));
    let cfg = config(
        &[&src, &dst],
        0,
        &[image_step(&src.r("x:v1"), &dst.r("y:v1"))],
    );
    regsync(&["once"], &cfg).assert_ok();
    assert_same_image_at(&src, "x", &dst, "y", "v1");
}

#[test]
fn bearer_token_proxy_source() {
    let upstream = Registry::start();
    let dst = Registry::start();
    push(
        &upstream,
        "hub/app",
        "v1",
        &index_image(730, &["linux/amd64", "linux/arm64"]),
    );
    push(&upstream, "hub/app", "v2", &oci_image(731));
    let proxy = TokenProxy::start(&upstream, "alice", "secret");
    let mu = upstream.mark();
    let cfg = config(
        &[&proxy, &dst],
        2,
        &[repo_step(&proxy.r("hub/app"), &dst.r("hub/app"), &[], &[])],
    );
    regsync(&["once"], &cfg).assert_ok();
    assert_same_repo(&upstream, "hub/app", &dst, "hub/app");

    let c = proxy.counts();
    assert!(
        c.get("unauthorized").copied().unwrap_or(0) >= 1,
        "challenge never issued: {c:?}"
    );
    assert!(c.get("token").copied().unwrap_or(0) >= 1, "{c:?}");
    assert_eq!(c.get("token_denied"), None, "{c:?}");
    assert!(c.get("tags").copied().unwrap_or(0) >= 1, "{c:?}");
    assert!(c.get("blob_get").copied().unwrap_or(0) >= 1, "{c:?}");
    // Tokens are reused rather than fetched per request.
    let requests: u64 = [
        "manifest_head",
        "manifest_get",
        "blob_get",
        "blob_head",
        "tags",
    ]
    .iter()
    .map(|k| c.get(*k).copied().unwrap_or(0))
    .sum();
    assert!(
        c["token"] <= 5 && c["token"] < requests,
        "too many token requests: {c:?}"
    );
    // Read-only use of the source: nothing written upstream.
    assert!(
        upstream.writes_since(mu).is_empty(),
        "{:?}",
        upstream.writes_since(mu)
    );
}

#[test]
fn bearer_token_proxy_anonymous_pull() {
    let upstream = Registry::start();
    let dst = Registry::start();
    let img = oci_image(740);
    push(&upstream, "library/alpine", "3", &img);
    let proxy = TokenProxy::anonymous(&upstream);
    let cfg = config(
        &[&proxy, &dst],
        0,
        &[image_step(
            &proxy.r("library/alpine:3"),
            &dst.r("library/alpine:3"),
        )],
    );
    regsync(&["once"], &cfg).assert_ok();
    assert_has_image(&dst, "library/alpine", "3", &img);
    assert!(proxy.count("token") >= 1);
}

#[test]
fn bearer_token_wrong_password_fails() {
    let upstream = Registry::start();
    let dst = Registry::start();
    push(&upstream, "hub/app", "v1", &oci_image(750));
    let proxy = TokenProxy::start(&upstream, "alice", "secret");
    let wrong = HostCreds::new(&proxy.host(), "alice", "WRONG");
    let cfg = config(
        &[&wrong, &dst],
        0,
        &[image_step(&proxy.r("hub/app:v1"), &dst.r("hub/app:v1"))],
    );
    let out = regsync(&["once"], &cfg);
    out.assert_fail();
    out.assert_one_error_line(&["hub/app", &proxy.host()]);
    assert!(proxy.count("token_denied") >= 1);
    assert!(catalog(&dst).is_empty());
}
