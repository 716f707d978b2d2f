//! `once --report FILE` and `check --report -` (operations issue): one JSON document whose
//! totals equal the `Sync summary` line and the target's real content, whose failed images
//! name their source and target, and whose per-registry requests are the requests the
//! registries themselves logged. A report that cannot be written is one line before anything
//! runs; `server` refuses the flag.

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeMap;

fn read_report(path: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON: {e}\n{text}"))
}

/// The requests a registry logged, by (method, kind, status), classified the way the report
/// documents its `kind`.
fn logged(reg: &Registry, since: usize) -> BTreeMap<(String, String, u16), u64> {
    let mut out = BTreeMap::new();
    for l in reg.access_since(since) {
        let path = l.path.split('?').next().unwrap_or("").trim_end_matches('/');
        let kind = if path == "/v2" {
            "ping"
        } else if path.ends_with("/tags/list") {
            "tags"
        } else if path.contains("/blobs/uploads") {
            "upload"
        } else if path.contains("/blobs/") {
            "blob"
        } else if path.contains("/manifests/") {
            "manifest"
        } else {
            "other"
        };
        *out.entry((l.method.to_uppercase(), kind.to_string(), l.status))
            .or_default() += 1;
    }
    out
}

fn reported(r: &Value) -> BTreeMap<(String, String, u16), u64> {
    r["requests_by_kind"]
        .as_array()
        .unwrap_or_else(|| panic!("{r}"))
        .iter()
        .map(|k| {
            (
                (
                    k["method"].as_str().unwrap().to_string(),
                    k["kind"].as_str().unwrap().to_string(),
                    k["code"].as_str().unwrap().parse().unwrap(),
                ),
                k["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Two steps: a repository of three tags that copies, and an image the source lacks. The
/// report's totals are the summary's, its step 0 counts the tags that landed, step 1 names
/// its failed image, and each registry's requests match its own access log line for line.
#[test]
fn once_report_totals_equal_the_summary_the_target_and_the_registries_logs() {
    let (src, dst) = (Registry::start(), Registry::start());
    let images = [oci_image(9400), docker_image(9401), oci_image(9402)];
    for (i, img) in images.iter().enumerate() {
        push(&src, "alpha", &format!("v{i}"), img);
    }
    let (src_mark, dst_mark) = (src.mark(), dst.mark());
    let steps = [
        repo_step(&src.r("alpha"), &dst.r("alpha"), &[], &[]),
        image_step(&src.r("missing:v1"), &dst.r("missing:v1")),
    ];
    let cfg = config(&[&src, &dst], 2, &steps);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.json");
    let out = regsync(&["once", "--report", path.to_str().unwrap()], &cfg);
    out.assert_fail();
    let report = read_report(&path);
    let summary = summary(&out);

    assert_eq!(report["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(report["mode"], "once");
    assert_eq!(report["missing"], false);
    assert_eq!(report["result"], "failed");
    assert!(report["seconds"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report["start"].as_str().unwrap() <= report["end"].as_str().unwrap());
    let totals = &report["totals"];
    for (k, v) in summary.as_object().unwrap() {
        if k.starts_with("images_")
            || k.starts_with("blobs_")
            || k == "bytes_copied"
            || k == "manifests_pushed"
        {
            assert_eq!(&totals[k], v, "totals.{k}: {report}\nsummary: {summary}");
        }
    }
    // What landed (listed after the requests are compared below: the listing is logged too).
    let landed = images.len() as u64;
    assert_eq!(totals["images_copied"], landed);
    let blob_bytes: usize = images.iter().map(|i| i.blob_bytes()).sum();
    assert_eq!(totals["bytes_copied"], blob_bytes as u64);

    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "{report}");
    assert_eq!(steps[0]["name"], "sync[0]");
    assert_eq!(steps[0]["type"], "repository");
    assert_eq!(steps[0]["source"], src.r("alpha"));
    assert_eq!(steps[0]["result"], "ok");
    assert_eq!(steps[0]["counts"]["images_copied"], landed);
    assert_eq!(steps[0]["failed_images"], Value::Array(vec![]));
    assert_eq!(steps[1]["result"], "failed");
    let failed = steps[1]["failed_images"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{report}");
    assert_eq!(failed[0]["source"], src.r("missing:v1"));
    assert_eq!(failed[0]["target"], dst.r("missing:v1"));
    assert!(failed[0]["error"].as_str().unwrap().starts_with("sync[1] "));
    assert_eq!(steps[1]["counts"]["images_failed"], 1);

    // Every request each registry logged is in the report, under the same method, kind and
    // status, and nothing else is.
    let regs = report["registries"].as_array().unwrap();
    for (reg, mark) in [(&src, src_mark), (&dst, dst_mark)] {
        let r = regs
            .iter()
            .find(|r| r["registry"] == reg.host().as_str())
            .unwrap_or_else(|| panic!("no {} in {report}", reg.host()));
        // The test's own pushes came before the mark.
        let want = logged(reg, mark);
        assert_eq!(reported(r), want, "{}: {r}", reg.host());
        assert_eq!(r["retries"], 0);
        assert_eq!(r["rate_limit_remaining"], Value::Null);
    }
    assert_eq!(tags(&dst, "alpha").len() as u64, landed);
    let src_r = regs
        .iter()
        .find(|r| r["registry"] == src.host().as_str())
        .unwrap();
    let dst_r = regs
        .iter()
        .find(|r| r["registry"] == dst.host().as_str())
        .unwrap();
    assert!(
        src_r["bytes_read"].as_u64().unwrap() >= blob_bytes as u64,
        "{src_r}"
    );
    assert!(
        dst_r["bytes_written"].as_u64().unwrap() >= blob_bytes as u64,
        "{dst_r}"
    );

    // `check --report -`: the document on stdout, nothing copied, every image matched.
    let out = regsync(&["check", "--report", "-"], &cfg);
    let doc: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON: {e}\n{}", out.dump()));
    assert_eq!(doc["mode"], "check");
    assert_eq!(doc["totals"]["images_matched"], landed, "{doc}");
    assert_eq!(doc["totals"]["images_copied"], 0, "{doc}");
    assert_eq!(doc["totals"]["bytes_copied"], 0, "{doc}");
}

/// A report that cannot be written stops the command before any request; `server` refuses
/// the flag; the message names the file.
#[test]
fn a_report_path_that_cannot_be_written_is_one_line_before_anything_runs() {
    let dst = Registry::start();
    let cfg = config(&[&dst], 1, &[image_step(&dst.r("a:v1"), &dst.r("b:v1"))]);
    let mark = dst.mark();
    let out = regsync(
        &["once", "--report", "/nonexistent-folder-r/run.json"],
        &cfg,
    );
    out.assert_fail();
    out.assert_one_error_line(&[
        "--report",
        "/nonexistent-folder-r/run.json",
        "does not exist",
    ]);
    assert_eq!(dst.access_since(mark).len(), 0, "requests were sent");
    let out = regsync(&["server", "--report", "x.json"], &cfg);
    out.assert_fail();
    out.assert_one_error_line(&["--report", "once and check"]);
}
