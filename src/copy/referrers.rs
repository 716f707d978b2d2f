//! What a copy carries besides the image itself (spec §5.8, §6.2 steps 6, 9 and 10): the
//! step's copy options, the referrer filters and the digest tags of a manifest.

use crate::config::{ReferrerFilter, SyncStep};
use crate::oci::{Descriptor, Digest};
use crate::platform::{PlatformError, PlatformFilter};
use crate::reference::Reference;
use std::collections::HashSet;

/// The copy options of spec §5.8. `CopyOpts::default()` is a plain copy (backups).
#[derive(Clone, Debug, Default)]
pub struct CopyOpts {
    pub digest_tags: bool,
    /// `referrers: true`: the filters, a union (empty: every referrer).
    pub referrers: Option<Vec<ReferrerFilter>>,
    /// `referrerSource`: list referrers there instead of in the source repository.
    pub referrer_src: Option<Reference>,
    /// `referrerTarget`: push referrers there instead of into the target repository.
    pub referrer_tgt: Option<Reference>,
    pub fast_check: bool,
    pub force_recursive: bool,
    pub include_external: bool,
    /// `platforms`: the child filter of indexes (a parse error fails copies of indexes).
    pub platforms: Option<Result<PlatformFilter, PlatformError>>,
}

impl CopyOpts {
    /// The options of a step; unparseable `referrerSource`/`referrerTarget` are logged and
    /// ignored, as regsync does.
    pub fn from_step(s: &SyncStep, log: &slog::Logger) -> CopyOpts {
        let flag = |v: Option<bool>| v.unwrap_or(false);
        let mut o = CopyOpts {
            digest_tags: flag(s.digest_tags),
            fast_check: flag(s.fast_check),
            force_recursive: flag(s.force_recursive),
            include_external: flag(s.include_external),
            ..Default::default()
        };
        if !s.platforms.is_empty() {
            o.platforms = Some(PlatformFilter::parse(&s.platforms));
        }
        if flag(s.referrers) {
            o.referrers = Some(s.referrer_filters.clone().unwrap_or_default());
            let parse = |text: &str| -> Result<Option<Reference>, String> {
                if text.is_empty() {
                    return Ok(None);
                }
                Reference::parse(text)
                    .map(|r| Some(r.repo_only()))
                    .map_err(|e| e.to_string())
            };
            o.referrer_src = parse(&s.referrer_source).unwrap_or_else(|e| {
                slog::error!(log, "failed to parse referrer source reference";
                    "referrerSource" => &s.referrer_source, "error" => e);
                None
            });
            o.referrer_tgt = parse(&s.referrer_target).unwrap_or_else(|e| {
                slog::error!(log, "failed to parse referrer target reference";
                    "referrerTarget" => &s.referrer_target, "error" => e);
                None
            });
        }
        o
    }

    /// Options that make a copy look past a matching top digest (spec §6.2 step 3).
    pub fn recursive(&self) -> bool {
        self.force_recursive || self.referrers.is_some() || self.digest_tags
    }
}

/// One filter: `artifactType` equal when set; every annotation key present, with an equal
/// value when the filter's value is not empty.
fn filter_matches(d: &Descriptor, f: &ReferrerFilter) -> bool {
    if !f.artifact_type.is_empty() && d.artifact_type.as_deref() != Some(f.artifact_type.as_str()) {
        return false;
    }
    f.annotations.iter().all(|(k, v)| {
        d.annotations
            .as_ref()
            .and_then(|a| a.get(k))
            .is_some_and(|have| v.is_empty() || have == v)
    })
}

/// The referrers selected by the union of `filters` (none: all), each once, in listing order.
pub fn select_referrers(list: &[Descriptor], filters: &[ReferrerFilter]) -> Vec<Descriptor> {
    let mut seen = HashSet::new();
    list.iter()
        .filter(|d| filters.is_empty() || filters.iter().any(|f| filter_matches(d, f)))
        .filter(|d| seen.insert(d.digest.clone()))
        .cloned()
        .collect()
}

/// Tags that start with `<alg>-<hex>` of `subject` (`.sig`, `.att`, `.sbom`, `.<x>.meta`, or
/// nothing after it), except the referrer fallback tags in `skip`.
pub fn digest_tags<'t>(tags: &'t [String], subject: &Digest, skip: &[String]) -> Vec<&'t str> {
    let prefix = format!("{}-{}", subject.algorithm(), subject.hex());
    tags.iter()
        .filter(|t| t.starts_with(&prefix) && !skip.contains(t))
        .map(String::as_str)
        .collect()
}

/// The entry a referrer gets in its subject's fallback index when only its listing
/// descriptor is at hand.
pub fn index_entry(listed: &Descriptor) -> Descriptor {
    let mut d = Descriptor::new(&listed.media_type, listed.digest.clone(), listed.size);
    d.artifact_type = listed.artifact_type.clone();
    d.annotations = listed.annotations.clone().filter(|a| !a.is_empty());
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::media;
    use std::collections::BTreeMap;

    fn desc(n: u8, at: Option<&str>, ann: &[(&str, &str)]) -> Descriptor {
        let mut d = Descriptor::new(media::OCI_MANIFEST, Digest::sha256_of(&[n]), 1);
        d.artifact_type = at.map(String::from);
        if !ann.is_empty() {
            d.annotations = Some(
                ann.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            );
        }
        d
    }

    fn filter(at: &str, ann: &[(&str, &str)]) -> ReferrerFilter {
        ReferrerFilter {
            artifact_type: at.into(),
            annotations: ann
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn referrer_filters_are_a_union() {
        let list = vec![
            desc(1, Some("application/example.sbom"), &[("preference", "1")]),
            desc(2, Some("application/example.signature"), &[]),
            desc(3, Some("application/example.sbom"), &[("preference", "2")]),
            desc(4, None, &[("preference", "")]),
        ];
        let digests = |v: Vec<Descriptor>| v.into_iter().map(|d| d.digest).collect::<Vec<_>>();
        assert_eq!(select_referrers(&list, &[]).len(), 4);
        assert_eq!(
            digests(select_referrers(
                &list,
                &[filter("application/example.sbom", &[])]
            )),
            vec![list[0].digest.clone(), list[2].digest.clone()]
        );
        // key present, any value
        assert_eq!(
            select_referrers(&list, &[filter("", &[("preference", "")])]).len(),
            3
        );
        // value must equal when given
        assert_eq!(
            digests(select_referrers(
                &list,
                &[filter("", &[("preference", "2")])]
            )),
            vec![list[2].digest.clone()]
        );
        // both conditions in one filter; union over filters, each referrer once
        let f = [
            filter("application/example.sbom", &[("preference", "1")]),
            filter("application/example.signature", &[]),
            filter("application/example.sbom", &[]),
        ];
        assert_eq!(
            digests(select_referrers(&list, &f)),
            vec![
                list[0].digest.clone(),
                list[1].digest.clone(),
                list[2].digest.clone()
            ]
        );
        assert!(select_referrers(&list, &[filter("nope", &[])]).is_empty());
    }

    #[test]
    fn digest_tag_selection() {
        let d = Digest::sha256_of(b"x");
        let other = Digest::sha256_of(b"y");
        let hex = d.hex();
        let tags: Vec<String> = vec![
            "latest".into(),
            format!("sha256-{hex}.sig"),
            format!("sha256-{hex}.att"),
            format!("sha256-{hex}"),
            format!("sha256-{hex}.0123456789abcdef.meta"),
            format!("sha256-{}.sig", other.hex()),
            format!("sha512-{hex}"),
        ];
        let got = digest_tags(&tags, &d, &[]);
        assert_eq!(got, vec![&tags[1], &tags[2], &tags[3], &tags[4]]);
        let got = digest_tags(&tags, &d, &[format!("sha256-{hex}")]);
        assert_eq!(got, vec![&tags[1], &tags[2], &tags[4]]);
    }
}
