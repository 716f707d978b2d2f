//! Host settings of `creds` entries (spec §3.3, §7.1) against real registries: `hostname`
//! aliases, `pathPrefix` (also behind a Bearer-token proxy, for the scopes), `mirrors` and
//! `priority` for reads, `apiOpts.disableHead`, and `blobMax`/`blobChunk` chunked uploads.

mod common;

use common::*;

/// A config from raw creds entries (each a YAML mapping body without the leading `- `) and
/// sync steps (as [`config`] takes them).
fn cfg(creds: &[String], steps: &[String]) -> String {
    let mut s = String::from("version: 1\ncreds:\n");
    for c in creds {
        push_item(&mut s, c);
    }
    s.push_str("sync:\n");
    for st in steps {
        push_item(&mut s, st);
    }
    s
}

fn push_item(s: &mut String, body: &str) {
    let mut first = true;
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        s.push_str(if first { "  - " } else { "    " });
        s.push_str(line);
        s.push('\n');
        first = false;
    }
}

/// A plain-http creds entry for registry name `name` contacting `hostname`, plus `extra`
/// YAML lines.
fn host_entry(name: &str, hostname: &str, extra: &str) -> String {
    format!("registry: {name}\nhostname: {hostname}\ntls: disabled\n{extra}")
}

fn plain(host: &str) -> String {
    format!("registry: {host}\ntls: disabled\n")
}

#[test]
fn hostname_alias_as_source_and_target() {
    let src = Registry::start();
    let dst = Registry::start();
    push(
        &src,
        "team/app",
        "v1",
        &index_image(9200, &["linux/amd64", "linux/arm64"]),
    );
    push(&src, "team/app", "v2", &docker_image(9201));
    let config = cfg(
        &[
            host_entry("myalias.example:5000", &src.host(), ""),
            host_entry("otheralias.example", &dst.host(), ""),
        ],
        &[
            image_step(
                "myalias.example:5000/team/app:v1",
                "otheralias.example/team/app:v1",
            ),
            repo_step(
                "myalias.example:5000/team/app",
                "otheralias.example/copy/app",
                &[],
                &[],
            ),
        ],
    );
    regsync(&["once"], &config).assert_ok();
    assert_same_image(&src, &dst, "team/app", "v1");
    assert_same_repo(&src, "team/app", &dst, "copy/app");
}

#[test]
fn path_prefix_on_source_and_target() {
    let src = Registry::start();
    let dst = Registry::start();
    push(&src, "mirror/hub/library/app", "v1", &oci_image(9210));
    push(
        &src,
        "mirror/hub/library/app",
        "v2",
        &index_image(9211, &["linux/amd64", "linux/arm64"]),
    );
    let config = cfg(
        &[
            host_entry(
                "prefixed.example",
                &src.host(),
                "pathPrefix: /mirror/hub/\n",
            ),
            host_entry("copies.example", &dst.host(), "pathPrefix: copies\n"),
        ],
        &[repo_step(
            "prefixed.example/library/app",
            "copies.example/app",
            &[],
            &[],
        )],
    );
    regsync(&["once"], &config).assert_ok();
    assert_same_repo(&src, "mirror/hub/library/app", &dst, "copies/app");
    // A second run reads through the prefixes and finds everything in place.
    let m = dst.mark();
    regsync(&["once"], &config).assert_ok();
    assert_eq!(dst.writes_since(m), vec![]);
}

#[test]
fn path_prefix_bearer_scopes_name_the_prefixed_repository() {
    let upstream = Registry::start();
    let dst = Registry::start();
    push(&upstream, "pre/app", "v1", &oci_image(9220));
    let proxy = TokenProxy::anonymous(&upstream);
    let config = cfg(
        &[
            host_entry("tokens.example", &proxy.host(), "pathPrefix: pre\n"),
            plain(&dst.host()),
        ],
        &[image_step("tokens.example/app:v1", &dst.r("app:v1"))],
    );
    regsync(&["once"], &config).assert_ok();
    assert_same_image_at(&upstream, "pre/app", &dst, "app", "v1");
    // Only the very first request goes without a token: the token asked for afterwards holds
    // `repository:pre/app:pull`, the name the proxy checks.
    assert_eq!(proxy.count("unauthorized"), 1, "{:?}", proxy.counts());
}

#[test]
fn mirror_serves_reads_while_upstream_is_down() {
    let upstream = ClosedPort::new();
    let mirror = Registry::start();
    let dst = Registry::start();
    push(
        &mirror,
        "lib/app",
        "v1",
        &index_image(9230, &["linux/amd64", "linux/arm64"]),
    );
    push(&mirror, "lib/app", "v2", &oci_image(9231));
    let mark = mirror.mark();
    let config = cfg(
        &[
            host_entry(
                "upstream.example:5000",
                &upstream.host(),
                "mirrors: [mirror.example]\n",
            ),
            host_entry("mirror.example", &mirror.host(), ""),
            plain(&dst.host()),
        ],
        &[repo_step(
            "upstream.example:5000/lib/app",
            &dst.r("lib/app"),
            &[],
            &[],
        )],
    );
    regsync(&["once"], &config).assert_ok();
    let log = mirror.access_since(mark);
    assert_same_repo(&mirror, "lib/app", &dst, "lib/app");
    // The mirror is told which registry the request is for (`ns=<upstream hostname>`).
    let ns = format!("ns=127.0.0.1%3A{}", upstream.port());
    for kind in ["/tags/list", "/manifests/", "/blobs/"] {
        assert!(
            log.iter()
                .any(|l| l.path.contains(kind) && l.path.contains(&ns)),
            "{kind} with {ns} in {log:?}"
        );
    }
    assert!(
        log.iter()
            .all(|l| !l.path.starts_with("/v2/lib/") || l.path.contains(&ns)),
        "{log:?}"
    );
}

#[test]
fn mirror_without_the_image_falls_back_to_upstream() {
    let upstream = Registry::start();
    let mirror = Registry::start();
    let dst = Registry::start();
    push(
        &upstream,
        "lib/app",
        "v1",
        &index_image(9240, &["linux/amd64", "linux/arm64"]),
    );
    let config = cfg(
        &[
            format!("{}mirrors: [{}]\n", plain(&upstream.host()), mirror.host()),
            plain(&mirror.host()),
            plain(&dst.host()),
        ],
        &[image_step(&upstream.r("lib/app:v1"), &dst.r("lib/app:v1"))],
    );
    regsync(&["once"], &config).assert_ok();
    assert_same_image(&upstream, &dst, "lib/app", "v1");
    // The mirror was asked first and answered 404; the upstream served the image.
    let tried = mirror.access_log();
    assert!(
        tried
            .iter()
            .any(|l| l.path.contains("/manifests/") && l.status == 404),
        "{tried:?}"
    );
    assert!(upstream.count("GET", "/manifests/") > 0);
}

#[test]
fn unreachable_mirror_is_skipped() {
    let upstream = Registry::start();
    let mirror = ClosedPort::new();
    let dst = Registry::start();
    push(&upstream, "lib/app", "v1", &oci_image(9245));
    let config = cfg(
        &[
            format!("{}mirrors: [{}]\n", plain(&upstream.host()), mirror.host()),
            plain(&mirror.host()),
            plain(&dst.host()),
        ],
        &[image_step(&upstream.r("lib/app:v1"), &dst.r("lib/app:v1"))],
    );
    let out = regsync(&["once"], &config);
    out.assert_ok();
    assert_same_image(&upstream, &dst, "lib/app", "v1");
    assert!(
        out.elapsed < std::time::Duration::from_secs(20),
        "a dead mirror costs little: {:?}",
        out.elapsed
    );
}

#[test]
fn mirrors_are_tried_by_ascending_priority() {
    let upstream = ClosedPort::new();
    let m1 = Registry::start();
    let m2 = Registry::start();
    let dst = Registry::start();
    let img = oci_image(9250);
    push(&m1, "lib/app", "v1", &img);
    push(&m2, "lib/app", "v1", &img);
    let (a, b) = (m1.mark(), m2.mark());
    let config = cfg(
        &[
            host_entry(
                "upstream.example",
                &upstream.host(),
                "mirrors: [m1.example, m2.example]\n",
            ),
            host_entry("m1.example", &m1.host(), "priority: 2\n"),
            host_entry("m2.example", &m2.host(), "priority: 1\n"),
            plain(&dst.host()),
        ],
        &[image_step(
            "upstream.example/lib/app:v1",
            &dst.r("lib/app:v1"),
        )],
    );
    regsync(&["once"], &config).assert_ok();
    assert_same_image(&m2, &dst, "lib/app", "v1");
    // regsync sorts lower `priority` values first (spec §16 quirk 11, kept).
    assert!(m2.count_since(b, "", "/lib/app/") > 0);
    assert_eq!(
        m1.count_since(a, "", "/lib/app/"),
        0,
        "{:?}",
        m1.access_since(a)
    );
}

#[test]
fn disable_head_on_the_source_reads_with_get() {
    let src = Registry::start();
    let dst = Registry::start();
    push(
        &src,
        "app",
        "v1",
        &index_image(9260, &["linux/amd64", "linux/arm64"]),
    );
    let config = cfg(
        &[
            format!("{}apiOpts:\n  disableHead: \"true\"\n", plain(&src.host())),
            plain(&dst.host()),
        ],
        &[image_step(&src.r("app:v1"), &dst.r("app:v1"))],
    );
    let m = src.mark();
    regsync(&["once"], &config).assert_ok();
    assert_eq!(
        src.count_since(m, "HEAD", ""),
        0,
        "{:?}",
        src.access_since(m)
    );
    assert_same_image(&src, &dst, "app", "v1");
}

#[test]
fn disable_head_on_the_target_pushes_every_run() {
    let src = Registry::start();
    let dst = Registry::start();
    push(&src, "app", "v1", &oci_image(9265));
    let config = cfg(
        &[
            plain(&src.host()),
            format!("{}apiOpts:\n  disableHead: \"true\"\n", plain(&dst.host())),
        ],
        &[image_step(&src.r("app:v1"), &dst.r("app:v1"))],
    );
    regsync(&["once"], &config).assert_ok();
    assert_same_image(&src, &dst, "app", "v1");
    // The target cannot be checked without HEAD: it counts as absent, and is pushed again.
    let m = dst.mark();
    regsync(&["once"], &config).assert_ok();
    assert_eq!(dst.count_since(m, "HEAD", ""), 0);
    assert_eq!(dst.count_since(m, "PUT", "/manifests/"), 1);
    assert_same_image(&src, &dst, "app", "v1");
}

#[test]
fn blob_max_forces_chunked_uploads() {
    let src = Registry::start();
    let dst = Registry::start();
    let img = ImageSpec::new(9270, Format::Oci).layers(2, 40_000).build();
    push(&src, "app", "v1", &img);
    let config = cfg(
        &[
            plain(&src.host()),
            format!("{}blobMax: 10000\nblobChunk: 16384\n", plain(&dst.host())),
        ],
        &[image_step(&src.r("app:v1"), &dst.r("app:v1"))],
    );
    regsync(&["once"], &config).assert_ok();
    assert_same_image(&src, &dst, "app", "v1");
    let log = dst.access_log();
    let patches = log
        .iter()
        .filter(|l| l.method == "PATCH" && l.status == 202)
        .count();
    // Two layers over blobMax, in chunks of 16 KiB: 3 PATCHes each.
    assert_eq!(patches, 6, "{log:?}");
    // The config blob (small) still goes up in one PUT with its body.
    let monolithic = log
        .iter()
        .filter(|l| l.method == "PUT" && l.path.contains("/blobs/uploads/") && l.status == 201)
        .count();
    assert_eq!(
        monolithic, 3,
        "2 chunked uploads closed + 1 monolithic: {log:?}"
    );
}
