//! Go `time.Duration` parsing and formatting (spec §3.1): `90s`, `1h30m`, `1.5h`, `500ms`,
//! `1us`/`µs`, `ns`, `-5m`, `"0"`; printed the Go way (`5m0s`, `1h0m0s`, `1.5s`, `0s`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A signed duration in nanoseconds, with Go's range (±~292 years).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GoDuration(pub i64);

/// A parse failure; the text is Go's (`time: unknown unit "d" in duration "1d"`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DurationError(pub String);

const NANOSECOND: u64 = 1;
const MICROSECOND: u64 = 1_000 * NANOSECOND;
const MILLISECOND: u64 = 1_000 * MICROSECOND;
const SECOND: u64 = 1_000 * MILLISECOND;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;
const LIMIT: u64 = 1 << 63;

impl GoDuration {
    pub const ZERO: GoDuration = GoDuration(0);

    pub const fn from_nanos(n: i64) -> Self {
        GoDuration(n)
    }
    pub const fn from_secs(s: i64) -> Self {
        GoDuration(s.saturating_mul(SECOND as i64))
    }
    pub const fn from_mins(m: i64) -> Self {
        GoDuration(m.saturating_mul(MINUTE as i64))
    }
    pub const fn nanos(self) -> i64 {
        self.0
    }
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }
    pub const fn is_negative(self) -> bool {
        self.0 < 0
    }

    /// Parses Go duration syntax (`time.ParseDuration`).
    pub fn parse(s: &str) -> Result<Self, DurationError> {
        parse_duration(s)
    }

    /// The std equivalent; `None` when negative.
    pub fn to_std(self) -> Option<Duration> {
        u64::try_from(self.0).ok().map(Duration::from_nanos)
    }

    /// The std equivalent with negative durations clamped to zero.
    pub fn to_std_saturating(self) -> Duration {
        self.to_std().unwrap_or(Duration::ZERO)
    }

    /// From a std duration (saturating at Go's maximum).
    pub fn from_std(d: Duration) -> Self {
        GoDuration(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    }
}

impl From<Duration> for GoDuration {
    fn from(d: Duration) -> Self {
        GoDuration::from_std(d)
    }
}

impl FromStr for GoDuration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_duration(s)
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(*self))
    }
}

/// The value of a duration field as stored in the config: `""` or unparsable text is zero.
pub fn duration_of(s: &str) -> GoDuration {
    if s.is_empty() {
        GoDuration::ZERO
    } else {
        parse_duration(s).unwrap_or(GoDuration::ZERO)
    }
}

/// Go's `quote` from package time: `"` + s + `"`, escaping `"`/`\` and bytes of non-ASCII or
/// control characters as `\xNN`.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if (c as u32) >= 0x80 || c < ' ' {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\x{b:02x}"));
            }
        } else {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
    }
    out.push('"');
    out
}

fn invalid(orig: &str) -> DurationError {
    DurationError(format!("time: invalid duration {}", quote(orig)))
}

/// Go's `leadingInt`: consumes `[0-9]*`; errors on overflow.
fn leading_int(s: &[u8]) -> Result<(u64, usize), ()> {
    let mut x: u64 = 0;
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if !c.is_ascii_digit() {
            break;
        }
        if x > LIMIT / 10 {
            return Err(());
        }
        x = x * 10 + (c - b'0') as u64;
        if x > LIMIT {
            return Err(());
        }
        i += 1;
    }
    Ok((x, i))
}

/// Go's `leadingFraction`: consumes `[0-9]*`, silently dropping precision on overflow.
fn leading_fraction(s: &[u8]) -> (u64, f64, usize) {
    let mut x: u64 = 0;
    let mut scale = 1.0f64;
    let mut overflow = false;
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if !c.is_ascii_digit() {
            break;
        }
        i += 1;
        if overflow {
            continue;
        }
        if x > (LIMIT - 1) / 10 {
            overflow = true;
            continue;
        }
        let y = x * 10 + (c - b'0') as u64;
        if y > LIMIT {
            overflow = true;
            continue;
        }
        x = y;
        scale *= 10.0;
    }
    (x, scale, i)
}

fn unit_value(u: &str) -> Option<u64> {
    Some(match u {
        "ns" => NANOSECOND,
        "us" | "\u{b5}s" | "\u{3bc}s" => MICROSECOND,
        "ms" => MILLISECOND,
        "s" => SECOND,
        "m" => MINUTE,
        "h" => HOUR,
        _ => return None,
    })
}

/// Port of Go's `time.ParseDuration`, with Go's error texts.
pub fn parse_duration(orig: &str) -> Result<GoDuration, DurationError> {
    let mut s = orig.as_bytes();
    let mut d: u64 = 0;
    let mut neg = false;
    if let Some(&c) = s.first() {
        if c == b'-' || c == b'+' {
            neg = c == b'-';
            s = &s[1..];
        }
    }
    if s == b"0" {
        return Ok(GoDuration(0));
    }
    if s.is_empty() {
        return Err(invalid(orig));
    }
    while !s.is_empty() {
        let mut f: u64 = 0;
        let mut scale = 1.0f64;
        if !(s[0] == b'.' || s[0].is_ascii_digit()) {
            return Err(invalid(orig));
        }
        let (mut v, used) = leading_int(s).map_err(|_| invalid(orig))?;
        let pre = used != 0;
        s = &s[used..];
        let mut post = false;
        if s.first() == Some(&b'.') {
            s = &s[1..];
            let (fx, fs, fused) = leading_fraction(s);
            f = fx;
            scale = fs;
            post = fused != 0;
            s = &s[fused..];
        }
        if !pre && !post {
            return Err(invalid(orig));
        }
        let mut i = 0;
        while i < s.len() {
            let c = s[i];
            if c == b'.' || c.is_ascii_digit() {
                break;
            }
            i += 1;
        }
        if i == 0 {
            return Err(DurationError(format!(
                "time: missing unit in duration {}",
                quote(orig)
            )));
        }
        // The unit ends before an ASCII byte (or at the end), so this is a char boundary.
        let u = std::str::from_utf8(&s[..i]).unwrap_or("");
        s = &s[i..];
        let unit = match unit_value(u) {
            Some(unit) => unit,
            None => {
                return Err(DurationError(format!(
                    "time: unknown unit {} in duration {}",
                    quote(u),
                    quote(orig)
                )))
            }
        };
        if v > LIMIT / unit {
            return Err(invalid(orig));
        }
        v *= unit;
        if f > 0 {
            v += (f as f64 * (unit as f64 / scale)) as u64;
            if v > LIMIT {
                return Err(invalid(orig));
            }
        }
        d += v;
        if d > LIMIT {
            return Err(invalid(orig));
        }
    }
    if neg {
        return Ok(GoDuration((d as i64).wrapping_neg()));
    }
    if d > LIMIT - 1 {
        return Err(invalid(orig));
    }
    Ok(GoDuration(d as i64))
}

/// Go's `fmtFrac`: writes the fraction of `v / 10^prec` (trailing zeros and, when the fraction
/// is zero, the dot omitted) in front of `buf`, returns `v / 10^prec`.
fn fmt_frac(buf: &mut Vec<u8>, mut v: u64, prec: usize) -> u64 {
    let mut print = false;
    for _ in 0..prec {
        let digit = v % 10;
        print = print || digit != 0;
        if print {
            buf.push(b'0' + digit as u8);
        }
        v /= 10;
    }
    if print {
        buf.push(b'.');
    }
    v
}

fn fmt_int(buf: &mut Vec<u8>, mut v: u64) {
    if v == 0 {
        buf.push(b'0');
    } else {
        while v > 0 {
            buf.push(b'0' + (v % 10) as u8);
            v /= 10;
        }
    }
}

/// Port of Go's `Duration.String` (`1h2m3.5s`, `1.5ms`, `0s`, `-5m0s`).
pub fn format_duration(d: GoDuration) -> String {
    // Built back to front, then reversed.
    let mut buf: Vec<u8> = Vec::with_capacity(32);
    let neg = d.0 < 0;
    let mut u = d.0.unsigned_abs();
    if u < SECOND {
        let prec;
        buf.push(b's');
        if u == 0 {
            return "0s".to_string();
        } else if u < MICROSECOND {
            prec = 0;
            buf.push(b'n');
        } else if u < MILLISECOND {
            prec = 3;
            // "µ" is 0xC2 0xB5, pushed reversed.
            buf.push(0xB5);
            buf.push(0xC2);
        } else {
            prec = 6;
            buf.push(b'm');
        }
        u = fmt_frac(&mut buf, u, prec);
        fmt_int(&mut buf, u);
    } else {
        buf.push(b's');
        u = fmt_frac(&mut buf, u, 9);
        fmt_int(&mut buf, u % 60);
        u /= 60;
        if u > 0 {
            buf.push(b'm');
            fmt_int(&mut buf, u % 60);
            u /= 60;
            if u > 0 {
                buf.push(b'h');
                fmt_int(&mut buf, u);
            }
        }
    }
    if neg {
        buf.push(b'-');
    }
    buf.reverse();
    String::from_utf8(buf).expect("duration text is UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> i64 {
        parse_duration(s).unwrap_or_else(|e| panic!("{s}: {e}")).0
    }

    fn err(s: &str) -> String {
        parse_duration(s).unwrap_err().0
    }

    #[test]
    fn parse_valid() {
        let s = SECOND as i64;
        assert_eq!(p("90s"), 90 * s);
        assert_eq!(p("1h30m"), 90 * 60 * s);
        assert_eq!(p("1.5h"), 90 * 60 * s);
        assert_eq!(p("500ms"), s / 2);
        assert_eq!(p("1us"), 1_000);
        assert_eq!(p("1µs"), 1_000);
        assert_eq!(p("1μs"), 1_000);
        assert_eq!(p("7ns"), 7);
        assert_eq!(p("-5m"), -300 * s);
        assert_eq!(p("+5m"), 300 * s);
        assert_eq!(p("0"), 0);
        assert_eq!(p("-0"), 0);
        assert_eq!(p("0s"), 0);
        assert_eq!(p(".5s"), s / 2);
        assert_eq!(p("1.s"), s);
        assert_eq!(p("1h0m0s"), 3600 * s);
        assert_eq!(p("2h45m30.5s"), (2 * 3600 + 45 * 60 + 30) * s + s / 2);
        assert_eq!(p("9223372036854775807ns"), i64::MAX);
        assert_eq!(p("-9223372036854775808ns"), i64::MIN);
    }

    #[test]
    fn parse_errors() {
        assert_eq!(err("1d"), r#"time: unknown unit "d" in duration "1d""#);
        assert_eq!(err("90"), r#"time: missing unit in duration "90""#);
        assert_eq!(err(""), r#"time: invalid duration """#);
        assert_eq!(err("-"), r#"time: invalid duration "-""#);
        assert_eq!(err("abc"), r#"time: invalid duration "abc""#);
        assert_eq!(err(".s"), r#"time: invalid duration ".s""#);
        assert_eq!(
            err("1h 30m"),
            r#"time: unknown unit "h " in duration "1h 30m""#
        );
        assert_eq!(err(" 1h"), r#"time: invalid duration " 1h""#);
        assert_eq!(err("5 m"), r#"time: unknown unit " m" in duration "5 m""#);
        assert_eq!(
            err("9223372036854775808ns"),
            r#"time: invalid duration "9223372036854775808ns""#
        );
        assert_eq!(err("3000000h"), r#"time: invalid duration "3000000h""#);
        assert_eq!(
            err("1é"),
            r#"time: unknown unit "\xc3\xa9" in duration "1\xc3\xa9""#
        );
    }

    #[test]
    fn format() {
        let f = |n: i64| format_duration(GoDuration(n));
        let s = SECOND as i64;
        assert_eq!(f(0), "0s");
        assert_eq!(f(5 * 60 * s), "5m0s");
        assert_eq!(f(3600 * s), "1h0m0s");
        assert_eq!(f(3 * s / 2), "1.5s");
        assert_eq!(f(90 * 60 * s), "1h30m0s");
        assert_eq!(f(-5 * 60 * s), "-5m0s");
        assert_eq!(f(1), "1ns");
        assert_eq!(f(1_500), "1.5µs");
        assert_eq!(f(1_500_000), "1.5ms");
        assert_eq!(f(500_000_000), "500ms");
        assert_eq!(f(12 * 3600 * s), "12h0m0s");
        assert_eq!(f(i64::MAX), "2562047h47m16.854775807s");
        assert_eq!(f(i64::MIN), "-2562047h47m16.854775808s");
        assert_eq!(GoDuration::parse("60m").unwrap().to_string(), "1h0m0s");
    }

    #[test]
    fn conversions() {
        assert_eq!(
            GoDuration::from_mins(5).to_std(),
            Some(Duration::from_secs(300))
        );
        assert_eq!(GoDuration(-1).to_std(), None);
        assert_eq!(GoDuration(-1).to_std_saturating(), Duration::ZERO);
        assert_eq!(duration_of(""), GoDuration::ZERO);
        assert_eq!(duration_of("bogus"), GoDuration::ZERO);
        assert_eq!(duration_of("1m"), GoDuration::from_secs(60));
    }
}
