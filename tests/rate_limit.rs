//! Docker Hub rate limits (spec §5.6, §7.3) against a real registry behind the fault proxy:
//! `ratelimit.min` keeps a reserve without ever provoking a 429 and the sync resumes once the
//! window resets; a 429 with `Retry-After` pauses that registry for every request.
//!
//! The config never lets `ratelimit.retry` go below 5m (spec §3.6); these runs cap the sleep
//! with the test-only `REGSYNC_TEST_MIN_RATELIMIT_RETRY`, and the proxy's window is reset by the
//! test when it has seen what it needs.

mod common;

use common::faults::{FaultOpts, FaultProxy};
use common::*;
use std::time::{Duration, Instant};

const RETRY_ENV: &str = "REGSYNC_TEST_MIN_RATELIMIT_RETRY";

fn seed(src: &Registry, repo: &str, base: u64, n: u64) {
    for i in 0..n {
        push(src, repo, &format!("v{i}"), &oci_image(base + i));
    }
}

fn limited_step(source: &str, target: &str, min: u32) -> String {
    format!(
        "{}ratelimit:\n  min: {min}\n  retry: 5m\n",
        repo_step(source, target, &[], &[])
    )
}

/// Poll `cond` every 20 ms for up to `limit`.
fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

#[test]
fn min_keeps_a_reserve_and_the_sync_resumes_after_the_window() {
    const LIMIT: u64 = 5;
    const MIN: u64 = 2;
    const IMAGES: u64 = 7;
    let (src, dst) = (Registry::start(), Registry::start());
    seed(&src, "lib", 4100, IMAGES);
    let proxy = FaultProxy::start(
        &src,
        FaultOpts {
            ratelimit: LIMIT,
            ratelimit_window: Duration::from_secs(600),
            ..Default::default()
        },
    );
    let cfg = config(
        &[&proxy, &dst],
        1,
        &[limited_step(&proxy.r("lib"), &dst.r("lib"), MIN as u32)],
    );
    let run = std::thread::spawn(move || regsync_env(&["once"], &cfg, &[(RETRY_ENV, "250ms")]));

    // Spec §5.6 delays while remaining < min: an image is pulled at remaining == min, so one
    // image's GET more than LIMIT - MIN fits before the reserve is reached (each image here is
    // one manifest GET). Then only HEADs come (they do not count), 250 ms apart.
    let budget = LIMIT - MIN + 1;
    let heads_when_stuck = IMAGES + budget + 4;
    let stuck = wait_for(Duration::from_secs(10), || {
        proxy.count("manifest_head") >= heads_when_stuck
    });
    let st = proxy.stats();
    assert!(stuck, "the sync never waited for the rate limit: {st:?}");
    assert_eq!(st.ratelimited, 0, "a 429 was provoked: {st:?}");
    assert_eq!(st.kind("manifest_get"), budget, "{st:?}");
    assert_eq!(proxy.window_gets(), vec![budget]);

    // The window resets: the waiting images go ahead.
    proxy.reset_window();
    let out = run.join().unwrap();
    out.assert_ok();
    assert_same_repo(&src, "lib", &dst, "lib");
    let st = proxy.stats();
    assert_eq!(st.ratelimited, 0, "a 429 was provoked: {st:?}");
    assert_eq!(proxy.window_gets(), vec![budget, IMAGES - budget]);
    assert_summary(&out, &[("images_copied", IMAGES), ("images_failed", 0)]);

    let delays = out.logs("Delaying for rate limit");
    assert!(delays.len() >= 3, "{}", out.dump());
    for d in delays {
        assert_eq!(d["level"], "INFO", "{d}");
        assert!(
            d["source"]
                .as_str()
                .is_some_and(|s| s.starts_with(&proxy.r("lib:"))),
            "{d}"
        );
        assert_eq!(d["source-remain"], MIN - 1, "{d}");
        assert_eq!(d["source-limit"], LIMIT, "{d}");
        assert_eq!(d["step-min"], MIN, "{d}");
        assert_eq!(d["sleep"], "250ms", "{d}");
    }
}

#[test]
fn a_limit_that_stops_being_reported_does_not_delay_forever() {
    // regsync quirk 26 (spec §16) is not replicated: a refreshing HEAD without
    // RateLimit-Remaining lets the pull go ahead.
    let (src, dst) = (Registry::start(), Registry::start());
    seed(&src, "lib", 4200, 3);
    let proxy = FaultProxy::start(
        &src,
        FaultOpts {
            ratelimit: 2,
            ..Default::default()
        },
    );
    let cfg = config(
        &[&proxy, &dst],
        1,
        &[limited_step(&proxy.r("lib"), &dst.r("lib"), 2)],
    );
    let run = std::thread::spawn(move || regsync_env(&["once"], &cfg, &[(RETRY_ENV, "200ms")]));
    // 3 lookups, then image 1 (HEAD, GET at remaining 2), then image 2 waits (remaining 1).
    let stuck = wait_for(Duration::from_secs(10), || {
        proxy.count("manifest_head") >= 3 + 2 + 2
    });
    assert!(stuck, "{:?}", proxy.stats());
    assert_eq!(proxy.count("manifest_get"), 1);
    // The registry stops reporting (and enforcing) a limit.
    proxy.set(|o| o.ratelimit = 0);
    let out = run.join().unwrap();
    out.assert_ok();
    assert_same_repo(&src, "lib", &dst, "lib");
    assert_eq!(proxy.stats().ratelimited, 0);
}

#[test]
fn min_without_rate_limit_headers_costs_nothing() {
    // Spec §5.6: active only when the source lookup carried RateLimit-Remaining.
    let (src, dst) = (Registry::start(), Registry::start());
    seed(&src, "lib", 4300, 3);
    let proxy = FaultProxy::start(&src, FaultOpts::default());
    let cfg = config(
        &[&proxy, &dst],
        2,
        &[limited_step(&proxy.r("lib"), &dst.r("lib"), 1000)],
    );
    let out = regsync(&["once"], &cfg);
    out.assert_ok();
    assert_same_repo(&src, "lib", &dst, "lib");
    // One lookup per image, no refreshing HEAD, no delay.
    assert_eq!(proxy.count("manifest_head"), 3, "{:?}", proxy.stats());
    assert!(out.logs("Delaying for rate limit").is_empty());
}

#[test]
fn a_429_pauses_the_registry_for_everyone() {
    let (src, dst) = (Registry::start(), Registry::start());
    seed(&src, "lib", 4400, 6);
    let proxy = FaultProxy::start(
        &src,
        FaultOpts {
            ratelimit: 3,
            ratelimit_window: Duration::from_secs(2),
            retry_after: true,
            // Slow blob downloads keep other images busy when the first 429 comes: without a
            // host-wide pause, their requests would reach the registry during it.
            slow_rate: 1.0,
            slow: Duration::from_millis(300),
            fault_kinds: vec!["blob_get".into()],
            ..Default::default()
        },
    );
    let cfg = config(
        &[&proxy, &dst],
        3,
        &[repo_step(&proxy.r("lib"), &dst.r("lib"), &[], &[])],
    );
    let out = regsync(&["once"], &cfg);
    out.assert_ok();
    assert_same_repo(&src, "lib", &dst, "lib");

    let rejections = proxy.rejections();
    assert!(!rejections.is_empty(), "no 429: {:?}", proxy.stats());
    let (t0, ra) = rejections[0];
    let ra = Duration::from_secs(ra.expect("Retry-After"));
    // Requests already granted when the 429 arrived may land just after it; after that, nobody
    // may talk to the registry until Retry-After has passed.
    let quiet_from = t0 + Duration::from_millis(300);
    let quiet_to = t0 + ra - Duration::from_millis(100);
    let during: Vec<_> = proxy
        .arrivals()
        .into_iter()
        .filter(|(t, _)| *t > quiet_from && *t < quiet_to)
        .collect();
    assert!(
        during.is_empty(),
        "requests during the {ra:?} pause that began at {t0:?}: {during:?}"
    );
    assert!(
        out.logs("Registry asked to back off, pausing requests")
            .iter()
            .any(|l| l["status"] == 429),
        "{}",
        out.dump()
    );
}
