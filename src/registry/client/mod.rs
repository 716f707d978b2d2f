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
//! send ([`HostEvent`](super::HostEvent)): failures across distinct requests, or a 429 /
//! `Retry-After`, pause the whole host. Unlike regsync, 503 is retried (README "Retries").
//! Every wait, and the request itself, ends with `StoreError::Canceled` once the client's
//! cancellation fires: the run's, or another one for a view of the client made by
//! [`Client::under`] (clean-up requests that must outlive the run a little, see
//! [`CLEANUP_GRACE`]).
//!
//! Its parts: [`body`] (request bodies and how far a streamed one got), [`response`] (a
//! response holding its permit, status → `StoreError`, loggable URLs), [`host`] (a registry
//! name's URLs and auth state), [`retry`] (gate, attempts and backoff: [`Client::execute`]).
//! Where a URL handed out by a registry may lead is the one rule of [`super::origin`].

mod body;
mod host;
mod response;
mod retry;
#[cfg(test)]
pub(crate) mod test_util;
#[cfg(test)]
mod tests;

pub(crate) use body::Body;
pub(crate) use host::Host;
pub(crate) use response::{error_chain, loggable, Response};
pub(crate) use retry::MAX_RETRIES;

use super::auth;
use super::cache::Cache;
use super::cred_helper::HelperCache;
use super::origin::{self, Reach};
use super::tls::{self, TlsKey};
use super::{HostConfig, RegistryError, RegistryOptions, RequestGate, RequestKind, BACKOFF_MAX};
use crate::store::StoreError;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use reqwest::Method;
use slog::{debug, warn, Logger};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::{task_tracker::TaskTrackerToken, TaskTracker};
use url::Url;

/// A response (or the next body chunk) that takes longer than this is a hung connection.
/// A streamed request body is not bounded as a whole (it takes as long as the source and
/// the network need), only by progress: no chunk taken for this long, or no response this
/// long after the last byte, is a hung request.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a clean-up request (the `DELETE` of a cancelled upload's session) may go on
/// after the run was cancelled. A session left open keeps its partial blob on the target
/// until the registry purges it (a week by default in distribution), at every restart of a
/// mirror; but shutdown must stay prompt, well within the default 30 s `--shutdown-timeout`
/// (which bounds it too: with `0s` the clean-up is abandoned with the process).
pub(crate) const CLEANUP_GRACE: Duration = Duration::from_secs(5);

/// Distinct `Warning` texts remembered (and logged at warn level) per client; past it new
/// texts are logged at debug level.
pub(crate) const WARNINGS_KEPT: usize = 100;

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
    /// Whether the host's token keeps `scopes` for every later request (pull, push), or this
    /// request gets a token of its own scopes (`delete`; see [`auth::Auth::authorization`]).
    pub keep_scopes: bool,
    /// How often a network error or a 408/429/5xx is retried on the same host.
    pub retries: u32,
    /// How long an exchange already on its way may still take once the client's cancellation
    /// fires (`None`: it ends at once); [`Client::send_opening`]. Waits before it (a slot, a
    /// token, a retry's backoff) end at once either way.
    pub answer_grace: Option<Duration>,
}

impl Request {
    /// A request on a repository: `pull` for GET/HEAD, `delete` for DELETE (distribution's
    /// action for it), `pull,push` for anything else. A delete's scope is not kept: a mirror
    /// deletes rarely (pruning, a cancelled upload), and a token server that refuses `delete`
    /// must not refuse the tokens of every later pull and push.
    pub fn repo(method: Method, url: Url, repo: &str) -> Self {
        let (actions, keep_scopes) = if method == Method::GET || method == Method::HEAD {
            ("pull", true)
        } else if method == Method::DELETE {
            ("delete", false)
        } else {
            ("pull,push", true)
        };
        Request {
            scopes: vec![format!("repository:{repo}:{actions}")],
            keep_scopes,
            method,
            url,
            headers: HeaderMap::new(),
            body: Body::Empty,
            repo: repo.to_string(),
            retries: MAX_RETRIES,
            answer_grace: None,
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
            keep_scopes: true,
            retries: MAX_RETRIES,
            answer_grace: None,
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

/// The HTTP core shared by every operation of a `RegistryStore`: the state every view made by
/// [`Client::under`] shares, and the cancellation that is the view's own.
pub(crate) struct Client {
    shared: Arc<Shared>,
    /// What ends this client's requests, waits and body reads: the run's cancellation
    /// ([`RegistryOptions::cancel`]), or another one in a view made by [`Client::under`].
    cancel: CancellationToken,
}

/// What a [`Client`] and its views share: hosts and their auth state, HTTP clients, the gate,
/// caches, credential helpers, the clean-ups owed to the registries.
pub(crate) struct Shared {
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
    /// `Warning` texts already logged (spec §7.1: once per distinct text), at most
    /// [`WARNINGS_KEPT`].
    warnings: Mutex<HashSet<String>>,
    /// Manifests and referrer lists (spec §7.4).
    pub cache: Cache,
    /// Credentials from credential helpers, per host ([`HelperCache`]).
    pub cred_helpers: HelperCache,
    /// How long a request may make no progress ([`IDLE_TIMEOUT`]; shorter in tests).
    idle_timeout: Duration,
    /// What the process owes the registries before it exits, for [`Client::cleanups_done`]:
    /// open upload sessions ([`Client::cleanup_duty`]) and their deletes running on tasks
    /// of their own ([`Client::delete_in_background`]).
    cleanups: TaskTracker,
}

/// A client reads as the state it shares (`client.log`, `client.cache`); only `cancel` is
/// its own.
impl std::ops::Deref for Client {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.shared
    }
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
        let shared = Shared {
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
            cleanups: TaskTracker::new(),
        };
        let client = Client {
            shared: Arc::new(shared),
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

    /// This client with its requests, waits and body reads ended by `cancel` instead of its
    /// own cancellation. The view shares everything else: hosts and their auth state, HTTP
    /// clients, the gate, caches, credential helpers. So a request that must outlive the run
    /// ([`Client::delete_quietly`]) is still gated, authenticated (tokens fetched through the
    /// view) and kept to its origin's credentials like any other.
    pub fn under(&self, cancel: CancellationToken) -> Client {
        Client {
            shared: self.shared.clone(),
            cancel,
        }
    }

    /// This client with requests that may make no progress for `idle` (tests).
    #[cfg(test)]
    pub(crate) fn with_idle_timeout(mut self, idle: Duration) -> Client {
        Arc::get_mut(&mut self.shared)
            .expect("a client with no views yet")
            .idle_timeout = idle;
        self
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

    /// [`Client::send`] for a request that opens something the registry keeps until it is
    /// closed: an upload session (`POST .../blobs/uploads/`, also a mount the registry may
    /// answer with one). Once it is on its way, the run's cancellation does not cut it off: it
    /// gets [`CLEANUP_GRACE`] to answer, so its caller learns what it opened and closes it (a
    /// POST cut off in flight leaves its session to the registry's purge, a week later). Not
    /// sent at all once the run is cancelled: its wait for a slot, a token or a retry ends
    /// then, like any request's.
    ///
    /// What it opens is owed from the moment it is sent: the returned
    /// [`cleanup_duty`](Client::cleanup_duty) is held while the request runs and handed to the
    /// caller, who keeps it until the session is committed or its delete is under way (the
    /// exit's wait ends the moment no duty is held).
    pub async fn send_opening(
        &self,
        host: &Host,
        mut req: Request,
        accept: &[u16],
    ) -> Result<(Response, TaskTrackerToken), StoreError> {
        let duty = self.cleanup_duty();
        req.answer_grace = Some(CLEANUP_GRACE);
        let resp = self.send(host, req, accept).await?;
        Ok((resp, duty))
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
            mut scopes,
            keep_scopes,
            retries,
            answer_grace,
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
                auth.authorization(self, host, &scopes, keep_scopes).await?
            } else {
                None
            };
            let mut headers = headers.clone();
            if let Some(value) = &authorization {
                headers.insert(AUTHORIZATION, value.clone());
            }
            let resp = self
                .execute_with(
                    host,
                    RequestKind::of(&url),
                    &method,
                    &url,
                    headers,
                    &mut body,
                    retries,
                    answer_grace,
                )
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
                .on_challenge(
                    &url,
                    &challenges,
                    authorization.as_ref(),
                    &mut scopes,
                    self,
                    host,
                )
                .await;
            if !learned {
                return Err(err);
            }
            challenged = true;
        }
    }

    /// Best-effort `DELETE` (cancelling an upload session); failures are only logged. It
    /// is sent also when the run was cancelled (an upload stopped by a signal is the usual
    /// case), through a view of this client the run's cancellation does not end, and it is
    /// given [`CLEANUP_GRACE`] whether or not the run was cancelled: a target slow to answer
    /// must not hold the failure of the copy that opened the session, nor the exit.
    pub async fn delete_quietly(&self, host: &Host, url: Url, repo: &str) {
        let req = Request::repo(Method::DELETE, url, repo);
        let cleanup = self.under(CancellationToken::new());
        // Dropping the request when the grace is over ends it: its permit and connection go.
        let result = tokio::time::timeout(CLEANUP_GRACE, cleanup.send(host, req, &[200, 202, 204]))
            .await
            .unwrap_or(Err(StoreError::Canceled))
            .map(drop);
        if let Err(e) = result {
            debug!(self.log, "cancelling upload failed"; "error" => %e);
        }
    }

    /// A clean-up owed until the returned token is dropped (an upload session, from its
    /// `POST` until it is committed or deleted): [`Client::cleanups_done`] waits for it. A
    /// copy stopped by the run's cancellation may drop its upload only after the run's end
    /// (a task being aborted), and its session's delete must still be waited for.
    pub fn cleanup_duty(&self) -> TaskTrackerToken {
        self.cleanups.token()
    }

    /// [`Client::delete_quietly`] on a task of its own, for an upload session whose upload
    /// was dropped by its caller (a copy stopped by the run's cancellation drops its
    /// uploads); [`Client::cleanups_done`] waits for it. Outside a runtime there is nothing
    /// to run it on, and the session is left to the registry's purge.
    pub fn delete_in_background(&self, host: Arc<Host>, url: Url, repo: String) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let client = self.under(self.cancel.clone());
        self.cleanups.spawn_on(
            async move { client.delete_quietly(&host, url, &repo).await },
            &rt,
        );
    }

    /// Wait for the clean-ups owed ([`Client::cleanup_duty`]) and running in the background:
    /// a process that exits at the end of its run would drop them unsent. After the run's
    /// cancellation an upload ends at once and its delete within [`CLEANUP_GRACE`]. The wait
    /// itself is bounded by [`CLEANUP_GRACE`] too: at the end of a run no signal cancelled, a
    /// delete sent to a target that stopped answering would otherwise hold the exit for its
    /// retries and idle timeouts (minutes).
    pub async fn cleanups_done(&self) {
        // Closed only so that `wait` can end; later clean-ups are still tracked.
        self.cleanups.close();
        let _ = tokio::time::timeout(CLEANUP_GRACE, self.cleanups.wait()).await;
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
            let mut seen = self.warnings.lock().unwrap();
            if seen.contains(&text) {
                continue;
            }
            // A registry that puts a request id in its warnings makes every one distinct:
            // past the bound the set stops growing and new texts are logged at debug level
            // (the first ones were shown; a server running for months keeps a bounded set).
            if seen.len() < WARNINGS_KEPT {
                seen.insert(text.clone());
                drop(seen);
                warn!(self.log, "Registry warning message"; "warning" => text);
            } else {
                drop(seen);
                debug!(self.log, "Registry warning message"; "warning" => text);
            }
        }
    }
}
