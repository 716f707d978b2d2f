//! Outcomes and counters of a run: what the summary lines and the exit code are made of.

use super::{Mode, StepCtx};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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

/// One run of one step (`server`'s initial pass and every firing).
#[derive(Clone, Debug)]
pub struct StepRunReport {
    /// Position of the step in the file (`sync[N]`).
    pub step: usize,
    pub mode: Mode,
    /// Error lines of this run (cancellations left out).
    pub errors: Vec<String>,
    /// Counter deltas over the run. Runs of other steps that overlap in time add to them.
    pub counts: CountSnapshot,
    pub duration: Duration,
}

impl StepRunReport {
    /// The info line that closes every step run of `server`.
    pub fn log(&self, log: &slog::Logger, step: &StepCtx) {
        let c = &self.counts;
        let mode = match self.mode {
            Mode::Copy => "copy",
            Mode::Missing => "missing",
            Mode::Check => "check",
        };
        slog::info!(log, "Step summary";
            "step" => step.name(),
            "source" => &step.step.source,
            "target" => &step.step.target,
            "type" => &step.step.kind,
            "mode" => mode,
            "errors" => self.errors.len(),
            "images_checked" => c.images_checked,
            "images_copied" => c.images_copied,
            "images_matched" => c.images_matched,
            "images_skipped" => c.images_skipped,
            "images_failed" => c.images_failed,
            "blobs_copied" => c.blobs_copied,
            "blobs_mounted" => c.blobs_mounted,
            "blobs_skipped" => c.blobs_skipped,
            "blobs_deduped" => c.blobs_deduped,
            "manifests_pushed" => c.manifests_pushed,
            "bytes_copied" => c.bytes_copied,
            "seconds" => format!("{:.3}", self.duration.as_secs_f64()),
        );
    }
}

/// Everything `server` knows about one step, kept for metrics.
#[derive(Clone, Debug, Default)]
pub struct StepStats {
    pub step: usize,
    /// Completed runs (initial pass included).
    pub runs: u64,
    /// Runs that ended with at least one error.
    pub failed_runs: u64,
    /// Firings skipped because the previous run was still going.
    pub skipped_firings: u64,
    /// Sum of the runs' counter deltas.
    pub totals: CountSnapshot,
    pub total_duration: Duration,
    pub last: Option<StepRunReport>,
}

impl StepStats {
    pub fn record(&mut self, r: &StepRunReport) {
        self.step = r.step;
        self.runs += 1;
        if !r.errors.is_empty() {
            self.failed_runs += 1;
        }
        self.totals.add(&r.counts);
        self.total_duration += r.duration;
        self.last = Some(r.clone());
    }
}
