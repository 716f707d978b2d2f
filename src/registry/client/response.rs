//! A registry's answer: the response holding its gate permit, its body read with a limit or
//! streamed, and a status the caller does not accept mapped to its `StoreError` (spec §7.3).

use super::super::{retry_after, Permit};
use super::IDLE_TIMEOUT;
use crate::store::{BlobStream, StoreError};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use reqwest::header::{HeaderMap, LOCATION};
use reqwest::StatusCode;
use tokio_util::sync::CancellationToken;
use url::Url;

/// Error bodies are only read for the registry error code.
const ERROR_BODY_LIMIT: usize = 1 << 20;

/// A response, holding its gate permit until it (or its body stream) is dropped.
pub(crate) struct Response {
    pub(super) inner: reqwest::Response,
    pub(super) permit: Permit,
    /// `host[:port]`, for errors.
    pub(super) host: String,
    pub(super) cancel: CancellationToken,
}

impl Response {
    pub fn status(&self) -> u16 {
        self.inner.status().as_u16()
    }

    pub fn headers(&self) -> &HeaderMap {
        self.inner.headers()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.inner
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    }

    /// The URL that answered (after redirects): relative `Location`/`Link` resolve against it.
    pub fn url(&self) -> &Url {
        self.inner.url()
    }

    pub fn content_length(&self) -> Option<u64> {
        self.header("content-length").and_then(|v| v.parse().ok())
    }

    /// `Content-Type` without parameters, lower-cased (spec §7.2).
    pub fn media_type(&self) -> Option<String> {
        self.header("content-type")
            .map(|ct| {
                ct.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .filter(|mt| !mt.is_empty())
    }

    /// The `Location` header resolved against the request URL (spec §6.3 b).
    pub fn location(&self) -> Result<Url, StoreError> {
        let loc = self
            .header(LOCATION.as_str())
            .ok_or_else(|| StoreError::Invalid("location header missing".into()))?;
        self.url()
            .join(loc)
            .map_err(|e| StoreError::Invalid(format!("invalid location header: {e}")))
    }

    /// Read the whole body, refusing more than `limit` bytes.
    pub async fn bytes(mut self, limit: usize) -> Result<Bytes, StoreError> {
        if self.content_length().is_some_and(|n| n > limit as u64) {
            return Err(StoreError::SizeExceeded {
                expected: limit as u64,
            });
        }
        let mut buf = BytesMut::new();
        let interrupted = |host: &str, detail: String| StoreError::BodyInterrupted {
            host: host.to_string(),
            detail,
        };
        loop {
            let chunk = tokio::select! {
                c = tokio::time::timeout(IDLE_TIMEOUT, self.inner.chunk()) => c,
                _ = self.cancel.cancelled() => return Err(StoreError::Canceled),
            };
            let chunk = chunk
                .map_err(|_| interrupted(&self.host, "timed out reading the response".into()))?
                .map_err(|e| interrupted(&self.host, error_chain(&e.without_url())))?;
            let Some(chunk) = chunk else { break };
            if buf.len() + chunk.len() > limit {
                return Err(StoreError::SizeExceeded {
                    expected: limit as u64,
                });
            }
            self.permit.read(chunk.len() as u64);
            buf.extend_from_slice(&chunk);
        }
        drop(self.permit);
        Ok(buf.freeze())
    }

    /// The body as a stream of chunks; the gate permit lives inside it, so the request slot
    /// stays taken while the body is being read (blob downloads). Once the run is cancelled
    /// the stream ends with `StoreError::Canceled`.
    pub fn into_stream(self) -> BlobStream {
        let Response {
            inner,
            permit,
            host,
            cancel,
        } = self;
        let body = inner.bytes_stream().boxed();
        // Ends after the cancellation's error, or with the body; the permit is dropped then.
        let state = Some((body, permit, host, cancel));
        futures::stream::unfold(state, |state| async move {
            let (mut body, permit, host, cancel) = state?;
            tokio::select! {
                biased;
                _ = cancel.cancelled() => Some((Err(StoreError::Canceled), None)),
                item = body.next() => {
                    let item = item?.map_err(|e| network_error(&host, e));
                    if let Ok(chunk) = &item {
                        permit.read(chunk.len() as u64);
                    }
                    Some((item, Some((body, permit, host, cancel))))
                }
            }
        })
        .boxed()
    }

    /// The error this (non-accepted) response stands for.
    pub async fn into_error(self) -> StoreError {
        let status = self.status();
        let retry_after = retry_after(self.headers()).map(|d| d.as_secs());
        // A body we cannot read only loses the error code, not the status.
        let body = self.bytes(ERROR_BODY_LIMIT).await.unwrap_or_default();
        status_error(status, &body, retry_after)
    }
}

/// Map a non-accepted status to its error (spec §7.3), with the registry error code from a
/// `{"errors":[{"code":...}]}` body when there is one.
pub(crate) fn status_error(status: u16, body: &[u8], retry_after: Option<u64>) -> StoreError {
    let code = registry_error_code(body);
    match status {
        401 | 403 => StoreError::Unauthorized {
            status,
            detail: code,
        },
        404 => StoreError::NotFound(code),
        429 => StoreError::RateLimited { retry_after },
        _ => {
            let reason = StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("");
            let mut text = format!("{status} {reason}").trim_end().to_string();
            if let Some(code) = code {
                text = format!("{text}: {code}");
            }
            StoreError::HttpStatus { status, text }
        }
    }
}

fn registry_error_code(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let code = v.get("errors")?.get(0)?.get("code")?.as_str()?;
    Some(code.to_string()).filter(|c| !c.is_empty())
}

pub(super) fn network_error(host: &str, e: reqwest::Error) -> StoreError {
    StoreError::Network {
        host: host.to_string(),
        detail: error_chain(&e.without_url()),
    }
}

/// An error and its causes on one line. URLs are stripped by the callers (`without_url`):
/// upload URLs carry session state.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text = format!("{text}: {s_text}");
        }
        source = s.source();
    }
    text
}

/// `host[:port]` of a URL, for error messages.
pub(super) fn authority(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    }
}

/// [`loggable`] formatted only when a log line is written: a `trace!`/`debug!` per request
/// that the level filters out costs no URL copy.
pub(crate) struct LoggableUrl<'a>(pub &'a Url);

impl std::fmt::Display for LoggableUrl<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&loggable(self.0))
    }
}

/// A URL fit for logs: no userinfo, and query values only for parameters we set ourselves
/// (upload `Location`s carry opaque session state, token URLs the account).
pub(crate) fn loggable(url: &Url) -> String {
    const SHOWN: [&str; 8] = [
        "digest", "mount", "from", "last", "n", "ns", "tag", "service",
    ];
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    if u.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if SHOWN.contains(&k.as_ref()) {
                    v.into_owned()
                } else {
                    "redacted".to_string()
                };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}
