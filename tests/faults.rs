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

#[test]
fn ten_percent_errors_and_five_percent_drops_still_copy_everything() {
    let (src, dst) = (Registry::start(), Registry::start());
    seed_mixed(&src, "app", 5100);
    seed_mixed(&src, "tools", 5200);
    let flaky = |seed| FaultOpts {
        fail_rate: 0.10,
        fail_status: vec![500, 502, 503, 504],
        drop_rate: 0.05,
        slow_rate: 0.05,
        slow: Duration::from_millis(50),
        seed,
        ..Default::default()
    };
    let sp = FaultProxy::start(&src, flaky(11));
    let dp = FaultProxy::start(&dst, flaky(12));
    let cfg = config(
        &[&sp, &dp],
        3,
        &[
            repo_step(&sp.r("app"), &dp.r("app"), &[], &[]),
            repo_step(&sp.r("tools"), &dp.r("tools"), &[], &[]),
        ],
    );
    let out = regsync(&["once"], &cfg);
    out.assert_ok();
    for repo in ["app", "tools"] {
        assert_same_repo(&src, repo, &dst, repo);
    }
    let (s, d) = (sp.stats(), dp.stats());
    eprintln!("source: {s:?}\ntarget: {d:?}");
    assert!(s.failed + d.failed > 0, "no error was injected");
    assert!(
        s.dropped + s.truncated + d.dropped + d.truncated > 0,
        "no connection was dropped"
    );
    assert_summary(&out, &[("images_failed", 0), ("images_copied", 12)]);
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
