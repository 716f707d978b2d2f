//! Hooks (README "Hooks"): a step's `hooks.pre`, `hooks.post` and `hooks.unchanged`, run per
//! image. regsync parses them but never runs them (spec §16.4); here they run.
//!
//! When (decided in `engine::manifest_resolver`, the per-image decision): `pre` once a copy
//! will happen (the target differs, or a referrers/digest-tags refresh), just before the
//! backup and the copy; `post` after a successful copy; `unchanged` when the image already
//! matched. `check` runs none, nor do skipped images. Each hook runs holding one of the
//! image's `parallel` slots, so at most `defaults.parallel` hooks run at once.
//!
//! What: `type: cmd` runs `params` as argv (no shell, stdin null, output captured and logged
//! at debug, see [`cmd`]); `type: http` sends `params` = method, URL, optional body (see
//! [`http`]). Every param except an http method is a Go template rendered with the image's
//! data ([`HookVars`]). The kinds and param counts are checked at load
//! (`config::validate::check_hooks`).
//!
//! Failure (a render error, a non-zero exit or a signal, a start failure, a non-2xx answer,
//! [`HOOK_TIMEOUT`]) fails the image when the hook is `pre` (it is not copied), and is one
//! WARN line `Hook failed` for `post` and `unchanged`. The run's cancellation stops a hook at
//! once (a command's whole process group is killed), and so does dropping a running hook.

pub mod cmd;
pub mod http;

pub use crate::config::template::HookVars;

use crate::config::template::render_hook_param;
use crate::config::{Hook, Hooks};
use std::sync::OnceLock;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long one hook may take, command or request, before it fails (and is killed).
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Bytes of a command's stdout and of its stderr, or of an http answer's body, kept for the
/// debug log; the rest is read and dropped.
pub const OUTPUT_LIMIT: usize = 4096;

/// Which hook of a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookEvent {
    Pre,
    Post,
    Unchanged,
}

impl HookEvent {
    /// `pre`, `post`, `unchanged`: the YAML key, the log field `hook` and `.Hook`.
    pub fn name(self) -> &'static str {
        match self {
            HookEvent::Pre => "pre",
            HookEvent::Post => "post",
            HookEvent::Unchanged => "unchanged",
        }
    }
}

impl std::fmt::Display for HookEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a hook failed. One line; never a rendered argument, a body, URL credentials or a query
/// value (a template may have put a secret there).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum HookError {
    /// A param's template failed at run time (e.g. a field that does not exist).
    #[error("params[{index}]: {message}")]
    Template { index: usize, message: String },
    #[error("command {program:?} failed to start: {reason}")]
    Spawn { program: String, reason: String },
    /// Exited with a status other than 0, or was killed by a signal.
    #[error("command {program:?} failed: {status}")]
    Exit { program: String, status: String },
    /// `what` is `command "<program>"` or `<METHOD> <loggable url>`.
    #[error("{what} timed out after {}s", .after.as_secs())]
    Timeout { what: String, after: Duration },
    #[error("{method} {url}: {reason}")]
    Request {
        method: String,
        url: String,
        reason: String,
    },
    #[error("{method} {url} answered {status} (expected 2xx)")]
    Status {
        method: String,
        url: String,
        status: String,
    },
    #[error("invalid hook: {0}")]
    Invalid(String),
    /// The HTTP client of `http` hooks could not be built.
    #[error("failed to set up the HTTP client for hooks: {0}")]
    Client(String),
    /// The run's cancellation fired.
    #[error("hook canceled")]
    Canceled,
}

/// Runs hooks for one engine: its HTTP client (for `http` hooks: no registry credentials,
/// ever), its logger and the timeout.
pub struct HookRunner {
    user_agent: String,
    /// Built by [`HookRunner::prepare`] at start, or at the reload that adds the first `http`
    /// hook: a client holds its own parsed copy of the system's root certificates (about
    /// 0.3 MB), which a config without `http` hooks never needs. A build that failed is not
    /// kept: the next reload tries again (the cause, a CA file being rewritten, may be gone).
    http: OnceLock<reqwest::Client>,
    log: slog::Logger,
    timeout: Duration,
}

impl HookRunner {
    pub fn new(user_agent: &str, log: slog::Logger) -> HookRunner {
        HookRunner {
            user_agent: user_agent.to_string(),
            http: OnceLock::new(),
            log,
            timeout: HOOK_TIMEOUT,
        }
    }

    fn http(&self) -> Result<&reqwest::Client, HookError> {
        if let Some(client) = self.http.get() {
            return Ok(client);
        }
        let client = crate::registry::plain_client(&self.user_agent, &self.log)
            .map_err(|e| HookError::Client(crate::registry::error_chain(&e)))?;
        // Two first hooks at once may both build one; the first kept is used by all.
        Ok(self.http.get_or_init(|| client))
    }

    /// Builds the client of `http` hooks now when `hooks` (a config's steps) hold one: a
    /// client that cannot be built stops the start, or refuses the reload, with one line,
    /// instead of failing every `http` hook when it runs. Without `http` hooks nothing is
    /// built.
    pub fn prepare<'a>(&self, hooks: impl IntoIterator<Item = &'a Hooks>) -> Result<(), HookError> {
        let http = hooks
            .into_iter()
            .flat_map(|h| [&h.pre, &h.post, &h.unchanged])
            .flatten()
            .any(|h| h.kind == "http");
        if http {
            self.http()?;
        }
        Ok(())
    }

    /// Another timeout than [`HOOK_TIMEOUT`] (tests).
    pub fn with_timeout(mut self, timeout: Duration) -> HookRunner {
        self.timeout = timeout;
        self
    }

    /// Renders `hook`'s params with `vars` and runs it; `Ok` when the command exited 0 or the
    /// answer was 2xx.
    pub async fn run(
        &self,
        event: HookEvent,
        hook: &Hook,
        vars: &HookVars<'_>,
        cancel: &CancellationToken,
    ) -> Result<(), HookError> {
        if cancel.is_cancelled() {
            return Err(HookError::Canceled);
        }
        let data = vars.value();
        let params = hook
            .params
            .iter()
            .enumerate()
            .map(|(index, p)| {
                // An http method is not a template (checked at load).
                if hook.kind == "http" && index == 0 {
                    return Ok(p.clone());
                }
                render_hook_param(p, &data)
                    .map_err(|message| HookError::Template { index, message })
            })
            .collect::<Result<Vec<String>, HookError>>()?;
        let log = self.log.new(slog::o!(
            "hook" => event.name(),
            "source" => vars.source.to_string(),
            "target" => vars.target.to_string()));
        match hook.kind.as_str() {
            "cmd" => cmd::run(&params, self.timeout, cancel, &log).await,
            "http" => http::run(self.http()?, &params, self.timeout, cancel, &log).await,
            other => Err(HookError::Invalid(format!(
                "unknown hook type {other:?} (expected cmd or http)"
            ))),
        }
    }
}

/// Text of at most [`OUTPUT_LIMIT`] bytes kept from `bytes` (lossy UTF-8, cut marked).
pub(crate) fn shown_output(bytes: &[u8], dropped: usize) -> String {
    let mut text = String::from_utf8_lossy(bytes).into_owned();
    if dropped > 0 {
        text.push_str(&format!("... ({dropped} more bytes)"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hooks(kinds: &[&str]) -> Hooks {
        let hook = |kind: &str| {
            Some(Hook {
                kind: kind.to_string(),
                params: match kind {
                    "http" => vec!["POST".into(), "http://127.0.0.1:1/x".into()],
                    _ => vec!["/bin/true".into()],
                },
            })
        };
        Hooks {
            pre: kinds.first().and_then(|k| hook(k)),
            post: kinds.get(1).and_then(|k| hook(k)),
            unchanged: None,
        }
    }

    #[test]
    fn the_http_client_is_built_when_the_config_is_prepared_only_for_http_hooks() {
        let runner = HookRunner::new("ua", crate::log::discard());
        let steps = [hooks(&[]), hooks(&["cmd", "cmd"])];
        assert_eq!(runner.prepare(&steps), Ok(()));
        assert!(runner.http.get().is_none(), "built without an http hook");
        let steps = [hooks(&["cmd"]), hooks(&["cmd", "http"])];
        assert_eq!(runner.prepare(&steps), Ok(()));
        assert!(
            runner.http.get().is_some(),
            "the http hooks' client was not built by prepare"
        );
    }

    #[test]
    fn a_client_that_cannot_be_built_fails_the_prepare_naming_the_cause_until_it_can() {
        // A user agent that is no header value fails the build. In a run the registry client
        // fails on it first; here it stands in for any cause (a refused system CA bundle is
        // replaced by the built-in roots before any client is built, so it cannot be used).
        let mut runner = HookRunner::new("bad\nagent", crate::log::discard());
        assert_eq!(runner.prepare(&[hooks(&["cmd"])]), Ok(()));
        let e = runner
            .prepare(&[hooks(&["cmd"]), hooks(&["http"])])
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("failed to set up the HTTP client for hooks: "),
            "{e}"
        );
        // The failure is not kept: once its cause is gone, the next reload builds the client.
        runner.user_agent = "ua".into();
        assert_eq!(runner.prepare(&[hooks(&["http"])]), Ok(()));
        assert!(runner.http.get().is_some());
    }
}
