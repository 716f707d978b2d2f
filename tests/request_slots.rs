//! Per-host request slots (`reqConcurrent`) never deadlock the copy: regressions for hangs
//! found in review — a paged listing holding the only slot while unread, and copies in both
//! directions taking source and target slots in opposite orders.

mod common;

use common::*;

/// `creds` with `reqConcurrent` for every endpoint.
fn with_slots(cfg: &str, slots: u32) -> String {
    cfg.replace(
        "    tls: disabled\n",
        &format!("    tls: disabled\n    reqConcurrent: {slots}\n"),
    )
}

fn seed(reg: &Registry, repo: &str, base_seed: u64, tags: usize) {
    for i in 0..tags {
        push(
            reg,
            repo,
            &format!("v{i}"),
            &oci_image(base_seed + i as u64),
        );
    }
}

#[test]
fn registry_step_with_one_request_slot_finishes() {
    let (src, dst) = (Registry::start(), Registry::start());
    for r in 0..6 {
        seed(&src, &format!("repo{r}"), 900 + 10 * r, 2);
    }
    let cfg = with_slots(
        &config(
            &[&src, &dst],
            4,
            &[registry_step(
                &src.host(),
                &format!("{}/mirror", dst.host()),
                &[],
                &[],
            )],
        ),
        1,
    );
    let out = regsync(&["once"], &cfg);
    out.assert_ok();
    for r in 0..6 {
        assert_same_repo(&src, &format!("repo{r}"), &dst, &format!("mirror/repo{r}"));
    }
}

#[test]
fn copies_in_both_directions_at_once_finish() {
    let (a, b) = (Registry::start(), Registry::start());
    seed(&a, "from-a", 1000, 6);
    seed(&b, "from-b", 2000, 6);
    for slots in [1, 3] {
        let cfg = with_slots(
            &config(
                &[&a, &b],
                8,
                &[
                    repo_step(&a.r("from-a"), &b.r(&format!("from-a-{slots}")), &[], &[]),
                    repo_step(&b.r("from-b"), &a.r(&format!("from-b-{slots}")), &[], &[]),
                ],
            ),
            slots,
        );
        let out = regsync(&["once"], &cfg);
        out.assert_ok();
        assert_same_repo(&a, "from-a", &b, &format!("from-a-{slots}"));
        assert_same_repo(&b, "from-b", &a, &format!("from-b-{slots}"));
    }
}

/// A source whose mirror is the copy's own target: a blob GET may be served by the target's
/// host (the mirror answers 404, then the upstream), so the stream must take its slots as a
/// stream from the target into itself (one such stream at a time) — not as a stream between
/// two hosts, where every upload could hold one of the target's slots while its lazy GET
/// waits for another (a stall until the 120 s idle timeout).
#[test]
fn a_mirror_that_is_the_target_does_not_stall_the_streams() {
    let (a, b) = (Registry::start(), Registry::start());
    // The source's name sorts after the target's: judged by the upstream alone, the stream
    // would start its upload first and its GET lazily inside it.
    let (src, dst) = if a.host() > b.host() { (a, b) } else { (b, a) };
    for i in 0..6 {
        push(
            &src,
            "app",
            &format!("v{i}"),
            &ImageSpec::new(3300 + i, Format::Oci)
                .layers(3, 64 * 1024)
                .build(),
        );
    }
    let cfg = config(
        &[&src, &dst],
        4,
        &[repo_step(&src.r("app"), &dst.r("app"), &[], &[])],
    )
    .replacen(
        &format!("  - registry: {}\n    tls: disabled\n", src.host()),
        &format!(
            "  - registry: {}\n    tls: disabled\n    mirrors: [\"{}\"]\n",
            src.host(),
            dst.host()
        ),
        1,
    )
    .replacen(
        &format!("  - registry: {}\n    tls: disabled\n", dst.host()),
        &format!(
            "  - registry: {}\n    tls: disabled\n    reqConcurrent: 2\n",
            dst.host()
        ),
        1,
    );
    assert!(
        cfg.contains("mirrors:") && cfg.contains("reqConcurrent: 2"),
        "{cfg}"
    );
    let started = std::time::Instant::now();
    let out = regsync(&["once"], &cfg);
    let took = started.elapsed();
    out.assert_ok();
    assert_same_repo(&src, "app", &dst, "app");
    // Far below the 120 s a stalled stream waits before it fails and starts over.
    assert!(took < std::time::Duration::from_secs(60), "took {took:?}");
}

/// A copy from a registry into itself whose mounts are refused streams every blob from the
/// host into itself: the `GET` and the upload each need one of that host's slots at once.
/// With `reqConcurrent: 1` the stream waited for a second slot its own upload held, until
/// the upload's 120 s idle timeout failed it (and again on each of its restarts). The
/// stream's turn lends the host the slot its second request needs, so it finishes.
#[test]
fn a_copy_into_the_same_registry_with_one_slot_and_mounts_refused_finishes() {
    use common::rewrite::{Reply, RewriteOpts, RewriteProxy};
    use std::sync::Arc;
    let reg = Registry::start();
    seed(&reg, "origin/app", 3400, 2);
    let front = RewriteProxy::start(
        &reg.url(),
        RewriteOpts {
            before: Some(Arc::new(|seen| {
                (seen.method == "POST" && seen.path.contains("mount=")).then(|| {
                    Reply::new(
                        403,
                        "application/json",
                        r#"{"errors":[{"code":"DENIED","message":"mounts refused here"}]}"#,
                    )
                })
            })),
            ..Default::default()
        },
    );
    let host = front.host();
    let cfg = format!(
        "version: 1\ncreds:\n  - registry: {host}\n    tls: disabled\n    reqConcurrent: 1\ndefaults:\n  parallel: 2\nsync:\n  - source: {host}/origin/app\n    target: {host}/copy/app\n    type: repository\n"
    );
    let mut run = common::server::Server::start_cmd("once", &cfg, &[]);
    // Far below the 120 s a stalled stream waits before it fails.
    let (status, took) = run.wait_exit(std::time::Duration::from_secs(60));
    assert!(status.success(), "{}", run.stderr());
    assert!(
        front.seen().iter().any(|s| s.path.contains("mount=")),
        "no mount was tried"
    );
    assert_same_repo(&reg, "origin/app", &reg, "copy/app");
    eprintln!("copied in {took:?}");
}
