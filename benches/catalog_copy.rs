//! `catalog_copy`: time `regsync once` copying a deterministic catalog between two real local
//! registries, against a "floor" (the least work a correct copy can do) and optionally skopeo.
//!
//! ```text
//! cargo bench --bench catalog_copy -- [--profile tiny|small] [--runs N] [--skopeo] [--jobs N]
//! ```
//!
//! 1. A source `docker-registry` is started and seeded (in parallel) with the profile's catalog:
//!    `small` = 20 repos x 5 tags x 3 layers of 1 MiB incompressible data, `tiny` = 2 x 2 x 2 of
//!    64 KiB; OCI manifests; the first layer of every image comes from a pool of 2 shared base
//!    layers, so blobs repeat across repositories.
//! 2. Floor: a minimal raw copier (the Rust twin of `shared/registry/refcopy.py`) plans from the
//!    tags, streams each distinct blob once GET -> POST + PUT `?digest=` with `--jobs` (4)
//!    concurrent jobs, cross-repo mounts it into the other repos that need it and PUTs the
//!    manifests byte for byte, children first, into a fresh empty target; the fastest of
//!    `--runs` such copies is `floor_seconds`.
//! 3. `--runs` (3) times: a fresh empty target, `regsync once -c CONFIG` (one `type: repository`
//!    step per repo, `defaults.parallel: 4`, `tls: disabled` for both hosts), then the target is
//!    read back and compared with the source (every tag's digest, every manifest byte for byte,
//!    every blob present with its size). A run that fails or does not verify fails the bench.
//! 4. A no-op `regsync once` against the synced target.
//! 5. `--skopeo`: `skopeo sync --all --preserve-digests --src yaml --dest docker` into fresh
//!    targets, verified the same way, median of `--runs`.
//!
//! stdout: exactly one JSON line; progress on stderr. Exit 0 only when every regsync run
//! succeeded and verified. The binary is the crate's `regsync` that `cargo bench` builds
//! (`target/release/regsync`), or `$REGSYNC_TEST_BIN` (e.g. the Go regsync, for comparison).
//! Without `--bench` in its arguments (i.e. under `cargo test --all-targets`) it does nothing.
//! `blobs` and `bytes` count per repository, like `seed.py`: (repo, blob) pairs, and the sum of
//! their sizes plus the manifests' sizes.

#[path = "../tests/common/mod.rs"]
mod common;

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use common::oci::{self, Blob, Format, ImageSpec, MANIFEST_ACCEPT};
use common::{Endpoint, Registry};
use futures::{StreamExt as _, TryStreamExt as _};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SKOPEO: &str = "/usr/bin/skopeo";
/// Wall-clock limit for one child process (regsync or skopeo).
const CHILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);

macro_rules! say {
    ($($t:tt)*) => { eprintln!("catalog_copy: {}", format!($($t)*)) };
}

// ---------------------------------------------------------------------------------------------
// Options and profiles
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Profile {
    name: &'static str,
    repos: usize,
    tags: usize,
    /// Layers per image, the first one from the shared base pool.
    layers: usize,
    layer_size: usize,
    base_pool: usize,
}

fn profile(name: &str) -> Option<Profile> {
    match name {
        "tiny" => Some(Profile {
            name: "tiny",
            repos: 2,
            tags: 2,
            layers: 2,
            layer_size: 64 << 10,
            base_pool: 2,
        }),
        "small" => Some(Profile {
            name: "small",
            repos: 20,
            tags: 5,
            layers: 3,
            layer_size: 1 << 20,
            base_pool: 2,
        }),
        _ => None,
    }
}

struct Opts {
    profile: Profile,
    runs: usize,
    skopeo: bool,
    jobs: usize,
}

const USAGE: &str =
    "usage: cargo bench --bench catalog_copy -- [--profile tiny|small] [--runs N] [--skopeo] [--jobs N]";

/// `None` = not invoked by `cargo bench` (no `--bench`): do nothing.
fn parse_args() -> Result<Option<Opts>> {
    let mut args = std::env::args().skip(1);
    let mut o = Opts {
        profile: profile("small").unwrap(),
        runs: 3,
        skopeo: false,
        jobs: 4,
    };
    let mut bench = false;
    while let Some(a) = args.next() {
        let (k, inline) = match a.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut val = |k: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| anyhow!("{k} needs a value\n{USAGE}"))
        };
        match k.as_str() {
            "--bench" => bench = true,
            "--profile" => {
                let v = val(&k)?;
                o.profile = profile(&v).ok_or_else(|| anyhow!("unknown profile {v}\n{USAGE}"))?;
            }
            "--runs" => {
                o.runs = val(&k)?.parse().context("--runs")?;
                ensure!(o.runs >= 1, "--runs must be at least 1");
            }
            "--jobs" => {
                o.jobs = val(&k)?.parse().context("--jobs")?;
                ensure!(o.jobs >= 1, "--jobs must be at least 1");
            }
            "--skopeo" => o.skopeo = true,
            "-h" | "--help" => {
                eprintln!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    Ok(bench.then_some(o))
}

// ---------------------------------------------------------------------------------------------
// Catalog seeding (parallel; the harness's `oci::push` is blocking, so one thread per job)
// ---------------------------------------------------------------------------------------------

/// What was seeded, per repository.
#[derive(Default)]
struct Catalog {
    repos: Vec<String>,
    /// repo -> tag -> digest
    tags: BTreeMap<String, BTreeMap<String, String>>,
    /// repo -> blob digest -> size
    repo_blobs: BTreeMap<String, BTreeMap<String, u64>>,
    manifest_bytes: u64,
}

impl Catalog {
    fn tag_count(&self) -> usize {
        self.tags.values().map(|t| t.len()).sum()
    }
    fn blob_count(&self) -> usize {
        self.repo_blobs.values().map(|b| b.len()).sum()
    }
    fn bytes(&self) -> u64 {
        self.repo_blobs
            .values()
            .flat_map(|b| b.values())
            .sum::<u64>()
            + self.manifest_bytes
    }
    fn unique(&self) -> (usize, u64) {
        let u: BTreeMap<&String, &u64> = self.repo_blobs.values().flatten().collect();
        (u.len(), u.values().copied().sum())
    }
}

fn repo_name(r: usize) -> String {
    format!("repo-{r:03}")
}

fn seed(src: &Registry, p: &Profile, jobs: usize) -> Catalog {
    let pool: Vec<Blob> = (0..p.base_pool)
        .map(|i| oci::layer(0xBA5E_0000 + i as u64, p.layer_size, Format::Oci))
        .collect();
    let work: Vec<(usize, usize)> = (0..p.repos)
        .flat_map(|r| (0..p.tags).map(move |t| (r, t)))
        .collect();
    let next = AtomicUsize::new(0);
    let cat = Mutex::new(Catalog {
        repos: (0..p.repos).map(repo_name).collect(),
        ..Default::default()
    });
    let loc = src.loc();
    std::thread::scope(|s| {
        for _ in 0..jobs.min(work.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(&(r, t)) = work.get(i) else { break };
                let seed = 1_000 + (r as u64) * 1_000 + t as u64;
                let img = ImageSpec::new(seed, Format::Oci)
                    .base(&pool[(r + t) % pool.len()..][..1])
                    .layers(p.layers - 1, p.layer_size)
                    .build();
                let (repo, tag) = (repo_name(r), format!("v{}", t + 1));
                oci::push(&loc, &repo, &tag, &img);
                let mut c = cat.lock().unwrap();
                c.manifest_bytes += img.top.bytes.len() as u64;
                c.tags
                    .entry(repo.clone())
                    .or_default()
                    .insert(tag, img.digest().to_string());
                let rb = c.repo_blobs.entry(repo).or_default();
                for b in &img.blobs {
                    rb.insert(b.digest.clone(), b.size() as u64);
                }
            });
        }
    });
    cat.into_inner().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Verification (harness assertions, which panic; run in parallel, panics become failures)
// ---------------------------------------------------------------------------------------------

/// Target equals source: same tag sets, same digests, every manifest byte for byte and every
/// blob present with its size (`assert_same_repo`), and the digests are the seeded ones.
fn verify(cat: &Catalog, src: &Registry, dst: &Registry, jobs: usize) -> Result<()> {
    let (sl, dl) = (src.loc(), dst.loc());
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::<String>::new());
    std::thread::scope(|s| {
        for _ in 0..jobs.min(cat.repos.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(repo) = cat.repos.get(i) else { break };
                let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    oci::assert_same_repo(&sl, repo, &dl, repo);
                    for (tag, want) in &cat.tags[repo] {
                        let got = oci::manifest_digest(&dl, repo, tag);
                        assert_eq!(got.as_deref(), Some(want.as_str()), "{repo}:{tag}");
                    }
                }));
                if let Err(e) = res {
                    let msg = e
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "panic".into());
                    failures.lock().unwrap().push(format!("{repo}: {msg}"));
                }
            });
        }
    });
    let f = failures.into_inner().unwrap();
    if f.is_empty() {
        Ok(())
    } else {
        bail!("{} repositories differ; first: {}", f.len(), f[0])
    }
}

// ---------------------------------------------------------------------------------------------
// Floor: minimal raw copier (refcopy.py in Rust)
// ---------------------------------------------------------------------------------------------

mod floor {
    use super::*;
    use bytes::Bytes;
    use futures::future::BoxFuture;
    use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
    use reqwest::{Client, StatusCode};

    #[derive(Clone)]
    struct Man {
        digest: String,
        media_type: String,
        bytes: Bytes,
    }

    struct Plan {
        repo: String,
        /// Every manifest once, children before parents.
        order: Vec<Man>,
        tagged: Vec<(String, Man)>,
        blobs: BTreeMap<String, u64>,
    }

    pub struct Stats {
        pub seconds: f64,
        pub uploads: usize,
        pub mounts: usize,
        pub bytes: u64,
    }

    fn client() -> Client {
        Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(64)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("http client")
    }

    async fn get_manifest(c: &Client, host: &str, repo: &str, reference: &str) -> Result<Man> {
        let r = c
            .get(format!("http://{host}/v2/{repo}/manifests/{reference}"))
            .header(ACCEPT, MANIFEST_ACCEPT.join(", "))
            .send()
            .await?;
        ensure!(
            r.status().is_success(),
            "GET manifest {repo}:{reference}: {}",
            r.status()
        );
        let media_type = r
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let bytes = r.bytes().await?;
        Ok(Man {
            digest: oci::sha256_digest(&bytes),
            media_type,
            bytes,
        })
    }

    fn visit<'a>(
        c: &'a Client,
        host: &'a str,
        plan: &'a mut Plan,
        seen: &'a mut BTreeSet<String>,
        m: Man,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if !seen.insert(m.digest.clone()) {
                return Ok(());
            }
            let v: Value = serde_json::from_slice(&m.bytes).context("manifest json")?;
            for d in v["manifests"].as_array().into_iter().flatten() {
                let dg = d["digest"].as_str().context("child digest")?;
                let child = get_manifest(c, host, &plan.repo, dg).await?;
                visit(c, host, plan, seen, child).await?;
            }
            let descs = v["config"]
                .is_object()
                .then(|| &v["config"])
                .into_iter()
                .chain(v["layers"].as_array().into_iter().flatten());
            for d in descs {
                let dg = d["digest"].as_str().context("blob digest")?;
                plan.blobs
                    .insert(dg.to_string(), d["size"].as_u64().context("blob size")?);
            }
            plan.order.push(m);
            Ok(())
        })
    }

    async fn plan_repo(c: &Client, host: &str, repo: &str) -> Result<Plan> {
        let r = c
            .get(format!("http://{host}/v2/{repo}/tags/list"))
            .send()
            .await?;
        ensure!(r.status().is_success(), "tags {repo}: {}", r.status());
        let v: Value = r.json().await?;
        let mut plan = Plan {
            repo: repo.to_string(),
            order: vec![],
            tagged: vec![],
            blobs: BTreeMap::new(),
        };
        let mut seen = BTreeSet::new();
        for t in v["tags"].as_array().into_iter().flatten() {
            let t = t.as_str().context("tag")?;
            let m = get_manifest(c, host, repo, t).await?;
            visit(c, host, &mut plan, &mut seen, m.clone()).await?;
            plan.tagged.push((t.to_string(), m));
        }
        Ok(plan)
    }

    fn abs(host: &str, loc: &str) -> String {
        if loc.starts_with("http") {
            loc.to_string()
        } else {
            format!("http://{host}{loc}")
        }
    }

    /// PUT a blob streamed from the source into an open upload session.
    async fn put_from_source(
        c: &Client,
        src: &str,
        from_repo: &str,
        dst: &str,
        session: &str,
        digest: &str,
        size: u64,
    ) -> Result<()> {
        let g = c
            .get(format!("http://{src}/v2/{from_repo}/blobs/{digest}"))
            .send()
            .await?;
        ensure!(g.status().is_success(), "GET blob {digest}: {}", g.status());
        let mut url = abs(dst, session);
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("digest={}", digest.replace(':', "%3A")));
        let p = c
            .put(url)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, size)
            .body(reqwest::Body::wrap_stream(g.bytes_stream()))
            .send()
            .await?;
        ensure!(
            p.status() == StatusCode::CREATED,
            "PUT blob {digest}: {} {}",
            p.status(),
            p.text().await.unwrap_or_default()
        );
        Ok(())
    }

    fn location(r: &reqwest::Response) -> Result<String> {
        Ok(r.headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .context("upload Location")?
            .to_string())
    }

    /// Returns (uploads, mounts, bytes uploaded).
    async fn copy_blob(
        c: &Client,
        src: &str,
        dst: &str,
        digest: &str,
        size: u64,
        repos: &[String],
    ) -> Result<(usize, usize, u64)> {
        let first = &repos[0];
        let post = c
            .post(format!("http://{dst}/v2/{first}/blobs/uploads/"))
            .send()
            .await?;
        ensure!(
            post.status() == StatusCode::ACCEPTED,
            "POST upload: {}",
            post.status()
        );
        put_from_source(c, src, first, dst, &location(&post)?, digest, size).await?;
        let (mut uploads, mut mounts, mut bytes) = (1, 0, size);
        for r in &repos[1..] {
            let m = c
                .post(format!(
                    "http://{dst}/v2/{r}/blobs/uploads/?mount={digest}&from={first}"
                ))
                .send()
                .await?;
            match m.status() {
                StatusCode::CREATED => mounts += 1,
                StatusCode::ACCEPTED => {
                    put_from_source(c, src, first, dst, &location(&m)?, digest, size).await?;
                    uploads += 1;
                    bytes += size;
                }
                s => bail!("mount {digest} into {r}: {s}"),
            }
        }
        Ok((uploads, mounts, bytes))
    }

    async fn put_manifest(
        c: &Client,
        host: &str,
        repo: &str,
        reference: &str,
        m: &Man,
    ) -> Result<()> {
        let r = c
            .put(format!("http://{host}/v2/{repo}/manifests/{reference}"))
            .header(CONTENT_TYPE, &m.media_type)
            .body(m.bytes.clone())
            .send()
            .await?;
        ensure!(
            r.status() == StatusCode::CREATED,
            "PUT manifest {repo}:{reference}: {} {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
        Ok(())
    }

    /// Copy every tag of `repos` from `src` into the (empty) `dst`.
    pub fn run(src: &str, dst: &str, repos: &[String], jobs: usize) -> Result<Stats> {
        common::block_on(async {
            let c = client();
            let t0 = Instant::now();
            let plans: Vec<Plan> = futures::stream::iter(repos.iter())
                .map(|r| plan_repo(&c, src, r))
                .buffered(jobs)
                .try_collect()
                .await?;
            // distinct blob -> (size, repos needing it, first = upload target)
            let mut need: BTreeMap<&str, (u64, Vec<String>)> = BTreeMap::new();
            for p in &plans {
                for (d, s) in &p.blobs {
                    need.entry(d).or_insert((*s, vec![])).1.push(p.repo.clone());
                }
            }
            let mut order: Vec<_> = need.iter().collect();
            order.sort_by_key(|(_, (s, _))| std::cmp::Reverse(*s)); // biggest first
            let moved: Vec<(usize, usize, u64)> = futures::stream::iter(order)
                .map(|(d, (s, rs))| copy_blob(&c, src, dst, d, *s, rs))
                .buffer_unordered(jobs)
                .try_collect()
                .await?;
            futures::stream::iter(plans.iter())
                .map(|p| {
                    let c = &c;
                    async move {
                        for m in &p.order {
                            put_manifest(c, dst, &p.repo, &m.digest, m).await?;
                        }
                        for (t, m) in &p.tagged {
                            put_manifest(c, dst, &p.repo, t, m).await?;
                        }
                        Ok::<_, anyhow::Error>(())
                    }
                })
                .buffer_unordered(jobs)
                .try_collect::<Vec<()>>()
                .await?;
            Ok(Stats {
                seconds: t0.elapsed().as_secs_f64(),
                uploads: moved.iter().map(|m| m.0).sum(),
                mounts: moved.iter().map(|m| m.1).sum(),
                bytes: moved.iter().map(|m| m.2).sum(),
            })
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Timed child processes (wait4 for the child's peak RSS)
// ---------------------------------------------------------------------------------------------

struct ChildRun {
    seconds: f64,
    success: bool,
    status: String,
    maxrss_kib: i64,
}

const GNU_TIME: &str = "/usr/bin/time";

/// Run `cmd` with stdout+stderr written to `log`, no proxies and an empty `DOCKER_CONFIG`.
///
/// Peak RSS: a child's `ru_maxrss` (wait4) also counts the memory of the process it was
/// spawned from (Linux carries the pre-exec high-water mark across exec), i.e. this bench
/// process. So when `/usr/bin/time` exists the command runs under `time -f %M`, which forks it
/// from a ~2 MiB process, and its figure is used; otherwise wait4's (an upper bound).
fn run_timed(cmd: Command, log: &Path, docker_cfg: &Path) -> Result<ChildRun> {
    let rss_file = log.with_extension("maxrss");
    let mut cmd = if Path::new(GNU_TIME).exists() {
        let mut t = Command::new(GNU_TIME);
        t.args(["-f", "%M", "-o"])
            .arg(&rss_file)
            .arg(cmd.get_program())
            .args(cmd.get_args());
        t
    } else {
        cmd
    };
    for k in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "DOCKER_AUTH_CONFIG",
        "RUST_LOG",
    ] {
        cmd.env_remove(k);
    }
    let f = std::fs::File::create(log)?;
    cmd.env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .env("DOCKER_CONFIG", docker_cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::from(f.try_clone()?))
        .stderr(Stdio::from(f));
    let t0 = Instant::now();
    let child = cmd
        .spawn()
        .with_context(|| format!("spawn {:?}", cmd.get_program()))?;
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let mut killed = false;
    loop {
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        if r == pid {
            break;
        }
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            bail!("wait4: {e}");
        }
        if !killed && t0.elapsed() > CHILD_TIMEOUT {
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed = true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let seconds = t0.elapsed().as_secs_f64();
    let (success, status) = if libc::WIFEXITED(status) {
        let c = libc::WEXITSTATUS(status);
        (c == 0, format!("exit {c}"))
    } else {
        (false, format!("signal {}", libc::WTERMSIG(status)))
    };
    // GNU time writes "Command exited with non-zero status N" first when it fails.
    let timed = std::fs::read_to_string(&rss_file)
        .ok()
        .and_then(|t| t.lines().last().and_then(|l| l.trim().parse::<i64>().ok()));
    Ok(ChildRun {
        seconds,
        success: success && !killed,
        status: if killed { "timed out".into() } else { status },
        maxrss_kib: timed.unwrap_or(ru.ru_maxrss),
    })
}

fn tail(path: &Path, n: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

struct Work {
    dir: tempfile::TempDir,
    docker_cfg: PathBuf,
}

impl Work {
    fn new() -> Result<Work> {
        let dir = tempfile::Builder::new()
            .prefix("catalog-copy-bench")
            .tempdir()?;
        let docker_cfg = dir.path().join("docker");
        std::fs::create_dir_all(&docker_cfg)?;
        Ok(Work { dir, docker_cfg })
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn regsync_config(src: &Registry, dst: &Registry, repos: &[String]) -> String {
    let steps: Vec<String> = repos
        .iter()
        .map(|r| common::repo_step(&src.r(r), &dst.r(r), &[], &[]))
        .collect();
    common::config(&[src as &dyn Endpoint, dst as &dyn Endpoint], 4, &steps)
}

fn regsync_once(bin: &str, cfg: &Path, w: &Work, log_name: &str) -> Result<(ChildRun, PathBuf)> {
    let log = w.path(log_name);
    let mut cmd = Command::new(bin);
    cmd.arg("once").arg("-c").arg(cfg);
    Ok((run_timed(cmd, &log, &w.docker_cfg)?, log))
}

fn skopeo_yaml(src: &Registry, repos: &[String]) -> String {
    let mut s = format!("{}:\n  tls-verify: false\n  images:\n", src.host());
    for r in repos {
        s.push_str(&format!("    {r}: []\n"));
    }
    s
}

fn skopeo_sync(
    yaml: &Path,
    dst: &Registry,
    w: &Work,
    log_name: &str,
) -> Result<(ChildRun, PathBuf)> {
    let log = w.path(log_name);
    let mut cmd = Command::new(SKOPEO);
    cmd.args([
        "sync",
        "--all",
        "--preserve-digests",
        "--retry-times",
        "3",
        "--src",
        "yaml",
        "--dest",
        "docker",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
    ])
    .arg(yaml)
    .arg(dst.host());
    Ok((run_timed(cmd, &log, &w.docker_cfg)?, log))
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------

fn main() -> ExitCode {
    // One line per panic (verification turns the harness's assertion panics into failures).
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        let at = info.location().map(|l| l.to_string()).unwrap_or_default();
        eprintln!("catalog_copy: panic at {at}: {}", msg.replace('\n', " "));
    }));
    let opts = match parse_args() {
        Ok(Some(o)) => o,
        Ok(None) => {
            say!("not run by `cargo bench` (no --bench argument); nothing to do");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("catalog_copy: {e:#}");
            return ExitCode::from(2);
        }
    };
    match bench(&opts) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("catalog_copy: FAILED: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Ok(true) = all regsync runs succeeded and verified; the JSON line is printed either way.
fn bench(o: &Opts) -> Result<bool> {
    let p = &o.profile;
    let bin = common::run::bin();
    ensure!(
        Path::new(&bin).exists(),
        "regsync binary {bin} missing (run via `cargo bench --bench catalog_copy`, which builds it)"
    );
    let skopeo = o.skopeo && Path::new(SKOPEO).exists();
    if o.skopeo && !skopeo {
        say!("--skopeo: {SKOPEO} not found, skipping skopeo");
    }
    let w = Work::new()?;
    say!("binary {bin}; work dir {}", w.dir.path().display());

    // 1. source + seed
    let src = Registry::start();
    say!(
        "profile {}: {} repos x {} tags x {} layers x {} KiB (base pool {}), seeding {} ...",
        p.name,
        p.repos,
        p.tags,
        p.layers,
        p.layer_size >> 10,
        p.base_pool,
        src.host()
    );
    let t = Instant::now();
    let cat = seed(&src, p, o.jobs);
    let (ub, ubytes) = cat.unique();
    say!(
        "seeded {} tags, {} repo blobs ({} distinct, {:.1} MiB), {:.1} MiB per repo-sum, in {:.2}s",
        cat.tag_count(),
        cat.blob_count(),
        ub,
        ubytes as f64 / 1048576.0,
        cat.bytes() as f64 / 1048576.0,
        t.elapsed().as_secs_f64()
    );

    // 2. floor: fastest of `--runs` copies, each into a fresh target
    let mut floor_runs = Vec::new();
    for i in 1..=o.runs {
        let dst = Registry::start();
        let st =
            floor::run(&src.host(), &dst.host(), &cat.repos, o.jobs).context("floor copier")?;
        verify(&cat, &src, &dst, o.jobs).context("floor copy does not verify")?;
        say!(
            "floor {i}/{}: {:.3}s ({} uploads, {} mounts, {:.1} MiB uploaded, {} jobs), verify ok",
            o.runs,
            st.seconds,
            st.uploads,
            st.mounts,
            st.bytes as f64 / 1048576.0,
            o.jobs
        );
        floor_runs.push(st.seconds);
    }
    let floor_secs = floor_runs.iter().copied().fold(f64::INFINITY, f64::min);

    // 3. regsync runs
    let mut times = Vec::new();
    let mut peak_rss: i64 = 0;
    let mut all_ok = true;
    let mut last: Option<(Registry, PathBuf)> = None;
    for i in 1..=o.runs {
        drop(last.take()); // previous target
        let dst = Registry::start();
        let cfg = w.path(&format!("regsync-{i}.yml"));
        std::fs::write(&cfg, regsync_config(&src, &dst, &cat.repos))?;
        let (run, log) = regsync_once(&bin, &cfg, &w, &format!("regsync-{i}.log"))?;
        peak_rss = peak_rss.max(run.maxrss_kib);
        times.push(run.seconds);
        if !run.success {
            all_ok = false;
            say!(
                "run {i}/{}: regsync {} after {:.3}s; last log lines:\n{}",
                o.runs,
                run.status,
                run.seconds,
                tail(&log, 20)
            );
        }
        match verify(&cat, &src, &dst, o.jobs) {
            Ok(()) => say!(
                "run {i}/{}: {:.3}s, max RSS {} KiB, verify ok",
                o.runs,
                run.seconds,
                run.maxrss_kib
            ),
            Err(e) => {
                all_ok = false;
                say!(
                    "run {i}/{}: {:.3}s, verify FAILED: {e:#}",
                    o.runs,
                    run.seconds
                );
            }
        }
        last = Some((dst, cfg));
    }

    // 4. no-op run against the last synced target
    let noop_secs = {
        let (dst, cfg) = last.as_ref().expect("at least one run");
        let mark = dst.mark();
        let (run, log) = regsync_once(&bin, cfg, &w, "regsync-noop.log")?;
        peak_rss = peak_rss.max(run.maxrss_kib);
        if !run.success {
            all_ok = false;
            say!(
                "no-op run: regsync {}; last log lines:\n{}",
                run.status,
                tail(&log, 20)
            );
        }
        let writes = dst.writes_since(mark);
        if writes.is_empty() {
            say!("no-op run: {:.3}s, no writes", run.seconds);
        } else {
            say!(
                "no-op run: {:.3}s, WARNING: {} writes to the synced target, first: {:?}",
                run.seconds,
                writes.len(),
                writes[0]
            );
        }
        run.seconds
    };
    drop(last);

    // 5. skopeo
    let mut skopeo_secs: Option<f64> = None;
    if skopeo {
        let yaml = w.path("skopeo-sync.yaml");
        std::fs::write(&yaml, skopeo_yaml(&src, &cat.repos))?;
        let mut st = Vec::new();
        let mut ok = true;
        for i in 1..=o.runs {
            let dst = Registry::start();
            let (run, log) = skopeo_sync(&yaml, &dst, &w, &format!("skopeo-{i}.log"))?;
            let v = if run.success {
                verify(&cat, &src, &dst, o.jobs)
            } else {
                Err(anyhow!("skopeo {}: {}", run.status, tail(&log, 10)))
            };
            match v {
                Ok(()) => say!("skopeo run {i}/{}: {:.3}s, verify ok", o.runs, run.seconds),
                Err(e) => {
                    ok = false;
                    say!("skopeo run {i}/{}: FAILED: {e:#}", o.runs);
                }
            }
            st.push(run.seconds);
        }
        skopeo_secs = ok.then(|| median(&st));
    }

    let med = median(&times);
    // Ordered like the brief (serde_json's map would sort the keys).
    let fields: Vec<(&str, Value)> = vec![
        ("bench", json!("catalog_copy")),
        ("profile", json!(p.name)),
        ("repos", json!(cat.repos.len())),
        ("tags", json!(cat.tag_count())),
        ("blobs", json!(cat.blob_count())),
        ("bytes", json!(cat.bytes())),
        ("floor_seconds", json!(r3(floor_secs))),
        ("regsync_seconds", json!(r3(med))),
        (
            "regsync_runs",
            json!(times.iter().map(|t| r3(*t)).collect::<Vec<_>>()),
        ),
        (
            "ratio_to_floor",
            json!(if all_ok {
                Some((med / floor_secs * 100.0).round() / 100.0)
            } else {
                None
            }),
        ),
        ("noop_seconds", json!(r3(noop_secs))),
        ("peak_rss_kib", json!(peak_rss)),
        ("skopeo_seconds", json!(skopeo_secs.map(r3))),
        (
            "skopeo_ratio",
            json!(skopeo_secs.map(|s| (s / floor_secs * 100.0).round() / 100.0)),
        ),
        ("verify", json!(if all_ok { "ok" } else { "fail" })),
    ];
    let out = fields
        .iter()
        .map(|(k, v)| format!("{}:{v}", json!(k)))
        .collect::<Vec<_>>()
        .join(",");
    println!("{{{out}}}");
    Ok(all_ok)
}
