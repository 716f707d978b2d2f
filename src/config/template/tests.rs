use super::*;
use crate::config::schema::CredsEntry;
use chrono::Datelike;

fn r(text: &str) -> String {
    render(text, Value::NoValue).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn r_err(text: &str) -> String {
    render(text, Value::NoValue).unwrap_err()
}

fn step(source: &str) -> SyncStep {
    let mut c = Config::from_yaml(
        &format!("sync:\n  - source: {source}\n    target: t\n    type: image\n"),
        "c.yml",
    )
    .unwrap();
    std::sync::Arc::unwrap_or_clone(c.sync.remove(0))
}

fn with_sync(text: &str, s: &SyncStep) -> String {
    let mut top = HashMap::new();
    top.insert("Sync".to_string(), sync_value(s));
    render(text, Value::Object(top)).unwrap_or_else(|e| panic!("{text}: {e}"))
}

#[test]
fn plain_text_and_literal_braces() {
    assert_eq!(r("registry:5000/hub"), "registry:5000/hub");
    assert_eq!(r(r#"pa{{"{{"}}ss"#), "pa{{ss");
    assert_eq!(r(r#"{{"}}"}}"#), "}}");
    assert_eq!(r("a {{- /* c */ -}} b"), "ab");
    assert_eq!(r("a  {{- \"x\" -}}\n  b"), "axb");
    assert_eq!(r("{{ . }}"), "<no value>");
}

#[test]
fn spec_examples() {
    assert_eq!(
        with_sync("registry:5000/hub/{{ .Sync.Source }}", &step("alpine")),
        "registry:5000/hub/alpine"
    );
    assert_eq!(
        with_sync(
            r#"registry:5000/gcr/{{ index (split .Sync.Source "gcr.io/") 1 }}"#,
            &step("gcr.io/example/repo")
        ),
        "registry:5000/gcr/example/repo"
    );
    let s = step("alpine");
    assert_eq!(
        with_sync("{{ .Sync.Type }} {{ .Sync.DigestTags }}", &s),
        "image false"
    );
    assert_eq!(with_sync("{{ .Sync.RateLimit.Retry }}", &s), "5m0s");
    assert_eq!(with_sync("{{ .Sync.Tags.Allow }}", &s), "[]");
    assert_eq!(with_sync("{{ len .Sync.MediaTypes }}", &s), "4");
    assert_eq!(with_sync("{{ .Sync.Hooks.Pre }}", &s), "<nil>");
    assert!(render("{{ .Sync.Nope }}", {
        let mut top = HashMap::new();
        top.insert("Sync".to_string(), sync_value(&s));
        Value::Object(top)
    })
    .unwrap_err()
    .contains("can't evaluate field Nope"));
}

#[test]
fn regclient_functions() {
    // default
    assert_eq!(r(r#"{{ default "x" "" }}"#), "x");
    assert_eq!(r(r#"{{ default "x" "y" }}"#), "y");
    assert_eq!(r(r#"{{ "" | default "d" }}"#), "d");
    assert_eq!(r(r#"{{ 0 | default 5 }}"#), "5");
    assert_eq!(r(r#"{{ default "d" .Missing }}"#.replace(".Missing", "nil").as_str().replace("nil", "\"\"").as_str()), "d");
    assert!(r_err(r#"{{ default "d" (split "a" ",") }}"#).contains("uncomparable"));
    // env
    std::env::set_var("REGSYNC_TEMPLATE_TEST_ENV", "tok en");
    assert_eq!(r(r#"{{ env "REGSYNC_TEMPLATE_TEST_ENV" }}"#), "tok en");
    assert_eq!(r(r#"{{ env "REGSYNC_TEMPLATE_TEST_UNSET_ENV" }}"#), "");
    // file: trimmed; a missing file is an error naming the path (regsync: "")
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("secret");
    std::fs::write(&f, "  s3cr3t\n\n").unwrap();
    assert_eq!(
        r(&format!("{{{{ file {:?} }}}}", f.display().to_string())),
        "s3cr3t"
    );
    let missing = dir.path().join("nope");
    let e = r_err(&format!(
        "{{{{ file {:?} }}}}",
        missing.display().to_string()
    ));
    assert!(
        e.contains(&format!(
            "open {}: no such file or directory",
            missing.display()
        )),
        "{e}"
    );
    assert!(!e.contains('\n'));
    // join / split
    assert_eq!(r(r#"{{ join (split "a,b,c" ",") "-" }}"#), "a-b-c");
    assert_eq!(r(r#"{{ split "a,b" "," }}"#), "[a b]");
    assert_eq!(r(r#"{{ split "ab" "" }}"#), "[a b]");
    assert_eq!(r(r#"{{ len (split "" ",") }}"#), "1");
    // json / jsonPretty / printPretty
    assert_eq!(r(r#"{{ json "<a&b>" }}"#), "\"<a&b>\"\n");
    assert_eq!(r(r#"{{ json (split "a,b" ",") }}"#), "[\"a\",\"b\"]\n");
    assert_eq!(
        r(r#"{{ jsonPretty (split "a,b" ",") }}"#),
        "[\n  \"a\",\n  \"b\"\n]\n"
    );
    assert_eq!(r(r#"{{ printPretty (split "a" ",") }}"#), "[\n  \"a\"\n]\n");
    // lower / upper / trimSpace
    assert_eq!(r(r#"{{ lower "ABC" }}{{ upper "def" }}"#), "abcDEF");
    assert_eq!(r(r#"{{ trimSpace "  x y \n" }}"#), "x y");
    assert_eq!(r(r#"{{ "  v  " | trimSpace | upper }}"#), "V");
    // time
    let year = chrono::Utc::now().year().to_string();
    assert_eq!(r(r#"{{ (time).Now.UTC.Format "2006" }}"#), year);
    let unix: i64 = r("{{ (time).Now.Unix }}").parse().unwrap();
    assert!((unix - chrono::Utc::now().timestamp()).abs() < 60);
    assert_eq!(
        r(r#"{{ $t := (time).Now }}{{ len ($t.Format "20060102") }}"#),
        "8"
    );
    assert_eq!(
        r(
            r#"{{ ((time).Parse "2006-01-02T15:04:05Z07:00" "2024-02-29T13:04:05+01:00").UTC.Format "20060102150405" }}"#
        ),
        "20240229120405"
    );
    assert!(r_err(r#"{{ (time).Parse "2006-01-02" "2024-13-01" }}"#)
        .contains("parsing time \"2024-13-01\": month out of range"));
}

#[test]
fn go_builtins() {
    assert_eq!(r(r#"{{ index (split "a b c" " ") 2 }}"#), "c");
    assert!(r_err(r#"{{ index (split "a" " ") 3 }}"#).contains("index out of range: 3"));
    assert_eq!(
        r(r#"{{ printf "%s-%d-%v" "a" 3 (split "x y" " ") }}"#),
        "a-3-[x y]"
    );
    assert_eq!(
        r(r#"{{ print "a" 1 2 "b" }}{{ println "x" 1 }}"#),
        "a1 2bx 1\n"
    );
    assert_eq!(r(r#"{{ if eq "a" "a" }}y{{ else }}n{{ end }}"#), "y");
    assert_eq!(
        r(r#"{{ if ne 1 2 }}y{{ end }}{{ if lt 1 2 }}y{{ end }}{{ if ge 2 2 }}y{{ end }}"#),
        "yyy"
    );
    assert_eq!(
        r(r#"{{ if and true (not false) }}y{{ end }}{{ or "" "z" }}"#),
        "yz"
    );
    assert_eq!(r(r#"{{ len "abc" }} {{ len (split "a,b" ",") }}"#), "3 2");
    assert_eq!(
        r(r#"{{ slice "abcdef" 1 3 }} {{ slice (split "a b c" " ") 1 }}"#),
        "bc [b c]"
    );
    assert_eq!(r(r#"{{ urlquery "a b&c" }}"#), "a+b%26c");
    assert_eq!(
        r(r#"{{ html "<a href='x'>" }}"#),
        "&lt;a href=&#39;x&#39;&gt;"
    );
    assert_eq!(r(r#"{{ js "a'b<" }}"#), "a\\'b\\u003C");
    assert_eq!(r(r#"{{ $x := "v" }}{{ $x }}{{ $x = "w" }}{{ $x }}"#), "vw");
    assert_eq!(
        r(r#"{{ range $i, $e := split "a,b" "," }}{{ $i }}={{ $e }};{{ end }}"#),
        "0=a;1=b;"
    );
    assert_eq!(r(r#"{{ with $v := "x" }}{{ . }}{{ $v }}{{ end }}"#), "xx");
    assert_eq!(r(r#"{{ if false }}a{{ else if true }}b{{ end }}"#), "b");
    assert_eq!(
        r(r#"{{ define "t" }}[{{ . }}]{{ end }}{{ template "t" "x" }}"#),
        "[x]"
    );
    // literals the Go way
    assert_eq!(
        r(r#"{{ 0x10 }} {{ 0o17 }} {{ 1_000 }} {{ 'a' }} {{ '\n' }}"#),
        "16 15 1000 97 10"
    );
    assert_eq!(
        r(r#"{{ "a\\" }}|{{ "t\tq\"" }}|{{ `r\n` }}|{{ "x`y" }}"#),
        "a\\|t\tq\"|r\\n|x`y"
    );
    assert_eq!(r(r#"{{ "\u00e9\x41\101" }}"#), "éAA");
    assert!(r_err(r#"{{ "\q" }}"#).contains("invalid syntax"));
    // errors never quote operand values (they may be secrets)
    let e = r_err(r#"{{ lt "s3cr3t" 1 }}"#);
    assert!(
        e.contains("error calling lt: incompatible types for comparison"),
        "{e}"
    );
    let e = r_err(r#"{{ printf "%d" "s3cr3t" }}"#);
    assert!(!e.contains("s3cr3t"), "{e}");
    assert!(r_err("{{ \"open }}").contains("unterminated"));
    assert!(r_err("{{ foo }}").contains("function \"foo\" not defined"));
    assert!(r_err("x\n{{ foo }}").starts_with("template: out:2: "));
    assert!(r_err("{{ .A").contains("unclosed action"));
}

/// Time values in templates (the layouts themselves: `gocompat::gotime`'s tests).
#[test]
fn time_values() {
    assert_eq!(
        r(r#"{{ ((time).Parse "2006" "2020").Add "36h" | printf "%v" }}"#),
        "2020-01-02 12:00:00 +0000 UTC"
    );
    assert_eq!(r(r#"{{ ((time).Parse "2006" "2020").Year }}"#), "2020");
    assert_eq!(
        r(r#"{{ json ((time).Parse "2006" "2020") }}"#),
        "\"2020-01-01T00:00:00Z\"\n"
    );
}

#[test]
fn expansion_order_quirk() {
    let yaml = r#"
sync:
  - source: "{{ lower \"ALPINE\" }}"
    referrerSource: "rs/{{ .Sync.Source }}"
    target: "reg/{{ .Sync.Source }}/{{ .Sync.ReferrerSrc }}"
    referrerTarget: "rt/{{ .Sync.Target }}/{{ .Sync.ReferrerTgt }}"
    type: image
"#;
    let c = Config::from_yaml(yaml, "c.yml").unwrap();
    let s = &c.sync[0];
    assert_eq!(s.source, "alpine");
    assert_eq!(s.referrer_source, "rs/alpine");
    assert_eq!(s.target, "reg/alpine/rs/alpine");
    // referrerTarget sees the unexpanded target (regsync quirk)
    assert_eq!(
        s.referrer_target,
        "rt/reg/{{ .Sync.Source }}/{{ .Sync.ReferrerSrc }}/rt/{{ .Sync.Target }}/{{ .Sync.ReferrerTgt }}"
    );
}

#[test]
fn creds_and_errors() {
    std::env::set_var("REGSYNC_TEMPLATE_TEST_USER", "bob");
    let mut c = Config {
        creds: vec![CredsEntry {
            registry: "{{ \"reg\" }}:5000".into(),
            user: "{{ env \"REGSYNC_TEMPLATE_TEST_USER\" }}".into(),
            pass: "p{{\"{{\"}}w".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    expand_templates(&mut c).unwrap();
    assert_eq!(c.creds[0].registry, "reg:5000");
    assert_eq!(c.creds[0].user, "bob");
    assert_eq!(c.creds[0].pass, "p{{w");

    let e = Config::from_yaml(
        "creds:\n  - registry: r\n    pass: '{{ file \"/nonexistent/regsync/secret\" }}'\n",
        "c.yml",
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        "c.yml: creds[0] (registry \"r\"): pass: template: out: executing \"out\": error calling file: open /nonexistent/regsync/secret: no such file or directory"
    );
    let e = Config::from_yaml(
        "sync:\n  - source: alpine\n    target: 'x/{{ .Sync.Sorce }}'\n    type: image\n",
        "c.yml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("c.yml: sync[0] (source \"alpine\"): target: template: "),
        "{e}"
    );
    assert!(e.contains("Sorce"), "{e}");
    let e = Config::from_yaml(
        "sync:\n  - source: alpine\n    target: 'x/{{ .Sync.Source '\n    type: image\n",
        "c.yml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("target: template: out:1: unclosed action"),
        "{e}"
    );
}

#[test]
fn backup_template() {
    let s = step("alpine");
    let target = Reference::parse("registry:5000/hub/alpine:3.9").unwrap();
    assert_eq!(
        render_backup("bkup-{{.Ref.Tag}}", &target, &s).unwrap(),
        "bkup-3.9"
    );
    assert_eq!(
        render_backup(" host/backups:{{ .Ref.Tag }}\n", &target, &s).unwrap(),
        "host/backups:3.9"
    );
    assert_eq!(
        render_backup(
            "{{ .Ref.Registry }}|{{ .Ref.Repository }}|{{ .Ref.Scheme }}|{{ .Ref.CommonName }}|{{ .Step.Source }}|{{ .Sync.Type }}",
            &target,
            &s
        )
        .unwrap(),
        "registry:5000|hub/alpine|reg|registry:5000/hub/alpine:3.9|alpine|image"
    );
    let e = render_backup("{{ .Ref.Nope }}", &target, &s)
        .unwrap_err()
        .to_string();
    assert!(e.contains("backup: template:") && e.contains("Nope"), "{e}");
}

#[test]
fn version_rendering() {
    let info = VersionInfo {
        vcs_tag: "v1".into(),
        vcs_ref: "abc-dirty".into(),
        vcs_commit: "abc".into(),
        vcs_state: "dirty".into(),
        vcs_date: "unknown".into(),
        platform: "linux/amd64".into(),
        go_ver: "rustc1.95.0".into(),
        go_compiler: "rustc".into(),
    };
    assert_eq!(render_version("{{.VCSTag}}", &info).unwrap(), "v1");
    let pretty = render_version("{{printPretty .}}", &info).unwrap();
    assert!(
        pretty.starts_with("VCSTag:     v1\nVCSRef:     abc-dirty\n"),
        "{pretty}"
    );
    assert!(pretty.ends_with("GoCompiler: rustc\n"));
    let json = render_version("{{json .}}", &info).unwrap();
    assert!(json.starts_with(
        "{\"goVersion\":\"rustc1.95.0\",\"goCompiler\":\"rustc\",\"platform\":\"linux/amd64\",\"vcsCommit\":\"abc\",\"vcsDate\":\"unknown\",\"vcsRef\":\"abc-dirty\",\"vcsState\":\"dirty\",\"vcsTag\":\"v1\",\"debug\":{"
    ), "{json}");
}

#[test]
fn no_hang_or_panic_on_odd_input() {
    for t in [
        "{{", "{{ ", "{{-", "{{- }}", "{{ ( }}", "{{ ) }}", "{{ | }}", "{{ \"\\", "{{ '", "{{ ''",
        "{{ '\\'' }}", "{{ `", "{{/*", "{{/* x */", "{{ end }}", "{{ else }}", "{{ if }}",
        "{{ range }}", "{{ $ }}", "{{ $x }}", "{{ .A.B.C }}", "{{ index }}", "{{ slice }}",
        "{{ printf }}", "{{ printf 1 }}", "{{ printf \"%\" }}", "{{ printf \"%d\" }}",
        "{{ template \"nope\" }}", "{{ (time).Parse }}", "{{ (time).Now.Format }}",
        "{{ (time).Now.Format 1 }}", "{{ .Format \"x\" }}", "{{ 1 | 2 }}", "{{ nil }}",
        "{{ \"é\\é\" }}", "{{ '\\é' }}", "{{ 'é' }}", "{{ 0x }}", "{{ 08 }}", "{{ 1e }}",
        "{{ - }}", "{{ = }}", "{{ := }}", "{{ , }}", "{{ : }}", "{{ $x := }}",
        "{{ define }}", "{{ block }}", "{{ with }}{{ end }}", "{{ \"\\x4\" }}", "{{ \"\\u12\" }}",
        "{{ \"\\U0011ffff\" }}", "{{ \"\\400\" }}", "}}{{", "{{}}", "{{ . . }}",
        "{{ define \"a\" }}{{ template \"a\" }}{{ end }}{{ template \"a\" }}",
        "{{ define \"a\" }}{{ template \"b\" }}{{ end }}{{ define \"b\" }}{{ template \"a\" }}{{ end }}{{ template \"a\" }}",
        "{{ block \"a\" . }}{{ template \"a\" }}{{ end }}",
        &"(".repeat(5000),
        &format!("{{{{ {} 1 {} }}}}", "(".repeat(5000), ")".repeat(5000)),
        &"{{ if 1 }}".repeat(5000),
    ] {
        if t.contains("template \"a\"") {
            assert!(render(t, Value::NoValue)
                .unwrap_err()
                .contains("exceeded maximum template depth"));
        }
        let _ = render(t, Value::NoValue);
        let mut top = HashMap::new();
        top.insert("Sync".to_string(), sync_value(&SyncStep::default()));
        let _ = render(t, Value::Object(top));
    }
}

#[test]
fn random_templates_never_panic() {
    let frags = [
        "{{",
        "}}",
        "{{-",
        " -}}",
        " ",
        "\n",
        "\"",
        "\\",
        "`",
        "'",
        "(",
        ")",
        "|",
        "$",
        "$x",
        ":=",
        "=",
        ",",
        ".",
        ".Sync",
        ".Source",
        "if",
        "else",
        "end",
        "range",
        "with",
        "define",
        "template",
        "block",
        "index",
        "split",
        "printf",
        "len",
        "slice",
        "time",
        ".Now",
        ".Format",
        ".Parse",
        "1",
        "0x",
        "-",
        "a",
        "é",
        "/*",
        "*/",
        "nil",
        "true",
        "\"x\"",
        "`y`",
        "'c'",
        "%d",
        "%v",
        "\\x",
        "\\u",
        "2006",
        "default",
        "and",
        "or",
        "{{ define \"a\" }}",
        "{{ template \"a\" }}",
        "{{ block \"b\" . }}",
        "\"a\"",
        "not",
        "eq",
        "lt",
        "json",
        "file",
        "env",
        "print",
        "call",
        "html",
        "js",
        "urlquery",
        ".Sync.Tags.Allow",
        "(time)",
        ".UTC",
        ".AddDate",
        "{{ end }}",
    ];
    // property test: any mix of template fragments renders or fails, never panics or
    // hangs (REGSYNC_FUZZ_SEED / REGSYNC_FUZZ_N explore more)
    use rand::{Rng, SeedableRng};
    let seed = std::env::var("REGSYNC_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let n: usize = std::env::var("REGSYNC_FUZZ_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for _ in 0..n {
        let len = rng.gen_range(1..14);
        let mut t = String::new();
        for _ in 0..len {
            t.push_str(frags[rng.gen_range(0..frags.len())]);
        }
        let mut top = HashMap::new();
        top.insert("Sync".to_string(), sync_value(&SyncStep::default()));
        let _ = render(&t, Value::Object(top));
    }
}
