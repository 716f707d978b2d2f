//! A CNCF distribution (`docker-registry serve`) process on 127.0.0.1, one per guard.
//!
//! Storage is a filesystem tempdir, `storage.delete.enabled: true`, no blob-descriptor cache
//! (it breaks DELETE in 2.8), and the access log on: the child's stdout+stderr go to
//! `registry.log`, whose Apache-combined lines (`"PUT /v2/x/manifests/v1 HTTP/1.1" 201 ...`)
//! are parsed by [`Registry::access_log`].

use super::{block_on, http, Endpoint};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// Options for [`Registry::start_with`].
#[derive(Clone, Debug, Default)]
pub struct RegistryOpts {
    /// htpasswd basic auth with these credentials.
    pub auth: Option<(String, String)>,
    /// `storage.maintenance.readonly`: pulls work, pushes get 405.
    pub readonly: bool,
    /// Serve https (`http.tls`). The harness's own raw client (`oci`) speaks plain http
    /// only: seed such a registry through regsync from a plain one.
    pub tls: Option<TlsOpts>,
    /// `compatibility.schema1.enabled`: accept Docker schema 1 manifest pushes (refused by
    /// default in 2.8). The registry stores the signed payload and re-signs it with its own
    /// ephemeral key on every GET.
    pub schema1: bool,
    /// `storage.delete.enabled: false`: every DELETE is refused (405 `UNSUPPORTED`), as on a
    /// registry whose operator never turned deletes on.
    pub no_delete: bool,
}

/// `http.tls` of a registry: PEM files for its certificate and key, and optionally the CAs
/// a client certificate must chain to (`clientcas`: then every client needs one).
#[derive(Clone, Debug, Default)]
pub struct TlsOpts {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_cas: Option<PathBuf>,
    /// Certificate and key (PEM files) the harness presents itself (readiness probe, access
    /// log markers); needed with `client_cas`.
    pub harness_identity: Option<(PathBuf, PathBuf)>,
}

/// One access-log line: method, request URI (path + query, as sent), status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessLine {
    pub method: String,
    pub path: String,
    pub status: u16,
}

pub struct Registry {
    child: Option<Child>,
    pid: u32,
    port: u16,
    opts: RegistryOpts,
    dir: tempfile::TempDir,
}

static MARKER: AtomicU64 = AtomicU64::new(0);
const MARKER_PREFIX: &str = "/harness-sync-marker/";

impl Registry {
    /// A plain-HTTP registry without auth.
    pub fn start() -> Registry {
        Self::start_with(RegistryOpts::default())
    }

    /// A registry that requires basic auth (htpasswd, bcrypt).
    pub fn with_auth(user: &str, pass: &str) -> Registry {
        Self::start_with(RegistryOpts {
            auth: Some((user.to_string(), pass.to_string())),
            readonly: false,
            tls: None,
            schema1: false,
            no_delete: false,
        })
    }

    pub fn start_with(opts: RegistryOpts) -> Registry {
        assert!(
            Path::new(REGISTRY_BIN).exists(),
            "{REGISTRY_BIN} missing: apt-get install docker-registry"
        );
        let dir = tempfile::Builder::new()
            .prefix("regsync-test-reg")
            .tempdir()
            .expect("tempdir");
        fs::create_dir_all(dir.path().join("data")).unwrap();
        if let Some((u, p)) = &opts.auth {
            fs::write(dir.path().join("htpasswd"), htpasswd_line(u, p)).unwrap();
        }
        let mut r = Registry {
            child: None,
            pid: 0,
            port: 0,
            opts,
            dir,
        };
        r.spawn(None);
        r
    }

    /// Stop and start again on the same data (and the same port when still free), e.g. to
    /// seed first and then switch to read-only.
    pub fn restart(&mut self, readonly: bool) {
        self.stop();
        self.opts.readonly = readonly;
        let port = self.port;
        self.spawn(Some(port));
    }

    fn spawn(&mut self, want_port: Option<u16>) {
        let mut last_err = String::new();
        for attempt in 0..8 {
            let port = match (want_port, attempt) {
                (Some(p), 0) => p,
                _ => free_port(),
            };
            self.write_config(port);
            let log = self.log_path();
            // Keep earlier log content across restarts (append).
            let f = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .expect("open registry log");
            let start_len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let mut cmd = Command::new(REGISTRY_BIN);
            cmd.arg("serve")
                .arg(self.dir.path().join("config.yml"))
                .stdin(Stdio::null())
                .stdout(Stdio::from(f.try_clone().unwrap()))
                .stderr(Stdio::from(f))
                .env_remove("REGISTRY_HTTP_ADDR");
            set_pdeathsig(&mut cmd);
            let child = cmd.spawn().expect("spawn docker-registry");
            self.pid = child.id();
            self.port = port;
            self.child = Some(child);
            match self.wait_ready(Duration::from_secs(20)) {
                Ok(()) => return,
                Err(e) => {
                    self.stop();
                    let text = read_from(&log, start_len);
                    last_err = format!("{e}\n{text}");
                    if text.contains("address already in use") {
                        continue;
                    }
                    break;
                }
            }
        }
        panic!("docker-registry failed to start: {last_err}");
    }

    fn write_config(&self, port: u16) {
        let d = self.dir.path();
        let mut c = String::new();
        c.push_str("version: 0.1\n");
        c.push_str("log:\n  level: warn\n  formatter: text\n  accesslog:\n    disabled: false\n");
        c.push_str(&format!(
            "storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: {}\n",
            d.join("data").display(),
            !self.opts.no_delete
        ));
        c.push_str(&format!(
            "  maintenance:\n    uploadpurging:\n      enabled: false\n    readonly:\n      enabled: {}\n",
            self.opts.readonly
        ));
        c.push_str(&format!(
            "http:\n  addr: 127.0.0.1:{port}\n  secret: regsync-test-{port}\n  headers:\n    X-Content-Type-Options: [nosniff]\n"
        ));
        if let Some(tls) = &self.opts.tls {
            c.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                tls.cert.display(),
                tls.key.display()
            ));
            if let Some(cas) = &tls.client_cas {
                c.push_str(&format!("    clientcas:\n      - {}\n", cas.display()));
            }
        }
        if self.opts.schema1 {
            c.push_str("compatibility:\n  schema1:\n    enabled: true\n");
        }
        if self.opts.auth.is_some() {
            c.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: regsync-test\n    path: {}\n",
                d.join("htpasswd").display()
            ));
        }
        fs::write(d.join("config.yml"), c).unwrap();
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let url = format!("{}/v2/", self.url());
        loop {
            if let Some(ch) = self.child.as_mut() {
                if let Ok(Some(st)) = ch.try_wait() {
                    return Err(format!("registry exited early: {st}"));
                }
            }
            let r = block_on(async {
                self.client()
                    .get(&url)
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            });
            if let Ok(s) = r {
                if s == 200 || s == 401 {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err("timeout waiting for GET /v2/".into());
            }
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// Stop the process: SIGTERM, then SIGKILL after 3 s; reaps it. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut ch) = self.child.take() {
            if let Ok(None) = ch.try_wait() {
                unsafe {
                    libc::kill(ch.id() as libc::pid_t, libc::SIGTERM);
                }
                let deadline = Instant::now() + Duration::from_secs(3);
                loop {
                    match ch.try_wait() {
                        Ok(Some(_)) => break,
                        Ok(None) if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(20))
                        }
                        _ => {
                            let _ = ch.kill();
                            let _ = ch.wait();
                            break;
                        }
                    }
                }
            }
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// `http://127.0.0.1:PORT` (`https://` with [`RegistryOpts::tls`]).
    pub fn url(&self) -> String {
        let scheme = if self.opts.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The client for the harness's own requests: the shared plain one, or for a TLS registry
    /// one that trusts anything and presents the harness identity.
    fn client(&self) -> reqwest::Client {
        let Some(tls) = &self.opts.tls else {
            return http().clone();
        };
        let mut b = reqwest::Client::builder()
            .no_proxy()
            .danger_accept_invalid_certs(true)
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5));
        if let Some((cert, key)) = &tls.harness_identity {
            let mut pem = fs::read(cert).expect("harness cert");
            pem.push(b'\n');
            pem.extend(fs::read(key).expect("harness key"));
            b = b.identity(reqwest::Identity::from_pem(&pem).expect("harness identity"));
        }
        b.build().expect("harness TLS client")
    }
    /// `127.0.0.1:PORT`
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn pid(&self) -> u32 {
        self.pid
    }
    pub fn auth(&self) -> Option<(String, String)> {
        self.opts.auth.clone()
    }
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }
    /// `ref` string `127.0.0.1:PORT/<repo>:<tag>`.
    pub fn r(&self, repo_tag: &str) -> String {
        format!("{}/{}", self.host(), repo_tag)
    }
    /// A `Loc` for the oci reader/pusher, carrying this registry's credentials.
    pub fn loc(&self) -> super::Loc {
        super::Loc::from(self)
    }

    /// All access-log lines so far (harness sync markers excluded). Sends a marker request and
    /// waits until it is logged, so every request answered before the call is included.
    pub fn access_log(&self) -> Vec<AccessLine> {
        self.sync_log();
        parse_access_log(&fs::read_to_string(self.log_path()).unwrap_or_default())
    }

    /// Number of access-log lines so far; pass to [`Registry::access_since`].
    pub fn mark(&self) -> usize {
        self.access_log().len()
    }

    pub fn access_since(&self, mark: usize) -> Vec<AccessLine> {
        self.access_log().into_iter().skip(mark).collect()
    }

    /// Requests with this method (case-insensitive; "" = any) whose URI contains `path_contains`.
    pub fn count(&self, method: &str, path_contains: &str) -> usize {
        count_lines(&self.access_log(), method, path_contains)
    }

    pub fn count_since(&self, mark: usize, method: &str, path_contains: &str) -> usize {
        count_lines(&self.access_since(mark), method, path_contains)
    }

    /// Writes (PUT/POST/PATCH/DELETE) since `mark`, for "changed nothing" assertions.
    pub fn writes_since(&self, mark: usize) -> Vec<AccessLine> {
        self.access_since(mark)
            .into_iter()
            .filter(|l| matches!(l.method.as_str(), "PUT" | "POST" | "PATCH" | "DELETE"))
            .collect()
    }

    fn sync_log(&self) {
        let n = MARKER.fetch_add(1, Ordering::SeqCst);
        let path = format!("{MARKER_PREFIX}{}-{n}", std::process::id());
        let _ = block_on(async {
            self.client()
                .get(format!("{}{}", self.url(), path))
                .timeout(Duration::from_secs(5))
                .send()
                .await
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let s = fs::read_to_string(self.log_path()).unwrap_or_default();
            if s.contains(&path) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Endpoint for Registry {
    fn host(&self) -> String {
        Registry::host(self)
    }
    fn creds(&self) -> Option<(String, String)> {
        self.auth()
    }
}

pub fn count_lines(lines: &[AccessLine], method: &str, path_contains: &str) -> usize {
    lines
        .iter()
        .filter(|l| method.is_empty() || l.method.eq_ignore_ascii_case(method))
        .filter(|l| l.path.contains(path_contains))
        .count()
}

/// Parse Apache-combined lines `... "METHOD URI HTTP/1.1" STATUS SIZE ...`; other lines
/// (registry's own logs) are ignored, as are the harness's marker requests.
pub fn parse_access_log(text: &str) -> Vec<AccessLine> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("time=") {
            continue;
        }
        let Some(q1) = line.find("] \"") else {
            continue;
        };
        let rest = &line[q1 + 3..];
        let Some(q2) = rest.find('"') else { continue };
        let req = &rest[..q2];
        let after = rest[q2 + 1..].trim_start();
        let mut parts = req.split(' ');
        let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Some(status) = after.split(' ').next().and_then(|s| s.parse::<u16>().ok()) else {
            continue;
        };
        if path.starts_with(MARKER_PREFIX) {
            continue;
        }
        out.push(AccessLine {
            method: method.to_string(),
            path: path.to_string(),
            status,
        });
    }
    out
}

fn free_port() -> u16 {
    super::free_port()
}

fn read_from(path: &Path, offset: u64) -> String {
    let mut s = String::new();
    if let Ok(mut f) = fs::File::open(path) {
        use std::io::Seek;
        let _ = f.seek(std::io::SeekFrom::Start(offset));
        let _ = f.read_to_string(&mut s);
    }
    s
}

/// bcrypt (cost 4) htpasswd line from the `htpasswd` binary (apache2-utils); falls back to a
/// precomputed hash for the default test credentials.
fn htpasswd_line(user: &str, pass: &str) -> String {
    let out = Command::new("htpasswd")
        .args(["-Bbn", "-C", "4", user, pass])
        .stderr(Stdio::null())
        .output();
    if let Ok(o) = out {
        if o.status.success() {
            let s = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if !s.is_empty() {
                return format!("{s}\n");
            }
        }
    }
    if user == "testuser" && pass == "testpass" {
        return "testuser:$2y$04$zBbd7TX7/FIeh7nn27vjBeQhphzJk2x4Kgm/oe1.Miu5Cj4FHOpDO\n".into();
    }
    panic!("htpasswd binary not found (apt-get install apache2-utils)");
}

/// Ask the kernel to SIGKILL the registry if the creating thread/process dies without
/// running Drop (e.g. the test binary is killed on timeout).
fn set_pdeathsig(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}
