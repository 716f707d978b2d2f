//! `--shard I/N` (issue 13): N processes share one config, each copying only the target
//! repositories it owns (rendezvous hashing of the target repository path).
//!
//! * A 40-repository catalog (36 `repository` steps, 4 `type: image` steps) copied by four
//!   processes `--shard 0/4` … `--shard 3/4` at once: the target equals the source, and the
//!   reports show every step's repository owned by exactly one shard, which copied all of it.
//!   Then five shards: nothing is copied (every image matches, the target sees no write), and
//!   at most 30% of the repositories changed owner. The owners are also checked against an
//!   independent implementation of the documented hash (FNV-1a 64 + fmix64).
//! * The same catalog as one `type: registry` step over three shards: every shard reads the
//!   catalog, owns a third or so, and the target again equals the source.
//! * Bad values are one line and exit 1; the environment forms (`REGSYNC_SHARD`,
//!   `JOB_COMPLETION_INDEX` or the hostname ordinal with `REGSYNC_SHARDS`) give the shard the
//!   report names.

mod common;

use common::*;
use serde_json::Value;

const REPOS: usize = 40;
/// Steps from this index on are `type: image` steps (one tag).
const FIRST_IMAGE_STEP: usize = 36;

fn name(i: usize) -> String {
    format!("r{i:02}")
}

/// Tags of repository `i`: every fifth has two.
fn tags_of(i: usize) -> Vec<String> {
    if i.is_multiple_of(5) && i < FIRST_IMAGE_STEP {
        vec!["v1".into(), "v2".into()]
    } else {
        vec!["v1".into()]
    }
}

fn seed(src: &Registry) -> usize {
    let mut n = 0;
    for i in 0..REPOS {
        for (k, tag) in tags_of(i).iter().enumerate() {
            push(src, &name(i), tag, &oci_image(13_000 + (i * 10 + k) as u64));
            n += 1;
        }
    }
    n
}

/// The documented ownership, written again from the README's words: FNV-1a 64 over
/// `"{shard}\0{repo}"`, MurmurHash3's fmix64, the highest score wins (lower shard on a tie).
fn owner(repo: &str, count: u32) -> u32 {
    let score = |s: u32| {
        let mut h: u64 = 0xcbf29ce484222325;
        for b in format!("{s}\0{repo}").bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100000001b3);
        }
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51afd7ed558ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ceb9fe1a85ec53);
        h ^ (h >> 33)
    };
    (0..count).fold(0, |best, s| if score(s) > score(best) { s } else { best })
}

fn read_report(path: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON: {e}\n{text}"))
}

/// Runs `count` shards of `cfg` at once; their outputs and reports, by shard.
fn run_shards(cfg: &str, count: usize, extra: &[&str]) -> Vec<(Output, Value)> {
    let dir = tempfile::tempdir().unwrap();
    let handles: Vec<_> = (0..count)
        .map(|i| {
            let cfg = cfg.to_string();
            let report = dir.path().join(format!("shard-{i}.json"));
            let mut args: Vec<String> = vec![
                "once".into(),
                "--shard".into(),
                format!("{i}/{count}"),
                "--report".into(),
                report.display().to_string(),
            ];
            args.extend(extra.iter().map(|s| s.to_string()));
            std::thread::spawn(move || {
                let a: Vec<&str> = args.iter().map(String::as_str).collect();
                let out = regsync(&a, &cfg);
                (out, report)
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| {
            let (out, report) = h.join().unwrap();
            out.assert_ok();
            let r = read_report(&report);
            (out, r)
        })
        .collect()
}

/// For each step: the shard whose report says it owned the step's repository. Every other
/// report must say the step's repository belongs to another shard and count nothing for it.
fn owners_from_reports(runs: &[(Output, Value)]) -> Vec<u32> {
    let count = runs.len() as u64;
    (0..REPOS)
        .map(|step| {
            let mut owners = Vec::new();
            for (i, (out, r)) in runs.iter().enumerate() {
                assert_eq!(r["shard"]["index"], i as u64, "{r}");
                assert_eq!(r["shard"]["count"], count, "{r}");
                let s = &r["steps"][step];
                assert_eq!(s["step"], step as u64, "{s}");
                let owned = s["shard"]["repositories_owned"].as_u64().unwrap();
                let other = s["shard"]["repositories_other_shards"].as_u64().unwrap();
                assert_eq!(owned + other, 1, "step {step} shard {i}: {s}");
                if owned == 1 {
                    owners.push(i as u32);
                } else {
                    assert_eq!(s["counts"]["images_checked"], 0, "{s}");
                }
                // The Sync summary names the shard and agrees with the report.
                let sum = summary(out);
                assert_eq!(sum["shard"], format!("{i}/{count}"), "{sum}");
                assert_eq!(sum["repositories_owned"], r["shard"]["repositories_owned"]);
            }
            assert_eq!(owners.len(), 1, "step {step} owned by {owners:?}");
            owners[0]
        })
        .collect()
}

#[test]
fn four_shards_copy_the_catalog_once_and_five_shards_find_nothing_to_do() {
    let (src, dst) = (Registry::start(), Registry::start());
    let images = seed(&src);
    let steps: Vec<String> = (0..REPOS)
        .map(|i| {
            let (s, t) = (src.r(&name(i)), dst.r(&format!("mirror/{}", name(i))));
            if i < FIRST_IMAGE_STEP {
                repo_step(&s, &t, &[], &[])
            } else {
                image_step(&format!("{s}:v1"), &format!("{t}:v1"))
            }
        })
        .collect();
    let cfg = config(&[&src, &dst], 4, &steps);

    // Round 1: four shards at once.
    let runs = run_shards(&cfg, 4, &[]);
    let owners4 = owners_from_reports(&runs);
    let mut copied = 0;
    for (i, (_, r)) in runs.iter().enumerate() {
        for (step, &o) in owners4.iter().enumerate() {
            let c = &r["steps"][step]["counts"];
            if o == i as u32 {
                // The owner copied every tag of its repository.
                assert_eq!(
                    c["images_copied"],
                    tags_of(step).len() as u64,
                    "step {step}: {c}"
                );
            }
        }
        copied += r["totals"]["images_copied"].as_u64().unwrap();
        assert_eq!(r["totals"]["images_failed"], 0);
    }
    assert_eq!(copied as usize, images, "every image copied exactly once");
    let per_shard: Vec<usize> = (0..4)
        .map(|s| owners4.iter().filter(|&&o| o == s).count())
        .collect();
    assert!(per_shard.iter().all(|&n| n > 0), "{per_shard:?}");
    for (step, &o) in owners4.iter().enumerate() {
        assert_eq!(
            o,
            owner(&format!("mirror/{}", name(step)), 4),
            "step {step}"
        );
    }
    let mut want: Vec<String> = (0..REPOS).map(|i| format!("mirror/{}", name(i))).collect();
    want.sort();
    assert_eq!(catalog(&dst), want);
    for i in 0..REPOS {
        assert_same_repo(&src, &name(i), &dst, &format!("mirror/{}", name(i)));
    }

    // Round 2: five shards over the synced target copy nothing and write nothing.
    let mark = dst.mark();
    let runs = run_shards(&cfg, 5, &[]);
    let owners5 = owners_from_reports(&runs);
    let mut matched = 0;
    for (_, r) in &runs {
        assert_eq!(r["totals"]["images_copied"], 0, "{}", r["totals"]);
        assert_eq!(r["totals"]["manifests_pushed"], 0);
        matched += r["totals"]["images_matched"].as_u64().unwrap();
    }
    assert_eq!(matched as usize, images);
    assert!(
        dst.writes_since(mark).is_empty(),
        "{:?}",
        dst.writes_since(mark)
    );
    let moved = owners4.iter().zip(&owners5).filter(|(a, b)| a != b).count();
    assert!(moved * 100 <= REPOS * 30, "{moved} of {REPOS} moved");
    // Rendezvous: a repository only ever moves to the new shard.
    for (step, (a, b)) in owners4.iter().zip(&owners5).enumerate() {
        assert!(a == b || *b == 4, "step {step}: {a} -> {b}");
    }

    // The same catalog as one registry step over three shards (a fresh target).
    let dst2 = Registry::start();
    let cfg = config(
        &[&src, &dst2],
        4,
        &[registry_step(
            &src.host(),
            &format!("{}/mirror", dst2.host()),
            &[],
            &[],
        )],
    );
    let src_mark = src.mark();
    let runs = run_shards(&cfg, 3, &[]);
    let mut owned_total = 0;
    for (i, (_, r)) in runs.iter().enumerate() {
        let s = &r["steps"][0]["shard"];
        let owned = s["repositories_owned"].as_u64().unwrap();
        assert_eq!(owned + s["repositories_other_shards"].as_u64().unwrap(), 40);
        let predicted: Vec<usize> = (0..REPOS)
            .filter(|&k| owner(&format!("mirror/{}", name(k)), 3) == i as u32)
            .collect();
        assert_eq!(owned as usize, predicted.len(), "shard {i}");
        let tags: usize = predicted.iter().map(|&k| tags_of(k).len()).sum();
        assert_eq!(r["totals"]["images_copied"], tags as u64, "shard {i}");
        owned_total += owned;
    }
    assert_eq!(owned_total, 40);
    // Every shard listed the catalog; each repository's tags were listed by its owner only.
    assert!(src.count_since(src_mark, "GET", "/v2/_catalog") >= 3);
    assert_eq!(src.count_since(src_mark, "GET", "/tags/list"), REPOS);
    for i in 0..REPOS {
        assert_same_repo(&src, &name(i), &dst2, &format!("mirror/{}", name(i)));
    }
}

#[test]
fn bad_shard_values_are_one_line() {
    let cfg = "version: 1\nsync: []\n";
    for (args, env, needle) in [
        (&["once", "--shard", "4/4"][..], &[][..], "numbered 0 to 3"),
        (&["once", "--shard", "x"][..], &[][..], "--shard"),
        (&["check", "--shard", "1/0"][..], &[][..], "shard count"),
        (&["server", "--shard=-1/3"][..], &[][..], "--shard"),
        (&["once"][..], &[("REGSYNC_SHARD", "2")][..], "I/N"),
        (
            &["once"][..],
            &[("REGSYNC_SHARDS", "4"), ("HOSTNAME", "myhost")][..],
            "nothing says which shard",
        ),
        (
            &["once"][..],
            &[("REGSYNC_SHARDS", "4"), ("JOB_COMPLETION_INDEX", "4")][..],
            "JOB_COMPLETION_INDEX=4",
        ),
        (
            &["server"][..],
            &[("REGSYNC_SHARDS", "3"), ("HOSTNAME", "regsync-3")][..],
            "replicas must equal REGSYNC_SHARDS",
        ),
        (
            &["once"][..],
            &[("REGSYNC_SHARDS", "many")][..],
            "REGSYNC_SHARDS",
        ),
    ] {
        let out = regsync_env(args, cfg, env);
        out.assert_fail();
        let line = out.assert_one_error_line(&[needle]);
        assert!(out.json_logs.is_empty(), "{args:?} {env:?}: {}", out.dump());
        assert!(!line.is_empty());
    }
}

#[test]
fn the_environment_names_the_shard() {
    let cfg = "version: 1\nsync: []\n";
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r.json");
    let r = report.to_str().unwrap();
    let none: [(&str, &str); 0] = [];
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, (u64, u64));
    let cases: Vec<Case> = vec![
        (vec![], none.to_vec(), (0, 1)),
        (vec![], vec![("REGSYNC_SHARD", "1/4")], (1, 4)),
        (
            vec![],
            vec![("REGSYNC_SHARDS", "4"), ("JOB_COMPLETION_INDEX", "2")],
            (2, 4),
        ),
        (
            vec![],
            vec![("REGSYNC_SHARDS", "4"), ("HOSTNAME", "regsync-sts-3")],
            (3, 4),
        ),
        // An Indexed Job that is not sharded: JOB_COMPLETION_INDEX alone means nothing.
        (vec![], vec![("JOB_COMPLETION_INDEX", "2")], (0, 1)),
        // The flag first, then REGSYNC_SHARD, then the Job index, then the hostname.
        (
            vec!["--shard", "0/2"],
            vec![("REGSYNC_SHARD", "1/4"), ("REGSYNC_SHARDS", "3")],
            (0, 2),
        ),
        (
            vec![],
            vec![("REGSYNC_SHARD", "1/4"), ("REGSYNC_SHARDS", "3")],
            (1, 4),
        ),
        (
            vec![],
            vec![
                ("REGSYNC_SHARDS", "3"),
                ("JOB_COMPLETION_INDEX", "0"),
                ("HOSTNAME", "x-2"),
            ],
            (0, 3),
        ),
    ];
    for (flags, mut env, (index, count)) in cases {
        let mut args = vec!["once", "--report", r];
        args.extend(flags.iter().copied());
        // Whatever the test runner's environment says about shards does not count.
        for k in ["REGSYNC_SHARD", "REGSYNC_SHARDS", "JOB_COMPLETION_INDEX"] {
            if !env.iter().any(|(e, _)| *e == k) {
                env.push((k, ""));
            }
        }
        let out = regsync_env(&args, cfg, &env);
        out.assert_ok();
        let doc = read_report(&report);
        assert_eq!(doc["shard"]["index"], index, "{env:?}: {}", doc["shard"]);
        assert_eq!(doc["shard"]["count"], count, "{env:?}: {}", doc["shard"]);
        let sum = summary(&out);
        if count > 1 {
            assert_eq!(sum["shard"], format!("{index}/{count}"), "{sum}");
        } else {
            assert!(sum.get("shard").is_none(), "{sum}");
        }
    }
}

/// `/status` and `/metrics` of a sharded server name the shard.
#[test]
fn a_sharded_server_names_its_shard_on_status_and_metrics() {
    let mut srv = common::server::Server::start(
        "version: 1\nsync: []\n",
        &["--listen", "127.0.0.1:0", "--shard", "1/3"],
    );
    let addr = srv.listen_addr();
    let (code, body) = common::server::http_get(&addr, "/status");
    assert_eq!(code, 200, "{body}");
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["shard"]["index"], 1, "{status}");
    assert_eq!(status["shard"]["count"], 3, "{status}");
    let (code, metrics) = common::server::http_get(&addr, "/metrics");
    assert_eq!(code, 200, "{metrics}");
    assert!(
        metrics
            .lines()
            .any(|l| l == "regsync_shard_info{shard=\"1\",shards=\"3\"} 1.0"),
        "{metrics}"
    );
}
