//! The real-world configs in `config-examples/` (spec §3, §4): each one loads with
//! `regsync config -c FILE` (exit 0) given the environment and secret files its header comment
//! documents, and the printed YAML holds the processed values: templates expanded, secrets read
//! from their files, defaults merged (`ratelimit.retry` raised to 5m, the four default media
//! types, the six step booleans materialised), anchors and `<<:` merges resolved.
//!
//! Every `*.yml` there must have a check here: a new example without one fails
//! `every_example_is_checked`.

use serde_yaml::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn bin() -> String {
    std::env::var("REGSYNC_TEST_BIN")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_regsync").to_string())
}

/// Runs against another binary (the Go regsync)? Then deliberate differences are skipped.
fn is_other_binary() -> bool {
    std::env::var("REGSYNC_TEST_BIN").is_ok_and(|s| !s.is_empty())
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn examples_dir() -> PathBuf {
    repo_root().join("config-examples")
}

/// The examples that have a dedicated test below (file names in `config-examples/`).
const CHECKED: &[&str] = &[
    "airgap-export.yml",
    "airgap-import.yml",
    "anchors-merges.yml",
    "cloud-registries.yml",
    "dockerhub-mirror.yml",
    "quickstart.yml",
    "whole-registry.yml",
];

/// Secret files the examples read from `$REGSYNC_SECRETS`.
const SECRET_FILES: &[&str] = &[
    "hub_token",
    "mirror_pass",
    "quay_robot_token",
    "registry_pass",
    "internal_pass",
];

const CA_PEM: &str = "-----BEGIN CERTIFICATE-----\n\
MIIBdzCCAR2gAwIBAgIUexampleexampleexampleexampleMAoGCCqGSM49BAMC\n\
-----END CERTIFICATE-----";

/// What the test writes into secret file `name` (with surrounding whitespace, which `file`
/// trims).
fn secret(name: &str) -> String {
    format!("s3cr3t-{name}")
}

/// Environment variables the examples document, with the values the test gives them.
const ENV: &[(&str, &str)] = &[
    ("HUB_USER", "hubuser"),
    ("GHCR_USER", "octocat"),
    ("GHCR_TOKEN", "ghp_exampletoken"),
    ("MIRROR_REGISTRY", "mirror.example.com"),
    ("MIRROR_PASS", "mirror-pass-from-env"),
    ("OLD_REGISTRY_USER", "olduser"),
    ("OLD_REGISTRY_PASS", "oldpass"),
];

/// A scratch directory with the secret files and the air-gap directory.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let secrets = dir.path().join("secrets");
        std::fs::create_dir(&secrets).unwrap();
        for name in SECRET_FILES {
            std::fs::write(secrets.join(name), format!("{}\n", secret(name))).unwrap();
        }
        std::fs::write(secrets.join("corp-ca.pem"), format!("{CA_PEM}\n")).unwrap();
        Fixture { dir }
    }

    fn secrets(&self) -> PathBuf {
        self.dir.path().join("secrets")
    }

    fn airgap(&self) -> PathBuf {
        self.dir.path().join("airgap")
    }

    /// The full documented environment.
    fn env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = ENV
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.push((
            "REGSYNC_SECRETS".into(),
            self.secrets().display().to_string(),
        ));
        env.push(("AIRGAP_DIR".into(), self.airgap().display().to_string()));
        env
    }
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn yaml(&self) -> Value {
        assert_eq!(self.code, 0, "exit status; stderr:\n{}", self.stderr);
        serde_yaml::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("printed config is not YAML: {e}\n{}", self.stdout))
    }
}

/// `regsync config -c config-examples/<file>` from the repository root, with only `env` (plus
/// `PATH` and a scratch `HOME`) in the environment.
fn config(file: &str, env: &[(String, String)], home: &Path) -> Out {
    let path = Path::new("config-examples").join(file);
    let mut cmd = Command::new(bin());
    cmd.args(["config", "-c"])
        .arg(&path)
        .current_dir(repo_root())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null());
    let out = cmd.output().expect("run regsync");
    let o = Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(!o.stderr.contains("panicked"), "{}", o.stderr);
    o
}

/// Loads an example with the full documented environment and returns the printed config.
fn load(file: &str) -> Value {
    let fx = Fixture::new();
    config(file, &fx.env(), fx.dir.path()).yaml()
}

/// `v` at a dotted path: mapping keys and sequence indexes (`sync.0.ratelimit.retry`).
fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    let mut cur = v;
    for part in path.split('.') {
        let next = match part.parse::<usize>() {
            Ok(i) if cur.is_sequence() => cur.get(i),
            _ => cur.get(part),
        };
        cur = next.unwrap_or_else(|| panic!("no {path:?} (at {part:?}) in:\n{v:?}"));
    }
    cur
}

fn s<'a>(v: &'a Value, path: &str) -> &'a str {
    at(v, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path} is not a string: {:?}", at(v, path)))
}

fn b(v: &Value, path: &str) -> bool {
    at(v, path)
        .as_bool()
        .unwrap_or_else(|| panic!("{path} is not a boolean: {:?}", at(v, path)))
}

fn i(v: &Value, path: &str) -> i64 {
    at(v, path)
        .as_i64()
        .unwrap_or_else(|| panic!("{path} is not an integer: {:?}", at(v, path)))
}

fn strs(v: &Value, path: &str) -> Vec<String> {
    at(v, path)
        .as_sequence()
        .unwrap_or_else(|| panic!("{path} is not a list: {:?}", at(v, path)))
        .iter()
        .map(|x| {
            x.as_str()
                .unwrap_or_else(|| panic!("{path} holds a non-string: {x:?}"))
                .to_string()
        })
        .collect()
}

fn steps(v: &Value) -> &Vec<Value> {
    at(v, "sync").as_sequence().expect("sync is a list")
}

fn creds(v: &Value) -> &Vec<Value> {
    at(v, "creds").as_sequence().expect("creds is a list")
}

/// The creds entry for `registry`.
fn cred<'a>(v: &'a Value, registry: &str) -> &'a Value {
    creds(v)
        .iter()
        .find(|c| c.get("registry").and_then(Value::as_str) == Some(registry))
        .unwrap_or_else(|| panic!("no creds entry for {registry}"))
}

const DEFAULT_MEDIA_TYPES: [&str; 4] = [
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
];

const STEP_BOOLS: [&str; 6] = [
    "digestTags",
    "referrers",
    "referrerSlow",
    "fastCheck",
    "forceRecursive",
    "includeExternal",
];

fn yml_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(examples_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yml") || n.ends_with(".yaml"))
        .collect();
    files.sort();
    files
}

/// A Go duration as printed by `config` (`1h0m0s`, `5m0s`, `0s`) in seconds.
fn seconds(d: &str) -> f64 {
    let mut total = 0.0;
    let mut num = String::new();
    let mut chars = d.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        while let Some(&n) = chars.peek() {
            if n.is_ascii_digit() {
                break;
            }
            unit.push(n);
            chars.next();
        }
        let n: f64 = num.parse().unwrap_or_else(|_| panic!("duration {d:?}"));
        num.clear();
        total += n * match unit.as_str() {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => panic!("duration {d:?}: unit {unit:?}"),
        };
    }
    assert!(num.is_empty(), "duration {d:?}");
    total
}

#[test]
fn every_example_is_checked() {
    assert_eq!(
        yml_files(),
        CHECKED,
        "config-examples/ changed: give each example a test in tests/config_examples.rs"
    );
}

/// What holds for every example: loads, version 1, each step fully merged, no template left in
/// the load-time fields.
#[test]
fn every_example_loads_and_prints_merged_steps() {
    let fx = Fixture::new();
    for file in yml_files() {
        let out = config(&file, &fx.env(), fx.dir.path());
        assert_eq!(out.code, 0, "{file}: {}", out.stderr);
        let v = out.yaml();
        assert_eq!(i(&v, "version"), 1, "{file}");
        assert!(
            seconds(s(&v, "defaults.ratelimit.retry")) >= 300.0,
            "{file}: defaults.ratelimit.retry"
        );
        for c in creds(&v) {
            for key in ["registry", "user", "pass", "regcert"] {
                let text = c.get(key).and_then(Value::as_str).unwrap_or("");
                assert!(
                    !text.contains("{{"),
                    "{file}: creds {key} not expanded: {text}"
                );
            }
        }
        assert!(!steps(&v).is_empty(), "{file}: no steps");
        for (n, step) in steps(&v).iter().enumerate() {
            let ctx = format!("{file}: sync[{n}]");
            for key in ["source", "target"] {
                let text = s(step, key);
                assert!(
                    !text.is_empty() && !text.contains("{{"),
                    "{ctx}: {key} {text:?}"
                );
            }
            let ty = s(step, "type");
            assert!(
                ["image", "repository", "registry"].contains(&ty),
                "{ctx}: type {ty}"
            );
            for key in STEP_BOOLS {
                b(step, key);
            }
            assert!(
                seconds(s(step, "ratelimit.retry")) >= 300.0,
                "{ctx}: ratelimit.retry {}",
                s(step, "ratelimit.retry")
            );
            let media = strs(step, "mediaTypes");
            for m in DEFAULT_MEDIA_TYPES {
                assert!(media.iter().any(|x| x == m), "{ctx}: mediaTypes {media:?}");
            }
        }
    }
}

#[test]
fn quickstart() {
    let v = load("quickstart.yml");
    assert_eq!(i(&v, "defaults.parallel"), 2);
    assert_eq!(
        s(&v, "sync.0.source"),
        "ocidir://config-examples/quickstart/hello"
    );
    assert_eq!(s(&v, "sync.0.target"), "ocidir://mirror/hello");
    assert_eq!(s(&v, "sync.0.ratelimit.retry"), "5m0s");
    assert!(!b(&v, "sync.0.referrers"));
}

#[test]
fn dockerhub_mirror() {
    let v = load("dockerhub-mirror.yml");
    // secrets: env and files, whitespace trimmed
    let hub = cred(&v, "docker.io");
    assert_eq!(s(hub, "user"), "hubuser");
    assert_eq!(s(hub, "pass"), secret("hub_token"));
    let mirror = cred(&v, "registry.example.org:5000");
    assert_eq!(s(mirror, "pass"), secret("mirror_pass"));
    assert_eq!(i(mirror, "reqConcurrent"), 4);
    // creds are printed as written: no host defaults filled in
    assert_eq!(i(hub, "reqConcurrent"), 0);
    assert_eq!(s(hub, "tls"), "");

    assert_eq!(s(&v, "defaults.interval"), "6h0m0s");
    assert_eq!(s(&v, "defaults.ratelimit.retry"), "15m0s");
    assert_eq!(i(&v, "defaults.ratelimit.min"), 50);
    let st = steps(&v);
    assert_eq!(st.len(), 3);
    // the anchor's type and deny list, the step's own allow list
    assert_eq!(s(&st[0], "type"), "repository");
    assert_eq!(s(&st[0], "target"), "registry.example.org:5000/hub/alpine");
    assert_eq!(strs(&st[0], "tags.allow"), ["3\\.2[0-9]", "latest"]);
    // the anchor's deny list merged into the step's own `tags`
    let deny = ["latest-rc.*", ".*-windows.*"];
    assert_eq!(strs(&st[0], "tags.deny"), deny);
    assert_eq!(strs(&st[1], "tags.semverRange"), [">=1.27.0"]);
    assert_eq!(strs(&st[1], "tags.deny"), deny);
    // inherited from defaults; backup stays a template until copy time
    for step in &st[..2] {
        assert_eq!(s(step, "interval"), "6h0m0s");
        assert_eq!(s(step, "backup"), "bkup-{{ .Ref.Tag }}");
        assert_eq!(i(step, "ratelimit.min"), 50);
        assert_eq!(s(step, "ratelimit.retry"), "15m0s");
        assert_eq!(strs(step, "mediaTypes"), DEFAULT_MEDIA_TYPES);
        for key in STEP_BOOLS {
            assert!(!b(step, key), "{key}");
        }
    }
    // a step's own retry below 5m is raised to 5m; its own min is kept
    assert_eq!(s(&st[2], "type"), "image");
    assert_eq!(s(&st[2], "ratelimit.retry"), "5m0s");
    assert_eq!(i(&st[2], "ratelimit.min"), 10);
    assert_eq!(s(&st[2], "backup"), "bkup-{{ .Ref.Tag }}");
}

#[test]
fn cloud_registries() {
    let v = load("cloud-registries.yml");
    assert_eq!(s(cred(&v, "ghcr.io"), "user"), "octocat");
    assert_eq!(s(cred(&v, "ghcr.io"), "pass"), "ghp_exampletoken");
    assert_eq!(s(cred(&v, "quay.io"), "pass"), secret("quay_robot_token"));
    // the registry name itself is a template
    let mirror = cred(&v, "mirror.example.com");
    assert_eq!(s(mirror, "pass"), secret("mirror_pass"));
    assert_eq!(i(mirror, "reqConcurrent"), 8);

    let st = steps(&v);
    let targets: Vec<&str> = st.iter().map(|x| s(x, "target")).collect();
    assert_eq!(
        targets,
        [
            "mirror.example.com/ghcr/fluxcd/source-controller",
            "mirror.example.com/ghcr/external-secrets/external-secrets",
            "mirror.example.com/quay/prometheus/node-exporter",
            "mirror.example.com/quay/jetstack/cert-manager-controller",
            "mirror.example.com/gcr/distroless/static-debian12",
            "mirror.example.com/registry.k8s.io/pause:3.10",
        ]
    );
    let deny = [".*-rc.*", ".*-beta.*", ".*-alpha.*"];
    // `<<: *no-prereleases` inside `tags`, plus the step's own semverRange / allow
    assert_eq!(strs(&st[0], "tags.deny"), deny);
    assert_eq!(strs(&st[0], "tags.semverRange"), [">=1.4.0"]);
    assert_eq!(strs(&st[1], "tags.allow"), ["v0\\.1[0-9]\\.[0-9]+"]);
    assert_eq!(strs(&st[2], "tags.deny"), deny);
    assert_eq!(strs(&st[2], "platforms"), ["linux/amd64", "linux/arm64"]);
    // `tags: *no-prereleases` from the x-quay anchor, untouched
    assert_eq!(strs(&st[3], "tags.deny"), deny);
    assert!(strs(&st[3], "tags.allow").is_empty());
    assert_eq!(strs(&st[4], "tags.allow"), ["latest", "nonroot"]);
    assert_eq!(s(&st[5], "type"), "image");
    for step in st {
        assert_eq!(s(step, "interval"), "12h0m0s");
        assert_eq!(s(step, "ratelimit.retry"), "5m0s");
    }
}

#[test]
fn whole_registry() {
    let v = load("whole-registry.yml");
    let old = cred(&v, "old-registry.corp.example:5000");
    assert_eq!(s(old, "tls"), "insecure");
    assert_eq!(s(old, "user"), "olduser");
    assert_eq!(s(old, "pass"), "oldpass");
    assert_eq!(at(old, "reqPerSec").as_f64(), Some(20.0));
    let new = cred(&v, "registry.corp.example");
    assert_eq!(s(new, "regcert"), CA_PEM);
    assert_eq!(s(new, "pass"), secret("registry_pass"));
    assert_eq!(i(new, "reqConcurrent"), 6);

    let st = steps(&v);
    assert_eq!(st.len(), 1);
    assert_eq!(s(&st[0], "type"), "registry");
    assert_eq!(s(&st[0], "source"), "old-registry.corp.example:5000");
    assert_eq!(s(&st[0], "target"), "registry.corp.example/legacy");
    assert_eq!(strs(&st[0], "repos.allow"), ["team-[a-z]+/.*", "base/.*"]);
    assert_eq!(strs(&st[0], "repos.deny"), [".*/scratch", "team-ci/.*"]);
    assert_eq!(strs(&st[0], "tags.deny"), ["pr-[0-9]+", ".*-SNAPSHOT"]);
    // booleans set in defaults reach the step, the others are materialised as false
    assert!(b(&st[0], "referrers"));
    assert!(b(&st[0], "digestTags"));
    assert!(!b(&st[0], "fastCheck"));
    assert!(!b(&st[0], "includeExternal"));
    assert_eq!(at(&v, "defaults.fastCheck"), &Value::Null);
    // the defaults' own media type list replaces the built-in four
    let media = strs(&st[0], "mediaTypes");
    assert_eq!(media.len(), 6);
    assert!(media.contains(&"application/vnd.docker.distribution.manifest.v1+prettyjws".into()));
    assert_eq!(s(&st[0], "interval"), "0s");
    assert_eq!(s(&st[0], "ratelimit.retry"), "5m0s");
}

#[test]
fn airgap_export_and_import() {
    let fx = Fixture::new();
    let dir = fx.airgap().display().to_string();
    let export = config("airgap-export.yml", &fx.env(), fx.dir.path()).yaml();
    let import = config("airgap-import.yml", &fx.env(), fx.dir.path()).yaml();
    let st = steps(&export);
    assert_eq!(s(&st[0], "source"), "alpine");
    assert_eq!(s(&st[0], "target"), format!("ocidir://{dir}/alpine"));
    assert_eq!(s(&st[1], "target"), format!("ocidir://{dir}/prometheus"));
    assert_eq!(s(&st[2], "target"), format!("ocidir://{dir}/pause:3.10"));
    assert_eq!(strs(&st[0], "platforms"), ["linux/amd64", "linux/arm64"]);
    assert_eq!(strs(&st[1], "tags.semverRange"), [">=3.0.0"]);
    for step in st {
        assert!(b(step, "referrers"));
        assert!(!b(step, "digestTags"));
    }
    assert!(creds(&export).is_empty());

    let st = steps(&import);
    assert_eq!(s(&st[0], "source"), format!("ocidir://{dir}/alpine"));
    assert_eq!(
        s(&st[0], "target"),
        "registry.airgap.internal/library/alpine"
    );
    assert_eq!(s(&st[2], "source"), format!("ocidir://{dir}/pause:3.10"));
    assert_eq!(
        s(cred(&import, "registry.airgap.internal"), "pass"),
        secret("internal_pass")
    );

    // AIRGAP_DIR unset: `default` supplies the documented path
    let env: Vec<(String, String)> = fx
        .env()
        .into_iter()
        .filter(|(k, _)| k != "AIRGAP_DIR")
        .collect();
    let export = config("airgap-export.yml", &env, fx.dir.path()).yaml();
    assert_eq!(
        s(&export, "sync.0.target"),
        "ocidir:///media/usb/images/alpine"
    );
    let import = config("airgap-import.yml", &env, fx.dir.path()).yaml();
    assert_eq!(
        s(&import, "sync.1.source"),
        "ocidir:///media/usb/images/prometheus"
    );
}

#[test]
fn anchors_merges() {
    let v = load("anchors-merges.yml");
    // creds from one anchor; a key after the merge overrides it
    let main = cred(&v, "registry.example.org");
    let dr = cred(&v, "registry-dr.example.org");
    for c in [main, dr] {
        assert_eq!(s(c, "user"), "regsync");
        assert_eq!(s(c, "pass"), "mirror-pass-from-env");
    }
    assert_eq!(i(main, "reqConcurrent"), 4);
    assert_eq!(i(dr, "reqConcurrent"), 2);

    let st = steps(&v);
    assert_eq!(st.len(), 4);
    // python: anchor target template, merged tag mapping, quoted numeric tags kept as text
    assert_eq!(s(&st[0], "target"), "registry.example.org/dockerhub/python");
    assert_eq!(s(&st[0], "type"), "repository");
    assert_eq!(
        strs(&st[0], "tags.allow"),
        ["3.12-slim-bookworm", "3.13-slim-bookworm", "3.10", "3.11"]
    );
    assert_eq!(
        strs(&st[0], "tags.deny"),
        [".*-rc.*", ".*beta.*", ".*alpha.*"]
    );
    assert_eq!(s(&st[0], "interval"), "6h0m0s");
    assert_eq!(s(&st[0], "schedule"), "");
    assert!(!b(&st[0], "fastCheck"));
    // node: two anchors merged; its schedule keeps the default interval away
    assert_eq!(s(&st[1], "target"), "registry.example.org/dockerhub/node");
    assert_eq!(s(&st[1], "schedule"), "15 3 * * *");
    assert_eq!(s(&st[1], "interval"), "0s");
    assert!(b(&st[1], "fastCheck"));
    let sets = at(&st[1], "tagSets").as_sequence().unwrap();
    assert_eq!(sets.len(), 2);
    assert_eq!(strs(&sets[0], "semverRange"), ["^22.0.0"]);
    assert_eq!(strs(&sets[0], "deny"), [".*-windows.*"]);
    assert_eq!(strs(&sets[1], "allow"), ["lts", "lts-alpine"]);
    // golang: `type` after the merge overrides the anchor's
    assert_eq!(s(&st[2], "type"), "image");
    assert_eq!(
        s(&st[2], "target"),
        "registry.example.org/dockerhub/golang:1.23-alpine"
    );
    // the DR copy: its own target beats the anchor's
    assert_eq!(
        s(&st[3], "target"),
        "registry-dr.example.org/dockerhub/python"
    );
    assert_eq!(strs(&st[3], "tags.allow"), ["3.13-slim-bookworm"]);
    for step in st {
        assert_eq!(i(step, "ratelimit.min"), 20);
        assert_eq!(s(step, "ratelimit.retry"), "10m0s");
    }
}

/// A secret file that is missing fails the load with one line naming the config, the creds
/// entry and the file (regsync would silently use an empty password: see README, "Differences
/// from regsync").
#[test]
fn missing_secret_file_fails_loudly() {
    if is_other_binary() {
        return;
    }
    let fx = Fixture::new();
    let empty = fx.dir.path().join("no-secrets");
    std::fs::create_dir(&empty).unwrap();
    let env: Vec<(String, String)> = fx
        .env()
        .into_iter()
        .map(|(k, v)| {
            if k == "REGSYNC_SECRETS" {
                (k, empty.display().to_string())
            } else {
                (k, v)
            }
        })
        .collect();
    let out = config("dockerhub-mirror.yml", &env, fx.dir.path());
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    let lines: Vec<&str> = out.stderr.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    let line = lines[0];
    for needle in [
        "dockerhub-mirror.yml",
        "creds[0]",
        "docker.io",
        "pass",
        &format!("{}/hub_token", empty.display()),
        "no such file or directory",
    ] {
        assert!(line.contains(needle), "{needle:?} missing in {line}");
    }
}

/// The README shows `config-examples/dockerhub-mirror.yml` verbatim.
#[test]
fn readme_shows_the_dockerhub_example_verbatim() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let file = std::fs::read_to_string(examples_dir().join("dockerhub-mirror.yml")).unwrap();
    let marker = "(`config-examples/dockerhub-mirror.yml`)";
    let at = readme.find(marker).expect("README names the example");
    let rest = &readme[at..];
    let start = rest.find("```yaml\n").expect("a yaml block follows") + "```yaml\n".len();
    let end = rest[start..].find("```").expect("the block ends") + start;
    assert_eq!(&rest[start..end], file, "README copy differs from the file");
}
