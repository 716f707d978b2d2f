//! Go's `time` package as regsync's templates see it: a `time.Time` value ([`GoTime`]), layout
//! formatting ([`go_format`], Go's `Time.Format`) and parsing ([`go_parse`], Go's
//! `time.Parse`), `AddDate`, `Truncate`/`Round`.

use super::gotext::go_quote;
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Offset, Timelike};
use std::fmt::Write as _;

/// A Go `time.Time`: an instant, the zone offset east of UTC and the zone abbreviation
/// (`""` for an unnamed zone).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct GoTime {
    pub(crate) sec: i64,
    pub(crate) nsec: u32,
    pub(crate) off: i32,
    pub(crate) zone: String,
}

/// Seconds from 0001-01-01 to 1970-01-01 (Go's zero time).
pub(crate) const ZERO_TIME_UNIX: i64 = -62_135_596_800;

impl GoTime {
    pub(crate) fn now() -> GoTime {
        let now = chrono::Local::now();
        let off = now.offset().fix().local_minus_utc();
        GoTime {
            sec: now.timestamp(),
            nsec: now.timestamp_subsec_nanos(),
            off,
            zone: local_zone_name(off),
        }
    }

    /// The wall clock in the time's zone.
    pub(crate) fn civil(&self) -> NaiveDateTime {
        DateTime::from_timestamp(self.sec.saturating_add(self.off as i64), self.nsec)
            .unwrap_or_default()
            .naive_utc()
    }

    fn from_civil(dt: NaiveDateTime, off: i32, zone: String) -> GoTime {
        let utc = dt.and_utc();
        GoTime {
            sec: utc.timestamp() - off as i64,
            nsec: utc.timestamp_subsec_nanos(),
            off,
            zone,
        }
    }

    pub(crate) fn utc(&self) -> GoTime {
        GoTime {
            off: 0,
            zone: "UTC".to_string(),
            ..self.clone()
        }
    }

    pub(crate) fn local(&self) -> GoTime {
        let off = DateTime::from_timestamp(self.sec, self.nsec)
            .map(|d| {
                d.with_timezone(&chrono::Local)
                    .offset()
                    .fix()
                    .local_minus_utc()
            })
            .unwrap_or(0);
        GoTime {
            off,
            zone: local_zone_name(off),
            ..self.clone()
        }
    }

    pub(crate) fn unix_nanos(&self) -> i128 {
        self.sec as i128 * 1_000_000_000 + self.nsec as i128
    }

    pub(crate) fn add_nanos(&self, d: i64) -> GoTime {
        let total = self.unix_nanos() + d as i128;
        GoTime {
            sec: total.div_euclid(1_000_000_000) as i64,
            nsec: total.rem_euclid(1_000_000_000) as u32,
            ..self.clone()
        }
    }

    /// Go's `Time.String`.
    pub(crate) fn go_string(&self) -> String {
        go_format(self, "2006-01-02 15:04:05.999999999 -0700 MST")
    }
}

/// The local zone's abbreviation: known only for UTC here (no zone database).
fn local_zone_name(off: i32) -> String {
    if off == 0 {
        "UTC".to_string()
    } else {
        String::new()
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Std {
    LongMonth,
    Month,
    NumMonth,
    ZeroMonth,
    LongWeekDay,
    WeekDay,
    Day,
    UnderDay,
    ZeroDay,
    UnderYearDay,
    ZeroYearDay,
    Hour,
    Hour12,
    ZeroHour12,
    Minute,
    ZeroMinute,
    Second,
    ZeroSecond,
    LongYear,
    Year,
    PM,
    Pm,
    Tz,
    Iso8601Tz,
    Iso8601SecondsTz,
    Iso8601ShortTz,
    Iso8601ColonTz,
    Iso8601ColonSecondsTz,
    NumTz,
    NumSecondsTz,
    NumShortTz,
    NumColonTz,
    NumColonSecondsTz,
    /// Fractional seconds: digits, separator (`.` or `,`), trim trailing zeros (`9`s).
    Frac(usize, u8, bool),
}

const LONG_MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const LONG_DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

fn starts_lower(s: &[u8]) -> bool {
    s.first().is_some_and(|c| c.is_ascii_lowercase())
}

fn is_digit_at(s: &[u8], i: usize) -> bool {
    s.get(i).is_some_and(|c| c.is_ascii_digit())
}

/// Go's `nextStdChunk`: `(prefix, std, suffix)`.
fn next_std_chunk(layout: &str) -> (&str, Option<Std>, &str) {
    let b = layout.as_bytes();
    let has = |i: usize, s: &str| b.len() >= i + s.len() && &b[i..i + s.len()] == s.as_bytes();
    for i in 0..b.len() {
        let ret = |std: Std, len: usize| (&layout[..i], Some(std), &layout[i + len..]);
        match b[i] {
            b'J' if has(i, "Jan") => {
                if has(i, "January") {
                    return ret(Std::LongMonth, 7);
                }
                if !starts_lower(&b[i + 3..]) {
                    return ret(Std::Month, 3);
                }
            }
            b'M' => {
                if has(i, "Mon") {
                    if has(i, "Monday") {
                        return ret(Std::LongWeekDay, 6);
                    }
                    if !starts_lower(&b[i + 3..]) {
                        return ret(Std::WeekDay, 3);
                    }
                }
                if has(i, "MST") {
                    return ret(Std::Tz, 3);
                }
            }
            b'0' => {
                if b.len() >= i + 2 && (b'1'..=b'6').contains(&b[i + 1]) {
                    let std = [
                        Std::ZeroMonth,
                        Std::ZeroDay,
                        Std::ZeroHour12,
                        Std::ZeroMinute,
                        Std::ZeroSecond,
                        Std::Year,
                    ][(b[i + 1] - b'1') as usize];
                    return ret(std, 2);
                }
                if has(i, "002") {
                    return ret(Std::ZeroYearDay, 3);
                }
            }
            b'1' => {
                if has(i, "15") {
                    return ret(Std::Hour, 2);
                }
                return ret(Std::NumMonth, 1);
            }
            b'2' => {
                if has(i, "2006") {
                    return ret(Std::LongYear, 4);
                }
                return ret(Std::Day, 1);
            }
            b'_' => {
                if has(i, "_2") {
                    if has(i + 1, "2006") {
                        return (&layout[..i + 1], Some(Std::LongYear), &layout[i + 5..]);
                    }
                    return ret(Std::UnderDay, 2);
                }
                if has(i, "__2") {
                    return ret(Std::UnderYearDay, 3);
                }
            }
            b'3' => return ret(Std::Hour12, 1),
            b'4' => return ret(Std::Minute, 1),
            b'5' => return ret(Std::Second, 1),
            b'P' if has(i, "PM") => return ret(Std::PM, 2),
            b'p' if has(i, "pm") => return ret(Std::Pm, 2),
            b'-' => {
                for (s, std) in [
                    ("-070000", Std::NumSecondsTz),
                    ("-07:00:00", Std::NumColonSecondsTz),
                    ("-0700", Std::NumTz),
                    ("-07:00", Std::NumColonTz),
                    ("-07", Std::NumShortTz),
                ] {
                    if has(i, s) {
                        return ret(std, s.len());
                    }
                }
            }
            b'Z' => {
                for (s, std) in [
                    ("Z070000", Std::Iso8601SecondsTz),
                    ("Z07:00:00", Std::Iso8601ColonSecondsTz),
                    ("Z0700", Std::Iso8601Tz),
                    ("Z07:00", Std::Iso8601ColonTz),
                    ("Z07", Std::Iso8601ShortTz),
                ] {
                    if has(i, s) {
                        return ret(std, s.len());
                    }
                }
            }
            c @ (b'.' | b',') if matches!(b.get(i + 1), Some(b'0' | b'9')) => {
                let ch = b[i + 1];
                let mut j = i + 1;
                while j < b.len() && b[j] == ch {
                    j += 1;
                }
                if !is_digit_at(b, j) {
                    let n = (j - (i + 1)).min(9);
                    return (
                        &layout[..i],
                        Some(Std::Frac(n, c, ch == b'9')),
                        &layout[j..],
                    );
                }
            }
            _ => {}
        }
    }
    (layout, None, "")
}

fn append_int(out: &mut String, x: i64, width: usize) {
    if x < 0 {
        out.push('-');
    }
    let _ = write!(out, "{:0width$}", x.unsigned_abs());
}

/// Go's `Time.Format`.
pub(crate) fn go_format(t: &GoTime, layout: &str) -> String {
    let dt = t.civil();
    let (year, month, day) = (dt.year() as i64, dt.month() as usize, dt.day() as i64);
    let (hour, min, sec) = (dt.hour() as i64, dt.minute() as i64, dt.second() as i64);
    let yday = dt.ordinal() as i64;
    let wday = dt.weekday().num_days_from_sunday() as usize;
    let mut out = String::with_capacity(layout.len() + 10);
    let mut rest = layout;
    loop {
        let (prefix, std, suffix) = next_std_chunk(rest);
        out.push_str(prefix);
        let Some(std) = std else { break };
        rest = suffix;
        match std {
            Std::Year => append_int(&mut out, year.rem_euclid(100), 2),
            Std::LongYear => append_int(&mut out, year, 4),
            Std::Month => out.push_str(&LONG_MONTHS[month - 1][..3]),
            Std::LongMonth => out.push_str(LONG_MONTHS[month - 1]),
            Std::NumMonth => append_int(&mut out, month as i64, 0),
            Std::ZeroMonth => append_int(&mut out, month as i64, 2),
            Std::WeekDay => out.push_str(&LONG_DAYS[wday][..3]),
            Std::LongWeekDay => out.push_str(LONG_DAYS[wday]),
            Std::Day => append_int(&mut out, day, 0),
            Std::UnderDay => {
                if day < 10 {
                    out.push(' ');
                }
                append_int(&mut out, day, 0);
            }
            Std::ZeroDay => append_int(&mut out, day, 2),
            Std::UnderYearDay => {
                if yday < 100 {
                    out.push(' ');
                    if yday < 10 {
                        out.push(' ');
                    }
                }
                append_int(&mut out, yday, 0);
            }
            Std::ZeroYearDay => append_int(&mut out, yday, 3),
            Std::Hour => append_int(&mut out, hour, 2),
            Std::Hour12 | Std::ZeroHour12 => {
                let mut hr = hour % 12;
                if hr == 0 {
                    hr = 12;
                }
                append_int(&mut out, hr, if std == Std::Hour12 { 0 } else { 2 });
            }
            Std::Minute => append_int(&mut out, min, 0),
            Std::ZeroMinute => append_int(&mut out, min, 2),
            Std::Second => append_int(&mut out, sec, 0),
            Std::ZeroSecond => append_int(&mut out, sec, 2),
            Std::PM => out.push_str(if hour >= 12 { "PM" } else { "AM" }),
            Std::Pm => out.push_str(if hour >= 12 { "pm" } else { "am" }),
            Std::Iso8601Tz
            | Std::Iso8601ColonTz
            | Std::Iso8601SecondsTz
            | Std::Iso8601ShortTz
            | Std::Iso8601ColonSecondsTz
            | Std::NumTz
            | Std::NumColonTz
            | Std::NumSecondsTz
            | Std::NumShortTz
            | Std::NumColonSecondsTz => {
                let iso = matches!(
                    std,
                    Std::Iso8601Tz
                        | Std::Iso8601ColonTz
                        | Std::Iso8601SecondsTz
                        | Std::Iso8601ShortTz
                        | Std::Iso8601ColonSecondsTz
                );
                if t.off == 0 && iso {
                    out.push('Z');
                    continue;
                }
                let mut zone = t.off as i64 / 60;
                let mut abs = t.off as i64;
                if zone < 0 {
                    out.push('-');
                    zone = -zone;
                    abs = -abs;
                } else {
                    out.push('+');
                }
                append_int(&mut out, zone / 60, 2);
                if matches!(
                    std,
                    Std::Iso8601ColonTz
                        | Std::NumColonTz
                        | Std::Iso8601ColonSecondsTz
                        | Std::NumColonSecondsTz
                ) {
                    out.push(':');
                }
                if !matches!(std, Std::NumShortTz | Std::Iso8601ShortTz) {
                    append_int(&mut out, zone % 60, 2);
                }
                if matches!(
                    std,
                    Std::Iso8601SecondsTz
                        | Std::NumSecondsTz
                        | Std::NumColonSecondsTz
                        | Std::Iso8601ColonSecondsTz
                ) {
                    if matches!(std, Std::NumColonSecondsTz | Std::Iso8601ColonSecondsTz) {
                        out.push(':');
                    }
                    append_int(&mut out, abs % 60, 2);
                }
            }
            Std::Tz => {
                if !t.zone.is_empty() {
                    out.push_str(&t.zone);
                } else {
                    let mut zone = t.off as i64 / 60;
                    if zone < 0 {
                        out.push('-');
                        zone = -zone;
                    } else {
                        out.push('+');
                    }
                    append_int(&mut out, zone / 60, 2);
                    append_int(&mut out, zone % 60, 2);
                }
            }
            Std::Frac(n, sep, trim) => {
                if trim && (n == 0 || t.nsec == 0) {
                    continue;
                }
                let mut frac = format!("{:09}", t.nsec);
                frac.truncate(n);
                if trim {
                    while frac.ends_with('0') {
                        frac.pop();
                    }
                    if frac.is_empty() {
                        continue;
                    }
                }
                out.push(sep as char);
                out.push_str(&frac);
            }
        }
    }
    out
}

fn parse_error(layout: &str, value: &str, layout_elem: &str, value_elem: &str) -> String {
    format!(
        "parsing time {} as {}: cannot parse {} as {}",
        go_quote(value),
        go_quote(layout),
        go_quote(value_elem),
        go_quote(layout_elem)
    )
}

/// Go's `getnum`: one or two digits (exactly two when `fixed`).
fn getnum(s: &str, fixed: bool) -> Option<(i64, &str)> {
    let b = s.as_bytes();
    if !is_digit_at(b, 0) {
        return None;
    }
    if !is_digit_at(b, 1) {
        if fixed {
            return None;
        }
        return Some(((b[0] - b'0') as i64, &s[1..]));
    }
    Some((((b[0] - b'0') as i64) * 10 + (b[1] - b'0') as i64, &s[2..]))
}

fn getnum3(s: &str, fixed: bool) -> Option<(i64, &str)> {
    let b = s.as_bytes();
    let mut n = 0i64;
    let mut i = 0;
    while i < 3 && is_digit_at(b, i) {
        n = n * 10 + (b[i] - b'0') as i64;
        i += 1;
    }
    if i == 0 || (fixed && i != 3) {
        return None;
    }
    Some((n, &s[i..]))
}

/// Go's `skip`: the layout's literal text; a space matches any run of spaces.
fn skip<'a>(mut value: &'a str, mut prefix: &str) -> Option<&'a str> {
    while !prefix.is_empty() {
        if prefix.starts_with(' ') {
            if !value.is_empty() && !value.starts_with(' ') {
                return None;
            }
            prefix = prefix.trim_start_matches(' ');
            value = value.trim_start_matches(' ');
            continue;
        }
        let c = prefix.chars().next()?;
        if !value.starts_with(c) {
            return None;
        }
        prefix = &prefix[c.len_utf8()..];
        value = &value[c.len_utf8()..];
    }
    Some(value)
}

fn lookup<'a>(names: &[&str], value: &'a str, short: bool) -> Option<(usize, &'a str)> {
    for (i, name) in names.iter().enumerate() {
        let name = if short { &name[..3] } else { name };
        if value.len() >= name.len()
            && value.is_char_boundary(name.len())
            && value[..name.len()].eq_ignore_ascii_case(name)
        {
            return Some((i, &value[name.len()..]));
        }
    }
    None
}

fn parse_nanos(value: &str, nbytes: usize) -> Result<u32, ()> {
    let b = value.as_bytes();
    if !matches!(b.first(), Some(b'.' | b',')) {
        return Err(());
    }
    let nbytes = nbytes.min(10);
    let digits = &value[1..nbytes];
    if !digits.bytes().all(|c| c.is_ascii_digit()) {
        return Err(());
    }
    let mut ns: u32 = digits.parse().unwrap_or(0);
    for _ in 0..(10 - nbytes) {
        ns *= 10;
    }
    Ok(ns)
}

fn parse_time_zone(value: &str) -> Option<usize> {
    let b = value.as_bytes();
    if b.len() < 3 {
        return None;
    }
    if value.starts_with("GMT") {
        // GMT with an optional signed hour offset.
        let rest = &b[3..];
        if matches!(rest.first(), Some(b'+' | b'-')) {
            let n = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
            if n > 0 {
                return Some(4 + n);
            }
        }
        return Some(3);
    }
    let n = b
        .iter()
        .take(6)
        .take_while(|c| c.is_ascii_uppercase())
        .count();
    match n {
        3 => Some(3),
        4 if b[3] == b'T' || &b[..4] == b"WITA" => Some(4),
        5 if b[4] == b'T' => Some(5),
        _ => None,
    }
}

fn days_in(month: i64, year: i64) -> i64 {
    let next = if month == 12 {
        NaiveDate::from_ymd_opt(year as i32 + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(year as i32, month as u32 + 1, 1)
    };
    let this = NaiveDate::from_ymd_opt(year as i32, month as u32, 1);
    match (this, next) {
        (Some(a), Some(b)) => (b - a).num_days(),
        _ => 31,
    }
}

/// Go's `time.Parse` (no local-zone abbreviation lookup: a named zone other than `UTC` gets
/// offset 0, as Go does for zones it does not know).
pub(crate) fn go_parse(layout: &str, value: &str) -> Result<GoTime, String> {
    let (alayout, avalue) = (layout, value);
    let mut layout = layout;
    let mut value = value;
    let (mut year, mut month, mut day, mut yday) = (0i64, -1i64, -1i64, -1i64);
    let (mut hour, mut min, mut sec, mut nsec) = (0i64, 0i64, 0i64, 0u32);
    let (mut am, mut pm) = (false, false);
    let mut utc = false;
    let mut zone_offset: Option<i64> = None;
    let mut zone_name = String::new();
    loop {
        let (prefix, std, suffix) = next_std_chunk(layout);
        let std_str = &layout[prefix.len()..layout.len() - suffix.len()];
        value = match skip(value, prefix) {
            Some(v) => v,
            None => return Err(parse_error(alayout, avalue, prefix, value)),
        };
        let Some(std) = std else {
            if !value.is_empty() {
                return Err(format!(
                    "parsing time {}: extra text: {}",
                    go_quote(avalue),
                    go_quote(value)
                ));
            }
            break;
        };
        layout = suffix;
        let hold = value;
        let mut range_err = "";
        let mut ok = true;
        match std {
            Std::Year => {
                if value.len() < 2 || !value.is_char_boundary(2) {
                    ok = false;
                } else {
                    match value[..2].parse::<i64>() {
                        Ok(y) if value[..2].bytes().all(|c| c.is_ascii_digit()) => {
                            year = if y >= 69 { y + 1900 } else { y + 2000 };
                            value = &value[2..];
                        }
                        _ => ok = false,
                    }
                }
            }
            Std::LongYear => {
                if value.len() < 4
                    || !value.is_char_boundary(4)
                    || !value[..4].bytes().all(|c| c.is_ascii_digit())
                {
                    ok = false;
                } else {
                    year = value[..4].parse().unwrap_or(0);
                    value = &value[4..];
                }
            }
            Std::Month | Std::LongMonth => match lookup(&LONG_MONTHS, value, std == Std::Month) {
                Some((m, rest)) => {
                    month = m as i64 + 1;
                    value = rest;
                }
                None => ok = false,
            },
            Std::NumMonth | Std::ZeroMonth => match getnum(value, std == Std::ZeroMonth) {
                Some((m, rest)) => {
                    month = m;
                    value = rest;
                    if !(1..=12).contains(&m) {
                        range_err = "month";
                    }
                }
                None => ok = false,
            },
            Std::WeekDay | Std::LongWeekDay => {
                match lookup(&LONG_DAYS, value, std == Std::WeekDay) {
                    Some((_, rest)) => value = rest,
                    None => ok = false,
                }
            }
            Std::Day | Std::UnderDay | Std::ZeroDay => {
                if std == Std::UnderDay && value.starts_with(' ') {
                    value = &value[1..];
                }
                match getnum(value, std == Std::ZeroDay) {
                    Some((d, rest)) => {
                        day = d;
                        value = rest;
                    }
                    None => ok = false,
                }
            }
            Std::UnderYearDay | Std::ZeroYearDay => {
                for _ in 0..2 {
                    if std == Std::UnderYearDay && value.starts_with(' ') {
                        value = &value[1..];
                    }
                }
                match getnum3(value, std == Std::ZeroYearDay) {
                    Some((d, rest)) => {
                        yday = d;
                        value = rest;
                        if !(1..=366).contains(&d) {
                            range_err = "day-of-year";
                        }
                    }
                    None => ok = false,
                }
            }
            Std::Hour => match getnum(value, false) {
                Some((h, rest)) => {
                    hour = h;
                    value = rest;
                    if !(0..24).contains(&h) {
                        range_err = "hour";
                    }
                }
                None => ok = false,
            },
            Std::Hour12 | Std::ZeroHour12 => match getnum(value, std == Std::ZeroHour12) {
                Some((h, rest)) => {
                    hour = h;
                    value = rest;
                    if !(0..=12).contains(&h) {
                        range_err = "hour";
                    }
                }
                None => ok = false,
            },
            Std::Minute | Std::ZeroMinute => match getnum(value, std == Std::ZeroMinute) {
                Some((m, rest)) => {
                    min = m;
                    value = rest;
                    if !(0..60).contains(&m) {
                        range_err = "minute";
                    }
                }
                None => ok = false,
            },
            Std::Second | Std::ZeroSecond => match getnum(value, std == Std::ZeroSecond) {
                Some((s, rest)) => {
                    sec = s;
                    value = rest;
                    if !(0..60).contains(&s) {
                        range_err = "second";
                    } else {
                        let b = value.as_bytes();
                        if b.len() >= 2 && matches!(b[0], b'.' | b',') && is_digit_at(b, 1) {
                            let (_, next, _) = next_std_chunk(layout);
                            if !matches!(next, Some(Std::Frac(..))) {
                                let mut n = 2;
                                while is_digit_at(b, n) {
                                    n += 1;
                                }
                                match parse_nanos(value, n) {
                                    Ok(ns) => nsec = ns,
                                    Err(()) => ok = false,
                                }
                                value = &value[n..];
                            }
                        }
                    }
                }
                None => ok = false,
            },
            Std::PM | Std::Pm => {
                let (p, a) = if std == Std::PM {
                    ("PM", "AM")
                } else {
                    ("pm", "am")
                };
                if value.starts_with(p) {
                    pm = true;
                    value = &value[2..];
                } else if value.starts_with(a) {
                    am = true;
                    value = &value[2..];
                } else {
                    ok = false;
                }
            }
            Std::Iso8601Tz
            | Std::Iso8601ColonTz
            | Std::Iso8601SecondsTz
            | Std::Iso8601ShortTz
            | Std::Iso8601ColonSecondsTz
            | Std::NumTz
            | Std::NumColonTz
            | Std::NumSecondsTz
            | Std::NumShortTz
            | Std::NumColonSecondsTz => {
                let iso = matches!(
                    std,
                    Std::Iso8601Tz
                        | Std::Iso8601ColonTz
                        | Std::Iso8601SecondsTz
                        | Std::Iso8601ShortTz
                        | Std::Iso8601ColonSecondsTz
                );
                if iso && value.starts_with('Z') {
                    value = &value[1..];
                    utc = true;
                } else {
                    let b = value.as_bytes();
                    let parts: Option<(u8, &str, &str, &str, usize)> = match std {
                        Std::Iso8601ColonTz | Std::NumColonTz => (b.len() >= 6 && b[3] == b':')
                            .then(|| (b[0], &value[1..3], &value[4..6], "00", 6)),
                        Std::Iso8601ShortTz | Std::NumShortTz => {
                            (b.len() >= 3).then(|| (b[0], &value[1..3], "00", "00", 3))
                        }
                        Std::Iso8601ColonSecondsTz | Std::NumColonSecondsTz => {
                            (b.len() >= 9 && b[3] == b':' && b[6] == b':')
                                .then(|| (b[0], &value[1..3], &value[4..6], &value[7..9], 9))
                        }
                        Std::Iso8601SecondsTz | Std::NumSecondsTz => (b.len() >= 7)
                            .then(|| (b[0], &value[1..3], &value[3..5], &value[5..7], 7)),
                        _ => (b.len() >= 5).then(|| (b[0], &value[1..3], &value[3..5], "00", 5)),
                    };
                    let parsed = parts.and_then(|(sign, h, m, s, len)| {
                        let (h, _) = getnum(h, true)?;
                        let (m, _) = getnum(m, true)?;
                        let (s, _) = getnum(s, true)?;
                        Some((sign, h, m, s, len))
                    });
                    match parsed {
                        Some((sign, h, m, s, len)) if sign == b'+' || sign == b'-' => {
                            if h > 24 {
                                range_err = "time zone offset hour";
                            }
                            if m > 60 {
                                range_err = "time zone offset minute";
                            }
                            if s > 60 {
                                range_err = "time zone offset second";
                            }
                            let off = (h * 60 + m) * 60 + s;
                            zone_offset = Some(if sign == b'-' { -off } else { off });
                            value = &value[len..];
                        }
                        _ => ok = false,
                    }
                }
            }
            Std::Tz => {
                if value.starts_with("UTC") {
                    utc = true;
                    value = &value[3..];
                } else {
                    match parse_time_zone(value) {
                        Some(n) if value.is_char_boundary(n) => {
                            zone_name = value[..n].to_string();
                            value = &value[n..];
                        }
                        _ => ok = false,
                    }
                }
            }
            Std::Frac(n, _, trim) => {
                if !trim {
                    let nd = 1 + n;
                    if value.len() < nd || !value.is_char_boundary(nd) {
                        ok = false;
                    } else {
                        match parse_nanos(value, nd) {
                            Ok(ns) => nsec = ns,
                            Err(()) => ok = false,
                        }
                        value = &value[nd..];
                    }
                } else {
                    let b = value.as_bytes();
                    if b.len() >= 2 && matches!(b[0], b'.' | b',') && b[1].is_ascii_digit() {
                        let mut i = 0;
                        while i + 1 < b.len() && b[i + 1].is_ascii_digit() {
                            i += 1;
                        }
                        match parse_nanos(value, 1 + i) {
                            Ok(ns) => nsec = ns,
                            Err(()) => ok = false,
                        }
                        value = &value[1 + i..];
                    }
                }
            }
        }
        if !range_err.is_empty() {
            return Err(format!(
                "parsing time {}: {range_err} out of range",
                go_quote(avalue)
            ));
        }
        if !ok {
            return Err(parse_error(alayout, avalue, std_str, hold));
        }
    }
    if pm && hour < 12 {
        hour += 12;
    } else if am && hour == 12 {
        hour = 0;
    }
    if yday >= 0 {
        let leap = days_in(2, year) == 29;
        if yday > if leap { 366 } else { 365 } {
            return Err(format!(
                "parsing time {}: day-of-year out of range",
                go_quote(avalue)
            ));
        }
        let date = NaiveDate::from_yo_opt(year as i32, yday as u32).ok_or_else(|| {
            format!(
                "parsing time {}: day-of-year out of range",
                go_quote(avalue)
            )
        })?;
        if (month >= 0 && month != date.month() as i64) || (day >= 0 && day != date.day() as i64) {
            return Err(format!(
                "parsing time {}: day-of-year does not match month",
                go_quote(avalue)
            ));
        }
        month = date.month() as i64;
        day = date.day() as i64;
    } else {
        if month < 0 {
            month = 1;
        }
        if day < 0 {
            day = 1;
        }
    }
    if day < 1 || day > days_in(month, year) {
        return Err(format!(
            "parsing time {}: day out of range",
            go_quote(avalue)
        ));
    }
    let civil = NaiveDate::from_ymd_opt(year as i32, month as u32, day as u32)
        .and_then(|d| d.and_hms_nano_opt(hour as u32, min as u32, sec as u32, nsec))
        .ok_or_else(|| format!("parsing time {}: out of range", go_quote(avalue)))?;
    if utc {
        return Ok(GoTime::from_civil(civil, 0, "UTC".into()));
    }
    if let Some(off) = zone_offset {
        return Ok(GoTime::from_civil(civil, off as i32, String::new()));
    }
    if !zone_name.is_empty() {
        let mut off = 0i64;
        if zone_name.len() > 3 && zone_name.starts_with("GMT") {
            off = zone_name[3..].parse::<i64>().unwrap_or(0) * 3600;
        }
        return Ok(GoTime::from_civil(civil, off as i32, zone_name));
    }
    Ok(GoTime::from_civil(civil, 0, "UTC".into()))
}

/// Go's `Time.AddDate` (month and day overflow normalised).
pub(crate) fn add_date(t: &GoTime, years: i64, months: i64, days: i64) -> Option<GoTime> {
    let dt = t.civil();
    let total_months = (dt.month0() as i64) + months;
    let y = dt.year() as i64 + years + total_months.div_euclid(12);
    let m = total_months.rem_euclid(12) as u32 + 1;
    let first = NaiveDate::from_ymd_opt(i32::try_from(y).ok()?, m, 1)?;
    let date =
        first.checked_add_signed(chrono::TimeDelta::try_days(dt.day() as i64 - 1 + days)?)?;
    Some(GoTime::from_civil(
        date.and_time(dt.time()),
        t.off,
        t.zone.clone(),
    ))
}

/// Go's `Time.Truncate` / `Round` (relative to the zero time).
pub(crate) fn truncate_time(t: &GoTime, d: i64, round: bool) -> GoTime {
    if d <= 0 {
        return t.clone();
    }
    let abs = t.unix_nanos() - ZERO_TIME_UNIX as i128 * 1_000_000_000;
    let r = abs.rem_euclid(d as i128);
    let delta = if round && r + r >= d as i128 {
        d as i128 - r
    } else {
        -r
    };
    t.add_nanos(delta as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_layouts() {
        let t = go_parse(
            "2006-01-02T15:04:05.999999999Z07:00",
            "2009-11-10T23:04:05.012+01:30",
        )
        .unwrap();
        assert_eq!(t.off, 5400);
        assert_eq!(
            go_format(&t, "Mon Jan _2 15:04:05 2006"),
            "Tue Nov 10 23:04:05 2009"
        );
        assert_eq!(
            go_format(&t, "Monday January 2 3:4:5 PM 06"),
            "Tuesday November 10 11:4:5 PM 09"
        );
        assert_eq!(
            go_format(&t, "2006-01-02 15:04:05.000 -0700 -07:00 Z07:00 -07"),
            "2009-11-10 23:04:05.012 +0130 +01:30 +01:30 +01"
        );
        assert_eq!(
            go_format(&t, ".999999999|,000000|.9|002|__2"),
            ".012|,012000||314|314"
        );
        assert_eq!(go_format(&t, "MST"), "+0130");
        let u = t.utc();
        assert_eq!(
            go_format(&u, "2006-01-02T15:04:05Z07:00 MST pm"),
            "2009-11-10T21:34:05Z UTC pm"
        );
        assert_eq!(u.go_string(), "2009-11-10 21:34:05.012 +0000 UTC");
        assert_eq!(go_format(&u, "Jan January Janx"), "Nov November Janx");
        let p = go_parse("Jan _2 2006 3:04PM MST", "Feb  3 2013 7:54PM PST").unwrap();
        assert_eq!(
            go_format(&p, "2006-01-02 15:04 MST"),
            "2013-02-03 19:54 PST"
        );
        assert_eq!(
            go_parse("2006-01-02", "2013-02-30").unwrap_err(),
            "parsing time \"2013-02-30\": day out of range"
        );
        assert_eq!(
            go_parse("2006-01-02", "2013/02/03").unwrap_err(),
            "parsing time \"2013/02/03\" as \"2006-01-02\": cannot parse \"/02/03\" as \"-\""
        );
        assert!(go_parse("2006", "2013x")
            .unwrap_err()
            .contains("extra text: \"x\""));
        let d = add_date(&go_parse("2006-01-02", "2024-01-31").unwrap(), 0, 1, 0).unwrap();
        assert_eq!(go_format(&d, "2006-01-02"), "2024-03-02");
        let tr = truncate_time(&u, 3_600_000_000_000, false);
        assert_eq!(go_format(&tr, "15:04:05"), "21:00:00");
    }
}
