//! Memory flat as the config grows (performance issue): the images a run has in flight are
//! bounded for the whole run (four per `parallel` copy), not per step, so a config with one
//! step per repository (what `abbench.sh` writes, and many users) does not hold every step's
//! look-ahead at once.

mod common;

use common::server::{metric, try_http_get, Server};
use common::*;
use std::time::{Duration, Instant};

/// Eight repository steps of two tags each, from a slow source (`reqPerSec: 20`), with
/// `parallel: 1` (steps still run at once): `regsync_images_in_flight`, polled during the run,
/// never goes above 4, and every tag is copied.
#[test]
fn images_in_flight_are_bounded_for_the_run_not_per_step() {
    let (src, dst) = (Registry::start(), Registry::start());
    let mut steps = Vec::new();
    for r in 0..8 {
        let repo = format!("r{r:02}");
        for t in 0..2 {
            push(&src, &repo, &format!("v{t}"), &oci_image(9600 + r * 2 + t));
        }
        steps.push(repo_step(&src.r(&repo), &dst.r(&repo), &[], &[]));
    }
    let cfg = paced(&config(&[&src, &dst], 1, &steps), &src.host(), 20);
    let mut run = Server::start_cmd("once", &cfg, &["--listen", "127.0.0.1:0"]);
    let addr = run.listen_addr();
    let (mut most, mut samples) = (0.0f64, 0);
    let start = Instant::now();
    while run.running() && start.elapsed() < Duration::from_secs(120) {
        // The run may end between the check above and this scrape.
        let Ok((code, text)) = try_http_get(&addr, "/metrics") else {
            break;
        };
        if code == 200 {
            if let Some(v) = metric(&text, "regsync_images_in_flight", "") {
                most = most.max(v);
                samples += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (st, _) = run.wait_exit(Duration::from_secs(60));
    assert_eq!(st.code(), Some(0), "{}", run.stderr());
    assert!(samples > 5, "the run was too quick to sample ({samples})");
    assert!(most >= 1.0, "nothing was seen in flight");
    assert!(most <= 4.0, "{most} images in flight at once (bound: 4)");
    for r in 0..8 {
        assert_eq!(tags(&dst, &format!("r{r:02}")).len(), 2);
    }
}

/// Steps in flight are bounded for the run too (one per image slot: four with `parallel: 1`):
/// twelve single-tag repository steps from a slow source (`reqPerSec: 20`) do not all list
/// at once. A step gives its slot back once its images are handed to the image slots, so
/// before the first manifest request at most eight steps can have listed: four whose images
/// took the four image slots, and four waiting, slot in hand, for an image slot that only a
/// finished image (its manifest read first) frees. How many of those eight list before the
/// first manifest request is a race of the paced requests (four on a quiet machine, six
/// seen under load); with every step started at once all twelve listings queue first.
#[test]
fn steps_in_flight_are_bounded_for_the_run() {
    use common::registry::count_lines;
    let (src, dst) = (Registry::start(), Registry::start());
    let mut steps = Vec::new();
    for r in 0..12 {
        let repo = format!("s{r:02}");
        push(&src, &repo, "v0", &oci_image(9640 + r));
        steps.push(repo_step(&src.r(&repo), &dst.r(&repo), &[], &[]));
    }
    let cfg = paced(&config(&[&src, &dst], 1, &steps), &src.host(), 20);
    let mark = src.mark();
    let out = regsync(&["once"], &cfg);
    out.assert_ok();
    let seen = src.access_since(mark);
    let first_manifest = seen
        .iter()
        .position(|l| l.path.contains("/manifests/"))
        .expect("no manifest request at the source");
    let listings_first = count_lines(&seen[..first_manifest], "GET", "/tags/list");
    assert!(
        listings_first <= 8,
        "{listings_first} tag listings before the first manifest request: {seen:?}"
    );
    assert_eq!(count_lines(&seen, "GET", "/tags/list"), 12, "{seen:?}");
    for r in 0..12 {
        assert_eq!(tags(&dst, &format!("s{r:02}")), vec!["v0".to_string()]);
    }
}

/// A step run still waiting for a step slot when the run is cancelled never starts: it is
/// not reported (nor recorded) as a run that succeeded. Eight steps, four slots
/// (`parallel: 1`), a slow source; the first step's source does not exist and
/// `--abort-on-error` stops the run at once: the report holds only the steps that started.
#[test]
fn a_step_still_waiting_for_a_slot_when_the_run_stops_never_starts() {
    let (src, dst) = (Registry::start(), Registry::start());
    let mut steps = vec![repo_step(&src.r("missing"), &dst.r("missing"), &[], &[])];
    for r in 1..8 {
        let repo = format!("w{r:02}");
        push(&src, &repo, "v0", &oci_image(9660 + r));
        push(&src, &repo, "v1", &oci_image(9670 + r));
        steps.push(repo_step(&src.r(&repo), &dst.r(&repo), &[], &[]));
    }
    let cfg = paced(&config(&[&src, &dst], 1, &steps), &src.host(), 5);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.json");
    let out = regsync(
        &[
            "once",
            "--abort-on-error",
            "--report",
            path.to_str().unwrap(),
        ],
        &cfg,
    );
    assert_ne!(out.code(), Some(0), "{}", out.dump());
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let reported = report["steps"].as_array().unwrap().len();
    assert!(
        (1..8).contains(&reported),
        "{reported} of 8 steps reported as run: {}",
        report["steps"]
    );
}
