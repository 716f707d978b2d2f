//! `--listen` (operations issue): a running `regsync server` serves `/metrics` whose counters
//! are the copies it made, `/healthz`, `/readyz` (503 during the initial pass, 200 after it,
//! 503 naming a step whose source starts failing once it is stale) and `/status`; `once` and
//! `check` take the address from `REGSYNC_LISTEN`; a bad address is one line and exit 1.

mod common;

use common::server::{http_get, metric, Server};
use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

/// Polls `GET path` until `pred(status, body)` holds; returns the last answer.
fn poll(
    addr: &str,
    path: &str,
    timeout: Duration,
    pred: impl Fn(u16, &str) -> bool,
) -> (u16, String) {
    let start = Instant::now();
    loop {
        let (code, body) = http_get(addr, path);
        if pred(code, &body) {
            return (code, body);
        }
        assert!(
            start.elapsed() < timeout,
            "timed out polling {path}: last answer {code} {body:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn status(addr: &str) -> Value {
    let (code, body) = http_get(addr, "/status");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/status is not JSON: {e}\n{body}"))
}

/// Step 0 mirrors a repository of three tags from a slow source (`reqPerSec: 3`, so the
/// initial pass lasts seconds); step 1 names an image the source does not have and fails.
/// During the pass `/readyz` is 503 and `/healthz` 200; after it `/readyz` is 200 (step 1
/// failed but is not stale: its period is an hour). `/metrics` counts what landed in the
/// target: images copied = the tags, bytes = the blob bytes written, and each step's run
/// result; `/status` names both steps with their last result and error.
#[test]
fn metrics_count_the_copies_and_readyz_flips_after_the_initial_pass() {
    let (src, dst) = (Registry::start(), Registry::start());
    let images = [oci_image(9300), docker_image(9301), oci_image(9302)];
    for (i, img) in images.iter().enumerate() {
        push(&src, "alpha", &format!("v{i}"), img);
    }
    let steps = [
        repo_step(&src.r("alpha"), &dst.r("alpha"), &[], &[]) + "interval: 1h\n",
        image_step(&src.r("missing:v1"), &dst.r("missing:v1")) + "interval: 1h\n",
    ];
    let cfg = paced(&config(&[&src, &dst], 2, &steps), &src.host(), 3);
    let mut server = Server::start(&cfg, &["--listen", "127.0.0.1:0"]);
    let addr = server.listen_addr();
    assert!(
        addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
        "{addr}"
    );

    // The initial pass is still running (it needs seconds at 3 requests a second).
    let (code, body) = http_get(&addr, "/readyz");
    assert_eq!((code, body.trim()), (503, "initial pass running"));
    assert!(
        server.logs_of("Step summary").len() < 2,
        "the initial pass ended before the first /readyz\n{}",
        server.stderr()
    );
    assert_eq!(http_get(&addr, "/healthz"), (200, "ok\n".to_string()));

    let summaries = server.wait_logs("Step summary", 2, Duration::from_secs(60));
    let (code, body) = poll(&addr, "/readyz", Duration::from_secs(5), |c, _| c == 200);
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    assert_eq!(http_get(&addr, "/healthz").0, 200);

    // What landed in the target.
    let tags_copied = tags(&dst, "alpha").len();
    assert_eq!(tags_copied, images.len());
    for i in 0..images.len() {
        assert_same_image(&src, &dst, "alpha", &format!("v{i}"));
    }
    let bytes_written: usize = images.iter().map(|i| i.blob_bytes()).sum();
    let blobs_copied: u64 = summaries
        .iter()
        .map(|s| s["blobs_copied"].as_u64().unwrap())
        .sum();

    let (code, text) = http_get(&addr, "/metrics");
    assert_eq!(code, 200, "{text}");
    let m = |name: &str, labels: &str| {
        metric(&text, name, labels).unwrap_or_else(|| panic!("no {name}{{{labels}}} in\n{text}"))
    };
    // A step's series: its position and what it copies.
    let (s0, t0) = (src.r("alpha"), dst.r("alpha"));
    let (s1, t1) = (src.r("missing:v1"), dst.r("missing:v1"));
    let l0 = format!("step=\"0\",type=\"repository\",source=\"{s0}\",target=\"{t0}\"");
    let l1 = format!("step=\"1\",type=\"image\",source=\"{s1}\",target=\"{t1}\"");
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        m("regsync_build_info", &format!("version=\"{version}\"")),
        1.0
    );
    assert_eq!(
        m("regsync_images_total", &format!("{l0},result=\"copied\"")),
        tags_copied as f64
    );
    assert_eq!(
        m("regsync_images_total", &format!("{l0},result=\"failed\"")),
        0.0
    );
    assert_eq!(
        m("regsync_images_total", &format!("{l1},result=\"copied\"")),
        0.0
    );
    assert_eq!(m("regsync_copied_bytes_total", ""), bytes_written as f64);
    assert_eq!(
        m("regsync_blobs_total", "result=\"copied\""),
        blobs_copied as f64
    );
    assert!(blobs_copied > 0);
    assert_eq!(m("regsync_images_in_flight", ""), 0.0);
    let runs = |step: usize, s: &str, t: &str, kind: &str, result: &str| {
        m(
            "regsync_step_runs_total",
            &format!(
                "step=\"{step}\",type=\"{kind}\",source=\"{s}\",target=\"{t}\",result=\"{result}\""
            ),
        )
    };
    assert_eq!(runs(0, &s0, &t0, "repository", "ok"), 1.0);
    assert_eq!(runs(0, &s0, &t0, "repository", "failed"), 0.0);
    assert_eq!(runs(1, &s1, &t1, "image", "ok"), 0.0);
    assert_eq!(runs(1, &s1, &t1, "image", "failed"), 1.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let last_ok = m("regsync_step_last_success_timestamp_seconds", &l0);
    assert!(
        (now - 120.0..=now + 1.0).contains(&last_ok),
        "{last_ok} vs {now}"
    );
    assert!(metric(&text, "regsync_step_last_success_timestamp_seconds", &l1).is_none());
    assert!(m("regsync_step_last_run_timestamp_seconds", &l1) > 0.0);
    // An hour ahead, give or take the time the test took.
    let next = m("regsync_step_next_run_timestamp_seconds", &l0);
    assert!(
        (now + 3000.0..=now + 3601.0).contains(&next),
        "{next} vs {now}"
    );
    // Every request is counted by registry, method, endpoint and status: the manifest PUTs
    // the target answered 201 are the manifests pushed, the source's blob GETs the blobs
    // copied, and a request's duration is observed once per send.
    let manifests_pushed: u64 = summaries
        .iter()
        .map(|s| s["manifests_pushed"].as_u64().unwrap())
        .sum();
    assert!(manifests_pushed >= images.len() as u64);
    let req = |host: &str, method: &str, kind: &str, code: &str| {
        metric(
            &text,
            "regsync_http_requests_total",
            &format!("registry=\"{host}\",method=\"{method}\",kind=\"{kind}\",code=\"{code}\""),
        )
        .unwrap_or(0.0)
    };
    assert_eq!(
        req(&dst.host(), "PUT", "manifest", "201"),
        manifests_pushed as f64,
        "{text}"
    );
    assert_eq!(
        req(&src.host(), "GET", "blob", "200"),
        blobs_copied as f64,
        "{text}"
    );
    // The missing image of step 1: one 404 on the source's manifest endpoint at least.
    assert!(
        req(&src.host(), "HEAD", "manifest", "404") + req(&src.host(), "GET", "manifest", "404")
            >= 1.0,
        "{text}"
    );
    let sent_to_src: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("regsync_http_requests_total{")
                && l.contains(&format!("registry=\"{}\"", src.host()))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    let timed_at_src: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("regsync_http_request_duration_seconds_count{")
                && l.contains(&format!("registry=\"{}\"", src.host()))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert!(sent_to_src > 0.0);
    assert_eq!(sent_to_src, timed_at_src, "{text}");
    for host in [src.host(), dst.host()] {
        let r = format!("registry=\"{host}\"");
        assert_eq!(m("regsync_http_retries_total", &r), 0.0);
        assert_eq!(m("regsync_requests_in_flight", &r), 0.0);
        assert_eq!(m("regsync_ratelimit_waits_total", &r), 0.0);
        // A registry that reports no pull budget has no remaining sample.
        assert!(
            metric(&text, "regsync_ratelimit_remaining", &r).is_none(),
            "{text}"
        );
    }
    assert!(
        text.contains("# TYPE regsync_ratelimit_remaining gauge"),
        "{text}"
    );
    assert_eq!(m("regsync_step_run_duration_seconds_count", &l0), 1.0);
    assert!(m("regsync_step_run_duration_seconds_sum", &l0) > 0.0);
    // No per-tag label anywhere.
    assert!(!text.contains("v0") && !text.contains("sha256"), "{text}");

    let st = status(&addr);
    assert_eq!(st["version"], version, "{st}");
    assert_eq!(st["mode"], "server", "{st}");
    assert_eq!(st["initial_pass_done"], true, "{st}");
    assert!(
        st["started"].as_str().is_some_and(|s| s.ends_with('Z')),
        "{st}"
    );
    let steps = st["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "{st}");
    let (a, b) = (&steps[0], &steps[1]);
    assert_eq!(a["name"], "sync[0]", "{st}");
    assert_eq!(a["type"], "repository", "{st}");
    assert_eq!(a["source"], s0.as_str(), "{st}");
    assert_eq!(a["target"], t0.as_str(), "{st}");
    assert!(
        a["schedule"]
            .as_str()
            .is_some_and(|s| s.starts_with("@every 1h")),
        "{st}"
    );
    assert_eq!(a["last_result"], "ok", "{st}");
    assert_eq!(a["last_error"], Value::Null, "{st}");
    assert_eq!(a["counts"]["images_copied"], tags_copied as u64, "{st}");
    assert_eq!(a["counts"]["bytes_copied"], bytes_written as u64, "{st}");
    assert!(
        a["last_start"].is_string() && a["last_end"].is_string(),
        "{st}"
    );
    assert_eq!(b["name"], "sync[1]", "{st}");
    assert_eq!(b["last_result"], "failed", "{st}");
    let err = b["last_error"].as_str().unwrap_or_else(|| panic!("{st}"));
    assert!(err.contains("sync[1]") && !err.contains('\n'), "{err}");
    assert_eq!(b["stale"], false, "{st}");
    // Per registry: what was sent, and the blob bytes each way (manifests add to them).
    let regs = st["registries"]
        .as_array()
        .unwrap_or_else(|| panic!("{st}"));
    let reg = |host: String| {
        regs.iter()
            .find(|r| r["registry"] == host.as_str())
            .unwrap_or_else(|| panic!("no registry {host} in {st}"))
    };
    let (rs, rd) = (reg(src.host()), reg(dst.host()));
    assert_eq!(rs["requests"].as_f64().unwrap(), sent_to_src, "{st}");
    assert!(
        rs["bytes_read"].as_u64().unwrap() >= bytes_written as u64,
        "{st}"
    );
    assert!(
        rd["bytes_written"].as_u64().unwrap() >= bytes_written as u64,
        "{st}"
    );
    assert_eq!(rs["retries"], 0, "{st}");
    assert_eq!(rs["rate_limit_remaining"], Value::Null, "{st}");
    assert!(
        rd["requests_by_kind"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kind"] == "upload"),
        "{st}"
    );

    server.signal(libc::SIGTERM);
    let (st, _) = server.wait_exit(Duration::from_secs(15));
    // Step 1 failed: a server that saw errors exits 1.
    assert_eq!(st.code(), Some(1), "{}", server.stderr());
}

/// A step fired every 2 s whose source registry goes away: once its last success is older
/// than twice its period, `/readyz` answers 503 naming it, and `/status` shows the step stale
/// with its failed run and error line; `/healthz` stays 200 (the process itself is fine).
#[test]
fn readyz_names_a_step_whose_source_starts_failing() {
    let (mut src, dst) = (Registry::start(), Registry::start());
    push(&src, "app", "v1", &oci_image(9310));
    let step = image_step(&src.r("app:v1"), &dst.r("app:v1")) + "interval: 2s\n";
    let mut server = Server::start(
        &config(&[&src, &dst], 1, &[step]),
        &["--listen", "127.0.0.1:0"],
    );
    let addr = server.listen_addr();
    poll(&addr, "/readyz", Duration::from_secs(20), |c, _| c == 200);
    assert_same_image(&src, &dst, "app", "v1");

    src.stop();
    let (_, body) = poll(&addr, "/readyz", Duration::from_secs(30), |c, _| c == 503);
    assert_eq!(body.trim(), "stale: sync[0]");
    assert_eq!(http_get(&addr, "/healthz").0, 200);
    let start = Instant::now();
    let st = loop {
        let st = status(&addr);
        if st["steps"][0]["last_result"] == "failed" {
            break st;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no failed run\n{st}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let s = &st["steps"][0];
    assert_eq!(s["stale"], true, "{st}");
    assert_eq!(st["ready"], false, "{st}");
    assert!(s["failed_runs"].as_u64().unwrap() >= 1, "{st}");
    assert!(s["last_success"].is_string(), "{st}");
    let err = s["last_error"].as_str().unwrap_or_else(|| panic!("{st}"));
    assert!(err.contains("sync[0]") && !err.contains('\n'), "{err}");
}

/// `REGSYNC_LISTEN` stands for `--listen`, for `once` and `check` too: the port is logged and
/// the run ends normally.
#[test]
fn once_and_check_listen_from_the_environment() {
    let (src, dst) = (Registry::start(), Registry::start());
    push(&src, "app", "v1", &oci_image(9320));
    let cfg = config(
        &[&src, &dst],
        1,
        &[image_step(&src.r("app:v1"), &dst.r("app:v1"))],
    );
    for cmd in ["once", "check"] {
        let out = regsync_env(&[cmd], &cfg, &[("REGSYNC_LISTEN", "127.0.0.1:0")]);
        out.assert_ok();
        let l = out.logs("Listening");
        assert_eq!(l.len(), 1, "{}", out.dump());
        let a = l[0]["addr"].as_str().unwrap();
        assert!(a.starts_with("127.0.0.1:") && !a.ends_with(":0"), "{a}");
    }
    // Without it, no port.
    let out = regsync(&["once"], &cfg);
    out.assert_ok();
    assert!(out.logs("Listening").is_empty(), "{}", out.dump());
}

/// A bad `--listen`: one line naming the flag, exit 1, before any step runs.
#[test]
fn a_bad_listen_address_is_one_line_and_exit_1() {
    let (src, dst) = (Registry::start(), Registry::start());
    push(&src, "app", "v1", &oci_image(9330));
    let cfg = config(
        &[&src, &dst],
        1,
        &[image_step(&src.r("app:v1"), &dst.r("app:v1")) + "interval: 1h\n"],
    );
    for bad in ["nonsense", "127.0.0.1:99999", "[zz]:1"] {
        let out = regsync(&["server", "--listen", bad], &cfg);
        out.assert_fail();
        let line = out.assert_one_error_line(&["--listen"]);
        assert!(line.contains(bad), "{line}");
    }
    // A port already taken: the bind fails, nothing is copied.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = regsync(&["server", "--listen", &addr], &cfg);
    out.assert_fail();
    let line = out.assert_one_error_line(&["--listen"]);
    assert!(
        line.contains(&addr) && line.contains("cannot listen"),
        "{line}"
    );
    assert!(out.logs("Step summary").is_empty(), "{}", out.dump());
    assert!(manifest_digest(&dst, "app", "v1").is_none());
    // The environment variable is checked the same way.
    let out = regsync_env(&["once"], &cfg, &[("REGSYNC_LISTEN", "nonsense")]);
    out.assert_fail();
    out.assert_one_error_line(&["--listen"]);
}

/// `server --state` keeps the step runs across a restart: right after the second start,
/// before the step has run again, `/status` shows the first server's `last_end`,
/// `last_result` and `last_success` (to the second: the database keeps Unix seconds). A
/// server without the file knows nothing of the earlier runs.
#[test]
fn server_state_keeps_the_last_runs_across_a_restart() {
    let (mut src, dst) = (Registry::start(), Registry::start());
    for i in 0..3 {
        push(&src, "alpha", &format!("v{i}"), &oci_image(9340 + i));
    }
    let step = repo_step(&src.r("alpha"), &dst.r("alpha"), &[], &[]) + "interval: 1h\n";
    let cfg = config(&[&src, &dst], 1, std::slice::from_ref(&step));
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let db = db.to_str().unwrap();

    let mut first = Server::start(&cfg, &["--listen", "127.0.0.1:0", "--state", db]);
    let addr = first.listen_addr();
    first.wait_logs("Step summary", 1, Duration::from_secs(60));
    let (_, body) = poll(&addr, "/status", Duration::from_secs(10), |_, b| {
        b.contains("\"last_result\":\"ok\"")
    });
    let before: Value = serde_json::from_str(&body).unwrap();
    let before = before["steps"][0].clone();
    assert_eq!(before["last_result"], "ok", "{before}");
    first.signal(libc::SIGTERM);
    let (st, _) = first.wait_exit(Duration::from_secs(45));
    assert_eq!(st.code(), Some(0), "{}", first.stderr());

    // The source's port now takes connections and never answers, so the restarted server's
    // first pass is still running when /status is read.
    let port = src.port();
    src.stop();
    let _hole = std::net::TcpListener::bind(("127.0.0.1", port)).expect("rebind the port");
    let mut second = Server::start(&cfg, &["--listen", "127.0.0.1:0", "--state", db]);
    let addr = second.listen_addr();
    let after = status(&addr);
    assert!(
        second.logs_of("Step summary").is_empty(),
        "the step ran again before /status was read\n{}",
        second.stderr()
    );
    let after = &after["steps"][0];
    assert_eq!(after["last_result"], "ok", "{after}");
    let secs = |v: &Value, k: &str| -> i64 {
        let t = v[k]
            .as_str()
            .unwrap_or_else(|| panic!("{k} is not a time: {v}"));
        chrono::DateTime::parse_from_rfc3339(t)
            .unwrap_or_else(|e| panic!("{k} {t}: {e}"))
            .timestamp()
    };
    for k in ["last_end", "last_success"] {
        let (b, a) = (secs(&before, k), secs(after, k));
        assert!((b - a).abs() <= 1, "{k}: {b} before the restart, {a} after");
    }
    second.signal(libc::SIGTERM);
    second.wait_exit(Duration::from_secs(45));

    // without the file: nothing is known before the first run ends
    let mut stateless = Server::start(&cfg, &["--listen", "127.0.0.1:0"]);
    let addr = stateless.listen_addr();
    let fresh = status(&addr);
    assert!(stateless.logs_of("Step summary").is_empty());
    assert!(fresh["steps"][0]["last_end"].is_null(), "{fresh}");
    assert!(fresh["steps"][0]["last_result"].is_null(), "{fresh}");
}
