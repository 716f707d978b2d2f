//! `type: http`: params = method (not a template, case-insensitive), URL and an optional body
//! (both rendered). The request goes out on the hook client (`registry::plain_client`): the
//! same trusted roots as the registries, but never a registry's credentials; userinfo in the
//! URL is sent as Basic auth. A body that is valid JSON is sent as `application/json`, any
//! other as `text/plain; charset=utf-8`. Redirects are not followed: only a 2xx answer
//! succeeds. URLs are logged without userinfo, fragment and query values ([`shown_url`]).

use super::{shown_output, HookError, OUTPUT_LIMIT};
use crate::config::validate::{hook_method, hook_url};
use crate::registry::{error_chain, loggable};
use reqwest::header::CONTENT_TYPE;
use slog::Logger;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A hook URL fit for logs: the registry client's rule ([`loggable`]: no userinfo), and every
/// query value redacted, whatever its name (a hook's query is the user's, not ours), and no
/// fragment.
fn shown_url(url: &url::Url) -> String {
    let mut u = url.clone();
    u.set_fragment(None);
    if u.query().is_some() {
        let keys: Vec<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
        u.query_pairs_mut()
            .clear()
            .extend_pairs(keys.iter().map(|k| (k.as_str(), "redacted")));
    }
    loggable(&u)
}

/// Sends the request `params` describe; `Ok` on a 2xx answer.
pub async fn run(
    client: &reqwest::Client,
    params: &[String],
    timeout: Duration,
    cancel: &CancellationToken,
    log: &Logger,
) -> Result<(), HookError> {
    let (Some(method), Some(url)) = (params.first(), params.get(1)) else {
        return Err(HookError::Invalid(
            "an http hook needs a method and a URL".into(),
        ));
    };
    let method = hook_method(method).map_err(HookError::Invalid)?;
    // The rendered URL may hold a secret: the error names the param, not its text.
    let url = hook_url(url).map_err(|e| HookError::Template {
        index: 1,
        message: e,
    })?;
    let shown = shown_url(&url);
    slog::debug!(log, "Hook running"; "type" => "http", "method" => %method, "url" => &shown);
    let mut request = client.request(method.clone(), url).timeout(timeout);
    if let Some(body) = params.get(2) {
        let content_type = if serde_json::from_str::<serde_json::Value>(body).is_ok() {
            "application/json"
        } else {
            "text/plain; charset=utf-8"
        };
        request = request
            .header(CONTENT_TYPE, content_type)
            .body(body.clone());
    }
    let failed = |e: reqwest::Error| {
        if e.is_timeout() {
            HookError::Timeout {
                what: format!("{method} {shown}"),
                after: timeout,
            }
        } else {
            HookError::Request {
                method: method.to_string(),
                url: shown.clone(),
                // reqwest's texts carry the full URL; ours is the loggable one
                reason: error_chain(&e.without_url()),
            }
        }
    };
    let exchange = async {
        let mut response = request.send().await.map_err(&failed)?;
        let status = response.status();
        let mut kept = Vec::new();
        let mut dropped = 0;
        while let Some(chunk) = response.chunk().await.map_err(&failed)? {
            let take = OUTPUT_LIMIT.saturating_sub(kept.len()).min(chunk.len());
            kept.extend_from_slice(&chunk[..take]);
            dropped += chunk.len() - take;
        }
        Ok::<_, HookError>((status, shown_output(&kept, dropped)))
    };
    let (status, body) = tokio::select! {
        r = exchange => r?,
        _ = tokio::time::sleep(timeout) => return Err(HookError::Timeout {
            what: format!("{method} {shown}"),
            after: timeout,
        }),
        _ = cancel.cancelled() => return Err(HookError::Canceled),
    };
    slog::debug!(log, "Hook output"; "method" => %method, "url" => &shown,
        "status" => status.as_u16(), "body" => body);
    if status.is_success() {
        Ok(())
    } else {
        Err(HookError::Status {
            method: method.to_string(),
            url: shown,
            status: status.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_logged_without_secrets() {
        let u = url::Url::parse("https://user:pw@hooks.example.org:8443/p/a?token=s3&tag=v1#frag")
            .unwrap();
        assert_eq!(
            shown_url(&u),
            "https://hooks.example.org:8443/p/a?token=redacted&tag=redacted"
        );
        let u = url::Url::parse("http://h/x").unwrap();
        assert_eq!(shown_url(&u), "http://h/x");
    }
}
