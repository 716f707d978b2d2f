//! Request retries against real registries behind a fault-injecting proxy (spec §7.3, §6.3):
//! every request failing once with 503, a blob download cut off half-way (resumed with
//! `Range`), a blob upload failing once with 500 (cancelled and restarted).
//!
//! The proxy ([`FaultProxy`]) is an axum reverse proxy that streams both bodies and records
//! every request with the status it answered.

mod common;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use common::*;
use futures::{StreamExt, TryStreamExt};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// Which faults a [`FaultProxy`] injects.
#[derive(Clone, Copy, Debug, Default)]
struct Faults {
    /// Every distinct request (method, path, upload digest) is answered 503 the first time.
    fail_first: bool,
    /// The first full GET of each blob of 1 MiB or more delivers half of the body, then
    /// breaks the connection. (A small body cut short may never get its headers out: that is
    /// a failed request, retried whole, not an interrupted download.)
    cut_blob_gets: bool,
    /// The first monolithic blob PUT (`?digest=`) of each digest is answered with this status
    /// after the body has been read.
    fail_blob_puts: Option<u16>,
}

/// One request as the proxy saw it.
#[derive(Clone, Debug)]
struct Hit {
    method: String,
    path: String,
    query: String,
    range: Option<String>,
    status: u16,
    /// The proxy made this one fail (not the registry).
    injected: bool,
}

struct Shared {
    upstream: String,
    self_host: String,
    faults: Faults,
    client: reqwest::Client,
    /// Fault keys already used (each fault fires once per key).
    fired: Mutex<HashSet<String>>,
    hits: Mutex<Vec<Hit>>,
}

impl Shared {
    fn first_time(&self, key: String) -> bool {
        self.fired.lock().unwrap().insert(key)
    }

    fn record(&self, hit: Hit) {
        self.hits.lock().unwrap().push(hit);
    }
}

struct FaultProxy {
    host: String,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl FaultProxy {
    fn start(upstream: &Registry, faults: Faults) -> FaultProxy {
        let listener = block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
        let host = listener.local_addr().unwrap().to_string();
        let shared = Arc::new(Shared {
            upstream: upstream.url(),
            self_host: host.clone(),
            faults,
            client: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            fired: Mutex::new(HashSet::new()),
            hits: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        rt().spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        FaultProxy {
            host,
            shared,
            shutdown: Some(tx),
        }
    }

    fn r(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.host)
    }

    fn hits(&self) -> Vec<Hit> {
        self.shared.hits.lock().unwrap().clone()
    }

    fn injected(&self) -> Vec<Hit> {
        self.hits().into_iter().filter(|h| h.injected).collect()
    }

    fn dump(&self) -> String {
        self.hits()
            .iter()
            .map(|h| {
                format!(
                    "{} {}?{} range={:?} -> {}{}",
                    h.method,
                    h.path,
                    h.query,
                    h.range,
                    h.status,
                    if h.injected { " (injected)" } else { "" }
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Endpoint for FaultProxy {
    fn host(&self) -> String {
        self.host.clone()
    }
    fn creds(&self) -> Option<(String, String)> {
        None
    }
}

/// What makes two requests "the same" for `fail_first`: method and path, with an upload
/// session's id replaced (a restarted upload is a new session for the same blob) and the
/// `digest` an upload is committed with.
fn fault_key(method: &str, path: &str, query: &str) -> String {
    let path = match path.find("/blobs/uploads/") {
        Some(i) => {
            let base = &path[..i + "/blobs/uploads/".len()];
            if path.len() > base.len() {
                format!("{base}*")
            } else {
                base.to_string()
            }
        }
        None => path.to_string(),
    };
    let digest = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "digest")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    format!("{method} {path} {digest}")
}

fn error_response(status: u16) -> Response {
    let body =
        serde_json::json!({"errors": [{"code": "UNAVAILABLE", "message": "injected fault"}]});
    let mut r = (StatusCode::from_u16(status).unwrap(), body.to_string()).into_response();
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

async fn handle(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let range = req
        .headers()
        .get("range")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let key = fault_key(&method, &path, &query);
    let hit = |status: u16, injected: bool| Hit {
        method: method.clone(),
        path: path.clone(),
        query: query.clone(),
        range: range.clone(),
        status,
        injected,
    };
    let blob_get = method == "GET" && path.contains("/blobs/sha256:");
    let blob_put = method == "PUT" && path.contains("/blobs/uploads/") && query.contains("digest=");
    let inject = if s.faults.fail_first && s.first_time(format!("first {key}")) {
        Some(503)
    } else {
        match s.faults.fail_blob_puts {
            Some(status) if blob_put && s.first_time(format!("put {key}")) => Some(status),
            _ => None,
        }
    };
    if let Some(status) = inject {
        // Like a server failing after it took the request: the body is read first.
        let _ = axum::body::to_bytes(req.into_body(), usize::MAX).await;
        s.record(hit(status, true));
        return error_response(status);
    }

    // Forward, streaming both bodies.
    let mut headers = reqwest::header::HeaderMap::new();
    for (k, v) in req.headers() {
        if matches!(
            k.as_str(),
            "host" | "connection" | "keep-alive" | "transfer-encoding" | "te" | "upgrade"
        ) {
            continue;
        }
        headers.append(k.clone(), v.clone());
    }
    // Distribution builds `Location` from these: uploads come back through the proxy.
    headers.insert(
        "x-forwarded-host",
        HeaderValue::from_str(&s.self_host).unwrap(),
    );
    headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| path.clone());
    let req_method = req.method().clone();
    let mut up = s
        .client
        .request(req_method.clone(), format!("{}{pq}", s.upstream))
        .headers(headers);
    if req_method != axum::http::Method::GET && req_method != axum::http::Method::HEAD {
        up = up.body(reqwest::Body::wrap_stream(
            req.into_body().into_data_stream(),
        ));
    }
    let resp = match up.send().await {
        Ok(r) => r,
        Err(e) => {
            s.record(hit(502, true));
            return (StatusCode::BAD_GATEWAY, e.to_string()).into_response();
        }
    };
    let status = resp.status().as_u16();
    let cut = s.faults.cut_blob_gets
        && blob_get
        && range.is_none()
        && status == 200
        && resp.content_length().is_some_and(|n| n >= 1 << 20)
        && s.first_time(format!("cut {key}"));
    s.record(hit(status, cut));
    let mut out = Response::builder().status(status);
    for (k, v) in resp.headers() {
        if matches!(
            k.as_str(),
            "connection" | "keep-alive" | "transfer-encoding"
        ) {
            continue;
        }
        out = out.header(k.clone(), v.clone());
    }
    let body = if cut {
        let total = resp.content_length().expect("blob GET with a length") as usize;
        Body::from_stream(half_then_break(resp.bytes_stream(), total / 2))
    } else {
        Body::from_stream(resp.bytes_stream().map_err(std::io::Error::other))
    };
    out.body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The first `keep` bytes of `body`, then an error (the connection breaks mid-body).
fn half_then_break(
    body: impl futures::Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
    keep: usize,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    futures::stream::unfold(
        (Box::pin(body), keep, false),
        |(mut body, left, done)| async move {
            if done {
                return None;
            }
            if left == 0 {
                return Some((
                    Err(std::io::Error::other("injected: connection cut")),
                    (body, 0, true),
                ));
            }
            match body.next().await {
                Some(Ok(chunk)) => {
                    let chunk = chunk.slice(..chunk.len().min(left));
                    let left = left - chunk.len();
                    Some((Ok(chunk), (body, left, false)))
                }
                Some(Err(e)) => Some((Err(std::io::Error::other(e)), (body, 0, true))),
                None => None,
            }
        },
    )
}

#[test]
fn fault_keys_ignore_upload_sessions() {
    assert_eq!(
        fault_key(
            "PUT",
            "/v2/a/blobs/uploads/1234-abcd",
            "_state=x&digest=sha256%3Aff"
        ),
        "PUT /v2/a/blobs/uploads/* sha256:ff"
    );
    assert_eq!(
        fault_key("POST", "/v2/a/blobs/uploads/", ""),
        "POST /v2/a/blobs/uploads/ "
    );
    assert_eq!(
        fault_key("HEAD", "/v2/a/manifests/v1", ""),
        "HEAD /v2/a/manifests/v1 "
    );
}

/// (a) Every distinct request fails once with 503, on the source and on the target: the copy
/// still succeeds (503 is retried, unlike regsync — README "Retries") and the target holds
/// the same image.
#[test]
fn every_request_failing_once_with_503_still_copies() {
    let (src, dst) = (Registry::start(), Registry::start());
    let img = index_image(301, &["linux/amd64", "linux/arm64"]);
    push(&src, "app", "v1", &img);
    let faults = Faults {
        fail_first: true,
        ..Default::default()
    };
    let (psrc, pdst) = (
        FaultProxy::start(&src, faults),
        FaultProxy::start(&dst, faults),
    );
    let cfg = config(
        &[&psrc, &pdst],
        0,
        &[image_step(&psrc.r("app:v1"), &pdst.r("app:v1"))],
    );
    let out = regsync(&["once"], &cfg);
    assert!(
        out.success(),
        "{}\nsource:\n{}\ntarget:\n{}",
        out.dump(),
        psrc.dump(),
        pdst.dump()
    );
    assert_same_image(&src, &dst, "app", "v1");
    assert_summary(&out, &[("images_copied", 1), ("images_failed", 0)]);
    for (name, p) in [("source", &psrc), ("target", &pdst)] {
        let injected = p.injected();
        assert!(injected.len() >= 3, "{name}: {}", p.dump());
        // Every request that was made to fail was asked again and answered by the registry.
        for h in &injected {
            let key = fault_key(&h.method, &h.path, &h.query);
            assert!(
                p.hits()
                    .iter()
                    .any(|o| !o.injected && fault_key(&o.method, &o.path, &o.query) == key),
                "{name}: {key} never retried\n{}",
                p.dump()
            );
        }
    }
    // Including the manifest reads and the blob uploads.
    assert!(psrc
        .injected()
        .iter()
        .any(|h| h.method == "GET" && h.path.contains("/manifests/")));
    assert!(pdst
        .injected()
        .iter()
        .any(|h| h.method == "PUT" && h.path.contains("/blobs/uploads/")));
}

/// (b) A blob download whose connection breaks half-way is resumed with a `Range` request
/// (not started over), and the target verifies.
#[test]
fn a_cut_blob_download_resumes_with_range() {
    let (src, dst) = (Registry::start(), Registry::start());
    let img = ImageSpec::new(302, Format::Oci).layers(2, 3 << 20).build();
    push(&src, "app", "v1", &img);
    let psrc = FaultProxy::start(
        &src,
        Faults {
            cut_blob_gets: true,
            ..Default::default()
        },
    );
    let cfg = config(
        &[&psrc, &dst],
        0,
        &[image_step(&psrc.r("app:v1"), &dst.r("app:v1"))],
    );
    let out = regsync(&["once", "-v", "debug"], &cfg);
    assert!(out.success(), "{}\n{}", out.dump(), psrc.dump());
    assert_same_image(&src, &dst, "app", "v1");

    let hits = psrc.hits();
    let cut: Vec<_> = hits.iter().filter(|h| h.injected).collect();
    // Both layers were cut once each (the config is too small).
    assert_eq!(cut.len(), 2, "{}", psrc.dump());
    for c in cut {
        let gets: Vec<_> = hits
            .iter()
            .filter(|h| h.method == "GET" && h.path == c.path)
            .collect();
        // The cut GET, then one ranged GET for the rest: nothing downloaded twice.
        assert_eq!(gets.len(), 2, "{}", psrc.dump());
        let range = gets[1].range.as_deref().unwrap_or("");
        assert!(
            range.starts_with("bytes=") && range.ends_with('-') && range != "bytes=0-",
            "{range:?}\n{}",
            psrc.dump()
        );
        assert_eq!(gets[1].status, 206, "{}", psrc.dump());
    }
    assert!(
        !out.logs("resuming blob download").is_empty(),
        "{}",
        out.dump()
    );
    // Each blob was uploaded once.
    assert_summary(&out, &[("blobs_copied", 3), ("images_failed", 0)]);
}

/// (c) A blob PUT failing once with 500 cancels its upload session (`DELETE`) and the blob is
/// copied again from the start; the image lands.
#[test]
fn a_failed_blob_upload_is_cancelled_and_restarted() {
    let (src, dst) = (Registry::start(), Registry::start());
    let img = ImageSpec::new(303, Format::Docker)
        .layers(2, 1 << 20)
        .build();
    push(&src, "app", "v1", &img);
    let pdst = FaultProxy::start(
        &dst,
        Faults {
            fail_blob_puts: Some(500),
            ..Default::default()
        },
    );
    let cfg = config(
        &[&src, &pdst],
        0,
        &[image_step(&src.r("app:v1"), &pdst.r("app:v1"))],
    );
    let out = regsync(&["once"], &cfg);
    assert!(out.success(), "{}\n{}", out.dump(), pdst.dump());
    assert_same_image(&src, &dst, "app", "v1");

    let hits = pdst.hits();
    let failed: Vec<_> = hits.iter().filter(|h| h.injected).collect();
    assert_eq!(failed.len(), 3, "{}", pdst.dump());
    for f in failed {
        let key = fault_key(&f.method, &f.path, &f.query);
        let puts: Vec<_> = hits
            .iter()
            .filter(|h| fault_key(&h.method, &h.path, &h.query) == key)
            .collect();
        assert_eq!(puts.len(), 2, "{key}\n{}", pdst.dump());
        assert_eq!(puts[1].status, 201, "{}", pdst.dump());
        // The failed session was cancelled.
        assert!(
            hits.iter()
                .any(|h| h.method == "DELETE" && h.path == f.path),
            "{}",
            pdst.dump()
        );
        // The restart used a fresh session.
        assert_ne!(puts[0].path, puts[1].path, "{}", pdst.dump());
    }
    assert!(
        !out.logs("Failed to push blob").is_empty(),
        "{}",
        out.dump()
    );
    assert_summary(&out, &[("blobs_copied", 3), ("images_failed", 0)]);
}
