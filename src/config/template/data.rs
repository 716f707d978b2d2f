//! The values given to templates (spec §4.4): `.Sync`/`.Step` ([`sync_value`]), `.Ref`
//! ([`ref_value`]), the `version` data ([`VersionInfo`]), and time and duration values, as
//! gtmpl values that keep Go's struct field order, JSON names and methods.

use super::funcs::{
    dm_hours, dm_microseconds, dm_milliseconds, dm_minutes, dm_nanoseconds, dm_seconds, dm_string,
    m_common_name, tm_day, tm_hour, tm_is_zero, tm_local, tm_minute, tm_month, tm_nanosecond,
    tm_second, tm_string, tm_unix, tm_unix_micro, tm_unix_milli, tm_unix_nano, tm_utc, tm_weekday,
    tm_year, tm_year_day,
};
use crate::config::schema::{Hook, Hooks, ReferrerFilter, RepoFilter, SyncStep, TagFilter};
use crate::gocompat::duration::duration_of;
use crate::gocompat::gotime::GoTime;
use crate::reference::{Reference, Scheme};
use gtmpl::{Func, Value};
use gtmpl_value::Function;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

/// Hidden keys of objects (a template cannot name them: field names are identifiers).
const KIND: &str = "\u{1}kind";
/// `[[GoName, jsonName], ...]`: field order for `%v` and JSON (`-` = not in JSON,
/// `name,omitempty`).
pub(crate) const FIELDS: &str = "\u{1}fields";
/// Pre-rendered `printPretty` text (Go's `MarshalPretty`).
pub(super) const PRETTY: &str = "\u{1}pretty";
const T_SEC: &str = "\u{1}sec";
const T_NSEC: &str = "\u{1}nsec";
const T_OFF: &str = "\u{1}off";
const T_ZONE: &str = "\u{1}zone";
const D_NS: &str = "\u{1}ns";

pub(crate) fn is_hidden(key: &str) -> bool {
    key.starts_with('\u{1}')
}

/// Builds an object value (a Go struct).
pub(super) struct Obj {
    map: HashMap<String, Value>,
    fields: Vec<Value>,
}

impl Obj {
    pub(super) fn new(kind: &str) -> Obj {
        let mut map = HashMap::new();
        map.insert(KIND.to_string(), Value::from(kind));
        Obj {
            map,
            fields: Vec::new(),
        }
    }

    /// A data field: `go` is the template name, `json` the JSON key (`""` = same as `go`).
    fn field(mut self, go: &str, json: &str, v: Value) -> Obj {
        let json = if json.is_empty() { go } else { json };
        self.fields
            .push(Value::Array(vec![Value::from(go), Value::from(json)]));
        self.map.insert(go.to_string(), v);
        self
    }

    /// An argument-less method (gtmpl calls it with the object as its only argument).
    pub(super) fn method(mut self, name: &str, f: Func) -> Obj {
        self.map
            .insert(name.to_string(), Value::Function(Function { f }));
        self
    }

    fn hidden(mut self, key: &str, v: Value) -> Obj {
        self.map.insert(key.to_string(), v);
        self
    }

    pub(super) fn build(mut self) -> Value {
        if !self.fields.is_empty() {
            self.map
                .insert(FIELDS.to_string(), Value::Array(self.fields));
        }
        Value::Object(self.map)
    }
}

pub(crate) fn kind_of(v: &Value) -> Option<&str> {
    match v {
        Value::Object(o) => match o.get(KIND) {
            Some(Value::String(k)) => Some(k.as_str()),
            _ => None,
        },
        _ => None,
    }
}

/// An integer the way gtmpl's literals are stored (non-negative → unsigned), so `eq` works.
pub(super) fn int_value(i: i64) -> Value {
    Value::from(i)
}

fn str_list(v: &[String]) -> Value {
    Value::Array(v.iter().map(|s| Value::from(s.as_str())).collect())
}

fn str_map(m: &BTreeMap<String, String>) -> Value {
    Value::Map(
        m.iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect(),
    )
}

fn tags_value(t: &TagFilter) -> Value {
    Obj::new("struct")
        .field("Allow", "allow", str_list(&t.allow))
        .field("Deny", "deny", str_list(&t.deny))
        .field(
            "SemverRange",
            "semverRange,omitempty",
            str_list(&t.semver_range),
        )
        .build()
}

fn repos_value(r: &RepoFilter) -> Value {
    Obj::new("struct")
        .field("Allow", "allow", str_list(&r.allow))
        .field("Deny", "deny", str_list(&r.deny))
        .build()
}

fn referrer_filter_value(f: &ReferrerFilter) -> Value {
    Obj::new("struct")
        .field(
            "ArtifactType",
            "artifactType",
            Value::from(f.artifact_type.as_str()),
        )
        .field("Annotations", "annotations", str_map(&f.annotations))
        .build()
}

fn hook_value(h: &Option<Hook>) -> Value {
    match h {
        None => Value::Nil,
        Some(h) => Obj::new("struct")
            .field("Type", "type", Value::from(h.kind.as_str()))
            .field("Params", "params", str_list(&h.params))
            .build(),
    }
}

fn hooks_value(h: &Hooks) -> Value {
    Obj::new("struct")
        .field("Pre", "pre", hook_value(&h.pre))
        .field("Post", "post", hook_value(&h.post))
        .field("Unchanged", "unchanged", hook_value(&h.unchanged))
        .build()
}

fn flag_value(b: Option<bool>) -> Value {
    match b {
        Some(b) => Value::Bool(b),
        None => Value::Nil,
    }
}

/// `.Sync` / `.Step`: a merged step with regsync's Go field names (spec §4.4).
pub(crate) fn sync_value(s: &SyncStep) -> Value {
    let filters = match &s.referrer_filters {
        Some(list) => Value::Array(list.iter().map(referrer_filter_value).collect()),
        None => Value::Array(Vec::new()),
    };
    let ratelimit = Obj::new("struct")
        .field("Min", "min", int_value(s.ratelimit.min))
        .field(
            "Retry",
            "retry",
            duration_value(duration_of(&s.ratelimit.retry).nanos()),
        )
        .build();
    Obj::new("struct")
        .field("Source", "source", Value::from(s.source.as_str()))
        .field("Target", "target", Value::from(s.target.as_str()))
        .field("Type", "type", Value::from(s.kind.as_str()))
        .field("Tags", "tags", tags_value(&s.tags))
        .field(
            "TagSets",
            "tagSets",
            Value::Array(s.tag_sets.iter().map(tags_value).collect()),
        )
        .field("Repos", "repos", repos_value(&s.repos))
        .field("DigestTags", "digestTags", flag_value(s.digest_tags))
        .field("Referrers", "referrers", flag_value(s.referrers))
        .field("ReferrerFilters", "referrerFilters", filters)
        .field(
            "ReferrerSrc",
            "referrerSource",
            Value::from(s.referrer_source.as_str()),
        )
        .field(
            "ReferrerTgt",
            "referrerTarget",
            Value::from(s.referrer_target.as_str()),
        )
        .field("ReferrerSlow", "referrerSlow", flag_value(s.referrer_slow))
        .field("Platform", "platform", Value::from(s.platform.as_str()))
        .field("Platforms", "platforms", str_list(&s.platforms))
        .field("FastCheck", "fastCheck", flag_value(s.fast_check))
        .field(
            "ForceRecursive",
            "forceRecursive",
            flag_value(s.force_recursive),
        )
        .field(
            "IncludeExternal",
            "includeExternal",
            flag_value(s.include_external),
        )
        .field("Backup", "backup", Value::from(s.backup.as_str()))
        .field(
            "Interval",
            "interval",
            duration_value(duration_of(&s.interval).nanos()),
        )
        .field("Schedule", "schedule", Value::from(s.schedule.as_str()))
        .field("RateLimit", "ratelimit", ratelimit)
        .field("MediaTypes", "mediaTypes", str_list(&s.media_types))
        .field("Hooks", "hooks", hooks_value(&s.hooks))
        .build()
}

/// `.Ref` of the backup template: Go's `ref.Ref` fields plus `CommonName`.
pub(crate) fn ref_value(r: &Reference) -> Value {
    let scheme = match r.scheme {
        Scheme::Reg => "reg",
        Scheme::OciDir => "ocidir",
    };
    // Go's ref.New sets the tag to `latest` when neither a tag nor a digest is given.
    let tag = match (&r.tag, &r.digest) {
        (Some(t), _) => t.clone(),
        (None, None) => "latest".to_string(),
        (None, Some(_)) => String::new(),
    };
    let digest = r
        .digest
        .as_ref()
        .map(|d| d.as_str().to_string())
        .unwrap_or_default();
    let mut cn = r.clone();
    if cn.tag.is_none() && cn.digest.is_none() {
        cn.tag = Some(tag.clone());
    }
    Obj::new("struct")
        .field("Scheme", "", Value::from(scheme))
        .field("Reference", "", Value::from(r.original.as_str()))
        .field("Registry", "", Value::from(r.registry.as_str()))
        .field("Repository", "", Value::from(r.repository.as_str()))
        .field("Tag", "", Value::from(tag))
        .field("Digest", "", Value::from(digest))
        .field("Path", "", Value::from(r.path.as_str()))
        .method("CommonName", m_common_name)
        .hidden("\u{1}cn", Value::from(cn.common_name()))
        .build()
}

/// Build information shown by `version` (spec §2.3).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VersionInfo {
    pub vcs_tag: String,
    pub vcs_ref: String,
    pub vcs_commit: String,
    pub vcs_state: String,
    pub vcs_date: String,
    pub platform: String,
    /// The compiler version (`GoVer` in regsync).
    pub go_ver: String,
    /// The compiler name (`GoCompiler` in regsync).
    pub go_compiler: String,
}

impl VersionInfo {
    /// regsync's `MarshalPretty`: an aligned two-column listing (Go tabwriter, padding 1).
    pub fn pretty(&self) -> String {
        let rows = [
            ("VCSTag:", &self.vcs_tag),
            ("VCSRef:", &self.vcs_ref),
            ("VCSCommit:", &self.vcs_commit),
            ("VCSState:", &self.vcs_state),
            ("VCSDate:", &self.vcs_date),
            ("Platform:", &self.platform),
            ("GoVer:", &self.go_ver),
            ("GoCompiler:", &self.go_compiler),
        ];
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
        let mut out = String::new();
        for (k, v) in rows {
            let _ = writeln!(out, "{k:width$}{v}");
        }
        out
    }

    pub(super) fn value(&self) -> Value {
        let main = Obj::new("struct")
            .field("Path", "", Value::from("regsync-rs"))
            .field("Version", "", Value::from(self.vcs_tag.as_str()))
            .field("Sum", "", Value::from(""))
            .field("Replace", "", Value::Nil)
            .build();
        let setting = |k: &str, v: &str| {
            Obj::new("struct")
                .field("Key", "", Value::from(k))
                .field("Value", "", Value::from(v))
                .build()
        };
        let modified = match self.vcs_state.as_str() {
            "dirty" => "true",
            "clean" => "false",
            _ => "unknown",
        };
        let debug = Obj::new("struct")
            .field("GoVersion", "", Value::from(self.go_ver.as_str()))
            .field("Path", "", Value::from("regsync-rs"))
            .field("Main", "", main)
            .field("Deps", "", Value::Array(Vec::new()))
            .field(
                "Settings",
                "",
                Value::Array(vec![
                    setting("vcs", "git"),
                    setting("vcs.revision", &self.vcs_commit),
                    setting("vcs.time", &self.vcs_date),
                    setting("vcs.modified", modified),
                ]),
            )
            .build();
        Obj::new("struct")
            .field("GoVer", "goVersion", Value::from(self.go_ver.as_str()))
            .field(
                "GoCompiler",
                "goCompiler",
                Value::from(self.go_compiler.as_str()),
            )
            .field("Platform", "platform", Value::from(self.platform.as_str()))
            .field(
                "VCSCommit",
                "vcsCommit",
                Value::from(self.vcs_commit.as_str()),
            )
            .field("VCSDate", "vcsDate", Value::from(self.vcs_date.as_str()))
            .field("VCSRef", "vcsRef", Value::from(self.vcs_ref.as_str()))
            .field("VCSState", "vcsState", Value::from(self.vcs_state.as_str()))
            .field("VCSTag", "vcsTag", Value::from(self.vcs_tag.as_str()))
            .field("Debug", "debug,omitempty", debug)
            .hidden(PRETTY, Value::from(self.pretty()))
            .build()
    }
}

// ---------------------------------------------------------------------------------------------
// Go time and duration values
// ---------------------------------------------------------------------------------------------

/// A `time.Time` as templates see it: hidden fields plus Go's argument-less methods (those
/// with arguments go through `_method`, see `funcs`).
impl GoTime {
    pub(super) fn to_value(&self) -> Value {
        Obj::new("time")
            .hidden(T_SEC, Value::from(self.sec))
            .hidden(T_NSEC, Value::from(self.nsec))
            .hidden(T_OFF, Value::from(self.off))
            .hidden(T_ZONE, Value::from(self.zone.as_str()))
            .method("Unix", tm_unix)
            .method("UnixMilli", tm_unix_milli)
            .method("UnixMicro", tm_unix_micro)
            .method("UnixNano", tm_unix_nano)
            .method("UTC", tm_utc)
            .method("Local", tm_local)
            .method("Year", tm_year)
            .method("Month", tm_month)
            .method("Day", tm_day)
            .method("Hour", tm_hour)
            .method("Minute", tm_minute)
            .method("Second", tm_second)
            .method("Nanosecond", tm_nanosecond)
            .method("YearDay", tm_year_day)
            .method("Weekday", tm_weekday)
            .method("IsZero", tm_is_zero)
            .method("String", tm_string)
            .build()
    }

    pub(crate) fn from_value(v: &Value) -> Option<GoTime> {
        let Value::Object(o) = v else { return None };
        if kind_of(v) != Some("time") {
            return None;
        }
        let num = |k: &str| match o.get(k) {
            Some(Value::Number(n)) => n.as_i64(),
            _ => None,
        };
        Some(GoTime {
            sec: num(T_SEC)?,
            nsec: num(T_NSEC)? as u32,
            off: num(T_OFF)? as i32,
            zone: match o.get(T_ZONE) {
                Some(Value::String(s)) => s.clone(),
                _ => String::new(),
            },
        })
    }
}

pub(super) fn duration_value(ns: i64) -> Value {
    Obj::new("duration")
        .hidden(D_NS, Value::from(ns))
        .method("Hours", dm_hours)
        .method("Minutes", dm_minutes)
        .method("Seconds", dm_seconds)
        .method("Milliseconds", dm_milliseconds)
        .method("Microseconds", dm_microseconds)
        .method("Nanoseconds", dm_nanoseconds)
        .method("String", dm_string)
        .build()
}

pub(crate) fn duration_ns(v: &Value) -> Option<i64> {
    match v {
        Value::Object(o) if kind_of(v) == Some("duration") => match o.get(D_NS) {
            Some(Value::Number(n)) => n.as_i64(),
            _ => None,
        },
        _ => None,
    }
}

pub(super) fn float_value(f: f64) -> Value {
    // gtmpl stores whole floats as integers; keep them floats for printing.
    if f.fract() == 0.0 && f.abs() < 1e15 {
        int_value(f as i64)
    } else {
        Value::from(f)
    }
}
