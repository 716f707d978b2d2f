//! Outcomes and counters of a run: what the summary lines and the exit code are made of.

use super::{Mode, StepCtx};
pub use crate::copy::counters::{CountSnapshot, Counter, Counters};
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
    /// Stopped by the run's cancellation (a signal, `--abort-on-error`): the same kind of
    /// line, ending in "task was canceled".
    Canceled(String),
}

impl ImageOutcome {
    /// The error line of a failed or cancelled image.
    pub fn error_line(self) -> Option<String> {
        match self {
            ImageOutcome::Failed(e) | ImageOutcome::Canceled(e) => Some(e),
            _ => None,
        }
    }
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

impl Counters {
    pub fn record(&self, outcome: &ImageOutcome) {
        self.bump(Counter::ImagesChecked);
        self.bump(match outcome {
            ImageOutcome::Matched => Counter::ImagesMatched,
            ImageOutcome::Skipped | ImageOutcome::NeedsSync => Counter::ImagesSkipped,
            ImageOutcome::Copied => Counter::ImagesCopied,
            ImageOutcome::Failed(_) => Counter::ImagesFailed,
            ImageOutcome::Canceled(_) => Counter::ImagesCanceled,
        });
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
            "images_canceled" => self.images_canceled,
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
    /// This run's own counters (runs of other steps that overlap in time count apart).
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
            "images_canceled" => c.images_canceled,
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
    /// Sum of the runs' counters.
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
