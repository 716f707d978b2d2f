//! Outcomes and counters of a run: what the summary line and the exit code are made of.

use std::sync::atomic::{AtomicU64, Ordering};

/// What happened to one image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageOutcome {
    /// Target digest already equals the source: nothing to do.
    Matched,
    /// Deliberately left alone (missing mode with an existing target, unsupported media type).
    Skipped,
    /// `check` found a difference; nothing was written.
    NeedsSync,
    Copied,
    /// One line naming the step, the references and the cause.
    Failed(String),
}

/// The errors of one step, one line per failed image (or one for the step itself).
#[derive(Clone, Debug, Default)]
pub struct StepResult {
    pub errors: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub struct RunReport {
    pub errors: Vec<String>,
    pub counts: CountSnapshot,
}

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
    pub fn record(&self, outcome: &ImageOutcome) {
        bump(&self.images_checked);
        match outcome {
            ImageOutcome::Matched => bump(&self.images_matched),
            ImageOutcome::Skipped | ImageOutcome::NeedsSync => bump(&self.images_skipped),
            ImageOutcome::Copied => bump(&self.images_copied),
            ImageOutcome::Failed(_) => bump(&self.images_failed),
        }
    }

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
    /// The one info line that closes every run.
    pub fn log(&self, log: &slog::Logger, seconds: f64) {
        slog::info!(log, "Sync summary";
            "images_checked" => self.images_checked,
            "images_copied" => self.images_copied,
            "images_matched" => self.images_matched,
            "images_skipped" => self.images_skipped,
            "images_failed" => self.images_failed,
            "blobs_copied" => self.blobs_copied,
            "blobs_mounted" => self.blobs_mounted,
            "blobs_skipped" => self.blobs_skipped,
            "blobs_deduped" => self.blobs_deduped,
            "manifests_pushed" => self.manifests_pushed,
            "bytes_copied" => self.bytes_copied,
            "seconds" => format!("{seconds:.3}"),
        );
    }
}
