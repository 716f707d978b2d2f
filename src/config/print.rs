//! `regsync config`: the loaded config written back as YAML the way regsync (goccy/go-yaml)
//! writes it (spec §2.4): every struct field in Go field order, merged step booleans as
//! `true`/`false`, unset `defaults` booleans as `null`, absent lists `[]` and maps `{}`,
//! durations as Go strings (`5m0s`), floats with a fraction (`0.0`), creds as written (no host
//! defaults; `registry` omitted when empty), secrets in clear text. Sequences are not indented
//! under their key; strings are quoted only when YAML would read them as something else.

use super::schema::{
    Config, CredsEntry, Defaults, Hook, Hooks, RateLimit, ReferrerFilter, RepoFilter, StringList,
    SyncStep, TagFilter,
};
use crate::gocompat::duration::duration_of;
use crate::gocompat::gofmt::format_float_g;
use crate::gocompat::gotext::go_quote;
use std::collections::BTreeMap;

/// A YAML node.
enum Node {
    /// A plain scalar written as is (numbers, booleans, `null`).
    Plain(String),
    /// A string, quoted or written as a literal block when needed.
    Str(String),
    Map(Vec<(String, Node)>),
    Seq(Vec<Node>),
}

fn s(v: &str) -> Node {
    Node::Str(v.to_string())
}

fn int(v: impl ToString) -> Node {
    Node::Plain(v.to_string())
}

fn boolean(v: bool) -> Node {
    Node::Plain(v.to_string())
}

fn opt_bool(v: Option<bool>) -> Node {
    match v {
        Some(b) => boolean(b),
        None => Node::Plain("null".into()),
    }
}

fn float(v: f64) -> Node {
    if v.is_nan() {
        return Node::Plain(".nan".into());
    }
    if v.is_infinite() {
        return Node::Plain(if v > 0.0 { ".inf" } else { "-.inf" }.into());
    }
    let mut text = format_float_g(v);
    if !text.contains('.') && !text.contains('e') {
        text.push_str(".0");
    }
    Node::Plain(text)
}

fn duration(v: &str) -> Node {
    Node::Str(duration_of(v).to_string())
}

fn opt_list(v: &Option<StringList>) -> Node {
    match v {
        Some(v) => list(v),
        None => Node::Plain("null".into()),
    }
}

fn opt_int(v: Option<i64>) -> Node {
    match v {
        Some(n) => int(n),
        None => Node::Plain("null".into()),
    }
}

fn list(v: &[String]) -> Node {
    Node::Seq(v.iter().map(|x| s(x)).collect())
}

/// A string map (goccy sorts map keys; a BTreeMap is sorted).
fn map(v: &BTreeMap<String, String>) -> Node {
    Node::Map(v.iter().map(|(k, val)| (k.clone(), s(val))).collect())
}

/// A struct: fields in Go field order.
fn obj(fields: Vec<(&str, Node)>) -> Node {
    Node::Map(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

/// A map key: quoted like a value when needed.
fn key_text(k: &str) -> String {
    if needs_quotes(k) || k.contains('\n') {
        go_quote(k)
    } else {
        k.to_string()
    }
}

/// A single-line scalar text for a string (multi-line strings are quoted here).
fn scalar_text(v: &str) -> String {
    if needs_quotes(v) || v.contains('\n') {
        go_quote(v)
    } else {
        v.to_string()
    }
}

fn tags(t: &TagFilter) -> Node {
    let mut m = vec![("allow", list(&t.allow)), ("deny", list(&t.deny))];
    if !t.semver_range.is_empty() {
        m.push(("semverRange", list(&t.semver_range)));
    }
    obj(m)
}

fn repos(r: &RepoFilter) -> Node {
    obj(vec![("allow", list(&r.allow)), ("deny", list(&r.deny))])
}

fn ratelimit(r: &RateLimit) -> Node {
    obj(vec![("min", int(r.min)), ("retry", duration(&r.retry))])
}

fn referrer_filters(v: &Option<Vec<ReferrerFilter>>) -> Node {
    match v {
        None => Node::Seq(Vec::new()),
        Some(list) => Node::Seq(
            list.iter()
                .map(|f| {
                    obj(vec![
                        ("artifactType", s(&f.artifact_type)),
                        ("annotations", map(&f.annotations)),
                    ])
                })
                .collect(),
        ),
    }
}

fn hook(h: &Option<Hook>) -> Node {
    match h {
        None => Node::Plain("null".into()),
        Some(h) => obj(vec![("type", s(&h.kind)), ("params", list(&h.params))]),
    }
}

fn hooks(h: &Hooks) -> Node {
    obj(vec![
        ("pre", hook(&h.pre)),
        ("post", hook(&h.post)),
        ("unchanged", hook(&h.unchanged)),
    ])
}

/// Go's `config.Host` field order.
fn creds(c: &CredsEntry) -> Node {
    let mut m = Vec::new();
    if !c.registry.is_empty() {
        m.push(("registry", s(&c.registry)));
    }
    m.extend([
        ("tls", s(&c.tls)),
        ("regcert", s(&c.regcert)),
        ("clientCert", s(&c.client_cert)),
        ("clientKey", s(&c.client_key)),
        ("hostname", s(&c.hostname)),
        ("user", s(&c.user)),
        ("pass", s(&c.pass)),
        ("token", s(&c.token)),
        ("credHelper", s(&c.cred_helper)),
        ("credExpire", int(c.cred_expire)),
        ("credHost", s(&c.cred_host)),
        ("pathPrefix", s(&c.path_prefix)),
        ("mirrors", list(&c.mirrors)),
        ("priority", int(c.priority)),
        ("repoAuth", boolean(c.repo_auth)),
        ("api", s(&c.api)),
        ("apiOpts", map(&c.api_opts)),
        ("blobChunk", int(c.blob_chunk)),
        ("blobMax", int(c.blob_max)),
        ("reqPerSec", float(c.req_per_sec)),
        ("reqConcurrent", int(c.req_concurrent)),
        ("scheme", s(&c.scheme)),
    ]);
    obj(m)
}

/// regsync's `ConfigDefaults` field order.
fn defaults(d: &Defaults) -> Node {
    obj(vec![
        ("backup", s(&d.backup)),
        ("interval", duration(&d.interval)),
        ("schedule", s(&d.schedule)),
        ("ratelimit", ratelimit(&d.ratelimit)),
        ("parallel", int(d.parallel)),
        ("digestTags", opt_bool(d.digest_tags)),
        ("referrers", opt_bool(d.referrers)),
        ("referrerFilters", referrer_filters(&d.referrer_filters)),
        ("referrerSource", s(&d.referrer_source)),
        ("referrerTarget", s(&d.referrer_target)),
        ("referrerSlow", opt_bool(d.referrer_slow)),
        ("fastCheck", opt_bool(d.fast_check)),
        ("forceRecursive", opt_bool(d.force_recursive)),
        ("includeExternal", opt_bool(d.include_external)),
        ("mediaTypes", list(&d.media_types)),
        ("hooks", hooks(&d.hooks)),
        ("blobLimit", int(d.blob_limit)),
        ("cacheCount", int(d.cache_count)),
        ("cacheTime", duration(&d.cache_time)),
        ("skipDockerConfig", boolean(d.skip_docker_config)),
        ("userAgent", s(&d.user_agent)),
        ("cleanupTags", opt_bool(d.cleanup_tags)),
        ("cleanupTagsExclude", opt_list(&d.cleanup_tags_exclude)),
        ("cleanupTagsMaxPercent", opt_int(d.cleanup_tags_max_percent)),
    ])
}

/// regsync's `ConfigSync` field order.
fn step(st: &SyncStep) -> Node {
    obj(vec![
        ("source", s(&st.source)),
        ("target", s(&st.target)),
        ("type", s(&st.kind)),
        ("tags", tags(&st.tags)),
        ("tagSets", Node::Seq(st.tag_sets.iter().map(tags).collect())),
        ("repos", repos(&st.repos)),
        ("digestTags", opt_bool(st.digest_tags)),
        ("referrers", opt_bool(st.referrers)),
        ("referrerFilters", referrer_filters(&st.referrer_filters)),
        ("referrerSource", s(&st.referrer_source)),
        ("referrerTarget", s(&st.referrer_target)),
        ("referrerSlow", opt_bool(st.referrer_slow)),
        ("platform", s(&st.platform)),
        ("platforms", list(&st.platforms)),
        ("fastCheck", opt_bool(st.fast_check)),
        ("forceRecursive", opt_bool(st.force_recursive)),
        ("includeExternal", opt_bool(st.include_external)),
        ("backup", s(&st.backup)),
        ("interval", duration(&st.interval)),
        ("schedule", s(&st.schedule)),
        ("ratelimit", ratelimit(&st.ratelimit)),
        ("mediaTypes", list(&st.media_types)),
        ("hooks", hooks(&st.hooks)),
        ("cleanupTags", opt_bool(st.cleanup_tags)),
        ("cleanupTagsExclude", opt_list(&st.cleanup_tags_exclude)),
        (
            "cleanupTagsMaxPercent",
            opt_int(st.cleanup_tags_max_percent),
        ),
    ])
}

/// The `regsync config` text of a loaded config.
pub fn config_yaml(config: &Config) -> String {
    let root = obj(vec![
        ("version", int(config.version)),
        ("creds", Node::Seq(config.creds.iter().map(creds).collect())),
        ("defaults", defaults(&config.defaults)),
        (
            "sync",
            Node::Seq(config.sync.iter().map(|s| step(s)).collect()),
        ),
    ]);
    let mut out = String::new();
    if let Node::Map(entries) = &root {
        write_map(&mut out, entries, 0, None);
    }
    out
}

fn pad(n: usize) -> String {
    " ".repeat(n)
}

/// Writes map entries at `indent`; when `first_prefix` is given, the first entry continues the
/// current line (after a sequence's `- `).
fn write_map(
    out: &mut String,
    entries: &[(String, Node)],
    indent: usize,
    first_prefix: Option<()>,
) {
    for (i, (key, value)) in entries.iter().enumerate() {
        if i > 0 || first_prefix.is_none() {
            out.push_str(&pad(indent));
        }
        out.push_str(&key_text(key));
        out.push(':');
        write_value(out, value, indent);
    }
}

/// Writes the value of a `key:` at `indent` (the line holds `key:` already).
fn write_value(out: &mut String, value: &Node, indent: usize) {
    match value {
        Node::Plain(p) => {
            out.push(' ');
            out.push_str(p);
            out.push('\n');
        }
        Node::Str(v) => write_string(out, v, indent + 2),
        Node::Map(m) if m.is_empty() => out.push_str(" {}\n"),
        Node::Map(m) => {
            out.push('\n');
            write_map(out, m, indent + 2, None);
        }
        Node::Seq(items) if items.is_empty() => out.push_str(" []\n"),
        Node::Seq(items) => {
            out.push('\n');
            write_seq(out, items, indent);
        }
    }
}

fn write_seq(out: &mut String, items: &[Node], indent: usize) {
    for item in items {
        out.push_str(&pad(indent));
        out.push('-');
        match item {
            Node::Map(m) if !m.is_empty() => {
                out.push(' ');
                write_map(out, m, indent + 2, Some(()));
            }
            Node::Seq(inner) if !inner.is_empty() => {
                out.push('\n');
                write_seq(out, inner, indent + 2);
            }
            other => write_value(out, other, indent),
        }
    }
}

/// ` value\n`, quoted when needed, or a literal block (`|-`) for a multi-line string whose
/// content needs no quotes; `block_indent` is the content indentation of a block.
fn write_string(out: &mut String, v: &str, block_indent: usize) {
    if v.contains('\n') && !needs_quotes(v) && !v.contains('\r') && !v.contains('\u{feff}') {
        let header = if v.ends_with("\n\n") {
            "|+"
        } else if v.ends_with('\n') {
            "|"
        } else {
            "|-"
        };
        out.push(' ');
        out.push_str(header);
        out.push('\n');
        let body = v.strip_suffix('\n').unwrap_or(v);
        for line in body.split('\n') {
            if !line.is_empty() {
                out.push_str(&pad(block_indent));
                out.push_str(line);
            }
            out.push('\n');
        }
        return;
    }
    out.push(' ');
    out.push_str(&scalar_text(v));
    out.push('\n');
}

/// goccy's `IsNeedQuoted`: would a plain scalar read back as something other than this
/// string?
fn needs_quotes(v: &str) -> bool {
    const RESERVED: &[&str] = &[
        "null", "Null", "NULL", "~", "true", "True", "TRUE", "false", "False", "FALSE", "y", "Y",
        "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off", "OFF",
    ];
    if v.is_empty() || RESERVED.contains(&v) || v == "-" || is_number(v) {
        return true;
    }
    let b = v.as_bytes();
    if matches!(
        b[0],
        b'*' | b'&'
            | b'['
            | b'{'
            | b'}'
            | b']'
            | b','
            | b'!'
            | b'|'
            | b'>'
            | b'%'
            | b'\''
            | b'"'
            | b'@'
            | b' '
            | b'`'
    ) {
        return true;
    }
    if matches!(b[b.len() - 1], b':' | b' ') {
        return true;
    }
    if is_timestamp(v) {
        return true;
    }
    for (i, c) in b.iter().enumerate() {
        match c {
            b'#' | b'\\' => return true,
            b':' | b'-' if b.get(i + 1) == Some(&b' ') => return true,
            _ => {}
        }
    }
    false
}

/// goccy's number detection (YAML 1.1 style: `0x`, `0o`, `0b`, leading-zero octal, `_`).
fn is_number(v: &str) -> bool {
    if v.starts_with('_') {
        return false;
    }
    let dots = v.matches('.').count();
    if dots > 1 {
        return false;
    }
    let unsigned = v.strip_prefix('+').unwrap_or(v);
    let unsigned = unsigned.strip_prefix('-').unwrap_or(unsigned);
    let norm = unsigned.replace('_', "");
    let parse_uint = |digits: &str, radix: u32| -> bool {
        if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
            return false;
        }
        // out of range still counts as a number
        true
    };
    if let Some(h) = norm.strip_prefix("0x") {
        return parse_uint(h, 16);
    }
    if let Some(o) = norm.strip_prefix("0o") {
        return parse_uint(o, 8);
    }
    if let Some(bn) = norm.strip_prefix("0b") {
        return parse_uint(bn, 2);
    }
    if norm.starts_with('0') && norm.len() > 1 && dots == 0 {
        return parse_uint(&norm, 8);
    }
    if dots == 1 {
        return is_go_float(&norm);
    }
    parse_uint(&norm, 10)
}

/// Go's `strconv.ParseFloat` syntax for a text with exactly one `.` (decimal with optional
/// exponent).
fn is_go_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    let mut mantissa_digits = 0;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
        mantissa_digits += 1;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
            mantissa_digits += 1;
        }
    }
    if mantissa_digits == 0 {
        return false;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    i == b.len()
}

/// goccy quotes strings Go's `time.Parse` reads as RFC 3339, `2006-01-02 15:04:05`,
/// `2006-01-02` or `15:4`.
fn is_timestamp(v: &str) -> bool {
    let b = v.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        b.get(r.clone())
            .is_some_and(|s| s.iter().all(|c| c.is_ascii_digit()))
    };
    let num = |r: std::ops::Range<usize>| -> u32 {
        std::str::from_utf8(&b[r])
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(99)
    };
    // 15:4 (hour 1-2 digits, minute 1-2 digits)
    if let Some((h, m)) = v.split_once(':') {
        if (1..=2).contains(&h.len())
            && (1..=2).contains(&m.len())
            && h.bytes().all(|c| c.is_ascii_digit())
            && m.bytes().all(|c| c.is_ascii_digit())
            && h.parse::<u32>().is_ok_and(|x| x < 24)
            && m.parse::<u32>().is_ok_and(|x| x < 60)
        {
            return true;
        }
    }
    let date_ok = b.len() >= 10
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && chrono::NaiveDate::from_ymd_opt(num(0..4) as i32, num(5..7), num(8..10)).is_some();
    if !date_ok {
        return false;
    }
    if b.len() == 10 {
        return true;
    }
    // time part after ' ' (DateTime) or 'T'/'t' (RFC 3339)
    let sep = b[10];
    if !(sep == b' ' || sep == b'T' || sep == b't') || b.len() < 19 {
        return false;
    }
    if !(digits(11..13) && b[13] == b':' && digits(14..16) && b[16] == b':' && digits(17..19)) {
        return false;
    }
    if num(11..13) > 23 || num(14..16) > 59 || num(17..19) > 59 {
        return false;
    }
    let mut i = 19;
    if i < b.len() && (b[i] == b'.' || b[i] == b',') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    let rest = &v[i..];
    if sep == b' ' {
        return rest.is_empty();
    }
    rest == "Z"
        || (rest.len() == 6
            && (rest.starts_with('+') || rest.starts_with('-'))
            && rest.as_bytes()[3] == b':'
            && rest[1..3].bytes().all(|c| c.is_ascii_digit())
            && rest[4..6].bytes().all(|c| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn quoting_rules() {
        for q in [
            "",
            "3",
            "3.9",
            "1.0",
            "0x1F",
            "010",
            "true",
            "no",
            "null",
            "~",
            "-",
            "a: b",
            "a #b",
            "*x",
            "{x",
            "x:",
            " x",
            "2024-01-02",
            "12:30",
            "1_000",
            "-5",
            ".5",
            "1.5e3",
        ] {
            assert!(needs_quotes(q), "{q:?} should be quoted");
        }
        for p in [
            "latest",
            "registry:5000",
            "registry:5000/hub/alpine",
            "bkup-{{.Ref.Tag}}",
            "15 3 * * *",
            "1e3",
            "v1.2.3",
            "application/vnd.oci.image.index.v1+json",
            "a-b",
            "0s",
            "5m0s",
            "3.10.1",
        ] {
            assert!(!needs_quotes(p), "{p:?} should be plain");
        }
    }

    #[test]
    fn empty_config() {
        let c = Config::from_yaml("", "c.yml").unwrap();
        let text = config_yaml(&c);
        assert!(text.starts_with("version: 1\ncreds: []\ndefaults:\n  backup: \"\"\n"));
        assert!(text.contains("  digestTags: null\n"));
        assert!(text.contains("  referrerFilters: []\n"));
        assert!(text.contains("  hooks:\n    pre: null\n    post: null\n    unchanged: null\n"));
        assert!(text.contains("  ratelimit:\n    min: 0\n    retry: 5m0s\n"));
        assert!(text.ends_with(
            "  userAgent: \"\"\n  cleanupTags: null\n  cleanupTagsExclude: null\n  cleanupTagsMaxPercent: null\nsync: []\n"
        ));
        // a step prints its merged pruning fields
        let c = Config::from_yaml(
            "sync:\n  - source: a\n    target: b\n    type: repository\n",
            "c.yml",
        )
        .unwrap();
        let text = config_yaml(&c);
        assert!(text.contains(
            "  cleanupTags: false\n  cleanupTagsExclude:\n  - \".*\\\\.sig$\"\n  - \".*\\\\.att$\"\n  - \".*\\\\.sbom$\"\n  cleanupTagsMaxPercent: 25\n"
        ), "{text}");
    }

    #[test]
    fn literal_block_and_maps() {
        let yaml = "creds:\n  - registry: r\n    regcert: \"-----BEGIN X-----\\nAAA\\n-----END X-----\"\n    apiOpts:\n      disableHead: \"true\"\n    reqPerSec: 2\n";
        let c = Config::from_yaml(yaml, "c.yml").unwrap();
        let text = config_yaml(&c);
        assert!(
            text.contains(
                "creds:\n- registry: r\n  tls: \"\"\n  regcert: |-\n    -----BEGIN X-----\n    AAA\n    -----END X-----\n  clientCert: \"\"\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("  apiOpts:\n    disableHead: \"true\"\n"),
            "{text}"
        );
        assert!(text.contains("  reqPerSec: 2.0\n"), "{text}");
        assert!(text.contains("  mirrors: []\n"), "{text}");
    }
}
