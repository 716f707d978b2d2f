//! The registry's credentials stay on the registry's origin (scheme, host, port). A registry
//! (or a proxy in front of it) may answer the upload `POST` with a `Location` on another
//! origin: the upload follows it, as regclient and Docker do, but without the registry's
//! `Authorization` (Basic auth carries the password itself).
//!
//! Setup: a registry with htpasswd auth behind a front proxy that moves the upload
//! `Location` to a second proxy on another 127.0.0.1 port. That second origin forwards to the
//! registry with the credentials it holds itself (so the upload can complete) and records
//! whether regsync sent it an `Authorization` header.

mod common;

use common::rewrite::{RewriteOpts, RewriteProxy};
use common::*;
use std::sync::Arc;

const USER: &str = "mirror";
const PASS: &str = "s3cret-pass";

/// `url` with its host and port replaced by `host` (`127.0.0.1:P`).
fn relocate(url: &str, host: &str) -> String {
    let mut u = url::Url::parse(url).expect("absolute Location");
    let (h, p) = host.split_once(':').unwrap();
    u.set_host(Some(h)).unwrap();
    u.set_port(Some(p.parse().unwrap())).unwrap();
    u.to_string()
}

struct Setup {
    src: Registry,
    reg: Registry,
    other: RewriteProxy,
    front: RewriteProxy,
}

fn setup() -> Setup {
    let src = Registry::start();
    let reg = Registry::with_auth(USER, PASS);
    let other = RewriteProxy::start(
        &reg.url(),
        RewriteOpts {
            upstream_auth: Some((USER.into(), PASS.into())),
            ..Default::default()
        },
    );
    let other_host = other.host();
    let front = RewriteProxy::start(
        &reg.url(),
        RewriteOpts {
            after: Some(Arc::new(move |seen, reply| {
                if seen.method == "POST"
                    && seen.path.contains("/blobs/uploads/")
                    && reply.status == 202
                {
                    let moved = relocate(reply.header("location").unwrap(), &other_host);
                    reply.set_header("location", &moved);
                }
            })),
            ..Default::default()
        },
    );
    Setup {
        src,
        reg,
        other,
        front,
    }
}

fn yaml(s: &Setup, extra_target_creds: &str, step: &str) -> String {
    format!(
        "version: 1\ncreds:\n  - registry: {src}\n    tls: disabled\n  - registry: {front}\n    tls: disabled\n    user: {USER}\n    pass: {PASS}\n{extra_target_creds}sync:\n  - {step}",
        src = s.src.host(),
        front = s.front.host(),
    )
}

fn assert_no_credentials_elsewhere(s: &Setup, out: &Output) {
    let seen = s.other.seen();
    assert!(
        seen.iter().any(|r| r.method == "PUT"),
        "the upload never used the other origin's Location: {seen:?}\n{}",
        out.dump()
    );
    let leaked: Vec<_> = seen
        .iter()
        .filter(|r| r.authorization.is_some())
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(
        leaked.is_empty(),
        "the other origin received the registry's Authorization: {leaked:?}"
    );
    // The registry's own origin did get the credentials (the test would prove nothing if
    // regsync never authenticated at all).
    assert!(s.front.seen().iter().any(|r| r.authorization.is_some()));
}

#[test]
fn an_upload_location_on_another_origin_is_followed_without_credentials() {
    let s = setup();
    let img = oci_image(9101);
    push(&s.src, "app", "v1", &img);
    let step = format!(
        "source: {}\n    target: {}\n    type: image\n",
        s.src.r("app:v1"),
        s.front.r("app:v1")
    );
    let out = regsync(&["once"], &yaml(&s, "", &step));
    assert_no_credentials_elsewhere(&s, &out);
    out.assert_ok();
    assert_same_image(&s.src, s.reg.loc(), "app", "v1");
}

#[test]
fn a_chunked_upload_on_another_origin_gets_no_credentials_either() {
    let s = setup();
    let img = ImageSpec::new(9102, Format::Oci).layers(1, 300_000).build();
    push(&s.src, "app", "v1", &img);
    let step = format!(
        "source: {}\n    target: {}\n    type: image\n",
        s.src.r("app:v1"),
        s.front.r("app:v1")
    );
    let chunked = "    blobMax: 1000\n    blobChunk: 100000\n";
    let out = regsync(&["once"], &yaml(&s, chunked, &step));
    assert!(
        s.other.seen().iter().any(|r| r.method == "PATCH"),
        "not a chunked upload: {:?}",
        s.other.seen()
    );
    assert_no_credentials_elsewhere(&s, &out);
    out.assert_ok();
    assert_same_image(&s.src, s.reg.loc(), "app", "v1");
}
