//! Loading tests (spec §3.1, §3.6, §15.5).

use super::*;
use crate::gocompat::duration::GoDuration;
use crate::oci::media::DEFAULT_MEDIA_TYPES;
use crate::registry::Tls;

const CONFIG1: &str = r#"version: 1
creds:
  - registry: registry:5000
    tls: disabled
  - registry: docker.io
defaults:
  ratelimit:
    min: 100
    retry: 15m
  parallel: 2
  interval: 60m
  backup: "bkup-{{.Ref.Tag}}"
  cacheCount: 500
  cacheTime: "5m"
x-sync-hub: &sync-hub
  target: registry:5000/hub/{{ .Sync.Source }}
  type: image
x-sync-gcr: &sync-gcr
  target: registry:5000/gcr/{{ index (split .Sync.Source "gcr.io/") 1 }}
sync:
  - source: busybox:latest
    target: registry:5000/library/busybox:latest
    type: image
    schedule: "15 3 * * *"
  - <<: *sync-hub
    source: alpine
    type: repository
    tags:
      allow:
      - 3
      - 3.9
      - latest
  - <<: *sync-gcr
    source: gcr.io/example/repo
    type: repository
    tags:
      allow:
      - 3
      - 3.9
      - latest
"#;

const CONFIG2: &str = r#"# comment
creds:
  - registry: registry:5000
    tls: disabled
defaults:
  schedule: "15 3 * * *"
sync:
  - source: busybox:latest
    target: registry:5000/library/busybox:latest
    type: image
    interval: 12h
  - source: alpine:latest
    target: registry:5000/library/alpine:latest
    type: image
    ratelimit:
      retry: 1m
"#;

fn load(text: &str) -> Config {
    Config::from_yaml(text, "config.yml").unwrap_or_else(|e| panic!("{e}"))
}

fn load_err(text: &str) -> String {
    Config::from_yaml(text, "config.yml")
        .unwrap_err()
        .to_string()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn assert_merged_flags(s: &SyncStep) {
    for f in [
        s.digest_tags,
        s.referrers,
        s.referrer_slow,
        s.fast_check,
        s.force_recursive,
        s.include_external,
    ] {
        assert_eq!(f, Some(false));
    }
}

#[test]
fn config1() {
    let c = load(CONFIG1);
    assert_eq!(c.version, 1);
    // creds as written: no host defaults applied
    assert_eq!(c.creds.len(), 2);
    assert_eq!(c.creds[0].registry, "registry:5000");
    assert_eq!(c.creds[0].tls, "disabled");
    assert_eq!(c.creds[1].registry, "docker.io");
    assert_eq!(c.creds[1].tls, "");
    assert_eq!(c.creds[1].hostname, "");
    assert_eq!(c.creds[1].req_concurrent, 0);
    // defaults as written (durations in Go form)
    let d = &c.defaults;
    assert_eq!(d.ratelimit.min, 100);
    assert_eq!(d.ratelimit.retry, "15m0s");
    assert_eq!(d.parallel, 2);
    assert_eq!(d.interval, "1h0m0s");
    assert_eq!(d.backup, "bkup-{{.Ref.Tag}}");
    assert_eq!(d.cache_count, 500);
    assert_eq!(d.cache_time, "5m0s");
    assert_eq!(d.digest_tags, None);
    assert_eq!(c.sync.len(), 3);
    for s in &c.sync {
        assert_eq!(s.backup, "bkup-{{.Ref.Tag}}");
        assert_eq!(s.ratelimit.min, 100);
        assert_eq!(s.ratelimit.retry, "15m0s");
        assert_eq!(s.media_types[..], DEFAULT_MEDIA_TYPES);
        assert_merged_flags(s);
    }
    let a = &c.sync[0];
    assert_eq!(a.source, "busybox:latest");
    assert_eq!(a.target, "registry:5000/library/busybox:latest");
    assert_eq!(a.kind, "image");
    assert_eq!(a.schedule, "15 3 * * *");
    assert_eq!(duration_of(&a.interval), GoDuration::ZERO);
    let b = &c.sync[1];
    assert_eq!(b.source, "alpine");
    // target templates are expanded at load (spec §3.7, §15.5)
    assert_eq!(b.target, "registry:5000/hub/alpine");
    assert_eq!(b.kind, "repository", "explicit key after the merge wins");
    assert_eq!(b.tags.allow, strings(&["3", "3.9", "latest"]));
    assert_eq!(b.interval, "1h0m0s");
    assert_eq!(b.schedule, "");
    let g = &c.sync[2];
    assert_eq!(g.source, "gcr.io/example/repo");
    assert_eq!(g.target, "registry:5000/gcr/example/repo");
    assert_eq!(g.kind, "repository");
    assert_eq!(g.interval, "1h0m0s");
    assert_eq!(g.tags.allow, strings(&["3", "3.9", "latest"]));

    let (hosts, warnings) = c.hosts_with_warnings();
    assert!(warnings.is_empty());
    assert_eq!(hosts.len(), 2);
    assert_eq!(hosts[0].name, "registry:5000");
    assert_eq!(hosts[0].hostname, "registry:5000");
    assert_eq!(hosts[0].tls, Tls::Disabled);
    assert_eq!(hosts[1].name, "docker.io");
    assert_eq!(hosts[1].hostname, "registry-1.docker.io");
    assert_eq!(hosts[1].tls, Tls::Enabled);
}

#[test]
fn config2() {
    let c = load(CONFIG2);
    assert_eq!(c.version, 1);
    assert_eq!(c.defaults.ratelimit.retry, "5m0s");
    assert_eq!(c.defaults.schedule, "15 3 * * *");
    let s1 = &c.sync[0];
    assert_eq!(s1.interval, "12h0m0s");
    assert_eq!(s1.schedule, "");
    let s2 = &c.sync[1];
    assert_eq!(s2.schedule, "15 3 * * *");
    assert_eq!(duration_of(&s2.interval), GoDuration::ZERO);
    assert_eq!(s2.ratelimit.retry, "5m0s");
    for s in &c.sync {
        assert_eq!(s.ratelimit.min, 0);
        assert_eq!(s.media_types[..], DEFAULT_MEDIA_TYPES);
        assert_eq!(duration_of(&s.ratelimit.retry), GoDuration::from_mins(5));
        assert_merged_flags(s);
    }
}

#[test]
fn empty_documents() {
    for text in ["", "\n", "# only a comment\n", "---\n", "~\n"] {
        let c = load(text);
        assert_eq!(c.version, 1, "{text:?}");
        assert!(c.creds.is_empty() && c.sync.is_empty());
        assert_eq!(c.defaults.ratelimit.retry, "5m0s");
    }
}

#[test]
fn anchors_merges_and_duplicates() {
    let c = load(
        r#"
x-base: &base
  type: image
  target: t1
  tags: {allow: [a]}
x-other: &other
  target: t2
  platform: linux/amd64
x-flags: &flags
  referrers: true
sync:
  - <<: *base
    type: repository
  - type: repository
    <<: *base
  - <<: [*other, *base]
  - source: s
    source: s2
    <<: *flags
    tags: {allow: [x]}
"#,
    );
    assert_eq!(c.sync[0].kind, "repository");
    assert_eq!(c.sync[0].target, "t1");
    assert_eq!(c.sync[0].tags.allow, strings(&["a"]));
    // a merge placed after explicit keys overrides them (goccy quirk)
    assert_eq!(c.sync[1].kind, "image");
    // merge list: the first mapping wins among the list
    assert_eq!(c.sync[2].target, "t2");
    assert_eq!(c.sync[2].platform, "linux/amd64");
    assert_eq!(c.sync[2].kind, "image");
    // duplicate keys: later wins
    assert_eq!(c.sync[3].source, "s2");
    assert_eq!(c.sync[3].referrers, Some(true));
    assert_eq!(c.sync[3].tags.allow, strings(&["x"]));
}

#[test]
fn unknown_and_x_keys_ignored() {
    let c = load(
        r#"
x-anything: {foo: [1, 2]}
bogus: 3
defaults:
  typo: true
  parallel: 4
sync:
  - source: a
    x-note: hello
    whatever: {a: b}
"#,
    );
    assert_eq!(c.defaults.parallel, 4);
    assert_eq!(c.sync[0].source, "a");
}

#[test]
fn scalars_converted_to_strings() {
    let c = load(
        r#"
sync:
  - source: 1
    target: true
    type: ~
    platforms: [1.0, 2]
    tags:
      allow: [3, 3.9, 3.10, 1.0, .5, 1.5e-3, true, false, ~, 0x1F, 0o17, -7, "3.10", latest]
      deny: [1.50]
"#,
    );
    let s = &c.sync[0];
    assert_eq!(s.source, "1");
    assert_eq!(s.target, "true");
    assert_eq!(s.kind, "");
    assert_eq!(s.platforms, strings(&["1", "2"]));
    assert_eq!(
        s.tags.allow,
        strings(&[
            "3", "3.9", "3.1", "1", "0.5", "0.0015", "true", "false", "", "31", "15", "-7", "3.10",
            "latest"
        ])
    );
    assert_eq!(s.tags.deny, strings(&["1.5"]));
}

#[test]
fn numbers_and_maps() {
    let c = load(
        r#"
creds:
  - registry: 10.0.0.1:5000
    credExpire: "3600"
    reqPerSec: "2.5"
    reqConcurrent: 2.0
    priority: "7"
    apiOpts:
      disableHead: true
defaults:
  parallel: "3"
  ratelimit: {min: "10"}
  referrerFilters:
    - artifactType: 1
      annotations: {a: 1, b: true}
"#,
    );
    let e = &c.creds[0];
    assert_eq!(e.cred_expire, 3600);
    assert_eq!(e.req_per_sec, 2.5);
    assert_eq!(e.req_concurrent, 2);
    assert_eq!(e.priority, 7);
    assert_eq!(
        e.api_opts.get("disableHead").map(String::as_str),
        Some("true")
    );
    assert!(c.hosts()[0].disable_head);
    assert_eq!(c.defaults.parallel, 3);
    assert_eq!(c.defaults.ratelimit.min, 10);
    let f = &c.defaults.referrer_filters.as_ref().unwrap()[0];
    assert_eq!(f.artifact_type, "1");
    assert_eq!(f.annotations.get("a").map(String::as_str), Some("1"));
    assert_eq!(f.annotations.get("b").map(String::as_str), Some("true"));
}

#[test]
fn strict_types() {
    // booleans reject strings and YAML 1.1 words
    assert!(load_err("sync:\n  - referrers: yes\n").starts_with("config.yml: [2:16] "));
    assert!(load_err("defaults:\n  fastCheck: \"true\"\n").contains("expected a boolean"));
    // durations must be strings, even 0
    let e = load_err("defaults:\n  interval: 0\n");
    assert!(e.starts_with("config.yml: [2:13] "), "{e}");
    assert!(e.contains("duration"), "{e}");
    // credExpire is an integer
    assert!(load_err("creds:\n  - registry: x\n    credExpire: 1h\n").contains("[3:17]"));
    // a scalar where a list is expected
    assert!(load_err("sync:\n  - tags:\n      allow: abc\n").contains("[3:14]"));
}

#[test]
fn duration_syntax() {
    let c = load("defaults:\n  interval: 90s\n  cacheTime: \"0\"\nsync:\n  - source: a\n    interval: -5m\n    ratelimit: {retry: 1.5h}\n");
    assert_eq!(c.defaults.interval, "1m30s");
    assert_eq!(c.defaults.cache_time, "0s");
    assert_eq!(c.sync[0].interval, "-5m0s");
    assert_eq!(c.sync[0].ratelimit.retry, "1h30m0s");
    assert_eq!(
        load_err("sync:\n  - source: a\n  - source: alpine\n    interval: 1d\n"),
        "config.yml: sync[1] (source \"alpine\"): invalid duration \"1d\" for interval: time: unknown unit \"d\" in duration \"1d\""
    );
    assert_eq!(
        load_err("defaults:\n  ratelimit:\n    retry: \"90\"\n"),
        "config.yml: defaults: invalid duration \"90\" for ratelimit.retry: time: missing unit in duration \"90\""
    );
}

#[test]
fn version_checks() {
    assert_eq!(
        load_err("version: 2\n"),
        "config.yml: unsupported config version"
    );
    assert!(matches!(
        Config::from_yaml("version: 3", "c.yml"),
        Err(ConfigError::UnsupportedVersion { version: 3, .. })
    ));
    assert_eq!(load("version: 1").version, 1);
    assert_eq!(load("version: \"1\"").version, 1);
}

#[test]
fn tls_checks() {
    assert_eq!(
        load_err("creds:\n  - registry: x\n    tls: bogus\n"),
        "config.yml: creds[0] (registry \"x\"): unknown TLS value \"bogus\""
    );
    let c = load("creds:\n  - registry: x\n    tls: Insecure\n");
    assert_eq!(c.creds[0].tls, "insecure");
    assert_eq!(c.hosts()[0].tls, Tls::Insecure);
}

#[test]
fn bad_yaml_has_position() {
    let e = load_err("sync:\n  - source: a\n   target: b\n");
    assert!(e.starts_with("config.yml: ["), "{e}");
    assert!(!e.contains(" at line "), "{e}");
    assert!(!e.contains('\n'), "{e}");
    let e = load_err("defaults:\n  parallel: [1]\n");
    assert!(
        e.starts_with("config.yml: [2:13] defaults.parallel: invalid type: sequence"),
        "{e}"
    );
    let e = load_err("sync: {source: [}\n");
    assert!(e.starts_with("config.yml: [1:"), "{e}");
    // an error inside merged content has no position in the direct decode: no [l:c]
    let e = load_err("x: &a\n  parallel: [1]\ndefaults:\n  <<: *a\n");
    assert!(e.starts_with("config.yml: invalid type: sequence"), "{e}");
}

#[test]
fn only_first_document() {
    let c = load("sync:\n  - source: a\n---\nsync: [\n");
    assert_eq!(c.sync.len(), 1);
}

#[test]
fn load_paths() {
    assert_eq!(
        Config::load("").unwrap_err().to_string(),
        "required input missing"
    );
    assert_eq!(
        Config::load("/nonexistent/dir/x.yml")
            .unwrap_err()
            .to_string(),
        "open /nonexistent/dir/x.yml: no such file or directory"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yml");
    std::fs::write(&path, CONFIG2).unwrap();
    let c = Config::load(path.to_str().unwrap()).unwrap();
    assert_eq!(c.sync.len(), 2);
    std::fs::write(&path, "version: 2\n").unwrap();
    let p = path.to_str().unwrap();
    assert_eq!(
        Config::load(p).unwrap_err().to_string(),
        format!("{p}: unsupported config version")
    );
}

#[test]
fn parse_yaml_is_raw() {
    let c = Config::parse_yaml(CONFIG2, "c").unwrap();
    assert_eq!(c.version, 0);
    assert_eq!(c.sync[0].interval, "12h");
    assert_eq!(c.sync[0].digest_tags, None);
    assert!(c.sync[0].media_types.is_empty());
}

#[test]
fn hooks_inherited() {
    let c = load(
        "defaults:\n  hooks:\n    pre: {type: cmd, params: [a, 1]}\nsync:\n  - source: a\n  - source: b\n    hooks:\n      pre: {type: http, params: [GET, 'http://h/']}\n",
    );
    let pre = c.sync[0].hooks.pre.as_ref().unwrap();
    assert_eq!(pre.kind, "cmd");
    assert_eq!(pre.params, strings(&["a", "1"]));
    assert_eq!(c.sync[1].hooks.pre.as_ref().unwrap().kind, "http");
    assert_eq!(c.sync[1].hooks.post, None);
}

#[test]
fn strip_location_texts() {
    assert_eq!(
        strip_location("did not find x at line 3 column 4, while parsing y at line 2 column 3"),
        "did not find x, while parsing y"
    );
    assert_eq!(strip_location("at line 1 column"), "at line 1 column");
    assert_eq!(
        strip_location("a at line x column 2"),
        "a at line x column 2"
    );
}
