//! RegistryThrottler: one actor per registry host, the single owner of that host's
//! `reqConcurrent` permits, `reqPerSec` pacing, and pauses the registry asked for (HTTP 429 /
//! `Retry-After`, decided by the RateLimitWatcher). Every HTTP request the registry layer sends
//! (token fetches and retries included) waits here first, through [`ThrottleGate`], and every
//! response passes [`ThrottleGate::observe`] on its way to the watcher.

use super::messages::{AcquireSlot, PauseHost, ResponseObserved};
use super::rate_limit_watcher::{self, RateLimitWatcher};
use crate::registry::{HostConfig, Permit, RequestGate};
use actix::{Actor, Addr, ArbiterHandle, Context, Handler, ResponseFuture};
use async_trait::async_trait;
use dashmap::DashMap;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::HeaderMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

pub struct RegistryThrottler {
    slots: Arc<Semaphore>,
    pacing: Option<Arc<DefaultDirectRateLimiter>>,
    /// No slot is granted before this instant (a registry-requested pause).
    paused_until: Arc<Mutex<Option<Instant>>>,
}

impl RegistryThrottler {
    pub fn new(host: &HostConfig) -> Self {
        // reqPerSec is a minimum spacing between requests (spec §7.3): no bursts. Absurd
        // values (inf, 1e12, 1e-30) are clamped rather than allowed to panic.
        let pacing = (host.req_per_sec > 0.0 && host.req_per_sec.is_finite())
            .then(|| {
                let secs = (1.0 / host.req_per_sec).clamp(1e-9, 86_400.0);
                Quota::with_period(Duration::from_secs_f64(secs))
            })
            .flatten()
            .map(|q| Arc::new(RateLimiter::direct(q.allow_burst(NonZeroU32::MIN))));
        RegistryThrottler {
            slots: Arc::new(Semaphore::new(host.concurrency())),
            pacing,
            paused_until: Arc::new(Mutex::new(None)),
        }
    }
}

/// The end of the current pause, if one is running.
fn pause_end(paused: &Mutex<Option<Instant>>) -> Option<Instant> {
    paused
        .lock()
        .unwrap()
        .filter(|until| *until > Instant::now())
}

impl Actor for RegistryThrottler {
    type Context = Context<Self>;
}

impl Handler<AcquireSlot> for RegistryThrottler {
    type Result = ResponseFuture<Permit>;

    fn handle(&mut self, _msg: AcquireSlot, _ctx: &mut Context<Self>) -> Self::Result {
        let slots = self.slots.clone();
        let pacing = self.pacing.clone();
        let paused = self.paused_until.clone();
        Box::pin(async move {
            loop {
                if let Some(until) = pause_end(&paused) {
                    tokio::time::sleep_until(until.into()).await;
                    continue;
                }
                // The semaphore is never closed, so acquiring cannot fail.
                let permit = slots.clone().acquire_owned().await.ok();
                // A pause may have begun while we queued: give the slot back and wait it out.
                if pause_end(&paused).is_some() {
                    drop(permit);
                    continue;
                }
                if let Some(p) = &pacing {
                    p.until_ready().await;
                }
                return Box::new(permit) as Permit;
            }
        })
    }
}

impl Handler<PauseHost> for RegistryThrottler {
    type Result = ();

    fn handle(&mut self, msg: PauseHost, _ctx: &mut Context<Self>) {
        let mut paused = self.paused_until.lock().unwrap();
        if paused.is_none_or(|u| u < msg.until) {
            *paused = Some(msg.until);
        }
    }
}

/// The registry layer's [`RequestGate`], backed by one [`RegistryThrottler`] per hostname,
/// started on first use, and forwarding rate-limit signals to the [`RateLimitWatcher`].
pub struct ThrottleGate {
    arbiter: ArbiterHandle,
    throttlers: DashMap<String, Addr<RegistryThrottler>>,
    watcher: Option<Addr<RateLimitWatcher>>,
    log: slog::Logger,
}

impl ThrottleGate {
    /// Must be called inside a running actix System (throttlers live on its arbiter).
    pub fn new(log: slog::Logger) -> Self {
        ThrottleGate {
            arbiter: actix::Arbiter::current(),
            throttlers: DashMap::new(),
            watcher: None,
            log,
        }
    }

    /// Forward rate-limit headers, 429s and `Retry-After`s to `watcher`.
    pub fn with_watcher(mut self, watcher: Addr<RateLimitWatcher>) -> Self {
        self.watcher = Some(watcher);
        self
    }

    fn throttler(&self, host: &HostConfig) -> Addr<RegistryThrottler> {
        self.throttlers
            .entry(host.hostname.clone())
            .or_insert_with(|| {
                slog::debug!(self.log, "Starting registry throttler";
                    "host" => &host.hostname, "reqConcurrent" => host.concurrency(),
                    "reqPerSec" => host.req_per_sec);
                let h = host.clone();
                RegistryThrottler::start_in_arbiter(&self.arbiter, move |_| {
                    RegistryThrottler::new(&h)
                })
            })
            .clone()
    }
}

#[async_trait]
impl RequestGate for ThrottleGate {
    async fn acquire(&self, host: &HostConfig) -> Permit {
        let addr = self.throttler(host);
        match addr.send(AcquireSlot { host: host.clone() }).await {
            Ok(permit) => permit,
            // Only when the System is shutting down; let the request fail on its own.
            Err(_) => Box::new(()),
        }
    }

    /// Cheap for ordinary responses: only rate-limit headers, a 429, or a 503 with
    /// `Retry-After` reach the watcher (in order, before the response reaches its caller).
    fn observe(&self, host: &HostConfig, status: u16, headers: &HeaderMap) {
        let Some(watcher) = &self.watcher else {
            return;
        };
        let rate_limit = rate_limit_watcher::parse_headers(headers);
        // Only "slow down" answers pause a host; a Retry-After on a 404 or a token error must
        // not freeze every request to it.
        let retry_after = if status == 429 || status == 503 {
            rate_limit_watcher::retry_after(headers)
        } else {
            None
        };
        if rate_limit.is_none() && retry_after.is_none() && status != 429 {
            return;
        }
        watcher.do_send(ResponseObserved {
            host: host.hostname.clone(),
            status,
            rate_limit,
            retry_after,
            throttler: self.throttler(host).recipient(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(concurrent: i64) -> HostConfig {
        let mut h = HostConfig::for_name("127.0.0.1:1");
        h.req_concurrent = concurrent;
        h
    }

    #[actix::test]
    async fn a_pause_holds_every_slot_until_it_ends() {
        let t = RegistryThrottler::new(&host(2)).start();
        let p = t.send(AcquireSlot { host: host(2) }).await.unwrap();
        drop(p);
        let start = Instant::now();
        t.send(PauseHost {
            until: start + Duration::from_millis(300),
        })
        .await
        .unwrap();
        // A shorter pause never shortens the current one.
        t.send(PauseHost {
            until: start + Duration::from_millis(10),
        })
        .await
        .unwrap();
        let (a, b) = tokio::join!(
            t.send(AcquireSlot { host: host(2) }),
            t.send(AcquireSlot { host: host(2) })
        );
        let waited = start.elapsed();
        assert!(a.is_ok() && b.is_ok());
        assert!(waited >= Duration::from_millis(290), "{waited:?}");
        assert!(waited < Duration::from_secs(3), "{waited:?}");
    }

    #[actix::test]
    async fn a_pause_starting_while_queued_is_honoured() {
        let t = RegistryThrottler::new(&host(1)).start();
        let held = t.send(AcquireSlot { host: host(1) }).await.unwrap();
        let waiter = t.send(AcquireSlot { host: host(1) });
        let waiter = tokio::spawn(async move {
            waiter.await.unwrap();
            Instant::now()
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let until = Instant::now() + Duration::from_millis(250);
        t.send(PauseHost { until }).await.unwrap();
        drop(held);
        let granted = waiter.await.unwrap();
        assert!(granted >= until, "slot granted during the pause");
    }
}
