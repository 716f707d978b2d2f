//! The one path every registry HTTP request takes (spec §7.1, §7.3, §7.5): URL building, the
//! request gate, authentication, retries with backoff, and status → `StoreError` mapping.
//!
//! Layers, outermost first:
//! * [`Client::send`]: auth (pre-emptive credentials, one retry after a 401 challenge) and the
//!   final status check against the statuses the caller accepts;
//! * [`Client::execute`]: gate permit, the request itself, `observe`, and the retries of
//!   network errors and 408/429/5xx. Token fetches enter here directly, so they are gated and
//!   retried like everything else.
//!
//! Backoff (spec §7.3) is split by what failed. The retries of one request back off on that
//! request: 100 ms × 2^k before its k-th retry (or the `Retry-After` asked for), 5 retries at
//! most, so an object that always fails gives up after about 3 s. Whether the *host* is
//! unwell is the gate's call (the engine's RegistryThrottler), from what becomes of every
//! send ([`HostEvent`]): failures across distinct requests, or a 429 / `Retry-After`, pause
//! the whole host. Unlike regsync, 503 is retried (README "Retries"). Every wait, and the
//! request itself, ends with `StoreError::Canceled` once the run's cancellation fires.

use super::auth::{self, Auth};
use super::cache::Cache;
use super::cred_helper::HelperCache;
use super::origin::{self, Reach};
use super::tls::{self, TlsKey};
use super::{
    backoff, retry_after, HostConfig, HostEvent, Permit, RegistryError, RegistryOptions,
    RequestGate, Tls, BACKOFF_MAX, RETRY_STATUSES,
};
use crate::store::{BlobStream, StoreError};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, LOCATION};
use reqwest::{Method, StatusCode};
use slog::{debug, trace, warn, Logger};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use url::Url;

/// Retries after the first attempt (spec §7.3: 6 attempts).
pub(crate) const MAX_RETRIES: u32 = 5;
/// A response (or the next body chunk) that takes longer than this is a hung connection.
/// A streamed request body is not bounded as a whole (it takes as long as the source and
/// the network need), only by progress: no chunk taken for this long, or no response this
/// long after the last byte, is a hung request.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Request bodies up to this size (manifests, token forms) count as small.
const SMALL_BODY: usize = 4 << 20;
/// Error bodies are only read for the registry error code.
const ERROR_BODY_LIMIT: usize = 1 << 20;
const MAX_REDIRECTS: usize = 10;

/// A request body. Only in-memory bodies can be sent again (retries, auth challenge).
pub(crate) enum Body {
    Empty,
    Bytes(Bytes),
    Stream(BlobStream),
    /// A stream that has been handed to the HTTP client already.
    Consumed,
}

impl Body {
    fn replayable(&self) -> bool {
        matches!(self, Body::Empty | Body::Bytes(_))
    }

    /// Whether the whole exchange should be quick enough to bound by [`IDLE_TIMEOUT`]; a big
    /// upload chunk or a streamed blob takes as long as the network needs.
    fn is_small(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Bytes(b) => b.len() <= SMALL_BODY,
            Body::Stream(_) | Body::Consumed => false,
        }
    }

    /// The body for one attempt, plus, for a streamed body, where it records its own failure
    /// (so that the caller sees the source's error — short read, digest mismatch — rather
    /// than the generic "error sending request" it causes) and its progress.
    fn for_attempt(&mut self) -> (Option<reqwest::Body>, Option<StreamWatch>) {
        match self {
            Body::Empty | Body::Consumed => (None, None),
            Body::Bytes(b) => (Some(reqwest::Body::from(b.clone())), None),
            Body::Stream(_) => {
                let Body::Stream(stream) = std::mem::replace(self, Body::Consumed) else {
                    unreachable!()
                };
                let watch = StreamWatch::new();
                let seen = watch.clone();
                // The HTTP client drops the body once it has sent all of it (with a
                // `Content-Length` it does not wait for the stream's end).
                let sent = Sent(watch.progress.clone());
                let stream = stream.map(move |item| {
                    let _sent = &sent;
                    seen.progress.touch();
                    if let Err(e) = &item {
                        seen.error.lock().unwrap().get_or_insert_with(|| e.clone());
                    }
                    item
                });
                (Some(reqwest::Body::wrap_stream(stream)), Some(watch))
            }
        }
    }
}

/// What a streamed request body reports while the HTTP client sends it.
#[derive(Clone)]
struct StreamWatch {
    error: Arc<Mutex<Option<StoreError>>>,
    progress: Arc<Progress>,
}

impl StreamWatch {
    fn new() -> Self {
        StreamWatch {
            error: Arc::new(Mutex::new(None)),
            progress: Arc::new(Progress::new()),
        }
    }
}

/// Marks the body as sent when the HTTP client lets go of it.
struct Sent(Arc<Progress>);

impl Drop for Sent {
    fn drop(&mut self) {
        self.0.finish();
    }
}

/// When a streamed body last moved (a chunk taken by the HTTP client, or its end), to tell a
/// slow upload from a hung one.
struct Progress {
    start: tokio::time::Instant,
    /// Milliseconds after `start`.
    last: AtomicU64,
    finished: AtomicBool,
}

impl Progress {
    fn new() -> Self {
        Progress {
            start: tokio::time::Instant::now(),
            last: AtomicU64::new(0),
            finished: AtomicBool::new(false),
        }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis();
        self.last
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn finish(&self) {
        self.touch();
        self.finished.store(true, Ordering::Relaxed);
    }

    fn finished(&self) -> bool {
        self.finished.load(Ordering::Relaxed)
    }

    /// Resolves once nothing has moved for `idle`: no chunk taken while sending, or no
    /// response `idle` after the last byte went out.
    async fn stalled(&self, idle: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last.load(Ordering::Relaxed));
            let deadline = last + idle;
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// One registry request as the store layer describes it.
pub(crate) struct Request {
    pub method: Method,
    pub url: Url,
    pub headers: HeaderMap,
    pub body: Body,
    /// The repository (as the registry names it, path prefix included) whose auth state the
    /// request uses with `repoAuth`; empty for registry-wide requests (catalog).
    pub repo: String,
    /// Bearer scopes the request needs (spec §8.4).
    pub scopes: Vec<String>,
    /// How often a network error or a 408/429/5xx is retried on the same host.
    pub retries: u32,
}

impl Request {
    /// A request on a repository: `pull` for GET/HEAD, `pull,push` for anything else.
    pub fn repo(method: Method, url: Url, repo: &str) -> Self {
        let actions = if method == Method::GET || method == Method::HEAD {
            "pull"
        } else {
            "pull,push"
        };
        Request {
            scopes: vec![format!("repository:{repo}:{actions}")],
            method,
            url,
            headers: HeaderMap::new(),
            body: Body::Empty,
            repo: repo.to_string(),
            retries: MAX_RETRIES,
        }
    }

    /// A request outside any repository (`_catalog`); its scope comes from the challenge.
    pub fn registry(method: Method, url: Url) -> Self {
        Request {
            method,
            url,
            headers: HeaderMap::new(),
            body: Body::Empty,
            repo: String::new(),
            scopes: Vec::new(),
            retries: MAX_RETRIES,
        }
    }

    pub fn header(mut self, name: HeaderName, value: &str) -> Result<Self, StoreError> {
        let value = HeaderValue::from_str(value)
            .map_err(|_| StoreError::Invalid(format!("invalid {name} header value {value:?}")))?;
        self.headers.insert(name, value);
        Ok(self)
    }

    pub fn body(mut self, body: Body) -> Self {
        self.body = body;
        self
    }

    pub fn scope(mut self, scope: String) -> Self {
        self.scopes.push(scope);
        self
    }
}

/// A response, holding its gate permit until it (or its body stream) is dropped.
pub(crate) struct Response {
    inner: reqwest::Response,
    permit: Permit,
    host: String,
    cancel: CancellationToken,
}

impl Response {
    pub fn status(&self) -> u16 {
        self.inner.status().as_u16()
    }

    pub fn headers(&self) -> &HeaderMap {
        self.inner.headers()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.inner
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    }

    /// The URL that answered (after redirects): relative `Location`/`Link` resolve against it.
    pub fn url(&self) -> &Url {
        self.inner.url()
    }

    pub fn content_length(&self) -> Option<u64> {
        self.header("content-length").and_then(|v| v.parse().ok())
    }

    /// `Content-Type` without parameters, lower-cased (spec §7.2).
    pub fn media_type(&self) -> Option<String> {
        self.header("content-type")
            .map(|ct| {
                ct.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .filter(|mt| !mt.is_empty())
    }

    /// The `Location` header resolved against the request URL (spec §6.3 b).
    pub fn location(&self) -> Result<Url, StoreError> {
        let loc = self
            .header(LOCATION.as_str())
            .ok_or_else(|| StoreError::Invalid("location header missing".into()))?;
        self.url()
            .join(loc)
            .map_err(|e| StoreError::Invalid(format!("invalid location header: {e}")))
    }

    /// Read the whole body, refusing more than `limit` bytes.
    pub async fn bytes(mut self, limit: usize) -> Result<Bytes, StoreError> {
        if self.content_length().is_some_and(|n| n > limit as u64) {
            return Err(StoreError::SizeExceeded {
                expected: limit as u64,
            });
        }
        let mut buf = BytesMut::new();
        let interrupted = |host: &str, detail: String| StoreError::BodyInterrupted {
            host: host.to_string(),
            detail,
        };
        loop {
            let chunk = tokio::select! {
                c = tokio::time::timeout(IDLE_TIMEOUT, self.inner.chunk()) => c,
                _ = self.cancel.cancelled() => return Err(StoreError::Canceled),
            };
            let chunk = chunk
                .map_err(|_| interrupted(&self.host, "timed out reading the response".into()))?
                .map_err(|e| interrupted(&self.host, error_chain(&e.without_url())))?;
            let Some(chunk) = chunk else { break };
            if buf.len() + chunk.len() > limit {
                return Err(StoreError::SizeExceeded {
                    expected: limit as u64,
                });
            }
            buf.extend_from_slice(&chunk);
        }
        drop(self.permit);
        Ok(buf.freeze())
    }

    /// The body as a stream of chunks; the gate permit lives inside it, so the request slot
    /// stays taken while the body is being read (blob downloads). Once the run is cancelled
    /// the stream ends with `StoreError::Canceled`.
    pub fn into_stream(self) -> BlobStream {
        let Response {
            inner,
            permit,
            host,
            cancel,
        } = self;
        let body = inner.bytes_stream().boxed();
        // Ends after the cancellation's error, or with the body; the permit is dropped then.
        let state = Some((body, permit, host, cancel));
        futures::stream::unfold(state, |state| async move {
            let (mut body, permit, host, cancel) = state?;
            tokio::select! {
                biased;
                _ = cancel.cancelled() => Some((Err(StoreError::Canceled), None)),
                item = body.next() => {
                    let item = item?.map_err(|e| network_error(&host, e));
                    Some((item, Some((body, permit, host, cancel))))
                }
            }
        })
        .boxed()
    }

    /// The error this (non-accepted) response stands for.
    pub async fn into_error(self) -> StoreError {
        let status = self.status();
        let retry_after = retry_after(self.headers()).map(|d| d.as_secs());
        // A body we cannot read only loses the error code, not the status.
        let body = self.bytes(ERROR_BODY_LIMIT).await.unwrap_or_default();
        status_error(status, &body, retry_after)
    }
}

/// Run `attempt` again when a response body was cut off after its headers arrived: the
/// request-level retries of `execute` end once the headers are in, and small bodies
/// (manifests, listings, tokens) are re-requested whole.
pub(crate) async fn retry_body<T, F, Fut>(mut attempt: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut n = 0;
    loop {
        match attempt().await {
            Err(StoreError::BodyInterrupted { .. }) if n < MAX_RETRIES => {
                tokio::time::sleep(backoff(n)).await;
                n += 1;
            }
            other => return other,
        }
    }
}

/// A registry name's connection settings, HTTP client and auth state.
pub(crate) struct Host {
    pub config: HostConfig,
    http: reqwest::Client,
    /// One auth state per host, or per repository with `repoAuth` (spec §8.4).
    auth: Mutex<HashMap<String, Arc<Auth>>>,
}

impl Host {
    fn new(mut config: HostConfig, http: reqwest::Client) -> Self {
        if config.hostname.is_empty() {
            config.hostname = HostConfig::for_name(&config.name).hostname;
        }
        Host {
            config,
            http,
            auth: Mutex::new(HashMap::new()),
        }
    }

    fn auth(&self, repo: &str) -> Arc<Auth> {
        let key = if self.config.repo_auth { repo } else { "" };
        let mut states = self.auth.lock().unwrap();
        states.entry(key.to_string()).or_default().clone()
    }

    /// The origin the host's credentials belong to.
    fn origin_url(&self) -> Option<Url> {
        Url::parse(&self.base()).ok()
    }

    fn base(&self) -> String {
        let scheme = match self.config.tls {
            Tls::Disabled => "http",
            Tls::Enabled | Tls::Insecure => "https",
        };
        format!("{scheme}://{}/v2", self.config.hostname)
    }

    /// The repository name as the registry sees it: `pathPrefix` in front (spec §3.3). Bearer
    /// scopes use it too, since the token server authorises the name in the URL.
    pub fn repo_path(&self, repo: &str) -> String {
        let prefix = self.config.path_prefix.trim_matches('/');
        if prefix.is_empty() {
            repo.to_string()
        } else {
            format!("{prefix}/{repo}")
        }
    }

    /// `http(s)://hostname/v2[/pathPrefix]/<repo>/<path>` (spec §7.1).
    pub fn repo_url(&self, repo: &str, path: &str) -> Result<Url, StoreError> {
        parse_url(&format!("{}/{}/{path}", self.base(), self.repo_path(repo)))
    }

    /// `_catalog` is registry-wide: no path prefix (spec §3.3).
    pub fn catalog_url(&self) -> Result<Url, StoreError> {
        parse_url(&format!("{}/_catalog", self.base()))
    }

    /// A repository request on this host (see [`Request::repo`]).
    pub fn request(&self, method: Method, repo: &str, path: &str) -> Result<Request, StoreError> {
        Ok(Request::repo(
            method,
            self.repo_url(repo, path)?,
            &self.repo_path(repo),
        ))
    }
}

fn parse_url(s: &str) -> Result<Url, StoreError> {
    Url::parse(s).map_err(|e| StoreError::Invalid(format!("invalid registry URL {s:?}: {e}")))
}

/// The HTTP core shared by every operation of a `RegistryStore`.
pub(crate) struct Client {
    hosts: Mutex<HashMap<String, Arc<Host>>>,
    /// HTTP clients by TLS settings: hosts with the same settings share a connection pool.
    clients: Mutex<HashMap<TlsKey, reqwest::Client>>,
    /// For registry names never configured, when their client cannot be built.
    default_http: reqwest::Client,
    /// Docker's per-host CA directory (spec §7.5).
    certs_dir: Option<PathBuf>,
    /// `skipDockerConfig` for registry names never configured: the engine sets the flag on
    /// every configured host alike.
    skip_docker_certs: bool,
    gate: Arc<dyn RequestGate>,
    pub user_agent: String,
    pub log: Logger,
    /// `Warning` texts already logged (spec §7.1: once per distinct text).
    warnings: Mutex<HashSet<String>>,
    /// Manifests and referrer lists (spec §7.4).
    pub cache: Cache,
    /// Credentials from credential helpers, per host ([`HelperCache`]).
    pub cred_helpers: HelperCache,
    /// How long a request may make no progress ([`IDLE_TIMEOUT`]; shorter in tests).
    idle_timeout: Duration,
    /// The run's cancellation ([`RegistryOptions::cancel`]).
    cancel: CancellationToken,
}

impl Client {
    pub fn new(
        hosts: Vec<HostConfig>,
        gate: Arc<dyn RequestGate>,
        options: RegistryOptions,
        log: Logger,
    ) -> Result<Client, RegistryError> {
        Self::with_certs_dir(
            hosts,
            gate,
            options,
            log,
            Some(PathBuf::from(tls::DOCKER_CERTS_DIR)),
        )
    }

    pub fn with_certs_dir(
        hosts: Vec<HostConfig>,
        gate: Arc<dyn RequestGate>,
        options: RegistryOptions,
        log: Logger,
        certs_dir: Option<PathBuf>,
    ) -> Result<Client, RegistryError> {
        let RegistryOptions {
            user_agent,
            cache_count,
            cache_time,
            cancel,
        } = options;
        let default_http = tls::build_http(&TlsKey::default(), "", &user_agent, &log)?;
        let skip_docker_certs = hosts.iter().any(|h| h.skip_docker_certs);
        let client = Client {
            hosts: Mutex::new(HashMap::new()),
            clients: Mutex::new(HashMap::from([(TlsKey::default(), default_http.clone())])),
            default_http,
            certs_dir,
            skip_docker_certs,
            gate,
            user_agent,
            log,
            warnings: Mutex::new(HashSet::new()),
            cache: Cache::new(cache_count, cache_time),
            cred_helpers: HelperCache::default(),
            idle_timeout: IDLE_TIMEOUT,
            cancel,
        };
        let mut by_name = HashMap::new();
        for config in hosts {
            let http = client.http_for(&config)?;
            by_name.insert(config.name.clone(), Arc::new(Host::new(config, http)));
        }
        *client.hosts.lock().unwrap() = by_name;
        Ok(client)
    }

    /// The (shared) HTTP client for a host's TLS settings.
    fn http_for(&self, config: &HostConfig) -> Result<reqwest::Client, RegistryError> {
        let mut config = config.clone();
        if config.hostname.is_empty() {
            config.hostname = HostConfig::for_name(&config.name).hostname;
        }
        let key = TlsKey::of(&config, self.certs_dir.as_deref());
        let mut clients = self.clients.lock().unwrap();
        if let Some(http) = clients.get(&key) {
            return Ok(http.clone());
        }
        let http = tls::build_http(&key, &config.name, &self.user_agent, &self.log)?;
        clients.insert(key, http.clone());
        Ok(http)
    }

    /// The host for a registry name; names never configured get defaults, kept so that their
    /// auth state lives on.
    pub fn host(&self, name: &str) -> Arc<Host> {
        if let Some(h) = self.hosts.lock().unwrap().get(name) {
            return h.clone();
        }
        let config = HostConfig {
            skip_docker_certs: self.skip_docker_certs,
            ..HostConfig::for_name(name)
        };
        let http = self.http_for(&config).unwrap_or_else(|e| {
            warn!(self.log, "Failed to set up the HTTP client, using defaults";
                "registry" => name, "err" => %e);
            self.default_http.clone()
        });
        self.hosts
            .lock()
            .unwrap()
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(Host::new(config, http)))
            .clone()
    }

    /// The hosts a read of `upstream` may go to, in the order to try them (spec §7.1): hosts
    /// the gate holds paused last (the soonest back first), then ascending `priority`, then
    /// mirrors before the upstream.
    ///
    /// Ascending: a lower `priority` value is tried first. regclient documents the opposite
    /// but sorts this way (spec §16 quirk 11); configs tuned against regsync keep working.
    pub async fn read_hosts(&self, upstream: &Arc<Host>) -> Vec<Arc<Host>> {
        let mut hosts: Vec<Arc<Host>> = Vec::new();
        for m in &upstream.config.mirrors {
            let m = m.trim();
            if m.is_empty() || m == upstream.config.name {
                continue;
            }
            let h = self.host(m);
            if !hosts.iter().any(|x| Arc::ptr_eq(x, &h)) {
                hosts.push(h);
            }
        }
        hosts.push(upstream.clone());
        if hosts.len() == 1 {
            return hosts;
        }
        let mut keyed = Vec::with_capacity(hosts.len());
        for h in hosts {
            let paused = self.gate.paused_until(&h.config).await;
            keyed.push(((paused.is_some(), paused, h.config.priority), h));
        }
        keyed.sort_by_key(|((paused, until, priority), h)| {
            (*paused, *until, *priority, Arc::ptr_eq(h, upstream))
        });
        keyed.into_iter().map(|(_, h)| h).collect()
    }

    /// A read (manifest / blob HEAD or GET, tag list) of `<repo>/<path>` on the registry
    /// `registry`, served by its mirrors when it has any (spec §7.1). Returns the host that
    /// answered, for follow-up requests (`Link` pages, resumed downloads).
    ///
    /// Per host: 404 and 416 try the next host; network errors and 408/429/5xx try the next
    /// (the same host again when it is the last; the gate has seen the failure and may hold
    /// the host back); any other failure drops the host. `disableHead` hosts are skipped for
    /// HEADs. When no host is left, the last error is returned.
    pub async fn read(
        &self,
        registry: &str,
        method: Method,
        repo: &str,
        path: &str,
        headers: &HeaderMap,
        accept: &[u16],
    ) -> Result<(Arc<Host>, Response), StoreError> {
        let upstream = self.host(registry);
        let mut hosts = self.read_hosts(&upstream).await;
        let request = |h: &Host, retries: u32| -> Result<Request, StoreError> {
            let mut url = h.repo_url(repo, path)?;
            if h.config.hostname != upstream.config.hostname {
                url.query_pairs_mut()
                    .append_pair("ns", &upstream.config.hostname);
            }
            let mut req = Request::repo(method.clone(), url, &h.repo_path(repo));
            req.headers = headers.clone();
            req.retries = retries;
            Ok(req)
        };
        let head_disabled = |h: &Host| method == Method::HEAD && h.config.disable_head;
        if hosts.len() == 1 && !head_disabled(&upstream) {
            // No mirrors: the plain path, with the usual retries.
            let resp = self
                .send(&upstream, request(&upstream, MAX_RETRIES)?, accept)
                .await?;
            return Ok((upstream, resp));
        }
        let mut last_err: Option<StoreError> = None;
        let mut attempts = 0;
        let mut backoffs = 0;
        let mut i = 0;
        while !hosts.is_empty() {
            if i >= hosts.len() {
                i = 0;
            }
            let h = hosts[i].clone();
            if head_disabled(&h) {
                last_err = Some(StoreError::Unsupported(format!(
                    "head requests disabled for host {:?}",
                    h.config.name
                )));
                hosts.remove(i);
                continue;
            }
            if attempts > MAX_RETRIES {
                break;
            }
            attempts += 1;
            // One attempt per host and round while there are others to try; the last host
            // left gets the usual retries, and its failure is final.
            let last = hosts.len() == 1;
            let retries = if last { MAX_RETRIES } else { 0 };
            let err = match self.send(&h, request(&h, retries)?, accept).await {
                Ok(resp) => return Ok((h, resp)),
                Err(e) if last => return Err(e),
                Err(e) => e,
            };
            debug!(self.log, "read failed on host"; "host" => &h.config.name,
                "upstream" => registry, "path" => path, "err" => %err);
            // The gate has seen network errors and retryable statuses (and pauses the host
            // for a `Retry-After`).
            let (backed_off, mut drop) = match &err {
                StoreError::NotFound(_) | StoreError::Unauthorized { .. } => (false, true),
                StoreError::HttpStatus { status: 416, .. } => (false, true),
                StoreError::Canceled => return Err(err),
                StoreError::RateLimited {
                    retry_after: Some(s),
                } if Duration::from_secs(*s) > BACKOFF_MAX => (true, true),
                e if e.is_transient() => (true, false),
                _ => (true, true),
            };
            if backed_off {
                backoffs += 1;
                // Spec §7.3: after 5 backoffs the host is dropped for this request.
                drop |= backoffs >= MAX_RETRIES;
            }
            last_err = Some(err);
            if drop {
                hosts.remove(i);
            } else {
                i += 1;
            }
        }
        Err(last_err.unwrap_or_else(|| StoreError::Invalid("no registry host to try".into())))
    }

    /// Send a registry request with auth; `Ok` only for a status in `accept`, every other
    /// status becomes its `StoreError` (spec §7.3).
    pub async fn send(
        &self,
        host: &Host,
        req: Request,
        accept: &[u16],
    ) -> Result<Response, StoreError> {
        let Request {
            method,
            url,
            headers,
            mut body,
            repo,
            scopes,
            retries,
        } = req;
        let auth = host.auth(&repo);
        // The registry's credentials go to its own origin only: a URL it handed out (an
        // upload `Location`) that leads elsewhere is followed without them.
        let own_origin = host
            .origin_url()
            .is_some_and(|own| origin::check(&own, &url) == Ok(Reach::SameOrigin));
        let mut challenged = false;
        loop {
            let authorization = if own_origin {
                auth.authorization(self, host, &scopes).await?
            } else {
                None
            };
            let mut headers = headers.clone();
            if let Some(value) = &authorization {
                headers.insert(AUTHORIZATION, value.clone());
            }
            let resp = self
                .execute_with(host, &method, &url, headers, &mut body, retries)
                .await?;
            let status = resp.status();
            if accept.contains(&status) {
                return Ok(resp);
            }
            if status != 401 || challenged || !body.replayable() || !own_origin {
                return Err(resp.into_error().await);
            }
            let challenges = auth::parse_challenges(resp.headers());
            // Release the permit before touching the auth state: the token fetch it may
            // start needs a permit of its own.
            let err = resp.into_error().await;
            let challenges = challenges.map_err(|detail| StoreError::Unauthorized {
                status: 401,
                detail: Some(detail),
            })?;
            let learned = auth
                .on_challenge(&url, &challenges, authorization.as_ref(), self, host)
                .await;
            if !learned {
                return Err(err);
            }
            challenged = true;
        }
    }

    /// One request with gate, observation and retries; any status is returned as is.
    pub async fn execute(
        &self,
        host: &Host,
        method: &Method,
        url: &Url,
        headers: HeaderMap,
        body: &mut Body,
    ) -> Result<Response, StoreError> {
        self.execute_with(host, method, url, headers, body, MAX_RETRIES)
            .await
    }

    /// [`Client::execute`] with at most `max_retries` retries.
    async fn execute_with(
        &self,
        host: &Host,
        method: &Method,
        url: &Url,
        headers: HeaderMap,
        body: &mut Body,
        max_retries: u32,
    ) -> Result<Response, StoreError> {
        let authority = authority(url);
        let mut attempt = 0;
        loop {
            let bounded = body.is_small();
            let (reqwest_body, watch) = body.for_attempt();
            let mut builder = host
                .http
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            if let Some(b) = reqwest_body {
                builder = builder.body(b);
            }
            let permit = self
                .gate
                .acquire(&host.config, &self.cancel)
                .await
                .ok_or(StoreError::Canceled)?;
            trace!(self.log, "registry request";
                "method" => %method, "url" => loggable(url), "attempt" => attempt);
            let exchange = async {
                match &watch {
                    Some(w) => {
                        // A streamed body: bounded by progress, not as a whole.
                        tokio::select! {
                            r = builder.send() => r.map_err(Some),
                            _ = w.progress.stalled(self.idle_timeout) => Err(None),
                        }
                    }
                    None if bounded => {
                        match tokio::time::timeout(self.idle_timeout, builder.send()).await {
                            Ok(r) => r.map_err(Some),
                            Err(_) => Err(None),
                        }
                    }
                    None => builder.send().await.map_err(Some),
                }
            };
            let sent = tokio::select! {
                r = exchange => r,
                _ = self.cancel.cancelled() => return Err(StoreError::Canceled),
            };
            let replayable = body.replayable();
            // A source that failed mid-upload is the real story, whatever the server said.
            let source_error = watch.as_ref().and_then(|w| w.error.lock().unwrap().take());
            let (reason, delay) = match sent {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    self.gate.observe(
                        &host.config,
                        HostEvent::Answered {
                            status,
                            headers: resp.headers(),
                            attempt,
                        },
                    );
                    self.log_warnings(resp.headers());
                    debug!(self.log, "registry response";
                        "method" => %method, "url" => loggable(url), "status" => status);
                    if let Some(err) = source_error {
                        return Err(err);
                    }
                    let resp = Response {
                        inner: resp,
                        permit,
                        host: authority.clone(),
                        cancel: self.cancel.clone(),
                    };
                    if !RETRY_STATUSES.contains(&status) {
                        return Ok(resp);
                    }
                    let delay = match retry_after(resp.headers()) {
                        // Longer waits (hub rate limits) are not spent inside one request:
                        // the gate pauses the host, the caller decides.
                        Some(d) if d > BACKOFF_MAX => return Ok(resp),
                        Some(d) => d.max(backoff(attempt)),
                        None => backoff(attempt),
                    };
                    if !replayable || attempt >= max_retries {
                        return Ok(resp);
                    }
                    (format!("http {status}"), delay)
                }
                Err(e) => {
                    drop(permit);
                    let err = match (source_error, e) {
                        (Some(err), _) => return Err(err),
                        (None, Some(e)) => {
                            if e.is_builder() || e.is_redirect() {
                                return Err(StoreError::Invalid(error_chain(&e.without_url())));
                            }
                            let mut err = network_error(&authority, e);
                            if let StoreError::Network { detail, .. } = &mut err {
                                if let Some(hint) = tls::hint(detail, url, &host.config) {
                                    detail.push_str(&format!(" ({hint})"));
                                }
                            }
                            err
                        }
                        (None, None) => StoreError::Network {
                            host: authority.clone(),
                            detail: match &watch {
                                Some(w) if !w.progress.finished() => {
                                    "timed out sending the request body".into()
                                }
                                _ => "timed out waiting for the response".into(),
                            },
                        },
                    };
                    if tls::is_permanent(&err) {
                        return Err(err);
                    }
                    self.gate
                        .observe(&host.config, HostEvent::Unreachable { attempt });
                    if !replayable || attempt >= max_retries {
                        return Err(err);
                    }
                    (err.to_string(), backoff(attempt))
                }
            };
            debug!(self.log, "retrying registry request";
                "method" => %method, "url" => loggable(url), "reason" => reason,
                "delay_ms" => delay.as_millis() as u64, "attempt" => attempt + 1);
            // This request's own backoff; a pause of the whole host is waited for in the gate.
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.cancel.cancelled() => return Err(StoreError::Canceled),
            }
            attempt += 1;
        }
    }

    /// Best-effort `DELETE` (cancelling an upload session); failures are only logged.
    pub async fn delete_quietly(&self, host: &Host, url: Url, repo: &str) {
        let req = Request::repo(Method::DELETE, url, repo);
        if let Err(e) = self.send(host, req, &[200, 202, 204]).await {
            debug!(self.log, "cancelling upload failed"; "error" => %e);
        }
    }

    fn log_warnings(&self, headers: &HeaderMap) {
        for value in headers.get_all("warning") {
            let Ok(text) = value.to_str() else { continue };
            // `299 - "text"`: only the text is worth showing.
            let text = text
                .split_once('"')
                .map(|(_, t)| t.trim_end_matches('"'))
                .unwrap_or(text)
                .to_string();
            if self.warnings.lock().unwrap().insert(text.clone()) {
                warn!(self.log, "Registry warning message"; "warning" => text);
            }
        }
    }
}

/// Spec §7.3: at most 10 redirects, never from https to http, never from a remote host to a
/// local address ([`origin::check`]). reqwest drops `Authorization` itself when a redirect
/// leaves the host.
pub(crate) fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error("too many redirects");
        }
        let verdict = match attempt.previous().last() {
            Some(from) => origin::check(from, attempt.url()).map(|_| ()),
            None => Ok(()),
        };
        match verdict {
            Ok(()) => attempt.follow(),
            Err(why) => attempt.error(format!("refusing redirect: {why}")),
        }
    })
}

/// Map a non-accepted status to its error (spec §7.3), with the registry error code from a
/// `{"errors":[{"code":...}]}` body when there is one.
pub(crate) fn status_error(status: u16, body: &[u8], retry_after: Option<u64>) -> StoreError {
    let code = registry_error_code(body);
    match status {
        401 | 403 => StoreError::Unauthorized {
            status,
            detail: code,
        },
        404 => StoreError::NotFound(code),
        429 => StoreError::RateLimited { retry_after },
        _ => {
            let reason = StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("");
            let mut text = format!("{status} {reason}").trim_end().to_string();
            if let Some(code) = code {
                text = format!("{text}: {code}");
            }
            StoreError::HttpStatus { status, text }
        }
    }
}

fn registry_error_code(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let code = v.get("errors")?.get(0)?.get("code")?.as_str()?;
    Some(code.to_string()).filter(|c| !c.is_empty())
}

fn network_error(host: &str, e: reqwest::Error) -> StoreError {
    StoreError::Network {
        host: host.to_string(),
        detail: error_chain(&e.without_url()),
    }
}

/// An error and its causes on one line. URLs are stripped by the callers (`without_url`):
/// upload URLs carry session state.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text = format!("{text}: {s_text}");
        }
        source = s.source();
    }
    text
}

/// `host[:port]` of a URL, for error messages.
fn authority(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    }
}

/// A URL fit for logs: no userinfo, and query values only for parameters we set ourselves
/// (upload `Location`s carry opaque session state, token URLs the account).
pub(crate) fn loggable(url: &Url) -> String {
    const SHOWN: [&str; 8] = [
        "digest", "mount", "from", "last", "n", "ns", "tag", "service",
    ];
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    if u.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if SHOWN.contains(&k.as_ref()) {
                    v.into_owned()
                } else {
                    "redacted".to_string()
                };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

/// Test helpers shared by the registry modules' unit tests: a local HTTP server and a client
/// for it.
#[cfg(test)]
pub(crate) mod test_util {
    use super::*;

    /// Serve `app` on a free loopback port; returns `127.0.0.1:PORT`.
    pub async fn serve(app: axum::Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        addr.to_string()
    }

    /// A client for plain-http `hosts` (with `options`) whose idle timeout is `idle`.
    pub fn client(hosts: &[&str], options: RegistryOptions, idle: Duration) -> Arc<Client> {
        let hosts = hosts
            .iter()
            .map(|h| HostConfig {
                tls: Tls::Disabled,
                ..HostConfig::for_name(h)
            })
            .collect();
        let log = Logger::root(slog::Discard, slog::o!());
        let mut c =
            Client::with_certs_dir(hosts, Arc::new(super::super::OpenGate), options, log, None)
                .unwrap();
        c.idle_timeout = idle;
        Arc::new(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(prefix: &str, tls: Tls) -> Host {
        let config = HostConfig {
            path_prefix: prefix.into(),
            tls,
            ..HostConfig::for_name("reg.example:5000")
        };
        Host::new(config, reqwest::Client::new())
    }

    #[test]
    fn urls_with_and_without_path_prefix() {
        let h = host("", Tls::Enabled);
        assert_eq!(
            h.repo_url("library/alpine", "manifests/latest")
                .unwrap()
                .as_str(),
            "https://reg.example:5000/v2/library/alpine/manifests/latest"
        );
        let h = host("/mirror/hub/", Tls::Disabled);
        assert_eq!(h.repo_path("a/b"), "mirror/hub/a/b");
        assert_eq!(
            h.repo_url("a/b", "blobs/uploads/").unwrap().as_str(),
            "http://reg.example:5000/v2/mirror/hub/a/b/blobs/uploads/"
        );
        // The catalog is registry-wide.
        assert_eq!(
            h.catalog_url().unwrap().as_str(),
            "http://reg.example:5000/v2/_catalog"
        );
        let hub = Host::new(HostConfig::for_name("docker.io"), reqwest::Client::new());
        assert_eq!(
            hub.repo_url("library/x", "tags/list").unwrap().as_str(),
            "https://registry-1.docker.io/v2/library/x/tags/list"
        );
    }

    fn client(hosts: Vec<HostConfig>) -> Client {
        client_with(hosts, Arc::new(super::super::OpenGate))
    }

    fn client_with(hosts: Vec<HostConfig>, gate: Arc<dyn RequestGate>) -> Client {
        let log = Logger::root(slog::Discard, slog::o!());
        Client::with_certs_dir(hosts, gate, RegistryOptions::new("ua"), log, None).unwrap()
    }

    /// A gate that grants every request, records what it is told, and reports the pauses it
    /// is given.
    #[derive(Default)]
    struct TestGate {
        paused: Mutex<HashMap<String, std::time::Instant>>,
        /// (hostname, status or None for no answer, attempt)
        events: Mutex<Vec<(String, Option<u16>, u32)>>,
        /// Never grant a slot (until cancelled).
        closed: bool,
    }

    #[async_trait::async_trait]
    impl RequestGate for TestGate {
        async fn acquire(&self, _: &HostConfig, cancel: &CancellationToken) -> Option<Permit> {
            if self.closed {
                cancel.cancelled().await;
            }
            (!cancel.is_cancelled()).then(|| Box::new(()) as Permit)
        }
        fn observe(&self, host: &HostConfig, event: HostEvent<'_>) {
            let (status, attempt) = match event {
                HostEvent::Answered {
                    status, attempt, ..
                } => (Some(status), attempt),
                HostEvent::Unreachable { attempt } => (None, attempt),
            };
            let e = (host.hostname.clone(), status, attempt);
            self.events.lock().unwrap().push(e);
        }
        async fn paused_until(&self, host: &HostConfig) -> Option<std::time::Instant> {
            let now = std::time::Instant::now();
            let paused = self.paused.lock().unwrap();
            paused.get(&host.hostname).copied().filter(|t| *t > now)
        }
    }

    fn names(hosts: &[Arc<Host>]) -> Vec<&str> {
        hosts.iter().map(|h| h.config.name.as_str()).collect()
    }

    #[tokio::test]
    async fn read_hosts_order() {
        let cfg = |name: &str, priority: u64, mirrors: &[&str]| HostConfig {
            priority,
            mirrors: mirrors.iter().map(|m| m.to_string()).collect(),
            ..HostConfig::for_name(name)
        };
        let gate = Arc::new(TestGate::default());
        let c = client_with(
            vec![
                cfg("up", 0, &["m1", "m2", "up", "m3", "m1"]),
                cfg("m1", 2, &[]),
                cfg("m2", 1, &[]),
            ],
            gate.clone(),
        );
        let up = c.host("up");
        // Ascending priority (m3 is unconfigured: 0), mirrors before the upstream at equal
        // priority, duplicates and the upstream itself removed from the mirror list.
        assert_eq!(names(&c.read_hosts(&up).await), ["m3", "up", "m2", "m1"]);
        // A host the gate holds paused goes last, the soonest back first.
        let now = std::time::Instant::now();
        let pause = |h: &str, until| gate.paused.lock().unwrap().insert(h.to_string(), until);
        pause("m3", now + Duration::from_secs(60));
        pause("m2", now + Duration::from_secs(30));
        assert_eq!(names(&c.read_hosts(&up).await), ["up", "m1", "m2", "m3"]);
        // Pauses that are over do not count.
        pause("m3", now);
        assert_eq!(names(&c.read_hosts(&up).await), ["m3", "up", "m1", "m2"]);
        // Without mirrors: the upstream alone.
        assert_eq!(names(&c.read_hosts(&c.host("m1")).await), ["m1"]);
    }

    #[test]
    fn unconfigured_hosts_follow_skip_docker_certs() {
        let c = client(vec![HostConfig {
            skip_docker_certs: true,
            ..HostConfig::for_name("a")
        }]);
        assert!(c.host("b").config.skip_docker_certs);
        let c = client(vec![HostConfig::for_name("a")]);
        assert!(!c.host("b").config.skip_docker_certs);
    }

    #[test]
    fn scopes_follow_the_method() {
        let url = Url::parse("http://r/v2/a/manifests/x").unwrap();
        assert_eq!(
            Request::repo(Method::HEAD, url.clone(), "p/a").scopes,
            ["repository:p/a:pull"]
        );
        assert_eq!(
            Request::repo(Method::PUT, url, "p/a").scopes,
            ["repository:p/a:pull,push"]
        );
    }

    #[test]
    fn status_mapping() {
        let body = br#"{"errors":[{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown"}]}"#;
        match status_error(400, body, None) {
            StoreError::HttpStatus { status, text } => {
                assert_eq!(status, 400);
                assert_eq!(text, "400 Bad Request: MANIFEST_BLOB_UNKNOWN");
            }
            e => panic!("{e:?}"),
        }
        assert_eq!(
            status_error(405, b"", None).to_string(),
            "unexpected http status code: 405 Method Not Allowed [http 405]"
        );
        assert!(matches!(
            status_error(401, b"", None),
            StoreError::Unauthorized { status: 401, .. }
        ));
        assert!(matches!(
            status_error(403, body, None),
            StoreError::Unauthorized { status: 403, .. }
        ));
        assert!(status_error(404, b"404 page not found", None).is_not_found());
        assert!(matches!(
            status_error(429, b"", Some(7)),
            StoreError::RateLimited {
                retry_after: Some(7)
            }
        ));
        assert!(status_error(503, b"", None).is_transient());
    }

    #[test]
    fn logged_urls_hide_secrets() {
        let u = Url::parse("https://u:p@r.io/v2/a/blobs/uploads/x?_state=SECRET&digest=sha256:1")
            .unwrap();
        let s = loggable(&u);
        assert!(!s.contains("SECRET") && !s.contains("u:p"), "{s}");
        assert!(s.contains("digest=sha256%3A1"), "{s}");
    }

    /// A small server answering `GET /v2/a/x` with the statuses in `script`, then 200.
    async fn scripted(script: Vec<u16>) -> (String, Arc<Mutex<Vec<u16>>>) {
        let script = Arc::new(Mutex::new(script));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (s2, seen2) = (script.clone(), seen.clone());
        let app = axum::Router::new().fallback(move || {
            let (script, seen) = (s2.clone(), seen2.clone());
            async move {
                let mut script = script.lock().unwrap();
                let status = if script.is_empty() {
                    200
                } else {
                    script.remove(0)
                };
                seen.lock().unwrap().push(status);
                axum::http::StatusCode::from_u16(status).unwrap()
            }
        });
        (test_util::serve(app).await, seen)
    }

    fn tls_off(addr: &str) -> HostConfig {
        HostConfig {
            tls: Tls::Disabled,
            ..HostConfig::for_name(addr)
        }
    }

    #[tokio::test]
    async fn retries_503_and_other_transient_statuses() {
        let (addr, seen) = scripted(vec![503, 502, 429]).await;
        let gate = Arc::new(TestGate::default());
        let c = client_with(vec![tls_off(&addr)], gate.clone());
        let h = c.host(&addr);
        let url = h.repo_url("a", "x").unwrap();
        let resp = c
            .execute(&h, &Method::GET, &url, HeaderMap::new(), &mut Body::Empty)
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(*seen.lock().unwrap(), [503, 502, 429, 200]);
        // The gate is told which send of the request each answer belongs to: the host's
        // health is judged across requests, not across one request's retries.
        let events = gate.events.lock().unwrap().clone();
        let told: Vec<_> = events.iter().map(|(_, s, a)| (*s, *a)).collect();
        assert_eq!(
            told,
            [
                (Some(503), 0),
                (Some(502), 1),
                (Some(429), 2),
                (Some(200), 3)
            ]
        );
    }

    #[tokio::test]
    async fn retries_end_after_five() {
        let (addr, seen) = scripted(vec![500; 10]).await;
        let c = test_util::client(&[&addr], RegistryOptions::new("ua"), IDLE_TIMEOUT);
        let h = c.host(&addr);
        // Backoff 0.1 + 0.2 + 0.4 + 0.8 + 1.6 s, then the last answer is returned.
        let url = h.repo_url("a", "x").unwrap();
        let resp = c
            .execute(&h, &Method::GET, &url, HeaderMap::new(), &mut Body::Empty)
            .await
            .unwrap();
        assert_eq!(resp.status(), 500);
        assert_eq!(seen.lock().unwrap().len(), 1 + MAX_RETRIES as usize);
    }

    #[tokio::test]
    async fn a_cancelled_run_ends_gate_waits_and_retry_backoffs() {
        let (addr, seen) = scripted(vec![500; 10]).await;
        let cancel = CancellationToken::new();
        let log = Logger::root(slog::Discard, slog::o!());
        let closed = Arc::new(TestGate {
            closed: true,
            ..Default::default()
        });
        let options = RegistryOptions::new("ua").with_cancel(cancel.clone());
        let c = Client::with_certs_dir(
            vec![tls_off(&addr)],
            closed,
            options.clone(),
            log.clone(),
            None,
        )
        .unwrap();
        let h = c.host(&addr);
        let url = h.repo_url("a", "x").unwrap();
        let stop = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            stop.cancel();
        });
        let started = std::time::Instant::now();
        // Waiting for a slot (a host paused for hours) ends with the run.
        let err = c
            .execute(&h, &Method::GET, &url, HeaderMap::new(), &mut Body::Empty)
            .await
            .err()
            .expect("cancelled");
        assert!(matches!(err, StoreError::Canceled), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(seen.lock().unwrap().is_empty());

        // A request backing off between retries stops too.
        let cancel = CancellationToken::new();
        let options = options.with_cancel(cancel.clone());
        let open = Arc::new(TestGate::default());
        let c = Client::with_certs_dir(vec![tls_off(&addr)], open, options, log, None).unwrap();
        let h = c.host(&addr);
        let stop = cancel.clone();
        tokio::spawn(async move {
            // After the first two answers, inside the 200 ms backoff before the third.
            tokio::time::sleep(Duration::from_millis(200)).await;
            stop.cancel();
        });
        let started = std::time::Instant::now();
        let err = c
            .execute(&h, &Method::GET, &url, HeaderMap::new(), &mut Body::Empty)
            .await
            .err()
            .expect("cancelled");
        assert!(matches!(err, StoreError::Canceled), "{err}");
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(seen.lock().unwrap().len() < 4);
    }

    fn chunks(n: usize, every: Duration) -> BlobStream {
        futures::stream::unfold(0, move |i| async move {
            if i == n {
                return None;
            }
            tokio::time::sleep(every).await;
            Some((Ok(Bytes::from(vec![b'x'; 1000])), i + 1))
        })
        .boxed()
    }

    /// An upload endpoint that reads the whole body, then answers 201 after `delay`
    /// (`None`: never).
    async fn upload_server(delay: Option<Duration>) -> String {
        let app = axum::Router::new().fallback(move |body: axum::body::Bytes| async move {
            assert!(!body.is_empty());
            match delay {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending::<()>().await,
            }
            axum::http::StatusCode::CREATED
        });
        test_util::serve(app).await
    }

    #[tokio::test]
    async fn a_streamed_upload_must_be_answered_in_time() {
        let addr = upload_server(None).await;
        let c = test_util::client(
            &[&addr],
            RegistryOptions::new("ua"),
            Duration::from_millis(500),
        );
        let h = c.host(&addr);
        let url = h.repo_url("a", "blobs/uploads/u").unwrap();
        let started = std::time::Instant::now();
        let mut body = Body::Stream(chunks(3, Duration::from_millis(10)));
        let err = c
            .execute(&h, &Method::PUT, &url, HeaderMap::new(), &mut body)
            .await
            .err()
            .expect("no answer must fail");
        assert!(
            err.to_string()
                .contains("timed out waiting for the response"),
            "{err}"
        );
        assert!(err.is_transient(), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_slow_streamed_upload_is_not_cut_off() {
        // 6 chunks, 300 ms apart (1.8 s in all) against a 1 s idle timeout; the answer comes
        // 500 ms after the last byte.
        let addr = upload_server(Some(Duration::from_millis(500))).await;
        let c = test_util::client(&[&addr], RegistryOptions::new("ua"), Duration::from_secs(1));
        let h = c.host(&addr);
        let url = h.repo_url("a", "blobs/uploads/u").unwrap();
        let mut body = Body::Stream(chunks(6, Duration::from_millis(300)));
        let resp = c
            .execute(&h, &Method::PUT, &url, HeaderMap::new(), &mut body)
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
    }

    #[tokio::test]
    async fn progress_stalls_after_idle() {
        let p = Progress::new();
        let started = tokio::time::Instant::now();
        p.stalled(Duration::from_millis(100)).await;
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert!(!p.finished());
        p.finish();
        assert!(p.finished());
    }
}
