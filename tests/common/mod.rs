//! Integration-test harness for regsync-rs.
//!
//! Everything here is independent of the crate under test: registries are real CNCF
//! distribution (`/usr/bin/docker-registry`) processes, images are built and pushed with a
//! small raw client written directly on reqwest, and the tool is run as a subprocess.
//!
//! * [`registry::Registry`]: a registry process guard (free port, tempdir storage, access log,
//!   optional htpasswd auth, optional read-only mode). Dropping it stops the process.
//! * [`oci`]: deterministic synthetic images, pushing to registries / writing OCI layouts,
//!   reading back, and `assert_same_image`.
//! * [`proxy::TokenProxy`]: an axum reverse proxy that demands Bearer tokens (Docker-Hub-like).
//! * [`run`]: `regsync(args, config)` runner with JSON log parsing and the `Sync summary` line.
//!
//! Every test starts its own registries, so tests run in parallel. Guards must be dropped on
//! the thread that created them (the registry child gets `PR_SET_PDEATHSIG`, which fires when
//! the creating thread exits), so never keep a `Registry` in a static.
#![allow(dead_code, unused_imports)]

pub mod faults;
pub mod fixtures;
pub mod oci;
pub mod proxy;
pub mod registry;
pub mod rewrite;
pub mod run;
pub mod server;

pub use oci::{
    assert_has_image, assert_same_image, assert_same_image_at, assert_same_repo, blob_exists,
    blob_size, catalog, docker_image, get_blob, get_manifest, index_image, layer, manifest_digest,
    manifest_list_image, multi_platform, oci_image, ocidir_ref, push, tags, write_layout, Blob,
    Format, ImageSpec, Loc, TestImage,
};
pub use proxy::{ProxyOpts, TokenProxy};
pub use registry::{AccessLine, Registry, RegistryOpts};
pub use run::{
    assert_summary, assert_summary_complete, log_mentions, regsync, regsync_env, regsync_raw,
    run_argv, summary, summary_field, Output,
};

use std::future::Future;
use std::sync::OnceLock;

/// One shared multi-threaded tokio runtime for the harness (HTTP client, token proxy).
pub fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("harness-rt")
            .enable_all()
            .build()
            .expect("harness runtime")
    })
}

/// Run a future to completion on the harness runtime (call from test threads only).
pub fn block_on<F: Future>(f: F) -> F::Output {
    rt().block_on(f)
}

/// A plain HTTP client: no proxies from the environment, no redirects followed silently beyond
/// reqwest's default, short timeouts suited to loopback.
pub fn http() -> &'static reqwest::Client {
    static C: OnceLock<reqwest::Client> = OnceLock::new();
    C.get_or_init(|| {
        reqwest::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_secs(30))
            .connect_timeout(std::time::Duration::from_secs(5))
            .build()
            .expect("http client")
    })
}

/// Something regsync can be pointed at: a host name plus optional credentials.
pub trait Endpoint {
    /// `127.0.0.1:PORT`
    fn host(&self) -> String;
    /// `(user, pass)` that regsync should be configured with, if any.
    fn creds(&self) -> Option<(String, String)>;
}

/// An arbitrary host/credentials pair (e.g. deliberately wrong credentials, closed ports).
pub struct HostCreds {
    pub host: String,
    pub creds: Option<(String, String)>,
}

impl HostCreds {
    pub fn new(host: &str, user: &str, pass: &str) -> HostCreds {
        HostCreds {
            host: host.to_string(),
            creds: Some((user.to_string(), pass.to_string())),
        }
    }
    pub fn plain(host: &str) -> HostCreds {
        HostCreds {
            host: host.to_string(),
            creds: None,
        }
    }
}

impl Endpoint for HostCreds {
    fn host(&self) -> String {
        self.host.clone()
    }
    fn creds(&self) -> Option<(String, String)> {
        self.creds.clone()
    }
}

/// A `creds:` YAML block (with the `creds:` key) for the given endpoints: `tls: disabled`
/// plus user/pass when the endpoint has them.
pub fn creds_yaml(eps: &[&dyn Endpoint]) -> String {
    if eps.is_empty() {
        return "creds: []\n".into();
    }
    let mut s = String::from("creds:\n");
    for e in eps {
        s.push_str(&format!("  - registry: {}\n    tls: disabled\n", e.host()));
        if let Some((u, p)) = e.creds() {
            s.push_str(&format!("    user: \"{u}\"\n    pass: \"{p}\"\n"));
        }
    }
    s
}

/// `cfg` (from [`config`]) with the creds entry of `host` paced at `per_sec` requests a
/// second (`reqPerSec`): a slow registry, so that a run lasts long enough to watch.
pub fn paced(cfg: &str, host: &str, per_sec: u32) -> String {
    let entry = format!("  - registry: {host}\n    tls: disabled\n");
    assert!(cfg.contains(&entry), "no creds entry for {host} in\n{cfg}");
    cfg.replacen(&entry, &format!("{entry}    reqPerSec: {per_sec}\n"), 1)
}

/// A full config: `version: 1`, creds for `eps`, `defaults.parallel`, and the given sync steps
/// (each a YAML mapping body without the leading `- `, e.g. `"source: a\ntarget: b\ntype: image"`).
pub fn config(eps: &[&dyn Endpoint], parallel: u32, steps: &[String]) -> String {
    let mut s = String::from("version: 1\n");
    s.push_str(&creds_yaml(eps));
    s.push_str(&format!("defaults:\n  parallel: {parallel}\n"));
    s.push_str("sync:\n");
    for st in steps {
        let mut first = true;
        for line in st.lines() {
            if line.trim().is_empty() {
                continue;
            }
            s.push_str(if first { "  - " } else { "    " });
            s.push_str(line);
            s.push('\n');
            first = false;
        }
    }
    s
}

/// `type: image` step.
pub fn image_step(source: &str, target: &str) -> String {
    format!("source: {source}\ntarget: {target}\ntype: image\n")
}

/// `type: repository` step with optional tag allow/deny lists.
pub fn repo_step(source: &str, target: &str, allow: &[&str], deny: &[&str]) -> String {
    let mut s = format!("source: {source}\ntarget: {target}\ntype: repository\n");
    s.push_str(&filter_yaml("tags", allow, deny));
    s
}

/// `type: registry` step with optional repo allow/deny lists.
pub fn registry_step(source: &str, target: &str, allow: &[&str], deny: &[&str]) -> String {
    let mut s = format!("source: {source}\ntarget: {target}\ntype: registry\n");
    s.push_str(&filter_yaml("repos", allow, deny));
    s
}

fn filter_yaml(key: &str, allow: &[&str], deny: &[&str]) -> String {
    if allow.is_empty() && deny.is_empty() {
        return String::new();
    }
    let q = |v: &[&str]| {
        v.iter()
            .map(|p| format!("'{}'", p.replace('\'', "''")))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut s = format!("{key}:\n");
    if !allow.is_empty() {
        s.push_str(&format!("  allow: [{}]\n", q(allow)));
    }
    if !deny.is_empty() {
        s.push_str(&format!("  deny: [{}]\n", q(deny)));
    }
    s
}

/// A free loopback port (bound then released; used to pick registry ports).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let p = l.local_addr().unwrap().port();
    drop(l);
    p
}

/// A loopback port that refuses connections for as long as the guard lives: a TCP socket is
/// bound to it but never listens, so nobody else can take the port in the meantime.
pub struct ClosedPort {
    fd: i32,
    port: u16,
}

impl ClosedPort {
    pub fn new() -> ClosedPort {
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0, "socket()");
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            addr.sin_family = libc::AF_INET as libc::sa_family_t;
            addr.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
            addr.sin_port = 0;
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let rc = libc::bind(fd, &addr as *const _ as *const libc::sockaddr, len);
            assert_eq!(rc, 0, "bind()");
            let mut got: libc::sockaddr_in = std::mem::zeroed();
            let mut glen = len;
            let rc = libc::getsockname(fd, &mut got as *mut _ as *mut libc::sockaddr, &mut glen);
            assert_eq!(rc, 0, "getsockname()");
            ClosedPort {
                fd,
                port: u16::from_be(got.sin_port),
            }
        }
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    /// `127.0.0.1:PORT`
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Default for ClosedPort {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ClosedPort {
    fn drop(&mut self) {
        unsafe {
            libc::close(self.fd);
        }
    }
}
