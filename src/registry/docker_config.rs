//! Credentials from the Docker CLI configuration (spec §8.1): `$DOCKER_CONFIG/config.json`
//! (else `$HOME/.docker/config.json`) and the JSON in `$DOCKER_AUTH_CONFIG`, each with
//! `auths`, `credHelpers` and `credsStore`.
//!
//! The result is a list of host *entries* in load order (file first, then the environment),
//! which `config::merge_hosts` merges like `creds` entries: a name may appear more than once.

use super::cred_helper::{self, ListError};
use super::{HostConfig, RegistryError, Tls};
use base64::Engine as _;
use serde::{Deserialize, Deserializer};
use slog::{debug, warn, Logger};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Registry name used in references for Docker Hub.
const DOCKER_REGISTRY: &str = "docker.io";
/// Name Docker's config.json uses for Hub.
const DOCKER_REGISTRY_AUTH: &str = "https://index.docker.io/v1/";
/// Host actually contacted for Hub.
const DOCKER_REGISTRY_DNS: &str = "registry-1.docker.io";
/// Credential helper programs are named `docker-credential-<suffix>`.
const HELPER_PREFIX: &str = "docker-credential-";

#[derive(Deserialize, Default)]
struct ConfigFile {
    #[serde(default, deserialize_with = "null_default")]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers", deserialize_with = "null_default")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore", deserialize_with = "null_default")]
    creds_store: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AuthEntry {
    #[serde(deserialize_with = "null_default")]
    auth: String,
    #[serde(deserialize_with = "null_default")]
    username: String,
    #[serde(deserialize_with = "null_default")]
    password: String,
    #[serde(deserialize_with = "null_default")]
    identitytoken: String,
}

/// JSON `null` reads as the empty value, as Go's decoder does.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Host entries from Docker's config file and `DOCKER_AUTH_CONFIG`. A missing file is no
/// error; an unreadable or unparsable one is (the caller warns `Failed to load docker creds`
/// and uses none of them).
///
/// Runs `docker-credential-<credsStore> list` when a store is set: a blocking child process,
/// so call this before the async runtime runs. A store that does not answer within the
/// helper timeout is killed with one warning and adds nothing; one that fails adds nothing
/// either (regclient ignores the error too).
pub fn docker_config_hosts(log: &Logger) -> Result<Vec<HostConfig>, RegistryError> {
    let path = config_path(
        std::env::var_os("DOCKER_CONFIG").map(PathBuf::from),
        std::env::var_os("HOME").map(PathBuf::from),
    );
    let env_json = std::env::var("DOCKER_AUTH_CONFIG").ok();
    let list = |program: &str| {
        cred_helper::list_within(program, cred_helper::HELPER_TIMEOUT).map_err(|e| {
            match &e {
                ListError::TimedOut(_) => {
                    warn!(log, "Failed to list docker credential store"; "helper" => program, "err" => %e)
                }
                ListError::Failed(_) => {
                    debug!(log, "Failed to list docker credential store"; "helper" => program, "err" => %e)
                }
            }
            e.to_string()
        })
    };
    hosts_from(path.as_deref(), env_json.as_deref(), &list)
}

fn config_path(docker_config: Option<PathBuf>, home: Option<PathBuf>) -> Option<PathBuf> {
    match docker_config.filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => Some(dir.join("config.json")),
        None => home.map(|h| h.join(".docker").join("config.json")),
    }
}

/// `list` runs a store helper's `list` by program name.
type ListFn<'a> = &'a dyn Fn(&str) -> Result<BTreeMap<String, String>, String>;

fn hosts_from(
    path: Option<&Path>,
    env_json: Option<&str>,
    list: ListFn,
) -> Result<Vec<HostConfig>, RegistryError> {
    let mut hosts = Vec::new();
    if let Some(path) = path {
        match std::fs::read_to_string(path) {
            Ok(text) => hosts.extend(parse(&text, &path.display().to_string(), list)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(RegistryError::DockerConfig {
                    source_name: path.display().to_string(),
                    detail: e.to_string(),
                })
            }
        }
    }
    if let Some(json) = env_json.filter(|j| !j.is_empty()) {
        hosts.extend(parse(json, "DOCKER_AUTH_CONFIG", list)?);
    }
    Ok(hosts)
}

fn parse(text: &str, source_name: &str, list: ListFn) -> Result<Vec<HostConfig>, RegistryError> {
    // Docker itself treats an empty file as an empty configuration.
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let file: ConfigFile = serde_json::from_str(text).map_err(|e| RegistryError::DockerConfig {
        source_name: source_name.to_string(),
        // Position only: the text around the error may be a credential.
        detail: format!(
            "invalid JSON ({:?} at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        ),
    })?;
    let mut hosts = Vec::new();
    for (key, entry) in &file.auths {
        if !valid_name(key) {
            continue;
        }
        let helper = file
            .cred_helpers
            .get(key)
            .filter(|s| !s.is_empty())
            .map(|s| format!("{HELPER_PREFIX}{s}"))
            .unwrap_or_default();
        let (user, pass) = if entry.auth.is_empty() {
            (entry.username.clone(), entry.password.clone())
        } else {
            match decode_auth(&entry.auth) {
                Some(up) => up,
                // Like regclient: a broken entry is skipped, the rest is used.
                None => continue,
            }
        };
        // Spec §8.1: entries without usable credentials and without a helper are ignored.
        if (user.is_empty() || pass.is_empty())
            && entry.identitytoken.is_empty()
            && helper.is_empty()
        {
            continue;
        }
        hosts.push(HostConfig {
            user,
            pass,
            token: entry.identitytoken.clone(),
            cred_helper: helper,
            ..new_host(key)
        });
    }
    for (key, suffix) in &file.cred_helpers {
        if !valid_name(key) || file.auths.contains_key(key) {
            continue;
        }
        hosts.push(HostConfig {
            cred_helper: format!("{HELPER_PREFIX}{suffix}"),
            ..new_host(key)
        });
    }
    if !file.creds_store.is_empty() {
        let program = format!("{HELPER_PREFIX}{}", file.creds_store);
        // A store that cannot list adds nothing (regclient ignores the error too).
        if let Ok(servers) = list(&program) {
            for (server, user) in servers {
                if !valid_name(&server) {
                    continue;
                }
                hosts.push(HostConfig {
                    user,
                    cred_helper: program.clone(),
                    ..new_host(&server)
                });
            }
        }
    }
    Ok(hosts)
}

/// regclient's `parseName`: (scheme, registry, path), Hub's names mapping to `docker.io`.
fn parse_name(name: &str) -> (&str, &str, &str) {
    if name == DOCKER_REGISTRY_AUTH || name == DOCKER_REGISTRY_DNS || name == DOCKER_REGISTRY {
        return ("https", DOCKER_REGISTRY, "");
    }
    let (scheme, rest) = match name.find("://") {
        Some(i) if i > 0 => (&name[..i], &name[i + 3..]),
        _ => ("https", name),
    };
    match rest.find('/') {
        Some(i) if i > 0 => (scheme, &rest[..i], &rest[i + 1..]),
        _ => (scheme, rest, ""),
    }
}

/// A usable key: http or https (or none), no path (spec §16 item 18).
fn valid_name(name: &str) -> bool {
    let (scheme, registry, path) = parse_name(name);
    !registry.is_empty() && path.is_empty() && (scheme == "https" || scheme == "http")
}

/// Defaults for a Docker config key: `http://` disables TLS; Hub gets its DNS name and
/// credHost; any other key that is not a bare name is kept as credHost for the helper.
fn new_host(key: &str) -> HostConfig {
    let (scheme, registry, _) = parse_name(key);
    let tls = if scheme == "http" {
        Tls::Disabled
    } else {
        Tls::Enabled
    };
    if registry == DOCKER_REGISTRY {
        return HostConfig {
            tls,
            cred_host: DOCKER_REGISTRY_AUTH.to_string(),
            ..HostConfig::for_name(DOCKER_REGISTRY)
        };
    }
    HostConfig {
        name: registry.to_string(),
        hostname: registry.to_string(),
        tls,
        cred_host: if key != registry {
            key.to_string()
        } else {
            String::new()
        },
        ..Default::default()
    }
}

/// `auth` is base64 of `user:pass`; trailing NULs are trimmed from the password.
fn decode_auth(auth: &str) -> Option<(String, String)> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_string(), pass.trim_end_matches('\0').to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::cred_helper::tests::script;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn no_list(_: &str) -> Result<BTreeMap<String, String>, String> {
        Err("no store".into())
    }

    fn find<'a>(hosts: &'a [HostConfig], name: &str) -> Option<&'a HostConfig> {
        hosts.iter().find(|h| h.name == name)
    }

    /// The acceptance cases of regclient's `config/docker_test.go` (spec §15.6).
    #[test]
    fn docker_config_cases() {
        let dir = tempfile::tempdir().unwrap();
        // A store helper written by the test; `list` answers two servers.
        script(
            dir.path(),
            "docker-credential-teststore",
            r#"[ "$1" = list ] || exit 1
echo '{"storehost.example.com":"hello","http://storehttp.example.com/":"hello","https://store.example.com/with/path":"x"}'"#,
        );
        let helper_dir = dir.path().to_path_buf();
        let list = move |program: &str| {
            cred_helper::list_within(
                helper_dir.join(program).to_str().unwrap(),
                cred_helper::HELPER_TIMEOUT,
            )
            .map_err(|e| e.to_string())
        };
        let cfg_dir = dir.path().join("cfg");
        std::fs::create_dir(&cfg_dir).unwrap();
        let file = serde_json::json!({
            "auths": {
                "localhost:5001": {"auth": "aGVsbG86ZG9ja2Vy"},
                "https://index.docker.io/v1/": {},
                "testhost.example.com": {},
                "http://http.example.com/": {},
                "https://withpath.example.com/v2/": {"auth": b64("x:y")},
                "withrepo.example.com/some/repo": {"auth": b64("x:y")},
                "nocreds.example.com": {"username": "only-user"},
                "ftp://ftp.example.com": {"auth": b64("x:y")},
                "token.example.com": {"identitytoken": "idtok"}
            },
            "credHelpers": {
                "testhost.example.com": "test",
                "https://index.docker.io/v1/": "test",
                "http://http.example.com/": "test",
                "helperonly.example.com": "test",
                "https://helper.example.com/some/path": "test"
            },
            "credsStore": "teststore"
        });
        std::fs::write(cfg_dir.join("config.json"), file.to_string()).unwrap();
        let env = serde_json::json!({
            "auths": {"env.example.com": {"auth": b64("envuser:envpass\0\0")}},
            "credHelpers": {"envhelper.example.com": "envtest"}
        });
        let path = config_path(Some(cfg_dir.clone()), None).unwrap();
        let hosts = hosts_from(Some(&path), Some(&env.to_string()), &list).unwrap();

        let h = find(&hosts, "localhost:5001").unwrap();
        assert_eq!((h.user.as_str(), h.pass.as_str()), ("hello", "docker"));
        assert_eq!(
            (h.hostname.as_str(), h.tls),
            ("localhost:5001", Tls::Enabled)
        );
        assert!(h.cred_helper.is_empty() && h.cred_host.is_empty());

        let h = find(&hosts, "testhost.example.com").unwrap();
        assert_eq!(h.cred_helper, "docker-credential-test");
        assert_eq!(h.hostname, "testhost.example.com");
        assert_eq!(h.tls, Tls::Enabled);
        assert!(h.cred_host.is_empty());

        let h = find(&hosts, "docker.io").unwrap();
        assert_eq!(h.cred_helper, "docker-credential-test");
        assert_eq!(h.hostname, "registry-1.docker.io");
        assert_eq!(h.cred_host, "https://index.docker.io/v1/");
        assert_eq!(h.tls, Tls::Enabled);

        let h = find(&hosts, "http.example.com").unwrap();
        assert_eq!(h.cred_helper, "docker-credential-test");
        assert_eq!(h.hostname, "http.example.com");
        assert_eq!(h.tls, Tls::Disabled);
        assert_eq!(h.cred_host, "http://http.example.com/");

        let h = find(&hosts, "helperonly.example.com").unwrap();
        assert_eq!(h.cred_helper, "docker-credential-test");

        let h = find(&hosts, "storehost.example.com").unwrap();
        assert_eq!(h.user, "hello");
        assert!(h.pass.is_empty());
        assert_eq!(h.cred_helper, "docker-credential-teststore");
        assert_eq!(
            (h.hostname.as_str(), h.tls),
            ("storehost.example.com", Tls::Enabled)
        );

        let h = find(&hosts, "storehttp.example.com").unwrap();
        assert_eq!(h.user, "hello");
        assert_eq!(h.cred_helper, "docker-credential-teststore");
        assert_eq!(h.tls, Tls::Disabled);
        assert_eq!(h.cred_host, "http://storehttp.example.com/");

        assert_eq!(find(&hosts, "token.example.com").unwrap().token, "idtok");

        let h = find(&hosts, "env.example.com").unwrap();
        assert_eq!((h.user.as_str(), h.pass.as_str()), ("envuser", "envpass"));
        let h = find(&hosts, "envhelper.example.com").unwrap();
        assert_eq!(h.cred_helper, "docker-credential-envtest");

        // Keys with a repository path, unknown schemes and entries without usable
        // credentials are absent.
        for absent in [
            "withpath.example.com",
            "withrepo.example.com",
            "nocreds.example.com",
            "ftp.example.com",
            "helper.example.com",
            "store.example.com",
        ] {
            assert!(find(&hosts, absent).is_none(), "{absent} present");
        }
        // Every entry once, file before environment.
        let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names.len(), 10, "{names:?}");
        assert_eq!(
            names[names.len() - 2..],
            ["env.example.com", "envhelper.example.com"]
        );
    }

    #[test]
    fn missing_file_is_empty_and_broken_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        assert!(hosts_from(Some(&path), None, &no_list).unwrap().is_empty());
        std::fs::write(&path, "   ").unwrap();
        assert!(hosts_from(Some(&path), None, &no_list).unwrap().is_empty());
        std::fs::write(&path, r#"{"auths": null, "credHelpers": null}"#).unwrap();
        assert!(hosts_from(Some(&path), None, &no_list).unwrap().is_empty());
        std::fs::write(&path, r#"{"auths":{"r.io":{"auth":"c2VjcmV0"#).unwrap();
        let e = hosts_from(Some(&path), None, &no_list)
            .unwrap_err()
            .to_string();
        assert!(e.contains("config.json"), "{e}");
        assert!(!e.contains("c2VjcmV0"), "error shows the credential: {e}");
        // A bad entry is skipped, the others are used.
        std::fs::write(
            &path,
            format!(
                r#"{{"auths":{{"bad.io":{{"auth":"!!!"}},"nocolon.io":{{"auth":"{}"}},"ok.io":{{"auth":"{}"}}}}}}"#,
                b64("nocolon"),
                b64("u:p")
            ),
        )
        .unwrap();
        let hosts = hosts_from(Some(&path), None, &no_list).unwrap();
        assert_eq!(hosts.len(), 1);
        assert_eq!(hosts[0].name, "ok.io");
        assert!(hosts_from(None, Some("\"text\""), &no_list).is_err());
        // An empty DOCKER_AUTH_CONFIG is no configuration.
        assert!(hosts_from(None, Some(""), &no_list).unwrap().is_empty());
    }

    #[test]
    fn config_location() {
        let p = config_path(Some("/cfg".into()), Some("/home/u".into()));
        assert_eq!(p.unwrap(), PathBuf::from("/cfg/config.json"));
        let p = config_path(Some("".into()), Some("/home/u".into()));
        assert_eq!(p.unwrap(), PathBuf::from("/home/u/.docker/config.json"));
        let p = config_path(None, Some("/home/u".into()));
        assert_eq!(p.unwrap(), PathBuf::from("/home/u/.docker/config.json"));
        assert!(config_path(None, None).is_none());
    }

    #[test]
    fn key_normalisation() {
        let h = new_host("https://index.docker.io/v1/");
        assert_eq!(
            (h.name.as_str(), h.hostname.as_str()),
            ("docker.io", "registry-1.docker.io")
        );
        assert_eq!(h.cred_host, DOCKER_REGISTRY_AUTH);
        assert_eq!(new_host("registry-1.docker.io").name, "docker.io");
        assert_eq!(new_host("https://docker.io").name, "docker.io");
        let h = new_host("http://h:5000/");
        assert_eq!((h.name.as_str(), h.tls), ("h:5000", Tls::Disabled));
        assert_eq!(h.cred_host, "http://h:5000/");
        let h = new_host("h:5000");
        assert!(h.cred_host.is_empty());
        assert!(!valid_name("https://h/v2/"));
        assert!(!valid_name("h/path"));
        assert!(!valid_name("ftp://h"));
        assert!(valid_name("https://h/"));
        assert!(valid_name(DOCKER_REGISTRY_AUTH));
    }
}
