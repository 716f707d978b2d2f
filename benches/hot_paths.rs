//! `hot_paths`: micro-benchmarks of the per-blob, per-manifest and per-tag work of a copy,
//! without a registry, so a regression shows up in seconds rather than in a catalog run.
//!
//! ```text
//! cargo bench --bench hot_paths -- [--quick] [--samples N] [--sample-ms MS] [CASE_SUBSTRING]
//! ```
//!
//! Cases (every one calls the library crate `regsync`, the code the binary runs):
//!
//! * `digest_stream_1mib`: [`regsync::store::verified`] — the wrapper every blob copy streams
//!   through (size and sha256 checked in flight, the digest at the last byte) — drained over a
//!   1 MiB blob in 16 KiB `Bytes` chunks.
//! * `digest_update_1mib`: [`regsync::oci::DigestVerifier`] alone on the same chunks: the hashing
//!   floor, so the stream's own overhead is the difference to the case above.
//! * `manifest_index` / `manifest_image`: [`regsync::oci::Manifest::from_bytes`] (media type +
//!   sha256 of the bytes) and [`regsync::oci::Manifest::links`] (descriptor parsing), as a
//!   fetched manifest goes through them: a 3-platform OCI index with annotations (1.1 KB)
//!   and an OCI image manifest with a config and 4 layers with annotations (1.1 KB).
//! * `filter_tags_allow_deny_10k`, `filter_tags_semver_10k`, `filter_tag_sets_10k`,
//!   `filter_repos_10k`: [`regsync::filter::filter_tags`] / [`regsync::filter::filter_repos`] on
//!   10,000 names (semver tags with and without `v`, `-rc` prereleases, `latest`, branch tags,
//!   cosign-style `sha256-<hex>.sig` tags): allow + deny regexes, a two-range `semverRange` with
//!   a deny, and the union of two tag sets. The functions compile their patterns on every call,
//!   so `ns_per_op` is one whole call (compilation included) and `ns_per_item` that over 10,000.
//!
//! Method: no benchmark framework. Each case is warmed up (200 ms; 50 with `--quick`), then the
//! number of iterations per sample is calibrated so that a sample takes about `--sample-ms`
//! (100; 20 with `--quick`); `--samples` (9; 3 with `--quick`) samples are timed, each op's
//! result goes through `std::hint::black_box`, and the median sample's ns/op is reported.
//!
//! stdout: exactly one JSON line, `{"bench":"hot_paths","samples":N,"sample_ms":MS,"cases":
//! {"<case>":{"ns_per_op":..,"iters":..,...},...}}`, with `mb_per_s` for the digest cases and
//! `ns_per_item` for the filter cases; progress on stderr. Without `--bench` in its arguments
//! (i.e. under `cargo test --all-targets`) it does nothing.

use bytes::Bytes;
use futures::StreamExt as _;
use regsync::config::{RepoFilter, TagFilter};
use regsync::oci::{media, Descriptor, Digest, DigestVerifier, Manifest};
use regsync::store::{self, BlobStream};
use serde_json::{json, Value};
use std::hint::black_box;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const USAGE: &str =
    "usage: cargo bench --bench hot_paths -- [--quick] [--samples N] [--sample-ms MS] [CASE_SUBSTRING]";

struct Opts {
    samples: usize,
    sample: Duration,
    warmup: Duration,
    only: Option<String>,
}

/// `None` = not invoked by `cargo bench` (no `--bench`): do nothing.
fn parse_args() -> Result<Option<Opts>, String> {
    let mut o = Opts {
        samples: 9,
        sample: Duration::from_millis(100),
        warmup: Duration::from_millis(200),
        only: None,
    };
    let (mut bench, mut quick) = (false, false);
    let (mut samples, mut sample_ms) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let (k, inline) = match a.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut num = |k: &str| -> Result<u64, String> {
            let v = inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{k} needs a value\n{USAGE}"))?;
            match v.parse::<u64>() {
                Ok(n) if n >= 1 => Ok(n),
                _ => Err(format!("{k}: not a positive number: {v}")),
            }
        };
        match k.as_str() {
            "--bench" => bench = true,
            "--quick" => quick = true,
            "--samples" => samples = Some(num(&k)? as usize),
            "--sample-ms" => sample_ms = Some(num(&k)?),
            "-h" | "--help" => {
                eprintln!("{USAGE}");
                std::process::exit(0);
            }
            s if s.starts_with('-') => return Err(format!("unknown argument {s}\n{USAGE}")),
            s => o.only = Some(s.to_string()),
        }
    }
    if quick {
        o.samples = 3;
        o.sample = Duration::from_millis(20);
        o.warmup = Duration::from_millis(50);
    }
    if let Some(n) = samples {
        o.samples = n;
    }
    if let Some(ms) = sample_ms {
        o.sample = Duration::from_millis(ms);
    }
    Ok(bench.then_some(o))
}

/// One measured case: median ns per op over the samples.
struct Measured {
    ns_per_op: f64,
    iters: u64,
}

fn measure<R>(o: &Opts, mut op: impl FnMut() -> R) -> Measured {
    // Warm-up, which also gives a first estimate of the cost of one op.
    let t = Instant::now();
    let mut n: u64 = 0;
    while t.elapsed() < o.warmup || n < 3 {
        black_box(op());
        n += 1;
    }
    let per_op = t.elapsed().as_secs_f64() / n as f64;
    let iters = ((o.sample.as_secs_f64() / per_op).ceil() as u64).max(1);
    let mut ns: Vec<f64> = (0..o.samples)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                black_box(op());
            }
            t.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    ns.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Measured {
        ns_per_op: ns[ns.len() / 2],
        iters,
    }
}

// ---------------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------------

/// Deterministic incompressible-looking bytes (xorshift64*).
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        out.extend_from_slice(&seed.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn digest_of(tag: &str) -> String {
    Digest::sha256_of(tag.as_bytes()).to_string()
}

fn image_manifest() -> Vec<u8> {
    let layer = |i: usize, size: u64| {
        json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": digest_of(&format!("layer-{i}")),
            "size": size,
        })
    };
    let v = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": digest_of("config"),
            "size": 1469,
        },
        "layers": [
            layer(0, 29_150_208),
            layer(1, 4_194_304),
            layer(2, 1_048_576),
            layer(3, 32_768),
        ],
        "annotations": {
            "org.opencontainers.image.created": "2026-11-30T12:00:00Z",
            "org.opencontainers.image.source": "https://github.com/example/app",
            "org.opencontainers.image.revision": "0123456789abcdef0123456789abcdef01234567",
            "org.opencontainers.image.version": "1.4.2",
        },
    });
    serde_json::to_vec(&v).unwrap()
}

fn image_index() -> Vec<u8> {
    let entry = |arch: &str, variant: Option<&str>, size: u64| {
        let mut platform = json!({ "architecture": arch, "os": "linux" });
        if let Some(v) = variant {
            platform["variant"] = json!(v);
        }
        json!({
            "mediaType": media::OCI_MANIFEST,
            "digest": digest_of(&format!("manifest-{arch}-{variant:?}")),
            "size": size,
            "platform": platform,
            "annotations": {
                "org.opencontainers.image.ref.name": "1.4.2",
            },
        })
    };
    let v = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": [
            entry("amd64", None, 1203),
            entry("arm64", Some("v8"), 1203),
            entry("arm", Some("v7"), 1203),
        ],
        "annotations": {
            "org.opencontainers.image.created": "2026-11-30T12:00:00Z",
            "org.opencontainers.image.source": "https://github.com/example/app",
            "org.opencontainers.image.revision": "0123456789abcdef0123456789abcdef01234567",
        },
    });
    serde_json::to_vec(&v).unwrap()
}

/// 10,000 tag names of the kinds a real repository accumulates.
fn tags_10k() -> Vec<String> {
    (0..10_000usize)
        .map(|i| {
            let (maj, min, pat) = (i / 1000, (i / 50) % 20, i % 50);
            match i % 10 {
                0 => format!("{maj}.{min}.{pat}-rc{}", i % 3 + 1),
                1 => format!("sha256-{}.sig", &digest_of(&i.to_string())[7..]),
                2 => format!("main-{:07x}", i * 2_654_435_761 % 0xFFF_FFFF),
                3 if i % 1000 == 3 => "latest".to_string(),
                3..=5 => format!("v{maj}.{min}.{pat}"),
                _ => format!("{maj}.{min}.{pat}"),
            }
        })
        .collect()
}

fn repos_10k() -> Vec<String> {
    (0..10_000usize)
        .map(|i| match i % 4 {
            0 => format!("library/app-{i:05}"),
            1 => format!("team-{}/service-{i:05}", i % 37),
            2 => format!("mirror/docker.io/library/base-{i:05}"),
            _ => format!("sandbox/tmp-{i:05}"),
        })
        .collect()
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------

fn main() -> ExitCode {
    let o = match parse_args() {
        Ok(Some(o)) => o,
        Ok(None) => {
            eprintln!("hot_paths: not run by `cargo bench` (no --bench argument); nothing to do");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("hot_paths: {e}");
            return ExitCode::from(2);
        }
    };
    // (case, its JSON object: ns_per_op and iters first, then the case's own fields)
    let mut cases: Vec<(&str, String)> = Vec::new();
    let want = |name: &str| o.only.as_deref().is_none_or(|f| name.contains(f));
    let mut report = |name: &'static str, m: Measured, extra: Value| {
        let mut fields = vec![
            ("ns_per_op".to_string(), json!(m.ns_per_op.round() as u64)),
            ("iters".to_string(), json!(m.iters)),
        ];
        if let Value::Object(x) = extra {
            fields.extend(x);
        }
        let v = ordered(&fields);
        eprintln!("hot_paths: {name}: {v}");
        cases.push((name, v));
    };

    // Digest streaming.
    let blob = Bytes::from(noise(1 << 20, 0x5EED));
    let chunks: Vec<Bytes> = (0..blob.len())
        .step_by(16 << 10)
        .map(|i| blob.slice(i..(i + (16 << 10)).min(blob.len())))
        .collect();
    let desc = Descriptor::new(
        "application/vnd.oci.image.layer.v1.tar+gzip",
        Digest::sha256_of(&blob),
        blob.len() as i64,
    );
    let mb_per_s =
        |m: &Measured| ((blob.len() as f64 / 1e6) / (m.ns_per_op / 1e9) * 10.0).round() / 10.0;
    if want("digest_stream_1mib") {
        let m = measure(&o, || {
            let inner: BlobStream =
                futures::stream::iter(chunks.clone().into_iter().map(Ok)).boxed();
            let mut s = store::verified(&desc, inner);
            futures::executor::block_on(async {
                let mut n = 0usize;
                while let Some(c) = s.next().await {
                    n += c.expect("the blob verifies").len();
                }
                n
            })
        });
        let rate = mb_per_s(&m);
        report("digest_stream_1mib", m, json!({ "mb_per_s": rate }));
    }
    if want("digest_update_1mib") {
        let m = measure(&o, || {
            let mut v = DigestVerifier::new(&desc.digest).unwrap();
            for c in &chunks {
                v.update(black_box(c));
            }
            let (_, ok) = v.finish();
            assert!(ok);
        });
        let rate = mb_per_s(&m);
        report("digest_update_1mib", m, json!({ "mb_per_s": rate }));
    }

    // Manifest parsing.
    for (name, bytes, mt, children, blobs) in [
        (
            "manifest_index",
            Bytes::from(image_index()),
            media::OCI_INDEX,
            3,
            0,
        ),
        (
            "manifest_image",
            Bytes::from(image_manifest()),
            media::OCI_MANIFEST,
            0,
            5,
        ),
    ] {
        if !want(name) {
            continue;
        }
        let m = measure(&o, || {
            let m = Manifest::from_bytes(bytes.clone(), Some(mt));
            let l = m.links().expect("manifest parses");
            assert_eq!((l.children.len(), l.blobs.len()), (children, blobs));
            (m, l)
        });
        report(name, m, json!({ "bytes": bytes.len() }));
    }

    // Filters.
    let tags = tags_10k();
    let repos = repos_10k();
    let allow_deny = TagFilter {
        allow: s(&[r"v?[0-9]+\.[0-9]+\.[0-9]+.*", "latest"]),
        deny: s(&[".*-rc.*", r"sha256-.*\.sig"]),
        semver_range: vec![],
    };
    let semver = TagFilter {
        allow: vec![],
        deny: s(&[".*-rc.*"]),
        semver_range: s(&[">=1.0.0 <2.0.0", ">=4.0.0"]),
    };
    let latest = TagFilter {
        allow: s(&["latest", "main-.*"]),
        deny: vec![],
        semver_range: vec![],
    };
    let none = TagFilter::default();
    let tag_cases: [(&'static str, &TagFilter, Vec<TagFilter>); 3] = [
        ("filter_tags_allow_deny_10k", &allow_deny, vec![]),
        ("filter_tags_semver_10k", &semver, vec![]),
        (
            "filter_tag_sets_10k",
            &none,
            vec![semver.clone(), latest.clone()],
        ),
    ];
    for (name, tf, sets) in tag_cases {
        if !want(name) {
            continue;
        }
        let kept = regsync::filter::filter_tags(tf, &sets, &tags)
            .unwrap()
            .len();
        let m = measure(&o, || {
            regsync::filter::filter_tags(tf, &sets, &tags).unwrap()
        });
        let per = (m.ns_per_op / tags.len() as f64 * 10.0).round() / 10.0;
        report(
            name,
            m,
            json!({ "items": tags.len(), "kept": kept, "ns_per_item": per }),
        );
    }
    if want("filter_repos_10k") {
        let rf = RepoFilter {
            allow: s(&["library/.*", "team-[0-9]+/.*", "mirror/docker\\.io/.*"]),
            deny: s(&[".*-0[0-4][0-9]{3}", "team-3[0-6]/.*"]),
        };
        let kept = regsync::filter::filter_repos(&rf, &repos).unwrap().len();
        let m = measure(&o, || regsync::filter::filter_repos(&rf, &repos).unwrap());
        let per = (m.ns_per_op / repos.len() as f64 * 10.0).round() / 10.0;
        report(
            "filter_repos_10k",
            m,
            json!({ "items": repos.len(), "kept": kept, "ns_per_item": per }),
        );
    }

    if cases.is_empty() {
        eprintln!(
            "hot_paths: no case matches {:?}",
            o.only.unwrap_or_default()
        );
        return ExitCode::from(2);
    }
    // Cases in run order.
    let body = cases
        .iter()
        .map(|(k, v)| format!("{}:{v}", json!(k)))
        .collect::<Vec<_>>()
        .join(",");
    println!(
        "{{\"bench\":\"hot_paths\",\"samples\":{},\"sample_ms\":{},\"cases\":{{{body}}}}}",
        o.samples,
        o.sample.as_millis()
    );
    ExitCode::SUCCESS
}

/// A JSON object with its keys in the given order (serde_json's map would sort them).
fn ordered(fields: &[(String, Value)]) -> String {
    let body = fields
        .iter()
        .map(|(k, v)| format!("{}:{v}", json!(k)))
        .collect::<Vec<_>>()
        .join(",");
    format!("{{{body}}}")
}
