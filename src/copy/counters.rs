//! What the summary lines are made of: monotonic, lock-free counters.
//!
//! Each step run owns its [`Counters`] ([`Counters::under`] the run's total): what a step
//! does is counted there and, in the same bump, in the total, so runs of other steps that
//! overlap in time never add to a step's numbers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// One counted thing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    ImagesChecked,
    ImagesCopied,
    ImagesMatched,
    ImagesSkipped,
    ImagesFailed,
    /// Images stopped by the run's cancellation (a signal, `--abort-on-error`).
    ImagesCanceled,
    BlobsCopied,
    BlobsMounted,
    BlobsSkipped,
    BlobsDeduped,
    ManifestsPushed,
    BytesCopied,
    /// Images handed to the copy algorithm; each one later ends in one `Images*` outcome
    /// ([`ImagesChecked`](Counter::ImagesChecked) counts those), so the difference is the
    /// images in flight without a gauge of its own.
    ImagesStarted,
    /// Images a step's listing selected (after filters and `--missing`): each one is handed
    /// to the copy algorithm, so `ImagesChecked` reaches it once the step ends.
    ImagesSelected,
    /// Step runs begun, listings finished (every selected image is counted in
    /// `ImagesSelected`), and step runs ended. In one step run's counters each is 0 or 1: what
    /// the progress display reads to tell a step waiting, listing, copying or done.
    StepsStarted,
    StepsListed,
    StepsEnded,
    /// Target tags deleted by pruning (README "Pruning").
    TagsPruned,
    /// Target repositories this shard copies into (`--shard`; every one when unsharded), and
    /// those it leaves to another shard (nothing of them is asked for beyond the catalog).
    ReposOwned,
    ReposOtherShards,
}

const COUNTERS: usize = 20;

/// Counters of one step run, or of a whole run (the parent of its step runs).
#[derive(Debug, Default)]
pub struct Counters {
    cells: [AtomicU64; COUNTERS],
    /// Bumped alongside (the run's total).
    parent: Option<Arc<Counters>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CountSnapshot {
    pub images_checked: u64,
    pub images_copied: u64,
    pub images_matched: u64,
    pub images_skipped: u64,
    pub images_failed: u64,
    pub images_canceled: u64,
    pub blobs_copied: u64,
    pub blobs_mounted: u64,
    pub blobs_skipped: u64,
    pub blobs_deduped: u64,
    pub manifests_pushed: u64,
    pub bytes_copied: u64,
    pub images_started: u64,
    pub images_selected: u64,
    pub steps_started: u64,
    pub steps_listed: u64,
    pub steps_ended: u64,
    pub tags_pruned: u64,
    pub repos_owned: u64,
    pub repos_other_shards: u64,
}

impl Counters {
    /// Counters whose every bump also goes to `parent`.
    pub fn under(parent: Arc<Counters>) -> Counters {
        Counters {
            cells: Default::default(),
            parent: Some(parent),
        }
    }

    pub fn bump(&self, c: Counter) {
        self.add(c, 1);
    }

    pub fn add(&self, c: Counter, n: u64) {
        self.cells[c as usize].fetch_add(n, Ordering::Relaxed);
        if let Some(p) = &self.parent {
            p.add(c, n);
        }
    }

    pub fn get(&self, c: Counter) -> u64 {
        self.cells[c as usize].load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> CountSnapshot {
        use Counter::*;
        let g = |c| self.get(c);
        CountSnapshot {
            images_checked: g(ImagesChecked),
            images_copied: g(ImagesCopied),
            images_matched: g(ImagesMatched),
            images_skipped: g(ImagesSkipped),
            images_failed: g(ImagesFailed),
            images_canceled: g(ImagesCanceled),
            blobs_copied: g(BlobsCopied),
            blobs_mounted: g(BlobsMounted),
            blobs_skipped: g(BlobsSkipped),
            blobs_deduped: g(BlobsDeduped),
            manifests_pushed: g(ManifestsPushed),
            bytes_copied: g(BytesCopied),
            images_started: g(ImagesStarted),
            images_selected: g(ImagesSelected),
            steps_started: g(StepsStarted),
            steps_listed: g(StepsListed),
            steps_ended: g(StepsEnded),
            tags_pruned: g(TagsPruned),
            repos_owned: g(ReposOwned),
            repos_other_shards: g(ReposOtherShards),
        }
    }

    /// Images started and not yet ended. `ImagesChecked` is read first: an image is started
    /// before it is checked, so the later read of `ImagesStarted` is never behind it.
    pub fn images_in_flight(&self) -> u64 {
        let ended = self.get(Counter::ImagesChecked);
        self.get(Counter::ImagesStarted).saturating_sub(ended)
    }
}

impl CountSnapshot {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &CountSnapshot) {
        self.images_checked += other.images_checked;
        self.images_copied += other.images_copied;
        self.images_matched += other.images_matched;
        self.images_skipped += other.images_skipped;
        self.images_failed += other.images_failed;
        self.images_canceled += other.images_canceled;
        self.blobs_copied += other.blobs_copied;
        self.blobs_mounted += other.blobs_mounted;
        self.blobs_skipped += other.blobs_skipped;
        self.blobs_deduped += other.blobs_deduped;
        self.manifests_pushed += other.manifests_pushed;
        self.bytes_copied += other.bytes_copied;
        self.images_started += other.images_started;
        self.images_selected += other.images_selected;
        self.steps_started += other.steps_started;
        self.steps_listed += other.steps_listed;
        self.steps_ended += other.steps_ended;
        self.tags_pruned += other.tags_pruned;
        self.repos_owned += other.repos_owned;
        self.repos_other_shards += other.repos_other_shards;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_run_counts_its_own_and_the_total_counts_all() {
        let total = Arc::new(Counters::default());
        let (a, b) = (
            Counters::under(total.clone()),
            Counters::under(total.clone()),
        );
        a.bump(Counter::ImagesCopied);
        a.add(Counter::BytesCopied, 10);
        b.bump(Counter::ImagesCopied);
        b.bump(Counter::ImagesCanceled);
        assert_eq!(a.get(Counter::ImagesCopied), 1);
        assert_eq!(a.get(Counter::ImagesCanceled), 0);
        assert_eq!(b.get(Counter::BytesCopied), 0);
        let t = total.snapshot();
        assert_eq!(
            (t.images_copied, t.images_canceled, t.bytes_copied),
            (2, 1, 10)
        );
        // The last counter has a cell of its own.
        a.bump(Counter::BytesCopied);
        assert_eq!(a.snapshot().bytes_copied, 11);
        a.bump(Counter::ImagesStarted);
        assert_eq!(a.snapshot().images_started, 1);
        for (c, n) in [
            (Counter::ImagesSelected, 2),
            (Counter::StepsStarted, 3),
            (Counter::StepsListed, 4),
            (Counter::StepsEnded, 5),
        ] {
            b.add(c, n);
        }
        let s = b.snapshot();
        assert_eq!(
            (
                s.images_selected,
                s.steps_started,
                s.steps_listed,
                s.steps_ended
            ),
            (2, 3, 4, 5)
        );
        b.bump(Counter::ReposOtherShards);
        assert_eq!(b.snapshot().repos_other_shards, 1);
        assert_eq!(b.snapshot().repos_owned, 0);
        let s = b.snapshot();
        let mut sum = s.clone();
        sum.add(&s);
        assert_eq!(sum.steps_ended, 10);
        assert_eq!(total.snapshot().steps_listed, 4);
    }

    #[test]
    fn images_in_flight_are_started_minus_ended() {
        let c = Counters::default();
        assert_eq!(c.images_in_flight(), 0);
        c.bump(Counter::ImagesStarted);
        c.bump(Counter::ImagesStarted);
        assert_eq!(c.images_in_flight(), 2);
        c.bump(Counter::ImagesChecked);
        assert_eq!(c.images_in_flight(), 1);
    }
}
