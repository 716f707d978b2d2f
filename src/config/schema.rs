//! The regsync YAML schema (spec §3.2–3.5). Field names follow regsync's YAML keys; unknown keys
//! (including `x-` anchor holders) are ignored.
//!
//! Scalar conversion (spec §3.1): every string field (and string list / string map) accepts YAML
//! integers, floats, booleans and null and stores their text (`3.10` → `"3.1"`, `true` →
//! `"true"`, null → `""`); integer fields accept numeric strings; boolean fields are strict;
//! duration fields must be strings (Go duration syntax, checked by `config::validate` and
//! rewritten in Go's canonical form, e.g. `60m` → `1h0m0s`, at load).

use super::de;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A list that `defaults` (or the built-in default) gives to every step that leaves it out.
/// Merging hands each such step the same list instead of a copy: with one step per repository,
/// the copies of `mediaTypes` and `cleanupTagsExclude` were a sixth of what a run kept per
/// step (issue 11, memory flat as the catalog grows).
pub type StringList = Arc<[String]>;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Config {
    #[serde(deserialize_with = "de::int")]
    pub version: i64,
    pub creds: Vec<CredsEntry>,
    pub defaults: Defaults,
    /// Shared, not copied, by every run's step contexts (a config of one step per repository
    /// holds thousands).
    pub sync: Vec<Arc<SyncStep>>,
}

/// One `creds[]` entry, as written (host defaults are applied when building `HostConfig`,
/// see `config::merge_hosts`). `tls` is kept as text (`enabled|insecure|disabled|""`, lowered at
/// load after validation).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct CredsEntry {
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "de::string"
    )]
    pub registry: String,
    #[serde(deserialize_with = "de::string")]
    pub hostname: String,
    #[serde(deserialize_with = "de::string")]
    pub user: String,
    #[serde(deserialize_with = "de::string")]
    pub pass: String,
    #[serde(deserialize_with = "de::string")]
    pub token: String,
    #[serde(deserialize_with = "de::string")]
    pub cred_helper: String,
    /// Nanoseconds (an integer in YAML, spec §3.1 quirk); 0 = 1h when a helper is used.
    #[serde(deserialize_with = "de::int")]
    pub cred_expire: i64,
    #[serde(deserialize_with = "de::string")]
    pub cred_host: String,
    #[serde(deserialize_with = "de::string")]
    pub tls: String,
    #[serde(deserialize_with = "de::string")]
    pub regcert: String,
    #[serde(deserialize_with = "de::string")]
    pub client_cert: String,
    #[serde(deserialize_with = "de::string")]
    pub client_key: String,
    #[serde(deserialize_with = "de::string")]
    pub path_prefix: String,
    #[serde(deserialize_with = "de::string_vec")]
    pub mirrors: Vec<String>,
    #[serde(deserialize_with = "de::uint")]
    pub priority: u64,
    #[serde(deserialize_with = "de::boolean")]
    pub repo_auth: bool,
    #[serde(deserialize_with = "de::string_map")]
    pub api_opts: BTreeMap<String, String>,
    #[serde(deserialize_with = "de::int")]
    pub blob_chunk: i64,
    #[serde(deserialize_with = "de::int")]
    pub blob_max: i64,
    #[serde(deserialize_with = "de::float")]
    pub req_per_sec: f64,
    #[serde(deserialize_with = "de::int")]
    pub req_concurrent: i64,
    #[serde(deserialize_with = "de::string")]
    pub api: String,
    #[serde(deserialize_with = "de::string")]
    pub scheme: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RateLimit {
    #[serde(deserialize_with = "de::int")]
    pub min: i64,
    /// Go duration text (`5m0s`); raised to 5m when lower (spec §3.6).
    #[serde(deserialize_with = "de::duration")]
    pub retry: String,
}

/// A hook (`{type, params[]}`): `type` is `cmd` or `http` (checked at load by
/// `config::validate`), run per image by `crate::hooks` (README "Hooks"; regsync parses hooks
/// but never runs them, spec §16.4).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Hook {
    #[serde(rename = "type", deserialize_with = "de::string")]
    pub kind: String,
    #[serde(deserialize_with = "de::string_vec")]
    pub params: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Hooks {
    pub pre: Option<Hook>,
    pub post: Option<Hook>,
    pub unchanged: Option<Hook>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Defaults {
    #[serde(deserialize_with = "de::int")]
    pub parallel: i64,
    /// Go duration text.
    #[serde(deserialize_with = "de::duration")]
    pub interval: String,
    #[serde(deserialize_with = "de::string")]
    pub schedule: String,
    #[serde(deserialize_with = "de::string")]
    pub backup: String,
    pub ratelimit: RateLimit,
    #[serde(deserialize_with = "de::string_list")]
    pub media_types: StringList,
    pub digest_tags: Option<bool>,
    pub referrers: Option<bool>,
    pub referrer_slow: Option<bool>,
    pub fast_check: Option<bool>,
    pub force_recursive: Option<bool>,
    pub include_external: Option<bool>,
    pub referrer_filters: Option<Vec<ReferrerFilter>>,
    #[serde(deserialize_with = "de::string")]
    pub referrer_source: String,
    #[serde(deserialize_with = "de::string")]
    pub referrer_target: String,
    pub hooks: Hooks,
    #[serde(deserialize_with = "de::int")]
    pub blob_limit: i64,
    #[serde(deserialize_with = "de::int")]
    pub cache_count: i64,
    /// Go duration text.
    #[serde(deserialize_with = "de::duration")]
    pub cache_time: String,
    #[serde(deserialize_with = "de::boolean")]
    pub skip_docker_config: bool,
    #[serde(deserialize_with = "de::string")]
    pub user_agent: String,
    /// Pruning (README "Pruning"): the names of regclient PR #1010.
    pub cleanup_tags: Option<bool>,
    #[serde(default, deserialize_with = "de::opt_string_list")]
    pub cleanup_tags_exclude: Option<StringList>,
    #[serde(default, deserialize_with = "de::opt_int")]
    pub cleanup_tags_max_percent: Option<i64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct TagFilter {
    #[serde(deserialize_with = "de::string_vec")]
    pub allow: Vec<String>,
    #[serde(deserialize_with = "de::string_vec")]
    pub deny: Vec<String>,
    #[serde(deserialize_with = "de::string_vec")]
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
    #[serde(deserialize_with = "de::string_vec")]
    pub allow: Vec<String>,
    #[serde(deserialize_with = "de::string_vec")]
    pub deny: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct ReferrerFilter {
    #[serde(deserialize_with = "de::string")]
    pub artifact_type: String,
    #[serde(deserialize_with = "de::string_map")]
    pub annotations: BTreeMap<String, String>,
}

/// One `sync[]` step. After loading, defaults are merged in (`config::defaults`), so the
/// booleans here are final.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct SyncStep {
    #[serde(deserialize_with = "de::string")]
    pub source: String,
    #[serde(deserialize_with = "de::string")]
    pub target: String,
    #[serde(rename = "type", deserialize_with = "de::string")]
    pub kind: String,
    pub tags: TagFilter,
    pub tag_sets: Vec<TagFilter>,
    pub repos: RepoFilter,
    #[serde(deserialize_with = "de::string")]
    pub platform: String,
    #[serde(deserialize_with = "de::string_vec")]
    pub platforms: Vec<String>,
    pub digest_tags: Option<bool>,
    pub referrers: Option<bool>,
    pub referrer_slow: Option<bool>,
    pub fast_check: Option<bool>,
    pub force_recursive: Option<bool>,
    pub include_external: Option<bool>,
    pub referrer_filters: Option<Vec<ReferrerFilter>>,
    #[serde(deserialize_with = "de::string")]
    pub referrer_source: String,
    #[serde(deserialize_with = "de::string")]
    pub referrer_target: String,
    #[serde(deserialize_with = "de::string")]
    pub backup: String,
    /// Go duration text.
    #[serde(deserialize_with = "de::duration")]
    pub interval: String,
    #[serde(deserialize_with = "de::string")]
    pub schedule: String,
    pub ratelimit: RateLimit,
    #[serde(deserialize_with = "de::string_list")]
    pub media_types: StringList,
    pub hooks: Hooks,
    /// Delete target tags this step wrote once they are no longer selected (README
    /// "Pruning"). Merged from `defaults`: always `Some` after loading.
    pub cleanup_tags: Option<bool>,
    /// Target tags never pruned (anchored regexes); after merging, the step's, else the
    /// defaults', else [`DEFAULT_CLEANUP_EXCLUDE`].
    #[serde(default, deserialize_with = "de::opt_string_list")]
    pub cleanup_tags_exclude: Option<StringList>,
    /// The most a run may prune, in percent of the step's managed tags of a repository
    /// (default 25).
    #[serde(default, deserialize_with = "de::opt_int")]
    pub cleanup_tags_max_percent: Option<i64>,
}

/// `cleanupTagsExclude` when neither the step nor `defaults` sets it: signatures,
/// attestations and SBOMs stored as tags.
pub const DEFAULT_CLEANUP_EXCLUDE: [&str; 3] = [".*\\.sig$", ".*\\.att$", ".*\\.sbom$"];

/// `cleanupTagsMaxPercent` when neither the step nor `defaults` sets it.
pub const DEFAULT_CLEANUP_MAX_PERCENT: i64 = 25;

impl SyncStep {
    pub fn flag(v: Option<bool>) -> bool {
        v.unwrap_or(false)
    }
}
