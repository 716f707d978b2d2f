//! Host entries → per-registry [`HostConfig`] table (spec §3.3 "Merging").
//!
//! The table starts with the built-in Docker Hub entry, then merges the Docker config entries
//! (unless `skipDockerConfig`), then the `creds` entries in file order, exactly as regclient's
//! `Host.Merge` does: each non-empty field of an entry overwrites the table's value, with a
//! warning when a value already set on an existing entry changes.

use super::schema::CredsEntry;
use super::validate::{parse_tls, tls_text};
use crate::registry::{HostConfig, Tls};
use std::collections::BTreeMap;
use std::fmt;

/// Registry name used in references for Docker Hub.
pub const DOCKER_REGISTRY: &str = "docker.io";
/// Name Docker's config.json uses for Hub.
pub const DOCKER_REGISTRY_AUTH: &str = "https://index.docker.io/v1/";
/// Host actually contacted for Hub.
pub const DOCKER_REGISTRY_DNS: &str = "registry-1.docker.io";

/// One warning of the merge: a fixed message (`Changing login user for registry`) and its
/// fields (`host`, `orig`, `new`, ...). Secrets never appear in the fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostWarning {
    pub msg: &'static str,
    pub fields: Vec<(&'static str, String)>,
}

impl HostWarning {
    fn new(msg: &'static str, fields: &[(&'static str, &str)]) -> Self {
        HostWarning {
            msg,
            fields: fields.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        }
    }

    /// Log at WARN with the message as `msg` and each field as its own key.
    pub fn log(&self, log: &slog::Logger) {
        slog::warn!(log, "{}", self.msg; Fields(&self.fields));
    }
}

/// `Changing login user for registry: host=x orig=a new=b`
impl fmt::Display for HostWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.msg)?;
        for (i, (k, v)) in self.fields.iter().enumerate() {
            write!(f, "{}{k}={v}", if i == 0 { ": " } else { " " })?;
        }
        Ok(())
    }
}

struct Fields<'a>(&'a [(&'static str, String)]);

impl slog::KV for Fields<'_> {
    fn serialize(&self, _r: &slog::Record, s: &mut dyn slog::Serializer) -> slog::Result {
        for (k, v) in self.0 {
            s.emit_str(k, v)?;
        }
        Ok(())
    }
}

/// Defaults for a `registry` value as written (regclient's `HostNewName`): Hub aliases →
/// `docker.io` / `registry-1.docker.io` with credHost `https://index.docker.io/v1/`; a
/// `scheme://` prefix is removed (`http` → TLS disabled); any path after the host is dropped;
/// hostname = name; a value that was not already the bare name is kept as credHost.
pub fn host_for_registry(registry: &str) -> HostConfig {
    if registry == DOCKER_REGISTRY
        || registry == DOCKER_REGISTRY_DNS
        || registry == DOCKER_REGISTRY_AUTH
    {
        return hub_entry();
    }
    let mut name = registry;
    let mut tls = Tls::Enabled;
    if let Some(i) = name.find("://").filter(|&i| i > 0) {
        if &name[..i] == "http" {
            tls = Tls::Disabled;
        }
        name = &name[i + 3..];
    }
    if let Some(i) = name.find('/').filter(|&i| i > 0) {
        name = &name[..i];
    }
    if name == DOCKER_REGISTRY {
        return HostConfig { tls, ..hub_entry() };
    }
    HostConfig {
        tls,
        cred_host: if name != registry {
            registry.to_string()
        } else {
            String::new()
        },
        ..HostConfig::for_name(name)
    }
}

/// The built-in Docker Hub entry every table starts with.
fn hub_entry() -> HostConfig {
    HostConfig {
        cred_host: DOCKER_REGISTRY_AUTH.to_string(),
        ..HostConfig::for_name(DOCKER_REGISTRY)
    }
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// One entry to merge (regclient's `config.Host` as read): empty/zero/None means "not set".
#[derive(Default)]
struct NewHost {
    name: String,
    hostname: String,
    tls: Option<Tls>,
    user: String,
    pass: String,
    token: String,
    cred_helper: String,
    cred_expire: i64,
    cred_host: String,
    regcert: String,
    client_cert: String,
    client_key: String,
    path_prefix: String,
    mirrors: Vec<String>,
    priority: u64,
    repo_auth: bool,
    api: String,
    api_opts: BTreeMap<String, String>,
    blob_chunk: i64,
    blob_max: i64,
    req_per_sec: f64,
    req_concurrent: i64,
}

impl NewHost {
    fn from_creds(e: &CredsEntry, warnings: &mut Vec<HostWarning>) -> NewHost {
        let tls = match parse_tls(&e.tls) {
            Ok(t) => t,
            // Rejected at load; kept as a warning for tables built from unvalidated entries.
            Err(err) => {
                warnings.push(HostWarning {
                    msg: "Ignoring invalid TLS setting for registry",
                    fields: vec![("host", e.registry.clone()), ("err", err)],
                });
                None
            }
        };
        NewHost {
            name: e.registry.clone(),
            hostname: e.hostname.clone(),
            tls,
            user: e.user.clone(),
            pass: e.pass.clone(),
            token: e.token.clone(),
            cred_helper: e.cred_helper.clone(),
            cred_expire: e.cred_expire,
            cred_host: e.cred_host.clone(),
            regcert: e.regcert.clone(),
            client_cert: e.client_cert.clone(),
            client_key: e.client_key.clone(),
            path_prefix: e.path_prefix.clone(),
            mirrors: e.mirrors.clone(),
            priority: e.priority,
            repo_auth: e.repo_auth,
            api: e.api.clone(),
            api_opts: e.api_opts.clone(),
            blob_chunk: e.blob_chunk,
            blob_max: e.blob_max,
            req_per_sec: e.req_per_sec,
            req_concurrent: e.req_concurrent,
        }
    }

    /// A Docker config entry (name, hostname, TLS and credentials always set by its reader).
    fn from_host(h: &HostConfig) -> NewHost {
        let mut api_opts = BTreeMap::new();
        if h.disable_head {
            api_opts.insert("disableHead".to_string(), "true".to_string());
        }
        NewHost {
            name: h.name.clone(),
            hostname: h.hostname.clone(),
            tls: Some(h.tls),
            user: h.user.clone(),
            pass: h.pass.clone(),
            token: h.token.clone(),
            cred_helper: h.cred_helper.clone(),
            cred_expire: h.cred_expire,
            cred_host: h.cred_host.clone(),
            regcert: h.regcert.clone(),
            client_cert: h.client_cert.clone(),
            client_key: h.client_key.clone(),
            path_prefix: h.path_prefix.clone(),
            mirrors: h.mirrors.clone(),
            priority: h.priority,
            repo_auth: h.repo_auth,
            api: String::new(),
            api_opts,
            blob_chunk: h.blob_chunk,
            blob_max: h.blob_max,
            req_per_sec: h.req_per_sec,
            req_concurrent: h.req_concurrent,
        }
    }
}

/// A table row while merging: the host and its `apiOpts` as text.
struct Row {
    host: HostConfig,
    api_opts: BTreeMap<String, String>,
}

/// The merged table. Hub is pre-set (so merges into it warn like into any existing entry)
/// but only listed once an entry names it.
struct Table {
    rows: Vec<Row>,
    hub: Option<Row>,
    warnings: Vec<HostWarning>,
}

impl Table {
    fn new() -> Self {
        Table {
            rows: Vec::new(),
            hub: Some(Row {
                host: hub_entry(),
                api_opts: BTreeMap::new(),
            }),
            warnings: Vec::new(),
        }
    }

    fn merge(&mut self, mut new: NewHost) {
        if new.name.is_empty() {
            let mut fields = vec![];
            if !new.hostname.is_empty() {
                fields.push(("hostname", new.hostname.clone()));
            }
            if !new.user.is_empty() {
                fields.push(("user", new.user.clone()));
            }
            self.warnings.push(HostWarning {
                msg: "Ignoring registry config without a name",
                fields,
            });
            return;
        }
        // regclient's hostLoad: Hub's names become `docker.io`, its hostname the DNS name.
        if new.name == DOCKER_REGISTRY
            || new.name == DOCKER_REGISTRY_DNS
            || new.name == DOCKER_REGISTRY_AUTH
        {
            new.name = DOCKER_REGISTRY.to_string();
            if new.hostname.is_empty()
                || new.hostname == DOCKER_REGISTRY
                || new.hostname == DOCKER_REGISTRY_AUTH
            {
                new.hostname = DOCKER_REGISTRY_DNS.to_string();
            }
        }
        let defaults = host_for_registry(&new.name);
        let name = defaults.name.clone();
        let (idx, existing) = match self.rows.iter().position(|r| r.host.name == name) {
            Some(i) => (i, true),
            None => match self.hub.take().filter(|_| name == DOCKER_REGISTRY) {
                Some(hub) => {
                    self.rows.push(hub);
                    (self.rows.len() - 1, true)
                }
                None => {
                    self.rows.push(Row {
                        host: defaults,
                        api_opts: BTreeMap::new(),
                    });
                    (self.rows.len() - 1, false)
                }
            },
        };
        let row = &mut self.rows[idx];
        let mut w = Warn {
            host: &name,
            existing,
            out: &mut self.warnings,
        };
        merge_into(row, new, &mut w);
    }

    fn finish(self) -> (Vec<HostConfig>, Vec<HostWarning>) {
        let hosts = self
            .rows
            .into_iter()
            .map(|mut r| {
                r.host.disable_head = r
                    .api_opts
                    .get("disableHead")
                    .and_then(|v| parse_go_bool(v))
                    .unwrap_or(false);
                r.host
            })
            .collect();
        (hosts, self.warnings)
    }
}

/// Collects the "Changing ..." warnings; only merges into an existing entry warn.
struct Warn<'a> {
    host: &'a str,
    existing: bool,
    out: &'a mut Vec<HostWarning>,
}

impl Warn<'_> {
    fn change(&mut self, msg: &'static str, orig: Option<(&str, &str)>) {
        if !self.existing {
            return;
        }
        let mut fields = vec![("host", self.host.to_string())];
        if let Some((o, n)) = orig {
            fields.push(("orig", o.to_string()));
            fields.push(("new", n.to_string()));
        }
        self.out.push(HostWarning { msg, fields });
    }
}

/// Go's `%v` of a string slice.
fn go_list(v: &[String]) -> String {
    format!("[{}]", v.join(" "))
}

/// regclient's `Host.Merge`, field by field.
fn merge_into(row: &mut Row, new: NewHost, w: &mut Warn) {
    let host = &mut row.host;
    // Credentials: user/pass or a token replace a helper; a helper alone replaces them.
    if new.cred_helper.is_empty() && (!new.pass.is_empty() || !host.token.is_empty()) {
        host.cred_helper.clear();
        host.cred_expire = 0;
    }
    if !new.cred_helper.is_empty()
        && new.user.is_empty()
        && new.pass.is_empty()
        && new.token.is_empty()
    {
        host.user.clear();
        host.pass.clear();
        host.token.clear();
    }
    if !new.user.is_empty() {
        if !host.user.is_empty() && host.user != new.user {
            w.change(
                "Changing login user for registry",
                Some((&host.user, &new.user)),
            );
        }
        host.user = new.user;
    }
    if !new.pass.is_empty() {
        if !host.pass.is_empty() && host.pass != new.pass {
            w.change("Changing login password for registry", None);
        }
        host.pass = new.pass;
    }
    if !new.token.is_empty() {
        if !host.token.is_empty() && host.token != new.token {
            w.change("Changing login token for registry", None);
        }
        host.token = new.token;
    }
    if !new.cred_helper.is_empty() {
        if !host.cred_helper.is_empty() && host.cred_helper != new.cred_helper {
            w.change(
                "Changing credential helper for registry",
                Some((&host.cred_helper, &new.cred_helper)),
            );
        }
        host.cred_helper = new.cred_helper;
    }
    if new.cred_expire != 0 {
        if host.cred_expire != 0 && host.cred_expire != new.cred_expire {
            w.change(
                "Changing credential expire for registry",
                Some((&host.cred_expire.to_string(), &new.cred_expire.to_string())),
            );
        }
        host.cred_expire = new.cred_expire;
    }
    if !new.cred_host.is_empty() {
        if !host.cred_host.is_empty() && host.cred_host != new.cred_host {
            w.change(
                "Changing credential host for registry",
                Some((&host.cred_host, &new.cred_host)),
            );
        }
        host.cred_host = new.cred_host;
    }
    if let Some(tls) = new.tls {
        if host.tls != tls {
            w.change(
                "Changing TLS settings for registry",
                Some((tls_text(host.tls), tls_text(tls))),
            );
        }
        host.tls = tls;
    }
    // Certificates are public but long: the warnings name only the host.
    if !new.regcert.is_empty() {
        if !host.regcert.is_empty() && host.regcert != new.regcert {
            w.change("Changing certificate settings for registry", None);
        }
        host.regcert = new.regcert;
    }
    if !new.client_cert.is_empty() {
        if !host.client_cert.is_empty() && host.client_cert != new.client_cert {
            w.change("Changing client certificate settings for registry", None);
        }
        host.client_cert = new.client_cert;
    }
    if !new.client_key.is_empty() {
        if !host.client_key.is_empty() && host.client_key != new.client_key {
            w.change(
                "Changing client certificate key settings for registry",
                None,
            );
        }
        host.client_key = new.client_key;
    }
    if !new.hostname.is_empty() {
        if !host.hostname.is_empty() && host.hostname != new.hostname {
            w.change(
                "Changing hostname settings for registry",
                Some((&host.hostname, &new.hostname)),
            );
        }
        host.hostname = new.hostname;
    }
    if !new.path_prefix.is_empty() {
        let prefix = new.path_prefix.trim_matches('/').to_string();
        if !host.path_prefix.is_empty() && host.path_prefix != prefix {
            w.change(
                "Changing path prefix settings for registry",
                Some((&host.path_prefix, &prefix)),
            );
        }
        host.path_prefix = prefix;
    }
    if !new.mirrors.is_empty() {
        if !host.mirrors.is_empty() && host.mirrors != new.mirrors {
            w.change(
                "Changing mirror settings for registry",
                Some((&go_list(&host.mirrors), &go_list(&new.mirrors))),
            );
        }
        host.mirrors = new.mirrors;
    }
    if new.priority != 0 {
        if host.priority != 0 && host.priority != new.priority {
            w.change(
                "Changing priority settings for registry",
                Some((&host.priority.to_string(), &new.priority.to_string())),
            );
        }
        host.priority = new.priority;
    }
    if new.repo_auth {
        host.repo_auth = true;
    }
    if !new.api.is_empty() {
        w.out.push(HostWarning::new(
            "API field has been deprecated",
            &[("api", &new.api), ("host", w.host)],
        ));
    }
    for (k, v) in new.api_opts {
        let old = row.api_opts.get(&k).cloned().unwrap_or_default();
        if w.existing && !old.is_empty() && old != v {
            w.out.push(HostWarning::new(
                "Changing APIOpts setting for registry",
                &[("orig", &old), ("new", &v), ("opt", &k), ("host", w.host)],
            ));
        }
        row.api_opts.insert(k, v);
    }
    let host = &mut row.host;
    if new.blob_chunk > 0 {
        if host.blob_chunk != 0 && host.blob_chunk != new.blob_chunk {
            w.change(
                "Changing blobChunk settings for registry",
                Some((&host.blob_chunk.to_string(), &new.blob_chunk.to_string())),
            );
        }
        host.blob_chunk = new.blob_chunk;
    }
    if new.blob_max != 0 {
        if host.blob_max != 0 && host.blob_max != new.blob_max {
            w.change(
                "Changing blobMax settings for registry",
                Some((&host.blob_max.to_string(), &new.blob_max.to_string())),
            );
        }
        host.blob_max = new.blob_max;
    }
    if new.req_per_sec != 0.0 {
        if host.req_per_sec != 0.0 && host.req_per_sec != new.req_per_sec {
            w.change(
                "Changing reqPerSec settings for registry",
                Some((&host.req_per_sec.to_string(), &new.req_per_sec.to_string())),
            );
        }
        host.req_per_sec = new.req_per_sec;
    }
    if new.req_concurrent > 0 {
        // An existing entry always has a value (default 3), as in regclient.
        let orig = host.concurrency() as i64;
        if orig != new.req_concurrent {
            w.change(
                "Changing reqConcurrent settings for registry",
                Some((&orig.to_string(), &new.req_concurrent.to_string())),
            );
        }
        host.req_concurrent = new.req_concurrent;
    }
}

/// The `Scheme is deprecated` warnings regsync logs (field `name`) before any merging.
fn scheme_warnings(creds: &[CredsEntry]) -> Vec<HostWarning> {
    creds
        .iter()
        .filter(|e| !e.scheme.is_empty())
        .map(|e| {
            HostWarning::new(
                "Scheme is deprecated, for http set TLS to disabled",
                &[("name", &e.registry)],
            )
        })
        .collect()
}

/// The host table (spec §3.3 "Merging"): the built-in Hub entry, then `docker` (entries read
/// from Docker's config, in load order; empty with `skipDockerConfig`), then `creds` in file
/// order. Hosts are listed in the order their names first appear (Hub only when named).
/// Returns the warnings to log, in regsync's order.
pub fn merge_host_table(
    docker: Vec<HostConfig>,
    creds: &[CredsEntry],
) -> (Vec<HostConfig>, Vec<HostWarning>) {
    let mut table = Table::new();
    table.warnings = scheme_warnings(creds);
    for h in &docker {
        table.merge(NewHost::from_host(h));
    }
    for e in creds {
        let mut warnings = Vec::new();
        let new = NewHost::from_creds(e, &mut warnings);
        table.warnings.extend(warnings);
        table.merge(new);
    }
    table.finish()
}

/// [`merge_host_table`] with the warnings as text (`msg: key=value ...`).
pub fn merge_hosts(base: Vec<HostConfig>, creds: &[CredsEntry]) -> (Vec<HostConfig>, Vec<String>) {
    let (hosts, warnings) = merge_host_table(base, creds);
    (hosts, warnings.iter().map(ToString::to_string).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(registry: &str) -> CredsEntry {
        CredsEntry {
            registry: registry.into(),
            ..Default::default()
        }
    }

    fn merge(base: Vec<HostConfig>, creds: &[CredsEntry]) -> (Vec<HostConfig>, Vec<String>) {
        merge_hosts(base, creds)
    }

    fn msgs(w: &[HostWarning]) -> Vec<&'static str> {
        w.iter().map(|w| w.msg).collect()
    }

    #[test]
    fn names_normalised() {
        for r in [
            "docker.io",
            "registry-1.docker.io",
            "https://index.docker.io/v1/",
        ] {
            let (h, w) = merge(vec![], &[entry(r)]);
            assert!(w.is_empty(), "{w:?}");
            assert_eq!(h.len(), 1);
            assert_eq!(h[0].name, "docker.io");
            assert_eq!(h[0].hostname, "registry-1.docker.io");
            assert_eq!(h[0].cred_host, "https://index.docker.io/v1/");
            assert_eq!(h[0].tls, Tls::Enabled);
        }
        let (h, _) = merge(vec![], &[entry("http://reg.local:5000/some/path")]);
        assert_eq!(h[0].name, "reg.local:5000");
        assert_eq!(h[0].hostname, "reg.local:5000");
        assert_eq!(h[0].tls, Tls::Disabled);
        assert_eq!(h[0].cred_host, "http://reg.local:5000/some/path");
        let (h, _) = merge(vec![], &[entry("https://reg.local")]);
        assert_eq!((h[0].name.as_str(), h[0].tls), ("reg.local", Tls::Enabled));
        let (h, _) = merge(vec![], &[entry("reg.local")]);
        assert!(h[0].cred_host.is_empty());
        // an explicit TLS value beats the http:// hint
        let mut e = entry("http://x");
        e.tls = "Insecure".into();
        let (h, _) = merge(vec![], &[e]);
        assert_eq!(h[0].tls, Tls::Insecure);
    }

    #[test]
    fn fields_and_defaults() {
        let mut e = entry("registry:5000");
        e.tls = "disabled".into();
        e.user = "u".into();
        e.pass = "p".into();
        e.path_prefix = "/mirror/".into();
        e.req_concurrent = 5;
        e.req_per_sec = 2.5;
        e.blob_chunk = 1024;
        e.blob_max = -1;
        e.repo_auth = true;
        e.cred_expire = 60_000_000_000;
        e.cred_host = "https://registry:5000/".into();
        e.mirrors = vec!["m1:5000".into(), "m2".into()];
        e.priority = 7;
        e.api_opts.insert("disableHead".into(), "true".into());
        let (h, w) = merge(vec![], &[e, entry("plain")]);
        assert!(w.is_empty(), "{w:?}");
        let r = &h[0];
        assert_eq!(r.name, "registry:5000");
        assert_eq!(r.hostname, "registry:5000");
        assert_eq!(r.tls, Tls::Disabled);
        assert_eq!((r.user.as_str(), r.pass.as_str()), ("u", "p"));
        assert_eq!(r.path_prefix, "mirror");
        assert_eq!(r.req_concurrent, 5);
        assert_eq!(r.req_per_sec, 2.5);
        assert_eq!(r.blob_chunk, 1024);
        assert_eq!(r.blob_max, -1);
        assert!(r.repo_auth);
        assert!(r.disable_head);
        assert_eq!(r.cred_expire, 60_000_000_000);
        assert_eq!(r.cred_host, "https://registry:5000/");
        assert_eq!(r.mirrors, ["m1:5000", "m2"]);
        assert_eq!(r.priority, 7);
        assert_eq!(h[1], HostConfig::for_name("plain"));
    }

    #[test]
    fn later_entries_overwrite_non_empty_fields() {
        let mut a = entry("x");
        a.user = "u1".into();
        a.pass = "p1".into();
        a.hostname = "alias:5000".into();
        a.repo_auth = true;
        a.tls = "insecure".into();
        let mut b = entry("x");
        b.user = "u2".into();
        b.repo_auth = false;
        let (h, w) = merge(vec![], &[entry(""), a, b]);
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].user, "u2");
        assert_eq!(h[0].pass, "p1");
        assert_eq!(h[0].hostname, "alias:5000");
        assert_eq!(h[0].tls, Tls::Insecure);
        assert!(h[0].repo_auth, "repoAuth can only be turned on");
        assert_eq!(
            w,
            vec![
                "Ignoring registry config without a name".to_string(),
                "Changing login user for registry: host=x orig=u1 new=u2".to_string(),
            ]
        );
    }

    #[test]
    fn change_warnings_only_for_existing_entries() {
        let mut a = entry("x");
        a.user = "u1".into();
        a.pass = "p1".into();
        a.token = "t1".into();
        a.tls = "disabled".into();
        a.regcert = "CERT1".into();
        a.client_cert = "CC1".into();
        a.client_key = "KEY1".into();
        a.hostname = "h1".into();
        a.path_prefix = "pre1".into();
        a.mirrors = vec!["m1".into()];
        a.priority = 1;
        a.blob_chunk = 1;
        a.blob_max = 1;
        a.req_per_sec = 1.0;
        a.req_concurrent = 1;
        a.cred_host = "ch1".into();
        a.api_opts.insert("disableHead".into(), "true".into());
        let mut b = entry("x");
        b.user = "u2".into();
        b.pass = "p2".into();
        b.token = "t2".into();
        b.tls = "insecure".into();
        b.regcert = "CERT2".into();
        b.client_cert = "CC2".into();
        b.client_key = "KEY2".into();
        b.hostname = "h2".into();
        b.path_prefix = "/pre2/".into();
        b.mirrors = vec!["m2".into()];
        b.priority = 2;
        b.blob_chunk = 2;
        b.blob_max = 2;
        b.req_per_sec = 2.0;
        b.req_concurrent = 2;
        b.cred_host = "ch2".into();
        b.api_opts.insert("disableHead".into(), "false".into());
        let (h, w) = merge_host_table(vec![], &[a, b]);
        assert_eq!(
            msgs(&w),
            [
                "Changing login user for registry",
                "Changing login password for registry",
                "Changing login token for registry",
                "Changing credential host for registry",
                "Changing TLS settings for registry",
                "Changing certificate settings for registry",
                "Changing client certificate settings for registry",
                "Changing client certificate key settings for registry",
                "Changing hostname settings for registry",
                "Changing path prefix settings for registry",
                "Changing mirror settings for registry",
                "Changing priority settings for registry",
                "Changing APIOpts setting for registry",
                "Changing blobChunk settings for registry",
                "Changing blobMax settings for registry",
                "Changing reqPerSec settings for registry",
                "Changing reqConcurrent settings for registry",
            ]
        );
        assert_eq!(
            w[4].fields,
            [
                ("host", "x".to_string()),
                ("orig", "disabled".to_string()),
                ("new", "insecure".to_string())
            ]
        );
        assert_eq!(
            w[12].to_string(),
            "Changing APIOpts setting for registry: orig=true new=false opt=disableHead host=x"
        );
        assert_eq!(
            w[10].to_string(),
            "Changing mirror settings for registry: host=x orig=[m1] new=[m2]"
        );
        // Secrets never appear in a warning.
        let text: String = w.iter().map(|w| w.to_string()).collect();
        for secret in ["p1", "p2", "t1", "t2", "KEY1", "KEY2"] {
            assert!(!text.contains(&format!("={secret}")), "{text}");
        }
        assert_eq!(h[0].path_prefix, "pre2");
        assert!(!h[0].disable_head);
        assert_eq!(h[0].req_concurrent, 2);
    }

    #[test]
    fn hub_is_builtin_so_docker_io_entries_warn() {
        let mut e = entry("docker.io");
        e.tls = "disabled".into();
        e.user = "me".into();
        let (h, w) = merge_host_table(vec![], &[e]);
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].hostname, "registry-1.docker.io");
        assert_eq!(msgs(&w), ["Changing TLS settings for registry"]);
        // An untouched Hub is not listed.
        let (h, _) = merge_host_table(vec![], &[entry("other")]);
        assert_eq!(h.len(), 1);
        // A Hub hostname given as one of Hub's names is its DNS name.
        let mut e = entry("https://index.docker.io/v1/");
        e.hostname = "docker.io".into();
        let (h, w) = merge_host_table(vec![], &[e]);
        assert_eq!(h[0].hostname, "registry-1.docker.io");
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn docker_entries_then_creds() {
        let docker = vec![
            HostConfig {
                user: "docker-user".into(),
                pass: "docker-pass".into(),
                ..HostConfig::for_name("reg:5000")
            },
            HostConfig {
                cred_helper: "docker-credential-desktop".into(),
                cred_host: DOCKER_REGISTRY_AUTH.into(),
                ..HostConfig::for_name("docker.io")
            },
            // DOCKER_AUTH_CONFIG after the file: merged, not replaced.
            HostConfig {
                user: "env-user".into(),
                pass: "env-pass".into(),
                ..HostConfig::for_name("reg:5000")
            },
        ];
        let mut e = entry("reg:5000");
        e.tls = "disabled".into();
        let (h, w) = merge_host_table(docker, &[e]);
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].name, "reg:5000");
        assert_eq!(
            (h[0].user.as_str(), h[0].pass.as_str()),
            ("env-user", "env-pass")
        );
        assert_eq!(h[0].tls, Tls::Disabled);
        assert_eq!(h[1].name, "docker.io");
        assert_eq!(h[1].cred_helper, "docker-credential-desktop");
        assert_eq!(
            msgs(&w),
            [
                "Changing login user for registry",
                "Changing login password for registry",
                "Changing TLS settings for registry",
            ]
        );
    }

    #[test]
    fn helper_alone_clears_user_pass_token() {
        let base = vec![HostConfig {
            user: "docker-user".into(),
            pass: "docker-pass".into(),
            token: "docker-token".into(),
            ..HostConfig::for_name("docker.io")
        }];
        let mut e = entry("registry-1.docker.io");
        e.cred_helper = "docker-credential-x".into();
        let (h, _) = merge(base, &[e]);
        assert_eq!(h[0].name, "docker.io");
        assert_eq!(h[0].hostname, "registry-1.docker.io");
        assert_eq!(h[0].cred_helper, "docker-credential-x");
        assert!(h[0].user.is_empty() && h[0].pass.is_empty() && h[0].token.is_empty());

        // A helper together with a user keeps the user given with it.
        let base = vec![HostConfig {
            user: "old".into(),
            pass: "oldpw".into(),
            ..HostConfig::for_name("r")
        }];
        let mut e = entry("r");
        e.cred_helper = "h".into();
        e.user = "new".into();
        let (h, _) = merge(base, &[e]);
        assert_eq!((h[0].user.as_str(), h[0].pass.as_str()), ("new", "oldpw"));
        assert_eq!(h[0].cred_helper, "h");
    }

    #[test]
    fn pass_or_existing_token_clears_helper() {
        let helper_host = |token: &str| HostConfig {
            cred_helper: "docker-credential-x".into(),
            cred_expire: 5,
            token: token.into(),
            ..HostConfig::for_name("r")
        };
        // A new pass without a helper replaces the helper.
        let mut e = entry("r");
        e.user = "u".into();
        e.pass = "p".into();
        let (h, _) = merge(vec![helper_host("")], &[e]);
        assert!(h[0].cred_helper.is_empty());
        assert_eq!(h[0].cred_expire, 0);
        // A user alone does not.
        let mut e = entry("r");
        e.user = "u".into();
        let (h, _) = merge(vec![helper_host("")], &[e]);
        assert_eq!(h[0].cred_helper, "docker-credential-x");
        // Any entry without a helper clears it when the host holds a token.
        let mut e = entry("r");
        e.tls = "insecure".into();
        let (h, _) = merge(vec![helper_host("tok")], &[e]);
        assert!(h[0].cred_helper.is_empty());
        assert_eq!(h[0].token, "tok");
        // A different helper warns.
        let mut e = entry("r");
        e.cred_helper = "docker-credential-y".into();
        let (h, w) = merge_host_table(vec![helper_host("")], &[e]);
        assert_eq!(h[0].cred_helper, "docker-credential-y");
        assert_eq!(
            w[0].to_string(),
            "Changing credential helper for registry: host=r orig=docker-credential-x new=docker-credential-y"
        );
    }

    #[test]
    fn api_opts_merge_key_by_key() {
        let mut a = entry("r");
        a.api_opts.insert("disableHead".into(), "true".into());
        a.api_opts.insert("other".into(), "1".into());
        let mut b = entry("r");
        b.api_opts.insert("another".into(), "2".into());
        let (h, w) = merge_host_table(vec![], &[a.clone(), b]);
        assert!(h[0].disable_head, "kept from the first entry");
        assert!(w.is_empty(), "{w:?}");
        let mut c = entry("r");
        c.api_opts.insert("disableHead".into(), "0".into());
        let (h, w) = merge_host_table(vec![], &[a, c]);
        assert!(!h[0].disable_head);
        assert_eq!(msgs(&w), ["Changing APIOpts setting for registry"]);
        // Go's ParseBool: anything else is "not disabled".
        let mut d = entry("s");
        d.api_opts.insert("disableHead".into(), "yes".into());
        assert!(!merge_host_table(vec![], &[d]).0[0].disable_head);
    }

    #[test]
    fn deprecated_fields_warn() {
        let mut e = entry("x");
        e.scheme = "http".into();
        let mut f = entry("y");
        f.api = "docker".into();
        let (h, w) = merge_host_table(vec![], &[entry("z"), e, f]);
        assert_eq!(h[1].tls, Tls::Enabled, "scheme is ignored");
        assert_eq!(
            w.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "Scheme is deprecated, for http set TLS to disabled: name=x",
                "API field has been deprecated: api=docker host=y",
            ]
        );
        assert_eq!(w[0].fields, [("name", "x".to_string())]);
    }

    #[test]
    fn invalid_tls_is_ignored_with_a_warning() {
        let mut e = entry("y");
        e.tls = "bogus".into();
        let (h, w) = merge(vec![], &[e]);
        assert_eq!(h[0].tls, Tls::Enabled);
        assert_eq!(
            w,
            ["Ignoring invalid TLS setting for registry: host=y err=unknown TLS value \"bogus\""]
        );
    }

    #[test]
    fn warnings_log_as_fields() {
        use std::sync::{Arc, Mutex};
        struct Capture(Arc<Mutex<Vec<String>>>);
        impl slog::Drain for Capture {
            type Ok = ();
            type Err = slog::Never;
            fn log(&self, r: &slog::Record, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
                struct S(String);
                impl slog::Serializer for S {
                    fn emit_arguments(&mut self, k: slog::Key, v: &fmt::Arguments) -> slog::Result {
                        self.0.push_str(&format!(" {k}={v}"));
                        Ok(())
                    }
                }
                let mut s = S(format!("{} {}", r.level().as_short_str(), r.msg()));
                slog::KV::serialize(&r.kv(), r, &mut s).unwrap();
                self.0.lock().unwrap().push(s.0);
                Ok(())
            }
        }
        let lines = Arc::new(Mutex::new(Vec::new()));
        let log = slog::Logger::root(Capture(lines.clone()), slog::o!());
        HostWarning::new(
            "Changing login user for registry",
            &[("host", "x"), ("orig", "a"), ("new", "b")],
        )
        .log(&log);
        let lines = lines.lock().unwrap();
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].starts_with("WARN Changing login user for registry"),
            "{}",
            lines[0]
        );
        for kv in ["host=x", "orig=a", "new=b"] {
            assert!(lines[0].contains(kv), "{}", lines[0]);
        }
    }
}
