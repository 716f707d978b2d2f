//! Config templates (spec §3.7, §4) seen through `regsync config`: env, file, split, index,
//! the load-time expansion order, and bad templates failing the load with one clear line.

use std::process::{Command, Stdio};

fn bin() -> String {
    std::env::var("REGSYNC_TEST_BIN")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_regsync").to_string())
}

/// Runs against the Go regsync (`REGSYNC_TEST_BIN`)? Then deliberate differences are skipped.
fn is_other_binary() -> bool {
    std::env::var("REGSYNC_TEST_BIN").is_ok_and(|s| !s.is_empty())
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn config(yaml: &str, env: &[(&str, &str)]) -> Out {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("regsync.yml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(bin())
        .args(["config", "-c"])
        .arg(&path)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run regsync");
    let o = Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr)
            .replace(&path.display().to_string(), "regsync.yml"),
    };
    assert!(!o.stderr.contains("panicked"), "{}", o.stderr);
    o
}

/// The value printed for `key` in the `n`-th block of `section` (`creds` / `sync`).
fn value(out: &str, section: &str, n: usize, key: &str) -> String {
    let start = out
        .find(&format!("\n{section}:\n"))
        .unwrap_or_else(|| panic!("no {section} in {out}"));
    let body = &out[start + section.len() + 3..];
    let item = body
        .split("\n- ")
        .nth(n)
        .unwrap_or_else(|| panic!("no item {n}"));
    let item = item.trim_start_matches("- ");
    for line in item.lines() {
        let line = line.trim_start();
        if let Some(v) = line.strip_prefix(&format!("{key}: ")) {
            return v.to_string();
        }
    }
    panic!("no {key} in item {n} of {section}: {item}");
}

#[test]
fn env_file_split_index_expand() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("password");
    std::fs::write(&secret, "  hunter2\n").unwrap();
    let cert = dir.path().join("ca.pem");
    std::fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let yaml = format!(
        r#"
creds:
  - registry: '{{{{ env "REGSYNC_T_REGISTRY" }}}}'
    user: '{{{{ env "REGSYNC_T_USER" | default "anonymous" }}}}'
    pass: '{{{{ file "{secret}" }}}}'
    regcert: '{{{{ file "{cert}" }}}}'
    token: '{{{{ not templated }}}}'
  - registry: literal.example.com
    pass: 'p{{{{"{{{{"}}}}w'
sync:
  - source: alpine
    target: registry:5000/hub/{{{{ .Sync.Source }}}}
    type: image
  - source: gcr.io/example/repo
    target: registry:5000/gcr/{{{{ index (split .Sync.Source "gcr.io/") 1 }}}}
    referrerTarget: '{{{{ .Sync.Target }}}}'
    type: repository
  - source: '{{{{ upper "quay.io" | lower }}}}/org/app'
    target: 'registry:5000/{{{{ trimSpace " mirror " }}}}/{{{{ join (split .Sync.Source "/") "-" }}}}'
    type: repository
"#,
        secret = secret.display(),
        cert = cert.display()
    );
    let o = config(&yaml, &[("REGSYNC_T_REGISTRY", "registry:5000")]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(value(&o.stdout, "creds", 0, "registry"), "registry:5000");
    assert_eq!(value(&o.stdout, "creds", 0, "user"), "anonymous");
    assert_eq!(value(&o.stdout, "creds", 0, "pass"), "hunter2");
    assert_eq!(value(&o.stdout, "creds", 0, "regcert"), "|-");
    assert!(o.stdout.contains(
        "  regcert: |-\n    -----BEGIN CERTIFICATE-----\n    AAAA\n    -----END CERTIFICATE-----\n"
    ));
    // token is not a templated field (spec §3.3)
    assert_eq!(
        value(&o.stdout, "creds", 0, "token"),
        "\"{{ not templated }}\""
    );
    assert_eq!(value(&o.stdout, "creds", 1, "pass"), "p{{w");
    assert_eq!(
        value(&o.stdout, "sync", 0, "target"),
        "registry:5000/hub/alpine"
    );
    assert_eq!(
        value(&o.stdout, "sync", 1, "target"),
        "registry:5000/gcr/example/repo"
    );
    // regsync quirk kept: referrerTarget sees the unexpanded target
    assert_eq!(
        value(&o.stdout, "sync", 1, "referrerTarget"),
        r#"registry:5000/gcr/{{ index (split .Sync.Source "gcr.io/") 1 }}"#
    );
    assert_eq!(value(&o.stdout, "sync", 2, "source"), "quay.io/org/app");
    assert_eq!(
        value(&o.stdout, "sync", 2, "target"),
        "registry:5000/mirror/quay.io-org-app"
    );

    let with_user = config(
        &yaml,
        &[
            ("REGSYNC_T_REGISTRY", "registry:5000"),
            ("REGSYNC_T_USER", "bob"),
        ],
    );
    assert_eq!(value(&with_user.stdout, "creds", 0, "user"), "bob");
}

#[test]
fn missing_secret_file_fails_the_load() {
    if is_other_binary() {
        return; // deliberate difference: regsync yields an empty password
    }
    let o = config(
        "creds:\n  - registry: registry:5000\n    user: u\n    pass: '{{ file \"/run/secrets/regsync-test-missing\" }}'\n",
        &[],
    );
    assert_eq!(o.code, 1);
    assert_eq!(o.stdout, "");
    assert_eq!(o.stderr.lines().count(), 1, "{}", o.stderr);
    assert_eq!(
        o.stderr,
        "regsync.yml: creds[0] (registry \"registry:5000\"): pass: template: out: executing \"out\": error calling file: open /run/secrets/regsync-test-missing: no such file or directory\n"
    );
}

#[test]
fn bad_templates_fail_with_one_line() {
    let cases = [
        (
            "target: 'x/{{ .Sync.Source '",
            "regsync.yml: sync[1] (source \"b\"): target: template: out:1: ",
        ),
        (
            "target: 'x/{{ nofunc .Sync.Source }}'",
            "regsync.yml: sync[1] (source \"b\"): target: template: out:1: function \"nofunc\" not defined",
        ),
        (
            "target: 'x/{{ .Sync.Sorce }}'",
            "regsync.yml: sync[1] (source \"b\"): target: template: out: executing \"out\": can't evaluate field Sorce",
        ),
        (
            "referrerSource: '{{ index (split .Sync.Source \"/\") 5 }}'",
            "regsync.yml: sync[1] (source \"b\"): referrerSource: template: out: executing \"out\": error calling index: index out of range: 5",
        ),
    ];
    for (field, expect) in cases {
        let yaml = format!(
            "sync:\n  - source: a\n    target: t\n    type: image\n  - source: b\n    type: image\n    {field}\n"
        );
        let o = config(&yaml, &[]);
        assert_eq!(o.code, 1, "{field}");
        assert_eq!(o.stdout, "", "{field}");
        assert_eq!(o.stderr.lines().count(), 1, "{field}: {}", o.stderr);
        assert!(o.stderr.starts_with(expect), "{field}: {}", o.stderr);
    }
}
