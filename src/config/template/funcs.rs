//! The template functions (regsync's 12 and Go's built-ins that gtmpl lacks or gets wrong,
//! [`FUNCS`]) and the methods of data values (time, duration, reference), including `_method`
//! for method calls with arguments.

use super::data::{duration_ns, duration_value, float_value, int_value, kind_of, Obj, PRETTY};
use crate::gocompat::duration::{format_duration, parse_duration, GoDuration};
use crate::gocompat::gofmt::{go_fmt, json_text, sprint};
use crate::gocompat::gotext::os_error_text;
use crate::gocompat::gotime::{
    add_date, go_format, go_parse, truncate_time, GoTime, ZERO_TIME_UNIX,
};
use chrono::{Datelike, Timelike};
use gtmpl::{Func, FuncError, Value};
use std::fmt::Write as _;

// ---------------------------------------------------------------------------------------------
// Methods of data values
// ---------------------------------------------------------------------------------------------

pub(super) fn m_common_name(args: &[Value]) -> Result<Value, FuncError> {
    match args.first() {
        Some(Value::Object(o)) => match o.get("\u{1}cn") {
            Some(v) => Ok(v.clone()),
            None => Ok(Value::from("")),
        },
        _ => Err(FuncError::Generic("CommonName: not a reference".into())),
    }
}

fn recv_time(args: &[Value], name: &str) -> Result<GoTime, FuncError> {
    args.first()
        .and_then(GoTime::from_value)
        .ok_or_else(|| FuncError::Generic(format!("{name}: not a time value")))
}

macro_rules! time_method {
    ($fname:ident, $name:literal, |$t:ident| $body:expr) => {
        pub(super) fn $fname(args: &[Value]) -> Result<Value, FuncError> {
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

fn recv_duration(args: &[Value]) -> Result<i64, FuncError> {
    args.first()
        .and_then(duration_ns)
        .ok_or_else(|| FuncError::Generic("not a duration value".into()))
}

pub(super) fn dm_hours(a: &[Value]) -> Result<Value, FuncError> {
    Ok(float_value(recv_duration(a)? as f64 / 3.6e12))
}
pub(super) fn dm_minutes(a: &[Value]) -> Result<Value, FuncError> {
    Ok(float_value(recv_duration(a)? as f64 / 6e10))
}
pub(super) fn dm_seconds(a: &[Value]) -> Result<Value, FuncError> {
    Ok(float_value(recv_duration(a)? as f64 / 1e9))
}
pub(super) fn dm_milliseconds(a: &[Value]) -> Result<Value, FuncError> {
    Ok(int_value(recv_duration(a)? / 1_000_000))
}
pub(super) fn dm_microseconds(a: &[Value]) -> Result<Value, FuncError> {
    Ok(int_value(recv_duration(a)? / 1_000))
}
pub(super) fn dm_nanoseconds(a: &[Value]) -> Result<Value, FuncError> {
    Ok(int_value(recv_duration(a)?))
}
pub(super) fn dm_string(a: &[Value]) -> Result<Value, FuncError> {
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

pub(super) fn type_name(v: &Value) -> &'static str {
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
pub(super) const ARG_METHODS: &[&str] = &[
    "Format", "Parse", "Add", "AddDate", "Sub", "Before", "After", "Equal", "Compare", "Truncate",
    "Round",
];

pub(super) const FUNCS: &[(&str, Func)] = &[
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
