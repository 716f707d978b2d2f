//! Credentials from the Docker CLI configuration (spec §8.1): the `auths` of
//! `$DOCKER_CONFIG/config.json` (else `$HOME/.docker/config.json`) and of the JSON in
//! `$DOCKER_AUTH_CONFIG`. Credential helpers (`credHelpers`, `credsStore`) are not read here.

use super::{HostConfig, RegistryError, Tls};
use base64::Engine as _;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    identitytoken: String,
}

/// Host entries (name, TLS, user/pass, token) for every usable `auths` entry, the file's first
/// and then `DOCKER_AUTH_CONFIG`'s (which wins for a name in both). A missing file is no
/// error; an unreadable or unparsable one is.
pub fn docker_config_hosts() -> Result<Vec<HostConfig>, RegistryError> {
    let path = config_path(
        std::env::var_os("DOCKER_CONFIG").map(PathBuf::from),
        std::env::var_os("HOME").map(PathBuf::from),
    );
    let env_json = std::env::var("DOCKER_AUTH_CONFIG").ok();
    hosts_from(path.as_deref(), env_json.as_deref())
}

fn config_path(docker_config: Option<PathBuf>, home: Option<PathBuf>) -> Option<PathBuf> {
    match docker_config.filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => Some(dir.join("config.json")),
        None => home.map(|h| h.join(".docker").join("config.json")),
    }
}

fn hosts_from(
    path: Option<&Path>,
    env_json: Option<&str>,
) -> Result<Vec<HostConfig>, RegistryError> {
    let mut hosts: Vec<HostConfig> = Vec::new();
    let mut add = |new: Vec<HostConfig>| {
        for h in new {
            match hosts.iter_mut().find(|old| old.name == h.name) {
                Some(old) => *old = h,
                None => hosts.push(h),
            }
        }
    };
    if let Some(path) = path {
        match std::fs::read_to_string(path) {
            Ok(text) => add(parse(&text, &path.display().to_string())?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(RegistryError::DockerConfig {
                    source_name: path.display().to_string(),
                    detail: e.to_string(),
                })
            }
        }
    }
    if let Some(json) = env_json {
        add(parse(json, "DOCKER_AUTH_CONFIG")?);
    }
    Ok(hosts)
}

fn parse(text: &str, source_name: &str) -> Result<Vec<HostConfig>, RegistryError> {
    let err = |detail: String| RegistryError::DockerConfig {
        source_name: source_name.to_string(),
        detail,
    };
    // Docker itself treats an empty file as an empty configuration.
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let file: ConfigFile = serde_json::from_str(text).map_err(|e| err(e.to_string()))?;
    let mut hosts = Vec::new();
    for (key, entry) in file.auths {
        let Some((name, tls)) = registry_name(&key) else {
            continue;
        };
        let (user, pass) = if entry.auth.is_empty() {
            (entry.username, entry.password)
        } else {
            decode_auth(&entry.auth).map_err(|e| err(format!("auths[{key:?}]: {e}")))?
        };
        // Spec §8.1: entries without usable credentials are ignored.
        if user.is_empty() && entry.identitytoken.is_empty() {
            continue;
        }
        hosts.push(HostConfig {
            tls,
            user,
            pass,
            token: entry.identitytoken,
            ..HostConfig::for_name(&name)
        });
    }
    Ok(hosts)
}

/// `auths` key → registry name and TLS mode; None for keys with a path (other than Hub's).
fn registry_name(key: &str) -> Option<(String, Tls)> {
    let key = key.trim();
    let (rest, tls) = if let Some(rest) = key.strip_prefix("http://") {
        (rest, Tls::Disabled)
    } else if let Some(rest) = key.strip_prefix("https://") {
        (rest, Tls::Enabled)
    } else {
        (key, Tls::Enabled)
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let path = path.trim_matches('/');
    let hub_alias = matches!(
        host,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    );
    if host.is_empty() || !(path.is_empty() || (hub_alias && path == "v1")) {
        return None;
    }
    if hub_alias {
        return Some(("docker.io".into(), tls));
    }
    Some((host.to_string(), tls))
}

/// `auth` is base64 of `user:pass`; trailing NULs are trimmed from the password.
fn decode_auth(auth: &str) -> Result<(String, String), String> {
    let engine = base64::engine::general_purpose::STANDARD;
    let bytes = engine
        .decode(auth.trim())
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(auth.trim()))
        .map_err(|_| "auth is not valid base64".to_string())?;
    let text = String::from_utf8(bytes).map_err(|_| "auth is not valid UTF-8".to_string())?;
    let (user, pass) = text
        .split_once(':')
        .ok_or_else(|| "auth is not user:password".to_string())?;
    Ok((user.to_string(), pass.trim_end_matches('\0').to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key Docker uses for Hub.
    const HUB_KEY: &str = "https://index.docker.io/v1/";

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn reads_auths_from_the_file_and_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let file = serde_json::json!({
            "auths": {
                HUB_KEY: {"auth": b64("hubuser:hubpass\0\0")},
                "http://127.0.0.1:5000": {"username": "u", "password": "p"},
                "https://reg.example.com/": {"identitytoken": "idtok"},
                "reg.example.com/some/path": {"auth": b64("x:y")},
                "empty.example.com": {},
                "override.example.com": {"auth": b64("old:old")}
            },
            "credHelpers": {"ecr.example.com": "ecr-login"}
        });
        std::fs::write(&path, file.to_string()).unwrap();
        let env = serde_json::json!({"auths": {"override.example.com": {"auth": b64("new:new")}}});
        let hosts = hosts_from(Some(&path), Some(&env.to_string())).unwrap();
        let get = |n: &str| hosts.iter().find(|h| h.name == n).cloned();

        let hub = get("docker.io").unwrap();
        assert_eq!(
            (hub.user.as_str(), hub.pass.as_str()),
            ("hubuser", "hubpass")
        );
        assert_eq!(hub.hostname, "registry-1.docker.io");
        assert_eq!(hub.tls, Tls::Enabled);

        let local = get("127.0.0.1:5000").unwrap();
        assert_eq!(local.tls, Tls::Disabled);
        assert_eq!((local.user.as_str(), local.pass.as_str()), ("u", "p"));

        let tok = get("reg.example.com").unwrap();
        assert_eq!(tok.token, "idtok");
        assert!(tok.user.is_empty());

        assert!(get("empty.example.com").is_none());
        assert_eq!(get("override.example.com").unwrap().user, "new");
        assert_eq!(hosts.len(), 4);
    }

    #[test]
    fn missing_file_is_empty_and_broken_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        assert!(hosts_from(Some(&path), None).unwrap().is_empty());
        std::fs::write(&path, "   ").unwrap();
        assert!(hosts_from(Some(&path), None).unwrap().is_empty());
        std::fs::write(&path, "{not json").unwrap();
        let e = hosts_from(Some(&path), None).unwrap_err().to_string();
        assert!(e.contains("config.json"), "{e}");
        std::fs::write(&path, r#"{"auths":{"r.io":{"auth":"!!!"}}}"#).unwrap();
        assert!(hosts_from(Some(&path), None).is_err());
        assert!(hosts_from(None, Some("\"text\"")).is_err());
    }

    #[test]
    fn config_location() {
        let p = config_path(Some("/cfg".into()), Some("/home/u".into()));
        assert_eq!(p.unwrap(), PathBuf::from("/cfg/config.json"));
        let p = config_path(None, Some("/home/u".into()));
        assert_eq!(p.unwrap(), PathBuf::from("/home/u/.docker/config.json"));
        assert!(config_path(None, None).is_none());
    }

    #[test]
    fn key_normalisation() {
        assert_eq!(
            registry_name(HUB_KEY),
            Some(("docker.io".into(), Tls::Enabled))
        );
        assert_eq!(
            registry_name("registry-1.docker.io"),
            Some(("docker.io".into(), Tls::Enabled))
        );
        assert_eq!(
            registry_name("http://h:5000/"),
            Some(("h:5000".into(), Tls::Disabled))
        );
        assert_eq!(registry_name("https://h/v2/"), None);
        assert_eq!(registry_name("h/path"), None);
    }
}
