//! Registries that misbehave in one precise way, and a log pipe nobody reads: nothing is lost
//! silently and nothing hangs.
//!
//! * a referrers API answering 401/403 is an error of that copy, never "this registry has no
//!   referrers API" (which would drop signatures and SBOMs, or write fallback tags into a
//!   registry that has the API);
//! * a source sending the wrong bytes with the right length fails the blob with our own
//!   digest error before the monolithic upload is committed;
//! * a tag list whose `Link` pages never end stops with one error;
//! * one unparsable tag fails alone, the other tags of its repository copy;
//! * a stalled stderr does not freeze the copy.

mod common;

use common::faults::{FaultOpts, FaultProxy};
use common::fixtures::{fallback_tag, Fixture};
use common::rewrite::{RewriteOpts, RewriteProxy};
use common::*;
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A proxy answering every referrers request with `status`.
fn referrers_refused(reg: &Registry, status: u16) -> FaultProxy {
    FaultProxy::start(
        reg,
        FaultOpts {
            fail_rate: 1.0,
            fail_status: vec![status],
            fault_kinds: vec!["referrers".into()],
            ..Default::default()
        },
    )
}

fn referrers_step(source: &str, target: &str) -> String {
    format!("source: {source}\ntarget: {target}\ntype: image\nreferrers: true\n")
}

#[test]
fn a_source_referrers_api_answering_403_fails_the_copy() {
    let src = Registry::start();
    let dst = Registry::start();
    let f = Fixture::build();
    f.push(&src);
    let proxy = referrers_refused(&src, 403);
    let cfg = config(
        &[&proxy, &dst],
        1,
        &[referrers_step(
            &proxy.r("testrepo:v2"),
            &dst.r("testrepo:v2"),
        )],
    );
    let out = regsync(&["once"], &cfg);
    assert!(proxy.count("referrers") > 0, "{}", out.dump());
    out.assert_fail();
    out.assert_one_error_line(&["403"]);
    out.assert_no_panic();
}

#[test]
fn a_target_referrers_api_answering_403_gets_no_fallback_tag() {
    let src = Registry::start();
    let dst = Registry::start();
    let f = Fixture::build();
    f.push(&src);
    let proxy = referrers_refused(&dst, 403);
    let cfg = config(
        &[&src, &proxy],
        1,
        &[referrers_step(
            &src.r("testrepo:v2"),
            &proxy.r("testrepo:v2"),
        )],
    );
    let out = regsync(&["once"], &cfg);
    assert!(proxy.count("referrers") > 0, "{}", out.dump());
    let fallback = fallback_tag(&f.d.d2);
    assert!(
        !tags(&dst, "testrepo").contains(&fallback),
        "a fallback tag was written into a registry whose referrers API answered 403\n{}",
        out.dump()
    );
    out.assert_fail();
    out.assert_one_error_line(&["403"]);
}

#[test]
fn wrong_bytes_with_the_right_length_fail_the_monolithic_upload_with_our_digest_check() {
    let src = Registry::start();
    let dst = Registry::start();
    let img = ImageSpec::new(9201, Format::Oci).layers(1, 50_000).build();
    push(&src, "app", "v1", &img);
    let layer = img
        .blobs
        .iter()
        .max_by_key(|b| b.size())
        .unwrap()
        .digest
        .clone();
    let corrupt = layer.clone();
    let proxy = RewriteProxy::start(
        &src.url(),
        RewriteOpts {
            after: Some(Arc::new(move |seen, reply| {
                if seen.method == "GET" && seen.path.ends_with(&format!("/blobs/{corrupt}")) {
                    // Same length, last byte changed: the registry's length check passes.
                    if let Some(b) = reply.body.last_mut() {
                        *b ^= 0xff;
                    }
                }
            })),
            ..Default::default()
        },
    );
    let cfg = config(
        &[&proxy, &dst],
        1,
        &[image_step(&proxy.r("app:v1"), &dst.r("app:v1"))],
    );
    let out = regsync(&["once"], &cfg);
    out.assert_fail();
    let line = out.assert_one_error_line(&["digest mismatch"]);
    assert!(line.contains(&layer), "{line}");
    assert!(!blob_exists(&dst, "app", &layer));
    assert!(manifest_digest(&dst, "app", "v1").is_none());
}

/// Serve `app` on a free 127.0.0.1 port until the guard drops.
struct Served {
    host: String,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

fn serve(app: axum::Router) -> Served {
    let listener = common::block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    common::rt().spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
    });
    Served {
        host,
        _shutdown: tx,
    }
}

#[test]
fn tag_pages_that_never_end_stop_with_one_error() {
    use axum::extract::Request;
    use axum::response::IntoResponse;
    // Every page is empty and links to a page never seen before.
    let pages = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let p2 = pages.clone();
    let app = axum::Router::new().fallback(move |req: Request| {
        let pages = p2.clone();
        async move {
            let path = req.uri().path().to_string();
            if !path.ends_with("/tags/list") {
                return axum::http::StatusCode::NOT_FOUND.into_response();
            }
            let n = pages.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            axum::http::Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .header(
                    "link",
                    format!("<{path}?n=100&last=page{}>; rel=\"next\"", n + 1),
                )
                .body(axum::body::Body::from(r#"{"name":"app","tags":[]}"#))
                .unwrap()
        }
    });
    let src = serve(app);
    let dst = Registry::start();
    let from = HostCreds::plain(&src.host);
    let cfg = config(
        &[&from, &dst],
        1,
        &[repo_step(
            &format!("{}/app", src.host),
            &dst.r("app"),
            &[],
            &[],
        )],
    );
    let out = regsync(&["once"], &cfg);
    out.assert_fail();
    out.assert_one_error_line(&["pages"]);
    let served = pages.load(std::sync::atomic::Ordering::SeqCst);
    assert!(served <= 10_001, "{served} pages asked for");
}

#[test]
fn an_unparsable_tag_fails_alone() {
    let src = Registry::start();
    let dst = Registry::start();
    for (i, tag) in ["v1", "v2", "v3"].iter().enumerate() {
        push(&src, "app", tag, &oci_image(9300 + i as u64));
    }
    // A registry listing a tag no reference can name (distribution never would).
    let proxy = RewriteProxy::start(
        &src.url(),
        RewriteOpts {
            after: Some(Arc::new(|seen, reply| {
                if seen.method == "GET" && seen.path.contains("/tags/list") && reply.status == 200 {
                    let mut v: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
                    let tags = v["tags"].as_array_mut().unwrap();
                    tags.insert(1, "bad tag!".into());
                    reply.body = serde_json::to_vec(&v).unwrap();
                }
            })),
            ..Default::default()
        },
    );
    let cfg = config(
        &[&proxy, &dst],
        1,
        &[repo_step(&proxy.r("app"), &dst.r("app"), &[], &[])],
    );
    let out = regsync(&["once"], &cfg);
    out.assert_fail();
    out.assert_one_error_line(&["bad tag!"]);
    for tag in ["v1", "v2", "v3"] {
        assert_same_image(&src, &dst, "app", tag);
    }
}

#[test]
fn a_stalled_stderr_does_not_freeze_the_copy() {
    let src = Registry::start();
    let dst = Registry::start();
    let tags_wanted: Vec<String> = (0..8).map(|i| format!("t{i}")).collect();
    for (i, tag) in tags_wanted.iter().enumerate() {
        push(&src, "app", tag, &oci_image(9400 + i as u64));
    }
    let cfg = config(
        &[&src, &dst],
        2,
        &[repo_step(&src.r("app"), &dst.r("app"), &[], &[])],
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("regsync.yml");
    std::fs::write(&path, cfg).unwrap();
    let mut child = Command::new(common::run::bin())
        .args(["once", "-v", "trace", "--logopt", "json", "-c"])
        .arg(&path)
        .env("DOCKER_CONFIG", dir.path())
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    // The smallest pipe the kernel allows: a few log lines fill it.
    let pipe_size = {
        use std::os::fd::AsRawFd;
        unsafe {
            libc::fcntl(stderr.as_raw_fd(), libc::F_SETPIPE_SZ, 4096);
            libc::fcntl(stderr.as_raw_fd(), libc::F_GETPIPE_SZ)
        }
    };
    // Nobody reads stderr until the copy is done (or the bound passes).
    let start = Instant::now();
    let mut copied = false;
    while start.elapsed() < Duration::from_secs(60) {
        let have = tags(&dst, "app");
        if tags_wanted.iter().all(|t| have.contains(t)) {
            copied = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    if !copied {
        let _ = child.kill();
        let _ = child.wait();
        let text = reader.join().unwrap();
        panic!(
            "the copy did not finish while stderr was not read; stderr so far ends with:\n{}",
            &text[text.len().saturating_sub(2000)..]
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("regsync did not exit once stderr was read");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = reader.join().unwrap();
    assert!(status.success(), "{status}\n{text}");
    // More than any pipe holds: the writes really were blocked while nobody read.
    assert!(
        text.len() > 2 * pipe_size as usize,
        "only {} bytes logged into a pipe of {pipe_size}",
        text.len()
    );
    // Lines are whole and in order; the final summary made it out.
    let lines: Vec<&str> = text.lines().collect();
    for l in &lines {
        assert!(
            serde_json::from_str::<serde_json::Value>(l).is_ok(),
            "not a whole JSON line: {l}"
        );
    }
    let last: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(last["msg"], "Sync summary", "{text}");
    assert_eq!(last["images_copied"], 8, "{text}");
    for tag in &tags_wanted {
        assert_same_image(&src, &dst, "app", tag);
    }
}
