//! Property tests over the two parsers that take user text: the config loader
//! (`Config::from_yaml`: YAML, merges, defaults, templates; spec §3, §4) and the image
//! reference parser (`Reference::parse`, spec §9).
//!
//! * No input panics. A config that does not load gives a one-line error naming the file; a
//!   config that loads can be printed (`regsync config`) and turned into the host table.
//! * A reference that parses prints (`common_name`) to text that parses to the same reference.
//!
//! Inputs are arbitrary strings plus generated ones shaped like the real thing: YAML documents
//! built from regsync's keys with odd scalars, anchors, aliases, `<<:` merges and template
//! braces (sometimes cut short), and references assembled from registry, repository, tag and
//! digest parts. Case counts are modest so the file runs in a few seconds in debug builds.

use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use regsync::config::Config;
use regsync::reference::{Reference, Scheme};

fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Config loader
// ---------------------------------------------------------------------------------------------

const NAME: &str = "fuzz.yml";

/// Loads `text`: a panic anywhere (loader, printer, host table) fails the property, and so does
/// an error that is empty, spans several lines or does not name the file.
fn check_config(text: &str) -> Result<(), TestCaseError> {
    match Config::from_yaml(text, NAME) {
        Ok(config) => {
            let printed = regsync::config::config_yaml(&config);
            prop_assert!(printed.starts_with("version: "), "printed:\n{printed}");
            let _ = config.hosts_with_warnings();
        }
        Err(e) => {
            let msg = e.to_string();
            prop_assert!(!msg.trim().is_empty(), "empty error for {text:?}");
            prop_assert!(
                !msg.contains('\n') && !msg.contains('\r'),
                "error is not one line: {msg:?}\ninput:\n{text}"
            );
            prop_assert!(
                msg.starts_with(&format!("{NAME}: ")),
                "error does not name the file: {msg:?}\ninput:\n{text}"
            );
        }
    }
    Ok(())
}

const CREDS_KEYS: &[&str] = &[
    "registry",
    "hostname",
    "tls",
    "regcert",
    "clientCert",
    "clientKey",
    "user",
    "pass",
    "token",
    "credHelper",
    "credExpire",
    "credHost",
    "pathPrefix",
    "mirrors",
    "priority",
    "repoAuth",
    "apiOpts",
    "blobChunk",
    "blobMax",
    "reqPerSec",
    "reqConcurrent",
    "api",
    "scheme",
];

const DEFAULTS_KEYS: &[&str] = &[
    "parallel",
    "interval",
    "schedule",
    "backup",
    "ratelimit",
    "mediaTypes",
    "digestTags",
    "referrers",
    "referrerSlow",
    "fastCheck",
    "forceRecursive",
    "includeExternal",
    "referrerFilters",
    "referrerSource",
    "referrerTarget",
    "hooks",
    "blobLimit",
    "cacheCount",
    "cacheTime",
    "skipDockerConfig",
    "userAgent",
];

const STEP_KEYS: &[&str] = &[
    "source",
    "target",
    "type",
    "tags",
    "tagSets",
    "repos",
    "platform",
    "platforms",
    "digestTags",
    "referrers",
    "referrerSlow",
    "fastCheck",
    "forceRecursive",
    "includeExternal",
    "referrerFilters",
    "referrerSource",
    "referrerTarget",
    "backup",
    "interval",
    "schedule",
    "ratelimit",
    "mediaTypes",
    "hooks",
];

/// Keys of nested mappings (tags, ratelimit, hooks, referrerFilters, apiOpts) and strays.
const INNER_KEYS: &[&str] = &[
    "allow",
    "deny",
    "semverRange",
    "min",
    "retry",
    "pre",
    "post",
    "unchanged",
    "type",
    "params",
    "artifactType",
    "annotations",
    "disableHead",
    "x-extra",
    "<<",
];

/// Raw YAML scalars (some quoted) for untyped positions: the §3.1 conversions, durations,
/// booleans, references and templates.
const SCALARS: &[&str] = &[
    "0",
    "1",
    "-1",
    "3",
    "010",
    "0x1F",
    "0o17",
    "1_000",
    "3.10",
    ".5",
    "1e3",
    "1.5e-3",
    "-0",
    "99999999999999999999999",
    "1.7976931348623157e309",
    ".inf",
    "-.inf",
    ".nan",
    "true",
    "false",
    "yes",
    "off",
    "~",
    "null",
    "''",
    "\"\"",
    "\"true\"",
    "\"3\"",
    "90s",
    "1h30m",
    "1.5h",
    "-5m",
    "1d",
    "\"90\"",
    "\"0\"",
    "15m",
    "1ns",
    "2562047h47m16.854775807s",
    "9999999999h",
    "enabled",
    "insecure",
    "disabled",
    "INSECURE",
    "bogus",
    "image",
    "repository",
    "registry",
    "alpine",
    "busybox:latest",
    "registry:5000/hub/alpine",
    "ocidir://mirror/hello",
    "ocidir://x:tag",
    "ocifile://x",
    "http://localhost:5000",
    "docker.io",
    "\"15 3 * * *\"",
    "\"@every 1h\"",
    "linux/amd64",
    "\"3\\\\.2[0-9]\"",
    "\"(\"",
    "\">=1.27.0\"",
    "\"^22.0.0 <23\"",
    "application/vnd.oci.image.index.v1+json",
    "'{{ .Sync.Source }}'",
    "'x/{{ .Sync.Source }}'",
    "'{{ index (split .Sync.Source \"gcr.io/\") 1 }}'",
    "'{{ index (split .Sync.Source \"nope\") 5 }}'",
    "'{{ env \"HOME\" }}'",
    "'{{ env \"REGSYNC_FUZZ_UNSET\" | default \"d\" }}'",
    "'{{ file \"/nonexistent/regsync-fuzz\" }}'",
    "'{{ .Sync.Target }}'",
    "'{{ .Sync.Nope }}'",
    "'{{ .Ref.Tag }}'",
    "'bkup-{{.Ref.Tag}}'",
    "'{{'",
    "'}}'",
    "'{{ }}'",
    "'{{ if }}'",
    "'{{ end }}'",
    "'{{ range .Sync.Tags.Allow }}{{ . }}{{ end }}'",
    "'{{ printf \"%d-%s\" 3 \"x\" }}'",
    "'{{ printf \"%!\" }}'",
    "'{{ (time).Now.Format \"20060102\" }}'",
    "'{{ json .Sync }}'",
    "'{{ len .Sync.Platforms }}'",
    "'{{ slice \"abc\" 2 1 }}'",
    "'{{ index .Sync.Platforms 99 }}'",
    "'{{ 1 | printf \"%v\" | upper | lower }}'",
    "'{{ \"{{\" }}'",
    "'{{- \"a\" -}}'",
    "'{{ $x := 1 }}{{ $x }}'",
    "'{{ define \"a\" }}x{{ end }}{{ template \"a\" }}'",
    "'{{ template \"missing\" }}'",
    "'{{ block \"b\" . }}y{{ end }}'",
    "'{{ /* c */ }}'",
    "'{{ 0x1F }}{{ 1e3 }}{{ '\\''a'\\'' }}'",
    "'{{ call .Sync.Source }}'",
    "'{{ with .Sync.Source }}{{ . }}{{ else }}none{{ end }}'",
    "'{{ not (eq .Sync.Type \"image\") }}'",
];

/// A small YAML tree, rendered in flow style under block-style top-level keys.
#[derive(Clone, Debug)]
enum Y {
    Scalar(String),
    Seq(Vec<Y>),
    Map(Vec<(String, Y)>),
    /// `*aN` (an anchor defined at the top), modulo the number of anchors.
    Alias(usize),
    /// `<<: *aN` or `<<: [*aN, *aM]`.
    Merge(Vec<usize>),
}

fn quote_single(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// String values (raw; rendered single-quoted): references, templates, enum values, patterns.
const STRINGS: &[&str] = &[
    "",
    "alpine",
    "busybox:latest",
    "gcr.io/example/repo",
    "registry:5000/hub/alpine",
    "registry:5000",
    "localhost:5000/a/b:t",
    "ocidir://mirror/hello",
    "ocidir://x:tag",
    "ocifile://x",
    "http://localhost:5000",
    "https://index.docker.io/v1/",
    "docker.io",
    "Upper/Case",
    "image",
    "repository",
    "registry",
    "enabled",
    "insecure",
    "disabled",
    "INSECURE",
    "bogus",
    "15 3 * * *",
    "@every 1h",
    "61 * * * *",
    "linux/amd64",
    "linux/arm/v7",
    "3\\.2[0-9]",
    "(",
    "a|b",
    ">=1.27.0",
    "^22.0.0 <23",
    ">= 1.0",
    "application/vnd.oci.image.index.v1+json",
    "{{ .Sync.Source }}",
    "x/{{ .Sync.Source }}",
    "registry:5000/hub/{{ .Sync.Source }}",
    "{{ index (split .Sync.Source \"gcr.io/\") 1 }}",
    "{{ index (split .Sync.Source \"nope\") 5 }}",
    "{{ env \"HOME\" }}",
    "{{ env \"REGSYNC_FUZZ_UNSET\" | default \"d\" }}",
    "{{ file \"/nonexistent/regsync-fuzz\" }}",
    "{{ .Sync.Target }}",
    "{{ .Sync.ReferrerSrc }}",
    "{{ .Sync.Nope }}",
    "{{ .Ref.Tag }}",
    "bkup-{{.Ref.Tag}}",
    "{{",
    "}}",
    "{{ }}",
    "{{ if }}",
    "{{ end }}",
    "{{ range .Sync.Tags.Allow }}{{ . }}{{ end }}",
    "{{ range $i, $p := .Sync.Platforms }}{{ $i }}={{ $p }}{{ end }}",
    "{{ printf \"%d-%s\" 3 \"x\" }}",
    "{{ printf \"%!\" }}",
    "{{ (time).Now.Format \"20060102\" }}",
    "{{ ((time).Parse \"2006-01-02\" \"2024-02-30\").Unix }}",
    "{{ json .Sync }}",
    "{{ jsonPretty .Sync.RateLimit }}",
    "{{ printPretty .Sync.Tags }}",
    "{{ len .Sync.Platforms }}",
    "{{ slice \"abc\" 2 1 }}",
    "{{ index .Sync.Platforms 99 }}",
    "{{ 1 | printf \"%v\" | upper | lower }}",
    "{{ \"{{\" }}",
    "{{- \"a\" -}}",
    "{{ $x := 1 }}{{ $x }}",
    "{{ define \"a\" }}x{{ end }}{{ template \"a\" }}",
    "{{ template \"missing\" }}",
    "{{ block \"b\" . }}y{{ end }}",
    "{{ /* c */ }}",
    "{{ 0x1F }}{{ 1e3 }}{{ 'a' }}",
    "{{ call .Sync.Source }}",
    "{{ with .Sync.Source }}{{ . }}{{ else }}none{{ end }}",
    "{{ not (eq .Sync.Type \"image\") }}",
    "{{ join .Sync.MediaTypes \",\" }}",
    "{{ trimSpace \"  x \" }}{{ urlquery \"a b\" }}{{ html \"<\" }}{{ js \"'\" }}",
    "{{ default \"x\" .Sync.Platforms }}",
    "{{ and .Sync.FastCheck .Sync.Referrers }}",
    "{{ lt 1 \"a\" }}",
];

/// What a key holds, to generate mostly well-typed documents that get past decoding.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Str,
    Bool,
    Int,
    Float,
    Duration,
    StrList,
    Filter,
    FilterList,
    RateLimit,
    Hooks,
    RefFilters,
    StrMap,
}

fn kind(key: &str) -> Kind {
    match key {
        "digestTags" | "referrers" | "referrerSlow" | "fastCheck" | "forceRecursive"
        | "includeExternal" | "repoAuth" | "skipDockerConfig" => Kind::Bool,
        "version" | "parallel" | "priority" | "blobChunk" | "blobMax" | "reqConcurrent"
        | "credExpire" | "blobLimit" | "cacheCount" | "min" => Kind::Int,
        "reqPerSec" => Kind::Float,
        "interval" | "cacheTime" | "retry" => Kind::Duration,
        "mirrors" | "platforms" | "mediaTypes" | "allow" | "deny" | "semverRange" | "params" => {
            Kind::StrList
        }
        "tags" | "repos" => Kind::Filter,
        "tagSets" => Kind::FilterList,
        "ratelimit" => Kind::RateLimit,
        "hooks" => Kind::Hooks,
        "referrerFilters" => Kind::RefFilters,
        "apiOpts" | "annotations" => Kind::StrMap,
        _ => Kind::Str,
    }
}

fn plain(choices: &'static [&'static str]) -> BoxedStrategy<Y> {
    proptest::sample::select(choices)
        .prop_map(|s| Y::Scalar(s.to_string()))
        .boxed()
}

fn string_value() -> BoxedStrategy<Y> {
    prop_oneof![
        8 => proptest::sample::select(STRINGS).prop_map(|s| Y::Scalar(quote_single(s))),
        2 => "[a-z0-9][a-z0-9./:_-]{0,15}".prop_map(|s| Y::Scalar(quote_single(&s))),
        1 => "\\PC{0,12}".prop_map(|s| Y::Scalar(quote_single(&s))),
        1 => plain(&["3", "3.10", "010", "0x1F", "1e3", "true", "~", ".5", "-1"]),
    ]
    .boxed()
}

fn str_list() -> BoxedStrategy<Y> {
    proptest::collection::vec(string_value(), 0..4)
        .prop_map(Y::Seq)
        .boxed()
}

fn typed_value(k: Kind) -> BoxedStrategy<Y> {
    match k {
        Kind::Str => string_value(),
        Kind::Bool => prop_oneof![
            8 => plain(&["true", "false"]),
            1 => plain(&["yes", "\"true\"", "1", "~"]),
        ]
        .boxed(),
        Kind::Int => prop_oneof![
            8 => plain(&["0", "1", "2", "3", "8", "100", "1048576", "-1"]),
            1 => plain(&["010", "0x1F", "1_000", "\"3\"", "3.7", "99999999999999999999", "-9223372036854775808", "\"x\""]),
        ]
        .boxed(),
        Kind::Float => plain(&["0", "0.5", "20", "1e-300", "-1", ".inf", ".nan", "\"2\""]),
        Kind::Duration => prop_oneof![
            8 => plain(&["90s", "1h30m", "1.5h", "15m", "1m", "\"0\"", "-5m", "6h", "1ns", "300ms"]),
            1 => plain(&["0", "1d", "\"90\"", "2562047h47m16.854775807s", "9999999999h", "1µs", "x"]),
        ]
        .boxed(),
        Kind::StrList => prop_oneof![8 => str_list(), 1 => string_value()].boxed(),
        Kind::Filter => filter_map(),
        Kind::FilterList => proptest::collection::vec(filter_map(), 0..3)
            .prop_map(Y::Seq)
            .boxed(),
        Kind::RateLimit => (
            proptest::option::of(typed_value(Kind::Int)),
            proptest::option::of(typed_value(Kind::Duration)),
        )
            .prop_map(|(min, retry)| {
                let mut m = Vec::new();
                if let Some(v) = min {
                    m.push(("min".to_string(), v));
                }
                if let Some(v) = retry {
                    m.push(("retry".to_string(), v));
                }
                Y::Map(m)
            })
            .boxed(),
        Kind::Hooks => proptest::collection::vec(
            (
                proptest::sample::select(&["pre", "post", "unchanged"][..]),
                string_value(),
                str_list(),
            ),
            0..3,
        )
        .prop_map(|hooks| {
            Y::Map(
                hooks
                    .into_iter()
                    .map(|(k, t, p)| {
                        (
                            k.to_string(),
                            Y::Map(vec![("type".into(), t), ("params".into(), p)]),
                        )
                    })
                    .collect(),
            )
        })
        .boxed(),
        Kind::RefFilters => proptest::collection::vec(
            (string_value(), typed_value(Kind::StrMap)),
            0..3,
        )
        .prop_map(|fs| {
            Y::Seq(
                fs.into_iter()
                    .map(|(a, ann)| {
                        Y::Map(vec![("artifactType".into(), a), ("annotations".into(), ann)])
                    })
                    .collect(),
            )
        })
        .boxed(),
        Kind::StrMap => proptest::collection::vec(
            (
                prop_oneof![
                    Just("disableHead".to_string()),
                    "[a-z][a-z.]{0,8}".prop_map(|s| quote_single(&s))
                ],
                string_value(),
            ),
            0..3,
        )
        .prop_map(Y::Map)
        .boxed(),
    }
}

fn filter_map() -> BoxedStrategy<Y> {
    proptest::collection::vec(
        (
            proptest::sample::select(&["allow", "deny", "semverRange", "<<"][..]),
            str_list(),
            0usize..4,
        ),
        0..3,
    )
    .prop_map(|fields| {
        Y::Map(
            fields
                .into_iter()
                .map(|(k, v, n)| {
                    if k == "<<" {
                        (k.to_string(), Y::Merge(vec![n]))
                    } else {
                        (k.to_string(), v)
                    }
                })
                .collect(),
        )
    })
    .boxed()
}

/// One `key: value` of a mapping drawn from `keys`: mostly well-typed, sometimes anything.
fn field_strategy(keys: &'static [&'static str]) -> BoxedStrategy<(String, Y)> {
    prop_oneof![
        10 => proptest::sample::select(keys).prop_flat_map(move |k| {
            prop_oneof![
                12 => typed_value(kind(k)),
                1 => tree_strategy(keys),
            ]
            .prop_map(move |v| (k.to_string(), v))
        }),
        1 => (key_strategy(keys), tree_strategy(keys)),
    ]
    .boxed()
}

fn key_strategy(keys: &'static [&'static str]) -> BoxedStrategy<String> {
    prop_oneof![
        8 => proptest::sample::select(keys).prop_map(str::to_string),
        2 => proptest::sample::select(INNER_KEYS).prop_map(str::to_string),
        1 => "[a-zA-Z][a-zA-Z0-9-]{0,8}",
        1 => "\\PC{1,6}".prop_map(|s| quote_single(&s)),
    ]
    .boxed()
}

fn scalar_strategy() -> BoxedStrategy<String> {
    prop_oneof![
        8 => proptest::sample::select(SCALARS).prop_map(str::to_string),
        2 => "[a-z0-9][a-z0-9./:_-]{0,15}",
        1 => "-?[0-9]{1,20}(\\.[0-9]{0,5})?",
        1 => "\\PC{0,12}".prop_map(|s| quote_single(&s)),
        1 => "[ -~]{0,12}".prop_map(|s| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))),
    ]
    .boxed()
}

fn tree_strategy(keys: &'static [&'static str]) -> BoxedStrategy<Y> {
    let leaf = prop_oneof![
        6 => scalar_strategy().prop_map(Y::Scalar),
        1 => (0usize..4).prop_map(Y::Alias),
    ];
    leaf.prop_recursive(3, 24, 5, move |inner| {
        prop_oneof![
            2 => proptest::collection::vec(inner.clone(), 0..4).prop_map(Y::Seq),
            3 => proptest::collection::vec((key_strategy(keys), inner), 0..5).prop_map(Y::Map),
            1 => proptest::collection::vec(0usize..4, 1..3).prop_map(Y::Merge),
        ]
    })
    .boxed()
}

/// A mapping whose keys are drawn from `keys`, with an occasional merge of an anchor.
fn entry_strategy(keys: &'static [&'static str]) -> BoxedStrategy<Y> {
    (
        proptest::collection::vec(field_strategy(keys), 0..7),
        proptest::option::weighted(0.3, proptest::collection::vec(0usize..4, 1..3)),
    )
        .prop_map(|(mut fields, merge)| {
            if let Some(m) = merge {
                fields.insert(0, ("<<".to_string(), Y::Merge(m)));
            }
            Y::Map(fields)
        })
        .boxed()
}

/// A sync step: usually with a source, a target and a type first (fields after them, or a
/// merge, may still override them).
fn step_strategy() -> BoxedStrategy<Y> {
    (
        proptest::option::weighted(0.8, (string_value(), string_value())),
        proptest::option::weighted(
            0.8,
            prop_oneof![
                3 => plain(&["image", "repository", "registry"]),
                1 => string_value(),
            ],
        ),
        entry_strategy(STEP_KEYS),
    )
        .prop_map(|(refs, ty, entry)| {
            let Y::Map(fields) = entry else {
                unreachable!("entries are mappings")
            };
            let mut head = Vec::new();
            if let Some((source, target)) = refs {
                head.push(("source".to_string(), source));
                head.push(("target".to_string(), target));
            }
            if let Some(t) = ty {
                head.push(("type".to_string(), t));
            }
            // a merge key stays first so explicit keys override it
            let (merge, rest): (Vec<_>, Vec<_>) = fields.into_iter().partition(|(k, _)| k == "<<");
            Y::Map(merge.into_iter().chain(head).chain(rest).collect())
        })
        .boxed()
}

fn render(y: &Y, anchors: usize, out: &mut String) {
    match y {
        Y::Scalar(s) => out.push_str(s),
        Y::Alias(n) => {
            if anchors == 0 {
                out.push('~');
            } else {
                out.push_str(&format!("*a{}", n % anchors));
            }
        }
        Y::Merge(ns) => {
            // a merge outside a mapping key position renders as its alias list
            render_merge(ns, anchors, out);
        }
        Y::Seq(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                render(item, anchors, out);
            }
            out.push(']');
        }
        Y::Map(fields) => {
            out.push('{');
            for (i, (k, v)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                if let Y::Merge(ns) = v {
                    out.push_str("<<: ");
                    render_merge(ns, anchors, out);
                } else {
                    out.push_str(k);
                    out.push_str(": ");
                    render(v, anchors, out);
                }
            }
            out.push('}');
        }
    }
}

fn render_merge(ns: &[usize], anchors: usize, out: &mut String) {
    if anchors == 0 {
        out.push_str("{}");
        return;
    }
    if ns.len() == 1 {
        out.push_str(&format!("*a{}", ns[0] % anchors));
    } else {
        let list: Vec<String> = ns.iter().map(|n| format!("*a{}", n % anchors)).collect();
        out.push_str(&format!("[{}]", list.join(", ")));
    }
}

/// A whole document: anchors under `x-` keys first, then version, creds, defaults and sync in
/// block style (each entry in flow style), in a shuffled order with duplicates possible.
#[derive(Clone, Debug)]
struct Doc {
    anchors: Vec<Y>,
    version: Option<String>,
    creds: Option<Vec<Y>>,
    defaults: Option<Y>,
    sync: Option<Vec<Y>>,
    duplicate_sync: bool,
    /// Cut the text at this fraction (per mille) of its length, if set.
    cut: Option<u16>,
}

fn doc_strategy() -> impl Strategy<Value = Doc> {
    (
        proptest::collection::vec(entry_strategy(STEP_KEYS), 0..4),
        proptest::option::of(prop_oneof![
            6 => Just("1".to_string()),
            1 => proptest::sample::select(&["0", "2", "\"1\"", "01", "1.0", "~"][..])
                .prop_map(str::to_string),
            1 => scalar_strategy(),
        ]),
        proptest::option::of(proptest::collection::vec(entry_strategy(CREDS_KEYS), 0..3)),
        proptest::option::of(entry_strategy(DEFAULTS_KEYS)),
        proptest::option::weighted(0.85, proptest::collection::vec(step_strategy(), 1..4)),
        proptest::bool::weighted(0.1),
        proptest::option::weighted(0.15, 0u16..1000),
    )
        .prop_map(
            |(anchors, version, creds, defaults, sync, duplicate_sync, cut)| Doc {
                anchors,
                version,
                creds,
                defaults,
                sync,
                duplicate_sync,
                cut,
            },
        )
}

impl Doc {
    fn text(&self) -> String {
        let n = self.anchors.len();
        let mut out = String::new();
        for (i, a) in self.anchors.iter().enumerate() {
            out.push_str(&format!("x-anchor{i}: &a{i} "));
            // an anchor may only refer to the ones before it
            render(a, i, &mut out);
            out.push('\n');
        }
        if let Some(v) = &self.version {
            out.push_str(&format!("version: {v}\n"));
        }
        if let Some(creds) = &self.creds {
            out.push_str("creds:\n");
            for c in creds {
                out.push_str("  - ");
                render(c, n, &mut out);
                out.push('\n');
            }
        }
        if let Some(d) = &self.defaults {
            out.push_str("defaults: ");
            render(d, n, &mut out);
            out.push('\n');
        }
        if let Some(sync) = &self.sync {
            let times = if self.duplicate_sync { 2 } else { 1 };
            for _ in 0..times {
                out.push_str("sync:\n");
                for s in sync {
                    out.push_str("  - ");
                    render(s, n, &mut out);
                    out.push('\n');
                }
            }
        }
        if let Some(cut) = self.cut {
            let mut at = out.len() * cut as usize / 1000;
            while !out.is_char_boundary(at) {
                at -= 1;
            }
            out.truncate(at);
        }
        out
    }
}

/// Plausible steps that should load: templated targets over references.
fn good_step_strategy() -> impl Strategy<Value = String> {
    (
        proptest::sample::select(&["image", "repository", "registry", "weird"][..]),
        "[a-z][a-z0-9]{0,6}(/[a-z0-9]{1,6}){0,2}",
        proptest::sample::select(
            &[
                "registry:5000/hub/{{ .Sync.Source }}",
                "'{{ env \"REGSYNC_FUZZ_UNSET\" | default \"r.example\" }}/{{ .Sync.Source }}'",
                "ocidir://out/{{ .Sync.Source }}",
                "'{{ .Sync.Source | upper }}'",
            ][..],
        ),
        proptest::option::of(proptest::sample::select(&["1m", "15m", "\"0\"", "1h"][..])),
        proptest::option::of(any::<bool>()),
    )
        .prop_map(|(ty, source, target, retry, referrers)| {
            let mut s =
                format!("  - source: gcr.io/{source}\n    target: {target}\n    type: {ty}\n");
            if let Some(r) = retry {
                s.push_str(&format!("    ratelimit:\n      retry: {r}\n"));
            }
            if let Some(b) = referrers {
                s.push_str(&format!("    referrers: {b}\n"));
            }
            s
        })
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn config_arbitrary_text(text in "\\PC{0,200}") {
        check_config(&text)?;
    }

    #[test]
    fn config_arbitrary_bytes_as_text(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        check_config(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn config_yaml_shaped(doc in doc_strategy()) {
        check_config(&doc.text())?;
    }

    #[test]
    fn config_plausible_steps_load(
        steps in proptest::collection::vec(good_step_strategy(), 1..4),
        retry in proptest::sample::select(&["1m", "10m", "2h"][..]),
    ) {
        let text = format!(
            "defaults:\n  ratelimit:\n    retry: {retry}\nsync:\n{}",
            steps.concat()
        );
        let config = Config::from_yaml(&text, NAME)
            .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        for step in &config.sync {
            prop_assert!(!step.target.contains("{{"), "{}", step.target);
            prop_assert!(step.target.contains(step.source.as_str())
                || step.target.contains(&step.source.to_uppercase()), "{text}");
        }
        let printed = regsync::config::config_yaml(&config);
        prop_assert!(!printed.contains("retry: 1m0s"), "retry not raised:\n{printed}");
    }
}

// ---------------------------------------------------------------------------------------------
// Reference parser
// ---------------------------------------------------------------------------------------------

/// Parses `s`; when it parses, the canonical form parses back to the same reference.
fn check_reference(s: &str) -> Result<(), TestCaseError> {
    match Reference::parse(s) {
        Ok(r) => {
            let cn = r.common_name();
            let again = Reference::parse(&cn)
                .map_err(|e| TestCaseError::fail(format!("{s:?} → {cn:?} does not parse: {e}")))?;
            prop_assert_eq!(again.scheme, r.scheme, "{:?} → {:?}", s, cn);
            prop_assert_eq!(&again.registry, &r.registry, "{:?} → {:?}", s, cn);
            prop_assert_eq!(&again.repository, &r.repository, "{:?} → {:?}", s, cn);
            prop_assert_eq!(&again.path, &r.path, "{:?} → {:?}", s, cn);
            prop_assert_eq!(&again.tag, &r.tag, "{:?} → {:?}", s, cn);
            prop_assert_eq!(&again.digest, &r.digest, "{:?} → {:?}", s, cn);
            prop_assert_eq!(again.common_name(), cn.clone());
            prop_assert_eq!(r.original.as_str(), s);
            match r.scheme {
                Scheme::Reg => {
                    prop_assert!(!r.registry.is_empty() && !r.repository.is_empty(), "{s:?}");
                    prop_assert!(r.tag.is_some() || r.digest.is_some(), "{s:?}");
                    prop_assert!(r.repository == r.repository.to_lowercase(), "{s:?}");
                    if r.registry == "docker.io" {
                        prop_assert!(r.repository.contains('/'), "{s:?}");
                    }
                }
                Scheme::OciDir => prop_assert!(!r.path.is_empty(), "{s:?}"),
            }
            // deriving references keeps them parseable
            for derived in [r.repo_only(), r.with_tag("v1.0")] {
                let dn = derived.common_name();
                prop_assert!(Reference::parse(&dn).is_ok(), "{s:?}: derived {dn:?}");
            }
        }
        Err(e) => {
            let msg = e.to_string();
            prop_assert!(!msg.contains('\n'), "error is not one line: {msg:?}");
        }
    }
    Ok(())
}

fn registry_strategy() -> BoxedStrategy<String> {
    prop_oneof![
        4 => proptest::sample::select(
            &[
                "",
                "docker.io/",
                "index.docker.io/",
                "registry-1.docker.io/",
                "localhost/",
                "localhost:5000/",
                "LOCALHOST/",
                "127.0.0.1:5000/",
                "[::1]:5000/",
                "[fe80::1]/",
                "[::]/",
                "Foo/",
                "my-host:443/",
                "a.b.c/",
                "a./",
                "registry.example.org:5000/",
                "ghcr.io/",
                "gcr.io/",
                "-bad.example/",
                "host:/",
                "host:99999999999999999999/",
            ][..],
        )
        .prop_map(str::to_string),
        2 => "[a-zA-Z0-9][a-zA-Z0-9.-]{0,12}(:[0-9]{1,5})?/",
    ]
    .boxed()
}

fn repo_strategy() -> BoxedStrategy<String> {
    let component = prop_oneof![
        6 => "[a-z0-9]{1,6}((\\.|_|__|-{1,3})[a-z0-9]{1,4}){0,2}",
        1 => proptest::sample::select(&["library", "localhost", "Upper", "a..b", "_x", "x-", "ocidir"][..])
            .prop_map(str::to_string),
    ];
    proptest::collection::vec(component, 1..4)
        .prop_map(|c| c.join("/"))
        .boxed()
}

fn tag_strategy() -> BoxedStrategy<String> {
    prop_oneof![
        3 => Just(String::new()),
        4 => "[A-Za-z0-9_][A-Za-z0-9._-]{0,20}".prop_map(|t| format!(":{t}")),
        1 => "[A-Za-z0-9_]{128,129}".prop_map(|t| format!(":{t}")),
        1 => proptest::sample::select(&[":", ":-x", ":.x", "::x", ":latest:again"][..]).prop_map(str::to_string),
    ]
    .boxed()
}

fn digest_strategy() -> BoxedStrategy<String> {
    prop_oneof![
        3 => Just(String::new()),
        3 => "[0-9a-f]{64}".prop_map(|h| format!("@sha256:{h}")),
        1 => "[0-9a-f]{128}".prop_map(|h| format!("@sha512:{h}")),
        1 => "[0-9a-fA-F]{32,70}".prop_map(|h| format!("@sha256:{h}")),
        1 => ("[a-z][a-z0-9]{0,4}([-_+.][a-z][a-z0-9]{0,3})?", "[0-9a-f]{32,40}")
            .prop_map(|(a, h)| format!("@{a}:{h}")),
        1 => proptest::sample::select(&["@", "@sha256:", "@sha256:abc", "@:0000"][..]).prop_map(str::to_string),
    ]
    .boxed()
}

fn reference_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => (registry_strategy(), repo_strategy(), tag_strategy(), digest_strategy())
            .prop_map(|(r, p, t, d)| format!("{r}{p}{t}{d}")),
        3 => (
            proptest::sample::select(&["ocidir://", "ocifile://", "OCIDIR://", "oci://", "http://", "ocidir:/"][..]),
            "[A-Za-z0-9_\\-. ~+/]{1,20}",
            tag_strategy(),
            digest_strategy(),
        )
            .prop_map(|(s, p, t, d)| format!("{s}{p}{t}{d}")),
        1 => (
            registry_strategy(),
            repo_strategy(),
            tag_strategy(),
            "[ -~]{0,3}",
            0usize..40,
        )
            .prop_map(|(r, p, t, junk, at)| {
                // junk spliced in somewhere
                let mut s = format!("{r}{p}{t}");
                let mut at = at.min(s.len());
                while !s.is_char_boundary(at) {
                    at -= 1;
                }
                s.insert_str(at, &junk);
                s
            }),
    ]
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn reference_arbitrary_text(s in "\\PC{0,80}") {
        check_reference(&s)?;
    }

    #[test]
    fn reference_printable_ascii(s in "[ -~]{0,60}") {
        check_reference(&s)?;
    }

    #[test]
    fn reference_shaped(s in reference_strategy()) {
        check_reference(&s)?;
    }
}

/// Known references, as a sanity check that the generators' target is right.
#[test]
fn reference_examples_round_trip() {
    for (input, cn) in [
        ("busybox", "docker.io/library/busybox:latest"),
        (
            "registry-1.docker.io/alpine:3",
            "docker.io/library/alpine:3",
        ),
        ("localhost:5000/a/b:t", "localhost:5000/a/b:t"),
        ("[::1]:5000/x", "[::1]:5000/x:latest"),
        ("ocidir://out/dir:v1", "ocidir://out/dir:v1"),
        ("ocidir://out/dir", "ocidir://out/dir"),
    ] {
        let r = Reference::parse(input).unwrap();
        assert_eq!(r.common_name(), cn, "{input}");
        check_reference(input).unwrap();
    }
    for bad in [
        "",
        "x/UPPER",
        "x::y",
        "ocifile://x",
        "foo://x",
        "a@sha256:zz",
    ] {
        assert!(Reference::parse(bad).is_err(), "{bad}");
    }
}
