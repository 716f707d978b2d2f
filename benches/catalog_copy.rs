//! `catalog_copy`: time `regsync once` copying a deterministic catalog between two real local
//! registries, against a "floor" (the least work a correct copy can do) and optionally skopeo.
//!
//! ```text
//! cargo bench --bench catalog_copy -- [--profile tiny|small] [--runs N] [--skopeo] [--jobs N]
//!                                     [--vs [NAME=]'COMMAND' ...] [--noop-only]
//! ```
//!
//! Default mode (no `--vs`, no `--noop-only`):
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
//! `--vs [NAME=]'COMMAND'` (repeatable; `--skopeo` adds skopeo to the tools): side by side, the
//! semantics of `../shared/registry/abbench.sh --cmd NAME='COMMAND' --noop --rss`. The tools are
//! the crate's binary (named `regsync-rs`) and every `--vs` in order. Per round (`--runs`, 3)
//! the floor and every tool run in an order that rotates by one each round, each into a fresh
//! empty target, each verified; after each tool's copy the same tool runs again into the
//! target it just synced (the no-op, timed). A command runs under `bash -c` with bench.sh's
//! variable names exported: `$CONFIG` (the generated regsync config for this run's target),
//! `SRC_HOST SRC_URL DST_HOST DST_URL REPOS SKOPEO_YAML JOBS`; bare `skopeo` is the built-in
//! skopeo sync. `NAME=` is taken when the text before the first `=` is a plain word, else the
//! whole value is the command and its first word's basename is the name (a command starting
//! with `VAR=value` needs a NAME). The floor's GET-only time (`refcopy.py --get-only`: plan,
//! then GET every (repo, blob)) is measured once first. JSON (abbench's field names):
//! `floor_runs`, `floor_get_only_seconds`, and per tool `runs`, `ratios` (to the floor run *of
//! the same round*), `ratio_median`, `noop_seconds`, `noop_ratio_to_get_only` (median no-op /
//! GET-only), `peak_rss_kib` (`/usr/bin/time`), `verify` (the set of run results).
//!
//! `--noop-only`: the source is seeded and copied once into a target by the floor copier
//! (verified; the bytes are the same whoever copies them), then only the no-op cycle is
//! measured: `--runs` rounds, each tool (the crate's binary, and every `--vs`) once per round
//! in a rotating order, all against that synced target with one config. For each run the two
//! registries' access logs (distribution's access log, on for every harness `Registry`) give
//! the requests it sent, by kind: `manifest_head`, `manifest_get`, `tag_list`, `other` (e.g.
//! `/v2/` pings, blob HEADs). JSON per tool: `noop_runs`, `noop_seconds` (median),
//! `noop_ratio_to_get_only`, `peak_rss_kib`, `requests` (`source` / `target`, of the first
//! run), `requests_per_tag` (both registries), `manifest_requests_per_tag`, `requests_stable`
//! (every run sent the same counts), `writes` (PUT/POST/PATCH/DELETE to the target; a no-op
//! has none) and `failed_runs`.
//!
//! stdout: exactly one JSON line; progress on stderr. Exit 0 only when every regsync run
//! (every tool's run, with `--vs` / `--noop-only`) succeeded and verified. The binary is the
//! crate's `regsync` that `cargo bench` builds (`target/release/regsync`), or
//! `$REGSYNC_TEST_BIN` (e.g. the Go regsync, for comparison).
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
    /// `--vs`: the tools besides the crate's own binary, in the order given.
    vs: Vec<Tool>,
    noop_only: bool,
}

/// A tool under test in the side-by-side and no-op modes.
#[derive(Clone, Debug)]
struct Tool {
    name: String,
    kind: ToolKind,
}

#[derive(Clone, Debug)]
enum ToolKind {
    /// The crate's `regsync` (or `$REGSYNC_TEST_BIN`), run as `BIN once -c CONFIG`.
    Own,
    /// `skopeo sync` as in `--skopeo`.
    Skopeo,
    /// A `--vs` command, run under `bash -c` with `$CONFIG` and friends exported.
    Shell(String),
}

const OWN_NAME: &str = "regsync-rs";

const USAGE: &str = "usage: cargo bench --bench catalog_copy -- [--profile tiny|small] [--runs N] [--skopeo] [--jobs N]
       [--vs [NAME=]'COMMAND' ...] [--noop-only]";

/// `--vs NAME=COMMAND` or `--vs COMMAND`: the text before the first `=` is a name when it is a
/// plain word (letters, digits, `_.+-`), like `abbench.sh --cmd NAME=CMD`; otherwise the whole
/// value is the command and the name is the basename of its first word. `skopeo` alone (or
/// `NAME=` with nothing after it) is the built-in skopeo sync.
fn parse_vs(v: &str) -> Result<Tool> {
    let named = v.split_once('=').filter(|(n, _)| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.+-".contains(c))
    });
    let (name, cmd) = match named {
        Some((n, c)) => (Some(n.to_string()), c.trim()),
        None => (None, v.trim()),
    };
    if cmd.is_empty() || cmd == "skopeo" {
        return Ok(Tool {
            name: name.unwrap_or_else(|| "skopeo".into()),
            kind: ToolKind::Skopeo,
        });
    }
    let name = name.unwrap_or_else(|| {
        let first = cmd.split_whitespace().next().unwrap_or("tool");
        first.rsplit('/').next().unwrap_or(first).to_string()
    });
    Ok(Tool {
        name,
        kind: ToolKind::Shell(cmd.to_string()),
    })
}

/// The crate's binary first, then `--vs` (and `--skopeo`) in order; repeated names get `-2`,
/// `-3`, ...
fn tools(o: &Opts) -> Vec<Tool> {
    let mut all = vec![Tool {
        name: OWN_NAME.into(),
        kind: ToolKind::Own,
    }];
    let mut rest = o.vs.clone();
    if o.skopeo && !rest.iter().any(|t| matches!(t.kind, ToolKind::Skopeo)) {
        rest.push(Tool {
            name: "skopeo".into(),
            kind: ToolKind::Skopeo,
        });
    }
    for mut t in rest {
        let base = t.name.clone();
        let mut i = 2;
        while all.iter().any(|a| a.name == t.name) {
            t.name = format!("{base}-{i}");
            i += 1;
        }
        all.push(t);
    }
    all
}

/// `None` = not invoked by `cargo bench` (no `--bench`): do nothing.
fn parse_args() -> Result<Option<Opts>> {
    let mut args = std::env::args().skip(1);
    let mut o = Opts {
        profile: profile("small").unwrap(),
        runs: 3,
        skopeo: false,
        jobs: 4,
        vs: vec![],
        noop_only: false,
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
            "--vs" => o.vs.push(parse_vs(&val(&k)?)?),
            "--noop-only" => o.noop_only = true,
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

    /// `refcopy.py --get-only`: plan from the tags, then GET every (repo, blob) of the source
    /// with `jobs` concurrent requests and discard the bytes. Seconds, planning included.
    pub fn get_only(src: &str, repos: &[String], jobs: usize) -> Result<f64> {
        common::block_on(async {
            let c = client();
            let t0 = Instant::now();
            let plans: Vec<Plan> = futures::stream::iter(repos.iter())
                .map(|r| plan_repo(&c, src, r))
                .buffered(jobs)
                .try_collect()
                .await?;
            let gets: Vec<(&str, &str)> = plans
                .iter()
                .flat_map(|p| p.blobs.keys().map(|d| (p.repo.as_str(), d.as_str())))
                .collect();
            futures::stream::iter(gets)
                .map(|(repo, digest)| {
                    let c = &c;
                    async move {
                        let mut g = c
                            .get(format!("http://{src}/v2/{repo}/blobs/{digest}"))
                            .send()
                            .await?;
                        ensure!(g.status().is_success(), "GET blob {digest}: {}", g.status());
                        let mut n = 0u64;
                        while let Some(chunk) = g.chunk().await? {
                            n += chunk.len() as u64;
                        }
                        Ok::<u64, anyhow::Error>(n)
                    }
                })
                .buffer_unordered(jobs)
                .try_collect::<Vec<u64>>()
                .await?;
            Ok(t0.elapsed().as_secs_f64())
        })
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
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => t.env(k, v),
                None => t.env_remove(k),
            };
        }
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

fn skopeo_yaml_text(src: &Registry, repos: &[String]) -> String {
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
    let run = if opts.noop_only {
        bench_noop(&opts)
    } else if !opts.vs.is_empty() {
        bench_vs(&opts)
    } else {
        bench(&opts)
    };
    match run {
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
    let bin = own_bin()?;
    let skopeo = o.skopeo && Path::new(SKOPEO).exists();
    if o.skopeo && !skopeo {
        say!("--skopeo: {SKOPEO} not found, skipping skopeo");
    }
    let (w, src, cat) = start_source(o, &bin)?;
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
        std::fs::write(&yaml, skopeo_yaml_text(&src, &cat.repos))?;
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
    println!("{}", ordered(&fields));
    Ok(all_ok)
}

/// A JSON object with its keys in the given order (serde_json's map would sort them).
fn ordered(fields: &[(&str, Value)]) -> String {
    fields
        .iter()
        .fold(Obj::default(), |o, (k, v)| o.v(k, v))
        .text()
}

/// A JSON object written with its keys in insertion order; `raw` takes an already written
/// value (a nested ordered object).
#[derive(Default)]
struct Obj(Vec<String>);

impl Obj {
    fn v(self, k: &str, v: impl serde::Serialize) -> Obj {
        self.raw(k, json!(v).to_string())
    }
    fn raw(mut self, k: &str, v: String) -> Obj {
        self.0.push(format!("{}:{v}", json!(k)));
        self
    }
    fn text(&self) -> String {
        format!("{{{}}}", self.0.join(","))
    }
}

fn own_bin() -> Result<String> {
    let bin = common::run::bin();
    ensure!(
        Path::new(&bin).exists(),
        "regsync binary {bin} missing (run via `cargo bench --bench catalog_copy`, which builds it)"
    );
    Ok(bin)
}

/// Work dir, source registry, and the profile's catalog seeded into it.
fn start_source(o: &Opts, bin: &str) -> Result<(Work, Registry, Catalog)> {
    let p = &o.profile;
    let w = Work::new()?;
    say!("binary {bin}; work dir {}", w.dir.path().display());
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
    Ok((w, src, cat))
}

fn catalog_fields(o: &Opts, cat: &Catalog, mode: &str) -> Obj {
    Obj::default()
        .v("bench", "catalog_copy")
        .v("mode", mode)
        .v("profile", o.profile.name)
        .v("repos", cat.repos.len())
        .v("tags", cat.tag_count())
        .v("blobs", cat.blob_count())
        .v("bytes", cat.bytes())
        .v("jobs", o.jobs)
}

fn ratio(a: f64, b: f64) -> f64 {
    (a / b * 100.0).round() / 100.0
}

/// The floor's GET-only time (`refcopy.py --get-only`), which no-op figures are divided by.
fn measure_get_only(o: &Opts, src: &Registry, cat: &Catalog) -> Result<f64> {
    let s = floor::get_only(&src.host(), &cat.repos, o.jobs).context("floor GET-only")?;
    say!("floor GET-only: {s:.3}s ({} jobs)", o.jobs);
    Ok(s)
}

/// Everything one tool run needs: the registries, the rendered config and skopeo's YAML.
struct RunCtx<'a> {
    w: &'a Work,
    bin: &'a str,
    src: &'a Registry,
    dst: &'a Registry,
    config: &'a Path,
    skopeo_yaml: &'a Path,
    repos: &'a [String],
    jobs: usize,
}

fn tool_cmd_text(t: &Tool, bin: &str) -> String {
    match &t.kind {
        ToolKind::Own => format!("{bin} once -c \"$CONFIG\""),
        ToolKind::Skopeo => "skopeo sync --all --preserve-digests --src yaml --dest docker".into(),
        ToolKind::Shell(c) => c.clone(),
    }
}

/// Run one tool once against `ctx.dst`. A `--vs` command runs under `bash -c` with bench.sh's
/// variable names exported: `CONFIG SRC_HOST SRC_URL DST_HOST DST_URL REPOS SKOPEO_YAML JOBS`.
fn run_tool(t: &Tool, ctx: &RunCtx, log_name: &str) -> Result<(ChildRun, PathBuf)> {
    match &t.kind {
        ToolKind::Own => regsync_once(ctx.bin, ctx.config, ctx.w, log_name),
        ToolKind::Skopeo => skopeo_sync(ctx.skopeo_yaml, ctx.dst, ctx.w, log_name),
        ToolKind::Shell(c) => {
            let log = ctx.w.path(log_name);
            let mut cmd = Command::new("bash");
            cmd.arg("-c")
                .arg(c)
                .env("CONFIG", ctx.config)
                .env("SRC_HOST", ctx.src.host())
                .env("SRC_URL", ctx.src.url())
                .env("DST_HOST", ctx.dst.host())
                .env("DST_URL", ctx.dst.url())
                .env("REPOS", ctx.repos.join(" "))
                .env("SKOPEO_YAML", ctx.skopeo_yaml)
                .env("JOBS", ctx.jobs.to_string());
            Ok((run_timed(cmd, &log, &ctx.w.docker_cfg)?, log))
        }
    }
}

/// The order of round `r` (1-based): `all` rotated left by `r - 1`, like `abbench.sh`.
fn rotation<T: Clone>(all: &[T], r: usize) -> Vec<T> {
    let k = (r - 1) % all.len();
    all[k..].iter().chain(&all[..k]).cloned().collect()
}

fn write_config(
    w: &Work,
    name: &str,
    src: &Registry,
    dst: &Registry,
    cat: &Catalog,
) -> Result<PathBuf> {
    let cfg = w.path(name);
    std::fs::write(&cfg, regsync_config(src, dst, &cat.repos))?;
    Ok(cfg)
}

// ---------------------------------------------------------------------------------------------
// --vs: the floor and every tool side by side, interleaved
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct VsRuns {
    /// (round, seconds, verify result)
    runs: Vec<(usize, f64, String)>,
    noops: Vec<f64>,
    peak_rss: Option<i64>,
}

fn bench_vs(o: &Opts) -> Result<bool> {
    let bin = own_bin()?;
    let tools = tools(o);
    if tools.iter().any(|t| matches!(t.kind, ToolKind::Skopeo)) {
        ensure!(
            Path::new(SKOPEO).exists(),
            "{SKOPEO} not found (skopeo was asked for)"
        );
    }
    let (w, src, cat) = start_source(o, &bin)?;
    let skopeo_yaml = w.path("skopeo-sync.yaml");
    std::fs::write(&skopeo_yaml, skopeo_yaml_text(&src, &cat.repos))?;
    let get_only = measure_get_only(o, &src, &cat)?;

    // None = the floor; Some(i) = tools[i].
    let all: Vec<Option<usize>> = std::iter::once(None)
        .chain((0..tools.len()).map(Some))
        .collect();
    let mut floor_runs: BTreeMap<usize, f64> = BTreeMap::new();
    let mut per: Vec<VsRuns> = tools.iter().map(|_| VsRuns::default()).collect();
    let mut all_ok = true;
    for r in 1..=o.runs {
        for who in rotation(&all, r) {
            let dst = Registry::start();
            let Some(i) = who else {
                let st = floor::run(&src.host(), &dst.host(), &cat.repos, o.jobs)
                    .context("floor copier")?;
                verify(&cat, &src, &dst, o.jobs).context("floor copy does not verify")?;
                say!("round {r}: floor {:.3}s, verify ok", st.seconds);
                floor_runs.insert(r, st.seconds);
                continue;
            };
            let t = &tools[i];
            let cfg = write_config(&w, &format!("{}-{r}.yml", t.name), &src, &dst, &cat)?;
            let ctx = RunCtx {
                w: &w,
                bin: &bin,
                src: &src,
                dst: &dst,
                config: &cfg,
                skopeo_yaml: &skopeo_yaml,
                repos: &cat.repos,
                jobs: o.jobs,
            };
            let (run, log) = run_tool(t, &ctx, &format!("{}-{r}.log", t.name))?;
            let v = if !run.success {
                say!(
                    "round {r}: {} {}; last log lines:\n{}",
                    t.name,
                    run.status,
                    tail(&log, 20)
                );
                run.status.clone()
            } else {
                match verify(&cat, &src, &dst, o.jobs) {
                    Ok(()) => "ok".to_string(),
                    Err(e) => {
                        say!("round {r}: {} verify FAILED: {e:#}", t.name);
                        "fail".to_string()
                    }
                }
            };
            all_ok &= v == "ok";
            // No-op: the same tool again into the target it just synced.
            let mark = dst.mark();
            let (noop, nlog) = run_tool(t, &ctx, &format!("{}-{r}-noop.log", t.name))?;
            if !noop.success {
                all_ok = false;
                say!(
                    "round {r}: {} no-op {}; last log lines:\n{}",
                    t.name,
                    noop.status,
                    tail(&nlog, 20)
                );
            }
            let writes = dst.writes_since(mark).len();
            let pr = &mut per[i];
            pr.runs.push((r, run.seconds, v.clone()));
            pr.noops.push(noop.seconds);
            if run.maxrss_kib > 0 || noop.maxrss_kib > 0 {
                pr.peak_rss = Some(
                    pr.peak_rss
                        .unwrap_or(0)
                        .max(run.maxrss_kib)
                        .max(noop.maxrss_kib),
                );
            }
            say!(
                "round {r}: {} {:.3}s verify {v}, no-op {:.3}s{}, peak RSS {} KiB",
                t.name,
                run.seconds,
                noop.seconds,
                if writes > 0 {
                    format!(" (WARNING: {writes} writes)")
                } else {
                    String::new()
                },
                run.maxrss_kib.max(noop.maxrss_kib)
            );
        }
    }

    let floor_list: Vec<f64> = floor_runs.values().map(|s| r3(*s)).collect();
    let mut tools_json = Obj::default();
    for (t, pr) in tools.iter().zip(&per) {
        let ratios: Vec<f64> = pr.runs.iter().map(|(r, s, _)| s / floor_runs[r]).collect();
        let verdicts: BTreeSet<&str> = pr.runs.iter().map(|(_, _, v)| v.as_str()).collect();
        let one = Obj::default()
            .v("cmd", tool_cmd_text(t, &bin))
            .v(
                "runs",
                pr.runs.iter().map(|(_, s, _)| r3(*s)).collect::<Vec<_>>(),
            )
            .v(
                "ratios",
                ratios.iter().map(|x| ratio(*x, 1.0)).collect::<Vec<_>>(),
            )
            .v("ratio_median", ratio(median(&ratios), 1.0))
            .v(
                "noop_seconds",
                pr.noops.iter().map(|s| r3(*s)).collect::<Vec<_>>(),
            )
            .v("noop_ratio_to_get_only", ratio(median(&pr.noops), get_only))
            .v("peak_rss_kib", pr.peak_rss)
            .v("verify", verdicts);
        tools_json = tools_json.raw(&t.name, one.text());
    }
    let out = catalog_fields(o, &cat, "vs")
        .v("rounds", o.runs)
        .v("floor_runs", floor_list)
        .v("floor_get_only_seconds", r3(get_only))
        .raw("tools", tools_json.text())
        .v("verify", if all_ok { "ok" } else { "fail" });
    println!("{}", out.text());
    Ok(all_ok)
}

// ---------------------------------------------------------------------------------------------
// --noop-only: the no-op cycle and its requests
// ---------------------------------------------------------------------------------------------

/// Requests one registry answered during a run, by kind (from its access log).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Requests {
    manifest_head: usize,
    manifest_get: usize,
    tag_list: usize,
    other: usize,
}

impl Requests {
    fn of(lines: &[common::AccessLine]) -> Requests {
        let mut q = Requests::default();
        for l in lines {
            let path = l.path.split('?').next().unwrap_or("");
            if path.contains("/manifests/") && l.method == "HEAD" {
                q.manifest_head += 1;
            } else if path.contains("/manifests/") && l.method == "GET" {
                q.manifest_get += 1;
            } else if path.ends_with("/tags/list") && l.method == "GET" {
                q.tag_list += 1;
            } else {
                q.other += 1;
            }
        }
        q
    }
    fn total(&self) -> usize {
        self.manifest_head + self.manifest_get + self.tag_list + self.other
    }
    fn json(&self) -> String {
        Obj::default()
            .v("manifest_head", self.manifest_head)
            .v("manifest_get", self.manifest_get)
            .v("tag_list", self.tag_list)
            .v("other", self.other)
            .v("total", self.total())
            .text()
    }
}

#[derive(Default)]
struct NoopRuns {
    seconds: Vec<f64>,
    /// (source, target) of the first run, and whether every later run matched it.
    requests: Option<(Requests, Requests)>,
    stable: bool,
    writes: usize,
    failures: usize,
    peak_rss: Option<i64>,
}

fn bench_noop(o: &Opts) -> Result<bool> {
    let bin = own_bin()?;
    let tools = tools(o);
    if tools.iter().any(|t| matches!(t.kind, ToolKind::Skopeo)) {
        ensure!(
            Path::new(SKOPEO).exists(),
            "{SKOPEO} not found (skopeo was asked for)"
        );
    }
    let (w, src, cat) = start_source(o, &bin)?;
    let skopeo_yaml = w.path("skopeo-sync.yaml");
    std::fs::write(&skopeo_yaml, skopeo_yaml_text(&src, &cat.repos))?;
    let get_only = measure_get_only(o, &src, &cat)?;

    // One copy (the floor copier: the same bytes whoever copies them), verified.
    let dst = Registry::start();
    let st = floor::run(&src.host(), &dst.host(), &cat.repos, o.jobs).context("floor copier")?;
    verify(&cat, &src, &dst, o.jobs).context("floor copy does not verify")?;
    say!(
        "synced the target with the floor copier in {:.3}s, verify ok",
        st.seconds
    );
    let cfg = write_config(&w, "noop.yml", &src, &dst, &cat)?;
    let ctx = RunCtx {
        w: &w,
        bin: &bin,
        src: &src,
        dst: &dst,
        config: &cfg,
        skopeo_yaml: &skopeo_yaml,
        repos: &cat.repos,
        jobs: o.jobs,
    };

    let idx: Vec<usize> = (0..tools.len()).collect();
    let mut per: Vec<NoopRuns> = tools
        .iter()
        .map(|_| NoopRuns {
            stable: true,
            ..Default::default()
        })
        .collect();
    let mut all_ok = true;
    for r in 1..=o.runs {
        for i in rotation(&idx, r) {
            let t = &tools[i];
            let (ms, md) = (src.mark(), dst.mark());
            let (run, log) = run_tool(t, &ctx, &format!("noop-{}-{r}.log", t.name))?;
            let (qs, qd) = (
                Requests::of(&src.access_since(ms)),
                Requests::of(&dst.access_since(md)),
            );
            let writes = dst.writes_since(md).len();
            let pr = &mut per[i];
            pr.seconds.push(run.seconds);
            pr.writes += writes;
            if run.maxrss_kib > 0 {
                pr.peak_rss = Some(pr.peak_rss.unwrap_or(0).max(run.maxrss_kib));
            }
            match pr.requests {
                None => pr.requests = Some((qs, qd)),
                Some(first) => pr.stable &= first == (qs, qd),
            }
            if !run.success {
                all_ok = false;
                pr.failures += 1;
                say!(
                    "no-op {r}: {} {}; last log lines:\n{}",
                    t.name,
                    run.status,
                    tail(&log, 20)
                );
            }
            say!(
                "no-op {r}: {} {:.3}s; source {:?}; target {:?}{}",
                t.name,
                run.seconds,
                qs,
                qd,
                if writes > 0 {
                    format!("; WARNING: {writes} writes to the synced target")
                } else {
                    String::new()
                }
            );
        }
    }
    // A tool that wrote to the synced target was not a no-op: the copy is verified again.
    if per.iter().any(|p| p.writes > 0) {
        if let Err(e) = verify(&cat, &src, &dst, o.jobs) {
            all_ok = false;
            say!("target after the no-op runs: verify FAILED: {e:#}");
        }
    }

    let tags = cat.tag_count() as f64;
    let per_tag = |n: usize| (n as f64 / tags * 100.0).round() / 100.0;
    let mut tools_json = Obj::default();
    for (t, pr) in tools.iter().zip(&per) {
        let (qs, qd) = pr.requests.unwrap_or_default();
        let manifests = qs.manifest_head + qs.manifest_get + qd.manifest_head + qd.manifest_get;
        let requests = Obj::default()
            .raw("source", qs.json())
            .raw("target", qd.json());
        let one = Obj::default()
            .v("cmd", tool_cmd_text(t, &bin))
            .v(
                "noop_runs",
                pr.seconds.iter().map(|s| r3(*s)).collect::<Vec<_>>(),
            )
            .v("noop_seconds", r3(median(&pr.seconds)))
            .v(
                "noop_ratio_to_get_only",
                ratio(median(&pr.seconds), get_only),
            )
            .v("peak_rss_kib", pr.peak_rss)
            .raw("requests", requests.text())
            .v("requests_per_tag", per_tag(qs.total() + qd.total()))
            .v("manifest_requests_per_tag", per_tag(manifests))
            .v("requests_stable", pr.stable)
            .v("writes", pr.writes)
            .v("failed_runs", pr.failures);
        tools_json = tools_json.raw(&t.name, one.text());
    }
    let out = catalog_fields(o, &cat, "noop")
        .v("runs", o.runs)
        .v("floor_get_only_seconds", r3(get_only))
        .raw("tools", tools_json.text())
        .v("verify", if all_ok { "ok" } else { "fail" });
    println!("{}", out.text());
    Ok(all_ok)
}
