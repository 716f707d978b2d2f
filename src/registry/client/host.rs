//! A registry name as the client reaches it: its settings, URLs (`pathPrefix`, spec §3.3),
//! shared HTTP client and auth state.

use super::super::auth::Auth;
use super::super::{HostConfig, Tls};
use super::Request;
use crate::store::StoreError;
use reqwest::Method;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use url::Url;

/// Per-repository auth states (`repoAuth`) kept at most; see [`Host::auth`].
pub(super) const AUTH_STATES: usize = 1_000;

/// A registry name's connection settings, HTTP client and auth state.
pub(crate) struct Host {
    pub config: HostConfig,
    pub(super) http: reqwest::Client,
    /// One auth state per host, or per repository with `repoAuth` (spec §8.4), bounded.
    auth: Mutex<HashMap<String, Arc<Auth>>>,
}

impl Host {
    pub(super) fn new(mut config: HostConfig, http: reqwest::Client) -> Self {
        if config.hostname.is_empty() {
            config.hostname = HostConfig::for_name(&config.name).hostname;
        }
        Host {
            config,
            http,
            auth: Mutex::new(HashMap::new()),
        }
    }

    /// The auth state for a request on `repo`. With `repoAuth` there is one per repository,
    /// at most [`AUTH_STATES`] kept: a full table forgets the states no request is using.
    /// That is safe: a forgotten repository's next request is challenged and fetches its
    /// token again, as its first one did, while a state in use stays, so concurrent requests
    /// keep sharing one token fetch (the table never holds more than the bound plus the
    /// requests in flight).
    pub(super) fn auth(&self, repo: &str) -> Arc<Auth> {
        let key = if self.config.repo_auth { repo } else { "" };
        let mut states = self.auth.lock().unwrap();
        if let Some(state) = states.get(key) {
            return state.clone();
        }
        if states.len() >= AUTH_STATES {
            states.retain(|_, state| Arc::strong_count(state) > 1);
        }
        states.entry(key.to_string()).or_default().clone()
    }

    #[cfg(test)]
    pub(super) fn auth_states(&self) -> usize {
        self.auth.lock().unwrap().len()
    }

    /// The origin the host's credentials belong to.
    pub(super) fn origin_url(&self) -> Option<Url> {
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
