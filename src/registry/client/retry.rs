//! One request through the gate with its retries (spec §7.3): network errors and 408/429/5xx
//! are tried again after this request's own backoff; whether the host is unwell is the gate's
//! call, from the [`HostEvent`]s every attempt reports.

use super::super::tls;
use super::super::{
    backoff, retry_after, Exchange, HostEvent, RequestKind, BACKOFF_MAX, RETRY_STATUSES,
};
use super::body::Body;
use super::host::Host;
use super::response::{authority, error_chain, network_error, LoggableUrl, Response};
use super::Client;
use crate::store::StoreError;
use reqwest::header::HeaderMap;
use reqwest::Method;
use slog::{debug, trace};
use url::Url;

/// Retries after the first attempt (spec §7.3: 6 attempts).
pub(crate) const MAX_RETRIES: u32 = 5;

impl Client {
    /// Run `attempt` again when a response body was cut off after its headers arrived: the
    /// request-level retries of `execute` end once the headers are in, and small bodies
    /// (manifests, listings, tokens) are re-requested whole. The wait between attempts ends
    /// with the run's cancellation.
    pub(crate) async fn retry_body<T, F, Fut>(&self, mut attempt: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let mut n = 0;
        loop {
            match attempt().await {
                Err(StoreError::BodyInterrupted { .. }) if n < MAX_RETRIES => {
                    tokio::select! {
                        _ = tokio::time::sleep(backoff(n)) => {}
                        _ = self.cancel.cancelled() => return Err(StoreError::Canceled),
                    }
                    n += 1;
                }
                other => return other,
            }
        }
    }

    /// One request with gate, observation and retries; any status is returned as is.
    /// `kind` is what the gate counts it as (token fetches enter here directly).
    pub async fn execute(
        &self,
        host: &Host,
        kind: RequestKind,
        method: &Method,
        url: &Url,
        headers: HeaderMap,
        body: &mut Body,
    ) -> Result<Response, StoreError> {
        self.execute_with(host, kind, method, url, headers, body, MAX_RETRIES, None)
            .await
    }

    /// [`Client::execute`] with at most `max_retries` retries, and an exchange already on
    /// its way given `answer_grace` after the cancellation ([`Request::answer_grace`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn execute_with(
        &self,
        host: &Host,
        kind: RequestKind,
        method: &Method,
        url: &Url,
        headers: HeaderMap,
        body: &mut Body,
        max_retries: u32,
        answer_grace: Option<std::time::Duration>,
    ) -> Result<Response, StoreError> {
        let authority = authority(url);
        let mut attempt = 0;
        loop {
            let bounded = body.is_small();
            let (reqwest_body, watch) = body.for_attempt();
            let mut builder = host
                .http
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            if let Some(b) = reqwest_body {
                builder = builder.body(b);
            }
            let permit = self
                .gate
                .acquire(&host.config, &self.cancel)
                .await
                .ok_or(StoreError::Canceled)?;
            // A slot granted as the cancellation fired: nothing is sent after it.
            if self.cancel.is_cancelled() {
                return Err(StoreError::Canceled);
            }
            trace!(self.log, "registry request";
                "method" => %method, "url" => %LoggableUrl(url), "attempt" => attempt);
            let exchange = async {
                match &watch {
                    Some(w) => {
                        // A streamed body: bounded by progress, not as a whole.
                        tokio::select! {
                            r = builder.send() => r.map_err(Some),
                            _ = w.progress.stalled(self.idle_timeout) => Err(None),
                        }
                    }
                    None if bounded => {
                        match tokio::time::timeout(self.idle_timeout, builder.send()).await {
                            Ok(r) => r.map_err(Some),
                            Err(_) => Err(None),
                        }
                    }
                    None => builder.send().await.map_err(Some),
                }
            };
            tokio::pin!(exchange);
            let sent_at = std::time::Instant::now();
            // The exchange is polled first: a cancellation that fires from now on finds the
            // request on its way (`answer_grace`), never about to be sent for the first time.
            let sent = tokio::select! {
                biased;
                r = &mut exchange => r,
                _ = self.cancel.cancelled() => match answer_grace {
                    Some(grace) => tokio::time::timeout(grace, &mut exchange)
                        .await
                        .map_err(|_| StoreError::Canceled)?,
                    None => return Err(StoreError::Canceled),
                },
            };
            let seen = Exchange {
                method,
                kind,
                elapsed: sent_at.elapsed(),
                attempt,
            };
            // What went out (a streamed body counts what the HTTP client took of it).
            permit.written(match (&watch, &*body) {
                (Some(w), _) => w.progress.bytes(),
                (None, Body::Bytes(b)) => b.len() as u64,
                (None, _) => 0,
            });
            let replayable = body.replayable();
            // A source that failed mid-upload is the real story, whatever the server said.
            let source_error = watch.as_ref().and_then(|w| w.error.lock().unwrap().take());
            let (reason, delay) = match sent {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    self.gate.observe(
                        &host.config,
                        HostEvent::Answered {
                            status,
                            headers: resp.headers(),
                            exchange: seen,
                        },
                    );
                    self.log_warnings(resp.headers());
                    debug!(self.log, "registry response";
                        "method" => %method, "url" => %LoggableUrl(url), "status" => status);
                    if let Some(err) = source_error {
                        return Err(err);
                    }
                    let resp = Response {
                        inner: resp,
                        permit,
                        host: authority.clone(),
                        cancel: self.cancel.clone(),
                    };
                    if !RETRY_STATUSES.contains(&status) {
                        return Ok(resp);
                    }
                    let delay = match retry_after(resp.headers()) {
                        // Longer waits (hub rate limits) are not spent inside one request:
                        // the gate pauses the host, the caller decides.
                        Some(d) if d > BACKOFF_MAX => return Ok(resp),
                        Some(d) => d.max(backoff(attempt)),
                        None => backoff(attempt),
                    };
                    if !replayable || attempt >= max_retries {
                        return Ok(resp);
                    }
                    (format!("http {status}"), delay)
                }
                Err(e) => {
                    drop(permit);
                    let err = match (source_error, e) {
                        (Some(err), _) => return Err(err),
                        (None, Some(e)) => {
                            if e.is_builder() || e.is_redirect() {
                                return Err(StoreError::Invalid(error_chain(&e.without_url())));
                            }
                            let mut err = network_error(&authority, e);
                            if let StoreError::Network { detail, .. } = &mut err {
                                if let Some(hint) = tls::hint(detail, url, &host.config) {
                                    detail.push_str(&format!(" ({hint})"));
                                }
                            }
                            err
                        }
                        (None, None) => StoreError::Network {
                            host: authority.clone(),
                            detail: match &watch {
                                Some(w) if !w.progress.finished() => {
                                    "timed out sending the request body".into()
                                }
                                _ => "timed out waiting for the response".into(),
                            },
                        },
                    };
                    if tls::is_permanent(&err) {
                        return Err(err);
                    }
                    self.gate
                        .observe(&host.config, HostEvent::Unreachable { exchange: seen });
                    if !replayable || attempt >= max_retries {
                        return Err(err);
                    }
                    (err.to_string(), backoff(attempt))
                }
            };
            debug!(self.log, "retrying registry request";
                "method" => %method, "url" => %LoggableUrl(url), "reason" => reason,
                "delay_ms" => delay.as_millis() as u64, "attempt" => attempt + 1);
            // This request's own backoff; a pause of the whole host is waited for in the gate.
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.cancel.cancelled() => return Err(StoreError::Canceled),
            }
            attempt += 1;
        }
    }
}
