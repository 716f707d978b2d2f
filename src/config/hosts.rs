//! `creds[]` entries → per-registry [`HostConfig`] table (spec §3.3 "Merging").

use super::schema::CredsEntry;
use super::validate::{parse_tls, tls_text};
use crate::registry::{HostConfig, Tls};

/// Registry name used in references for Docker Hub.
pub const DOCKER_REGISTRY: &str = "docker.io";
/// Name Docker's config.json uses for Hub.
pub const DOCKER_REGISTRY_AUTH: &str = "https://index.docker.io/v1/";
/// Host actually contacted for Hub.
pub const DOCKER_REGISTRY_DNS: &str = "registry-1.docker.io";

/// Defaults for a `registry` value as written: Hub aliases → `docker.io` /
/// `registry-1.docker.io`; a `scheme://` prefix is removed (`http` → TLS disabled); any path
/// after the host is dropped; hostname = name.
pub fn host_for_registry(registry: &str) -> HostConfig {
    if registry == DOCKER_REGISTRY
        || registry == DOCKER_REGISTRY_DNS
        || registry == DOCKER_REGISTRY_AUTH
    {
        return HostConfig::for_name(DOCKER_REGISTRY);
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
    HostConfig {
        tls,
        ..HostConfig::for_name(name)
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

/// Merges `creds` (in file order) on top of `base` (e.g. hosts read from docker's config.json,
/// one per name). Each non-empty field of an entry overwrites the table's value; a new name is
/// appended, starting from [`host_for_registry`] defaults. Entries without `registry` are
/// skipped. Returns the table and the warnings to log (`Ignoring registry config without a
/// name`, `Changing login user for registry: host=...`, deprecated `scheme`, ...).
///
/// `HostConfig` has no fields for `credHelper`, `credExpire`, `credHost`, `mirrors`,
/// `priority` or `api`; of the helper rules only "a helper without user/pass/token clears the
/// existing user/pass/token" is applied here.
pub fn merge_hosts(base: Vec<HostConfig>, creds: &[CredsEntry]) -> (Vec<HostConfig>, Vec<String>) {
    let mut hosts = base;
    let mut warnings = Vec::new();
    for entry in creds {
        if entry.registry.is_empty() {
            warnings.push("Ignoring registry config without a name".to_string());
            continue;
        }
        let defaults = host_for_registry(&entry.registry);
        let name = defaults.name.clone();
        if !entry.scheme.is_empty() {
            warnings.push(format!(
                "Scheme is deprecated, for http set TLS to disabled: name={}",
                entry.registry
            ));
        }
        let (idx, existing) = match hosts.iter().position(|h| h.name == name) {
            Some(i) => (i, true),
            None => {
                hosts.push(defaults.clone());
                (hosts.len() - 1, false)
            }
        };
        let host = &mut hosts[idx];
        let mut changes: Vec<String> = Vec::new();
        let mut warn = |what: &str, detail: String| {
            if existing {
                changes.push(format!("Changing {what} for registry: host={name}{detail}"));
            }
        };

        // Credentials.
        if !entry.cred_helper.is_empty()
            && entry.user.is_empty()
            && entry.pass.is_empty()
            && entry.token.is_empty()
        {
            host.user.clear();
            host.pass.clear();
            host.token.clear();
        }
        if !entry.user.is_empty() {
            if !host.user.is_empty() && host.user != entry.user {
                warn(
                    "login user",
                    format!(" orig={} new={}", host.user, entry.user),
                );
            }
            host.user = entry.user.clone();
        }
        if !entry.pass.is_empty() {
            if !host.pass.is_empty() && host.pass != entry.pass {
                warn("login password", String::new());
            }
            host.pass = entry.pass.clone();
        }
        if !entry.token.is_empty() {
            if !host.token.is_empty() && host.token != entry.token {
                warn("login token", String::new());
            }
            host.token = entry.token.clone();
        }

        // TLS: explicit value, else `http://` prefix means disabled, else unchanged.
        let tls = match parse_tls(&entry.tls) {
            Ok(Some(t)) => Some(t),
            Ok(None) => (defaults.tls == Tls::Disabled).then_some(Tls::Disabled),
            Err(e) => {
                warnings.push(format!("{e}: host={name}"));
                None
            }
        };
        if let Some(t) = tls {
            if host.tls != t {
                warn(
                    "TLS settings",
                    format!(" orig={} new={}", tls_text(host.tls), tls_text(t)),
                );
            }
            host.tls = t;
        }

        if !entry.regcert.is_empty() {
            if !host.regcert.is_empty() && host.regcert != entry.regcert {
                warn("certificate settings", String::new());
            }
            host.regcert = entry.regcert.clone();
        }
        if !entry.client_cert.is_empty() {
            if !host.client_cert.is_empty() && host.client_cert != entry.client_cert {
                warn("client certificate settings", String::new());
            }
            host.client_cert = entry.client_cert.clone();
        }
        if !entry.client_key.is_empty() {
            if !host.client_key.is_empty() && host.client_key != entry.client_key {
                warn("client certificate key settings", String::new());
            }
            host.client_key = entry.client_key.clone();
        }

        // Hostname: Hub's aliases resolve to its DNS name.
        let mut hostname = entry.hostname.clone();
        if name == DOCKER_REGISTRY
            && (hostname.is_empty()
                || hostname == DOCKER_REGISTRY
                || hostname == DOCKER_REGISTRY_AUTH)
        {
            hostname = DOCKER_REGISTRY_DNS.to_string();
        }
        if !hostname.is_empty() {
            if !host.hostname.is_empty() && host.hostname != hostname {
                warn(
                    "hostname settings",
                    format!(" orig={} new={}", host.hostname, hostname),
                );
            }
            host.hostname = hostname;
        }

        if !entry.path_prefix.is_empty() {
            let prefix = entry.path_prefix.trim_matches('/').to_string();
            if !host.path_prefix.is_empty() && host.path_prefix != prefix {
                warn(
                    "path prefix settings",
                    format!(" orig={} new={}", host.path_prefix, prefix),
                );
            }
            host.path_prefix = prefix;
        }

        if entry.repo_auth {
            host.repo_auth = true;
        }

        if let Some(v) = entry.api_opts.get("disableHead") {
            let v = parse_go_bool(v).unwrap_or(false);
            if host.disable_head != v {
                warn(
                    "APIOpts setting",
                    format!(" opt=disableHead orig={} new={}", host.disable_head, v),
                );
            }
            host.disable_head = v;
        }

        if entry.blob_chunk > 0 {
            if host.blob_chunk != 0 && host.blob_chunk != entry.blob_chunk {
                warn(
                    "blobChunk settings",
                    format!(" orig={} new={}", host.blob_chunk, entry.blob_chunk),
                );
            }
            host.blob_chunk = entry.blob_chunk;
        }
        if entry.blob_max != 0 {
            if host.blob_max != 0 && host.blob_max != entry.blob_max {
                warn(
                    "blobMax settings",
                    format!(" orig={} new={}", host.blob_max, entry.blob_max),
                );
            }
            host.blob_max = entry.blob_max;
        }
        if entry.req_per_sec != 0.0 {
            if host.req_per_sec != 0.0 && host.req_per_sec != entry.req_per_sec {
                warn(
                    "reqPerSec settings",
                    format!(" orig={} new={}", host.req_per_sec, entry.req_per_sec),
                );
            }
            host.req_per_sec = entry.req_per_sec;
        }
        if entry.req_concurrent > 0 {
            if host.req_concurrent != 0 && host.req_concurrent != entry.req_concurrent {
                warn(
                    "reqConcurrent settings",
                    format!(" orig={} new={}", host.req_concurrent, entry.req_concurrent),
                );
            }
            host.req_concurrent = entry.req_concurrent;
        }
        warnings.extend(changes);
    }
    (hosts, warnings)
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

    #[test]
    fn names_normalised() {
        for r in [
            "docker.io",
            "registry-1.docker.io",
            "https://index.docker.io/v1/",
        ] {
            let (h, w) = merge_hosts(vec![], &[entry(r)]);
            assert!(w.is_empty());
            assert_eq!(h.len(), 1);
            assert_eq!(h[0].name, "docker.io");
            assert_eq!(h[0].hostname, "registry-1.docker.io");
            assert_eq!(h[0].tls, Tls::Enabled);
        }
        let (h, _) = merge_hosts(vec![], &[entry("http://reg.local:5000/some/path")]);
        assert_eq!(h[0].name, "reg.local:5000");
        assert_eq!(h[0].hostname, "reg.local:5000");
        assert_eq!(h[0].tls, Tls::Disabled);
        let (h, _) = merge_hosts(vec![], &[entry("https://reg.local")]);
        assert_eq!((h[0].name.as_str(), h[0].tls), ("reg.local", Tls::Enabled));
        // an explicit TLS value beats the http:// hint
        let mut e = entry("http://x");
        e.tls = "Insecure".into();
        let (h, _) = merge_hosts(vec![], &[e]);
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
        e.api_opts.insert("disableHead".into(), "true".into());
        let (h, w) = merge_hosts(vec![], &[e, entry("plain")]);
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
        let (h, w) = merge_hosts(vec![], &[entry(""), a, b]);
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
    fn merged_on_base_and_helper_clears_creds() {
        let base = vec![HostConfig {
            user: "docker-user".into(),
            pass: "docker-pass".into(),
            ..HostConfig::for_name("docker.io")
        }];
        let mut e = entry("registry-1.docker.io");
        e.cred_helper = "docker-credential-x".into();
        let mut other = entry("y");
        other.tls = "bogus".into();
        let (h, w) = merge_hosts(base, &[e, other]);
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].name, "docker.io");
        assert_eq!(h[0].hostname, "registry-1.docker.io");
        assert!(h[0].user.is_empty() && h[0].pass.is_empty());
        assert_eq!(h[1].tls, Tls::Enabled);
        assert_eq!(w, vec!["unknown TLS value \"bogus\": host=y".to_string()]);
    }

    #[test]
    fn deprecated_scheme_warns() {
        let mut e = entry("x");
        e.scheme = "http".into();
        let (h, w) = merge_hosts(vec![], &[e]);
        assert_eq!(h[0].tls, Tls::Enabled);
        assert_eq!(
            w,
            vec!["Scheme is deprecated, for http set TLS to disabled: name=x".to_string()]
        );
    }
}
