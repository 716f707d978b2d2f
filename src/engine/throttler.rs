//! RegistryThrottler: one actor per registry host, the single owner of everything about how
//! hard that host is hit: its `reqConcurrent` permits, `reqPerSec` pacing, the pauses the
//! registry asks for (HTTP 429 / `Retry-After`), and the host's backoff when it fails across
//! distinct requests (spec §7.3). Every HTTP request the registry layer sends (token fetches and
//! retries included) waits here first, through [`ThrottleGate`], and what became of it comes
//! back through [`ThrottleGate::observe`].
//!
//! Host or object: the registry layer backs off the retries of one failing request on that
//! request, and tells the gate which send of its request each answer belongs to. Only the
//! first failure of a request counts against the host, so one broken blob answering 500 to
//! every GET fails its own copy in seconds without holding back every other request to the
//! host; a host failing request after request is paused, 100 ms doubling per failure up to
//! 30 s. A 429 always counts (the registry is limiting the account, not refusing an object).
//! Rate-limit headers go on to the [`RateLimitWatcher`] (Docker Hub's pull budget).

use super::host_stats::{HostStats, HostStatsTable, RequestKey};
use super::messages::{
    AcquireSelfStream, AcquireSlot, HostObserved, HostPausedUntil, ResponseObserved,
};
use super::rate_limit_watcher::{self, RateLimitWatcher};
use crate::gocompat::duration::{format_duration, GoDuration};
use crate::registry::{
    backoff, retry_after, HostConfig, HostEvent, Permit, RequestGate, RequestKind, TransferMeter,
    BACKOFF_MAX, RETRY_STATUSES,
};
use actix::{Actor, Addr, ArbiterHandle, Context, Handler, MessageResult, ResponseFuture};
use async_trait::async_trait;
use dashmap::DashMap;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// The longest pause honoured (a bogus `Retry-After` must not overflow an `Instant`).
const PAUSE_MAX: Duration = Duration::from_secs(6 * 3600);

pub struct RegistryThrottler {
    hostname: String,
    limits: Arc<HostLimits>,
    /// A blob stream from this host into itself needs two of its slots; one such stream at a
    /// time keeps every slot from being held by uploads waiting for their downloads, and its
    /// turn lends the host the second slot ([`SelfStreamTurn`]).
    self_streams: Arc<Semaphore>,
    log: slog::Logger,
}

/// A host's request slots as its throttler set them up: `reqConcurrent` permits, `reqPerSec`
/// pacing, and the health (pauses, backoff) only the throttler changes. A request takes its
/// slot on its own task through [`HostLimits::grant`] (no mailbox hop per request); what
/// became of it goes to the throttler, which decides about the host.
pub struct HostLimits {
    slots: Arc<Semaphore>,
    /// Slots lent to self-streams ([`SelfStreamTurn`]) that ended while every slot was busy:
    /// the next granted slots released are taken back instead of given to the next in line.
    owed: Arc<AtomicUsize>,
    pacing: Option<Arc<DefaultDirectRateLimiter>>,
    health: Arc<Mutex<HostHealth>>,
    /// Where its pauses and the waits they impose are counted.
    stats: Arc<HostStats>,
}

impl HostLimits {
    pub fn new(host: &HostConfig, stats: Arc<HostStats>) -> Self {
        // reqPerSec is a minimum spacing between requests (spec §7.3): no bursts. Absurd
        // values (inf, 1e12, 1e-30) are clamped rather than allowed to panic.
        let pacing = (host.req_per_sec > 0.0 && host.req_per_sec.is_finite())
            .then(|| {
                let secs = (1.0 / host.req_per_sec).clamp(1e-9, 86_400.0);
                Quota::with_period(Duration::from_secs_f64(secs))
            })
            .flatten()
            .map(|q| Arc::new(RateLimiter::direct(q.allow_burst(NonZeroU32::MIN))));
        HostLimits {
            slots: Arc::new(Semaphore::new(host.concurrency())),
            owed: Default::default(),
            pacing,
            health: Arc::new(Mutex::new(HostHealth::default())),
            stats,
        }
    }

    /// A request slot: after any pause of the host, one of its permits, then its pacing;
    /// `None` once `cancel` fires (a pause may last hours: `Retry-After`).
    pub async fn grant(&self, cancel: &CancellationToken) -> Option<Permit> {
        let grant = async {
            loop {
                if let Some(until) = pause_end(&self.health) {
                    tokio::time::sleep_until(until.into()).await;
                    continue;
                }
                // The semaphore is never closed, so acquiring cannot fail.
                let permit = self.slots.clone().acquire_owned().await.ok();
                // A pause may have begun while we queued: give the slot back and wait it out.
                if pause_end(&self.health).is_some() {
                    drop(permit);
                    continue;
                }
                if let Some(p) = &self.pacing {
                    p.until_ready().await;
                }
                return Permit::new(GrantedSlot {
                    permit,
                    owed: self.owed.clone(),
                });
            }
        };
        tokio::select! {
            permit = grant => Some(permit),
            _ = cancel.cancelled() => None,
        }
    }

    /// One more slot while a self-stream's turn is held ([`SelfStreamTurn`]). A slot still
    /// owed by the last turn is lent again rather than taken back: taking it back while this
    /// turn runs would leave its stream one slot short.
    fn lend_slot(&self) {
        if !self.take_back_owed() {
            self.slots.add_permits(1);
        }
    }

    /// The lent slot back: now if one is free, else the next granted one released.
    fn take_back_slot(&self) {
        if self.slots.forget_permits(1) == 0 {
            self.owed.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Whether a lent slot was still owed (and is no longer).
    fn take_back_owed(&self) -> bool {
        pay_owed(&self.owed)
    }
}

/// One owed slot paid, if any was owed.
fn pay_owed(owed: &AtomicUsize) -> bool {
    owed.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// A granted request slot. Released while a lent slot is owed, it pays that slot back
/// rather than going to the request first in line, which keeps its place in the queue.
struct GrantedSlot {
    permit: Option<OwnedSemaphorePermit>,
    owed: Arc<AtomicUsize>,
}

impl Drop for GrantedSlot {
    fn drop(&mut self) {
        if let Some(p) = self.permit.take() {
            if pay_owed(&self.owed) {
                p.forget();
            }
        }
    }
}

/// Whether the host is unwell, from what became of the requests sent to it.
#[derive(Debug, Default)]
struct HostHealth {
    /// Distinct requests that failed in a row (each answer that is not a failure lowers it by
    /// one, so a host that just came back is not hammered at full speed at once).
    failures: u32,
    /// No slot is granted before this instant: the host's backoff or a registry-requested
    /// pause. A later pause extends, never shortens, the current one.
    paused_until: Option<Instant>,
    /// The current pause is one the registry asked for (429 / `Retry-After`): waiting it out
    /// is a rate-limit wait.
    requested: bool,
}

/// Why a host was paused (for the log).
#[derive(Debug, PartialEq, Eq)]
enum Pause {
    /// The registry said how long (`Retry-After`) or said "too many requests" (429).
    Requested(Duration),
    /// Distinct requests kept failing.
    Backoff(Duration),
}

impl HostHealth {
    /// The end of the current pause, if one is running.
    fn paused(&self, now: Instant) -> Option<Instant> {
        self.paused_until.filter(|until| *until > now)
    }

    fn pause(&mut self, until: Instant) {
        if self.paused_until.is_none_or(|u| u < until) {
            self.paused_until = Some(until);
        }
    }

    /// Account for one send of a request; returns the pause it starts, if any.
    fn record(&mut self, msg: &HostObserved, now: Instant) -> Option<Pause> {
        let failed = match msg.status {
            Some(status) => RETRY_STATUSES.contains(&status),
            None => true,
        };
        if !failed {
            self.failures = self.failures.saturating_sub(1);
            return None;
        }
        // Only "slow down" answers carry a pause worth honouring; a Retry-After on a 404 or a
        // token error must not freeze every request to the host.
        let asked = match msg.status {
            Some(429 | 503) => msg.retry_after,
            _ => None,
        };
        if let Some(d) = asked {
            let until = now + d.min(PAUSE_MAX);
            if self.paused_until.is_some_and(|u| u >= until) {
                return None;
            }
            self.pause(until);
            self.requested = true;
            return Some(Pause::Requested(d.min(PAUSE_MAX)));
        }
        // A retry of a request that already failed says nothing new about the host; a 429
        // always does.
        if msg.attempt > 0 && msg.status != Some(429) {
            return None;
        }
        // A failure answering a request sent before the current pause ended belongs to that
        // pause; only one arriving after it escalates the backoff.
        if self.paused(now).is_some() {
            return None;
        }
        // Quiet for a while since the last pause: start over.
        if self
            .paused_until
            .is_some_and(|until| now.duration_since(until) > BACKOFF_MAX)
        {
            self.failures = 0;
        }
        self.failures = (self.failures + 1).min(32);
        let d = backoff(self.failures - 1);
        self.pause(now + d);
        self.requested = msg.status == Some(429);
        Some(if msg.status == Some(429) {
            Pause::Requested(d)
        } else {
            Pause::Backoff(d)
        })
    }
}

impl RegistryThrottler {
    pub fn new(host: &HostConfig, limits: Arc<HostLimits>, log: slog::Logger) -> Self {
        RegistryThrottler {
            hostname: host.hostname.clone(),
            limits,
            self_streams: Arc::new(Semaphore::new(1)),
            log,
        }
    }
}

/// The end of the current pause, if one is running.
fn pause_end(health: &Mutex<HostHealth>) -> Option<Instant> {
    health.lock().unwrap().paused(Instant::now())
}

impl Actor for RegistryThrottler {
    type Context = Context<Self>;
}

impl Handler<AcquireSlot> for RegistryThrottler {
    type Result = ResponseFuture<Option<Permit>>;

    fn handle(&mut self, msg: AcquireSlot, _ctx: &mut Context<Self>) -> Self::Result {
        let limits = self.limits.clone();
        Box::pin(async move { limits.grant(&msg.cancel).await })
    }
}

impl Handler<AcquireSelfStream> for RegistryThrottler {
    type Result = ResponseFuture<Option<Permit>>;

    fn handle(&mut self, msg: AcquireSelfStream, _ctx: &mut Context<Self>) -> Self::Result {
        let turns = self.self_streams.clone();
        let limits = self.limits.clone();
        Box::pin(async move {
            let turn = tokio::select! {
                // Never closed: acquiring cannot fail.
                turn = turns.acquire_owned() => turn.ok(),
                _ = msg.cancel.cancelled() => return None,
            };
            Some(Permit::new(SelfStreamTurn::lend(turn, limits)))
        })
    }
}

/// The turn of the one stream from a host into itself that runs at a time. Its download and
/// its upload each hold one of the host's slots at once: the turn lends the host one more
/// slot while it is held (the pair counts as one request, as in regclient, which acquires
/// both ends of a blob copy at once), so with `reqConcurrent: 1` the stream does not wait for
/// a slot its own upload holds until the upload's idle timeout fails it.
struct SelfStreamTurn {
    _turn: Option<OwnedSemaphorePermit>,
    limits: Arc<HostLimits>,
}

impl SelfStreamTurn {
    fn lend(turn: Option<OwnedSemaphorePermit>, limits: Arc<HostLimits>) -> Self {
        limits.lend_slot();
        SelfStreamTurn {
            _turn: turn,
            limits,
        }
    }
}

impl Drop for SelfStreamTurn {
    fn drop(&mut self) {
        self.limits.take_back_slot();
    }
}

impl Handler<HostObserved> for RegistryThrottler {
    type Result = ();

    fn handle(&mut self, msg: HostObserved, _ctx: &mut Context<Self>) {
        let pause = self
            .limits
            .health
            .lock()
            .unwrap()
            .record(&msg, Instant::now());
        let status = msg.status.map(i64::from).unwrap_or(-1);
        if let Some(Pause::Requested(d) | Pause::Backoff(d)) = &pause {
            self.limits.stats.paused_until(SystemTime::now() + *d);
        }
        // A pause the registry asked for is one rate-limit wait of its length, however many
        // requests sit it out.
        if let Some(Pause::Requested(d)) = &pause {
            self.limits.stats.rate_limit_wait(*d);
        }
        match pause {
            Some(Pause::Requested(d)) => {
                slog::warn!(self.log, "Registry asked to back off, pausing requests";
                    "host" => &self.hostname, "status" => status,
                    "pause" => format_duration(GoDuration::from_std(d)))
            }
            Some(Pause::Backoff(d)) => {
                slog::debug!(self.log, "Registry failing, pausing requests";
                    "host" => &self.hostname, "status" => status,
                    "pause" => format_duration(GoDuration::from_std(d)))
            }
            None => {}
        }
    }
}

impl Handler<HostPausedUntil> for RegistryThrottler {
    type Result = MessageResult<HostPausedUntil>;

    fn handle(&mut self, _msg: HostPausedUntil, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(pause_end(&self.limits.health))
    }
}

/// How one blob stream takes its two request slots (a GET on the source host, a PUT on the
/// target host, held at once). Every stream takes them in the same global order, by hostname,
/// so copies running in both directions cannot deadlock: with `source_first` the GET starts
/// before the upload asks for its slot, otherwise the GET starts lazily inside the PUT. A
/// stream from a host into itself also holds that host's one self-stream turn while it runs.
pub struct StreamSlots {
    pub source_first: bool,
    _self_stream: Option<Permit>,
}

/// The registry layer's [`RequestGate`], backed by one [`RegistryThrottler`] per hostname,
/// started on first use, and forwarding rate-limit headers to the [`RateLimitWatcher`].
pub struct ThrottleGate {
    arbiter: ArbiterHandle,
    throttlers: DashMap<String, HostThrottle>,
    watcher: Option<Addr<RateLimitWatcher>>,
    /// What every host saw (requests, retries, pauses, bytes): this gate's and its
    /// throttlers' record, read by the endpoints and the report.
    stats: Arc<HostStatsTable>,
    log: slog::Logger,
}

/// One host's throttler, the limits it set up, and its stats.
#[derive(Clone)]
struct HostThrottle {
    addr: Addr<RegistryThrottler>,
    limits: Arc<HostLimits>,
    stats: Arc<HostStats>,
}

/// A granted request slot as the registry layer holds it: counted in flight until dropped,
/// and the meter its body bytes are counted on.
struct InFlight(Arc<HostStats>);

impl InFlight {
    fn new(stats: Arc<HostStats>) -> Self {
        stats.in_flight(1);
        InFlight(stats)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight(-1);
    }
}

impl TransferMeter for InFlight {
    fn read(&self, n: u64) {
        self.0.read(n);
    }
    fn written(&self, n: u64) {
        self.0.written(n);
    }
}

impl ThrottleGate {
    /// Must be called inside a running actix System (throttlers live on its arbiter).
    pub fn new(log: slog::Logger) -> Self {
        ThrottleGate {
            arbiter: actix::Arbiter::current(),
            throttlers: DashMap::new(),
            watcher: None,
            stats: Arc::default(),
            log,
        }
    }

    /// What every host saw so far.
    pub fn stats(&self) -> &HostStatsTable {
        &self.stats
    }

    /// Forward rate-limit headers to `watcher`.
    pub fn with_watcher(mut self, watcher: Addr<RateLimitWatcher>) -> Self {
        self.watcher = Some(watcher);
        self
    }

    /// The slot order for a blob stream from `sources` (every host the GET may be served by:
    /// the registry's mirrors and itself; empty for an OCI layout) to `target` (`None`: an OCI
    /// layout); `None` once `cancel` fires. The GET goes first only when every possible source
    /// host sorts before the target; when one of them is the target itself, the stream takes
    /// that host's self-stream turn (a mirror that is also the target of the copy).
    pub async fn stream_slots(
        &self,
        sources: &[HostConfig],
        target: Option<&HostConfig>,
        cancel: &CancellationToken,
    ) -> Option<StreamSlots> {
        let Some(t) = target.filter(|_| !sources.is_empty()) else {
            return Some(StreamSlots {
                source_first: false,
                _self_stream: None,
            });
        };
        if sources.iter().all(|s| s.hostname != t.hostname) {
            return Some(StreamSlots {
                source_first: sources.iter().all(|s| s.hostname < t.hostname),
                _self_stream: None,
            });
        }
        let turn = self
            .throttler(t)
            .send(AcquireSelfStream {
                cancel: cancel.clone(),
            })
            .await
            .ok()??;
        Some(StreamSlots {
            source_first: false,
            _self_stream: Some(turn),
        })
    }

    fn throttler(&self, host: &HostConfig) -> Addr<RegistryThrottler> {
        self.host(host).addr
    }

    /// The host's throttler and its limits, started on first use.
    fn host(&self, host: &HostConfig) -> HostThrottle {
        if let Some(t) = self.throttlers.get(&host.hostname) {
            return t.clone();
        }
        self.throttlers
            .entry(host.hostname.clone())
            .or_insert_with(|| {
                slog::debug!(self.log, "Starting registry throttler";
                    "host" => &host.hostname, "reqConcurrent" => host.concurrency(),
                    "reqPerSec" => host.req_per_sec);
                let stats = self.stats.host(&host.hostname);
                let limits = Arc::new(HostLimits::new(host, stats.clone()));
                let (h, l, log) = (host.clone(), limits.clone(), self.log.clone());
                let addr = RegistryThrottler::start_in_arbiter(&self.arbiter, move |_| {
                    RegistryThrottler::new(&h, l, log)
                });
                HostThrottle {
                    addr,
                    limits,
                    stats,
                }
            })
            .clone()
    }
}

#[async_trait]
impl RequestGate for ThrottleGate {
    /// The slot is taken on the caller's task, from the limits the host's throttler set up
    /// (a mailbox round trip per request cost a no-op check about a sixth of its slots).
    async fn acquire(&self, host: &HostConfig, cancel: &CancellationToken) -> Option<Permit> {
        let h = self.host(host);
        let permit = h.limits.grant(cancel).await?;
        Some(permit.metered(Arc::new(InFlight::new(h.stats))))
    }

    /// Every send reaches the host's throttler (in order, before the response reaches its
    /// caller); only responses with rate-limit headers reach the watcher.
    fn observe(&self, host: &HostConfig, event: HostEvent<'_>) {
        let msg = match event {
            HostEvent::Answered {
                status,
                headers,
                exchange,
            } => {
                let rate_limit = rate_limit_watcher::parse_headers(headers);
                let stats = self.stats.host(&host.hostname);
                stats.request(
                    RequestKey {
                        method: exchange.method.to_string(),
                        kind: exchange.kind,
                        code: Some(status),
                    },
                    exchange.elapsed,
                    exchange.attempt,
                );
                // Docker Hub reports its pull budget on manifest answers (and nothing on
                // blobs): a manifest answer without one means it is not reported any more.
                if exchange.kind == RequestKind::Manifest && status < 400 {
                    stats.rate_limit_remaining(rate_limit.as_ref().and_then(|r| r.remaining));
                }
                if let (Some(watcher), Some(rate_limit)) = (&self.watcher, rate_limit) {
                    watcher.do_send(ResponseObserved {
                        host: host.hostname.clone(),
                        rate_limit,
                    });
                }
                HostObserved {
                    status: Some(status),
                    retry_after: retry_after(headers),
                    attempt: exchange.attempt,
                }
            }
            HostEvent::Unreachable { exchange } => {
                self.stats.host(&host.hostname).request(
                    RequestKey {
                        method: exchange.method.to_string(),
                        kind: exchange.kind,
                        code: None,
                    },
                    exchange.elapsed,
                    exchange.attempt,
                );
                HostObserved {
                    status: None,
                    retry_after: None,
                    attempt: exchange.attempt,
                }
            }
        };
        self.throttler(host).do_send(msg);
    }

    async fn paused_until(&self, host: &HostConfig) -> Option<Instant> {
        self.throttler(host)
            .send(HostPausedUntil)
            .await
            .ok()
            .flatten()
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

    fn log() -> slog::Logger {
        slog::Logger::root(slog::Discard, slog::o!())
    }

    fn throttler(concurrent: i64) -> Addr<RegistryThrottler> {
        let h = host(concurrent);
        let limits = Arc::new(HostLimits::new(&h, Arc::default()));
        RegistryThrottler::new(&h, limits, log()).start()
    }

    fn slot() -> AcquireSlot {
        AcquireSlot {
            cancel: CancellationToken::new(),
        }
    }

    fn seen(status: Option<u16>, retry_after: Option<u64>, attempt: u32) -> HostObserved {
        HostObserved {
            status,
            retry_after: retry_after.map(Duration::from_secs),
            attempt,
        }
    }

    #[actix::test]
    async fn a_pause_holds_every_slot_until_it_ends() {
        let t = throttler(2);
        let p = t.send(slot()).await.unwrap();
        drop(p);
        let start = Instant::now();
        // A 429 asking for 1 s.
        t.send(seen(Some(429), Some(1), 0)).await.unwrap();
        // A shorter pause never shortens the current one.
        t.send(seen(Some(503), Some(0), 0)).await.unwrap();
        let (a, b) = tokio::join!(t.send(slot()), t.send(slot()));
        let waited = start.elapsed();
        assert!(a.unwrap().is_some() && b.unwrap().is_some());
        assert!(waited >= Duration::from_millis(990), "{waited:?}");
        assert!(waited < Duration::from_secs(4), "{waited:?}");
    }

    #[actix::test]
    async fn a_pause_starting_while_queued_is_honoured() {
        let t = throttler(1);
        let held = t.send(slot()).await.unwrap();
        let waiter = t.send(slot());
        let waiter = tokio::spawn(async move {
            waiter.await.unwrap();
            Instant::now()
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let until = Instant::now() + Duration::from_millis(1000);
        t.send(seen(Some(503), Some(1), 0)).await.unwrap();
        drop(held);
        let granted = waiter.await.unwrap();
        assert!(granted >= until, "slot granted during the pause");
    }

    #[test]
    fn retries_of_one_request_never_pause_the_host() {
        let mut h = HostHealth::default();
        let t0 = Instant::now();
        // One object answering 500 to its first send and each of its five retries: one
        // failure of the host, one 100 ms pause.
        assert_eq!(
            h.record(&seen(Some(500), None, 0), t0),
            Some(Pause::Backoff(Duration::from_millis(100)))
        );
        let mut t = t0;
        for attempt in 1..=5 {
            t += backoff(attempt - 1);
            assert_eq!(h.record(&seen(Some(500), None, attempt), t), None);
            assert_eq!(h.record(&seen(None, None, attempt), t), None);
        }
        assert_eq!(h.failures, 1);
        assert_eq!(h.paused(t), None);
    }

    #[test]
    fn a_host_failing_distinct_requests_is_paused_longer_each_time() {
        let mut h = HostHealth::default();
        let mut t = Instant::now();
        for expected in [100, 200, 400, 800] {
            let d = Duration::from_millis(expected);
            assert_eq!(
                h.record(&seen(Some(502), None, 0), t),
                Some(Pause::Backoff(d))
            );
            assert_eq!(h.paused(t), Some(t + d));
            // Other requests failing during the pause belong to it.
            assert_eq!(h.record(&seen(None, None, 0), t + d / 2), None);
            t += d + Duration::from_millis(1);
        }
        // Unreachable counts like a failing status; answers lower the count one by one.
        h.record(&seen(Some(200), None, 0), t);
        h.record(&seen(Some(404), None, 0), t);
        assert_eq!(
            h.record(&seen(None, None, 0), t),
            Some(Pause::Backoff(Duration::from_millis(400)))
        );
        // Long quiet: back to the start.
        let later = t + Duration::from_secs(60);
        assert_eq!(
            h.record(&seen(Some(500), None, 0), later),
            Some(Pause::Backoff(Duration::from_millis(100)))
        );
        for _ in 0..40 {
            let now = h.paused_until.unwrap();
            h.record(&seen(Some(500), None, 0), now);
        }
        let now = h.paused_until.unwrap();
        assert_eq!(
            h.record(&seen(Some(500), None, 0), now),
            Some(Pause::Backoff(BACKOFF_MAX))
        );
    }

    #[test]
    fn too_many_requests_pause_the_host_even_on_retries() {
        let mut h = HostHealth::default();
        let t0 = Instant::now();
        // Retry-After on a 429 or 503 sets the length, capped at 6 h; on other statuses it is
        // ignored.
        assert_eq!(
            h.record(&seen(Some(429), Some(2), 3), t0),
            Some(Pause::Requested(Duration::from_secs(2)))
        );
        assert_eq!(h.record(&seen(Some(503), Some(1), 0), t0), None);
        assert_eq!(
            h.record(&seen(Some(503), Some(1 << 40), 0), t0),
            Some(Pause::Requested(PAUSE_MAX))
        );
        let mut h = HostHealth::default();
        assert_eq!(h.record(&seen(Some(404), Some(60), 0), t0), None);
        assert_eq!(h.paused(t0), None);
        // A 429 without Retry-After escalates once per pause, also when it answers a retry.
        assert_eq!(
            h.record(&seen(Some(429), None, 2), t0),
            Some(Pause::Requested(Duration::from_millis(100)))
        );
        assert_eq!(
            h.record(&seen(Some(429), None, 2), t0 + Duration::from_millis(50)),
            None
        );
        assert_eq!(
            h.record(&seen(Some(429), None, 3), t0 + Duration::from_millis(150)),
            Some(Pause::Requested(Duration::from_millis(200)))
        );
    }

    #[actix::test]
    async fn a_cancelled_run_stops_waiting_out_a_long_pause() {
        let t = throttler(1);
        // The registry asked for six hours.
        t.send(seen(Some(429), Some(6 * 3600), 0)).await.unwrap();
        let cancel = CancellationToken::new();
        let waiter = t.send(AcquireSlot {
            cancel: cancel.clone(),
        });
        let started = Instant::now();
        let stop = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            stop.cancel();
        });
        let granted = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("still waiting for the pause after the cancellation")
            .unwrap();
        assert!(granted.is_none(), "a slot was granted during the pause");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[actix::test]
    async fn the_gate_pauses_a_host_whose_distinct_requests_fail() {
        let gate = ThrottleGate::new(log());
        let h = host(3);
        let headers = reqwest::header::HeaderMap::new();
        let answered = |status, attempt| HostEvent::Answered {
            status,
            headers: &headers,
            exchange: exchange(RequestKind::Blob, attempt),
        };
        // Every wait below is for a pause end read back from the throttler (`paused_until`
        // is a message: the throttler has handled every observe sent before it), never a
        // guess at how soon the throttler gets to an observe on a loaded machine.
        // A failing request pauses the host once; its retries do not extend the pause.
        gate.observe(&h, answered(500, 0));
        let once = gate.paused_until(&h).await.expect("paused");
        for attempt in 1..=5 {
            gate.observe(&h, answered(500, attempt));
        }
        assert_eq!(gate.paused_until(&h).await, Some(once));
        tokio::time::sleep_until((once + Duration::from_millis(10)).into()).await;
        assert_eq!(gate.paused_until(&h).await, None);
        // Distinct requests failing one after the other: the host is paused.
        gate.observe(&h, answered(500, 0));
        let first = gate.paused_until(&h).await.expect("paused");
        // After that pause, the next distinct failure pauses the host twice as long.
        tokio::time::sleep_until((first + Duration::from_millis(10)).into()).await;
        let t = Instant::now();
        gate.observe(
            &h,
            HostEvent::Unreachable {
                exchange: exchange(RequestKind::Blob, 0),
            },
        );
        let second = gate.paused_until(&h).await.expect("paused again");
        assert!(second >= t + Duration::from_millis(400), "{t:?} {second:?}");
        // A slot is granted once the pause is over, not before.
        let cancel = CancellationToken::new();
        assert!(gate.acquire(&h, &cancel).await.is_some());
        assert!(Instant::now() >= second);
    }

    fn exchange(kind: RequestKind, attempt: u32) -> crate::registry::Exchange<'static> {
        crate::registry::Exchange {
            method: &reqwest::Method::GET,
            kind,
            elapsed: Duration::from_millis(2),
            attempt,
        }
    }

    #[actix::test]
    async fn the_gate_counts_requests_retries_slots_bytes_and_rate_limit_waits() {
        let gate = ThrottleGate::new(log());
        let h = host(3);
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("ratelimit-remaining", "42;w=21600".parse().unwrap());
        headers.insert("ratelimit-limit", "100;w=21600".parse().unwrap());
        let cancel = CancellationToken::new();
        let permit = gate.acquire(&h, &cancel).await.expect("slot");
        permit.read(100);
        permit.written(7);
        let snap = || gate.stats().snapshot().remove(0);
        assert_eq!(snap().in_flight, 1);
        gate.observe(
            &h,
            HostEvent::Answered {
                status: 200,
                headers: &headers,
                exchange: exchange(RequestKind::Manifest, 0),
            },
        );
        drop(permit);
        let s = snap();
        assert_eq!(s.in_flight, 0);
        assert_eq!((s.bytes_read, s.bytes_written), (100, 7));
        assert_eq!(s.rate_limit_remaining, Some(42));
        assert_eq!(s.requests[0].0.kind, RequestKind::Manifest);
        assert_eq!(s.requests[0].1, 1);
        assert_eq!(s.retries, 0);
        // A 429 asking for a second's pause: the next slot waits it out, counted as a
        // rate-limit wait; its retry counts as one.
        let mut slow = reqwest::header::HeaderMap::new();
        slow.insert("retry-after", "1".parse().unwrap());
        gate.observe(
            &h,
            HostEvent::Answered {
                status: 429,
                headers: &slow,
                exchange: exchange(RequestKind::Manifest, 1),
            },
        );
        assert!(gate.paused_until(&h).await.is_some());
        assert!(snap().paused_until.is_some());
        // Two requests sit the pause out: still one rate-limit wait, of the pause's length.
        let (a, b) = tokio::join!(gate.acquire(&h, &cancel), gate.acquire(&h, &cancel));
        assert!(a.is_some() && b.is_some());
        let s = snap();
        assert_eq!(s.retries, 1);
        assert_eq!(s.rate_limit_waits, 1);
        assert!(
            s.rate_limit_wait_seconds < 1.5,
            "{}",
            s.rate_limit_wait_seconds
        );
        assert!(
            s.rate_limit_wait_seconds > 0.5,
            "{}",
            s.rate_limit_wait_seconds
        );
        assert_eq!(s.request_count(), 2);
        // A manifest answer without the header: the budget is no longer reported.
        gate.observe(
            &h,
            HostEvent::Answered {
                status: 200,
                headers: &reqwest::header::HeaderMap::new(),
                exchange: exchange(RequestKind::Manifest, 0),
            },
        );
        assert_eq!(snap().rate_limit_remaining, None);
    }

    /// A self-stream's turn lends its host one slot while held. Dropped while every slot is
    /// busy (a backlog of requests), the slot must still come back before the next turn
    /// lends another: with `reqConcurrent: 1` and one turn held, at most two requests run.
    #[actix::test]
    async fn a_lent_slot_comes_back_before_the_next_turn_lends_one() {
        let h = host(1);
        let limits = Arc::new(HostLimits::new(&h, Arc::default()));
        let t = RegistryThrottler::new(&h, limits.clone(), log()).start();
        let turn = || AcquireSelfStream {
            cancel: CancellationToken::new(),
        };
        let held = limits.grant(&CancellationToken::new()).await.unwrap();
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let l = limits.clone();
                tokio::spawn(async move { l.grant(&CancellationToken::new()).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let first = t.send(turn()).await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(waiters.iter().filter(|w| w.is_finished()).count(), 1);
        drop(first);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let second = t.send(turn()).await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let running = 1 + waiters.iter().filter(|w| w.is_finished()).count();
        assert!(
            running <= 2,
            "{running} requests hold a slot of a host with reqConcurrent 1 and one turn"
        );
        drop((held, second));
        for w in waiters {
            w.abort();
        }
    }

    /// A slot taken back after a self-stream's turn ended while every slot was busy comes
    /// from a request that ends, not from the request first in line, which keeps its place.
    #[actix::test]
    async fn taking_a_lent_slot_back_keeps_the_waiters_in_order() {
        let h = host(1);
        let limits = Arc::new(HostLimits::new(&h, Arc::default()));
        let t = RegistryThrottler::new(&h, limits.clone(), log()).start();
        let held = limits.grant(&CancellationToken::new()).await.unwrap();
        let turn = t
            .send(AcquireSelfStream {
                cancel: CancellationToken::new(),
            })
            .await
            .unwrap()
            .unwrap();
        let lent = limits.grant(&CancellationToken::new()).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for name in ["A", "B", "C"] {
            let (l, o) = (limits.clone(), order.clone());
            waiters.push(tokio::spawn(async move {
                let p = l.grant(&CancellationToken::new()).await.unwrap();
                o.lock().unwrap().push(name);
                tokio::time::sleep(Duration::from_millis(10)).await;
                drop(p);
            }));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Every slot busy: the lent one is owed, and paid by the next request that ends.
        drop(turn);
        drop(lent);
        tokio::time::sleep(Duration::from_millis(5)).await;
        drop(held);
        for w in waiters {
            w.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec!["A", "B", "C"]);
    }
}
