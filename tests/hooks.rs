//! Hooks (`hooks.pre`, `hooks.post`, `hooks.unchanged`, README "Hooks"): a `cmd` hook's argv
//! is rendered per image and run without a shell; `pre` runs before an image is copied and a
//! failing `pre` fails that image alone; `post` follows a successful copy; `unchanged` fires for
//! images that already matched; `check` runs no hook. An `http` hook sends its method, URL and
//! body to a server in the test, never with registry credentials and never logging its query.
//! A bad hook in the config is one line at load time; cancellation kills a running hook, and
//! a hook abandoned at the shutdown deadline takes what it started with it.

mod common;

use common::server::Server;
use common::*;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A script run as `/bin/sh record.sh LOG ARGS...`: appends `ARG1|ARG2|...|` as one line to
/// LOG. The template values only ever reach it as argv elements.
const RECORD_SH: &str = r#"out="$1"; shift
line=""
for a in "$@"; do line="$line$a|"; done
printf '%s\n' "$line" >> "$out"
"#;

struct Recorder {
    _dir: tempfile::TempDir,
    script: PathBuf,
    log: PathBuf,
}

impl Recorder {
    fn new() -> Recorder {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("record.sh");
        std::fs::write(&script, RECORD_SH).unwrap();
        let log = dir.path().join("hooks.log");
        Recorder {
            script,
            log,
            _dir: dir,
        }
    }

    /// A `{type: cmd, params: [...]}` flow mapping recording `event` and the image's data.
    fn hook(&self, event: &str) -> String {
        format!(
            "{{type: cmd, params: [/bin/sh, '{}', '{}', {event}, \
             '{{{{ .Source.CommonName }}}}', '{{{{ .Target.CommonName }}}}', \
             '{{{{ .Ref.Tag }}}}', '{{{{ .Digest }}}}', '{{{{ .TargetDigest }}}}', \
             '{{{{ .Hook }}}}', '{{{{ .Sync.Type }}}}']}}",
            self.script.display(),
            self.log.display()
        )
    }

    /// Every recorded line, split into its fields.
    fn lines(&self) -> Vec<Vec<String>> {
        match std::fs::read_to_string(&self.log) {
            Ok(text) => text
                .lines()
                .map(|l| {
                    let mut f: Vec<String> = l.split('|').map(String::from).collect();
                    f.pop(); // after the last `|`
                    f
                })
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    fn clear(&self) {
        let _ = std::fs::remove_file(&self.log);
    }
}

fn hooks_block(pre: &str, post: &str, unchanged: &str) -> String {
    let mut s = String::from("hooks:\n");
    for (k, v) in [("pre", pre), ("post", post), ("unchanged", unchanged)] {
        if !v.is_empty() {
            s.push_str(&format!("  {k}: {v}\n"));
        }
    }
    s
}

#[test]
fn cmd_pre_post_and_unchanged_fire_with_the_image_data() {
    let (src, dst) = (Registry::start(), Registry::start());
    let imgs = [("v1", oci_image(9100)), ("v2", docker_image(9101))];
    for (t, img) in &imgs {
        push(&src, "app", t, img);
    }
    let rec = Recorder::new();
    // Defaults carry the hooks; the step inherits them.
    let cfg = config(
        &[&src, &dst],
        2,
        &[repo_step(&src.r("app"), &dst.r("mirror/app"), &[], &[])],
    )
    .replace(
        "defaults:\n",
        &format!(
            "defaults:\n  hooks:\n    pre: {}\n    post: {}\n    unchanged: {}\n",
            rec.hook("pre"),
            rec.hook("post"),
            rec.hook("unchanged")
        ),
    );

    let out = regsync(&["once"], &cfg);
    out.assert_ok();
    for (tag, img) in &imgs {
        let got = manifest_digest(&dst, "mirror/app", tag);
        assert_eq!(got.as_deref(), Some(img.digest()), "{tag}");
    }
    let lines = rec.lines();
    assert_eq!(lines.len(), 4, "two hooks per copied image: {lines:?}");
    for (tag, img) in &imgs {
        let mine: Vec<&Vec<String>> = lines.iter().filter(|l| l[3] == *tag).collect();
        let events: Vec<&str> = mine.iter().map(|l| l[0].as_str()).collect();
        assert_eq!(events, ["pre", "post"], "{tag}: {lines:?}");
        for l in &mine {
            assert_eq!(l[1], src.r(&format!("app:{tag}")), "source: {l:?}");
            assert_eq!(l[2], dst.r(&format!("mirror/app:{tag}")), "target: {l:?}");
            assert_eq!(l[4], img.digest(), "digest: {l:?}");
            assert_eq!(l[5], "", "the target was absent: {l:?}");
            assert_eq!(l[6], l[0], ".Hook: {l:?}");
            assert_eq!(l[7], "repository", ".Sync.Type: {l:?}");
        }
    }

    // Nothing changed: only `unchanged`, once per image, with the matching digest.
    rec.clear();
    let out = regsync(&["once"], &cfg);
    out.assert_ok();
    assert_summary(&out, &[("images_matched", 2), ("images_copied", 0)]);
    let mut lines = rec.lines();
    lines.sort();
    assert_eq!(lines.len(), 2, "{lines:?}");
    for (l, (tag, img)) in lines.iter().zip(&imgs) {
        assert_eq!(l[0], "unchanged", "{lines:?}");
        assert_eq!(l[3], *tag, "{lines:?}");
        assert_eq!(l[4], img.digest(), "{lines:?}");
        assert_eq!(
            l[5],
            img.digest(),
            "target digest of a matched image: {l:?}"
        );
    }

    // `check` never runs a hook, even when an image differs.
    rec.clear();
    push(&src, "app", "v1", &oci_image(9102));
    let out = regsync(&["check"], &cfg);
    out.assert_ok();
    assert_eq!(out.logs("Image sync needed").len(), 1, "{}", out.dump());
    assert_eq!(rec.lines(), Vec::<Vec<String>>::new(), "check ran hooks");

    // The changed tag is copied (pre/post with the old target digest), the other unchanged.
    let out = regsync(&["once"], &cfg);
    out.assert_ok();
    let lines = rec.lines();
    let v1: Vec<&Vec<String>> = lines.iter().filter(|l| l[3] == "v1").collect();
    assert_eq!(
        v1.iter().map(|l| l[0].as_str()).collect::<Vec<_>>(),
        ["pre", "post"],
        "{lines:?}"
    );
    assert_eq!(v1[0][4], oci_image(9102).digest());
    assert_eq!(v1[0][5], imgs[0].1.digest(), "old target digest: {lines:?}");
    let v2: Vec<&Vec<String>> = lines.iter().filter(|l| l[3] == "v2").collect();
    assert_eq!(v2.len(), 1, "{lines:?}");
    assert_eq!(v2[0][0], "unchanged");
}

#[test]
fn failing_pre_hook_fails_only_its_image() {
    let (src, dst) = (Registry::start(), Registry::start());
    for (i, t) in ["good1", "bad", "good2"].iter().enumerate() {
        push(&src, "app", t, &oci_image(9200 + i as u64));
    }
    let rec = Recorder::new();
    // argv, no shell string built from data: the tag is `$0` of the inline script.
    let pre = "{type: cmd, params: [/bin/sh, -c, 'test \"$0\" != bad', '{{ .Ref.Tag }}']}";
    let step = repo_step(&src.r("app"), &dst.r("app"), &[], &[])
        + &hooks_block(pre, &rec.hook("post"), "");
    let cfg = config(&[&src, &dst], 2, &[step]);
    let out = regsync(&["once"], &cfg);
    out.assert_fail();
    let line = out.assert_one_error_line(&[&src.r("app:bad")]);
    assert!(line.contains("pre hook"), "{line}");
    assert!(line.contains(&dst.r("app:bad")), "{line}");
    assert_eq!(tags(&dst, "app"), vec!["good1", "good2"]);
    assert_summary(&out, &[("images_copied", 2), ("images_failed", 1)]);
    let posts: Vec<String> = rec.lines().iter().map(|l| l[3].clone()).collect();
    let mut posts_sorted = posts.clone();
    posts_sorted.sort();
    assert_eq!(posts_sorted, ["good1", "good2"], "post only after a copy");
}

#[test]
fn failing_post_and_unchanged_hooks_only_warn() {
    let (src, dst) = (Registry::start(), Registry::start());
    push(&src, "app", "v1", &oci_image(9300));
    let fail = "{type: cmd, params: [/bin/sh, -c, 'exit 3']}";
    let step = image_step(&src.r("app:v1"), &dst.r("app:v1")) + &hooks_block("", fail, fail);
    let cfg = config(&[&src, &dst], 0, &[step]);
    let out = regsync(&["once"], &cfg);
    out.assert_ok();
    assert_same_image(&src, &dst, "app", "v1");
    assert_summary(&out, &[("images_copied", 1), ("images_failed", 0)]);
    let warns = out.logs("Hook failed");
    assert_eq!(warns.len(), 1, "{}", out.dump());
    assert_eq!(warns[0]["level"], "WARN");
    assert_eq!(warns[0]["hook"], "post");
    assert!(
        warns[0]["error"].as_str().unwrap_or("").contains("3"),
        "{}",
        warns[0]
    );

    let out = regsync(&["once"], &cfg);
    out.assert_ok();
    assert_summary(&out, &[("images_matched", 1), ("images_failed", 0)]);
    let warns = out.logs("Hook failed");
    assert_eq!(warns.len(), 1, "{}", out.dump());
    assert_eq!(warns[0]["hook"], "unchanged");
}

/// What the test's HTTP server received.
#[derive(Clone, Debug)]
struct Received {
    method: String,
    uri: String,
    body: String,
    authorization: Option<String>,
    content_type: Option<String>,
}

struct HookServer {
    addr: String,
    got: Arc<Mutex<Vec<Received>>>,
}

impl HookServer {
    /// Answers 500 for paths starting with `/fail`, 204 otherwise.
    fn start() -> HookServer {
        use axum::body::Bytes;
        use axum::http::{HeaderMap, Method, StatusCode, Uri};
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let g = got.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let g = g.clone();
                async move {
                    let header =
                        |k: &str| headers.get(k).map(|v| v.to_str().unwrap_or("").to_string());
                    g.lock().unwrap().push(Received {
                        method: method.to_string(),
                        uri: uri.to_string(),
                        body: String::from_utf8_lossy(&body).into_owned(),
                        authorization: header("authorization"),
                        content_type: header("content-type"),
                    });
                    if uri.path().starts_with("/fail") {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::NO_CONTENT
                    }
                }
            },
        );
        let listener = block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        rt().spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        HookServer { addr, got }
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

#[test]
fn http_hook_sends_method_path_and_rendered_body() {
    let src = Registry::start();
    let dst = Registry::with_auth("mirror", "registry-secret");
    push(&src, "app", "v1", &oci_image(9400));
    let srv = HookServer::start();
    let post = format!(
        "{{type: http, params: [POST, 'http://{}/done/{{{{ .Ref.Tag }}}}?token=hook-secret-123', \
         '{{\"target\":\"{{{{ .Target.CommonName }}}}\",\"digest\":\"{{{{ .Digest }}}}\"}}']}}",
        srv.addr
    );
    let unchanged = format!(
        "{{type: http, params: [put, 'http://hookuser:hookpass@{}/same/{{{{ .Ref.Tag }}}}']}}",
        srv.addr
    );
    let step = image_step(&src.r("app:v1"), &dst.r("app:v1")) + &hooks_block("", &post, &unchanged);
    let cfg = config(&[&src, &dst], 0, &[step]);
    let out = regsync(&["once", "-v", "debug"], &cfg);
    out.assert_ok();
    let got = srv.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].method, "POST");
    assert_eq!(got[0].uri, "/done/v1?token=hook-secret-123");
    let body: serde_json::Value = serde_json::from_str(&got[0].body).expect("JSON body");
    assert_eq!(body["target"], dst.r("app:v1"));
    assert_eq!(body["digest"], oci_image(9400).digest());
    assert_eq!(got[0].content_type.as_deref(), Some("application/json"));
    assert_eq!(
        got[0].authorization, None,
        "registry credentials sent to a hook"
    );
    assert!(
        !out.stderr.contains("hook-secret-123"),
        "query token logged:\n{}",
        out.stderr
    );

    let out = regsync(&["once", "-v", "debug"], &cfg);
    out.assert_ok();
    let got = srv.received();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[1].method, "PUT");
    assert_eq!(got[1].uri, "/same/v1");
    assert_eq!(got[1].body, "");
    // The URL's own userinfo is the hook's credential; the registry's never is.
    let auth = got[1].authorization.clone().unwrap_or_default();
    assert!(auth.starts_with("Basic "), "{auth:?}");
    assert!(
        !out.stderr.contains("hookpass"),
        "userinfo logged:\n{}",
        out.stderr
    );
}

#[test]
fn http_pre_hook_non_2xx_fails_the_image() {
    let (src, dst) = (Registry::start(), Registry::start());
    for (i, t) in ["ok", "bad"].iter().enumerate() {
        push(&src, "app", t, &oci_image(9500 + i as u64));
    }
    let srv = HookServer::start();
    let pre = format!(
        "{{type: http, params: [POST, 'http://{}/{{{{ if eq .Ref.Tag \"bad\" }}}}fail{{{{ else }}}}ok{{{{ end }}}}/{{{{ .Ref.Tag }}}}']}}",
        srv.addr
    );
    let step = repo_step(&src.r("app"), &dst.r("app"), &[], &[]) + &hooks_block(&pre, "", "");
    let cfg = config(&[&src, &dst], 0, &[step]);
    let out = regsync(&["once"], &cfg);
    out.assert_fail();
    let line = out.assert_one_error_line(&[&src.r("app:bad")]);
    assert!(line.contains("500"), "{line}");
    assert_eq!(tags(&dst, "app"), vec!["ok"]);
    let mut paths: Vec<String> = srv.received().iter().map(|r| r.uri.clone()).collect();
    paths.sort();
    assert_eq!(paths, ["/fail/bad", "/ok/ok"]);
}

fn load_error(yaml_hooks: &str) -> String {
    let step =
        format!("source: 127.0.0.1:1/a:v1\ntarget: 127.0.0.1:1/b:v1\ntype: image\n{yaml_hooks}");
    let cfg = config(
        &[],
        0,
        &[image_step("127.0.0.1:1/x:v1", "127.0.0.1:1/y:v1"), step],
    );
    let out = regsync(&["once"], &cfg);
    out.assert_fail();
    let line = out.assert_one_error_line(&["sync[1]"]);
    // The same line from `config` (after the temp file's name).
    let after_file = |l: &str| l.split_once(".yml: ").map(|(_, rest)| rest.to_string());
    let printed = regsync(&["config"], &cfg);
    printed.assert_fail();
    let lines = printed.error_lines();
    assert_eq!(lines.len(), 1, "config command: {lines:?}");
    assert_eq!(after_file(lines[0]), after_file(&line), "config command");
    assert!(after_file(&line).is_some(), "{line}");
    line
}

#[test]
fn bad_hooks_are_one_line_at_load() {
    let line = load_error("hooks:\n  pre: {type: exec, params: [echo]}\n");
    assert!(
        line.contains("hooks.pre.type: unknown hook type \"exec\" (expected cmd or http)"),
        "{line}"
    );
    let line = load_error("hooks:\n  post: {type: http, params: [POST]}\n");
    assert!(line.contains("hooks.post.params"), "{line}");
    let line = load_error("hooks:\n  unchanged: {type: cmd, params: []}\n");
    assert!(line.contains("hooks.unchanged.params"), "{line}");
    let line = load_error("hooks:\n  pre: {type: cmd, params: [echo, '{{ .Ref.Tag ']}\n");
    assert!(line.contains("hooks.pre.params[1]"), "{line}");
    let line = load_error("hooks:\n  post: {type: http, params: ['BAD METHOD', 'http://x/']}\n");
    assert!(line.contains("hooks.post.params[0]"), "{line}");
    let line = load_error("hooks:\n  post: {type: http, params: [POST, 'ftp://x/']}\n");
    assert!(line.contains("hooks.post.params[1]"), "{line}");

    // A bad default hook is named once, as `defaults`.
    let cfg = "defaults:\n  hooks:\n    pre: {type: shell, params: [x]}\nsync: []\n";
    let out = regsync(&["once"], cfg);
    out.assert_fail();
    let line = out.assert_one_error_line(&["defaults: hooks.pre.type"]);
    assert!(line.contains("\"shell\""), "{line}");
}

#[test]
fn config_prints_hooks() {
    let rec = Recorder::new();
    let cfg = format!(
        "defaults:\n  hooks:\n    post: {}\nsync:\n  - source: 127.0.0.1:1/a:v1\n    target: 127.0.0.1:1/b:v1\n    type: image\n    hooks:\n      pre: {{type: http, params: [POST, 'http://127.0.0.1:1/x', '{{{{ .Ref.Tag }}}}']}}\n",
        rec.hook("post")
    );
    let out = regsync(&["config"], &cfg);
    out.assert_ok();
    let printed = &out.stdout;
    let expected_step = "  hooks:\n    pre:\n      type: http\n      params:\n      - POST\n      - http://127.0.0.1:1/x\n      - \"{{ .Ref.Tag }}\"\n    post:\n      type: cmd\n";
    assert!(printed.contains(expected_step), "{printed}");
    assert!(printed.contains("    unchanged: null\n"), "{printed}");
}

/// A hook still running when the run is cancelled is killed, and the run ends at once
/// instead of waiting out the shutdown timeout.
#[test]
fn cancel_kills_a_running_hook() {
    let (src, dst) = (Registry::start(), Registry::start());
    push(&src, "app", "v1", &oci_image(9600));
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("hook.pid");
    let pre = format!(
        "{{type: cmd, params: [/bin/sh, -c, 'echo $$ > \"$0\"; exec sleep 300', '{}']}}",
        pidfile.display()
    );
    let step = image_step(&src.r("app:v1"), &dst.r("app:v1")) + &hooks_block(&pre, "", "");
    let cfg = config(&[&src, &dst], 0, &[step]);
    let mut run = Server::start_cmd("once", &cfg, &[]);
    let pid = wait_for_pid(&pidfile, &mut run);
    assert!(alive(pid), "hook not running");
    let start = Instant::now();
    run.signal(libc::SIGTERM);
    let (status, _) = run.wait_exit(Duration::from_secs(25));
    assert_eq!(status.code(), Some(1), "{}", run.stderr());
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{}",
        run.stderr()
    );
    assert!(
        !run.stderr().contains("shutdown timed out"),
        "{}",
        run.stderr()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(pid), "hook process {pid} survived the cancellation");
    assert_eq!(tags(&dst, "app"), Vec::<String>::new());
}

/// With no time after the signal (`--shutdown-timeout 0s`) the run is abandoned while its hook
/// still runs. Whichever stops the hook, its cancellation or the drop of the abandoned run,
/// its whole process group goes: what it started in the background does not outlive regsync.
/// (The drop alone is checked in `src/hooks/cmd.rs`; here the cancellation usually wins.)
#[test]
fn a_hook_abandoned_at_the_shutdown_deadline_takes_its_process_group() {
    let (src, dst) = (Registry::start(), Registry::start());
    push(&src, "app", "v1", &oci_image(9610));
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("background.pid");
    // The hook's background child, in the hook's process group.
    let pre = format!(
        "{{type: cmd, params: [/bin/sh, -c, 'sleep 300 & echo $! > \"$0\"; wait', '{}']}}",
        pidfile.display()
    );
    let step = image_step(&src.r("app:v1"), &dst.r("app:v1")) + &hooks_block(&pre, "", "");
    let cfg = config(&[&src, &dst], 0, &[step]);
    let mut run = Server::start_cmd("once", &cfg, &["--shutdown-timeout", "0s"]);
    let pid = wait_for_pid(&pidfile, &mut run);
    assert!(alive(pid), "background process not running");
    run.signal(libc::SIGTERM);
    let (status, _) = run.wait_exit(Duration::from_secs(25));
    assert_eq!(status.code(), Some(1), "{}", run.stderr());
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let survived = alive(pid);
    if survived {
        // SAFETY: kill(2) on the pid the hook wrote, which is still that process.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    assert!(
        !survived,
        "the hook's background process {pid} outlived regsync:\n{}",
        run.stderr()
    );
}

fn wait_for_pid(pidfile: &Path, run: &mut Server) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(pidfile) {
            if let Ok(pid) = text.trim().parse() {
                return pid;
            }
        }
        assert!(run.running(), "regsync exited first:\n{}", run.stderr());
        assert!(
            Instant::now() < deadline,
            "the hook never started:\n{}",
            run.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A process that exists and is not a zombie.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}
