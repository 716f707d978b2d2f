//! Repository and tag filters (spec §5.4): anchored regex allow/deny lists, `semverRange`, and
//! the union of `tagSets`. Output order is always input order.

pub mod semver;

use crate::config::{RepoFilter, TagFilter};
use fancy_regex::Regex;
use semver::{Constraint, Version};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("invalid allow pattern {pattern:?}: {message}")]
    InvalidAllow { pattern: String, message: String },
    #[error("invalid deny pattern {pattern:?}: {message}")]
    InvalidDeny { pattern: String, message: String },
    #[error("invalid semver range {range:?}: {message}")]
    InvalidSemver { range: String, message: String },
    /// The regex engine gave up (e.g. backtrack limit) while matching.
    #[error("pattern {pattern:?} failed on {input:?}: {message}")]
    Match {
        pattern: String,
        input: String,
        message: String,
    },
}

/// A compiled pattern, kept with its source text for error messages.
struct Pattern {
    source: String,
    re: Regex,
}

impl Pattern {
    fn is_match(&self, s: &str) -> Result<bool, FilterError> {
        self.re.is_match(s).map_err(|e| FilterError::Match {
            pattern: self.source.clone(),
            input: s.to_string(),
            message: e.to_string(),
        })
    }
}

/// Compiles each pattern as `^` + p + `$` — no grouping, so `a|b` means "starts with a or ends
/// with b" (regsync quirk, spec §16.1, kept for compatibility).
fn compile(patterns: &[String], deny: bool) -> Result<Vec<Pattern>, FilterError> {
    patterns
        .iter()
        .map(|p| {
            Regex::new(&format!("^{p}$"))
                .map(|re| Pattern {
                    source: p.clone(),
                    re,
                })
                .map_err(|e| {
                    let (pattern, message) = (p.clone(), e.to_string());
                    if deny {
                        FilterError::InvalidDeny { pattern, message }
                    } else {
                        FilterError::InvalidAllow { pattern, message }
                    }
                })
        })
        .collect()
}

fn any_match(patterns: &[Pattern], s: &str) -> Result<bool, FilterError> {
    for p in patterns {
        if p.is_match(s)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Allow (an empty list allows everything) then deny.
fn allow_deny(
    allow: &[Pattern],
    deny: &[Pattern],
    items: Vec<String>,
) -> Result<Vec<String>, FilterError> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        if !allow.is_empty() && !any_match(allow, &item)? {
            continue;
        }
        if any_match(deny, &item)? {
            continue;
        }
        out.push(item);
    }
    Ok(out)
}

/// Filters repository names: `allow` (empty = all) then `deny`.
pub fn filter_repos(f: &RepoFilter, repos: &[String]) -> Result<Vec<String>, FilterError> {
    let allow = compile(&f.allow, false)?;
    let deny = compile(&f.deny, true)?;
    allow_deny(&allow, &deny, repos.to_vec())
}

/// Parses the non-`""` entries of a `semverRange` list.
fn compile_semver(ranges: &[String]) -> Result<Vec<Constraint>, FilterError> {
    ranges
        .iter()
        .filter(|r| !r.is_empty())
        .map(|r| {
            Constraint::parse(r).map_err(|message| FilterError::InvalidSemver {
                range: r.clone(),
                message,
            })
        })
        .collect()
}

/// Applies one filter set to `tags`: semverRange (when it has a non-empty entry: keep tags that
/// parse as versions and satisfy at least one entry) → allow → deny.
pub fn filter_tag_set(set: &TagFilter, tags: &[String]) -> Result<Vec<String>, FilterError> {
    let constraints = compile_semver(&set.semver_range)?;
    let allow = compile(&set.allow, false)?;
    let deny = compile(&set.deny, true)?;
    let selected: Vec<String> = if constraints.is_empty() {
        tags.to_vec()
    } else {
        tags.iter()
            .filter(|t| match Version::parse(t) {
                Ok(v) => constraints.iter().any(|c| c.check(&v)),
                Err(_) => false,
            })
            .cloned()
            .collect()
    };
    allow_deny(&allow, &deny, selected)
}

/// Selects tags for a `repository` step (spec §5.3 step 2): the sets are every `tag_sets`
/// entry in order, then `tags_filter` if it has any allow/deny/semverRange entry. No sets →
/// all tags. Otherwise each set filters the full list and the results are unioned: the first
/// set's order, then new tags of later sets in their order, no duplicates.
pub fn filter_tags(
    tags_filter: &TagFilter,
    tag_sets: &[TagFilter],
    tags: &[String],
) -> Result<Vec<String>, FilterError> {
    let mut sets: Vec<&TagFilter> = tag_sets.iter().collect();
    if !tags_filter.is_empty() {
        sets.push(tags_filter);
    }
    if sets.is_empty() {
        return Ok(tags.to_vec());
    }
    let mut out: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for set in sets {
        for t in filter_tag_set(set, tags)? {
            if seen.insert(t.clone()) {
                out.push(t);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn tf(semver: &[&str], allow: &[&str], deny: &[&str]) -> TagFilter {
        TagFilter {
            allow: s(allow),
            deny: s(deny),
            semver_range: s(semver),
        }
    }

    /// Spec §15.4 `TestFilterListVersionScheme`.
    #[test]
    fn filter_list_version_scheme() {
        #[allow(clippy::type_complexity)]
        let cases: Vec<(&str, TagFilter, Vec<&str>, Vec<&str>)> = vec![
            (
                "semver with multiple ranges and deny",
                tf(&[">=1.0.0 <2.0.0", ">=4.0.0"], &[], &[".*-rc.*"]),
                vec!["1.0.0", "1.5.0-rc1", "2.0.0", "4.0.0", "4.1.0-rc2", "5.0.0"],
                vec!["1.0.0", "4.0.0", "5.0.0"],
            ),
            (
                "semver filters non-semver tags",
                tf(&[">=1.0.0"], &[], &[]),
                vec!["latest", "dev", "1.0.0", "1.5.0", "main"],
                vec!["1.0.0", "1.5.0"],
            ),
            (
                "semver with allow/deny combination",
                tf(&[">=1.0.0 <3.0.0"], &[], &[".*-rc.*"]),
                vec!["1.0.0", "1.5.0-rc1", "2.0.0", "2.1.0-rc2", "3.0.0"],
                vec!["1.0.0", "2.0.0"],
            ),
            (
                "no version range",
                tf(&[], &[r"v[0-9]+\.[0-9]+\.[0-9]+"], &[]),
                vec!["v1.0.0", "v1.5.0", "latest", "dev"],
                vec!["v1.0.0", "v1.5.0"],
            ),
            (
                "empty result when no matches",
                tf(&[">=5.0.0"], &[], &[]),
                vec!["1.0.0", "2.0.0", "3.0.0"],
                vec![],
            ),
            (
                "multiple ranges skip middle versions",
                tf(&[">=1.0.0 <1.20.0", ">=1.22.0"], &[], &[]),
                vec!["1.0.0", "1.19.0", "1.20.0", "1.21.0", "1.22.0", "1.23.0"],
                vec!["1.0.0", "1.19.0", "1.22.0", "1.23.0"],
            ),
            (
                "version range with allow filter",
                tf(&[">=1.0.0"], &["v.*"], &[]),
                vec!["1.0.0", "v1.5.0", "v2.0.0", "3.0.0"],
                vec!["v1.5.0", "v2.0.0"],
            ),
            (
                "empty version range array",
                tf(&[], &[], &[]),
                vec!["1.0.0", "2.0.0"],
                vec!["1.0.0", "2.0.0"],
            ),
            (
                "semver with suffix alpine",
                tf(&[">=1.0.0 <2.0.0"], &[], &[]),
                vec![
                    "v1.2.3-alpine3.21",
                    "v1.5.0-alpine3.20",
                    "v2.0.0-alpine3.21",
                    "v0.9.0-alpine3.19",
                ],
                vec![
                    "v1.2.3-alpine3.21",
                    "v1.5.0-alpine3.20",
                    "v2.0.0-alpine3.21",
                ],
            ),
            (
                "semver with suffix scratch",
                tf(&[">=5.0.0"], &[], &[]),
                vec!["v5-scratch", "v4-scratch", "v6-scratch", "v5.1-scratch"],
                vec!["v6-scratch", "v5.1-scratch"],
            ),
            (
                "semver with suffix mixed",
                tf(&[">=1.0.0 <3.0.0"], &[], &[]),
                vec![
                    "v1.0.0",
                    "v1.5.0-alpine",
                    "v2.0.0-scratch",
                    "v2.5.1-debian",
                    "v3.0.0-alpine",
                ],
                vec![
                    "v1.0.0",
                    "v1.5.0-alpine",
                    "v2.0.0-scratch",
                    "v2.5.1-debian",
                    "v3.0.0-alpine",
                ],
            ),
            (
                "semver major version only",
                tf(&[">=2 <5"], &[], &[]),
                vec!["v1", "v2", "v3", "v4", "v5", "v6"],
                vec!["v2", "v3", "v4"],
            ),
            (
                "semver major.minor only",
                tf(&[">=1.5 <2.0"], &[], &[]),
                vec!["v1.4", "v1.5", "v1.6", "v1.9", "v2.0", "v2.1"],
                vec!["v1.5", "v1.6", "v1.9"],
            ),
            (
                "semver mixed version formats",
                tf(&[">=1.0.0 <3.0.0"], &[], &[]),
                vec![
                    "v1", "v1.5", "v1.5.0", "v2", "v2.0", "v2.0.0", "v3", "v3.0.0",
                ],
                vec!["v1", "v1.5", "v1.5.0", "v2", "v2.0", "v2.0.0"],
            ),
            (
                "semver with deny on suffixes",
                tf(&[">=1.0.0"], &[], &[".*-alpine.*"]),
                vec![
                    "v1.0.0",
                    "v1.2.3-alpine3.21",
                    "v2.0.0-scratch",
                    "v2.5.0-alpine3.20",
                ],
                vec!["v1.0.0", "v2.0.0-scratch"],
            ),
            (
                "semver + allow adds non-semver tags",
                tf(&[">=1.0.0 <2.0.0"], &["latest", "edge"], &[]),
                vec!["0.9.0", "1.0.0", "1.5.0", "2.0.0", "latest", "edge", "dev"],
                vec![],
            ),
            (
                "semver + allow + deny combines all filters",
                tf(&[">=1.0.0"], &["latest", "stable"], &[".*-rc.*", "latest"]),
                vec!["1.0.0", "1.5.0-rc1", "2.0.0", "latest", "stable", "dev"],
                vec![],
            ),
            (
                "allow without semver still works",
                tf(&[], &[r"v[0-9]+\.[0-9]+"], &[]),
                vec!["v1.0", "v1.5", "v2.0", "latest", "edge"],
                vec!["v1.0", "v1.5", "v2.0"],
            ),
            (
                "semver + allow with overlapping matches",
                tf(&[">=1.0.0"], &[r"v[0-9]+\.[0-9]+\.[0-9]+"], &[]),
                vec!["v1.0.0", "v1.5.0", "v2.0.0", "latest"],
                vec!["v1.0.0", "v1.5.0", "v2.0.0"],
            ),
        ];
        assert_eq!(cases.len(), 19);
        for (name, filter, input, expected) in cases {
            let got = filter_tags(&filter, &[], &s(&input)).unwrap();
            assert_eq!(got, s(&expected), "{name}");
            // the same set given as a tagSets entry behaves the same
            let got = filter_tags(&TagFilter::default(), &[filter], &s(&input)).unwrap();
            assert_eq!(got, s(&expected), "{name} (tagSets)");
        }
    }

    #[test]
    fn regex_anchoring() {
        let tags = s(&["v1", "v1.2", "xv1", "latest", "a-latest", "alpha", "1a"]);
        let f = tf(&[], &["v1"], &[]);
        assert_eq!(filter_tags(&f, &[], &tags).unwrap(), s(&["v1"]));
        let f = tf(&[], &["v1.*"], &[]);
        assert_eq!(filter_tags(&f, &[], &tags).unwrap(), s(&["v1", "v1.2"]));
        // no grouping: `^a|latest$` = starts with "a" OR ends with "latest"
        let f = tf(&[], &["a|latest"], &[]);
        assert_eq!(
            filter_tags(&f, &[], &tags).unwrap(),
            s(&["latest", "a-latest", "alpha"])
        );
        // a grouped alternation is fully anchored
        let f = tf(&[], &["(a|latest)"], &[]);
        assert_eq!(filter_tags(&f, &[], &tags).unwrap(), s(&["latest"]));
        // deny is anchored too
        let f = tf(&[], &[], &["v1"]);
        assert_eq!(
            filter_tags(&f, &[], &tags).unwrap(),
            s(&["v1.2", "xv1", "latest", "a-latest", "alpha", "1a"])
        );
    }

    #[test]
    fn repos() {
        let repos = s(&[
            "library/alpine",
            "library/busybox",
            "team/app",
            "team/app-dev",
        ]);
        let all = filter_repos(&RepoFilter::default(), &repos).unwrap();
        assert_eq!(all, repos);
        let f = RepoFilter {
            allow: s(&["library/.*", "team/.*"]),
            deny: s(&[".*-dev", "library/busybox"]),
        };
        assert_eq!(
            filter_repos(&f, &repos).unwrap(),
            s(&["library/alpine", "team/app"])
        );
        let f = RepoFilter {
            allow: s(&["team"]),
            deny: vec![],
        };
        assert!(filter_repos(&f, &repos).unwrap().is_empty());
    }

    #[test]
    fn errors() {
        let tags = s(&["1.0.0"]);
        let e = filter_tags(&tf(&[], &["[0-9"], &[]), &[], &tags).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("invalid allow pattern \"[0-9\": "),
            "{e}"
        );
        let e = filter_tags(&tf(&[], &[], &["(x"]), &[], &tags).unwrap_err();
        assert!(
            e.to_string().starts_with("invalid deny pattern \"(x\": "),
            "{e}"
        );
        let e = filter_repos(
            &RepoFilter {
                allow: vec![],
                deny: s(&["*"]),
            },
            &[],
        )
        .unwrap_err();
        assert!(matches!(e, FilterError::InvalidDeny { .. }));
        let e = filter_tags(&tf(&[">= 1.0"], &[], &[]), &[], &tags).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid semver range \">= 1.0\": invalid constraint version: invalid version part 0: "
        );
        let e = filter_tags(&tf(&[" "], &[], &[]), &[], &tags).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid semver range \" \": empty constraint"
        );
        let e = filter_tags(&tf(&["1.x"], &[], &[]), &[], &[]).unwrap_err();
        assert!(
            matches!(e, FilterError::InvalidSemver { .. }),
            "compiled even for no tags"
        );
    }

    #[test]
    fn empty_semver_entries_skipped() {
        let tags = s(&["latest", "1.0.0"]);
        assert_eq!(filter_tags(&tf(&[""], &[], &[]), &[], &tags).unwrap(), tags);
        assert_eq!(
            filter_tags(&tf(&["", ">=1"], &[], &[]), &[], &tags).unwrap(),
            s(&["1.0.0"])
        );
    }

    #[test]
    fn tag_sets_union() {
        let tags = s(&["a1", "b1", "a2", "b2", "c1"]);
        let sets = vec![tf(&[], &["b.*"], &[]), tf(&[], &["a.*", "b1"], &[])];
        // first set's order, then new tags of later sets
        assert_eq!(
            filter_tags(&TagFilter::default(), &sets, &tags).unwrap(),
            s(&["b1", "b2", "a1", "a2"])
        );
        // `tags` is appended last when non-empty
        assert_eq!(
            filter_tags(&tf(&[], &["c1", "a1"], &[]), &sets, &tags).unwrap(),
            s(&["b1", "b2", "a1", "a2", "c1"])
        );
        // an empty set in tagSets selects everything
        assert_eq!(
            filter_tags(&TagFilter::default(), &[TagFilter::default()], &tags).unwrap(),
            tags
        );
        // no sets at all: everything
        assert_eq!(
            filter_tags(&TagFilter::default(), &[], &tags).unwrap(),
            tags
        );
    }
}
