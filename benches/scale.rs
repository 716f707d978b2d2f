//! `scale`: a synthetic registry for catalogs this machine cannot seed, and the sharding
//! benchmarks run on it (README, "Scaling out").
//!
//! ```text
//! cargo bench --bench scale -- serve [--repos N] [--tags T] [--seed S] [--latency-ms MS]
//!                                    [--tag-page P] [--listen 127.0.0.1:PORT]
//! cargo bench --bench scale -- noop  [--repos N] [--tags T] [--seed S] [--latency-ms MS]
//!                                    [--tag-page P] [--parallel P] [--shards K]
//! cargo bench --bench scale -- movement [--repos N] [--from K]
//! ```
//!
//! The simulator serves the read side of the distribution API for a generated catalog:
//! `GET /v2/`, `GET /v2/_catalog` (`n`/`last`, a `Link` to the next page), `GET
//! /v2/<repo>/tags/list` (pages of `--tag-page` tags, `Link`ed), `HEAD`/`GET
//! /v2/<repo>/manifests/<tag|digest>`. Repositories are `repo-000000` … (any path before the
//! last component is accepted, so `mirror/repo-000042` on a target is the same repository),
//! tags `v0` …; each manifest is a small OCI image manifest whose bytes (and so its digest)
//! are a function of the seed, the repository's last component and the tag. Nothing is stored:
//! blobs are 404 and writes 405, so it serves no-op runs only. `--latency-ms` delays every
//! answer. `GET /_sim/stats` gives the request counters (by kind, and the number of
//! repositories whose tags or manifests were asked for); `GET /_sim/repos` the indices of those
//! repositories.
//!
//! `noop` starts a source and a target simulator with the same seed (the target already holds
//! every digest), writes a config with one `type: registry` step (source host → target
//! `/mirror`, `parallel` and `reqConcurrent` both `--parallel`, default 16), runs the release
//! `regsync once --report` under `/usr/bin/time -v` and prints one JSON line: wall seconds,
//! requests (as the simulators counted them), requests per second and per tag, manifest GETs,
//! peak RSS. With `--shards K` it runs K processes `--shard i/K` at once, each against a
//! target simulator of its own (same seed), and adds per shard: requests, repositories
//! touched, peak RSS; the union and intersection of the shards' repositories; and whether each
//! shard touched exactly the repositories `regsync::shard::owner` assigns it.
//!
//! `movement` computes, for the catalog's target repositories (`mirror/repo-…`), the fraction
//! whose owner changes from `--from` shards to one more.
//!
//! Without `--bench` in its arguments (i.e. under `cargo test --all-targets`) it does nothing.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

macro_rules! say {
    ($($t:tt)*) => { eprintln!("scale: {}", format!($($t)*)) };
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

// ---------------------------------------------------------------------------------------------
// The simulator

#[derive(Clone, Debug)]
struct Catalog {
    repos: usize,
    tags: usize,
    seed: u64,
    tag_page: usize,
    latency: Duration,
}

#[derive(Default)]
struct Counts {
    total: AtomicU64,
    ping: AtomicU64,
    catalog: AtomicU64,
    tags: AtomicU64,
    manifest_head: AtomicU64,
    manifest_get: AtomicU64,
    blob: AtomicU64,
    other: AtomicU64,
}

struct Sim {
    cat: Catalog,
    counts: Counts,
    /// Per repository: 1 once its tags or a manifest were asked for.
    touched: Vec<AtomicU8>,
}

impl Catalog {
    fn name(i: usize) -> String {
        format!("repo-{i:06}")
    }

    /// The repository index of a name whose last component is `repo-NNNNNN`.
    fn index(&self, name: &str) -> Option<usize> {
        let last = name.rsplit('/').next()?;
        let n = last.strip_prefix("repo-")?;
        if n.len() != 6 {
            return None;
        }
        let i: usize = n.parse().ok()?;
        (i < self.repos).then_some(i)
    }

    fn tag_index(&self, tag: &str) -> Option<usize> {
        let j: usize = tag.strip_prefix('v')?.parse().ok()?;
        (j < self.tags && tag == format!("v{j}")).then_some(j)
    }

    fn sha(parts: &[&str]) -> String {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p.as_bytes());
            h.update([0]);
        }
        format!("sha256:{}", hex::encode(h.finalize()))
    }

    /// The manifest of repository `i`, tag `j`: bytes derived from (seed, name, tag).
    fn manifest(&self, i: usize, j: usize) -> Vec<u8> {
        let (seed, repo, tag) = (self.seed.to_string(), Self::name(i), format!("v{j}"));
        let config = Self::sha(&[&seed, &repo, &tag, "config"]);
        let layer = Self::sha(&[&seed, &repo, &tag, "layer"]);
        let size = 1000 + (i * 7919 + j * 104_729) % 1_000_000;
        format!(
            "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\"config\":{{\"mediaType\":\
             \"application/vnd.oci.image.config.v1+json\",\"digest\":\"{config}\",\"size\":\
             {}}},\"layers\":[{{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\
             \"digest\":\"{layer}\",\"size\":{size}}}]}}",
            300 + j % 200
        )
        .into_bytes()
    }
}

fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn error(status: StatusCode, code: &str) -> Response {
    let body = json!({"errors": [{"code": code, "message": code.to_lowercase()}]}).to_string();
    (status, [("content-type", "application/json")], body).into_response()
}

fn query(uri: &axum::http::Uri, key: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.to_string())
    })
}

async fn handle(State(sim): State<Arc<Sim>>, req: Request) -> Response {
    let c = &sim.counts;
    c.total.fetch_add(1, Ordering::Relaxed);
    if !sim.cat.latency.is_zero() {
        tokio::time::sleep(sim.cat.latency).await;
    }
    let uri = req.uri().clone();
    let path = uri.path();
    let head = req.method() == Method::HEAD;
    if req.method() != Method::GET && !head {
        c.other.fetch_add(1, Ordering::Relaxed);
        return error(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED");
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        c.other.fetch_add(1, Ordering::Relaxed);
        return error(StatusCode::NOT_FOUND, "NOT_FOUND");
    };
    if rest.is_empty() {
        c.ping.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::OK, [("content-type", "application/json")], "{}").into_response();
    }
    if rest == "_catalog" {
        c.catalog.fetch_add(1, Ordering::Relaxed);
        let n: usize = query(&uri, "n")
            .and_then(|v| v.parse().ok())
            .unwrap_or(100)
            .clamp(1, 10_000);
        let start = match query(&uri, "last") {
            Some(l) => sim.cat.index(&l).map_or(sim.cat.repos, |i| i + 1),
            None => 0,
        };
        let end = (start + n).min(sim.cat.repos);
        let names: Vec<String> = (start..end).map(Catalog::name).collect();
        let mut headers = HeaderMap::new();
        if end < sim.cat.repos {
            let link = format!(
                "</v2/_catalog?last={}&n={n}>; rel=\"next\"",
                Catalog::name(end - 1)
            );
            headers.insert("link", HeaderValue::from_str(&link).unwrap());
        }
        let body = json!({ "repositories": names }).to_string();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        return (StatusCode::OK, headers, body).into_response();
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        c.tags.fetch_add(1, Ordering::Relaxed);
        let Some(i) = sim.cat.index(name) else {
            return error(StatusCode::NOT_FOUND, "NAME_UNKNOWN");
        };
        sim.touched[i].store(1, Ordering::Relaxed);
        let page: usize = query(&uri, "n")
            .and_then(|v| v.parse().ok())
            .unwrap_or(sim.cat.tag_page)
            .clamp(1, 10_000);
        let start = match query(&uri, "last") {
            Some(l) => sim.cat.tag_index(&l).map_or(sim.cat.tags, |j| j + 1),
            None => 0,
        };
        let end = (start + page).min(sim.cat.tags);
        let tags: Vec<String> = (start..end).map(|j| format!("v{j}")).collect();
        let mut headers = HeaderMap::new();
        if end < sim.cat.tags {
            let link = format!(
                "</v2/{name}/tags/list?last=v{}&n={page}>; rel=\"next\"",
                end - 1
            );
            headers.insert("link", HeaderValue::from_str(&link).unwrap());
        }
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        let body = json!({ "name": name, "tags": tags }).to_string();
        return (StatusCode::OK, headers, body).into_response();
    }
    if let Some((name, reference)) = rest.split_once("/manifests/") {
        if head {
            c.manifest_head.fetch_add(1, Ordering::Relaxed);
        } else {
            c.manifest_get.fetch_add(1, Ordering::Relaxed);
        }
        let Some(i) = sim.cat.index(name) else {
            return error(StatusCode::NOT_FOUND, "NAME_UNKNOWN");
        };
        sim.touched[i].store(1, Ordering::Relaxed);
        let bytes = if reference.starts_with("sha256:") {
            (0..sim.cat.tags)
                .map(|j| sim.cat.manifest(i, j))
                .find(|b| digest_of(b) == reference)
        } else {
            sim.cat.tag_index(reference).map(|j| sim.cat.manifest(i, j))
        };
        let Some(bytes) = bytes else {
            return error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
        };
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static(OCI_MANIFEST));
        headers.insert(
            "docker-content-digest",
            HeaderValue::from_str(&digest_of(&bytes)).unwrap(),
        );
        headers.insert("content-length", HeaderValue::from(bytes.len()));
        let body = if head {
            Body::empty()
        } else {
            Body::from(bytes)
        };
        return (StatusCode::OK, headers, body).into_response();
    }
    if rest.contains("/blobs/") {
        c.blob.fetch_add(1, Ordering::Relaxed);
        return error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
    }
    c.other.fetch_add(1, Ordering::Relaxed);
    error(StatusCode::NOT_FOUND, "NOT_FOUND")
}

impl Sim {
    fn stats(&self) -> Value {
        let c = &self.counts;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "requests": g(&c.total),
            "ping": g(&c.ping),
            "catalog": g(&c.catalog),
            "tags": g(&c.tags),
            "manifest_head": g(&c.manifest_head),
            "manifest_get": g(&c.manifest_get),
            "blob": g(&c.blob),
            "other": g(&c.other),
            "repositories_touched": self.touched_set().len(),
        })
    }

    fn touched_set(&self) -> BTreeSet<usize> {
        (0..self.touched.len())
            .filter(|&i| self.touched[i].load(Ordering::Relaxed) == 1)
            .collect()
    }
}

/// Starts a simulator on `listen` (port 0: a free one); its address.
async fn start_sim(cat: Catalog, listen: &str) -> (Arc<Sim>, String) {
    let sim = Arc::new(Sim {
        touched: (0..cat.repos).map(|_| AtomicU8::new(0)).collect(),
        cat,
        counts: Counts::default(),
    });
    let s1 = sim.clone();
    let s2 = sim.clone();
    let app = Router::new()
        .route(
            "/_sim/stats",
            get(move || {
                let s = s1.clone();
                async move { axum::Json(s.stats()) }
            }),
        )
        .route(
            "/_sim/repos",
            get(move || {
                let s = s2.clone();
                async move { axum::Json(json!(s.touched_set())) }
            }),
        )
        .fallback(handle)
        .with_state(sim.clone());
    let listener = tokio::net::TcpListener::bind(listen).await.expect("bind");
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    (sim, addr)
}

// ---------------------------------------------------------------------------------------------
// Options

struct Opts {
    repos: usize,
    tags: usize,
    seed: u64,
    latency_ms: u64,
    tag_page: usize,
    parallel: usize,
    shards: u32,
    from: u32,
    listen: String,
}

fn parse_opts(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        repos: 10_000,
        tags: 100,
        seed: 1,
        latency_ms: 0,
        tag_page: 50,
        parallel: 16,
        shards: 1,
        from: 4,
        listen: "127.0.0.1:0".into(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs a value"))
        };
        let num = |v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{a}: not a number: {v}"))
        };
        match a.as_str() {
            "--repos" => o.repos = num(val()?)? as usize,
            "--tags" => o.tags = num(val()?)? as usize,
            "--seed" => o.seed = num(val()?)?,
            "--latency-ms" => o.latency_ms = num(val()?)?,
            "--tag-page" => o.tag_page = num(val()?)?.max(1) as usize,
            "--parallel" => o.parallel = num(val()?)?.max(1) as usize,
            "--shards" => o.shards = num(val()?)?.clamp(1, 64) as u32,
            "--from" => o.from = num(val()?)?.clamp(1, 10_000) as u32,
            "--listen" => o.listen = val()?,
            "--bench" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if o.repos > 999_999 {
        return Err("--repos: at most 999999".into());
    }
    Ok(o)
}

impl Opts {
    fn catalog(&self) -> Catalog {
        Catalog {
            repos: self.repos,
            tags: self.tags,
            seed: self.seed,
            tag_page: self.tag_page,
            latency: Duration::from_millis(self.latency_ms),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Benchmarks

fn regsync_bin() -> String {
    std::env::var("REGSYNC_TEST_BIN")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_regsync").to_string())
}

fn config(src: &str, dst: &str, parallel: usize) -> String {
    format!(
        "version: 1\ncreds:\n  - registry: {src}\n    tls: disabled\n    reqConcurrent: {parallel}\n  \
         - registry: {dst}\n    tls: disabled\n    reqConcurrent: {parallel}\ndefaults:\n  \
         parallel: {parallel}\nsync:\n  - source: {src}\n    target: {dst}/mirror\n    type: registry\n"
    )
}

/// A `regsync once` under `/usr/bin/time -v`, started.
fn spawn_once(dir: &Path, name: &str, cfg: &str, shard: Option<(u32, u32)>) -> std::process::Child {
    let cfg_path = dir.join(format!("{name}.yml"));
    std::fs::write(&cfg_path, cfg).unwrap();
    let mut cmd = Command::new("/usr/bin/time");
    cmd.arg("-v")
        .arg("-o")
        .arg(dir.join(format!("{name}.time")))
        .arg(regsync_bin())
        .args(["once", "-c"])
        .arg(&cfg_path)
        .arg("--report")
        .arg(dir.join(format!("{name}.json")))
        .args(["--progress=false"]);
    if let Some((i, n)) = shard {
        cmd.args(["--shard", &format!("{i}/{n}")]);
    }
    cmd.env_remove("REGSYNC_SHARD")
        .env_remove("REGSYNC_SHARDS")
        .env("NO_PROXY", "127.0.0.1")
        .env("DOCKER_CONFIG", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap());
    cmd.spawn().expect("spawn /usr/bin/time regsync")
}

/// Peak RSS (KiB) and wall seconds from a `/usr/bin/time -v` file.
fn time_v(path: &Path) -> (u64, f64) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut rss = 0;
    let mut wall = 0.0;
    for l in text.lines() {
        let l = l.trim();
        if let Some(v) = l.strip_prefix("Maximum resident set size (kbytes): ") {
            rss = v.parse().unwrap_or(0);
        }
        if let Some(v) = l.strip_prefix("Elapsed (wall clock) time (h:mm:ss or m:ss): ") {
            wall = v
                .split(':')
                .fold(0.0, |acc, p| acc * 60.0 + p.parse::<f64>().unwrap_or(0.0));
        }
    }
    (rss, wall)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_default()).unwrap_or(Value::Null)
}

async fn noop(o: &Opts) -> Result<Value, String> {
    let cat = o.catalog();
    let total_tags = (o.repos * o.tags) as u64;
    let (src, src_addr) = start_sim(cat.clone(), "127.0.0.1:0").await;
    let mut targets = Vec::new();
    for _ in 0..o.shards {
        targets.push(start_sim(cat.clone(), "127.0.0.1:0").await);
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    say!(
        "{} repos x {} tags = {total_tags} tags, {} shard(s), parallel {}, latency {} ms",
        o.repos,
        o.tags,
        o.shards,
        o.parallel,
        o.latency_ms
    );
    let started = Instant::now();
    let mut children = Vec::new();
    for (i, (_, dst_addr)) in targets.iter().enumerate() {
        let cfg = config(&src_addr, dst_addr, o.parallel);
        let shard = (o.shards > 1).then_some((i as u32, o.shards));
        children.push(spawn_once(dir.path(), &format!("shard{i}"), &cfg, shard));
    }
    let mut ok = true;
    for mut c in children {
        // Wait on a blocking thread: the simulators run on this runtime.
        let st = tokio::task::spawn_blocking(move || c.wait())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        ok &= st.success();
    }
    let wall = started.elapsed().as_secs_f64();
    let src_stats = src.stats();
    let mut shards = Vec::new();
    let mut union = BTreeSet::new();
    let mut seen_twice = BTreeSet::new();
    let mut dst_requests = 0;
    let mut manifest_gets = src_stats["manifest_get"].as_u64().unwrap_or(0);
    let mut owners_agree = true;
    for (i, (sim, _)) in targets.iter().enumerate() {
        let st = sim.stats();
        dst_requests += st["requests"].as_u64().unwrap_or(0);
        manifest_gets += st["manifest_get"].as_u64().unwrap_or(0);
        let touched = sim.touched_set();
        for r in &touched {
            if !union.insert(*r) {
                seen_twice.insert(*r);
            }
        }
        if o.shards > 1 {
            let predicted: BTreeSet<usize> = (0..o.repos)
                .filter(|&r| {
                    regsync::shard::owner(&format!("mirror/{}", Catalog::name(r)), o.shards)
                        == i as u32
                })
                .collect();
            owners_agree &= predicted == touched;
        }
        let (rss, own_wall) = time_v(&dir.path().join(format!("shard{i}.time")));
        let report = read_json(&dir.path().join(format!("shard{i}.json")));
        let requests: u64 = report["registries"]
            .as_array()
            .map(|a| a.iter().filter_map(|r| r["requests"].as_u64()).sum())
            .unwrap_or(0);
        shards.push(json!({
            "shard": format!("{i}/{}", o.shards),
            "seconds": own_wall,
            "peak_rss_kib": rss,
            "requests": requests,
            "target_requests": st["requests"],
            "repositories": touched.len(),
            "images_matched": report["totals"]["images_matched"],
            "images_copied": report["totals"]["images_copied"],
            "result": report["result"],
        }));
    }
    let src_requests = src_stats["requests"].as_u64().unwrap_or(0);
    let requests = src_requests + dst_requests;
    let max_rss = shards
        .iter()
        .filter_map(|s| s["peak_rss_kib"].as_u64())
        .max()
        .unwrap_or(0);
    let mut out = json!({
        "bench": "noop",
        "repos": o.repos,
        "tags_per_repo": o.tags,
        "tags": total_tags,
        "shards": o.shards,
        "parallel": o.parallel,
        "latency_ms": o.latency_ms,
        "tag_page": o.tag_page,
        "ok": ok,
        "wall_seconds": (wall * 1000.0).round() / 1000.0,
        "requests": requests,
        "requests_per_second": (requests as f64 / wall).round(),
        "requests_per_tag": ((requests as f64 / total_tags as f64) * 10000.0).round() / 10000.0,
        "manifest_gets": manifest_gets,
        "source": src_stats,
        "peak_rss_kib": max_rss,
    });
    if o.shards > 1 {
        out["per_shard"] = json!(shards);
        out["union_repositories"] = json!(union.len());
        out["intersection_repositories"] = json!(seen_twice.len());
        out["owners_match_regsync_shard_owner"] = json!(owners_agree);
    } else {
        out["target"] = targets[0].0.stats();
        out["regsync"] = shards[0].clone();
    }
    Ok(out)
}

fn movement(o: &Opts) -> Value {
    let (from, to) = (o.from, o.from + 1);
    let moved = (0..o.repos)
        .filter(|&r| {
            let repo = format!("mirror/{}", Catalog::name(r));
            regsync::shard::owner(&repo, from) != regsync::shard::owner(&repo, to)
        })
        .count();
    json!({
        "bench": "movement",
        "repos": o.repos,
        "from": from,
        "to": to,
        "moved": moved,
        "fraction": (moved as f64 / o.repos as f64 * 10000.0).round() / 10000.0,
        "expected": (1.0 / f64::from(to) * 10000.0).round() / 10000.0,
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        return ExitCode::SUCCESS;
    }
    let rest: Vec<String> = args.iter().filter(|a| *a != "--bench").cloned().collect();
    let (cmd, flags) = match rest.split_first() {
        Some((c, f)) => (c.as_str(), f),
        None => ("noop", &rest[..]),
    };
    let o = match parse_opts(flags) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("scale: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match cmd {
        "serve" => rt.block_on(async {
            let (_sim, addr) = start_sim(o.catalog(), &o.listen).await;
            println!("http://{addr}");
            say!(
                "serving {} repos x {} tags; stop with Ctrl-C",
                o.repos,
                o.tags
            );
            let _ = tokio::signal::ctrl_c().await;
            ExitCode::SUCCESS
        }),
        "noop" => match rt.block_on(noop(&o)) {
            Ok(v) => {
                println!("{v}");
                if v["ok"] == true {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("scale: {e}");
                ExitCode::FAILURE
            }
        },
        "movement" => {
            println!("{}", movement(&o));
            ExitCode::SUCCESS
        }
        other => {
            eprintln!("scale: unknown command {other} (serve, noop, movement)");
            ExitCode::FAILURE
        }
    }
}
