//! ManifestResolver: decides per image (spec §5.5) and walks the manifest graph (spec §6.2),
//! asking the BlobMover for every blob. It owns `defaults.parallel`: the number of image
//! copies in flight. Lookups (HEADs) happen outside that limit, as in regsync.
//!
//! Push order, in one place (`copy_manifest`): every blob and child manifest a manifest
//! references has landed in the target before that manifest is pushed; children are pushed by
//! digest; the tag is written last.

use super::messages::{MayPull, MoveBlob, PullVerdict, RateLimitQuery, SyncImage};
use super::report::{bump, ImageOutcome};
use super::{on_pool, CopyError, Mode, StepCtx};
use crate::oci::{media, Descriptor, Manifest};
use crate::reference::{Reference, Scheme};
use crate::store::StoreError;
use actix::{Actor, Addr, Context, Handler, ResponseFuture};
use futures::future::{try_join_all, BoxFuture, FutureExt};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::blob_mover::BlobMover;
use super::rate_limit_watcher::RateLimitWatcher;
use super::RunCtx;

pub struct ManifestResolver {
    run: Arc<RunCtx>,
    parallel: Arc<Semaphore>,
    blobs: Addr<BlobMover>,
    rate_limits: Option<Addr<RateLimitWatcher>>,
}

impl ManifestResolver {
    pub fn new(run: Arc<RunCtx>, blobs: Addr<BlobMover>) -> Self {
        let n = run.parallel.clamp(1, 1 << 16) as usize;
        slog::debug!(run.log, "Configuring parallel settings"; "concurrent" => n);
        ManifestResolver {
            run,
            parallel: Arc::new(Semaphore::new(n)),
            blobs,
            rate_limits: None,
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
        let job = ImageJob {
            step: msg.step,
            parallel: self.parallel.clone(),
            blobs: self.blobs.clone(),
            rate_limits: self.rate_limits.clone(),
        };
        let (source, target, mode) = (msg.source, msg.target, msg.mode);
        let run = self.run.clone();
        Box::pin(async move {
            let outcome = on_pool(
                async move { job.sync(source, target, mode).await },
                ImageOutcome::Failed,
            )
            .await;
            run.counters.record(&outcome);
            if matches!(outcome, ImageOutcome::Failed(_)) {
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

    /// Spec §5.5 (`processRef`), minus platform/backup/rate limit (later issues).
    async fn sync(&self, source: Reference, target: Reference, mode: Mode) -> ImageOutcome {
        match self.decide_and_copy(&source, &target, mode).await {
            Ok(outcome) => outcome,
            Err(e) => {
                if !matches!(e, CopyError::Canceled) {
                    slog::error!(self.log(), "Failed to sync";
                        "target" => %target, "source" => %source, "error" => %e);
                }
                ImageOutcome::Failed(format!("{} {source} -> {target}: {e}", self.step.name()))
            }
        }
    }

    async fn decide_and_copy(
        &self,
        source: &Reference,
        target: &Reference,
        mode: Mode,
    ) -> Result<ImageOutcome, CopyError> {
        let step = &self.step.step;
        let stores = &self.run().stores;
        let rate_limit = self.rate_limit_probe(source).await;
        let src_head = match stores.for_ref(source).manifest_head(source).await {
            // apiOpts.disableHead (spec §3.3): read the source with GET instead.
            Err(StoreError::Unsupported(_)) => stores
                .for_ref(source)
                .manifest_get(source)
                .await
                .map(|m| Some(m.descriptor())),
            other => other,
        };
        let src_desc = match src_head {
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
        let tgt_desc = match stores.for_ref(target).manifest_head(target).await {
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
        let matches = tgt_desc
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
        slog::debug!(self.log(), "Image sync running"; "source" => %source, "target" => %target);
        // Fetch by digest so a tag moving upstream mid-copy cannot mix two versions.
        let src_by_digest = source.with_digest(&src_desc.digest);
        let tgt_store = stores.for_ref(target);
        tgt_store.open(target).await;
        let copy = self.copy_manifest(src_by_digest, target.clone(), src_desc, false);
        let result = tokio::select! {
            r = copy => r,
            _ = cancel.cancelled() => Err(CopyError::Canceled),
        };
        if let Err(e) = tgt_store.close(target).await {
            slog::error!(self.log(), "Error closing ref"; "ref" => %target, "error" => %e);
        }
        match result {
            Ok(()) => Ok(ImageOutcome::Copied),
            Err(e) => {
                if !matches!(e, CopyError::Canceled) {
                    slog::error!(self.log(), "Failed to copy image";
                        "source" => %source, "target" => %target, "error" => %e);
                }
                Err(e)
            }
        }
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
        let retry = crate::config::duration::duration_of(&step.ratelimit.retry).to_std_saturating();
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
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = cancel.cancelled() => return Err(CopyError::Canceled),
            }
            slot = tokio::select! {
                p = self.parallel.clone().acquire_owned() => p.map_err(|e| CopyError::Invalid(format!("failed to reacquire throttle: {e}")))?,
                _ = cancel.cancelled() => return Err(CopyError::Canceled),
            };
        }
    }

    /// Copy the manifest `desc` from `src` (a by-digest reference) to `tgt` (tag, or digest
    /// for children), blobs and children first.
    fn copy_manifest<'a>(
        &'a self,
        src: Reference,
        tgt: Reference,
        desc: Descriptor,
        child: bool,
    ) -> BoxFuture<'a, Result<(), CopyError>> {
        async move {
            let stores = &self.run().stores;
            let manifest: Manifest = stores
                .for_ref(&src)
                .manifest_get(&src)
                .await
                .map_err(|e| CopyError::store(format!("failed to get manifest {src}"), e))?;
            if manifest.digest != desc.digest {
                return Err(CopyError::store(
                    format!("manifest {src}"),
                    StoreError::DigestMismatch {
                        expected: desc.digest.to_string(),
                        got: manifest.digest.to_string(),
                    },
                ));
            }
            if !src.same_repository(&tgt) {
                let links = manifest.links().map_err(|e| CopyError::Invalid(e.to_string()))?;
                let children = links.children.iter().map(|c| self.copy_child(&src, &tgt, c));
                let blobs = links.blobs.iter().enumerate().map(|(i, b)| {
                    let kind = if i == 0 && links.has_config {
                        BlobKind::Config
                    } else {
                        BlobKind::Layer
                    };
                    self.copy_blob(&src, &tgt, b, kind)
                });
                // Every future must succeed before the push below; the first error drops
                // (cancels) the rest.
                let children = try_join_all(children);
                let blobs = try_join_all(blobs);
                futures::try_join!(children, blobs)?;
            }
            stores
                .for_ref(&tgt)
                .manifest_put(&tgt, &manifest, child)
                .await
                .map_err(|e| {
                    slog::warn!(self.log(), "Failed to push manifest"; "target" => %tgt, "err" => %e);
                    CopyError::store(format!("failed to push manifest {tgt}"), e)
                })?;
            bump(&self.run().counters.manifests_pushed);
            Ok(())
        }
        .boxed()
    }

    /// A child of an index: a manifest copied by digest unless the target has it already.
    async fn copy_child(
        &self,
        src: &Reference,
        tgt: &Reference,
        child: &Descriptor,
    ) -> Result<(), CopyError> {
        if !media::is_manifest(&child.media_type) {
            // Indexes may list blobs directly (spec §6.2 step 6).
            return self.copy_blob(src, tgt, child, BlobKind::Layer).await;
        }
        let child_src = src.with_digest(&child.digest);
        let child_tgt = tgt.with_digest(&child.digest);
        let force = self.step.flag(self.step.step.force_recursive);
        if !force {
            let present = self
                .run()
                .stores
                .for_ref(&child_tgt)
                .manifest_head(&child_tgt)
                .await
                .ok()
                .flatten()
                .is_some();
            if present {
                return Ok(());
            }
        }
        slog::debug!(self.log(), "Copy platform"; "source" => %child_src, "target" => %child_tgt,
            "platform" => child.platform.as_ref().map(|p| format!("{}/{}", p.os, p.architecture)).unwrap_or_default());
        self.copy_manifest(child_src, child_tgt, child.clone(), true)
            .await
    }

    async fn copy_blob(
        &self,
        src: &Reference,
        tgt: &Reference,
        blob: &Descriptor,
        kind: BlobKind,
    ) -> Result<(), CopyError> {
        if blob.is_external() && !self.step.flag(self.step.step.include_external) {
            slog::debug!(self.log(), "Skipping external layer";
                "source" => %src, "target" => %tgt, "layer" => %blob.digest);
            return Ok(());
        }
        // regsync's message names and fields (spec §14).
        match kind {
            BlobKind::Config => slog::info!(self.log(), "Copy config";
                "source" => %src, "target" => %tgt, "digest" => %blob.digest),
            BlobKind::Layer => slog::info!(self.log(), "Copy layer";
                "source" => %src, "target" => %tgt, "layer" => %blob.digest),
        }
        let msg = MoveBlob {
            step: self.step.clone(),
            source: src.repo_only(),
            target: tgt.repo_only(),
            desc: blob.clone(),
        };
        match self.blobs.send(msg).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                match kind {
                    BlobKind::Config => slog::warn!(self.log(), "Failed to copy config";
                        "source" => %src, "target" => %tgt, "digest" => %blob.digest, "err" => %e),
                    BlobKind::Layer => slog::warn!(self.log(), "Failed to copy layer";
                        "source" => %src, "target" => %tgt, "layer" => %blob.digest, "err" => %e),
                }
                Err(e)
            }
            Err(e) => Err(CopyError::Invalid(format!(
                "internal error: blob mover: {e}"
            ))),
        }
    }
}

#[derive(Clone, Copy)]
enum BlobKind {
    Config,
    Layer,
}
