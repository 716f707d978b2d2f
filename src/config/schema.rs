//! The regsync YAML schema (spec §3.2–3.5). Field names follow regsync's YAML keys; unknown keys
//! (including `x-` anchor holders) are ignored.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Config {
    pub version: i64,
    pub creds: Vec<CredsEntry>,
    pub defaults: Defaults,
    pub sync: Vec<SyncStep>,
}

/// One `creds[]` entry, as written (host defaults are applied when building `HostConfig`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct CredsEntry {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub registry: String,
    pub hostname: String,
    pub user: String,
    pub pass: String,
    pub token: String,
    pub cred_helper: String,
    pub cred_expire: i64,
    pub cred_host: String,
    pub tls: String,
    pub regcert: String,
    pub client_cert: String,
    pub client_key: String,
    pub path_prefix: String,
    pub mirrors: Vec<String>,
    pub priority: u64,
    pub repo_auth: bool,
    pub api_opts: BTreeMap<String, String>,
    pub blob_chunk: i64,
    pub blob_max: i64,
    pub req_per_sec: f64,
    pub req_concurrent: i64,
    pub api: String,
    pub scheme: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RateLimit {
    pub min: i64,
    /// Go duration text (`5m`); raised to 5m when lower (spec §3.6).
    pub retry: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Defaults {
    pub parallel: i64,
    pub interval: String,
    pub schedule: String,
    pub backup: String,
    pub ratelimit: RateLimit,
    pub media_types: Vec<String>,
    pub digest_tags: Option<bool>,
    pub referrers: Option<bool>,
    pub referrer_slow: Option<bool>,
    pub fast_check: Option<bool>,
    pub force_recursive: Option<bool>,
    pub include_external: Option<bool>,
    pub referrer_filters: Option<Vec<ReferrerFilter>>,
    pub referrer_source: String,
    pub referrer_target: String,
    pub blob_limit: i64,
    pub cache_count: i64,
    pub cache_time: String,
    pub skip_docker_config: bool,
    pub user_agent: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct TagFilter {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    pub semver_range: Vec<String>,
}

impl TagFilter {
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty() && self.semver_range.is_empty()
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RepoFilter {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct ReferrerFilter {
    pub artifact_type: String,
    pub annotations: BTreeMap<String, String>,
}

/// One `sync[]` step. After loading, defaults are merged in (`config::defaults`), so the
/// booleans here are final.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct SyncStep {
    pub source: String,
    pub target: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub tags: TagFilter,
    pub tag_sets: Vec<TagFilter>,
    pub repos: RepoFilter,
    pub platform: String,
    pub platforms: Vec<String>,
    pub digest_tags: Option<bool>,
    pub referrers: Option<bool>,
    pub referrer_slow: Option<bool>,
    pub fast_check: Option<bool>,
    pub force_recursive: Option<bool>,
    pub include_external: Option<bool>,
    pub referrer_filters: Option<Vec<ReferrerFilter>>,
    pub referrer_source: String,
    pub referrer_target: String,
    pub backup: String,
    pub interval: String,
    pub schedule: String,
    pub ratelimit: RateLimit,
    pub media_types: Vec<String>,
}

impl SyncStep {
    pub fn flag(v: Option<bool>) -> bool {
        v.unwrap_or(false)
    }
}
