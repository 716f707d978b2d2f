//! Credential sources (spec §3.3, §8): a `credHelper` program, Docker's `config.json`
//! (`auths`, `credHelpers`, `credsStore`) and `DOCKER_AUTH_CONFIG`, `skipDockerConfig`, the
//! bearer refresh-token flow (`token`), `repoAuth`, `userAgent`, and that no secret ever shows
//! up in the output, even with `-v trace`.

mod common;

use base64::Engine as _;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Write an executable shell script.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A docker credential helper answering `get` with `user`/`secret` for any server, logging
/// each call (`<verb> <stdin>`) to `<dir>/calls`; `list` answers `list_json`.
fn helper(dir: &Path, name: &str, user: &str, secret: &str, list_json: &str) -> PathBuf {
    let calls = dir.join("calls");
    script(
        dir,
        name,
        &format!(
            r#"server=$(cat)
echo "$1 $server" >> '{calls}'
case "$1" in
  get) printf '{{"ServerURL":"%s","Username":"{user}","Secret":"{secret}"}}' "$server" ;;
  list) printf '%s' '{list_json}' ;;
  *) exit 1 ;;
esac"#,
            calls = calls.display()
        ),
    )
}

fn calls(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("calls"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A config with hand-written `creds` entries (each a YAML mapping body) and extra defaults.
fn config_with(creds: &[String], defaults: &str, steps: &[String]) -> String {
    let mut s = String::from("version: 1\ncreds:\n");
    for c in creds {
        let mut first = true;
        for line in c.lines().filter(|l| !l.trim().is_empty()) {
            s.push_str(if first { "  - " } else { "    " });
            s.push_str(line);
            s.push('\n');
            first = false;
        }
    }
    s.push_str("defaults:\n  parallel: 2\n");
    for line in defaults.lines().filter(|l| !l.trim().is_empty()) {
        s.push_str("  ");
        s.push_str(line);
        s.push('\n');
    }
    s.push_str("sync:\n");
    for st in steps {
        let mut first = true;
        for line in st.lines().filter(|l| !l.trim().is_empty()) {
            s.push_str(if first { "  - " } else { "    " });
            s.push_str(line);
            s.push('\n');
            first = false;
        }
    }
    s
}

fn plain(host: &str) -> String {
    format!("registry: {host}\ntls: disabled\n")
}

/// Writes `config.json` into a fresh directory for `DOCKER_CONFIG`.
fn docker_config(json: serde_json::Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), json.to_string()).unwrap();
    dir
}

/// `PATH` with `dir` in front.
fn path_with(dir: &Path) -> String {
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn cred_helper_supplies_basic_credentials() {
    let src = Registry::with_auth("helperuser", "helper-pw-1");
    let dst = Registry::start();
    push(
        &src,
        "app",
        "v1",
        &index_image(900, &["linux/amd64", "linux/arm64"]),
    );
    push(&src, "app", "v2", &oci_image(901));
    let dir = tempfile::tempdir().unwrap();
    let prog = helper(
        dir.path(),
        "docker-credential-fake",
        "helperuser",
        "helper-pw-1",
        "{}",
    );
    let cfg = config_with(
        &[
            format!("{}credHelper: {}\n", plain(&src.host()), prog.display()),
            plain(&dst.host()),
        ],
        "",
        &[repo_step(&src.r("app"), &dst.r("app"), &[], &[])],
    );
    regsync(&["once"], &cfg).assert_ok();
    assert_same_repo(&src, "app", &dst, "app");
    // Run lazily once and cached (default credExpire 1 h), given the hostname on stdin.
    assert_eq!(calls(dir.path()), [format!("get {}", src.host())]);
}

#[test]
fn cred_helper_on_the_target_with_cred_host_and_identity_of_the_token_user() {
    let src = Registry::start();
    let dst = Registry::with_auth("pusher", "push-pw-2");
    push(&src, "app", "v1", &docker_image(910));
    let dir = tempfile::tempdir().unwrap();
    let prog = helper(
        dir.path(),
        "docker-credential-fake",
        "pusher",
        "push-pw-2",
        "{}",
    );
    let cfg = config_with(
        &[
            plain(&src.host()),
            format!(
                "{}credHelper: {}\ncredHost: https://creds.example/\ncredExpire: 3600000000000\n",
                plain(&dst.host()),
                prog.display()
            ),
        ],
        "",
        &[image_step(&src.r("app:v1"), &dst.r("app:v1"))],
    );
    regsync(&["once"], &cfg).assert_ok();
    assert_same_image(&src, &dst, "app", "v1");
    assert_eq!(calls(dir.path()), ["get https://creds.example/"]);
}

#[test]
fn failing_cred_helper_is_unauthorized_and_says_so() {
    let src = Registry::with_auth("u", "pw-3");
    let dst = Registry::start();
    push(&src, "app", "v1", &oci_image(920));
    let dir = tempfile::tempdir().unwrap();
    let prog = script(
        dir.path(),
        "docker-credential-broken",
        "cat >/dev/null; echo 'credentials not found'; exit 1",
    );
    let cfg = config_with(
        &[
            format!("{}credHelper: {}\n", plain(&src.host()), prog.display()),
            plain(&dst.host()),
        ],
        "",
        &[image_step(&src.r("app:v1"), &dst.r("app:v1"))],
    );
    let out = regsync(&["once"], &cfg);
    out.assert_fail();
    assert!(
        !out.logs("Failed to run credential helper").is_empty(),
        "{}",
        out.dump()
    );
    assert!(manifest_digest(&dst, "app", "v1").is_none());
}

#[test]
fn docker_config_auths() {
    let src = Registry::with_auth("dockeruser", "docker-pw-4");
    let dst = Registry::with_auth("dstuser", "dst-pw-4");
    push(&src, "app", "v1", &oci_image(930));
    // `http://` key: TLS disabled without any creds entry; bare key with base64 auth.
    let dc = docker_config(serde_json::json!({
        "auths": {
            format!("http://{}", src.host()): {"username": "dockeruser", "password": "docker-pw-4"},
            dst.host(): {"auth": b64("dstuser:dst-pw-4")},
        }
    }));
    let cfg = config_with(
        &[plain(&dst.host())],
        "",
        &[image_step(&src.r("app:v1"), &dst.r("app:v1"))],
    );
    regsync_env(
        &["once"],
        &cfg,
        &[("DOCKER_CONFIG", dc.path().to_str().unwrap())],
    )
    .assert_ok();
    assert_same_image(&src, &dst, "app", "v1");
}

#[test]
fn docker_auth_config_env() {
    let src = Registry::with_auth("envuser", "env-pw-5");
    let dst = Registry::start();
    push(&src, "app", "v1", &docker_image(940));
    let env = serde_json::json!({"auths": {src.host(): {"auth": b64("envuser:env-pw-5")}}});
    let cfg = config_with(
        &[plain(&src.host()), plain(&dst.host())],
        "",
        &[image_step(&src.r("app:v1"), &dst.r("app:v1"))],
    );
    regsync_env(&["once"], &cfg, &[("DOCKER_AUTH_CONFIG", &env.to_string())]).assert_ok();
    assert_same_image(&src, &dst, "app", "v1");
}

#[test]
fn docker_config_cred_helpers_on_path() {
    let src = Registry::with_auth("pathuser", "path-pw-6");
    let dst = Registry::start();
    push(&src, "app", "v1", &oci_image(950));
    let bin = tempfile::tempdir().unwrap();
    helper(
        bin.path(),
        "docker-credential-testhelper",
        "pathuser",
        "path-pw-6",
        "{}",
    );
    let dc = docker_config(serde_json::json!({
        "credHelpers": {format!("http://{}", src.host()): "testhelper"}
    }));
    let cfg = config_with(
        &[plain(&dst.host())],
        "",
        &[image_step(&src.r("app:v1"), &dst.r("app:v1"))],
    );
    regsync_env(
        &["once"],
        &cfg,
        &[
            ("DOCKER_CONFIG", dc.path().to_str().unwrap()),
            ("PATH", &path_with(bin.path())),
        ],
    )
    .assert_ok();
    assert_same_image(&src, &dst, "app", "v1");
    // The helper gets the key as written (credHost) for an `http://` key.
    assert_eq!(calls(bin.path()), [format!("get http://{}", src.host())]);
}

#[test]
fn docker_config_creds_store() {
    let src = Registry::with_auth("storeuser", "store-pw-7");
    let dst = Registry::start();
    push(&src, "app", "v1", &oci_image(960));
    let bin = tempfile::tempdir().unwrap();
    let list = format!(r#"{{"{}":"storeuser"}}"#, src.host());
    helper(
        bin.path(),
        "docker-credential-teststore",
        "storeuser",
        "store-pw-7",
        &list,
    );
    let dc = docker_config(serde_json::json!({"credsStore": "teststore"}));
    let cfg = config_with(
        &[plain(&src.host()), plain(&dst.host())],
        "",
        &[image_step(&src.r("app:v1"), &dst.r("app:v1"))],
    );
    regsync_env(
        &["once"],
        &cfg,
        &[
            ("DOCKER_CONFIG", dc.path().to_str().unwrap()),
            ("PATH", &path_with(bin.path())),
        ],
    )
    .assert_ok();
    assert_same_image(&src, &dst, "app", "v1");
    assert_eq!(
        calls(bin.path()),
        ["list ".to_string(), format!("get {}", src.host())]
    );
}

#[test]
fn skip_docker_config_ignores_config_json() {
    let src = Registry::with_auth("skipuser", "skip-pw-8");
    let dst = Registry::start();
    push(&src, "app", "v1", &oci_image(970));
    let dc = docker_config(serde_json::json!({
        "auths": {src.host(): {"auth": b64("skipuser:skip-pw-8")}}
    }));
    let env = [("DOCKER_CONFIG", dc.path().to_str().unwrap())];
    let step = [image_step(&src.r("app:v1"), &dst.r("app:v1"))];
    let creds = [plain(&src.host()), plain(&dst.host())];

    let out = regsync_env(
        &["once"],
        &config_with(&creds, "skipDockerConfig: true", &step),
        &env,
    );
    out.assert_fail();
    let line = out.assert_one_error_line(&["app:v1"]);
    assert!(line.contains("unauthorized"), "{line}\n{}", out.dump());

    // The same config without the flag uses the credentials.
    regsync_env(&["once"], &config_with(&creds, "", &step), &env).assert_ok();
    assert_same_image(&src, &dst, "app", "v1");
}

#[test]
fn creds_entry_overrides_docker_config() {
    let src = Registry::with_auth("right", "right-pw-9");
    let dst = Registry::start();
    push(&src, "app", "v1", &oci_image(980));
    let dc = docker_config(serde_json::json!({
        "auths": {src.host(): {"auth": b64("wrong:wrong-pw")}}
    }));
    let cfg = config_with(
        &[
            format!("{}user: right\npass: right-pw-9\n", plain(&src.host())),
            plain(&dst.host()),
        ],
        "",
        &[image_step(&src.r("app:v1"), &dst.r("app:v1"))],
    );
    let out = regsync_env(
        &["once"],
        &cfg,
        &[("DOCKER_CONFIG", dc.path().to_str().unwrap())],
    );
    out.assert_ok();
    assert_same_image(&src, &dst, "app", "v1");
    let w = out.logs("Changing login user for registry");
    assert_eq!(w.len(), 1, "{}", out.dump());
    assert_eq!(w[0]["level"], "WARN");
}

#[test]
fn refresh_token_post_flow() {
    let upstream = Registry::start();
    let dst = Registry::start();
    push(&upstream, "hub/app", "v1", &oci_image(990));
    let proxy = TokenProxy::start(&upstream, "alice", "alice-pw");
    // The proxy accepts `rt-<user>` as a refresh token; without user/pass a GET would be
    // anonymous and refused, so success means the POST flow was used.
    let cfg = config_with(
        &[
            format!("{}token: rt-alice\n", plain(&proxy.host())),
            plain(&dst.host()),
        ],
        "",
        &[image_step(&proxy.r("hub/app:v1"), &dst.r("hub/app:v1"))],
    );
    regsync(&["once"], &cfg).assert_ok();
    assert_same_image(&upstream, &dst, "hub/app", "v1");
    assert!(proxy.count("token") >= 1);
    assert_eq!(proxy.count("token_denied"), 0, "{:?}", proxy.counts());
}

#[test]
fn cred_helper_identity_token() {
    let upstream = Registry::start();
    let dst = Registry::start();
    push(&upstream, "hub/app", "v1", &oci_image(995));
    let proxy = TokenProxy::start(&upstream, "carol", "carol-pw");
    let dir = tempfile::tempdir().unwrap();
    let prog = helper(
        dir.path(),
        "docker-credential-tok",
        "<token>",
        "rt-carol",
        "{}",
    );
    let cfg = config_with(
        &[
            format!("{}credHelper: {}\n", plain(&proxy.host()), prog.display()),
            plain(&dst.host()),
        ],
        "",
        &[image_step(&proxy.r("hub/app:v1"), &dst.r("hub/app:v1"))],
    );
    regsync(&["once"], &cfg).assert_ok();
    assert_same_image(&upstream, &dst, "hub/app", "v1");
    assert_eq!(proxy.count("token_denied"), 0, "{:?}", proxy.counts());
}

#[test]
fn repo_auth_keeps_a_token_per_repository() {
    let upstream = Registry::start();
    let dst = Registry::start();
    push(&upstream, "one/app", "v1", &oci_image(1000));
    push(&upstream, "two/app", "v1", &oci_image(1001));
    let proxy = TokenProxy::start(&upstream, "dave", "dave-pw");
    let cfg = config_with(
        &[
            format!(
                "{}user: dave\npass: dave-pw\nrepoAuth: true\n",
                plain(&proxy.host())
            ),
            plain(&dst.host()),
        ],
        "",
        &[
            image_step(&proxy.r("one/app:v1"), &dst.r("one/app:v1")),
            image_step(&proxy.r("two/app:v1"), &dst.r("two/app:v1")),
        ],
    );
    regsync(&["once"], &cfg).assert_ok();
    assert_same_image(&upstream, &dst, "one/app", "v1");
    assert_same_image(&upstream, &dst, "two/app", "v1");
    assert!(proxy.count("token") >= 2, "{:?}", proxy.counts());
    assert_eq!(proxy.count("token_denied"), 0, "{:?}", proxy.counts());
}

#[test]
fn user_agent_is_sent() {
    let src = Registry::start();
    let dst = Registry::start();
    push(&src, "app", "v1", &oci_image(1010));
    let cfg = config_with(
        &[plain(&src.host()), plain(&dst.host())],
        "userAgent: \"my-mirror-bot/1.2\"",
        &[image_step(&src.r("app:v1"), &dst.r("app:v1"))],
    );
    regsync(&["once"], &cfg).assert_ok();
    src.access_log(); // waits for the log to be flushed
    let log = std::fs::read_to_string(src.log_path()).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("/v2/app/manifests/v1") && l.contains("my-mirror-bot/1.2")),
        "{log}"
    );
}

/// Nothing secret in stdout or stderr at `-v trace`: passwords, `base64(user:pass)`, issued
/// bearer tokens (`tok-...` from the proxy), refresh tokens and helper secrets.
#[test]
fn secrets_never_logged_at_trace() {
    let basic_src = Registry::with_auth("basicuser", "Basic-Secret-Pw-1");
    let upstream = Registry::start();
    push(&upstream, "hub/app", "v1", &oci_image(1020));
    push(&upstream, "hub/other", "v1", &oci_image(1021));
    let bearer_src = TokenProxy::start(&upstream, "beareruser", "Bearer-Secret-Pw-2");
    let refresh_src = TokenProxy::start(&upstream, "refreshuser", "Refresh-Secret-Pw-3");
    let helper_dst = Registry::with_auth("helperuser", "Helper-Secret-Pw-4");
    let dst = Registry::start();
    push(&basic_src, "b/app", "v1", &docker_image(1022));
    let dir = tempfile::tempdir().unwrap();
    let prog = helper(
        dir.path(),
        "docker-credential-secret",
        "helperuser",
        "Helper-Secret-Pw-4",
        "{}",
    );
    let cfg = config_with(
        &[
            format!(
                "{}user: basicuser\npass: Basic-Secret-Pw-1\n",
                plain(&basic_src.host())
            ),
            format!(
                "{}user: beareruser\npass: Bearer-Secret-Pw-2\n",
                plain(&bearer_src.host())
            ),
            format!("{}token: rt-refreshuser\n", plain(&refresh_src.host())),
            format!(
                "{}credHelper: {}\n",
                plain(&helper_dst.host()),
                prog.display()
            ),
            plain(&dst.host()),
        ],
        "",
        &[
            image_step(&basic_src.r("b/app:v1"), &dst.r("b/app:v1")),
            image_step(&bearer_src.r("hub/app:v1"), &helper_dst.r("hub/app:v1")),
            image_step(&refresh_src.r("hub/other:v1"), &dst.r("hub/other:v1")),
        ],
    );
    let out = regsync(&["once", "-v", "trace"], &cfg);
    out.assert_ok();
    assert_same_image(&basic_src, &dst, "b/app", "v1");
    assert_same_image(&upstream, &helper_dst, "hub/app", "v1");
    assert_same_image(&upstream, &dst, "hub/other", "v1");
    assert!(bearer_src.count("token") >= 1 && refresh_src.count("token") >= 1);
    // The run did log at trace level, so the check below means something.
    assert!(
        out.json_logs.len() > 20,
        "expected verbose output\n{}",
        out.dump()
    );

    let all = format!("{}\n{}", out.stdout, out.stderr);
    let mut secrets = vec![
        "Basic-Secret-Pw-1".to_string(),
        "Bearer-Secret-Pw-2".to_string(),
        "Refresh-Secret-Pw-3".to_string(),
        "Helper-Secret-Pw-4".to_string(),
        "rt-refreshuser".to_string(),
        "tok-".to_string(),
        "Bearer tok".to_string(),
    ];
    for (u, p) in [
        ("basicuser", "Basic-Secret-Pw-1"),
        ("beareruser", "Bearer-Secret-Pw-2"),
        ("helperuser", "Helper-Secret-Pw-4"),
    ] {
        let enc = b64(&format!("{u}:{p}"));
        secrets.push(enc.trim_end_matches('=').to_string());
    }
    for s in &secrets {
        assert!(
            !all.contains(s.as_str()),
            "secret {s:?} in the output:\n{all}"
        );
    }
    for header in ["Basic ", "Bearer "] {
        for line in all.lines() {
            if let Some(i) = line.find(header) {
                let rest = &line[i + header.len()..];
                // A challenge (`Bearer realm=`) is fine; a credential value is not.
                assert!(
                    rest.starts_with("realm") || rest.is_empty(),
                    "credential header in the output: {line}"
                );
            }
        }
    }
}
