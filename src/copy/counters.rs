//! The counters of a copy: what the summary lines are made of (monotonic, lock-free).

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters shared by the actors of one engine (monotonic, lock-free).
#[derive(Debug, Default)]
pub struct Counters {
    pub images_checked: AtomicU64,
    pub images_copied: AtomicU64,
    pub images_matched: AtomicU64,
    pub images_skipped: AtomicU64,
    pub images_failed: AtomicU64,
    pub blobs_copied: AtomicU64,
    pub blobs_mounted: AtomicU64,
    pub blobs_skipped: AtomicU64,
    pub blobs_deduped: AtomicU64,
    pub manifests_pushed: AtomicU64,
    pub bytes_copied: AtomicU64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CountSnapshot {
    pub images_checked: u64,
    pub images_copied: u64,
    pub images_matched: u64,
    pub images_skipped: u64,
    pub images_failed: u64,
    pub blobs_copied: u64,
    pub blobs_mounted: u64,
    pub blobs_skipped: u64,
    pub blobs_deduped: u64,
    pub manifests_pushed: u64,
    pub bytes_copied: u64,
}

pub fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub fn snapshot(&self) -> CountSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CountSnapshot {
            images_checked: g(&self.images_checked),
            images_copied: g(&self.images_copied),
            images_matched: g(&self.images_matched),
            images_skipped: g(&self.images_skipped),
            images_failed: g(&self.images_failed),
            blobs_copied: g(&self.blobs_copied),
            blobs_mounted: g(&self.blobs_mounted),
            blobs_skipped: g(&self.blobs_skipped),
            blobs_deduped: g(&self.blobs_deduped),
            manifests_pushed: g(&self.manifests_pushed),
            bytes_copied: g(&self.bytes_copied),
        }
    }
}

impl CountSnapshot {
    /// What happened between `earlier` and `self` (both snapshots of the same counters).
    pub fn since(&self, earlier: &CountSnapshot) -> CountSnapshot {
        let d = |a: u64, b: u64| a.saturating_sub(b);
        CountSnapshot {
            images_checked: d(self.images_checked, earlier.images_checked),
            images_copied: d(self.images_copied, earlier.images_copied),
            images_matched: d(self.images_matched, earlier.images_matched),
            images_skipped: d(self.images_skipped, earlier.images_skipped),
            images_failed: d(self.images_failed, earlier.images_failed),
            blobs_copied: d(self.blobs_copied, earlier.blobs_copied),
            blobs_mounted: d(self.blobs_mounted, earlier.blobs_mounted),
            blobs_skipped: d(self.blobs_skipped, earlier.blobs_skipped),
            blobs_deduped: d(self.blobs_deduped, earlier.blobs_deduped),
            manifests_pushed: d(self.manifests_pushed, earlier.manifests_pushed),
            bytes_copied: d(self.bytes_copied, earlier.bytes_copied),
        }
    }

    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &CountSnapshot) {
        self.images_checked += other.images_checked;
        self.images_copied += other.images_copied;
        self.images_matched += other.images_matched;
        self.images_skipped += other.images_skipped;
        self.images_failed += other.images_failed;
        self.blobs_copied += other.blobs_copied;
        self.blobs_mounted += other.blobs_mounted;
        self.blobs_skipped += other.blobs_skipped;
        self.blobs_deduped += other.blobs_deduped;
        self.manifests_pushed += other.manifests_pushed;
        self.bytes_copied += other.bytes_copied;
    }
}
