//! Authentication: htpasswd basic auth on the source and on the target, a Docker-Hub-like
//! Bearer-token proxy as the source (with credentials and anonymous), and as a target whose
//! token server refuses `delete`.

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

/// A `DELETE` asks for the `delete` scope for itself only. Against a token server that grants
/// pull and push but refuses `delete`, pruning a tag fails (the tag stays), and the copy of
/// the next step, into another repository of the same registry, still gets its tokens: no
/// later token request asks for `delete`.
#[test]
fn a_delete_scope_is_not_kept_for_later_requests() {
    a_refused_delete_fails_the_deletion_only(false);
}

/// The same with an identity token as the target's only credential (`token:`, the POST
/// flow): the refused delete token is no verdict on the identity token, which the next
/// step's pulls and pushes still need.
#[test]
fn a_refused_delete_leaves_the_identity_token_to_later_requests() {
    a_refused_delete_fails_the_deletion_only(true);
}

fn a_refused_delete_fails_the_deletion_only(identity_token: bool) {
    let src = Registry::start();
    let upstream = Registry::start();
    push(&src, "app", "v1", &oci_image(760));
    push(&src, "app", "v2", &oci_image(761));
    push(&src, "other", "v1", &oci_image(762));
    let proxy = TokenProxy::start_with(
        &upstream,
        ProxyOpts {
            users: vec![("alice".into(), "secret".into())],
            anonymous: false,
            upstream_auth: upstream.auth(),
            refuse_delete: true,
            ..Default::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let state = state.to_str().unwrap();
    let app = pruning_step(&src, &proxy);
    let config = |steps: &[String]| {
        let cfg = config(&[&src, &proxy], 0, steps);
        if !identity_token {
            return cfg;
        }
        // The proxy takes `rt-<user>` as a refresh (identity) token.
        let basic = "    user: \"alice\"\n    pass: \"secret\"\n";
        assert!(cfg.contains(basic), "{cfg}");
        cfg.replace(basic, "    token: rt-alice\n")
    };
    regsync(
        &["once", "--state", state],
        &config(std::slice::from_ref(&app)),
    )
    .assert_ok();
    // v2 leaves the source: the next run prunes it from the mirror.
    delete_from_source(&src, "app", "v2");
    let first_run = proxy.token_scopes().len();

    // `parallel: 0`: the steps run one after the other, the prune before the second copy.
    let other = repo_step(&src.r("other"), &proxy.r("mirror/other"), &[], &[]);
    let out = regsync(&["once", "--state", state], &config(&[app, other]));
    out.assert_fail();
    out.assert_one_error_line(&["mirror/app"]);
    assert!(proxy.count("token_denied") >= 1, "{:?}", proxy.counts());
    assert_eq!(tags(&upstream, "mirror/app"), ["v1", "v2"]);
    assert_same_image_at(&src, "other", &upstream, "mirror/other", "v1");
    let asked = &proxy.token_scopes()[first_run..];
    let with_delete = |scopes: &Vec<String>| scopes.iter().any(|s| s.ends_with("delete"));
    assert!(asked.iter().any(with_delete), "{asked:?}");
    for scopes in asked {
        if scopes.iter().any(|s| s.contains("mirror/other")) {
            assert!(!with_delete(scopes), "{asked:?}");
        }
    }
}

/// Against a registry whose `DELETE` needs `repository:X:*` (older distribution releases),
/// the first delete's challenge widens its token; the next deletes in that repository reuse
/// that token instead of asking for `delete` alone again, being refused, and asking again.
#[test]
fn deletes_in_one_repository_share_the_token_their_challenge_widened() {
    let src = Registry::start();
    let upstream = Registry::start();
    for (i, tag) in ["v1", "v2", "v3", "v4"].iter().enumerate() {
        push(&src, "app", tag, &oci_image(770 + i as u64));
    }
    let proxy = TokenProxy::start_with(
        &upstream,
        ProxyOpts {
            users: vec![("alice".into(), "secret".into())],
            upstream_auth: upstream.auth(),
            delete_needs_any: true,
            ..Default::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let state = state.to_str().unwrap();
    let app = pruning_step(&src, &proxy);
    let cfg = config(&[&src, &proxy], 0, &[app]);
    regsync(&["once", "--state", state], &cfg).assert_ok();
    for tag in ["v2", "v3", "v4"] {
        delete_from_source(&src, "app", tag);
    }
    let first_run = proxy.token_scopes().len();
    regsync(&["once", "--state", state], &cfg).assert_ok();
    assert_eq!(tags(&upstream, "mirror/app"), ["v1"]);
    let asked = &proxy.token_scopes()[first_run..];
    let for_deletes = asked
        .iter()
        .filter(|scopes| {
            scopes.iter().any(|s| {
                let actions = s.rsplit(':').next().unwrap_or("");
                actions.split(',').any(|a| a == "delete" || a == "*")
            })
        })
        .count();
    // The first delete: its own token, then the one its challenge widened. No more.
    assert_eq!(for_deletes, 2, "{asked:?}");
}

/// `src/app` into `proxy/mirror/app`, pruning what leaves the source (any share of it).
fn pruning_step(src: &Registry, proxy: &TokenProxy) -> String {
    format!(
        "source: {}\ntarget: {}\ntype: repository\ncleanupTags: true\ncleanupTagsMaxPercent: 100\n",
        src.r("app"),
        proxy.r("mirror/app")
    )
}

/// Deletes `repo:tag`'s manifest from the source registry: the tag leaves the source.
fn delete_from_source(src: &Registry, repo: &str, tag: &str) {
    let digest = manifest_digest(src, repo, tag).unwrap();
    let status = block_on(async {
        http()
            .delete(format!("{}/v2/{repo}/manifests/{digest}", src.url()))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(status, 202);
}
