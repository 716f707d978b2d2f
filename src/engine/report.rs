//! Outcomes and counters of a run: what the summary lines and the exit code are made of.

use super::host_stats::{Histogram, HostSnapshot, STEP_SECONDS};
use super::{Mode, StepCtx};
use crate::config::SyncStep;
pub use crate::copy::counters::{CountSnapshot, Counter, Counters};
use crate::shard::Shard;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

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
    /// Each step's run, in file order (`once`/`check`; `server` keeps them in its state).
    pub steps: Vec<StepRunReport>,
}

/// The error line of one image: `sync[N] SOURCE -> TARGET: cause`. Made here and read back
/// here ([`image_of_error_line`]), so the report can name the image of each failure.
pub fn image_error_line(step: &str, source: &str, target: &str, cause: &str) -> String {
    format!("{step} {source} -> {target}: {cause}")
}

/// The source and target an [`image_error_line`] names; `None` for a step's own errors (a
/// listing that failed, a bad reference). References hold no spaces, so the first `" -> "`
/// and the first `": "` after it end them.
pub fn image_of_error_line(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix("sync[")?;
    let (_, rest) = rest.split_once("] ")?;
    let (source, rest) = rest.split_once(" -> ")?;
    let (target, _) = rest.split_once(": ")?;
    (!source.contains(' ') && !target.contains(' ')).then_some((source, target))
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

/// `info!` of a summary line: the fields before, every counter of `$c`, the fields after.
macro_rules! summary_line {
    ($log:expr, $msg:expr, $c:expr; [$($pk:expr => $pv:expr),*]; [$($k:expr => $v:expr),*]) => {
        slog::info!($log, $msg;
            $($pk => $pv,)*
            "images_checked" => $c.images_checked,
            "images_copied" => $c.images_copied,
            "images_matched" => $c.images_matched,
            "images_skipped" => $c.images_skipped,
            "images_failed" => $c.images_failed,
            "images_canceled" => $c.images_canceled,
            "blobs_copied" => $c.blobs_copied,
            "blobs_mounted" => $c.blobs_mounted,
            "blobs_skipped" => $c.blobs_skipped,
            "blobs_deduped" => $c.blobs_deduped,
            "manifests_pushed" => $c.manifests_pushed,
            "bytes_copied" => $c.bytes_copied,
            "tags_pruned" => $c.tags_pruned,
            $($k => $v,)*
        )
    };
}

impl CountSnapshot {
    /// The one info line that closes every run; a shard of several names itself
    /// (`shard=1/4`) and counts the target repositories it owned and left to the others.
    pub fn log(&self, log: &slog::Logger, seconds: f64, shard: Shard) {
        let log = shard_fields(log, shard, self);
        summary_line!(log, "Sync summary", self; []; ["seconds" => format!("{seconds:.3}")]);
    }
}

/// `log` with the shard's fields when the run is one shard of several (`shard=1/4`, and the
/// target repositories it owned and left to the others, from `c`); `log` itself otherwise.
fn shard_fields(log: &slog::Logger, shard: Shard, c: &CountSnapshot) -> slog::Logger {
    if shard.is_sharded() {
        log.new(slog::o!(
            "shard" => shard.to_string(),
            "repositories_owned" => c.repos_owned,
            "repositories_other_shards" => c.repos_other_shards))
    } else {
        log.clone()
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
        let log = shard_fields(log, step.run.shard, c);
        summary_line!(log, "Step summary", c;
            ["step" => step.name(),
            "source" => &step.step.source,
            "target" => &step.step.target,
            "type" => &step.step.kind,
            "mode" => mode,
            "errors" => self.errors.len()];
            ["seconds" => format!("{:.3}", self.duration.as_secs_f64())]);
    }
}

/// What the scheduler knows about one step, as the service endpoints see it (`/metrics`,
/// `/status`, `/readyz`): plain data, copied out of the scheduler in one message.
#[derive(Clone, Debug, Default)]
pub struct StepState {
    /// Position of the step in the file (`sync[N]`).
    pub step: usize,
    /// The step as the config gives it (its `type`, `source` and `target` name it), shared
    /// with the run rather than copied: one step per repository makes thousands of these.
    pub def: Arc<SyncStep>,
    /// `schedule`, else `@every <interval>`; none when the step has neither.
    pub schedule: Option<String>,
    /// The longest gap between the schedule's next firings (`server` only): a step whose last
    /// success is older than twice this is stale.
    pub period: Option<Duration>,
    /// The next firing (`server`, once the schedules run).
    pub next_run: Option<SystemTime>,
    /// Completed runs (initial pass included).
    pub runs: u64,
    /// Runs that ended with at least one error.
    pub failed_runs: u64,
    /// Firings skipped because the previous run was still going.
    pub skipped_firings: u64,
    /// Every run's counters: the completed runs and the one in progress.
    pub counts: CountSnapshot,
    /// The start of the run in progress.
    pub running_since: Option<SystemTime>,
    pub last_start: Option<SystemTime>,
    pub last_end: Option<SystemTime>,
    /// Whether the last completed run ended without an error.
    pub last_ok: Option<bool>,
    pub last_duration: Option<Duration>,
    /// The first line of the last completed run's first error.
    pub last_error: Option<String>,
    /// The end of the last run without an error.
    pub last_success: Option<SystemTime>,
    /// How long its completed runs took.
    pub run_seconds: StepDurations,
}

/// The durations of a step's runs ([`STEP_SECONDS`] buckets).
#[derive(Clone, Debug, PartialEq)]
pub struct StepDurations(pub Histogram);

impl Default for StepDurations {
    fn default() -> Self {
        StepDurations(Histogram::new(STEP_SECONDS))
    }
}

impl StepState {
    /// A completed run of this step.
    pub fn record(&mut self, r: &StepRunReport, ended: SystemTime) {
        self.runs += 1;
        let ok = r.errors.is_empty();
        if !ok {
            self.failed_runs += 1;
        }
        self.counts.add(&r.counts);
        self.running_since = None;
        self.last_end = Some(ended);
        self.last_ok = Some(ok);
        self.last_duration = Some(r.duration);
        self.run_seconds.0.observe(r.duration.as_secs_f64());
        self.last_error = r
            .errors
            .first()
            .map(|e| e.lines().next().unwrap_or_default().to_string());
        if ok {
            self.last_success = Some(ended);
        }
    }
}

/// The scheduler's answer to [`GetSchedulerState`](super::messages::GetSchedulerState).
#[derive(Clone, Debug)]
pub struct SchedulerState {
    /// When the engine started.
    pub started: SystemTime,
    /// `server` (steps run on schedules) rather than `once`/`check`.
    pub serving: bool,
    /// `server`'s initial pass (or the single pass of `once`/`check`) has finished.
    pub initial_pass_done: bool,
    /// The whole process's counters (every step run adds to them).
    pub totals: CountSnapshot,
    pub images_in_flight: u64,
    /// By step index; empty until a run or `server` starts.
    pub steps: Vec<StepState>,
    /// Every registry host contacted so far, by hostname.
    pub registries: Vec<HostSnapshot>,
    /// This process's shard (`0/1` when not sharded).
    pub shard: Shard,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_error_line_names_its_image_and_a_step_error_none() {
        let line = image_error_line(
            "sync[3]",
            "127.0.0.1:5000/a:v1",
            "ocidir://out/x:v1",
            "failed to push manifest: 400: DIGEST_INVALID",
        );
        assert_eq!(
            image_of_error_line(&line),
            Some(("127.0.0.1:5000/a:v1", "ocidir://out/x:v1"))
        );
        assert_eq!(
            image_of_error_line("sync[0] failed to list tags of r/x: http 500"),
            None
        );
        assert_eq!(image_of_error_line("internal error: resolver: gone"), None);
    }
}
