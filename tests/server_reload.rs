//! SIGHUP in `server` (operations issue): the config file is read again; a broken file keeps
//! the running config with one error line naming the problem; changed, added and removed
//! steps take effect from their next run; an unchanged step keeps its schedule and history,
//! also when it moved: steps are known by what they copy, not by their position.

mod common;

use common::server::{self, http_get, Server};
use common::*;
use serde_json::Value;
use std::time::Duration;

fn status(addr: &str) -> Value {
    let (code, body) = http_get(addr, "/status");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn step_sources(st: &Value) -> Vec<String> {
    st["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["source"].as_str().unwrap().to_string())
        .collect()
}

/// Every sample of the per-step counters in a `/metrics` text: `name{labels}` → value.
fn step_counters(metrics: &str) -> std::collections::BTreeMap<String, f64> {
    const COUNTERS: [&str; 4] = [
        "regsync_step_runs_total{",
        "regsync_images_total{",
        "regsync_tags_pruned_total{",
        "regsync_step_run_duration_seconds_count{",
    ];
    metrics
        .lines()
        .filter(|l| COUNTERS.iter().any(|c| l.starts_with(c)))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// Step summaries of `step` logged after log line number `after`.
fn summaries_of(server: &Server, step: &str, after: usize) -> usize {
    server
        .logs()
        .iter()
        .skip(after)
        .filter(|v| v["msg"] == "Step summary" && v["step"] == step)
        .count()
}

#[test]
fn sighup_applies_changed_added_and_removed_steps_and_keeps_the_config_when_the_file_is_broken() {
    let (src, dst) = (Registry::start(), Registry::start());
    for (i, repo) in ["alpha", "beta", "gamma", "delta"].iter().enumerate() {
        push(&src, repo, "v1", &oci_image(9500 + i as u64));
    }
    let step = |repo: &str| {
        image_step(&src.r(&format!("{repo}:v1")), &dst.r(&format!("{repo}:v1"))) + "interval: 1s\n"
    };
    let first = config(&[&src, &dst], 2, &[step("alpha"), step("beta")]);
    let mut server = Server::start(&first, &["--listen", "127.0.0.1:0"]);
    let addr = server.listen_addr();
    server.wait_logs("Step summary", 2, Duration::from_secs(30));
    // A few firings of step 0 first: its run count must survive the reloads.
    server.wait_until("three runs of step 0", Duration::from_secs(30), |_| {
        status(&addr)["steps"][0]["runs"].as_u64().unwrap_or(0) >= 3
    });
    let runs_of_0 = status(&addr)["steps"][0]["runs"].as_u64().unwrap();

    // A broken file: one error line naming it, the server keeps running the old steps.
    let path = server.config_path();
    std::fs::write(&path, "version: 1\nsync:\n  - source: [unclosed\n").unwrap();
    server.signal(libc::SIGHUP);
    let failed = server.wait_log(
        "Config reload failed, keeping the running config",
        Duration::from_secs(10),
        |_| true,
    );
    assert_eq!(failed["level"], "ERROR", "{failed}");
    let err = failed["err"].as_str().unwrap_or_else(|| panic!("{failed}"));
    assert!(err.contains("regsync.yml") && !err.contains('\n'), "{err}");
    assert!(server.running(), "{}", server.stderr());
    assert_eq!(
        step_sources(&status(&addr)),
        [src.r("alpha:v1"), src.r("beta:v1")]
    );

    // Step 0 unchanged; step 1 copies gamma instead of beta: another source and target, so
    // another step (beta removed, gamma added); step 2 added (delta). `parallel` changes too:
    // read once at start-up, it is named in a warning.
    let second = config(
        &[&src, &dst],
        3,
        &[step("alpha"), step("gamma"), step("delta")],
    );
    std::fs::write(&path, &second).unwrap();
    let mark = server.logs().len();
    server.signal(libc::SIGHUP);
    let done = server.wait_log("Config reloaded", Duration::from_secs(10), |_| true);
    // The unchanged step kept its history (a reset count would start again from 0).
    assert!(
        status(&addr)["steps"][0]["runs"].as_u64().unwrap() >= runs_of_0,
        "step 0 lost its run count"
    );
    assert_eq!(
        (
            &done["unchanged"],
            &done["changed"],
            &done["added"],
            &done["removed"]
        ),
        (
            &Value::from(1),
            &Value::from(0),
            &Value::from(2),
            &Value::from(1)
        ),
        "{done}"
    );
    let warned = server.wait_log(
        "Config reload: these settings apply after a restart",
        Duration::from_secs(5),
        |_| true,
    );
    assert_eq!(warned["settings"], "defaults.parallel", "{warned}");
    server.wait_until("gamma and delta copied", Duration::from_secs(30), |_| {
        tags(&dst, "gamma").contains(&"v1".to_string())
            && tags(&dst, "delta").contains(&"v1".to_string())
    });
    let st = status(&addr);
    assert_eq!(
        step_sources(&st),
        [src.r("alpha:v1"), src.r("gamma:v1"), src.r("delta:v1")]
    );

    // Only step 0 is left: steps 1 and 2 leave /status and fire no more.
    std::fs::write(&path, config(&[&src, &dst], 2, &[step("alpha")])).unwrap();
    server.signal(libc::SIGHUP);
    let done = server.wait_log("Config reloaded", Duration::from_secs(10), |v| {
        v["removed"] == 2
    });
    assert_eq!(done["unchanged"], 1, "{done}");
    assert_eq!(step_sources(&status(&addr)), [src.r("alpha:v1")]);
    // A run of a removed step already under way may still end (and log) just after the
    // reload; count from a moment later.
    std::thread::sleep(Duration::from_secs(2));
    let after = server.logs().len();
    let zero_before = summaries_of(&server, "sync[0]", after);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        summaries_of(&server, "sync[1]", after),
        0,
        "{}",
        server.stderr()
    );
    assert_eq!(
        summaries_of(&server, "sync[2]", after),
        0,
        "{}",
        server.stderr()
    );
    assert!(
        summaries_of(&server, "sync[0]", after) > zero_before,
        "step 0 stopped firing"
    );
    assert!(summaries_of(&server, "sync[1]", mark) > 0);

    server.signal(libc::SIGTERM);
    let (st, _) = server.wait_exit(Duration::from_secs(15));
    assert_eq!(st.code(), Some(0), "{}", server.stderr());
}

/// A reload knows steps by what they copy (type, source and target), as the state database
/// does, not by their position: a step inserted at the top of `sync:` leaves every other step
/// its own `/status` history and fire loop at its new position, and starts with none itself.
/// A step whose definition changed under the same type, source and target counts as changed
/// and keeps its history; one no longer in the file is removed.
#[test]
fn a_step_inserted_at_the_top_leaves_every_step_its_own_history() {
    let (src, dst) = (Registry::start(), Registry::start());
    push(&src, "alpha", "v1", &oci_image(9540));
    push(&src, "gamma", "v1", &oci_image(9541));
    let step = |repo: &str, interval: &str| {
        image_step(&src.r(&format!("{repo}:v1")), &dst.r(&format!("{repo}:v1")))
            + &format!("interval: {interval}\n")
    };
    // alpha copies and then fires every second; beta's source image does not exist, its one
    // run (the initial pass) failed.
    let (alpha, beta) = (step("alpha", "1s"), step("beta", "1h"));
    let eps: [&dyn Endpoint; 2] = [&src, &dst];
    let mut server = Server::start(
        &config(&eps, 2, &[alpha.clone(), beta.clone()]),
        &["--listen", "127.0.0.1:0"],
    );
    let addr = server.listen_addr();
    server.wait_until(
        "beta failed and alpha ran twice",
        Duration::from_secs(30),
        |_| {
            let st = status(&addr);
            st["steps"][1]["last_result"] == "failed" && st["steps"][0]["runs"].as_u64() >= Some(2)
        },
    );
    let before = status(&addr)["steps"].clone();
    let counters_before = step_counters(&http_get(&addr, "/metrics").1);
    assert!(
        before[1]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("beta")),
        "{before}"
    );

    std::fs::write(
        server.config_path(),
        config(&eps, 2, &[step("gamma", "1h"), alpha.clone(), beta.clone()]),
    )
    .unwrap();
    server.signal(libc::SIGHUP);
    let done = server.wait_log("Config reloaded", Duration::from_secs(10), |_| true);
    let st = status(&addr);
    assert_eq!(
        step_sources(&st),
        [src.r("gamma:v1"), src.r("alpha:v1"), src.r("beta:v1")]
    );
    let steps = &st["steps"];
    // gamma: nothing yet (it first runs at its next firing, in an hour)
    assert_eq!(steps[0]["step"], 0, "{st}");
    assert_eq!(steps[0]["runs"], 0, "{st}");
    assert!(steps[0]["last_result"].is_null(), "{st}");
    assert!(steps[0]["last_end"].is_null(), "{st}");
    assert!(steps[0]["last_success"].is_null(), "{st}");
    assert_eq!(steps[0]["counts"]["images_copied"], 0, "{st}");
    // alpha: its runs, its copy and its successes, under its new position
    assert_eq!(steps[1]["name"], "sync[1]", "{st}");
    assert!(
        steps[1]["runs"].as_u64() >= before[0]["runs"].as_u64(),
        "{st}"
    );
    assert_eq!(steps[1]["failed_runs"], 0, "{st}");
    assert_eq!(steps[1]["last_result"], "ok", "{st}");
    assert_eq!(steps[1]["counts"]["images_copied"], 1, "{st}");
    // beta: its one failed run and its error
    assert_eq!(steps[2]["name"], "sync[2]", "{st}");
    assert_eq!(steps[2]["runs"], 1, "{st}");
    assert_eq!(steps[2]["failed_runs"], 1, "{st}");
    assert_eq!(steps[2]["last_result"], "failed", "{st}");
    // (its error line names its new position)
    assert_eq!(
        steps[2]["last_error"].as_str(),
        before[1]["last_error"]
            .as_str()
            .map(|e| e.replacen("sync[1] ", "sync[2] ", 1))
            .as_deref(),
        "{st}"
    );
    assert!(steps[2]["last_success"].is_null(), "{st}");
    let (_, metrics) = http_get(&addr, "/metrics");
    let runs = |step: &str, repo: &str, result: &str| {
        let labels = format!(
            "step=\"{step}\",type=\"image\",source=\"{}\",target=\"{}\",result=\"{result}\"",
            src.r(&format!("{repo}:v1")),
            dst.r(&format!("{repo}:v1"))
        );
        server::metric(&metrics, "regsync_step_runs_total", &labels)
    };
    assert_eq!(runs("2", "beta", "failed"), Some(1.0), "{metrics}");
    assert_eq!(runs("0", "gamma", "failed"), Some(0.0), "{metrics}");
    // Counters never go down within a series: a moved step's counts leave the series of its
    // old position (which another step may take) for a series of its own at the new one.
    let counters_after = step_counters(&metrics);
    assert!(counters_after.len() > 4, "{metrics}");
    for (series, was) in &counters_before {
        if let Some(now) = counters_after.get(series) {
            assert!(
                now >= was,
                "{series} went from {was} to {now} across the reload"
            );
        }
    }
    let alpha_copied = format!(
        "regsync_images_total{{step=\"1\",type=\"image\",source=\"{}\",target=\"{}\",result=\"copied\"}}",
        src.r("alpha:v1"),
        dst.r("alpha:v1")
    );
    assert_eq!(counters_after.get(&alpha_copied), Some(&1.0), "{metrics}");
    let counts = |v: &Value| {
        ["unchanged", "changed", "added", "removed", "moved"].map(|k| v[k].as_u64().unwrap_or(99))
    };
    assert_eq!(counts(&done), [2, 0, 1, 0, 2], "{done}");
    // alpha's fire loop goes on, its runs named and counted at its new position
    let runs_after = steps[1]["runs"].as_u64().unwrap();
    server.wait_log("Step summary", Duration::from_secs(10), |v| {
        v["step"] == "sync[1]" && v["source"] == src.r("alpha:v1")
    });
    server.wait_until("alpha counted at sync[1]", Duration::from_secs(10), |_| {
        let st = status(&addr);
        st["steps"][1]["runs"].as_u64() > Some(runs_after) && st["steps"][0]["runs"] == 0
    });

    // gamma goes; beta changes under the same type, source and target (another interval)
    // and keeps its history; both move up.
    std::fs::write(
        server.config_path(),
        config(&eps, 2, &[alpha, step("beta", "2h")]),
    )
    .unwrap();
    let mark = server.logs().len();
    server.signal(libc::SIGHUP);
    let done = server.wait_log("Config reloaded", Duration::from_secs(10), |v| {
        v["removed"] == 1
    });
    assert_eq!(counts(&done), [1, 1, 0, 1, 2], "{done}");
    let st = status(&addr);
    assert_eq!(step_sources(&st), [src.r("alpha:v1"), src.r("beta:v1")]);
    let steps = &st["steps"];
    assert_eq!(steps[0]["last_result"], "ok", "{st}");
    assert!(steps[0]["runs"].as_u64() > Some(runs_after), "{st}");
    assert_eq!(steps[1]["schedule"], "@every 2h0m0s", "{st}");
    assert_eq!(steps[1]["failed_runs"], 1, "{st}");
    assert_eq!(steps[1]["last_result"], "failed", "{st}");
    server.wait_until("alpha named sync[0] again", Duration::from_secs(10), |s| {
        s.logs().iter().skip(mark).any(|v| {
            v["msg"] == "Step summary" && v["step"] == "sync[0]" && v["source"] == src.r("alpha:v1")
        })
    });
    server.signal(libc::SIGTERM);
    let (st, _) = server.wait_exit(Duration::from_secs(15));
    // beta's failure went with its old definition: nothing in force failed
    assert_eq!(st.code(), Some(0), "{}", server.stderr());
}

/// A step removed by a reload while one of its runs is in progress: that run's errors do not
/// come back when it ends, and a server whose remaining steps are fine exits 0.
#[test]
fn a_removed_step_running_at_the_reload_does_not_decide_the_exit_status() {
    use common::rewrite::{RewriteOpts, RewriteProxy};
    use std::sync::Arc;
    let (src, dst) = (Registry::start(), Registry::start());
    push(&src, "good", "v1", &oci_image(9520));
    // Every lookup of the missing image takes 3 s before its 404: a run of the bad step is
    // still under way when the reload removes it.
    let front = RewriteProxy::start(
        &src.url(),
        RewriteOpts {
            before: Some(Arc::new(|seen| {
                if seen.path.starts_with("/v2/missing/") {
                    std::thread::sleep(Duration::from_secs(3));
                }
                None
            })),
            ..Default::default()
        },
    );
    let good = image_step(&src.r("good:v1"), &dst.r("good:v1")) + "interval: 1h\n";
    let bad = image_step(&front.r("missing:v1"), &dst.r("missing:v1")) + "interval: 1h\n";
    let mut server = Server::start(&config(&[&src, &front, &dst], 2, &[good.clone(), bad]), &[]);
    server.wait_log("Step summary", Duration::from_secs(30), |v| {
        v["step"] == "sync[0]"
    });
    assert!(server
        .logs_of("Step summary")
        .iter()
        .all(|v| v["step"] != "sync[1]"));
    std::fs::write(
        server.config_path(),
        config(&[&src, &front, &dst], 2, &[good]),
    )
    .unwrap();
    server.signal(libc::SIGHUP);
    server.wait_log("Config reloaded", Duration::from_secs(10), |v| {
        v["removed"] == 1
    });
    // The removed step's run ends after the reload, with its error.
    server.wait_log("Step summary", Duration::from_secs(30), |v| {
        v["step"] == "sync[1]"
    });
    server.signal(libc::SIGTERM);
    let (st, _) = server.wait_exit(Duration::from_secs(15));
    assert_eq!(st.code(), Some(0), "{}", server.stderr());
}

/// A reload asking for `cleanupTags` from a server started without `--state` is refused like
/// a broken file (it would silently prune nothing): one error line, the running config stays.
#[test]
fn a_reload_asking_for_cleanup_tags_without_a_state_database_is_refused() {
    let (src, dst) = (Registry::start(), Registry::start());
    push(&src, "app", "v1", &oci_image(9530));
    let step = repo_step(&src.r("app"), &dst.r("app"), &[], &[]) + "interval: 1h\n";
    let mut server = Server::start(&config(&[&src, &dst], 2, std::slice::from_ref(&step)), &[]);
    server.wait_log("Step summary", Duration::from_secs(30), |_| true);
    let pruning = config(&[&src, &dst], 2, &[step + "cleanupTags: true\n"]);
    std::fs::write(server.config_path(), pruning).unwrap();
    server.signal(libc::SIGHUP);
    let failed = server.wait_log(
        "Config reload failed, keeping the running config",
        Duration::from_secs(10),
        |_| true,
    );
    let err = failed["err"].as_str().unwrap_or_default();
    assert!(
        err.contains("cleanupTags") && err.contains("--state"),
        "{failed}"
    );
    assert!(server.logs_of("Config reloaded").is_empty());
    server.signal(libc::SIGTERM);
    let (st, _) = server.wait_exit(Duration::from_secs(15));
    assert_eq!(st.code(), Some(0), "{}", server.stderr());
}

/// A step removed by a reload during `server`'s initial pass, before its turn came, never
/// runs with the definition that was removed: with `parallel: 0` the initial pass runs the
/// steps one after the other, and beta's turn comes after the reload took it away.
#[test]
fn a_step_removed_during_the_initial_pass_before_its_turn_never_runs() {
    let (src, dst) = (Registry::start(), Registry::start());
    for t in 0..6 {
        push(&src, "alpha", &format!("v{t}"), &oci_image(9560 + t));
    }
    push(&src, "beta", "v1", &oci_image(9570));
    let alpha = repo_step(&src.r("alpha"), &dst.r("alpha"), &[], &[]) + "interval: 1h\n";
    let beta = image_step(&src.r("beta:v1"), &dst.r("beta:v1")) + "interval: 1h\n";
    let eps: [&dyn Endpoint; 2] = [&src, &dst];
    // A slow source: alpha's initial run takes seconds.
    let with_slow = |c: String| paced(&c, &src.host(), 3);
    let cfg = with_slow(config(&eps, 0, &[alpha.clone(), beta]));
    assert!(cfg.contains("parallel: 0"), "{cfg}");
    let mut server = Server::start(&cfg, &["--listen", "127.0.0.1:0"]);
    let addr = server.listen_addr();
    server.wait_until("alpha's initial run", Duration::from_secs(30), |_| {
        status(&addr)["steps"][0]["running_since"].is_string()
    });
    std::fs::write(server.config_path(), with_slow(config(&eps, 0, &[alpha]))).unwrap();
    server.signal(libc::SIGHUP);
    let done = server.wait_log("Config reloaded", Duration::from_secs(10), |_| true);
    assert_eq!(done["removed"], 1, "{done}");
    server.wait_until("the initial pass ends", Duration::from_secs(60), |_| {
        http_get(&addr, "/readyz").0 == 200
    });
    assert_eq!(
        summaries_of(&server, "sync[0]", 0),
        1,
        "{}",
        server.stderr()
    );
    assert_eq!(
        summaries_of(&server, "sync[1]", 0),
        0,
        "the removed step ran after the reload\n{}",
        server.stderr()
    );
    assert!(tags(&dst, "beta").is_empty(), "beta was copied");
    assert_eq!(tags(&dst, "alpha").len(), 6);
    server.signal(libc::SIGTERM);
    let (st, _) = server.wait_exit(Duration::from_secs(15));
    assert_eq!(st.code(), Some(0), "{}", server.stderr());
}

/// A step changed by a reload (same type, source and target, other settings) while one of
/// its runs is in progress does not start a second run of the same target before that one
/// ends: the new definition's firings are skipped meanwhile, as a fire loop skips its own
/// while its previous run goes on. The target already holds every tag, so each scheduled
/// run is a check of 16 tags on a source paced at 2 requests a second (about 8 s); a run
/// starting shows as a listing of the target's tags.
#[test]
fn a_step_changed_while_it_runs_does_not_run_twice_at_once() {
    let (src, dst) = (Registry::start(), Registry::start());
    for t in 0..16 {
        let img = oci_image(9580 + t);
        push(&src, "alpha", &format!("v{t}"), &img);
        push(&dst, "alpha", &format!("v{t}"), &img);
    }
    let alpha =
        |deny: &[&str]| repo_step(&src.r("alpha"), &dst.r("alpha"), &[], deny) + "interval: 1s\n";
    let eps: [&dyn Endpoint; 2] = [&src, &dst];
    let with_slow = |c: String| paced(&c, &src.host(), 2);
    // Every run lists the target's tags first (that registry is not paced).
    let target_listings = |since| {
        dst.access_since(since)
            .iter()
            .filter(|l| l.method == "GET" && l.path.contains("/alpha/tags/list"))
            .count()
    };
    let start = dst.mark();
    let mut server = Server::start(
        &with_slow(config(&eps, 2, &[alpha(&[])])),
        &["--listen", "127.0.0.1:0"],
    );
    let addr = server.listen_addr();
    // The initial pass (nothing missing) ends, then a scheduled run begins and has listed.
    server.wait_until(
        "a scheduled run in progress",
        Duration::from_secs(30),
        |_| {
            let st = status(&addr);
            let runs = st["steps"][0]["runs"].as_u64().unwrap_or(0);
            runs >= 1
                && st["steps"][0]["running_since"].is_string()
                && target_listings(start) as u64 > runs
        },
    );
    let ended = summaries_of(&server, "sync[0]", 0);
    let mark = dst.mark();
    std::fs::write(
        server.config_path(),
        with_slow(config(&eps, 2, &[alpha(&["^nomatch$"])])),
    )
    .unwrap();
    server.signal(libc::SIGHUP);
    let done = server.wait_log("Config reloaded", Duration::from_secs(10), |_| true);
    assert_eq!(done["changed"], 1, "{done}");
    // The new definition fires every second; the run in progress needs seconds more.
    std::thread::sleep(Duration::from_secs(3));
    let still_running = summaries_of(&server, "sync[0]", 0) == ended;
    let listings = target_listings(mark);
    assert!(still_running, "the run in progress ended too soon to tell");
    assert_eq!(
        listings, 0,
        "a second run of alpha started while one was in progress"
    );
    server.signal(libc::SIGTERM);
    let (st, _) = server.wait_exit(Duration::from_secs(30));
    assert_eq!(st.code(), Some(0), "{}", server.stderr());
}

/// A failed step moved by a reload: its kept error lines, at exit and on `/status`, name the
/// position it has now, not the one it had when it ran (which another step may hold now).
#[test]
fn a_moved_steps_kept_errors_name_its_new_position() {
    let (src, dst) = (Registry::start(), Registry::start());
    push(&src, "gamma", "v1", &oci_image(9545));
    let step = |repo: &str| {
        image_step(&src.r(&format!("{repo}:v1")), &dst.r(&format!("{repo}:v1"))) + "interval: 1h\n"
    };
    let eps: [&dyn Endpoint; 2] = [&src, &dst];
    // beta's source image does not exist: its initial run fails.
    let mut server = Server::start(
        &config(&eps, 2, &[step("beta")]),
        &["--listen", "127.0.0.1:0"],
    );
    let addr = server.listen_addr();
    server.wait_until("beta failed", Duration::from_secs(30), |_| {
        status(&addr)["steps"][0]["last_result"] == "failed"
    });
    std::fs::write(
        server.config_path(),
        config(&eps, 2, &[step("gamma"), step("beta")]),
    )
    .unwrap();
    server.signal(libc::SIGHUP);
    server.wait_log("Config reloaded", Duration::from_secs(10), |_| true);
    let st = status(&addr);
    let last_error = st["steps"][1]["last_error"].as_str().unwrap_or_default();
    assert!(
        last_error.starts_with("sync[1] ") && last_error.contains("beta"),
        "{st}"
    );
    server.signal(libc::SIGTERM);
    let (code, _) = server.wait_exit(Duration::from_secs(15));
    assert_eq!(code.code(), Some(1), "{}", server.stderr());
    let lines = server.error_lines();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("sync[1] ") && l.contains("beta")),
        "{lines:?}"
    );
    assert!(!lines.iter().any(|l| l.starts_with("sync[0]")), "{lines:?}");
}
