//! The command line of spec §2: commands, help, flags before or after the command, regsync's
//! error texts and exit codes, `config` output, `version`, `completion`. No registry needed.

use std::io::Write;
use std::process::{Command, Stdio};

fn bin() -> String {
    std::env::var("REGSYNC_TEST_BIN")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_regsync").to_string())
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run_with(args: &[&str], stdin: Option<&str>) -> Out {
    let mut child = Command::new(bin())
        .args(args)
        .env("DOCKER_CONFIG", "/nonexistent-regsync-test")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run regsync");
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    let o = Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(!o.stderr.contains("panicked"), "{}", o.stderr);
    o
}

fn run(args: &[&str]) -> Out {
    run_with(args, None)
}

/// Exit 1, nothing on stdout, exactly `expect` (plus a newline) on stderr.
fn assert_error(args: &[&str], expect: &str) {
    let o = run(args);
    assert_eq!(o.code, 1, "{args:?}: {}", o.stderr);
    assert_eq!(o.stdout, "", "{args:?}");
    assert_eq!(o.stderr, format!("{expect}\n"), "{args:?}");
}

fn write_config(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("regsync.yml");
    std::fs::write(&path, text).unwrap();
    let p = path.display().to_string();
    (dir, p)
}

#[test]
fn no_command_prints_help() {
    let o = run(&[]);
    assert_eq!(o.code, 0);
    assert_eq!(o.stderr, "");
    assert!(o
        .stdout
        .contains("Utility for mirroring docker repositories"));
    assert!(o.stdout.contains("Usage:"));
    for cmd in [
        "check",
        "completion",
        "config",
        "help",
        "once",
        "server",
        "version",
    ] {
        assert!(
            o.stdout.contains(&format!("\n  {cmd} ")),
            "{cmd}: {}",
            o.stdout
        );
    }
    // an invalid verbosity does not matter without a command (cobra prints the help)
    assert_eq!(run(&["-v", "loud"]).code, 0);
}

#[test]
fn help_on_stdout() {
    for args in [
        vec!["--help"],
        vec!["-h"],
        vec!["help"],
        vec!["help", "once"],
        vec!["once", "--help"],
        vec!["-c", "x.yml", "check", "-h"],
        vec!["completion"],
    ] {
        let o = run(&args);
        assert_eq!(o.code, 0, "{args:?}: {}", o.stderr);
        assert!(o.stdout.contains("Usage:"), "{args:?}: {}", o.stdout);
        assert_eq!(o.stderr, "", "{args:?}");
    }
    assert!(run(&["help", "once"]).stdout.contains("--missing"));
    assert!(run(&["version", "--help"]).stdout.contains("--format"));
}

#[test]
fn regsync_error_texts_and_exit_codes() {
    assert_error(&["once"], "required flag(s) \"config\" not set");
    assert_error(&["check"], "required flag(s) \"config\" not set");
    assert_error(&["config"], "required flag(s) \"config\" not set");
    assert_error(&["server"], "required flag(s) \"config\" not set");
    assert_error(&["once", "--x"], "unknown flag: --x");
    assert_error(&["--x", "once"], "unknown flag: --x");
    assert_error(&["foo"], "unknown command \"foo\" for \"regsync\"");
    assert_error(
        &["once", "extra", "-c", "x.yml"],
        "accepts between 0 and 0 arg(s), received 1",
    );
    assert_error(
        &["config", "a", "b", "-c", "x.yml"],
        "accepts between 0 and 0 arg(s), received 2",
    );
    assert_error(&["version", "extra"], "accepts 0 arg(s), received 1");
    assert_error(
        &["-v", "TRACE", "version"],
        "unable to parse verbosity TRACE: slog: level string \"TRACE\": unknown name",
    );
    assert_error(&["-c", "", "config"], "required input missing");
    assert_error(
        &["-c", "/nonexistent/regsync.yml", "config"],
        "open /nonexistent/regsync.yml: no such file or directory",
    );
    // the verbosity is checked before the required -c, the arguments before both
    assert_error(
        &["-v", "nope", "once"],
        "unable to parse verbosity nope: slog: level string \"nope\": unknown name",
    );
    assert_error(
        &["-v", "nope", "once", "x"],
        "accepts between 0 and 0 arg(s), received 1",
    );
}

#[test]
fn verbosity_levels() {
    for v in [
        "trace", "debug", "info", "warn", "error", "INFO", "info+2", "debug-1",
    ] {
        let o = run(&["-v", v, "version", "--format", "ok"]);
        assert_eq!((o.code, o.stdout.as_str()), (0, "ok"), "{v}: {}", o.stderr);
    }
}

const SAMPLE: &str = r#"
version: 1
creds:
  - registry: registry:5000
    tls: disabled
    user: admin
    pass: "s3cr3t"
  - registry: docker.io
    mirrors: [mirror.example.com]
    apiOpts:
      disableHead: "true"
defaults:
  parallel: 2
  interval: 60m
  referrers: true
  ratelimit:
    min: 100
x-hub: &hub
  target: registry:5000/hub/{{ .Sync.Source }}
  type: image
sync:
  - <<: *hub
    source: alpine:3
    fastCheck: true
  - source: gcr.io/example/repo
    target: registry:5000/gcr/example/repo
    type: repository
    tags:
      allow: [latest, 3.10, "v1.*"]
      semverRange: [">=1.0.0"]
    hooks:
      post:
        type: cmd
        params: [echo]
"#;

const SAMPLE_OUT: &str = r#"version: 1
creds:
- registry: registry:5000
  tls: disabled
  regcert: ""
  clientCert: ""
  clientKey: ""
  hostname: ""
  user: admin
  pass: s3cr3t
  token: ""
  credHelper: ""
  credExpire: 0
  credHost: ""
  pathPrefix: ""
  mirrors: []
  priority: 0
  repoAuth: false
  api: ""
  apiOpts: {}
  blobChunk: 0
  blobMax: 0
  reqPerSec: 0.0
  reqConcurrent: 0
  scheme: ""
- registry: docker.io
  tls: ""
  regcert: ""
  clientCert: ""
  clientKey: ""
  hostname: ""
  user: ""
  pass: ""
  token: ""
  credHelper: ""
  credExpire: 0
  credHost: ""
  pathPrefix: ""
  mirrors:
  - mirror.example.com
  priority: 0
  repoAuth: false
  api: ""
  apiOpts:
    disableHead: "true"
  blobChunk: 0
  blobMax: 0
  reqPerSec: 0.0
  reqConcurrent: 0
  scheme: ""
defaults:
  backup: ""
  interval: 1h0m0s
  schedule: ""
  ratelimit:
    min: 100
    retry: 5m0s
  parallel: 2
  digestTags: null
  referrers: true
  referrerFilters: []
  referrerSource: ""
  referrerTarget: ""
  referrerSlow: null
  fastCheck: null
  forceRecursive: null
  includeExternal: null
  mediaTypes: []
  hooks:
    pre: null
    post: null
    unchanged: null
  blobLimit: 0
  cacheCount: 0
  cacheTime: 0s
  skipDockerConfig: false
  userAgent: ""
  cleanupTags: null
  cleanupTagsExclude: null
  cleanupTagsMaxPercent: null
sync:
- source: alpine:3
  target: registry:5000/hub/alpine:3
  type: image
  tags:
    allow: []
    deny: []
  tagSets: []
  repos:
    allow: []
    deny: []
  digestTags: false
  referrers: true
  referrerFilters: []
  referrerSource: ""
  referrerTarget: ""
  referrerSlow: false
  platform: ""
  platforms: []
  fastCheck: true
  forceRecursive: false
  includeExternal: false
  backup: ""
  interval: 1h0m0s
  schedule: ""
  ratelimit:
    min: 100
    retry: 5m0s
  mediaTypes:
  - application/vnd.docker.distribution.manifest.v2+json
  - application/vnd.docker.distribution.manifest.list.v2+json
  - application/vnd.oci.image.manifest.v1+json
  - application/vnd.oci.image.index.v1+json
  hooks:
    pre: null
    post: null
    unchanged: null
  cleanupTags: false
  cleanupTagsExclude:
  - ".*\\.sig$"
  - ".*\\.att$"
  - ".*\\.sbom$"
  cleanupTagsMaxPercent: 25
- source: gcr.io/example/repo
  target: registry:5000/gcr/example/repo
  type: repository
  tags:
    allow:
    - latest
    - "3.1"
    - v1.*
    deny: []
    semverRange:
    - ">=1.0.0"
  tagSets: []
  repos:
    allow: []
    deny: []
  digestTags: false
  referrers: true
  referrerFilters: []
  referrerSource: ""
  referrerTarget: ""
  referrerSlow: false
  platform: ""
  platforms: []
  fastCheck: false
  forceRecursive: false
  includeExternal: false
  backup: ""
  interval: 1h0m0s
  schedule: ""
  ratelimit:
    min: 100
    retry: 5m0s
  mediaTypes:
  - application/vnd.docker.distribution.manifest.v2+json
  - application/vnd.docker.distribution.manifest.list.v2+json
  - application/vnd.oci.image.manifest.v1+json
  - application/vnd.oci.image.index.v1+json
  hooks:
    pre: null
    post:
      type: cmd
      params:
      - echo
    unchanged: null
  cleanupTags: false
  cleanupTagsExclude:
  - ".*\\.sig$"
  - ".*\\.att$"
  - ".*\\.sbom$"
  cleanupTagsMaxPercent: 25
"#;

#[test]
fn config_output() {
    let (_dir, path) = write_config(SAMPLE);
    let o = run(&["config", "-c", &path]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(o.stderr, "");
    assert_eq!(o.stdout, SAMPLE_OUT);
    // flags before the command, and stdin
    let before = run(&["-c", &path, "-v", "debug", "config"]);
    assert_eq!(before.stdout, SAMPLE_OUT);
    let stdin = run_with(&["config", "-c", "-"], Some(SAMPLE));
    assert_eq!(stdin.stdout, SAMPLE_OUT);
    // an empty stdin is an empty config
    let empty = run_with(&["config", "-c", "-"], Some(""));
    assert_eq!(empty.code, 0);
    assert!(empty
        .stdout
        .starts_with("version: 1\ncreds: []\ndefaults:\n"));
    assert!(empty.stdout.ends_with("sync: []\n"));
}

#[test]
fn config_errors_are_one_line() {
    let (_dir, path) = write_config("version: 2\n");
    let o = run(&["config", "-c", &path]);
    assert_eq!(o.code, 1);
    assert_eq!(o.stderr, format!("{path}: unsupported config version\n"));
    let (_dir2, path2) = write_config("creds:\n  - registry: r\n    tls: bogus\n");
    let o = run(&["config", "-c", &path2]);
    assert_eq!(o.code, 1);
    assert_eq!(o.stderr.lines().count(), 1, "{}", o.stderr);
    assert!(
        o.stderr.contains("unknown TLS value \"bogus\""),
        "{}",
        o.stderr
    );
}

#[test]
fn version_output() {
    let o = run(&["version"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let names: Vec<&str> = o
        .stdout
        .lines()
        .map(|l| l.split(':').next().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "VCSTag",
            "VCSRef",
            "VCSCommit",
            "VCSState",
            "VCSDate",
            "Platform",
            "GoVer",
            "GoCompiler"
        ]
    );
    // aligned values
    let cols: Vec<usize> = o
        .stdout
        .lines()
        .map(|l| l.len() - l.split_at(12).1.trim_start().len())
        .collect();
    assert!(cols.iter().all(|c| *c == 12), "{}", o.stdout);
    assert!(o.stdout.ends_with('\n'));

    let tag = run(&["version", "--format", "{{.VCSTag}}"]);
    assert_eq!(tag.code, 0);
    assert!(!tag.stdout.is_empty());
    assert!(!tag.stdout.ends_with('\n'), "{:?}", tag.stdout);
    assert_eq!(tag.stdout, o.stdout.lines().next().unwrap()[12..]);

    let json = run(&["version", "--format", "{{json .}}"]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    for key in [
        "goVersion",
        "goCompiler",
        "platform",
        "vcsCommit",
        "vcsDate",
        "vcsRef",
        "vcsState",
        "vcsTag",
    ] {
        assert!(v.get(key).is_some_and(|x| x.is_string()), "{key}: {v}");
    }
    let bad = run(&["version", "--format", "{{ .Nope }}"]);
    assert_eq!(bad.code, 1);
    assert_eq!(bad.stderr.lines().count(), 1);
}

#[test]
fn completion_scripts() {
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let o = run(&["completion", shell]);
        assert_eq!(o.code, 0, "{shell}: {}", o.stderr);
        assert!(o.stdout.len() > 200, "{shell}");
        assert!(o.stdout.contains("regsync"), "{shell}");
    }
    assert!(run(&["completion", "bash"]).stdout.contains("once"));
    assert_error(
        &["completion", "nosuchshell"],
        "unknown command \"nosuchshell\" for \"regsync completion\"",
    );
}

/// The build script is rerun on a new commit or checkout, also in a linked worktree (where
/// `.git` is a file naming the repository): it watches that worktree's `HEAD` and the branch
/// it names, or `regsync version` keeps naming the commit of the first build there. Checked
/// on the script itself, compiled alone (it needs nothing but std), run in a worktree of a
/// scratch repository that tracks it.
#[test]
fn the_build_script_watches_head_and_branch_in_a_linked_worktree() {
    let tmp = tempfile::tempdir().unwrap();
    let script = build_script(tmp.path());
    let repo = tmp.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    std::fs::copy(manifest_dir().join("build.rs"), repo.join("build.rs")).unwrap();
    scratch_git(&repo, &["init", "-q", "-b", "main"]);
    scratch_git(&repo, &["add", "build.rs"]);
    scratch_git(&repo, &["commit", "-q", "-m", "one"]);
    scratch_git(&repo, &["worktree", "add", "-q", "-b", "side", "../wt"]);
    let wt = tmp.path().join("wt");

    let out = run_build_script(&script, &wt);
    let watched: Vec<std::path::PathBuf> = out
        .lines()
        .filter_map(|l| l.strip_prefix("cargo:rerun-if-changed="))
        .map(|p| std::fs::canonicalize(wt.join(p)).unwrap_or_else(|_| wt.join(p)))
        .collect();
    let repo = std::fs::canonicalize(&repo).unwrap();
    for want in [
        repo.join(".git/worktrees/wt/HEAD"),
        repo.join(".git/refs/heads/side"),
    ] {
        assert!(watched.contains(&want), "{want:?} not watched: {watched:?}");
    }
    assert!(
        out.lines()
            .any(|l| l.starts_with("cargo:rustc-env=REGSYNC_VCS_COMMIT=") && l.len() > 40),
        "{out}"
    );
}

/// Sources that another repository encloses without tracking them (a crate unpacked inside
/// a home directory kept in git, say) are not that repository's commit: the version names
/// no commit, and the script watches none of its files.
#[test]
fn the_build_script_ignores_a_repository_that_does_not_track_it() {
    let tmp = tempfile::tempdir().unwrap();
    let script = build_script(tmp.path());
    let home = tmp.path().join("home");
    let krate = home.join("src/regsync-rs");
    std::fs::create_dir_all(&krate).unwrap();
    std::fs::write(home.join("dotfile"), "x").unwrap();
    scratch_git(&home, &["init", "-q", "-b", "main"]);
    scratch_git(&home, &["add", "dotfile"]);
    scratch_git(&home, &["commit", "-q", "-m", "one"]);
    std::fs::copy(manifest_dir().join("build.rs"), krate.join("build.rs")).unwrap();

    let out = run_build_script(&script, &krate);
    assert!(
        out.lines()
            .any(|l| l == "cargo:rustc-env=REGSYNC_VCS_COMMIT="),
        "the enclosing repository's commit was taken:\n{out}"
    );
    let watched: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("cargo:rerun-if-changed="))
        .collect();
    assert_eq!(watched, ["build.rs"], "{out}");
}

fn manifest_dir() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A git command in a scratch repository, isolated from the caller's git: no `GIT_*`
/// variables (a hook running the tests sets `GIT_INDEX_FILE`, say), no global or system
/// configuration (commit signing, another ref format).
fn git_isolated(cmd: &mut Command) -> &mut Command {
    for (k, _) in std::env::vars() {
        if k.starts_with("GIT_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
}

fn scratch_git(dir: &std::path::Path, args: &[&str]) {
    let out = git_isolated(Command::new("git").args(["-c", "user.name=t", "-c", "user.email=t@t"]))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert_ran(&out, &format!("git {args:?}"));
}

/// `out` is that of a command that succeeded (`what` names it, with its stderr, if not).
fn assert_ran(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `build.rs` compiled alone into `dir`.
fn build_script(dir: &std::path::Path) -> std::path::PathBuf {
    let script = dir.join("build-script");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let built = Command::new(rustc)
        .args(["--edition", "2021", "-O", "-o"])
        .arg(&script)
        .arg(manifest_dir().join("build.rs"))
        .output()
        .unwrap();
    assert_ran(&built, "rustc build.rs");
    script
}

/// What the build script prints, run in `dir` (with git isolated as in [`scratch_git`]).
fn run_build_script(script: &std::path::Path, dir: &std::path::Path) -> String {
    let out = git_isolated(&mut Command::new(script))
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}
