//! Every message the engine's actors exchange. Messages carry references and decisions, never
//! blob bytes: bytes stream inside tokio tasks from a source response into a target upload.

use super::report::{ImageOutcome, RunReport, StepResult};
use super::{CopyError, Mode, StepCtx};
use crate::oci::Descriptor;
use crate::reference::Reference;
use crate::registry::Permit;
use actix::Message;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Scheduler ← caller: run these steps once in `mode` and report.
#[derive(Message)]
#[rtype(result = "RunReport")]
pub struct RunSteps {
    pub steps: Vec<Arc<StepCtx>>,
    pub mode: Mode,
}

/// Scheduler ← `regsync server`: the initial missing-only pass, then every step on its
/// schedule until the run's cancellation token fires (signal, or the first error with
/// `--abort-on-error`). Answers with the errors of each step's last run, and a count of
/// earlier ones.
#[derive(Message)]
#[rtype(result = "RunReport")]
pub struct Serve {
    pub steps: Vec<Arc<StepCtx>>,
    /// Where "now" comes from (the wall clock, or tokio's clock in tests).
    pub clock: crate::cron::Clock,
}

/// Scheduler ← `regsync server` on SIGHUP: the steps of the config file read again. Steps are
/// known by what they copy (type, source and target, as the state database knows them), not
/// by their position: an unchanged step keeps its schedule and history wherever it moved, a
/// changed one keeps its history and starts on its schedule, an added one starts on its
/// schedule, a removed one fires no more; runs in progress finish. `Err` when no server is
/// running.
#[derive(Message)]
#[rtype(result = "Result<ReloadSummary, String>")]
pub struct Reload {
    pub steps: Vec<Arc<StepCtx>>,
}

/// How many steps a [`Reload`] left alone, changed, added and removed, and how many of the
/// unchanged and changed ones are at another position in the file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    pub unchanged: usize,
    pub changed: usize,
    pub added: usize,
    pub removed: usize,
    pub moved: usize,
}

/// Scheduler ← the service endpoints (`--listen`): what every step has done so far, and
/// where the run stands. Answered at once from the scheduler's own bookkeeping.
#[derive(Message)]
#[rtype(result = "super::report::SchedulerState")]
pub struct GetSchedulerState;

/// TagLister ← Scheduler: list what a step names (catalog, tags) and hand every selected image
/// to the ManifestResolver as soon as its page arrives.
#[derive(Message)]
#[rtype(result = "StepResult")]
pub struct ListStep {
    pub step: Arc<StepCtx>,
    pub mode: Mode,
    /// The run's step slot this step run holds until its last image is dispatched
    /// (`RunCtx::step_slots`).
    pub slot: tokio::sync::OwnedSemaphorePermit,
}

/// ManifestResolver ← TagLister: bring `target` up to date with `source`.
#[derive(Message)]
#[rtype(result = "ImageOutcome")]
pub struct SyncImage {
    pub step: Arc<StepCtx>,
    pub source: Reference,
    pub target: Reference,
    pub mode: Mode,
    /// The target repository's tag listing, read at the start of this step run, does not
    /// name the target tag: it is absent, and its manifest HEAD can be skipped.
    pub target_listed_absent: bool,
}

/// BlobMover ← ManifestResolver: make `desc` present in `target`'s repository. Answers once
/// the blob has landed (or failed), also when another image's task is the one uploading it.
#[derive(Message)]
#[rtype(result = "Result<BlobMoved, CopyError>")]
pub struct MoveBlob {
    pub step: Arc<StepCtx>,
    pub source: Reference,
    pub target: Reference,
    pub desc: Descriptor,
}

/// How a blob became present in the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobMoved {
    /// The target already had it.
    Present,
    /// Server-side cross-repository mount.
    Mounted,
    /// Streamed from the source.
    Copied { bytes: u64 },
    /// Another task was moving the same blob to the same repository; we waited for it.
    Joined,
}

/// BlobMover → itself: an in-flight move ended (what landed is already in the asking run's
/// scope).
#[derive(Message)]
#[rtype(result = "()")]
pub struct BlobSettled {
    pub key: super::run_scope::ScopeKey,
}

/// RegistryThrottler ← HTTP layer: wait for a request slot on this host (after any pause);
/// `None` once the run's cancellation fires.
#[derive(Message)]
#[rtype(result = "Option<Permit>")]
pub struct AcquireSlot {
    pub cancel: CancellationToken,
}

/// RegistryThrottler ← BlobMover (through the gate): the turn for a blob stream from this host
/// into itself; `None` once the run's cancellation fires.
#[derive(Message)]
#[rtype(result = "Option<Permit>")]
pub struct AcquireSelfStream {
    pub cancel: CancellationToken,
}

/// RegistryThrottler ← HTTP layer: what became of one send of a request to this host.
#[derive(Message)]
#[rtype(result = "()")]
pub struct HostObserved {
    /// The answer's status; `None` when there was no answer (network error, timeout).
    pub status: Option<u16>,
    /// The answer's `Retry-After`.
    pub retry_after: Option<std::time::Duration>,
    /// Sends of the same request before this one (0 = its first).
    pub attempt: u32,
}

/// RegistryThrottler ← HTTP layer: when does the host's current pause end, if it is paused
/// (reads try the hosts that are not paused first).
#[derive(Message)]
#[rtype(result = "Option<std::time::Instant>")]
pub struct HostPausedUntil;

/// Rate-limit headers of one response (spec §5.6): `RateLimit-Limit: 100;w=21600` and
/// `RateLimit-Remaining: 76;w=21600`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RateLimitHeaders {
    /// Integer before the first `;` of the first `,`-separated element; 0 when unparsable.
    pub limit: i64,
    /// The rest of `RateLimit-Limit` (`w=21600`, further policies).
    pub policies: Vec<String>,
    /// Integer before the first `;`; `None` when absent or unparsable.
    pub remaining: Option<i64>,
    /// `RateLimit-Reset` (parsed, unused, as in regsync).
    pub reset: Option<i64>,
}

/// RateLimitWatcher ← ThrottleGate: a response from `host` (hostname) that carried rate-limit
/// headers. Responses without them are not forwarded.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ResponseObserved {
    pub host: String,
    pub rate_limit: RateLimitHeaders,
}

/// RateLimitWatcher ← ManifestResolver: the latest rate-limit numbers of `host`. `seq` marks
/// "now" for later questions; `fresh` is the latest parseable `RateLimit-Remaining` seen after
/// `since` (none when `since` is `None`).
#[derive(Message)]
#[rtype(result = "RateLimitSnapshot")]
pub struct RateLimitQuery {
    pub host: String,
    pub since: Option<u64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateLimitSnapshot {
    pub seq: u64,
    pub fresh: Option<RateLimitNumbers>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitNumbers {
    pub limit: i64,
    pub remaining: i64,
}

/// RateLimitWatcher ← ManifestResolver, after re-checking the source with a HEAD (spec §5.6):
/// may this image be pulled from `host` now? `since` is the `seq` taken before that HEAD.
/// The watcher logs `Delaying for rate limit` / `Rate limit passed`.
#[derive(Message)]
#[rtype(result = "(PullVerdict, u64)")]
pub struct MayPull {
    pub host: String,
    pub since: u64,
    /// The source reference as configured (log field `source`).
    pub source: String,
    /// The step's `ratelimit.min`.
    pub min: i64,
    /// The step's `ratelimit.retry`.
    pub retry: std::time::Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullVerdict {
    /// Enough pulls remain.
    Go,
    /// Release the `parallel` slot, sleep this long, then check again.
    Wait(std::time::Duration),
    /// The refreshing HEAD carried no parseable `RateLimit-Remaining`: the registry stopped
    /// reporting a limit, so the pull goes ahead (a deliberate fix of regsync quirk 26).
    Unreported,
}
