//! ManifestResolver: decides per image (spec §5.5: lookups, `platform`, backup) and hands
//! the copy to the copy algorithm ([`crate::copy::Copier`], spec §6), whose blobs go through
//! the BlobMover. It owns `defaults.parallel`: the number of image copies in flight (lookups,
//! HEADs, happen outside that limit, as in regsync), and the indexes read to resolve
//! `platform`. It also decides when the step's hooks run ([`crate::hooks`]): `pre` once a copy
//! will happen, `post` after it succeeded, `unchanged` for a matching image; never in
//! `check`. Each holds a `parallel` slot while it runs.

use super::blob_mover::{BlobMover, MoverSink};
use super::messages::{MayPull, PullVerdict, RateLimitQuery, SyncImage};
use super::rate_limit_watcher::RateLimitWatcher;
use super::report::{Counter, ImageOutcome};
use super::{on_pool, CopyError, Mode, RunCtx, StepCtx};
use crate::copy::{head_or_get, pinned, Copier, CopyEnv, CopyOpts};
use crate::hooks::{HookError, HookEvent, HookVars};
use crate::oci::{media, Descriptor, Manifest};
use crate::platform::{self, Platform};
use crate::reference::{Reference, Scheme};
use crate::store::StoreError;
use actix::{Actor, Addr, Context, Handler, ResponseFuture};
use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Indexes read to resolve `platform`, by repository and digest (spec §5.5 step 7; bounded,
/// unlike regsync's, quirk 15). Kept for the resolver's life, so every run of the engine
/// reads a source index once.
#[derive(Default)]
struct PlatformIndexes {
    by_key: StdMutex<HashMap<String, Manifest>>,
}

impl PlatformIndexes {
    const BOUND: usize = 256;

    fn get(&self, key: &str) -> Option<Manifest> {
        self.lock().get(key).cloned()
    }

    fn insert(&self, key: String, m: Manifest) {
        let mut cache = self.lock();
        if cache.len() >= Self::BOUND {
            cache.clear();
        }
        cache.insert(key, m);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Manifest>> {
        self.by_key.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct ManifestResolver {
    run: Arc<RunCtx>,
    parallel: Arc<Semaphore>,
    blobs: Addr<BlobMover>,
    rate_limits: Option<Addr<RateLimitWatcher>>,
    platform_indexes: Arc<PlatformIndexes>,
}

impl ManifestResolver {
    pub fn new(run: Arc<RunCtx>, blobs: Addr<BlobMover>) -> Self {
        let n = run.parallel.copies;
        slog::debug!(run.log, "Configuring parallel settings"; "concurrent" => n);
        ManifestResolver {
            run,
            parallel: Arc::new(Semaphore::new(n)),
            blobs,
            rate_limits: None,
            platform_indexes: Arc::default(),
        }
    }

    /// Gate pulls against `ratelimit.min` (spec §5.6) with this watcher.
    pub fn with_rate_limits(mut self, watcher: Addr<RateLimitWatcher>) -> Self {
        self.rate_limits = Some(watcher);
        self
    }
}

impl Actor for ManifestResolver {
    type Context = Context<Self>;
}

impl Handler<SyncImage> for ManifestResolver {
    type Result = ResponseFuture<ImageOutcome>;

    fn handle(&mut self, msg: SyncImage, _ctx: &mut Context<Self>) -> Self::Result {
        let counters = msg.step.counters.clone();
        // Ended by `record` below, whatever the outcome (the in-flight gauge).
        counters.bump(Counter::ImagesStarted);
        let job = ImageJob {
            step: msg.step,
            parallel: self.parallel.clone(),
            blobs: self.blobs.clone(),
            rate_limits: self.rate_limits.clone(),
            platform_indexes: self.platform_indexes.clone(),
        };
        let (source, target, mode) = (msg.source, msg.target, msg.mode);
        let listed_absent = msg.target_listed_absent;
        let run = self.run.clone();
        Box::pin(async move {
            let outcome = on_pool(
                async move { job.sync(source, target, mode, listed_absent).await },
                ImageOutcome::Failed,
            )
            .await;
            counters.record(&outcome);
            if matches!(outcome, ImageOutcome::Failed(_) | ImageOutcome::Canceled(_)) {
                run.failed();
            }
            outcome
        })
    }
}

/// One image's sync: the decision procedure and the recursive copy.
struct ImageJob {
    step: Arc<StepCtx>,
    parallel: Arc<Semaphore>,
    blobs: Addr<BlobMover>,
    rate_limits: Option<Addr<RateLimitWatcher>>,
    platform_indexes: Arc<PlatformIndexes>,
}

/// The manifests of one image as its hooks see them: `.Digest` (the source manifest copied or
/// matched) and `.TargetDigest` (the target's before the copy, empty when absent).
#[derive(Default)]
struct ImageDigests {
    source: String,
    target: String,
    /// The source tag's own digest (`source` is the `platform` child when one was picked).
    source_top: String,
    /// The media type of what the target holds once copied or matched.
    media_type: String,
}

/// Where the rate-limit check of one image stands: the source's registry host, and the
/// watcher's mark taken just before the source lookup (spec §5.5 step 2), so that only headers
/// of that HEAD or later count.
struct RateLimitProbe {
    watcher: Addr<RateLimitWatcher>,
    host: String,
    since: u64,
}

impl ImageJob {
    fn run(&self) -> &RunCtx {
        &self.step.run
    }

    fn log(&self) -> &slog::Logger {
        &self.step.run.log
    }

    /// This image's blobs go through the BlobMover.
    fn blob_sink(&self) -> MoverSink {
        MoverSink {
            step: self.step.clone(),
            mover: self.blobs.clone(),
        }
    }

    /// What the copy algorithm works with for this step run.
    fn copy_env<'a>(&'a self, sink: &'a MoverSink) -> CopyEnv<'a> {
        let run = self.run();
        CopyEnv {
            stores: &run.stores,
            blobs: sink,
            scope: &self.step.scope,
            manifest_writes: &run.manifest_writes,
            counters: &self.step.counters,
            log: &run.log,
            cancel: &run.cancel,
        }
    }

    /// Spec §5.5 (`processRef`).
    async fn sync(
        &self,
        source: Reference,
        target: Reference,
        mode: Mode,
        listed_absent: bool,
    ) -> ImageOutcome {
        let mut digests = ImageDigests::default();
        let decided = self
            .decide_and_copy(&source, &target, mode, listed_absent, &mut digests)
            .await;
        // The target confirmed the tag (pushed, or HEAD found the source's digest): only now
        // does the state database learn of it.
        let decided = match decided {
            Ok(o @ (ImageOutcome::Matched | ImageOutcome::Copied)) if mode != Mode::Check => {
                self.record(&source, &target, &digests).await.map(|()| o)
            }
            other => other,
        };
        match decided {
            Ok(ImageOutcome::Matched) => {
                if mode != Mode::Check {
                    self.unchanged_hook(&source, &target, &digests).await;
                }
                ImageOutcome::Matched
            }
            Ok(outcome) => outcome,
            Err(e) => {
                if !e.is_canceled() {
                    slog::error!(self.log(), "Failed to sync";
                        "target" => %target, "source" => %source, "error" => %e);
                }
                let line = super::report::image_error_line(
                    &self.step.name(),
                    &source.to_string(),
                    &target.to_string(),
                    &e.to_string(),
                );
                // Only the run's cancellation makes an image cancelled rather than failed.
                if e.is_canceled() && self.run().cancel.is_cancelled() {
                    ImageOutcome::Canceled(line)
                } else {
                    ImageOutcome::Failed(line)
                }
            }
        }
    }

    async fn decide_and_copy(
        &self,
        source: &Reference,
        target: &Reference,
        mode: Mode,
        listed_absent: bool,
        digests: &mut ImageDigests,
    ) -> Result<ImageOutcome, CopyError> {
        let step = &self.step.step;
        let stores = &self.run().stores;
        let rate_limit = self.rate_limit_probe(source).await;
        // A tag the target is known not to have is going to be copied: read the source
        // manifest whole now, one GET instead of a HEAD and then a GET. Not while a rate limit
        // is watched (the HEAD decides whether a pull may be spent, spec §5.6), nor when a
        // platform is picked out of an index, nor when `mediaTypes` leaves out a common type
        // (a tag it skips would cost a pull on every run), nor with the manifest cache on (a
        // HEAD and a cached read by digest cost one pull for all targets of one source).
        let read_whole = listed_absent
            && mode == Mode::Copy
            && rate_limit.is_none()
            && step.platform.is_empty()
            && !stores.registry.manifest_cache_on()
            && media::DEFAULT_MEDIA_TYPES
                .iter()
                .all(|t| step.media_types.iter().any(|m| m == t));
        let (looked_up, read) = match read_whole {
            true => match stores.for_ref(source).manifest_get(source).await {
                Ok(m) => (Ok(Some(m.descriptor())), Some(m)),
                Err(e) if e.is_not_found() => (Ok(None), None),
                Err(e) => (Err(e), None),
            },
            false => (head_or_get(stores.for_ref(source), source).await, None),
        };
        let src_desc = match looked_up {
            Ok(Some(d)) => d,
            Ok(None) => {
                let e = StoreError::NotFound(None);
                slog::error!(self.log(), "Failed to lookup source manifest";
                    "source" => %source, "error" => %e);
                return Err(CopyError::store("failed to lookup source manifest", e));
            }
            Err(e) => {
                slog::error!(self.log(), "Failed to lookup source manifest";
                    "source" => %source, "error" => %e);
                return Err(CopyError::store("failed to lookup source manifest", e));
            }
        };
        // A failure to read the target means "absent" (spec §5.5 step 3), except when the
        // target cannot be reached at all: then nothing can be copied (spec §6.2 step 2).
        // Absent from the target's tag listing of this run: nothing to ask.
        let head = match listed_absent {
            true => Ok(None),
            false => stores.for_ref(target).manifest_head(target).await,
        };
        let tgt_desc = match head {
            Ok(d) => d,
            Err(e @ StoreError::Network { .. }) if mode != Mode::Check => {
                return Err(CopyError::store("failed to access target registry", e))
            }
            Err(e) => {
                slog::debug!(self.log(), "Target lookup failed, treating as absent";
                    "target" => %target, "error" => %e);
                None
            }
        };
        digests.source = src_desc.digest.as_str().to_string();
        digests.source_top = digests.source.clone();
        digests.media_type = src_desc.media_type.clone();
        digests.target = tgt_desc
            .as_ref()
            .map(|t| t.digest.as_str().to_string())
            .unwrap_or_default();
        let mut matches = tgt_desc
            .as_ref()
            .is_some_and(|t| t.digest == src_desc.digest);
        let fast = self.step.flag(step.fast_check);
        let recursive = self.step.flag(step.force_recursive)
            || self.step.flag(step.referrers)
            || self.step.flag(step.digest_tags);
        if matches && (fast || !recursive) {
            slog::debug!(self.log(), "Image matches"; "source" => %source, "target" => %target);
            return Ok(ImageOutcome::Matched);
        }
        if tgt_desc.is_some() && mode == Mode::Missing {
            slog::debug!(self.log(), "target exists"; "source" => %source, "target" => %target);
            return Ok(ImageOutcome::Skipped);
        }
        if !step.media_types.is_empty() && !step.media_types.contains(&src_desc.media_type) {
            slog::info!(self.log(), "Skipping unsupported media type";
                "ref" => %source, "mediaType" => &src_desc.media_type,
                "allowed" => format!("[{}]", step.media_types.join(" ")));
            return Ok(ImageOutcome::Skipped);
        }
        // What gets copied, pinned to its digest so a tag moving upstream mid-copy cannot
        // mix two versions (the tag stays for logs).
        let mut src_copy = pinned(source, &src_desc.digest);
        if !step.platform.is_empty() && media::is_index(&src_desc.media_type) {
            let child = self.platform_child(source, &src_desc).await?;
            src_copy = pinned(source, &child.digest);
            digests.source = child.digest.as_str().to_string();
            digests.media_type = child.media_type.clone();
            if tgt_desc.as_ref().is_some_and(|t| t.digest == child.digest) {
                matches = true;
            }
            // quirk 8: a matching target is not refreshed (referrers, digest tags)
            if matches && !self.step.flag(step.force_recursive) {
                slog::debug!(self.log(), "Image matches for platform";
                    "source" => src_copy.common_name(), "platform" => &step.platform,
                    "target" => %target);
                return Ok(ImageOutcome::Matched);
            }
        }
        if matches {
            slog::info!(self.log(), "Image refreshing";
                "source" => %source, "target" => %target,
                "forced" => self.step.flag(step.force_recursive),
                "digestTags" => self.step.flag(step.digest_tags),
                "referrers" => self.step.flag(step.referrers));
        } else {
            slog::info!(self.log(), "Image sync needed"; "source" => %source, "target" => %target);
        }
        if mode == Mode::Check {
            return Ok(ImageOutcome::NeedsSync);
        }
        let cancel = self.run().cancel.clone();
        let slot = tokio::select! {
            p = self.parallel.clone().acquire_owned() => p.map_err(|e| CopyError::Invalid(format!("failed to acquire throttle: {e}")))?,
            _ = cancel.cancelled() => return Err(CopyError::Canceled),
        };
        let _slot = match rate_limit {
            Some(probe) => self.wait_for_rate_limit(source, probe, slot).await?,
            None => slot,
        };
        if cancel.is_cancelled() {
            return Err(CopyError::Canceled);
        }
        // The pre hook, now that a copy will happen: its failure fails the image before
        // anything is written.
        if let Err(e) = self.hook(HookEvent::Pre, source, target, digests).await {
            return Err(match e {
                HookError::Canceled => CopyError::Canceled,
                e => CopyError::Invalid(format!("pre hook: {e}")),
            });
        }
        let tgt_store = stores.for_ref(target);
        tgt_store.open(target).await;
        // 13. backup of the image about to be overwritten
        if let (Some(current), false, false) = (&tgt_desc, matches, step.backup.is_empty()) {
            if let Err(e) = self.backup(target, current).await {
                if let Err(e) = tgt_store.close(target).await {
                    slog::error!(self.log(), "Error closing ref"; "ref" => %target, "error" => %e);
                }
                return Err(e);
            }
        }
        // 14. the copy
        let opts = CopyOpts::from_step(step, self.log());
        slog::debug!(self.log(), "Image sync running"; "source" => %source, "target" => %target);
        let sink = self.blob_sink();
        let mut copier =
            Copier::new(self.copy_env(&sink), opts).with_top_target(target, tgt_desc.clone());
        if let Some(m) = read {
            copier = copier.with_top_source(m);
        }
        let result = copier.copy(src_copy, target.clone()).await;
        if let Err(e) = tgt_store.close(target).await {
            slog::error!(self.log(), "Error closing ref"; "ref" => %target, "error" => %e);
        }
        match result {
            Ok(()) => {
                self.hook_warn(HookEvent::Post, source, target, digests)
                    .await;
                Ok(ImageOutcome::Copied)
            }
            Err(e) => {
                if !e.is_canceled() {
                    slog::error!(self.log(), "Failed to copy image";
                        "source" => %source, "target" => %target, "error" => %e);
                }
                Err(e)
            }
        }
    }

    /// Writes (or refreshes) the state record of `target`'s tag, with `--state`.
    async fn record(
        &self,
        source: &Reference,
        target: &Reference,
        digests: &ImageDigests,
    ) -> Result<(), CopyError> {
        let Some(state) = &self.run().state else {
            return Ok(());
        };
        let now = crate::state::now();
        let rec = crate::state::TagRecord {
            target: crate::copy::prune::target_key(target),
            tag: target.tag_or_latest().to_string(),
            step: self.step.state_key(),
            source: source.common_name(),
            source_digest: digests.source_top.clone(),
            target_digest: digests.source.clone(),
            media_type: digests.media_type.clone(),
            first_written: now,
            last_confirmed: now,
        };
        state
            .call(move |db| db.confirm_tag(&rec))
            .await
            .map_err(|e| {
                slog::error!(self.log(), "State database write failed"; "err" => e.to_string());
                CopyError::Invalid(e.to_string())
            })
    }

    /// Runs the step's `event` hook for this image, when the step has one.
    async fn hook(
        &self,
        event: HookEvent,
        source: &Reference,
        target: &Reference,
        digests: &ImageDigests,
    ) -> Result<(), HookError> {
        let hooks = &self.step.step.hooks;
        let hook = match event {
            HookEvent::Pre => &hooks.pre,
            HookEvent::Post => &hooks.post,
            HookEvent::Unchanged => &hooks.unchanged,
        };
        let Some(hook) = hook else {
            return Ok(());
        };
        let vars = HookVars {
            hook: event.name(),
            step: &self.step.step,
            source,
            target,
            digest: &digests.source,
            target_digest: &digests.target,
        };
        self.run()
            .hooks
            .run(event, hook, &vars, &self.run().cancel)
            .await
    }

    /// `post` and `unchanged`: a failure is one warning; the image keeps its outcome.
    async fn hook_warn(
        &self,
        event: HookEvent,
        source: &Reference,
        target: &Reference,
        digests: &ImageDigests,
    ) {
        match self.hook(event, source, target, digests).await {
            Ok(()) | Err(HookError::Canceled) => {}
            Err(e) => slog::warn!(self.log(), "Hook failed"; "hook" => event.name(),
                "source" => %source, "target" => %target, "error" => %e),
        }
    }

    /// The `unchanged` hook of a matching image, in a `parallel` slot like every hook.
    async fn unchanged_hook(&self, source: &Reference, target: &Reference, digests: &ImageDigests) {
        if self.step.step.hooks.unchanged.is_none() {
            return;
        }
        let cancel = self.run().cancel.clone();
        let _slot = tokio::select! {
            p = self.parallel.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = cancel.cancelled() => return,
        };
        self.hook_warn(HookEvent::Unchanged, source, target, digests)
            .await;
    }

    /// Spec §5.6 is active only for registry sources of steps with `ratelimit.min > 0`; then
    /// the watcher's mark is taken before the source lookup.
    async fn rate_limit_probe(&self, source: &Reference) -> Option<RateLimitProbe> {
        let watcher = self.rate_limits.clone()?;
        if self.step.step.ratelimit.min <= 0 || source.scheme != Scheme::Reg {
            return None;
        }
        let host = self.run().stores.registry.slot_host(&source.registry);
        let query = RateLimitQuery {
            host: host.clone(),
            since: None,
        };
        let since = watcher.send(query).await.ok()?.seq;
        Some(RateLimitProbe {
            watcher,
            host,
            since,
        })
    }

    /// Spec §5.5 step 11 / §5.6, holding the `parallel` slot `slot`: only when the source lookup
    /// carried `RateLimit-Remaining`, HEAD the source again and, while fewer than
    /// `ratelimit.min` pulls remain, give the slot back, sleep `ratelimit.retry`, take a slot
    /// again and re-check. Returns the slot to copy with.
    async fn wait_for_rate_limit(
        &self,
        source: &Reference,
        probe: RateLimitProbe,
        mut slot: OwnedSemaphorePermit,
    ) -> Result<OwnedSemaphorePermit, CopyError> {
        let RateLimitProbe {
            watcher,
            host,
            since,
        } = probe;
        let gone = |e: actix::MailboxError| CopyError::Invalid(format!("rate limit watcher: {e}"));
        let snapshot = watcher
            .send(RateLimitQuery {
                host: host.clone(),
                since: Some(since),
            })
            .await
            .map_err(gone)?;
        if snapshot.fresh.is_none() {
            return Ok(slot);
        }
        let step = &self.step.step;
        let retry =
            crate::gocompat::duration::duration_of(&step.ratelimit.retry).to_std_saturating();
        let cancel = self.run().cancel.clone();
        let store = self.run().stores.for_ref(source);
        let mut mark = snapshot.seq;
        loop {
            // HEADs do not count against Docker Hub's limit; any answer refreshes the numbers.
            match store.manifest_head(source).await {
                Ok(Some(_)) => {}
                result => {
                    let e = result.err().unwrap_or(StoreError::NotFound(None));
                    slog::error!(self.log(), "rate limit check failed";
                        "source" => %source, "error" => %e);
                    return Err(CopyError::store("rate limit check failed", e));
                }
            }
            let (verdict, seq) = watcher
                .send(MayPull {
                    host: host.clone(),
                    since: mark,
                    source: source.to_string(),
                    min: step.ratelimit.min,
                    retry,
                })
                .await
                .map_err(gone)?;
            mark = seq;
            let sleep = match verdict {
                PullVerdict::Go | PullVerdict::Unreported => return Ok(slot),
                PullVerdict::Wait(sleep) => sleep,
            };
            drop(slot);
            let waited = std::time::Instant::now();
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = cancel.cancelled() => return Err(CopyError::Canceled),
            }
            // Docker Hub's budget made this image wait: a rate-limit wait of that host.
            self.run()
                .throttle
                .stats()
                .host(&host)
                .rate_limit_wait(waited.elapsed());
            slot = tokio::select! {
                p = self.parallel.clone().acquire_owned() => p.map_err(|e| CopyError::Invalid(format!("failed to reacquire throttle: {e}")))?,
                _ = cancel.cancelled() => return Err(CopyError::Canceled),
            };
        }
    }

    /// Spec §5.5 step 7: the child of the source index that best matches `platform` (§11).
    /// Indexes are fetched once per digest for the life of the resolver.
    async fn platform_child(
        &self,
        source: &Reference,
        index: &Descriptor,
    ) -> Result<Descriptor, CopyError> {
        let step = &self.step.step;
        let want = match Platform::parse(&step.platform) {
            Ok(p) => p,
            Err(e) => {
                slog::warn!(self.log(), "Could not parse platform";
                    "platform" => &step.platform, "err" => %e);
                return Err(CopyError::Invalid(format!(
                    "failed to parse platform {}: {e}",
                    step.platform
                )));
            }
        };
        let key = format!("{}@{}", source.repo_key(), index.digest);
        let cached = self.platform_indexes.get(&key);
        let m = match cached {
            Some(m) => m,
            None => {
                let r = pinned(source, &index.digest);
                match self.run().stores.for_ref(source).manifest_get(&r).await {
                    Ok(m) => {
                        self.platform_indexes.insert(key, m.clone());
                        m
                    }
                    Err(e) => {
                        slog::error!(self.log(), "Failed to get source manifest";
                            "source" => %source, "error" => %e);
                        return Err(CopyError::store("failed to get source manifest", e));
                    }
                }
            }
        };
        let links = m.links().map_err(|e| CopyError::Invalid(e.to_string()))?;
        match platform::select(&links.children, &want) {
            Some(d) => Ok(d.clone()),
            None => {
                let available = platform::list(&links.children).join(", ");
                slog::warn!(self.log(), "Platform could not be found in source manifest list";
                    "platform" => want.to_string(), "err" => "not found",
                    "platforms" => &available);
                Err(CopyError::store(
                    format!("platform {want} not found in {source} (available: {available})"),
                    StoreError::NotFound(None),
                ))
            }
        }
    }

    /// Spec §5.7: keep the target about to be overwritten under the `backup` name. Template
    /// and reference errors fail the image; a failed backup copy is only a warning.
    async fn backup(&self, target: &Reference, current: &Descriptor) -> Result<(), CopyError> {
        let step = &self.step.step;
        let text = match crate::config::render_backup(&step.backup, target, step) {
            Ok(t) => t,
            Err(e) => {
                slog::error!(self.log(), "Failed to expand backup template";
                    "original" => target.common_name(), "backup-template" => &step.backup,
                    "error" => %e);
                return Err(CopyError::Invalid(format!(
                    "failed to expand backup template {:?}: {e}",
                    step.backup
                )));
            }
        };
        let backup = if text.contains(':') || text.contains('/') {
            match Reference::parse(&text) {
                Ok(r) => r,
                Err(e) => {
                    slog::error!(self.log(), "Failed to parse backup reference";
                        "original" => target.common_name(), "template" => &step.backup,
                        "backup" => &text, "error" => %e);
                    return Err(e.into());
                }
            }
        } else if text.is_empty() {
            let e = crate::reference::ReferenceError::Invalid(text.clone());
            slog::error!(self.log(), "Failed to parse backup reference";
                "original" => target.common_name(), "template" => &step.backup,
                "backup" => &text, "error" => %e);
            return Err(e.into());
        } else {
            target.with_tag(&text)
        };
        slog::info!(self.log(), "Saving backup";
            "original" => target.common_name(), "backup" => backup.common_name());
        let store = self.run().stores.for_ref(&backup);
        store.open(&backup).await;
        let sink = self.blob_sink();
        let result = Copier::new(self.copy_env(&sink), CopyOpts::default())
            .copy(pinned(target, &current.digest), backup.clone())
            .await;
        if let Err(e) = store.close(&backup).await {
            slog::error!(self.log(), "Error closing ref"; "ref" => backup.common_name(), "error" => %e);
        }
        match result {
            Err(CopyError::Canceled) => Err(CopyError::Canceled),
            Err(e) => {
                slog::warn!(self.log(), "Failed to backup existing image";
                    "original" => target.common_name(), "template" => &step.backup,
                    "backup" => backup.common_name(), "error" => %e);
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }
}
