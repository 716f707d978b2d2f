//! Per-host request throttling, measured at the registry (a fault proxy in front of it), not
//! assumed: `reqPerSec` is the rate the registry sees, `reqConcurrent` the most requests it has
//! open at once (streaming bodies included).

mod common;

use common::faults::{FaultOpts, FaultProxy};
use common::*;
use std::time::Duration;

/// `creds` lines for `host` (after its `tls: disabled`).
fn host_opts(cfg: &str, host: &str, lines: &str) -> String {
    let at = format!("  - registry: {host}\n    tls: disabled\n");
    assert!(cfg.contains(&at), "no creds entry for {host}:\n{cfg}");
    cfg.replace(&at, &format!("{at}{lines}"))
}

#[test]
fn req_per_sec_is_the_rate_the_registry_sees() {
    let (src, dst) = (Registry::start(), Registry::start());
    for i in 0..8 {
        push(&src, "app", &format!("v{i}"), &oci_image(3100 + i));
    }
    let proxy = FaultProxy::start(&src, FaultOpts::default());
    let cfg = config(
        &[&proxy, &dst],
        4,
        &[repo_step(&proxy.r("app"), &dst.r("app"), &[], &[])],
    );
    let cfg = host_opts(&cfg, &proxy.host(), "    reqPerSec: 20\n");
    let out = regsync(&["once"], &cfg);
    out.assert_ok();
    assert_same_repo(&src, "app", &dst, "app");

    let arrivals = proxy.arrivals();
    let n = arrivals.len();
    assert!(n >= 30, "too few requests to measure a rate: {n}");
    // Exactly paced requests (one per 50 ms) put at most 21 arrivals in a closed 1 s window;
    // one more for loopback jitter.
    let per_second = proxy.max_in_window(Duration::from_secs(1));
    assert!(
        per_second <= 22,
        "{per_second} requests within one second (reqPerSec: 20); {:?}",
        proxy.stats().by_kind
    );
    let span = arrivals[n - 1].0 - arrivals[0].0;
    let rate = (n - 1) as f64 / span.as_secs_f64();
    assert!(rate <= 20.5, "average {rate:.1} req/s over {n} requests");
    eprintln!("reqPerSec 20: {n} requests in {span:?}, {rate:.1}/s, max {per_second} in 1 s");
}

#[test]
fn req_concurrent_caps_the_requests_open_at_the_registry() {
    let (src, dst) = (Registry::start(), Registry::start());
    for i in 0..6 {
        let img = ImageSpec::new(3200 + i, Format::Oci)
            .layers(2, 192 * 1024)
            .build();
        push(&src, "app", &format!("v{i}"), &img);
    }
    // Slow answers make requests pile up: without the cap, parallel 4 would open more.
    let slow = FaultOpts {
        slow_rate: 0.5,
        slow: Duration::from_millis(40),
        ..Default::default()
    };
    let sp = FaultProxy::start(&src, slow.clone());
    let dp = FaultProxy::start(&dst, slow);
    let cfg = config(
        &[&sp, &dp],
        4,
        &[repo_step(&sp.r("app"), &dp.r("app"), &[], &[])],
    );
    let cfg = host_opts(&cfg, &sp.host(), "    reqConcurrent: 2\n");
    let cfg = host_opts(&cfg, &dp.host(), "    reqConcurrent: 2\n");
    let out = regsync(&["once"], &cfg);
    out.assert_ok();
    assert_same_repo(&src, "app", &dst, "app");
    for (side, p) in [("source", &sp), ("target", &dp)] {
        let st = p.stats();
        assert!(
            st.max_open <= 2,
            "{side}: {} requests open at once with reqConcurrent: 2; {:?}",
            st.max_open,
            st.by_kind
        );
        // The limit was reached, so the test measured something.
        assert_eq!(st.max_open, 2, "{side}: {st:?}");
        assert_eq!(st.open, 0, "{side}: requests still open: {st:?}");
    }
}
