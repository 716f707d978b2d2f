//! RateLimitWatcher: Docker Hub's pull budget (spec §5.6).
//!
//! * Every response passes [`ThrottleGate::observe`](super::throttler::ThrottleGate); the ones
//!   carrying `RateLimit-Limit`/`RateLimit-Remaining` (Docker Hub: `100;w=21600`) are
//!   forwarded here. The latest numbers are kept per registry hostname. The identity is
//!   implied: one run talks to one hostname with one set of credentials (aliases of one
//!   hostname share its numbers, as they share its request slots).
//! * 429 / `Retry-After` are not this actor's: the host's RegistryThrottler pauses the host.
//! * The ManifestResolver asks before pulling an image with `ratelimit.min > 0` ([`MayPull`]):
//!   go, or wait `ratelimit.retry` (released `parallel` slot) and check again. The watcher
//!   logs `Delaying for rate limit` and `Rate limit passed`.
//!
//! Regsync quirk 26 (spec §16) is deliberately not replicated: when a refreshing HEAD carries no
//! parseable `RateLimit-Remaining`, regsync counts it as 0 and delays forever (until the header
//! comes back). Here the registry has stopped reporting a limit (an upgraded account, a mirror
//! answering, a proxy stripping headers), so the pull goes ahead ([`PullVerdict::Unreported`],
//! logged at debug); should the registry still be limiting, its 429s pause the host instead.
//!
//! Tests only: `REGSYNC_TEST_MIN_RATELIMIT_RETRY` (a Go duration) caps the rate-limit sleep,
//! which the config never lets go below 5m (spec §3.6). It is read here and nowhere else.

use super::messages::{
    MayPull, PullVerdict, RateLimitHeaders, RateLimitNumbers, RateLimitQuery, RateLimitSnapshot,
    ResponseObserved,
};
use crate::gocompat::duration::{format_duration, parse_duration, GoDuration};
use actix::{Actor, Context, Handler, MessageResult};
use reqwest::header::HeaderMap;
use std::collections::HashMap;
use std::time::Duration;

/// Env var (tests only) capping the rate-limit sleep; see the module docs.
pub const TEST_RETRY_ENV: &str = "REGSYNC_TEST_MIN_RATELIMIT_RETRY";

/// `ratelimit.retry` when a step somehow has none (the config merge guarantees ≥ 5m).
const DEFAULT_RETRY: Duration = Duration::from_secs(300);

#[derive(Default)]
struct HostState {
    /// Bumped for every forwarded response with a parseable `RateLimit-Remaining`.
    seq: u64,
    /// Latest numbers, with the `seq` they were seen at.
    latest: Option<(u64, RateLimitNumbers)>,
}

pub struct RateLimitWatcher {
    hosts: HashMap<String, HostState>,
    log: slog::Logger,
    retry_cap: Option<Duration>,
}

impl RateLimitWatcher {
    pub fn new(log: slog::Logger) -> Self {
        let retry_cap = std::env::var(TEST_RETRY_ENV)
            .ok()
            .and_then(|v| parse_duration(v.trim()).ok())
            .and_then(GoDuration::to_std);
        RateLimitWatcher {
            hosts: HashMap::new(),
            log,
            retry_cap,
        }
    }

    fn state(&mut self, host: &str) -> &mut HostState {
        self.hosts.entry(host.to_string()).or_default()
    }

    fn sleep_for(&self, retry: Duration) -> Duration {
        let retry = if retry.is_zero() {
            DEFAULT_RETRY
        } else {
            retry
        };
        match self.retry_cap {
            Some(cap) => retry.min(cap),
            None => retry,
        }
    }
}

impl Actor for RateLimitWatcher {
    type Context = Context<Self>;
}

impl Handler<ResponseObserved> for RateLimitWatcher {
    type Result = ();

    fn handle(&mut self, msg: ResponseObserved, _ctx: &mut Context<Self>) {
        if let RateLimitHeaders {
            limit,
            remaining: Some(remaining),
            ..
        } = msg.rate_limit
        {
            let st = self.state(&msg.host);
            st.seq += 1;
            st.latest = Some((st.seq, RateLimitNumbers { limit, remaining }));
        }
    }
}

impl Handler<RateLimitQuery> for RateLimitWatcher {
    type Result = MessageResult<RateLimitQuery>;

    fn handle(&mut self, msg: RateLimitQuery, _ctx: &mut Context<Self>) -> Self::Result {
        let st = self.state(&msg.host);
        let fresh = match (msg.since, st.latest) {
            (Some(since), Some((seq, n))) if seq > since => Some(n),
            _ => None,
        };
        MessageResult(RateLimitSnapshot { seq: st.seq, fresh })
    }
}

impl Handler<MayPull> for RateLimitWatcher {
    type Result = MessageResult<MayPull>;

    fn handle(&mut self, msg: MayPull, _ctx: &mut Context<Self>) -> Self::Result {
        let sleep = self.sleep_for(msg.retry);
        let st = self.state(&msg.host);
        let seq = st.seq;
        let fresh = match st.latest {
            Some((at, n)) if at > msg.since => Some(n),
            _ => None,
        };
        let verdict = match fresh {
            None => {
                slog::debug!(self.log, "Rate limit no longer reported, continuing";
                    "source" => &msg.source, "step-min" => msg.min);
                PullVerdict::Unreported
            }
            Some(n) if n.remaining < msg.min => {
                slog::info!(self.log, "Delaying for rate limit";
                    "source" => &msg.source, "source-remain" => n.remaining,
                    "source-limit" => n.limit, "step-min" => msg.min,
                    "sleep" => format_duration(GoDuration::from_std(sleep)));
                PullVerdict::Wait(sleep)
            }
            Some(n) => {
                slog::debug!(self.log, "Rate limit passed";
                    "source" => &msg.source, "source-remain" => n.remaining,
                    "step-min" => msg.min);
                PullVerdict::Go
            }
        };
        MessageResult((verdict, seq))
    }
}

/// `RateLimit-*` headers as regclient reads them (spec §5.6); `None` when neither
/// `RateLimit-Limit` nor `RateLimit-Remaining` is present.
pub fn parse_headers(headers: &HeaderMap) -> Option<RateLimitHeaders> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let limit_text = text("ratelimit-limit");
    let remaining_text = text("ratelimit-remaining");
    if limit_text.is_none() && remaining_text.is_none() {
        return None;
    }
    let mut out = RateLimitHeaders::default();
    if let Some(l) = limit_text {
        let first = l.split(',').next().unwrap_or("");
        let mut parts = first.split(';');
        out.limit = parts
            .next()
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        out.policies = parts
            .map(|p| p.trim().to_string())
            .chain(l.split(',').skip(1).map(|p| p.trim().to_string()))
            .filter(|p| !p.is_empty())
            .collect();
    }
    out.remaining = remaining_text.and_then(|r| r.split(';').next()?.trim().parse().ok());
    out.reset = text("ratelimit-reset").and_then(|r| r.trim().parse().ok());
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix::Actor;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn parses_docker_hub_headers() {
        let h = headers(&[
            ("ratelimit-limit", "100;w=21600"),
            ("ratelimit-remaining", "76;w=21600"),
        ]);
        let p = parse_headers(&h).unwrap();
        assert_eq!(p.limit, 100);
        assert_eq!(p.remaining, Some(76));
        assert_eq!(p.policies, vec!["w=21600".to_string()]);
        assert_eq!(p.reset, None);
    }

    #[test]
    fn parses_odd_headers_like_regclient() {
        // Several policies: the limit is the first element's number.
        let p = parse_headers(&headers(&[
            ("ratelimit-limit", "100;w=21600, 10;w=60"),
            ("ratelimit-remaining", "9"),
            ("ratelimit-reset", "30"),
        ]))
        .unwrap();
        assert_eq!((p.limit, p.remaining, p.reset), (100, Some(9), Some(30)));
        assert_eq!(p.policies, vec!["w=21600", "10;w=60"]);
        // Unparsable limit → 0; unparsable remaining → not set.
        let p = parse_headers(&headers(&[
            ("ratelimit-limit", "lots"),
            ("ratelimit-remaining", "some;w=1"),
        ]))
        .unwrap();
        assert_eq!((p.limit, p.remaining), (0, None));
        // Only remaining.
        let p = parse_headers(&headers(&[("ratelimit-remaining", "0;w=60")])).unwrap();
        assert_eq!((p.limit, p.remaining), (0, Some(0)));
        assert!(parse_headers(&headers(&[("content-type", "x")])).is_none());
    }

    fn log() -> slog::Logger {
        slog::Logger::root(slog::Discard, slog::o!())
    }

    fn observed(remaining: Option<i64>) -> ResponseObserved {
        ResponseObserved {
            host: "hub".into(),
            rate_limit: RateLimitHeaders {
                limit: 10,
                remaining,
                ..Default::default()
            },
        }
    }

    #[actix::test]
    async fn verdicts_follow_spec_5_6() {
        let w = RateLimitWatcher::new(log()).start();
        let q = |since| RateLimitQuery {
            host: "hub".into(),
            since,
        };
        let may = |since| MayPull {
            host: "hub".into(),
            since,
            source: "hub/r:t".into(),
            min: 3,
            retry: Duration::from_secs(300),
        };
        let mark = w.send(q(None)).await.unwrap();
        assert_eq!(
            mark,
            RateLimitSnapshot {
                seq: 0,
                fresh: None
            }
        );
        // Nothing seen since the mark: not active / unreported.
        assert_eq!(w.send(q(Some(0))).await.unwrap().fresh, None);
        assert_eq!(w.send(may(0)).await.unwrap(), (PullVerdict::Unreported, 0));
        w.do_send(observed(Some(5)));
        let s = w.send(q(Some(0))).await.unwrap();
        assert_eq!(s.seq, 1);
        assert_eq!(
            s.fresh,
            Some(RateLimitNumbers {
                limit: 10,
                remaining: 5
            })
        );
        assert_eq!(w.send(may(0)).await.unwrap(), (PullVerdict::Go, 1));
        // remaining == min still passes (spec: delay while remaining < min).
        w.do_send(observed(Some(3)));
        assert_eq!(w.send(may(1)).await.unwrap(), (PullVerdict::Go, 2));
        w.do_send(observed(Some(2)));
        let (v, seq) = w.send(may(2)).await.unwrap();
        assert_eq!((v, seq), (PullVerdict::Wait(Duration::from_secs(300)), 3));
        // A refresh without the header (quirk 26, not replicated): go on.
        w.do_send(observed(None));
        assert_eq!(w.send(may(3)).await.unwrap(), (PullVerdict::Unreported, 3));
    }

    #[test]
    fn sleep_is_retry_capped_only_by_the_test_variable() {
        let mut w = RateLimitWatcher::new(log());
        w.retry_cap = None;
        assert_eq!(
            w.sleep_for(Duration::from_secs(600)),
            Duration::from_secs(600)
        );
        assert_eq!(w.sleep_for(Duration::ZERO), DEFAULT_RETRY);
        w.retry_cap = Some(Duration::from_millis(200));
        assert_eq!(
            w.sleep_for(Duration::from_secs(600)),
            Duration::from_millis(200)
        );
    }
}
