//! Merging `defaults` into each sync step (spec §3.6), applied at load before templates.

use super::schema::{
    Config, Defaults, StringList, SyncStep, DEFAULT_CLEANUP_EXCLUDE, DEFAULT_CLEANUP_MAX_PERCENT,
};
use crate::gocompat::duration::{duration_of, GoDuration};
use crate::oci::media::DEFAULT_MEDIA_TYPES;

/// `ratelimit.retry` is never below this (spec §3.4, Appendix B).
pub const RATE_LIMIT_RETRY_MIN: GoDuration = GoDuration::from_mins(5);

fn min_retry_text() -> String {
    RATE_LIMIT_RETRY_MIN.to_string()
}

/// Applies spec §3.6 to every step, after raising `defaults.ratelimit.retry` to at least 5m.
/// Idempotent.
pub fn merge_defaults(config: &mut Config) {
    if duration_of(&config.defaults.ratelimit.retry) < RATE_LIMIT_RETRY_MIN {
        config.defaults.ratelimit.retry = min_retry_text();
    }
    let defaults = StepDefaults::of(&config.defaults);
    for step in &mut config.sync {
        merge_step(std::sync::Arc::make_mut(step), &defaults);
    }
}

/// What a step that leaves a field out gets: `defaults`, with the built-in lists filled in
/// once, so every such step shares one list.
struct StepDefaults {
    d: Defaults,
    media_types: StringList,
    cleanup_tags_exclude: StringList,
}

impl StepDefaults {
    fn of(d: &Defaults) -> Self {
        let media_types = if d.media_types.is_empty() {
            DEFAULT_MEDIA_TYPES.iter().map(|m| m.to_string()).collect()
        } else {
            d.media_types.clone()
        };
        let cleanup_tags_exclude = d.cleanup_tags_exclude.clone().unwrap_or_else(|| {
            DEFAULT_CLEANUP_EXCLUDE
                .iter()
                .map(|p| p.to_string())
                .collect()
        });
        StepDefaults {
            d: d.clone(),
            media_types,
            cleanup_tags_exclude,
        }
    }
}

fn merge_flag(step: &mut Option<bool>, default: Option<bool>) {
    if step.is_none() {
        *step = Some(default == Some(true));
    }
}

/// Merges `d` into one step (spec §3.6 rules 1–9). `d.ratelimit.retry` is expected to have
/// been raised already (see [`merge_defaults`]).
fn merge_step(s: &mut SyncStep, defaults: &StepDefaults) {
    let d = &defaults.d;
    // 1. backup
    if s.backup.is_empty() && !d.backup.is_empty() {
        s.backup = d.backup.clone();
    }
    // 2. schedule / interval
    if s.schedule.is_empty() && duration_of(&s.interval).is_zero() {
        if !d.schedule.is_empty() {
            s.schedule = d.schedule.clone();
        } else if !duration_of(&d.interval).is_zero() {
            s.interval = d.interval.clone();
        }
    }
    // 3./4. rate limit
    if s.ratelimit.min == 0 && d.ratelimit.min != 0 {
        s.ratelimit.min = d.ratelimit.min;
    }
    let retry = duration_of(&s.ratelimit.retry);
    if retry.is_zero() {
        s.ratelimit.retry = d.ratelimit.retry.clone();
    } else if retry < RATE_LIMIT_RETRY_MIN {
        s.ratelimit.retry = min_retry_text();
    }
    // 5. media types
    if s.media_types.is_empty() {
        s.media_types = defaults.media_types.clone();
    }
    // 6. booleans, always materialised
    merge_flag(&mut s.digest_tags, d.digest_tags);
    merge_flag(&mut s.referrers, d.referrers);
    merge_flag(&mut s.referrer_slow, d.referrer_slow);
    merge_flag(&mut s.fast_check, d.fast_check);
    merge_flag(&mut s.force_recursive, d.force_recursive);
    merge_flag(&mut s.include_external, d.include_external);
    // 7. referrer filters (absent, not empty)
    if s.referrer_filters.is_none() {
        s.referrer_filters = d.referrer_filters.clone();
    }
    // 8. referrer source / target
    if s.referrer_source.is_empty() && !d.referrer_source.is_empty() {
        s.referrer_source = d.referrer_source.clone();
    }
    if s.referrer_target.is_empty() && !d.referrer_target.is_empty() {
        s.referrer_target = d.referrer_target.clone();
    }
    // 9. hooks
    if s.hooks.pre.is_none() {
        s.hooks.pre = d.hooks.pre.clone();
    }
    if s.hooks.post.is_none() {
        s.hooks.post = d.hooks.post.clone();
    }
    if s.hooks.unchanged.is_none() {
        s.hooks.unchanged = d.hooks.unchanged.clone();
    }
    // 10. pruning (README "Pruning"): the step's, else the defaults', else the built-in
    merge_flag(&mut s.cleanup_tags, d.cleanup_tags);
    if s.cleanup_tags_exclude.is_none() {
        s.cleanup_tags_exclude = Some(defaults.cleanup_tags_exclude.clone());
    }
    if s.cleanup_tags_max_percent.is_none() {
        s.cleanup_tags_max_percent = Some(
            d.cleanup_tags_max_percent
                .unwrap_or(DEFAULT_CLEANUP_MAX_PERCENT),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schema::{Hook, ReferrerFilter};

    fn cfg(defaults: Defaults, steps: Vec<SyncStep>) -> Config {
        Config {
            defaults,
            sync: steps.into_iter().map(std::sync::Arc::new).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn empty_defaults() {
        let mut c = cfg(Defaults::default(), vec![SyncStep::default()]);
        merge_defaults(&mut c);
        assert_eq!(c.defaults.ratelimit.retry, "5m0s");
        let s = &c.sync[0];
        assert_eq!(s.ratelimit.retry, "5m0s");
        assert_eq!(s.ratelimit.min, 0);
        assert_eq!(s.media_types[..], DEFAULT_MEDIA_TYPES);
        for f in [
            s.digest_tags,
            s.referrers,
            s.referrer_slow,
            s.fast_check,
            s.force_recursive,
            s.include_external,
        ] {
            assert_eq!(f, Some(false));
        }
        assert_eq!(s.referrer_filters, None);
        assert_eq!(s.schedule, "");
        assert_eq!(s.interval, "");
        assert_eq!(s.hooks.pre, None);
    }

    #[test]
    fn steps_that_leave_out_a_list_share_the_default_one() {
        let own = SyncStep {
            media_types: vec!["a/b".into()].into(),
            ..Default::default()
        };
        let mut c = cfg(
            Defaults::default(),
            vec![SyncStep::default(), SyncStep::default(), own],
        );
        merge_defaults(&mut c);
        let (a, b, own) = (&c.sync[0], &c.sync[1], &c.sync[2]);
        assert!(std::sync::Arc::ptr_eq(&a.media_types, &b.media_types));
        let excludes = |s: &SyncStep| s.cleanup_tags_exclude.clone().unwrap();
        assert!(std::sync::Arc::ptr_eq(&excludes(a), &excludes(b)));
        assert!(std::sync::Arc::ptr_eq(&excludes(a), &excludes(own)));
        assert_eq!(own.media_types[..], ["a/b"]);
    }

    #[test]
    fn inherit_everything() {
        let hook = Hook {
            kind: "exec".into(),
            params: vec!["x".into()],
        };
        let d = Defaults {
            backup: "bk-{{.Ref.Tag}}".into(),
            interval: "1h0m0s".into(),
            ratelimit: crate::config::RateLimit {
                min: 100,
                retry: "15m".into(),
            },
            media_types: vec!["a/b".into()].into(),
            digest_tags: Some(true),
            referrers: Some(false),
            fast_check: Some(true),
            referrer_filters: Some(vec![ReferrerFilter::default()]),
            referrer_source: "rs".into(),
            referrer_target: "rt".into(),
            hooks: crate::config::Hooks {
                pre: Some(hook.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut c = cfg(d, vec![SyncStep::default()]);
        merge_defaults(&mut c);
        assert_eq!(c.defaults.ratelimit.retry, "15m");
        let s = &c.sync[0];
        assert_eq!(s.backup, "bk-{{.Ref.Tag}}");
        assert_eq!(s.interval, "1h0m0s");
        assert_eq!(s.ratelimit.min, 100);
        assert_eq!(s.ratelimit.retry, "15m");
        assert_eq!(s.media_types[..], ["a/b"]);
        assert_eq!(s.digest_tags, Some(true));
        assert_eq!(s.referrers, Some(false));
        assert_eq!(s.fast_check, Some(true));
        assert_eq!(s.force_recursive, Some(false));
        assert_eq!(s.referrer_filters, Some(vec![ReferrerFilter::default()]));
        assert_eq!(s.referrer_source, "rs");
        assert_eq!(s.referrer_target, "rt");
        assert_eq!(s.hooks.pre, Some(hook));
        assert_eq!(s.hooks.post, None);
    }

    #[test]
    fn step_values_kept() {
        let d = Defaults {
            backup: "d".into(),
            schedule: "15 3 * * *".into(),
            interval: "1h".into(),
            digest_tags: Some(true),
            referrer_filters: Some(vec![ReferrerFilter::default()]),
            ratelimit: crate::config::RateLimit {
                min: 5,
                retry: "20m".into(),
            },
            ..Default::default()
        };
        let steps = vec![
            SyncStep {
                backup: "s".into(),
                interval: "12h0m0s".into(),
                digest_tags: Some(false),
                referrer_filters: Some(vec![]),
                ratelimit: crate::config::RateLimit {
                    min: 7,
                    retry: "1m".into(),
                },
                ..Default::default()
            },
            SyncStep {
                ratelimit: crate::config::RateLimit {
                    min: 0,
                    retry: "-1m".into(),
                },
                ..Default::default()
            },
            SyncStep {
                schedule: "0 * * * *".into(),
                interval: "2h".into(),
                ratelimit: crate::config::RateLimit {
                    min: 0,
                    retry: "30m0s".into(),
                },
                ..Default::default()
            },
        ];
        let mut c = cfg(d, steps);
        merge_defaults(&mut c);
        let s = &c.sync[0];
        assert_eq!(s.backup, "s");
        assert_eq!(s.interval, "12h0m0s");
        assert_eq!(s.schedule, "");
        assert_eq!(s.digest_tags, Some(false));
        assert_eq!(s.referrer_filters, Some(vec![]));
        assert_eq!(s.ratelimit.min, 7);
        assert_eq!(s.ratelimit.retry, "5m0s");
        // no schedule, no interval: the default schedule wins over the default interval
        let s = &c.sync[1];
        assert_eq!(s.schedule, "15 3 * * *");
        assert_eq!(s.interval, "");
        assert_eq!(s.ratelimit.min, 5);
        assert_eq!(s.ratelimit.retry, "5m0s");
        // both kept
        let s = &c.sync[2];
        assert_eq!(s.schedule, "0 * * * *");
        assert_eq!(s.interval, "2h");
        assert_eq!(s.ratelimit.retry, "30m0s");
    }

    #[test]
    fn negative_default_retry_raised() {
        let d = Defaults {
            ratelimit: crate::config::RateLimit {
                min: 0,
                retry: "-10m".into(),
            },
            ..Default::default()
        };
        let mut c = cfg(d, vec![]);
        merge_defaults(&mut c);
        assert_eq!(c.defaults.ratelimit.retry, "5m0s");
    }
}
