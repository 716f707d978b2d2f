//! The manifest and referrer-list cache (spec §7.4, `defaults.cacheCount` + `cacheTime`).
//!
//! * Manifests fetched by GET, or pushed, are kept under registry + repository + digest.
//!   Only lookups by digest can hit: content addressed by digest never changes.
//! * Referrer lists are kept under registry + repository + subject digest; pushing a manifest
//!   with a `subject`, or a fallback referrers index (tag `<alg>-<hex>`), drops the subject's
//!   list.
//! * An entry expires `cacheTime` after it was stored (a hit does not extend it: a manifest
//!   "pushed by us" is trusted for `cacheTime`, not for as long as cycles keep hitting it,
//!   so a target that lost it to a GC or a retention policy is asked again); when a table
//!   holds more than `cacheCount` entries it is pruned (expired entries, then the least
//!   recently used) to 90 %.
//! * The cache is on only when both settings are > 0.
//!
//! Quirk 15 (spec §16) is fixed on purpose: regclient answers a HEAD by digest from the cache,
//! so a source HEAD (the request that carries Docker Hub's `RateLimit-*` headers) can be
//! served without reaching the registry. Here a HEAD is answered only from entries this
//! process *pushed* into that repository — a target-side existence check. A manifest that was
//! merely read (a source) is served from the cache to GETs only; a HEAD on it always goes to
//! the registry.

use crate::oci::{Digest, Manifest};
use crate::store::{fallback_subject, Referrers};
use dashmap::DashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// How a cached manifest got into the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Read with GET: the repository held it then.
    Fetched,
    /// Pushed by this process: the repository is a target, and holds it.
    Pushed,
}

/// registry name, repository, digest.
type Key = (String, String, Digest);

/// Manifests and referrer lists, shared by every request of a `RegistryStore`.
pub struct Cache {
    manifests: Table<Key, (Manifest, Origin)>,
    referrers: Table<Key, Referrers>,
}

impl Cache {
    /// `count` entries per table, each kept `ttl` after its last use; off unless both are > 0.
    pub fn new(count: i64, ttl: Duration) -> Cache {
        let count = if ttl.is_zero() {
            0
        } else {
            usize::try_from(count).unwrap_or(0)
        };
        Cache {
            manifests: Table::new(count, ttl),
            referrers: Table::new(count, ttl),
        }
    }

    pub fn enabled(&self) -> bool {
        self.manifests.count > 0
    }

    /// A manifest for a GET by digest.
    pub fn manifest(&self, registry: &str, repo: &str, digest: &Digest) -> Option<Manifest> {
        self.manifests
            .get(&key(registry, repo, digest), Instant::now(), |_| true)
            .map(|(m, _)| m)
    }

    /// A manifest for a HEAD by digest: only what this process pushed there (see the module
    /// documentation on quirk 15).
    pub fn pushed_manifest(&self, registry: &str, repo: &str, digest: &Digest) -> Option<Manifest> {
        self.manifests
            .get(
                &key(registry, repo, digest),
                Instant::now(),
                |(_, origin)| *origin == Origin::Pushed,
            )
            .map(|(m, _)| m)
    }

    /// Remember a manifest read by GET (keyed by its digest).
    pub fn fetched(&self, registry: &str, repo: &str, m: &Manifest) {
        let k = key(registry, repo, &m.digest);
        // A pushed entry stays one: the repository still holds what we pushed.
        let origin = match self.manifests.peek(&k) {
            Some((_, Origin::Pushed)) => Origin::Pushed,
            _ => Origin::Fetched,
        };
        self.manifests
            .insert(k, (m.clone(), origin), Instant::now());
    }

    /// Remember a manifest this process pushed (under `tag`, if any). A manifest with a
    /// `subject` drops that subject's referrer list, and so does a push to the subject's
    /// fallback tag `<alg>-<hex>` (the fallback referrers index).
    pub fn pushed(&self, registry: &str, repo: &str, tag: Option<&str>, m: &Manifest) {
        if !self.enabled() {
            return;
        }
        if let Ok(links) = m.links() {
            if let Some(subject) = links.subject {
                self.invalidate_referrers(registry, repo, &subject.digest);
            }
        }
        if let Some(subject) = tag.and_then(fallback_subject) {
            self.invalidate_referrers(registry, repo, &subject);
        }
        self.manifests.insert(
            key(registry, repo, &m.digest),
            (m.clone(), Origin::Pushed),
            Instant::now(),
        );
    }

    /// The cached referrer list of `subject` in a repository.
    pub fn referrers(&self, registry: &str, repo: &str, subject: &Digest) -> Option<Referrers> {
        self.referrers
            .get(&key(registry, repo, subject), Instant::now(), |_| true)
    }

    pub fn put_referrers(&self, registry: &str, repo: &str, subject: &Digest, list: Referrers) {
        self.referrers
            .insert(key(registry, repo, subject), list, Instant::now());
    }

    pub fn invalidate_referrers(&self, registry: &str, repo: &str, subject: &Digest) {
        self.referrers.remove(&key(registry, repo, subject));
    }
}

fn key(registry: &str, repo: &str, digest: &Digest) -> Key {
    (registry.to_string(), repo.to_string(), digest.clone())
}

struct Entry<V> {
    value: V,
    /// When the value was stored: it expires `ttl` later.
    stored: Instant,
    /// For pruning the least recently used.
    last_used: Instant,
}

/// One table: entries expire `ttl` after they were stored, and more than `count` entries
/// prune it to 90 % (least recently used first). `count == 0` means off.
struct Table<K, V> {
    map: DashMap<K, Entry<V>>,
    count: usize,
    ttl: Duration,
    /// When expired entries were last swept out (they are otherwise dropped when looked up).
    swept: Mutex<Option<Instant>>,
}

impl<K: Eq + Hash + Clone, V: Clone> Table<K, V> {
    fn new(count: usize, ttl: Duration) -> Self {
        Table {
            map: DashMap::new(),
            count,
            ttl,
            swept: Mutex::new(None),
        }
    }

    fn expired(&self, e: &Entry<V>, now: Instant) -> bool {
        now.saturating_duration_since(e.stored) >= self.ttl
    }

    /// The value if present, fresh and accepted by `wanted`; a hit counts as a use (for
    /// pruning), not as a refresh.
    fn get(&self, k: &K, now: Instant, wanted: impl Fn(&V) -> bool) -> Option<V> {
        if self.count == 0 {
            return None;
        }
        let mut entry = self.map.get_mut(k)?;
        if self.expired(&entry, now) {
            // Release the shard lock before removing.
            drop(entry);
            self.map.remove_if(k, |_, e| self.expired(e, now));
            return None;
        }
        if !wanted(&entry.value) {
            return None;
        }
        entry.last_used = now;
        Some(entry.value.clone())
    }

    /// The value without counting a use.
    fn peek(&self, k: &K) -> Option<V> {
        self.map.get(k).map(|e| e.value.clone())
    }

    fn insert(&self, k: K, value: V, now: Instant) {
        if self.count == 0 {
            return;
        }
        self.map.insert(
            k,
            Entry {
                value,
                stored: now,
                last_used: now,
            },
        );
        let sweep = {
            let mut swept = self.swept.lock().unwrap();
            let due = swept.is_none_or(|t| now.saturating_duration_since(t) >= self.ttl);
            if due {
                *swept = Some(now);
            }
            due
        };
        if sweep || self.map.len() > self.count {
            self.prune(now);
        }
    }

    fn remove(&self, k: &K) {
        self.map.remove(k);
    }

    /// Drop expired entries; above `count`, drop the least recently used down to 90 %.
    fn prune(&self, now: Instant) {
        self.map.retain(|_, e| !self.expired(e, now));
        if self.map.len() <= self.count {
            return;
        }
        let keep = (self.count * 9 / 10).max(1);
        let mut by_use: Vec<(K, Instant)> = self
            .map
            .iter()
            .map(|e| (e.key().clone(), e.value().last_used))
            .collect();
        if by_use.len() <= keep {
            return;
        }
        by_use.sort_by_key(|(_, t)| *t);
        let excess = by_use.len() - keep;
        for (k, _) in by_use.into_iter().take(excess) {
            self.map.remove(&k);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    const MIN: Duration = Duration::from_secs(60);

    fn manifest(n: u32) -> Manifest {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{:064x}","size":{n}}},"layers":[]}}"#,
            n
        );
        Manifest::from_bytes(Bytes::from(body), None)
    }

    #[test]
    fn off_unless_both_settings_are_positive() {
        for (count, ttl) in [(0, MIN), (10, Duration::ZERO), (-1, MIN)] {
            let c = Cache::new(count, ttl);
            assert!(!c.enabled());
            let m = manifest(1);
            c.fetched("r", "a", &m);
            c.pushed("r", "a", None, &m);
            assert!(c.manifest("r", "a", &m.digest).is_none());
        }
        assert!(Cache::new(1, MIN).enabled());
    }

    #[test]
    fn get_hits_by_registry_repo_and_digest() {
        let c = Cache::new(10, MIN);
        let m = manifest(1);
        c.fetched("r", "a", &m);
        let hit = c.manifest("r", "a", &m.digest).unwrap();
        assert_eq!(hit.bytes, m.bytes);
        assert_eq!(hit.media_type, m.media_type);
        assert!(c.manifest("r", "b", &m.digest).is_none());
        assert!(c.manifest("s", "a", &m.digest).is_none());
        assert!(c.manifest("r", "a", &manifest(2).digest).is_none());
    }

    #[test]
    fn head_hits_only_pushed_entries() {
        let c = Cache::new(10, MIN);
        let (fetched, pushed) = (manifest(1), manifest(2));
        c.fetched("r", "src", &fetched);
        c.pushed("r", "tgt", Some("v1"), &pushed);
        // A source read never answers a HEAD (quirk 15), a push does.
        assert!(c.pushed_manifest("r", "src", &fetched.digest).is_none());
        assert!(c.pushed_manifest("r", "tgt", &pushed.digest).is_some());
        // GETs may use both.
        assert!(c.manifest("r", "src", &fetched.digest).is_some());
        assert!(c.manifest("r", "tgt", &pushed.digest).is_some());
        // Reading back what we pushed keeps it a pushed entry.
        c.fetched("r", "tgt", &pushed);
        assert!(c.pushed_manifest("r", "tgt", &pushed.digest).is_some());
    }

    #[test]
    fn entries_expire_cache_time_after_they_were_stored() {
        let t = Table::<u32, u32>::new(10, MIN);
        let t0 = Instant::now();
        t.insert(1, 10, t0);
        // Hits do not push the expiry out.
        assert_eq!(
            t.get(&1, t0 + 30 * Duration::from_secs(1), |_| true),
            Some(10)
        );
        assert_eq!(
            t.get(&1, t0 + 59 * Duration::from_secs(1), |_| true),
            Some(10)
        );
        // 60 s after it was stored it is gone, and removed from the table.
        assert_eq!(t.get(&1, t0 + 60 * Duration::from_secs(1), |_| true), None);
        assert_eq!(t.len(), 0);
        // Storing it again starts a new period.
        t.insert(1, 11, t0 + 70 * Duration::from_secs(1));
        assert_eq!(
            t.get(&1, t0 + 129 * Duration::from_secs(1), |_| true),
            Some(11)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_pushed_manifest_is_trusted_for_cache_time_however_often_it_is_hit() {
        let c = Cache::new(10, MIN);
        let m = manifest(1);
        c.pushed("r", "tgt", Some("v1"), &m);
        // Cycles every 20 s keep hitting it...
        for _ in 0..2 {
            tokio::time::advance(Duration::from_secs(20)).await;
            assert!(c.pushed_manifest("r", "tgt", &m.digest).is_some());
        }
        // ...but 60 s after the push a HEAD goes to the registry again.
        tokio::time::advance(Duration::from_secs(20)).await;
        assert!(c.pushed_manifest("r", "tgt", &m.digest).is_none());
        assert!(c.manifest("r", "tgt", &m.digest).is_none());
        // Referrer lists alike.
        c.put_referrers("r", "a", &m.digest, Referrers::default());
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(c.referrers("r", "a", &m.digest).is_some());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(c.referrers("r", "a", &m.digest).is_none());
    }

    #[test]
    fn over_count_prunes_least_recently_used_to_90_percent() {
        let t = Table::<u32, u32>::new(10, MIN);
        let t0 = Instant::now();
        for i in 0..10 {
            t.insert(i, i, t0 + Duration::from_millis(u64::from(i)));
        }
        assert_eq!(t.len(), 10);
        // Entry 0 is used again, so 1 and 2 are now the oldest.
        assert!(t
            .get(&0, t0 + Duration::from_millis(20), |_| true)
            .is_some());
        t.insert(10, 10, t0 + Duration::from_millis(30));
        assert_eq!(t.len(), 9);
        for gone in [1, 2] {
            assert!(t.peek(&gone).is_none(), "{gone} should be pruned");
        }
        for kept in [0, 3, 9, 10] {
            assert!(t.peek(&kept).is_some(), "{kept} should be kept");
        }
    }

    #[test]
    fn expired_entries_are_swept_on_insert() {
        let t = Table::<u32, u32>::new(100, MIN);
        let t0 = Instant::now();
        for i in 0..5 {
            t.insert(i, i, t0);
        }
        t.insert(99, 99, t0 + 2 * MIN);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn tiny_count_keeps_the_newest() {
        let t = Table::<u32, u32>::new(1, MIN);
        let t0 = Instant::now();
        t.insert(1, 1, t0);
        t.insert(2, 2, t0 + Duration::from_millis(1));
        assert_eq!(t.len(), 1);
        assert!(t.peek(&2).is_some());
    }

    #[test]
    fn referrer_lists_are_dropped_when_a_referrer_is_pushed() {
        let c = Cache::new(10, MIN);
        let subject = manifest(1);
        let list = Referrers {
            descriptors: vec![subject.descriptor()],
            tags: vec![],
        };
        c.put_referrers("r", "a", &subject.digest, list.clone());
        assert_eq!(c.referrers("r", "a", &subject.digest), Some(list.clone()));
        // Another repository's list is untouched.
        c.put_referrers("r", "b", &subject.digest, list.clone());
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"x/sig","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2}},"layers":[],"subject":{{"mediaType":"{}","digest":"{}","size":{}}}}}"#,
            subject.media_type,
            subject.digest,
            subject.bytes.len()
        );
        let referrer = Manifest::from_bytes(Bytes::from(body), None);
        c.pushed("r", "a", None, &referrer);
        assert_eq!(c.referrers("r", "a", &subject.digest), None);
        assert_eq!(c.referrers("r", "b", &subject.digest), Some(list.clone()));
        // Pushing the fallback index (tag `sha256-<hex>`) drops the list too.
        let tag = subject.digest.as_str().replace(':', "-");
        c.pushed("r", "b", Some(&tag), &manifest(7));
        assert_eq!(c.referrers("r", "b", &subject.digest), None);
    }

    /// The cache recognises fallback tags by the one rule of [`crate::store::fallback_subject`]:
    /// a tag that only looks like `<alg>-<hex>` is an ordinary tag and drops no list.
    #[test]
    fn only_a_real_fallback_tag_drops_a_referrer_list() {
        let c = Cache::new(10, MIN);
        let list = Referrers::default();
        let long = Digest::parse(&format!("sha512:{}", "ab".repeat(64))).unwrap();
        c.put_referrers("r", "a", &long, list.clone());
        // the distribution spec cuts the tag to 64 hex digits: this is not long's fallback tag
        c.pushed(
            "r",
            "a",
            Some(&format!("sha512-{}", long.hex())),
            &manifest(7),
        );
        assert_eq!(c.referrers("r", "a", &long), Some(list.clone()));
        let other = Digest::parse(&format!("v1:{}", "ab".repeat(16))).unwrap();
        c.put_referrers("r", "a", &other, list.clone());
        c.pushed(
            "r",
            "a",
            Some(&format!("v1-{}", "ab".repeat(16))),
            &manifest(8),
        );
        assert_eq!(c.referrers("r", "a", &other), Some(list));
    }
}
