//! Every step run owns its counters: two steps of `server` whose runs overlap each report
//! only their own images, blobs and bytes in their `Step summary`, and the closing `Sync
//! summary` is the total of both.

mod common;

use common::server::Server;
use common::*;
use serde_json::Value;
use std::time::Duration;

fn field(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("field {k} missing: {v}"))
}

/// `server`'s initial pass runs both steps at once (`parallel: 2`): a repository of three
/// tags read from a slow source (`reqPerSec: 4`) and a single image from a fast one, so the
/// single image's whole run falls inside the repository's. Each `Step summary` counts only its
/// own step's work; the `Sync summary` at the stop is their sum.
#[test]
fn overlapping_step_runs_each_count_only_their_own_work() {
    let (src, fast, dst) = (Registry::start(), Registry::start(), Registry::start());
    let alpha = [oci_image(9100), oci_image(9101), oci_image(9102)];
    for (i, img) in alpha.iter().enumerate() {
        push(&src, "alpha", &format!("v{i}"), img);
    }
    let beta = docker_image(9110);
    push(&fast, "beta", "v1", &beta);
    let steps = [
        repo_step(&src.r("alpha"), &dst.r("alpha"), &[], &[]) + "interval: 1h\n",
        image_step(&fast.r("beta:v1"), &dst.r("beta:v1")) + "interval: 1h\n",
    ];
    let slow = format!("  - registry: {}\n    tls: disabled\n", src.host());
    let cfg = config(&[&src, &fast, &dst], 2, &steps).replacen(
        &slow,
        &format!("{slow}    reqPerSec: 4\n"),
        1,
    );
    assert!(cfg.contains("reqPerSec: 4"), "{cfg}");
    let mut server = Server::start(&cfg, &[]);
    let summaries = server.wait_logs("Step summary", 2, Duration::from_secs(30));
    let of = |step: &str| {
        summaries
            .iter()
            .find(|v| v["step"] == step)
            .unwrap_or_else(|| panic!("no Step summary for {step}\n{summaries:?}"))
            .clone()
    };
    let (a, b) = (of("sync[0]"), of("sync[1]"));
    // The runs overlapped: the repository step had sent its first request before the image
    // step's summary and ended after it.
    let logs = server.logs();
    let pos = |pred: &dyn Fn(&Value) -> bool| logs.iter().position(pred);
    let alpha_started = pos(&|v| v["url"].as_str().is_some_and(|u| u.contains("/v2/alpha/")));
    let beta_done = pos(&|v| v["msg"] == "Step summary" && v["step"] == "sync[1]");
    let alpha_done = pos(&|v| v["msg"] == "Step summary" && v["step"] == "sync[0]");
    assert!(
        alpha_started < beta_done && beta_done < alpha_done,
        "step runs did not overlap: {alpha_started:?} {beta_done:?} {alpha_done:?}\n{}",
        server.stderr()
    );
    for (s, images, bytes) in [
        (&a, 3, alpha.iter().map(|i| i.blob_bytes()).sum::<usize>()),
        (&b, 1, beta.blob_bytes()),
    ] {
        assert_eq!(s["mode"], "missing", "{s}");
        assert_eq!(s["errors"], 0, "{s}");
        assert_eq!(field(s, "images_checked"), images, "{s}");
        assert_eq!(field(s, "images_copied"), images, "{s}");
        assert_eq!(field(s, "images_failed"), 0, "{s}");
        assert_eq!(field(s, "manifests_pushed"), images, "{s}");
        assert_eq!(field(s, "bytes_copied"), bytes as u64, "{s}");
    }
    for (i, _) in alpha.iter().enumerate() {
        assert_same_image(&src, &dst, "alpha", &format!("v{i}"));
    }
    assert_same_image(&fast, &dst, "beta", "v1");

    server.signal(libc::SIGTERM);
    server.wait_exit(Duration::from_secs(10));
    let total = server
        .logs_of("Sync summary")
        .pop()
        .unwrap_or_else(|| panic!("no Sync summary\n{}", server.stderr()));
    for k in [
        "images_checked",
        "images_copied",
        "manifests_pushed",
        "blobs_copied",
        "bytes_copied",
    ] {
        assert_eq!(
            field(&total, k),
            field(&a, k) + field(&b, k),
            "{k}: {total}"
        );
    }
}

/// SIGTERM in the middle of a copy: the interrupted image is counted as cancelled, not as
/// failed, in the step run's `Step summary` and in the `Sync summary`.
#[test]
fn an_image_stopped_by_sigterm_counts_as_canceled_not_failed() {
    let (src, dst) = (Registry::start(), Registry::start());
    // 12 layers read from a source paced at 3 requests per second: several seconds of copy.
    let big = ImageSpec::new(9200, Format::Oci)
        .layers(12, 256 * 1024)
        .build();
    push(&src, "big", "v1", &big);
    let cfg = format!(
        "version: 1\ncreds:\n  - registry: {}\n    tls: disabled\n    reqPerSec: 3\n  - registry: {}\n    tls: disabled\ndefaults:\n  parallel: 2\nsync:\n  - source: {}\n    target: {}\n    type: image\n    interval: 1h\n",
        src.host(),
        dst.host(),
        src.r("big:v1"),
        dst.r("big:v1"),
    );
    let mut server = Server::start(&cfg, &[]);
    server.wait_logs("Image sync running", 1, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    server.signal(libc::SIGTERM);
    server.wait_exit(Duration::from_secs(10));
    assert_eq!(
        manifest_digest(&dst, "big", "v1"),
        None,
        "copy finished before the signal"
    );
    let step = server
        .logs_of("Step summary")
        .pop()
        .unwrap_or_else(|| panic!("no Step summary\n{}", server.stderr()));
    let total = server
        .logs_of("Sync summary")
        .pop()
        .unwrap_or_else(|| panic!("no Sync summary\n{}", server.stderr()));
    for s in [&step, &total] {
        assert_eq!(field(s, "images_checked"), 1, "{s}");
        assert_eq!(field(s, "images_canceled"), 1, "{s}");
        assert_eq!(field(s, "images_failed"), 0, "{s}");
        assert_eq!(field(s, "images_copied"), 0, "{s}");
    }
}
