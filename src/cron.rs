//! Step schedules for `server` (spec §12): robfig/cron's standard parser and its `Next`.
//!
//! Grammar: an optional `TZ=<zone> ` / `CRON_TZ=<zone> ` prefix, then either a descriptor
//! (`@yearly`/`@annually`, `@monthly`, `@weekly`, `@daily`/`@midnight`, `@hourly`,
//! `@every <go duration>`) or exactly five fields `minute hour day-of-month month day-of-week`
//! with `*`, `?`, lists, ranges, steps (`a/n` = `a-max/n`), month and weekday names
//! (case-insensitive) and weekday numbers 0–6.
//!
//! The `saffron` crate was evaluated and not used: it parses Quartz syntax (weekdays 1–7, so
//! `0` = Sunday is rejected and `7` accepted; no `?`; it accepts `L`, `W` and `#`), only
//! computes in UTC, and its parse errors carry no text. Every rule the spec pins would have
//! been overridden, so the parser and the next-fire search below follow robfig's code
//! directly, including its error texts and its wall-clock walk through DST changes.

use crate::gocompat::duration::{parse_duration, GoDuration};
use chrono::{
    DateTime, Datelike, Duration as TimeDelta, NaiveDate, NaiveDateTime, Offset, TimeZone,
    Timelike, Utc,
};
use std::time::Duration;

/// A parse failure; the text is robfig/cron's (`end of range (61) above maximum (59): 61`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CronError(pub String);

/// The time zone a cron schedule is evaluated in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Zone {
    /// The process's local zone (`TZ` environment variable or `/etc/localtime`).
    Local,
    Named(chrono_tz::Tz),
}

impl Zone {
    /// Seconds east of UTC in effect at the instant `utc`.
    fn offset_at(&self, utc: &NaiveDateTime) -> i64 {
        let secs = match self {
            Zone::Local => chrono::Local.offset_from_utc_datetime(utc).fix(),
            Zone::Named(tz) => tz.offset_from_utc_datetime(utc).fix(),
        };
        secs.local_minus_utc() as i64
    }

    /// Wall-clock reading of `t` in this zone.
    fn wall(&self, t: DateTime<Utc>) -> NaiveDateTime {
        let n = t.naive_utc();
        n + TimeDelta::seconds(self.offset_at(&n))
    }

    /// The instant of a wall-clock reading, resolved like Go's `time.Date`: the offset in
    /// effect at the reading taken as UTC, corrected once if that instant falls outside the
    /// offset's period (a time in a spring-forward gap moves forward by the gap).
    fn instant(&self, wall: NaiveDateTime) -> DateTime<Utc> {
        let first = self.offset_at(&wall);
        let utc = wall - TimeDelta::seconds(first);
        let second = self.offset_at(&utc);
        (wall - TimeDelta::seconds(second)).and_utc()
    }

    /// Go's `time.Date(year, month, day, hour, min, sec, 0, loc)` with month and day
    /// normalised (month 13 is January of the next year, day 32 rolls into the next month).
    fn date(
        &self,
        year: i32,
        month: i64,
        day: i64,
        hour: u32,
        min: u32,
        sec: u32,
    ) -> DateTime<Utc> {
        let m0 = month - 1;
        let year = year + m0.div_euclid(12) as i32;
        let month = (m0.rem_euclid(12) + 1) as u32;
        let first = NaiveDate::from_ymd_opt(year, month, 1).unwrap_or(NaiveDate::MAX);
        let date = first
            .checked_add_signed(TimeDelta::days(day - 1))
            .unwrap_or(NaiveDate::MAX);
        let wall = date.and_hms_opt(0, 0, 0).unwrap_or_default()
            + TimeDelta::hours(hour as i64)
            + TimeDelta::minutes(min as i64)
            + TimeDelta::seconds(sec as i64);
        self.instant(wall)
    }
}

const STAR: u64 = 1 << 63;

/// The bounds and names of one field.
struct Bounds {
    min: u32,
    max: u32,
    names: &'static [(&'static str, u32)],
}

const MINUTES: Bounds = Bounds {
    min: 0,
    max: 59,
    names: &[],
};
const HOURS: Bounds = Bounds {
    min: 0,
    max: 23,
    names: &[],
};
const DOM: Bounds = Bounds {
    min: 1,
    max: 31,
    names: &[],
};
const MONTHS: Bounds = Bounds {
    min: 1,
    max: 12,
    names: &[
        ("jan", 1),
        ("feb", 2),
        ("mar", 3),
        ("apr", 4),
        ("may", 5),
        ("jun", 6),
        ("jul", 7),
        ("aug", 8),
        ("sep", 9),
        ("oct", 10),
        ("nov", 11),
        ("dec", 12),
    ],
};
const DOW: Bounds = Bounds {
    min: 0,
    max: 6,
    names: &[
        ("sun", 0),
        ("mon", 1),
        ("tue", 2),
        ("wed", 3),
        ("thu", 4),
        ("fri", 5),
        ("sat", 6),
    ],
};

/// Bits `min..=max` stepping by `step`.
fn bits(min: u32, max: u32, step: u32) -> u64 {
    if step == 1 {
        return !(u64::MAX << (max + 1)) & (u64::MAX << min);
    }
    (min..=max)
        .step_by(step as usize)
        .fold(0, |acc, i| acc | 1 << i)
}

fn all(b: &Bounds) -> u64 {
    bits(b.min, b.max, 1) | STAR
}

/// A five-field schedule as bit sets (bit 63 marks a `*`/`?` field, which matters for the
/// day-of-month/day-of-week rule).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CronSpec {
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
    zone: Zone,
}

/// A parsed step schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Schedule {
    Cron(CronSpec),
    /// `@every`: the delay, whole seconds, at least 1 s.
    Every(Duration),
}

/// The schedule text of a step: `schedule`, else `@every <interval>` (Go duration text) when
/// the interval is not zero, else none.
pub fn step_schedule(schedule: &str, interval: &str) -> Option<String> {
    if !schedule.is_empty() {
        return Some(schedule.to_string());
    }
    let d = crate::gocompat::duration::duration_of(interval);
    (!d.is_zero()).then(|| format!("@every {d}"))
}

/// `@every`'s rounding: down to whole seconds; anything below one second (negative included)
/// becomes one second.
pub fn every_delay(d: GoDuration) -> Duration {
    const SEC: i64 = 1_000_000_000;
    let n = d.nanos().max(SEC);
    Duration::from_secs((n - n % SEC) as u64 / SEC as u64)
}

/// Parses a schedule the way regsync's cron library does (`cron.ParseStandard`).
pub fn parse(spec: &str) -> Result<Schedule, CronError> {
    if spec.is_empty() {
        return Err(CronError("empty spec string".into()));
    }
    let mut zone = Zone::Local;
    let mut spec = spec;
    if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
        let eq = spec.find('=').unwrap_or(0);
        // robfig slices up to the first space and panics when there is none; here the whole
        // rest is the zone and the (empty) schedule after it fails the field count.
        let end = spec.find(' ').unwrap_or(spec.len());
        let name = spec.get(eq + 1..end).unwrap_or("");
        zone =
            load_zone(name).map_err(|e| CronError(format!("provided bad location {name}: {e}")))?;
        spec = spec[end..].trim();
    }
    if spec.starts_with('@') {
        return descriptor(spec, zone);
    }
    let fields: Vec<&str> = spec.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(CronError(format!(
            "expected exactly 5 fields, found {}: [{}]",
            fields.len(),
            fields.join(" ")
        )));
    }
    Ok(Schedule::Cron(CronSpec {
        minute: field(fields[0], &MINUTES)?,
        hour: field(fields[1], &HOURS)?,
        dom: field(fields[2], &DOM)?,
        month: field(fields[3], &MONTHS)?,
        dow: field(fields[4], &DOW)?,
        zone,
    }))
}

/// Go's `time.LoadLocation` names: `""` and `UTC` are UTC, `Local` the process zone.
fn load_zone(name: &str) -> Result<Zone, String> {
    match name {
        "" | "UTC" => Ok(Zone::Named(chrono_tz::UTC)),
        "Local" => Ok(Zone::Local),
        _ => name
            .parse::<chrono_tz::Tz>()
            .map(Zone::Named)
            .map_err(|_| format!("unknown time zone {name}")),
    }
}

fn descriptor(spec: &str, zone: Zone) -> Result<Schedule, CronError> {
    let one = |b: &Bounds| 1u64 << b.min;
    let cron = |minute, hour, dom, month, dow| {
        Ok(Schedule::Cron(CronSpec {
            minute,
            hour,
            dom,
            month,
            dow,
            zone: zone.clone(),
        }))
    };
    match spec {
        "@yearly" | "@annually" => {
            return cron(
                one(&MINUTES),
                one(&HOURS),
                one(&DOM),
                one(&MONTHS),
                all(&DOW),
            )
        }
        "@monthly" => {
            return cron(
                one(&MINUTES),
                one(&HOURS),
                one(&DOM),
                all(&MONTHS),
                all(&DOW),
            )
        }
        "@weekly" => {
            return cron(
                one(&MINUTES),
                one(&HOURS),
                all(&DOM),
                all(&MONTHS),
                one(&DOW),
            )
        }
        "@daily" | "@midnight" => {
            return cron(
                one(&MINUTES),
                one(&HOURS),
                all(&DOM),
                all(&MONTHS),
                all(&DOW),
            )
        }
        "@hourly" => {
            return cron(
                one(&MINUTES),
                all(&HOURS),
                all(&DOM),
                all(&MONTHS),
                all(&DOW),
            )
        }
        _ => {}
    }
    if let Some(text) = spec.strip_prefix("@every ") {
        let d = parse_duration(text)
            .map_err(|e| CronError(format!("failed to parse duration {spec}: {e}")))?;
        return Ok(Schedule::Every(every_delay(d)));
    }
    Err(CronError(format!("unrecognized descriptor: {spec}")))
}

/// One comma-separated field (empty list items are dropped, as Go's `FieldsFunc` does).
fn field(text: &str, b: &Bounds) -> Result<u64, CronError> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .try_fold(0, |acc, expr| Ok(acc | range(expr, b)?))
}

/// `*`, `?`, `a`, `a-b`, each optionally `/step`.
fn range(expr: &str, b: &Bounds) -> Result<u64, CronError> {
    let range_and_step: Vec<&str> = expr.split('/').collect();
    let low_high: Vec<&str> = range_and_step[0].split('-').collect();
    let single = low_high.len() == 1;
    let (start, mut end, mut extra);
    if low_high[0] == "*" || low_high[0] == "?" {
        (start, end, extra) = (b.min as u64, b.max as u64, STAR);
    } else {
        start = int_or_name(low_high[0], b)?;
        end = match low_high.len() {
            1 => start,
            2 => int_or_name(low_high[1], b)?,
            _ => return Err(CronError(format!("too many hyphens: {expr}"))),
        };
        extra = 0;
    }
    let step = match range_and_step.len() {
        1 => 1,
        2 => {
            let step = int(range_and_step[1])?;
            // "N/step" means "N-max/step".
            if single {
                end = b.max as u64;
            }
            if step > 1 {
                extra = 0;
            }
            step
        }
        _ => return Err(CronError(format!("too many slashes: {expr}"))),
    };
    if start < b.min as u64 {
        return Err(CronError(format!(
            "beginning of range ({start}) below minimum ({}): {expr}",
            b.min
        )));
    }
    if end > b.max as u64 {
        return Err(CronError(format!(
            "end of range ({end}) above maximum ({}): {expr}",
            b.max
        )));
    }
    if start > end {
        return Err(CronError(format!(
            "beginning of range ({start}) beyond end of range ({end}): {expr}"
        )));
    }
    if step == 0 {
        return Err(CronError(format!(
            "step of range should be a positive number: {expr}"
        )));
    }
    // In range now: start ≤ end ≤ 59.
    let step = step.min(64) as u32;
    Ok(bits(start as u32, end as u32, step) | extra)
}

fn int_or_name(expr: &str, b: &Bounds) -> Result<u64, CronError> {
    let lower = expr.to_ascii_lowercase();
    match b.names.iter().find(|(n, _)| *n == lower) {
        Some((_, v)) => Ok(*v as u64),
        None => int(expr),
    }
}

/// Go's `strconv.Atoi` (optional sign, decimal digits) plus robfig's negative check.
fn int(expr: &str) -> Result<u64, CronError> {
    let digits = expr.strip_prefix(['+', '-']).unwrap_or(expr);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return Err(CronError(format!(
            "failed to parse int from {expr}: strconv.Atoi: parsing \"{expr}\": invalid syntax"
        )));
    }
    let Ok(n) = expr.parse::<i64>() else {
        let why = "value out of range";
        return Err(CronError(format!(
            "failed to parse int from {expr}: strconv.Atoi: parsing \"{expr}\": {why}"
        )));
    };
    if n < 0 {
        return Err(CronError(format!(
            "negative number ({n}) not allowed: {expr}"
        )));
    }
    Ok(n as u64)
}

impl CronSpec {
    fn day_matches(&self, w: &NaiveDateTime) -> bool {
        let dom = self.dom & (1 << w.day()) != 0;
        let dow = self.dow & (1 << w.weekday().num_days_from_sunday()) != 0;
        if self.dom & STAR != 0 || self.dow & STAR != 0 {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// robfig's `SpecSchedule.Next`: the first matching second strictly after `t`, walking
    /// the wall clock of the schedule's zone; `None` when nothing matches within five years.
    pub fn next(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let z = &self.zone;
        let add_date = |t: DateTime<Utc>, months: i64, days: i64| {
            let w = z.wall(t);
            z.date(
                w.year(),
                w.month() as i64 + months,
                w.day() as i64 + days,
                w.hour(),
                w.minute(),
                w.second(),
            )
        };
        // The upcoming whole second.
        let mut t = t.with_nanosecond(0)? + TimeDelta::seconds(1);
        let mut added = false;
        let year_limit = z.wall(t).year() + 5;
        'wrap: loop {
            if z.wall(t).year() > year_limit {
                return None;
            }
            while self.month & (1 << z.wall(t).month()) == 0 {
                if !added {
                    added = true;
                    let w = z.wall(t);
                    t = z.date(w.year(), w.month() as i64, 1, 0, 0, 0);
                }
                t = add_date(t, 1, 0);
                if z.wall(t).month() == 1 {
                    continue 'wrap;
                }
            }
            while !self.day_matches(&z.wall(t)) {
                if !added {
                    added = true;
                    let w = z.wall(t);
                    t = z.date(w.year(), w.month() as i64, w.day() as i64, 0, 0, 0);
                }
                t = add_date(t, 0, 1);
                // A DST change can leave the walk off midnight: go back to it.
                let h = z.wall(t).hour() as i64;
                if h != 0 {
                    t += if h > 12 {
                        TimeDelta::hours(24 - h)
                    } else {
                        TimeDelta::hours(-h)
                    };
                }
                if z.wall(t).day() == 1 {
                    continue 'wrap;
                }
            }
            while self.hour & (1 << z.wall(t).hour()) == 0 {
                if !added {
                    added = true;
                    let w = z.wall(t);
                    t = z.date(w.year(), w.month() as i64, w.day() as i64, w.hour(), 0, 0);
                }
                t += TimeDelta::hours(1);
                if z.wall(t).hour() == 0 {
                    continue 'wrap;
                }
            }
            while self.minute & (1 << z.wall(t).minute()) == 0 {
                if !added {
                    added = true;
                    t = DateTime::from_timestamp(t.timestamp() - t.timestamp().rem_euclid(60), 0)?;
                }
                t += TimeDelta::minutes(1);
                if z.wall(t).minute() == 0 {
                    continue 'wrap;
                }
            }
            // The standard parser's seconds field is "0".
            while z.wall(t).second() != 0 {
                added = true;
                t += TimeDelta::seconds(1);
                if z.wall(t).second() == 0 {
                    continue 'wrap;
                }
            }
            return Some(t);
        }
    }
}

impl Schedule {
    /// The firing after `now`. `@every` fires `delay` after `now` truncated to the second.
    pub fn next(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Cron(c) => c.next(now),
            Schedule::Every(d) => {
                let base = now.with_nanosecond(0)?;
                Some(base + TimeDelta::from_std(*d).ok()?)
            }
        }
    }
}

/// Where the scheduler reads "now". `System` is the wall clock; `Anchored` advances with
/// tokio's clock from a fixed wall time, so schedules run under paused time in tests.
#[derive(Clone, Debug)]
pub enum Clock {
    System,
    Anchored {
        wall: DateTime<Utc>,
        at: tokio::time::Instant,
    },
}

impl Clock {
    pub fn anchored(wall: DateTime<Utc>) -> Clock {
        Clock::Anchored {
            wall,
            at: tokio::time::Instant::now(),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Anchored { wall, at } => {
                *wall + TimeDelta::from_std(at.elapsed()).unwrap_or_default()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn err(spec: &str) -> String {
        parse(spec).unwrap_err().to_string()
    }

    /// The next `n` firings after `from`, as RFC 3339 UTC.
    fn fires(spec: &str, from: &str, n: usize) -> Vec<String> {
        let s = parse(spec).unwrap();
        let mut t = utc(from);
        (0..n)
            .map(|_| {
                t = s.next(t).expect("fires");
                t.to_rfc3339()
            })
            .collect()
    }

    #[test]
    fn error_texts_match_robfig() {
        assert_eq!(
            err("61 * * * *"),
            "end of range (61) above maximum (59): 61"
        );
        assert_eq!(err("0 0 * * 7"), "end of range (7) above maximum (6): 7");
        assert_eq!(
            err("0 0 0 * *"),
            "beginning of range (0) below minimum (1): 0"
        );
        assert_eq!(
            err("5-1 * * * *"),
            "beginning of range (5) beyond end of range (1): 5-1"
        );
        assert_eq!(
            err("*/0 * * * *"),
            "step of range should be a positive number: */0"
        );
        assert_eq!(err("1-2-3 * * * *"), "too many hyphens: 1-2-3");
        assert_eq!(err("1/2/3 * * * *"), "too many slashes: 1/2/3");
        assert_eq!(
            err("x * * * *"),
            "failed to parse int from x: strconv.Atoi: parsing \"x\": invalid syntax"
        );
        assert_eq!(err("*/-1 * * * *"), "negative number (-1) not allowed: -1");
        assert_eq!(
            err("99999999999 * * * *"),
            "end of range (99999999999) above maximum (59): 99999999999"
        );
        assert_eq!(
            err("99999999999999999999 * * * *"),
            "failed to parse int from 99999999999999999999: strconv.Atoi: parsing \"99999999999999999999\": value out of range"
        );
        assert!(parse("+5 * * * *").is_ok(), "Atoi accepts a sign");
        assert_eq!(
            err("0 0 * * * *"),
            "expected exactly 5 fields, found 6: [0 0 * * * *]"
        );
        assert_eq!(err("@often"), "unrecognized descriptor: @often");
        assert_eq!(
            err("@every 1d"),
            "failed to parse duration @every 1d: time: unknown unit \"d\" in duration \"1d\""
        );
        assert_eq!(
            err("TZ=Mars/Base 0 * * * *"),
            "provided bad location Mars/Base: unknown time zone Mars/Base"
        );
        assert_eq!(err(""), "empty spec string");
        assert_eq!(
            err("* * * JANUARY *"),
            "failed to parse int from JANUARY: strconv.Atoi: parsing \"JANUARY\": invalid syntax"
        );
    }

    #[test]
    fn fields_names_lists_ranges_steps() {
        let Schedule::Cron(c) = parse("TZ=UTC 0,30 9-17/4 ? jan,Mar-MAY mon-FRI").unwrap() else {
            panic!()
        };
        assert_eq!(c.minute, 1 | 1 << 30);
        assert_eq!(c.hour, 1 << 9 | 1 << 13 | 1 << 17);
        assert_eq!(c.dom, all(&DOM));
        assert_eq!(c.month, 1 << 1 | 1 << 3 | 1 << 4 | 1 << 5);
        assert_eq!(c.dow, bits(1, 5, 1));
        // a/n is a-max/n; */1 is still "*"; */2 is not
        let Schedule::Cron(c) = parse("TZ=UTC 50/5 */1 */2 * *").unwrap() else {
            panic!()
        };
        assert_eq!(c.minute, 1 << 50 | 1 << 55);
        assert_eq!(c.hour, all(&HOURS));
        assert_eq!(c.dom & STAR, 0);
        // Sunday is 0
        let Schedule::Cron(c) = parse("TZ=UTC 0 0 * * 0,SAT").unwrap() else {
            panic!()
        };
        assert_eq!(c.dow, 1 | 1 << 6);
    }

    #[test]
    fn next_fire_times() {
        assert_eq!(
            fires("TZ=UTC */15 * * * *", "2024-01-01T10:07:30Z", 3),
            [
                "2024-01-01T10:15:00+00:00",
                "2024-01-01T10:30:00+00:00",
                "2024-01-01T10:45:00+00:00"
            ]
        );
        // exactly on a match: the next one, never the same second
        assert_eq!(
            fires("TZ=UTC 0 * * * *", "2024-01-01T10:00:00Z", 1),
            ["2024-01-01T11:00:00+00:00"]
        );
        // day-of-month OR day-of-week when both are restricted: the 13th or any Friday
        assert_eq!(
            fires("TZ=UTC 0 0 13 * FRI", "2024-09-01T00:00:00Z", 4),
            [
                "2024-09-06T00:00:00+00:00",
                "2024-09-13T00:00:00+00:00",
                "2024-09-20T00:00:00+00:00",
                "2024-09-27T00:00:00+00:00"
            ]
        );
        // `*/2` counts as restricted: odd days or Mondays
        assert_eq!(
            fires("TZ=UTC 0 0 */2 * MON", "2024-09-01T12:00:00Z", 3),
            [
                "2024-09-02T00:00:00+00:00",
                "2024-09-03T00:00:00+00:00",
                "2024-09-05T00:00:00+00:00"
            ]
        );
        // `?` is unrestricted: both must match → Mondays only
        assert_eq!(
            fires("TZ=UTC 0 0 ? * MON", "2024-09-01T12:00:00Z", 2),
            ["2024-09-02T00:00:00+00:00", "2024-09-09T00:00:00+00:00"]
        );
        // Feb 29 only in leap years
        assert_eq!(
            fires("TZ=UTC 0 0 29 2 *", "2024-03-01T00:00:00Z", 1),
            ["2028-02-29T00:00:00+00:00"]
        );
        // nothing within five years
        assert_eq!(
            parse("TZ=UTC 0 0 31 2 *")
                .unwrap()
                .next(utc("2024-01-01T00:00:00Z")),
            None
        );
    }

    #[test]
    fn descriptors() {
        let at = "2024-05-15T10:20:30Z";
        assert_eq!(
            fires("TZ=UTC @yearly", at, 1),
            ["2025-01-01T00:00:00+00:00"]
        );
        assert_eq!(
            fires("TZ=UTC @annually", at, 1),
            ["2025-01-01T00:00:00+00:00"]
        );
        assert_eq!(
            fires("TZ=UTC @monthly", at, 1),
            ["2024-06-01T00:00:00+00:00"]
        );
        // 2024-05-15 is a Wednesday
        assert_eq!(
            fires("TZ=UTC @weekly", at, 1),
            ["2024-05-19T00:00:00+00:00"]
        );
        assert_eq!(fires("TZ=UTC @daily", at, 1), ["2024-05-16T00:00:00+00:00"]);
        assert_eq!(
            fires("TZ=UTC @midnight", at, 1),
            ["2024-05-16T00:00:00+00:00"]
        );
        assert_eq!(
            fires("TZ=UTC @hourly", at, 1),
            ["2024-05-15T11:00:00+00:00"]
        );
        // descriptors are case-sensitive
        assert!(parse("@Daily").is_err());
    }

    #[test]
    fn time_zone_prefixes() {
        // 09:00 in New York (EDT, UTC-4) in summer and (EST, UTC-5) in winter
        assert_eq!(
            fires("TZ=America/New_York 0 9 * * *", "2024-07-01T00:00:00Z", 1),
            ["2024-07-01T13:00:00+00:00"]
        );
        assert_eq!(
            fires(
                "CRON_TZ=America/New_York 0 9 * * *",
                "2024-12-01T00:00:00Z",
                1
            ),
            ["2024-12-01T14:00:00+00:00"]
        );
        // 02:30 does not exist on the spring-forward day in Berlin: that day is skipped
        assert_eq!(
            fires("TZ=Europe/Berlin 30 2 * * *", "2024-03-30T12:00:00Z", 2),
            ["2024-04-01T00:30:00+00:00", "2024-04-02T00:30:00+00:00"]
        );
        // hourly across the fall-back change: every real hour fires
        assert_eq!(
            fires("TZ=Europe/Berlin 0 * * * *", "2024-10-26T23:30:00Z", 3),
            [
                "2024-10-27T00:00:00+00:00",
                "2024-10-27T01:00:00+00:00",
                "2024-10-27T02:00:00+00:00"
            ]
        );
        // the schedule after the zone may be spaced freely; a zone without one has no fields
        assert!(parse("TZ=UTC   @hourly").is_ok());
        assert_eq!(err("TZ=UTC"), "expected exactly 5 fields, found 0: []");
    }

    #[test]
    fn every_rounding() {
        let every = |s: &str| match parse(s).unwrap() {
            Schedule::Every(d) => d,
            other => panic!("{other:?}"),
        };
        assert_eq!(every("@every 1h0m0s"), Duration::from_secs(3600));
        assert_eq!(every("@every 1500ms"), Duration::from_secs(1));
        assert_eq!(every("@every 2.999s"), Duration::from_secs(2));
        assert_eq!(every("@every 999ms"), Duration::from_secs(1));
        assert_eq!(every("@every 0s"), Duration::from_secs(1));
        assert_eq!(every("@every -5m0s"), Duration::from_secs(1));
        // first firing: delay after the start truncated to the second (.870 → next second)
        let s = parse("@every 1s").unwrap();
        let first = s.next(utc("2024-01-01T00:00:10.870Z")).unwrap();
        assert_eq!(first, utc("2024-01-01T00:00:11Z"));
        let s = parse("@every 1m30s").unwrap();
        let first = s.next(utc("2024-01-01T00:00:10.5Z")).unwrap();
        assert_eq!(first, utc("2024-01-01T00:01:40Z"));
    }

    #[test]
    fn step_schedule_text() {
        assert_eq!(step_schedule("5 * * * *", "1h"), Some("5 * * * *".into()));
        assert_eq!(step_schedule("", "1h"), Some("@every 1h0m0s".into()));
        assert_eq!(step_schedule("", "-5m"), Some("@every -5m0s".into()));
        assert_eq!(step_schedule("", ""), None);
        assert_eq!(step_schedule("", "0s"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn anchored_clock_follows_paused_time() {
        let clock = Clock::anchored(utc("2024-01-01T00:00:10.870Z"));
        let s = parse("@every 1s").unwrap();
        let next = s.next(clock.now()).unwrap();
        let wait = (next - clock.now()).to_std().unwrap();
        assert_eq!(wait, Duration::from_millis(130));
        tokio::time::sleep(wait).await;
        assert_eq!(clock.now(), utc("2024-01-01T00:00:11Z"));
        // Every later firing is one second after the previous dispatch, on the second.
        assert_eq!(s.next(clock.now()).unwrap(), utc("2024-01-01T00:00:12Z"));
    }
}
