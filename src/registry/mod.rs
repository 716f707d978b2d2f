//! The registry side of storage: HTTP client with auth, retries and pacing hooks, manifests,
//! blobs and listings over the distribution API. Knows nothing about sync steps.

use async_trait::async_trait;
use reqwest::header::HeaderMap;

/// How to reach one registry name (spec §3.3), after creds/docker-config merging.
#[derive(Clone, Debug, Default, PartialEq)]
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
            self.req_concurrent as usize
        } else {
            3
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tls {
    #[default]
    Enabled,
    Insecure,
    Disabled,
}

/// A permit to have one request open to a host; released on drop.
pub type Permit = Box<dyn Send + Sync>;

/// The hook through which every HTTP request passes: the engine's per-host throttler decides
/// when a request may go (`reqConcurrent`, `reqPerSec`), and the rate-limit watcher sees every
/// response. The registry layer itself never limits anything.
#[async_trait]
pub trait RequestGate: Send + Sync {
    async fn acquire(&self, host: &HostConfig) -> Permit;
    fn observe(&self, _host: &HostConfig, _status: u16, _headers: &HeaderMap) {}
}

/// A gate that lets everything through (unit tests, tools).
pub struct OpenGate;

#[async_trait]
impl RequestGate for OpenGate {
    async fn acquire(&self, _host: &HostConfig) -> Permit {
        Box::new(())
    }
}
