//! TLS settings of a registry host → the reqwest (rustls) client that talks to it (spec §7.5).
//!
//! * `tls: enabled`: verified https. Trusted: the system roots (the first CA bundle found, as
//!   Go looks for it: `$SSL_CERT_FILE`, `/etc/ssl/certs/ca-certificates.crt`, ...; plus the
//!   files of `$SSL_CERT_DIR`), then, unless `skipDockerConfig`, every `*.crt` in
//!   `/etc/docker/certs.d/<hostname>/`, then `regcert`. Without any system bundle the Mozilla
//!   roots compiled into reqwest are used instead.
//! * `tls: insecure`: https without any verification.
//! * `tls: disabled`: plain http (the client still verifies https redirects).
//! * `clientCert` + `clientKey`: the identity offered to servers asking for one (mTLS).
//!
//! Like regclient, invalid CA material (an unreadable `certs.d` file, a `regcert` without any
//! certificate, a certificate rustls refuses) is a warning, `Failed to setup CA pool`, and
//! only the default roots are used for that host; an unusable client certificate or key is a
//! warning, `Failed to configure client certs`, and no certificate is offered.

use super::{HostConfig, RegistryError, Tls};
use reqwest::{Certificate, Identity};
use slog::{debug, warn, Logger};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

/// Docker's per-registry certificate directories (`<dir>/<hostname>/*.crt`).
pub(crate) const DOCKER_CERTS_DIR: &str = "/etc/docker/certs.d";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Go's `crypto/x509` search list on Linux: the first file that exists is the bundle.
const SYSTEM_CERT_FILES: [&str; 6] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// Everything that makes two hosts need different HTTP clients; hosts with equal keys share
/// one client and so one connection pool.
/// No `Debug`: it holds the client key.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct TlsKey {
    insecure: bool,
    /// `*.crt` files of the host's `certs.d` directory: (path, content), in name order.
    certs_d: Vec<(PathBuf, String)>,
    /// Reading the `certs.d` directory failed (other than "does not exist").
    certs_d_error: Option<String>,
    regcert: String,
    client_cert: String,
    client_key: String,
}

impl TlsKey {
    /// The key of a host; `certs_dir` is the Docker certificate directory to look in (None:
    /// `skipDockerConfig`).
    pub fn of(h: &HostConfig, certs_dir: Option<&Path>) -> TlsKey {
        match h.tls {
            // Plain http never negotiates TLS with the registry: share the default client.
            Tls::Disabled => TlsKey::default(),
            Tls::Insecure => TlsKey {
                insecure: true,
                client_cert: h.client_cert.clone(),
                client_key: h.client_key.clone(),
                ..TlsKey::default()
            },
            Tls::Enabled => {
                let (certs_d, certs_d_error) = match certs_dir {
                    Some(dir) if !h.skip_docker_certs => read_certs_dir(dir, &h.hostname),
                    _ => (Vec::new(), None),
                };
                TlsKey {
                    insecure: false,
                    certs_d,
                    certs_d_error,
                    regcert: h.regcert.clone(),
                    client_cert: h.client_cert.clone(),
                    client_key: h.client_key.clone(),
                }
            }
        }
    }
}

/// `<dir>/<hostname>/*.crt` (regular files, by name). A missing directory is no error.
fn read_certs_dir(dir: &Path, hostname: &str) -> (Vec<(PathBuf, String)>, Option<String>) {
    // A hostname is `host[:port]`; anything that could leave the directory is not one.
    if hostname.is_empty() || hostname.contains('/') || hostname == "." || hostname == ".." {
        return (Vec::new(), None);
    }
    let host_dir = dir.join(hostname);
    let entries = match std::fs::read_dir(&host_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (Vec::new(), None),
        Err(e) => {
            return (
                Vec::new(),
                Some(format!(
                    "failed to read directory {}: {e}",
                    host_dir.display()
                )),
            )
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| !t.is_dir()).unwrap_or(false))
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "crt"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        match std::fs::read_to_string(&p) {
            Ok(text) => out.push((p, text)),
            Err(e) => {
                return (
                    Vec::new(),
                    Some(format!("failed to read {}: {e}", p.display())),
                )
            }
        }
    }
    (out, None)
}

/// The CA certificates of one PEM text; an error when it holds none (Go's
/// `AppendCertsFromPEM` returning false).
fn pem_certs(pem: &str, what: &str) -> Result<Vec<Certificate>, String> {
    match Certificate::from_pem_bundle(pem.as_bytes()) {
        Ok(certs) if !certs.is_empty() => Ok(certs),
        Ok(_) => Err(format!("no certificate found in {what}")),
        Err(e) => Err(format!("invalid certificate in {what}: {e}")),
    }
}

/// The extra roots of a key, or why the custom pool cannot be used.
fn custom_roots(key: &TlsKey) -> Result<Vec<Certificate>, String> {
    if let Some(e) = &key.certs_d_error {
        return Err(e.clone());
    }
    let mut out = Vec::new();
    for (path, text) in &key.certs_d {
        out.extend(pem_certs(text, &path.display().to_string())?);
    }
    if !key.regcert.is_empty() {
        out.extend(pem_certs(&key.regcert, "regcert")?);
    }
    Ok(out)
}

/// The client identity of a key: None without `clientCert`/`clientKey`.
fn identity(key: &TlsKey) -> Result<Option<Identity>, String> {
    match (
        key.client_cert.trim().is_empty(),
        key.client_key.trim().is_empty(),
    ) {
        (true, true) => Ok(None),
        (false, false) => {
            let pem = format!("{}\n{}\n", key.client_cert.trim(), key.client_key.trim());
            Identity::from_pem(pem.as_bytes())
                .map(Some)
                .map_err(|e| super::client::error_chain(&e))
        }
        _ => Err("clientCert and clientKey must both be set".into()),
    }
}

/// The system CA bundle, read once: `$SSL_CERT_FILE` or the first of Go's bundle files, plus
/// the files of the `$SSL_CERT_DIR` directories. Empty when none is found or rustls refuses
/// it; reqwest's built-in roots are used then.
///
/// The one process-wide value of the registry client, on purpose: it is read-only data of the
/// machine (environment and files), not state of a run or a store, so two engines cannot
/// influence each other through it. Go's `crypto/x509` (and so regsync) likewise loads the
/// system pool once per process; a SIGHUP reload does not re-read it there either, and
/// reading and parsing a few hundred certificates per engine would only cost start-up time.
fn system_roots(log: &Logger) -> &'static [Certificate] {
    static ROOTS: OnceLock<Vec<Certificate>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut pems: Vec<(String, String)> = Vec::new();
        let files: Vec<String> = match std::env::var("SSL_CERT_FILE") {
            Ok(f) if !f.is_empty() => vec![f],
            _ => SYSTEM_CERT_FILES.iter().map(|s| s.to_string()).collect(),
        };
        for f in files {
            if let Ok(text) = std::fs::read_to_string(&f) {
                pems.push((f, text));
                break;
            }
        }
        if let Ok(dirs) = std::env::var("SSL_CERT_DIR") {
            for dir in dirs.split(':').filter(|d| !d.is_empty()) {
                let Ok(entries) = std::fs::read_dir(dir) else {
                    continue;
                };
                let mut paths: Vec<PathBuf> =
                    entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
                paths.sort();
                for p in paths {
                    if let Ok(text) = std::fs::read_to_string(&p) {
                        pems.push((p.display().to_string(), text));
                    }
                }
            }
        }
        let mut roots = Vec::new();
        for (name, text) in &pems {
            match Certificate::from_pem_bundle(text.as_bytes()) {
                Ok(certs) => roots.extend(certs),
                Err(e) => debug!(log, "skipping system CA file"; "file" => name, "err" => %e),
            }
        }
        if roots.is_empty() {
            return roots;
        }
        // rustls refuses a root it cannot parse, and with it the whole client: make sure the
        // bundle is usable before relying on it.
        match builder("probe")
            .tls_built_in_root_certs(false)
            .tap_roots(&roots)
            .build()
        {
            Ok(_) => roots,
            Err(e) => {
                debug!(log, "system CA bundle unusable, using built-in roots";
                    "err" => super::client::error_chain(&e));
                Vec::new()
            }
        }
    })
}

/// Add root certificates to a builder.
trait TapRoots {
    fn tap_roots(self, roots: &[Certificate]) -> Self;
}

impl TapRoots for reqwest::ClientBuilder {
    fn tap_roots(mut self, roots: &[Certificate]) -> Self {
        for cert in roots {
            self = self.add_root_certificate(cert.clone());
        }
        self
    }
}

/// Settings every registry client shares.
fn builder(user_agent: &str) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(user_agent)
        .redirect(super::origin::redirect_policy())
        // The previous URL may be a registry URL carrying upload state: never pass it on.
        .referer(false)
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_keepalive(Duration::from_secs(60))
        .http2_adaptive_window(true)
}

/// A client for URLs that are not registries (`http` hooks): the same trusted roots as the
/// registry clients, and nothing of any registry's settings: no credentials, no client
/// certificate, no redirects followed, no `Referer`.
pub(crate) fn plain_client(user_agent: &str, log: &Logger) -> reqwest::Result<reqwest::Client> {
    let system = system_roots(log);
    let mut b = reqwest::Client::builder()
        .user_agent(user_agent)
        .redirect(reqwest::redirect::Policy::none())
        .referer(false)
        .connect_timeout(CONNECT_TIMEOUT);
    if !system.is_empty() {
        b = b.tls_built_in_root_certs(false).tap_roots(system);
    }
    b.build()
}

/// The HTTP client for one TLS key. `name` only labels warnings and errors.
pub(crate) fn build_http(
    key: &TlsKey,
    name: &str,
    user_agent: &str,
    log: &Logger,
) -> Result<reqwest::Client, RegistryError> {
    let system = system_roots(log);
    let make = |custom: &[Certificate], id: Option<&Identity>| {
        let mut b = builder(user_agent);
        if key.insecure {
            b = b.danger_accept_invalid_certs(true);
        } else if !system.is_empty() {
            b = b.tls_built_in_root_certs(false).tap_roots(system);
        }
        b = b.tap_roots(custom);
        if let Some(id) = id {
            b = b.identity(id.clone());
        }
        b.build()
    };

    let mut id = match identity(key) {
        Ok(id) => id,
        Err(e) => {
            warn!(log, "Failed to configure client certs"; "registry" => name, "err" => e);
            None
        }
    };
    if let Some(i) = &id {
        // Identity::from_pem only splits the PEM; rustls checks the key when building.
        if let Err(e) = make(&[], Some(i)) {
            warn!(log, "Failed to configure client certs"; "registry" => name,
                "err" => super::client::error_chain(&e));
            id = None;
        }
    }
    let mut custom = Vec::new();
    if !key.insecure {
        match custom_roots(key) {
            Ok(c) => custom = c,
            Err(e) => warn!(log, "Failed to setup CA pool"; "registry" => name, "err" => e),
        }
    }
    match make(&custom, id.as_ref()) {
        Ok(c) => Ok(c),
        Err(e) if !custom.is_empty() => {
            warn!(log, "Failed to setup CA pool"; "registry" => name,
                "err" => super::client::error_chain(&e));
            make(&[], id.as_ref()).map_err(|e| RegistryError::HttpClient {
                registry: name.to_string(),
                detail: super::client::error_chain(&e),
            })
        }
        Err(e) => Err(RegistryError::HttpClient {
            registry: name.to_string(),
            detail: super::client::error_chain(&e),
        }),
    }
}

/// A certificate the client refuses stays refused: no point in retrying.
pub(crate) fn is_permanent(err: &crate::store::StoreError) -> bool {
    matches!(err, crate::store::StoreError::Network { detail, .. }
        if detail.contains("invalid peer certificate"))
}

/// What to configure, for a request to `url` on `host` that failed with `detail`: certificate
/// errors name `regcert`/`tls: insecure` or `clientCert`/`clientKey`.
pub(crate) fn hint(detail: &str, url: &url::Url, host: &HostConfig) -> Option<&'static str> {
    let d = detail.to_ascii_lowercase();
    if url.scheme() != "https" {
        return None;
    }
    if d.contains("invalid peer certificate") {
        return Some("the registry's certificate is not trusted: add its CA with regcert or /etc/docker/certs.d/<hostname>/*.crt, or set tls: insecure");
    }
    let no_identity = host.client_cert.is_empty() || host.client_key.is_empty();
    if d.contains("certificaterequired") || d.contains("certificate required") {
        return Some("the registry requires a client certificate: set clientCert and clientKey");
    }
    // TLS 1.3 servers refuse a missing client certificate after the handshake: the client
    // only sees the connection close.
    if no_identity
        && (d.contains("connection closed")
            || d.contains("connection reset")
            || d.contains("broken pipe")
            || d.contains("fatal alert"))
    {
        return Some("if the registry requires a client certificate, set clientCert and clientKey");
    }
    if d.contains("invalidcontenttype") || d.contains("corrupt message") {
        return Some("is the registry serving plain http? then set tls: disabled");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn null_log() -> Logger {
        Logger::root(slog::Discard, slog::o!())
    }

    #[test]
    fn keys_follow_the_tls_mode() {
        let dir = tempfile::tempdir().unwrap();
        let host = |tls| HostConfig {
            tls,
            regcert: "R".into(),
            client_cert: "C".into(),
            client_key: "K".into(),
            ..HostConfig::for_name("reg.example:5000")
        };
        assert!(TlsKey::of(&host(Tls::Disabled), Some(dir.path())) == TlsKey::default());
        let k = TlsKey::of(&host(Tls::Insecure), Some(dir.path()));
        assert!(k.insecure && k.regcert.is_empty() && k.client_key == "K");
        let k = TlsKey::of(&host(Tls::Enabled), Some(dir.path()));
        assert!(!k.insecure && k.regcert == "R" && k.client_cert == "C");
        assert!(k.certs_d.is_empty() && k.certs_d_error.is_none());
    }

    #[test]
    fn certs_d_files_are_read_unless_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let hd = dir.path().join("reg.example:5000");
        std::fs::create_dir_all(hd.join("sub.crt")).unwrap();
        std::fs::write(hd.join("b.crt"), "B").unwrap();
        std::fs::write(hd.join("a.crt"), "A").unwrap();
        std::fs::write(hd.join("client.cert"), "not a CA").unwrap();
        std::fs::write(hd.join("client.key"), "not a CA").unwrap();
        let h = HostConfig::for_name("reg.example:5000");
        let k = TlsKey::of(&h, Some(dir.path()));
        let names: Vec<_> = k
            .certs_d
            .iter()
            .map(|(p, t)| {
                (
                    p.file_name().unwrap().to_str().unwrap().to_string(),
                    t.clone(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("a.crt".to_string(), "A".to_string()),
                ("b.crt".into(), "B".into())
            ]
        );
        // skipDockerConfig, or no directory at all.
        let skip = HostConfig {
            skip_docker_certs: true,
            ..h.clone()
        };
        assert!(TlsKey::of(&skip, Some(dir.path())).certs_d.is_empty());
        assert!(TlsKey::of(&h, None).certs_d.is_empty());
        // Another host has no directory: no error.
        let other = HostConfig::for_name("other:5000");
        let k = TlsKey::of(&other, Some(dir.path()));
        assert!(k.certs_d.is_empty() && k.certs_d_error.is_none());
        // A hostname cannot escape the directory.
        assert!(read_certs_dir(dir.path(), "..").0.is_empty());
    }

    #[test]
    fn invalid_ca_material_is_reported() {
        let key = TlsKey {
            regcert: "not a certificate".into(),
            ..TlsKey::default()
        };
        let e = custom_roots(&key).unwrap_err();
        assert!(e.contains("regcert"), "{e}");
        let key = TlsKey {
            certs_d_error: Some("failed to read directory x".into()),
            ..TlsKey::default()
        };
        assert!(custom_roots(&key).is_err());
    }

    #[test]
    fn invalid_material_falls_back_to_default_roots() {
        let log = null_log();
        // Base64 that decodes, but to no valid certificate: rustls refuses it at build time.
        let key = TlsKey {
            regcert: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
            ..TlsKey::default()
        };
        build_http(&key, "r", "ua", &log).expect("falls back");
        let key = TlsKey {
            regcert: "garbage".into(),
            client_cert: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
            client_key: "garbage".into(),
            ..TlsKey::default()
        };
        build_http(&key, "r", "ua", &log).expect("warnings only");
        let key = TlsKey {
            insecure: true,
            client_cert: "x".into(),
            ..TlsKey::default()
        };
        build_http(&key, "r", "ua", &log).expect("half an identity is a warning");
    }

    #[test]
    fn identity_needs_both_parts() {
        let key = TlsKey {
            client_cert: "x".into(),
            ..TlsKey::default()
        };
        assert!(identity(&key).is_err());
        assert!(identity(&TlsKey::default()).unwrap().is_none());
    }

    #[test]
    fn hints_name_the_setting() {
        let https = url::Url::parse("https://r.example/v2/").unwrap();
        let http = url::Url::parse("http://r.example/v2/").unwrap();
        let h = HostConfig::for_name("r.example");
        let with_id = HostConfig {
            client_cert: "C".into(),
            client_key: "K".into(),
            ..h.clone()
        };
        let hint_for = |d: &str, u: &url::Url, h: &HostConfig| hint(d, u, h).unwrap_or("");
        assert!(
            hint_for("invalid peer certificate: UnknownIssuer", &https, &h).contains("regcert")
        );
        assert!(
            hint_for("received fatal alert: CertificateRequired", &https, &h)
                .contains("clientCert")
        );
        assert!(
            hint_for("operation was canceled: connection closed", &https, &h)
                .contains("clientCert")
        );
        assert!(hint(
            "operation was canceled: connection closed",
            &https,
            &with_id
        )
        .is_none());
        assert!(hint("connection closed", &http, &h).is_none());
        assert!(hint("connection refused", &https, &h).is_none());
    }
}
