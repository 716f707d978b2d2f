//! Outcomes and counters of a run: what the summary lines and the exit code are made of.

use super::{Mode, StepCtx};
pub use crate::copy::counters::{bump, CountSnapshot, Counters};
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
