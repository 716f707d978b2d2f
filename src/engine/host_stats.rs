//! What each registry host saw during the engine's life: requests by method, kind and status,
//! how long they took, retries, requests in flight, the rate-limit budget it reports and the
//! waits it imposed, and body bytes each way.
//!
//! Written by the [`ThrottleGate`](super::throttler::ThrottleGate) (every request of the
//! registry layer passes it, token fetches and retries included) and by each host's
//! RegistryThrottler (its pauses); read as a [`HostSnapshot`] by `/metrics`, `/status` and
//! `--report`. The table belongs to one engine: two engines in one process count apart.
//! Keys are bounded by the config (host names, [`RequestKind`], HTTP status codes), never by
//! the catalog.

use crate::registry::RequestKind;
use dashmap::DashMap;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Upper bounds (seconds) of the request duration histogram: a HEAD on loopback (1 ms) to a
/// blob stream of many minutes.
pub const REQUEST_SECONDS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Upper bounds (seconds) of the step run duration histogram: a no-op check of a few tags to
/// a whole catalog.
pub const STEP_SECONDS: &[f64] = &[
    0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0,
];

/// A Prometheus-style histogram as plain data: a count per bucket (not cumulative; the last
/// bucket is `+Inf`), the sum and the count of observations.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    pub bounds: &'static [f64],
    /// `bounds.len() + 1` counts; `counts[i]` holds the observations in
    /// `(bounds[i-1], bounds[i]]`.
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, v: f64) {
        let i = self
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }
}

/// One line of the request table: what was sent and what came back.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestKey {
    pub method: String,
    pub kind: RequestKind,
    /// The HTTP status; `None` when no answer came (connection error, timeout).
    pub code: Option<u16>,
}

impl RequestKey {
    /// The `code` label: the status, or `error` when the host did not answer.
    pub fn code_label(&self) -> String {
        self.code
            .map(|c| c.to_string())
            .unwrap_or_else(|| "error".into())
    }
}

/// Every host's stats, by the hostname contacted (`registry-1.docker.io` for Docker Hub).
#[derive(Debug, Default)]
pub struct HostStatsTable {
    hosts: DashMap<String, Arc<HostStats>>,
}

impl HostStatsTable {
    /// The stats of `hostname`, created on first use.
    pub fn host(&self, hostname: &str) -> Arc<HostStats> {
        if let Some(h) = self.hosts.get(hostname) {
            return h.clone();
        }
        self.hosts.entry(hostname.to_string()).or_default().clone()
    }

    /// Every host seen so far, by name.
    pub fn snapshot(&self) -> Vec<HostSnapshot> {
        let mut out: Vec<HostSnapshot> = self
            .hosts
            .iter()
            .map(|e| e.value().snapshot(e.key()))
            .collect();
        out.sort_by(|a, b| a.registry.cmp(&b.registry));
        out
    }
}

/// One host's live numbers.
#[derive(Debug, Default)]
pub struct HostStats {
    table: Mutex<Tables>,
    in_flight: AtomicI64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
}

#[derive(Debug, Default)]
struct Tables {
    requests: BTreeMap<RequestKey, u64>,
    durations: BTreeMap<RequestKind, Histogram>,
    retries: u64,
    rate_limit_remaining: Option<i64>,
    rate_limit_waits: u64,
    rate_limit_wait: Duration,
    paused_until: Option<SystemTime>,
}

impl HostStats {
    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        // A panic while holding the lock leaves plain counters behind: keep counting.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One send of a request and what came of it.
    pub fn request(&self, key: RequestKey, elapsed: Duration, attempt: u32) {
        let mut t = self.tables();
        let kind = key.kind;
        *t.requests.entry(key).or_default() += 1;
        t.durations
            .entry(kind)
            .or_insert_with(|| Histogram::new(REQUEST_SECONDS))
            .observe(elapsed.as_secs_f64());
        if attempt > 0 {
            t.retries += 1;
        }
    }

    /// The budget the host reports (`RateLimit-Remaining`), or `None` once a manifest answer
    /// comes without one (the registry stopped reporting: no stale number is shown).
    pub fn rate_limit_remaining(&self, remaining: Option<i64>) {
        self.tables().rate_limit_remaining = remaining;
    }

    /// A request (or an image, for Docker Hub's pull budget) waited `d` because the registry
    /// limits its rate.
    pub fn rate_limit_wait(&self, d: Duration) {
        let mut t = self.tables();
        t.rate_limit_waits += 1;
        t.rate_limit_wait += d;
    }

    /// The host is paused until `until` (its backoff or a pause the registry asked for).
    pub fn paused_until(&self, until: SystemTime) {
        self.tables().paused_until = Some(until);
    }

    pub fn in_flight(&self, delta: i64) {
        self.in_flight.fetch_add(delta, Ordering::Relaxed);
    }

    pub fn read(&self, n: u64) {
        self.bytes_read.fetch_add(n, Ordering::Relaxed);
    }

    pub fn written(&self, n: u64) {
        self.bytes_written.fetch_add(n, Ordering::Relaxed);
    }

    fn snapshot(&self, registry: &str) -> HostSnapshot {
        let t = self.tables();
        HostSnapshot {
            registry: registry.to_string(),
            requests: t.requests.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            durations: t.durations.iter().map(|(k, v)| (*k, v.clone())).collect(),
            retries: t.retries,
            in_flight: self.in_flight.load(Ordering::Relaxed).max(0) as u64,
            rate_limit_remaining: t.rate_limit_remaining,
            rate_limit_waits: t.rate_limit_waits,
            rate_limit_wait_seconds: t.rate_limit_wait.as_secs_f64(),
            paused_until: t.paused_until.filter(|u| *u > SystemTime::now()),
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
        }
    }
}

/// One host's numbers at one moment (plain data for the endpoints and the report).
#[derive(Clone, Debug, Default)]
pub struct HostSnapshot {
    /// The hostname contacted.
    pub registry: String,
    /// Sends by method, kind and status (retries included), in key order.
    pub requests: Vec<(RequestKey, u64)>,
    pub durations: Vec<(RequestKind, Histogram)>,
    /// Sends that were retries of an earlier one.
    pub retries: u64,
    pub in_flight: u64,
    pub rate_limit_remaining: Option<i64>,
    pub rate_limit_waits: u64,
    pub rate_limit_wait_seconds: f64,
    /// The end of the host's current pause, while one runs.
    pub paused_until: Option<SystemTime>,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

impl HostSnapshot {
    /// Every send to the host.
    pub fn request_count(&self) -> u64 {
        self.requests.iter().map(|(_, n)| n).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_upper_bounds_and_overflow_goes_to_inf() {
        let mut h = Histogram::new(&[0.1, 1.0]);
        for v in [0.05, 0.1, 0.5, 7.0] {
            h.observe(v);
        }
        assert_eq!(h.counts, vec![2, 1, 1]);
        assert_eq!(h.count, 4);
        assert!((h.sum - 7.65).abs() < 1e-9);
    }

    #[test]
    fn requests_count_by_key_and_retries_by_attempt() {
        let table = HostStatsTable::default();
        let h = table.host("r.example");
        let key = |code| RequestKey {
            method: "GET".into(),
            kind: RequestKind::Blob,
            code,
        };
        h.request(key(Some(500)), Duration::from_millis(3), 0);
        h.request(key(Some(200)), Duration::from_millis(3), 1);
        h.request(key(None), Duration::from_millis(3), 0);
        h.in_flight(1);
        h.read(10);
        let snap = table.snapshot();
        assert_eq!(snap.len(), 1);
        let s = &snap[0];
        assert_eq!(s.request_count(), 3);
        assert_eq!(s.retries, 1);
        assert_eq!(s.in_flight, 1);
        assert_eq!(s.bytes_read, 10);
        assert_eq!(s.requests[0].0.code_label(), "error");
        assert_eq!(s.durations[0].1.count, 3);
    }
}
