//! Memory flat as the config grows (performance issue): the images a run has in flight are
//! bounded for the whole run (four per `parallel` copy), not per step, so a config with one
//! step per repository (what `abbench.sh` writes, and many users) does not hold every step's
//! look-ahead at once.

mod common;

use common::server::{http_get, metric, Server};
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
    let slow = format!("  - registry: {}\n    tls: disabled\n", src.host());
    let cfg =
        config(&[&src, &dst], 1, &steps).replacen(&slow, &format!("{slow}    reqPerSec: 20\n"), 1);
    assert!(cfg.contains("reqPerSec: 20"), "{cfg}");
    let mut run = Server::start_cmd("once", &cfg, &["--listen", "127.0.0.1:0"]);
    let addr = run.listen_addr();
    let (mut most, mut samples) = (0.0f64, 0);
    let start = Instant::now();
    while run.running() && start.elapsed() < Duration::from_secs(120) {
        let (code, text) = http_get(&addr, "/metrics");
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
