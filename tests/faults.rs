//! Flaky registries: random 5xx, connections dropped before the response and half-way through
//! a body, slow answers. `once` must still finish and leave the target identical to the source
//! (every tag digest, every child manifest and blob with its size).

mod common;

use common::faults::{FaultOpts, FaultProxy};
use common::*;
use std::time::Duration;

fn seed_mixed(src: &Registry, repo: &str, base: u64) {
    for i in 0..4u64 {
        let fmt = if i % 2 == 0 {
            Format::Oci
        } else {
            Format::Docker
        };
        let img = ImageSpec::new(base + i, fmt)
            .layers(3, 64 * 1024 + 4096 * i as usize)
            .build();
        push(src, repo, &format!("v{i}"), &img);
    }
    push(
        src,
        repo,
        "multi",
        &index_image(base + 10, &["linux/amd64", "linux/arm64"]),
    );
    push(
        src,
        repo,
        "list",
        &manifest_list_image(base + 20, &["linux/amd64", "linux/arm/v7"]),
    );
}

fn flaky(seed: u64) -> FaultOpts {
    FaultOpts {
        fail_rate: 0.10,
        fail_status: vec![500, 502, 503, 504],
        drop_rate: 0.05,
        slow_rate: 0.05,
        slow: Duration::from_millis(50),
        seed,
        ..Default::default()
    }
}

/// Copy `app` and `tools` through `sp` (source side) into `dst` (possibly via `dp`) and check
/// that every tag, child manifest and blob arrived.
fn copy_both_repos(src: &Registry, sp: &FaultProxy, dst: &Registry, target_host: &str) -> Output {
    let target = HostCreds::plain(target_host);
    let cfg = config(
        &[sp, &target],
        3,
        &[
            repo_step(&sp.r("app"), &format!("{target_host}/app"), &[], &[]),
            repo_step(&sp.r("tools"), &format!("{target_host}/tools"), &[], &[]),
        ],
    );
    let out = regsync(&["once"], &cfg);
    out.assert_ok();
    for repo in ["app", "tools"] {
        assert_same_repo(src, repo, dst, repo);
    }
    assert_summary(&out, &[("images_failed", 0), ("images_copied", 12)]);
    out
}

#[test]
fn a_flaky_source_still_syncs_everything() {
    // 10% of the requests answered 500/502/503/504, 5% of the connections dropped (GET bodies
    // half of the time half-way through), 5% answered slowly.
    let (src, dst) = (Registry::start(), Registry::start());
    seed_mixed(&src, "app", 5100);
    seed_mixed(&src, "tools", 5200);
    let sp = FaultProxy::start(&src, flaky(11));
    copy_both_repos(&src, &sp, &dst, &dst.host());
    let s = sp.stats();
    eprintln!("source: {s:?}");
    assert!(s.failed > 0, "no error was injected: {s:?}");
    assert!(
        s.dropped + s.truncated > 0,
        "no connection was dropped: {s:?}"
    );
}

#[test]
fn flaky_source_and_target_still_sync_everything() {
    let (src, dst) = (Registry::start(), Registry::start());
    seed_mixed(&src, "app", 5100);
    seed_mixed(&src, "tools", 5200);
    let sp = FaultProxy::start(&src, flaky(11));
    let dp = FaultProxy::start(&dst, flaky(12));
    copy_both_repos(&src, &sp, &dst, &dp.host());
    let (s, d) = (sp.stats(), dp.stats());
    eprintln!("source: {s:?}\ntarget: {d:?}");
    assert!(s.failed + d.failed > 0, "no error was injected");
    assert!(d.dropped > 0, "no target connection was dropped: {d:?}");
}

#[test]
fn blob_downloads_cut_half_way_are_completed() {
    let (src, dst) = (Registry::start(), Registry::start());
    for i in 0..3u64 {
        let img = ImageSpec::new(5300 + i, Format::Oci)
            .layers(2, 512 * 1024)
            .build();
        push(&src, "big", &format!("v{i}"), &img);
    }
    let sp = FaultProxy::start(
        &src,
        FaultOpts {
            truncate_rate: 0.4,
            fault_kinds: vec!["blob_get".into()],
            seed: 13,
            ..Default::default()
        },
    );
    let cfg = config(
        &[&sp, &dst],
        2,
        &[repo_step(&sp.r("big"), &dst.r("big"), &[], &[])],
    );
    let out = regsync(&["once"], &cfg);
    out.assert_ok();
    assert_same_repo(&src, "big", &dst, "big");
    let st = sp.stats();
    assert!(st.truncated > 0, "no body was cut: {st:?}");
}
