//! Go's `fmt` and `encoding/json` text of template values: `%v` ([`go_fmt`]), `fmt.Sprint`
//! ([`sprint`]), `strconv.FormatFloat(f, 'g', -1, 64)` ([`format_float_g`]) and JSON
//! ([`json_text`]), over the Go value model of the template data (structs with declared
//! fields, time and duration values).

use super::duration::{format_duration, GoDuration};
use super::gotime::{go_format, GoTime, ZERO_TIME_UNIX};
use crate::config::template::data::{duration_ns, is_hidden, kind_of, FIELDS};
use gtmpl::Value;
use std::collections::HashMap;
use std::fmt::Write as _;

/// Decimal digits and decimal-point position of the shortest representation of `f` (> 0).
fn shortest_digits(f: f64) -> (String, i32) {
    let e = format!("{:e}", f.abs());
    let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    let exp: i32 = exp.parse().unwrap_or(0);
    (digits, exp + 1)
}

fn fmt_e(neg: bool, digits: &str, dp: i32) -> String {
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    out.push_str(&digits[..1]);
    if digits.len() > 1 {
        out.push('.');
        out.push_str(&digits[1..]);
    }
    let exp = dp - 1;
    let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    out
}

/// strconv.FormatFloat(f, 'g', -1, 64).
pub(crate) fn format_float_g(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.into();
    }
    let (digits, dp) = shortest_digits(f);
    let exp = dp - 1;
    if !(-4..6).contains(&exp) {
        return fmt_e(f < 0.0, &digits, dp);
    }
    format!("{f}")
}

/// encoding/json's float format.
pub(crate) fn format_float_json(f: f64) -> String {
    if !f.is_finite() {
        return "null".into();
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let (digits, dp) = shortest_digits(f);
        let s = fmt_e(f < 0.0, &digits, dp);
        // e-07 → e-7
        return s.replace("e-0", "e-").replace("e+0", "e+");
    }
    format!("{f}")
}

fn fmt_number(n: &gtmpl_value::Number) -> String {
    if let Some(i) = n.as_i64() {
        i.to_string()
    } else if let Some(u) = n.as_u64() {
        u.to_string()
    } else if let Some(f) = n.as_f64() {
        format_float_g(f)
    } else {
        n.to_string()
    }
}

/// The declared fields of a struct object: `(go, json, value)`.
fn struct_fields(o: &HashMap<String, Value>) -> Option<Vec<(String, String, &Value)>> {
    let Some(Value::Array(fields)) = o.get(FIELDS) else {
        return None;
    };
    let mut out = Vec::new();
    for f in fields {
        if let Value::Array(pair) = f {
            if let (Some(Value::String(go)), Some(Value::String(json))) =
                (pair.first(), pair.get(1))
            {
                if let Some(v) = o.get(go) {
                    out.push((go.clone(), json.clone(), v));
                }
            }
        }
    }
    Some(out)
}

/// Go's `%v`.
pub(crate) fn go_fmt(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => fmt_number(n),
        Value::Nil => "<nil>".into(),
        Value::NoValue => "<no value>".into(),
        Value::Function(_) => "<func>".into(),
        Value::Array(a) => {
            let items: Vec<String> = a.iter().map(go_fmt).collect();
            format!("[{}]", items.join(" "))
        }
        Value::Map(m) => fmt_map(m),
        Value::Object(o) => match kind_of(v) {
            Some("time") => GoTime::from_value(v)
                .map(|t| t.go_string())
                .unwrap_or_default(),
            Some("duration") => {
                format_duration(GoDuration::from_nanos(duration_ns(v).unwrap_or(0)))
            }
            Some("timefuncs") => "&{}".into(),
            _ => match struct_fields(o) {
                Some(fields) => {
                    let items: Vec<String> = fields.iter().map(|(_, _, v)| go_fmt(v)).collect();
                    format!("{{{}}}", items.join(" "))
                }
                None => fmt_map(o),
            },
        },
    }
}

fn fmt_map(m: &HashMap<String, Value>) -> String {
    let mut keys: Vec<&String> = m.keys().filter(|k| !is_hidden(k)).collect();
    keys.sort();
    let items: Vec<String> = keys
        .iter()
        .map(|k| format!("{k}:{}", go_fmt(&m[*k])))
        .collect();
    format!("map[{}]", items.join(" "))
}

fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn json_is_empty(v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0) || n.as_u64() == Some(0),
        Value::Nil | Value::NoValue => true,
        Value::Array(a) => a.is_empty(),
        Value::Map(m) => m.is_empty(),
        _ => false,
    }
}

/// Go's `encoding/json` (HTML escaping off); `indent` = Go's `SetIndent("", indent)`.
fn go_json(v: &Value, indent: Option<&str>, level: usize, out: &mut String) {
    let newline = |out: &mut String, level: usize| {
        if let Some(ind) = indent {
            out.push('\n');
            for _ in 0..level {
                out.push_str(ind);
            }
        }
    };
    let colon = if indent.is_some() { ": " } else { ":" };
    let write_members = |members: Vec<(String, &Value)>, out: &mut String| {
        if members.is_empty() {
            out.push_str("{}");
            return;
        }
        out.push('{');
        for (i, (k, v)) in members.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            newline(out, level + 1);
            json_string(out, k);
            out.push_str(colon);
            go_json(v, indent, level + 1, out);
        }
        newline(out, level);
        out.push('}');
    };
    match v {
        Value::String(s) => json_string(out, s),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match n.as_f64() {
            Some(f) => out.push_str(&format_float_json(f)),
            None => out.push_str(&fmt_number(n)),
        },
        Value::Nil | Value::NoValue | Value::Function(_) => out.push_str("null"),
        Value::Array(a) => {
            if a.is_empty() {
                out.push_str("[]");
                return;
            }
            out.push('[');
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, level + 1);
                go_json(item, indent, level + 1, out);
            }
            newline(out, level);
            out.push(']');
        }
        Value::Map(m) => {
            let mut keys: Vec<&String> = m.keys().filter(|k| !is_hidden(k)).collect();
            keys.sort();
            write_members(keys.into_iter().map(|k| (k.clone(), &m[k])).collect(), out);
        }
        Value::Object(o) => match kind_of(v) {
            Some("time") => {
                let t = GoTime::from_value(v).unwrap_or(GoTime {
                    sec: ZERO_TIME_UNIX,
                    nsec: 0,
                    off: 0,
                    zone: "UTC".into(),
                });
                json_string(out, &go_format(&t, "2006-01-02T15:04:05.999999999Z07:00"));
            }
            Some("duration") => {
                let _ = write!(out, "{}", duration_ns(v).unwrap_or(0));
            }
            _ => match struct_fields(o) {
                Some(fields) => {
                    let members = fields
                        .into_iter()
                        .filter_map(|(_, json, v)| {
                            let (name, omitempty) = match json.split_once(',') {
                                Some((n, opt)) => (n.to_string(), opt == "omitempty"),
                                None => (json, false),
                            };
                            if name == "-" || (omitempty && json_is_empty(v)) {
                                None
                            } else {
                                Some((name, v))
                            }
                        })
                        .collect();
                    write_members(members, out);
                }
                None => {
                    let mut keys: Vec<&String> = o
                        .keys()
                        .filter(|k| !is_hidden(k) && !matches!(o[*k], Value::Function(_)))
                        .collect();
                    keys.sort();
                    write_members(keys.into_iter().map(|k| (k.clone(), &o[k])).collect(), out);
                }
            },
        },
    }
}

pub(crate) fn json_text(v: &Value, indent: Option<&str>) -> String {
    let mut out = String::new();
    go_json(v, indent, 0, &mut out);
    out.push('\n');
    out
}

/// Go's `fmt.Sprint`: spaces between operands when neither is a string.
pub(crate) fn sprint(args: &[Value]) -> String {
    let mut out = String::new();
    let mut prev_string = true;
    for (i, a) in args.iter().enumerate() {
        let is_string = matches!(a, Value::String(_));
        if i > 0 && !is_string && !prev_string {
            out.push(' ');
        }
        out.push_str(&go_fmt(a));
        prev_string = is_string;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_formats() {
        assert_eq!(format_float_g(0.0), "0");
        assert_eq!(format_float_g(1.5), "1.5");
        assert_eq!(format_float_g(123456.0), "123456");
        assert_eq!(format_float_g(1e6), "1e+06");
        assert_eq!(format_float_g(0.0001), "0.0001");
        assert_eq!(format_float_g(0.00001), "1e-05");
        assert_eq!(format_float_json(1e21), "1e+21");
        assert_eq!(format_float_json(1e-7), "1e-7");
        assert_eq!(format_float_json(0.5), "0.5");
    }
}
