//! regsync's version grammar and constraints for `semverRange` (spec §5.4), including its
//! prerelease-comparison quirk (spec §16.25).

use std::cmp::Ordering;

/// A parsed version: 1..n numeric parts, optional prerelease; `+build` metadata is discarded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    parts: Vec<i64>,
    prerelease: String,
}

/// Go's `strconv.Atoi`: optional sign, then ASCII digits, within i64.
fn atoi(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<i64>().ok()
}

impl Version {
    /// Parses `[v]N(.N)*[-prerelease][+metadata]` (one lowercase `v` only).
    pub fn parse(original: &str) -> Result<Version, String> {
        let v = original.strip_prefix('v').unwrap_or(original);
        let v = v.split_once('+').map_or(v, |(a, _)| a);
        let (v, prerelease) = match v.split_once('-') {
            Some((a, b)) => (a, b),
            None => (v, ""),
        };
        let mut parts = Vec::new();
        for (i, part) in v.split('.').enumerate() {
            match atoi(part) {
                Some(n) => parts.push(n),
                None => return Err(format!("invalid version part {i}: {original}")),
            }
        }
        Ok(Version {
            parts,
            prerelease: prerelease.to_string(),
        })
    }

    fn part(&self, i: usize) -> i64 {
        self.parts.get(i).copied().unwrap_or(0)
    }

    fn bound(parts: [i64; 3]) -> Version {
        Version {
            parts: parts.to_vec(),
            prerelease: String::new(),
        }
    }

    /// regsync's ordering (not strictly semver: see [`compare_prereleases`]).
    pub fn compare(&self, other: &Version) -> Ordering {
        let n = self.parts.len().max(other.parts.len());
        for i in 0..n {
            match self.part(i).cmp(&other.part(i)) {
                Ordering::Equal => {}
                o => return o,
            }
        }
        match (self.prerelease.is_empty(), other.prerelease.is_empty()) {
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            _ if self.prerelease != other.prerelease => {
                compare_prereleases(&self.prerelease, &other.prerelease)
            }
            _ => Ordering::Equal,
        }
    }
}

/// Splits `v` into (non-numeric head, numeric run, tail).
fn split_numeric(v: &str) -> (&str, &str, &str) {
    let start = v.find(|c: char| c.is_ascii_digit()).unwrap_or(v.len());
    let (head, rest) = v.split_at(start);
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let (num, tail) = rest.split_at(end);
    (head, num, tail)
}

/// Dot-separated identifiers compared as alternating text/number runs; fewer identifiers sort
/// first. Quirk kept from regsync: two equal identifiers with no digits make the whole
/// comparison stop at "equal" (`alpha.1` == `alpha.2`, `rc` == `rc.1`).
fn compare_prereleases(a: &str, b: &str) -> Ordering {
    let a_parts: Vec<&str> = a.split('.').collect();
    let b_parts: Vec<&str> = b.split('.').collect();
    for (mut a_cur, mut b_cur) in a_parts.iter().copied().zip(b_parts.iter().copied()) {
        while !a_cur.is_empty() && !b_cur.is_empty() {
            let (a_head, a_num, a_tail) = split_numeric(a_cur);
            let (b_head, b_num, b_tail) = split_numeric(b_cur);
            if a_head != b_head {
                return a_head.cmp(b_head);
            }
            match (atoi(a_num), atoi(b_num)) {
                (Some(an), Some(bn)) => {
                    if an != bn {
                        return an.cmp(&bn);
                    }
                }
                (None, Some(_)) => return Ordering::Less,
                (Some(_), None) => return Ordering::Greater,
                (None, None) => return Ordering::Equal,
            }
            a_cur = a_tail;
            b_cur = b_tail;
        }
        if !a_cur.is_empty() {
            return Ordering::Greater;
        }
        if !b_cur.is_empty() {
            return Ordering::Less;
        }
    }
    a_parts.len().cmp(&b_parts.len())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Eq,
    Gt,
    Ge,
    Lt,
    Le,
}

/// One `semverRange` entry: whitespace-separated tokens, all of which must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Constraint {
    terms: Vec<(Op, Version)>,
}

impl Constraint {
    /// Parses `>=V <=V >V <V =V V ^V ~V` tokens (operator attached to the version).
    pub fn parse(c: &str) -> Result<Constraint, String> {
        let c = c.trim();
        if c.is_empty() {
            return Err("empty constraint".to_string());
        }
        let mut terms = Vec::new();
        for part in c.split_whitespace() {
            if let Some(rest) = part.strip_prefix('^') {
                let v = Version::parse(rest)
                    .map_err(|e| format!("invalid caret constraint version: {e}"))?;
                let upper = if v.part(0) > 0 {
                    Version::bound([v.part(0) + 1, 0, 0])
                } else if v.part(1) > 0 {
                    Version::bound([0, v.part(1) + 1, 0])
                } else {
                    Version::bound([0, 0, v.part(2) + 1])
                };
                terms.push((Op::Ge, v));
                terms.push((Op::Lt, upper));
                continue;
            }
            if let Some(rest) = part.strip_prefix('~') {
                let v = Version::parse(rest)
                    .map_err(|e| format!("invalid tilde constraint version: {e}"))?;
                let upper = Version::bound([v.part(0), v.part(1) + 1, 0]);
                terms.push((Op::Ge, v));
                terms.push((Op::Lt, upper));
                continue;
            }
            let (op, vs) = if let Some(r) = part.strip_prefix(">=") {
                (Op::Ge, r)
            } else if let Some(r) = part.strip_prefix("<=") {
                (Op::Le, r)
            } else if let Some(r) = part.strip_prefix('>') {
                (Op::Gt, r)
            } else if let Some(r) = part.strip_prefix('<') {
                (Op::Lt, r)
            } else if let Some(r) = part.strip_prefix('=') {
                (Op::Eq, r)
            } else {
                (Op::Eq, part)
            };
            let v = Version::parse(vs).map_err(|e| format!("invalid constraint version: {e}"))?;
            terms.push((op, v));
        }
        if terms.is_empty() {
            return Err("no valid constraints found".to_string());
        }
        Ok(Constraint { terms })
    }

    /// True when `v` satisfies every token.
    pub fn check(&self, v: &Version) -> bool {
        self.terms.iter().all(|(op, cv)| {
            let cmp = v.compare(cv);
            match op {
                Op::Eq => cmp == Ordering::Equal,
                Op::Gt => cmp == Ordering::Greater,
                Op::Ge => cmp != Ordering::Less,
                Op::Lt => cmp == Ordering::Less,
                Op::Le => cmp != Ordering::Greater,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    fn cmp(a: &str, b: &str) -> Ordering {
        v(a).compare(&v(b))
    }

    fn sat(c: &str, ver: &str) -> bool {
        Constraint::parse(c).unwrap().check(&v(ver))
    }

    #[test]
    fn versions() {
        for ok in [
            "1",
            "1.2",
            "1.2.3",
            "10.0.17763.2114",
            "v1.0",
            "1.0.0-rc1+build",
            "01.2",
        ] {
            assert!(Version::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["abc", "", "1.x", "V1.0", "vv1", "1..2", "latest", "1.0 "] {
            assert!(Version::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Version::parse("1.x").unwrap_err(),
            "invalid version part 1: 1.x"
        );
        assert_eq!(Version::parse("").unwrap_err(), "invalid version part 0: ");
    }

    #[test]
    fn ordering() {
        assert_eq!(cmp("1.2", "1.2.0"), Ordering::Equal);
        assert_eq!(cmp("1.2.0+abc", "1.2.0"), Ordering::Equal);
        assert_eq!(cmp("1.10", "1.9"), Ordering::Greater);
        assert_eq!(cmp("2.0.0-rc1", "2.0.0"), Ordering::Less);
        assert_eq!(cmp("1.0.0-rc2", "1.0.0-rc11"), Ordering::Less);
        assert_eq!(cmp("1.0.0-alpha", "1.0.0-beta"), Ordering::Less);
        assert_eq!(cmp("1.0.0-alpha", "1.0.0-alpha1"), Ordering::Less);
        assert_eq!(cmp("1.0.0-alpha1", "1.0.0-alpha"), Ordering::Greater);
        assert_eq!(cmp("1.0.0-1", "1.0.0-1.1"), Ordering::Less);
        assert_eq!(cmp("v2.0.0-alpine3.21", "2.0.0"), Ordering::Less);
        assert_eq!(cmp("v5-scratch", "5.0.0"), Ordering::Less);
        // quirk: equal digit-free identifiers end the comparison
        assert_eq!(cmp("1.0.0-alpha.1", "1.0.0-alpha.2"), Ordering::Equal);
        assert_eq!(cmp("1.0.0-rc", "1.0.0-rc.1"), Ordering::Equal);
    }

    #[test]
    fn constraints() {
        assert!(sat(">=1.0.0 <2.0.0", "1.5.0"));
        assert!(!sat(">=1.0.0 <2.0.0", "2.0.0"));
        assert!(sat("1.2", "1.2.0"));
        assert!(sat("=1.0.0-rc", "1.0.0-rc.1"));
        assert!(!sat(">1.0.0-alpha.1", "1.0.0-alpha.2"));
        assert!(sat("<=1.2.3", "1.2.3"));
        assert!(sat("^1.2.3", "1.9.9") && !sat("^1.2.3", "2.0.0") && !sat("^1.2.3", "1.2.2"));
        assert!(sat("^1.2.3", "2.0.0-rc1"), "upper bound has no prerelease");
        assert!(sat("^0.2.3", "0.2.9") && !sat("^0.2.3", "0.3.0"));
        assert!(sat("^0.0.3", "0.0.3") && !sat("^0.0.3", "0.0.4"));
        assert!(sat("~1.2.3", "1.2.9") && !sat("~1.2.3", "1.3.0"));
        assert!(sat("  >=1   <2 ", "1.1"));
    }

    #[test]
    fn constraint_errors() {
        let e = |c: &str| Constraint::parse(c).unwrap_err();
        assert_eq!(e(" \t"), "empty constraint");
        assert_eq!(e(""), "empty constraint");
        assert_eq!(
            e(">= 1.0"),
            "invalid constraint version: invalid version part 0: "
        );
        assert!(e(">=1.0, <2.0").starts_with("invalid constraint version"));
        assert!(e("1.x").starts_with("invalid constraint version"));
        assert!(e("*").starts_with("invalid constraint version"));
        assert!(e("!=1.0").starts_with("invalid constraint version"));
        assert!(e(">=1 || >=2").starts_with("invalid constraint version"));
        assert_eq!(
            e("^x"),
            "invalid caret constraint version: invalid version part 0: x"
        );
        assert_eq!(
            e("~"),
            "invalid tilde constraint version: invalid version part 0: "
        );
    }
}
