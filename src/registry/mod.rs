//! The registry side of storage: HTTP client with auth, retries and pacing hooks, manifests,
//! blobs and listings over the distribution API. Knows nothing about sync steps.

mod auth;
mod blob;
pub mod cache;
mod client;
mod cred_helper;
mod docker_config;
mod header;
mod listing;
mod manifest;
mod origin;
mod referrers;
pub mod tag_delete;
mod tls;

pub(crate) use client::{error_chain, loggable};
pub use docker_config::docker_config_hosts;
pub(crate) use tls::plain_client;

use crate::oci::{Descriptor, Digest, Manifest};
use crate::reference::Reference;
use crate::store::{BlobStream, FallbackLocks, Store, StoreError};
use async_trait::async_trait;
use reqwest::header::HeaderMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How to reach one registry name (spec §3.3), after creds/docker-config merging.
/// Its `Debug` output hides the secrets, so it is safe in logs and test failures.
#[derive(Clone, Default, PartialEq)]
pub struct HostConfig {
    /// Registry name as used in references (`docker.io`, `127.0.0.1:5000`).
    pub name: String,
    /// DNS name[:port] actually contacted (`registry-1.docker.io` for Hub).
    pub hostname: String,
    pub tls: Tls,
    pub user: String,
    pub pass: String,
    /// Identity / refresh token for the bearer POST flow.
    pub token: String,
    /// Extra CA certificates (PEM text).
    pub regcert: String,
    pub client_cert: String,
    pub client_key: String,
    pub path_prefix: String,
    /// 0 means the default of 3.
    pub req_concurrent: i64,
    /// 0 means unlimited.
    pub req_per_sec: f64,
    /// Chunk size for chunked uploads; 0 means 1 MiB.
    pub blob_chunk: i64,
    /// Above this size use chunked upload directly; <= 0 disables.
    pub blob_max: i64,
    pub repo_auth: bool,
    pub disable_head: bool,
    /// Docker credential helper program (full name, e.g. `docker-credential-ecr-login`).
    pub cred_helper: String,
    /// How long helper credentials are cached, in nanoseconds; 0 means 1 h.
    pub cred_expire: i64,
    /// Name given to the helper instead of `hostname`.
    pub cred_host: String,
    /// Other registry names tried first for reads (spec §7.1).
    pub mirrors: Vec<String>,
    pub priority: u64,
    /// Do not trust `/etc/docker/certs.d/<hostname>/*.crt` (`defaults.skipDockerConfig`).
    pub skip_docker_certs: bool,
}

impl HostConfig {
    /// Defaults for a registry name never configured (TLS on, Hub aliases resolved).
    pub fn for_name(name: &str) -> Self {
        let hostname = if name == "docker.io" {
            "registry-1.docker.io".to_string()
        } else {
            name.to_string()
        };
        HostConfig {
            name: name.to_string(),
            hostname,
            ..Default::default()
        }
    }

    pub fn concurrency(&self) -> usize {
        if self.req_concurrent > 0 {
            // Bounded so an absurd value cannot overflow the semaphore.
            self.req_concurrent.min(1 << 16) as usize
        } else {
            3
        }
    }
}

impl std::fmt::Debug for HostConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = |s: &str| if s.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("HostConfig")
            .field("name", &self.name)
            .field("hostname", &self.hostname)
            .field("tls", &self.tls)
            .field("user", &self.user)
            .field("pass", &secret(&self.pass))
            .field("token", &secret(&self.token))
            .field("regcert", &self.regcert.len())
            .field("client_cert", &self.client_cert.len())
            .field("client_key", &secret(&self.client_key))
            .field("path_prefix", &self.path_prefix)
            .field("req_concurrent", &self.req_concurrent)
            .field("req_per_sec", &self.req_per_sec)
            .field("blob_chunk", &self.blob_chunk)
            .field("blob_max", &self.blob_max)
            .field("repo_auth", &self.repo_auth)
            .field("disable_head", &self.disable_head)
            .field("cred_helper", &self.cred_helper)
            .field("cred_expire", &self.cred_expire)
            .field("cred_host", &self.cred_host)
            .field("mirrors", &self.mirrors)
            .field("priority", &self.priority)
            .field("skip_docker_certs", &self.skip_docker_certs)
            .finish()
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tls {
    #[default]
    Enabled,
    Insecure,
    Disabled,
}

/// A permit to have one request open to a host; released on drop. It carries the meter the
/// request's body bytes are counted on (the gate's, per host), so a blob body streamed long
/// after the request was sent is still counted where its permit came from.
pub struct Permit {
    _slot: Box<dyn Send + Sync>,
    meter: Option<Arc<dyn TransferMeter>>,
}

impl Permit {
    /// A permit holding `slot` (a semaphore permit, a guard, or `()`) until it is dropped.
    pub fn new(slot: impl Send + Sync + 'static) -> Self {
        Permit {
            _slot: Box::new(slot),
            meter: None,
        }
    }

    /// The same permit, counting its request's bytes on `meter` (which it also holds).
    pub fn metered(mut self, meter: Arc<dyn TransferMeter>) -> Self {
        self.meter = Some(meter);
        self
    }

    /// `n` response body bytes were read.
    pub fn read(&self, n: u64) {
        if let Some(m) = &self.meter {
            m.read(n);
        }
    }

    /// `n` request body bytes were sent.
    pub fn written(&self, n: u64) {
        if let Some(m) = &self.meter {
            m.written(n);
        }
    }
}

/// Where a permit counts the body bytes of its request.
pub trait TransferMeter: Send + Sync {
    fn read(&self, n: u64);
    fn written(&self, n: u64);
}

/// What a registry request is for, by the distribution API's endpoints (spec §7): the
/// `kind` label of the request metrics, bounded by construction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RequestKind {
    /// `GET /v2/`.
    Ping,
    /// A bearer token from the realm of a challenge.
    Token,
    Manifest,
    /// A blob GET/HEAD (and a cross-repository mount's answer is an `Upload`).
    Blob,
    /// Upload sessions: `POST /blobs/uploads/`, their `PATCH`/`PUT`, and mounts.
    Upload,
    Tags,
    Catalog,
    Referrers,
}

impl RequestKind {
    pub const ALL: [RequestKind; 8] = [
        RequestKind::Ping,
        RequestKind::Token,
        RequestKind::Manifest,
        RequestKind::Blob,
        RequestKind::Upload,
        RequestKind::Tags,
        RequestKind::Catalog,
        RequestKind::Referrers,
    ];

    /// The kind of a distribution API URL (token fetches are told apart by their caller: a
    /// realm may live anywhere, Quay's under `/v2/auth`). The repository name may itself
    /// contain `blobs` or `manifests`, so only the path's tail decides.
    pub fn of(url: &url::Url) -> RequestKind {
        let path = url.path().trim_end_matches('/');
        if path.is_empty() || path == "/v2" {
            return RequestKind::Ping;
        }
        let mut tail = path.rsplit('/');
        let (last, second, third) = (tail.next(), tail.next(), tail.next());
        match (third, second, last) {
            (_, Some("v2"), Some("_catalog")) => RequestKind::Catalog,
            (_, Some("tags"), Some("list")) => RequestKind::Tags,
            (_, Some("blobs"), Some("uploads")) | (Some("blobs"), Some("uploads"), _) => {
                RequestKind::Upload
            }
            (_, Some("blobs"), _) => RequestKind::Blob,
            (_, Some("manifests"), _) => RequestKind::Manifest,
            (_, Some("referrers"), _) => RequestKind::Referrers,
            // An upload `Location` a registry made up (another path, another host).
            _ => RequestKind::Upload,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Ping => "ping",
            RequestKind::Token => "token",
            RequestKind::Manifest => "manifest",
            RequestKind::Blob => "blob",
            RequestKind::Upload => "upload",
            RequestKind::Tags => "tags",
            RequestKind::Catalog => "catalog",
            RequestKind::Referrers => "referrers",
        }
    }
}

/// One send of a request, as the gate is told of it.
#[derive(Clone, Copy, Debug)]
pub struct Exchange<'a> {
    pub method: &'a reqwest::Method,
    pub kind: RequestKind,
    /// From the send to the response headers (or the failure).
    pub elapsed: Duration,
    /// The sends of this request before this one (0 = its first).
    pub attempt: u32,
}

/// What became of one send of a request, as the gate sees it. `exchange.attempt` counts the sends of
/// that request before this one (0 = its first): retries of one failing request back off on
/// that request; only failures across distinct requests (or a 429 / `Retry-After`) say the
/// host itself is unwell.
#[derive(Clone, Copy, Debug)]
pub enum HostEvent<'a> {
    /// The host answered, with any status.
    Answered {
        status: u16,
        headers: &'a HeaderMap,
        exchange: Exchange<'a>,
    },
    /// No answer: connection error or timeout.
    Unreachable { exchange: Exchange<'a> },
}

/// The hook through which every HTTP request passes: the engine's per-host throttler decides
/// when a request may go (`reqConcurrent`, `reqPerSec`, pauses and the host's backoff) and
/// sees what became of it. The registry layer itself never limits a host; it only backs off
/// one failing request.
#[async_trait]
pub trait RequestGate: Send + Sync {
    /// Wait for a request slot on `host`; `None` once `cancel` fires.
    async fn acquire(&self, host: &HostConfig, cancel: &CancellationToken) -> Option<Permit>;
    fn observe(&self, _host: &HostConfig, _event: HostEvent<'_>) {}
    /// When the host's current pause ends, if it is paused: reads try the hosts that are not
    /// paused first (spec §7.1 host order).
    async fn paused_until(&self, _host: &HostConfig) -> Option<Instant> {
        None
    }
}

/// A gate that lets everything through (unit tests, tools).
pub struct OpenGate;

#[async_trait]
impl RequestGate for OpenGate {
    async fn acquire(&self, _host: &HostConfig, cancel: &CancellationToken) -> Option<Permit> {
        (!cancel.is_cancelled()).then(|| Permit::new(()))
    }
}

/// Statuses worth sending again: the server (or a proxy) says "not now", not "no". regsync
/// does not retry 503 (spec §16); Docker Hub and GHCR answer it for passing overloads, so a
/// mirror does better to wait and ask again (README "Retries").
pub const RETRY_STATUSES: [u16; 6] = [408, 429, 500, 502, 503, 504];
/// The first delay of the backoff schedule.
pub const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// The longest delay of the backoff schedule.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The backoff schedule (spec §7.3), for a request's retries and a host's failures alike:
/// 100 ms doubling per step, at most 30 s. `step` 0 is the first delay.
pub fn backoff(step: u32) -> Duration {
    BACKOFF_BASE
        .saturating_mul(1u32 << step.min(20))
        .min(BACKOFF_MAX)
}

/// `Retry-After` as seconds or an HTTP date (a date in the past is zero).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// Errors building a [`RegistryStore`] or reading registry credentials.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry {registry:?}: invalid client certificate or key: {detail}")]
    ClientCert { registry: String, detail: String },
    #[error("registry {registry:?}: cannot set up the HTTP client: {detail}")]
    HttpClient { registry: String, detail: String },
    #[error("Failed to load docker creds from {source_name}: {detail}")]
    DockerConfig { source_name: String, detail: String },
}

/// Store-wide settings of a [`RegistryStore`].
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    /// `User-Agent` of every request (and the bearer `client_id`).
    pub user_agent: String,
    /// `defaults.cacheCount`: entries per cache table (spec §7.4).
    pub cache_count: i64,
    /// `defaults.cacheTime`: how long an entry lives after it was stored (a hit does not
    /// extend it). The cache is on only when both this and `cache_count` are > 0.
    pub cache_time: Duration,
    /// The run's cancellation: every request, retry wait and pause ends with
    /// `StoreError::Canceled` once it fires.
    pub cancel: CancellationToken,
}

impl RegistryOptions {
    pub fn new(user_agent: impl Into<String>) -> Self {
        RegistryOptions {
            user_agent: user_agent.into(),
            ..Default::default()
        }
    }

    /// `defaults.cacheCount` and `defaults.cacheTime` as the config holds them (a Go duration
    /// string; empty, invalid or negative means off).
    pub fn with_cache(mut self, count: i64, time: &str) -> Self {
        self.cache_count = count;
        self.cache_time = crate::gocompat::duration::duration_of(time).to_std_saturating();
        self
    }

    pub fn with_cancel(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }
}

/// [`Store`] over the distribution API. Hosts are looked up by `Reference::registry`; names
/// without an entry get [`HostConfig::for_name`].
pub struct RegistryStore {
    client: Arc<client::Client>,
    /// Which repositories have the referrers API, as learned by this store.
    referrers_api: referrers::ApiMemory,
    /// The subjects' fallback referrers indexes this store rewrites.
    fallback_locks: FallbackLocks,
}

impl RegistryStore {
    pub fn new(
        hosts: Vec<HostConfig>,
        gate: Arc<dyn RequestGate>,
        options: RegistryOptions,
        log: slog::Logger,
    ) -> Result<RegistryStore, RegistryError> {
        let client = client::Client::new(hosts, gate, options, log)?;
        Ok(RegistryStore::with_client(Arc::new(client)))
    }

    /// A store over `client`, knowing nothing yet about its registries.
    fn with_client(client: Arc<client::Client>) -> RegistryStore {
        RegistryStore {
            client,
            referrers_api: referrers::ApiMemory::default(),
            fallback_locks: FallbackLocks::default(),
        }
    }

    /// Wait for the clean-ups the client owes: after the run's cancellation its open upload
    /// sessions end at once and each is deleted within a few seconds (the client's
    /// `CLEANUP_GRACE`), also when the copy holding it was dropped.
    pub async fn cleanups_done(&self) {
        self.client.cleanups_done().await;
    }

    /// Whether manifests read by digest may be answered from the cache (`cacheCount` and
    /// `cacheTime` both set).
    pub fn manifest_cache_on(&self) -> bool {
        self.client.cache.enabled()
    }

    /// The host whose request slots a registry name uses (throttlers are per hostname, and
    /// two names may be aliases of one host).
    pub fn slot_host(&self, registry: &str) -> String {
        self.client.host(registry).config.hostname.clone()
    }

    /// The settings of the host a registry name uses (for its throttler).
    pub fn host_config(&self, registry: &str) -> HostConfig {
        self.client.host(registry).config.clone()
    }

    /// Every host a read of `registry` may be served by: its mirrors and itself (spec §7.1),
    /// in no particular order.
    pub fn read_host_configs(&self, registry: &str) -> Vec<HostConfig> {
        let upstream = self.client.host(registry).config.clone();
        let mut hosts: Vec<HostConfig> = upstream
            .mirrors
            .iter()
            .map(|m| m.trim())
            .filter(|m| !m.is_empty())
            .map(|m| self.client.host(m).config.clone())
            .collect();
        hosts.push(upstream);
        hosts
    }
}

#[async_trait]
impl Store for RegistryStore {
    fn fallback_locks(&self) -> &FallbackLocks {
        &self.fallback_locks
    }

    async fn manifest_head(&self, r: &Reference) -> Result<Option<Descriptor>, StoreError> {
        manifest::head(&self.client, r).await
    }

    async fn manifest_get(&self, r: &Reference) -> Result<Manifest, StoreError> {
        manifest::get(&self.client, r).await
    }

    /// `child` only matters to layouts: a registry stores every manifest the same way.
    async fn manifest_put(
        &self,
        r: &Reference,
        m: &Manifest,
        _child: bool,
    ) -> Result<(), StoreError> {
        manifest::put(&self.client, r, m).await
    }

    async fn blob_head(&self, repo: &Reference, digest: &Digest) -> Result<bool, StoreError> {
        blob::head(&self.client, repo, digest).await
    }

    async fn blob_get(
        &self,
        repo: &Reference,
        desc: &Descriptor,
    ) -> Result<BlobStream, StoreError> {
        blob::get(self.client.clone(), repo, desc).await
    }

    async fn blob_put(
        &self,
        repo: &Reference,
        desc: &Descriptor,
        body: BlobStream,
    ) -> Result<(), StoreError> {
        blob::put(self.client.clone(), repo, desc, body).await
    }

    async fn blob_mount(
        &self,
        repo: &Reference,
        from: &Reference,
        digest: &Digest,
    ) -> Result<bool, StoreError> {
        blob::mount(&self.client, repo, from, digest).await
    }

    async fn tag_list(
        &self,
        repo: &Reference,
        pages: mpsc::Sender<Vec<String>>,
    ) -> Result<(), StoreError> {
        listing::tag_list(&self.client, repo, pages).await
    }

    async fn catalog(
        &self,
        registry: &Reference,
        pages: mpsc::Sender<Vec<String>>,
    ) -> Result<(), StoreError> {
        listing::catalog(&self.client, registry, pages).await
    }

    async fn referrers(
        &self,
        repo: &Reference,
        subject: &Digest,
    ) -> Result<crate::store::Referrers, StoreError> {
        referrers::list(self, repo, subject).await
    }

    async fn referrer_added(
        &self,
        repo: &Reference,
        subject: &Digest,
        entry: &Descriptor,
    ) -> Result<bool, StoreError> {
        referrers::added(self, repo, subject, entry).await
    }

    async fn tag_delete(&self, r: &Reference) -> Result<(), StoreError> {
        tag_delete::tag_delete(&self.client, r).await
    }

    async fn manifest_delete(&self, r: &Reference) -> Result<(), StoreError> {
        tag_delete::manifest_delete(&self.client, r).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_kinds_come_from_the_path_tail_whatever_the_repository_or_tag() {
        let kind =
            |path: &str| RequestKind::of(&url::Url::parse(&format!("https://r{path}")).unwrap());
        for (path, want) in [
            ("/v2/", RequestKind::Ping),
            ("/v2", RequestKind::Ping),
            ("/v2/_catalog?n=100", RequestKind::Catalog),
            ("/v2/a/b/tags/list?n=10", RequestKind::Tags),
            // A tag named like the API version, a repository named like an endpoint.
            ("/v2/alpha/manifests/v2", RequestKind::Manifest),
            ("/v2/blobs/manifests/latest", RequestKind::Manifest),
            ("/v2/x/manifests/sha256:ab", RequestKind::Manifest),
            ("/v2/x/blobs/sha256:ab", RequestKind::Blob),
            ("/v2/x/blobs/uploads/", RequestKind::Upload),
            (
                "/v2/x/blobs/uploads/?mount=sha256:ab&from=y",
                RequestKind::Upload,
            ),
            (
                "/v2/x/blobs/uploads/5e1a-uuid?_state=z",
                RequestKind::Upload,
            ),
            ("/v2/x/referrers/sha256:ab", RequestKind::Referrers),
            ("/upload/session/abc", RequestKind::Upload),
        ] {
            assert_eq!(kind(path), want, "{path}");
        }
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(3), Duration::from_millis(800));
        assert_eq!(backoff(12), BACKOFF_MAX);
        assert_eq!(backoff(40), BACKOFF_MAX);
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        use reqwest::header::{HeaderValue, RETRY_AFTER};
        let h =
            |v: &'static str| HeaderMap::from_iter([(RETRY_AFTER, HeaderValue::from_static(v))]);
        assert_eq!(retry_after(&h("7")), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_after(&h("Wed, 21 Oct 2015 07:28:00 GMT")),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&h("soon")), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn host_config_debug_hides_secrets() {
        let h = HostConfig {
            user: "alice".into(),
            pass: "hunter2".into(),
            token: "tok3n".into(),
            client_key: "-----BEGIN PRIVATE KEY-----".into(),
            ..HostConfig::for_name("r.io")
        };
        let text = format!("{h:?}");
        assert!(text.contains("alice") && text.contains("r.io"), "{text}");
        for secret in ["hunter2", "tok3n", "PRIVATE KEY"] {
            assert!(!text.contains(secret), "{text}");
        }
    }
}
