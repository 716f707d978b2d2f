//! Go `text/template` expansion of config strings (spec §3.7, §4), on the `gtmpl` engine.
//!
//! * Load time ([`expand_templates`]): creds `registry`, `user`, `pass`, `regcert`,
//!   `clientCert`, `clientKey` with no data; steps `source`, `referrerSource`, `target`,
//!   `referrerTarget` in that order with `{ .Sync = <merged step> }` (Go field names). `target`
//!   sees the expanded `Source`/`ReferrerSrc` but `referrerTarget` still sees the unexpanded
//!   `Target` (regsync quirk, kept). A string without `{{` is left as is.
//! * Copy time ([`render_backup`]): `backup` with `{ .Ref, .Step, .Sync }`, trimmed.
//! * `version --format` ([`render_version`]).
//!
//! Functions: the 12 of regsync (`default env file join json jsonPretty printPretty lower upper
//! split trimSpace time`) and Go's built-ins (`and or not len index slice print printf println
//! eq ne lt le gt ge call html js urlquery`). Deliberate difference: `file` of a missing or
//! unreadable path is an error naming the path (regsync silently yields `""`).
//!
//! gtmpl is a partial port of Go's engine; the text is rewritten before parsing
//! ([`preprocess`]) so that Go syntax behaves as in Go:
//! * method calls with arguments on data values (`(time).Now.Format "20060102"`,
//!   `$t.AddDate 0 -1 0`, `(time).Parse LAYOUT VALUE`) become calls of an internal `_method`
//!   function (gtmpl only calls argument-less methods, as `Func` fields of objects);
//! * the value of every output action goes through `_out`, which prints it the way Go's `%v`
//!   does (`[a b]`, `map[k:v]`, `<nil>`, time and duration values);
//! * string and character literals are decoded here (Go escapes) and handed to gtmpl in a form
//!   its lexer handles; integer literals with `0x`/`0o`/`0b`/`_`/leading-zero octal are
//!   rewritten in decimal.
//!
//! Limits (documented, not Go): `break`/`continue` are unsupported; a time value's `Month` and
//! `Weekday` are numbers (Go prints `January`/`Sunday`); the local time zone has no
//! abbreviation unless it is UTC (`MST` prints `+0100`); struct values print their fields in
//! Go field order but pointers print as the value, not an address; `eq` needs both sides of
//! the same kind (an int is not equal to a float); execution errors carry no column.

use super::schema::{Config, Hook, Hooks, ReferrerFilter, RepoFilter, SyncStep, TagFilter};
use super::validate::{creds_context, step_context};
use super::ConfigError;
use crate::gocompat::duration::{duration_of, format_duration, parse_duration, GoDuration};
use crate::gocompat::gofmt::{go_fmt, json_text, sprint};
use crate::gocompat::gotext::os_error_text;
use crate::gocompat::gotime::{
    add_date, go_format, go_parse, truncate_time, GoTime, ZERO_TIME_UNIX,
};
use crate::reference::{Reference, Scheme};
use chrono::{Datelike, Timelike};
use gtmpl::{Context, Func, FuncError, Template, Value};
use gtmpl_value::Function;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

// ---------------------------------------------------------------------------------------------
// Data objects
// ---------------------------------------------------------------------------------------------

/// Hidden keys of objects (a template cannot name them: field names are identifiers).
const KIND: &str = "\u{1}kind";
/// `[[GoName, jsonName], ...]`: field order for `%v` and JSON (`-` = not in JSON,
/// `name,omitempty`).
pub(crate) const FIELDS: &str = "\u{1}fields";
/// Pre-rendered `printPretty` text (Go's `MarshalPretty`).
const PRETTY: &str = "\u{1}pretty";
const T_SEC: &str = "\u{1}sec";
const T_NSEC: &str = "\u{1}nsec";
const T_OFF: &str = "\u{1}off";
const T_ZONE: &str = "\u{1}zone";
const D_NS: &str = "\u{1}ns";

pub(crate) fn is_hidden(key: &str) -> bool {
    key.starts_with('\u{1}')
}

/// Builds an object value (a Go struct).
struct Obj {
    map: HashMap<String, Value>,
    fields: Vec<Value>,
}

impl Obj {
    fn new(kind: &str) -> Obj {
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
    fn method(mut self, name: &str, f: Func) -> Obj {
        self.map
            .insert(name.to_string(), Value::Function(Function { f }));
        self
    }

    fn hidden(mut self, key: &str, v: Value) -> Obj {
        self.map.insert(key.to_string(), v);
        self
    }

    fn build(mut self) -> Value {
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
fn int_value(i: i64) -> Value {
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

fn m_common_name(args: &[Value]) -> Result<Value, FuncError> {
    match args.first() {
        Some(Value::Object(o)) => match o.get("\u{1}cn") {
            Some(v) => Ok(v.clone()),
            None => Ok(Value::from("")),
        },
        _ => Err(FuncError::Generic("CommonName: not a reference".into())),
    }
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

    fn value(&self) -> Value {
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

impl GoTime {
    fn to_value(&self) -> Value {
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

fn recv_time(args: &[Value], name: &str) -> Result<GoTime, FuncError> {
    args.first()
        .and_then(GoTime::from_value)
        .ok_or_else(|| FuncError::Generic(format!("{name}: not a time value")))
}

macro_rules! time_method {
    ($fname:ident, $name:literal, |$t:ident| $body:expr) => {
        fn $fname(args: &[Value]) -> Result<Value, FuncError> {
            let $t = recv_time(args, $name)?;
            Ok($body)
        }
    };
}

time_method!(tm_unix, "Unix", |t| int_value(t.sec));
time_method!(tm_unix_milli, "UnixMilli", |t| int_value(
    (t.unix_nanos() / 1_000_000) as i64
));
time_method!(tm_unix_micro, "UnixMicro", |t| int_value(
    (t.unix_nanos() / 1_000) as i64
));
time_method!(tm_unix_nano, "UnixNano", |t| int_value(
    t.unix_nanos().clamp(i64::MIN as i128, i64::MAX as i128) as i64
));
time_method!(tm_utc, "UTC", |t| t.utc().to_value());
time_method!(tm_local, "Local", |t| t.local().to_value());
time_method!(tm_year, "Year", |t| int_value(t.civil().year() as i64));
time_method!(tm_month, "Month", |t| int_value(t.civil().month() as i64));
time_method!(tm_day, "Day", |t| int_value(t.civil().day() as i64));
time_method!(tm_hour, "Hour", |t| int_value(t.civil().hour() as i64));
time_method!(
    tm_minute,
    "Minute",
    |t| int_value(t.civil().minute() as i64)
);
time_method!(
    tm_second,
    "Second",
    |t| int_value(t.civil().second() as i64)
);
time_method!(tm_nanosecond, "Nanosecond", |t| int_value(t.nsec as i64));
time_method!(tm_year_day, "YearDay", |t| int_value(
    t.civil().ordinal() as i64
));
time_method!(tm_weekday, "Weekday", |t| int_value(
    t.civil().weekday().num_days_from_sunday() as i64
));
time_method!(tm_is_zero, "IsZero", |t| Value::Bool(
    t.sec == ZERO_TIME_UNIX && t.nsec == 0
));
time_method!(tm_string, "String", |t| Value::from(t.go_string()));

fn duration_value(ns: i64) -> Value {
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

fn recv_duration(args: &[Value]) -> Result<i64, FuncError> {
    args.first()
        .and_then(duration_ns)
        .ok_or_else(|| FuncError::Generic("not a duration value".into()))
}

fn float_value(f: f64) -> Value {
    // gtmpl stores whole floats as integers; keep them floats for printing.
    if f.fract() == 0.0 && f.abs() < 1e15 {
        int_value(f as i64)
    } else {
        Value::from(f)
    }
}

fn dm_hours(a: &[Value]) -> Result<Value, FuncError> {
    Ok(float_value(recv_duration(a)? as f64 / 3.6e12))
}
fn dm_minutes(a: &[Value]) -> Result<Value, FuncError> {
    Ok(float_value(recv_duration(a)? as f64 / 6e10))
}
fn dm_seconds(a: &[Value]) -> Result<Value, FuncError> {
    Ok(float_value(recv_duration(a)? as f64 / 1e9))
}
fn dm_milliseconds(a: &[Value]) -> Result<Value, FuncError> {
    Ok(int_value(recv_duration(a)? / 1_000_000))
}
fn dm_microseconds(a: &[Value]) -> Result<Value, FuncError> {
    Ok(int_value(recv_duration(a)? / 1_000))
}
fn dm_nanoseconds(a: &[Value]) -> Result<Value, FuncError> {
    Ok(int_value(recv_duration(a)?))
}
fn dm_string(a: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::from(format_duration(GoDuration::from_nanos(
        recv_duration(a)?,
    ))))
}

fn tf_now(_args: &[Value]) -> Result<Value, FuncError> {
    Ok(GoTime::now().to_value())
}

/// `time`: an object with `Now` and `Parse LAYOUT VALUE` (via `_method`).
fn f_time(args: &[Value]) -> Result<Value, FuncError> {
    check_args("time", args, 0)?;
    Ok(Obj::new("timefuncs").method("Now", tf_now).build())
}

// ---------------------------------------------------------------------------------------------
// Functions
// ---------------------------------------------------------------------------------------------

fn err(name: &str, msg: impl std::fmt::Display) -> FuncError {
    FuncError::Generic(format!("error calling {name}: {msg}"))
}

fn check_args(name: &str, args: &[Value], want: usize) -> Result<(), FuncError> {
    if args.len() != want {
        return Err(FuncError::Generic(format!(
            "wrong number of args for {name}: want {want} got {}",
            args.len()
        )));
    }
    Ok(())
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "string",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.as_f64().is_some() => "float64",
        Value::Number(_) => "int",
        Value::Nil | Value::NoValue => "nil",
        Value::Array(_) => "[]string",
        Value::Map(_) => "map[string]string",
        Value::Function(_) => "func",
        Value::Object(_) => match kind_of(v) {
            Some("time") => "time.Time",
            Some("duration") => "time.Duration",
            _ => "struct",
        },
    }
}

fn arg_str<'a>(name: &str, v: &'a Value) -> Result<&'a str, FuncError> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(FuncError::Generic(format!(
            "wrong type for value in call to {name}; expected string; got {}",
            type_name(other)
        ))),
    }
}

fn arg_int(name: &str, v: &Value) -> Result<i64, FuncError> {
    match v {
        Value::Number(n) => n.as_i64().ok_or_else(|| {
            FuncError::Generic(format!(
                "wrong type for value in call to {name}; expected int; got {}",
                type_name(v)
            ))
        }),
        other => Err(FuncError::Generic(format!(
            "wrong type for value in call to {name}; expected int; got {}",
            type_name(other)
        ))),
    }
}

fn f_default(args: &[Value]) -> Result<Value, FuncError> {
    check_args("default", args, 2)?;
    let (def, orig) = (&args[0], &args[1]);
    let zero = match orig {
        Value::Nil | Value::NoValue => true,
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0) || n.as_u64() == Some(0),
        Value::Array(_) | Value::Map(_) => {
            return Err(err(
                "default",
                format!(
                    "runtime error: comparing uncomparable type {}",
                    type_name(orig)
                ),
            ))
        }
        Value::Object(_) | Value::Function(_) => false,
    };
    Ok(if zero { def.clone() } else { orig.clone() })
}

fn f_env(args: &[Value]) -> Result<Value, FuncError> {
    check_args("env", args, 1)?;
    let key = arg_str("env", &args[0])?;
    let value = std::env::var_os(key)
        .map(|v| v.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Value::from(value))
}

/// `file PATH`: contents, whitespace-trimmed. Unlike regsync, a failure is an error (naming
/// the path), not `""`.
fn f_file(args: &[Value]) -> Result<Value, FuncError> {
    check_args("file", args, 1)?;
    let path = arg_str("file", &args[0])?;
    match std::fs::read(path) {
        Ok(bytes) => Ok(Value::from(
            String::from_utf8_lossy(&bytes).trim().to_string(),
        )),
        Err(e) => {
            let op = if e.kind() == std::io::ErrorKind::IsADirectory
                || std::path::Path::new(path).is_dir()
            {
                "read"
            } else {
                "open"
            };
            Err(err("file", format!("{op} {path}: {}", os_error_text(&e))))
        }
    }
}

fn f_join(args: &[Value]) -> Result<Value, FuncError> {
    check_args("join", args, 2)?;
    let sep = arg_str("join", &args[1])?;
    match &args[0] {
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(go_fmt).collect();
            Ok(Value::from(parts.join(sep)))
        }
        other => Err(FuncError::Generic(format!(
            "wrong type for value in call to join; expected []string; got {}",
            type_name(other)
        ))),
    }
}

fn f_json(args: &[Value]) -> Result<Value, FuncError> {
    check_args("json", args, 1)?;
    Ok(Value::from(json_text(&args[0], None)))
}

fn f_json_pretty(args: &[Value]) -> Result<Value, FuncError> {
    check_args("jsonPretty", args, 1)?;
    Ok(Value::from(json_text(&args[0], Some("  "))))
}

fn f_print_pretty(args: &[Value]) -> Result<Value, FuncError> {
    check_args("printPretty", args, 1)?;
    if let Value::Object(o) = &args[0] {
        if let Some(Value::String(p)) = o.get(PRETTY) {
            return Ok(Value::from(p.as_str()));
        }
    }
    Ok(Value::from(json_text(&args[0], Some("  "))))
}

fn f_lower(args: &[Value]) -> Result<Value, FuncError> {
    check_args("lower", args, 1)?;
    Ok(Value::from(arg_str("lower", &args[0])?.to_lowercase()))
}

fn f_upper(args: &[Value]) -> Result<Value, FuncError> {
    check_args("upper", args, 1)?;
    Ok(Value::from(arg_str("upper", &args[0])?.to_uppercase()))
}

fn f_split(args: &[Value]) -> Result<Value, FuncError> {
    check_args("split", args, 2)?;
    let s = arg_str("split", &args[0])?;
    let sep = arg_str("split", &args[1])?;
    let parts: Vec<Value> = if sep.is_empty() {
        s.chars().map(|c| Value::from(c.to_string())).collect()
    } else {
        s.split(sep).map(Value::from).collect()
    };
    Ok(Value::Array(parts))
}

fn f_trim_space(args: &[Value]) -> Result<Value, FuncError> {
    check_args("trimSpace", args, 1)?;
    Ok(Value::from(arg_str("trimSpace", &args[0])?.trim()))
}

fn f_print(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::from(sprint(args)))
}

fn f_println(args: &[Value]) -> Result<Value, FuncError> {
    let parts: Vec<String> = args.iter().map(go_fmt).collect();
    Ok(Value::from(format!("{}\n", parts.join(" "))))
}

/// gtmpl's `printf` with composite operands pre-formatted the Go way (`%v`, `%s`).
fn f_printf(args: &[Value]) -> Result<Value, FuncError> {
    let converted: Vec<Value> = args
        .iter()
        .map(|a| match a {
            Value::Array(_) | Value::Map(_) | Value::Object(_) | Value::Nil | Value::NoValue => {
                Value::from(go_fmt(a))
            }
            other => other.clone(),
        })
        .collect();
    // gtmpl's messages quote the operand, which may be a secret: keep the verb only
    gtmpl::funcs::printf(&converted).map_err(|e| {
        let msg = e.to_string();
        match msg.rfind(" as ") {
            Some(i) if msg.contains("unable to format") => err(
                "printf",
                format!("cannot format operand as %{}", &msg[i + 4..]),
            ),
            _ if msg.contains("unable to format") => err("printf", "cannot format operand"),
            _ => err("printf", msg),
        }
    })
}

/// gtmpl's ordered comparisons, with Go's message instead of one quoting the operands.
macro_rules! compare_fn {
    ($fname:ident, $name:literal, $inner:path) => {
        fn $fname(args: &[Value]) -> Result<Value, FuncError> {
            check_args($name, args, 2)?;
            $inner(args).map_err(|_| err($name, "incompatible types for comparison"))
        }
    };
}

compare_fn!(f_lt, "lt", gtmpl::funcs::lt);
compare_fn!(f_le, "le", gtmpl::funcs::le);
compare_fn!(f_gt, "gt", gtmpl::funcs::gt);
compare_fn!(f_ge, "ge", gtmpl::funcs::ge);

fn f_len(args: &[Value]) -> Result<Value, FuncError> {
    check_args("len", args, 1)?;
    let n = match &args[0] {
        Value::String(s) => s.len(),
        Value::Array(a) => a.len(),
        Value::Map(m) => m.len(),
        other => {
            return Err(err("len", format!("len of type {}", type_name(other))));
        }
    };
    Ok(Value::from(n))
}

fn index_of(name: &str, v: &Value, len: usize) -> Result<usize, FuncError> {
    let i = arg_int(name, v).map_err(|_| {
        err(
            name,
            format!("cannot index slice/array with type {}", type_name(v)),
        )
    })?;
    if i < 0 || i as usize > len {
        return Err(err(name, format!("index out of range: {i}")));
    }
    Ok(i as usize)
}

fn f_index(args: &[Value]) -> Result<Value, FuncError> {
    let Some(first) = args.first() else {
        return Err(FuncError::Generic(
            "wrong number of args for index: want at least 1 got 0".into(),
        ));
    };
    let mut item = first.clone();
    for key in &args[1..] {
        item = match &item {
            Value::Array(a) => {
                let i = index_of("index", key, a.len())?;
                match a.get(i) {
                    Some(v) => v.clone(),
                    None => return Err(err("index", format!("index out of range: {i}"))),
                }
            }
            Value::String(s) => {
                let i = index_of("index", key, s.len())?;
                match s.as_bytes().get(i) {
                    Some(b) => Value::from(*b),
                    None => return Err(err("index", format!("index out of range: {i}"))),
                }
            }
            Value::Map(m) => {
                let k = arg_str("index", key)?;
                m.get(k).cloned().unwrap_or_else(|| Value::from(""))
            }
            Value::Nil | Value::NoValue => {
                return Err(err("index", "index of untyped nil"));
            }
            other => {
                return Err(err(
                    "index",
                    format!("can't index item of type {}", type_name(other)),
                ))
            }
        };
    }
    Ok(item)
}

fn f_slice(args: &[Value]) -> Result<Value, FuncError> {
    let Some(first) = args.first() else {
        return Err(FuncError::Generic(
            "wrong number of args for slice: want at least 1 got 0".into(),
        ));
    };
    let idx = &args[1..];
    if idx.len() > 3 {
        return Err(err(
            "slice",
            format!("too many slice indexes: {}", idx.len()),
        ));
    }
    let len = match first {
        Value::String(s) => {
            if idx.len() == 3 {
                return Err(err("slice", "cannot 3-index slice a string"));
            }
            s.len()
        }
        Value::Array(a) => a.len(),
        Value::Nil | Value::NoValue => return Err(err("slice", "slice of untyped nil")),
        other => {
            return Err(err(
                "slice",
                format!("can't slice item of type {}", type_name(other)),
            ))
        }
    };
    let mut bounds = [0usize, len, len];
    for (i, v) in idx.iter().enumerate() {
        bounds[i] = index_of("slice", v, len)?;
    }
    if bounds[0] > bounds[1] {
        return Err(err(
            "slice",
            format!("invalid slice index: {} > {}", bounds[0], bounds[1]),
        ));
    }
    match first {
        Value::String(s) => match s.get(bounds[0]..bounds[1]) {
            Some(sub) => Ok(Value::from(sub)),
            None => Ok(Value::from(
                String::from_utf8_lossy(&s.as_bytes()[bounds[0]..bounds[1]]).into_owned(),
            )),
        },
        Value::Array(a) => Ok(Value::Array(a[bounds[0]..bounds[1]].to_vec())),
        _ => unreachable!("checked above"),
    }
}

/// Go's evalArgs for html/js/urlquery: one string as is, else `fmt.Sprint`.
fn eval_args(args: &[Value]) -> String {
    match args {
        [Value::String(s)] => s.clone(),
        _ => sprint(args),
    }
}

fn f_html(args: &[Value]) -> Result<Value, FuncError> {
    let s = eval_args(args);
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\0' => out.push('\u{FFFD}'),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    Ok(Value::from(out))
}

fn f_js(args: &[Value]) -> Result<Value, FuncError> {
    let s = eval_args(args);
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '<' => out.push_str("\\u003C"),
            '>' => out.push_str("\\u003E"),
            '&' => out.push_str("\\u0026"),
            '=' => out.push_str("\\u003D"),
            c if (c as u32) < 0x20 || c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    Ok(Value::from(out))
}

/// Go's `url.QueryEscape`.
fn f_urlquery(args: &[Value]) -> Result<Value, FuncError> {
    let s = eval_args(args);
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            b => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    Ok(Value::from(out))
}

/// `_out`: an action's value printed as Go's `%v`.
fn f_out(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::from(args.last().map(go_fmt).unwrap_or_default()))
}

fn arg_time(name: &str, v: &Value) -> Result<GoTime, FuncError> {
    GoTime::from_value(v).ok_or_else(|| {
        FuncError::Generic(format!(
            "wrong type for value in call to {name}; expected time.Time; got {}",
            type_name(v)
        ))
    })
}

fn arg_duration(name: &str, v: &Value) -> Result<i64, FuncError> {
    if let Some(ns) = duration_ns(v) {
        return Ok(ns);
    }
    match v {
        Value::Number(n) if n.as_i64().is_some() => Ok(n.as_i64().unwrap_or(0)),
        Value::String(s) => parse_duration(s)
            .map(|d| d.nanos())
            .map_err(|e| err(name, e)),
        other => Err(FuncError::Generic(format!(
            "wrong type for value in call to {name}; expected time.Duration; got {}",
            type_name(other)
        ))),
    }
}

/// `_method NAME RECEIVER ARGS...`: a method call with arguments (see the module doc).
fn f_method(args: &[Value]) -> Result<Value, FuncError> {
    let (Some(Value::String(name)), Some(recv)) = (args.first(), args.get(1)) else {
        return Err(FuncError::Generic("invalid method call".into()));
    };
    let rest = &args[2..];
    let name = name.as_str();
    match (kind_of(recv), name) {
        (Some("timefuncs"), "Parse") => {
            check_args(name, rest, 2)?;
            let layout = arg_str(name, &rest[0])?;
            let value = arg_str(name, &rest[1])?;
            go_parse(layout, value)
                .map(|t| t.to_value())
                .map_err(|e| err(name, e))
        }
        (Some("time"), _) => {
            let t = GoTime::from_value(recv).unwrap_or(GoTime {
                sec: ZERO_TIME_UNIX,
                nsec: 0,
                off: 0,
                zone: "UTC".into(),
            });
            match name {
                "Format" => {
                    check_args(name, rest, 1)?;
                    Ok(Value::from(go_format(&t, arg_str(name, &rest[0])?)))
                }
                "Add" => {
                    check_args(name, rest, 1)?;
                    Ok(t.add_nanos(arg_duration(name, &rest[0])?).to_value())
                }
                "AddDate" => {
                    check_args(name, rest, 3)?;
                    let (y, m, d) = (
                        arg_int(name, &rest[0])?,
                        arg_int(name, &rest[1])?,
                        arg_int(name, &rest[2])?,
                    );
                    add_date(&t, y, m, d)
                        .map(|t| t.to_value())
                        .ok_or_else(|| err(name, "date out of range"))
                }
                "Sub" => {
                    check_args(name, rest, 1)?;
                    let other = arg_time(name, &rest[0])?;
                    let d = (t.unix_nanos() - other.unix_nanos())
                        .clamp(i64::MIN as i128, i64::MAX as i128);
                    Ok(duration_value(d as i64))
                }
                "Before" | "After" | "Equal" | "Compare" => {
                    check_args(name, rest, 1)?;
                    let other = arg_time(name, &rest[0])?;
                    let ord = t.unix_nanos().cmp(&other.unix_nanos());
                    Ok(match name {
                        "Before" => Value::Bool(ord.is_lt()),
                        "After" => Value::Bool(ord.is_gt()),
                        "Equal" => Value::Bool(ord.is_eq()),
                        _ => int_value(ord as i64),
                    })
                }
                "Truncate" | "Round" => {
                    check_args(name, rest, 1)?;
                    let d = arg_duration(name, &rest[0])?;
                    Ok(truncate_time(&t, d, name == "Round").to_value())
                }
                _ => Err(no_method(name, recv)),
            }
        }
        _ => Err(no_method(name, recv)),
    }
}

fn no_method(name: &str, recv: &Value) -> FuncError {
    FuncError::Generic(format!(
        "can't evaluate field {name} in type {}",
        type_name(recv)
    ))
}

/// Method names rewritten into `_method` calls when given arguments.
const ARG_METHODS: &[&str] = &[
    "Format", "Parse", "Add", "AddDate", "Sub", "Before", "After", "Equal", "Compare", "Truncate",
    "Round",
];

const FUNCS: &[(&str, Func)] = &[
    ("default", f_default),
    ("env", f_env),
    ("file", f_file),
    ("join", f_join),
    ("json", f_json),
    ("jsonPretty", f_json_pretty),
    ("printPretty", f_print_pretty),
    ("lower", f_lower),
    ("upper", f_upper),
    ("split", f_split),
    ("trimSpace", f_trim_space),
    ("time", f_time),
    // Go built-ins replaced or missing in gtmpl
    ("print", f_print),
    ("println", f_println),
    ("printf", f_printf),
    ("len", f_len),
    ("lt", f_lt),
    ("le", f_le),
    ("gt", f_gt),
    ("ge", f_ge),
    ("index", f_index),
    ("slice", f_slice),
    ("html", f_html),
    ("js", f_js),
    ("urlquery", f_urlquery),
    // internal
    ("_out", f_out),
    ("_method", f_method),
];

// ---------------------------------------------------------------------------------------------
// Rewriting Go template text for gtmpl
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
enum Tok<'a> {
    Space(&'a str),
    /// A string literal, decoded.
    Str(String),
    /// A character literal's value.
    Char(u32),
    LParen,
    RParen,
    Pipe,
    /// `:=`, `=`, `,`.
    Punct(&'a str),
    /// Identifiers, fields, variables, numbers, keywords.
    Word(&'a str),
}

struct SyntaxError {
    offset: usize,
    message: String,
}

fn syntax(offset: usize, message: impl Into<String>) -> SyntaxError {
    SyntaxError {
        offset,
        message: message.into(),
    }
}

fn hex_value(s: &[u8]) -> Option<u32> {
    let mut v = 0u32;
    for c in s {
        v = v * 16 + (*c as char).to_digit(16)?;
    }
    Some(v)
}

/// Decodes one escape sequence after `\` at `b[i]`; returns the bytes and the next index.
fn decode_escape(b: &[u8], i: usize, quote: u8) -> Result<(Vec<u8>, usize), String> {
    let Some(&c) = b.get(i) else {
        return Err("invalid syntax".into());
    };
    let simple = |ch: u8| Ok((vec![ch], i + 1));
    match c {
        b'a' => simple(0x07),
        b'b' => simple(0x08),
        b'f' => simple(0x0c),
        b'n' => simple(b'\n'),
        b'r' => simple(b'\r'),
        b't' => simple(b'\t'),
        b'v' => simple(0x0b),
        b'\\' => simple(b'\\'),
        c if c == quote => simple(c),
        b'x' => {
            let v = b
                .get(i + 1..i + 3)
                .and_then(hex_value)
                .ok_or("invalid syntax")?;
            Ok((vec![v as u8], i + 3))
        }
        b'0'..=b'7' => {
            let digits = b.get(i..i + 3).ok_or("invalid syntax")?;
            let mut v = 0u32;
            for d in digits {
                if !(b'0'..=b'7').contains(d) {
                    return Err("invalid syntax".into());
                }
                v = v * 8 + (d - b'0') as u32;
            }
            if v > 255 {
                return Err("invalid syntax".into());
            }
            Ok((vec![v as u8], i + 3))
        }
        b'u' | b'U' => {
            let n = if c == b'u' { 4 } else { 8 };
            let v = b
                .get(i + 1..i + 1 + n)
                .and_then(hex_value)
                .ok_or("invalid syntax")?;
            let ch = char::from_u32(v).ok_or("invalid syntax")?;
            let mut buf = [0u8; 4];
            Ok((ch.encode_utf8(&mut buf).as_bytes().to_vec(), i + 1 + n))
        }
        _ => Err("invalid syntax".into()),
    }
}

/// Tokenises the inside of an action, `body` starting at `base` in the template.
fn tokenize(body: &str, base: usize) -> Result<Vec<Tok<'_>>, SyntaxError> {
    let b = body.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\r' | b'\n' => {
                let start = i;
                while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\r' | b'\n') {
                    i += 1;
                }
                toks.push(Tok::Space(&body[start..i]));
            }
            b'"' => {
                let start = i;
                i += 1;
                let mut bytes = Vec::new();
                loop {
                    match b.get(i) {
                        None | Some(b'\n') => {
                            return Err(syntax(base + start, "unterminated quoted string"))
                        }
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(b'\\') => {
                            let (decoded, next) = decode_escape(b, i + 1, b'"')
                                .map_err(|m| syntax(base + start, m))?;
                            bytes.extend(decoded);
                            i = next;
                        }
                        Some(&other) => {
                            bytes.push(other);
                            i += 1;
                        }
                    }
                }
                toks.push(Tok::Str(String::from_utf8_lossy(&bytes).into_owned()));
            }
            b'`' => {
                let start = i;
                let end = body[i + 1..]
                    .find('`')
                    .ok_or_else(|| syntax(base + start, "unterminated raw quoted string"))?;
                let raw = &body[i + 1..i + 1 + end];
                toks.push(Tok::Str(raw.replace('\r', "")));
                i += end + 2;
            }
            b'\'' => {
                let start = i;
                let bad = || syntax(base + start, "unterminated character constant");
                let (value, next) = match b.get(i + 1) {
                    Some(b'\\') => {
                        let (bytes, next) =
                            decode_escape(b, i + 2, b'\'').map_err(|m| syntax(base + start, m))?;
                        let v = match std::str::from_utf8(&bytes) {
                            Ok(s) if bytes.len() > 1 => s.chars().next().map(|c| c as u32),
                            _ => bytes.first().map(|b| *b as u32),
                        };
                        (v.ok_or_else(bad)?, next)
                    }
                    Some(b'\'') | Some(b'\n') | None => return Err(bad()),
                    Some(_) => {
                        let ch = body[i + 1..].chars().next().ok_or_else(bad)?;
                        (ch as u32, i + 1 + ch.len_utf8())
                    }
                };
                if b.get(next) != Some(&b'\'') {
                    return Err(bad());
                }
                toks.push(Tok::Char(value));
                i = next + 1;
            }
            b'(' => {
                toks.push(Tok::LParen);
                i += 1;
            }
            b')' => {
                toks.push(Tok::RParen);
                i += 1;
            }
            b'|' => {
                toks.push(Tok::Pipe);
                i += 1;
            }
            b':' if b.get(i + 1) == Some(&b'=') => {
                toks.push(Tok::Punct(":="));
                i += 2;
            }
            b'=' | b',' | b':' => {
                toks.push(Tok::Punct(&body[i..i + 1]));
                i += 1;
            }
            _ => {
                let start = i;
                while i < b.len()
                    && !matches!(
                        b[i],
                        b' ' | b'\t'
                            | b'\r'
                            | b'\n'
                            | b'"'
                            | b'`'
                            | b'\''
                            | b'('
                            | b')'
                            | b'|'
                            | b'='
                            | b','
                            | b':'
                    )
                {
                    i += 1;
                }
                // a word is at least one byte here; split a leading number/field boundary
                // is not needed (Go lexes `.A.B`, `$x.A`, `1.5` as one item too)
                toks.push(Tok::Word(&body[start..i]));
            }
        }
    }
    Ok(toks)
}

/// A string literal gtmpl lexes and unquotes correctly: a raw string with `\` doubled (gtmpl
/// unquotes raw strings too), CR as `\r`; backticks joined in with `print`.
fn emit_string(s: &str) -> String {
    let raw = |part: &str| format!("`{}`", part.replace('\\', "\\\\").replace('\r', "\\r"));
    if !s.contains('`') {
        return raw(s);
    }
    let mut parts = Vec::new();
    for (i, part) in s.split('`').enumerate() {
        if i > 0 {
            parts.push("\"`\"".to_string());
        }
        if !part.is_empty() {
            parts.push(raw(part));
        }
    }
    format!("(print {})", parts.join(" "))
}

/// Integer literals with a base prefix, `_` or a leading-zero octal become decimal.
fn emit_word(w: &str) -> String {
    let b = w.as_bytes();
    let (sign, digits) = match b.first() {
        Some(b'-') | Some(b'+') => (&w[..1], &w[1..]),
        _ => ("", w),
    };
    if !digits
        .as_bytes()
        .first()
        .is_some_and(|c| c.is_ascii_digit())
    {
        return w.to_string();
    }
    let clean = digits.replace('_', "");
    let lower = clean.to_ascii_lowercase();
    let parsed = if let Some(h) = lower.strip_prefix("0x") {
        u64::from_str_radix(h, 16).ok()
    } else if let Some(o) = lower.strip_prefix("0o") {
        u64::from_str_radix(o, 8).ok()
    } else if let Some(bin) = lower.strip_prefix("0b") {
        u64::from_str_radix(bin, 2).ok()
    } else if lower.len() > 1 && lower.starts_with('0') && lower.bytes().all(|c| c.is_ascii_digit())
    {
        u64::from_str_radix(&lower[1..], 8).ok()
    } else if clean != digits && clean.bytes().all(|c| c.is_ascii_digit()) {
        clean.parse().ok()
    } else {
        None
    };
    match parsed {
        Some(v) => format!("{}{v}", if sign == "-" { "-" } else { "" }),
        None => w.to_string(),
    }
}

fn emit_tok(t: &Tok) -> String {
    match t {
        Tok::Space(s) | Tok::Punct(s) => s.to_string(),
        Tok::Str(s) => emit_string(s),
        Tok::Char(c) => c.to_string(),
        Tok::LParen => "(".into(),
        Tok::RParen => ")".into(),
        Tok::Pipe => "|".into(),
        Tok::Word(w) => emit_word(w),
    }
}

/// One operand of a command: its tokens (a paren group plus attached field words, or one
/// token).
fn operand_end(toks: &[Tok], start: usize) -> usize {
    let mut i = start;
    if toks[i] == Tok::LParen {
        let mut depth = 0;
        while i < toks.len() {
            match toks[i] {
                Tok::LParen => depth += 1,
                Tok::RParen => {
                    depth -= 1;
                    if depth == 0 {
                        i += 1;
                        break;
                    }
                }
                _ => {}
            }
            i += 1;
        }
    } else {
        i += 1;
    }
    // attached `.Field` chains: `(x).A.B`
    while i < toks.len() {
        match toks[i] {
            Tok::Word(w) if w.starts_with('.') && i > start => i += 1,
            _ => break,
        }
    }
    i
}

/// Rewrites a pipeline's tokens (see the module doc).
fn rewrite_pipeline(toks: &[Tok]) -> String {
    // split into commands at top-level pipes
    let mut commands: Vec<&[Tok]> = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, t) in toks.iter().enumerate() {
        match t {
            Tok::LParen => depth += 1,
            Tok::RParen => depth -= 1,
            Tok::Pipe if depth == 0 => {
                commands.push(&toks[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    commands.push(&toks[start..]);
    let mut out = String::new();
    for (ci, cmd) in commands.iter().enumerate() {
        if ci > 0 {
            out.push('|');
        }
        out.push_str(&rewrite_command(cmd, ci > 0));
    }
    out
}

fn rewrite_command(toks: &[Tok], piped: bool) -> String {
    // leading declaration `$x :=` / `$x, $y :=` / `$x =` is copied as is
    let mut out = String::new();
    let mut i = 0;
    let is_space = |t: &Tok| matches!(t, Tok::Space(_));
    {
        let mut j = 0;
        let mut saw_var = false;
        while j < toks.len() {
            match &toks[j] {
                Tok::Space(_) => j += 1,
                Tok::Word(w) if w.starts_with('$') => {
                    saw_var = true;
                    j += 1
                }
                Tok::Punct(",") => j += 1,
                Tok::Punct(":=") | Tok::Punct("=") if saw_var => {
                    // gtmpl has no assignment: `$x = v` declares `$x` again (the newest
                    // declaration wins; gtmpl scopes end only with range iterations)
                    for t in &toks[..j] {
                        out.push_str(&emit_tok(t));
                    }
                    out.push_str(":=");
                    i = j + 1;
                    break;
                }
                _ => break,
            }
        }
    }
    // operands
    let mut operands: Vec<(usize, usize)> = Vec::new();
    let mut j = i;
    while j < toks.len() {
        if is_space(&toks[j]) {
            j += 1;
            continue;
        }
        let end = operand_end(toks, j);
        operands.push((j, end));
        j = end;
    }
    let emit_operand = |(s, e): (usize, usize)| -> String {
        let part = &toks[s..e];
        let close = operand_paren_close(part);
        if part.first() == Some(&Tok::LParen) && close > 0 && close < part.len() {
            let mut text = String::from("(");
            text.push_str(&rewrite_pipeline(&part[1..close]));
            text.push(')');
            for t in &part[close + 1..] {
                text.push_str(&emit_tok(t));
            }
            text
        } else {
            part.iter().map(emit_tok).collect()
        }
    };
    let mut pos = i;
    for (k, &(s, e)) in operands.iter().enumerate() {
        for t in &toks[pos..s] {
            out.push_str(&emit_tok(t));
        }
        let mut text = emit_operand((s, e));
        if k == 0 && (operands.len() > 1 || piped) {
            if let Some(dot) = text.rfind('.') {
                let name = &text[dot + 1..];
                let receiver_ok =
                    text.starts_with('.') || text.starts_with('$') || text.starts_with('(');
                if receiver_ok && ARG_METHODS.contains(&name) && !name.is_empty() {
                    let mut receiver = text[..dot].to_string();
                    if receiver.is_empty() {
                        receiver = ".".into();
                    }
                    text = format!("_method \"{name}\" {receiver}");
                }
            }
        }
        out.push_str(&text);
        pos = e;
    }
    for t in &toks[pos..] {
        out.push_str(&emit_tok(t));
    }
    out
}

/// The index of the `)` closing the `(` at `part[0]` (parentheses are balanced: checked by
/// [`rewrite_action`]).
fn operand_paren_close(part: &[Tok]) -> usize {
    let mut depth = 0;
    for (i, t) in part.iter().enumerate() {
        match t {
            Tok::LParen => depth += 1,
            Tok::RParen => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
    }
    part.len()
}

fn balanced(toks: &[Tok]) -> bool {
    let mut depth = 0i32;
    for t in toks {
        match t {
            Tok::LParen => depth += 1,
            Tok::RParen => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => {}
        }
    }
    depth == 0
}

fn first_word<'a>(toks: &[Tok<'a>]) -> Option<(usize, &'a str)> {
    toks.iter().enumerate().find_map(|(i, t)| match t {
        Tok::Space(_) => None,
        Tok::Word(w) => Some(Some((i, *w))),
        _ => Some(None),
    })?
}

fn has_decl(toks: &[Tok]) -> bool {
    let mut saw_var = false;
    for t in toks {
        match t {
            Tok::Space(_) | Tok::Punct(",") => {}
            Tok::Word(w) if w.starts_with('$') => saw_var = true,
            Tok::Punct(":=") | Tok::Punct("=") => return saw_var,
            _ => return false,
        }
    }
    false
}

/// Rewrites one action body.
fn rewrite_action(toks: &[Tok]) -> String {
    let emit_all = |ts: &[Tok]| ts.iter().map(emit_tok).collect::<String>();
    if !balanced(toks) {
        // a syntax error: left for gtmpl to report
        return emit_all(toks);
    }
    let Some((i, word)) = first_word(toks) else {
        // literals, parens, ...: an output action
        if toks.iter().all(|t| matches!(t, Tok::Space(_))) {
            return emit_all(toks);
        }
        return format!("{} | _out ", rewrite_pipeline(toks));
    };
    match word {
        "end" | "break" | "continue" => emit_all(toks),
        "else" => {
            let rest = &toks[i + 1..];
            match first_word(rest) {
                Some((j, w @ ("if" | "with"))) => format!(
                    "{}{}{w}{}",
                    emit_all(&toks[..=i]),
                    emit_all(&rest[..j]),
                    rewrite_pipeline(&rest[j + 1..])
                ),
                _ => emit_all(toks),
            }
        }
        "if" | "with" | "range" => format!(
            "{}{}",
            emit_all(&toks[..=i]),
            rewrite_pipeline(&toks[i + 1..])
        ),
        "define" | "template" | "block" => {
            // keep the name literal, rewrite the pipeline after it
            let rest = &toks[i + 1..];
            let name = rest.iter().position(|t| !matches!(t, Tok::Space(_)));
            match name {
                Some(n) => format!(
                    "{}{}{}{}",
                    emit_all(&toks[..=i]),
                    emit_all(&rest[..n]),
                    emit_tok(&rest[n]),
                    if rest[n + 1..].iter().all(|t| matches!(t, Tok::Space(_))) {
                        emit_all(&rest[n + 1..])
                    } else {
                        rewrite_pipeline(&rest[n + 1..])
                    }
                ),
                None => emit_all(toks),
            }
        }
        _ => {
            if has_decl(toks) {
                rewrite_pipeline(toks)
            } else {
                format!("{} | _out ", rewrite_pipeline(toks))
            }
        }
    }
}

fn is_space_byte(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

/// Rewrites Go template text into the form gtmpl executes with Go's semantics.
fn preprocess(src: &str) -> Result<String, SyntaxError> {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len() + 16);
    let mut pos = 0;
    let mut blocks = Blocks::default();
    while let Some(rel) = src[pos..].find("{{") {
        let start = pos + rel;
        out.push_str(&src[pos..start]);
        let mut i = start + 2;
        // Trim markers are applied here (gtmpl trims spaces only, not newlines).
        if b.get(i) == Some(&b'-') && b.get(i + 1).is_some_and(|c| is_space_byte(*c)) {
            let keep = out.trim_end_matches([' ', '\t', '\r', '\n']).len();
            out.truncate(keep);
            i += 2;
        }
        let skip_space = |mut j: usize| {
            while b.get(j).is_some_and(|c| is_space_byte(*c)) {
                j += 1;
            }
            j
        };
        // comment
        if src[i..].starts_with("/*") {
            let end = src[i + 2..]
                .find("*/")
                .ok_or_else(|| syntax(start, "unclosed comment"))?;
            let mut j = i + 2 + end + 2;
            let mut trim_right = false;
            if b.get(j).is_some_and(|c| is_space_byte(*c)) && src[j + 1..].starts_with("-}}") {
                trim_right = true;
                j += 4;
            } else if src[j..].starts_with("}}") {
                j += 2;
            } else {
                return Err(syntax(start, "comment ends before closing delimiter"));
            }
            // keep the comment's newlines (line numbers of later errors)
            out.push_str("{{/*");
            out.push_str(&src[i + 2..i + 2 + end]);
            out.push_str("*/}}");
            pos = if trim_right { skip_space(j) } else { j };
            continue;
        }
        // find the end of the action, skipping quoted text
        let mut j = i;
        let (body_end, close_len) = loop {
            match b.get(j) {
                None => return Err(syntax(start, "unclosed action")),
                Some(&q @ (b'"' | b'\'')) => {
                    let open_at = j;
                    j += 1;
                    loop {
                        match b.get(j) {
                            None | Some(b'\n') => {
                                let what = if q == b'"' {
                                    "unterminated quoted string"
                                } else {
                                    "unterminated character constant"
                                };
                                return Err(syntax(open_at, what));
                            }
                            Some(b'\\') => j += 2,
                            Some(&c) => {
                                j += 1;
                                if c == q {
                                    break;
                                }
                            }
                        }
                    }
                }
                Some(b'`') => {
                    let open_at = j;
                    j += 1;
                    loop {
                        match b.get(j) {
                            None => return Err(syntax(open_at, "unterminated raw quoted string")),
                            Some(b'`') => {
                                j += 1;
                                break;
                            }
                            Some(_) => j += 1,
                        }
                    }
                }
                Some(&c) if is_space_byte(c) && src[j + 1..].starts_with("-}}") => {
                    break (j, 4);
                }
                Some(b'}') if src[j..].starts_with("}}") => break (j, 2),
                Some(_) => j += 1,
            }
        };
        let body = &src[i..body_end];
        let toks = tokenize(body, i)?;
        blocks.track(&toks, start)?;
        out.push_str("{{");
        out.push_str(&rewrite_action(&toks));
        // keep a newline before a trimmed close: it counts for line numbers
        if close_len == 4 {
            out.push_str(&src[body_end..body_end + 1]);
            out.push_str("}}");
            pos = skip_space(body_end + close_len);
        } else {
            out.push_str("}}");
            pos = body_end + close_len;
        }
    }
    out.push_str(&src[pos..]);
    blocks.check_recursion()?;
    Ok(out)
}

/// Deepest nesting of control blocks or parentheses accepted (gtmpl recurses on both).
const MAX_NESTING: usize = 100;

/// Open control blocks and the `template` calls made from each defined template, to refuse
/// nesting gtmpl cannot handle and recursive templates (which would overflow the stack; Go
/// stops at a depth of 100000 with an error).
#[derive(Default)]
struct Blocks {
    /// One entry per open block: the template name for `define`/`block`.
    stack: Vec<Option<String>>,
    /// `(caller, callee)`; the top level is `""`.
    calls: Vec<(String, String)>,
}

impl Blocks {
    fn current(&self) -> String {
        self.stack
            .iter()
            .rev()
            .flatten()
            .next()
            .cloned()
            .unwrap_or_default()
    }

    fn track(&mut self, toks: &[Tok], offset: usize) -> Result<(), SyntaxError> {
        let mut depth = 0usize;
        for t in toks {
            match t {
                Tok::LParen => {
                    depth += 1;
                    if depth > MAX_NESTING {
                        return Err(syntax(offset, "max expression depth exceeded"));
                    }
                }
                Tok::RParen => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        let Some((i, word)) = first_word(toks) else {
            return Ok(());
        };
        let name = || {
            toks[i + 1..].iter().find_map(|t| match t {
                Tok::Space(_) => None,
                Tok::Str(s) => Some(Some(s.clone())),
                _ => Some(None),
            })?
        };
        match word {
            "if" | "range" | "with" => self.stack.push(None),
            "define" => self.stack.push(Some(name().unwrap_or_default())),
            "block" => {
                let n = name().unwrap_or_default();
                self.calls.push((self.current(), n.clone()));
                self.stack.push(Some(n));
            }
            "template" => {
                if let Some(n) = name() {
                    self.calls.push((self.current(), n));
                }
            }
            "end" => {
                self.stack.pop();
            }
            _ => {}
        }
        if self.stack.len() > MAX_NESTING {
            return Err(syntax(offset, "max block depth exceeded"));
        }
        Ok(())
    }

    fn check_recursion(&self) -> Result<(), SyntaxError> {
        fn visit<'a>(
            node: &'a str,
            calls: &'a [(String, String)],
            path: &mut Vec<&'a str>,
            done: &mut Vec<&'a str>,
        ) -> bool {
            if path.contains(&node) {
                return true;
            }
            if done.contains(&node) {
                return false;
            }
            path.push(node);
            for (from, to) in calls {
                if from == node && visit(to, calls, path, done) {
                    return true;
                }
            }
            path.pop();
            done.push(node);
            false
        }
        let (mut path, mut done) = (Vec::new(), Vec::new());
        if visit("", &self.calls, &mut path, &mut done) {
            return Err(syntax(0, "exceeded maximum template depth (100000)"));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------------

/// The line (1-based) of byte `offset` in `src`.
fn line_of(src: &str, offset: usize) -> usize {
    src.as_bytes()[..offset.min(src.len())]
        .iter()
        .filter(|c| **c == b'\n')
        .count()
        + 1
}

/// One line: newlines and tabs escaped, very long texts cut.
fn one_line(s: &str) -> String {
    let s = s.replace('\n', "\\n").replace('\r', "\\r");
    if s.chars().count() > 300 {
        let cut: String = s.chars().take(300).collect();
        format!("{cut}...")
    } else {
        s
    }
}

/// A gtmpl parse error in Go's shape. gtmpl's line numbers are unreliable (and refer to the
/// rewritten text), so the line is 1 for a one-line template, the line of the unknown name
/// for an undefined function, else gtmpl's estimate within the template's lines.
fn parse_error_text(e: &gtmpl::error::ParseError, text: &str) -> String {
    use gtmpl::error::ParseError;
    let lines = text.lines().count().max(1);
    match e {
        ParseError::WithContext(ctx, msg) => {
            let mut msg = msg.clone();
            let mut line = ctx.line.saturating_sub(1).clamp(1, lines);
            if let Some(name) = msg
                .strip_prefix("function ")
                .and_then(|m| m.strip_suffix(" not defined"))
                .map(str::to_string)
            {
                if let Some(at) = text.find(&name) {
                    line = line_of(text, at);
                }
                msg = format!("function {name:?} not defined");
            }
            if lines == 1 {
                line = 1;
            }
            format!("template: out:{line}: {msg}")
        }
        other => format!("template: out: {other}"),
    }
}

fn exec_error_text(e: &gtmpl::error::ExecError) -> String {
    use gtmpl::error::ExecError;
    let msg = match e {
        ExecError::NoFiledFor(name, recv) => {
            format!("can't evaluate field {name} in type {}", type_name(recv))
        }
        ExecError::OnlyMapsAndObjectsHaveFields => {
            "can't evaluate field of a value that is not a struct or map".into()
        }
        ExecError::InvalidRange(v) => format!("range can't iterate over {}", type_name(v)),
        ExecError::FuncError(f) => f.to_string(),
        other => other.to_string(),
    };
    format!("template: out: executing \"out\": {msg}")
}

/// Renders Go template `text` with `data` (`Value::NoValue` for none); the error text is Go's
/// shape (`template: out:1: ...`), one line.
fn render(text: &str, data: Value) -> Result<String, String> {
    if !text.contains("{{") {
        return Ok(text.to_string());
    }
    let rewritten = preprocess(text).map_err(|e| {
        format!(
            "template: out:{}: {}",
            line_of(text, e.offset),
            one_line(&e.message)
        )
    })?;
    let mut tmpl = Template::with_name("out");
    tmpl.add_funcs(FUNCS);
    tmpl.parse(rewritten)
        .map_err(|e| one_line(&parse_error_text(&e, text)))?;
    tmpl.render(&Context::from(data))
        .map_err(|e| one_line(&exec_error_text(&e)))
}

fn template_error(context: String, field: &str, message: String) -> ConfigError {
    ConfigError::Template {
        file: String::new(),
        context,
        message: format!("{field}: {message}"),
    }
}

/// The load-time expansion of spec §3.7 (see the module doc). Errors name the entry, the field
/// and the template error; the file name is added by the caller.
pub fn expand_templates(config: &mut Config) -> Result<(), ConfigError> {
    for (i, c) in config.creds.iter_mut().enumerate() {
        let context = creds_context(i, &c.registry);
        for (field, value) in [
            ("registry", &mut c.registry),
            ("user", &mut c.user),
            ("pass", &mut c.pass),
            ("regcert", &mut c.regcert),
            ("clientCert", &mut c.client_cert),
            ("clientKey", &mut c.client_key),
        ] {
            *value = render(value, Value::NoValue)
                .map_err(|m| template_error(context.clone(), field, m))?;
        }
    }
    for (i, step) in config.sync.iter_mut().enumerate() {
        let context = step_context(i, step);
        let templated = [
            &step.source,
            &step.target,
            &step.referrer_source,
            &step.referrer_target,
        ]
        .iter()
        .any(|s| s.contains("{{"));
        if !templated {
            continue;
        }
        let mut data = step.clone();
        let data_value = |s: &SyncStep| {
            let mut top = HashMap::new();
            top.insert("Sync".to_string(), sync_value(s));
            Value::Object(top)
        };
        let expand = |text: &str, s: &SyncStep, field: &str| {
            render(text, data_value(s)).map_err(|m| template_error(context.clone(), field, m))
        };
        step.source = expand(&step.source, &data, "source")?;
        data.source = step.source.clone();
        step.referrer_source = expand(&step.referrer_source, &data, "referrerSource")?;
        data.referrer_source = step.referrer_source.clone();
        step.target = expand(&step.target, &data, "target")?;
        // regsync quirk: `.Sync.Target` stays unexpanded for referrerTarget
        step.referrer_target = expand(&step.referrer_target, &data, "referrerTarget")?;
    }
    Ok(())
}

/// Renders a step's `backup` template for the target `target` about to be overwritten (spec
/// §5.7): data `.Ref` (the target), `.Step` and `.Sync` (the step); the result is trimmed.
pub fn render_backup(
    template: &str,
    target: &Reference,
    step: &SyncStep,
) -> Result<String, ConfigError> {
    let sync = sync_value(step);
    let mut top = HashMap::new();
    top.insert("Ref".to_string(), ref_value(target));
    top.insert("Step".to_string(), sync.clone());
    top.insert("Sync".to_string(), sync);
    render(template, Value::Object(top))
        .map(|s| s.trim().to_string())
        .map_err(|m| template_error(step_context_backup(target), "backup", m))
}

fn step_context_backup(target: &Reference) -> String {
    format!("backup of {:?}", target.original)
}

/// Renders `version --format` with the build information (spec §2.3); output as is.
pub fn render_version(format: &str, info: &VersionInfo) -> Result<String, String> {
    render(format, info.value())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schema::CredsEntry;

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
        c.sync.remove(0)
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
}
