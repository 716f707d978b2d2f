//! What is checked when the config is loaded (spec §3.8): TLS values, duration syntax, hooks
//! ([`check_hooks`], README "Hooks") and the version. Step `type`, references, regexes and semver ranges are checked at run time;
//! [`check_step`] is the `type` check for the engine.

use super::schema::{Config, Hook, Hooks, SyncStep};
use super::ConfigError;
use crate::gocompat::duration::parse_duration;
use crate::registry::Tls;

/// Parses a `creds[].tls` value case-insensitively; `""` is "unset" (`None`).
pub fn parse_tls(value: &str) -> Result<Option<Tls>, String> {
    match value.to_lowercase().as_str() {
        "" => Ok(None),
        "enabled" => Ok(Some(Tls::Enabled)),
        "insecure" => Ok(Some(Tls::Insecure)),
        "disabled" => Ok(Some(Tls::Disabled)),
        _ => Err(format!("unknown TLS value \"{value}\"")),
    }
}

/// The YAML text of a TLS setting (`enabled|insecure|disabled`).
pub fn tls_text(tls: Tls) -> &'static str {
    match tls {
        Tls::Enabled => "enabled",
        Tls::Insecure => "insecure",
        Tls::Disabled => "disabled",
    }
}

fn check_duration(context: &str, field: &str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() {
        return Ok(());
    }
    parse_duration(value).map(|_| ()).map_err(|e| {
        ConfigError::invalid(
            context,
            format!("invalid duration {value:?} for {field}: {e}"),
        )
    })
}

/// The HTTP method of an `http` hook: a token, case-insensitive (sent in upper case).
pub fn hook_method(text: &str) -> Result<reqwest::Method, String> {
    let upper = text.to_ascii_uppercase();
    match reqwest::Method::from_bytes(upper.as_bytes()) {
        Ok(m) if !upper.is_empty() => Ok(m),
        _ => Err(format!("invalid HTTP method {text:?}")),
    }
}

/// An `http` hook's URL once rendered: absolute, `http` or `https`.
pub fn hook_url(text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text).map_err(|e| format!("invalid URL: {e}"))?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(format!(
            "unsupported URL scheme {other:?} (expected http or https)"
        )),
    }
}

fn check_hook(field: &str, hook: &Hook) -> Result<(), String> {
    let params = &hook.params;
    let templates = |from: usize| {
        params.iter().enumerate().skip(from).try_for_each(|(i, p)| {
            super::template::check_template(p).map_err(|e| format!("{field}.params[{i}]: {e}"))
        })
    };
    match hook.kind.as_str() {
        "cmd" => {
            if params.is_empty() {
                return Err(format!(
                    "{field}.params: a cmd hook needs at least the program to run"
                ));
            }
            templates(0)
        }
        "http" => {
            if !(2..=3).contains(&params.len()) {
                return Err(format!(
                    "{field}.params: an http hook takes a method, a URL and an optional body, got {} params",
                    params.len()
                ));
            }
            hook_method(&params[0]).map_err(|e| format!("{field}.params[0]: {e}"))?;
            if !params[1].contains("{{") {
                hook_url(&params[1]).map_err(|e| format!("{field}.params[1]: {e}"))?;
            }
            templates(1)
        }
        other => Err(format!(
            "{field}.type: unknown hook type {other:?} (expected cmd or http)"
        )),
    }
}

/// `hooks.pre|post|unchanged` as written (README "Hooks"): `type: cmd` needs the program
/// (params = argv), `type: http` a method, a URL and an optional body; every param that is a
/// template must parse (a URL without a template must be an http(s) URL). regsync accepts
/// anything here, as it never runs hooks.
pub fn check_hooks(context: &str, hooks: &Hooks) -> Result<(), ConfigError> {
    for (name, hook) in [
        ("pre", &hooks.pre),
        ("post", &hooks.post),
        ("unchanged", &hooks.unchanged),
    ] {
        if let Some(h) = hook {
            check_hook(&format!("hooks.{name}"), h)
                .map_err(|m| ConfigError::invalid(context, m))?;
        }
    }
    Ok(())
}

/// `cleanupTagsExclude` patterns must compile (anchored like every regsync pattern) and
/// `cleanupTagsMaxPercent` lie in 0..=100.
fn check_cleanup(
    context: &str,
    exclude: Option<&[String]>,
    max_percent: Option<i64>,
) -> Result<(), ConfigError> {
    for (i, p) in exclude.unwrap_or_default().iter().enumerate() {
        fancy_regex::Regex::new(&format!("^{p}$")).map_err(|e| {
            ConfigError::invalid(
                context,
                format!("cleanupTagsExclude[{i}]: invalid pattern {p:?}: {e}"),
            )
        })?;
    }
    if let Some(n) = max_percent {
        if !(0..=100).contains(&n) {
            return Err(ConfigError::invalid(
                context,
                format!("cleanupTagsMaxPercent: {n} is not a percentage (0 to 100)"),
            ));
        }
    }
    Ok(())
}

/// `creds[0] (registry "x")`, or `creds[0]` when the entry has no registry.
pub(crate) fn creds_context(index: usize, registry: &str) -> String {
    if registry.is_empty() {
        format!("creds[{index}]")
    } else {
        format!("creds[{index}] (registry {registry:?})")
    }
}

/// `sync[0] (source "x")`, or `sync[0]` when the step has no source.
pub fn step_context(index: usize, step: &SyncStep) -> String {
    if step.source.is_empty() {
        format!("sync[{index}]")
    } else {
        format!("sync[{index}] (source {:?})", step.source)
    }
}

/// Load-time checks, in this order: creds TLS values, duration fields and hooks (defaults,
/// then steps), version (> 1 → `unsupported config version`). The returned error has no file name yet
/// (`Config::from_yaml` adds it).
pub fn validate(config: &Config) -> Result<(), ConfigError> {
    for (i, c) in config.creds.iter().enumerate() {
        parse_tls(&c.tls).map_err(|m| ConfigError::invalid(&creds_context(i, &c.registry), m))?;
    }
    let d = &config.defaults;
    check_duration("defaults", "interval", &d.interval)?;
    check_duration("defaults", "cacheTime", &d.cache_time)?;
    check_duration("defaults", "ratelimit.retry", &d.ratelimit.retry)?;
    check_hooks("defaults", &d.hooks)?;
    check_cleanup(
        "defaults",
        d.cleanup_tags_exclude.as_deref(),
        d.cleanup_tags_max_percent,
    )?;
    for (i, s) in config.sync.iter().enumerate() {
        let ctx = step_context(i, s);
        check_duration(&ctx, "interval", &s.interval)?;
        check_duration(&ctx, "ratelimit.retry", &s.ratelimit.retry)?;
        check_hooks(&ctx, &s.hooks)?;
        check_cleanup(
            &ctx,
            s.cleanup_tags_exclude.as_deref(),
            s.cleanup_tags_max_percent,
        )?;
    }
    if config.version > 1 {
        return Err(ConfigError::UnsupportedVersion {
            file: String::new(),
            version: config.version,
        });
    }
    Ok(())
}

/// The message logged (at error level, fields `step`, `type`) for an unknown step type; the
/// step's error is then `invalid input` (spec §5.1).
pub const TYPE_NOT_RECOGNIZED: &str =
    "Type not recognized, must be one of: registry, repository, or image";

/// Run-time check of a step's `type` (case-sensitive `registry|repository|image`). The error
/// text is [`TYPE_NOT_RECOGNIZED`].
pub fn check_step(step: &SyncStep) -> Result<(), String> {
    match step.kind.as_str() {
        "registry" | "repository" | "image" => Ok(()),
        _ => Err(TYPE_NOT_RECOGNIZED.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CredsEntry;

    #[test]
    fn tls_values() {
        assert_eq!(parse_tls(""), Ok(None));
        assert_eq!(parse_tls("Enabled"), Ok(Some(Tls::Enabled)));
        assert_eq!(parse_tls("INSECURE"), Ok(Some(Tls::Insecure)));
        assert_eq!(parse_tls("disabled"), Ok(Some(Tls::Disabled)));
        assert_eq!(
            parse_tls("bogus"),
            Err("unknown TLS value \"bogus\"".to_string())
        );
    }

    #[test]
    fn step_type() {
        for t in ["registry", "repository", "image"] {
            let s = SyncStep {
                kind: t.into(),
                ..Default::default()
            };
            assert!(check_step(&s).is_ok());
        }
        for t in ["", "Image", "repo"] {
            let s = SyncStep {
                kind: t.into(),
                ..Default::default()
            };
            assert_eq!(check_step(&s), Err(TYPE_NOT_RECOGNIZED.to_string()));
        }
    }

    #[test]
    fn hook_checks() {
        let hook = |kind: &str, params: &[&str]| Hooks {
            post: Some(Hook {
                kind: kind.into(),
                params: params.iter().map(|p| p.to_string()).collect(),
            }),
            ..Default::default()
        };
        let err = |h: Hooks| check_hooks("sync[2]", &h).unwrap_err().to_string();
        assert!(check_hooks("x", &Hooks::default()).is_ok());
        assert!(check_hooks("x", &hook("cmd", &["/bin/true", "{{ .Ref.Tag }}"])).is_ok());
        assert!(check_hooks("x", &hook("http", &["post", "http://h/{{ .Ref.Tag }}"])).is_ok());
        assert!(check_hooks(
            "x",
            &hook("http", &["PUT", "https://h/", "{{ json .Ref }}"])
        )
        .is_ok());
        assert_eq!(
            err(hook("exec", &["a"])),
            "sync[2]: hooks.post.type: unknown hook type \"exec\" (expected cmd or http)"
        );
        assert!(err(hook("cmd", &[])).starts_with("sync[2]: hooks.post.params: "));
        assert!(err(hook("http", &["GET"])).contains("got 1 params"));
        assert!(err(hook("http", &["GET", "u", "b", "x"])).contains("got 4 params"));
        assert!(
            err(hook("http", &["", "http://h/"])).starts_with("sync[2]: hooks.post.params[0]: ")
        );
        assert!(err(hook("http", &["GET", "file:///x"]))
            .contains("hooks.post.params[1]: unsupported URL scheme"));
        assert!(err(hook("http", &["GET", "nope"])).contains("hooks.post.params[1]: invalid URL"));
        assert!(err(hook("cmd", &["a", "{{ .X"]))
            .starts_with("sync[2]: hooks.post.params[1]: template: "));
        assert!(err(hook("cmd", &["{{ nofunc }}"])).contains("hooks.post.params[0]: template: "));
    }

    #[test]
    fn validate_errors() {
        let mut c = Config::default();
        assert!(validate(&c).is_ok());
        c.creds.push(CredsEntry {
            registry: "x".into(),
            tls: "maybe".into(),
            ..Default::default()
        });
        assert_eq!(
            validate(&c).unwrap_err().to_string(),
            "creds[0] (registry \"x\"): unknown TLS value \"maybe\""
        );
        c.creds.clear();
        c.sync.push(std::sync::Arc::new(SyncStep {
            source: "alpine".into(),
            interval: "1d".into(),
            ..Default::default()
        }));
        assert_eq!(
            validate(&c).unwrap_err().to_string(),
            "sync[0] (source \"alpine\"): invalid duration \"1d\" for interval: time: unknown unit \"d\" in duration \"1d\""
        );
        c.sync.clear();
        c.defaults.cache_time = "90".into();
        assert_eq!(
            validate(&c).unwrap_err().to_string(),
            "defaults: invalid duration \"90\" for cacheTime: time: missing unit in duration \"90\""
        );
        c.defaults.cache_time = "-5m".into();
        c.version = 2;
        assert!(matches!(
            validate(&c),
            Err(ConfigError::UnsupportedVersion { version: 2, .. })
        ));
        c.version = 1;
        assert!(validate(&c).is_ok());
    }
}
