//! Self-tests of the integration harness (tests/common). These do not depend on the engine.

mod common;

use common::oci::{reg_status, MT_DOCKER_LIST, MT_OCI_INDEX, MT_OCI_MANIFEST};
use common::registry::parse_access_log;
use common::run::parse_json_logs;
use common::*;
use reqwest::Method;
use std::path::Path;

#[test]
fn registry_push_read_back_access_log_and_stop() {
    let reg = Registry::start();
    assert!(reg.host().starts_with("127.0.0.1:"));
    assert_eq!(reg.url(), format!("http://{}", reg.host()));

    let idx = index_image(1, &["linux/amd64", "linux/arm64", "linux/arm/v7"]);
    let list = manifest_list_image(2, &["linux/amd64", "linux/arm64"]);
    let single = oci_image(3);
    assert_eq!(idx.media_type(), MT_OCI_INDEX);
    assert_eq!(list.media_type(), MT_DOCKER_LIST);
    assert_eq!(single.media_type(), MT_OCI_MANIFEST);
    // deterministic
    assert_eq!(
        index_image(1, &["linux/amd64", "linux/arm64", "linux/arm/v7"]).digest(),
        idx.digest()
    );
    assert_ne!(oci_image(4).digest(), single.digest());

    let m0 = reg.mark();
    push(&reg, "multi/app", "v1", &idx);
    push(&reg, "multi/app", "list", &list);
    push(&reg, "single", "latest", &single);

    assert_eq!(
        manifest_digest(&reg, "multi/app", "v1").as_deref(),
        Some(idx.digest())
    );
    assert_eq!(
        manifest_digest(&reg, "multi/app", "list").as_deref(),
        Some(list.digest())
    );
    assert_eq!(manifest_digest(&reg, "multi/app", "nope"), None);
    assert_eq!(manifest_digest(&reg, "no/such/repo", "v1"), None);
    assert_eq!(tags(&reg, "multi/app"), vec!["list", "v1"]);
    assert_eq!(tags(&reg, "no/such/repo"), Vec::<String>::new());
    assert_eq!(catalog(&reg), vec!["multi/app", "single"]);
    for b in &idx.blobs {
        assert!(blob_exists(&reg, "multi/app", &b.digest));
        assert_eq!(get_blob(&reg, "multi/app", &b.digest).unwrap(), b.data);
    }
    assert!(!blob_exists(&reg, "single", &idx.blobs[0].digest));
    assert_has_image(&reg, "multi/app", "v1", &idx);
    assert_has_image(&reg, "multi/app", "list", &list);
    assert_same_image(&reg, &reg, "multi/app", "v1");
    assert_same_repo(&reg, "multi/app", &reg, "multi/app");
    let got = get_manifest(&reg, "multi/app", "v1").unwrap();
    assert_eq!(got.bytes, idx.top.bytes);
    assert_eq!(got.media_type, MT_OCI_INDEX);

    // Access log: exact request counts of the pusher.
    let log = reg.access_since(m0);
    let uploads = |repo: &str| {
        log.iter()
            .filter(|l| l.method == "POST" && l.path == format!("/v2/{repo}/blobs/uploads/"))
            .count()
    };
    assert_eq!(
        uploads("multi/app"),
        idx.blob_digests().len() + list.blob_digests().len()
    );
    assert_eq!(uploads("single"), single.blob_digests().len());
    assert_eq!(
        reg.count_since(m0, "PUT", "/v2/multi/app/manifests/"),
        idx.children.len() + 1 + list.children.len() + 1
    );
    assert_eq!(reg.count_since(m0, "put", "/v2/multi/app/manifests/v1"), 1);
    let first_layer = &idx.blobs[1].digest;
    let hex = first_layer.trim_start_matches("sha256:");
    assert_eq!(
        log.iter()
            .filter(|l| l.method == "PUT"
                && l.path.contains("/blobs/uploads/")
                && l.path.contains(hex))
            .count(),
        1
    );
    assert!(log.iter().all(|l| l.status < 500));
    assert!(reg.count("HEAD", "/manifests/") >= 4);
    assert!(
        reg.count("", "harness-sync-marker") == 0,
        "markers are filtered"
    );
    // No writes since a fresh mark.
    let m1 = reg.mark();
    let _ = manifest_digest(&reg, "multi/app", "v1");
    assert!(reg.writes_since(m1).is_empty());
    assert_eq!(reg.count_since(m1, "HEAD", "/v2/multi/app/manifests/v1"), 1);

    // Stop: the pid is gone (reaped), also via Drop.
    let pid = reg.pid();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    drop(reg);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "registry pid {pid} still alive"
    );
}

#[test]
fn panicking_test_still_stops_registry() {
    let pid = std::thread::spawn(|| {
        let r = std::panic::catch_unwind(|| {
            let reg = Registry::start();
            let pid = reg.pid();
            std::panic::panic_any(pid);
        });
        *r.unwrap_err().downcast::<u32>().unwrap()
    })
    .join()
    .unwrap();
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
}

#[test]
fn parallel_registries_get_distinct_ports() {
    let regs: Vec<Registry> = (0..3).map(|_| Registry::start()).collect();
    let mut ports: Vec<u16> = regs.iter().map(|r| r.port()).collect();
    ports.dedup();
    assert_eq!(ports.len(), 3);
}

#[test]
fn basic_auth_registry() {
    let reg = Registry::with_auth("testuser", "testpass");
    let anon = Loc::reg(&reg.host());
    let bad = Loc::reg_auth(&reg.host(), "testuser", "wrong");
    assert_eq!(block_on(reg_status(&anon, Method::GET, "/v2/")), 401);
    assert_eq!(block_on(reg_status(&bad, Method::GET, "/v2/")), 401);
    assert_eq!(block_on(reg_status(&reg.loc(), Method::GET, "/v2/")), 200);
    let img = docker_image(7);
    push(&reg, "secure/app", "v1", &img);
    assert_has_image(&reg, "secure/app", "v1", &img);
    assert_eq!(tags(&reg, "secure/app"), vec!["v1"]);
    assert!(reg.count("GET", "/v2/") >= 3);
    assert!(reg.access_log().iter().any(|l| l.status == 401));
}

#[test]
fn readonly_restart_keeps_data_and_refuses_writes() {
    let mut reg = Registry::start();
    let img = oci_image(11);
    push(&reg, "ro/app", "v1", &img);
    let old_pid = reg.pid();
    reg.restart(true);
    assert_ne!(reg.pid(), old_pid);
    assert!(!Path::new(&format!("/proc/{old_pid}")).exists());
    assert_has_image(&reg, "ro/app", "v1", &img);
    assert_eq!(
        block_on(reg_status(
            &reg.loc(),
            Method::POST,
            "/v2/ro/app/blobs/uploads/"
        )),
        405
    );
    reg.restart(false);
    push(&reg, "ro/app", "v2", &oci_image(12));
    assert_eq!(tags(&reg, "ro/app"), vec!["v1", "v2"]);
}

#[test]
fn oci_layout_roundtrip_and_cross_compare() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let idx = index_image(21, &["linux/amd64", "linux/arm64"]);
    let list = manifest_list_image(22, &["linux/amd64"]);
    write_layout(&root.join("app"), &idx, "v1");
    push(root, "app", "list", &list);
    push(root, "other", "x", &oci_image(23));
    assert_eq!(
        std::fs::read_to_string(root.join("app/oci-layout")).unwrap(),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );
    assert_eq!(tags(root, "app"), vec!["list", "v1"]);
    assert_eq!(catalog(root), vec!["app", "other"]);
    assert_eq!(
        manifest_digest(root, "app", "v1").as_deref(),
        Some(idx.digest())
    );
    assert_has_image(root, "app", "v1", &idx);
    // re-tag replaces the entry
    write_layout(&root.join("app"), &list, "v1");
    assert_eq!(
        manifest_digest(root, "app", "v1").as_deref(),
        Some(list.digest())
    );
    assert_eq!(tags(&root.join("app"), ""), vec!["list", "v1"]);
    // ocidir:// string form
    let r = ocidir_ref(&root.join("app"), "v1");
    assert!(r.starts_with("ocidir:///"));
    assert_eq!(
        manifest_digest(ocidir_ref(&root.join("app"), ""), "", "list").as_deref(),
        Some(list.digest())
    );

    // Same image in a registry and in a layout compare equal; a differing one does not.
    let reg = Registry::start();
    push(&reg, "mirror/app", "list", &list);
    assert_same_image_at(root, "app", &reg, "mirror/app", "list");
    push(&reg, "mirror/app", "v1", &idx);
    let r =
        std::panic::catch_unwind(|| assert_same_image_at(root, "app", &reg, "mirror/app", "v1"));
    assert!(r.is_err(), "differing digests must fail the assertion");
}

#[test]
fn assert_same_image_detects_missing_blob() {
    let src = Registry::start();
    let dst = Registry::start();
    let img = oci_image(31);
    push(&src, "a", "v1", &img);
    // Push only the manifest + config into dst (layers missing): distribution accepts a
    // manifest only when blobs exist, so push all, then delete one layer blob.
    push(&dst, "a", "v1", &img);
    assert_same_image(&src, &dst, "a", "v1");
    let layer = &img.blobs[1].digest;
    let st = block_on(reg_status(
        &dst.loc(),
        Method::DELETE,
        &format!("/v2/a/blobs/{layer}"),
    ));
    assert_eq!(st, 202);
    let r = std::panic::catch_unwind(|| assert_same_image(&src, &dst, "a", "v1"));
    assert!(r.is_err(), "missing blob must fail the assertion");
}

#[test]
fn token_proxy_demands_bearer_and_streams() {
    let reg = Registry::start();
    let img = index_image(41, &["linux/amd64", "linux/arm64"]);
    push(&reg, "hub/app", "v1", &img);
    let big = ImageSpec::new(42, Format::Oci)
        .layers(1, 3 * 1024 * 1024)
        .build();
    push(&reg, "hub/big", "v1", &big);

    let proxy = TokenProxy::start(&reg, "alice", "secret");
    // No token: 401 with a Bearer challenge naming the scope.
    let r = block_on(async {
        http()
            .head(format!("{}/v2/hub/app/manifests/v1", proxy.url()))
            .send()
            .await
            .unwrap()
    });
    assert_eq!(r.status().as_u16(), 401);
    let chal = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(chal.starts_with("Bearer realm=\""), "{chal}");
    assert!(chal.contains(&format!("{}/token", proxy.url())), "{chal}");
    assert!(chal.contains("scope=\"repository:hub/app:pull\""), "{chal}");
    // Wrong password at the token endpoint.
    let bad = Loc::reg_auth(&proxy.host(), "alice", "nope");
    let r = std::panic::catch_unwind(|| manifest_digest(&bad, "hub/app", "v1"));
    assert!(r.is_err());
    assert!(proxy.count("token_denied") >= 1);

    // With credentials: read through the proxy (bearer flow), compare with upstream.
    let ploc = Loc::from(&proxy);
    assert_eq!(
        manifest_digest(&ploc, "hub/app", "v1").as_deref(),
        Some(img.digest())
    );
    assert_same_image(&reg, &ploc, "hub/app", "v1");
    assert_eq!(tags(&ploc, "hub/app"), vec!["v1"]);
    let layer = &big.blobs[1];
    assert_eq!(
        get_blob(&ploc, "hub/big", &layer.digest).unwrap(),
        layer.data
    );
    // A token for one repository does not open another.
    let c = proxy.counts();
    assert!(c["token"] >= 3, "{c:?}");
    assert!(c["unauthorized"] >= 3, "{c:?}");
    assert!(c["manifest_head"] >= 2, "{c:?}");
    assert!(c["blob_get"] >= 1, "{c:?}");
    assert!(!c.contains_key("upstream_error"), "{c:?}");

    // Pushing through the proxy also works (upload Location is rewritten to the proxy).
    let small = oci_image(43);
    push(&ploc, "hub/pushed", "v1", &small);
    assert_has_image(&reg, "hub/pushed", "v1", &small);
    assert!(proxy.count("upload") >= 2);

    // Anonymous proxy: pull-only tokens without credentials.
    let anon = TokenProxy::anonymous(&reg);
    assert_eq!(
        manifest_digest(Loc::reg(&anon.host()), "hub/app", "v1").as_deref(),
        Some(img.digest())
    );
    assert!(anon.count("token") >= 1);
}

#[test]
fn token_proxy_over_basic_auth_upstream() {
    let reg = Registry::with_auth("up", "uppass");
    push(&reg, "x", "v1", &oci_image(51));
    let proxy = TokenProxy::start(&reg, "bob", "pw");
    assert_same_image(&reg, &proxy, "x", "v1");
}

#[test]
fn access_log_parser() {
    let text = r#"127.0.0.1 - - [27/Nov/2026:12:04:46 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "curl/7.88.1"
time="2026-11-27T12:04:46.856Z" level=error msg="response completed with error" http.request.method=HEAD
127.0.0.1 - testuser [27/Nov/2026:12:04:46 +0000] "PUT /v2/x/blobs/uploads/abc?_state=q&digest=sha256%3Aff HTTP/1.1" 201 0 "" "regsync"
127.0.0.1 - - [27/Nov/2026:12:04:46 +0000] "GET /harness-sync-marker/1-2 HTTP/1.1" 404 19 "" "x"
garbage line
"#;
    let l = parse_access_log(text);
    assert_eq!(l.len(), 2);
    assert_eq!(
        l[1],
        AccessLine {
            method: "PUT".into(),
            path: "/v2/x/blobs/uploads/abc?_state=q&digest=sha256%3Aff".into(),
            status: 201
        }
    );
}

#[test]
fn runner_output_parsing_and_config_builder() {
    let stderr = concat!(
        r#"{"time":"t","level":"INFO","msg":"Image sync needed","source":"a:v1","target":"b:v1"}"#,
        "\n",
        r#"{"time":"t","level":"INFO","msg":"Sync summary","images_checked":1,"images_copied":0}"#,
        "\n",
        "failed to sync b:v2: not found\n",
    );
    let logs = parse_json_logs(stderr);
    assert_eq!(logs.len(), 2);
    assert_eq!(logs[1]["images_checked"], 1);

    // The binary runs (whatever it does today) and the runner captures it without hanging.
    let out = regsync_raw(&["version"]);
    assert!(out.elapsed < std::time::Duration::from_secs(60));

    let a = Registry::start();
    let p = TokenProxy::start(&a, "u", "p");
    let cfg = config(
        &[&a, &p],
        4,
        &[
            image_step(&a.r("x:v1"), &p.r("y:v1")),
            repo_step(&a.r("x"), &p.r("y"), &["v.*", "latest"], &["v2"]),
            registry_step(&a.host(), &format!("{}/mirror", p.host()), &["lib/.*"], &[]),
        ],
    );
    let v: serde_json::Value = serde_yaml::from_str(&cfg).expect(&cfg);
    assert_eq!(v["version"], 1);
    assert_eq!(v["defaults"]["parallel"], 4);
    assert_eq!(v["creds"][0]["registry"], a.host());
    assert_eq!(v["creds"][0]["tls"], "disabled");
    assert_eq!(v["creds"][1]["user"], "u");
    assert_eq!(v["sync"][1]["type"], "repository");
    assert_eq!(v["sync"][1]["tags"]["allow"][0], "v.*");
    assert_eq!(v["sync"][1]["tags"]["deny"][0], "v2");
    assert_eq!(v["sync"][2]["repos"]["allow"][0], "lib/.*");
    assert_eq!(v["sync"][2]["target"], format!("{}/mirror", p.host()));
}

#[test]
fn closed_port_refuses_connections() {
    let c = ClosedPort::new();
    assert!(c.port() > 0);
    let e = std::net::TcpStream::connect(c.host()).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
    // The port stays reserved: binding it fails while the guard lives.
    assert!(std::net::TcpListener::bind(c.host()).is_err());
}
