//! RegistryThrottler: one actor per registry host, the single owner of that host's
//! `reqConcurrent` permits and `reqPerSec` pacing. Every HTTP request the registry layer sends
//! (token fetches and retries included) waits here first, through [`ThrottleGate`].

use super::messages::AcquireSlot;
use crate::registry::{HostConfig, Permit, RequestGate};
use actix::{Actor, Addr, ArbiterHandle, Context, Handler, ResponseFuture};
use async_trait::async_trait;
use dashmap::DashMap;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

pub struct RegistryThrottler {
    slots: Arc<Semaphore>,
    pacing: Option<Arc<DefaultDirectRateLimiter>>,
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
        }
    }
}

impl Actor for RegistryThrottler {
    type Context = Context<Self>;
}

impl Handler<AcquireSlot> for RegistryThrottler {
    type Result = ResponseFuture<Permit>;

    fn handle(&mut self, _msg: AcquireSlot, _ctx: &mut Context<Self>) -> Self::Result {
        let slots = self.slots.clone();
        let pacing = self.pacing.clone();
        Box::pin(async move {
            // The semaphore is never closed, so acquiring cannot fail.
            let permit = slots.acquire_owned().await.ok();
            if let Some(p) = pacing {
                p.until_ready().await;
            }
            Box::new(permit) as Permit
        })
    }
}

/// The registry layer's [`RequestGate`], backed by one [`RegistryThrottler`] per hostname,
/// started on first use.
pub struct ThrottleGate {
    arbiter: ArbiterHandle,
    throttlers: DashMap<String, Addr<RegistryThrottler>>,
    log: slog::Logger,
}

impl ThrottleGate {
    /// Must be called inside a running actix System (throttlers live on its arbiter).
    pub fn new(log: slog::Logger) -> Self {
        ThrottleGate {
            arbiter: actix::Arbiter::current(),
            throttlers: DashMap::new(),
            log,
        }
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
}
