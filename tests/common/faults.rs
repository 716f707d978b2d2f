//! A fault-injecting, Docker-Hub-like reverse proxy in front of a [`Registry`](super::Registry)
//! (the Rust counterpart of `../shared/registry/fakehub.py`, in process, so tests can read its
//! counters and change its settings while regsync runs). Bodies stream both ways; nothing is
//! buffered whole.
//!
//! * **Rate limit** ([`FaultOpts::ratelimit`]): manifest `GET`s count per client IP, `HEAD`s
//!   do not. Manifest responses carry `ratelimit-limit: N;w=W`, `ratelimit-remaining: R;w=W`
//!   and `docker-ratelimit-source`. An exhausted `GET` gets `429` with Docker Hub's
//!   `TOOMANYREQUESTS` body, plus `Retry-After` (seconds until the window resets, rounded up)
//!   with [`FaultOpts::retry_after`]. The window resets after `ratelimit_window`, or now with
//!   [`FaultProxy::reset_window`].
//! * **Faults**, for `/v2/<name>/...` requests of [`FaultOpts::fault_methods`] /
//!   [`FaultOpts::fault_kinds`] / [`FaultOpts::fault_paths`] (empty = all): `fail_rate` answers a random status of
//!   `fail_status` with a registry error body; `drop_rate` kills the connection: for a `GET`
//!   answered 200 with a body, half of the time half-way through the body while
//!   `Content-Length` still announces the full size, otherwise before any response;
//!   `truncate_rate` always cuts `GET` bodies half-way; `slow_rate` delays the response by `slow`
//!   (before the upstream sees the request, or after it answered with `slow_answer`);
//!   `stall_after` sends that many bytes of a `GET` body and then nothing more, never ending it.
//! * **Counters** ([`FaultStats`]): requests by kind (`manifest_get`, `manifest_head`,
//!   `blob_get`, `blob_head`, `upload_post`, `upload_put`, `upload_patch`, `tags`, `catalog`,
//!   `ping`, `referrers`, `other`), by status, injected faults, 429s, and the number of requests
//!   open at once (from the request head arriving until the last response byte is handed to the
//!   connection, streaming bodies included) with its maximum. Every arrival is time-stamped:
//!   [`FaultProxy::max_in_window`] is the request rate measurement, [`FaultProxy::window_gets`]
//!   the manifest `GET`s spent per rate-limit window.
//! * **Control over HTTP** (for use by hand): `GET /_faults/stats`, `POST /_faults/reset-window`.

use super::{block_on, rt, Endpoint, Loc};
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct FaultOpts {
    /// Manifest GETs per window per client; 0 = no rate limit.
    pub ratelimit: u64,
    pub ratelimit_window: Duration,
    /// Add `Retry-After` to 429s.
    pub retry_after: bool,
    pub fail_rate: f64,
    pub fail_status: Vec<u16>,
    pub drop_rate: f64,
    pub truncate_rate: f64,
    pub slow_rate: f64,
    pub slow: Duration,
    /// Slowed requests reach the upstream at once and only their answer waits `slow` (a
    /// request that took effect, whose answer is still on its way).
    pub slow_answer: bool,
    /// Methods faults apply to (`"GET"`, ...); empty = all.
    pub fault_methods: Vec<String>,
    /// Request kinds faults apply to (`"blob_get"`, ...); empty = all but `ping`/`other`.
    pub fault_kinds: Vec<String>,
    /// Path endings faults apply to (`"/blobs/sha256:..."`); empty = every path.
    pub fault_paths: Vec<String>,
    pub seed: u64,
    /// Registry error code in the body of injected failures (`UNAVAILABLE` when `None`).
    pub fail_code: Option<String>,
    /// A faulted `GET` body sends this many bytes, then hangs (neither ends nor fails): a
    /// download that is in flight for as long as a test needs.
    pub stall_after: Option<u64>,
}

impl Default for FaultOpts {
    fn default() -> Self {
        FaultOpts {
            ratelimit: 0,
            ratelimit_window: Duration::from_secs(21600),
            retry_after: false,
            fail_rate: 0.0,
            fail_status: vec![500, 502, 503],
            drop_rate: 0.0,
            truncate_rate: 0.0,
            slow_rate: 0.0,
            slow: Duration::from_millis(100),
            slow_answer: false,
            fault_methods: vec![],
            fault_kinds: vec![],
            fault_paths: vec![],
            seed: 1,
            fail_code: None,
            stall_after: None,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct FaultStats {
    pub by_kind: BTreeMap<String, u64>,
    pub by_status: BTreeMap<u16, u64>,
    /// Injected error statuses.
    pub failed: u64,
    /// Connections dropped before any response.
    pub dropped: u64,
    /// Connections dropped half-way through a response body.
    pub truncated: u64,
    pub slowed: u64,
    /// 429s answered by the rate limit.
    pub ratelimited: u64,
    /// Upstream unreachable (answered 502).
    pub upstream_errors: u64,
    pub open: u64,
    pub max_open: u64,
}

impl FaultStats {
    pub fn kind(&self, k: &str) -> u64 {
        *self.by_kind.get(k).unwrap_or(&0)
    }
    pub fn requests(&self) -> u64 {
        self.by_kind.values().sum()
    }
}

struct Bucket {
    remaining: u64,
    reset_at: Instant,
    /// Index into `Inner::windows`.
    window: usize,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct WindowRecord {
    pub gets: u64,
    pub rejected: u64,
}

struct Inner {
    opts: FaultOpts,
    rng: StdRng,
    stats: FaultStats,
    buckets: HashMap<IpAddr, Bucket>,
    windows: Vec<WindowRecord>,
    /// Every request's arrival and kind.
    arrivals: Vec<(Instant, String)>,
    /// Every 429: when, and its `Retry-After` seconds.
    rejections: Vec<(Instant, Option<u64>)>,
}

struct Shared {
    upstream: String,
    self_host: String,
    started: Instant,
    inner: Mutex<Inner>,
    client: reqwest::Client,
}

pub struct FaultProxy {
    host: String,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl FaultProxy {
    pub fn start(upstream: &super::Registry, opts: FaultOpts) -> FaultProxy {
        Self::start_url(&upstream.url(), opts)
    }

    /// In front of `upstream_url` (`http://127.0.0.1:P`).
    pub fn start_url(upstream_url: &str, opts: FaultOpts) -> FaultProxy {
        let listener = block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            upstream: upstream_url.trim_end_matches('/').to_string(),
            self_host: addr.to_string(),
            started: Instant::now(),
            inner: Mutex::new(Inner {
                rng: StdRng::seed_from_u64(opts.seed),
                opts,
                stats: FaultStats::default(),
                buckets: HashMap::new(),
                windows: Vec::new(),
                arrivals: Vec::new(),
                rejections: Vec::new(),
            }),
            client: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        rt().spawn(async move {
            let _ = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
        });
        FaultProxy {
            host: addr.to_string(),
            shared,
            shutdown: Some(tx),
        }
    }

    /// `127.0.0.1:PORT`
    pub fn host(&self) -> String {
        self.host.clone()
    }
    pub fn url(&self) -> String {
        format!("http://{}", self.host)
    }
    pub fn r(&self, repo_tag: &str) -> String {
        format!("{}/{}", self.host, repo_tag)
    }

    pub fn stats(&self) -> FaultStats {
        self.shared.inner.lock().unwrap().stats.clone()
    }
    pub fn count(&self, kind: &str) -> u64 {
        self.stats().kind(kind)
    }
    /// Change settings while running.
    pub fn set(&self, f: impl FnOnce(&mut FaultOpts)) {
        f(&mut self.shared.inner.lock().unwrap().opts);
    }
    /// Start a new rate-limit window for every client now.
    pub fn reset_window(&self) {
        self.shared.inner.lock().unwrap().buckets.clear();
    }
    /// Clear counters and time stamps (not the rate-limit buckets).
    pub fn reset_stats(&self) {
        let mut i = self.shared.inner.lock().unwrap();
        let open = i.stats.open;
        i.stats = FaultStats {
            open,
            max_open: open,
            ..Default::default()
        };
        i.arrivals.clear();
        i.rejections.clear();
        i.windows
            .iter_mut()
            .for_each(|w| *w = WindowRecord::default());
    }
    /// Every request: arrival time since the proxy started, and kind.
    pub fn arrivals(&self) -> Vec<(Duration, String)> {
        let i = self.shared.inner.lock().unwrap();
        i.arrivals
            .iter()
            .map(|(t, k)| (t.duration_since(self.shared.started), k.clone()))
            .collect()
    }
    /// Every 429 answered: time since start and `Retry-After` seconds.
    pub fn rejections(&self) -> Vec<(Duration, Option<u64>)> {
        let i = self.shared.inner.lock().unwrap();
        i.rejections
            .iter()
            .map(|(t, r)| (t.duration_since(self.shared.started), *r))
            .collect()
    }
    /// The most requests that arrived within any `window` (closed interval) — the measured rate.
    pub fn max_in_window(&self, window: Duration) -> usize {
        let times: Vec<Instant> = {
            let i = self.shared.inner.lock().unwrap();
            i.arrivals.iter().map(|(t, _)| *t).collect()
        };
        let mut best = 0;
        let mut lo = 0;
        for hi in 0..times.len() {
            while times[hi].duration_since(times[lo]) > window {
                lo += 1;
            }
            best = best.max(hi - lo + 1);
        }
        best
    }
    /// Manifest GETs let through (and 429s) per rate-limit window, oldest first.
    pub fn windows(&self) -> Vec<WindowRecord> {
        self.shared.inner.lock().unwrap().windows.clone()
    }
    pub fn window_gets(&self) -> Vec<u64> {
        self.windows().iter().map(|w| w.gets).collect()
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
        FaultProxy::host(self)
    }
    fn creds(&self) -> Option<(String, String)> {
        None
    }
}

impl From<&FaultProxy> for Loc {
    fn from(p: &FaultProxy) -> Loc {
        Loc::reg(&p.host())
    }
}

/// Request kind, as fakehub names them.
pub fn kind_of(method: &Method, path: &str) -> String {
    if path == "/v2/" || path == "/v2" {
        return "ping".into();
    }
    if path.starts_with("/v2/_catalog") {
        return "catalog".into();
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return "other".into();
    };
    let m = method.as_str().to_ascii_lowercase();
    // The first marker after the repository name (names may contain "blobs" etc. only as
    // whole path components before the marker).
    let markers = [
        ("/blobs/uploads", "upload"),
        ("/manifests/", "manifest"),
        ("/blobs/", "blob"),
        ("/tags/list", "tags"),
        ("/referrers/", "referrers"),
    ];
    let found = markers
        .iter()
        .filter_map(|(mk, what)| rest.find(mk).map(|i| (i, *what)))
        .min_by_key(|(i, what)| (*i, *what != "upload"));
    match found {
        Some((_, "upload")) => format!("upload_{m}"),
        Some((_, "tags")) => "tags".into(),
        Some((_, "referrers")) => "referrers".into(),
        Some((_, what)) => format!("{what}_{m}"),
        None => "other".into(),
    }
}

/// Decrements the open-request count once, when the response is done (or abandoned).
struct OpenGuard(Arc<Shared>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        let mut i = self.0.inner.lock().unwrap();
        i.stats.open = i.stats.open.saturating_sub(1);
    }
}

type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// A response body that keeps its request counted as open until the last byte is handed over,
/// and optionally kills the connection after `cut_at` bytes. Before failing after a non-zero
/// cut it pauses briefly: hyper flushes what it has buffered while the body is pending, so the
/// client really receives the head and the first part of the body (an error straight away
/// would discard the buffer and look like a drop before the response).
struct Tracked {
    inner: Option<ByteStream>,
    guard: Option<OpenGuard>,
    expect: Option<u64>,
    cut_at: Option<u64>,
    /// Past this many bytes the body stays pending forever ([`FaultOpts::stall_after`]).
    stall_at: Option<u64>,
    sent: u64,
    flush: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Stream for Tracked {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.stall_at.is_some_and(|stall| this.sent >= stall) {
            // Never woken again: the client sees a body that stops mid-way and stays open.
            return Poll::Pending;
        }
        if this.cut_at.is_some_and(|cut| this.sent >= cut) {
            if this.sent > 0 {
                let flush = this
                    .flush
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(Duration::from_millis(30))));
                if flush.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
            this.inner = None;
            this.guard = None;
            this.cut_at = None;
            return Poll::Ready(Some(Err(std::io::Error::other(
                "fault proxy: connection dropped",
            ))));
        }
        let Some(inner) = this.inner.as_mut() else {
            this.guard = None;
            return Poll::Ready(None);
        };
        match inner.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                this.inner = None;
                this.guard = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.inner = None;
                this.guard = None;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok(mut chunk))) => {
                if let Some(end) = [this.cut_at, this.stall_at].into_iter().flatten().min() {
                    let room = (end - this.sent) as usize;
                    if chunk.len() > room {
                        chunk.truncate(room);
                    }
                }
                this.sent += chunk.len() as u64;
                if this.cut_at.is_none() && this.expect == Some(this.sent) {
                    this.guard = None;
                }
                Poll::Ready(Some(Ok(chunk)))
            }
        }
    }
}

fn tracked(inner: Option<ByteStream>, guard: OpenGuard, expect: Option<u64>) -> Tracked {
    Tracked {
        inner,
        guard: Some(guard),
        expect,
        cut_at: None,
        stall_at: None,
        sent: 0,
        flush: None,
    }
}

fn with_body(mut r: Response, t: Tracked) -> Response {
    *r.body_mut() = Body::from_stream(t);
    r
}

fn json_error(status: u16, code: &str, msg: &str) -> Response {
    let body = serde_json::json!({"errors": [{"code": code, "message": msg, "detail": null}]});
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

/// What to do with one request, decided under the lock.
#[derive(Default)]
struct Plan {
    slow: Option<Duration>,
    fail: Option<u16>,
    fail_code: Option<String>,
    drop_now: bool,
    cut_body: bool,
    stall_after: Option<u64>,
    rate_headers: Vec<(&'static str, String)>,
    rejected: Option<Option<u64>>,
}

fn plan(s: &Shared, ip: IpAddr, method: &Method, kind: &str, path: &str) -> Plan {
    let mut guard = s.inner.lock().unwrap();
    let i = &mut *guard;
    let o = &i.opts;
    let mut p = Plan::default();
    let faultable = !matches!(kind, "ping" | "other")
        && (o.fault_methods.is_empty()
            || o.fault_methods
                .iter()
                .any(|m| m.eq_ignore_ascii_case(method.as_str())))
        && (o.fault_kinds.is_empty() || o.fault_kinds.iter().any(|k| k == kind))
        && (o.fault_paths.is_empty() || o.fault_paths.iter().any(|f| path.ends_with(f.as_str())));
    if faultable {
        if o.slow_rate > 0.0 && i.rng.gen::<f64>() < o.slow_rate {
            i.stats.slowed += 1;
            p.slow = Some(o.slow);
        }
        if o.fail_rate > 0.0 && i.rng.gen::<f64>() < o.fail_rate && !o.fail_status.is_empty() {
            let n = i.rng.gen_range(0..o.fail_status.len());
            i.stats.failed += 1;
            p.fail = Some(o.fail_status[n]);
            p.fail_code = o.fail_code.clone();
            return p;
        }
        let body_get = method == Method::GET && matches!(kind, "blob_get" | "manifest_get");
        // HEAD responses have no body to break: a drop can only come before the response,
        // which needs a body to fail in; HEADs are left alone.
        if o.drop_rate > 0.0 && method != Method::HEAD && i.rng.gen::<f64>() < o.drop_rate {
            if body_get && i.rng.gen::<bool>() {
                p.cut_body = true;
            } else {
                i.stats.dropped += 1;
                p.drop_now = true;
                return p;
            }
        }
        if body_get && o.truncate_rate > 0.0 && i.rng.gen::<f64>() < o.truncate_rate {
            p.cut_body = true;
        }
        if body_get {
            p.stall_after = o.stall_after;
        }
    }
    if o.ratelimit > 0 && matches!(kind, "manifest_get" | "manifest_head") {
        let (limit, window) = (o.ratelimit, o.ratelimit_window);
        let retry_after = o.retry_after;
        let now = Instant::now();
        let expired = i.buckets.get(&ip).is_none_or(|b| now >= b.reset_at);
        if expired {
            i.windows.push(WindowRecord::default());
            let w = i.windows.len() - 1;
            i.buckets.insert(
                ip,
                Bucket {
                    remaining: limit,
                    reset_at: now + window,
                    window: w,
                },
            );
        }
        let b = i.buckets.get_mut(&ip).unwrap();
        let get = kind == "manifest_get";
        let exhausted = get && b.remaining == 0;
        if get && !exhausted {
            b.remaining -= 1;
            i.windows[b.window].gets += 1;
        }
        let w = window.as_secs().max(1);
        p.rate_headers = vec![
            ("ratelimit-limit", format!("{limit};w={w}")),
            ("ratelimit-remaining", format!("{};w={w}", b.remaining)),
            ("docker-ratelimit-source", ip.to_string()),
        ];
        if exhausted {
            let left = b.reset_at.saturating_duration_since(now);
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            let ra = retry_after.then_some(secs.max(1));
            i.windows[b.window].rejected += 1;
            i.stats.ratelimited += 1;
            i.rejections.push((now, ra));
            p.rejected = Some(ra);
        }
    }
    p
}

async fn handle(
    State(s): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let path = req.uri().path().to_string();
    if let Some(cmd) = path.strip_prefix("/_faults/") {
        return admin(&s, cmd);
    }
    let method = req.method().clone();
    let kind = kind_of(&method, &path);
    let guard = {
        let mut i = s.inner.lock().unwrap();
        *i.stats.by_kind.entry(kind.clone()).or_default() += 1;
        i.stats.open += 1;
        i.stats.max_open = i.stats.max_open.max(i.stats.open);
        i.arrivals.push((Instant::now(), kind.clone()));
        OpenGuard(s.clone())
    };
    let p = plan(&s, peer.ip(), &method, &kind, &path);
    let slow_answer = s.inner.lock().unwrap().opts.slow_answer;
    if let Some(d) = p.slow.filter(|_| !slow_answer) {
        tokio::time::sleep(d).await;
    }
    let resp = respond(&s, req, &p, guard).await;
    if let Some(d) = p.slow.filter(|_| slow_answer) {
        tokio::time::sleep(d).await;
    }
    if p.drop_now {
        return resp;
    }
    let status = resp.status().as_u16();
    *s.inner
        .lock()
        .unwrap()
        .stats
        .by_status
        .entry(status)
        .or_default() += 1;
    resp
}

async fn respond(s: &Arc<Shared>, req: Request, p: &Plan, guard: OpenGuard) -> Response {
    if let Some(code) = p.fail {
        let error = p.fail_code.as_deref().unwrap_or("UNAVAILABLE");
        let r = json_error(code, error, "fault proxy: injected failure");
        // Keep the error body (clients read the registry error code from it).
        let (parts, body) = r.into_parts();
        let bytes = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
        let stream: ByteStream = Box::pin(futures::stream::once(async move { Ok(bytes) }));
        return with_body(
            Response::from_parts(parts, Body::empty()),
            tracked(Some(stream), guard, None),
        );
    }
    if p.drop_now {
        // A body that fails at once: hyper closes the connection with nothing sent.
        let mut t = tracked(None, guard, None);
        t.cut_at = Some(0);
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::BAD_GATEWAY;
        return with_body(r, t);
    }
    let mut extra = HeaderMap::new();
    for (k, v) in &p.rate_headers {
        extra.insert(*k, HeaderValue::from_str(v).unwrap());
    }
    if let Some(ra) = p.rejected {
        let mut r = json_error(
            429,
            "TOOMANYREQUESTS",
            "You have reached your pull rate limit. You may increase the limit by authenticating and upgrading: https://www.docker.com/increase-rate-limit",
        );
        r.headers_mut().extend(extra);
        if let Some(secs) = ra {
            r.headers_mut()
                .insert("retry-after", HeaderValue::from(secs));
        }
        return with_body(r, tracked(None, guard, None));
    }

    // Forward, streaming both bodies.
    let pq = req
        .uri()
        .path_and_query()
        .map(|x| x.as_str().to_string())
        .unwrap_or_else(|| req.uri().path().to_string());
    let method = req.method().clone();
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
    headers.insert(
        "x-forwarded-host",
        HeaderValue::from_str(&s.self_host).unwrap(),
    );
    headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    let mut up = s
        .client
        .request(method.clone(), format!("{}{}", s.upstream, pq))
        .headers(headers);
    if method != Method::GET && method != Method::HEAD {
        up = up.body(reqwest::Body::wrap_stream(
            req.into_body().into_data_stream(),
        ));
    }
    let resp = match up.send().await {
        Ok(r) => r,
        Err(e) => {
            s.inner.lock().unwrap().stats.upstream_errors += 1;
            let r = json_error(502, "UNKNOWN", &e.to_string());
            return with_body(r, tracked(None, guard, None));
        }
    };
    let status = resp.status().as_u16();
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
    for (k, v) in &extra {
        out = out.header(k.clone(), v.clone());
    }
    // A HEAD's body is never polled: its guard goes when hyper drops it.
    let expect = if method == Method::HEAD {
        None
    } else {
        resp.content_length()
    };
    let stream: ByteStream = Box::pin(resp.bytes_stream().map_err(std::io::Error::other));
    let mut t = tracked(Some(stream), guard, expect);
    if p.cut_body && status == 200 {
        if let Some(len) = expect.filter(|l| *l >= 2) {
            t.cut_at = Some(len / 2);
            s.inner.lock().unwrap().stats.truncated += 1;
        }
    }
    if status == 200 {
        t.stall_at = p.stall_after;
    }
    out.body(Body::from_stream(t))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn admin(s: &Shared, cmd: &str) -> Response {
    let mut i = s.inner.lock().unwrap();
    match cmd {
        "stats" => {
            let st = &i.stats;
            let body = serde_json::json!({
                "by_kind": st.by_kind,
                "by_status": st.by_status.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
                "failed": st.failed, "dropped": st.dropped, "truncated": st.truncated,
                "slowed": st.slowed, "ratelimited": st.ratelimited,
                "upstream_errors": st.upstream_errors, "open": st.open, "max_open": st.max_open,
                "windows": i.windows.iter().map(|w| serde_json::json!({"gets": w.gets, "rejected": w.rejected})).collect::<Vec<_>>(),
            });
            (StatusCode::OK, body.to_string()).into_response()
        }
        "reset-window" => {
            i.buckets.clear();
            StatusCode::NO_CONTENT.into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}
